//! Source validation: a container may send only from its own MAC and IPv4 address, and
//! its ARP may claim only those (Cilium's DROP_INVALID_SMAC and DROP_INVALID_SIP).
//! Without it a container could take over a neighbour's address: forge its source, or
//! poison the other containers' neighbour tables over the bridge. Owns no map: the
//! address and MAC come with the interface's `InterfaceConfig`, which the caller holds.

use dataplane_common::{InterfaceConfig, Path};
use network_types::eth::EthHdr;

use crate::{
    packet::{self, Packet},
    parse::{self, ETH_P_ARP, Ipv4Frame},
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
    Ok(())
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
