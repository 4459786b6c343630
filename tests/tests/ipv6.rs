//! IPv6 dual-stack networks as a user sees them: `network create --ipv6`, containers with
//! an IPv6 address, a default route via the gateway and `::1` on `lo`, traffic between
//! them with real tools (`ping -6`, `curl -6`, `dig AAAA`, also of the resolver on the
//! gateway's IPv6 address), isolation between IPv6
//! networks, the inspect fields, and all of it again after a restart of the daemon.

use std::time::Duration;

use dataplane_tests::{Host, eventually};
use serde_json::Value;

/// The first network's entry of a container's `inspect`.
fn endpoint_of(host: &Host, container: &str) -> Value {
    let info = host.dp_json(&["inspect", container]);
    info[0]["NetworkSettings"]["Networks"].as_object().unwrap().values().next().unwrap().clone()
}

fn ipv6_of(host: &Host, container: &str) -> String {
    endpoint_of(host, container)["GlobalIPv6Address"].as_str().unwrap().to_string()
}

fn ping6(host: &Host, from: &str, to: &str) -> bool {
    host.exec(from, &format!("ping -6 -c 1 -W 2 {to}")).status.success()
}

fn exec_ok(host: &Host, container: &str, script: &str) -> String {
    let out = host.exec(container, script);
    assert!(out.status.success(), "{script} in {container}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn a_dual_stack_network_carries_ipv6_and_ipv4_between_its_containers() {
    let mut host = Host::start();
    host.dp_ok(&[
        "network",
        "create",
        "--ipv6",
        "--subnet",
        "10.97.0.0/24",
        "--subnet",
        "fd00:97::/64",
        "dual",
    ]);
    let net = &host.dp_json(&["network", "inspect", "dual"])[0];
    assert_eq!((net["EnableIPv4"].as_bool(), net["EnableIPv6"].as_bool()), (Some(true), Some(true)));
    let configs = net["IPAM"]["Config"].as_array().unwrap();
    assert_eq!(configs.len(), 2, "one IPAM config per family: {configs:?}");
    assert_eq!(
        (configs[0]["Subnet"].as_str(), configs[0]["Gateway"].as_str()),
        (Some("10.97.0.0/24"), Some("10.97.0.1"))
    );
    assert_eq!(
        (configs[1]["Subnet"].as_str(), configs[1]["Gateway"].as_str()),
        (Some("fd00:97::/64"), Some("fd00:97::1"))
    );

    host.run_sleeper("a", &["--network", "dual"]);
    host.run_sleeper("b", &["--network", "dual"]);
    host.dp_ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "--network",
        "dual",
        "--",
        "python3",
        "-m",
        "http.server",
        "80",
        "--bind",
        "::",
    ]);
    let a = endpoint_of(&host, "a");
    assert_eq!(a["GlobalIPv6Address"], "fd00:97::2", "addresses follow the gateway, as IPv4's: {a}");
    assert_eq!(
        (a["GlobalIPv6PrefixLen"].as_u64(), a["IPv6Gateway"].as_str()),
        (Some(64), Some("fd00:97::1"))
    );
    assert_eq!(ipv6_of(&host, "b"), "fd00:97::3");
    assert_eq!(ipv6_of(&host, "web"), "fd00:97::4");
    let listed = &host.dp_json(&["network", "inspect", "dual"])[0]["Containers"];
    let shown: Vec<_> =
        listed.as_object().unwrap().values().map(|c| c["IPv6Address"].as_str().unwrap()).collect();
    assert!(shown.contains(&"fd00:97::2/64"), "network inspect lists the IPv6 addresses: {shown:?}");

    // Inside: the address, the default route via the gateway, ::1 on lo.
    let inside = exec_ok(
        &host,
        "a",
        "ip -6 -o addr show dev eth0; ip -6 route show default; ip -6 -o addr show dev lo",
    );
    assert!(inside.contains("fd00:97::2/64"), "{inside}");
    assert!(inside.contains("default via fd00:97::1 dev eth0"), "{inside}");
    assert!(inside.contains("::1/128"), "{inside}");

    let forwarded = host.counter("forwarded");
    assert!(ping6(&host, "a", "fd00:97::3"), "ping -6 between containers failed");
    assert!(host.counter("forwarded") > forwarded, "the programs did not carry the IPv6 between containers");
    assert!(ping6(&host, "a", "fd00:97::1"), "ping -6 to the gateway failed");
    assert!(host.ping("a", "10.97.0.3"), "IPv4 stopped working on the dual-stack network");

    let served = eventually(Duration::from_secs(10), || {
        host.exec("a", "curl -6 -sf -m 2 -g http://[fd00:97::4]:80/ -o /dev/null").status.success()
    });
    assert!(served, "curl -6 to the web container failed");
    let aaaa = exec_ok(&host, "a", "dig +short +time=2 +tries=1 AAAA web");
    assert_eq!(aaaa.trim(), "fd00:97::4", "dig AAAA");
    let ptr = exec_ok(&host, "a", "dig +short +time=2 +tries=1 -x fd00:97::4");
    assert_eq!(ptr.trim(), "web.dual.", "dig -x of an IPv6 address");
    // The resolver answers on the gateway's IPv6 address too, over UDP and TCP, and to a
    // client that asks from its IPv6 address.
    for transport in ["", "+tcp"] {
        let asked =
            exec_ok(&host, "a", &format!("dig +short +time=2 +tries=1 {transport} @fd00:97::1 AAAA web"));
        assert_eq!(asked.trim(), "fd00:97::4", "dig {transport} @fd00:97::1 AAAA web");
    }

    // A restart restores the addresses and the map entries.
    host.stop_daemon();
    host.start_daemon();
    assert_eq!(ipv6_of(&host, "b"), "fd00:97::3", "the state lost the IPv6 address");
    let forwarded = host.counter("forwarded");
    assert!(ping6(&host, "b", "fd00:97::2"), "ping -6 failed after a restart");
    assert!(host.counter("forwarded") > forwarded, "the restart lost the IPv6 endpoints in the maps");
    host.run_sleeper("c", &["--network", "dual"]);
    assert_eq!(ipv6_of(&host, "c"), "fd00:97::5", "a restart handed out a taken address");
}

