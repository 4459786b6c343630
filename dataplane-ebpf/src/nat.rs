//! Outbound NAT (masquerade) with connection tracking: flows leaving through the uplink
//! get the uplink's address and a port of the NAT range; replies arriving on the uplink
//! are translated back and redirected into their container; ICMP errors about such flows
//! are translated with them, both ways (`icmp_error_back`, `icmp_error_out`). Owns the
//! NAT maps: new flows in SNAT_NEW and SNAT_REV_NEW, confirmed ones (answered, then
//! continued by the container) in SNAT_CT and SNAT_REV, so that a flood of new flows can
//! only push out new flows. The daemon sets NAT_CONFIG and expires entries.

use aya_ebpf::{
    bindings::{
        BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR, BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_NOT_FWDED,
        BPF_FIB_LKUP_RET_SUCCESS, BPF_NOEXIST, TC_ACT_OK, TC_ACT_SHOT, bpf_fib_lookup,
    },
    helpers::{
        bpf_check_mtu, bpf_fib_lookup as fib_lookup, bpf_get_prandom_u32, bpf_ktime_get_coarse_ns,
        bpf_redirect, bpf_redirect_neigh, bpf_redirect_peer,
    },
    macros::map,
    maps::{Array, LruHashMap, PerCpuArray},
    programs::TcContext,
};
use dataplane_common::{
    AF_INET, AF_INET6, CONNTRACK_DEFAULT_SIZE, FlowKey, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP,
    IPPROTO_UDP, InterfaceConfig, IpAddress, NatConfig, NextHop, Path, RevSnatEntry, SnatEntry, SubnetInfo,
    csum, ct_event, ct_state,
};

use crate::{
    counters,
    diagnostics::{self, Rewrite, Table},
    packet::{self, Packet},
    parse::{self, Frame, Ipv4Frame},
    policy, publish, routed, validate,
};

#[map]
static NAT_CONFIG: Array<NatConfig> = Array::pinned(1, 0);

/// Confirmed masqueraded flows, keyed as the container sent them: answered, then
/// continued by the container (TCP: with neither SYN nor RST, so its stack took the
/// answer). Only confirmations enter it, so only confirmed flows push each other out.
#[map]
static SNAT_CT: LruHashMap<FlowKey, SnatEntry> = LruHashMap::pinned(CONNTRACK_DEFAULT_SIZE, 0);

/// The same flows keyed as their replies arrive on the uplink.
#[map]
static SNAT_REV: LruHashMap<FlowKey, RevSnatEntry> = LruHashMap::pinned(CONNTRACK_DEFAULT_SIZE, 0);

/// Masqueraded flows not confirmed yet, keyed as SNAT_CT: every new flow enters here.
#[map]
static SNAT_NEW: LruHashMap<FlowKey, SnatEntry> = LruHashMap::pinned(CONNTRACK_DEFAULT_SIZE, 0);

/// The same flows keyed as their replies arrive, as SNAT_REV.
#[map]
static SNAT_REV_NEW: LruHashMap<FlowKey, RevSnatEntry> = LruHashMap::pinned(CONNTRACK_DEFAULT_SIZE, 0);

/// Tries to find a free port this many times before declaring the range exhausted for
/// one destination.
const PORT_ATTEMPTS: u32 = 16;

const IP_CSUM_OFFSET: usize = 14 + 10;
pub const TRANSLATABLE_L4_OFFSET: usize = 14 + 20;
pub const IP_SRC_OFFSET: usize = 14 + 12;
pub const IP_DST_OFFSET: usize = 14 + 16;
const ICMP_ECHO_REPLY: u8 = 0;
const ICMP_ECHO_REQUEST: u8 = 8;
const ICMPV6_ECHO_REQUEST: u8 = 128;
const ICMPV6_ECHO_REPLY: u8 = 129;
const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;
/// TCP flags that change a connection's state.
pub const TCP_STATE_CHANGES: u8 = TCP_FIN | TCP_SYN | TCP_RST;

/// The time conntrack and the route cache go by: CLOCK_MONOTONIC_COARSE, which reads a
/// value the kernel keeps per tick (a few ms) instead of the TSC: a tenth of the cost of
/// bpf_ktime_get_ns, and timeouts of seconds do not notice the difference.
#[inline(always)]
pub fn now() -> u64 {
    // SAFETY: the helper has no preconditions.
    unsafe { bpf_ktime_get_coarse_ns() }
}

/// Read in place, not copied: a copy took 32 bytes of every caller's frame, and
/// `leave_host`'s lies under `from_container`'s on the verifier's 512-byte stack.
#[inline(always)]
pub fn config() -> Option<&'static NatConfig> {
    NAT_CONFIG.get(0).filter(|c| c.uplink_ifindex != 0)
}

/// Where the port (or ICMP identifier) and checksum of one direction sit.
pub struct L4 {
    pub src_port: u16,
    pub dst_port: u16,
    /// Offset of the port this direction rewrites: the source going out, the destination
    /// coming back.
    pub port_offset: usize,
    pub csum_offset: usize,
    /// Extra checksum flags: TCP/UDP cover the pseudo header, UDP may carry no checksum.
    pub csum_flags: u64,
    pseudo_header: bool,
    pub tcp_flags: u8,
}

/// The L4 view of a frame for NAT. Going out, ICMP echo requests carry their identifier as
/// the source port; coming back, echo replies carry it as the destination port.
#[inline(always)]
pub fn l4(ctx: &impl Packet, frame: &Ipv4Frame, outbound: bool) -> Option<L4> {
    // Only translatable frames have their L4 header right after a 20-byte IPv4 header: a
    // constant offset, which direct packet access needs to verify.
    // A malformed frame is neither tracked nor translated.
    if !frame.translatable() || !validate::well_formed(ctx, frame) {
        return None;
    }
    l4_at(ctx, TRANSLATABLE_L4_OFFSET, frame.proto, IPPROTO_ICMP, outbound)
}

/// The L4 view of the `proto` header at `off` (a constant offset, for direct access):
/// TCP, UDP, or an echo of the family's ICMP, `icmp` (a request going out, a reply
/// coming back).
#[inline(always)]
pub fn l4_at(ctx: &impl Packet, off: usize, proto: u8, icmp: u8, outbound: bool) -> Option<L4> {
    l4_view::<false>(ctx, off, proto, icmp, outbound)
}

/// As `l4_at`, for an upper-layer header behind IPv6 extension headers, at the offset
/// their walk found (`parse::behind_extension_headers`): read through the helper, as
/// direct access verifies only offsets the verifier can bound. Its offsets are for the
/// helpers alone (`clamp_mss_at`): the paths that take such packets write nothing there.
#[inline(always)]
pub fn l4_walked(ctx: &impl Packet, off: usize, proto: u8, icmp: u8, outbound: bool) -> Option<L4> {
    l4_view::<true>(ctx, off, proto, icmp, outbound)
}

