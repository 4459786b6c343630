//! Masquerade through BPF_PROG_TEST_RUN: SNAT out of `from_container`, reverse SNAT in
//! `from_uplink`, with every rewritten field and both checksums checked, conntrack state,
//! and the refusals (internal networks, exhausted ports, fragments); DNAT to published
//! ports in tc and XDP, and the firewall in front of them.

use dataplane::{
    firewall::{Action, Installed, RuleSpec, Rules},
    ports::{PortMapping, Proto},
};
use dataplane_common::{Backend, DnatEntry, DropReason, InterfaceConfig, MonitorEvent, Path, ct_state};
use dataplane_tests::datapath::{
    self, A_MAC, B_MAC, Fixture, GATEWAY_MAC, PseudoHeader, Quoted, Seen, TC_ACT_OK, TC_ACT_REDIRECT,
    TC_ACT_SHOT, UPLINK_ADDR, UPLINK_MAC, XDP_DROP, XDP_PASS, XDP_REDIRECT, b_interface, checked_ports,
    checked_quote, icmp_echo, red_interface, tcp_segment as segment,
};
use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};

const CONTAINER: [u8; 4] = [10, 1, 0, 2];
const REMOTE: [u8; 4] = [198, 51, 100, 7];
const REMOTE6: [u8; 16] = [0x20, 1, 0x0d, 0xb8, 0, 0x99, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7];

fn tcp(
    src_mac: [u8; 6],
    src: [u8; 4],
    sport: u16,
    dst: [u8; 4],
    dport: u16,
    syn: bool,
    ack: bool,
) -> Vec<u8> {
    let mut b =
        PacketBuilder::ethernet2(src_mac, UPLINK_MAC).ipv4(src, dst, 64).tcp(sport, dport, 1000, 64000);
    if syn {
        b = b.syn();
    }
    if ack {
        b = b.ack(1);
    }
    let mut frame = vec![];
    b.write(&mut frame, b"payload!").unwrap();
    frame
}

fn udp(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(A_MAC, UPLINK_MAC).ipv4(src, dst, 64).udp(sport, dport);
    let mut frame = vec![];
    b.write(&mut frame, b"query").unwrap();
    frame
}

/// Every masqueraded flow: the confirmed ones (SNAT_CT), then the others (SNAT_NEW).
fn masqueraded(fx: &mut Fixture) -> Vec<(dataplane_common::FlowKey, dataplane_common::SnatEntry)> {
    let mut flows = fx.datapath.conntrack().unwrap();
    flows.extend(fx.datapath.conntrack_unconfirmed().unwrap());
    flows
}

/// The parsed frame with both checksums verified.
fn inspect(frame: &[u8]) -> Seen<[u8; 4]> {
    let packet = SlicedPacket::from_ethernet(frame).expect("a parsable frame");
    let eth = packet.link.unwrap().to_header().unwrap().ethernet2().unwrap();
    let etherparse::NetSlice::Ipv4(ip) = packet.net.unwrap() else { panic!("not IPv4") };
    let header = ip.header().to_header();
    assert_eq!(header.header_checksum, header.calc_header_checksum(), "IPv4 header checksum is wrong");
    let transport = packet.transport.unwrap();
    let ports = checked_ports(&transport, PseudoHeader::V4(&header));
    let ports = ports.unwrap_or_else(|| match transport {
        TransportSlice::Icmpv4(icmp) => {
            let header4 = icmp.header();
            assert_eq!(
                icmp.checksum(),
                header4.icmp_type.calc_checksum(icmp.payload()),
                "ICMP checksum is wrong"
            );
            match header4.icmp_type {
                etherparse::Icmpv4Type::EchoRequest(e) | etherparse::Icmpv4Type::EchoReply(e) => (e.id, e.id),
                other => panic!("unexpected ICMP {other:?}"),
            }
        }
        other => panic!("unexpected transport {other:?}"),
    });
    Seen::new(&eth, header.source, header.destination, ports)
}

#[test]
fn snat_out_and_reverse_snat_in_rewrite_tcp_with_valid_checksums() {
    let mut fx = Fixture::new(0);
    fx.enable_nat(61000, 61999);
    let (verdict, out) = fx.run(&tcp(A_MAC, CONTAINER, 40000, REMOTE, 80, true, false));
    assert_eq!(verdict, TC_ACT_REDIRECT, "SYN to the outside was not sent to the uplink");
    let seen = inspect(&out);
    assert_eq!(seen.src, UPLINK_ADDR, "src IP was not SNAT'ed to the uplink address");
    assert!((61000..=61999).contains(&seen.sport), "src port {} outside the NAT range", seen.sport);
    assert_eq!((seen.dst, seen.dport), (REMOTE, 80), "destination must not change");
    assert_eq!(seen.eth_dst, GATEWAY_MAC, "next hop MAC from the FIB");
    assert_eq!(fx.count(Path::Masqueraded), 1);
    let flows = fx.datapath.conntrack_unconfirmed().unwrap();
    assert_eq!(flows.len(), 1);
    assert_eq!(flows[0].1.state, ct_state::NEW);

    // The reply comes back to the uplink address and the chosen port.
    let (verdict, back) = fx.run_uplink(&tcp(GATEWAY_MAC, REMOTE, 80, UPLINK_ADDR, seen.sport, true, true));
    assert_eq!(verdict, TC_ACT_REDIRECT, "reply was not sent back into the container");
    let seen_back = inspect(&back);
    assert_eq!(seen_back.dst, CONTAINER, "dst IP was not reverse-SNAT'ed");
    assert_eq!(seen_back.dport, 40000, "dst port was not restored");
    assert_eq!((seen_back.src, seen_back.sport), (REMOTE, 80));
    assert_eq!(seen_back.eth_dst, A_MAC, "reply must go to the container's MAC");
    let answered = fx.datapath.conntrack_unconfirmed().unwrap();
    assert_eq!(answered[0].1.state, ct_state::ESTABLISHED, "the reply was not recorded");
    assert!(fx.datapath.conntrack().unwrap().is_empty(), "an answer alone confirmed the flow");

    // The container's next packet confirms it, and keeps its port; a RST closes it.
    let (_, again) = fx.run(&tcp(A_MAC, CONTAINER, 40000, REMOTE, 80, false, true));
    assert_eq!(inspect(&again).sport, seen.sport);
    assert_eq!(fx.datapath.conntrack().unwrap()[0].1.state, ct_state::ESTABLISHED);
    assert!(fx.datapath.conntrack_unconfirmed().unwrap().is_empty(), "a confirmed flow stayed in SNAT_NEW");
    let mut rst = tcp(A_MAC, CONTAINER, 40000, REMOTE, 80, false, true);
    rst[14 + 20 + 13] |= 0x04;
    let _ = fx.run(&rst);
    assert_eq!(fx.datapath.conntrack().unwrap()[0].1.state, ct_state::CLOSED);
}

/// Opens a TCP connection out from A's port `sport` to REMOTE:80 as a real client does:
/// the SYN, the remote's SYN-ACK (sequence 7000), A's ACK, which confirms it. Returns its
/// masquerade port and that ACK, to send again.
fn connect_out(fx: &mut Fixture, sport: u16) -> (u16, Vec<u8>) {
    let (verdict, out) = fx.run(&segment(A_MAC, (CONTAINER, sport), (REMOTE, 80), "S", 1000, 0));
    assert_eq!(verdict, TC_ACT_REDIRECT, "the SYN did not leave");
    let port = inspect(&out).sport;
    let syn_ack = segment(GATEWAY_MAC, (REMOTE, 80), (UPLINK_ADDR, port), "SA", 7000, 1001);
    assert_eq!(fx.run_uplink(&syn_ack).0, TC_ACT_REDIRECT, "the SYN-ACK did not come back");
    let ack = segment(A_MAC, (CONTAINER, sport), (REMOTE, 80), "A", 1001, 7001);
    assert_eq!(fx.run(&ack).0, TC_ACT_REDIRECT, "the ACK did not leave");
    (port, ack)
}

#[test]
fn a_masqueraded_flow_reset_or_refused_by_the_container_is_never_confirmed() {
    let mut fx = Fixture::new(0);
    fx.enable_nat(61000, 61999);
    // Reset by the remote: the container's next packet confirms nothing.
    let (_, out) = fx.run(&segment(A_MAC, (CONTAINER, 40000), (REMOTE, 80), "S", 1000, 0));
    let port = inspect(&out).sport;
    let reset = segment(GATEWAY_MAC, (REMOTE, 80), (UPLINK_ADDR, port), "RA", 0, 1001);
    assert_eq!(fx.run_uplink(&reset).0, TC_ACT_REDIRECT, "the reset did not reach the container");
    let _ = fx.run(&segment(A_MAC, (CONTAINER, 40000), (REMOTE, 80), "A", 1001, 1));
    assert!(fx.datapath.conntrack().unwrap().is_empty(), "a reset flow was confirmed");
    // A SYN-ACK the container's stack refuses (a SYN flood's, sent from a raw socket):
    // its RST confirms nothing either.
    let (_, out) = fx.run(&segment(A_MAC, (CONTAINER, 40001), (REMOTE, 80), "S", 1000, 0));
    let port = inspect(&out).sport;
    let _ = fx.run_uplink(&segment(GATEWAY_MAC, (REMOTE, 80), (UPLINK_ADDR, port), "SA", 7000, 1001));
    let _ = fx.run(&segment(A_MAC, (CONTAINER, 40001), (REMOTE, 80), "R", 1001, 0));
    assert!(fx.datapath.conntrack().unwrap().is_empty(), "a refused SYN-ACK confirmed its flow");
    let states: Vec<u8> = fx.datapath.conntrack_unconfirmed().unwrap().iter().map(|(_, e)| e.state).collect();
    assert_eq!(states, [ct_state::CLOSED, ct_state::CLOSED]);
    // A real handshake is confirmed, and its ACK left with the flow's port.
    let (port, ack) = connect_out(&mut fx, 40002);
    let confirmed = fx.datapath.conntrack().unwrap();
    assert_eq!(confirmed.len(), 1, "the handshake did not confirm the flow");
    assert_eq!((u16::from_be(confirmed[0].0.src_port), u16::from_be(confirmed[0].1.nat_port)), (40002, port));
    let (verdict, out) = fx.run(&ack);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    let seen = inspect(&out);
    assert_eq!((seen.src, seen.sport, seen.dst, seen.dport), (UPLINK_ADDR, port, REMOTE, 80));
}

#[test]
fn a_flood_of_new_flows_out_pushes_out_only_new_flows() {
    const TABLE: u32 = 1024;
    let mut fx = Fixture::with_conntrack_max(0, TABLE);
    fx.enable_nat(1024, 65535);
    let (port, ack) = connect_out(&mut fx, 40000);
    // Four tables' worth of new flows, each answered (so that its entries are looked up
    // again, as the connection's are).
    for i in 0..4 * TABLE {
        let remote = [198, 18, (i >> 8) as u8, i as u8];
        let (verdict, out) = fx.run(&udp(CONTAINER, 5353, remote, 53));
        assert_eq!(verdict, TC_ACT_REDIRECT, "flow {i} of the flood did not leave");
        let answer = udp(remote, 53, UPLINK_ADDR, inspect(&out).sport);
        assert_eq!(fx.run_uplink(&answer).0, TC_ACT_REDIRECT, "the answer to flow {i} did not come back");
    }
    let new = fx.datapath.conntrack_unconfirmed().unwrap().len();
    assert!(new <= TABLE as usize, "SNAT_NEW holds {new} flows, more than its {TABLE} entries");
    let confirmed = fx.datapath.conntrack().unwrap();
    assert_eq!(confirmed.len(), 1, "the flood entered the confirmed table or evicted the connection");
    // The connection goes on both ways, with its port.
    let (verdict, out) = fx.run(&ack);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!((inspect(&out).src, inspect(&out).sport), (UPLINK_ADDR, port), "the connection lost its port");
    let data = segment(GATEWAY_MAC, (REMOTE, 80), (UPLINK_ADDR, port), "A", 7001, 1009);
    let (verdict, back) = fx.run_uplink(&data);
    assert_eq!(verdict, TC_ACT_REDIRECT, "the connection's reply was not translated back");
    let seen = inspect(&back);
    assert_eq!((seen.src, seen.sport, seen.dst, seen.dport), (REMOTE, 80, CONTAINER, 40000));
}

