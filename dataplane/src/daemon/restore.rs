//! Restore, at start: brings the system and the maps back in line with the state — the
//! networks, every endpoint whatever its owner (interfaces, map entries, published ports
//! and their reservations), the firewall's rule sets — records the commands of our
//! containers that ended while the daemon was away, and drops from the maps whatever no
//! network or endpoint of the state claims. Before all that it settles the recorded
//! commands (adopting a foreground `run`'s that started while it was away, ending those
//! no container owns) and the operations a crash cut short (their intents), and removes
//! the bridges, the namespaces of our pin dir and the files of our state dir that nothing
//! holds; a container with a piece it cannot rebuild (its namespace) is marked dead, with
//! the reason. It never gives an endpoint another address nor attaches one the state does
//! not hold.

use std::collections::{BTreeMap, HashSet};

use anyhow::{Context, Result};
use dataplane_common::PublishKey;

use super::{
    Core, Shared,
    containers::{self, watch},
    endpoints::InterfaceRemoval,
    publishing::publish_keys,
};
use crate::{
    api::{Ipv6Spec, NetworkSpec},
    drivers, ipam,
    maps::endpoint_key,
    netns, process,
    state::{DEFAULT_NETWORK, Intent, Keyed, Status, is_id_prefix},
};

/// Brings the system and the maps back in line with the state: bridges, veths, program
/// attachments and map entries; processes that ended while we were away are recorded.
pub(super) async fn restore(core: &Shared) -> Result<()> {
    let mut guard = core.lock().await;
    let c = &mut *guard;
    settle_recorded_processes(c).await?;
    // The networks first: the settling of intents saves, which starts the networks'
    // resolvers on their gateway addresses.
    let networks = c.state.networks.to_vec();
    for net in networks {
        let restored = drivers::setup_network(&c.netlink, &mut c.datapath, &net).await;
        match restored {
            // A macvlan parent that went away breaks that network, not the daemon.
            Err(e) if net.driver == "macvlan" => log::warn!("network {}: {e:#}", net.name),
            other => other.with_context(|| format!("restoring network {}", net.name))?,
        }
    }
    // Before anything is made again under a name a cut-short operation may have used
    // (the default network's bridge, say).
    resolve_intents(c).await?;
    sweep_bridges(c).await?;
    sweep_namespaces(c).await;
    sweep_ports(c).await?;
    sweep_container_files(c);
    if c.state.network(DEFAULT_NETWORK).is_none() {
        // Docker's 172.17.0.0/16, unless the host already routes it (a docker0 next to
        // us, say): then the next free default pool, as Docker does.
        let preferred = ipam::default_bridge_subnet();
        let routes = c.host_routes().await?;
        let taken = routes.iter().find(|r| ipam::overlaps(r, &preferred)).copied();
        let spec = NetworkSpec {
            name: DEFAULT_NETWORK.into(),
            driver: "bridge".into(),
            subnet: taken.is_none().then_some(preferred),
            gateway: None,
            ip_range: None,
            ipv4: true,
            ipv6: c.config.default_ipv6.map(|subnet| Ipv6Spec { subnet, ..Ipv6Spec::default() }),
            internal: false,
            options: BTreeMap::new(),
            labels: BTreeMap::new(),
        };
        c.create_network(spec).await.context("creating the default network")?;
        if let Some(route) = taken {
            log::info!(
                "the default network takes {} instead of {preferred}: the host already routes {route} \
                 (a docker0, say)",
                c.network(DEFAULT_NETWORK)?.subnet.map_or("none".to_string(), |s| s.to_string())
            );
        }
    }
    let mut watchers = vec![];
    let containers = c.state.containers.to_vec();
    for container in containers {
        if matches!(container.status, Status::Dead { .. }) {
            continue;
        }
        // A stopped container's namespace holds nothing: its start makes it again.
        if container.is_running()
            && container.network_mode.owns_sandbox()
            && !netns::is_namespace(&container.netns)
        {
            let reason = format!(
                "its network namespace {} was gone at a start of the daemon",
                container.netns.display()
            );
            log::warn!("container {}: {reason}; marking it dead", container.name);
            c.container_by_id(&container.id)?.status = Status::Dead { reason };
            continue;
        }
        if let Status::Running { pid, start_time } = container.status {
            if process::is_alive(pid, start_time) {
                watchers.push((container.id.clone(), pid));
            } else {
                // Its exit status went to the daemon that was its parent.
                log::info!(
                    "container {}: its command (PID {pid}) ended while the daemon was away; exit code unknown",
                    container.name
                );
                c.container_by_id(&container.id)?.exited(None);
            }
        }
    }
    // Containers not running that hold endpoints (their command ended while we were
    // away, or a crash cut short the release after it ended): released below, not rearmed.
    let stopped: Vec<_> = c
        .state
        .containers
        .iter()
        .filter(|k| matches!(k.status, Status::Exited { .. }))
        .filter(|k| c.state.endpoints_of(&k.id).next().is_some())
        .cloned()
        .collect();
    let endpoints: Vec<_> = {
        let names = c.state.owner_names();
        c.state.endpoints.iter().map(|e| (e.clone(), names.of(&e.owner))).collect()
    };
    for (endpoint, owner) in endpoints {
        if endpoint.owner.container_id().is_some_and(|id| stopped.iter().any(|k| k.id == id)) {
            continue;
        }
        let gone = !netns::is_namespace(&endpoint.netns);
        // Docker removed the container meanwhile (it leaves the pin's file, and hands the
        // inner end back to our namespace), and its Leave found no one: done now. One
        // that Docker has yet to take into its sandbox may be on its way there (Docker
        // makes the sandbox's namespace only as the container starts): it stays, and goes
        // later if Docker never takes it (`docker_remove_stale`).
        if gone && endpoint.owner.configures_interface() && !endpoint.awaits_hand_over() {
            log::info!("{owner}: its sandbox went while the daemon was away; removing the endpoint");
            c.docker_sandbox_gone(&endpoint).await.with_context(|| format!("removing {owner}"))?;
            continue;
        }
        // Its interface went with the namespace; the endpoint keeps its address until its
        // owner removes it.
        if gone && !endpoint.owner.configures_interface() {
            log::warn!(
                "{} of {owner}: namespace {} is gone; not restored",
                endpoint.ifname,
                endpoint.netns.display()
            );
            continue;
        }
        let rearmed = c
            .rearm(&endpoint, &owner)
            .await
            .with_context(|| format!("restoring {} of {owner}", endpoint.ifname));
        match (rearmed, endpoint.owner.container_id()) {
            // Only Docker can give its sandbox another interface: that endpoint is broken,
            // not the daemon.
            (Err(e), _) if endpoint.owner.configures_interface() => log::warn!("{e:#}"),
            // One container is broken, not the daemon: it says why.
            (Err(e), Some(id)) => {
                log::warn!("{e:#}; marking the container dead");
                c.container_by_id(id)?.status = Status::Dead { reason: format!("{e:#}") };
            }
            (other, _) => other?,
        }
        // Docker may have taken its interface up into the sandbox while we were away.
        if endpoint.awaits_hand_over()
            && let Err(e) = c.docker_settle(&endpoint.host_veth).await
        {
            log::warn!("restoring {owner}: {e:#}");
        }
    }
    for container in &stopped {
        // What stays of an endpoint is its own trouble, not the daemon's: a later start
        // of the container, or its `rm`, tries again.
        if let Err(e) = c.release_networks(container, InterfaceRemoval::Now).await {
            log::warn!("container {}: releasing its networks: {e:#}", container.name);
        }
    }
    let mut interfaces = HashSet::new();
    for endpoint in &c.state.endpoints {
        if let Some(index) = c.netlink.link_index(&endpoint.host_veth).await? {
            interfaces.insert(index);
        }
    }
    let endpoints: HashSet<_> = c
        .state
        .endpoints
        .iter()
        .filter_map(|e| Some((c.state.network_by_id(&e.network_id)?.index, e)))
        .flat_map(|(network, e)| e.addresses().map(move |ip| endpoint_key(network, ip)))
        .collect();
    let networks: HashSet<u32> = c.state.networks.iter().map(|n| n.index).collect();
    let published: HashSet<PublishKey> =
        c.state.endpoints.iter().flat_map(|e| publish_keys(&c.state, e)).collect();
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
        .filter(|k| k.auto_remove && matches!(k.status, Status::Exited { .. } | Status::Dead { .. }))
        .map(|k| k.id.clone())
        .collect();
    for id in ended {
        c.remove_container(&id, true).await?;
    }
    Ok(())
}

