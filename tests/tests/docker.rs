//! Docker itself puts its containers on dataplane networks: dockerd 20.10 in the test's
//! host namespace (no iptables, no default bridge) drives our daemon's network plugin
//! (`docker network create -d PLUGIN`), as docs/runtimes.md's Docker section shows. Each test
//! has a plugin name of its own.

use std::{process::Output, time::Duration};

use serde_json::json;

use dataplane_tests::{
    EXTERNAL_ADDR, Host, UPLINK_ADDR,
    docker::{DockerPlugin, Dockerd, IMAGE},
    eventually,
};

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// A host with an uplink whose daemon serves `plugin`.
fn host_for(plugin: &DockerPlugin) -> Host {
    Host::start_with_external_and(&[plugin.daemon_env()])
}

/// Networks of our plugin on 10.20.0.0/24 and 10.21.0.0/24, a sleeping container on
/// each; returns the second container's address.
fn sleepers_on_two_networks(
    docker: &Dockerd,
    plugin: &DockerPlugin,
    networks: [&str; 2],
    names: [&str; 2],
) -> String {
    for ((network, subnet), name) in networks.iter().zip(["10.20.0.0/24", "10.21.0.0/24"]).zip(names) {
        create_network(docker, plugin, subnet, network);
        docker.run(name, network, &[], &["sleep", "600"]);
    }
    docker.ip_of(names[1], networks[1])
}

/// `docker network create` of a network of our plugin on `subnet`.
fn create_network(docker: &Dockerd, plugin: &DockerPlugin, subnet: &str, name: &str) {
    docker.ok(&["network", "create", "-d", &plugin.name, "--subnet", subnet, name]);
}

/// busybox httpd serving `hello from <name>` on port 80.
fn serve_hello(name: &str) -> Vec<String> {
    let script = format!("echo hello from {name} > /www/index.html && exec httpd -f -p 80 -h /www");
    vec!["sh".into(), "-c".into(), script]
}

fn run_hello(docker: &Dockerd, name: &str, network: &str, extra: &[&str]) -> String {
    let command = serve_hello(name);
    let command: Vec<&str> = command.iter().map(String::as_str).collect();
    docker.run(name, network, extra, &command)
}

