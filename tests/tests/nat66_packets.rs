//! NAT66 and DNAT66 through BPF_PROG_TEST_RUN: IPv6 from a container to outside leaves by
//! the uplink with the uplink's IPv6 address and a port of the NAT range, and its replies
//! and ICMPv6 errors (packet too big) come back into the container; connections to ports
//! published on IPv6 reach their container, from outside and from a container (hairpin),
//! and its replies leave as the published address; every rewritten field and checksum
//! checked. A network in routed mode sends its IPv6 out untranslated, and from outside
//! takes the replies of its flows, its published ports on its own addresses and ICMPv6,
//! nothing else; a NAT66 network's container addresses take nothing from outside. An
//! unprotected network (`gateway_mode_ipv6=nat-unprotected`) is masqueraded going out and
//! takes every port of its containers' own addresses from outside, the firewall's rules
//! applied there. The fixture's uplink holds 2001:db8:71::1 (`UPLINK_ADDR6`); A sends
//! from fd00:1::2, B (behind ifindex 42) publishes from fd00:1::3.

use dataplane::{
    firewall::{Action, Installed, RuleSpec, Rules},
    ports::{PortMapping, Proto},
};
use dataplane_common::{
    Backend, IPPROTO_TCP, IPPROTO_UDP, InterfaceConfig, IpAddress, NatConfig, Path, PublishKey, SubnetInfo,
    ct_state,
};
use dataplane_tests::datapath::{
    self, A_MAC, A6, B_MAC, B6, Fixture, GATEWAY_MAC, LO, PseudoHeader, Quoted, RED, RED_GATEWAY6, Seen,
    TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT, UPLINK_ADDR, UPLINK_ADDR6, UPLINK_MAC, XDP_DROP, XDP_PASS,
    XDP_REDIRECT, b_interface, checked_ports, checked_quote, firewall_rule, firewall_rules, macs,
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

/// An ICMPv6 error of `kind` that a container (`from`: its MAC and address) sends to
/// `to`, quoting the whole of `received`, a frame it got, from its IPv6 header on.
fn error6_from(from: ([u8; 6], [u8; 16]), to: [u8; 16], kind: Icmpv6Type, received: &[u8]) -> Vec<u8> {
    let mut frame = vec![];
    PacketBuilder::ethernet2(from.0, UPLINK_MAC)
        .ipv6(from.1, to, 64)
        .icmpv6(kind)
        .write(&mut frame, &received[14..])
        .unwrap();
    frame
}

fn port_unreachable6() -> Icmpv6Type {
    Icmpv6Type::DestinationUnreachable(etherparse::icmpv6::DestUnreachableCode::Port)
}

/// An ICMPv6 error as it leaves: its addresses and MACs (`inspect` checks the ICMPv6
/// checksum over them), its type, and its quote (`checked_quote`).
fn inspect_error6(frame: &[u8]) -> (Seen<[u8; 16]>, Icmpv6Type, Quoted) {
    let seen = inspect(frame);
    let packet = SlicedPacket::from_ethernet(frame).unwrap();
    let Some(TransportSlice::Icmpv6(icmp)) = packet.transport else { panic!("not ICMPv6") };
    (seen, icmp.header().icmp_type, checked_quote(icmp.payload()))
}

fn quoted6(src: ([u8; 16], u16), dst: ([u8; 16], u16), payload: &[u8]) -> Quoted {
    Quoted { src: src.0.to_vec(), dst: dst.0.to_vec(), sport: src.1, dport: dst.1, payload: payload.to_vec() }
}

/// As over IPv4: the container's own ICMPv6 error about a reply of its masqueraded flow
/// leaves with the uplink's address outside and the flow's translation inside, the
/// ICMPv6 checksum over its pseudo header kept valid; without it, it left to the kernel
/// with the container's own address.
#[test]
fn a_containers_icmpv6_errors_about_its_masqueraded_flows_leave_translated() {
    let mut fx = nat66();
    let (_, out) = fx.run(&udp6(A_MAC, (A6, 5000), (REMOTE6, 53)));
    let nat_port = inspect(&out).sport;
    let (verdict, reply) = fx.run_uplink(&udp6(GATEWAY_MAC, (REMOTE6, 53), (UPLINK_ADDR6, nat_port)));
    assert_eq!(verdict, TC_ACT_REDIRECT);
    let reassembly =
        Icmpv6Type::TimeExceeded(etherparse::icmpv6::TimeExceededCode::FragmentReassemblyTimeExceeded);
    for kind in [port_unreachable6(), reassembly] {
        let (verdict, out) = fx.run(&error6_from((A_MAC, A6), REMOTE6, kind, &reply));
        assert_eq!(verdict, TC_ACT_REDIRECT, "{kind:?} about a masqueraded flow was not sent to the uplink");
        let (seen, seen_kind, quote) = inspect_error6(&out);
        assert_eq!(
            (seen.src, seen.dst),
            (UPLINK_ADDR6, REMOTE6),
            "{kind:?}: outer source was not translated"
        );
        assert_eq!(
            (seen.eth_dst, seen.eth_src),
            (GATEWAY_MAC, UPLINK_MAC),
            "the next hop's and the uplink's MACs"
        );
        assert_eq!(seen_kind, kind, "the ICMPv6 type and code must not change");
        assert_eq!(
            quote,
            quoted6((REMOTE6, 53), (UPLINK_ADDR6, nat_port), b"query"),
            "{kind:?}: the quoted destination must be the flow's translation"
        );
    }
    assert_eq!(fx.count(Path::Masqueraded), 3);

    // About a TCP connection: the quoted segment's checksum follows too.
    let (_, syn) = fx.run(&tcp6(A_MAC, (A6, 40000), (REMOTE6, 80), true, false));
    let port = inspect(&syn).sport;
    let (verdict, syn_ack) =
        fx.run_uplink(&tcp6(GATEWAY_MAC, (REMOTE6, 80), (UPLINK_ADDR6, port), true, true));
    assert_eq!(verdict, TC_ACT_REDIRECT);
    let (verdict, out) = fx.run(&error6_from((A_MAC, A6), REMOTE6, port_unreachable6(), &syn_ack));
    assert_eq!(
        verdict, TC_ACT_REDIRECT,
        "an error about a masqueraded connection was not sent to the uplink"
    );
    let (seen, _, quote) = inspect_error6(&out);
    assert_eq!((seen.src, seen.dst), (UPLINK_ADDR6, REMOTE6));
    assert_eq!(quote, quoted6((REMOTE6, 80), (UPLINK_ADDR6, port), b"payload!"));

    // An error about no masqueraded flow must not leave with the container's address.
    let mut stray = reply.clone();
    stray[14 + 40 + 2..14 + 40 + 4].copy_from_slice(&5999u16.to_be_bytes());
    let error = error6_from((A_MAC, A6), REMOTE6, port_unreachable6(), &stray);
    let (verdict, untouched) = fx.run(&error);
    assert_eq!(
        (verdict, untouched),
        (TC_ACT_SHOT, error),
        "an error about no flow must be dropped untouched"
    );
    assert_eq!(fx.count(Path::DroppedUntrackedIcmp), 1);
}

/// A container's ICMPv6 error about a packet of a connection to one of its ports
/// published on IPv6 leaves with the published address and port, outside and in the
/// quote.
#[test]
fn a_containers_icmpv6_errors_about_connections_to_its_published_ports_leave_as_the_published_address() {
    let mut fx = nat66();
    publish6(&mut fx, [0; 16], IPPROTO_UDP, 0, 0);
    let client = (REMOTE6, 40000);
    let (verdict, inside) = fx.run_uplink(&udp6(GATEWAY_MAC, client, (UPLINK_ADDR6, 8080)));
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_reaches_b(&inspect(&inside), client);
    fx.datapath.set_interface(LO, b_interface(InterfaceConfig::PUBLISHES)).unwrap();
    let (verdict, out) = fx.run(&error6_from((B_MAC, B6), REMOTE6, port_unreachable6(), &inside));
    assert_eq!(verdict, TC_ACT_REDIRECT, "the error about a published flow was not sent to the uplink");
    let (seen, kind, quote) = inspect_error6(&out);
    assert_eq!(
        (seen.src, seen.dst),
        (UPLINK_ADDR6, REMOTE6),
        "the outer source must be the published address"
    );
    assert_eq!((seen.eth_dst, kind), (GATEWAY_MAC, port_unreachable6()));
    assert_eq!(
        quote,
        quoted6(client, (UPLINK_ADDR6, 8080), b"query"),
        "the quoted destination must be the published address and port"
    );
    assert_eq!(fx.count(Path::PublishedReply), 1);
}

/// An unprotected network's container (`gateway_mode_ipv6=nat-unprotected`): its errors
/// about its masqueraded flows leave translated as a NAT66 network's do (they left
/// untranslated, as ICMPv6 no flow tracks); those about no flow leave as they are.
#[test]
fn an_unprotected_containers_icmpv6_errors_about_its_masqueraded_flows_leave_translated() {
    let mut fx = nat66();
    fx.datapath
        .set_subnet("fd00:1::/64".parse().unwrap(), RED, RED_GATEWAY6.into(), SubnetInfo::UNPROTECTED)
        .unwrap();
    fx.datapath.set_interface(LO, datapath::red_interface(InterfaceConfig::UNPROTECTED_V6)).unwrap();
    let (_, out) = fx.run(&udp6(A_MAC, (A6, 5000), (REMOTE6, 53)));
    let nat_port = inspect(&out).sport;
    let (_, reply) = fx.run_uplink(&udp6(GATEWAY_MAC, (REMOTE6, 53), (UPLINK_ADDR6, nat_port)));
    let (verdict, out) = fx.run(&error6_from((A_MAC, A6), REMOTE6, port_unreachable6(), &reply));
    assert_eq!(verdict, TC_ACT_REDIRECT);
    let (seen, _, quote) = inspect_error6(&out);
    assert_eq!((seen.src, seen.dst), (UPLINK_ADDR6, REMOTE6), "outer source was not translated");
    assert_eq!(quote, quoted6((REMOTE6, 53), (UPLINK_ADDR6, nat_port), b"query"));
    assert_eq!((fx.count(Path::Masqueraded), fx.count(Path::Routed)), (2, 0));
    // B's error about a datagram that came in to its own address (every port is open,
    // tracked as published there): as it is.
    fx.datapath
        .set_interface(LO, b_interface(InterfaceConfig::PUBLISHES | InterfaceConfig::UNPROTECTED_V6))
        .unwrap();
    let (verdict, inside) = fx.run_uplink(&udp6(GATEWAY_MAC, (REMOTE6, 7000), (B6, 5999)));
    assert_eq!(verdict, TC_ACT_REDIRECT);
    let error = error6_from((B_MAC, B6), REMOTE6, port_unreachable6(), &inside);
    let (verdict, out) = fx.run(&error);
    assert_eq!(verdict, TC_ACT_REDIRECT, "an unprotected container's error was not sent to the uplink");
    assert_untranslated(&error, &out, "the error about a datagram to its own address");
    assert_eq!(fx.count(Path::PublishedReply), 1);
    // About no flow at all: as it is too, as the ICMPv6 no flow tracks.
    let mut stray = inside.clone();
    stray[14 + 40..14 + 42].copy_from_slice(&7001u16.to_be_bytes());
    let error = error6_from((B_MAC, B6), REMOTE6, port_unreachable6(), &stray);
    let (verdict, out) = fx.run(&error);
    assert_eq!(verdict, TC_ACT_REDIRECT, "an unprotected container's error about no flow was not sent out");
    assert_untranslated(&error, &out, "the error about no flow");
    assert_eq!(fx.count(Path::Routed), 1);
}

/// The firewall on an unprotected container's own IPv6 address, as over IPv4: a denied
/// prefix's SYN to the rule's port is dropped and counted, and nothing tracked; another
/// client's, another port's and UDP's pass; an IPv4 source never matches.
#[test]
fn the_firewall_filters_what_reaches_an_unprotected_containers_own_ipv6_ports_from_outside() {
    let mut fx = nat66();
    fx.datapath
        .set_subnet("fd00:1::/64".parse().unwrap(), RED, RED_GATEWAY6.into(), SubnetInfo::UNPROTECTED)
        .unwrap();
    let mut installed = Installed::default();
    let rules = firewall_rules([
        RuleSpec {
            proto: Some(Proto::Tcp),
            ..firewall_rule(Action::Deny, Some("2001:db8:99::/48"), Some("22"))
        },
        firewall_rule(Action::Deny, Some("198.51.100.0/24"), None),
    ]);
    fx.filter_own_address(&mut installed, &rules, "web", B6.into());
    let deny = rules.rules[0].slot;

    let denied = tcp6(GATEWAY_MAC, (REMOTE6, 33000), (B6, 22), true, false);
    fx.assert_firewall_dropped(&denied, deny, "a denied prefix's SYN");

    for (frame, what) in [
        (tcp6(GATEWAY_MAC, (OTHER_REMOTE6, 33000), (B6, 22), true, false), "another prefix's SYN"),
        (tcp6(GATEWAY_MAC, (REMOTE6, 33001), (B6, 80), true, false), "a SYN to port 80"),
        (udp6(GATEWAY_MAC, (REMOTE6, 5000), (B6, 22)), "a datagram to port 22"),
    ] {
        let (verdict, inside) = fx.run_uplink(&frame);
        assert_eq!(verdict, TC_ACT_REDIRECT, "{what} was refused");
        assert_eq!(inspect(&inside).eth_dst, B_MAC, "{what}: destination MAC must be the container's");
        assert_untranslated(&frame, &inside, what);
    }
    assert_eq!((fx.count(Path::Published), fx.count(Path::DroppedFirewall)), (3, 1));
    assert_eq!(fx.datapath.firewall_hits(deny).unwrap(), 1, "a client, port or protocol outside it hit it");
    assert_eq!(fx.datapath.firewall_hits(rules.rules[1].slot).unwrap(), 0, "an IPv4 source decided for IPv6");
}

const LOOPBACK6: [u8; 16] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];

