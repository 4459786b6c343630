//! Container lifecycle: foreground runs, restarts of the daemon, removal leaving nothing.

use std::{fs, process::Stdio, time::Duration};

use dataplane_tests::{
    Host, KillOnDrop, binary, eventually, namespace_inode, namespace_pids, processes_in_namespace, stdout_of,
};

#[test]
fn foreground_run_passes_output_and_exit_code_through() {
    let host = Host::start();
    let out = host.dp(&[
        "run",
        "--name",
        "fg",
        "--hostname",
        "box",
        "--",
        "sh",
        "-c",
        "hostname; ip -o -4 addr show eth0; exit 7",
    ]);
    assert_eq!(out.status.code(), Some(7));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("box\n"), "{stdout}");
    assert!(stdout.contains("172.17.0.2/16"), "{stdout}");
    let info = host.dp_json(&["inspect", "fg"]);
    assert_eq!(info[0]["State"]["Status"], "exited");
    assert_eq!(info[0]["State"]["ExitCode"], 7);
    assert!(host.dp_ok(&["ps"]).lines().count() == 1, "ps hides exited containers");
    assert!(host.dp_ok(&["ps", "-a"]).contains("Exited (7)"));
    let out = host.dp(&["run", "--rm", "--", "true"]);
    assert!(out.status.success());
    assert_eq!(host.dp_ok(&["ps", "-a"]).lines().count(), 2, "--rm removed its container");
    assert_eq!(host.container_namespaces().len(), 1);
}

#[test]
fn detached_container_with_rm_goes_away_when_its_command_ends() {
    let host = Host::start();
    host.dp_ok(&["run", "-d", "--rm", "--name", "brief", "--", "sleep", "0.3"]);
    assert!(eventually(Duration::from_secs(10), || host.dp_ok(&["ps", "-a"]).lines().count() == 1));
    assert!(host.container_namespaces().is_empty());
    host.dp_ok(&["run", "-d", "--name", "kept", "--", "sleep", "0.2"]);
    assert!(eventually(Duration::from_secs(10), || host.dp_ok(&["ps", "-a"]).contains("Exited (0)")));
}

#[test]
fn stop_ends_the_command_and_rm_needs_force_while_running() {
    let host = Host::start();
    host.run_sleeper("s", &[]);
    let err = host.dp_err(&["rm", "s"]);
    assert!(err.contains("is running") && err.contains("rm -f"), "{err}");
    // `sleep` as PID 1 has no handler for SIGTERM, so the kernel ignores it: killed at -t.
    host.dp_ok(&["stop", "-t", "1", "s"]);
    assert_eq!(host.dp_json(&["inspect", "s"])[0]["State"]["Status"], "exited");
    host.dp_ok(&["rm", "s"]);
}

/// `rm` answers before the kernel has deleted the container's veth, which goes on the
/// link reaper's thread. A name, an address and a published port taken again at once
/// must still work, and keep working once the old veth's late deletion has run: nothing
/// of the new container may go with it.
/// The old veth (same address, same MAC) may still be on the bridge for a moment: the host
/// reaches the new container through the bridge, where the old port held the MAC.
#[test]
fn a_name_and_an_address_are_taken_again_at_once_after_rm() {
    let host = Host::start();
    host.dp_ok(&["network", "create", "--subnet", "10.91.0.0/24", "net"]);
    host.run_sleeper("peer", &["--network", "net", "--ip", "10.91.0.9"]);
    let web = ["run", "-d", "--name", "c", "--network", "net", "--ip", "10.91.0.5", "-p", "18091:80"];
    let serve = ["--", "python3", "-m", "http.server", "80"];
    let fetch = "curl -sf -m 2 -o /dev/null http://127.0.0.1:18091/";
    for round in 0..6 {
        if round > 0 {
            // In one shell: no gap between the answer and the next run.
            host.sh_ok(&format!(
                "{bin} rm -f c && {bin} {} {}",
                web.join(" "),
                serve.join(" "),
                bin = binary().display()
            ));
        } else {
            host.dp_ok(&[&web[..], &serve[..]].concat());
        }
        let context = format!("round {round}");
        assert!(
            host.sh("ping -c 1 -W 1 10.91.0.5").status.success(),
            "{context}: the host does not reach the new c"
        );
        assert!(host.ping("peer", "10.91.0.5"), "{context}: peer does not reach the new c");
        assert!(host.ping("c", "10.91.0.9"), "{context}: the new c does not reach peer");
        assert!(
            eventually(Duration::from_secs(5), || host.sh_in_cgroup(fetch).status.success()),
            "{context}: the new c's published port does not answer"
        );
    }
    // The last removal's deletion has run by now: the new c keeps everything.
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        host.sh("ping -c 1 -W 1 10.91.0.5").status.success(),
        "the host lost c after the old one's deletion"
    );
    assert!(host.ping("peer", "10.91.0.5"), "peer lost c after the old one's deletion");
    assert!(host.sh_in_cgroup(fetch).status.success(), "c's published port went with the old one's deletion");
    let named = host.exec("peer", "dig +short +time=2 +tries=1 c");
    assert_eq!(String::from_utf8_lossy(&named.stdout).trim(), "10.91.0.5", "the network's DNS lost c");
    assert_eq!(host.map_entries("ENDPOINTS"), 2);
    assert_eq!(host.map_entries("PUBLISHED"), 1);
    assert_eq!(fs::read_dir(host.dir.join("state/containers")).unwrap().count(), 2, "containers' /etc dirs");
    // The network goes at once after its last containers, their veths still pending.
    let bridge = host.state().network("net").unwrap().bridge.clone();
    host.sh_ok(&format!("{bin} rm -f c peer && {bin} network rm net", bin = binary().display()));
    let ours = || host.links().into_iter().filter(|l| l.starts_with("veth") || *l == bridge).count();
    assert!(eventually(Duration::from_secs(5), || ours() == 0), "links left: {:?}", host.links());
    assert!(host.container_namespaces().is_empty(), "namespaces left: {:?}", host.container_namespaces());
}

