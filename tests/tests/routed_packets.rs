//! Routed IPv4 (`gateway_mode_ipv4=routed`) through BPF_PROG_TEST_RUN: a routed network's
//! IPv4 leaves untranslated, its flows tracked with their own address and port so that
//! their replies come back (through `from_uplink`'s tail call into `from_uplink_routed`);
//! from outside, a routed container's own address takes its published container ports,
//! replies and ICMP, and drops the rest. An unprotected network
//! (`gateway_mode_ipv4=nat-unprotected`) is masqueraded going out, and takes every port of
//! its containers' own addresses from outside, by the same tail call, the firewall's rules
//! applied there. Every frame's bytes past its MACs are checked unchanged, which covers
//! every address, port and checksum.

use std::time::Duration;

use dataplane::{
    firewall::{Action, Installed, RuleSpec, Rules},
    ports::Proto,
};
use dataplane_common::{
    Backend, IPPROTO_TCP, InterfaceConfig, IpAddress, Path, PublishKey, SubnetInfo, ct_state,
};
use dataplane_tests::datapath::{
    A_MAC, B_MAC, Fixture, GATEWAY_MAC, LO, RED, TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT, UPLINK_ADDR,
    UPLINK_MAC, XDP_PASS, b_interface, firewall_rule, firewall_rules, icmp_echo, macs, red_interface,
    tcp_segment, udp_between_macs,
};

const A: [u8; 4] = [10, 1, 0, 2];
const B: [u8; 4] = [10, 1, 0, 3];
const RED_GATEWAY: [u8; 4] = [10, 1, 0, 1];
const REMOTE: [u8; 4] = [198, 51, 100, 7];

/// NAT on, red (A's and B's network) in routed mode: its IPv4 subnet flagged routed, A's
/// interface too.
fn routed() -> Fixture {
    let mut fx = Fixture::new(InterfaceConfig::ROUTED_V4);
    fx.enable_nat(61000, 61999);
    fx.datapath
        .set_subnet("10.1.0.0/24".parse().unwrap(), RED, RED_GATEWAY.into(), SubnetInfo::ROUTED)
        .unwrap();
    fx
}

fn assert_untranslated(sent: &[u8], seen: &[u8], what: &str) {
    assert_eq!(&seen[12..], &sent[12..], "{what}: the packet must not change beyond its MACs");
}

