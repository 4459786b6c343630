//! Hostile frames: every kernel program that takes frames (`from_container`,
//! `from_uplink`, `uplink_xdp`) meets 100,000 generated ones through BPF_PROG_TEST_RUN,
//! random bytes and mutations of valid frames, in a datapath holding masqueraded and
//! published flows, confirmed and not. After each frame the invariants of
//! `dataplane_tests::hostile` are checked: a verdict the program may return, counters
//! moved on the path taken alone, frames passed on unchanged, and for a malformed frame
//! no translation, no conntrack entry made, and none of those already there changed or
//! removed. Seeded: the seed is printed, and `DATAPLANE_HOSTILE_SEED` replays it.

use std::time::{Duration, Instant};

use dataplane_common::{Backend, InterfaceConfig, IpAddress, Path, PublishKey, program_names};
use dataplane_tests::{
    datapath::{
        A_MAC, A6, ARP_REQUEST, B_MAC, B6, Fixture, GATEWAY_MAC, LO, TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT,
        UPLINK_ADDR, UPLINK_MAC, XDP_DROP, XDP_PASS, arp, b_interface, icmp_echo, ipv6_frame, ipv6_udp,
        neighbour_advertisement, tcp_segment, udp_between_macs, udp6_between_macs, v6,
    },
    hostile::{self, Exact, Generator, Hook, IPPROTO_TCP, IPPROTO_UDP, Prober, Shape, Template},
};
use etherparse::PacketBuilder;

/// Frames each program meets (BPF_PROG_TEST_RUN's refusals not counted).
const FRAMES: u64 = 100_000;
/// The bound on one program's run, far above what it takes (about 15 s on a loaded
/// 2-core machine).
const TIME_LIMIT: Duration = Duration::from_secs(240);

const CONTAINER: [u8; 4] = [10, 1, 0, 2];
const NEIGHBOUR: [u8; 4] = [10, 1, 0, 3];
/// A server outside, and a client of the published ports.
const REMOTE: [u8; 4] = [198, 18, 1, 9];
const CLIENT: [u8; 4] = [198, 18, 0, 7];
/// B's host-side ifindex, as the fixture's endpoint table has it.
const B_IFINDEX: u32 = 42;
/// The container's initial sequence number on its published connections.
const ISN: u32 = 5000;

/// Publishes host port `port` of `proto` on every host address to port 80 of the
/// container at (`addr`, host-side ifindex, MAC).
fn publish(fx: &mut Fixture, proto: u8, port: u16, (addr, host_ifindex, mac): ([u8; 4], u32, [u8; 6])) {
    let key = PublishKey { addr: IpAddress::v4([0; 4]), port: port.to_be(), proto, _pad: 0 };
    let backend = Backend {
        addr: IpAddress::v4(addr),
        port: 80u16.to_be(),
        rule_set: 0,
        host_ifindex,
        mac,
        flags: 0,
        _pad: 0,
    };
    fx.datapath.set_published(key, backend).unwrap();
}

/// The masquerade ports the datapath gave the flows the fixture opened.
struct NatPorts {
    tcp_confirmed: u16,
    udp: u16,
    icmp_id: u16,
}

/// The source port of a frame that left through the uplink.
fn source_port(frame: &[u8]) -> u16 {
    u16::from_be_bytes([frame[34], frame[35]])
}

fn run_ok(fx: &mut Fixture, program: &str, frame: &[u8], what: &str) -> Vec<u8> {
    let (verdict, out) = fx.try_run(program, frame).unwrap();
    assert_eq!(verdict, TC_ACT_REDIRECT, "setting up: {what} was not redirected");
    out
}

