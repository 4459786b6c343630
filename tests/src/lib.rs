//! Test harness: a fresh "host" network namespace per test, with its own daemon, state
//! dir, bpffs and container-namespace dir, all removed on drop (also when the test fails).
//! Nothing here touches the root network namespace: the daemon and the CLI run under
//! `nsenter --net` into the host namespace, and every address used lives in namespaces
//! the test made.

pub mod datapath;
pub mod docker;
pub mod hostile;
pub mod hosts;
pub mod runtimes;

use std::{
    fs,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    thread::sleep,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// The `dataplane` binary under test: $DATAPLANE_BIN, else the workspace's debug build.
pub fn binary() -> PathBuf {
    let path = std::env::var_os("DATAPLANE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/dataplane"));
    assert!(
        path.exists(),
        "{} is missing: build it first with `cargo build -p dataplane` (`cargo xtask test` does)",
        path.display()
    );
    path
}

/// The CNI plugin under test, built next to the `dataplane` binary.
pub fn cni_plugin() -> PathBuf {
    let path = binary().with_file_name("dataplane-cni");
    assert!(
        path.exists(),
        "{} is missing: build it first with `cargo build -p dataplane` (`cargo xtask test` does)",
        path.display()
    );
    path
}

fn unique(prefix: &str) -> String {
    format!("{prefix}{}-{:06x}", std::process::id(), rand::random::<u32>() & 0xff_ffff)
}

/// A host namespace with a daemon serving it.
pub struct Host {
    pub name: String,
    pub dir: PathBuf,
    daemon: Option<Child>,
    /// The "outside world" behind the host's uplink, when the test asked for one.
    external: Option<String>,
    /// A child cgroup of the test's own for the daemon's socket hooks (never the root,
    /// which holds every process of the machine).
    pub cgroup: PathBuf,
    /// Environment of the daemon beyond the harness's own (its flags' variables).
    daemon_env: Vec<(String, String)>,
    /// Namespaces a test added (`add_namespace`), removed with the host.
    extra_namespaces: Vec<String>,
}

/// Addresses of the uplink link between the host namespace and the external one.
pub const UPLINK_ADDR: &str = "203.0.113.1";
pub const EXTERNAL_ADDR: &str = "203.0.113.2";
/// The global IPv6 addresses of the uplink and the external namespace
/// (`Host::start_with_ipv6_uplink`).
pub const UPLINK_ADDR6: &str = "2001:db8:71::1";
pub const EXTERNAL_ADDR6: &str = "2001:db8:71::2";

impl Host {
    /// A new host namespace with its daemon started.
    pub fn start() -> Self {
        let mut host = Self::empty().expect("creating the host namespace");
        host.start_daemon();
        host
    }

    /// A new host namespace without a daemon.
    pub fn empty() -> Result<Self> {
        let name = unique("dpt-");
        let dir = std::env::temp_dir().join(format!("dataplane-{name}"));
        fs::create_dir_all(&dir)?;
        run_ok(Command::new("ip").args(["netns", "add", &name]))?;
        let cgroup = dataplane::maps::cgroup2_root()
            .context("no cgroup2 mount in /proc/mounts")?
            .join(format!("dataplane-test-{name}"));
        fs::create_dir_all(&cgroup).with_context(|| format!("creating cgroup {}", cgroup.display()))?;
        let host = Self {
            name,
            dir,
            daemon: None,
            external: None,
            cgroup,
            daemon_env: vec![],
            extra_namespaces: vec![],
        };
        host.sh_ok("ip link set lo up");
        Ok(host)
    }

    /// A new host namespace with an uplink `up0` to an external namespace (the host's
    /// default route), and its daemon started.
    pub fn start_with_external() -> Self {
        Self::start_with_external_and(&[])
    }

    /// As `start_with_external`, with more environment for the daemon (the variables of
    /// its flags, e.g. `DATAPLANE_CONNTRACK_MAX`).
    pub fn start_with_external_and(daemon_env: &[(&str, &str)]) -> Self {
        let mut host = Self::empty_with_external();
        host.daemon_env = daemon_env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        host.start_daemon();
        host
    }

    /// As `start_with_external`, the uplink with a global IPv6 address (and a default IPv6
    /// route through the external namespace) before the daemon starts: NAT66 and ports
    /// published over IPv6 use it.
    pub fn start_with_ipv6_uplink() -> Self {
        Self::start_with_ipv6_uplink_and(&[])
    }

