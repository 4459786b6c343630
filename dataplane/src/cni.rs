//! The CNI plugin, `dataplane-cni`: what runtimes (podman, containerd, the kubelet) run
//! for a network whose config says `"type": "dataplane"`. It reads the config and the
//! runtime's `CNI_*` variables, asks the daemon over its control socket, and prints the
//! spec's result or error. It changes nothing on the system itself: the daemon attaches
//! the namespace, as it does for `run`, so one lock orders every ADD (parallel ADDs never
//! get one address twice) and a restart restores what ADD made.
//!
//! The spec's types, the `CNI_*` parsing, version negotiation and the wire format of
//! results and errors come from `rscni-plugin`; this module maps them onto the daemon's
//! requests.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::PathBuf,
};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use rscni_plugin::{
    cni::Cni,
    error::Error,
    types::{Args, CNIResult, Dns, Interface, IpConfig, NetConf, Protocol, Route},
};
use serde_json::Value;

use crate::{
    api::{self, CniAdd, CniAdded, CniAttachment, CniCheck, CniNetwork, ErrorKind, Request},
    ports::{PortMapping, Proto},
    state::MacAddr,
};

/// The keys of our section of a config, besides the spec's own.
const CONFIG_KEYS: [&str; 15] = [
    "network",
    "subnet",
    "gateway",
    "ipRange",
    "ipv4",
    "ipv6",
    "subnet6",
    "gateway6",
    "ipRange6",
    "internal",
    "icc",
    "mtu",
    "gatewayModeIpv4",
    "gatewayModeIpv6",
    "socket",
];
/// `CNI_ARGS` keys we understand; any other needs `IgnoreUnknown=1`, as the reference
/// plugins have it.
const KNOWN_ARGS: [&str; 7] = [
    "IgnoreUnknown",
    "IP",
    "MAC",
    "K8S_POD_NAME",
    "K8S_POD_NAMESPACE",
    "K8S_POD_INFRA_CONTAINER_ID",
    "K8S_POD_UID",
];
/// A plugin-specific code (the spec leaves 100 and up to plugins): CHECK found the
/// attachment no longer as ADD made it.
const CODE_BROKEN: u32 = 100;
/// The reference plugins' code for an internal error.
const CODE_INTERNAL: u32 = 999;

/// The plugin, as `rscni-plugin` runs it.
pub struct DataplaneCni;

/// Our section of a network config.
#[derive(Debug, PartialEq)]
pub struct PluginConfig {
    pub socket: PathBuf,
    pub network: CniNetwork,
}

/// What the runtime asked for through the capabilities (`runtimeConfig`) and `CNI_ARGS`.
#[derive(Debug, Default, PartialEq)]
pub struct Wanted {
    pub ip: Option<Ipv4Addr>,
    pub ip6: Option<Ipv6Addr>,
    pub mac: Option<MacAddr>,
    pub names: Vec<String>,
    pub publish: Vec<PortMapping>,
}

fn bad_config(message: String) -> Error {
    Error::InvalidNetworkConfig(message)
}

fn unsupported(message: String) -> Error {
    Error::UnsupportedNetworkConfiguration(message)
}

/// A config value of the type `T`, or the error naming the key and what it takes.
fn value<T: serde::de::DeserializeOwned>(conf: &NetConf, key: &str, takes: &str) -> Result<Option<T>, Error> {
    conf.custom
        .get(key)
        .map(|v| {
            serde_json::from_value(v.clone())
                .map_err(|_| bad_config(format!("config key {key:?} is {v}; give {takes}")))
        })
        .transpose()
}

