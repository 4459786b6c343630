//! NAT66 through BPF_PROG_TEST_RUN: IPv6 from a container to outside leaves by the uplink
//! with the uplink's IPv6 address and a port of the NAT range, and its replies and ICMPv6
//! errors (packet too big) come back into the container, every rewritten field and
//! checksum checked. The fixture's uplink holds 2001:db8:71::1 (`UPLINK_ADDR6`); A sends
//! from fd00:1::2.

use dataplane_common::{IpAddress, NatConfig, Path, ct_state};
use dataplane_tests::datapath::{
    A_MAC, A6, Fixture, GATEWAY_MAC, PseudoHeader, Seen, TC_ACT_OK, TC_ACT_REDIRECT, UPLINK_ADDR,
    UPLINK_ADDR6, UPLINK_MAC, checked_ports,
};
use etherparse::{Icmpv6Type, PacketBuilder, SlicedPacket, TransportSlice};

const REMOTE6: [u8; 16] = [0x20, 1, 0x0d, 0xb8, 0, 0x99, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7];
const ROUTER6: [u8; 16] = [0x20, 1, 0x0d, 0xb8, 0, 0x71, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

/// A TCP segment (`syn`, `ack`) between two IPv6 address/port pairs.
fn tcp6(src_mac: [u8; 6], src: ([u8; 16], u16), dst: ([u8; 16], u16), syn: bool, ack: bool) -> Vec<u8> {
    let b =
        PacketBuilder::ethernet2(src_mac, UPLINK_MAC).ipv6(src.0, dst.0, 64).tcp(src.1, dst.1, 1000, 64000);
    let b = match (syn, ack) {
        (true, true) => b.syn().ack(1),
        (true, false) => b.syn(),
        (false, true) => b.ack(1),
        (false, false) => b,
    };
    let mut frame = vec![];
    b.write(&mut frame, b"payload!").unwrap();
    frame
}

fn udp6(src_mac: [u8; 6], src: ([u8; 16], u16), dst: ([u8; 16], u16)) -> Vec<u8> {
    let mut frame = vec![];
    PacketBuilder::ethernet2(src_mac, UPLINK_MAC)
        .ipv6(src.0, dst.0, 64)
        .udp(src.1, dst.1)
        .write(&mut frame, b"query")
        .unwrap();
    frame
}

fn echo6(src_mac: [u8; 6], src: [u8; 16], dst: [u8; 16], id: u16, reply: bool) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(src_mac, UPLINK_MAC).ipv6(src, dst, 64);
    let b = if reply { b.icmpv6_echo_reply(id, 1) } else { b.icmpv6_echo_request(id, 1) };
    let mut frame = vec![];
    b.write(&mut frame, b"ping").unwrap();
    frame
}

/// The parsed frame, its L4 (or ICMPv6) checksum verified against a recomputation.
fn inspect(frame: &[u8]) -> Seen<[u8; 16]> {
    let packet = SlicedPacket::from_ethernet(frame).expect("a parsable frame");
    let eth = packet.link.unwrap().to_header().unwrap().ethernet2().unwrap();
    let Some(etherparse::NetSlice::Ipv6(ip)) = packet.net else { panic!("not IPv6") };
    let header = ip.header().to_header();
    let transport = packet.transport.unwrap();
    let ports = checked_ports(&transport, PseudoHeader::V6(&header));
    let ports = ports.unwrap_or_else(|| match transport {
        TransportSlice::Icmpv6(icmp) => {
            let expected = icmp
                .header()
                .icmp_type
                .calc_checksum(header.source, header.destination, icmp.payload())
                .unwrap();
            assert_eq!(icmp.checksum(), expected, "ICMPv6 checksum is wrong");
            match icmp.header().icmp_type {
                Icmpv6Type::EchoRequest(e) | Icmpv6Type::EchoReply(e) => (e.id, e.id),
                _ => (0, 0),
            }
        }
        other => panic!("unexpected transport {other:?}"),
    });
    Seen::new(&eth, header.source, header.destination, ports)
}

