//! Real container runtimes in a test's host namespace: podman 4.3 with its CNI backend and
//! containerd 1.6 with `ctr run --cni`, driving the CNI plugins of a conflist the test
//! gives (ours, `dataplane`, or Debian's reference plugins). Each runtime gets its
//! configuration, storage and state under the host's dir and runs under `nsenter --net`
//! into the host namespace, never in the root one; containers come from a busybox image
//! built here from busybox-static, never from a registry. What a runtime started is
//! stopped by PID on drop, also when the test failed.
//!
//! Global paths: ctr reads its networks only from `/etc/cni/net.d` and its plugins only
//! from `/opt/cni/bin`, and containerd 1.6 keeps its shims' sockets in `/run/containerd`
//! whatever its config says. So containerd and every ctr call run in a mount namespace of
//! their own, made when containerd starts, where the test's dirs are mounted over those
//! paths: nothing of theirs lands on the machine. podman cannot run that way (the plugin
//! and the daemon must see the namespace pins it makes in `/run/netns`); it keeps its own
//! per-container files where it always does (`/run/netns/netns-*`, `/var/lib/cni/results`,
//! `/run/runc`) and removes them with the container.

use std::{
    fs,
    os::unix::fs::{MetadataExt, symlink},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::OnceLock,
    thread::sleep,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use serde_json::{Value, json};

use crate::{Host, cni_plugin, processes_in_namespace, run_ok};

/// The image every runtime runs, built from busybox-static by `busybox_image`.
pub const BUSYBOX_IMAGE: &str = "localhost/busybox:dataplane-test";

/// The static busybox of Debian's busybox-static: it runs in an image with nothing else.
const BUSYBOX: &str = "/bin/busybox";

/// Per-process dirs in the temp dir holding the built image.
const IMAGE_DIR_PREFIX: &str = "dataplane-busybox-";

/// The busybox image as the runtimes import it: a root file system tar (`podman import`)
/// and a docker-archive of one layer (`ctr images import`).
struct BusyboxImage {
    rootfs_tar: PathBuf,
    docker_archive: PathBuf,
}

/// The image, built once per test process into a temp dir of that process, which goes
/// when the process exits (and, should it be killed, when the next test run starts).
fn busybox_image() -> &'static BusyboxImage {
    static IMAGE: OnceLock<BusyboxImage> = OnceLock::new();
    IMAGE.get_or_init(|| {
        build_busybox_image(&image_dir())
            .expect("building the busybox image from /bin/busybox (package busybox-static)")
    })
}

/// The busybox image's root file system as a tar, for `docker import` too.
pub fn busybox_rootfs_tar() -> &'static Path {
    &busybox_image().rootfs_tar
}

fn image_dir() -> PathBuf {
    std::env::temp_dir().join(format!("{IMAGE_DIR_PREFIX}{}", std::process::id()))
}

extern "C" fn remove_image_dir() {
    let _ = fs::remove_dir_all(image_dir());
}

