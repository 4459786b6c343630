//! NAT66: IPv6 leaving the host through the uplink takes the uplink's global IPv6 address
//! and a port of the NAT range; its replies, and the ICMPv6 errors about it (packet too
//! big above all: IPv6 routers do not fragment), are translated back and redirected into
//! their container; the containers' own errors about them leave translated. The conntrack, the port choice and the next hops are the IPv4
//! masquerade's (`nat`), whose tables hold both families. Owns UPLINK_V6, the tail call
//! into `from_uplink_v6`. Its paths stay off the IPv4 ones' stack and code: a subprogram
//! of `from_container`, a program of its own on the uplink.

use aya_ebpf::{
    bindings::{BPF_F_PSEUDO_HDR, TC_ACT_OK, TC_ACT_SHOT},
    helpers::{bpf_csum_diff, bpf_redirect_peer},
    macros::map,
    maps::ProgramArray,
    programs::TcContext,
};
use dataplane_common::{FlowKey, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, IpAddress, NatConfig, Path, csum};
use network_types::{eth::EthHdr, ip::Ipv6Hdr};

use crate::{
    counters,
    diagnostics::{self, Rewrite},
    nat::{self, L4, QuotedEnd, Route, SnatRequest, SnatScratch},
    packet::{self, Packet},
    parse::{self, Ipv6Frame},
    publish6, routed,
};

/// The upper-layer header of a packet without extension headers: the only ones
/// translated (a constant offset, which direct packet access needs).
pub const L4_OFFSET: usize = EthHdr::LEN + Ipv6Hdr::LEN;
pub const SRC_OFFSET: usize = EthHdr::LEN + 8;
pub const DST_OFFSET: usize = EthHdr::LEN + 24;
const ICMPV6_DEST_UNREACHABLE: u8 = 1;
const ICMPV6_TIME_EXCEEDED: u8 = 3;
const ICMPV6_ECHO_REQUEST: u8 = 128;
/// `bpf_l4_csum_replace`: the change is to an IPv6 pseudo header, which a
/// CHECKSUM_COMPLETE sum does not follow (the address and the checksum change cancel
/// out). Kernels before 6.16 do not know it.
const BPF_F_IPV6: u64 = 1 << 7;
const EINVAL: i64 = -22;

/// The NAT66 settings, when the uplink has an IPv6 address to masquerade with.
#[inline(always)]
fn config() -> Option<&'static NatConfig> {
    nat::config().filter(|c| c.flags & NatConfig::IPV6 != 0)
}

/// IPv6 from a container (its source checked, see `forward::decide_v6`) to an address
/// outside its network: masqueraded out of the uplink when the host routes it there, or,
/// from a `routed` network, sent out untranslated (its flow tracked all the same, so that
/// its replies are let in); `None` leaves it to the kernel (the host's own addresses,
/// other interfaces, no IPv6 on the uplink to masquerade with) or, behind extension
/// headers, to `leave_behind_extension_headers`.
#[inline(never)]
pub fn leave_host(ctx: &TcContext, sender: u32, routed: bool) -> Option<(Path, i32)> {
    let (cfg, frame, l4, s) = outbound(ctx, routed)?;
    let proto = frame.next_header;
    // `established_out` came first: the flow has no fresh next hop, or is new.
    let now = nat::now();
    let (rc, fib) = nat::fib_route_v6(ctx, proto, frame.src, frame.dst, sender);
    let Route::Uplink { next_hop } = nat::route_of(rc, &fib, Some(cfg), now) else {
        return None;
    };
    let mac: [u8; 6] = packet::read(ctx, 6).unwrap_or_default();
    let request = SnatRequest { proto, l4: &l4, cfg, ipv6: true, routed, sender, mac, next_hop, now };
    let Some(nat_port) = nat::snat_port(s, &request) else {
        return Some((Path::DroppedNatExhausted, TC_ACT_SHOT as i32));
    };
    Some(send_out(ctx, cfg, &frame, &l4, routed, nat_port, next_hop.macs()))
}

