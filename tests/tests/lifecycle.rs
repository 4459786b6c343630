//! Container lifecycle: foreground runs, restarts of the daemon, removal leaving nothing.

use std::time::Duration;

use dataplane_tests::{Host, eventually};

#[test]
fn foreground_run_passes_output_and_exit_code_through() {
    let host = Host::start();
    let out = host.dp(&[
        "run",
        "--name",
        "fg",
        "--hostname",
        "box",
        "--",
        "sh",
        "-c",
        "hostname; ip -o -4 addr show eth0; exit 7",
    ]);
    assert_eq!(out.status.code(), Some(7));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("box\n"), "{stdout}");
    assert!(stdout.contains("172.17.0.2/16"), "{stdout}");
    let info = host.dp_json(&["inspect", "fg"]);
    assert_eq!(info[0]["State"]["Status"], "exited");
    assert_eq!(info[0]["State"]["ExitCode"], 7);
    assert!(host.dp_ok(&["ps"]).lines().count() == 1, "ps hides exited containers");
    assert!(host.dp_ok(&["ps", "-a"]).contains("Exited (7)"));
    let out = host.dp(&["run", "--rm", "--", "true"]);
    assert!(out.status.success());
    assert_eq!(host.dp_ok(&["ps", "-a"]).lines().count(), 2, "--rm removed its container");
    assert_eq!(host.container_namespaces().len(), 1);
}

#[test]
fn detached_container_with_rm_goes_away_when_its_command_ends() {
    let host = Host::start();
    host.dp_ok(&["run", "-d", "--rm", "--name", "brief", "--", "sleep", "0.3"]);
    assert!(eventually(Duration::from_secs(10), || host.dp_ok(&["ps", "-a"]).lines().count() == 1));
    assert!(host.container_namespaces().is_empty());
    host.dp_ok(&["run", "-d", "--name", "kept", "--", "sleep", "0.2"]);
    assert!(eventually(Duration::from_secs(10), || host.dp_ok(&["ps", "-a"]).contains("Exited (0)")));
}

#[test]
fn stop_ends_the_command_and_rm_needs_force_while_running() {
    let host = Host::start();
    host.run_sleeper("s", &[]);
    let err = host.dp_err(&["rm", "s"]);
    assert!(err.contains("is running") && err.contains("rm -f"), "{err}");
    host.dp_ok(&["stop", "s"]);
    assert_eq!(host.dp_json(&["inspect", "s"])[0]["State"]["Status"], "exited");
    host.dp_ok(&["rm", "s"]);
}

#[test]
fn rm_leaves_no_veth_namespace_or_map_entry_behind() {
    let host = Host::start();
    host.dp_ok(&["network", "create", "--subnet", "10.90.0.0/24", "net"]);
    host.run_sleeper("a", &["--network", "net"]);
    host.run_sleeper("b", &[]);
    assert_eq!(host.map_entries("ENDPOINTS"), 2);
    assert_eq!(host.configured_interfaces(), 2);
    assert_eq!(host.links().iter().filter(|l| l.starts_with("veth")).count(), 2);
    assert_eq!(host.container_namespaces().len(), 2);
    host.dp_ok(&["rm", "-f", "a", "b"]);
    assert_eq!(host.map_entries("ENDPOINTS"), 0);
    assert_eq!(host.configured_interfaces(), 0);
    assert!(!host.links().iter().any(|l| l.starts_with("veth") || l.starts_with("dpt")));
    assert!(host.container_namespaces().is_empty());
    assert_eq!(host.dp_ok(&["ps", "-a"]).lines().count(), 1);
}

/// A container's command gets a mount namespace of its own (for its /etc files), a copy
/// of the daemon's. Were the namespace pins copied along, each container would hold one
/// mount per container before it: N² mounts of kernel memory for N containers.
#[test]
fn container_commands_hold_no_copies_of_the_namespace_pins() {
    let host = Host::start();
    host.run_sleeper("a", &[]);
    host.run_sleeper("b", &[]);
    let pin =
        host.dp_json(&["inspect", "a"])[0]["NetworkSettings"]["SandboxKey"].as_str().unwrap().to_string();
    let netns_dir = std::path::Path::new(&pin).parent().unwrap().to_str().unwrap().to_string();
    for name in ["a", "b"] {
        let pid = host.dp_json(&["inspect", name])[0]["State"]["Pid"].as_u64().unwrap();
        let mounts = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
        let pins: Vec<_> = mounts.lines().filter(|line| line.contains(&netns_dir)).collect();
        assert!(pins.is_empty(), "container {name}'s mount namespace holds the daemon's pins: {pins:?}");
    }
    let exec = String::from_utf8(host.exec("b", "cat /proc/self/mountinfo").stdout).unwrap();
    assert!(!exec.contains(&netns_dir), "exec's mount namespace holds the daemon's pins");
    assert!(host.ping("b", "172.17.0.1"), "b lost its network");
    assert!(exec.contains(" /etc/hosts "), "exec lost the container's /etc files");
    // The pins stay where the daemon and the CLI see them.
    assert!(host.sh_ok("cat /proc/self/mountinfo").contains(&pin));
}

#[test]
fn restart_restores_state_and_traffic_keeps_flowing() {
    let mut host = Host::start();
    host.dp_ok(&["network", "create", "--subnet", "10.91.0.0/24", "net"]);
    host.run_sleeper("a", &["--network", "net"]);
    host.run_sleeper("b", &["--network", "net"]);
    let b = host.ip_of("b");
    assert!(host.ping("a", &b));
    let netns_a =
        host.dp_json(&["inspect", "a"])[0]["NetworkSettings"]["SandboxKey"].as_str().unwrap().to_string();
    let veth = host.dp_json(&["inspect", "a"])[0]["NetworkSettings"]["Networks"]["net"]["HostInterface"]
        .as_str()
        .unwrap()
        .to_string();
    host.stop_daemon();
    // With the daemon gone, the programs stay attached and the traffic still flows.
    let filters = host.sh_ok(&format!("tc filter show dev {veth} ingress"));
    assert!(filters.contains("name from_container"), "the program left with the daemon: {filters}");
    let ping = std::process::Command::new("nsenter")
        .arg(format!("--net={netns_a}"))
        .args(["ping", "-c1", "-W1", &b])
        .output()
        .unwrap();
    assert!(ping.status.success(), "no traffic while the daemon was down");
    host.start_daemon();
    // The restarted daemon swapped its program into the existing filter, adding none.
    let filters = host.sh_ok(&format!("tc filter show dev {veth} ingress"));
    assert_eq!(filters.lines().filter(|l| l.contains("name from_container")).count(), 1, "{filters}");
    let ps = host.dp_ok(&["ps"]);
    assert!(ps.contains("a") && ps.contains("b") && ps.contains("Up"), "{ps}");
    let forwarded = host.counter("forwarded");
    assert!(host.ping("a", &b));
    assert!(host.counter("forwarded") >= forwarded + 2, "the fast path is back after restart");
    let named = host.exec("a", "dig +short +time=2 +tries=1 b");
    assert_eq!(String::from_utf8_lossy(&named.stdout).trim(), b, "the resolver is back after restart");
    // The restored allocations are respected: the next address is new.
    host.run_sleeper("c", &["--network", "net"]);
    assert_eq!(host.ip_of("c"), "10.91.0.4");
    assert_eq!(host.map_entries("ENDPOINTS"), 3);
}
