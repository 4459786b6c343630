//! Source validation end to end: a hostile container sends forged frames from a packet
//! socket (dp-forge) while its neighbour pings a third container. Every forged frame is
//! dropped and counted, none reaches its target, and the neighbour loses nothing. Nor can
//! a container make itself its neighbours' IPv6 router.

use std::process::Stdio;

use dataplane_tests::{EXTERNAL_ADDR, Host};

const VICTIM: &str = "10.50.0.2";
const THIRD: &str = "10.50.0.3";
const ATTACKER: &str = "10.50.0.4";
const FORGED: u64 = 20;

/// One counter (`Icmp`, `InEchos`, say) of a `/proc/net/snmp` text.
fn snmp(text: &str, group: &str, name: &str) -> u64 {
    let mut lines = text.lines().filter(|l| l.starts_with(&format!("{group}:")));
    let (names, values) = (lines.next().unwrap(), lines.next().unwrap());
    let at = names.split_whitespace().position(|n| n == name).unwrap();
    values.split_whitespace().nth(at).unwrap().parse().unwrap()
}

fn echoes_received_by(host: &Host, container: &str) -> u64 {
    let out = host.exec(container, "cat /proc/net/snmp");
    snmp(&String::from_utf8_lossy(&out.stdout), "Icmp", "InEchos")
}

fn echoes_received_outside(host: &Host) -> u64 {
    snmp(&host.external_sh_ok("cat /proc/net/snmp"), "Icmp", "InEchos")
}

/// The MAC of a container's `eth0` (from netlink: sysfs shows the host's namespace).
fn mac_of(host: &Host, container: &str) -> String {
    let out = host.exec(container, "ip -o link show eth0");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    text.split_whitespace().skip_while(|w| *w != "link/ether").nth(1).unwrap().to_string()
}

/// The MAC `container`'s neighbour table holds for `ip`.
fn neighbour_mac(host: &Host, container: &str, ip: &str) -> String {
    let out = host.exec(container, &format!("ip neigh show {ip}"));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    text.split_whitespace().skip_while(|w| *w != "lladdr").nth(1).unwrap_or_default().to_string()
}

fn forge(host: &Host, args: &str) {
    let script = format!("{} {args} --count {FORGED} --interval-ms 40", env!("CARGO_BIN_EXE_dp-forge"));
    let out = host.exec("attacker", &script);
    assert!(out.status.success(), "{script}: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn forged_sources_are_dropped_and_counted_while_the_victim_loses_nothing() {
    let host = Host::start_with_external();
    host.dp_ok(&["network", "create", "--subnet", "10.50.0.0/24", "lan"]);
    for (name, ip) in [("victim", VICTIM), ("third", THIRD), ("attacker", ATTACKER)] {
        host.run_sleeper(name, &["--network", "lan", "--ip", ip]);
    }
    // The third knows the victim's MAC (it answers the victim's pings).
    assert!(host.ping("victim", THIRD));
    let (victim_mac, third_mac, attacker_mac) =
        (mac_of(&host, "victim"), mac_of(&host, "third"), mac_of(&host, "attacker"));
    assert_eq!(neighbour_mac(&host, "third", VICTIM), victim_mac);
    let third_before = echoes_received_by(&host, "third");
    let outside_before = echoes_received_outside(&host);

    let ping = host
        .command(dataplane_tests::binary())
        .args(["exec", "victim", "--", "ping", "-q", "-c", "100", "-i", "0.05", "-W", "1", THIRD])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();

    // The victim's address towards the third, a foreign one towards the outside, the
    // victim's MAC, and a gratuitous ARP claiming the victim's address.
    forge(&host, &format!("ipv4 --src-ip {VICTIM} --dst-ip {THIRD} --dst-mac {third_mac}"));
    forge(&host, &format!("ipv4 --src-ip 198.18.0.5 --dst-ip {EXTERNAL_ADDR}"));
    forge(
        &host,
        &format!("ipv4 --src-mac {victim_mac} --src-ip {ATTACKER} --dst-ip {THIRD} --dst-mac {third_mac}"),
    );
    forge(&host, &format!("arp --src-ip {VICTIM}"));

    let ping = ping.wait_with_output().unwrap();
    let summary = String::from_utf8_lossy(&ping.stdout).to_string();
    assert!(summary.contains(" 0% packet loss"), "the victim lost traffic: {summary}");
    let sent: u64 =
        summary.split(" packets transmitted").next().unwrap().rsplit('\n').next().unwrap().parse().unwrap();

    assert_eq!(
        echoes_received_by(&host, "third") - third_before,
        sent,
        "the third container received echo requests the victim did not send"
    );
    assert_eq!(echoes_received_outside(&host), outside_before, "a foreign source reached the outside");
    assert_eq!(
        neighbour_mac(&host, "third", VICTIM),
        victim_mac,
        "the gratuitous ARP poisoned the third's neighbour entry (attacker {attacker_mac})"
    );
    assert_eq!(host.counter("dropped_spoofed_ip"), 2 * FORGED, "forged IPv4 sources were not all dropped");
    assert_eq!(host.counter("dropped_spoofed_mac"), FORGED, "forged MACs were not all dropped");
    assert_eq!(host.counter("dropped_spoofed_arp"), FORGED, "forged ARP was not all dropped");
    // The attacker's own traffic is untouched.
    assert!(host.ping("attacker", THIRD), "the attacker's own address no longer works");
}

/// Containers' interfaces have no IPv6 address on a network without IPv6, but their
/// kernels still take router advertisements. One from a container would give its
/// neighbours an address from its prefix and a default route through it (SLAAC); the
/// programs drop it.
#[test]
fn a_containers_router_advertisement_gives_its_neighbours_no_address_or_route() {
    let host = Host::start();
    host.dp_ok(&["network", "create", "--subnet", "10.51.0.0/24", "lan"]);
    for name in ["victim", "attacker"] {
        host.run_sleeper(name, &["--network", "lan"]);
    }
    forge(&host, "router-advertisement --src-ip 0.0.0.0");
    // A kernel that takes an advertisement configures its address at once.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let shown = host.exec("victim", "ip -6 -o addr show dev eth0; ip -6 route show default");
    let shown = String::from_utf8_lossy(&shown.stdout).to_string();
    assert_eq!(shown.trim(), "", "the attacker's router advertisement configured the victim's IPv6");
    assert_eq!(host.counter("dropped_router_message"), FORGED, "router advertisements were not all dropped");
}