/// Image dirs of test processes that are gone (killed before their exit handler ran).
fn remove_stale_image_dirs() {
    let Ok(entries) = fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.filter_map(|e| e.ok()) {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix(IMAGE_DIR_PREFIX).and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

fn build_busybox_image(dir: &Path) -> Result<BusyboxImage> {
    remove_stale_image_dirs();
    let _ = fs::remove_dir_all(dir);
    // SAFETY: atexit(3) with a function that takes nothing and only removes a directory.
    unsafe { libc::atexit(remove_image_dir) };
    let rootfs = dir.join("rootfs");
    for sub in ["bin", "etc", "proc", "sys", "dev", "tmp", "root", "www"] {
        fs::create_dir_all(rootfs.join(sub))?;
    }
    fs::copy(BUSYBOX, rootfs.join("bin/busybox")).with_context(|| format!("copying {BUSYBOX}"))?;
    // What `busybox --install -s` does, without a chroot: a link per applet, where the
    // applet expects to live.
    let applets = run_ok(Command::new(BUSYBOX).arg("--list-full"))?;
    for applet in String::from_utf8(applets.stdout)?.lines() {
        let path = rootfs.join(applet);
        if path.symlink_metadata().is_err() {
            fs::create_dir_all(path.parent().context("an applet path has a parent")?)?;
            symlink("/bin/busybox", &path)?;
        }
    }
    fs::write(rootfs.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n")?;
    fs::write(rootfs.join("etc/group"), "root:x:0:\n")?;

    let rootfs_tar = dir.join("rootfs.tar");
    run_ok(
        Command::new("tar")
            .arg("-C")
            .arg(&rootfs)
            .args(["--owner=0", "--group=0", "-cf"])
            .arg(&rootfs_tar)
            .arg("."),
    )?;

    // A docker-archive: the layer, an image config naming it by digest, and a manifest.
    let archive = dir.join("docker-archive");
    fs::create_dir_all(&archive)?;
    fs::copy(&rootfs_tar, archive.join("layer.tar"))?;
    let sum = run_ok(Command::new("sha256sum").arg(archive.join("layer.tar")))?;
    let digest =
        String::from_utf8(sum.stdout)?.split_whitespace().next().context("sha256sum output")?.to_string();
    let config = json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{digest}")]},
    });
    fs::write(archive.join("config.json"), config.to_string())?;
    let manifest = json!([{"Config": "config.json", "RepoTags": [BUSYBOX_IMAGE], "Layers": ["layer.tar"]}]);
    fs::write(archive.join("manifest.json"), manifest.to_string())?;
    let docker_archive = dir.join("busybox-docker-archive.tar");
    run_ok(Command::new("tar").arg("-C").arg(&archive).arg("-cf").arg(&docker_archive).args([
        "manifest.json",
        "config.json",
        "layer.tar",
    ]))?;
    Ok(BusyboxImage { rootfs_tar, docker_archive })
}

/// The host's CNI plugin root: `<root>/cni/bin/dataplane` links to the plugin under test,
/// so the root can stand in for `/opt` (ctr) and its `cni/bin` be podman's plugin dir.
fn plugin_root(host: &Host) -> PathBuf {
    let root = host.dir.join("cni-opt");
    let bin = root.join("cni/bin");
    if !bin.exists() {
        fs::create_dir_all(&bin).unwrap();
        symlink(cni_plugin(), bin.join("dataplane")).unwrap();
    }
    root
}

/// A network of our plugin, as docs/runtimes.md tells users to write it: created from `subnet`
/// on first use, the daemon reached at the test host's socket.
pub fn dataplane_conflist(host: &Host, network: &str, subnet: &str) -> Value {
    json!({
        "cniVersion": "1.0.0",
        "name": network,
        "plugins": [{
            "type": "dataplane",
            "network": network,
            "subnet": subnet,
            "socket": host.socket(),
            "capabilities": {"portMappings": true, "ips": true, "mac": true, "aliases": true},
        }],
    })
}

fn write_conflist(dir: &Path, file_name: &str, conflist: &Value) {
    fs::create_dir_all(dir).unwrap();
    fs::write(dir.join(file_name), serde_json::to_string_pretty(conflist).unwrap()).unwrap();
}

/// The standard output of a runtime's command that must have succeeded.
pub(crate) fn expect_ok(what: &str, out: Output) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Mounts under `dir` in our mount namespace, deepest first.
pub(crate) fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut mounts: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(PathBuf::from)
        .filter(|m| m.starts_with(dir))
        .collect();
    mounts.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    mounts
}

/// A command in a test's host namespace (as `Host::command`, which a runtime cannot
/// borrow: tests restart the host's daemon under it).
pub(crate) fn in_host_namespace(netns: &str, program: &str) -> Command {
    let mut command = Command::new("nsenter");
    command.arg(format!("--net=/run/netns/{netns}")).arg("--").arg(program);
    command
}

/// podman with the CNI backend, its networks the conflists of the test.
pub struct Podman {
    /// The host's namespace.
    netns: String,
    dir: PathBuf,
}