/// Publishes `proto` port 8080 on the IPv6 host address `host_addr` (`::`: every one) to
/// B's port 80, with the backend's `flags` and firewall `rule_set`.
fn publish6(fx: &mut Fixture, host_addr: [u8; 16], proto: u8, flags: u8, rule_set: u16) {
    publish(fx, IpAddress::v6(host_addr), IpAddress::v6(B6), proto, (flags, rule_set));
}

/// Publishes `proto` port 8080 on `host_addr` to port 80 of B's address `to`, with the
/// backend's flags and firewall rule set.
fn publish(fx: &mut Fixture, host_addr: IpAddress, to: IpAddress, proto: u8, (flags, rule_set): (u8, u16)) {
    let key = PublishKey { addr: host_addr, port: 8080u16.to_be(), proto, _pad: 0 };
    let backend =
        Backend { addr: to, port: 80u16.to_be(), rule_set, host_ifindex: 42, mac: B_MAC, flags, _pad: 0 };
    fx.datapath.set_published(key, backend).unwrap();
}

/// Asserts a frame for the published port as B receives it: B's address and port, the
/// client's kept, B's MAC (inspect checks the L4 checksum).
fn assert_reaches_b(seen: &Seen<[u8; 16]>, client: ([u8; 16], u16)) {
    assert_eq!((seen.dst, seen.dport), (B6, 80), "destination was not DNAT66'ed to the container");
    assert_eq!((seen.src, seen.sport), client, "the client's address and port must reach the container");
    assert_eq!(seen.eth_dst, B_MAC, "destination MAC must be the container's");
}

#[test]
fn tcp_to_a_port_published_on_ipv6_reaches_its_container_and_the_replies_leave_as_the_published_address() {
    let mut fx = nat66();
    publish6(&mut fx, [0; 16], IPPROTO_TCP, 0, 0);
    let client = (REMOTE6, 33000);
    let (verdict, inside) = fx.run_uplink(&tcp6(GATEWAY_MAC, client, (UPLINK_ADDR6, 8080), true, false));
    assert_eq!(verdict, TC_ACT_REDIRECT, "a SYN to the port published on [::] was not sent to its container");
    assert_reaches_b(&inspect(&inside), client);
    assert_eq!(fx.count(Path::Published), 1);
    assert_eq!(fx.datapath.dnat_unconfirmed().unwrap().len(), 1, "the flow was not tracked");

    // B's SYN-ACK (sent from behind `lo`) leaves with the published address and port.
    fx.datapath.set_interface(LO, b_interface(InterfaceConfig::PUBLISHES)).unwrap();
    let (verdict, out) = fx.run(&tcp6(B_MAC, (B6, 80), client, true, true));
    assert_eq!(verdict, TC_ACT_REDIRECT, "the reply was not sent to the uplink");
    let seen = inspect(&out);
    assert_eq!((seen.src, seen.sport), (UPLINK_ADDR6, 8080), "reply source was not reverse-DNAT66'ed");
    assert_eq!((seen.dst, seen.dport), client, "the reply's destination must not change");
    assert_eq!(seen.eth_dst, GATEWAY_MAC, "destination MAC must be the next hop's (FIB)");
    assert_eq!(seen.eth_src, UPLINK_MAC, "source MAC must be the uplink's");
    assert_eq!(fx.count(Path::PublishedReply), 1);

    // The client's ACK of the SYN-ACK (its sequence number, 1000, + 1) confirms the flow.
    let mut ack = vec![];
    PacketBuilder::ethernet2(GATEWAY_MAC, UPLINK_MAC)
        .ipv6(client.0, UPLINK_ADDR6, 64)
        .tcp(client.1, 8080, 1001, 64000)
        .ack(1001)
        .write(&mut ack, b"")
        .unwrap();
    let (verdict, inside) = fx.run_uplink(&ack);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_reaches_b(&inspect(&inside), client);
    let confirmed = fx.datapath.dnat_conntrack().unwrap();
    assert_eq!(confirmed.len(), 1, "the client's ACK did not confirm the flow");
    assert_eq!(confirmed[0].0.src, IpAddress::v6(B6), "flow key source");
    assert_eq!(confirmed[0].1.host_addr, IpAddress::v6(UPLINK_ADDR6), "flow's published address");
}

