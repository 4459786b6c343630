//! IP address management: default subnet pools, gateway choice and address allocation
//! inside a network. Pure logic over the addresses in use; it never touches the system,
//! and it keeps no record of its own: the containers in the state are the allocations,
//! so a restart can never hand out an address twice.

use std::{collections::BTreeSet, net::Ipv4Addr};

use ipnet::Ipv4Net;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IpamError {
    #[error("no free address left in {range}; remove a container or use a larger --subnet/--ip-range")]
    Exhausted { range: Ipv4Net },
    #[error("address {ip} is outside subnet {subnet}; pick an --ip inside it")]
    OutsideSubnet { ip: Ipv4Addr, subnet: Ipv4Net },
    #[error(
        "address {ip} is reserved in {subnet} (network, broadcast or gateway address); pick another --ip"
    )]
    Reserved { ip: Ipv4Addr, subnet: Ipv4Net },
    #[error("address {ip} is already in use; pick another --ip or let one be assigned")]
    InUse { ip: Ipv4Addr },
    #[error("gateway {gateway} is outside subnet {subnet}; give a --gateway inside the subnet")]
    GatewayOutsideSubnet { gateway: Ipv4Addr, subnet: Ipv4Net },
    #[error("gateway {gateway} is the network or broadcast address of {subnet}; pick a host address")]
    GatewayReserved { gateway: Ipv4Addr, subnet: Ipv4Net },
    #[error("--ip-range {range} is not inside subnet {subnet}")]
    RangeOutsideSubnet { range: Ipv4Net, subnet: Ipv4Net },
    #[error("subnet {subnet} has no room for a gateway and a container; use a prefix of /30 or shorter")]
    SubnetTooSmall { subnet: Ipv4Net },
    #[error("subnet {subnet} is not a network address (host bits set); did you mean {}?", subnet.trunc())]
    HostBitsSet { subnet: Ipv4Net },
    #[error("all default address pools are in use; give --subnet explicitly")]
    PoolsExhausted,
}

/// The default network's subnet, as Docker's `docker0`.
pub fn default_bridge_subnet() -> Ipv4Net {
    Ipv4Net::new(Ipv4Addr::new(172, 17, 0, 0), 16).expect("valid prefix")
}

/// Docker's default address pools, in the order it uses them: 172.17-31.0.0/16, then
/// 192.168.0.0/16 in /20s.
pub fn default_pools() -> impl Iterator<Item = Ipv4Net> {
    let sixteens = (17..=31).map(|b| Ipv4Net::new(Ipv4Addr::new(172, b, 0, 0), 16));
    let twenties = (0..16).map(|i| Ipv4Net::new(Ipv4Addr::new(192, 168, i * 16, 0), 20));
    sixteens.chain(twenties).map(|net| net.expect("valid prefix"))
}

pub fn overlaps(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// The first default pool that overlaps none of `taken`.
pub fn pick_subnet(taken: &[Ipv4Net]) -> Result<Ipv4Net, IpamError> {
    default_pools().find(|pool| !taken.iter().any(|t| overlaps(pool, t))).ok_or(IpamError::PoolsExhausted)
}

/// A network's address plan, validated once at creation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressPlan {
    pub subnet: Ipv4Net,
    pub gateway: Ipv4Addr,
    /// Where container addresses are taken from; the whole subnet unless --ip-range.
    pub range: Ipv4Net,
}

impl AddressPlan {
    /// Checks a user's --subnet/--gateway/--ip-range; the gateway defaults to the first
    /// usable address, as Docker does.
    pub fn new(
        subnet: Ipv4Net,
        gateway: Option<Ipv4Addr>,
        range: Option<Ipv4Net>,
    ) -> Result<Self, IpamError> {
        if subnet.trunc() != subnet {
            return Err(IpamError::HostBitsSet { subnet });
        }
        if subnet.prefix_len() > 30 {
            return Err(IpamError::SubnetTooSmall { subnet });
        }
        let gateway = gateway.unwrap_or_else(|| first_host(&subnet));
        if !subnet.contains(&gateway) {
            return Err(IpamError::GatewayOutsideSubnet { gateway, subnet });
        }
        if gateway == subnet.network() || gateway == subnet.broadcast() {
            return Err(IpamError::GatewayReserved { gateway, subnet });
        }
        let range = range.map(|r| r.trunc()).unwrap_or(subnet);
        if !subnet.contains(&range) {
            return Err(IpamError::RangeOutsideSubnet { range, subnet });
        }
        Ok(Self { subnet, gateway, range })
    }

