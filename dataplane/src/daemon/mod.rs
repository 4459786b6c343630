//! The daemon: owns the state, the BPF maps and the system changes, and serves the CLI.
//! Every request runs under one lock, so that a change to the system and the state that
//! records it happen as one step; a failed step undoes its system changes before the
//! error goes back, so bad input never leaves anything behind.
//!
//! This module holds the configuration, the control socket, the server loop and the
//! dispatch of requests to the owners beside it, which never call each other in a circle:
//! - `networks`: create, remove, prune; the host's routes;
//! - `overlay`: the shared store's view on this host: overlay networks and other hosts'
//!   names, from its watch, and the host's lease (used by `networks` and `endpoints`);
//! - `publishing`: published ports of an endpoint, their reservations and firewall rule sets,
//!   and the firewall of its own addresses;
//! - `endpoints`: a namespace's attachment to a network, whoever made the namespace
//!   (uses `publishing`);
//! - `containers`: our own `run`, `stop`, `start`, `rm`, `network connect` (uses `endpoints`);
//! - `cni`: the CNI plugin's ADD, DEL, CHECK and GC (uses `networks` and `endpoints`);
//! - `docker`: Docker's network plugin API, its network and IPAM drivers, served on a
//!   socket of its own (uses `networks` and `endpoints`);
//! - `restore`: the system back in line with the state at start (uses them all);
//! - `metrics`: the Prometheus endpoint (reads the maps and the state);
//! - `monitor`: `dataplane monitor`'s stream of the programs' events (owns the monitor's maps);
//! - `kernel_log`: the programs' diagnostic messages, in the daemon's log;
//! - `state_lock`: one daemon per state dir;
//! - `config`: the settings, from flags, the config file and defaults;
//! - `privileges`: the capabilities it needs, checked first;
//! - `cleanup`: `daemon --cleanup`, every trace of a stopped daemon removed;
//! - `systemd`: readiness, told to systemd.
//!
//! It never creates a network, attaches a namespace or publishes a port itself: that is
//! the owners' work.

mod cleanup;
mod cni;
mod config;
mod containers;
mod docker;
mod endpoints;
mod kernel_log;
mod metrics;
mod monitor;
mod networks;
mod overlay;
mod privileges;
mod publishing;
mod restore;
mod state_lock;
mod systemd;
mod uplink;

pub use cleanup::cleanup;
pub use config::{LogLevel, Settings, init_logging};

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::{Context, Result, anyhow, bail};
use dataplane_common::{IpAddress, NatConfig};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{UnixListener, UnixStream},
    sync::Mutex,
};

use crate::{
    api::{self, Request},
    dns, firewall, inspect,
    maps::Datapath,
    nat,
    netlink::{LinkReaper, Netlink},
    netns,
    ports::{self, Reservation},
    state::{Container, Intent, Keyed, Network, State, StateStore, Status},
};

/// Where the daemon keeps things; every path has a flag and an environment variable so
/// that several daemons (one per host namespace) can run side by side.
#[derive(Clone, Debug)]
pub struct Config {
    pub state_dir: PathBuf,
    pub bpffs: PathBuf,
    pub socket: PathBuf,
    pub netns_dir: PathBuf,
    /// The interface masqueraded traffic leaves by; the default route's when `None`.
    pub uplink: Option<String>,
    pub nat_port_range: Option<(u16, u16)>,
    /// The cgroup whose processes reach published ports through the socket hooks; the
    /// cgroup2 root when `None`.
    pub cgroup: Option<PathBuf>,
    /// Upstream resolvers; the host's resolv.conf ones when empty.
    pub dns: Vec<std::net::IpAddr>,
    /// Entries of each conntrack table; `CONNTRACK_DEFAULT_SIZE` when `None`.
    pub conntrack_max: Option<u32>,
    /// Whether published ports are served by XDP on the uplink.
    pub xdp: nat::UplinkXdp,
    /// Where Docker's network plugin API is served, if it is.
    pub docker_plugin: Option<PathBuf>,
    /// How long Docker's endpoints found half-made at start (created and never joined,
    /// or joined and never taken into a sandbox) may stay so before they are removed.
    pub docker_stale_after: Duration,
    /// IPv6 on the default network (`--ipv6`), from this prefix (`--fixed-cidr-v6`) or
    /// the host's ULA pool when `None`.
    pub default_ipv6: Option<Option<ipnet::Ipv6Net>>,
    /// Where the Prometheus metrics are served, if they are.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Bytes of the monitor's ring buffer.
    pub monitor_ring_size: u32,
    /// The store shared with other hosts (`--store`), if there is one.
    pub store: Option<crate::store::StoreAddress>,
    /// How the daemon checks the store and proves itself to it (TLS, user).
    pub store_access: crate::store::StoreAccess,
    /// Where other hosts reach this one (`--advertise-address`).
    pub advertise_address: Option<std::net::IpAddr>,
    /// How long the store keeps this host's leases after it stops renewing them.
    pub store_ttl: Duration,
    /// The UDP port of the VXLAN tunnel between hosts (`--vxlan-port`).
    pub vxlan_port: u16,
}