#[test]
fn masqueraded_flows_survive_a_reload_and_the_pins_of_the_version_before_snat_new() {
    let mut fx = Fixture::new(0);
    fx.enable_nat(61000, 61999);
    let (port, ack) = connect_out(&mut fx, 40000);
    let _ = fx.run(&udp(CONTAINER, 5000, REMOTE, 53));
    fx.reload();
    assert_eq!(fx.datapath.conntrack().unwrap().len(), 1, "the confirmed flow did not survive");
    assert_eq!(fx.datapath.conntrack_unconfirmed().unwrap().len(), 1, "the unconfirmed flow did not survive");
    // What the version before left: SNAT_CT and SNAT_REV as they are, no SNAT_NEW or
    // SNAT_REV_NEW.
    let dir = fx.maps_dir();
    for map in ["SNAT_NEW", "SNAT_REV_NEW"] {
        std::fs::remove_file(dir.join(map)).unwrap();
    }
    fx.reload();
    for map in ["SNAT_NEW", "SNAT_REV_NEW"] {
        assert!(dir.join(map).exists(), "{map} was not pinned");
    }
    assert_eq!(fx.datapath.conntrack().unwrap().len(), 1, "the confirmed flow was lost");
    let (_, out) = fx.run(&ack);
    assert_eq!(inspect(&out).sport, port, "the connection lost its port");
    let data = segment(GATEWAY_MAC, (REMOTE, 80), (UPLINK_ADDR, port), "A", 7001, 1009);
    let (verdict, back) = fx.run_uplink(&data);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!((inspect(&back).dst, inspect(&back).dport), (CONTAINER, 40000));
}

/// The MAC the uplink's neighbour table gives the default gateway from now on.
fn move_gateway_to(mac: &str) {
    let status = std::process::Command::new("ip")
        .args(["neigh", "replace", "203.0.113.2", "lladdr", mac, "dev", "up0"])
        .status()
        .unwrap();
    assert!(status.success(), "changing the gateway's neighbour entry");
}

/// Past `NextHop::TRUSTED_NS`, and the route cache's trust, as the coarse clock sees it.
fn after_the_next_hop_is_stale() {
    std::thread::sleep(std::time::Duration::from_millis(1200));
}

const MOVED_GATEWAY_MAC: [u8; 6] = [2, 0, 0, 0, 0, 9];

#[test]
fn established_flows_skip_the_route_for_a_second_then_ask_again() {
    let mut fx = Fixture::new(0);
    fx.enable_nat(61000, 61999);
    let syn = tcp(A_MAC, CONTAINER, 40000, REMOTE, 80, true, false);
    let (_, out) = fx.run(&syn);
    let port = inspect(&out).sport;
    let flow = masqueraded(&mut fx)[0].1;
    assert_eq!(flow.next_hop.dmac, GATEWAY_MAC, "the flow did not keep its next hop");
    assert_ne!(flow.next_hop.checked_ns, 0);

    // Within the second, the flow goes by what it knows: the old MAC, and no isolation
    // check (a network created meanwhile on the destination's subnet).
    move_gateway_to("02:00:00:00:00:09");
    fx.datapath
        .set_subnet("198.51.100.0/24".parse().unwrap(), 2, "198.51.100.1".parse().unwrap(), 0)
        .unwrap();
    let ack = tcp(A_MAC, CONTAINER, 40000, REMOTE, 80, false, true);
    let (verdict, out) = fx.run(&ack);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    let seen = inspect(&out);
    assert_eq!((seen.src, seen.sport, seen.eth_dst), (UPLINK_ADDR, port, GATEWAY_MAC));
    assert_eq!(fx.count(Path::Masqueraded), 2);

    // Then the long way again: the subnet now belongs to another network.
    after_the_next_hop_is_stale();
    let (verdict, _) = fx.run(&ack);
    assert_eq!(verdict, TC_ACT_SHOT, "a stale flow skipped the isolation check");
    assert_eq!(fx.count(Path::DroppedIsolation), 1);
}

#[test]
fn a_stale_next_hop_is_asked_again() {
    let mut fx = Fixture::new(0);
    fx.enable_nat(61000, 61999);
    let udp_out = udp(CONTAINER, 5353, REMOTE, 53);
    let (_, out) = fx.run(&udp_out);
    assert_eq!(inspect(&out).eth_dst, GATEWAY_MAC);
    move_gateway_to("02:00:00:00:00:09");
    after_the_next_hop_is_stale();
    let (verdict, out) = fx.run(&udp_out);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!(inspect(&out).eth_dst, MOVED_GATEWAY_MAC, "the flow kept a next hop older than a second");
    assert_eq!(masqueraded(&mut fx)[0].1.next_hop.dmac, MOVED_GATEWAY_MAC);
}

#[test]
fn replies_update_their_flow_at_state_changes_and_once_a_second() {
    let mut fx = Fixture::new(0);
    fx.enable_nat(61000, 61999);
    let (_, out) = fx.run(&tcp(A_MAC, CONTAINER, 40000, REMOTE, 80, true, false));
    let port = inspect(&out).sport;
    let reply = |fx: &mut Fixture, fin: bool| {
        let b = PacketBuilder::ethernet2(GATEWAY_MAC, UPLINK_MAC)
            .ipv4(REMOTE, UPLINK_ADDR, 64)
            .tcp(80, port, 5000, 64000);
        let b = if fin { b.ack(1001).fin() } else { b.ack(1001) };
        let mut frame = vec![];
        b.write(&mut frame, b"answer").unwrap();
        let (verdict, back) = fx.run_uplink(&frame);
        assert_eq!(verdict, TC_ACT_REDIRECT);
        assert_eq!(inspect(&back).dport, 40000);
        masqueraded(fx)[0].1
    };
    let first = reply(&mut fx, false);
    assert_eq!(first.state, ct_state::ESTABLISHED, "the first reply must establish the flow");
    after_the_next_hop_is_stale();
    let later = reply(&mut fx, false);
    assert!(later.last_seen_ns > first.last_seen_ns, "replies must keep their flow alive");
    // A FIN right after still counts at once.
    let closing = reply(&mut fx, true);
    assert_eq!(closing.state, ct_state::CLOSING, "a FIN from outside was not recorded");
}

#[test]
fn padded_and_checksumless_udp_is_masqueraded_with_valid_checksums() {
    let mut fx = Fixture::new(0);
    fx.enable_nat(62000, 62099);
    // A short datagram padded to Ethernet's minimum: the IPv4 length is not the packet's,
    // so the checksum cannot be told complete and takes the helper.
    let mut padded = udp(CONTAINER, 5353, REMOTE, 53);
    padded.resize(80, 0);
    let (verdict, out) = fx.run(&padded);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    let seen = inspect(&out);
    assert_eq!(seen.src, UPLINK_ADDR);
    // No checksum (0) stays none.
    let mut bare = udp(CONTAINER, 5354, REMOTE, 53);
    bare[14 + 20 + 6..14 + 20 + 8].copy_from_slice(&[0, 0]);
    let (verdict, out) = fx.run(&bare);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!(&out[14 + 20 + 6..14 + 20 + 8], &[0, 0], "a datagram without a checksum got one");
    assert_eq!(&out[14 + 12..14 + 16], &UPLINK_ADDR, "src IP was not SNAT'ed");
}

#[test]
fn udp_and_icmp_echo_are_masqueraded_both_ways() {
    let mut fx = Fixture::new(0);
    fx.enable_nat(62000, 62099);
    let (verdict, out) = fx.run(&udp(CONTAINER, 5353, REMOTE, 53));
    assert_eq!(verdict, TC_ACT_REDIRECT);
    let seen = inspect(&out);
    assert_eq!(seen.src, UPLINK_ADDR);
    let mut reply = udp(REMOTE, 53, UPLINK_ADDR, seen.sport);
    reply[6..12].copy_from_slice(&GATEWAY_MAC);
    let (verdict, back) = fx.run_uplink(&reply);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    let back = inspect(&back);
    assert_eq!((back.dst, back.dport), (CONTAINER, 5353));

    let (verdict, out) = fx.run(&icmp_echo(A_MAC, CONTAINER, REMOTE, 777, false));
    assert_eq!(verdict, TC_ACT_REDIRECT);
    let seen = inspect(&out);
    assert_eq!(seen.src, UPLINK_ADDR, "ping source was not SNAT'ed");
    assert!((62000..=62099).contains(&seen.sport), "echo id {} not from the range", seen.sport);
    let (verdict, back) = fx.run_uplink(&icmp_echo(GATEWAY_MAC, REMOTE, UPLINK_ADDR, seen.sport, true));
    assert_eq!(verdict, TC_ACT_REDIRECT);
    let back = inspect(&back);
    assert_eq!((back.dst, back.sport), (CONTAINER, 777), "echo reply id was not restored");
    assert_eq!(fx.count(Path::ReverseNat), 2);
}

/// Sets the IPv4 header checksum of `frame` right after a change to its header.
fn fix_ip_checksum(frame: &mut [u8]) {
    frame[24..26].copy_from_slice(&[0, 0]);
    let header = etherparse::Ipv4HeaderSlice::from_slice(&frame[14..]).unwrap().to_header();
    frame[24..26].copy_from_slice(&header.calc_header_checksum().to_be_bytes());
}

/// Packets whose headers do not hold together, each first seen by the hostile-frames test:
/// a container's SYN cut 4 bytes short of its IPv4 total length, one with a wrong header
/// checksum, one with SYN and FIN, a TCP data offset of 4, a UDP length past the packet.
fn malformed_from_container() -> Vec<(&'static str, Vec<u8>)> {
    let syn = segment(A_MAC, (CONTAINER, 40000), (REMOTE, 80), "S", 1000, 0);
    let cut = syn[..syn.len() - 4].to_vec();
    let mut bad_checksum = syn.clone();
    bad_checksum[24] ^= 0x55;
    let syn_fin = segment(A_MAC, (CONTAINER, 40000), (REMOTE, 80), "SF", 1000, 0);
    let mut short_offset = syn.clone();
    short_offset[34 + 12] = 0x40;
    let mut long_udp = udp(CONTAINER, 5000, REMOTE, 53);
    long_udp[34 + 4..34 + 6].copy_from_slice(&200u16.to_be_bytes());
    vec![
        ("cut short of its total length", cut),
        ("wrong header checksum", bad_checksum),
        ("SYN and FIN", syn_fin),
        ("TCP data offset 4", short_offset),
        ("UDP length past the packet", long_udp),
    ]
}

#[test]
fn malformed_packets_from_a_container_are_dropped_untracked_not_masqueraded() {
    let mut fx = Fixture::new(0);
    fx.enable_nat(61000, 61999);
    for (what, frame) in malformed_from_container() {
        let (verdict, _) = fx.run(&frame);
        assert_eq!(verdict, TC_ACT_SHOT, "a packet with {what} left the host");
        assert!(masqueraded(&mut fx).is_empty(), "a packet with {what} made a conntrack entry");
    }
    assert_eq!(fx.count(Path::DroppedMalformed), 5);
    assert_eq!(fx.count(Path::Masqueraded), 0);
}

#[test]
fn malformed_packets_from_the_uplink_are_left_to_the_host_untranslated() {
    let mut fx = publishing_8080();
    fx.datapath.set_interface(42, b_interface(InterfaceConfig::XDP_TARGET)).unwrap();
    let (_, out) = fx.run(&segment(A_MAC, (CONTAINER, 40000), (REMOTE, 80), "S", 1000, 0));
    let nat_port = inspect(&out).sport;
    let syn_ack = segment(GATEWAY_MAC, (REMOTE, 80), (UPLINK_ADDR, nat_port), "SA", 7000, 1001);
    let syn = segment(GATEWAY_MAC, (REMOTE, 33000), (UPLINK_ADDR, 8080), "S", 1000, 0);
    let mut syn_fin = segment(GATEWAY_MAC, (REMOTE, 33000), (UPLINK_ADDR, 8080), "SF", 1000, 0);
    syn_fin[34 + 13] = 0x03;
    let frames = [
        ("a reply cut short of its total length", syn_ack[..syn_ack.len() - 4].to_vec()),
        ("a SYN to a published port cut short", syn[..syn.len() - 4].to_vec()),
        ("a SYN and FIN to a published port", syn_fin),
    ];
    for (what, frame) in frames {
        let (verdict, out) = fx.run_uplink(&frame);
        assert_eq!((verdict, out), (TC_ACT_OK, frame.clone()), "tc translated {what}");
        let (verdict, out) = fx.run_uplink_xdp(&frame);
        assert_eq!((verdict, out), (XDP_PASS, frame), "XDP translated {what}");
    }
    assert!(fx.datapath.dnat_unconfirmed().unwrap().is_empty(), "a malformed SYN made a conntrack entry");
    assert_eq!(fx.count(Path::ReverseNat) + fx.count(Path::Published) + fx.count(Path::PublishedXdp), 0);
}

