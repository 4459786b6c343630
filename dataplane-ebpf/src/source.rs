//! Source validation: a container may send only from its own MAC and IPv4 address, and
//! its ARP may claim only those (Cilium's DROP_INVALID_SMAC and DROP_INVALID_SIP).
//! Without it a container could take over a neighbour's address: forge its source, or
//! poison the other containers' neighbour tables over the bridge. Nor may it act as a
//! router (IPv6 router advertisements and redirects). Owns no map: the address and MAC
//! come with the interface's `InterfaceConfig`, which the caller holds.

use dataplane_common::{InterfaceConfig, Path};
use network_types::eth::EthHdr;

use crate::{
    packet::{self, Packet},
    parse::{self, ETH_P_ARP, ETH_P_IPV6, Ipv4Frame},
};

/// An ARP packet for IPv4 over Ethernet, as RFC 826 lays it out after the Ethernet header.
#[repr(C)]
#[derive(Clone, Copy)]
struct ArpIpv4 {
    hardware_type: [u8; 2],
    protocol_type: [u8; 2],
    hardware_len: u8,
    protocol_len: u8,
    operation: [u8; 2],
    sender_mac: [u8; 6],
    sender_ip: [u8; 4],
    target_mac: [u8; 6],
    target_ip: [u8; 4],
}

const ARP_HARDWARE_ETHERNET: [u8; 2] = 1u16.to_be_bytes();
const ARP_PROTOCOL_IPV4: [u8; 2] = 0x0800u16.to_be_bytes();
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
    if ether_type == ETH_P_IPV6 {
        return check_router_messages(ctx);
    }
    Ok(())
}

const IPV6_HEADER_LEN: usize = 40;
/// Where an IPv6 header's next-header field lies.
const IPV6_NEXT_HEADER_OFFSET: usize = 6;
const IPPROTO_ICMPV6: u8 = 58;
const IPPROTO_HOP_BY_HOP: u8 = 0;
const IPPROTO_ROUTING: u8 = 43;
const IPPROTO_FRAGMENT: u8 = 44;
const IPPROTO_DESTINATION_OPTIONS: u8 = 60;
/// ICMPv6 messages only a router sends (RFC 4861).
const ICMPV6_ROUTER_ADVERTISEMENT: u8 = 134;
const ICMPV6_REDIRECT: u8 = 137;
/// Extension headers read to find the ICMPv6 header: a legitimate packet has at most a
/// hop-by-hop, a destination options, a routing and a fragment header before it.
const EXTENSION_HEADERS_READ: usize = 4;

/// A container's interface keeps no IPv6 address on a network without IPv6, but its
/// kernel still takes router advertisements (only /proc/sys could stop that, and a
/// lookup there costs time that grows with the host's namespaces): one container could
/// give the others addresses and a default route through itself (SLAAC; Docker's
/// CVE-2020-13401). Only the gateway routes, so router advertisements and redirects from
/// a container are dropped, also behind extension headers, and so is what hides behind
/// more of them than are read. Other IPv6 goes to the bridge. Bytes go through the
/// helper: IPv6 here is rare and off the fast path.
#[inline(always)]
fn check_router_messages(ctx: &impl Packet) -> Result<(), Path> {
    // Too short to hold what is read: no receiver takes it as a router message either.
    let Some(mut next) = ctx.load_bytes::<u8>(EthHdr::LEN + IPV6_NEXT_HEADER_OFFSET) else {
        return Ok(());
    };
    let mut offset = EthHdr::LEN + IPV6_HEADER_LEN;
    for _ in 0..=EXTENSION_HEADERS_READ {
        match next {
            IPPROTO_ICMPV6 => {
                let Some(icmp_type) = ctx.load_bytes::<u8>(offset) else { return Ok(()) };
                return match icmp_type {
                    ICMPV6_ROUTER_ADVERTISEMENT | ICMPV6_REDIRECT => Err(Path::DroppedRouterMessage),
                    _ => Ok(()),
                };
            }
            IPPROTO_HOP_BY_HOP | IPPROTO_ROUTING | IPPROTO_DESTINATION_OPTIONS => {
                let Some([header, units]) = ctx.load_bytes::<[u8; 2]>(offset) else { return Ok(()) };
                next = header;
                offset += (usize::from(units) + 1) * 8;
            }
            IPPROTO_FRAGMENT => {
                let Some([header, _, offset_high, offset_low]) = ctx.load_bytes::<[u8; 4]>(offset) else {
                    return Ok(());
                };
                // Only the first fragment holds the ICMPv6 header (and receivers drop
                // fragmented neighbour discovery anyway, RFC 6980).
                if u16::from_be_bytes([offset_high, offset_low]) & !0b111 != 0 {
                    return Ok(());
                }
                next = header;
                offset += 8;
            }
            _ => return Ok(()),
        }
    }
    match next {
        IPPROTO_ICMPV6
        | IPPROTO_HOP_BY_HOP
        | IPPROTO_ROUTING
        | IPPROTO_FRAGMENT
        | IPPROTO_DESTINATION_OPTIONS => Err(Path::DroppedRouterMessage),
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
/// 0.0.0.0 towards broadcast or multicast (a DHCP client before it has an address).
#[inline(always)]
pub fn check_ipv4(frame: &Ipv4Frame, iface: &InterfaceConfig) -> Result<(), Path> {
    if frame.src == iface.v4_addr {
        return Ok(());
    }
    let to_many = frame.dst == [255; 4] || frame.dst[0] & 0xf0 == 224;
    if frame.src == UNSPECIFIED && to_many { Ok(()) } else { Err(Path::DroppedSpoofedIp) }
}
