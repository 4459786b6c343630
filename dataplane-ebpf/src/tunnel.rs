//! The overlay's tunnel (Cilium's tunnel mode): endpoints of overlay networks that live on
//! other hosts, reached through the host's one VXLAN device in collect-metadata mode.
//! A frame for one leaves with its tunnel key (the network's VNI, the other host) and is
//! redirected to the device, which encapsulates it; a frame the device decapsulated is
//! delivered into the local endpoint its VNI's network has for its destination, if it
//! comes from an endpoint of that network on the host that sent it, else dropped. ARP
//! for a remote endpoint is answered here from the table: no ARP, broadcast or multicast
//! crosses the tunnel, and the kernel keeps no forwarding table for it.
//! Owns REMOTE_ENDPOINTS, TUNNEL_NETWORKS and TUNNEL_CONFIG, which the daemon fills from
//! the shared store; reads the local endpoints' tables, never writes them.

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT, bpf_tunnel_key},
    helpers::{bpf_redirect, bpf_redirect_peer, bpf_skb_get_tunnel_key, bpf_skb_set_tunnel_key},
    macros::map,
    maps::{Array, HashMap},
    programs::TcContext,
};
use dataplane_common::{EndpointKey, InterfaceConfig, IpAddress, Path, RemoteEndpoint, TunnelConfig};
use network_types::eth::EthHdr;

use crate::{
    endpoint, packet,
    parse::{self, ARP_REPLY, ARP_REQUEST, ArpIpv4, ETH_P_ARP, Frame},
};

/// Overlay endpoints on other hosts, by network index and address.
#[map]
static REMOTE_ENDPOINTS: HashMap<EndpointKey, RemoteEndpoint> = HashMap::pinned(65536, 0);

/// The overlay network each VNI stands for on this host (its network index).
#[map]
static TUNNEL_NETWORKS: HashMap<u32, u32> = HashMap::pinned(4096, 0);

#[map]
static TUNNEL_CONFIG: Array<TunnelConfig> = Array::pinned(1, 0);

/// The time to live of the outer header.
const OUTER_TTL: u8 = 64;

/// The endpoint at `ip` of network `network` on another host, read in place.
#[inline(always)]
pub fn remote(network: u32, ip: [u8; 4]) -> Option<&'static RemoteEndpoint> {
    let key = EndpointKey { network, ip: IpAddress::v4(ip) };
    // SAFETY: the entry stays valid for the program's run (the map is RCU-protected); the
    // daemon replaces entries whole.
    unsafe { REMOTE_ENDPOINTS.get(&key) }
}

/// Sends the frame to `dst`, an endpoint of the sender's network on another host, through
/// the VXLAN device, unless the network keeps its containers apart (`icc=false`). Without
/// the device (the daemon runs no store), the kernel has it.
/// A subprogram: the tunnel key stays off the stack of `from_container`'s other paths.
#[inline(never)]
pub fn send(ctx: &TcContext, iface: &InterfaceConfig, dst: &RemoteEndpoint) -> (Path, i32) {
    if iface.flags & InterfaceConfig::ICC_DISABLED != 0 {
        return (Path::DroppedIcc, TC_ACT_SHOT as i32);
    }
    let device = match TUNNEL_CONFIG.get(0) {
        Some(config) if config.ifindex != 0 => config.ifindex,
        _ => return (Path::SlowPathIp, TC_ACT_OK as i32),
    };
    // The sender's ARP for it was answered with this MAC (`answer_arp`); setting it keeps
    // a stale neighbour entry from black-holing.
    if let Some(eth) = parse::header_ptr::<EthHdr>(ctx, 0) {
        // SAFETY: header_ptr bounds-checked the Ethernet header.
        unsafe { (*eth).dst_addr = dst.mac };
    }
    // SAFETY: all-zero is a valid tunnel key (no flags, no label, source left to routing).
    let mut key: bpf_tunnel_key = unsafe { core::mem::zeroed() };
    key.tunnel_id = dst.vni;
    key.__bindgen_anon_1.remote_ipv4 = dst.host;
    key.tunnel_ttl = OUTER_TTL;
    // SAFETY: the helper reads `size` bytes of the key on our stack.
    let set = unsafe { bpf_skb_set_tunnel_key(ctx.skb.skb, &mut key, size_of::<bpf_tunnel_key>() as u32, 0) };
    if set != 0 {
        return (Path::DroppedTunnel, TC_ACT_SHOT as i32);
    }
    // SAFETY: a plain helper call; it only records the target.
    let action = unsafe { bpf_redirect(device, 0) } as i32;
    (Path::Tunnelled, action)
}

