//! Crash consistency: the daemon is killed with SIGKILL at seeded random moments while it
//! serves `run -d`, `rm -f`, `network create`, `network rm`, `network connect`,
//! `network disconnect`, `stop` and `start`, and started again. After each restart the system and the state
//! agree: every veth, namespace pin, bridge, map entry, port reservation and container
//! process has its record, every record has its pieces, and `ps -a`, `inspect` and
//! `network inspect` tell the truth.
//!
//! Each test prints its seed; `DATAPLANE_CRASH_SEED=N` replays its operations and the
//! delays before each kill (where a kill lands in the daemon's work still depends on
//! timing, which is the point of trying many).

use std::{
    collections::BTreeSet,
    path::Path,
    process::{Child, Command, Stdio},
    thread::sleep,
    time::{Duration, Instant},
};

use dataplane::{
    netns, process,
    state::{State, Status},
};
use dataplane_tests::{Host, binary, eventually, namespace_inode, processes_in_namespace};
use rand::{Rng, SeedableRng, rngs::StdRng, seq::SliceRandom};

/// The test's random source, from `DATAPLANE_CRASH_SEED` or a fresh seed, printed.
fn seeded(test: &str) -> (StdRng, u64) {
    let seed = std::env::var("DATAPLANE_CRASH_SEED")
        .ok()
        .map(|s| s.parse().expect("DATAPLANE_CRASH_SEED: give a number"))
        .unwrap_or_else(rand::random);
    eprintln!("{test}: seed {seed}; DATAPLANE_CRASH_SEED={seed} replays it");
    (StdRng::seed_from_u64(seed), seed)
}

/// A host whose daemon is killed and restarted; its containers run `sleep` for a number
/// of seconds of this host's own, so that the processes of its containers, and only
/// those, are found by their command line.
struct Crashing {
    host: Host,
    rng: StdRng,
    seed: u64,
    sleep_secs: String,
    /// How long each kind of request took when it ran to its end, the window each kill
    /// is drawn in.
    took: std::collections::HashMap<&'static str, Duration>,
    kills: usize,
}

impl Crashing {
    fn start(test: &str) -> Self {
        let (mut rng, seed) = seeded(test);
        let sleep_secs = (700_000 + rng.random_range(0..100_000) + std::process::id() % 1000).to_string();
        Self { host: Host::start(), rng, seed, sleep_secs, took: Default::default(), kills: 0 }
    }

    /// `run -d` of a container of this host, named `name`.
    fn run_args(&self, name: &str, extra: &[&str]) -> Vec<String> {
        let mut args = vec!["run", "-d", "--name", name];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--", "sleep", &self.sleep_secs]);
        args.into_iter().map(String::from).collect()
    }

    /// Runs a request to its end (no kill), and learns how long its kind takes.
    fn complete(&mut self, kind: &'static str, args: &[&str]) {
        self.complete_owned(kind, &args.iter().map(|a| a.to_string()).collect::<Vec<_>>());
    }

    fn complete_owned(&mut self, kind: &'static str, args: &[String]) {
        let started = Instant::now();
        self.host.dp_ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
        self.took.insert(kind, started.elapsed());
    }

    /// Runs a request to its answer and kills the daemon the moment it has answered, with
    /// what it does after the answer still pending; restarts the daemon and asserts that
    /// the system and the state agree.
    fn crash_after(&mut self, args: &[&str]) {
        let out = self.host.command(binary()).args(args).stdin(Stdio::null()).output().unwrap();
        self.host.kill_daemon();
        self.kills += 1;
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        self.host.start_daemon();
        let context = format!("seed {}, kill {} right after the answer to {args:?}", self.seed, self.kills);
        assert_agree(&self.host, &self.sleep_secs, &context);
    }

    /// Sends a request and kills the daemon at a random moment of its work; waits for
    /// the CLI to end, restarts the daemon, and asserts that the system and the state
    /// agree.
    fn crash_during(&mut self, kind: &'static str, args: &[&str]) {
        let window = self.took.get(kind).copied().unwrap_or(Duration::from_millis(150));
        let delay = window.mul_f64(self.rng.random_range(0.0..1.0));
        let mut cli = self
            .host
            .command(binary())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        sleep(delay);
        self.host.kill_daemon();
        self.kills += 1;
        reap_within(&mut cli, Duration::from_secs(10));
        self.host.start_daemon();
        let context = format!(
            "seed {}, kill {} during {args:?} after {delay:?} (of {window:?})",
            self.seed, self.kills
        );
        assert_agree(&self.host, &self.sleep_secs, &context);
    }
}