#[test]
fn udp_to_a_port_published_on_one_ipv6_address_reaches_its_container_and_no_other_address_does() {
    let mut fx = nat66();
    publish6(&mut fx, UPLINK_ADDR6, IPPROTO_UDP, 0, 0);
    let client = (REMOTE6, 5353);
    let (verdict, inside) = fx.run_uplink(&udp6(GATEWAY_MAC, client, (UPLINK_ADDR6, 8080)));
    assert_eq!(verdict, TC_ACT_REDIRECT, "a datagram to the published address was not sent to its container");
    assert_reaches_b(&inspect(&inside), client);
    fx.datapath.set_interface(LO, b_interface(InterfaceConfig::PUBLISHES)).unwrap();
    let (verdict, out) = fx.run(&udp6(B_MAC, (B6, 80), client));
    assert_eq!(verdict, TC_ACT_REDIRECT);
    let seen = inspect(&out);
    assert_eq!((seen.src, seen.sport), (UPLINK_ADDR6, 8080), "UDP reply source was not reverse-DNAT66'ed");
    assert_eq!((seen.dst, seen.dport), client);

    // Another address of the host has no such port: the host's, untouched.
    let other = udp6(GATEWAY_MAC, client, (ROUTER6, 8080));
    let (verdict, untouched) = fx.run_uplink(&other);
    assert_eq!((verdict, untouched), (TC_ACT_OK, other), "another address must not be translated");
    // Nor is one to a port published on IPv4 only.
    let key = |addr| PublishKey { addr, port: 8080u16.to_be(), proto: IPPROTO_UDP, _pad: 0 };
    fx.datapath.remove_published(&key(IpAddress::v6(UPLINK_ADDR6))).unwrap();
    publish(&mut fx, IpAddress::v4([0; 4]), IpAddress::v4([10, 1, 0, 3]), IPPROTO_UDP, (0, 0));
    let to_v4_port = udp6(GATEWAY_MAC, client, (UPLINK_ADDR6, 8080));
    let (verdict, untouched) = fx.run_uplink(&to_v4_port);
    assert_eq!(
        (verdict, untouched),
        (TC_ACT_OK, to_v4_port),
        "a port published on IPv4 only must not take IPv6"
    );
}

#[test]
fn a_port_published_on_loopback6_is_never_reached_from_the_uplink() {
    let mut fx = nat66();
    publish6(&mut fx, LOOPBACK6, IPPROTO_TCP, Backend::HOST_ONLY, 0);
    let to_loopback = tcp6(GATEWAY_MAC, (REMOTE6, 33000), (LOOPBACK6, 8080), true, false);
    let (verdict, out) = fx.run_uplink(&to_loopback);
    assert_eq!(verdict, TC_ACT_SHOT, "a frame from the uplink for [::1]:8080 must be dropped");
    assert_eq!(out, to_loopback, "it must not be translated");
    assert_eq!(fx.count(Path::DroppedMartian), 1);
    // The uplink's own address has no such port: the host's, untouched.
    let to_uplink = tcp6(GATEWAY_MAC, (REMOTE6, 33000), (UPLINK_ADDR6, 8080), true, false);
    let (verdict, out) = fx.run_uplink(&to_uplink);
    assert_eq!((verdict, out), (TC_ACT_OK, to_uplink), "a port published on ::1 only took the uplink's");
    assert_eq!(fx.count(Path::Published), 0);
    assert!(fx.datapath.dnat_unconfirmed().unwrap().is_empty(), "nothing may be tracked");
}

/// Compiles `rules` for TCP 8080 published on `::`, writes the rule set into the IPv6
/// trie and points the port at it, as the daemon does; returns the rules, with their slots.
fn apply_firewall6(fx: &mut Fixture, installed: &mut Installed, rules: &[(Action, Option<&str>)]) -> Rules {
    let mut compiled = Rules::default();
    for (action, source) in rules {
        let source = source.map(|s| dataplane::firewall::parse_source(s).unwrap());
        let rule = compiled
            .add(RuleSpec { action: *action, source, ports: None, proto: None, container: None })
            .unwrap();
        // As `firewall add` does: a slot's count starts again with its new rule.
        fx.datapath.reset_firewall_hits(rule.slot).unwrap();
    }
    let mapping = PortMapping {
        host_ip: std::net::Ipv6Addr::UNSPECIFIED.into(),
        host_port: 8080,
        container_port: 80,
        proto: Proto::Tcp,
        any_family: false,
    };
    let set = compiled.compiler().rule_set("web", &mapping);
    let id = installed.install(&mut fx.datapath, std::slice::from_ref(&set)).unwrap()[0];
    let key = PublishKey { addr: IpAddress::v6([0; 16]), port: 8080u16.to_be(), proto: IPPROTO_TCP, _pad: 0 };
    fx.datapath.set_published_rule_set(key, id).unwrap();
    installed.retain(&mut fx.datapath, &[set].into());
    compiled
}

const OTHER_REMOTE6: [u8; 16] = [0x20, 1, 0x0d, 0xb8, 0, 0x98, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7];

#[test]
fn an_ipv6_source_rule_refuses_its_clients_and_no_other_and_ipv4_sources_never_match_ipv6() {
    let mut fx = nat66();
    publish6(&mut fx, [0; 16], IPPROTO_TCP, 0, 0);
    let mut installed = Installed::default();
    let rules = apply_firewall6(
        &mut fx,
        &mut installed,
        &[(Action::Allow, Some("198.51.100.0/24")), (Action::Deny, Some("2001:db8:99::/48"))],
    );
    let deny = rules.rules[1].slot;
    let syn = |client| tcp6(GATEWAY_MAC, (client, 33000), (UPLINK_ADDR6, 8080), true, false);
    let (verdict, _) = fx.run_uplink(&syn(REMOTE6));
    assert_eq!(verdict, TC_ACT_SHOT, "a client of the denied IPv6 prefix reached the published port");
    assert_eq!(fx.count(Path::DroppedFirewall), 1, "the drop was not counted as the firewall's");
    assert_eq!(fx.datapath.firewall_hits(deny).unwrap(), 1, "the deny rule's hit was not counted");
    assert!(fx.datapath.dnat_unconfirmed().unwrap().is_empty(), "a denied connection was tracked");

    let (verdict, inside) = fx.run_uplink(&syn(OTHER_REMOTE6));
    assert_eq!(verdict, TC_ACT_REDIRECT, "a client outside the denied prefix was refused");
    assert_reaches_b(&inspect(&inside), (OTHER_REMOTE6, 33000));
    assert_eq!(fx.datapath.firewall_hits(deny).unwrap(), 1, "a source the rule does not cover hit it");
    assert_eq!(fx.datapath.firewall_hits(rules.rules[0].slot).unwrap(), 0, "an IPv4 source decided for IPv6");

    // An IPv4 catch-all is not the IPv6 mapping's: no rule set at all.
    apply_firewall6(&mut fx, &mut installed, &[(Action::Deny, Some("0.0.0.0/0"))]);
    let (verdict, _) = fx.run_uplink(&syn(REMOTE6));
    assert_eq!(verdict, TC_ACT_REDIRECT, "an IPv4 source's deny refused an IPv6 client");
    assert_eq!(
        fx.datapath.firewall_entries().unwrap().len(),
        0,
        "the replaced rule sets left entries behind"
    );

    // A rule without a source is every client's, IPv6 ones too, after an allow.
    let rules = apply_firewall6(
        &mut fx,
        &mut installed,
        &[(Action::Allow, Some("2001:db8:98::/48")), (Action::Deny, None)],
    );
    let (verdict, _) = fx.run_uplink(&syn(REMOTE6));
    assert_eq!(verdict, TC_ACT_SHOT, "the deny without a source did not apply to an IPv6 client");
    assert_eq!(fx.datapath.firewall_hits(rules.rules[1].slot).unwrap(), 1);
    let (verdict, _) = fx.run_uplink(&syn(OTHER_REMOTE6));
    assert_eq!(verdict, TC_ACT_REDIRECT, "the allowed IPv6 prefix was refused");
    assert_eq!(fx.datapath.firewall_hits(rules.rules[0].slot).unwrap(), 1);
}

/// A SYN (or SYN-ACK) over IPv6 offering `mss`, behind a NOP and a window scale as real
/// stacks send.
fn syn6_with_mss(
    src_mac: [u8; 6],
    src: ([u8; 16], u16),
    dst: ([u8; 16], u16),
    ack: bool,
    mss: u16,
) -> Vec<u8> {
    let ip = PacketBuilder::ethernet2(src_mac, UPLINK_MAC).ipv6(src.0, dst.0, 64);
    datapath::syn_with_mss(ip, (src.1, dst.1), ack, mss)
}

/// The MSS a TCP frame offers (after checking its checksum).
fn mss_of(frame: &[u8]) -> Option<u16> {
    inspect(frame);
    datapath::mss_offered(frame)
}

#[test]
fn syns_from_outside_over_ipv6_offer_an_mss_the_uplink_can_carry() {
    let mut fx = nat66();
    let status =
        std::process::Command::new("ip").args(["link", "set", "up0", "mtu", "1400"]).status().unwrap();
    assert!(status.success());
    publish6(&mut fx, [0; 16], IPPROTO_TCP, 0, 0);

    // A client with a 1,500-byte path connects to a published port: the container must
    // not answer with 1,440-byte segments that the 1,400-byte uplink cannot carry.
    let syn = syn6_with_mss(GATEWAY_MAC, (REMOTE6, 33000), (UPLINK_ADDR6, 8080), false, 1440);
    let (verdict, inside) = fx.run_uplink(&syn);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_reaches_b(&inspect(&inside), (REMOTE6, 33000));
    assert_eq!(mss_of(&inside), Some(1340), "the SYN's MSS was not clamped to the uplink MTU - 60");
    // An MSS that fits is left alone.
    let syn = syn6_with_mss(GATEWAY_MAC, (REMOTE6, 33001), (UPLINK_ADDR6, 8080), false, 1200);
    assert_eq!(mss_of(&fx.run_uplink(&syn).1), Some(1200));

    // NAT66: the remote's SYN-ACK is clamped the same way on its way back in.
    let (_, out) = fx.run(&syn6_with_mss(A_MAC, (A6, 40000), (REMOTE6, 443), false, 1440));
    let nat_port = inspect(&out).sport;
    assert_eq!(mss_of(&out), Some(1440), "what the container offers is its own business");
    let syn_ack = syn6_with_mss(GATEWAY_MAC, (REMOTE6, 443), (UPLINK_ADDR6, nat_port), true, 1440);
    let (verdict, back) = fx.run_uplink(&syn_ack);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!(mss_of(&back), Some(1340), "the SYN-ACK's MSS was not clamped");
    assert_eq!(inspect(&back).dst, A6);
}

