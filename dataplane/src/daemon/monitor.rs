//! `dataplane monitor` on the daemon's side: owns the monitor's maps (the ring buffer, the
//! "listening" flag, the lost-event counter), reads the ring buffer while at least one
//! client listens, names what the records are about, and streams each client the lines
//! its filter passes. The flag is on exactly while someone listens, so that the programs
//! build no event otherwise. It never blocks a request: clients are served off the lock,
//! which is taken only to name interfaces anew.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex as SyncMutex},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use aya::maps::{Array, MapData, PerCpuArray, RingBuf};
use dataplane_common::MonitorEvent;
use jiff::Timestamp;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::unix::{OwnedReadHalf, OwnedWriteHalf},
    sync::broadcast,
    task::JoinHandle,
};

use super::Shared;
use crate::{
    api,
    maps::MonitorMaps,
    monitor::{Filter, MonitorLine, Names, line_of},
};

/// Lines waiting for the slowest client before it loses the oldest.
const CLIENT_BACKLOG: usize = 4096;
/// How often the ring buffer is read while someone listens: the programs wake no reader
/// (it would cost each event a wake-up), so the ring buffer holds what this much time
/// brings.
const READ_EVERY: Duration = Duration::from_millis(100);
/// How long interface names are trusted before the state is asked again (an ifindex
/// may be reused by another container's veth).
const NAMES_TRUSTED: Duration = Duration::from_secs(2);

/// A record as read, or a count of records the ring buffer refused.
#[derive(Clone, Copy, Debug)]
enum Read {
    Event(Timestamp, MonitorEvent),
    Lost(Timestamp, u64),
}

pub struct Monitor {
    events: tokio::sync::Mutex<RingBuf<MapData>>,
    config: SyncMutex<Array<MapData, u32>>,
    lost: PerCpuArray<MapData, u64>,
    listeners: SyncMutex<Listeners>,
    reads: broadcast::Sender<Read>,
}

#[derive(Default)]
struct Listeners {
    count: usize,
    /// Those of them that asked for trace events.
    tracing: usize,
    reader: Option<JoinHandle<()>>,
}

impl Monitor {
    pub fn new(maps: MonitorMaps) -> Result<Arc<Self>> {
        let MonitorMaps { events, mut config, lost } = maps;
        // A previous daemon's programs may have left it on; nobody listens yet.
        config.set(0, 0, 0).context("clearing the monitor's flags")?;
        Ok(Arc::new(Self {
            events: tokio::sync::Mutex::new(events),
            config: SyncMutex::new(config),
            lost,
            listeners: SyncMutex::new(Listeners::default()),
            reads: broadcast::channel(CLIENT_BACKLOG).0,
        }))
    }

    /// A new listener: the first turns the programs' events on and starts reading, the
    /// first tracing one turns trace events on.
    fn subscribe(self: &Arc<Self>, traces: bool) -> Result<Subscription> {
        let mut listeners = self.listeners.lock().expect("monitor listeners");
        let reads = self.reads.subscribe();
        self.set_flags(listeners.count + 1, listeners.tracing + usize::from(traces))?;
        if listeners.count == 0 {
            listeners.reader = Some(tokio::spawn(read(self.clone())));
        }
        listeners.count += 1;
        listeners.tracing += usize::from(traces);
        Ok(Subscription { monitor: self.clone(), reads, traces })
    }

    /// The programs' flags for this many listeners, this many of them tracing.
    fn set_flags(&self, listening: usize, tracing: usize) -> Result<()> {
        let mut flags = 0;
        if listening > 0 {
            flags |= MonitorEvent::LISTENING;
        }
        if tracing > 0 {
            flags |= MonitorEvent::TRACING;
        }
        self.config.lock().expect("monitor config").set(0, flags, 0).context("setting the monitor's flags")
    }

    /// Events the ring buffer refused since the programs were loaded, over every CPU.
    fn lost_total(&self) -> u64 {
        self.lost.get(&0, 0).map(|per_cpu| per_cpu.iter().sum()).unwrap_or(0)
    }
}

/// A listener; the last one to go turns the events off and stops the reading.
struct Subscription {
    monitor: Arc<Monitor>,
    reads: broadcast::Receiver<Read>,
    traces: bool,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut listeners = self.monitor.listeners.lock().expect("monitor listeners");
        listeners.count -= 1;
        listeners.tracing -= usize::from(self.traces);
        if let Err(e) = self.monitor.set_flags(listeners.count, listeners.tracing) {
            log::warn!("{e:#}");
        }
        if listeners.count == 0
            && let Some(reader) = listeners.reader.take()
        {
            reader.abort();
        }
    }
}

/// Reads the ring buffer, and the lost-event counter, every `READ_EVERY` until aborted.
async fn read(monitor: Arc<Monitor>) {
    let mut events = monitor.events.lock().await;
    // What a listener before this one left unread is no news to this one.
    while events.next().is_some() {}
    let mut reported = monitor.lost_total();
    let mut tick = tokio::time::interval(READ_EVERY);
    loop {
        tick.tick().await;
        let now = Timestamp::now();
        while let Some(item) = events.next() {
            if item.len() >= size_of::<MonitorEvent>() {
                // SAFETY: the record holds a whole MonitorEvent, a plain-data type.
                let event = unsafe { item.as_ptr().cast::<MonitorEvent>().read_unaligned() };
                let _ = monitor.reads.send(Read::Event(now, event));
            }
        }
        let lost = monitor.lost_total();
        if lost > reported {
            let _ = monitor.reads.send(Read::Lost(now, lost - reported));
            reported = lost;
        }
    }
}

