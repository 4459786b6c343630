//! Docker's network plugin protocol, the wire side: the requests libnetwork's remote
//! network and IPAM drivers send (JSON in Go's field names, with `null` for empty lists
//! and maps) and what they carry, parsed into our types at the edge: the network's
//! subnet, gateway and options, an endpoint's address and MAC, `-p`'s port bindings, and
//! the pools and addresses asked of our IPAM. It holds no state and never talks to the
//! daemon's core; `daemon::docker` serves it.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use crate::{
    api::Ipv6Spec,
    ports::{PortMapping, Proto},
    state::{GATEWAY_MODE_IPV4, GATEWAY_MODE_IPV6, MacAddr},
};

/// Where the daemon serves the plugin unless told otherwise: Docker finds a plugin named
/// `dataplane` there (`docker network create -d dataplane`).
pub const DEFAULT_PLUGIN_SOCKET: &str = "/run/docker/plugins/dataplane.sock";

/// The content type of every answer (Docker's plugin API, version 1.2).
pub const CONTENT_TYPE: &str = "application/vnd.docker.plugins.v1.2+json";

/// The driver options `-o` passes through (`com.docker.network.generic`): Docker's bridge
/// driver's names for what our bridge networks do.
const ICC: &str = "com.docker.network.bridge.enable_icc";
const MTU: &str = "com.docker.network.driver.mtu";
/// `-o internal=true`, as `--internal` (which Docker sends as `INTERNAL`).
const INTERNAL_OPTION: &str = "internal";
const SUPPORTED_OPTIONS: &str = "com.docker.network.bridge.enable_icc, com.docker.network.driver.mtu, \
     com.docker.network.bridge.gateway_mode_ipv4, com.docker.network.bridge.gateway_mode_ipv6, internal";

/// The top-level keys of CreateNetwork's options.
const GENERIC: &str = "com.docker.network.generic";
const INTERNAL: &str = "com.docker.network.internal";
const ENABLE_IPV6: &str = "com.docker.network.enable_ipv6";

/// CreateEndpoint's and ProgramExternalConnectivity's `-p` bindings.
const PORTMAP: &str = "com.docker.network.portmap";

/// Go encodes an empty slice or map as `null`: the type's default here.
fn nullable<'de, D: Deserializer<'de>, T: Default + Deserialize<'de>>(d: D) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// One IPAM pool of a network, as Docker's IPAM handed it out.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct IpamData {
    #[serde(default, deserialize_with = "nullable")]
    pub pool: String,
    #[serde(default, deserialize_with = "nullable")]
    pub gateway: String,
}

#[derive(Clone, Debug, Deserialize)]
pub struct CreateNetwork {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "Options", default, deserialize_with = "nullable")]
    pub options: Map<String, Value>,
    #[serde(rename = "IPv4Data", default, deserialize_with = "nullable")]
    pub ipv4_data: Vec<IpamData>,
    #[serde(rename = "IPv6Data", default, deserialize_with = "nullable")]
    pub ipv6_data: Vec<IpamData>,
}

/// A request that names a network only (DeleteNetwork).
#[derive(Clone, Debug, Deserialize)]
pub struct NetworkRef {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
}

