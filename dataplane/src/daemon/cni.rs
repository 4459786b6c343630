//! The CNI plugin's front door: ADD, DEL, CHECK and GC onto endpoints owned by a runtime's
//! container (`cni:<containerID>`), in a namespace the runtime made and owns. An
//! attachment is the runtime's (container ID, interface name) on one network. The network
//! a config names is created from the config on the first ADD, and checked against it on
//! every other. Everything else (the address, the interface, the map entries, the
//! published ports) is `endpoints`' and `publishing`'s work, as for our own `run`.

use std::collections::BTreeMap;

use anyhow::Result;
use ipnet::{Ipv4Net, Ipv6Net};
use serde_json::{Value, json};

use super::{
    Core,
    endpoints::{EndpointSpec, InterfaceRemoval},
};
use crate::{
    api::{
        CniAdd, CniAdded, CniAddedFamily, CniAttachment, CniCheck, CniNetwork, DaemonError, ErrorKind,
        Ipv6Spec, NetworkSpec,
    },
    dns, drivers,
    maps::endpoint_key,
    netlink::Netlink,
    state::{DEFAULT_NETWORK, Endpoint, MacAddr, Network, Owner},
};

fn invalid(message: String) -> anyhow::Error {
    DaemonError::new(ErrorKind::Invalid, message).into()
}

fn broken(message: String) -> anyhow::Error {
    DaemonError::new(ErrorKind::Broken, message).into()
}

fn owner_of(attachment: &CniAttachment) -> Owner {
    Owner::Cni { container_id: attachment.container_id.clone() }
}