/// A failed test leaves no container command running, not even one no record owns.
impl Drop for Crashing {
    fn drop(&mut self) {
        for pid in container_processes(&self.sleep_secs) {
            process::signal(pid.parse().expect("a PID"), nix::sys::signal::Signal::SIGKILL);
        }
    }
}

/// Waits for a CLI whose daemon died; kills it (by its PID) if it hangs.
fn reap_within(cli: &mut Child, limit: Duration) {
    let deadline = Instant::now() + limit;
    while cli.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = cli.kill();
            let _ = cli.wait();
            panic!("the CLI hung for {limit:?} after its daemon was killed");
        }
        sleep(Duration::from_millis(10));
    }
}

/// Asserts that the system and the state agree, giving the kernel a moment to finish
/// what it does in the background (a namespace's veths go some time after its last
/// process and pin: over 3 s once on a fresh CI machine, the veth gone a moment later).
fn assert_agree(host: &Host, sleep_secs: &str, context: &str) {
    let mut last = vec![];
    let agreed = eventually(Duration::from_secs(10), || {
        last = disagreements(host, sleep_secs);
        last.is_empty()
    });
    let log = host.daemon_log();
    let tail: Vec<_> = log.lines().rev().take(30).collect::<Vec<_>>().into_iter().rev().collect();
    // Where a leftover veth's other end is (`link-netnsid`, or none: its namespace is
    // gone or it never left the host) tells the daemon's miss from the kernel's lag.
    let veths = if agreed { String::new() } else { host.sh_ok("ip -d link show type veth") };
    assert!(
        agreed,
        "{context}: the system and the state disagree:\n  {}\nveths:\n{veths}\ndaemon log:\n{}",
        last.join("\n  "),
        tail.join("\n")
    );
    assert!(!log.contains("panicked"), "{context}: the daemon panicked:\n{log}");
}

/// Everything on which the system and the state (as the daemon's files hold it, and as
/// the CLI shows it) disagree, one line each.
fn disagreements(host: &Host, sleep_secs: &str) -> Vec<String> {
    let state = host.state();
    let mut found = vec![];
    let mut differ = |what: &str, system: BTreeSet<String>, recorded: BTreeSet<String>| {
        for extra in system.difference(&recorded) {
            found.push(format!("{what} {extra} has no record in the state"));
        }
        for missing in recorded.difference(&system) {
            found.push(format!("{what} {missing} is recorded but missing"));
        }
    };
    let pins: BTreeSet<String> = host.container_namespaces().into_iter().collect();
    let own_pins = state
        .containers
        .iter()
        .filter(|c| c.network_mode.owns_sandbox())
        .map(|c| c.netns.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    differ("namespace pin", pins, own_pins);
    let links = host.links();
    let veths = links.iter().filter(|l| l.starts_with("veth")).cloned().collect();
    differ("veth", veths, state.endpoints.iter().map(|e| e.host_veth.clone()).collect());
    let bridges = host.sh_ok("ip -o link show type bridge");
    let bridges = bridges.lines().filter_map(|l| l.split(": ").nth(1)).map(|n| n.to_string()).collect();
    differ("bridge", bridges, state.networks.iter().map(|n| n.bridge.clone()).collect());
    let processes = container_processes(sleep_secs);
    let running = state
        .containers
        .iter()
        .filter_map(|c| match c.status {
            Status::Running { pid, .. } => Some(pid.to_string()),
            _ => None,
        })
        .collect();
    differ("container process", processes, running);
    found.extend(record_pieces(host, &state));
    found.extend(cli_views(host, &state));
    found
}

/// PIDs of the processes running this host's containers' command.
fn container_processes(sleep_secs: &str) -> BTreeSet<String> {
    let wanted = format!("sleep\0{sleep_secs}\0");
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == wanted.as_bytes()))
        .map(|pid| pid.to_string())
        .collect()
}

