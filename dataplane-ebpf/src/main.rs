//! Kernel entry points. Each one only composes the modules beside it, which own the
//! maps and the logic of one datapath concern each.
#![no_std]
#![no_main]

mod counters;
mod endpoint;
mod forward;
mod nat;
mod parse;
mod policy;
mod publish;

use aya_ebpf::{macros::classifier, programs::TcContext};

/// tcx ingress of a container's host-side veth: every frame the container sends.
#[classifier]
pub fn from_container(ctx: TcContext) -> i32 {
    forward::from_container(&ctx)
}

/// tcx ingress of the uplink: replies to masqueraded flows.
#[classifier]
pub fn from_uplink(ctx: TcContext) -> i32 {
    let (path, action) = nat::from_uplink(&ctx);
    counters::count(&ctx, path);
    action
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
