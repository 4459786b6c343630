//! Endpoints: a namespace's attachment to a network, whoever made the namespace (our own
//! `run` today; a runtime through CNI or Docker's plugin next). Attaching gives it an
//! address from the network's IPAM and a MAC, builds its interface and map entries
//! through the network's driver, publishes its ports and filters its own addresses
//! (through `publishing`) and records the names the network's DNS answers for it besides
//! its owner's (aliases); detaching undoes all of it. It never creates or removes a
//! namespace and never looks at what a container is: the owner does both.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::Path,
};

use anyhow::{Result, bail};
use dataplane_common::IpAddress;

use super::{Core, check_name};
use crate::{
    api::{DaemonError, ErrorKind},
    drivers, ipam,
    ports::PortMapping,
    state::{DEFAULT_NETWORK, Endpoint, Intent, MacAddr, Network, Owner, new_id},
};

/// When a detached endpoint's interface goes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum InterfaceRemoval {
    /// Before the detach returns: its namespace lives on (`network disconnect`, a
    /// runtime's DEL, a stopped container kept for its next start).
    Now,
    /// Soon after, on the link reaper's thread: its namespace goes with it (`rm`), so
    /// nothing can use the interface meanwhile, and the kernel's slow veth deletion is
    /// out of the request's time.
    Later,
}

/// What to attach: an interface of a namespace to a network, for its owner.
pub(super) struct EndpointSpec<'a> {
    pub network: &'a Network,
    pub owner: Owner,
    /// What firewall rules call the owner (a container's name).
    pub owner_name: &'a str,
    pub netns: &'a Path,
    pub ifname: String,
    /// The address asked for; else the network's next free one.
    pub ip: Option<Ipv4Addr>,
    /// The IPv6 address asked for, on a network with IPv6; else its next free one.
    pub ip6: Option<Ipv6Addr>,
    /// The MAC asked for; else `02:42:` and the address.
    pub mac: Option<MacAddr>,
    pub aliases: Vec<String>,
    pub publish: &'a [PortMapping],
}

impl Core {
    /// Attaches a namespace to a network, all or nothing, and records the endpoint in the
    /// state (the caller saves). Its intent is saved before its veth is made, so that a
    /// restart after a crash halfway removes what was made by name.
    pub(super) async fn attach(&mut self, wanted: EndpointSpec<'_>) -> Result<Endpoint> {
        let net = wanted.network;
        if self.state.docker.is_dockers(&net.id) && !matches!(wanted.owner, Owner::Docker { .. }) {
            bail!(DaemonError::new(
                ErrorKind::Invalid,
                format!(
                    "network {} is Docker's: Docker's IPAM gives its addresses; put containers on it with `docker run --network`",
                    net.name
                )
            ));
        }
        check_aliases(net, &wanted.aliases)?;
        let overlay = Self::is_overlay(net);
        let ip = match (net.plan(), wanted.ip) {
            (None, None) => None,
            (None, Some(ip)) => bail!(DaemonError::new(
                ErrorKind::Invalid,
                format!(
                    "network {} is IPv6-only, so --ip {ip} has no place there; use --ip6 for its address",
                    net.name
                )
            )),
            (Some(_), wanted) if overlay => Some(self.lease_address(net, wanted).await?),
            (Some(plan), wanted) => {
                let used = self.state.used_addresses(&net.id);
                Some(
                    match wanted {
                        Some(ip) => plan.claim(ip, used),
                        None => plan.allocate(used),
                    }
                    .map_err(|e| {
                        DaemonError::new(ErrorKind::Invalid, format!("network {}: {e}", net.name))
                    })?,
                )
            }
        };
        let ip6 = match (net.ipv6, wanted.ip6) {
            (None, None) => None,
            (None, Some(ip6)) => bail!(DaemonError::new(
                ErrorKind::Invalid,
                format!(
                    "network {} has no IPv6, so --ip6 {ip6} has no place there; drop --ip6 or use a network made with --ipv6",
                    net.name
                )
            )),
            (Some(_), wanted) if overlay => Some(self.lease_address6(net, wanted).await?),
            (Some(plan), wanted) => {
                let used = self.state.used_addresses6(&net.id);
                Some(
                    match wanted {
                        Some(ip6) => plan.claim(ip6, &used),
                        None => plan.allocate(&used),
                    }
                    .map_err(|e| {
                        DaemonError::new(ErrorKind::Invalid, format!("network {}: {e}", net.name))
                    })?,
                )
            }
        };
        let id = match &wanted.owner {
            // Docker's endpoints keep Docker's EndpointID, which `docker inspect` shows.
            Owner::Docker { endpoint_id } => endpoint_id.clone(),
            Owner::Container { .. } | Owner::Cni { .. } => new_id(),
        };
        let mut endpoint = Endpoint {
            id,
            owner: wanted.owner,
            netns: wanted.netns.to_path_buf(),
            ifname: wanted.ifname,
            network_id: net.id.clone(),
            ip,
            ip6,
            mac: wanted.mac.unwrap_or_else(|| {
                let primary = ip.map(IpAddr::from).or(ip6.map(IpAddr::from));
                MacAddr(ipam::mac_for(primary.expect("a network has IPv4, IPv6 or both")))
            }),
            host_veth: self.unused_veth_name().await?,
            aliases: wanted.aliases,
            bridge: self.bridge_for(net)?,
            ports: vec![],
        };
        self.intend(Intent::Attach { endpoint: endpoint.clone() })?;
        let mut built = self.build(&mut endpoint, net, wanted.owner_name, wanted.publish).await;
        if overlay && built.is_ok() {
            built = self.announce(net, &endpoint, wanted.owner_name).await;
        }
        if let Err(e) = built {
            if let Err(undo) = self.dismantle(&endpoint, InterfaceRemoval::Now).await {
                log::warn!("undoing {} of {}: {undo:#}", endpoint.ifname, wanted.owner_name);
            }
            if overlay {
                self.give_back(&endpoint).await;
            }
            self.abandon(&endpoint.id);
            return Err(e);
        }
        self.state.endpoints.push(endpoint.clone());
        self.done(&endpoint.id);
        Ok(endpoint)
    }

