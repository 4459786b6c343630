//! The tunnel's programs fed crafted frames through BPF_PROG_TEST_RUN (see `packets` for
//! the fixture): a frame for an endpoint of the sender's network on another host (IPv4
//! or IPv6) leaves for the VXLAN device with the endpoint's MAC, ARP and neighbour
//! solicitations for one are answered from the table, and `from_tunnel` drops what did
//! not come through a tunnel.
//!
//! What these cannot see: the tunnel key itself (BPF_PROG_TEST_RUN hands back the frame,
//! not the skb's metadata), and `from_tunnel`'s delivery, which needs a key that only a
//! VXLAN device's receive path sets (`bpf_skb_get_tunnel_key` fails on any other skb).
//! The namespace tests in `overlay` cover both, with traffic between hosts (and frames
//! sent into a host's VXLAN device with a spoofed inner IPv6 source). That the key was
//! set shows here only in the path: `Tunnelled` is counted after the helper took it,
//! `DroppedTunnel` when it refused it.

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    process::Command,
};

use dataplane::maps::endpoint_key;
use dataplane_common::{InterfaceConfig, Path, RemoteEndpoint, program_names};
use dataplane_tests::datapath::{
    A_MAC, A6, ARP_REPLY, ARP_REQUEST, B6, BLUE, Fixture, RED, STALE_MAC, TC_ACT_OK, TC_ACT_REDIRECT,
    TC_ACT_SHOT, arp, ipv6_frame, udp_frame, udp6_between_macs, v6,
};
use etherparse::SlicedPacket;

/// The remote endpoint C of red, on host 198.51.100.12, and its MAC.
const C: [u8; 4] = [10, 1, 0, 9];
const C_MAC: [u8; 6] = [2, 0x42, 10, 1, 0, 9];
const C_HOST: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 12);
const VNI: u32 = 4096;
/// C's IPv6 address (red is fd00:1::/64), and blue's remote endpoint's.
const C6: [u8; 16] = v6(1, 9);
const BLUE_REMOTE6: [u8; 16] = v6(2, 9);

/// The fixture with C in the remote endpoint table, and, with `device`, a VXLAN device in
/// external mode in the fixture's namespace that the programs tunnel through.
fn fixture(red_flags: u32, device: bool) -> Fixture {
    let mut fx = Fixture::new(red_flags);
    let remote = RemoteEndpoint { host: u32::from(C_HOST), vni: VNI, mac: C_MAC, _pad: [0; 2] };
    fx.datapath.set_remote_endpoint(endpoint_key(RED, Ipv4Addr::from(C).into()), remote).unwrap();
    // Blue's remote endpoint, which red must not reach.
    let blue = RemoteEndpoint { vni: VNI + 1, ..remote };
    fx.datapath.set_remote_endpoint(endpoint_key(BLUE, Ipv4Addr::new(10, 2, 0, 9).into()), blue).unwrap();
    // C's IPv6 address, and blue's remote endpoint's.
    fx.datapath.set_remote_endpoint(endpoint_key(RED, Ipv6Addr::from(C6).into()), remote).unwrap();
    fx.datapath.set_remote_endpoint(endpoint_key(BLUE, Ipv6Addr::from(BLUE_REMOTE6).into()), blue).unwrap();
    if device {
        let made = Command::new("ip")
            .args(["link", "add", "vx0", "type", "vxlan", "dstport", "4789", "external"])
            .status()
            .unwrap();
        assert!(made.success(), "making a VXLAN device in the fixture's namespace");
        let index = nix::net::if_::if_nametoindex("vx0").unwrap();
        fx.datapath.attach_tunnel("vx0", index).unwrap();
    }
    fx
}

#[test]
fn frame_for_a_remote_endpoint_leaves_for_the_vxlan_device_with_its_mac() {
    let mut fx = fixture(0, true);
    let frame = udp_frame(STALE_MAC, [10, 1, 0, 2], C);
    let (verdict, out) = fx.run(&frame);
    assert_eq!(verdict, TC_ACT_REDIRECT, "a frame for a remote endpoint was not redirected");
    assert_eq!(fx.count(Path::Tunnelled), 1, "it was not counted as tunnelled (the tunnel key was refused?)");
    let parsed = SlicedPacket::from_ethernet(&out).unwrap();
    let eth = parsed.link.unwrap().to_header().unwrap().ethernet2().unwrap();
    assert_eq!(eth.destination, C_MAC, "destination MAC was not rewritten to the remote endpoint's");
    assert_eq!(eth.source, A_MAC, "source MAC must stay the sender's");
    assert_eq!(&out[14..], &frame[14..], "the IP packet must be untouched");
}

