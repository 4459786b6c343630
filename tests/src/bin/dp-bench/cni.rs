//! Scenario 8, the CNI plugin as a runtime runs it: ADD and DEL through `dataplane-cni`
//! (a process per call, talking to our daemon) against the reference plugins a runtime
//! would chain instead (Debian's containernetworking-plugins: `bridge` with `host-local`
//! IPAM, then `portmap`), each pod publishing one port, and the time from the start of
//! ADD until the new pod's first ping of a pod already there gets its answer.

use std::{
    io::Write,
    path::Path,
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context, Result, bail};
use dataplane_tests::Host;
use serde_json::{Value, json};

use super::{Cleanup, Record, check_interrupt, in_ns, netns_path, sh_in, timing_record};

/// Where Debian's reference plugins live.
const REFERENCE_PLUGINS: &str = "/usr/lib/cni";

/// One pod of one side: its namespace and the plugin chain's cached result.
struct Pod {
    ns: String,
    result: Value,
}

/// Runs one CNI call of `plugin` in the namespace `ns` (where runtimes run plugins):
/// the `CNI_*` variables and the config on stdin; returns what it printed.
fn call(plugin: &Path, ns: &str, command: &str, id: &str, pod_ns: &str, config: &Value) -> Result<Value> {
    let mut child = in_ns(&netns_path(ns), plugin)
        .env_clear()
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", id)
        .env("CNI_NETNS", netns_path(pod_ns))
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", REFERENCE_PLUGINS)
        // The reference plugins call iptables, which needs a PATH.
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {}", plugin.display()))?;
    child.stdin.take().context("plugin stdin")?.write_all(config.to_string().as_bytes())?;
    let out = child.wait_with_output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("{} {command} failed: {stdout} {}", plugin.display(), String::from_utf8_lossy(&out.stderr));
    }
    Ok(if stdout.trim().is_empty() { Value::Null } else { serde_json::from_str(&stdout)? })
}

fn with(mut config: Value, key: &str, value: Value) -> Value {
    config[key] = value;
    config
}

/// A side under test: how it adds and deletes a pod, in the namespace its plugins run in.
trait Side {
    fn add(&self, id: &str, pod_ns: &str, host_port: u16) -> Result<Value>;
    fn del(&self, id: &str, pod: &Pod, host_port: u16) -> Result<()>;
}

struct Ours<'a> {
    host: &'a Host,
    plugin: std::path::PathBuf,
    config: Value,
}

impl Ours<'_> {
    fn config_for(&self, host_port: u16) -> Value {
        with(
            self.config.clone(),
            "runtimeConfig",
            json!({"portMappings": [{"hostPort": host_port, "containerPort": 80, "protocol": "tcp"}]}),
        )
    }
}

impl Side for Ours<'_> {
    fn add(&self, id: &str, pod_ns: &str, host_port: u16) -> Result<Value> {
        call(&self.plugin, &self.host.name, "ADD", id, pod_ns, &self.config_for(host_port))
    }

    fn del(&self, id: &str, pod: &Pod, host_port: u16) -> Result<()> {
        call(&self.plugin, &self.host.name, "DEL", id, &pod.ns, &self.config_for(host_port)).map(drop)
    }
}

/// The reference chain, as libcni runs a conflist: ADD through bridge then portmap (with
/// bridge's result as prevResult), DEL in the reverse order.
struct Reference {
    ns: String,
    bridge: Value,
    portmap: Value,
}

impl Reference {
    fn portmap_for(&self, host_port: u16, prev: &Value) -> Value {
        let config = with(
            self.portmap.clone(),
            "runtimeConfig",
            json!({"portMappings": [{"hostPort": host_port, "containerPort": 80, "protocol": "tcp"}]}),
        );
        with(config, "prevResult", prev.clone())
    }
}

impl Side for Reference {
    fn add(&self, id: &str, pod_ns: &str, host_port: u16) -> Result<Value> {
        let plugins = Path::new(REFERENCE_PLUGINS);
        let bridged = call(&plugins.join("bridge"), &self.ns, "ADD", id, pod_ns, &self.bridge)?;
        call(&plugins.join("portmap"), &self.ns, "ADD", id, pod_ns, &self.portmap_for(host_port, &bridged))
    }

    fn del(&self, id: &str, pod: &Pod, host_port: u16) -> Result<()> {
        let plugins = Path::new(REFERENCE_PLUGINS);
        call(
            &plugins.join("portmap"),
            &self.ns,
            "DEL",
            id,
            &pod.ns,
            &self.portmap_for(host_port, &pod.result),
        )?;
        let bridge = with(self.bridge.clone(), "prevResult", pod.result.clone());
        call(&plugins.join("bridge"), &self.ns, "DEL", id, &pod.ns, &bridge).map(drop)
    }
}

/// The address a result gave the pod, without its prefix.
fn address_of(result: &Value) -> Result<String> {
    let address = result["ips"][0]["address"].as_str().context("the result has no address")?;
    Ok(address.split('/').next().unwrap_or(address).to_string())
}

/// Figures of one side: ADD, DEL, and ADD until the first answered ping, in ms.
#[derive(Default)]
struct Times {
    add: Vec<f64>,
    del: Vec<f64>,
    first_packet: Vec<f64>,
}