/// IPv6 from a container whose fixed header is followed by extension headers (`leave_host`
/// takes none), bound out of the uplink. From a routed network it leaves as it is, its
/// flow tracked when the walk finds TCP, UDP or an echo request behind them, so that the
/// replies are let in (a later fragment, whose ports were in the first, leaves untracked).
/// From a NAT66 network (an unprotected one's too) it is dropped (`DroppedIpv6Headers`):
/// NAT66 translates nothing behind extension headers (the fragments after the first carry
/// no ports to find their flow by, and the programs keep no fragment state), and the
/// kernel, wherever it forwards IPv6, would send it with the container's own address.
/// `None` for other packets, and what the host does not route out of the uplink. A
/// subprogram of `from_container`'s, called from there.
#[inline(never)]
pub fn leave_behind_extension_headers(ctx: &TcContext, sender: u32, routed: bool) -> Option<(Path, i32)> {
    let cfg = if routed { nat::config()? } else { config()? };
    let frame = parse::parse_ipv6(ctx)?;
    if !parse::is_extension_header(frame.next_header) {
        return None;
    }
    let now = nat::now();
    let (rc, fib) = nat::fib_route_v6(ctx, frame.next_header, frame.src, frame.dst, sender);
    let Route::Uplink { next_hop } = nat::route_of(rc, &fib, Some(cfg), now) else {
        return None;
    };
    if !routed {
        return Some((Path::DroppedIpv6Headers, TC_ACT_SHOT as i32));
    }
    if let Some((upper, offset)) = parse::behind_extension_headers(ctx, &frame)
        && let Some(l4) = nat::l4_walked(ctx, offset, upper.next_header, IPPROTO_ICMPV6, true)
    {
        let s = nat::scratch()?;
        s.key = flow_key(&upper, &l4);
        let mac: [u8; 6] = packet::read(ctx, 6).unwrap_or_default();
        let proto = upper.next_header;
        let request =
            SnatRequest { proto, l4: &l4, cfg, ipv6: true, routed: true, sender, mac, next_hop, now };
        if nat::snat_port(s, &request).is_none() {
            return Some((Path::DroppedNatExhausted, TC_ACT_SHOT as i32));
        }
    }
    Some((Path::Routed, nat::send_to_uplink(ctx, next_hop.macs(), cfg)))
}

/// IPv6 from a container to an address no endpoint of its network owns, on a tracked flow
/// whose next hop is fresh: sent out of the uplink, translated or (`routed`) not, with one
/// conntrack lookup, skipping the subnet trie and the route (both were asked when the next
/// hop was, less than `NextHop::TRUSTED_NS` ago), as `nat::established_out` does for IPv4.
/// `None` sends the packet the long way.
#[inline(never)]
pub fn established_out(ctx: &TcContext, sender: u32, routed: bool) -> Option<(Path, i32)> {
    let (cfg, frame, l4, s) = outbound(ctx, routed)?;
    let (macs, nat_port) = nat::established(s, frame.next_header, &l4, sender, nat::now())?;
    Some(send_out(ctx, cfg, &frame, &l4, routed, nat_port, Some(macs)))
}

/// What both ways out start from: the settings (a routed network needs no address of the
/// uplink's, only the uplink), the frame, its L4 view (TCP, UDP and ICMPv6 right after the
/// fixed header; `l4_at` refuses the others), and the SNAT scratch holding its flow key.
#[inline(always)]
fn outbound(
    ctx: &TcContext,
    routed: bool,
) -> Option<(&'static NatConfig, Ipv6Frame, L4, &'static mut SnatScratch)> {
    let cfg = if routed { nat::config()? } else { config()? };
    let frame = parse::parse_ipv6(ctx)?;
    let l4 = nat::l4_at(ctx, L4_OFFSET, frame.next_header, IPPROTO_ICMPV6, true)?;
    let s = nat::scratch()?;
    s.key = flow_key(&frame, &l4);
    Some((cfg, frame, l4, s))
}

