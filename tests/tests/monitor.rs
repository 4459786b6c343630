//! `dataplane monitor`: each drop the namespaces can provoke shows with its reason and
//! who it was about, in the JSON shape documented; filters pass only what they name; a
//! new masqueraded flow shows its translation; a ring buffer too small for a flood loses
//! events, shows how many, and loses no packet.

use std::{
    io::{BufRead, BufReader},
    process::Stdio,
    sync::mpsc,
    time::{Duration, Instant},
};

use dataplane_common::MonitorEvent;
use dataplane_tests::{EXTERNAL_ADDR, EXTERNAL_ADDR6, Host, KillOnDrop, UPLINK_ADDR, UPLINK_ADDR6};
use serde_json::Value;

/// A running `dataplane monitor` and the lines it printed so far.
struct Monitor {
    _child: KillOnDrop,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Monitor {
    fn start(host: &Host, args: &[&str]) -> Self {
        let mut child = host
            .command(dataplane_tests::binary())
            .arg("monitor")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        Self { _child: KillOnDrop(child), lines, seen: vec![] }
    }

    /// Takes what was printed within `wait`.
    fn gather(&mut self, wait: Duration) {
        let deadline = Instant::now() + wait;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => break,
            }
        }
    }

    fn events(&self) -> Vec<Value> {
        self.seen
            .iter()
            .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
            .collect()
    }

    /// Provokes with `provoke` (again each second, for the subscription to be in place)
    /// until `find` finds what it looks for in the lines so far, within 10 s.
    fn until<T>(&mut self, what: &str, mut provoke: impl FnMut(), find: impl Fn(&Self) -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            provoke();
            self.gather(Duration::from_secs(1));
            if let Some(found) = find(self) {
                return found;
            }
        }
        panic!("nothing for {what} in:\n{}", self.seen.join("\n"));
    }

    /// The first JSON event `wanted` picks, as `until` waits for it.
    fn expect(&mut self, what: &str, provoke: impl FnMut(), wanted: impl Fn(&Value) -> bool) -> Value {
        self.until(what, provoke, |m| m.events().into_iter().find(&wanted))
    }

    /// The first text line `wanted` picks, as `until` waits for it.
    fn expect_text(&mut self, what: &str, provoke: impl FnMut(), wanted: impl Fn(&str) -> bool) -> String {
        self.until(what, provoke, |m| m.seen.iter().find(|l| wanted(l)).cloned())
    }
}

fn drop_of(reason: &'static str) -> impl Fn(&Value) -> bool {
    move |e| e["type"] == "drop" && e["reason"] == reason
}

/// A script sending one UDP datagram.
fn udp_to(addr: &str, port: u16) -> String {
    format!("bash -c 'echo x > /dev/udp/{addr}/{port}'")
}

fn quietly(host: &Host, container: &str, script: &str) {
    let _ = host.exec(container, script);
}

