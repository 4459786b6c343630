//! Networks: create, remove and prune them, in the state, the system (through their
//! driver) and the maps; the host's own routes, which a new network must not overlap.
//! A network is removed only once no endpoint is on it. This module never attaches or
//! detaches a namespace: that is `endpoints`' work.

use std::collections::HashSet;

use anyhow::{Result, anyhow, bail};
use ipnet::{Ipv4Net, Ipv6Net};
use serde_json::{Value, json};

use super::{Core, check_name};
use crate::{
    api::{Ipv6Spec, NetworkSpec},
    drivers,
    ipam::{self, AddressPlan, AddressPlanV6},
    state::{BridgeOptions, DEFAULT_NETWORK, GatewayMode, Intent, Network, Owner, new_id, now},
    store::{OVERLAY_DRIVER, SharedNetwork},
};

/// Names that `--network` gives a meaning of its own (Docker's network modes).
const RESERVED_NETWORK_NAMES: [&str; 3] = ["bridge", "host", "none"];

impl Core {
    /// Subnets the host reaches through something other than our own bridges.
    pub(super) async fn host_routes(&self) -> Result<Vec<Ipv4Net>> {
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

    pub(super) async fn create_network(&mut self, spec: NetworkSpec) -> Result<Value> {
        check_name("network", &spec.name)?;
        if !spec.ipv4 && spec.ipv6.is_none() {
            bail!(
                "network {}: --ipv4=false leaves it no address family; add --ipv6 for an IPv6-only network",
                spec.name
            );
        }
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
        let overlay = spec.driver == OVERLAY_DRIVER;
        let store = if overlay { Some(self.shared_store(&spec.name)?) } else { None };
        let bridge_options = if macvlan {
            // The segment's subnet of each family the network has: an IPv6-only one needs
            // only its IPv6 --subnet (checked with the IPv6 plan below).
            if (spec.ipv4 && spec.subnet.is_none()) || !spec.options.contains_key("parent") {
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
            BridgeOptions { icc: true, ..BridgeOptions::default() }
        } else {
            let mut options =
                BridgeOptions::parse(&spec.options).map_err(|e| anyhow!("network {}: {e}", spec.name))?;
            // A mode other than NAT is about a family the network must have.
            let v6 = options.gateway_mode_ipv6;
            if v6 != GatewayMode::Nat && spec.ipv6.is_none() {
                bail!(
                    "network {}: gateway_mode_ipv6={} is about the network's IPv6, and it has none; add --ipv6 or drop the option",
                    spec.name,
                    v6.name()
                );
            }
            let v4 = options.gateway_mode_ipv4;
            if v4 != GatewayMode::Nat && !spec.ipv4 {
                bail!(
                    "network {}: gateway_mode_ipv4={} is about the network's IPv4, and it has none; drop \
                     --ipv4=false or the option",
                    spec.name,
                    v4.name()
                );
            }
            // Docker refuses it otherwise: an isolated network is an internal one whose
            // containers do not reach the host either.
            if let Some(family) = options.isolated_family()
                && !spec.internal
            {
                bail!(
                    "network {}: gateway_mode_{family}=isolated is for an --internal network only (as on \
                     Docker); add --internal, or choose nat, routed or nat-unprotected",
                    spec.name
                );
            }
            if overlay {
                options.mtu = self.overlay_mtu(options.mtu);
            }
            options
        };
        // A macvlan network lives on the parent's segment, which the host may well route.
        let host_routes = if macvlan { vec![] } else { self.host_routes().await? };
        let plan = match spec.ipv4 {
            true => Some(self.plan_ipv4(&spec, host_routes)?),
            false => None,
        };
        let ipv6 = match &spec.ipv6 {
            // The host's ULA pool is no prefix of the parent's segment.
            Some(wanted) if macvlan && wanted.subnet.is_none() => bail!(
                "network {}: a macvlan network with --ipv6 needs the segment's IPv6 --subnet (as its IPv4 one); add --subnet PREFIX/LEN",
                spec.name
            ),
            Some(wanted) => Some(self.plan_ipv6(&spec.name, wanted)?),
            None => None,
        };
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
            subnet: plan.map(|p| p.subnet),
            gateway: plan.map(|p| p.gateway),
            ip_range: plan.and_then(|p| spec.ip_range.map(|_| p.range)),
            ipv6,
            internal: spec.internal,
            options: spec.options,
            bridge_options,
            labels: spec.labels,
            bridge: bridge_name,
            created: now(),
            vni: None,
            id,
        };
        if let Some(store) = &store
            && store.create_network(&SharedNetwork::of(&network)).await?.is_none()
        {
            bail!(
                "network with name {} already exists in the store {}; choose another name",
                network.name,
                store.address()
            );
        }
        if let Err(e) = self.install_network(network.clone()).await {
            if let Some(store) = &store
                && let Err(undo) = store.remove_network(&network).await
            {
                log::warn!("undoing network {} in the store: {undo:#}", network.name);
            }
            return Err(e);
        }
        Ok(serde_json::to_value(&network)?)
    }

    /// Builds a network in the system and the maps, all or nothing, and records it.
    pub(super) async fn install_network(&mut self, network: Network) -> Result<()> {
        self.intend(Intent::CreateNetwork { network: network.clone() })?;
        if let Err(e) = drivers::setup_network(&self.netlink, &mut self.datapath, &network).await {
            let _ = drivers::teardown_network(&self.netlink, &mut self.datapath, &network).await;
            self.abandon(&network.id);
            return Err(e.context(format!("creating network {}", network.name)));
        }
        self.state.networks.push(network.clone());
        self.done(&network.id);
        self.save()?;
        let plans = network
            .plan()
            .map(|p| format!("{} via {}", p.subnet, p.gateway))
            .into_iter()
            .chain(network.ipv6.map(|p| format!("{} via {}", p.subnet, p.gateway)));
        log::info!(
            "created network {} ({}, {}, {})",
            network.name,
            &network.id[..12],
            network.driver,
            plans.collect::<Vec<_>>().join(", ")
        );
        Ok(())
    }

    /// A network's IPv4 plan: the subnet asked for, checked against the other networks'
    /// and the host's routes, or the next free subnet of the default pools.
    fn plan_ipv4(&self, spec: &NetworkSpec, host_routes: Vec<Ipv4Net>) -> Result<AddressPlan> {
        let subnet = match spec.subnet {
            Some(subnet) => {
                if let Some((other, theirs)) = self
                    .state
                    .networks
                    .iter()
                    .find_map(|n| n.subnet.filter(|s| ipam::overlaps(s, &subnet)).map(|s| (n, s)))
                {
                    bail!(
                        "network {}: subnet {subnet} overlaps network {:?} ({theirs}); choose another --subnet",
                        spec.name,
                        other.name,
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
                let taken: Vec<_> =
                    self.state.networks.iter().filter_map(|n| n.subnet).chain(host_routes).collect();
                ipam::pick_subnet(&taken)?
            }
        };
        AddressPlan::new(subnet, spec.gateway, spec.ip_range)
            .map_err(|e| anyhow!("network {}: {e}", spec.name))
    }

    /// A network's IPv6 plan: the subnet asked for, checked against the other networks'
    /// (the host's IPv6 routes are not ours to check yet: nothing here routes IPv6 out),
    /// or the next free /64 of the host's ULA pool.
    fn plan_ipv6(&self, name: &str, wanted: &Ipv6Spec) -> Result<AddressPlanV6> {
        let taken: Vec<Ipv6Net> =
            self.state.networks.iter().filter_map(|n| n.ipv6.map(|v6| v6.subnet)).collect();
        let subnet = match wanted.subnet {
            Some(subnet) => {
                if let Some(other) = self
                    .state
                    .networks
                    .iter()
                    .find(|n| n.ipv6.is_some_and(|v6| ipam::overlaps6(&v6.subnet, &subnet)))
                {
                    bail!(
                        "network {name}: subnet {subnet} overlaps network {:?} ({}); choose another --subnet",
                        other.name,
                        other.ipv6.map(|v6| v6.subnet.to_string()).unwrap_or_default()
                    );
                }
                subnet
            }
            None => ipam::pick_subnet6(self.ula_pool, &taken).map_err(|e| anyhow!("network {name}: {e}"))?,
        };
        AddressPlanV6::new(subnet, wanted.gateway, wanted.ip_range)
            .map_err(|e| anyhow!("network {name}: {e}"))
    }

    pub(super) async fn remove_network(&mut self, name: &str) -> Result<()> {
        let net = self.network(name)?.clone();
        if net.name == DEFAULT_NETWORK {
            bail!("network bridge is the default network and cannot be removed");
        }
        if self.state.docker.is_dockers(&net.id) {
            bail!("network {} is Docker's; remove it with `docker network rm`", net.name);
        }
        let store = if Self::is_overlay(&net) { Some(self.shared_store(&net.name)?) } else { None };
        if let Some(store) = &store {
            // Every host's endpoints hold it, not only this one's.
            store.ensure_unused(&net).await?;
        }
        let names = self.state.owner_names();
        let on: Vec<_> = self.state.endpoints_on(&net.id).collect();
        if !on.is_empty() {
            let users: Vec<_> = on.iter().map(|e| names.of(&e.owner)).collect();
            // Each owner removes its endpoints its own way.
            let mut how = vec![];
            if on.iter().any(|e| matches!(e.owner, Owner::Container { .. })) {
                how.push("remove our containers with `dataplane rm -f NAME`");
            }
            if on.iter().any(|e| matches!(e.owner, Owner::Cni { .. })) {
                how.push("remove the runtime's containers with the runtime (`podman rm -f`, a CNI DEL)");
            }
            if on.iter().any(|e| matches!(e.owner, Owner::Docker { .. })) {
                how.push("remove Docker's containers with `docker rm -f`");
            }
            bail!(
                "network {} has active endpoints ({}); {} first",
                net.name,
                users.join(", "),
                how.join("; ")
            );
        }
        if let Some(store) = &store {
            store.remove_network(&net).await?;
        }
        self.uninstall_network(&net).await
    }

    /// Takes a network without endpoints out of the system, the maps and the state.
    pub(super) async fn uninstall_network(&mut self, net: &Network) -> Result<()> {
        drivers::teardown_network(&self.netlink, &mut self.datapath, net).await?;
        self.state.networks.retain(|n| n.id != net.id);
        self.save()?;
        log::info!("removed network {} ({})", net.name, &net.id[..12]);
        Ok(())
    }

    /// Removes the networks no endpoint is on and no container asks for: a stopped
    /// container holds no endpoint, yet its start needs its networks. Overlay networks
    /// stay: they are every host's, and go by name alone.
    pub(super) async fn prune_networks(&mut self) -> Result<Value> {
        let asked: HashSet<&str> = self
            .state
            .containers
            .iter()
            .flat_map(|c| c.networks.iter().map(|a| a.network_id.as_str()))
            .collect();
        let unused: Vec<String> = self
            .state
            .networks
            .iter()
            .filter(|n| {
                n.name != DEFAULT_NETWORK
                    && !self.state.docker.is_dockers(&n.id)
                    // Shared: unused here is not unused on every host; `network rm` it.
                    && !Self::is_overlay(n)
                    && !asked.contains(n.id.as_str())
                    && self.state.endpoints_on(&n.id).next().is_none()
            })
            .map(|n| n.name.clone())
            .collect();
        for name in &unused {
            self.remove_network(name).await?;
        }
        Ok(json!(unused))
    }
}
