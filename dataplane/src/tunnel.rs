//! The host's VXLAN tunnel for overlay networks (Cilium's tunnel mode): one device in
//! external (collect-metadata) mode, made when the daemon runs with a store and kept
//! across its restarts like the containers' filters (a start without a store or
//! `--cleanup` removes it), and the tables the programs tunnel by: each overlay network's VNI, and
//! the endpoints of other hosts (where they live, under which VNI, with which MAC), kept
//! in line with what the store holds. The device has no forwarding table, no multicast
//! group and learns nothing: the programs give every frame its remote host. This module
//! never decides which networks or endpoints exist: it follows the store's mirror.

use std::{collections::HashMap, net::IpAddr};

use anyhow::{Context, Result};
use dataplane_common::{EndpointKey, RemoteEndpoint};

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
/// What VXLAN over IPv4 adds to each frame: outer IPv4 (20), UDP (8), VXLAN (8) and the
/// inner Ethernet header (14).
pub const OVERHEAD: u32 = 50;
/// The underlay MTU assumed when no link of the host can tell it.
const ETHERNET_MTU: u32 = 1500;

/// Makes the device on UDP `port`, or keeps the one an earlier run left on that port (its
/// tables are pinned: flows between hosts go on across a restart), attaches `from_tunnel`
/// to it and tells the programs where it is.
/// Returns the MTU of overlay networks' containers: the underlay's less `OVERHEAD`. The
/// underlay is the link holding `advertise`, else the uplink.
pub async fn setup(
    netlink: &Netlink,
    datapath: &mut Datapath,
    port: u16,
    advertise: Option<IpAddr>,
    uplink: Option<&str>,
) -> Result<u32> {
    let index = match netlink.external_vxlan_port(DEVICE).await? {
        Some(kept) if kept == port => netlink.require_index(DEVICE).await?,
        _ => {
            netlink.delete_link(DEVICE).await?;
            netlink.create_vxlan(DEVICE, port).await?
        }
    };
    netlink.set_up(index).await.with_context(|| format!("setting {DEVICE} up"))?;
    datapath.attach_tunnel(DEVICE, index)?;
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
    let mtu = underlay_mtu - OVERHEAD;
    log::info!("overlay networks tunnel through {DEVICE} on UDP port {port}; their containers' MTU is {mtu}");
    if !matches!(advertise, Some(IpAddr::V4(_))) {
        log::warn!(
            "no IPv4 --advertise-address: other hosts cannot tunnel to this one's containers; give the address they reach it by"
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
}

impl Tables {
    /// The tables for what `mirror` holds: the networks this host has that carry a VNI,
    /// and the endpoints of other hosts than `host` on them, by each of their addresses
    /// (IPv4 and IPv6 alike: the underlay stays IPv4). An endpoint whose host gave no
    /// IPv4 address cannot be reached and is left out.
    pub fn of(mirror: &Mirror, host: &str, local: &[Network]) -> Self {
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
            let (Some(&(vni, index)), Some(IpAddr::V4(host))) =
                (vnis.get(record.network_id.as_str()), record.host_address)
            else {
                continue;
            };
            let remote = RemoteEndpoint { host: u32::from(host), vni, mac: record.mac.0, _pad: [0; 2] };
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
        let tables = Tables::of(&mirror, "a", &local);
        assert_eq!(tables.networks, HashMap::from([(4096, 3)]), "only local networks with a VNI");
        let key = endpoint_key(3, IpAddr::V4(Ipv4Addr::new(10, 9, 0, 2)));
        assert_eq!(tables.endpoints.len(), 1, "own, unreachable and other networks' endpoints left out");
        let remote = tables.endpoints[&key];
        assert_eq!(
            Ipv4Addr::from(remote.host),
            Ipv4Addr::new(198, 51, 100, 12),
            "tunnelled to the endpoint's host"
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
        let tables = Tables::of(&mirror, "a", &[Network { index: 3, ..prod }]);
        let keys = [
            IpAddr::V4(Ipv4Addr::new(10, 9, 0, 2)),
            "fd00:9::2".parse().unwrap(),
            "fd00:9::3".parse().unwrap(),
        ];
        assert_eq!(tables.endpoints.len(), 3, "one entry per address: {:?}", tables.endpoints.keys());
        for ip in keys {
            let remote =
                tables.endpoints.get(&endpoint_key(3, ip)).unwrap_or_else(|| panic!("{ip} is missing"));
            assert_eq!(
                Ipv4Addr::from(remote.host),
                Ipv4Addr::new(198, 51, 100, 12),
                "{ip}: over the IPv4 underlay"
            );
            assert_eq!(remote.vni, 4096, "{ip}: under its network's VNI");
        }
        let mac = |ip: &str| tables.endpoints[&endpoint_key(3, ip.parse().unwrap())].mac;
        assert_eq!(
            mac("fd00:9::2"),
            [2, 0x42, 10, 9, 0, 2],
            "the IPv6 address answers with the endpoint's MAC"
        );
    }
}
