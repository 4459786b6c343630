//! Published ports (`run -p`), reached from an external namespace through the uplink, with
//! the container seeing the real client address; reservations, conflicts, ranges and -P.

use std::{process::Stdio, time::Duration};

use dataplane_tests::{EXTERNAL_ADDR, Host, KillOnDrop, UPLINK_ADDR, eventually};

/// A detached HTTP server in a container, answering on `port`.
fn web(host: &Host, name: &str, extra: &[&str], port: &str) {
    let mut args = vec!["run", "-d", "--name", name];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--", "python3", "-m", "http.server", port]);
    host.dp_ok(&args);
    let probe = format!("curl -sf -o /dev/null http://127.0.0.1:{port}/");
    assert!(eventually(Duration::from_secs(10), || host.exec(name, &probe).status.success()));
}

#[test]
fn published_port_is_reached_from_outside_with_the_real_client_address() {
    let host = Host::start_with_external();
    web(&host, "web", &["-p", "8080:80"], "80");
    assert!(host.fetch_from_outside(UPLINK_ADDR, 8080), "published port unreachable from outside");
    assert!(
        eventually(Duration::from_secs(3), || host.container_log("web").contains(EXTERNAL_ADDR)),
        "the container did not see the client's address: {}",
        host.container_log("web")
    );
    assert_eq!(host.dp_ok(&["port", "web"]).trim(), "80/tcp -> 0.0.0.0:8080");
    assert_eq!(uplink_xdp_program(&host), None, "XDP is on by default on a veth uplink");
    let ports = &host.dp_json(&["inspect", "web"])[0]["NetworkSettings"]["Ports"]["80/tcp"][0];
    assert_eq!(ports["HostPort"], "8080");
    let flows = host.dp_ok(&["conntrack", "ls"]);
    assert!(flows.lines().any(|l| l.starts_with("published") && l.contains(EXTERNAL_ADDR)), "{flows}");
    assert!(host.counter("published") > 0 && host.counter("published_reply") > 0);
    // Unpublished ports and the container's own address stay closed from outside.
    assert!(!host.fetch_from_outside(UPLINK_ADDR, 8081));
    host.external_sh_ok(&format!(
        "ip route add 10.0.0.0/8 via {UPLINK_ADDR} && ip route add 172.16.0.0/12 via {UPLINK_ADDR}"
    ));
    assert!(!host.fetch_from_outside(&host.ip_of("web"), 80), "container address reachable from outside");
    assert!(host.counter("dropped_unpublished") > 0);
    assert_eq!(host.sh_ok("iptables-save | grep -v '^#' || true").trim(), "");
    // Removing the container removes the mapping and frees the port.
    host.dp_ok(&["rm", "-f", "web"]);
    assert!(!host.fetch_from_outside(UPLINK_ADDR, 8080));
    assert_eq!(host.map_entries("PUBLISHED"), 0);
    assert_eq!(host.dp_ok(&["conntrack", "ls"]).lines().count(), 1);
    assert!(
        host.sh("python3 -c \"import socket; socket.socket().bind(('0.0.0.0', 8080))\"").status.success()
    );
}

#[test]
fn two_containers_publish_the_same_container_port_on_different_host_ports() {
    let host = Host::start_with_external();
    web(&host, "a", &["-p", "8001:80"], "80");
    web(&host, "b", &["-p", "8002:80/tcp"], "80");
    assert!(host.fetch_from_outside(UPLINK_ADDR, 8001));
    assert!(host.fetch_from_outside(UPLINK_ADDR, 8002));
    assert!(host.container_log("a").contains("GET /"));
    assert!(host.container_log("b").contains("GET /"));
}