#[test]
fn tcp_udp_and_echo_from_a_routed_network_leave_with_the_containers_own_address_and_their_replies_come_back()
{
    let mut fx = routed();
    let syn = tcp_segment(A_MAC, (A, 40000), (REMOTE, 80), "S", 1000, 0);
    let (verdict, out) = fx.run(&syn);
    assert_eq!(verdict, TC_ACT_REDIRECT, "a SYN from a routed network was not sent to the uplink");
    assert_eq!(macs(&out), (GATEWAY_MAC, UPLINK_MAC), "the next hop's (FIB) and the uplink's MACs");
    assert_untranslated(&syn, &out, "the SYN");
    assert_eq!((fx.count(Path::Routed), fx.count(Path::Masqueraded)), (1, 0));
    let flows = fx.datapath.conntrack_unconfirmed().unwrap();
    assert_eq!(flows.len(), 1, "the routed flow was not tracked");
    assert_eq!(flows[0].0.src, IpAddress::v4(A), "flow key source");
    assert_eq!(flows[0].1.nat_addr, IpAddress::v4(A), "a routed flow's address is the container's own");
    assert_eq!(flows[0].1.nat_port, 40000u16.to_be(), "a routed flow's port is the container's own");

    let syn_ack = tcp_segment(GATEWAY_MAC, (REMOTE, 80), (A, 40000), "SA", 5000, 1001);
    let (verdict, back) = fx.run_uplink(&syn_ack);
    assert_eq!(verdict, TC_ACT_REDIRECT, "the reply of a routed flow was not sent into the container");
    assert_eq!(macs(&back).0, A_MAC, "the reply must go to the container's MAC");
    assert_untranslated(&syn_ack, &back, "the reply");
    assert_eq!(fx.count(Path::RoutedIn), 1);
    assert_eq!(fx.datapath.conntrack_unconfirmed().unwrap()[0].1.state, ct_state::ESTABLISHED);

    // The flow's next packets: untranslated, on the one lookup of established flows.
    let ack = tcp_segment(A_MAC, (A, 40000), (REMOTE, 80), "A", 1001, 5001);
    let (verdict, out) = fx.run(&ack);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_untranslated(&ack, &out, "the flow's ACK");
    let (verdict, out) = fx.run(&ack);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_untranslated(&ack, &out, "the flow's next segment");
    assert_eq!((fx.count(Path::Routed), fx.count(Path::Masqueraded)), (3, 0));

    let query = udp_between_macs((A_MAC, GATEWAY_MAC), (A, 5353), (REMOTE, 53));
    let (verdict, out) = fx.run(&query);
    assert_eq!(verdict, TC_ACT_REDIRECT, "a datagram from a routed network was not sent to the uplink");
    assert_untranslated(&query, &out, "the datagram");
    let answer = udp_between_macs((GATEWAY_MAC, UPLINK_MAC), (REMOTE, 53), (A, 5353));
    let (verdict, back) = fx.run_uplink(&answer);
    assert_eq!(verdict, TC_ACT_REDIRECT, "the answer was not let in");
    assert_untranslated(&answer, &back, "the answer");

    let request = icmp_echo(A_MAC, A, REMOTE, 777, false);
    let (verdict, out) = fx.run(&request);
    assert_eq!(verdict, TC_ACT_REDIRECT, "the echo request was not sent to the uplink");
    assert_untranslated(&request, &out, "the echo request");
    let reply = icmp_echo(GATEWAY_MAC, REMOTE, A, 777, true);
    let (verdict, back) = fx.run_uplink(&reply);
    assert_eq!(verdict, TC_ACT_REDIRECT, "the echo reply was not sent back");
    assert_eq!(macs(&back).0, A_MAC);
    assert_untranslated(&reply, &back, "the echo reply");
    assert_eq!((fx.count(Path::Routed), fx.count(Path::RoutedIn)), (5, 3));
}