/// Settles the operations a crash cut short (see `Intent`): undoes the creations,
/// finishes the removals, and logs each.
async fn resolve_intents(c: &mut Core) -> Result<()> {
    let intents = c.state.intents.to_vec();
    for intent in intents {
        c.done(intent.key());
        match intent {
            Intent::Run { container } => {
                log::warn!("container {}: its run was cut short; removing what it made", container.name);
                c.undo_run(&container)
                    .await
                    .with_context(|| format!("undoing the run of {}", container.name))?;
            }
            Intent::Attach { endpoint } => {
                log::warn!(
                    "endpoint {} ({}): its attach was cut short; removing what it made",
                    endpoint.host_veth,
                    endpoint.owner
                );
                c.dismantle(&endpoint, InterfaceRemoval::Now)
                    .await
                    .with_context(|| format!("undoing the attach of {}", endpoint.host_veth))?;
            }
            Intent::CreateNetwork { network } => {
                log::warn!("network {}: its creation was cut short; removing what it made", network.name);
                drivers::teardown_network(&c.netlink, &mut c.datapath, &network)
                    .await
                    .with_context(|| format!("undoing the creation of network {}", network.name))?;
            }
            Intent::Start { container_id } => {
                c.undo_start(&container_id)
                    .await
                    .with_context(|| format!("undoing the start of {container_id}"))?;
            }
            Intent::Remove { container_id } => {
                if c.state.containers.get(&container_id).is_some() {
                    log::warn!("container {container_id}: its removal was cut short; finishing it");
                    c.remove_container(&container_id, true).await?;
                }
            }
        }
    }
    c.save()
}

