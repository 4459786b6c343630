//! Real runtimes put their containers on dataplane networks through the CNI plugin:
//! podman 4.3 (CNI backend) and containerd 1.6 (`ctr run --cni`), in the test's host
//! namespace, with a busybox image built locally. The network is created by the plugin's
//! first ADD, from the conflist's subnet.

use std::{fs, path::Path, process::Output, time::Duration};

use dataplane_tests::{
    EXTERNAL_ADDR, Host, UPLINK_ADDR, eventually,
    runtimes::{Containerd, Podman, cni_result_cache, dataplane_conflist},
};
use serde_json::json;

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn veths(host: &Host) -> usize {
    host.links().iter().filter(|l| l.starts_with("veth")).count()
}

/// The endpoints the daemon lists on a network, by owner.
fn endpoint_owners(host: &Host, network: &str) -> Vec<String> {
    let info = host.dp_json(&["network", "inspect", network]);
    let containers = info[0]["Containers"].as_object().cloned().unwrap_or_default();
    containers.values().map(|c| c["Owner"].as_str().unwrap_or_default().to_string()).collect()
}

#[test]
fn podman_containers_ping_each_other_by_address_and_by_name() {
    let host = Host::start();
    let podman = Podman::start(&host, &[dataplane_conflist(&host, "dpnet", "10.88.5.0/24")]);
    podman.run("one", "dpnet", &[], &["sleep", "600"]);
    let two_id = podman.run("two", "dpnet", &["--network-alias", "backend"], &["sleep", "600"]);
    let two = podman.ip_of("two", "dpnet");
    assert!(two.starts_with("10.88.5."), "two's address {two} is not on the conflist's subnet");
    assert_eq!(
        endpoint_owners(&host, "dpnet").iter().filter(|o| *o == &format!("cni:{two_id}")).count(),
        1,
        "the daemon does not list two's endpoint as the plugin's"
    );

    let ping = podman.exec("one", &format!("ping -c 1 -W 2 {two}"));
    assert!(ping.status.success(), "one does not reach two at {two}: {}", text(&ping));
    // podman puts the result's nameserver, the network's resolver on the gateway, first
    // in the container's resolv.conf; the names are the pod name and the aliases.
    let resolv = podman.exec("one", "cat /etc/resolv.conf");
    assert!(
        text(&resolv).lines().find(|l| l.starts_with("nameserver")) == Some("nameserver 10.88.5.1"),
        "the network's resolver is not the container's first nameserver: {}",
        text(&resolv)
    );
    for name in ["two", "backend"] {
        let ping = podman.exec("one", &format!("ping -c 1 -W 2 {name}"));
        assert!(ping.status.success(), "one does not reach two by the name {name}: {}", text(&ping));
        assert!(text(&ping).contains(&format!("({two})")), "{name} resolved elsewhere: {}", text(&ping));
    }
}

/// A conflist with an IPv6 subnet makes a dual-stack network: each pod gets an IPv6
/// address and a default route through the IPv6 gateway, which the result names (podman
/// records them as GlobalIPv6Address and IPv6Gateway); DEL gives the address back.
#[test]
fn podman_containers_on_a_dual_stack_network_ping_each_other_over_ipv6() {
    let host = Host::start();
    let mut conflist = dataplane_conflist(&host, "dual", "10.88.7.0/24");
    conflist["plugins"][0]["subnet6"] = json!("fd00:88:7::/64");
    let podman = Podman::start(&host, &[conflist]);
    podman.run("one", "dual", &[], &["sleep", "600"]);
    let two_id = podman.run("two", "dual", &[], &["sleep", "600"]);
    let settings = |name: &str| podman.inspect(name)[0]["NetworkSettings"]["Networks"]["dual"].clone();
    let two = settings("two");
    assert_eq!(
        (&two["GlobalIPv6Address"], &two["GlobalIPv6PrefixLen"], &two["IPv6Gateway"]),
        (&json!("fd00:88:7::3"), &json!(64), &json!("fd00:88:7::1")),
        "podman did not record two's IPv6 address from the result: {two}"
    );
    assert!(two["IPAddress"].as_str().unwrap_or_default().starts_with("10.88.7."), "two lost IPv4: {two}");
    let cached: String =
        cni_result_cache(&two_id).iter().filter_map(|p| fs::read_to_string(p).ok()).collect();
    assert!(
        cached.contains("\"dst\":\"::/0\"") && cached.contains("fd00:88:7::3/64"),
        "the result podman cached has no IPv6 address or default route: {cached}"
    );
    let inside = podman.exec("two", "ip -6 addr show dev eth0; ip -6 route");
    assert!(
        text(&inside).contains("inet6 fd00:88:7::3/64") && text(&inside).contains("default via fd00:88:7::1"),
        "two has not its IPv6 address and default route: {}",
        text(&inside)
    );
    for target in ["fd00:88:7::3", "fd00:88:7::1"] {
        let ping = podman.exec("one", &format!("ping -6 -c 1 -W 2 {target}"));
        assert!(ping.status.success(), "one does not reach {target} over IPv6: {}", text(&ping));
    }

    // DEL gives two's IPv6 address back: the next pod takes it.
    podman.rm("two");
    podman.run("three", "dual", &[], &["sleep", "600"]);
    assert_eq!(
        settings("three")["GlobalIPv6Address"],
        json!("fd00:88:7::3"),
        "two's IPv6 address was not released"
    );
}

