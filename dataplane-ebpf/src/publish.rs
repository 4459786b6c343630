//! Published ports (DNAT): connections from outside to a host port are sent to the
//! container behind it, keeping the client's address, and the container's replies leave
//! with the host's address and port again. Owns PUBLISHED (filled by the daemon), the
//! DNAT conntrack tables (DNAT_NEW for flows not confirmed yet, DNAT_CT for confirmed
//! ones, so that a flood of new flows can only push out new flows), and INBOUND_FLOWS, the
//! cache that lets a confirmed connection's packets skip them all. On an unprotected
//! network (`nat-unprotected`), every port of a container's own address is taken as
//! published there (`direct`), with the firewall's rule set of its port, so that its
//! connections and replies take these paths.

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT, xdp_action},
    helpers::{bpf_redirect, bpf_redirect_peer},
    macros::map,
    maps::{HashMap, LruHashMap, PerCpuArray},
    programs::{TcContext, XdpContext},
};
use dataplane_common::{
    Backend, CONNTRACK_DEFAULT_SIZE, DnatEntry, Endpoint, FlowKey, Hook, IPPROTO_ICMP, IPPROTO_TCP,
    InterfaceConfig, IpAddress, NatConfig, NextHop, Path, PublishKey, ct_event, ct_state,
};

use crate::{
    counters,
    diagnostics::{self, Rewrite, Table},
    endpoint, firewall, monitor,
    nat::{self, IP_DST_OFFSET, IP_SRC_OFFSET, L4, QuotedEnd, Route},
    packet::{self, Packet},
    parse::{self, Frame, Ipv4Frame},
    policy,
};

/// How a hook hands a translated frame to a container.
pub trait Delivery: Packet {
    /// The verdict that drops the frame.
    const DROP: i32;
    /// The program that takes frames from outside at this hook.
    const FROM_OUTSIDE: Hook;
    /// Whether frames from this hook can be handed to the container behind `host_ifindex`.
    fn reaches(host_ifindex: u32) -> bool;
    /// Hands the frame to the container behind `host_ifindex`.
    fn deliver(&self, host_ifindex: u32) -> i32;
}

/// tc: straight into the container's namespace, skipping its veth's transmit path.
impl Delivery for TcContext {
    const DROP: i32 = TC_ACT_SHOT as i32;
    const FROM_OUTSIDE: Hook = Hook::FromUplink;

    #[inline(always)]
    fn reaches(_host_ifindex: u32) -> bool {
        true
    }

    #[inline(always)]
    fn deliver(&self, host_ifindex: u32) -> i32 {
        // SAFETY: plain helper call; it only records the target.
        unsafe { bpf_redirect_peer(host_ifindex, 0) as i32 }
    }
}

/// XDP: into the container's veth as a frame, which its end receives without the host
/// ever building an skb for it. A veth end takes XDP frames only while its NAPI runs, which
/// the daemon turns on (GRO) and records with `InterfaceConfig::XDP_TARGET`.
impl Delivery for XdpContext {
    const DROP: i32 = xdp_action::XDP_DROP as i32;
    const FROM_OUTSIDE: Hook = Hook::UplinkXdp;

    #[inline(always)]
    fn reaches(host_ifindex: u32) -> bool {
        endpoint::interface(host_ifindex).is_some_and(|c| c.flags & InterfaceConfig::XDP_TARGET != 0)
    }

    #[inline(always)]
    fn deliver(&self, host_ifindex: u32) -> i32 {
        // SAFETY: plain helper call; it only records the target.
        unsafe { bpf_redirect(host_ifindex, 0) as i32 }
    }
}

/// Published ports; a key with address 0.0.0.0 publishes on the uplink's address.
#[map]
static PUBLISHED: HashMap<PublishKey, Backend> = HashMap::pinned(65536, 0);

/// Confirmed connections to published ports, keyed as the container answers them: the
/// client acknowledged the container's answer (TCP: its SYN-ACK, by sequence number, which
/// a spoofed source never sees; UDP: the client sent again after an answer). Only
/// confirmations enter it, so only confirmed connections push each other out when full.
#[map]
static DNAT_CT: LruHashMap<FlowKey, DnatEntry> = LruHashMap::pinned(CONNTRACK_DEFAULT_SIZE, 0);

