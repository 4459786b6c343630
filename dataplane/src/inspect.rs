//! `inspect` and `ps` views in Docker's JSON shape, so that scripts written for
//! `docker inspect` read ours unchanged.

use jiff::Timestamp;
use serde_json::{Map, Value, json};

use crate::{
    api::ObjectKind,
    ports::PortMapping,
    state::{
        Container, DEFAULT_NETWORK, Endpoint, GATEWAY_MODE_IPV4, GATEWAY_MODE_IPV6, GatewayMode, Network,
        NetworkMode, State, Status,
    },
};

/// Go's zero time, which Docker writes for a moment that has not come (`FinishedAt` of a
/// container that never ended).
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// A moment as Docker writes it: RFC 3339 in UTC, with the nanoseconds it has.
fn moment(at: Option<Timestamp>) -> String {
    at.map_or(ZERO_TIME.to_string(), |at| at.to_string())
}

/// Every network as `docker network ls` has them: ours, then `host` and `none`.
pub fn networks(state: &State) -> Vec<Value> {
    let ours = state.networks.iter().map(|net| network(state, net));
    ours.chain(["host", "none"].into_iter().filter_map(|name| predefined_network(state, name))).collect()
}

/// The object `name_or_id` names, of `kind`: a container before a network, as Docker's
/// `inspect` looks.
pub fn find(state: &State, name_or_id: &str, kind: ObjectKind) -> Option<Value> {
    let container = || {
        let k = state.container(name_or_id)?;
        let own: Vec<_> = state.endpoints_of(&k.id).collect();
        Some(container(state, k, &own))
    };
    let net = || match state.network(name_or_id) {
        Some(net) => Some(network(state, net)),
        None => predefined_network(state, predefined_name(state, name_or_id)?),
    };
    match kind {
        ObjectKind::Container => container(),
        ObjectKind::Network => net(),
        ObjectKind::Any => container().or_else(net),
    }
}

/// `host` or `none`, named by name, ID or a unique prefix of its ID.
fn predefined_name<'a>(state: &State, name_or_id: &'a str) -> Option<&'a str> {
    let ids = [("host", &state.predefined.host), ("none", &state.predefined.none)];
    if let Some((name, _)) = ids.iter().find(|(name, id)| *name == name_or_id || *id == name_or_id) {
        return Some(name);
    }
    let mut prefixed = ids.iter().filter(|(_, id)| !name_or_id.is_empty() && id.starts_with(name_or_id));
    match (prefixed.next(), prefixed.next()) {
        (Some((name, _)), None) => Some(name),
        _ => None,
    }
}

