//! NAT66 with real tools: containers of a dual-stack network reach an external
//! namespace's global IPv6 address behind the host's uplink, which sees only the uplink's
//! IPv6 address; packet too big from a smaller-MTU link further out reaches the container,
//! which learns the path MTU.

use std::time::Duration;

use dataplane_tests::{EXTERNAL_ADDR, EXTERNAL_ADDR6, Host, UPLINK_ADDR6, eventually, stdout_of as ok};

/// A host whose uplink has a global IPv6 address, with a dual-stack network `v6out`.
fn host_with_ipv6_uplink() -> Host {
    let host = Host::start_with_ipv6_uplink();
    host.create_dual_stack_network("v6out", "10.43.0.0/24", "fd00:43::/64");
    host.run_sleeper("c", &["--network", "v6out"]);
    host
}

#[test]
fn containers_reach_the_outside_over_ipv6_as_the_uplinks_ipv6_address() {
    let host = host_with_ipv6_uplink();
    assert!(
        host.exec("c", &format!("ping -6 -c 2 -W 2 {EXTERNAL_ADDR6}")).status.success(),
        "ping -6 to the outside failed"
    );

    // TCP: an HTTP fetch, and the server's log names the client.
    let log = host.fetch_from_outside6("c");
    assert!(log.contains(UPLINK_ADDR6), "the outside saw another source than the uplink's: {log}");
    assert!(!log.contains("fd00:43"), "a container address leaked: {log}");

    let flows = host.dp_ok(&["conntrack", "ls"]);
    for proto in ["tcp", "icmpv6"] {
        assert!(
            flows.lines().any(|l| l.contains(proto) && l.contains(UPLINK_ADDR6)),
            "no {proto} flow over IPv6 in:\n{flows}"
        );
    }
    assert!(host.counter("masqueraded") >= 3 && host.counter("reverse_nat") >= 3);
}

#[test]
fn packet_too_big_from_a_smaller_mtu_link_outside_reaches_the_container() {
    let mut host = host_with_ipv6_uplink();
    // Behind the external namespace, a router, a 1280-byte link to a far namespace. Its
    // ends skip duplicate address detection of their link-local addresses too: until it
    // ends, the router cannot resolve the far end, and holds the first packets ~2 s.
    let far = host.add_namespace("far");
    host.external_sh_ok(&format!(
        "ip link add narrow mtu 1280 type veth peer name eth0 mtu 1280 netns {far} \
         && sysctl -qw net.ipv6.conf.narrow.accept_dad=0 \
         && ip addr add 2001:db8:72::1/64 dev narrow nodad && ip link set narrow up \
         && sysctl -qw net.ipv6.conf.all.forwarding=1"
    ));
    host.ns_sh_ok(
        &far,
        "sysctl -qw net.ipv6.conf.eth0.accept_dad=0 && ip link set lo up \
         && ip addr add 2001:db8:72::2/64 dev eth0 nodad && ip link set eth0 up \
         && ip -6 route add default via 2001:db8:72::1",
    );
    assert!(
        host.exec("c", "ping -6 -c 1 -W 2 2001:db8:72::2").status.success(),
        "the far namespace is not reachable through NAT66 and the router"
    );
    // The container's large ping does not fit the narrow link: the router's packet too
    // big, translated back, teaches the container the path MTU.
    let _ = host.exec("c", "ping -6 -c 2 -i 0.3 -W 1 -s 1400 -M do 2001:db8:72::2");
    let route = ok(host.exec("c", "ip -6 route get 2001:db8:72::2"));
    assert!(route.contains("mtu 1280"), "the container did not learn the path MTU: {route}");
    // And what fits goes through.
    let fits = host.exec("c", "ping -6 -c 1 -W 2 -s 1200 -M do 2001:db8:72::2");
    assert!(
        fits.status.success(),
        "a ping that fits the narrow link failed: {}\n{}",
        String::from_utf8_lossy(&fits.stdout),
        host.dp_ok(&["stats"]),
    );
}