#[test]
fn host_ports_are_really_reserved_and_conflicts_refused() {
    let host = Host::start_with_external();
    host.run_sleeper("one", &["-p", "9000:80"]);
    // Another container, the same host port: refused, and nothing is left of it.
    let err = host.dp_err(&["run", "-d", "--name", "two", "-p", "9000:81", "--", "sleep", "60"]);
    assert!(err.contains("already in use"), "{err}");
    assert_eq!(host.dp_ok(&["ps", "-a"]).lines().count(), 2);
    // A port published on every address is not also published on one, and the other way
    // round (the programs look the wildcard up first and rely on this).
    let err = host.dp_err(&["run", "-d", "-p", "127.0.0.1:9000:80", "--", "sleep", "60"]);
    assert!(err.contains("already in use"), "{err}");
    host.run_sleeper("local", &["-p", "127.0.0.1:9001:80"]);
    let err = host.dp_err(&["run", "-d", "-p", "9001:80", "--", "sleep", "60"]);
    assert!(err.contains("already in use"), "{err}");
    assert_eq!(host.dp_ok(&["ps", "-a"]).lines().count(), 3);
    // A host process cannot take the published port afterwards...
    let bind = host.sh("python3 -c \"import socket; socket.socket().bind(('0.0.0.0', 9000))\"");
    assert!(!bind.status.success(), "a host process took a published port");
    // ...and a port a host process already holds cannot be published.
    let holder = host.host_listener("s = socket.socket(); s.bind(('0.0.0.0', 9100))", 9100);
    let err = host.dp_err(&["run", "-d", "-p", "9100:80", "--", "sleep", "60"]);
    assert!(err.contains("already in use"), "{err}");
    drop(holder);
    // The masquerade range is not for publishing.
    let err = host.dp_err(&["run", "-d", "-p", "62000:80", "--", "sleep", "60"]);
    assert!(err.contains("masquerade port range"), "{err}");
    let err = host.dp_err(&["run", "-d", "--network", "host", "-p", "9200:80", "--", "sleep", "60"]);
    assert!(err.contains("conflicting options"), "{err}");
}

/// Ports are published on one endpoint of a container, its first. A restart publishes
/// them there again and keeps them reserved, however many networks the container is on
/// (it once published them again for each, and the second network's failed reservations
/// let the first's go: a host process could take the port).
#[test]
fn a_container_on_two_networks_keeps_its_port_reserved_across_a_restart() {
    let mut host = Host::start_with_external();
    host.dp_ok(&["network", "create", "--subnet", "10.89.0.0/24", "second"]);
    web(&host, "two", &["-p", "8090:80"], "80");
    host.dp_ok(&["network", "connect", "second", "two"]);
    host.stop_daemon();
    host.start_daemon();
    let log = host.daemon_log();
    assert!(!log.contains("not restored"), "the restart gave up a published port: {log}");
    let bind = host.sh("python3 -c \"import socket; socket.socket().bind(('0.0.0.0', 8090))\"");
    assert!(!bind.status.success(), "a host process took the published port after a restart");
    assert!(host.fetch_from_outside(UPLINK_ADDR, 8090), "the port is not served after a restart");
}

#[test]
fn ranges_random_ports_and_loopback_only_publishing() {
    let host = Host::start_with_external();
    let started = std::time::Instant::now();
    host.run_sleeper("range", &["-p", "7000-7999:7000-7999"]);
    assert!(started.elapsed() < Duration::from_secs(2), "1,000 ports took {:?}", started.elapsed());
    assert_eq!(host.map_entries("PUBLISHED"), 1000);
    assert_eq!(host.dp_ok(&["port", "range"]).lines().count(), 1000);
    host.dp_ok(&["rm", "-f", "range"]);
    assert_eq!(host.map_entries("PUBLISHED"), 0);

    web(&host, "anyport", &["-P", "--expose", "80"], "80");
    let line = host.dp_ok(&["port", "anyport"]);
    let port: u16 = line.trim().rsplit(':').next().unwrap().parse().unwrap();
    assert!(port >= 1024, "{line}");
    assert!(host.fetch_from_outside(UPLINK_ADDR, port), "-P port unreachable: {line}");

    // Published on 127.0.0.1 only: never reachable from another machine on the uplink.
    web(&host, "local", &["-p", "127.0.0.1:8090:80"], "80");
    assert!(!host.fetch_from_outside(UPLINK_ADDR, 8090), "a loopback-only port was reachable from outside");
}