impl Podman {
    /// podman for `host`, with `conflists` as its networks and the busybox image imported.
    pub fn start(host: &Host, conflists: &[Value]) -> Self {
        let dir = host.dir.join("podman");
        let networks = dir.join("networks");
        for conflist in conflists {
            let name = conflist["name"].as_str().expect("a conflist has a name");
            write_conflist(&networks, &format!("{name}.conflist"), conflist);
        }
        let tmp = dir.join("tmp");
        fs::create_dir_all(&tmp).unwrap();
        let plugins = plugin_root(host).join("cni/bin");
        // runc, not crun (which refuses this machine's cgroup layout); ulimits within the
        // hard limits (podman's defaults exceed them and runc fails); events in a file of
        // ours (no journald).
        let containers_conf = format!(
            r#"[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{events}"
runtime = "runc"
tmp_dir = "{tmp}"

[network]
network_backend = "cni"
network_config_dir = "{networks}"
cni_plugin_dirs = ["{plugins}", "/usr/lib/cni"]
"#,
            events = dir.join("events.log").display(),
            tmp = tmp.display(),
            networks = networks.display(),
            plugins = plugins.display(),
        );
        fs::write(dir.join("containers.conf"), containers_conf).unwrap();
        // vfs: plain copies, no overlay mounts to leak and no dependence on the file
        // system under the temp dir (a busybox layer is 2 MB).
        let storage_conf = format!(
            "[storage]\ndriver = \"vfs\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n",
            dir.join("graph").display(),
            dir.join("run").display()
        );
        fs::write(dir.join("storage.conf"), storage_conf).unwrap();
        let podman = Self { netns: host.name.clone(), dir };
        let image = busybox_image();
        podman.ok(&["import", image.rootfs_tar.to_str().unwrap(), BUSYBOX_IMAGE]);
        podman
    }