/// Settles the recorded commands (`containers::recorded_processes`) with the containers'
/// records. A foreground `run`'s command is recorded by the CLI before it runs, and its
/// start reported after: one whose container is still `Created` started while the daemon
/// was away, and is adopted as the container's, running (watched below like any), or,
/// gone already, recorded exited with its code unknown (the CLI's report of its end, if
/// it comes, gives the code). Any other command that no container record shows running is
/// ended: a crash after its start and before the save of its `run` or `start`, or a state
/// that lost its last snapshot, left it (a container in the host's network, or in another
/// container's, has no namespace of its own where `sweep_namespaces` would find it). A
/// PID since reused is told apart by its start time.
async fn settle_recorded_processes(c: &mut Core) -> Result<()> {
    for (id, pid, start_time) in containers::recorded_processes(&c.config.state_dir) {
        let alive = process::is_alive(pid, start_time);
        // A start cut short is its intent's to undo (`undo_start`), not to adopt.
        let unsettled = c.state.intents.iter().any(|i| i.key() == id);
        let recorded = c.state.containers.get(&id).map(|k| (k.name.clone(), k.status.clone()));
        let keep = match recorded {
            Some((_, Status::Running { pid: p, start_time: s })) => alive && (p, s) == (pid, start_time),
            Some((name, Status::Created)) if !unsettled && alive => {
                log::warn!(
                    "container {name}: its foreground command (PID {pid}) started while the daemon was away; adopting it as running"
                );
                c.container_by_id(&id)?.started(pid, start_time);
                true
            }
            Some((name, Status::Created)) if !unsettled => {
                log::warn!(
                    "container {name}: its foreground command (PID {pid}) started and ended while the daemon was away; exit code unknown"
                );
                c.container_by_id(&id)?.exited(None);
                false
            }
            _ => false,
        };
        if keep {
            continue;
        }
        if alive {
            log::warn!("container {id}: its command (PID {pid}) runs with no record; ending it");
            if !process::kill_all(pid, start_time, containers::KILL_WAIT).await {
                log::warn!(
                    "container {id}: its command (PID {pid}) had not ended {:?} after SIGKILL",
                    containers::KILL_WAIT
                );
            }
        }
        containers::remove_pidfile(&c.config.state_dir, &id);
    }
    Ok(())
}

