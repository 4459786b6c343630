//! Where the state lives on disk: `state.json`, the whole state as of some moment, and
//! `state.journal`, what changed since, one line per save (the records put and removed,
//! the firewall when it changed), appended and synced before the request is answered.
//! Docker's records and the firewall, small and rarely changed, are written whole when
//! they changed. A save costs what changed, not the size of the state: with 2,000 endpoints the whole
//! state is ~2.5 MB, which took 15 ms to write per request.
//!
//! Once the journal outgrows the snapshot, and when the daemon stops, the whole state is
//! written to a temporary file, synced and renamed over `state.json`, and the journal is
//! emptied: after a clean stop `state.json` alone is the state. Each save is one line, so
//! a crash keeps it whole or not at all; the snapshot names the last line it holds
//! (`journal_seq`), so a crash between the rename and the emptying replays nothing twice.

use std::{
    fs::{self, File},
    io::Write,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::{Change, Container, DockerState, Endpoint, Intent, Keyed, Network, Owner, State, Table, new_id};
use crate::firewall::Rules;

/// The journal is folded into the snapshot once it grows past the snapshot, and never
/// below this size: small states are cheap to write whole anyway.
const FOLD_AT_LEAST: u64 = 256 * 1024;

/// What changed in the state since it was last saved, table by table, in order.
#[derive(Debug, Default)]
pub struct Changes {
    pub networks: Vec<Change<Network>>,
    pub containers: Vec<Change<Container>>,
    pub endpoints: Vec<Change<Endpoint>>,
    pub intents: Vec<Change<Intent>>,
}

impl State {
    /// The changes since the last call, for the store and the resolvers.
    pub fn take_changes(&mut self) -> Changes {
        Changes {
            networks: self.networks.take_changes(),
            containers: self.containers.take_changes(),
            endpoints: self.endpoints.take_changes(),
            intents: self.intents.take_changes(),
        }
    }
}

pub struct StateStore {
    snapshot: PathBuf,
    journal: PathBuf,
    /// The journal, open for appending.
    file: Option<File>,
    /// The number of the last save written, to the snapshot or the journal.
    seq: u64,
    journal_bytes: u64,
    snapshot_bytes: u64,
    /// The firewall and Docker's records as last written: they change rarely and are
    /// small, so saves compare them.
    firewall: Rules,
    docker: DockerState,
    /// The files may not hold the state (no snapshot yet, a save failed halfway, or the
    /// state was migrated on load): the next save writes it whole.
    whole_next: bool,
}

/// One save in the journal, as written.
#[derive(Serialize)]
struct Written<'a> {
    seq: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    networks: Vec<Op<&'a Network>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    containers: Vec<Op<&'a Container>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    endpoints: Vec<Op<&'a Endpoint>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    intents: Vec<Op<&'a Intent>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    firewall: Option<&'a Rules>,
    #[serde(skip_serializing_if = "Option::is_none")]
    docker: Option<&'a DockerState>,
}

/// One save in the journal, as read back.
#[derive(Deserialize)]
struct Read {
    seq: u64,
    #[serde(default)]
    networks: Vec<Op<Network>>,
    #[serde(default)]
    containers: Vec<Op<Container>>,
    #[serde(default)]
    endpoints: Vec<Op<Endpoint>>,
    #[serde(default)]
    intents: Vec<Op<Intent>>,
    firewall: Option<Rules>,
    docker: Option<DockerState>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Op<T> {
    /// The record as it is now, added or changed.
    Put(T),
    /// The key of a record that went.
    Removed(String),
}

/// A table's changes as journal operations: a record put and removed since is left to its
/// removal.
fn ops<'a, T: Keyed>(table: &'a Table<T>, changes: &[Change<T>]) -> Vec<Op<&'a T>> {
    changes
        .iter()
        .filter_map(|change| match change {
            Change::Put(key) => table.get(key).map(Op::Put),
            Change::Removed(gone) => Some(Op::Removed(gone.key().to_string())),
        })
        .collect()
}

fn replay<T: Keyed>(table: &mut Table<T>, ops: Vec<Op<T>>) {
    for op in ops {
        match op {
            Op::Put(record) => table.replay_put(record),
            Op::Removed(key) => table.replay_removal(&key),
        }
    }
}