/// A datapath with NAT on and flows in every conntrack table. Container A (10.1.0.2,
/// behind `lo`) publishes TCP 8080 and UDP 5353, B (behind ifindex 42) TCP 9090; both
/// take XDP frames. A has a confirmed and an unconfirmed masqueraded TCP flow to REMOTE,
/// a UDP one and an ICMP echo one; CLIENT has a confirmed and an unconfirmed connection to
/// 8080.
fn loaded_datapath() -> (Fixture, NatPorts) {
    // Small tables: reading one walks all its buckets, and the probe reads them all after
    // every frame. The flows here never fill them.
    let mut fx = Fixture::with_conntrack_max(InterfaceConfig::PUBLISHES | InterfaceConfig::XDP_TARGET, 256);
    fx.enable_nat(61000, 61999);
    fx.datapath.set_interface(B_IFINDEX, b_interface(InterfaceConfig::XDP_TARGET)).unwrap();
    publish(&mut fx, IPPROTO_TCP, 8080, (CONTAINER, LO, A_MAC));
    publish(&mut fx, IPPROTO_UDP, 5353, (CONTAINER, LO, A_MAC));
    publish(&mut fx, IPPROTO_TCP, 9090, (NEIGHBOUR, B_IFINDEX, B_MAC));
    let (out, up) = (program_names::FROM_CONTAINER, program_names::FROM_UPLINK);

    let syn = tcp_segment(A_MAC, (CONTAINER, 40000), (REMOTE, 80), "S", 1000, 0);
    let tcp_confirmed = source_port(&run_ok(&mut fx, out, &syn, "a masqueraded SYN"));
    let syn_ack = tcp_segment(GATEWAY_MAC, (REMOTE, 80), (UPLINK_ADDR, tcp_confirmed), "SA", 7000, 1001);
    run_ok(&mut fx, up, &syn_ack, "the SYN-ACK of a masqueraded flow");
    let ack = tcp_segment(A_MAC, (CONTAINER, 40000), (REMOTE, 80), "A", 1001, 7001);
    run_ok(&mut fx, out, &ack, "the ACK confirming a masqueraded flow");
    let syn = tcp_segment(A_MAC, (CONTAINER, 40001), (REMOTE, 80), "S", 1000, 0);
    run_ok(&mut fx, out, &syn, "a second masqueraded SYN");
    let query = udp_between_macs((A_MAC, GATEWAY_MAC), (CONTAINER, 5000), (REMOTE, 53));
    let udp = source_port(&run_ok(&mut fx, out, &query, "a masqueraded UDP query"));
    let ping = icmp_echo(A_MAC, CONTAINER, REMOTE, 77, false);
    let icmp_id =
        u16::from_be_bytes(run_ok(&mut fx, out, &ping, "a masqueraded ping")[38..40].try_into().unwrap());

    let syn = tcp_segment(GATEWAY_MAC, (CLIENT, 33000), (UPLINK_ADDR, 8080), "S", 100, 0);
    run_ok(&mut fx, up, &syn, "a SYN to a published port");
    let syn_ack = tcp_segment(A_MAC, (CONTAINER, 80), (CLIENT, 33000), "SA", ISN, 101);
    run_ok(&mut fx, out, &syn_ack, "the published container's SYN-ACK");
    let ack = tcp_segment(GATEWAY_MAC, (CLIENT, 33000), (UPLINK_ADDR, 8080), "A", 101, ISN + 1);
    run_ok(&mut fx, up, &ack, "the ACK confirming a published connection");
    let syn = tcp_segment(GATEWAY_MAC, (CLIENT, 33001), (UPLINK_ADDR, 8080), "S", 100, 0);
    run_ok(&mut fx, up, &syn, "a second SYN to a published port");
    assert_eq!(fx.datapath.conntrack().unwrap().len(), 1, "setting up: one confirmed masqueraded flow");
    assert_eq!(fx.datapath.dnat_conntrack().unwrap().len(), 1, "setting up: one confirmed published flow");
    assert_eq!(
        fx.datapath.dnat_unconfirmed().unwrap().len(),
        1,
        "setting up: one unconfirmed published flow"
    );
    (fx, NatPorts { tcp_confirmed, udp, icmp_id })
}

fn template(name: &'static str, frame: Vec<u8>) -> Template {
    Template { name, frame }
}

fn udp_from(src: ([u8; 4], u16), dst: ([u8; 4], u16), src_mac: [u8; 6]) -> Vec<u8> {
    udp_between_macs((src_mac, if src_mac == A_MAC { GATEWAY_MAC } else { UPLINK_MAC }), src, dst)
}

/// A's port unreachable to `to` about `received`, a frame it got, quoted whole.
fn unreachable_from_a(to: [u8; 4], received: &[u8]) -> Vec<u8> {
    let mut frame = vec![];
    PacketBuilder::ethernet2(A_MAC, GATEWAY_MAC)
        .ipv4(CONTAINER, to, 64)
        .icmpv4(etherparse::Icmpv4Type::DestinationUnreachable(
            etherparse::icmpv4::DestUnreachableHeader::Port,
        ))
        .write(&mut frame, &received[14..])
        .unwrap();
    frame
}