/// A request that names an endpoint (DeleteEndpoint, Leave, EndpointOperInfo,
/// RevokeExternalConnectivity); the others add to it.
#[derive(Clone, Debug, Deserialize)]
pub struct EndpointRef {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct EndpointInterface {
    #[serde(default, deserialize_with = "nullable", skip_serializing_if = "String::is_empty")]
    pub address: String,
    #[serde(
        rename = "AddressIPv6",
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub address_ipv6: String,
    #[serde(default, deserialize_with = "nullable", skip_serializing_if = "String::is_empty")]
    pub mac_address: String,
}

#[derive(Clone, Debug, Deserialize)]
pub struct CreateEndpoint {
    #[serde(flatten)]
    pub endpoint: EndpointRef,
    #[serde(rename = "Interface", default)]
    pub interface: Option<EndpointInterface>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Join {
    #[serde(flatten)]
    pub endpoint: EndpointRef,
    #[serde(rename = "SandboxKey")]
    pub sandbox_key: String,
}

#[derive(Clone, Debug, Deserialize)]
pub struct ProgramExternalConnectivity {
    #[serde(flatten)]
    pub endpoint: EndpointRef,
    #[serde(rename = "Options", default, deserialize_with = "nullable")]
    pub options: Map<String, Value>,
}

/// IpamDriver.RequestPool: a subnet (`--subnet`, or any free one) and the range to give
/// addresses from (`--ip-range`).
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RequestPool {
    #[serde(default, deserialize_with = "nullable")]
    pub pool: String,
    #[serde(default, deserialize_with = "nullable")]
    pub sub_pool: String,
    #[serde(rename = "V6", default)]
    pub v6: bool,
}

/// IpamDriver.RequestAddress: an address of a pool (`--ip`, `--gateway`, or any free one).
#[derive(Clone, Debug, Deserialize)]
pub struct RequestAddress {
    #[serde(rename = "PoolID")]
    pub pool_id: String,
    #[serde(rename = "Address", default, deserialize_with = "nullable")]
    pub address: String,
    #[serde(rename = "Options", default, deserialize_with = "nullable")]
    pub options: BTreeMap<String, String>,
}

/// IpamDriver.ReleaseAddress and ReleasePool (`Address` empty for the latter).
#[derive(Clone, Debug, Deserialize)]
pub struct Release {
    #[serde(rename = "PoolID")]
    pub pool_id: String,
    #[serde(rename = "Address", default, deserialize_with = "nullable")]
    pub address: String,
}

/// RequestAddress's option that asks for the network's gateway.
const ADDRESS_TYPE: &str = "RequestAddressType";
const GATEWAY_ADDRESS: &str = "com.docker.network.gateway";

impl RequestPool {
    /// The subnet asked for, if any, and the range (`--ip-range`), in the family Docker asks
    /// for (`V6` with `--ipv6`).
    pub fn parse(&self) -> Result<(Option<IpNet>, Option<IpNet>), String> {
        let net = |s: &str, flag: &str| -> Result<Option<IpNet>, String> {
            if s.is_empty() {
                return Ok(None);
            }
            let parsed = if self.v6 {
                s.parse::<Ipv6Net>().map(IpNet::V6).map_err(|_| {
                    format!("{flag} {s:?} is not an IPv6 subnet; give an IPv6 prefix such as fd00:1::/64")
                })
            } else {
                s.parse::<Ipv4Net>()
                    .map(IpNet::V4)
                    .map_err(|_| format!("{flag} {s:?} is not an IPv4 subnet; give A.B.C.D/N"))
            };
            parsed.map(Some)
        };
        Ok((net(&self.pool, "--subnet")?, net(&self.sub_pool, "--ip-range")?))
    }
}

impl RequestAddress {
    /// Whether Docker asks for the network's gateway rather than an endpoint's address.
    pub fn for_gateway(&self) -> bool {
        self.options.get(ADDRESS_TYPE).is_some_and(|t| t == GATEWAY_ADDRESS)
    }