/// `l4_at`, or with `WALKED` `l4_walked`: the same view, read in place or through the
/// helper.
#[inline(always)]
fn l4_view<const WALKED: bool>(
    ctx: &impl Packet,
    off: usize,
    proto: u8,
    icmp: u8,
    outbound: bool,
) -> Option<L4> {
    let read = |offset| if WALKED { ctx.load_bytes(offset) } else { packet::read(ctx, offset) };
    let read_u8 = |offset| if WALKED { ctx.load_bytes::<u8>(offset) } else { packet::read(ctx, offset) };
    match proto {
        IPPROTO_TCP | IPPROTO_UDP => {
            let src_port: u16 = read(off)?;
            let dst_port: u16 = read(off + 2)?;
            let tcp = proto == IPPROTO_TCP;
            Some(L4 {
                src_port,
                dst_port,
                port_offset: if outbound { off } else { off + 2 },
                csum_offset: if tcp { off + 16 } else { off + 6 },
                csum_flags: if tcp { 0 } else { u64::from(BPF_F_MARK_MANGLED_0) },
                pseudo_header: true,
                tcp_flags: if tcp { read_u8(off + 13)? } else { 0 },
            })
        }
        _ if proto == icmp => {
            let kind = read_u8(off)?;
            let id: u16 = read(off + 4)?;
            let expected = match (proto == IPPROTO_ICMP, outbound) {
                (true, true) => ICMP_ECHO_REQUEST,
                (true, false) => ICMP_ECHO_REPLY,
                (false, true) => ICMPV6_ECHO_REQUEST,
                (false, false) => ICMPV6_ECHO_REPLY,
            };
            if kind != expected {
                return None;
            }
            let (src_port, dst_port) = if outbound { (id, 0) } else { (0, id) };
            Some(L4 {
                src_port,
                dst_port,
                port_offset: off + 4,
                csum_offset: off + 2,
                csum_flags: 0,
                // ICMPv6's checksum covers a pseudo header, ICMP's does not.
                pseudo_header: proto == IPPROTO_ICMPV6,
                tcp_flags: 0,
            })
        }
        _ => None,
    }
}

/// The sequence and acknowledgement numbers (host order) of the TCP header at
/// `l4_offset` (`TRANSLATABLE_L4_OFFSET` for IPv4, or one a walk of IPv6 extension
/// headers found): read through the helper, which takes any offset, in one call (only a
/// connection's first packets, which set up or confirm its tracking, ask).
#[inline(always)]
pub fn tcp_seq_ack_at(ctx: &impl Packet, l4_offset: usize) -> Option<(u32, u32)> {
    let [seq, ack]: [u32; 2] = ctx.load_bytes(l4_offset + 4)?;
    Some((u32::from_be(seq), u32::from_be(ack)))
}

/// Whether `port` (network byte order) lies in the masquerade port range: on the uplink's
/// address, such a destination is a reply to a masqueraded flow.
#[inline(always)]
pub fn in_port_range(cfg: &NatConfig, port: u16) -> bool {
    (cfg.port_min..=cfg.port_max).contains(&u16::from_be(port))
}

const IP_TOTAL_LEN_OFFSET: usize = 14 + 2;

/// Whether the frame's L4 checksum may be a partial one: a local sender that leaves the
/// checksum to the device (CHECKSUM_PARTIAL, as veth peers in the same host do) stores
/// only the pseudo header's sum there. Only the skb knows for sure; a complete checksum
/// equal to that sum is rare (1 in 65,536) and merely takes the tc path.
#[inline(always)]
pub fn checksum_may_be_partial(ctx: &impl Packet, frame: &Ipv4Frame, l4: &L4) -> bool {
    let (Some(stored), Some(total_len)) =
        (packet::read::<u16>(ctx, l4.csum_offset), packet::read::<u16>(ctx, IP_TOTAL_LEN_OFFSET))
    else {
        return true;
    };
    may_be_pseudo_header_sum(stored, frame, u16::from_be(total_len))
}

/// Whether the frame's L4 checksum field certainly holds a complete checksum: it is not
/// the pseudo header's sum, and the IPv4 length is the packet's (BIG TCP packets carry 0
/// there, and their pseudo header's sum cannot be told). Reads only the linear data.
#[inline(always)]
fn checksum_is_complete(ctx: &impl Packet, frame: &Ipv4Frame, l4: &L4) -> bool {
    let (Some(stored), Some(total_len)) = (
        packet::read_linear::<u16>(ctx, l4.csum_offset),
        packet::read_linear::<u16>(ctx, IP_TOTAL_LEN_OFFSET),
    ) else {
        return false;
    };
    let total_len = u16::from_be(total_len);
    u32::from(total_len) + 14 == ctx.len() && !may_be_pseudo_header_sum(stored, frame, total_len)
}

#[inline(always)]
fn may_be_pseudo_header_sum(stored: u16, frame: &Ipv4Frame, total_len: u16) -> bool {
    let l4_len = total_len.wrapping_sub((TRANSLATABLE_L4_OFFSET - 14) as u16);
    stored != 0 && stored == csum::pseudo_header_v4(frame.src, frame.dst, frame.proto, l4_len)
}

const TCP_OPTION_END: u8 = 0;
const TCP_OPTION_NOP: u8 = 1;
const TCP_OPTION_MSS: u8 = 2;
/// IP and TCP headers without options: what the MTU leaves for the segment.
const TCP_IPV4_HEADERS: u32 = 40;
pub const TCP_IPV6_HEADERS: u32 = 60;
/// TCP options take at most 40 bytes, one byte each at the least.
const MAX_TCP_OPTIONS: usize = 40;

/// Lowers the MSS a SYN arriving on the uplink offers to what the uplink carries. The
/// container answers with segments as large as that MSS and its own link allow: when its
/// network's MTU is larger than the uplink's, they would be too large to leave, and a
/// redirect drops them without the ICMP error a router would send (what
/// `iptables --clamp-mss-to-pmtu` is for).
#[inline(always)]
pub fn clamp_mss(ctx: &impl Packet, frame: &Ipv4Frame, l4: &L4, uplink_ifindex: u32) {
    clamp_mss_at(ctx, frame.proto, frame.l4_offset, l4, uplink_ifindex, TCP_IPV4_HEADERS);
}

/// As `clamp_mss`, for a packet of either family whose L4 header (`proto`) starts at
/// `l4_offset`, behind IP and TCP headers of `headers` bytes without options.
#[inline(always)]
pub fn clamp_mss_at(
    ctx: &impl Packet,
    proto: u8,
    l4_offset: usize,
    l4: &L4,
    uplink_ifindex: u32,
    headers: u32,
) {
    if proto != IPPROTO_TCP || l4.tcp_flags & TCP_SYN == 0 {
        return;
    }
    let mut mtu: u32 = 0;
    // SAFETY: the context is this program's; the helper writes the device's MTU into
    // `mtu` (a SYN is far below it, so the check itself passes).
    unsafe { bpf_check_mtu(ctx.raw(), uplink_ifindex, &mut mtu, 0, 0) };
    let Ok(limit) = u16::try_from(mtu.saturating_sub(headers)) else {
        return;
    };
    if limit == 0 {
        return;
    }
    // Options sit at variable offsets, where direct access does not verify: helpers (for
    // SYNs only).
    let Some(data_offset) = ctx.load_bytes::<u8>(l4_offset + 12) else {
        return;
    };
    let end = l4_offset + usize::from(data_offset >> 4) * 4;
    let mut off = l4_offset + 20;
    for _ in 0..MAX_TCP_OPTIONS {
        if off >= end {
            return;
        }
        let Some(kind) = ctx.load_bytes::<u8>(off) else { return };
        match kind {
            TCP_OPTION_END => return,
            TCP_OPTION_NOP => {
                off += 1;
                continue;
            }
            _ => {}
        }
        let Some(len) = ctx.load_bytes::<u8>(off + 1) else { return };
        if kind == TCP_OPTION_MSS && len == 4 {
            let Some(offered) = ctx.load_bytes::<u16>(off + 2) else { return };
            if u16::from_be(offered) > limit {
                let clamped = limit.to_be();
                if ctx.store_bytes(off + 2, &clamped).is_ok() {
                    let _ = ctx.l4_csum_replace(l4.csum_offset, u64::from(offered), u64::from(clamped), 2);
                }
            }
            return;
        }
        if len < 2 {
            return;
        }
        off += usize::from(len);
    }
}