#[test]
fn from_outside_a_routed_container_takes_its_published_ports_replies_and_icmp_and_nothing_else() {
    let mut fx = routed();
    // Nothing published, no flow: a new connection is dropped, and so is a datagram.
    let to_ssh = tcp_segment(GATEWAY_MAC, (REMOTE, 33000), (B, 22), "S", 1, 0);
    let (verdict, out) = fx.run_uplink(&to_ssh);
    assert_eq!((verdict, out), (TC_ACT_SHOT, to_ssh), "a SYN to an unpublished port must be dropped");
    let (verdict, _) = fx.run_uplink(&udp_between_macs((GATEWAY_MAC, UPLINK_MAC), (REMOTE, 53), (A, 5353)));
    assert_eq!(verdict, TC_ACT_SHOT, "a datagram of no flow must be dropped");
    assert_eq!(fx.count(Path::DroppedUnpublished), 2);

    // B publishes port 80 (the daemon's entry for `-p 8080:80` on a routed network): the
    // container port on B's own address, reached untranslated.
    let key = PublishKey { addr: IpAddress::v4(B), port: 80u16.to_be(), proto: IPPROTO_TCP, _pad: 0 };
    let backend = Backend {
        addr: IpAddress::v4(B),
        port: 80u16.to_be(),
        rule_set: 0,
        host_ifindex: 42,
        mac: B_MAC,
        flags: 0,
        _pad: 0,
    };
    fx.datapath.set_published(key, backend).unwrap();
    let client = (REMOTE, 33000);
    let syn = tcp_segment(GATEWAY_MAC, client, (B, 80), "S", 1, 0);
    let (verdict, inside) = fx.run_uplink(&syn);
    assert_eq!(verdict, TC_ACT_REDIRECT, "a SYN to a published port was not sent to its container");
    assert_eq!(macs(&inside).0, B_MAC, "destination MAC must be the container's");
    assert_untranslated(&syn, &inside, "the SYN to the published port");
    assert_eq!(fx.count(Path::Published), 1);
    // Its answer leaves from B's own address and port too.
    fx.datapath
        .set_interface(LO, b_interface(InterfaceConfig::PUBLISHES | InterfaceConfig::ROUTED_V4))
        .unwrap();
    let syn_ack = tcp_segment(B_MAC, (B, 80), client, "SA", 9, 2);
    let (verdict, out) = fx.run(&syn_ack);
    assert_eq!(verdict, TC_ACT_REDIRECT, "the answer was not sent to the uplink");
    assert_eq!(macs(&out), (GATEWAY_MAC, UPLINK_MAC), "the next hop's and the uplink's MACs");
    assert_untranslated(&syn_ack, &out, "the answer");
    assert_eq!(fx.count(Path::PublishedReply), 1);
    // Another port of B stays closed.
    let (verdict, _) = fx.run_uplink(&tcp_segment(GATEWAY_MAC, client, (B, 81), "S", 1, 0));
    assert_eq!(verdict, TC_ACT_SHOT, "a SYN to another port of a publishing container must be dropped");

    // ICMP is let in, as Docker's routed mode does, and B's echo reply leaves as it is.
    let ping = icmp_echo(GATEWAY_MAC, REMOTE, B, 9, false);
    let (verdict, inside) = fx.run_uplink(&ping);
    assert_eq!(verdict, TC_ACT_REDIRECT, "an echo request to a routed container was not let in");
    assert_eq!(macs(&inside).0, B_MAC, "the echo request must go to the container's MAC");
    assert_untranslated(&ping, &inside, "the echo request");
    assert_eq!(fx.count(Path::RoutedIn), 1);
    let pong = icmp_echo(B_MAC, B, REMOTE, 9, true);
    let (verdict, out) = fx.run(&pong);
    assert_eq!(verdict, TC_ACT_REDIRECT, "the echo reply was not sent to the uplink");
    assert_eq!(macs(&out), (GATEWAY_MAC, UPLINK_MAC));
    assert_untranslated(&pong, &out, "the echo reply");
    assert_eq!(fx.count(Path::Routed), 1);

    // The gateway is the host's: left to the kernel.
    let to_gateway = tcp_segment(GATEWAY_MAC, client, (RED_GATEWAY, 22), "S", 1, 0);
    let (verdict, out) = fx.run_uplink(&to_gateway);
    assert_eq!((verdict, out), (TC_ACT_OK, to_gateway), "the gateway's traffic is the host's");
    assert_eq!(fx.count(Path::DroppedUnpublished), 3);
}

#[test]
fn a_nat_networks_container_addresses_take_nothing_from_outside_beside_a_routed_one() {
    // Red routed, blue (10.2.0.2 behind ifindex 43) NAT: blue's address takes no ping.
    let mut fx = routed();
    let ping = icmp_echo(GATEWAY_MAC, REMOTE, [10, 2, 0, 2], 9, false);
    let (verdict, out) = fx.run_uplink(&ping);
    assert_eq!((verdict, out), (TC_ACT_SHOT, ping), "an echo request to a NAT container must be dropped");
    assert_eq!((fx.count(Path::DroppedUnpublished), fx.count(Path::RoutedIn)), (1, 0));
}

/// NAT on, red (A's and B's network) unprotected: its IPv4 subnet flagged so, B's
/// interface publishing (as the daemon sets every endpoint of such a network).
fn unprotected() -> Fixture {
    let mut fx = Fixture::new(0);
    fx.enable_nat(61000, 61999);
    fx.datapath
        .set_subnet("10.1.0.0/24".parse().unwrap(), RED, RED_GATEWAY.into(), SubnetInfo::UNPROTECTED)
        .unwrap();
    fx
}

