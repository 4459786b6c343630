//! A loaded datapath in a namespace of its own, fed crafted frames through
//! BPF_PROG_TEST_RUN: shared by the packet tests and the bench's per-packet cost.
//!
//! The maps hold two dual-stack networks: red 10.1.0.0/24 and fd00:1::/64 with endpoint B
//! (10.1.0.3 and fd00:1::3, MAC `B_MAC`, behind ifindex 42) and blue 10.2.0.0/24 and
//! fd00:2::/64 with endpoint 10.2.0.2 and fd00:2::2; the sender A (10.1.0.2, fd00:1::2)
//! sits on red, behind `lo` (ifindex 1, the device BPF_PROG_TEST_RUN uses).

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::PathBuf,
    process::Command,
};

use aya::programs::{TestRun, TestRunAttrs, TestRunOptions};
use dataplane::{
    firewall::{Action, Installed, RuleSpec, Rules, parse_source},
    maps::{Datapath, endpoint_key},
};
use dataplane_common::{Endpoint, InterfaceConfig, NatConfig, Path};
use etherparse::{IpHeaders, PacketBuilder, PacketBuilderStep, TcpOptionElement};

pub const TC_ACT_OK: u32 = 0;
pub const TC_ACT_SHOT: u32 = 2;
pub const TC_ACT_REDIRECT: u32 = 7;
pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_REDIRECT: u32 = 4;
pub const LO: u32 = 1;
pub const RED: u32 = 1;
pub const BLUE: u32 = 2;
pub const A_MAC: [u8; 6] = [2, 0x42, 10, 1, 0, 2];
pub const B_MAC: [u8; 6] = [2, 0x42, 10, 1, 0, 3];
pub const STALE_MAC: [u8; 6] = [2, 0x42, 0xde, 0xad, 0xbe, 0xef];
pub const GATEWAY_MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];
/// The MAC of the uplink `enable_nat` makes: masqueraded frames leave with it as source.
pub const UPLINK_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
pub const UPLINK_ADDR: [u8; 4] = [203, 0, 113, 1];
/// The uplink's global IPv6 address, which `enable_nat` gives it too.
pub const UPLINK_ADDR6: [u8; 16] = [0x20, 1, 0x0d, 0xb8, 0, 0x71, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
/// A's, B's and the red gateway's IPv6 addresses; blue's endpoint's.
pub const A6: [u8; 16] = v6(1, 2);
pub const B6: [u8; 16] = v6(1, 3);
pub const RED_GATEWAY6: [u8; 16] = v6(1, 1);
pub const BLUE_ENDPOINT6: [u8; 16] = v6(2, 2);

/// `fd00:<network>::<host>`.
pub const fn v6(network: u8, host: u8) -> [u8; 16] {
    [0xfd, 0, 0, network, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, host]
}

fn v4_key(network: u32, ip: Ipv4Addr) -> dataplane_common::EndpointKey {
    endpoint_key(network, ip.into())
}

fn v6_key(network: u32, ip: [u8; 16]) -> dataplane_common::EndpointKey {
    endpoint_key(network, Ipv6Addr::from(ip).into())
}

pub struct Fixture {
    pub datapath: Datapath,
    bpffs: PathBuf,
    conntrack_max: u32,
    /// How much of the programs' diagnostic messages they build (none, as a daemon at its
    /// default level).
    kernel_log: log::LevelFilter,
}

impl Fixture {
    /// Moves the calling thread into a new network namespace and loads the programs there,
    /// with a bpffs of their own.
    pub fn new(red_flags: u32) -> Self {
        Self::with_conntrack_max(red_flags, dataplane_common::CONNTRACK_DEFAULT_SIZE)
    }

    /// As `new`, with `conntrack_max` entries in each conntrack table (`--conntrack-max`).
    pub fn with_conntrack_max(red_flags: u32, conntrack_max: u32) -> Self {
        Self::with_settings(red_flags, conntrack_max, log::LevelFilter::Off)
    }

    /// As `new`, the programs building their diagnostic messages up to `kernel_log`
    /// (`Datapath::take_kernel_log` reads them).
    pub fn with_kernel_log(red_flags: u32, kernel_log: log::LevelFilter) -> Self {
        Self::with_settings(red_flags, dataplane_common::CONNTRACK_DEFAULT_SIZE, kernel_log)
    }

    fn with_settings(red_flags: u32, conntrack_max: u32, kernel_log: log::LevelFilter) -> Self {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare netns");
        let bpffs = std::env::temp_dir().join(format!(
            "dataplane-packets-{}-{:x}",
            std::process::id(),
            rand::random::<u64>()
        ));
        let ring_size = dataplane_common::MonitorEvent::RING_DEFAULT_SIZE;
        let mut datapath = match Datapath::load(&bpffs, conntrack_max, ring_size, kernel_log, &[]) {
            Ok(datapath) => datapath,
            Err(e) => {
                // The bpffs may be mounted already: leave nothing behind before failing.
                let _ = Command::new("umount").arg("-l").arg(&bpffs).status();
                let _ = std::fs::remove_dir_all(&bpffs);
                panic!("loading the programs: {e:?}");
            }
        };
        for (subnet, network, gateway) in [
            ("10.1.0.0/24", RED, IpAddr::from([10, 1, 0, 1])),
            ("10.2.0.0/24", BLUE, IpAddr::from([10, 2, 0, 1])),
            ("fd00:1::/64", RED, IpAddr::from(RED_GATEWAY6)),
            ("fd00:2::/64", BLUE, IpAddr::from(v6(2, 1))),
        ] {
            datapath.set_subnet(subnet.parse().unwrap(), network, gateway, 0).unwrap();
        }
        datapath.set_interface(LO, red_interface(red_flags)).unwrap();
        let endpoint = |ifindex, mac| Endpoint { host_ifindex: ifindex, mac, counter_slot: 0 };
        datapath.set_endpoint(v4_key(RED, Ipv4Addr::new(10, 1, 0, 3)), endpoint(42, B_MAC)).unwrap();
        datapath.set_endpoint(v6_key(RED, B6), endpoint(42, B_MAC)).unwrap();
        let blue = [2, 0x42, 10, 2, 0, 2];
        datapath.set_endpoint(v4_key(BLUE, Ipv4Addr::new(10, 2, 0, 2)), endpoint(43, blue)).unwrap();
        datapath.set_endpoint(v6_key(BLUE, BLUE_ENDPOINT6), endpoint(43, blue)).unwrap();
        Self { datapath, bpffs, conntrack_max, kernel_log }
    }

    /// Loads the programs again over the same bpffs, as a restarted daemon does.
    pub fn reload(&mut self) {
        self.datapath = Datapath::load(
            &self.bpffs,
            self.conntrack_max,
            dataplane_common::MonitorEvent::RING_DEFAULT_SIZE,
            self.kernel_log,
            &[],
        )
        .unwrap();
    }

    /// Where the maps are pinned.
    pub fn maps_dir(&self) -> PathBuf {
        self.bpffs.join("maps")
    }

    /// Gives this namespace an uplink `up0` (203.0.113.1/24 and 2001:db8:71::1/64, default
    /// routes via 203.0.113.2 and 2001:db8:71::2, whose MAC is `GATEWAY_MAC`) and turns on masquerading through it with
    /// the given source ports. The sender's device (`lo` here, a host-side veth in
    /// production) gets forwarding enabled, as the daemon does.
    pub fn enable_nat(&mut self, port_min: u16, port_max: u16) -> u32 {
        let script = "ip link add up0 address 02:00:00:00:00:01 type veth peer name up1 \
             && ip addr add 203.0.113.1/24 dev up0 \
             && ip link set up0 up && ip link set up1 up \
             && ip neigh replace 203.0.113.2 lladdr 02:00:00:00:00:02 dev up0 \
             && ip route add default via 203.0.113.2 && sysctl -qw net.ipv4.conf.lo.forwarding=1 \
             && ip addr add 2001:db8:71::1/64 dev up0 nodad \
             && ip neigh replace 2001:db8:71::2 lladdr 02:00:00:00:00:02 dev up0 \
             && ip -6 route add default via 2001:db8:71::2 && sysctl -qw net.ipv6.conf.lo.forwarding=1";
        let status = Command::new("sh").args(["-c", script]).status().unwrap();
        assert!(status.success(), "setting up the uplink");
        let uplink = nix::net::if_::if_nametoindex("up0").unwrap();
        // Loaded here, as the daemon loads them when it takes an uplink: the verifier's
        // seconds must not pass between the flows a test times.
        self.datapath.load_uplink_programs().unwrap();
        self.datapath
            .set_nat_config(NatConfig {
                uplink_ifindex: uplink,
                port_min,
                port_max,
                addr: UPLINK_ADDR,
                flags: NatConfig::IPV6,
                addr6: UPLINK_ADDR6,
            })
            .unwrap();
        uplink
    }

    /// Runs `from_container` on a frame: the verdict and the frame as it leaves.
    pub fn run(&mut self, frame: &[u8]) -> (u32, Vec<u8>) {
        self.run_program(dataplane_common::program_names::FROM_CONTAINER, frame)
    }

    /// Runs `from_uplink` on a frame arriving from outside.
    pub fn run_uplink(&mut self, frame: &[u8]) -> (u32, Vec<u8>) {
        self.run_program(dataplane_common::program_names::FROM_UPLINK, frame)
    }

    /// Runs `into_isolated` on a frame the host sends into an isolated network's bridge.
    pub fn run_into_isolated(&mut self, frame: &[u8]) -> (u32, Vec<u8>) {
        self.run_program(dataplane_common::program_names::INTO_ISOLATED, frame)
    }

    /// Runs `uplink_xdp` on a frame arriving from outside.
    pub fn run_uplink_xdp(&mut self, frame: &[u8]) -> (u32, Vec<u8>) {
        run_once(self.datapath.xdp_program().unwrap(), frame)
    }

    fn run_program(&mut self, name: &str, frame: &[u8]) -> (u32, Vec<u8>) {
        run_once(self.datapath.program_named(name).unwrap(), frame)
    }

    /// Runs the program named `program` (tc or XDP) on a frame; the kernel's refusal of
    /// the frame (EINVAL: shorter than the hook takes) is an error.
    pub fn try_run(&mut self, program: &str, frame: &[u8]) -> std::io::Result<(u32, Vec<u8>)> {
        if program == dataplane_common::program_names::UPLINK_XDP {
            try_run_once(self.datapath.xdp_program().unwrap(), frame)
        } else {
            try_run_once(self.datapath.program_named(program).unwrap(), frame)
        }
    }

    /// Mean nanoseconds per run of the tc program `program` over `repeat` runs of one
    /// frame. The runs share one packet: a path that rewrites the frame must leave it as it
    /// was (an identity translation) to be measured this way.
    pub fn cost_ns(&mut self, program: &str, frame: &[u8], repeat: u32) -> f64 {
        let program = self.datapath.program_named(program).unwrap();
        let result = program
            .test_run(TestRunOptions { data_in: Some(frame), repeat, ..TestRunOptions::default() })
            .expect("BPF_PROG_TEST_RUN");
        result.duration.as_nanos() as f64
    }

    /// How many instructions of the loaded programs (the container's, the uplink's tc
    /// four and XDP pair) use the ring buffer of the diagnostic messages, aya-log's
    /// `AYA_LOGS`, as the kernel holds them after verification: each message built has
    /// one. None means the verifier left every message out, so that logging costs the
    /// programs nothing.
    pub fn kernel_log_instructions(&mut self) -> usize {
        use dataplane_common::program_names::{
            FROM_CONTAINER, FROM_UPLINK, FROM_UPLINK_ROUTED, FROM_UPLINK_ROUTED_V6, FROM_UPLINK_V6,
        };
        let mut ids = vec![];
        for name in [FROM_CONTAINER, FROM_UPLINK, FROM_UPLINK_V6, FROM_UPLINK_ROUTED, FROM_UPLINK_ROUTED_V6] {
            ids.push(self.datapath.program_named(name).unwrap().info().unwrap().id());
        }
        ids.push(self.datapath.xdp_program().unwrap().info().unwrap().id());
        let xdp_v6 = dataplane_common::program_names::UPLINK_XDP_V6;
        ids.push(self.datapath.xdp_named(xdp_v6).unwrap().info().unwrap().id());
        let bpftool = |args: &[String]| -> serde_json::Value {
            let out = Command::new("bpftool").arg("-j").args(args).output().expect("running bpftool");
            assert!(out.status.success(), "bpftool {args:?}: {}", String::from_utf8_lossy(&out.stderr));
            serde_json::from_slice(&out.stdout).expect("bpftool's JSON")
        };
        let mut total = 0;
        for id in ids {
            let id = id.to_string();
            let shown = bpftool(&["prog".into(), "show".into(), "id".into(), id.clone()]);
            let log_maps: Vec<String> = shown["map_ids"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|map| map.as_u64())
                .filter(|map| {
                    bpftool(&["map".into(), "show".into(), "id".into(), map.to_string()])["name"]
                        == "AYA_LOGS"
                })
                .map(|map| format!("map[id:{map}]"))
                .collect();
            let xlated = bpftool(&["prog".into(), "dump".into(), "xlated".into(), "id".into(), id]);
            total += xlated
                .as_array()
                .expect("bpftool's instructions")
                .iter()
                .filter_map(|insn| insn["disasm"].as_str())
                .filter(|disasm| log_maps.iter().any(|map| disasm.contains(map.as_str())))
                .count();
        }
        total
    }

    /// Mean nanoseconds per run of `uplink_xdp` over `repeat` runs of one frame, with
    /// `live` frames: the kernel then carries out each verdict (redirects really
    /// transmit), batching frames as a driver would.
    pub fn xdp_cost_ns(&mut self, frame: &[u8], repeat: u32, live: bool) -> f64 {
        let attrs = if live { TestRunAttrs::new().xdp_live_frames(64) } else { TestRunAttrs::new() };
        let options = TestRunOptions { data_in: Some(frame), repeat, attrs, ..TestRunOptions::default() };
        let result = self.datapath.xdp_program().unwrap().test_run(options).expect("BPF_PROG_TEST_RUN");
        result.duration.as_nanos() as f64
    }

    pub fn count(&mut self, path: Path) -> u64 {
        self.datapath.counters().unwrap().into_iter().find(|(p, _)| *p == path).unwrap().1.packets
    }

    /// Runs `frame` from the uplink and asserts that the firewall dropped it: the verdict,
    /// the frame unchanged, one `DroppedFirewall` count, one hit of rule `slot`, and no
    /// connection tracked.
    pub fn assert_firewall_dropped(&mut self, frame: &[u8], slot: u32, what: &str) {
        let (verdict, out) = self.run_uplink(frame);
        assert_eq!(
            (verdict, out.as_slice()),
            (TC_ACT_SHOT, frame),
            "{what} reached the container's own port"
        );
        assert_eq!(
            self.count(Path::DroppedFirewall),
            1,
            "{what}: the drop was not counted as the firewall's"
        );
        assert_eq!(
            self.datapath.firewall_hits(slot).unwrap(),
            1,
            "{what}: the deny rule's hit was not counted"
        );
        assert!(
            self.datapath.dnat_unconfirmed().unwrap().is_empty(),
            "{what}: a denied connection was tracked"
        );
    }

    /// Gives `addr`, the own address of `container` on an unprotected network, the
    /// firewall of `rules` as the daemon does (`Compiler::direct`, `Installed::set_direct`),
    /// then drops the rule sets nothing uses any more.
    pub fn filter_own_address(
        &mut self,
        installed: &mut Installed,
        rules: &Rules,
        container: &str,
        addr: IpAddr,
    ) {
        let direct = rules.compiler().direct(container, addr.is_ipv6());
        installed.set_direct(&mut self.datapath, addr, &direct).unwrap();
        let used = direct.into_iter().flat_map(|(_, blocks)| blocks).map(|(_, set)| set).collect();
        installed.retain(&mut self.datapath, &used);
    }
}

/// A firewall rule for any protocol and container, as `dataplane firewall add` takes it:
/// `source` and `ports` as `--source` and `--port` spell them, `None` for any.
pub fn firewall_rule(action: Action, source: Option<&str>, ports: Option<&str>) -> RuleSpec {
    RuleSpec {
        action,
        source: source.map(|s| parse_source(s).unwrap()),
        ports: ports.map(|p| p.parse().unwrap()),
        proto: None,
        container: None,
    }
}

/// `specs`, appended in order as `dataplane firewall add` does.
pub fn firewall_rules(specs: impl IntoIterator<Item = RuleSpec>) -> Rules {
    let mut rules = Rules::default();
    for spec in specs {
        rules.add(spec).unwrap();
    }
    rules
}

/// One BPF_PROG_TEST_RUN of `program` on `frame`: the verdict and the frame as it leaves.
fn run_once<P>(program: &mut P, frame: &[u8]) -> (u32, Vec<u8>)
where
    P: for<'a> TestRun<Opts<'a> = TestRunOptions<'a>, Result = aya::programs::TestRunResult>,
{
    try_run_once(program, frame).expect("BPF_PROG_TEST_RUN")
}

/// As `run_once`, with the syscall's error.
fn try_run_once<P>(program: &mut P, frame: &[u8]) -> std::io::Result<(u32, Vec<u8>)>
where
    P: for<'a> TestRun<Opts<'a> = TestRunOptions<'a>, Result = aya::programs::TestRunResult>,
{
    let mut out = vec![0u8; frame.len() + 256];
    let result = program
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ..TestRunOptions::default()
        })
        .map_err(|e| match e {
            aya::programs::ProgramError::SyscallError(e) => e.io_error,
            other => std::io::Error::other(other),
        })?;
    out.truncate(result.data_size_out as usize);
    Ok((result.return_value, out))
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.bpffs).status();
        let _ = std::fs::remove_dir_all(&self.bpffs);
    }
}

