//! What `dataplane monitor` shows: an event per dropped packet and per new tracked flow,
//! and while tracing one per delivered flow and second, sent through the MONITOR_EVENTS
//! ring buffer while the daemon has a listener. Owns the ring buffer, MONITOR_CONFIG (the
//! daemon's "listening" and "tracing" flags), MONITOR_LOST (events a full ring buffer
//! refused, per CPU) and TRACED (when each traced flow last made an event).
//! It never changes a verdict: a full ring buffer loses the event, never the packet. It
//! costs the forward path a read of the flags (tracing), the other flags are read on the
//! drop and new-flow paths only, nothing is built while they are off, and no event wakes the reader (which reads every
//! 100 ms), so that a listener costs each event a copy and no more.

use core::ptr::addr_of_mut;

use aya_ebpf::{
    bindings::BPF_RB_NO_WAKEUP,
    macros::map,
    maps::{Array, LruHashMap, PerCpuArray, RingBuf, ring_buf::RingBufEntry},
};
use dataplane_common::{DropReason, FlowKey, Hook, IPPROTO_TCP, IPPROTO_UDP, IpAddress, MonitorEvent, Path};

use network_types::eth::EthHdr;

use crate::{
    nat,
    packet::Packet,
    parse::{self, Frame, UpperLayer},
};

/// Sized by the daemon at load (`--monitor-ring-size`).
#[map]
static MONITOR_EVENTS: RingBuf = RingBuf::with_byte_size(MonitorEvent::RING_DEFAULT_SIZE, 0);

/// One slot: `MonitorEvent::LISTENING` while a client listens.
#[map]
static MONITOR_CONFIG: Array<u32> = Array::with_max_entries(1, 0);

#[map]
static MONITOR_LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

const NO_ADDRESS: IpAddress = IpAddress { family: 0, _pad: [0; 3], addr: [0; 16] };
const NO_FLOW: FlowKey =
    FlowKey { src: NO_ADDRESS, dst: NO_ADDRESS, src_port: 0, dst_port: 0, proto: 0, _pad: [0; 3] };

/// Room for one event, if a client listens; a full ring buffer counts the event lost.
#[inline(always)]
fn reserve() -> Option<RingBufEntry<MonitorEvent>> {
    if flags() & MonitorEvent::LISTENING == 0 {
        return None;
    }
    let entry = MONITOR_EVENTS.reserve::<MonitorEvent>(0);
    if entry.is_none()
        && let Some(lost) = MONITOR_LOST.get_ptr_mut(0)
    {
        // SAFETY: the slot belongs to this CPU and programs do not preempt each other on it.
        unsafe { *lost += 1 };
    }
    entry
}

/// Per traced flow (as it left), when it last made a trace event.
#[map]
static TRACED: LruHashMap<FlowKey, u64> = LruHashMap::with_max_entries(16_384, 0);

/// The packet `hook` counted on `path`: an event if `path` dropped it, or, while a client
/// traces, if the programs delivered it and its flow made none for `TRACE_EVERY_NS`. The
/// paths that pass packets on to the kernel cost a comparison; the others a read of the
/// flags too, and no call while they are off.
#[inline(always)]
pub fn counted(ctx: &impl Packet, hook: Hook, path: Path) {
    let tag = hook as u8 as u32 | (path as u32) << 8;
    if let Some(reason) = DropReason::of(path) {
        if flags() & MonitorEvent::LISTENING != 0 {
            dropped(ctx, tag | (reason as u8 as u32) << 16);
        }
    } else if path.delivered() && flags() & MonitorEvent::TRACING != 0 {
        traced(ctx, tag);
    }
}

#[inline(always)]
fn flags() -> u32 {
    MONITOR_CONFIG.get(0).copied().unwrap_or(0)
}

/// A subprogram, as `dropped`.
#[inline(never)]
fn traced<P: Packet>(ctx: &P, tag: u32) {
    let flow = flow_of(ctx);
    let now = nat::now();
    match TRACED.get_ptr_mut(&flow) {
        // SAFETY: a map pointer, valid for this program run.
        Some(last) if now.wrapping_sub(unsafe { *last }) < MonitorEvent::TRACE_EVERY_NS => return,
        // SAFETY: as above.
        Some(last) => unsafe { *last = now },
        None => {
            let _ = TRACED.insert(&flow, &now, 0);
        }
    }
    let Some(entry) = reserve() else { return };
    send(entry, tag | u32::from(MonitorEvent::TRACE) << 24, ctx.ifindex(), &flow, &NO_FLOW);
}

/// A subprogram (`inline(never)`): the parse of the packet stays off the stack of the
/// paths that forward. `tag` packs the hook, the path and the reason (`send`; a
/// subprogram takes five arguments at most, a verifier rule).
#[inline(never)]
fn dropped<P: Packet>(ctx: &P, tag: u32) {
    let Some(mut entry) = reserve() else { return };
    fill(&mut entry, tag | u32::from(MonitorEvent::DROP) << 24, ctx.ifindex(), &flow_of(ctx), &NO_FLOW);
    // Straight from the packet (no copy on the stack: this subprogram's frame, with its
    // deepest caller's, is all the verifier allows).
    if let Some(eth) = parse::header_ptr::<EthHdr>(ctx, 0) {
        let event = entry.as_mut_ptr();
        // SAFETY: as in `fill`; header_ptr bounds-checked the Ethernet header.
        unsafe {
            addr_of_mut!((*event).ether_type).write((*eth).ether_type);
            addr_of_mut!((*event).src_mac).write((*eth).src_addr);
        }
    }
    entry.submit(u64::from(BPF_RB_NO_WAKEUP));
}