#[test]
fn rm_leaves_no_veth_namespace_or_map_entry_behind() {
    let host = Host::start();
    host.dp_ok(&["network", "create", "--subnet", "10.90.0.0/24", "net"]);
    host.run_sleeper("a", &["--network", "net"]);
    host.run_sleeper("b", &[]);
    assert_eq!(host.map_entries("ENDPOINTS"), 2);
    assert_eq!(host.configured_interfaces(), 2);
    assert_eq!(host.links().iter().filter(|l| l.starts_with("veth")).count(), 2);
    assert_eq!(host.container_namespaces().len(), 2);
    host.dp_ok(&["rm", "-f", "a", "b"]);
    assert_eq!(host.map_entries("ENDPOINTS"), 0);
    assert_eq!(host.configured_interfaces(), 0);
    // The veths go right after the answer (the link reaper's thread deletes them).
    assert!(
        eventually(Duration::from_secs(5), || !host
            .links()
            .iter()
            .any(|l| l.starts_with("veth") || l.starts_with("dpt"))),
        "links left: {:?}",
        host.links()
    );
    assert!(host.container_namespaces().is_empty());
    assert_eq!(host.dp_ok(&["ps", "-a"]).lines().count(), 1);
}

/// A container's command gets a mount namespace of its own (for its /etc files), a copy
/// of the daemon's. Were the namespace pins copied along, each container would hold one
/// mount per container before it: N² mounts of kernel memory for N containers.
#[test]
fn container_commands_hold_no_copies_of_the_namespace_pins() {
    let host = Host::start();
    host.run_sleeper("a", &[]);
    host.run_sleeper("b", &[]);
    let pin =
        host.dp_json(&["inspect", "a"])[0]["NetworkSettings"]["SandboxKey"].as_str().unwrap().to_string();
    let netns_dir = std::path::Path::new(&pin).parent().unwrap().to_str().unwrap().to_string();
    for name in ["a", "b"] {
        let pid = host.dp_json(&["inspect", name])[0]["State"]["Pid"].as_u64().unwrap();
        let mounts = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
        let pins: Vec<_> = mounts.lines().filter(|line| line.contains(&netns_dir)).collect();
        assert!(pins.is_empty(), "container {name}'s mount namespace holds the daemon's pins: {pins:?}");
    }
    let exec = String::from_utf8(host.exec("b", "cat /proc/self/mountinfo").stdout).unwrap();
    assert!(!exec.contains(&netns_dir), "exec's mount namespace holds the daemon's pins");
    assert!(host.ping("b", "172.17.0.1"), "b lost its network");
    assert!(exec.contains(" /etc/hosts "), "exec lost the container's /etc files");
    // The pins stay where the daemon and the CLI see them.
    assert!(host.sh_ok("cat /proc/self/mountinfo").contains(&pin));
}

