//! The CLI as a Docker user, or a script written for Docker, meets it: one daemon per
//! state dir, Docker's exit codes, and `port`.

use std::{process::Stdio, time::Duration};

use dataplane_tests::{Host, binary, eventually};

#[test]
fn a_second_daemon_on_the_same_state_dir_refuses_to_start_and_the_first_keeps_working() {
    let mut host = Host::start();
    host.run_sleeper("before", &[]);
    let first_pid = host.daemon_pid().expect("the first daemon runs");
    let state_dir = host.dir.join("state");
    // Its own socket, so that only the state dir is shared: the case the lock is for.
    let mut second = host
        .command(binary())
        .env("DATAPLANE_SOCKET", host.dir.join("second.sock"))
        .arg("daemon")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if !eventually(Duration::from_secs(30), || second.try_wait().unwrap().is_some()) {
        let _ = second.kill();
        let _ = second.wait();
        panic!("a second daemon on {} started and served for 30 s", state_dir.display());
    }
    let out = second.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the second daemon exited with success: {stderr}");
    assert!(
        stderr.contains(&state_dir.display().to_string()),
        "the error does not name the state dir: {stderr}"
    );
    assert!(stderr.contains(&format!("PID {first_pid}")), "the error does not name the holder: {stderr}");
    assert!(
        stderr.contains("stop that daemon") && stderr.contains("--state-dir"),
        "the error gives no fix: {stderr}"
    );

    host.run_sleeper("after", &[]);
    let ps = host.dp_ok(&["ps", "--format", "{{.Names}}"]);
    assert_eq!(ps, "after\nbefore\n", "the first daemon lost track (or ps is not newest first): {ps}");
    assert_eq!(host.state().containers.len(), 2, "the state holds what the first daemon made");

    // The kernel drops the lock with its holder: a killed daemon leaves none behind.
    host.kill_daemon();
    host.start_daemon();
    let ps = host.dp_ok(&["ps", "--format", "{{.Names}}"]);
    assert!(ps.lines().any(|name| name == "after"), "the restarted daemon lost its containers: {ps}");
}

/// The exit code of a CLI command in the host namespace, and its error output.
fn code_of(host: &Host, args: &[&str]) -> (Option<i32>, String) {
    let out = host.dp(args);
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn exit_codes_are_dockers_and_port_prints_dockers_lines() {
    let host = Host::start();
    // 125: run's own errors, and flags no command takes.
    let (code, err) = code_of(&host, &["run", "--bogus", "true"]);
    assert_eq!(code, Some(125), "run with a bad flag: {err}");
    let (code, err) = code_of(&host, &["run", "--rm", "--network", "nosuch", "true"]);
    assert_eq!(code, Some(125), "run on a missing network: {err}");
    assert!(err.contains("nosuch"), "the error names the network: {err}");
    let (code, err) = code_of(&host, &["ps", "--bogus"]);
    assert_eq!(code, Some(125), "ps with a bad flag: {err}");
    // The container's own code for a foreground run.
    let (code, err) = code_of(&host, &["run", "--rm", "sh", "-c", "exit 3"]);
    assert_eq!(code, Some(3), "a foreground run passes its command's code through: {err}");
    // 1: the other commands' errors.
    let (code, err) = code_of(&host, &["rm", "nosuch"]);
    assert_eq!(code, Some(1), "rm of a missing container: {err}");
    let (code, err) = code_of(&host, &["port", "nosuch"]);
    assert_eq!(code, Some(1), "port of a missing container: {err}");

    host.run_sleeper("web", &["-p", "8080:80", "-p", "5353:53/udp", "-p", "127.0.0.1:9000:9000"]);
    assert_eq!(
        host.dp_ok(&["port", "web"]).lines().collect::<Vec<_>>(),
        ["53/udp -> 0.0.0.0:5353", "80/tcp -> 0.0.0.0:8080", "9000/tcp -> 127.0.0.1:9000"],
        "every published port, in port order"
    );
    assert_eq!(host.dp_ok(&["port", "web", "80"]), "0.0.0.0:8080\n", "one port: its host address alone");
    assert_eq!(host.dp_ok(&["port", "web", "53/udp"]), "0.0.0.0:5353\n");
    let (code, err) = code_of(&host, &["port", "web", "81"]);
    assert_eq!(code, Some(1), "a port it does not publish: {err}");
    assert!(err.contains("container web publishes no port 81/tcp"), "the error names both: {err}");
    let (code, err) = code_of(&host, &["port", "web", "53/sctp"]);
    assert_eq!(code, Some(125), "a malformed port is a flag error: {err}");

    host.dp_ok(&["stop", "-t", "1", "web"]);
    assert_eq!(host.dp_ok(&["port", "web"]), "", "a stopped container publishes nothing, as on Docker");
    let err = host.dp_err(&["port", "web", "80"]);
    assert!(err.contains("not running") && err.contains("dataplane start web"), "{err}");
}

#[test]
fn version_names_the_client_the_kernel_and_the_daemon_or_says_it_is_not_running() {
    let mut host = Host::start();
    let ours = host.dp_ok(&["--version"]).trim().trim_start_matches("dataplane ").to_string();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let report = host.dp_ok(&["version"]);
    assert!(report.contains(&format!(" Kernel:   {}\n", kernel.trim())), "{report}");
    assert!(
        report.ends_with(&format!(
            "Server:\n Version:  {ours}\n BPF:      tc (sched_cls), xdp, cgroup sock_addr, lru_hash, lpm_trie, btf\n"
        )),
        "the daemon's version and the BPF features it found (all of them, on the kernels we test on): {report}"
    );

    host.stop_daemon();
    let out = host.dp(&["version"]);
    let report = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "no daemon: {report}");
    assert!(
        report.starts_with(&format!("Client:\n Version:  {ours}\n")),
        "the client's part still: {report}"
    );
    assert!(report.contains("daemon not running"), "{report}");
    assert!(
        report.contains(&host.socket().display().to_string()) && report.contains("dataplane daemon"),
        "names the socket and the fix: {report}"
    );
}