/// Answers, back into the container behind `iface`, its ARP request for an endpoint of
/// its network on another host, with that endpoint's MAC. `None` for every other frame:
/// the kernel (the network's bridge) has it. The caller checked the request's sender
/// (`source::check_link`), which also made the ARP header linear.
/// A subprogram: the request and its reply stay off the stack of the IP paths.
#[inline(never)]
pub fn answer_arp(ctx: &TcContext, iface: &InterfaceConfig, ifindex: u32) -> Option<(Path, i32)> {
    let eth = parse::header_ptr::<EthHdr>(ctx, 0)?;
    // SAFETY: header_ptr bounds-checked the Ethernet header.
    if unsafe { (*eth).ether_type } != ETH_P_ARP {
        return None;
    }
    let request = packet::read_linear::<ArpIpv4>(ctx, EthHdr::LEN)?;
    if request.operation != ARP_REQUEST || !iface.may_hold_v4(request.target_ip) {
        return None;
    }
    let target = remote(iface.network, request.target_ip)?;
    let reply = ArpIpv4 {
        operation: ARP_REPLY,
        sender_mac: target.mac,
        sender_ip: request.target_ip,
        target_mac: request.sender_mac,
        target_ip: request.sender_ip,
        ..request
    };
    if packet::write(ctx, EthHdr::LEN, reply).is_err() {
        return None;
    }
    // Pointers from before a helper that may move the data are stale: take it anew.
    let eth = parse::header_ptr::<EthHdr>(ctx, 0)?;
    // SAFETY: as above.
    unsafe {
        (*eth).dst_addr = request.sender_mac;
        (*eth).src_addr = target.mac;
    }
    // Out of the host-side veth's egress: into the container that asked.
    // SAFETY: a plain helper call.
    let action = unsafe { bpf_redirect(ifindex, 0) } as i32;
    Some((Path::ArpAnswered, action))
}

/// A frame the VXLAN device decapsulated: into the local endpoint of the VNI's network
/// that it is for, if it comes from an endpoint of that network on the host that sent it.
/// Anything else is dropped: the tunnel carries only unicast IPv4 between endpoints.
#[inline(always)]
pub fn from_tunnel(ctx: &TcContext) -> (Path, i32) {
    const DROP: (Path, i32) = (Path::DroppedTunnel, TC_ACT_SHOT as i32);
    // SAFETY: all-zero is a valid key for the helper to fill.
    let mut key: bpf_tunnel_key = unsafe { core::mem::zeroed() };
    // SAFETY: the helper writes at most `size` bytes of the key on our stack.
    let got = unsafe { bpf_skb_get_tunnel_key(ctx.skb.skb, &mut key, size_of::<bpf_tunnel_key>() as u32, 0) };
    if got != 0 {
        return DROP;
    }
    // SAFETY: a plain map lookup; the value is copied out.
    let Some(network) = (unsafe { TUNNEL_NETWORKS.get(&key.tunnel_id).copied() }) else {
        return DROP;
    };
    let Frame::Ipv4(frame) = parse::parse(ctx) else {
        return DROP;
    };
    // SAFETY: the union holds the IPv4 address: the key was read for an IPv4 underlay.
    let sender_host = unsafe { key.__bindgen_anon_1.remote_ipv4 };
    if !remote(network, frame.src).is_some_and(|src| src.host == sender_host) {
        return DROP;
    }
    let Some(dst) = endpoint::lookup(network, IpAddress::v4(frame.dst)) else {
        return DROP;
    };
    if let Some(eth) = parse::header_ptr::<EthHdr>(ctx, 0) {
        // SAFETY: header_ptr bounds-checked the Ethernet header.
        unsafe { (*eth).dst_addr = dst.mac };
    }
    // SAFETY: a plain helper call; it only records the target and flags.
    let action = unsafe { bpf_redirect_peer(dst.host_ifindex, 0) } as i32;
    (Path::FromTunnel, action)
}