/// The host's id, made once and kept in the state dir: what the ULA pool of its IPv6
/// networks comes from, so that it stays the same across restarts.
fn host_id(state_dir: &Path) -> Result<String> {
    let path = state_dir.join("host-id");
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => Ok(id.trim().to_string()),
        Ok(_) => write_host_id(&path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => write_host_id(&path),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn write_host_id(path: &Path) -> Result<String> {
    let id = crate::state::new_id();
    std::fs::write(path, format!("{id}\n")).with_context(|| format!("writing {}", path.display()))?;
    Ok(id)
}

/// The name of the daemon's pin of its own namespace in the pin dir (`Core::host_netns`).
const HOST_NETNS_PIN: &str = "dp-host";

/// How long a client of the control socket has to send its request, and to take its
/// answer; it gets an error, or is dropped, after that.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest request the control socket reads (the CLI's largest are a few KiB).
const REQUEST_MAX_BYTES: u64 = 1 << 20;

/// How often expired flows are swept from the conntrack tables.
const CONNTRACK_GC_INTERVAL: Duration = Duration::from_secs(10);

/// Everything the daemon holds, behind the one lock; each owner module adds the methods
/// of its concern.
struct Core {
    config: Config,
    state: State,
    store: StateStore,
    datapath: Datapath,
    netlink: Netlink,
    /// The uplink and the masquerade source ports, which publishing must leave alone;
    /// `None`: NAT is off.
    masquerade: Option<nat::Masquerade>,
    /// Host ports held for each endpoint's published ports, by endpoint id.
    reservations: HashMap<String, Vec<Reservation>>,
    /// The embedded DNS of each bridge network, kept in line with the state on each save.
    resolvers: dns::Resolvers,
    /// What the daemon removed from the conntrack tables, to tell evictions apart.
    conntrack: nat::ConntrackAccount,
    /// Addresses of detached endpoints whose flows are still to go.
    departed: nat::Departures,
    /// Wakes the task that forgets the departed flows.
    departures_waiting: Arc<tokio::sync::Notify>,
    /// The firewall rule sets in the programs' tries, and the blocks of ports of
    /// containers' own addresses.
    firewall: firewall::Installed,
    /// The host's ULA /48, where networks without an IPv6 --subnet take a /64.
    ula_pool: ipnet::Ipv6Net,
    /// The store shared with other hosts, for overlay networks (`--store`).
    shared: Option<Arc<crate::store::etcd::EtcdStore>>,
    /// The MTU of overlay networks' containers, once the tunnel is up (with a store).
    tunnel_mtu: Option<u32>,
    /// Other hosts' addresses of another underlay family than this one's, as last told
    /// (`tunnel::Tables::other_family`): each is warned of once.
    other_family_hosts: std::collections::BTreeSet<std::net::IpAddr>,
    /// Deletes the interfaces of removed containers after the answer.
    link_reaper: LinkReaper,
}

type Shared = Arc<Mutex<Core>>;

/// See `Core::datapath_figures`.
#[derive(Debug)]
struct DatapathFigures {
    paths: Vec<(dataplane_common::Path, dataplane_common::Counter)>,
    entries: nat::PerTable,
    evictions: nat::PerTable,
}

/// What one endpoint sent and what the programs delivered to it, with whose it is.
#[derive(Debug, serde::Serialize)]
struct EndpointFigures {
    container: String,
    network: String,
    sent: Traffic,
    received: Traffic,
}

#[derive(Clone, Debug, serde::Serialize)]
struct Traffic {
    packets: u64,
    bytes: u64,
}

impl From<dataplane_common::Counter> for Traffic {
    fn from(counter: dataplane_common::Counter) -> Self {
        Self { packets: counter.packets, bytes: counter.bytes }
    }
}

pub async fn run(config: Config) -> Result<()> {
    privileges::require("the daemon")?;
    std::fs::create_dir_all(&config.state_dir)
        .with_context(|| format!("creating state dir {}", config.state_dir.display()))?;
    // Before anything else is touched: a second daemon would re-attach the programs and
    // write the same state files.
    let _state_dir_lock = state_lock::StateDirLock::take(&config.state_dir)?;
    std::fs::create_dir_all(config.state_dir.join("logs"))?;
    if UnixStream::connect(&config.socket).await.is_ok() {
        bail!(
            "another daemon already serves {}; stop it or give this one another --socket",
            config.socket.display()
        );
    }
    netns::prepare_pin_dir(&config.netns_dir)?;
    if let Err(e) = netns::prepare_mount_template(&config.netns_dir) {
        log::warn!("containers' commands copy the daemon's mounts, pins and all: {e:#}");
    }
    let conntrack_size = config.conntrack_max.unwrap_or(dataplane_common::CONNTRACK_DEFAULT_SIZE);
    let netlink = Netlink::connect()?;
    let uplink = nat::find_uplink(&netlink, config.uplink.as_deref()).await?;
    // The uplink's programs are verified beside `from_container`, on another core.
    let mut at_start = vec![];
    if let Some(uplink) = &uplink {
        at_start.push(dataplane_common::program_names::FROM_UPLINK);
        if uplink_xdp_wanted(uplink, &config) {
            at_start.push(dataplane_common::program_names::UPLINK_XDP);
        }
    }
    let mut datapath = Datapath::load(
        &config.bpffs,
        conntrack_size,
        config.monitor_ring_size,
        kernel_log::level(),
        &at_start,
    )?;
    kernel_log::forward(&mut datapath)?;
    let monitor = monitor::Monitor::new(datapath.take_monitor_maps()?)?;
    let conntrack = nat::ConntrackAccount::new(nat::TableSnapshot::take(&mut datapath)?);
    let firewall = firewall::Installed::load(&mut datapath)?;
    let masquerade = setup_nat(uplink, &mut datapath, &config)?;
    match config.cgroup.clone().or_else(crate::maps::cgroup2_root) {
        Some(cgroup) => datapath.attach_host_hooks(&cgroup, crate::maps::current_netns_cookie()?)?,
        None => log::warn!("no cgroup2 mount: host processes cannot reach published ports"),
    }
    ports::raise_fd_limit();
    let mut store = StateStore::new(&config.state_dir);
    let state = store.load()?.unwrap_or_default();
    let resolvers = dns::Resolvers::new(&upstreams(&config));
    let host_id = host_id(&config.state_dir)?;
    let ula_pool = crate::ipam::ula_pool(&host_id);
    // Where other hosts reach this one: the address given, else the default route's
    // interface's (`tunnel::default_advertise_address`).
    let advertise_address = match (config.advertise_address, &config.store) {
        (Some(ip), _) => Some(ip),
        (None, Some(_)) => {
            let uplink = masquerade.as_ref().map(|m| &m.uplink);
            crate::tunnel::default_advertise_address(&netlink, uplink).await?
        }
        (None, None) => None,
    };
    let shared = match &config.store {
        Some(address) => {
            if config.advertise_address.is_none()
                && let Some(ip) = advertise_address
            {
                log::info!(
                    "advertising {ip} (the default route's interface's) to other hosts; --advertise-address sets another"
                );
            }
            let host = crate::store::Host { id: host_id[..12].to_string(), address: advertise_address };
            let store = crate::store::etcd::EtcdStore::connect(
                address.clone(),
                &config.store_access,
                host,
                config.store_ttl,
            )
            .await?;
            // A store that refuses this daemon (a wrong CA or password) stops it now; one
            // that does not answer yet is waited for, as overlay work is.
            match store.check().await {
                Ok(()) => {
                    // The other hosts' underlay family, as far as their records tell.
                    if let Some(ip) = advertise_address {
                        match store.snapshot().await {
                            Ok((mirror, _)) => {
                                crate::tunnel::refuse_mixed_underlay(&mirror, &store.host.id, ip)?
                            }
                            Err(e) => log::warn!(
                                "{e:#}; other hosts' underlay family is checked as the watch brings them"
                            ),
                        }
                    }
                }
                Err(e) if e.failure == crate::store::etcd::Failure::Refused => return Err(e.error),
                Err(e) => log::warn!("{:#}; the daemon starts and waits for it", e.error),
            }
            Some(Arc::new(store))
        }
        None => None,
    };
    let tunnel_mtu = match &shared {
        Some(_) => Some(
            crate::tunnel::setup(
                &netlink,
                &mut datapath,
                config.vxlan_port,
                advertise_address,
                config.uplink.as_deref(),
            )
            .await?,
        ),
        // What a daemon that ran with a store and was killed left.
        None => {
            crate::tunnel::teardown(&netlink, &mut datapath).await?;
            None
        }
    };
    let core = Arc::new(Mutex::new(Core {
        config: config.clone(),
        state,
        store,
        datapath,
        netlink,
        masquerade,
        reservations: HashMap::new(),
        resolvers,
        conntrack,
        departed: nat::Departures::default(),
        departures_waiting: Arc::new(tokio::sync::Notify::new()),
        firewall,
        ula_pool,
        shared: shared.clone(),
        tunnel_mtu,
        other_family_hosts: Default::default(),
        link_reaper: LinkReaper::start()?,
    }));
    {
        let c = core.lock().await;
        netns::pin_current(&c.host_netns())?;
    }
    // Subscribed before anything else reads the uplink, so that no change goes unseen.
    let uplink_addresses = crate::netlink::watch_addresses()?;
    // Subscribed before restore settles Docker's endpoints, so that none comes up unseen.
    let carriers = match config.docker_plugin {
        Some(_) => Some(crate::netlink::watch_carriers()?),
        None => None,
    };
    restore::restore(&core).await?;
    if let Some(store) = &shared {
        overlay::follow_store(core.clone(), store.clone());
    }
    let stale = core.lock().await.docker_stale_candidates();
    tokio::spawn(docker::remove_stale_later(core.clone(), stale, config.docker_stale_after));

    let docker_plugin = match &config.docker_plugin {
        Some(path) => Some((docker::bind(path).await?, path.clone())),
        None => None,
    };
    tokio::spawn(uplink::follow_addresses(core.clone(), uplink_addresses));
    if let Some(carriers) = carriers {
        tokio::spawn(docker::watch_hand_overs(core.clone(), carriers));
    }
    let request_times = match config.metrics_addr {
        Some(address) => Some(metrics::serve(core.clone(), address).await?),
        None => None,
    };
    let listener = bind_control_socket(&config.socket)?;
    log::info!("serving on {}", config.socket.display());
    if let Some((plugin, path)) = docker_plugin {
        log::info!("serving Docker's network plugin API on {}", path.display());
        tokio::spawn(docker::serve(core.clone(), plugin, path));
    }
    println!("dataplane daemon ready on {}", config.socket.display());
    if let Err(e) = systemd::notify_ready() {
        log::warn!("{e:#}");
    }

    let gc = core.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(CONNTRACK_GC_INTERVAL);
        loop {
            tick.tick().await;
            let mut c = gc.lock().await;
            match nat::sweep(&mut c.datapath) {
                Ok(removed) => c.conntrack.forgot(removed),
                Err(e) => log::warn!("conntrack gc: {e:#}"),
            }
        }
    });
    let forgetter = core.clone();
    let waiting = core.lock().await.departures_waiting.clone();
    tokio::spawn(async move {
        loop {
            waiting.notified().await;
            if let Err(e) = forgetter.lock().await.forget_departed() {
                log::warn!("forgetting the flows of removed containers: {e:#}");
            }
        }
    });

    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = accepted?;
                let core = core.clone();
                let request_times = request_times.clone();
                let monitor = monitor.clone();
                tokio::spawn(async move {
                    if let Err(e) = serve(core, monitor, stream, request_times).await {
                        log::warn!("client connection: {e:#}");
                    }
                });
            }
            _ = tokio::signal::ctrl_c() => break,
            _ = terminate.recv() => break,
        }
    }
    let _ = std::fs::remove_file(&config.socket);
    if let Some(path) = &config.docker_plugin {
        let _ = std::fs::remove_file(path);
    }
    {
        let mut guard = core.lock().await;
        let c = &mut *guard;
        c.store.write_whole(&c.state)?;
        tokio::task::block_in_place(|| c.link_reaper.finish());
        // The VXLAN device and its pinned tables stay, like the containers' filters: flows
        // between hosts go on while the daemon restarts.
    }
    log::info!("stopped; containers keep running and state is kept for the next start");
    Ok(())
}

