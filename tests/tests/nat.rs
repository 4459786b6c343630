//! Outbound NAT with real tools: containers reach an external namespace behind the host's
//! uplink, which sees only the uplink's address; no kernel forwarding, no firewall rule.

use std::time::Duration;

use dataplane_tests::{EXTERNAL_ADDR, Host, UPLINK_ADDR, eventually, stdout_of as ok};

#[test]
fn containers_reach_the_outside_as_the_uplink_address() {
    let host = Host::start_with_external();
    host.dp_ok(&["network", "create", "--subnet", "10.40.0.0/24", "out"]);
    host.run_sleeper("c", &["--network", "out"]);
    // The programs ask the FIB how to route, which needs forwarding on the input device.
    let veth = host.dp_json(&["inspect", "c"])[0]["NetworkSettings"]["Networks"]["out"]["HostInterface"]
        .as_str()
        .unwrap()
        .to_string();
    let forwarding = host.sh_ok(&format!("cat /proc/sys/net/ipv4/conf/{veth}/forwarding"));
    assert_eq!(forwarding.trim(), "1", "no IPv4 forwarding on {veth}");
    let rp_filter = host.sh_ok(&format!("cat /proc/sys/net/ipv4/conf/{veth}/rp_filter"));
    assert_eq!(
        rp_filter.trim(),
        host.sh_ok("cat /proc/sys/net/ipv4/conf/default/rp_filter").trim(),
        "setting forwarding changed another setting"
    );

    // TCP: an HTTP fetch, and the server's log names the client.
    let http_log = host.dir.join("http.log");
    let _http =
        host.external_server("python3", &["-m", "http.server", "8080", "--bind", EXTERNAL_ADDR], "http.log");
    ok(host.exec("c", &format!("curl -sf -m 5 -o /dev/null http://{EXTERNAL_ADDR}:8080/")));
    let log = std::fs::read_to_string(&http_log).unwrap();
    assert!(log.contains(UPLINK_ADDR), "the outside saw another source than the uplink: {log}");
    assert!(!log.contains("10.40.0."), "a container address leaked: {log}");

    // ICMP echo.
    assert!(host.ping("c", EXTERNAL_ADDR), "ping to the outside failed");

    // UDP: the external echo answers with the source address it saw.
    let script = format!(
        "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('{EXTERNAL_ADDR}', 5353)); \
         d, a = s.recvfrom(100); s.sendto(a[0].encode(), a)"
    );
    let _udp = host.external_server("python3", &["-c", &script], "udp.log");
    let client = format!(
        "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3); \
         s.sendto(b'who', ('{EXTERNAL_ADDR}', 5353)); print(s.recv(100).decode())"
    );
    let seen = ok(host.exec("c", &format!("python3 -c \"{client}\"")));
    assert_eq!(seen.trim(), UPLINK_ADDR);

    // A TCP stream with offloads (GSO, partial checksums) through the translation, then
    // a UDP one (the server serves one test, then the next).
    let _iperf = host.external_server("iperf3", &["-s", "-1", "-B", EXTERNAL_ADDR], "iperf.log");
    ok(host.exec("c", &format!("iperf3 -c {EXTERNAL_ADDR} -t 1")));
    let _iperf = host.external_server("iperf3", &["-s", "-1", "-B", EXTERNAL_ADDR], "iperf-udp.log");
    let report = ok(host.exec("c", &format!("iperf3 -c {EXTERNAL_ADDR} -u -b 50M -t 1 -J")));
    let report: serde_json::Value = serde_json::from_str(&report).unwrap();
    let packets = report["end"]["sum"]["packets"].as_u64().unwrap_or(0);
    let lost = report["end"]["sum"]["lost_packets"].as_u64().unwrap_or(u64::MAX);
    assert!(packets > 1000 && lost * 10 < packets, "UDP through masquerade: {packets} sent, {lost} lost");

    let flows = host.dp_ok(&["conntrack", "ls"]);
    for proto in ["tcp", "udp", "icmp"] {
        assert!(
            flows.lines().any(|l| l.split_whitespace().nth(1) == Some(proto) && l.contains(UPLINK_ADDR)),
            "no {proto} flow in:\n{flows}"
        );
    }
    assert!(host.counter("masqueraded") > 10 && host.counter("reverse_nat") > 10);
    // The kernel forwarded nothing (forwarding stays off) and no rule was written.
    assert_eq!(host.sh_ok("cat /proc/sys/net/ipv4/ip_forward").trim(), "0");
    assert_eq!(host.sh_ok("iptables-save | grep -v '^#' || true").trim(), "");
    assert_eq!(host.sh_ok("nft list ruleset").trim(), "");

    // Removing the container forgets its flows.
    host.dp_ok(&["rm", "-f", "c"]);
    assert_eq!(host.dp_ok(&["conntrack", "ls"]).lines().count(), 1, "flows of a removed container remain");
}

