//! Docker's network modes: `--network host`, `none` and `container:NAME`.

use dataplane_tests::{Host, namespace_inode, namespace_pids, processes_in_namespace, stdout_of as stdout};

/// The host PID of a container's PID 1, and the inode of its PID namespace.
fn pid1(host: &Host, container: &str) -> (u64, u64) {
    let pid = host.dp_json(&["inspect", container])[0]["State"]["Pid"].as_u64().unwrap();
    assert_eq!(namespace_pids(pid), [pid.to_string(), "1".into()], "{container}'s command is a PID 1");
    (pid, namespace_inode(format!("/proc/{pid}/ns/pid")))
}

#[test]
fn none_has_only_loopback() {
    let host = Host::start();
    let links = stdout(host.dp(&["run", "--rm", "--network", "none", "--", "ip", "-o", "link"]));
    let names: Vec<_> = links.lines().filter_map(|l| l.split(": ").nth(1)).collect();
    assert_eq!(names, ["lo"], "{links}");
    assert!(links.contains("UP"), "lo is up: {links}");
    assert!(host.container_namespaces().is_empty(), "--rm removed its namespace");
    host.run_sleeper("alone", &["--network", "none"]);
    assert_eq!(host.dp_json(&["inspect", "alone"])[0]["HostConfig"]["NetworkMode"], "none");
    host.dp_ok(&["rm", "-f", "alone"]);
    assert!(host.container_namespaces().is_empty());
}

#[test]
fn host_mode_runs_in_the_host_namespace() {
    let host = Host::start();
    let links = stdout(host.dp(&["run", "--rm", "--network", "host", "--", "ip", "-o", "link"]));
    assert!(links.contains("dp0"), "the host's bridge is visible: {links}");
    assert!(!host.links().iter().any(|l| l.starts_with("veth")), "no veth for host mode");
    // Its own PID namespace all the same, which ends with it.
    host.dp_ok(&[
        "run",
        "-d",
        "--name",
        "h",
        "--network",
        "host",
        "--",
        "sh",
        "-c",
        "sleep 1000 & exec sleep 1001",
    ]);
    let (_, pid_ns) = pid1(&host, "h");
    assert_ne!(pid_ns, namespace_inode("/proc/self/ns/pid"), "host mode shares the host's PIDs");
    host.dp_ok(&["rm", "-f", "h"]);
    let left = processes_in_namespace("pid", pid_ns);
    assert!(left.is_empty(), "rm -f left processes of a host-mode container: {left:?}");
    // The host namespace survives its containers.
    assert!(host.sh("ip link show dp0").status.success());
    let err = host.dp_err(&["run", "--network", "host", "--ip", "10.0.0.9", "--", "true"]);
    assert!(err.contains("conflicting options"), "{err}");
}

#[test]
fn container_mode_shares_the_other_containers_namespace() {
    let host = Host::start();
    host.run_sleeper("base", &[]);
    let addr = stdout(host.dp(&[
        "run",
        "--rm",
        "--network",
        "container:base",
        "--",
        "ip",
        "-4",
        "-o",
        "addr",
        "show",
        "eth0",
    ]));
    assert!(addr.contains("172.17.0.2/16"), "{addr}");
    host.run_sleeper("side", &["--network", "container:base"]);
    assert_eq!(host.links().iter().filter(|l| l.starts_with("veth")).count(), 1, "no new veth");
    // The network is shared, the PIDs are not (as Docker without --pid).
    assert_ne!(pid1(&host, "side").1, pid1(&host, "base").1, "side shares base's PID namespace");
    let err = host.dp_err(&["rm", "-f", "base"]);
    assert!(err.contains("shares its network namespace with side"), "{err}");
    host.dp_ok(&["rm", "-f", "side"]);
    host.dp_ok(&["rm", "-f", "base"]);
    assert!(host.container_namespaces().is_empty());
    let err = host.dp_err(&["run", "--network", "container:nope", "--", "true"]);
    assert!(err.contains("no such container"), "{err}");
}

