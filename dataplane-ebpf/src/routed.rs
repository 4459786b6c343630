//! Routed mode's own paths, and what of the outside may reach a container's own address
//! through the uplink. A network in routed mode (`gateway_mode_ipv4=routed`,
//! `gateway_mode_ipv6=routed`, where the outside routes its subnet to the host) lets in
//! replies of its containers' flows, which leave untranslated but tracked by the NAT's
//! conntrack with an identity translation (`leave_host`, `nat6::leave_host`), and ICMP,
//! as Docker's routed mode does; its published ports are `publish`'s and `publish6`'s,
//! asked before; its containers' ICMP that no flow tracks (echo replies, errors) leaves as
//! it is. A network in unprotected mode (`gateway_mode_ipv4=nat-unprotected`,
//! `gateway_mode_ipv6=nat-unprotected`) is masqueraded going out, and lets in every TCP
//! and UDP port of its containers' own addresses (`publish::direct`,
//! `publish6::direct`, tracked as ports published there) and ICMP. Every other packet for
//! a container address is dropped, on every network: a NAT network's containers are not
//! reachable from outside. It never translates anything.
//!
//! IPv4 from the uplink for a routed or unprotected network's container comes here through
//! a tail call (`from_uplink_routed`, owning UPLINK_ROUTED): `from_uplink`'s stack has no
//! room left, and its NAT paths stay as they were.

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    macros::map,
    maps::ProgramArray,
    programs::TcContext,
};
use dataplane_common::{
    IPPROTO_ICMP, IPPROTO_ICMPV6, InterfaceConfig, IpAddress, NatConfig, Path, SubnetInfo,
};

use crate::{
    endpoint,
    nat::{self, L4, Route, SnatRequest},
    nat6, packet,
    parse::{self, Frame, Ipv4Frame, Ipv6Frame},
    policy, publish, publish6, validate,
};

/// `from_uplink_routed` (slot `V4`), which `from_uplink` tail-calls for IPv4 to a container
/// address of a routed or unprotected network, and `from_uplink_routed_v6` (slot `V6`),
/// which `from_uplink_v6` tail-calls for TCP and UDP to one of an unprotected network, and
/// for what extension headers follow the fixed header of to either; the daemon puts them
/// there when it loads the uplink's programs.
#[map]
static UPLINK_ROUTED: ProgramArray = ProgramArray::pinned(2, 0);

/// The slots of `UPLINK_ROUTED`.
const V4: u32 = 0;
const V6: u32 = 1;

/// Continues in `from_uplink_routed`; returns only when it is not there.
#[inline(always)]
pub fn tail_call(ctx: &TcContext) {
    // SAFETY: a tail call replaces this program with the one in the slot, or fails.
    unsafe { UPLINK_ROUTED.tail_call(ctx, V4) };
}

/// IPv4 from the uplink for a container address of a routed or unprotected network that
/// no published port took (`from_uplink` asked them): replies of a routed container's
/// flows, every TCP and UDP port of an unprotected one, and ICMP go in, untranslated;
/// anything else is `DroppedUnpublished`.
#[inline(always)]
pub fn from_outside_v4(ctx: &TcContext) -> (Path, i32) {
    let unpublished = (Path::DroppedUnpublished, TC_ACT_SHOT as i32);
    let Frame::Ipv4(frame) = parse::parse(ctx) else {
        return unpublished;
    };
    let Some(subnet) = policy::container_subnet_v4(frame.dst) else {
        return unpublished;
    };
    if subnet.flags & SubnetInfo::REACHABLE == 0 {
        return unpublished;
    }
    let network = subnet.network;
    if subnet.flags & SubnetInfo::UNPROTECTED != 0 {
        // Every TCP and UDP port of the container's own address (its flows out are
        // masqueraded: no reply of theirs comes here).
        if frame.proto != IPPROTO_ICMP {
            return publish::direct(ctx, &frame, network).unwrap_or(unpublished);
        }
    } else if let Some(l4) = nat::l4(ctx, &frame, false)
        && let Some(back) = nat::track_reply(&nat::flow_key(&frame, &l4), &l4)
    {
        if let Some(cfg) = nat::config() {
            nat::clamp_mss(ctx, &frame, &l4, cfg.uplink_ifindex);
        }
        return (Path::RoutedIn, nat6::into_container(ctx, back.host_ifindex, back.mac));
    }
    // Docker's routed mode accepts every ICMP into the network: echo requests, and the
    // errors about its flows.
    if frame.proto == IPPROTO_ICMP {
        let Some(peer) = endpoint::lookup(network, IpAddress::v4(frame.dst)) else {
            // No container has the address: the host answers (host unreachable).
            return (Path::UplinkToHost, TC_ACT_OK as i32);
        };
        return (Path::RoutedIn, nat6::into_container(ctx, peer.host_ifindex, peer.mac));
    }
    unpublished
}