/// What is missing of each record: a running container's process in its namespace, an
/// endpoint's address inside, map entries, reservations of its published ports.
fn record_pieces(host: &Host, state: &State) -> Vec<String> {
    let mut found = vec![];
    for c in &state.containers {
        if !netns::is_namespace(&c.netns) {
            found.push(format!("container {}: its namespace {} is no namespace", c.name, c.netns.display()));
            continue;
        }
        let inside = processes_in_namespace("net", namespace_inode(&c.netns));
        match c.status {
            Status::Running { pid, start_time } => {
                if !process::is_alive(pid, start_time) {
                    found.push(format!(
                        "container {} is recorded running as PID {pid}, which is gone",
                        c.name
                    ));
                } else if !inside.iter().any(|p| p.starts_with(&format!("{pid} "))) {
                    found.push(format!("container {}: PID {pid} is not in its namespace", c.name));
                }
            }
            // The host's namespace, or another container's, runs others' processes too.
            _ if !inside.is_empty() && c.network_mode.owns_sandbox() => {
                found.push(format!("container {} is recorded {:?}, yet runs {inside:?}", c.name, c.status));
            }
            _ => {}
        }
    }
    for e in &state.endpoints {
        let addresses =
            host.sh(&format!("nsenter --net={} ip -o addr show dev {}", e.netns.display(), e.ifname));
        let held = String::from_utf8_lossy(&addresses.stdout);
        if let Some(lost) = e.addresses().find(|ip| !held.contains(&format!(" {ip}/"))) {
            found.push(format!(
                "endpoint {} ({}): {} lacks its address {lost}",
                e.host_veth, e.owner, e.ifname
            ));
        }
        for port in &e.ports {
            let (ip, number, proto) = (port.host_ip, port.host_port, port.proto);
            let held = netns::run_in(Path::new(&format!("/run/netns/{}", host.name)), move || {
                Ok(dataplane::ports::reserve(dataplane::ports::Bind::Address(ip), number, proto).is_err())
            })
            .unwrap();
            if !held {
                found.push(format!("endpoint {}: host port {number}/{proto} is not reserved", e.host_veth));
            }
        }
    }
    let published: usize = state.endpoints.iter().map(|e| e.ports.len()).sum();
    for (map, entries, recorded) in [
        ("ENDPOINTS", host.map_entries("ENDPOINTS"), state.endpoints.len()),
        ("PUBLISHED", host.map_entries("PUBLISHED"), published),
        ("interface", host.configured_interfaces(), state.endpoints.len()),
    ] {
        if entries != recorded {
            found.push(format!("{map} map entries: {entries}, for {recorded} in the state"));
        }
    }
    found
}