#[test]
fn udp_published_port() {
    let host = Host::start_with_external();
    let echo = "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('0.0.0.0', 53)); \
                d, a = s.recvfrom(100); s.sendto(a[0].encode(), a)";
    host.dp_ok(&["run", "-d", "--name", "dns", "-p", "5353:53/udp", "--", "python3", "-c", echo]);
    std::thread::sleep(Duration::from_millis(500));
    let client = format!(
        "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3); \
         s.sendto(b'q', ('{UPLINK_ADDR}', 5353)); print(s.recv(100).decode())"
    );
    let out = host.external_command("python3").args(["-c", &client]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        EXTERNAL_ADDR,
        "the container saw another client"
    );
}

#[test]
fn containers_reach_published_ports_through_the_host_address() {
    let host = Host::start_with_external();
    host.dp_ok(&["network", "create", "--subnet", "10.50.0.0/24", "front"]);
    web(&host, "web", &["-p", "8080:80"], "80");
    host.run_sleeper("same", &[]);
    host.run_sleeper("other", &["--network", "front"]);
    for (client, target) in [("same", UPLINK_ADDR), ("same", "172.17.0.1"), ("other", UPLINK_ADDR)] {
        let fetch = host.exec(client, &format!("curl -sf -m 3 -o /dev/null http://{target}:8080/"));
        assert!(fetch.status.success(), "{client} cannot reach {target}:8080 (hairpin)");
    }
    let log = host.container_log("web");
    for client in ["same", "other"] {
        let ip = host.ip_of(client);
        assert!(log.contains(&ip), "web did not see {client}'s address {ip}: {log}");
    }
}

