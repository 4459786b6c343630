//! Host processes reaching published ports (what docker-proxy did, in the kernel): the
//! cgroup hooks rewrite a socket's destination from a published host address and port to
//! the container behind it at connect()/sendmsg(), and show UDP replies as coming from the
//! address the process used. Only sockets of the daemon's own network namespace are
//! touched, whatever cgroup the hooks sit on.

use aya_ebpf::{
    helpers::{bpf_get_netns_cookie, bpf_get_socket_cookie},
    macros::map,
    maps::{Array, LruHashMap},
    programs::SockAddrContext,
};
use dataplane_common::{HostConfig, IPPROTO_TCP, IPPROTO_UDP, SockRevKey, SockRevValue};

use crate::{nat, policy, publish};

#[map]
static HOST_CONFIG: Array<HostConfig> = Array::pinned(1, 0);

/// UDP sockets that sent to a published port, to translate the source of their replies.
#[map]
static SOCK_REVNAT: LruHashMap<SockRevKey, SockRevValue> = LruHashMap::pinned(65536, 0);

#[inline(always)]
fn ours(ctx: &SockAddrContext) -> bool {
    let Some(cfg) = HOST_CONFIG.get(0) else {
        return false;
    };
    // SAFETY: the helper only reads the context.
    cfg.netns_cookie != 0 && unsafe { bpf_get_netns_cookie(ctx.sock_addr.cast()) } == cfg.netns_cookie
}

/// Addresses a port published on 0.0.0.0 answers on, as seen from the host: loopback, the
/// uplink's address and the networks' gateways.
#[inline(always)]
fn host_address(addr: [u8; 4]) -> bool {
    addr[0] == 127 || nat::config().is_some_and(|c| c.addr == addr) || policy::is_gateway(addr)
}

/// connect() and sendmsg(): a published destination becomes its container. Returns the
/// original destination when it rewrote it.
#[inline(always)]
fn redirect(ctx: &SockAddrContext) -> Option<([u8; 4], u16)> {
    if !ours(ctx) {
        return None;
    }
    let sa = ctx.sock_addr;
    // SAFETY: reading fields of the context the kernel handed us.
    let (protocol, ip, port) = unsafe { ((*sa).protocol, (*sa).user_ip4, (*sa).user_port) };
    let proto = match protocol {
        p if p == u32::from(IPPROTO_TCP) => IPPROTO_TCP,
        p if p == u32::from(IPPROTO_UDP) => IPPROTO_UDP,
        _ => return None,
    };
    let addr = ip.to_ne_bytes();
    let port = port as u16;
    let backend = publish::lookup(addr, port, proto, host_address(addr))?;
    let mut to = [0u8; 4];
    to.copy_from_slice(&backend.addr.addr[..4]);
    // SAFETY: writing the fields the hook may rewrite.
    unsafe {
        (*sa).user_ip4 = u32::from_ne_bytes(to);
        (*sa).user_port = u32::from(backend.port);
    }
    Some((addr, port))
}

#[inline(always)]
pub fn connect4(ctx: &SockAddrContext) {
    let _ = redirect(ctx);
}

#[inline(always)]
pub fn sendmsg4(ctx: &SockAddrContext) {
    let Some((addr, port)) = redirect(ctx) else {
        return;
    };
    let sa = ctx.sock_addr;
    // SAFETY: reading the rewritten fields and the socket's cookie.
    let (to, to_port, cookie) =
        unsafe { ((*sa).user_ip4.to_ne_bytes(), (*sa).user_port as u16, bpf_get_socket_cookie(sa.cast())) };
    let key = SockRevKey { cookie, addr: to, port: to_port, _pad: [0; 2] };
    let _ = SOCK_REVNAT.insert(&key, &SockRevValue { addr, port, _pad: [0; 2] }, 0);
}

#[inline(always)]
pub fn recvmsg4(ctx: &SockAddrContext) {
    if !ours(ctx) {
        return;
    }
    let sa = ctx.sock_addr;
    // SAFETY: reading fields of the context and the socket's cookie.
    let key = unsafe {
        SockRevKey {
            cookie: bpf_get_socket_cookie(sa.cast()),
            addr: (*sa).user_ip4.to_ne_bytes(),
            port: (*sa).user_port as u16,
            _pad: [0; 2],
        }
    };
    // SAFETY: values are plain data copied out at once.
    if let Some(original) = unsafe { SOCK_REVNAT.get(&key) } {
        // SAFETY: writing the fields the hook may rewrite.
        unsafe {
            (*sa).user_ip4 = u32::from_ne_bytes(original.addr);
            (*sa).user_port = u32::from(original.port);
        }
    }
}