#[test]
fn restart_restores_state_and_traffic_keeps_flowing() {
    let mut host = Host::start();
    host.dp_ok(&["network", "create", "--subnet", "10.91.0.0/24", "net"]);
    host.run_sleeper("a", &["--network", "net"]);
    host.run_sleeper("b", &["--network", "net"]);
    let b = host.ip_of("b");
    assert!(host.ping("a", &b));
    let netns_a =
        host.dp_json(&["inspect", "a"])[0]["NetworkSettings"]["SandboxKey"].as_str().unwrap().to_string();
    let veth = host.dp_json(&["inspect", "a"])[0]["NetworkSettings"]["Networks"]["net"]["HostInterface"]
        .as_str()
        .unwrap()
        .to_string();
    host.stop_daemon();
    // With the daemon gone, the programs stay attached and the traffic still flows.
    let filters = host.sh_ok(&format!("tc filter show dev {veth} ingress"));
    assert!(filters.contains("name from_container"), "the program left with the daemon: {filters}");
    let ping = std::process::Command::new("nsenter")
        .arg(format!("--net={netns_a}"))
        .args(["ping", "-c1", "-W1", &b])
        .output()
        .unwrap();
    assert!(ping.status.success(), "no traffic while the daemon was down");
    host.start_daemon();
    // The restarted daemon swapped its program into the existing filter, adding none.
    let filters = host.sh_ok(&format!("tc filter show dev {veth} ingress"));
    assert_eq!(filters.lines().filter(|l| l.contains("name from_container")).count(), 1, "{filters}");
    let ps = host.dp_ok(&["ps"]);
    assert!(ps.contains("a") && ps.contains("b") && ps.contains("Up"), "{ps}");
    let forwarded = host.counter("forwarded");
    assert!(host.ping("a", &b));
    assert!(host.counter("forwarded") >= forwarded + 2, "the fast path is back after restart");
    let named = host.exec("a", "dig +short +time=2 +tries=1 b");
    assert_eq!(String::from_utf8_lossy(&named.stdout).trim(), b, "the resolver is back after restart");
    // The restored allocations are respected: the next address is new.
    host.run_sleeper("c", &["--network", "net"]);
    assert_eq!(host.ip_of("c"), "10.91.0.4");
    assert_eq!(host.map_entries("ENDPOINTS"), 3);
}

/// A restart restores every endpoint of the state, whatever its owner. Here one is
/// written into the state as the CNI plugin (the next front door) will record its
/// attachments: a namespace someone else made, owned by `cni:<containerID>`. It gets its
/// veth, address and map entry back, holds its address, carries traffic, and `network
/// inspect` names its owner; `ps` still shows our own containers only.
#[test]
fn restart_restores_endpoints_whatever_their_owner() {
    let mut host = Host::start();
    host.dp_ok(&["network", "create", "--subnet", "10.87.0.0/24", "pods"]);
    let pod = host.add_namespace("pod");
    host.stop_daemon();
    let path = host.dir.join("state/state.json");
    let mut state: serde_json::Value = serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    let networks = state["networks"].as_array().unwrap();
    let network = networks.iter().find(|n| n["name"] == "pods").unwrap()["id"].clone();
    let id = "e".repeat(64);
    state["endpoints"].as_array_mut().unwrap().push(serde_json::json!({
        "id": id,
        "owner": {"kind": "cni", "container_id": "pod-1"},
        "netns": format!("/run/netns/{pod}"),
        "ifname": "eth0",
        "network_id": network,
        "ip": "10.87.0.9",
        "mac": "02:42:0a:57:00:09",
        "host_veth": "vethc000009",
    }));
    fs::write(&path, serde_json::to_vec(&state).unwrap()).unwrap();
    host.start_daemon();
    let listed = host.dp_json(&["network", "inspect", "pods"])[0]["Containers"][id.as_str()].clone();
    assert_eq!(listed["Owner"], "cni:pod-1", "network inspect names the owner: {listed}");
    assert_eq!(listed["IPv4Address"], "10.87.0.9/24", "{listed}");
    assert!(host.links().contains(&"vethc000009".to_string()), "the endpoint's veth was not built again");
    let inside = host.ns_sh_ok(&pod, "ip -o -4 addr show eth0");
    assert!(inside.contains("10.87.0.9/24"), "the endpoint's address is not in its namespace: {inside}");
    assert_eq!(host.map_entries("ENDPOINTS"), 1, "the endpoint is not in the maps");
    let err = host.dp_err(&["run", "--network", "pods", "--ip", "10.87.0.9", "--", "true"]);
    assert!(err.contains("already in use"), "the endpoint's address was handed out again: {err}");
    host.run_sleeper("c", &["--network", "pods"]);
    let forwarded = host.counter("forwarded");
    assert!(host.ping("c", "10.87.0.9"), "a container cannot reach the restored endpoint");
    assert!(
        host.counter("forwarded") >= forwarded + 2,
        "the fast path does not carry the endpoint's traffic"
    );
    assert_eq!(host.dp_ok(&["ps", "-a"]).lines().count(), 2, "ps shows our own containers only");
}