    /// As `start_with_ipv6_uplink`, with more environment for the daemon (as
    /// `start_with_external_and`).
    pub fn start_with_ipv6_uplink_and(daemon_env: &[(&str, &str)]) -> Self {
        let mut host = Self::empty_with_external();
        host.daemon_env = daemon_env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        host.sh_ok(&format!(
            "ip addr add {UPLINK_ADDR6}/64 dev up0 nodad && ip -6 route add default via {EXTERNAL_ADDR6}"
        ));
        host.external_sh_ok(&format!("ip addr add {EXTERNAL_ADDR6}/64 dev eth0 nodad"));
        host.start_daemon();
        host
    }

    /// A dual-stack network (`network create --ipv6`) with these subnets.
    pub fn create_dual_stack_network(&self, name: &str, subnet: &str, subnet6: &str) {
        self.dp_ok(&["network", "create", "--ipv6", "--subnet", subnet, "--subnet", subnet6, name]);
    }

    /// Whether the external namespace fetches `http://ADDR:PORT/` (an IPv6 `addr`
    /// bracketed).
    pub fn fetch_from_outside(&self, addr: &str, port: u16) -> bool {
        self.external_command("curl")
            .args(["-sf", "-m", "3", "-o", "/dev/null", &format!("http://{addr}:{port}/")])
            .stdin(std::process::Stdio::null())
            .status()
            .unwrap()
            .success()
    }

    /// What a detached container wrote so far.
    pub fn container_log(&self, name: &str) -> String {
        let id = self.dp_json(&["inspect", name])[0]["Id"].as_str().unwrap().to_string();
        std::fs::read_to_string(self.dir.join("state/logs").join(format!("{id}.log"))).unwrap_or_default()
    }

    /// A host namespace with the uplink and the external namespace, without a daemon (a
    /// reference to compare ours with, networked by someone else).
    pub fn empty_with_external() -> Self {
        let mut host = Self::empty().expect("creating the host namespace");
        let external = format!("{}-ext", host.name);
        run_ok(Command::new("ip").args(["netns", "add", &external]))
            .expect("creating the external namespace");
        host.external = Some(external.clone());
        host.sh_ok(&format!(
            "ip link add up0 type veth peer name eth0 netns {external} && ip addr add {UPLINK_ADDR}/24 dev up0 \
             && ip link set up0 up && ip route add default via {EXTERNAL_ADDR}"
        ));
        host.external_sh_ok(&format!(
            "ip link set lo up && ip addr add {EXTERNAL_ADDR}/24 dev eth0 && ip link set eth0 up"
        ));
        host
    }

