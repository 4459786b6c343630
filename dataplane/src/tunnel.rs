//! The host's VXLAN tunnel for overlay networks (Cilium's tunnel mode): one device in
//! external (collect-metadata) mode, made when the daemon runs with a store and kept
//! across its restarts like the containers' filters (a start without a store or
//! `--cleanup` removes it), and the tables the programs tunnel by: each overlay network's VNI, and
//! the endpoints of other hosts (where they live, under which VNI, with which MAC), kept
//! in line with what the store holds. The device has no forwarding table, no multicast
//! group and learns nothing: the programs give every frame its remote host. The hosts
//! are reached over one underlay family, IPv4 or IPv6, that of `--advertise-address`:
//! a host of the other family is refused (at start) or left out (when it joins later).
//! This module never decides which networks or endpoints exist: it follows the store's
//! mirror.

use std::{collections::HashMap, net::IpAddr};

use anyhow::{Context, Result, bail};
use dataplane_common::{EndpointKey, RemoteEndpoint, TunnelConfig, tunnel_host_v4, tunnel_host_v6};

use crate::{
    maps::{Datapath, endpoint_key},
    nat,
    netlink::Netlink,
    state::Network,
    store::Mirror,
};

/// The device's name: one per host (per daemon namespace).
pub const DEVICE: &str = "dp-vxlan";
/// The IANA port of VXLAN (`--vxlan-port`'s default).
pub const DEFAULT_PORT: u16 = 4789;
/// The underlay MTU assumed when no link of the host can tell it.
const ETHERNET_MTU: u32 = 1500;

/// The family the hosts reach each other by: that of `--advertise-address` (IPv4 when
/// the host has none to give). Every host of a store uses the same.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Underlay {
    Ipv4,
    Ipv6,
}

impl Underlay {
    pub fn of(advertise: Option<IpAddr>) -> Self {
        match advertise {
            Some(IpAddr::V6(_)) => Self::Ipv6,
            _ => Self::Ipv4,
        }
    }

    /// What VXLAN adds to each frame: the outer IP header (IPv4's 20 bytes, IPv6's 40),
    /// UDP (8), VXLAN (8) and the inner Ethernet header (14).
    pub fn overhead(self) -> u32 {
        match self {
            Self::Ipv4 => 50,
            Self::Ipv6 => 70,
        }
    }

    fn holds(self, ip: IpAddr) -> bool {
        Self::of(Some(ip)) == self
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Ipv4 => "IPv4",
            Self::Ipv6 => "IPv6",
        }
    }

    /// The programs' setting: their tunnel keys' family.
    fn config(self, ifindex: u32) -> TunnelConfig {
        let flags = if self == Self::Ipv6 { TunnelConfig::IPV6_UNDERLAY } else { 0 };
        TunnelConfig { ifindex, flags }
    }
}

/// `ip` as the programs' tunnel keys take a host's address.
fn tunnel_host(ip: IpAddr) -> [u32; 4] {
    match ip {
        IpAddr::V4(ip) => tunnel_host_v4(ip.octets()),
        IpAddr::V6(ip) => tunnel_host_v6(ip.octets()),
    }
}

/// Where other hosts reach this one when `--advertise-address` does not say: the
/// uplink's IPv4 address (as Docker swarm's `--advertise-addr` defaults to the address of
/// the default route's interface), else, on a host whose only default route is IPv6's,
/// the first global IPv6 address of that route's interface.
pub async fn default_advertise_address(
    netlink: &Netlink,
    uplink: Option<&nat::Uplink>,
) -> Result<Option<IpAddr>> {
    if let Some(uplink) = uplink
        && !uplink.addr.is_unspecified()
    {
        return Ok(Some(IpAddr::V4(uplink.addr)));
    }
    let default6 = netlink
        .default_gateways()
        .await?
        .into_iter()
        .find_map(|(gateway, oif)| oif.filter(|_| gateway.is_ipv6()));
    let Some(index) = default6 else { return Ok(None) };
    Ok(netlink.ipv6_global_addresses(index).await?.into_iter().next().map(IpAddr::V6))
}

/// Refuses a host whose `advertise` address is of another family than those other hosts
/// recorded in the store: VXLAN between them would need both, and each daemon tunnels
/// over one.
pub fn refuse_mixed_underlay(mirror: &Mirror, host: &str, advertise: IpAddr) -> Result<()> {
    let ours = Underlay::of(Some(advertise));
    let other = mirror.remote_endpoints(host).find_map(|r| r.host_address.filter(|a| !ours.holds(*a)));
    if let Some(theirs) = other {
        let theirs_family = Underlay::of(Some(theirs)).name();
        bail!(
            "--advertise-address {advertise} is {}, but another host of the store is reached at {theirs} \
             ({theirs_family}): the hosts of a store tunnel over one underlay family; give this daemon an \
             {theirs_family} --advertise-address, or move every host to {} (stop them all, then start \
             each with an {} --advertise-address)",
            ours.name(),
            ours.name(),
            ours.name()
        );
    }
    Ok(())
}