/// A tracked flow's packet out of the uplink: with the uplink's address and `nat_port`,
/// or as it is from a routed network.
#[inline(always)]
fn send_out(
    ctx: &TcContext,
    cfg: &NatConfig,
    frame: &Ipv6Frame,
    l4: &L4,
    routed: bool,
    nat_port: u16,
    macs: Option<([u8; 6], [u8; 6])>,
) -> (Path, i32) {
    if routed {
        return (Path::Routed, nat::send_to_uplink(ctx, macs, cfg));
    }
    if let Err(errno) = rewrite(ctx, l4, SRC_OFFSET, &frame.src, &cfg.addr6, l4.src_port, nat_port) {
        diagnostics::rewrite_failed(Rewrite::Masquerade, errno);
        return (Path::SlowPathMalformed, TC_ACT_SHOT as i32);
    }
    (Path::Masqueraded, nat::send_to_uplink(ctx, macs, cfg))
}

/// `from_uplink_v6`, the program IPv6 arriving on the uplink is tail-called into; the
/// daemon puts it there at load.
#[map]
static UPLINK_V6: ProgramArray = ProgramArray::pinned(1, 0);

/// Continues in `from_uplink_v6`; returns only when it is not there.
#[inline(always)]
pub fn tail_call(ctx: &TcContext) {
    // SAFETY: a tail call replaces this program with the one in the slot, or fails.
    unsafe { UPLINK_V6.tail_call(ctx, 0) };
}

/// IPv6 arriving on the uplink: replies to masqueraded flows and ICMPv6 errors about them
/// go back into their container, connections to ports published on IPv6 to theirs; what
/// is for a container's own address is filtered (`routed`); everything else is the
/// host's.
#[inline(always)]
pub fn from_uplink(ctx: &TcContext) -> (Path, i32) {
    let to_host = (Path::UplinkToHost, TC_ACT_OK as i32);
    // Without NAT66 (no IPv6 address on the uplink), routed networks still are.
    let Some(cfg) = nat::config() else {
        return to_host;
    };
    let Some(frame) = parse::parse_ipv6(ctx) else {
        return to_host;
    };
    let to_uplink = cfg.flags & NatConfig::IPV6 != 0 && frame.dst == cfg.addr6;
    let proto = frame.next_header;
    if to_uplink
        && proto == IPPROTO_ICMPV6
        && let Some(verdict) = icmp_error_back(ctx, cfg)
    {
        return verdict;
    }
    let l4 = nat::l4_at(ctx, L4_OFFSET, proto, IPPROTO_ICMPV6, false);
    if !to_uplink {
        // A port published on this address (a routed container's own among them), else
        // a container's address, or the host's.
        if let Some(l4) = &l4
            && let Some(verdict) = publish6::from_outside(ctx, &frame, l4, false)
        {
            return verdict;
        }
        return routed::from_outside(ctx, &frame, l4.as_ref()).unwrap_or(to_host);
    }
    let Some(l4) = l4 else {
        return to_host;
    };
    if !nat::in_port_range(cfg, l4.dst_port) {
        return publish6::from_outside(ctx, &frame, &l4, true).unwrap_or(to_host);
    }
    let reply = flow_key(&frame, &l4);
    let Some(back) = nat::track_reply(&reply, &l4) else {
        return to_host;
    };
    nat::clamp_mss_at(ctx, proto, L4_OFFSET, &l4, cfg.uplink_ifindex, nat::TCP_IPV6_HEADERS);
    if let Err(errno) = rewrite(ctx, &l4, DST_OFFSET, &frame.dst, &back.addr.addr, l4.dst_port, back.port) {
        diagnostics::rewrite_failed(Rewrite::ReverseNat, errno);
        return (Path::SlowPathMalformed, TC_ACT_SHOT as i32);
    }
    (Path::ReverseNat, into_container(ctx, back.host_ifindex, back.mac))
}

/// The flow of a packet without extension headers as its L4 view in this direction sees
/// it.
#[inline(always)]
pub fn flow_key(frame: &Ipv6Frame, l4: &L4) -> FlowKey {
    FlowKey {
        src: IpAddress::v6(frame.src),
        dst: IpAddress::v6(frame.dst),
        src_port: l4.src_port,
        dst_port: l4.dst_port,
        proto: frame.next_header,
        _pad: [0; 3],
    }
}