#[test]
fn internal_networks_stay_inside() {
    let host = Host::start_with_external();
    host.dp_ok(&["network", "create", "--internal", "--subnet", "10.41.0.0/24", "secret"]);
    host.run_sleeper("s1", &["--network", "secret"]);
    host.run_sleeper("s2", &["--network", "secret"]);
    assert!(!host.ping("s1", EXTERNAL_ADDR), "an internal network reached the outside");
    assert!(host.counter("dropped_internal") > 0);
    assert!(host.ping("s1", &host.ip_of("s2")), "containers of an internal network talk to each other");
    assert!(host.ping("s1", "10.41.0.1"), "and to their gateway");
}

#[test]
fn conntrack_flush_forgets_every_flow() {
    let host = Host::start_with_external();
    host.run_sleeper("c", &[]);
    assert!(host.ping("c", EXTERNAL_ADDR));
    assert!(host.dp_ok(&["conntrack", "ls"]).lines().count() > 1);
    let out = host.dp_ok(&["conntrack", "flush"]);
    assert!(out.starts_with('1'), "{out}");
    assert_eq!(host.dp_ok(&["conntrack", "ls"]).lines().count(), 1);
    // New traffic is tracked afresh.
    assert!(host.ping("c", EXTERNAL_ADDR));
}