/// podman passes `--ip` and `--mac-address` only in CNI_ARGS (`IP=`, `MAC=`), never in
/// runtimeConfig.
#[test]
fn podman_ip_and_mac_address_are_the_containers() {
    let host = Host::start();
    let podman = Podman::start(&host, &[dataplane_conflist(&host, "dpnet", "10.88.5.0/24")]);
    let mac = "02:42:0a:58:05:4d";
    podman.run("fixed", "dpnet", &["--ip", "10.88.5.77", "--mac-address", mac], &["sleep", "600"]);
    let inside = podman.exec("fixed", "ip -o -4 addr show dev eth0; ip -o link show dev eth0");
    assert!(
        text(&inside).contains("inet 10.88.5.77/24"),
        "eth0 has not the address asked for: {}",
        text(&inside)
    );
    assert!(text(&inside).contains(mac), "eth0 has not the MAC asked for: {}", text(&inside));
    assert_eq!(podman.ip_of("fixed", "dpnet"), "10.88.5.77", "podman recorded another address");
}

/// busybox httpd serving `hello from <name>` on port 80.
fn serve_hello(name: &str) -> Vec<String> {
    vec![
        "sh".into(),
        "-c".into(),
        format!("echo hello from {name} > /www/index.html && exec httpd -f -v -p 80 -h /www"),
    ]
}

#[test]
fn podman_published_port_is_reachable_from_outside_and_from_the_host() {
    let host = Host::start_with_external();
    let podman = Podman::start(&host, &[dataplane_conflist(&host, "dpnet", "10.88.5.0/24")]);
    let command = serve_hello("web");
    let command: Vec<&str> = command.iter().map(String::as_str).collect();
    podman.run("web", "dpnet", &["-p", "8080:80"], &command);

    let url = format!("http://{UPLINK_ADDR}:8080/");
    let from_outside =
        || host.external_command("curl").args(["-s", "--max-time", "2", &url]).output().unwrap();
    assert!(
        eventually(Duration::from_secs(10), || text(&from_outside()).contains("hello from web")),
        "the published port is not reachable from the external namespace: {}\n{}",
        text(&from_outside()),
        host.daemon_log()
    );
    // The container saw the real client (httpd -v logs each client to stderr).
    let access_log = text(&podman.output(&["logs", "web"]));
    assert!(
        access_log.contains(EXTERNAL_ADDR),
        "web did not see the external client's address: {access_log}"
    );
    for address in ["127.0.0.1", UPLINK_ADDR] {
        let out = host.sh_in_cgroup(&format!("curl -s --max-time 2 http://{address}:8080/"));
        assert!(
            text(&out).contains("hello from web"),
            "the published port is not reachable from the host on {address}: {}",
            text(&out)
        );
    }
}