#[test]
fn connect_and_disconnect_a_running_container_without_disturbing_its_other_traffic() {
    let host = Host::start();
    host.dp_ok(&["network", "create", "--subnet", "10.95.0.0/24", "back"]);
    host.run_sleeper("a", &[]);
    host.run_sleeper("peer", &[]);
    host.run_sleeper("b", &["--network", "back"]);
    let (b, peer) = (host.ip_of("b"), host.ip_of("peer"));
    assert!(!host.ping("a", &b), "a reached another network before being connected to it");
    // A steady ping on eth0 while eth1 comes and goes.
    let pinger = host
        .command(dataplane_tests::binary())
        .args(["exec", "a", "--", "ping", "-c", "40", "-i", "0.05", &peer])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    host.dp_ok(&["network", "connect", "back", "a"]);
    let networks = &host.dp_json(&["inspect", "a"])[0]["NetworkSettings"]["Networks"];
    assert_eq!(networks["back"]["IPAddress"], "10.95.0.3");
    assert!(host.ping("a", &b), "a cannot reach b after network connect");
    let eth1 = stdout(host.exec("a", "ip -o -4 addr show eth1"));
    assert!(eth1.contains("10.95.0.3/24"), "{eth1}");
    let err = host.dp_err(&["network", "connect", "back", "a"]);
    assert!(err.contains("already connected"), "{err}");
    host.dp_ok(&["network", "disconnect", "back", "a"]);
    assert!(!host.ping("a", &b), "a still reaches b after network disconnect");
    assert!(!host.exec("a", "ip link show eth1").status.success(), "eth1 is still there");
    // The bridge keeps its MAC when a port goes, so b's ARP entry for the gateway holds.
    assert!(host.ping("b", "10.95.0.1"), "b lost its gateway when a left the network");
    let out = pinger.wait_with_output().unwrap();
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(summary.contains(" 0% packet loss"), "traffic on eth0 was disturbed:\n{summary}");
    assert_eq!(host.map_entries("ENDPOINTS"), 3);
    let err = host.dp_err(&["network", "disconnect", "back", "a"]);
    assert!(err.contains("not connected"), "{err}");
    host.run_sleeper("h", &["--network", "host"]);
    let err = host.dp_err(&["network", "connect", "back", "h"]);
    assert!(err.contains("cannot join networks"), "{err}");
}

#[test]
fn macvlan_containers_talk_to_the_parents_segment_directly() {
    use dataplane_tests::EXTERNAL_ADDR;
    let host = Host::start_with_external();
    // up0's segment (203.0.113.0/24) is the "LAN"; the external namespace is a host on it.
    host.dp_ok(&[
        "network",
        "create",
        "-d",
        "macvlan",
        "--subnet",
        "203.0.113.0/24",
        "--gateway",
        EXTERNAL_ADDR,
        "--ip-range",
        "203.0.113.128/25",
        "-o",
        "parent=up0",
        "lan",
    ]);
    host.run_sleeper("m1", &["--network", "lan"]);
    host.run_sleeper("m2", &["--network", "lan"]);
    let m1 = host.ip_of("m1");
    assert_eq!(m1, "203.0.113.128");
    let link = stdout(host.exec("m1", "ip -d -o link show eth0"));
    assert!(link.contains("macvlan"), "{link}");
    assert!(host.ping("m1", EXTERNAL_ADDR), "a macvlan container cannot reach a host of its segment");
    assert!(host.ping("m1", &host.ip_of("m2")), "macvlan containers cannot reach each other");
    let back = host.external_command("ping").args(["-c1", "-W1", &m1]).output().unwrap();
    assert!(back.status.success(), "the segment cannot reach the container's own address");
    assert!(!host.links().iter().any(|l| l.starts_with("veth")), "macvlan needs no veth");
    let ipv6 = stdout(host.exec("m1", "ip -6 addr show dev eth0"));
    assert!(ipv6.trim().is_empty(), "IPv6 on a network without it (SLAAC from the segment?): {ipv6}");
    // Bad input, and removal leaves nothing.
    let err = host.dp_err(&["network", "create", "-d", "macvlan", "--subnet", "10.98.0.0/24", "nolink"]);
    assert!(err.contains("parent"), "{err}");
    let err = host.dp_err(&[
        "network",
        "create",
        "-d",
        "macvlan",
        "--subnet",
        "10.98.0.0/24",
        "-o",
        "parent=nope",
        "x",
    ]);
    assert!(err.contains("does not exist"), "{err}");
    let err = host.dp_err(&["run", "--network", "lan", "-p", "8080:80", "--", "true"]);
    assert!(err.contains("bridge network"), "{err}");
    host.dp_ok(&["rm", "-f", "m1", "m2"]);
    host.dp_ok(&["network", "rm", "lan"]);
    assert!(host.container_namespaces().is_empty());
}

