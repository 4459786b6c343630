//! The tunnel's programs fed crafted frames through BPF_PROG_TEST_RUN (see `packets` for
//! the fixture): a frame for an endpoint of the sender's network on another host (IPv4
//! or IPv6) leaves for the VXLAN device with the endpoint's MAC, ARP and neighbour
//! solicitations for one are answered from the table, and `from_tunnel` drops what did
//! not come through a tunnel.
//!
//! What BPF_PROG_TEST_RUN cannot see: the tunnel key itself (it hands back the frame, not
//! the skb's metadata), and `from_tunnel`'s delivery, which needs a key that only a
//! VXLAN device's receive path sets (`bpf_skb_get_tunnel_key` fails on any other skb).
//! That the key was set shows there only in the path: `Tunnelled` is counted after the
//! helper took it, `DroppedTunnel` when it refused it. For the IPv6 underlay the key is
//! read back from the wire instead (`Wire`): a frame sent into a veth the programs are on
//! leaves the fixture's VXLAN device encapsulated, and what the device decapsulates
//! reaches `from_tunnel`. The namespace tests in `overlay` cover both underlays with
//! traffic between hosts.

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    process::Command,
};

use dataplane::maps::endpoint_key;
use dataplane_common::{
    InterfaceConfig, Path, RemoteEndpoint, TunnelConfig, program_names, tunnel_host_v4, tunnel_host_v6,
};
use dataplane_tests::datapath::{
    A_MAC, A6, ARP_REPLY, ARP_REQUEST, B_MAC, B6, BLUE, Fixture, RED, STALE_MAC, TC_ACT_OK, TC_ACT_REDIRECT,
    TC_ACT_SHOT, arp, ipv6_frame, red_interface, udp_between_macs, udp_frame, udp6_between_macs, v6,
};
use etherparse::{NetSlice, SlicedPacket, TransportSlice};

/// The remote endpoint C of red, on host 198.51.100.12, and its MAC.
const C: [u8; 4] = [10, 1, 0, 9];
const C_MAC: [u8; 6] = [2, 0x42, 10, 1, 0, 9];
const C_HOST: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 12);
const VNI: u32 = 4096;
/// C's IPv6 address (red is fd00:1::/64), and blue's remote endpoint's.
const C6: [u8; 16] = v6(1, 9);
const BLUE_REMOTE6: [u8; 16] = v6(2, 9);

/// C's host on an IPv6 underlay, this host's address there, and an address of no host.
const C_HOST6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 0x12);
const HOST6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 0x11);
const NO_HOST6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 0x77);

/// The fixture with C in the remote endpoint table, and, with `device`, a VXLAN device in
/// external mode in the fixture's namespace that the programs tunnel through.
fn fixture(red_flags: u32, device: bool) -> Fixture {
    fixture_on(red_flags, device.then_some(0), tunnel_host_v4(C_HOST.octets()))
}

/// The fixture as `fixture` with C's host at `c_host`, and, with `device_flags`, the VXLAN
/// device with those `TunnelConfig` flags.
fn fixture_on(red_flags: u32, device_flags: Option<u32>, c_host: [u32; 4]) -> Fixture {
    let mut fx = Fixture::new(red_flags);
    let remote = RemoteEndpoint { host: c_host, vni: VNI, mac: C_MAC, _pad: [0; 2] };
    fx.datapath.set_remote_endpoint(endpoint_key(RED, Ipv4Addr::from(C).into()), remote).unwrap();
    // Blue's remote endpoint, which red must not reach.
    let blue = RemoteEndpoint { vni: VNI + 1, ..remote };
    fx.datapath.set_remote_endpoint(endpoint_key(BLUE, Ipv4Addr::new(10, 2, 0, 9).into()), blue).unwrap();
    // C's IPv6 address, and blue's remote endpoint's.
    fx.datapath.set_remote_endpoint(endpoint_key(RED, Ipv6Addr::from(C6).into()), remote).unwrap();
    fx.datapath.set_remote_endpoint(endpoint_key(BLUE, Ipv6Addr::from(BLUE_REMOTE6).into()), blue).unwrap();
    if let Some(flags) = device_flags {
        let made = Command::new("ip")
            .args(["link", "add", "vx0", "type", "vxlan", "dstport", "4789", "external"])
            .status()
            .unwrap();
        assert!(made.success(), "making a VXLAN device in the fixture's namespace");
        let ifindex = nix::net::if_::if_nametoindex("vx0").unwrap();
        fx.datapath.attach_tunnel("vx0", TunnelConfig { ifindex, flags }).unwrap();
    }
    fx
}

