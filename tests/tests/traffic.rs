//! Traffic between containers, the host and networks, through the eBPF fast path.

use std::time::Duration;

use dataplane_tests::{Host, eventually};

/// Starts an HTTP server in a container and waits until it answers locally.
fn serve_http(host: &Host, name: &str, extra: &[&str]) {
    let mut args = vec!["run", "-d", "--name", name];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--", "python3", "-m", "http.server", "80"]);
    host.dp_ok(&args);
    assert!(
        eventually(Duration::from_secs(10), || host
            .exec(name, "curl -sf -o /dev/null http://127.0.0.1/")
            .status
            .success()),
        "http server in {name} did not come up"
    );
}

fn fetch(host: &Host, from: &str, ip: &str) -> bool {
    host.exec(from, &format!("curl -sf -m 3 -o /dev/null http://{ip}/")).status.success()
}

#[test]
fn containers_reach_each_other_over_icmp_and_tcp_through_ebpf() {
    let host = Host::start();
    serve_http(&host, "a", &[]);
    serve_http(&host, "b", &[]);
    let (a, b) = (host.ip_of("a"), host.ip_of("b"));
    let forwarded = host.counter("forwarded");
    assert!(host.ping("a", &b), "a cannot ping b");
    assert!(host.ping("b", &a), "b cannot ping a");
    assert!(fetch(&host, "a", &b), "a cannot fetch from b");
    assert!(fetch(&host, "b", &a), "b cannot fetch from a");
    // Both directions of every exchange went through the redirect, not the bridge.
    assert!(host.counter("forwarded") >= forwarded + 4 + 10);
    // Containers reach the gateway, and the host reaches the containers.
    assert!(host.ping("a", "172.17.0.1"));
    assert!(host.sh(&format!("ping -c1 -W1 {a}")).status.success());
    assert!(host.sh(&format!("curl -sf -m 3 -o /dev/null http://{b}/")).status.success());
    // And no firewall rule was needed for any of it.
    assert_eq!(host.sh_ok("iptables-save | grep -v '^#' || true").trim(), "");
    assert_eq!(host.sh_ok("nft list ruleset").trim(), "");
}

#[test]
fn networks_are_isolated_from_each_other() {
    let host = Host::start();
    host.dp_ok(&["network", "create", "--subnet", "10.80.0.0/24", "red"]);
    host.dp_ok(&["network", "create", "--subnet", "10.81.0.0/24", "blue"]);
    host.run_sleeper("r1", &["--network", "red"]);
    host.run_sleeper("r2", &["--network", "red"]);
    host.run_sleeper("b1", &["--network", "blue"]);
    let dropped = host.counter("dropped_isolation");
    assert!(host.ping("r1", &host.ip_of("r2")), "same network must work");
    assert!(!host.ping("r1", &host.ip_of("b1")), "red reached blue");
    assert!(!host.ping("b1", &host.ip_of("r1")), "blue reached red");
    assert!(host.counter("dropped_isolation") >= dropped + 2);
    // The other network's gateway is a host address, reachable as on Docker.
    assert!(host.ping("b1", "10.80.0.1"));
}

/// A network without IPv6 gives its containers no IPv6 address, and one they give
/// themselves is not theirs to send from: the programs drop it (`dropped_spoofed_ipv6`),
/// as they drop an IPv4 address a container adds to itself. IPv6 between containers is
/// for networks made with `--ipv6` (tests/ipv6.rs).
#[test]
fn ipv6_a_container_turns_on_by_itself_does_not_leave_it() {
    let host = Host::start();
    host.dp_ok(&["network", "create", "--subnet", "10.83.0.0/24", "open"]);
    for (name, addr) in [("v1", "fd00:83::1"), ("v2", "fd00:83::2")] {
        host.run_sleeper(name, &["--network", "open"]);
        let script = format!(
            "echo 0 > /proc/sys/net/ipv6/conf/eth0/disable_ipv6 && ip -6 addr add {addr}/64 dev eth0 nodad"
        );
        assert!(host.exec(name, &script).status.success(), "IPv6 could not be turned on in {name}");
    }
    let dropped = host.counter("dropped_spoofed_ipv6");
    assert!(
        !host.exec("v1", "ping -6 -c1 -W2 fd00:83::2").status.success(),
        "IPv6 from an address the network never gave crossed it"
    );
    assert!(host.counter("dropped_spoofed_ipv6") > dropped, "the programs did not drop it");
    assert!(host.ping("v1", "10.83.0.3"), "IPv4 between the two stopped working");
}

#[test]
fn icc_false_keeps_containers_of_a_network_apart() {
    let host = Host::start();
    host.dp_ok(&["network", "create", "--subnet", "10.82.0.0/24", "--opt", "icc=false", "quiet"]);
    host.run_sleeper("q1", &["--network", "quiet"]);
    host.run_sleeper("q2", &["--network", "quiet"]);
    let q2 = host.ip_of("q2");
    // ARP between isolated bridge ports fails, so nothing even tries...
    assert!(!host.ping("q1", &q2));
    // ...and with the neighbour known anyway, the programs drop the packets.
    let mac =
        host.dp_json(&["inspect", "q2"])[0]["NetworkSettings"]["Networks"]["quiet"]["MacAddress"].clone();
    host.exec("q1", &format!("ip neigh replace {q2} lladdr {} dev eth0", mac.as_str().unwrap()));
    let dropped = host.counter("dropped_icc");
    assert!(!host.ping("q1", &q2));
    assert!(host.counter("dropped_icc") > dropped);
    // What the programs leave to the bridge cannot cross either: here IPv6, which the
    // containers turn on themselves (the network has none).
    for (name, addr) in [("q1", "fd00:82::1"), ("q2", "fd00:82::2")] {
        let script = format!(
            "echo 0 > /proc/sys/net/ipv6/conf/eth0/disable_ipv6 && ip -6 addr add {addr}/64 dev eth0 nodad"
        );
        assert!(host.exec(name, &script).status.success(), "IPv6 could not be turned on in {name}");
    }
    assert!(
        !host.exec("q1", "ping -6 -c1 -W1 fd00:82::2").status.success(),
        "IPv6 crossed an icc=false network"
    );
    assert!(host.ping("q1", "10.82.0.1"), "the gateway stays reachable");
    assert!(host.sh(&format!("ping -c1 -W1 {}", host.ip_of("q2"))).status.success());
}
