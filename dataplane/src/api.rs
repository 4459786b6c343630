//! The CLI ↔ daemon protocol: one JSON request and one JSON answer per connection on a
//! Unix socket. Requests carry parsed, typed values; the daemon validates them again
//! against its state, since anything may talk to the socket.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Write},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};
use ipnet::{Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::{ports::PortMapping, state::MacAddr};

/// Where the daemon serves its control socket unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/dataplane/dataplane.sock";

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NetworkSpec {
    pub name: String,
    pub driver: String,
    pub subnet: Option<Ipv4Net>,
    pub gateway: Option<Ipv4Addr>,
    pub ip_range: Option<Ipv4Net>,
    /// `--ipv4=false` asks for an IPv6-only network.
    #[serde(default = "enabled")]
    pub ipv4: bool,
    /// IPv6 (`--ipv6`), with what was asked of it.
    #[serde(default)]
    pub ipv6: Option<Ipv6Spec>,
    pub internal: bool,
    pub options: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
}

fn enabled() -> bool {
    true
}

/// The IPv6 half of a dual-stack network: the subnet (the next /64 of the host's ULA
/// pool when `None`), the gateway (the subnet's `::1` when `None`) and the range.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ipv6Spec {
    pub subnet: Option<Ipv6Net>,
    pub gateway: Option<Ipv6Addr>,
    pub ip_range: Option<Ipv6Net>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunSpec {
    pub name: Option<String>,
    pub network: String,
    pub ip: Option<Ipv4Addr>,
    /// `--ip6`, on a network with IPv6.
    #[serde(default)]
    pub ip6: Option<Ipv6Addr>,
    pub hostname: Option<String>,
    pub mac: Option<MacAddr>,
    /// Names on the network besides the container's own (`--network-alias`).
    pub aliases: Vec<String>,
    pub command: Vec<String>,
    /// `KEY=VALUE` for the command's environment (`-e`, `--env-file`).
    #[serde(default)]
    pub env: Vec<String>,
    /// Where the command starts (`-w`); `/` when `None`.
    #[serde(default)]
    pub workdir: Option<PathBuf>,
    /// Ports to publish; a host port of 0 takes any free one.
    pub publish: Vec<crate::ports::PortMapping>,
    pub detach: bool,
    pub auto_remove: bool,
}

/// The daemon's answer to `Run`: the container, and for a foreground one the file the
/// CLI records its command's process in before the command runs
/// (`process::write_record`), where a start of the daemon finds it, whatever the daemon
/// learned of it before it went away.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunAnswer {
    pub container: crate::state::Container,
    pub process_record: Option<PathBuf>,
}

/// The network a CNI config names, and what to create it from when it does not exist
/// yet (or to check it against when it does: a value given must match).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CniNetwork {
    pub name: String,
    pub subnet: Option<Ipv4Net>,
    pub gateway: Option<Ipv4Addr>,
    pub ip_range: Option<Ipv4Net>,
    /// IPv4 on the network (`"ipv4": false` with IPv6: an IPv6-only network).
    #[serde(default)]
    pub ipv4: Option<bool>,
    /// IPv6 on the network (`"ipv6"`; implied by an IPv6 subnet, gateway or range).
    #[serde(default)]
    pub ipv6: Option<bool>,
    #[serde(default)]
    pub subnet6: Option<Ipv6Net>,
    #[serde(default)]
    pub gateway6: Option<Ipv6Addr>,
    #[serde(default)]
    pub ip_range6: Option<Ipv6Net>,
    pub internal: Option<bool>,
    pub icc: Option<bool>,
    pub mtu: Option<u32>,
    /// `"gatewayModeIpv4"`: `nat`, `routed`, `nat-unprotected` or `isolated` (with
    /// `"internal": true`), as `--opt gateway_mode_ipv4=`.
    #[serde(default)]
    pub gateway_mode_ipv4: Option<String>,
    /// `"gatewayModeIpv6"`: as `"gatewayModeIpv4"`, as `--opt gateway_mode_ipv6=`.
    #[serde(default)]
    pub gateway_mode_ipv6: Option<String>,
}

/// One attachment of the CNI plugin: the runtime's container and the interface it named.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CniAttachment {
    pub container_id: String,
    pub ifname: String,
}

/// CNI ADD: an interface in a namespace the runtime made, on `network`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CniAdd {
    pub attachment: CniAttachment,
    pub netns: PathBuf,
    pub network: CniNetwork,
    /// The address asked for (`ips` capability); else the network's next free one.
    pub ip: Option<Ipv4Addr>,
    /// The IPv6 address asked for, on a network with IPv6; else its next free one.
    #[serde(default)]
    pub ip6: Option<Ipv6Addr>,
    /// The MAC asked for (`mac` capability).
    pub mac: Option<MacAddr>,
    /// Names the network's DNS answers for the endpoint (the pod's name, `aliases`).
    pub names: Vec<String>,
    /// `portMappings`, published as `-p` publishes.
    pub publish: Vec<PortMapping>,
}