impl Core {
    pub(super) async fn cni_add(&mut self, add: CniAdd) -> Result<CniAdded> {
        let (net, created) = self.cni_network(&add.network).await?;
        if let Some(existing) = self.cni_endpoint(&add.attachment, &net.name) {
            return Err(invalid(format!(
                "{} of container {} is already attached to network {} ({}); DEL it before another ADD",
                add.attachment.ifname,
                add.attachment.container_id,
                net.name,
                existing.addresses().map(|ip| ip.to_string()).collect::<Vec<_>>().join(" ")
            )));
        }
        let owner = owner_of(&add.attachment);
        // The default network resolves no names (Docker's rule), so a pod's name has
        // nothing to answer there.
        let names = if net.name == DEFAULT_NETWORK { vec![] } else { add.names };
        let attached = self
            .attach(EndpointSpec {
                network: &net,
                owner: owner.clone(),
                owner_name: &owner.to_string(),
                netns: &add.netns,
                ifname: add.attachment.ifname.clone(),
                ip: add.ip,
                ip6: add.ip6,
                mac: add.mac,
                aliases: names,
                publish: &add.publish,
            })
            .await;
        let endpoint = match attached {
            Ok(endpoint) => endpoint,
            // A refused ADD leaves nothing, not even the network it made on its way.
            Err(e) if created => {
                if let Err(undo) = self.remove_network(&net.name).await {
                    log::warn!("undoing network {} of a refused ADD: {undo:#}", net.name);
                }
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        self.save()?;
        let host_mac = match self.netlink.link_index(&endpoint.host_veth).await? {
            Some(index) => self.netlink.link_mac(index).await?.map(MacAddr),
            None => None,
        };
        Ok(CniAdded {
            endpoint_id: endpoint.id,
            host_veth: endpoint.host_veth,
            host_mac,
            mac: endpoint.mac,
            ipv4: net.plan().zip(endpoint.ip).map(|(v4, ip)| CniAddedFamily {
                ip,
                prefix_len: v4.subnet.prefix_len(),
                gateway: Some(v4.gateway).filter(|_| !net.bridge_options.isolated(false)),
            }),
            ipv6: net.ipv6.zip(endpoint.ip6).map(|(v6, ip)| CniAddedFamily {
                ip,
                prefix_len: v6.subnet.prefix_len(),
                gateway: Some(v6.gateway).filter(|_| !net.bridge_options.isolated(true)),
            }),
            default_route: drivers::takes_default_route(&endpoint.ifname),
            mtu: net.bridge_options.mtu,
            nameservers: match dns::has_resolver(&net.driver) {
                true => net.gateways().collect(),
                false => vec![],
            },
            ports: endpoint.ports,
        })
    }

    /// DEL: the attachment's address, interface, map entries, ports and flows go. An
    /// attachment already gone, or never made, is no error (the spec's DEL is idempotent).
    pub(super) async fn cni_del(&mut self, attachment: &CniAttachment, network: &str) -> Result<Value> {
        let Some(endpoint) = self.cni_endpoint(attachment, network).cloned() else {
            return Ok(json!(false));
        };
        self.detach(&endpoint, InterfaceRemoval::Now).await?;
        // Drops the rule sets no port uses any more.
        if let Err(e) = self.sync_firewall() {
            log::warn!("removing {} of {}: {e:#}", endpoint.ifname, endpoint.owner);
        }
        self.save()?;
        Ok(json!(true))
    }

    /// CHECK: the attachment is as ADD left it and as the runtime's cached result says:
    /// the interface in the namespace with its MAC and address, its default route, the
    /// host side and its map entry, and the published ports.
    pub(super) async fn cni_check(&mut self, check: &CniCheck) -> Result<Value> {
        let endpoint = self.cni_endpoint(&check.attachment, &check.network).cloned().ok_or_else(|| {
            DaemonError::new(
                ErrorKind::Unknown,
                format!(
                    "{} of container {} is not attached to network {}; ADD it first",
                    check.attachment.ifname, check.attachment.container_id, check.network
                ),
            )
        })?;
        let net = self.network_by_id(&endpoint.network_id)?.clone();
        let what = format!("{} of container {}", endpoint.ifname, check.attachment.container_id);
        let expected =
            endpoint.ip.zip(net.subnet).map(|(ip, s)| Ipv4Net::new(ip, s.prefix_len())).transpose()?;
        if let Some(cached) = check.ip
            && Some(cached) != expected
        {
            let gave = expected.map_or("no IPv4 address".to_string(), |a| a.to_string());
            return Err(broken(format!(
                "{what}: the previous result says {cached}, the network gave it {gave}; DEL and ADD it again"
            )));
        }
        let expected6 = net.ipv6.zip(endpoint.ip6).map(|(v6, ip)| Ipv6Net::new(ip, v6.subnet.prefix_len()));
        let expected6 = expected6.transpose()?;
        if check.ip6 != expected6 {
            let said = check.ip6.map_or("no IPv6 address".to_string(), |a| a.to_string());
            let gave = expected6.map_or("none".to_string(), |a| a.to_string());
            return Err(broken(format!(
                "{what}: the previous result says {said}, the network gave it {gave}; DEL and ADD it again"
            )));
        }
        if let Some(cached) = check.mac
            && cached != endpoint.mac
        {
            return Err(broken(format!(
                "{what}: the previous result says MAC {cached}, the endpoint has {}; DEL and ADD it again",
                endpoint.mac
            )));
        }
        if !check.netns.exists() {
            return Err(broken(format!("{what}: namespace {} is gone", check.netns.display())));
        }
        check_inside(&Netlink::connect_in(&check.netns)?, &net, &endpoint)
            .await
            .map_err(|e| broken(format!("{what}: {e:#}; DEL and ADD it again")))?;
        self.check_host_side(&net, &endpoint)
            .await
            .map_err(|e| broken(format!("{what}: {e:#}; DEL and ADD it again")))?;
        Ok(Value::Null)
    }

    /// GC: removes every CNI attachment of the network that `valid` does not list.
    pub(super) async fn cni_gc(&mut self, network: &str, valid: &[CniAttachment]) -> Result<Value> {
        let Some(net) = self.state.networks.iter().find(|n| n.name == network).cloned() else {
            return Ok(json!([]));
        };
        let stale: Vec<Endpoint> = self
            .state
            .endpoints_on(&net.id)
            .filter(|e| match &e.owner {
                Owner::Cni { container_id } => {
                    !valid.iter().any(|v| &v.container_id == container_id && v.ifname == e.ifname)
                }
                Owner::Container { .. } | Owner::Docker { .. } => false,
            })
            .cloned()
            .collect();
        let mut removed = vec![];
        for endpoint in &stale {
            self.detach(endpoint, InterfaceRemoval::Now).await?;
            removed.push(format!("{} of {}", endpoint.ifname, endpoint.owner));
        }
        if !removed.is_empty() {
            if let Err(e) = self.sync_firewall() {
                log::warn!("garbage-collecting network {network}: {e:#}");
            }
            self.save()?;
        }
        Ok(json!(removed))
    }

    /// The network a CNI config names, and whether this call made it: created from the
    /// config when it does not exist; when it does, every value the config gives must be
    /// the network's.
    async fn cni_network(&mut self, wanted: &CniNetwork) -> Result<(Network, bool)> {
        if let Some(net) = self.state.networks.iter().find(|n| n.name == wanted.name) {
            check_agrees(net, wanted).map_err(invalid)?;
            return Ok((net.clone(), false));
        }
        let mut options = BTreeMap::new();
        if let Some(icc) = wanted.icc {
            options.insert("icc".to_string(), icc.to_string());
        }
        if let Some(mtu) = wanted.mtu {
            options.insert("mtu".to_string(), mtu.to_string());
        }
        if let Some(mode) = &wanted.gateway_mode_ipv4 {
            options.insert("gateway_mode_ipv4".to_string(), mode.clone());
        }
        if let Some(mode) = &wanted.gateway_mode_ipv6 {
            options.insert("gateway_mode_ipv6".to_string(), mode.clone());
        }
        let spec = NetworkSpec {
            name: wanted.name.clone(),
            driver: "bridge".into(),
            subnet: wanted.subnet,
            gateway: wanted.gateway,
            ip_range: wanted.ip_range,
            ipv4: wanted.ipv4.unwrap_or(true),
            ipv6: wanted.ipv6.unwrap_or(false).then_some(Ipv6Spec {
                subnet: wanted.subnet6,
                gateway: wanted.gateway6,
                ip_range: wanted.ip_range6,
            }),
            internal: wanted.internal.unwrap_or(false),
            options,
            labels: BTreeMap::new(),
        };
        // What the network refuses (a name, an overlap, a gateway outside the subnet) is
        // the config's to change.
        self.create_network(spec).await.map_err(|e| invalid(format!("{e:#}")))?;
        Ok((self.network(&wanted.name)?.clone(), true))
    }

    fn cni_endpoint(&self, attachment: &CniAttachment, network: &str) -> Option<&Endpoint> {
        let net = self.state.networks.iter().find(|n| n.name == network)?;
        let owner = owner_of(attachment);
        // The owner first: it tells most endpoints apart at its first bytes, where the
        // network's 64-character ID, the same for all of a network's, is read whole.
        self.state
            .endpoints
            .iter()
            .find(|e| e.owner == owner && e.ifname == attachment.ifname && e.network_id == net.id)
    }

    async fn check_host_side(&mut self, net: &Network, endpoint: &Endpoint) -> Result<()> {
        let Some(host_index) = self.netlink.link_index(&endpoint.host_veth).await? else {
            anyhow::bail!("its host side {} is gone", endpoint.host_veth);
        };
        for ip in endpoint.addresses() {
            match self.datapath.endpoint(endpoint_key(net.index, ip))? {
                Some(entry) if entry.host_ifindex == host_index => {}
                _ => anyhow::bail!("the fast path has no entry for {ip} on {}", endpoint.host_veth),
            }
        }
        let published = self.datapath.published()?;
        if let Some(missing) =
            endpoint.ports.iter().find(|p| !published.contains(&super::publishing::publish_key(p)))
        {
            anyhow::bail!("published port {missing} is missing from the fast path");
        }
        Ok(())
    }
}

/// The values a CNI config gives that an existing network does not have, as one error.
fn check_agrees(net: &Network, wanted: &CniNetwork) -> Result<(), String> {
    let mut conflicts = vec![];
    let mut differs = |key: &str, config: Option<String>, network: String| {
        if let Some(config) = config
            && config != network
        {
            conflicts.push(format!("{key} {config} (the network has {network})"));
        }
    };
    let v4 = net.plan();
    let none = || "none".to_string();
    differs("subnet", wanted.subnet.map(|s| s.to_string()), v4.map_or_else(none, |v4| v4.subnet.to_string()));
    differs(
        "gateway",
        wanted.gateway.map(|g| g.to_string()),
        v4.map_or_else(none, |v4| v4.gateway.to_string()),
    );
    differs(
        "ipRange",
        wanted.ip_range.map(|r| r.to_string()),
        v4.map_or_else(none, |v4| v4.range.to_string()),
    );
    differs("ipv4", wanted.ipv4.map(|i| i.to_string()), v4.is_some().to_string());
    differs("ipv6", wanted.ipv6.map(|i| i.to_string()), net.ipv6.is_some().to_string());
    let v6 = net.ipv6.as_ref();
    differs(
        "subnet6",
        wanted.subnet6.map(|s| s.to_string()),
        v6.map_or_else(none, |v6| v6.subnet.to_string()),
    );
    differs(
        "gateway6",
        wanted.gateway6.map(|g| g.to_string()),
        v6.map_or_else(none, |v6| v6.gateway.to_string()),
    );
    differs(
        "ipRange6",
        wanted.ip_range6.map(|r| r.to_string()),
        v6.map_or_else(none, |v6| v6.range.to_string()),
    );
    differs("internal", wanted.internal.map(|i| i.to_string()), net.internal.to_string());
    differs("icc", wanted.icc.map(|i| i.to_string()), net.bridge_options.icc.to_string());
    let modes = &net.bridge_options;
    differs("gatewayModeIpv4", wanted.gateway_mode_ipv4.clone(), modes.gateway_mode_ipv4.name().to_string());
    differs("gatewayModeIpv6", wanted.gateway_mode_ipv6.clone(), modes.gateway_mode_ipv6.name().to_string());
    differs(
        "mtu",
        wanted.mtu.map(|m| m.to_string()),
        net.bridge_options.mtu.map_or("the default".to_string(), |m| m.to_string()),
    );
    if conflicts.is_empty() {
        return Ok(());
    }
    Err(format!(
        "network {} exists, and the CNI config gives {}; make the config agree with `dataplane network inspect {}`, or name another network",
        net.name,
        conflicts.join(", "),
        net.name
    ))
}

/// The interface inside the namespace: there, with the endpoint's MAC and address, and
/// the default routes through the gateways if it took them (none of an isolated family).
async fn check_inside(inside: &Netlink, net: &Network, endpoint: &Endpoint) -> Result<()> {
    let Some(index) = inside.link_index(&endpoint.ifname).await? else {
        anyhow::bail!("interface {} is missing from its namespace", endpoint.ifname);
    };
    match inside.link_mac(index).await? {
        Some(mac) if mac == endpoint.mac.0 => {}
        other => anyhow::bail!(
            "interface {} has MAC {}, not {}",
            endpoint.ifname,
            other.map_or("none".to_string(), |m| MacAddr(m).to_string()),
            endpoint.mac
        ),
    }
    let held = inside.addresses(index).await?;
    if let Some(lost) = endpoint.addresses().find(|ip| !held.contains(ip)) {
        anyhow::bail!("interface {} has lost its address {lost}", endpoint.ifname);
    }
    if drivers::takes_default_route(&endpoint.ifname) {
        let routes = inside.default_gateways().await?;
        for gateway in net.routing_gateways() {
            if !routes.contains(&(gateway, Some(index))) {
                anyhow::bail!("the default route via {gateway} on {} is missing", endpoint.ifname);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    #[test]
    fn a_config_agrees_with_a_network_in_what_it_gives() {
        let net = Network::sample("pods", 9);
        let mut wanted = CniNetwork { name: "pods".into(), ..CniNetwork::default() };
        assert_eq!(check_agrees(&net, &wanted), Ok(()));
        wanted.subnet = Some("10.9.0.0/24".parse().unwrap());
        wanted.gateway = Some(Ipv4Addr::new(10, 9, 0, 1));
        wanted.ip_range = Some("10.9.0.0/24".parse().unwrap());
        wanted.icc = Some(true);
        wanted.internal = Some(false);
        assert_eq!(check_agrees(&net, &wanted), Ok(()));
        wanted.subnet = Some("10.99.0.0/24".parse().unwrap());
        wanted.mtu = Some(1400);
        let err = check_agrees(&net, &wanted).unwrap_err();
        assert!(err.contains("subnet 10.99.0.0/24 (the network has 10.9.0.0/24)"), "{err}");
        assert!(err.contains("mtu 1400 (the network has the default)"), "{err}");
        assert!(err.contains("dataplane network inspect pods"), "{err}");
        assert!(!err.contains("gateway"), "{err}");
        let routed = CniNetwork { gateway_mode_ipv6: Some("routed".into()), ..wanted.clone() };
        let err = check_agrees(&net, &routed).unwrap_err();
        assert!(err.contains("gatewayModeIpv6 routed (the network has nat)"), "{err}");
        // IPv6 asked of an IPv4-only network, or another IPv6 subnet than the network's.
        let asks_v6 = CniNetwork { name: "pods".into(), ipv6: Some(true), ..CniNetwork::default() };
        let err = check_agrees(&net, &asks_v6).unwrap_err();
        assert!(err.contains("ipv6 true (the network has false)"), "{err}");
        let mut dual = net.clone();
        dual.ipv6 =
            Some(crate::ipam::AddressPlanV6::new("fd00:9::/64".parse().unwrap(), None, None).unwrap());
        assert_eq!(check_agrees(&dual, &asks_v6), Ok(()));
        let other = CniNetwork { subnet6: Some("fd00:99::/64".parse().unwrap()), ..asks_v6 };
        let err = check_agrees(&dual, &other).unwrap_err();
        assert!(err.contains("subnet6 fd00:99::/64 (the network has fd00:9::/64)"), "{err}");
    }
}