/// IPv4 from a container of a routed network (`InterfaceConfig::ROUTED_V4`) that no
/// endpoint of its network owns, bound outside: sent out of the uplink untranslated, its
/// flow tracked with itself as the translation so that its replies are let in; its ICMP
/// that no flow tracks (echo replies, errors) leaves as it is. `None` when it is for one
/// of the host's own addresses, as `nat::leave_host`, whose place it takes for such
/// containers (the NAT paths keep their code).
#[inline(never)]
pub fn leave_host(
    ctx: &TcContext,
    frame: &Ipv4Frame,
    iface: &InterfaceConfig,
    sender: u32,
) -> Option<(Path, i32)> {
    let cfg = nat::config();
    let now = nat::now();
    let route = nat::route(ctx, frame.proto, frame.src, frame.dst, sender, cfg, now);
    if let Route::Local = route {
        return None;
    }
    if iface.flags & InterfaceConfig::INTERNAL != 0 {
        return Some((Path::DroppedInternal, TC_ACT_SHOT as i32));
    }
    let (Some(cfg), Route::Uplink { next_hop }) = (cfg, route) else {
        return Some((Path::SlowPathIp, TC_ACT_OK as i32));
    };
    if !frame.translatable() {
        return Some((Path::SlowPathIp, TC_ACT_OK as i32));
    }
    let Some(l4) = nat::l4(ctx, frame, true) else {
        if !validate::well_formed(ctx, frame) {
            return Some((Path::DroppedMalformed, TC_ACT_SHOT as i32));
        }
        if frame.proto == IPPROTO_ICMP {
            return Some((Path::Routed, nat::send_to_uplink(ctx, next_hop.macs(), cfg)));
        }
        return Some((Path::SlowPathIp, TC_ACT_OK as i32));
    };
    let mac: [u8; 6] = packet::read(ctx, 6).unwrap_or_default();
    let Some(s) = nat::scratch() else {
        return Some((Path::SlowPathIp, TC_ACT_OK as i32));
    };
    s.key = nat::flow_key(frame, &l4);
    let request = SnatRequest {
        proto: frame.proto,
        l4: &l4,
        cfg,
        ipv6: false,
        routed: true,
        sender,
        mac,
        next_hop,
        now,
    };
    let Some(_) = nat::snat_port(s, &request) else {
        return Some((Path::DroppedNatExhausted, TC_ACT_SHOT as i32));
    };
    Some((Path::Routed, nat::send_to_uplink(ctx, next_hop.macs(), cfg)))
}

/// IPv6 from the uplink for an address that no published port took: `None` when it is
/// no container's (the host's, a gateway, or outside every network), else the verdict.
/// `l4`: its ports, for TCP, UDP and echo replies without extension headers.
#[inline(always)]
pub fn from_outside(ctx: &TcContext, frame: &Ipv6Frame, l4: Option<&L4>) -> Option<(Path, i32)> {
    let subnet = policy::container_subnet_v6(frame.dst)?;
    let unpublished = Some((Path::DroppedUnpublished, TC_ACT_SHOT as i32));
    if subnet.flags & SubnetInfo::REACHABLE == 0 {
        return unpublished;
    }
    if subnet.flags & SubnetInfo::UNPROTECTED != 0 {
        // Every TCP and UDP port of the container's own address, as over IPv4, in a
        // program of its own (`from_outside_v6`).
        if frame.next_header != IPPROTO_ICMPV6 {
            // SAFETY: a tail call replaces this program with the one in the slot, or fails.
            unsafe { UPLINK_ROUTED.tail_call(ctx, V6) };
            return unpublished;
        }
    } else if let Some(l4) = l4
        && let Some(back) = nat::track_reply(&nat6::flow_key(frame, l4), l4)
    {
        return Some((Path::RoutedIn, nat6::into_container(ctx, back.host_ifindex, back.mac)));
    }
    if frame.next_header == IPPROTO_ICMPV6 {
        return Some(icmp_in(ctx, frame, subnet.network));
    }
    // Behind extension headers: looked through in `from_outside_v6` too.
    if parse::is_extension_header(frame.next_header) {
        // SAFETY: as above.
        unsafe { UPLINK_ROUTED.tail_call(ctx, V6) };
    }
    unpublished
}

/// ICMPv6 from the uplink for a container address of a routed or unprotected network
/// (`network`'s): Docker's routed mode accepts every ICMP into the network, echo requests
/// and the errors about its flows.
#[inline(always)]
fn icmp_in(ctx: &TcContext, frame: &Ipv6Frame, network: u32) -> (Path, i32) {
    let Some(peer) = endpoint::lookup(network, IpAddress::v6(frame.dst)) else {
        // No container has the address: the host answers (address unreachable).
        return (Path::UplinkToHost, TC_ACT_OK as i32);
    };
    (Path::RoutedIn, nat6::into_container(ctx, peer.host_ifindex, peer.mac))
}

