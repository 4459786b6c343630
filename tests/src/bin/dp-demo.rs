//! The demo behind `cargo xtask demo`: the main job end to end, in a host namespace made
//! for the occasion (with an uplink to an "external" namespace playing the outside world)
//! and removed afterwards, also when a step fails: a user network, two containers, one
//! serving HTTP on a published port, found by name through the embedded DNS, traffic
//! between them over the eBPF fast path, the
//! outside reaching the published port and a container reaching the outside through
//! masquerade, and the proof a sceptic asks for: the eBPF counters climb while the
//! bridge forwards next to nothing, the host does not route, and netfilter has no rules.

use std::{path::PathBuf, time::Duration};

use anyhow::{Context, Result, bail};
use dataplane_tests::{EXTERNAL_ADDR, Host, UPLINK_ADDR, eventually};

/// The page web serves: a directory of its own, so that curl fetches one small page and
/// not a listing of wherever the server happened to start. Removed when the demo ends.
struct Site(PathBuf);

impl Site {
    const GREETING: &str = "hello from web, through the eBPF fast path";

    fn new() -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("dp-demo-site-{}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::write(dir.join("index.html"), format!("{}\n", Self::GREETING))
            .with_context(|| format!("writing {}/index.html", dir.display()))?;
        Ok(Self(dir))
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Shows a CLI command as a user would type it, runs it and prints what it printed.
fn show(host: &Host, args: &[&str]) -> Result<String> {
    println!("\n$ dataplane {}", args.join(" "));
    let out = host.dp(args);
    print!("{}", String::from_utf8_lossy(&out.stdout));
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        bail!("dataplane {} failed", args.join(" "));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Shows a shell command run in the host namespace, and what it printed.
fn show_host(host: &Host, script: &str) -> String {
    println!("\n(host)$ {script}");
    let out = host.sh_ok(script);
    print!("{out}");
    out
}

/// Frames the kernel bridge sent out of its ports: what container-to-container traffic
/// would cost it, were the eBPF programs not redirecting that traffic past it.
fn bridge_ports_sent(host: &Host, bridge: &str) -> Result<u64> {
    let ports: serde_json::Value =
        serde_json::from_str(&host.sh_ok(&format!("ip -s -j link show master {bridge}")))?;
    let ports = ports.as_array().context("ip -j gives an array")?;
    Ok(ports.iter().filter_map(|port| port["stats64"]["tx"]["packets"].as_u64()).sum())
}

fn main() -> Result<()> {
    let site = Site::new()?;
    let host = Host::start_with_external();
    println!(
        "== A fresh \"host\" network namespace ({}) with its own dataplane daemon, and an \"external\" \
         namespace behind its uplink ({UPLINK_ADDR} <-> {EXTERNAL_ADDR})",
        host.name
    );

    println!("\n== Create a network, then two containers on it (one serves HTTP)");
    show(&host, &["network", "create", "--subnet", "10.123.0.0/24", "demo"])?;
    show(
        &host,
        &[
            "run",
            "-d",
            "--name",
            "web",
            "--network",
            "demo",
            "-p",
            "8080:80",
            "-w",
            site.0.to_str().context("a UTF-8 temp dir")?,
            "python3",
            "-m",
            "http.server",
            "80",
        ],
    )?;
    show(&host, &["run", "-d", "--name", "client", "--network", "demo", "sleep", "600"])?;
    show(&host, &["ps"])?;
    show(&host, &["network", "inspect", "demo"])?;

    println!("\n== Traffic between them goes through the eBPF programs, not the bridge");
    let serving = eventually(Duration::from_secs(10), || {
        host.exec("web", "curl -sf -o /dev/null http://127.0.0.1/").status.success()
    });
    if !serving {
        bail!("the HTTP server in web did not come up");
    }
    println!("\n(client finds web by name: the network's embedded DNS answers on its gateway)");
    show(&host, &["exec", "client", "dig", "+short", "web"])?;
    let page = show(&host, &["exec", "client", "curl", "-s", "-m", "5", "http://web/"])?;
    if !page.contains(Site::GREETING) {
        bail!("client did not get web's page");
    }
    show(&host, &["exec", "client", "ping", "-c", "3", "-i", "0.2", "10.123.0.2"])?;

    println!("\n== The outside reaches the published port; a container reaches the outside (masquerade)");
    println!("\n(external)$ curl -s -o /dev/null -w '%{{http_code}}' http://{UPLINK_ADDR}:8080/");
    let out = host
        .external_command("curl")
        .args([
            "-s",
            "-m",
            "5",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}\n",
            &format!("http://{UPLINK_ADDR}:8080/"),
        ])
        .output()?;
    print!("{}", String::from_utf8_lossy(&out.stdout));
    if String::from_utf8_lossy(&out.stdout).trim() != "200" {
        bail!("the published port did not answer from outside");
    }
    show(&host, &["port", "web"])?;
    show(&host, &["exec", "client", "ping", "-c", "2", "-i", "0.2", EXTERNAL_ADDR])?;
    show(&host, &["conntrack", "ls"])?;
    show(&host, &["stats"])?;

    println!("\n== The proof: 2,000 pings between the containers; count who carried them");
    let network = host.dp_json(&["network", "inspect", "demo"]);
    let id = network[0]["Id"].as_str().context("network inspect shows the Id")?;
    let bridge = format!("br-{}", &id[..12]);
    let (forwarded_before, bridge_before) = (host.counter("forwarded"), bridge_ports_sent(&host, &bridge)?);
    show(&host, &["exec", "client", "ping", "-q", "-c", "2000", "-i", "0.001", "-w", "20", "10.123.0.2"])?;
    let forwarded = host.counter("forwarded") - forwarded_before;
    let bridged = bridge_ports_sent(&host, &bridge)? - bridge_before;
    println!(
        "\nThe eBPF fast path redirected {forwarded} packets container to container; the bridge {bridge} \
         sent {bridged} frames out of its ports (neighbour resolution, nothing else)."
    );
    if forwarded < 3_900 || bridged > 100 {
        bail!("the fast path did not carry the pings ({forwarded} redirected, {bridged} bridged)");
    }
    let routing = show_host(&host, "cat /proc/sys/net/ipv4/ip_forward");
    if routing.trim() != "0" {
        bail!("the host namespace routes packets (ip_forward = {})", routing.trim());
    }
    let nft_rules = show_host(&host, "nft list ruleset | grep -c . || true");
    let iptables_rules = show_host(&host, "iptables-save | grep -c '^-A' || true");
    if nft_rules.trim() != "0" || iptables_rules.trim() != "0" {
        bail!("netfilter has rules in the host namespace");
    }
    println!("No routing by the host stack, no iptables or nftables rule: the eBPF programs do it all.");
    println!("\n== Cleaning up: containers, networks, daemon, namespaces");
    drop(host);
    println!("done: nothing is left behind.");
    Ok(())
}
