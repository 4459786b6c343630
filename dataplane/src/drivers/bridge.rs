//! The bridge driver. Each network has a kernel bridge holding the gateway address: it is
//! the slow path (ARP, broadcast, traffic to and from the host). An isolated network's
//! bridge has `into_isolated` on its egress, which keeps the host's traffic out. Each endpoint has a veth
//! pair enslaved to it, with `from_container` on the host side's tc ingress: unicast IPv4
//! between containers of the network is redirected by eBPF straight into the peer's
//! namespace and never crosses the bridge.
//!
//! A kernel bridge holds at most 1,023 ports. Past `CONTAINERS_PER_BRIDGE` containers a
//! network gets extra bridges, each a port of the network's own bridge through a veth
//! pair: the slow path crosses one more bridge there, the fast path is the same.
//!
//! Every function here is idempotent, so the daemon uses the same calls to build, to
//! restore after a restart, and to undo a half-made endpoint.

use std::{collections::BTreeMap, net::IpAddr};

use anyhow::{Result, bail};
use dataplane_common::{InterfaceConfig, SubnetInfo};
use ipnet::IpNet;

use crate::{
    maps::{Datapath, endpoint_key},
    netlink::{self, LinkReaper, Netlink},
    netns,
    state::{Endpoint, GatewayMode, Network, is_id_prefix},
};

pub async fn setup_network(nl: &Netlink, dp: &mut Datapath, net: &Network) -> Result<()> {
    let index = match nl.link_index(&net.bridge).await? {
        Some(index) => index,
        None => {
            let first_gateway = net.gateways().next().expect("a network has IPv4, IPv6 or both");
            nl.create_bridge(&net.bridge, crate::ipam::mac_for(first_gateway), net.bridge_options.mtu, true)
                .await?
        }
    };
    // Also on a bridge of an earlier version, made without it.
    nl.set_alias(index, &format!("{BRIDGE_ALIAS}{}", net.id)).await?;
    for (subnet, gateway) in subnets(net) {
        nl.add_address(index, gateway, subnet.prefix_len()).await?;
    }
    nl.set_up(index).await?;
    for (subnet, gateway) in subnets(net) {
        let mode = match subnet {
            IpNet::V4(_) => net.bridge_options.gateway_mode_ipv4,
            IpNet::V6(_) => net.bridge_options.gateway_mode_ipv6,
        };
        dp.set_subnet(subnet, net.index, gateway, subnet_flags(mode, net.internal))?;
    }
    // What the host sends into the network passes its bridge's egress, which keeps an
    // isolated family's containers from it but for the resolver's answers.
    if net.bridge_options.isolated_family().is_some() {
        dp.attach_into_isolated(&net.bridge)?;
    }
    Ok(())
}

/// The kernel side's flags of a subnet whose family is in `mode` (`SubnetInfo`): what the
/// outside may reach of its container addresses (none for `nat-unprotected` on an
/// `--internal` network, whose containers nothing outside reaches), and whether the host
/// may not either (`isolated`).
fn subnet_flags(mode: GatewayMode, internal: bool) -> u32 {
    match mode {
        GatewayMode::Nat => 0,
        GatewayMode::Isolated => SubnetInfo::ISOLATED,
        GatewayMode::Routed => SubnetInfo::ROUTED,
        GatewayMode::NatUnprotected if internal => 0,
        GatewayMode::NatUnprotected => SubnetInfo::UNPROTECTED,
    }
}

pub async fn teardown_network(nl: &Netlink, dp: &mut Datapath, net: &Network) -> Result<()> {
    for (subnet, _) in subnets(net) {
        dp.remove_subnet(subnet)?;
    }
    dp.forget_bridge_filter(&net.bridge);
    remove_bridges(nl, &net.bridge, &net.id).await
}

/// A network's subnets with their gateways: IPv4, then IPv6, those it has.
fn subnets(net: &Network) -> impl Iterator<Item = (IpNet, IpAddr)> + use<> {
    let v4 = net.plan().map(|p| (IpNet::from(p.subnet), IpAddr::from(p.gateway)));
    v4.into_iter().chain(net.ipv6.map(|p| (p.subnet.into(), p.gateway.into())))
}

/// The alias of a network's own bridge, before the network's ID: what tells our bridges
/// from the others of the namespace (Docker names its own `br-` and 12 digits too).
const BRIDGE_ALIAS: &str = "dataplane network ";