/// A NAT66 fixture: the uplink with its IPv6 address, ports 61000-61999.
fn nat66() -> Fixture {
    let mut fx = Fixture::new(0);
    fx.enable_nat(61000, 61999);
    fx
}

/// Asserts what every masqueraded frame shows: the uplink's address and a port of the
/// range as source, the destination unchanged, the next hop's MACs.
fn assert_masqueraded(seen: &Seen<[u8; 16]>, dst: ([u8; 16], u16)) {
    assert_eq!(seen.src, UPLINK_ADDR6, "src IPv6 was not translated to the uplink's address");
    assert!((61000..=61999).contains(&seen.sport), "src port {} outside the NAT range", seen.sport);
    assert_eq!((seen.dst, seen.dport), dst, "the destination must not change");
    assert_eq!(seen.eth_dst, GATEWAY_MAC, "destination MAC must be the next hop's (FIB)");
    assert_eq!(seen.eth_src, UPLINK_MAC, "source MAC must be the uplink's");
}

#[test]
fn tcp_over_ipv6_leaves_as_the_uplinks_address_and_its_reply_comes_back_to_the_container() {
    let mut fx = nat66();
    let (verdict, out) = fx.run(&tcp6(A_MAC, (A6, 40000), (REMOTE6, 80), true, false));
    assert_eq!(verdict, TC_ACT_REDIRECT, "a SYN to the outside was not sent to the uplink");
    let seen = inspect(&out);
    assert_masqueraded(&seen, (REMOTE6, 80));
    assert_eq!(fx.count(Path::Masqueraded), 1);
    let flows = fx.datapath.conntrack_unconfirmed().unwrap();
    assert_eq!(flows.len(), 1, "the flow was not tracked");
    assert_eq!(flows[0].0.src, IpAddress::v6(A6), "flow key source");
    assert_eq!(flows[0].1.nat_addr, IpAddress::v6(UPLINK_ADDR6), "flow's translated address");
    assert_eq!(flows[0].1.nat_port, seen.sport.to_be(), "flow's translated port");

    let (verdict, back) =
        fx.run_uplink(&tcp6(GATEWAY_MAC, (REMOTE6, 80), (UPLINK_ADDR6, seen.sport), true, true));
    assert_eq!(verdict, TC_ACT_REDIRECT, "the reply was not sent back into the container");
    let back = inspect(&back);
    assert_eq!(back.dst, A6, "dst IPv6 was not translated back");
    assert_eq!(back.dport, 40000, "dst port was not restored");
    assert_eq!((back.src, back.sport), (REMOTE6, 80), "the source must not change");
    assert_eq!(back.eth_dst, A_MAC, "the reply must go to the container's MAC");
    assert_eq!(fx.count(Path::ReverseNat), 1);
    assert_eq!(
        fx.datapath.conntrack_unconfirmed().unwrap()[0].1.state,
        ct_state::ESTABLISHED,
        "the reply was not recorded"
    );

    // The container's ACK confirms the flow and keeps its port; so do later segments.
    for _ in 0..2 {
        let (verdict, again) = fx.run(&tcp6(A_MAC, (A6, 40000), (REMOTE6, 80), false, true));
        assert_eq!(verdict, TC_ACT_REDIRECT);
        let again = inspect(&again);
        assert_masqueraded(&again, (REMOTE6, 80));
        assert_eq!(again.sport, seen.sport, "the flow changed its port");
    }
    assert_eq!(fx.datapath.conntrack().unwrap().len(), 1, "the ACK did not confirm the flow");
}

