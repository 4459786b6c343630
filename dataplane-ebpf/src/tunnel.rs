//! The overlay's tunnel (Cilium's tunnel mode): endpoints of overlay networks that live on
//! other hosts, reached through the host's one VXLAN device in collect-metadata mode.
//! A frame for one leaves with its tunnel key (the network's VNI, the other host) and is
//! redirected to the device, which encapsulates it; a frame the device decapsulated is
//! delivered into the local endpoint its VNI's network has for its destination, if it
//! comes from an endpoint of that network on the host that sent it, else dropped. IPv4
//! and IPv6 alike inside, over an IPv4 or an IPv6 underlay (one per host, as
//! `TUNNEL_CONFIG` says). ARP and neighbour solicitations for a remote endpoint are
//! answered here from the table: no ARP, neighbour discovery multicast, broadcast or
//! multicast crosses the tunnel, and the kernel keeps no forwarding table for it.
//! Owns REMOTE_ENDPOINTS, TUNNEL_NETWORKS and TUNNEL_CONFIG, which the daemon fills from
//! the shared store; reads the local endpoints' tables, never writes them.

use aya_ebpf::{
    bindings::{BPF_F_TUNINFO_IPV6, BPF_F_ZERO_CSUM_TX, TC_ACT_OK, TC_ACT_SHOT, bpf_tunnel_key},
    helpers::{bpf_redirect, bpf_redirect_peer, bpf_skb_get_tunnel_key, bpf_skb_set_tunnel_key},
    macros::map,
    maps::{Array, HashMap},
    programs::TcContext,
};
use dataplane_common::{
    EndpointKey, IPPROTO_ICMPV6, InterfaceConfig, IpAddress, Path, RemoteEndpoint, TunnelConfig, csum,
};
use network_types::{eth::EthHdr, ip::Ipv6Hdr};

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

/// The tunnel key's flags over the IPv4 underlay: the outer UDP checksum is sent as
/// zero. In collect-metadata mode the key decides this, not the device's `udpcsum`
/// (`bpf_skb_set_tunnel_key` asks for a checksum unless told otherwise). Over IPv4 zero
/// means "none": what RFC 7348 says a VXLAN sender should send and every receiver must
/// accept, and what Cilium's tunnel mode sends (a kernel device with its defaults
/// computes one). The outer IPv4 header keeps its checksum and the inner packet its own,
/// end to end; a VNI corrupted on the way finds no network, or an inner source
/// `from_tunnel` does not take.
const KEY_FLAGS_V4: u64 = BPF_F_ZERO_CSUM_TX as u64;
/// Over an IPv6 underlay: an IPv6 key, and the outer UDP checksum computed. IPv6 has no
/// header checksum, so RFC 8200 asks for UDP's; a zero one is allowed only where both
/// ends are configured for it (RFC 6935), and the daemon's device is not
/// (`noudp6zerocsumtx`/`noudp6zerocsumrx`, `Netlink::create_vxlan`): a zero checksum
/// from another host is dropped by its kernel before `from_tunnel` sees it.
const KEY_FLAGS_V6: u64 = BPF_F_TUNINFO_IPV6 as u64;

/// The flags `bpf_skb_get_tunnel_key` and `bpf_skb_set_tunnel_key` take for the host's
/// underlay: an IPv6 key or an IPv4 one (`TunnelConfig::IPV6_UNDERLAY`).
#[inline(always)]
fn key_family(config: &TunnelConfig) -> u64 {
    if config.flags & TunnelConfig::IPV6_UNDERLAY != 0 { BPF_F_TUNINFO_IPV6 as u64 } else { 0 }
}

/// The endpoint at `ip` of network `network` on another host, read in place.
#[inline(always)]
pub fn remote(network: u32, ip: [u8; 4]) -> Option<&'static RemoteEndpoint> {
    let key = EndpointKey { network, ip: IpAddress::v4(ip) };
    // SAFETY: the entry stays valid for the program's run (the map is RCU-protected); the
    // daemon replaces entries whole.
    unsafe { REMOTE_ENDPOINTS.get(&key) }
}

/// The endpoint at IPv6 address `ip` of network `network` on another host, read in place.
#[inline(always)]
pub fn remote_v6(network: u32, ip: [u8; 16]) -> Option<&'static RemoteEndpoint> {
    let key = EndpointKey { network, ip: IpAddress::v6(ip) };
    // SAFETY: as in `remote`.
    unsafe { REMOTE_ENDPOINTS.get(&key) }
}

/// Sends the frame to `dst`, an endpoint of the sender's network on another host, through
/// the VXLAN device, unless the network keeps its containers apart (`icc=false`). Without
/// the device (the daemon runs no store), the kernel has it.
/// A subprogram: the tunnel key stays off the stack of `from_container`'s other paths.
#[inline(never)]
pub fn send(ctx: &TcContext, iface: &InterfaceConfig, dst: &RemoteEndpoint) -> (Path, i32) {
    tunnel_to(ctx, iface, dst)
}

