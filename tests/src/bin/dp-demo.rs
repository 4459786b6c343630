//! The demo behind `cargo xtask demo`: the main job end to end, in a host namespace made
//! for the occasion (with an uplink to an "external" namespace playing the outside world)
//! and removed afterwards, also when a step fails: a user network, two containers, one
//! serving HTTP on a published port, found by name through the embedded DNS, traffic
//! between them over the eBPF fast path, the
//! outside reaching the published port and a container reaching the outside through
//! masquerade, and the counters proving it.

use std::time::Duration;

use anyhow::{Result, bail};
use dataplane_tests::{EXTERNAL_ADDR, Host, UPLINK_ADDR, eventually};

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

fn main() -> Result<()> {
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
            "--",
            "python3",
            "-m",
            "http.server",
            "80",
        ],
    )?;
    show(&host, &["run", "-d", "--name", "client", "--network", "demo", "--", "sleep", "600"])?;
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
    show(&host, &["exec", "client", "--", "dig", "+short", "web"])?;
    let page = show(&host, &["exec", "client", "--", "curl", "-s", "-m", "5", "http://web/"])?;
    if !page.contains("Directory listing") {
        bail!("client did not get web's page");
    }
    show(&host, &["exec", "client", "--", "ping", "-c", "3", "-i", "0.2", "10.123.0.2"])?;

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
    show(&host, &["exec", "client", "--", "ping", "-c", "2", "-i", "0.2", EXTERNAL_ADDR])?;
    show(&host, &["conntrack", "ls"])?;
    show(&host, &["stats"])?;
    let forwarded = host.counter("forwarded");
    println!("\n{forwarded} packets were redirected container to container by the eBPF fast path.");
    if forwarded == 0 {
        bail!("no packet took the fast path");
    }
    println!("\n== Cleaning up: containers, networks, daemon, namespaces");
    drop(host);
    println!("done: nothing is left behind.");
    Ok(())
}