#[test]
fn icmp_port_unreachable_is_translated_both_ways() {
    let host = Host::start_with_external();
    host.run_sleeper("c", &[]);
    // Nothing listens on the external side: its "port unreachable" must come back.
    let client = format!(
        "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3); \
         s.connect(('{EXTERNAL_ADDR}', 9999)); s.send(b'x')\ntry:\n    s.recv(10); print('answer')\n\
         except ConnectionRefusedError:\n    print('refused')\nexcept socket.timeout:\n    print('timeout')"
    );
    let out = ok(host.exec("c", &format!("python3 -c \"{client}\"")));
    assert_eq!(out.trim(), "refused", "the ICMP error did not reach the container");

    // The other way: a late reply to a masqueraded flow whose socket the container closed
    // gets the container's port unreachable, which must reach the outside as the uplink's,
    // outer source and quote alike (it left with the container's private address). The
    // external side learns the flow's masquerade port from its first datagram, waits for
    // the container's word (from another socket) that the first one is closed, answers
    // late, and reads the error off a raw ICMP socket.
    let watcher = format!(
        "import socket, struct, json\n\
         raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP); raw.settimeout(10)\n\
         s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('{EXTERNAL_ADDR}', 5454)); s.settimeout(10)\n\
         done = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); done.bind(('{EXTERNAL_ADDR}', 5455)); done.settimeout(10)\n\
         _, peer = s.recvfrom(100)\n\
         done.recvfrom(100)\n\
         s.sendto(b'late', peer)\n\
         while True:\n\
         \x20   p = raw.recv(2000); icmp = p[(p[0] & 15) * 4:]\n\
         \x20   if icmp[0] != 3: continue\n\
         \x20   q = icmp[8:]; l4 = q[(q[0] & 15) * 4:]\n\
         \x20   print(json.dumps({{'peer': list(peer), 'src': socket.inet_ntoa(p[12:16]), 'code': icmp[1], \
         'quoted_src': socket.inet_ntoa(q[12:16]), 'quoted_dst': socket.inet_ntoa(q[16:20]), \
         'quoted_ports': list(struct.unpack('!HH', l4[:4]))}}), flush=True); break\n"
    );
    let mut watching = host.external_server("python3", &["-c", &watcher], "late.log");
    let client = format!(
        "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.sendto(b'q', ('{EXTERNAL_ADDR}', 5454)); \
         s.close(); t = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); t.sendto(b'closed', ('{EXTERNAL_ADDR}', 5455))"
    );
    ok(host.exec("c", &format!("python3 -c \"{client}\"")));
    let ended = eventually(Duration::from_secs(15), || matches!(watching.0.try_wait(), Ok(Some(_))));
    let log = std::fs::read_to_string(host.dir.join("late.log")).unwrap();
    assert!(ended, "no port unreachable reached the outside: {log}");
    let seen: serde_json::Value = serde_json::from_str(log.trim()).unwrap_or_else(|e| panic!("{e}: {log}"));
    let (peer_addr, peer_port) = (seen["peer"][0].as_str().unwrap(), seen["peer"][1].as_u64().unwrap());
    assert_eq!(peer_addr, UPLINK_ADDR, "the flow was not masqueraded: {log}");
    assert_eq!(seen["src"], UPLINK_ADDR, "the container's error left with another source: {log}");
    assert_eq!(seen["code"], 3, "not a port unreachable: {log}");
    assert_eq!(seen["quoted_src"], EXTERNAL_ADDR, "{log}");
    assert_eq!(seen["quoted_dst"], UPLINK_ADDR, "the quote kept the container's address: {log}");
    assert_eq!(seen["quoted_ports"], serde_json::json!([5454, peer_port]), "the quote kept its port: {log}");
}

#[test]
fn a_full_conntrack_table_evicts_the_oldest_flows_and_counts_them() {
    let host = Host::start_with_external_and(&[("DATAPLANE_CONNTRACK_MAX", "256")]);
    host.run_sleeper("c", &[]);
    let loadgen = env!("CARGO_BIN_EXE_dp-loadgen");
    // Unanswered datagrams: new flows, never confirmed, in SNAT_NEW and SNAT_REV_NEW.
    ok(host.exec("c", &format!("{loadgen} udp-flows --dst {EXTERNAL_ADDR} --count 1000 --dst-ports 50")));
    // The last packets may still be on their way through the veth's backlog.
    let (mut live, mut evicted) = (0, 0);
    let added_up = eventually(Duration::from_secs(5), || {
        live = host.counter("conntrack_masquerade_unconfirmed_entries");
        evicted = host.counter("conntrack_masquerade_unconfirmed_evictions");
        live + evicted == 1000
    });
    assert!(added_up, "{live} live and {evicted} evicted do not add up to the 1000 flows");
    assert!(live <= 256, "the table holds {live} flows, more than its 256 entries");
    // New flows still get through and are tracked (a ping, answered once, stays new); the
    // kernel's LRU evicts in batches, so one more flow may push out many.
    assert!(host.ping("c", EXTERNAL_ADDR), "no new flow after the table filled");
    let evicted = host.counter("conntrack_masquerade_unconfirmed_evictions");
    assert_eq!(host.counter("conntrack_masquerade_unconfirmed_entries") + evicted, 1001);
    // What the daemon removes itself is not an eviction.
    host.dp_ok(&["conntrack", "flush"]);
    assert_eq!(host.counter("conntrack_masquerade_unconfirmed_entries"), 0);
    assert_eq!(host.counter("conntrack_masquerade_unconfirmed_evictions"), evicted);
}