/// A network as `docker network inspect` shows it. `Containers` holds every endpoint on
/// the network, whoever owns it: ours under their container's id, as Docker has them,
/// the others under their endpoint's id; `Owner` tells which (`dataplane`, `cni:<id>`).
pub fn network(state: &State, net: &Network) -> Value {
    let mut containers = Map::new();
    let names = state.owner_names();
    for endpoint in state.endpoints_on(&net.id) {
        let key = endpoint.owner.container_id().unwrap_or(&endpoint.id);
        containers.insert(
            key.to_string(),
            json!({
                "Name": names.of(&endpoint.owner),
                "EndpointID": endpoint.id,
                "MacAddress": endpoint.mac.to_string(),
                "IPv4Address": ipv4_address(net, endpoint),
                "IPv6Address": ipv6_address(net, endpoint),
                "Owner": endpoint.owner.to_string(),
                // The interface's name in its namespace (Docker's `eth<N>` once Docker
                // has it up in its sandbox).
                "Interface": endpoint.ifname,
                // Beyond Docker's shape: the one place that shows the ports of every
                // owner's endpoints (Docker shows none for a plugin's networks).
                "Ports": crate::ports::docker_ports(&endpoint.ports),
            }),
        );
    }
    // An isolated family shows no gateway, as on Docker: its address serves the resolver
    // alone, and nothing routes through it.
    let isolated = |ipv6| net.bridge_options.isolated(ipv6);
    let mut configs = vec![];
    if let Some(v4) = net.plan() {
        let mut config = json!({"Subnet": v4.subnet.to_string(), "Gateway": v4.gateway.to_string()});
        if isolated(false) {
            config.as_object_mut().expect("an object").remove("Gateway");
        }
        if let Some(range) = net.ip_range {
            config["IPRange"] = json!(range.to_string());
        }
        configs.push(config);
    }
    if let Some(v6) = net.ipv6 {
        let mut config = json!({"Subnet": v6.subnet.to_string(), "Gateway": v6.gateway.to_string()});
        if isolated(true) {
            config.as_object_mut().expect("an object").remove("Gateway");
        }
        if v6.range != v6.subnet {
            config["IPRange"] = json!(v6.range.to_string());
        }
        configs.push(config);
    }
    // The default network shows the settings Docker's `docker0` shows, under Docker's keys;
    // the others what they were created with, as on Docker.
    let options = match net.name == DEFAULT_NETWORK {
        true => json!({
            "com.docker.network.bridge.default_bridge": "true",
            "com.docker.network.bridge.enable_icc": net.bridge_options.icc.to_string(),
            "com.docker.network.bridge.enable_ip_masquerade": (!net.internal).to_string(),
            "com.docker.network.bridge.host_binding_ipv4": "0.0.0.0",
            "com.docker.network.bridge.name": net.bridge,
            "com.docker.network.driver.mtu": net.bridge_options.mtu.unwrap_or(1500).to_string(),
        }),
        false => {
            let mut options = json!(net.options);
            // Docker's overlay driver shows its VXLAN identifiers under this key.
            if let Some(vni) = net.vni {
                options["com.docker.network.driver.overlay.vxlanid_list"] = json!(vni.to_string());
            }
            // A family not in NAT mode shows under Docker's key, whichever name created it.
            let modes = &net.bridge_options;
            for (key, mode) in
                [(GATEWAY_MODE_IPV4, modes.gateway_mode_ipv4), (GATEWAY_MODE_IPV6, modes.gateway_mode_ipv6)]
            {
                if mode != GatewayMode::Nat {
                    options[key] = json!(mode.name());
                }
            }
            options
        }
    };
    docker_network(
        &net.name,
        &net.id,
        Some(net.created),
        &net.driver,
        json!({"Driver": "default", "Options": null, "Config": configs}),
        net.plan().is_some(),
        net.ipv6.is_some(),
        net.internal,
        containers,
        options,
        json!(net.labels),
    )
}

/// The `host` or `none` network (`driver` `host` or `null`) as Docker shows it: no
/// addresses; the containers run in that mode.
pub fn predefined_network(state: &State, name: &str) -> Option<Value> {
    let (id, driver, mode) = match name {
        "host" => (&state.predefined.host, "host", NetworkMode::Host),
        "none" => (&state.predefined.none, "null", NetworkMode::None),
        _ => return None,
    };
    let containers: Map<String, Value> = state
        .containers
        .iter()
        .filter(|k| k.network_mode == mode && k.is_running())
        .map(|k| {
            let endpoint = json!({
                "Name": k.name,
                // No endpoint of ours: the host's own interfaces, or none.
                "EndpointID": "",
                "MacAddress": "",
                "IPv4Address": "",
                "IPv6Address": "",
            });
            (k.id.clone(), endpoint)
        })
        .collect();
    let ipam = json!({"Driver": "default", "Options": null, "Config": []});
    Some(docker_network(name, id, None, driver, ipam, true, false, false, containers, json!({}), json!({})))
}

/// Docker's network inspect shape around what differs from one network to another.
#[allow(clippy::too_many_arguments)]
fn docker_network(
    name: &str,
    id: &str,
    created: Option<Timestamp>,
    driver: &str,
    ipam: Value,
    ipv4: bool,
    ipv6: bool,
    internal: bool,
    containers: Map<String, Value>,
    options: Value,
    labels: Value,
) -> Value {
    json!({
        "Name": name,
        "Id": id,
        "Created": moment(created),
        // Docker's word for a network every host of the store shares.
        "Scope": if driver == crate::store::OVERLAY_DRIVER { "global" } else { "local" },
        "Driver": driver,
        "EnableIPv4": ipv4,
        "EnableIPv6": ipv6,
        "IPAM": ipam,
        "Internal": internal,
        "Attachable": false,
        "Ingress": false,
        "ConfigFrom": {"Network": ""},
        "ConfigOnly": false,
        "Containers": containers,
        "Options": options,
        "Labels": labels,
    })
}

