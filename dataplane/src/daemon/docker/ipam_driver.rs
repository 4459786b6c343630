//! Our IPAM driver for Docker (`docker network create --ipam-driver dataplane`): pools of
//! subnets clear of our networks, of the other pools and of the host's routes, and their
//! addresses, the gateway first, given out as our own networks give theirs (the lowest
//! free one; `--ip` and `--gateway` honoured). The pools and their addresses are in the
//! state (`State::docker.pools`), so a restart never gives an address twice. It never
//! makes a network or an endpoint: the network driver does, with what this gave Docker.

use std::{
    collections::BTreeSet,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use anyhow::Result;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde_json::{Value, json};

use super::invalid;
use crate::{
    api::{DaemonError, ErrorKind},
    daemon::Core,
    docker::{Release, RequestAddress, RequestPool},
    ipam::{self, AddressPlan, AddressPlanV6},
    state::DockerPool,
};

/// The address spaces Docker asks for: ours has one, whatever the scope.
pub(super) const ADDRESS_SPACE: &str = "dataplane";

impl Core {
    pub(super) async fn docker_request_pool(&mut self, request: RequestPool) -> Result<Value> {
        let (wanted, range) = request.parse().map_err(invalid)?;
        let subnet =
            if request.v6 { self.docker_pool_v6(wanted)? } else { self.docker_pool_v4(wanted).await? };
        // Checks the subnet and range as `network create` does.
        PoolPlan::new(subnet, None, range).map_err(invalid)?;
        let pool_id = subnet.to_string();
        let pool = DockerPool { subnet, range, gateway: None, addresses: BTreeSet::new() };
        self.state.docker.pools.insert(pool_id.clone(), pool);
        self.save()?;
        Ok(json!({ "PoolID": pool_id, "Pool": subnet.to_string(), "Data": {} }))
    }

    /// An IPv4 pool clear of our networks, of the other pools and of the host's routes.
    async fn docker_pool_v4(&self, wanted: Option<IpNet>) -> Result<IpNet> {
        let mut taken: Vec<_> = self.state.networks.iter().filter_map(|n| n.subnet).collect();
        taken.extend(self.docker_pools().filter_map(Ipv4Net::of));
        let routes = self.host_routes().await?;
        let subnet = match wanted {
            Some(IpNet::V4(subnet)) => {
                if let Some(other) = taken.iter().chain(&routes).find(|t| ipam::overlaps(t, &subnet)) {
                    return Err(overlap(&subnet, other));
                }
                subnet
            }
            Some(IpNet::V6(subnet)) => {
                unreachable!("RequestPool::parse gives IPv4 pools only without V6: {subnet}")
            }
            None => {
                taken.extend(routes);
                ipam::pick_subnet(&taken).map_err(|e| invalid(e.to_string()))?
            }
        };
        Ok(IpNet::V4(subnet))
    }

    /// An IPv6 pool clear of our networks' and the other pools' IPv6 subnets; without a
    /// `--subnet`, a /64 of the host's ULA pool, as `network create --ipv6` picks.
    fn docker_pool_v6(&self, wanted: Option<IpNet>) -> Result<IpNet> {
        let mut taken: Vec<_> =
            self.state.networks.iter().filter_map(|n| n.ipv6.map(|v6| v6.subnet)).collect();
        taken.extend(self.docker_pools().filter_map(Ipv6Net::of));
        let subnet = match wanted {
            Some(IpNet::V6(subnet)) => {
                if let Some(other) = taken.iter().find(|t| ipam::overlaps6(t, &subnet)) {
                    return Err(overlap(&subnet, other));
                }
                subnet
            }
            Some(IpNet::V4(subnet)) => {
                unreachable!("RequestPool::parse gives IPv6 pools only with V6: {subnet}")
            }
            None => ipam::pick_subnet6(self.ula_pool, &taken).map_err(|e| invalid(e.to_string()))?,
        };
        Ok(IpNet::V6(subnet))
    }

    fn docker_pools(&self) -> impl Iterator<Item = IpNet> + '_ {
        self.state.docker.pools.values().map(|p| p.subnet)
    }

    pub(super) fn docker_release_pool(&mut self, request: Release) -> Result<Value> {
        if self.state.docker.pools.remove(&request.pool_id).is_some() {
            self.save()?;
        }
        Ok(json!({}))
    }

    /// The gateway (asked for first: `--gateway`, else the subnet's first address), or an
    /// endpoint's address (`--ip`/`--ip6`, else the lowest free one of the range).
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
        let fail = |e: String| invalid(format!("pool {pool_id}: {e}"));
        let address = if request.for_gateway() {
            let gateway = PoolPlan::new(pool.subnet, wanted, pool.range).map_err(fail)?.gateway();
            if pool.addresses.contains(&gateway) {
                return Err(fail(format!(
                    "gateway {gateway} is an endpoint's address; choose another --gateway"
                )));
            }
            pool.gateway = Some(gateway);
            gateway
        } else {
            let plan = PoolPlan::new(pool.subnet, pool.gateway, pool.range).map_err(fail)?;
            let address = plan.address(wanted, &pool.addresses).map_err(fail)?;
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

fn overlap(subnet: &impl std::fmt::Display, other: &impl std::fmt::Display) -> anyhow::Error {
    invalid(format!(
        "--subnet {subnet} overlaps {other}, a network, pool or route of this host; choose another --subnet"
    ))
}

/// A pool's address plan, in the pool's family: the checks and the allocation of
/// `network create`'s plans.
enum PoolPlan {
    V4(AddressPlan),
    V6(AddressPlanV6),
}

impl PoolPlan {
    fn new(subnet: IpNet, gateway: Option<IpAddr>, range: Option<IpNet>) -> Result<Self, String> {
        match subnet {
            IpNet::V4(net) => AddressPlan::new(net, in_family(gateway, subnet)?, in_family(range, subnet)?)
                .map(Self::V4)
                .map_err(|e| e.to_string()),
            IpNet::V6(net) => AddressPlanV6::new(net, in_family(gateway, subnet)?, in_family(range, subnet)?)
                .map(Self::V6)
                .map_err(|e| e.to_string()),
        }
    }

    fn gateway(&self) -> IpAddr {
        match self {
            Self::V4(plan) => plan.gateway.into(),
            Self::V6(plan) => plan.gateway.into(),
        }
    }

    /// The address asked for, checked, or the lowest free one of the range.
    fn address(&self, wanted: Option<IpAddr>, used: &BTreeSet<IpAddr>) -> Result<IpAddr, String> {
        let fail = |e: ipam::IpamError| e.to_string();
        match self {
            Self::V4(plan) => {
                let used = used.iter().filter_map(|&ip| Ipv4Addr::of(ip)).collect();
                match in_family(wanted, plan.subnet.into())? {
                    None => plan.allocate(&used).map_err(fail),
                    Some(ip) => plan.claim(ip, &used).map_err(fail),
                }
                .map(IpAddr::V4)
            }
            Self::V6(plan) => {
                let used = used.iter().filter_map(|&ip| Ipv6Addr::of(ip)).collect();
                match in_family(wanted, plan.subnet.into())? {
                    None => plan.allocate(&used).map_err(fail),
                    Some(ip) => plan.claim(ip, &used).map_err(fail),
                }
                .map(IpAddr::V6)
            }
        }
    }
}

/// An address or a subnet of one family, taken from its either-family form.
trait OfFamily<Any>: Sized {
    fn of(any: Any) -> Option<Self>;
}

impl OfFamily<IpAddr> for Ipv4Addr {
    fn of(any: IpAddr) -> Option<Self> {
        if let IpAddr::V4(ip) = any { Some(ip) } else { None }
    }
}

impl OfFamily<IpAddr> for Ipv6Addr {
    fn of(any: IpAddr) -> Option<Self> {
        if let IpAddr::V6(ip) = any { Some(ip) } else { None }
    }
}

impl OfFamily<IpNet> for Ipv4Net {
    fn of(any: IpNet) -> Option<Self> {
        if let IpNet::V4(net) = any { Some(net) } else { None }
    }
}

impl OfFamily<IpNet> for Ipv6Net {
    fn of(any: IpNet) -> Option<Self> {
        if let IpNet::V6(net) = any { Some(net) } else { None }
    }
}

/// A gateway, range or address given for `subnet`, which must be of its family.
fn in_family<Any: Copy + std::fmt::Display, T: OfFamily<Any>>(
    given: Option<Any>,
    subnet: IpNet,
) -> Result<Option<T>, String> {
    given
        .map(|any| {
            T::of(any)
                .ok_or_else(|| format!("{any} is not of the family of subnet {subnet}; give one that is"))
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pool_s_addresses_are_of_its_family() {
        let v6 = PoolPlan::new("fd00:30::/64".parse().unwrap(), None, None).unwrap();
        assert_eq!(v6.gateway(), "fd00:30::1".parse::<IpAddr>().unwrap());
        let used = BTreeSet::from(["10.30.0.2".parse().unwrap(), "fd00:30::2".parse().unwrap()]);
        assert_eq!(v6.address(None, &used), Ok("fd00:30::3".parse().unwrap()));
        let v4_in_v6 = v6.address(Some("10.30.0.9".parse().unwrap()), &used);
        assert!(v4_in_v6.unwrap_err().contains("10.30.0.9 is not of the family of subnet fd00:30::/64"));
        let v4 = PoolPlan::new("10.30.0.0/24".parse().unwrap(), None, None).unwrap();
        assert_eq!(v4.address(None, &used), Ok("10.30.0.3".parse().unwrap()));
        let mixed = PoolPlan::new("10.30.0.0/24".parse().unwrap(), Some("fd00:30::1".parse().unwrap()), None);
        assert!(mixed.err().unwrap().contains("fd00:30::1 is not of the family of subnet 10.30.0.0/24"));
    }
}