#[test]
fn icmp_errors_quoting_a_later_fragment_or_too_little_are_left_to_the_host() {
    let mut fx = Fixture::new(0);
    fx.enable_nat(61000, 61999);
    let (_, out) = fx.run(&udp(CONTAINER, 5000, REMOTE, 53));
    let mut later_fragment = out[14..14 + 28].to_vec();
    later_fragment[6..8].copy_from_slice(&0x00b9u16.to_be_bytes());
    let port_unreachable = |quote: &[u8]| {
        let mut frame = vec![];
        PacketBuilder::ethernet2(GATEWAY_MAC, UPLINK_MAC)
            .ipv4(REMOTE, UPLINK_ADDR, 64)
            .icmpv4(etherparse::Icmpv4Type::DestinationUnreachable(
                etherparse::icmpv4::DestUnreachableHeader::Port,
            ))
            .write(&mut frame, quote)
            .unwrap();
        frame
    };
    let about_fragment = port_unreachable(&later_fragment);
    let mut cut_quote = port_unreachable(&out[14..14 + 28]);
    // The quote's last 4 bytes lie past the outer total length.
    let total = u16::from_be_bytes([cut_quote[16], cut_quote[17]]) - 4;
    cut_quote[16..18].copy_from_slice(&total.to_be_bytes());
    fix_ip_checksum(&mut cut_quote);
    for (what, frame) in [("a later fragment", about_fragment), ("less than 8 bytes of L4", cut_quote)] {
        let (verdict, out) = fx.run_uplink(&frame);
        assert_eq!((verdict, out), (TC_ACT_OK, frame.clone()), "an ICMP error quoting {what} was translated");
    }
    assert_eq!(fx.count(Path::ReverseNat), 0);
}

#[test]
fn unknown_traffic_on_the_uplink_is_left_to_the_host() {
    let mut fx = Fixture::new(0);
    fx.enable_nat(61000, 61010);
    let frame = tcp(GATEWAY_MAC, REMOTE, 80, UPLINK_ADDR, 61005, true, true);
    let (verdict, out) = fx.run_uplink(&frame);
    assert_eq!(verdict, TC_ACT_OK);
    assert_eq!(out, frame, "host traffic must not be touched");
    assert_eq!(fx.count(Path::UplinkToHost), 1);
}

#[test]
fn internal_networks_never_leave_the_host() {
    let mut fx = Fixture::new(InterfaceConfig::INTERNAL);
    fx.enable_nat(61000, 61010);
    let (verdict, _) = fx.run(&tcp(A_MAC, CONTAINER, 40000, REMOTE, 80, true, false));
    assert_eq!(verdict, TC_ACT_SHOT);
    assert_eq!(fx.count(Path::DroppedInternal), 1);
    // The host's own addresses stay reachable.
    let (verdict, _) = fx.run(&tcp(A_MAC, CONTAINER, 40000, UPLINK_ADDR, 80, true, false));
    assert_eq!(verdict, TC_ACT_OK);
    assert!(masqueraded(&mut fx).is_empty());
}

#[test]
fn exhausted_port_range_is_counted_and_dropped() {
    let mut fx = Fixture::new(0);
    fx.enable_nat(61500, 61500);
    let (verdict, _) = fx.run(&tcp(A_MAC, CONTAINER, 40000, REMOTE, 80, true, false));
    assert_eq!(verdict, TC_ACT_REDIRECT);
    // Same destination, another source port: the one NAT port is taken.
    let (verdict, _) = fx.run(&tcp(A_MAC, CONTAINER, 40001, REMOTE, 80, true, false));
    assert_eq!(verdict, TC_ACT_SHOT);
    assert_eq!(fx.count(Path::DroppedNatExhausted), 1);
    // Another destination can reuse the port.
    let (verdict, _) = fx.run(&tcp(A_MAC, CONTAINER, 40001, REMOTE, 443, true, false));
    assert_eq!(verdict, TC_ACT_REDIRECT);
}

/// The programs' diagnostic messages, as the daemon's log would get them.
#[derive(Clone, Default)]
struct Records(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl log::Log for Records {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        let line = format!("{} {} {}", record.level(), record.target(), record.args());
        self.0.lock().unwrap().push(line);
    }
    fn flush(&self) {}
}

/// Two flows to one destination (IPv4 or IPv6) through a range of one port, the programs
/// building their messages up to `level`: what the kernel sent to the log.
fn exhaust_one_port(level: log::LevelFilter, ipv6: bool) -> Vec<String> {
    let mut fx = Fixture::with_kernel_log(0, level);
    fx.enable_nat(61500, 61500);
    let records = Records::default();
    let mut reader = fx.datapath.take_kernel_log(records.clone()).unwrap();
    let flow = |sport| {
        let b = PacketBuilder::ethernet2(A_MAC, UPLINK_MAC);
        let b = if ipv6 { b.ipv6(datapath::A6, REMOTE6, 64) } else { b.ipv4(CONTAINER, REMOTE, 64) };
        let mut frame = vec![];
        b.tcp(sport, 80, 1000, 64000).syn().write(&mut frame, b"").unwrap();
        frame
    };
    let (verdict, _) = fx.run(&flow(40000));
    assert_eq!(verdict, TC_ACT_REDIRECT);
    let (verdict, _) = fx.run(&flow(40001));
    assert_eq!(verdict, TC_ACT_SHOT);
    assert_eq!(fx.count(Path::DroppedNatExhausted), 1);
    reader.flush();
    records.0.lock().unwrap().clone()
}

#[test]
fn an_exhausted_port_range_is_logged_at_debug_with_its_destination() {
    assert_eq!(
        exhaust_one_port(log::LevelFilter::Debug, false),
        [
            "DEBUG dataplane::kernel no masquerade port free in 61500-61500 towards 198.51.100.7 port 80: dropped"
        ],
        "the kernel's message, at debug"
    );
    assert_eq!(
        exhaust_one_port(log::LevelFilter::Debug, true),
        [
            "DEBUG dataplane::kernel no masquerade port free in 61500-61500 towards 2001:db8:99::7 port 80: dropped"
        ],
        "the kernel's message for NAT66, at debug"
    );
    // At the daemon's default level (info) the message is not even built.
    assert_eq!(
        exhaust_one_port(log::LevelFilter::Info, false),
        Vec::<String>::new(),
        "nothing built at info"
    );
}

#[test]
fn below_the_kernel_logs_level_the_loaded_programs_hold_no_message_code() {
    // The kernel's copy of every program after verification: at the daemon's default
    // level the verifier has left each message out; at debug they are there.
    let at_default = Fixture::with_kernel_log(0, log::LevelFilter::Info).kernel_log_instructions();
    assert_eq!(at_default, 0, "instructions building a message were left in at info");
    let at_debug = Fixture::with_kernel_log(0, log::LevelFilter::Debug).kernel_log_instructions();
    assert!(at_debug > 0, "no message code at debug: the count cannot tell the levels apart");
}

#[test]
fn fragments_and_unresolved_next_hops() {
    let mut fx = Fixture::new(0);
    fx.enable_nat(61000, 61010);
    let mut fragment = udp(CONTAINER, 5000, REMOTE, 53);
    fragment[14 + 6] |= 0x20; // more fragments
    let (verdict, out) = fx.run(&fragment);
    assert_eq!(verdict, TC_ACT_OK, "fragments go to the slow path, never mis-translated");
    assert_eq!(out, fragment);
    // A neighbour on the uplink's subnet with no ARP entry yet: the kernel resolves it.
    let (verdict, out) = fx.run(&udp(CONTAINER, 5000, [203, 0, 113, 50], 53));
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!(inspect(&out).src, UPLINK_ADDR);
}

#[test]
fn icmp_errors_about_masqueraded_flows_go_back_translated() {
    let mut fx = Fixture::new(0);
    fx.enable_nat(61000, 61999);
    let (_, out) = fx.run(&udp(CONTAINER, 5000, REMOTE, 53));
    let nat_port = inspect(&out).sport;
    // The remote answers "port unreachable", quoting the packet as it arrived there.
    let quoted = &out[14..14 + 28];
    let b = PacketBuilder::ethernet2(GATEWAY_MAC, UPLINK_MAC).ipv4(REMOTE, UPLINK_ADDR, 64).icmpv4(
        etherparse::Icmpv4Type::DestinationUnreachable(etherparse::icmpv4::DestUnreachableHeader::Port),
    );
    let mut error = vec![];
    b.write(&mut error, quoted).unwrap();
    let (verdict, back) = fx.run_uplink(&error);
    assert_eq!(verdict, TC_ACT_REDIRECT, "the ICMP error was not sent back into the container");
    let seen = SlicedPacket::from_ethernet(&back).unwrap();
    let etherparse::NetSlice::Ipv4(ip) = seen.net.unwrap() else { panic!("not IPv4") };
    let outer = ip.header().to_header();
    assert_eq!(outer.destination, CONTAINER, "outer destination was not translated");
    assert_eq!(outer.header_checksum, outer.calc_header_checksum(), "outer IPv4 checksum is wrong");
    let Some(TransportSlice::Icmpv4(icmp)) = seen.transport else { panic!("not ICMP") };
    assert_eq!(
        icmp.checksum(),
        icmp.header().icmp_type.calc_checksum(icmp.payload()),
        "ICMP checksum is wrong"
    );
    let (inner, rest) = etherparse::Ipv4Header::from_slice(icmp.payload()).unwrap();
    assert_eq!(inner.source, CONTAINER, "quoted source was not translated");
    assert_eq!(inner.header_checksum, inner.calc_header_checksum(), "quoted IPv4 checksum is wrong");
    assert_eq!(u16::from_be_bytes([rest[0], rest[1]]), 5000, "quoted source port was not restored");
    assert_ne!(nat_port, 5000);
    let udp_csum = u16::from_be_bytes([rest[6], rest[7]]);
    let expected =
        etherparse::UdpHeader::from_slice(rest).unwrap().0.calc_checksum_ipv4(&inner, b"query").unwrap();
    assert_eq!(udp_csum, expected, "quoted UDP checksum is wrong");
}

/// An ICMP error of `kind` that a container (`from`: its MAC and address) sends to `to`,
/// quoting the whole of `received`, a frame it got, from its IPv4 header on (as Linux
/// quotes a short packet).
fn error_from(
    from: ([u8; 6], [u8; 4]),
    to: [u8; 4],
    kind: etherparse::Icmpv4Type,
    received: &[u8],
) -> Vec<u8> {
    let mut frame = vec![];
    PacketBuilder::ethernet2(from.0, UPLINK_MAC)
        .ipv4(from.1, to, 64)
        .icmpv4(kind)
        .write(&mut frame, &received[14..])
        .unwrap();
    frame
}

fn port_unreachable() -> etherparse::Icmpv4Type {
    etherparse::Icmpv4Type::DestinationUnreachable(etherparse::icmpv4::DestUnreachableHeader::Port)
}

fn reassembly_time_exceeded() -> etherparse::Icmpv4Type {
    etherparse::Icmpv4Type::TimeExceeded(etherparse::icmpv4::TimeExceededCode::FragmentReassemblyTimeExceeded)
}

/// An ICMP error as it leaves: its destination MAC, outer source and destination (the
/// header's checksum checked), its type (the ICMP checksum checked) and its quote
/// (`checked_quote`).
fn inspect_error(frame: &[u8]) -> ([u8; 6], [u8; 4], [u8; 4], etherparse::Icmpv4Type, Quoted) {
    let packet = SlicedPacket::from_ethernet(frame).expect("a parsable frame");
    let eth = packet.link.unwrap().to_header().unwrap().ethernet2().unwrap();
    let etherparse::NetSlice::Ipv4(ip) = packet.net.unwrap() else { panic!("not IPv4") };
    let outer = ip.header().to_header();
    assert_eq!(outer.header_checksum, outer.calc_header_checksum(), "outer IPv4 checksum is wrong");
    let Some(TransportSlice::Icmpv4(icmp)) = packet.transport else { panic!("not ICMP") };
    let kind = icmp.header().icmp_type;
    assert_eq!(icmp.checksum(), kind.calc_checksum(icmp.payload()), "ICMP checksum is wrong");
    (eth.destination, outer.source, outer.destination, kind, checked_quote(icmp.payload()))
}

