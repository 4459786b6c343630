//! dockerd 20.10 in a test's host namespace, its networks made by our daemon through
//! Docker's network plugin API. dockerd runs under `nsenter --net` with a data root, an
//! exec root, an API socket, a pidfile and an empty config of the test's own, and without
//! iptables (unless a benchmark's reference asks for Docker's own) or its default bridge; its image is the busybox one built from busybox-static
//! (`runtimes::busybox_rootfs_tar`), imported, never pulled.
//!
//! Docker finds plugins only at global paths (`/run/docker/plugins/NAME.sock`): each test
//! has a plugin name of its own (`DockerPlugin`), whose socket our daemon serves and which
//! goes when the test ends. What dockerd started is stopped by PID on drop, also when the
//! test failed; its mounts, its containers' cgroup parent and its files go with the test.

use std::{
    fs,
    path::PathBuf,
    process::{Child, Command, Output, Stdio},
    thread::sleep,
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{Host, namespace_inode, processes_in_namespace, runtimes};

/// The docker CLI of package docker.io, dockerd's own version.
const DOCKER_CLI: &str = "/usr/bin/docker";

/// The image every container runs.
pub const IMAGE: &str = "busybox:dataplane-test";

/// A plugin name of the test's own and its socket in Docker's plugin dir; the socket
/// (which our daemon serves) goes on drop.
pub struct DockerPlugin {
    pub name: String,
    pub socket: PathBuf,
}

impl DockerPlugin {
    pub fn unique() -> Self {
        let name = format!("dpt{}x{:06x}", std::process::id(), rand::random::<u32>() & 0xff_ffff);
        let socket = PathBuf::from(format!("/run/docker/plugins/{name}.sock"));
        Self { name, socket }
    }

    /// The daemon's environment that makes it serve this plugin.
    pub fn daemon_env(&self) -> (&'static str, &str) {
        ("DATAPLANE_DOCKER_PLUGIN", self.socket.to_str().unwrap())
    }

    /// Sends one of Docker's plugin calls (`NetworkDriver.Join`) as dockerd does, for
    /// the moments dockerd cannot be stopped at; returns the answer, which must be no
    /// error.
    pub fn call(&self, call: &str, body: Value) -> Value {
        let out = Command::new("curl")
            .args(["-s", "-m", "10", "-X", "POST", "--unix-socket"])
            .arg(&self.socket)
            .args(["-d", &body.to_string(), &format!("http://plugin/{call}")])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let answer = runtimes::expect_ok(&format!("{call} {body}"), out);
        let answer: Value = serde_json::from_str(&answer).unwrap_or_else(|e| panic!("{call}: {e}: {answer}"));
        assert!(answer.get("Err").is_none(), "{call} {body}: {answer}");
        answer
    }
}

impl Drop for DockerPlugin {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.socket);
    }
}

/// The cgroup (in every hierarchy) dockerd puts the test's containers under, instead of
/// the machine-wide `docker`.
fn cgroup_parent(netns: &str) -> String {
    format!("dataplane-test-{netns}-docker")
}

/// Removes the containers' cgroup parent from every hierarchy, its children first (empty
/// once the containers are gone).
fn remove_cgroup_parent(netns: &str) {
    let Ok(hierarchies) = fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    for hierarchy in hierarchies.filter_map(|h| h.ok()) {
        let parent = hierarchy.path().join(cgroup_parent(netns));
        if let Ok(children) = fs::read_dir(&parent) {
            for child in children.filter_map(|c| c.ok()).filter(|c| c.path().is_dir()) {
                let _ = fs::remove_dir(child.path());
            }
        }
        let _ = fs::remove_dir(&parent);
    }
}

/// dockerd in a host namespace.
pub struct Dockerd {
    /// The host's namespace.
    netns: String,
    dir: PathBuf,
    daemon: Option<Child>,
}

/// How dockerd networks its containers besides the plugins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Firewall {
    /// No iptables rule (`--iptables=false`): the plugin's networks only.
    Off,
    /// Docker's own: iptables rules and docker-proxy for `-p` on its bridge driver's
    /// networks (a reference to compare ours with).
    Iptables,
}

impl Dockerd {
    /// dockerd in `host`'s namespace without iptables, the busybox image imported.
    pub fn start(host: &Host) -> Self {
        Self::start_with(host, Firewall::Off)
    }