    fn is_reserved(&self, ip: Ipv4Addr) -> bool {
        ip == self.subnet.network() || ip == self.subnet.broadcast() || ip == self.gateway
    }

    /// The lowest free address of the range: .2, .3, ... on a fresh network, and a
    /// released address is the first to be handed out again. Walks the used addresses in
    /// step with the candidates rather than looking each candidate up: thousands of
    /// endpoints on a network cost microseconds.
    pub fn allocate(&self, used: &BTreeSet<Ipv4Addr>) -> Result<Ipv4Addr, IpamError> {
        let (first, last) = (self.range.network(), self.range.broadcast());
        let mut taken = used.range(first..=last).peekable();
        for candidate in u32::from(first)..=u32::from(last) {
            let candidate = Ipv4Addr::from(candidate);
            if taken.next_if_eq(&&candidate).is_none() && !self.is_reserved(candidate) {
                return Ok(candidate);
            }
        }
        Err(IpamError::Exhausted { range: self.range })
    }

    /// Checks an address the user asked for with --ip.
    pub fn claim(&self, ip: Ipv4Addr, used: &BTreeSet<Ipv4Addr>) -> Result<Ipv4Addr, IpamError> {
        if !self.subnet.contains(&ip) {
            return Err(IpamError::OutsideSubnet { ip, subnet: self.subnet });
        }
        if self.is_reserved(ip) {
            return Err(IpamError::Reserved { ip, subnet: self.subnet });
        }
        if used.contains(&ip) {
            return Err(IpamError::InUse { ip });
        }
        Ok(ip)
    }
}

fn first_host(subnet: &Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(subnet.network()) + 1)
}

