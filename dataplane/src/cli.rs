//! The command line, following Docker's verbs and flags. Everything but `daemon` is a
//! thin client: it parses and checks the input, asks the daemon, and prints the answer.
//! Foreground commands (`run` without -d, `exec`) run here, inside the container's
//! namespace, so that their terminal, output and exit code are the caller's own.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::AsFd,
    path::PathBuf,
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use clap::{Args, CommandFactory, Parser, Subcommand};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde_json::Value;

use crate::{
    api::{self, Ipv6Spec, NetworkSpec, ObjectKind, Request, RunSpec},
    daemon,
    firewall::{self, Action, PortRange},
    format::Formatter,
    listing::{self, Filters, InspectedContainer, InspectedNetwork},
    netns,
    ports::PublishSpec,
    process,
    state::{DEFAULT_NETWORK, MacAddr, Network},
};

#[derive(Parser)]
#[command(
    name = "dataplane",
    version,
    about = "Container networking with an eBPF fast path",
    after_help = "Every command but `daemon` and `completion` asks the daemon over its socket, \
                  which is root's alone: run them as root.\n\
                  Logging: RUST_LOG sets the filter in env_logger's syntax (`RUST_LOG=debug`, \
                  `RUST_LOG=dataplane::daemon=debug`); the daemon's --log-level overrides it."
)]
pub struct Cli {
    /// The daemon's control socket.
    #[arg(long, global = true, env = "DATAPLANE_SOCKET", default_value = api::DEFAULT_SOCKET)]
    socket: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon in the current network namespace (its "host").
    Daemon(Box<DaemonArgs>),
    /// Manage networks.
    #[command(subcommand)]
    Network(NetworkCommand),
    /// Create a container on a network and run a command in it.
    Run(RunArgs),
    /// List containers, the newest first.
    ///
    /// Filters: name=REGEXP, network=NAME|ID, status=running|exited|created|dead (a status
    /// lists stopped ones without -a). Fields for --format, Docker's: .ID .Command
    /// .CreatedAt .RunningFor .Ports .Status .State .Names .Networks .Labels, and .Image,
    /// empty: containers run the host's files, there is no image.
    Ps {
        /// Show all containers, not only running ones.
        #[arg(short, long)]
        all: bool,
        #[command(flatten)]
        list: ListArgs,
    },
    /// Show containers and networks as JSON, in Docker's shape, or what a template makes
    /// of them; then fail naming those not found.
    Inspect {
        #[command(flatten)]
        format: InspectFormat,
        /// Look only among these (default: containers, then networks).
        #[arg(long = "type", value_enum)]
        kind: Option<ObjectKind>,
        /// Containers or networks, by name or ID (a unique prefix of it).
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Run a command inside a running container.
    Exec {
        #[command(flatten)]
        env: EnvArgs,
        /// The running container, by name or ID.
        name: String,
        /// The command and its arguments (`--` before them is optional).
        #[arg(required = true, trailing_var_arg = true)]
        command: Vec<String>,
    },
    /// Start stopped containers again, in the background: their command, networks and ports.
    Start {
        /// Stopped containers, by name or ID.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Stop running containers and start them again.
    Restart {
        /// Seconds to wait before killing.
        #[arg(short, long, default_value_t = 10)]
        time: u64,
        /// Containers, by name or ID.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Show the output of a container's command run in the background (-d, `start`).
    Logs {
        /// Keep printing what it writes until its command ends.
        #[arg(short, long)]
        follow: bool,
        /// Only the last N lines (`all`: every line).
        #[arg(short = 'n', long, default_value = "all", value_parser = parse_tail)]
        tail: Tail,
        /// The container, by name or ID.
        name: String,
    },
    /// Stop running containers (SIGTERM, then SIGKILL after the grace time).
    Stop {
        /// Seconds to wait before killing.
        #[arg(short, long, default_value_t = 10)]
        time: u64,
        /// Containers, by name or ID.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove containers: their address, veth, namespace and map entries.
    Rm {
        /// Remove running containers too (they are killed).
        #[arg(short, long)]
        force: bool,
        /// Containers, by name or ID.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Show the eBPF datapath's per-path packet and byte counters, and what the
    /// conntrack tables hold and evicted.
    Stats(StatsArgs),
    /// Stream what the eBPF programs see, one line per event until interrupted: each
    /// dropped packet with its reason, each new masqueraded or published flow with its
    /// translation. Events the kernel's ring buffer had no room for are counted and shown
    /// ("N events lost"); packets are never lost for them.
    Monitor(MonitorArgs),
    /// Show this CLI's version and the kernel's, and the daemon's version (fails when
    /// no daemon answers on the socket).
    Version,
    /// List a container's published ports (`80/tcp -> 0.0.0.0:8080`), or the host
    /// addresses of one of them.
    Port {
        /// The container, by name or ID.
        name: String,
        /// A container port: PORT, PORT/tcp or PORT/udp (tcp when bare).
        #[arg(value_name = "PORT[/PROTO]")]
        port: Option<ContainerPort>,
    },
    /// Flows tracked by the datapath: masqueraded ones (containers to the outside) and
    /// published ones (the outside to published ports).
    #[command(subcommand)]
    Conntrack(ConntrackCommand),
    /// Allow or deny traffic from outside to published ports (netfilter never sees it).
    #[command(subcommand)]
    Firewall(FirewallCommand),
    /// Print a completion script for a shell, e.g.
    /// `dataplane completion bash > /usr/share/bash-completion/completions/dataplane`.
    Completion {
        /// bash, zsh, fish, elvish or powershell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write the man pages (dataplane.1, dataplane-run.1, ...) into DIR (`cargo xtask
    /// install` does, from the release build).
    #[command(hide = true)]
    Manpages {
        /// Where the pages go (made if missing).
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
}

/// A command's environment and working directory, for `run` and `exec` (Docker's flags).
#[derive(Args)]
struct EnvArgs {
    /// Set an environment variable: KEY=VALUE, or KEY to pass this shell's value.
    #[arg(short, long = "env", value_name = "KEY[=VALUE]")]
    env: Vec<String>,
    /// Read environment variables from a file: KEY=VALUE lines (`#` starts a comment).
    #[arg(long, value_name = "FILE")]
    env_file: Vec<PathBuf>,
    /// The working directory of the command (absolute; default `/`).
    #[arg(short, long, value_name = "DIR", value_parser = absolute_dir)]
    workdir: Option<PathBuf>,
}

impl EnvArgs {
    /// The `KEY=VALUE` entries: the files' first, then `-e`'s, which win as on Docker;
    /// a KEY alone takes the value this process has, and is left out when it has none.
    fn entries(&self) -> Result<Vec<String>> {
        let mut entries = vec![];
        for file in &self.env_file {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("--env-file {}: cannot read it", file.display()))?;
            entries.extend(env_file_entries(&text));
        }
        entries.extend(self.env.iter().cloned());
        Ok(entries
            .into_iter()
            .filter_map(|entry| match entry.contains('=') {
                true => Some(entry),
                false => std::env::var(&entry).ok().map(|value| format!("{entry}={value}")),
            })
            .collect())
    }
}

/// The entries of an env file as Docker reads it: one per line, blank lines and lines
/// starting with `#` skipped, leading whitespace trimmed.
fn env_file_entries(text: &str) -> impl Iterator<Item = String> + '_ {
    text.lines().map(str::trim_start).filter(|l| !l.is_empty() && !l.starts_with('#')).map(String::from)
}

fn absolute_dir(s: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(s);
    match path.is_absolute() {
        true => Ok(path),
        false => Err(format!("{s:?} is not an absolute path; give the directory from / (e.g. /srv)")),
    }
}

/// How much of a log `logs` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tail {
    All,
    Last(usize),
}

fn parse_tail(s: &str) -> Result<Tail, String> {
    match s {
        "all" => Ok(Tail::All),
        n => n.parse().map(Tail::Last).map_err(|_| format!("{s:?}: give a number of lines, or `all`")),
    }
}

/// The part of `text` that `--tail` keeps: its last `n` lines (a last line without its
/// newline counts).
fn tail_of(text: &str, tail: Tail) -> &str {
    let Tail::Last(n) = tail else { return text };
    let body = text.strip_suffix('\n').unwrap_or(text);
    match n {
        0 => "",
        n => body.rmatch_indices('\n').nth(n - 1).map_or(text, |(at, _)| &text[at + 1..]),
    }
}

#[derive(Subcommand)]
enum FirewallCommand {
    /// Append a rule: the first rule matching a packet decides; no match accepts.
    Add(FirewallAddArgs),
    /// List the rules in order, with the packets each one decided.
    #[command(alias = "list")]
    Ls {
        /// `table`, or `json`.
        #[arg(long, default_value = "table", value_parser = ["table", "json"])]
        format: String,
    },
    /// Remove rules by ID.
    #[command(alias = "remove")]
    Rm {
        /// Rule IDs, as `firewall ls` lists them.
        #[arg(required = true)]
        ids: Vec<u32>,
    },
}

#[derive(Args)]
struct FirewallAddArgs {
    /// Clients it applies to: an IPv4 or IPv6 address or CIDR, for that family's traffic
    /// alone (default: any client of either family).
    #[arg(long, value_parser = firewall::parse_source)]
    source: Option<IpNet>,
    /// The port or range clients address, P or P-Q: a published host port, or a container's
    /// own port where the outside reaches its address (routed and nat-unprotected
    /// networks) (default: any).
    #[arg(long, value_parser = clap::value_parser!(PortRange))]
    port: Option<PortRange>,
    /// tcp or udp (default: both).
    #[arg(long, value_parser = firewall::parse_proto)]
    proto: Option<crate::ports::Proto>,
    /// Only this container's ports: those it publishes, and its own address's (by name;
    /// the rule stays when it goes). A Docker container is `docker:` and the start of its
    /// EndpointID on the network.
    #[arg(long)]
    container: Option<String>,
    /// `allow` or `deny` what the rule matches.
    #[arg(value_enum)]
    action: Action,
}

#[derive(Subcommand)]
enum ConntrackCommand {
    /// List tracked flows, masqueraded and published (KIND tells them apart), with their
    /// translation, state, age and time left.
    #[command(alias = "list")]
    Ls,
    /// Forget every tracked flow (established connections through NAT break).
    Flush,
}

#[derive(Args)]
struct StatsArgs {
    /// Refresh until interrupted (Ctrl-C), with each path's packets and bytes per second
    /// since the last refresh.
    #[arg(long, short = 'w')]
    watch: bool,
    /// Seconds between refreshes with --watch.
    #[arg(long, value_name = "SECONDS", default_value_t = 1.0, value_parser = parse_interval, requires = "watch")]
    interval: f64,
    /// What this container (by name or ID) sent and received, per network, instead of
    /// the per-path counters.
    #[arg(long, value_name = "NAME")]
    container: Option<String>,
    /// What this network's containers sent and received, each and in total, instead of
    /// the per-path counters.
    #[arg(long, value_name = "NAME")]
    network: Option<String>,
}

#[derive(Args)]
struct MonitorArgs {
    /// One JSON object per line instead of text.
    #[arg(long)]
    json: bool,
    /// Only events about this container (by name or ID): its interface's, or for its
    /// addresses.
    #[arg(long, value_name = "NAME")]
    container: Option<String>,
    /// Only events about this network's containers.
    #[arg(long, value_name = "NAME")]
    network: Option<String>,
    /// Only drops, only new flows, or trace events: a packet the programs delivered,
    /// one per flow and second (shown only with `--type trace`).
    #[arg(long = "type", value_enum, value_name = "TYPE")]
    kind: Option<crate::monitor::EventKind>,
    /// Only this protocol (icmp takes ICMPv6 too).
    #[arg(long, value_enum)]
    proto: Option<crate::monitor::Proto>,
    /// Only packets from or to this port, before or after translation.
    #[arg(long, value_name = "N")]
    port: Option<u16>,
}

fn parse_interval(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(secs) if (0.1..=3600.0).contains(&secs) => Ok(secs),
        _ => Err(format!("{s}: give seconds between 0.1 and 3600, e.g. --interval 2")),
    }
}

#[derive(Args)]
struct DaemonArgs {
    /// The config file: TOML whose keys are the flags below without `--`, e.g.
    /// `state-dir = "/srv/dataplane"`, `dns = ["192.0.2.53"]`, `xdp = "off"`; a flag (or its
    /// environment variable) overrides it [default: /etc/dataplane/daemon.toml, when it exists].
    #[arg(long, env = "DATAPLANE_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Instead of serving: remove every trace a daemon with these settings left on the
    /// host (tc filters, XDP link, pins and bpffs mount, bridges, veths, container
    /// namespaces and their processes, mounts, sockets), then exit. The state stays for
    /// the next start unless --purge; refused while a daemon holds the state dir.
    #[arg(long)]
    cleanup: bool,
    /// With --cleanup: remove the state dir too (networks, containers, logs, firewall).
    #[arg(long, requires = "cleanup")]
    purge: bool,
    #[command(flatten)]
    settings: daemon::Settings,
}

#[derive(Subcommand)]
enum NetworkCommand {
    /// Create a network.
    Create(CreateArgs),
    /// List networks, `host` and `none` too.
    ///
    /// Filters: name=REGEXP, driver=NAME, id=PREFIX. Fields for --format, Docker's: .ID
    /// .Name .Driver .Scope .IPv6 .Internal .Labels .CreatedAt.
    #[command(alias = "list")]
    Ls(ListArgs),
    /// Show networks as JSON, in Docker's shape, or what a template makes of them; then
    /// fail naming those not found.
    Inspect {
        #[command(flatten)]
        format: InspectFormat,
        /// Networks, by name or ID.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove networks (refused while containers are attached).
    #[command(alias = "remove")]
    Rm {
        /// Networks, by name or ID.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove every network no container is on or asks for (except `bridge`).
    Prune,
    /// Attach a container to one more network (a new interface: eth1, eth2, ...).
    Connect {
        /// Fixed IPv4 address on the network.
        #[arg(long)]
        ip: Option<Ipv4Addr>,
        /// Fixed IPv6 address on the network (one with IPv6).
        #[arg(long)]
        ip6: Option<Ipv6Addr>,
        /// Another name for the container on this network.
        #[arg(long)]
        alias: Vec<String>,
        /// The network, by name or ID.
        network: String,
        /// The container, by name or ID.
        container: String,
    },
    /// Detach a container from a network.
    Disconnect {
        /// The network, by name or ID.
        network: String,
        /// The container, by name or ID.
        container: String,
    },
}

/// The flags Docker's lists share (`ps`, `network ls`).
#[derive(Args)]
struct ListArgs {
    /// Only the IDs.
    #[arg(short, long)]
    quiet: bool,
    /// Full IDs (and commands).
    #[arg(long)]
    no_trunc: bool,
    /// Only those that match (keys above); repeat it: values of one key match any,
    /// different keys all.
    #[arg(short, long, value_name = "KEY=VALUE")]
    filter: Vec<String>,
    /// `table`, `table TEMPLATE`, `json` (one object a line), or a Go template on the
    /// fields above.
    #[arg(long)]
    format: Option<String>,
}

/// `inspect`'s `--format`.
#[derive(Args)]
struct InspectFormat {
    /// A Go template run on each object (`{{.NetworkSettings.Networks.web.IPAddress}}`,
    /// `{{json .State}}`), or `json`: the array on one line.
    #[arg(short, long)]
    format: Option<String>,
}

fn key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

fn cidr(s: &str) -> Result<IpNet, String> {
    s.parse().map_err(|_| format!("{s:?} is not a CIDR like 10.10.0.0/24 or fd00:1::/64"))
}

pub(crate) fn cidr6(s: &str) -> Result<Ipv6Net, String> {
    s.parse().map_err(|_| format!("{s:?} is not an IPv6 CIDR like fd00:1::/64"))
}

#[derive(Args)]
struct CreateArgs {
    /// Network driver: `bridge` (a kernel bridge for the slow path, with forwarding,
    /// NAT and published ports in eBPF) or `macvlan` (interfaces on the segment of
    /// -o parent=IFACE, switched by the kernel, without NAT; needs --subnet) or
    /// `overlay` (shared by every host of the daemon's --store; built as a bridge
    /// network on each host, with addresses leased in the store).
    #[arg(short, long, default_value = "bridge")]
    driver: String,
    /// Subnet in CIDR form, one IPv4 and with --ipv6 one IPv6; picked from the default
    /// pools when absent (IPv6: a /64 of the host's ULA pool).
    #[arg(long, value_parser = cidr)]
    subnet: Vec<IpNet>,
    /// Gateway address of a subnet of its family (default: the subnet's first address).
    #[arg(long)]
    gateway: Vec<IpAddr>,
    /// Allocate container addresses from this sub-range of the subnet of its family only.
    #[arg(long, value_parser = cidr)]
    ip_range: Vec<IpNet>,
    /// IPv6 too: a dual-stack network.
    #[arg(long)]
    ipv6: bool,
    /// IPv4 (`--ipv4=false` with `--ipv6`: an IPv6-only network).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    ipv4: bool,
    /// Keep the network off the outside world.
    #[arg(long)]
    internal: bool,
    /// Driver option KEY=VALUE; repeat for more. bridge: icc=false (its containers cannot
    /// reach each other, only the gateway and the outside), mtu=N (68-65535),
    /// gateway_mode_ipv4=nat|routed|nat-unprotected|isolated and gateway_mode_ipv6=...
    /// (routed: that family leaves untranslated, and from outside only published container
    /// ports, replies and ICMP reach the containers' own addresses; nat-unprotected:
    /// masqueraded, and from outside every port of the containers' own addresses is
    /// reachable by route; isolated, with --internal: containers reach each other and the
    /// resolver only, no default route, nothing published, the host reaches them not; IPv6
    /// needs --ipv6); Docker's
    /// com.docker.network.bridge.enable_icc, com.docker.network.driver.mtu and
    /// com.docker.network.bridge.gateway_mode_ipv4/_ipv6 too; macvlan: parent=IFACE
    /// (required).
    #[arg(short, long = "opt", value_name = "KEY=VALUE", value_parser = key_value)]
    opt: Vec<(String, String)>,
    /// Metadata label KEY=VALUE, shown by `network inspect`; repeat for more.
    #[arg(long, value_name = "KEY=VALUE", value_parser = key_value)]
    label: Vec<(String, String)>,
    /// The network's name: letters, digits, `_`, `.`, `-`.
    name: String,
}

impl CreateArgs {
    /// The request, each --subnet, --gateway and --ip-range sorted by family as Docker
    /// does: one subnet of each family at most, a gateway or range beside its subnet.
    fn spec(self) -> Result<NetworkSpec> {
        let name = &self.name;
        let (mut v4, mut v6) =
            (IpFamily::<Ipv4Net, Ipv4Addr>::default(), IpFamily::<Ipv6Net, Ipv6Addr>::default());
        for subnet in self.subnet {
            match subnet {
                IpNet::V4(net) => v4.set_subnet(net, name)?,
                IpNet::V6(net) => v6.set_subnet(net, name)?,
            }
        }
        for gateway in self.gateway {
            match gateway {
                IpAddr::V4(ip) => v4.set_gateway(ip, name)?,
                IpAddr::V6(ip) => v6.set_gateway(ip, name)?,
            }
        }
        for range in self.ip_range {
            match range {
                IpNet::V4(net) => v4.set_range(net, name)?,
                IpNet::V6(net) => v6.set_range(net, name)?,
            }
        }
        if !self.ipv6 && v6.subnet.is_some() {
            bail!("network {name}: an IPv6 --subnet needs --ipv6");
        }
        if !self.ipv4 && v4.subnet.is_some() {
            bail!("network {name}: an IPv4 --subnet with --ipv4=false; drop one of them");
        }
        Ok(NetworkSpec {
            name: self.name,
            driver: self.driver,
            subnet: v4.subnet,
            gateway: v4.gateway,
            ip_range: v4.range,
            ipv4: self.ipv4,
            ipv6: self.ipv6.then_some(Ipv6Spec {
                subnet: v6.subnet,
                gateway: v6.gateway,
                ip_range: v6.range,
            }),
            internal: self.internal,
            options: self.opt.into_iter().collect::<BTreeMap<_, _>>(),
            labels: self.label.into_iter().collect(),
        })
    }
}

/// What `network create` was given for one address family.
struct IpFamily<N, A> {
    subnet: Option<N>,
    gateway: Option<A>,
    range: Option<N>,
}

impl<N, A> Default for IpFamily<N, A> {
    fn default() -> Self {
        Self { subnet: None, gateway: None, range: None }
    }
}

impl<N: std::fmt::Display, A: std::fmt::Display> IpFamily<N, A> {
    fn set_subnet(&mut self, subnet: N, network: &str) -> Result<()> {
        if let Some(first) = self.subnet.replace(subnet) {
            bail!(
                "network {network}: --subnet {first} and another of its family; a network takes one IPv4 and one IPv6 subnet"
            );
        }
        Ok(())
    }

    fn set_gateway(&mut self, gateway: A, network: &str) -> Result<()> {
        set_beside_subnet(&mut self.gateway, gateway, "--gateway", self.subnet.is_some(), network)
    }

    fn set_range(&mut self, range: N, network: &str) -> Result<()> {
        set_beside_subnet(&mut self.range, range, "--ip-range", self.subnet.is_some(), network)
    }
}

/// Sets what `flag` gave for a family: it needs a subnet of that family, once.
fn set_beside_subnet<T: std::fmt::Display>(
    slot: &mut Option<T>,
    value: T,
    flag: &str,
    has_subnet: bool,
    network: &str,
) -> Result<()> {
    if !has_subnet {
        bail!("network {network}: {flag} {value} needs a --subnet of its family");
    }
    if let Some(first) = slot.replace(value) {
        bail!("network {network}: {flag} {first} and another of its family; give one per subnet");
    }
    Ok(())
}

#[derive(Args)]
struct RunArgs {
    /// The container's name, which other commands take as well as its ID, and its name
    /// in the network's DNS (default: none; the ID's first 12 digits stand for it).
    #[arg(long)]
    name: Option<String>,
    /// A network, or a mode: host, none, container:NAME.
    #[arg(long, default_value = DEFAULT_NETWORK)]
    network: String,
    /// Fixed IPv4 address on the network, kept across stop and start (default: the
    /// network's next free address).
    #[arg(long)]
    ip: Option<Ipv4Addr>,
    /// Fixed IPv6 address on the network (one with IPv6).
    #[arg(long)]
    ip6: Option<Ipv6Addr>,
    /// The container's hostname, in its UTS namespace and /etc/hosts (default: the first 12
    /// digits of its ID).
    #[arg(long)]
    hostname: Option<String>,
    /// MAC address of its interface on the network, e.g. 02:42:0a:0a:00:05 (default: 02:42
    /// then the IPv4 address, as Docker's); kept across stop and start.
    #[arg(long, value_name = "MAC")]
    mac_address: Option<MacAddr>,
    /// Another name for the container on its network (user-defined networks only).
    #[arg(long = "network-alias", visible_alias = "net-alias")]
    network_alias: Vec<String>,
    /// Publish a port: [HOSTIP:][HOSTPORT[-END]:]CPORT[-END][/tcp|/udp].
    #[arg(short, long = "publish", value_parser = clap::value_parser!(PublishSpec))]
    publish: Vec<PublishSpec>,
    /// Publish every --expose'd port on a free host port.
    #[arg(short = 'P', long)]
    publish_all: bool,
    /// A port the container serves, for -P: PORT[/tcp|/udp].
    #[arg(long)]
    expose: Vec<String>,
    /// Run in the background and print the container id.
    #[arg(short, long)]
    detach: bool,
    /// Remove the container when its command exits.
    #[arg(long)]
    rm: bool,
    #[command(flatten)]
    env: EnvArgs,
    /// The command and its arguments (`--` before them is optional).
    #[arg(required = true, trailing_var_arg = true)]
    command: Vec<String>,
}

/// Docker's code for an error of the CLI rather than of a container: input it cannot parse
/// (an unknown flag, a missing argument, for any command) and `run`'s own failures, which
/// a script tells apart from the codes of a foreground container this way.
const CLI_ERROR: u8 = 125;
/// Docker's code for the failure of any other command.
const COMMAND_FAILED: u8 = 1;

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(usage_exit_code(&e));
        }
    };
    let failed = cli.command.failure_exit_code();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("Error: {e:#}");
            ExitCode::from(failed)
        }
    }
}