/// IPv6 from the uplink for a container address of a routed or unprotected network that
/// `from_outside` tail-called `from_uplink_routed_v6` for: an unprotected network's TCP
/// and UDP, every port open as if published on the container's own address
/// (`publish6::direct`); and either network's packets whose fixed header is followed by
/// extension headers. Those are walked to the upper layer (`parse::ipv6_upper_layer`),
/// which then goes where it would have gone without them: ICMPv6 in; a routed
/// container's published container ports, then its flows' replies; an unprotected one's
/// every TCP and UDP port. None of these translates anything (each keeps the addresses
/// and ports it came with), so nothing is written behind the walked offset. A fragment
/// after the first (no ports in it), a chain longer than is read or cut short is
/// `DroppedIpv6Headers`: nothing tells its flow, and the host would forward it
/// unchecked. Anything else is `DroppedUnpublished`.
#[inline(always)]
pub fn from_outside_v6(ctx: &TcContext) -> (Path, i32) {
    let unpublished = (Path::DroppedUnpublished, TC_ACT_SHOT as i32);
    let Some(frame) = parse::parse_ipv6(ctx) else {
        return unpublished;
    };
    let Some(subnet) =
        policy::container_subnet_v6(frame.dst).filter(|s| s.flags & SubnetInfo::REACHABLE != 0)
    else {
        return unpublished;
    };
    // The L4 view read in place straight behind the fixed header, through the helper
    // behind extension headers.
    let (frame, l4_offset, l4) = match parse::is_extension_header(frame.next_header) {
        false => {
            let l4 = nat::l4_at(ctx, nat6::L4_OFFSET, frame.next_header, IPPROTO_ICMPV6, false);
            (frame, nat6::L4_OFFSET, l4)
        }
        true => match parse::behind_extension_headers(ctx, &frame) {
            Some((upper, offset)) => {
                let l4 = nat::l4_walked(ctx, offset, upper.next_header, IPPROTO_ICMPV6, false);
                (upper, offset, l4)
            }
            None => return (Path::DroppedIpv6Headers, TC_ACT_SHOT as i32),
        },
    };
    if frame.next_header == IPPROTO_ICMPV6 {
        return icmp_in(ctx, &frame, subnet.network);
    }
    let Some(l4) = l4 else {
        return unpublished;
    };
    if subnet.flags & SubnetInfo::UNPROTECTED != 0 {
        return publish6::direct(ctx, &frame, &l4, l4_offset, subnet.network).unwrap_or(unpublished);
    }
    // A routed container's, behind extension headers: asked as `from_uplink_v6` asks
    // those without.
    if let Some(verdict) = publish6::own_port_behind_extension_headers(ctx, &frame, &l4, l4_offset) {
        return verdict;
    }
    match nat::track_reply(&nat6::flow_key(&frame, &l4), &l4) {
        Some(back) => (Path::RoutedIn, nat6::into_container(ctx, back.host_ifindex, back.mac)),
        None => unpublished,
    }
}

/// ICMPv6 from a container that `nat6::leave_host` did not take (no echo request: echo
/// replies to the outside's pings, errors about no tracked flow), bound out of the uplink:
/// from a routed or unprotected network (`as_is`) it leaves as it is (the host would not
/// forward it without IPv6 forwarding on); from a NAT66 network it is dropped
/// (`DroppedUntrackedIcmp`), as it would leave with the container's own address. `None`
/// for anything else, and without NAT66 for a NAT network's (the kernel's, as the rest of
/// its IPv6). A subprogram of `from_container`'s, called from there.
#[inline(never)]
pub fn icmp_out(ctx: &TcContext, sender: u32, as_is: bool) -> Option<(Path, i32)> {
    let cfg = nat::config()?;
    if !as_is && cfg.flags & NatConfig::IPV6 == 0 {
        return None;
    }
    let frame = parse::parse_ipv6(ctx)?;
    if frame.next_header != IPPROTO_ICMPV6 {
        return None;
    }
    let (rc, fib) = nat::fib_route_v6(ctx, IPPROTO_ICMPV6, frame.src, frame.dst, sender);
    let Route::Uplink { next_hop } = nat::route_of(rc, &fib, Some(cfg), nat::now()) else {
        return None;
    };
    if !as_is {
        return Some((Path::DroppedUntrackedIcmp, TC_ACT_SHOT as i32));
    }
    Some((Path::Routed, nat::send_to_uplink(ctx, next_hop.macs(), cfg)))
}
