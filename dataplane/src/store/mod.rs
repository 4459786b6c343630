//! Where the daemon keeps what it knows: the local state file (`state::StateStore`, the
//! default, which owns everything host-local) and, for hosts that share networks, etcd
//! (`etcd`), which holds only what every host must agree on:
//! - overlay networks: `/dataplane/networks/<name>` → `SharedNetwork`, with its VXLAN
//!   network identifier, held at `/dataplane/vnis/<vni>` → the network's id, made only if
//!   absent (compare-and-swap) with the network;
//! - their address leases, IPv4 and IPv6 alike: `/dataplane/leases/<network id>/<address>`
//!   → the host, made only if absent (compare-and-swap) and bound to the host's etcd lease;
//! - endpoint records: `/dataplane/endpoints/<network id>/<endpoint id>` →
//!   `EndpointRecord` (addresses, MAC, host, container name, aliases: the names the
//!   network's DNS answers on every host), bound to the host's lease too.
//!
//! A host that dies stops renewing its lease; after its TTL etcd deletes its leases and
//! records, and the others' watches see them go. This module never touches the system:
//! the daemon applies what it reads here.

pub mod etcd;

use std::{
    collections::BTreeMap,
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::PathBuf,
    str::FromStr,
};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::{
    ipam::AddressPlanV6,
    state::{BridgeOptions, MacAddr, Network},
};

/// The driver of networks shared through the store.
pub const OVERLAY_DRIVER: &str = "overlay";

/// The prefix of every key the daemon writes in etcd.
pub const PREFIX: &str = "/dataplane/";
const NETWORKS: &str = "/dataplane/networks/";
const LEASES: &str = "/dataplane/leases/";
const ENDPOINTS: &str = "/dataplane/endpoints/";
const VNIS: &str = "/dataplane/vnis/";

/// The first VNI given out: those below are left to what else the underlay runs.
pub const FIRST_VNI: u32 = 4096;
/// The last one: VNIs are 24 bits.
pub const LAST_VNI: u32 = (1 << 24) - 1;

/// `--store etcd://ADDR:PORT[,ADDR:PORT...]`: the etcd members to talk to, in plain
/// gRPC (`etcd://`, or `http://` as etcdctl writes it) or over TLS (`etcds://`, or
/// `https://`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreAddress {
    pub members: Vec<SocketAddr>,
    /// The scheme as given, which says whether the members speak TLS.
    pub scheme: &'static str,
}

/// The schemes `--store` takes, and whether each is TLS.
const SCHEMES: [(&str, bool); 4] =
    [("etcd://", false), ("http://", false), ("etcds://", true), ("https://", true)];

impl StoreAddress {
    /// Whether the members are reached over TLS.
    pub fn tls(&self) -> bool {
        SCHEMES.iter().any(|(scheme, tls)| *scheme == self.scheme && *tls)
    }

    /// The members as the etcd client takes them.
    pub fn urls(&self) -> Vec<String> {
        let scheme = if self.tls() { "https://" } else { "http://" };
        self.members.iter().map(|m| format!("{scheme}{m}")).collect()
    }
}

impl FromStr for StoreAddress {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let Some((scheme, list)) =
            SCHEMES.iter().find_map(|(scheme, _)| Some((*scheme, s.strip_prefix(scheme)?)))
        else {
            return Err(format!(
                "--store {s}: expected etcd://ADDR:PORT[,ADDR:PORT...], or etcds:// for TLS (etcd is the only store)"
            ));
        };
        let members = list
            .split(',')
            .map(|member| {
                member.parse::<SocketAddr>().map_err(|_| {
                    format!("--store {s}: {member:?} is not ADDR:PORT; give each member as 10.0.0.10:2379")
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { members, scheme })
    }
}

impl fmt::Display for StoreAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let members: Vec<String> = self.members.iter().map(ToString::to_string).collect();
        write!(f, "{}{}", self.scheme, members.join(","))
    }
}