#[test]
fn without_a_vxlan_device_a_remote_endpoint_is_left_to_the_kernel() {
    let mut fx = fixture(0, false);
    let frame = udp_frame(STALE_MAC, [10, 1, 0, 2], C);
    let (verdict, out) = fx.run(&frame);
    assert_eq!((verdict, out), (TC_ACT_OK, frame), "no device: the kernel's, untouched");
    assert_eq!(fx.count(Path::Tunnelled), 0);
}

#[test]
fn icc_disabled_keeps_a_remote_endpoint_apart_too() {
    let mut fx = fixture(InterfaceConfig::ICC_DISABLED, true);
    let (verdict, _) = fx.run(&udp_frame(C_MAC, [10, 1, 0, 2], C));
    assert_eq!(verdict, TC_ACT_SHOT, "icc=false let a frame through the tunnel");
    assert_eq!(fx.count(Path::DroppedIcc), 1);
}

#[test]
fn another_networks_remote_endpoint_is_dropped_as_isolation() {
    let mut fx = fixture(0, true);
    let (verdict, _) = fx.run(&udp_frame(C_MAC, [10, 1, 0, 2], [10, 2, 0, 9]));
    assert_eq!(verdict, TC_ACT_SHOT, "red reached blue's endpoint on another host");
    assert_eq!((fx.count(Path::DroppedIsolation), fx.count(Path::Tunnelled)), (1, 0));
}

#[test]
fn arp_for_a_remote_endpoint_is_answered_back_into_the_container() {
    let mut fx = fixture(0, true);
    let request = arp(A_MAC, ARP_REQUEST, (A_MAC, [10, 1, 0, 2]), C);
    let (verdict, out) = fx.run(&request);
    assert_eq!(verdict, TC_ACT_REDIRECT, "the request was not answered");
    assert_eq!(fx.count(Path::ArpAnswered), 1);
    assert_eq!(out.len(), request.len(), "the reply has the request's length");
    assert_eq!(&out[0..6], &A_MAC, "the reply goes to the asker");
    assert_eq!(&out[6..12], &C_MAC, "the reply comes from the remote endpoint's MAC");
    assert_eq!(&out[12..20], &request[12..20], "ether type and ARP's hardware and protocol fields stay");
    assert_eq!(u16::from_be_bytes([out[20], out[21]]), ARP_REPLY, "operation was not set to reply");
    assert_eq!((&out[22..28], &out[28..32]), (&C_MAC[..], &C[..]), "sender: the remote endpoint");
    assert_eq!((&out[32..38], &out[38..42]), (&A_MAC[..], &[10, 1, 0, 2][..]), "target: the asker");
}

#[test]
fn arp_for_a_local_endpoint_or_another_network_is_left_to_the_bridge() {
    let mut fx = fixture(0, true);
    for target in [[10, 1, 0, 3], [10, 2, 0, 9], [10, 1, 0, 77]] {
        let request = arp(A_MAC, ARP_REQUEST, (A_MAC, [10, 1, 0, 2]), target);
        let (verdict, out) = fx.run(&request);
        assert_eq!(
            (verdict, out),
            (TC_ACT_OK, request),
            "ARP for {target:?} must go to the bridge untouched"
        );
    }
    // A reply the container sends is no question to answer.
    let reply = arp(A_MAC, ARP_REPLY, (A_MAC, [10, 1, 0, 2]), C);
    assert_eq!(fx.run(&reply).0, TC_ACT_OK);
    assert_eq!(fx.count(Path::ArpAnswered), 0);
}

#[test]
fn from_tunnel_drops_a_frame_that_came_through_no_tunnel() {
    let mut fx = fixture(0, true);
    let frame = udp_frame([2, 0x42, 10, 1, 0, 3], C, [10, 1, 0, 3]);
    let (verdict, _) = fx.try_run(program_names::FROM_TUNNEL, &frame).unwrap();
    assert_eq!(verdict, TC_ACT_SHOT, "a frame without tunnel metadata was delivered");
    assert_eq!(fx.count(Path::DroppedTunnel), 1);
}