/// What the external namespace gets from `url` (empty when it gets nothing).
fn fetch_from_outside(host: &Host, url: &str) -> String {
    let out = host.external_command("curl").args(["-s", "-m", "2", url]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The endpoints our daemon lists on a network: (owner, address).
fn endpoints(host: &Host, network: &str) -> Vec<(String, String)> {
    let info = host.dp_json(&["network", "inspect", network]);
    let containers = info[0]["Containers"].as_object().cloned().unwrap_or_default();
    containers
        .values()
        .map(|c| (c["Owner"].as_str().unwrap().to_string(), c["IPv4Address"].as_str().unwrap().to_string()))
        .collect()
}

/// The MAC our daemon gives an address Docker gave: `02:42:` and the address.
fn mac_of(ip: &str) -> String {
    let octets: Vec<u8> = ip.split('.').map(|o| o.parse().unwrap()).collect();
    format!("02:42:{:02x}:{:02x}:{:02x}:{:02x}", octets[0], octets[1], octets[2], octets[3])
}

fn assert_no_firewall_rule(host: &Host) {
    for save in ["iptables-save", "ip6tables-save"] {
        let rules = host.sh_ok(save);
        let appended: Vec<_> = rules.lines().filter(|l| l.starts_with("-A")).collect();
        assert!(appended.is_empty(), "{save} in the host namespace lists rules: {appended:?}");
    }
    let ruleset = host.sh_ok("nft list ruleset");
    assert!(ruleset.trim().is_empty(), "nft lists a ruleset in the host namespace:\n{ruleset}");
}

/// `docker network create --ipv6` with an IPv6 subnet: our network is dual-stack on
/// Docker's pools, Docker's IPAM gives each container an IPv6 address, which our endpoint
/// takes, and Join's IPv6 gateway becomes each container's IPv6 default route.
#[test]
fn docker_containers_on_a_dual_stack_network_ping_each_other_over_ipv6() {
    let plugin = DockerPlugin::unique();
    let host = host_for(&plugin);
    let docker = Dockerd::start(&host);
    let subnets = ["--subnet", "10.22.0.0/24", "--subnet", "fd00:22::/64"];
    docker.ok(&[&["network", "create", "-d", plugin.name.as_str(), "--ipv6"][..], &subnets, &["dual"]].concat());
    let ours = host.dp_json(&["network", "inspect", &docker.dataplane_network("dual")]);
    assert_eq!(ours[0]["EnableIPv6"], true, "our network has no IPv6: {ours}");
    assert_eq!(
        (&ours[0]["IPAM"]["Config"][1]["Subnet"], &ours[0]["IPAM"]["Config"][1]["Gateway"]),
        (&json!("fd00:22::/64"), &json!("fd00:22::1")),
        "our network has not Docker's IPv6 pool: {ours}"
    );

    docker.run("alpha", "dual", &[], &["sleep", "600"]);
    docker.run("beta", "dual", &[], &["sleep", "600"]);
    let beta = docker.inspect("beta")[0]["NetworkSettings"]["Networks"]["dual"].clone();
    let beta6 = beta["GlobalIPv6Address"].as_str().unwrap_or_default().to_string();
    assert!(beta6.starts_with("fd00:22::"), "docker inspect shows no IPv6 address on the subnet: {beta}");
    assert_eq!(beta["IPv6Gateway"], "fd00:22::1", "docker inspect shows another IPv6 gateway: {beta}");
    let listed = host.dp_json(&["network", "inspect", &docker.dataplane_network("dual")]);
    let ipv6_listed: Vec<&str> = listed[0]["Containers"]
        .as_object()
        .unwrap()
        .values()
        .filter_map(|c| c["IPv6Address"].as_str())
        .collect();
    assert!(
        ipv6_listed.contains(&format!("{beta6}/64").as_str()),
        "our endpoint has not Docker's IPv6 address: {listed}"
    );
    let inside = docker.exec("beta", "ip -6 addr show dev eth0; ip -6 route");
    assert!(
        text(&inside).contains(&format!("inet6 {beta6}/64"))
            && text(&inside).contains("default via fd00:22::1"),
        "beta has not its IPv6 address and default route: {}",
        text(&inside)
    );
    for target in [beta6.as_str(), "fd00:22::1"] {
        let ping = docker.exec("alpha", &format!("ping -6 -c 1 -W 2 {target}"));
        assert!(ping.status.success(), "alpha does not reach {target} over IPv6: {}", text(&ping));
    }
}

#[test]
fn docker_containers_reach_each_other_by_address_and_by_name() {
    let plugin = DockerPlugin::unique();
    let host = host_for(&plugin);
    let docker = Dockerd::start(&host);
    create_network(&docker, &plugin, "10.20.0.0/24", "web");
    let ours = docker.dataplane_network("web");
    let net = host.dp_json(&["network", "inspect", &ours]);
    assert_eq!(
        net[0]["IPAM"]["Config"][0]["Subnet"], "10.20.0.0/24",
        "our network has another subnet: {net}"
    );
    assert_eq!(net[0]["IPAM"]["Config"][0]["Gateway"], "10.20.0.1", "our network has another gateway: {net}");

    // Without --subnet, Docker's IPAM picks a pool clear of the host's routes (our
    // default network's among them), and our network takes it.
    docker.ok(&["network", "create", "-d", &plugin.name, "pooled"]);
    let pool = docker.ok(&["network", "inspect", "-f", "{{(index .IPAM.Config 0).Subnet}}", "pooled"]);
    let pooled = host.dp_json(&["network", "inspect", &docker.dataplane_network("pooled")]);
    assert_eq!(
        pooled[0]["IPAM"]["Config"][0]["Subnet"],
        pool.as_str(),
        "our network has not Docker's pool: {pooled}"
    );

    docker.run("alpha", "web", &[], &["sleep", "600"]);
    docker.run("beta", "web", &["--network-alias", "backend"], &["sleep", "600"]);
    let beta = docker.ip_of("beta", "web");
    assert!(beta.starts_with("10.20.0."), "beta's address {beta} is not on the network's subnet");
    let endpoint_id = docker.ok(&["inspect", "-f", "{{.NetworkSettings.Networks.web.EndpointID}}", "beta"]);
    assert!(
        endpoints(&host, &ours).contains(&(format!("docker:{endpoint_id}"), format!("{beta}/24"))),
        "network inspect does not list beta's endpoint as Docker's: {:?}",
        endpoints(&host, &ours)
    );
    let info = host.dp_json(&["network", "inspect", &ours]);
    assert!(
        info[0]["Containers"].get(&endpoint_id).is_some(),
        "our endpoint does not keep Docker's EndpointID {endpoint_id}: {info}"
    );
    // Docker's network is Docker's: our own run and network rm keep off it.
    let err = host.dp_err(&["run", "-d", "--network", &ours, "--", "sleep", "600"]);
    assert!(err.contains("is Docker's") && err.contains("docker run --network"), "{err}");
    let err = host.dp_err(&["network", "rm", &ours]);
    assert!(err.contains("is Docker's") && err.contains("docker network rm"), "{err}");
    // Docker moved our veth's inner end in and named it; the MAC is the one we chose.
    let link = docker.exec("beta", "ip -o link show eth0");
    let mac = mac_of(&beta);
    assert!(text(&link).contains(&mac), "beta's eth0 has not the MAC {mac}: {}", text(&link));

    // --ip and --mac-address are the container's.
    docker.run(
        "gamma",
        "web",
        &["--ip", "10.20.0.50", "--mac-address", "02:42:0a:14:00:77"],
        &["sleep", "600"],
    );
    assert_eq!(docker.ip_of("gamma", "web"), "10.20.0.50", "--ip was not the container's address");
    let link = docker.exec("gamma", "ip -o link show eth0");
    assert!(text(&link).contains("02:42:0a:14:00:77"), "--mac-address is not eth0's: {}", text(&link));
    let ping = docker.exec("alpha", "ping -c 1 -W 2 10.20.0.50");
    assert!(ping.status.success(), "alpha does not reach gamma at its --ip: {}", text(&ping));

    let forwarded = host.counter("forwarded");
    let ping = docker.exec("alpha", &format!("ping -c 3 -W 2 {beta}"));
    assert!(ping.status.success(), "alpha does not reach beta at {beta}: {}", text(&ping));
    assert!(host.counter("forwarded") >= forwarded + 6, "the pings did not take the fast path");
    // Docker's embedded DNS answers for its containers and their aliases on a plugin's
    // network.
    for name in ["beta", "backend"] {
        let ping = docker.exec("alpha", &format!("ping -c 1 -W 2 {name}"));
        assert!(ping.status.success(), "alpha does not reach beta by the name {name}: {}", text(&ping));
        assert!(text(&ping).contains(&format!("({beta})")), "{name} resolved elsewhere: {}", text(&ping));
    }
}

#[test]
fn a_published_port_is_reachable_from_outside_with_no_firewall_rule() {
    let plugin = DockerPlugin::unique();
    let host = host_for(&plugin);
    let docker = Dockerd::start(&host);
    create_network(&docker, &plugin, "10.20.0.0/24", "web");
    run_hello(&docker, "api", "web", &["-p", "8080:80"]);
    let url = format!("http://{UPLINK_ADDR}:8080/");
    assert!(
        eventually(Duration::from_secs(5), || fetch_from_outside(&host, &url).contains("hello from api")),
        "-p 8080:80 is not reachable from outside at {url}: {:?}\n{}",
        fetch_from_outside(&host, &url),
        host.daemon_log()
    );
    // Docker shows no ports for a plugin's network; our network inspect does.
    let ours = host.dp_json(&["network", "inspect", &docker.dataplane_network("web")]);
    let ports: Vec<_> =
        ours[0]["Containers"].as_object().unwrap().values().map(|c| c["Ports"].clone()).collect();
    assert_eq!(
        ports,
        [serde_json::json!({"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}]})],
        "network inspect does not show the published port"
    );
    // Our daemon holds the port: another container cannot take it, and says which.
    let err = second_publisher_of_8080(&docker);
    assert!(
        err.contains("host port 0.0.0.0:8080/tcp is already in use"),
        "a taken port was not refused by name: {err}"
    );
    // A host port range takes its first free port.
    run_hello(&docker, "range1", "web", &["-p", "9000-9001:80"]);
    run_hello(&docker, "range2", "web", &["-p", "9000-9001:80"]);
    for (port, name) in [(9000, "range1"), (9001, "range2")] {
        let url = format!("http://{UPLINK_ADDR}:{port}/");
        assert!(
            eventually(Duration::from_secs(5), || fetch_from_outside(&host, &url)
                .contains(&format!("hello from {name}"))),
            "{url} does not reach {name}: {:?}",
            fetch_from_outside(&host, &url)
        );
    }
    // The container reaches the outside, masqueraded (the outside has no route back to
    // the network).
    let ping = docker.exec("api", &format!("ping -c 1 -W 2 {EXTERNAL_ADDR}"));
    assert!(ping.status.success(), "api does not reach the outside: {}", text(&ping));
    assert_no_firewall_rule(&host);

    // Firewall rules name a Docker container by its endpoint (Docker tells a plugin
    // neither the container's name nor its ID); its name is refused, saying so.
    let err = host.dp_err(&["firewall", "add", "--container", "api", "--source", EXTERNAL_ADDR, "deny"]);
    assert!(err.contains("docker:ENDPOINT_ID"), "the error does not name the fix: {err}");
    let endpoint = docker.ok(&["inspect", "-f", "{{.NetworkSettings.Networks.web.EndpointID}}", "api"]);
    let target = format!("docker:{}", &endpoint[..12]);
    let rule = host.dp_ok(&["firewall", "add", "--container", &target, "--source", EXTERNAL_ADDR, "deny"]);
    assert!(
        eventually(Duration::from_secs(3), || !fetch_from_outside(&host, &url).contains("hello from api")),
        "the rule for {target} does not block api's port"
    );
    let other = format!("http://{UPLINK_ADDR}:9000/");
    assert!(
        fetch_from_outside(&host, &other).contains("hello from range1"),
        "the rule blocked another container"
    );
    host.dp_ok(&["firewall", "rm", rule.trim()]);
    assert!(
        eventually(Duration::from_secs(3), || fetch_from_outside(&host, &url).contains("hello from api")),
        "api's port stays blocked after `firewall rm`"
    );
}

/// Docker 28's routed mode asked through `docker network create -o`: the outside, which
/// routes the network's subnet to the host, reaches the container's own address on its
/// published container port, and nothing else of it; the container reaches the outside
/// with its own address.
#[test]
fn a_routed_docker_network_s_container_is_reached_directly_on_its_published_port() {
    let plugin = DockerPlugin::unique();
    let host = host_for(&plugin);
    let docker = Dockerd::start(&host);
    docker.ok(&[
        "network",
        "create",
        "-d",
        &plugin.name,
        "--subnet",
        "10.22.0.0/24",
        "-o",
        "com.docker.network.bridge.gateway_mode_ipv4=routed",
        "routed",
    ]);
    let options = &host.dp_json(&["network", "inspect", &docker.dataplane_network("routed")])[0]["Options"];
    assert_eq!(options["com.docker.network.bridge.gateway_mode_ipv4"], "routed", "{options}");
    host.external_sh_ok(&format!("ip route add 10.22.0.0/24 via {UPLINK_ADDR}"));
    run_hello(&docker, "api", "routed", &["-p", "8080:80"]);
    let api = docker.ip_of("api", "routed");
    let direct = format!("http://{api}:80/");
    assert!(
        eventually(Duration::from_secs(5), || fetch_from_outside(&host, &direct).contains("hello from api")),
        "the published container port is not reachable at {direct}: {}",
        host.daemon_log()
    );
    let host_port = format!("http://{UPLINK_ADDR}:8080/");
    assert!(
        fetch_from_outside(&host, &host_port).contains("hello from api"),
        "the host port stopped working"
    );
    // Port 81 is served too, not published: refused from outside.
    docker.exec("api", "httpd -p 81 -h /www");
    let unpublished = format!("http://{api}:81/");
    assert!(
        docker.exec("api", "wget -q -O - http://127.0.0.1:81/").status.success(),
        "api does not serve 81"
    );
    assert_eq!(fetch_from_outside(&host, &unpublished), "", "an unpublished port was reachable from outside");
    let ping = host.external_command("ping").args(["-c", "1", "-W", "2", &api]).output().unwrap();
    assert!(ping.status.success(), "a routed container does not answer ping from outside");
    // The container reaches the outside with its own address: the outside routes back.
    let ping = docker.exec("api", &format!("ping -c 1 -W 2 {EXTERNAL_ADDR}"));
    assert!(ping.status.success(), "api does not reach the outside: {}", text(&ping));
    assert_eq!(host.counter("masqueraded"), 0, "a routed network's traffic was masqueraded");
    assert!(host.counter("routed") >= 1, "{}", host.dp_ok(&["stats"]));
}

#[test]
fn docker_rm_and_network_rm_leave_nothing_behind() {
    let plugin = DockerPlugin::unique();
    let host = host_for(&plugin);
    let docker = Dockerd::start(&host);
    create_network(&docker, &plugin, "10.20.0.0/24", "web");
    let ours = docker.dataplane_network("web");
    run_hello(&docker, "api", "web", &["-p", "8080:80"]);
    docker.run("client", "web", &[], &["sleep", "600"]);
    assert_eq!(host.map_entries("ENDPOINTS"), 2, "two containers, two endpoint entries");
    assert_eq!(host.map_entries("PUBLISHED"), 1, "one published port");

    docker.ok(&["rm", "-f", "api", "client"]);
    assert_eq!(host.map_entries("ENDPOINTS"), 0, "docker rm -f left endpoint entries");
    assert_eq!(host.map_entries("PUBLISHED"), 0, "docker rm -f left a published port");
    assert_eq!(host.configured_interfaces(), 0, "docker rm -f left interfaces in the programs' tables");
    let links = host.links();
    assert!(
        !links.iter().any(|l| l.starts_with("veth") || l.starts_with("dp") && l != "dp0"),
        "docker rm -f left links: {links:?}"
    );
    // The reservation went: a host process binds the port.
    host.sh_ok("python3 -c 'import socket; s = socket.socket(); s.bind((\"0.0.0.0\", 8080))'");

    docker.ok(&["network", "rm", "web"]);
    let listed = host.dp_ok(&["network", "ls"]);
    assert!(!listed.contains(&ours), "docker network rm left our network {ours}:\n{listed}");
    assert!(
        !host.links().iter().any(|l| l.starts_with("br-")),
        "docker network rm left a bridge: {:?}",
        host.links()
    );
    assert_eq!(
        docker_state(&host),
        serde_json::json!({"networks": {}, "endpoints": {}, "pools": {}}),
        "the state keeps Docker's IDs"
    );
    assert_no_firewall_rule(&host);
}

#[test]
fn bad_options_are_refused_naming_the_option_and_what_is_supported() {
    let plugin = DockerPlugin::unique();
    let host = host_for(&plugin);
    let docker = Dockerd::start(&host);
    let err = docker.err(&[
        "network",
        "create",
        "-d",
        &plugin.name,
        "--subnet",
        "10.20.0.0/24",
        "-o",
        "parent=eth0",
        "bad",
    ]);
    assert!(err.contains("-o parent: unknown option for the dataplane driver"), "{err}");
    assert!(
        err.contains("supported: com.docker.network.bridge.enable_icc, com.docker.network.driver.mtu"),
        "{err}"
    );
    let err = docker.err(&[
        "network",
        "create",
        "-d",
        &plugin.name,
        "--subnet",
        "10.20.0.0/24",
        "-o",
        "com.docker.network.driver.mtu=9",
        "bad",
    ]);
    assert!(err.contains("expected an MTU between 68 and 65535"), "{err}");
    let listed = host.dp_ok(&["network", "ls"]);
    assert!(!listed.contains("docker-"), "a refused network was made:\n{listed}");

    // The options we have are honoured: no traffic between containers with icc off.
    docker.ok(&[
        "network",
        "create",
        "-d",
        &plugin.name,
        "--subnet",
        "10.20.0.0/24",
        "-o",
        "com.docker.network.bridge.enable_icc=false",
        "-o",
        "com.docker.network.driver.mtu=1400",
        "quiet",
    ]);
    docker.run("one", "quiet", &[], &["sleep", "600"]);
    docker.run("two", "quiet", &[], &["sleep", "600"]);
    let mtu = docker.exec("one", "cat /sys/class/net/eth0/mtu");
    assert_eq!(text(&mtu).trim(), "1400", "the MTU option did not reach the container's interface");
    let two = docker.ip_of("two", "quiet");
    // ARP between isolated bridge ports fails, so nothing even tries...
    let ping = docker.exec("one", &format!("ping -c 1 -W 1 {two}"));
    assert!(!ping.status.success(), "one reached two on a network with icc off: {}", text(&ping));
    // ...and with the neighbour known anyway, the programs drop the packets.
    let sandbox = docker.ok(&["inspect", "-f", "{{.NetworkSettings.SandboxKey}}", "one"]);
    let neighbour = format!("ip neigh replace {two} lladdr {} dev eth0", mac_of(&two));
    dataplane_tests::run_ok(
        std::process::Command::new("nsenter").arg(format!("--net={sandbox}")).args(["sh", "-c", &neighbour]),
    )
    .unwrap();
    let dropped = host.counter("dropped_icc");
    let ping = docker.exec("one", &format!("ping -c 1 -W 1 {two}"));
    assert!(!ping.status.success(), "one reached two with its neighbour entry: {}", text(&ping));
    assert!(host.counter("dropped_icc") > dropped, "the ping was not dropped by the fast path");
}

#[test]
fn two_docker_networks_are_isolated() {
    let plugin = DockerPlugin::unique();
    let host = host_for(&plugin);
    let docker = Dockerd::start(&host);
    let blue = sleepers_on_two_networks(&docker, &plugin, ["red", "blue"], ["on-red", "on-blue"]);
    let dropped = host.counter("dropped_isolation");
    let ping = docker.exec("on-red", &format!("ping -c 1 -W 1 {blue}"));
    assert!(!ping.status.success(), "red reached blue: {}", text(&ping));
    assert!(host.counter("dropped_isolation") > dropped, "the ping was not dropped as isolation");
    // Each reaches its own gateway, which is a host address.
    let ping = docker.exec("on-red", "ping -c 1 -W 1 10.20.0.1");
    assert!(ping.status.success(), "red does not reach its gateway: {}", text(&ping));

    // An --internal network never reaches the outside; Docker adds no second interface.
    docker.ok(&["network", "create", "-d", &plugin.name, "--internal", "--subnet", "10.22.0.0/24", "inside"]);
    docker.run("on-inside", "inside", &[], &["sleep", "600"]);
    let links = docker.exec("on-inside", "ls /sys/class/net");
    assert_eq!(text(&links).split_whitespace().collect::<Vec<_>>(), ["eth0", "lo"], "{}", text(&links));
    let dropped = host.counter("dropped_internal");
    let ping = docker.exec("on-inside", &format!("ping -c 1 -W 1 {EXTERNAL_ADDR}"));
    assert!(!ping.status.success(), "an internal network reached the outside: {}", text(&ping));
    assert!(host.counter("dropped_internal") > dropped, "the ping was not dropped as internal");
}

#[test]
fn docker_endpoints_keep_working_across_a_restart_of_our_daemon() {
    let plugin = DockerPlugin::unique();
    let mut host = host_for(&plugin);
    let docker = Dockerd::start(&host);
    create_network(&docker, &plugin, "10.20.0.0/24", "web");
    run_hello(&docker, "api", "web", &["-p", "8080:80"]);
    docker.run("client", "web", &[], &["sleep", "600"]);
    let api = docker.ip_of("api", "web");
    let url = format!("http://{UPLINK_ADDR}:8080/");
    assert!(
        eventually(Duration::from_secs(5), || fetch_from_outside(&host, &url).contains("hello from api")),
        "-p 8080:80 is not reachable before the restart"
    );

    host.stop_daemon();
    let ping = docker.exec("client", &format!("ping -c 1 -W 2 {api}"));
    assert!(ping.status.success(), "client does not reach api while our daemon is down: {}", text(&ping));
    host.start_daemon();

    let ping = docker.exec("client", &format!("ping -c 1 -W 2 {api}"));
    assert!(ping.status.success(), "client does not reach api after the restart: {}", text(&ping));
    assert!(
        eventually(Duration::from_secs(5), || fetch_from_outside(&host, &url).contains("hello from api")),
        "-p 8080:80 is not reachable after the restart: {}",
        host.daemon_log()
    );
    let err = second_publisher_of_8080(&docker);
    assert!(err.contains("already in use"), "the restart lost the port's reservation: {err}");
    // Docker reaches the restarted daemon: a new container joins, and rm removes all.
    docker.run("late", "web", &[], &["sleep", "600"]);
    let late = docker.ip_of("late", "web");
    let ping = docker.exec("client", &format!("ping -c 1 -W 2 {late}"));
    assert!(ping.status.success(), "a container started after the restart is not reached: {}", text(&ping));
    docker.ok(&["rm", "-f", "api", "client", "late"]);
    assert_eq!(host.map_entries("ENDPOINTS"), 0, "endpoints restored and removed left entries");
    assert_eq!(host.map_entries("PUBLISHED"), 0, "a restored port was left published");
}

#[test]
fn a_container_docker_removes_while_our_daemon_is_away_is_gone_after_the_restart() {
    let plugin = DockerPlugin::unique();
    let mut host = host_for(&plugin);
    let docker = Dockerd::start(&host);
    create_network(&docker, &plugin, "10.20.0.0/24", "web");
    run_hello(&docker, "api", "web", &["-p", "8080:80"]);
    let api = docker.ip_of("api", "web");

    host.stop_daemon();
    // Docker retries its Leave and DeleteEndpoint for a while, then gives up on them and
    // forgets the endpoint; the container goes all the same.
    let removed = docker.output(&["rm", "-f", "api"]);
    assert!(removed.status.success(), "docker rm -f failed with our daemon away: {}", text(&removed));
    host.start_daemon();

    assert_eq!(host.map_entries("ENDPOINTS"), 0, "the gone endpoint's entry is back: {}", host.daemon_log());
    assert_eq!(host.map_entries("PUBLISHED"), 0, "the gone endpoint's port is published again");
    assert!(!host.links().iter().any(|l| l.starts_with("veth")), "links left: {:?}", host.links());
    assert_eq!(docker_state(&host)["endpoints"], serde_json::json!({}), "the state keeps the gone endpoint");
    // Docker's IPAM hands the address out again, and the port is free.
    run_hello(&docker, "again", "web", &["-p", "8080:80"]);
    assert_eq!(
        docker.ip_of("again", "web"),
        api,
        "Docker's IPAM gave another address; the test needs the same"
    );
    let url = format!("http://{UPLINK_ADDR}:8080/");
    assert!(
        eventually(Duration::from_secs(5), || fetch_from_outside(&host, &url).contains("hello from again")),
        "the new container's port is not reachable: {}",
        host.daemon_log()
    );
}

/// The daemon's record of Docker's IDs and pools (`State::docker`).
fn docker_state(host: &Host) -> serde_json::Value {
    // The running daemon's state: its snapshot and the journal of changes since.
    let state = dataplane::state::StateStore::peek(&host.dir.join("state")).unwrap().expect("no state yet");
    serde_json::to_value(&state.docker).unwrap()
}

#[test]
fn docker_networks_take_their_addresses_from_our_ipam_driver() {
    let plugin = DockerPlugin::unique();
    let host = host_for(&plugin);
    let docker = Dockerd::start(&host);
    let driver = plugin.name.as_str();
    docker.ok(&[
        "network",
        "create",
        "-d",
        driver,
        "--ipam-driver",
        driver,
        "--subnet",
        "10.30.0.0/24",
        "--ip-range",
        "10.30.0.128/25",
        "web",
    ]);
    let ipam = docker.ok(&["network", "inspect", "-f", "{{.IPAM.Driver}}", "web"]);
    assert_eq!(ipam, driver, "Docker's network does not use our IPAM driver");
    let ours = host.dp_json(&["network", "inspect", &docker.dataplane_network("web")]);
    assert_eq!(ours[0]["IPAM"]["Config"][0]["Gateway"], "10.30.0.1", "not our IPAM's gateway: {ours}");
    docker.run("alpha", "web", &[], &["sleep", "600"]);
    docker.run("beta", "web", &[], &["sleep", "600"]);
    docker.run("gamma", "web", &["--ip", "10.30.0.9"], &["sleep", "600"]);
    assert_eq!(docker.ip_of("alpha", "web"), "10.30.0.128", "the first address is not the range's lowest");
    assert_eq!(docker.ip_of("beta", "web"), "10.30.0.129");
    assert_eq!(docker.ip_of("gamma", "web"), "10.30.0.9", "--ip was not given");
    let ping = docker.exec("alpha", "ping -c 1 -W 2 beta");
    assert!(ping.status.success(), "alpha does not reach beta: {}", text(&ping));
    let pool = &docker_state(&host)["pools"]["10.30.0.0/24"];
    assert_eq!(pool["gateway"], "10.30.0.1", "{pool}");
    assert_eq!(pool["addresses"], serde_json::json!(["10.30.0.9", "10.30.0.128", "10.30.0.129"]), "{pool}");
    let err = docker.err(&[
        "run",
        "-d",
        "--name",
        "twin",
        "--network",
        "web",
        "--ip",
        "10.30.0.9",
        IMAGE,
        "sleep",
        "600",
    ]);
    assert!(
        err.contains("address 10.30.0.9 is already in use"),
        "a taken --ip was not refused by name: {err}"
    );

    // Released with the containers, and the pool with the network.
    docker.ok(&["rm", "-f", "alpha", "beta", "gamma", "twin"]);
    assert_eq!(docker_state(&host)["pools"]["10.30.0.0/24"]["addresses"], serde_json::json!([]));
    docker.ok(&["network", "rm", "web"]);
    assert_eq!(docker_state(&host)["pools"], serde_json::json!({}), "network rm left the pool");

    // Without --subnet, a pool clear of our networks (the default one's 172.17.0.0/16).
    docker.ok(&["network", "create", "-d", driver, "--ipam-driver", driver, "auto"]);
    let subnet = docker.ok(&["network", "inspect", "-f", "{{(index .IPAM.Config 0).Subnet}}", "auto"]);
    assert_eq!(subnet, "172.18.0.0/16", "our IPAM did not pick the first free default pool");
    let err = docker.err(&[
        "network",
        "create",
        "-d",
        driver,
        "--ipam-driver",
        driver,
        "--subnet",
        "172.18.5.0/24",
        "overlapping",
    ]);
    assert!(
        err.contains("--subnet 172.18.5.0/24 overlaps 172.18.0.0/16"),
        "an overlapping pool was not refused: {err}"
    );
}

/// `--ipv6` with our IPAM driver: the IPv6 pool, its gateway and each container's IPv6
/// address come from us too (`::1`, then `::2`, ...), `--ip6` is honoured, and without an
/// IPv6 `--subnet` a /64 of the host's ULA pool is picked, as for `network create --ipv6`.
#[test]
fn docker_ipv6_networks_take_their_ipv6_addresses_from_our_ipam_driver() {
    let plugin = DockerPlugin::unique();
    let host = host_for(&plugin);
    let docker = Dockerd::start(&host);
    let driver = plugin.name.as_str();
    let ipam = ["-d", driver, "--ipam-driver", driver, "--ipv6"];
    let subnets = ["--subnet", "10.31.0.0/24", "--subnet", "fd00:31::/64"];
    docker.ok(&[&["network", "create"][..], &ipam, &subnets, &["six"]].concat());
    let ours = host.dp_json(&["network", "inspect", &docker.dataplane_network("six")]);
    assert_eq!(
        (&ours[0]["IPAM"]["Config"][1]["Subnet"], &ours[0]["IPAM"]["Config"][1]["Gateway"]),
        (&json!("fd00:31::/64"), &json!("fd00:31::1")),
        "our network has not our IPAM's IPv6 pool and gateway: {ours}"
    );
    docker.run("alpha", "six", &[], &["sleep", "600"]);
    docker.run("beta", "six", &[], &["sleep", "600"]);
    docker.run("gamma", "six", &["--ip6", "fd00:31::9"], &["sleep", "600"]);
    let ip6_of = |name: &str| {
        docker.ok(&["inspect", "-f", "{{(index .NetworkSettings.Networks \"six\").GlobalIPv6Address}}", name])
    };
    assert_eq!(
        [ip6_of("alpha"), ip6_of("beta"), ip6_of("gamma")],
        ["fd00:31::2", "fd00:31::3", "fd00:31::9"],
        "not the pool's lowest free addresses, or --ip6 not given"
    );
    let ping = docker.exec("alpha", "ping -6 -c 1 -W 2 fd00:31::9");
    assert!(ping.status.success(), "alpha does not reach gamma over IPv6: {}", text(&ping));
    let pool = &docker_state(&host)["pools"]["fd00:31::/64"];
    assert_eq!(pool["gateway"], "fd00:31::1", "{pool}");
    assert_eq!(pool["addresses"], json!(["fd00:31::2", "fd00:31::3", "fd00:31::9"]), "{pool}");
    let err = docker.err(&[
        "run",
        "-d",
        "--name",
        "twin",
        "--network",
        "six",
        "--ip6",
        "fd00:31::9",
        IMAGE,
        "true",
    ]);
    assert!(
        err.contains("address fd00:31::9 is already in use"),
        "a taken --ip6 was not refused by name: {err}"
    );
    docker.ok(&["rm", "-f", "alpha", "beta", "gamma", "twin"]);
    assert_eq!(docker_state(&host)["pools"]["fd00:31::/64"]["addresses"], json!([]));

    // Without an IPv6 --subnet: a /64 of the host's ULA /48, another one for the next
    // network, and an IPv6 --subnet that overlaps one of them is refused.
    let auto6 = |name: &str| {
        docker.ok(&[&["network", "create"][..], &ipam, &[name]].concat());
        docker.ok(&["network", "inspect", "-f", "{{(index .IPAM.Config 1).Subnet}}", name])
    };
    let (first, second) = (auto6("auto1"), auto6("auto2"));
    for subnet in [&first, &second] {
        let ula = subnet
            .strip_suffix("/64")
            .and_then(|a| a.parse::<std::net::Ipv6Addr>().ok())
            .is_some_and(|a| a.octets()[0] == 0xfd);
        assert!(ula, "not a /64 of a ULA pool: {subnet}");
    }
    assert_ne!(first, second, "two networks were given the same IPv6 pool");
    let err = docker.err(
        &[&["network", "create"][..], &ipam, &["--subnet", "10.32.0.0/24", "--subnet", &first, "clash"]]
            .concat(),
    );
    assert!(
        err.contains(&format!("--subnet {first} overlaps {first}")),
        "an overlapping IPv6 pool was not refused: {err}"
    );
    for name in ["six", "auto1", "auto2"] {
        docker.ok(&["network", "rm", name]);
    }
    assert_eq!(docker_state(&host)["pools"], json!({}), "network rm left a pool");
}

#[test]
fn with_xdp_on_the_uplink_a_docker_container_s_port_is_served_by_xdp() {
    let plugin = DockerPlugin::unique();
    let host = Host::start_with_external_and(&[plugin.daemon_env(), ("DATAPLANE_XDP", "on")]);
    // XDP leaves to tc what a local sender left to the device to checksum.
    host.external_sh_ok("ethtool -K eth0 tx off >/dev/null");
    let docker = Dockerd::start(&host);
    create_network(&docker, &plugin, "10.20.0.0/24", "web");
    run_hello(&docker, "api", "web", &["-p", "8080:80"]);
    // Docker brings the inner end up in the sandbox after publishing; once it is up the
    // daemon turns GRO on there and hands XDP's frames to it.
    let url = format!("http://{UPLINK_ADDR}:8080/");
    let xdp = host.counter("published_xdp");
    assert!(
        eventually(Duration::from_secs(5), || fetch_from_outside(&host, &url).contains("hello from api")),
        "-p 8080:80 is not reachable with XDP on: {}",
        host.dp_ok(&["stats"])
    );
    assert!(
        host.counter("published_xdp") > xdp,
        "XDP did not serve the port: {}\n{}",
        host.dp_ok(&["stats"]),
        host.daemon_log()
    );
    // The state names the interface as Docker does in the sandbox.
    let inspect = host.dp_json(&["network", "inspect", &docker.dataplane_network("web")]);
    let interfaces: Vec<_> =
        inspect[0]["Containers"].as_object().unwrap().values().map(|c| c["Interface"].clone()).collect();
    assert_eq!(interfaces, ["eth0"], "network inspect does not show Docker's name of the interface");
}

#[test]
fn a_running_container_connects_to_and_disconnects_from_a_second_network() {
    let plugin = DockerPlugin::unique();
    let host = host_for(&plugin);
    let docker = Dockerd::start(&host);
    let db = sleepers_on_two_networks(&docker, &plugin, ["front", "back"], ["app", "db"]);
    assert!(!docker.exec("app", &format!("ping -c 1 -W 1 {db}")).status.success(), "front reached back");

    // Join into a running sandbox: Docker moves the interface in at once, as eth1.
    docker.ok(&["network", "connect", "back", "app"]);
    let links = docker.exec("app", "ls /sys/class/net");
    assert_eq!(
        text(&links).split_whitespace().collect::<Vec<_>>(),
        ["eth0", "eth1", "lo"],
        "{}",
        text(&links)
    );
    let ping = docker.exec("app", &format!("ping -c 1 -W 2 {db}"));
    assert!(ping.status.success(), "app does not reach db over its second network: {}", text(&ping));
    assert_eq!(host.map_entries("ENDPOINTS"), 3, "three endpoints, three entries");

    docker.ok(&["network", "disconnect", "back", "app"]);
    assert_eq!(host.map_entries("ENDPOINTS"), 2, "disconnect left the endpoint's entry");
    assert!(
        !docker.exec("app", &format!("ping -c 1 -W 1 {db}")).status.success(),
        "disconnected, still reached"
    );

    // A restart makes new endpoints and leaves none of the old ones.
    docker.ok(&["restart", "-t", "0", "app"]);
    let app = docker.ip_of("app", "front");
    docker.run("peer", "front", &[], &["sleep", "600"]);
    let ping = docker.exec("peer", &format!("ping -c 1 -W 2 {app}"));
    assert!(ping.status.success(), "app is not reached after docker restart: {}", text(&ping));
    assert_eq!(host.map_entries("ENDPOINTS"), 3, "docker restart left an old endpoint's entry");
    let veths = host.links().iter().filter(|l| l.starts_with("veth")).count();
    assert_eq!(veths, 3, "docker restart left veths: {:?}", host.links());
}

/// A network of Docker's on 10.20.0.0/24 and an endpoint on it created for each of
/// `addresses`, through the plugin calls dockerd makes (`network create`, then
/// CreateEndpoint as a container starts); returns the endpoints' IDs.
fn created_endpoints(plugin: &DockerPlugin, addresses: &[&str]) -> Vec<String> {
    plugin.call(
        "NetworkDriver.CreateNetwork",
        json!({"NetworkID": NETWORK_ID, "Options": {}, "IPv4Data": [{"Pool": "10.20.0.0/24", "Gateway": "10.20.0.1/24"}]}),
    );
    let mut ids = vec![];
    for (i, address) in addresses.iter().enumerate() {
        let id = format!("{:x}", i + 10).repeat(32);
        plugin.call(
            "NetworkDriver.CreateEndpoint",
            json!({"NetworkID": NETWORK_ID, "EndpointID": id, "Interface": {"Address": format!("{address}/24")}}),
        );
        ids.push(id);
    }
    ids
}

const NETWORK_ID: &str = "5eed000000000000000000000000000000000000000000000000000000000001";

/// Join into the sandbox at `sandbox_key`; returns the name of the link to hand over.
fn join(plugin: &DockerPlugin, endpoint_id: &str, sandbox_key: &str) -> String {
    let joined = plugin.call(
        "NetworkDriver.Join",
        json!({"NetworkID": NETWORK_ID, "EndpointID": endpoint_id, "SandboxKey": sandbox_key, "Options": {}}),
    );
    joined["InterfaceName"]["SrcName"].as_str().unwrap().to_string()
}

/// Takes the link `hand_over` into the namespace `sandbox` as Docker does: moved,
/// renamed `eth0`, addressed and brought up.
fn take_into_sandbox(host: &Host, hand_over: &str, sandbox: &str, address: &str) {
    host.sh_ok(&format!("ip link set {hand_over} netns {sandbox}"));
    host.ns_sh_ok(
        sandbox,
        &format!(
            "ip link set {hand_over} name eth0 && ip addr add {address}/24 dev eth0 && ip link set eth0 up"
        ),
    );
}

/// What `network inspect` shows of each endpoint of Docker's network: (endpoint ID,
/// interface).
fn interfaces(host: &Host) -> Vec<(String, String)> {
    let network = format!("docker-{}", &NETWORK_ID[..12]);
    let info = host.dp_json(&["network", "inspect", &network]);
    let containers = info[0]["Containers"].as_object().cloned().unwrap_or_default();
    containers
        .values()
        .map(|c| {
            (c["EndpointID"].as_str().unwrap().to_string(), c["Interface"].as_str().unwrap().to_string())
        })
        .collect()
}

#[test]
fn an_endpoint_joined_just_before_a_restart_is_kept_and_completes_when_docker_takes_it() {
    let plugin = DockerPlugin::unique();
    let mut host = host_for(&plugin);
    let ids = created_endpoints(&plugin, &["10.20.0.2"]);
    // Docker makes the sandbox's namespace only as the container starts, a moment after
    // Join: the daemon restarts in between.
    let sandbox = format!("{}-sandbox", host.name);
    let hand_over = join(&plugin, &ids[0], &format!("/run/netns/{sandbox}"));
    host.stop_daemon();
    host.start_daemon();
    assert_eq!(host.map_entries("ENDPOINTS"), 1, "the restart removed the endpoint: {}", host.daemon_log());
    assert!(host.links().contains(&hand_over), "the restart removed {hand_over}: {:?}", host.links());

    // Docker takes it now; the endpoint works and is named as Docker named it.
    assert_eq!(host.add_namespace("sandbox"), sandbox);
    take_into_sandbox(&host, &hand_over, &sandbox, "10.20.0.2");
    assert!(
        eventually(Duration::from_secs(5), || interfaces(&host) == [(ids[0].clone(), "eth0".to_string())]),
        "the state does not name the interface eth0: {:?}\n{}",
        interfaces(&host),
        host.daemon_log()
    );
    host.ns_sh_ok(&sandbox, "ping -c 1 -W 2 10.20.0.1");

    // Leave and DeleteEndpoint remove it all.
    let endpoint = json!({"NetworkID": NETWORK_ID, "EndpointID": ids[0]});
    plugin.call("NetworkDriver.Leave", endpoint.clone());
    plugin.call("NetworkDriver.DeleteEndpoint", endpoint);
    assert_eq!(host.map_entries("ENDPOINTS"), 0, "Leave left the endpoint's entry");
    assert_eq!(docker_state(&host)["endpoints"], json!({}), "DeleteEndpoint left the record");
}

#[test]
fn endpoints_docker_gave_up_while_our_daemon_was_away_go_after_the_grace_period() {
    let plugin = DockerPlugin::unique();
    let mut host = host_for(&plugin);
    // `complete` joined and Docker took it into its sandbox; `created` never joined (its
    // DeleteEndpoint failed while we were away, after its Leave); `unplaced` joined and
    // Docker never took it (it gave up the container while we were away).
    let ids = created_endpoints(&plugin, &["10.20.0.2", "10.20.0.3", "10.20.0.4"]);
    let (complete, unplaced) = (&ids[0], &ids[2]);
    let sandbox = host.add_namespace("sandbox");
    let hand_over = join(&plugin, complete, &format!("/run/netns/{sandbox}"));
    take_into_sandbox(&host, &hand_over, &sandbox, "10.20.0.2");
    let never_taken = join(&plugin, unplaced, &format!("/run/netns/{}-gone", host.name));
    assert!(
        eventually(Duration::from_secs(5), || interfaces(&host).contains(&(complete.clone(), "eth0".into())))
    );

    host.stop_daemon();
    host.set_daemon_env(&[plugin.daemon_env(), ("DATAPLANE_DOCKER_STALE_AFTER", "2")]);
    host.start_daemon();
    let records = |host: &Host| {
        let state = docker_state(host);
        let mut ids: Vec<String> = state["endpoints"].as_object().unwrap().keys().cloned().collect();
        ids.sort();
        ids
    };
    assert_eq!(records(&host).len(), 3, "removed before the grace period: {}", host.daemon_log());
    assert!(
        eventually(Duration::from_secs(10), || records(&host) == [complete.clone()]),
        "the stale records stay: {:?}\n{}",
        records(&host),
        host.daemon_log()
    );
    assert_eq!(host.map_entries("ENDPOINTS"), 1, "the unplaced endpoint's entry stays");
    assert!(!host.links().contains(&never_taken), "{never_taken} stays: {:?}", host.links());
    host.ns_sh_ok(&sandbox, "ping -c 1 -W 2 10.20.0.1");
    // Their addresses are free again.
    let again = "f".repeat(64);
    plugin.call(
        "NetworkDriver.CreateEndpoint",
        json!({"NetworkID": NETWORK_ID, "EndpointID": again, "Interface": {"Address": "10.20.0.3/24"}}),
    );
}

/// Docker's refusal of another container on `web` publishing host port 8080.
fn second_publisher_of_8080(docker: &Dockerd) -> String {
    docker.err(&["run", "-d", "--name", "other", "--network", "web", "-p", "8080:80", IMAGE, "sleep", "600"])
}