/// Valid frames container A sends, one for each path of `from_container`.
fn container_templates() -> Vec<Template> {
    vec![
        template("udp to a neighbour", udp_from((CONTAINER, 4000), (NEIGHBOUR, 53), A_MAC)),
        template("tcp syn out", tcp_segment(A_MAC, (CONTAINER, 40002), (REMOTE, 443), "S", 1000, 0)),
        template(
            "tcp ack on the confirmed masqueraded flow",
            tcp_segment(A_MAC, (CONTAINER, 40000), (REMOTE, 80), "A", 1009, 7001),
        ),
        template(
            "tcp fin on the unconfirmed masqueraded flow",
            tcp_segment(A_MAC, (CONTAINER, 40001), (REMOTE, 80), "FA", 1001, 0),
        ),
        template("udp on the masqueraded flow", udp_from((CONTAINER, 5000), (REMOTE, 53), A_MAC)),
        template("icmp echo on the masqueraded flow", icmp_echo(A_MAC, CONTAINER, REMOTE, 77, false)),
        template(
            "port unreachable about a reply of the masqueraded udp flow",
            unreachable_from_a(REMOTE, &udp_from((REMOTE, 53), (CONTAINER, 5000), GATEWAY_MAC)),
        ),
        template(
            "port unreachable about the confirmed published flow",
            unreachable_from_a(
                CLIENT,
                &tcp_segment(GATEWAY_MAC, (CLIENT, 33000), (CONTAINER, 80), "A", 101, ISN + 1),
            ),
        ),
        template(
            "syn-ack on the unconfirmed published flow",
            tcp_segment(A_MAC, (CONTAINER, 80), (CLIENT, 33001), "SA", ISN, 101),
        ),
        template(
            "ack on the confirmed published flow",
            tcp_segment(A_MAC, (CONTAINER, 80), (CLIENT, 33000), "A", ISN + 1, 101),
        ),
        template(
            "hairpin to a port B publishes",
            tcp_segment(A_MAC, (CONTAINER, 40003), (UPLINK_ADDR, 9090), "S", 1, 0),
        ),
        template(
            "hairpin to its own port",
            tcp_segment(A_MAC, (CONTAINER, 40004), (UPLINK_ADDR, 8080), "S", 1, 0),
        ),
        template("udp to another network", udp_from((CONTAINER, 4000), ([10, 2, 0, 2], 53), A_MAC)),
        template("udp to the gateway", udp_from((CONTAINER, 4000), ([10, 1, 0, 1], 53), A_MAC)),
        template("dhcp discover", udp_from(([0; 4], 68), ([255; 4], 67), A_MAC)),
        template("arp request", arp(A_MAC, ARP_REQUEST, (A_MAC, CONTAINER), NEIGHBOUR)),
        template("ipv6 udp", ipv6_udp((A_MAC, GATEWAY_MAC))),
        template("ipv6 udp to a peer", udp6_between_macs((A_MAC, B_MAC), A6, B6)),
        template("ipv6 udp to another network", udp6_between_macs((A_MAC, B_MAC), A6, v6(2, 2))),
        template("ipv6 neighbour advertisement", neighbour_advertisement(A_MAC, A6, A6)),
        template("ipv6 udp behind a hop-by-hop header", {
            let mut behind = vec![17, 0, 1, 4, 0, 0, 0, 0];
            behind.extend([0x0f, 0xa0, 0, 53, 0, 9, 0, 0, b'x']);
            ipv6_frame((A_MAC, B_MAC), A6, B6, 0, &behind)
        }),
    ]
}

