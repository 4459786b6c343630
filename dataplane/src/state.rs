//! The daemon's persisted state: networks, containers, endpoints and the firewall, so that
//! a restart restores everything. It holds no handle to the system; restoring the system
//! from it is the daemon's job. Each kind of record is a `Table` that remembers what
//! changed, and the store writes only that (see `journal`): a change costs the same
//! whether the host runs ten endpoints or thousands.

mod journal;
mod table;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::PathBuf,
    str::FromStr,
};

use ipnet::{IpNet, Ipv4Net};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

pub use self::{
    journal::{Changes, StateStore},
    table::{Change, Keyed, Table},
};
use crate::ipam::{AddressPlan, AddressPlanV6};

/// A MAC address, shown and parsed as `02:42:ac:11:00:02`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl FromStr for MacAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("invalid MAC address {s:?}: expected six hex bytes like 02:42:ac:11:00:02");
        let parts: Vec<_> = s.split(':').collect();
        if parts.len() != 6 {
            return Err(bad());
        }
        let mut mac = [0u8; 6];
        for (byte, part) in mac.iter_mut().zip(parts) {
            if part.len() != 2 {
                return Err(bad());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
        }
        if mac[0] & 1 == 1 {
            return Err(format!("MAC address {s} is a multicast address; the first byte must be even"));
        }
        Ok(Self(mac))
    }
}

impl Serialize for MacAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Random 64-hex-digit identifiers, as Docker's.
pub fn new_id() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `name` is the first `len` digits of an ID as `new_id` makes them (lowercase
/// hex; all 64 for a whole ID).
pub fn is_id_prefix(name: &str, len: usize) -> bool {
    name.len() == len && name.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Options of a bridge network (`--opt`), parsed; Docker's long names are accepted too.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BridgeOptions {
    /// Inter-container communication inside the network (Docker's default: enabled).
    pub icc: bool,
    pub mtu: Option<u32>,
    /// How the network's IPv4 leaves the host (absent from earlier state files: NAT).
    #[serde(default)]
    pub gateway_mode_ipv4: GatewayMode,
    /// How the network's IPv6 leaves the host (absent from earlier state files: NAT).
    #[serde(default)]
    pub gateway_mode_ipv6: GatewayMode,
}

/// Docker's `com.docker.network.bridge.gateway_mode_ipv4` and `_ipv6`: how a network's
/// traffic of that family leaves through the uplink, and what of the outside may reach its
/// containers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GatewayMode {
    /// Masqueraded to the uplink's address; from outside, only published host ports.
    #[default]
    Nat,
    /// Untranslated, the container's own address the source (the outside routes the
    /// network's subnet to the host); from outside, the containers' published ports on
    /// their own addresses, replies of their flows, and ICMP.
    Routed,
    /// Masqueraded as `Nat`, without its protection: from outside, a host that routes the
    /// network's subnet to this one reaches every port of the containers' own addresses
    /// (Docker's legacy behaviour), and published host ports as with `Nat`.
    NatUnprotected,
    /// Docker's `isolated` (28.2+), on an `--internal` network only: containers reach
    /// their peers and nothing else, and nothing reaches them but their peers. No default
    /// route, nothing published; the gateway address stays on the bridge for the
    /// embedded resolver alone (TCP and UDP port 53).
    Isolated,
}

impl BridgeOptions {
    pub fn parse(raw: &BTreeMap<String, String>) -> Result<Self, String> {
        let mut options = Self { icc: true, ..Self::default() };
        for (key, value) in raw {
            match key.as_str() {
                "icc" | "com.docker.network.bridge.enable_icc" => {
                    options.icc =
                        value.parse().map_err(|_| format!("--opt {key}={value}: expected true or false"))?;
                }
                "mtu" | "com.docker.network.driver.mtu" => {
                    let mtu: u32 =
                        value.parse().ok().filter(|m| (68..=65535).contains(m)).ok_or_else(|| {
                            format!("--opt {key}={value}: expected an MTU between 68 and 65535")
                        })?;
                    options.mtu = Some(mtu);
                }
                "gateway_mode_ipv4" | GATEWAY_MODE_IPV4 => {
                    options.gateway_mode_ipv4 = GatewayMode::parse(key, value)?
                }
                "gateway_mode_ipv6" | GATEWAY_MODE_IPV6 => {
                    options.gateway_mode_ipv6 = GatewayMode::parse(key, value)?
                }
                _ => {
                    return Err(format!(
                        "--opt {key}: unknown option for the bridge driver; supported: icc, mtu, gateway_mode_ipv4, \
                         gateway_mode_ipv6"
                    ));
                }
            }
        }
        Ok(options)
    }

    /// The first family in `isolated` mode (`ipv4`, then `ipv6`), if any.
    pub fn isolated_family(&self) -> Option<&'static str> {
        match (self.gateway_mode_ipv4, self.gateway_mode_ipv6) {
            (GatewayMode::Isolated, _) => Some("ipv4"),
            (_, GatewayMode::Isolated) => Some("ipv6"),
            _ => None,
        }
    }

    /// Whether the network's containers of that family (IPv4 when `ipv6` is false) have no
    /// gateway: no default route, nothing published, nothing of the host but the resolver.
    pub fn isolated(&self, ipv6: bool) -> bool {
        let mode = if ipv6 { self.gateway_mode_ipv6 } else { self.gateway_mode_ipv4 };
        mode == GatewayMode::Isolated
    }
}

impl GatewayMode {
    fn parse(key: &str, value: &str) -> Result<Self, String> {
        match value {
            "nat" => Ok(GatewayMode::Nat),
            "routed" => Ok(GatewayMode::Routed),
            "nat-unprotected" => Ok(GatewayMode::NatUnprotected),
            "isolated" => Ok(GatewayMode::Isolated),
            _ => Err(format!("--opt {key}={value}: expected nat, routed, nat-unprotected or isolated")),
        }
    }

    /// Docker's name of the mode, as `inspect` shows it.
    pub fn name(self) -> &'static str {
        match self {
            GatewayMode::Nat => "nat",
            GatewayMode::Routed => "routed",
            GatewayMode::NatUnprotected => "nat-unprotected",
            GatewayMode::Isolated => "isolated",
        }
    }
}

/// Docker's name of the `gateway_mode_ipv4` option.
pub const GATEWAY_MODE_IPV4: &str = "com.docker.network.bridge.gateway_mode_ipv4";