/// The fixture over an IPv6 underlay: C's host at `C_HOST6`.
fn fixture_v6_underlay() -> Fixture {
    fixture_on(0, Some(TunnelConfig::IPV6_UNDERLAY), tunnel_host_v6(C_HOST6.octets()))
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

#[test]
fn over_an_ipv6_underlay_a_frame_for_a_remote_endpoint_leaves_for_the_vxlan_device_with_its_mac() {
    let mut fx = fixture_v6_underlay();
    for frame in [udp_frame(STALE_MAC, [10, 1, 0, 2], C), udp6_between_macs((A_MAC, STALE_MAC), A6, C6)] {
        let (verdict, out) = fx.run(&frame);
        assert_eq!(verdict, TC_ACT_REDIRECT, "a frame for a remote endpoint was not redirected");
        assert_eq!(&out[..6], &C_MAC, "destination MAC was not rewritten to the remote endpoint's");
        assert_eq!(&out[6..], &frame[6..], "the source MAC and the IP packet must be untouched");
    }
    assert_eq!(
        (fx.count(Path::Tunnelled), fx.count(Path::DroppedTunnel)),
        (2, 0),
        "the IPv6 tunnel keys were not all taken"
    );
}

/// Sends a frame into an interface of the caller's namespace (`argv[1]`, `argv[2]` in
/// hex) from a packet socket; with `argv[3]`, first listens on that interface and prints
/// (hex) the first VXLAN frame over IPv6 it then sees (UDP to 4789 right after a fixed
/// IPv6 header), for up to 3 s.
const SEND_AND_CAPTURE: &str = r#"
import socket, sys, time
iface, frame = sys.argv[1], bytes.fromhex(sys.argv[2])
listen = None
if len(sys.argv) > 3:
    listen = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
    listen.bind((sys.argv[3], 0))
    listen.settimeout(0.2)
out = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
out.bind((iface, 0))
out.send(frame)
if listen is None:
    sys.exit(0)
deadline = time.time() + 3
while time.time() < deadline:
    try:
        got = listen.recv(65535)
    except socket.timeout:
        continue
    if got[12:14] == b"\x86\xdd" and got[20] == 17 and got[56:58] == b"\x12\xb5":
        print(got.hex())
        sys.exit(0)
sys.exit("no VXLAN frame over IPv6 on the underlay")
"#;

/// This host's and C's host's MACs on the underlay veth pair.
const UL0_MAC: [u8; 6] = [2, 0, 0, 0, 1, 0x11];
const UL1_MAC: [u8; 6] = [2, 0, 0, 0, 1, 0x12];

/// Wires the fixture's namespace as a host on an IPv6 underlay: the VXLAN device up; a
/// veth `ul0` holding `HOST6` (and 192.0.2.11, an IPv4 address to be sent to over the
/// wrong family) whose peer `ul1` stands for the underlay, where `C_HOST6` is a permanent
/// neighbour; `ul0` computes UDP checksums itself (no offload), as they go on a wire.
/// And a veth pair `c0`/`c1` with `from_container` on `c1`'s ingress, as on a
/// container's host-side veth, with A's interface settings.
fn wire_ipv6_underlay(fx: &mut Fixture) {
    let script = "ip link set vx0 up \
        && ip link add ul0 address 02:00:00:00:01:11 type veth peer name ul1 address 02:00:00:00:01:12 \
        && ip addr add 2001:db8:100::11/64 dev ul0 nodad && ip addr add 192.0.2.11/24 dev ul0 \
        && ip link set ul0 up && ip link set ul1 up && ethtool -K ul0 tx off >/dev/null \
        && ip -6 neigh replace 2001:db8:100::12 lladdr 02:00:00:00:01:12 dev ul0 nud permanent \
        && ip link add c0 type veth peer name c1 && ip link set c0 up && ip link set c1 up \
        && tc qdisc add dev c1 clsact";
    let out = Command::new("sh").args(["-c", script]).output().unwrap();
    assert!(out.status.success(), "wiring the underlay: {}", String::from_utf8_lossy(&out.stderr));
    fx.datapath.attach("c1").unwrap();
    let c1 = nix::net::if_::if_nametoindex("c1").unwrap();
    fx.datapath.set_interface(c1, red_interface(0)).unwrap();
}

/// Runs `SEND_AND_CAPTURE`: `frame` into `iface`, and what `capture` then carried.
fn send(iface: &str, frame: &[u8], capture: Option<&str>) -> Vec<u8> {
    let hex: String = frame.iter().map(|b| format!("{b:02x}")).collect();
    let mut command = Command::new("python3");
    command.args(["-c", SEND_AND_CAPTURE, iface, &hex]).args(capture);
    let out = command.output().unwrap();
    assert!(out.status.success(), "sending into {iface}: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    (0..text.trim().len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap()).collect()
}

/// A VXLAN frame as C's host (or `outer_src`) sends it to this one over `ul1`: `inner`
/// under VNI `vni`, in UDP to 4789 with its checksum, over IPv6 or IPv4.
fn vxlan_from(outer_src: std::net::IpAddr, vni: u32, inner: &[u8]) -> Vec<u8> {
    let mut payload = vec![0x08, 0, 0, 0];
    payload.extend((vni << 8).to_be_bytes());
    payload.extend(inner);
    let builder = etherparse::PacketBuilder::ethernet2(UL1_MAC, UL0_MAC);
    let builder = match outer_src {
        std::net::IpAddr::V6(src) => builder.ipv6(src.octets(), HOST6.octets(), 64),
        std::net::IpAddr::V4(src) => builder.ipv4(src.octets(), [192, 0, 2, 11], 64),
    };
    let mut frame = vec![];
    builder.udp(40000, 4789).write(&mut frame, &payload).unwrap();
    frame
}

#[test]
fn over_an_ipv6_underlay_the_frame_leaves_for_the_remote_hosts_ipv6_address_with_a_udp_checksum() {
    let mut fx = fixture_v6_underlay();
    wire_ipv6_underlay(&mut fx);
    let frame = udp_frame(STALE_MAC, [10, 1, 0, 2], C);
    let wire = send("c0", &frame, Some("ul1"));
    assert_eq!(fx.count(Path::Tunnelled), 1, "the frame was not tunnelled");
    let packet = SlicedPacket::from_ethernet(&wire).expect("a parsable frame on the underlay");
    let eth = packet.link.unwrap().to_header().unwrap().ethernet2().unwrap();
    assert_eq!((eth.source, eth.destination), (UL0_MAC, UL1_MAC), "not sent from ul0 to C's host's MAC");
    let Some(NetSlice::Ipv6(ip)) = packet.net else { panic!("the outer header is not IPv6: {wire:02x?}") };
    let header = ip.header();
    assert_eq!(header.destination_addr(), C_HOST6, "the outer destination is not C's host");
    assert_eq!(header.source_addr(), HOST6, "the outer source is not this host's underlay address");
    assert_eq!(header.hop_limit(), 64, "the outer hop limit is not the tunnel's");
    let Some(TransportSlice::Udp(udp)) = packet.transport else { panic!("the outer packet is not UDP") };
    assert_eq!(udp.destination_port(), 4789, "not to VXLAN's port");
    assert_ne!(
        udp.checksum(),
        0,
        "the outer UDP checksum is zero over IPv6 (RFC 8200 forbids it unconfigured)"
    );
    let expected =
        udp.to_header().calc_checksum_ipv6_raw(HOST6.octets(), C_HOST6.octets(), udp.payload()).unwrap();
    assert_eq!(udp.checksum(), expected, "the outer UDP checksum is wrong");
    let vxlan = udp.payload();
    assert_eq!(vxlan[0], 0x08, "the VXLAN header does not say its VNI is valid");
    assert_eq!(u32::from_be_bytes([0, vxlan[4], vxlan[5], vxlan[6]]), VNI, "not under the network's VNI");
    let inner = &vxlan[8..];
    assert_eq!(&inner[..6], &C_MAC, "the inner frame is not for C's MAC");
    assert_eq!(&inner[6..], &frame[6..], "the inner frame is not the container's");
}

#[test]
fn over_an_ipv6_underlay_from_tunnel_takes_a_frame_from_the_endpoints_host_and_no_other() {
    let mut fx = fixture_v6_underlay();
    fx.datapath.set_tunnel_network(VNI, RED).unwrap();
    wire_ipv6_underlay(&mut fx);
    // C to B, a local endpoint of red.
    let inner = udp_between_macs((C_MAC, B_MAC), (C, 4000), ([10, 1, 0, 3], 53));
    let cases = [
        (vxlan_from(C_HOST6.into(), VNI, &inner), (1, 0), "from C's host"),
        (vxlan_from(NO_HOST6.into(), VNI, &inner), (1, 1), "from an address of no host"),
        (vxlan_from(Ipv4Addr::new(192, 0, 2, 12).into(), VNI, &inner), (1, 2), "over IPv4"),
    ];
    for (frame, counts, what) in cases {
        send("ul1", &frame, None);
        let mut counted = (0, 0);
        let arrived = dataplane_tests::eventually(std::time::Duration::from_secs(2), || {
            counted = (fx.count(Path::FromTunnel), fx.count(Path::DroppedTunnel));
            counted == counts
        });
        assert!(arrived, "a frame {what}: delivered and dropped are {counted:?}, not {counts:?}");
    }
}
