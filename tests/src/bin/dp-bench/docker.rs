//! Scenario 9, Docker: `docker run -d -p 8080:80` of a web server until the outside gets
//! its first answer through the published port, then `docker rm -f`, on a network of our
//! plugin (dockerd without iptables) against Docker's own bridge driver with its iptables
//! rules and docker-proxy (dockerd's defaults), each in a host namespace of its own with
//! an uplink to an external namespace, in the same run.

use std::{
    thread::sleep,
    time::{Duration, Instant},
};

use anyhow::{Result, bail};
use dataplane_tests::{
    Host, UPLINK_ADDR,
    docker::{DockerPlugin, Dockerd, Firewall},
};

use super::{Record, check_interrupt, timing_record};

#[derive(Default)]
struct Times {
    run_until_answered: Vec<f64>,
    rm: Vec<f64>,
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1e3
}

/// Runs `count` web servers one after the other on `network`, each until the outside
/// gets its page through the published port, then removes it.
fn measure_side(host: &Host, docker: &Dockerd, network: &str, count: usize) -> Result<Times> {
    let mut times = Times::default();
    let url = format!("http://{UPLINK_ADDR}:8080/");
    for i in 0..count {
        check_interrupt()?;
        let name = format!("web{i}");
        let script = format!("echo hello from {name} > /www/index.html && exec httpd -f -p 80 -h /www");
        let start = Instant::now();
        docker.run(&name, network, &["-p", "8080:80"], &["sh", "-c", &script]);
        loop {
            let out = host.external_command("curl").args(["-s", "-m", "1", &url]).output()?;
            if String::from_utf8_lossy(&out.stdout).contains(&format!("hello from {name}")) {
                break;
            }
            if start.elapsed() > Duration::from_secs(20) {
                bail!("{name} on {network}: {url} did not answer within 20 s");
            }
            sleep(Duration::from_millis(5));
        }
        times.run_until_answered.push(ms(start));
        let start = Instant::now();
        docker.ok(&["rm", "-f", &name]);
        times.rm.push(ms(start));
    }
    Ok(times)
}

pub(crate) fn measure(count: usize) -> Result<Vec<Record>> {
    let plugin = DockerPlugin::unique();
    let ours_host = Host::start_with_external_and(&[plugin.daemon_env()]);
    let ours = Dockerd::start(&ours_host);
    ours.ok(&["network", "create", "-d", &plugin.name, "--subnet", "10.204.0.0/24", "web"]);
    eprintln!("bench: Docker: {count} docker run -p until answered, on our plugin");
    let ours_times = measure_side(&ours_host, &ours, "web", count)?;

    let reference_host = Host::empty_with_external();
    let reference = Dockerd::start_with(&reference_host, Firewall::Iptables);
    reference.ok(&["network", "create", "-d", "bridge", "--subnet", "10.205.0.0/24", "web"]);
    eprintln!("bench: Docker: {count} docker run -p until answered, on Docker's bridge with iptables");
    let reference_times = measure_side(&reference_host, &reference, "web", count)?;

    let scenario = format!("9. Docker: {count} containers, docker run -p 8080:80 until the port answers");
    let mut records = vec![];
    for (metric, ours, reference) in [
        (
            "docker run until the outside gets the page, p50",
            &ours_times.run_until_answered,
            &reference_times.run_until_answered,
        ),
        (
            "docker run until the outside gets the page, p99",
            &ours_times.run_until_answered,
            &reference_times.run_until_answered,
        ),
        ("docker rm -f, p50", &ours_times.rm, &reference_times.rm),
        ("docker rm -f, p99", &ours_times.rm, &reference_times.rm),
    ] {
        records.push(timing_record(&scenario, metric, ours, reference));
    }
    Ok(records)
}