#[test]
fn ipv6_networks_take_ula_subnets_are_isolated_and_refuse_bad_plans_with_the_fix() {
    let host = Host::start();
    host.dp_ok(&["network", "create", "--ipv6", "blue"]);
    host.dp_ok(&["network", "create", "--ipv6", "green"]);
    let subnet6 = |name: &str| {
        let net = &host.dp_json(&["network", "inspect", name])[0];
        net["IPAM"]["Config"][1]["Subnet"].as_str().unwrap().to_string()
    };
    let (blue, green) = (subnet6("blue"), subnet6("green"));
    assert!(blue.starts_with("fd") && blue.ends_with("::/64"), "a /64 of the host's ULA pool: {blue}");
    assert_ne!(blue, green, "two networks got the same /64");
    assert_eq!(
        blue.split(':').take(3).collect::<Vec<_>>(),
        green.split(':').take(3).collect::<Vec<_>>(),
        "one /48 per host"
    );

    let prefix = blue.trim_end_matches("/64");
    let fixed = format!("{prefix}42");
    host.run_sleeper("x", &["--network", "blue", "--ip6", &fixed]);
    assert_eq!(ipv6_of(&host, "x"), fixed, "--ip6 was not honoured");
    host.run_sleeper("x2", &["--network", "blue"]);
    host.run_sleeper("y", &["--network", "green"]);
    let isolated = host.counter("dropped_isolation");
    assert!(!ping6(&host, "x", &ipv6_of(&host, "y")), "blue reached green over IPv6");
    assert!(host.counter("dropped_isolation") > isolated, "isolation was not the programs'");
    assert!(ping6(&host, "x", &ipv6_of(&host, "x2")), "ping -6 inside blue failed");

    // network connect --ip6: a second interface with the address asked for.
    let on_green = format!("{}77", green.trim_end_matches("/64"));
    host.dp_ok(&["network", "connect", "--ip6", &on_green, "green", "x2"]);
    assert!(exec_ok(&host, "x2", "ip -6 -o addr show dev eth1").contains(&on_green));
    assert!(ping6(&host, "y", &on_green), "the connected interface is unreachable over IPv6");

    let refused = |args: &[&str]| host.dp_err(&[&["network", "create"][..], args].concat());
    let overlap = refused(&["--ipv6", "--subnet", &blue, "again"]);
    assert!(
        overlap.contains("overlaps network \"blue\"") && overlap.contains("choose another --subnet"),
        "{overlap}"
    );
    let small = refused(&["--ipv6", "--subnet", "fd00:98::/121", "small"]);
    assert!(small.contains("/120 or shorter"), "{small}");
    let large = refused(&["--ipv6", "--subnet", "fd00::/47", "large"]);
    assert!(large.contains("/48 or longer"), "{large}");
    let outside = refused(&["--ipv6", "--subnet", "fd00:98::/64", "--gateway", "fd00:99::1", "outside"]);
    assert!(outside.contains("give a --gateway inside the subnet"), "{outside}");
    host.dp_ok(&["network", "create", "--subnet", "10.98.0.0/24", "four"]);
    let no_v6 = host.dp_err(&["run", "-d", "--network", "four", "--ip6", "fd00:98::5", "--", "sleep", "1"]);
    assert!(no_v6.contains("has no IPv6") && no_v6.contains("drop --ip6"), "{no_v6}");
}

