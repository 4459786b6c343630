//! Docker's routed IPv6 gateway mode
//! (`-o com.docker.network.bridge.gateway_mode_ipv6=routed`) with real tools: the external
//! namespace routes the network's subnet to the host; containers reach it with their own
//! IPv6 address as the source; from outside, a container's own address answers on its
//! published (container) port and to ping, and on nothing else. A NAT66 network beside it
//! keeps masquerading, and its container addresses take nothing from outside. An
//! unprotected one (`gateway_mode_ipv6=nat-unprotected`) masquerades too, and from
//! outside its container's own IPv6 address answers on every port.

use std::{process::Stdio, time::Duration};

use dataplane_tests::{EXTERNAL_ADDR6, Host, UPLINK_ADDR6, eventually};

const ROUTED_OPTION: &str = "com.docker.network.bridge.gateway_mode_ipv6";

/// A host whose uplink has a global IPv6 address, with a routed dual-stack network
/// `routed` (fd00:45::/64), a NAT66 one `natted` (fd00:46::/64) and an unprotected one
/// `open` (fd00:44::/64); the external namespace routes the subnets to the host, as a
/// routed network's outside does.
fn routed_host() -> Host {
    let host = Host::start_with_ipv6_uplink();
    host.dp_ok(&[
        "network",
        "create",
        "--ipv6",
        "--subnet",
        "10.45.0.0/24",
        "--subnet",
        "fd00:45::/64",
        "-o",
        &format!("{ROUTED_OPTION}=routed"),
        "routed",
    ]);
    host.create_dual_stack_network("natted", "10.46.0.0/24", "fd00:46::/64");
    host.dp_ok(&[
        "network",
        "create",
        "--ipv6",
        "--subnet",
        "10.44.0.0/24",
        "--subnet",
        "fd00:44::/64",
        "-o",
        "gateway_mode_ipv6=nat-unprotected",
        "open",
    ]);
    host.external_sh_ok(&format!(
        "ip -6 route add fd00:45::/64 via {UPLINK_ADDR6} && ip -6 route add fd00:46::/64 via {UPLINK_ADDR6} && \
         ip -6 route add fd00:44::/64 via {UPLINK_ADDR6}"
    ));
    host
}

/// The container's IPv6 address on `network`.
fn ip6_of(host: &Host, container: &str, network: &str) -> String {
    let inspect = host.dp_json(&["inspect", container]);
    let address = &inspect[0]["NetworkSettings"]["Networks"][network]["GlobalIPv6Address"];
    address.as_str().unwrap_or_else(|| panic!("{container} has no IPv6 address on {network}")).to_string()
}