    /// The address asked for (`--ip`, `--ip6`, `--gateway`), if any.
    pub fn wanted(&self) -> Result<Option<IpAddr>, String> {
        parse_address(&self.address)
    }
}

impl Release {
    pub fn address(&self) -> Result<Option<IpAddr>, String> {
        parse_address(&self.address)
    }
}

/// An address as Docker sends it: bare or with a prefix length; empty for none.
fn parse_address(address: &str) -> Result<Option<IpAddr>, String> {
    if address.is_empty() {
        return Ok(None);
    }
    address
        .split('/')
        .next()
        .and_then(|a| a.parse().ok())
        .map(Some)
        .ok_or_else(|| format!("address {address:?} is not an IP address"))
}

/// Join's answer: the interface Docker moves into the sandbox and names `eth<N>`.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct JoinAnswer {
    pub interface_name: InterfaceName,
    /// Given but for an isolated IPv4 (`gateway_mode_ipv4=isolated`): without it, Docker
    /// adds an interface on its `docker_gwbridge`, except for an `--internal` network
    /// (which an isolated one is).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway: Option<Ipv4Addr>,
    /// The IPv6 gateway, on a network with IPv6: Docker routes `::/0` through it.
    #[serde(rename = "GatewayIPv6", skip_serializing_if = "Option::is_none")]
    pub gateway_ipv6: Option<Ipv6Addr>,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct InterfaceName {
    pub src_name: String,
    pub dst_prefix: String,
}

/// One binding of `com.docker.network.portmap`.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PortBinding {
    proto: u8,
    port: u16,
    #[serde(rename = "HostIP", default, deserialize_with = "nullable")]
    host_ip: String,
    #[serde(default)]
    host_port: u16,
    #[serde(default)]
    host_port_end: u16,
}

/// A published port as `-p` asked for it: the mapping, and the last host port it may
/// take (`-p 8000-8010:80` takes the first free one of the range; equal to `host_port`
/// for a single port, 0 with it for any free port).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WantedPort {
    pub mapping: PortMapping,
    pub host_port_end: u16,
}

/// What CreateNetwork asks for, in our terms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkRequest {
    pub subnet: Ipv4Net,
    pub gateway: Option<Ipv4Addr>,
    /// IPv6 (`--ipv6`): the pool Docker's IPAM gave, or our ULA pool's next /64 if none.
    pub ipv6: Option<Ipv6Spec>,
    pub internal: bool,
    /// Bridge options by Docker's names, which our bridge networks take as they are.
    pub options: BTreeMap<String, String>,
}

impl CreateNetwork {
    /// The network Docker asks for: one IPv4 pool, its gateway, at most one IPv6 pool with
    /// `--ipv6`, and the options our bridge networks have; anything else is refused, naming
    /// it and what is supported.
    pub fn parse(&self) -> Result<NetworkRequest, String> {
        let enable_ipv6 = self.options.get(ENABLE_IPV6).is_some_and(|v| v == &Value::Bool(true));
        let ipv6 = match (enable_ipv6, self.ipv6_data.as_slice()) {
            (false, []) => None,
            (false, [_, ..]) => {
                return Err("Docker sent an IPv6 pool without --ipv6; create the network with --ipv6".into());
            }
            (true, []) => Some(Ipv6Spec::default()),
            (true, [one]) => Some(Ipv6Spec {
                subnet: Some(one.pool.parse().map_err(|_| {
                    format!("subnet {:?} is not an IPv6 subnet; give --subnet like fd00:1::/64", one.pool)
                })?),
                gateway: gateway_of(&one.gateway, "IPv6", "--gateway fd00:1::1")?,
                ip_range: None,
            }),
            (true, more) => {
                return Err(format!(
                    "{} IPv6 pools given; a dataplane network has one IPv6 subnet: give one IPv6 --subnet",
                    more.len()
                ));
            }
        };
        let pool = match self.ipv4_data.as_slice() {
            [one] => one,
            [] => return Err("Docker sent no IPv4 pool; give the network one with --subnet".into()),
            more => {
                return Err(format!(
                    "{} IPv4 pools given; a dataplane network has one subnet: give one --subnet",
                    more.len()
                ));
            }
        };
        let subnet: Ipv4Net = pool
            .pool
            .parse()
            .map_err(|_| format!("subnet {:?} is not an IPv4 subnet; give --subnet A.B.C.D/N", pool.pool))?;
        let gateway = gateway_of(&pool.gateway, "IPv4", "--gateway A.B.C.D")?;
        let mut internal = self.options.get(INTERNAL).is_some_and(|v| v == &Value::Bool(true));
        let mut options = BTreeMap::new();
        let generic = match self.options.get(GENERIC) {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(generic)) => generic.clone(),
            Some(other) => return Err(format!("{GENERIC} is {other}, not a map of driver options")),
        };
        for (key, value) in generic {
            let value = match value {
                Value::String(s) => s,
                other => other.to_string(),
            };
            match key.as_str() {
                ICC | MTU | GATEWAY_MODE_IPV4 | GATEWAY_MODE_IPV6 => {
                    options.insert(key, value);
                }
                INTERNAL_OPTION => {
                    internal |= value
                        .parse::<bool>()
                        .map_err(|_| format!("-o internal={value}: expected true or false"))?;
                }
                _ => {
                    return Err(format!(
                        "-o {key}: unknown option for the dataplane driver; supported: {SUPPORTED_OPTIONS} (or --internal)"
                    ));
                }
            }
        }
        Ok(NetworkRequest { subnet, gateway, ipv6, internal, options })
    }
}

