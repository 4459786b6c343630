//! The bridge driver. Each network has a kernel bridge holding the gateway address: it is
//! the slow path (ARP, broadcast, traffic to and from the host). Each container has a veth
//! pair enslaved to it, with `from_container` on the host side's tc ingress: unicast IPv4
//! between containers of the network is redirected by eBPF straight into the peer's
//! namespace and never crosses the bridge.
//!
//! Every function here is idempotent, so the daemon uses the same calls to build, to
//! restore after a restart, and to undo a half-made attachment.

use std::path::Path;

use anyhow::{Context, Result};
use dataplane_common::{Endpoint, InterfaceConfig};

use crate::{
    maps::{Datapath, v4_key},
    netlink::{self, Netlink},
    netns,
    state::{Attachment, Network},
};

pub async fn setup_network(nl: &Netlink, dp: &mut Datapath, net: &Network) -> Result<()> {
    let index = match nl.link_index(&net.bridge).await? {
        Some(index) => index,
        None => {
            nl.create_bridge(&net.bridge, crate::ipam::mac_for(net.gateway), net.bridge_options.mtu).await?
        }
    };
    nl.add_address(index, net.gateway, net.subnet.prefix_len()).await?;
    nl.set_up(index).await?;
    dp.set_subnet(net.subnet, net.index, net.gateway)
}

pub async fn teardown_network(nl: &Netlink, dp: &mut Datapath, net: &Network) -> Result<()> {
    dp.remove_subnet(net.subnet)?;
    nl.delete_link(&net.bridge).await
}

fn interface_config(net: &Network, publishes: bool, xdp_target: bool) -> InterfaceConfig {
    let mut flags = 0;
    if publishes {
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
    InterfaceConfig {
        network: net.index,
        flags,
        v4_subnet: net.subnet.network().octets(),
        v4_mask: net.subnet.netmask().octets(),
    }
}

/// Builds (or, after a restart, finds and re-arms) a container's attachment; returns the
/// host-side veth's ifindex.
pub async fn connect(
    nl: &Netlink,
    dp: &mut Datapath,
    net: &Network,
    container_netns: &Path,
    att: &Attachment,
    publishes: bool,
) -> Result<u32> {
    let host_index = match nl.link_index(&att.host_veth).await? {
        Some(index) => index,
        None => create_veth(nl, net, container_netns, att).await?,
    };
    let bridge = nl.require_index(&net.bridge).await?;
    nl.set_controller(host_index, bridge).await?;
    nl.set_port_isolated(host_index, !net.bridge_options.icc).await?;
    nl.set_up(host_index).await?;
    // Lets the programs ask the FIB how the host would route what the container sends
    // (bpf_fib_lookup requires forwarding on the input device). A bridge port routes
    // nothing itself, so this opens no path of its own.
    netlink::set_ipv4_conf(&att.host_veth, "forwarding", "1")?;
    // The uplink's XDP program hands packets for published ports to the container's veth
    // as frames, which a veth end takes only while its NAPI runs: GRO turns that on.
    let xdp_target = publishes
        && dp.uplink_xdp()
        && netlink::enable_gro_in(container_netns, &att.ifname)
            .inspect_err(|e| log::warn!("{}: published ports served from tc only: {e:#}", att.ifname))
            .is_ok();
    dp.set_interface(host_index, interface_config(net, publishes, xdp_target))?;
    dp.set_endpoint(
        v4_key(net.index, att.ip),
        Endpoint { host_ifindex: host_index, mac: att.mac.0, _pad: [0; 2] },
    )?;
    dp.attach(&att.host_veth)?;
    Ok(host_index)
}

async fn create_veth(nl: &Netlink, net: &Network, container_netns: &Path, att: &Attachment) -> Result<u32> {
    let ns = netns::open(container_netns)?;
    let host =
        nl.create_veth_into(&att.host_veth, &ns, &att.ifname, att.mac.0, net.bridge_options.mtu).await?;

    let inside = Netlink::connect_in(container_netns)?;
    let lo = inside.require_index("lo").await?;
    inside.set_up(lo).await?;
    let eth = inside.require_index(&att.ifname).await?;
    inside.add_address(eth, att.ip, net.subnet.prefix_len()).await?;
    inside.set_up(eth).await?;
    // The first network gives the container its default route, as on Docker; networks
    // connected later only add their subnet.
    if att.ifname == "eth0" {
        inside.add_default_route(net.gateway).await.context("inside the container")?;
    }
    Ok(host)
}

/// Removes an attachment from the maps and the system; parts already gone are skipped.
pub async fn disconnect(nl: &Netlink, dp: &mut Datapath, net: &Network, att: &Attachment) -> Result<()> {
    dp.detach(&att.host_veth)?;
    if let Some(index) = nl.link_index(&att.host_veth).await? {
        dp.remove_interface(index)?;
    }
    // Only drop the endpoint if it still points at this attachment's veth.
    let key = v4_key(net.index, att.ip);
    if dp.endpoint(key)?.is_some() {
        dp.remove_endpoint(key)?;
    }
    // Deleting one end of a veth pair deletes the other, inside the container.
    nl.delete_link(&att.host_veth).await
}
