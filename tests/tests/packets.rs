//! The kernel programs fed crafted frames through BPF_PROG_TEST_RUN: the verdict, the
//! rewritten frame and the counters are checked for each scenario. Each test runs in a
//! network namespace of its own (only `lo`, ifindex 1, as the ingress interface) with its
//! own bpffs, so that tests neither see each other's maps nor touch the host.

use dataplane_common::{InterfaceConfig, Path};
use dataplane_tests::datapath::{
    A_MAC, A6, ARP_REPLY, ARP_REQUEST, B_MAC, Fixture, LO, RED, RED_GATEWAY6, STALE_MAC, TC_ACT_OK,
    TC_ACT_REDIRECT, TC_ACT_SHOT, UPLINK_ADDR, arp, icmp_echo, ipv6_udp, neighbour_advertisement,
    red_interface, tcp_segment, udp_between, udp_frame,
};
use etherparse::{PacketBuilder, SlicedPacket};

#[test]
fn same_network_frame_is_redirected_with_the_destination_mac() {
    let mut fx = Fixture::new(0);
    let frame = udp_frame(STALE_MAC, [10, 1, 0, 2], [10, 1, 0, 3]);
    let (verdict, out) = fx.run(&frame);
    assert_eq!(verdict, TC_ACT_REDIRECT, "frame for a known endpoint was not redirected");
    let parsed = SlicedPacket::from_ethernet(&out).unwrap();
    let eth = parsed.link.unwrap().to_header().unwrap().ethernet2().unwrap();
    assert_eq!(eth.destination, B_MAC, "destination MAC was not rewritten to the endpoint's");
    assert_eq!(eth.source, A_MAC, "source MAC must stay the sender's");
    assert_eq!(&out[14..], &frame[14..], "the IP packet must be untouched");
    assert_eq!(fx.count(Path::Forwarded), 1);
}

#[test]
fn frame_to_another_network_is_dropped() {
    let mut fx = Fixture::new(0);
    let (verdict, _) = fx.run(&udp_frame(B_MAC, [10, 1, 0, 2], [10, 2, 0, 2]));
    assert_eq!(verdict, TC_ACT_SHOT, "a red container reached blue");
    // Also an address of blue that has no container yet.
    let (verdict, _) = fx.run(&udp_frame(B_MAC, [10, 1, 0, 2], [10, 2, 0, 77]));
    assert_eq!(verdict, TC_ACT_SHOT);
    assert_eq!(fx.count(Path::DroppedIsolation), 2);
}

#[test]
fn other_networks_gateway_is_left_to_the_host() {
    let mut fx = Fixture::new(0);
    let (verdict, _) = fx.run(&udp_frame(B_MAC, [10, 1, 0, 2], [10, 2, 0, 1]));
    assert_eq!(verdict, TC_ACT_OK);
}

#[test]
fn unknown_destination_goes_to_the_slow_path_unchanged() {
    let mut fx = Fixture::new(0);
    for dst in [[10, 1, 0, 1], [10, 1, 0, 99], [192, 0, 2, 7]] {
        let frame = udp_frame(STALE_MAC, [10, 1, 0, 2], dst);
        let (verdict, out) = fx.run(&frame);
        assert_eq!(verdict, TC_ACT_OK, "{dst:?} should go to the kernel");
        assert_eq!(out, frame, "slow-path frames must not be modified");
    }
    assert_eq!(fx.count(Path::SlowPathIp), 3);
}

#[test]
fn icc_disabled_drops_traffic_inside_the_network() {
    let mut fx = Fixture::new(InterfaceConfig::ICC_DISABLED);
    let (verdict, _) = fx.run(&udp_frame(B_MAC, [10, 1, 0, 2], [10, 1, 0, 3]));
    assert_eq!(verdict, TC_ACT_SHOT);
    assert_eq!(fx.count(Path::DroppedIcc), 1);
    let (verdict, _) = fx.run(&udp_frame(B_MAC, [10, 1, 0, 2], [10, 1, 0, 1]));
    assert_eq!(verdict, TC_ACT_OK, "the gateway stays reachable");
}

