//! `dataplane daemon --cleanup`: removes every trace that a daemon with the same settings
//! left on the host, whether it stopped or was killed: containers' processes and
//! namespaces, bridges, veths and the VXLAN device, our tc filter on the uplink (and its clsact qdisc once
//! empty), the XDP link and every pin, the bpffs mount, the namespace dir's mount and the
//! mount template, the sockets; with `purge`, the state dir. It refuses while a daemon
//! holds the state dir or answers on the socket.
//!
//! Like any teardown here it goes on past a failure: what can go goes, and the failures
//! are reported together at the end. It never touches what is not named as ours: pins
//! not named `dp-…`, bridges without our alias, other programs' filters, a bpffs it did
//! not mount.

use std::path::Path;

use anyhow::{Context, Result, bail};
use aya::programs::tc::{TcAttachType, qdisc_detach_program};
use dataplane_common::program_names;
use nix::mount::{MntFlags, umount2};

use super::{Config, containers, privileges, state_lock::StateDirLock};
use crate::{drivers, netlink::Netlink, netns, process, state::StateStore};

/// The system bpffs: mounted by the distribution, never by us, so never unmounted here.
const SYSTEM_BPFFS: &str = "/sys/fs/bpf";

/// What cleanup removed, for its last line.
#[derive(Default)]
struct Removed {
    processes: usize,
    namespaces: usize,
    bridges: usize,
    links: usize,
    filters: usize,
    pins: usize,
    mounts: usize,
    files: usize,
}

pub async fn cleanup(config: &Config, purge: bool) -> Result<()> {
    privileges::require("dataplane daemon --cleanup")?;
    let _lock = match config.state_dir.is_dir() {
        true => Some(StateDirLock::take(&config.state_dir).context(
            "--cleanup removes what a stopped daemon left, and a daemon is running: stop it first \
             (`systemctl stop dataplane`), then clean up",
        )?),
        false => None,
    };
    for socket in std::iter::once(&config.socket).chain(&config.docker_plugin) {
        if std::os::unix::net::UnixStream::connect(socket).is_ok() {
            bail!(
                "a daemon answers on {}: stop it first (`systemctl stop dataplane`), then clean up",
                socket.display()
            );
        }
    }
    let mut removed = Removed::default();
    let mut failures = vec![];
    let mut step = |what: &str, result: Result<()>| {
        if let Err(e) = result {
            failures.push(format!("{what}: {e:#}"));
        }
    };
    step("containers' processes", end_recorded_processes(&config.state_dir, &mut removed));
    step("container namespaces", remove_namespaces(&config.netns_dir, &mut removed).await);
    let netlink = Netlink::connect()?;
    step("bridges and veths", remove_links(config, &netlink, &mut removed).await);
    step("tc filters", remove_uplink_filters(&netlink, &mut removed).await);
    step("pins and the bpffs", remove_pins(&config.bpffs, &mut removed));
    step("mounts of the namespace dir", unmount_netns_dir(&config.netns_dir, &mut removed));
    step("sockets", remove_sockets(config, &mut removed));
    if purge {
        let purged = std::fs::remove_dir_all(&config.state_dir);
        match purged {
            Ok(()) => log::info!("removed the state dir {}", config.state_dir.display()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => step("the state dir", Err(e).with_context(|| config.state_dir.display().to_string())),
        }
    }
    let Removed { processes, namespaces, bridges, links, filters, pins, mounts, files } = removed;
    let state = match purge {
        true => "the state too".to_string(),
        false => format!("the state stays in {} (--purge removes it)", config.state_dir.display()),
    };
    println!(
        "removed {processes} processes, {namespaces} namespaces, {bridges} bridges, {links} links, \
         {filters} tc filters, {pins} pins, {mounts} mounts, {files} files; {state}"
    );
    if !failures.is_empty() {
        bail!("cleanup left some things behind:\n  {}", failures.join("\n  "));
    }
    Ok(())
}

/// Kills the recorded processes of containers' commands (those in a namespace of their
/// own die with it below; these are `--network host` ones too). A record whose process
/// has another start time names a process that reused the PID: it is left alone.
fn end_recorded_processes(state_dir: &Path, removed: &mut Removed) -> Result<()> {
    for (id, pid, start_time) in containers::recorded_processes(state_dir) {
        if process::start_time(pid) == Some(start_time) {
            log::info!("killing process {pid} of container {}", &id[..12.min(id.len())]);
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL)
                .with_context(|| format!("killing process {pid}"))?;
            removed.processes += 1;
        }
    }
    Ok(())
}

/// Empties and unpins our namespaces in the pin dir: the containers' (`dp-<id>`) and the
/// daemon's own pin of the host's (`dp-host`).
async fn remove_namespaces(netns_dir: &Path, removed: &mut Removed) -> Result<()> {
    let Ok(pins) = std::fs::read_dir(netns_dir) else { return Ok(()) };
    for pin in pins.filter_map(|e| e.ok()).map(|e| e.path()) {
        let name = pin.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if name == super::HOST_NETNS_PIN {
            netns::remove(&pin)?;
            removed.mounts += 1;
        } else if containers::is_container_pin(name) {
            let killed = process::kill_in_namespace(&pin, containers::KILL_WAIT).await.unwrap_or(0);
            removed.processes += killed;
            containers::empty_namespace(&pin).await?;
            netns::remove(&pin)?;
            log::info!("removed namespace {}", pin.display());
            removed.namespaces += 1;
        }
    }
    Ok(())
}

