//! The macvlan driver: each container gets a macvlan interface on the network's parent
//! link, with an address of the parent's segment, and talks to that segment's hosts
//! directly (no bridge, no NAT, no eBPF on the way: the kernel switches it). Its subnet
//! stays out of SUBNETS: it belongs to the parent's segment, where it is reachable like
//! any other host of that segment (Docker's macvlan behaves the same).

use std::path::Path;

use anyhow::{Context, Result, anyhow};
use rtnetlink::packet_route::link::MacVlanMode;

use crate::{
    netlink::Netlink,
    netns,
    state::{Attachment, Network},
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

/// Creates the container's macvlan interface inside its namespace (or, after a restart,
/// finds it there).
pub async fn connect(nl: &Netlink, net: &Network, container_netns: &Path, att: &Attachment) -> Result<()> {
    let inside = Netlink::connect_in(container_netns)?;
    if inside.link_index(&att.ifname).await?.is_some() {
        return Ok(());
    }
    let parent_index = nl.require_index(parent(net)?).await?;
    let ns = netns::open(container_netns)?;
    nl.create_macvlan_into(
        &att.ifname,
        parent_index,
        MacVlanMode::Bridge,
        &ns,
        att.mac.0,
        net.bridge_options.mtu,
    )
    .await?;
    super::configure_inside(&inside, container_netns, net, att).await
}

/// Removes the interface; a namespace already gone took it along.
pub async fn disconnect(container_netns: &Path, att: &Attachment) -> Result<()> {
    if !container_netns.exists() {
        return Ok(());
    }
    Netlink::connect_in(container_netns)?.delete_link(&att.ifname).await
}