/// A pool's gateway as Docker sends it (with the pool's prefix length), if any.
fn gateway_of<A: std::str::FromStr>(cidr: &str, family: &str, fix: &str) -> Result<Option<A>, String> {
    match cidr {
        "" => Ok(None),
        cidr => cidr
            .split('/')
            .next()
            .and_then(|a| a.parse().ok())
            .map(Some)
            .ok_or_else(|| format!("gateway {cidr:?} is not an {family} address; give {fix}")),
    }
}

impl EndpointInterface {
    /// The IPv4 address Docker's IPAM gave the endpoint (`10.20.0.2/24`).
    pub fn ipv4(&self) -> Result<Ipv4Addr, String> {
        if self.address.is_empty() {
            return Err(
                "Docker sent no IPv4 address; use Docker's default IPAM driver for this network".into()
            );
        }
        self.address
            .split('/')
            .next()
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| format!("address {:?} is not an IPv4 address", self.address))
    }

    /// The IPv6 address Docker's IPAM gave the endpoint (`fd00:1::2/64`), if any.
    pub fn ipv6(&self) -> Result<Option<Ipv6Addr>, String> {
        match self.address_ipv6.as_str() {
            "" => Ok(None),
            text => text
                .parse::<Ipv6Net>()
                .map(|net| net.addr())
                .or_else(|_| text.parse())
                .map(Some)
                .map_err(|_| format!("address {text:?} is not an IPv6 address")),
        }
    }

    /// The MAC Docker gave (`--mac-address`), if any.
    pub fn mac(&self) -> Result<Option<MacAddr>, String> {
        if self.mac_address.is_empty() {
            return Ok(None);
        }
        self.mac_address.parse().map(Some)
    }
}

impl ProgramExternalConnectivity {
    /// The ports `-p` asks to publish, with `-p`'s meaning: a host address (none: every
    /// address), a host port, a range to take a free one of, or none for any free port.
    pub fn ports(&self) -> Result<Vec<WantedPort>, String> {
        let bindings: Vec<PortBinding> = match self.options.get(PORTMAP) {
            None | Some(Value::Null) => return Ok(vec![]),
            Some(value) => serde_json::from_value(value.clone())
                .map_err(|e| format!("{PORTMAP} is not a list of port bindings: {e}"))?,
        };
        bindings.iter().map(PortBinding::wanted).collect()
    }
}