#[test]
fn hairpin_over_ipv6_reaches_the_published_container_and_its_reply_comes_back_as_the_published_address() {
    let mut fx = nat66();
    publish6(&mut fx, [0; 16], IPPROTO_TCP, 0, 0);
    // A (behind `lo`) connects to the uplink's address, which the host holds.
    let (verdict, inside) = fx.run(&tcp6(A_MAC, (A6, 40000), (UPLINK_ADDR6, 8080), true, false));
    assert_eq!(verdict, TC_ACT_REDIRECT, "A's SYN to the published port was not sent to B");
    assert_reaches_b(&inspect(&inside), (A6, 40000));
    assert_eq!(fx.count(Path::Published), 1);
    fx.datapath.set_interface(LO, b_interface(InterfaceConfig::PUBLISHES)).unwrap();
    let (verdict, back) = fx.run(&tcp6(B_MAC, (B6, 80), (A6, 40000), true, true));
    assert_eq!(verdict, TC_ACT_REDIRECT, "B's reply was not sent back to A");
    let back = inspect(&back);
    assert_eq!((back.src, back.sport), (UPLINK_ADDR6, 8080), "reply source was not reverse-DNAT66'ed");
    assert_eq!((back.dst, back.dport), (A6, 40000), "the reply's destination must not change");
    assert_eq!(back.eth_dst, A_MAC, "the reply must go to A's MAC");
    assert_eq!(fx.count(Path::PublishedReply), 1);
}

/// As `nat66`, with red (A's and B's network) in routed mode (`gateway_mode_ipv6=routed`):
/// its subnet flagged routed, A's interface too.
fn routed() -> Fixture {
    let mut fx = Fixture::new(InterfaceConfig::ROUTED_V6);
    fx.enable_nat(61000, 61999);
    fx.datapath
        .set_subnet("fd00:1::/64".parse().unwrap(), RED, RED_GATEWAY6.into(), SubnetInfo::ROUTED)
        .unwrap();
    fx
}

/// Asserts a frame that left or came in untranslated: every byte from the IPv6 header on
/// as sent, only the MACs set.
fn assert_untranslated(sent: &[u8], seen: &[u8], what: &str) {
    assert_eq!(&seen[12..], &sent[12..], "{what}: the packet must not change beyond its MACs");
}

#[test]
fn tcp_and_echo_from_a_routed_network_leave_with_the_containers_own_address_and_their_replies_come_back() {
    let mut fx = routed();
    let syn = tcp6(A_MAC, (A6, 40000), (REMOTE6, 80), true, false);
    let (verdict, out) = fx.run(&syn);
    assert_eq!(verdict, TC_ACT_REDIRECT, "a SYN from a routed network was not sent to the uplink");
    let seen = inspect(&out);
    assert_eq!((seen.src, seen.sport), (A6, 40000), "the source must stay the container's own");
    assert_eq!((seen.dst, seen.dport), (REMOTE6, 80), "the destination must not change");
    assert_eq!(seen.eth_dst, GATEWAY_MAC, "destination MAC must be the next hop's (FIB)");
    assert_eq!(seen.eth_src, UPLINK_MAC, "source MAC must be the uplink's");
    assert_untranslated(&syn, &out, "the SYN");
    assert_eq!((fx.count(Path::Routed), fx.count(Path::Masqueraded)), (1, 0));
    let flows = fx.datapath.conntrack_unconfirmed().unwrap();
    assert_eq!(flows.len(), 1, "the routed flow was not tracked");
    assert_eq!(flows[0].1.nat_addr, IpAddress::v6(A6), "a routed flow's address is the container's own");
    assert_eq!(flows[0].1.nat_port, 40000u16.to_be(), "a routed flow's port is the container's own");

    let syn_ack = tcp6(GATEWAY_MAC, (REMOTE6, 80), (A6, 40000), true, true);
    let (verdict, back) = fx.run_uplink(&syn_ack);
    assert_eq!(verdict, TC_ACT_REDIRECT, "the reply of a routed flow was not sent into the container");
    let back_seen = inspect(&back);
    assert_eq!((back_seen.dst, back_seen.dport), (A6, 40000), "the reply's destination must not change");
    assert_eq!((back_seen.src, back_seen.sport), (REMOTE6, 80), "the reply's source must not change");
    assert_eq!(back_seen.eth_dst, A_MAC, "the reply must go to the container's MAC");
    assert_untranslated(&syn_ack[..], &back, "the reply");
    assert_eq!(fx.count(Path::RoutedIn), 1);
    assert_eq!(
        fx.datapath.conntrack_unconfirmed().unwrap()[0].1.state,
        ct_state::ESTABLISHED,
        "the reply was not recorded"
    );

    let request = echo6(A_MAC, A6, REMOTE6, 777, false);
    let (verdict, out) = fx.run(&request);
    assert_eq!(verdict, TC_ACT_REDIRECT, "the echo request was not sent to the uplink");
    let seen = inspect(&out);
    assert_eq!((seen.src, seen.sport, seen.dst), (A6, 777, REMOTE6), "the echo request must not change");
    assert_untranslated(&request, &out, "the echo request");
    let reply = echo6(GATEWAY_MAC, REMOTE6, A6, 777, true);
    let (verdict, back) = fx.run_uplink(&reply);
    assert_eq!(verdict, TC_ACT_REDIRECT, "the echo reply was not sent back");
    assert_eq!(inspect(&back).eth_dst, A_MAC);
    assert_untranslated(&reply, &back, "the echo reply");
    assert_eq!((fx.count(Path::Routed), fx.count(Path::RoutedIn)), (2, 2));

    // Routing needs no address of the uplink's: without NAT66, it goes on.
    let uplink_ifindex = nix::net::if_::if_nametoindex("up0").unwrap();
    let no_ipv6 = NatConfig {
        uplink_ifindex,
        port_min: 61000,
        port_max: 61999,
        addr: UPLINK_ADDR,
        ..NatConfig::default()
    };
    fx.datapath.set_nat_config(no_ipv6).unwrap();
    let udp = udp6(A_MAC, (A6, 5353), (REMOTE6, 53));
    let (verdict, out) = fx.run(&udp);
    assert_eq!(verdict, TC_ACT_REDIRECT, "without NAT66, a routed network's IPv6 was not sent to the uplink");
    assert_untranslated(&udp, &out, "the datagram");
    let answer = udp6(GATEWAY_MAC, (REMOTE6, 53), (A6, 5353));
    let (verdict, back) = fx.run_uplink(&answer);
    assert_eq!(verdict, TC_ACT_REDIRECT, "without NAT66, the answer was not let in");
    assert_untranslated(&answer, &back, "the answer");
}

/// B publishes TCP port 80 as the daemon does for `-p [::]:8080:80` on a routed network:
/// the container port on B's own address, reached untranslated.
fn publish_on_bs_own_address(fx: &mut Fixture) {
    let key = PublishKey { addr: IpAddress::v6(B6), port: 80u16.to_be(), proto: IPPROTO_TCP, _pad: 0 };
    let backend = Backend {
        addr: IpAddress::v6(B6),
        port: 80u16.to_be(),
        rule_set: 0,
        host_ifindex: 42,
        mac: B_MAC,
        flags: 0,
        _pad: 0,
    };
    fx.datapath.set_published(key, backend).unwrap();
}

