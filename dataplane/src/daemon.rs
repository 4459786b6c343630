//! The daemon: owns the state, the BPF maps and the system changes, and serves the CLI.
//! Every request runs under one lock, so that a change to the system and the state that
//! records it happen as one step; a failed step undoes its system changes before the
//! error goes back, so bad input never leaves anything behind.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    net::Ipv4Addr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::{Context, Result, anyhow, bail};
use dataplane_common::{Backend, IpAddress, NatConfig, PublishKey};
use ipnet::Ipv4Net;
use nix::sys::signal::Signal;
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{UnixListener, UnixStream},
    sync::Mutex,
};

use crate::{
    api::{self, NetworkSpec, Request, RunSpec},
    dns, drivers, firewall, inspect,
    ipam::{self, AddressPlan},
    maps::{Datapath, v4_key},
    nat,
    netlink::Netlink,
    netns,
    ports::{self, PortMapping, Reservation},
    process,
    state::{
        Attachment, BridgeOptions, Container, MacAddr, Network, NetworkMode, State, StateStore, Status,
        new_id, now,
    },
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
}

/// How long `rm -f` waits for a container's processes to end once killed (only a process
/// stuck in the kernel takes more than milliseconds).
const KILL_WAIT: Duration = Duration::from_secs(5);

/// How long a client of the control socket has to send its request, and to take its
/// answer; it gets an error, or is dropped, after that.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest request the control socket reads (the CLI's largest are a few KiB).
const REQUEST_MAX_BYTES: u64 = 1 << 20;

/// How often expired flows are swept from the conntrack tables.
const CONNTRACK_GC_INTERVAL: Duration = Duration::from_secs(10);

pub const DEFAULT_NETWORK: &str = "bridge";
/// Names that `--network` gives a meaning of its own (Docker's network modes).
const RESERVED_NETWORK_NAMES: [&str; 3] = ["bridge", "host", "none"];

struct Core {
    config: Config,
    state: State,
    store: StateStore,
    datapath: Datapath,
    netlink: Netlink,
    /// The masquerade source ports, which publishing must leave alone; `None`: NAT is off.
    nat_ports: Option<(u16, u16)>,
    /// Host ports held for each container's published ports, by container id.
    reservations: HashMap<String, Vec<Reservation>>,
    /// The embedded DNS of each bridge network, kept in line with the state on each save.
    resolvers: dns::Resolvers,
    /// What the daemon removed from the conntrack tables, to tell evictions apart.
    conntrack: nat::ConntrackAccount,
    /// Addresses of removed containers and interfaces whose flows are still to go.
    departed: nat::Departures,
    /// Wakes the task that forgets the departed flows.
    departures_waiting: Arc<tokio::sync::Notify>,
    /// The firewall rule sets in the programs' trie.
    firewall: firewall::Installed,
}

type Shared = Arc<Mutex<Core>>;

pub async fn run(config: Config) -> Result<()> {
    std::fs::create_dir_all(&config.state_dir)
        .with_context(|| format!("creating state dir {}", config.state_dir.display()))?;
    std::fs::create_dir_all(config.state_dir.join("logs"))?;
    if UnixStream::connect(&config.socket).await.is_ok() {
        bail!(
            "another daemon already serves {}; stop it or give this one another --socket",
            config.socket.display()
        );
    }
    netns::prepare_pin_dir(&config.netns_dir)?;
    let conntrack_size = config.conntrack_max.unwrap_or(dataplane_common::CONNTRACK_DEFAULT_SIZE);
    let mut datapath = Datapath::load(&config.bpffs, conntrack_size)?;
    let conntrack = nat::ConntrackAccount::new(nat::TableSnapshot::take(&mut datapath)?);
    let firewall = firewall::Installed::load(&mut datapath)?;
    let netlink = Netlink::connect()?;
    let nat_ports = setup_nat(&netlink, &mut datapath, &config).await?;
    match config.cgroup.clone().or_else(crate::maps::cgroup2_root) {
        Some(cgroup) => datapath.attach_host_hooks(&cgroup, crate::maps::current_netns_cookie()?)?,
        None => log::warn!("no cgroup2 mount: host processes cannot reach published ports"),
    }
    ports::raise_fd_limit();
    let store = StateStore::new(&config.state_dir);
    let state = store.load()?.unwrap_or_default();
    let resolvers = dns::Resolvers::new(&upstreams(&config));
    let core = Arc::new(Mutex::new(Core {
        config: config.clone(),
        state,
        store,
        datapath,
        netlink,
        nat_ports,
        reservations: HashMap::new(),
        resolvers,
        conntrack,
        departed: nat::Departures::default(),
        departures_waiting: Arc::new(tokio::sync::Notify::new()),
        firewall,
    }));
    {
        let c = core.lock().await;
        netns::pin_current(&c.host_netns())?;
    }
    restore(&core).await?;

    let listener = bind_control_socket(&config.socket)?;
    log::info!("serving on {}", config.socket.display());
    println!("dataplane daemon ready on {}", config.socket.display());

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
                tokio::spawn(async move {
                    if let Err(e) = serve(core, stream).await {
                        log::warn!("client connection: {e:#}");
                    }
                });
            }
            _ = tokio::signal::ctrl_c() => break,
            _ = terminate.recv() => break,
        }
    }
    let _ = std::fs::remove_file(&config.socket);
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