/// Makes the device on UDP `port`, or keeps the one an earlier run left on that port (its
/// tables are pinned: flows between hosts go on across a restart), attaches `from_tunnel`
/// to it and tells the programs where it is and which family `underlay` is.
/// Returns the MTU of overlay networks' containers: the underlay's less the family's
/// overhead. The underlay is the link holding `advertise`, else the uplink.
pub async fn setup(
    netlink: &Netlink,
    datapath: &mut Datapath,
    port: u16,
    advertise: Option<IpAddr>,
    uplink: Option<&str>,
) -> Result<u32> {
    let family = Underlay::of(advertise);
    let index = match netlink.external_vxlan_port(DEVICE).await? {
        Some(kept) if kept == port => netlink.require_index(DEVICE).await?,
        _ => {
            netlink.delete_link(DEVICE).await?;
            netlink.create_vxlan(DEVICE, port).await?
        }
    };
    netlink.set_up(index).await.with_context(|| format!("setting {DEVICE} up"))?;
    datapath.attach_tunnel(DEVICE, family.config(index))?;
    let underlay = match advertise {
        Some(ip) => netlink.link_holding(ip).await?,
        None => None,
    };
    let underlay = match underlay {
        Some(index) => Some(index),
        None => nat::find_uplink(netlink, uplink).await?.map(|u| u.index),
    };
    let underlay_mtu = match underlay {
        Some(index) => netlink.link_mtu(index).await?.unwrap_or(ETHERNET_MTU),
        None => ETHERNET_MTU,
    };
    let mtu = underlay_mtu - family.overhead();
    log::info!(
        "overlay networks tunnel through {DEVICE} on UDP port {port} over {}; their containers' MTU is {mtu}",
        family.name()
    );
    if advertise.is_none() {
        log::warn!(
            "no --advertise-address: other hosts cannot tunnel to this one's containers; give the address they reach it by"
        );
    }
    Ok(mtu)
}

/// Removes the device (one left by an earlier run with a store) and empties the
/// tables: the programs then leave overlay frames for other hosts to the kernel, which
/// has no way there.
pub async fn teardown(netlink: &Netlink, datapath: &mut Datapath) -> Result<()> {
    datapath.detach_tunnel(DEVICE)?;
    Tables::default().apply(datapath)?;
    netlink.delete_link(DEVICE).await
}

/// What the programs' tunnel tables should hold.
#[derive(Debug, Default, PartialEq)]
pub struct Tables {
    /// VNI → the overlay network's index on this host.
    pub networks: HashMap<u32, u32>,
    pub endpoints: HashMap<EndpointKey, RemoteEndpoint>,
    /// The addresses of other hosts left out for being of another family than
    /// `underlay`'s, which this host does not tunnel over.
    pub other_family: std::collections::BTreeSet<IpAddr>,
}

impl Tables {
    /// The tables for what `mirror` holds: the networks this host has that carry a VNI,
    /// and the endpoints of other hosts than `host` on them, by each of their addresses
    /// (IPv4 and IPv6 alike, whichever the underlay's family). An endpoint whose host gave
    /// no address of `underlay`'s family cannot be reached and is left out.
    pub fn of(mirror: &Mirror, host: &str, local: &[Network], underlay: Underlay) -> Self {
        let mut tables = Self::default();
        let mut vnis = HashMap::new();
        for shared in mirror.networks.values() {
            let (Some(vni), Some(net)) = (shared.vni, local.iter().find(|n| n.id == shared.id)) else {
                continue;
            };
            tables.networks.insert(vni, net.index);
            vnis.insert(shared.id.as_str(), (vni, net.index));
        }
        for record in mirror.remote_endpoints(host) {
            let (Some(&(vni, index)), Some(host)) =
                (vnis.get(record.network_id.as_str()), record.host_address)
            else {
                continue;
            };
            if !underlay.holds(host) {
                tables.other_family.insert(host);
                continue;
            }
            let remote = RemoteEndpoint { host: tunnel_host(host), vni, mac: record.mac.0, _pad: [0; 2] };
            for ip in record.addresses() {
                tables.endpoints.insert(endpoint_key(index, ip), remote);
            }
        }
        tables
    }