/// The flow of a frame as its L4 view in this direction sees it.
#[inline(always)]
pub fn flow_key(frame: &Ipv4Frame, l4: &L4) -> FlowKey {
    FlowKey {
        src: IpAddress::v4(frame.src),
        dst: IpAddress::v4(frame.dst),
        src_port: l4.src_port,
        dst_port: l4.dst_port,
        proto: frame.proto,
        _pad: [0; 3],
    }
}

/// Replaces one address and one port of `frame`, keeping the IPv4 and L4 checksums valid
/// (incrementally, so CHECKSUM_PARTIAL packets stay correct too).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub fn rewrite(
    ctx: &impl Packet,
    frame: &Ipv4Frame,
    l4: &L4,
    addr_offset: usize,
    old_addr: [u8; 4],
    new_addr: [u8; 4],
    old_port: u16,
    new_port: u16,
) -> Result<(), i64> {
    // The port first, while the checksum field still matches the frame's addresses. The
    // port is not in the pseudo header: a CHECKSUM_PARTIAL packet's field (the pseudo
    // header's sum) must not change with it, any other packet's must, and only the
    // helper knows which kind the skb is. A field that cannot be a partial one takes the
    // change in software, sparing a helper call (~20 ns). The address always goes through
    // the helper: it is in the pseudo header, and a CHECKSUM_COMPLETE skb's sum must
    // follow it.
    let (from, to, flags) = (u64::from(old_port), u64::from(new_port), l4.csum_flags | 2);
    if l4.pseudo_header && checksum_is_complete(ctx, frame, l4) {
        packet::complete_l4_csum_replace(ctx, l4.csum_offset, from, to, flags)?;
    } else {
        ctx.l4_csum_replace(l4.csum_offset, from, to, flags)?;
    }
    packet::write(ctx, l4.port_offset, new_port)?;
    rewrite_addr(ctx, l4, addr_offset, old_addr, new_addr)
}

/// Replaces one address of the packet, keeping the IPv4 and L4 checksums valid.
#[inline(always)]
pub fn rewrite_addr(
    ctx: &impl Packet,
    l4: &L4,
    addr_offset: usize,
    old_addr: [u8; 4],
    new_addr: [u8; 4],
) -> Result<(), i64> {
    if l4.pseudo_header {
        let (old_a, new_a) =
            (u64::from(u32::from_ne_bytes(old_addr)), u64::from(u32::from_ne_bytes(new_addr)));
        ctx.l4_csum_replace(l4.csum_offset, old_a, new_a, u64::from(BPF_F_PSEUDO_HDR) | l4.csum_flags | 4)?;
    }
    packet::set_ipv4_addr(ctx, addr_offset, old_addr, new_addr)
}

#[inline(always)]
pub fn next_state(state: u8, tcp_flags: u8, reply: bool) -> u8 {
    if tcp_flags & TCP_RST != 0 {
        ct_state::CLOSED
    } else if tcp_flags & TCP_FIN != 0 && state != ct_state::CLOSED {
        ct_state::CLOSING
    } else if reply && state == ct_state::NEW {
        ct_state::ESTABLISHED
    } else {
        state
    }
}

/// How the host would route a packet from `src` to `dst` arriving on `sender`: the FIB's
/// verdict and, when routed, the egress interface and MACs.
#[inline(always)]
fn fib_route(ctx: &TcContext, proto: u8, src: [u8; 4], dst: [u8; 4], sender: u32) -> (u32, bpf_fib_lookup) {
    // SAFETY: bpf_fib_lookup is plain data; zero is its documented "unset" value.
    let mut fib: bpf_fib_lookup = unsafe { core::mem::zeroed() };
    fib.family = AF_INET;
    fib.l4_protocol = proto;
    fib.__bindgen_anon_3.ipv4_src = u32::from_ne_bytes(src);
    fib.__bindgen_anon_4.ipv4_dst = u32::from_ne_bytes(dst);
    fib_ask(ctx, fib, sender)
}

/// As `fib_route`, for IPv6.
#[inline(always)]
pub fn fib_route_v6(
    ctx: &TcContext,
    proto: u8,
    src: [u8; 16],
    dst: [u8; 16],
    sender: u32,
) -> (u32, bpf_fib_lookup) {
    // SAFETY: as in `fib_route`.
    let mut fib: bpf_fib_lookup = unsafe { core::mem::zeroed() };
    fib.family = AF_INET6;
    fib.l4_protocol = proto;
    // SAFETY: 16 bytes as the four words of the union's IPv6 view, in packet order.
    unsafe {
        fib.__bindgen_anon_3.ipv6_src = core::mem::transmute::<[u8; 16], [u32; 4]>(src);
        fib.__bindgen_anon_4.ipv6_dst = core::mem::transmute::<[u8; 16], [u32; 4]>(dst);
    }
    fib_ask(ctx, fib, sender)
}

/// The FIB's answer for `fib` (its addresses filled in) arriving on `sender`.
#[inline(always)]
fn fib_ask(ctx: &TcContext, mut fib: bpf_fib_lookup, sender: u32) -> (u32, bpf_fib_lookup) {
    // Route as the kernel would for this packet arriving on the sender's veth (the daemon
    // enables forwarding on host-side veths, which as bridge ports route nothing themselves).
    fib.ifindex = sender;
    // SAFETY: the helper reads and writes only the struct we pass with its size.
    let rc =
        unsafe { fib_lookup(ctx.skb.skb.cast(), &mut fib, core::mem::size_of::<bpf_fib_lookup>() as i32, 0) }
            as u32;
    (rc, fib)
}

/// What a FIB answer means for the NAT paths.
#[inline(always)]
pub fn route_of(rc: u32, fib: &bpf_fib_lookup, cfg: Option<&NatConfig>, now: u64) -> Route {
    let uplink = cfg.is_some_and(|c| fib.ifindex == c.uplink_ifindex);
    match rc {
        BPF_FIB_LKUP_RET_NOT_FWDED => Route::Local,
        BPF_FIB_LKUP_RET_SUCCESS if uplink => Route::Uplink {
            next_hop: NextHop { dmac: fib.dmac, smac: fib.smac, _pad: [0; 4], checked_ns: now },
        },
        BPF_FIB_LKUP_RET_NO_NEIGH if uplink => Route::Uplink { next_hop: NextHop::default() },
        _ => Route::Other,
    }
}

/// How the host routes a packet, as far as the NAT paths care.
#[derive(Clone, Copy)]
pub enum Route {
    /// To one of the host's own addresses.
    Local,
    /// Out of the uplink; the next hop is unknown (`checked_ns` 0) while its neighbour
    /// entry is unresolved.
    Uplink { next_hop: NextHop },
    /// Anywhere else (another interface, unreachable, ...): the kernel's business.
    Other,
}

