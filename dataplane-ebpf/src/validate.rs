//! Whether a frame's headers hold together, before the NAT tracks or translates it: what
//! the kernel's IPv4 receive path drops (a wrong header checksum, a total length past the
//! packet or below the header), L4 headers that do not fit in the packet, TCP flag
//! combinations Linux's conntrack calls invalid, and ICMP errors whose quote is cut short
//! or from a later fragment. Owns no map; never writes to the packet. The same-network
//! fast path does not ask: like the bridge it stands in for, it forwards what it does not
//! translate, and the receiving stack drops what is malformed.

use dataplane_common::{IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP};
use network_types::{eth::EthHdr, ip::Ipv4Hdr};

use crate::{
    packet::{self, Packet},
    parse::Ipv4Frame,
};

const IP_OFFSET: usize = EthHdr::LEN;
/// Where the L4 header of a translatable frame (a 20-byte IPv4 header) starts.
const L4_OFFSET: usize = EthHdr::LEN + Ipv4Hdr::LEN;
const TCP_HEADER_LEN: u32 = 20;
const UDP_HEADER_LEN: u32 = 8;
const ICMP_HEADER_LEN: u32 = 8;

/// TCP flag combinations Linux's conntrack accepts (`tcp_valid_flags`), as a bit set
/// indexed by the flags FIN, SYN, RST, ACK and URG (PSH, ECE and CWR do not matter):
/// SYN, SYN|URG, SYN|ACK, RST, RST|ACK, FIN|ACK, FIN|ACK|URG, ACK, ACK|URG.
const VALID_TCP_FLAGS: u64 = (1 << 0x02)
    | (1 << 0x22)
    | (1 << 0x12)
    | (1 << 0x04)
    | (1 << 0x14)
    | (1 << 0x11)
    | (1 << 0x31)
    | (1 << 0x10)
    | (1 << 0x30);
const TCP_FLAGS_THAT_MATTER: u8 = 0x37;

/// Whether a translatable frame (a 20-byte IPv4 header, no fragment) holds together: its
/// header checksum, its total length against the packet, its TCP, UDP or ICMP header
/// inside that length, a UDP length that agrees, TCP flags that make sense.
#[inline(always)]
pub fn well_formed(ctx: &impl Packet, frame: &Ipv4Frame) -> bool {
    l4_len(ctx).is_some_and(|l4_len| l4_holds(ctx, frame.proto, l4_len))
}

/// The length of the L4 part by the IPv4 header, if the header's checksum and total
/// length hold.
#[inline(always)]
fn l4_len(ctx: &impl Packet) -> Option<u32> {
    let header: [u16; 10] = packet::read(ctx, IP_OFFSET)?;
    let mut sum: u32 = 0;
    for word in header {
        sum += u32::from(word);
    }
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    if sum != 0xffff {
        return None;
    }
    let packet_len = ctx.len().checked_sub(IP_OFFSET as u32)?;
    let total_len = u32::from(u16::from_be(header[1]));
    // BIG TCP: a GSO packet past 64 KiB carries 0 there; its length is the skb's.
    let total_len = if total_len == 0 && packet_len > 0xffff { packet_len } else { total_len };
    if total_len > packet_len {
        return None;
    }
    total_len.checked_sub(Ipv4Hdr::LEN as u32)
}

#[inline(always)]
fn l4_holds(ctx: &impl Packet, proto: u8, l4_len: u32) -> bool {
    match proto {
        IPPROTO_TCP => {
            if l4_len < TCP_HEADER_LEN {
                return false;
            }
            // The data offset's byte and the flags' byte.
            let Some(offset_and_flags) = packet::read::<[u8; 2]>(ctx, L4_OFFSET + 12) else {
                return false;
            };
            let header_len = u32::from(offset_and_flags[0] >> 4) * 4;
            let flags = offset_and_flags[1] & TCP_FLAGS_THAT_MATTER;
            header_len >= TCP_HEADER_LEN && header_len <= l4_len && (VALID_TCP_FLAGS >> flags) & 1 != 0
        }
        IPPROTO_UDP => {
            if l4_len < UDP_HEADER_LEN {
                return false;
            }
            let Some(udp_len) = packet::read::<u16>(ctx, L4_OFFSET + 4) else {
                return false;
            };
            let udp_len = u32::from(u16::from_be(udp_len));
            udp_len >= UDP_HEADER_LEN && udp_len <= l4_len
        }
        IPPROTO_ICMP => l4_len >= ICMP_HEADER_LEN,
        _ => true,
    }
}

/// Whether an ICMP error in a translatable frame quotes, inside its total length, an
/// IPv4 header of 20 bytes and the 8 bytes after it, of a first fragment or a whole
/// packet: later fragments carry no ports to translate.
#[inline(always)]
pub fn icmp_quote_holds(ctx: &impl Packet) -> bool {
    const QUOTE_OFFSET: usize = L4_OFFSET + ICMP_HEADER_LEN as usize;
    if l4_len(ctx).is_none_or(|l4_len| l4_len < ICMP_HEADER_LEN + Ipv4Hdr::LEN as u32 + 8) {
        return false;
    }
    packet::read::<u16>(ctx, QUOTE_OFFSET + 6).is_some_and(|frags| u16::from_be(frags) & 0x1fff == 0)
}
