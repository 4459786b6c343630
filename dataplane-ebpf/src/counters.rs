//! Per-path and per-endpoint packet and byte counters, per CPU so that counting never
//! contends. The daemon sums the CPUs when asked. Endpoints are counted by the slot their
//! entries (`InterfaceConfig`, `Endpoint`) carry: counting takes no lookup of its own.

use aya_ebpf::{macros::map, maps::PerCpuArray};
use dataplane_common::{Counter, EndpointCounters, InterfaceConfig, Path, ct_event};

use crate::{endpoint, packet::Packet};

#[map]
static COUNTERS: PerCpuArray<Counter> = PerCpuArray::pinned(Path::COUNT, 0);

#[map]
static ENDPOINT_COUNTERS: PerCpuArray<EndpointCounters> = PerCpuArray::pinned(EndpointCounters::SLOTS, 0);

#[map]
static CT_EVENTS: PerCpuArray<u64> = PerCpuArray::pinned(ct_event::COUNT, 0);

/// Counts one `ct_event`.
#[inline(always)]
pub fn ct_event(event: u32) {
    if let Some(count) = CT_EVENTS.get_ptr_mut(event) {
        // SAFETY: the slot belongs to this CPU and programs do not preempt each other on it.
        unsafe { *count += 1 };
    }
}

#[inline(always)]
pub fn count(ctx: &impl Packet, path: Path) {
    if let Some(counter) = COUNTERS.get_ptr_mut(path as u32) {
        add(counter, ctx.len());
    }
}

/// A frame the endpoint at `slot` sent, whatever became of it.
#[inline(always)]
pub fn sent(ctx: &impl Packet, slot: u16) {
    if let Some(counters) = ENDPOINT_COUNTERS.get_ptr_mut(u32::from(slot)) {
        // SAFETY: the pointer is the map's slot for this CPU, valid for the program's run.
        add(unsafe { &raw mut (*counters).sent }, ctx.len());
    }
}

/// A frame the programs hand to the endpoint at `slot`.
#[inline(always)]
pub fn received(ctx: &impl Packet, slot: u16) {
    received_by(slot, ctx.len());
}

/// A frame of `len` bytes the programs hand to the endpoint behind the host-side
/// interface `host_ifindex`, where only that is known (replies and published ports,
/// found through conntrack): its slot is in the interface's entry.
#[inline(always)]
pub fn received_at(len: u32, host_ifindex: u32) {
    if let Some(iface) = endpoint::interface(host_ifindex) {
        received_by(iface.counter_slot, len);
    }
}

#[inline(always)]
fn received_by(slot: u16, len: u32) {
    if let Some(counters) = ENDPOINT_COUNTERS.get_ptr_mut(u32::from(slot)) {
        // SAFETY: the pointer is the map's slot for this CPU, valid for the program's run.
        add(unsafe { &raw mut (*counters).received }, len);
    }
}

/// One frame of `len` bytes more. The slot belongs to this CPU and programs do not
/// preempt each other on it.
#[inline(always)]
fn add(counter: *mut Counter, len: u32) {
    // SAFETY: `counter` points into a per-CPU map slot (see above).
    unsafe {
        (*counter).packets += 1;
        (*counter).bytes += u64::from(len);
    }
}

const _: () = assert!(InterfaceConfig::NONE.counter_slot == 0);
