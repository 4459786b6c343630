//! IPv6-only networks (`network create --ipv6 --ipv4=false`) as a user sees them:
//! containers with an IPv6 address and no IPv4 one, traffic between them by address and
//! by name (`dig AAAA` answers, `dig A` has no data), out through NAT66, isolation from
//! another network, a published port over IPv6, the inspect fields, all of it again
//! after a restart of the daemon, and the refusals that name the fix.

use std::time::Duration;

use dataplane_tests::{Host, eventually, stdout_of as ok};
use serde_json::{Value, json};

const UPLINK_ADDR6: &str = "2001:db8:73::1";
const EXTERNAL_ADDR6: &str = "2001:db8:73::2";

fn ping6(host: &Host, from: &str, to: &str) -> bool {
    host.exec(from, &format!("ping -6 -c 1 -W 2 {to}")).status.success()
}

/// The entry of `network` in a container's `inspect`.
fn endpoint_of(host: &Host, container: &str, network: &str) -> Value {
    host.dp_json(&["inspect", container])[0]["NetworkSettings"]["Networks"][network].clone()
}

/// `dig` of `name` in `container` through its resolv.conf: the status and the answers.
fn dig(host: &Host, container: &str, kind: &str, name: &str) -> (String, Vec<String>) {
    let full = ok(host.exec(container, &format!("dig +time=2 +tries=1 {kind} {name}")));
    let status = full
        .split("status: ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .unwrap_or_else(|| panic!("no status in dig's answer:\n{full}"))
        .to_string();
    let short = ok(host.exec(container, &format!("dig +short +time=2 +tries=1 {kind} {name}")));
    (status, short.lines().map(str::to_string).collect())
}

#[test]
fn an_ipv6_only_network_carries_ipv6_by_address_and_name_out_through_nat66_and_after_a_restart() {
    let mut host = Host::empty_with_external();
    host.sh_ok(&format!(
        "ip addr add {UPLINK_ADDR6}/64 dev up0 nodad && ip -6 route add default via {EXTERNAL_ADDR6}"
    ));
    host.external_sh_ok(&format!("ip addr add {EXTERNAL_ADDR6}/64 dev eth0 nodad"));
    host.start_daemon();

    // Refused with the fix named.
    let no_family = host.dp_err(&["network", "create", "--ipv4=false", "nothing"]);
    assert!(no_family.contains("--ipv4=false") && no_family.contains("add --ipv6"), "{no_family}");

    host.dp_ok(&["network", "create", "--ipv6", "--ipv4=false", "--subnet", "fd00:61::/64", "only6"]);
    host.dp_ok(&["network", "create", "--ipv6", "--ipv4=false", "--subnet", "fd00:62::/64", "other6"]);
    let net = &host.dp_json(&["network", "inspect", "only6"])[0];
    assert_eq!((&net["EnableIPv4"], &net["EnableIPv6"]), (&json!(false), &json!(true)), "{net}");
    assert_eq!(
        net["IPAM"]["Config"],
        json!([{"Subnet": "fd00:61::/64", "Gateway": "fd00:61::1"}]),
        "one IPAM config, IPv6's"
    );
    let ls = host.dp_ok(&["network", "ls"]);
    assert!(ls.lines().any(|l| l.contains("only6")), "network ls lists it:\n{ls}");

    let refused_ip =
        host.dp_err(&["run", "-d", "--network", "only6", "--ip", "10.61.0.5", "--", "sleep", "1"]);
    assert!(refused_ip.contains("IPv6-only") && refused_ip.contains("--ip6"), "{refused_ip}");

    host.run_sleeper("a", &["--network", "only6"]);
    host.run_sleeper("b", &["--network", "only6"]);
    host.run_sleeper("stranger", &["--network", "other6"]);

    let a = endpoint_of(&host, "a", "only6");
    assert_eq!(
        (&a["IPAddress"], &a["IPPrefixLen"], &a["Gateway"]),
        (&json!(""), &json!(0), &json!("")),
        "no IPv4 address: {a}"
    );
    assert_eq!(
        (&a["GlobalIPv6Address"], &a["GlobalIPv6PrefixLen"], &a["IPv6Gateway"]),
        (&json!("fd00:61::2"), &json!(64), &json!("fd00:61::1"))
    );
    let shown = &host.dp_json(&["network", "inspect", "only6"])[0]["Containers"];
    let addresses: Vec<_> = shown
        .as_object()
        .unwrap()
        .values()
        .map(|c| (c["IPv4Address"].clone(), c["IPv6Address"].clone()))
        .collect();
    assert!(addresses.contains(&(json!(""), json!("fd00:61::2/64"))), "{addresses:?}");

    // Inside: IPv4 only on lo; the IPv6 address, its default route and the resolver on
    // the IPv6 gateway.
    let v4 = ok(host.exec("a", "ip -4 -o addr"));
    assert!(v4.lines().all(|l| l.contains(" lo ")), "an IPv4 address other than lo's:\n{v4}");
    let v6 =
        ok(host.exec("a", "ip -6 -o addr show dev eth0; ip -6 route show default; cat /etc/resolv.conf"));
    assert!(v6.contains("fd00:61::2/64"), "{v6}");
    assert!(v6.contains("default via fd00:61::1 dev eth0"), "{v6}");
    assert!(v6.contains("nameserver fd00:61::1"), "{v6}");

    let forwarded = host.counter("forwarded");
    assert!(ping6(&host, "a", "fd00:61::3"), "ping -6 between containers failed");
    assert!(host.counter("forwarded") > forwarded, "the programs did not carry it");
    assert!(ping6(&host, "a", "b"), "ping -6 by name failed");
    assert_eq!(dig(&host, "a", "AAAA", "b"), ("NOERROR".to_string(), vec!["fd00:61::3".to_string()]));
    assert_eq!(dig(&host, "a", "A", "b"), ("NOERROR".to_string(), vec![]), "A of an IPv6-only name: NODATA");

    let isolated = host.counter("dropped_isolation");
    assert!(!ping6(&host, "a", "fd00:62::2"), "only6 reached other6");
    assert!(host.counter("dropped_isolation") > isolated, "isolation was not the programs'");

    assert!(ping6(&host, "a", EXTERNAL_ADDR6), "ping -6 to the outside through NAT66 failed");
    let flows = host.dp_ok(&["conntrack", "ls"]);
    assert!(
        flows.lines().any(|l| l.contains("icmpv6") && l.contains(UPLINK_ADDR6)),
        "the outside was not reached as the uplink's address:\n{flows}"
    );

    // `-p 8080:80` publishes on `[::]:8080` alone, reached from outside over IPv6; an IPv4
    // host address is refused with the fix named.
    let refused_p =
        host.dp_err(&["run", "-d", "--network", "only6", "-p", "127.0.0.1:8081:80", "--", "sleep", "1"]);
    assert!(refused_p.contains("IPv6-only") && refused_p.contains("-p [::]:8081:80"), "{refused_p}");
    let server = ["python3", "-m", "http.server", "80", "--bind", "::"];
    host.dp_ok(
        &[&["run", "-d", "--name", "web", "--network", "only6", "-p", "8080:80", "--"][..], &server].concat(),
    );
    assert_eq!(host.dp_ok(&["port", "web"]).trim(), "80/tcp -> [::]:8080");
    let fetch = format!("curl -6 -sf -m 2 -o /dev/null http://[{UPLINK_ADDR6}]:8080/");
    let fetched = eventually(Duration::from_secs(10), || {
        host.external_command("sh").args(["-c", &fetch]).status().is_ok_and(|s| s.success())
    });
    assert!(fetched, "the port published on an IPv6-only network is not reached from outside");

    host.stop_daemon();
    host.start_daemon();
    let b = endpoint_of(&host, "b", "only6");
    assert_eq!((&b["IPAddress"], &b["GlobalIPv6Address"]), (&json!(""), &json!("fd00:61::3")), "{b}");
    let forwarded = host.counter("forwarded");
    assert!(ping6(&host, "b", "a"), "ping -6 by name failed after a restart");
    assert!(host.counter("forwarded") > forwarded, "the restart lost the endpoints in the maps");
    assert!(ping6(&host, "b", EXTERNAL_ADDR6), "NAT66 failed after a restart");
    host.run_sleeper("c", &["--network", "only6"]);
    let c = endpoint_of(&host, "c", "only6");
    assert_eq!(
        c["GlobalIPv6Address"], "fd00:61::5",
        "a restart handed out a taken address (web has ::4): {c}"
    );
    assert_eq!(c["MacAddress"], "02:42:00:00:00:05", "the MAC of the IPv6 address' last bytes: {c}");
}