/// Binds the control socket, root's alone (mode 0600) from the moment it appears: bound
/// under a name of its own, restricted, then renamed into place, so that no client ever
/// finds it with the umask's wider mode.
fn bind_control_socket(path: &Path) -> Result<UnixListener> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        bail!("--socket {}: give the path of a file", path.display());
    };
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let staging = dir.join(format!(".{}.{}", name.to_string_lossy(), std::process::id()));
    let _ = std::fs::remove_file(&staging);
    let listener = UnixListener::bind(&staging).with_context(|| format!("binding {}", staging.display()))?;
    let bound = std::fs::set_permissions(&staging, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .and_then(|()| std::fs::rename(&staging, path));
    if let Err(e) = bound {
        let _ = std::fs::remove_file(&staging);
        return Err(e).with_context(|| format!("placing the control socket at {}", path.display()));
    }
    Ok(listener)
}

/// The resolvers names are forwarded to: the daemon's `--dns`, else the host's.
fn upstreams(config: &Config) -> Vec<std::net::IpAddr> {
    if !config.dns.is_empty() {
        return config.dns.clone();
    }
    let found = dns::host_upstreams(&std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default());
    if found.is_empty() {
        log::warn!("no nameserver in /etc/resolv.conf and no --dns: containers resolve container names only");
    }
    found
}