fn quoted(src: ([u8; 4], u16), dst: ([u8; 4], u16), payload: &[u8]) -> Quoted {
    Quoted { src: src.0.to_vec(), dst: dst.0.to_vec(), sport: src.1, dport: dst.1, payload: payload.to_vec() }
}

/// Linux conntrack translates the ICMP errors related to a masqueraded flow both ways:
/// the container's own error about a reply it got (its socket closed, say) leaves with
/// the uplink's address outside and the flow's translation inside; without it, it left
/// to the kernel with the container's private address.
#[test]
fn a_containers_icmp_errors_about_its_masqueraded_flows_leave_translated() {
    let mut fx = Fixture::new(0);
    fx.enable_nat(61000, 61999);
    let (_, out) = fx.run(&udp(CONTAINER, 5000, REMOTE, 53));
    let nat_port = inspect(&out).sport;
    let (verdict, reply) = fx.run_uplink(&udp(REMOTE, 53, UPLINK_ADDR, nat_port));
    assert_eq!(verdict, TC_ACT_REDIRECT);
    for kind in [port_unreachable(), reassembly_time_exceeded()] {
        let error = error_from((A_MAC, CONTAINER), REMOTE, kind.clone(), &reply);
        let (verdict, out) = fx.run(&error);
        assert_eq!(verdict, TC_ACT_REDIRECT, "{kind:?} about a masqueraded flow was not sent to the uplink");
        let (eth_dst, src, dst, seen_kind, quote) = inspect_error(&out);
        assert_eq!((src, dst), (UPLINK_ADDR, REMOTE), "{kind:?}: outer source was not translated");
        assert_eq!(eth_dst, GATEWAY_MAC, "next hop MAC from the FIB");
        assert_eq!(seen_kind, kind, "the ICMP type and code must not change");
        assert_eq!(
            quote,
            quoted((REMOTE, 53), (UPLINK_ADDR, nat_port), b"query"),
            "{kind:?}: the quoted destination must be the flow's translation"
        );
    }
    assert_eq!(fx.count(Path::Masqueraded), 3);

    // About a TCP connection: the quoted segment's checksum follows too.
    let (port, _) = connect_out(&mut fx, 40000);
    let (verdict, data) =
        fx.run_uplink(&segment(GATEWAY_MAC, (REMOTE, 80), (UPLINK_ADDR, port), "A", 7001, 1001));
    assert_eq!(verdict, TC_ACT_REDIRECT);
    let (verdict, out) = fx.run(&error_from((A_MAC, CONTAINER), REMOTE, port_unreachable(), &data));
    assert_eq!(
        verdict, TC_ACT_REDIRECT,
        "an error about a masqueraded connection was not sent to the uplink"
    );
    let (_, src, dst, _, quote) = inspect_error(&out);
    assert_eq!((src, dst), (UPLINK_ADDR, REMOTE));
    assert_eq!(
        (quote.src, quote.sport, quote.dst, quote.dport),
        (REMOTE.to_vec(), 80, UPLINK_ADDR.to_vec(), port)
    );

    // An error about no masqueraded flow must not leave with the private address: it is
    // dropped, counted, and shown to a monitor as the other drops are.
    let mut monitor = fx.datapath.take_monitor_maps().unwrap();
    monitor.config.set(0, MonitorEvent::LISTENING, 0).unwrap();
    let mut stray = reply.clone();
    stray[14 + 20 + 2..14 + 20 + 4].copy_from_slice(&5999u16.to_be_bytes());
    let error = error_from((A_MAC, CONTAINER), REMOTE, port_unreachable(), &stray);
    let (verdict, untouched) = fx.run(&error);
    assert_eq!(
        (verdict, untouched),
        (TC_ACT_SHOT, error),
        "an error about no flow must be dropped untouched"
    );
    assert_eq!(fx.count(Path::DroppedUntrackedIcmp), 1);
    let item = monitor.events.next().expect("no monitor event for the drop");
    // SAFETY: a whole MonitorEvent, plain data.
    let event = unsafe { item.as_ptr().cast::<MonitorEvent>().read_unaligned() };
    assert_eq!(
        (event.kind, event.reason, event.path, event.hook),
        (
            MonitorEvent::DROP,
            DropReason::UntrackedIcmp as u8,
            Path::DroppedUntrackedIcmp as u8,
            dataplane_common::Hook::FromContainer as u8
        ),
        "the drop's event"
    );
    drop(item);
    monitor.config.set(0, 0, 0).unwrap();
    // So must one quoting another address than its sender's.
    let mut other = reply.clone();
    other[14 + 16..14 + 20].copy_from_slice(&B_ADDR);
    fix_ip_checksum(&mut other);
    let (verdict, _) = fx.run(&error_from((A_MAC, CONTAINER), REMOTE, port_unreachable(), &other));
    assert_eq!(verdict, TC_ACT_SHOT, "an error quoting another container's flow must be dropped");
    assert_eq!(fx.count(Path::DroppedUntrackedIcmp), 2);
}

/// A container's ICMP error about a packet of a connection to one of its published ports
/// leaves as the connection's replies do: the published address and port in place of its
/// own, outside and in the quote.
#[test]
fn a_containers_icmp_errors_about_connections_to_its_published_ports_leave_as_the_published_address() {
    let mut fx = Fixture::new(0);
    fx.enable_nat(61000, 61999);
    publish_to(&mut fx, (17, 8053), B_ADDR, 42, B_MAC);
    let mut datagram = udp(REMOTE, 40000, UPLINK_ADDR, 8053);
    datagram[6..12].copy_from_slice(&GATEWAY_MAC);
    let (verdict, inside) = fx.run_uplink(&datagram);
    assert_eq!(verdict, TC_ACT_REDIRECT, "the datagram did not reach the published container");
    assert_eq!((inspect(&inside).dst, inspect(&inside).dport), (B_ADDR, 80));
    fx.datapath.set_interface(1, b_interface(InterfaceConfig::PUBLISHES)).unwrap();
    let (verdict, out) = fx.run(&error_from((B_MAC, B_ADDR), REMOTE, port_unreachable(), &inside));
    assert_eq!(verdict, TC_ACT_REDIRECT, "the error about a published flow was not sent to the uplink");
    let (eth_dst, src, dst, kind, quote) = inspect_error(&out);
    assert_eq!((src, dst), (UPLINK_ADDR, REMOTE), "the outer source must be the published address");
    assert_eq!((eth_dst, kind), (GATEWAY_MAC, port_unreachable()));
    assert_eq!(
        quote,
        quoted((REMOTE, 40000), (UPLINK_ADDR, 8053), b"query"),
        "the quoted destination must be the published address and port"
    );
    assert_eq!(fx.count(Path::PublishedReply), 1);
}

#[test]
fn ports_of_reset_flows_are_reused_at_once() {
    let mut fx = Fixture::new(0);
    fx.enable_nat(61500, 61500);
    let (verdict, _) = fx.run(&tcp(A_MAC, CONTAINER, 40000, REMOTE, 80, true, false));
    assert_eq!(verdict, TC_ACT_REDIRECT);
    let mut rst = tcp(A_MAC, CONTAINER, 40000, REMOTE, 80, false, true);
    rst[14 + 20 + 13] |= 0x04;
    let _ = fx.run(&rst);
    // The only port belongs to a reset flow: a new connection takes it over.
    let (verdict, out) = fx.run(&tcp(A_MAC, CONTAINER, 40001, REMOTE, 80, true, false));
    assert_eq!(verdict, TC_ACT_REDIRECT, "the port of a reset flow was not reused");
    assert_eq!(inspect(&out).sport, 61500);
    let flows = masqueraded(&mut fx);
    assert_eq!(flows.len(), 1, "the reset flow must be forgotten");
    assert_eq!(u16::from_be(flows[0].0.src_port), 40001);
    // Replies reach the new flow.
    let (verdict, back) = fx.run_uplink(&tcp(GATEWAY_MAC, REMOTE, 80, UPLINK_ADDR, 61500, true, true));
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!(inspect(&back).dport, 40001);
}

/// A container's stack may reuse its port at once after a reset (no TIME_WAIT): the SYN
/// of that new connection starts a new flow, as Linux conntrack does, instead of riding
/// the ended one, whose port any new flow may take over (it did: the new connection lost
/// its translation mid-stream, and the bench's connections/s halved once client ports
/// came round again).
#[test]
fn a_new_connection_from_the_port_of_a_reset_flow_is_a_new_flow() {
    let mut fx = Fixture::new(0);
    fx.enable_nat(61500, 61500);
    connect_out(&mut fx, 40000);
    let _ = fx.run(&segment(A_MAC, (CONTAINER, 40000), (REMOTE, 80), "R", 1001, 0));
    assert_eq!(fx.datapath.conntrack().unwrap()[0].1.state, ct_state::CLOSED);

    let (verdict, out) = fx.run(&segment(A_MAC, (CONTAINER, 40000), (REMOTE, 80), "S", 9000, 0));
    assert_eq!(verdict, TC_ACT_REDIRECT, "the new connection's SYN did not leave");
    assert_eq!(inspect(&out).sport, 61500);
    assert!(fx.datapath.conntrack().unwrap().is_empty(), "the ended flow is still tracked");
    let new = fx.datapath.conntrack_unconfirmed().unwrap();
    assert_eq!(new.len(), 1);
    assert_eq!(new[0].1.state, ct_state::NEW);
    let syn_ack = segment(GATEWAY_MAC, (REMOTE, 80), (UPLINK_ADDR, 61500), "SA", 3000, 9001);
    assert_eq!(fx.run_uplink(&syn_ack).0, TC_ACT_REDIRECT);
    let _ = fx.run(&segment(A_MAC, (CONTAINER, 40000), (REMOTE, 80), "A", 9001, 3001));
    assert_eq!(fx.datapath.conntrack().unwrap()[0].1.state, ct_state::ESTABLISHED);
    // The one port is the live connection's: another connection cannot take it over.
    let (verdict, _) = fx.run(&segment(A_MAC, (CONTAINER, 40001), (REMOTE, 80), "S", 1000, 0));
    assert_eq!(verdict, TC_ACT_SHOT, "a live connection's port was taken over");
}

/// Publishes TCP 8080 on every host address to port 80 of container B (10.1.0.3,
/// behind ifindex 42).
/// A datapath with NAT on and TCP port 8080 published to B's port 80.
fn publishing_8080() -> Fixture {
    let mut fx = Fixture::new(0);
    fx.enable_nat(61000, 61999);
    publish_8080(&mut fx);
    fx
}

fn publish_8080(fx: &mut Fixture) {
    publish_8080_to(fx, B_ADDR, 42, B_MAC);
}

fn publish_8080_to(fx: &mut Fixture, addr: [u8; 4], host_ifindex: u32, mac: [u8; 6]) {
    publish_to(fx, (6, 8080), addr, host_ifindex, mac);
}

/// Publishes host port `published.1` of protocol `published.0` on every host address to
/// port 80 of `addr`.
fn publish_to(fx: &mut Fixture, published: (u8, u16), addr: [u8; 4], host_ifindex: u32, mac: [u8; 6]) {
    publish_at(fx, [0; 4], published, (addr, host_ifindex, mac), 0);
}

/// Publishes host port `published.1` of protocol `published.0` on the host address
/// `host_addr` (0.0.0.0: every one) to port 80 of the container `(address, host-side
/// ifindex, MAC)`, with the backend's `flags`.
fn publish_at(
    fx: &mut Fixture,
    host_addr: [u8; 4],
    published: (u8, u16),
    container: ([u8; 4], u32, [u8; 6]),
    flags: u8,
) {
    use dataplane_common::{IpAddress, PublishKey};
    let (proto, port) = published;
    let key = PublishKey { addr: IpAddress::v4(host_addr), port: port.to_be(), proto, _pad: 0 };
    let backend = Backend {
        addr: IpAddress::v4(container.0),
        port: 80u16.to_be(),
        rule_set: 0,
        host_ifindex: container.1,
        mac: container.2,
        flags,
        _pad: 0,
    };
    fx.datapath.set_published(key, backend).unwrap();
}

const B_ADDR: [u8; 4] = [10, 1, 0, 3];

/// B's initial sequence number in the handshakes below.
const B_ISN: u32 = 5000;