pub fn parse_config(conf: &NetConf) -> Result<PluginConfig, Error> {
    if let Some(key) = conf.custom.keys().find(|k| !CONFIG_KEYS.contains(&k.as_str())) {
        return Err(unsupported(format!(
            "config key {key:?} is not one of dataplane's; supported: {}",
            CONFIG_KEYS.join(", ")
        )));
    }
    if conf.ipam.is_some() {
        return Err(unsupported(
            "dataplane assigns addresses itself: remove \"ipam\" and give \"subnet\" (and \"ipRange\") instead"
                .into(),
        ));
    }
    let name: Option<String> = value(conf, "network", "a network name")?;
    let socket: Option<PathBuf> = value(conf, "socket", "the daemon's socket path")?;
    let subnet6: Option<Ipv6Net> = value(conf, "subnet6", "an IPv6 subnet like \"fd00:88::/64\"")?;
    let gateway6: Option<Ipv6Addr> = value(conf, "gateway6", "an IPv6 address inside subnet6")?;
    let ip_range6: Option<Ipv6Net> = value(conf, "ipRange6", "an IPv6 subnet inside subnet6")?;
    let gives_v6 = subnet6.is_some() || gateway6.is_some() || ip_range6.is_some();
    let ipv6 = match value(conf, "ipv6", "true or false")? {
        Some(false) if gives_v6 => {
            return Err(bad_config(
                "config key \"ipv6\" is false but subnet6, gateway6 or ipRange6 is given; drop them or set \"ipv6\": true"
                    .into(),
            ));
        }
        None if gives_v6 => Some(true),
        asked => asked,
    };
    let subnet: Option<Ipv4Net> = value(conf, "subnet", "an IPv4 subnet like \"10.88.0.0/16\"")?;
    let gateway: Option<Ipv4Addr> = value(conf, "gateway", "an IPv4 address inside the subnet")?;
    let ip_range: Option<Ipv4Net> = value(conf, "ipRange", "an IPv4 subnet inside the subnet")?;
    let ipv4: Option<bool> = value(conf, "ipv4", "true or false")?;
    if ipv4 == Some(false) {
        if subnet.is_some() || gateway.is_some() || ip_range.is_some() {
            return Err(bad_config(
                "config key \"ipv4\" is false but subnet, gateway or ipRange is given; drop them or \"ipv4\": false"
                    .into(),
            ));
        }
        if ipv6 != Some(true) {
            return Err(bad_config(
                "config key \"ipv4\" is false and the network has no IPv6; add \"ipv6\": true (or \"subnet6\") for an IPv6-only network"
                    .into(),
            ));
        }
    }
    Ok(PluginConfig {
        socket: socket.unwrap_or_else(|| PathBuf::from(api::DEFAULT_SOCKET)),
        network: CniNetwork {
            name: name.unwrap_or_else(|| conf.name.clone()),
            subnet,
            gateway,
            ip_range,
            ipv4,
            ipv6,
            subnet6,
            gateway6,
            ip_range6,
            internal: value(conf, "internal", "true or false")?,
            icc: value(conf, "icc", "true or false")?,
            mtu: value(conf, "mtu", "an MTU between 68 and 65535")?,
            gateway_mode_ipv4: value(
                conf,
                "gatewayModeIpv4",
                "\"nat\", \"routed\", \"nat-unprotected\" or \"isolated\"",
            )?,
            gateway_mode_ipv6: value(
                conf,
                "gatewayModeIpv6",
                "\"nat\", \"routed\", \"nat-unprotected\" or \"isolated\"",
            )?,
        },
    })
}

/// The runtime's asks: `ips`, `mac`, `aliases` and `portMappings` from `runtimeConfig`;
/// from `CNI_ARGS`, the pod's name (podman and the kubelet pass `K8S_POD_NAME`) and the
/// `IP` and `MAC` podman passes for `--ip` and `--mac-address` (a capability, when both
/// give one, wins).
pub fn wanted(conf: &NetConf, cni_args: Option<&str>, network: &str) -> Result<Wanted, Error> {
    let args = parse_args(cni_args)?;
    let arg = |key: &str| args.iter().find(|(k, v)| *k == key && !v.is_empty()).map(|(_, v)| *v);
    let mut wanted = Wanted::default();
    if let Some(pod) = arg("K8S_POD_NAME") {
        wanted.names.push(pod.to_string());
    }
    if let Some(ip) = arg("IP") {
        (wanted.ip, wanted.ip6) =
            requested_ips(&ip.split(',').map(String::from).collect::<Vec<_>>(), "CNI_ARGS IP")?;
    }
    if let Some(mac) = arg("MAC") {
        wanted.mac = Some(mac.parse().map_err(|e| Error::InvalidEnvValue(format!("CNI_ARGS MAC: {e}")))?);
    }
    let Some(runtime) = &conf.runtime_config else {
        return Ok(wanted);
    };
    if let Some(ips) = runtime.custom.get("ips") {
        let ips: Vec<String> = serde_json::from_value(ips.clone())
            .map_err(|_| bad_config(format!("runtimeConfig.ips is {ips}; give a list of addresses")))?;
        let (ip, ip6) = requested_ips(&ips, "runtimeConfig.ips")?;
        wanted.ip = ip.or(wanted.ip);
        wanted.ip6 = ip6.or(wanted.ip6);
    }
    if let Some(mac) = runtime.custom.get("mac") {
        let text =
            mac.as_str().ok_or_else(|| bad_config(format!("runtimeConfig.mac is {mac}; give a string")))?;
        wanted.mac = Some(text.parse().map_err(|e| bad_config(format!("runtimeConfig.mac: {e}")))?);
    }
    if let Some(aliases) = runtime.custom.get("aliases") {
        wanted.names.extend(aliases_for(aliases, network)?);
    }
    wanted.publish = runtime.port_mappings.iter().map(port_mapping).collect::<Result<_, _>>()?;
    Ok(wanted)
}

