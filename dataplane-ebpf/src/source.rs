//! Source validation: a container may send only from its own MAC and IP addresses, and
//! its ARP and neighbour advertisements may claim only those (Cilium's DROP_INVALID_SMAC
//! and DROP_INVALID_SIP).
//! Without it a container could take over a neighbour's address: forge its source, or
//! poison the other containers' neighbour tables over the bridge. Nor may it act as a
//! router (IPv6 router advertisements and redirects). Owns no map: the address and MAC
//! come with the interface's `InterfaceConfig`, which the caller holds.

use dataplane_common::{InterfaceConfig, Path, eui64_link_local};
use network_types::eth::EthHdr;

use crate::{
    packet::{self, Packet},
    parse::{
        self, ARP_HARDWARE_ETHERNET, ARP_PROTOCOL_IPV4, ArpIpv4, ETH_P_ARP, Ipv4Frame, Ipv6Frame, UpperLayer,
    },
};

const UNSPECIFIED: [u8; 4] = [0; 4];

/// The link layer of a frame from the container behind `iface`: its source MAC, and for
/// ARP the sender it claims. `Err` carries the drop path.
#[inline(always)]
pub fn check_link(ctx: &impl Packet, iface: &InterfaceConfig) -> Result<(), Path> {
    let Some(eth) = parse::header_ptr::<EthHdr>(ctx, 0) else {
        // Too short for an Ethernet header: the parser says so.
        return Ok(());
    };
    // SAFETY: header_ptr bounds-checked the Ethernet header.
    let (src_mac, ether_type) = unsafe { ((*eth).src_addr, (*eth).ether_type) };
    if src_mac != iface.mac {
        return Err(Path::DroppedSpoofedMac);
    }
    if ether_type == ETH_P_ARP {
        return check_arp(ctx, iface);
    }
    Ok(())
}

/// ICMPv6 messages only a router sends (RFC 4861).
const ICMPV6_ROUTER_ADVERTISEMENT: u8 = 134;
const ICMPV6_REDIRECT: u8 = 137;
/// A neighbour advertisement: its target address (at `NA_TARGET_OFFSET` into the ICMPv6
/// header) is what it claims the sender's MAC for.
const ICMPV6_NEIGHBOUR_ADVERTISEMENT: u8 = 136;
const NA_TARGET_OFFSET: usize = 8;
const UNSPECIFIED_V6: [u8; 16] = [0; 16];

/// The source of an IPv6 packet from the container behind `iface`, and what its ICMPv6
/// claims (`upper`: where its extension headers lead, `parse::ipv6_upper_layer`).
/// - The source must be the container's own address, or link-local (fe80::/64), or
///   unspecified towards multicast (duplicate address detection); on a network without
///   IPv6 the container has no address of its own, so only the last two.
/// - Router advertisements and redirects are dropped: only the gateway routes, and one
///   container's advertisement would otherwise give its neighbours addresses and a
///   default route through it (SLAAC; Docker's CVE-2020-13401). So is what hides behind
///   more extension headers than are read.
/// - A neighbour advertisement must be for the container's own address, or the
///   link-local one the daemon gave it (from its MAC): one for a neighbour's or the
///   gateway's would take its traffic over the bridge.
#[inline(always)]
pub fn check_ipv6(
    ctx: &impl Packet,
    frame: &Ipv6Frame,
    upper: &UpperLayer,
    iface: &InterfaceConfig,
) -> Result<(), Path> {
    let own = frame.src == iface.v6_addr && iface.v6_addr != UNSPECIFIED_V6;
    let link_local = frame.src[..8] == [0xfe, 0x80, 0, 0, 0, 0, 0, 0];
    let probe = frame.src == UNSPECIFIED_V6 && frame.dst[0] == 0xff;
    if !own && !link_local && !probe {
        return Err(Path::DroppedSpoofedIpv6);
    }
    let offset = match *upper {
        UpperLayer::Found { proto: parse::IPPROTO_ICMPV6, offset } => offset,
        UpperLayer::TooDeep => return Err(Path::DroppedRouterMessage),
        UpperLayer::Found { .. } | UpperLayer::LaterFragment | UpperLayer::CutShort => return Ok(()),
    };
    // Cut short before its type: no receiver takes it as anything.
    let Some(icmp_type) = ctx.load_bytes::<u8>(offset) else { return Ok(()) };
    match icmp_type {
        ICMPV6_ROUTER_ADVERTISEMENT | ICMPV6_REDIRECT => Err(Path::DroppedRouterMessage),
        ICMPV6_NEIGHBOUR_ADVERTISEMENT => {
            let target = ctx.load_bytes::<[u8; 16]>(offset + NA_TARGET_OFFSET);
            let own_global = target == Some(iface.v6_addr) && iface.v6_addr != UNSPECIFIED_V6;
            if own_global || target == Some(eui64_link_local(iface.mac)) {
                Ok(())
            } else {
                Err(Path::DroppedSpoofedNeighbour)
            }
        }
        _ => Ok(()),
    }
}

/// ARP must name the container itself as sender; an ARP probe (RFC 5227) names no sender
/// address yet (0.0.0.0). Anything the check cannot read is no ARP a container needs.
#[inline(always)]
fn check_arp(ctx: &impl Packet, iface: &InterfaceConfig) -> Result<(), Path> {
    ctx.make_linear((EthHdr::LEN + size_of::<ArpIpv4>()) as u32);
    let Some(arp) = packet::read::<ArpIpv4>(ctx, EthHdr::LEN) else {
        return Err(Path::DroppedSpoofedArp);
    };
    let ipv4_over_ethernet = arp.hardware_type == ARP_HARDWARE_ETHERNET
        && arp.protocol_type == ARP_PROTOCOL_IPV4
        && arp.hardware_len == 6
        && arp.protocol_len == 4;
    let own_sender =
        arp.sender_mac == iface.mac && (arp.sender_ip == iface.v4_addr || arp.sender_ip == UNSPECIFIED);
    if ipv4_over_ethernet && own_sender { Ok(()) } else { Err(Path::DroppedSpoofedArp) }
}

/// The source of an IPv4 packet from the container behind `iface`: its own address, or
/// 0.0.0.0 towards broadcast or multicast (a DHCP client before it has an address). On an
/// IPv6-only network it has no own address (all zero), and 0.0.0.0 goes no further.
#[inline(always)]
pub fn check_ipv4(frame: &Ipv4Frame, iface: &InterfaceConfig) -> Result<(), Path> {
    if frame.src == iface.v4_addr && iface.v4_addr != UNSPECIFIED {
        return Ok(());
    }
    let to_many = frame.dst == [255; 4] || frame.dst[0] & 0xf0 == 224;
    if frame.src == UNSPECIFIED && to_many { Ok(()) } else { Err(Path::DroppedSpoofedIp) }
}