#[repr(C)]
struct RouteKey {
    dst: [u8; 4],
    sender: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CachedRoute {
    /// For the host's own addresses, only `checked_ns` means anything.
    next_hop: NextHop,
    /// 1: one of the host's own addresses.
    local: u32,
    _pad: u32,
}

/// Routes the FIB gave (to the host itself, or to a resolved next hop out of the uplink)
/// by destination and sender, so that the first packets of a flow, before its conntrack
/// entry knows the next hop, do not each pay a FIB lookup. Trusted as long as a flow
/// trusts its next hop.
#[map]
static ROUTE_CACHE: LruHashMap<RouteKey, CachedRoute> = LruHashMap::with_max_entries(65536, 0);

/// The route of a packet from `src` on `sender` to `dst`: a fresh cached one, else the
/// FIB's answer (cached when it is the host or a resolved next hop out of the uplink).
/// Without NAT (`cfg` is `None`) only `Local` and `Other` come back.
#[inline(always)]
pub fn route(
    ctx: &TcContext,
    proto: u8,
    src: [u8; 4],
    dst: [u8; 4],
    sender: u32,
    cfg: Option<&NatConfig>,
    now: u64,
) -> Route {
    let key = RouteKey { dst, sender };
    // SAFETY: the value is plain data, copied out at once.
    if let Some(hit) = unsafe { ROUTE_CACHE.get(&key) }.copied()
        && now.wrapping_sub(hit.next_hop.checked_ns) < NextHop::TRUSTED_NS
    {
        if hit.local != 0 {
            return Route::Local;
        }
        if cfg.is_some() {
            return Route::Uplink { next_hop: hit.next_hop };
        }
    }
    let (rc, fib) = fib_route(ctx, proto, src, dst, sender);
    let route = route_of(rc, &fib, cfg, now);
    // Cached: the host itself, or a resolved next hop out of the uplink. (The next hop is
    // built anew rather than read out of `route`, whose other variants leave it undefined
    // to the verifier.)
    let local = matches!(route, Route::Local);
    if local || (rc == BPF_FIB_LKUP_RET_SUCCESS && matches!(route, Route::Uplink { .. })) {
        let next_hop = NextHop { dmac: fib.dmac, smac: fib.smac, _pad: [0; 4], checked_ns: now };
        let _ = ROUTE_CACHE.insert(&key, &CachedRoute { next_hop, local: u32::from(local), _pad: 0 }, 0);
    }
    route
}

/// Redirects a translated packet out of the uplink, to the next hop's MAC when it is
/// known, else through the kernel's neighbour resolution.
#[inline(always)]
pub fn send_to_uplink(ctx: &TcContext, macs: Option<([u8; 6], [u8; 6])>, cfg: &NatConfig) -> i32 {
    let action = match macs {
        Some((dmac, smac)) => {
            let _ = packet::write(ctx, 0, dmac);
            let _ = packet::write(ctx, 6, smac);
            // A veth's transmit path drops what exceeds its MTU; its peer's ingress does
            // not check: frames too large for the uplink take the transmit path.
            let mut mtu = 0u32;
            // SAFETY: plain helper calls; bpf_check_mtu writes the MTU into `mtu`.
            if cfg.flags & NatConfig::UPLINK_VETH != 0
                && unsafe { bpf_check_mtu(ctx.raw(), cfg.uplink_ifindex, &mut mtu, 0, 0) } == 0
            {
                unsafe { bpf_redirect_peer(cfg.uplink_ifindex, 0) }
            } else {
                unsafe { bpf_redirect(cfg.uplink_ifindex, 0) }
            }
        }
        // SAFETY: a null parameter block asks the helper to look the neighbour up itself.
        None => unsafe { bpf_redirect_neigh(cfg.uplink_ifindex, core::ptr::null_mut(), 0, 0) },
    };
    action as i32
}

/// Unicast IPv4 that no endpoint of the sender's network owns, on a tracked flow whose
/// next hop is fresh: translated (masqueraded) or, from a routed network (`routed`), as
/// it is, and sent out of the uplink with one conntrack lookup, skipping the subnet trie
/// and the route (both were asked when the next hop was, less than `NextHop::TRUSTED_NS`
/// ago). `None` sends the packet the long way, `leave_host` or `routed::leave_host`.
#[inline(never)]
pub fn established_out(ctx: &TcContext, frame: &Ipv4Frame, sender: u32, routed: bool) -> Option<(Path, i32)> {
    let cfg = config()?;
    let l4 = l4(ctx, frame, true)?;
    let s = scratch()?;
    s.key = flow_key(frame, &l4);
    let (next_hop, nat_port) = established(s, frame.proto, &l4, sender, now())?;
    if routed {
        return Some((Path::Routed, send_to_uplink(ctx, Some(next_hop), cfg)));
    }
    Some(masquerade(ctx, frame, &l4, cfg, nat_port, Some(next_hop)))
}

/// The per-CPU slot of the SNAT paths.
#[inline(always)]
pub fn scratch() -> Option<&'static mut SnatScratch> {
    let scratch = SNAT_SCRATCH.get_ptr_mut(0)?;
    // SAFETY: the slot is this CPU's, and programs do not preempt each other on a CPU.
    Some(unsafe { &mut *scratch })
}

/// The next hop's MACs and the masquerade port of the tracked flow `s.key` from `sender`,
/// when its next hop is fresh and the packet needs nothing of the long way (confirming
/// the flow, or a new connection on an ended flow's tuple); the flow takes the packet's
/// news.
#[inline(always)]
pub fn established(
    s: &SnatScratch,
    proto: u8,
    l4: &L4,
    sender: u32,
    now: u64,
) -> Option<(([u8; 6], [u8; 6]), u16)> {
    let entry = match SNAT_CT.get_ptr_mut(&s.key) {
        Some(entry) => entry,
        None => {
            let entry = SNAT_NEW.get_ptr_mut(&s.key)?;
            // SAFETY: map pointer, valid for this program run.
            if confirms_out(unsafe { &*entry }, l4.tcp_flags) {
                // The long way confirms it.
                return None;
            }
            entry
        }
    };
    // SAFETY: map pointer, valid for this program run.
    unsafe {
        // Another sender, or a new connection on an ended flow's tuple: the long way.
        if (*entry).host_ifindex != sender
            || (opens_connection(proto, l4.tcp_flags) && has_ended((*entry).state))
        {
            return None;
        }
        let next_hop = (*entry).next_hop.fresh(now)?;
        (*entry).last_seen_ns = now;
        (*entry).state = next_state((*entry).state, l4.tcp_flags, false);
        Some((next_hop, (*entry).nat_port))
    }
}