#[test]
fn from_outside_an_unprotected_container_takes_every_port_and_its_answers_leave_as_they_are() {
    let mut fx = unprotected();
    let client = (REMOTE, 33000);
    // Port 22, published nowhere: the SYN reaches B untranslated, its flow tracked as a
    // connection to a port published on B's own address.
    let syn = tcp_segment(GATEWAY_MAC, client, (B, 22), "S", 1, 0);
    let (verdict, passed) = fx.run_uplink_xdp(&syn);
    assert_eq!((verdict, passed), (XDP_PASS, syn.clone()), "XDP leaves a new direct connection to tc");
    let (verdict, inside) = fx.run_uplink(&syn);
    assert_eq!(
        verdict, TC_ACT_REDIRECT,
        "a SYN to an unpublished port of an unprotected container was dropped"
    );
    assert_eq!(macs(&inside).0, B_MAC, "destination MAC must be the container's");
    assert_untranslated(&syn, &inside, "the SYN");
    assert_eq!((fx.count(Path::Published), fx.count(Path::DroppedUnpublished)), (1, 0));
    let flows = fx.datapath.dnat_unconfirmed().unwrap();
    assert_eq!(flows.len(), 1, "the direct connection was not tracked");
    assert_eq!(
        (flows[0].0.src, flows[0].0.src_port),
        (IpAddress::v4(B), 22u16.to_be()),
        "flow key: B's port"
    );
    assert_eq!(
        (flows[0].0.dst, flows[0].0.dst_port),
        (IpAddress::v4(REMOTE), 33000u16.to_be()),
        "the client"
    );
    assert_eq!(flows[0].1.host_addr, IpAddress::v4(B), "the address the client sent to: B's own");
    assert_eq!(flows[0].1.host_port, 22u16.to_be(), "the port the client sent to: B's own");

    // B's answer leaves as it is: no masquerade of the uplink's address.
    fx.datapath.set_interface(LO, b_interface(InterfaceConfig::PUBLISHES)).unwrap();
    let syn_ack = tcp_segment(B_MAC, (B, 22), client, "SA", 9, 2);
    let (verdict, out) = fx.run(&syn_ack);
    assert_eq!(verdict, TC_ACT_REDIRECT, "the answer was not sent to the uplink");
    assert_eq!(macs(&out), (GATEWAY_MAC, UPLINK_MAC), "the next hop's and the uplink's MACs");
    assert_untranslated(&syn_ack, &out, "the answer");
    assert_eq!((fx.count(Path::PublishedReply), fx.count(Path::Masqueraded)), (1, 0));
    // The client's ACK confirms it; the next segments take the cache, at XDP too.
    let ack = tcp_segment(GATEWAY_MAC, client, (B, 22), "A", 2, 10);
    let (verdict, inside) = fx.run_uplink(&ack);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_untranslated(&ack, &inside, "the client's ACK");
    assert_eq!(fx.datapath.dnat_conntrack().unwrap().len(), 1, "the client's ACK did not confirm the flow");

    // A datagram to any port, and a ping, get in as they are.
    let datagram = udp_between_macs((GATEWAY_MAC, UPLINK_MAC), (REMOTE, 5000), (B, 5353));
    let (verdict, inside) = fx.run_uplink(&datagram);
    assert_eq!(verdict, TC_ACT_REDIRECT, "a datagram to an unprotected container was dropped");
    assert_untranslated(&datagram, &inside, "the datagram");
    let ping = icmp_echo(GATEWAY_MAC, REMOTE, B, 9, false);
    let (verdict, inside) = fx.run_uplink(&ping);
    assert_eq!(verdict, TC_ACT_REDIRECT, "an echo request to an unprotected container was dropped");
    assert_eq!(macs(&inside).0, B_MAC);
    assert_untranslated(&ping, &inside, "the echo request");
    assert_eq!((fx.count(Path::Published), fx.count(Path::RoutedIn)), (3, 1));
    // B's echo reply, which no flow tracks, leaves as it is (its interface says so).
    fx.datapath
        .set_interface(LO, b_interface(InterfaceConfig::PUBLISHES | InterfaceConfig::UNPROTECTED_V4))
        .unwrap();
    let pong = icmp_echo(B_MAC, B, REMOTE, 9, true);
    let (verdict, out) = fx.run(&pong);
    assert_eq!(verdict, TC_ACT_REDIRECT, "the echo reply was not sent to the uplink");
    assert_eq!(macs(&out), (GATEWAY_MAC, UPLINK_MAC), "the next hop's and the uplink's MACs");
    assert_untranslated(&pong, &out, "the echo reply");
    assert_eq!((fx.count(Path::Routed), fx.count(Path::Masqueraded)), (1, 0));

    // No container at the address: dropped; the gateway is the host's.
    let (verdict, _) = fx.run_uplink(&tcp_segment(GATEWAY_MAC, client, ([10, 1, 0, 77], 22), "S", 1, 0));
    assert_eq!(verdict, TC_ACT_SHOT, "a SYN for no container must be dropped");
    assert_eq!(fx.count(Path::DroppedUnpublished), 1);
    let to_gateway = tcp_segment(GATEWAY_MAC, client, (RED_GATEWAY, 22), "S", 1, 0);
    assert_eq!(fx.run_uplink(&to_gateway), (TC_ACT_OK, to_gateway), "the gateway's traffic is the host's");
    // Blue, a NAT network beside it, stays closed.
    let to_blue = tcp_segment(GATEWAY_MAC, client, ([10, 2, 0, 2], 22), "S", 1, 0);
    assert_eq!(fx.run_uplink(&to_blue), (TC_ACT_SHOT, to_blue), "a NAT network's container must stay closed");
    assert_eq!(fx.count(Path::DroppedUnpublished), 2);
}