/// Echo requests the external namespace sees arrive while `ping` runs: tcpdump's lines.
fn echo_requests_seen_outside(host: &Host, ping: impl FnOnce()) -> String {
    let capture = host
        .external_command("timeout")
        .args(["8", "tcpdump", "-l", "-n", "-i", "eth0", "-c", "1", "icmp6 and ip6[40] == 128"])
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

#[test]
fn containers_of_a_routed_network_reach_the_outside_with_their_own_address() {
    let host = routed_host();
    host.run_sleeper("c", &["--network", "routed"]);
    let c6 = ip6_of(&host, "c", "routed");

    let seen = echo_requests_seen_outside(&host, || {
        let ping = host.exec("c", &format!("ping -6 -c 5 -i 0.3 -W 2 {EXTERNAL_ADDR6}"));
        assert!(
            ping.status.success(),
            "ping -6 to the outside failed: {}",
            String::from_utf8_lossy(&ping.stdout)
        );
    });
    assert!(
        seen.contains(&format!("{c6} > {EXTERNAL_ADDR6}")),
        "the outside saw another ping source: {seen}"
    );

    let log = host.fetch_from_outside6("c");
    assert!(log.contains(&c6), "the outside saw another source than the container's {c6}: {log}");
    assert!(!log.contains(UPLINK_ADDR6), "a routed network's traffic was masqueraded: {log}");
    assert_eq!(host.counter("masqueraded"), 0, "a routed network's traffic was masqueraded");
    assert!(host.counter("routed") >= 5 && host.counter("routed_in") >= 5, "{}", host.dp_ok(&["stats"]));

    let options = &host.dp_json(&["network", "inspect", "routed"])[0]["Options"];
    assert_eq!(options[ROUTED_OPTION], "routed", "inspect does not show the gateway mode: {options}");

    // A NAT66 network beside it keeps masquerading.
    host.run_sleeper("n", &["--network", "natted"]);
    let log = host.fetch_from_outside6("n");
    assert!(log.contains(UPLINK_ADDR6), "the NAT66 network's request was not masqueraded: {log}");
    assert!(!log.contains("fd00:46"), "a NAT66 container's address leaked: {log}");

    // Routed mode routes IPv6; a network without it is refused by name.
    let err = host.dp_err(&["network", "create", "-o", &format!("{ROUTED_OPTION}=routed"), "v4only"]);
    assert!(err.contains("gateway_mode_ipv6=routed") && err.contains("--ipv6"), "{err}");
    let err = host.dp_err(&["network", "create", "-o", "gateway_mode_ipv6=nat-unprotected", "v4only"]);
    assert!(err.contains("gateway_mode_ipv6=nat-unprotected") && err.contains("--ipv6"), "{err}");
    let err = host.dp_err(&["network", "create", "--internal", "-o", "gateway_mode_ipv6=isolated", "v4only"]);
    assert!(err.contains("gateway_mode_ipv6=isolated") && err.contains("--ipv6"), "{err}");
    let err = host.dp_err(&["network", "create", "--ipv6", "-o", "gateway_mode_ipv6=isolated", "loose"]);
    assert!(err.contains("gateway_mode_ipv6=isolated is for an --internal network only"), "{err}");
}

#[test]
fn from_outside_a_routed_container_answers_on_its_published_port_and_to_ping_only() {
    let host = routed_host();
    // Port 80 published, port 81 served but not published.
    host.run_web_on_80_and_81("web", &["--network", "routed", "-p", "8080:80"], true);
    let web6 = ip6_of(&host, "web", "routed");

    assert!(
        host.fetch_from_outside(&format!("[{web6}]"), 80),
        "the published container port is unreachable on the container's own address"
    );
    assert!(
        eventually(Duration::from_secs(3), || host.container_log("web").contains(EXTERNAL_ADDR6)),
        "the container did not see the client's own address: {}",
        host.container_log("web")
    );
    let dropped = host.counter("dropped_unpublished");
    assert!(
        !host.fetch_from_outside(&format!("[{web6}]"), 81),
        "an unpublished port was reachable from outside"
    );
    assert!(
        host.counter("dropped_unpublished") > dropped,
        "the unpublished port's SYN was not counted as dropped"
    );
    let ping = host.external_command("ping").args(["-6", "-c", "1", "-W", "2", &web6]).output().unwrap();
    assert!(ping.status.success(), "a routed container does not answer ping from outside");

    // The host port keeps working on the uplink's address.
    assert!(host.fetch_from_outside(&format!("[{UPLINK_ADDR6}]"), 8080), "the host port stopped working");

    // A NAT66 container's own address takes nothing from outside, published or not.
    host.dp_ok(&[
        "run",
        "-d",
        "--name",
        "natweb",
        "--network",
        "natted",
        "-p",
        "8090:80",
        "--",
        "python3",
        "-m",
        "http.server",
        "80",
        "--bind",
        "::",
    ]);
    let probe = "curl -6 -sf -o /dev/null http://[::1]:80/";
    assert!(eventually(Duration::from_secs(10), || host.exec("natweb", probe).status.success()));
    let natweb6 = ip6_of(&host, "natweb", "natted");
    assert!(
        !host.fetch_from_outside(&format!("[{natweb6}]"), 80),
        "a NAT66 container was reachable by route"
    );
    assert!(
        host.fetch_from_outside(&format!("[{UPLINK_ADDR6}]"), 8090),
        "the NAT66 network's host port failed"
    );

    // An unprotected network's container: every port of its own IPv6 address answers from
    // outside, and ping; its own traffic out is masqueraded.
    host.run_web_on_80_and_81("openweb", &["--network", "open"], true);
    let openweb6 = ip6_of(&host, "openweb", "open");
    assert!(
        host.fetch_from_outside(&format!("[{openweb6}]"), 81),
        "an unprotected container's unpublished port is unreachable by route"
    );
    assert!(
        eventually(Duration::from_secs(3), || host.container_log("openweb").contains(EXTERNAL_ADDR6)),
        "the container did not see the client's own address: {}",
        host.container_log("openweb")
    );
    let ping = host.external_command("ping").args(["-6", "-c", "1", "-W", "2", &openweb6]).output().unwrap();
    assert!(ping.status.success(), "an unprotected container does not answer ping -6 from outside");
    let log = host.fetch_from_outside6("openweb");
    assert!(log.contains(UPLINK_ADDR6), "the unprotected network's request was not masqueraded: {log}");
    assert!(!log.contains("fd00:44"), "an unprotected container's address leaked: {log}");
    let options = &host.dp_json(&["network", "inspect", "open"])[0]["Options"];
    assert_eq!(
        options[ROUTED_OPTION], "nat-unprotected",
        "inspect does not show the gateway mode: {options}"
    );
}
