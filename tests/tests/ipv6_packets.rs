//! IPv6 through `from_container`, fed crafted frames through BPF_PROG_TEST_RUN: same
//! network forwarding, isolation, `icc=false` and `--internal`, source validation and
//! neighbour advertisements, extension headers. The fixture's networks are dual-stack
//! (red fd00:1::/64 with A fd00:1::2 sending and B fd00:1::3; blue fd00:2::/64).

use dataplane_common::{InterfaceConfig, Path, eui64_link_local};
use dataplane_tests::datapath::{
    A_MAC, A6, B_MAC, B6, BLUE_ENDPOINT6, Fixture, LO, RED_GATEWAY6, STALE_MAC, TC_ACT_OK, TC_ACT_REDIRECT,
    TC_ACT_SHOT, ipv6_frame, neighbour_advertisement, red_interface, udp_between, udp_frame,
    udp6_between_macs, v6,
};
use etherparse::SlicedPacket;

const LINK_LOCAL_A: [u8; 16] = [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0x42, 0, 0, 0, 0, 0, 2];
const ALL_NODES: [u8; 16] = [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const DOCUMENTATION: [u8; 16] = [0x20, 1, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5];

fn from_a(src: [u8; 16], dst: [u8; 16]) -> Vec<u8> {
    udp6_between_macs((A_MAC, STALE_MAC), src, dst)
}

#[test]
fn ipv6_to_a_peer_of_the_network_is_redirected_with_the_peers_mac() {
    let mut fx = Fixture::new(0);
    let frame = from_a(A6, B6);
    let (verdict, out) = fx.run(&frame);
    assert_eq!(verdict, TC_ACT_REDIRECT, "IPv6 for a known endpoint was not redirected");
    let parsed = SlicedPacket::from_ethernet(&out).unwrap();
    let eth = parsed.link.unwrap().to_header().unwrap().ethernet2().unwrap();
    assert_eq!(eth.destination, B_MAC, "destination MAC was not rewritten to the endpoint's");
    assert_eq!(eth.source, A_MAC, "source MAC must stay the sender's");
    assert_eq!(&out[12..], &frame[12..], "the IPv6 packet must be untouched");
    assert_eq!(fx.count(Path::Forwarded), 1);
}

#[test]
fn ipv6_to_another_network_is_dropped_except_its_gateway() {
    let mut fx = Fixture::new(0);
    assert_eq!(fx.run(&from_a(A6, BLUE_ENDPOINT6)).0, TC_ACT_SHOT, "a red container reached blue's endpoint");
    assert_eq!(fx.run(&from_a(A6, v6(2, 0x77))).0, TC_ACT_SHOT, "a red container reached blue's subnet");
    assert_eq!(fx.count(Path::DroppedIsolation), 2);
    let to_blue_gateway = from_a(A6, v6(2, 1));
    let (verdict, out) = fx.run(&to_blue_gateway);
    assert_eq!(verdict, TC_ACT_OK, "another network's gateway is a host address, for the kernel");
    assert_eq!(out, to_blue_gateway, "a frame for the kernel must be unchanged");
}

#[test]
fn ipv6_for_the_gateway_an_unknown_peer_or_outside_goes_to_the_kernel_unchanged() {
    let mut fx = Fixture::new(0);
    for dst in [RED_GATEWAY6, v6(1, 0x99), DOCUMENTATION] {
        let frame = from_a(A6, dst);
        let (verdict, out) = fx.run(&frame);
        assert_eq!(verdict, TC_ACT_OK, "{dst:02x?} should go to the kernel");
        assert_eq!(out, frame, "slow-path frames must not be modified");
    }
    assert_eq!(fx.count(Path::SlowPathIp), 3);
    // Multicast (neighbour solicitations among it) crosses the bridge.
    let (verdict, _) = fx.run(&from_a(A6, ALL_NODES));
    assert_eq!((verdict, fx.count(Path::SlowPathOther)), (TC_ACT_OK, 1));
}

/// The network's IPv6 subnet holds all of its endpoints (as its IPv4 one does): an
/// address outside it is never looked up among them. Shown with an entry no daemon would
/// make, an endpoint of red's outside red's subnet: not reached; with the subnet unknown
/// (a zero mask), looked up and reached.
#[test]
fn ipv6_outside_the_networks_subnet_is_not_looked_up_among_its_endpoints() {
    let mut fx = Fixture::new(0);
    let outside = dataplane_common::Endpoint { host_ifindex: 42, mac: B_MAC, counter_slot: 0 };
    let key = dataplane::maps::endpoint_key(
        dataplane_tests::datapath::RED,
        std::net::Ipv6Addr::from(DOCUMENTATION).into(),
    );
    fx.datapath.set_endpoint(key, outside).unwrap();
    let frame = from_a(A6, DOCUMENTATION);
    let (verdict, out) = fx.run(&frame);
    assert_eq!(verdict, TC_ACT_OK, "an address outside red's subnet went to a peer");
    assert_eq!(out, frame, "a frame for the kernel must be unchanged");
    assert_eq!((fx.count(Path::SlowPathIp), fx.count(Path::Forwarded)), (1, 0));
    let unknown = InterfaceConfig { v6_subnet: [0; 16], v6_mask: [0; 16], ..red_interface(0) };
    fx.datapath.set_interface(LO, unknown).unwrap();
    let (verdict, out) = fx.run(&frame);
    assert_eq!(verdict, TC_ACT_REDIRECT, "with no subnet known, every address is looked up");
    assert_eq!(&out[..6], &B_MAC, "destination MAC was not rewritten to the endpoint's");
    assert_eq!(&out[12..], &frame[12..], "the IPv6 packet must be untouched");
    assert_eq!(fx.count(Path::Forwarded), 1);
}

#[test]
fn ipv6_inside_a_network_without_icc_is_dropped() {
    let mut fx = Fixture::new(InterfaceConfig::ICC_DISABLED);
    assert_eq!(fx.run(&from_a(A6, B6)).0, TC_ACT_SHOT, "icc=false let IPv6 through to a peer");
    assert_eq!(fx.count(Path::DroppedIcc), 1);
    assert_eq!(fx.count(Path::Forwarded), 0);
    assert_eq!(fx.run(&from_a(A6, RED_GATEWAY6)).0, TC_ACT_OK, "the gateway stays reachable");
}

#[test]
fn ipv6_from_an_internal_network_reaches_the_networks_but_not_outside() {
    let mut fx = Fixture::new(InterfaceConfig::INTERNAL);
    assert_eq!(fx.run(&from_a(A6, DOCUMENTATION)).0, TC_ACT_SHOT, "an --internal network's IPv6 left");
    assert_eq!(fx.count(Path::DroppedInternal), 1);
    assert_eq!(fx.run(&from_a(A6, RED_GATEWAY6)).0, TC_ACT_OK, "its gateway is reachable");
    assert_eq!(fx.run(&from_a(A6, B6)).0, TC_ACT_REDIRECT, "its peers are reachable");
}

#[test]
fn ipv6_from_a_source_not_the_containers_own_is_dropped_and_counted() {
    let mut fx = Fixture::new(0);
    for src in [B6, RED_GATEWAY6, DOCUMENTATION, v6(2, 2)] {
        assert_eq!(fx.run(&from_a(src, B6)).0, TC_ACT_SHOT, "IPv6 from {src:02x?} left A");
    }
    assert_eq!(fx.count(Path::DroppedSpoofedIpv6), 4);
    assert_eq!(fx.count(Path::Forwarded), 0);
    // Link-local and unspecified sources are a well-behaved host's own (neighbour
    // discovery, duplicate address detection).
    for src in [LINK_LOCAL_A, [0; 16]] {
        assert_eq!(fx.run(&from_a(src, ALL_NODES)).0, TC_ACT_OK, "IPv6 from {src:02x?} was refused");
    }
    assert_eq!(fx.count(Path::DroppedSpoofedIpv6), 4);
}

#[test]
fn on_a_network_without_ipv6_only_link_local_sources_pass() {
    let mut fx = Fixture::new(0);
    fx.datapath.set_interface(LO, InterfaceConfig { v6_addr: [0; 16], ..red_interface(0) }).unwrap();
    assert_eq!(fx.run(&from_a(A6, B6)).0, TC_ACT_SHOT, "a container without IPv6 sent from a global address");
    assert_eq!(fx.run(&from_a([0; 16], B6)).0, TC_ACT_SHOT, "unicast from the unspecified address left");
    assert_eq!(fx.count(Path::DroppedSpoofedIpv6), 2);
    assert_eq!(fx.run(&from_a([0; 16], ALL_NODES)).0, TC_ACT_OK, "duplicate address detection was refused");
    assert_eq!(fx.run(&from_a(LINK_LOCAL_A, ALL_NODES)).0, TC_ACT_OK);
}

/// A container of an IPv6-only network, as the daemon configures its interface: no IPv4
/// address (all zero) in a subnet that holds none (a full mask on 0.0.0.0).
#[test]
fn on_an_ipv6_only_network_ipv4_leaves_only_as_a_broadcast_from_nowhere() {
    let mut fx = Fixture::new(0);
    let ipv6_only =
        InterfaceConfig { v4_addr: [0; 4], v4_subnet: [0; 4], v4_mask: [255; 4], ..red_interface(0) };
    fx.datapath.set_interface(LO, ipv6_only).unwrap();
    for dst in [[10, 1, 0, 3], [192, 0, 2, 7]] {
        let frame = udp_frame(B_MAC, [0, 0, 0, 0], dst);
        assert_eq!(fx.run(&frame).0, TC_ACT_SHOT, "unicast IPv4 from 0.0.0.0 to {dst:?} left");
    }
    assert_eq!(fx.run(&udp_frame(B_MAC, [10, 1, 0, 2], [10, 1, 0, 3])).0, TC_ACT_SHOT, "a made-up IPv4 left");
    assert_eq!(fx.count(Path::DroppedSpoofedIp), 3);
    let dhcp = udp_frame([0xff; 6], [0, 0, 0, 0], [255, 255, 255, 255]);
    assert_eq!(fx.run(&dhcp).0, TC_ACT_OK, "a broadcast from 0.0.0.0 is the bridge's, as anywhere");
    assert_eq!(fx.run(&from_a(A6, B6)).0, TC_ACT_REDIRECT, "its IPv6 was not forwarded");
}

#[test]
fn neighbour_advertisements_for_an_address_not_the_containers_are_dropped() {
    let mut fx = Fixture::new(0);
    // A claims B's address, the gateway's, and another network's, each from its own.
    for target in [B6, RED_GATEWAY6, BLUE_ENDPOINT6] {
        let forged = neighbour_advertisement(A_MAC, A6, target);
        assert_eq!(fx.run(&forged).0, TC_ACT_SHOT, "an advertisement for {target:02x?} left A");
    }
    // From its link-local address too.
    assert_eq!(fx.run(&neighbour_advertisement(A_MAC, LINK_LOCAL_A, RED_GATEWAY6)).0, TC_ACT_SHOT);
    assert_eq!(fx.count(Path::DroppedSpoofedNeighbour), 4);
    // Nor the link-local address another MAC makes (B's).
    let b_link_local = eui64_link_local(B_MAC);
    assert_eq!(fx.run(&neighbour_advertisement(A_MAC, LINK_LOCAL_A, b_link_local)).0, TC_ACT_SHOT);
    assert_eq!(fx.count(Path::DroppedSpoofedNeighbour), 5);
    let own = neighbour_advertisement(A_MAC, A6, A6);
    let (verdict, out) = fx.run(&own);
    assert_eq!(verdict, TC_ACT_OK, "A's advertisement of its own address was refused");
    assert_eq!(out, own, "neighbour discovery goes to the bridge unchanged");
    // Its link-local address, the one the daemon made from its MAC, is its own too: the
    // gateway resolves it to answer A's probes.
    let a_link_local = eui64_link_local(A_MAC);
    let own = neighbour_advertisement(A_MAC, a_link_local, a_link_local);
    let (verdict, out) = fx.run(&own);
    assert_eq!(verdict, TC_ACT_OK, "A's advertisement of its link-local address was refused");
    assert_eq!(out, own);
}

#[test]
fn extension_headers_are_walked_and_what_is_cut_short_goes_to_the_kernel_counted() {
    const HOP_BY_HOP: u8 = 0;
    const UDP: u8 = 17;
    const ICMPV6: u8 = 58;
    let mut fx = Fixture::new(0);
    let macs = (A_MAC, STALE_MAC);
    // UDP behind a hop-by-hop header is still forwarded.
    let mut behind = vec![UDP, 0, 1, 4, 0, 0, 0, 0];
    behind.extend([0x0f, 0xa0, 0, 53, 0, 9, 0, 0, b'x']);
    assert_eq!(fx.run(&ipv6_frame(macs, A6, B6, HOP_BY_HOP, &behind)).0, TC_ACT_REDIRECT);
    // A hop-by-hop header that claims more bytes than the packet has.
    let cut = ipv6_frame(macs, A6, B6, HOP_BY_HOP, &[ICMPV6, 4, 1, 4]);
    let (verdict, out) = fx.run(&cut);
    assert_eq!(verdict, TC_ACT_OK, "a packet cut short inside its headers is the kernel's to drop");
    assert_eq!(out, cut);
    assert_eq!(fx.count(Path::SlowPathIpv6Headers), 1);
    // A neighbour advertisement for B behind the hop-by-hop header is seen.
    let mut hidden = vec![ICMPV6, 0, 1, 4, 0, 0, 0, 0, 136, 0, 0, 0, 0x60, 0, 0, 0];
    hidden.extend(B6);
    assert_eq!(fx.run(&ipv6_frame(macs, A6, ALL_NODES, HOP_BY_HOP, &hidden)).0, TC_ACT_SHOT);
    assert_eq!(fx.count(Path::DroppedSpoofedNeighbour), 1);
}

#[test]
fn ipv6_of_an_isolated_network_reaches_its_peers_and_its_resolver_and_nothing_else() {
    const UDP: u8 = 17;
    const TCP: u8 = 6;
    const ICMPV6: u8 = 58;
    let isolated = InterfaceConfig::INTERNAL | InterfaceConfig::ISOLATED_V6;
    let mut fx = Fixture::new(isolated);
    let macs = (A_MAC, STALE_MAC);
    let udp_to = |port: u16| [&[0x0f, 0xa0][..], &port.to_be_bytes(), &[0, 9, 0, 0, b'x']].concat();
    let tcp_syn_to = |port: u16| {
        let mut segment =
            [&[0x0f, 0xa1][..], &port.to_be_bytes(), &[0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02]].concat();
        segment.extend([0xff, 0xff, 0, 0, 0, 0]);
        segment
    };
    let solicitation = |target: [u8; 16]| [&[135, 0, 0, 0, 0, 0, 0, 0][..], &target].concat();
    let advertisement = [&[136, 0, 0, 0, 0x60, 0, 0, 0][..], &A6].concat();
    let link_local_host = [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];

    assert_eq!(fx.run(&from_a(A6, B6)).0, TC_ACT_REDIRECT, "a peer is forwarded");
    // The resolver on the gateway's address, and neighbour discovery with the host.
    let passed = [
        ipv6_frame(macs, A6, RED_GATEWAY6, UDP, &udp_to(53)),
        ipv6_frame(macs, A6, RED_GATEWAY6, TCP, &tcp_syn_to(53)),
        ipv6_frame(macs, A6, RED_GATEWAY6, ICMPV6, &solicitation(RED_GATEWAY6)),
        ipv6_frame(macs, A6, RED_GATEWAY6, ICMPV6, &advertisement),
        ipv6_frame(macs, LINK_LOCAL_A, link_local_host, ICMPV6, &solicitation(link_local_host)),
    ];
    for (i, frame) in passed.iter().enumerate() {
        let (verdict, out) = fx.run(frame);
        assert_eq!(verdict, TC_ACT_OK, "frame {i} did not go to the kernel");
        assert_eq!(&out, frame, "a frame for the kernel must be unchanged");
    }
    assert_eq!(fx.count(Path::SlowPathIp), passed.len() as u64);
    // The gateway's other ports and ICMPv6, the host's link-local address, another
    // network's gateway, the outside.
    let dropped = [
        ipv6_frame(macs, A6, RED_GATEWAY6, UDP, &udp_to(80)),
        ipv6_frame(macs, A6, RED_GATEWAY6, TCP, &tcp_syn_to(22)),
        ipv6_frame(macs, A6, RED_GATEWAY6, ICMPV6, &[128, 0, 0, 0, 0, 7, 0, 1]),
        ipv6_frame(macs, LINK_LOCAL_A, link_local_host, UDP, &udp_to(53)),
        from_a(A6, v6(2, 1)),
        from_a(A6, DOCUMENTATION),
    ];
    for (i, frame) in dropped.iter().enumerate() {
        assert_eq!(fx.run(frame).0, TC_ACT_SHOT, "frame {i} left an isolated network");
    }
    assert_eq!(fx.count(Path::DroppedIsolated), dropped.len() as u64);
    assert_eq!(fx.count(Path::DroppedInternal), 0);
    // The host's ping gets no answer; another network's containers stay another's.
    let echo_reply = ipv6_frame(macs, A6, RED_GATEWAY6, ICMPV6, &[129, 0, 0, 0, 0, 7, 0, 1]);
    assert_eq!(fx.run(&echo_reply).0, TC_ACT_SHOT, "an isolated container answered the host's ping");
    assert_eq!(fx.run(&from_a(A6, BLUE_ENDPOINT6)).0, TC_ACT_SHOT);
    assert_eq!(fx.count(Path::DroppedIsolation), 1);
    // Multicast crosses the bridge to the peers.
    assert_eq!(fx.run(&from_a(A6, ALL_NODES)).0, TC_ACT_OK);
    // IPv4 of the same container is not isolated (IPv6 alone is): its gateway (the host's
    // address, as on the network's bridge) takes every port.
    fx.enable_nat(40000, 40100);
    let gateway = std::process::Command::new("ip").args(["addr", "add", "10.1.0.1/32", "dev", "lo"]).status();
    assert!(gateway.unwrap().success(), "giving the fixture's namespace the gateway's address");
    let ipv4 = udp_between(STALE_MAC, ([10, 1, 0, 2], 4000), ([10, 1, 0, 1], 80));
    assert_eq!(fx.run(&ipv4).0, TC_ACT_OK, "IPv4 was isolated with IPv6");
}