/// The names of interfaces and addresses, from the state at one moment.
struct NameTable {
    by_ifindex: HashMap<u32, Names>,
    by_address: HashMap<IpAddr, Names>,
    /// Published host ports by port and protocol (`tcp`, `udp`).
    by_published: HashMap<(u16, String), Names>,
    taken: Instant,
}

impl NameTable {
    async fn take(core: &Shared) -> Self {
        let c = core.lock().await;
        let owners = c.state.owner_names();
        let mut table = NameTable {
            by_ifindex: HashMap::new(),
            by_address: HashMap::new(),
            by_published: HashMap::new(),
            taken: Instant::now(),
        };
        for endpoint in c.state.endpoints.iter() {
            let names = Names {
                interface: endpoint.host_veth.clone(),
                container: Some(owners.of(&endpoint.owner)),
                network: c.state.network_by_id(&endpoint.network_id).map(|n| n.name.clone()),
            };
            for address in endpoint.addresses() {
                table.by_address.insert(address, names.clone());
            }
            for port in &endpoint.ports {
                table.by_published.insert((port.host_port, port.proto.to_string()), names.clone());
            }
            if let Ok(ifindex) = nix::net::if_::if_nametoindex(endpoint.host_veth.as_str()) {
                table.by_ifindex.insert(ifindex, names);
            }
        }
        table
    }

    /// Who `record` is about: the container behind the interface it arrived on, else the
    /// container it was for (a packet from outside: by its address, or by the published
    /// port it was sent to), else the one that sent it.
    fn names(&self, record: &MonitorEvent) -> Option<Names> {
        if let Some(names) = self.by_ifindex.get(&record.ifindex) {
            return Some(names.clone());
        }
        let line = line_of(record, Timestamp::UNIX_EPOCH, Names::default())?;
        let (MonitorLine::Drop(event) | MonitorLine::Flow(event) | MonitorLine::Trace(event)) = line else {
            return None;
        };
        let translated_dst = event.translated.as_ref().map(|t| t.dst);
        let by_address = |address: Option<IpAddr>| address.and_then(|a| self.by_address.get(&a));
        let published = event.dst_port.zip(event.proto).and_then(|port| self.by_published.get(&port));
        let owner = by_address(translated_dst)
            .or_else(|| by_address(event.dst))
            .or(published)
            .or_else(|| by_address(event.src))?;
        Some(Names { interface: interface_name(record.ifindex), ..owner.clone() })
    }
}

fn interface_name(ifindex: u32) -> String {
    let mut name = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: the buffer holds IF_NAMESIZE bytes, as if_indextoname requires.
    let found = unsafe { libc::if_indextoname(ifindex, name.as_mut_ptr()) };
    if found.is_null() {
        return format!("if{ifindex}");
    }
    // SAFETY: on success the buffer holds a NUL-terminated name.
    unsafe { std::ffi::CStr::from_ptr(name.as_ptr()) }.to_string_lossy().into_owned()
}

/// Serves one `monitor` client until it goes away: an answer line (its filter checked),
/// then one line per event its filter passes.
pub async fn serve(
    core: Shared,
    monitor: Arc<Monitor>,
    mut read_half: OwnedReadHalf,
    mut write: OwnedWriteHalf,
    mut filter: Filter,
) -> Result<()> {
    let checked = check_filter(&core, &mut filter).await;
    let failed = checked.is_err();
    write.write_all(&api::encode_answer(checked.map(|()| serde_json::Value::Null))).await?;
    if failed {
        return Ok(());
    }
    let mut subscription = monitor.subscribe(filter.traces())?;
    let mut names = NameTable::take(&core).await;
    let mut gone = [0u8; 1];
    loop {
        let read = tokio::select! {
            read = subscription.reads.recv() => read,
            // The client sends nothing more: a read returns when it goes away.
            _ = read_half.read(&mut gone) => return Ok(()),
        };
        let line = match read {
            Ok(Read::Event(time, record)) => {
                if names.taken.elapsed() > NAMES_TRUSTED
                    || (!names.by_ifindex.contains_key(&record.ifindex) && names.taken.elapsed() > READ_EVERY)
                {
                    names = NameTable::take(&core).await;
                }
                let who = names.names(&record).unwrap_or_else(|| Names {
                    interface: interface_name(record.ifindex),
                    ..Names::default()
                });
                match line_of(&record, time, who) {
                    Some(line) => line,
                    None => continue,
                }
            }
            Ok(Read::Lost(time, count)) => MonitorLine::Lost { time, count },
            Err(broadcast::error::RecvError::Lagged(count)) => {
                MonitorLine::Lost { time: Timestamp::now(), count }
            }
            Err(broadcast::error::RecvError::Closed) => return Ok(()),
        };
        if filter.passes(&line) {
            let mut text = serde_json::to_vec(&line)?;
            text.push(b'\n');
            if write.write_all(&text).await.is_err() {
                return Ok(());
            }
        }
    }
}

/// The container and network a filter names must exist; each is kept by its name (an ID
/// given is turned into it), which is what events carry. Endpoints of other runtimes are
/// named as `network inspect` names them (`cni:<containerID>`).
async fn check_filter(core: &Shared, filter: &mut Filter) -> Result<()> {
    let c = core.lock().await;
    if let Some(name) = &filter.network {
        filter.network = Some(c.network(name)?.name.clone());
    }
    if let Some(name) = &filter.container {
        let owners = c.state.owner_names();
        let found = match c.state.container(name) {
            Some(container) => container.name.clone(),
            None if c.state.endpoints.iter().any(|e| owners.of(&e.owner) == *name) => name.clone(),
            None => return Err(super::no_such_container(name)),
        };
        filter.container = Some(found);
    }
    Ok(())
}
