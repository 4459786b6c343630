//! Ports published over IPv6 (`-p [::]:8080:80`, `-p [::1]:8090:80`, and `-p 8080:80` on
//! both families of a dual-stack network), with real tools: from an external namespace
//! through the uplink's IPv6 address, from a container (hairpin), from the host (`::1` and
//! its addresses); a port published on `::1` is the host's alone; the firewall applies.

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