/// Whether `uplink_xdp` should run on the uplink (`--xdp`).
fn uplink_xdp_wanted(uplink: &nat::Uplink, config: &Config) -> bool {
    match config.xdp {
        nat::UplinkXdp::On => true,
        nat::UplinkXdp::Off => false,
        nat::UplinkXdp::Auto => !uplink.veth,
    }
}

/// Masquerading through the uplink, if the host has one.
fn setup_nat(
    uplink: Option<nat::Uplink>,
    datapath: &mut Datapath,
    config: &Config,
) -> Result<Option<nat::Masquerade>> {
    let Some(uplink) = uplink else {
        log::info!("no default route and no --uplink: outbound NAT and published ports from outside are off");
        datapath.set_nat_config(NatConfig::default())?;
        datapath.remove_xdp_pins_but(None)?;
        return Ok(None);
    };
    let ports = nat::choose_port_range(config.nat_port_range, nat::local_port_range()?)?;
    datapath.set_nat_config(nat::config(&uplink, ports))?;
    datapath.attach_uplink(&uplink.name)?;
    if config.xdp == nat::UplinkXdp::Auto && uplink.veth {
        log::info!(
            "{} is a veth: published ports are served from tc, which is faster there (--xdp on forces XDP)",
            uplink.name
        );
    }
    if datapath.attach_uplink_xdp(&uplink.name, uplink.index, uplink_xdp_wanted(&uplink, config))? {
        log::info!("published ports are served by XDP on {}", uplink.name);
    }
    log::info!(
        "masquerading through {} as {}, source ports {}-{}",
        uplink.name,
        uplink.addr,
        ports.0,
        ports.1
    );
    Ok(Some(nat::Masquerade { uplink, ports }))
}