    /// Brings the programs' tables in line: what is wanted written, what is not removed.
    pub fn apply(&self, datapath: &mut Datapath) -> Result<()> {
        let present = datapath.remote_endpoints()?;
        for key in present.keys().filter(|k| !self.endpoints.contains_key(k)) {
            datapath.remove_remote_endpoint(*key)?;
        }
        for (key, remote) in &self.endpoints {
            if present.get(key) != Some(remote) {
                datapath.set_remote_endpoint(*key, *remote)?;
            }
        }
        let present = datapath.tunnel_networks()?;
        for vni in present.keys().filter(|v| !self.networks.contains_key(v)) {
            datapath.remove_tunnel_network(*vni)?;
        }
        for (vni, index) in &self.networks {
            if present.get(vni) != Some(index) {
                datapath.set_tunnel_network(*vni, *index)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::{
        state::MacAddr,
        store::{EndpointRecord, SharedNetwork},
    };

    fn record(net: &Network, host: &str, address: Option<IpAddr>, last: u8) -> EndpointRecord {
        EndpointRecord {
            network_id: net.id.clone(),
            endpoint_id: format!("e{last}"),
            ip: Some(Ipv4Addr::new(10, 9, 0, last)),
            ip6: None,
            mac: MacAddr([2, 0x42, 10, 9, 0, last]),
            host: host.into(),
            host_address: address,
            name: format!("c{last}"),
            aliases: vec![],
        }
    }

    #[test]
    fn other_hosts_endpoints_are_tunnelled_to_under_their_networks_vni_and_local_index() {
        let prod = Network::sample("prod", 9);
        let legacy = Network::sample("legacy", 10);
        let elsewhere = Network::sample("elsewhere", 11);
        let mut mirror = Mirror::default();
        for (net, vni) in [(&prod, Some(4096)), (&legacy, None), (&elsewhere, Some(4097))] {
            let shared = SharedNetwork { vni, ..SharedNetwork::of(net) };
            mirror.networks.insert(net.name.clone(), shared);
        }
        let b = Some(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 12)));
        let records = [
            record(&prod, "b", b, 2),
            record(&prod, "a", Some(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 11))), 3),
            record(&prod, "c", None, 4),
            record(&prod, "c", Some("2001:db8::1".parse().unwrap()), 5),
            record(&legacy, "b", b, 6),
            record(&elsewhere, "b", b, 7),
        ];
        for r in records {
            mirror.endpoints.insert(r.endpoint_id.clone(), r);
        }
        // This host ("a") has prod at index 3 and legacy at index 4, not `elsewhere`.
        let local = [Network { index: 3, ..prod.clone() }, Network { index: 4, ..legacy }];
        let tables = Tables::of(&mirror, "a", &local, Underlay::Ipv4);
        assert_eq!(tables.networks, HashMap::from([(4096, 3)]), "only local networks with a VNI");
        let key = endpoint_key(3, IpAddr::V4(Ipv4Addr::new(10, 9, 0, 2)));
        assert_eq!(tables.endpoints.len(), 1, "own, unreachable and other networks' endpoints left out");
        let remote = tables.endpoints[&key];
        assert_eq!(
            remote.host,
            [u32::from(Ipv4Addr::new(198, 51, 100, 12)), 0, 0, 0],
            "tunnelled to the endpoint's host, as remote_ipv4 takes it"
        );
        assert_eq!(
            tables.other_family,
            [IpAddr::from("2001:db8::1".parse::<std::net::Ipv6Addr>().unwrap())].into(),
            "a host reached over IPv6 is left out of an IPv4 underlay, and told"
        );
        assert_eq!((remote.vni, remote.mac), (4096, [2, 0x42, 10, 9, 0, 2]), "under its network's VNI");
    }

    #[test]
    fn an_endpoint_with_ipv6_is_tunnelled_to_by_each_address_and_an_ipv6_only_one_by_its_own() {
        let prod = Network::sample("prod", 9);
        let mut mirror = Mirror::default();
        mirror
            .networks
            .insert(prod.name.clone(), SharedNetwork { vni: Some(4096), ..SharedNetwork::of(&prod) });
        let b = Some(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 12)));
        let dual = EndpointRecord { ip6: Some("fd00:9::2".parse().unwrap()), ..record(&prod, "b", b, 2) };
        let only6 =
            EndpointRecord { ip: None, ip6: Some("fd00:9::3".parse().unwrap()), ..record(&prod, "b", b, 3) };
        for r in [dual, only6] {
            mirror.endpoints.insert(r.endpoint_id.clone(), r);
        }
        let tables = Tables::of(&mirror, "a", &[Network { index: 3, ..prod }], Underlay::Ipv4);
        let keys = [
            IpAddr::V4(Ipv4Addr::new(10, 9, 0, 2)),
            "fd00:9::2".parse().unwrap(),
            "fd00:9::3".parse().unwrap(),
        ];
        assert_eq!(tables.endpoints.len(), 3, "one entry per address: {:?}", tables.endpoints.keys());
        for ip in keys {
            let remote =
                tables.endpoints.get(&endpoint_key(3, ip)).unwrap_or_else(|| panic!("{ip} is missing"));
            assert_eq!(remote.host, tunnel_host_v4([198, 51, 100, 12]), "{ip}: over the IPv4 underlay");
            assert_eq!(remote.vni, 4096, "{ip}: under its network's VNI");
        }
        let mac = |ip: &str| tables.endpoints[&endpoint_key(3, ip.parse().unwrap())].mac;
        assert_eq!(
            mac("fd00:9::2"),
            [2, 0x42, 10, 9, 0, 2],
            "the IPv6 address answers with the endpoint's MAC"
        );
    }

    #[test]
    fn over_an_ipv6_underlay_hosts_are_tunnelled_to_by_their_ipv6_address_and_ipv4_ones_left_out() {
        let prod = Network::sample("prod", 9);
        let mut mirror = Mirror::default();
        mirror
            .networks
            .insert(prod.name.clone(), SharedNetwork { vni: Some(4096), ..SharedNetwork::of(&prod) });
        let b: std::net::Ipv6Addr = "2001:db8:100::12".parse().unwrap();
        let dual = EndpointRecord {
            ip6: Some("fd00:9::2".parse().unwrap()),
            ..record(&prod, "b", Some(IpAddr::V6(b)), 2)
        };
        let over_ipv4 = record(&prod, "c", Some(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 13))), 3);
        for r in [dual, over_ipv4] {
            mirror.endpoints.insert(r.endpoint_id.clone(), r);
        }
        let tables = Tables::of(&mirror, "a", &[Network { index: 3, ..prod }], Underlay::Ipv6);
        assert_eq!(tables.endpoints.len(), 2, "B's endpoint by both its addresses: {:?}", tables.endpoints);
        for ip in [IpAddr::V4(Ipv4Addr::new(10, 9, 0, 2)), "fd00:9::2".parse().unwrap()] {
            let remote = tables.endpoints[&endpoint_key(3, ip)];
            let bytes: Vec<u8> = remote.host.iter().flat_map(|w| w.to_ne_bytes()).collect();
            assert_eq!(bytes, b.octets(), "{ip}: tunnelled to B's IPv6 address, its bytes in order");
            assert_eq!(remote.vni, 4096, "{ip}: under its network's VNI");
        }
        assert_eq!(
            tables.other_family,
            [IpAddr::V4(Ipv4Addr::new(198, 51, 100, 13))].into(),
            "a host reached over IPv4 is left out of an IPv6 underlay, and told"
        );
    }

    #[test]
    fn the_overhead_and_the_programs_key_family_follow_the_advertised_address() {
        let v6 = Underlay::of(Some("2001:db8::11".parse().unwrap()));
        assert_eq!((v6, v6.overhead()), (Underlay::Ipv6, 70), "outer IPv6 is 40 bytes, not 20");
        assert_eq!(v6.config(7), TunnelConfig { ifindex: 7, flags: TunnelConfig::IPV6_UNDERLAY });
        let v4 = Underlay::of(Some(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 11))));
        assert_eq!((v4, v4.overhead(), v4.config(7).flags), (Underlay::Ipv4, 50, 0));
        assert_eq!(Underlay::of(None), Underlay::Ipv4, "no address: IPv4, as before");
    }

    #[test]
    fn a_host_of_the_other_underlay_family_is_refused_naming_the_flag() {
        let prod = Network::sample("prod", 9);
        let mut mirror = Mirror::default();
        let b = record(&prod, "b", Some(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 12))), 2);
        let own = record(&prod, "a", Some("2001:db8::99".parse().unwrap()), 3);
        for r in [b, own] {
            mirror.endpoints.insert(r.endpoint_id.clone(), r);
        }
        let err =
            refuse_mixed_underlay(&mirror, "a", "2001:db8::11".parse().unwrap()).unwrap_err().to_string();
        for part in [
            "--advertise-address 2001:db8::11 is IPv6",
            "reached at 198.51.100.12 (IPv4)",
            "give this daemon an IPv4 --advertise-address",
        ] {
            assert!(err.contains(part), "{part:?} is not said: {err}");
        }
        refuse_mixed_underlay(&mirror, "a", IpAddr::V4(Ipv4Addr::new(198, 51, 100, 11)))
            .expect("the same family as the others, and its own old records do not count");
    }
}
