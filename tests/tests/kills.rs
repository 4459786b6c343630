//! The daemon dies under load: it is killed with SIGKILL and restarted again and again
//! while streams run through every path it programs, and no connection notices. The
//! datapath lives in the kernel (programs attached, maps pinned), so the daemon's death
//! must not interrupt it, and its restart must take over what it finds without resetting
//! a flow.

use std::{
    process::{Child, Command, Stdio},
    thread::sleep,
    time::Duration,
};

use dataplane_tests::{EXTERNAL_ADDR, Host, UPLINK_ADDR, eventually};
use serde_json::Value;

/// How long each stream runs; the kills fall in its middle.
const STREAM_SECS: u64 = 12;
const KILLS: usize = 5;
/// The resolution of the gap measurement: the receiving iperf3's report interval.
const INTERVAL_SECS: f64 = 0.1;

/// An iperf3 client (`command` runs iperf3 where the client belongs) whose receiver (started with `-J -i 0.1`) reports what arrived in
/// every tenth of a second. Paced, so that the two cores also have room for the daemon.
fn iperf3_client(mut command: Command, server: &str, port: u16) -> Child {
    command
        .args(["-c", server, "-p", &port.to_string(), "-t", &STREAM_SECS.to_string()])
        .args(["-b", "200M", "-J", "--get-server-output"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command.spawn().unwrap()
}

/// `program` in the network namespace at `netns` (a container's, straight: a client must
/// not depend on the daemon that the test kills).
fn in_namespace(netns: &str, program: &str) -> Command {
    let mut command = Command::new("nsenter");
    command.arg(format!("--net={netns}")).args(["--", program]);
    command
}

/// The longest time in which the receiver got (next to) nothing: the longest run of its
/// report intervals that each carried under a tenth of the stream's median interval.
fn longest_gap_secs(report: &Value) -> f64 {
    let intervals = report["server_output_json"]["intervals"].as_array().expect("the receiver's intervals");
    let bytes: Vec<u64> = intervals.iter().map(|i| i["sum"]["bytes"].as_u64().unwrap()).collect();
    let mut sorted = bytes.clone();
    sorted.sort_unstable();
    let median = sorted[sorted.len() / 2];
    let (mut longest, mut run) = (0, 0);
    for b in bytes {
        run = if b * 10 < median { run + 1 } else { 0 };
        longest = longest.max(run);
    }
    longest as f64 * INTERVAL_SECS
}

/// Waits for a stream's end; asserts it ran to the end without an error (a reset ends an
/// iperf3 test with one) and returns its longest gap.
fn finished_stream(name: &str, client: Child) -> f64 {
    let out = client.wait_with_output().unwrap();
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{name}: no report ({e}): {}", String::from_utf8_lossy(&out.stderr)));
    assert!(report.get("error").is_none(), "{name} broke: {}", report["error"]);
    assert!(out.status.success(), "{name} failed: {}", String::from_utf8_lossy(&out.stderr));
    let seconds = report["end"]["sum_received"]["seconds"].as_f64().unwrap_or(0.0);
    assert!(seconds >= STREAM_SECS as f64 - 0.5, "{name} ended early, after {seconds} s");
    longest_gap_secs(&report)
}

/// The masqueraded flows of one protocol, as `conntrack ls` shows them: (source,
/// destination, translated).
fn masqueraded(host: &Host, proto: &str) -> Vec<(String, String, String)> {
    host.dp_ok(&["conntrack", "ls"])
        .lines()
        .skip(1)
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .filter(|c| c.len() >= 5 && c[0] == "masquerade" && c[1] == proto)
        .map(|c| (c[2].to_string(), c[3].to_string(), c[4].to_string()))
        .collect()
}

#[test]
fn streams_on_every_path_outlive_five_sigkills_of_the_daemon() {
    let mut host = Host::start_with_external();
    host.dp_ok(&["network", "create", "--subnet", "10.94.0.0/24", "load"]);
    for name in ["out", "client"] {
        host.run_sleeper(name, &["--network", "load"]);
    }
    let receiver = ["iperf3", "-s", "-1", "-J", "-i", "0.1"];
    let sandbox = |name: &str| {
        host.dp_json(&["inspect", name])[0]["NetworkSettings"]["SandboxKey"].as_str().unwrap().to_string()
    };
    let (out_ns, client_ns) = (sandbox("out"), sandbox("client"));
    // Container to container: the receiver is a container of the network.
    let mut args = vec!["run", "-d", "--name", "sink", "--network", "load", "--"];
    args.extend(receiver);
    args.extend(["-p", "5301"]);
    host.dp_ok(&args);
    // Outside to a published port.
    let mut args = vec!["run", "-d", "--name", "published", "--network", "load", "-p", "5302:5302", "--"];
    args.extend(receiver);
    args.extend(["-p", "5302"]);
    host.dp_ok(&args);
    // Container to the outside, masqueraded.
    let mut args = receiver.to_vec();
    args.extend(["-B", EXTERNAL_ADDR, "-p", "5303"]);
    let _outside = host.external_server(args[0], &args[1..], "iperf3-outside.log");
    let sink = host.ip_of("sink");
    // The receivers serve one test each: wait for them to listen without connecting.
    for (name, port) in [("sink", ":5301 "), ("published", ":5302 ")] {
        let netns = sandbox(name);
        let listening = || {
            let out = in_namespace(&netns, "ss").arg("-ltnH").output().unwrap();
            String::from_utf8_lossy(&out.stdout).contains(port)
        };
        assert!(eventually(Duration::from_secs(10), listening), "{name}'s iperf3 never listened");
    }

    // UDP and ICMP flows out through masquerade, alive across the kills.
    let udp_client = format!(
        "import socket, time\n\
         s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(1)\n\
         lost = 0\n\
         for i in range({n}):\n\
         \x20   s.sendto(b'x', ('{EXTERNAL_ADDR}', 5304))\n\
         \x20   try: s.recv(100)\n\
         \x20   except socket.timeout: lost += 1\n\
         \x20   time.sleep(0.2)\n\
         print(lost)",
        n = STREAM_SECS * 5
    );
    let udp_echo = format!(
        "import socket\n\
         s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('{EXTERNAL_ADDR}', 5304))\n\
         while True:\n\
         \x20   d, a = s.recvfrom(100); s.sendto(d, a)"
    );
    let _echo = host.external_server("python3", &["-c", &udp_echo], "udp-echo.log");
    let udp = in_namespace(&out_ns, "python3")
        .args(["-c", &udp_client])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let count = (STREAM_SECS * 5).to_string();
    let ping = in_namespace(&out_ns, "ping")
        .args(["-q", "-i", "0.2", "-W", "1", "-c", &count, EXTERNAL_ADDR])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();

    let streams = [
        ("container to container", iperf3_client(in_namespace(&client_ns, "iperf3"), &sink, 5301)),
        ("outside to a published port", iperf3_client(host.external_command("iperf3"), UPLINK_ADDR, 5302)),
        ("container to the outside", iperf3_client(in_namespace(&out_ns, "iperf3"), EXTERNAL_ADDR, 5303)),
    ];
    sleep(Duration::from_secs(2));
    let translations = (masqueraded(&host, "udp"), masqueraded(&host, "icmp"));
    assert!(
        !translations.0.is_empty() && !translations.1.is_empty(),
        "no UDP or ICMP flow: {translations:?}"
    );
    for _ in 0..KILLS {
        host.kill_daemon();
        sleep(Duration::from_millis(300));
        host.start_daemon();
        sleep(Duration::from_millis(1200));
    }
    assert_eq!(
        (masqueraded(&host, "udp"), masqueraded(&host, "icmp")),
        translations,
        "a translation changed"
    );

    for (name, client) in streams {
        let gap = finished_stream(name, client);
        eprintln!("{name}: longest gap {gap:.1} s");
        assert!(gap < 1.0, "{name}: nothing arrived for {gap:.1} s");
    }
    let udp = udp.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&udp.stdout).trim(), "0", "UDP exchanges were lost");
    let ping = ping.wait_with_output().unwrap();
    assert!(ping.status.success(), "pings were lost: {}", String::from_utf8_lossy(&ping.stdout));
    assert!(String::from_utf8_lossy(&ping.stdout).contains(" 0% packet loss"));
}