/// A's host-side interface on RED (10.1.0.0/24 and fd00:1::/64: A is 10.1.0.2 and fd00:1::2
/// with `A_MAC`), as the daemon configures one: the tests' frames are A's unless they say
/// otherwise.
pub fn red_interface(flags: u32) -> InterfaceConfig {
    InterfaceConfig {
        network: RED,
        flags,
        v4_subnet: [10, 1, 0, 0],
        v4_mask: [255, 255, 255, 0],
        v4_addr: [10, 1, 0, 2],
        mac: A_MAC,
        counter_slot: 0,
        v6_addr: A6,
        v6_subnet: v6(1, 0),
        v6_mask: RED6_MASK,
    }
}

/// The mask of RED's IPv6 subnet, fd00:1::/64.
pub const RED6_MASK: [u8; 16] = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0];

/// B's host-side interface (10.1.0.3, `B_MAC`), for tests whose frames B sends from `lo`.
pub fn b_interface(flags: u32) -> InterfaceConfig {
    InterfaceConfig { v4_addr: [10, 1, 0, 3], mac: B_MAC, v6_addr: B6, ..red_interface(flags) }
}

/// An Ethernet + IPv4 + UDP frame from A's MAC.
pub fn udp_frame(dst_mac: [u8; 6], src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
    udp_between(dst_mac, (src, 4000), (dst, 53))
}