#[test]
fn an_unprotected_networks_own_flows_out_are_masqueraded_as_nats() {
    let mut fx = unprotected();
    let syn = tcp_segment(A_MAC, (A, 40000), (REMOTE, 80), "S", 1000, 0);
    let (verdict, out) = fx.run(&syn);
    assert_eq!(verdict, TC_ACT_REDIRECT, "a SYN from an unprotected network was not sent to the uplink");
    assert_eq!(&out[26..30], &UPLINK_ADDR, "its source must be the uplink's address");
    assert_eq!((fx.count(Path::Masqueraded), fx.count(Path::Routed)), (1, 0));
    let flows = fx.datapath.conntrack_unconfirmed().unwrap();
    assert_eq!(
        flows[0].1.nat_addr,
        IpAddress::v4(UPLINK_ADDR),
        "a masqueraded flow's address is the uplink's"
    );
    let nat_port = flows[0].1.nat_port;
    assert_ne!(nat_port, 40000u16.to_be(), "a masqueraded flow's port is one of the range");
    // Its reply comes back to the uplink's address, translated back, not as a direct one.
    let syn_ack =
        tcp_segment(GATEWAY_MAC, (REMOTE, 80), (UPLINK_ADDR, u16::from_be(nat_port)), "SA", 5000, 1001);
    let (verdict, back) = fx.run_uplink(&syn_ack);
    assert_eq!(verdict, TC_ACT_REDIRECT, "the reply was not sent back into the container");
    assert_eq!(&back[30..34], &A, "the reply's destination must be A again");
    assert_eq!(u16::from_be_bytes([back[36], back[37]]), 40000, "the reply's port must be A's again");
    assert_eq!((fx.count(Path::ReverseNat), fx.count(Path::Published)), (1, 0));
}

/// An ICMP error of `kind` from `from` (MAC and address) to `to`, quoting `quoted` (a
/// frame) from its IPv4 header on, whole.
fn icmp_error(from: ([u8; 6], [u8; 4]), to: [u8; 4], kind: etherparse::Icmpv4Type, quoted: &[u8]) -> Vec<u8> {
    let mut frame = vec![];
    etherparse::PacketBuilder::ethernet2(from.0, UPLINK_MAC)
        .ipv4(from.1, to, 64)
        .icmpv4(kind)
        .write(&mut frame, &quoted[14..])
        .unwrap();
    frame
}