#[test]
fn each_drop_shows_with_its_reason_container_and_network_in_json() {
    let host = Host::start_with_external();
    host.dp_ok(&["network", "create", "--subnet", "10.91.0.0/24", "red"]);
    host.dp_ok(&["network", "create", "--subnet", "10.92.0.0/24", "blue"]);
    host.dp_ok(&["network", "create", "--subnet", "10.93.0.0/24", "--opt", "icc=false", "quiet"]);
    host.dp_ok(&["network", "create", "--subnet", "10.94.0.0/24", "--internal", "closed"]);
    host.run_sleeper("a", &["--network", "red", "-p", "8080:80"]);
    host.run_sleeper("b", &["--network", "blue"]);
    host.run_sleeper("c", &["--network", "quiet"]);
    host.run_sleeper("d", &["--network", "quiet"]);
    host.run_sleeper("e", &["--network", "closed"]);
    let (a, b, d) = (host.ip_of("a"), host.ip_of("b"), host.ip_of("d"));
    host.dp_ok(&["firewall", "add", "--source", EXTERNAL_ADDR, "--port", "8080", "--proto", "tcp", "deny"]);
    host.external_sh_ok(&format!("ip route add 10.0.0.0/8 via {UPLINK_ADDR}"));
    let mut monitor = Monitor::start(&host, &["--json"]);

    let isolation = monitor.expect(
        "isolation",
        || quietly(&host, "a", &format!("ping -c 1 -W 1 {b}")),
        drop_of("isolation"),
    );
    // The JSON shape, field by field.
    assert!(isolation["time"].as_str().unwrap().parse::<jiff::Timestamp>().is_ok(), "time: {isolation}");
    assert_eq!(isolation["container"], "a", "the sender, by name: {isolation}");
    assert_eq!(isolation["network"], "red");
    assert!(isolation["interface"].as_str().unwrap().starts_with("veth"), "{isolation}");
    assert_eq!(isolation["family"], "ipv4");
    assert_eq!(isolation["proto"], "icmp");
    assert_eq!(isolation["src"], a.as_str());
    assert_eq!(isolation["dst"], b.as_str());
    assert_eq!(isolation["src_port"], Value::Null, "ICMP has no ports");
    assert_eq!(isolation["hook"], "from_container");
    assert_eq!(isolation["path"], "dropped_isolation");

    // ARP between isolated bridge ports fails: c is told d's MAC.
    let d_mac =
        host.dp_json(&["inspect", "d"])[0]["NetworkSettings"]["Networks"]["quiet"]["MacAddress"].clone();
    host.exec("c", &format!("ip neigh replace {d} lladdr {} dev eth0", d_mac.as_str().unwrap()));
    let icc = monitor.expect("icc", || quietly(&host, "c", &format!("ping -c 1 -W 1 {d}")), drop_of("icc"));
    assert_eq!((&icc["container"], &icc["network"]), (&"c".into(), &"quiet".into()), "{icc}");
    let internal = monitor.expect(
        "internal",
        || quietly(&host, "e", &format!("ping -c 1 -W 1 {EXTERNAL_ADDR}")),
        drop_of("internal"),
    );
    assert_eq!(internal["container"], "e", "{internal}");
    let forge = env!("CARGO_BIN_EXE_dp-forge");
    let spoofed = monitor.expect(
        "spoofed",
        || {
            quietly(
                &host,
                "b",
                &format!("{forge} ipv4 --src-ip 198.18.0.5 --dst-ip {EXTERNAL_ADDR} --count 1"),
            )
        },
        drop_of("spoofed_ip"),
    );
    assert_eq!(spoofed["src"], "198.18.0.5", "{spoofed}");
    assert_eq!(spoofed["container"], "b", "{spoofed}");
    // Link-layer drops carry what the frame claimed: ARP's addresses, the forged MAC.
    let b_mac = host.dp_json(&["inspect", "b"])[0]["NetworkSettings"]["Networks"]["blue"]["MacAddress"]
        .as_str()
        .unwrap()
        .to_string();
    let arp = monitor.expect(
        "spoofed ARP",
        || quietly(&host, "b", &format!("{forge} arp --src-ip 198.18.0.7 --count 1")),
        drop_of("spoofed_arp"),
    );
    assert_eq!((&arp["family"], &arp["proto"]), (&"arp".into(), &"arp".into()), "{arp}");
    assert_eq!((&arp["src"], &arp["dst"]), (&"198.18.0.7".into(), &"198.18.0.7".into()), "{arp}");
    assert_eq!(arp["src_mac"], b_mac.as_str(), "the ARP came with b's own MAC: {arp}");
    let mac = monitor.expect(
        "spoofed MAC",
        || {
            quietly(
                &host,
                "b",
                &format!(
                    "{forge} ipv4 --src-mac 02:00:5e:00:53:99 --src-ip {} --dst-ip {EXTERNAL_ADDR} --count 1",
                    host.ip_of("b")
                ),
            )
        },
        drop_of("spoofed_mac"),
    );
    assert_eq!(mac["src_mac"], "02:00:5e:00:53:99", "{mac}");
    assert_eq!(mac["src"], host.ip_of("b").as_str(), "{mac}");
    let curl = |addr: &str, port: u16| {
        let _ = host
            .external_command("curl")
            .args(["-s", "-m", "1", "-o", "/dev/null", &format!("http://{addr}:{port}/")])
            .stdin(Stdio::null())
            .status();
    };
    let firewall = monitor.expect("firewall", || curl(UPLINK_ADDR, 8080), drop_of("firewall"));
    assert_eq!(firewall["src"], EXTERNAL_ADDR, "{firewall}");
    assert_eq!(firewall["dst_port"], 8080, "{firewall}");
    assert_eq!(firewall["proto"], "tcp", "{firewall}");
    assert_eq!(firewall["container"], "a", "the published container, by its port's address: {firewall}");
    let unpublished = monitor.expect("unpublished", || curl(&a, 81), drop_of("unpublished"));
    assert_eq!(unpublished["container"], "a", "the container it was for: {unpublished}");
    assert_eq!(unpublished["dst_port"], 81, "{unpublished}");
    assert!(
        unpublished["hook"] == "uplink_xdp" || unpublished["hook"] == "from_uplink",
        "seen on the uplink: {unpublished}"
    );

    // An unknown name is refused with the fix.
    let err = host.dp_err(&["monitor", "--container", "nosuch"]);
    assert!(err.contains("no such container: nosuch"), "{err}");
}