#[test]
fn arp_and_ipv6_go_to_the_slow_path() {
    let mut fx = Fixture::new(0);
    assert_eq!(fx.run(&arp(A_MAC, ARP_REQUEST, (A_MAC, [10, 1, 0, 2]), [10, 1, 0, 3])).0, TC_ACT_OK);
    let builder = PacketBuilder::ethernet2(A_MAC, B_MAC)
        .ipv6(
            [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
            [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
            64,
        )
        .udp(1, 2);
    let mut v6 = vec![];
    builder.write(&mut v6, b"x").unwrap();
    assert_eq!(fx.run(&v6).0, TC_ACT_OK);
    // ARP is not IP; link-local IPv6 is unicast IP the fast path does not own.
    assert_eq!(fx.count(Path::SlowPathOther), 1);
    assert_eq!(fx.count(Path::SlowPathIp), 1);
}

#[test]
fn truncated_and_malformed_frames_are_handled() {
    let mut fx = Fixture::new(0);
    let good = udp_frame(B_MAC, [10, 1, 0, 2], [10, 1, 0, 3]);
    // A bare Ethernet header. (BPF_PROG_TEST_RUN itself refuses IPv4 frames shorter than
    // an IPv4 header, so those cannot be fed here; parse() bounds-checks them anyway.)
    let mut bare = good[..14].to_vec();
    bare[12..14].copy_from_slice(&[0x88, 0xcc]);
    assert_eq!(fx.run(&bare).0, TC_ACT_OK);
    // IPv4 header complete, payload cut short: forwarded as is, for the receiving stack
    // to drop as it would any truncated packet.
    for len in [34, 40] {
        let (verdict, out) = fx.run(&good[..len]);
        assert_eq!(verdict, TC_ACT_REDIRECT, "{len}-byte frame");
        assert_eq!(out, good[..len].to_vec(), "only the MAC may change, and it was right");
    }
    // A header claiming version 6 inside the IPv4 ethertype, and one with IHL below 5.
    let mut wrong_version = good.clone();
    wrong_version[14] = 0x65;
    let mut short_ihl = good.clone();
    short_ihl[14] = 0x44;
    for frame in [wrong_version, short_ihl] {
        let (verdict, out) = fx.run(&frame);
        assert_eq!(verdict, TC_ACT_OK);
        assert_eq!(out, frame);
    }
    assert_eq!(fx.count(Path::SlowPathMalformed), 2);
    assert_eq!(fx.count(Path::SlowPathOther), 1);
    assert_eq!(fx.count(Path::Forwarded), 2);
}

#[test]
fn a_container_sending_from_a_neighbours_address_is_dropped() {
    let mut fx = Fixture::new(0);
    // A (10.1.0.2) claims its neighbour C's 10.1.0.4 towards B, and an address from nowhere
    // towards the outside.
    for (src, dst) in [([10, 1, 0, 4], [10, 1, 0, 3]), ([198, 18, 0, 5], [192, 0, 2, 7])] {
        let (verdict, out) = fx.run(&udp_frame(B_MAC, src, dst));
        assert_eq!(verdict, TC_ACT_SHOT, "a frame from {src:?} to {dst:?} was not dropped");
        assert_eq!(out, udp_frame(B_MAC, src, dst), "a dropped frame must not be rewritten");
    }
    assert_eq!(fx.count(Path::DroppedSpoofedIp), 2);
    assert_eq!(fx.count(Path::Forwarded), 0, "a forged frame was forwarded");
    // Its own address still goes through.
    assert_eq!(fx.run(&udp_frame(B_MAC, [10, 1, 0, 2], [10, 1, 0, 3])).0, TC_ACT_REDIRECT);
}

#[test]
fn a_container_without_an_address_may_only_broadcast() {
    let mut fx = Fixture::new(0);
    // A DHCP discover (0.0.0.0 to 255.255.255.255) and an IGMP-style multicast: the bridge's.
    for dst in [[255, 255, 255, 255], [224, 0, 0, 22]] {
        let (verdict, _) = fx.run(&udp_frame([0xff; 6], [0, 0, 0, 0], dst));
        assert_eq!(verdict, TC_ACT_OK, "0.0.0.0 to {dst:?} is a DHCP client's or a probe's");
    }
    // Unicast from 0.0.0.0 is nobody's.
    assert_eq!(fx.run(&udp_frame(B_MAC, [0, 0, 0, 0], [10, 1, 0, 3])).0, TC_ACT_SHOT);
    assert_eq!(fx.count(Path::DroppedSpoofedIp), 1);
}

#[test]
fn a_container_sending_from_another_mac_is_dropped() {
    let mut fx = Fixture::new(0);
    let mut frame = udp_frame(B_MAC, [10, 1, 0, 2], [10, 1, 0, 3]);
    frame[6..12].copy_from_slice(&STALE_MAC);
    let (verdict, _) = fx.run(&frame);
    assert_eq!(verdict, TC_ACT_SHOT, "a frame from a MAC not the container's was not dropped");
    // Every kind of frame: an IPv6 one too.
    let v6 = ipv6_udp((B_MAC, A_MAC));
    assert_eq!(fx.run(&v6).0, TC_ACT_SHOT, "an IPv6 frame from B's MAC left A");
    assert_eq!(fx.count(Path::DroppedSpoofedMac), 2);
    assert_eq!(fx.count(Path::Forwarded), 0);
}

#[test]
fn arp_claiming_a_neighbours_address_or_mac_is_dropped() {
    let mut fx = Fixture::new(0);
    let forged = [
        // Gratuitous ARP for neighbour C's address (arping -U -s 10.1.0.4).
        arp(A_MAC, ARP_REQUEST, (A_MAC, [10, 1, 0, 4]), [10, 1, 0, 4]),
        // A reply naming B's MAC as the sender, from A's own.
        arp(A_MAC, ARP_REPLY, (B_MAC, [10, 1, 0, 2]), [10, 1, 0, 3]),
        // ARP that is not IPv4 over Ethernet, and ARP cut short.
        {
            let mut other = arp(A_MAC, ARP_REQUEST, (A_MAC, [10, 1, 0, 2]), [10, 1, 0, 3]);
            other[16..18].copy_from_slice(&[0x86, 0xdd]);
            other
        },
        arp(A_MAC, ARP_REQUEST, (A_MAC, [10, 1, 0, 2]), [10, 1, 0, 3])[..30].to_vec(),
    ];
    for frame in &forged {
        assert_eq!(fx.run(frame).0, TC_ACT_SHOT, "forged ARP was not dropped: {frame:02x?}");
    }
    assert_eq!(fx.count(Path::DroppedSpoofedArp), forged.len() as u64);
    // Its own requests, replies and probes (RFC 5227: sender 0.0.0.0) go to the bridge.
    for own in [
        arp(A_MAC, ARP_REQUEST, (A_MAC, [10, 1, 0, 2]), [10, 1, 0, 3]),
        arp(A_MAC, ARP_REPLY, (A_MAC, [10, 1, 0, 2]), [10, 1, 0, 3]),
        arp(A_MAC, ARP_REQUEST, (A_MAC, [0, 0, 0, 0]), [10, 1, 0, 2]),
    ] {
        assert_eq!(fx.run(&own).0, TC_ACT_OK, "the container's own ARP was refused: {own:02x?}");
    }
    assert_eq!(fx.count(Path::SlowPathOther), 3);
}

#[test]
fn frames_from_unmanaged_interfaces_pass() {
    let mut fx = Fixture::new(0);
    fx.datapath.remove_interface(LO).unwrap();
    let (verdict, _) = fx.run(&udp_frame(B_MAC, [10, 1, 0, 2], [10, 2, 0, 2]));
    assert_eq!(verdict, TC_ACT_OK);
    assert_eq!(fx.count(Path::SlowPathUnmanaged), 1);
}

/// The id of every map pinned under `dir`, by name.
fn pinned_map_ids(dir: &std::path::Path) -> std::collections::BTreeMap<String, u32> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| {
            let path = entry.unwrap().path();
            let id = aya::maps::MapInfo::from_pin(&path).unwrap().id();
            (path.file_name().unwrap().to_string_lossy().into_owned(), id)
        })
        .collect()
}