/// Masquerading through the uplink, if the host has one.
async fn setup_nat(
    netlink: &Netlink,
    datapath: &mut Datapath,
    config: &Config,
) -> Result<Option<(u16, u16)>> {
    let Some(uplink) = nat::find_uplink(netlink, config.uplink.as_deref()).await? else {
        log::info!("no default route and no --uplink: outbound NAT and published ports from outside are off");
        datapath.set_nat_config(NatConfig::default())?;
        datapath.remove_xdp_pins_but(None)?;
        return Ok(None);
    };
    let ports = nat::choose_port_range(config.nat_port_range, nat::local_port_range()?)?;
    datapath.set_nat_config(nat::config(&uplink, ports))?;
    datapath.attach_uplink(&uplink.name)?;
    let xdp = match config.xdp {
        nat::UplinkXdp::On => true,
        nat::UplinkXdp::Off => false,
        nat::UplinkXdp::Auto => {
            if uplink.veth {
                log::info!(
                    "{} is a veth: published ports are served from tc, which is faster there (--xdp on forces XDP)",
                    uplink.name
                );
            }
            !uplink.veth
        }
    };
    if datapath.attach_uplink_xdp(&uplink.name, uplink.index, xdp)? {
        log::info!("published ports are served by XDP on {}", uplink.name);
    }
    log::info!(
        "masquerading through {} as {}, source ports {}-{}",
        uplink.name,
        uplink.addr,
        ports.0,
        ports.1
    );
    Ok(Some(ports))
}