    /// dockerd in `host`'s namespace, with or without its iptables rules.
    pub fn start_with(host: &Host, firewall: Firewall) -> Self {
        let dir = host.dir.join("docker");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("daemon.json"), "{}").unwrap();
        let log = fs::File::create(dir.join("dockerd.log")).unwrap();
        let daemon = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", host.name))
            .args(["--", "dockerd", "--config-file"])
            .arg(dir.join("daemon.json"))
            .arg("--data-root")
            .arg(dir.join("data"))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("--host")
            .arg(format!("unix://{}", dir.join("docker.sock").display()))
            .arg("--pidfile")
            .arg(dir.join("docker.pid"))
            .arg(format!("--iptables={}", firewall == Firewall::Iptables))
            .args(["--ip6tables=false", "--bridge=none"])
            .arg(format!("--cgroup-parent=/{}", cgroup_parent(&host.name)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting dockerd (package docker.io; `cargo xtask setup` installs it)");
        let mut docker = Self { netns: host.name.clone(), dir, daemon: Some(daemon) };
        docker.wait_until_ready();
        let tar = runtimes::busybox_rootfs_tar();
        docker.ok(&["import", tar.to_str().unwrap(), IMAGE]);
        docker
    }

    fn wait_until_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if self.output(&["version"]).status.success() {
                return;
            }
            if let Some(status) = self.daemon.as_mut().unwrap().try_wait().unwrap() {
                panic!("dockerd exited with {status}: {}", self.log());
            }
            assert!(Instant::now() < deadline, "dockerd did not start within 60 s: {}", self.log());
            sleep(Duration::from_millis(100));
        }
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default()
    }

    /// The docker CLI of dockerd's package (another on the PATH may refuse what needs a
    /// newer API than 20.10's, such as `--mac-address` with `--network`), in the host's
    /// namespace, talking to this dockerd.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = runtimes::in_host_namespace(&self.netns, DOCKER_CLI);
        command
            .args(args)
            .env("DOCKER_HOST", format!("unix://{}", self.dir.join("docker.sock").display()))
            .env("DOCKER_CONFIG", self.dir.join("cli"))
            .stdin(Stdio::null());
        command
    }

    pub fn output(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Runs the CLI and expects success; returns its standard output, trimmed.
    pub fn ok(&self, args: &[&str]) -> String {
        runtimes::expect_ok(&format!("docker {args:?}"), self.output(args)).trim().to_string()
    }

    /// Runs the CLI and expects failure; returns its error output.
    pub fn err(&self, args: &[&str]) -> String {
        let out = self.output(args);
        assert!(
            !out.status.success(),
            "docker {args:?} should have failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stderr).unwrap()
    }

    /// A detached container of the busybox image; returns its ID.
    pub fn run(&self, name: &str, network: &str, extra: &[&str], command: &[&str]) -> String {
        let mut args = vec!["run", "-d", "--name", name, "--network", network];
        args.extend_from_slice(extra);
        args.push(IMAGE);
        args.extend_from_slice(command);
        self.ok(&args)
    }

    pub fn exec(&self, name: &str, script: &str) -> Output {
        self.output(&["exec", name, "sh", "-c", script])
    }

    /// A container's address on a network.
    pub fn ip_of(&self, name: &str, network: &str) -> String {
        let format = format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}");
        self.ok(&["inspect", "-f", &format, name])
    }

    /// Docker's ID of a network.
    pub fn network_id(&self, network: &str) -> String {
        self.ok(&["network", "inspect", "-f", "{{.Id}}", network])
    }

    /// The name of our network that stands for a network of Docker's.
    pub fn dataplane_network(&self, network: &str) -> String {
        format!("docker-{}", &self.network_id(network)[..12])
    }

    pub fn inspect(&self, name: &str) -> Value {
        serde_json::from_str(&self.ok(&["inspect", name])).unwrap()
    }

    fn daemon_pid(&self) -> Option<i32> {
        self.daemon.as_ref().map(|d| d.id() as i32)
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        // Containers first, while our daemon still answers their Leave and DeleteEndpoint.
        let ids = self.output(&["ps", "-aq"]);
        let ids: Vec<String> =
            String::from_utf8_lossy(&ids.stdout).split_whitespace().map(String::from).collect();
        if !ids.is_empty() {
            let mut args = vec!["rm", "-f"];
            args.extend(ids.iter().map(String::as_str));
            let _ = self.output(&args);
        }
        let _ = self.output(&["network", "prune", "-f"]);
        if let (Some(pid), Some(mut daemon)) = (self.daemon_pid(), self.daemon.take()) {
            // SAFETY: kill(2) on the PID of the dockerd we spawned and have not reaped.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(20);
            while daemon.try_wait().unwrap().is_none() {
                if Instant::now() > deadline {
                    let _ = daemon.kill();
                    let _ = daemon.wait();
                    break;
                }
                sleep(Duration::from_millis(50));
            }
        }
        // What dockerd left running had it died: its containerd and the shims, in the
        // host's namespace and started from our dir.
        let dir = self.dir.to_string_lossy().into_owned();
        let netns = format!("/run/netns/{}", self.netns);
        if fs::metadata(&netns).is_ok() {
            for process in processes_in_namespace("net", namespace_inode(&netns)) {
                if process.contains(&dir) {
                    let pid: i32 = process.split(' ').next().unwrap().parse().unwrap();
                    // SAFETY: kill(2) on a process dockerd started for this test (its
                    // command line names the test's dir).
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        }
        for mount in runtimes::mounts_under(&self.dir) {
            let _ = Command::new("umount").arg("-l").arg(mount).status();
        }
        remove_cgroup_parent(&self.netns);
    }
}
