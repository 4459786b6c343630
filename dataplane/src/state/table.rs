//! `Table`: the records of one kind, in the order they were added, which remembers what
//! changed since it was last asked, so that the store writes (and the resolvers reread)
//! only that, and which keeps an index of its records up to date. It reads as a slice;
//! every change goes through a method that records it: nothing changes a record behind
//! its back.

use std::{fmt, ops::Deref};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A record of a table: its unique key (an id), and what the table indexes of it.
pub trait Keyed {
    type Index: Index<Self> + Default + Clone + fmt::Debug;
    fn key(&self) -> &str;
}

/// What a table keeps about its records as a whole, updated as each one comes and goes.
pub trait Index<T: ?Sized> {
    fn add(&mut self, record: &T);
    fn remove(&mut self, record: &T);
}

/// Records that need no index.
impl<T: ?Sized> Index<T> for () {
    fn add(&mut self, _: &T) {}
    fn remove(&mut self, _: &T) {}
}

/// One change to a table, in the order it happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change<T> {
    /// The record with this key was added or changed; what it is now is in the table.
    Put(String),
    /// This record left the table.
    Removed(T),
}

#[derive(Clone, Debug)]
pub struct Table<T: Keyed> {
    records: Vec<T>,
    index: T::Index,
    changes: Vec<Change<T>>,
}

impl<T: Keyed> Default for Table<T> {
    fn default() -> Self {
        Self { records: vec![], index: T::Index::default(), changes: vec![] }
    }
}

impl<T: Keyed> Table<T> {
    pub fn push(&mut self, record: T) {
        self.index.add(&record);
        self.changes.push(Change::Put(record.key().to_string()));
        self.records.push(record);
    }

    /// Keeps the records `keep` accepts, in their order.
    pub fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) {
        let mut removed = vec![];
        let mut kept = Vec::with_capacity(self.records.len());
        for record in self.records.drain(..) {
            if keep(&record) { kept.push(record) } else { removed.push(record) }
        }
        self.records = kept;
        for record in removed {
            self.index.remove(&record);
            self.changes.push(Change::Removed(record));
        }
    }

    /// The record with this key, to change: it counts as changed. Its indexed fields
    /// are reindexed when the change is taken, so they must not change (the tables whose
    /// records have indexed fields never hand them out).
    pub fn get_mut(&mut self, key: &str) -> Option<&mut T>
    where
        T::Index: NoIndex,
    {
        let record = self.records.iter_mut().rev().find(|r| r.key() == key)?;
        self.changes.push(Change::Put(key.to_string()));
        Some(record)
    }

    /// Puts `record` in the place of the record of its key, reindexed; returns whether
    /// there was one (else nothing changes).
    pub fn replace(&mut self, record: T) -> bool {
        let key = record.key().to_string();
        let replaced = self.swap(record).is_ok();
        if replaced {
            self.changes.push(Change::Put(key));
        }
        replaced
    }

    /// Swaps `record` in for the record of its key, or hands it back when there is none.
    fn swap(&mut self, record: T) -> Result<(), T> {
        match self.records.iter().rposition(|r| r.key() == record.key()) {
            Some(at) => {
                self.index.remove(&self.records[at]);
                self.index.add(&record);
                self.records[at] = record;
                Ok(())
            }
            None => Err(record),
        }
    }

    /// The record with this key.
    pub fn get(&self, key: &str) -> Option<&T> {
        // Records that change are mostly the latest.
        self.records.iter().rev().find(|r| r.key() == key)
    }

    pub fn index(&self) -> &T::Index {
        &self.index
    }

    /// The changes since the last call, in order.
    pub fn take_changes(&mut self) -> Vec<Change<T>> {
        std::mem::take(&mut self.changes)
    }

    /// Puts a record read back from the store: it replaces the record of its key where
    /// that stands, or comes last. Nothing counts as changed.
    pub fn replay_put(&mut self, record: T) {
        if let Err(record) = self.swap(record) {
            self.index.add(&record);
            self.records.push(record);
        }
    }

    /// Removes a record as the store read back its removal. Nothing counts as changed.
    pub fn replay_removal(&mut self, key: &str) {
        if let Some(at) = self.records.iter().position(|r| r.key() == key) {
            let record = self.records.remove(at);
            self.index.remove(&record);
        }
    }
}

/// Tables whose records carry nothing indexed, so that a record may change in place.
pub trait NoIndex {}
impl NoIndex for () {}

impl<T: Keyed> Extend<T> for Table<T> {
    fn extend<I: IntoIterator<Item = T>>(&mut self, records: I) {
        records.into_iter().for_each(|r| self.push(r));
    }
}

impl<T: Keyed> From<Vec<T>> for Table<T> {
    /// A table of these records, as if it had been loaded: nothing counts as changed.
    fn from(records: Vec<T>) -> Self {
        let mut index = T::Index::default();
        records.iter().for_each(|r| index.add(r));
        Self { records, index, changes: vec![] }
    }
}

impl<T: Keyed> FromIterator<T> for Table<T> {
    fn from_iter<I: IntoIterator<Item = T>>(records: I) -> Self {
        Self::from(records.into_iter().collect::<Vec<_>>())
    }
}

