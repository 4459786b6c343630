//! Ports published over IPv6 (`-p [::]:8080:80`, `-p [::1]:8090:80`, and `-p 8080:80` on
//! both families of a dual-stack network), with real tools: from an external namespace
//! through the uplink's IPv6 address, from a container (hairpin), from the host (`::1` and
//! its addresses); a port published on `::1` is the host's alone; the firewall applies,
//! rules with an IPv6 `--source` to IPv6 clients alone. A port on both families is held by
//! one descriptor.

use std::{process::Stdio, time::Duration};

use dataplane_tests::{EXTERNAL_ADDR6, Host, UPLINK_ADDR, UPLINK_ADDR6, eventually};

/// A host whose uplink has a global IPv6 address, with a dual-stack network `v6pub`.
fn dual_stack_host() -> Host {
    let host = Host::start_with_ipv6_uplink();
    host.create_dual_stack_network("v6pub", "10.44.0.0/24", "fd00:44::/64");
    host
}

/// A detached HTTP server on both families, port 80, in a container of `v6pub`.
fn web(host: &Host, name: &str, publish: &[&str]) {
    let mut args = vec!["run", "-d", "--name", name, "--network", "v6pub"];
    args.extend_from_slice(publish);
    args.extend_from_slice(&["--", "python3", "-m", "http.server", "80", "--bind", "::"]);
    host.dp_ok(&args);
    let probe = "curl -6 -sf -o /dev/null http://[::1]:80/";
    assert!(eventually(Duration::from_secs(10), || host.exec(name, probe).status.success()));
}

/// A UDP echo on both families, port 53, in a container of `v6pub`, publishing `publish`.
fn udp_echo(host: &Host, name: &str, publish: &str) {
    let echo = "import socket; s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); s.bind(('::', 53)); \
                [s.sendto(b'pong', a) for d, a in iter(lambda: s.recvfrom(100), None)]";
    host.dp_ok(&[
        "run",
        "-d",
        "--name",
        name,
        "--network",
        "v6pub",
        "-p",
        publish,
        "--",
        "python3",
        "-c",
        echo,
    ]);
    std::thread::sleep(Duration::from_millis(500));
}

/// A UDP exchange with `addr`, port 5353, over IPv6: what answered, as the client saw it
/// ("pong ADDR PORT").
const UDP6_CLIENT: &str = "import socket, sys; s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); \
    s.settimeout(3); s.sendto(b'ping', (sys.argv[1], 5353)); d, a = s.recvfrom(100); print(d.decode(), a[0], a[1])";

#[test]
fn a_port_published_without_an_address_is_reached_from_outside_over_both_families() {
    let host = dual_stack_host();
    web(&host, "web", &["-p", "8080:80"]);
    assert!(
        host.fetch_from_outside(&format!("[{UPLINK_ADDR6}]"), 8080),
        "the published port is unreachable from outside over IPv6"
    );
    assert!(host.fetch_from_outside(UPLINK_ADDR, 8080), "the published port is unreachable over IPv4");
    assert!(
        eventually(Duration::from_secs(3), || host.container_log("web").contains(EXTERNAL_ADDR6)),
        "the container did not see the client's IPv6 address: {}",
        host.container_log("web")
    );
    assert_eq!(host.dp_ok(&["port", "web"]).trim(), "80/tcp -> 0.0.0.0:8080\n80/tcp -> [::]:8080");
    let ports = &host.dp_json(&["inspect", "web"])[0]["NetworkSettings"]["Ports"]["80/tcp"];
    assert_eq!(ports[1]["HostIp"], "::", "{ports}");
    assert_eq!(ports[1]["HostPort"], "8080", "{ports}");
    let flows = host.dp_ok(&["conntrack", "ls"]);
    assert!(flows.lines().any(|l| l.starts_with("published") && l.contains(EXTERNAL_ADDR6)), "{flows}");

    // UDP: the answer comes from the published address and port.
    udp_echo(&host, "echo", "5353:53/udp");
    let out = host
        .external_command("python3")
        .args(["-c", UDP6_CLIENT, UPLINK_ADDR6])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "no UDP answer over IPv6: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("pong {UPLINK_ADDR6} 5353"));

    // Removing the container removes both families' mappings.
    host.dp_ok(&["rm", "-f", "web"]);
    assert!(!host.fetch_from_outside(&format!("[{UPLINK_ADDR6}]"), 8080));
}

