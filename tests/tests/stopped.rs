//! Stopped containers, as on Docker: a command that ends (by itself or `stop`) releases
//! the container's networking, `start` and `restart` bring it back; `logs`, exit codes
//! across a restart of the daemon, and the command's environment.

use std::time::Duration;

use dataplane_tests::{Host, eventually};

/// Whether `client` reaches `target` (a name or an address) with an HTTP request to port 80.
fn fetches(host: &Host, client: &str, target: &str) -> bool {
    host.exec(client, &format!("curl -sf -m 2 -o /dev/null http://{target}/")).status.success()
}

fn veths(host: &Host) -> usize {
    host.links().iter().filter(|l| l.starts_with("veth")).count()
}

#[test]
fn stop_releases_the_network_and_start_brings_it_back() {
    let host = Host::start();
    host.dp_ok(&["network", "create", "--subnet", "10.77.0.0/24", "net"]);
    host.run_sleeper("client", &["--network", "net"]);
    host.dp_ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "--network",
        "net",
        "--ip",
        "10.77.0.5",
        "--mac-address",
        "02:00:00:00:77:05",
        "-p",
        "8080:80",
        "python3",
        "-m",
        "http.server",
        "80",
    ]);
    assert!(eventually(Duration::from_secs(10), || fetches(&host, "client", "web")), "web serves by name");
    assert_eq!(host.map_entries("ENDPOINTS"), 2);

    host.dp_ok(&["stop", "-t", "1", "web"]);
    assert_eq!(host.map_entries("ENDPOINTS"), 1, "the stopped container's endpoint left the map");
    assert_eq!(host.map_entries("PUBLISHED"), 0, "its published port went");
    assert_eq!(veths(&host), 1, "its veth went");
    assert!(!host.exec("client", "getent hosts web").status.success(), "its name no longer resolves");
    assert_eq!(host.dp_json(&["inspect", "web"])[0]["NetworkSettings"]["Networks"]["net"]["IPAddress"], "");
    // Its address is free for others meanwhile, as on Docker.
    host.dp_ok(&["run", "--rm", "--network", "net", "--ip", "10.77.0.5", "true"]);
    let err = host.dp_err(&["network", "connect", "bridge", "web"]);
    assert!(err.contains("not running") && err.contains("dataplane start web"), "{err}");

    host.dp_ok(&["start", "web"]);
    let info = &host.dp_json(&["inspect", "web"])[0];
    assert_eq!(info["State"]["Status"], "running");
    let on_net = &info["NetworkSettings"]["Networks"]["net"];
    assert_eq!(
        (on_net["IPAddress"].as_str(), on_net["MacAddress"].as_str()),
        (Some("10.77.0.5"), Some("02:00:00:00:77:05"))
    );
    assert_eq!(host.dp_ok(&["port", "web"]).trim(), "80/tcp -> 0.0.0.0:8080", "its port is published again");
    assert!(
        eventually(Duration::from_secs(10), || fetches(&host, "client", "web")),
        "web serves again, by name"
    );

    host.dp_ok(&["restart", "-t", "1", "web"]);
    assert!(
        eventually(Duration::from_secs(10), || fetches(&host, "client", "10.77.0.5")),
        "web serves after restart"
    );
    assert_eq!((host.map_entries("ENDPOINTS"), veths(&host)), (2, 2), "one endpoint each, nothing left over");
    host.dp_ok(&["rm", "-f", "web", "client"]);
    assert_eq!((host.map_entries("ENDPOINTS"), veths(&host)), (0, 0));
}