/// The addresses masqueraded to are the uplink's as they are now, not as they were when
/// the daemon started: a global IPv6 address that comes later (SLAAC, DHCPv6, an admin)
/// turns NAT66 on, and a new IPv4 address (DHCP) is taken at once, as MASQUERADE does.
#[test]
fn the_masquerade_addresses_follow_the_uplink_s_addresses() {
    let mut host = Host::empty_with_external();
    host.external_sh_ok(&format!("ip addr add {EXTERNAL_ADDR6}/64 dev eth0 nodad"));
    host.start_daemon();
    host.create_dual_stack_network("later", "10.44.0.0/24", "fd00:44::/64");
    host.run_sleeper("c", &["--network", "later"]);

    host.sh_ok(&format!(
        "ip addr add {UPLINK_ADDR6}/64 dev up0 nodad && ip -6 route add default via {EXTERNAL_ADDR6}"
    ));
    let ping6 = format!("ping -6 -c 1 -W 1 {EXTERNAL_ADDR6}");
    assert!(
        eventually(Duration::from_secs(10), || host.exec("c", &ping6).status.success()),
        "the uplink's new IPv6 address is not masqueraded to: {}",
        host.dp_ok(&["stats"])
    );
    let flows = host.dp_ok(&["conntrack", "ls"]);
    assert!(flows.lines().any(|l| l.contains(UPLINK_ADDR6)), "no flow as {UPLINK_ADDR6}:\n{flows}");

    // A new IPv4 address, the old one gone (promoted, so the routes stay).
    let moved = "203.0.113.7";
    host.sh_ok(&format!(
        "sysctl -qw net.ipv4.conf.up0.promote_secondaries=1 && ip addr add {moved}/24 dev up0 \
         && ip addr del {}/24 dev up0 && ip route replace default via {EXTERNAL_ADDR}",
        dataplane_tests::UPLINK_ADDR
    ));
    let log = host.dir.join("http4.log");
    let _http =
        host.external_server("python3", &["-m", "http.server", "8080", "--bind", EXTERNAL_ADDR], "http4.log");
    let fetch = format!("curl -sf -m 2 -o /dev/null http://{EXTERNAL_ADDR}:8080/");
    assert!(
        eventually(Duration::from_secs(10), || host.exec("c", &fetch).status.success()),
        "the uplink's new IPv4 address is not masqueraded to: {}",
        host.dp_ok(&["stats"])
    );
    let seen = std::fs::read_to_string(&log).unwrap();
    assert!(seen.contains(moved), "the outside saw another source than the uplink's new address: {seen}");
}

/// The uplink's programs for IPv6 and for routed IPv4 are verified only when a network
/// needs them (seconds of each daemon start otherwise), put behind `from_uplink` then, and
/// taken out with the last such network. A restart puts them back for the networks it
/// restores, and IPv6 out of a container works across it.
#[test]
fn the_uplinks_ipv6_and_routed_programs_come_with_the_networks_that_need_them() {
    let mut host = Host::start_with_ipv6_uplink();
    let behind_uplink = |host: &Host| (host.map_entries("UPLINK_V6"), host.map_entries("UPLINK_ROUTED"));
    assert_eq!(
        behind_uplink(&host),
        (0, 0),
        "(IPv6, routed IPv4) behind the uplink with no network needing them"
    );
    host.create_dual_stack_network("v6", "10.44.0.0/24", "fd00:44::/64");
    assert_eq!(behind_uplink(&host), (1, 0), "after an IPv6 network");
    // A routed IPv6 network's packets behind extension headers are looked through there.
    let routed6 = ["--subnet", "fd00:46::/64", "-o", "gateway_mode_ipv6=routed", "r6"];
    host.dp_ok(&[&["network", "create", "--ipv6", "--subnet", "10.46.0.0/24"][..], &routed6].concat());
    assert_eq!(behind_uplink(&host), (1, 1), "after a routed IPv6 network");
    host.dp_ok(&["network", "rm", "r6"]);
    assert_eq!(behind_uplink(&host), (1, 0), "after the routed IPv6 network went");
    host.dp_ok(&["network", "create", "--subnet", "10.45.0.0/24", "-o", "gateway_mode_ipv4=routed", "r4"]);
    assert_eq!(behind_uplink(&host), (1, 1), "after a routed IPv4 network");

    host.kill_daemon();
    host.start_daemon();
    assert_eq!(behind_uplink(&host), (1, 1), "after a restart");
    host.run_sleeper("c", &["--network", "v6"]);
    assert!(
        host.exec("c", &format!("ping -6 -c 2 -W 2 {EXTERNAL_ADDR6}")).status.success(),
        "ping -6 to the outside failed after a restart"
    );

    host.dp_ok(&["rm", "-f", "c"]);
    host.dp_ok(&["network", "rm", "r4"]);
    assert_eq!(behind_uplink(&host), (1, 0), "after the routed network went");
    host.dp_ok(&["network", "rm", "v6"]);
    assert_eq!(behind_uplink(&host), (0, 0), "after the IPv6 network went");
}
