//! Docker's routed IPv4 gateway mode
//! (`-o com.docker.network.bridge.gateway_mode_ipv4=routed`) with real tools: the external
//! namespace routes the network's subnet to the host; containers reach it with their own
//! address as the source; from outside, a container's own address answers on its
//! published (container) port and to ping, and on nothing else. A NAT network beside it
//! keeps masquerading, and its container addresses take nothing from outside. An
//! unprotected one (`gateway_mode_ipv4=nat-unprotected`) masquerades too, and from
//! outside its container's own address answers on every port. The firewall applies on
//! both kinds of own address. An isolated one
//! (`gateway_mode_ipv4=isolated`, Docker 28.2) keeps to its own containers.

use std::{process::Stdio, time::Duration};

use dataplane_tests::{EXTERNAL_ADDR, Host, UPLINK_ADDR, eventually};

const ROUTED_OPTION: &str = "com.docker.network.bridge.gateway_mode_ipv4";

/// A host with a routed network `routed` (10.47.0.0/24, asked with the short option name),
/// a NAT one `natted` (10.48.0.0/24) and an unprotected one `open` (10.49.0.0/24, asked
/// with Docker's option name); the external namespace routes the subnets to the host, as
/// a routed network's outside does.
fn routed_host() -> Host {
    let host = Host::start_with_external();
    host.dp_ok(&[
        "network",
        "create",
        "--subnet",
        "10.47.0.0/24",
        "-o",
        "gateway_mode_ipv4=routed",
        "routed",
    ]);
    host.dp_ok(&["network", "create", "--subnet", "10.48.0.0/24", "natted"]);
    let unprotected = format!("{ROUTED_OPTION}=nat-unprotected");
    host.dp_ok(&["network", "create", "--subnet", "10.49.0.0/24", "-o", &unprotected, "open"]);
    host.external_sh_ok(&format!(
        "ip route add 10.47.0.0/24 via {UPLINK_ADDR} && ip route add 10.48.0.0/24 via {UPLINK_ADDR} && \
         ip route add 10.49.0.0/24 via {UPLINK_ADDR}"
    ));
    host
}