/// `CNI_ARGS` (`K=V;K=V`) as pairs; keys we do not know need `IgnoreUnknown=1`.
fn parse_args(cni_args: Option<&str>) -> Result<Vec<(&str, &str)>, Error> {
    let pairs: Vec<(&str, &str)> = cni_args
        .unwrap_or_default()
        .split(';')
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.split_once('=')
                .ok_or_else(|| Error::InvalidEnvValue(format!("CNI_ARGS: {p:?} is not KEY=VALUE")))
        })
        .collect::<Result<_, _>>()?;
    let ignore_unknown = pairs
        .iter()
        .any(|(k, v)| *k == "IgnoreUnknown" && matches!(v.to_ascii_lowercase().as_str(), "1" | "true"));
    if !ignore_unknown && let Some((key, _)) = pairs.iter().find(|(k, _)| !KNOWN_ARGS.contains(k)) {
        return Err(Error::InvalidEnvValue(format!(
            "CNI_ARGS: unknown key {key:?}; known: {}, or add IgnoreUnknown=1",
            KNOWN_ARGS.join(", ")
        )));
    }
    Ok(pairs)
}

/// The addresses asked for (`from`: the `ips` capability, or `IP` in `CNI_ARGS`): at most
/// one of each family, with or without its prefix. Whether the network has IPv6 for the
/// IPv6 one is the daemon's to say.
fn requested_ips(ips: &[String], from: &str) -> Result<(Option<Ipv4Addr>, Option<Ipv6Addr>), Error> {
    let mut v4 = vec![];
    let mut v6 = vec![];
    for text in ips {
        let ip = match text.parse::<IpNet>() {
            Ok(net) => net.addr(),
            Err(_) => text
                .parse::<IpAddr>()
                .map_err(|_| bad_config(format!("{from}: {text:?} is not an address like 10.88.0.5/24")))?,
        };
        match ip {
            IpAddr::V4(ip) => v4.push(ip),
            IpAddr::V6(ip) => v6.push(ip),
        }
    }
    for (count, family) in [(v4.len(), "IPv4"), (v6.len(), "IPv6")] {
        if count > 1 {
            return Err(bad_config(format!(
                "{from} asks for {count} {family} addresses; an interface takes one of each family"
            )));
        }
    }
    Ok((v4.first().copied(), v6.first().copied()))
}

/// The `aliases` capability: a list of names, or (as podman sends it) lists by network name.
fn aliases_for(aliases: &Value, network: &str) -> Result<Vec<String>, Error> {
    let bad = || {
        bad_config(format!(
            "runtimeConfig.aliases is {aliases}; give a list of names, or lists by network name"
        ))
    };
    match aliases {
        Value::Array(_) => serde_json::from_value(aliases.clone()).map_err(|_| bad()),
        Value::Object(by_network) => match by_network.get(network) {
            Some(list) => serde_json::from_value(list.clone()).map_err(|_| bad()),
            None => Ok(vec![]),
        },
        _ => Err(bad()),
    }
}

fn port_mapping(mapping: &rscni_plugin::types::PortMapping) -> Result<PortMapping, Error> {
    let port = |p: u32, what: &str| {
        u16::try_from(p).ok().filter(|p| *p > 0).ok_or_else(|| {
            bad_config(format!("runtimeConfig.portMappings: {what} {p} is not a port; ports are 1-65535"))
        })
    };
    let proto = match mapping.protocol {
        None | Some(Protocol::Tcp) => Proto::Tcp,
        Some(Protocol::Udp) => Proto::Udp,
        Some(Protocol::Sctp) => {
            return Err(unsupported(
                "runtimeConfig.portMappings: sctp is not published; use tcp or udp".into(),
            ));
        }
    };
    // No hostIP: every address of each family, as `-p PORT` without one.
    let (host_ip, any_family) = match mapping.custom.get("hostIP").and_then(Value::as_str) {
        None | Some("") => (Ipv4Addr::UNSPECIFIED.into(), true),
        Some(text) => (
            text.parse().map_err(|_| {
                bad_config(format!("runtimeConfig.portMappings: hostIP {text:?} is not an IP address"))
            })?,
            false,
        ),
    };
    Ok(PortMapping {
        host_ip,
        host_port: port(mapping.host_port, "hostPort")?,
        container_port: port(mapping.container_port, "containerPort")?,
        proto,
        any_family,
    })
}

