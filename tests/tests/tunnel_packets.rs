//! The tunnel's programs fed crafted frames through BPF_PROG_TEST_RUN (see `packets` for
//! the fixture): a frame for an endpoint of the sender's network on another host leaves
//! for the VXLAN device with the endpoint's MAC, ARP for one is answered from the table,
//! and `from_tunnel` drops what did not come through a tunnel.
//!
//! What these cannot see: the tunnel key itself (BPF_PROG_TEST_RUN hands back the frame,
//! not the skb's metadata), and `from_tunnel`'s delivery, which needs a key that only a
//! VXLAN device's receive path sets (`bpf_skb_get_tunnel_key` fails on any other skb).
//! The namespace tests in `overlay` cover both, with traffic between hosts.

use std::{net::Ipv4Addr, process::Command};

use dataplane::maps::endpoint_key;
use dataplane_common::{InterfaceConfig, Path, RemoteEndpoint, program_names};
use dataplane_tests::datapath::{
    A_MAC, ARP_REPLY, ARP_REQUEST, BLUE, Fixture, RED, STALE_MAC, TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT,
    arp, udp_frame,
};
use etherparse::SlicedPacket;

/// The remote endpoint C of red, on host 198.51.100.12, and its MAC.
const C: [u8; 4] = [10, 1, 0, 9];
const C_MAC: [u8; 6] = [2, 0x42, 10, 1, 0, 9];
const C_HOST: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 12);
const VNI: u32 = 4096;

/// The fixture with C in the remote endpoint table, and, with `device`, a VXLAN device in
/// external mode in the fixture's namespace that the programs tunnel through.
fn fixture(red_flags: u32, device: bool) -> Fixture {
    let mut fx = Fixture::new(red_flags);
    let remote = RemoteEndpoint { host: u32::from(C_HOST), vni: VNI, mac: C_MAC, _pad: [0; 2] };
    fx.datapath.set_remote_endpoint(endpoint_key(RED, Ipv4Addr::from(C).into()), remote).unwrap();
    // Blue's remote endpoint, which red must not reach.
    let blue = RemoteEndpoint { vni: VNI + 1, ..remote };
    fx.datapath.set_remote_endpoint(endpoint_key(BLUE, Ipv4Addr::new(10, 2, 0, 9).into()), blue).unwrap();
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