/// The bridges of the namespace that are a network's own bridge by their alias, whatever
/// the state holds: name and network ID.
pub async fn network_bridges(nl: &Netlink) -> Result<Vec<(String, String)>> {
    Ok(nl
        .aliased_links()
        .await?
        .into_iter()
        .filter_map(|(name, alias)| {
            let id = alias.strip_prefix(BRIDGE_ALIAS)?;
            is_id_prefix(id, 64).then(|| (name, id.to_string()))
        })
        .collect())
}

/// Removes a network's bridges, its own (`bridge`) and the extra ones, by the network's ID.
pub async fn remove_bridges(nl: &Netlink, bridge: &str, network_id: &str) -> Result<()> {
    for extra in 1..=EXTRA_BRIDGES {
        let names = ExtraBridge::of(network_id, extra);
        // Deleting one end of the link deletes the other.
        nl.delete_link(&names.link).await?;
        nl.delete_link(&names.bridge).await?;
    }
    nl.delete_link(bridge).await
}

/// Removes a network's bridges and every link that is a port of one of them (host ends of
/// veths, whose other ends go with them), whatever the state says: what `daemon
/// --cleanup` does to each bridge it finds by its alias. Returns the ports it removed.
pub async fn remove_bridges_and_ports(nl: &Netlink, bridge: &str, network_id: &str) -> Result<Vec<String>> {
    let extras = (1..=EXTRA_BRIDGES).map(|extra| ExtraBridge::of(network_id, extra).bridge);
    let mut indexes = std::collections::HashSet::new();
    for name in std::iter::once(bridge.to_string()).chain(extras) {
        indexes.extend(nl.link_index(&name).await?);
    }
    let ports = nl.ports_of(&indexes).await?;
    for port in &ports {
        nl.delete_link(port).await?;
    }
    remove_bridges(nl, bridge, network_id).await?;
    Ok(ports)
}

/// The host ends of veths on a network's bridges (its own and the extra ones) that `held`
/// (the state's endpoints' host ends) does not name: a removal's, whose deletion was
/// pending when its daemon was killed while something else held the namespace of the
/// other end open (else the kernel deletes the pair with the namespace).
pub async fn unheld_ports(
    nl: &Netlink,
    bridge: &str,
    network_id: &str,
    held: &std::collections::HashSet<&str>,
) -> Result<Vec<String>> {
    let extras = (1..=EXTRA_BRIDGES).map(|extra| ExtraBridge::of(network_id, extra).bridge);
    let mut indexes = std::collections::HashSet::new();
    for name in std::iter::once(bridge.to_string()).chain(extras) {
        indexes.extend(nl.link_index(&name).await?);
    }
    let ports = nl.ports_of(&indexes).await?;
    // The links between the bridges are named otherwise (`ExtraBridge`).
    Ok(ports.into_iter().filter(|p| p.starts_with("veth") && !held.contains(p.as_str())).collect())
}

/// Containers one bridge takes. The network's own bridge keeps the rest of the kernel's
/// 1,023 ports for the links to its extra bridges.
pub const CONTAINERS_PER_BRIDGE: usize = 1000;
/// Extra bridges a network may have: 24,000 containers in all.
pub const EXTRA_BRIDGES: u8 = 23;

/// The bridge that takes a network's next container: the first with room, the network's
/// own first. `occupancy` holds how many containers each bridge has (none where absent).
pub fn bridge_for(net: &Network, occupancy: &BTreeMap<u8, usize>) -> Result<u8> {
    let mut counts = [0usize; 1 + EXTRA_BRIDGES as usize];
    for (&bridge, &count) in occupancy {
        if let Some(slot) = counts.get_mut(usize::from(bridge)) {
            *slot = count;
        }
    }
    // Isolated ports (icc=false) reach each other through non-isolated ones, and a link to
    // an extra bridge must be one for its containers to reach the gateway: such a
    // network keeps to its own bridge.
    let usable = if net.bridge_options.icc { counts.len() } else { 1 };
    match counts[..usable].iter().position(|&count| count < CONTAINERS_PER_BRIDGE) {
        Some(bridge) => Ok(bridge as u8),
        None if usable == 1 => bail!(
            "network {} is full: with inter-container communication disabled (icc=false) a \
             network has one bridge, {CONTAINERS_PER_BRIDGE} containers; create another network for more",
            net.name
        ),
        None => bail!(
            "network {} is full: {} containers ({} bridges); create another network for more",
            net.name,
            usable * CONTAINERS_PER_BRIDGE,
            usable
        ),
    }
}