fn ms(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1000.0
}

/// `count` ADD/DEL pairs on one side, after a first pod that the others ping.
fn measure_side(side: &dyn Side, cleanup: &mut Cleanup, prefix: &str, count: usize) -> Result<Times> {
    let mut times = Times::default();
    let new_pod = |cleanup: &mut Cleanup, i: usize| -> Result<String> {
        let ns = format!("{prefix}{i}");
        super::run_command(Command::new("ip").args(["netns", "add", &ns]))?;
        cleanup.namespaces.push(ns.clone());
        Ok(ns)
    };
    let peer_ns = new_pod(cleanup, 0)?;
    let peer = Pod { result: side.add("peer", &peer_ns, 31999)?, ns: peer_ns };
    let peer_ip = address_of(&peer.result)?;
    let mut pods = vec![];
    for i in 1..=count {
        check_interrupt()?;
        let ns = new_pod(cleanup, i)?;
        let start = Instant::now();
        let result = side.add(&format!("pod{i}"), &ns, 32000 + i as u16)?;
        times.add.push(ms(start));
        // The first ping may go before the path is ready (a bridge port still learning,
        // say): the figure is until one is answered.
        let answered = (0..50).any(|_| {
            in_ns(&netns_path(&ns), "ping")
                .args(["-c1", "-W1", "-i0.2", &peer_ip])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        });
        if !answered {
            bail!("pod {i} ({ns}) never reached the first pod at {peer_ip}");
        }
        times.first_packet.push(ms(start));
        pods.push((i, Pod { ns, result }));
    }
    for (i, pod) in &pods {
        check_interrupt()?;
        let start = Instant::now();
        side.del(&format!("pod{i}"), pod, 32000 + *i as u16)?;
        times.del.push(ms(start));
    }
    side.del("peer", &peer, 31999)?;
    let pod_prefix = prefix.to_string();
    for ns in cleanup.namespaces.iter().filter(|n| n.starts_with(&pod_prefix)) {
        let _ = Command::new("ip").args(["netns", "del", ns]).status();
    }
    cleanup.namespaces.retain(|n| !n.starts_with(&pod_prefix));
    Ok(times)
}

pub(crate) fn measure(host: &Host, cleanup: &mut Cleanup, tag: &str, count: usize) -> Result<Vec<Record>> {
    let plugin = std::env::current_exe()?.with_file_name("dataplane-cni");
    if !Path::new(REFERENCE_PLUGINS).join("bridge").exists() {
        bail!(
            "{REFERENCE_PLUGINS}/bridge is missing: `cargo xtask setup` installs containernetworking-plugins"
        );
    }
    let ours = Ours {
        host,
        plugin,
        config: json!({
            "cniVersion": "1.0.0", "name": "cnibench", "type": "dataplane",
            "subnet": "10.202.0.0/22", "socket": host.socket(),
            "capabilities": {"portMappings": true}
        }),
    };
    eprintln!("bench: CNI: {count} ADD/DEL pairs through dataplane-cni");
    let ours_times = measure_side(&ours, cleanup, &format!("dpb-{tag}-cna"), count)?;
    host.dp_ok(&["network", "rm", "cnibench"]);

    let reference_ns = format!("dpb-{tag}-cnr");
    super::run_command(Command::new("ip").args(["netns", "add", &reference_ns]))?;
    cleanup.namespaces.push(reference_ns.clone());
    sh_in(&reference_ns, "ip link set lo up && sysctl -qw net.ipv4.ip_forward=1")?;
    let ipam_dir = cleanup.dir.join("host-local");
    let reference = Reference {
        ns: reference_ns,
        bridge: json!({
            "cniVersion": "1.0.0", "name": "cnibench", "type": "bridge", "bridge": "cnibr0",
            "isGateway": true, "ipMasq": true, "hairpinMode": true,
            "ipam": {"type": "host-local", "subnet": "10.203.0.0/22", "dataDir": ipam_dir,
                     "routes": [{"dst": "0.0.0.0/0"}]}
        }),
        portmap: json!({
            "cniVersion": "1.0.0", "name": "cnibench", "type": "portmap",
            "capabilities": {"portMappings": true}, "snat": true
        }),
    };
    eprintln!("bench: CNI: {count} ADD/DEL pairs through bridge + host-local + portmap");
    let reference_times = measure_side(&reference, cleanup, &format!("dpb-{tag}-cnb"), count)?;

    let scenario = format!("8. CNI plugin: {count} ADD/DEL pairs, one published port each");
    let mut records = vec![];
    for (metric, ours, reference) in [
        ("ADD, p50", &ours_times.add, &reference_times.add),
        ("ADD, p99", &ours_times.add, &reference_times.add),
        (
            "ADD until the first ping is answered, p50",
            &ours_times.first_packet,
            &reference_times.first_packet,
        ),
        (
            "ADD until the first ping is answered, p99",
            &ours_times.first_packet,
            &reference_times.first_packet,
        ),
        ("DEL, p50", &ours_times.del, &reference_times.del),
        ("DEL, p99", &ours_times.del, &reference_times.del),
    ] {
        records.push(timing_record(&scenario, metric, ours, reference));
    }
    Ok(records)
}