/// Whether `ps -a`, `inspect` and `network inspect` show what the state holds.
fn cli_views(host: &Host, state: &State) -> Vec<String> {
    let mut found = vec![];
    let ps = host.dp_ok(&["ps", "-a", "--format", "{{.Names}}"]);
    let listed: BTreeSet<_> = ps.lines().collect();
    let recorded: BTreeSet<_> = state.containers.iter().map(|c| c.name.as_str()).collect();
    if listed != recorded {
        found.push(format!("ps -a lists {listed:?}, the state holds {recorded:?}"));
    }
    for c in &state.containers {
        let shown = host.dp_json(&["inspect", &c.name]);
        let running =
            matches!(c.status, Status::Running { pid, start_time } if process::is_alive(pid, start_time));
        if shown[0]["State"]["Running"] != running {
            found.push(format!(
                "inspect {} shows {}, its process is {}",
                c.name,
                shown[0]["State"],
                if running { "running" } else { "not running" }
            ));
        }
    }
    for net in &state.networks {
        let shown = host.dp_json(&["network", "inspect", &net.name]);
        let on: BTreeSet<String> =
            state.endpoints_on(&net.id).filter_map(|e| e.ip).map(|ip| ip.to_string()).collect();
        let shown: BTreeSet<String> = shown[0]["Containers"]
            .as_object()
            .map(|m| {
                m.values()
                    .filter_map(|v| v["IPv4Address"].as_str()?.split('/').next())
                    .filter(|ip| !ip.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default();
        if shown != on {
            found.push(format!("network inspect {} shows {shown:?}, the state holds {on:?}", net.name));
        }
    }
    found
}

/// The user's report of issue 18: SIGKILLs at random moments during `run -d` left veths
/// and namespace pins, each with its container's process running, that no record owned.
#[test]
fn daemon_killed_during_run_leaves_nothing_unowned() {
    let mut crashing = Crashing::start("daemon_killed_during_run_leaves_nothing_unowned");
    let first = crashing.run_args("first", &["-p", "18080:80"]);
    crashing.complete_owned("run", &first);
    for i in 0..14 {
        let name = format!("c{i}");
        let publish = format!("{}:80", 18100 + i);
        let extra: Vec<&str> = if i % 3 == 0 { vec!["-p", &publish] } else { vec![] };
        let args = crashing.run_args(&name, &extra);
        crashing.crash_during("run", &args.iter().map(String::as_str).collect::<Vec<_>>());
    }
    // What survived can be removed, and leaves nothing behind.
    let names: Vec<String> = crashing.host.state().containers.iter().map(|c| c.name.clone()).collect();
    let mut args = vec!["rm", "-f"];
    args.extend(names.iter().map(String::as_str));
    crashing.host.dp_ok(&args);
    assert_agree(
        &crashing.host,
        &crashing.sleep_secs,
        &format!("seed {}: after removing all", crashing.seed),
    );
    assert!(crashing.host.container_namespaces().is_empty(), "seed {}", crashing.seed);
}

/// A container in the host's network or in another container's has no namespace of its
/// own, in which the start's sweep would find its command: a kill between the command's
/// start and the save of its record left the command running, owned by no record.
#[test]
fn daemon_killed_during_run_in_the_hosts_or_another_containers_network_leaves_no_process_unowned() {
    let mut crashing = Crashing::start(
        "daemon_killed_during_run_in_the_hosts_or_another_containers_network_leaves_no_process_unowned",
    );
    let first = crashing.run_args("first", &[]);
    crashing.complete_owned("run", &first);
    let modes = [("run in the host's network", "host"), ("run in first's network", "container:first")];
    for (kind, mode) in modes {
        let probe = crashing.run_args("probe", &["--network", mode]);
        crashing.complete_owned(kind, &probe);
        crashing.host.dp_ok(&["rm", "-f", "probe"]);
    }
    for i in 0..12 {
        let (kind, mode) = modes[i % 2];
        let name = format!("c{i}");
        let args = crashing.run_args(&name, &["--network", mode]);
        crashing.crash_during(kind, &args.iter().map(String::as_str).collect::<Vec<_>>());
        // Those that made it go, so that each round starts from `first` alone.
        if crashing.host.state().container(&name).is_some() {
            crashing.host.dp_ok(&["rm", "-f", &name]);
        }
    }
}

/// A command runs only once its process is recorded apart from the state, where the next
/// start finds it whatever the state lost: a record that cannot be written fails the
/// `run`, naming the file, and the command never ran.
#[test]
fn a_command_whose_process_cannot_be_recorded_never_runs() {
    let crashing = Crashing::start("a_command_whose_process_cannot_be_recorded_never_runs");
    // A file where the records' directory goes.
    let records = crashing.host.dir.join("state/processes");
    std::fs::write(&records, "").unwrap();
    let args = crashing.run_args("unrecorded", &["--network", "host"]);
    let out = crashing.host.dp(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "run -d succeeded without a record of its process");
    assert!(said.contains(&records.display().to_string()), "the error names the file: {said}");
    assert!(container_processes(&crashing.sleep_secs).is_empty(), "the command ran unrecorded");
    assert!(crashing.host.state().containers.is_empty(), "the failed run left a record");
}

/// Every kind of change, killed at random moments in seeded rounds that try each kind
/// once in a random order; each starts from what the crashes before it left.
#[test]
fn daemon_killed_during_any_change_leaves_the_state_and_the_system_agreeing() {
    let mut crashing =
        Crashing::start("daemon_killed_during_any_change_leaves_the_state_and_the_system_agreeing");
    crashing.complete("network create", &["network", "create", "--subnet", "10.99.0.0/24", "blue"]);
    // Removals killed right after their answer, with the deletion of their veths and
    // namespaces pending. Their namespaces are held open here, so that the kernel does
    // not delete the veths with them: only the daemon, before or after its restart, does.
    let mut held = vec![];
    for (name, publish) in [("r0", Some("18199:80")), ("r1", None), ("r2", None)] {
        let mut extra = vec!["--network", "blue"];
        extra.extend(publish.iter().flat_map(|p| ["-p", *p]));
        let run = crashing.run_args(name, &extra);
        crashing.complete_owned("run", &run);
        let info = crashing.host.dp_json(&["inspect", name]);
        held.push(std::fs::File::open(info[0]["NetworkSettings"]["SandboxKey"].as_str().unwrap()).unwrap());
    }
    crashing.crash_after(&["rm", "-f", "r0", "r1", "r2"]);
    drop(held);
    // What each kind of request takes when it runs to its end: the windows the kills
    // are drawn in.
    let probe = crashing.run_args("probe", &[]);
    crashing.complete_owned("run", &probe);
    crashing.complete("connect", &["network", "connect", "blue", "probe"]);
    crashing.complete("disconnect", &["network", "disconnect", "blue", "probe"]);
    crashing.complete("rm", &["rm", "-f", "probe"]);
    crashing.complete("network rm", &["network", "rm", "blue"]);
    crashing.complete("network create", &["network", "create", "--subnet", "10.99.0.0/24", "blue"]);
    let mut kinds = ["run", "rm", "network create", "network rm", "connect", "disconnect"];
    for round in 0..6 {
        kinds.shuffle(&mut crashing.rng);
        for (i, kind) in kinds.into_iter().enumerate() {
            let n = round * 6 + i;
            let (name, net, subnet) = (format!("c{n}"), format!("n{n}"), format!("10.{}.0.0/24", 100 + n));
            let args: Vec<String> = match kind {
                "run" => {
                    let publish = format!("{}:80", 18200 + n);
                    let extra: &[&str] =
                        if n % 2 == 0 { &["--network", "blue", "-p", &publish] } else { &[] };
                    crashing.run_args(&name, extra)
                }
                "rm" => {
                    let run = crashing.run_args(&name, &[]);
                    crashing.complete_owned("run", &run);
                    strings(&["rm", "-f", &name])
                }
                "network create" => strings(&["network", "create", "--subnet", &subnet, &net]),
                "network rm" => {
                    crashing.complete("network create", &["network", "create", "--subnet", &subnet, &net]);
                    strings(&["network", "rm", &net])
                }
                "connect" => {
                    let run = crashing.run_args(&name, &[]);
                    crashing.complete_owned("run", &run);
                    strings(&["network", "connect", "blue", &name])
                }
                _ => {
                    let run = crashing.run_args(&name, &[]);
                    crashing.complete_owned("run", &run);
                    crashing.complete("connect", &["network", "connect", "blue", &name]);
                    strings(&["network", "disconnect", "blue", &name])
                }
            };
            crashing.crash_during(kind, &args.iter().map(String::as_str).collect::<Vec<_>>());
            crashing.trim();
        }
    }
}

/// `stop` and `start` killed at random moments: after each restart a stopped container
/// holds no endpoint and nothing runs in its namespace, a running one holds an endpoint on
/// each network it asks for, and the rest agrees as after any change.
#[test]
fn daemon_killed_during_stop_or_start_leaves_the_state_and_the_system_agreeing() {
    let mut crashing =
        Crashing::start("daemon_killed_during_stop_or_start_leaves_the_state_and_the_system_agreeing");
    crashing.complete("network create", &["network", "create", "--subnet", "10.97.0.0/24", "blue"]);
    let web = crashing.run_args("web", &["--network", "blue", "-p", "18300:80"]);
    crashing.complete_owned("run", &web);
    crashing.complete("stop", &["stop", "-t", "0", "web"]);
    crashing.complete("start", &["start", "web"]);
    for round in 0..6 {
        for (kind, before) in [("stop", "start"), ("start", "stop")] {
            // From what its kind acts on, whatever the crash before left.
            let prepare: &[&str] =
                if before == "start" { &["start", "web"] } else { &["stop", "-t", "0", "web"] };
            crashing.host.dp_ok(prepare);
            let args: &[&str] = if kind == "stop" { &["stop", "-t", "0", "web"] } else { &["start", "web"] };
            crashing.crash_during(kind, args);
            let state = crashing.host.state();
            let container = state.container("web").expect("web stays");
            let held = state.endpoints_of(&container.id).count();
            let wanted = if container.is_running() { container.networks.len() } else { 0 };
            assert_eq!(
                held, wanted,
                "seed {}, round {round}, {kind}: web is {:?} with {held} endpoint(s)",
                crashing.seed, container.status
            );
        }
    }
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

impl Crashing {
    /// Keeps the host small, so that each check stays quick: at most four containers,
    /// and no network but the default one and `blue`.
    fn trim(&mut self) {
        let state = self.host.state();
        for container in state.containers.iter().rev().skip(4) {
            self.host.dp_ok(&["rm", "-f", &container.name]);
        }
        for net in state.networks.iter().filter(|n| n.name != "bridge" && n.name != "blue") {
            self.host.dp_ok(&["network", "rm", &net.name]);
        }
    }
}

/// A `state.json` damaged while the daemon was away (cut short, here) stops the daemon
/// with an error that names the file, the copy kept before it, and what to do; done as it
/// says, the daemon starts from that copy and removes what only the lost snapshot held.
#[test]
fn a_damaged_state_file_is_refused_and_its_backup_brings_the_daemon_back() {
    let mut crashing =
        Crashing::start("a_damaged_state_file_is_refused_and_its_backup_brings_the_daemon_back");
    let host = &mut crashing.host;
    host.dp_ok(&["network", "create", "--subnet", "10.98.0.0/24", "blue"]);
    // Each stop writes a snapshot and keeps the one before: the backup then holds `blue`,
    // and the damaged snapshot alone the container.
    host.stop_daemon();
    host.start_daemon();
    let run = crashing.run_args("lost", &["--network", "blue"]);
    let in_host = crashing.run_args("lost-in-host", &["--network", "host"]);
    let host = &mut crashing.host;
    for args in [run, in_host] {
        host.dp_ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    }
    host.dp_ok(&["network", "create", "--subnet", "10.97.0.0/24", "gone"]);
    host.stop_daemon();
    let state_dir = host.dir.join("state");
    let (snapshot, journal, backup) =
        (state_dir.join("state.json"), state_dir.join("state.journal"), state_dir.join("state.json.bak"));
    let whole = std::fs::read(&snapshot).unwrap();
    std::fs::write(&snapshot, &whole[..whole.len() / 2]).unwrap();

    let log = host.dir.join("refused.log");
    let mut daemon = host
        .command(binary())
        .arg("daemon")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = daemon.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = daemon.kill();
            let _ = daemon.wait();
            panic!("the daemon started on a damaged state file");
        }
        sleep(Duration::from_millis(50));
    };
    let said = std::fs::read_to_string(&log).unwrap();
    assert!(!status.success(), "the daemon refused to start: {said}");
    assert!(!said.contains("panicked"), "an error, not a panic: {said}");
    assert!(
        said.contains(&format!("state file {} is corrupt", snapshot.display())),
        "names the file: {said}"
    );
    assert!(
        said.contains(&backup.display().to_string()) && said.contains("aside"),
        "says what to do: {said}"
    );

    // As the error says: the damaged files aside, the backup in their place.
    std::fs::rename(&snapshot, state_dir.join("damaged.json")).unwrap();
    let _ = std::fs::rename(&journal, state_dir.join("damaged.journal"));
    std::fs::copy(&backup, &snapshot).unwrap();
    // Not named as a container's: someone else's, even in our state dir.
    let foreign = state_dir.join("logs").join("notes.txt");
    std::fs::write(&foreign, "kept").unwrap();
    host.start_daemon();
    assert!(host.dp_ok(&["network", "ls"]).contains("blue"), "the backup's network is back");
    assert_agree(host, &crashing.sleep_secs, &format!("seed {}: started from the backup", crashing.seed));
    assert!(host.state().containers.is_empty(), "only the damaged snapshot held the containers");
    for dir in ["containers", "logs", "processes"] {
        let left: Vec<_> = std::fs::read_dir(state_dir.join(dir))
            .map(|entries| entries.filter_map(|e| Some(e.ok()?.file_name())).collect())
            .unwrap_or_default();
        let left: Vec<_> = left.iter().filter(|name| *name != "notes.txt").collect();
        assert!(left.is_empty(), "state/{dir} keeps files of the lost containers: {left:?}");
    }
    assert!(foreign.exists(), "a file not named as a container's was removed");
    let log = host.daemon_log();
    for (orphan, logged) in [
        ("namespace", "no container holds it; removing it"),
        ("command in the host's network", "runs with no record; ending it"),
        ("bridge", "no network holds it"),
    ] {
        assert!(log.contains(logged), "the orphan {orphan} is logged:\n{log}");
    }
    for dir in ["containers", "logs"] {
        let dir = format!("{}/", state_dir.join(dir).display());
        let logged =
            log.lines().any(|l| l.contains(&dir) && l.contains("no container holds it; removing it"));
        assert!(logged, "the orphan files in {dir} are logged:\n{log}");
    }
}

/// The pin dir is shared (`/run/netns` by default, where `ip netns` and the runtimes pin
/// theirs): a start removes the unheld pins named as ours, and nothing else.
#[test]
fn a_start_removes_only_unheld_pins_named_as_ours() {
    let mut host = Host::start();
    let dir = host.netns_dir();
    let (foreign, left_over) = (dir.join("cni-0a1b2c3d4e5f"), dir.join("dp-0a1b2c3d4e5f"));
    for pin in [&foreign, &left_over] {
        std::fs::File::create(pin).unwrap();
        let made = Command::new("unshare").arg(format!("--net={}", pin.display())).arg("true").status();
        assert!(made.unwrap().success(), "pinning {}", pin.display());
    }
    host.stop_daemon();
    host.start_daemon();
    let pinned = |pin: &Path| {
        std::fs::read_to_string("/proc/self/mountinfo").unwrap().contains(&*pin.to_string_lossy())
    };
    assert!(pinned(&foreign), "someone else's namespace was removed");
    assert!(!pinned(&left_over), "a left-over namespace named as ours stayed");
    let _ = Command::new("umount").arg(&foreign).status();
}

/// Bridges are everyone's (Docker names its own `br-` and 12 digits too): a start removes
/// those marked as a network's of ours (by their alias) whose network the state does not
/// hold, and no other, whatever its name.
#[test]
fn a_start_removes_only_unheld_bridges_marked_as_ours() {
    let mut host = Host::start();
    let (foreign, left_over) = ("br-0a1b2c3d4e5f", "br-5f4e3d2c1b0a");
    let network_id = "5f4e3d2c1b0a".repeat(6)[..64].to_string();
    host.sh_ok(&format!("ip link add {foreign} type bridge"));
    host.sh_ok(&format!(
        "ip link add {left_over} type bridge && ip link set {left_over} alias 'dataplane network {network_id}'"
    ));
    host.stop_daemon();
    host.start_daemon();
    let bridges = host.sh_ok("ip -o link show type bridge");
    assert!(bridges.contains(&format!(" {foreign}:")), "someone else's bridge was removed: {bridges}");
    assert!(!bridges.contains(&format!(" {left_over}:")), "a left-over bridge of ours stayed: {bridges}");
    let log = host.daemon_log();
    assert!(log.contains(&format!("bridge {left_over}: no network holds it")), "it is logged:\n{log}");
}

/// Stands between the CLI and the daemon's socket, and holds the first request of one
/// kind (`started`, say) until the test says so: what lets a test kill the daemon at an
/// exact moment of a conversation. Every request is passed on to the daemon then serving
/// the socket; when none does, the CLI's connection is closed without an answer, as a
/// daemon killed mid-request closes it.
struct Relay {
    path: std::path::PathBuf,
    /// Told once the held request has come.
    held: std::sync::mpsc::Receiver<()>,
    /// Lets the held request go on.
    release: std::sync::mpsc::Sender<()>,
}

impl Relay {
    fn new(host: &Host, hold: &'static str) -> Self {
        use std::io::{BufRead, BufReader, Write};
        let path = host.dir.join("relay.sock");
        let daemon = host.socket();
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let (held_tx, held) = std::sync::mpsc::channel();
        let (release, release_rx) = std::sync::mpsc::channel::<()>();
        std::thread::spawn(move || {
            let mut holding = Some((held_tx, release_rx));
            for client in listener.incoming() {
                let Ok(mut client) = client else { return };
                let mut request = String::new();
                if BufReader::new(&client).read_line(&mut request).is_err() {
                    continue;
                }
                let kind = serde_json::from_str::<serde_json::Value>(&request)
                    .ok()
                    .and_then(|r| r["request"].as_str().map(String::from));
                if kind.as_deref() == Some(hold)
                    && let Some((held, release)) = holding.take()
                {
                    let _ = held.send(());
                    let _ = release.recv();
                }
                let Ok(mut daemon) = std::os::unix::net::UnixStream::connect(&daemon) else { continue };
                let mut answer = String::new();
                if daemon.write_all(request.as_bytes()).is_ok()
                    && BufReader::new(&daemon).read_line(&mut answer).is_ok()
                {
                    let _ = client.write_all(answer.as_bytes());
                }
            }
        });
        Self { path, held, release }
    }
}

/// A CLI process of the test, killed (by its PID) if the test ends before it does.
struct Cli(Child);

impl Drop for Cli {
    fn drop(&mut self) {
        if self.0.try_wait().unwrap().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// A foreground `run`'s command is started by the CLI, which reports it to the daemon.
/// The daemon killed between its answer to the `run` and that report (held by a relay,
/// so that the kill lands there every time) used to leave a `Created` record while the
/// command ran, owned by nothing. Now the command's process is recorded before it runs,
/// where the next start adopts it as the container's, running; and the CLI's report of
/// its end, made while the daemon was away again, reaches the daemon once it is back.
#[test]
fn daemon_killed_before_a_foreground_commands_start_is_reported_adopts_the_command() {
    let mut crashing =
        Crashing::start("daemon_killed_before_a_foreground_commands_start_is_reported_adopts_the_command");
    let relay = Relay::new(&crashing.host, "started");
    let output = crashing.host.dir.join("foreground.out");
    let mut cli = Cli(crashing
        .host
        .command(binary())
        .env("DATAPLANE_SOCKET", &relay.path)
        .args(["run", "--name", "fg", "--", "sleep", &crashing.sleep_secs])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&output).unwrap())
        .stderr(std::fs::File::create(&output).unwrap())
        .spawn()
        .unwrap());
    relay.held.recv_timeout(Duration::from_secs(30)).expect("the CLI reports its command's start");
    crashing.host.kill_daemon();
    relay.release.send(()).unwrap();
    crashing.host.start_daemon();
    assert_agree(&crashing.host, &crashing.sleep_secs, "killed before the start's report");
    let pids = container_processes(&crashing.sleep_secs);
    assert_eq!(pids.len(), 1, "the foreground command runs, once: {pids:?}");
    let pid: i32 = pids.first().unwrap().parse().unwrap();
    let shown = crashing.host.dp_json(&["inspect", "fg"]);
    assert_eq!(shown[0]["State"]["Running"], true, "inspect: {}", shown[0]["State"]);
    assert_eq!(shown[0]["State"]["Pid"], pid, "inspect shows the command's PID: {}", shown[0]["State"]);
    let ps = crashing.host.dp_ok(&["ps", "-a"]);
    assert!(ps.lines().any(|l| l.contains("fg") && l.contains("Up")), "ps -a shows fg up:\n{ps}");

    // The command ends while the daemon is away: the CLI's report waits for it.
    crashing.host.kill_daemon();
    process::signal(pid, nix::sys::signal::Signal::SIGKILL);
    sleep(Duration::from_millis(500));
    crashing.host.start_daemon();
    reap_within(&mut cli.0, Duration::from_secs(30));
    let status = cli.0.wait().unwrap();
    let said = std::fs::read_to_string(&output).unwrap();
    assert_eq!(status.code(), Some(137), "the CLI exits with its command's code: {said}");
    let shown = crashing.host.dp_json(&["inspect", "fg"]);
    let state = &shown[0]["State"];
    assert_eq!(state["Status"], "exited", "inspect: {state}");
    assert_eq!(state["ExitCode"], 137, "the exit code the CLI saw is recorded: {state}");
    assert_agree(&crashing.host, &crashing.sleep_secs, "after the command's end");
    crashing.host.dp_ok(&["rm", "fg"]);
    assert_agree(&crashing.host, &crashing.sleep_secs, "after its removal");
}

/// Foreground `run`s killed at seeded random moments: before the daemon's answer, between
/// the answer and the report of the command's start, or after. After each restart the
/// state and the system agree, wherever the kill left the CLI: refused, or its command
/// running and the container's.
#[test]
fn daemon_killed_during_foreground_runs_leaves_the_state_and_the_system_agreeing() {
    let mut crashing =
        Crashing::start("daemon_killed_during_foreground_runs_leaves_the_state_and_the_system_agreeing");
    let foreground = |crashing: &Crashing, name: &str| {
        Cli(crashing
            .host
            .command(binary())
            .args(["run", "--name", name, "--", "sleep", &crashing.sleep_secs])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap())
    };
    // The window the kills are drawn in: until a foreground run's command is recorded running.
    let started = Instant::now();
    let mut probe = foreground(&crashing, "probe");
    let running = eventually(Duration::from_secs(10), || {
        crashing.host.state().container("probe").is_some_and(|c| c.is_running())
    });
    assert!(running, "a foreground run's command is recorded running");
    let window = started.elapsed();
    crashing.host.dp_ok(&["rm", "-f", "probe"]);
    reap_within(&mut probe.0, Duration::from_secs(10));
    for i in 0..6 {
        let name = format!("c{i}");
        let delay = window.mul_f64(crashing.rng.random_range(0.0..1.0));
        let mut cli = foreground(&crashing, &name);
        sleep(delay);
        crashing.host.kill_daemon();
        crashing.host.start_daemon();
        let context =
            format!("seed {}, foreground run {name} killed after {delay:?} (of {window:?})", crashing.seed);
        assert_agree(&crashing.host, &crashing.sleep_secs, &context);
        // Its command's end (or the refusal of its run) ends the CLI.
        if crashing.host.state().container(&name).is_some() {
            crashing.host.dp_ok(&["rm", "-f", &name]);
        }
        reap_within(&mut cli.0, Duration::from_secs(40));
    }
}