/// Docker's name of the `gateway_mode_ipv6` option.
pub const GATEWAY_MODE_IPV6: &str = "com.docker.network.bridge.gateway_mode_ipv6";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    pub id: String,
    pub name: String,
    pub driver: String,
    /// The network's number in the BPF maps; never reused while the network exists.
    pub index: u32,
    /// The IPv4 subnet and gateway; none on an IPv6-only network (`--ipv4=false`), which
    /// then has `ipv6`. Both or neither: `plan` reads them together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<Ipv4Net>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<Ipv4Addr>,
    pub ip_range: Option<Ipv4Net>,
    /// The IPv6 subnet, gateway and range of a dual-stack network (`--ipv6`); none on an
    /// IPv4-only one, whose containers keep IPv6 off (absent from earlier state files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<AddressPlanV6>,
    pub internal: bool,
    /// As given by the user, shown by inspect.
    pub options: BTreeMap<String, String>,
    pub bridge_options: BridgeOptions,
    pub labels: BTreeMap<String, String>,
    /// The kernel bridge that carries the slow path (ARP, broadcast, host traffic).
    pub bridge: String,
    #[serde(deserialize_with = "moment")]
    pub created: Timestamp,
    /// An overlay network's VXLAN network identifier, as the shared store last gave it
    /// (shown by inspect); none on other networks, and until the store has given one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vni: Option<u32>,
}

impl Network {
    /// A bridge network on 10.`third`.0.0/24, for tests.
    #[cfg(test)]
    pub fn sample(name: &str, third: u8) -> Self {
        Self {
            id: new_id(),
            name: name.into(),
            driver: "bridge".into(),
            index: u32::from(third),
            subnet: Some(format!("10.{third}.0.0/24").parse().unwrap()),
            gateway: Some(Ipv4Addr::new(10, third, 0, 1)),
            ip_range: None,
            ipv6: None,
            internal: false,
            options: Default::default(),
            bridge_options: BridgeOptions {
                icc: true,
                mtu: None,
                gateway_mode_ipv4: GatewayMode::Nat,
                gateway_mode_ipv6: GatewayMode::Nat,
            },
            labels: Default::default(),
            bridge: format!("br-{name}"),
            created: Timestamp::UNIX_EPOCH,
            vni: None,
        }
    }

    /// Its IPv4 plan; none on an IPv6-only network.
    pub fn plan(&self) -> Option<AddressPlan> {
        let (subnet, gateway) = self.subnet.zip(self.gateway)?;
        Some(AddressPlan { subnet, gateway, range: self.ip_range.unwrap_or(subnet) })
    }

    /// Its gateways: IPv4, then IPv6, those it has.
    pub fn gateways(&self) -> impl Iterator<Item = std::net::IpAddr> + use<> {
        self.gateway.map(Into::into).into_iter().chain(self.ipv6.map(|v6| v6.gateway.into()))
    }

    /// The gateways its containers route through: those of `gateways` whose family is not
    /// isolated (an isolated family's gateway address serves the resolver alone).
    pub fn routing_gateways(&self) -> impl Iterator<Item = std::net::IpAddr> + use<> {
        let options = self.bridge_options.clone();
        self.gateways().filter(move |gateway| !options.isolated(gateway.is_ipv6()))
    }

    /// Whether the outside reaches every port of its containers' own addresses of that
    /// family (IPv4 when `ipv6` is false): `nat-unprotected`, on a network that is not
    /// `--internal` (whose containers nothing outside reaches).
    pub fn unprotected(&self, ipv6: bool) -> bool {
        let options = &self.bridge_options;
        let mode = if ipv6 { options.gateway_mode_ipv6 } else { options.gateway_mode_ipv4 };
        mode == GatewayMode::NatUnprotected && !self.internal
    }
}

/// The network a container joins when `run` names none (Docker's `bridge`): it resolves no
/// container names, and takes no aliases.
pub const DEFAULT_NETWORK: &str = "bridge";

/// Who made an endpoint's namespace and answers for its life: `run`'s containers, or a
/// runtime through one of the other front doors (the CNI plugin, Docker's network plugin).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Owner {
    /// A container of our own `run`, whose namespace is ours too.
    Container { id: String },
    /// A runtime's container attached by the CNI plugin (`CNI_CONTAINERID`); the runtime
    /// owns the namespace.
    Cni { container_id: String },
    /// An endpoint of Docker's network plugin API (its `EndpointID`); Docker owns the
    /// namespace.
    Docker { endpoint_id: String },
}

impl Owner {
    /// Whether the owner takes the endpoint's inner end from the host namespace and
    /// configures it itself: Docker moves it into its sandbox, renames it and gives it its
    /// address and routes. The others' inner end is born in their namespace, configured.
    pub fn configures_interface(&self) -> bool {
        matches!(self, Owner::Docker { .. })
    }

    /// The id of our own container that owns the endpoint, if one does.
    pub fn container_id(&self) -> Option<&str> {
        match self {
            Owner::Container { id } => Some(id),
            Owner::Cni { .. } | Owner::Docker { .. } => None,
        }
    }
}

/// As `network inspect` shows it: `dataplane` for our own containers (named beside it),
/// `cni:<containerID>` and `docker:<endpointID>` for the others.
impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Owner::Container { .. } => f.write_str("dataplane"),
            Owner::Cni { container_id } => write!(f, "cni:{container_id}"),
            Owner::Docker { endpoint_id } => write!(f, "docker:{endpoint_id}"),
        }
    }
}

/// A network attachment of one namespace, whoever made the namespace: an interface in it
/// with an address of the network, on bridge networks a veth whose host side runs the
/// fast path, and the ports published on its address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// 64 hex digits, as Docker's EndpointID.
    pub id: String,
    pub owner: Owner,
    /// The network namespace the interface is in.
    pub netns: PathBuf,
    /// Name of the interface inside the namespace (`eth0`); for Docker's endpoints, the
    /// name it is handed over by (`Endpoint::hand_over_name`) until Docker has it up in
    /// its sandbox, then the name Docker gave it there (`eth<N>`).
    pub ifname: String,
    pub network_id: String,
    /// Its IPv4 address; none on an IPv6-only network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<Ipv4Addr>,
    /// Its IPv6 address, on a network with IPv6 (absent from earlier state files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip6: Option<Ipv6Addr>,
    pub mac: MacAddr,
    /// Host side of the veth pair (`veth` + 7 hex digits).
    pub host_veth: String,
    /// More names the endpoint answers to on this network (`--network-alias`).
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Which of the network's bridges holds the host-side veth: 0 is the network's own,
    /// 1 and up the extra bridges a network gets past the ports one bridge can hold.
    #[serde(default)]
    pub bridge: u8,
    /// Published ports, with the host ports actually reserved.
    #[serde(default)]
    pub ports: Vec<crate::ports::PortMapping>,
}

