//! Our own containers: `run` (a namespace, its /etc files, its endpoints, its command),
//! `stop`, `start`, `restart`, `rm`, `network connect` and `disconnect`, and the watch on
//! each command. A container's networking is its endpoints while its command runs: when
//! the command ends they go (address, veth, map entries, ports, DNS names), and the
//! networks it asked for (`Container::networks`) bring them back at its next start. This
//! module has `endpoints` attach and detach them, and never builds an interface, an
//! address or a map entry itself.

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Result, anyhow, bail};
use nix::sys::signal::Signal;
use serde_json::{Value, json};

use super::{
    Core, Shared, check_name,
    endpoints::{EndpointSpec, InterfaceRemoval, check_aliases},
    no_such_container,
};
use crate::{
    api::RunSpec,
    dns,
    netlink::Netlink,
    netns, process,
    state::{Attachment, Container, Intent, Network, NetworkMode, Owner, Status, is_id_prefix, new_id, now},
};

/// How long `rm -f` waits for a container's processes to end once killed (only a process
/// stuck in the kernel takes more than milliseconds).
pub(super) const KILL_WAIT: Duration = Duration::from_secs(5);

impl Core {
    pub(super) async fn create_container(&mut self, spec: RunSpec) -> Result<Container> {
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
        if let Some(dir) = &spec.workdir
            && !dir.is_dir()
        {
            bail!("-w {}: no such directory; give the command's working directory", dir.display());
        }
        let (netns, etc_dir) = match &mode {
            NetworkMode::Bridge | NetworkMode::None => (
                self.config.netns_dir.join(pin_name(&id)),
                self.config.state_dir.join("containers").join(&id),
            ),
            // Host files are the host's own: an empty directory mounts nothing over them.
            NetworkMode::Host => (self.host_netns(), self.config.state_dir.join("containers").join(&id)),
            NetworkMode::Container { id: target } => {
                let target = self.state.container(target).ok_or_else(|| no_such_container(target))?;
                (target.netns.clone(), target.etc_dir.clone())
            }
        };
        let networks = match mode {
            NetworkMode::Bridge => vec![Attachment {
                network_id: self.network(&spec.network)?.id.clone(),
                ifname: "eth0".into(),
                ip: spec.ip,
                ip6: spec.ip6,
                mac: spec.mac,
                aliases: spec.aliases.clone(),
                publish: spec.publish.clone(),
            }],
            _ => vec![],
        };
        let mut container = Container {
            network_mode: mode,
            netns,
            etc_dir,
            hostname: spec.hostname.clone().unwrap_or_else(|| id[..12].to_string()),
            log: spec.detach.then(|| log_path(&self.config.state_dir, &id)),
            id,
            name,
            command: spec.command,
            env: spec.env,
            workdir: spec.workdir,
            networks,
            detached: spec.detach,
            auto_remove: spec.auto_remove,
            status: Status::Created,
            created: now(),
            started_at: None,
            finished_at: None,
        };
        // Saved before the namespace is made: a crash from here on leaves a record of
        // what to remove (`undo_run`), where it left a namespace, veths and a running
        // command that nothing owned.
        self.intend(Intent::Run { container: container.clone() })?;
        if let Err(e) = self.build_container(&mut container).await {
            if let Err(undo) = self.teardown_container(&container).await {
                log::warn!("undoing container {}: {undo:#}", container.name);
            }
            remove_files(&self.config.state_dir, &container);
            // The container never was: endpoints that failed to go are forgotten anyway.
            self.state.endpoints.retain(|ep| ep.owner.container_id() != Some(container.id.as_str()));
            if let Err(undo) = self.sync_firewall() {
                log::warn!("undoing container {}: {undo:#}", container.name);
            }
            self.abandon(&container.id);
            return Err(e.context(format!("creating container {}", container.name)));
        }
        self.state.containers.push(container.clone());
        self.done(&container.id);
        self.save()?;
        log::info!(
            "created container {} ({}): {}",
            container.name,
            &container.id[..12],
            self.addresses_of(&container.id)
        );
        Ok(container)
    }

