//! Same-network forwarding: a frame whose source is the sender's own (`source`), if it is
//! unicast IPv4 for a known endpoint of the sender's network, is rewritten for the
//! destination and redirected into its namespace; traffic for outside the host goes to the
//! NAT; anything else goes on to the kernel (the network's bridge), which handles ARP,
//! broadcast and traffic for the host.

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    helpers::bpf_redirect_peer,
    programs::TcContext,
};
use dataplane_common::{InterfaceConfig, Path};
use network_types::eth::EthHdr;

use crate::{
    counters::count,
    endpoint, nat,
    parse::{self, Frame},
    policy::{self, Verdict},
    publish, source,
};

#[inline(always)]
pub fn from_container(ctx: &TcContext) -> i32 {
    let (path, action) = decide(ctx);
    count(ctx, path);
    action
}

#[inline(always)]
fn decide(ctx: &TcContext) -> (Path, i32) {
    // SAFETY: reading a field of the context the kernel handed us.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    let Some(iface) = endpoint::interface(ifindex) else {
        return (Path::SlowPathUnmanaged, TC_ACT_OK);
    };
    if let Err(spoofed) = source::check_link(ctx, &iface) {
        return (spoofed, TC_ACT_SHOT);
    }
    let frame = match parse::parse(ctx) {
        Frame::Ipv4(frame) => frame,
        Frame::Other => return (Path::SlowPathOther, TC_ACT_OK),
        Frame::Malformed => return (Path::SlowPathMalformed, TC_ACT_OK),
    };
    if let Err(spoofed) = source::check_ipv4(&frame, &iface) {
        return (spoofed, TC_ACT_SHOT);
    }
    if iface.flags & InterfaceConfig::PUBLISHES != 0
        && let Some(verdict) = publish::reply(ctx, &frame, ifindex)
    {
        return verdict;
    }
    // An endpoint of the sender's own network cannot lie in another network's subnet
    // (subnets never overlap), so a hit needs no policy lookup: the trie, the costliest
    // lookup here, is left to the traffic that misses.
    let endpoint =
        if iface.may_hold_v4(frame.dst) { endpoint::lookup_v4(iface.network, frame.dst) } else { None };
    let Some(dst) = endpoint else {
        if let Some(verdict) = nat::established_out(ctx, &frame, ifindex) {
            return verdict;
        }
        return match policy::check_v4(iface.network, frame.dst) {
            Verdict::OtherNetwork => (Path::DroppedIsolation, TC_ACT_SHOT),
            Verdict::Allow => match nat::leave_host(ctx, &frame, &iface, ifindex) {
                Some(verdict) => verdict,
                // For the host itself: a published port there (hairpin), or the host's own.
                None => publish::hairpin(ctx, &frame, ifindex).unwrap_or((Path::SlowPathIp, TC_ACT_OK)),
            },
        };
    };
    if iface.flags & InterfaceConfig::ICC_DISABLED != 0 {
        return (Path::DroppedIcc, TC_ACT_SHOT);
    }
    // The sender resolved the peer through ARP over the bridge, so the destination MAC is
    // normally right already; setting it keeps a stale neighbour entry from black-holing.
    // (Pointers from before a helper that may move the data are stale: take it anew.)
    if let Some(eth) = parse::header_ptr::<EthHdr>(ctx, 0) {
        // SAFETY: header_ptr bounds-checked the Ethernet header.
        unsafe { (*eth).dst_addr = dst.mac };
    }
    // SAFETY: a plain helper call; it only records the target and flags.
    let action = unsafe { bpf_redirect_peer(dst.host_ifindex, 0) } as i32;
    (Path::Forwarded, action)
}

const _: () = assert!(TC_ACT_OK as i32 == 0 && TC_ACT_SHOT as i32 == 2);