/// The snapshot's own fields besides the state's.
#[derive(Deserialize)]
struct SnapshotHeader {
    /// The last journal line the snapshot holds (absent from files of earlier versions,
    /// which had no journal).
    #[serde(default)]
    journal_seq: u64,
    /// Absent from files of earlier versions: the IDs made on load are written at once.
    #[serde(default)]
    predefined: Option<serde::de::IgnoredAny>,
}

#[derive(Serialize)]
struct Snapshot<'a> {
    journal_seq: u64,
    #[serde(flatten)]
    state: &'a State,
}

impl StateStore {
    pub fn new(dir: &Path) -> Self {
        Self {
            snapshot: dir.join("state.json"),
            journal: dir.join("state.journal"),
            file: None,
            seq: 0,
            journal_bytes: 0,
            snapshot_bytes: 0,
            firewall: Rules::default(),
            docker: DockerState::default(),
            whole_next: true,
        }
    }

    /// The state on disk, if any: the snapshot, brought to today's shape if an earlier
    /// version wrote it (see `Earlier`), and the journal's saves after it. A last line cut
    /// short (a crash while it was written: its request was never answered) is left out.
    /// When there was a journal or a migration, the state is written whole at once.
    pub fn load(&mut self) -> Result<Option<State>> {
        let (state, fold) = self.read()?;
        if let (Some(state), true) = (&state, fold) {
            self.write_whole(state)?;
        }
        Ok(state)
    }

    /// The state as a daemon's files hold it now, read without writing anything: for
    /// those who look at the state of a running daemon (tests, tools).
    pub fn peek(dir: &Path) -> Result<Option<State>> {
        Ok(Self::new(dir).read()?.0)
    }