/// Replaces one address and one port (or echo identifier) of the packet, keeping its L4
/// checksum valid: in tc the helper knows whether the skb holds a partial checksum; XDP
/// frames hold complete ones (see `Packet::l4_csum_replace`).
#[inline(always)]
pub fn rewrite(
    ctx: &impl Packet,
    l4: &L4,
    addr_offset: usize,
    old_addr: &[u8; 16],
    new_addr: &[u8; 16],
    old_port: u16,
    new_port: u16,
) -> Result<(), i64> {
    ctx.l4_csum_replace(l4.csum_offset, u64::from(old_port), u64::from(new_port), l4.csum_flags | 2)?;
    packet::write(ctx, l4.port_offset, new_port)?;
    rewrite_address(ctx, l4, addr_offset, old_addr, new_addr)
}

/// Replaces one address of the packet, keeping its L4 checksum valid.
#[inline(always)]
pub fn rewrite_address(
    ctx: &impl Packet,
    l4: &L4,
    addr_offset: usize,
    old_addr: &[u8; 16],
    new_addr: &[u8; 16],
) -> Result<(), i64> {
    replace_address_in_csum(
        ctx,
        l4.csum_offset,
        old_addr,
        new_addr,
        u64::from(BPF_F_PSEUDO_HDR) | l4.csum_flags,
    )?;
    packet::write(ctx, addr_offset, *new_addr)
}

/// Folds the change of a 16-byte address into the checksum at `csum_offset` (`flags`:
/// `BPF_F_PSEUDO_HDR` when the address is in its pseudo header).
#[inline(always)]
fn replace_address_in_csum(
    ctx: &impl Packet,
    csum_offset: usize,
    old: &[u8; 16],
    new: &[u8; 16],
    flags: u64,
) -> Result<(), i64> {
    // SAFETY: the helper only reads 16 bytes from each buffer.
    let diff =
        unsafe { bpf_csum_diff(old.as_ptr().cast_mut().cast(), 16, new.as_ptr().cast_mut().cast(), 16, 0) };
    if diff < 0 {
        return Err(diff);
    }
    let diff = diff as u64 & 0xffff_ffff;
    if flags & u64::from(BPF_F_PSEUDO_HDR) == 0 {
        return ctx.l4_csum_replace(csum_offset, 0, diff, flags);
    }
    match ctx.l4_csum_replace(csum_offset, 0, diff, flags | BPF_F_IPV6) {
        Err(EINVAL) => ctx.l4_csum_replace(csum_offset, 0, diff, flags),
        done => done,
    }
}

/// The checksum `sum` (as stored) once the 16 bytes it covers went from `old` to `new`.
#[inline(always)]
fn replace16(mut sum: u16, old: &[u8; 16], new: &[u8; 16]) -> u16 {
    for i in 0..4 {
        let word = |a: &[u8; 16]| [a[4 * i], a[4 * i + 1], a[4 * i + 2], a[4 * i + 3]];
        sum = csum::replace4(sum, word(old), word(new));
    }
    sum
}

/// Into the namespace of the container behind `host_ifindex`, to its MAC: the action.
#[inline(always)]
pub fn into_container(ctx: &TcContext, host_ifindex: u32, mac: [u8; 6]) -> i32 {
    let _ = packet::write(ctx, 0, mac);
    // SAFETY: plain helper call; it only records the target.
    let action = unsafe { bpf_redirect_peer(host_ifindex, 0) };
    counters::received_at(ctx.len(), host_ifindex);
    action as i32
}

/// Where an ICMPv6 error's quoted IPv6 header starts, and the quoted upper layer after it
/// (translated only straight behind the fixed header).
const QUOTE: usize = L4_OFFSET + 8;
const QUOTE_L4: usize = QUOTE + Ipv6Hdr::LEN;
const ICMP_CSUM_OFFSET: usize = L4_OFFSET + 2;

