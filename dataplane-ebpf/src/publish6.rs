//! Published ports over IPv6 (DNAT66): a connection from outside (in `from_uplink_v6`) or
//! from a container (hairpin) to a port published on `::` or on one IPv6 address goes to
//! the container's IPv6 address, and the container's replies leave with the published
//! address and port again. The tables, the confirmation of new flows and the rule sets
//! are IPv4's (`publish`, `firewall`), whose keys hold both families, and so is the
//! `INBOUND_FLOWS` cache of confirmed connections; the translation is NAT66's. Only
//! packets without extension headers are translated; a connection to a port of a
//! container's own address (a routed network's published container port, an unprotected
//! network's every port) needs no translation, and is taken behind extension headers too
//! (`own_port_behind_extension_headers`, `direct`). It never runs on the IPv4 paths:
//! the uplink reaches it through the IPv6 program (tc) or subprogram (XDP), a container
//! through its IPv6 subprograms.

use aya_ebpf::{
    bindings::TC_ACT_SHOT,
    macros::map,
    maps::ProgramArray,
    programs::{TcContext, XdpContext},
};
use dataplane_common::{
    Backend, DnatEntry, FlowKey, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, IpAddress, NatConfig, Path, csum,
};
use network_types::eth::EthHdr;

use crate::{
    counters,
    diagnostics::{self, Rewrite},
    endpoint, firewall,
    nat::{self, L4},
    nat6::{self, DST_OFFSET, L4_OFFSET, SRC_OFFSET},
    packet,
    parse::{self, Ipv6Frame},
    policy,
    publish::{self, ClientFlow, Delivery, InboundFlow},
};

/// `uplink_xdp_v6`, the program IPv6 arriving at the uplink's XDP hook is tail-called
/// into: verified on its own, as `uplink_xdp` with both families' paths passed the
/// verifier's million instructions once its diagnostic messages were on. The daemon puts
/// it there when it loads `uplink_xdp`.
#[map]
static UPLINK_XDP_V6: ProgramArray = ProgramArray::pinned(1, 0);

/// Continues in `uplink_xdp_v6`; returns only when it is not there (tc then serves IPv6).
#[inline(always)]
pub fn tail_call_xdp(ctx: &XdpContext) {
    // SAFETY: a tail call replaces this program with the one in the slot, or fails.
    unsafe { UPLINK_XDP_V6.tail_call(ctx, 0) };
}

/// On the uplink: a packet for a port published on IPv6 goes to its container, its
/// destination rewritten and the connection tracked. `None` when the port is not
/// published there. A port published for the host only (`::1`) drops it. `to_uplink`:
/// the packet is for the uplink's own IPv6 address, where ports published on `::` are.
#[inline(always)]
pub fn from_outside(ctx: &TcContext, frame: &Ipv6Frame, l4: &L4, to_uplink: bool) -> Option<(Path, i32)> {
    if frame.next_header == IPPROTO_ICMPV6 {
        return None;
    }
    let delivered = to_published(ctx, frame, l4, to_uplink, 0, [0; 6]);
    // The SYN's MSS must fit the uplink, as over IPv4 (`nat::clamp_mss`). Here, not in
    // `to_published`, which the hairpin subprogram shares.
    if matches!(delivered, Some((Path::Published, _)))
        && let Some(cfg) = nat::config()
    {
        nat::clamp_mss_at(ctx, frame.next_header, L4_OFFSET, l4, cfg.uplink_ifindex, nat::TCP_IPV6_HEADERS);
    }
    delivered
}

/// From a container to one of the host's IPv6 addresses (the uplink's, a gateway): a
/// published port there sends it to the port's container, keeping the client's address;
/// its replies come back the same way (`reply`).
#[inline(never)]
pub fn hairpin(ctx: &TcContext, sender: u32) -> Option<(Path, i32)> {
    let frame = parse::parse_ipv6(ctx)?;
    if frame.next_header == IPPROTO_ICMPV6 {
        return None;
    }
    let l4 = nat::l4_at(ctx, L4_OFFSET, frame.next_header, IPPROTO_ICMPV6, false)?;
    let mac: [u8; 6] = packet::read(ctx, 6)?;
    let on_uplink = nat::config().is_some_and(|c| c.flags & NatConfig::IPV6 != 0 && c.addr6 == frame.dst);
    let any_address = on_uplink || policy::is_gateway_v6(frame.dst);
    to_published(ctx, &frame, &l4, any_address, sender, mac)
}