    /// A command in the external namespace.
    pub fn external_command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let external = self.external.as_ref().expect("this host has no external namespace");
        let mut command = Command::new("nsenter");
        command.arg(format!("--net=/run/netns/{external}")).arg("--").arg(program);
        command
    }

    /// A server in the external namespace for the length of a test, its output in
    /// `log_name` under the test's dir; returns once it has a socket the namespace did not
    /// have before (listening, or bound for UDP), once it has exited, or after 10 s. Its
    /// output says nothing reliable: python's is buffered, and a loaded machine can take
    /// more than a second to start one.
    pub fn external_server(
        &self,
        program: impl AsRef<std::ffi::OsStr>,
        args: &[&str],
        log_name: &str,
    ) -> KillOnDrop {
        let log_path = self.dir.join(log_name);
        let log = fs::File::create(&log_path).unwrap();
        let before = self.external_sockets();
        let mut child = self
            .external_command(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        eventually(Duration::from_secs(10), || {
            matches!(child.try_wait(), Ok(Some(_)))
                || self.external_sockets().iter().any(|s| !before.contains(s))
        });
        KillOnDrop(child)
    }

    /// Fetches a page with `curl -6` from `container`, off an HTTP server started for it in
    /// the external namespace on `[EXTERNAL_ADDR6]:8080`; returns the server's log, which
    /// names the client as the outside saw it.
    pub fn fetch_from_outside6(&self, container: &str) -> String {
        let _http = self.external_server(
            "python3",
            &["-m", "http.server", "8080", "--bind", EXTERNAL_ADDR6],
            "http6.log",
        );
        let url = format!("http://[{EXTERNAL_ADDR6}]:8080/");
        stdout_of(self.exec(container, &format!("curl -6 -sf -m 5 -o /dev/null {url}")));
        fs::read_to_string(self.dir.join("http6.log")).unwrap()
    }

    /// A host process listening on TCP `port` for the length of a test, its socket `s`
    /// made by `python_socket` (python, e.g. `s = socket.socket(); s.bind(('0.0.0.0',
    /// 9100))`); returns once `ss` shows it listening, not after a guess of how long python
    /// takes to start on a loaded machine.
    pub fn host_listener(&self, python_socket: &str, port: u16) -> KillOnDrop {
        let script = format!("import socket, time; {python_socket}; s.listen(); time.sleep(120)");
        let child = self.command("python3").args(["-c", &script]).stdin(Stdio::null()).spawn().unwrap();
        let mut holder = KillOnDrop(child);
        let listening = eventually(Duration::from_secs(10), || {
            !self.sh_ok(&format!("ss -Hltn 'sport = :{port}'")).trim().is_empty()
                || matches!(holder.0.try_wait(), Ok(Some(_)))
        });
        assert!(
            listening && matches!(holder.0.try_wait(), Ok(None)),
            "the host process did not listen on port {port}: {python_socket}"
        );
        holder
    }

    /// The external namespace's listening TCP and bound UDP sockets, one line each.
    fn external_sockets(&self) -> Vec<String> {
        self.external_sh_ok("ss -Hlntu").lines().map(str::to_string).collect()
    }

    /// One more namespace for the test (`<host>-<suffix>`), removed with the host.
    pub fn add_namespace(&mut self, suffix: &str) -> String {
        let name = format!("{}-{suffix}", self.name);
        run_ok(Command::new("ip").args(["netns", "add", &name])).expect("creating a namespace");
        self.extra_namespaces.push(name.clone());
        name
    }

    /// Runs a shell script in one of the test's namespaces; returns its output.
    pub fn ns_sh_ok(&self, ns: &str, script: &str) -> String {
        let out = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{ns}"))
            .args(["--", "sh", "-c", script])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "{script}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn external_sh_ok(&self, script: &str) -> String {
        let out = self.external_command("sh").args(["-c", script]).stdin(Stdio::null()).output().unwrap();
        assert!(out.status.success(), "{script}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("dataplane.sock")
    }

    pub fn bpffs(&self) -> PathBuf {
        self.dir.join("bpffs")
    }

    pub fn netns_dir(&self) -> PathBuf {
        self.dir.join("netns")
    }

    /// A command that runs inside the host namespace (mount namespace shared with us).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new("nsenter");
        command.arg(format!("--net=/run/netns/{}", self.name)).arg("--").arg(program);
        self.with_daemon_env(command)
    }

    /// The CLI as a user of this host starts it, from where the caller is: no namespace
    /// to enter first, since the daemon's socket (a path) is all its requests need (a
    /// foreground `run` and `exec` enter the container's namespace by its pin). For
    /// timings as the user sees them.
    pub fn cli(&self) -> Command {
        self.with_daemon_env(Command::new(binary()))
    }

    fn with_daemon_env(&self, mut command: Command) -> Command {
        command
            .env("DATAPLANE_SOCKET", self.socket())
            .env("DATAPLANE_STATE_DIR", self.dir.join("state"))
            .env("DATAPLANE_BPFFS", self.bpffs())
            .env("DATAPLANE_NETNS_DIR", self.netns_dir())
            .env("DATAPLANE_CGROUP", &self.cgroup);
        command
    }

    /// Runs a shell command in the host namespace, as a process of the test's cgroup (where
    /// the daemon's socket hooks are).
    pub fn sh_in_cgroup(&self, script: &str) -> Output {
        let procs = self.cgroup.join("cgroup.procs");
        let wrapped =
            format!("echo $$ > {} && exec sh -c '{}'", procs.display(), script.replace('\'', "'\\''"));
        self.sh(&wrapped)
    }

    pub fn start_daemon(&mut self) {
        assert!(self.daemon.is_none(), "daemon already running");
        let log = fs::File::options().create(true).append(true).open(self.dir.join("daemon.log")).unwrap();
        let mut command = self.command(binary());
        if self.external.is_some() {
            // Names nobody on the host knows go to the external namespace's resolver.
            command.env("DATAPLANE_DNS", EXTERNAL_ADDR);
        }
        command.envs(self.daemon_env.iter().map(|(k, v)| (k, v)));
        let child = command
            .arg("daemon")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting the daemon");
        self.daemon = Some(child);
        // Loading the programs takes seconds, many more on a busy machine.
        let deadline = Instant::now() + Duration::from_secs(60);
        // The socket of a daemon that was killed stays behind: ready is when one answers.
        while std::os::unix::net::UnixStream::connect(self.socket()).is_err() {
            if let Some(status) = self.daemon.as_mut().unwrap().try_wait().unwrap() {
                panic!("daemon exited with {status}: {}", self.daemon_log());
            }
            assert!(Instant::now() < deadline, "daemon did not start: {}", self.daemon_log());
            sleep(Duration::from_millis(20));
        }
    }

    /// Starts a daemon (its extra environment, then `more` over it) that must refuse to
    /// start, and gives what it logged; a daemon still running after a minute fails the
    /// test (and is killed by the PID we started).
    pub fn daemon_fails(&self, more: &[(&str, &str)]) -> String {
        assert!(self.daemon.is_none(), "a daemon runs already");
        let mut child = self
            .command(binary())
            .envs(self.daemon_env.iter().map(|(k, v)| (k, v)))
            .envs(more.iter().copied())
            .arg("daemon")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting the daemon");
        let deadline = Instant::now() + Duration::from_secs(60);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the daemon with {more:?} started; it should have refused");
            }
            sleep(Duration::from_millis(50));
        }
        let out = child.wait_with_output().unwrap();
        assert!(!out.status.success(), "the daemon with {more:?} exited successfully");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// Replaces the daemon's extra environment for its next start.
    pub fn set_daemon_env(&mut self, daemon_env: &[(&str, &str)]) {
        self.daemon_env = daemon_env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    }

    /// The daemon's PID, while it runs.
    pub fn daemon_pid(&self) -> Option<u32> {
        self.daemon.as_ref().map(Child::id)
    }

    pub fn daemon_log(&self) -> String {
        fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default()
    }

    /// Kills the daemon as a crash would (SIGKILL to the PID we started), and reaps it.
    pub fn kill_daemon(&mut self) {
        let mut child = self.daemon.take().expect("no daemon to kill");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// Stops the daemon (SIGTERM to the PID we started) and waits for it.
    pub fn stop_daemon(&mut self) {
        if let Some(mut child) = self.daemon.take() {
            // SAFETY: kill(2) on the PID of a child we spawned and have not reaped yet.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().unwrap().is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                }
                sleep(Duration::from_millis(20));
            }
        }
    }

    /// The daemon's state as its files hold it (what a restart would start from).
    pub fn state(&self) -> dataplane::state::State {
        dataplane::state::StateStore::peek(&self.dir.join("state"))
            .expect("reading the daemon's state files")
            .unwrap_or_default()
    }

    /// Runs the CLI in the host namespace.
    pub fn dp(&self, args: &[&str]) -> Output {
        self.command(binary()).args(args).stdin(Stdio::null()).output().unwrap()
    }

    /// Runs the CLI and expects success; returns its standard output.
    pub fn dp_ok(&self, args: &[&str]) -> String {
        let out = self.dp(args);
        assert!(
            out.status.success(),
            "dataplane {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.daemon_log()
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs the CLI and expects failure; returns its error output.
    pub fn dp_err(&self, args: &[&str]) -> String {
        let out = self.dp(args);
        assert!(!out.status.success(), "dataplane {args:?} should have failed");
        String::from_utf8(out.stderr).unwrap()
    }

    pub fn dp_json(&self, args: &[&str]) -> Value {
        serde_json::from_str(&self.dp_ok(args)).unwrap()
    }

    /// Starts a detached container running `sleep` (long enough for any test).
    pub fn run_sleeper(&self, name: &str, extra: &[&str]) -> String {
        let mut args = vec!["run", "-d", "--name", name];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--", "sleep", "600"]);
        self.dp_ok(&args).trim().to_string()
    }

    /// Starts a detached container serving HTTP on ports 80 and 81 (bound to `::` when
    /// `ipv6`, else to 0.0.0.0), `extra` its `run` flags (`--network`, `-p`); returns once
    /// both ports answer inside it.
    pub fn run_web_on_80_and_81(&self, name: &str, extra: &[&str], ipv6: bool) {
        let bind = if ipv6 { " --bind ::" } else { "" };
        let serve = format!("python3 -m http.server 81{bind} & exec python3 -m http.server 80{bind}");
        let mut args = vec!["run", "-d", "--name", name];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--", "sh", "-c", &serve]);
        self.dp_ok(&args);
        for port in [80, 81] {
            let probe = match ipv6 {
                true => format!("curl -6 -sf -o /dev/null http://[::1]:{port}/"),
                false => format!("curl -sf -o /dev/null http://127.0.0.1:{port}/"),
            };
            assert!(
                eventually(Duration::from_secs(10), || self.exec(name, &probe).status.success()),
                "{name} does not serve port {port}"
            );
        }
    }

    /// The inode of a container's network namespace, read from its pin while it exists.
    pub fn netns_inode_of(&self, container: &str) -> u64 {
        let info = self.dp_json(&["inspect", container]);
        namespace_inode(info[0]["NetworkSettings"]["SandboxKey"].as_str().unwrap())
    }

    pub fn ip_of(&self, container: &str) -> String {
        let info = self.dp_json(&["inspect", container]);
        let networks = info[0]["NetworkSettings"]["Networks"].as_object().unwrap();
        networks.values().next().unwrap()["IPAddress"].as_str().unwrap().to_string()
    }

    /// Runs a shell command inside a container.
    pub fn exec(&self, container: &str, script: &str) -> Output {
        self.command(binary())
            .args(["exec", container, "--", "sh", "-c", script])
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    pub fn ping(&self, container: &str, ip: &str) -> bool {
        self.exec(container, &format!("ping -c 1 -W 1 {ip}")).status.success()
    }

    /// Runs a shell command in the host namespace.
    pub fn sh(&self, script: &str) -> Output {
        self.command("sh").args(["-c", script]).stdin(Stdio::null()).output().unwrap()
    }

    pub fn sh_ok(&self, script: &str) -> String {
        let out = self.sh(script);
        assert!(out.status.success(), "{script}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    /// Names of the links in the host namespace.
    pub fn links(&self) -> Vec<String> {
        self.sh_ok("ip -o link show")
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap().to_string())
            .collect()
    }

    /// Namespaces pinned in this host's namespace dir: the containers', and `dp-host`.
    fn pinned_namespaces(&self) -> Vec<String> {
        fs::read_dir(self.netns_dir())
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default()
    }

    /// Container namespaces pinned in this host's namespace dir.
    pub fn container_namespaces(&self) -> Vec<String> {
        self.pinned_namespaces().into_iter().filter(|n| n != "dp-host").collect()
    }

    /// Entries of a pinned map, read with bpftool.
    pub fn map_entries(&self, map: &str) -> usize {
        let path = self.bpffs().join("maps").join(map);
        let out = run_ok(Command::new("bpftool").args(["-j", "map", "dump", "pinned"]).arg(&path)).unwrap();
        let entries: Value = serde_json::from_slice(&out.stdout).unwrap();
        entries.as_array().map_or(0, Vec::len)
    }

    /// Interfaces the programs know, in both of their tables (the array's empty slots
    /// have network 0).
    pub fn configured_interfaces(&self) -> usize {
        let path = self.bpffs().join("maps").join("INTERFACES_BY_INDEX");
        let out = run_ok(Command::new("bpftool").args(["-j", "map", "dump", "pinned"]).arg(&path)).unwrap();
        let entries: Value = serde_json::from_slice(&out.stdout).unwrap();
        let network = |value: &Value| -> u64 {
            match value {
                // With BTF: the fields by name; without: the bytes, little-endian.
                Value::Object(fields) => fields["network"].as_u64().unwrap(),
                Value::Array(bytes) => bytes[..4]
                    .iter()
                    .rev()
                    .map(|b| u64::from_str_radix(b.as_str().unwrap().trim_start_matches("0x"), 16).unwrap())
                    .fold(0, |acc, b| acc << 8 | b),
                other => panic!("unexpected value {other}"),
            }
        };
        let in_array = entries
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| network(e.get("formatted").map_or(&e["value"], |f| &f["value"])) != 0)
            .count();
        in_array + self.map_entries("INTERFACES")
    }

    /// The datapath counter of one path, summed over CPUs.
    pub fn counter(&self, path: &str) -> u64 {
        let stats = self.dp_ok(&["stats"]);
        stats
            .lines()
            .find_map(|l| {
                let mut cols = l.split_whitespace();
                (cols.next() == Some(path)).then(|| cols.next().unwrap().parse().unwrap())
            })
            .unwrap_or_else(|| panic!("no counter {path} in:\n{stats}"))
    }
}

/// The inode of a namespace file (a pin, or a /proc/PID/ns link), which names the
/// namespace: two files with the same one are the same namespace.
pub fn namespace_inode(path: impl AsRef<Path>) -> u64 {
    let path = path.as_ref();
    fs::metadata(path).unwrap_or_else(|e| panic!("stat {}: {e}", path.display())).ino()
}

/// Processes whose namespace of `kind` (`net`, `pid`, ...) is the one with inode `ino`,
/// as `PID command line`.
pub fn processes_in_namespace(kind: &str, ino: u64) -> Vec<String> {
    let Ok(procs) = fs::read_dir("/proc") else {
        return vec![];
    };
    procs
        .filter_map(|e| e.ok()?.file_name().to_string_lossy().parse::<i32>().ok())
        // A zombie has left its namespaces: its link no longer resolves.
        .filter(|pid| fs::metadata(format!("/proc/{pid}/ns/{kind}")).is_ok_and(|m| m.ino() == ino))
        .map(|pid| {
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            format!("{pid} {}", String::from_utf8_lossy(&cmdline).replace('\0', " ").trim_end())
        })
        .collect()
}

/// A process's PID in each PID namespace from the host's down to its own (NSpid): a
/// container's PID 1 has two, its host PID and 1.
pub fn namespace_pids(pid: u64) -> Vec<String> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("NSpid:")).unwrap();
    line.split_whitespace().skip(1).map(str::to_string).collect()
}