#[test]
fn ipv6_frame_for_a_remote_endpoint_leaves_for_the_vxlan_device_with_its_mac() {
    let mut fx = fixture(0, true);
    let frame = udp6_between_macs((A_MAC, STALE_MAC), A6, C6);
    let (verdict, out) = fx.run(&frame);
    assert_eq!(verdict, TC_ACT_REDIRECT, "an IPv6 frame for a remote endpoint was not redirected");
    assert_eq!(fx.count(Path::Tunnelled), 1, "it was not counted as tunnelled (the tunnel key was refused?)");
    assert_eq!(fx.count(Path::DroppedTunnel), 0);
    let parsed = SlicedPacket::from_ethernet(&out).unwrap();
    let eth = parsed.link.unwrap().to_header().unwrap().ethernet2().unwrap();
    assert_eq!(eth.destination, C_MAC, "destination MAC was not rewritten to the remote endpoint's");
    assert_eq!(eth.source, A_MAC, "source MAC must stay the sender's");
    assert_eq!(&out[12..], &frame[12..], "ether type and the IPv6 packet must be untouched");
}

#[test]
fn ipv6_to_a_remote_endpoint_is_dropped_for_a_spoofed_source_icc_or_another_network() {
    let mut fx = fixture(0, true);
    let spoofed = udp6_between_macs((A_MAC, C_MAC), v6(1, 77), C6);
    assert_eq!(fx.run(&spoofed).0, TC_ACT_SHOT, "a spoofed IPv6 source went through the tunnel");
    assert_eq!(fx.count(Path::DroppedSpoofedIpv6), 1);
    let other = udp6_between_macs((A_MAC, C_MAC), A6, BLUE_REMOTE6);
    assert_eq!(fx.run(&other).0, TC_ACT_SHOT, "red reached blue's IPv6 endpoint on another host");
    assert_eq!(fx.count(Path::DroppedIsolation), 1);
    assert_eq!(fx.count(Path::Tunnelled), 0);
    let mut fx = fixture(InterfaceConfig::ICC_DISABLED, true);
    let (verdict, _) = fx.run(&udp6_between_macs((A_MAC, C_MAC), A6, C6));
    assert_eq!(verdict, TC_ACT_SHOT, "icc=false let an IPv6 frame through the tunnel");
    assert_eq!((fx.count(Path::DroppedIcc), fx.count(Path::Tunnelled)), (1, 0));
}

const ICMPV6: u8 = 58;
/// The solicited-node multicast address of `target`, and its MAC.
fn solicited_node(target: [u8; 16]) -> ([u8; 16], [u8; 6]) {
    let ip = [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, target[13], target[14], target[15]];
    (ip, [0x33, 0x33, 0xff, target[13], target[14], target[15]])
}

/// A's neighbour solicitation for `target` to `dst` (hop limit 255), from `src`, with A's
/// link-layer address as its option when `option`.
fn solicitation(src: [u8; 16], dst: ([u8; 16], [u8; 6]), target: [u8; 16], option: bool) -> Vec<u8> {
    let mut message = vec![135, 0, 0, 0, 0, 0, 0, 0];
    message.extend(target);
    if option {
        message.extend([1, 1]);
        message.extend(A_MAC);
    }
    let checksum = icmpv6_checksum(src, dst.0, &message);
    message[2..4].copy_from_slice(&checksum.to_be_bytes());
    let mut frame = ipv6_frame((A_MAC, dst.1), src, dst.0, ICMPV6, &message);
    frame[21] = 255;
    frame
}