/// Unicast IPv4 that no endpoint of the sender's network owns: masqueraded out of the
/// uplink, dropped for `--internal` networks, or left to the kernel; `None` when it is for
/// one of the host's own addresses.
/// (Functions marked `inline(never)` are BPF subprograms: each has its own stack frame,
/// which keeps the paths of `from_container` from adding up past the 512-byte stack.)
#[inline(never)]
pub fn leave_host(
    ctx: &TcContext,
    frame: &Ipv4Frame,
    iface: &InterfaceConfig,
    sender: u32,
) -> Option<(Path, i32)> {
    let cfg = config();
    // One clock read per packet, for the route cache and the conntrack entry.
    let now = now();
    let route = route(ctx, frame.proto, frame.src, frame.dst, sender, cfg, now);
    if let Route::Local = route {
        // One of the host's own addresses: the caller tries the published ports there.
        return None;
    }
    if iface.flags & InterfaceConfig::INTERNAL != 0 {
        return Some((Path::DroppedInternal, TC_ACT_SHOT as i32));
    }
    let (Some(cfg), Route::Uplink { next_hop }) = (cfg, route) else {
        return Some((Path::SlowPathIp, TC_ACT_OK as i32));
    };
    if !frame.translatable() {
        return Some((Path::SlowPathIp, TC_ACT_OK as i32));
    }
    let Some(l4) = l4(ctx, frame, true) else {
        // Malformed: dropped rather than sent out untranslated, with the container's address.
        if !validate::well_formed(ctx, frame) {
            return Some((Path::DroppedMalformed, TC_ACT_SHOT as i32));
        }
        // ICMP that no flow tracks (echo replies to the outside's pings, errors about no
        // masqueraded or published flow: `icmp_error_out` translated those) leaves as it
        // is from an unprotected network, as from a routed one; a NAT network's would
        // leave with the container's own address.
        if frame.proto == IPPROTO_ICMP {
            if iface.flags & InterfaceConfig::UNPROTECTED_V4 != 0 {
                return Some((Path::Routed, send_to_uplink(ctx, next_hop.macs(), &cfg)));
            }
            return Some((Path::DroppedUntrackedIcmp, TC_ACT_SHOT as i32));
        }
        return Some((Path::SlowPathIp, TC_ACT_OK as i32));
    };
    let mac: [u8; 6] = packet::read(ctx, 6).unwrap_or_default();
    let Some(s) = scratch() else {
        return Some((Path::SlowPathIp, TC_ACT_OK as i32));
    };
    s.key = flow_key(frame, &l4);
    let request = SnatRequest {
        proto: frame.proto,
        l4: &l4,
        cfg: &cfg,
        ipv6: false,
        routed: false,
        sender,
        mac,
        next_hop,
        now,
    };
    let Some(nat_port) = snat_port(s, &request) else {
        return Some((Path::DroppedNatExhausted, TC_ACT_SHOT as i32));
    };
    Some(masquerade(ctx, frame, &l4, &cfg, nat_port, next_hop.macs()))
}

/// Gives the packet the uplink's address and `nat_port` as its source and sends it out.
#[inline(always)]
fn masquerade(
    ctx: &TcContext,
    frame: &Ipv4Frame,
    l4: &L4,
    cfg: &NatConfig,
    nat_port: u16,
    macs: Option<([u8; 6], [u8; 6])>,
) -> (Path, i32) {
    if let Err(errno) = rewrite(ctx, frame, l4, IP_SRC_OFFSET, frame.src, cfg.addr, l4.src_port, nat_port) {
        diagnostics::rewrite_failed(Rewrite::Masquerade, errno);
        return (Path::SlowPathMalformed, TC_ACT_SHOT as i32);
    }
    (Path::Masqueraded, send_to_uplink(ctx, macs, cfg))
}

const ICMP_DEST_UNREACHABLE: u8 = 3;
const ICMP_TIME_EXCEEDED: u8 = 11;
/// Where an ICMP error's quoted IPv4 header starts, in a translatable frame, and the
/// quoted L4 header after it (translated only behind a 20-byte header).
const QUOTE: usize = TRANSLATABLE_L4_OFFSET + 8;
const QUOTE_L4: usize = QUOTE + 20;
const ICMP_CSUM_OFFSET: usize = TRANSLATABLE_L4_OFFSET + 2;

/// What an ICMP error quotes, of either family (`A`: a 4- or 16-byte address): over
/// IPv4 (destination unreachable, time exceeded, in a translatable frame), a TCP or UDP
/// packet behind a 20-byte header, its first 8 bytes at least; over IPv6, see
/// `nat6::icmp_quote`.
pub struct Quote<A> {
    pub proto: u8,
    pub src: A,
    pub dst: A,
    pub src_port: u16,
    pub dst_port: u16,
}

/// An address as stored in a packet, of either family.
pub trait Address: Copy {
    fn ip(self) -> IpAddress;
}

impl Address for [u8; 4] {
    #[inline(always)]
    fn ip(self) -> IpAddress {
        IpAddress::v4(self)
    }
}

impl Address for [u8; 16] {
    #[inline(always)]
    fn ip(self) -> IpAddress {
        IpAddress::v6(self)
    }
}

impl<A: Address> Quote<A> {
    /// The flow going the other way from the quoted packet: its answer's key.
    #[inline(always)]
    pub fn reversed(&self) -> FlowKey {
        FlowKey {
            src: self.dst.ip(),
            dst: self.src.ip(),
            src_port: self.dst_port,
            dst_port: self.src_port,
            proto: self.proto,
            _pad: [0; 3],
        }
    }
}

/// The quote of the ICMP error in a translatable frame; `None` when the frame is no
/// such error, or its quote is cut short, of a later fragment, or of neither TCP nor UDP.
#[inline(always)]
fn icmp_quote(ctx: &TcContext) -> Option<Quote<[u8; 4]>> {
    let kind: u8 = ctx.load(TRANSLATABLE_L4_OFFSET).ok()?;
    if (kind != ICMP_DEST_UNREACHABLE && kind != ICMP_TIME_EXCEEDED) || !validate::icmp_quote_holds(ctx) {
        return None;
    }
    let vihl: u8 = ctx.load(QUOTE).ok()?;
    if vihl != 0x45 {
        return None;
    }
    let proto: u8 = ctx.load(QUOTE + 9).ok()?;
    if proto != IPPROTO_TCP && proto != IPPROTO_UDP {
        return None;
    }
    Some(Quote {
        proto,
        src: ctx.load(QUOTE + 12).ok()?,
        dst: ctx.load(QUOTE + 16).ok()?,
        src_port: ctx.load(QUOTE_L4).ok()?,
        dst_port: ctx.load(QUOTE_L4 + 2).ok()?,
    })
}

/// The end of a quoted flow an ICMP error's translation changes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum QuotedEnd {
    /// The quoted source, with the outer destination (an error coming back to a flow's
    /// sender).
    Source,
    /// The quoted destination, with the outer source (an error the flow's receiver sends).
    Destination,
}

/// Translates one end of the flow an ICMP error quotes (`proto`): its address and port
/// inside the quote, from `old` to `new`, and the outer address standing for it (`outer`
/// until now), as Linux conntrack does for errors related to a translated flow. Every
/// checksum stays valid: the quoted IPv4 header's, the quoted TCP or UDP one when the
/// quote holds it (a datagram without one keeps none), the ICMP one, the outer header's.
#[inline(always)]
pub fn translate_error(
    ctx: &TcContext,
    proto: u8,
    end: QuotedEnd,
    outer: [u8; 4],
    old: ([u8; 4], u16),
    new: ([u8; 4], u16),
) -> Result<(), i64> {
    let (addr_offset, port_offset, outer_offset) = match end {
        QuotedEnd::Source => (QUOTE + 12, QUOTE_L4, IP_DST_OFFSET),
        QuotedEnd::Destination => (QUOTE + 16, QUOTE_L4 + 2, IP_SRC_OFFSET),
    };
    let word = |v: [u8; 4]| u64::from(u32::from_ne_bytes(v));
    let ((old_addr, old_port), (new_addr, new_port)) = (old, new);
    // The quoted IPv4 header: the address and its own checksum, both under the ICMP
    // checksum.
    let old_ip_csum: u16 = ctx.load(QUOTE + 10)?;
    ctx.l3_csum_replace(QUOTE + 10, word(old_addr), word(new_addr), 4)?;
    let new_ip_csum: u16 = ctx.load(QUOTE + 10)?;
    ctx.l4_csum_replace(ICMP_CSUM_OFFSET, u64::from(old_ip_csum), u64::from(new_ip_csum), 2)?;
    ctx.l4_csum_replace(ICMP_CSUM_OFFSET, word(old_addr), word(new_addr), 4)?;
    ctx.store(addr_offset, &new_addr, 0)?;
    ctx.l4_csum_replace(ICMP_CSUM_OFFSET, u64::from(old_port), u64::from(new_port), 2)?;
    ctx.store(port_offset, &new_port, 0)?;
    // The quoted L4 checksum, when quoted (TCP's lies past the 8 bytes every error holds),
    // covers the address (in its pseudo header) and the port.
    let l4_csum = if proto == IPPROTO_TCP { QUOTE_L4 + 16 } else { QUOTE_L4 + 6 };
    if let Ok(old_l4_csum) = ctx.load::<u16>(l4_csum)
        && !(proto == IPPROTO_UDP && old_l4_csum == 0)
    {
        ctx.l3_csum_replace(l4_csum, word(old_addr), word(new_addr), 4)?;
        ctx.l3_csum_replace(l4_csum, u64::from(old_port), u64::from(new_port), 2)?;
        let new_l4_csum: u16 = ctx.load(l4_csum)?;
        ctx.l4_csum_replace(ICMP_CSUM_OFFSET, u64::from(old_l4_csum), u64::from(new_l4_csum), 2)?;
    }
    // The outer address: the ICMP checksum does not cover it.
    ctx.l3_csum_replace(IP_CSUM_OFFSET, word(outer), word(new_addr), 4)?;
    ctx.store(outer_offset, &new_addr, 0)
}