/// A container's gateway of one family as `inspect` shows it: "" without one, or where the
/// family is isolated (no default route).
fn gateway(gateway: Option<impl std::fmt::Display>, isolated: bool) -> String {
    gateway.filter(|_| !isolated).map_or(String::new(), |g| g.to_string())
}

/// An endpoint's IPv4 address with its prefix, as `network inspect` shows it ("" without).
fn ipv4_address(net: &Network, endpoint: &Endpoint) -> String {
    match (net.subnet, endpoint.ip) {
        (Some(subnet), Some(ip)) => format!("{ip}/{}", subnet.prefix_len()),
        _ => String::new(),
    }
}

/// An endpoint's IPv6 address with its prefix, as `network inspect` shows it ("" without).
fn ipv6_address(net: &Network, endpoint: &Endpoint) -> String {
    match (net.ipv6, endpoint.ip6) {
        (Some(v6), Some(ip)) => format!("{ip}/{}", v6.subnet.prefix_len()),
        _ => String::new(),
    }
}

/// A container as `docker inspect` shows it; `endpoints` are its own, in the order it
/// joined their networks.
pub fn container(state: &State, container: &Container, endpoints: &[&Endpoint]) -> Value {
    let mut networks = Map::new();
    // Docker's top-level address fields are those of the default network, empty elsewhere.
    let mut default_endpoint = json!({
        "EndpointID": "", "Gateway": "", "IPAddress": "", "IPPrefixLen": 0, "MacAddress": "",
        "IPv6Gateway": "", "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0,
    });
    for endpoint in endpoints {
        let Some(net) = state.network_by_id(&endpoint.network_id) else {
            continue;
        };
        // What the embedded DNS answers for this container there (none on the default).
        let mut dns_names = vec![];
        if net.name != DEFAULT_NETWORK && crate::dns::has_resolver(&net.driver) {
            dns_names.extend([
                container.name.clone(),
                container.id[..12].to_string(),
                container.hostname.clone(),
            ]);
            dns_names.extend(endpoint.aliases.iter().cloned());
            dns_names.dedup();
        }
        let address = json!({
            "EndpointID": endpoint.id,
            "Gateway": gateway(net.gateway, net.bridge_options.isolated(false)),
            "IPAddress": endpoint.ip.map_or(String::new(), |ip| ip.to_string()),
            "IPPrefixLen": net.subnet.map_or(0, |s| s.prefix_len()),
            "MacAddress": endpoint.mac.to_string(),
            "IPv6Gateway": gateway(net.ipv6.map(|v6| v6.gateway), net.bridge_options.isolated(true)),
            "GlobalIPv6Address": endpoint.ip6.map_or(String::new(), |ip| ip.to_string()),
            "GlobalIPv6PrefixLen": net.ipv6.map_or(0, |v6| v6.subnet.prefix_len()),
        });
        if net.name == DEFAULT_NETWORK {
            default_endpoint = address.clone();
        }
        let mut settings = endpoint_settings(net, aliases(net, &endpoint.aliases), address);
        settings["DNSNames"] = json!(dns_names);
        settings["HostInterface"] = json!(endpoint.host_veth);
        networks.insert(net.name.clone(), settings);
    }
    // A stopped container holds no endpoint: its networks show without an address, as
    // on Docker.
    for wanted in &container.networks {
        let Some(net) = state.network_by_id(&wanted.network_id) else { continue };
        if !networks.contains_key(&net.name) {
            let address = json!({
                "EndpointID": "", "Gateway": "", "IPAddress": "", "IPPrefixLen": 0, "MacAddress": "",
            });
            networks.insert(net.name.clone(), endpoint_settings(net, aliases(net, &wanted.aliases), address));
        }
    }
    let network_mode = match &container.network_mode {
        NetworkMode::Bridge => container
            .networks
            .first()
            .and_then(|a| state.network_by_id(&a.network_id))
            .map_or("bridge".to_string(), |n| n.name.clone()),
        NetworkMode::Host => "host".to_string(),
        NetworkMode::None => "none".to_string(),
        NetworkMode::Container { id } => format!("container:{id}"),
    };
    let predefined = match container.network_mode {
        NetworkMode::Host => Some(&state.predefined.host),
        NetworkMode::None => Some(&state.predefined.none),
        _ => None,
    };
    if let Some(network_id) = predefined {
        networks.insert(
            network_mode.clone(),
            json!({
                "IPAMConfig": null, "Links": null, "Aliases": null, "NetworkID": network_id,
                "EndpointID": "", "Gateway": "", "IPAddress": "", "IPPrefixLen": 0, "IPv6Gateway": "",
                "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0, "MacAddress": "", "DriverOpts": null,
            }),
        );
    }
    let ports: Vec<_> = endpoints.iter().flat_map(|e| e.ports.iter().copied()).collect();
    let asked: Vec<PortMapping> = container.networks.iter().flat_map(|a| a.publish.iter().copied()).collect();
    let (status, running, pid, exit_code, error) = match &container.status {
        Status::Created => ("created", false, 0, 0, ""),
        Status::Running { pid, .. } => ("running", true, *pid, 0, ""),
        Status::Exited { code } => ("exited", false, 0, code.unwrap_or(-1), ""),
        Status::Dead { reason } => ("dead", false, 0, -1, reason.as_str()),
    };
    let mut config = json!({
        "Hostname": container.hostname,
        "Cmd": container.command,
        "Env": crate::process::container_env(&container.hostname, &container.env)
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>(),
        "WorkingDir": container.workdir.as_ref().map_or(String::new(), |d| d.display().to_string()),
        "Labels": {},
    });
    // Docker leaves `ExposedPorts` out when there is none.
    if !asked.is_empty() {
        config["ExposedPorts"] =
            asked.iter().map(|m| (format!("{}/{}", m.container_port, m.proto), json!({}))).collect();
    }
    let mut network_settings = json!({
        "SandboxKey": container.netns,
        "Networks": networks,
        "Ports": crate::ports::docker_ports(&ports),
    });
    for (key, value) in default_endpoint.as_object().into_iter().flatten() {
        network_settings[key] = value.clone();
    }
    json!({
        "Id": container.id,
        "Name": format!("/{}", container.name),
        "Created": moment(Some(container.created)),
        "Path": container.command.first(),
        "Args": container.command.get(1..).unwrap_or_default(),
        "State": {
            "Status": status,
            "Running": running,
            "Paused": false,
            "Restarting": false,
            "OOMKilled": false,
            "Dead": status == "dead",
            "Pid": pid,
            "ExitCode": exit_code,
            "Error": error,
            "StartedAt": moment(container.started_at),
            "FinishedAt": moment(container.finished_at),
        },
        "Config": config,
        "LogPath": container.log.as_ref().map_or(String::new(), |p| p.display().to_string()),
        "HostConfig": {
            "AutoRemove": container.auto_remove,
            "NetworkMode": network_mode,
            "PortBindings": port_bindings(&asked),
        },
        "NetworkSettings": network_settings,
        "HostsPath": container.etc_dir.join("hosts"),
        "ResolvConfPath": container.etc_dir.join("resolv.conf"),
        "EtcDir": container.etc_dir,
    })
}

