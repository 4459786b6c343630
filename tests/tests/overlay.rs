//! Several hosts, one network: daemons in host namespaces share overlay networks, their
//! address leases and their names through one etcd on an underlay (see `hosts`), and
//! carry their containers' traffic to each other through VXLAN. These scenarios check
//! the shared state, names, failures and the traffic between hosts.

use std::{collections::BTreeSet, thread, time::Duration};

use dataplane_tests::{
    EXTERNAL_ADDR, EXTERNAL_ADDR6, Host, UPLINK_ADDR, UPLINK_ADDR6, eventually,
    hosts::{Cluster, Uplink},
};

const SUBNET: &str = "10.200.0.0/16";
const GATEWAY: &str = "10.200.0.1";

fn network_names(host: &Host) -> Vec<String> {
    host.dp_ok(&["network", "ls", "--format", "{{.Name}} {{.Driver}} {{.Scope}}"])
        .lines()
        .map(str::to_string)
        .collect()
}

fn lists(host: &Host, line: &str) -> bool {
    network_names(host).iter().any(|l| l == line)
}

/// `dig +short` from a container against its network's resolver: the addresses.
fn dig(host: &Host, from: &str, name: &str) -> Vec<String> {
    let out = host.exec(from, &format!("dig +short +time=1 +tries=1 @{GATEWAY} {name}"));
    assert!(out.status.success(), "dig {name}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().lines().map(str::to_string).collect()
}

fn network_id(host: &Host, name: &str) -> String {
    host.dp_json(&["network", "inspect", name])[0]["Id"].as_str().unwrap().to_string()
}

/// Whether `from` on `host` reaches `to` (a name or an address) with one ping.
fn pings(host: &Host, from: &str, to: &str) -> bool {
    host.ping(from, to)
}

/// Waits until `from` on `host` reaches `to`, and says so.
fn comes_through(host: &Host, from: &str, to: &str) -> bool {
    eventually(Duration::from_secs(10), || pings(host, from, to))
}

/// Creates overlay network `name` on `on` and waits until `others` list it.
fn create_overlay(on: &Host, others: &[&Host], name: &str, subnet: &str) {
    on.dp_ok(&["network", "create", "-d", "overlay", "--subnet", subnet, name]);
    for host in others {
        let line = format!("{name} overlay global");
        assert!(
            eventually(Duration::from_secs(10), || lists(host, &line)),
            "another host never saw {name}: {:?}",
            network_names(host)
        );
    }
}

/// A python3 script that reads the VXLAN frames (UDP to port 4789, either way, over IPv4
/// or IPv6) on the host namespace's underlay link `ul0` for up to 8 s, at most `argv[1]`
/// of them, and prints a line per frame: its direction, the outer UDP checksum field
/// (hex), whether that checksum holds (`none` when zero: "no checksum" over IPv4), the
/// outer family (with whether the IPv4 header's checksum holds), and the inner packet's
/// family with whether its own checksums (IPv4 header and ICMP, or ICMPv6) hold.
const OUTER_HEADERS: &str = r#"
import socket, struct, sys, time
def fold(data):
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total
def holds(data):
    return "ok" if fold(data) == 0xFFFF else "bad"
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
s.bind(("ul0", 0))
s.settimeout(0.5)
wanted, deadline = int(sys.argv[1]), time.time() + 8
while wanted and time.time() < deadline:
    try:
        frame, where = s.recvfrom(65535)
    except socket.timeout:
        continue
    if frame[12:14] == b"\x08\x00" and frame[23] == 17:
        ip = frame[14:14 + (frame[14] & 15) * 4]
        udp = frame[14 + len(ip):14 + struct.unpack("!H", ip[2:4])[0]]
        pseudo = ip[12:20] + struct.pack("!BBH", 0, 17, len(udp))
        outer = "outer_ipv4=%s" % holds(ip)
    elif frame[12:14] == b"\x86\xdd" and frame[20] == 17:
        ip = frame[14:54]
        udp = frame[54:54 + struct.unpack("!H", ip[4:6])[0]]
        pseudo = ip[8:40] + struct.pack("!I3xB", len(udp), 17)
        outer = "outer_ipv6"
    else:
        continue
    if struct.unpack("!H", udp[2:4])[0] != 4789:
        continue
    check = struct.unpack("!H", udp[6:8])[0]
    udp_holds = "none" if check == 0 else holds(pseudo + udp)
    inner = udp[16:]
    if inner[12:14] == b"\x08\x00":
        inner_ip = inner[14:14 + (inner[14] & 15) * 4]
        payload = inner[14 + len(inner_ip):14 + struct.unpack("!H", inner_ip[2:4])[0]]
        icmp = holds(payload) if inner_ip[9] == 1 else "-"
        family = "ipv4 header=%s icmp=%s" % (holds(inner_ip), icmp)
    elif inner[12:14] == b"\x86\xdd":
        inner_ip = inner[14:54]
        payload = inner[54:54 + struct.unpack("!H", inner_ip[4:6])[0]]
        pseudo6 = inner_ip[8:40] + struct.pack("!I3xB", len(payload), 58)
        family = "ipv6 icmp=%s" % (holds(pseudo6 + payload) if inner_ip[6] == 58 else "-")
    else:
        family = "ethertype=%s" % inner[12:14].hex()
    way = "out" if where[2] == socket.PACKET_OUTGOING else "in"
    print("%s udp_checksum=%04x udp=%s %s inner=%s" % (way, check, udp_holds, outer, family), flush=True)
    wanted -= 1
"#;

/// The VXLAN frames `host`'s underlay link carries while `traffic` runs (`OUTER_HEADERS`'s
/// lines, at most `count`): the tunnel's outer headers as they go on the wire.
fn outer_headers(host: &Host, count: u32, traffic: impl FnOnce()) -> Vec<String> {
    let out = thread::scope(|scope| {
        let capture =
            scope.spawn(|| host.command("python3").args(["-c", OUTER_HEADERS, &count.to_string()]).output());
        // python's start; the capture reads whatever comes after for 8 s.
        thread::sleep(Duration::from_secs(1));
        traffic();
        capture.join().unwrap().unwrap()
    });
    assert!(out.status.success(), "capturing on the underlay: {out:?}");
    String::from_utf8(out.stdout).unwrap().lines().map(str::to_string).collect()
}

/// Asserts the tunnel's choice of outer UDP checksum on frames `outer_headers` saw, both
/// ways between two hosts: zero ("no checksum", valid over IPv4), the outer IPv4 header's
/// checksum valid, and the inner packet's checksums (`inner`'s words) intact.
fn assert_outer_udp_checksum_is_zero(frames: &[String], inner: &str) {
    for way in ["out", "in"] {
        assert!(
            frames.iter().any(|f| f.starts_with(&format!("{way} "))),
            "no VXLAN frame went {way} on the underlay: {frames:#?}"
        );
    }
    for frame in frames {
        assert!(
            frame.contains(" udp_checksum=0000 udp=none "),
            "the outer UDP checksum is not the zero we send over IPv4: {frame}"
        );
        assert!(frame.contains(" outer_ipv4=ok "), "the outer IPv4 header's checksum is wrong: {frame}");
        assert!(frame.contains(inner), "the inner packet's checksums ({inner}) did not hold: {frame}");
    }
}

/// An overlay network "prod" made on `a`, a web server "web" on `a` and a "client" on
/// `b`: they ping each other by name, and the client fetches the page, over `underlay`.
fn web_on_a_serves_client_on_b_by_name(a: &Host, b: &Host, underlay: &str) {
    create_overlay(a, &[b], "prod", SUBNET);
    a.dp_ok(&["run", "-d", "--name", "web", "--network", "prod", "--", "python3", "-m", "http.server", "80"]);
    b.run_sleeper("client", &["--network", "prod"]);
    assert!(
        comes_through(b, "client", "web"),
        "client (on B) cannot ping web (on A) by name over {underlay}\nA:\n{}\nB:\n{}",
        a.daemon_log(),
        b.daemon_log()
    );
    assert!(pings(a, "web", "client"), "web (on A) cannot ping client (on B) by name over {underlay}");
    // The server may still be starting: connections are refused until it listens.
    let fetch = || b.exec("client", "curl -sf --max-time 5 -o /dev/null -w '%{http_code}' http://web/");
    assert!(
        eventually(Duration::from_secs(10), || fetch().stdout == b"200"),
        "client (on B) cannot fetch web's page (on A) over {underlay}: {:?}",
        fetch()
    );
}

#[test]
fn containers_on_two_hosts_ping_and_curl_each_other_by_name_through_the_tunnel() {
    let cluster = Cluster::start(2, 30);
    let [a, b] = &cluster.hosts[..] else { unreachable!() };
    web_on_a_serves_client_on_b_by_name(a, b, "the IPv4 underlay");

    // From the link itself: /sys in a container is the daemon's.
    let link = b.exec("client", "ip -o link show dev eth0");
    let link = String::from_utf8_lossy(&link.stdout);
    assert!(
        link.contains(" mtu 1450 "),
        "an overlay container's MTU is the underlay's (1500) less VXLAN's 50 bytes: {link}"
    );
    // 1422 bytes of ICMP payload fill 1450 bytes of IPv4: the largest packet that crosses
    // unfragmented (-M do), once encapsulated exactly the underlay's 1500.
    let full = b.exec("client", "ping -c 1 -W 2 -M do -s 1422 web");
    assert!(full.status.success(), "a full-MTU packet does not cross: {full:?}");
    let vnis = cluster.underlay.keys("/dataplane/vnis/");
    assert_eq!(vnis, ["/dataplane/vnis/4096"], "the network's VNI is held in the store");

    // The outer headers on the wire: A's requests out, B's replies in.
    let frames = outer_headers(a, 4, || {
        let ping = a.exec("web", "ping -c 2 -i 0.2 -W 2 client");
        assert!(ping.status.success(), "web (on A) cannot ping client (on B): {ping:?}");
    });
    assert_outer_udp_checksum_is_zero(&frames, "inner=ipv4 header=ok icmp=ok");
    let device = a.sh_ok("ip -d link show dev dp-vxlan");
    for setting in [" external ", " noudpcsum ", " noudp6zerocsumtx ", " noudp6zerocsumrx "] {
        assert!(device.contains(setting), "the tunnel device is not{setting}: {device}");
    }
}

#[test]
fn containers_on_two_hosts_of_an_ipv6_underlay_ping_and_curl_each_other_by_name() {
    // IPv6 alone on the underlay, etcd on it too, and no --advertise-address: each host
    // advertises the address of its IPv6 default route's interface.
    let mut cluster = Cluster::start_ipv6(2, 30);
    let [a, b] = &cluster.hosts[..] else { unreachable!() };
    web_on_a_serves_client_on_b_by_name(a, b, "the IPv6 underlay");
    let records = cluster.underlay.etcdctl_ok(&["get", "--prefix", "/dataplane/endpoints/"]);
    assert!(
        records.contains(r#""host_address":"2001:db8:100::11""#)
            && records.contains(r#""host_address":"2001:db8:100::12""#),
        "the hosts did not advertise their IPv6 underlay addresses: {records}"
    );

    // VXLAN over IPv6 adds 70 bytes, not 50: 1500 - 70.
    let link = b.exec("client", "ip -o link show dev eth0");
    let link = String::from_utf8_lossy(&link.stdout);
    assert!(link.contains(" mtu 1430 "), "an overlay container's MTU over an IPv6 underlay: {link}");
    // 1402 bytes of ICMP payload fill 1430 bytes of IPv4; once encapsulated, exactly 1500.
    let full = b.exec("client", "ping -c 1 -W 2 -M do -s 1402 web");
    assert!(full.status.success(), "a full-MTU packet does not cross the IPv6 underlay: {full:?}");

    // The outer headers on the wire: IPv6, with a UDP checksum computed and valid, A's
    // requests out and B's replies in (which B's kernel checked before taking them).
    let frames = outer_headers(a, 4, || {
        let ping = a.exec("web", "ping -c 2 -i 0.2 -W 2 client");
        assert!(ping.status.success(), "web (on A) cannot ping client (on B): {ping:?}");
    });
    for way in ["out", "in"] {
        assert!(
            frames.iter().any(|f| f.starts_with(&format!("{way} "))),
            "no VXLAN frame went {way} on the underlay: {frames:#?}"
        );
    }
    for frame in &frames {
        assert!(frame.contains(" outer_ipv6 "), "the outer header is not IPv6: {frame}");
        assert!(
            !frame.contains(" udp_checksum=0000 ") && frame.contains(" udp=ok "),
            "the outer UDP checksum over IPv6 is not a valid computed one: {frame}"
        );
        assert!(frame.contains("inner=ipv4 header=ok icmp=ok"), "the inner checksums did not hold: {frame}");
    }

    // One underlay family per store: B on IPv4 beside A on IPv6 is refused, naming the flag.
    let b = &mut cluster.hosts[1];
    b.stop_daemon();
    let err = b.daemon_fails(&[("DATAPLANE_ADVERTISE_ADDRESS", "198.51.100.12")]);
    assert!(
        err.contains("--advertise-address 198.51.100.12 is IPv4")
            && err.contains("2001:db8:100::11 (IPv6)")
            && err.contains("give this daemon an IPv6 --advertise-address"),
        "a daemon of the other underlay family must be refused naming --advertise-address: {err}"
    );
}

#[test]
fn two_overlay_networks_stay_apart_across_hosts() {
    let cluster = Cluster::start(2, 30);
    let [a, b] = &cluster.hosts[..] else { unreachable!() };
    create_overlay(a, &[b], "prod", SUBNET);
    create_overlay(b, &[a], "dev", "10.201.0.0/16");
    a.run_sleeper("api", &["--network", "prod"]);
    a.run_sleeper("tool", &["--network", "dev"]);
    b.run_sleeper("client", &["--network", "prod"]);
    b.run_sleeper("stranger", &["--network", "dev"]);
    let (api, tool) = (a.ip_of("api"), a.ip_of("tool"));
    assert!(comes_through(b, "client", &api), "client cannot reach api, on its own network");
    assert!(comes_through(b, "stranger", &tool), "stranger cannot reach tool, on its own network");
    assert!(!pings(b, "stranger", &api), "stranger (dev, on B) reaches api (prod, on A)");
    assert!(!pings(b, "client", &tool), "client (prod, on B) reaches tool (dev, on A)");
    assert_eq!(cluster.underlay.keys("/dataplane/vnis/").len(), 2, "one VNI per network");
}

/// Gives `host`'s uplink and its external namespace global IPv6 addresses, and the host a
/// default route over them (as `Host::start_with_ipv6_uplink`, on a running daemon).
fn add_ipv6_uplink(host: &Host) {
    host.sh_ok(&format!(
        "ip addr add {UPLINK_ADDR6}/64 dev up0 nodad && ip -6 route add default via {EXTERNAL_ADDR6}"
    ));
    host.external_sh_ok(&format!("ip addr add {EXTERNAL_ADDR6}/64 dev eth0 nodad"));
}

#[test]
fn an_overlay_container_reaches_the_outside_through_its_own_hosts_uplink() {
    let cluster = Cluster::start_with(2, 30, &[], Uplink::External);
    let [a, b] = &cluster.hosts[..] else { unreachable!() };
    // Dual stack: IPv4 is masqueraded out of the uplink, IPv6 translated by NAT66.
    create_overlay_with(a, &[b], "prod", &["--subnet", SUBNET, "--ipv6", "--subnet", "fd00:204::/64"]);
    add_ipv6_uplink(b);
    b.run_sleeper("client", &["--network", "prod"]);
    let _http =
        b.external_server("python3", &["-m", "http.server", "8080", "--bind", EXTERNAL_ADDR], "http.log");
    let fetched = b.exec("client", &format!("curl -sf -m 5 -o /dev/null http://{EXTERNAL_ADDR}:8080/"));
    assert!(fetched.status.success(), "client (prod, on B) cannot reach the outside: {fetched:?}");
    let log = std::fs::read_to_string(b.dir.join("http.log")).unwrap();
    assert!(log.contains(UPLINK_ADDR), "the outside saw another source than B's uplink: {log}");
    let masqueraded = b.counter("masqueraded");
    assert!(masqueraded > 0, "B's programs did not masquerade the overlay container");

    let log6 = b.fetch_from_outside6("client");
    assert!(
        log6.contains(UPLINK_ADDR6),
        "over IPv6 the outside saw another source than B's uplink: {log6:?}\nB:\n{}",
        b.daemon_log()
    );
    assert!(!log6.contains("fd00:204"), "the overlay container's IPv6 address leaked: {log6}");
    let flows = b.dp_ok(&["conntrack", "ls"]);
    assert!(
        flows.lines().any(|l| l.contains("tcp") && l.contains(UPLINK_ADDR6)),
        "no NAT66 flow of the overlay container in B's table:\n{flows}"
    );
    assert!(b.counter("masqueraded") > masqueraded, "B's programs did not translate the IPv6 flow");
}

#[test]
fn the_vxlan_port_is_the_daemons_setting() {
    let cluster = Cluster::start_with(2, 30, &[("DATAPLANE_VXLAN_PORT", "8472")], Uplink::None);
    let [a, b] = &cluster.hosts[..] else { unreachable!() };
    create_overlay(a, &[b], "prod", SUBNET);
    a.run_sleeper("api", &["--network", "prod"]);
    b.run_sleeper("client", &["--network", "prod"]);
    assert!(comes_through(b, "client", "api"), "client cannot reach api over port 8472");
    for (label, host) in [("A", a), ("B", b)] {
        let listening = |port: u16| !host.sh_ok(&format!("ss -Hlun sport = :{port}")).trim().is_empty();
        assert!(listening(8472), "host {label}'s tunnel does not listen on UDP 8472");
        assert!(!listening(4789), "host {label}'s tunnel listens on the default port too");
    }
}

#[test]
fn a_network_made_on_one_host_is_everywhere_with_its_names_and_goes_everywhere() {
    let cluster = Cluster::start(3, 30);
    let [a, b, c] = &cluster.hosts[..] else { unreachable!() };
    a.dp_ok(&["network", "create", "-d", "overlay", "--subnet", SUBNET, "prod"]);
    for (label, host) in [("B", b), ("C", c)] {
        assert!(
            eventually(Duration::from_secs(10), || lists(host, "prod overlay global")),
            "host {label} does not list the network made on A: {:?}\n{}",
            network_names(host),
            host.daemon_log()
        );
    }
    let inspected = c.dp_json(&["network", "inspect", "prod"]);
    assert_eq!(
        inspected[0]["Id"].as_str().unwrap(),
        network_id(a, "prod"),
        "one network, one ID on every host"
    );
    assert_eq!(inspected[0]["IPAM"]["Config"][0]["Subnet"], SUBNET, "its subnet travels with it");
    let err = a.dp_err(&["network", "create", "-d", "overlay", "--subnet", "10.201.0.0/16", "prod"]);
    assert!(err.contains("already exists"), "a second network of the name: {err}");

    a.run_sleeper("api", &["--network", "prod", "--network-alias", "backend"]);
    b.run_sleeper("client", &["--network", "prod"]);
    let api = a.ip_of("api");
    assert!(
        eventually(Duration::from_secs(10), || dig(b, "client", "api") == [api.clone()]),
        "api (on A, {api}) does not resolve on B: {:?}\n{}",
        dig(b, "client", "api"),
        b.daemon_log()
    );
    assert_eq!(dig(b, "client", "backend"), [api], "its alias resolves on B too");

    let err = b.dp_err(&["network", "rm", "prod"]);
    assert!(
        err.contains("api on host 198.51.100.11") && err.contains("client on host 198.51.100.12"),
        "rm must name every host's endpoints: {err}"
    );
    a.dp_ok(&["rm", "-f", "api"]);
    assert!(
        eventually(Duration::from_secs(10), || dig(b, "client", "api").is_empty()),
        "a removed container's name stays on B"
    );
    b.dp_ok(&["rm", "-f", "client"]);
    c.dp_ok(&["network", "prune"]);
    assert!(lists(a, "prod overlay global"), "a prune on C removed the shared network");
    b.dp_ok(&["network", "rm", "prod"]);
    for (label, host) in [("A", a), ("C", c)] {
        assert!(
            eventually(Duration::from_secs(10), || !network_names(host)
                .iter()
                .any(|l| l.starts_with("prod "))),
            "host {label} still lists the network removed on B: {:?}",
            network_names(host)
        );
    }
    assert!(
        cluster.underlay.keys("/dataplane/").is_empty(),
        "the store keeps {:?}",
        cluster.underlay.keys("/dataplane/")
    );
    for (label, host) in [("A", a), ("B", b), ("C", c)] {
        let log = host.daemon_log();
        assert!(!log.contains("store watch:"), "host {label}'s watch broke while etcd ran:\n{log}");
    }
}

#[test]
fn fifty_runs_at_once_on_each_of_two_hosts_get_distinct_addresses() {
    const PER_HOST: usize = 50;
    let cluster = Cluster::start(2, 30);
    let [a, b] = &cluster.hosts[..] else { unreachable!() };
    a.dp_ok(&["network", "create", "-d", "overlay", "--subnet", SUBNET, "prod"]);
    assert!(eventually(Duration::from_secs(10), || lists(b, "prod overlay global")), "B never saw prod");
    let outcomes: Vec<(String, bool, String)> = thread::scope(|scope| {
        let runs: Vec<_> = [("a", a), ("b", b)]
            .into_iter()
            .flat_map(|(label, host)| {
                (0..PER_HOST).map(move |i| {
                    let name = format!("{label}{i}");
                    scope.spawn(move || {
                        let out = host.dp(&[
                            "run",
                            "-d",
                            "--name",
                            &name,
                            "--network",
                            "prod",
                            "--",
                            "sleep",
                            "600",
                        ]);
                        (name, out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
                    })
                })
            })
            .collect();
        runs.into_iter().map(|r| r.join().unwrap()).collect()
    });
    let failed: Vec<_> = outcomes.iter().filter(|(_, ok, _)| !ok).collect();
    assert!(failed.is_empty(), "runs failed: {failed:?}");
    let mut addresses = BTreeSet::new();
    for (name, _, _) in &outcomes {
        let host = if name.starts_with('a') { a } else { b };
        let ip = host.ip_of(name);
        assert!(addresses.insert(ip.clone()), "{name} got {ip}, which another container has");
    }
    assert_eq!(addresses.len(), 2 * PER_HOST);
    let id = network_id(a, "prod");
    let leased: BTreeSet<String> = cluster
        .underlay
        .keys(&format!("/dataplane/leases/{id}/"))
        .iter()
        .map(|k| k.rsplit('/').next().unwrap().to_string())
        .collect();
    assert_eq!(leased, addresses, "the store's leases are the addresses the containers have");
    assert_eq!(
        cluster.underlay.keys(&format!("/dataplane/endpoints/{id}/")).len(),
        2 * PER_HOST,
        "one endpoint record per container"
    );
}

#[test]
fn a_dead_hosts_leases_and_names_go_after_its_ttl() {
    const TTL_SECS: u32 = 3;
    let mut cluster = Cluster::start(2, TTL_SECS);
    cluster.hosts[0].dp_ok(&["network", "create", "-d", "overlay", "--subnet", SUBNET, "prod"]);
    let (a, b) = (&cluster.hosts[0], &cluster.hosts[1]);
    assert!(eventually(Duration::from_secs(10), || lists(b, "prod overlay global")), "B never saw prod");
    a.run_sleeper("api", &["--network", "prod"]);
    b.run_sleeper("client", &["--network", "prod"]);
    let api = a.ip_of("api");
    let id = network_id(a, "prod");
    assert!(
        eventually(Duration::from_secs(10), || dig(b, "client", "api") == [api.clone()]),
        "api does not resolve on B before A dies"
    );
    assert!(comes_through(b, "client", &api), "client (on B) cannot reach api (on A) before A dies");
    let lease_key = format!("/dataplane/leases/{id}/{api}");
    // A daemon that restarts takes its leases and records over under its new lease: they
    // outlive the old one's TTL.
    cluster.hosts[0].stop_daemon();
    cluster.hosts[0].start_daemon();
    std::thread::sleep(Duration::from_secs(u64::from(TTL_SECS) * 3));
    let (underlay, b) = (&cluster.underlay, &cluster.hosts[1]);
    assert_eq!(underlay.keys(&lease_key).len(), 1, "A's lease went with its restart");
    assert_eq!(
        dig(b, "client", "api"),
        std::slice::from_ref(&api),
        "api went from B's names with A's restart"
    );
    let b = &cluster.hosts[1];
    assert!(comes_through(b, "client", &api), "client (on B) cannot reach api after A's restart");
    cluster.hosts[0].kill_daemon();
    let (underlay, b) = (&cluster.underlay, &cluster.hosts[1]);
    // Not at once: a daemon that restarts within its TTL keeps its leases.
    assert!(underlay.keys(&lease_key).len() == 1, "A's lease went before its TTL");
    assert!(
        eventually(Duration::from_secs(u64::from(TTL_SECS) * 4), || underlay.keys(&lease_key).is_empty()),
        "A's lease {lease_key} outlives its TTL"
    );
    let left = underlay.keys(&format!("/dataplane/endpoints/{id}/"));
    assert_eq!(left.len(), 1, "only B's endpoint record is left: {left:?}");
    assert!(
        eventually(Duration::from_secs(5), || dig(b, "client", "api").is_empty()),
        "the dead host's container still resolves on B: {:?}",
        dig(b, "client", "api")
    );
    assert!(
        !pings(b, "client", &api),
        "traffic from B still reaches the dead host's container after its TTL"
    );
}

#[test]
fn with_etcd_away_local_traffic_and_bridges_go_on_and_overlay_runs_fail_naming_the_store() {
    let mut cluster = Cluster::start(2, 30);
    let (a, b) = (&cluster.hosts[0], &cluster.hosts[1]);
    a.dp_ok(&["network", "create", "-d", "overlay", "--subnet", SUBNET, "prod"]);
    a.dp_ok(&["network", "create", "--subnet", "10.77.0.0/24", "local"]);
    a.run_sleeper("api", &["--network", "prod"]);
    a.run_sleeper("client", &["--network", "prod"]);
    a.run_sleeper("gone", &["--network", "prod"]);
    let api = a.ip_of("api");
    let id = network_id(a, "prod");
    let records = format!("/dataplane/endpoints/{id}/");
    assert!(eventually(Duration::from_secs(10), || lists(b, "prod overlay global")), "B never saw prod");

    cluster.underlay.stop_etcd();
    let a = &cluster.hosts[0];
    let pings = a.exec("client", &format!("ping -c 5 -i 0.2 -W 1 {api}"));
    assert!(pings.status.success(), "existing endpoints stop forwarding without etcd: {pings:?}");
    let err = a.dp_err(&["run", "--rm", "--network", "prod", "--", "true"]);
    assert!(
        err.contains("etcd://198.51.100.1:2379") && err.contains("did not answer"),
        "a run on an overlay network must fail naming the store: {err}"
    );
    a.dp_ok(&["run", "--rm", "--network", "local", "--", "true"]);
    // Removed while the store cannot hear of it: its record goes once the store is back.
    a.dp_ok(&["rm", "-f", "gone"]);

    cluster.underlay.start_etcd();
    let (a, b, underlay) = (&cluster.hosts[0], &cluster.hosts[1], &cluster.underlay);
    assert!(
        eventually(Duration::from_secs(20), || a
            .dp(&["run", "-d", "--name", "late", "--network", "prod", "--", "sleep", "600"])
            .status
            .success()),
        "overlay runs do not come back with etcd:\n{}",
        a.daemon_log()
    );
    assert!(a.ping("late", &api), "the late container cannot reach api");
    assert!(
        eventually(Duration::from_secs(10), || underlay.keys(&records).len() == 3),
        "the store does not catch up with what A removed while it was away: {:?}",
        underlay.keys(&records)
    );
    b.dp_ok(&["network", "create", "-d", "overlay", "--subnet", "10.201.0.0/16", "after"]);
    assert!(
        eventually(Duration::from_secs(10), || lists(a, "after overlay global")),
        "A's watch did not resume: it misses a network made after etcd came back\n{}",
        a.daemon_log()
    );
}

/// The transmitted and received counts of a finished `ping`, from its statistics line
/// ("200 packets transmitted, 198 received, 1% packet loss, ...").
fn ping_counts(out: &str) -> (u32, u32) {
    let line = out.lines().find(|l| l.contains("packets transmitted"));
    let parts: Vec<&str> = line.map(|l| l.split(", ").collect()).unwrap_or_default();
    let count = |at: usize, what: &str| parts.get(at)?.strip_suffix(what)?.parse().ok();
    match (count(0, " packets transmitted"), count(1, " received")) {
        (Some(sent), Some(received)) => (sent, received),
        _ => panic!("no ping statistics in {out}"),
    }
}

#[test]
fn hosts_advertise_their_uplinks_address_unasked_and_traffic_between_them_outlives_a_restart() {
    // The underlay holds each host's default route, and no daemon is told its address.
    let mut cluster = Cluster::start_with(2, 30, &[], Uplink::Underlay);
    let (a, b) = (&cluster.hosts[0], &cluster.hosts[1]);
    create_overlay(a, &[b], "prod", SUBNET);
    a.run_sleeper("api", &["--network", "prod"]);
    b.run_sleeper("client", &["--network", "prod"]);
    assert!(
        comes_through(b, "client", "api"),
        "without --advertise-address, hosts are not reached at their uplink's address\nA:\n{}",
        a.daemon_log()
    );
    for (label, host) in [("A", a), ("B", b)] {
        let options = &host.dp_json(&["network", "inspect", "prod"])[0]["Options"];
        assert_eq!(
            options["com.docker.network.driver.overlay.vxlanid_list"], "4096",
            "host {label}'s inspect shows the network's VNI, under Docker's key: {options}"
        );
    }

    // Pings every 50 ms from B, from before A's daemon stops until after it is back.
    let api = a.ip_of("api");
    let sandbox =
        b.dp_json(&["inspect", "client"])[0]["NetworkSettings"]["SandboxKey"].as_str().unwrap().to_string();
    let pinging = std::process::Command::new("nsenter")
        .arg(format!("--net={sandbox}"))
        .args(["ping", "-i", "0.05", "-W", "1", "-w", "120", &api])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    thread::sleep(Duration::from_secs(1));
    let a = &mut cluster.hosts[0];
    let restart = std::time::Instant::now();
    a.stop_daemon();
    a.start_daemon();
    let restart = restart.elapsed();
    thread::sleep(Duration::from_secs(1));
    // Started before the stop and still running now: the pings span the restart. (Not
    // their count times 50 ms: on a loaded machine ping sends fewer than 20 a second.)
    let mut pinging = pinging;
    assert!(pinging.try_wait().unwrap().is_none(), "the pings ended before the restart did ({restart:?})");
    // SAFETY: kill(2) on the PID of a child we spawned and have not reaped yet; SIGINT
    // makes ping print its statistics.
    unsafe { libc::kill(pinging.id() as i32, libc::SIGINT) };
    let out = pinging.wait_with_output().unwrap();
    let (sent, received) = ping_counts(&String::from_utf8_lossy(&out.stdout));
    assert!(sent > 20, "too few pings to tell ({sent} sent over {restart:?})");
    assert!(
        sent - received <= sent / 50,
        "traffic between hosts stops while a daemon restarts ({restart:?}): {received} of {sent} pings came back\nA:\n{}",
        a.daemon_log()
    );
    let client = cluster.hosts[1].ip_of("client");
    let a = &cluster.hosts[0];
    assert!(a.ping("api", &client), "after the restart, api (on A) cannot reach client (on B)");
}

#[test]
fn a_ping_between_two_hosts_keeps_flowing_while_etcd_is_stopped_and_overlay_runs_fail_naming_it() {
    // A short TTL: the host renews its lease every second, so that the renewal fails
    // (and the watch breaks) while the ping runs.
    let mut cluster = Cluster::start(2, 3);
    let (a, b) = (&cluster.hosts[0], &cluster.hosts[1]);
    create_overlay(a, &[b], "prod", SUBNET);
    a.run_sleeper("api", &["--network", "prod"]);
    b.run_sleeper("client", &["--network", "prod"]);
    let api = a.ip_of("api");
    assert!(comes_through(b, "client", &api), "client (on B) cannot reach api (on A) with etcd up");

    let Cluster { hosts, underlay } = &mut cluster;
    let (a, b) = (&hosts[0], &hosts[1]);
    let (ping, refusal) = thread::scope(|scope| {
        // 80 pings over 8 s; etcd goes 1 s in.
        let ping = scope.spawn(|| b.exec("client", &format!("ping -c 80 -i 0.1 -W 1 {api}")));
        thread::sleep(Duration::from_secs(1));
        underlay.stop_etcd();
        let refusal = a.dp(&["run", "--rm", "--network", "prod", "--", "true"]);
        (ping.join().unwrap(), refusal)
    });
    let summary = String::from_utf8_lossy(&ping.stdout);
    assert_eq!(
        ping_counts(&summary),
        (80, 80),
        "the ping from B to A lost packets once etcd stopped: {summary}{}\nA:\n{}\nB:\n{}",
        String::from_utf8_lossy(&ping.stderr),
        a.daemon_log(),
        b.daemon_log()
    );
    let err = String::from_utf8_lossy(&refusal.stderr);
    assert!(
        !refusal.status.success() && err.contains("etcd://198.51.100.1:2379"),
        "a run on the overlay network with etcd stopped must fail naming the store: {refusal:?}"
    );
    for (label, host) in [("A", a), ("B", b)] {
        assert!(
            host.daemon_log().contains("existing endpoints keep working"),
            "host {label} never noticed that etcd stopped while the ping ran, so the ping proves nothing:\n{}",
            host.daemon_log()
        );
    }
}

#[test]
fn hosts_share_an_overlay_through_etcd_over_tls_with_a_user_and_a_wrong_ca_or_password_stops_a_daemon() {
    let mut cluster = Cluster::start_secure(2, 30);
    let [a, b] = &cluster.hosts[..] else { unreachable!() };
    create_overlay(a, &[b], "prod", SUBNET);
    a.run_sleeper("api", &["--network", "prod"]);
    b.run_sleeper("client", &["--network", "prod"]);
    assert!(
        comes_through(b, "client", "api"),
        "client (on B) cannot ping api (on A) by name through a TLS store\nA:\n{}\nB:\n{}",
        a.daemon_log(),
        b.daemon_log()
    );
    assert!(a.daemon_log().contains("signed in as \"dataplane\""), "A never signed in:\n{}", a.daemon_log());
    let id = network_id(a, "prod");
    assert_eq!(
        cluster.underlay.keys(&format!("/dataplane/endpoints/{id}/")).len(),
        2,
        "both hosts' endpoints are recorded"
    );
    let other_ca = cluster.underlay.tls_dir().join("other-ca.pem").display().to_string();

    let b = &mut cluster.hosts[1];
    b.stop_daemon();
    let err = b.daemon_fails(&[("DATAPLANE_STORE_CACERT", &other_ca)]);
    assert!(
        err.contains("TLS with the store etcds://198.51.100.1:2379 failed") && err.contains("--store-cacert"),
        "a daemon that does not trust etcd's certificate must say so and name --store-cacert: {err}"
    );
    let err = b.daemon_fails(&[("DATAPLANE_STORE_PASSWORD", "not-the-password")]);
    assert!(
        err.contains("the store etcds://198.51.100.1:2379 refused user \"dataplane\"")
            && err.contains("--store-password-file"),
        "a daemon with a wrong password must say so and name the fix: {err}"
    );
    let err = b.daemon_fails(&[("DATAPLANE_STORE", "etcd://198.51.100.1:2379")]);
    assert!(err.contains("etcds://"), "TLS files with a plain store must be refused naming etcds://: {err}");
    b.start_daemon();
    let [a, b] = &cluster.hosts[..] else { unreachable!() };
    assert!(comes_through(b, "client", "api"), "client (on B) cannot reach api after B's restart");
    b.run_sleeper("late", &["--network", "prod"]);
    let late = b.ip_of("late");
    assert!(comes_through(a, "api", &late), "a run after the restart is not reached from A");
}

/// Cuts host `host`'s connections to etcd (its own namespace's nftables, which the daemon
/// does not use), or restores them.
fn cut_from_etcd(host: &Host, cut: bool) {
    if cut {
        host.sh_ok(
            "nft add table inet cut && \
             nft add chain inet cut out '{ type filter hook output priority 0; }' && \
             nft add rule inet cut out tcp dport 2379 drop && \
             nft add chain inet cut in '{ type filter hook input priority 0; }' && \
             nft add rule inet cut in tcp sport 2379 drop",
        );
    } else {
        host.sh_ok("nft delete table inet cut");
    }
}

#[test]
fn a_host_cut_from_etcd_while_history_is_compacted_converges_from_a_fresh_snapshot() {
    let cluster = Cluster::start(2, 60);
    let [a, b] = &cluster.hosts[..] else { unreachable!() };
    create_overlay(a, &[b], "prod", SUBNET);
    a.run_sleeper("api", &["--network", "prod"]);
    b.run_sleeper("client", &["--network", "prod"]);
    assert!(
        eventually(Duration::from_secs(10), || dig(a, "api", "client").len() == 1),
        "client never resolved on A"
    );
    let client = b.ip_of("client");

    cut_from_etcd(a, true);
    // The watch's keep-alive (10 s, 3 s to answer) finds etcd gone.
    assert!(
        eventually(Duration::from_secs(30), || a.daemon_log().contains("store watch:")),
        "A's watch never broke while cut from etcd:\n{}",
        a.daemon_log()
    );
    b.run_sleeper("late", &["--network", "prod"]);
    b.dp_ok(&["rm", "-f", "client"]);
    let late = b.ip_of("late");
    for i in 0..20 {
        b.dp_ok(&[
            "network",
            "create",
            "-d",
            "overlay",
            "--subnet",
            &format!("10.{}.0.0/16", 210 + i),
            "churn",
        ]);
        b.dp_ok(&["network", "rm", "churn"]);
    }
    let status = cluster.underlay.etcdctl_ok(&["endpoint", "status", "-w", "json"]);
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    let revision = status[0]["Status"]["header"]["revision"].as_i64().unwrap();
    cluster.underlay.etcdctl_ok(&["compact", &revision.to_string()]);
    cut_from_etcd(a, false);

    assert!(
        eventually(Duration::from_secs(30), || dig(a, "api", "late") == [late.clone()]),
        "a container B ran while A was cut off never resolved on A: {:?}\n{}",
        dig(a, "api", "late"),
        a.daemon_log()
    );
    assert!(comes_through(a, "api", &late), "api (on A) cannot reach late (on B)");
    assert!(
        dig(a, "api", "client").is_empty(),
        "a container B removed while A was cut off still resolves on A"
    );
    assert!(!pings(a, "api", &client), "A still sends to the removed container's address");
    assert!(!lists(a, "churn overlay global"), "a network made and removed meanwhile is left on A");
    b.dp_ok(&["network", "create", "-d", "overlay", "--subnet", "10.201.0.0/16", "after"]);
    assert!(
        eventually(Duration::from_secs(10), || lists(a, "after overlay global")),
        "A's watch did not resume after the compaction\n{}",
        a.daemon_log()
    );
}

#[test]
fn an_internal_overlay_network_joins_containers_across_hosts_and_reaches_nothing_outside() {
    let cluster = Cluster::start_with(2, 30, &[], Uplink::External);
    let [a, b] = &cluster.hosts[..] else { unreachable!() };
    // Dual stack, and an outside that IPv6 could reach (NAT66) were the network not internal.
    let args = ["--internal", "--subnet", SUBNET, "--ipv6", "--subnet", "fd00:205::/64"];
    create_overlay_with(a, &[b], "vault", &args);
    add_ipv6_uplink(a);
    add_ipv6_uplink(b);
    assert_eq!(b.dp_json(&["network", "inspect", "vault"])[0]["Internal"], true, "B's vault is not internal");
    a.run_sleeper("db", &["--network", "vault"]);
    b.run_sleeper("app", &["--network", "vault"]);
    assert!(comes_through(b, "app", "db"), "app (on B) cannot reach db (on A) on an internal overlay");
    assert!(pings(a, "db", "app"), "db (on A) cannot reach app (on B) on an internal overlay");
    assert!(
        eventually(Duration::from_secs(10), || pings6(b, "app", "db")),
        "app (on B) cannot ping -6 db (on A) on an internal overlay"
    );
    assert!(pings6(a, "db", "app"), "db (on A) cannot ping -6 app (on B) on an internal overlay");
    let _http =
        b.external_server("python3", &["-m", "http.server", "8080", "--bind", EXTERNAL_ADDR], "http.log");
    let _http_a =
        a.external_server("python3", &["-m", "http.server", "8080", "--bind", EXTERNAL_ADDR], "http.log");
    let _http6 =
        b.external_server("python3", &["-m", "http.server", "8086", "--bind", EXTERNAL_ADDR6], "http6.log");
    let _http6_a =
        a.external_server("python3", &["-m", "http.server", "8086", "--bind", EXTERNAL_ADDR6], "http6.log");
    // The host's own addresses are not outside (as on Docker's internal networks, whose
    // rules filter what is forwarded, not what is for the host); what would be routed
    // out of it is.
    for (label, host, container) in [("B", b, "app"), ("A", a, "db")] {
        let dropped = host.counter("dropped_internal");
        let fetched =
            host.exec(container, &format!("curl -sf -m 3 -o /dev/null http://{EXTERNAL_ADDR}:8080/"));
        assert!(!fetched.status.success(), "{container} (internal, on {label}) reaches the outside");
        assert!(
            !pings(host, container, EXTERNAL_ADDR),
            "{container} (internal, on {label}) pings the outside"
        );
        assert!(host.counter("dropped_internal") > dropped, "host {label} did not drop as internal");
        let dropped = host.counter("dropped_internal");
        // What is dropped is answered by nothing: short waits (CI's time).
        let fetched =
            host.exec(container, &format!("curl -6 -sf -m 2 -o /dev/null http://[{EXTERNAL_ADDR6}]:8086/"));
        assert!(
            !fetched.status.success(),
            "{container} (internal, on {label}) reaches the outside over IPv6"
        );
        let pinged = host.exec(container, &format!("ping -6 -c 1 -W 1 {EXTERNAL_ADDR6}"));
        assert!(!pinged.status.success(), "{container} (internal, on {label}) pings the outside over IPv6");
        assert!(host.counter("dropped_internal") > dropped, "host {label} did not drop IPv6 as internal");
        assert_eq!(host.counter("masqueraded"), 0, "host {label} masqueraded an internal container");
    }
    // The other host, on the underlay, is outside too.
    let dropped = b.counter("dropped_internal");
    assert!(!pings(b, "app", "198.51.100.11"), "app (internal, on B) reaches host A itself");
    assert!(b.counter("dropped_internal") > dropped, "app's ping to host A was not dropped as internal");
}

/// The UDP ports of the probes `forged_vxlan_frames_are_dropped_and_never_delivered`
/// sends to a container through the tunnel, one per kind of frame.
const GENUINE: u16 = 7770;
const FOREIGN_SOURCE: u16 = 7771;
const UNKNOWN_VNI: u16 = 7772;
const NOT_A_HOST: u16 = 7773;
const OVER_IPV6: u16 = 7774;
const OVER_IPV6_WITHOUT_CHECKSUM: u16 = 7775;

/// A python3 script that sends VXLAN frames from a raw socket (any outer source) to
/// `to`'s port 4789: per line of `frames`, three frames of (outer source, VNI, inner
/// source, inner UDP destination port), each an IPv4/UDP packet for `dst_ip` at `dst_mac`;
/// then per line of `frames6`, three such frames (VNI, inner source, port, whether the
/// outer UDP checksum is zero) over IPv6 to `to6` (an address with its zone): from a UDP
/// socket, which computes the checksum, or a raw one, which leaves it zero.
fn vxlan_sender(
    (to, to6): (&str, &str),
    dst_mac: &str,
    dst_ip: &str,
    frames: &[(&str, u32, &str, u16)],
    frames6: &[(u32, &str, u16, bool)],
) -> String {
    let frames: Vec<String> = frames
        .iter()
        .map(|(outer, vni, inner, port)| format!("({outer:?}, {vni}, {inner:?}, {port})"))
        .collect();
    let frames6: Vec<String> = frames6
        .iter()
        .map(|(vni, inner, port, zero)| {
            format!("({vni}, {inner:?}, {port}, {})", if *zero { "True" } else { "False" })
        })
        .collect();
    format!(
        r#"
import socket, struct, time
def checksum(b):
    s = sum(struct.unpack('!10H', b))
    s = (s & 0xffff) + (s >> 16)
    s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff
def ipv4(src, dst, payload):
    h = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(payload), 0, 0, 64, 17, 0,
                    socket.inet_aton(src), socket.inet_aton(dst))
    return h[:10] + struct.pack('!H', checksum(h)) + h[12:] + payload
def udp(sport, dport, data):
    return struct.pack('!HHHH', sport, dport, 8 + len(data), 0) + data
to = {to:?}
mac = bytes.fromhex({dst_mac:?}.replace(':', ''))
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
for outer, vni, inner, port in [{frames}]:
    eth = mac + bytes.fromhex('02aabbccdd01') + b'\x08\x00'
    inner_packet = eth + ipv4(inner, {dst_ip:?}, udp(40000, port, b'forged'))
    vxlan = struct.pack('!II', 0x08000000, vni << 8) + inner_packet
    for _ in range(3):
        s.sendto(ipv4(outer, to, udp(40001, 4789, vxlan)), (to, 0))
        time.sleep(0.05)
s6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
raw6 = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_UDP)
for vni, inner, port, zero in [{frames6}]:
    eth = mac + bytes.fromhex('02aabbccdd01') + b'\x08\x00'
    vxlan = struct.pack('!II', 0x08000000, vni << 8) + eth + ipv4(inner, {dst_ip:?}, udp(40000, port, b'forged'))
    for _ in range(3):
        if zero:
            raw6.sendto(udp(40002, 4789, vxlan), ({to6:?}, 0))
        else:
            s6.sendto(vxlan, ({to6:?}, 4789))
        time.sleep(0.05)
"#,
        frames = frames.join(", "),
        frames6 = frames6.join(", ")
    )
}

#[test]
fn forged_vxlan_frames_are_dropped_and_never_delivered() {
    let cluster = Cluster::start(2, 30);
    let [a, b] = &cluster.hosts[..] else { unreachable!() };
    create_overlay(a, &[b], "prod", SUBNET);
    a.run_sleeper("api", &["--network", "prod"]);
    b.run_sleeper("client", &["--network", "prod"]);
    assert!(comes_through(b, "client", "api"), "client (on B) cannot reach api (on A)");
    assert_eq!(cluster.underlay.keys("/dataplane/vnis/"), ["/dataplane/vnis/4096"]);
    let (api, client) = (a.ip_of("api"), b.ip_of("client"));
    let link = String::from_utf8(b.exec("client", "ip -o link show dev eth0").stdout).unwrap();
    let mac =
        link.split_whitespace().skip_while(|w| *w != "link/ether").nth(1).expect("client's MAC").to_string();
    let (host_a, host_b) = ("198.51.100.11", "198.51.100.12");
    let link_local = b.sh_ok("ip -6 -o addr show dev ul0 scope link");
    let link_local = link_local.split_whitespace().nth(3).expect("B's link-local address on ul0");
    let host_b6 = format!("{}%br0", link_local.split('/').next().unwrap());
    let script = vxlan_sender(
        (host_b, &host_b6),
        &mac,
        &client,
        &[
            // As A would send it: api's frame, from A, on prod's VNI. It shows that the
            // forger's frames reach the container when nothing is wrong with them.
            (host_a, 4096, &api, GENUINE),
            // From A, but with a source A has no endpoint at (198.18.0.0/15, nobody's).
            (host_a, 4096, "198.18.0.7", FOREIGN_SOURCE),
            // From A, api's source, on a VNI no network has.
            (host_a, 4097, &api, UNKNOWN_VNI),
            // api's source on prod's VNI, from an underlay address that is no host of
            // the store (the underlay's own).
            (dataplane_tests::hosts::ETCD_ADDR, 4096, &api, NOT_A_HOST),
        ],
        // The genuine frame over IPv6, to B's link-local address on the underlay: the
        // device takes it (its checksum is valid), the programs do not (B tunnels over
        // IPv4, the family of its --advertise-address: the kernel refuses them the
        // frame's key as an IPv4 one).
        // Over IPv6 without a checksum, the kernel drops it before the programs see it:
        // the device is not made to take zero checksums over IPv6 (udp6zerocsumrx).
        &[(4096, &api, OVER_IPV6, false), (4096, &api, OVER_IPV6_WITHOUT_CHECKSUM, true)],
    );
    let checksum_errors = || {
        let snmp6 = b.sh_ok("cat /proc/net/snmp6");
        let line = snmp6.lines().find(|l| l.starts_with("Udp6InCsumErrors")).expect("Udp6InCsumErrors");
        line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap()
    };
    let (dropped, checksum_errors_before) = (b.counter("dropped_tunnel"), checksum_errors());
    let capture = thread::scope(|s| {
        let capture =
            s.spawn(|| b.exec("client", "timeout 6 tcpdump -l -n -i eth0 udp dst portrange 7770-7775 2>&1"));
        thread::sleep(Duration::from_secs(2));
        cluster.underlay.sh_ok(&format!("python3 -c '{}'", script.replace('\'', "'\\''")));
        capture.join().unwrap()
    });
    let seen = String::from_utf8_lossy(&capture.stdout);
    let delivered = |port: u16| seen.lines().filter(|l| l.contains(&format!("{client}.{port}:"))).count();
    assert_eq!(delivered(GENUINE), 3, "the well-formed frames did not all reach the container:\n{seen}");
    for (port, what) in [
        (FOREIGN_SOURCE, "an inner source the sending host has no endpoint at"),
        (UNKNOWN_VNI, "an unknown VNI"),
        (NOT_A_HOST, "an outer source that is no host of the store"),
        (OVER_IPV6, "an outer IPv6 header, to a host tunnelling over IPv4"),
        (OVER_IPV6_WITHOUT_CHECKSUM, "an outer IPv6 header and no UDP checksum"),
    ] {
        assert_eq!(delivered(port), 0, "a frame with {what} reached the container:\n{seen}");
    }
    let dropped = b.counter("dropped_tunnel") - dropped;
    assert_eq!(dropped, 12, "B's tunnel should have dropped the 12 forged frames, dropped {dropped}");
    assert_eq!(
        checksum_errors() - checksum_errors_before,
        3,
        "B's kernel did not refuse the 3 frames over IPv6 with a zero UDP checksum"
    );
}

/// A container's IPv6 address on its (only) network, as inspect shows it.
fn ip6_of(host: &Host, container: &str) -> String {
    let info = host.dp_json(&["inspect", container]);
    let networks = info[0]["NetworkSettings"]["Networks"].as_object().unwrap();
    networks.values().next().unwrap()["GlobalIPv6Address"].as_str().unwrap().to_string()
}

/// `dig +short AAAA` from a container against `resolver`: the addresses.
fn dig_aaaa(host: &Host, from: &str, resolver: &str, name: &str) -> Vec<String> {
    let out = host.exec(from, &format!("dig +short +time=1 +tries=1 AAAA @{resolver} {name}"));
    assert!(out.status.success(), "dig AAAA {name}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().lines().map(str::to_string).collect()
}

/// Whether `from` on `host` reaches `to` over IPv6 with one ping.
fn pings6(host: &Host, from: &str, to: &str) -> bool {
    host.exec(from, &format!("ping -6 -c 1 -W 2 {to}")).status.success()
}

/// Creates overlay network `name` with `args` on `on` and waits until `others` list it.
fn create_overlay_with(on: &Host, others: &[&Host], name: &str, args: &[&str]) {
    on.dp_ok(&[&["network", "create", "-d", "overlay"][..], args, &[name]].concat());
    for host in others {
        let line = format!("{name} overlay global");
        assert!(
            eventually(Duration::from_secs(10), || lists(host, &line)),
            "another host never saw {name}: {:?}",
            network_names(host)
        );
    }
}

#[test]
fn containers_on_two_hosts_reach_each_other_over_ipv6_by_name_on_a_dual_stack_overlay() {
    let cluster = Cluster::start(2, 30);
    let [a, b] = &cluster.hosts[..] else { unreachable!() };
    create_overlay_with(a, &[b], "prod", &["--subnet", SUBNET, "--ipv6", "--subnet", "fd00:200::/64"]);
    let inspected = b.dp_json(&["network", "inspect", "prod"]);
    assert_eq!(inspected[0]["EnableIPv6"], true, "the other host's network has no IPv6: {inspected}");
    a.dp_ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "--network",
        "prod",
        "--",
        "python3",
        "-m",
        "http.server",
        "80",
        "--bind",
        "::",
    ]);
    b.run_sleeper("client", &["--network", "prod"]);
    let (web6, client6) = (ip6_of(a, "web"), ip6_of(b, "client"));
    assert!(web6.starts_with("fd00:200::") && client6.starts_with("fd00:200::"), "{web6} {client6}");
    assert_ne!(web6, client6, "two hosts leased the same IPv6 address");
    let id = network_id(a, "prod");
    let leases = cluster.underlay.keys(&format!("/dataplane/leases/{id}/"));
    for ip in [&web6, &client6] {
        assert!(
            leases.iter().any(|k| k.ends_with(&format!("/{ip}"))),
            "no lease of {ip} in the store: {leases:?}"
        );
    }
    assert!(
        eventually(Duration::from_secs(10), || dig_aaaa(b, "client", GATEWAY, "web") == [web6.clone()]),
        "B's resolver does not answer AAAA for web (on A) with {web6}: {:?}",
        dig_aaaa(b, "client", GATEWAY, "web")
    );
    assert!(
        eventually(Duration::from_secs(10), || pings6(b, "client", "web")),
        "client (on B) cannot ping -6 web (on A) by name\nA:\n{}\nB:\n{}",
        a.daemon_log(),
        b.daemon_log()
    );
    assert!(pings6(a, "web", "client"), "web (on A) cannot ping -6 client (on B) by name");
    let fetch = || b.exec("client", "curl -6 -sf --max-time 5 -o /dev/null -w '%{http_code}' http://web/");
    assert!(
        eventually(Duration::from_secs(10), || fetch().stdout == b"200"),
        "client (on B) cannot fetch web's page (on A) over IPv6: {:?}",
        fetch()
    );
    // 1402 bytes of ICMPv6 payload fill 1450 bytes of IPv6 (40 + 8 of headers): once
    // encapsulated over the IPv4 underlay, exactly its 1500.
    let full = b.exec("client", "ping -6 -c 1 -W 2 -M do -s 1402 web");
    assert!(full.status.success(), "a full-MTU IPv6 packet does not cross: {full:?}");
    // IPv6 inside crosses the IPv4 underlay with the same outer checksum as IPv4.
    let frames = outer_headers(b, 4, || {
        let ping = b.exec("client", "ping -6 -c 2 -i 0.2 -W 2 web");
        assert!(ping.status.success(), "client (on B) cannot ping -6 web (on A): {ping:?}");
    });
    assert_outer_udp_checksum_is_zero(&frames, "inner=ipv6 icmp=ok");
    // Neighbour discovery for web was answered on B, with web's MAC: no solicitation crossed.
    let neighbours =
        String::from_utf8_lossy(&b.exec("client", &format!("ip -6 neigh show {web6}")).stdout).to_string();
    let mac = a.dp_json(&["inspect", "web"])[0]["NetworkSettings"]["Networks"]["prod"]["MacAddress"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        neighbours.contains(&mac),
        "client resolved web ({web6}) to another MAC than {mac}: {neighbours}"
    );
    assert!(b.counter("arp_answered") > 0, "B's programs answered no solicitation for web");
}

#[test]
fn an_ipv6_only_overlay_carries_its_containers_between_hosts() {
    let cluster = Cluster::start(2, 30);
    let [a, b] = &cluster.hosts[..] else { unreachable!() };
    create_overlay_with(a, &[b], "six", &["--ipv6", "--ipv4=false", "--subnet", "fd00:201::/64"]);
    a.run_sleeper("api", &["--network", "six"]);
    b.run_sleeper("client", &["--network", "six"]);
    let addresses = String::from_utf8_lossy(&b.exec("client", "ip addr show dev eth0").stdout).to_string();
    assert!(!addresses.contains("inet "), "a container of an IPv6-only overlay has IPv4: {addresses}");
    let api6 = ip6_of(a, "api");
    assert!(
        eventually(Duration::from_secs(10), || dig_aaaa(b, "client", "fd00:201::1", "api") == [api6.clone()]),
        "B's resolver (on the IPv6 gateway) does not answer AAAA for api (on A) with {api6}"
    );
    assert!(
        eventually(Duration::from_secs(10), || pings6(b, "client", "api")),
        "client (on B) cannot ping -6 api (on A) on an IPv6-only overlay\nA:\n{}\nB:\n{}",
        a.daemon_log(),
        b.daemon_log()
    );
    assert!(pings6(a, "api", "client"), "api (on A) cannot ping -6 client (on B)");

    // Frames sent into A's VXLAN device from B's underlay address: api takes the one from
    // client's address, and A's programs drop the one whose inner source is no endpoint
    // of B (anti-spoofing at the tunnel's end), before api's socket sees it.
    let client6 = ip6_of(b, "client");
    let api_mac = a.dp_json(&["inspect", "api"])[0]["NetworkSettings"]["Networks"]["six"]["MacAddress"]
        .as_str()
        .unwrap()
        .to_string();
    let vni = cluster.underlay.keys("/dataplane/vnis/")[0].rsplit('/').next().unwrap().to_string();
    let listen = "timeout 6 python3 -c 'import socket\ns = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)\n\
        s.bind((\"::\", 9999))\nwhile True:\n    data, peer = s.recvfrom(100)\n    print(peer[0], data.decode(), flush=True)'; true";
    let received = thread::scope(|scope| {
        let listener = scope.spawn(|| a.exec("api", listen));
        thread::sleep(Duration::from_secs(1));
        let (dropped, delivered) = (a.counter("dropped_tunnel"), a.counter("from_tunnel"));
        for (source, payload) in [("fd00:201::77", "spoofed"), (client6.as_str(), "genuine")] {
            let sent = b
                .command("python3")
                .args(["-c", INJECT, source, &api6, &api_mac, &vni, "198.51.100.11", payload])
                .output()
                .unwrap();
            assert!(sent.status.success(), "sending into A's VXLAN device: {sent:?}");
            thread::sleep(Duration::from_millis(300));
        }
        assert_eq!(a.counter("dropped_tunnel") - dropped, 1, "A did not drop the spoofed inner source");
        assert!(a.counter("from_tunnel") > delivered, "A delivered nothing from the tunnel");
        String::from_utf8_lossy(&listener.join().unwrap().stdout).to_string()
    });
    assert!(
        received.contains(&format!("{client6} genuine")),
        "api did not get the genuine frame: {received:?}"
    );
    assert!(!received.contains("spoofed"), "api got the frame with a spoofed inner source: {received:?}");
}

/// Sends one VXLAN frame (argv: inner IPv6 source, destination, destination MAC, VNI,
/// outer destination, UDP payload) to port 4789: an IPv6 UDP datagram to port 9999, with
/// its checksum, from the sending host's own address.
const INJECT: &str = r#"
import socket, struct, sys
src_ip, dst_ip, dst_mac, vni, outer, payload = sys.argv[1:7]
src = socket.inet_pton(socket.AF_INET6, src_ip)
dst = socket.inet_pton(socket.AF_INET6, dst_ip)
data = payload.encode()
udp = struct.pack("!HHHH", 40000, 9999, 8 + len(data), 0) + data
pseudo = src + dst + struct.pack("!I3xB", len(udp), 17) + udp
if len(pseudo) % 2:
    pseudo += b"\0"
total = sum(struct.unpack("!%dH" % (len(pseudo) // 2), pseudo))
while total >> 16:
    total = (total & 0xFFFF) + (total >> 16)
udp = udp[:6] + struct.pack("!H", ~total & 0xFFFF or 0xFFFF) + udp[8:]
ip6 = struct.pack("!IHBB", 0x60000000, len(udp), 17, 64) + src + dst
eth = bytes.fromhex(dst_mac.replace(":", "")) + bytes.fromhex("02000000fe01") + b"\x86\xdd"
vxlan = struct.pack("!II", 0x08000000, int(vni) << 8)
socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(vxlan + eth + ip6 + udp, (outer, 4789))
"#;

#[test]
fn two_ipv6_overlay_networks_stay_apart_across_hosts() {
    let cluster = Cluster::start(2, 30);
    let [a, b] = &cluster.hosts[..] else { unreachable!() };
    create_overlay_with(a, &[b], "prod6", &["--ipv6", "--ipv4=false", "--subnet", "fd00:202::/64"]);
    create_overlay_with(b, &[a], "dev6", &["--ipv6", "--ipv4=false", "--subnet", "fd00:203::/64"]);
    a.run_sleeper("api", &["--network", "prod6"]);
    a.run_sleeper("tool", &["--network", "dev6"]);
    b.run_sleeper("client", &["--network", "prod6"]);
    b.run_sleeper("stranger", &["--network", "dev6"]);
    let (api, tool) = (ip6_of(a, "api"), ip6_of(a, "tool"));
    assert!(
        eventually(Duration::from_secs(10), || pings6(b, "client", &api)),
        "client cannot reach api, on its own network"
    );
    assert!(
        eventually(Duration::from_secs(10), || pings6(b, "stranger", &tool)),
        "stranger cannot reach tool, on its own network"
    );
    assert!(!pings6(b, "stranger", &api), "stranger (dev6, on B) reaches api (prod6, on A)");
    assert!(!pings6(b, "client", &tool), "client (prod6, on B) reaches tool (dev6, on A)");
    assert!(b.counter("dropped_isolation") > 0, "B's programs dropped nothing between the networks");
}
