//! Load and leaks: many requests at once get what they would get one by one, and a
//! thousand containers made and removed, twice over, leave the daemon and the system as
//! they found them.

use std::{collections::BTreeSet, fs, process::Stdio, thread, time::Duration};

use dataplane_tests::{Host, binary, eventually};

#[test]
fn fifty_runs_at_once_get_fifty_distinct_reachable_addresses() {
    let host = Host::start();
    host.dp_ok(&["network", "create", "--subnet", "10.95.0.0/24", "crowd"]);
    let runs: Vec<_> = (0..50)
        .map(|i| {
            host.command(binary())
                .args(["run", "-d", "--name", &format!("c{i}"), "--network", "crowd", "--"])
                .args(["sleep", "infinity"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (i, run) in runs.into_iter().enumerate() {
        let out = run.wait_with_output().unwrap();
        assert!(out.status.success(), "run c{i} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let addresses: BTreeSet<String> = (0..50).map(|i| host.ip_of(&format!("c{i}"))).collect();
    assert_eq!(addresses.len(), 50, "addresses handed out twice: {addresses:?}");
    // Every one answers c0, and c0 answers every one (the first ping of each resolves
    // the neighbour: it gets a second try).
    let targets = addresses.iter().map(String::as_str).collect::<Vec<_>>().join(" ");
    let script = format!(
        "for ip in {targets}; do ping -c1 -W1 $ip >/dev/null || ping -c1 -W1 $ip >/dev/null || echo $ip; done"
    );
    let unreachable = host.exec("c0", &script);
    assert!(unreachable.status.success());
    assert_eq!(String::from_utf8_lossy(&unreachable.stdout).trim(), "", "unreachable from c0");
}

/// What the daemon and the system hold for containers: everything a container adds and
/// its removal must take away again. Memory is apart (see the test).
#[derive(Debug, PartialEq)]
struct Holdings {
    daemon_fds: usize,
    links: Vec<String>,
    namespace_pins: usize,
    mounts_under_the_test_dir: usize,
    endpoint_entries: usize,
    interface_entries: usize,
    records: usize,
    processes: usize,
}

/// The churn's containers run this, which nothing else on the machine does.
const CHURN_COMMAND: [&str; 2] = ["sleep", "86399"];

fn churn_processes() -> usize {
    let wanted = CHURN_COMMAND.map(|a| format!("{a}\0")).concat();
    fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| fs::read(e.ok()?.path().join("cmdline")).ok())
        .filter(|cmdline| cmdline == wanted.as_bytes())
        .count()
}

fn holdings(host: &Host) -> Holdings {
    let pid = host.daemon_pid().unwrap();
    let mut links = host.links();
    links.sort();
    let dir = host.dir.to_string_lossy().into_owned();
    Holdings {
        daemon_fds: fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count(),
        links,
        namespace_pins: host.container_namespaces().len(),
        mounts_under_the_test_dir: fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .filter(|l| l.contains(&dir))
            .count(),
        endpoint_entries: host.map_entries("ENDPOINTS"),
        interface_entries: host.configured_interfaces(),
        records: host.dp_ok(&["ps", "-a"]).lines().count() - 1,
        processes: churn_processes(),
    }
}

fn resident_kib(host: &Host) -> u64 {
    let status = fs::read_to_string(format!("/proc/{}/status", host.daemon_pid().unwrap())).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .unwrap()
        .trim()
        .trim_end_matches(" kB")
        .parse()
        .unwrap()
}

const CONTAINERS: usize = 1000;
const WORKERS: usize = 4;

/// Runs `args(i)` for every container, from `WORKERS` clients at once.
fn on_every_container(host: &Host, args: impl Fn(usize) -> Vec<String> + Sync) {
    thread::scope(|scope| {
        for worker in 0..WORKERS {
            let args = &args;
            scope.spawn(move || {
                for i in (worker..CONTAINERS).step_by(WORKERS) {
                    let args = args(i);
                    let out = host.command(binary()).args(&args).stdin(Stdio::null()).output().unwrap();
                    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
                }
            });
        }
    });
}

#[test]
fn a_thousand_containers_made_and_removed_twice_leave_nothing_behind() {
    let mut host = Host::empty().unwrap();
    // One malloc arena: with one per thread (glibc's default), which of the runtime's
    // threads serves a request decides where its memory comes from, and the daemon's size
    // steps by an arena's worth at random; a leak is what this test looks for.
    host.set_daemon_env(&[("MALLOC_ARENA_MAX", "1")]);
    host.start_daemon();
    host.dp_ok(&["network", "create", "--subnet", "10.96.0.0/20", "churn"]);
    let before = holdings(&host);
    let mut resident_after = vec![];
    for round in 0..2 {
        on_every_container(&host, |i| {
            let name = format!("r{i}");
            ["run", "-d", "--name", &name, "--network", "churn", "--"]
                .iter()
                .chain(&CHURN_COMMAND)
                .map(|a| a.to_string())
                .collect()
        });
        let full = holdings(&host);
        assert_eq!((full.records, full.processes), (CONTAINERS, CONTAINERS), "round {round}");
        assert_eq!(full.endpoint_entries, before.endpoint_entries + CONTAINERS, "round {round}");
        // One descriptor per running container, the pidfd that tells its end (a few more
        // for the requests in flight).
        assert!(
            full.daemon_fds <= before.daemon_fds + CONTAINERS + 16,
            "round {round}: the daemon holds {} descriptors with {CONTAINERS} containers, {} without",
            full.daemon_fds,
            before.daemon_fds
        );
        on_every_container(&host, |i| ["rm", "-f", &format!("r{i}")].map(String::from).to_vec());
        // The veths go on the link reaper's thread, right after the answers.
        eventually(Duration::from_secs(30), || holdings(&host) == before);
        assert_eq!(holdings(&host), before, "round {round} left something behind");
        resident_after.push(resident_kib(&host));
    }
    // The allocator keeps what the first round took, to hand it out again: the second
    // round must fit in it, give or take a kilobyte per container.
    let (first, second) = (resident_after[0], resident_after[1]);
    assert!(
        second <= first + CONTAINERS as u64,
        "the daemon grew from {first} to {second} KiB over the second round"
    );
}