/// A container's settings on one network, in Docker's shape, around its address fields.
fn endpoint_settings(net: &Network, aliases: Value, address: Value) -> Value {
    let mut settings = json!({
        "IPAMConfig": null,
        "Links": null,
        "Aliases": aliases,
        "NetworkID": net.id,
        "IPv6Gateway": "",
        "GlobalIPv6Address": "",
        "GlobalIPv6PrefixLen": 0,
        "DriverOpts": null,
    });
    for (key, value) in address.as_object().into_iter().flatten() {
        settings[key] = value.clone();
    }
    settings
}

/// `Aliases` as Docker writes them: `null` on the default network, which takes none.
fn aliases(net: &Network, aliases: &[String]) -> Value {
    match net.name == DEFAULT_NETWORK {
        true => Value::Null,
        false => json!(aliases),
    }
}

/// Docker's `HostConfig.PortBindings`: the ports as asked (`-p`), before any was chosen:
/// an empty `HostIp` for any address and an empty `HostPort` for any free port.
fn port_bindings(asked: &[PortMapping]) -> Value {
    let mut bindings = Map::new();
    for m in asked {
        let binding = json!({
            // `-p 8080:80` asked for no address; `0.0.0.0` and `[::]` are asked for.
            "HostIp": if m.any_family { String::new() } else { m.host_ip.to_string() },
            "HostPort": if m.host_port == 0 { String::new() } else { m.host_port.to_string() },
        });
        let key = format!("{}/{}", m.container_port, m.proto);
        match bindings.get_mut(&key) {
            Some(Value::Array(list)) => list.push(binding),
            _ => {
                bindings.insert(key, json!([binding]));
            }
        }
    }
    Value::Object(bindings)
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::{
        ports::Proto,
        state::{Attachment, MacAddr, Owner, new_id},
    };

    /// The default network, `web`, and a container `app` on both, publishing a port.
    fn state_with_app() -> (State, String) {
        let mut state = State::default();
        let bridge = Network::sample(DEFAULT_NETWORK, 17);
        let web = Network::sample("web", 1);
        let publish = PortMapping {
            host_ip: Ipv4Addr::UNSPECIFIED.into(),
            host_port: 8080,
            container_port: 80,
            proto: Proto::Tcp,
            any_family: true,
        };
        let mut app: Container = serde_json::from_value(json!({
            "id": new_id(), "name": "app", "hostname": "app", "netns": "/run/netns/app", "etc_dir": "/tmp/app",
            "command": ["sleep", "100"], "detached": true, "auto_remove": false,
            "status": {"state": "running", "pid": 7, "start_time": 1}, "created": "2026-11-30T03:26:04.123456789Z",
        }))
        .unwrap();
        app.networks = [(&bridge, vec![publish]), (&web, vec![])]
            .into_iter()
            .map(|(net, publish)| Attachment {
                network_id: net.id.clone(),
                ifname: "eth0".into(),
                ip: None,
                ip6: None,
                mac: None,
                aliases: vec!["api".into()],
                publish,
            })
            .collect();
        for (i, net) in [&bridge, &web].into_iter().enumerate() {
            state.endpoints.push(Endpoint {
                id: new_id(),
                owner: Owner::Container { id: app.id.clone() },
                netns: app.netns.clone(),
                ifname: format!("eth{i}"),
                network_id: net.id.clone(),
                ip: Some(Ipv4Addr::new(10, net.subnet.unwrap().addr().octets()[1], 0, 2)),
                ip6: None,
                mac: MacAddr([2, 0x42, 0, 0, 0, i as u8]),
                host_veth: format!("veth{i}"),
                aliases: if i == 0 { vec![] } else { vec!["api".into()] },
                bridge: 0,
                ports: if i == 0 { vec![publish] } else { vec![] },
            });
        }
        let id = app.id.clone();
        state.networks.push(bridge);
        state.networks.push(web);
        state.containers.push(app);
        (state, id)
    }

    #[test]
    fn times_are_rfc3339_with_nanoseconds_and_gos_zero_when_none() {
        assert_eq!(
            moment(Some("2026-11-30T03:26:04.123456789Z".parse().unwrap())),
            "2026-11-30T03:26:04.123456789Z"
        );
        assert_eq!(moment(None), "0001-01-01T00:00:00Z");
    }

    #[test]
    fn containers_show_dockers_fields() {
        let (state, id) = state_with_app();
        let app = find(&state, "app", ObjectKind::Any).expect("found by name");
        assert_eq!(app["Id"], id.as_str());
        assert_eq!(app["Created"], "2026-11-30T03:26:04.123456789Z");
        let settings = &app["NetworkSettings"];
        assert_eq!(settings["IPAddress"], "10.17.0.2", "the default network's address on top, as Docker's");
        assert_eq!((settings["IPPrefixLen"].as_u64(), &settings["Gateway"]), (Some(24), &json!("10.17.0.1")));
        assert_eq!(settings["MacAddress"], "02:42:00:00:00:00");
        assert_eq!(settings["EndpointID"], settings["Networks"]["bridge"]["EndpointID"]);
        assert_eq!(
            settings["Networks"]["bridge"]["Aliases"],
            Value::Null,
            "the default network takes no alias"
        );
        assert_eq!(settings["Networks"]["web"]["Aliases"], json!(["api"]));
        assert_eq!(settings["Networks"]["web"]["EndpointID"].as_str().map(str::len), Some(64));
        assert_eq!(settings["Ports"], json!({"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}]}));
        let state_fields = &app["State"];
        for (field, value) in
            [("Paused", false), ("Restarting", false), ("OOMKilled", false), ("Dead", false)]
        {
            assert_eq!(state_fields[field], value, "State.{field}");
        }
        assert_eq!((&state_fields["Error"], &state_fields["FinishedAt"]), (&json!(""), &json!(ZERO_TIME)));
        assert_eq!(app["HostConfig"]["NetworkMode"], "bridge");
        assert_eq!(
            app["HostConfig"]["PortBindings"],
            json!({"80/tcp": [{"HostIp": "", "HostPort": "8080"}]})
        );
        assert_eq!(app["Config"]["ExposedPorts"], json!({"80/tcp": {}}));
        assert!(find(&state, "app", ObjectKind::Network).is_none(), "--type network looks at networks alone");
    }

    #[test]
    fn networks_show_dockers_fields_and_the_default_its_options() {
        let (state, id) = state_with_app();
        let bridge = find(&state, "bridge", ObjectKind::Any).expect("inspect finds networks too");
        assert_eq!(bridge["IPAM"]["Options"], Value::Null);
        assert_eq!((&bridge["Ingress"], &bridge["ConfigOnly"]), (&json!(false), &json!(false)));
        assert_eq!(bridge["ConfigFrom"], json!({"Network": ""}));
        assert_eq!(bridge["Options"]["com.docker.network.bridge.default_bridge"], "true");
        assert_eq!(bridge["Options"]["com.docker.network.bridge.enable_icc"], "true");
        assert_eq!(bridge["Options"]["com.docker.network.bridge.name"], "br-bridge");
        assert_eq!(bridge["Options"]["com.docker.network.driver.mtu"], "1500");
        assert_eq!(bridge["Containers"][&id]["EndpointID"].as_str().map(str::len), Some(64));
        let web = find(&state, "web", ObjectKind::Network).unwrap();
        assert_eq!(web["Options"], json!({}), "a created network shows what it was created with");
        let web_id = state.network("web").unwrap().id.clone();
        let mut state = state;
        let net = state.networks.get_mut(&web_id).unwrap();
        net.options.insert("gateway_mode_ipv4".into(), "routed".into());
        net.bridge_options.gateway_mode_ipv4 = GatewayMode::Routed;
        let web = find(&state, "web", ObjectKind::Network).unwrap();
        assert_eq!(web["Options"][GATEWAY_MODE_IPV4], "routed", "a routed family under Docker's key");
        assert_eq!(web["Options"].get(GATEWAY_MODE_IPV6), None, "nat, the default, as created");
        assert_eq!(web["Created"], "1970-01-01T00:00:00Z");
    }

    #[test]
    fn an_ipv6_only_network_and_its_containers_show_ipv6_alone() {
        let (mut state, id) = state_with_app();
        let web_id = state.network("web").unwrap().id.clone();
        let web = state.networks.get_mut(&web_id).unwrap();
        (web.subnet, web.gateway) = (None, None);
        web.ipv6 = Some(crate::ipam::AddressPlanV6::new("fd00:1::/64".parse().unwrap(), None, None).unwrap());
        let on_web = state.endpoints.iter().find(|e| e.network_id == web_id).unwrap().clone();
        state.endpoints.replace(Endpoint { ip: None, ip6: Some("fd00:1::2".parse().unwrap()), ..on_web });
        let net = find(&state, "web", ObjectKind::Network).unwrap();
        assert_eq!((&net["EnableIPv4"], &net["EnableIPv6"]), (&json!(false), &json!(true)));
        assert_eq!(
            net["IPAM"]["Config"],
            json!([{"Subnet": "fd00:1::/64", "Gateway": "fd00:1::1"}]),
            "the IPv6 entry only"
        );
        let shown = &net["Containers"][&id];
        assert_eq!((&shown["IPv4Address"], &shown["IPv6Address"]), (&json!(""), &json!("fd00:1::2/64")));
        let app = find(&state, "app", ObjectKind::Container).unwrap();
        let on = &app["NetworkSettings"]["Networks"]["web"];
        assert_eq!(
            (&on["IPAddress"], &on["IPPrefixLen"], &on["Gateway"]),
            (&json!(""), &json!(0), &json!("")),
            "no IPv4 address"
        );
        assert_eq!(
            (&on["GlobalIPv6Address"], &on["GlobalIPv6PrefixLen"], &on["IPv6Gateway"]),
            (&json!("fd00:1::2"), &json!(64), &json!("fd00:1::1"))
        );
        let bridge = find(&state, "bridge", ObjectKind::Network).unwrap();
        assert_eq!((&bridge["EnableIPv4"], &bridge["EnableIPv6"]), (&json!(true), &json!(false)));
    }

    #[test]
    fn an_isolated_family_shows_its_mode_and_no_gateway() {
        let (mut state, id) = state_with_app();
        let web_id = state.network("web").unwrap().id.clone();
        let web = state.networks.get_mut(&web_id).unwrap();
        web.internal = true;
        web.ipv6 = Some(crate::ipam::AddressPlanV6::new("fd00:1::/64".parse().unwrap(), None, None).unwrap());
        web.options.insert("gateway_mode_ipv4".into(), "isolated".into());
        web.bridge_options.gateway_mode_ipv4 = GatewayMode::Isolated;
        let net = find(&state, "web", ObjectKind::Network).unwrap();
        assert_eq!(net["Options"][GATEWAY_MODE_IPV4], "isolated", "under Docker's key: {}", net["Options"]);
        assert_eq!(net["Options"].get(GATEWAY_MODE_IPV6), None, "IPv6 stays in nat mode");
        assert_eq!(
            net["IPAM"]["Config"],
            json!([{"Subnet": "10.1.0.0/24"}, {"Subnet": "fd00:1::/64", "Gateway": "fd00:1::1"}]),
            "an isolated family has no gateway, as on Docker"
        );
        let app = find(&state, "app", ObjectKind::Container).unwrap();
        let on = &app["NetworkSettings"]["Networks"]["web"];
        assert_eq!((&on["Gateway"], &on["IPv6Gateway"]), (&json!(""), &json!("fd00:1::1")), "{on}");
        assert!(net["Containers"].get(&id).is_some());
    }

    #[test]
    fn host_and_none_are_listed_and_found_by_name_and_id() {
        let (state, _) = state_with_app();
        let names: Vec<_> =
            networks(&state).iter().map(|n| n["Name"].as_str().unwrap().to_string()).collect();
        assert_eq!(names, ["bridge", "web", "host", "none"]);
        let host = find(&state, "host", ObjectKind::Network).unwrap();
        assert_eq!((&host["Driver"], &host["IPAM"]["Config"]), (&json!("host"), &json!([])));
        let none = find(&state, &state.predefined.none[..10], ObjectKind::Network).expect("by an ID's start");
        assert_eq!((&none["Name"], &none["Driver"]), (&json!("none"), &json!("null")));
        assert!(find(&state, "nothing", ObjectKind::Any).is_none());
    }
}