impl Endpoint {
    /// Its addresses: IPv4, then IPv6 on a network with it.
    pub fn addresses(&self) -> impl Iterator<Item = std::net::IpAddr> + use<> {
        self.ip.map(Into::into).into_iter().chain(self.ip6.map(Into::into))
    }

    /// The name of the inner end of an endpoint whose owner configures it (Docker) until
    /// the owner moves it into its namespace and renames it: unique per endpoint, 15
    /// characters at most (the kernel's limit).
    pub fn hand_over_name(id: &str) -> String {
        let digits: String = id.chars().filter(char::is_ascii_alphanumeric).take(11).collect();
        format!("dp{digits}")
    }

    /// Whether the owner has yet to take the inner end into its namespace and bring it up
    /// there (the name is still the hand-over one, in the daemon's namespace).
    pub fn awaits_hand_over(&self) -> bool {
        self.owner.configures_interface() && self.ifname == Self::hand_over_name(&self.id)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum Status {
    Created,
    Running {
        pid: i32,
        /// Start time of the process (clock ticks since boot), to tell it from a later
        /// process that reuses its PID.
        start_time: u64,
    },
    Exited {
        code: Option<i32>,
    },
    /// Found broken at a start of the daemon, with a piece that cannot be rebuilt (its
    /// namespace went); `rm` removes what is left.
    Dead {
        reason: String,
    },
}

/// How a container is networked (Docker's `--network` modes).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "lowercase")]
pub enum NetworkMode {
    /// Its own namespace, attached to networks (its endpoints).
    #[default]
    Bridge,
    /// The daemon's host namespace itself: no veth, no address.
    Host,
    /// Its own namespace with only `lo`.
    None,
    /// The namespace (and /etc files) of another container.
    Container { id: String },
}

impl NetworkMode {
    /// Whether the container's namespace and /etc files are its own, to remove with it.
    pub fn owns_sandbox(&self) -> bool {
        matches!(self, NetworkMode::Bridge | NetworkMode::None)
    }
}

/// A container of our own `run`. Its network attachments are the endpoints it owns
/// (`State::endpoints_of`), in the order it joined their networks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Container {
    pub id: String,
    pub name: String,
    pub hostname: String,
    #[serde(default)]
    pub network_mode: NetworkMode,
    pub netns: PathBuf,
    /// The container's own /etc/hosts, /etc/hostname and /etc/resolv.conf.
    pub etc_dir: PathBuf,
    pub command: Vec<String>,
    /// The command's environment beyond Docker's defaults (`-e`, `--env-file`), `KEY=VALUE`.
    #[serde(default)]
    pub env: Vec<String>,
    /// Where the command starts (`-w`); `/` when `None`.
    #[serde(default)]
    pub workdir: Option<PathBuf>,
    /// The networks it joins each time it starts, in order (the first is its primary):
    /// what `run` and `network connect` asked. A stopped container holds no endpoint, so
    /// that its address, veth and ports are free for others; this is what brings them
    /// back (absent from state files of earlier versions: `State::adopt_endpoints`).
    #[serde(default)]
    pub networks: Vec<Attachment>,
    pub detached: bool,
    pub auto_remove: bool,
    pub status: Status,
    #[serde(deserialize_with = "moment")]
    pub created: Timestamp,
    /// When its command last started (Docker's `State.StartedAt`); `None` before the first.
    #[serde(default)]
    pub started_at: Option<Timestamp>,
    /// When its command last ended (Docker's `State.FinishedAt`); `None` before the first end.
    #[serde(default)]
    pub finished_at: Option<Timestamp>,
    /// Where a command started in the background writes its output (`logs`).
    #[serde(default)]
    pub log: Option<PathBuf>,
}

impl Container {
    /// Whether its command runs (as recorded; the watch on it records its end).
    pub fn is_running(&self) -> bool {
        matches!(self.status, Status::Running { .. })
    }

    /// Records that its command started now, as `pid`.
    pub fn started(&mut self, pid: i32, start_time: u64) {
        self.status = Status::Running { pid, start_time };
        self.started_at = Some(now());
    }

    /// Records that its command ended now, with `code` if known.
    pub fn exited(&mut self, code: Option<i32>) {
        self.status = Status::Exited { code };
        self.finished_at = Some(now());
    }
}

/// What a container asks of one network each time it starts: its interface there, and
/// the address, MAC, aliases and ports it asked for (an address or MAC of the network's
/// choosing when `None`: then it may differ from one start to the next, as on Docker).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    pub network_id: String,
    pub ifname: String,
    pub ip: Option<Ipv4Addr>,
    /// The IPv6 address asked for (`--ip6`), on a network with IPv6.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip6: Option<Ipv6Addr>,
    pub mac: Option<MacAddr>,
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Ports to publish; a host port of 0 takes any free one at each start.
    #[serde(default)]
    pub publish: Vec<crate::ports::PortMapping>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub networks: Table<Network>,
    pub containers: Table<Container>,
    /// Every network attachment, whoever owns it (absent from state files written before
    /// endpoints were the state's own: `StateStore::load` moves theirs here).
    #[serde(default)]
    pub endpoints: Table<Endpoint>,
    /// The firewall for published ports (absent from state files of earlier versions).
    #[serde(default)]
    pub firewall: crate::firewall::Rules,
    /// What Docker's network plugin API created, by Docker's IDs.
    #[serde(default)]
    pub docker: DockerState,
    /// Operations under way (absent from state files of earlier versions).
    #[serde(default)]
    pub intents: Table<Intent>,
    /// The IDs of the `host` and `none` networks (absent from state files of earlier
    /// versions: made when they load).
    #[serde(default)]
    pub predefined: PredefinedNetworks,
}

/// Docker's networks that are modes rather than networks of their own (`--network host`,
/// `--network none`): listed and inspected as Docker shows them, by IDs made once per
/// state, as Docker makes them once per host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PredefinedNetworks {
    pub host: String,
    pub none: String,
}

impl Default for PredefinedNetworks {
    fn default() -> Self {
        Self { host: new_id(), none: new_id() }
    }
}