    /// The state on disk, and whether the files should be written whole (a journal was
    /// replayed or the snapshot migrated).
    fn read(&mut self) -> Result<(Option<State>, bool)> {
        let corrupt = || self.snapshot_corrupt();
        let (mut state, migrated) = match read_if_present(&self.snapshot)? {
            Some(bytes) => {
                let mut state: State = serde_json::from_slice(&bytes).with_context(corrupt)?;
                let header: SnapshotHeader = serde_json::from_slice(&bytes).with_context(corrupt)?;
                let earlier: Earlier = serde_json::from_slice(&bytes).with_context(corrupt)?;
                let migrated =
                    earlier.migrate_into(&mut state).with_context(corrupt)? || header.predefined.is_none();
                self.seq = header.journal_seq;
                self.snapshot_bytes = bytes.len() as u64;
                (Some(state), migrated)
            }
            None => (None, false),
        };
        let journal = read_if_present(&self.journal)?.unwrap_or_default();
        let mut replayed = false;
        let mut lines = journal.split_inclusive(|b| *b == b'\n').enumerate().peekable();
        while let Some((number, line)) = lines.next() {
            let save: Read = match serde_json::from_slice(line) {
                Ok(save) => save,
                Err(_) if lines.peek().is_none() && !line.ends_with(b"\n") => {
                    log::warn!("{}: the last save was cut short; it is left out", self.journal.display());
                    break;
                }
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!(
                            "state journal {} is corrupt at line {}: {} holds the state before the \
                             saves in it; to start from that alone (losing the changes since), \
                             move {} aside",
                            self.journal.display(),
                            number + 1,
                            self.snapshot.display(),
                            self.journal.display()
                        )
                    });
                }
            };
            if save.seq <= self.seq {
                continue;
            }
            let state = state.get_or_insert_with(State::default);
            replay(&mut state.networks, save.networks);
            replay(&mut state.containers, save.containers);
            replay(&mut state.endpoints, save.endpoints);
            replay(&mut state.intents, save.intents);
            if let Some(firewall) = save.firewall {
                state.firewall = firewall;
            }
            if let Some(docker) = save.docker {
                state.docker = docker;
            }
            self.seq = save.seq;
            replayed = true;
        }
        let Some(mut state) = state else { return Ok((None, false)) };
        let adopted = state.adopt_endpoints();
        // Written whole below, not as changes.
        state.take_changes();
        self.firewall = state.firewall.clone();
        self.docker = state.docker.clone();
        self.whole_next = false;
        Ok((Some(state), replayed || migrated || adopted))
    }

    /// Writes what changed: one line appended to the journal (synced when `sync`); the
    /// whole state, synced, instead when the journal has outgrown it or the files may not
    /// hold the state.
    pub fn save(&mut self, state: &State, changes: &Changes, sync: bool) -> Result<()> {
        let firewall = (state.firewall != self.firewall).then_some(&state.firewall);
        let docker = (state.docker != self.docker).then_some(&state.docker);
        let written = Written {
            seq: self.seq + 1,
            networks: ops(&state.networks, &changes.networks),
            containers: ops(&state.containers, &changes.containers),
            endpoints: ops(&state.endpoints, &changes.endpoints),
            intents: ops(&state.intents, &changes.intents),
            firewall,
            docker,
        };
        let nothing = written.networks.is_empty()
            && written.containers.is_empty()
            && written.endpoints.is_empty()
            && written.intents.is_empty()
            && written.firewall.is_none()
            && written.docker.is_none();
        if self.whole_next || self.journal_bytes > self.snapshot_bytes.max(FOLD_AT_LEAST) {
            return self.write_whole(state);
        }
        if nothing {
            return Ok(());
        }
        let mut line = serde_json::to_vec(&written)?;
        line.push(b'\n');
        if let Err(e) = self.append(&line, sync) {
            // The line may be on disk all the same: its number is not used again, so the
            // snapshot that follows holds it for certain.
            self.seq += 1;
            self.whole_next = true;
            return Err(e);
        }
        self.seq += 1;
        self.journal_bytes += line.len() as u64;
        if firewall.is_some() {
            self.firewall = state.firewall.clone();
        }
        if docker.is_some() {
            self.docker = state.docker.clone();
        }
        Ok(())
    }

    fn append(&mut self, line: &[u8], sync: bool) -> Result<()> {
        let file = match &mut self.file {
            Some(file) => file,
            None => self.file.insert(
                File::options()
                    .create(true)
                    .append(true)
                    .open(&self.journal)
                    .with_context(|| format!("opening {}", self.journal.display()))?,
            ),
        };
        file.write_all(line)
            .and_then(|()| if sync { file.sync_data() } else { Ok(()) })
            .with_context(|| format!("writing {}", self.journal.display()))
    }

    /// What to say of a snapshot that does not parse: which file, and what to do.
    fn snapshot_corrupt(&self) -> String {
        let (snapshot, journal) = (self.snapshot.display(), self.journal.display());
        let backup = self.backup();
        if backup.exists() {
            format!(
                "state file {snapshot} is corrupt; the snapshot before it is kept in {}: to start \
                 from that (losing the changes since), move {snapshot} and {journal} aside and \
                 copy {} to {snapshot}; or move all three aside to start with no state",
                backup.display(),
                backup.display()
            )
        } else {
            format!(
                "state file {snapshot} is corrupt and there is no earlier copy; move {snapshot} \
                 and {journal} aside to start with no state"
            )
        }
    }

    /// The snapshot before the last, kept in case the last is damaged after it was written.
    fn backup(&self) -> PathBuf {
        self.snapshot.with_extension("json.bak")
    }

    /// Writes the whole state to the snapshot and empties the journal: at once when the
    /// daemon stops, and whenever `save` finds it due. The new snapshot replaces the old
    /// by a rename, so that `state.json` is whole at every moment; the old one stays as
    /// `state.json.bak`.
    pub fn write_whole(&mut self, state: &State) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(&Snapshot { journal_seq: self.seq, state })?;
        let tmp = self.snapshot.with_extension("json.tmp");
        let backup = self.backup();
        let write = || -> std::io::Result<()> {
            let mut file = File::create(&tmp)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
            // A second name for the old snapshot, so that it stays when the new one takes
            // `state.json`: never a moment without a whole `state.json`.
            match fs::remove_file(&backup) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
            match fs::hard_link(&self.snapshot, &backup) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
            fs::rename(&tmp, &self.snapshot)?;
            // The rename itself must last before the journal it replaces is emptied.
            if let Some(dir) = self.snapshot.parent() {
                File::open(dir)?.sync_all()?;
            }
            Ok(())
        };
        write().with_context(|| format!("writing {}", self.snapshot.display()))?;
        self.snapshot_bytes = bytes.len() as u64;
        self.firewall = state.firewall.clone();
        self.docker = state.docker.clone();
        self.whole_next = true;
        let emptied = match &self.file {
            Some(file) => file.set_len(0).and_then(|()| file.sync_all()),
            None => match File::options().write(true).open(&self.journal) {
                Ok(file) => file.set_len(0).and_then(|()| file.sync_all()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(e),
            },
        };
        emptied.with_context(|| format!("emptying {}", self.journal.display()))?;
        self.journal_bytes = 0;
        self.whole_next = false;
        Ok(())
    }
}