/// Names of an extra bridge and of its link to the network's own bridge (15 characters:
/// the kernel's limit).
struct ExtraBridge {
    bridge: String,
    /// The link's end on the network's own bridge.
    link: String,
    /// The link's end on the extra bridge.
    link_peer: String,
}

impl ExtraBridge {
    fn of(network_id: &str, extra: u8) -> Self {
        let id = &network_id[..10];
        Self {
            bridge: format!("br{extra:02}-{id}"),
            link: format!("bl{extra:02}-{id}"),
            link_peer: format!("bp{extra:02}-{id}"),
        }
    }
}

/// The ifindex of the bridge an endpoint's veth goes on; an extra bridge missing
/// (the first container past the others' room, or a restore) is made and linked.
async fn endpoint_bridge(nl: &Netlink, net: &Network, endpoint: &Endpoint) -> Result<u32> {
    let own = nl.require_index(&net.bridge).await?;
    if endpoint.bridge == 0 {
        return Ok(own);
    }
    let names = ExtraBridge::of(&net.id, endpoint.bridge);
    // Linked and up already (by an earlier endpoint, or before a restart), which one
    // lookup tells: the link's end on the extra bridge is there and up, so its peer is
    // there too (a veth's ends go together), and its controller is the bridge. Making
    // sure of each piece took three (a sixth of an attach at 2,000 endpoints), and all
    // of it again eight calls.
    if let Some(link_peer) = nl.link_state(&names.link_peer).await?
        && link_peer.up
        && let Some(bridge) = link_peer.controller
    {
        return Ok(bridge);
    }
    let existing = nl.link_state(&names.bridge).await?;
    let mtu = net.bridge_options.mtu;
    let bridge = match existing.map(|b| b.index) {
        Some(index) => index,
        // A fixed MAC, as for the network's own bridge; locally administered, unique per
        // network and bridge. No ARP: the host would answer for the gateway here too,
        // with this bridge's MAC, racing the network's own bridge, and containers that
        // took that answer sent their traffic for the host to a bridge without the
        // gateway's address (in tests the gateway then stopped answering them).
        None => {
            let [_, a, b, c] = net.index.to_be_bytes();
            nl.create_bridge(&names.bridge, [0x02, 0x64, a, b, c, endpoint.bridge], mtu, false).await?
        }
    };
    let link = match nl.link_index(&names.link).await? {
        Some(index) => index,
        None => nl.create_veth(&names.link, &names.link_peer, mtu).await?,
    };
    let link_peer = nl.require_index(&names.link_peer).await?;
    nl.set_controller(link, own).await?;
    nl.set_controller(link_peer, bridge).await?;
    for index in [bridge, link, link_peer] {
        nl.set_up(index).await?;
    }
    Ok(bridge)
}

fn interface_config(
    net: &Network,
    endpoint: &Endpoint,
    publishes: bool,
    xdp_target: bool,
    counter_slot: u16,
) -> InterfaceConfig {
    let mut flags = 0;
    let (unprotected_v4, unprotected_v6) = (net.unprotected(false), net.unprotected(true));
    // On an unprotected network, every port of the container is as if published on its
    // own address: its replies take the published ports' way back.
    if publishes || unprotected_v4 || unprotected_v6 {
        flags |= InterfaceConfig::PUBLISHES;
    }
    if xdp_target {
        flags |= InterfaceConfig::XDP_TARGET;
    }
    if !net.bridge_options.icc {
        flags |= InterfaceConfig::ICC_DISABLED;
    }
    if net.internal {
        flags |= InterfaceConfig::INTERNAL;
    }
    if net.bridge_options.gateway_mode_ipv4 == GatewayMode::Routed {
        flags |= InterfaceConfig::ROUTED_V4;
    }
    if net.bridge_options.gateway_mode_ipv6 == GatewayMode::Routed {
        flags |= InterfaceConfig::ROUTED_V6;
    }
    if unprotected_v4 {
        flags |= InterfaceConfig::UNPROTECTED_V4;
    }
    if unprotected_v6 {
        flags |= InterfaceConfig::UNPROTECTED_V6;
    }
    if net.bridge_options.isolated(false) {
        flags |= InterfaceConfig::ISOLATED_V4;
    }
    if net.bridge_options.isolated(true) {
        flags |= InterfaceConfig::ISOLATED_V6;
    }
    InterfaceConfig {
        network: net.index,
        flags,
        // An IPv6-only network's: a full mask on 0.0.0.0, which holds no endpoint.
        v4_subnet: net.subnet.map_or([0; 4], |s| s.network().octets()),
        v4_mask: net.subnet.map_or([255; 4], |s| s.netmask().octets()),
        v4_addr: endpoint.ip.map_or([0; 4], |ip| ip.octets()),
        mac: endpoint.mac.0,
        counter_slot,
        v6_addr: endpoint.ip6.map_or([0; 16], |ip| ip.octets()),
        // A network without IPv6: a full mask on ::, which holds no endpoint.
        v6_subnet: net.ipv6.map_or([0; 16], |v6| v6.subnet.network().octets()),
        v6_mask: net.ipv6.map_or([255; 16], |v6| v6.subnet.netmask().octets()),
    }
}