#[test]
fn udp_and_icmpv6_echo_over_ipv6_are_masqueraded_both_ways_and_only_with_an_ipv6_uplink() {
    let mut fx = nat66();
    let (verdict, out) = fx.run(&udp6(A_MAC, (A6, 5353), (REMOTE6, 53)));
    assert_eq!(verdict, TC_ACT_REDIRECT);
    let seen = inspect(&out);
    assert_masqueraded(&seen, (REMOTE6, 53));
    let (verdict, back) = fx.run_uplink(&udp6(GATEWAY_MAC, (REMOTE6, 53), (UPLINK_ADDR6, seen.sport)));
    assert_eq!(verdict, TC_ACT_REDIRECT);
    let back = inspect(&back);
    assert_eq!((back.dst, back.dport, back.eth_dst), (A6, 5353, A_MAC), "UDP reply not translated back");

    let (verdict, out) = fx.run(&echo6(A_MAC, A6, REMOTE6, 777, false));
    assert_eq!(verdict, TC_ACT_REDIRECT, "the echo request was not sent to the uplink");
    let seen = inspect(&out);
    assert_eq!(seen.src, UPLINK_ADDR6, "ping source was not translated");
    assert!((61000..=61999).contains(&seen.sport), "echo id {} not from the range", seen.sport);
    assert_eq!((seen.dst, seen.eth_dst), (REMOTE6, GATEWAY_MAC));
    let (verdict, back) = fx.run_uplink(&echo6(GATEWAY_MAC, REMOTE6, UPLINK_ADDR6, seen.sport, true));
    assert_eq!(verdict, TC_ACT_REDIRECT, "the echo reply was not sent back");
    let back = inspect(&back);
    assert_eq!(
        (back.dst, back.sport, back.eth_dst),
        (A6, 777, A_MAC),
        "echo reply id or address was not restored"
    );
    assert_eq!(fx.count(Path::ReverseNat), 2);

    // Once the uplink has no IPv6 address, IPv6 goes to the kernel untranslated, while
    // IPv4 is still masqueraded.
    let uplink_ifindex = nix::net::if_::if_nametoindex("up0").unwrap();
    let ipv4_only = NatConfig {
        uplink_ifindex,
        port_min: 61000,
        port_max: 61999,
        addr: UPLINK_ADDR,
        ..NatConfig::default()
    };
    fx.datapath.set_nat_config(ipv4_only).unwrap();
    let frame = udp6(A_MAC, (A6, 5001), (REMOTE6, 53));
    let (verdict, out) = fx.run(&frame);
    assert_eq!((verdict, out), (TC_ACT_OK, frame), "IPv6 must go to the kernel unchanged");
    assert_eq!(fx.count(Path::Masqueraded), 2);
    let mut v4 = vec![];
    PacketBuilder::ethernet2(A_MAC, UPLINK_MAC)
        .ipv4([10, 1, 0, 2], [198, 51, 100, 7], 64)
        .udp(5000, 53)
        .write(&mut v4, b"q")
        .unwrap();
    let (verdict, out) = fx.run(&v4);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!(&out[14 + 12..14 + 16], &UPLINK_ADDR, "IPv4 was not masqueraded");
}

/// A router's ICMPv6 error of `kind` from ROUTER6 to the uplink, quoting `left` (a frame
/// as it left) from its IPv6 header on.
fn icmp6_error(kind: Icmpv6Type, left: &[u8]) -> Vec<u8> {
    let mut frame = vec![];
    PacketBuilder::ethernet2(GATEWAY_MAC, UPLINK_MAC)
        .ipv6(ROUTER6, UPLINK_ADDR6, 64)
        .icmpv6(kind)
        .write(&mut frame, &left[14..])
        .unwrap();
    frame
}

/// The quoted packet of an ICMPv6 error: its header, its upper layer's bytes.
fn quoted(frame: &[u8]) -> (etherparse::Ipv6Header, Vec<u8>, Icmpv6Type) {
    let packet = SlicedPacket::from_ethernet(frame).unwrap();
    let Some(TransportSlice::Icmpv6(icmp)) = packet.transport else { panic!("not ICMPv6") };
    let (inner, rest) = etherparse::Ipv6Header::from_slice(icmp.payload()).unwrap();
    (inner, rest.to_vec(), icmp.header().icmp_type)
}