/// Flows to published ports not confirmed yet, keyed as DNAT_CT: every new flow enters
/// here, and a flood of them (SYNs from spoofed sources) pushes out only its own kind.
#[map]
static DNAT_NEW: LruHashMap<FlowKey, DnatEntry> = LruHashMap::pinned(CONNTRACK_DEFAULT_SIZE, 0);

/// Where the packets of a connection to a published port go, as the long way last found
/// it: a cache in front of PUBLISHED and DNAT_CT, so that a connection's packets take one
/// lookup. Trusted for `TRUSTED_NS`, so that unpublished ports and moved containers show
/// within a second; DNAT_CT, which the replies need, stays the record of the connection.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct InboundFlow {
    pub backend: Backend,
    /// The client as the container sees it (its gateway, for a container reaching itself):
    /// an IPv6 address, or an IPv4 one in the first 4 bytes.
    pub client: [u8; 16],
    checked_ns: u64,
}

impl InboundFlow {
    const TRUSTED_NS: u64 = 1_000_000_000;
}

/// Connections to published ports, keyed as the client sends them. Not pinned: a cache,
/// which a restarted daemon's programs fill again.
#[map]
static INBOUND_FLOWS: LruHashMap<FlowKey, InboundFlow> = LruHashMap::with_max_entries(65536, 0);

/// The DNAT paths' keys and entries, kept in a per-CPU slot instead of the 512-byte stack
/// that every path of `from_container` shares.
#[repr(C)]
pub struct DnatScratch {
    pub key: FlowKey,
    entry: DnatEntry,
    pub inbound: FlowKey,
    /// Where the packet goes (the long way's answer), and what `remember` caches.
    pub flow: InboundFlow,
}

#[map]
static DNAT_SCRATCH: PerCpuArray<DnatScratch> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
fn backend(frame: &Ipv4Frame, port: u16, any_address: bool) -> Option<Backend> {
    lookup(IpAddress::v4(frame.dst), port, frame.proto, any_address)
}

/// The backend of a port published on the exact address, or on every address of its
/// family (0.0.0.0, `::`) when `any_address` says the destination is one the wildcard
/// covers. The wildcard, the common case, is tried first: a port published on every
/// address cannot also be published on one (its reservation holds the port on all of
/// them), so the order never changes the answer, only the number of lookups.
#[inline(always)]
pub fn lookup(addr: IpAddress, port: u16, proto: u8, any_address: bool) -> Option<Backend> {
    let mut key = PublishKey { addr: IpAddress { addr: [0; 16], ..addr }, port, proto, _pad: 0 };
    if any_address {
        // SAFETY: values are plain data copied out at once.
        if let Some(found) = unsafe { PUBLISHED.get(&key) } {
            return Some(*found);
        }
    }
    key.addr = addr;
    // SAFETY: as above.
    unsafe { PUBLISHED.get(&key).copied() }
}

/// A frame from the uplink for 127.0.0.0/8: no machine on the uplink's segment may reach
/// the host's loopback, whatever it routes (moby#45610; the kernel itself refuses such
/// frames unless `route_localnet` is on, and tc and XDP run before it decides).
#[inline(always)]
pub fn is_martian(frame: &Ipv4Frame) -> bool {
    frame.dst[0] == 127
}

/// On the uplink: a packet for a published port goes to its container, its destination
/// rewritten and the connection tracked. `None` when the port is not published.
#[inline(always)]
pub fn from_outside(ctx: &TcContext, frame: &Ipv4Frame, cfg: &NatConfig) -> Option<(Path, i32)> {
    let l4 = published_l4(ctx, frame)?;
    to_published(ctx, frame, &l4, frame.dst == cfg.addr, 0, [0; 6])
}

/// XDP on the uplink: a packet for a published port goes to its container before the host
/// builds an skb for it. Everything else goes on to tc (`None`): other traffic, replies to
/// masqueraded flows, and what XDP cannot finish: a packet whose L4 checksum its local
/// sender left to the device (only tc's helpers can update that), or a container whose
/// veth takes no XDP frames.
#[inline(always)]
pub fn from_outside_early(ctx: &XdpContext) -> Option<(Path, i32)> {
    let cfg = nat::config()?;
    let Frame::Ipv4(frame) = parse::parse(ctx) else {
        return None;
    };
    if is_martian(&frame) {
        return Some((Path::DroppedMartian, xdp_action::XDP_DROP as i32));
    }
    let l4 = published_l4(ctx, &frame)?;
    let to_uplink = frame.dst == cfg.addr;
    if to_uplink && nat::in_port_range(&cfg, l4.dst_port) {
        return None;
    }
    if nat::checksum_may_be_partial(ctx, &frame, &l4) {
        return None;
    }
    let (path, action) = to_published(ctx, &frame, &l4, to_uplink, 0, [0; 6])?;
    Some((if let Path::Published = path { Path::PublishedXdp } else { path }, action))
}