/// The ICMPv6 checksum of `message` (its checksum field zero) from `src` to `dst`.
fn icmpv6_checksum(src: [u8; 16], dst: [u8; 16], message: &[u8]) -> u16 {
    let mut bytes = src.to_vec();
    bytes.extend(dst);
    bytes.extend((message.len() as u32).to_be_bytes());
    bytes.extend([0, 0, 0, ICMPV6]);
    bytes.extend(message);
    let mut sum: u32 =
        bytes.chunks(2).map(|w| u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)]))).sum();
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[test]
fn a_neighbour_solicitation_for_a_remote_endpoint_is_answered_back_into_the_container() {
    // Address resolution (to the solicited-node group) and a reachability check (unicast).
    for dst in [solicited_node(C6), (C6, STALE_MAC)] {
        let mut fx = fixture(0, true);
        let request = solicitation(A6, dst, C6, true);
        let (verdict, out) = fx.run(&request);
        assert_eq!(
            verdict,
            TC_ACT_REDIRECT,
            "the solicitation to {:?} was not answered",
            Ipv6Addr::from(dst.0)
        );
        assert_eq!(fx.count(Path::ArpAnswered), 1, "not counted as answered");
        assert_eq!(fx.count(Path::Tunnelled), 0, "the solicitation crossed the tunnel");
        assert_eq!(out.len(), 86, "an advertisement with its one option is 86 bytes");
        assert_eq!(&out[0..6], &A_MAC, "the advertisement goes to the asker's MAC");
        assert_eq!(&out[6..12], &C_MAC, "the advertisement comes from the remote endpoint's MAC");
        assert_eq!(&out[12..14], &[0x86, 0xdd], "ether type");
        assert_eq!(&out[14..18], &request[14..18], "version, traffic class and flow label stay");
        assert_eq!(u16::from_be_bytes([out[18], out[19]]), 32, "payload length");
        assert_eq!((out[20], out[21]), (ICMPV6, 255), "next header ICMPv6, hop limit 255");
        assert_eq!(&out[22..38], &C6, "source: the remote endpoint's address");
        assert_eq!(&out[38..54], &A6, "destination: the asker's address");
        let message = &out[54..86];
        assert_eq!((message[0], message[1]), (136, 0), "type neighbour advertisement, code 0");
        assert_eq!(&message[4..8], &[0x60, 0, 0, 0], "flags: solicited and override, not a router");
        assert_eq!(&message[8..24], &C6, "target: the remote endpoint's address");
        assert_eq!(&message[24..26], &[2, 1], "option: target link-layer address, one unit");
        assert_eq!(&message[26..32], &C_MAC, "the option carries the remote endpoint's MAC");
        let mut zeroed = message.to_vec();
        zeroed[2..4].fill(0);
        assert_eq!(
            u16::from_be_bytes([message[2], message[3]]),
            icmpv6_checksum(C6, A6, &zeroed),
            "the ICMPv6 checksum is wrong"
        );
    }
}

#[test]
fn solicitations_for_local_unknown_or_other_networks_addresses_and_probes_go_to_the_bridge() {
    let mut fx = fixture(0, true);
    let unspecified = [0; 16];
    let cases = [
        (solicitation(A6, solicited_node(B6), B6, true), "a local endpoint"),
        (solicitation(A6, solicited_node(v6(1, 77)), v6(1, 77), true), "an unknown address"),
        (solicitation(A6, solicited_node(BLUE_REMOTE6), BLUE_REMOTE6, true), "blue's remote endpoint"),
        (solicitation(unspecified, solicited_node(C6), C6, false), "a duplicate address probe"),
        (solicitation(A6, solicited_node(C6), C6, false), "a solicitation without its option"),
    ];
    for (request, what) in cases {
        let (verdict, out) = fx.run(&request);
        assert_eq!(
            (verdict, out),
            (TC_ACT_OK, request),
            "the solicitation for {what} must go to the bridge untouched"
        );
    }
    let mut low_hop_limit = solicitation(A6, solicited_node(C6), C6, true);
    low_hop_limit[21] = 64;
    assert_eq!(fx.run(&low_hop_limit), (TC_ACT_OK, low_hop_limit), "a routed solicitation is no valid one");
    assert_eq!(fx.count(Path::ArpAnswered), 0);
}

#[test]
fn from_tunnel_drops_an_ipv6_frame_that_came_through_no_tunnel() {
    let mut fx = fixture(0, true);
    let frame = udp6_between_macs((C_MAC, A_MAC), C6, A6);
    let (verdict, _) = fx.try_run(program_names::FROM_TUNNEL, &frame).unwrap();
    assert_eq!(verdict, TC_ACT_SHOT, "an IPv6 frame without tunnel metadata was delivered");
    assert_eq!((fx.count(Path::DroppedTunnel), fx.count(Path::FromTunnel)), (1, 0));
}