/// Processes running exactly `cmdline` (arguments joined by spaces), anywhere on the machine.
fn processes_running(cmdline: &str) -> Vec<String> {
    let wanted: Vec<u8> = cmdline.split(' ').flat_map(|arg| arg.bytes().chain([0])).collect();
    fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == wanted))
        .map(|pid| pid.to_string())
        .collect()
}

/// `sh -c 'server & exec other'`: the background process must go with the container, as
/// must one started by `exec`. Each container's command is PID 1 of a PID namespace of
/// its own, and the kernel kills the rest of a PID namespace when its PID 1 dies.
#[test]
fn rm_f_ends_every_process_of_the_container() {
    let host = Host::start();
    host.dp_ok(&["run", "-d", "--name", "web", "--", "sh", "-c", "sleep 1000 & exec sleep 1001"]);
    let out = host.exec("web", "sleep 1002 >/dev/null 2>&1 &");
    assert!(out.status.success(), "exec: {}", String::from_utf8_lossy(&out.stderr));
    let netns = host.netns_inode_of("web");
    assert!(
        eventually(Duration::from_secs(5), || processes_in_namespace("net", netns).len() == 3),
        "the container should run three sleeps: {:?}",
        processes_in_namespace("net", netns)
    );
    host.dp_ok(&["rm", "-f", "web"]);
    let left = processes_in_namespace("net", netns);
    assert!(left.is_empty(), "rm -f left processes of the container running: {left:?}");
}

#[test]
fn stop_ends_every_process_of_the_container() {
    let host = Host::start();
    host.dp_ok(&["run", "-d", "--name", "s", "--", "sh", "-c", "sleep 1000 & exec sleep 1001"]);
    let netns = host.netns_inode_of("s");
    assert!(
        eventually(Duration::from_secs(5), || processes_in_namespace("net", netns).len() == 2),
        "the container should run two sleeps: {:?}",
        processes_in_namespace("net", netns)
    );
    host.dp_ok(&["stop", "-t", "1", "s"]);
    let left = processes_in_namespace("net", netns);
    assert!(left.is_empty(), "stop left processes of the container running: {left:?}");
    let state = &host.dp_json(&["inspect", "s"])[0]["State"];
    assert_eq!(state["Status"], "exited", "{state}");
    assert_eq!(state["Pid"], 0, "a stopped container has no PID: {state}");
}

#[test]
fn rm_flag_ends_every_process_of_the_container() {
    let host = Host::start();
    // Detached: the command ends after a second, leaving a background process.
    host.dp_ok(&["run", "-d", "--rm", "--name", "brief", "--", "sh", "-c", "sleep 1000 & sleep 1"]);
    let netns = host.netns_inode_of("brief");
    assert!(
        eventually(Duration::from_secs(10), || host.dp_ok(&["ps", "-a"]).lines().count() == 1),
        "--rm did not remove the container"
    );
    let left = processes_in_namespace("net", netns);
    assert!(left.is_empty(), "a detached --rm container left processes running: {left:?}");
    // Foreground: its pin is gone when `run` returns, so the command names its namespace.
    let out = host.dp(&[
        "run",
        "--rm",
        "--",
        "sh",
        "-c",
        "sleep 1000 >/dev/null 2>&1 & stat -L -c %i /proc/self/ns/net",
    ]);
    let netns: u64 = stdout_of(out).trim().parse().unwrap();
    let left = processes_in_namespace("net", netns);
    assert!(left.is_empty(), "a foreground --rm container left processes running: {left:?}");
}