/// `--help` and `--version` succeed; input clap refuses fails as Docker's flag errors do.
fn usage_exit_code(e: &clap::Error) -> u8 {
    match e.use_stderr() {
        true => CLI_ERROR,
        false => 0,
    }
}

impl Command {
    /// The exit code when the command itself fails (not the container's command: a
    /// foreground `run` and `exec` pass that one through).
    fn failure_exit_code(&self) -> u8 {
        match self {
            Command::Run(_) => CLI_ERROR,
            _ => COMMAND_FAILED,
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    if !matches!(cli.command, Command::Daemon(_)) {
        daemon::init_logging(None);
    }
    let socket = cli.socket;
    let call = |request: Request| -> Result<Value> { api::call(&socket, &request) };
    match cli.command {
        Command::Daemon(args) => {
            let settings = args.settings.over(daemon::Settings::from_file(args.config.as_deref())?);
            daemon::init_logging(settings.log_level);
            let config = settings.into_config(socket.clone());
            let runtime = tokio::runtime::Runtime::new()?;
            match args.cleanup {
                true => runtime.block_on(daemon::cleanup(&config, args.purge))?,
                false => runtime.block_on(daemon::run(config))?,
            }
        }
        Command::Network(NetworkCommand::Create(args)) => {
            let spec = args.spec()?;
            let network: Network = serde_json::from_value(call(Request::NetworkCreate(spec))?)?;
            println!("{}", network.id);
        }
        Command::Network(NetworkCommand::Ls(args)) => network_ls(&socket, args)?,
        Command::Network(NetworkCommand::Inspect { format, names }) => {
            return inspect(&socket, names, ObjectKind::Network, format.format);
        }
        Command::Network(NetworkCommand::Rm { names }) => {
            let removed: Vec<String> = serde_json::from_value(call(Request::NetworkRemove { names })?)?;
            removed.iter().for_each(|n| println!("{n}"));
        }
        Command::Network(NetworkCommand::Connect { ip, ip6, alias, network, container }) => {
            call(Request::NetworkConnect { network, container, ip, ip6, aliases: alias })?;
        }
        Command::Network(NetworkCommand::Disconnect { network, container }) => {
            call(Request::NetworkDisconnect { network, container })?;
        }
        Command::Network(NetworkCommand::Prune) => {
            let removed: Vec<String> = serde_json::from_value(call(Request::NetworkPrune)?)?;
            if removed.is_empty() {
                println!("No unused networks to remove");
            } else {
                println!("Deleted Networks:");
                removed.iter().for_each(|n| println!("{n}"));
            }
        }
        Command::Run(args) => return run_container(&socket, args),
        Command::Ps { all, list } => ps(&socket, all, list)?,
        Command::Inspect { format, kind, names } => {
            return inspect(&socket, names, kind.unwrap_or(ObjectKind::Any), format.format);
        }
        Command::Exec { env, name, command } => {
            let found = call(Request::Inspect { names: vec![name.clone()] })?;
            let container = &found[0];
            if container["State"]["Running"] != Value::Bool(true) {
                bail!("container {name} is not running; start a new one with `dataplane run`");
            }
            let netns_path = PathBuf::from(container["NetworkSettings"]["SandboxKey"].as_str().unwrap_or(""));
            let etc_dir = PathBuf::from(container["EtcDir"].as_str().unwrap_or(""));
            let ns = netns::open(&netns_path)?;
            let pid = container["State"]["Pid"].as_i64().unwrap_or(0) as i32;
            let pid1 = process::open_pid1(pid, &ns).with_context(|| {
                format!("container {name} is not running; start a new one with `dataplane run`")
            })?;
            // The container's environment and directory, then exec's own, as on Docker.
            let mut entries: Vec<String> = container["Config"]["Env"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|e| e.as_str().map(String::from))
                .collect();
            entries.extend(env.entries()?);
            let hostname = container["Config"]["Hostname"].as_str().unwrap_or("");
            let workdir = env.workdir.clone().or_else(|| {
                container["Config"]["WorkingDir"].as_str().filter(|d| !d.is_empty()).map(PathBuf::from)
            });
            let ctx = process::ContainerContext {
                netns: &ns,
                pid_ns: process::PidNamespace::Join(pid1.as_fd()),
                hostname: None,
                etc_dir: &etc_dir,
                pin_dir: netns_path.parent(),
                env: &process::container_env(hostname, &entries),
                workdir: workdir.as_deref(),
            };
            let status = process::container_command(&command, &ctx)
                .spawn()
                .and_then(|mut child| child.wait())
                .with_context(|| format!("running {:?} in container {name}", command[0]))?;
            return Ok(exit_code(status));
        }
        Command::Stop { time, names } => {
            for name in names {
                call(Request::Stop { name: name.clone(), timeout_secs: time })?;
                println!("{name}");
            }
        }
        Command::Start { names } => {
            for name in names {
                call(Request::Start { name: name.clone() })?;
                println!("{name}");
            }
        }
        Command::Restart { time, names } => {
            for name in names {
                call(Request::Restart { name: name.clone(), timeout_secs: time })?;
                println!("{name}");
            }
        }
        Command::Logs { follow, tail, name } => logs(&socket, &name, follow, tail)?,
        Command::Rm { force, names } => {
            for name in names {
                call(Request::Remove { name: name.clone(), force })?;
                println!("{name}");
            }
        }
        Command::Stats(args) => {
            let request =
                || Request::Stats { container: args.container.clone(), network: args.network.clone() };
            if !args.watch {
                print_stats(&call(request())?, None);
                return Ok(ExitCode::SUCCESS);
            }
            let interval = std::time::Duration::from_secs_f64(args.interval);
            let mut previous: Option<(std::time::Instant, Value)> = None;
            loop {
                let stats = call(request())?;
                let taken = std::time::Instant::now();
                if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
                    // Clear the screen and go home, as `docker stats` redraws.
                    print!("\x1b[2J\x1b[H");
                } else {
                    println!();
                }
                print_stats(&stats, previous.as_ref().map(|(then, before)| (taken - *then, before)));
                previous = Some((taken, stats));
                std::thread::sleep(interval);
            }
        }
        Command::Monitor(args) => {
            use std::io::Write;
            let filter = crate::monitor::Filter {
                container: args.container,
                network: args.network,
                kind: args.kind,
                proto: args.proto,
                port: args.port,
            };
            let mut out = std::io::stdout().lock();
            let mut reader_left = false;
            let streamed =
                api::stream(&socket, &Request::Monitor(filter), |line: crate::monitor::MonitorLine| {
                    let text =
                        if args.json { serde_json::to_string(&line)? } else { crate::monitor::text(&line) };
                    // Flushed per line: a pipe (grep, jq) sees each event as it comes.
                    let written = writeln!(out, "{text}").and_then(|()| out.flush());
                    // A reader that closed the pipe (`| head`) has seen enough: the end, not an error.
                    reader_left = written.as_ref().is_err_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe);
                    written.context("writing to standard output")
                });
            if !reader_left {
                streamed?;
            }
        }
        Command::Port { name, port } => {
            let found = call(Request::Inspect { names: vec![name.clone()] })?;
            port_lines(&name, &found[0], port)?.iter().for_each(|line| println!("{line}"));
        }
        Command::Version => {
            let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .context("reading the kernel's release from /proc/sys/kernel/osrelease")?;
            let daemon = match call(Request::Version) {
                Ok(answer) => Ok(answer),
                // Its reason too: a socket that is there but not ours to open is no absence.
                Err(e) if api::kind_of(&e) == api::ErrorKind::Unreachable => Err(format!("{e:#}")),
                Err(e) => return Err(e),
            };
            print!("{}", version_report(kernel.trim(), daemon.as_ref().map_err(String::as_str)));
            if daemon.is_err() {
                return Ok(ExitCode::from(COMMAND_FAILED));
            }
        }
        Command::Conntrack(ConntrackCommand::Ls) => {
            let flows: Vec<crate::nat::FlowView> = serde_json::from_value(call(Request::ConntrackList)?)?;
            let rows = flows.into_iter().map(|f| {
                vec![
                    f.kind,
                    f.proto,
                    f.source,
                    f.destination,
                    f.translated,
                    f.state,
                    f.age_secs.to_string(),
                    f.expires_in_secs.to_string(),
                ]
            });
            print_table(
                &["KIND", "PROTO", "SOURCE", "DESTINATION", "TRANSLATED", "STATE", "AGE", "EXPIRES"],
                rows,
            );
        }
        Command::Firewall(FirewallCommand::Add(args)) => {
            let spec = firewall::RuleSpec {
                action: args.action,
                source: args.source,
                ports: args.port,
                proto: args.proto,
                container: args.container,
            };
            let rule: firewall::Rule = serde_json::from_value(call(Request::FirewallAdd(spec))?)?;
            println!("{}", rule.id);
        }
        Command::Firewall(FirewallCommand::Ls { format }) => {
            let listed = call(Request::FirewallList)?;
            if format == "json" {
                println!("{}", serde_json::to_string_pretty(&listed)?);
                return Ok(ExitCode::SUCCESS);
            }
            let listed: Vec<firewall::Listed> = serde_json::from_value(listed)?;
            let any = |v: Option<String>| v.unwrap_or_else(|| "any".into());
            let rows = listed.into_iter().map(|l| {
                let spec = l.rule.spec;
                vec![
                    l.rule.id.to_string(),
                    spec.action.to_string(),
                    any(spec.source.map(|s| s.to_string())),
                    any(spec.ports.map(|p| p.to_string())),
                    any(spec.proto.map(|p| p.to_string())),
                    any(spec.container),
                    l.hits.to_string(),
                ]
            });
            print_table(&["ID", "ACTION", "SOURCE", "PORTS", "PROTO", "CONTAINER", "HITS"], rows);
        }
        Command::Firewall(FirewallCommand::Rm { ids }) => {
            let removed: Vec<u32> = serde_json::from_value(call(Request::FirewallRemove { ids })?)?;
            removed.iter().for_each(|id| println!("{id}"));
        }
        Command::Completion { shell } => {
            // Written whole, so that a closed pipe is an error rather than clap's panic.
            let mut script = vec![];
            clap_complete::generate(shell, &mut Cli::command(), "dataplane", &mut script);
            std::io::Write::write_all(&mut std::io::stdout(), &script).context("writing the script")?;
        }
        Command::Manpages { dir } => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            clap_mangen::generate_to(Cli::command(), &dir)
                .with_context(|| format!("writing the man pages into {}", dir.display()))?;
        }
        Command::Conntrack(ConntrackCommand::Flush) => {
            let n: u64 = serde_json::from_value(call(Request::ConntrackFlush)?)?;
            println!("{n} flows forgotten");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `ps`: the daemon's containers as rows, filtered, the newest first.
fn ps(socket: &std::path::Path, all: bool, args: ListArgs) -> Result<()> {
    let filters = Filters::parse(&args.filter, &listing::PS_FILTERS)?;
    // As on Docker, asking for a status asks for stopped containers too.
    let all = all || filters.has("status");
    let mut containers: Vec<InspectedContainer> =
        serde_json::from_value(api::call(socket, &Request::List { all })?)
            .context("the daemon's containers")?;
    containers.retain(|c| filters.allow_container(c));
    containers.sort_by_key(|c| std::cmp::Reverse(c.created()));
    let now = jiff::Timestamp::now();
    let rows: Vec<_> = containers.iter().map(|c| c.row(now, !args.no_trunc)).collect();
    let format = quiet_or(args.quiet, args.format);
    print!("{}", Formatter::parse(&format, listing::PS_TABLE)?.render(&rows, &listing::PS_HEADERS.into())?);
    Ok(())
}

/// `network ls`: the daemon's networks as rows, filtered, by name.
fn network_ls(socket: &std::path::Path, args: ListArgs) -> Result<()> {
    let filters = Filters::parse(&args.filter, &listing::NETWORK_FILTERS)?;
    let mut networks: Vec<InspectedNetwork> =
        serde_json::from_value(api::call(socket, &Request::NetworkList)?).context("the daemon's networks")?;
    networks.retain(|n| filters.allow_network(n));
    let mut rows: Vec<_> = networks.iter().map(|n| n.row(!args.no_trunc)).collect();
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    let format = quiet_or(args.quiet, args.format);
    let formatter = Formatter::parse(&format, listing::NETWORK_TABLE)?;
    print!("{}", formatter.render(&rows, &listing::NETWORK_HEADERS.into())?);
    Ok(())
}

/// `-q` is `{{.ID}}` whatever `--format` says, as on Docker; no `--format` is the table.
fn quiet_or(quiet: bool, format: Option<String>) -> String {
    match quiet {
        true => "{{.ID}}".into(),
        false => format.unwrap_or_default(),
    }
}

/// `inspect` and `network inspect`: what was found, as Docker prints it (an indented JSON
/// array, or the template's output for each), then an error naming what was not.
fn inspect(
    socket: &std::path::Path,
    names: Vec<String>,
    kind: ObjectKind,
    format: Option<String>,
) -> Result<ExitCode> {
    let lookup: api::Lookup =
        serde_json::from_value(api::call(socket, &Request::InspectObjects { names, kind })?)?;
    let out = match format.as_deref().map(str::trim) {
        None | Some("") => indented(&lookup.found)?,
        Some("json") => serde_json::to_string(&lookup.found)? + "\n",
        Some(template) => {
            let formatter = Formatter::parse(template, "")?;
            formatter.render(&lookup.found, &Default::default())?
        }
    };
    print!("{out}");
    if lookup.missing.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    let (what, list) = match kind {
        ObjectKind::Container => ("container", "`dataplane ps -a` lists them"),
        ObjectKind::Network => ("network", "`dataplane network ls` lists them"),
        ObjectKind::Any => ("object", "`dataplane ps -a` and `dataplane network ls` list them"),
    };
    let missing: Vec<String> = lookup.missing.iter().map(|name| format!("No such {what}: {name}")).collect();
    bail!("{} ({list})", missing.join("\n"))
}

/// JSON indented by 4 spaces, as Docker's `inspect` prints it.
fn indented(value: &impl serde::Serialize) -> Result<String> {
    let mut out = vec![];
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    value.serialize(&mut serde_json::Serializer::with_formatter(&mut out, formatter))?;
    out.push(b'\n');
    Ok(String::from_utf8(out)?)
}

fn run_container(socket: &std::path::Path, args: RunArgs) -> Result<ExitCode> {
    let mut publish: Vec<_> = args.publish.into_iter().flat_map(|p| p.0).collect();
    if args.publish_all {
        for port in &args.expose {
            let spec: PublishSpec =
                port.parse().map_err(|e: String| anyhow::anyhow!(e.replace("-p", "--expose")))?;
            publish.extend(spec.0.into_iter().filter(|m| m.host_port == 0));
        }
    }
    let spec = RunSpec {
        publish,
        name: args.name,
        network: args.network,
        ip: args.ip,
        ip6: args.ip6,
        hostname: args.hostname,
        mac: args.mac_address,
        aliases: args.network_alias,
        command: args.command,
        env: args.env.entries()?,
        workdir: args.env.workdir,
        detach: args.detach,
        auto_remove: args.rm,
    };
    let answer: api::RunAnswer = serde_json::from_value(api::call(socket, &Request::Run(spec))?)?;
    let container = answer.container;
    if container.detached {
        println!("{}", container.id);
        return Ok(ExitCode::SUCCESS);
    }
    let record = answer.process_record.with_context(|| {
        format!(
            "the daemon named no file to record the command of container {} in (is it an older version?); \
             restart the daemon from this binary, or use `run -d`",
            container.name
        )
    })?;
    let ns = netns::open(&container.netns)?;
    let ctx = process::ContainerContext {
        netns: &ns,
        pid_ns: process::PidNamespace::New,
        hostname: Some(&container.hostname),
        etc_dir: &container.etc_dir,
        pin_dir: container.netns.parent(),
        env: &process::container_env(&container.hostname, &container.env),
        workdir: container.workdir.as_deref(),
    };
    // The child is the PID 1 of its namespace: the PID the daemon records is the one
    // `stop` and `rm -f` signal, and its death ends every process of the container. It
    // runs once it is recorded where the daemon named, so that a daemon that goes away
    // before it hears of the start finds the command at its next start.
    let command = process::container_command(&container.command, &ctx);
    let (pid, code) =
        match command.spawn_recorded(|pid, start_time| process::write_record(&record, pid, start_time)) {
            Ok((mut child, _)) => {
                let pid = child.id() as i32;
                report(socket, &Request::Started { id: container.id.clone(), pid }, &container.name);
                let status = child.wait()?;
                let code = status.code().unwrap_or_else(|| {
                    128 + std::os::unix::process::ExitStatusExt::signal(&status).unwrap_or(0)
                });
                (Some(pid), code)
            }
            Err(e) => {
                eprintln!("dataplane: cannot run {:?}: {e:#}", container.command[0]);
                let missing = e
                    .chain()
                    .find_map(|e| e.downcast_ref::<std::io::Error>())
                    .is_some_and(|e| e.kind() == std::io::ErrorKind::NotFound);
                (None, if missing { 127 } else { 126 })
            }
        };
    // When the daemon saw the exit first and removed an --rm container, these fail: fine.
    report(socket, &Request::Exited { id: container.id.clone(), pid, code }, &container.name);
    if container.auto_remove {
        let _: Result<Value> = api::call(socket, &Request::Remove { name: container.id, force: true });
    }
    Ok(ExitCode::from(code.clamp(0, 255) as u8))
}

/// How long the CLI tries to report a foreground command's start or end to a daemon that
/// cannot be reached (a restart takes seconds: it loads its programs first).
const REPORT_WAIT: Duration = Duration::from_secs(30);

/// Reports a foreground command's start or end (`Started`, `Exited`) to the daemon,
/// trying again while none can be reached, for up to `REPORT_WAIT`: a daemon that went
/// away and came back learns it. An answer that is an error is dropped: the daemon knows
/// better (it saw the end first, or the container was removed).
fn report(socket: &std::path::Path, request: &Request, name: &str) {
    let end = matches!(request, Request::Exited { .. });
    let what = if end { "end" } else { "start" };
    let deadline = Instant::now() + REPORT_WAIT;
    let mut told = false;
    loop {
        let Err(e) = api::call::<Value>(socket, request) else { return };
        if api::kind_of(&e) != api::ErrorKind::Unreachable {
            return;
        }
        if Instant::now() >= deadline {
            eprintln!(
                "dataplane: {e:#}; the {what} of container {name} went unreported: the daemon's next start records what it finds"
            );
            return;
        }
        // Quiet about the start: the command's output shares the terminal.
        if end && !told {
            eprintln!(
                "dataplane: {e:#}; reporting the end of container {name} once it is back (for up to {REPORT_WAIT:?})"
            );
            told = true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `logs`: prints a container's log (`LogPath`), the last `tail` lines of it; with
/// `follow`, then what its command writes until it ends.
fn logs(socket: &std::path::Path, name: &str, follow: bool, tail: Tail) -> Result<()> {
    use std::io::{Read, Seek, Write};
    let inspect = || -> Result<Value> {
        let mut found: Value = api::call(socket, &Request::Inspect { names: vec![name.into()] })?;
        Ok(found[0].take())
    };
    let container = inspect()?;
    let path = container["LogPath"].as_str().unwrap_or("");
    if path.is_empty() {
        bail!(
            "container {name} ran in the foreground, where its output went to the terminal; \
             `dataplane start {name}` runs it in the background, with a log"
        );
    }
    let mut file = match std::fs::File::open(path) {
        Ok(file) => file,
        // Its command has yet to start, or the log was removed by hand: nothing to show.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !follow => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("reading the log of {name} ({path})")),
    };
    let mut text = String::new();
    file.read_to_string(&mut text).with_context(|| format!("reading {path}"))?;
    let mut out = std::io::stdout().lock();
    out.write_all(tail_of(&text, tail).as_bytes())?;
    out.flush()?;
    if !follow {
        return Ok(());
    }
    let mut offset = file.stream_position()?;
    let mut chunk = vec![];
    loop {
        // Asked before the read, so that what it wrote up to its end is printed.
        let running = inspect()?["State"]["Running"] == Value::Bool(true);
        file.seek(std::io::SeekFrom::Start(offset))?;
        chunk.clear();
        offset += file.read_to_end(&mut chunk)? as u64;
        out.write_all(&chunk)?;
        out.flush()?;
        if !running {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// What `version` prints, in the shape of Docker's: this CLI's version and the kernel it
/// runs on, then the daemon's version and the kernel's BPF features it found (its answer),
/// or why no daemon answered.
fn version_report(kernel: &str, daemon: Result<&Value, &str>) -> String {
    let server = match daemon {
        Ok(answer) => {
            let features = answer["BpfFeatures"].as_array().map_or(&[][..], Vec::as_slice);
            let (found, missing): (Vec<&Value>, Vec<&Value>) =
                features.iter().partition(|f| f["Found"] == Value::Bool(true));
            let names = |list: Vec<&Value>| {
                list.iter().filter_map(|f| f["Name"].as_str()).collect::<Vec<_>>().join(", ")
            };
            let mut lines = format!(
                " Version:  {}\n BPF:      {}",
                answer["Version"].as_str().unwrap_or("unknown"),
                names(found)
            );
            if !missing.is_empty() {
                lines.push_str(&format!(
                    "\n Missing:  {} (needed; see the README's minimum kernel)",
                    names(missing)
                ));
            }
            lines
        }
        Err(unreachable) => format!(" daemon not running: {unreachable}"),
    };
    format!("Client:\n Version:  {}\n Kernel:   {kernel}\n\nServer:\n{server}\n", env!("CARGO_PKG_VERSION"))
}

/// A container port as `port` takes it and Docker writes it: PORT/tcp or PORT/udp.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct ContainerPort {
    port: u16,
    proto: crate::ports::Proto,
}

impl std::str::FromStr for ContainerPort {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (port, proto) = s.split_once('/').unwrap_or((s, "tcp"));
        let proto = match proto {
            "tcp" => crate::ports::Proto::Tcp,
            "udp" => crate::ports::Proto::Udp,
            _ => return Err(format!("{s:?}: unsupported protocol {proto:?}; write PORT/tcp or PORT/udp")),
        };
        match port.parse() {
            Ok(port) if port > 0 => Ok(Self { port, proto }),
            _ => Err(format!(
                "{s:?}: give a container port 1-65535, optionally with /tcp or /udp (e.g. 80/tcp)"
            )),
        }
    }
}

impl std::fmt::Display for ContainerPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.port, self.proto)
    }
}

/// What `port` prints for a container (its `inspect` JSON), as Docker prints it: every
/// published port as `80/tcp -> 0.0.0.0:8080`, in port order; or, for one port, its host
/// addresses alone, and an error naming the container and the port when it has none.
fn port_lines(name: &str, container: &Value, wanted: Option<ContainerPort>) -> Result<Vec<String>> {
    let mut published: Vec<(ContainerPort, String)> = vec![];
    for (key, hosts) in container["NetworkSettings"]["Ports"].as_object().into_iter().flatten() {
        let port: ContainerPort =
            key.parse().map_err(|e| anyhow::anyhow!("the daemon's ports of container {name}: {e}"))?;
        for host in hosts.as_array().into_iter().flatten() {
            let (ip, host_port) =
                (host["HostIp"].as_str().unwrap_or(""), host["HostPort"].as_str().unwrap_or(""));
            // As Docker prints them: an IPv6 address in brackets (`[::]:8080`).
            let host = match ip.contains(':') {
                true => format!("[{ip}]:{host_port}"),
                false => format!("{ip}:{host_port}"),
            };
            published.push((port, host));
        }
    }
    // Stable: the host addresses of one port stay in the daemon's order.
    published.sort_by_key(|(port, _)| *port);
    let Some(wanted) = wanted else {
        return Ok(published.into_iter().map(|(port, host)| format!("{port} -> {host}")).collect());
    };
    let hosts: Vec<String> =
        published.iter().filter(|(port, _)| *port == wanted).map(|(_, host)| host.clone()).collect();
    if !hosts.is_empty() {
        return Ok(hosts);
    }
    if container["State"]["Running"] != Value::Bool(true) {
        bail!(
            "container {name} publishes no port {wanted}: it is not running, and a stopped container \
             holds no ports; `dataplane start {name}` publishes them again"
        );
    }
    let mut ports: Vec<String> = published.iter().map(|(port, _)| port.to_string()).collect();
    ports.dedup();
    let has = match ports.is_empty() {
        true => "it publishes none".to_string(),
        false => format!("it publishes {}", ports.join(", ")),
    };
    bail!(
        "container {name} publishes no port {wanted} ({has}); ports are published when a container \
         is created: `dataplane run -p HOSTPORT:{wanted} ...`"
    )
}

fn exit_code(status: std::process::ExitStatus) -> ExitCode {
    let code = status
        .code()
        .unwrap_or_else(|| 128 + std::os::unix::process::ExitStatusExt::signal(&status).unwrap_or(0));
    ExitCode::from(code.clamp(0, 255) as u8)
}

/// The `stats` tables; with the figures of an earlier reading and the time since, each
/// path's rates over that time too.
fn print_stats(stats: &Value, since: Option<(std::time::Duration, &Value)>) {
    if let Some(endpoints) = stats["endpoints"].as_array() {
        return print_endpoint_stats(
            endpoints,
            since.map(|(elapsed, before)| (elapsed, &before["endpoints"])),
        );
    }
    let entries = stats.as_object().into_iter().flatten();
    let (tables, paths): (Vec<_>, Vec<_>) = entries.partition(|(name, _)| name.starts_with("conntrack_"));
    let counter = |c: &Value, what: &str| c[what].as_u64().unwrap_or(0);
    let rows = paths.into_iter().map(|(path, c)| {
        let mut row = vec![path.clone(), c["packets"].to_string(), c["bytes"].to_string()];
        if let Some((elapsed, before)) = since {
            for what in ["packets", "bytes"] {
                row.push(per_second(counter(c, what), counter(&before[path], what), elapsed));
            }
        }
        row
    });
    match since {
        Some(_) => print_table(&["PATH", "PACKETS", "BYTES", "PACKETS/S", "BYTES/S"], rows),
        None => print_table(&["PATH", "PACKETS", "BYTES"], rows),
    }
    println!();
    let rows = tables.into_iter().map(|(table, c)| vec![table.clone(), c["packets"].to_string()]);
    print_table(&["TABLE", "ENTRIES"], rows);
}

/// The `stats --container`/`--network` table: a row per endpoint, then their total when
/// there are several; with an earlier reading, the rates since.
fn print_endpoint_stats(endpoints: &[Value], since: Option<(std::time::Duration, &Value)>) {
    const FIGURES: [(&str, &str); 4] =
        [("sent", "packets"), ("sent", "bytes"), ("received", "packets"), ("received", "bytes")];
    let figure = |e: &Value, (way, what): (&str, &str)| e[way][what].as_u64().unwrap_or(0);
    let total = |of: &[Value]| FIGURES.map(|f| of.iter().map(|e| figure(e, f)).sum::<u64>());
    // An endpoint's figures in the earlier reading; none for one that was not there.
    let before_of = |e: &Value| {
        let same = |b: &&Value| b["container"] == e["container"] && b["network"] == e["network"];
        let before = since?.1.as_array()?.iter().find(same)?;
        Some(FIGURES.map(|f| figure(before, f)))
    };
    let row = |names: [String; 2], now: [u64; 4], before: Option<[u64; 4]>| {
        let mut row: Vec<String> = names.into_iter().chain(now.iter().map(u64::to_string)).collect();
        if let Some((elapsed, _)) = since {
            row.extend((0..4).map(|i| before.map_or("-".to_string(), |b| per_second(now[i], b[i], elapsed))));
        }
        row
    };
    let mut rows: Vec<Vec<String>> = endpoints
        .iter()
        .map(|e| {
            let name = |key: &str| e[key].as_str().unwrap_or("").to_string();
            row([name("container"), name("network")], FIGURES.map(|f| figure(e, f)), before_of(e))
        })
        .collect();
    if endpoints.len() > 1 {
        let before = since.and_then(|(_, b)| b.as_array()).map(|b| total(b));
        rows.push(row(["(total)".to_string(), String::new()], total(endpoints), before));
    }
    let mut header =
        vec!["CONTAINER", "NETWORK", "SENT PACKETS", "SENT BYTES", "RECEIVED PACKETS", "RECEIVED BYTES"];
    if since.is_some() {
        header.extend(["SENT PACKETS/S", "SENT BYTES/S", "RECEIVED PACKETS/S", "RECEIVED BYTES/S"]);
    }
    print_table(&header, rows.into_iter());
}

/// A counter's rate between two readings, whole units per second; a counter that went
/// down (the maps were replaced meanwhile) shows no rate.
fn per_second(now: u64, before: u64, elapsed: std::time::Duration) -> String {
    match now.checked_sub(before) {
        Some(grown) if !elapsed.is_zero() => format!("{:.0}", grown as f64 / elapsed.as_secs_f64()),
        _ => "-".to_string(),
    }
}

fn print_table(header: &[&str], rows: impl Iterator<Item = Vec<String>>) {
    let rows: Vec<Vec<String>> = rows.collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        println!("{}", padded.join("   ").trim_end());
    };
    line(header.to_vec());
    for row in &rows {
        line(row.iter().map(String::as_str).collect());
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn rates_are_the_growth_over_the_time_between_readings() {
        let second = std::time::Duration::from_secs(1);
        assert_eq!(per_second(1_500, 500, second * 2), "500");
        assert_eq!(per_second(7, 7, second), "0");
        assert_eq!(per_second(3, 10, second), "-", "a counter that went down");
        assert_eq!(per_second(3, 1, std::time::Duration::ZERO), "-");
        assert!(
            Cli::try_parse_from(["dataplane", "stats", "--interval", "2"]).is_err(),
            "--interval needs --watch"
        );
        assert!(Cli::try_parse_from(["dataplane", "stats", "-w", "--interval", "0"]).is_err());
        assert!(Cli::try_parse_from(["dataplane", "stats", "-w", "--interval", "0.5"]).is_ok());
    }

    #[test]
    fn flags_are_parsed_like_dockers() {
        let cli = Cli::try_parse_from([
            "dataplane",
            "network",
            "create",
            "--subnet",
            "10.1.0.0/24",
            "-o",
            "icc=false",
            "--opt",
            "mtu=1400",
            "--label",
            "a=b=c",
            "net",
        ])
        .unwrap();
        let Command::Network(NetworkCommand::Create(args)) = cli.command else {
            panic!("not network create")
        };
        assert_eq!(args.subnet, ["10.1.0.0/24".parse::<IpNet>().unwrap()]);
        assert_eq!(args.opt, [("icc".into(), "false".into()), ("mtu".into(), "1400".into())]);
        assert_eq!(args.label, [("a".into(), "b=c".into())]);
        let cli =
            Cli::try_parse_from(["dataplane", "run", "-d", "--rm", "--network", "n", "--", "sleep", "-x"])
                .unwrap();
        let Command::Run(args) = cli.command else { panic!("not run") };
        assert!(args.detach && args.rm);
        assert_eq!(args.command, ["sleep", "-x"]);
    }

    fn create(args: &[&str]) -> Result<NetworkSpec> {
        let cli = Cli::try_parse_from(["dataplane", "network", "create"].iter().chain(args)).unwrap();
        let Command::Network(NetworkCommand::Create(args)) = cli.command else {
            panic!("not network create")
        };
        args.spec()
    }

    #[test]
    fn a_dual_stack_network_takes_one_subnet_of_each_family_with_its_gateway() {
        let spec = create(&[
            "--ipv6",
            "--subnet",
            "fd00:1::/64",
            "--gateway",
            "fd00:1::fe",
            "--subnet",
            "10.1.0.0/24",
            "--ip-range",
            "fd00:1::100/120",
            "n",
        ])
        .unwrap();
        assert_eq!(spec.subnet, Some("10.1.0.0/24".parse().unwrap()));
        assert_eq!(spec.gateway, None, "the IPv6 gateway is not the IPv4 one");
        assert_eq!(
            spec.ipv6,
            Some(Ipv6Spec {
                subnet: Some("fd00:1::/64".parse().unwrap()),
                gateway: Some("fd00:1::fe".parse().unwrap()),
                ip_range: Some("fd00:1::100/120".parse().unwrap()),
            })
        );
        assert!(spec.ipv4);
        let plain = create(&["--ipv6", "n"]).unwrap();
        assert_eq!(plain.ipv6, Some(Ipv6Spec::default()), "--ipv6 alone: a subnet of the ULA pool");
        assert!(create(&["n"]).unwrap().ipv6.is_none(), "IPv4 only unless --ipv6");
        assert!(!create(&["--ipv6", "--ipv4=false", "n"]).unwrap().ipv4);
        let err = |args: &[&str]| format!("{:#}", create(args).unwrap_err());
        assert!(err(&["--subnet", "fd00:1::/64", "n"]).contains("needs --ipv6"));
        assert!(
            err(&["--ipv6", "--subnet", "fd00:1::/64", "--subnet", "fd00:2::/64", "n"])
                .contains("one IPv4 and one IPv6")
        );
        assert!(err(&["--ipv6", "--gateway", "fd00:1::1", "n"]).contains("needs a --subnet of its family"));
        assert!(
            err(&["--subnet", "10.1.0.0/24", "--gateway", "fd00:1::1", "--ipv6", "n"])
                .contains("of its family")
        );
    }

    #[test]
    fn help_describes_every_command_and_argument() {
        fn undescribed(command: &clap::Command, path: &str, found: &mut Vec<String>) {
            let path = format!("{path} {}", command.get_name());
            if command.get_about().is_none() {
                found.push(path.clone());
            }
            for arg in command.get_arguments().filter(|a| !matches!(a.get_id().as_str(), "help" | "version"))
            {
                if arg.get_help().is_none() {
                    found.push(format!("{path} {}", arg.get_id()));
                }
            }
            for sub in command.get_subcommands() {
                undescribed(sub, &path, found);
            }
        }
        let mut found = vec![];
        let mut cli = Cli::command();
        cli.build();
        undescribed(&cli, "", &mut found);
        assert_eq!(found, Vec::<String>::new(), "commands and arguments without a description in --help");
    }

    #[test]
    fn the_command_needs_no_double_dash_as_on_docker() {
        let cli = Cli::try_parse_from([
            "dataplane",
            "run",
            "-d",
            "--name",
            "x",
            "-e",
            "A=1",
            "-w",
            "/tmp",
            "sleep",
            "100",
        ])
        .unwrap();
        let Command::Run(args) = cli.command else { panic!("not run") };
        assert_eq!(args.command, ["sleep", "100"]);
        assert_eq!((args.name.as_deref(), args.env.env.as_slice()), (Some("x"), &["A=1".to_string()][..]));
        assert_eq!(args.env.workdir, Some(PathBuf::from("/tmp")));
        // The command's own flags stay its own, with or without `--`.
        let cli = Cli::try_parse_from(["dataplane", "run", "--rm", "ls", "-l", "--all"]).unwrap();
        let Command::Run(args) = cli.command else { panic!("not run") };
        assert_eq!((args.rm, args.command.as_slice()), (true, &["ls", "-l", "--all"].map(String::from)[..]));
        let cli = Cli::try_parse_from(["dataplane", "exec", "-e", "B=2", "x", "ip", "-4", "addr"]).unwrap();
        let Command::Exec { env, name, command } = cli.command else { panic!("not exec") };
        assert_eq!((name.as_str(), command.as_slice()), ("x", &["ip", "-4", "addr"].map(String::from)[..]));
        assert_eq!(env.env, ["B=2"]);
        let cli = Cli::try_parse_from(["dataplane", "exec", "x", "--", "ip", "addr"]).unwrap();
        let Command::Exec { command, .. } = cli.command else { panic!("not exec") };
        assert_eq!(command, ["ip", "addr"]);
        let err = Cli::try_parse_from(["dataplane", "run", "-w", "tmp", "true"]).err().unwrap().to_string();
        assert!(err.contains("not an absolute path"), "{err}");
    }

    #[test]
    fn list_and_inspect_flags_are_dockers() {
        let cli = Cli::try_parse_from([
            "dataplane",
            "ps",
            "-aq",
            "--no-trunc",
            "-f",
            "name=^web$",
            "--filter",
            "status=exited",
            "--format",
            "json",
        ])
        .unwrap();
        let Command::Ps { all, list } = cli.command else { panic!("not ps") };
        assert!(all && list.quiet && list.no_trunc);
        assert_eq!(list.filter, ["name=^web$", "status=exited"]);
        assert_eq!(quiet_or(list.quiet, list.format), "{{.ID}}", "-q wins over --format, as on Docker");
        assert_eq!(quiet_or(false, None), "", "no --format: the table");
        let cli = Cli::try_parse_from(["dataplane", "network", "ls", "-q", "-f", "driver=bridge"]).unwrap();
        let Command::Network(NetworkCommand::Ls(list)) = cli.command else { panic!("not network ls") };
        assert!(list.quiet && list.filter == ["driver=bridge"]);
        let cli =
            Cli::try_parse_from(["dataplane", "inspect", "-f", "{{.Id}}", "--type", "network", "a", "b"])
                .unwrap();
        let Command::Inspect { format, kind, names } = cli.command else { panic!("not inspect") };
        assert_eq!(
            (format.format.as_deref(), kind, names.as_slice()),
            (Some("{{.Id}}"), Some(ObjectKind::Network), &["a".to_string(), "b".to_string()][..])
        );
        let cli =
            Cli::try_parse_from(["dataplane", "network", "inspect", "--format", "{{.Name}}", "web"]).unwrap();
        let Command::Network(NetworkCommand::Inspect { format, .. }) = cli.command else {
            panic!("not network inspect")
        };
        assert_eq!(format.format.as_deref(), Some("{{.Name}}"));
    }

    #[test]
    fn inspect_prints_json_indented_by_four_as_dockers() {
        assert_eq!(
            indented(&serde_json::json!([{"A": 1}])).unwrap(),
            "[\n    {\n        \"A\": 1\n    }\n]\n"
        );
    }

    #[test]
    fn env_files_are_read_as_dockers_and_e_wins() {
        let entries: Vec<_> = env_file_entries("# comment\nA=1\n\n  B=two words\nC\n").collect();
        assert_eq!(entries, ["A=1", "B=two words", "C"]);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("env");
        std::fs::write(&file, "A=from-file\nUNSET_IN_THIS_TEST_9F3\n").unwrap();
        let args =
            EnvArgs { env: vec!["A=from-e".into(), "PATH".into()], env_file: vec![file], workdir: None };
        let entries = args.entries().unwrap();
        assert_eq!(entries[0], "A=from-file");
        assert_eq!(entries[1], "A=from-e", "-e comes last, so it wins");
        assert_eq!(entries[2], format!("PATH={}", std::env::var("PATH").unwrap()), "a KEY alone takes ours");
        assert_eq!(entries.len(), 3, "a KEY we do not have is left out: {entries:?}");
        let missing = EnvArgs { env: vec![], env_file: vec![dir.path().join("nope")], workdir: None };
        assert!(format!("{:#}", missing.entries().unwrap_err()).contains("--env-file"));
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        let log = "one\ntwo\nthree\n";
        assert_eq!(tail_of(log, Tail::All), log);
        assert_eq!(tail_of(log, Tail::Last(2)), "two\nthree\n");
        assert_eq!(tail_of(log, Tail::Last(3)), log);
        assert_eq!(tail_of(log, Tail::Last(9)), log);
        assert_eq!(tail_of(log, Tail::Last(0)), "");
        assert_eq!(tail_of("one\ntwo", Tail::Last(1)), "two", "a last line without its newline counts");
        assert_eq!(parse_tail("all"), Ok(Tail::All));
        assert_eq!(parse_tail("5"), Ok(Tail::Last(5)));
        assert!(parse_tail("-1").unwrap_err().contains("number of lines"));
    }

    #[test]
    fn malformed_flags_are_refused_with_the_reason() {
        let err = |args: &[&str]| Cli::try_parse_from(args).err().expect("should fail").to_string();
        assert!(
            err(&["dataplane", "network", "create", "--subnet", "10.1.0/24", "n"]).contains("not a CIDR")
        );
        assert!(err(&["dataplane", "network", "create", "-o", "icc", "n"]).contains("KEY=VALUE"));
        assert!(err(&["dataplane", "network", "create", "--gateway", "10.1", "n"]).contains("--gateway"));
        assert!(err(&["dataplane", "run", "--mac-address", "02:42", "--", "true"]).contains("invalid MAC"));
        assert!(
            err(&["dataplane", "run"]).contains("CMD") || err(&["dataplane", "run"]).contains("required")
        );
    }

    #[test]
    fn exit_codes_are_dockers() {
        let usage = |args: &[&str]| usage_exit_code(&Cli::try_parse_from(args).err().expect("should fail"));
        assert_eq!(usage(&["dataplane", "run", "--bogus", "true"]), 125, "run's bad flag, not a command");
        assert_eq!(usage(&["dataplane", "exec", "--bogus", "x", "true"]), 125, "exec's bad flag");
        assert_eq!(usage(&["dataplane", "run"]), 125, "run without its command");
        assert_eq!(usage(&["dataplane", "ps", "--bogus"]), 125, "any command's bad flag, as Docker's");
        assert_eq!(usage(&["dataplane", "--help"]), 0, "--help succeeds");
        assert_eq!(usage(&["dataplane", "run", "--help"]), 0, "run --help succeeds");
        assert_eq!(usage(&["dataplane", "--version"]), 0, "--version succeeds");
        let failed = |args: &[&str]| Cli::try_parse_from(args).unwrap().command.failure_exit_code();
        assert_eq!(failed(&["dataplane", "run", "--name", "x", "true"]), 125, "run's own failure");
        assert_eq!(failed(&["dataplane", "ps"]), 1);
        assert_eq!(failed(&["dataplane", "rm", "-f", "x"]), 1);
        assert_eq!(failed(&["dataplane", "exec", "x", "true"]), 1, "exec's own failure");
        assert_eq!(failed(&["dataplane", "network", "create", "n"]), 1);
        assert_eq!(failed(&["dataplane", "port", "x", "80"]), 1);
    }

    #[test]
    fn container_ports_are_parsed_as_dockers_port_takes_them() {
        let tcp = crate::ports::Proto::Tcp;
        let udp = crate::ports::Proto::Udp;
        assert_eq!("80".parse(), Ok(ContainerPort { port: 80, proto: tcp }), "bare is tcp");
        assert_eq!("80/tcp".parse(), Ok(ContainerPort { port: 80, proto: tcp }));
        assert_eq!("53/udp".parse(), Ok(ContainerPort { port: 53, proto: udp }));
        assert_eq!(ContainerPort { port: 53, proto: udp }.to_string(), "53/udp");
        assert!("80/sctp".parse::<ContainerPort>().unwrap_err().contains("PORT/udp"));
        assert!("0".parse::<ContainerPort>().unwrap_err().contains("1-65535"));
        assert!("http".parse::<ContainerPort>().unwrap_err().contains("1-65535"));
        let cli = Cli::try_parse_from(["dataplane", "port", "web", "53/udp"]).unwrap();
        let Command::Port { name, port } = cli.command else { panic!("not port") };
        assert_eq!((name.as_str(), port), ("web", Some(ContainerPort { port: 53, proto: udp })));
    }

    #[test]
    fn version_reports_the_client_the_kernel_and_the_daemon_or_its_absence() {
        let ours = env!("CARGO_PKG_VERSION");
        let answer = serde_json::json!({"Version": "0.0.9", "BpfFeatures": [
            {"Name": "xdp", "Found": true}, {"Name": "btf", "Found": true}
        ]});
        assert_eq!(
            version_report("6.8.0-1-amd64", Ok(&answer)),
            format!(
                "Client:\n Version:  {ours}\n Kernel:   6.8.0-1-amd64\n\nServer:\n Version:  0.0.9\n \
                 BPF:      xdp, btf\n"
            )
        );
        let old_kernel = serde_json::json!({"Version": "0.0.9", "BpfFeatures": [
            {"Name": "xdp", "Found": true}, {"Name": "lpm_trie", "Found": false}
        ]});
        assert!(
            version_report("4.9.0", Ok(&old_kernel)).contains(" BPF:      xdp\n Missing:  lpm_trie (needed"),
            "what the kernel lacks is named apart"
        );
        let down = version_report("6.8.0-1-amd64", Err("cannot reach the daemon at /run/x.sock: denied"));
        assert_eq!(
            down,
            format!(
                "Client:\n Version:  {ours}\n Kernel:   6.8.0-1-amd64\n\nServer:\n daemon not running: \
                 cannot reach the daemon at /run/x.sock: denied\n"
            ),
            "the client's part, then why no daemon answered"
        );
        let cli = Cli::try_parse_from(["dataplane", "version"]).unwrap();
        assert_eq!(cli.command.failure_exit_code(), 1);
    }

    fn web_with_ports(running: bool, ports: Value) -> Value {
        serde_json::json!({"State": {"Running": running}, "NetworkSettings": {"Ports": ports}})
    }

    #[test]
    fn port_prints_dockers_lines_in_port_order() {
        let web = web_with_ports(
            true,
            serde_json::json!({
                "8000/tcp": [{"HostIp": "0.0.0.0", "HostPort": "9000"}],
                "53/udp": [{"HostIp": "0.0.0.0", "HostPort": "5353"}],
                "80/tcp": [
                    {"HostIp": "127.0.0.1", "HostPort": "8081"},
                    {"HostIp": "0.0.0.0", "HostPort": "8080"},
                    {"HostIp": "::", "HostPort": "8080"}
                ]
            }),
        );
        assert_eq!(
            port_lines("web", &web, None).unwrap(),
            [
                "53/udp -> 0.0.0.0:5353",
                "80/tcp -> 127.0.0.1:8081",
                "80/tcp -> 0.0.0.0:8080",
                "80/tcp -> [::]:8080",
                "8000/tcp -> 0.0.0.0:9000"
            ],
            "by port number, not as text; one port's addresses in the daemon's order"
        );
        let one = |query: &str| port_lines("web", &web, Some(query.parse().unwrap()));
        assert_eq!(
            one("80").unwrap(),
            ["127.0.0.1:8081", "0.0.0.0:8080", "[::]:8080"],
            "one port: its addresses alone, IPv6 ones in brackets"
        );
        assert_eq!(one("53/udp").unwrap(), ["0.0.0.0:5353"]);
        let err = format!("{:#}", one("53").unwrap_err());
        assert!(
            err.contains("container web publishes no port 53/tcp")
                && err.contains("it publishes 53/udp, 80/tcp, 8000/tcp")
                && err.contains("-p HOSTPORT:53/tcp"),
            "{err}"
        );
    }

    #[test]
    fn port_of_a_container_without_ports_names_it_and_the_fix() {
        let bare = web_with_ports(true, serde_json::json!({}));
        assert_eq!(port_lines("web", &bare, None).unwrap(), Vec::<String>::new(), "nothing, as on Docker");
        let err = format!("{:#}", port_lines("web", &bare, Some("80".parse().unwrap())).unwrap_err());
        assert!(err.contains("container web publishes no port 80/tcp (it publishes none)"), "{err}");
        let stopped = web_with_ports(false, serde_json::json!({}));
        let err = format!("{:#}", port_lines("web", &stopped, Some("80".parse().unwrap())).unwrap_err());
        assert!(err.contains("not running") && err.contains("dataplane start web"), "{err}");
    }

    #[test]
    fn firewall_rules_are_parsed_and_bad_ones_refused_with_the_fix() {
        let cli = Cli::try_parse_from([
            "dataplane",
            "firewall",
            "add",
            "--source",
            "192.0.2.0/24",
            "--port",
            "8000-8010",
            "--proto",
            "udp",
            "--container",
            "web",
            "deny",
        ])
        .unwrap();
        let Command::Firewall(FirewallCommand::Add(args)) = cli.command else { panic!("not firewall add") };
        assert_eq!(args.source, Some("192.0.2.0/24".parse().unwrap()));
        assert_eq!(args.port, Some(PortRange { first: 8000, last: 8010 }));
        assert_eq!((args.action, args.container.as_deref()), (Action::Deny, Some("web")));
        let err = |args: &[&str]| Cli::try_parse_from(args).err().expect("should fail").to_string();
        let add = |extra: &[&str]| {
            let mut args = vec!["dataplane", "firewall", "add"];
            args.extend_from_slice(extra);
            err(&args)
        };
        assert!(add(&["--source", "10.0.0.300", "deny"]).contains("not an IP address or CIDR"));
        assert!(add(&["--source", "2001:db8:1::1/48", "deny"]).contains("write 2001:db8:1::/48"));
        assert!(add(&["--port", "9000-8000", "deny"]).contains("write 8000-9000"));
        assert!(add(&["--port", "0", "deny"]).contains("1-65535"));
        assert!(add(&["--proto", "icmp", "deny"]).contains("use tcp or udp"));
        assert!(add(&["reject"]).contains("allow"));
    }
}
