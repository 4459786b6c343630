//! The macvlan driver: each endpoint gets a macvlan interface on the network's parent
//! link, with an address of the parent's segment (and an IPv6 one with `--ipv6`), and
//! talks to that segment's hosts directly (no bridge, no NAT, no eBPF on the way: the
//! kernel switches it). Its subnet stays out of SUBNETS: it belongs to the parent's
//! segment, where it is reachable like any other host of that segment (Docker's macvlan
//! behaves the same).

use anyhow::{Context, Result, anyhow};
use rtnetlink::packet_route::link::MacVlanMode;

use crate::{
    netlink::Netlink,
    netns,
    state::{Endpoint, Network},
};

pub fn parent(net: &Network) -> Result<&str> {
    net.options
        .get("parent")
        .map(String::as_str)
        .ok_or_else(|| anyhow!("network {}: macvlan needs -o parent=IFACE", net.name))
}

pub async fn setup_network(nl: &Netlink, net: &Network) -> Result<()> {
    let parent = parent(net)?;
    nl.link_index(parent).await?.with_context(|| {
        format!("network {}: parent interface {parent} does not exist in the daemon's namespace", net.name)
    })?;
    Ok(())
}

/// Creates the endpoint's macvlan interface inside its namespace (or, after a restart,
/// finds it there).
pub async fn connect(nl: &Netlink, net: &Network, endpoint: &Endpoint) -> Result<()> {
    let inside = Netlink::connect_in(&endpoint.netns)?;
    if inside.link_index(&endpoint.ifname).await?.is_some() {
        return Ok(());
    }
    let parent_index = nl.require_index(parent(net)?).await?;
    let ns = netns::open(&endpoint.netns)?;
    nl.create_macvlan_into(
        &endpoint.ifname,
        parent_index,
        MacVlanMode::Bridge,
        &ns,
        endpoint.mac.0,
        net.bridge_options.mtu,
    )
    .await?;
    let ipv6 = match net.ipv6 {
        Some(_) => super::Ipv6Off::NoAddressNorRouters,
        None => super::Ipv6Off::Disabled,
    };
    super::configure_inside(&inside, net, endpoint, ipv6).await
}

/// Removes the interface; a namespace already gone took it along.
pub async fn disconnect(endpoint: &Endpoint) -> Result<()> {
    if !endpoint.netns.exists() {
        return Ok(());
    }
    Netlink::connect_in(&endpoint.netns)?.delete_link(&endpoint.ifname).await
}