/// An ICMP error about a masqueraded flow (port unreachable, fragmentation needed, time
/// exceeded) carries the start of the packet as it left, with the uplink address and NAT
/// port inside: it goes back to the container with both the outer destination and the
/// quoted packet translated (`translate_error`).
#[inline(always)]
fn icmp_error_back(ctx: &TcContext, frame: &Ipv4Frame) -> Option<(Path, i32)> {
    let quote = icmp_quote(ctx)?;
    let reply = quote.reversed();
    let back = reverse_of(&reply)?;
    let mut container = [0u8; 4];
    container.copy_from_slice(&back.addr.addr[..4]);
    let translated = translate_error(
        ctx,
        quote.proto,
        QuotedEnd::Source,
        frame.dst,
        (quote.src, quote.src_port),
        (container, back.port),
    );
    if let Err(errno) = translated.and_then(|()| ctx.store(0, &back.mac, 0)) {
        diagnostics::rewrite_failed(Rewrite::IcmpError, errno);
        return Some((Path::SlowPathMalformed, TC_ACT_SHOT as i32));
    }
    // SAFETY: plain helper call; it only records the target.
    let action = unsafe { bpf_redirect_peer(back.host_ifindex, 0) };
    counters::received_at(ctx.len(), back.host_ifindex);
    Some((Path::ReverseNat, action as i32))
}

/// An ICMP error a container sends about a flow it received (the quote: that flow's
/// packet as the container saw it, to its own address), to the flow's other end: a reply
/// of a masqueraded flow leaves out of the uplink with the uplink's address and the
/// flow's port in place of the container's, outside and in the quote, as Linux conntrack
/// translates errors related to a flow; a packet of a connection to a published port
/// leaves with the published address and port (`publish::error_out`). `None` for other
/// frames, and errors about no tracked flow (`leave_host` keeps them from the uplink).
#[inline(never)]
pub fn icmp_error_out(ctx: &TcContext, frame: &Ipv4Frame, sender: u32) -> Option<(Path, i32)> {
    if !frame.translatable() {
        return None;
    }
    let quote = icmp_quote(ctx)?;
    if quote.dst != frame.src || quote.src != frame.dst || !validate::well_formed(ctx, frame) {
        return None;
    }
    let s = scratch()?;
    // The flow as the container sent it (or answers it, for a published one).
    s.key = quote.reversed();
    let now = now();
    let Some((nat_addr, nat_port)) = forward_of(&s.key) else {
        return publish::error_out(ctx, frame, &quote, &s.key, sender, now);
    };
    let cfg = config()?;
    let Route::Uplink { next_hop } = route(ctx, frame.proto, frame.src, frame.dst, sender, Some(cfg), now)
    else {
        return None;
    };
    let mut addr = [0u8; 4];
    addr.copy_from_slice(&nat_addr.addr[..4]);
    let old = (quote.dst, quote.dst_port);
    if let Err(errno) =
        translate_error(ctx, quote.proto, QuotedEnd::Destination, frame.src, old, (addr, nat_port))
    {
        diagnostics::rewrite_failed(Rewrite::IcmpError, errno);
        return Some((Path::SlowPathMalformed, TC_ACT_SHOT as i32));
    }
    Some((Path::Masqueraded, send_to_uplink(ctx, next_hop.macs(), cfg)))
}

/// The translation (address and port) of the masqueraded flow `key`, as the container
/// sent it, the flow left untouched (for ICMP errors about it).
#[inline(always)]
pub fn forward_of(key: &FlowKey) -> Option<(IpAddress, u16)> {
    // SAFETY: values are plain data copied out at once.
    let entry = match unsafe { SNAT_CT.get(key) } {
        Some(entry) => entry,
        // SAFETY: as above.
        None => unsafe { SNAT_NEW.get(key) }?,
    };
    Some((entry.nat_addr, entry.nat_port))
}

/// Where the reply `reply` of a masqueraded flow goes back to, the flow left untouched
/// (for ICMP errors about it).
#[inline(always)]
pub fn reverse_of(reply: &FlowKey) -> Option<RevSnatEntry> {
    // SAFETY: values are plain data copied out at once.
    match unsafe { SNAT_REV.get(reply).copied() } {
        Some(back) => Some(back),
        // SAFETY: as above.
        None => unsafe { SNAT_REV_NEW.get(reply).copied() },
    }
}

/// What choosing a masquerade port for the flow of `SnatScratch::key` needs.
pub struct SnatRequest<'a> {
    pub proto: u8,
    pub l4: &'a L4,
    pub cfg: &'a NatConfig,
    /// The flow is IPv6: it leaves with the uplink's IPv6 address.
    pub ipv6: bool,
    /// The flow leaves untranslated (a routed network): it is tracked with its own address
    /// and port as the "translation", so that its replies are known.
    pub routed: bool,
    pub sender: u32,
    pub mac: [u8; 6],
    pub next_hop: NextHop,
    pub now: u64,
}

/// The SNAT path's keys and entries, kept in a per-CPU slot instead of the program's
/// 512-byte stack, which every path of `from_container` shares.
#[repr(C)]
pub struct SnatScratch {
    /// The flow as the container sent it.
    pub key: FlowKey,
    reply: FlowKey,
    previous: FlowKey,
    reverse: RevSnatEntry,
    entry: SnatEntry,
}

#[map]
static SNAT_SCRATCH: PerCpuArray<SnatScratch> = PerCpuArray::with_max_entries(1, 0);

