//! Scenario 10, a SYN flood on a published port: while one established connection to the
//! port exchanges a line every 100 ms, the outside sends SYNs from more spoofed sources
//! (the benchmarking range 198.18.0.0/15, inside the bench's namespaces) than our
//! conntrack table holds. Each side reports whether the connection came through, its
//! longest wait for an echo, and the rate the flood was sent at; ours also the rate its
//! programs handled it at (they see every SYN; the reference's kernel counts none).

use std::{path::Path, process::Stdio, thread::sleep, time::Duration};

use super::{Record, Side, Side3, Tools, check_interrupt, finished, in_ns, output_json};
use anyhow::{Context, Result};
use dataplane_tests::{Host, KillOnDrop};

/// The published TCP port the flood and the connection share (see `BENCH_PORTS`).
const PORT: &str = "9002";
/// More sources than the default conntrack table (131,072 flows) holds.
const SOURCES: &str = "200000";
const FLOOD_SECS: f64 = 3.0;

pub fn measure(tools: &Tools, host: &Host, sides: &[(Side, &Side3)], rounds: usize) -> Result<Vec<Record>> {
    let scenario = "10. a SYN flood from 200,000 spoofed sources on a published port";
    let mut survived = Record::new(scenario, "established connection came through (1: yes)", "", true);
    let mut gap = Record::new(scenario, "established connection's longest wait for an echo", "ms", false);
    let mut sent = Record::new(scenario, "flood sent", "Mpps", true);
    let mut handled = Record::new(scenario, "flood handled by our programs", "Mpps", true);
    let forge = tools.loadgen.with_file_name("dp-forge");
    for round in 1..=rounds {
        for (side, set) in sides {
            check_interrupt()?;
            eprintln!("bench: round {round}/{rounds}: {side:?}, a SYN flood on a published port");
            let pair = &set.published;
            let bind = format!("{}:{PORT}", pair.server_ip);
            let server = in_ns(&pair.server, &tools.loadgen)
                .args(["tcp-echo-server", "--bind", &bind, "--secs", "20"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?;
            let _server = KillOnDrop(server);
            sleep(Duration::from_millis(300));
            let target = format!("{}:{PORT}", pair.target_ip);
            let client = in_ns(&pair.client, &tools.loadgen)
                .args(["tcp-echo-client", "--dst", &target, "--secs", "6", "--interval-ms", "100"])
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()?;
            let client = KillOnDrop(client);
            sleep(Duration::from_secs(1));
            let published_before = matches!(side, Side::Ours).then(|| host.counter("published"));
            let mut flood = in_ns(&pair.client, &forge);
            flood
                .args(["tcp-syn", "--interface", "eth0", "--dst-ip", pair.target_ip, "--dst-port", PORT])
                .args(["--dst-mac", &uplink_mac(&set.host)?, "--src-ip", "198.18.0.0"])
                .args(["--sources", SOURCES, "--count", "10000000", "--interval-ms", "0"])
                .args(["--secs", &FLOOD_SECS.to_string()]);
            let flood = output_json(flood)?;
            let flood_secs = flood["secs"].as_f64().context("the flood's time")?;
            sent.push(*side, flood["sent"].as_f64().context("the flood's count")? / flood_secs / 1e6);
            if let Some(before) = published_before {
                handled.push(*side, (host.counter("published") - before) as f64 / flood_secs / 1e6);
            }
            let exchange = finished(client)?;
            let came_through = exchange["error"].is_null();
            survived.push(*side, if came_through { 1.0 } else { 0.0 });
            gap.push(*side, exchange["max_gap_ms"].as_f64().unwrap_or(f64::NAN));
            if !came_through {
                eprintln!("bench: {side:?}: the established connection broke: {exchange}");
            }
        }
    }
    Ok(vec![survived, gap, sent, handled])
}

/// The MAC of the uplink `up0` of a side's host namespace, where the flood's frames go.
fn uplink_mac(host_ns: &Path) -> Result<String> {
    let mut show = in_ns(host_ns, "ip");
    show.args(["-j", "link", "show", "up0"]);
    let links = output_json(show)?;
    Ok(links[0]["address"].as_str().context("up0 has no address")?.to_string())
}