    async fn build(
        &mut self,
        endpoint: &mut Endpoint,
        net: &Network,
        owner_name: &str,
        publish: &[PortMapping],
    ) -> Result<()> {
        let publishes = !publish.is_empty();
        self.set_direct_firewall(endpoint, owner_name)?;
        let host_index =
            drivers::connect(&self.netlink, &mut self.datapath, net, endpoint, publishes).await?;
        if publishes {
            self.publish(endpoint, owner_name, host_index, publish).await?;
        }
        Ok(())
    }

    /// Re-arms an endpoint after a restart: its interface (built again if it went away),
    /// its map entries and its published ports.
    pub(super) async fn rearm(&mut self, endpoint: &Endpoint, owner_name: &str) -> Result<()> {
        let net = self.network_by_id(&endpoint.network_id)?.clone();
        if endpoint.owner.configures_interface()
            && self.netlink.link_index(&endpoint.host_veth).await?.is_none()
        {
            // Its inner end went with it, and only the owner can put one in its namespace.
            bail!(
                "its veth {} is gone; connect the container again (`docker network disconnect` and `connect`, or restart it)",
                endpoint.host_veth
            );
        }
        let publishes = !endpoint.ports.is_empty();
        self.set_direct_firewall(endpoint, owner_name)?;
        let host_index =
            drivers::connect(&self.netlink, &mut self.datapath, &net, endpoint, publishes).await?;
        if publishes {
            self.republish(endpoint, owner_name, host_index).await?;
        }
        Ok(())
    }

    /// Publishes ports on an endpoint attached without them (Docker publishes after
    /// Join), all or nothing, and records them (the caller saves). An endpoint that
    /// publishes already keeps its ports: asked for the same again, nothing changes.
    pub(super) async fn publish_later(
        &mut self,
        endpoint_id: &str,
        owner_name: &str,
        wanted: &[PortMapping],
    ) -> Result<Endpoint> {
        let mut endpoint = self.endpoint_by_id(endpoint_id)?;
        if !endpoint.ports.is_empty() {
            if endpoint.ports == wanted {
                return Ok(endpoint);
            }
            bail!(DaemonError::new(
                ErrorKind::Invalid,
                format!("endpoint {endpoint_id} publishes ports already; unpublish them first")
            ));
        }
        let net = self.network_by_id(&endpoint.network_id)?.clone();
        let host_index = drivers::connect(&self.netlink, &mut self.datapath, &net, &endpoint, true).await?;
        if let Err(e) = self.publish(&mut endpoint, owner_name, host_index, wanted).await {
            if let Err(undo) = self.unpublish(&endpoint) {
                log::warn!("undoing the ports of {}: {undo:#}", endpoint.owner);
            }
            endpoint.ports.clear();
            if let Err(undo) =
                drivers::connect(&self.netlink, &mut self.datapath, &net, &endpoint, false).await
            {
                log::warn!("undoing the ports of {}: {undo:#}", endpoint.owner);
            }
            return Err(e);
        }
        self.record(&endpoint);
        Ok(endpoint)
    }

