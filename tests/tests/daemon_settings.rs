//! The daemon's settings on a real host: the config file, flags over it, the log level,
//! and the log an operator reads (what was made and removed, and why the default network
//! is not on 172.17.0.0/16).

use std::time::Duration;

use dataplane_tests::{Host, eventually};

/// The max_entries of a pinned map, read with bpftool.
fn max_entries(host: &Host, map: &str) -> u64 {
    let shown =
        host.sh_ok(&format!("bpftool -j map show pinned {}", host.bpffs().join("maps").join(map).display()));
    let info: serde_json::Value = serde_json::from_str(&shown).unwrap();
    info["max_entries"].as_u64().unwrap()
}

#[test]
fn the_config_file_sets_what_no_flag_does_and_a_flag_overrides_it() {
    let mut host = Host::empty().unwrap();
    let config = host.dir.join("daemon.toml");
    std::fs::write(&config, "conntrack-max = 1024\nlog-level = \"warn\"\n").unwrap();
    let config = config.display().to_string();
    host.set_daemon_env(&[("DATAPLANE_CONFIG", &config)]);
    host.start_daemon();
    assert_eq!(max_entries(&host, "DNAT_CT"), 1024, "conntrack-max from the file");
    host.dp_ok(&["network", "create", "--subnet", "10.78.0.0/24", "quiet"]);
    assert!(!host.daemon_log().contains("created network"), "log-level warn: {}", host.daemon_log());
    host.stop_daemon();

    // A pinned table keeps its size: remove it, so that the next start sizes it afresh.
    std::fs::remove_file(host.bpffs().join("maps/DNAT_CT")).unwrap();
    host.set_daemon_env(&[("DATAPLANE_CONFIG", &config), ("DATAPLANE_CONNTRACK_MAX", "2048")]);
    host.start_daemon();
    assert_eq!(max_entries(&host, "DNAT_CT"), 2048, "the flag's variable over the file");
}

#[test]
fn the_daemon_logs_what_it_makes_and_removes_and_where_the_default_network_went() {
    let mut host = Host::empty().unwrap();
    // The host routes Docker's default range already, as it would with a docker0.
    host.sh_ok(
        "ip link add docker0 type bridge && ip addr add 172.17.0.1/16 dev docker0 && ip link set docker0 up",
    );
    host.start_daemon();
    let log = host.daemon_log();
    assert!(
        log.contains("the default network takes 172.18.0.0/16 instead of 172.17.0.0/16: the host already routes 172.17.0.0/16"),
        "{log}"
    );
    host.dp_ok(&["network", "create", "--subnet", "10.79.0.0/24", "blue"]);
    host.dp_ok(&["run", "--name", "once", "--network", "blue", "true"]);
    host.dp_ok(&["rm", "once"]);
    host.dp_ok(&["network", "rm", "blue"]);
    let expected = [
        "created network blue (",
        "created container once (",
        "blue 10.79.0.2",
        "container once exited (0); its addresses are released",
        "removed container once (",
        "removed network blue (",
    ];
    assert!(
        eventually(Duration::from_secs(5), || expected.iter().all(|line| host.daemon_log().contains(line))),
        "{expected:?} in:\n{}",
        host.daemon_log()
    );
}
