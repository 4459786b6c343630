//! The CLI ↔ daemon protocol: one JSON request and one JSON answer per connection on a
//! Unix socket. Requests carry parsed, typed values; the daemon validates them again
//! against its state, since anything may talk to the socket.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Write},
    net::Ipv4Addr,
    os::unix::net::UnixStream,
    path::Path,
};

use anyhow::{Context, Result, bail};
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::state::MacAddr;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NetworkSpec {
    pub name: String,
    pub driver: String,
    pub subnet: Option<Ipv4Net>,
    pub gateway: Option<Ipv4Addr>,
    pub ip_range: Option<Ipv4Net>,
    pub internal: bool,
    pub options: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunSpec {
    pub name: Option<String>,
    pub network: String,
    pub ip: Option<Ipv4Addr>,
    pub hostname: Option<String>,
    pub mac: Option<MacAddr>,
    /// Names on the network besides the container's own (`--network-alias`).
    pub aliases: Vec<String>,
    pub command: Vec<String>,
    /// Ports to publish; a host port of 0 takes any free one.
    pub publish: Vec<crate::ports::PortMapping>,
    pub detach: bool,
    pub auto_remove: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "snake_case")]
pub enum Request {
    NetworkCreate(NetworkSpec),
    NetworkList,
    NetworkInspect {
        names: Vec<String>,
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
    Exited {
        id: String,
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
    Remove {
        name: String,
        force: bool,
    },
    Stats,
    ConntrackList,
    ConntrackFlush,
    /// Appends a rule to the firewall for published ports.
    FirewallAdd(crate::firewall::RuleSpec),
    FirewallList,
    /// Removes firewall rules by ID, all or none.
    FirewallRemove {
        ids: Vec<u32>,
    },
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Answer {
    Ok(serde_json::Value),
    Error(String),
}

/// Sends one request and returns the daemon's answer, or its error as ours.
pub fn call<T: DeserializeOwned>(socket: &Path, request: &Request) -> Result<T> {
    let mut stream = UnixStream::connect(socket).with_context(|| {
        format!(
            "cannot reach the daemon at {}; start it with `dataplane daemon` or point --socket/DATAPLANE_SOCKET at it",
            socket.display()
        )
    })?;
    let mut line = serde_json::to_vec(request)?;
    line.push(b'\n');
    stream.write_all(&line)?;
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer).context("reading the daemon's answer")?;
    if answer.is_empty() {
        bail!("the daemon closed the connection without answering (see its log)");
    }
    match serde_json::from_str(&answer).context("malformed answer from the daemon")? {
        Answer::Ok(value) => serde_json::from_value(value).context("unexpected answer from the daemon"),
        Answer::Error(message) => bail!(message),
    }
}

/// Encodes the daemon's answer as one line.
pub fn encode_answer(result: Result<serde_json::Value>) -> Vec<u8> {
    let answer = match result {
        Ok(value) => Answer::Ok(value),
        Err(e) => Answer::Error(format!("{e:#}")),
    };
    let mut line = serde_json::to_vec(&answer).expect("answers always serialize");
    line.push(b'\n');
    line
}