/// IPv6 from a container (its source checked, unicast) for an endpoint of its network on
/// another host: through the VXLAN device as `send`. `None` for any other destination.
/// A subprogram of its own, called from `from_container`'s IPv6 steps.
#[inline(never)]
pub fn send_v6(ctx: &TcContext, iface: &InterfaceConfig) -> Option<(Path, i32)> {
    let frame = parse::parse_ipv6(ctx)?;
    let dst = remote_v6(iface.network, frame.dst)?;
    Some(tunnel_to(ctx, iface, dst))
}

#[inline(always)]
fn tunnel_to(ctx: &TcContext, iface: &InterfaceConfig, dst: &RemoteEndpoint) -> (Path, i32) {
    if iface.flags & InterfaceConfig::ICC_DISABLED != 0 {
        return (Path::DroppedIcc, TC_ACT_SHOT as i32);
    }
    let config = match TUNNEL_CONFIG.get(0) {
        Some(config) if config.ifindex != 0 => config,
        _ => return (Path::SlowPathIp, TC_ACT_OK as i32),
    };
    let device = config.ifindex;
    let flags = if key_family(config) != 0 { KEY_FLAGS_V6 } else { KEY_FLAGS_V4 };
    // The sender's ARP for it was answered with this MAC (`answer_arp`); setting it keeps
    // a stale neighbour entry from black-holing.
    if let Some(eth) = parse::header_ptr::<EthHdr>(ctx, 0) {
        // SAFETY: header_ptr bounds-checked the Ethernet header.
        unsafe { (*eth).dst_addr = dst.mac };
    }
    // SAFETY: all-zero is a valid tunnel key (no flags, no label, source left to routing).
    let mut key: bpf_tunnel_key = unsafe { core::mem::zeroed() };
    key.tunnel_id = dst.vni;
    // The whole union: an IPv4 host is `remote_ipv4`, its first word (`tunnel_host_v4`).
    key.__bindgen_anon_1.remote_ipv6 = dst.host;
    key.tunnel_ttl = OUTER_TTL;
    // SAFETY: the helper reads `size` bytes of the key on our stack.
    let set =
        unsafe { bpf_skb_set_tunnel_key(ctx.skb.skb, &mut key, size_of::<bpf_tunnel_key>() as u32, flags) };
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

/// ICMPv6 neighbour solicitation and advertisement (RFC 4861).
const ICMPV6_NEIGHBOUR_SOLICITATION: u8 = 135;
const ICMPV6_NEIGHBOUR_ADVERTISEMENT: u8 = 136;
/// NDP's option for a link-layer address, source (solicitations) and target
/// (advertisements), for Ethernet one 8-byte unit.
const OPTION_SOURCE_LINK_ADDRESS: u8 = 1;
const OPTION_TARGET_LINK_ADDRESS: u8 = 2;
/// An advertisement's flags: solicited, override (not a router).
const NA_SOLICITED_OVERRIDE: u8 = 0x60;
/// Neighbour discovery is valid only with the largest hop limit: it never crossed a router.
const ND_HOP_LIMIT: u8 = 255;

/// A neighbour solicitation with its source link-layer address option, the form a node
/// with an address sends to resolve a neighbour, and a neighbour advertisement with its
/// target link-layer address option: the same 32 bytes after the IPv6 header.
#[repr(C)]
#[derive(Clone, Copy)]
struct NeighbourMessage {
    icmp_type: u8,
    code: u8,
    checksum: u16,
    flags: [u8; 4],
    target: [u8; 16],
    option_type: u8,
    option_len: u8,
    option_mac: [u8; 6],
}

/// The offset of the ICMPv6 message right after the fixed IPv6 header.
const ND_OFFSET: usize = EthHdr::LEN + Ipv6Hdr::LEN;
/// The whole frame of a solicitation with its one option, and of the advertisement.
const ND_FRAME_LEN: u32 = (ND_OFFSET + size_of::<NeighbourMessage>()) as u32;

/// Answers, back into the container behind `iface`, its neighbour solicitation for the
/// IPv6 address of an endpoint of its network on another host, with that endpoint's MAC
/// (a solicited advertisement from the target's address): the counterpart of
/// `answer_arp`. `None` for every other frame: the kernel (the bridge) has it. The caller
/// checked the frame's source (`source::check_ipv6`). Only the solicitation a node with
/// an address sends (a source address and its link-layer option, nothing else) is
/// answered; a duplicate address probe (source `::`) is not.
/// A subprogram: the message and its answer stay off the stack of the IP paths.
#[inline(never)]
pub fn answer_neighbour_solicitation(
    ctx: &TcContext,
    iface: &InterfaceConfig,
    ifindex: u32,
) -> Option<(Path, i32)> {
    if ctx.len() != ND_FRAME_LEN {
        return None;
    }
    let ip = packet::read_linear::<Ipv6Hdr>(ctx, EthHdr::LEN)?;
    if ip.next_hdr != IPPROTO_ICMPV6 || ip.hop_limit != ND_HOP_LIMIT || ip.src_addr == [0; 16] {
        return None;
    }
    let solicitation = packet::read::<NeighbourMessage>(ctx, ND_OFFSET)?;
    if solicitation.icmp_type != ICMPV6_NEIGHBOUR_SOLICITATION
        || solicitation.code != 0
        || solicitation.option_type != OPTION_SOURCE_LINK_ADDRESS
        || solicitation.option_len != 1
    {
        return None;
    }
    let target = remote_v6(iface.network, solicitation.target)?;
    let mut advertisement = NeighbourMessage {
        icmp_type: ICMPV6_NEIGHBOUR_ADVERTISEMENT,
        code: 0,
        checksum: 0,
        flags: [NA_SOLICITED_OVERRIDE, 0, 0, 0],
        target: solicitation.target,
        option_type: OPTION_TARGET_LINK_ADDRESS,
        option_len: 1,
        option_mac: target.mac,
    };
    // SAFETY: `NeighbourMessage` is 32 bytes of plain integers without padding.
    let body: [u8; 32] = unsafe { core::mem::transmute(advertisement) };
    advertisement.checksum = csum::icmpv6_32(&solicitation.target, &ip.src_addr, &body);
    let reply_ip =
        Ipv6Hdr { src_addr: solicitation.target, dst_addr: ip.src_addr, hop_limit: ND_HOP_LIMIT, ..ip };
    packet::write(ctx, EthHdr::LEN, reply_ip).ok()?;
    packet::write(ctx, ND_OFFSET, advertisement).ok()?;
    // Pointers from before a helper that may move the data are stale: take it anew.
    let eth = parse::header_ptr::<EthHdr>(ctx, 0)?;
    // SAFETY: header_ptr bounds-checked the Ethernet header.
    unsafe {
        (*eth).dst_addr = iface.mac;
        (*eth).src_addr = target.mac;
    }
    // Out of the host-side veth's egress: into the container that asked.
    // SAFETY: a plain helper call.
    let action = unsafe { bpf_redirect(ifindex, 0) } as i32;
    Some((Path::ArpAnswered, action))
}

/// A frame the VXLAN device decapsulated: into the local endpoint of the VNI's network
/// that it is for, if it comes from an endpoint of that network on the host that sent it.
/// Anything else is dropped: the tunnel carries only unicast IPv4 and IPv6 between
/// endpoints (an IPv6 source must be the endpoint's global address: link-local ones
/// never cross it, as the solicitations that would use them are answered on each host),
/// over the host's underlay family: the key is read as that family's, which the kernel
/// refuses (EPROTO) for a frame that came over the other.
#[inline(always)]
pub fn from_tunnel(ctx: &TcContext) -> (Path, i32) {
    const DROP: (Path, i32) = (Path::DroppedTunnel, TC_ACT_SHOT as i32);
    let Some(config) = TUNNEL_CONFIG.get(0) else {
        return DROP;
    };
    // SAFETY: all-zero is a valid key for the helper to fill.
    let mut key: bpf_tunnel_key = unsafe { core::mem::zeroed() };
    // SAFETY: the helper writes at most `size` bytes of the key on our stack.
    let got = unsafe {
        bpf_skb_get_tunnel_key(ctx.skb.skb, &mut key, size_of::<bpf_tunnel_key>() as u32, key_family(config))
    };
    if got != 0 {
        return DROP;
    }
    // SAFETY: a plain map lookup; the value is copied out.
    let Some(network) = (unsafe { TUNNEL_NETWORKS.get(&key.tunnel_id).copied() }) else {
        return DROP;
    };
    // SAFETY: the union is four words either way: an IPv4 key fills the first and zeroes
    // the others, as `tunnel_host_v4` has it.
    let sender_host = unsafe { key.__bindgen_anon_1.remote_ipv6 };
    let (src, dst) = match parse::parse(ctx) {
        Frame::Ipv4(frame) => (remote(network, frame.src), IpAddress::v4(frame.dst)),
        Frame::Ipv6 => match parse::parse_ipv6(ctx) {
            Some(frame) => (remote_v6(network, frame.src), IpAddress::v6(frame.dst)),
            None => return DROP,
        },
        Frame::Other | Frame::Malformed => return DROP,
    };
    if !src.is_some_and(|src| src.host == sender_host) {
        return DROP;
    }
    let Some(dst) = endpoint::lookup(network, dst) else {
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