fn read_if_present(path: &Path) -> Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// What a state file written before endpoints were the state's own holds in each
/// container: its attachments, and the ports published on the first of them. Files of
/// today hold none, and migrate to themselves.
#[derive(Deserialize)]
struct Earlier {
    #[serde(default)]
    containers: Vec<EarlierContainer>,
}

#[derive(Deserialize)]
struct EarlierContainer {
    id: String,
    netns: PathBuf,
    #[serde(default)]
    attachments: Vec<serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    ports: Vec<crate::ports::PortMapping>,
}

impl Earlier {
    /// Makes each attachment an endpoint of its container: an attachment held an
    /// endpoint's fields but its id, owner, namespace and ports. Returns whether there was
    /// any.
    fn migrate_into(self, state: &mut State) -> serde_json::Result<bool> {
        let mut migrated = false;
        for container in self.containers {
            let owner = serde_json::to_value(Owner::Container { id: container.id })?;
            let netns = serde_json::to_value(&container.netns)?;
            let mut ports = Some(container.ports);
            for mut fields in container.attachments {
                fields.insert("id".into(), new_id().into());
                fields.insert("owner".into(), owner.clone());
                fields.insert("netns".into(), netns.clone());
                fields.insert("ports".into(), serde_json::to_value(ports.take().unwrap_or_default())?);
                state.endpoints.replay_put(serde_json::from_value(fields.into())?);
                migrated = true;
            }
        }
        Ok(migrated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Status, tests::sample};

    /// A state with `n` more containers, each with an endpoint, saved one by one.
    fn grow(state: &mut State, store: &mut StateStore, n: usize) {
        let (container, endpoint) = (state.containers[0].clone(), state.endpoints[0].clone());
        for i in 0..n {
            let id = new_id();
            state.containers.push(Container { id: id.clone(), name: format!("c{i}"), ..container.clone() });
            state.endpoints.push(Endpoint {
                id: new_id(),
                owner: Owner::Container { id },
                ip: Some(std::net::Ipv4Addr::new(10, 9, 1, i as u8)),
                host_veth: format!("veth{i:07x}"),
                ..endpoint.clone()
            });
            store.save(state, &state.clone().take_changes(), true).unwrap();
            state.take_changes();
        }
    }

    fn save(state: &mut State, store: &mut StateStore) {
        let changes = state.take_changes();
        store.save(state, &changes, true).unwrap();
    }

    fn journal_len(dir: &Path) -> u64 {
        fs::metadata(dir.join("state.journal")).map_or(0, |m| m.len())
    }

    #[test]
    fn saves_append_what_changed_and_a_restart_reads_them_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = StateStore::new(dir.path());
        let mut state = sample();
        save(&mut state, &mut store);
        let snapshot = fs::read(dir.path().join("state.json")).unwrap();
        grow(&mut state, &mut store, 3);
        let first = state.containers[1].id.clone();
        state.container_mut(&first).unwrap().status = Status::Exited { code: Some(3) };
        state.endpoints.retain(|e| e.owner.container_id() != Some(first.as_str()));
        state.containers.retain(|c| c.id != first);
        state.firewall.remove(&[1]).unwrap();
        state.docker.networks.clear();
        save(&mut state, &mut store);
        assert_eq!(
            fs::read(dir.path().join("state.json")).unwrap(),
            snapshot,
            "the snapshot was not rewritten"
        );
        let lines = fs::read_to_string(dir.path().join("state.journal")).unwrap();
        assert_eq!(lines.lines().count(), 4, "one line per save: {lines}");
        assert!(lines.lines().last().unwrap().len() < 2000, "a save writes what changed only");
        let loaded = StateStore::new(dir.path()).load().unwrap().unwrap();
        assert_eq!(loaded, state, "the records, their order, the firewall and Docker's records come back");
        assert_eq!(loaded.used_addresses(&state.networks[0].id), state.used_addresses(&state.networks[0].id));
    }