/// What an ICMPv6 error (destination unreachable, packet too big, time exceeded) quotes:
/// a TCP or UDP packet, or an echo request, whose ports are `src_port` and `dst_port`
/// (an echo request's identifier is its source port, 0 its destination's, as `nat::l4_at`
/// has them).
pub type Quote = nat::Quote<[u8; 16]>;

/// The quote of the ICMPv6 error of a packet without extension headers; `None` for
/// other packets, and quotes of something else.
#[inline(always)]
fn icmp_quote(ctx: &TcContext) -> Option<Quote> {
    let kind: u8 = ctx.load(L4_OFFSET).ok()?;
    if !(ICMPV6_DEST_UNREACHABLE..=ICMPV6_TIME_EXCEEDED).contains(&kind) {
        return None;
    }
    let proto: u8 = ctx.load(QUOTE + 6).ok()?;
    let (src_port, dst_port) = match proto {
        IPPROTO_TCP | IPPROTO_UDP => (ctx.load(QUOTE_L4).ok()?, ctx.load(QUOTE_L4 + 2).ok()?),
        IPPROTO_ICMPV6 if ctx.load::<u8>(QUOTE_L4).ok()? == ICMPV6_ECHO_REQUEST => {
            (ctx.load(QUOTE_L4 + 4).ok()?, 0)
        }
        _ => return None,
    };
    Some(Quote { proto, src: ctx.load(QUOTE + 8).ok()?, dst: ctx.load(QUOTE + 24).ok()?, src_port, dst_port })
}

/// Translates one end of the flow an ICMPv6 error quotes (`proto`): its address and port
/// (or echo identifier) inside the quote, from `old` to `new`, and the outer address
/// standing for it (`outer` until now), as `nat::translate_error` does for IPv4. The
/// quoted L4 checksum (when the quote holds it; a UDP one may be absent: 0) and the
/// ICMPv6 checksum, whose pseudo header holds the outer address, stay valid.
#[inline(always)]
fn translate_error(
    ctx: &TcContext,
    proto: u8,
    end: QuotedEnd,
    outer: &[u8; 16],
    old: (&[u8; 16], u16),
    new: (&[u8; 16], u16),
) -> Result<(), i64> {
    let ((old_addr, old_port), (new_addr, new_port)) = (old, new);
    let (addr_offset, port_offset, outer_offset) = match (end, proto) {
        (QuotedEnd::Source, IPPROTO_ICMPV6) => (QUOTE + 8, QUOTE_L4 + 4, DST_OFFSET),
        (QuotedEnd::Source, _) => (QUOTE + 8, QUOTE_L4, DST_OFFSET),
        (QuotedEnd::Destination, _) => (QUOTE + 24, QUOTE_L4 + 2, SRC_OFFSET),
    };
    let csum_offset = match proto {
        IPPROTO_TCP => QUOTE_L4 + 16,
        IPPROTO_UDP => QUOTE_L4 + 6,
        _ => QUOTE_L4 + 2,
    };
    // The quoted L4 checksum covers the quoted address (in its pseudo header) and port;
    // the ICMPv6 checksum covers all three.
    if let Ok(old_inner) = ctx.load::<u16>(csum_offset)
        && !(proto == IPPROTO_UDP && old_inner == 0)
    {
        let new_inner = csum::replace2(
            replace16(old_inner, old_addr, new_addr),
            old_port.to_ne_bytes(),
            new_port.to_ne_bytes(),
        );
        ctx.store(csum_offset, &new_inner, 0)?;
        ctx.l4_csum_replace(ICMP_CSUM_OFFSET, u64::from(old_inner), u64::from(new_inner), 2)?;
    }
    ctx.l4_csum_replace(ICMP_CSUM_OFFSET, u64::from(old_port), u64::from(new_port), 2)?;
    ctx.store(port_offset, &new_port, 0)?;
    replace_address_in_csum(ctx, ICMP_CSUM_OFFSET, old_addr, new_addr, 0)?;
    ctx.store(addr_offset, new_addr, 0)?;
    // The outer address, in the ICMPv6 pseudo header.
    replace_address_in_csum(ctx, ICMP_CSUM_OFFSET, outer, new_addr, u64::from(BPF_F_PSEUDO_HDR))?;
    ctx.store(outer_offset, new_addr, 0)
}