/// From a container to one of the host's own addresses (`local`, as the FIB says): a
/// published port there sends it to the port's container, keeping the client's address,
/// and its replies come back the same way (hairpin).
#[inline(never)]
pub fn hairpin(ctx: &TcContext, frame: &Ipv4Frame, sender: u32) -> Option<(Path, i32)> {
    let mac: [u8; 6] = packet::read(ctx, 6)?;
    let l4 = published_l4(ctx, frame)?;
    to_published(ctx, frame, &l4, true, sender, mac)
}

/// The inbound view of a TCP or UDP frame, the protocols ports are published for.
#[inline(always)]
fn published_l4(ctx: &impl Packet, frame: &Ipv4Frame) -> Option<L4> {
    if frame.proto == IPPROTO_ICMP {
        return None;
    }
    nat::l4(ctx, frame, false)
}

/// `l4` is the frame's `published_l4`. Packets of a confirmed connection the last second
/// saw without SYN, FIN or RST take its `INBOUND_FLOWS` entry; the others take the long
/// way (PUBLISHED, then DNAT_CT, then DNAT_NEW), which refreshes that entry.
#[inline(always)]
fn to_published<P: Delivery>(
    ctx: &P,
    frame: &Ipv4Frame,
    l4: &L4,
    any_address: bool,
    peer_ifindex: u32,
    peer_mac: [u8; 6],
) -> Option<(Path, i32)> {
    let (s, known, now) = begin(frame, l4)?;
    if let Some(flow) = known
        && trusted(flow, l4, now)
    {
        // SAFETY: map pointer, valid for this program run; copied out.
        let (backend, client) = unsafe { ((*flow).backend, (*flow).client) };
        if !P::reaches(backend.host_ifindex) {
            return None;
        }
        let client = [client[0], client[1], client[2], client[3]];
        return Some(translate_in(ctx, frame, l4, &backend, client));
    }
    let backend = backend(frame, l4.dst_port, any_address)?;
    admit(ctx, s, frame, l4, &backend, known, peer_ifindex, peer_mac, now)
}

/// The DNAT scratch slot with the connection of `frame` (`l4`) as `inbound`, its
/// `INBOUND_FLOWS` entry if cached, and the time.
#[inline(always)]
fn begin(frame: &Ipv4Frame, l4: &L4) -> Option<(&'static mut DnatScratch, Option<*mut InboundFlow>, u64)> {
    let s = scratch()?;
    s.inbound = nat::flow_key(frame, l4);
    let known = inbound_flow(s);
    Some((s, known, nat::now()))
}

/// From outside, for an address of a container on an unprotected network
/// (`SubnetInfo::UNPROTECTED`, on `network`): every TCP and UDP port of it is open, as if
/// published on the container's own address, so that the connection is tracked as a
/// published one and its replies leave as they are (`reply`). `None` when no container
/// has the address, or the packet is no TCP or UDP. A confirmed connection's next packets
/// take its `INBOUND_FLOWS` entry before they come here.
#[inline(always)]
pub fn direct(ctx: &TcContext, frame: &Ipv4Frame, network: u32) -> Option<(Path, i32)> {
    let l4 = published_l4(ctx, frame)?;
    let peer = endpoint::lookup(network, IpAddress::v4(frame.dst))?;
    let backend = own_port(IpAddress::v4(frame.dst), frame.proto, l4.dst_port, &peer);
    let (s, known, now) = begin(frame, &l4)?;
    admit(ctx, s, frame, &l4, &backend, known, 0, [0; 6], now)
}

/// A container's own address and port (of `proto`) as the backend of a connection to them
/// from outside, which no translation changes (`direct`, `publish6::direct`), with the
/// firewall's rule set for that port of the address.
#[inline(always)]
pub fn own_port(addr: IpAddress, proto: u8, port: u16, container: &Endpoint) -> Backend {
    Backend {
        addr,
        port,
        rule_set: firewall::direct_rule_set(addr, proto, port),
        host_ifindex: container.host_ifindex,
        mac: container.mac,
        flags: 0,
        _pad: 0,
    }
}