/// Kills processes living in a namespace we created (found by the namespace's inode).
fn kill_processes_in(netns_file: &Path) {
    let Ok(ino) = fs::metadata(netns_file).map(|m| m.ino()) else {
        return;
    };
    for process in processes_in_namespace("net", ino) {
        let pid: i32 = process.split(' ').next().unwrap().parse().unwrap();
        // SAFETY: kill(2); the process lives in a namespace this test created.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if self.daemon.is_some() {
            let _ = self.command(binary()).args(["rm", "-f"]).args(self.container_names()).output();
        }
        self.stop_daemon();
        for ns in self.pinned_namespaces() {
            let path = self.netns_dir().join(ns);
            kill_processes_in(&path);
            let _ = Command::new("umount").arg("-l").arg(&path).status();
        }
        // The daemon makes its pin dir a mount of its own (a host without one has none),
        // and pins its mount template beside it.
        let _ = Command::new("umount").arg("-l").arg(self.netns_dir()).stderr(Stdio::null()).status();
        let template = dataplane::netns::mount_template(&self.netns_dir());
        let _ = Command::new("umount").arg("-l").arg(template).stderr(Stdio::null()).status();
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
        // A test may have removed one of its namespaces itself.
        for ns in self.external.iter().chain(&self.extra_namespaces) {
            let _ = Command::new("ip").args(["netns", "del", ns]).stderr(Stdio::null()).status();
        }
        let _ = Command::new("umount").arg("-l").arg(self.bpffs()).stderr(Stdio::null()).status();
        // Empty once our processes are gone; give their exit a moment.
        for _ in 0..50 {
            if fs::remove_dir(&self.cgroup).is_ok() || !self.cgroup.exists() {
                break;
            }
            sleep(Duration::from_millis(20));
        }
        if std::env::var_os("DATAPLANE_KEEP_TEST_DIR").is_none() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

impl Host {
    fn container_names(&self) -> Vec<String> {
        let out = self.command(binary()).args(["ps", "-a", "--format", "{{.Names}}"]).output();
        out.ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).lines().map(str::to_string).collect())
            .unwrap_or_default()
    }
}

pub fn run_ok(command: &mut Command) -> Result<Output> {
    let out = command.output().with_context(|| format!("running {command:?}"))?;
    if !out.status.success() {
        bail!("{command:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(out)
}

/// A process a test or tool started, killed (by PID) and reaped when dropped.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The standard output of a command that must have succeeded.
pub fn stdout_of(out: Output) -> String {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Now on CLOCK_MONOTONIC, in nanoseconds: one clock for every process of the machine (it
/// has no time namespaces), so that the timestamps of two tools compare.
pub fn monotonic_ns() -> u64 {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

/// Polls `f` until it holds or `timeout` passes.
pub fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        sleep(Duration::from_millis(50));
    }
}