#[test]
fn from_outside_a_routed_container_takes_its_published_ports_replies_and_icmpv6_and_nothing_else() {
    let mut fx = routed();
    // Nothing published, no flow: a new connection is dropped, and so is a datagram.
    let to_ssh = tcp6(GATEWAY_MAC, (REMOTE6, 33000), (B6, 22), true, false);
    let (verdict, out) = fx.run_uplink(&to_ssh);
    assert_eq!((verdict, out), (TC_ACT_SHOT, to_ssh), "a SYN to an unpublished port must be dropped");
    let (verdict, _) = fx.run_uplink(&udp6(GATEWAY_MAC, (REMOTE6, 53), (A6, 5353)));
    assert_eq!(verdict, TC_ACT_SHOT, "a datagram of no flow must be dropped");
    assert_eq!(fx.count(Path::DroppedUnpublished), 2);

    publish_on_bs_own_address(&mut fx);
    let client = (REMOTE6, 33000);
    let syn = tcp6(GATEWAY_MAC, client, (B6, 80), true, false);
    let (verdict, inside) = fx.run_uplink(&syn);
    assert_eq!(verdict, TC_ACT_REDIRECT, "a SYN to a published port was not sent to its container");
    let seen = inspect(&inside);
    assert_eq!((seen.dst, seen.dport), (B6, 80), "the container's address and port must not change");
    assert_eq!((seen.src, seen.sport), client, "the client's address and port must reach the container");
    assert_eq!(seen.eth_dst, B_MAC, "destination MAC must be the container's");
    assert_untranslated(&syn, &inside, "the SYN to the published port");
    assert_eq!(fx.count(Path::Published), 1);
    // Its answer leaves from B's own address and port too.
    fx.datapath
        .set_interface(LO, b_interface(InterfaceConfig::PUBLISHES | InterfaceConfig::ROUTED_V6))
        .unwrap();
    let syn_ack = tcp6(B_MAC, (B6, 80), client, true, true);
    let (verdict, out) = fx.run(&syn_ack);
    assert_eq!(verdict, TC_ACT_REDIRECT, "the answer was not sent to the uplink");
    let seen = inspect(&out);
    assert_eq!((seen.src, seen.sport), (B6, 80), "the answer's source must stay the container's own");
    assert_eq!((seen.dst, seen.dport), client, "the answer's destination must not change");
    assert_eq!(
        (seen.eth_dst, seen.eth_src),
        (GATEWAY_MAC, UPLINK_MAC),
        "the next hop's and the uplink's MACs"
    );
    assert_untranslated(&syn_ack, &out, "the answer");
    assert_eq!(fx.count(Path::PublishedReply), 1);
    // Another port of B stays closed.
    let (verdict, _) = fx.run_uplink(&tcp6(GATEWAY_MAC, client, (B6, 81), true, false));
    assert_eq!(verdict, TC_ACT_SHOT, "a SYN to another port of a publishing container must be dropped");

    // ICMPv6 is let in, as Docker's routed mode does.
    let ping = echo6(GATEWAY_MAC, REMOTE6, B6, 9, false);
    let (verdict, inside) = fx.run_uplink(&ping);
    assert_eq!(verdict, TC_ACT_REDIRECT, "an echo request to a routed container was not let in");
    assert_eq!(inspect(&inside).eth_dst, B_MAC, "the echo request must go to the container's MAC");
    assert_untranslated(&ping, &inside, "the echo request");
    assert_eq!(fx.count(Path::RoutedIn), 1);
    // And B's echo reply leaves as it is.
    let pong = echo6(B_MAC, B6, REMOTE6, 9, true);
    let (verdict, out) = fx.run(&pong);
    assert_eq!(verdict, TC_ACT_REDIRECT, "the echo reply was not sent to the uplink");
    assert_eq!((inspect(&out).eth_dst, inspect(&out).eth_src), (GATEWAY_MAC, UPLINK_MAC));
    assert_untranslated(&pong, &out, "the echo reply");

    // The gateway is the host's: left to the kernel.
    let to_gateway = tcp6(GATEWAY_MAC, client, (RED_GATEWAY6, 22), true, false);
    let (verdict, out) = fx.run_uplink(&to_gateway);
    assert_eq!((verdict, out), (TC_ACT_OK, to_gateway), "the gateway's traffic is the host's");
    assert_eq!(fx.count(Path::DroppedUnpublished), 3);
}

#[test]
fn a_nat66_networks_container_addresses_are_not_reachable_from_outside() {
    let mut fx = nat66();
    let syn = tcp6(GATEWAY_MAC, (REMOTE6, 33000), (B6, 80), true, false);
    let (verdict, out) = fx.run_uplink(&syn);
    assert_eq!(
        (verdict, out),
        (TC_ACT_SHOT, syn),
        "a SYN to a NAT66 container's own address must be dropped"
    );
    let (verdict, _) = fx.run_uplink(&echo6(GATEWAY_MAC, REMOTE6, B6, 9, false));
    assert_eq!(verdict, TC_ACT_SHOT, "an echo request to a NAT66 container's own address must be dropped");
    assert_eq!(fx.count(Path::DroppedUnpublished), 2);
    // Outside every network: the host's.
    let elsewhere = tcp6(GATEWAY_MAC, (REMOTE6, 33000), (ROUTER6, 80), true, false);
    let (verdict, out) = fx.run_uplink(&elsewhere);
    assert_eq!((verdict, out), (TC_ACT_OK, elsewhere));
}

/// B's veth (ifindex 42) takes XDP frames, as the daemon arranges for publishing containers
/// when XDP runs on the uplink.
fn b_takes_xdp_frames(fx: &mut Fixture) {
    let flags = InterfaceConfig::PUBLISHES | InterfaceConfig::XDP_TARGET;
    fx.datapath.set_interface(42, datapath::red_interface(flags)).unwrap();
}

const L4_CSUM_TCP6: usize = 14 + 40 + 16;
const L4_CSUM_UDP6: usize = 14 + 40 + 6;

/// Asserts that a frame for the published port changed only where DNAT66 writes: the
/// destination MAC, address and port, and the L4 checksum (which `inspect` checks); every
/// other byte (the IPv6 header's other fields, the source, the payload) is as sent.
fn assert_only_the_destination_changed(sent: &[u8], seen: &[u8], csum_offset: usize) {
    assert_eq!(sent.len(), seen.len(), "the frame changed its length");
    let rewritten = [0..6, 14 + 24..14 + 40, 14 + 42..14 + 44, csum_offset..csum_offset + 2];
    for (i, (a, b)) in sent.iter().zip(seen).enumerate() {
        if !rewritten.iter().any(|r| r.contains(&i)) {
            assert_eq!(a, b, "byte {i} changed, which DNAT66 never writes");
        }
    }
}

/// The client's ACK of B's SYN-ACK (sequence number 1000, as `tcp6` sends it) to `to`,
/// with data, and a FIN when `fin`.
fn ack6(client: ([u8; 16], u16), to: ([u8; 16], u16), fin: bool) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(GATEWAY_MAC, UPLINK_MAC)
        .ipv6(client.0, to.0, 64)
        .tcp(client.1, to.1, 1001, 64000)
        .ack(1001);
    let b = if fin { b.fin() } else { b };
    let mut ack = vec![];
    b.write(&mut ack, b"data").unwrap();
    ack
}

#[test]
fn xdp_on_the_uplink_sends_ports_published_on_ipv6_to_their_container() {
    let mut fx = nat66();
    publish6(&mut fx, [0; 16], IPPROTO_TCP, 0, 0);
    publish6(&mut fx, UPLINK_ADDR6, IPPROTO_UDP, 0, 0);
    b_takes_xdp_frames(&mut fx);

    let client = (REMOTE6, 33000);
    let syn = tcp6(GATEWAY_MAC, client, (UPLINK_ADDR6, 8080), true, false);
    let (verdict, inside) = fx.run_uplink_xdp(&syn);
    assert_eq!(verdict, XDP_REDIRECT, "a SYN to a port published on [::] was not redirected by XDP");
    assert_reaches_b(&inspect(&inside), client);
    assert_only_the_destination_changed(&syn, &inside, L4_CSUM_TCP6);
    assert_eq!((fx.count(Path::PublishedXdp), fx.count(Path::Published)), (1, 0));
    assert_eq!(fx.datapath.dnat_unconfirmed().unwrap().len(), 1, "XDP did not track the flow");

    // The flow XDP tracked is the one tc finds for the container's answer.
    fx.datapath.set_interface(LO, b_interface(InterfaceConfig::PUBLISHES)).unwrap();
    let (verdict, out) = fx.run(&tcp6(B_MAC, (B6, 80), client, true, true));
    assert_eq!(verdict, TC_ACT_REDIRECT);
    let seen = inspect(&out);
    assert_eq!((seen.src, seen.sport), (UPLINK_ADDR6, 8080), "reply source was not reverse-DNAT66'ed");
    assert_eq!((seen.dst, seen.dport), client);
    // The client's ACK confirms it in XDP as in tc.
    let ack = ack6(client, (UPLINK_ADDR6, 8080), false);
    let (verdict, inside) = fx.run_uplink_xdp(&ack);
    assert_eq!(verdict, XDP_REDIRECT);
    assert_only_the_destination_changed(&ack, &inside, L4_CSUM_TCP6);
    assert_eq!(fx.datapath.dnat_conntrack().unwrap().len(), 1, "the ACK did not confirm the flow in XDP");

    // UDP, to the port published on the uplink's address alone.
    let datagram = udp6(GATEWAY_MAC, (REMOTE6, 5353), (UPLINK_ADDR6, 8080));
    let (verdict, inside) = fx.run_uplink_xdp(&datagram);
    assert_eq!(verdict, XDP_REDIRECT, "a datagram to a port published on one address was not redirected");
    assert_reaches_b(&inspect(&inside), (REMOTE6, 5353));
    assert_only_the_destination_changed(&datagram, &inside, L4_CSUM_UDP6);
    assert_eq!((fx.count(Path::PublishedXdp), fx.count(Path::Published)), (3, 0));
}

