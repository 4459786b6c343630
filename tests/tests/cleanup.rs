//! `dataplane daemon --cleanup`: after a daemon that served networks, containers and
//! published ports is killed, nothing of it is left on the host.

use std::{path::Path, time::Duration};

use dataplane_tests::{Host, eventually};

/// Whether a process is gone (or a zombie its parent has yet to reap: it holds nothing).
fn gone(pid: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_or(true, |stat| stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')))
}

/// The mount points of this process's mount namespace under `dir`.
fn mounts_under(dir: &Path) -> Vec<String> {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let dir = dir.display().to_string();
    mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| p.starts_with(&dir))
        .map(String::from)
        .collect()
}

#[test]
fn cleanup_after_a_killed_daemon_leaves_nothing_behind() {
    let mut host = Host::start_with_external_and(&[("DATAPLANE_XDP", "on")]);
    host.dp_ok(&["network", "create", "--subnet", "10.77.0.0/24", "blue"]);
    host.run_sleeper("web", &["--network", "blue", "-p", "8080:80"]);
    host.run_sleeper("db", &[]);
    host.run_sleeper("tool", &["--network", "host"]);
    let pids: Vec<u64> = ["web", "db", "tool"]
        .iter()
        .map(|name| host.dp_json(&["inspect", name])[0]["State"]["Pid"].as_u64().unwrap())
        .collect();
    assert!(host.sh_ok("ip -d link show up0").contains("xdp"), "the test needs XDP on the uplink");

    let err = host.dp_err(&["daemon", "--cleanup"]);
    assert!(err.contains("in use by another dataplane daemon") && err.contains("stop it first"), "{err}");

    host.kill_daemon();
    let out = host.dp_ok(&["daemon", "--cleanup"]);
    assert!(out.contains("removed") && out.contains("the state stays"), "{out}");

    let mut links = host.links();
    links.sort();
    assert_eq!(links, ["lo", "up0"], "bridges and veths are gone");
    assert!(!host.sh_ok("ip -d link show up0").contains("xdp"), "the XDP link is gone");
    let filters = String::from_utf8(host.sh("tc filter show dev up0 ingress").stdout).unwrap();
    assert_eq!(filters, "", "our filter on the uplink is gone");
    assert!(!host.sh_ok("tc qdisc show dev up0").contains("clsact"), "the clsact qdisc it added is gone");
    assert!(!host.bpffs().exists(), "pins and the bpffs mount are gone");
    assert_eq!(
        mounts_under(&host.dir),
        Vec::<String>::new(),
        "no mount is left: pins, namespace dir, template"
    );
    assert!(!host.socket().exists(), "the socket is gone");
    assert!(
        eventually(Duration::from_secs(5), || pids.iter().all(|&pid| gone(pid))),
        "containers' processes"
    );
    assert_eq!(host.state().containers.len(), 3, "without --purge the state stays");

    host.dp_ok(&["daemon", "--cleanup", "--purge"]);
    assert!(!host.dir.join("state").exists(), "--purge removes the state dir");
}