#[test]
fn the_host_reaches_published_ports_on_its_addresses_and_loopback() {
    let host = Host::start_with_external();
    web(&host, "web", &["-p", "8080:80"], "80");
    web(&host, "local", &["-p", "127.0.0.1:8090:80"], "80");
    for url in [
        "http://127.0.0.1:8080/",
        &format!("http://{UPLINK_ADDR}:8080/"),
        "http://172.17.0.1:8080/",
        "http://127.0.0.1:8090/",
    ] {
        let out = host.sh_in_cgroup(&format!("curl -sf -m 3 -o /dev/null {url}"));
        assert!(
            out.status.success(),
            "the host cannot fetch {url}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Outside the hooked cgroup nothing is redirected (the daemon only holds the port).
    assert!(!host.sh("curl -sf -m 3 -o /dev/null http://127.0.0.1:8080/").status.success());

    // UDP: the reply shows the published address the host sent to.
    let echo = "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('0.0.0.0', 53)); \
                d, a = s.recvfrom(100); s.sendto(b'pong', a)";
    host.dp_ok(&["run", "-d", "--name", "udp", "-p", "5353:53/udp", "--", "python3", "-c", echo]);
    std::thread::sleep(Duration::from_millis(500));
    let client = "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3); \
                  s.sendto(b\"ping\", (\"127.0.0.1\", 5353)); d, a = s.recvfrom(100); print(d.decode(), a[0], a[1])";
    let out = host.sh_in_cgroup(&format!("python3 -c '{client}'"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "pong 127.0.0.1 5353");
}

#[test]
fn iperf3_tcp_and_udp_through_a_published_port() {
    let host = Host::start_with_external();
    host.dp_ok(&[
        "run",
        "-d",
        "--name",
        "perf",
        "-p",
        "5201:5201",
        "-p",
        "5201:5201/udp",
        "--",
        "iperf3",
        "-s",
    ]);
    let target = format!("iperf3 -c {UPLINK_ADDR} -t 1");
    let ready = eventually(Duration::from_secs(10), || {
        let run = host
            .external_command("sh")
            .args(["-c", &target])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status();
        run.unwrap().success()
    });
    assert!(ready, "iperf3 TCP through the published port failed");
    let udp = host
        .external_command("iperf3")
        .args(["-c", UPLINK_ADDR, "-u", "-b", "50M", "-t", "1", "-J"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(udp.status.success(), "{}", String::from_utf8_lossy(&udp.stderr));
    let report: serde_json::Value = serde_json::from_slice(&udp.stdout).unwrap();
    let packets = report["end"]["sum"]["packets"].as_u64().unwrap_or(0);
    let lost = report["end"]["sum"]["lost_packets"].as_u64().unwrap_or(u64::MAX);
    assert!(
        packets > 1000 && lost * 10 < packets,
        "UDP through the published port: {packets} sent, {lost} lost"
    );
}

#[test]
fn a_port_published_on_one_host_address_is_closed_on_the_others() {
    let host = Host::start_with_external();
    host.sh_ok("ip addr add 203.0.113.3/24 dev up0");
    web(&host, "one", &["-p", &format!("{UPLINK_ADDR}:8085:80")], "80");
    assert!(host.fetch_from_outside(UPLINK_ADDR, 8085));
    assert!(!host.fetch_from_outside("203.0.113.3", 8085), "published on one address, reachable on another");
}

#[test]
fn large_transfers_fit_through_an_uplink_with_a_smaller_mtu() {
    let mut host = Host::start_with_external();
    // The uplink link carries 1,400-byte packets; the external namespace routes to a far
    // network (198.51.100.0/24) whose hosts, like the containers, have a 1,500-byte MTU and
    // offer a 1,460-byte MSS. Without clamping, full-size segments die on the uplink link.
    let far = host.add_namespace("far");
    host.sh_ok("ip link set up0 mtu 1400");
    host.external_sh_ok(&format!(
        "ip link set eth0 mtu 1400 && sysctl -qw net.ipv4.ip_forward=1 \
         && ip link add far0 type veth peer name eth0 netns {far} && ip addr add 198.51.100.1/24 dev far0 \
         && ip link set far0 up"
    ));
    host.ns_sh_ok(
        &far,
        "ip link set lo up && ip addr add 198.51.100.2/24 dev eth0 && ip link set eth0 up \
         && ip route add default via 198.51.100.1",
    );
    let files = host.dir.join("files");
    std::fs::create_dir_all(&files).unwrap();
    std::fs::write(files.join("big"), vec![7u8; 2 << 20]).unwrap();
    let serve = format!("cd {} && exec python3 -m http.server 8080", files.display());
    host.dp_ok(&["run", "-d", "--name", "web", "-p", "8080:8080", "--", "sh", "-c", &serve]);
    let probe = "curl -sf -o /dev/null http://127.0.0.1:8080/big";
    assert!(eventually(Duration::from_secs(10), || host.exec("web", probe).status.success()));
    // A veth enforces its MTU only on packets that are not GSO; make the containers send
    // wire-size packets, as a NIC that segments before the wire would.
    let no_gso = "ip link set dev eth0 gso_max_segs 1";
    assert!(host.exec("web", no_gso).status.success());

    // From the far network to a published port: the container answers with full-size
    // segments, which must fit the uplink.
    let out = std::process::Command::new("nsenter")
        .arg(format!("--net=/run/netns/{far}"))
        .args(["--", "curl", "-s", "-m", "10", "-o", "/dev/null", "-w", "%{size_download}"])
        .arg(format!("http://{UPLINK_ADDR}:8080/big"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), (2 << 20).to_string(), "the download stalled");

    // Through masquerade: a container uploads to the far network.
    let log = std::fs::File::create(host.dir.join("iperf.log")).unwrap();
    let _iperf = KillOnDrop(
        std::process::Command::new("nsenter")
            .arg(format!("--net=/run/netns/{far}"))
            .args(["--", "iperf3", "-s", "-1", "-B", "198.51.100.2"])
            .stdout(log)
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(Duration::from_millis(300));
    host.run_sleeper("client", &[]);
    assert!(host.exec("client", no_gso).status.success());
    let upload = host.exec("client", "timeout 20 iperf3 -c 198.51.100.2 -n 4M");
    assert!(upload.status.success(), "the upload stalled: {}", String::from_utf8_lossy(&upload.stdout));
}

#[test]
fn a_container_reaches_its_own_published_port_through_the_host() {
    let host = Host::start_with_external();
    web(&host, "web", &["-p", "8080:80"], "80");
    let fetch = host.exec("web", &format!("curl -sf -m 3 -o /dev/null http://{UPLINK_ADDR}:8080/"));
    assert!(fetch.status.success(), "the container could not reach its own published port");
    // It sees its gateway as the client (its own address would be a martian), as on Docker.
    assert!(
        eventually(Duration::from_secs(3), || host.container_log("web").contains("172.17.0.1")),
        "{}",
        host.container_log("web")
    );
}

/// The XDP program on `up0`, as `ip -d link` shows it ("prog/xdp id N"), if any.
fn uplink_xdp_program(host: &Host) -> Option<String> {
    let link = host.sh_ok("ip -d link show up0");
    let at = link.find("prog/xdp id ")?;
    Some(link[at..].split_whitespace().nth(2)?.to_string())
}

/// iperf3 TCP from outside to the published port 5201 for a second: bytes received.
fn iperf3_from_outside(host: &Host) -> u64 {
    let out = host
        .external_command("iperf3")
        .args(["-c", UPLINK_ADDR, "-t", "1", "-J"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    report["end"]["sum_received"]["bytes"].as_u64().unwrap_or(0)
}

#[test]
fn xdp_on_the_uplink_serves_published_ports_and_outlives_the_daemon() {
    // On a veth uplink XDP is off unless asked for (it measured slower there than tc).
    let mut host = Host::start_with_external_and(&[("DATAPLANE_XDP", "on")]);
    // Frames from a NIC carry complete checksums; a veth peer leaves them to the device
    // (CHECKSUM_PARTIAL), which only tc can finish, unless its checksum offload is off.
    host.external_sh_ok("ethtool -K eth0 tx off >/dev/null");
    let first = uplink_xdp_program(&host).expect("no XDP program on the uplink");
    web(&host, "web", &["-p", "8080:80"], "80");
    host.dp_ok(&["run", "-d", "--name", "perf", "-p", "5201:5201", "--", "iperf3", "-s"]);
    assert!(host.fetch_from_outside(UPLINK_ADDR, 8080), "published port unreachable through XDP");
    assert!(host.counter("published_xdp") > 0, "XDP did not serve the published port");
    assert!(
        eventually(Duration::from_secs(3), || host.container_log("web").contains(EXTERNAL_ADDR)),
        "the container did not see the client's address"
    );
    // A stream of full-size segments, each rewritten by XDP, arrives intact (the
    // container's TCP checks every checksum: the frames come without skb metadata).
    let before = host.counter("published_xdp");
    assert!(
        eventually(Duration::from_secs(10), || iperf3_from_outside(&host) > 1 << 20),
        "iperf3 through XDP failed"
    );
    assert!(host.counter("published_xdp") > before + 1000);

    // The program stays while the daemon is down, and a new daemon swaps its own in.
    host.stop_daemon();
    assert_eq!(uplink_xdp_program(&host).as_ref(), Some(&first), "XDP left with the daemon");
    assert!(host.fetch_from_outside(UPLINK_ADDR, 8080), "published port closed while the daemon is down");
    host.start_daemon();
    let second = uplink_xdp_program(&host).expect("no XDP program after a restart");
    assert_ne!(second, first, "the restarted daemon kept the old program");
    assert!(host.fetch_from_outside(UPLINK_ADDR, 8080));
    assert!(host.counter("published_xdp") > 0, "the restarted daemon's XDP program serves nothing");

    // `--xdp off` removes it, as `auto` does on a veth; tc serves the port alone.
    host.stop_daemon();
    host.set_daemon_env(&[("DATAPLANE_XDP", "off")]);
    host.start_daemon();
    assert_eq!(uplink_xdp_program(&host), None, "--xdp off left the XDP program on the uplink");
    let published = host.counter("published");
    assert!(host.fetch_from_outside(UPLINK_ADDR, 8080), "published port unreachable from tc alone");
    assert!(host.counter("published") > published);
}

/// moby#45610: a machine on the uplink's segment that routes 127.0.0.1 through the host
/// (`route_localnet=1` on its side, a route to 127.0.0.1 via the host) reached ports
/// published on 127.0.0.1. The external namespace here is that machine, its `lo` without
/// addresses so that 127.0.0.1 is neither local to it nor a martian source.
#[test]
fn a_port_published_on_loopback_is_not_reachable_through_the_uplink() {
    let host = Host::start_with_external();
    web(&host, "local", &["-p", "127.0.0.1:8081:80"], "80");
    host.external_sh_ok(&format!(
        "ip addr flush dev lo && sysctl -qw net.ipv4.conf.all.route_localnet=1 \
         net.ipv4.conf.eth0.route_localnet=1 && ip route add 127.0.0.1/32 via {UPLINK_ADDR}"
    ));
    let attack = host
        .external_command("curl")
        .args(["-s", "-m", "3", "-o", "/dev/null", "-w", "%{http_code}", "http://127.0.0.1:8081/"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let answered = String::from_utf8_lossy(&attack.stdout).to_string();
    assert!(
        !attack.status.success(),
        "the loopback-only port answered the uplink's machine: HTTP {answered}"
    );
    assert!(host.counter("dropped_martian") > 0, "the attack's frames were not counted as martian");
    // The host itself still reaches it.
    assert!(host.sh_in_cgroup("curl -sf -m 3 -o /dev/null http://127.0.0.1:8081/").status.success());

    // The same for an address the host holds on loopback only (a service address on `lo`).
    host.sh_ok("ip addr add 192.0.2.50/32 dev lo");
    web(&host, "on-lo", &["-p", "192.0.2.50:8082:80"], "80");
    host.external_sh_ok(&format!("ip route add 192.0.2.50/32 via {UPLINK_ADDR}"));
    let dropped = host.counter("dropped_martian");
    assert!(
        !host.fetch_from_outside("192.0.2.50", 8082),
        "a port on a loopback-only address answered the uplink"
    );
    assert!(host.counter("dropped_martian") > dropped, "frames for a loopback-only address were not counted");
    assert!(host.sh_in_cgroup("curl -sf -m 3 -o /dev/null http://192.0.2.50:8082/").status.success());
}

/// As `fetch_from_outside`, from one of the external namespace's addresses.
fn fetch_from(host: &Host, source: &str, port: u16) -> bool {
    host.external_command("curl")
        .args(["-sf", "-m", "3", "--interface", source, "-o", "/dev/null"])
        .arg(format!("http://{UPLINK_ADDR}:{port}/"))
        .stdin(Stdio::null())
        .status()
        .unwrap()
        .success()
}

/// The firewall's rules as `firewall ls --format json` gives them.
fn firewall_rules(host: &Host) -> Vec<serde_json::Value> {
    host.dp_json(&["firewall", "ls", "--format", "json"]).as_array().unwrap().clone()
}

#[test]
fn firewall_denies_one_outside_address_a_published_port_and_survives_a_restart() {
    const SECOND_ADDR: &str = "203.0.113.3";
    let mut host = Host::start_with_external();
    host.external_sh_ok(&format!("ip addr add {SECOND_ADDR}/24 dev eth0"));
    web(&host, "web", &["-p", "8080:80"], "80");
    assert!(fetch_from(&host, EXTERNAL_ADDR, 8080) && fetch_from(&host, SECOND_ADDR, 8080));

    let id = host.dp_ok(&[
        "firewall",
        "add",
        "--source",
        EXTERNAL_ADDR,
        "--port",
        "8080",
        "--proto",
        "tcp",
        "deny",
    ]);
    let id = id.trim();
    assert!(!fetch_from(&host, EXTERNAL_ADDR, 8080), "a denied address reached the published port");
    assert!(fetch_from(&host, SECOND_ADDR, 8080), "an address no rule denies was blocked");
    let listed = host.dp_ok(&["firewall", "ls"]);
    let header: Vec<&str> = listed.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["ID", "ACTION", "SOURCE", "PORTS", "PROTO", "CONTAINER", "HITS"], "{listed}");
    let row: Vec<&str> = listed.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(row[..6], [id, "deny", "203.0.113.2/32", "8080", "tcp", "any"], "{listed}");
    let hits: u64 = row[6].parse().unwrap();
    assert!(hits > 0, "the blocked SYNs were not counted: {listed}");
    assert_eq!(host.counter("dropped_firewall"), hits);

    // Bad rules are refused with the fix, and change nothing.
    for (args, expected) in [
        (&["--source", "203.0.113.300", "deny"][..], "not an IP address or CIDR"),
        (&["--source", "203.0.113.2/24", "deny"], "write 203.0.113.0/24"),
        (&["--port", "9000-8000", "deny"], "write 8000-9000"),
        (&["--port", "0", "deny"], "ports are 1-65535"),
        (&["--proto", "icmp", "deny"], "use tcp or udp"),
        (&["--container", "nope", "deny"], "no such container"),
    ] {
        let mut add = vec!["firewall", "add"];
        add.extend_from_slice(args);
        let err = host.dp_err(&add);
        assert!(err.contains(expected), "{args:?}: {err}");
    }
    let err = host.dp_err(&["firewall", "rm", "99"]);
    assert!(err.contains("ID 99") && err.contains("firewall ls"), "{err}");
    assert_eq!(firewall_rules(&host).len(), 1, "a refused command changed the rules");

    // The rule holds while the daemon is away and after it comes back, with its count.
    host.stop_daemon();
    assert!(!fetch_from(&host, EXTERNAL_ADDR, 8080), "the rule went with the daemon");
    host.start_daemon();
    assert!(!fetch_from(&host, EXTERNAL_ADDR, 8080), "the rule did not survive a restart");
    assert!(fetch_from(&host, SECOND_ADDR, 8080));
    let rules = firewall_rules(&host);
    assert_eq!((rules.len(), rules[0]["id"].to_string()), (1, id.to_string()), "{rules:?}");
    assert!(rules[0]["hits"].as_u64().unwrap() > hits, "the count restarted: {rules:?}");

    host.dp_ok(&["firewall", "rm", id]);
    assert!(fetch_from(&host, EXTERNAL_ADDR, 8080), "the address stayed blocked after `firewall rm`");
    assert!(firewall_rules(&host).is_empty());
    assert_eq!(host.map_entries("FIREWALL"), 0, "the removed rule's set stayed in the trie");
}

#[test]
fn a_firewall_rule_for_a_container_follows_its_name_and_spares_the_others() {
    let host = Host::start_with_external();
    web(&host, "web", &["-p", "8080:80"], "80");
    web(&host, "api", &["-p", "8081:80"], "80");
    host.dp_ok(&["firewall", "add", "--container", "web", "--source", EXTERNAL_ADDR, "deny"]);
    assert!(!fetch_from(&host, EXTERNAL_ADDR, 8080), "the rule for web did not apply to web's port");
    assert!(fetch_from(&host, EXTERNAL_ADDR, 8081), "the rule for web applied to api's port");
    // A new container of that name, publishing another port, gets the rule as it publishes.
    host.dp_ok(&["rm", "-f", "web"]);
    web(&host, "web", &["-p", "8082:80"], "80");
    assert!(!fetch_from(&host, EXTERNAL_ADDR, 8082), "the rule did not follow the name to the new web");
    assert!(fetch_from(&host, EXTERNAL_ADDR, 8081));
}