async fn serve(core: Shared, stream: UnixStream) -> Result<()> {
    let (read, mut write) = stream.into_split();
    let result = match read_request(read).await {
        Ok(request) => dispatch(&core, request).await,
        Err(e) => Err(e),
    };
    tokio::time::timeout(CLIENT_TIMEOUT, write.write_all(&api::encode_answer(result)))
        .await
        .context("the client took no answer for 10 s")??;
    Ok(())
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
    if let Request::Stop { name, timeout_secs } = request {
        return stop(core, &name, Duration::from_secs(timeout_secs)).await;
    }
    let mut guard = core.lock().await;
    let c = &mut *guard;
    match request {
        Request::NetworkCreate(spec) => c.create_network(spec).await,
        Request::NetworkList => Ok(serde_json::to_value(&c.state.networks)?),
        Request::NetworkInspect { names } => {
            let found = names
                .iter()
                .map(|n| c.network(n).map(|net| inspect::network(&c.state, net)))
                .collect::<Result<Vec<_>>>()?;
            Ok(Value::Array(found))
        }
        Request::NetworkRemove { names } => {
            for name in &names {
                c.remove_network(name).await?;
            }
            Ok(json!(names))
        }
        Request::NetworkPrune => c.prune_networks().await,
        Request::NetworkConnect { network, container, ip, aliases } => {
            c.connect_network(&network, &container, ip, aliases).await
        }
        Request::NetworkDisconnect { network, container } => c.disconnect_network(&network, &container).await,
        Request::Run(spec) => {
            let container = c.create_container(spec).await?;
            if let Status::Running { pid, .. } = container.status {
                watch(core.clone(), container.id.clone(), pid);
            }
            Ok(serde_json::to_value(&container)?)
        }
        Request::Started { id, pid } => {
            let start_time =
                process::start_time(pid).ok_or_else(|| anyhow!("process {pid} is not running"))?;
            let container = c.container_by_id(&id)?;
            container.status = Status::Running { pid, start_time };
            c.save()?;
            watch(core.clone(), id, pid);
            Ok(Value::Null)
        }
        Request::Exited { id, code } => {
            let container = c.container_by_id(&id)?;
            container.status = Status::Exited { code: Some(code) };
            c.save()?;
            Ok(Value::Null)
        }
        Request::List { all } => {
            let list: Vec<_> = c
                .state
                .containers
                .iter()
                .filter(|k| all || matches!(k.status, Status::Running { .. }))
                .map(|k| inspect::container(&c.state, k))
                .collect();
            Ok(Value::Array(list))
        }
        Request::Inspect { names } => {
            let found = names
                .iter()
                .map(|n| {
                    c.state
                        .container(n)
                        .map(|k| inspect::container(&c.state, k))
                        .ok_or_else(|| no_such_container(n))
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(Value::Array(found))
        }
        Request::Remove { name, force } => c.remove_container(&name, force).await,
        Request::Stats => {
            c.forget_departed()?;
            let counters = c.datapath.counters()?;
            let mut map: BTreeMap<_, _> = counters
                .into_iter()
                .map(|(path, counter)| {
                    (path.name().to_string(), json!({"packets": counter.packets, "bytes": counter.bytes}))
                })
                .collect();
            // Table use, so that a full conntrack table shows before flows start to be
            // evicted, and the evictions since the daemon started.
            let now = nat::TableSnapshot::take(&mut c.datapath)?;
            let evicted = c.conntrack.evictions(&now);
            for (name, value) in [
                ("conntrack_masquerade_entries", now.live.masquerade),
                ("conntrack_published_entries", now.live.published),
                ("conntrack_masquerade_evictions", evicted.masquerade),
                ("conntrack_published_evictions", evicted.published),
            ] {
                map.insert(name.into(), json!({"packets": value, "bytes": 0}));
            }
            Ok(serde_json::to_value(map)?)
        }
        Request::ConntrackList => {
            c.forget_departed()?;
            Ok(serde_json::to_value(nat::list(&mut c.datapath)?)?)
        }
        Request::ConntrackFlush => {
            let removed = c.forget_flows(|_, _| true)?;
            Ok(json!(removed.masquerade + removed.published))
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
        Request::Stop { .. } => unreachable!("handled above without the lock"),
    }
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

/// Network aliases: valid names, on user-defined networks only (as Docker has it: the
/// default network resolves no names at all).
fn check_aliases(net: &Network, aliases: &[String]) -> Result<()> {
    if !aliases.is_empty() && net.name == DEFAULT_NETWORK {
        bail!(
            "network-scoped aliases need a user-defined network; create one with `dataplane network create NAME`"
        );
    }
    aliases.iter().try_for_each(|alias| check_name("alias", alias))
}

/// Waits for the container's process to end in the background: records it, and removes the container if it asked.
fn watch(core: Shared, id: String, pid: i32) {
    tokio::spawn(async move {
        let code = process::wait_exit(pid).await;
        let mut c = core.lock().await;
        if let Err(e) = c.process_exited(&id, pid, code).await {
            log::warn!("container {id}: {e:#}");
        }
    });
}

async fn stop(core: &Shared, name: &str, grace: Duration) -> Result<Value> {
    let (id, pid) = {
        let c = core.lock().await;
        let container = c.state.container(name).ok_or_else(|| no_such_container(name))?;
        match container.status {
            Status::Running { pid, .. } => (container.id.clone(), pid),
            _ => return Ok(json!(container.name)),
        }
    };
    process::signal(pid, Signal::SIGTERM);
    let deadline = tokio::time::Instant::now() + grace;
    loop {
        let running = {
            let c = core.lock().await;
            c.state.containers.iter().any(|k| k.id == id && matches!(k.status, Status::Running { .. }))
        };
        if !running {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            process::signal(pid, Signal::SIGKILL);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(json!(name))
}

/// Brings the system and the maps back in line with the state: bridges, veths, program
/// attachments and map entries; processes that ended while we were away are recorded.
async fn restore(core: &Shared) -> Result<()> {
    let mut guard = core.lock().await;
    let c = &mut *guard;
    if c.state.network(DEFAULT_NETWORK).is_none() {
        // Docker's 172.17.0.0/16, unless the host already routes it (a docker0 next to
        // us, say): then the next free default pool, as Docker does.
        let preferred = ipam::default_bridge_subnet();
        let taken = c.host_routes().await?.iter().any(|r| ipam::overlaps(r, &preferred));
        let spec = NetworkSpec {
            name: DEFAULT_NETWORK.into(),
            driver: "bridge".into(),
            subnet: (!taken).then_some(preferred),
            gateway: None,
            ip_range: None,
            internal: false,
            options: BTreeMap::new(),
            labels: BTreeMap::new(),
        };
        c.create_network(spec).await.context("creating the default network")?;
    }
    for net in c.state.networks.clone() {
        let restored = drivers::setup_network(&c.netlink, &mut c.datapath, &net).await;
        match restored {
            // A macvlan parent that went away breaks that network, not the daemon.
            Err(e) if net.driver == "macvlan" => log::warn!("network {}: {e:#}", net.name),
            other => other.with_context(|| format!("restoring network {}", net.name))?,
        }
    }
    let mut watchers = vec![];
    for container in c.state.containers.clone() {
        if container.network_mode.owns_sandbox() && !container.netns.exists() {
            log::warn!("container {}: its namespace is gone; marking it exited", container.name);
            c.container_by_id(&container.id)?.status = Status::Exited { code: None };
            continue;
        }
        for att in &container.attachments {
            let net = c.network_by_id(&att.network_id)?.clone();
            let publishes = !container.ports.is_empty();
            let host_index =
                drivers::connect(&c.netlink, &mut c.datapath, &net, &container.netns, att, publishes)
                    .await
                    .with_context(|| format!("restoring container {}", container.name))?;
            if publishes {
                // The rule sets an earlier run installed keep their IDs: a published port
                // is never unfiltered while the daemon restarts.
                let rule_sets = c.rule_sets_of(&container.name, &container.ports)?;
                // A host process may have taken a port while we were away: keep the rest.
                let mut held = vec![];
                for (mapping, rule_set) in container.ports.iter().zip(rule_sets) {
                    match ports::reserve(mapping.host_ip, mapping.host_port, mapping.proto) {
                        Ok((reservation, _)) => {
                            held.push(reservation);
                            let host_only = c.host_only(mapping.host_ip).await?;
                            let backend = backend(att, mapping, host_index, rule_set, host_only);
                            c.datapath.set_published(publish_key(mapping), backend)?;
                        }
                        Err(e) => log::warn!("container {}: {mapping} not restored: {e:#}", container.name),
                    }
                }
                c.reservations.insert(container.id.clone(), held);
            }
        }
        if let Status::Running { pid, start_time } = container.status {
            if process::is_alive(pid, start_time) {
                watchers.push((container.id.clone(), pid));
            } else {
                c.container_by_id(&container.id)?.status = Status::Exited { code: None };
            }
        }
    }
    let interfaces: HashSet<u32> = {
        let mut set = HashSet::new();
        for container in &c.state.containers {
            for att in &container.attachments {
                if let Some(index) = c.netlink.link_index(&att.host_veth).await? {
                    set.insert(index);
                }
            }
        }
        set
    };
    let endpoints: HashSet<_> = c
        .state
        .containers
        .iter()
        .flat_map(|k| k.attachments.iter())
        .filter_map(|a| c.state.network_by_id(&a.network_id).map(|n| v4_key(n.index, a.ip)))
        .collect();
    let networks: HashSet<u32> = c.state.networks.iter().map(|n| n.index).collect();
    let published: HashSet<PublishKey> =
        c.state.containers.iter().flat_map(|k| k.ports.iter().map(publish_key)).collect();
    c.datapath.retain(&interfaces, &endpoints, &networks, &published)?;
    c.sync_firewall()?;
    c.save()?;
    drop(guard);
    for (id, pid) in watchers {
        watch(core.clone(), id, pid);
    }
    // Auto-remove containers whose command ended while we were away.
    let mut c = core.lock().await;
    let ended: Vec<_> = c
        .state
        .containers
        .iter()
        .filter(|k| k.auto_remove && matches!(k.status, Status::Exited { .. }))
        .map(|k| k.id.clone())
        .collect();
    for id in ended {
        c.remove_container(&id, true).await?;
    }
    Ok(())
}

impl Core {
    fn save(&mut self) -> Result<()> {
        self.resolvers.update(&self.state);
        self.store.save(&self.state)
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

    /// Marks the flows of addresses that left (a removed container, a disconnected
    /// interface) to be forgotten soon, by the forgetting task, without making the request
    /// wait for a scan of the tables.
    fn forget_later(&mut self, addresses: Vec<IpAddress>) {
        self.departed.add(addresses);
        self.departures_waiting.notify_one();
    }

    /// Forgets the flows of every address that left, in one pass over the tables.
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

    /// Subnets the host reaches through something other than our own bridges.
    async fn host_routes(&self) -> Result<Vec<Ipv4Net>> {
        let mut ours = HashSet::new();
        for net in self.state.networks.iter().filter(|n| !n.bridge.is_empty()) {
            if let Some(index) = self.netlink.link_index(&net.bridge).await? {
                ours.insert(index);
            }
        }
        Ok(self
            .netlink
            .routes_v4()
            .await?
            .into_iter()
            .filter(|(net, oif)| net.prefix_len() > 0 && !oif.is_some_and(|i| ours.contains(&i)))
            .map(|(net, _)| net)
            .collect())
    }

    async fn create_network(&mut self, spec: NetworkSpec) -> Result<Value> {
        check_name("network", &spec.name)?;
        let is_default = spec.name == DEFAULT_NETWORK && self.state.networks.is_empty();
        if RESERVED_NETWORK_NAMES.contains(&spec.name.as_str()) && !is_default {
            bail!("network name {:?} is reserved (bridge, host, none); choose another name", spec.name);
        }
        if let Some(existing) = self.state.network(&spec.name).filter(|n| n.name == spec.name) {
            bail!(
                "network with name {} already exists ({}); choose another name",
                spec.name,
                &existing.id[..12]
            );
        }
        if !drivers::DRIVERS.contains(&spec.driver.as_str()) {
            bail!("unsupported network driver {:?}; supported: {}", spec.driver, drivers::DRIVERS.join(", "));
        }
        let macvlan = spec.driver == "macvlan";
        let bridge_options = if macvlan {
            if spec.subnet.is_none() || !spec.options.contains_key("parent") {
                bail!(
                    "network {}: macvlan needs --subnet (the parent's segment) and -o parent=IFACE",
                    spec.name
                );
            }
            if let Some(key) = spec.options.keys().find(|k| *k != "parent") {
                bail!(
                    "network {}: unknown option {key} for the macvlan driver; supported: parent",
                    spec.name
                );
            }
            BridgeOptions { icc: true, mtu: None }
        } else {
            BridgeOptions::parse(&spec.options).map_err(|e| anyhow!("network {}: {e}", spec.name))?
        };
        // A macvlan network lives on the parent's segment, which the host may well route.
        let host_routes = if macvlan { vec![] } else { self.host_routes().await? };
        let subnet = match spec.subnet {
            Some(subnet) => {
                if let Some(other) = self.state.networks.iter().find(|n| ipam::overlaps(&n.subnet, &subnet)) {
                    bail!(
                        "network {}: subnet {subnet} overlaps network {:?} ({}); choose another --subnet",
                        spec.name,
                        other.name,
                        other.subnet
                    );
                }
                if let Some(route) = host_routes.iter().find(|r| ipam::overlaps(r, &subnet)) {
                    bail!(
                        "network {}: subnet {subnet} overlaps the host route to {route}; choose another --subnet",
                        spec.name
                    );
                }
                subnet
            }
            None => {
                let taken: Vec<_> = self.state.networks.iter().map(|n| n.subnet).chain(host_routes).collect();
                ipam::pick_subnet(&taken)?
            }
        };
        let plan = AddressPlan::new(subnet, spec.gateway, spec.ip_range)
            .map_err(|e| anyhow!("network {}: {e}", spec.name))?;
        let id = new_id();
        let bridge_name = match (is_default, macvlan) {
            (true, _) => "dp0".to_string(),
            (false, false) => format!("br-{}", &id[..12]),
            (false, true) => String::new(),
        };
        let network = Network {
            index: self.state.next_network_index(),
            name: spec.name,
            driver: spec.driver,
            subnet: plan.subnet,
            gateway: plan.gateway,
            ip_range: spec.ip_range.map(|_| plan.range),
            internal: spec.internal,
            options: spec.options,
            bridge_options,
            labels: spec.labels,
            bridge: bridge_name,
            created: now(),
            id,
        };
        if let Err(e) = drivers::setup_network(&self.netlink, &mut self.datapath, &network).await {
            let _ = drivers::teardown_network(&self.netlink, &mut self.datapath, &network).await;
            return Err(e.context(format!("creating network {}", network.name)));
        }
        self.state.networks.push(network.clone());
        self.save()?;
        Ok(serde_json::to_value(&network)?)
    }

    async fn remove_network(&mut self, name: &str) -> Result<()> {
        let net = self.network(name)?.clone();
        if net.name == DEFAULT_NETWORK {
            bail!("network bridge is the default network and cannot be removed");
        }
        let users: Vec<_> = self.state.attachments_of(&net.id).map(|(c, _)| c.name.clone()).collect();
        if !users.is_empty() {
            bail!(
                "network {} has active endpoints ({}); remove those containers first (`dataplane rm -f NAME`)",
                net.name,
                users.join(", ")
            );
        }
        drivers::teardown_network(&self.netlink, &mut self.datapath, &net).await?;
        self.state.networks.retain(|n| n.id != net.id);
        self.save()
    }

    async fn prune_networks(&mut self) -> Result<Value> {
        let unused: Vec<String> = self
            .state
            .networks
            .iter()
            .filter(|n| n.name != DEFAULT_NETWORK && self.state.attachments_of(&n.id).next().is_none())
            .map(|n| n.name.clone())
            .collect();
        for name in &unused {
            self.remove_network(name).await?;
        }
        Ok(json!(unused))
    }

    fn bridge_for(&self, net: &Network) -> Result<u8> {
        drivers::bridge_for(net, self.state.attachments_of(&net.id).map(|(_, att)| att.bridge))
    }

    async fn unused_veth_name(&self) -> Result<String> {
        loop {
            let suffix: u32 = rand::random::<u32>() & 0x0fff_ffff;
            let name = format!("veth{suffix:07x}");
            let taken =
                self.state.containers.iter().flat_map(|c| &c.attachments).any(|a| a.host_veth == name);
            if !taken && self.netlink.link_index(&name).await?.is_none() {
                return Ok(name);
            }
        }
    }

    async fn create_container(&mut self, spec: RunSpec) -> Result<Container> {
        if spec.command.is_empty() {
            bail!("no command given; usage: dataplane run [OPTIONS] -- CMD [ARGS...]");
        }
        let id = new_id();
        let name = match spec.name.clone() {
            Some(name) => {
                check_name("container", &name)?;
                if let Some(other) = self.state.containers.iter().find(|c| c.name == name) {
                    bail!(
                        "container name {name} is already in use by container {}; choose another --name or remove it",
                        &other.id[..12]
                    );
                }
                name
            }
            None => id[..12].to_string(),
        };
        let mode = self.network_mode(&spec)?;
        let (netns, etc_dir) = match &mode {
            NetworkMode::Bridge | NetworkMode::None => (
                self.config.netns_dir.join(format!("dp-{}", &id[..12])),
                self.config.state_dir.join("containers").join(&id),
            ),
            // Host files are the host's own: an empty directory mounts nothing over them.
            NetworkMode::Host => (self.host_netns(), self.config.state_dir.join("containers").join(&id)),
            NetworkMode::Container { id: target } => {
                let target = self.state.container(target).ok_or_else(|| no_such_container(target))?;
                (target.netns.clone(), target.etc_dir.clone())
            }
        };
        let mut container = Container {
            network_mode: mode,
            netns,
            etc_dir,
            hostname: spec.hostname.clone().unwrap_or_else(|| id[..12].to_string()),
            id,
            name,
            attachments: vec![],
            ports: vec![],
            command: spec.command.clone(),
            detached: spec.detach,
            auto_remove: spec.auto_remove,
            status: Status::Created,
            created: now(),
        };
        if let Err(e) = self.build_container(&mut container, &spec).await {
            if let Err(undo) = self.teardown_container(&container).await {
                log::warn!("undoing container {}: {undo:#}", container.name);
            }
            if let Err(undo) = self.sync_firewall() {
                log::warn!("undoing container {}: {undo:#}", container.name);
            }
            return Err(e.context(format!("creating container {}", container.name)));
        }
        self.state.containers.push(container.clone());
        self.save()?;
        Ok(container)
    }

    /// `network connect`: one more interface (eth1, eth2, ...) in a container, with an
    /// address of the network, without touching its other interfaces.
    async fn connect_network(
        &mut self,
        network: &str,
        name: &str,
        ip: Option<Ipv4Addr>,
        aliases: Vec<String>,
    ) -> Result<Value> {
        let net = self.network(network)?.clone();
        check_aliases(&net, &aliases)?;
        let container = self.state.container(name).ok_or_else(|| no_such_container(name))?.clone();
        if container.network_mode != NetworkMode::Bridge {
            bail!(
                "container {} shares the host's or another container's network; it cannot join networks",
                container.name
            );
        }
        if container.attachments.iter().any(|a| a.network_id == net.id) {
            bail!("container {} is already connected to network {}", container.name, net.name);
        }
        let used = self.state.used_addresses(&net.id);
        let ip = match ip {
            Some(ip) => net.plan().claim(ip, &used),
            None => net.plan().allocate(&used),
        }
        .map_err(|e| anyhow!("network {}: {e}", net.name))?;
        let ifname = (0..)
            .map(|i| format!("eth{i}"))
            .find(|n| !container.attachments.iter().any(|a| &a.ifname == n))
            .expect("some ethN is free");
        let att = Attachment {
            network_id: net.id.clone(),
            ip,
            mac: MacAddr(ipam::mac_for(ip)),
            host_veth: self.unused_veth_name().await?,
            ifname,
            aliases,
            bridge: self.bridge_for(&net)?,
        };
        if let Err(e) =
            drivers::connect(&self.netlink, &mut self.datapath, &net, &container.netns, &att, false).await
        {
            let _ =
                drivers::disconnect(&self.netlink, &mut self.datapath, &net, &container.netns, &att).await;
            return Err(e.context(format!("connecting {} to {}", container.name, net.name)));
        }
        self.container_by_id(&container.id)?.attachments.push(att.clone());
        self.save()?;
        Ok(json!({"interface": att.ifname, "ip": att.ip.to_string()}))
    }

    /// `network disconnect`: removes the container's interface on that network.
    async fn disconnect_network(&mut self, network: &str, name: &str) -> Result<Value> {
        let net = self.network(network)?.clone();
        let container = self.state.container(name).ok_or_else(|| no_such_container(name))?.clone();
        let Some(position) = container.attachments.iter().position(|a| a.network_id == net.id) else {
            bail!("container {} is not connected to network {}", container.name, net.name);
        };
        if position == 0 && !container.ports.is_empty() {
            bail!(
                "container {} publishes ports on its {} address; remove the container to unpublish them",
                container.name,
                net.name
            );
        }
        let att = container.attachments[position].clone();
        drivers::disconnect(&self.netlink, &mut self.datapath, &net, &container.netns, &att).await?;
        self.forget_later(vec![IpAddress::v4(att.ip.octets())]);
        self.container_by_id(&container.id)?.attachments.remove(position);
        self.save()?;
        Ok(json!(att.ifname))
    }

    /// Whether a port published on `ip` is for the host's own processes only: `ip` is a
    /// loopback address, or one the host holds on loopback interfaces only (moby#45610:
    /// frames from the uplink could reach such ports when its machines routed them here).
    async fn host_only(&self, ip: Ipv4Addr) -> Result<bool> {
        Ok(ip.is_loopback() || (!ip.is_unspecified() && !self.netlink.holds_off_loopback(ip).await?))
    }

    /// Reserves the host ports and fills PUBLISHED, all or nothing; records the mappings
    /// (with the ports chosen for `host_port` 0) in the container.
    async fn publish(
        &mut self,
        container: &mut Container,
        att: &Attachment,
        host_index: u32,
        wanted: &[PortMapping],
    ) -> Result<()> {
        if host_index == 0 && !wanted.is_empty() {
            bail!("published ports need a bridge network; this driver has no host side to publish through");
        }
        let mut held = vec![];
        let mut resolved = vec![];
        for mapping in wanted {
            if let Some((lo, hi)) = self.nat_ports
                && (lo..=hi).contains(&mapping.host_port)
            {
                bail!(
                    "host port {} is in the masquerade port range {lo}-{hi}; publish on another port",
                    mapping.host_port
                );
            }
            // Reservations made so far are released when `held` drops on an error.
            let (reservation, port) = ports::reserve(mapping.host_ip, mapping.host_port, mapping.proto)?;
            held.push(reservation);
            resolved.push(PortMapping { host_port: port, ..*mapping });
        }
        let rule_sets = self.rule_sets_of(&container.name, &resolved)?;
        container.ports = resolved;
        self.reservations.insert(container.id.clone(), held);
        for (mapping, rule_set) in container.ports.iter().zip(rule_sets) {
            let host_only = self.host_only(mapping.host_ip).await?;
            let backend = backend(att, mapping, host_index, rule_set, host_only);
            self.datapath.set_published(publish_key(mapping), backend)?;
        }
        Ok(())
    }

    /// The firewall rule sets of `container`'s mappings, installed in the trie.
    fn rule_sets_of(&mut self, container: &str, mappings: &[PortMapping]) -> Result<Vec<u16>> {
        let mut compiler = self.state.firewall.compiler();
        let sets: Vec<_> = mappings.iter().map(|m| compiler.rule_set(container, m)).collect();
        self.firewall.install(&mut self.datapath, &sets)
    }

    /// Brings the firewall trie and the published ports' rule sets in line with the rules
    /// and the containers of the state: new sets are written before ports point at them,
    /// and sets no port uses any more go last.
    fn sync_firewall(&mut self) -> Result<()> {
        let mut compiler = self.state.firewall.compiler();
        let (mut keys, mut sets) = (vec![], vec![]);
        for container in &self.state.containers {
            for mapping in &container.ports {
                keys.push(publish_key(mapping));
                sets.push(compiler.rule_set(&container.name, mapping));
            }
        }
        let ids = self.firewall.install(&mut self.datapath, &sets)?;
        for (key, id) in keys.into_iter().zip(ids) {
            self.datapath.set_published_rule_set(key, id)?;
        }
        self.firewall.retain(&mut self.datapath, &sets.into_iter().collect());
        Ok(())
    }

    /// `firewall add`: appends a rule, all or nothing. A rule naming a container keeps
    /// its name, as Docker users think of it, and applies to whatever container has that
    /// name.
    fn add_firewall_rule(&mut self, mut spec: firewall::RuleSpec) -> Result<Value> {
        spec.check()?;
        if let Some(name) = &spec.container {
            let container = self.state.container(name).ok_or_else(|| {
                anyhow!("--container {name}: no such container; `dataplane ps -a` lists them")
            })?;
            spec.container = Some(container.name.clone());
        }
        let earlier = self.state.firewall.clone();
        let rule = self.state.firewall.add(spec)?;
        let applied = self.datapath.reset_firewall_hits(rule.slot).and_then(|()| self.sync_firewall());
        self.keep_firewall_or_undo(applied, earlier)?;
        Ok(serde_json::to_value(rule)?)
    }

    /// `firewall rm`: removes rules by ID, all or none.
    fn remove_firewall_rules(&mut self, ids: &[u32]) -> Result<Value> {
        let earlier = self.state.firewall.clone();
        self.state.firewall.remove(ids)?;
        let applied = self.sync_firewall();
        self.keep_firewall_or_undo(applied, earlier)?;
        Ok(json!(ids))
    }

    /// Saves the rules once applied; otherwise puts the earlier rules back, in the state
    /// and in the maps.
    fn keep_firewall_or_undo(&mut self, applied: Result<()>, earlier: firewall::Rules) -> Result<()> {
        if let Err(e) = applied {
            self.state.firewall = earlier;
            if let Err(undo) = self.sync_firewall() {
                log::warn!("restoring the earlier firewall rules: {undo:#}");
            }
            return Err(e);
        }
        self.save()
    }

    /// Releases a container's host ports and their map entries.
    fn unpublish(&mut self, container: &Container) -> Result<()> {
        for mapping in &container.ports {
            self.datapath.remove_published(&publish_key(mapping))?;
        }
        self.reservations.remove(&container.id);
        Ok(())
    }

    /// The daemon's own namespace, pinned where host-mode containers find it (as Docker's
    /// `netns/default`).
    fn host_netns(&self) -> PathBuf {
        self.config.netns_dir.join("dp-host")
    }

    /// Parses `--network`: a network name, or one of Docker's modes.
    fn network_mode(&self, spec: &RunSpec) -> Result<NetworkMode> {
        let mode = match spec.network.as_str() {
            "host" => NetworkMode::Host,
            "none" => NetworkMode::None,
            other => match other.strip_prefix("container:") {
                Some(target) => {
                    let target = self.state.container(target).ok_or_else(|| no_such_container(target))?;
                    if !target.network_mode.owns_sandbox() && target.network_mode != NetworkMode::Host {
                        bail!(
                            "container {} shares another container's network; join that one instead",
                            target.name
                        );
                    }
                    NetworkMode::Container { id: target.id.clone() }
                }
                None => {
                    self.network(other)?;
                    NetworkMode::Bridge
                }
            },
        };
        if mode != NetworkMode::Bridge && !spec.publish.is_empty() {
            bail!(
                "conflicting options: published ports need a network, not --network {}; drop -p/-P",
                spec.network
            );
        }
        if mode != NetworkMode::Bridge && (spec.ip.is_some() || spec.mac.is_some()) {
            bail!(
                "conflicting options: --ip and --mac-address need a network, not --network {}",
                spec.network
            );
        }
        if mode != NetworkMode::Bridge && !spec.aliases.is_empty() {
            bail!(
                "conflicting options: --network-alias needs a user-defined network, not --network {}",
                spec.network
            );
        }
        Ok(mode)
    }

    async fn build_container(&mut self, container: &mut Container, spec: &RunSpec) -> Result<()> {
        match container.network_mode {
            NetworkMode::Bridge => {
                let net = self.network(&spec.network)?.clone();
                check_aliases(&net, &spec.aliases)?;
                let used = self.state.used_addresses(&net.id);
                let plan = net.plan();
                let ip = match spec.ip {
                    Some(ip) => plan.claim(ip, &used),
                    None => plan.allocate(&used),
                }
                .map_err(|e| anyhow!("network {}: {e}", net.name))?;
                let att = Attachment {
                    network_id: net.id.clone(),
                    ip,
                    mac: spec.mac.unwrap_or(MacAddr(ipam::mac_for(ip))),
                    host_veth: self.unused_veth_name().await?,
                    ifname: "eth0".into(),
                    aliases: spec.aliases.clone(),
                    bridge: self.bridge_for(&net)?,
                };
                container.attachments.push(att.clone());
                let (hostname, name) = (&container.hostname, &container.name);
                let resolvers = match dns::has_resolver(&net.driver) {
                    true => vec![net.gateway.into()],
                    false => self.resolvers.upstreams(),
                };
                process::write_etc_files(&container.etc_dir, hostname, name, Some((ip, &resolvers)))?;
                netns::create(&container.netns)?;
                let publishes = !spec.publish.is_empty();
                let host_index = drivers::connect(
                    &self.netlink,
                    &mut self.datapath,
                    &net,
                    &container.netns,
                    &att,
                    publishes,
                )
                .await?;
                self.publish(container, &att, host_index, &spec.publish).await?;
            }
            NetworkMode::None => {
                process::write_etc_files(&container.etc_dir, &container.hostname, &container.name, None)?;
                netns::create(&container.netns)?;
                let inside = Netlink::connect_in(&container.netns)?;
                inside.set_up(inside.require_index("lo").await?).await?;
            }
            NetworkMode::Host => std::fs::create_dir_all(&container.etc_dir)?,
            NetworkMode::Container { .. } => {}
        }
        if container.detached {
            let log = log_path(&self.config.state_dir, &container.id);
            let pid = process::spawn_detached(
                &container.command,
                &container.netns,
                &container.hostname,
                &container.etc_dir,
                &log,
            )?;
            let start_time = process::start_time(pid).unwrap_or(0);
            container.status = Status::Running { pid, start_time };
        }
        Ok(())
    }

    /// Removes everything a container owns; safe to call on a half-made container.
    async fn teardown_container(&mut self, container: &Container) -> Result<()> {
        let mut errors = vec![];
        if let Err(e) = self.unpublish(container) {
            errors.push(format!("{e:#}"));
        }
        for att in &container.attachments {
            let Some(net) = self.state.network_by_id(&att.network_id).cloned() else {
                continue;
            };
            if let Err(e) =
                drivers::disconnect(&self.netlink, &mut self.datapath, &net, &container.netns, att).await
            {
                errors.push(format!("{e:#}"));
            }
        }
        let owns_sandbox = container.network_mode.owns_sandbox();
        if owns_sandbox && let Err(e) = netns::remove(&container.netns) {
            errors.push(format!("{e:#}"));
        }
        let owns_etc = owns_sandbox || container.network_mode == NetworkMode::Host;
        if owns_etc
            && let Err(e) = std::fs::remove_dir_all(&container.etc_dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            errors.push(format!("removing {}: {e}", container.etc_dir.display()));
        }
        if errors.is_empty() { Ok(()) } else { bail!(errors.join("; ")) }
    }

    async fn remove_container(&mut self, name: &str, force: bool) -> Result<Value> {
        let container = self.state.container(name).ok_or_else(|| no_such_container(name))?.clone();
        let joined: Vec<_> = self
            .state
            .containers
            .iter()
            .filter(|c| c.network_mode == NetworkMode::Container { id: container.id.clone() })
            .map(|c| c.name.clone())
            .collect();
        if !joined.is_empty() {
            bail!(
                "container {} shares its network namespace with {}; remove those first",
                container.name,
                joined.join(", ")
            );
        }
        if let Status::Running { pid, start_time } = container.status {
            if !force && process::is_alive(pid, start_time) {
                bail!(
                    "container {} is running; stop it first (`dataplane stop {}`) or use `dataplane rm -f`",
                    container.name,
                    container.name
                );
            }
            if process::is_alive(pid, start_time) && !process::kill_all(pid, start_time, KILL_WAIT).await {
                log::warn!(
                    "container {}: its processes had not ended {KILL_WAIT:?} after SIGKILL; removing it anyway",
                    container.name
                );
            }
        }
        self.teardown_container(&container).await?;
        self.forget_later(container.attachments.iter().map(|a| IpAddress::v4(a.ip.octets())).collect());
        self.state.containers.retain(|c| c.id != container.id);
        // Only drops the rule sets no port uses any more.
        if let Err(e) = self.sync_firewall() {
            log::warn!("removing container {}: {e:#}", container.name);
        }
        let _ = std::fs::remove_file(log_path(&self.config.state_dir, &container.id));
        self.save()?;
        Ok(json!(container.name))
    }

    async fn process_exited(&mut self, id: &str, pid: i32, code: Option<i32>) -> Result<()> {
        let Some(container) = self.state.container_mut(id) else {
            return Ok(());
        };
        if !matches!(container.status, Status::Running { pid: p, .. } if p == pid) {
            return Ok(());
        }
        container.status = Status::Exited { code };
        let remove = container.auto_remove;
        self.save()?;
        if remove {
            self.remove_container(id, true).await?;
        }
        Ok(())
    }
}

fn publish_key(mapping: &PortMapping) -> PublishKey {
    PublishKey {
        addr: IpAddress::v4(mapping.host_ip.octets()),
        port: mapping.host_port.to_be(),
        proto: mapping.proto.number(),
        _pad: 0,
    }
}

fn backend(
    att: &Attachment,
    mapping: &PortMapping,
    host_index: u32,
    rule_set: u16,
    host_only: bool,
) -> Backend {
    Backend {
        addr: IpAddress::v4(att.ip.octets()),
        port: mapping.container_port.to_be(),
        rule_set,
        host_ifindex: host_index,
        mac: att.mac.0,
        flags: if host_only { Backend::HOST_ONLY } else { 0 },
        _pad: 0,
    }
}

fn log_path(state_dir: &Path, id: &str) -> PathBuf {
    state_dir.join("logs").join(format!("{id}.log"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn requests_are_read_whole_and_bounded() {
        let request = read_request(&b"{\"request\": \"stats\"}\n"[..]).await.unwrap();
        assert!(matches!(request, Request::Stats));
        // A last line without its newline, the client having shut down its side, is whole too.
        assert!(matches!(read_request(&b"{\"request\": \"stats\"}"[..]).await, Ok(Request::Stats)));
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
        assert!(matches!(read_request(&max[..]).await, Ok(Request::Stats)));
    }
}