#[test]
fn packet_too_big_about_a_masqueraded_udp_flow_reaches_the_container_translated_and_no_other() {
    let mut fx = nat66();
    let (_, out) = fx.run(&udp6(A_MAC, (A6, 5000), (REMOTE6, 53)));
    let nat_port = inspect(&out).sport;
    let (verdict, back) = fx.run_uplink(&icmp6_error(Icmpv6Type::PacketTooBig { mtu: 1280 }, &out));
    assert_eq!(verdict, TC_ACT_REDIRECT, "packet too big was not sent back into the container");
    // The outer header and the ICMPv6 checksum (inspect verifies it).
    let seen = inspect(&back);
    assert_eq!(seen.dst, A6, "outer destination was not translated");
    assert_eq!(seen.src, ROUTER6, "outer source must stay the router's");
    assert_eq!(seen.eth_dst, A_MAC, "the error must go to the container's MAC");
    let (inner, rest, kind) = quoted(&back);
    assert_eq!(kind, Icmpv6Type::PacketTooBig { mtu: 1280 }, "the MTU must not change");
    assert_eq!(inner.source, A6, "quoted source was not translated");
    assert_eq!(inner.destination, REMOTE6, "quoted destination must not change");
    let (udp, payload) = etherparse::UdpHeader::from_slice(&rest).unwrap();
    assert_ne!(nat_port, 5000);
    assert_eq!(udp.source_port, 5000, "quoted source port was not restored");
    assert_eq!(
        udp.checksum,
        udp.calc_checksum_ipv6(&inner, payload).unwrap(),
        "quoted UDP checksum is wrong"
    );
    assert_eq!(fx.count(Path::ReverseNat), 1);

    // Errors and replies about no masqueraded flow are the host's, untouched.
    let mut other = out.clone();
    other[14 + 40..14 + 42].copy_from_slice(&61501u16.to_be_bytes());
    let error = icmp6_error(Icmpv6Type::PacketTooBig { mtu: 1280 }, &other);
    let (verdict, untouched) = fx.run_uplink(&error);
    assert_eq!(
        (verdict, untouched),
        (TC_ACT_OK, error),
        "an error about no flow must go to the host unchanged"
    );
    let stray = udp6(GATEWAY_MAC, (REMOTE6, 53), (UPLINK_ADDR6, 61501));
    let (verdict, untouched) = fx.run_uplink(&stray);
    assert_eq!((verdict, untouched), (TC_ACT_OK, stray), "a reply to no flow must go to the host unchanged");
    assert_eq!(fx.count(Path::ReverseNat), 1);
}

#[test]
fn packet_too_big_about_a_masqueraded_ping_reaches_the_container_translated() {
    let mut fx = nat66();
    // A large ping, as `ping -s 1400 -M do` sends.
    let mut request = vec![];
    PacketBuilder::ethernet2(A_MAC, UPLINK_MAC)
        .ipv6(A6, REMOTE6, 64)
        .icmpv6_echo_request(4242, 1)
        .write(&mut request, &[0x5a; 1400])
        .unwrap();
    let (verdict, out) = fx.run(&request);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    let nat_id = inspect(&out).sport;
    // The router quotes as much as fits in 1280 bytes.
    let error = icmp6_error(Icmpv6Type::PacketTooBig { mtu: 1280 }, &out[..14 + 1280 - 48]);
    let (verdict, back) = fx.run_uplink(&error);
    assert_eq!(verdict, TC_ACT_REDIRECT, "packet too big about a ping was not sent back");
    let seen = inspect(&back);
    assert_eq!((seen.dst, seen.eth_dst), (A6, A_MAC), "outer destination or MAC was not translated");
    let (inner, rest, _) = quoted(&back);
    assert_eq!(inner.source, A6, "quoted source was not translated");
    assert_eq!(u16::from_be_bytes([rest[4], rest[5]]), 4242, "quoted echo identifier was not restored");
    assert_ne!(nat_id, 4242);
    // The quoted echo's checksum, over the full echo the container sent (the quote is cut).
    let sent = SlicedPacket::from_ethernet(&request).unwrap();
    let Some(TransportSlice::Icmpv6(sent)) = sent.transport else { panic!("not ICMPv6") };
    assert_eq!(u16::from_be_bytes([rest[2], rest[3]]), sent.checksum(), "quoted ICMPv6 checksum is wrong");
}