/// XDP on the uplink, IPv6: a TCP or UDP packet for a port published on IPv6 goes to its
/// container before the host builds an skb for it, as `publish::from_outside_early` does
/// for IPv4. Everything else goes on to tc (`None`): other traffic, ICMPv6, packets with
/// extension headers, replies to masqueraded (NAT66) flows, a packet whose L4 checksum
/// its local sender left to the device, a container whose veth takes no XDP frames.
#[inline(never)]
pub fn from_outside_early(ctx: &XdpContext) -> Option<(Path, i32)> {
    let cfg = nat::config()?;
    let frame = parse::parse_ipv6(ctx)?;
    let proto = frame.next_header;
    if proto != IPPROTO_TCP && proto != IPPROTO_UDP {
        return None;
    }
    let l4 = nat::l4_at(ctx, L4_OFFSET, proto, IPPROTO_ICMPV6, false)?;
    let to_uplink = cfg.flags & NatConfig::IPV6 != 0 && frame.dst == cfg.addr6;
    if to_uplink && nat::in_port_range(cfg, l4.dst_port) {
        return None;
    }
    if checksum_may_be_partial(ctx, &frame, &l4) {
        return None;
    }
    let (path, action) = to_published(ctx, &frame, &l4, to_uplink, 0, [0; 6])?;
    if !matches!(path, Path::Published) {
        return Some((path, action));
    }
    nat::clamp_mss_at(ctx, proto, L4_OFFSET, &l4, cfg.uplink_ifindex, nat::TCP_IPV6_HEADERS);
    Some((Path::PublishedXdp, action))
}

const PAYLOAD_LEN_OFFSET: usize = EthHdr::LEN + 4;

/// Whether the packet's L4 checksum may be a partial one (the pseudo header's sum, which a
/// local sender leaves to the device), as `nat::checksum_may_be_partial` tells for IPv4.
#[inline(always)]
fn checksum_may_be_partial(ctx: &XdpContext, frame: &Ipv6Frame, l4: &L4) -> bool {
    let (Some(stored), Some(payload_len)) =
        (packet::read::<u16>(ctx, l4.csum_offset), packet::read::<u16>(ctx, PAYLOAD_LEN_OFFSET))
    else {
        return true;
    };
    let payload_len = u16::from_be(payload_len);
    // A jumbogram (0) has its length elsewhere.
    payload_len == 0
        || (stored != 0
            && stored == csum::pseudo_header_v6(&frame.src, &frame.dst, frame.next_header, payload_len))
}

/// Packets of a confirmed connection the last second saw without SYN, FIN or RST take its
/// `INBOUND_FLOWS` entry (shared with IPv4: the key holds the family); the others take the
/// long way (PUBLISHED, then DNAT_CT, then DNAT_NEW), which refreshes that entry.
#[inline(always)]
fn to_published<P: Delivery>(
    ctx: &P,
    frame: &Ipv6Frame,
    l4: &L4,
    any_address: bool,
    peer_ifindex: u32,
    peer_mac: [u8; 6],
) -> Option<(Path, i32)> {
    let proto = frame.next_header;
    let s = publish::scratch()?;
    s.inbound = nat6::flow_key(frame, l4);
    let now = nat::now();
    let known = publish::inbound_flow(s);
    // Where the packet goes: the cached entry, or the long way's answer in this CPU's
    // scratch slot; read in place either way (copies of a backend and a client would not
    // fit `from_uplink_v6`'s stack beside the rest).
    let way: *const InboundFlow = match known {
        Some(flow) if publish::trusted(flow, l4, now) => {
            // SAFETY: map pointer, valid for this program run.
            if !P::reaches(unsafe { (*flow).backend.host_ifindex }) {
                return None;
            }
            flow
        }
        _ => {
            s.flow.backend = publish::lookup(IpAddress::v6(frame.dst), l4.dst_port, proto, any_address)?;
            match admit(ctx, s, frame, l4, L4_OFFSET, known, peer_ifindex, peer_mac, now) {
                Ok(way) => way,
                Err(verdict) => return verdict,
            }
        }
    };
    // SAFETY: a map entry or this CPU's scratch slot, valid for this program run.
    let way = unsafe { &*way };
    Some(translate_in(ctx, frame, l4, &way.backend, &way.client))
}