/// Opens a connection from REMOTE:`sport` to the published 8080 as a real client does, B
/// answering from behind `lo`: the SYN, B's SYN-ACK, the client's ACK of it, which
/// confirms it. Returns that ACK, to send again.
fn connect_to_8080(fx: &mut Fixture, sport: u16) -> Vec<u8> {
    let syn = segment(GATEWAY_MAC, (REMOTE, sport), (UPLINK_ADDR, 8080), "S", 1000, 0);
    assert_eq!(fx.run_uplink(&syn).0, TC_ACT_REDIRECT, "the SYN was not delivered");
    fx.datapath.set_interface(1, b_interface(InterfaceConfig::PUBLISHES)).unwrap();
    let syn_ack = segment(B_MAC, (B_ADDR, 80), (REMOTE, sport), "SA", B_ISN, 1001);
    assert_eq!(fx.run(&syn_ack).0, TC_ACT_REDIRECT, "the SYN-ACK was not sent out");
    let ack = segment(GATEWAY_MAC, (REMOTE, sport), (UPLINK_ADDR, 8080), "A", 1001, B_ISN + 1);
    assert_eq!(fx.run_uplink(&ack).0, TC_ACT_REDIRECT, "the ACK was not delivered");
    ack
}

/// The unconfirmed flow of client port `sport` (DNAT_NEW), if there is one.
fn unconfirmed(fx: &mut Fixture, sport: u16) -> Option<dataplane_common::DnatEntry> {
    fx.datapath
        .dnat_unconfirmed()
        .unwrap()
        .into_iter()
        .find(|(k, _)| k.dst_port == sport.to_be())
        .map(|f| f.1)
}

#[test]
fn dnat_in_keeps_the_client_and_reverse_dnat_restores_the_published_address() {
    let mut fx = publishing_8080();
    let (verdict, inside) = fx.run_uplink(&tcp(GATEWAY_MAC, REMOTE, 33000, UPLINK_ADDR, 8080, true, false));
    assert_eq!(verdict, TC_ACT_REDIRECT, "a connection to the published port was not sent to its container");
    let seen = inspect(&inside);
    assert_eq!((seen.dst, seen.dport), (B_ADDR, 80), "destination was not DNAT'ed to the container");
    assert_eq!((seen.src, seen.sport), (REMOTE, 33000), "the client's address must reach the container");
    assert_eq!(seen.eth_dst, B_MAC);
    assert_eq!(fx.count(Path::Published), 1);

    // The container's answer leaves with the published address and port.
    fx.datapath.set_interface(1, b_interface(InterfaceConfig::PUBLISHES)).unwrap();
    let (verdict, out) = fx.run(&tcp(B_MAC, B_ADDR, 80, REMOTE, 33000, true, true));
    assert_eq!(verdict, TC_ACT_REDIRECT);
    let seen = inspect(&out);
    assert_eq!((seen.src, seen.sport), (UPLINK_ADDR, 8080), "reply source was not reverse-DNAT'ed");
    assert_eq!((seen.dst, seen.dport), (REMOTE, 33000));
    assert_eq!(seen.eth_dst, GATEWAY_MAC);
    assert_eq!(fx.count(Path::PublishedReply), 1);
}

#[test]
fn replies_on_published_ports_keep_their_next_hop_for_a_second() {
    let mut fx = publishing_8080();
    let _ = fx.run_uplink(&tcp(GATEWAY_MAC, REMOTE, 33000, UPLINK_ADDR, 8080, true, false));
    fx.datapath.set_interface(1, b_interface(InterfaceConfig::PUBLISHES)).unwrap();
    let answer = tcp(B_MAC, B_ADDR, 80, REMOTE, 33000, true, true);
    let (_, out) = fx.run(&answer);
    assert_eq!(inspect(&out).eth_dst, GATEWAY_MAC);
    let flow = unconfirmed(&mut fx, 33000).expect("the flow is not tracked");
    assert_eq!(flow.next_hop.dmac, GATEWAY_MAC, "the flow did not keep its next hop");

    move_gateway_to("02:00:00:00:00:09");
    let (verdict, out) = fx.run(&answer);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    let seen = inspect(&out);
    assert_eq!((seen.src, seen.sport, seen.eth_dst), (UPLINK_ADDR, 8080, GATEWAY_MAC));
    after_the_next_hop_is_stale();
    let (_, out) = fx.run(&answer);
    assert_eq!(inspect(&out).eth_dst, MOVED_GATEWAY_MAC, "the reply kept a next hop older than a second");
    assert_eq!(fx.count(Path::PublishedReply), 3);
}

#[test]
fn connections_to_an_unpublished_port_stop_within_a_second() {
    use dataplane_common::{IpAddress, PublishKey};
    let mut fx = publishing_8080();
    let ack = connect_to_8080(&mut fx, 33000);
    let (verdict, inside) = fx.run_uplink(&ack);
    assert_eq!(verdict, TC_ACT_REDIRECT, "the connection's next packet was not delivered");
    let seen = inspect(&inside);
    assert_eq!((seen.src, seen.sport, seen.dst, seen.dport), (REMOTE, 33000, B_ADDR, 80));
    assert_eq!(seen.eth_dst, B_MAC);

    let key = PublishKey { addr: IpAddress::v4([0; 4]), port: 8080u16.to_be(), proto: 6, _pad: 0 };
    fx.datapath.remove_published(&key).unwrap();
    // New connections see it at once; the connection's own packets within the second
    // its entry is trusted, and never after.
    let other_syn = tcp(GATEWAY_MAC, REMOTE, 33001, UPLINK_ADDR, 8080, true, false);
    assert_eq!(fx.run_uplink(&other_syn).0, TC_ACT_OK, "a new connection reached an unpublished port");
    assert_eq!(fx.run_uplink(&ack).0, TC_ACT_REDIRECT);
    after_the_next_hop_is_stale();
    assert_eq!(fx.run_uplink(&ack).0, TC_ACT_OK, "a connection outlived its port by more than a second");
    // A FIN always takes the long way: it must reach the conntrack entry at once.
    publish_8080(&mut fx);
    assert_eq!(fx.run_uplink(&ack).0, TC_ACT_REDIRECT);
    let mut fin = tcp(GATEWAY_MAC, REMOTE, 33000, UPLINK_ADDR, 8080, false, true);
    fin[14 + 20 + 13] |= 0x01;
    let _ = fx.run_uplink(&fin);
    let flows = fx.datapath.dnat_conntrack().unwrap();
    assert_eq!(flows.len(), 1);
    assert_eq!(flows[0].1.state, ct_state::CLOSING, "a FIN from the client was not recorded");
    assert_eq!(fx.count(Path::Published), 6);
}

#[test]
fn forgotten_connections_to_published_ports_are_tracked_again_at_once() {
    let mut fx = publishing_8080();
    let ack = connect_to_8080(&mut fx, 33000);
    // `conntrack flush`: the cached view of the connection goes with its entry, so its
    // next packet takes the long way and the container's replies are translated again.
    dataplane::nat::forget_where(&mut fx.datapath, |_, _| true).unwrap();
    assert!(fx.datapath.dnat_conntrack().unwrap().is_empty());
    assert_eq!(fx.run_uplink(&ack).0, TC_ACT_REDIRECT);
    let again = unconfirmed(&mut fx, 33000).expect("the connection was not tracked again");
    assert_eq!(again.state, ct_state::NEW, "a connection tracked again in mid-stream starts unconfirmed");
    let data = segment(B_MAC, (B_ADDR, 80), (REMOTE, 33000), "A", B_ISN + 1, 1009);
    let (_, out) = fx.run(&data);
    assert_eq!((inspect(&out).src, inspect(&out).sport), (UPLINK_ADDR, 8080));
    // The client's ACK of B's data confirms it again.
    let ack_of_data = segment(GATEWAY_MAC, (REMOTE, 33000), (UPLINK_ADDR, 8080), "A", 1009, B_ISN + 9);
    assert_eq!(fx.run_uplink(&ack_of_data).0, TC_ACT_REDIRECT);
    let flows = fx.datapath.dnat_conntrack().unwrap();
    assert_eq!(flows.len(), 1, "the ACK of the container's data did not confirm the connection");
    assert_eq!(flows[0].1.state, ct_state::ESTABLISHED);
    assert_eq!(unconfirmed(&mut fx, 33000), None, "a confirmed flow stayed in DNAT_NEW");
}

#[test]
fn a_connection_to_a_published_port_is_confirmed_by_the_ack_of_its_syn_ack_alone() {
    use dataplane_common::IpAddress;
    let mut fx = publishing_8080();
    let syn = segment(GATEWAY_MAC, (REMOTE, 33000), (UPLINK_ADDR, 8080), "S", 1000, 0);
    let (verdict, inside) = fx.run_uplink(&syn);
    assert_eq!(verdict, TC_ACT_REDIRECT, "the SYN was not sent to the container");
    let seen = inspect(&inside);
    assert_eq!((seen.src, seen.sport, seen.dst, seen.dport), (REMOTE, 33000, B_ADDR, 80));
    assert_eq!(seen.eth_dst, B_MAC);
    assert!(fx.datapath.dnat_conntrack().unwrap().is_empty(), "a SYN entered the confirmed table");
    let new = unconfirmed(&mut fx, 33000).expect("the SYN's flow is not tracked");
    assert_eq!((new.state, new.flags & DnatEntry::ANSWERED), (ct_state::NEW, 0));

    // B's SYN-ACK leaves translated, and the flow learns what the client must acknowledge.
    fx.datapath.set_interface(1, b_interface(InterfaceConfig::PUBLISHES)).unwrap();
    let (verdict, out) = fx.run(&segment(B_MAC, (B_ADDR, 80), (REMOTE, 33000), "SA", B_ISN, 1001));
    assert_eq!(verdict, TC_ACT_REDIRECT, "the SYN-ACK was not sent out");
    let seen = inspect(&out);
    assert_eq!((seen.src, seen.sport), (UPLINK_ADDR, 8080), "SYN-ACK source was not reverse-DNAT'ed");
    assert_eq!((seen.dst, seen.dport, seen.eth_dst), (REMOTE, 33000, GATEWAY_MAC));
    let answered = unconfirmed(&mut fx, 33000).expect("the answered flow is not tracked");
    assert_eq!(
        answered.flags & (DnatEntry::ANSWERED | DnatEntry::HANDSHAKE),
        DnatEntry::ANSWERED | DnatEntry::HANDSHAKE
    );
    assert_eq!(answered.expected_ack, B_ISN + 1);
    assert_eq!(answered.state, ct_state::NEW, "an answer alone must not confirm a flow");

    // ACKs that did not see the SYN-ACK (a spoofed source guessing) reach the container,
    // whose stack refuses them, but confirm nothing; nor does a reset with the right number.
    for guess in [1, B_ISN, B_ISN + 2, B_ISN + 1 + DnatEntry::ACK_WINDOW] {
        let blind = segment(GATEWAY_MAC, (REMOTE, 33000), (UPLINK_ADDR, 8080), "A", 1001, guess);
        assert_eq!(fx.run_uplink(&blind).0, TC_ACT_REDIRECT);
        assert!(fx.datapath.dnat_conntrack().unwrap().is_empty(), "an ACK of {guess} confirmed the flow");
    }
    let ack = segment(GATEWAY_MAC, (REMOTE, 33000), (UPLINK_ADDR, 8080), "A", 1001, B_ISN + 1);
    let (verdict, inside) = fx.run_uplink(&ack);
    assert_eq!(verdict, TC_ACT_REDIRECT, "the ACK was not sent to the container");
    let seen = inspect(&inside);
    assert_eq!(
        (seen.src, seen.sport, seen.dst, seen.dport, seen.eth_dst),
        (REMOTE, 33000, B_ADDR, 80, B_MAC)
    );
    let flows = fx.datapath.dnat_conntrack().unwrap();
    assert_eq!(flows.len(), 1, "the ACK of the SYN-ACK did not confirm the flow");
    let (key, entry) = flows[0];
    assert_eq!((key.src, key.src_port), (IpAddress::v4(B_ADDR), 80u16.to_be()));
    assert_eq!((key.dst, key.dst_port), (IpAddress::v4(REMOTE), 33000u16.to_be()));
    assert_eq!((entry.host_addr, entry.host_port), (IpAddress::v4(UPLINK_ADDR), 8080u16.to_be()));
    assert_eq!(entry.state, ct_state::ESTABLISHED);
    assert_eq!(unconfirmed(&mut fx, 33000), None, "the confirmed flow stayed in DNAT_NEW");
    // B's next segments leave through the confirmed entry.
    let (verdict, out) = fx.run(&segment(B_MAC, (B_ADDR, 80), (REMOTE, 33000), "A", B_ISN + 1, 1009));
    assert_eq!(verdict, TC_ACT_REDIRECT);
    let seen = inspect(&out);
    assert_eq!((seen.src, seen.sport, seen.dst, seen.dport), (UPLINK_ADDR, 8080, REMOTE, 33000));
    assert_eq!((fx.count(Path::Published), fx.count(Path::PublishedReply)), (6, 2));

    // A reset closes an unconfirmed flow for good: even the right ACK after it confirms nothing.
    let _ = fx.run_uplink(&segment(GATEWAY_MAC, (REMOTE, 33001), (UPLINK_ADDR, 8080), "S", 1000, 0));
    let _ = fx.run(&segment(B_MAC, (B_ADDR, 80), (REMOTE, 33001), "SA", B_ISN, 1001));
    let _ = fx.run_uplink(&segment(GATEWAY_MAC, (REMOTE, 33001), (UPLINK_ADDR, 8080), "RA", 1001, B_ISN + 1));
    let _ = fx.run_uplink(&segment(GATEWAY_MAC, (REMOTE, 33001), (UPLINK_ADDR, 8080), "A", 1001, B_ISN + 1));
    assert_eq!(fx.datapath.dnat_conntrack().unwrap().len(), 1, "a reset flow was confirmed");
    assert_eq!(unconfirmed(&mut fx, 33001).map(|e| e.state), Some(ct_state::CLOSED));
}