/// Docker's container MAC: 02:42 followed by the four bytes of the IPv4 address.
pub fn mac_for(ip: Ipv4Addr) -> [u8; 6] {
    let [a, b, c, d] = ip.octets();
    [0x02, 0x42, a, b, c, d]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }
    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn allocation_is_sequential_after_the_gateway() {
        let plan = AddressPlan::new(default_bridge_subnet(), None, None).unwrap();
        assert_eq!(plan.gateway, ip("172.17.0.1"));
        let mut used = BTreeSet::new();
        for expected in ["172.17.0.2", "172.17.0.3", "172.17.0.4"] {
            let got = plan.allocate(&used).unwrap();
            assert_eq!(got, ip(expected));
            used.insert(got);
        }
    }

    #[test]
    fn released_address_is_reused_first() {
        let plan = AddressPlan::new(net("10.1.0.0/24"), None, None).unwrap();
        let mut used: BTreeSet<_> = [ip("10.1.0.2"), ip("10.1.0.3"), ip("10.1.0.4")].into();
        used.remove(&ip("10.1.0.3"));
        assert_eq!(plan.allocate(&used).unwrap(), ip("10.1.0.3"));
    }

    #[test]
    fn allocation_finds_the_first_gap_among_thousands_taken() {
        let plan = AddressPlan::new("10.1.0.0/20".parse().unwrap(), None, None).unwrap();
        let mut used: BTreeSet<Ipv4Addr> = (2..3000).map(|i| Ipv4Addr::from(0x0a01_0000 + i)).collect();
        // Addresses outside the range do not count.
        used.insert(Ipv4Addr::new(10, 0, 0, 5));
        assert_eq!(plan.allocate(&used).unwrap(), Ipv4Addr::from(0x0a01_0000 + 3000));
        used.remove(&Ipv4Addr::from(0x0a01_0000 + 1234));
        assert_eq!(plan.allocate(&used).unwrap(), Ipv4Addr::from(0x0a01_0000 + 1234));
    }

    #[test]
    fn gateway_is_skipped_wherever_it_is() {
        let plan = AddressPlan::new(net("10.1.0.0/24"), Some(ip("10.1.0.2")), None).unwrap();
        let used: BTreeSet<_> = [ip("10.1.0.1")].into();
        assert_eq!(plan.allocate(&used).unwrap(), ip("10.1.0.3"));
    }

    #[test]
    fn ip_range_limits_allocation() {
        let plan = AddressPlan::new(net("10.2.0.0/16"), None, Some(net("10.2.5.0/30"))).unwrap();
        let mut used = BTreeSet::new();
        let mut got = vec![];
        while let Ok(a) = plan.allocate(&used) {
            used.insert(a);
            got.push(a);
        }
        // the range is 10.2.5.0-3; none of them is reserved in the /16.
        assert_eq!(got, [ip("10.2.5.0"), ip("10.2.5.1"), ip("10.2.5.2"), ip("10.2.5.3")]);
    }

    #[test]
    fn exhaustion_is_an_error_naming_the_range() {
        let plan = AddressPlan::new(net("10.3.0.0/30"), None, None).unwrap();
        let used: BTreeSet<_> = [ip("10.3.0.2")].into();
        let err = plan.allocate(&used).unwrap_err();
        assert_eq!(err, IpamError::Exhausted { range: net("10.3.0.0/30") });
        assert!(err.to_string().contains("10.3.0.0/30"));
    }

    #[test]
    fn bad_plans_are_refused() {
        assert!(matches!(
            AddressPlan::new(net("10.4.0.0/24"), Some(ip("10.5.0.1")), None),
            Err(IpamError::GatewayOutsideSubnet { .. })
        ));
        assert!(matches!(
            AddressPlan::new(net("10.4.0.0/24"), Some(ip("10.4.0.255")), None),
            Err(IpamError::GatewayReserved { .. })
        ));
        assert!(matches!(
            AddressPlan::new(net("10.4.0.0/24"), None, Some(net("10.9.0.0/28"))),
            Err(IpamError::RangeOutsideSubnet { .. })
        ));
        assert!(matches!(
            AddressPlan::new(net("10.4.0.1/24"), None, None),
            Err(IpamError::HostBitsSet { .. })
        ));
        assert!(matches!(
            AddressPlan::new(net("10.4.0.0/31"), None, None),
            Err(IpamError::SubnetTooSmall { .. })
        ));
    }

    #[test]
    fn claimed_addresses_are_checked() {
        let plan = AddressPlan::new(net("10.6.0.0/24"), None, None).unwrap();
        let used: BTreeSet<_> = [ip("10.6.0.7")].into();
        assert_eq!(plan.claim(ip("10.6.0.9"), &used), Ok(ip("10.6.0.9")));
        assert_eq!(plan.claim(ip("10.6.0.7"), &used), Err(IpamError::InUse { ip: ip("10.6.0.7") }));
        assert!(matches!(plan.claim(ip("10.6.0.1"), &used), Err(IpamError::Reserved { .. })));
        assert!(matches!(plan.claim(ip("10.6.0.0"), &used), Err(IpamError::Reserved { .. })));
        assert!(matches!(plan.claim(ip("10.7.0.5"), &used), Err(IpamError::OutsideSubnet { .. })));
    }

    #[test]
    fn default_pools_follow_docker_order_and_skip_taken() {
        let pools: Vec<_> = default_pools().collect();
        assert_eq!(pools[0], net("172.17.0.0/16"));
        assert_eq!(pools[14], net("172.31.0.0/16"));
        assert_eq!(pools[15], net("192.168.0.0/20"));
        assert_eq!(pools[16], net("192.168.16.0/20"));
        let taken = [net("172.17.0.0/16"), net("172.18.5.0/24")];
        assert_eq!(pick_subnet(&taken).unwrap(), net("172.19.0.0/16"));
        let all: Vec<_> = default_pools().collect();
        assert_eq!(pick_subnet(&all), Err(IpamError::PoolsExhausted));
    }

    #[test]
    fn mac_follows_the_address() {
        assert_eq!(mac_for(ip("172.17.0.2")), [0x02, 0x42, 172, 17, 0, 2]);
    }
}
