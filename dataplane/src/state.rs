//! The daemon's persisted state: networks and containers, written atomically to one
//! JSON file after every change, so that a restart restores everything. It holds no
//! handle to the system; restoring the system from it is the daemon's job.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt, fs,
    io::Write,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    str::FromStr,
};

use anyhow::Context;
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::ipam::AddressPlan;

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

/// Options of a bridge network (`--opt`), parsed; Docker's long names are accepted too.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BridgeOptions {
    /// Inter-container communication inside the network (Docker's default: enabled).
    pub icc: bool,
    pub mtu: Option<u32>,
}

impl BridgeOptions {
    pub fn parse(raw: &BTreeMap<String, String>) -> Result<Self, String> {
        let mut options = Self { icc: true, mtu: None };
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
                _ => {
                    return Err(format!(
                        "--opt {key}: unknown option for the bridge driver; supported: icc, mtu"
                    ));
                }
            }
        }
        Ok(options)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    pub id: String,
    pub name: String,
    pub driver: String,
    /// The network's number in the BPF maps; never reused while the network exists.
    pub index: u32,
    pub subnet: Ipv4Net,
    pub gateway: Ipv4Addr,
    pub ip_range: Option<Ipv4Net>,
    pub internal: bool,
    /// As given by the user, shown by inspect.
    pub options: BTreeMap<String, String>,
    pub bridge_options: BridgeOptions,
    pub labels: BTreeMap<String, String>,
    /// The kernel bridge that carries the slow path (ARP, broadcast, host traffic).
    pub bridge: String,
    pub created: u64,
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
            subnet: format!("10.{third}.0.0/24").parse().unwrap(),
            gateway: Ipv4Addr::new(10, third, 0, 1),
            ip_range: None,
            internal: false,
            options: Default::default(),
            bridge_options: BridgeOptions { icc: true, mtu: None },
            labels: Default::default(),
            bridge: format!("br-{name}"),
            created: 0,
        }
    }

    pub fn plan(&self) -> AddressPlan {
        AddressPlan {
            subnet: self.subnet,
            gateway: self.gateway,
            range: self.ip_range.unwrap_or(self.subnet),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    pub network_id: String,
    pub ip: Ipv4Addr,
    pub mac: MacAddr,
    /// Host side of the veth pair (`veth` + 7 hex digits).
    pub host_veth: String,
    /// Name of the interface inside the container (`eth0`).
    pub ifname: String,
    /// More names the container answers to on this network (`--network-alias`).
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Which of the network's bridges holds the host-side veth: 0 is the network's own,
    /// 1 and up the extra bridges a network gets past the ports one bridge can hold.
    #[serde(default)]
    pub bridge: u8,
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
}

/// How a container is networked (Docker's `--network` modes).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "lowercase")]
pub enum NetworkMode {
    /// Its own namespace, attached to networks (`attachments`).
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
    pub attachments: Vec<Attachment>,
    /// Published ports, with the host ports actually reserved.
    #[serde(default)]
    pub ports: Vec<crate::ports::PortMapping>,
    pub command: Vec<String>,
    pub detached: bool,
    pub auto_remove: bool,
    pub status: Status,
    pub created: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub networks: Vec<Network>,
    pub containers: Vec<Container>,
    /// The firewall for published ports (absent from state files of earlier versions).
    #[serde(default)]
    pub firewall: crate::firewall::Rules,
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

    pub fn container_mut(&mut self, id: &str) -> Option<&mut Container> {
        self.containers.iter_mut().find(|c| c.id == id)
    }

    /// Addresses in use on a network: the allocations IPAM must avoid.
    pub fn used_addresses(&self, network_id: &str) -> BTreeSet<Ipv4Addr> {
        self.attachments_of(network_id).map(|(_, a)| a.ip).collect()
    }

    pub fn attachments_of<'a>(
        &'a self,
        network_id: &'a str,
    ) -> impl Iterator<Item = (&'a Container, &'a Attachment)> + 'a {
        self.containers.iter().flat_map(move |c| {
            c.attachments.iter().filter(move |a| a.network_id == network_id).map(move |a| (c, a))
        })
    }

    pub fn next_network_index(&self) -> u32 {
        self.networks.iter().map(|n| n.index).max().map_or(1, |i| i + 1)
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

/// Where the state lives on disk; writes go to a temporary file renamed over the old one
/// so that a crash never leaves half a state behind.
pub struct StateStore {
    path: PathBuf,
}

impl StateStore {
    pub fn new(dir: &Path) -> Self {
        Self { path: dir.join("state.json") }
    }

    pub fn load(&self) -> anyhow::Result<Option<State>> {
        match fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .with_context(|| format!("state file {} is corrupt", self.path.display()))
                .map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", self.path.display())),
        }
    }

    pub fn save(&self, state: &State) -> anyhow::Result<()> {
        let tmp = self.path.with_extension("json.tmp");
        let write = || -> std::io::Result<()> {
            let mut file = fs::File::create(&tmp)?;
            file.write_all(&serde_json::to_vec_pretty(state)?)?;
            file.sync_all()?;
            fs::rename(&tmp, &self.path)
        };
        write().with_context(|| format!("writing {}", self.path.display()))
    }
}