#[test]
fn xdp_on_the_uplink_serves_ports_published_on_ipv6() {
    let host = Host::start_with_ipv6_uplink_and(&[("DATAPLANE_XDP", "on")]);
    host.create_dual_stack_network("v6pub", "10.44.0.0/24", "fd00:44::/64");
    // A veth peer leaves checksums to the device (CHECKSUM_PARTIAL), which only tc can
    // finish, unless its checksum offload is off (frames from a NIC carry complete ones).
    host.external_sh_ok("ethtool -K eth0 tx off >/dev/null");
    web(&host, "web", &["-p", "[::]:8080:80"]);
    let (xdp, tc) = (host.counter("published_xdp"), host.counter("published"));
    assert!(host.fetch_from_outside(&format!("[{UPLINK_ADDR6}]"), 8080), "unreachable over IPv6 through XDP");
    // A connection: SYN, ACK, request, ACKs, FIN: each of the client's packets in XDP.
    assert!(host.counter("published_xdp") >= xdp + 4, "XDP did not serve the port published on IPv6");
    assert_eq!(host.counter("published"), tc, "tc served what XDP should have");
    assert!(
        eventually(Duration::from_secs(3), || host.container_log("web").contains(EXTERNAL_ADDR6)),
        "the container did not see the client's IPv6 address: {}",
        host.container_log("web")
    );

    // UDP: the datagram goes in through XDP, the answer comes from the published address.
    udp_echo(&host, "echo", "[::]:5353:53/udp");
    let xdp = host.counter("published_xdp");
    let out = host
        .external_command("python3")
        .args(["-c", UDP6_CLIENT, UPLINK_ADDR6])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "no UDP answer over IPv6: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("pong {UPLINK_ADDR6} 5353"));
    assert_eq!(host.counter("published_xdp"), xdp + 1, "the datagram did not go through XDP");
}

