//! The Prometheus endpoint (`daemon --metrics-addr`), scraped as Prometheus scrapes it:
//! the exposition parses, and its figures move with what the test does — traffic between
//! containers and out, control requests, names asked of the embedded resolver.

use std::collections::HashMap;

use dataplane_tests::{EXTERNAL_ADDR, EXTERNAL_ADDR6, Host, KillOnDrop, UPLINK_ADDR, eventually};
use prometheus_parse::{LineInfo, Scrape, Value};

const METRICS_ADDR: &str = "127.0.0.1:9464";

/// One scrape: every line checked to be a sample or a comment, then parsed.
fn scrape(host: &Host) -> Scrape {
    let out = host.sh_ok(&format!("curl -sf -m 10 http://{METRICS_ADDR}/metrics"));
    for line in out.lines() {
        let known = matches!(
            LineInfo::parse(line),
            LineInfo::Sample { .. } | LineInfo::Doc { .. } | LineInfo::Type { .. }
        ) || line.starts_with("# UNIT ")
            || line == "# EOF";
        assert!(known, "not Prometheus exposition: `{line}` in\n{out}");
    }
    assert!(out.ends_with("# EOF\n"), "an OpenMetrics exposition ends with # EOF:\n{out}");
    Scrape::parse(out.lines().map(|line| Ok(line.to_string()))).expect("the exposition parses")
}

/// The value of the sample `metric` whose labels include `labels`; 0 when there is none
/// (a family shows only the label sets it has seen, as the DNS answers).
fn value(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<f64> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match &s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            other => panic!("{metric}: unexpected {other:?}"),
        })
        .collect();
    assert!(found.len() <= 1, "{metric} {labels:?}: several samples {found:?}");
    found.first().copied().unwrap_or(0.0)
}

fn labelled(scrape: &Scrape, metric: &str, label: &str) -> HashMap<String, f64> {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric)
        .filter_map(|s| {
            Some((s.labels.get(label)?.to_string(), value(scrape, metric, &[(label, s.labels.get(label)?)])))
        })
        .collect()
}