fn port_unreachable() -> etherparse::Icmpv4Type {
    etherparse::Icmpv4Type::DestinationUnreachable(etherparse::icmpv4::DestUnreachableHeader::Port)
}

fn ttl_exceeded() -> etherparse::Icmpv4Type {
    etherparse::Icmpv4Type::TimeExceeded(etherparse::icmpv4::TimeExceededCode::TtlExceededInTransit)
}

/// An outside router on the uplink's segment.
const ROUTER: [u8; 4] = [203, 0, 113, 2];

/// ICMP errors through a routed network, both ways, leave every byte past the MACs as
/// they are: a router's error about a container's flow comes in to the container, and the
/// container's own error about a packet it got leaves by the uplink, with its own address.
#[test]
fn icmp_errors_through_a_routed_network_pass_both_ways_untranslated() {
    let mut fx = routed();
    // B (an endpoint of red, behind ifindex 42) sends from behind `lo`.
    fx.datapath.set_interface(LO, b_interface(InterfaceConfig::ROUTED_V4)).unwrap();
    let query = udp_between_macs((B_MAC, GATEWAY_MAC), (B, 5353), (REMOTE, 53));
    let (verdict, _) = fx.run(&query);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    for kind in [ttl_exceeded(), port_unreachable()] {
        let error = icmp_error((GATEWAY_MAC, ROUTER), B, kind.clone(), &query);
        let (verdict, inside) = fx.run_uplink(&error);
        assert_eq!(verdict, TC_ACT_REDIRECT, "{kind:?} about a routed flow was not let in");
        assert_eq!(macs(&inside).0, B_MAC, "the error must go to the container's MAC");
        assert_untranslated(&error, &inside, "the router's error");
    }
    assert_eq!(fx.count(Path::RoutedIn), 2);

    // The container's error about a datagram it got (a reply after its socket closed).
    let answer = udp_between_macs((GATEWAY_MAC, UPLINK_MAC), (REMOTE, 53), (B, 5353));
    let (verdict, got) = fx.run_uplink(&answer);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    let error = icmp_error((B_MAC, B), REMOTE, port_unreachable(), &got);
    let (verdict, out) = fx.run(&error);
    assert_eq!(verdict, TC_ACT_REDIRECT, "the container's error was not sent to the uplink");
    assert_eq!(macs(&out), (GATEWAY_MAC, UPLINK_MAC), "the next hop's and the uplink's MACs");
    assert_untranslated(&error, &out, "the container's error");
    assert_eq!((fx.count(Path::Routed), fx.count(Path::Masqueraded)), (2, 0));
}