/// Builds (or, after a restart, finds and re-arms) an endpoint; returns the host-side
/// veth's ifindex.
pub async fn connect(
    nl: &Netlink,
    dp: &mut Datapath,
    net: &Network,
    endpoint: &Endpoint,
    publishes: bool,
) -> Result<u32> {
    let host_index = match nl.link_index(&endpoint.host_veth).await? {
        Some(index) => index,
        // Both ends here; the owner moves the inner one into its namespace and configures
        // it. Nothing here waits for that: the map entries key on the host side, and
        // `bpf_redirect_peer` follows the peer into whatever namespace it is in.
        None if endpoint.owner.configures_interface() => {
            nl.create_veth_to_hand_over(
                &endpoint.host_veth,
                &endpoint.ifname,
                endpoint.mac.0,
                net.bridge_options.mtu,
            )
            .await?
        }
        None => create_veth(nl, net, endpoint).await?,
    };
    let bridge = endpoint_bridge(nl, net, endpoint).await?;
    nl.set_controller(host_index, bridge).await?;
    nl.set_port_isolated(host_index, !net.bridge_options.icc).await?;
    nl.set_up(host_index).await?;
    // Lets the programs ask the FIB how the host would route what the container sends
    // (bpf_fib_lookup requires forwarding on the input device). A bridge port routes
    // nothing itself, so this opens no path of its own.
    nl.enable_ipv4_forwarding(host_index).await?;
    if net.ipv6.is_some() {
        nl.enable_ipv6_forwarding(&endpoint.host_veth)?;
    }
    // The uplink's XDP program hands packets for published ports to the container's veth
    // as frames, which a veth end takes only while its NAPI runs: GRO turned on while the
    // end is up starts it. An owner that moves and brings up the inner end itself (Docker)
    // may do so after its ports are published, and GRO turned on before did not start it
    // then (seen on 6.18: XDP's frames were dropped): until the owner has the end up in
    // its namespace tc serves its ports, and the daemon connects it again once it has.
    let xdp_target = publishes
        && dp.uplink_xdp()
        && !endpoint.awaits_hand_over()
        && netlink::enable_gro_in(&endpoint.netns, &endpoint.ifname)
            .inspect_err(|e| log::warn!("{}: published ports served from tc only: {e:#}", endpoint.ifname))
            .is_ok();
    let counter_slot = dp.endpoint_counter_slot(&endpoint.host_veth, host_index)?;
    dp.set_interface(host_index, interface_config(net, endpoint, publishes, xdp_target, counter_slot))?;
    for ip in endpoint.addresses() {
        dp.set_endpoint(
            endpoint_key(net.index, ip),
            dataplane_common::Endpoint { host_ifindex: host_index, mac: endpoint.mac.0, counter_slot },
        )?;
    }
    nl.add_ingress_qdisc(host_index).await?;
    dp.attach(&endpoint.host_veth)?;
    Ok(host_index)
}