#[test]
fn udp_to_a_published_port_is_confirmed_by_a_datagram_after_the_answer() {
    use dataplane_tests::datapath::udp_between_macs;
    let mut fx = publishing_8080();
    publish_to(&mut fx, (17, 5353), B_ADDR, 42, B_MAC);
    let query = udp_between_macs((GATEWAY_MAC, UPLINK_MAC), (REMOTE, 4000), (UPLINK_ADDR, 5353));
    for _ in 0..2 {
        let (verdict, inside) = fx.run_uplink(&query);
        assert_eq!(verdict, TC_ACT_REDIRECT);
        let seen = inspect(&inside);
        assert_eq!((seen.src, seen.sport, seen.dst, seen.dport), (REMOTE, 4000, B_ADDR, 80));
    }
    assert!(fx.datapath.dnat_conntrack().unwrap().is_empty(), "unanswered datagrams confirmed their flow");
    fx.datapath.set_interface(1, b_interface(InterfaceConfig::PUBLISHES)).unwrap();
    let answer = udp_between_macs((B_MAC, GATEWAY_MAC), (B_ADDR, 80), (REMOTE, 4000));
    let (verdict, out) = fx.run(&answer);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    let seen = inspect(&out);
    assert_eq!((seen.src, seen.sport, seen.dst, seen.dport), (UPLINK_ADDR, 5353, REMOTE, 4000));
    assert!(fx.datapath.dnat_conntrack().unwrap().is_empty(), "an answer alone confirmed the flow");
    assert_eq!(fx.run_uplink(&query).0, TC_ACT_REDIRECT);
    let flows = fx.datapath.dnat_conntrack().unwrap();
    assert_eq!(flows.len(), 1, "a datagram after the answer did not confirm the flow");
    assert_eq!(flows[0].1.state, ct_state::ESTABLISHED);
    assert_eq!(unconfirmed(&mut fx, 4000), None);
}

#[test]
fn a_flood_of_new_flows_to_a_published_port_pushes_out_only_new_flows() {
    const TABLE: u32 = 1024;
    let mut fx = Fixture::with_conntrack_max(0, TABLE);
    fx.enable_nat(61000, 61999);
    publish_8080(&mut fx);
    let ack = connect_to_8080(&mut fx, 33000);
    // Four tables' worth of SYNs from spoofed sources, each a new flow that B answers.
    for i in 0..4 * TABLE {
        let spoofed = [198, 18, (i >> 8) as u8, i as u8];
        let syn = segment(GATEWAY_MAC, (spoofed, 1024 + i as u16), (UPLINK_ADDR, 8080), "S", i, 0);
        assert_eq!(fx.run_uplink(&syn).0, TC_ACT_REDIRECT, "SYN {i} of the flood was not delivered");
        let syn_ack = segment(B_MAC, (B_ADDR, 80), (spoofed, 1024 + i as u16), "SA", B_ISN, i + 1);
        assert_eq!(fx.run(&syn_ack).0, TC_ACT_REDIRECT);
    }
    let new = fx.datapath.dnat_unconfirmed().unwrap().len();
    assert!(new <= TABLE as usize, "DNAT_NEW holds {new} flows, more than its {TABLE} entries");
    let confirmed = fx.datapath.dnat_conntrack().unwrap();
    assert_eq!(confirmed.len(), 1, "the flood entered the confirmed table or evicted the connection");
    assert_eq!(confirmed[0].0.dst_port, 33000u16.to_be());
    // The connection goes on both ways.
    let (verdict, inside) = fx.run_uplink(&ack);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!((inspect(&inside).dst, inspect(&inside).dport), (B_ADDR, 80));
    let (verdict, out) = fx.run(&segment(B_MAC, (B_ADDR, 80), (REMOTE, 33000), "A", B_ISN + 1, 1009));
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!(
        (inspect(&out).src, inspect(&out).sport),
        (UPLINK_ADDR, 8080),
        "the connection lost its entry"
    );
    // And a new connection after the flood is confirmed as usual.
    connect_to_8080(&mut fx, 33001);
    assert_eq!(
        fx.datapath.dnat_conntrack().unwrap().len(),
        2,
        "a new connection after the flood was not confirmed"
    );
}

#[test]
fn the_pins_of_the_version_before_dnat_new_are_taken_over_with_their_connections() {
    let mut fx = publishing_8080();
    let ack = connect_to_8080(&mut fx, 33000);
    // What that version left: DNAT_CT as it is now, no DNAT_NEW, three conntrack events.
    let dir = fx.maps_dir();
    std::fs::remove_file(dir.join("DNAT_NEW")).unwrap();
    std::fs::remove_file(dir.join("CT_EVENTS")).unwrap();
    let script = format!(
        "bpftool map create {} type percpu_array key 4 value 8 entries 3 name CT_EVENTS",
        dir.join("CT_EVENTS").display()
    );
    assert!(std::process::Command::new("sh").args(["-c", &script]).status().unwrap().success());
    fx.reload();
    let events = aya::maps::MapInfo::from_pin(dir.join("CT_EVENTS")).unwrap();
    assert_eq!(events.max_entries(), dataplane_common::ct_event::COUNT, "CT_EVENTS kept its old size");
    assert!(dir.join("DNAT_NEW").exists(), "DNAT_NEW was not pinned");
    assert_eq!(fx.datapath.dnat_conntrack().unwrap().len(), 1, "the confirmed connection was lost");
    assert_eq!(fx.run_uplink(&ack).0, TC_ACT_REDIRECT);
    let (_, out) = fx.run(&segment(B_MAC, (B_ADDR, 80), (REMOTE, 33000), "A", B_ISN + 1, 1009));
    assert_eq!((inspect(&out).src, inspect(&out).sport), (UPLINK_ADDR, 8080));
    // New connections are confirmed through the new table.
    connect_to_8080(&mut fx, 33001);
    assert_eq!(fx.datapath.dnat_conntrack().unwrap().len(), 2);
}

#[test]
fn flows_to_published_ports_confirmed_or_not_survive_a_reload() {
    let mut fx = publishing_8080();
    let ack = connect_to_8080(&mut fx, 33000);
    let _ = fx.run_uplink(&segment(GATEWAY_MAC, (REMOTE, 33001), (UPLINK_ADDR, 8080), "S", 1000, 0));
    let _ = fx.run(&segment(B_MAC, (B_ADDR, 80), (REMOTE, 33001), "SA", B_ISN, 1001));
    fx.reload();
    assert_eq!(fx.datapath.dnat_conntrack().unwrap().len(), 1, "the confirmed flow did not survive");
    assert!(unconfirmed(&mut fx, 33001).is_some(), "the unconfirmed flow did not survive");
    assert_eq!(fx.run_uplink(&ack).0, TC_ACT_REDIRECT);
    let (_, out) = fx.run(&segment(B_MAC, (B_ADDR, 80), (REMOTE, 33000), "A", B_ISN + 1, 1009));
    assert_eq!((inspect(&out).src, inspect(&out).sport), (UPLINK_ADDR, 8080));
    let confirming = segment(GATEWAY_MAC, (REMOTE, 33001), (UPLINK_ADDR, 8080), "A", 1001, B_ISN + 1);
    assert_eq!(fx.run_uplink(&confirming).0, TC_ACT_REDIRECT);
    assert_eq!(
        fx.datapath.dnat_conntrack().unwrap().len(),
        2,
        "the handshake did not finish across the reload"
    );
}

#[test]
fn unpublished_ports_and_container_addresses_are_closed_from_the_uplink() {
    let mut fx = publishing_8080();
    let frame = tcp(GATEWAY_MAC, REMOTE, 33000, UPLINK_ADDR, 8081, true, false);
    let (verdict, out) = fx.run_uplink(&frame);
    assert_eq!((verdict, out), (TC_ACT_OK, frame), "an unpublished port is the host's business");
    let (verdict, _) = fx.run_uplink(&tcp(GATEWAY_MAC, REMOTE, 33000, B_ADDR, 80, true, false));
    assert_eq!(verdict, TC_ACT_SHOT, "a container address was reachable from the uplink");
    assert_eq!(fx.count(Path::DroppedUnpublished), 1);
}

/// Publishes TCP `port` on the one host address `addr` to B's port 80, with `flags`.
fn publish_on(fx: &mut Fixture, addr: [u8; 4], port: u16, flags: u8) {
    publish_at(fx, addr, (6, port), (B_ADDR, 42, B_MAC), flags);
}

#[test]
fn frames_from_the_uplink_for_loopback_are_martians() {
    // moby#45610: a machine on the uplink's segment routing 127.0.0.1 through the host.
    let mut fx = publishing_8080();
    publish_on(&mut fx, [127, 0, 0, 1], 8081, Backend::HOST_ONLY);
    b_takes_xdp_frames(&mut fx);
    for dst in [([127, 0, 0, 1], 8081), ([127, 0, 0, 1], 8080), ([127, 1, 2, 3], 22)] {
        let frame = tcp(GATEWAY_MAC, REMOTE, 33000, dst.0, dst.1, true, false);
        let (verdict, out) = fx.run_uplink(&frame);
        assert_eq!((verdict, out), (TC_ACT_SHOT, frame.clone()), "tc let a frame for {dst:?} through");
        assert_eq!(fx.run_uplink_xdp(&frame).0, XDP_DROP, "XDP let a frame for {dst:?} through");
    }
    assert_eq!(fx.count(Path::DroppedMartian), 6);
    assert_eq!((fx.count(Path::Published), fx.count(Path::PublishedXdp)), (0, 0));
    assert!(fx.datapath.dnat_conntrack().unwrap().is_empty(), "a martian was tracked");
    assert!(fx.datapath.dnat_unconfirmed().unwrap().is_empty(), "a martian was tracked");
}

#[test]
fn ports_on_addresses_the_host_holds_on_loopback_only_serve_the_host_alone() {
    let mut fx = publishing_8080();
    run_in_fixture("ip addr add 192.0.2.50/32 dev lo");
    publish_on(&mut fx, [192, 0, 2, 50], 8082, Backend::HOST_ONLY);
    b_takes_xdp_frames(&mut fx);
    let from_outside = tcp(GATEWAY_MAC, REMOTE, 33000, [192, 0, 2, 50], 8082, true, false);
    assert_eq!(fx.run_uplink(&from_outside).0, TC_ACT_SHOT, "tc sent the uplink to a host-only port");
    assert_eq!(fx.run_uplink_xdp(&from_outside).0, XDP_DROP, "XDP sent the uplink to a host-only port");
    assert_eq!(fx.count(Path::DroppedMartian), 2);
    // From a container it is the host's own address, which serves it nothing there.
    let from_container = tcp(A_MAC, CONTAINER, 44000, [192, 0, 2, 50], 8082, true, false);
    let (verdict, out) = fx.run(&from_container);
    assert_eq!((verdict, out), (TC_ACT_OK, from_container), "a container reached a host-only port");
    assert_eq!((fx.count(Path::Published), fx.count(Path::PublishedXdp)), (0, 0));
    // The same port without the flag is published as usual.
    publish_on(&mut fx, [192, 0, 2, 50], 8082, 0);
    assert_eq!(fx.run_uplink(&from_outside).0, TC_ACT_REDIRECT);
}