/// An unprotected network's container (`gateway_mode_ipv4=nat-unprotected`): its ICMP
/// errors about its masqueraded flows leave translated, as a NAT network's do (they left
/// untranslated, as ICMP no flow tracks, with the container's own address inside and
/// out); those about a connection to its own address, and about no flow, leave as they
/// are.
#[test]
fn an_unprotected_containers_icmp_errors_about_its_masqueraded_flows_leave_translated() {
    let mut fx = unprotected();
    fx.datapath.set_interface(LO, red_interface(InterfaceConfig::UNPROTECTED_V4)).unwrap();
    let (_, out) = fx.run(&udp_between_macs((A_MAC, GATEWAY_MAC), (A, 5000), (REMOTE, 53)));
    let nat_port = u16::from_be_bytes([out[34], out[35]]);
    let answer = udp_between_macs((GATEWAY_MAC, UPLINK_MAC), (REMOTE, 53), (UPLINK_ADDR, nat_port));
    let (verdict, got) = fx.run_uplink(&answer);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    let (verdict, out) = fx.run(&icmp_error((A_MAC, A), REMOTE, port_unreachable(), &got));
    assert_eq!(verdict, TC_ACT_REDIRECT, "the error was not sent to the uplink");
    assert_eq!(macs(&out), (GATEWAY_MAC, UPLINK_MAC));
    // Every byte as the remote must see it: the error it would get about the answer as
    // it sent it, which is the container's error built anew with the translation.
    let mut expected = icmp_error((A_MAC, UPLINK_ADDR), REMOTE, port_unreachable(), &answer);
    expected[..12].copy_from_slice(&out[..12]);
    assert_eq!(out, expected, "the error must leave as the uplink's about the flow as it arrived");
    assert_eq!((fx.count(Path::Masqueraded), fx.count(Path::Routed)), (2, 0));

    // B's error about a datagram that came in to its own address: as it is.
    fx.datapath
        .set_interface(LO, b_interface(InterfaceConfig::PUBLISHES | InterfaceConfig::UNPROTECTED_V4))
        .unwrap();
    let (verdict, inside) =
        fx.run_uplink(&udp_between_macs((GATEWAY_MAC, UPLINK_MAC), (REMOTE, 7000), (B, 5999)));
    assert_eq!(verdict, TC_ACT_REDIRECT);
    let error = icmp_error((B_MAC, B), REMOTE, port_unreachable(), &inside);
    let (verdict, out) = fx.run(&error);
    assert_eq!(verdict, TC_ACT_REDIRECT, "the error about a direct datagram was not sent to the uplink");
    assert_untranslated(&error, &out, "the error about a datagram to its own address");
    assert_eq!(fx.count(Path::PublishedReply), 1);
    // About no flow at all: as it is too.
    let mut stray = inside.clone();
    stray[34..36].copy_from_slice(&7001u16.to_be_bytes());
    let error = icmp_error((B_MAC, B), REMOTE, port_unreachable(), &stray);
    let (verdict, out) = fx.run(&error);
    assert_eq!(verdict, TC_ACT_REDIRECT, "the error about no flow was not sent to the uplink");
    assert_untranslated(&error, &out, "the error about no flow");
    assert_eq!(fx.count(Path::Routed), 1);
}

const OTHER_REMOTE: [u8; 4] = [198, 51, 100, 8];

/// The firewall on an unprotected container's own address, where `--port` is the port the
/// client addresses: a denied source's SYN is dropped and counted, and nothing tracked; the
/// first matching rule decides, as on a published port; other ports and protocols than the
/// rule's pass.
#[test]
fn the_firewall_filters_what_reaches_an_unprotected_containers_own_ports_from_outside() {
    let mut fx = unprotected();
    let mut installed = Installed::default();
    let rules = firewall_rules([
        firewall_rule(Action::Allow, Some("198.51.100.7"), Some("22")),
        RuleSpec {
            proto: Some(Proto::Tcp),
            ..firewall_rule(Action::Deny, Some("198.51.100.0/24"), Some("20-29"))
        },
    ]);
    fx.filter_own_address(&mut installed, &rules, "web", B.into());
    let (allow, deny) = (rules.rules[0].slot, rules.rules[1].slot);

    let denied = tcp_segment(GATEWAY_MAC, (OTHER_REMOTE, 33000), (B, 22), "S", 1, 0);
    fx.assert_firewall_dropped(&denied, deny, "a denied source's SYN");

    // The allow before the deny lets its source in, untranslated.
    let allowed = tcp_segment(GATEWAY_MAC, (REMOTE, 33000), (B, 22), "S", 1, 0);
    let (verdict, inside) = fx.run_uplink(&allowed);
    assert_eq!(verdict, TC_ACT_REDIRECT, "the allowed source was refused");
    assert_eq!(macs(&inside).0, B_MAC, "destination MAC must be the container's");
    assert_untranslated(&allowed, &inside, "the allowed SYN");
    assert_eq!(fx.datapath.firewall_hits(allow).unwrap(), 1, "the allow rule's hit was not counted");

    // A port outside the rule's range, and UDP to one inside (the rule is TCP's): in.
    for (frame, what) in [
        (tcp_segment(GATEWAY_MAC, (OTHER_REMOTE, 33001), (B, 80), "S", 1, 0), "a SYN to port 80"),
        (udp_between_macs((GATEWAY_MAC, UPLINK_MAC), (OTHER_REMOTE, 5000), (B, 22)), "a datagram to port 22"),
    ] {
        let (verdict, inside) = fx.run_uplink(&frame);
        assert_eq!(verdict, TC_ACT_REDIRECT, "{what} was refused");
        assert_eq!(macs(&inside).0, B_MAC, "{what}: destination MAC must be the container's");
        assert_untranslated(&frame, &inside, what);
    }
    assert_eq!((fx.count(Path::Published), fx.count(Path::DroppedFirewall)), (3, 1));
    assert_eq!(fx.datapath.firewall_hits(deny).unwrap(), 1, "a port or protocol outside the rule hit it");
}