/// The environment variable the store user's password is read from, when no
/// `--store-password-file` names a file: never a flag, so that it shows in no process list.
pub const PASSWORD_ENV: &str = "DATAPLANE_STORE_PASSWORD";

/// How the daemon checks the store and proves itself to it (`--store-cacert`,
/// `--store-cert`, `--store-key`, `--store-user`, `--store-password-file`); files are
/// read when the daemon connects.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoreAccess {
    pub cacert: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub user: Option<String>,
    pub password_file: Option<PathBuf>,
}

impl<'de> Deserialize<'de> for StoreAddress {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// An overlay network as every host knows it; each host keeps its own `Network` for it
/// (its map index and bridge are its own).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedNetwork {
    pub id: String,
    pub name: String,
    /// The IPv4 subnet and gateway; none on an IPv6-only network. Left out of the record
    /// when `None`, so that the first version's records read back as the same bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<Ipv4Net>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<Ipv4Addr>,
    pub ip_range: Option<Ipv4Net>,
    /// The IPv6 subnet, gateway and range of a dual-stack or IPv6-only network (`--ipv6`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<AddressPlanV6>,
    pub internal: bool,
    pub options: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    pub created: jiff::Timestamp,
    /// Its VXLAN network identifier; records of the first version of the store have none
    /// until a daemon gives them one (`EtcdStore::give_vni`). Left out of the record when
    /// `None`, so that such a record reads back as the same bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vni: Option<u32>,
}

impl SharedNetwork {
    /// What every host shares of an overlay network: its IPv4 plan, its IPv6 one, or both.
    pub fn of(net: &Network) -> Self {
        Self {
            id: net.id.clone(),
            name: net.name.clone(),
            subnet: net.subnet,
            gateway: net.gateway,
            ip_range: net.ip_range,
            ipv6: net.ipv6,
            internal: net.internal,
            options: net.options.clone(),
            labels: net.labels.clone(),
            created: net.created,
            vni: None,
        }
    }

    /// This host's network for it, numbered `index` in its maps.
    pub fn local(&self, index: u32) -> Result<Network, String> {
        Ok(Network {
            id: self.id.clone(),
            name: self.name.clone(),
            driver: OVERLAY_DRIVER.into(),
            index,
            subnet: self.subnet,
            gateway: self.gateway,
            ip_range: self.ip_range,
            ipv6: self.ipv6,
            internal: self.internal,
            options: self.options.clone(),
            bridge_options: BridgeOptions::parse(&self.options)?,
            labels: self.labels.clone(),
            bridge: format!("br-{}", &self.id[..12]),
            created: self.created,
            vni: self.vni,
        })
    }
}

/// An endpoint of an overlay network as the other hosts see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointRecord {
    pub network_id: String,
    pub endpoint_id: String,
    /// Its IPv4 address; none on an IPv6-only network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<Ipv4Addr>,
    /// Its IPv6 address, on a network with IPv6 (absent from the first version's records).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip6: Option<Ipv6Addr>,
    pub mac: MacAddr,
    /// The host's id (`Host::id`).
    pub host: String,
    /// Where the host is reached on the underlay (`--advertise-address`), if it said.
    pub host_address: Option<IpAddr>,
    /// The container's name, its first DNS name.
    pub name: String,
    pub aliases: Vec<String>,
}

impl EndpointRecord {
    /// Its addresses: IPv4, then IPv6, those it has.
    pub fn addresses(&self) -> impl Iterator<Item = IpAddr> + use<> {
        self.ip.map(IpAddr::V4).into_iter().chain(self.ip6.map(IpAddr::V6))
    }
}

/// Who this daemon is among the hosts.
#[derive(Clone, Debug)]
pub struct Host {
    /// The first 12 digits of its host id (kept in its state dir).
    pub id: String,
    pub address: Option<IpAddr>,
}

fn network_key(name: &str) -> String {
    format!("{NETWORKS}{name}")
}

fn vni_key(vni: u32) -> String {
    format!("{VNIS}{vni}")
}

