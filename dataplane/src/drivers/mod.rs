//! Network drivers: how a network, and an endpoint (a namespace's attachment to it), are
//! built in the system and in the maps. Chosen by the network's `driver`:
//! - `bridge`: a kernel bridge as slow path, veths with the eBPF fast path on them;
//! - `macvlan`: interfaces on a parent link, on the parent's segment, no host-side device;
//! - `overlay`: a network shared by several hosts through the store; on each host it is
//!   built as a bridge network (its cross-host datapath is still to come).
//!
//! Every function is idempotent, so the daemon uses the same calls to build, to restore
//! after a restart, and to undo a half-made step.

use std::collections::BTreeMap;

use anyhow::{Context, Result};

use crate::{
    maps::Datapath,
    netlink::{self, LinkReaper, Netlink},
    state::{Endpoint, Network},
};

pub mod bridge;
pub mod macvlan;

pub const DRIVERS: [&str; 3] = ["bridge", "macvlan", crate::store::OVERLAY_DRIVER];

pub fn is_macvlan(net: &Network) -> bool {
    net.driver == "macvlan"
}

pub async fn setup_network(nl: &Netlink, dp: &mut Datapath, net: &Network) -> Result<()> {
    if is_macvlan(net) {
        macvlan::setup_network(nl, net).await
    } else {
        bridge::setup_network(nl, dp, net).await
    }
}

pub async fn teardown_network(nl: &Netlink, dp: &mut Datapath, net: &Network) -> Result<()> {
    if is_macvlan(net) { Ok(()) } else { bridge::teardown_network(nl, dp, net).await }
}

/// The bridge of the network that takes its next container (0 where the driver has none),
/// given how many endpoints each of its bridges holds.
pub fn bridge_for(net: &Network, occupancy: &BTreeMap<u8, usize>) -> Result<u8> {
    if is_macvlan(net) { Ok(0) } else { bridge::bridge_for(net, occupancy) }
}

/// Builds or re-arms an endpoint; returns the host-side ifindex the programs run on,
/// 0 when the driver has none (macvlan).
pub async fn connect(
    nl: &Netlink,
    dp: &mut Datapath,
    net: &Network,
    endpoint: &Endpoint,
    publishes: bool,
) -> Result<u32> {
    if is_macvlan(net) {
        macvlan::connect(nl, net, endpoint).await.map(|()| 0)
    } else {
        bridge::connect(nl, dp, net, endpoint, publishes).await
    }
}

/// Removes an endpoint; its host-side interface goes through `later` when given (see
/// `LinkReaper`). A macvlan interface lives in the endpoint's namespace and goes now.
pub async fn disconnect(
    nl: &Netlink,
    dp: &mut Datapath,
    net: &Network,
    endpoint: &Endpoint,
    later: Option<&LinkReaper>,
) -> Result<()> {
    if is_macvlan(net) {
        macvlan::disconnect(endpoint).await
    } else {
        bridge::disconnect(nl, dp, net, endpoint, later).await
    }
}

/// Whether an endpoint's interface gets its namespace's default route: the first one,
/// `eth0`, as on Docker (CNI runtimes name their primary interface so too).
pub fn takes_default_route(ifname: &str) -> bool {
    ifname == "eth0"
}

/// How an endpoint's interface is kept off the IPv6 it is not given: all of it on a network
/// without IPv6, all but its address and default route on one with IPv6. Left on, every
/// new interface would take a link-local address and send neighbour discovery and MLD to
/// every container of the network, work that grows with the network.
#[derive(Clone, Copy)]
enum Ipv6Off {
    /// No address of its own (`IFLA_INET6_ADDR_GEN_MODE` none, over rtnetlink), so it
    /// sends nothing; the router advertisements it would still take can come only from
    /// other containers, and the programs drop those. No /proc/sys write: a lookup there
    /// costs time that grows with the host's namespaces (~1 ms at 2,000).
    NoAddress,
    /// `disable_ipv6`, as Docker does, where no program guards the segment (macvlan, whose
    /// routers may advertise).
    Disabled,
    /// No address of its own, and router advertisements ignored (`accept_ra` 0): IPv6 on a
    /// segment no program guards (macvlan with `--ipv6`), whose routers would otherwise add
    /// addresses and routes beside the ones the network gives.
    NoAddressNorRouters,
}

/// Configures an endpoint's new interface from inside its namespace (`inside`): IPv6 off
/// first, then its address, up, and on the first network (`eth0`) the default route of
/// each family that is not isolated, as on Docker.
async fn configure_inside(inside: &Netlink, net: &Network, endpoint: &Endpoint, ipv6: Ipv6Off) -> Result<()> {
    inside.set_up(inside.require_index("lo").await?).await?;
    let index = inside.require_index(&endpoint.ifname).await?;
    match ipv6 {
        Ipv6Off::NoAddress => inside.generate_no_ipv6_address(index).await?,
        Ipv6Off::Disabled => netlink::disable_ipv6_in(&endpoint.netns, &endpoint.ifname)?,
        Ipv6Off::NoAddressNorRouters => {
            netlink::ignore_router_advertisements_in(&endpoint.netns, &endpoint.ifname)?;
            inside.generate_no_ipv6_address(index).await?;
        }
    }
    if let Some((ip, plan)) = endpoint.ip.zip(net.plan()) {
        inside.add_address(index, ip.into(), plan.subnet.prefix_len()).await?;
    }
    let ipv6 = net.ipv6.zip(endpoint.ip6);
    if let Some((v6, ip6)) = ipv6 {
        inside.add_address(index, ip6.into(), v6.subnet.prefix_len()).await?;
        // Neighbour discovery needs a link-local address: without one, the kernel sends
        // none of the probes that keep a neighbour (the gateway) resolved, and after a pause
        // in one-way traffic the entry fails. Made as the kernel would (EUI-64 of the MAC),
        // without duplicate address detection: the MAC is the network's to give.
        let link_local = std::net::Ipv6Addr::from(dataplane_common::eui64_link_local(endpoint.mac.0));
        inside.add_address(index, link_local.into(), 64).await?;
    }
    inside.set_up(index).await?;
    // An isolated family has no gateway to route through: its subnet's own route only.
    if takes_default_route(&endpoint.ifname) {
        let isolated = |ipv6| net.bridge_options.isolated(ipv6);
        if let Some(gateway) = net.gateway.filter(|_| endpoint.ip.is_some() && !isolated(false)) {
            inside.add_default_route(gateway.into()).await.context("inside the endpoint's namespace")?;
        }
        if let Some((v6, _)) = ipv6.filter(|_| !isolated(true)) {
            inside.add_default_route(v6.gateway.into()).await.context("inside the endpoint's namespace")?;
        }
    }
    Ok(())
}