/// An Ethernet + IPv4 + UDP frame from A's MAC between two address/port pairs.
pub fn udp_between(dst_mac: [u8; 6], src: ([u8; 4], u16), dst: ([u8; 4], u16)) -> Vec<u8> {
    udp_between_macs((A_MAC, dst_mac), src, dst)
}

/// An Ethernet + IPv4 + UDP frame between two MACs (source, destination) and two
/// address/port pairs.
pub fn udp_between_macs(macs: ([u8; 6], [u8; 6]), src: ([u8; 4], u16), dst: ([u8; 4], u16)) -> Vec<u8> {
    let builder = PacketBuilder::ethernet2(macs.0, macs.1).ipv4(src.0, dst.0, 64).udp(src.1, dst.1);
    let payload = b"hello";
    let mut frame = Vec::with_capacity(builder.size(payload.len()));
    builder.write(&mut frame, payload).unwrap();
    frame
}

/// A TCP segment to the uplink's MAC with `flags` (`S` SYN, `A` ACK, `R` RST, `F` FIN),
/// sequence number `seq` and, with `A`, acknowledgement number `ack`; 8 bytes of payload.
pub fn tcp_segment(
    src_mac: [u8; 6],
    src: ([u8; 4], u16),
    dst: ([u8; 4], u16),
    flags: &str,
    seq: u32,
    ack: u32,
) -> Vec<u8> {
    let mut b =
        PacketBuilder::ethernet2(src_mac, UPLINK_MAC).ipv4(src.0, dst.0, 64).tcp(src.1, dst.1, seq, 64000);
    for flag in flags.chars() {
        b = match flag {
            'S' => b.syn(),
            'A' => b.ack(ack),
            'R' => b.rst(),
            'F' => b.fin(),
            other => panic!("no TCP flag {other}"),
        };
    }
    let mut frame = vec![];
    b.write(&mut frame, b"payload!").unwrap();
    frame
}