/// A macvlan network with `--ipv6` and the segment's IPv6 subnet: its containers have an
/// IPv6 address of the segment, reach its hosts and each other over IPv6, and take no
/// addresses or routes of their own from the segment.
#[test]
fn macvlan_containers_with_ipv6_talk_to_the_parents_segment_over_ipv6() {
    let host = Host::start_with_external();
    // The external namespace is a host of up0's segment, on fd00:203::/64 too.
    host.external_sh_ok("ip -6 addr add fd00:203::2/64 dev eth0 nodad");
    let macvlan = ["network", "create", "-d", "macvlan", "-o", "parent=up0", "--ipv6"];
    let err = host.dp_err(&[&macvlan[..], &["--subnet", "203.0.113.0/24", "nosubnet6"]].concat());
    assert!(err.contains("IPv6 --subnet") && err.contains("segment"), "a ULA pool for a segment: {err}");
    let subnets =
        ["--subnet", "203.0.113.0/24", "--ip-range", "203.0.113.128/25", "--gateway", "203.0.113.2"];
    let subnets6 =
        ["--subnet", "fd00:203::/64", "--gateway", "fd00:203::2", "--ip-range", "fd00:203::100/120"];
    host.dp_ok(&[&macvlan[..], &subnets, &subnets6, &["lan6"]].concat());
    host.run_sleeper("m1", &["--network", "lan6"]);
    host.run_sleeper("m2", &["--network", "lan6"]);
    let inside = stdout(host.exec("m1", "ip -6 addr show dev eth0; ip -6 route show default"));
    assert!(
        inside.contains("inet6 fd00:203::100/64") && inside.contains("default via fd00:203::2"),
        "m1 has not its IPv6 address and default route: {inside}"
    );
    // The link-local address neighbour discovery needs, the one the daemon gave it from its
    // MAC, and nothing the segment's routers could have made it take (SLAAC).
    let mac = host.dp_json(&["inspect", "m1"])[0]["NetworkSettings"]["Networks"]["lan6"]["MacAddress"]
        .as_str()
        .unwrap()
        .to_string();
    let mac: Vec<u8> = mac.split(':').map(|b| u8::from_str_radix(b, 16).unwrap()).collect();
    let link_local = std::net::Ipv6Addr::from(dataplane_common::eui64_link_local(mac.try_into().unwrap()));
    assert!(
        inside.contains(&format!("inet6 {link_local}/64")),
        "m1 has not its link-local address: {inside}"
    );
    assert_eq!(inside.matches("inet6 ").count(), 2, "m1 took an address of its own: {inside}");
    for target in ["fd00:203::2", "fd00:203::101"] {
        assert!(
            host.exec("m1", &format!("ping -6 -c 1 -W 2 {target}")).status.success(),
            "m1 does not reach {target} over IPv6"
        );
    }
    let back = host.external_command("ping").args(["-6", "-c1", "-W1", "fd00:203::100"]).output().unwrap();
    assert!(back.status.success(), "the segment cannot reach m1's IPv6 address");
    host.dp_ok(&["rm", "-f", "m1", "m2"]);
    host.dp_ok(&["network", "rm", "lan6"]);
}

/// An IPv6-only macvlan network (`--ipv6 --ipv4=false`): its containers have the
/// segment's IPv6 addresses and no IPv4 one, and reach each other and a host of the
/// parent's segment over IPv6, which reaches them back.
#[test]
fn ipv6_only_macvlan_containers_talk_to_the_parents_segment_over_ipv6() {
    let host = Host::start_with_external();
    host.external_sh_ok("ip -6 addr add fd00:204::2/64 dev eth0 nodad");
    let create = [
        "network",
        "create",
        "-d",
        "macvlan",
        "-o",
        "parent=up0",
        "--ipv6",
        "--ipv4=false",
        "--subnet",
        "fd00:204::/64",
        "--gateway",
        "fd00:204::2",
        "--ip-range",
        "fd00:204::100/120",
        "lan6only",
    ];
    host.dp_ok(&create);
    host.run_sleeper("m1", &["--network", "lan6only"]);
    host.run_sleeper("m2", &["--network", "lan6only"]);
    let inside = stdout(host.exec("m1", "ip addr show dev eth0; ip -6 route show default"));
    assert!(
        inside.contains("inet6 fd00:204::100/64") && inside.contains("default via fd00:204::2"),
        "m1 has not its IPv6 address and default route: {inside}"
    );
    assert!(!inside.contains("inet "), "an IPv6-only container has an IPv4 address: {inside}");
    for target in ["fd00:204::2", "fd00:204::101"] {
        assert!(
            host.exec("m1", &format!("ping -6 -c 1 -W 2 {target}")).status.success(),
            "m1 does not reach {target} over IPv6"
        );
    }
    let back = host.external_command("ping").args(["-6", "-c1", "-W1", "fd00:204::101"]).output().unwrap();
    assert!(back.status.success(), "the segment cannot reach m2's IPv6 address");
    let err = host.dp_err(&[
        "network",
        "create",
        "-d",
        "macvlan",
        "-o",
        "parent=up0",
        "--ipv6",
        "--ipv4=false",
        "nosubnet6",
    ]);
    assert!(
        err.contains("IPv6 --subnet"),
        "an IPv6-only macvlan network without the segment's subnet: {err}"
    );
    host.dp_ok(&["rm", "-f", "m1", "m2"]);
    host.dp_ok(&["network", "rm", "lan6only"]);
    assert!(host.container_namespaces().is_empty());
}
