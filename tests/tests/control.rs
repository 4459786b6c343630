//! The daemon's control socket: root's alone (others are told so, as a daemon without
//! root is told what it lacks), and a client that sends garbage, too much or
//! nothing at all gets an error while the daemon goes on answering everyone else.

use std::{
    fs,
    io::{Read, Write},
    os::unix::{
        fs::{FileTypeExt, MetadataExt},
        net::UnixStream,
    },
    process::Stdio,
    sync::mpsc,
    time::{Duration, Instant},
};

use dataplane_tests::{Host, binary};

/// Everything the daemon sends before it closes the connection (or 20 s pass).
fn answer_of(mut client: UnixStream) -> String {
    client.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut answer = vec![];
    // The daemon may close with part of the request unread: the answer comes first, then
    // the reset, which ends the read.
    let _ = client.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

#[test]
fn the_control_socket_is_roots_alone() {
    let host = Host::start();
    let socket = fs::metadata(host.socket()).unwrap();
    assert!(socket.file_type().is_socket(), "{} is not a socket", host.socket().display());
    assert_eq!(socket.mode() & 0o7777, 0o600, "mode {:o}: anyone else could drive the daemon", socket.mode());
    assert_eq!((socket.uid(), socket.gid()), (0, 0), "the socket is not root's");

    // Someone else is told what is needed, not a bare errno; so is a daemon without root.
    let as_nobody = |args: &[&str]| {
        host.command("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(binary())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let out = as_nobody(&["ps"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let denied = format!("permission denied on {}", host.socket().display());
    assert!(err.contains(&denied) && err.contains("run this as root"), "names the socket and the fix: {err}");
    let out = as_nobody(&["daemon"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("needs root's CAP_NET_ADMIN, CAP_BPF and CAP_SYS_ADMIN")
            && err.contains("lacks CAP_NET_ADMIN, CAP_BPF, CAP_SYS_ADMIN")
            && err.contains("run it as root"),
        "{err}"
    );
}

#[test]
fn bad_clients_get_an_error_and_hold_up_no_one() {
    let host = Host::start();
    // A client that connects and sends nothing...
    let silent = UnixStream::connect(host.socket()).unwrap();
    let connected = Instant::now();
    // ...and one that sends 2 MiB without a newline, half of it before the `run` below.
    let (half_sent, half_sent_rx) = mpsc::channel();
    let (go_on, go_on_rx) = mpsc::channel::<()>();
    let mut flood = UnixStream::connect(host.socket()).unwrap();
    let flooder = std::thread::spawn(move || {
        let chunk = vec![b'x'; 64 * 1024];
        for i in 0..32 {
            if i == 16 {
                half_sent.send(()).unwrap();
                go_on_rx.recv().unwrap();
            }
            // The daemon stops reading past 1 MiB and closes: the rest fails.
            if flood.write_all(&chunk).is_err() {
                break;
            }
        }
        answer_of(flood)
    });
    half_sent_rx.recv_timeout(Duration::from_secs(10)).expect("the daemon does not read requests");
    let asked = Instant::now();
    host.run_sleeper("a", &[]);
    let ps = host.dp_ok(&["ps", "--format", "{{.Names}}"]);
    assert!(ps.lines().any(|name| name == "a"), "{ps}");
    assert!(
        asked.elapsed() < Duration::from_secs(3),
        "run and ps took {:?} next to bad clients",
        asked.elapsed()
    );
    go_on.send(()).unwrap();
    let answer = flooder.join().unwrap();
    assert!(answer.contains("\"error\"") && answer.contains("1 MiB"), "a request over 1 MiB: {answer:?}");

    let mut garbage = UnixStream::connect(host.socket()).unwrap();
    garbage.write_all(b"{\"request\": \"launch_missiles\"}\n").unwrap();
    let answer = answer_of(garbage);
    assert!(answer.contains("malformed request"), "a malformed request: {answer:?}");

    let answer = answer_of(silent);
    let waited = connected.elapsed();
    assert!(
        answer.contains("\"error\"") && answer.contains("10 s"),
        "a client that sends nothing: {answer:?}"
    );
    assert!(
        (Duration::from_secs(9)..Duration::from_secs(15)).contains(&waited),
        "a client that sends nothing is answered after 10 s, not {waited:?}"
    );
    assert_eq!(host.dp_ok(&["ps", "--format", "{{.Names}}"]), "a\n", "the daemon stopped answering");
}