impl<T: Keyed> Deref for Table<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.records
    }
}

impl<'a, T: Keyed> IntoIterator for &'a Table<T> {
    type Item = &'a T;
    type IntoIter = std::slice::Iter<'a, T>;
    fn into_iter(self) -> Self::IntoIter {
        self.records.iter()
    }
}

/// Two tables are equal when their records are, whatever is left to save.
impl<T: Keyed + PartialEq> PartialEq for Table<T> {
    fn eq(&self, other: &Self) -> bool {
        self.records == other.records
    }
}

impl<T: Keyed + Eq> Eq for Table<T> {}

/// On disk a table is the list of its records, as before tables were.
impl<T: Keyed + Serialize> Serialize for Table<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.records.serialize(s)
    }
}

impl<'de, T: Keyed + Deserialize<'de>> Deserialize<'de> for Table<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Vec::<T>::deserialize(d).map(Self::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Debug, PartialEq, Eq)]
    struct Item {
        id: String,
        value: u32,
    }

    impl Keyed for Item {
        type Index = ();
        fn key(&self) -> &str {
            &self.id
        }
    }

    /// Sums the values: an index kept as records come and go.
    #[derive(Clone, Debug, Default)]
    struct Sum(u32);

    #[derive(Clone, Debug, PartialEq, Eq)]
    struct Counted(Item);

    impl Keyed for Counted {
        type Index = Sum;
        fn key(&self) -> &str {
            &self.0.id
        }
    }

    impl Index<Counted> for Sum {
        fn add(&mut self, record: &Counted) {
            self.0 += record.0.value;
        }
        fn remove(&mut self, record: &Counted) {
            self.0 -= record.0.value;
        }
    }

    fn item(id: &str, value: u32) -> Item {
        Item { id: id.into(), value }
    }

    #[test]
    fn changes_are_recorded_in_order_and_taken_once() {
        let mut table = Table::from(vec![item("a", 1)]);
        assert!(table.take_changes().is_empty(), "records loaded are not changes");
        table.push(item("b", 2));
        table.get_mut("a").unwrap().value = 10;
        table.retain(|i| i.id != "b");
        assert_eq!(
            table.take_changes(),
            [Change::Put("b".into()), Change::Put("a".into()), Change::Removed(item("b", 2))]
        );
        assert!(table.take_changes().is_empty(), "taken once");
        assert_eq!(&table[..], [item("a", 10)]);
        assert!(table.get_mut("nope").is_none());
        assert!(table.take_changes().is_empty(), "a record not found did not change");
    }

    #[test]
    fn replaying_the_changes_on_a_copy_gives_the_same_records_in_the_same_order() {
        let mut live = Table::from(vec![item("a", 1), item("b", 2), item("c", 3)]);
        let mut copy = live.clone();
        live.push(item("d", 4));
        live.retain(|i| i.id != "b");
        live.get_mut("a").unwrap().value = 11;
        live.push(item("b", 5));
        live.push(item("e", 6));
        live.retain(|i| i.id != "e");
        for change in live.take_changes() {
            match change {
                // A record put and removed since is left to its removal, as the store does.
                Change::Put(key) => {
                    if let Some(record) = live.get(&key) {
                        copy.replay_put(record.clone());
                    }
                }
                Change::Removed(gone) => copy.replay_removal(&gone.id),
            }
        }
        assert_eq!(copy, live);
        assert_eq!(
            copy.iter().map(|i| (i.id.as_str(), i.value)).collect::<Vec<_>>(),
            [("a", 11), ("c", 3), ("d", 4), ("b", 5)]
        );
        assert!(copy.take_changes().is_empty(), "replayed changes are saved already");
    }

    #[test]
    fn the_index_follows_the_records() {
        let counted = |id: &str, value| Counted(item(id, value));
        let mut table = Table::from(vec![counted("a", 1), counted("b", 2)]);
        assert_eq!(table.index().0, 3);
        table.push(counted("c", 4));
        table.retain(|c| c.0.id != "a");
        assert_eq!(table.index().0, 6);
        table.replay_put(counted("b", 20));
        table.replay_removal("c");
        assert_eq!(table.index().0, 20);
        table.take_changes();
        assert!(table.replace(counted("b", 2)), "b is there to replace");
        assert!(!table.replace(counted("z", 100)), "z is not");
        assert_eq!(table.index().0, 2, "the replaced record is reindexed");
        assert_eq!(table.take_changes(), [Change::Put("b".into())], "a replacement is a change");
        let loaded: Table<Counted> = vec![counted("x", 7)].into_iter().collect();
        assert_eq!(loaded.index().0, 7);
    }

    #[test]
    fn a_table_is_stored_as_the_list_of_its_records() {
        #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
        struct Named {
            id: String,
        }
        impl Keyed for Named {
            type Index = ();
            fn key(&self) -> &str {
                &self.id
            }
        }
        let table = Table::from(vec![Named { id: "a".into() }, Named { id: "b".into() }]);
        let json = serde_json::to_string(&table).unwrap();
        assert_eq!(json, r#"[{"id":"a"},{"id":"b"}]"#);
        let back: Table<Named> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, table);
    }
}