#[test]
fn pins_of_another_layout_are_replaced_and_the_others_kept() {
    let mut fx = Fixture::new(0);
    let dir = fx.maps_dir();
    let before = pinned_map_ids(&dir);
    assert_eq!(before.len(), 28, "pinned maps: {before:?}");
    // What an earlier version could have left: fewer counters, a smaller conntrack value,
    // interfaces without their IPv6 subnet (44 bytes).
    let replaced = ["COUNTERS", "SNAT_CT", "INTERFACES_BY_INDEX"];
    for (name, spec) in [
        ("COUNTERS", "type percpu_array key 4 value 16 entries 15"),
        ("SNAT_CT", "type lru_hash key 40 value 8 entries 64"),
        ("INTERFACES_BY_INDEX", "type array key 4 value 44 entries 65536"),
    ] {
        let pin = dir.join(name);
        std::fs::remove_file(&pin).unwrap();
        let script = format!("bpftool map create {} {spec} name {name}", pin.display());
        assert!(std::process::Command::new("sh").args(["-c", &script]).status().unwrap().success());
    }
    let stale = pinned_map_ids(&dir);
    fx.reload();
    let after = pinned_map_ids(&dir);
    for (name, id) in &after {
        if replaced.contains(&name.as_str()) {
            assert_ne!(stale[name], *id, "{name}, pinned with another layout, was reused");
        } else {
            assert_eq!(before[name], *id, "{name} was not reused across a reload");
        }
    }
    let counters = aya::maps::MapInfo::from_pin(dir.join("COUNTERS")).unwrap();
    assert_eq!(counters.max_entries(), Path::COUNT);
    let conntrack = aya::maps::MapInfo::from_pin(dir.join("SNAT_CT")).unwrap();
    assert_eq!(conntrack.value_size() as usize, size_of::<dataplane_common::SnatEntry>());
    let interfaces = aya::maps::MapInfo::from_pin(dir.join("INTERFACES_BY_INDEX")).unwrap();
    assert_eq!(interfaces.value_size() as usize, size_of::<InterfaceConfig>());
    // The interfaces went with their map; the daemon's restore writes them again.
    fx.datapath.set_interface(LO, red_interface(0)).unwrap();
    // The programs count into the new map.
    let (verdict, _) = fx.run(&udp_frame(B_MAC, [10, 1, 0, 2], [10, 1, 0, 3]));
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!(fx.count(Path::Forwarded), 1);
}

