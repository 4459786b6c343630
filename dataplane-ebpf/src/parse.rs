//! Bounds-checked access to packet headers. Owns no map; never writes to the packet.

use network_types::{
    eth::EthHdr,
    ip::{Ipv4Hdr, Ipv6Hdr},
};

use crate::packet::Packet;

/// Ethernet types, in network byte order as they sit in the frame.
pub const ETH_P_IP: u16 = 0x0800u16.to_be();
pub const ETH_P_ARP: u16 = 0x0806u16.to_be();
pub const ETH_P_IPV6: u16 = 0x86ddu16.to_be();

/// An ARP packet for IPv4 over Ethernet, as RFC 826 lays it out after the Ethernet header.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ArpIpv4 {
    pub hardware_type: [u8; 2],
    pub protocol_type: [u8; 2],
    pub hardware_len: u8,
    pub protocol_len: u8,
    pub operation: [u8; 2],
    pub sender_mac: [u8; 6],
    pub sender_ip: [u8; 4],
    pub target_mac: [u8; 6],
    pub target_ip: [u8; 4],
}

pub const ARP_HARDWARE_ETHERNET: [u8; 2] = 1u16.to_be_bytes();
pub const ARP_PROTOCOL_IPV4: [u8; 2] = 0x0800u16.to_be_bytes();
pub const ARP_REQUEST: [u8; 2] = 1u16.to_be_bytes();
pub const ARP_REPLY: [u8; 2] = 2u16.to_be_bytes();

/// A pointer to a `T` at `offset` into the linear data, if the whole `T` lies inside it.
#[inline(always)]
pub fn header_ptr<T>(ctx: &impl Packet, offset: usize) -> Option<*mut T> {
    let start = ctx.data();
    let end = ctx.data_end();
    let len = core::mem::size_of::<T>();
    if start + offset + len > end {
        return None;
    }
    Some((start + offset) as *mut T)
}

/// The parts of an IPv4 frame the forwarding and NAT decisions need.
pub struct Ipv4Frame {
    pub src: [u8; 4],
    pub dst: [u8; 4],
    pub proto: u8,
    /// Where the L4 header starts; NAT only handles headers without options (20 bytes).
    pub l4_offset: usize,
    /// A fragment (first or not): its L4 ports cannot be trusted or are absent.
    pub fragment: bool,
}

impl Ipv4Frame {
    /// Whether NAT may rewrite this packet: no IP options and no fragment.
    #[inline(always)]
    pub fn translatable(&self) -> bool {
        !self.fragment && self.l4_offset == EthHdr::LEN + Ipv4Hdr::LEN
    }
}

/// The parts of an IPv6 frame forwarding needs: its addresses and the header after the
/// fixed one (an extension header, or the upper layer's; see `ipv6_upper_layer`), or in a
/// frame `behind_extension_headers` made, the upper layer found behind them.
pub struct Ipv6Frame {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub next_header: u8,
}

pub enum Frame {
    Ipv4(Ipv4Frame),
    /// IPv6, its header read by `parse_ipv6` where it is needed: carried here, it made the
    /// IPv4 paths' stack frame larger than the 512 bytes the verifier allows them all.
    Ipv6,
    /// Anything that is not IP (ARP, LLDP, ...).
    Other,
    /// Claims to be IP but is too short or not a valid header.
    Malformed,
}

pub use dataplane_common::IPPROTO_ICMPV6;
const IPPROTO_HOP_BY_HOP: u8 = 0;
const IPPROTO_ROUTING: u8 = 43;
const IPPROTO_FRAGMENT: u8 = 44;
const IPPROTO_DESTINATION_OPTIONS: u8 = 60;
/// Extension headers read to find the upper layer: a legitimate packet has at most a
/// hop-by-hop, a destination options, a routing and a fragment header before it.
const EXTENSION_HEADERS_READ: usize = 4;

/// Where the extension headers of an IPv6 packet lead.
pub enum UpperLayer {
    /// The upper-layer protocol (or one the walk does not enter, as ESP) and where its
    /// header starts.
    Found { proto: u8, offset: usize },
    /// A fragment after the first: the upper-layer header is in another packet.
    LaterFragment,
    /// Behind more extension headers than are read.
    TooDeep,
    /// Cut short inside its extension headers.
    CutShort,
}