/// Echo requests the external namespace sees arrive while `ping` runs: tcpdump's lines.
fn echo_requests_seen_outside(host: &Host, ping: impl FnOnce()) -> String {
    let capture = host
        .external_command("timeout")
        .args(["8", "tcpdump", "-l", "-n", "-i", "eth0", "-c", "1", "icmp[icmptype] == icmp-echo"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // tcpdump says "listening on" (on stderr) once it captures; waiting for that needs a
    // reader thread, and its start takes well under this.
    std::thread::sleep(Duration::from_millis(1500));
    ping();
    String::from_utf8_lossy(&capture.wait_with_output().unwrap().stdout).into_owned()
}

/// Fetches a page from `container` off an HTTP server started for it in the external
/// namespace; returns the server's log, which names the client as the outside saw it.
fn fetch_from_outside4(host: &Host, container: &str) -> String {
    let _http =
        host.external_server("python3", &["-m", "http.server", "8080", "--bind", EXTERNAL_ADDR], "http4.log");
    let url = format!("http://{EXTERNAL_ADDR}:8080/");
    let fetch = host.exec(container, &format!("curl -sf -m 5 -o /dev/null {url}"));
    assert!(fetch.status.success(), "{container} could not fetch {url}");
    std::fs::read_to_string(host.netns_dir().parent().unwrap().join("http4.log")).unwrap_or_default()
}

/// Asserts that `container`'s HTTP server logged a request from the external namespace's
/// own address: nothing translated the client on the way in.
fn assert_saw_the_client(host: &Host, container: &str) {
    assert!(
        eventually(Duration::from_secs(3), || host.container_log(container).contains(EXTERNAL_ADDR)),
        "{container} did not see the client's own address: {}",
        host.container_log(container)
    );
}

#[test]
fn containers_of_a_routed_network_reach_the_outside_with_their_own_address() {
    let host = routed_host();
    host.run_sleeper("c", &["--network", "routed"]);
    let c4 = host.ip_of("c");
    assert!(c4.starts_with("10.47.0."), "{c4}");

    let seen = echo_requests_seen_outside(&host, || {
        let ping = host.exec("c", &format!("ping -c 5 -i 0.3 -W 2 {EXTERNAL_ADDR}"));
        assert!(
            ping.status.success(),
            "ping to the outside failed: {}",
            String::from_utf8_lossy(&ping.stdout)
        );
    });
    assert!(seen.contains(&format!("{c4} > {EXTERNAL_ADDR}")), "the outside saw another ping source: {seen}");

    let log = fetch_from_outside4(&host, "c");
    assert!(log.contains(&c4), "the outside saw another source than the container's {c4}: {log}");
    assert!(!log.contains(UPLINK_ADDR), "a routed network's traffic was masqueraded: {log}");
    assert_eq!(host.counter("masqueraded"), 0, "a routed network's traffic was masqueraded");
    assert!(host.counter("routed") >= 5 && host.counter("routed_in") >= 5, "{}", host.dp_ok(&["stats"]));

    let options = &host.dp_json(&["network", "inspect", "routed"])[0]["Options"];
    assert_eq!(options[ROUTED_OPTION], "routed", "inspect does not show the gateway mode: {options}");

    // A NAT network beside it keeps masquerading.
    host.run_sleeper("n", &["--network", "natted"]);
    let log = fetch_from_outside4(&host, "n");
    assert!(log.contains(UPLINK_ADDR), "the NAT network's request was not masqueraded: {log}");
    assert!(!log.contains("10.48.0."), "a NAT container's address leaked: {log}");

    // Routed IPv4 needs IPv4; other modes are refused by name.
    let err = host.dp_err(&[
        "network",
        "create",
        "--ipv4=false",
        "--ipv6",
        "-o",
        &format!("{ROUTED_OPTION}=routed"),
        "v6only",
    ]);
    assert!(err.contains("gateway_mode_ipv4=routed") && err.contains("--ipv4=false"), "{err}");
    let err = host.dp_err(&[
        "network",
        "create",
        "--ipv4=false",
        "--ipv6",
        "-o",
        "gateway_mode_ipv4=nat-unprotected",
        "v6only",
    ]);
    assert!(err.contains("gateway_mode_ipv4=nat-unprotected") && err.contains("--ipv4=false"), "{err}");

    isolated_network_keeps_to_its_own_containers(&host);
}

/// Docker 28.2's `isolated` mode on both families, in the same daemon: containers talk to
/// each other and resolve each other's names, and reach nothing else; the host reaches
/// them not.
fn isolated_network_keeps_to_its_own_containers(host: &Host) {
    let isolated4 = format!("{ROUTED_OPTION}=isolated");
    let isolated = ["--subnet", "10.46.0.0/24", "--ipv6", "--subnet", "fd00:46::/64", "-o", &isolated4];
    let err = host.dp_err(&[&["network", "create"], &isolated[..], &["loose"]].concat());
    assert!(err.contains("gateway_mode_ipv4=isolated is for an --internal network only"), "{err}");
    let both = ["--internal", "-o", "gateway_mode_ipv6=isolated"];
    host.dp_ok(&[&["network", "create"], &isolated[..], &both[..], &["sealed"]].concat());
    let options = &host.dp_json(&["network", "inspect", "sealed"])[0]["Options"];
    assert_eq!(options[ROUTED_OPTION], "isolated", "{options}");
    assert_eq!(options["com.docker.network.bridge.gateway_mode_ipv6"], "isolated", "{options}");
    let err = host.dp_err(&["run", "-d", "--network", "sealed", "-p", "8080:80", "--", "sleep", "1"]);
    assert!(err.contains("network sealed is isolated (gateway_mode_ipv4=isolated)"), "{err}");

    host.run_sleeper("i1", &["--network", "sealed"]);
    host.run_sleeper("i2", &["--network", "sealed"]);
    let i2 = host.ip_of("i2");
    let i2_v6 =
        host.dp_json(&["inspect", "i2"])[0]["NetworkSettings"]["Networks"]["sealed"]["GlobalIPv6Address"]
            .as_str()
            .unwrap()
            .to_string();
    let routes = host.exec("i1", "ip route; ip -6 route");
    let routes = String::from_utf8_lossy(&routes.stdout);
    assert!(!routes.contains("default"), "an isolated container has a default route: {routes}");
    assert!(routes.contains("10.46.0.0/24") && routes.contains("fd00:46::/64"), "{routes}");

    assert!(host.ping("i1", &i2), "containers of an isolated network reach each other");
    assert!(host.ping("i1", &i2_v6), "over IPv6 too");
    let dig = |args: &str| {
        let out = host.exec("i1", &format!("dig +short +time=2 +tries=1 {args}"));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(dig("i2"), i2, "the resolver answers over UDP");
    assert_eq!(dig("+tcp AAAA i2"), i2_v6, "and TCP, and AAAA");
    assert_eq!(dig("@fd00:46::1 i2"), i2, "and on the gateway's IPv6 address");

    let dropped = host.counter("dropped_isolated");
    assert!(!host.ping("i1", "10.46.0.1"), "an isolated container pinged the host");
    assert!(!host.ping("i1", "fd00:46::1"), "an isolated container pinged the host over IPv6");
    // Dropped, not refused by the host (curl's 7): the connection times out (28).
    let fetch = host.exec("i1", "curl -s -m 2 -o /dev/null http://10.46.0.1:80/");
    assert_eq!(fetch.status.code(), Some(28), "the host answered an isolated container on port 80");
    // A route of its own does not take it out: the datapath drops what leaves the subnet.
    let route = host.exec("i1", "ip route add default via 10.46.0.1");
    assert!(route.status.success(), "{}", String::from_utf8_lossy(&route.stderr));
    assert!(!host.ping("i1", EXTERNAL_ADDR), "an isolated container reached the outside");
    assert!(!host.ping("i1", UPLINK_ADDR), "an isolated container reached the host's uplink address");
    let host_pings = |addr: &str| host.sh(&format!("ping -c 1 -W 1 {addr}")).status.success();
    assert!(!host_pings(&i2), "the host reached an isolated container");
    assert!(!host_pings(&i2_v6), "the host reached an isolated container over IPv6");
    // Nor does what the host sends one way enter the network.
    let before = host.counter("dropped_isolated");
    let send = format!(
        "python3 -c \"import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('{i2}', 9999))\""
    );
    host.sh_ok(&send);
    assert!(
        eventually(Duration::from_secs(2), || host.counter("dropped_isolated") > before),
        "a datagram from the host entered the isolated network"
    );
    assert!(
        host.counter("dropped_isolated") >= dropped + 6,
        "the drops were not counted as isolated: {}",
        host.dp_ok(&["stats"])
    );
}

#[test]
fn from_outside_a_routed_container_answers_on_its_published_port_and_to_ping_only() {
    let host = routed_host();
    // Port 80 published, port 81 served but not published.
    host.run_web_on_80_and_81("web", &["--network", "routed", "-p", "8080:80"], false);
    let web = host.ip_of("web");

    assert!(
        host.fetch_from_outside(&web, 80),
        "the published container port is unreachable on the container's own address"
    );
    assert_saw_the_client(&host, "web");
    let dropped = host.counter("dropped_unpublished");
    assert!(!host.fetch_from_outside(&web, 81), "an unpublished port was reachable from outside");
    assert!(
        host.counter("dropped_unpublished") > dropped,
        "the unpublished port's SYN was not counted as dropped"
    );
    let ping = host.external_command("ping").args(["-c", "1", "-W", "2", &web]).output().unwrap();
    assert!(ping.status.success(), "a routed container does not answer ping from outside");

    // The host port keeps working on the uplink's address.
    assert!(host.fetch_from_outside(UPLINK_ADDR, 8080), "the host port stopped working");

    // A NAT container's own address takes nothing from outside, published or not.
    host.dp_ok(&[
        "run",
        "-d",
        "--name",
        "natweb",
        "--network",
        "natted",
        "-p",
        "8081:80",
        "--",
        "python3",
        "-m",
        "http.server",
        "80",
    ]);
    let natweb = host.ip_of("natweb");
    assert!(
        eventually(Duration::from_secs(10), || host.fetch_from_outside(UPLINK_ADDR, 8081)),
        "the NAT container's published host port does not answer"
    );
    assert!(
        !host.fetch_from_outside(&natweb, 80),
        "a NAT container's own address was reachable from outside"
    );

    // An unprotected network's container: every port of its own address answers from
    // outside, published or not, and ping; its published host port too.
    host.run_web_on_80_and_81("openweb", &["--network", "open", "-p", "8082:80"], false);
    let openweb = host.ip_of("openweb");
    assert!(
        host.fetch_from_outside(&openweb, 81),
        "an unprotected container's unpublished port is unreachable by route"
    );
    assert_saw_the_client(&host, "openweb");
    assert!(host.fetch_from_outside(&openweb, 80), "its published container port is unreachable by route");
    assert!(host.fetch_from_outside(UPLINK_ADDR, 8082), "its published host port failed");
    let ping = host.external_command("ping").args(["-c", "1", "-W", "2", &openweb]).output().unwrap();
    assert!(ping.status.success(), "an unprotected container does not answer ping from outside");
    // Its own traffic out is masqueraded.
    let log = fetch_from_outside4(&host, "openweb");
    assert!(log.contains(UPLINK_ADDR), "the unprotected network's request was not masqueraded: {log}");
    assert!(!log.contains(&openweb), "an unprotected container's address leaked: {log}");
    let options = &host.dp_json(&["network", "inspect", "open"])[0]["Options"];
    assert_eq!(
        options[ROUTED_OPTION], "nat-unprotected",
        "inspect does not show the gateway mode: {options}"
    );

    // The firewall applies on containers' own addresses, `--port` being the port the
    // client addresses there: the routed container port, any port of an unprotected one;
    // not the host ports.
    let rule = host.dp_ok(&["firewall", "add", "--source", EXTERNAL_ADDR, "--port", "80", "deny"]);
    assert!(!host.fetch_from_outside(&openweb, 80), "the firewall let the outside in to an unprotected port");
    assert!(!host.fetch_from_outside(&web, 80), "the firewall did not apply to the routed container port");
    assert!(host.counter("dropped_firewall") >= 2, "{}", host.dp_ok(&["stats"]));
    assert!(host.fetch_from_outside(&openweb, 81), "the firewall refused a port outside its rule");
    assert!(host.fetch_from_outside(UPLINK_ADDR, 8082), "a rule for port 80 refused host port 8082");
    host.dp_ok(&["firewall", "rm", rule.trim()]);
    assert!(host.fetch_from_outside(&openweb, 80), "the unprotected port stayed closed after `firewall rm`");
}