/// The XDP program on `ifname`, as `ip -d link` shows it, if any.
fn xdp_program_on(ifname: &str) -> Option<String> {
    let out = std::process::Command::new("ip").args(["-d", "link", "show", ifname]).output().unwrap();
    let link = String::from_utf8_lossy(&out.stdout).into_owned();
    let at = link.find("prog/xdp id ")?;
    Some(link[at..].split_whitespace().nth(2)?.to_string())
}

/// Whether `ifname` loses its XDP program within two seconds: a link whose pin is removed
/// detaches once bpffs lets go of it, after an RCU grace period.
fn xdp_program_leaves(ifname: &str) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while xdp_program_on(ifname).is_some() {
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    true
}

#[test]
fn the_xdp_program_follows_the_uplink_and_leaves_when_turned_off() {
    let mut fx = Fixture::new(0);
    let up0 = fx.enable_nat(61000, 61999);
    assert!(fx.datapath.attach_uplink_xdp("up0", up0, true).unwrap(), "no native XDP on a veth");
    assert!(xdp_program_on("up0").is_some());
    // Another uplink (a restart with another --uplink): the program moves with it.
    let script = "ip link add up2 type veth peer name up3 && ip link set up2 up && ip link set up3 up";
    assert!(std::process::Command::new("sh").args(["-c", script]).status().unwrap().success());
    let up2 = nix::net::if_::if_nametoindex("up2").unwrap();
    assert!(fx.datapath.attach_uplink_xdp("up2", up2, true).unwrap());
    assert!(xdp_program_leaves("up0"), "the old uplink kept its XDP program");
    assert!(xdp_program_on("up2").is_some());
    assert!(!fx.datapath.attach_uplink_xdp("up2", up2, false).unwrap());
    assert!(xdp_program_leaves("up2"), "turned off, the XDP program stayed");
    // A restart without any uplink (NAT off) takes it off too.
    assert!(fx.datapath.attach_uplink_xdp("up2", up2, true).unwrap());
    fx.datapath.remove_xdp_pins_but(None).unwrap();
    assert!(xdp_program_leaves("up2"), "without an uplink, the XDP program stayed");
}

