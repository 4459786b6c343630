//! Name resolution with real clients: `dig` and `getent` inside containers ask the
//! embedded resolver on their gateway, which answers container names and forwards the rest
//! to an upstream server in the external namespace.

use dataplane_tests::{Host, KillOnDrop};

/// The host, with the test zone's server (see dp-dns-upstream) as its upstream.
fn host_with_upstream() -> (Host, KillOnDrop) {
    let host = Host::start_with_external();
    let upstream = host.external_server(env!("CARGO_BIN_EXE_dp-dns-upstream"), &[], "upstream.log");
    (host, upstream)
}

/// `dig +short` from a container: the answer's records, one per line.
fn dig(host: &Host, from: &str, args: &str) -> Vec<String> {
    let out = host.exec(from, &format!("dig +short +time=2 +tries=1 {args}"));
    assert!(out.status.success(), "dig {args}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().lines().map(str::to_string).collect()
}

/// The response code dig reports (NOERROR, NXDOMAIN, SERVFAIL, ...).
fn status(host: &Host, from: &str, name: &str) -> String {
    let out = host.exec(from, &format!("dig +time=2 +tries=1 {name}"));
    let text = String::from_utf8_lossy(&out.stdout);
    let status = text.split("status: ").nth(1).and_then(|s| s.split(',').next());
    status.unwrap_or_else(|| panic!("no status from dig {name}:\n{text}")).to_string()
}

fn getent(host: &Host, from: &str, name: &str) -> Option<String> {
    let out = host.exec(from, &format!("getent hosts {name}"));
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap().into())
}

#[test]
fn containers_resolve_names_hostnames_ids_aliases_and_addresses() {
    let (host, _upstream) = host_with_upstream();
    host.dp_ok(&["network", "create", "--subnet", "10.60.0.0/24", "red"]);
    let web_id =
        host.run_sleeper("web", &["--network", "red", "--hostname", "webhost", "--net-alias", "api"]);
    host.run_sleeper("web2", &["--network", "red", "--network-alias", "api"]);
    host.run_sleeper("client", &["--network", "red"]);
    let (web, web2) = (host.ip_of("web"), host.ip_of("web2"));

    for name in ["web", "WEB", "webhost", &web_id[..12], "web.red"] {
        assert_eq!(dig(&host, "client", name), [web.as_str()], "{name}");
    }
    assert_eq!(getent(&host, "client", "web2"), Some(web2.clone()));
    assert_eq!(dig(&host, "client", &format!("-x {web}")), ["web.red."]);
    assert_eq!(dig(&host, "client", "+tcp web2"), [web2.as_str()], "the resolver answers over TCP too");
    assert_eq!(
        dig(&host, "client", "AAAA web"),
        Vec::<String>::new(),
        "a known name without IPv6 has no data"
    );
    assert_eq!(status(&host, "client", "AAAA web"), "NOERROR");

    // Both containers answer to the shared alias, and the order rotates between queries.
    let mut firsts = std::collections::BTreeSet::new();
    for _ in 0..4 {
        let mut answer = dig(&host, "client", "api");
        firsts.insert(answer[0].clone());
        answer.sort();
        let mut both = vec![web.clone(), web2.clone()];
        both.sort();
        assert_eq!(answer, both);
    }
    assert_eq!(firsts.len(), 2, "the alias always answered in the same order");

    // Stopped containers drop out of the directory.
    host.dp_ok(&["stop", "-t", "1", "web2"]);
    assert_eq!(status(&host, "client", "web2"), "NXDOMAIN");
    assert_eq!(dig(&host, "client", "api"), [web.as_str()]);
}