/// Where an ARP frame (Ethernet, IPv4) holds the sender's and the target's addresses.
const ARP_SENDER_IP: usize = 14 + 14;
const ARP_TARGET_IP: usize = 14 + 24;

/// A new masqueraded flow from the container behind `sender`: `flow` as it sent it, and
/// the reply key its translation chose (`SnatScratch::reply`).
#[inline(always)]
pub fn masqueraded(sender: u32, flow: &FlowKey, reply: &FlowKey) {
    new_flow(sender, Hook::FromContainer, MonitorEvent::MASQUERADE, flow, reply);
}

/// A new flow to a published port, seen by `hook` on `ifindex`: `flow` as the client sent
/// it, and the container's side of it (`DnatScratch::key`).
#[inline(always)]
pub fn published(ifindex: u32, hook: Hook, flow: &FlowKey, reply: &FlowKey) {
    new_flow(ifindex, hook, MonitorEvent::PUBLISHED, flow, reply);
}

/// A new tracked flow entering on `ifindex`, as its first packet arrived (`flow`), and its
/// reply direction after translation (`reply`), as the conntrack tables key it.
#[inline(always)]
fn new_flow(ifindex: u32, hook: Hook, translation: u8, flow: &FlowKey, reply: &FlowKey) {
    let Some(entry) = reserve() else { return };
    let path = if translation == MonitorEvent::MASQUERADE { Path::Masqueraded } else { Path::Published };
    let tag = hook as u8 as u32
        | (path as u32) << 8
        | u32::from(translation) << 16
        | u32::from(MonitorEvent::FLOW) << 24;
    send(entry, tag, ifindex, flow, reply);
}

/// Fills the reserved record and submits it, waking no reader. `tag` packs the hook, the
/// path, the reason and the kind, a byte each from the lowest.
#[inline(always)]
fn send(mut entry: RingBufEntry<MonitorEvent>, tag: u32, ifindex: u32, flow: &FlowKey, reply: &FlowKey) {
    fill(&mut entry, tag, ifindex, flow, reply);
    entry.submit(u64::from(BPF_RB_NO_WAKEUP));
}

/// Fills the reserved record; the link layer is left zero (a drop's is `dropped`'s).
#[inline(always)]
fn fill(entry: &mut RingBufEntry<MonitorEvent>, tag: u32, ifindex: u32, flow: &FlowKey, reply: &FlowKey) {
    let event = entry.as_mut_ptr();
    // SAFETY: `event` points at the reserved record, written whole before it is submitted.
    unsafe {
        addr_of_mut!((*event).hook).write(tag as u8);
        addr_of_mut!((*event).path).write((tag >> 8) as u8);
        addr_of_mut!((*event).reason).write((tag >> 16) as u8);
        addr_of_mut!((*event).kind).write((tag >> 24) as u8);
        addr_of_mut!((*event).ifindex).write(ifindex);
        addr_of_mut!((*event).ether_type).write(0);
        addr_of_mut!((*event).src_mac).write([0; 6]);
        addr_of_mut!((*event).flow).write(*flow);
        addr_of_mut!((*event).reply).write(*reply);
    }
}

/// The addresses, protocol and (TCP and UDP) ports of the packet, as it is now; ARP's
/// sender and target addresses (protocol 0).
#[inline(always)]
fn flow_of(ctx: &impl Packet) -> FlowKey {
    let mut flow = NO_FLOW;
    let l4 = match parse::parse(ctx) {
        Frame::Ipv4(frame) => {
            flow.src = IpAddress::v4(frame.src);
            flow.dst = IpAddress::v4(frame.dst);
            flow.proto = frame.proto;
            (!frame.fragment).then_some(frame.l4_offset)
        }
        Frame::Ipv6 => {
            let Some(frame) = parse::parse_ipv6(ctx) else { return flow };
            flow.src = IpAddress::v6(frame.src);
            flow.dst = IpAddress::v6(frame.dst);
            flow.proto = frame.next_header;
            match parse::ipv6_upper_layer(ctx, &frame) {
                UpperLayer::Found { proto, offset } => {
                    flow.proto = proto;
                    Some(offset)
                }
                _ => None,
            }
        }
        Frame::Other => {
            // SAFETY: header_ptr bounds-checked the Ethernet header.
            if parse::header_ptr::<EthHdr>(ctx, 0)
                .is_some_and(|eth| unsafe { (*eth).ether_type } == MonitorEvent::ETHER_TYPE_ARP)
                && let (Some(sender), Some(target)) =
                    (ctx.load_bytes::<[u8; 4]>(ARP_SENDER_IP), ctx.load_bytes::<[u8; 4]>(ARP_TARGET_IP))
            {
                flow.src = IpAddress::v4(sender);
                flow.dst = IpAddress::v4(target);
            }
            None
        }
        Frame::Malformed => None,
    };
    if let Some(offset) = l4
        && (flow.proto == IPPROTO_TCP || flow.proto == IPPROTO_UDP)
        && let Some(ports) = ctx.load_bytes::<[u16; 2]>(offset)
    {
        flow.src_port = ports[0];
        flow.dst_port = ports[1];
    }
    flow
}
