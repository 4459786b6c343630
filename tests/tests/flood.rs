//! Conntrack under a flood: new flows, however many, never push an established
//! connection out of its table. A SYN flood from spoofed sources (the benchmarking range
//! 198.18.0.0/15, inside the test's namespaces) hits a published port while a long-lived
//! connection to that port exchanges a line every 100 ms (no reset, no gap over a
//! second); a container opens flow after new flow to the outside while another one's
//! connection out sits idle (no reset when it speaks again). The flood's flows must be
//! counted as they are dropped.

use std::{io::Read, process::Stdio, thread::sleep, time::Duration};

use dataplane_tests::{EXTERNAL_ADDR, Host, KillOnDrop, UPLINK_ADDR, binary, eventually};
use serde_json::Value;

const TABLE: u64 = 4096;
const FLOOD: u64 = 60_000;

/// The single JSON line a tool printed.
fn json_of(out: std::process::Output, what: &str) -> Value {
    assert!(out.status.success(), "{what} failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{what} printed no JSON ({e})"))
}

/// The MAC of an interface of the host namespace.
fn host_mac(host: &Host, interface: &str) -> String {
    let link = host.sh_ok(&format!("ip -j link show {interface}"));
    let link: Value = serde_json::from_str(&link).unwrap();
    link[0]["address"].as_str().unwrap().to_string()
}

#[test]
fn a_syn_flood_on_a_published_port_does_not_evict_its_established_connection() {
    let host = Host::start_with_external_and(&[("DATAPLANE_CONNTRACK_MAX", &TABLE.to_string())]);
    let loadgen = env!("CARGO_BIN_EXE_dp-loadgen");
    host.dp_ok(&[
        "run",
        "-d",
        "--name",
        "echo",
        "-p",
        "8080:80",
        "--",
        loadgen,
        "tcp-echo-server",
        "--bind",
        "0.0.0.0:80",
        "--secs",
        "60",
    ]);
    let published = format!("{UPLINK_ADDR}:8080");
    let answers = || {
        host.external_command(loadgen)
            .args(["tcp-echo-client", "--dst", &published, "--secs", "0.1"])
            .stderr(Stdio::null())
            .output()
            .is_ok_and(|out| out.status.success())
    };
    assert!(eventually(Duration::from_secs(10), answers), "the echo server never answered");

    // The established connection: a line every 100 ms for 8 s, the flood in its middle.
    let client = host
        .external_command(loadgen)
        .args(["tcp-echo-client", "--dst", &published, "--secs", "8", "--interval-ms", "100"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let client = KillOnDrop(client);
    sleep(Duration::from_secs(1));
    let published_before = host.counter("published");
    let flood = host
        .external_command(env!("CARGO_BIN_EXE_dp-forge"))
        .args(["tcp-syn", "--interface", "eth0", "--dst-ip", UPLINK_ADDR, "--dst-port", "8080"])
        .args(["--dst-mac", &host_mac(&host, "up0"), "--src-ip", "198.18.0.0"])
        .args(["--sources", &FLOOD.to_string(), "--count", &FLOOD.to_string()])
        .args(["--interval-ms", "0", "--secs", "5"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let flood = json_of(flood, "the flood");
    // Listed while the connection still runs.
    let flows = host.dp_ok(&["conntrack", "ls"]);
    let exchange = json_of(wait_for(client), "the echo client");
    assert_eq!(exchange["error"], Value::Null, "the established connection broke: {exchange}, flood {flood}");
    let max_gap = exchange["max_gap_ms"].as_f64().unwrap();
    assert!(max_gap < 1000.0, "the established connection stalled for {max_gap} ms: {exchange}");
    let tracked =
        |l: &&str| l.starts_with("published") && l.contains(EXTERNAL_ADDR) && l.contains("established");
    assert_eq!(
        flows.lines().filter(tracked).count(),
        1,
        "the connection is not tracked as established:\n{flows}"
    );

    // The programs saw the flood, and its flows went as they came: counted, never by
    // pushing out a confirmed connection.
    let seen = host.counter("published") - published_before;
    assert!(seen >= 10_000, "only {seen} packets of the {FLOOD} SYNs reached the published port: {flood}");
    assert_eq!(host.counter("conntrack_published_evictions"), 0, "a confirmed connection was evicted");
    let dropped = host.counter("conntrack_published_unconfirmed_evictions");
    let exchanged = exchange["exchanges"].as_u64().unwrap();
    assert!(
        dropped + TABLE + 2 * exchanged >= seen,
        "{seen} flood packets seen, {dropped} unconfirmed flows counted as evicted"
    );
}

#[test]
fn new_flows_out_of_one_container_do_not_evict_another_ones_idle_connection() {
    let host = Host::start_with_external_and(&[("DATAPLANE_CONNTRACK_MAX", &TABLE.to_string())]);
    let loadgen = env!("CARGO_BIN_EXE_dp-loadgen");
    let echo = format!("{EXTERNAL_ADDR}:7000");
    let _server =
        host.external_server(loadgen, &["tcp-echo-server", "--bind", &echo, "--secs", "60"], "echo.log");
    host.run_sleeper("client", &[]);
    host.run_sleeper("flooder", &[]);
    // A connection out that exchanges a line every 2 s, so that its entries sit idle
    // through the flood (an active one's entries stay recently used).
    let client = host
        .command(binary())
        .args(["exec", "client", "--", loadgen, "tcp-echo-client", "--dst", &echo, "--secs", "7"])
        .args(["--interval-ms", "2000"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let client = KillOnDrop(client);
    sleep(Duration::from_millis(500));
    // Three tables' worth of new flows nobody answers, to 16 ports. (Connections refused
    // with a reset no longer fill the table: a flow that ended gives its port, and its
    // tuple, to the next new flow that wants them.)
    let flood = format!(
        "timeout 20 {loadgen} udp-flows --dst {EXTERNAL_ADDR} --count {} --dst-ports 16 --first-dst-port 7100",
        3 * TABLE
    );
    let flood = json_of(host.exec("flooder", &flood), "the flood");
    let flows = host.dp_ok(&["conntrack", "ls"]);
    let exchange = json_of(wait_for(client), "the echo client");
    assert_eq!(exchange["error"], Value::Null, "the idle connection broke: {exchange}, flood {flood}");
    assert_eq!(exchange["exchanges"], 4, "{exchange}");
    let tracked = |l: &&str| l.starts_with("masquerade") && l.contains(&echo) && l.contains("established");
    assert_eq!(
        flows.lines().filter(tracked).count(),
        1,
        "the connection is not tracked as established:\n{flows}"
    );
    assert_eq!(host.counter("conntrack_masquerade_evictions"), 0, "a confirmed connection was evicted");
    // The flood's flows overflowed their table, and those it pushed out are counted.
    let dropped = host.counter("conntrack_masquerade_unconfirmed_evictions");
    let live = host.counter("conntrack_masquerade_unconfirmed_entries");
    assert!(live <= TABLE && dropped > 0, "{live} unconfirmed flows live, {dropped} evicted: flood {flood}");
}

/// The output of a tool started with piped stdout and stderr.
fn wait_for(mut child: KillOnDrop) -> std::process::Output {
    let mut stdout = vec![];
    let mut stderr = vec![];
    child.0.stdout.take().unwrap().read_to_end(&mut stdout).unwrap();
    child.0.stderr.take().unwrap().read_to_end(&mut stderr).unwrap();
    let status = child.0.wait().unwrap();
    std::process::Output { status, stdout, stderr }
}