/// An operation under way that changes the system, saved before its first change and
/// removed by the save that records its outcome. One found at start was cut short by a
/// crash: the daemon undoes what a creation made, and finishes a removal, so that each
/// happened whole or not at all. Each holds what its undoing or finishing needs to know
/// of the system: the exact names, never a guess by prefix.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "operation", rename_all = "snake_case")]
pub enum Intent {
    /// `run` makes this container (its namespace, /etc files and command): undone.
    Run { container: Container },
    /// An endpoint is being attached, whoever its owner: undone.
    Attach { endpoint: Endpoint },
    /// `network create` builds this network: undone.
    CreateNetwork { network: Network },
    /// `rm` removes this container: finished.
    Remove { container_id: String },
    /// `start` runs this stopped container's command again (its endpoints have intents
    /// of their own): undone, its command killed, unless its start was recorded.
    Start { container_id: String },
}

impl Keyed for Intent {
    type Index = ();
    fn key(&self) -> &str {
        match self {
            Intent::Run { container } => &container.id,
            Intent::Attach { endpoint } => &endpoint.id,
            Intent::CreateNetwork { network } => &network.id,
            Intent::Remove { container_id } | Intent::Start { container_id } => container_id,
        }
    }
}

/// What Docker's network plugin API knows by Docker's IDs: its networks (ours, by our ID)
/// and the endpoints it created on them. Such an endpoint is one of ours (owner
/// `docker:<endpointID>`) from Join to Leave; before and after, only this record holds it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DockerState {
    /// Docker's NetworkID → our network's ID.
    pub networks: BTreeMap<String, String>,
    /// Docker's EndpointID → what CreateEndpoint settled.
    pub endpoints: BTreeMap<String, DockerEndpoint>,
    /// Address pools of our IPAM driver (`--ipam-driver`), by their PoolID.
    #[serde(default)]
    pub pools: BTreeMap<String, DockerPool>,
}

/// A pool our IPAM driver gave Docker: a subnet, the range its addresses come from, and
/// the addresses given out (the gateway apart).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DockerPool {
    /// IPv4 or IPv6 (`--ipv6`), as Docker asked; the range and addresses are of its family.
    pub subnet: IpNet,
    pub range: Option<IpNet>,
    pub gateway: Option<IpAddr>,
    pub addresses: BTreeSet<IpAddr>,
}

impl DockerState {
    /// Whether our network `network_id` is one of Docker's.
    pub fn is_dockers(&self, network_id: &str) -> bool {
        self.networks.values().any(|id| id == network_id)
    }
}

/// An endpoint as Docker's CreateEndpoint settled it: the addresses Docker's IPAM gave (or
/// the IPv6 one we chose), and the MAC Docker gave or we chose.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DockerEndpoint {
    /// Our network's ID.
    pub network_id: String,
    pub ip: Ipv4Addr,
    /// On a network with IPv6 (absent from earlier state files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip6: Option<Ipv6Addr>,
    pub mac: MacAddr,
}

impl State {
    /// Finds a network by name, full id or unique id prefix, as Docker does.
    pub fn network(&self, name_or_id: &str) -> Option<&Network> {
        find(&self.networks, name_or_id, |n| (&n.name, &n.id))
    }

    pub fn network_by_id(&self, id: &str) -> Option<&Network> {
        self.networks.iter().find(|n| n.id == id)
    }

    pub fn container(&self, name_or_id: &str) -> Option<&Container> {
        find(&self.containers, name_or_id, |c| (&c.name, &c.id))
    }

    /// A container to change; the change is saved with the next save.
    pub fn container_mut(&mut self, id: &str) -> Option<&mut Container> {
        self.containers.get_mut(id)
    }

    /// Addresses in use on a network: the allocations IPAM must avoid.
    pub fn used_addresses(&self, network_id: &str) -> &BTreeSet<Ipv4Addr> {
        static NONE: BTreeSet<Ipv4Addr> = BTreeSet::new();
        self.endpoints.index().networks.get(network_id).map_or(&NONE, |n| &n.addresses)
    }

    /// The IPv6 addresses taken on a network. A scan: IPv6 allocations are kept out of the
    /// endpoint index until a dual-stack network holds thousands of them.
    pub fn used_addresses6(&self, network_id: &str) -> BTreeSet<Ipv6Addr> {
        self.endpoints_on(network_id).filter_map(|e| e.ip6).collect()
    }

    /// How many endpoints of a network each of its bridges holds (bridges without any
    /// left out).
    pub fn bridge_occupancy(&self, network_id: &str) -> BTreeMap<u8, usize> {
        self.endpoints.index().networks.get(network_id).map(|n| n.bridges.clone()).unwrap_or_default()
    }

    /// Whether an endpoint has this host-side veth name.
    pub fn veth_taken(&self, name: &str) -> bool {
        self.endpoints.index().veths.contains(name)
    }

    /// The endpoints on a network, in the order they joined it.
    pub fn endpoints_on<'a>(&'a self, network_id: &'a str) -> impl Iterator<Item = &'a Endpoint> + 'a {
        self.endpoints.iter().filter(move |e| e.network_id == network_id)
    }

    /// The endpoints of one of our containers, in the order it joined their networks
    /// (the first is its primary network). One scan: for many containers at once, use
    /// `endpoints_by_container`.
    pub fn endpoints_of<'a>(&'a self, container_id: &'a str) -> impl Iterator<Item = &'a Endpoint> + 'a {
        self.endpoints.iter().filter(move |e| e.owner.container_id() == Some(container_id))
    }

    /// Every container's endpoints by container id, in one pass.
    pub fn endpoints_by_container(&self) -> HashMap<&str, Vec<&Endpoint>> {
        let mut by_container: HashMap<&str, Vec<&Endpoint>> = HashMap::new();
        for endpoint in &self.endpoints {
            if let Some(id) = endpoint.owner.container_id() {
                by_container.entry(id).or_default().push(endpoint);
            }
        }
        by_container
    }

    /// What the endpoints' owners are called, for a pass over many endpoints.
    pub fn owner_names(&self) -> OwnerNames<'_> {
        OwnerNames(self.containers.iter().map(|c| (c.id.as_str(), c.name.as_str())).collect())
    }

    /// Gives each of our containers that joins networks but records none (a state file of
    /// a version before `Container::networks`) the networks of its endpoints, with their
    /// addresses, MACs, aliases and ports, so that a restart of it finds them again.
    /// Returns whether any container had to.
    pub fn adopt_endpoints(&mut self) -> bool {
        let adopted: Vec<(String, Vec<Attachment>)> = {
            let by_container = self.endpoints_by_container();
            self.containers
                .iter()
                .filter(|c| c.networks.is_empty())
                .filter_map(|c| {
                    let endpoints = by_container.get(c.id.as_str())?;
                    let networks = endpoints
                        .iter()
                        .map(|e| Attachment {
                            network_id: e.network_id.clone(),
                            ifname: e.ifname.clone(),
                            ip: e.ip,
                            ip6: e.ip6,
                            mac: Some(e.mac),
                            aliases: e.aliases.clone(),
                            publish: e.ports.clone(),
                        })
                        .collect();
                    Some((c.id.clone(), networks))
                })
                .collect()
        };
        let any = !adopted.is_empty();
        for (id, networks) in adopted {
            if let Some(container) = self.containers.get_mut(&id) {
                container.networks = networks;
            }
        }
        any
    }

    pub fn next_network_index(&self) -> u32 {
        self.networks.iter().map(|n| n.index).max().map_or(1, |i| i + 1)
    }
}

