//! The kernel programs fed crafted frames through BPF_PROG_TEST_RUN: the verdict, the
//! rewritten frame and the counters are checked for each scenario. Each test runs in a
//! network namespace of its own (only `lo`, ifindex 1, as the ingress interface) with its
//! own bpffs, so that tests neither see each other's maps nor touch the host.

use std::{net::Ipv4Addr, path::PathBuf, process::Command};

use aya::programs::{TestRun, TestRunOptions};
use dataplane::maps::{Datapath, v4_key};
use dataplane_common::{Endpoint, InterfaceConfig, Path};
use etherparse::{PacketBuilder, SlicedPacket};

const TC_ACT_OK: u32 = 0;
const TC_ACT_SHOT: u32 = 2;
const TC_ACT_REDIRECT: u32 = 7;
const LO: u32 = 1;
const RED: u32 = 1;
const BLUE: u32 = 2;
const A_MAC: [u8; 6] = [2, 0x42, 10, 1, 0, 2];
const B_MAC: [u8; 6] = [2, 0x42, 10, 1, 0, 3];
const STALE_MAC: [u8; 6] = [2, 0x42, 0xde, 0xad, 0xbe, 0xef];

struct Fixture {
    datapath: Datapath,
    bpffs: PathBuf,
}

impl Fixture {
    /// Red 10.1.0.0/24 with endpoint B (10.1.0.3) behind ifindex 42; blue 10.2.0.0/24 with
    /// endpoint 10.2.0.2; the sender sits on red behind `lo`.
    fn new(red_flags: u32) -> Self {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare netns");
        let bpffs = std::env::temp_dir().join(format!(
            "dataplane-packets-{}-{:x}",
            std::process::id(),
            rand::random::<u64>()
        ));
        let mut datapath = Datapath::load(&bpffs).expect("loading the programs");
        datapath
            .set_subnet(
                "10.1.0.0/24".parse().unwrap(),
                RED,
                Ipv4Addr::new(10, 1, 0, 1),
            )
            .unwrap();
        datapath
            .set_subnet(
                "10.2.0.0/24".parse().unwrap(),
                BLUE,
                Ipv4Addr::new(10, 2, 0, 1),
            )
            .unwrap();
        datapath
            .set_interface(
                LO,
                InterfaceConfig {
                    network: RED,
                    flags: red_flags,
                },
            )
            .unwrap();
        let endpoint = |ifindex, mac| Endpoint {
            host_ifindex: ifindex,
            mac,
            _pad: [0; 2],
        };
        datapath
            .set_endpoint(v4_key(RED, Ipv4Addr::new(10, 1, 0, 3)), endpoint(42, B_MAC))
            .unwrap();
        datapath
            .set_endpoint(
                v4_key(BLUE, Ipv4Addr::new(10, 2, 0, 2)),
                endpoint(43, [2, 0x42, 10, 2, 0, 2]),
            )
            .unwrap();
        Self { datapath, bpffs }
    }

    /// Runs `from_container` on a frame: the verdict and the frame as it leaves.
    fn run(&mut self, frame: &[u8]) -> (u32, Vec<u8>) {
        let mut out = vec![0u8; frame.len() + 256];
        let program = self.datapath.program().unwrap();
        let result = program
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                ..TestRunOptions::default()
            })
            .expect("BPF_PROG_TEST_RUN");
        out.truncate(result.data_size_out as usize);
        (result.return_value, out)
    }

    fn count(&mut self, path: Path) -> u64 {
        self.datapath
            .counters()
            .unwrap()
            .into_iter()
            .find(|(p, _)| *p == path)
            .unwrap()
            .1
            .packets
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.bpffs).status();
        let _ = std::fs::remove_dir_all(&self.bpffs);
    }
}

fn udp_frame(dst_mac: [u8; 6], src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
    let builder = PacketBuilder::ethernet2(A_MAC, dst_mac)
        .ipv4(src, dst, 64)
        .udp(4000, 53);
    let payload = b"hello";
    let mut frame = Vec::with_capacity(builder.size(payload.len()));
    builder.write(&mut frame, payload).unwrap();
    frame
}

#[test]
fn same_network_frame_is_redirected_with_the_destination_mac() {
    let mut fx = Fixture::new(0);
    let frame = udp_frame(STALE_MAC, [10, 1, 0, 2], [10, 1, 0, 3]);
    let (verdict, out) = fx.run(&frame);
    assert_eq!(
        verdict, TC_ACT_REDIRECT,
        "frame for a known endpoint was not redirected"
    );
    let parsed = SlicedPacket::from_ethernet(&out).unwrap();
    let eth = parsed
        .link
        .unwrap()
        .to_header()
        .unwrap()
        .ethernet2()
        .unwrap();
    assert_eq!(
        eth.destination, B_MAC,
        "destination MAC was not rewritten to the endpoint's"
    );
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
    let mut arp = vec![0xff; 6];
    arp.extend_from_slice(&A_MAC);
    arp.extend_from_slice(&[0x08, 0x06]);
    arp.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    arp.extend_from_slice(&A_MAC);
    arp.extend_from_slice(&[10, 1, 0, 2, 0, 0, 0, 0, 0, 0, 10, 1, 0, 3]);
    assert_eq!(fx.run(&arp).0, TC_ACT_OK);
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
    assert_eq!(fx.count(Path::SlowPathOther), 2);
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
        assert_eq!(
            out,
            good[..len].to_vec(),
            "only the MAC may change, and it was right"
        );
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
fn frames_from_unmanaged_interfaces_pass() {
    let mut fx = Fixture::new(0);
    fx.datapath.remove_interface(LO).unwrap();
    let (verdict, _) = fx.run(&udp_frame(B_MAC, [10, 1, 0, 2], [10, 2, 0, 2]));
    assert_eq!(verdict, TC_ACT_OK);
    assert_eq!(fx.count(Path::SlowPathUnmanaged), 1);
}