    /// `podman ARGS...` in the host namespace, with the test's configuration.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = in_host_namespace(&self.netns, "podman");
        command
            .args(args)
            .env("CONTAINERS_CONF", self.dir.join("containers.conf"))
            .env("CONTAINERS_STORAGE_CONF", self.dir.join("storage.conf"))
            // podman import stages layers in $TMPDIR (/var/tmp by default).
            .env("TMPDIR", self.dir.join("tmp"))
            .stdin(Stdio::null());
        command
    }

    pub fn output(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Runs podman and expects success; returns its standard output.
    pub fn ok(&self, args: &[&str]) -> String {
        expect_ok(&format!("podman {args:?}"), self.output(args))
    }

    /// Starts a detached container from the busybox image on `network`; returns its ID.
    pub fn run(&self, name: &str, network: &str, extra: &[&str], command: &[&str]) -> String {
        let mut args = vec!["run", "-d", "--name", name, "--network", network];
        args.extend_from_slice(extra);
        args.push(BUSYBOX_IMAGE);
        args.extend_from_slice(command);
        self.ok(&args).trim().to_string()
    }

    /// Removes a container at once (busybox as PID 1 ignores SIGTERM: podman would wait
    /// 10 s for it).
    pub fn rm(&self, name: &str) {
        self.ok(&["rm", "-f", "-t", "0", name]);
    }

    /// Runs a shell script inside a container.
    pub fn exec(&self, name: &str, script: &str) -> Output {
        self.output(&["exec", name, "sh", "-c", script])
    }

    pub fn network_rm(&self, network: &str) {
        self.ok(&["network", "rm", network]);
    }

    pub fn inspect(&self, name: &str) -> Value {
        serde_json::from_str(&self.ok(&["inspect", name])).unwrap()
    }

    /// The container's address on `network`, as podman recorded it from the plugin's result.
    pub fn ip_of(&self, name: &str, network: &str) -> String {
        let info = self.inspect(name);
        let address = &info[0]["NetworkSettings"]["Networks"][network]["IPAddress"];
        address.as_str().unwrap_or_else(|| panic!("{name} has no address on {network}: {info}")).to_string()
    }

    /// The namespace pin podman made for a container (`/run/netns/netns-<uuid>`).
    pub fn sandbox_of(&self, name: &str) -> String {
        self.inspect(name)[0]["NetworkSettings"]["SandboxKey"].as_str().unwrap().to_string()
    }

    /// PIDs recorded in podman's run dir: conmon's and each container's PID 1.
    fn recorded_pids(&self) -> Vec<i32> {
        let containers = self.dir.join("run/vfs-containers");
        let Ok(entries) = fs::read_dir(containers) else {
            return vec![];
        };
        entries
            .filter_map(|e| e.ok())
            .flat_map(|e| ["conmon.pid", "pidfile"].map(|f| e.path().join("userdata").join(f)))
            .filter_map(|f| fs::read_to_string(f).ok()?.trim().parse().ok())
            .collect()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.output(&["rm", "-a", "-f", "-t", "0"]);
        // Whatever podman failed to stop: conmon and the containers it started for us.
        for pid in self.recorded_pids() {
            // SAFETY: kill(2) on a PID podman recorded in this test's run dir.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        // A container podman could not clean up keeps its /dev/shm mount in our dir.
        for mount in mounts_under(&self.dir) {
            let _ = Command::new("umount").arg("-l").arg(mount).status();
        }
    }
}

/// containerd with ctr, in a mount namespace of their own where `/etc/cni/net.d` is the
/// test's conflist dir, `/opt` the host's plugin root, and `/run` and `/var/lib` are
/// empty tmpfs (shim sockets, runc state, libcni's result cache).
pub struct Containerd {
    /// The host's namespace.
    netns: String,
    dir: PathBuf,
    daemon: Option<Child>,
    /// ctr's namespace, also the cgroup (`/<namespace>/<container>`) runc puts containers in.
    namespace: String,
    /// The foreground `ctr run --rm --cni` of each container: only it calls DEL, when the
    /// container's task exits.
    runs: Vec<(String, Child)>,
}

impl Containerd {
    /// containerd for `host`, `conflist` the only network ctr sees, the busybox image imported.
    pub fn start(host: &Host, conflist: &Value) -> Self {
        for mount_point in ["/etc/cni/net.d", "/opt"] {
            assert!(
                Path::new(mount_point).is_dir(),
                "{mount_point} is missing: ctr's conflist dir and plugin root are mounted there \
                 (package podman makes /etc/cni/net.d; `cargo xtask setup` installs it)"
            );
        }
        let dir = host.dir.join("containerd");
        let net_d = dir.join("net.d");
        write_conflist(&net_d, "10-test.conflist", conflist);
        let plugins = plugin_root(host);
        let config = format!(
            r#"version = 2
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = "{socket}"

[ttrpc]
  address = "{socket}.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "{opt}"
"#,
            root = dir.join("root").display(),
            state = dir.join("state").display(),
            socket = dir.join("containerd.sock").display(),
            opt = dir.join("opt").display(),
        );
        fs::write(dir.join("config.toml"), config).unwrap();
        let script = format!(
            "mount -t tmpfs -o mode=0755 dataplane-test /run && mount -t tmpfs -o mode=0755 dataplane-test /var/lib \
             && mount --bind {net_d} /etc/cni/net.d && mount --bind {plugins} /opt \
             && exec containerd --config {config}",
            net_d = net_d.display(),
            plugins = plugins.display(),
            config = dir.join("config.toml").display(),
        );
        let log = fs::File::create(dir.join("containerd.log")).unwrap();
        let daemon = in_host_namespace(&host.name, "unshare")
            .args(["--mount", "--propagation", "private", "--", "sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting containerd");
        let mut containerd = Self {
            netns: host.name.clone(),
            dir,
            daemon: Some(daemon),
            namespace: host.name.clone(),
            runs: vec![],
        };
        containerd.wait_for_socket();
        let image = busybox_image();
        containerd.ok(&[
            "images",
            "import",
            "--snapshotter",
            "native",
            image.docker_archive.to_str().unwrap(),
        ]);
        containerd
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default()
    }

    fn wait_for_socket(&mut self) {
        let socket = self.dir.join("containerd.sock");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !socket.exists() {
            if let Some(status) = self.daemon.as_mut().unwrap().try_wait().unwrap() {
                panic!("containerd exited with {status}: {}", self.log());
            }
            assert!(Instant::now() < deadline, "containerd did not start: {}", self.log());
            sleep(Duration::from_millis(20));
        }
    }

    fn daemon_pid(&self) -> u32 {
        self.daemon.as_ref().expect("containerd runs").id()
    }

    /// `ctr ARGS...` in the host namespace and containerd's mount namespace (CNI plugins
    /// make their links in the caller's network namespace).
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net=/run/netns/{}", self.netns))
            .arg(format!("--mount=/proc/{}/ns/mnt", self.daemon_pid()))
            .arg("--")
            .arg("ctr")
            .arg("--address")
            .arg(self.dir.join("containerd.sock"))
            .args(["--namespace", &self.namespace])
            .args(args)
            .stdin(Stdio::null());
        command
    }

    pub fn output(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Runs ctr and expects success; returns its standard output.
    pub fn ok(&self, args: &[&str]) -> String {
        expect_ok(&format!("ctr {args:?}"), self.output(args))
    }

    /// Starts a container from the busybox image with `--cni`, in the foreground of a ctr
    /// of ours; returns once its task runs (ctr starts it after ADD).
    pub fn run(&mut self, name: &str, command: &[&str]) {
        let log = fs::File::create(self.dir.join(format!("run-{name}.log"))).unwrap();
        let mut args = vec!["run", "--rm", "--cni", "--snapshotter", "native", BUSYBOX_IMAGE, name];
        args.extend_from_slice(command);
        let mut run = self.command(&args).stdout(log.try_clone().unwrap()).stderr(log).spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.task_running(name) {
            if let Some(status) = run.try_wait().unwrap() {
                let log = fs::read_to_string(self.dir.join(format!("run-{name}.log"))).unwrap_or_default();
                panic!("ctr run {name} exited with {status}: {log}");
            }
            assert!(Instant::now() < deadline, "{name}'s task did not start: {}", self.log());
            sleep(Duration::from_millis(50));
        }
        self.runs.push((name.to_string(), run));
    }

    fn task_running(&self, name: &str) -> bool {
        let out = self.output(&["task", "ls"]);
        String::from_utf8_lossy(&out.stdout).lines().any(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            cols.first() == Some(&name) && cols.get(2) == Some(&"RUNNING")
        })
    }

    /// Runs a shell script inside a container.
    pub fn exec(&self, name: &str, script: &str) -> Output {
        let exec_id = format!("exec-{:08x}", rand::random::<u32>());
        self.output(&["task", "exec", "--exec-id", &exec_id, name, "sh", "-c", script])
    }

    /// The container's IPv4 address on `eth0`, read inside it (ctr records none).
    pub fn ip_of(&self, name: &str) -> String {
        let out = expect_ok("ip addr in the container", self.exec(name, "ip -o -4 addr show dev eth0"));
        let cidr = out.split_whitespace().skip_while(|w| *w != "inet").nth(1);
        cidr.and_then(|c| c.split('/').next())
            .unwrap_or_else(|| panic!("{name} has no IPv4 address on eth0: {out}"))
            .to_string()
    }

    /// Kills a container's task; its ctr run then calls DEL, removes the container and
    /// exits (with the task's status, 137).
    pub fn stop(&mut self, name: &str) {
        let index = self.runs.iter().position(|(n, _)| n == name).expect("a container this test ran");
        let (_, mut run) = self.runs.remove(index);
        let _ = self.output(&["task", "kill", "--signal", "KILL", name]);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if run.try_wait().unwrap().is_some() {
                return;
            }
            if Instant::now() > deadline {
                let _ = run.kill();
                let _ = run.wait();
                panic!("ctr run {name} did not end after its task was killed: {}", self.log());
            }
            sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        for (name, mut run) in std::mem::take(&mut self.runs) {
            let _ = self.output(&["task", "kill", "--signal", "KILL", &name]);
            let deadline = Instant::now() + Duration::from_secs(10);
            while run.try_wait().ok().flatten().is_none() {
                if Instant::now() > deadline {
                    let _ = run.kill();
                    let _ = run.wait();
                    break;
                }
                sleep(Duration::from_millis(50));
            }
        }
        let Some(mut daemon) = self.daemon.take() else {
            return;
        };
        let mount_ns = fs::metadata(format!("/proc/{}/ns/mnt", daemon.id())).map(|m| m.ino());
        // SAFETY: kill(2) on the PID of the containerd we spawned and have not reaped.
        unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while daemon.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = daemon.kill();
                let _ = daemon.wait();
                break;
            }
            sleep(Duration::from_millis(20));
        }
        // Shims that outlived it: they live in the mount namespace our containerd made.
        if let Ok(ino) = mount_ns {
            for process in processes_in_namespace("mnt", ino) {
                let pid: i32 = process.split(' ').next().unwrap().parse().unwrap();
                // SAFETY: kill(2); the process lives in a namespace this test created.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        // runc removes a container's cgroups, not the namespace's dir above them.
        if let Ok(hierarchies) = fs::read_dir("/sys/fs/cgroup") {
            for hierarchy in hierarchies.filter_map(|e| e.ok()) {
                let _ = fs::remove_dir(hierarchy.path().join(&self.namespace));
            }
        }
    }
}

/// Files of libcni's result cache (podman's, in /var/lib/cni/results) for a container.
pub fn cni_result_cache(container_id: &str) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir("/var/lib/cni/results") else {
        return vec![];
    };
    entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().contains(container_id))
        .collect()
}