/// Removes the bridges of networks that no network record holds, found by their alias
/// (`bridge::network_bridges`), with their extra bridges: a state that lost its last
/// snapshot left them (a crash itself leaves an intent that names them).
async fn sweep_bridges(c: &Core) -> Result<()> {
    let held: HashSet<&str> = c.state.networks.iter().map(|n| n.id.as_str()).collect();
    for (bridge, network_id) in drivers::bridge::network_bridges(&c.netlink).await? {
        if held.contains(network_id.as_str()) {
            continue;
        }
        log::warn!("bridge {bridge}: no network holds it (its network was {network_id}); removing it");
        if let Err(e) = drivers::bridge::remove_bridges(&c.netlink, &bridge, &network_id).await {
            log::warn!("removing bridge {bridge}: {e:#}");
        }
    }
    Ok(())
}

/// Deletes what removals left of their interfaces: links the link reaper had marked for
/// deletion, and host ends of veths on our bridges that no endpoint holds. The daemon was
/// killed with their deletion pending, after the answer, while something else held the
/// namespace of the other end open (else the kernel deleted the pair with it).
async fn sweep_ports(c: &Core) -> Result<()> {
    if let Err(e) = c.netlink.delete_reaped_links().await {
        log::warn!("{e:#}");
    }
    let held: HashSet<&str> = c.state.endpoints.iter().map(|e| e.host_veth.as_str()).collect();
    for net in c.state.networks.iter().filter(|n| !drivers::is_macvlan(n)) {
        for port in drivers::bridge::unheld_ports(&c.netlink, &net.bridge, &net.id, &held).await? {
            log::warn!("link {port} on network {}: no endpoint holds it; removing it", net.name);
            if let Err(e) = c.netlink.delete_link(&port).await {
                log::warn!("{e:#}");
            }
        }
    }
    Ok(())
}

/// Removes the files of the state dir that are named as a container's (its /etc dir,
/// `containers/<ID>`, and its log, `logs/<ID>.log`) and that no container holds: a state
/// that lost its last snapshot left them (a crash itself leaves an intent that names
/// them). Process records are `settle_recorded_processes`'s.
fn sweep_container_files(c: &Core) {
    let held: HashSet<_> = c
        .state
        .containers
        .iter()
        .flat_map(|k| {
            [Some(k.etc_dir.clone()), k.log.clone(), Some(containers::log_path(&c.config.state_dir, &k.id))]
        })
        .flatten()
        .collect();
    for (dir, suffix) in [("containers", ""), ("logs", ".log")] {
        let Ok(entries) = std::fs::read_dir(c.config.state_dir.join(dir)) else { continue };
        for path in entries.filter_map(|e| e.ok()).map(|e| e.path()) {
            let named_as_ours = path
                .file_name()
                .and_then(|n| n.to_str()?.strip_suffix(suffix))
                .is_some_and(|id| is_id_prefix(id, 64));
            if !named_as_ours || held.contains(&path) {
                continue;
            }
            log::warn!("{}: no container holds it; removing it", path.display());
            let removed =
                if path.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) };
            if let Err(e) = removed {
                log::warn!("removing {}: {e}", path.display());
            }
        }
    }
}

/// Removes the namespaces pinned in the pin dir under our containers' names
/// (`dp-<12 digits>`) that no container holds, with what is in them: a crash left them (of
/// a version before intents, or before a record was saved). Pins of other names are
/// someone else's: the pin dir is `/run/netns` by default, shared with `ip netns` and the
/// runtimes.
async fn sweep_namespaces(c: &Core) {
    let held: HashSet<_> = c.state.containers.iter().map(|k| k.netns.clone()).collect();
    let Ok(pins) = std::fs::read_dir(&c.config.netns_dir) else { return };
    for pin in pins.filter_map(|e| e.ok()).map(|e| e.path()) {
        let ours = pin.file_name().and_then(|n| n.to_str()).is_some_and(containers::is_container_pin);
        if !ours || held.contains(&pin) || pin == c.host_netns() {
            continue;
        }
        log::warn!("namespace {}: no container holds it; removing it", pin.display());
        let removed = match containers::empty_namespace(&pin).await {
            Ok(()) => netns::remove(&pin),
            Err(e) => Err(e),
        };
        if let Err(e) = removed {
            log::warn!("removing namespace {}: {e:#}", pin.display());
        }
    }
}
