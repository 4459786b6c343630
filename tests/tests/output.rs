//! Output that scripts and people can use: a shell script written for Docker (`ps -q`,
//! `ps --filter`, `inspect -f`, `network ls`, `port`) runs unchanged against dataplane
//! under the name `docker`, and what people read (`ps`, `network ls`) has Docker's columns.

use dataplane_tests::{Host, binary};
use serde_json::Value;

/// The script, as one would write it for Docker: each line of its output is
/// `label: what it found`.
const SCRIPT: &str = r#"
set -eu
echo "ids: $(docker ps -q | tr '\n' ' ')"
echo "all ids: $(docker ps -aq | wc -l)"
echo "on web: $(docker ps -q --filter network=web)"
echo "web ip: $(docker inspect -f '{{.NetworkSettings.Networks.web.IPAddress}}' api)"
echo "db ip: $(docker inspect --format '{{.NetworkSettings.IPAddress}}' db)"
echo "db ips: $(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}' db)"
echo "running: $(docker inspect -f '{{.State.Running}} {{.State.Status}}' api)"
echo "exited: $(docker ps --filter status=exited --format '{{.Names}} {{.Status}}')"
echo "names: $(docker ps --filter name=^a --filter name=^d --format '{{.Names}}' | tr '\n' ' ')"
echo "none: $(docker ps --filter name=^api$ --filter status=exited -q | wc -l)"
echo "port: $(docker port api 80)"
echo "port tcp: $(docker port api 80/tcp)"
echo "ports: $(docker port api)"
echo "networks: $(docker network ls --format '{{.Name}}/{{.Driver}}/{{.Scope}}' | tr '\n' ' ')"
echo "bridges: $(docker network ls -q --filter driver=bridge | wc -l)"
echo "members: $(docker network inspect -f '{{.Name}}:{{range .Containers}}{{.Name}}{{end}}' web)"
for id in $(docker ps -q); do
  echo "each: $(docker inspect -f '{{.Name}}' "$id")"
done
"#;

fn line<'a>(out: &'a str, label: &str) -> &'a str {
    let prefix = format!("{label}: ");
    out.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {label:?} in:\n{out}"))
        .trim()
}

#[test]
fn a_script_written_for_docker_runs_unchanged() {
    let host = Host::start();
    host.dp_ok(&["network", "create", "--subnet", "10.77.0.0/24", "web"]);
    let api =
        host.dp_ok(&["run", "-d", "--name", "api", "--network", "web", "-p", "8080:80", "sleep", "600"]);
    let db = host.dp_ok(&["run", "-d", "--name", "db", "sleep", "600"]);
    let job = host.dp(&["run", "--name", "job", "sh", "-c", "exit 3"]);
    assert_eq!(job.status.code(), Some(3), "the foreground command's code");
    let (api, db) = (&api.trim()[..12], &db.trim()[..12]);
    // `docker` on the script's PATH is dataplane.
    let bin = host.dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(binary(), bin.join("docker")).unwrap();
    let out = host.sh_ok(&format!("PATH={}:$PATH\n{SCRIPT}", bin.display()));

    assert_eq!(line(&out, "ids"), format!("{db} {api}"), "running ones, the newest first");
    assert_eq!(line(&out, "all ids"), "3", "-a adds the exited one");
    assert_eq!(line(&out, "on web"), api);
    assert_eq!(line(&out, "web ip"), "10.77.0.2");
    let db_ip = line(&out, "db ip");
    assert!(db_ip.starts_with("172.17.0."), "the default network's address on top: {out}");
    assert_eq!(line(&out, "db ips"), db_ip);
    assert_eq!(line(&out, "running"), "true running");
    let exited = line(&out, "exited");
    assert!(
        exited.starts_with("job Exited (3) ") && exited.ends_with(" ago"),
        "status= lists it without -a: {exited}"
    );
    assert_eq!(line(&out, "names"), "db api", "one key's values: any");
    assert_eq!(line(&out, "none"), "0", "two keys: all");
    assert_eq!(line(&out, "port"), "0.0.0.0:8080");
    assert_eq!(line(&out, "port tcp"), "0.0.0.0:8080");
    assert_eq!(line(&out, "ports"), "80/tcp -> 0.0.0.0:8080");
    assert_eq!(
        line(&out, "networks"),
        "bridge/bridge/local host/host/local none/null/local web/bridge/local"
    );
    assert_eq!(line(&out, "bridges"), "2");
    assert_eq!(line(&out, "members"), "web:api");
    let each: Vec<_> = out.lines().filter_map(|l| l.strip_prefix("each: ")).collect();
    assert_eq!(each, ["/db", "/api"], "short IDs from ps -q name the containers");
}