/// The long way's end, once a connection's `backend` is known: checked (host only, the
/// firewall), tracked, cached once confirmed, and handed to the container.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn admit<P: Delivery>(
    ctx: &P,
    s: &mut DnatScratch,
    frame: &Ipv4Frame,
    l4: &L4,
    backend: &Backend,
    known: Option<*mut InboundFlow>,
    peer_ifindex: u32,
    peer_mac: [u8; 6],
    now: u64,
) -> Option<(Path, i32)> {
    if backend.flags & Backend::HOST_ONLY != 0 {
        // For the host's processes only (the socket hooks): from the uplink a martian,
        // from a container a port the host does not serve it.
        return (peer_ifindex == 0).then_some((Path::DroppedMartian, P::DROP));
    }
    if !P::reaches(backend.host_ifindex) {
        return None;
    }
    if peer_ifindex == 0 && !firewall::allows(backend.rule_set, frame.src) {
        return Some((Path::DroppedFirewall, P::DROP));
    }
    // A container reaching itself through the host would see its own address as the
    // source, which its kernel drops as martian: as Docker does, it sees its gateway's.
    let client =
        if backend.host_ifindex == peer_ifindex { policy::gateway_of(frame.src)? } else { frame.src };
    s.key = FlowKey {
        src: backend.addr,
        dst: IpAddress::v4(client),
        src_port: backend.port,
        dst_port: l4.src_port,
        proto: frame.proto,
        _pad: [0; 3],
    };
    let client_flow = ClientFlow {
        host_addr: IpAddress::v4(frame.dst),
        proto: frame.proto,
        l4,
        l4_offset: nat::TRANSLATABLE_L4_OFFSET,
        reaches_itself: client != frame.src,
        peer_ifindex,
        peer_mac,
        now,
    };
    // Only confirmed connections are cached: the packets of new flows, a flood's included,
    // take the long way until they are confirmed, and never push a cached one out.
    if track_from_client(ctx, s, &client_flow) {
        s.flow.backend = *backend;
        s.flow.client = IpAddress::v4(client).addr;
        remember(s, known, now);
    }
    // From outside (no peer container): the SYN's MSS must fit the uplink.
    if peer_ifindex == 0
        && let Some(cfg) = nat::config()
    {
        nat::clamp_mss(ctx, frame, l4, cfg.uplink_ifindex);
    }
    Some(translate_in(ctx, frame, l4, backend, client))
}

/// The `INBOUND_FLOWS` entry of the connection `s.inbound` (either family), if cached.
#[inline(always)]
pub fn inbound_flow(s: &DnatScratch) -> Option<*mut InboundFlow> {
    INBOUND_FLOWS.get_ptr_mut(&s.inbound)
}

/// Whether the packet (`l4`) may go where `flow` says: no SYN, FIN or RST, which must reach
/// the conntrack entry, and an entry the long way confirmed within `TRUSTED_NS`.
#[inline(always)]
pub fn trusted(flow: *mut InboundFlow, l4: &L4, now: u64) -> bool {
    // SAFETY: map pointer, valid for this program run.
    let checked_ns = unsafe { (*flow).checked_ns };
    l4.tcp_flags & nat::TCP_STATE_CHANGES == 0 && now.wrapping_sub(checked_ns) < InboundFlow::TRUSTED_NS
}

/// Caches where the long way sent the confirmed connection `s.inbound` (`s.flow`'s backend
/// and client), for `TRUSTED_NS`: `known` is its entry, if it had one.
#[inline(always)]
pub fn remember(s: &mut DnatScratch, known: Option<*mut InboundFlow>, now: u64) {
    s.flow.checked_ns = now;
    match known {
        // SAFETY: map pointer, valid for this program run.
        Some(flow) => unsafe { *flow = s.flow },
        None => {
            let _ = INBOUND_FLOWS.insert(&s.inbound, &s.flow, 0);
        }
    }
}

/// A packet from a client to a published port, of either family, as its flow's entry
/// needs it.
pub struct ClientFlow<'a> {
    /// The published address the client sent to.
    pub host_addr: IpAddress,
    pub proto: u8,
    pub l4: &'a L4,
    /// Where the L4 header starts, for TCP's sequence numbers.
    pub l4_offset: usize,
    /// The client is the container itself, which sees its gateway as the source.
    pub reaches_itself: bool,
    pub peer_ifindex: u32,
    pub peer_mac: [u8; 6],
    pub now: u64,
}