    /// A container's addresses, for the log: `blue 10.77.0.2, bridge 172.17.0.3`.
    fn addresses_of(&self, id: &str) -> String {
        let addresses: Vec<String> = self
            .state
            .endpoints_of(id)
            .map(|ep| {
                let network = self.state.network_by_id(&ep.network_id).map_or("?", |n| n.name.as_str());
                let addresses: Vec<String> = ep.addresses().map(|ip| ip.to_string()).collect();
                format!("{network} {}", addresses.join(" "))
            })
            .collect();
        match addresses.is_empty() {
            true => "no address of its own".to_string(),
            false => addresses.join(", "),
        }
    }

    /// Undoes a `run` that a crash cut short, from its intent: the processes in its
    /// namespace, its interfaces, namespace, /etc files and log.
    pub(super) async fn undo_run(&mut self, container: &Container) -> Result<()> {
        if container.network_mode.owns_sandbox() {
            empty_namespace(&container.netns).await?;
        }
        self.teardown_container(container).await?;
        remove_files(&self.config.state_dir, container);
        Ok(())
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

    async fn build_container(&mut self, container: &mut Container) -> Result<()> {
        match container.network_mode {
            NetworkMode::Bridge | NetworkMode::None => netns::create(&container.netns)?,
            NetworkMode::Host => std::fs::create_dir_all(&container.etc_dir)?,
            NetworkMode::Container { .. } => {}
        }
        self.join_networks(container).await?;
        if container.detached {
            self.start_command(container)?;
        }
        Ok(())
    }

    /// Gives a container its networking for a start of its command: an endpoint on each
    /// network it asked for, in order, and its /etc files with the address it got; with
    /// `--network none`, `lo` up. On an error the endpoints made go again.
    async fn join_networks(&mut self, container: &Container) -> Result<()> {
        match container.network_mode {
            NetworkMode::Bridge => {
                if let Err(e) = self.attach_all(container).await {
                    if let Err(undo) = self.release_networks(container, InterfaceRemoval::Now).await {
                        log::warn!("undoing the networks of container {}: {undo:#}", container.name);
                    }
                    return Err(e);
                }
            }
            NetworkMode::None => {
                process::write_etc_files(&container.etc_dir, &container.hostname, &container.name, None)?;
                let inside = Netlink::connect_in(&container.netns)?;
                inside.set_up(inside.require_index("lo").await?).await?;
            }
            NetworkMode::Host | NetworkMode::Container { .. } => {}
        }
        Ok(())
    }

    async fn attach_all(&mut self, container: &Container) -> Result<()> {
        let mut primary = None;
        for wanted in &container.networks {
            let net = self
                .state
                .network_by_id(&wanted.network_id)
                .ok_or_else(|| {
                    anyhow!(
                        "network {} that container {} was on has been removed; remove the container and run it again",
                        &wanted.network_id[..12.min(wanted.network_id.len())],
                        container.name
                    )
                })?
                .clone();
            let endpoint = self
                .attach(EndpointSpec {
                    ip: wanted.ip,
                    ip6: wanted.ip6,
                    mac: wanted.mac,
                    aliases: wanted.aliases.clone(),
                    publish: &wanted.publish,
                    ..own_endpoint(container, &net, wanted.ifname.clone())
                })
                .await
                .map_err(|e| e.context(format!("joining network {}", net.name)))?;
            let address = endpoint.addresses().next().expect("an endpoint has IPv4, IPv6 or both");
            primary.get_or_insert((address, net));
        }
        let Some((ip, net)) = primary else { return Ok(()) };
        // The embedded DNS on the gateway: IPv4's, or IPv6's on an IPv6-only network.
        let resolvers = match dns::has_resolver(&net.driver) {
            true => net.gateways().take(1).collect(),
            false => self.resolvers.upstreams(),
        };
        process::write_etc_files(
            &container.etc_dir,
            &container.hostname,
            &container.name,
            Some((ip, &resolvers)),
        )
    }

    /// Starts a container's command in the background, its output to its log, once its
    /// process is recorded (`pidfile_path`).
    fn start_command(&self, container: &mut Container) -> Result<()> {
        let log = container.log.get_or_insert_with(|| log_path(&self.config.state_dir, &container.id));
        let env = process::container_env(&container.hostname, &container.env);
        let detached = process::Detached {
            netns: &container.netns,
            hostname: &container.hostname,
            etc_dir: &container.etc_dir,
            env: &env,
            workdir: container.workdir.as_deref(),
            log,
        };
        let record = pidfile_path(&self.config.state_dir, &container.id);
        let (pid, start_time) = process::spawn_detached(&container.command, &detached, |pid, start_time| {
            process::write_record(&record, pid, start_time)
        })?;
        container.started(pid, start_time);
        Ok(())
    }

    /// Releases a container's network attachments (its command ended): its endpoints,
    /// with their addresses, veths, map entries, ports and DNS names, and the firewall
    /// rule sets no port uses any more. The container keeps what it asked for, for its
    /// next start. Safe to call on a container without endpoints.
    pub(super) async fn release_networks(
        &mut self,
        container: &Container,
        removal: InterfaceRemoval,
    ) -> Result<()> {
        let endpoints: Vec<_> = self.state.endpoints_of(&container.id).cloned().collect();
        if endpoints.is_empty() {
            return Ok(());
        }
        let mut errors = vec![];
        for endpoint in &endpoints {
            if let Err(e) = self.detach(endpoint, removal).await {
                errors.push(format!("{e:#}"));
            }
        }
        if let Err(e) = self.sync_firewall() {
            errors.push(format!("{e:#}"));
        }
        if errors.is_empty() { Ok(()) } else { bail!(errors.join("; ")) }
    }

    /// Removes everything a container owns: its endpoints (which leave the state), its
    /// namespace and its /etc files; safe to call on a half-made container.
    async fn teardown_container(&mut self, container: &Container) -> Result<()> {
        let mut errors = vec![];
        let owns_sandbox = container.network_mode.owns_sandbox();
        // The namespace goes below, so its interfaces can go after the answer.
        let removal = if owns_sandbox { InterfaceRemoval::Later } else { InterfaceRemoval::Now };
        if let Err(e) = self.release_networks(container, removal).await {
            errors.push(format!("{e:#}"));
        }
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

    pub(super) async fn remove_container(&mut self, name: &str, force: bool) -> Result<Value> {
        let container = self.state.container(name).ok_or_else(|| no_such_container(name))?.clone();
        let joined: Vec<_> = self
            .state
            .containers
            .iter()
            .filter(|c| c.network_mode == NetworkMode::Container { id: container.id.clone() })
            .filter(|c| c.is_running())
            .map(|c| c.name.clone())
            .collect();
        if !joined.is_empty() {
            bail!(
                "container {} shares its network namespace with {} (running); stop or remove those first",
                container.name,
                joined.join(", ")
            );
        }
        if let Status::Running { pid, start_time } = container.status
            && !force
            && process::is_alive(pid, start_time)
        {
            bail!(
                "container {} is running; stop it first (`dataplane stop {}`) or use `dataplane rm -f`",
                container.name,
                container.name
            );
        }
        // Saved first: a crash halfway leaves the rest of the removal to the next start,
        // where it left a record whose namespace or interfaces were gone.
        self.intend(Intent::Remove { container_id: container.id.clone() })?;
        if let Err(e) = self.end_and_teardown(&container).await {
            self.abandon(&container.id);
            return Err(e);
        }
        self.state.containers.retain(|c| c.id != container.id);
        self.done(&container.id);
        // Only drops the rule sets no port uses any more.
        if let Err(e) = self.sync_firewall() {
            log::warn!("removing container {}: {e:#}", container.name);
        }
        remove_files(&self.config.state_dir, &container);
        self.save()?;
        log::info!("removed container {} ({})", container.name, &container.id[..12]);
        Ok(json!(container.name))
    }

    /// Kills a container's command, if it runs, and removes everything it owns.
    async fn end_and_teardown(&mut self, container: &Container) -> Result<()> {
        if let Status::Running { pid, start_time } = container.status
            && process::is_alive(pid, start_time)
            && !process::kill_all(pid, start_time, KILL_WAIT).await
        {
            log::warn!(
                "container {}: its processes had not ended {KILL_WAIT:?} after SIGKILL; removing it anyway",
                container.name
            );
        }
        self.teardown_container(container).await
    }

    async fn process_exited(&mut self, id: &str, pid: i32, code: Option<i32>) -> Result<()> {
        let Some(container) = self.state.containers.get(id) else {
            return Ok(());
        };
        if !matches!(container.status, Status::Running { pid: p, .. } if p == pid) {
            return Ok(());
        }
        self.command_ended(id, code).await
    }

    /// The CLI's report that the command of a foreground `run` started as `pid`: the
    /// container is recorded running, unless it is already (a start of the daemon adopted
    /// the command from its record, or a report that went unanswered is made again).
    /// Returns whether it was recorded now, and so wants a watch.
    pub(super) fn foreground_started(&mut self, id: &str, pid: i32) -> Result<bool> {
        let container = self.container_by_id(id)?;
        match container.status {
            Status::Running { pid: recorded, .. } if recorded == pid => return Ok(false),
            Status::Created => {}
            _ => bail!(
                "container {} is not waiting for its command to start (it ended, or was started again)",
                container.name
            ),
        }
        let start_time = process::start_time(pid).ok_or_else(|| anyhow!("process {pid} is not running"))?;
        container.started(pid, start_time);
        self.save()?;
        Ok(true)
    }

    /// The CLI's report that the command of a foreground `run` ended with `code`. A report
    /// of another process than the one recorded running is stale (the container was
    /// started again meanwhile, in the background): it changes nothing.
    pub(super) async fn foreground_exited(&mut self, id: &str, pid: Option<i32>, code: i32) -> Result<()> {
        if let Status::Running { pid: running, .. } = self.container_by_id(id)?.status
            && Some(running) != pid
        {
            return Ok(());
        }
        self.command_ended(id, Some(code)).await
    }

    /// Records the end of a container's command with its exit code, if known (a code
    /// known already stays), and releases its networks; removes it if it asked (`--rm`).
    pub(super) async fn command_ended(&mut self, id: &str, code: Option<i32>) -> Result<()> {
        let container = self.container_by_id(id)?;
        let code = match container.status {
            Status::Exited { code: Some(known) } => Some(known),
            _ => code,
        };
        container.exited(code);
        let container = container.clone();
        if let Err(e) = self.release_networks(&container, InterfaceRemoval::Now).await {
            log::warn!("container {}: releasing its networks: {e:#}", container.name);
        }
        self.save()?;
        let code = code.map_or("unknown".to_string(), |c| c.to_string());
        log::info!("container {} exited ({code}); its addresses are released", container.name);
        remove_pidfile(&self.config.state_dir, id);
        if container.auto_remove {
            self.remove_container(id, true).await?;
        }
        Ok(())
    }

    /// `start`: runs a container's command again, in the background, on the networks
    /// and with the ports it asked for; returns it started. A running container is left
    /// as it is (`None`).
    pub(super) async fn start_container(&mut self, name: &str) -> Result<Option<Container>> {
        let mut container = self.state.container(name).ok_or_else(|| no_such_container(name))?.clone();
        match &container.status {
            Status::Running { pid, start_time } if process::is_alive(*pid, *start_time) => return Ok(None),
            Status::Dead { reason } => bail!(
                "container {} is dead ({reason}); remove it (`dataplane rm {}`) and run it again",
                container.name,
                container.name
            ),
            _ => {}
        }
        if let NetworkMode::Container { id } = &container.network_mode {
            match self.state.containers.get(id) {
                None => bail!(
                    "container {} joins the network of a container that was removed ({}); remove {} and run it again",
                    container.name,
                    &id[..12],
                    container.name
                ),
                Some(target) if !target.is_running() => bail!(
                    "container {} joins the network of container {}, which is not running; start {} first",
                    container.name,
                    target.name,
                    target.name
                ),
                Some(_) => {}
            }
        }
        // Saved first: a crash before the start is recorded leaves a command that nothing
        // watches, for the next start of the daemon to end (`undo_start`).
        self.intend(Intent::Start { container_id: container.id.clone() })?;
        if let Err(e) = self.start_in_place(&mut container).await {
            if let Err(undo) = self.release_networks(&container, InterfaceRemoval::Now).await {
                log::warn!("undoing the start of container {}: {undo:#}", container.name);
            }
            self.abandon(&container.id);
            return Err(e.context(format!("starting container {}", container.name)));
        }
        self.state.containers.replace(container.clone());
        self.done(&container.id);
        self.save()?;
        log::info!("started container {} again: {}", container.name, self.addresses_of(&container.id));
        Ok(Some(container))
    }

    async fn start_in_place(&mut self, container: &mut Container) -> Result<()> {
        // A container created for a foreground run whose command never started holds
        // the endpoints of that run: they go, to be made again as for any start.
        self.release_networks(container, InterfaceRemoval::Now).await?;
        if container.network_mode.owns_sandbox() && !netns::is_namespace(&container.netns) {
            // Gone with a reboot of the host, say: a stopped container has nothing in it.
            netns::create(&container.netns)?;
        }
        self.join_networks(container).await?;
        self.start_command(container)
    }

    /// Undoes a `start` that a crash cut short, unless the container was recorded
    /// running: ends what runs in its namespace and releases its networks.
    pub(super) async fn undo_start(&mut self, container_id: &str) -> Result<()> {
        let Some(container) = self.state.containers.get(container_id).cloned() else { return Ok(()) };
        if container.is_running() {
            return Ok(());
        }
        log::warn!("container {}: its start was cut short; ending what it started", container.name);
        if container.network_mode.owns_sandbox() {
            empty_namespace(&container.netns).await?;
        }
        self.release_networks(&container, InterfaceRemoval::Now).await
    }

    /// `network connect`: one more interface (eth1, eth2, ...) in a container, with an
    /// address of the network, without touching its other interfaces.
    pub(super) async fn connect_network(
        &mut self,
        network: &str,
        name: &str,
        ip: Option<Ipv4Addr>,
        ip6: Option<Ipv6Addr>,
        aliases: Vec<String>,
    ) -> Result<Value> {
        let net = self.network(network)?.clone();
        // Before the container's checks, as Docker: an alias on the default network is
        // refused even for a container already there.
        check_aliases(&net, &aliases)?;
        let mut container = self.state.container(name).ok_or_else(|| no_such_container(name))?.clone();
        if container.network_mode != NetworkMode::Bridge {
            bail!(
                "container {} shares the host's or another container's network; it cannot join networks",
                container.name
            );
        }
        if !container.is_running() {
            bail!(
                "container {} is not running; start it first (`dataplane start {}`), then connect it",
                container.name,
                container.name
            );
        }
        if container.networks.iter().any(|a| a.network_id == net.id) {
            bail!("container {} is already connected to network {}", container.name, net.name);
        }
        let ifname = (0..)
            .map(|i| format!("eth{i}"))
            .find(|n| !container.networks.iter().any(|a| &a.ifname == n))
            .expect("some ethN is free");
        let endpoint = self
            .attach(EndpointSpec {
                ip,
                ip6,
                aliases: aliases.clone(),
                ..own_endpoint(&container, &net, ifname)
            })
            .await
            .map_err(|e| e.context(format!("connecting {} to {}", container.name, net.name)))?;
        container.networks.push(Attachment {
            network_id: net.id.clone(),
            ifname: endpoint.ifname.clone(),
            ip,
            ip6,
            mac: None,
            aliases,
            publish: vec![],
        });
        self.state.containers.replace(container);
        self.save()?;
        Ok(json!({"interface": endpoint.ifname, "ip": endpoint.ip, "ip6": endpoint.ip6}))
    }

    /// `network disconnect`: removes the container's interface on that network.
    pub(super) async fn disconnect_network(&mut self, network: &str, name: &str) -> Result<Value> {
        let net = self.network(network)?.clone();
        let mut container = self.state.container(name).ok_or_else(|| no_such_container(name))?.clone();
        let Some(wanted) = container.networks.iter().find(|a| a.network_id == net.id).cloned() else {
            bail!("container {} is not connected to network {}", container.name, net.name);
        };
        if !wanted.publish.is_empty() {
            bail!(
                "container {} publishes ports on its {} address; remove the container to unpublish them",
                container.name,
                net.name
            );
        }
        // A stopped container has no endpoint there, only the wish to join at its start.
        let endpoint = self.state.endpoints_of(&container.id).find(|e| e.network_id == net.id).cloned();
        if let Some(endpoint) = endpoint {
            self.detach(&endpoint, InterfaceRemoval::Now).await?;
        }
        container.networks.retain(|a| a.network_id != net.id);
        self.state.containers.replace(container);
        self.save()?;
        Ok(json!(wanted.ifname))
    }
}

/// An endpoint of one of our containers on `net`, as `ifname`: in the container's
/// namespace, an address and a MAC of the network's choosing, no aliases, no ports.
fn own_endpoint<'a>(container: &'a Container, net: &'a Network, ifname: String) -> EndpointSpec<'a> {
    EndpointSpec {
        network: net,
        owner: Owner::Container { id: container.id.clone() },
        owner_name: &container.name,
        netns: &container.netns,
        ifname,
        ip: None,
        ip6: None,
        mac: None,
        aliases: vec![],
        publish: &[],
    }
}

/// Waits for the container's process to end in the background: records it, and removes the container if it asked.
pub(super) fn watch(core: Shared, id: String, pid: i32) {
    tokio::spawn(async move {
        let code = process::wait_exit(pid).await;
        let mut c = core.lock().await;
        if let Err(e) = c.process_exited(&id, pid, code).await {
            log::warn!("container {id}: {e:#}");
        }
    });
}

pub(super) async fn stop(core: &Shared, name: &str, grace: Duration) -> Result<Value> {
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

pub(super) fn log_path(state_dir: &Path, id: &str) -> PathBuf {
    state_dir.join("logs").join(format!("{id}.log"))
}

/// Removes the files a container leaves beside the state: its log and its pidfile.
fn remove_files(state_dir: &Path, container: &Container) {
    remove_log(state_dir, container);
    remove_pidfile(state_dir, &container.id);
}

/// Where the process of a container's command is recorded, apart from the state
/// (`process::write_record`): written before the command runs, by the daemon for a
/// detached command and by the CLI for a foreground one, so that a crash before the
/// state's save, or a state that lost its last snapshot, leaves no command running that
/// the next start cannot find (`restore::settle_recorded_processes`).
pub(super) fn pidfile_path(state_dir: &Path, id: &str) -> PathBuf {
    state_dir.join("processes").join(id)
}

pub(super) fn remove_pidfile(state_dir: &Path, id: &str) {
    let _ = std::fs::remove_file(pidfile_path(state_dir, id));
}

/// The recorded processes of containers' commands: container ID, PID, start time. A
/// file that is no record (a crash cut its write short) is removed: its process never ran
/// the command (the command waits for the write).
pub(super) fn recorded_processes(state_dir: &Path) -> Vec<(String, i32, u64)> {
    let Ok(files) = std::fs::read_dir(state_dir.join("processes")) else { return vec![] };
    let mut recorded = vec![];
    for path in files.filter_map(|e| e.ok()).map(|e| e.path()) {
        let Some(id) = path.file_name().and_then(|n| n.to_str()).map(String::from) else { continue };
        let content = std::fs::read_to_string(&path).unwrap_or_default();
        match process::read_record(&content) {
            Some((pid, start_time)) => recorded.push((id, pid, start_time)),
            None => {
                log::warn!("{}: no process record ({content:?}); removing it", path.display());
                let _ = std::fs::remove_file(&path);
            }
        }
    }
    recorded
}

/// Removes a container's log: where it says, or where versions that did not say put it.
fn remove_log(state_dir: &Path, container: &Container) {
    let log = container.log.clone().unwrap_or_else(|| log_path(state_dir, &container.id));
    let _ = std::fs::remove_file(log);
}

/// The name of a container's namespace pin: `dp-` and the first 12 digits of its ID.
fn pin_name(id: &str) -> String {
    format!("dp-{}", &id[..12])
}

/// Whether a pin of the pin dir is named as ours are (`pin_name`). The pin dir is shared
/// (`/run/netns` by default, where `ip netns` and runtimes pin theirs too), so nothing
/// else there is ever ours to remove.
pub(super) fn is_container_pin(name: &str) -> bool {
    name.strip_prefix("dp-").is_some_and(|digits| is_id_prefix(digits, 12))
}

/// Empties a namespace of ours that no record holds (a crash left it): kills the
/// processes in it and deletes its interfaces, whose host ends (veths) go with them. The
/// processes are ours for living in it, whatever they are called.
pub(super) async fn empty_namespace(netns: &Path) -> Result<()> {
    if !netns::is_namespace(netns) {
        return Ok(());
    }
    let killed = process::kill_in_namespace(netns, KILL_WAIT).await?;
    if killed > 0 {
        log::warn!("{}: killed {killed} process(es) no container owned", netns.display());
    }
    let inside = Netlink::connect_in(netns)?;
    for name in inside.link_names().await? {
        if name != "lo" {
            inside.delete_link(&name).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_pins_named_as_ours_are_taken_for_ours() {
        let id = crate::state::new_id();
        assert!(is_container_pin(&pin_name(&id)));
        for foreign in
            ["dp-host", "cni-0a1b2c3d4e5f", "dp-0A1B2C3D4E5F", "dp-0a1b2c3d4e5", "dp-0a1b2c3d4e5f0", "web"]
        {
            assert!(!is_container_pin(foreign), "{foreign}");
        }
    }
}