/// A container on two IPv6 networks resolves the names of both through either resolver,
/// asking over IPv6 as over IPv4.
#[test]
fn a_container_on_two_ipv6_networks_resolves_the_names_of_both_over_ipv6() {
    let host = Host::start();
    for (name, v4, v6) in
        [("front", "10.95.0.0/24", "fd00:95::/64"), ("back", "10.96.0.0/24", "fd00:96::/64")]
    {
        host.dp_ok(&["network", "create", "--ipv6", "--subnet", v4, "--subnet", v6, name]);
    }
    host.run_sleeper("db", &["--network", "back"]);
    host.run_sleeper("app", &["--network", "front"]);
    host.dp_ok(&["network", "connect", "back", "app"]);
    for server in ["10.95.0.1", "fd00:95::1", "fd00:96::1"] {
        let asked = exec_ok(&host, "app", &format!("dig +short +time=2 +tries=1 @{server} AAAA db"));
        assert_eq!(asked.trim(), "fd00:96::2", "dig @{server} AAAA db from app");
    }
}

#[test]
fn a_container_keeps_its_ipv6_gateway_resolved_across_pauses_in_one_way_traffic() {
    let host = Host::start();
    host.dp_ok(&["network", "create", "--ipv6", "--subnet", "fd00:77::/64", "v6"]);
    host.run_sleeper("talker", &["--network", "v6"]);
    let link_local = exec_ok(&host, "talker", "ip -6 -o addr show dev eth0 scope link");
    assert!(link_local.contains("inet6 fe80::"), "no link-local address on eth0: {link_local}");
    // Neighbour timers of seconds, not minutes: reachable for ~0.5 s, probed 1 s after the
    // next use, every 200 ms.
    exec_ok(
        &host,
        "talker",
        "sysctl -qw net.ipv6.neigh.eth0.base_reachable_time_ms=500 net.ipv6.neigh.eth0.delay_first_probe_time=1 \
         net.ipv6.neigh.eth0.retrans_time_ms=200",
    );
    // A datagram through the gateway, none back (one-way, as a UDP stream or a metrics
    // push), a pause past the entry's reachable time, another datagram: the kernel now
    // probes the gateway by unicast, which needs a link-local source.
    let send = "python3 -c \"import socket; s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); \
                s.sendto(b'x', ('fd00:77::1', 9))\"";
    exec_ok(&host, "talker", &format!("{send} && sleep 2 && {send} && sleep 2.5"));
    let entry = exec_ok(&host, "talker", "ip -6 neigh show fd00:77::1 dev eth0");
    assert!(
        entry.contains("lladdr") && !entry.contains("FAILED"),
        "the gateway's entry did not survive its probes: {entry:?}"
    );
    assert!(ping6(&host, "talker", "fd00:77::1"), "the gateway no longer answers");
}
