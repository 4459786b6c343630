//! Same-network forwarding: a frame whose source is the sender's own (`source`), if it is
//! unicast IPv4 or IPv6 for a known endpoint of the sender's network, is rewritten for the
//! destination and redirected into its namespace; unicast IPv4 and IPv6 for an endpoint
//! of an overlay network on another host, and ARP and neighbour solicitations for one, go
//! to the `tunnel`; an isolated network's containers reach nothing else but their
//! resolver (`isolated`); IPv4 and IPv6
//! for outside the host go to the NAT; anything else goes on to the kernel (the network's
//! bridge), which handles ARP, neighbour discovery, broadcast and multicast, and traffic
//! for the host.

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    helpers::bpf_redirect_peer,
    programs::TcContext,
};
use dataplane_common::{Endpoint, Hook, IPPROTO_ICMP, IPPROTO_ICMPV6, InterfaceConfig, IpAddress, Path};
use network_types::eth::EthHdr;

use crate::{
    counters::{self, count},
    diagnostics, endpoint, isolated, monitor, nat, nat6, packet,
    parse::{self, Frame, UpperLayer},
    policy::{self, Verdict},
    publish, publish6, routed, source, tunnel,
};

#[inline(always)]
pub fn from_container(ctx: &TcContext) -> i32 {
    let (path, action) = decide(ctx);
    count(ctx, path);
    monitor::counted(ctx, Hook::FromContainer, path);
    diagnostics::after(path);
    action
}

#[inline(always)]
fn decide(ctx: &TcContext) -> (Path, i32) {
    // SAFETY: reading a field of the context the kernel handed us.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    let Some(iface) = endpoint::interface(ifindex) else {
        return (Path::SlowPathUnmanaged, TC_ACT_OK);
    };
    counters::sent(ctx, iface.counter_slot);
    if let Err(spoofed) = source::check_link(ctx, &iface) {
        return (spoofed, TC_ACT_SHOT);
    }
    let frame = match parse::parse(ctx) {
        Frame::Ipv4(frame) => frame,
        Frame::Ipv6 => {
            // Each step is a subprogram called from here, none from another: two frames
            // of them together would pass the stack's 512 bytes.
            return match check_v6(ctx, &iface) {
                // Multicast: a solicitation for an endpoint on another host is answered
                // here; the rest of neighbour discovery and MLD goes to the bridge.
                Some((Path::SlowPathOther, _)) => tunnel::answer_neighbour_solicitation(ctx, iface, ifindex)
                    .unwrap_or((Path::SlowPathOther, TC_ACT_OK)),
                Some(verdict) => verdict,
                None => forward_v6(ctx, iface, ifindex),
            };
        }
        Frame::Other => {
            return tunnel::answer_arp(ctx, iface, ifindex).unwrap_or((Path::SlowPathOther, TC_ACT_OK));
        }
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
    // An error about a flow masqueraded out or published in leaves translated, as the
    // flow's packets do (to another container too: a hairpin connection's client).
    if frame.proto == IPPROTO_ICMP
        && iface.flags & InterfaceConfig::ROUTED_V4 == 0
        && let Some(verdict) = nat::icmp_error_out(ctx, &frame, ifindex)
    {
        return verdict;
    }
    // An endpoint of the sender's own network cannot lie in another network's subnet
    // (subnets never overlap), so a hit needs no policy lookup: the trie, the costliest
    // lookup here, is left to the traffic that misses.
    let in_subnet = iface.may_hold_v4(frame.dst);
    let endpoint = if in_subnet { endpoint::lookup(iface.network, IpAddress::v4(frame.dst)) } else { None };
    let Some(dst) = endpoint else {
        if in_subnet && let Some(remote) = tunnel::remote(iface.network, frame.dst) {
            return tunnel::send(ctx, iface, remote);
        }
        if iface.flags & InterfaceConfig::ISOLATED_V4 != 0 {
            return isolated::from_container_v4(ctx, &frame, &iface);
        }
        // A routed network's flows are tracked as masqueraded ones are, but leave as they
        // are: `routed::leave_host` takes the new ones.
        let routed = iface.flags & InterfaceConfig::ROUTED_V4 != 0;
        if let Some(verdict) = nat::established_out(ctx, &frame, ifindex, routed) {
            return verdict;
        }
        return match policy::check_v4(iface.network, frame.dst) {
            Verdict::OtherNetwork => (Path::DroppedIsolation, TC_ACT_SHOT),
            Verdict::Allow | Verdict::Outside => match match routed {
                false => nat::leave_host(ctx, &frame, &iface, ifindex),
                true => routed::leave_host(ctx, &frame, &iface, ifindex),
            } {
                Some(verdict) => diagnostics::left_host(verdict),
                // For the host itself: a published port there (hairpin), or the host's own.
                None => publish::hairpin(ctx, &frame, ifindex).unwrap_or((Path::SlowPathIp, TC_ACT_OK)),
            },
        };
    };
    to_peer(ctx, &iface, &dst)
}