#[test]
fn exited_containers_hold_no_network_and_no_joined_container() {
    let host = Host::start();
    host.dp_ok(&["network", "create", "--subnet", "10.78.0.0/24", "net"]);
    assert_eq!(host.dp_ok(&["run", "--name", "once", "--network", "net", "true"]), "");
    assert_eq!(host.map_entries("ENDPOINTS"), 0, "a command that ended released its endpoint");
    // Not an active endpoint: the network goes, and the container says so at its start.
    host.dp_ok(&["network", "rm", "net"]);
    let err = host.dp_err(&["start", "once"]);
    assert!(err.contains("has been removed") && err.contains("once"), "{err}");

    // Only running joiners hold the container whose network they share.
    host.run_sleeper("x", &[]);
    host.dp_ok(&["run", "--name", "joiner", "--network", "container:x", "true"]);
    host.dp_ok(&["rm", "-f", "x"]);
    let err = host.dp_err(&["start", "joiner"]);
    assert!(err.contains("was removed") && err.contains("joiner"), "{err}");

    // Without networks of their own, containers start again all the same.
    for mode in ["none", "host"] {
        let name = format!("on-{mode}");
        host.dp_ok(&["run", "--name", &name, "--network", mode, "sh", "-c", "echo $HOSTNAME"]);
        host.dp_ok(&["start", &name]);
        assert!(
            eventually(Duration::from_secs(10), || host.dp_ok(&["logs", &name]).lines().count() == 1),
            "{mode}: the started command wrote its log"
        );
    }

    assert!(host.dp_ok(&["network", "prune"]).contains("No unused networks"));
    // A stopped container's network stays for its next start; an unused one goes.
    host.dp_ok(&["network", "create", "--subnet", "10.79.0.0/24", "spare"]);
    host.dp_ok(&["network", "create", "--subnet", "10.80.0.0/24", "kept"]);
    host.dp_ok(&["run", "--name", "later", "--network", "kept", "true"]);
    assert_eq!(host.dp_ok(&["network", "prune"]), "Deleted Networks:\nspare\n");
    host.dp_ok(&["start", "later"]);
}

#[test]
fn logs_env_workdir_and_exit_codes_across_a_daemon_restart() {
    let mut host = Host::start();
    host.dp_ok(&[
        "run",
        "-d",
        "--name",
        "talk",
        "-e",
        "GREETING=hello",
        "-w",
        "/tmp",
        "sh",
        "-c",
        "echo one; echo $GREETING; pwd; env | grep -c DATAPLANE_; sleep 1; echo last; exit 3",
    ]);
    // -f prints what is there, then follows until the command ends.
    let followed = host.dp_ok(&["logs", "-f", "talk"]);
    assert_eq!(followed, "one\nhello\n/tmp\n0\nlast\n", "the daemon's DATAPLANE_* stay its own");
    assert_eq!(host.dp_ok(&["logs", "--tail", "2", "talk"]), "0\nlast\n");
    assert!(host.dp_ok(&["ps", "-a"]).contains("Exited (3)"));
    let info = &host.dp_json(&["inspect", "talk"])[0];
    assert!(info["LogPath"].as_str().is_some_and(|p| p.ends_with(".log")), "{info}");

    // exec takes the container's environment, and its own.
    host.run_sleeper("env", &["-e", "A=1"]);
    let out = host.dp_ok(&["exec", "-e", "B=2", "env", "sh", "-c", "echo $A$B"]);
    assert_eq!(out, "12\n");

    // A refused run leaves no log behind.
    let logs = host.dir.join("state/logs");
    let before = std::fs::read_dir(&logs).unwrap().count();
    host.dp_err(&["run", "-d", "--name", "bad", "no-such-command-here"]);
    assert_eq!(std::fs::read_dir(&logs).unwrap().count(), before, "the refused run left a log");

    // A command that ends after a restart of the daemon keeps its exit code.
    host.dp_ok(&[
        "run",
        "-d",
        "--name",
        "slow",
        "sh",
        "-c",
        "trap 'exit 4' TERM; while true; do sleep 0.1; done",
    ]);
    host.stop_daemon();
    host.start_daemon();
    host.dp_ok(&["stop", "-t", "5", "slow"]);
    let status = host.dp_json(&["inspect", "slow"])[0]["State"].clone();
    assert_eq!(
        (status["Status"].as_str(), status["ExitCode"].as_i64()),
        (Some("exited"), Some(4)),
        "{status}"
    );
}