async fn serve(
    core: Shared,
    monitor: Arc<monitor::Monitor>,
    stream: UnixStream,
    request_times: Option<metrics::RequestTimes>,
) -> Result<()> {
    let (mut read, mut write) = stream.into_split();
    let result = match read_request(&mut read).await {
        // A stream, not one answer: served until the client goes away.
        Ok(Request::Monitor(filter)) => return monitor::serve(core, monitor, read, write, filter).await,
        Ok(request) => {
            let kind = request_times.as_ref().map(|_| request_kind(&request));
            let started = std::time::Instant::now();
            let result = dispatch(&core, request).await;
            if let (Some(times), Some(kind)) = (&request_times, kind) {
                times.record(kind, started.elapsed());
            }
            result
        }
        Err(e) => Err(e),
    };
    tokio::time::timeout(CLIENT_TIMEOUT, write.write_all(&api::encode_answer(result)))
        .await
        .context("the client took no answer for 10 s")??;
    Ok(())
}

/// A request's kind as the socket spells it (`run`, `network_create`, ...): its serde
/// tag, read back from the request itself so that no list of kinds can drift from `Request`.
fn request_kind(request: &Request) -> String {
    let tagged = serde_json::to_value(request).unwrap_or_default();
    tagged["request"].as_str().unwrap_or("unknown").to_string()
}

/// Reads one request, before any lock is taken: a client that sends garbage, more than
/// `REQUEST_MAX_BYTES` or nothing at all gets an error, and holds up no one meanwhile.
async fn read_request(read: impl AsyncRead + Unpin) -> Result<Request> {
    let mut line = vec![];
    let mut reader = BufReader::new(read.take(REQUEST_MAX_BYTES + 1));
    tokio::time::timeout(CLIENT_TIMEOUT, reader.read_until(b'\n', &mut line))
        .await
        .map_err(|_| anyhow!("no request within 10 s; send one JSON request on a line at once"))??;
    if line.len() as u64 > REQUEST_MAX_BYTES {
        bail!("request over 1 MiB; send one JSON request of at most 1 MiB on a line");
    }
    serde_json::from_slice(&line).map_err(|e| anyhow!("malformed request: {e}"))
}