#[test]
fn xdp_leaves_to_tc_what_it_cannot_finish_over_ipv6() {
    let mut fx = nat66();
    publish6(&mut fx, [0; 16], IPPROTO_TCP, 0, 0);
    publish6(&mut fx, LOOPBACK6, IPPROTO_TCP, Backend::HOST_ONLY, 0);
    let passes = |fx: &mut Fixture, frame: Vec<u8>, why: &str| {
        let (verdict, out) = fx.run_uplink_xdp(&frame);
        assert_eq!((verdict, out), (XDP_PASS, frame), "{why}");
    };
    let to_port = (UPLINK_ADDR6, 8080);

    // A container whose veth takes no XDP frames is served by tc.
    let syn = tcp6(GATEWAY_MAC, (REMOTE6, 33000), to_port, true, false);
    passes(&mut fx, syn.clone(), "the container's veth takes no XDP frames");
    assert_eq!(fx.run_uplink(&syn).0, TC_ACT_REDIRECT);

    b_takes_xdp_frames(&mut fx);
    // A local sender's CHECKSUM_PARTIAL packet holds only the pseudo header's sum.
    let mut partial = tcp6(GATEWAY_MAC, (REMOTE6, 33001), to_port, false, true);
    let l4_len = (partial.len() - 54) as u16;
    let pseudo = dataplane_common::csum::pseudo_header_v6(&REMOTE6, &UPLINK_ADDR6, IPPROTO_TCP, l4_len);
    partial[L4_CSUM_TCP6..L4_CSUM_TCP6 + 2].copy_from_slice(&pseudo.to_ne_bytes());
    passes(&mut fx, partial, "a partial checksum cannot be updated in XDP");
    passes(
        &mut fx,
        tcp6(GATEWAY_MAC, (REMOTE6, 80), (UPLINK_ADDR6, 61500), false, true),
        "NAT66 replies are tc's",
    );
    passes(
        &mut fx,
        tcp6(GATEWAY_MAC, (REMOTE6, 33000), (UPLINK_ADDR6, 8081), true, false),
        "unpublished port",
    );
    passes(
        &mut fx,
        tcp6(GATEWAY_MAC, (REMOTE6, 33000), (B6, 80), true, false),
        "tc drops container addresses",
    );
    passes(&mut fx, echo6(GATEWAY_MAC, REMOTE6, UPLINK_ADDR6, 7, false), "ICMPv6 is tc's");
    // A hop-by-hop header before the TCP header: extension headers are tc's.
    let extended = behind(&tcp6(GATEWAY_MAC, (REMOTE6, 33002), to_port, true, false), &[HOP_BY_HOP]);
    passes(&mut fx, extended, "extension headers are tc's");
    assert_eq!(fx.count(Path::PublishedXdp), 0);

    // A port published on ::1 is a martian from the uplink, in XDP as in tc.
    let to_loopback = tcp6(GATEWAY_MAC, (REMOTE6, 33000), (LOOPBACK6, 8080), true, false);
    let (verdict, out) = fx.run_uplink_xdp(&to_loopback);
    assert_eq!((verdict, out), (XDP_DROP, to_loopback), "XDP let a frame for [::1]:8080 in");
    assert_eq!(fx.count(Path::DroppedMartian), 1);
    assert_eq!(fx.count(Path::PublishedXdp), 0);
}

#[test]
fn xdp_clamps_the_mss_of_syns_from_outside_over_ipv6() {
    let mut fx = nat66();
    let status =
        std::process::Command::new("ip").args(["link", "set", "up0", "mtu", "1400"]).status().unwrap();
    assert!(status.success());
    publish6(&mut fx, [0; 16], IPPROTO_TCP, 0, 0);
    b_takes_xdp_frames(&mut fx);
    let syn = syn6_with_mss(GATEWAY_MAC, (REMOTE6, 33000), (UPLINK_ADDR6, 8080), false, 1440);
    let (verdict, inside) = fx.run_uplink_xdp(&syn);
    assert_eq!(verdict, XDP_REDIRECT);
    assert_reaches_b(&inspect(&inside), (REMOTE6, 33000));
    assert_eq!(mss_of(&inside), Some(1340), "the SYN's MSS was not clamped to the uplink MTU - 60");
    assert_eq!(fx.count(Path::PublishedXdp), 1);
}

/// Past `INBOUND_FLOWS`' second of trust, as the coarse clock sees it.
fn after_the_cache_is_stale() {
    std::thread::sleep(std::time::Duration::from_millis(1200));
}

#[test]
fn confirmed_ipv6_connections_take_the_cache_for_a_second_and_syns_and_fins_the_long_way() {
    let mut fx = nat66();
    // Loaded now: the verifier's seconds must not pass within the second timed below.
    fx.datapath.xdp_program().unwrap();
    publish6(&mut fx, [0; 16], IPPROTO_TCP, 0, 0);
    let client = (REMOTE6, 33000);
    assert_eq!(
        fx.run_uplink(&tcp6(GATEWAY_MAC, client, (UPLINK_ADDR6, 8080), true, false)).0,
        TC_ACT_REDIRECT
    );
    fx.datapath.set_interface(LO, b_interface(InterfaceConfig::PUBLISHES)).unwrap();
    assert_eq!(fx.run(&tcp6(B_MAC, (B6, 80), client, true, true)).0, TC_ACT_REDIRECT);
    let ack = ack6(client, (UPLINK_ADDR6, 8080), false);
    assert_eq!(fx.run_uplink(&ack).0, TC_ACT_REDIRECT);
    assert_eq!(fx.datapath.dnat_conntrack().unwrap().len(), 1, "the ACK did not confirm the flow");

    // Unpublished: new connections see it at once, and so does a SYN of this one (SYN,
    // FIN and RST take the long way); its other packets go on from the cache for the
    // second its entry is trusted, rewritten as the long way does, in tc and in XDP.
    let key = PublishKey { addr: IpAddress::v6([0; 16]), port: 8080u16.to_be(), proto: IPPROTO_TCP, _pad: 0 };
    fx.datapath.remove_published(&key).unwrap();
    let other = tcp6(GATEWAY_MAC, (REMOTE6, 33001), (UPLINK_ADDR6, 8080), true, false);
    assert_eq!(fx.run_uplink(&other).0, TC_ACT_OK, "a new connection reached an unpublished port");
    let again = tcp6(GATEWAY_MAC, client, (UPLINK_ADDR6, 8080), true, false);
    assert_eq!(fx.run_uplink(&again).0, TC_ACT_OK, "a SYN took the cache");
    let (verdict, inside) = fx.run_uplink(&ack);
    assert_eq!(verdict, TC_ACT_REDIRECT, "a confirmed connection's packet did not take the cache");
    assert_reaches_b(&inspect(&inside), client);
    assert_only_the_destination_changed(&ack, &inside, L4_CSUM_TCP6);
    b_takes_xdp_frames(&mut fx);
    let (verdict, inside) = fx.run_uplink_xdp(&ack);
    assert_eq!(verdict, XDP_REDIRECT, "XDP did not take the cache");
    assert_reaches_b(&inspect(&inside), client);
    assert_only_the_destination_changed(&ack, &inside, L4_CSUM_TCP6);
    assert_eq!((fx.count(Path::Published), fx.count(Path::PublishedXdp)), (3, 1));
    after_the_cache_is_stale();
    assert_eq!(fx.run_uplink(&ack).0, TC_ACT_OK, "a connection outlived its port by more than a second");
    assert_eq!(fx.run_uplink_xdp(&ack).0, XDP_PASS, "a connection outlived its port in XDP");

    // A FIN always takes the long way: it reaches the conntrack entry at once.
    publish6(&mut fx, [0; 16], IPPROTO_TCP, 0, 0);
    assert_eq!(fx.run_uplink(&ack).0, TC_ACT_REDIRECT);
    assert_eq!(fx.run_uplink(&ack6(client, (UPLINK_ADDR6, 8080), true)).0, TC_ACT_REDIRECT);
    let flows = fx.datapath.dnat_conntrack().unwrap();
    assert_eq!(flows.len(), 1);
    assert_eq!(flows[0].1.state, ct_state::CLOSING, "a FIN from the client was not recorded");
}

