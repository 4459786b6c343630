//! Scenario 11, containers on two hosts over VXLAN: two host namespaces joined by an
//! underlay bridge in a namespace of its own, one container on each host, three sides in
//! turn round after round:
//! - ours: a daemon on each host on one etcd (`--store`), an overlay network;
//! - the reference, Docker's overlay way: on each host a kernel VXLAN device for the
//!   network (fixed VNI, no learning, ARP proxy) on a bridge with the container's veth,
//!   programmed as swarm does it: static FDB entries (the all-zero flood entry and the
//!   remote container's MAC, both to the remote host) and a static neighbour entry for
//!   the remote container;
//! - the ceiling: two namespaces joined by a raw VXLAN pair over the same underlay (no
//!   bridge, no veth, no eBPF).
//!
//! There is no nftables side: an overlay has no NAT and no port rules, so it would be the
//! reference again. Then ours alone: convergence, the time from `run` on host A until the
//! first packet from host B reaches the new container.

use std::{
    net::Ipv4Addr,
    process::{Command, Stdio},
    thread::sleep,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use dataplane_tests::{KillOnDrop, eventually, hosts::Cluster, monotonic_ns};

use super::{
    Cleanup, Pair, Record, Side, Tools, check_interrupt, finished, in_ns, netns_path, percentile,
    run_command, sandbox, sh_in,
};

pub const SCENARIO: &str = "11. containers on two hosts (VXLAN)";

/// What the report says of the scenario's sides and method.
pub const DESCRIPTION: &str = "Scenario 11 (containers on two hosts) has sides of its own, all on one underlay \
bridge with the overlay's MTU at 1450: ours is a daemon per host on one etcd (`--store`) with an overlay network; \
B is Docker's overlay way, per host a kernel VXLAN device for the network (fixed VNI, `nolearning`, `proxy`, \
port 4789) on a bridge with the container's veth, programmed as swarm does it (static FDB entries: the all-zero \
flood entry and the remote container's MAC, both to the remote host; a static neighbour entry for the remote \
container); the ceiling is a raw VXLAN pair between two namespaces (no bridge, no veth, no eBPF). It has no N: an \
overlay has no NAT or port rules, so nftables would be B again. All three leave the outer UDP checksum zero \
over the IPv4 underlay (RFC 7348's advice; ours through `BPF_F_ZERO_CSUM_TX`, the others by the kernel's \
default). Its convergence is ours alone: from the start of `run -d` on host A until a container on host B, sending a UDP probe to the new address \
every 250 µs from before the run, gets the new container's port unreachable back (the first probe that reached \
it, plus one crossing back); B's container holds a static neighbour entry for the address, so that the kernel's \
ARP retry timer (1 s by default) is no part of the figure. The containers are run one after the other, each \
removed once measured.\n\n";

/// Our overlay network's name.
const NETWORK: &str = "xbench";
/// The overlay's subnet on every side; the client container on host A, the server on B.
const SUBNET: &str = "10.210.0.0/24";
const CLIENT: &str = "10.210.0.2";
const SERVER: &str = "10.210.0.3";
/// The underlay addresses of the peers' hosts (our hosts hold `.11` and `.12`, see
/// `hosts`), as `198.51.100.X`.
const REFERENCE_HOSTS: [u8; 2] = [21, 22];
const CEILING_HOSTS: [u8; 2] = [31, 32];
/// The VNIs of the reference's network and the ceiling's pair (ours gives its own).
const REFERENCE_VNI: u32 = 256;
const CEILING_VNI: u32 = 257;
/// The underlay's MTU (a veth's 1500) less VXLAN's 50 bytes, on every side.
const OVERLAY_MTU: u32 = 1450;
/// Where convergence probes go: a port nobody listens on, so the new container's kernel
/// answers each probe that reaches it with a port unreachable.
const PROBE_PORT: u16 = 9100;
/// How long a convergence probe may wait for its container.
const PROBE_SECS: &str = "10";

fn underlay_address(last: u8) -> String {
    format!("198.51.100.{last}")
}

/// The MAC our daemon gives an address (`ipam::mac_for`), given to the peers' containers
/// too.
fn mac_of(ip: &str) -> Result<String> {
    let ip: Ipv4Addr = ip.parse()?;
    let mac = dataplane::ipam::mac_for(ip.into());
    Ok(mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":"))
}

