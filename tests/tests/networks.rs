//! `dataplane network ...` and address allocation, as a user sees them.

use dataplane_tests::Host;

#[test]
fn default_bridge_network_is_created_like_dockers() {
    let host = Host::start();
    let info = host.dp_json(&["network", "inspect", "bridge"]);
    let net = &info[0];
    assert_eq!(net["Name"], "bridge");
    assert_eq!(net["Driver"], "bridge");
    assert_eq!(net["IPAM"]["Config"][0]["Subnet"], "172.17.0.0/16");
    assert_eq!(net["IPAM"]["Config"][0]["Gateway"], "172.17.0.1");
    assert_eq!(net["Id"].as_str().unwrap().len(), 64);
    let err = host.dp_err(&["network", "rm", "bridge"]);
    assert!(err.contains("default network"), "{err}");
}

/// As on Docker, a network without IPv6 gives its containers none: no link-local address,
/// no neighbour discovery or MLD sent to every other container of the network.
#[test]
fn containers_have_no_ipv6_on_networks_without_it() {
    let host = Host::start();
    host.dp_ok(&["network", "create", "--subnet", "10.95.0.0/24", "four"]);
    host.run_sleeper("a", &["--network", "four"]);
    host.dp_ok(&["network", "create", "--subnet", "10.96.0.0/24", "more"]);
    host.dp_ok(&["network", "connect", "more", "a"]);
    for ifname in ["eth0", "eth1"] {
        let script = format!("ip -6 -o addr show dev {ifname}; ip -6 route show dev {ifname}");
        let shown = String::from_utf8(host.exec("a", &script).stdout).unwrap();
        assert_eq!(shown.trim(), "", "IPv6 on {ifname}: {shown}");
    }
    let loopback = String::from_utf8(host.exec("a", "ip -6 -o addr show dev lo").stdout).unwrap();
    assert!(loopback.contains("::1"), "the loopback keeps ::1, as on Docker: {loopback}");
    assert!(host.ping("a", "10.96.0.1"), "the second network's interface is down");
}

#[test]
fn addresses_are_allocated_in_order_and_reused() {
    let host = Host::start();
    host.run_sleeper("a", &[]);
    host.run_sleeper("b", &[]);
    host.run_sleeper("c", &[]);
    assert_eq!(host.ip_of("a"), "172.17.0.2");
    assert_eq!(host.ip_of("b"), "172.17.0.3");
    assert_eq!(host.ip_of("c"), "172.17.0.4");
    let info = host.dp_json(&["inspect", "a"]);
    let eth = &info[0]["NetworkSettings"]["Networks"]["bridge"];
    assert_eq!(eth["MacAddress"], "02:42:ac:11:00:02");
    assert_eq!(eth["IPPrefixLen"], 16);
    assert_eq!(eth["Gateway"], "172.17.0.1");
    host.dp_ok(&["rm", "-f", "b"]);
    host.run_sleeper("d", &[]);
    assert_eq!(host.ip_of("d"), "172.17.0.3", "the released address is handed out again");
}

#[test]
fn user_network_with_subnet_gateway_and_range() {
    let host = Host::start();
    host.dp_ok(&[
        "network",
        "create",
        "--subnet",
        "10.60.0.0/16",
        "--gateway",
        "10.60.0.254",
        "--ip-range",
        "10.60.5.0/24",
        "--label",
        "team=net",
        "--opt",
        "mtu=1400",
        "blue",
    ]);
    let net = &host.dp_json(&["network", "inspect", "blue"])[0];
    assert_eq!(net["IPAM"]["Config"][0]["Gateway"], "10.60.0.254");
    assert_eq!(net["IPAM"]["Config"][0]["IPRange"], "10.60.5.0/24");
    assert_eq!(net["Labels"]["team"], "net");
    assert_eq!(net["Options"]["mtu"], "1400");
    host.run_sleeper("web", &["--network", "blue"]);
    assert_eq!(host.ip_of("web"), "10.60.5.0");
    host.run_sleeper(
        "fixed",
        &["--network", "blue", "--ip", "10.60.9.9", "--mac-address", "02:00:00:00:00:09"],
    );
    assert_eq!(host.ip_of("fixed"), "10.60.9.9");
    let out = host.exec("fixed", "ip -o link show eth0");
    let link = String::from_utf8_lossy(&out.stdout);
    assert!(link.contains("02:00:00:00:00:09") && link.contains("mtu 1400"), "{link}");
    let net = &host.dp_json(&["network", "inspect", "blue"])[0];
    assert_eq!(net["Containers"].as_object().unwrap().len(), 2);
}