/// Tracks a packet from the client of `s.key`'s flow: refreshes its confirmed entry, or
/// its unconfirmed one, which moves to DNAT_CT when this packet confirms it; a flow seen
/// for the first time (or again after its entry was lost) enters DNAT_NEW. Returns
/// whether the flow is confirmed.
#[inline(always)]
pub fn track_from_client<P: Delivery>(ctx: &P, s: &mut DnatScratch, flow: &ClientFlow<'_>) -> bool {
    let (flags, now) = (flow.l4.tcp_flags, flow.now);
    if let Some(entry) = DNAT_CT.get_ptr_mut(&s.key) {
        // SAFETY: map pointer, valid for this program run.
        unsafe {
            (*entry).last_seen_ns = now;
            (*entry).state = nat::next_state((*entry).state, flags, false);
        }
        return true;
    }
    if let Some(entry) = DNAT_NEW.get_ptr_mut(&s.key) {
        // SAFETY: map pointer, valid for this program run; the entry is copied out.
        unsafe {
            (*entry).last_seen_ns = now;
            (*entry).state = nat::next_state((*entry).state, flags, false);
            s.entry = *entry;
        }
        if !confirms(ctx, flow, &s.entry) {
            return false;
        }
        s.entry.state = ct_state::ESTABLISHED;
        if let Err(errno) = DNAT_CT.insert(&s.key, &s.entry, 0) {
            diagnostics::refused(Table::DnatCt, errno);
            return false;
        }
        let _ = DNAT_NEW.remove(&s.key);
        counters::ct_event(ct_event::DNAT_CONFIRMED);
        return true;
    }
    s.entry = DnatEntry {
        host_addr: flow.host_addr,
        host_port: flow.l4.dst_port,
        state: nat::next_state(ct_state::NEW, flags, false),
        flags: if flow.reaches_itself { DnatEntry::SELF } else { 0 },
        peer_ifindex: flow.peer_ifindex,
        peer_mac: flow.peer_mac,
        _pad2: [0; 2],
        expected_ack: 0,
        created_ns: now,
        last_seen_ns: now,
        next_hop: NextHop::default(),
    };
    match DNAT_NEW.insert(&s.key, &s.entry, 0) {
        Ok(()) => {
            counters::ct_event(ct_event::DNAT_CREATED);
            let hook = if flow.peer_ifindex == 0 { P::FROM_OUTSIDE } else { Hook::FromContainer };
            monitor::published(ctx.ifindex(), hook, &s.inbound, &s.key);
        }
        Err(errno) => diagnostics::refused(Table::DnatNew, errno),
    }
    false
}

/// Whether the client's packet confirms its unconfirmed flow `entry`: the container
/// answered, the flow is neither closing nor reset, and the packet acknowledges the answer
/// (TCP: exactly the SYN-ACK's sequence number + 1, which a spoofed source never saw; UDP,
/// which has nothing of the kind: any packet after an answer, as Linux conntrack has it).
#[inline(always)]
fn confirms(ctx: &impl Packet, flow: &ClientFlow<'_>, entry: &DnatEntry) -> bool {
    if entry.flags & DnatEntry::ANSWERED == 0 || entry.state != ct_state::NEW {
        return false;
    }
    if flow.proto != IPPROTO_TCP {
        return true;
    }
    if flow.l4.tcp_flags & (nat::TCP_SYN | nat::TCP_RST) != 0 {
        return false;
    }
    let Some((_, ack)) = nat::tcp_seq_ack_at(ctx, flow.l4_offset) else {
        return false;
    };
    let window = if entry.flags & DnatEntry::HANDSHAKE != 0 { 0 } else { DnatEntry::ACK_WINDOW };
    ack.wrapping_sub(entry.expected_ack) <= window
}

/// Records the container's answer on an unconfirmed flow: what the client's ACK must
/// acknowledge to confirm it.
///
/// # Safety
/// `entry` is a pointer into DNAT_NEW, valid for this program run.
#[inline(always)]
unsafe fn answered(ctx: &TcContext, proto: u8, l4_offset: usize, l4: &L4, entry: *mut DnatEntry) {
    // SAFETY: the caller's promise.
    unsafe {
        (*entry).state = nat::next_state((*entry).state, l4.tcp_flags, false);
        (*entry).flags |= DnatEntry::ANSWERED;
        if proto == IPPROTO_TCP
            && let Some((seq, _)) = nat::tcp_seq_ack_at(ctx, l4_offset)
        {
            let syn = l4.tcp_flags & nat::TCP_SYN != 0;
            (*entry).expected_ack = seq.wrapping_add(u32::from(syn));
            if syn {
                (*entry).flags |= DnatEntry::HANDSHAKE;
            } else {
                (*entry).flags &= !DnatEntry::HANDSHAKE;
            }
        }
    }
}

