//! Our IPAM driver for Docker (`docker network create --ipam-driver dataplane`): pools of
//! subnets clear of our networks, of the other pools and of the host's routes, and their
//! addresses, the gateway first, given out as our own networks give theirs (the lowest
//! free one; `--ip` and `--gateway` honoured). The pools and their addresses are in the
//! state (`State::docker.pools`), so a restart never gives an address twice. It never
//! makes a network or an endpoint: the network driver does, with what this gave Docker.

use std::collections::BTreeSet;

use anyhow::Result;
use serde_json::{Value, json};

use super::invalid;
use crate::{
    api::{DaemonError, ErrorKind},
    daemon::Core,
    docker::{Release, RequestAddress, RequestPool},
    ipam::{self, AddressPlan},
    state::DockerPool,
};

/// The address spaces Docker asks for: ours has one, whatever the scope.
pub(super) const ADDRESS_SPACE: &str = "dataplane";

impl Core {
    pub(super) async fn docker_request_pool(&mut self, request: RequestPool) -> Result<Value> {
        let (wanted, range) = request.parse().map_err(invalid)?;
        let mut taken: Vec<_> = self.state.networks.iter().filter_map(|n| n.subnet).collect();
        taken.extend(self.state.docker.pools.values().map(|p| p.subnet));
        let routes = self.host_routes().await?;
        let subnet = match wanted {
            Some(subnet) => {
                if let Some(other) = taken.iter().chain(&routes).find(|t| ipam::overlaps(t, &subnet)) {
                    return Err(invalid(format!(
                        "--subnet {subnet} overlaps {other}, a network, pool or route of this host; choose another --subnet"
                    )));
                }
                subnet
            }
            None => {
                taken.extend(routes);
                ipam::pick_subnet(&taken).map_err(|e| invalid(e.to_string()))?
            }
        };
        // Checks the subnet and range as `network create` does.
        AddressPlan::new(subnet, None, range).map_err(|e| invalid(e.to_string()))?;
        let pool_id = subnet.to_string();
        let pool = DockerPool { subnet, range, gateway: None, addresses: BTreeSet::new() };
        self.state.docker.pools.insert(pool_id.clone(), pool);
        self.save()?;
        Ok(json!({ "PoolID": pool_id, "Pool": subnet.to_string(), "Data": {} }))
    }

    pub(super) fn docker_release_pool(&mut self, request: Release) -> Result<Value> {
        if self.state.docker.pools.remove(&request.pool_id).is_some() {
            self.save()?;
        }
        Ok(json!({}))
    }

    /// The gateway (asked for first: `--gateway`, else the subnet's first address), or an
    /// endpoint's address (`--ip`, else the lowest free one of the range).
    pub(super) fn docker_request_address(&mut self, request: RequestAddress) -> Result<Value> {
        let wanted = request.wanted().map_err(invalid)?;
        let pool = self.state.docker.pools.get_mut(&request.pool_id).ok_or_else(|| {
            DaemonError::new(
                ErrorKind::Unknown,
                format!(
                    "pool {} was not given by this IPAM driver; create the network again",
                    request.pool_id
                ),
            )
        })?;
        let pool_id = &request.pool_id;
        let fail = |e: ipam::IpamError| invalid(format!("pool {pool_id}: {e}"));
        let address = if request.for_gateway() {
            let plan = AddressPlan::new(pool.subnet, wanted, pool.range).map_err(fail)?;
            if pool.addresses.contains(&plan.gateway) {
                return Err(invalid(format!(
                    "pool {pool_id}: gateway {} is an endpoint's address; choose another --gateway",
                    plan.gateway
                )));
            }
            pool.gateway = Some(plan.gateway);
            plan.gateway
        } else {
            let plan = AddressPlan::new(pool.subnet, pool.gateway, pool.range).map_err(fail)?;
            let address = match wanted {
                Some(ip) => plan.claim(ip, &pool.addresses),
                None => plan.allocate(&pool.addresses),
            }
            .map_err(fail)?;
            pool.addresses.insert(address);
            address
        };
        let answer = json!({ "Address": format!("{address}/{}", pool.subnet.prefix_len()), "Data": {} });
        self.save()?;
        Ok(answer)
    }

    pub(super) fn docker_release_address(&mut self, request: Release) -> Result<Value> {
        let address = request.address().map_err(invalid)?;
        let Some(pool) = self.state.docker.pools.get_mut(&request.pool_id) else {
            return Ok(json!({}));
        };
        let released = match address {
            Some(ip) if pool.gateway == Some(ip) => pool.gateway.take().is_some(),
            Some(ip) => pool.addresses.remove(&ip),
            None => false,
        };
        if released {
            self.save()?;
        }
        Ok(json!({}))
    }
}