/// The lowest VNI from `FIRST_VNI` on that `taken` does not hold.
fn free_vni(taken: &std::collections::BTreeSet<u32>) -> Option<u32> {
    (FIRST_VNI..=LAST_VNI).find(|vni| !taken.contains(vni))
}

fn lease_key(network_id: &str, ip: impl Into<IpAddr>) -> String {
    let ip: IpAddr = ip.into();
    format!("{LEASES}{network_id}/{ip}")
}

fn leases_of(network_id: &str) -> String {
    format!("{LEASES}{network_id}/")
}

fn endpoint_key(network_id: &str, endpoint_id: &str) -> String {
    format!("{ENDPOINTS}{network_id}/{endpoint_id}")
}

fn endpoints_of(network_id: &str) -> String {
    format!("{ENDPOINTS}{network_id}/")
}

/// What the watch has seen of the shared keys: networks and endpoint records, by key.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Mirror {
    pub networks: BTreeMap<String, SharedNetwork>,
    pub endpoints: BTreeMap<String, EndpointRecord>,
}

impl Mirror {
    /// Takes in a key's new value; a value that does not parse is logged and left out.
    pub fn put(&mut self, key: &str, value: &[u8]) {
        if key.starts_with(NETWORKS) {
            match serde_json::from_slice(value) {
                Ok(net) => _ = self.networks.insert(key.to_string(), net),
                Err(e) => log::warn!("store: ignoring {key}: {e}"),
            }
        } else if key.starts_with(ENDPOINTS) {
            match serde_json::from_slice(value) {
                Ok(record) => _ = self.endpoints.insert(key.to_string(), record),
                Err(e) => log::warn!("store: ignoring {key}: {e}"),
            }
        }
    }

    pub fn delete(&mut self, key: &str) {
        self.networks.remove(key);
        self.endpoints.remove(key);
    }