/// The rows of `rounds` rounds, each side in turn, then our convergence over `probes`
/// containers run one after the other.
pub fn measure(
    tools: &Tools,
    cleanup: &mut Cleanup,
    tag: &str,
    rounds: usize,
    probes: usize,
) -> Result<Vec<Record>> {
    eprintln!("bench: building two hosts three ways (ours on etcd, Docker's overlay way, a raw VXLAN pair)");
    let cluster = Cluster::start(2, 30);
    let ours = build_ours(&cluster)?;
    let underlay = cluster.underlay.name.clone();
    let reference = build_reference(cleanup, tag, &underlay)?;
    let ceiling = build_ceiling(cleanup, tag, &underlay)?;
    let sides = [(Side::Ours, &ours), (Side::Reference, &reference), (Side::Ceiling, &ceiling)];
    for (side, pair) in sides {
        if !eventually(Duration::from_secs(10), || reaches(pair)) {
            bail!("{side:?}: the client container on host A cannot ping the server on host B");
        }
    }
    let mut records = vec![
        Record::new(SCENARIO, "UDP 64-byte packets/s", "Mpps", true),
        Record::new(SCENARIO, "TCP stream, 1 stream", "Gbit/s", true),
        Record::new(SCENARIO, "UDP request/response latency p50", "µs", false),
        Record::new(SCENARIO, "UDP request/response latency p99", "µs", false),
        Record::new(SCENARIO, "UDP request/response latency p50, both ends busy-polling", "µs", false),
        Record::new(SCENARIO, "UDP request/response latency p99, both ends busy-polling", "µs", false),
    ];
    for round in 1..=rounds {
        for (side, pair) in sides {
            check_interrupt()?;
            eprintln!("bench: round {round}/{rounds}: {side:?}, containers on two hosts");
            let udp = tools.udp_pps(pair)? / 1e6;
            let tcp = tools.tcp_stream(pair, 1)?;
            let (p50, p99) = tools.latency(pair, false)?;
            let (spin_p50, spin_p99) = tools.latency(pair, true)?;
            for (record, value) in records.iter_mut().zip([udp, tcp, p50, p99, spin_p50, spin_p99]) {
                record.push(side, value);
            }
        }
    }
    records.extend(measure_convergence(tools, &cluster, &ours, probes)?);
    Ok(records)
}