    #[test]
    fn a_peek_reads_the_journal_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = StateStore::new(dir.path());
        let mut state = sample();
        save(&mut state, &mut store);
        grow(&mut state, &mut store, 2);
        let before = (fs::read(dir.path().join("state.json")).unwrap(), journal_len(dir.path()));
        assert_eq!(StateStore::peek(dir.path()).unwrap(), Some(state.clone()));
        let after = (fs::read(dir.path().join("state.json")).unwrap(), journal_len(dir.path()));
        assert!(before == after && after.1 > 0, "a peek wrote to the files");
        grow(&mut state, &mut store, 1);
        assert_eq!(StateStore::peek(dir.path()).unwrap(), Some(state), "the store goes on after a peek");
    }

    #[test]
    fn a_load_after_a_journal_writes_the_state_whole_and_numbers_go_on() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = StateStore::new(dir.path());
        let mut state = sample();
        save(&mut state, &mut store);
        grow(&mut state, &mut store, 2);
        let mut store = StateStore::new(dir.path());
        let mut loaded = store.load().unwrap().unwrap();
        assert_eq!(journal_len(dir.path()), 0, "the journal is folded into the snapshot on load");
        grow(&mut loaded, &mut store, 1);
        assert_eq!(StateStore::new(dir.path()).load().unwrap(), Some(loaded), "saves after a restart count");
    }

    #[test]
    fn a_save_cut_short_by_a_crash_is_left_out_and_a_corrupt_line_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = StateStore::new(dir.path());
        let mut state = sample();
        save(&mut state, &mut store);
        grow(&mut state, &mut store, 1);
        let before_crash = state.clone();
        grow(&mut state, &mut store, 1);
        let journal = dir.path().join("state.journal");
        let full = fs::read(&journal).unwrap();
        fs::write(&journal, &full[..full.len() - 10]).unwrap();
        assert_eq!(StateStore::new(dir.path()).load().unwrap(), Some(before_crash));
        let mut garbled = full.clone();
        garbled.splice(0..0, b"{not json}\n".iter().copied());
        fs::write(&journal, garbled).unwrap();
        let err = format!("{:#}", StateStore::new(dir.path()).load().unwrap_err());
        assert!(err.contains("state.journal is corrupt at line 1"), "names the file and the line: {err}");
        assert!(err.contains("move") && err.contains("aside"), "says what to do: {err}");
    }

    #[test]
    fn each_snapshot_keeps_the_one_before_as_a_backup() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = StateStore::new(dir.path());
        let mut state = sample();
        store.write_whole(&state).unwrap();
        assert!(!dir.path().join("state.json.bak").exists(), "no earlier snapshot, no backup");
        let first = fs::read(dir.path().join("state.json")).unwrap();
        grow(&mut state, &mut store, 1);
        store.write_whole(&state).unwrap();
        assert_eq!(
            fs::read(dir.path().join("state.json.bak")).unwrap(),
            first,
            "the backup is the snapshot before"
        );
        assert_eq!(StateStore::new(dir.path()).load().unwrap(), Some(state), "the new snapshot is the state");
    }

    #[test]
    fn a_damaged_snapshot_is_refused_with_its_name_its_backup_and_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = StateStore::new(dir.path());
        let mut state = sample();
        store.write_whole(&state).unwrap();
        grow(&mut state, &mut store, 1);
        store.write_whole(&state).unwrap();
        let snapshot = dir.path().join("state.json");
        let whole = fs::read(&snapshot).unwrap();
        let backup = dir.path().join("state.json.bak");
        for (damage, bytes) in [
            ("cut short", whole[..whole.len() / 2].to_vec()),
            ("empty", vec![]),
            ("garbled", whole.iter().map(|b| if *b == b'"' { b'#' } else { *b }).collect()),
        ] {
            fs::write(&snapshot, &bytes).unwrap();
            let err = format!("{:#}", StateStore::new(dir.path()).load().unwrap_err());
            assert!(
                err.contains(&format!("state file {} is corrupt", snapshot.display())),
                "{damage}: {err}"
            );
            assert!(err.contains(&backup.display().to_string()), "{damage}: names the backup: {err}");
            assert!(err.contains("to start from that"), "{damage}: says what to do: {err}");
            assert_eq!(fs::read(&snapshot).unwrap(), bytes, "{damage}: the damaged file is left as it is");
        }
        // Done as the message says, the daemon starts from the snapshot before.
        fs::remove_file(dir.path().join("state.journal")).unwrap();
        fs::copy(&backup, &snapshot).unwrap();
        assert!(StateStore::new(dir.path()).load().unwrap().is_some());
        fs::remove_file(&backup).unwrap();
        fs::write(&snapshot, b"{").unwrap();
        let err = format!("{:#}", StateStore::new(dir.path()).load().unwrap_err());
        assert!(err.contains("no earlier copy") && err.contains("start with no state"), "{err}");
    }

    #[test]
    fn intents_are_saved_and_taken_back_through_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = StateStore::new(dir.path());
        let mut state = sample();
        save(&mut state, &mut store);
        let removed = state.containers[0].id.clone();
        let container = Container { id: new_id(), ..state.containers[0].clone() };
        state.intents.push(Intent::Remove { container_id: removed });
        state.intents.push(Intent::Run { container: container.clone() });
        save(&mut state, &mut store);
        let loaded = StateStore::peek(dir.path()).unwrap().unwrap();
        assert_eq!(loaded.intents.len(), 2, "both intents are on disk: {:?}", loaded.intents);
        assert_eq!(loaded, state);
        state.intents.retain(|i| !matches!(i, Intent::Remove { .. }));
        save(&mut state, &mut store);
        assert_eq!(StateStore::peek(dir.path()).unwrap().unwrap().intents[..], [Intent::Run { container }]);
    }

    #[test]
    fn the_journal_is_folded_into_the_snapshot_once_it_outgrows_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = StateStore::new(dir.path());
        let mut state = sample();
        save(&mut state, &mut store);
        let mut most = 0;
        for _ in 0..100 {
            grow(&mut state, &mut store, 5);
            most = most.max(journal_len(dir.path()));
        }
        let snapshot = fs::metadata(dir.path().join("state.json")).unwrap().len();
        // It folds once it outgrows the snapshot (or FOLD_AT_LEAST), which grew along.
        assert!(
            most <= snapshot.max(FOLD_AT_LEAST) + 4096,
            "the journal grew to {most} bytes, the snapshot to {snapshot}"
        );
        assert!(
            snapshot > 100_000,
            "the snapshot was not rewritten: {snapshot} bytes, journal at most {most}"
        );
        assert_eq!(StateStore::new(dir.path()).load().unwrap(), Some(state));
    }

    #[test]
    fn a_crash_between_the_snapshot_and_emptying_the_journal_replays_nothing_twice() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = StateStore::new(dir.path());
        let mut state = sample();
        save(&mut state, &mut store);
        grow(&mut state, &mut store, 2);
        let journal = fs::read(dir.path().join("state.journal")).unwrap();
        // The last container changes after the journal's lines; then the snapshot is
        // written, and the crash leaves the old journal in place.
        let last = state.containers.last().unwrap().id.clone();
        state.container_mut(&last).unwrap().status = Status::Exited { code: Some(1) };
        state.take_changes();
        store.write_whole(&state).unwrap();
        fs::write(dir.path().join("state.journal"), journal).unwrap();
        assert_eq!(StateStore::new(dir.path()).load().unwrap(), Some(state));
    }

    #[test]
    fn a_stop_leaves_the_whole_state_in_the_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = StateStore::new(dir.path());
        let mut state = sample();
        save(&mut state, &mut store);
        grow(&mut state, &mut store, 2);
        store.write_whole(&state).unwrap();
        assert_eq!(journal_len(dir.path()), 0);
        let text = fs::read_to_string(dir.path().join("state.json")).unwrap();
        let snapshot: State = serde_json::from_str(&text).unwrap();
        assert_eq!(snapshot, state, "state.json alone is the state");
    }
}