/// `network inspect` lists every endpoint of the network in Docker's shape, with its
/// owner; each endpoint has an ID of its own, which outlives a restart.
#[test]
fn network_inspect_lists_each_endpoint_with_its_owner() {
    let mut host = Host::start();
    host.dp_ok(&["network", "create", "--subnet", "10.97.0.0/24", "shown"]);
    host.dp_ok(&["network", "create", "--subnet", "10.98.0.0/24", "other"]);
    host.run_sleeper("a", &["--network", "shown"]);
    host.run_sleeper("b", &["--network", "other"]);
    host.dp_ok(&["network", "connect", "shown", "b"]);
    let id_of = |name: &str| host.dp_json(&["inspect", name])[0]["Id"].as_str().unwrap().to_string();
    let (a, b) = (id_of("a"), id_of("b"));
    let containers = host.dp_json(&["network", "inspect", "shown"])[0]["Containers"].clone();
    assert_eq!(containers.as_object().unwrap().len(), 2, "both endpoints of the network: {containers}");
    for (id, name, ip, mac) in
        [(&a, "a", "10.97.0.2/24", "02:42:0a:61:00:02"), (&b, "b", "10.97.0.3/24", "02:42:0a:61:00:03")]
    {
        let endpoint = &containers[id.as_str()];
        assert_eq!(endpoint["Name"], name, "listed under its container's id: {containers}");
        assert_eq!(endpoint["Owner"], "dataplane", "our own container owns it: {endpoint}");
        assert_eq!(endpoint["IPv4Address"], ip, "{endpoint}");
        assert_eq!(endpoint["MacAddress"], mac, "{endpoint}");
        assert_eq!(endpoint["EndpointID"].as_str().unwrap().len(), 64, "an ID as Docker's: {endpoint}");
    }
    // b is on two networks: two endpoints, each with its ID, which `inspect` shows too.
    let b_on_shown = containers[b.as_str()]["EndpointID"].clone();
    let b_networks = host.dp_json(&["inspect", "b"])[0]["NetworkSettings"]["Networks"].clone();
    assert_eq!(b_networks["shown"]["EndpointID"], b_on_shown, "{b_networks}");
    assert_ne!(b_networks["other"]["EndpointID"], b_on_shown, "one endpoint per network: {b_networks}");
    host.stop_daemon();
    host.start_daemon();
    let again = host.dp_json(&["network", "inspect", "shown"])[0]["Containers"].clone();
    assert_eq!(again, containers, "the endpoints, their IDs and owners outlive a restart");
    host.dp_ok(&["network", "disconnect", "shown", "b"]);
    let left = host.dp_json(&["network", "inspect", "shown"])[0]["Containers"].clone();
    let ids: Vec<_> = left.as_object().unwrap().keys().cloned().collect();
    assert_eq!(ids, [a], "b's endpoint left the network: {left}");
}

#[test]
fn subnets_come_from_dockers_default_pools() {
    let host = Host::start();
    host.dp_ok(&["network", "create", "one"]);
    host.dp_ok(&["network", "create", "two"]);
    let subnet = |n: &str| host.dp_json(&["network", "inspect", n])[0]["IPAM"]["Config"][0]["Subnet"].clone();
    assert_eq!(subnet("one"), "172.18.0.0/16");
    assert_eq!(subnet("two"), "172.19.0.0/16");
    let gateway = host.dp_json(&["network", "inspect", "one"])[0]["IPAM"]["Config"][0]["Gateway"].clone();
    assert_eq!(gateway, "172.18.0.1");
}

