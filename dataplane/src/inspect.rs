//! `inspect` and `ps` views in Docker's JSON shape, so that scripts written for
//! `docker inspect` read ours unchanged.

use serde_json::{Map, Value, json};

use crate::state::{Container, DEFAULT_NETWORK, Endpoint, Network, NetworkMode, State, Status};

fn rfc3339(secs: u64) -> String {
    // Civil date from days since the epoch (Howard Hinnant's algorithm), to avoid a
    // calendar dependency for one timestamp format.
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
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
                "IPv4Address": format!("{}/{}", endpoint.ip, net.subnet.prefix_len()),
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
    let mut config = json!({"Subnet": net.subnet.to_string(), "Gateway": net.gateway.to_string()});
    if let Some(range) = net.ip_range {
        config["IPRange"] = json!(range.to_string());
    }
    let mut configs = vec![config];
    if let Some(v6) = net.ipv6 {
        let mut config = json!({"Subnet": v6.subnet.to_string(), "Gateway": v6.gateway.to_string()});
        if v6.range != v6.subnet {
            config["IPRange"] = json!(v6.range.to_string());
        }
        configs.push(config);
    }
    json!({
        "Name": net.name,
        "Id": net.id,
        "Created": rfc3339(net.created),
        "Scope": "local",
        "Driver": net.driver,
        "EnableIPv4": true,
        "EnableIPv6": net.ipv6.is_some(),
        "IPAM": {"Driver": "default", "Options": {}, "Config": configs},
        "Internal": net.internal,
        "Attachable": false,
        "Containers": containers,
        "Options": net.options,
        "Labels": net.labels,
    })
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
        networks.insert(
            net.name.clone(),
            json!({
                "NetworkID": net.id,
                "EndpointID": endpoint.id,
                "Aliases": endpoint.aliases,
                "DNSNames": dns_names,
                "Gateway": net.gateway.to_string(),
                "IPAddress": endpoint.ip.to_string(),
                "IPPrefixLen": net.subnet.prefix_len(),
                "MacAddress": endpoint.mac.to_string(),
                "IPv6Gateway": net.ipv6.map_or(String::new(), |v6| v6.gateway.to_string()),
                "GlobalIPv6Address": endpoint.ip6.map_or(String::new(), |ip| ip.to_string()),
                "GlobalIPv6PrefixLen": net.ipv6.map_or(0, |v6| v6.subnet.prefix_len()),
                "HostInterface": endpoint.host_veth,
            }),
        );
    }
    // A stopped container holds no endpoint: its networks show without an address, as
    // on Docker.
    for wanted in &container.networks {
        let Some(net) = state.network_by_id(&wanted.network_id) else { continue };
        if !networks.contains_key(&net.name) {
            networks.insert(
                net.name.clone(),
                json!({
                    "NetworkID": net.id,
                    "EndpointID": "",
                    "Aliases": wanted.aliases,
                    "Gateway": "",
                    "IPAddress": "",
                    "IPPrefixLen": 0,
                    "MacAddress": "",
                }),
            );
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
    if matches!(container.network_mode, NetworkMode::Host | NetworkMode::None) {
        networks.insert(network_mode.clone(), json!({"NetworkID": "", "IPAddress": "", "IPPrefixLen": 0}));
    }
    let ports: Vec<_> = endpoints.iter().flat_map(|e| e.ports.iter().copied()).collect();
    let (status, running, pid, exit_code, error) = match &container.status {
        Status::Created => ("created", false, 0, 0, ""),
        Status::Running { pid, .. } => ("running", true, *pid, 0, ""),
        Status::Exited { code } => ("exited", false, 0, code.unwrap_or(-1), ""),
        Status::Dead { reason } => ("dead", false, 0, -1, reason.as_str()),
    };
    json!({
        "Id": container.id,
        "Name": format!("/{}", container.name),
        "Created": rfc3339(container.created),
        "State": {
            "Status": status,
            "Running": running,
            "Dead": status == "dead",
            "Pid": pid,
            "ExitCode": exit_code,
            "Error": error,
        },
        "Config": {
            "Hostname": container.hostname,
            "Cmd": container.command,
            "Env": crate::process::container_env(&container.hostname, &container.env)
                .into_iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>(),
            "WorkingDir": container.workdir.as_ref().map_or(String::new(), |d| d.display().to_string()),
        },
        "LogPath": container.log.as_ref().map_or(String::new(), |p| p.display().to_string()),
        "HostConfig": {"AutoRemove": container.auto_remove, "NetworkMode": network_mode},
        "NetworkSettings": {
            "SandboxKey": container.netns,
            "Networks": networks,
            "Ports": crate::ports::docker_ports(&ports),
        },
        "HostsPath": container.etc_dir.join("hosts"),
        "ResolvConfPath": container.etc_dir.join("resolv.conf"),
        "EtcDir": container.etc_dir,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn timestamps_are_rfc3339() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(1_795_000_000), "2026-11-18T11:06:40Z");
    }
}