#[test]
fn exec_joins_the_containers_pid_namespace() {
    let host = Host::start();
    host.run_sleeper("a", &[]);
    let pid = host.dp_json(&["inspect", "a"])[0]["State"]["Pid"].as_u64().unwrap();
    let out = stdout_of(
        host.exec("a", "echo $$; tr '\\0' ' ' < /proc/1/cmdline; echo; stat -L -c %i /proc/self/ns/pid"),
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert_ne!(lines[0], "1", "exec's shell must not be the container's PID 1");
    assert_eq!(lines[1].trim(), "sleep 600", "/proc inside shows the container's own PIDs: its PID 1");
    let pid_ns: u64 = lines[2].parse().unwrap();
    assert_eq!(
        pid_ns,
        namespace_inode(format!("/proc/{pid}/ns/pid")),
        "exec runs in the PID namespace of the container's PID 1"
    );
    assert_ne!(pid_ns, namespace_inode("/proc/self/ns/pid"), "exec must not run in the host's PID namespace");
}

/// `State.Pid` is the host's PID of the container's PID 1, whoever started it: the
/// daemon (-d) or the CLI (a foreground run); `rm -f` and `stop` reach both.
#[test]
fn inspect_shows_the_host_pid_of_the_containers_pid_1() {
    let host = Host::start();
    host.run_sleeper("d", &[]);
    let pid = host.dp_json(&["inspect", "d"])[0]["State"]["Pid"].as_u64().unwrap();
    assert_eq!(namespace_pids(pid), [pid.to_string(), "1".into()], "the detached command is PID 1");
    let cli = host
        .command(binary())
        .args(["run", "--name", "fg", "--", "sleep", "601"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut cli = KillOnDrop(cli);
    assert!(
        eventually(Duration::from_secs(5), || {
            let out = host.dp(&["inspect", "fg"]);
            out.status.success()
                && serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()[0]["State"]["Running"]
                    == true
        }),
        "the foreground container never ran"
    );
    let pid = host.dp_json(&["inspect", "fg"])[0]["State"]["Pid"].as_u64().unwrap();
    assert_eq!(namespace_pids(pid), [pid.to_string(), "1".into()], "the foreground command is PID 1");
    assert_eq!(fs::read(format!("/proc/{pid}/cmdline")).unwrap(), b"sleep\x00601\x00");
    let netns = host.netns_inode_of("fg");
    host.dp_ok(&["rm", "-f", "fg"]);
    assert!(
        eventually(Duration::from_secs(5), || cli.0.try_wait().unwrap().is_some()),
        "the foreground run did not end with its container"
    );
    let left = processes_in_namespace("net", netns);
    assert!(left.is_empty(), "rm -f left processes of a foreground container: {left:?}");
    host.dp_ok(&["stop", "-t", "1", "d"]);
    assert_eq!(host.dp_json(&["inspect", "d"])[0]["State"]["Pid"], 0, "a stopped container has no PID");
}

/// A refused `run` changes nothing: no namespace pin, veth, map entry or process.
#[test]
fn refused_runs_leave_no_namespace_veth_or_process_behind() {
    let host = Host::start();
    // Room for one container only.
    host.dp_ok(&["network", "create", "--subnet", "10.93.0.0/30", "small"]);
    host.run_sleeper("a", &["--network", "small"]);
    host.run_sleeper("b", &["-p", "8080:80"]);
    let namespaces = host.container_namespaces();
    let veths = |host: &Host| host.links().into_iter().filter(|l| l.starts_with("veth")).count();
    assert_eq!((namespaces.len(), veths(&host)), (2, 2));
    let refused: [(&[&str], &str); 5] = [
        (&["run", "-d", "--name", "a", "--", "sleep", "4242"], "already in use"),
        (&["run", "--name", "a", "--", "sleep", "4242"], "already in use"),
        (&["run", "-d", "--network", "small", "--", "sleep", "4242"], "no free address"),
        (&["run", "-d", "-p", "8080:80", "--", "sleep", "4242"], "8080/tcp is already in use"),
        (&["run", "-p", "8080:80", "--", "sleep", "4242"], "8080/tcp is already in use"),
    ];
    for (args, why) in refused {
        let err = host.dp_err(args);
        assert!(err.contains(why), "{args:?} should be refused with {why:?}: {err}");
    }
    assert_eq!(host.container_namespaces(), namespaces, "a refused run left a namespace pin");
    assert_eq!(veths(&host), 2, "a refused run left a veth");
    assert_eq!(host.map_entries("ENDPOINTS"), 2, "a refused run left an endpoint");
    assert_eq!(host.dp_ok(&["ps", "-a"]).lines().count(), 3, "a refused run left a container");
    let left = processes_running("sleep 4242");
    assert!(left.is_empty(), "a refused run left its command running: {left:?}");
}