async fn create_veth(nl: &Netlink, net: &Network, endpoint: &Endpoint) -> Result<u32> {
    let ns = netns::open(&endpoint.netns)?;
    let host = nl
        .create_veth_into(&endpoint.host_veth, &ns, &endpoint.ifname, endpoint.mac.0, net.bridge_options.mtu)
        .await?;
    // A bridge port needs no IPv6 of its own (frames cross the bridge all the same); left
    // on, each host-side veth added three routes to the host's IPv6 table, which the
    // kernel walks whole as any link goes down or away: with 2,000 endpoints that was a
    // sixth of an attach's and a detach's time.
    nl.disable_ipv6(&endpoint.host_veth)?;
    super::configure_inside(&Netlink::connect_in(&endpoint.netns)?, net, endpoint, super::Ipv6Off::NoAddress)
        .await?;
    Ok(host)
}

/// Removes an endpoint from the maps and the system; parts already gone are skipped.
/// The veth goes now, or through `later` when nothing can use it any more.
pub async fn disconnect(
    nl: &Netlink,
    dp: &mut Datapath,
    net: &Network,
    endpoint: &Endpoint,
    later: Option<&LinkReaper>,
) -> Result<()> {
    dp.detach(&endpoint.host_veth)?;
    dp.release_endpoint_counter_slot(&endpoint.host_veth);
    let index = nl.link_index(&endpoint.host_veth).await?;
    if let Some(index) = index {
        dp.remove_interface(index)?;
    }
    for ip in endpoint.addresses() {
        let key = endpoint_key(net.index, ip);
        if dp.endpoint(key)?.is_some() {
            dp.remove_endpoint(key)?;
        }
    }
    // Deleting one end of a veth pair deletes the other, inside the container.
    match (index, later) {
        (None, _) => Ok(()),
        (Some(index), Some(reaper)) => {
            reaper.delete(index, &endpoint.host_veth);
            Ok(())
        }
        (Some(index), None) => nl.delete_link_index(index, &endpoint.host_veth).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filled(own: usize, extra: &[usize]) -> BTreeMap<u8, usize> {
        let mut occupancy: BTreeMap<u8, usize> = [(0, own)].into();
        for (i, &count) in extra.iter().enumerate() {
            occupancy.insert(i as u8 + 1, count);
        }
        occupancy
    }

    #[test]
    fn containers_fill_the_networks_own_bridge_first() {
        let net = Network::sample("blue", 7);
        assert_eq!(bridge_for(&net, &BTreeMap::new()).unwrap(), 0);
        assert_eq!(bridge_for(&net, &filled(CONTAINERS_PER_BRIDGE - 1, &[])).unwrap(), 0);
    }

    #[test]
    fn a_full_bridge_sends_containers_to_the_first_extra_one_with_room() {
        let net = Network::sample("blue", 7);
        assert_eq!(bridge_for(&net, &filled(CONTAINERS_PER_BRIDGE, &[])).unwrap(), 1);
        let full = CONTAINERS_PER_BRIDGE;
        assert_eq!(bridge_for(&net, &filled(full, &[full, 3])).unwrap(), 2);
        // A container leaving an earlier bridge makes room there first.
        assert_eq!(bridge_for(&net, &filled(full - 1, &[full, 3])).unwrap(), 0);
        assert_eq!(bridge_for(&net, &filled(full, &[full - 1, full])).unwrap(), 1);
    }

    #[test]
    fn a_network_refuses_containers_past_its_last_bridge() {
        let net = Network::sample("blue", 7);
        let all = filled(CONTAINERS_PER_BRIDGE, &[CONTAINERS_PER_BRIDGE; EXTRA_BRIDGES as usize]);
        let err = bridge_for(&net, &all).unwrap_err().to_string();
        assert!(err.contains("network blue is full: 24000 containers"), "{err}");
        assert!(err.contains("create another network"), "{err}");
    }

    #[test]
    fn a_network_without_inter_container_traffic_keeps_to_one_bridge() {
        let mut net = Network::sample("quiet", 7);
        net.bridge_options.icc = false;
        assert_eq!(bridge_for(&net, &filled(CONTAINERS_PER_BRIDGE - 1, &[])).unwrap(), 0);
        let err = bridge_for(&net, &filled(CONTAINERS_PER_BRIDGE, &[])).unwrap_err().to_string();
        assert!(err.contains("network quiet is full") && err.contains("icc=false"), "{err}");
    }

    #[test]
    fn the_links_and_extra_bridges_hold_to_the_kernels_limits() {
        // A bridge takes 1,023 ports; an interface name 15 characters.
        assert!(CONTAINERS_PER_BRIDGE + usize::from(EXTRA_BRIDGES) <= 1023);
        let names = ExtraBridge::of(&Network::sample("blue", 7).id, EXTRA_BRIDGES);
        for name in [names.bridge, names.link, names.link_peer] {
            assert!(name.len() <= 15, "{name}");
        }
    }

    fn endpoint_on(net: &Network) -> Endpoint {
        Endpoint {
            id: "e".repeat(64),
            owner: crate::state::Owner::Container { id: "c".repeat(64) },
            netns: "/proc/1/ns/net".into(),
            ifname: "eth0".into(),
            network_id: net.id.clone(),
            ip: Some("10.7.0.2".parse().unwrap()),
            ip6: None,
            mac: "02:42:0a:07:00:02".parse().unwrap(),
            host_veth: "veth1234567".into(),
            aliases: vec![],
            bridge: 0,
            ports: vec![],
        }
    }

    #[test]
    fn the_interface_carries_the_networks_ipv6_subnet_or_one_that_holds_no_address() {
        let mut net = Network::sample("dual", 7);
        let endpoint = endpoint_on(&net);
        let config = interface_config(&net, &endpoint, false, false, 0);
        assert_eq!((config.v6_subnet, config.v6_mask), ([0; 16], [255; 16]), "IPv4 only: a full mask on ::");
        let subnet: ipnet::Ipv6Net = "fd00:7:1::/48".parse().unwrap();
        net.ipv6 = Some(crate::ipam::AddressPlanV6::new(subnet, None, None).unwrap());
        let config = interface_config(&net, &endpoint, false, false, 0);
        assert_eq!(
            std::net::Ipv6Addr::from(config.v6_subnet),
            "fd00:7:1::".parse::<std::net::Ipv6Addr>().unwrap()
        );
        assert_eq!(
            std::net::Ipv6Addr::from(config.v6_mask),
            "ffff:ffff:ffff::".parse::<std::net::Ipv6Addr>().unwrap()
        );
    }

    #[test]
    fn an_unprotected_family_opens_its_containers_ports_unless_the_network_is_internal() {
        let mut net = Network::sample("open", 7);
        net.bridge_options.gateway_mode_ipv4 = GatewayMode::NatUnprotected;
        let endpoint = endpoint_on(&net);
        let flags = interface_config(&net, &endpoint, false, false, 0).flags;
        assert_eq!(
            flags
                & (InterfaceConfig::PUBLISHES
                    | InterfaceConfig::UNPROTECTED_V4
                    | InterfaceConfig::UNPROTECTED_V6),
            InterfaceConfig::PUBLISHES | InterfaceConfig::UNPROTECTED_V4,
            "an unprotected IPv4's container takes the published ports' way back, and sends its ICMP as it is"
        );
        assert_eq!(subnet_flags(GatewayMode::NatUnprotected, false), SubnetInfo::UNPROTECTED);
        assert_eq!(subnet_flags(GatewayMode::Routed, false), SubnetInfo::ROUTED);
        assert_eq!(subnet_flags(GatewayMode::Nat, false), 0);
        net.internal = true;
        assert_eq!(interface_config(&net, &endpoint, false, false, 0).flags & InterfaceConfig::PUBLISHES, 0);
        let isolated = InterfaceConfig::ISOLATED_V4 | InterfaceConfig::ISOLATED_V6;
        assert_eq!(interface_config(&net, &endpoint, false, false, 0).flags & isolated, 0);
        net.bridge_options.gateway_mode_ipv6 = GatewayMode::Isolated;
        let flags = interface_config(&net, &endpoint, false, false, 0).flags;
        assert_eq!(flags & isolated, InterfaceConfig::ISOLATED_V6, "each family's isolation apart");
        assert_ne!(flags & InterfaceConfig::INTERNAL, 0, "an isolated network is an internal one");
        assert_eq!(
            subnet_flags(GatewayMode::Isolated, true),
            SubnetInfo::ISOLATED,
            "nothing outside reaches an isolated one, and the host not either"
        );
        assert_eq!(
            subnet_flags(GatewayMode::NatUnprotected, true),
            0,
            "nothing outside reaches an internal one"
        );
    }
}