/// The masquerade port of the flow `s.key`: the tracked one, or a free one chosen at
/// random in the range, recorded in both tables. `None` when no port is free for this
/// destination.
#[inline(always)]
pub fn snat_port(s: &mut SnatScratch, request: &SnatRequest<'_>) -> Option<u16> {
    let SnatRequest { proto, l4, cfg, ipv6, routed, sender, mac, next_hop, now } = *request;
    let nat_addr = || if ipv6 { IpAddress::v6(cfg.addr6) } else { IpAddress::v4(cfg.addr) };
    let opens = opens_connection(proto, l4.tcp_flags);
    if let Some(entry) = SNAT_CT.get_ptr_mut(&s.key) {
        // SAFETY: the pointer comes from the map and stays valid for this program run.
        unsafe {
            if !(opens && has_ended((*entry).state)) {
                (*entry).next_hop = next_hop;
                (*entry).last_seen_ns = now;
                (*entry).state = next_state((*entry).state, l4.tcp_flags, false);
                return Some((*entry).nat_port);
            }
            forget_ended(s, entry);
        }
    }
    if let Some(entry) = SNAT_NEW.get_ptr_mut(&s.key) {
        // SAFETY: as above; the entry is copied out.
        unsafe {
            if !(opens && has_ended((*entry).state)) {
                return Some(continue_unconfirmed(s, entry, proto, l4.tcp_flags, next_hop, now));
            }
            forget_ended(s, entry);
        }
    }
    s.reverse = RevSnatEntry {
        addr: s.key.src,
        port: l4.src_port,
        _pad: [0; 2],
        host_ifindex: sender,
        mac,
        _pad2: [0; 6],
        touched_ns: 0,
    };
    s.entry = SnatEntry {
        nat_addr: nat_addr(),
        nat_port: 0,
        state: next_state(ct_state::NEW, l4.tcp_flags, false),
        _pad: 0,
        host_ifindex: sender,
        _pad2: [0; 4],
        next_hop,
        created_ns: now,
        last_seen_ns: now,
    };
    s.reply =
        FlowKey { src: s.key.dst, dst: nat_addr(), src_port: l4.dst_port, dst_port: 0, proto, _pad: [0; 3] };
    if routed {
        // The identity: the container's own address and port (no other flow can hold
        // them, the address being its own).
        s.entry.nat_addr = s.key.src;
        s.reply.dst = s.key.src;
    }
    let span = u32::from(cfg.port_max.saturating_sub(cfg.port_min)) + 1;
    let attempts = if routed { 1 } else { PORT_ATTEMPTS };
    let mut attempt = 0;
    while attempt < attempts {
        attempt += 1;
        s.reply.dst_port = match routed {
            true => l4.src_port,
            // SAFETY: bpf_get_prandom_u32 has no preconditions.
            false => ((cfg.port_min as u32 + unsafe { bpf_get_prandom_u32() } % span) as u16).to_be(),
        };
        // Looked up before inserting: a BPF_NOEXIST insert into an LRU table takes a free
        // node before it finds the key taken, and on a full table that pushes some other
        // flow out, for nothing. A port is free when neither table holds its reply key.
        // SAFETY: values are plain data copied out at once.
        let holder = match unsafe { SNAT_REV.get(&s.reply) }.copied() {
            Some(holder) => Some(holder),
            // SAFETY: as above.
            None => unsafe { SNAT_REV_NEW.get(&s.reply) }.copied(),
        };
        // (No message for a refused entry in this loop: at debug, the verifier would
        // walk one per attempt, past its million instructions.)
        let claimed = match holder {
            None => SNAT_REV_NEW.insert(&s.reply, &s.reverse, u64::from(BPF_NOEXIST)).is_ok(),
            Some(holder) => reclaim(s, &holder),
        };
        if claimed {
            s.entry.nat_port = s.reply.dst_port;
            if SNAT_NEW.insert(&s.key, &s.entry, 0).is_ok() {
                counters::ct_event(ct_event::SNAT_CREATED);
                crate::monitor::masqueraded(sender, &s.key, &s.reply);
            }
            return Some(s.reply.dst_port);
        }
    }
    None
}

/// A packet of an unconfirmed flow out: it updates the flow, and confirms it when it
/// shows the container took the answer. Returns the flow's masquerade port.
///
/// # Safety
/// `entry` points into SNAT_NEW, valid for this program run.
#[inline(always)]
unsafe fn continue_unconfirmed(
    s: &mut SnatScratch,
    entry: *mut SnatEntry,
    proto: u8,
    tcp_flags: u8,
    next_hop: NextHop,
    now: u64,
) -> u16 {
    // SAFETY: the caller's.
    let confirmed = unsafe {
        (*entry).next_hop = next_hop;
        (*entry).last_seen_ns = now;
        let confirmed = confirms_out(&*entry, tcp_flags);
        (*entry).state = next_state((*entry).state, tcp_flags, false);
        s.entry = *entry;
        confirmed
    };
    if confirmed {
        confirm(s, proto);
    }
    s.entry.nat_port
}

/// Whether a packet opens a TCP connection: a SYN alone.
#[inline(always)]
fn opens_connection(proto: u8, tcp_flags: u8) -> bool {
    proto == IPPROTO_TCP && tcp_flags & (TCP_SYN | TCP_ACK | TCP_RST) == TCP_SYN
}

/// Whether a flow is over (a FIN or a RST was seen): a SYN on its tuple opens a new
/// connection, which a container's stack may do at once after a reset (no TIME_WAIT).
#[inline(always)]
fn has_ended(state: u8) -> bool {
    state == ct_state::CLOSED || state == ct_state::CLOSING
}

/// Forgets the ended flow of `s.key` (its entry at `ended`), so that a SYN on its tuple
/// starts a new flow, as Linux conntrack does: riding the ended one, the new connection
/// kept a port that any new flow may take over (the ended flow's), and lost its
/// translation mid-stream when one did. Its reply key goes too, if it is still its own:
/// left behind, it would name the new flow when another flow takes its port over.
///
/// # Safety
/// `ended` points into SNAT_CT or SNAT_NEW, valid for this program run.
#[inline(always)]
unsafe fn forget_ended(s: &mut SnatScratch, ended: *const SnatEntry) {
    // Field by field, in the scratch: the stack has no room for another key.
    s.reply.src = s.key.dst;
    // SAFETY: the caller's.
    unsafe {
        s.reply.dst = (*ended).nat_addr;
        s.reply.dst_port = (*ended).nat_port;
    }
    s.reply.src_port = s.key.dst_port;
    s.reply.proto = s.key.proto;
    let own = |holder: &RevSnatEntry| holder.addr == s.key.src && holder.port == s.key.src_port;
    // SAFETY: values are plain data, compared at once.
    if unsafe { SNAT_REV.get(&s.reply) }.is_some_and(own) {
        let _ = SNAT_REV.remove(&s.reply);
    }
    // SAFETY: as above.
    if unsafe { SNAT_REV_NEW.get(&s.reply) }.is_some_and(own) {
        let _ = SNAT_REV_NEW.remove(&s.reply);
    }
    // Counted as the flows whose ports a new flow takes over are: removed for a reason,
    // not evicted.
    if SNAT_CT.remove(&s.key).is_ok() {
        counters::ct_event(ct_event::SNAT_RECLAIMED_CONFIRMED);
    }
    if SNAT_NEW.remove(&s.key).is_ok() {
        counters::ct_event(ct_event::SNAT_RECLAIMED);
    }
}

/// Whether the container's packet on an unconfirmed flow confirms it: the flow was
/// answered (and neither closes nor was reset), and the packet is no SYN or RST: the
/// container's stack took the answer (a SYN flood's stray SYN-ACKs get a RST back).
#[inline(always)]
fn confirms_out(entry: &SnatEntry, tcp_flags: u8) -> bool {
    entry.state == ct_state::ESTABLISHED && tcp_flags & (TCP_SYN | TCP_RST) == 0
}