/// Walks the extension headers of an IPv6 packet to its upper layer, at most
/// `EXTENSION_HEADERS_READ` of them. TCP and UDP straight after the fixed header (the
/// usual case) cost no read. Bytes go through the helper: extension headers are rare, and
/// may lie past the linear data.
#[inline(always)]
pub fn ipv6_upper_layer(ctx: &impl Packet, frame: &Ipv6Frame) -> UpperLayer {
    let mut next = frame.next_header;
    let mut offset = EthHdr::LEN + Ipv6Hdr::LEN;
    for _ in 0..=EXTENSION_HEADERS_READ {
        match next {
            IPPROTO_HOP_BY_HOP | IPPROTO_ROUTING | IPPROTO_DESTINATION_OPTIONS => {
                let Some([header, units]) = ctx.load_bytes::<[u8; 2]>(offset) else {
                    return UpperLayer::CutShort;
                };
                next = header;
                offset += (usize::from(units) + 1) * 8;
            }
            IPPROTO_FRAGMENT => {
                let Some([header, _, offset_high, offset_low]) = ctx.load_bytes::<[u8; 4]>(offset) else {
                    return UpperLayer::CutShort;
                };
                if u16::from_be_bytes([offset_high, offset_low]) & !0b111 != 0 {
                    return UpperLayer::LaterFragment;
                }
                next = header;
                offset += 8;
            }
            // Headers that claim more than the packet holds.
            _ if offset > ctx.len() as usize => return UpperLayer::CutShort,
            proto => return UpperLayer::Found { proto, offset },
        }
    }
    UpperLayer::TooDeep
}

/// Whether `next_header` names an extension header that `ipv6_upper_layer` walks through.
#[inline(always)]
pub fn is_extension_header(next_header: u8) -> bool {
    matches!(
        next_header,
        IPPROTO_HOP_BY_HOP | IPPROTO_ROUTING | IPPROTO_FRAGMENT | IPPROTO_DESTINATION_OPTIONS
    )
}

/// The frame of a packet whose fixed header is followed by extension headers, as the
/// paths that look behind them see it: `next_header` names the upper layer the walk
/// found, whose header starts at the offset returned (an offset to read through the
/// helper). `None` for a fragment after the first, a chain longer than is read or cut
/// short: nothing tells its flow.
#[inline(always)]
pub fn behind_extension_headers(ctx: &impl Packet, frame: &Ipv6Frame) -> Option<(Ipv6Frame, usize)> {
    match ipv6_upper_layer(ctx, frame) {
        UpperLayer::Found { proto, offset } => Some((Ipv6Frame { next_header: proto, ..*frame }, offset)),
        UpperLayer::LaterFragment | UpperLayer::TooDeep | UpperLayer::CutShort => None,
    }
}

/// Whether the frame is IPv6 (by its Ethernet type alone).
#[inline(always)]
pub fn is_ipv6(ctx: &impl Packet) -> bool {
    // SAFETY: header_ptr checked that the Ethernet header lies inside the packet.
    header_ptr::<EthHdr>(ctx, 0).is_some_and(|eth| unsafe { (*eth).ether_type } == ETH_P_IPV6)
}

#[inline(always)]
pub fn parse(ctx: &impl Packet) -> Frame {
    let Some(eth) = header_ptr::<EthHdr>(ctx, 0) else {
        return Frame::Malformed;
    };
    // SAFETY: header_ptr checked that the Ethernet header lies inside the packet.
    let ether_type = unsafe { (*eth).ether_type };
    if ether_type == ETH_P_IPV6 {
        return Frame::Ipv6;
    }
    if ether_type != ETH_P_IP {
        return Frame::Other;
    }
    ctx.make_linear((EthHdr::LEN + Ipv4Hdr::LEN) as u32);
    // Pulling may move the data: take the pointer after it.
    let Some(ip) = header_ptr::<Ipv4Hdr>(ctx, EthHdr::LEN) else {
        return Frame::Malformed;
    };
    // SAFETY: the header was bounds-checked above.
    let (vihl, src, dst, proto, frags) =
        unsafe { ((*ip).vihl, (*ip).src_addr, (*ip).dst_addr, (*ip).proto, (*ip).frags) };
    if vihl >> 4 != 4 || (vihl & 0x0f) < 5 {
        return Frame::Malformed;
    }
    // More-fragments flag or a non-zero offset.
    let fragment = u16::from_be_bytes(frags) & 0x3fff != 0;
    Frame::Ipv4(Ipv4Frame {
        src,
        dst,
        proto,
        l4_offset: EthHdr::LEN + usize::from(vihl & 0x0f) * 4,
        fragment,
    })
}

/// The IPv6 header of a frame `parse` found to be IPv6; `None` when it is too short or
/// not a valid one.
#[inline(always)]
pub fn parse_ipv6(ctx: &impl Packet) -> Option<Ipv6Frame> {
    ctx.make_linear((EthHdr::LEN + Ipv6Hdr::LEN) as u32);
    let ip = header_ptr::<Ipv6Hdr>(ctx, EthHdr::LEN)?;
    // SAFETY: the header was bounds-checked above.
    let (vcf, src, dst, next_header) = unsafe { ((*ip).vcf, (*ip).src_addr, (*ip).dst_addr, (*ip).next_hdr) };
    (vcf[0] >> 4 == 6).then_some(Ipv6Frame { src, dst, next_header })
}