/// Runs a shell command in the calling thread's namespace (the fixture's).
fn run_in_fixture(script: &str) {
    let status = std::process::Command::new("sh").args(["-c", script]).status().unwrap();
    assert!(status.success(), "{script}");
}

#[test]
fn hairpin_keeps_the_client_container_and_returns_to_it() {
    let mut fx = publishing_8080();
    // Container A (10.1.0.2, behind lo) connects to the host's address on the published port.
    let (verdict, inside) = fx.run(&tcp(A_MAC, CONTAINER, 44000, UPLINK_ADDR, 8080, true, false));
    assert_eq!(verdict, TC_ACT_REDIRECT, "hairpin connection was not sent to the published container");
    let seen = inspect(&inside);
    assert_eq!((seen.dst, seen.dport), (B_ADDR, 80));
    assert_eq!((seen.src, seen.sport), (CONTAINER, 44000), "the client container's address must be kept");
    // B answers A directly: the reply gets the published address back and goes to A.
    fx.datapath.set_interface(1, b_interface(InterfaceConfig::PUBLISHES)).unwrap();
    let (verdict, back) = fx.run(&tcp(B_MAC, B_ADDR, 80, CONTAINER, 44000, true, true));
    assert_eq!(verdict, TC_ACT_REDIRECT);
    let seen = inspect(&back);
    assert_eq!((seen.src, seen.sport), (UPLINK_ADDR, 8080), "hairpin reply source was not restored");
    assert_eq!((seen.dst, seen.dport), (CONTAINER, 44000));
    assert_eq!(seen.eth_dst, A_MAC, "hairpin reply must go back to the client container");
}

#[test]
fn a_container_reaches_its_own_published_port_from_its_gateway() {
    let mut fx = Fixture::new(InterfaceConfig::PUBLISHES);
    fx.enable_nat(61000, 61999);
    // Container A (10.1.0.2, behind lo) publishes 8080 -> 80 and connects to it itself.
    publish_8080_to(&mut fx, CONTAINER, dataplane_tests::datapath::LO, A_MAC);
    let (verdict, inside) = fx.run(&tcp(A_MAC, CONTAINER, 44000, UPLINK_ADDR, 8080, true, false));
    assert_eq!(verdict, TC_ACT_REDIRECT, "the connection to its own published port went nowhere");
    let seen = inspect(&inside);
    assert_eq!((seen.dst, seen.dport), (CONTAINER, 80), "destination was not DNAT'ed to the container");
    assert_eq!(
        (seen.src, seen.sport),
        (GATEWAY, 44000),
        "the source must be the gateway, not itself (martian)"
    );
    assert_eq!(seen.eth_dst, A_MAC);
    // Its answer to the gateway goes back to itself, from the published address.
    let (verdict, back) = fx.run(&tcp(A_MAC, CONTAINER, 80, GATEWAY, 44000, true, true));
    assert_eq!(verdict, TC_ACT_REDIRECT);
    let seen = inspect(&back);
    assert_eq!((seen.src, seen.sport), (UPLINK_ADDR, 8080), "reply source was not the published address");
    assert_eq!((seen.dst, seen.dport), (CONTAINER, 44000), "reply destination was not the container again");
    assert_eq!(fx.count(Path::PublishedReply), 1);
}

const GATEWAY: [u8; 4] = [10, 1, 0, 1];

#[test]
fn conntrack_entries_expire_by_protocol_and_state() {
    let mut fx = Fixture::new(InterfaceConfig::PUBLISHES);
    fx.enable_nat(61000, 61999);
    publish_8080(&mut fx);
    // An unanswered UDP flow out, an answered TCP flow out, and a connection in.
    let (_, out) = fx.run(&udp(CONTAINER, 5000, REMOTE, 53));
    let udp_port = inspect(&out).sport;
    let (_, out) = fx.run(&tcp(A_MAC, CONTAINER, 40000, REMOTE, 80, true, false));
    let tcp_port = inspect(&out).sport;
    let _ = fx.run_uplink(&tcp(GATEWAY_MAC, REMOTE, 80, UPLINK_ADDR, tcp_port, true, true));
    let _ = fx.run(&tcp(A_MAC, CONTAINER, 40000, REMOTE, 80, false, true));
    let _ = fx.run_uplink(&tcp(GATEWAY_MAC, REMOTE, 33000, UPLINK_ADDR, 8080, true, false));
    let now = dataplane::nat::monotonic_ns();
    let secs = |s: u64| now + s * 1_000_000_000;
    assert_eq!(masqueraded(&mut fx).len(), 2, "both flows out are tracked");
    assert_eq!(fx.datapath.dnat_unconfirmed().unwrap().len(), 1, "the flow in is tracked");

    let swept = dataplane::nat::sweep_at(&mut fx.datapath, secs(29)).unwrap();
    assert_eq!(swept.total(), 0, "nothing is idle long enough yet");
    // Unanswered UDP lives 30 s; a new TCP connection in, 60 s; an established one, hours.
    let swept = dataplane::nat::sweep_at(&mut fx.datapath, secs(31)).unwrap();
    assert_eq!((swept.masquerade_unconfirmed, swept.total()), (1, 1));
    let flows = masqueraded(&mut fx);
    assert_eq!(flows.len(), 1);
    assert_eq!(flows[0].0.proto, 6, "the established TCP flow must stay");
    // The expired UDP flow's reply is not translated any more: it is the host's.
    let late = udp(REMOTE, 53, UPLINK_ADDR, udp_port);
    assert_eq!(fx.run_uplink(&late), (TC_ACT_OK, late.clone()));
    let swept = dataplane::nat::sweep_at(&mut fx.datapath, secs(61)).unwrap();
    assert_eq!((swept.published_unconfirmed, swept.total()), (1, 1), "the new connection in goes");
    let swept = dataplane::nat::sweep_at(&mut fx.datapath, secs(6 * 3600 + 1)).unwrap();
    assert_eq!((swept.masquerade, swept.total()), (1, 1));
}

/// A SYN (or SYN-ACK) offering `mss`, behind a NOP and a window scale as real stacks send.
fn syn_with_mss(src_mac: [u8; 6], src: ([u8; 4], u16), dst: ([u8; 4], u16), ack: bool, mss: u16) -> Vec<u8> {
    let ip = PacketBuilder::ethernet2(src_mac, UPLINK_MAC).ipv4(src.0, dst.0, 64);
    datapath::syn_with_mss(ip, (src.1, dst.1), ack, mss)
}

/// The MSS a TCP frame offers (after checking its checksums).
fn mss_of(frame: &[u8]) -> Option<u16> {
    inspect(frame);
    datapath::mss_offered(frame)
}

/// As `publishing_8080`, with an uplink that carries 1,400-byte packets.
fn publishing_8080_behind_a_1400_byte_uplink() -> Fixture {
    let fx = publishing_8080();
    let status =
        std::process::Command::new("ip").args(["link", "set", "up0", "mtu", "1400"]).status().unwrap();
    assert!(status.success());
    fx
}

#[test]
fn syns_from_outside_offer_an_mss_the_uplink_can_carry() {
    let mut fx = publishing_8080_behind_a_1400_byte_uplink();

    // A client with a 1500-byte path connects to a published port: the container must not
    // answer with 1460-byte segments that the 1400-byte uplink cannot carry.
    let syn = syn_with_mss(GATEWAY_MAC, (REMOTE, 33000), (UPLINK_ADDR, 8080), false, 1460);
    let (verdict, inside) = fx.run_uplink(&syn);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!(mss_of(&inside), Some(1360), "the SYN's MSS was not clamped to the uplink MTU - 40");
    // An MSS that fits is left alone.
    let syn = syn_with_mss(GATEWAY_MAC, (REMOTE, 33001), (UPLINK_ADDR, 8080), false, 1200);
    assert_eq!(mss_of(&fx.run_uplink(&syn).1), Some(1200));

    // Masquerade: the remote's SYN-ACK is clamped the same way on its way back in.
    let (_, out) = fx.run(&syn_with_mss(A_MAC, (CONTAINER, 40000), (REMOTE, 443), false, 1460));
    let nat_port = inspect(&out).sport;
    assert_eq!(mss_of(&out), Some(1460), "what the container offers is its own business");
    let syn_ack = syn_with_mss(GATEWAY_MAC, (REMOTE, 443), (UPLINK_ADDR, nat_port), true, 1460);
    let (verdict, back) = fx.run_uplink(&syn_ack);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!(mss_of(&back), Some(1360), "the SYN-ACK's MSS was not clamped");
    assert_eq!(inspect(&back).dst, CONTAINER);
}

/// Container B's veth (ifindex 42) takes XDP frames, as the daemon arranges for publishing
/// containers when XDP runs on the uplink.
fn b_takes_xdp_frames(fx: &mut Fixture) {
    let flags = InterfaceConfig::PUBLISHES | InterfaceConfig::XDP_TARGET;
    fx.datapath.set_interface(42, red_interface(flags)).unwrap();
}

const L4_CSUM_UDP: usize = 14 + 20 + 6;
const L4_CSUM_TCP: usize = 14 + 20 + 16;

#[test]
fn xdp_on_the_uplink_sends_published_ports_to_their_container() {
    let mut fx = publishing_8080();
    publish_to(&mut fx, (17, 5353), B_ADDR, 42, B_MAC);
    b_takes_xdp_frames(&mut fx);

    let (verdict, inside) =
        fx.run_uplink_xdp(&tcp(GATEWAY_MAC, REMOTE, 33000, UPLINK_ADDR, 8080, true, false));
    assert_eq!(verdict, XDP_REDIRECT, "a connection to the published port was not redirected by XDP");
    let seen = inspect(&inside);
    assert_eq!((seen.dst, seen.dport), (B_ADDR, 80), "destination was not DNAT'ed to the container");
    assert_eq!((seen.src, seen.sport), (REMOTE, 33000), "the client's address must reach the container");
    assert_eq!(seen.eth_dst, B_MAC);
    assert_eq!((fx.count(Path::PublishedXdp), fx.count(Path::Published)), (1, 0));

    // The flow XDP tracked is the one tc's reverse DNAT finds for the container's answer.
    fx.datapath.set_interface(1, b_interface(InterfaceConfig::PUBLISHES)).unwrap();
    let (verdict, out) = fx.run(&tcp(B_MAC, B_ADDR, 80, REMOTE, 33000, true, true));
    assert_eq!(verdict, TC_ACT_REDIRECT);
    let seen = inspect(&out);
    assert_eq!((seen.src, seen.sport), (UPLINK_ADDR, 8080), "reply source was not reverse-DNAT'ed");

    // UDP, with a checksum and without one (which must stay without one).
    let (verdict, inside) = fx.run_uplink_xdp(&udp(REMOTE, 40000, UPLINK_ADDR, 5353));
    assert_eq!(verdict, XDP_REDIRECT);
    let seen = inspect(&inside);
    assert_eq!((seen.dst, seen.dport, seen.src, seen.sport), (B_ADDR, 80, REMOTE, 40000));
    let mut bare = udp(REMOTE, 40001, UPLINK_ADDR, 5353);
    bare[L4_CSUM_UDP..L4_CSUM_UDP + 2].copy_from_slice(&[0, 0]);
    let (verdict, inside) = fx.run_uplink_xdp(&bare);
    assert_eq!(verdict, XDP_REDIRECT);
    assert_eq!(&inside[L4_CSUM_UDP..L4_CSUM_UDP + 2], &[0, 0], "a datagram without checksum got one");
    assert_eq!(&inside[14 + 16..14 + 20], &B_ADDR);
    assert_eq!(fx.count(Path::PublishedXdp), 3);
}