/// The ADD result: the previous plugin's (when chained after one) with our host and
/// sandbox interfaces, the address, the default route and the network's resolver added.
fn result_of(
    added: &CniAdded,
    ifname: &str,
    netns: &str,
    prev: Option<CNIResult>,
    dns: Option<Dns>,
) -> CNIResult {
    let mut result = prev.unwrap_or_default();
    result.interfaces.push(Interface {
        name: added.host_veth.clone(),
        mac: added.host_mac.map(|m| m.to_string()).unwrap_or_default(),
        mtu: added.mtu,
        sandbox: None,
        socket_path: None,
        pci_id: None,
    });
    result.interfaces.push(Interface {
        name: ifname.to_string(),
        mac: added.mac.to_string(),
        mtu: added.mtu,
        sandbox: Some(netns.to_string()),
        socket_path: None,
        pci_id: None,
    });
    let sandbox_index = (result.interfaces.len() - 1) as u32;
    let mut families = vec![];
    if let Some(v4) = added.ipv4 {
        let address = Ipv4Net::new(v4.ip, v4.prefix_len).expect("the daemon gives a valid prefix");
        families.push((IpNet::from(address), v4.gateway.map(IpAddr::from), IpNet::V4(Ipv4Net::default())));
    }
    if let Some(v6) = added.ipv6 {
        let address = Ipv6Net::new(v6.ip, v6.prefix_len).expect("the daemon gives a valid prefix");
        families.push((address.into(), v6.gateway.map(IpAddr::from), IpNet::V6(Ipv6Net::default())));
    }
    for (address, gateway, default) in families {
        result.ips.push(IpConfig { interface: Some(sandbox_index), address, gateway });
        // An isolated family has no gateway, and no default route.
        if let Some(gateway) = gateway.filter(|_| added.default_route) {
            result.routes.push(Route {
                dst: default,
                gw: Some(gateway),
                mtu: None,
                advmss: None,
                priority: None,
                table: None,
                scope: None,
            });
        }
    }
    // The config's `dns` gives what the runtime should add (search domains, options);
    // the resolver is the network's, ahead of any the previous plugin named.
    let mut merged = result.dns.take().or(dns).unwrap_or_default();
    let ours: Vec<String> = added.nameservers.iter().map(IpAddr::to_string).collect();
    merged.nameservers.retain(|n| !ours.contains(n));
    merged.nameservers.splice(0..0, ours);
    result.dns = Some(merged);
    result
}

/// The spec's error for a failed request: `unreachable` when the daemon could not be
/// reached (try again later for ADD and DEL; not available for STATUS).
fn error_of(e: &anyhow::Error, unreachable: fn(String) -> Error) -> Error {
    let message = format!("{e:#}");
    match api::kind_of(e) {
        ErrorKind::Invalid => Error::InvalidNetworkConfig(message),
        ErrorKind::Unknown => Error::NotExist(message),
        ErrorKind::Broken => Error::Custom(CODE_BROKEN, "Attachment broken".into(), message),
        ErrorKind::Unreachable => unreachable(message),
        ErrorKind::Failed => Error::Custom(CODE_INTERNAL, "Internal error".into(), message),
    }
}

fn call<T: serde::de::DeserializeOwned>(config: &PluginConfig, request: &Request) -> Result<T, Error> {
    api::call(&config.socket, request).map_err(|e| error_of(&e, Error::TryAgainLater))
}

/// The attachment the runtime names (`CNI_CONTAINERID`, `CNI_IFNAME`: rscni checked both
/// are there for the commands that need them).
fn attachment_of(args: &Args) -> Result<CniAttachment, Error> {
    match (args.container_id(), args.ifname()) {
        (Some(id), Some(ifname)) => {
            Ok(CniAttachment { container_id: id.to_string(), ifname: ifname.to_string() })
        }
        _ => Err(Error::missing_env(&["CNI_CONTAINERID", "CNI_IFNAME"])),
    }
}

fn netns_of(args: &Args) -> Result<String, Error> {
    args.netns().map(|p| p.display().to_string()).ok_or_else(|| Error::missing_env(&["CNI_NETNS"]))
}

impl Cni for DataplaneCni {
    fn add(&self, args: Args) -> Result<CNIResult, Error> {
        let conf = args.config();
        let config = parse_config(conf)?;
        let attachment = attachment_of(&args)?;
        let netns = netns_of(&args)?;
        let wanted = wanted(conf, args.args(), &config.network.name)?;
        let request = Request::CniAdd(CniAdd {
            attachment: attachment.clone(),
            netns: PathBuf::from(&netns),
            network: config.network.clone(),
            ip: wanted.ip,
            ip6: wanted.ip6,
            mac: wanted.mac,
            names: wanted.names,
            publish: wanted.publish,
        });
        let added: CniAdded = call(&config, &request)?;
        Ok(result_of(&added, &attachment.ifname, &netns, conf.prev_result.clone(), conf.dns.clone()))
    }

    fn del(&self, args: Args) -> Result<(), Error> {
        let config = parse_config(args.config())?;
        let request =
            Request::CniDel { attachment: attachment_of(&args)?, network: config.network.name.clone() };
        call::<Value>(&config, &request).map(drop)
    }

