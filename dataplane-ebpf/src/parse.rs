//! Bounds-checked access to packet headers. Owns no map; never writes to the packet.

use network_types::{eth::EthHdr, ip::Ipv4Hdr};

use crate::packet::Packet;

/// Ethernet types, in network byte order as they sit in the frame.
pub const ETH_P_IP: u16 = 0x0800u16.to_be();
pub const ETH_P_ARP: u16 = 0x0806u16.to_be();
pub const ETH_P_IPV6: u16 = 0x86ddu16.to_be();

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

pub enum Frame {
    Ipv4(Ipv4Frame),
    /// Anything that is not IPv4 (ARP, IPv6, LLDP, ...).
    Other,
    /// Claims to be IPv4 but is too short or not a valid header.
    Malformed,
}

#[inline(always)]
pub fn parse(ctx: &impl Packet) -> Frame {
    let Some(eth) = header_ptr::<EthHdr>(ctx, 0) else {
        return Frame::Malformed;
    };
    // SAFETY: header_ptr checked that the Ethernet header lies inside the packet.
    if unsafe { (*eth).ether_type } != ETH_P_IP {
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
