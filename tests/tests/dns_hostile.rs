//! The embedded resolver under hostile input from a container (see dp-dns-hostile): a flood
//! of malformed UDP queries and TCP streams, clients that send a byte a second or never
//! read, and one that holds a thousand connections. The daemon must not crash, hang or
//! spin, must hang up on clients that stall, must give no client more than its share of
//! connections, and must answer legitimate queries (dig, from another container) all along.

use std::{
    io::{BufRead, BufReader},
    process::{Child, Stdio},
    thread::sleep,
    time::{Duration, Instant},
};

use dataplane_tests::{Host, KillOnDrop, binary};
use serde_json::Value;

const GATEWAY: &str = "10.66.0.1";

/// The host with the test zone's upstream, a network, a container whose name the others
/// resolve (`web`), a legitimate client and an attacker.
fn resolver_under_test() -> (Host, KillOnDrop) {
    let host = Host::start_with_external();
    let upstream = host.external_server(env!("CARGO_BIN_EXE_dp-dns-upstream"), &[], "upstream.log");
    host.dp_ok(&["network", "create", "--subnet", "10.66.0.0/24", "red"]);
    for name in ["web", "client", "attacker"] {
        host.run_sleeper(name, &["--network", "red"]);
    }
    (host, upstream)
}

/// dp-dns-hostile in the attacker container, its output piped.
fn attack(host: &Host, mode: &[&str]) -> KillOnDrop {
    let tool = env!("CARGO_BIN_EXE_dp-dns-hostile");
    let server = format!("{GATEWAY}:53");
    let child = host
        .command(binary())
        .args(["exec", "attacker", "--", tool, "--server", &server])
        .args(mode)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting dp-dns-hostile");
    KillOnDrop(child)
}

/// The tool's JSON lines, as it prints them (the last one is its result).
fn lines_of(child: &mut Child) -> impl Iterator<Item = Value> + '_ {
    let stdout = BufReader::new(child.stdout.as_mut().expect("piped"));
    stdout.lines().map(|line| serde_json::from_str(&line.expect("tool output")).expect("a JSON line"))
}

fn finish(mut attack: KillOnDrop) -> Value {
    let result = lines_of(&mut attack.0).last().expect("the tool printed its result");
    assert!(attack.0.wait().unwrap().success(), "dp-dns-hostile failed: {result}");
    result
}

/// What a legitimate client should get, or what it got instead: a container's name and a
/// forwarded name over UDP, and a container's name over TCP.
fn legitimate_queries_fail(host: &Host, web: &str) -> Option<String> {
    for (args, want) in [("web", web), ("example.test", "198.51.100.10"), ("+tcp web", web)] {
        let out = host.exec("client", &format!("dig +short +time=2 +tries=1 {args}"));
        let got = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if got != want {
            return Some(format!("dig {args}: {got:?}, {}", String::from_utf8_lossy(&out.stderr)));
        }
    }
    None
}

/// The daemon's CPU time so far (user + system), in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("the daemon is alive");
    // Fields after the command name (which may hold spaces): state is the first, utime
    // and stime the 12th and 13th.
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count()
}

fn assert_alive(host: &Host) {
    let pid = host.daemon_pid().expect("daemon started");
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next());
    assert!(matches!(state, Some("S" | "R" | "D")), "the daemon died ({state:?}): {}", host.daemon_log());
}

#[test]
fn malformed_queries_and_streams_neither_crash_nor_hang_nor_spin_the_resolver() {
    let (host, _upstream) = resolver_under_test();
    let web = host.ip_of("web");
    assert_eq!(legitimate_queries_fail(&host, &web), None, "before the attack");

    let flood = attack(&host, &["flood", "--seed", "18", "--udp", "100000", "--tcp", "3000", "--secs", "90"]);
    let slow = attack(
        &host,
        &["slow", "--trickle", "3", "--stalled", "2", "--stalled-name", "web.", "--secs", "20"],
    );
    // Legitimate queries, interleaved with the attack until it is over.
    let mut flood = Some(flood);
    let (mut rounds, started) = (0, Instant::now());
    while flood.as_mut().is_some_and(|f| f.0.try_wait().unwrap().is_none()) {
        assert!(started.elapsed() < Duration::from_secs(120), "the flood did not end");
        if let Some(failure) = legitimate_queries_fail(&host, &web) {
            panic!("during the attack (round {rounds}): {failure}\n{}", host.daemon_log());
        }
        rounds += 1;
        sleep(Duration::from_millis(200));
    }
    let flooded = finish(flood.take().unwrap());
    eprintln!("flood: {flooded}, {rounds} rounds of legitimate queries meanwhile");
    assert_eq!(flooded["udp_sent"], 100_000, "{flooded}");
    assert_eq!(flooded["tcp_streams"], 3000, "{flooded}");
    assert!(flooded["udp_answers"].as_u64().unwrap() > 10_000, "the resolver answered nothing: {flooded}");
    assert!(rounds >= 5, "too few legitimate queries interleaved: {rounds}");
    assert_alive(&host);

    // Read timeouts: a client trickling a byte a second, and one that never reads its
    // answers, are hung up on within the 10 s the resolver gives a silent client.
    let slowed = finish(slow);
    eprintln!("slow clients: {slowed}");
    for after in slowed["trickle_hung_up_after"].as_array().unwrap() {
        let after =
            after.as_f64().unwrap_or_else(|| panic!("a trickling client was never hung up on: {slowed}"));
        assert!(after < 13.0, "a trickling client was kept {after} s: {slowed}");
    }
    for hung_up in slowed["stalled_hung_up"].as_array().unwrap() {
        assert!(!hung_up.is_null(), "a client that never reads was kept open: {slowed}");
    }

    // No spin: once the attack is over, the daemon idles.
    let pid = host.daemon_pid().unwrap();
    sleep(Duration::from_secs(1));
    let before = cpu_ticks(pid);
    sleep(Duration::from_secs(4));
    let busy = cpu_ticks(pid) - before;
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    assert!(busy * 10 < 4 * per_second, "the idle daemon used {busy} ticks of CPU in 4 s (a spin)");
    assert_eq!(legitimate_queries_fail(&host, &web), None, "after the attack");
    assert_alive(&host);
}

#[test]
fn a_client_holding_a_thousand_connections_gets_only_its_share() {
    let (host, _upstream) = resolver_under_test();
    let web = host.ip_of("web");
    let pid = host.daemon_pid().unwrap();
    let fds_before = open_fds(pid);

    let mut hold = attack(&host, &["hold", "--connections", "1000", "--secs", "8"]);
    let holding = lines_of(&mut hold.0).next().expect("the tool reports what it holds");
    assert!(holding["holding"].as_u64().unwrap() >= 900, "the connections were not made: {holding}");
    // While they are held: the daemon's descriptors stay bounded, and others are served.
    let fds_during = open_fds(pid);
    assert!(
        fds_during < fds_before + 100,
        "one client's connections took {} of the daemon's descriptors",
        fds_during - fds_before
    );
    assert_eq!(legitimate_queries_fail(&host, &web), None, "while one client holds its connections");
    host.dp_ok(&["ps"]);
    let held = finish(hold);
    eprintln!("hold: {held}");
    assert!(held["closed_by_server"].as_u64().unwrap() >= 900, "{held}");
    assert_alive(&host);
}