    fn check(&self, args: Args) -> Result<(), Error> {
        let conf = args.config();
        let config = parse_config(conf)?;
        let attachment = attachment_of(&args)?;
        let prev = conf.prev_result.as_ref().ok_or_else(|| {
            bad_config("CHECK needs the ADD's result as prevResult; the runtime passes it".into())
        })?;
        // Our sandbox interface in the cached result, and the addresses given to it.
        let sandbox = prev.interfaces.iter().position(|i| i.name == attachment.ifname && i.sandbox.is_some());
        let given = || {
            prev.ips.iter().filter(move |c| sandbox.is_some_and(|index| c.interface == Some(index as u32)))
        };
        let ip = given().find_map(|c| match c.address {
            IpNet::V4(net) => Some(net),
            IpNet::V6(_) => None,
        });
        let ip6 = given().find_map(|c| match c.address {
            IpNet::V6(net) => Some(net),
            IpNet::V4(_) => None,
        });
        let mac = sandbox.and_then(|index| prev.interfaces[index].mac.parse().ok());
        let request = Request::CniCheck(CniCheck {
            attachment,
            network: config.network.name.clone(),
            netns: PathBuf::from(netns_of(&args)?),
            ip,
            ip6,
            mac,
        });
        call::<Value>(&config, &request).map(drop)
    }

    fn status(&self, args: Args) -> Result<(), Error> {
        let config = parse_config(args.config())?;
        api::call::<Value>(&config.socket, &Request::NetworkList)
            .map(drop)
            .map_err(|e| error_of(&e, Error::PluginNotAvailable))
    }