/// Rewrites the frame for `backend`, with `client` as its source, and hands it over.
#[inline(always)]
fn translate_in<P: Delivery>(
    ctx: &P,
    frame: &Ipv4Frame,
    l4: &L4,
    backend: &Backend,
    client: [u8; 4],
) -> (Path, i32) {
    let mut to = [0u8; 4];
    to.copy_from_slice(&backend.addr.addr[..4]);
    let rewritten =
        match nat::rewrite(ctx, frame, l4, IP_DST_OFFSET, frame.dst, to, l4.dst_port, backend.port) {
            Ok(()) if client != frame.src => nat::rewrite_addr(ctx, l4, IP_SRC_OFFSET, frame.src, client),
            done => done,
        };
    if let Err(errno) = rewritten {
        diagnostics::rewrite_failed(Rewrite::Published, errno);
        return (Path::SlowPathMalformed, P::DROP);
    }
    let _ = packet::write(ctx, 0, backend.mac);
    counters::received_at(ctx.len(), backend.host_ifindex);
    (Path::Published, ctx.deliver(backend.host_ifindex))
}

/// This CPU's DNAT scratch slot.
#[inline(always)]
pub fn scratch() -> Option<&'static mut DnatScratch> {
    let scratch = DNAT_SCRATCH.get_ptr_mut(0)?;
    // SAFETY: the slot is this CPU's, and programs do not preempt each other on a CPU.
    Some(unsafe { &mut *scratch })
}

/// The entry of the published connection a container's packet `key` (either family)
/// answers, its state and time brought up to date; `None` when it answers none.
#[inline(always)]
pub fn reply_entry(
    ctx: &TcContext,
    key: &FlowKey,
    proto: u8,
    l4_offset: usize,
    l4: &L4,
    now: u64,
) -> Option<*mut DnatEntry> {
    let entry = match DNAT_CT.get_ptr_mut(key) {
        Some(entry) => {
            // SAFETY: map pointer, valid for this program run.
            unsafe { (*entry).state = nat::next_state((*entry).state, l4.tcp_flags, true) };
            entry
        }
        None => {
            let entry = DNAT_NEW.get_ptr_mut(key)?;
            // SAFETY: a pointer into DNAT_NEW, valid for this program run.
            unsafe { answered(ctx, proto, l4_offset, l4, entry) };
            entry
        }
    };
    // SAFETY: as above.
    unsafe { (*entry).last_seen_ns = now };
    Some(entry)
}

/// From a publishing container: a reply on a published connection gets the host's
/// address and port back as its source and goes back to its client: into the client's
/// container (hairpin), or out of the uplink. A reply to itself (reached through the
/// host, so addressed to its gateway) gets its own address back as destination. `None`
/// when the packet is no such reply.
#[inline(never)]
pub fn reply(ctx: &TcContext, frame: &Ipv4Frame, sender: u32) -> Option<(Path, i32)> {
    if frame.proto == IPPROTO_ICMP || !frame.translatable() {
        return None;
    }
    let l4 = nat::l4(ctx, frame, true)?;
    let s = scratch()?;
    s.key = nat::flow_key(frame, &l4);
    let now = nat::now();
    let entry = reply_entry(ctx, &s.key, frame.proto, nat::TRANSLATABLE_L4_OFFSET, &l4, now)?;
    // SAFETY: map pointer, valid for this program run.
    let (host_addr, host_port, flags) = unsafe { ((*entry).host_addr, (*entry).host_port, (*entry).flags) };
    let mut from = [0u8; 4];
    from.copy_from_slice(&host_addr.addr[..4]);
    let rewritten = nat::rewrite(ctx, frame, &l4, IP_SRC_OFFSET, frame.src, from, l4.src_port, host_port)
        .and_then(|()| match flags & DnatEntry::SELF != 0 {
            true => nat::rewrite_addr(ctx, &l4, IP_DST_OFFSET, frame.dst, frame.src),
            false => Ok(()),
        });
    if let Err(errno) = rewritten {
        diagnostics::rewrite_failed(Rewrite::PublishedReply, errno);
        return Some((Path::SlowPathMalformed, TC_ACT_SHOT as i32));
    }
    // Out of the uplink when that is the way to the client.
    let route = |cfg: &NatConfig| nat::route(ctx, frame.proto, from, frame.dst, sender, Some(cfg), now);
    Some(back_to_client(ctx, entry, now, route))
}