/// Moves the flow of `s.key` (its entry in `s.entry`) from SNAT_NEW and SNAT_REV_NEW to
/// SNAT_CT and SNAT_REV.
#[inline(always)]
fn confirm(s: &mut SnatScratch, proto: u8) {
    s.reply = FlowKey {
        src: s.key.dst,
        dst: s.entry.nat_addr,
        // An echo's key has 0 there (`l4_at`), as its reply's has as source.
        src_port: s.key.dst_port,
        dst_port: s.entry.nat_port,
        proto,
        _pad: [0; 3],
    };
    // SAFETY: values are plain data copied out at once.
    let Some(reverse) = unsafe { SNAT_REV_NEW.get(&s.reply) }.copied() else {
        return;
    };
    s.reverse = reverse;
    if let Err(errno) = SNAT_REV.insert(&s.reply, &s.reverse, 0) {
        diagnostics::refused(Table::SnatRev, errno);
        return;
    }
    if let Err(errno) = SNAT_CT.insert(&s.key, &s.entry, 0) {
        diagnostics::refused(Table::SnatCt, errno);
        return;
    }
    let _ = SNAT_REV_NEW.remove(&s.reply);
    let _ = SNAT_NEW.remove(&s.key);
    counters::ct_event(ct_event::SNAT_CONFIRMED);
}

/// Takes over the port of `s.reply`, which `old` holds, when its flow is over: reset
/// (RST), or already forgotten by the LRU tables. Without this, a burst of short
/// connections to one destination would hold every port of the range until the daemon
/// sweeps them; Linux conntrack recycles closed entries the same way. The new flow's
/// reply key goes to SNAT_REV_NEW, wherever the old one's was.
#[inline(always)]
fn reclaim(s: &mut SnatScratch, old: &RevSnatEntry) -> bool {
    s.previous = FlowKey {
        src: old.addr,
        dst: s.reply.src,
        src_port: old.port,
        dst_port: s.reply.src_port,
        proto: s.reply.proto,
        _pad: [0; 3],
    };
    // SAFETY: values are plain data copied out at once.
    let previous = match unsafe { SNAT_CT.get(&s.previous) } {
        Some(entry) => Some(*entry),
        // SAFETY: as above.
        None => unsafe { SNAT_NEW.get(&s.previous) }.copied(),
    };
    let over = match previous {
        None => true,
        Some(entry) => entry.state == ct_state::CLOSED || entry.nat_port != s.reply.dst_port,
    };
    if !over {
        return false;
    }
    if SNAT_CT.remove(&s.previous).is_ok() {
        counters::ct_event(ct_event::SNAT_RECLAIMED_CONFIRMED);
    }
    if SNAT_NEW.remove(&s.previous).is_ok() {
        counters::ct_event(ct_event::SNAT_RECLAIMED);
    }
    let _ = SNAT_REV.remove(&s.reply);
    SNAT_REV_NEW.insert(&s.reply, &s.reverse, 0).is_ok()
}

/// tc ingress of the uplink, IPv4 and what is not IP: replies to masqueraded flows go
/// back into their container; everything else is the host's.
#[inline(always)]
pub fn from_uplink(ctx: &TcContext) -> (Path, i32) {
    let to_host = (Path::UplinkToHost, TC_ACT_OK as i32);
    // A copy here: read in place, its fields kept across the calls below took more of
    // this entry point's frame than the copy does.
    let Some(cfg) = config().copied() else {
        return to_host;
    };
    let Frame::Ipv4(frame) = parse::parse(ctx) else {
        return to_host;
    };
    if publish::is_martian(&frame) {
        return (Path::DroppedMartian, TC_ACT_SHOT as i32);
    }
    if !frame.translatable() {
        return to_host;
    }
    if frame.proto == IPPROTO_ICMP
        && frame.dst == cfg.addr
        && let Some(verdict) = icmp_error_back(ctx, &frame)
    {
        return verdict;
    }
    // Replies to masqueraded flows come back to a port of the NAT range, which publishing
    // never uses: one range check keeps each kind of traffic to its own lookups.
    let inbound = if frame.dst == cfg.addr { l4(ctx, &frame, false) } else { None };
    let nat_reply = inbound.as_ref().is_some_and(|l4| in_port_range(&cfg, l4.dst_port));
    if !nat_reply {
        if let Some(verdict) = publish::from_outside(ctx, &frame, &cfg) {
            return verdict;
        }
        // Container addresses are not reachable from outside, even with forwarding on,
        // but for what a routed or unprotected network lets in (`routed`, behind a tail
        // call).
        if frame.dst != cfg.addr
            && let Some(subnet) = policy::container_subnet_v4(frame.dst)
        {
            if subnet.flags & SubnetInfo::REACHABLE != 0 {
                routed::tail_call(ctx);
            }
            return (Path::DroppedUnpublished, TC_ACT_SHOT as i32);
        }
        return to_host;
    }
    let Some(l4) = inbound else {
        return to_host;
    };
    let reply = flow_key(&frame, &l4);
    let Some(back) = track_reply(&reply, &l4) else {
        return to_host;
    };
    clamp_mss(ctx, &frame, &l4, cfg.uplink_ifindex);
    let mut container_addr = [0u8; 4];
    container_addr.copy_from_slice(&back.addr.addr[..4]);
    if let Err(errno) =
        rewrite(ctx, &frame, &l4, IP_DST_OFFSET, frame.dst, container_addr, l4.dst_port, back.port)
    {
        diagnostics::rewrite_failed(Rewrite::ReverseNat, errno);
        return (Path::SlowPathMalformed, TC_ACT_SHOT as i32);
    }
    let _ = packet::write(ctx, 0, back.mac);
    // SAFETY: plain helper call; it only records the target.
    let action = unsafe { bpf_redirect_peer(back.host_ifindex, 0) };
    counters::received_at(ctx.len(), back.host_ifindex);
    (Path::ReverseNat, action as i32)
}

/// Where the reply `reply` of a masqueraded flow goes back to, its flow brought up to
/// date with it; `None` when no flow has it.
#[inline(always)]
pub fn track_reply(reply: &FlowKey, l4: &L4) -> Option<RevSnatEntry> {
    let (entry, confirmed) = match SNAT_REV.get_ptr_mut(reply) {
        Some(entry) => (entry, true),
        None => (SNAT_REV_NEW.get_ptr_mut(reply)?, false),
    };
    let now = now();
    // SAFETY: map pointer, valid for this program run; the entry is copied out.
    let back = unsafe { *entry };
    // The flow's own entry needs the reply's news when it changes the state (the first
    // reply, FIN, RST) and, for expiry, now and then.
    if l4.tcp_flags & (TCP_FIN | TCP_RST) != 0 || now.wrapping_sub(back.touched_ns) >= RevSnatEntry::TOUCH_NS
    {
        // SAFETY: as above.
        unsafe { (*entry).touched_ns = now };
        let original = FlowKey {
            src: back.addr,
            dst: reply.src,
            src_port: back.port,
            // An echo reply's is 0 (`l4_at`), as its request's key has.
            dst_port: l4.src_port,
            proto: reply.proto,
            _pad: [0; 3],
        };
        let flow = if confirmed { SNAT_CT.get_ptr_mut(&original) } else { SNAT_NEW.get_ptr_mut(&original) };
        if let Some(flow) = flow {
            // SAFETY: as above.
            unsafe {
                (*flow).last_seen_ns = now;
                (*flow).state = next_state((*flow).state, l4.tcp_flags, true);
            }
        }
    }
    Some(back)
}