/// The long way's end, once a connection's backend is in `s.flow.backend`: checked (host
/// only, the firewall), tracked, and cached once confirmed. `Ok`: the way the packet goes
/// (`s.flow`); `Err`: what becomes of it instead (`None`: not this path's, as when the
/// backend's container cannot be reached from this hook). `l4_offset`: where the L4
/// header starts (behind extension headers too, for the untranslated ways in).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn admit<P: Delivery>(
    ctx: &P,
    s: &mut publish::DnatScratch,
    frame: &Ipv6Frame,
    l4: &L4,
    l4_offset: usize,
    known: Option<*mut InboundFlow>,
    peer_ifindex: u32,
    peer_mac: [u8; 6],
    now: u64,
) -> Result<*const InboundFlow, Option<(Path, i32)>> {
    let proto = frame.next_header;
    let backend = &s.flow.backend;
    if backend.flags & Backend::HOST_ONLY != 0 {
        // For the host's processes only (the socket hooks): from the uplink a martian,
        // from a container a port the host does not serve it.
        return Err((peer_ifindex == 0).then_some((Path::DroppedMartian, P::DROP)));
    }
    if !P::reaches(backend.host_ifindex) {
        return Err(None);
    }
    if peer_ifindex == 0 && !firewall::allows_ipv6(backend.rule_set, &frame.src) {
        return Err(Some((Path::DroppedFirewall, P::DROP)));
    }
    // A container reaching itself through the host sees its gateway as the source, as
    // over IPv4 (its own address would be a martian to it).
    let reaches_itself = backend.host_ifindex == peer_ifindex;
    s.flow.client = match reaches_itself {
        true => policy::gateway_of_v6(frame.src).ok_or(None)?,
        false => frame.src,
    };
    s.key = FlowKey {
        src: s.flow.backend.addr,
        dst: IpAddress::v6(s.flow.client),
        src_port: s.flow.backend.port,
        dst_port: l4.src_port,
        proto,
        _pad: [0; 3],
    };
    let flow = ClientFlow {
        host_addr: IpAddress::v6(frame.dst),
        proto,
        l4,
        l4_offset,
        reaches_itself,
        peer_ifindex,
        peer_mac,
        now,
    };
    // Only confirmed connections are cached, as over IPv4.
    if publish::track_from_client(ctx, s, &flow) {
        publish::remember(s, known, now);
    }
    Ok(&s.flow)
}

/// From outside, for an address of a container on a network whose IPv6 is unprotected
/// (`SubnetInfo::UNPROTECTED`, on `network`): every TCP and UDP port of it is open, as if
/// published on the container's own address, as over IPv4 (`publish::direct`). `None`
/// when no container has the address, or the packet is no TCP or UDP. Its L4 header
/// starts at `l4_offset`, behind extension headers too.
#[inline(always)]
pub fn direct(
    ctx: &TcContext,
    frame: &Ipv6Frame,
    l4: &L4,
    l4_offset: usize,
    network: u32,
) -> Option<(Path, i32)> {
    if frame.next_header == IPPROTO_ICMPV6 {
        return None;
    }
    let peer = endpoint::lookup(network, IpAddress::v6(frame.dst))?;
    let backend = publish::own_port(IpAddress::v6(frame.dst), frame.next_header, l4.dst_port, &peer);
    untranslated_in(ctx, frame, l4, l4_offset, backend)
}

/// From outside, for a routed network's container, a TCP or UDP packet whose L4 header
/// lies behind extension headers (at `l4_offset`, walked): to a container port published
/// on the container's own address (the daemon's entry for a routed network, whose
/// translation is the identity), as `from_outside` takes those without extension headers.
/// `None` when no port is published there, or its entry would translate (nothing is
/// written behind a walked offset).
#[inline(always)]
pub fn own_port_behind_extension_headers(
    ctx: &TcContext,
    frame: &Ipv6Frame,
    l4: &L4,
    l4_offset: usize,
) -> Option<(Path, i32)> {
    let backend = publish::lookup(IpAddress::v6(frame.dst), l4.dst_port, frame.next_header, false)?;
    if backend.addr != IpAddress::v6(frame.dst) || backend.port != l4.dst_port {
        return None;
    }
    untranslated_in(ctx, frame, l4, l4_offset, backend)
}

/// A connection from outside to `backend`, a port of the container's own address (its
/// translation the identity: the address and port the client sent to), tracked as
/// `to_published` tracks connections to published ports and handed over as it is.
#[inline(always)]
fn untranslated_in(
    ctx: &TcContext,
    frame: &Ipv6Frame,
    l4: &L4,
    l4_offset: usize,
    backend: Backend,
) -> Option<(Path, i32)> {
    let s = publish::scratch()?;
    s.inbound = nat6::flow_key(frame, l4);
    let known = publish::inbound_flow(s);
    s.flow.backend = backend;
    let way = match admit(ctx, s, frame, l4, l4_offset, known, 0, [0; 6], nat::now()) {
        Ok(way) => way,
        Err(verdict) => return verdict,
    };
    if let Some(cfg) = nat::config() {
        nat::clamp_mss_at(ctx, frame.next_header, l4_offset, l4, cfg.uplink_ifindex, nat::TCP_IPV6_HEADERS);
    }
    // SAFETY: this CPU's scratch slot, valid for this program run.
    Some(hand_over(ctx, unsafe { &(*way).backend }))
}