#[test]
fn a_new_masqueraded_flow_shows_its_translation_and_filters_pass_only_what_they_name() {
    let host = Host::start_with_external();
    host.dp_ok(&["network", "create", "--subnet", "10.95.0.0/24", "red"]);
    host.dp_ok(&["network", "create", "--subnet", "10.96.0.0/24", "blue"]);
    host.run_sleeper("a", &["--network", "red"]);
    host.run_sleeper("b", &["--network", "blue"]);
    let (a, b) = (host.ip_of("a"), host.ip_of("b"));
    let mut all = Monitor::start(&host, &["--json"]);
    let mut filtered = [
        (vec!["--type", "flow"], "type", "flow"),
        (vec!["--type", "drop"], "type", "drop"),
        (vec!["--container", "b"], "container", "b"),
        (vec!["--network", "red"], "network", "red"),
        (vec!["--proto", "udp"], "proto", "udp"),
        (vec!["--port", "9"], "dst_port", "9"),
    ]
    .map(|(args, field, value)| {
        let mut args = args.clone();
        args.push("--json");
        (Monitor::start(&host, &args), field, value)
    });

    // A flow out from a (ICMP, then UDP to port 9), drops from a to b (ICMP, UDP to port
    // 9) and from b to a (UDP to port 7).
    let provoke = || {
        quietly(&host, "a", &format!("ping -c 1 -W 1 {EXTERNAL_ADDR}; ping -c 1 -W 1 {b}"));
        quietly(&host, "a", &udp_to(EXTERNAL_ADDR, 9));
        quietly(&host, "a", &udp_to(&b, 9));
        quietly(&host, "b", &udp_to(&a, 7));
    };
    let flow = all.expect("a masqueraded flow", provoke, |e| e["type"] == "flow" && e["proto"] == "icmp");
    assert_eq!(flow["translation"], "masquerade", "{flow}");
    assert_eq!(flow["container"], "a", "{flow}");
    assert_eq!(flow["src"], a.as_str(), "as the container sent it: {flow}");
    assert_eq!(flow["dst"], EXTERNAL_ADDR, "{flow}");
    assert_eq!(flow["translated"]["src"], UPLINK_ADDR, "the source became the uplink's: {flow}");
    assert_eq!(flow["translated"]["dst"], EXTERNAL_ADDR, "the destination stays: {flow}");
    assert_eq!(flow["path"], "masqueraded");
    // Everything provoked was seen by the unfiltered monitor...
    all.expect("a UDP drop to port 7", || {}, |e| e["type"] == "drop" && e["dst_port"] == 7);
    all.expect("a UDP flow to port 9", || {}, |e| e["type"] == "flow" && e["dst_port"] == 9);

    // ...and each filtered one saw its part of it, and nothing else.
    for (monitor, field, value) in &mut filtered {
        monitor.gather(Duration::from_millis(500));
        let events = monitor.events();
        assert!(!events.is_empty(), "{field}={value}: nothing passed");
        for event in events {
            let shown = match &event[*field] {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            assert_eq!(shown, *value, "{field}={value} let through {event}");
        }
    }
}

/// A new IPv6 flow out (NAT66) shows as IPv4's does: the container's address as it
/// sent it, the uplink's IPv6 address as the translated source.
#[test]
fn a_new_nat66_flow_shows_its_translation() {
    let host = Host::start_with_ipv6_uplink();
    host.create_dual_stack_network("six", "10.98.0.0/24", "fd00:98::/64");
    host.run_sleeper("a", &["--network", "six"]);
    let a6 = host.dp_json(&["inspect", "a"])[0]["NetworkSettings"]["Networks"]["six"]["GlobalIPv6Address"]
        .as_str()
        .unwrap()
        .to_string();
    let mut flows = Monitor::start(&host, &["--json", "--type", "flow"]);
    let flow = flows.expect(
        "a NAT66 flow",
        || quietly(&host, "a", &format!("ping -6 -c 1 -W 1 {EXTERNAL_ADDR6}")),
        |e| e["proto"] == "icmpv6",
    );
    assert_eq!(flow["type"], "flow", "{flow}");
    assert_eq!(flow["translation"], "masquerade", "{flow}");
    assert_eq!(flow["path"], "masqueraded", "{flow}");
    assert_eq!(flow["container"], "a", "{flow}");
    assert_eq!(flow["network"], "six", "{flow}");
    assert_eq!(flow["src"], a6.as_str(), "as the container sent it: {flow}");
    assert_eq!(flow["dst"], EXTERNAL_ADDR6, "{flow}");
    assert_eq!(
        flow["translated"]["src"], UPLINK_ADDR6,
        "the source became the uplink's IPv6 address: {flow}"
    );
    assert_eq!(flow["translated"]["dst"], EXTERNAL_ADDR6, "the destination stays: {flow}");
}

#[test]
fn a_full_ring_buffer_shows_the_events_lost_and_every_packet_is_still_handled() {
    const FLOOD: u64 = 3000;
    // One page: room for a few dozen events.
    let host = Host::start_with_external_and(&[("DATAPLANE_MONITOR_RING_SIZE", "4096")]);
    host.dp_ok(&["network", "create", "--subnet", "10.97.0.0/24", "red"]);
    host.run_sleeper("a", &["--network", "red"]);
    let mut monitor = Monitor::start(&host, &[]);
    let forge = env!("CARGO_BIN_EXE_dp-forge");
    monitor.expect_text(
        "the subscription",
        || {
            quietly(
                &host,
                "a",
                &format!("{forge} ipv4 --src-ip 198.18.0.7 --dst-ip {EXTERNAL_ADDR} --count 1"),
            );
        },
        |line| line.contains("reason spoofed_ip"),
    );
    let before = host.counter("dropped_spoofed_ip");
    let out = host.exec(
        "a",
        &format!("{forge} ipv4 --src-ip 198.18.0.8 --dst-ip {EXTERNAL_ADDR} --count {FLOOD} --interval-ms 0 --secs 20"),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lost = monitor.expect_text("events lost", || {}, |line| line.contains("events lost"));
    let shown = monitor.seen.iter().filter(|l| l.contains("198.18.0.8")).count() as u64;
    let lost_count: u64 = monitor
        .seen
        .iter()
        .filter_map(|l| l.split(" lost  ").nth(1)?.split(' ').next()?.parse::<u64>().ok())
        .sum();
    assert!(lost_count > 0 && shown < FLOOD, "{lost}: {shown} shown, {lost_count} lost");
    assert_eq!(host.counter("dropped_spoofed_ip") - before, FLOOD, "a packet went unhandled");
}

#[test]
fn trace_shows_a_forwarded_flow_once_a_second_and_only_when_asked() {
    let host = Host::start();
    host.dp_ok(&["network", "create", "--subnet", "10.98.0.0/24", "red"]);
    host.run_sleeper("a", &["--network", "red"]);
    host.run_sleeper("b", &["--network", "red"]);
    let b = host.ip_of("b");
    let mut traces = Monitor::start(&host, &["--json", "--type", "trace"]);
    let mut others = Monitor::start(&host, &["--json"]);
    let forwarded = |e: &Value| e["type"] == "trace" && e["path"] == "forwarded" && e["dst"] == b.as_str();
    traces.expect("a forwarded ping", || quietly(&host, "a", &format!("ping -c 1 -W 1 {b}")), forwarded);
    // 10 echo requests of one flow within 1.8 s: at most two traces (one a second).
    let seen = traces.events().iter().filter(|e| forwarded(e)).count();
    quietly(&host, "a", &format!("ping -c 10 -i 0.2 {b}"));
    traces.gather(Duration::from_millis(500));
    let during = traces.events().iter().filter(|e| forwarded(e)).count() - seen;
    assert!((1..=2).contains(&during), "{during} traces of 10 requests:\n{}", traces.seen.join("\n"));
    others.gather(Duration::from_millis(200));
    assert!(others.events().iter().all(|e| e["type"] != "trace"), "traces without --type trace");
}

/// `dataplane monitor | head -n 1` ends quietly once `head` has its line, as `docker
/// events | head` does: the closed pipe is the reader's "enough", not an error.
#[test]
fn a_monitor_whose_reader_leaves_ends_quietly() {
    let host = Host::start();
    host.dp_ok(&["network", "create", "--subnet", "10.95.0.0/24", "left"]);
    host.dp_ok(&["network", "create", "--subnet", "10.96.0.0/24", "right"]);
    host.run_sleeper("a", &["--network", "left"]);
    host.run_sleeper("b", &["--network", "right"]);
    let b = host.ip_of("b");
    let mut pipeline = host
        .command("bash")
        .args([
            "-c",
            &format!("set -o pipefail; {} monitor | head -n 1", dataplane_tests::binary().display()),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Drops until the monitor has written past `head`'s end, each second while it runs.
    let deadline = Instant::now() + Duration::from_secs(15);
    while pipeline.try_wait().unwrap().is_none() && Instant::now() < deadline {
        quietly(&host, "a", &format!("ping -c 1 -W 1 {b}"));
    }
    if pipeline.try_wait().unwrap().is_none() {
        let _ = pipeline.kill();
    }
    let out = pipeline.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(String::from_utf8_lossy(&out.stdout).contains("isolation"), "head got no event: {out:?}");
    assert!(out.status.success() && stderr.is_empty(), "the monitor did not end quietly: {out:?}");
}

/// The daemon's MONITOR_CONFIG flags, read with bpftool from the map the daemon holds
/// open (found among its file descriptors: other daemons have maps of that name too).
fn monitor_flags(host: &Host) -> u32 {
    let pid = host.daemon_pid().expect("the daemon runs");
    let held: Vec<u64> = std::fs::read_dir(format!("/proc/{pid}/fdinfo"))
        .unwrap()
        .filter_map(|fd| std::fs::read_to_string(fd.ok()?.path()).ok())
        .filter_map(|info| info.lines().find_map(|l| l.strip_prefix("map_id:")?.trim().parse().ok()))
        .collect();
    let shown = std::process::Command::new("bpftool").args(["-j", "map", "show"]).output().unwrap();
    let maps: Value = serde_json::from_slice(&shown.stdout).expect("bpftool -j map show");
    let id = maps
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "MONITOR_CONFIG" && m["id"].as_u64().is_some_and(|id| held.contains(&id)))
        .unwrap_or_else(|| panic!("the daemon (PID {pid}) holds no MONITOR_CONFIG among maps {held:?}"))["id"]
        .to_string();
    let looked = std::process::Command::new("bpftool")
        .args(["-j", "map", "lookup", "id", &id, "key", "0", "0", "0", "0"])
        .output()
        .unwrap();
    let entry: Value = serde_json::from_slice(&looked.stdout).unwrap_or_else(|e| {
        panic!("bpftool map lookup id {id}: {e}: {}", String::from_utf8_lossy(&looked.stderr))
    });
    let bytes: Vec<u8> = entry["value"]
        .as_array()
        .unwrap_or_else(|| panic!("no value in {entry}"))
        .iter()
        .map(|b| u8::from_str_radix(b.as_str().unwrap().trim_start_matches("0x"), 16).unwrap())
        .collect();
    u32::from_ne_bytes(bytes.try_into().unwrap())
}

/// Waits up to 5 s for the flags to become `wanted`; the flags last read.
fn flags_become(host: &Host, wanted: u32) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let flags = monitor_flags(host);
        if flags == wanted || Instant::now() > deadline {
            return flags;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The programs build events only while someone listens: the first client turns the
/// flag on, the daemon keeps it while one of two clients stays, and turns it off when
/// the last leaves.
#[test]
fn the_last_client_to_leave_turns_the_events_off() {
    let host = Host::start();
    assert_eq!(monitor_flags(&host), 0, "no client, no events");
    let first = Monitor::start(&host, &[]);
    let second = Monitor::start(&host, &["--type", "trace"]);
    let both = flags_become(&host, MonitorEvent::LISTENING | MonitorEvent::TRACING);
    assert_eq!(both, MonitorEvent::LISTENING | MonitorEvent::TRACING, "two clients, one tracing");
    drop(second);
    assert_eq!(
        flags_become(&host, MonitorEvent::LISTENING),
        MonitorEvent::LISTENING,
        "the tracing client left"
    );
    drop(first);
    assert_eq!(flags_become(&host, 0), 0, "the last client left: the events are off");
}