pub fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> State {
        let network = Network {
            id: new_id(),
            name: "blue".into(),
            driver: "bridge".into(),
            index: 2,
            subnet: "10.9.0.0/24".parse().unwrap(),
            gateway: "10.9.0.1".parse().unwrap(),
            ip_range: Some("10.9.0.128/25".parse().unwrap()),
            internal: true,
            options: [("icc".to_string(), "false".to_string())].into(),
            bridge_options: BridgeOptions { icc: false, mtu: Some(1400) },
            labels: [("team".to_string(), "net".to_string())].into(),
            bridge: "br-0123456789ab".into(),
            created: 1,
        };
        let container = Container {
            id: new_id(),
            name: "web".into(),
            hostname: "web".into(),
            network_mode: NetworkMode::Bridge,
            netns: "/run/netns/dp-x".into(),
            etc_dir: "/var/lib/dataplane/containers/x".into(),
            attachments: vec![Attachment {
                network_id: network.id.clone(),
                ip: "10.9.0.130".parse().unwrap(),
                mac: MacAddr([2, 0x42, 10, 9, 0, 130]),
                host_veth: "veth1234567".into(),
                ifname: "eth0".into(),
                aliases: vec!["api".into()],
                bridge: 1,
            }],
            ports: vec![crate::ports::PortMapping {
                host_ip: std::net::Ipv4Addr::UNSPECIFIED,
                host_port: 8080,
                container_port: 80,
                proto: crate::ports::Proto::Tcp,
            }],
            command: vec!["sleep".into(), "1".into()],
            detached: true,
            auto_remove: false,
            status: Status::Running { pid: 42, start_time: 7 },
            created: 2,
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
        State { networks: vec![network], containers: vec![container], firewall }
    }

    #[test]
    fn state_round_trips_through_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path());
        assert_eq!(store.load().unwrap(), None);
        let state = sample();
        store.save(&state).unwrap();
        assert_eq!(store.load().unwrap(), Some(state));
    }

    #[test]
    fn state_files_without_a_firewall_load_with_no_rules() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("state.json"), r#"{"networks": [], "containers": []}"#).unwrap();
        let state = StateStore::new(dir.path()).load().unwrap().unwrap();
        assert!(state.firewall.rules.is_empty());
    }

    #[test]
    fn corrupt_state_is_reported_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("state.json"), "{not json").unwrap();
        let err = StateStore::new(dir.path()).load().unwrap_err();
        assert!(format!("{err:#}").contains("state.json"), "{err:#}");
    }

    #[test]
    fn used_addresses_come_from_the_containers() {
        let state = sample();
        let id = state.networks[0].id.clone();
        assert_eq!(state.used_addresses(&id), ["10.9.0.130".parse().unwrap()].into());
        assert!(state.used_addresses("other").is_empty());
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
    }
}
