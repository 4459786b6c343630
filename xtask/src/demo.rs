//! `cargo xtask demo`: the main job end to end, in a host namespace made for the occasion
//! and removed afterwards (also when a step fails): a user network, two containers, one
//! serving HTTP, traffic between them over the eBPF fast path, and the counters proving it.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread::sleep,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

struct DemoHost {
    name: String,
    dir: PathBuf,
    binary: PathBuf,
    daemon: Option<Child>,
}

impl DemoHost {
    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net=/run/netns/{}", self.name))
            .arg("--")
            .arg(program)
            .env("DATAPLANE_SOCKET", self.dir.join("dataplane.sock"))
            .env("DATAPLANE_STATE_DIR", self.dir.join("state"))
            .env("DATAPLANE_BPFFS", self.dir.join("bpffs"))
            .env("DATAPLANE_NETNS_DIR", self.dir.join("netns"));
        command
    }

    /// Shows a CLI command as a user would type it, runs it, and prints its output.
    fn dataplane(&self, args: &[&str]) -> Result<String> {
        println!("\n$ dataplane {}", args.join(" "));
        let out = self
            .command(&self.binary)
            .args(args)
            .stdin(Stdio::null())
            .output()?;
        print!("{}", String::from_utf8_lossy(&out.stdout));
        eprint!("{}", String::from_utf8_lossy(&out.stderr));
        if !out.status.success() {
            bail!("dataplane {} failed", args.join(" "));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for DemoHost {
    fn drop(&mut self) {
        println!("\n== Cleaning up: containers, networks, daemon, namespace");
        let _ = self
            .command(&self.binary)
            .args(["rm", "-f", "web", "client"])
            .output();
        let _ = self
            .command(&self.binary)
            .args(["network", "rm", "demo"])
            .output();
        if let Some(mut daemon) = self.daemon.take() {
            // SAFETY: kill(2) on the daemon we started and have not reaped.
            unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
            let _ = daemon.wait();
        }
        if let Ok(entries) = fs::read_dir(self.dir.join("netns")) {
            for entry in entries.flatten() {
                let _ = Command::new("umount").arg("-l").arg(entry.path()).status();
            }
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.join("bpffs"))
            .status();
        let _ = fs::remove_dir_all(&self.dir);
        println!("done: nothing is left behind.");
    }
}

pub fn run(binary: &Path) -> Result<()> {
    let name = format!("dp-demo-{}", std::process::id());
    let dir = std::env::temp_dir().join(&name);
    fs::create_dir_all(&dir)?;
    println!("== A fresh \"host\" network namespace ({name}) with its own dataplane daemon");
    crate::run_command(Command::new("ip").args(["netns", "add", &name]))?;
    let mut host = DemoHost {
        name,
        dir,
        binary: binary.to_owned(),
        daemon: None,
    };
    let log = fs::File::create(host.dir.join("daemon.log"))?;
    host.daemon = Some(
        host.command(binary)
            .arg("daemon")
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting the daemon")?,
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while !host.dir.join("dataplane.sock").exists() {
        if Instant::now() > deadline {
            bail!(
                "the daemon did not start: {}",
                fs::read_to_string(host.dir.join("daemon.log"))?
            );
        }
        sleep(Duration::from_millis(20));
    }

    println!("\n== Create a network, then two containers on it (one serves HTTP)");
    host.dataplane(&["network", "create", "--subnet", "10.123.0.0/24", "demo"])?;
    host.dataplane(&[
        "run",
        "-d",
        "--name",
        "web",
        "--network",
        "demo",
        "--",
        "python3",
        "-m",
        "http.server",
        "80",
    ])?;
    host.dataplane(&[
        "run",
        "-d",
        "--name",
        "client",
        "--network",
        "demo",
        "--",
        "sleep",
        "600",
    ])?;
    host.dataplane(&["ps"])?;
    host.dataplane(&["network", "inspect", "demo"])?;

    println!("\n== Traffic between them goes through the eBPF programs, not the bridge");
    let serving = Instant::now() + Duration::from_secs(10);
    loop {
        let probe = host
            .command(binary)
            .args([
                "exec",
                "web",
                "--",
                "curl",
                "-sf",
                "-o",
                "/dev/null",
                "http://127.0.0.1/",
            ])
            .output()?;
        if probe.status.success() {
            break;
        }
        if Instant::now() > serving {
            bail!("the HTTP server in web did not come up");
        }
        sleep(Duration::from_millis(100));
    }
    let page = host.dataplane(&[
        "exec",
        "client",
        "--",
        "curl",
        "-s",
        "-m",
        "5",
        "http://10.123.0.2/",
    ])?;
    if !page.contains("Directory listing") {
        bail!("client did not get web's page");
    }
    host.dataplane(&[
        "exec",
        "client",
        "--",
        "ping",
        "-c",
        "3",
        "-i",
        "0.2",
        "10.123.0.2",
    ])?;
    let stats = host.dataplane(&["stats"])?;
    let forwarded = stats
        .lines()
        .find_map(|l| {
            l.strip_prefix("forwarded")
                .and_then(|r| r.split_whitespace().next()?.parse::<u64>().ok())
        })
        .unwrap_or(0);
    println!("\n{forwarded} packets were redirected container to container by the eBPF fast path.");
    if forwarded == 0 {
        bail!("no packet took the fast path");
    }
    Ok(())
}
