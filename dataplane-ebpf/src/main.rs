//! Kernel entry points. Each one only composes the modules beside it, which own the
//! maps and the logic of one datapath concern each.
#![no_std]
#![no_main]

mod counters;
mod diagnostics;
mod endpoint;
mod firewall;
mod forward;
mod isolated;
mod monitor;
mod nat;
mod nat6;
mod packet;
mod parse;
mod policy;
mod publish;
mod publish6;
mod routed;
mod sockaddr;
mod source;
mod tunnel;
mod validate;

use aya_ebpf::{
    bindings::xdp_action,
    macros::{cgroup_sock_addr, classifier, xdp},
    programs::{SockAddrContext, TcContext, XdpContext},
};
use dataplane_common::Hook;

/// tc ingress (clsact, direct action) of a container's host-side veth: every frame the container sends.
#[classifier]
pub fn from_container(ctx: TcContext) -> i32 {
    forward::from_container(&ctx)
}

/// tc ingress of the host's VXLAN device: overlay frames from other hosts, decapsulated.
#[classifier]
pub fn from_tunnel(ctx: TcContext) -> i32 {
    let (path, action) = tunnel::from_tunnel(&ctx);
    counters::count(&ctx, path);
    monitor::counted(&ctx, Hook::FromTunnel, path);
    action
}

/// tc egress (clsact) of an isolated network's bridge: what the host sends into the
/// network. Only what it drops is counted: what passes is no path of the datapath's.
#[classifier]
pub fn into_isolated(ctx: TcContext) -> i32 {
    match isolated::into_network(&ctx) {
        Some(path) => {
            counters::count(&ctx, path);
            monitor::counted(&ctx, Hook::IntoIsolated, path);
            aya_ebpf::bindings::TC_ACT_SHOT as i32
        }
        None => aya_ebpf::bindings::TC_ACT_OK as i32,
    }
}

/// tc ingress of the uplink: replies to masqueraded flows, published ports (what the XDP
/// program passed on), traffic for the host.
#[classifier]
pub fn from_uplink(ctx: TcContext) -> i32 {
    if parse::is_ipv6(&ctx) {
        // Returns only when `from_uplink_v6` is not there; IPv6 is then the host's.
        nat6::tail_call(&ctx);
    }
    let (path, action) = nat::from_uplink(&ctx);
    counters::count(&ctx, path);
    monitor::counted(&ctx, Hook::FromUplink, path);
    diagnostics::after(path);
    action
}

/// IPv6 arriving on the uplink, tail-called from `from_uplink`: a program of its own, as
/// the stack of IPv4's path there leaves no room for IPv6's behind it.
#[classifier]
pub fn from_uplink_v6(ctx: TcContext) -> i32 {
    let (path, action) = nat6::from_uplink(&ctx);
    counters::count(&ctx, path);
    monitor::counted(&ctx, Hook::FromUplink, path);
    diagnostics::after(path);
    action
}

/// IPv4 arriving on the uplink for a container address of a routed or unprotected network,
/// tail-called from `from_uplink`, whose stack has no room for it.
#[classifier]
pub fn from_uplink_routed(ctx: TcContext) -> i32 {
    let (path, action) = routed::from_outside_v4(&ctx);
    counters::count(&ctx, path);
    monitor::counted(&ctx, Hook::FromUplink, path);
    diagnostics::after(path);
    action
}

/// IPv6 arriving on the uplink for a container address of an unprotected network, TCP and
/// UDP, and of a routed or unprotected one, behind extension headers; tail-called from
/// `from_uplink_v6`: its path beside the others there passed the verifier's million
/// instructions.
#[classifier]
pub fn from_uplink_routed_v6(ctx: TcContext) -> i32 {
    let (path, action) = routed::from_outside_v6(&ctx);
    counters::count(&ctx, path);
    monitor::counted(&ctx, Hook::FromUplink, path);
    diagnostics::after(path);
    action
}

/// XDP on the uplink: published ports; everything else goes on to `from_uplink`. IPv6
/// continues in `uplink_xdp_v6`.
#[xdp]
pub fn uplink_xdp(ctx: XdpContext) -> u32 {
    if parse::is_ipv6(&ctx) {
        publish6::tail_call_xdp(&ctx);
        return xdp_action::XDP_PASS;
    }
    counted_early(&ctx, publish::from_outside_early(&ctx))
}

/// IPv6 at the uplink's XDP hook, tail-called from `uplink_xdp`: ports published on IPv6.
#[xdp]
pub fn uplink_xdp_v6(ctx: XdpContext) -> u32 {
    counted_early(&ctx, publish6::from_outside_early(&ctx))
}

/// The XDP verdict of a published port's path, counted; `None` passes the frame to tc.
#[inline(always)]
fn counted_early(ctx: &XdpContext, early: Option<(dataplane_common::Path, i32)>) -> u32 {
    match early {
        Some((path, action)) => {
            counters::count(ctx, path);
            monitor::counted(ctx, Hook::UplinkXdp, path);
            diagnostics::after(path);
            action as u32
        }
        None => xdp_action::XDP_PASS,
    }
}

/// connect() of host processes: published host ports lead to their container.
#[cgroup_sock_addr(connect4)]
pub fn host_connect4(ctx: SockAddrContext) -> i32 {
    sockaddr::connect4(&ctx);
    1
}

/// sendmsg() of host UDP sockets: as connect().
#[cgroup_sock_addr(sendmsg4)]
pub fn host_sendmsg4(ctx: SockAddrContext) -> i32 {
    sockaddr::sendmsg4(&ctx);
    1
}

/// recvmsg() of host UDP sockets: replies show the published address they were sent to.
#[cgroup_sock_addr(recvmsg4)]
pub fn host_recvmsg4(ctx: SockAddrContext) -> i32 {
    sockaddr::recvmsg4(&ctx);
    1
}

/// connect() of host processes over IPv6 (`::1` included): as `host_connect4`.
#[cgroup_sock_addr(connect6)]
pub fn host_connect6(ctx: SockAddrContext) -> i32 {
    sockaddr::connect6(&ctx);
    1
}

#[cgroup_sock_addr(sendmsg6)]
pub fn host_sendmsg6(ctx: SockAddrContext) -> i32 {
    sockaddr::sendmsg6(&ctx);
    1
}

#[cgroup_sock_addr(recvmsg6)]
pub fn host_recvmsg6(ctx: SockAddrContext) -> i32 {
    sockaddr::recvmsg6(&ctx);
    1
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