/// What ADD made, for the plugin's result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CniAdded {
    pub endpoint_id: String,
    pub host_veth: String,
    pub host_mac: Option<MacAddr>,
    pub mac: MacAddr,
    /// The IPv4 address, prefix and gateway (at the top level, as before IPv6-only
    /// networks); none on an IPv6-only network.
    #[serde(flatten)]
    pub ipv4: Option<CniAddedFamily<Ipv4Addr>>,
    /// The IPv6 address, prefix and gateway, on a network with IPv6.
    #[serde(default)]
    pub ipv6: Option<CniAddedFamily<Ipv6Addr>>,
    /// Whether the interface got the namespace's default routes (via the gateways).
    pub default_route: bool,
    pub mtu: Option<u32>,
    /// The network's resolver, when it has one: its IPv4 gateway, then its IPv6 one (the
    /// IPv6 one alone on an IPv6-only network).
    pub nameservers: Vec<IpAddr>,
    /// The published ports, with the host ports chosen for those that asked for any.
    pub ports: Vec<PortMapping>,
}

/// What ADD made of one address family: the address, its prefix and the gateway; none
/// for a family in isolated mode (`gateway_mode_ipv4=isolated`), which routes nowhere.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct CniAddedFamily<A> {
    pub ip: A,
    pub prefix_len: u8,
    pub gateway: Option<A>,
}

/// CNI CHECK: the attachment and what the runtime's cached result says of it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CniCheck {
    pub attachment: CniAttachment,
    pub network: String,
    pub netns: PathBuf,
    /// The address and prefix the previous result gave the interface.
    pub ip: Option<Ipv4Net>,
    /// Its IPv6 address and prefix in the previous result.
    #[serde(default)]
    pub ip6: Option<Ipv6Net>,
    pub mac: Option<MacAddr>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "snake_case")]
pub enum Request {
    NetworkCreate(NetworkSpec),
    /// Every network in `docker network inspect`'s shape, `host` and `none` too.
    NetworkList,
    /// What `inspect` and `network inspect` show: each name that is found, in order, and
    /// the names that are not (`Lookup`).
    InspectObjects {
        names: Vec<String>,
        kind: ObjectKind,
    },
    NetworkRemove {
        names: Vec<String>,
    },
    NetworkPrune,
    /// Attaches a running container to one more network.
    NetworkConnect {
        network: String,
        container: String,
        ip: Option<Ipv4Addr>,
        #[serde(default)]
        ip6: Option<Ipv6Addr>,
        aliases: Vec<String>,
    },
    NetworkDisconnect {
        network: String,
        container: String,
    },
    /// Creates a container and its network; starts its command too when detached.
    Run(RunSpec),
    /// A foreground command the CLI started inside the container.
    Started {
        id: String,
        pid: i32,
    },
    /// The end of a foreground command, with its exit code: of the process `pid`, or of
    /// a command that never started (`None`).
    Exited {
        id: String,
        #[serde(default)]
        pid: Option<i32>,
        code: i32,
    },
    List {
        all: bool,
    },
    Inspect {
        names: Vec<String>,
    },
    Stop {
        name: String,
        timeout_secs: u64,
    },
    /// Starts a stopped container again, in the background: its command, networks and ports.
    Start {
        name: String,
    },
    /// Stops a container (as `Stop`), then starts it (as `Start`).
    Restart {
        name: String,
        timeout_secs: u64,
    },
    Remove {
        name: String,
        force: bool,
    },
    /// The per-path counters; with `container` or `network`, that container's or that
    /// network's endpoints' counters instead.
    Stats {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        container: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        network: Option<String>,
    },
    /// A stream of the programs' events (`dataplane monitor`): an answer line, then one
    /// `monitor::MonitorLine` per line until the client goes away.
    Monitor(crate::monitor::Filter),
    /// The daemon's version (answered without the daemon's lock: it changes nothing).
    Version,
    ConntrackList,
    ConntrackFlush,
    /// Appends a rule to the firewall for published ports.
    FirewallAdd(crate::firewall::RuleSpec),
    FirewallList,
    /// Removes firewall rules by ID, all or none.
    FirewallRemove {
        ids: Vec<u32>,
    },
    /// The CNI plugin's ADD.
    CniAdd(CniAdd),
    /// The CNI plugin's DEL: succeeds when the attachment is already gone.
    CniDel {
        attachment: CniAttachment,
        network: String,
    },
    CniCheck(CniCheck),
    /// The CNI plugin's GC: removes the network's CNI attachments not in `valid`.
    CniGc {
        network: String,
        valid: Vec<CniAttachment>,
    },
}

/// What `InspectObjects` looks among: `inspect` looks at containers, then networks, as
/// Docker's does (`--type` narrows it); `network inspect` at networks alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum ObjectKind {
    Container,
    Network,
    Any,
}

/// The answer to `InspectObjects`: what was found, in the order asked, and the names of
/// what was not.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Lookup {
    pub found: Vec<serde_json::Value>,
    pub missing: Vec<String>,
}