#[test]
fn from_outside_an_unprotected_container_takes_every_port_over_ipv6_and_its_answers_leave_as_they_are() {
    // Red unprotected (`gateway_mode_ipv6=nat-unprotected`): A's flows are masqueraded.
    let mut fx = nat66();
    fx.datapath
        .set_subnet("fd00:1::/64".parse().unwrap(), RED, RED_GATEWAY6.into(), SubnetInfo::UNPROTECTED)
        .unwrap();
    let (verdict, out) = fx.run(&tcp6(A_MAC, (A6, 40000), (REMOTE6, 80), true, false));
    assert_eq!(verdict, TC_ACT_REDIRECT, "a SYN from an unprotected network was not sent to the uplink");
    assert_masqueraded(&inspect(&out), (REMOTE6, 80));

    // Port 22 of B, published nowhere, is reached as it is, and tracked.
    let client = (REMOTE6, 33000);
    let syn = tcp6(GATEWAY_MAC, client, (B6, 22), true, false);
    let (verdict, inside) = fx.run_uplink(&syn);
    assert_eq!(
        verdict, TC_ACT_REDIRECT,
        "a SYN to an unpublished port of an unprotected container was dropped"
    );
    let seen = inspect(&inside);
    assert_eq!((seen.dst, seen.dport), (B6, 22), "the container's address and port must not change");
    assert_eq!((seen.src, seen.sport), client, "the client's address and port must reach the container");
    assert_eq!(seen.eth_dst, B_MAC, "destination MAC must be the container's");
    assert_untranslated(&syn, &inside, "the SYN");
    let flows = fx.datapath.dnat_unconfirmed().unwrap();
    assert_eq!(flows.len(), 1, "the direct connection was not tracked");
    assert_eq!((flows[0].1.host_addr, flows[0].1.host_port), (IpAddress::v6(B6), 22u16.to_be()), "B's own");
    // B's answer leaves as it is, not masqueraded.
    fx.datapath.set_interface(LO, b_interface(InterfaceConfig::PUBLISHES)).unwrap();
    let syn_ack = tcp6(B_MAC, (B6, 22), client, true, true);
    let (verdict, out) = fx.run(&syn_ack);
    assert_eq!(verdict, TC_ACT_REDIRECT, "the answer was not sent to the uplink");
    let seen = inspect(&out);
    assert_eq!((seen.src, seen.sport), (B6, 22), "the answer's source must stay the container's own");
    assert_eq!(
        (seen.eth_dst, seen.eth_src),
        (GATEWAY_MAC, UPLINK_MAC),
        "the next hop's and the uplink's MACs"
    );
    assert_untranslated(&syn_ack, &out, "the answer");
    assert_eq!((fx.count(Path::PublishedReply), fx.count(Path::Masqueraded)), (1, 1));

    // A datagram and a ping get in as they are.
    let datagram = udp6(GATEWAY_MAC, (REMOTE6, 5000), (B6, 5353));
    let (verdict, inside) = fx.run_uplink(&datagram);
    assert_eq!(verdict, TC_ACT_REDIRECT, "a datagram to an unprotected container was dropped");
    assert_untranslated(&datagram, &inside, "the datagram");
    let ping = echo6(GATEWAY_MAC, REMOTE6, B6, 9, false);
    let (verdict, inside) = fx.run_uplink(&ping);
    assert_eq!(verdict, TC_ACT_REDIRECT, "an echo request to an unprotected container was dropped");
    assert_untranslated(&ping, &inside, "the echo request");
    assert_eq!((fx.count(Path::Published), fx.count(Path::RoutedIn)), (2, 1));
    // B's echo reply, which no flow tracks, leaves as it is (its interface says so).
    fx.datapath
        .set_interface(LO, b_interface(InterfaceConfig::PUBLISHES | InterfaceConfig::UNPROTECTED_V6))
        .unwrap();
    let pong = echo6(B_MAC, B6, REMOTE6, 9, true);
    let (verdict, out) = fx.run(&pong);
    assert_eq!(verdict, TC_ACT_REDIRECT, "the echo reply was not sent to the uplink");
    assert_eq!((inspect(&out).eth_dst, inspect(&out).eth_src), (GATEWAY_MAC, UPLINK_MAC));
    assert_untranslated(&pong, &out, "the echo reply");
    assert_eq!(fx.count(Path::Routed), 1);

    // No container at the address: dropped. Blue (NAT66) stays closed.
    let (verdict, _) = fx.run_uplink(&tcp6(GATEWAY_MAC, client, (datapath::v6(1, 0x77), 22), true, false));
    assert_eq!(verdict, TC_ACT_SHOT, "a SYN for no container must be dropped");
    let to_blue = tcp6(GATEWAY_MAC, client, (datapath::BLUE_ENDPOINT6, 22), true, false);
    assert_eq!(
        fx.run_uplink(&to_blue),
        (TC_ACT_SHOT, to_blue),
        "a NAT66 network's container must stay closed"
    );
    assert_eq!(fx.count(Path::DroppedUnpublished), 2);
}

/// Extension headers of 8 bytes, as `behind` puts them between a frame's fixed IPv6 header
/// and its upper layer (which fills in their next header fields): hop-by-hop and
/// destination options with a PadN option, and the fragment headers of a datagram's first
/// fragment (offset 0, more to come) and of a later one (offset 1448).
const HOP_BY_HOP: (u8, [u8; 8]) = (0, [0, 0, 1, 4, 0, 0, 0, 0]);
const DESTINATION_OPTIONS: (u8, [u8; 8]) = (60, [0, 0, 1, 4, 0, 0, 0, 0]);
const FIRST_FRAGMENT: (u8, [u8; 8]) = (44, [0, 0, 0, 1, 0, 0, 0, 7]);
const LATER_FRAGMENT: (u8, [u8; 8]) = (44, [0, 0, 0x05, 0xa9, 0, 0, 0, 7]);
/// A hop-by-hop header that claims 1,608 bytes, more than any frame here holds.
const CUT_SHORT: (u8, [u8; 8]) = (0, [0, 200, 1, 4, 0, 0, 0, 0]);

/// `frame` (IPv6 without extension headers) with `headers` between its fixed header and its
/// upper layer, in this order, as its sender would put them: chained by their next header
/// fields, counted in the payload length. The upper layer is as it was, its checksum
/// included: the pseudo header holds no extension header.
fn behind(frame: &[u8], headers: &[(u8, [u8; 8])]) -> Vec<u8> {
    let mut chain = vec![];
    let mut next = frame[20];
    for (header, bytes) in headers.iter().rev() {
        let mut bytes = *bytes;
        bytes[0] = next;
        chain.splice(0..0, bytes);
        next = *header;
    }
    let mut extended = frame[..54].to_vec();
    extended[20] = next;
    let payload_len = u16::from_be_bytes([frame[18], frame[19]]) + chain.len() as u16;
    extended[18..20].copy_from_slice(&payload_len.to_be_bytes());
    extended.extend(chain);
    extended.extend(&frame[54..]);
    extended
}

#[test]
fn a_routed_containers_flows_behind_extension_headers_leave_tracked_and_their_replies_come_back() {
    let mut fx = routed();
    // A datagram behind a destination options header leaves as it is, its flow tracked by
    // the ports the walk finds behind the header.
    let query = behind(&udp6(A_MAC, (A6, 5353), (REMOTE6, 53)), &[DESTINATION_OPTIONS]);
    let (verdict, out) = fx.run(&query);
    assert_eq!(verdict, TC_ACT_REDIRECT, "a datagram behind a destination options header did not leave");
    assert_eq!(macs(&out), (GATEWAY_MAC, UPLINK_MAC), "the next hop's (FIB) and the uplink's MACs");
    assert_untranslated(&query, &out, "the datagram");
    assert_eq!((fx.count(Path::Routed), fx.count(Path::SlowPathIp)), (1, 0));
    let flows = fx.datapath.conntrack_unconfirmed().unwrap();
    assert_eq!(flows.len(), 1, "the flow behind the extension header was not tracked");
    let (key, entry) = &flows[0];
    assert_eq!((key.src, key.dst), (IpAddress::v6(A6), IpAddress::v6(REMOTE6)), "the flow's addresses");
    assert_eq!(
        (key.proto, key.src_port, key.dst_port),
        (IPPROTO_UDP, 5353u16.to_be(), 53u16.to_be()),
        "the flow key holds the upper layer's protocol and ports, not the extension header's"
    );
    assert_eq!(
        (entry.nat_addr, entry.nat_port),
        (IpAddress::v6(A6), 5353u16.to_be()),
        "a routed flow's address and port are the container's own"
    );

    // Its answers, behind either header or none, go into the container as they are.
    let answer = udp6(GATEWAY_MAC, (REMOTE6, 53), (A6, 5353));
    for (what, answer) in [
        ("a destination options header", behind(&answer, &[DESTINATION_OPTIONS])),
        ("a hop-by-hop header", behind(&answer, &[HOP_BY_HOP])),
        ("both", behind(&answer, &[HOP_BY_HOP, DESTINATION_OPTIONS])),
        ("no extension header", answer.clone()),
    ] {
        let (verdict, inside) = fx.run_uplink(&answer);
        assert_eq!(verdict, TC_ACT_REDIRECT, "an answer behind {what} was not sent into the container");
        assert_eq!(macs(&inside).0, A_MAC, "an answer behind {what} must go to the container's MAC");
        assert_untranslated(&answer, &inside, &format!("the answer behind {what}"));
    }
    assert_eq!((fx.count(Path::RoutedIn), fx.count(Path::DroppedUnpublished)), (4, 0));

    // A SYN behind a hop-by-hop header, its SYN-ACK behind a destination options header:
    // the connection is tracked, and the SYN-ACK's flags recorded.
    let syn = behind(&tcp6(A_MAC, (A6, 40000), (REMOTE6, 80), true, false), &[HOP_BY_HOP]);
    let (verdict, out) = fx.run(&syn);
    assert_eq!(verdict, TC_ACT_REDIRECT, "a SYN behind a hop-by-hop header did not leave");
    assert_untranslated(&syn, &out, "the SYN");
    let syn_ack = behind(&tcp6(GATEWAY_MAC, (REMOTE6, 80), (A6, 40000), true, true), &[DESTINATION_OPTIONS]);
    let (verdict, inside) = fx.run_uplink(&syn_ack);
    assert_eq!(verdict, TC_ACT_REDIRECT, "the SYN-ACK was not sent into the container");
    assert_eq!(macs(&inside).0, A_MAC, "the SYN-ACK must go to the container's MAC");
    assert_untranslated(&syn_ack, &inside, "the SYN-ACK");
    let connection = fx.datapath.conntrack_unconfirmed().unwrap();
    let connection = connection.iter().find(|(key, _)| key.proto == IPPROTO_TCP);
    assert_eq!(
        connection.map(|(_, entry)| entry.state),
        Some(ct_state::ESTABLISHED),
        "the SYN-ACK behind its extension header was not recorded"
    );

    // A datagram in fragments: the first, ports and all, tracked; a later one (no ports in
    // it) leaves as it is, as every packet of a routed network may.
    let datagram = udp6(A_MAC, (A6, 6000), (REMOTE6, 443));
    for (what, fragment) in
        [("first", behind(&datagram, &[FIRST_FRAGMENT])), ("later", behind(&datagram, &[LATER_FRAGMENT]))]
    {
        let (verdict, out) = fx.run(&fragment);
        assert_eq!(verdict, TC_ACT_REDIRECT, "the {what} fragment did not leave");
        assert_untranslated(&fragment, &out, &format!("the {what} fragment"));
    }
    let flows = fx.datapath.conntrack_unconfirmed().unwrap();
    assert_eq!(flows.len(), 3, "the first fragment's flow was not tracked, or a later one made one");
    assert_eq!((fx.count(Path::Routed), fx.count(Path::SlowPathIp)), (4, 0));
}