/// An ICMPv6 message of `icmp_type` from A to all nodes (ff02::1), behind the IPv6
/// extension headers `extensions` (each: next header, bytes); the checksum is left zero,
/// as the programs do not read it.
fn icmpv6_from_a(icmp_type: u8, extensions: &[(u8, Vec<u8>)]) -> Vec<u8> {
    const ICMPV6: u8 = 58;
    let mut upper = vec![];
    let mut next = ICMPV6;
    for (header, bytes) in extensions.iter().rev() {
        let mut bytes = bytes.clone();
        bytes[0] = next;
        bytes.extend(upper);
        upper = bytes;
        next = *header;
    }
    upper.extend([icmp_type, 0, 0, 0, 0x40, 0, 0x07, 0x08]);
    let mut frame = vec![0x33, 0x33, 0, 0, 0, 1];
    frame.extend(A_MAC);
    frame.extend([0x86, 0xdd, 0x60, 0, 0, 0]);
    frame.extend((upper.len() as u16).to_be_bytes());
    frame.extend([next, 255]);
    frame.extend([0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
    frame.extend([0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    frame.extend(upper);
    frame
}

/// Containers' interfaces keep no IPv6 address on networks without IPv6, but their kernel
/// still takes router advertisements: a container that sent one could give every other
/// container of its network an address and a default route through itself (SLAAC,
/// CVE-2020-13401). Only the gateway routes, so a container's router advertisements and
/// redirects are dropped, also behind extension headers; its other ICMPv6 (neighbour
/// discovery, echo) goes to the bridge as before.
#[test]
fn router_advertisements_and_redirects_from_a_container_are_dropped() {
    const ROUTER_ADVERTISEMENT: u8 = 134;
    const REDIRECT: u8 = 137;
    const HOP_BY_HOP: u8 = 0;
    const DESTINATION_OPTIONS: u8 = 60;
    const ROUTING: u8 = 43;
    const FRAGMENT: u8 = 44;
    let mut fx = Fixture::new(0);
    let padded = vec![0, 0, 1, 4, 0, 0, 0, 0];
    let first_fragment = vec![0, 0, 0, 1, 0, 0, 0, 1];
    let hostile = [
        icmpv6_from_a(ROUTER_ADVERTISEMENT, &[]),
        icmpv6_from_a(REDIRECT, &[]),
        icmpv6_from_a(ROUTER_ADVERTISEMENT, &[(HOP_BY_HOP, padded.clone())]),
        icmpv6_from_a(
            ROUTER_ADVERTISEMENT,
            &[
                (HOP_BY_HOP, padded.clone()),
                (DESTINATION_OPTIONS, padded.clone()),
                (FRAGMENT, first_fragment.clone()),
            ],
        ),
        // More extension headers than the check reads: it cannot see what they hide.
        icmpv6_from_a(ROUTER_ADVERTISEMENT, &vec![(DESTINATION_OPTIONS, padded.clone()); 5]),
    ];
    for frame in &hostile {
        assert_eq!(fx.run(frame).0, TC_ACT_SHOT, "a router message left the container: {frame:02x?}");
    }
    assert_eq!(fx.count(Path::DroppedRouterMessage), hostile.len() as u64);
    const ROUTER_SOLICITATION: u8 = 133;
    const NEIGHBOUR_SOLICITATION: u8 = 135;
    const ECHO_REQUEST: u8 = 128;
    let own = [
        icmpv6_from_a(ROUTER_SOLICITATION, &[]),
        icmpv6_from_a(NEIGHBOUR_SOLICITATION, &[]),
        icmpv6_from_a(ECHO_REQUEST, &[(HOP_BY_HOP, padded.clone())]),
        // As many extension headers as a legitimate packet has.
        icmpv6_from_a(
            ECHO_REQUEST,
            &[
                (HOP_BY_HOP, padded.clone()),
                (DESTINATION_OPTIONS, padded.clone()),
                (ROUTING, padded),
                (FRAGMENT, first_fragment),
            ],
        ),
        ipv6_udp((A_MAC, B_MAC)),
    ];
    for frame in &own {
        let (verdict, out) = fx.run(frame);
        assert_eq!(verdict, TC_ACT_OK, "the container's own IPv6 was refused: {frame:02x?}");
        assert_eq!(&out, frame, "IPv6 left to the bridge must be unchanged");
    }
    assert_eq!(fx.count(Path::SlowPathOther), own.len() as u64);
    assert_eq!(fx.count(Path::DroppedRouterMessage), hostile.len() as u64);
}

/// A container of a network isolated on both families (`gateway_mode_ipv4=isolated`, an
/// `--internal` network's), sending IPv4 as A.
const ISOLATED: u32 = InterfaceConfig::INTERNAL | InterfaceConfig::ISOLATED_V4 | InterfaceConfig::ISOLATED_V6;

#[test]
fn an_isolated_container_reaches_its_peers_and_its_resolver_and_nothing_else() {
    let mut fx = Fixture::new(ISOLATED);
    fx.enable_nat(40000, 40100);
    let (verdict, _) = fx.run(&udp_frame(STALE_MAC, [10, 1, 0, 2], [10, 1, 0, 3]));
    assert_eq!((verdict, fx.count(Path::Forwarded)), (TC_ACT_REDIRECT, 1), "a peer is forwarded");
    // The resolver on the gateway's address: UDP and TCP port 53, for the kernel as they are.
    let query = udp_between(STALE_MAC, ([10, 1, 0, 2], 4000), ([10, 1, 0, 1], 53));
    let over_tcp = tcp_segment(A_MAC, ([10, 1, 0, 2], 4001), ([10, 1, 0, 1], 53), "S", 1, 0);
    for frame in [query, over_tcp] {
        let (verdict, out) = fx.run(&frame);
        assert_eq!(verdict, TC_ACT_OK, "a query to the resolver did not go to the kernel");
        assert_eq!(out, frame, "a frame for the kernel must be unchanged");
    }
    // Its own subnet's other addresses, broadcast and multicast: the bridge's, for the peers.
    for dst in [[10, 1, 0, 99], [10, 1, 0, 255], [255, 255, 255, 255], [224, 0, 0, 251]] {
        assert_eq!(fx.run(&udp_frame(STALE_MAC, [10, 1, 0, 2], dst)).0, TC_ACT_OK, "{dst:?}");
    }
    assert_eq!(fx.count(Path::SlowPathIp), 6);
    // The gateway's other ports and ICMP, another network's gateway, the host's uplink
    // address, the outside: dropped, and counted as such.
    let dropped = [
        udp_between(STALE_MAC, ([10, 1, 0, 2], 4000), ([10, 1, 0, 1], 80)),
        tcp_segment(A_MAC, ([10, 1, 0, 2], 4001), ([10, 1, 0, 1], 22), "S", 1, 0),
        icmp_echo(A_MAC, [10, 1, 0, 2], [10, 1, 0, 1], 7, false),
        udp_frame(STALE_MAC, [10, 1, 0, 2], [10, 2, 0, 1]),
        udp_frame(STALE_MAC, [10, 1, 0, 2], UPLINK_ADDR),
        udp_frame(STALE_MAC, [10, 1, 0, 2], [192, 0, 2, 7]),
        icmp_echo(A_MAC, [10, 1, 0, 2], [192, 0, 2, 7], 7, false),
    ];
    for (i, frame) in dropped.iter().enumerate() {
        assert_eq!(fx.run(frame).0, TC_ACT_SHOT, "frame {i} left an isolated network");
    }
    assert_eq!(fx.count(Path::DroppedIsolated), dropped.len() as u64);
    assert_eq!((fx.count(Path::Masqueraded), fx.count(Path::DroppedInternal)), (0, 0));
    // Another network's containers stay another network's.
    assert_eq!(fx.run(&udp_frame(STALE_MAC, [10, 1, 0, 2], [10, 2, 0, 2])).0, TC_ACT_SHOT);
    assert_eq!(fx.count(Path::DroppedIsolation), 1);
}

#[test]
fn the_hosts_exchanges_with_an_isolated_container_get_no_answer() {
    let mut fx = Fixture::new(ISOLATED);
    fx.enable_nat(40000, 40100);
    // The host reaches the container over the bridge, from the gateway's address (or,
    // with a route of its own, from another): the container's answers are dropped.
    let answers = [
        icmp_echo(A_MAC, [10, 1, 0, 2], [10, 1, 0, 1], 9, true),
        tcp_segment(A_MAC, ([10, 1, 0, 2], 80), ([10, 1, 0, 1], 45000), "SA", 1, 2),
        udp_between(STALE_MAC, ([10, 1, 0, 2], 53), ([10, 1, 0, 1], 45001)),
        tcp_segment(A_MAC, ([10, 1, 0, 2], 80), (UPLINK_ADDR, 45000), "SA", 1, 2),
    ];
    for (i, frame) in answers.iter().enumerate() {
        assert_eq!(fx.run(frame).0, TC_ACT_SHOT, "answer {i} reached the host");
    }
    assert_eq!(fx.count(Path::DroppedIsolated), answers.len() as u64);
    drop(fx);
    // Without isolation (an --internal network only), the host gets them: the gateway's
    // address is the host's, as on the network's bridge.
    let mut internal = Fixture::new(InterfaceConfig::INTERNAL);
    internal.enable_nat(40000, 40100);
    let gateway = std::process::Command::new("ip").args(["addr", "add", "10.1.0.1/32", "dev", "lo"]).status();
    assert!(gateway.unwrap().success(), "giving the fixture's namespace the gateway's address");
    for frame in &answers {
        assert_eq!(internal.run(frame).0, TC_ACT_OK, "an internal network's answer to the host");
    }
}

#[test]
fn of_what_the_host_sends_into_an_isolated_network_only_the_resolvers_answers_pass() {
    let mut fx = Fixture::new(ISOLATED);
    let isolated = dataplane_common::SubnetInfo::ISOLATED;
    fx.datapath.set_subnet("10.1.0.0/24".parse().unwrap(), RED, [10, 1, 0, 1].into(), isolated).unwrap();
    fx.datapath.set_subnet("fd00:1::/64".parse().unwrap(), RED, RED_GATEWAY6.into(), isolated).unwrap();
    let udp6_from = |src: [u8; 16], dst: [u8; 16], sport: u16| {
        let mut frame = vec![];
        etherparse::PacketBuilder::ethernet2(B_MAC, A_MAC)
            .ipv6(src, dst, 64)
            .udp(sport, 9999)
            .write(&mut frame, b"x")
            .unwrap();
        frame
    };
    let answers = [
        udp_between(A_MAC, ([10, 1, 0, 1], 53), ([10, 1, 0, 2], 4000)),
        tcp_segment(A_MAC, ([10, 1, 0, 1], 53), ([10, 1, 0, 2], 4001), "SA", 1, 2),
        udp6_from(RED_GATEWAY6, A6, 53),
        arp(B_MAC, ARP_REPLY, (B_MAC, [10, 1, 0, 1]), [10, 1, 0, 2]),
        neighbour_advertisement(B_MAC, RED_GATEWAY6, RED_GATEWAY6),
        // Blue is not isolated: the host reaches its containers.
        icmp_echo(B_MAC, [10, 2, 0, 1], [10, 2, 0, 2], 3, false),
    ];
    for (i, frame) in answers.iter().enumerate() {
        let (verdict, out) = fx.run_into_isolated(frame);
        assert_eq!(verdict, TC_ACT_OK, "frame {i} did not pass");
        assert_eq!(&out, frame, "a frame that passes is unchanged");
    }
    let link_local_host = [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    let link_local_a = [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0x42, 0, 0, 0, 0, 0, 2];
    let dropped = [
        icmp_echo(B_MAC, [10, 1, 0, 1], [10, 1, 0, 2], 3, false),
        tcp_segment(A_MAC, ([10, 1, 0, 1], 45000), ([10, 1, 0, 2], 80), "S", 1, 0),
        udp_between(A_MAC, ([10, 1, 0, 1], 45001), ([10, 1, 0, 2], 9999)),
        // Port 53, but not from the gateway (routed in from the uplink's address).
        udp_between(A_MAC, (UPLINK_ADDR, 53), ([10, 1, 0, 2], 9999)),
        udp_between(A_MAC, ([10, 1, 0, 1], 45002), ([10, 1, 0, 255], 9999)),
        udp6_from(RED_GATEWAY6, A6, 45003),
        udp6_from(link_local_host, link_local_a, 45004),
    ];
    for (i, frame) in dropped.iter().enumerate() {
        assert_eq!(fx.run_into_isolated(frame).0, TC_ACT_SHOT, "frame {i} from the host reached the network");
    }
    assert_eq!(fx.count(Path::DroppedIsolated), dropped.len() as u64);
}