/// Rewrites the packet for `backend`, with `client` as its source, and hands it over.
#[inline(always)]
fn translate_in<P: Delivery>(
    ctx: &P,
    frame: &Ipv6Frame,
    l4: &L4,
    backend: &Backend,
    client: &[u8; 16],
) -> (Path, i32) {
    let translated =
        nat6::rewrite(ctx, l4, DST_OFFSET, &frame.dst, &backend.addr.addr, l4.dst_port, backend.port)
            .and_then(|()| match *client != frame.src {
                true => nat6::rewrite_address(ctx, l4, SRC_OFFSET, &frame.src, client),
                false => Ok(()),
            });
    if let Err(errno) = translated {
        diagnostics::rewrite_failed(Rewrite::Published, errno);
        return (Path::SlowPathMalformed, P::DROP);
    }
    hand_over(ctx, backend)
}

/// Hands a frame for a published port over to the container of `backend`, to its MAC.
#[inline(always)]
fn hand_over<P: Delivery>(ctx: &P, backend: &Backend) -> (Path, i32) {
    let _ = packet::write(ctx, 0, backend.mac);
    counters::received_at(ctx.len(), backend.host_ifindex);
    (Path::Published, ctx.deliver(backend.host_ifindex))
}

/// From a publishing container, its source checked: a reply on a published IPv6
/// connection gets the published address and port back as its source and goes back to
/// its client: into the client's container (hairpin), or out of the uplink. A reply to
/// itself (reached through the host, so addressed to its gateway) gets its own address
/// back as destination. `None` when the packet is no such reply.
#[inline(never)]
pub fn reply(ctx: &TcContext, sender: u32) -> Option<(Path, i32)> {
    let frame = &parse::parse_ipv6(ctx)?;
    let proto = frame.next_header;
    if proto == IPPROTO_ICMPV6 {
        return None;
    }
    let l4 = nat::l4_at(ctx, L4_OFFSET, proto, IPPROTO_ICMPV6, true)?;
    let s = publish::scratch()?;
    s.key = nat6::flow_key(frame, &l4);
    let now = nat::now();
    let entry = publish::reply_entry(ctx, &s.key, proto, L4_OFFSET, &l4, now)?;
    // SAFETY: map pointer, valid for this program run.
    let (host_addr, host_port, flags) =
        unsafe { ((*entry).host_addr.addr, (*entry).host_port, (*entry).flags) };
    let rewritten = nat6::rewrite(ctx, &l4, SRC_OFFSET, &frame.src, &host_addr, l4.src_port, host_port)
        .and_then(|()| match flags & DnatEntry::SELF != 0 {
            true => nat6::rewrite_address(ctx, &l4, DST_OFFSET, &frame.dst, &frame.src),
            false => Ok(()),
        });
    if let Err(errno) = rewritten {
        diagnostics::rewrite_failed(Rewrite::PublishedReply, errno);
        return Some((Path::SlowPathMalformed, TC_ACT_SHOT as i32));
    }
    let route = |cfg: &NatConfig| {
        let (rc, fib) = nat::fib_route_v6(ctx, proto, host_addr, frame.dst, sender);
        nat::route_of(rc, &fib, Some(cfg), now)
    };
    Some(publish::back_to_client(ctx, entry, now, route))
}

/// An ICMPv6 error a container sends about a packet of a connection to one of its ports
/// published on IPv6 leaves as its replies do (`reply`), as `publish::error_out` has it
/// for IPv4: the published address and port in place of the container's, outside and in
/// the quote. `None` when it is about no such connection.
#[inline(always)]
pub fn error_out(
    ctx: &TcContext,
    frame: &Ipv6Frame,
    quote: &nat6::Quote,
    key: &FlowKey,
    sender: u32,
    now: u64,
) -> Option<(Path, i32)> {
    let entry = publish::error_entry(key)?;
    // SAFETY: map pointer, valid for this program run.
    let (host_addr, host_port) = unsafe { ((*entry).host_addr.addr, (*entry).host_port) };
    if let Err(errno) = nat6::translate_error_out(ctx, frame, quote, (&host_addr, host_port)) {
        diagnostics::rewrite_failed(Rewrite::IcmpError, errno);
        return Some((Path::SlowPathMalformed, TC_ACT_SHOT as i32));
    }
    let route = |cfg: &NatConfig| {
        let (rc, fib) = nat::fib_route_v6(ctx, IPPROTO_ICMPV6, host_addr, frame.dst, sender);
        nat::route_of(rc, &fib, Some(cfg), now)
    };
    Some(publish::back_to_client(ctx, entry, now, route))
}