/// An ICMP echo request (or, with `reply`, reply) with identifier `id`, to the uplink's MAC.
pub fn icmp_echo(src_mac: [u8; 6], src: [u8; 4], dst: [u8; 4], id: u16, reply: bool) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(src_mac, UPLINK_MAC).ipv4(src, dst, 64);
    let b = if reply { b.icmpv4_echo_reply(id, 1) } else { b.icmpv4_echo_request(id, 1) };
    let mut frame = vec![];
    b.write(&mut frame, b"ping").unwrap();
    frame
}

/// The destination and source MACs of a frame: what a path that forwards it untranslated
/// sets, and nothing past them.
pub fn macs(frame: &[u8]) -> ([u8; 6], [u8; 6]) {
    (frame[0..6].try_into().unwrap(), frame[6..12].try_into().unwrap())
}

/// A translated frame as the NAT tests check it: its MACs, addresses (`A`: 4 or 16
/// bytes), and ports (or an echo's identifier twice), its checksums verified.
#[derive(Debug)]
pub struct Seen<A> {
    pub eth_src: [u8; 6],
    pub eth_dst: [u8; 6],
    pub src: A,
    pub dst: A,
    pub sport: u16,
    pub dport: u16,
}

impl<A> Seen<A> {
    pub fn new(eth: &etherparse::Ethernet2Header, src: A, dst: A, (sport, dport): (u16, u16)) -> Self {
        Self { eth_src: eth.source, eth_dst: eth.destination, src, dst, sport, dport }
    }
}