/// What firewall rules (`--container NAME`) and `network inspect` call an endpoint's owner:
/// our containers by their name, the others by themselves (`cni:<containerID>`).
pub struct OwnerNames<'a>(HashMap<&'a str, &'a str>);

impl OwnerNames<'_> {
    pub fn of(&self, owner: &Owner) -> String {
        match owner.container_id() {
            Some(id) => self.0.get(id).copied().unwrap_or(id).to_string(),
            None => owner.to_string(),
        }
    }
}

impl Keyed for Network {
    type Index = ();
    fn key(&self) -> &str {
        &self.id
    }
}

impl Keyed for Container {
    type Index = ();
    fn key(&self) -> &str {
        &self.id
    }
}

impl Keyed for Endpoint {
    type Index = EndpointIndex;
    fn key(&self) -> &str {
        &self.id
    }
}

/// What attaching asks of all endpoints at once, kept up to date as endpoints come and
/// go: per network, the addresses taken and the endpoints on each bridge; the host-side
/// veth names taken.
#[derive(Clone, Debug, Default)]
pub struct EndpointIndex {
    networks: HashMap<String, NetworkUse>,
    veths: std::collections::HashSet<String>,
}

#[derive(Clone, Debug, Default)]
struct NetworkUse {
    addresses: BTreeSet<Ipv4Addr>,
    bridges: BTreeMap<u8, usize>,
}

impl table::Index<Endpoint> for EndpointIndex {
    fn add(&mut self, endpoint: &Endpoint) {
        let network = self.networks.entry(endpoint.network_id.clone()).or_default();
        network.addresses.extend(endpoint.ip);
        *network.bridges.entry(endpoint.bridge).or_default() += 1;
        self.veths.insert(endpoint.host_veth.clone());
    }

    fn remove(&mut self, endpoint: &Endpoint) {
        if let Some(network) = self.networks.get_mut(&endpoint.network_id) {
            if let Some(ip) = endpoint.ip {
                network.addresses.remove(&ip);
            }
            if let Some(count) = network.bridges.get_mut(&endpoint.bridge) {
                *count -= 1;
                if *count == 0 {
                    network.bridges.remove(&endpoint.bridge);
                }
            }
            if network.addresses.is_empty() && network.bridges.is_empty() {
                self.networks.remove(&endpoint.network_id);
            }
        }
        self.veths.remove(&endpoint.host_veth);
    }
}

fn find<'a, T>(items: &'a [T], key: &str, names: impl Fn(&T) -> (&String, &String)) -> Option<&'a T> {
    if let Some(exact) = items.iter().find(|i| {
        let (name, id) = names(i);
        name == key || id == key
    }) {
        return Some(exact);
    }
    if key.len() < 3 {
        return None;
    }
    let mut prefixed = items.iter().filter(|i| names(i).1.starts_with(key));
    match (prefixed.next(), prefixed.next()) {
        (Some(one), None) => Some(one),
        _ => None,
    }
}

pub fn now() -> Timestamp {
    Timestamp::now()
}

