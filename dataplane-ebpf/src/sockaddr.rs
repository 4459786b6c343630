//! Host processes reaching published ports (what docker-proxy did, in the kernel): the
//! cgroup hooks rewrite a socket's destination from a published host address and port to
//! the container behind it at connect()/sendmsg(), and show UDP replies as coming from the
//! address the process used; IPv4 and IPv6 (`::1` included) alike. Only sockets of the
//! daemon's own network namespace are touched, whatever cgroup the hooks sit on.

use aya_ebpf::{
    helpers::{bpf_get_netns_cookie, bpf_get_socket_cookie},
    macros::map,
    maps::{Array, LruHashMap},
    programs::SockAddrContext,
};
use dataplane_common::{
    HostConfig, IPPROTO_TCP, IPPROTO_UDP, IpAddress, NatConfig, SockRevKey, SockRevKey6, SockRevValue,
    SockRevValue6,
};

use crate::{nat, policy, publish};

#[map]
static HOST_CONFIG: Array<HostConfig> = Array::pinned(1, 0);

/// UDP sockets that sent to a published port, to translate the source of their replies.
#[map]
static SOCK_REVNAT: LruHashMap<SockRevKey, SockRevValue> = LruHashMap::pinned(65536, 0);

/// As SOCK_REVNAT, for IPv6 sockets.
#[map]
static SOCK_REVNAT6: LruHashMap<SockRevKey6, SockRevValue6> = LruHashMap::pinned(65536, 0);

const LOOPBACK6: [u8; 16] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];

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

/// The protocols ports are published for.
#[inline(always)]
fn published_proto(protocol: u32) -> Option<u8> {
    match protocol {
        p if p == u32::from(IPPROTO_TCP) => Some(IPPROTO_TCP),
        p if p == u32::from(IPPROTO_UDP) => Some(IPPROTO_UDP),
        _ => None,
    }
}

/// As `host_address`, for IPv6: `::1`, the uplink's IPv6 address and the networks' IPv6
/// gateways.
#[inline(always)]
fn host_address6(addr: [u8; 16]) -> bool {
    addr == LOOPBACK6
        || nat::config().is_some_and(|c| c.flags & NatConfig::IPV6 != 0 && c.addr6 == addr)
        || policy::is_gateway_v6(addr)
}

/// The 16 bytes of an IPv6 address as the context holds it (four words in network order).
#[inline(always)]
fn ip6_bytes(words: [u32; 4]) -> [u8; 16] {
    let mut addr = [0u8; 16];
    for (i, word) in words.iter().enumerate() {
        addr[4 * i..4 * i + 4].copy_from_slice(&word.to_ne_bytes());
    }
    addr
}

#[inline(always)]
fn ip6_words(addr: &[u8; 16]) -> [u32; 4] {
    let word =
        |i: usize| u32::from_ne_bytes([addr[4 * i], addr[4 * i + 1], addr[4 * i + 2], addr[4 * i + 3]]);
    [word(0), word(1), word(2), word(3)]
}

/// As `redirect`, for IPv6 sockets.
#[inline(always)]
fn redirect6(ctx: &SockAddrContext) -> Option<([u8; 16], u16)> {
    if !ours(ctx) {
        return None;
    }
    let sa = ctx.sock_addr;
    // SAFETY: reading fields of the context the kernel handed us.
    let (protocol, ip, port) = unsafe { ((*sa).protocol, (*sa).user_ip6, (*sa).user_port) };
    let proto = published_proto(protocol)?;
    let addr = ip6_bytes(ip);
    let port = port as u16;
    let backend = publish::lookup(IpAddress::v6(addr), port, proto, host_address6(addr))?;
    // SAFETY: writing the fields the hook may rewrite.
    unsafe {
        (*sa).user_ip6 = ip6_words(&backend.addr.addr);
        (*sa).user_port = u32::from(backend.port);
    }
    Some((addr, port))
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
    let proto = published_proto(protocol)?;
    let addr = ip.to_ne_bytes();
    let port = port as u16;
    let backend = publish::lookup(IpAddress::v4(addr), port, proto, host_address(addr))?;
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

#[inline(always)]
pub fn connect6(ctx: &SockAddrContext) {
    let _ = redirect6(ctx);
}

#[inline(always)]
pub fn sendmsg6(ctx: &SockAddrContext) {
    let Some((addr, port)) = redirect6(ctx) else {
        return;
    };
    let sa = ctx.sock_addr;
    // SAFETY: reading the rewritten fields and the socket's cookie.
    let (to, to_port, cookie) =
        unsafe { (ip6_bytes((*sa).user_ip6), (*sa).user_port as u16, bpf_get_socket_cookie(sa.cast())) };
    let key = SockRevKey6 { cookie, addr: to, port: to_port, _pad: [0; 6] };
    let _ = SOCK_REVNAT6.insert(&key, &SockRevValue6 { addr, port, _pad: [0; 2] }, 0);
}

#[inline(always)]
pub fn recvmsg6(ctx: &SockAddrContext) {
    if !ours(ctx) {
        return;
    }
    let sa = ctx.sock_addr;
    // SAFETY: reading fields of the context and the socket's cookie.
    let key = unsafe {
        SockRevKey6 {
            cookie: bpf_get_socket_cookie(sa.cast()),
            addr: ip6_bytes((*sa).user_ip6),
            port: (*sa).user_port as u16,
            _pad: [0; 6],
        }
    };
    // SAFETY: values are plain data copied out at once.
    if let Some(original) = unsafe { SOCK_REVNAT6.get(&key) } {
        // SAFETY: writing the fields the hook may rewrite.
        unsafe {
            (*sa).user_ip6 = ip6_words(&original.addr);
            (*sa).user_port = u32::from(original.port);
        }
    }
}