/// An ICMPv6 error (destination unreachable, packet too big, time exceeded) about a
/// masqueraded flow quotes the packet as it left, with the uplink's address and the NAT
/// port (or echo identifier) inside: it goes back to the container with the outer
/// destination, the quoted source and port translated (`translate_error`). Only a quote
/// without extension headers is translated.
#[inline(always)]
fn icmp_error_back(ctx: &TcContext, cfg: &NatConfig) -> Option<(Path, i32)> {
    let quote = icmp_quote(ctx)?;
    if quote.src != cfg.addr6 {
        return None;
    }
    let reply = quote.reversed();
    let back = nat::reverse_of(&reply)?;
    let old = (&quote.src, quote.src_port);
    let new = (&back.addr.addr, back.port);
    if let Err(errno) = translate_error(ctx, quote.proto, QuotedEnd::Source, &cfg.addr6, old, new) {
        diagnostics::rewrite_failed(Rewrite::IcmpError, errno);
        return Some((Path::SlowPathMalformed, TC_ACT_SHOT as i32));
    }
    Some((Path::ReverseNat, into_container(ctx, back.host_ifindex, back.mac)))
}

/// An ICMPv6 error a container sends about a flow it received (the quote: a TCP or UDP
/// packet to its own address), to the flow's other end: about a masqueraded flow's reply,
/// it leaves out of the uplink with the uplink's IPv6 address and the flow's port in place
/// of the container's, outside and in the quote, as `nat::icmp_error_out` does for IPv4;
/// about a connection to a published port, with the published address and port
/// (`publish6::error_out`). `None` for other packets, and errors about no tracked flow
/// (`routed::icmp_out` keeps those from the uplink).
#[inline(never)]
pub fn icmp_error_out(ctx: &TcContext, sender: u32) -> Option<(Path, i32)> {
    let frame = parse::parse_ipv6(ctx)?;
    if frame.next_header != IPPROTO_ICMPV6 {
        return None;
    }
    let quote = icmp_quote(ctx)?;
    if quote.proto == IPPROTO_ICMPV6 || quote.dst != frame.src || quote.src != frame.dst {
        return None;
    }
    let s = nat::scratch()?;
    s.key = quote.reversed();
    let now = nat::now();
    let Some((nat_addr, nat_port)) = nat::forward_of(&s.key) else {
        return publish6::error_out(ctx, &frame, &quote, &s.key, sender, now);
    };
    let cfg = config()?;
    let (rc, fib) = nat::fib_route_v6(ctx, IPPROTO_ICMPV6, frame.src, frame.dst, sender);
    let Route::Uplink { next_hop } = nat::route_of(rc, &fib, Some(cfg), now) else {
        return None;
    };
    let old = (&quote.dst, quote.dst_port);
    if let Err(errno) =
        translate_error(ctx, quote.proto, QuotedEnd::Destination, &frame.src, old, (&nat_addr.addr, nat_port))
    {
        diagnostics::rewrite_failed(Rewrite::IcmpError, errno);
        return Some((Path::SlowPathMalformed, TC_ACT_SHOT as i32));
    }
    Some((Path::Masqueraded, nat::send_to_uplink(ctx, next_hop.macs(), cfg)))
}

/// As `icmp_error_out`, for a published connection's error (`publish6::error_out`): the
/// quote's destination and the outer source become `host`.
#[inline(always)]
pub fn translate_error_out(
    ctx: &TcContext,
    frame: &Ipv6Frame,
    quote: &Quote,
    host: (&[u8; 16], u16),
) -> Result<(), i64> {
    translate_error(ctx, quote.proto, QuotedEnd::Destination, &frame.src, (&quote.dst, quote.dst_port), host)
}
