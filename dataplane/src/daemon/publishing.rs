//! Published ports of an endpoint: the host ports reserved for them, their PUBLISHED
//! entries (with the host-only flag), and the firewall rule sets those entries point at;
//! the firewall of the endpoint's own addresses where the outside reaches every port
//! (unprotected networks: FIREWALL_DIRECT); and the `firewall` verbs that change the
//! rules. It never builds or removes an interface and never adds or drops an endpoint: it
//! is handed one that exists.

use std::{
    collections::{BTreeMap, HashSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use anyhow::{Result, anyhow, bail};
use dataplane_common::{Backend, PublishKey};
use serde_json::{Value, json};

use super::Core;
use crate::{
    api::{DaemonError, ErrorKind},
    firewall::{self, RuleSet},
    maps,
    ports::{self, Bind, PortMapping},
    state::{Endpoint, GatewayMode, Owner, State},
};

/// Whether the runtime that attached the endpoint may bind its published host ports
/// itself: podman does right after the CNI ADD, and fails the container when the
/// daemon's reservation refuses it (`cannot listen on the TCP port: address already in
/// use`). Our own containers' ports are the daemon's alone.
fn runtime_binds_ports(endpoint: &Endpoint) -> bool {
    matches!(endpoint.owner, Owner::Cni { .. })
}

impl Core {
    /// Whether a port published on `ip` is for the host's own processes only: `ip` is a
    /// loopback address, or one the host holds on loopback interfaces only (moby#45610:
    /// frames from the uplink could reach such ports when its machines routed them here).
    async fn host_only(&self, ip: IpAddr) -> Result<bool> {
        Ok(ip.is_loopback() || (!ip.is_unspecified() && !self.netlink.holds_off_loopback(ip).await?))
    }

    /// The host-only addresses among `mappings`' host addresses, each asked of the kernel
    /// once: a port range on one address is one question, not one per port.
    async fn host_only_addresses(&self, mappings: &[PortMapping]) -> Result<HashSet<IpAddr>> {
        let mut host_only = HashSet::new();
        let addresses: HashSet<IpAddr> = mappings.iter().map(|m| m.host_ip).collect();
        for ip in addresses {
            if self.host_only(ip).await? {
                host_only.insert(ip);
            }
        }
        Ok(host_only)
    }

    /// Reserves the host ports and fills PUBLISHED, all or nothing (map entries written
    /// before a failure go with `unpublish`); records the mappings (with the ports chosen
    /// for `host_port` 0) in the endpoint. `owner` is what firewall rules call the
    /// endpoint's owner.
    pub(super) async fn publish(
        &mut self,
        endpoint: &mut Endpoint,
        owner: &str,
        host_index: u32,
        wanted: &[PortMapping],
    ) -> Result<()> {
        if host_index == 0 && !wanted.is_empty() {
            bail!("published ports need a bridge network; this driver has no host side to publish through");
        }
        let mut held = vec![];
        let mut resolved: Vec<PortMapping> = vec![];
        for asked in wanted {
            // `-p 8080:80`: on each family the endpoint has, as Docker.
            let mappings = asked.on_families(endpoint.ip.is_some(), endpoint.ip6.is_some());
            for mapping in &mappings {
                self.check_publishable(endpoint, mapping)?;
            }
            // Reservations made so far are released when `held` drops on an error.
            let invalid = |e: anyhow::Error| DaemonError::new(ErrorKind::Invalid, format!("{e:#}"));
            for hold in ports::holds(&mappings) {
                let port = if runtime_binds_ports(endpoint) && hold.port != 0 {
                    held.extend(
                        ports::reserve_beside_runtime(hold.bind, hold.port, hold.proto).map_err(invalid)?,
                    );
                    hold.port
                } else {
                    let (reservation, port) =
                        ports::reserve(hold.bind, hold.port, hold.proto).map_err(invalid)?;
                    held.push(reservation);
                    port
                };
                resolved
                    .extend(hold.mappings.iter().map(|&i| PortMapping { host_port: port, ..mappings[i] }));
            }
        }
        let rule_sets = self.rule_sets_of(owner, endpoint, &resolved)?;
        let host_only = self.host_only_addresses(&resolved).await?;
        endpoint.ports = resolved;
        self.reservations.insert(endpoint.id.clone(), held);
        for (mapping, rule_set) in endpoint.ports.iter().zip(rule_sets) {
            let host_only = host_only.contains(&mapping.host_ip);
            self.set_published(endpoint, mapping, host_index, rule_set, host_only)?;
        }
        Ok(())
    }

    /// Refuses a mapping on a family the endpoint lacks or its network isolates, or on a
    /// port of the masquerade range.
    fn check_publishable(&self, endpoint: &Endpoint, mapping: &PortMapping) -> Result<()> {
        // Docker publishes nothing of a container on internal networks only, silently; an
        // isolated family (always an internal network's) says so instead.
        if let Some(net) = self.state.network_by_id(&endpoint.network_id)
            && net.bridge_options.isolated(mapping.host_ip.is_ipv6())
        {
            let family = if mapping.host_ip.is_ipv6() { "ipv6" } else { "ipv4" };
            bail!(DaemonError::new(
                ErrorKind::Invalid,
                format!(
                    "-p {mapping}: network {} is isolated (gateway_mode_{family}=isolated): nothing but its \
                     own containers reaches them, so nothing can be published there; drop -p, or publish \
                     from a network that is not isolated",
                    net.name
                )
            ));
        }
        if mapping.host_ip.is_ipv4() && endpoint.ip.is_none() {
            bail!(DaemonError::new(
                ErrorKind::Invalid,
                format!(
                    "-p {mapping}: the network is IPv6-only, so the container has no IPv4 address to publish; \
                     publish on an IPv6 address, as -p [::]:{}:{}",
                    mapping.host_port, mapping.container_port
                )
            ));
        }
        if mapping.host_ip.is_ipv6() && endpoint.ip6.is_none() {
            bail!(DaemonError::new(
                ErrorKind::Invalid,
                format!(
                    "-p {mapping}: the network has no IPv6, so the container has no IPv6 address to publish; \
                     publish on an IPv4 address or attach it to a network created with --ipv6"
                )
            ));
        }
        if let Some((lo, hi)) = self.masquerade.as_ref().map(|m| m.ports)
            && (lo..=hi).contains(&mapping.host_port)
        {
            bail!(DaemonError::new(
                ErrorKind::Invalid,
                format!(
                    "host port {} is in the masquerade port range {lo}-{hi}; publish on another port",
                    mapping.host_port
                )
            ));
        }
        Ok(())
    }

    /// Publishes an endpoint's ports again after a restart. The rule sets an earlier run
    /// installed keep their IDs: a published port is never unfiltered while the daemon
    /// restarts. A host process may have taken a port while we were away: the rest are
    /// published (a runtime's endpoint's ports all are: the runtime holds them itself).
    pub(super) async fn republish(
        &mut self,
        endpoint: &Endpoint,
        owner: &str,
        host_index: u32,
    ) -> Result<()> {
        let rule_sets = self.rule_sets_of(owner, endpoint, &endpoint.ports)?;
        let host_only = self.host_only_addresses(&endpoint.ports).await?;
        let mut held = vec![];
        // Last first: a pair that cannot be held together is tried again one by one.
        let mut pending: Vec<(Bind, Vec<usize>)> =
            ports::holds(&endpoint.ports).into_iter().rev().map(|h| (h.bind, h.mappings)).collect();
        while let Some((bind, indices)) = pending.pop() {
            let first = &endpoint.ports[indices[0]];
            let reservation = if runtime_binds_ports(endpoint) {
                // The runtime's own socket may hold the port since the ADD (podman's conmon
                // listens on it, and then refuses our bind too): the port is still its.
                Ok(ports::reserve_beside_runtime(bind, first.host_port, first.proto).unwrap_or(None))
            } else {
                ports::reserve(bind, first.host_port, first.proto).map(|(r, _)| Some(r))
            };
            match reservation {
                Ok(reservation) => {
                    held.extend(reservation);
                    for i in indices {
                        let mapping = &endpoint.ports[i];
                        let host_only = host_only.contains(&mapping.host_ip);
                        self.set_published(endpoint, mapping, host_index, rule_sets[i], host_only)?;
                    }
                }
                // A host process took one family's port while we were away: the other
                // family's is still published, on a socket of its own.
                Err(_) if indices.len() > 1 => pending.extend(
                    indices.iter().rev().map(|&i| (Bind::Address(endpoint.ports[i].host_ip), vec![i])),
                ),
                Err(e) => log::warn!("{} of {owner}: {first} not restored: {e:#}", endpoint.ifname),
            }
        }
        self.reservations.insert(endpoint.id.clone(), held);
        Ok(())
    }

    /// Points one published port at the endpoint, through its rule sets (`rule_sets_of`).
    fn set_published(
        &mut self,
        endpoint: &Endpoint,
        mapping: &PortMapping,
        host_index: u32,
        [rule_set, own_port_rule_set]: [u16; 2],
        host_only: bool,
    ) -> Result<()> {
        let addr: IpAddr = match (mapping.host_ip, endpoint.ip6) {
            (IpAddr::V4(_), _) => match endpoint.ip {
                Some(ip) => ip.into(),
                None => bail!(
                    "{} of {} has no IPv4 address to publish {mapping} to",
                    endpoint.ifname,
                    endpoint.owner
                ),
            },
            (IpAddr::V6(_), Some(ip6)) => ip6.into(),
            (IpAddr::V6(_), None) => bail!("{} has no IPv6 address to publish {mapping} on", endpoint.ifname),
        };
        let backend = Backend {
            addr: maps::ip_address(addr),
            port: mapping.container_port.to_be(),
            rule_set,
            host_ifindex: host_index,
            mac: endpoint.mac.0,
            flags: if host_only { Backend::HOST_ONLY } else { 0 },
            _pad: 0,
        };
        self.datapath.set_published(publish_key(mapping), backend)?;
        match routed_key(routed_addrs(&self.state, endpoint), mapping) {
            Some(key) if !host_only => {
                self.datapath.set_published(key, Backend { rule_set: own_port_rule_set, ..backend })
            }
            _ => Ok(()),
        }
    }

    /// Releases an endpoint's host ports and their map entries.
    pub(super) fn unpublish(&mut self, endpoint: &Endpoint) -> Result<()> {
        let keys: Vec<_> = publish_keys(&self.state, endpoint).collect();
        for key in keys {
            self.datapath.remove_published(&key)?;
        }
        self.reservations.remove(&endpoint.id);
        Ok(())
    }

    /// The firewall rule sets of `endpoint`'s `mappings` (`mapping_rule_sets`), installed
    /// in the trie. `owner` is what rules call the owner of an endpoint (a container's
    /// name).
    fn rule_sets_of(
        &mut self,
        owner: &str,
        endpoint: &Endpoint,
        mappings: &[PortMapping],
    ) -> Result<Vec<[u16; 2]>> {
        let mut compiler = self.state.firewall.compiler();
        let routed = routed_addrs(&self.state, endpoint);
        let sets: Vec<_> =
            mappings.iter().flat_map(|m| mapping_rule_sets(&mut compiler, owner, routed, m)).collect();
        let ids = self.firewall.install(&mut self.datapath, &sets)?;
        Ok(ids.chunks(2).map(|pair| [pair[0], pair[1]]).collect())
    }

    /// The firewall of `endpoint`'s own addresses whose every port the outside reaches
    /// (`unprotected_addrs`): the rules that apply to `owner`'s ports there, by port,
    /// written before the endpoint is reachable.
    pub(super) fn set_direct_firewall(&mut self, endpoint: &Endpoint, owner: &str) -> Result<()> {
        let mut compiler = self.state.firewall.compiler();
        for addr in unprotected_addrs(&self.state, endpoint) {
            let direct = compiler.direct(owner, addr.is_ipv6());
            self.firewall.set_direct(&mut self.datapath, addr, &direct)?;
        }
        Ok(())
    }

    /// Removes the firewall of `endpoint`'s own addresses (`set_direct_firewall`), once it
    /// is no longer reachable.
    pub(super) fn clear_direct_firewall(&mut self, endpoint: &Endpoint) -> Result<()> {
        endpoint.addresses().try_for_each(|addr| self.firewall.set_direct(&mut self.datapath, addr, &[]))
    }

    /// Brings the firewall tries, the published ports' rule sets and the firewall of
    /// containers' own addresses in line with the rules and the endpoints of the state:
    /// new sets are written before ports point at them, and sets no port uses any more go
    /// last.
    pub(super) fn sync_firewall(&mut self) -> Result<()> {
        let mut compiler = self.state.firewall.compiler();
        let names = self.state.owner_names();
        let (mut keys, mut sets, mut direct) = (vec![], vec![], BTreeMap::new());
        for endpoint in &self.state.endpoints {
            let owner = names.of(&endpoint.owner);
            let routed = routed_addrs(&self.state, endpoint);
            for mapping in &endpoint.ports {
                keys.push([Some(publish_key(mapping)), routed_key(routed, mapping)]);
                sets.extend(mapping_rule_sets(&mut compiler, &owner, routed, mapping));
            }
            for addr in unprotected_addrs(&self.state, endpoint) {
                direct.insert(addr, compiler.direct(&owner, addr.is_ipv6()));
            }
        }
        let ids = self.firewall.install(&mut self.datapath, &sets)?;
        for (keys, ids) in keys.into_iter().zip(ids.chunks(2)) {
            for (key, id) in keys.into_iter().zip(ids) {
                if let Some(key) = key {
                    self.datapath.set_published_rule_set(key, *id)?;
                }
            }
        }
        self.firewall.sync_direct(&mut self.datapath, &direct)?;
        let direct_sets = direct.into_values().flatten().flat_map(|(_, blocks)| blocks).map(|(_, set)| set);
        self.firewall.retain(&mut self.datapath, &sets.into_iter().chain(direct_sets).collect());
        Ok(())
    }

    /// `firewall add`: appends a rule, all or nothing. A rule naming a container keeps
    /// its name, as Docker users think of it, and applies to whatever container has that
    /// name.
    pub(super) fn add_firewall_rule(&mut self, mut spec: firewall::RuleSpec) -> Result<Value> {
        spec.check()?;
        if let Some(name) = &spec.container {
            spec.container = Some(self.firewall_target(name)?);
        }
        let earlier = self.state.firewall.clone();
        let rule = self.state.firewall.add(spec)?;
        let applied = self.datapath.reset_firewall_hits(rule.slot).and_then(|()| self.sync_firewall());
        self.keep_firewall_or_undo(applied, earlier)?;
        Ok(serde_json::to_value(rule)?)
    }

    /// What a rule's `--container` names, as the rules match owners (`OwnerNames`): one
    /// of our containers by its name, or a Docker container by its endpoint, `docker:`
    /// and the start of its EndpointID. Docker tells a network plugin neither the
    /// container's name nor its ID (CreateEndpoint and Join carry the EndpointID, the
    /// sandbox's key and the port maps only).
    fn firewall_target(&self, name: &str) -> Result<String> {
        let docker_hint = "a Docker container is named docker:ENDPOINT_ID \
            (`docker inspect -f '{{range .NetworkSettings.Networks}}{{.EndpointID}} {{end}}' NAME`)";
        if let Some(prefix) = name.strip_prefix("docker:") {
            let owners: Vec<String> = self
                .state
                .endpoints
                .iter()
                .filter(
                    |e| matches!(&e.owner, Owner::Docker { endpoint_id } if endpoint_id.starts_with(prefix)),
                )
                .map(|e| e.owner.to_string())
                .collect();
            return match owners.as_slice() {
                _ if prefix.is_empty() => {
                    bail!("--container docker: needs the start of the EndpointID; {docker_hint}")
                }
                [owner] => Ok(owner.clone()),
                [] => {
                    bail!("--container {name}: no Docker endpoint's ID starts with {prefix:?}; {docker_hint}")
                }
                _ => bail!("--container {name}: several Docker endpoints' IDs start so; give more of the ID"),
            };
        }
        let container = self.state.container(name).ok_or_else(|| {
            anyhow!("--container {name}: no such container; `dataplane ps -a` lists ours, and {docker_hint}")
        })?;
        Ok(container.name.clone())
    }

    /// `firewall rm`: removes rules by ID, all or none.
    pub(super) fn remove_firewall_rules(&mut self, ids: &[u32]) -> Result<Value> {
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
}

/// Every PUBLISHED key of `endpoint`'s ports (`publish_key` and `routed_key`).
pub(super) fn publish_keys<'a>(
    state: &State,
    endpoint: &'a Endpoint,
) -> impl Iterator<Item = PublishKey> + use<'a> {
    let routed_addr = routed_addrs(state, endpoint);
    endpoint
        .ports
        .iter()
        .flat_map(move |m| [Some(publish_key(m)), routed_key(routed_addr, m)].into_iter().flatten())
}

/// The rule sets of a mapping's PUBLISHED keys: its host port's (`publish_key`), and on a
/// routed family its container port's (`routed_key`: the container's own address, where
/// clients address the container port; none elsewhere).
fn mapping_rule_sets(
    compiler: &mut firewall::Compiler,
    owner: &str,
    routed: RoutedAddrs,
    mapping: &PortMapping,
) -> [RuleSet; 2] {
    let own_port = match routed_key(routed, mapping) {
        Some(_) => {
            compiler.rule_set_at(owner, mapping.proto, mapping.container_port, mapping.host_ip.is_ipv6())
        }
        None => RuleSet::default(),
    };
    [compiler.rule_set(owner, mapping), own_port]
}

/// The endpoint's addresses of the families its network leaves unprotected
/// (`gateway_mode_ipv4=nat-unprotected`, `_ipv6`): the outside reaches their every port.
fn unprotected_addrs(state: &State, endpoint: &Endpoint) -> Vec<IpAddr> {
    let Some(net) = state.network_by_id(&endpoint.network_id) else {
        return vec![];
    };
    endpoint.addresses().filter(|addr| net.unprotected(addr.is_ipv6())).collect()
}

/// The endpoint's addresses of the families its network routes (`gateway_mode_ipv4=routed`,
/// `gateway_mode_ipv6=routed`).
#[derive(Clone, Copy, Default)]
struct RoutedAddrs {
    v4: Option<Ipv4Addr>,
    v6: Option<Ipv6Addr>,
}

fn routed_addrs(state: &State, endpoint: &Endpoint) -> RoutedAddrs {
    let Some(net) = state.network_by_id(&endpoint.network_id) else {
        return RoutedAddrs::default();
    };
    let modes = &net.bridge_options;
    RoutedAddrs {
        v4: endpoint.ip.filter(|_| modes.gateway_mode_ipv4 == GatewayMode::Routed),
        v6: endpoint.ip6.filter(|_| modes.gateway_mode_ipv6 == GatewayMode::Routed),
    }
}

/// On a network in routed mode, a mapping of a routed family opens its container port on
/// the container's own address (`routed_addrs`), where the outside reaches it by route, as
/// Docker's routed mode does; the host port keeps working too. A port published on a
/// loopback address stays the host's.
fn routed_key(routed: RoutedAddrs, mapping: &PortMapping) -> Option<PublishKey> {
    if mapping.host_ip.is_loopback() {
        return None;
    }
    let addr: IpAddr = match mapping.host_ip {
        IpAddr::V4(_) => routed.v4?.into(),
        IpAddr::V6(_) => routed.v6?.into(),
    };
    Some(PublishKey {
        addr: maps::ip_address(addr),
        port: mapping.container_port.to_be(),
        proto: mapping.proto.number(),
        _pad: 0,
    })
}

/// The PUBLISHED key of a mapping's host address and port.
pub(super) fn publish_key(mapping: &PortMapping) -> PublishKey {
    PublishKey {
        addr: maps::ip_address(mapping.host_ip),
        port: mapping.host_port.to_be(),
        proto: mapping.proto.number(),
        _pad: 0,
    }
}