async fn dispatch(core: &Shared, request: Request) -> Result<Value> {
    match request {
        Request::Stop { name, timeout_secs } => {
            return containers::stop(core, &name, Duration::from_secs(timeout_secs)).await;
        }
        Request::Restart { name, timeout_secs } => {
            containers::stop(core, &name, Duration::from_secs(timeout_secs)).await?;
            return start(core, &name).await;
        }
        Request::Start { name } => return start(core, &name).await,
        Request::Version => {
            let features: Vec<Value> = crate::maps::bpf_features()
                .into_iter()
                .map(|(name, found)| json!({"Name": name, "Found": found}))
                .collect();
            return Ok(json!({"Version": env!("CARGO_PKG_VERSION"), "BpfFeatures": features}));
        }
        _ => {}
    }
    let mut guard = core.lock().await;
    let c = &mut *guard;
    match request {
        Request::NetworkCreate(spec) => c.create_network(spec).await,
        Request::NetworkList => Ok(Value::Array(inspect::networks(&c.state))),
        Request::InspectObjects { names, kind } => {
            let mut lookup = api::Lookup::default();
            for name in names {
                match inspect::find(&c.state, &name, kind) {
                    Some(found) => lookup.found.push(found),
                    None => lookup.missing.push(name),
                }
            }
            Ok(serde_json::to_value(lookup)?)
        }
        Request::NetworkRemove { names } => {
            for name in &names {
                c.remove_network(name).await?;
            }
            Ok(json!(names))
        }
        Request::NetworkPrune => c.prune_networks().await,
        Request::NetworkConnect { network, container, ip, ip6, aliases } => {
            c.connect_network(&network, &container, ip, ip6, aliases).await
        }
        Request::NetworkDisconnect { network, container } => c.disconnect_network(&network, &container).await,
        Request::Run(spec) => {
            let container = c.create_container(spec).await?;
            if let Status::Running { pid, .. } = container.status {
                containers::watch(core.clone(), container.id.clone(), pid);
            }
            let process_record =
                (!container.detached).then(|| containers::pidfile_path(&c.config.state_dir, &container.id));
            Ok(serde_json::to_value(api::RunAnswer { container, process_record })?)
        }
        Request::Started { id, pid } => {
            if c.foreground_started(&id, pid)? {
                containers::watch(core.clone(), id, pid);
            }
            Ok(Value::Null)
        }
        Request::Exited { id, pid, code } => {
            c.foreground_exited(&id, pid, code).await?;
            Ok(Value::Null)
        }
        Request::List { all } => {
            let endpoints = c.state.endpoints_by_container();
            let list: Vec<_> = c
                .state
                .containers
                .iter()
                .filter(|k| all || matches!(k.status, Status::Running { .. }))
                .map(|k| {
                    let own = endpoints.get(k.id.as_str()).map_or(&[][..], Vec::as_slice);
                    inspect::container(&c.state, k, own)
                })
                .collect();
            Ok(Value::Array(list))
        }
        Request::Inspect { names } => {
            let found = names
                .iter()
                .map(|n| -> Result<Value> {
                    let k = c.state.container(n).ok_or_else(|| no_such_container(n))?;
                    let own: Vec<_> = c.state.endpoints_of(&k.id).collect();
                    Ok(inspect::container(&c.state, k, &own))
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(Value::Array(found))
        }
        Request::Remove { name, force } => c.remove_container(&name, force).await,
        Request::Stats { container, network } if container.is_some() || network.is_some() => {
            let endpoints = c.endpoint_figures(container.as_deref(), network.as_deref())?;
            Ok(json!({ "endpoints": endpoints }))
        }
        Request::Stats { .. } => {
            let figures = c.datapath_figures()?;
            let mut map: BTreeMap<_, _> = figures
                .paths
                .into_iter()
                .map(|(path, counter)| {
                    (path.name().to_string(), json!({"packets": counter.packets, "bytes": counter.bytes}))
                })
                .collect();
            // Table use, so that a full conntrack table shows before flows start to be
            // evicted, and the evictions since the daemon started.
            let table_name = |kind: &str, confirmed: bool, what: &str| {
                format!("conntrack_{kind}{}_{what}", if confirmed { "" } else { "_unconfirmed" })
            };
            for (kind, confirmed, entries) in figures.entries.by_table() {
                map.insert(table_name(kind, confirmed, "entries"), json!({"packets": entries, "bytes": 0}));
            }
            for (kind, confirmed, evicted) in figures.evictions.by_table() {
                map.insert(table_name(kind, confirmed, "evictions"), json!({"packets": evicted, "bytes": 0}));
            }
            Ok(serde_json::to_value(map)?)
        }
        Request::ConntrackList => {
            c.forget_departed()?;
            Ok(serde_json::to_value(nat::list(&mut c.datapath)?)?)
        }
        Request::ConntrackFlush => {
            let removed = c.forget_flows(|_, _| true)?;
            Ok(json!(removed.total()))
        }
        Request::FirewallAdd(spec) => c.add_firewall_rule(spec),
        Request::FirewallList => {
            let listed = c
                .state
                .firewall
                .rules
                .iter()
                .map(|rule| {
                    Ok(firewall::Listed { rule: rule.clone(), hits: c.datapath.firewall_hits(rule.slot)? })
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(serde_json::to_value(listed)?)
        }
        Request::FirewallRemove { ids } => c.remove_firewall_rules(&ids),
        Request::CniAdd(add) => Ok(serde_json::to_value(c.cni_add(add).await?)?),
        Request::CniDel { attachment, network } => c.cni_del(&attachment, &network).await,
        Request::CniCheck(check) => c.cni_check(&check).await,
        Request::CniGc { network, valid } => c.cni_gc(&network, &valid).await,
        Request::Stop { .. }
        | Request::Restart { .. }
        | Request::Start { .. }
        | Request::Version
        | Request::Monitor(_) => {
            unreachable!("handled above")
        }
    }
}

/// `start`: the container's command again, watched as `run -d`'s is.
async fn start(core: &Shared, name: &str) -> Result<Value> {
    let started = core.lock().await.start_container(name).await?;
    if let Some(Container { id, status: Status::Running { pid, .. }, .. }) = started {
        containers::watch(core.clone(), id, pid);
    }
    Ok(json!(name))
}

fn no_such_container(name: &str) -> anyhow::Error {
    anyhow!("no such container: {name}; `dataplane ps -a` lists them")
}

fn no_such_network(name: &str) -> anyhow::Error {
    anyhow!("no such network: {name}; `dataplane network ls` lists them")
}

/// Docker's rule for names: a letter or digit, then letters, digits, `_`, `.` or `-`.
fn check_name(kind: &str, name: &str) -> Result<()> {
    let mut chars = name.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !valid {
        bail!(
            "invalid {kind} name {name:?}: use letters, digits, '_', '.' or '-', starting with a letter or digit"
        );
    }
    Ok(())
}

impl Core {
    /// Writes what changed in the state since the last save, and brings the resolvers'
    /// names in line with it.
    fn save(&mut self) -> Result<()> {
        self.save_synced(true)
    }

    fn save_synced(&mut self, sync: bool) -> Result<()> {
        let changes = self.state.take_changes();
        self.resolvers.update(&self.state, &changes);
        self.store.save(&self.state, &changes, sync)
    }

    /// Saves an intent before the first change to the system of its operation (see
    /// `Intent`); `done` takes it back once the outcome is in the state. Written, not
    /// synced (the operation's own save syncs it): it guards against a crash of the
    /// daemon, which the page cache outlives, and what it would undo after a crash of the
    /// host (links, namespaces, processes) is gone with the host's.
    fn intend(&mut self, intent: Intent) -> Result<()> {
        self.state.intents.push(intent);
        self.save_synced(false)
    }

    /// The operation of `key` has its outcome in the state, or failed and undid its
    /// changes: its intent goes with the next save.
    fn done(&mut self, key: &str) {
        self.state.intents.retain(|i| i.key() != key);
    }

    /// An operation that failed has undone its changes: its intent goes now.
    fn abandon(&mut self, key: &str) {
        self.done(key);
        if let Err(e) = self.save() {
            log::warn!("saving the state after a failed operation: {e:#}");
        }
    }

    /// Removes the tracked flows `pred` picks by their container-side key and times.
    fn forget_flows(
        &mut self,
        pred: impl Fn(&dataplane_common::FlowKey, nat::FlowTimes) -> bool,
    ) -> Result<nat::PerTable> {
        let removed = nat::forget_where(&mut self.datapath, pred)?;
        self.conntrack.forgot(removed);
        Ok(removed)
    }

    /// Marks the flows of addresses that left (a detached endpoint) to be forgotten soon,
    /// by the forgetting task, without making the request wait for a scan of the tables.
    fn forget_later(&mut self, addresses: Vec<IpAddress>) {
        self.departed.add(addresses);
        self.departures_waiting.notify_one();
    }

    /// Forgets the flows of every address that left, in one pass over the tables.
    /// What the programs counted per path and what the conntrack tables hold and evicted,
    /// read at one moment (for `stats` and the metrics), once the flows of removed
    /// containers are gone from the tables.
    fn datapath_figures(&mut self) -> Result<DatapathFigures> {
        self.forget_departed()?;
        let paths = self.datapath.counters()?;
        let now = nat::TableSnapshot::take(&mut self.datapath)?;
        Ok(DatapathFigures { paths, entries: now.live, evictions: self.conntrack.evictions(&now) })
    }

    /// The counters of the endpoints of `container` (a name or ID) or on `network`, or of
    /// every endpoint when neither is given; endpoints this daemon does not count (not
    /// attached yet) are left out.
    fn endpoint_figures(
        &self,
        container: Option<&str>,
        network: Option<&str>,
    ) -> Result<Vec<EndpointFigures>> {
        let owners = self.state.owner_names();
        let network_id = network.map(|n| self.network(n).map(|net| net.id.clone())).transpose()?;
        let own_id = container.and_then(|n| self.state.container(n)).map(|k| k.id.clone());
        let mut figures = vec![];
        for endpoint in &self.state.endpoints {
            let owner = owners.of(&endpoint.owner);
            let of_container = container.is_none_or(|n| {
                own_id.as_deref().map_or(owner == n, |id| endpoint.owner.container_id() == Some(id))
            });
            if !of_container || network_id.as_ref().is_some_and(|id| *id != endpoint.network_id) {
                continue;
            }
            let Some(counters) = self.datapath.endpoint_counters(&endpoint.host_veth)? else {
                continue;
            };
            figures.push(EndpointFigures {
                container: owner,
                network: self.network_by_id(&endpoint.network_id)?.name.clone(),
                sent: counters.sent.into(),
                received: counters.received.into(),
            });
        }
        if let Some(name) = container
            && own_id.is_none()
            && figures.is_empty()
        {
            return Err(no_such_container(name));
        }
        Ok(figures)
    }

    fn forget_departed(&mut self) -> Result<()> {
        if self.departed.is_empty() {
            return Ok(());
        }
        let departed = std::mem::take(&mut self.departed);
        self.forget_flows(|k, times| departed.covers(k, times.created_ns))?;
        Ok(())
    }

    fn network(&self, name: &str) -> Result<&Network> {
        self.state.network(name).ok_or_else(|| no_such_network(name))
    }

    fn network_by_id(&self, id: &str) -> Result<&Network> {
        self.state.network_by_id(id).ok_or_else(|| anyhow!("state names network {id}, which does not exist"))
    }

    fn container_by_id(&mut self, id: &str) -> Result<&mut Container> {
        self.state.container_mut(id).ok_or_else(|| no_such_container(id))
    }

    /// The daemon's own namespace, pinned where host-mode containers find it (as Docker's
    /// `netns/default`).
    fn host_netns(&self) -> PathBuf {
        self.config.netns_dir.join(HOST_NETNS_PIN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn requests_are_read_whole_and_bounded() {
        let request = read_request(&b"{\"request\": \"stats\"}\n"[..]).await.unwrap();
        assert!(matches!(request, Request::Stats { .. }));
        // A last line without its newline, the client having shut down its side, is whole too.
        assert!(matches!(read_request(&b"{\"request\": \"stats\"}"[..]).await, Ok(Request::Stats { .. })));
        let err = read_request(&b"stats\n"[..]).await.unwrap_err().to_string();
        assert!(err.contains("malformed request"), "{err}");
        let long = vec![b' '; REQUEST_MAX_BYTES as usize + 1];
        let err = read_request(&long[..]).await.unwrap_err().to_string();
        assert!(err.contains("over 1 MiB"), "{err}");
        // Exactly 1 MiB is read (and parsed).
        let mut max = vec![b' '; REQUEST_MAX_BYTES as usize - 20];
        max.splice(0..0, b"{\"request\":\"stats\"}".iter().copied());
        max.truncate(REQUEST_MAX_BYTES as usize - 1);
        max.push(b'\n');
        assert!(matches!(read_request(&max[..]).await, Ok(Request::Stats { .. })));
    }
}