/// IPv6 from a container whose source passed, unicast: each step is a subprogram called
/// from here, none from another (two frames of them together would pass the stack's 512
/// bytes).
#[inline(always)]
fn forward_v6(ctx: &TcContext, iface: &InterfaceConfig, ifindex: u32) -> (Path, i32) {
    None.or_else(|| match iface.flags & InterfaceConfig::PUBLISHES {
        0 => None,
        _ => publish6::reply(ctx, ifindex),
    })
    // An error about a flow masqueraded out or published in leaves translated, as the
    // flow's packets do (to another container too: a hairpin connection's client).
    .or_else(|| match iface.flags & InterfaceConfig::ROUTED_V6 == 0 && carries_icmpv6(ctx) {
        true => nat6::icmp_error_out(ctx, ifindex),
        false => None,
    })
    .or_else(|| to_peer_v6(ctx, iface))
    .or_else(|| isolated::from_container_v6(ctx, iface))
    .or_else(|| nat6::established_out(ctx, ifindex, iface.flags & InterfaceConfig::ROUTED_V6 != 0))
    .or_else(|| refused_v6(ctx, iface))
    // For an endpoint of an overlay network on another host: its solicitation (unicast,
    // to check that the neighbour is still there) answered here, the rest tunnelled.
    .or_else(|| tunnel::answer_neighbour_solicitation(ctx, iface, ifindex))
    .or_else(|| tunnel::send_v6(ctx, iface))
    .or_else(|| {
        nat6::leave_host(ctx, ifindex, iface.flags & InterfaceConfig::ROUTED_V6 != 0)
            .map(diagnostics::left_host)
    })
    // Behind extension headers: as it is from a routed network, not at all from a NAT66 one.
    .or_else(|| match carries_extension_headers(ctx) {
        true => {
            nat6::leave_behind_extension_headers(ctx, ifindex, iface.flags & InterfaceConfig::ROUTED_V6 != 0)
                .map(diagnostics::left_host)
        }
        false => None,
    })
    // ICMPv6 no flow tracks: as it is from a routed or unprotected network, not at all
    // from a NAT66 one.
    .or_else(|| routed::icmp_out(ctx, ifindex, iface.flags & InterfaceConfig::ICMP_OUT_V6 != 0))
    // For the host itself: a published port there (hairpin), or the host's own.
    .or_else(|| publish6::hairpin(ctx, ifindex))
    .unwrap_or((Path::SlowPathIp, TC_ACT_OK))
}

/// Whether an IPv6 packet's fixed header is followed by ICMPv6: one read of the linear
/// data, sparing the other packets a subprogram's call.
#[inline(always)]
fn carries_icmpv6(ctx: &TcContext) -> bool {
    packet::read_linear::<u8>(ctx, EthHdr::LEN + 6) == Some(IPPROTO_ICMPV6)
}

/// Whether an IPv6 packet's fixed header is followed by an extension header: as
/// `carries_icmpv6`.
#[inline(always)]
fn carries_extension_headers(ctx: &TcContext) -> bool {
    packet::read_linear::<u8>(ctx, EthHdr::LEN + 6).is_some_and(parse::is_extension_header)
}