/// podman holds its published ports itself (conmon listens on each from right after the
/// ADD): the daemon's restart publishes them again all the same.
#[test]
fn podman_published_port_survives_a_daemon_restart() {
    let mut host = Host::start_with_external();
    let podman = Podman::start(&host, &[dataplane_conflist(&host, "dpnet", "10.88.5.0/24")]);
    let command = serve_hello("web");
    let command: Vec<&str> = command.iter().map(String::as_str).collect();
    podman.run("web", "dpnet", &["-p", "8080:80"], &command);
    let url = format!("http://{UPLINK_ADDR}:8080/");
    let from_outside = |host: &Host| {
        let out = host.external_command("curl").args(["-s", "--max-time", "2", &url]).output().unwrap();
        text(&out)
    };
    assert!(
        eventually(Duration::from_secs(10), || from_outside(&host).contains("hello from web")),
        "the published port is not reachable from outside: {}",
        from_outside(&host)
    );
    host.stop_daemon();
    host.start_daemon();
    assert!(
        eventually(Duration::from_secs(10), || from_outside(&host).contains("hello from web")),
        "the published port is not reachable from outside after a restart: {}\n{}",
        from_outside(&host),
        host.daemon_log()
    );
    assert_eq!(host.map_entries("PUBLISHED"), 1, "the port is not published once");
    let log = host.daemon_log();
    assert!(!log.contains("not restored"), "the restart gave up a port podman holds: {log}");
}

#[test]
fn podman_rm_and_network_rm_leave_nothing_behind() {
    let host = Host::start_with_external();
    let podman = Podman::start(&host, &[dataplane_conflist(&host, "dpnet", "10.88.5.0/24")]);
    let web = podman.run("web", "dpnet", &["-p", "8080:80"], &["httpd", "-f", "-p", "80"]);
    let other = podman.run("other", "dpnet", &[], &["sleep", "600"]);
    let sandbox = podman.sandbox_of("web");
    assert_eq!(host.map_entries("ENDPOINTS"), 2, "two endpoints in the maps");
    assert_eq!(host.map_entries("PUBLISHED"), 1, "one published port in the maps");
    assert_eq!(veths(&host), 2);
    assert_eq!(endpoint_owners(&host, "dpnet").len(), 2);
    let bind_8080 = "python3 -c \"import socket; socket.socket().bind(('0.0.0.0', 8080))\"";
    assert!(!host.sh(bind_8080).status.success(), "port 8080 is not reserved while published");

    podman.rm("web");
    assert_eq!(host.map_entries("ENDPOINTS"), 1, "web's endpoint stayed in the maps");
    assert_eq!(host.map_entries("PUBLISHED"), 0, "web's port stayed published");
    assert!(host.sh(bind_8080).status.success(), "web's port stayed reserved");
    assert_eq!(veths(&host), 1, "web's veth stayed");
    assert!(!Path::new(&sandbox).exists(), "podman's pin {sandbox} stayed");
    assert!(cni_result_cache(&web).is_empty(), "podman's result cache of web stayed");

    // podman refuses to remove a network in use; -f removes its containers first (DEL).
    assert!(!podman.output(&["network", "rm", "dpnet"]).status.success(), "a network in use was removed");
    podman.ok(&["network", "rm", "-f", "dpnet"]);
    assert!(podman.ok(&["ps", "-a", "-q"]).trim().is_empty(), "network rm -f left a container");
    assert_eq!(host.map_entries("ENDPOINTS"), 0, "other's endpoint stayed in the maps");
    assert_eq!(veths(&host), 0, "other's veth stayed");
    assert!(cni_result_cache(&other).is_empty(), "podman's result cache of other stayed");
    assert!(endpoint_owners(&host, "dpnet").is_empty(), "the daemon still lists endpoints on dpnet");
    assert!(host.container_namespaces().is_empty(), "the daemon kept namespace pins");
}

#[test]
fn ctr_run_cni_puts_a_container_on_the_network_and_it_reaches_another() {
    let host = Host::start();
    let mut containerd = Containerd::start(&host, &dataplane_conflist(&host, "ctrnet", "10.88.6.0/24"));
    containerd.run("one", &["sleep", "600"]);
    containerd.run("two", &["sleep", "600"]);
    let two = containerd.ip_of("two");
    assert!(two.starts_with("10.88.6."), "two's address {two} is not on the conflist's subnet");
    let mut owners = endpoint_owners(&host, "ctrnet");
    owners.sort();
    assert_eq!(owners, [format!("cni:{}-one", host.name), format!("cni:{}-two", host.name)]);
    let ping = containerd.exec("one", &format!("ping -c 1 -W 2 {two}"));
    assert!(ping.status.success(), "one does not reach two at {two}: {}", text(&ping));

    // ctr's DEL (no namespace path: the task is gone) releases the endpoint.
    containerd.stop("two");
    assert_eq!(endpoint_owners(&host, "ctrnet"), [format!("cni:{}-one", host.name)]);
    assert_eq!(host.map_entries("ENDPOINTS"), 1, "two's endpoint stayed in the maps");
    assert_eq!(veths(&host), 1, "two's veth stayed");
}