/// Valid frames arriving on the uplink, one for each path of `from_uplink` and
/// `uplink_xdp`.
fn uplink_templates(ports: &NatPorts) -> Vec<Template> {
    let gw = GATEWAY_MAC;
    let query = udp_between_macs((A_MAC, GATEWAY_MAC), (UPLINK_ADDR, ports.udp), (REMOTE, 53));
    let mut unreachable = vec![];
    PacketBuilder::ethernet2(gw, UPLINK_MAC)
        .ipv4(REMOTE, UPLINK_ADDR, 64)
        .icmpv4(etherparse::Icmpv4Type::DestinationUnreachable(
            etherparse::icmpv4::DestUnreachableHeader::Port,
        ))
        .write(&mut unreachable, &query[14..14 + 28])
        .unwrap();
    let nat = ports.tcp_confirmed;
    vec![
        template(
            "syn-ack of a masqueraded flow",
            tcp_segment(gw, (REMOTE, 80), (UPLINK_ADDR, nat), "SA", 7000, 1001),
        ),
        template(
            "ack on the confirmed masqueraded flow",
            tcp_segment(gw, (REMOTE, 80), (UPLINK_ADDR, nat), "A", 7001, 1009),
        ),
        template(
            "rst on the confirmed masqueraded flow",
            tcp_segment(gw, (REMOTE, 80), (UPLINK_ADDR, nat), "R", 7001, 0),
        ),
        template("udp reply", udp_from((REMOTE, 53), (UPLINK_ADDR, ports.udp), gw)),
        template("icmp echo reply", icmp_echo(gw, REMOTE, UPLINK_ADDR, ports.icmp_id, true)),
        template("port unreachable about the udp flow", unreachable),
        template(
            "syn to a published port",
            tcp_segment(gw, (CLIENT, 33002), (UPLINK_ADDR, 8080), "S", 100, 0),
        ),
        template(
            "ack on the confirmed published flow",
            tcp_segment(gw, (CLIENT, 33000), (UPLINK_ADDR, 8080), "A", 101, ISN + 1),
        ),
        template(
            "syn to the port B publishes",
            tcp_segment(gw, (CLIENT, 33003), (UPLINK_ADDR, 9090), "S", 100, 0),
        ),
        template("udp to a published port", udp_from((CLIENT, 40000), (UPLINK_ADDR, 5353), gw)),
        template("udp to loopback", udp_from((CLIENT, 40000), ([127, 0, 0, 1], 53), gw)),
        template("tcp to a container address", tcp_segment(gw, (CLIENT, 33004), (NEIGHBOUR, 80), "S", 1, 0)),
        template("tcp to the host", tcp_segment(gw, (CLIENT, 33005), (UPLINK_ADDR, 22), "S", 1, 0)),
        template("arp request", arp(gw, ARP_REQUEST, (gw, [203, 0, 113, 2]), UPLINK_ADDR)),
    ]
}

/// What `from_container` owes frames whose shape decides it: A's MAC or a drop; what is
/// not IP or cannot be read as IP to the kernel; A's address (or 0.0.0.0 to many; for
/// IPv6 also link-local, or :: to multicast) or a drop.
fn from_container_owes(frame: &[u8], shape: &Shape) -> Exact {
    if frame.len() >= 12 && frame[6..12] != A_MAC {
        return Some((TC_ACT_SHOT, Some(Path::DroppedSpoofedMac)));
    }
    match shape {
        Shape::Other { ethertype: hostile::ETH_P_ARP } => None,
        Shape::Other { ethertype: ETH_P_IPV6 } => ipv6_owes(frame),
        Shape::Other { .. } => Some((TC_ACT_OK, Some(Path::SlowPathOther))),
        Shape::UnreadableIpv4 => Some((TC_ACT_OK, Some(Path::SlowPathMalformed))),
        Shape::Ipv4(ip) => {
            let to_many = ip.dst == [255; 4] || ip.dst[0] & 0xf0 == 224;
            let own = ip.src == CONTAINER || (ip.src == [0; 4] && to_many);
            (!own).then_some((TC_ACT_SHOT, Some(Path::DroppedSpoofedIp)))
        }
        Shape::Runt => None,
    }
}

const ETH_P_IPV6: u16 = 0x86dd;

/// What `from_container` owes an IPv6 frame by its fixed header alone.
fn ipv6_owes(frame: &[u8]) -> Exact {
    let ip = &frame[14..];
    if ip.len() < 40 || ip[0] >> 4 != 6 {
        return Some((TC_ACT_OK, Some(Path::SlowPathMalformed)));
    }
    let (src, dst) = (&ip[8..24], &ip[24..40]);
    let own = src == A6 || src[..8] == [0xfe, 0x80, 0, 0, 0, 0, 0, 0] || (src == [0; 16] && dst[0] == 0xff);
    (!own).then_some((TC_ACT_SHOT, Some(Path::DroppedSpoofedIpv6)))
}

/// What the uplink's programs owe frames whose shape decides it: the host gets what is
/// not IPv4 (tc counts it, XDP passes it on uncounted), and loopback is a martian.
fn uplink_owes(hook: Hook, shape: &Shape) -> Exact {
    match (shape, hook) {
        (Shape::Other { .. } | Shape::UnreadableIpv4, Hook::Tc) => {
            Some((TC_ACT_OK, Some(Path::UplinkToHost)))
        }
        (Shape::Other { .. } | Shape::UnreadableIpv4, Hook::Xdp) => Some((XDP_PASS, None)),
        (Shape::Ipv4(ip), _) if ip.dst[0] == 127 => {
            Some((if hook == Hook::Tc { TC_ACT_SHOT } else { XDP_DROP }, Some(Path::DroppedMartian)))
        }
        _ => None,
    }
}