/// Into the namespace of `dst`, an endpoint of the sender's network, unless the network
/// keeps its containers apart (`icc=false`).
#[inline(always)]
fn to_peer(ctx: &TcContext, iface: &InterfaceConfig, dst: &Endpoint) -> (Path, i32) {
    if iface.flags & InterfaceConfig::ICC_DISABLED != 0 {
        return (Path::DroppedIcc, TC_ACT_SHOT);
    }
    // The sender resolved the peer through ARP or neighbour discovery over the bridge, so
    // the destination MAC is normally right already; setting it keeps a stale neighbour
    // entry from black-holing. (Pointers from before a helper that may move the data are
    // stale: take it anew.)
    if let Some(eth) = parse::header_ptr::<EthHdr>(ctx, 0) {
        // SAFETY: header_ptr bounds-checked the Ethernet header.
        unsafe { (*eth).dst_addr = dst.mac };
    }
    // SAFETY: a plain helper call; it only records the target and flags.
    let action = unsafe { bpf_redirect_peer(dst.host_ifindex, 0) } as i32;
    counters::received(ctx, dst.counter_slot);
    (Path::Forwarded, action)
}

/// IPv6 from a container, first: its source and what its ICMPv6 claims are checked;
/// multicast (neighbour discovery, MLD) goes to the bridge. `None` for what passed, which
/// goes on: a reply on a published connection (`publish6`), the network (`to_peer_v6`),
/// NAT66, the host. Subprograms (`inline(never)`): their frames stay off the IPv4 paths'
/// stack.
#[inline(never)]
fn check_v6(ctx: &TcContext, iface: &InterfaceConfig) -> Option<(Path, i32)> {
    let Some(frame) = parse::parse_ipv6(ctx) else {
        return Some((Path::SlowPathMalformed, TC_ACT_OK));
    };
    let upper = parse::ipv6_upper_layer(ctx, &frame);
    if let Err(dropped) = source::check_ipv6(ctx, &frame, &upper, iface) {
        return Some((dropped, TC_ACT_SHOT));
    }
    if let UpperLayer::CutShort = upper {
        return Some((Path::SlowPathIpv6Headers, TC_ACT_OK));
    }
    (frame.dst[0] == 0xff).then_some((Path::SlowPathOther, TC_ACT_OK))
}

/// IPv6 from a container, checked: unicast to an endpoint of its network goes straight
/// into the peer's namespace. `None` for the rest: a tracked flow out of the uplink
/// (`nat6::established_out`), else `refused_v6`. As over IPv4, only a destination in the
/// network's subnet is looked up (`InterfaceConfig::may_hold_v6`).
#[inline(never)]
fn to_peer_v6(ctx: &TcContext, iface: &InterfaceConfig) -> Option<(Path, i32)> {
    let frame = parse::parse_ipv6(ctx)?;
    if !iface.may_hold_v6(&frame.dst) {
        return None;
    }
    let peer = endpoint::lookup(iface.network, IpAddress::v6(frame.dst))?;
    Some(to_peer(ctx, iface, &peer))
}

/// IPv6 from a container for no endpoint of its network nor a tracked flow: another
/// network's addresses are refused, and an `--internal` network's containers reach no
/// address outside the networks' subnets (the gateways included in those). `None` for
/// the rest: an endpoint on another host (the tunnel), what the host routes out of the
/// uplink (NAT66), what is for the gateway or the host (the bridge).
#[inline(never)]
fn refused_v6(ctx: &TcContext, iface: &InterfaceConfig) -> Option<(Path, i32)> {
    let frame = parse::parse_ipv6(ctx)?;
    match policy::check_v6(iface.network, frame.dst) {
        Verdict::OtherNetwork => Some((Path::DroppedIsolation, TC_ACT_SHOT)),
        Verdict::Outside if iface.flags & InterfaceConfig::INTERNAL != 0 => {
            Some((Path::DroppedInternal, TC_ACT_SHOT))
        }
        Verdict::Allow | Verdict::Outside => None,
    }
}

const _: () = assert!(TC_ACT_OK as i32 == 0 && TC_ACT_SHOT as i32 == 2);