    /// The endpoint records of other hosts.
    pub fn remote_endpoints<'a>(&'a self, host: &'a str) -> impl Iterator<Item = &'a EndpointRecord> + 'a {
        self.endpoints.values().filter(move |r| r.host != host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_addresses_parse_members_and_name_the_fix() {
        let address: StoreAddress = "etcd://10.0.0.10:2379,10.0.0.11:2379".parse().unwrap();
        assert_eq!(address.members.len(), 2);
        assert_eq!(address.to_string(), "etcd://10.0.0.10:2379,10.0.0.11:2379", "shown as given");
        let err = "consul://10.0.0.10:8500".parse::<StoreAddress>().unwrap_err();
        assert!(err.contains("etcd://ADDR:PORT"), "{err}");
        let err = "etcd://10.0.0.10".parse::<StoreAddress>().unwrap_err();
        assert!(err.contains("\"10.0.0.10\" is not ADDR:PORT"), "{err}");
        assert!(!address.tls() && address.urls()[0] == "http://10.0.0.10:2379");
        for tls in ["etcds://10.0.0.10:2379", "https://10.0.0.10:2379"] {
            let address: StoreAddress = tls.parse().unwrap();
            assert!(address.tls(), "{tls} is TLS");
            assert_eq!(address.urls(), ["https://10.0.0.10:2379"]);
            assert_eq!(address.to_string(), tls, "shown as given");
        }
    }

    #[test]
    fn vnis_are_the_lowest_free_ones_from_the_first() {
        let taken = std::collections::BTreeSet::from([FIRST_VNI, FIRST_VNI + 2]);
        assert_eq!(free_vni(&taken), Some(FIRST_VNI + 1));
        assert_eq!(free_vni(&Default::default()), Some(FIRST_VNI));
        assert_eq!(vni_key(4096), "/dataplane/vnis/4096");
    }

    #[test]
    fn the_mirror_keeps_networks_and_endpoints_and_tells_remote_ones() {
        let net = Network::sample("prod", 9);
        let shared = SharedNetwork::of(&net);
        let mut mirror = Mirror::default();
        mirror.put(&network_key("prod"), &serde_json::to_vec(&shared).unwrap());
        let record = |host: &str, id: &str| EndpointRecord {
            network_id: net.id.clone(),
            endpoint_id: id.into(),
            ip: Some(Ipv4Addr::new(10, 9, 0, 2)),
            ip6: None,
            mac: MacAddr([2, 0x42, 10, 9, 0, 2]),
            host: host.into(),
            host_address: None,
            name: "api".into(),
            aliases: vec![],
        };
        for (host, id) in [("a", "e1"), ("b", "e2")] {
            mirror.put(&endpoint_key(&net.id, id), &serde_json::to_vec(&record(host, id)).unwrap());
        }
        mirror.put(&lease_key(&net.id, Ipv4Addr::new(10, 9, 0, 2)), b"a");
        mirror.put(&endpoint_key(&net.id, "bad"), b"not json");
        assert_eq!(mirror.networks.len(), 1, "the network is mirrored");
        assert_eq!(mirror.endpoints.len(), 2, "leases and unreadable records are not endpoints");
        let remote: Vec<_> = mirror.remote_endpoints("a").map(|r| r.endpoint_id.as_str()).collect();
        assert_eq!(remote, ["e2"], "host a's own endpoint is not remote to it");
        mirror.delete(&endpoint_key(&net.id, "e2"));
        assert_eq!(mirror.remote_endpoints("a").count(), 0, "a deleted record goes");
        let legacy = serde_json::to_vec(&shared).unwrap();
        assert!(
            !String::from_utf8_lossy(&legacy).contains("vni"),
            "no VNI, no field: the first version's record"
        );
        let read_back: SharedNetwork = serde_json::from_slice(&legacy).unwrap();
        assert_eq!(
            serde_json::to_vec(&read_back).unwrap(),
            legacy,
            "a record without a VNI reads back as the same bytes, for the compare-and-swap that gives it one"
        );
        let local = shared.local(7).unwrap();
        assert_eq!((local.driver.as_str(), local.index), (OVERLAY_DRIVER, 7));
        assert_eq!(local.bridge, format!("br-{}", &net.id[..12]), "the same bridge name on every host");
    }

    #[test]
    fn ipv6_overlays_share_their_plan_and_records_carry_either_family() {
        let plan = crate::ipam::AddressPlanV6::new("fd00:200::/64".parse().unwrap(), None, None).unwrap();
        let v6only = Network { subnet: None, gateway: None, ipv6: Some(plan), ..Network::sample("six", 9) };
        let shared = SharedNetwork::of(&v6only);
        let bytes = serde_json::to_vec(&shared).unwrap();
        let fields: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert!(fields.get("subnet").is_none() && fields.get("gateway").is_none(), "no IPv4, no IPv4 fields");
        assert!(fields["ipv6"].get("subnet").is_some(), "the IPv6 plan is shared: {fields}");
        let read_back: SharedNetwork = serde_json::from_slice(&bytes).unwrap();
        let local = read_back.local(4).unwrap();
        assert_eq!((local.plan(), local.ipv6), (None, Some(plan)), "another host makes it IPv6-only too");
        let first_version = br#"{"network_id":"n","endpoint_id":"e","ip":"10.9.0.2","mac":"02:42:0a:09:00:02","host":"a","host_address":null,"name":"api","aliases":[]}"#;
        let record: EndpointRecord = serde_json::from_slice(first_version).unwrap();
        assert_eq!(
            (record.ip, record.ip6),
            (Some(Ipv4Addr::new(10, 9, 0, 2)), None),
            "an IPv4 record reads as one"
        );
        let six = EndpointRecord { ip: None, ip6: Some("fd00:200::2".parse().unwrap()), ..record };
        assert_eq!(six.addresses().collect::<Vec<_>>(), ["fd00:200::2".parse::<IpAddr>().unwrap()]);
        assert_eq!(lease_key("n", six.ip6.unwrap()), "/dataplane/leases/n/fd00:200::2");
    }
}