/// A moment as the state holds it: RFC 3339 with nanoseconds, or the seconds since the
/// epoch that state files of earlier versions hold.
fn moment<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Stored {
        Seconds(i64),
        Rfc3339(Timestamp),
    }
    match Stored::deserialize(d)? {
        Stored::Seconds(secs) => Timestamp::from_second(secs).map_err(serde::de::Error::custom),
        Stored::Rfc3339(at) => Ok(at),
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    /// A network, a container on it with an endpoint publishing a port, a firewall rule.
    pub(super) fn sample() -> State {
        let network = Network {
            id: new_id(),
            name: "blue".into(),
            driver: "bridge".into(),
            index: 2,
            subnet: Some("10.9.0.0/24".parse().unwrap()),
            gateway: Some("10.9.0.1".parse().unwrap()),
            ip_range: Some("10.9.0.128/25".parse().unwrap()),
            ipv6: Some(AddressPlanV6::new("fd00:9::/64".parse().unwrap(), None, None).unwrap()),
            internal: true,
            options: [("icc".to_string(), "false".to_string())].into(),
            bridge_options: BridgeOptions {
                icc: false,
                mtu: Some(1400),
                gateway_mode_ipv4: GatewayMode::Nat,
                gateway_mode_ipv6: GatewayMode::Nat,
            },
            labels: [("team".to_string(), "net".to_string())].into(),
            bridge: "br-0123456789ab".into(),
            created: Timestamp::from_second(1).unwrap(),
            vni: None,
        };
        let container = Container {
            id: new_id(),
            name: "web".into(),
            hostname: "web".into(),
            network_mode: NetworkMode::Bridge,
            netns: "/run/netns/dp-x".into(),
            etc_dir: "/var/lib/dataplane/containers/x".into(),
            command: vec!["sleep".into(), "1".into()],
            env: vec!["MODE=test".into()],
            workdir: Some("/tmp".into()),
            networks: vec![],
            detached: true,
            auto_remove: false,
            status: Status::Running { pid: 42, start_time: 7 },
            created: "2026-11-30T03:26:04.123456789Z".parse().unwrap(),
            started_at: Some("2026-11-30T03:26:05.5Z".parse().unwrap()),
            finished_at: None,
            log: Some("/var/lib/dataplane/logs/x.log".into()),
        };
        let endpoint = Endpoint {
            id: new_id(),
            owner: Owner::Container { id: container.id.clone() },
            netns: container.netns.clone(),
            ifname: "eth0".into(),
            network_id: network.id.clone(),
            ip: Some("10.9.0.130".parse().unwrap()),
            ip6: Some("fd00:9::2".parse().unwrap()),
            mac: MacAddr([2, 0x42, 10, 9, 0, 130]),
            host_veth: "veth1234567".into(),
            aliases: vec!["api".into()],
            bridge: 1,
            ports: vec![crate::ports::PortMapping {
                host_ip: std::net::Ipv4Addr::UNSPECIFIED.into(),
                host_port: 8080,
                container_port: 80,
                proto: crate::ports::Proto::Tcp,
                any_family: true,
            }],
        };
        let container = Container {
            networks: vec![Attachment {
                network_id: network.id.clone(),
                ifname: endpoint.ifname.clone(),
                ip: None,
                ip6: Some("fd00:9::2".parse().unwrap()),
                mac: None,
                aliases: endpoint.aliases.clone(),
                publish: endpoint.ports.clone(),
            }],
            ..container
        };
        let mut firewall = crate::firewall::Rules::default();
        let rule = crate::firewall::RuleSpec {
            action: crate::firewall::Action::Deny,
            source: Some("192.0.2.0/24".parse().unwrap()),
            ports: Some("8000-8080".parse().unwrap()),
            proto: Some(crate::ports::Proto::Tcp),
            container: Some("web".into()),
        };
        firewall.add(rule).unwrap();
        let mut docker = DockerState::default();
        docker.networks.insert("d0c".repeat(21), network.id.clone());
        docker.endpoints.insert(
            "e9d".repeat(21),
            DockerEndpoint {
                network_id: network.id.clone(),
                ip: endpoint.ip.unwrap(),
                ip6: None,
                mac: endpoint.mac,
            },
        );
        State {
            networks: vec![network].into(),
            containers: vec![container].into(),
            endpoints: vec![endpoint].into(),
            firewall,
            docker,
            intents: Default::default(),
            predefined: Default::default(),
        }
    }

    #[test]
    fn state_round_trips_through_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = StateStore::new(dir.path());
        assert_eq!(store.load().unwrap(), None);
        let state = sample();
        store.write_whole(&state).unwrap();
        assert_eq!(StateStore::new(dir.path()).load().unwrap(), Some(state));
    }

    #[test]
    fn state_files_without_a_firewall_load_with_no_rules() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("state.json"), r#"{"networks": [], "containers": []}"#).unwrap();
        let state = StateStore::new(dir.path()).load().unwrap().unwrap();
        assert!(state.firewall.rules.is_empty());
    }

    #[test]
    fn earlier_state_files_keep_their_times_and_get_host_and_none_ids_once() {
        let dir = tempfile::tempdir().unwrap();
        let earlier = r#"{"networks": [], "containers": [{
            "id": "c1", "name": "old", "hostname": "old", "netns": "/run/netns/old", "etc_dir": "/tmp/old",
            "command": ["true"], "detached": true, "auto_remove": false,
            "status": {"state": "exited", "code": 0}, "created": 1795000000
        }]}"#;
        fs::write(dir.path().join("state.json"), earlier).unwrap();
        let state = StateStore::new(dir.path()).load().unwrap().unwrap();
        let old = state.containers.get("c1").unwrap();
        assert_eq!(
            old.created.to_string(),
            "2026-11-18T11:06:40Z",
            "seconds since the epoch, as written then"
        );
        assert_eq!((old.started_at, old.finished_at), (None, None));
        let again = StateStore::new(dir.path()).load().unwrap().unwrap();
        assert_eq!(again.predefined, state.predefined, "the IDs made on the first load were written");
        assert_ne!(state.predefined.host, state.predefined.none);
    }

    /// A state file as the daemon wrote it before endpoints were the state's own: two
    /// networks, a container on both publishing a port, a host-mode container.
    const BEFORE_ENDPOINTS: &str = r#"{
      "networks": [],
      "containers": [
        {
          "id": "c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1",
          "name": "web",
          "hostname": "web",
          "network_mode": {"mode": "bridge"},
          "netns": "/run/dataplane/netns/dp-c1c1c1c1c1c1",
          "etc_dir": "/var/lib/dataplane/containers/c1",
          "attachments": [
            {"network_id": "n1", "ip": "10.9.0.2", "mac": "02:42:0a:09:00:02", "host_veth": "veth0000001",
             "ifname": "eth0", "aliases": ["api"], "bridge": 1},
            {"network_id": "n2", "ip": "10.8.0.2", "mac": "02:42:0a:08:00:02", "host_veth": "veth0000002",
             "ifname": "eth1"}
          ],
          "ports": [{"host_ip": "0.0.0.0", "host_port": 8080, "container_port": 80, "proto": "tcp"}],
          "command": ["sleep", "infinity"],
          "detached": true,
          "auto_remove": false,
          "status": {"state": "running", "pid": 42, "start_time": 7},
          "created": 2
        },
        {
          "id": "c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2",
          "name": "tool",
          "hostname": "tool",
          "network_mode": {"mode": "host"},
          "netns": "/run/dataplane/netns/dp-host",
          "etc_dir": "/var/lib/dataplane/containers/c2",
          "attachments": [],
          "ports": [],
          "command": ["true"],
          "detached": false,
          "auto_remove": false,
          "status": {"state": "exited", "code": 0},
          "created": 3
        }
      ],
      "firewall": {"rules": [], "next_id": 1}
    }"#;

    #[test]
    fn state_files_from_before_endpoints_load_with_each_attachment_an_endpoint() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("state.json"), BEFORE_ENDPOINTS).unwrap();
        let mut store = StateStore::new(dir.path());
        let state = store.load().unwrap().unwrap();
        let (web, tool) = (&state.containers[0], &state.containers[1]);
        assert_eq!(
            (web.name.as_str(), tool.name.as_str()),
            ("web", "tool"),
            "the containers load as they were"
        );
        assert_eq!(state.endpoints.len(), 2, "one endpoint per attachment: {:?}", state.endpoints);
        let (eth0, eth1) = (&state.endpoints[0], &state.endpoints[1]);
        for endpoint in [eth0, eth1] {
            assert_eq!(endpoint.owner, Owner::Container { id: web.id.clone() }, "owned by the container");
            assert_eq!(endpoint.netns, web.netns, "in the container's namespace");
            assert_eq!(endpoint.id.len(), 64, "an endpoint id as Docker's: {}", endpoint.id);
        }
        assert_ne!(eth0.id, eth1.id, "each endpoint has an id of its own");
        assert_eq!(
            (eth0.ifname.as_str(), eth0.network_id.as_str(), eth0.ip, eth0.mac.to_string()),
            ("eth0", "n1", Some(Ipv4Addr::new(10, 9, 0, 2)), "02:42:0a:09:00:02".to_string()),
            "the first attachment's interface, network, address and MAC"
        );
        assert_eq!(
            (eth0.host_veth.as_str(), eth0.bridge, &eth0.aliases[..]),
            ("veth0000001", 1, &["api".to_string()][..])
        );
        assert_eq!(eth0.ports.len(), 1, "the ports were published on the first attachment");
        assert_eq!(eth0.ports[0].host_port, 8080);
        assert_eq!(
            (eth1.ifname.as_str(), eth1.bridge),
            ("eth1", 0),
            "fields older files lack take their defaults"
        );
        assert!(eth1.aliases.is_empty() && eth1.ports.is_empty(), "the second attachment published nothing");
        assert_eq!(state.endpoints_of(&tool.id).count(), 0, "a host-mode container has no endpoint");
        // Each container asks, for its next start, for the networks of its endpoints as
        // they are: the same interface, address, MAC, aliases and ports.
        let asked: Vec<_> =
            web.networks.iter().map(|a| (a.network_id.as_str(), a.ifname.as_str(), a.ip)).collect();
        assert_eq!(
            asked,
            [("n1", "eth0", eth0.ip), ("n2", "eth1", eth1.ip)],
            "the networks it asks for come from its endpoints"
        );
        assert_eq!((web.networks[0].mac, &web.networks[0].publish), (Some(eth0.mac), &eth0.ports));
        assert!(tool.networks.is_empty(), "a host-mode container asks for none");
        // Loaded once, the file is of today's shape and loads as it was: ids stay.
        assert!(!fs::read_to_string(dir.path().join("state.json")).unwrap().contains("attachments"));
        assert_eq!(StateStore::new(dir.path()).load().unwrap(), Some(state));
    }

    /// A network and an endpoint as every version before IPv6-only networks wrote them:
    /// the IPv4 subnet, gateway and address as plain fields.
    const BEFORE_IPV6_ONLY: &str = r#"{
      "networks": [{
        "id": "n1n1", "name": "blue", "driver": "bridge", "index": 2,
        "subnet": "10.9.0.0/24", "gateway": "10.9.0.1", "ip_range": null,
        "internal": false, "options": {}, "bridge_options": {"icc": true, "mtu": null},
        "labels": {}, "bridge": "br-n1n1", "created": 1
      }],
      "containers": [],
      "endpoints": [{
        "id": "e1e1", "owner": {"kind": "cni", "container_id": "k1"}, "netns": "/run/netns/k1",
        "ifname": "eth0", "network_id": "n1n1", "ip": "10.9.0.2", "mac": "02:42:0a:09:00:02",
        "host_veth": "veth0000001"
      }]
    }"#;

    #[test]
    fn state_files_from_before_ipv6_only_networks_load_with_their_ipv4_plan() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("state.json"), BEFORE_IPV6_ONLY).unwrap();
        let state = StateStore::new(dir.path()).load().unwrap().unwrap();
        let blue = state.network("blue").expect("the network loads");
        assert_eq!(
            blue.plan(),
            Some(AddressPlan {
                subnet: "10.9.0.0/24".parse().unwrap(),
                gateway: Ipv4Addr::new(10, 9, 0, 1),
                range: "10.9.0.0/24".parse().unwrap(),
            }),
            "the IPv4 subnet and gateway of the old fields"
        );
        assert_eq!(blue.ipv6, None, "an old network stays IPv4-only");
        assert_eq!(state.endpoints[0].ip, Some(Ipv4Addr::new(10, 9, 0, 2)), "the endpoint keeps its address");
        assert_eq!(state.used_addresses("n1n1"), &[Ipv4Addr::new(10, 9, 0, 2)].into(), "and holds it");
    }

    #[test]
    fn an_ipv6_only_network_and_its_endpoint_round_trip_without_ipv4_fields() {
        let mut state = sample();
        let id = state.networks[0].id.clone();
        let network = state.networks.get_mut(&id).unwrap();
        (network.subnet, network.gateway, network.ip_range) = (None, None, None);
        let endpoint = Endpoint { ip: None, ..state.endpoints[0].clone() };
        state.endpoints.replace(endpoint);
        state.docker = DockerState::default();
        let written = serde_json::to_string(&state).unwrap();
        assert!(!written.contains("\"subnet\":\"10."), "no IPv4 subnet is written: {written}");
        let dir = tempfile::tempdir().unwrap();
        let mut store = StateStore::new(dir.path());
        store.write_whole(&state).unwrap();
        let loaded = StateStore::new(dir.path()).load().unwrap().unwrap();
        assert_eq!(loaded.network_by_id(&id).unwrap().plan(), None, "no IPv4 plan");
        assert!(loaded.used_addresses(&id).is_empty(), "no IPv4 address is taken");
        assert_eq!(loaded, state);
    }

    #[test]
    fn owners_read_as_network_inspect_shows_them_and_keep_their_kind_in_the_state() {
        let owners = [
            (Owner::Container { id: "c1".into() }, "dataplane", r#"{"kind":"container","id":"c1"}"#),
            (
                Owner::Cni { container_id: "k8s1".into() },
                "cni:k8s1",
                r#"{"kind":"cni","container_id":"k8s1"}"#,
            ),
            (
                Owner::Docker { endpoint_id: "e1".into() },
                "docker:e1",
                r#"{"kind":"docker","endpoint_id":"e1"}"#,
            ),
        ];
        for (owner, shown, stored) in owners {
            assert_eq!(owner.to_string(), shown, "{owner:?} as network inspect shows it");
            assert_eq!(serde_json::to_string(&owner).unwrap(), stored, "{owner:?} in the state file");
            assert_eq!(serde_json::from_str::<Owner>(stored).unwrap(), owner, "{stored} read back");
        }
        assert_eq!(Owner::Container { id: "c1".into() }.container_id(), Some("c1"));
        assert_eq!(Owner::Cni { container_id: "k8s1".into() }.container_id(), None, "not one of ours");
    }

    #[test]
    fn owners_are_named_by_their_container_or_by_themselves() {
        let mut state = sample();
        let web = state.containers[0].clone();
        let names = state.owner_names();
        assert_eq!(names.of(&Owner::Container { id: web.id.clone() }), "web");
        assert_eq!(names.of(&Owner::Cni { container_id: "k8s1".into() }), "cni:k8s1");
        let mut other = state.endpoints[0].clone();
        other.owner = Owner::Cni { container_id: "k8s1".into() };
        state.endpoints.push(other);
        assert_eq!(state.endpoints_of(&web.id).count(), 1, "the CNI endpoint is not the container's");
        assert_eq!(state.endpoints_by_container()[web.id.as_str()].len(), 1);
        assert_eq!(state.endpoints_on(&state.networks[0].id).count(), 2, "both are on the network");
    }

    #[test]
    fn corrupt_state_is_reported_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("state.json"), "{not json").unwrap();
        let err = StateStore::new(dir.path()).load().unwrap_err();
        assert!(format!("{err:#}").contains("state.json"), "{err:#}");
    }

    #[test]
    fn used_addresses_come_from_the_endpoints() {
        let mut state = sample();
        let id = state.networks[0].id.clone();
        let first: Ipv4Addr = "10.9.0.130".parse().unwrap();
        assert_eq!(state.used_addresses(&id), &[first].into());
        assert!(state.used_addresses("other").is_empty());
        // Kept as endpoints come and go, with the bridges' occupancy and the veth names.
        let mut second = state.endpoints[0].clone();
        let second_ip = Ipv4Addr::new(10, 9, 0, 131);
        (second.id, second.ip, second.host_veth, second.bridge) =
            (new_id(), Some(second_ip), "veth7654321".into(), 0);
        state.endpoints.push(second.clone());
        assert_eq!(state.used_addresses(&id), &[first, second_ip].into());
        assert_eq!(state.bridge_occupancy(&id), [(0, 1), (1, 1)].into());
        assert!(state.veth_taken("veth7654321") && state.veth_taken("veth1234567"));
        state.endpoints.retain(|e| e.ip == second.ip);
        assert_eq!(state.used_addresses(&id), &[second_ip].into());
        assert_eq!(state.bridge_occupancy(&id), [(0, 1)].into());
        assert!(!state.veth_taken("veth1234567"), "a veth name is free again once its endpoint left");
        state.endpoints.retain(|_| false);
        assert!(state.used_addresses(&id).is_empty() && state.bridge_occupancy(&id).is_empty());
    }

    #[test]
    fn lookup_by_name_id_and_unique_prefix() {
        let state = sample();
        let id = state.networks[0].id.clone();
        assert_eq!(state.network("blue").unwrap().id, id);
        assert_eq!(state.network(&id[..12]).unwrap().id, id);
        assert!(state.network("nope").is_none());
        assert!(state.network("").is_none());
    }

    #[test]
    fn mac_parses_and_prints() {
        let mac: MacAddr = "02:42:AC:11:00:02".parse().unwrap();
        assert_eq!(mac.to_string(), "02:42:ac:11:00:02");
        assert!("02:42:ac:11:00".parse::<MacAddr>().is_err());
        assert!("01:00:5e:00:00:01".parse::<MacAddr>().is_err());
        assert!("zz:42:ac:11:00:02".parse::<MacAddr>().is_err());
    }

    #[test]
    fn bridge_options_parse_and_reject() {
        let raw = |k: &str, v: &str| [(k.to_string(), v.to_string())].into();
        assert!(!BridgeOptions::parse(&raw("icc", "false")).unwrap().icc);
        assert!(BridgeOptions::parse(&BTreeMap::new()).unwrap().icc);
        assert_eq!(BridgeOptions::parse(&raw("mtu", "1400")).unwrap().mtu, Some(1400));
        assert!(BridgeOptions::parse(&raw("mtu", "12")).is_err());
        assert!(BridgeOptions::parse(&raw("icc", "maybe")).is_err());
        assert!(BridgeOptions::parse(&raw("color", "red")).unwrap_err().contains("supported"));
        assert_eq!(BridgeOptions::parse(&BTreeMap::new()).unwrap().gateway_mode_ipv6, GatewayMode::Nat);
        let routed = BridgeOptions::parse(&raw(GATEWAY_MODE_IPV6, "routed")).unwrap();
        assert_eq!(routed.gateway_mode_ipv6, GatewayMode::Routed);
        assert_eq!(
            BridgeOptions::parse(&raw("gateway_mode_ipv6", "nat")).unwrap().gateway_mode_ipv6,
            GatewayMode::Nat
        );
        assert_eq!(
            BridgeOptions::parse(&raw(GATEWAY_MODE_IPV6, "nat-unprotected")).unwrap().gateway_mode_ipv6,
            GatewayMode::NatUnprotected
        );
        let refused = BridgeOptions::parse(&raw(GATEWAY_MODE_IPV6, "open")).unwrap_err();
        assert!(refused.contains("=open: expected nat, routed, nat-unprotected or isolated"), "{refused}");
        // IPv4's mode, apart from IPv6's, under either name.
        let routed4 = BridgeOptions::parse(&raw(GATEWAY_MODE_IPV4, "routed")).unwrap();
        assert_eq!(
            (routed4.gateway_mode_ipv4, routed4.gateway_mode_ipv6),
            (GatewayMode::Routed, GatewayMode::Nat)
        );
        assert_eq!(
            BridgeOptions::parse(&raw("gateway_mode_ipv4", "routed")).unwrap().gateway_mode_ipv4,
            GatewayMode::Routed
        );
        assert_eq!(BridgeOptions::parse(&BTreeMap::new()).unwrap().gateway_mode_ipv4, GatewayMode::Nat);
        // Docker 28.2's isolated mode, per family, under either name.
        let isolated = BridgeOptions::parse(&raw("gateway_mode_ipv4", "isolated")).unwrap();
        assert_eq!(
            (isolated.gateway_mode_ipv4, isolated.gateway_mode_ipv6),
            (GatewayMode::Isolated, GatewayMode::Nat)
        );
        let isolated6 = BridgeOptions::parse(&raw(GATEWAY_MODE_IPV6, "isolated")).unwrap();
        assert_eq!(isolated6.gateway_mode_ipv6.name(), "isolated", "Docker's name, for inspect");
        let saved = serde_json::to_string(&isolated6).unwrap();
        assert!(saved.contains(r#""gateway_mode_ipv6":"isolated""#), "{saved}");
        assert_eq!(serde_json::from_str::<BridgeOptions>(&saved).unwrap(), isolated6);
        assert_eq!((isolated.isolated(false), isolated.isolated(true)), (true, false));
        assert_eq!((isolated.isolated_family(), isolated6.isolated_family()), (Some("ipv4"), Some("ipv6")));
        assert_eq!(routed4.isolated_family(), None, "what the network checks against --internal");
        let unprotected = BridgeOptions::parse(&raw("gateway_mode_ipv4", "nat-unprotected")).unwrap();
        assert_eq!(unprotected.gateway_mode_ipv4.name(), "nat-unprotected", "Docker's name, for inspect");
        let saved = serde_json::to_string(&unprotected).unwrap();
        assert!(saved.contains(r#""gateway_mode_ipv4":"nat-unprotected""#), "{saved}");
        assert_eq!(serde_json::from_str::<BridgeOptions>(&saved).unwrap(), unprotected);
    }
}