#[test]
fn xdp_leaves_to_tc_what_it_cannot_finish() {
    let mut fx = publishing_8080();
    let passes = |fx: &mut Fixture, frame: Vec<u8>, why: &str| {
        let (verdict, out) = fx.run_uplink_xdp(&frame);
        assert_eq!((verdict, out), (XDP_PASS, frame), "{why}");
    };

    // A container whose veth takes no XDP frames is served by tc.
    let syn = tcp(GATEWAY_MAC, REMOTE, 33000, UPLINK_ADDR, 8080, true, false);
    passes(&mut fx, syn.clone(), "the container's veth takes no XDP frames");
    assert_eq!(fx.run_uplink(&syn).0, TC_ACT_REDIRECT);

    b_takes_xdp_frames(&mut fx);
    // A local sender's CHECKSUM_PARTIAL packet holds only the pseudo header's sum, which
    // only tc's helpers can update.
    let mut partial = tcp(GATEWAY_MAC, REMOTE, 33001, UPLINK_ADDR, 8080, false, true);
    let l4_len = (partial.len() - 34) as u16;
    let pseudo = dataplane_common::csum::pseudo_header_v4(REMOTE, UPLINK_ADDR, 6, l4_len);
    partial[L4_CSUM_TCP..L4_CSUM_TCP + 2].copy_from_slice(&pseudo.to_ne_bytes());
    passes(&mut fx, partial, "a partial checksum cannot be updated in XDP");

    passes(
        &mut fx,
        tcp(GATEWAY_MAC, REMOTE, 80, UPLINK_ADDR, 61500, false, true),
        "masquerade replies are tc's",
    );
    passes(&mut fx, tcp(GATEWAY_MAC, REMOTE, 33000, UPLINK_ADDR, 8081, true, false), "unpublished port");
    passes(&mut fx, tcp(GATEWAY_MAC, REMOTE, 33000, B_ADDR, 80, true, false), "tc drops container addresses");
    passes(&mut fx, icmp_echo(GATEWAY_MAC, REMOTE, UPLINK_ADDR, 7, false), "ICMP is the host's");
    let mut fragment = tcp(GATEWAY_MAC, REMOTE, 33000, UPLINK_ADDR, 8080, false, true);
    fragment[14 + 6] |= 0x20; // more fragments
    passes(&mut fx, fragment, "fragments are never translated");
    assert_eq!(fx.count(Path::PublishedXdp), 0);
}

#[test]
fn xdp_clamps_the_mss_of_syns_from_outside() {
    let mut fx = publishing_8080_behind_a_1400_byte_uplink();
    b_takes_xdp_frames(&mut fx);
    let syn = syn_with_mss(GATEWAY_MAC, (REMOTE, 33000), (UPLINK_ADDR, 8080), false, 1460);
    let (verdict, inside) = fx.run_uplink_xdp(&syn);
    assert_eq!(verdict, XDP_REDIRECT);
    assert_eq!(mss_of(&inside), Some(1360), "the SYN's MSS was not clamped to the uplink MTU - 40");
}

#[test]
fn the_daemon_reads_and_sweeps_every_flow_of_a_large_table() {
    let mut fx = Fixture::new(0);
    fx.enable_nat(1024, 65535);
    // More flows than one batch read takes, to as many destinations.
    const FLOWS: u32 = 10_000;
    let remote = |i: u32| [198, 18, (i >> 8) as u8, i as u8];
    for i in 0..FLOWS {
        assert_eq!(fx.run(&udp(CONTAINER, 5353, remote(i), 53)).0, TC_ACT_REDIRECT);
    }
    let flows = masqueraded(&mut fx);
    assert_eq!(flows.len(), FLOWS as usize, "the listing missed flows");
    let destinations: std::collections::HashSet<_> = flows.iter().map(|(k, _)| k.dst.addr).collect();
    assert_eq!(destinations.len(), FLOWS as usize, "the listing repeated flows");
    // Forgetting skips flows already gone, in the middle of a batch.
    fx.datapath.forget_flows(&flows[50..60]).unwrap();
    fx.datapath.forget_flows(&flows[..200]).unwrap();
    assert_eq!(masqueraded(&mut fx).len(), FLOWS as usize - 200);
    let later = flows.iter().map(|(_, e)| e.last_seen_ns).max().unwrap() + 3600 * 1_000_000_000;
    let removed = dataplane::nat::sweep_at(&mut fx.datapath, later).unwrap();
    assert_eq!(removed.masquerade_unconfirmed, u64::from(FLOWS) - 200);
    assert!(masqueraded(&mut fx).is_empty());
}

const OTHER_CLIENT: [u8; 4] = [198, 51, 100, 8];

/// Rules as `dataplane firewall add` appends them.
fn firewall_rules(rules: &[(Action, Option<&str>)]) -> Rules {
    let mut compiled = Rules::default();
    for (action, source) in rules {
        let source = source.map(|s| dataplane::firewall::parse_source(s).unwrap());
        let spec = RuleSpec { action: *action, source, ports: None, proto: None, container: None };
        compiled.add(spec).unwrap();
    }
    compiled
}

/// Compiles `rules` for the published TCP 8080, writes its rule set and points the port
/// at it, as the daemon does; then drops the sets no port uses.
fn apply_firewall(fx: &mut Fixture, installed: &mut Installed, rules: &Rules) {
    use dataplane_common::{IpAddress, PublishKey};
    let mapping = PortMapping {
        host_ip: std::net::Ipv4Addr::UNSPECIFIED.into(),
        host_port: 8080,
        container_port: 80,
        proto: Proto::Tcp,
        any_family: false,
    };
    let set = rules.compiler().rule_set("web", &mapping);
    let id = installed.install(&mut fx.datapath, std::slice::from_ref(&set)).unwrap()[0];
    let key = PublishKey { addr: IpAddress::v4([0; 4]), port: 8080u16.to_be(), proto: 6, _pad: 0 };
    fx.datapath.set_published_rule_set(key, id).unwrap();
    installed.retain(&mut fx.datapath, &[set].into());
}

/// A SYN from `client` reached B's port 80 with every rewritten field (and checksum) right.
fn assert_dnatted_to_b(verdict: u32, expected: u32, inside: &[u8], client: [u8; 4]) {
    assert_eq!(verdict, expected, "a connection the firewall allows was not sent to its container");
    let seen = inspect(inside);
    assert_eq!((seen.dst, seen.dport), (B_ADDR, 80), "destination was not DNAT'ed to the container");
    assert_eq!((seen.src, seen.sport), (client, 33000), "the client's address must reach the container");
    assert_eq!(seen.eth_dst, B_MAC, "the frame must go to the container's MAC");
}

#[test]
fn firewall_deny_by_source_drops_syns_and_counts_the_rule_while_other_sources_are_dnatted() {
    let mut fx = publishing_8080();
    let mut installed = Installed::default();
    let rules = firewall_rules(&[(Action::Deny, Some("198.51.100.7"))]);
    apply_firewall(&mut fx, &mut installed, &rules);
    let slot = rules.rules[0].slot;

    let (verdict, _) = fx.run_uplink(&tcp(GATEWAY_MAC, REMOTE, 33000, UPLINK_ADDR, 8080, true, false));
    assert_eq!(verdict, TC_ACT_SHOT, "a denied source reached the published port");
    assert_eq!(fx.count(Path::DroppedFirewall), 1, "the drop was not counted as the firewall's");
    assert_eq!(fx.datapath.firewall_hits(slot).unwrap(), 1, "the deny rule's hit was not counted");
    assert!(fx.datapath.dnat_conntrack().unwrap().is_empty(), "a denied connection was tracked");

    let (verdict, inside) =
        fx.run_uplink(&tcp(GATEWAY_MAC, OTHER_CLIENT, 33000, UPLINK_ADDR, 8080, true, false));
    assert_dnatted_to_b(verdict, TC_ACT_REDIRECT, &inside, OTHER_CLIENT);
    assert_eq!(fx.count(Path::Published), 1);
    assert_eq!(fx.datapath.firewall_hits(slot).unwrap(), 1, "a source no rule covers hit the rule");
    assert_eq!(fx.count(Path::DroppedFirewall), 1);
}

#[test]
fn firewall_allow_before_deny_lets_the_allowed_source_through() {
    let mut fx = publishing_8080();
    let mut installed = Installed::default();
    let rules =
        firewall_rules(&[(Action::Allow, Some("198.51.100.7")), (Action::Deny, Some("198.51.100.0/24"))]);
    apply_firewall(&mut fx, &mut installed, &rules);
    let (allow, deny) = (rules.rules[0].slot, rules.rules[1].slot);

    let (verdict, inside) = fx.run_uplink(&tcp(GATEWAY_MAC, REMOTE, 33000, UPLINK_ADDR, 8080, true, false));
    assert_dnatted_to_b(verdict, TC_ACT_REDIRECT, &inside, REMOTE);
    let (verdict, _) = fx.run_uplink(&tcp(GATEWAY_MAC, OTHER_CLIENT, 33000, UPLINK_ADDR, 8080, true, false));
    assert_eq!(verdict, TC_ACT_SHOT, "the rest of the /24 must be denied");
    assert_eq!(fx.datapath.firewall_hits(allow).unwrap(), 1, "the allow rule's hit was not counted");
    assert_eq!(fx.datapath.firewall_hits(deny).unwrap(), 1, "the deny rule's hit was not counted");

    // The other way round, the deny covers the allowed source first.
    let rules =
        firewall_rules(&[(Action::Deny, Some("198.51.100.0/24")), (Action::Allow, Some("198.51.100.7"))]);
    apply_firewall(&mut fx, &mut installed, &rules);
    let (verdict, _) = fx.run_uplink(&tcp(GATEWAY_MAC, REMOTE, 33001, UPLINK_ADDR, 8080, true, false));
    assert_eq!(verdict, TC_ACT_SHOT, "a deny before the allow must win");
    assert_eq!(fx.count(Path::DroppedFirewall), 2);
    assert_eq!(fx.datapath.firewall_entries().unwrap().len(), 2, "the replaced rule set left entries behind");
}

#[test]
fn firewall_denies_in_xdp_too() {
    let mut fx = publishing_8080();
    b_takes_xdp_frames(&mut fx);
    let mut installed = Installed::default();
    apply_firewall(&mut fx, &mut installed, &firewall_rules(&[(Action::Deny, Some("198.51.100.7"))]));

    let (verdict, _) = fx.run_uplink_xdp(&tcp(GATEWAY_MAC, REMOTE, 33000, UPLINK_ADDR, 8080, true, false));
    assert_eq!(verdict, XDP_DROP, "XDP let a denied source through");
    assert_eq!(fx.count(Path::DroppedFirewall), 1);
    let (verdict, inside) =
        fx.run_uplink_xdp(&tcp(GATEWAY_MAC, OTHER_CLIENT, 33000, UPLINK_ADDR, 8080, true, false));
    assert_dnatted_to_b(verdict, XDP_REDIRECT, &inside, OTHER_CLIENT);
    assert_eq!(fx.count(Path::PublishedXdp), 1);
}

#[test]
fn firewall_deny_cuts_an_established_connection_within_a_second() {
    let mut fx = publishing_8080();
    let ack = tcp(GATEWAY_MAC, REMOTE, 33000, UPLINK_ADDR, 8080, false, true);
    assert_eq!(
        fx.run_uplink(&tcp(GATEWAY_MAC, REMOTE, 33000, UPLINK_ADDR, 8080, true, false)).0,
        TC_ACT_REDIRECT
    );
    assert_eq!(fx.run_uplink(&ack).0, TC_ACT_REDIRECT, "the connection's next packet was not delivered");

    let mut installed = Installed::default();
    apply_firewall(&mut fx, &mut installed, &firewall_rules(&[(Action::Deny, Some("198.51.100.7"))]));
    // New connections see the rule at once, the established one once its cached entry is
    // older than a second.
    let other_syn = tcp(GATEWAY_MAC, REMOTE, 33001, UPLINK_ADDR, 8080, true, false);
    assert_eq!(fx.run_uplink(&other_syn).0, TC_ACT_SHOT, "a new connection got past a deny");
    after_the_next_hop_is_stale();
    assert_eq!(fx.run_uplink(&ack).0, TC_ACT_SHOT, "a connection outlived its deny by more than a second");
    assert_eq!(fx.count(Path::DroppedFirewall), 2);

    // Removing the rule lets it through again.
    apply_firewall(&mut fx, &mut installed, &Rules::default());
    assert_eq!(fx.run_uplink(&ack).0, TC_ACT_REDIRECT, "the connection stayed blocked after the rule went");
    assert!(fx.datapath.firewall_entries().unwrap().is_empty(), "a rule set no port uses stayed in the trie");
}

#[test]
fn firewall_leaves_hairpin_traffic_from_containers_alone() {
    let mut fx = publishing_8080();
    let mut installed = Installed::default();
    apply_firewall(&mut fx, &mut installed, &firewall_rules(&[(Action::Deny, None)]));
    let (verdict, inside) = fx.run(&tcp(A_MAC, CONTAINER, 44000, UPLINK_ADDR, 8080, true, false));
    assert_eq!(verdict, TC_ACT_REDIRECT, "the firewall for the uplink filtered a container's hairpin");
    assert_eq!(inspect(&inside).dst, B_ADDR);
    assert_eq!(fx.count(Path::DroppedFirewall), 0);
}