/// Removes our bridges (found by their alias) with their ports, and the host ends the
/// state names (a Docker endpoint not yet handed over sits on no bridge).
async fn remove_links(config: &Config, netlink: &Netlink, removed: &mut Removed) -> Result<()> {
    for (bridge, network_id) in drivers::bridge::network_bridges(netlink).await? {
        let ports = drivers::bridge::remove_bridges_and_ports(netlink, &bridge, &network_id).await?;
        log::info!("removed bridge {bridge} of network {} and its {} ports", &network_id[..12], ports.len());
        removed.bridges += 1;
        removed.links += ports.len();
    }
    // The VXLAN device of a daemon with a store that was killed (a stop removes it).
    if netlink.link_index(crate::tunnel::DEVICE).await?.is_some() {
        netlink.delete_link(crate::tunnel::DEVICE).await?;
        log::info!("removed the VXLAN device {}", crate::tunnel::DEVICE);
        removed.links += 1;
    }
    let state = match StateStore::peek(&config.state_dir) {
        Ok(state) => state.unwrap_or_default(),
        Err(e) => {
            log::warn!(
                "the state is unreadable ({e:#}): only links found by our bridges' alias were removed"
            );
            return Ok(());
        }
    };
    for endpoint in &state.endpoints {
        for name in [endpoint.host_veth.clone(), crate::state::Endpoint::hand_over_name(&endpoint.id)] {
            if netlink.link_index(&name).await?.is_some() {
                netlink.delete_link(&name).await?;
                log::info!("removed link {name} of endpoint {}", &endpoint.id[..12]);
                removed.links += 1;
            }
        }
    }
    Ok(())
}

/// Takes `from_uplink` off whichever link has it (the uplink may have changed since), then
/// that link's clsact qdisc if nothing else filters there.
async fn remove_uplink_filters(netlink: &Netlink, removed: &mut Removed) -> Result<()> {
    for name in netlink.link_names().await? {
        // NotFound: none of ours there; a link without a clsact qdisc fails the lookup.
        if qdisc_detach_program(&name, TcAttachType::Ingress, program_names::FROM_UPLINK).is_err() {
            continue;
        }
        log::info!("removed the {} filter from {name}", program_names::FROM_UPLINK);
        removed.filters += 1;
        if let Some(index) = netlink.link_index(&name).await?
            && netlink.remove_empty_clsact(index).await?
        {
            log::info!("removed the clsact qdisc of {name}, empty now");
        }
    }
    Ok(())
}

/// Removes every pin under our bpffs dir (the XDP link goes with its pin: nothing else
/// holds it once the daemon is gone), then unmounts the bpffs if it is a mount of its own
/// there, as the daemon makes it (not the system's), and removes the dir.
fn remove_pins(bpffs: &Path, removed: &mut Removed) -> Result<()> {
    for dir in ["links", "programs", "maps"] {
        let dir = bpffs.join(dir);
        let Ok(pins) = std::fs::read_dir(&dir) else { continue };
        for pin in pins.filter_map(|e| e.ok()).map(|e| e.path()) {
            std::fs::remove_file(&pin).with_context(|| format!("removing {}", pin.display()))?;
            removed.pins += 1;
        }
        std::fs::remove_dir(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    if bpffs != Path::new(SYSTEM_BPFFS) && is_mount_point(bpffs)? {
        umount2(bpffs, MntFlags::MNT_DETACH).with_context(|| format!("unmounting {}", bpffs.display()))?;
        log::info!("unmounted the bpffs on {}", bpffs.display());
        removed.mounts += 1;
    }
    remove_empty_dir(bpffs);
    Ok(())
}

/// Removes the mount template beside the pin dir, then the pin dir's mount of itself
/// once no pin is left in it (someone else's pins keep it, and it).
fn unmount_netns_dir(netns_dir: &Path, removed: &mut Removed) -> Result<()> {
    let template = netns::mount_template(netns_dir);
    if is_mount_point(&template)? {
        umount2(&template, MntFlags::MNT_DETACH)
            .with_context(|| format!("unmounting the mount template {}", template.display()))?;
        removed.mounts += 1;
    }
    if template.exists() {
        std::fs::remove_file(&template).with_context(|| format!("removing {}", template.display()))?;
        removed.files += 1;
    }
    let empty = std::fs::read_dir(netns_dir).is_ok_and(|mut entries| entries.next().is_none());
    if empty && is_mount_point(netns_dir)? {
        umount2(netns_dir, MntFlags::MNT_DETACH)
            .with_context(|| format!("unmounting {}", netns_dir.display()))?;
        removed.mounts += 1;
    }
    Ok(())
}

/// The control socket and Docker's plugin socket, and their directories once empty.
fn remove_sockets(config: &Config, removed: &mut Removed) -> Result<()> {
    for socket in std::iter::once(&config.socket).chain(&config.docker_plugin) {
        match std::fs::remove_file(socket) {
            Ok(()) => removed.files += 1,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing {}", socket.display())),
        }
    }
    for dir in [config.socket.parent(), config.bpffs.parent()].into_iter().flatten() {
        remove_empty_dir(dir);
    }
    Ok(())
}

/// Removes `dir` if it is empty (and so holds nothing of anyone's).
fn remove_empty_dir(dir: &Path) {
    if std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_none()) {
        let _ = std::fs::remove_dir(dir);
    }
}

/// Whether `path` is itself a mount point of the caller's mount namespace.
fn is_mount_point(path: &Path) -> Result<bool> {
    let Ok(path) = path.canonicalize() else { return Ok(false) };
    Ok(netns::mount_points()?.contains(&path))
}