#[test]
fn ps_and_network_ls_read_as_dockers_and_inspect_reports_what_it_misses() {
    let host = Host::start();
    host.dp_ok(&["run", "-d", "--name", "api", "-p", "8080:80", "sleep", "600"]);

    let ps = host.dp_ok(&["ps"]);
    let mut lines = ps.lines();
    let header: Vec<_> =
        lines.next().unwrap().split("   ").map(str::trim).filter(|c| !c.is_empty()).collect();
    assert_eq!(header, ["CONTAINER ID", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES"], "{ps}");
    let row = lines.next().unwrap();
    assert!(row.contains("\"sleep 600\"") && row.contains(" ago ") && row.contains(" Up "), "{ps}");
    assert!(row.contains("0.0.0.0:8080->80/tcp") && row.ends_with(" api"), "{ps}");
    let columns = |line: &str| ["COMMAND", "CREATED", "STATUS", "PORTS", "NAMES"].map(|c| line.find(c));
    let at = columns(ps.lines().next().unwrap());
    assert_eq!(at.map(|i| row.get(i.unwrap()..i.unwrap() + 1).unwrap() != " "), [true; 5], "aligned: {ps}");

    let listed = host.dp_ok(&["network", "ls"]);
    let header = listed.lines().next().unwrap();
    assert!(
        header.starts_with("NETWORK ID     NAME      DRIVER    SCOPE"),
        "Docker's columns and widths:\n{listed}"
    );
    assert!(listed.lines().any(|l| l.ends_with("none      null      local")), "{listed}");

    // JSON lines: one object a line, with Docker's fields.
    let json = host.dp_ok(&["ps", "--format", "json"]);
    let rows: Vec<Value> = json.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 1, "{json}");
    assert_eq!((&rows[0]["Names"], &rows[0]["State"]), (&"api".into(), &"running".into()));
    assert!(rows[0]["Status"].as_str().unwrap().starts_with("Up "), "{json}");

    // `inspect` prints what it found, then fails naming what it did not, as Docker's.
    let out = host.dp(&["inspect", "api", "nope", "bridge"]);
    assert_eq!(out.status.code(), Some(1));
    let found: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(found.as_array().map(Vec::len), Some(2), "the container and the network: {found}");
    assert_eq!((&found[0]["Name"], &found[1]["Name"]), (&"/api".into(), &"bridge".into()));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("No such object: nope"), "{err}");
    let state = &found[0]["State"];
    assert!(state["StartedAt"].as_str().unwrap().starts_with("20"), "{state}");
    assert_eq!(state["FinishedAt"], "0001-01-01T00:00:00Z", "{state}");

    // Stopped: FinishedAt, and the status ps shows.
    host.dp_ok(&["stop", "-t", "1", "api"]);
    let finished = host.dp_ok(&["inspect", "-f", "{{.State.FinishedAt}}", "api"]);
    assert!(finished.starts_with("20"), "{finished}");
    let status = host.dp_ok(&["ps", "-a", "--format", "{{.Status}}"]);
    assert!(status.starts_with("Exited (") && status.trim_end().ends_with(" ago"), "{status}");
}
