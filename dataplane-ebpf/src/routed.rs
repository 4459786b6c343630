//! Routed mode's own paths, and what of the outside may reach a container's own IPv6
//! address through the uplink. A network in routed mode (`gateway_mode_ipv6=routed`,
//! where the outside routes its subnet to the host) lets in replies of its containers'
//! flows, which leave untranslated but tracked by NAT66's conntrack (`nat6::leave_host`),
//! and ICMPv6, as Docker's routed mode does; its published ports are `publish6`'s, asked
//! before; its containers' ICMPv6 that no flow tracks (echo replies, errors) leaves as it
//! is. Every other packet for a container address is dropped, on every network: a NAT66
//! network's containers are not reachable from outside, as over IPv4. It never
//! translates anything.

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    programs::TcContext,
};
use dataplane_common::{IPPROTO_ICMPV6, IpAddress, Path, SubnetInfo};

use crate::{
    endpoint,
    nat::{self, L4, Route},
    nat6,
    parse::{self, Ipv6Frame},
    policy,
};

/// IPv6 from the uplink for an address that no published port took: `None` when it is
/// no container's (the host's, a gateway, or outside every network), else the verdict.
/// `l4`: its ports, for TCP, UDP and echo replies.
#[inline(always)]
pub fn from_outside(ctx: &TcContext, frame: &Ipv6Frame, l4: Option<&L4>) -> Option<(Path, i32)> {
    let subnet = policy::container_subnet_v6(frame.dst)?;
    let unpublished = Some((Path::DroppedUnpublished, TC_ACT_SHOT as i32));
    if subnet.flags & SubnetInfo::ROUTED == 0 {
        return unpublished;
    }
    if let Some(l4) = l4
        && let Some(back) = nat::track_reply(&nat6::flow_key(frame, l4), l4)
    {
        return Some((Path::RoutedIn, nat6::into_container(ctx, back.host_ifindex, back.mac)));
    }
    // Docker's routed mode accepts every ICMP into the network: echo requests, and the
    // errors about its flows.
    if frame.next_header == IPPROTO_ICMPV6 {
        let Some(peer) = endpoint::lookup(subnet.network, IpAddress::v6(frame.dst)) else {
            // No container has the address: the host answers (address unreachable).
            return Some((Path::UplinkToHost, TC_ACT_OK as i32));
        };
        return Some((Path::RoutedIn, nat6::into_container(ctx, peer.host_ifindex, peer.mac)));
    }
    unpublished
}

/// ICMPv6 from a container of a routed network that `nat6::leave_host` did not take (no
/// echo request: echo replies to the outside's pings, errors), out of the uplink as it is
/// when the host routes it there: the host would not forward it without IPv6 forwarding
/// on. `None` for anything else. A subprogram of `from_container`'s, called from there.
#[inline(never)]
pub fn icmp_out(ctx: &TcContext, sender: u32) -> Option<(Path, i32)> {
    let cfg = nat::config()?;
    let frame = parse::parse_ipv6(ctx)?;
    if frame.next_header != IPPROTO_ICMPV6 {
        return None;
    }
    let (rc, fib) = nat::fib_route_v6(ctx, IPPROTO_ICMPV6, frame.src, frame.dst, sender);
    let Route::Uplink { next_hop } = nat::route_of(rc, &fib, Some(cfg), nat::now()) else {
        return None;
    };
    Some((Path::Routed, nat::send_to_uplink(ctx, next_hop.macs(), cfg)))
}
