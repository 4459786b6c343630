//! The CNI plugin driven as the CNI spec's examples drive a plugin: `CNI_*` environment
//! variables and the config on stdin, against a daemon in the test's host namespace, for
//! pods in namespaces the test made.

use std::{
    io::Write,
    process::{Command, Stdio},
    time::Duration,
};

use dataplane_tests::{Host, KillOnDrop, UPLINK_ADDR, eventually};
use serde_json::{Value, json};

/// One plugin call: its exit code and what it printed (JSON, or null when nothing).
struct Outcome {
    code: i32,
    out: Value,
    stderr: String,
}

struct Call<'a> {
    host: &'a Host,
    command: &'a str,
    container_id: &'a str,
    netns: Option<String>,
    ifname: &'a str,
    args: Option<&'a str>,
}

impl<'a> Call<'a> {
    fn new(host: &'a Host, command: &'a str, container_id: &'a str, ns: Option<&str>) -> Self {
        Self {
            host,
            command,
            container_id,
            netns: ns.map(|n| format!("/run/netns/{n}")),
            ifname: "eth0",
            args: None,
        }
    }

    fn run(&self, config: &Value) -> Outcome {
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net=/run/netns/{}", self.host.name))
            .arg("--")
            .arg(dataplane_tests::cni_plugin())
            .env_clear()
            .env("CNI_COMMAND", self.command)
            .env("CNI_CONTAINERID", self.container_id)
            .env("CNI_IFNAME", self.ifname)
            .env("CNI_PATH", "/usr/lib/cni")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(netns) = &self.netns {
            command.env("CNI_NETNS", netns);
        }
        if let Some(args) = self.args {
            command.env("CNI_ARGS", args);
        }
        let mut child = command.spawn().unwrap();
        // A plugin that fails before it reads its config (a missing CNI_* variable) closes
        // stdin first: the write's broken pipe is no error of the test's.
        let _ = child.stdin.take().unwrap().write_all(config.to_string().as_bytes());
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        Outcome {
            code: out.status.code().unwrap_or(-1),
            out: if stdout.trim().is_empty() {
                Value::Null
            } else {
                serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
            },
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    fn ok(&self, config: &Value) -> Value {
        let outcome = self.run(config);
        assert_eq!(outcome.code, 0, "{} failed: {} {}", self.command, outcome.out, outcome.stderr);
        outcome.out
    }

    /// A failed call: its error object, after checking it is the spec's.
    fn fails(&self, config: &Value, code: u64) -> Value {
        let outcome = self.run(config);
        assert_ne!(outcome.code, 0, "{} succeeded: {}", self.command, outcome.out);
        assert_eq!(outcome.out["code"], code, "{}: {}", self.command, outcome.out);
        assert!(outcome.out["msg"].is_string() && outcome.out["details"].is_string(), "{}", outcome.out);
        outcome.out
    }
}

fn config(host: &Host, version: &str, network: &str, subnet: &str) -> Value {
    json!({
        "cniVersion": version,
        "name": network,
        "type": "dataplane",
        "subnet": subnet,
        "socket": host.socket(),
        "capabilities": {"portMappings": true, "ips": true, "mac": true, "aliases": true}
    })
}

fn with(mut config: Value, key: &str, value: Value) -> Value {
    config[key] = value;
    config
}

/// The address of `eth0` in a namespace (`a.b.c.d/nn`), or None.
fn address_in(ns: &str) -> Option<String> {
    let out = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{ns}"))
        .args(["--", "ip", "-4", "-o", "addr", "show", "dev", "eth0"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .map(String::from)
}

fn endpoints_of(host: &Host, network: &str) -> Vec<Value> {
    let inspect = host.dp_json(&["network", "inspect", network]);
    inspect[0]["Containers"].as_object().map(|c| c.values().cloned().collect()).unwrap_or_default()
}

#[test]
fn add_check_and_del_attach_a_pod_and_leave_nothing_behind() {
    let mut host = Host::start();
    let (a, b) = (host.add_namespace("pod-a"), host.add_namespace("pod-b"));
    let links_before = host.links();
    let conf = config(&host, "1.1.0", "pods", "10.77.0.0/24");

    let mut add = Call::new(&host, "ADD", "c0ffee01", Some(&a));
    add.args = Some("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0");
    let result = add.ok(&conf);
    // The result as the spec has it: both interfaces, the address on the sandbox one,
    // the route and the network's resolver.
    assert_eq!(result["cniVersion"], "1.1.0");
    let host_veth = result["interfaces"][0]["name"].as_str().unwrap().to_string();
    assert!(host.links().contains(&host_veth), "{result}");
    assert_eq!(result["interfaces"][1]["name"], "eth0");
    assert_eq!(result["interfaces"][1]["sandbox"], format!("/run/netns/{a}"));
    assert_eq!(result["ips"], json!([{"interface": 1, "address": "10.77.0.2/24", "gateway": "10.77.0.1"}]));
    assert_eq!(result["routes"], json!([{"dst": "0.0.0.0/0", "gw": "10.77.0.1"}]));
    assert_eq!(result["dns"]["nameservers"], json!(["10.77.0.1"]));
    assert_eq!(address_in(&a).as_deref(), Some("10.77.0.2/24"));
    let mac = host.ns_sh_ok(&a, "ip -o link show eth0");
    assert!(mac.contains(result["interfaces"][1]["mac"].as_str().unwrap()), "{mac}");

    // A second pod, on the legacy result layout of 0.4.0, with the ips and mac capabilities.
    let legacy = with(
        config(&host, "0.4.0", "pods", "10.77.0.0/24"),
        "runtimeConfig",
        json!({"ips": ["10.77.0.50/24"], "mac": "02:00:00:77:00:50"}),
    );
    let result_b = Call::new(&host, "ADD", "c0ffee02", Some(&b)).ok(&legacy);
    assert_eq!(result_b["cniVersion"], "0.4.0");
    assert_eq!(result_b["ips"][0]["version"], "4", "0.4.0 results name the family: {result_b}");
    assert_eq!(result_b["ips"][0]["address"], "10.77.0.50/24");
    assert_eq!(result_b["interfaces"][1]["mac"], "02:00:00:77:00:50");

    // The pods reach each other on the fast path, and b finds a by the pod's name.
    host.ns_sh_ok(&b, "ping -c1 -W2 10.77.0.2");
    let fast = host.counter("forwarded");
    assert!(fast > 0, "no packet took the fast path");
    host.ns_sh_ok(&b, "ip link set lo up");
    let answer = host.ns_sh_ok(&b, "dig +short +time=2 +tries=1 @10.77.0.1 web-0");
    assert_eq!(answer.trim(), "10.77.0.2");

    // network inspect names the owner; ps leaves it out.
    let owners: Vec<_> = endpoints_of(&host, "pods").iter().map(|e| e["Owner"].clone()).collect();
    assert!(owners.contains(&json!("cni:c0ffee01")) && owners.contains(&json!("cni:c0ffee02")), "{owners:?}");
    assert_eq!(host.dp_ok(&["ps", "-a"]).lines().count(), 1, "ps shows only our own containers");

    // The network stays while a runtime's pod is on it, and the refusal says how to go on.
    let refusal = host.dp_err(&["network", "rm", "pods"]);
    assert!(refusal.contains("cni:c0ffee01") && refusal.contains("podman rm -f"), "{refusal}");

    // CHECK with the cached result passes.
    let check_conf = with(conf.clone(), "prevResult", result.clone());
    Call::new(&host, "CHECK", "c0ffee01", Some(&a)).ok(&check_conf);
    // STATUS and VERSION.
    Call::new(&host, "STATUS", "", None).ok(&conf);
    let version = Call::new(&host, "VERSION", "", None).ok(&conf);
    for v in ["0.4.0", "1.0.0", "1.1.0"] {
        assert!(version["supportedVersions"].as_array().unwrap().contains(&json!(v)), "{version}");
    }

    // DEL, twice: the second finds nothing and succeeds.
    for _ in 0..2 {
        Call::new(&host, "DEL", "c0ffee01", Some(&a)).ok(&conf);
    }
    Call::new(&host, "DEL", "c0ffee02", Some(&b)).ok(&legacy);
    assert_eq!(address_in(&a), None, "eth0 is still in the pod");
    assert!(endpoints_of(&host, "pods").is_empty());
    // Nothing left on the host but the network's bridge; no endpoint in the maps.
    let left: Vec<_> = host.links().into_iter().filter(|l| !links_before.contains(l)).collect();
    assert!(left.iter().all(|l| l.starts_with("br-")), "left behind: {left:?}");
    assert_eq!(host.map_entries("ENDPOINTS"), 0);
    host.dp_ok(&["network", "rm", "pods"]);
}

#[test]
fn del_and_check_face_what_others_removed() {
    let mut host = Host::start();
    let (a, b) = (host.add_namespace("pod-a"), host.add_namespace("pod-b"));
    let conf = config(&host, "1.1.0", "pods", "10.78.0.0/24");

    // Someone deletes the pod's interface: CHECK says what is missing; DEL still succeeds.
    let result = Call::new(&host, "ADD", "aaaa", Some(&a)).ok(&conf);
    host.ns_sh_ok(&a, "ip link del eth0");
    let error =
        Call::new(&host, "CHECK", "aaaa", Some(&a)).fails(&with(conf.clone(), "prevResult", result), 100);
    assert!(error["details"].as_str().unwrap().contains("eth0 is missing"), "{error}");
    Call::new(&host, "DEL", "aaaa", Some(&a)).ok(&conf);

    // The runtime removed the namespace before DEL, and passes none: DEL releases the
    // address all the same, so that another pod can take it.
    let result = Call::new(&host, "ADD", "bbbb", Some(&b)).ok(&conf);
    let taken = result["ips"][0]["address"].as_str().unwrap().to_string();
    Command::new("ip").args(["netns", "del", &b]).status().unwrap();
    Call::new(&host, "DEL", "bbbb", None).ok(&conf);
    let again = host.add_namespace("pod-c");
    let reuse = with(conf.clone(), "runtimeConfig", json!({"ips": [taken.clone()]}));
    let result = Call::new(&host, "ADD", "cccc", Some(&again)).ok(&reuse);
    assert_eq!(result["ips"][0]["address"], taken.as_str());

    // CHECK of an attachment the daemon never made: the spec's "container unknown".
    let prev = with(conf.clone(), "prevResult", result);
    Call::new(&host, "CHECK", "dddd", Some(&again)).fails(&prev, 3);
    // DEL of one it never knew succeeds.
    Call::new(&host, "DEL", "never-added", Some(&again)).ok(&conf);
    Call::new(&host, "DEL", "cccc", Some(&again)).ok(&conf);
}

/// On a dual-stack network CHECK covers IPv6 as IPv4: the address and the default route.
#[test]
fn check_of_a_dual_stack_attachment_finds_a_lost_ipv6_route_or_address() {
    let mut host = Host::start();
    let pod = host.add_namespace("pod6");
    let conf = with(config(&host, "1.1.0", "dual", "10.79.0.0/24"), "subnet6", json!("fd00:79::/64"));
    let result = Call::new(&host, "ADD", "6666", Some(&pod)).ok(&conf);
    assert_eq!(result["ips"][1]["address"], "fd00:79::2/64", "{result}");
    // The network's resolver answers on both gateways, and the runtime is told both.
    assert_eq!(result["dns"]["nameservers"], json!(["10.79.0.1", "fd00:79::1"]), "{result}");
    let prev = with(conf.clone(), "prevResult", result);
    Call::new(&host, "CHECK", "6666", Some(&pod)).ok(&prev);

    host.ns_sh_ok(&pod, "ip -6 route del default");
    let error = Call::new(&host, "CHECK", "6666", Some(&pod)).fails(&prev, 100);
    assert!(error["details"].as_str().unwrap().contains("default route via fd00:79::1"), "{error}");
    host.ns_sh_ok(&pod, "ip -6 addr del fd00:79::2/64 dev eth0");
    let error = Call::new(&host, "CHECK", "6666", Some(&pod)).fails(&prev, 100);
    assert!(error["details"].as_str().unwrap().contains("lost its address fd00:79::2"), "{error}");
    Call::new(&host, "DEL", "6666", Some(&pod)).ok(&conf);
    assert!(endpoints_of(&host, "dual").is_empty(), "DEL left the endpoint");
}

/// `"ipv4": false`: an IPv6-only network, whose pods get an IPv6 address, route and
/// resolver alone.
#[test]
fn an_ipv6_only_config_attaches_pods_with_ipv6_alone() {
    let mut host = Host::start();
    let pod = host.add_namespace("pod6only");
    let conf = json!({
        "cniVersion": "1.1.0", "name": "only6", "type": "dataplane", "socket": host.socket(),
        "ipv4": false, "subnet6": "fd00:7a::/64",
    });
    let result = Call::new(&host, "ADD", "7a7a", Some(&pod)).ok(&conf);
    assert_eq!(result["ips"], json!([{"interface": 1, "address": "fd00:7a::2/64", "gateway": "fd00:7a::1"}]));
    assert_eq!(result["routes"], json!([{"dst": "::/0", "gw": "fd00:7a::1"}]));
    assert_eq!(result["dns"]["nameservers"], json!(["fd00:7a::1"]));
    assert_eq!(address_in(&pod), None, "an IPv4 address on eth0 of an IPv6-only pod");
    let net = &host.dp_json(&["network", "inspect", "only6"])[0];
    assert_eq!((&net["EnableIPv4"], &net["EnableIPv6"]), (&json!(false), &json!(true)));
    let prev = with(conf.clone(), "prevResult", result);
    Call::new(&host, "CHECK", "7a7a", Some(&pod)).ok(&prev);
    Call::new(&host, "DEL", "7a7a", Some(&pod)).ok(&conf);
    assert!(endpoints_of(&host, "only6").is_empty(), "DEL left the endpoint");
}

#[test]
fn gc_removes_the_attachments_the_runtime_no_longer_lists() {
    let mut host = Host::start();
    let pods: Vec<String> = (0..3).map(|i| host.add_namespace(&format!("pod{i}"))).collect();
    let conf = config(&host, "1.1.0", "pods", "10.79.0.0/24");
    for (i, ns) in pods.iter().enumerate() {
        Call::new(&host, "ADD", &format!("pod{i}"), Some(ns)).ok(&conf);
    }
    let gc =
        with(conf.clone(), "cni.dev/valid-attachments", json!([{"containerID": "pod1", "ifname": "eth0"}]));
    Call::new(&host, "GC", "", None).ok(&gc);
    let owners: Vec<_> = endpoints_of(&host, "pods").iter().map(|e| e["Owner"].clone()).collect();
    assert_eq!(owners, [json!("cni:pod1")]);
    assert_eq!(address_in(&pods[0]), None);
    assert_eq!(address_in(&pods[1]).as_deref(), Some("10.79.0.3/24"));
}

#[test]
fn errors_are_the_specs_objects_with_its_codes() {
    let mut host = Host::start();
    let pod = host.add_namespace("pod");
    let conf = config(&host, "1.1.0", "pods", "10.80.0.0/24");
    let add = Call::new(&host, "ADD", "eeee", Some(&pod));

    let error = add.fails(&with(conf.clone(), "ip_range", json!("10.80.0.0/25")), 2);
    assert!(error["details"].as_str().unwrap().contains("ipRange"), "{error}");
    add.fails(&with(conf.clone(), "ipam", json!({"type": "host-local"})), 2);
    add.fails(&with(conf.clone(), "cniVersion", json!("9.9.9")), 1);
    let mut no_id = Call::new(&host, "ADD", "", Some(&pod));
    no_id.container_id = "";
    let error = no_id.fails(&conf, 4);
    assert!(error["details"].as_str().unwrap().contains("CNI_CONTAINERID"), "{error}");
    add.fails(&with(conf.clone(), "subnet", json!("10.80.0.0/33")), 7);
    // A first ADD that is refused (an address outside the subnet) leaves no network
    // behind: the next config may name another subnet.
    add.fails(&with(conf.clone(), "runtimeConfig", json!({"ips": ["10.99.0.5/24"]})), 7);
    let networks = host.dp_ok(&["network", "ls"]);
    assert!(!networks.contains("pods"), "a refused ADD left its network: {networks}");

    // The network exists: a config that disagrees with it is refused, naming both.
    add.ok(&conf);
    Call::new(&host, "DEL", "eeee", Some(&pod)).ok(&conf);
    let error = add.fails(&with(conf.clone(), "subnet", json!("10.81.0.0/24")), 7);
    let details = error["details"].as_str().unwrap();
    assert!(details.contains("10.81.0.0/24") && details.contains("10.80.0.0/24"), "{error}");
    // An address that is not the network's.
    add.fails(&with(conf.clone(), "runtimeConfig", json!({"ips": ["10.99.0.5/24"]})), 7);

    // The daemon is down: ADD is to be tried again later; STATUS says not available.
    host.stop_daemon();
    let add = Call::new(&host, "ADD", "eeee", Some(&pod));
    let error = add.fails(&conf, 11);
    assert!(error["details"].as_str().unwrap().contains("cannot reach the daemon"), "{error}");
    Call::new(&host, "STATUS", "", None).fails(&conf, 50);
}

#[test]
fn parallel_adds_never_hand_out_an_address_twice() {
    let mut host = Host::start();
    let pods: Vec<String> = (0..16).map(|i| host.add_namespace(&format!("p{i}"))).collect();
    let conf = config(&host, "1.1.0", "pods", "10.82.0.0/24");
    let host = &host;
    let addresses: Vec<String> = std::thread::scope(|scope| {
        let calls: Vec<_> = pods
            .iter()
            .enumerate()
            .map(|(i, ns)| {
                let conf = conf.clone();
                scope.spawn(move || {
                    let id = format!("parallel{i}");
                    let result = Call::new(host, "ADD", &id, Some(ns)).ok(&conf);
                    result["ips"][0]["address"].as_str().unwrap().to_string()
                })
            })
            .collect();
        calls.into_iter().map(|c| c.join().unwrap()).collect()
    });
    let mut unique = addresses.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), pods.len(), "{addresses:?}");
    for (ns, address) in pods.iter().zip(&addresses) {
        assert_eq!(address_in(ns).as_deref(), Some(address.as_str()));
    }
}

#[test]
fn port_mappings_are_published_as_dash_p_publishes() {
    let mut host = Host::start_with_external();
    let pod = host.add_namespace("web");
    let conf = with(
        config(&host, "1.0.0", "pods", "10.83.0.0/24"),
        "runtimeConfig",
        json!({"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]}),
    );
    let result = Call::new(&host, "ADD", "web", Some(&pod)).ok(&conf);
    assert_eq!(result["ips"][0]["address"], "10.83.0.2/24");
    let _server = KillOnDrop(
        Command::new("nsenter")
            .arg(format!("--net=/run/netns/{pod}"))
            .args(["--", "python3", "-m", "http.server", "80"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let url = format!("http://{UPLINK_ADDR}:8080/");
    let reached = || {
        host.external_command("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "2", &url])
            .output()
            .is_ok_and(|o| o.stdout == b"200")
    };
    assert!(eventually(Duration::from_secs(10), reached), "{url} not reachable from outside");
    // The host port is taken while published.
    let taken = host.sh("python3 -c 'import socket; s=socket.socket(); s.bind((\"0.0.0.0\", 8080))'");
    assert!(!taken.status.success(), "a host process could take the published port");
    Call::new(&host, "DEL", "web", Some(&pod)).ok(&conf);
    assert!(!reached(), "{url} still reachable after DEL");
    host.sh_ok("python3 -c 'import socket; s=socket.socket(); s.bind((\"0.0.0.0\", 8080))'");
}