/// A deny on an unprotected container's own address cuts its established connections
/// within a second (their cached packets ask the firewall again then) and new ones at
/// once; it outlives a reload of the programs; it leaves the network's own containers
/// alone; and once removed, nothing of it stays in the tries.
#[test]
fn a_deny_on_an_unprotected_containers_own_address_cuts_its_connections_and_goes_with_its_rule() {
    let mut fx = unprotected();
    let client = (REMOTE, 33000);
    assert_eq!(fx.run_uplink(&tcp_segment(GATEWAY_MAC, client, (B, 22), "S", 1, 0)).0, TC_ACT_REDIRECT);
    fx.datapath.set_interface(LO, b_interface(InterfaceConfig::PUBLISHES)).unwrap();
    assert_eq!(fx.run(&tcp_segment(B_MAC, (B, 22), client, "SA", 9, 2)).0, TC_ACT_REDIRECT);
    let ack = tcp_segment(GATEWAY_MAC, client, (B, 22), "A", 2, 10);
    assert_eq!(fx.run_uplink(&ack).0, TC_ACT_REDIRECT);
    assert_eq!(fx.datapath.dnat_conntrack().unwrap().len(), 1, "the client's ACK did not confirm the flow");

    let mut installed = Installed::default();
    let deny_all = firewall_rules([firewall_rule(Action::Deny, None, None)]);
    fx.filter_own_address(&mut installed, &deny_all, "web", B.into());
    let other = tcp_segment(GATEWAY_MAC, (REMOTE, 33001), (B, 22), "S", 1, 0);
    assert_eq!(fx.run_uplink(&other).0, TC_ACT_SHOT, "a new connection got past a deny");
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(fx.run_uplink(&ack).0, TC_ACT_SHOT, "a connection outlived its deny by more than a second");
    assert_eq!(fx.count(Path::DroppedFirewall), 2);

    // A restarted daemon finds the address's blocks pinned, and takes them over.
    fx.reload();
    let mut installed = Installed::load(&mut fx.datapath).unwrap();
    assert_eq!(fx.run_uplink(&other).0, TC_ACT_SHOT, "the deny did not outlive a reload");
    assert_eq!(fx.count(Path::DroppedFirewall), 3);

    // A, on B's network, is no client from outside: it reaches B as before.
    fx.datapath.set_interface(LO, red_interface(InterfaceConfig::UNPROTECTED_V4)).unwrap();
    let from_a = udp_between_macs((A_MAC, B_MAC), (A, 40000), (B, 22));
    let (verdict, inside) = fx.run(&from_a);
    assert_eq!(verdict, TC_ACT_REDIRECT, "the firewall for the uplink filtered a container of the network");
    assert_eq!(macs(&inside).0, B_MAC);
    assert_eq!(fx.count(Path::DroppedFirewall), 3);

    // Without the rule the connection goes on, and nothing of the rule stays behind.
    fx.filter_own_address(&mut installed, &Rules::default(), "web", B.into());
    assert_eq!(fx.run_uplink(&ack).0, TC_ACT_REDIRECT, "the connection stayed blocked after the rule went");
    assert!(fx.datapath.firewall_direct_entries().unwrap().is_empty(), "the address kept its blocks");
    assert!(fx.datapath.firewall_entries().unwrap().is_empty(), "a rule set nothing uses stayed in the trie");
}