    /// Unpublishes every port of an endpoint, which stays attached (the caller saves).
    pub(super) async fn unpublish_all(&mut self, endpoint_id: &str) -> Result<()> {
        let mut endpoint = self.endpoint_by_id(endpoint_id)?;
        if endpoint.ports.is_empty() {
            return Ok(());
        }
        self.unpublish(&endpoint)?;
        endpoint.ports.clear();
        let net = self.network_by_id(&endpoint.network_id)?.clone();
        drivers::connect(&self.netlink, &mut self.datapath, &net, &endpoint, false).await?;
        self.record(&endpoint);
        self.forget_later(flow_addresses(&endpoint));
        Ok(())
    }

    fn endpoint_by_id(&self, id: &str) -> Result<Endpoint> {
        self.state
            .endpoints
            .iter()
            .find(|e| e.id == id)
            .cloned()
            .ok_or_else(|| DaemonError::new(ErrorKind::Unknown, format!("no endpoint {id}")).into())
    }

    /// Records a changed endpoint in the state, in its place.
    pub(super) fn record(&mut self, endpoint: &Endpoint) {
        self.state.endpoints.replace(endpoint.clone());
    }

    /// Detaches an endpoint: its published ports, map entries and interface go, its
    /// flows are forgotten soon, and it leaves the state (the caller saves). On an error
    /// it stays in the state, for another try.
    pub(super) async fn detach(&mut self, endpoint: &Endpoint, removal: InterfaceRemoval) -> Result<()> {
        self.dismantle(endpoint, removal).await?;
        if self.state.network_by_id(&endpoint.network_id).is_some_and(Self::is_overlay) {
            self.give_back(endpoint).await;
        }
        self.forget_later(flow_addresses(endpoint));
        self.state.endpoints.retain(|e| e.id != endpoint.id);
        Ok(())
    }

    /// Removes an endpoint from the system and the maps, its published ports and the
    /// firewall of its own addresses with it; parts already gone are skipped, and an error
    /// leaves the others to go all the same. Also undoes an attach that a crash cut short
    /// (its intent holds the endpoint).
    pub(super) async fn dismantle(&mut self, endpoint: &Endpoint, removal: InterfaceRemoval) -> Result<()> {
        let mut errors = vec![];
        if let Err(e) = self.unpublish(endpoint) {
            errors.push(format!("{e:#}"));
        }
        let later = (removal == InterfaceRemoval::Later).then_some(&self.link_reaper);
        if let Some(net) = self.state.network_by_id(&endpoint.network_id).cloned()
            && let Err(e) =
                drivers::disconnect(&self.netlink, &mut self.datapath, &net, endpoint, later).await
        {
            errors.push(format!("{e:#}"));
        }
        if let Err(e) = self.clear_direct_firewall(endpoint) {
            errors.push(format!("{e:#}"));
        }
        if errors.is_empty() { Ok(()) } else { bail!(errors.join("; ")) }
    }

    fn bridge_for(&self, net: &Network) -> Result<u8> {
        drivers::bridge_for(net, &self.state.bridge_occupancy(&net.id))
    }

    async fn unused_veth_name(&self) -> Result<String> {
        loop {
            let suffix: u32 = rand::random::<u32>() & 0x0fff_ffff;
            let name = format!("veth{suffix:07x}");
            if !self.state.veth_taken(&name) && self.netlink.link_index(&name).await?.is_none() {
                return Ok(name);
            }
        }
    }
}

/// Network aliases: valid names, on user-defined networks only (as Docker has it: the
/// default network resolves no names at all).
pub(super) fn check_aliases(net: &Network, aliases: &[String]) -> Result<()> {
    if !aliases.is_empty() && net.name == DEFAULT_NETWORK {
        bail!(DaemonError::new(
            ErrorKind::Invalid,
            "network-scoped aliases need a user-defined network; create one with `dataplane network create NAME`"
        ));
    }
    aliases
        .iter()
        .try_for_each(|alias| check_name("alias", alias))
        .map_err(|e| DaemonError::new(ErrorKind::Invalid, format!("{e:#}")).into())
}

/// The addresses whose flows go with an endpoint: IPv4 and IPv6, those it has.
fn flow_addresses(endpoint: &Endpoint) -> Vec<IpAddress> {
    endpoint
        .addresses()
        .map(|ip| match ip {
            IpAddr::V4(ip) => IpAddress::v4(ip.octets()),
            IpAddr::V6(ip) => IpAddress::v6(ip.octets()),
        })
        .collect()
}
