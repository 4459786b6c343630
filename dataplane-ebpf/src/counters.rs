//! Per-path packet and byte counters, one slot per `Path`, per CPU so that counting
//! never contends. The daemon sums the CPUs when asked.

use aya_ebpf::{macros::map, maps::PerCpuArray};
use dataplane_common::{Counter, Path, ct_event};

use crate::packet::Packet;

#[map]
static COUNTERS: PerCpuArray<Counter> = PerCpuArray::pinned(Path::COUNT, 0);

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
        // SAFETY: the slot belongs to this CPU and programs do not preempt each other on it.
        unsafe {
            (*counter).packets += 1;
            (*counter).bytes += u64::from(ctx.len());
        }
    }
}