#[test]
fn bad_input_is_refused_and_changes_nothing() {
    let host = Host::start();
    host.dp_ok(&["network", "create", "--subnet", "10.61.0.0/24", "red"]);
    host.sh_ok("ip link add dpup0 type veth peer name dpup1 && ip addr add 10.62.0.1/24 dev dpup0 && ip link set dpup0 up");
    let networks_before = host.dp_ok(&["network", "ls"]);
    let links_before = host.links();
    let cases: &[(&[&str], &str)] = &[
        (
            &["network", "create", "--subnet", "10.61.0.300/24", "x"],
            "is not a CIDR like 10.10.0.0/24 or fd00:1::/64",
        ),
        (&["network", "create", "--subnet", "10.63.0.0/24", "--gateway", "10.64.0.1", "x"], "outside subnet"),
        (&["network", "create", "--subnet", "10.61.0.0/25", "x"], "overlaps network \"red\""),
        (&["network", "create", "--subnet", "10.62.0.0/16", "x"], "overlaps the host route"),
        (&["network", "create", "--subnet", "10.65.0.0/24", "red"], "already exists"),
        (&["network", "create", "--subnet", "10.66.0.0/24", "--ip-range", "10.67.0.0/28", "x"], "--ip-range"),
        (&["network", "create", "--subnet", "10.68.0.0/24", "--opt", "color=red", "x"], "unknown option"),
        (&["network", "create", "-d", "ipvlan", "x"], "unsupported network driver"),
        (&["network", "create", "-d", "overlay", "x"], "start the daemon with --store etcd://"),
        (&["network", "create", "host"], "reserved"),
        (&["network", "create", "bad/name"], "invalid network name"),
        (&["network", "rm", "nope"], "no such network"),
        (&["network", "inspect", "nope"], "No such network: nope"),
        (&["run", "--network", "nope", "--", "true"], "no such network"),
        (&["run", "--network", "red", "--ip", "10.99.0.5", "--", "true"], "outside subnet"),
        (&["run", "--network", "red", "--ip", "10.61.0.1", "--", "true"], "reserved"),
        (&["run", "--mac-address", "zz", "--", "true"], "invalid MAC"),
        (&["rm", "nope"], "no such container"),
    ];
    for (args, expected) in cases {
        let err = host.dp_err(args);
        assert!(err.contains(expected), "dataplane {args:?}: expected {expected:?} in {err:?}");
    }
    assert_eq!(host.dp_ok(&["network", "ls"]), networks_before);
    assert_eq!(host.links(), links_before);
    assert!(host.container_namespaces().is_empty());
    assert_eq!(host.dp_ok(&["ps", "-a"]).lines().count(), 1);
}

#[test]
fn duplicate_container_name_and_taken_ip_are_refused() {
    let host = Host::start();
    host.run_sleeper("a", &[]);
    let err = host.dp_err(&["run", "-d", "--name", "a", "--", "sleep", "1"]);
    assert!(err.contains("already in use"), "{err}");
    let err = host.dp_err(&["run", "-d", "--ip", "172.17.0.2", "--", "sleep", "1"]);
    assert!(err.contains("already in use"), "{err}");
    assert_eq!(host.container_namespaces().len(), 1);
}

#[test]
fn network_rm_is_refused_while_attached_and_prune_keeps_used_ones() {
    let host = Host::start();
    host.dp_ok(&["network", "create", "--subnet", "10.70.0.0/24", "used"]);
    host.dp_ok(&["network", "create", "--subnet", "10.71.0.0/24", "idle"]);
    host.run_sleeper("c1", &["--network", "used"]);
    let err = host.dp_err(&["network", "rm", "used"]);
    assert!(err.contains("c1") && err.contains("active endpoints"), "{err}");
    let pruned = host.dp_ok(&["network", "prune"]);
    assert!(pruned.contains("idle") && !pruned.contains("used"), "{pruned}");
    host.dp_ok(&["rm", "-f", "c1"]);
    let bridge = host.dp_json(&["network", "inspect", "used"])[0]["Id"].as_str().unwrap()[..12].to_string();
    assert!(host.links().contains(&format!("br-{bridge}")));
    host.dp_ok(&["network", "rm", "used"]);
    assert!(!host.links().iter().any(|l| l.starts_with("br-")));
    assert_eq!(host.map_entries("SUBNETS"), 1, "only the default network's subnet is left");
}

