//! Isolated networks (`gateway_mode_ipv4=isolated`, `gateway_mode_ipv6=isolated`, on an
//! `--internal` network): what a container of one may send that is for none of its peers.
//! Of the host, only its network's resolver: TCP and UDP port 53 of the gateway address,
//! which the bridge keeps for the resolver alone, and in IPv6 the neighbour discovery
//! that address needs. Addresses of its own subnet that no endpoint holds, broadcast and
//! multicast go on to the bridge, which carries them to the peers. Everything else (the
//! gateway's other ports, the host's other addresses, other networks' gateways, the
//! outside) is dropped, so the host's own traffic to such a container never gets an
//! answer either. And the other way, on the tc egress of such a network's bridge, which
//! sees what the host sends into the network (not what the bridge forwards between its
//! ports): only the resolver's answers and neighbour discovery pass. Owns no map: the
//! subnets, with their `SubnetInfo::ISOLATED` flag, are `policy`'s.

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    programs::TcContext,
};
use dataplane_common::{IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, InterfaceConfig, Path, SubnetInfo};

use crate::{
    packet::Packet,
    parse::{self, Frame, Ipv4Frame, UpperLayer},
    policy,
};

/// The resolver's port, as it sits in a TCP or UDP header.
const DNS_PORT: [u8; 2] = 53u16.to_be_bytes();
/// Neighbour solicitations and advertisements (RFC 4861).
const ICMPV6_NEIGHBOUR_SOLICITATION: u8 = 135;
const ICMPV6_NEIGHBOUR_ADVERTISEMENT: u8 = 136;

const PASS: (Path, i32) = (Path::SlowPathIp, TC_ACT_OK as i32);
const DROPPED: (Path, i32) = (Path::DroppedIsolated, TC_ACT_SHOT as i32);

/// Whether the TCP or UDP header at `offset` is for the resolver's port.
#[inline(always)]
fn for_resolver(ctx: &impl Packet, proto: u8, offset: usize) -> bool {
    (proto == IPPROTO_TCP || proto == IPPROTO_UDP) && ctx.load_bytes::<[u8; 2]>(offset + 2) == Some(DNS_PORT)
}

/// Whether the TCP or UDP header at `offset` is from the resolver's port.
#[inline(always)]
fn from_resolver(ctx: &impl Packet, proto: u8, offset: usize) -> bool {
    (proto == IPPROTO_TCP || proto == IPPROTO_UDP) && ctx.load_bytes::<[u8; 2]>(offset) == Some(DNS_PORT)
}

/// Unicast IPv4 from a container of an isolated network (`InterfaceConfig::ISOLATED_V4`)
/// for no endpoint of its network here nor on another host: to the kernel for the
/// resolver and for its own subnet, broadcast and multicast; dropped otherwise. A
/// subprogram (`inline(never)`): its frame stays off the other paths' stack.
#[inline(never)]
pub fn from_container_v4(ctx: &TcContext, frame: &Ipv4Frame, iface: &InterfaceConfig) -> (Path, i32) {
    let dst = frame.dst;
    if dst == [255; 4] || dst[0] & 0xf0 == 224 {
        return PASS;
    }
    if !iface.may_hold_v4(dst) {
        // Another network's containers are refused as from any network.
        return match policy::check_v4(iface.network, dst) {
            policy::Verdict::OtherNetwork => (Path::DroppedIsolation, TC_ACT_SHOT as i32),
            policy::Verdict::Allow | policy::Verdict::Outside => DROPPED,
        };
    }
    if policy::gateway_of(dst) != Some(dst) {
        return PASS;
    }
    // A later fragment carries no port, and a first one is no query the resolver takes.
    if !frame.fragment && for_resolver(ctx, frame.proto, frame.l4_offset) { PASS } else { DROPPED }
}