/// Whether the pair's client gets an answer to one ping of the server.
fn reaches(pair: &Pair) -> bool {
    in_ns(&pair.client, "ping")
        .args(["-c", "1", "-W", "1", pair.server_ip])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Ours: an overlay network made on host A, a container on each host.
fn build_ours(cluster: &Cluster) -> Result<Pair> {
    let [a, b] = &cluster.hosts[..] else { bail!("two hosts were asked for") };
    a.dp_ok(&["network", "create", "-d", "overlay", "--subnet", SUBNET, NETWORK]);
    let listed = || b.dp_ok(&["network", "ls", "--format", "{{.Name}}"]).lines().any(|l| l == NETWORK);
    if !eventually(Duration::from_secs(10), listed) {
        bail!("host B never saw the overlay network made on A:\n{}", b.daemon_log());
    }
    for (host, name, ip) in [(a, "client", CLIENT), (b, "server", SERVER)] {
        host.dp_ok(&[
            "run",
            "-d",
            "--name",
            name,
            "--network",
            NETWORK,
            "--ip",
            ip,
            "--",
            "sleep",
            "infinity",
        ]);
    }
    Ok(Pair::direct(sandbox(a, "client")?, sandbox(b, "server")?, SERVER))
}

/// A namespace of the run's own, removed with `cleanup`.
fn add_namespace(cleanup: &mut Cleanup, name: String) -> Result<String> {
    run_command(Command::new("ip").args(["netns", "add", &name]))?;
    cleanup.namespaces.push(name.clone());
    Ok(name)
}

/// Joins namespace `ns` to the underlay bridge by a veth (`ul0` in `ns`, `port` on the
/// bridge) holding underlay address `.last`.
fn join_underlay(ns: &str, underlay: &str, port: &str, last: u8) -> Result<()> {
    sh_in(
        ns,
        &format!(
            "ip link set lo up && ip link add ul0 type veth peer name {port} netns {underlay} \
             && ip addr add {}/24 dev ul0 && ip link set ul0 up",
            underlay_address(last)
        ),
    )?;
    sh_in(underlay, &format!("ip link set {port} master br0 && ip link set {port} up"))
}

/// The reference: per host, a VXLAN device for the network on a bridge with the
/// container's veth, and the remote container's FDB and neighbour entries.
fn build_reference(cleanup: &mut Cleanup, tag: &str, underlay: &str) -> Result<Pair> {
    let mut containers = vec![];
    for (i, ip) in [CLIENT, SERVER].into_iter().enumerate() {
        let host = add_namespace(cleanup, format!("dpb-{tag}-o{i}"))?;
        let container = add_namespace(cleanup, format!("dpb-{tag}-o{i}c"))?;
        join_underlay(&host, underlay, &format!("ulo{i}"), REFERENCE_HOSTS[i])?;
        let (local, remote) =
            (underlay_address(REFERENCE_HOSTS[i]), underlay_address(REFERENCE_HOSTS[1 - i]));
        let remote_ip = [CLIENT, SERVER][1 - i];
        let remote_mac = mac_of(remote_ip)?;
        sh_in(
            &host,
            &format!(
                "ip link add br0 type bridge && ip link set br0 up \
                 && ip link add vxlan0 type vxlan id {REFERENCE_VNI} dstport 4789 local {local} dev ul0 \
                    nolearning proxy \
                 && ip link set vxlan0 master br0 up \
                 && bridge fdb append 00:00:00:00:00:00 dev vxlan0 dst {remote} \
                 && bridge fdb add {remote_mac} dev vxlan0 dst {remote} self permanent \
                 && ip neigh add {remote_ip} lladdr {remote_mac} dev vxlan0 nud permanent \
                 && ip link add veth0 mtu {OVERLAY_MTU} type veth peer name eth0 netns {container} \
                 && ip link set veth0 master br0 up"
            ),
        )?;
        sh_in(
            &container,
            &format!(
                "ip link set lo up && ip link set eth0 address {} mtu {OVERLAY_MTU} \
                 && ip addr add {ip}/24 dev eth0 && ip link set eth0 addrgenmode none up",
                mac_of(ip)?
            ),
        )?;
        containers.push(container);
    }
    Ok(Pair::direct(netns_path(&containers[0]), netns_path(&containers[1]), SERVER))
}

/// The ceiling: two namespaces on the underlay, each with a VXLAN device pointing at the
/// other and the container's address on it.
fn build_ceiling(cleanup: &mut Cleanup, tag: &str, underlay: &str) -> Result<Pair> {
    let mut ends = vec![];
    for (i, ip) in [CLIENT, SERVER].into_iter().enumerate() {
        let ns = add_namespace(cleanup, format!("dpb-{tag}-v{i}"))?;
        join_underlay(&ns, underlay, &format!("ulv{i}"), CEILING_HOSTS[i])?;
        let (local, remote) = (underlay_address(CEILING_HOSTS[i]), underlay_address(CEILING_HOSTS[1 - i]));
        sh_in(
            &ns,
            &format!(
                "ip link add vxlan0 type vxlan id {CEILING_VNI} dstport 4789 local {local} remote {remote} dev ul0 \
                 && ip addr add {ip}/24 dev vxlan0 && ip link set vxlan0 addrgenmode none up"
            ),
        )?;
        ends.push(ns);
    }
    Ok(Pair::direct(netns_path(&ends[0]), netns_path(&ends[1]), SERVER))
}

/// Convergence, ours: for each of `probes` new containers on host A, a prober in B's
/// container sends to the new address every 250 µs from before `run` starts; the first
/// answer (the new container's port unreachable) proves a packet from B reached it. B's
/// container holds a static neighbour entry for the address (the MAC given to `run`), so
/// that the figure is the store's and the daemons', not the kernel's ARP retry timer
/// (1 s by default, 10 ms at the least), which any user's first packet would add.
fn measure_convergence(tools: &Tools, cluster: &Cluster, ours: &Pair, probes: usize) -> Result<Vec<Record>> {
    let a = &cluster.hosts[0];
    let (mut converged, mut runs) = (vec![], vec![]);
    for i in 0..probes {
        check_interrupt()?;
        let name = format!("new{i}");
        let ip = format!("10.210.0.{}", 100 + i);
        let mac = mac_of(&ip)?;
        run_command(in_ns(&ours.server, "ip").args([
            "neigh",
            "replace",
            &ip,
            "lladdr",
            &mac,
            "dev",
            "eth0",
            "nud",
            "permanent",
        ]))?;
        let prober = in_ns(&ours.server, &tools.loadgen)
            .args(["udp-probe", "--dst", &format!("{ip}:{PROBE_PORT}"), "--secs", PROBE_SECS])
            .stdout(Stdio::piped())
            .spawn()?;
        let prober = KillOnDrop(prober);
        // Until the prober sends: its start is no part of the figure.
        sleep(Duration::from_millis(100));
        let start = monotonic_ns();
        let run_started = Instant::now();
        a.dp_ok(&[
            "run",
            "-d",
            "--name",
            &name,
            "--network",
            NETWORK,
            "--ip",
            &ip,
            "--mac-address",
            &mac,
            "--",
            "sleep",
            "infinity",
        ]);
        runs.push(run_started.elapsed().as_secs_f64() * 1e3);
        let probed = finished(prober).with_context(|| format!("probing {name} ({ip}) from host B"))?;
        let answered = probed["answered_ns"].as_u64().context("the probe's answer time")?;
        if answered < start {
            bail!("{ip} answered host B before its run on host A started: {probed}");
        }
        converged.push((answered - start) as f64 / 1e6);
        a.dp_ok(&["rm", "-f", &name]);
    }
    let scenario = format!("{SCENARIO}: convergence over {probes} containers, ours");
    let row = |metric: &str, values: &[f64], p: f64| {
        let mut record = Record::new(&scenario, metric, "ms", false);
        record.ours.push(percentile(values, p));
        record
    };
    Ok(vec![
        row(
            "`run -d` on host A until the first packet from host B reaches the container, p50",
            &converged,
            0.5,
        ),
        row(
            "`run -d` on host A until the first packet from host B reaches the container, p99",
            &converged,
            0.99,
        ),
        row("`run -d` on host A alone, p50", &runs, 0.5),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_peers_containers_take_the_mac_our_daemon_gives_their_address() {
        assert_eq!(mac_of("10.210.0.3").unwrap(), "02:42:0a:d2:00:03");
    }
}