impl PortBinding {
    fn wanted(&self) -> Result<WantedPort, String> {
        let proto = match self.proto {
            6 => Proto::Tcp,
            17 => Proto::Udp,
            other => {
                return Err(format!(
                    "-p ...:{}: protocol {other} is not supported; publish tcp or udp ports",
                    self.port
                ));
            }
        };
        // No HostIp: every address of each family, as `-p PORT` without one.
        let (host_ip, any_family) = match self.host_ip.as_str() {
            "" => (Ipv4Addr::UNSPECIFIED.into(), true),
            ip => (
                ip.parse().map_err(|_| {
                    format!(
                        "-p {ip}:{}:{}: {ip} is not an IP address; give an IPv4 or IPv6 one",
                        self.host_port, self.port
                    )
                })?,
                false,
            ),
        };
        if self.port == 0 {
            return Err("-p: container port 0; give a port 1-65535".into());
        }
        let host_port_end = self.host_port_end.max(self.host_port);
        if self.host_port == 0 && host_port_end != 0 {
            return Err(format!("-p :{host_port_end}:{}: a host port range must start above 0", self.port));
        }
        Ok(WantedPort {
            mapping: PortMapping {
                host_ip,
                host_port: self.host_port,
                container_port: self.port,
                proto,
                any_family,
            },
            host_port_end,
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn create(options: Value, ipv4: Value) -> CreateNetwork {
        serde_json::from_value(json!({
            "NetworkID": "d0c", "Options": options, "IPv4Data": ipv4, "IPv6Data": null
        }))
        .unwrap()
    }

    fn pool() -> Value {
        json!([{"AddressSpace": "LocalDefault", "Pool": "10.20.0.0/24", "Gateway": "10.20.0.1/24", "AuxAddresses": null}])
    }

    #[test]
    fn a_network_takes_docker_s_pool_gateway_and_bridge_options() {
        let request = create(
            json!({
                "com.docker.network.enable_ipv6": false,
                "com.docker.network.generic": {
                    "com.docker.network.bridge.enable_icc": "false",
                    "com.docker.network.driver.mtu": "1400",
                    "com.docker.network.bridge.gateway_mode_ipv6": "routed"
                }
            }),
            pool(),
        )
        .parse()
        .unwrap();
        assert_eq!(request.subnet, "10.20.0.0/24".parse().unwrap());
        assert_eq!(request.gateway, Some(Ipv4Addr::new(10, 20, 0, 1)));
        assert!(!request.internal);
        assert_eq!(request.options.get(ICC).map(String::as_str), Some("false"));
        assert_eq!(request.options.get(MTU).map(String::as_str), Some("1400"));
        assert_eq!(request.options.get(GATEWAY_MODE_IPV6).map(String::as_str), Some("routed"));
    }

    #[test]
    fn ipv6_takes_docker_s_ipv6_pool_or_our_own() {
        let mut request = create(json!({"com.docker.network.enable_ipv6": true}), pool());
        assert_eq!(request.parse().unwrap().ipv6, Some(Ipv6Spec::default()), "--ipv6 without a pool");
        request.ipv6_data =
            serde_json::from_value(json!([{"Pool": "fd00:20::/64", "Gateway": "fd00:20::1/64"}])).unwrap();
        assert_eq!(
            request.parse().unwrap().ipv6,
            Some(Ipv6Spec {
                subnet: Some("fd00:20::/64".parse().unwrap()),
                gateway: Some("fd00:20::1".parse().unwrap()),
                ip_range: None
            })
        );
        assert_eq!(create(Value::Null, pool()).parse().unwrap().ipv6, None, "IPv4-only");
        request.ipv6_data = serde_json::from_value(json!([{"Pool": "10.30.0.0/24"}])).unwrap();
        assert!(request.parse().unwrap_err().contains("not an IPv6 subnet"));
    }

    #[test]
    fn internal_comes_from_the_flag_or_the_option() {
        let flag = create(json!({"com.docker.network.internal": true}), pool()).parse().unwrap();
        assert!(flag.internal, "--internal");
        let option =
            create(json!({"com.docker.network.generic": {"internal": "true"}}), pool()).parse().unwrap();
        assert!(option.internal, "-o internal=true");
        assert!(option.options.is_empty(), "internal is no bridge option: {:?}", option.options);
        let plain = create(Value::Null, pool()).parse().unwrap();
        assert!(!plain.internal && plain.options.is_empty(), "{plain:?}");
    }

    #[test]
    fn unknown_options_ipv6_and_several_pools_are_refused_by_name() {
        let err =
            create(json!({"com.docker.network.generic": {"parent": "eth0"}}), pool()).parse().unwrap_err();
        assert!(err.contains("-o parent: unknown option"), "{err}");
        assert!(err.contains(ICC) && err.contains(MTU) && err.contains("internal"), "{err}");
        let two6 = json!([{"Pool": "fd00:1::/64"}, {"Pool": "fd00:2::/64"}]);
        let mut err = create(json!({"com.docker.network.enable_ipv6": true}), pool());
        err.ipv6_data = serde_json::from_value(two6).unwrap();
        let err = err.parse().unwrap_err();
        assert!(err.contains("2 IPv6 pools") && err.contains("one IPv6 --subnet"), "{err}");
        let two = json!([{"Pool": "10.20.0.0/24"}, {"Pool": "10.21.0.0/24"}]);
        let err = create(Value::Null, two).parse().unwrap_err();
        assert!(err.contains("2 IPv4 pools") && err.contains("one --subnet"), "{err}");
        let err = create(Value::Null, Value::Null).parse().unwrap_err();
        assert!(err.contains("no IPv4 pool"), "{err}");
        let err =
            create(json!({"com.docker.network.generic": {"internal": "maybe"}}), pool()).parse().unwrap_err();
        assert!(err.contains("-o internal=maybe: expected true or false"), "{err}");
    }

    #[test]
    fn an_endpoint_takes_docker_s_address_and_mac() {
        let interface: EndpointInterface =
            serde_json::from_value(json!({"Address": "10.20.0.2/24", "AddressIPv6": "", "MacAddress": ""}))
                .unwrap();
        assert_eq!(interface.ipv4(), Ok(Ipv4Addr::new(10, 20, 0, 2)));
        assert_eq!(interface.mac(), Ok(None));
        let with_mac = EndpointInterface { mac_address: "02:42:0a:14:00:09".into(), ..interface.clone() };
        assert_eq!(with_mac.mac().unwrap().unwrap().to_string(), "02:42:0a:14:00:09");
        assert_eq!(interface.ipv6(), Ok(None));
        let dual = EndpointInterface { address_ipv6: "fd00:20::2/64".into(), ..interface.clone() };
        assert_eq!(dual.ipv6(), Ok(Some("fd00:20::2".parse().unwrap())));
        let none = EndpointInterface::default();
        assert!(none.ipv4().unwrap_err().contains("no IPv4 address"));
        // Only the MAC goes back, and only when set.
        let answer = EndpointInterface { mac_address: "02:42:0a:14:00:02".into(), ..Default::default() };
        assert_eq!(serde_json::to_value(answer).unwrap(), json!({"MacAddress": "02:42:0a:14:00:02"}));
    }

    fn program(portmap: Value) -> ProgramExternalConnectivity {
        serde_json::from_value(json!({
            "NetworkID": "d0c", "EndpointID": "e9d",
            "Options": {"com.docker.network.endpoint.exposedports": [{"Proto": 6, "Port": 80}],
                        "com.docker.network.portmap": portmap}
        }))
        .unwrap()
    }

    #[test]
    fn port_bindings_keep_dash_p_s_meaning() {
        let ports = program(json!([
            {"Proto": 6, "IP": "", "Port": 80, "HostIP": "", "HostPort": 8080, "HostPortEnd": 8080},
            {"Proto": 17, "IP": "", "Port": 53, "HostIP": "127.0.0.1", "HostPort": 5353, "HostPortEnd": 0},
            {"Proto": 6, "IP": "", "Port": 81, "HostIP": "", "HostPort": 0, "HostPortEnd": 0},
            {"Proto": 6, "IP": "", "Port": 82, "HostIP": "", "HostPort": 9000, "HostPortEnd": 9010}
        ]))
        .ports()
        .unwrap();
        let shown: Vec<_> = ports.iter().map(|p| (p.mapping.to_string(), p.host_port_end)).collect();
        assert_eq!(
            shown,
            [
                ("80/tcp -> 0.0.0.0:8080".to_string(), 8080),
                ("53/udp -> 127.0.0.1:5353".to_string(), 5353),
                ("81/tcp -> 0.0.0.0:0".to_string(), 0),
                ("82/tcp -> 0.0.0.0:9000".to_string(), 9010),
            ]
        );
        assert_eq!(program(Value::Null).ports(), Ok(vec![]));
    }

    #[test]
    fn ipam_requests_are_read_as_docker_sends_them() {
        let pool: RequestPool = serde_json::from_value(json!({
            "AddressSpace": "dataplane", "Pool": "10.30.0.0/24", "SubPool": "10.30.0.128/25", "Options": null, "V6": false
        }))
        .unwrap();
        assert_eq!(
            pool.parse(),
            Ok((Some("10.30.0.0/24".parse().unwrap()), Some("10.30.0.128/25".parse().unwrap())))
        );
        let any: RequestPool =
            serde_json::from_value(json!({"AddressSpace": "dataplane", "Pool": "", "V6": false})).unwrap();
        assert_eq!(any.parse(), Ok((None, None)));
        let v6: RequestPool =
            serde_json::from_value(json!({"Pool": "fd00:30::/64", "SubPool": "", "V6": true})).unwrap();
        assert_eq!(v6.parse(), Ok((Some("fd00:30::/64".parse().unwrap()), None)));
        let v4_as_v6: RequestPool =
            serde_json::from_value(json!({"Pool": "10.30.0.0/24", "V6": true})).unwrap();
        assert!(v4_as_v6.parse().unwrap_err().contains("--subnet \"10.30.0.0/24\" is not an IPv6 subnet"));
        let bad: RequestPool = serde_json::from_value(json!({"Pool": "10.30.0.0"})).unwrap();
        assert!(bad.parse().unwrap_err().contains("--subnet \"10.30.0.0\" is not an IPv4 subnet"));

        let gateway: RequestAddress = serde_json::from_value(json!({
            "PoolID": "10.30.0.0/24", "Address": "",
            "Options": {"RequestAddressType": "com.docker.network.gateway"}
        }))
        .unwrap();
        assert!(gateway.for_gateway());
        assert_eq!(gateway.wanted(), Ok(None));
        let ip: RequestAddress = serde_json::from_value(
            json!({"PoolID": "10.30.0.0/24", "Address": "10.30.0.9", "Options": null}),
        )
        .unwrap();
        assert!(!ip.for_gateway());
        assert_eq!(ip.wanted(), Ok(Some(Ipv4Addr::new(10, 30, 0, 9).into())));
        let release: Release =
            serde_json::from_value(json!({"PoolID": "10.30.0.0/24", "Address": "10.30.0.9/24"})).unwrap();
        assert_eq!(release.address(), Ok(Some(Ipv4Addr::new(10, 30, 0, 9).into())));
    }

    #[test]
    fn port_bindings_we_cannot_publish_are_refused_by_name_and_ipv6_ones_kept() {
        let sctp = json!([{"Proto": 132, "Port": 80, "HostIP": "", "HostPort": 8080, "HostPortEnd": 8080}]);
        assert!(program(sctp).ports().unwrap_err().contains("protocol 132 is not supported"));
        let bad = json!([{"Proto": 6, "Port": 80, "HostIP": "::g", "HostPort": 8080, "HostPortEnd": 8080}]);
        assert!(
            program(bad).ports().unwrap_err().contains("::g is not an IP address; give an IPv4 or IPv6 one")
        );
        let v6 = json!([{"Proto": 6, "Port": 80, "HostIP": "::1", "HostPort": 8080, "HostPortEnd": 8080}]);
        let wanted = program(v6).ports().expect("an IPv6 host address is published");
        assert_eq!(wanted[0].mapping.host_ip, std::net::Ipv6Addr::LOCALHOST, "the IPv6 address was lost");
    }
}