/// Runs `FRAMES` generated frames through `program` and checks each; `must_reach` are
/// paths the frames must have taken, so that the run cannot pass by missing them.
fn hammer(
    program: &str,
    hook: Hook,
    templates: impl FnOnce(&NatPorts) -> Vec<Template>,
    owes: impl Fn(&[u8], &Shape) -> Exact,
    must_reach: &[Path],
) {
    let seed = hostile::seed();
    let (mut fx, ports) = loaded_datapath();
    let mut prober = Prober::new(&mut fx);
    let started = Instant::now();
    let (mut ran, mut malformed, mut failed, mut altering) = (0u64, 0u64, 0u64, 0u64);
    let mut reports = vec![];
    let mut taken: std::collections::BTreeMap<&'static str, u64> = Default::default();
    for (index, frame) in Generator::new(seed, templates(&ports)).enumerate().take(3 * FRAMES as usize) {
        if ran == FRAMES || started.elapsed() > TIME_LIMIT {
            break;
        }
        let Some(outcome) = prober.probe(&mut fx, program, &frame.bytes) else {
            continue;
        };
        ran += 1;
        let shape = hostile::classify(&frame.bytes);
        if matches!(&shape, Shape::Ipv4(ip) if ip.malformed.is_some()) {
            malformed += 1;
        }
        if !outcome.altered.is_empty() {
            altering += 1;
        }
        for (path, _, _) in &outcome.counted {
            *taken.entry(path.name()).or_default() += 1;
        }
        let wrong = hostile::check(hook, &frame, &shape, owes(&frame.bytes, &shape), &outcome);
        if !wrong.is_empty() {
            failed += 1;
            // The first frame of each kind of breach: what a regression test starts from.
            let kind = wrong.iter().map(|w| w.split(':').next().unwrap_or(w)).collect::<Vec<_>>().join("; ");
            if !reports.iter().any(|(k, _)| *k == kind) {
                let report = format!("frame {index}: {}\n    {}", wrong.join("; "), frame.describe());
                reports.push((kind, report));
            }
        }
    }
    let elapsed = started.elapsed();
    eprintln!(
        "{program}: {ran} frames in {elapsed:.1?} ({malformed} malformed, {} refused by BPF_PROG_TEST_RUN, \
         {altering} changed conntrack entries already there), paths {taken:?}",
        prober.refused
    );
    let reports: Vec<String> = reports.into_iter().map(|(_, report)| report).collect();
    assert!(
        reports.is_empty(),
        "{program}: {failed} of {ran} frames broke an invariant (seed {seed}):\n{}",
        reports.join("\n")
    );
    assert_eq!(ran, FRAMES, "{program}: only {ran} frames ran within {TIME_LIMIT:?}");
    assert!(
        malformed >= FRAMES / 10,
        "{program}: only {malformed} malformed frames; the generator lost its teeth"
    );
    assert!(
        altering > 0,
        "{program}: no frame changed a conntrack entry already there; the comparison sees nothing"
    );
    for path in must_reach {
        assert!(
            taken.contains_key(path.name()),
            "{program}: no frame took {}; the templates miss it",
            path.name()
        );
    }
}

#[test]
fn from_container_keeps_its_invariants_for_hostile_frames() {
    hammer(
        program_names::FROM_CONTAINER,
        Hook::Tc,
        |_| container_templates(),
        from_container_owes,
        &[
            Path::Forwarded,
            Path::Masqueraded,
            Path::PublishedReply,
            Path::Published,
            Path::DroppedIsolation,
            Path::DroppedSpoofedMac,
            Path::DroppedSpoofedIp,
            Path::SlowPathIp,
            Path::SlowPathOther,
            Path::SlowPathMalformed,
            Path::DroppedSpoofedIpv6,
            Path::DroppedSpoofedNeighbour,
            Path::SlowPathIpv6Headers,
        ],
    );
}

#[test]
fn from_uplink_keeps_its_invariants_for_hostile_frames() {
    hammer(
        program_names::FROM_UPLINK,
        Hook::Tc,
        uplink_templates,
        |_, shape| uplink_owes(Hook::Tc, shape),
        &[
            Path::ReverseNat,
            Path::Published,
            Path::DroppedMartian,
            Path::DroppedUnpublished,
            Path::UplinkToHost,
        ],
    );
}

#[test]
fn uplink_xdp_keeps_its_invariants_for_hostile_frames() {
    hammer(
        program_names::UPLINK_XDP,
        Hook::Xdp,
        uplink_templates,
        |_, shape| uplink_owes(Hook::Xdp, shape),
        &[Path::PublishedXdp, Path::DroppedMartian],
    );
}