    fn gc(&self, args: Args) -> Result<(), Error> {
        let conf = args.config();
        let config = parse_config(conf)?;
        let valid = conf
            .valid_attachments
            .iter()
            .flatten()
            .map(|a| CniAttachment { container_id: a.container_id.clone(), ifname: a.ifname.clone() })
            .collect();
        call::<Value>(&config, &Request::CniGc { network: config.network.name.clone(), valid }).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use rscni_plugin::types::CNIResultWithVersion;
    use serde_json::json;

    use super::*;

    fn conf(value: Value) -> NetConf {
        serde_json::from_value(value).unwrap()
    }

    /// A config as a runtime hands it over: the list's name and version, our section,
    /// and the runtime's `runtimeConfig`.
    fn podman_conf() -> NetConf {
        conf(json!({
            "cniVersion": "1.0.0",
            "name": "pods",
            "type": "dataplane",
            "subnet": "10.88.5.0/24",
            "ipRange": "10.88.5.128/25",
            "icc": false,
            "mtu": 1400,
            "socket": "/run/test/dp.sock",
            "capabilities": {"portMappings": true, "aliases": true, "ips": true, "mac": true},
            "runtimeConfig": {
                "portMappings": [
                    {"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": ""},
                    {"hostPort": 5353, "containerPort": 53, "protocol": "UDP", "hostIP": "127.0.0.1"}
                ],
                "aliases": {"pods": ["web", "www"], "other": ["nope"]},
                "ips": ["10.88.5.130/24"],
                "mac": "02:aa:bb:cc:dd:ee"
            }
        }))
    }

    #[test]
    fn our_section_of_a_config_names_the_network_and_how_to_create_it() {
        let config = parse_config(&podman_conf()).unwrap();
        assert_eq!(config.socket, PathBuf::from("/run/test/dp.sock"));
        assert_eq!(
            config.network,
            CniNetwork {
                name: "pods".into(),
                subnet: Some("10.88.5.0/24".parse().unwrap()),
                gateway: None,
                ip_range: Some("10.88.5.128/25".parse().unwrap()),
                icc: Some(false),
                mtu: Some(1400),
                ..CniNetwork::default()
            }
        );
        // `network` names another network than the config's name; the socket defaults.
        let config =
            parse_config(&conf(json!({"name": "k8s", "type": "dataplane", "network": "web"}))).unwrap();
        assert_eq!(
            (config.network.name.as_str(), config.socket),
            ("web", PathBuf::from(api::DEFAULT_SOCKET))
        );
        // An IPv6 subnet asks for IPv6 without saying "ipv6"; "ipv6" alone takes a ULA /64.
        let dual = parse_config(&conf(json!({"name": "d", "type": "dataplane", "subnet6": "fd00:88::/64"})))
            .unwrap()
            .network;
        assert_eq!((dual.ipv6, dual.subnet6), (Some(true), Some("fd00:88::/64".parse().unwrap())));
        let routed = parse_config(&conf(
            json!({"name": "r", "type": "dataplane", "ipv6": true, "gatewayModeIpv6": "routed"}),
        ))
        .unwrap()
        .network;
        assert_eq!(routed.gateway_mode_ipv6.as_deref(), Some("routed"));
        let routed4 =
            parse_config(&conf(json!({"name": "r", "type": "dataplane", "gatewayModeIpv4": "routed"})))
                .unwrap()
                .network;
        assert_eq!(routed4.gateway_mode_ipv4.as_deref(), Some("routed"));
        let pooled =
            parse_config(&conf(json!({"name": "d", "type": "dataplane", "ipv6": true}))).unwrap().network;
        assert_eq!((pooled.ipv6, pooled.subnet6), (Some(true), None));
    }

    #[test]
    fn configs_dataplane_cannot_honour_are_refused_with_the_key_and_the_fix() {
        let err = parse_config(&conf(json!({"name": "n", "type": "dataplane", "ip_range": "10.0.0.0/24"})))
            .unwrap_err();
        assert_eq!(u32::from(&err), 2);
        assert!(err.details().contains("\"ip_range\"") && err.details().contains("ipRange"), "{err:?}");
        let err =
            parse_config(&conf(json!({"name": "n", "type": "dataplane", "ipam": {"type": "host-local"}})))
                .unwrap_err();
        assert_eq!(u32::from(&err), 2);
        assert!(err.details().contains("remove \"ipam\""), "{err:?}");
        let err = parse_config(&conf(json!({"name": "n", "type": "dataplane", "subnet": "10.0.0.0/33"})))
            .unwrap_err();
        assert_eq!(u32::from(&err), 7);
        assert!(err.details().contains("\"subnet\""), "{err:?}");
        let err = parse_config(&conf(
            json!({"name": "n", "type": "dataplane", "ipv6": false, "subnet6": "fd00:88::/64"}),
        ))
        .unwrap_err();
        assert_eq!(u32::from(&err), 7);
        assert!(err.details().contains("\"ipv6\": true"), "{err:?}");
    }

    #[test]
    fn the_runtimes_asks_come_from_its_capabilities_and_cni_args() {
        let wanted =
            wanted(&podman_conf(), Some("IgnoreUnknown=1;K8S_POD_NAME=api;FOO=bar"), "pods").unwrap();
        assert_eq!(
            wanted,
            Wanted {
                ip: Some(Ipv4Addr::new(10, 88, 5, 130)),
                ip6: None,
                mac: Some("02:aa:bb:cc:dd:ee".parse().unwrap()),
                names: vec!["api".into(), "web".into(), "www".into()],
                publish: vec![
                    PortMapping {
                        host_ip: Ipv4Addr::UNSPECIFIED.into(),
                        host_port: 8080,
                        container_port: 80,
                        proto: Proto::Tcp,
                        any_family: true,
                    },
                    PortMapping {
                        host_ip: Ipv4Addr::LOCALHOST.into(),
                        host_port: 5353,
                        container_port: 53,
                        proto: Proto::Udp,
                        any_family: false,
                    },
                ],
            }
        );
        // Aliases as the conventions give them: a plain list.
        let listed = conf(json!({"name": "n", "type": "dataplane", "runtimeConfig": {"aliases": ["db"]}}));
        assert_eq!(wanted_names(&listed), vec!["db".to_string()]);
        // No runtimeConfig, no CNI_ARGS: nothing asked.
        let bare = conf(json!({"name": "n", "type": "dataplane"}));
        assert_eq!(super::wanted(&bare, None, "n").unwrap(), Wanted::default());
    }

    fn wanted_names(conf: &NetConf) -> Vec<String> {
        wanted(conf, None, "n").unwrap().names
    }

    #[test]
    fn asks_that_cannot_be_served_are_refused() {
        let with = |runtime: Value| conf(json!({"name": "n", "type": "dataplane", "runtimeConfig": runtime}));
        let cases = [
            (json!({"ips": ["10.0.0.5", "10.0.0.6"]}), 7, "2 IPv4 addresses"),
            (json!({"ips": ["fd00::5/64", "fd00::6/64"]}), 7, "2 IPv6 addresses"),
            (json!({"ips": ["ten"]}), 7, "not an address"),
            (json!({"mac": "01:00:00:00:00:01"}), 7, "multicast"),
            (json!({"aliases": "web"}), 7, "list of names"),
            (json!({"portMappings": [{"hostPort": 70000, "containerPort": 80}]}), 7, "hostPort 70000"),
            (json!({"portMappings": [{"hostPort": 80, "containerPort": 80, "protocol": "sctp"}]}), 2, "sctp"),
        ];
        for (runtime, code, says) in cases {
            let err = wanted(&with(runtime.clone()), None, "n").unwrap_err();
            assert_eq!(u32::from(&err), code, "{runtime}: {err:?}");
            assert!(err.details().contains(says), "{runtime}: {err:?}");
        }
        let err = parse_args(Some("K8S_POD_NAME=a;COLOUR=red")).unwrap_err();
        assert_eq!(u32::from(&err), 4);
        assert!(err.details().contains("\"COLOUR\"") && err.details().contains("IgnoreUnknown=1"), "{err:?}");
        // podman's --ip and --mac-address come in CNI_ARGS, beside the pod's name.
        let bare = conf(json!({"name": "n", "type": "dataplane"}));
        let podman = "IgnoreUnknown=1;K8S_POD_NAME=c3;MAC=02:42:0a:58:05:4d;IP=10.88.5.77";
        let asked = wanted(&bare, Some(podman), "n").unwrap();
        assert_eq!(asked.ip, Some(Ipv4Addr::new(10, 88, 5, 77)));
        assert_eq!(asked.mac, Some("02:42:0a:58:05:4d".parse().unwrap()));
        assert_eq!(asked.names, ["c3"]);
        let err = wanted(&bare, Some("IP=ten"), "n").unwrap_err();
        assert!(err.details().contains("CNI_ARGS IP"), "{err:?}");
    }

    #[test]
    fn an_address_of_each_family_may_be_asked_for() {
        let bare = conf(json!({"name": "n", "type": "dataplane"}));
        // podman's --ip and --ip6 together, in CNI_ARGS.
        let asked = wanted(&bare, Some("IP=10.88.5.77,fd00:88::77"), "n").unwrap();
        assert_eq!(asked.ip, Some(Ipv4Addr::new(10, 88, 5, 77)));
        assert_eq!(asked.ip6, Some("fd00:88::77".parse().unwrap()));
        let capability =
            conf(json!({"name": "n", "type": "dataplane", "runtimeConfig": {"ips": ["fd00:88::9/64"]}}));
        let asked = wanted(&capability, None, "n").unwrap();
        assert_eq!((asked.ip, asked.ip6), (None, Some("fd00:88::9".parse().unwrap())));
    }

    fn added() -> CniAdded {
        CniAdded {
            endpoint_id: "e".repeat(64),
            host_veth: "veth0123abc".into(),
            host_mac: Some("0e:00:00:00:00:01".parse().unwrap()),
            mac: "02:42:0a:58:05:02".parse().unwrap(),
            ipv4: Some(api::CniAddedFamily {
                ip: Ipv4Addr::new(10, 88, 5, 2),
                prefix_len: 24,
                gateway: Some(Ipv4Addr::new(10, 88, 5, 1)),
            }),
            ipv6: None,
            default_route: true,
            mtu: None,
            nameservers: vec![Ipv4Addr::new(10, 88, 5, 1).into()],
            ports: vec![],
        }
    }

    #[test]
    fn a_first_plugins_result_has_both_interfaces_the_address_the_route_and_the_resolver() {
        let result = result_of(&added(), "eth0", "/run/netns/pod", None, None);
        let printed = serde_json::to_value(CNIResultWithVersion::new(
            rscni_plugin::version::SpecVersion::new(1, 1, 0),
            result,
        ))
        .unwrap();
        assert_eq!(
            printed,
            json!({
                "cniVersion": "1.1.0",
                "interfaces": [
                    {"name": "veth0123abc", "mac": "0e:00:00:00:00:01"},
                    {"name": "eth0", "mac": "02:42:0a:58:05:02", "sandbox": "/run/netns/pod"}
                ],
                "ips": [{"interface": 1, "address": "10.88.5.2/24", "gateway": "10.88.5.1"}],
                "routes": [{"dst": "0.0.0.0/0", "gw": "10.88.5.1"}],
                "dns": {"nameservers": ["10.88.5.1"]}
            })
        );
    }

    #[test]
    fn a_dual_stack_result_has_an_address_and_a_default_route_of_each_family() {
        let mut dual = added();
        dual.ipv6 = Some(api::CniAddedFamily {
            ip: "fd00:88:5::2".parse().unwrap(),
            prefix_len: 64,
            gateway: Some("fd00:88:5::1".parse().unwrap()),
        });
        let result = result_of(&dual, "eth0", "/run/netns/pod", None, None);
        let printed = serde_json::to_value(&result).unwrap();
        assert_eq!(
            printed["ips"],
            json!([
                {"interface": 1, "address": "10.88.5.2/24", "gateway": "10.88.5.1"},
                {"interface": 1, "address": "fd00:88:5::2/64", "gateway": "fd00:88:5::1"}
            ])
        );
        assert_eq!(
            printed["routes"],
            json!([{"dst": "0.0.0.0/0", "gw": "10.88.5.1"}, {"dst": "::/0", "gw": "fd00:88:5::1"}])
        );
    }

    #[test]
    fn an_ipv6_only_result_has_the_ipv6_address_route_and_resolver_alone() {
        let only6 = CniAdded {
            ipv4: None,
            ipv6: Some(api::CniAddedFamily {
                ip: "fd00:88:5::2".parse().unwrap(),
                prefix_len: 64,
                gateway: Some("fd00:88:5::1".parse().unwrap()),
            }),
            nameservers: vec!["fd00:88:5::1".parse().unwrap()],
            ..added()
        };
        let wire = serde_json::to_value(&only6).unwrap();
        assert!(wire.get("ip").is_none() && wire.get("gateway").is_none(), "no IPv4 fields: {wire}");
        assert_eq!(
            serde_json::from_value::<CniAdded>(wire).unwrap(),
            only6,
            "the daemon's answer round-trips"
        );
        let printed = serde_json::to_value(result_of(&only6, "eth0", "/run/netns/pod", None, None)).unwrap();
        assert_eq!(
            printed["ips"],
            json!([{"interface": 1, "address": "fd00:88:5::2/64", "gateway": "fd00:88:5::1"}])
        );
        assert_eq!(printed["routes"], json!([{"dst": "::/0", "gw": "fd00:88:5::1"}]));
        assert_eq!(printed["dns"]["nameservers"], json!(["fd00:88:5::1"]));
    }

    #[test]
    fn an_isolated_family_has_its_address_and_no_gateway_nor_route() {
        let mut isolated = added();
        isolated.ipv4 = isolated.ipv4.map(|v4| api::CniAddedFamily { gateway: None, ..v4 });
        isolated.ipv6 = Some(api::CniAddedFamily {
            ip: "fd00:88:5::2".parse().unwrap(),
            prefix_len: 64,
            gateway: Some("fd00:88:5::1".parse().unwrap()),
        });
        let wire = serde_json::to_value(&isolated).unwrap();
        assert_eq!(serde_json::from_value::<CniAdded>(wire).unwrap(), isolated, "round-trips");
        let printed =
            serde_json::to_value(result_of(&isolated, "eth0", "/run/netns/pod", None, None)).unwrap();
        assert_eq!(
            printed["ips"],
            json!([
                {"interface": 1, "address": "10.88.5.2/24"},
                {"interface": 1, "address": "fd00:88:5::2/64", "gateway": "fd00:88:5::1"}
            ])
        );
        assert_eq!(printed["routes"], json!([{"dst": "::/0", "gw": "fd00:88:5::1"}]), "IPv6's alone");
        assert_eq!(printed["dns"]["nameservers"], json!(["10.88.5.1"]), "the resolver stays");
    }

    #[test]
    fn ipv4_false_asks_for_an_ipv6_only_network_and_needs_ipv6() {
        let parsed = parse_config(&conf(
            json!({"name": "n", "type": "dataplane", "ipv4": false, "subnet6": "fd00:88::/64"}),
        ))
        .unwrap();
        assert_eq!((parsed.network.ipv4, parsed.network.ipv6), (Some(false), Some(true)));
        let err = parse_config(&conf(json!({"name": "n", "type": "dataplane", "ipv4": false}))).unwrap_err();
        assert!(err.details().contains("\"ipv6\": true"), "{err:?}");
        let both =
            json!({"name": "n", "type": "dataplane", "ipv4": false, "ipv6": true, "subnet": "10.0.0.0/24"});
        let err = parse_config(&conf(both)).unwrap_err();
        assert!(err.details().contains("drop them"), "{err:?}");
    }

    #[test]
    fn a_chained_result_keeps_the_previous_plugins_and_indexes_ours_after_them() {
        // The previous result of the spec's example (a bridge plugin's).
        let prev: CNIResult = serde_json::from_value(json!({
            "interfaces": [
                {"name": "cni0", "mac": "00:11:22:33:44:55"},
                {"name": "veth3243", "mac": "55:44:33:22:11:11"},
                {"name": "eth0", "mac": "99:88:77:66:55:44", "sandbox": "/var/run/netns/blue"}
            ],
            "ips": [{"address": "10.1.0.5/16", "gateway": "10.1.0.1", "interface": 2}],
            "routes": [{"dst": "0.0.0.0/0"}],
            "dns": {"nameservers": ["10.1.0.1"], "search": ["example.com"]}
        }))
        .unwrap();
        let mut ours = added();
        ours.default_route = false;
        let result = result_of(&ours, "net1", "/var/run/netns/blue", Some(prev.clone()), None);
        assert_eq!(result.interfaces[..3], prev.interfaces[..]);
        assert_eq!(result.interfaces[4].name, "net1");
        assert_eq!(result.ips[0], prev.ips[0]);
        assert_eq!(result.ips[1].interface, Some(4));
        assert_eq!(result.routes, prev.routes, "net1 takes no default route");
        let dns = result.dns.unwrap();
        assert_eq!(dns.nameservers, ["10.88.5.1", "10.1.0.1"]);
        assert_eq!(dns.search, Some(vec!["example.com".to_string()]));
    }

    #[test]
    fn the_daemons_errors_become_the_specs_codes() {
        let daemon = |kind| anyhow::Error::from(api::DaemonError::new(kind, "what went wrong"));
        let code = |kind, unreachable| u32::from(&error_of(&daemon(kind), unreachable));
        assert_eq!(code(ErrorKind::Invalid, Error::TryAgainLater), 7);
        assert_eq!(code(ErrorKind::Unknown, Error::TryAgainLater), 3);
        assert_eq!(code(ErrorKind::Broken, Error::TryAgainLater), CODE_BROKEN);
        assert_eq!(code(ErrorKind::Failed, Error::TryAgainLater), CODE_INTERNAL);
        assert_eq!(code(ErrorKind::Unreachable, Error::TryAgainLater), 11);
        assert_eq!(code(ErrorKind::Unreachable, Error::PluginNotAvailable), 50);
        // A kind survives the context the daemon adds on the way.
        let wrapped = daemon(ErrorKind::Invalid).context("network pods");
        assert_eq!(u32::from(&error_of(&wrapped, Error::TryAgainLater)), 7);
        assert_eq!(error_of(&wrapped, Error::TryAgainLater).details(), "network pods: what went wrong");
    }
}