#[test]
fn from_outside_a_routed_container_takes_its_published_ports_behind_extension_headers() {
    let mut fx = routed();
    publish_on_bs_own_address(&mut fx);
    let client = (REMOTE6, 33000);
    let syn = behind(&tcp6(GATEWAY_MAC, client, (B6, 80), true, false), &[DESTINATION_OPTIONS]);
    let (verdict, inside) = fx.run_uplink(&syn);
    assert_eq!(verdict, TC_ACT_REDIRECT, "a SYN behind extension headers to a published port was dropped");
    assert_eq!(macs(&inside).0, B_MAC, "destination MAC must be the container's");
    assert_untranslated(&syn, &inside, "the SYN to the published port");
    assert_eq!((fx.count(Path::Published), fx.count(Path::DroppedUnpublished)), (1, 0));
    let flows = fx.datapath.dnat_unconfirmed().unwrap();
    assert_eq!(flows.len(), 1, "the connection was not tracked");
    assert_eq!(
        (flows[0].0.src, flows[0].0.src_port, flows[0].0.dst, flows[0].0.dst_port),
        (IpAddress::v6(B6), 80u16.to_be(), IpAddress::v6(REMOTE6), 33000u16.to_be()),
        "flow key: B's port and the client's"
    );
    // B answers (no extension header); the client's ACK, behind a hop-by-hop header,
    // acknowledges the answer (B's sequence number, 1000, + 1) and confirms the connection.
    fx.datapath
        .set_interface(LO, b_interface(InterfaceConfig::PUBLISHES | InterfaceConfig::ROUTED_V6))
        .unwrap();
    let (verdict, _) = fx.run(&tcp6(B_MAC, (B6, 80), client, true, true));
    assert_eq!(verdict, TC_ACT_REDIRECT, "B's answer did not leave");
    let ack = behind(&ack6(client, (B6, 80), false), &[HOP_BY_HOP]);
    let (verdict, inside) = fx.run_uplink(&ack);
    assert_eq!(verdict, TC_ACT_REDIRECT, "the client's ACK behind a hop-by-hop header was dropped");
    assert_untranslated(&ack, &inside, "the client's ACK");
    assert_eq!(
        fx.datapath.dnat_conntrack().unwrap().len(),
        1,
        "the ACK behind its header did not confirm the flow"
    );

    // Another port of B stays closed behind extension headers too.
    let other = behind(&tcp6(GATEWAY_MAC, client, (B6, 81), true, false), &[DESTINATION_OPTIONS]);
    assert_eq!(fx.run_uplink(&other), (TC_ACT_SHOT, other), "a SYN to an unpublished port must be dropped");
    assert_eq!(fx.count(Path::DroppedUnpublished), 1);
    // ICMPv6 is let in, behind a hop-by-hop header too.
    let ping = behind(&echo6(GATEWAY_MAC, REMOTE6, B6, 9, false), &[HOP_BY_HOP]);
    let (verdict, inside) = fx.run_uplink(&ping);
    assert_eq!(verdict, TC_ACT_REDIRECT, "an echo request behind a hop-by-hop header was not let in");
    assert_eq!(macs(&inside).0, B_MAC, "the echo request must go to the container's MAC");
    assert_untranslated(&ping, &inside, "the echo request");
    assert_eq!(fx.count(Path::RoutedIn), 1);

    // What hides its ports: a later fragment, more extension headers than are read, a
    // chain cut short. Dropped and counted: no flow or port can be told from it, and the
    // host would forward it unchecked.
    assert_unreadable_chains_are_dropped(&mut fx, (B6, 80));
}

/// Frames from outside for `to` (a container's address and port) whose ports their
/// extension headers hide are dropped and counted (`dropped_ipv6_headers`), never let in
/// nor left to the host.
fn assert_unreadable_chains_are_dropped(fx: &mut Fixture, to: ([u8; 16], u16)) {
    let datagram = udp6(GATEWAY_MAC, (REMOTE6, 53), to);
    let dropped_before = fx.count(Path::DroppedIpv6Headers);
    for (what, frame) in [
        ("a later fragment", behind(&datagram, &[LATER_FRAGMENT])),
        ("more extension headers than are read", behind(&datagram, &[DESTINATION_OPTIONS; 5])),
        ("a chain cut short", behind(&datagram, &[CUT_SHORT])),
    ] {
        assert_eq!(fx.run_uplink(&frame), (TC_ACT_SHOT, frame), "{what} must be dropped");
    }
    assert_eq!(fx.count(Path::DroppedIpv6Headers) - dropped_before, 3, "each such frame must be counted");
}

#[test]
fn from_outside_an_unprotected_container_takes_every_port_behind_extension_headers() {
    let mut fx = nat66();
    fx.datapath
        .set_subnet("fd00:1::/64".parse().unwrap(), RED, RED_GATEWAY6.into(), SubnetInfo::UNPROTECTED)
        .unwrap();
    let client = (REMOTE6, 33000);
    let syn = behind(&tcp6(GATEWAY_MAC, client, (B6, 22), true, false), &[DESTINATION_OPTIONS]);
    let (verdict, inside) = fx.run_uplink(&syn);
    assert_eq!(
        verdict, TC_ACT_REDIRECT,
        "a SYN behind extension headers to an unprotected container was dropped"
    );
    assert_eq!(macs(&inside).0, B_MAC, "destination MAC must be the container's");
    assert_untranslated(&syn, &inside, "the SYN");
    let flows = fx.datapath.dnat_unconfirmed().unwrap();
    assert_eq!(flows.len(), 1, "the direct connection was not tracked");
    assert_eq!(
        (flows[0].1.host_addr, flows[0].1.host_port),
        (IpAddress::v6(B6), 22u16.to_be()),
        "the address and port the client sent to: B's own"
    );
    let datagram = behind(&udp6(GATEWAY_MAC, (REMOTE6, 5000), (B6, 5353)), &[HOP_BY_HOP]);
    let (verdict, inside) = fx.run_uplink(&datagram);
    assert_eq!(verdict, TC_ACT_REDIRECT, "a datagram behind a hop-by-hop header was dropped");
    assert_untranslated(&datagram, &inside, "the datagram");
    let ping = behind(&echo6(GATEWAY_MAC, REMOTE6, B6, 9, false), &[DESTINATION_OPTIONS]);
    let (verdict, inside) = fx.run_uplink(&ping);
    assert_eq!(verdict, TC_ACT_REDIRECT, "an echo request behind extension headers was dropped");
    assert_untranslated(&ping, &inside, "the echo request");
    assert_eq!((fx.count(Path::Published), fx.count(Path::RoutedIn)), (2, 1));
    assert_eq!(fx.count(Path::DroppedUnpublished), 0);
    assert_unreadable_chains_are_dropped(&mut fx, (B6, 22));
}

#[test]
fn ipv6_behind_extension_headers_never_leaves_a_nat66_network_with_the_containers_own_address() {
    // NAT66 translates no packet behind extension headers: left to the kernel, it would
    // leave untranslated, with the container's private address, wherever the host
    // forwards IPv6 (net.ipv6.conf.all.forwarding=1). Dropped and counted instead, from
    // an unprotected network too (masqueraded out as well).
    for flags in [0, SubnetInfo::UNPROTECTED] {
        let mut fx = nat66();
        fx.datapath.set_subnet("fd00:1::/64".parse().unwrap(), RED, RED_GATEWAY6.into(), flags).unwrap();
        let datagram = udp6(A_MAC, (A6, 5353), (REMOTE6, 53));
        let frames = [
            ("a datagram behind a destination options header", behind(&datagram, &[DESTINATION_OPTIONS])),
            (
                "a SYN behind a hop-by-hop header",
                behind(&tcp6(A_MAC, (A6, 40000), (REMOTE6, 80), true, false), &[HOP_BY_HOP]),
            ),
            (
                "an echo request behind a destination options header",
                behind(&echo6(A_MAC, A6, REMOTE6, 7, false), &[DESTINATION_OPTIONS]),
            ),
            ("a datagram's first fragment", behind(&datagram, &[FIRST_FRAGMENT])),
            ("a datagram's later fragment", behind(&datagram, &[LATER_FRAGMENT])),
        ];
        for (what, frame) in &frames {
            assert_eq!(
                fx.run(frame),
                (TC_ACT_SHOT, frame.clone()),
                "{what} must not leave (subnet flags {flags})"
            );
        }
        assert_eq!(fx.count(Path::DroppedIpv6Headers), frames.len() as u64, "each must be counted");
        assert_eq!((fx.count(Path::Masqueraded), fx.count(Path::SlowPathIp)), (0, 0));
        assert!(fx.datapath.conntrack_unconfirmed().unwrap().is_empty(), "no flow may be tracked for them");
        // For the host itself (the uplink's address), it stays the host's.
        let to_host = behind(&udp6(A_MAC, (A6, 5353), (UPLINK_ADDR6, 53)), &[DESTINATION_OPTIONS]);
        assert_eq!(fx.run(&to_host), (TC_ACT_OK, to_host), "the host's own traffic is the kernel's");
    }
}