#[test]
fn the_metrics_parse_and_move_with_traffic_requests_and_names() {
    let host = Host::start_with_external_and(&[("DATAPLANE_METRICS_ADDR", METRICS_ADDR)]);
    let _upstream: KillOnDrop =
        host.external_server(env!("CARGO_BIN_EXE_dp-dns-upstream"), &[], "upstream.log");
    host.dp_ok(&["network", "create", "--subnet", "10.71.0.0/24", "metered"]);
    host.run_sleeper("a", &["--network", "metered", "-p", "8080:80"]);
    host.run_sleeper("b", &["--network", "metered"]);
    let b = host.ip_of("b");

    let before = scrape(&host);
    let drops = labelled(&before, "dataplane_datapath_drops_total", "reason");
    for reason in ["isolation", "icc", "spoofed_ip", "firewall", "unpublished", "malformed"] {
        assert!(drops.contains_key(reason), "no drop reason {reason} in {drops:?}");
    }
    assert_eq!(value(&before, "dataplane_containers", &[("state", "running")]), 2.0);
    assert_eq!(value(&before, "dataplane_endpoints", &[("owner", "dataplane")]), 2.0);
    assert_eq!(value(&before, "dataplane_networks", &[]), 2.0, "the default network and ours");
    assert_eq!(value(&before, "dataplane_published_ports", &[]), 1.0);
    assert!(value(&before, "dataplane_conntrack_limit", &[]) > 0.0);
    // The histogram's buckets fold into one sample; its count stays a sample of its own.
    assert_eq!(
        value(&before, "dataplane_control_request_duration_seconds_count", &[("request", "run")]),
        2.0
    );

    let out = host.exec("a", &format!("ping -c 10 -i 0.05 {b} && ping -c 2 -i 0.2 {EXTERNAL_ADDR}"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let out = host.exec("a", "dig +short +time=2 +tries=1 b; dig +time=2 +tries=1 nosuchname.example");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let after = scrape(&host);
    let forwarded = |s: &Scrape| value(s, "dataplane_datapath_packets_total", &[("path", "forwarded")]);
    assert!(forwarded(&after) - forwarded(&before) >= 20.0, "10 pings there and back between a and b");
    let masqueraded = |s: &Scrape| value(s, "dataplane_datapath_packets_total", &[("path", "masqueraded")]);
    assert!(masqueraded(&after) - masqueraded(&before) >= 2.0, "2 pings out");
    assert!(
        value(&after, "dataplane_datapath_bytes_total", &[("path", "forwarded")])
            > value(&before, "dataplane_datapath_bytes_total", &[("path", "forwarded")])
    );
    assert!(
        value(&after, "dataplane_conntrack_entries", &[("table", "masquerade"), ("state", "confirmed")])
            >= 1.0,
        "the answered pings out left a confirmed masquerade flow"
    );
    let answers = |s: &Scrape, source: &str, rcode: &str| {
        value(s, "dataplane_dns_answers_total", &[("source", source), ("rcode", rcode)])
    };
    assert!(
        answers(&after, "names", "NOERROR") > answers(&before, "names", "NOERROR"),
        "b is a container's name"
    );
    let upstream = |s: &Scrape| answers(s, "upstream", "NXDOMAIN") + answers(s, "upstream", "NOERROR");
    assert!(upstream(&after) > upstream(&before), "nosuchname.example went upstream");
    assert_eq!(
        value(&after, "dataplane_control_request_duration_seconds_count", &[("request", "network_create")]),
        1.0
    );
}

/// `stats --watch` redraws every interval with each path's rates since the last reading:
/// while a container pings its neighbour 100 times a second, the forward path's packet
/// rate shows them (request and reply: about 200 a second).
#[test]
fn stats_watch_shows_the_rates_of_the_traffic_going_on() {
    let host = Host::start_with_external();
    host.dp_ok(&["network", "create", "--subnet", "10.72.0.0/24", "watched"]);
    host.run_sleeper("a", &["--network", "watched"]);
    host.run_sleeper("b", &["--network", "watched"]);
    let b = host.ip_of("b");
    let mut pinging = host
        .command(dataplane_tests::binary())
        .args(["exec", "a", "ping", "-q", "-c", "400", "-i", "0.01", &b])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let watched = host
        .command("timeout")
        .args(["2.6", &dataplane_tests::binary().to_string_lossy(), "stats", "--watch", "--interval", "1"])
        .output()
        .unwrap();
    pinging.wait().unwrap();
    let out = String::from_utf8_lossy(&watched.stdout);
    assert_eq!(watched.status.code(), Some(124), "it runs until stopped:\n{out}");
    // The first drawing has no rates yet; the later ones do.
    let headers = out.lines().filter(|l| l.starts_with("PATH")).collect::<Vec<_>>();
    assert!(
        headers.len() >= 2 && !headers[0].contains("PACKETS/S") && headers[1].contains("PACKETS/S"),
        "{out}"
    );
    let rate = out
        .lines()
        .filter(|l| l.starts_with("forwarded ") && l.split_whitespace().count() == 5)
        .map(|l| l.split_whitespace().nth(3).unwrap().parse::<f64>().unwrap())
        .next_back()
        .unwrap_or_else(|| panic!("no rate of the forward path in:\n{out}"));
    assert!(
        (100.0..=400.0).contains(&rate),
        "ping 100/s there and back, about 200 packets/s; saw {rate}:\n{out}"
    );
}

/// One row of `stats --container`/`--network`: sent packets and bytes, received packets
/// and bytes, of the row whose first column is `first` (a container, or `(total)`).
fn endpoint_row(table: &str, first: &str) -> [u64; 4] {
    let row = table
        .lines()
        .find(|l| l.split_whitespace().next() == Some(first))
        .unwrap_or_else(|| panic!("no row {first} in:\n{table}"));
    let numbers: Vec<u64> = row.split_whitespace().filter_map(|w| w.parse().ok()).collect();
    numbers.try_into().unwrap_or_else(|n| panic!("row {first}: 4 figures expected, got {n:?} in:\n{table}"))
}

fn grown(after: [u64; 4], before: [u64; 4]) -> [u64; 4] {
    [0, 1, 2, 3].map(|i| after[i] - before[i])
}

/// A ping's Ethernet frame: 14 + 20 (IPv4) + 8 (ICMP) + 56 bytes of data.
const PING_FRAME: u64 = 98;
/// An ARP request or reply's frame (42 bytes: 14 + 28).
const ARP_FRAME: u64 = 42;

/// Per-endpoint counters count what a test sends, in `stats --container`, `--network`
/// and the metrics alike: 1000 pings from a to b are 1000 frames b received and sent and
/// a sent and received, 98 bytes each (each side's sent may add an ARP frame the
/// neighbour tables exchanged meanwhile, 42 bytes, which the figures account for). A
/// container that gets a removed one's slot starts from zero.
#[test]
fn per_container_counters_count_exactly_what_was_sent() {
    const PINGS: u64 = 1000;
    let host = Host::start_with_external_and(&[("DATAPLANE_METRICS_ADDR", METRICS_ADDR)]);
    host.dp_ok(&["network", "create", "--subnet", "10.73.0.0/24", "counted"]);
    host.run_sleeper("a", &["--network", "counted"]);
    host.run_sleeper("b", &["--network", "counted"]);
    let b = host.ip_of("b");
    // The neighbours resolved first: their ARP frames are not in what is measured.
    let out = host.exec("a", &format!("ping -c 1 -W 2 {b}"));
    assert!(out.status.success(), "a reaches b: {}", String::from_utf8_lossy(&out.stdout));

    let container = |name: &str| endpoint_row(&host.dp_ok(&["stats", "--container", name]), name);
    let network = || {
        let table = host.dp_ok(&["stats", "--network", "counted"]);
        ["a", "b", "(total)"].map(|first| endpoint_row(&table, first))
    };
    let metric = |s: &Scrape, name: &str, labels: &[(&str, &str)]| value(s, name, labels) as u64;
    let (a_before, b_before, network_before, scraped_before) =
        (container("a"), container("b"), network(), scrape(&host));

    let out = host.exec("a", &format!("ping -q -c {PINGS} -i 0.002 -W 2 {b}"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));

    let (a, b_grown) = (grown(container("a"), a_before), grown(container("b"), b_before));
    for (name, [sent, sent_bytes, received, received_bytes]) in [("a", a), ("b", b_grown)] {
        assert_eq!(received, PINGS, "{name} received the pings (or their replies), nothing else by eBPF");
        assert_eq!(received_bytes, PINGS * PING_FRAME, "{name}'s received bytes");
        let arp = sent - PINGS;
        assert!(arp <= 2, "{name} sent {sent} frames for {PINGS} pings");
        assert_eq!(sent_bytes, PINGS * PING_FRAME + arp * ARP_FRAME, "{name}'s sent bytes, {arp} ARP frames");
    }
    let network_now = network();
    for (i, row) in ["a", "b", "(total)"].iter().enumerate() {
        let grew = grown(network_now[i], network_before[i]);
        let expected = match i {
            0 => a,
            1 => b_grown,
            _ => [0, 1, 2, 3].map(|k| a[k] + b_grown[k]),
        };
        assert_eq!(grew, expected, "stats --network counted, row {row}");
    }
    assert_eq!(
        network_now[2],
        [0, 1, 2, 3].map(|k| network_now[0][k] + network_now[1][k]),
        "the total is the sum"
    );

    let scraped = scrape(&host);
    for (name, figures) in [("a", a), ("b", b_grown)] {
        for (direction, packets, bytes) in
            [("sent", figures[0], figures[1]), ("received", figures[2], figures[3])]
        {
            let labels = [("network", "counted"), ("container", name), ("direction", direction)];
            let grew = |metric_name: &str| {
                metric(&scraped, metric_name, &labels) - metric(&scraped_before, metric_name, &labels)
            };
            assert_eq!(grew("dataplane_container_packets_total"), packets, "{name} {direction} packets");
            assert_eq!(grew("dataplane_container_bytes_total"), bytes, "{name} {direction} bytes");
        }
    }
    for direction in ["sent", "received"] {
        let labels = [("network", "counted"), ("direction", direction)];
        let grew = metric(&scraped, "dataplane_network_packets_total", &labels)
            - metric(&scraped_before, "dataplane_network_packets_total", &labels);
        let by_containers = if direction == "sent" { a[0] + b_grown[0] } else { a[2] + b_grown[2] };
        assert_eq!(grew, by_containers, "the network's {direction} packets are its containers'");
    }

    // b's slot goes to c, which starts from zero.
    host.dp_ok(&["rm", "-f", "b"]);
    host.run_sleeper("c", &["--network", "counted"]);
    let [sent, _, received, _] = container("c");
    assert!(
        sent < 10 && received == 0,
        "c counts from zero, not on from b's {PINGS} pings: sent {sent}, received {received}"
    );
}

/// An IPv6 ping's Ethernet frame: 14 + 40 (IPv6) + 8 (ICMPv6) + 56 bytes of data.
const PING6_FRAME: u64 = 118;

/// "Received" counts what the programs deliver into a container from beyond its network:
/// the replies to its masqueraded flows, IPv4 and IPv6, one frame per ping, and the
/// datagrams sent from outside to its published port.
#[test]
fn received_counts_masquerade_replies_and_published_deliveries() {
    const PINGS: u64 = 200;
    const DATAGRAMS: u64 = 300;
    let host = Host::start_with_ipv6_uplink();
    host.create_dual_stack_network("counted", "10.74.0.0/24", "fd00:74::/64");
    host.run_sleeper("a", &["--network", "counted", "-p", "8080:80/udp"]);
    let container = || endpoint_row(&host.dp_ok(&["stats", "--container", "a"]), "a");
    // The neighbours resolved first.
    for ping in [format!("ping -c 1 -W 2 {EXTERNAL_ADDR}"), format!("ping -6 -c 1 -W 2 {EXTERNAL_ADDR6}")] {
        let out = host.exec("a", &ping);
        assert!(out.status.success(), "{ping}: {}", String::from_utf8_lossy(&out.stdout));
    }

    for (ping, frame) in [("ping", PING_FRAME), ("ping -6", PING6_FRAME)] {
        let to = if ping == "ping" { EXTERNAL_ADDR } else { EXTERNAL_ADDR6 };
        let before = container();
        let out = host.exec("a", &format!("{ping} -q -c {PINGS} -i 0.005 -W 2 {to}"));
        assert!(out.status.success(), "{ping}: {}", String::from_utf8_lossy(&out.stdout));
        let [_, _, received, received_bytes] = grown(container(), before);
        assert_eq!(received, PINGS, "`{ping}`: each reply came back through the reverse NAT into a");
        assert_eq!(received_bytes, PINGS * frame, "`{ping}`: the replies' bytes");
    }

    // From outside, one socket's datagrams to the published port (nothing listens in a:
    // its port unreachable errors are what it sends, not what it receives).
    let before = container();
    let send = format!(
        "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         for _ in range({DATAGRAMS}): s.sendto(b'x', ('{UPLINK_ADDR}', 8080))"
    );
    host.external_sh_ok(&format!("python3 -c \"{send}\""));
    let mut received = 0;
    let counted = eventually(std::time::Duration::from_secs(5), || {
        received = grown(container(), before)[2];
        received == DATAGRAMS
    });
    assert!(counted, "a received {received} of the {DATAGRAMS} datagrams sent to its published port");
}

/// An endpoint's counter slot outlives a daemon restart: after it, `stats` shows what was
/// counted before, counting goes on in the same slot, and a container made afterwards
/// gets a slot of its own, counted from zero.
#[test]
fn an_endpoints_counters_go_on_across_a_daemon_restart() {
    const PINGS: u64 = 200;
    let mut host = Host::start();
    host.dp_ok(&["network", "create", "--subnet", "10.75.0.0/24", "kept"]);
    host.run_sleeper("a", &["--network", "kept"]);
    host.run_sleeper("b", &["--network", "kept"]);
    let b = host.ip_of("b");
    let container =
        |host: &Host, name: &str| endpoint_row(&host.dp_ok(&["stats", "--container", name]), name);
    let pings = |host: &Host| {
        let out = host.exec("a", &format!("ping -q -c {PINGS} -i 0.005 -W 2 {b}"));
        assert!(out.status.success(), "a reaches b: {}", String::from_utf8_lossy(&out.stdout));
    };
    pings(&host);
    let before_restart = container(&host, "a");
    assert!(before_restart[2] >= PINGS, "a received the replies before the restart: {before_restart:?}");

    host.stop_daemon();
    host.start_daemon();
    // (What a sends on its own meanwhile, router solicitations, may add to its sent.)
    let after_restart = container(&host, "a");
    assert_eq!(
        after_restart[2..],
        before_restart[2..],
        "stats after the restart show what a received before it"
    );
    assert!(
        after_restart[0] >= before_restart[0],
        "and what it sent: {after_restart:?} < {before_restart:?}"
    );
    pings(&host);
    let [sent, _, received, received_bytes] = grown(container(&host, "a"), after_restart);
    assert_eq!(received, PINGS, "a's replies after the restart, counted on in its slot");
    assert_eq!(received_bytes, PINGS * PING_FRAME, "their bytes");
    assert!(sent >= PINGS, "a sent {sent} frames for {PINGS} pings");

    // A container made after the restart takes a free slot, not a's or b's (a taken slot
    // would start again from zero).
    let (a_now, b_now) = (container(&host, "a"), container(&host, "b"));
    host.run_sleeper("c", &["--network", "kept"]);
    let [sent, _, received, _] = container(&host, "c");
    assert!(sent < 10 && received == 0, "c counts from zero: sent {sent}, received {received}");
    for (name, then) in [("a", a_now), ("b", b_now)] {
        let now = container(&host, name);
        assert!(now[2] >= then[2] && now[2] >= PINGS, "{name}'s slot was given to c: {now:?}, was {then:?}");
    }
}