#[test]
fn default_network_moves_aside_when_the_host_already_routes_172_17() {
    let mut host = Host::empty().unwrap();
    host.sh_ok("ip link add docker0 type veth peer name docker0p && ip addr add 172.17.0.1/16 dev docker0 && ip link set docker0 up");
    host.start_daemon();
    let net = &host.dp_json(&["network", "inspect", "bridge"])[0];
    assert_eq!(net["IPAM"]["Config"][0]["Subnet"], "172.18.0.0/16");
}

/// A Linux bridge holds 1,023 ports. Past 1,000 containers a network gets an extra bridge,
/// linked to its own: its containers reach the others, the host and the names as before.
#[test]
fn a_network_holds_more_containers_than_a_bridge_has_ports() {
    let mut host = Host::start();
    host.dp_ok(&["network", "create", "--subnet", "10.94.0.0/21", "big"]);
    let id = host.dp_json(&["network", "inspect", "big"])[0]["Id"].as_str().unwrap().to_string();
    let (own, id) = (format!("br-{}", &id[..12]), &id[..10]);
    let started = std::time::Instant::now();
    for i in 0..=1000 {
        host.run_sleeper(&format!("c{i}"), &["--network", "big"]);
    }
    eprintln!("1,001 containers in {:?}", started.elapsed());
    let (extra, link, link_peer) = (format!("br01-{id}"), format!("bl01-{id}"), format!("bp01-{id}"));
    let veth_of = |host: &Host, name: &str| {
        host.dp_json(&["inspect", name])[0]["NetworkSettings"]["Networks"]["big"]["HostInterface"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let master_of = |host: &Host, link: &str| {
        let shown = host.sh_ok(&format!("ip -o link show dev {link}"));
        shown.split_whitespace().skip_while(|w| *w != "master").nth(1).unwrap_or("").to_string()
    };
    assert_eq!(
        master_of(&host, &veth_of(&host, "c999")),
        own,
        "the 1,000th container is on the network's own bridge"
    );
    assert_eq!(master_of(&host, &link), own);
    assert_eq!(
        master_of(&host, &veth_of(&host, "c1000")),
        extra,
        "the 1,001st container is on the extra bridge"
    );
    assert_eq!(master_of(&host, &link_peer), extra);

    let reachable = |host: &Host| {
        let (first, last) = (host.ip_of("c0"), host.ip_of("c1000"));
        assert!(host.ping("c1000", &first), "the extra bridge's container cannot reach the first one");
        assert!(host.ping("c0", &last), "the first container cannot reach the extra bridge's");
        assert!(host.ping("c1000", "10.94.0.1"), "the extra bridge's container cannot reach the gateway");
        let named = host.exec("c1000", "dig +short +time=2 +tries=1 c0");
        assert_eq!(String::from_utf8_lossy(&named.stdout).trim(), first, "no names on the extra bridge");
    };
    reachable(&host);

    // A restart makes what is missing again.
    host.stop_daemon();
    host.sh_ok(&format!("ip link del {extra}"));
    host.start_daemon();
    assert_eq!(master_of(&host, &veth_of(&host, "c1000")), extra);
    assert_eq!(master_of(&host, &link_peer), extra);
    reachable(&host);

    // So does the next container on the extra bridge, for its link removed while the
    // daemon runs.
    host.sh_ok(&format!("ip link del {link}"));
    host.run_sleeper("c1001", &["--network", "big"]);
    assert_eq!(master_of(&host, &veth_of(&host, "c1001")), extra);
    assert_eq!(master_of(&host, &link), own, "the extra bridge was not linked again");
    let c0 = host.ip_of("c0");
    assert!(host.ping("c1001", &c0), "the new container on the extra bridge cannot reach the first one");

    let names: Vec<String> = (0..=1001).map(|i| format!("c{i}")).collect();
    let mut rm = vec!["rm", "-f"];
    rm.extend(names.iter().map(String::as_str));
    host.dp_ok(&rm);
    host.dp_ok(&["network", "rm", "big"]);
    let left: Vec<_> =
        host.links().into_iter().filter(|l| [&extra, &link, &link_peer].contains(&l)).collect();
    assert!(left.is_empty(), "network rm left {left:?}");
    eprintln!("done in {:?}", started.elapsed());
}
