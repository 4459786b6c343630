//! Docker's network plugin front door: libnetwork's remote driver calls (HTTP POST and
//! JSON on a Unix socket, served with axum) onto our networks and endpoints. A Docker
//! network is one of our bridge networks (`docker-<12 digits of Docker's ID>`), made
//! from the pool Docker's IPAM gives; a Docker endpoint is settled at CreateEndpoint
//! (address, MAC), becomes one of our endpoints at Join (owner `docker:<EndpointID>`, a
//! veth whose inner end Docker moves into its sandbox and configures; settled, with
//! Docker's name for it and GRO for XDP, when the daemon sees it up there), publishes `-p`
//! at ProgramExternalConnectivity and goes at Leave and DeleteEndpoint, or, if Docker gave
//! it up while the daemon was away, a grace period after the next start. Docker's IDs map to
//! ours in the state (`State::docker`). Everything else (the veth, the map entries, the
//! reservations) is `endpoints`', `networks`' and `publishing`'s work, as for our `run`.
//! `ipam_driver` serves the IpamDriver calls (`--ipam-driver`) on the same socket.

mod ipam_driver;

use std::{collections::HashSet, net::Ipv6Addr, path::PathBuf, time::Duration};

use anyhow::{Context, Result, anyhow, bail};
use axum::{
    Router,
    body::Bytes,
    extract::{Path, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::post,
};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::net::{UnixListener, UnixStream};

use super::{
    Core, Shared,
    endpoints::{EndpointSpec, InterfaceRemoval},
};
use crate::{
    api::{DaemonError, ErrorKind, NetworkSpec},
    docker::{
        CONTENT_TYPE, CreateEndpoint, CreateNetwork, EndpointInterface, EndpointRef, InterfaceName, Join,
        JoinAnswer, NetworkRef, ProgramExternalConnectivity, WantedPort,
    },
    drivers, ipam,
    netlink::{CarrierEvents, Netlink},
    netns,
    ports::{self, Bind, PortMapping},
    state::{DockerEndpoint, Endpoint, MacAddr, Network, Owner},
};

/// Binds the plugin socket where Docker looks for it; a socket nobody answers on (left by
/// a daemon that died) is replaced.
pub(super) async fn bind(path: &std::path::Path) -> Result<UnixListener> {
    if UnixStream::connect(path).await.is_ok() {
        bail!(
            "another process serves Docker's plugin socket {}; stop it or give --docker-plugin=PATH another name",
            path.display()
        );
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let _ = std::fs::remove_file(path);
    UnixListener::bind(path).with_context(|| format!("binding Docker's plugin socket {}", path.display()))
}

/// Serves the plugin API until the daemon stops.
pub(super) async fn serve(core: Shared, listener: UnixListener, path: PathBuf) {
    let router = Router::new().route("/{*call}", post(answer)).with_state(core);
    if let Err(e) = axum::serve(listener, router).await {
        log::warn!("Docker's plugin socket {}: {e:#}", path.display());
    }
}

async fn answer(State(core): State<Shared>, Path(call): Path<String>, body: Bytes) -> Response {
    let (status, body) = match handle(&core, &call, &body).await {
        Ok(value) => (StatusCode::OK, value),
        Err(e) => {
            log::warn!("Docker's {call}: {e:#}");
            (StatusCode::INTERNAL_SERVER_ERROR, json!({ "Err": format!("dataplane: {e:#}") }))
        }
    };
    (status, [(header::CONTENT_TYPE, CONTENT_TYPE)], body.to_string()).into_response()
}

fn parse<T: DeserializeOwned>(call: &str, body: &[u8]) -> Result<T> {
    serde_json::from_slice(body).map_err(|e| anyhow!("malformed {call} request: {e}"))
}

async fn handle(core: &Shared, call: &str, body: &[u8]) -> Result<Value> {
    match call {
        "Plugin.Activate" => Ok(json!({ "Implements": ["NetworkDriver", "IpamDriver"] })),
        "NetworkDriver.GetCapabilities" => Ok(json!({ "Scope": "local", "ConnectivityScope": "local" })),
        "NetworkDriver.CreateNetwork" => core.lock().await.docker_create_network(parse(call, body)?).await,
        "NetworkDriver.DeleteNetwork" => core.lock().await.docker_delete_network(parse(call, body)?).await,
        "NetworkDriver.CreateEndpoint" => core.lock().await.docker_create_endpoint(parse(call, body)?),
        "NetworkDriver.EndpointOperInfo" => core.lock().await.docker_endpoint_info(parse(call, body)?),
        "NetworkDriver.Join" => core.lock().await.docker_join(parse(call, body)?).await,
        "NetworkDriver.ProgramExternalConnectivity" => {
            core.lock().await.docker_program(parse(call, body)?).await
        }
        "NetworkDriver.RevokeExternalConnectivity" => {
            core.lock().await.docker_revoke(parse(call, body)?).await
        }
        "NetworkDriver.Leave" => core.lock().await.docker_leave(parse(call, body)?).await,
        "NetworkDriver.DeleteEndpoint" => core.lock().await.docker_delete_endpoint(parse(call, body)?).await,
        "IpamDriver.GetCapabilities" => {
            Ok(json!({ "RequiresMACAddress": false, "RequiresRequestReplay": false }))
        }
        "IpamDriver.GetDefaultAddressSpaces" => Ok(json!({
            "LocalDefaultAddressSpace": ipam_driver::ADDRESS_SPACE,
            "GlobalDefaultAddressSpace": ipam_driver::ADDRESS_SPACE,
        })),
        "IpamDriver.RequestPool" => core.lock().await.docker_request_pool(parse(call, body)?).await,
        "IpamDriver.ReleasePool" => core.lock().await.docker_release_pool(parse(call, body)?),
        "IpamDriver.RequestAddress" => core.lock().await.docker_request_address(parse(call, body)?),
        "IpamDriver.ReleaseAddress" => core.lock().await.docker_release_address(parse(call, body)?),
        other => Err(DaemonError::new(
            ErrorKind::Invalid,
            format!("{other} is not served: dataplane implements NetworkDriver (local scope) and IpamDriver"),
        )
        .into()),
    }
}

fn invalid(message: String) -> anyhow::Error {
    DaemonError::new(ErrorKind::Invalid, message).into()
}

fn owner_of(endpoint_id: &str) -> Owner {
    Owner::Docker { endpoint_id: endpoint_id.to_string() }
}

impl Core {
    async fn docker_create_network(&mut self, request: CreateNetwork) -> Result<Value> {
        let id = &request.network_id;
        if self.state.docker.networks.contains_key(id) {
            return Ok(json!({}));
        }
        // Docker does not send the network's name, and its ID means little to the user.
        let wanted = request.parse().map_err(invalid)?;
        let name = format!("docker-{}", id.get(..12).unwrap_or(id));
        let spec = NetworkSpec {
            name: name.clone(),
            driver: "bridge".into(),
            subnet: Some(wanted.subnet),
            gateway: wanted.gateway,
            ip_range: None,
            ipv4: true,
            ipv6: wanted.ipv6,
            internal: wanted.internal,
            options: wanted.options,
            labels: [("com.docker.network.id".to_string(), id.clone())].into(),
        };
        // What the network refuses (an overlap, a gateway outside the subnet, an MTU) is
        // the user's `docker network create` to change.
        self.create_network(spec).await.map_err(|e| invalid(format!("{e:#}")))?;
        let ours = self.network(&name)?.id.clone();
        self.state.docker.networks.insert(id.clone(), ours);
        self.save()?;
        Ok(json!({}))
    }

    async fn docker_delete_network(&mut self, request: NetworkRef) -> Result<Value> {
        let Some(ours) = self.state.docker.networks.get(&request.network_id).cloned() else {
            // Deleted already (DeleteNetwork again after an error elsewhere).
            return Ok(json!({}));
        };
        // No longer Docker's, so that it may go; Docker's again should it stay.
        self.state.docker.networks.remove(&request.network_id);
        if let Some(net) = self.state.network_by_id(&ours).cloned()
            && let Err(e) = self.remove_network(&net.name).await
        {
            self.state.docker.networks.insert(request.network_id.clone(), ours);
            return Err(e);
        }
        self.state.docker.endpoints.retain(|_, e| e.network_id != ours);
        self.save()?;
        Ok(json!({}))
    }

    fn docker_network(&self, docker_id: &str) -> Result<Network> {
        let ours = self.state.docker.networks.get(docker_id).ok_or_else(|| {
            DaemonError::new(
                ErrorKind::Unknown,
                format!(
                    "network {docker_id} was not created through this plugin (or this daemon's state was reset); `docker network rm` it and create it again"
                ),
            )
        })?;
        Ok(self.network_by_id(ours)?.clone())
    }

    /// CreateEndpoint: takes the addresses Docker's IPAM gave and the MAC Docker gave, or
    /// chooses them (the network's next free IPv6 address; `02:42:` and the IPv4 address
    /// for the MAC, as Docker's bridge does) and returns what it chose.
    fn docker_create_endpoint(&mut self, request: CreateEndpoint) -> Result<Value> {
        let EndpointRef { network_id, endpoint_id } = &request.endpoint;
        let net = self.docker_network(network_id)?;
        let interface = request.interface.unwrap_or_default();
        let what = format!("endpoint {endpoint_id} on network {}", net.name);
        // Docker 20.10 cannot ask for an IPv6-only network (`--ipv4=false` is Docker 27's).
        let Some(v4) = net.plan() else {
            return Err(invalid(format!("{what}: the network has no IPv4; create it again with IPv4")));
        };
        let ip = interface.ipv4().map_err(|e| invalid(format!("{what}: {e}")))?;
        let given_ip6 = interface.ipv6().map_err(|e| invalid(format!("{what}: {e}")))?;
        let given_mac = interface.mac().map_err(|e| invalid(format!("{what}: {e}")))?;
        if let Some(existing) = self.state.docker.endpoints.get(endpoint_id) {
            if existing.ip == ip && given_ip6.is_none_or(|given| existing.ip6 == Some(given)) {
                return Ok(interface_answer(&net, given_mac, given_ip6, existing));
            }
            return Err(invalid(format!("{what} exists with address {}; delete it first", existing.ip)));
        }
        if !v4.subnet.contains(&ip) || ip == v4.gateway {
            return Err(invalid(format!(
                "{what}: address {ip} is not one of the network's ({}, gateway {}); let Docker's IPAM choose it",
                v4.subnet, v4.gateway
            )));
        }
        let taken = self.state.used_addresses(&net.id).contains(&ip)
            || self.state.docker.endpoints.values().any(|e| e.network_id == net.id && e.ip == ip);
        if taken {
            return Err(invalid(format!(
                "{what}: address {ip} is taken on the network; choose another --ip"
            )));
        }
        let ip6 = self.docker_ip6(&net, given_ip6).map_err(|e| invalid(format!("{what}: {e}")))?;
        let mac = given_mac.unwrap_or(MacAddr(ipam::mac_for(ip.into())));
        let settled = DockerEndpoint { network_id: net.id.clone(), ip, ip6, mac };
        let answer = interface_answer(&net, given_mac, given_ip6, &settled);
        self.state.docker.endpoints.insert(endpoint_id.clone(), settled);
        self.save()?;
        Ok(answer)
    }

    /// An endpoint's IPv6 address on a network with IPv6: the one Docker's IPAM gave, or
    /// the network's next free one; none on a network without IPv6.
    fn docker_ip6(&self, net: &Network, given: Option<Ipv6Addr>) -> Result<Option<Ipv6Addr>, String> {
        let Some(plan) = net.ipv6 else {
            return match given {
                Some(ip6) => Err(format!(
                    "IPv6 address {ip6} given, but the network has no IPv6; create it with --ipv6"
                )),
                None => Ok(None),
            };
        };
        let mut used = self.state.used_addresses6(&net.id);
        used.extend(
            self.state.docker.endpoints.values().filter(|e| e.network_id == net.id).filter_map(|e| e.ip6),
        );
        match given {
            Some(ip6) => plan.claim(ip6, &used),
            None => plan.allocate(&used),
        }
        .map(Some)
        .map_err(|e| e.to_string())
    }

    /// Join: a veth with both ends here, the inner one with the endpoint's MAC, for Docker
    /// to move into the sandbox and configure; its host side on the network's bridge and
    /// in the maps at once (they key on the host side, wherever the inner end goes).
    async fn docker_join(&mut self, request: Join) -> Result<Value> {
        let EndpointRef { network_id, endpoint_id } = &request.endpoint;
        let net = self.docker_network(network_id)?;
        let settled = self.state.docker.endpoints.get(endpoint_id).cloned().ok_or_else(|| {
            DaemonError::new(
                ErrorKind::Unknown,
                format!("endpoint {endpoint_id} was never created; create it first"),
            )
        })?;
        let owner = owner_of(endpoint_id);
        if let Some(joined) = self.state.endpoints.iter().find(|e| e.owner == owner) {
            return Err(invalid(format!(
                "endpoint {endpoint_id} has joined {} already; Leave it first",
                joined.netns.display()
            )));
        }
        // Docker's addresses are Docker's: a network of Docker's has no use for the
        // aliases of our DNS (Docker's embedded DNS answers for its containers).
        let endpoint = self
            .attach(EndpointSpec {
                network: &net,
                owner: owner.clone(),
                owner_name: &owner.to_string(),
                netns: std::path::Path::new(&request.sandbox_key),
                ifname: Endpoint::hand_over_name(endpoint_id),
                ip: Some(settled.ip),
                ip6: settled.ip6,
                mac: Some(settled.mac),
                aliases: vec![],
                publish: &[],
            })
            .await?;
        self.save()?;
        let answer = JoinAnswer {
            interface_name: InterfaceName { src_name: endpoint.ifname, dst_prefix: "eth".into() },
            gateway: match net.bridge_options.isolated(false) {
                true => None,
                false => Some(
                    net.gateway
                        .ok_or_else(|| invalid(format!("network {} has no IPv4 gateway", net.name)))?,
                ),
            },
            gateway_ipv6: net.ipv6.map(|v6| v6.gateway).filter(|_| !net.bridge_options.isolated(true)),
        };
        Ok(serde_json::to_value(answer)?)
    }

    /// ProgramExternalConnectivity: publishes `-p`'s ports, as our `run -p` does (the
    /// host address, the port or a free one of a range, reserved; a taken port refused).
    async fn docker_program(&mut self, request: ProgramExternalConnectivity) -> Result<Value> {
        let endpoint_id = &request.endpoint.endpoint_id;
        let wanted = request.ports().map_err(|e| invalid(format!("endpoint {endpoint_id}: {e}")))?;
        let joined = self.docker_joined(endpoint_id)?;
        if wanted.is_empty() {
            return Ok(json!({}));
        }
        let mappings = wanted.iter().map(free_port_of_range).collect::<Result<Vec<_>>>()?;
        self.publish_later(&joined.id, &joined.owner.to_string(), &mappings).await?;
        self.save()?;
        Ok(json!({}))
    }

    async fn docker_revoke(&mut self, request: EndpointRef) -> Result<Value> {
        let Ok(joined) = self.docker_joined(&request.endpoint_id) else {
            return Ok(json!({}));
        };
        self.unpublish_all(&joined.id).await?;
        if let Err(e) = self.sync_firewall() {
            log::warn!("unpublishing the ports of docker:{}: {e:#}", request.endpoint_id);
        }
        self.save()?;
        Ok(json!({}))
    }

    /// EndpointOperInfo: what `docker network inspect` cannot show of it otherwise: the
    /// host side, and the ports published (Docker shows none for a plugin's network).
    fn docker_endpoint_info(&self, request: EndpointRef) -> Result<Value> {
        let Ok(endpoint) = self.docker_joined(&request.endpoint_id) else {
            return Ok(json!({ "Value": {} }));
        };
        let ports: Vec<String> = endpoint.ports.iter().map(ToString::to_string).collect();
        Ok(json!({ "Value": {
            "com.dataplane.host_veth": endpoint.host_veth,
            "com.dataplane.ports": ports.join(", "),
        } }))
    }

    /// Leave: the endpoint's ports, map entries, veth and flows go; Docker's record of it
    /// stays until DeleteEndpoint. Leaving an endpoint that never joined is no error.
    async fn docker_leave(&mut self, request: EndpointRef) -> Result<Value> {
        self.docker_detach(&request.endpoint_id).await?;
        Ok(json!({}))
    }

    async fn docker_delete_endpoint(&mut self, request: EndpointRef) -> Result<Value> {
        self.docker_detach(&request.endpoint_id).await?;
        if self.state.docker.endpoints.remove(&request.endpoint_id).is_some() {
            self.save()?;
        }
        Ok(json!({}))
    }

    async fn docker_detach(&mut self, endpoint_id: &str) -> Result<()> {
        let owner = owner_of(endpoint_id);
        let Some(endpoint) = self.state.endpoints.iter().find(|e| e.owner == owner).cloned() else {
            return Ok(());
        };
        self.detach(&endpoint, InterfaceRemoval::Now).await?;
        if !endpoint.ports.is_empty()
            && let Err(e) = self.sync_firewall()
        {
            log::warn!("removing {}: {e:#}", endpoint.owner);
        }
        self.save()
    }

    /// Removes an endpoint whose sandbox went while the daemon was away: Docker removed
    /// its container then, and gave up on a Leave and DeleteEndpoint that found no one
    /// (it forgets the endpoint, and its IPAM may hand the address out again).
    pub(super) async fn docker_sandbox_gone(&mut self, endpoint: &Endpoint) -> Result<()> {
        let Owner::Docker { endpoint_id } = &endpoint.owner else {
            return Ok(());
        };
        self.detach(endpoint, InterfaceRemoval::Now).await?;
        self.state.docker.endpoints.remove(endpoint_id);
        Ok(())
    }

    /// Settles the endpoint whose host side is `host_veth` once Docker has its inner end
    /// up in the sandbox: records the name Docker gave it there (`eth<N>`), and connects it
    /// again, now that GRO can start its NAPI, so that XDP serves its published ports.
    /// Anything else (another link, an endpoint settled already, an inner end still here
    /// or down) is left as it is.
    pub(super) async fn docker_settle(&mut self, host_veth: &str) -> Result<()> {
        let Some(mut endpoint) =
            self.state.endpoints.iter().find(|e| e.host_veth == host_veth && e.awaits_hand_over()).cloned()
        else {
            return Ok(());
        };
        let Some(peer) = self.netlink.veth_peer(host_veth).await? else {
            return Ok(());
        };
        if !peer.elsewhere || !netns::is_namespace(&endpoint.netns) {
            return Ok(());
        }
        let sandbox = Netlink::connect_in(&endpoint.netns)?;
        let Some(name) = sandbox.up_link_name(peer.index).await? else {
            return Ok(());
        };
        log::info!("{}: Docker has its interface up as {name}", endpoint.owner);
        endpoint.ifname = name;
        let net = self.network_by_id(&endpoint.network_id)?.clone();
        let publishes = !endpoint.ports.is_empty();
        drivers::connect(&self.netlink, &mut self.datapath, &net, &endpoint, publishes).await?;
        self.record(&endpoint);
        self.save()
    }

    /// What may be stale of Docker's at start: endpoints Docker created that have not
    /// joined (Docker forgot them if its DeleteEndpoint failed while we were away), and
    /// joined ones whose interface Docker has not taken into a sandbox that does not
    /// exist (Docker may be about to; or it gave up the container while we were away).
    pub(super) fn docker_stale_candidates(&self) -> Vec<String> {
        let joined: HashSet<&str> = self
            .state
            .endpoints
            .iter()
            .filter(|e| !e.awaits_hand_over() || netns::is_namespace(&e.netns))
            .filter_map(|e| match &e.owner {
                Owner::Docker { endpoint_id } => Some(endpoint_id.as_str()),
                _ => None,
            })
            .collect();
        self.state.docker.endpoints.keys().filter(|id| !joined.contains(id.as_str())).cloned().collect()
    }

    /// Removes the candidates (`docker_stale_candidates`) still stale: created and never
    /// joined, or joined and still not taken into an existing sandbox. Docker makes
    /// either step within seconds of the one before (and retries a call for 30 s while
    /// the plugin is away), so after the grace period they are left-overs.
    pub(super) async fn docker_remove_stale(&mut self, candidates: &[String]) -> Result<()> {
        let mut removed = 0;
        for endpoint_id in candidates {
            let owner = owner_of(endpoint_id);
            match self.state.endpoints.iter().find(|e| e.owner == owner).cloned() {
                Some(joined) if joined.awaits_hand_over() && !netns::is_namespace(&joined.netns) => {
                    log::info!("{owner}: Docker never took its interface into a sandbox; removing it");
                    self.docker_sandbox_gone(&joined).await.with_context(|| format!("removing {owner}"))?;
                }
                Some(_) => continue,
                None if self.state.docker.endpoints.remove(endpoint_id).is_some() => {
                    log::info!("{owner}: created by Docker and never joined; forgetting it");
                }
                None => continue,
            }
            removed += 1;
        }
        if removed > 0 {
            if let Err(e) = self.sync_firewall() {
                log::warn!("removing stale Docker endpoints: {e:#}");
            }
            self.save()?;
        }
        Ok(())
    }

    /// A Docker endpoint that has joined a sandbox: one of ours.
    fn docker_joined(&self, endpoint_id: &str) -> Result<Endpoint> {
        let owner = owner_of(endpoint_id);
        self.state.endpoints.iter().find(|e| e.owner == owner).cloned().ok_or_else(|| {
            DaemonError::new(
                ErrorKind::Unknown,
                format!("endpoint {endpoint_id} has not joined a sandbox; Join it first"),
            )
            .into()
        })
    }
}

/// Settles Docker's endpoints as their inner ends come up in their sandboxes (the host
/// side gains a carrier then), whenever Docker does it: at once for `network connect`,
/// only when the container starts for `docker run` (after ProgramExternalConnectivity).
pub(super) async fn watch_hand_overs(core: Shared, mut carriers: CarrierEvents) {
    while let Some(link) = carriers.next().await {
        if let Err(e) = core.lock().await.docker_settle(&link).await {
            log::warn!("settling the Docker endpoint of {link}: {e:#}");
        }
    }
    log::warn!("link changes are no longer watched: Docker's published ports stay on tc");
}

/// Removes, after `grace`, what was stale of Docker's at start (`docker_stale_candidates`).
pub(super) async fn remove_stale_later(core: Shared, candidates: Vec<String>, grace: Duration) {
    if candidates.is_empty() {
        return;
    }
    tokio::time::sleep(grace).await;
    if let Err(e) = core.lock().await.docker_remove_stale(&candidates).await {
        log::warn!("removing stale Docker endpoints: {e:#}");
    }
}

/// CreateEndpoint's answer: what Docker did not give and we chose (the MAC, the IPv6
/// address with the subnet's prefix); Docker refuses a value it gave sent back.
fn interface_answer(
    net: &Network,
    given_mac: Option<MacAddr>,
    given_ip6: Option<Ipv6Addr>,
    settled: &DockerEndpoint,
) -> Value {
    let chosen = EndpointInterface {
        mac_address: if given_mac.is_none() { settled.mac.to_string() } else { String::new() },
        address_ipv6: match (given_ip6, net.ipv6.zip(settled.ip6)) {
            (None, Some((v6, ip6))) => format!("{ip6}/{}", v6.subnet.prefix_len()),
            _ => String::new(),
        },
        ..Default::default()
    };
    if chosen.mac_address.is_empty() && chosen.address_ipv6.is_empty() {
        json!({})
    } else {
        json!({ "Interface": chosen })
    }
}

/// The mapping to publish for a wanted port: a range (`-p 8000-8010:80`) takes its first
/// port no socket holds; a single port, or none (any free port), is left to publishing,
/// which refuses a taken one.
fn free_port_of_range(wanted: &WantedPort) -> Result<PortMapping> {
    let mapping = wanted.mapping;
    if wanted.host_port_end <= mapping.host_port {
        return Ok(mapping);
    }
    // A port without an address is free when both families' are: publishing holds both
    // where the network has IPv6.
    let bind = if mapping.any_family { Bind::BothFamilies } else { Bind::Address(mapping.host_ip) };
    (mapping.host_port..=wanted.host_port_end)
        .find(|&port| ports::reserve(bind, port, mapping.proto).is_ok())
        .map(|host_port| PortMapping { host_port, ..mapping })
        .ok_or_else(|| {
            invalid(format!(
                "-p {}:{}-{}:{}/{}: every host port of the range is taken; choose another range",
                mapping.host_ip,
                mapping.host_port,
                wanted.host_port_end,
                mapping.container_port,
                mapping.proto
            ))
        })
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    #[test]
    fn the_hand_over_name_fits_the_kernel_and_differs_per_endpoint() {
        let a = Endpoint::hand_over_name(&"ab12".repeat(16));
        let b = Endpoint::hand_over_name(&"cd34".repeat(16));
        assert!(a.len() <= 15 && b.len() <= 15, "{a} {b}");
        assert_ne!(a, b);
        assert_eq!(a, "dpab12ab12ab1");
    }

    #[test]
    fn a_mac_and_an_ipv6_address_go_back_only_when_docker_gave_none() {
        let mac = MacAddr([2, 0x42, 10, 20, 0, 2]);
        let net = Network::sample("d", 20);
        let settled =
            DockerEndpoint { network_id: net.id.clone(), ip: Ipv4Addr::new(10, 20, 0, 2), ip6: None, mac };
        assert_eq!(interface_answer(&net, Some(mac), None, &settled), json!({}));
        assert_eq!(
            interface_answer(&net, None, None, &settled),
            json!({"Interface": {"MacAddress": "02:42:0a:14:00:02"}})
        );
        let mut dual = net.clone();
        dual.ipv6 =
            Some(crate::ipam::AddressPlanV6::new("fd00:20::/64".parse().unwrap(), None, None).unwrap());
        let ip6: Ipv6Addr = "fd00:20::2".parse().unwrap();
        let settled = DockerEndpoint { ip6: Some(ip6), ..settled };
        assert_eq!(
            interface_answer(&dual, Some(mac), None, &settled),
            json!({"Interface": {"AddressIPv6": "fd00:20::2/64"}})
        );
        assert_eq!(interface_answer(&dual, Some(mac), Some(ip6), &settled), json!({}));
    }

    #[test]
    fn a_host_port_range_takes_its_first_free_port() {
        // Hold a port, then ask for a range starting there, on loopback.
        let (held, port) =
            ports::reserve(Bind::Address(Ipv4Addr::LOCALHOST.into()), 0, ports::Proto::Tcp).unwrap();
        let mapping = PortMapping {
            host_ip: Ipv4Addr::LOCALHOST.into(),
            host_port: port,
            container_port: 80,
            proto: ports::Proto::Tcp,
            any_family: false,
        };
        let end = port.saturating_add(5);
        let chosen = free_port_of_range(&WantedPort { mapping, host_port_end: end }).unwrap();
        assert!(chosen.host_port > port && chosen.host_port <= end, "{chosen}");
        let single = free_port_of_range(&WantedPort { mapping, host_port_end: port }).unwrap();
        assert_eq!(single, mapping, "a single port is publishing's to refuse");
        drop(held);
    }
}