/// An ICMP error a container sends about a packet of a connection to one of its
/// published ports (`quote`: the client's packet as the container got it, to its own
/// address and port; `key`: the connection as the container answers it) leaves as its
/// replies do (`reply`): the published address and port in place of the container's,
/// outside and in the quote, back to the client. `None` when it is about no such
/// connection, or one the container made to itself (its gateway is the host's).
#[inline(always)]
pub fn error_out(
    ctx: &TcContext,
    frame: &Ipv4Frame,
    quote: &nat::Quote<[u8; 4]>,
    key: &FlowKey,
    sender: u32,
    now: u64,
) -> Option<(Path, i32)> {
    let entry = error_entry(key)?;
    // SAFETY: map pointer, valid for this program run.
    let (host_addr, host_port) = unsafe { ((*entry).host_addr, (*entry).host_port) };
    let mut host = [0u8; 4];
    host.copy_from_slice(&host_addr.addr[..4]);
    let old = (quote.dst, quote.dst_port);
    if let Err(errno) =
        nat::translate_error(ctx, quote.proto, QuotedEnd::Destination, frame.src, old, (host, host_port))
    {
        diagnostics::rewrite_failed(Rewrite::IcmpError, errno);
        return Some((Path::SlowPathMalformed, TC_ACT_SHOT as i32));
    }
    let route = |cfg: &NatConfig| nat::route(ctx, frame.proto, host, frame.dst, sender, Some(cfg), now);
    Some(back_to_client(ctx, entry, now, route))
}

/// The entry of the published connection `key` (either family, as the container answers
/// it) that an ICMP error from the container is about, left untouched; `None` when there
/// is none, or it is one the container made to itself (its gateway is the host's).
#[inline(always)]
pub fn error_entry(key: &FlowKey) -> Option<*mut DnatEntry> {
    let entry = match DNAT_CT.get_ptr_mut(key) {
        Some(entry) => entry,
        None => DNAT_NEW.get_ptr_mut(key)?,
    };
    // SAFETY: map pointer, valid for this program run.
    (unsafe { (*entry).flags } & DnatEntry::SELF == 0).then_some(entry)
}

/// A reply on the published connection of `entry`, translated, goes back to its client:
/// into the client's container (hairpin), or out of the uplink to the next hop the entry
/// remembers, or else to the one `route` finds, which the entry then remembers so that
/// the flow's next replies skip the route; to the kernel when the uplink is not the way.
#[inline(always)]
pub fn back_to_client(
    ctx: &TcContext,
    entry: *mut DnatEntry,
    now: u64,
    route: impl FnOnce(&NatConfig) -> Route,
) -> (Path, i32) {
    // SAFETY: map pointer, valid for this program run.
    let (peer_ifindex, peer_mac, next_hop) =
        unsafe { ((*entry).peer_ifindex, (*entry).peer_mac, (*entry).next_hop) };
    if peer_ifindex != 0 {
        // Hairpin: straight back into the client container.
        let _ = packet::write(ctx, 0, peer_mac);
        // SAFETY: a plain helper call; it only records the target and flags.
        let action = unsafe { bpf_redirect_peer(peer_ifindex, 0) } as i32;
        return (Path::PublishedReply, action);
    }
    let Some(cfg) = nat::config() else {
        return (Path::SlowPathIp, TC_ACT_OK as i32);
    };
    if let Some(macs) = next_hop.fresh(now) {
        return (Path::PublishedReply, nat::send_to_uplink(ctx, Some(macs), &cfg));
    }
    let Route::Uplink { next_hop } = route(&cfg) else {
        return (Path::SlowPathIp, TC_ACT_OK as i32);
    };
    // SAFETY: map pointer, valid for this program run.
    unsafe { (*entry).next_hop = next_hop };
    (Path::PublishedReply, nat::send_to_uplink(ctx, next_hop.macs(), &cfg))
}