/// The addresses a TCP or UDP checksum covers (the pseudo header's).
pub enum PseudoHeader<'a> {
    V4(&'a etherparse::Ipv4Header),
    V6(&'a etherparse::Ipv6Header),
}

/// A SYN (or SYN-ACK) from port `ports.0` to `ports.1` offering `mss`, behind a NOP and a
/// window scale as real stacks send, over the IP header `ip` (IPv4 or IPv6).
pub fn syn_with_mss(ip: PacketBuilderStep<IpHeaders>, ports: (u16, u16), ack: bool, mss: u16) -> Vec<u8> {
    let mut b = ip
        .tcp(ports.0, ports.1, 1000, 64000)
        .syn()
        .options(&[
            TcpOptionElement::Noop,
            TcpOptionElement::WindowScale(7),
            TcpOptionElement::MaximumSegmentSize(mss),
        ])
        .unwrap();
    if ack {
        b = b.ack(1);
    }
    let mut frame = vec![];
    b.write(&mut frame, &[]).unwrap();
    frame
}

/// The MSS a TCP frame offers, if it offers one.
pub fn mss_offered(frame: &[u8]) -> Option<u16> {
    let packet = etherparse::SlicedPacket::from_ethernet(frame).unwrap();
    let Some(etherparse::TransportSlice::Tcp(tcp)) = packet.transport else { panic!("not TCP") };
    tcp.options_iterator().find_map(|o| match o {
        Ok(TcpOptionElement::MaximumSegmentSize(mss)) => Some(mss),
        _ => None,
    })
}

/// The ports of a TCP or UDP segment, its checksum asserted equal to a recomputation;
/// `None` for other transports.
pub fn checked_ports(transport: &etherparse::TransportSlice, ip: PseudoHeader) -> Option<(u16, u16)> {
    use etherparse::TransportSlice;
    match transport {
        TransportSlice::Tcp(tcp) => {
            let header = tcp.to_header();
            let expected = match ip {
                PseudoHeader::V4(ip) => header.calc_checksum_ipv4(ip, tcp.payload()),
                PseudoHeader::V6(ip) => header.calc_checksum_ipv6(ip, tcp.payload()),
            };
            assert_eq!(tcp.checksum(), expected.unwrap(), "TCP checksum is wrong");
            Some((tcp.source_port(), tcp.destination_port()))
        }
        TransportSlice::Udp(udp) => {
            let header = udp.to_header();
            let expected = match ip {
                PseudoHeader::V4(ip) => header.calc_checksum_ipv4(ip, udp.payload()),
                PseudoHeader::V6(ip) => header.calc_checksum_ipv6(ip, udp.payload()),
            };
            assert_eq!(udp.checksum(), expected.unwrap(), "UDP checksum is wrong");
            Some((udp.source_port(), udp.destination_port()))
        }
        _ => None,
    }
}

/// What an ICMP or ICMPv6 error quotes, read from its quote of a whole TCP or UDP packet:
/// the addresses (4 or 16 bytes), the ports and the payload, the quoted IPv4 header's
/// checksum and the quoted TCP or UDP checksum asserted equal to recomputations.
#[derive(Debug, PartialEq, Eq)]
pub struct Quoted {
    pub src: Vec<u8>,
    pub dst: Vec<u8>,
    pub sport: u16,
    pub dport: u16,
    pub payload: Vec<u8>,
}

pub fn checked_quote(quote: &[u8]) -> Quoted {
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};
    let packet = SlicedPacket::from_ip(quote).expect("a quote of a whole packet");
    let transport = packet.transport.expect("a quoted TCP or UDP header");
    let payload = match &transport {
        TransportSlice::Tcp(tcp) => tcp.payload().to_vec(),
        TransportSlice::Udp(udp) => udp.payload().to_vec(),
        other => panic!("unexpected quoted transport {other:?}"),
    };
    let (src, dst, (sport, dport)) = match packet.net.expect("a quoted IP header") {
        NetSlice::Ipv4(ip) => {
            let header = ip.header().to_header();
            assert_eq!(
                header.header_checksum,
                header.calc_header_checksum(),
                "quoted IPv4 checksum is wrong"
            );
            let ports = checked_ports(&transport, PseudoHeader::V4(&header)).unwrap();
            (header.source.to_vec(), header.destination.to_vec(), ports)
        }
        NetSlice::Ipv6(ip) => {
            let header = ip.header().to_header();
            let ports = checked_ports(&transport, PseudoHeader::V6(&header)).unwrap();
            (header.source.to_vec(), header.destination.to_vec(), ports)
        }
        other => panic!("unexpected quoted network header {other:?}"),
    };
    Quoted { src, dst, sport, dport, payload }
}