/// Unicast IPv6 from a container of an isolated network (`InterfaceConfig::ISOLATED_V6`)
/// for no endpoint of its network: `None` for the rest of its subnet (an endpoint on
/// another host, or none: the other steps' concern) and for networks that are not
/// isolated; to the kernel for the resolver and for neighbour discovery with the host or
/// over link-local addresses; dropped otherwise. A subprogram, as `from_container_v4`.
#[inline(never)]
pub fn from_container_v6(ctx: &TcContext, iface: &InterfaceConfig) -> Option<(Path, i32)> {
    if iface.flags & InterfaceConfig::ISOLATED_V6 == 0 {
        return None;
    }
    let frame = parse::parse_ipv6(ctx)?;
    let link_local = frame.dst[0] == 0xfe && frame.dst[1] & 0xc0 == 0x80;
    let gateway = match policy::subnet_of_v6(frame.dst) {
        Some(info) if info.network == iface.network => info.gateway.addr == frame.dst,
        // Another network's containers are refused as from any network.
        Some(info) if info.gateway.addr != frame.dst => {
            return Some((Path::DroppedIsolation, TC_ACT_SHOT as i32));
        }
        _ if link_local => false,
        _ => return Some(DROPPED),
    };
    if !gateway && !link_local {
        return None;
    }
    let UpperLayer::Found { proto, offset } = parse::ipv6_upper_layer(ctx, &frame) else {
        return Some(DROPPED);
    };
    if proto == IPPROTO_ICMPV6 {
        let neighbour_discovery = matches!(
            Packet::load_bytes::<u8>(ctx, offset),
            Some(ICMPV6_NEIGHBOUR_SOLICITATION | ICMPV6_NEIGHBOUR_ADVERTISEMENT)
        );
        return Some(if neighbour_discovery { PASS } else { DROPPED });
    }
    Some(if gateway && for_resolver(ctx, proto, offset) { PASS } else { DROPPED })
}

/// ICMPv6 of neighbour discovery and multicast listener discovery (RFC 4861, 2710, 3810):
/// router solicitation to redirect, MLD queries and reports.
const ICMPV6_DISCOVERY: core::ops::RangeInclusive<u8> = 130..=143;

/// A frame the host sends into an isolated network's bridge (the bridge's tc egress):
/// `Some(dropped)` for IP for an isolated subnet's addresses (by the source for broadcast
/// and multicast) that is not the resolver's answer (TCP or UDP from port 53 of the
/// network's gateway) nor, in IPv6, neighbour or listener discovery; IPv6 for a
/// link-local address is taken as the network's. `None` (passed) for the rest: ARP, what
/// is for a family that is not isolated, what the kernel will refuse anyway.
#[inline(always)]
pub fn into_network(ctx: &TcContext) -> Option<Path> {
    let passed = match parse::parse(ctx) {
        Frame::Ipv4(frame) => host_may_send_v4(ctx, &frame),
        Frame::Ipv6 => host_may_send_v6(ctx),
        Frame::Other | Frame::Malformed => true,
    };
    (!passed).then_some(Path::DroppedIsolated)
}

#[inline(always)]
fn host_may_send_v4(ctx: &TcContext, frame: &Ipv4Frame) -> bool {
    let to_many = frame.dst == [255; 4] || frame.dst[0] & 0xf0 == 224;
    let Some(info) = policy::subnet_of_v4(if to_many { frame.src } else { frame.dst }) else {
        return true;
    };
    if info.flags & SubnetInfo::ISOLATED == 0 {
        return true;
    }
    frame.src == info.gateway.addr[..4]
        && !to_many
        && !frame.fragment
        && from_resolver(ctx, frame.proto, frame.l4_offset)
}

/// As `host_may_send_v4`, for IPv6; a subprogram, its frame off the IPv4 path's stack.
#[inline(never)]
fn host_may_send_v6(ctx: &TcContext) -> bool {
    let Some(frame) = parse::parse_ipv6(ctx) else {
        return true;
    };
    let multicast = frame.dst[0] == 0xff;
    let link_local = frame.dst[0] == 0xfe && frame.dst[1] & 0xc0 == 0x80;
    let gateway = match policy::subnet_of_v6(if multicast { frame.src } else { frame.dst }) {
        Some(info) if info.flags & SubnetInfo::ISOLATED != 0 => info.gateway.addr,
        Some(_) => return true,
        // The host's own link-local traffic on the bridge, or multicast from it.
        None if link_local || multicast => [0xff; 16],
        None => return true,
    };
    let UpperLayer::Found { proto, offset } = parse::ipv6_upper_layer(ctx, &frame) else {
        return false;
    };
    if proto == IPPROTO_ICMPV6 {
        return Packet::load_bytes::<u8>(ctx, offset).is_some_and(|t| ICMPV6_DISCOVERY.contains(&t));
    }
    frame.src == gateway && !multicast && from_resolver(ctx, proto, offset)
}