#[test]
fn containers_and_the_host_reach_ports_published_on_ipv6_and_loopback6_is_the_hosts_alone() {
    let host = dual_stack_host();
    web(&host, "web", &["-p", "[::]:8080:80"]);
    web(&host, "local", &["-p", "[::1]:8090:80"]);
    assert_eq!(host.dp_ok(&["port", "web"]).trim(), "80/tcp -> [::]:8080", "[::] is IPv6 only");
    assert!(!host.fetch_from_outside(UPLINK_ADDR, 8080), "a port published on [::] took IPv4");
    assert!(host.fetch_from_outside(&format!("[{UPLINK_ADDR6}]"), 8080));
    // Published on ::1 only: never from the uplink.
    assert!(!host.fetch_from_outside(&format!("[{UPLINK_ADDR6}]"), 8090), "[::1]:8090 reached from outside");

    // Hairpin: a container of the network, through the uplink's IPv6 address.
    host.run_sleeper("client", &["--network", "v6pub"]);
    let fetch = host.exec("client", &format!("curl -6 -sf -m 3 -o /dev/null http://[{UPLINK_ADDR6}]:8080/"));
    assert!(fetch.status.success(), "a container could not reach the published port over IPv6");
    let client6 =
        host.dp_json(&["inspect", "client"])[0]["NetworkSettings"]["Networks"]["v6pub"]["GlobalIPv6Address"]
            .as_str()
            .unwrap()
            .to_string();
    assert!(
        eventually(Duration::from_secs(3), || host.container_log("web").contains(&client6)),
        "web did not see the client container's address {client6}: {}",
        host.container_log("web")
    );

    // The host: loopback and its own addresses.
    for url in [
        "http://[::1]:8080/".to_string(),
        format!("http://[{UPLINK_ADDR6}]:8080/"),
        "http://[::1]:8090/".to_string(),
    ] {
        let out = host.sh_in_cgroup(&format!("curl -6 -sf -m 3 -o /dev/null {url}"));
        assert!(
            out.status.success(),
            "the host cannot fetch {url}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // UDP from the host: the reply shows the published address it sent to.
    udp_echo(&host, "echo", "[::]:5353:53/udp");
    let out = host.sh_in_cgroup(&format!("python3 -c \"{UDP6_CLIENT}\" ::1"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "pong ::1 5353");
}

#[test]
fn the_firewall_applies_to_ipv6_and_ipv4_only_networks_publish_ipv4_only() {
    let host = dual_stack_host();
    web(&host, "web", &["-p", "8080:80"]);
    let v6 = format!("[{UPLINK_ADDR6}]");
    assert!(host.fetch_from_outside(&v6, 8080));
    let id = host.dp_ok(&["firewall", "add", "--port", "8080", "--proto", "tcp", "deny"]);
    assert!(!host.fetch_from_outside(&v6, 8080), "the firewall did not apply over IPv6");
    assert!(!host.fetch_from_outside(UPLINK_ADDR, 8080), "the firewall did not apply over IPv4");
    assert!(host.counter("dropped_firewall") > 0);
    host.dp_ok(&["firewall", "rm", id.trim()]);
    assert!(host.fetch_from_outside(&v6, 8080), "removing the rule did not reopen the port");

    // The default network has no IPv6: -p 8081:80 is IPv4 only there, as on Docker, and
    // an IPv6 address is refused with the fix.
    host.run_sleeper("v4only", &["-p", "8081:80"]);
    assert_eq!(host.dp_ok(&["port", "v4only"]).trim(), "80/tcp -> 0.0.0.0:8081");
    let err = host.dp_err(&["run", "-d", "-p", "[::]:8082:80", "--", "sleep", "60"]);
    assert!(err.contains("no IPv6") && err.contains("--ipv6"), "{err}");
}

/// The daemon's open descriptors.
fn descriptors(host: &Host) -> usize {
    let pid = host.daemon_pid().expect("the daemon runs");
    std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count()
}

/// Whether a host process can bind TCP `port` on `ip` (a bracketed IPv6 `ip` for
/// python's AF_INET6); `[::]` IPv6 alone.
fn host_binds(host: &Host, ip: &str, port: u16) -> bool {
    let (family, ip) = match ip.strip_prefix('[').and_then(|ip| ip.strip_suffix(']')) {
        Some(ip6) => ("socket.AF_INET6", ip6),
        None => ("socket.AF_INET", ip),
    };
    let script = format!(
        "import socket; s = socket.socket({family}); \
         {family} == socket.AF_INET6 and s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1); \
         s.bind(('{ip}', {port}))"
    );
    host.command("python3").args(["-c", &script]).stdin(Stdio::null()).status().unwrap().success()
}

/// `-p PORT` on a dual-stack network holds each host port for both families with one
/// socket (`[::]`, IPV6_V6ONLY off): 200 ports cost the daemon about 200 descriptors, not
/// 400. Both families are served, from outside and from the host. A host process holding
/// either family's port refuses the port, and so does a container's on either loopback;
/// a restart holds the ports the same way, and still publishes the family a host process
/// did not take while the daemon was away.
#[test]
fn a_port_published_on_both_families_is_held_by_one_descriptor() {
    let mut host = dual_stack_host();
    let before = descriptors(&host);
    host.run_sleeper("many", &["--network", "v6pub", "-p", "20000-20199:20000-20199"]);
    let grown = descriptors(&host) - before;
    assert!((190..260).contains(&grown), "200 ports on both families took {grown} more descriptors");
    assert_eq!(host.map_entries("PUBLISHED"), 400, "each port is published on both families");
    for ip in ["0.0.0.0", "[::]", "127.0.0.1", "[::1]", UPLINK_ADDR, &format!("[{UPLINK_ADDR6}]")] {
        assert!(!host_binds(&host, ip, 20150), "a host process took {ip}:20150, published on both families");
    }

    web(&host, "web", &["-p", "8080:80"]);
    for url in [format!("-4 http://{UPLINK_ADDR}:8080/"), format!("-6 http://[{UPLINK_ADDR6}]:8080/")] {
        let out = host.external_sh_ok(&format!("curl -sf -m 3 -o /dev/null -w '%{{http_code}}' {url}"));
        assert_eq!(out, "200", "from outside: curl {url}");
    }
    for url in [
        "-4 http://127.0.0.1:8080/".to_string(),
        format!("-4 http://{UPLINK_ADDR}:8080/"),
        "-6 http://[::1]:8080/".to_string(),
        format!("-6 http://[{UPLINK_ADDR6}]:8080/"),
    ] {
        let out = host.sh_in_cgroup(&format!("curl -sf -m 3 -o /dev/null {url}"));
        assert!(out.status.success(), "the host: curl {url}: {}", String::from_utf8_lossy(&out.stderr));
    }

    // Conflicts, on each family: a container's loopback port, and host processes.
    for taken in ["127.0.0.1:8080:80", "[::1]:8080:80", "0.0.0.0:8080:80", "[::]:8080:80"] {
        let err = host.dp_err(&["run", "-d", "--network", "v6pub", "-p", taken, "--", "sleep", "60"]);
        assert!(err.contains("8080/tcp is already in use"), "-p {taken}: {err}");
    }
    let ipv4_holder = host.host_listener("s = socket.socket(); s.bind(('0.0.0.0', 9100))", 9100);
    let ipv6_holder = host.host_listener(
        "s = socket.socket(socket.AF_INET6); s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1); \
         s.bind(('::', 9101))",
        9101,
    );
    for port in [9100, 9101] {
        let publish = format!("{port}:80");
        let err = host.dp_err(&["run", "-d", "--network", "v6pub", "-p", &publish, "--", "sleep", "60"]);
        assert!(
            err.contains(&format!("host port {port}/tcp is already in use on 0.0.0.0 or [::]")),
            "-p {publish} with one family's port held by a host process: {err}"
        );
    }
    drop((ipv4_holder, ipv6_holder));

    // A restart: a host process takes [::]:8080 while the daemon is away; 0.0.0.0:8080 is
    // held and served still, and the 200 ports are held for both families again.
    let running = descriptors(&host);
    host.stop_daemon();
    let ipv6_holder = host.host_listener(
        "s = socket.socket(socket.AF_INET6); s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1); \
         s.bind(('::', 8080))",
        8080,
    );
    host.start_daemon();
    let log = host.daemon_log();
    assert!(log.contains("80/tcp -> [::]:8080 not restored"), "{log}");
    assert!(!log.contains("0.0.0.0:8080 not restored") && !log.contains(":20150 not restored"), "{log}");
    assert!(host.fetch_from_outside(UPLINK_ADDR, 8080), "IPv4 was not published again after the restart");
    assert!(!host_binds(&host, "0.0.0.0", 8080), "0.0.0.0:8080 is not held after the restart");
    assert!(!host_binds(&host, "0.0.0.0", 20150) && !host_binds(&host, "[::]", 20150));
    let restarted = descriptors(&host);
    assert!(
        restarted < running + 30,
        "the restart held the ports with {restarted} descriptors, against {running} before it"
    );
    drop(ipv6_holder);
}

/// Whether the external namespace fetches the port published on 8080 of the uplink's
/// IPv6 address from its address `source`.
fn fetch6_from(host: &Host, source: &str) -> bool {
    let url = format!("http://[{UPLINK_ADDR6}]:8080/");
    host.external_command("curl")
        .args(["-6", "-sf", "-m", "3", "-o", "/dev/null", "--interface", source, &url])
        .stdin(Stdio::null())
        .status()
        .unwrap()
        .success()
}

/// `firewall add --source` takes IPv6 prefixes, which apply to IPv6 clients alone, as
/// IPv4 ones apply to IPv4 clients alone; both survive a restart.
#[test]
fn firewall_rules_with_an_ipv6_source_refuse_those_clients_alone() {
    let mut host = dual_stack_host();
    // A second external address, deprecated so that it is never chosen unasked.
    let refused = "2001:db8:71::3";
    host.external_sh_ok(&format!("ip addr add {refused}/64 dev eth0 nodad preferred_lft 0"));
    web(&host, "web", &["-p", "8080:80"]);
    assert!(
        fetch6_from(&host, refused) && fetch6_from(&host, EXTERNAL_ADDR6),
        "the published port is unreachable before any rule"
    );

    host.dp_ok(&["firewall", "add", "--source", refused, "--port", "8080", "deny"]);
    assert!(!fetch6_from(&host, refused), "the IPv6 source's deny did not apply");
    assert!(fetch6_from(&host, EXTERNAL_ADDR6), "an IPv6 client outside the rule's source was refused");
    assert!(host.fetch_from_outside(UPLINK_ADDR, 8080), "an IPv6 source's rule refused an IPv4 client");
    assert!(host.counter("dropped_firewall") > 0);
    let listed = host.dp_json(&["firewall", "ls", "--format", "json"]);
    assert_eq!(listed[0]["source"], format!("{refused}/128"), "{listed}");
    assert!(listed[0]["hits"].as_u64().unwrap() > 0, "the rule's hits were not counted: {listed}");

    // An IPv4 catch-all refuses IPv4 clients and no IPv6 one.
    host.dp_ok(&["firewall", "add", "--source", "0.0.0.0/0", "--port", "8080", "deny"]);
    assert!(!host.fetch_from_outside(UPLINK_ADDR, 8080), "the IPv4 catch-all did not apply");
    assert!(fetch6_from(&host, EXTERNAL_ADDR6), "an IPv4 source's rule refused an IPv6 client");

    host.stop_daemon();
    host.start_daemon();
    assert!(!fetch6_from(&host, refused), "the IPv6 rule did not survive a restart");
    assert!(fetch6_from(&host, EXTERNAL_ADDR6), "an IPv6 client was refused after a restart");
    assert!(!host.fetch_from_outside(UPLINK_ADDR, 8080), "the IPv4 rule did not survive a restart");
}