#[test]
fn masquerade_keeps_working_while_the_daemon_restarts() {
    let mut host = Host::start_with_external();
    host.run_sleeper("c", &[]);
    assert!(host.ping("c", EXTERNAL_ADDR));
    let netns =
        host.dp_json(&["inspect", "c"])[0]["NetworkSettings"]["SandboxKey"].as_str().unwrap().to_string();
    host.stop_daemon();
    // Both programs stay on their interfaces: the flow's replies still come back.
    let ping = std::process::Command::new("nsenter")
        .arg(format!("--net={netns}"))
        .args(["ping", "-c1", "-W1", EXTERNAL_ADDR])
        .output()
        .unwrap();
    assert!(ping.status.success(), "masquerade stopped with the daemon");
    host.start_daemon();
    let filters = host.sh_ok("tc filter show dev up0 ingress");
    assert_eq!(filters.lines().filter(|l| l.contains("name from_uplink")).count(), 1, "{filters}");
    assert!(host.ping("c", EXTERNAL_ADDR), "masquerade after the restart");
}

/// Sends `count` datagrams from container `c` to the external namespace's port 9, each
/// from a socket of its own: a flow of its own, all to one destination.
fn udp_flows_out(host: &Host, count: usize) {
    let script = format!("for i in $(seq {count}); do echo x > /dev/udp/{EXTERNAL_ADDR}/9; done");
    ok(host.exec("c", &format!("bash -c '{script}'")));
}

/// Waits for the count of packets dropped for want of a masquerade port to be `expected`.
fn wait_for_nat_exhausted(host: &Host, expected: u64) {
    let mut seen = 0;
    let counted = eventually(Duration::from_secs(5), || {
        seen = host.counter("dropped_nat_exhausted");
        seen == expected
    });
    assert!(counted, "{seen} packets dropped for want of a port, {expected} expected");
}

/// The daemon's log shows the kernel's message when the masquerade ports run out, with
/// `RUST_LOG` at debug for `dataplane::kernel`: one per dropped packet, naming the range
/// and the destination. Restarted at its default level (info), the programs build none,
/// while the flows kept across the restart still hold every port.
#[test]
fn exhausted_masquerade_ports_show_in_the_daemon_log_at_debug_only() {
    const RANGE: &str = "61000-61001";
    assert!(
        std::env::var_os("RUST_LOG").is_none(),
        "run without RUST_LOG: the daemons of this test inherit it, and one must log at its default"
    );
    let mut host = Host::start_with_external_and(&[
        ("DATAPLANE_NAT_PORT_RANGE", RANGE),
        ("RUST_LOG", "info,dataplane::kernel=debug"),
    ]);
    host.run_sleeper("c", &[]);
    let message = format!(
        "DEBUG dataplane::kernel] no masquerade port free in {RANGE} towards {EXTERNAL_ADDR} port 9: dropped"
    );
    // 6 flows through the 2 ports of the range: 4 find none.
    udp_flows_out(&host, 6);
    wait_for_nat_exhausted(&host, 4);
    let logged = eventually(Duration::from_secs(5), || host.daemon_log().matches(&message).count() == 4);
    assert!(logged, "4 messages `{message}` expected in:\n{}", host.daemon_log());

    host.stop_daemon();
    host.set_daemon_env(&[("DATAPLANE_NAT_PORT_RANGE", RANGE)]);
    let before_restart = host.daemon_log().len();
    host.start_daemon();
    udp_flows_out(&host, 3);
    wait_for_nat_exhausted(&host, 7);
    // The reader forwards a message within milliseconds; a second leaves room for one.
    std::thread::sleep(Duration::from_secs(1));
    let log = host.daemon_log();
    assert!(
        !log[before_restart..].contains("dataplane::kernel"),
        "at the default level the kernel built a message:\n{}",
        &log[before_restart..]
    );
}