#[test]
fn other_names_are_forwarded_upstream_with_their_outcome() {
    let (host, _upstream) = host_with_upstream();
    host.dp_ok(&["network", "create", "--subnet", "10.61.0.0/24", "red"]);
    host.run_sleeper("client", &["--network", "red"]);
    assert_eq!(dig(&host, "client", "example.test"), ["198.51.100.10"]);
    assert_eq!(getent(&host, "client", "example.test").as_deref(), Some("198.51.100.10"));
    assert_eq!(status(&host, "client", "nosuch.test"), "NXDOMAIN");
    assert_eq!(status(&host, "client", "fail.test"), "SERVFAIL");
    // 60 records do not fit in 512 bytes of UDP: the upstream truncates, dig retries over
    // TCP, and the resolver forwards that over TCP as well.
    assert_eq!(dig(&host, "client", "+noedns big.test").len(), 60);

    // The default network forwards but resolves no container names, as in Docker.
    host.run_sleeper("plain1", &[]);
    host.run_sleeper("plain2", &[]);
    assert_eq!(dig(&host, "plain1", "example.test"), ["198.51.100.10"]);
    assert_eq!(status(&host, "plain1", "plain2"), "NXDOMAIN");
    let err = host.dp_err(&["run", "-d", "--net-alias", "x", "--", "sleep", "1"]);
    assert!(err.contains("user-defined network"), "{err}");
    let err = host.dp_err(&["run", "-d", "--network", "host", "--net-alias", "x", "--", "sleep", "1"]);
    assert!(err.contains("user-defined network"), "{err}");
    let err = host.dp_err(&["network", "connect", "--alias", "bad alias", "bridge", "plain1"]);
    assert!(err.contains("network-scoped aliases"), "{err}");
    assert_eq!(host.dp_ok(&["ps", "-a"]).lines().count(), 4, "a refused run left a container behind");

    // Internal networks resolve their own names and never ask outside.
    host.dp_ok(&["network", "create", "--internal", "--subnet", "10.62.0.0/24", "vault"]);
    host.run_sleeper("s1", &["--network", "vault"]);
    host.run_sleeper("s2", &["--network", "vault"]);
    assert_eq!(dig(&host, "s1", "s2"), [host.ip_of("s2")]);
    assert_eq!(status(&host, "s1", "example.test"), "SERVFAIL");
}

#[test]
fn names_are_scoped_to_networks_and_follow_connect_and_disconnect() {
    let (host, _upstream) = host_with_upstream();
    host.dp_ok(&["network", "create", "--subnet", "10.63.0.0/24", "front"]);
    host.dp_ok(&["network", "create", "--subnet", "10.64.0.0/24", "back"]);
    host.run_sleeper("app", &["--network", "front"]);
    host.run_sleeper("db", &["--network", "back"]);
    // A name that exists only on another network does not resolve (upstream: NXDOMAIN).
    assert_eq!(status(&host, "app", "db"), "NXDOMAIN");
    assert_eq!(getent(&host, "app", "db"), None);
    assert_eq!(status(&host, "db", "app"), "NXDOMAIN");

    host.dp_ok(&["network", "connect", "--alias", "frontend", "back", "app"]);
    let app_on_back =
        host.dp_json(&["inspect", "app"])[0]["NetworkSettings"]["Networks"]["back"]["IPAddress"]
            .as_str()
            .unwrap()
            .to_string();
    assert_eq!(dig(&host, "app", "db"), [host.ip_of("db")], "app sees back's names once connected");
    assert_eq!(dig(&host, "db", "app"), [app_on_back.as_str()]);
    assert_eq!(dig(&host, "db", "frontend"), [app_on_back.as_str()]);
    let aliases = &host.dp_json(&["inspect", "app"])[0]["NetworkSettings"]["Networks"]["back"]["Aliases"];
    assert_eq!(aliases, &serde_json::json!(["frontend"]));

    host.dp_ok(&["network", "disconnect", "back", "app"]);
    assert_eq!(status(&host, "db", "frontend"), "NXDOMAIN");
    assert_eq!(status(&host, "app", "db"), "NXDOMAIN");
}