/// An ARP packet for IPv4 over Ethernet from `eth_src`, whose sender is `sender`.
pub fn arp(eth_src: [u8; 6], operation: u16, sender: ([u8; 6], [u8; 4]), target: [u8; 4]) -> Vec<u8> {
    let mut frame = vec![0xff; 6];
    frame.extend_from_slice(&eth_src);
    frame.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4]);
    frame.extend_from_slice(&operation.to_be_bytes());
    frame.extend_from_slice(&sender.0);
    frame.extend_from_slice(&sender.1);
    frame.extend_from_slice(&[0; 6]);
    frame.extend_from_slice(&target);
    frame
}

pub const ARP_REQUEST: u16 = 1;
pub const ARP_REPLY: u16 = 2;

/// An IPv6 UDP datagram from a link-local address to all routers, between two MACs
/// (source, destination).
pub fn ipv6_udp(macs: ([u8; 6], [u8; 6])) -> Vec<u8> {
    let mut frame = vec![];
    PacketBuilder::ethernet2(macs.0, macs.1)
        .ipv6(
            [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
            [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
            64,
        )
        .udp(546, 547)
        .write(&mut frame, b"x")
        .unwrap();
    frame
}

/// An Ethernet + IPv6 frame between two MACs (source, destination) and two addresses,
/// whose payload `next_header` and `payload` give as they are (no checksum computed: the
/// programs do not read it).
pub fn ipv6_frame(
    macs: ([u8; 6], [u8; 6]),
    src: [u8; 16],
    dst: [u8; 16],
    next_header: u8,
    payload: &[u8],
) -> Vec<u8> {
    let mut frame = macs.1.to_vec();
    frame.extend(macs.0);
    frame.extend([0x86, 0xdd, 0x60, 0, 0, 0]);
    frame.extend((payload.len() as u16).to_be_bytes());
    frame.extend([next_header, 64]);
    frame.extend(src);
    frame.extend(dst);
    frame.extend(payload);
    frame
}

/// An Ethernet + IPv6 + UDP frame between two MACs and two addresses.
pub fn udp6_between_macs(macs: ([u8; 6], [u8; 6]), src: [u8; 16], dst: [u8; 16]) -> Vec<u8> {
    let mut frame = vec![];
    PacketBuilder::ethernet2(macs.0, macs.1)
        .ipv6(src, dst, 64)
        .udp(4000, 53)
        .write(&mut frame, b"hello")
        .unwrap();
    frame
}

/// A neighbour advertisement from `src` (solicited, override) for `target`, to all nodes.
pub fn neighbour_advertisement(src_mac: [u8; 6], src: [u8; 16], target: [u8; 16]) -> Vec<u8> {
    const ICMPV6: u8 = 58;
    let mut message = vec![136, 0, 0, 0, 0x60, 0, 0, 0];
    message.extend(target);
    // Target link-layer address option: the MAC it claims for the target.
    message.extend([2, 1]);
    message.extend(src_mac);
    let all_nodes = [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    ipv6_frame((src_mac, [0x33, 0x33, 0, 0, 0, 1]), src, all_nodes, ICMPV6, &message)
}