/// What kind of failure an error answer is, for clients that act on it (the CNI plugin
/// turns it into the spec's error code); the CLI prints the message alone.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The system failed us (netlink, a map, a file).
    #[default]
    Failed,
    /// The request cannot be served as asked: the input must change.
    Invalid,
    /// The request names something the daemon does not have.
    Unknown,
    /// Something the daemon built is no longer as it left it.
    Broken,
    /// The daemon could not be reached.
    Unreachable,
}

/// An error of the daemon, or of reaching it, with its kind.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct DaemonError {
    pub kind: ErrorKind,
    pub message: String,
}

impl DaemonError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into() }
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Answer {
    Ok(serde_json::Value),
    Error {
        message: String,
        #[serde(default)]
        kind: ErrorKind,
    },
}

/// Sends one request and returns the daemon's answer, or its error as ours.
pub fn call<T: DeserializeOwned>(socket: &Path, request: &Request) -> Result<T> {
    let mut stream = UnixStream::connect(socket).map_err(|e| connect_error(socket, &e))?;
    let mut line = serde_json::to_vec(request)?;
    line.push(b'\n');
    stream.write_all(&line)?;
    let mut answer = String::new();
    // A daemon that goes away mid-request (killed, or stopped) is as unreachable as one
    // that was never there: a client may try again once one serves the socket.
    let gone = |why: String| {
        DaemonError::new(
            ErrorKind::Unreachable,
            format!("the daemon at {} {why} without answering (see its log)", socket.display()),
        )
    };
    if let Err(e) = BufReader::new(stream).read_line(&mut answer) {
        return Err(gone(format!("broke the connection ({e})")).into());
    }
    if answer.is_empty() {
        return Err(gone("closed the connection".into()).into());
    }
    match serde_json::from_str(&answer).context("malformed answer from the daemon")? {
        Answer::Ok(value) => serde_json::from_value(value).context("unexpected answer from the daemon"),
        Answer::Error { message, kind } => Err(DaemonError::new(kind, message).into()),
    }
}

/// Sends a streaming request (`Request::Monitor`) and hands each line after the daemon's
/// answer to `each`, until the daemon closes the stream or `each` fails.
pub fn stream<T: DeserializeOwned>(
    socket: &Path,
    request: &Request,
    mut each: impl FnMut(T) -> Result<()>,
) -> Result<()> {
    let mut stream = UnixStream::connect(socket).map_err(|e| connect_error(socket, &e))?;
    let mut line = serde_json::to_vec(request)?;
    line.push(b'\n');
    stream.write_all(&line)?;
    let mut lines = BufReader::new(stream).lines();
    let answer = lines.next().ok_or_else(|| {
        DaemonError::new(
            ErrorKind::Unreachable,
            format!("the daemon at {} closed the connection without answering", socket.display()),
        )
    })??;
    match serde_json::from_str(&answer).context("malformed answer from the daemon")? {
        Answer::Ok(_) => {}
        Answer::Error { message, kind } => return Err(DaemonError::new(kind, message).into()),
    }
    for line in lines {
        let line = line.context("reading the daemon's stream")?;
        each(
            serde_json::from_str(&line)
                .with_context(|| format!("unexpected line from the daemon: {line}"))?,
        )?;
    }
    Err(DaemonError::new(
        ErrorKind::Unreachable,
        format!("the daemon at {} ended the stream (see its log)", socket.display()),
    )
    .into())
}

/// Why the daemon's socket could not be reached, and what to do: a socket that is there
/// but not ours to open is no absence (`Failed`), the daemon is running.
fn connect_error(socket: &Path, e: &std::io::Error) -> DaemonError {
    let path = socket.display();
    match e.kind() {
        std::io::ErrorKind::PermissionDenied => DaemonError::new(
            ErrorKind::Failed,
            format!(
                "permission denied on {path}: the daemon's socket is root's alone (it runs \
                 containers' commands as root); run this as root, e.g. `sudo dataplane ...`"
            ),
        ),
        _ => DaemonError::new(
            ErrorKind::Unreachable,
            format!(
                "cannot reach the daemon at {path}: {e}; start it with `dataplane daemon` (or \
                 `systemctl start dataplane`) or point --socket/DATAPLANE_SOCKET at it"
            ),
        ),
    }
}

/// The kind of an error: that of the first `DaemonError` in its chain, else `Failed`.
pub fn kind_of(error: &anyhow::Error) -> ErrorKind {
    error.chain().find_map(|e| e.downcast_ref::<DaemonError>()).map_or(ErrorKind::Failed, |e| e.kind)
}

/// Encodes the daemon's answer as one line.
pub fn encode_answer(result: Result<serde_json::Value>) -> Vec<u8> {
    let answer = match result {
        Ok(value) => Answer::Ok(value),
        Err(e) => Answer::Error { kind: kind_of(&e), message: format!("{e:#}") },
    };
    let mut line = serde_json::to_vec(&answer).expect("answers always serialize");
    line.push(b'\n');
    line
}
