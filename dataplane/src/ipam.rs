//! IP address management: default subnet pools, gateway choice and address allocation
//! inside a network. Pure logic over the addresses in use; it never touches the system,
//! and it keeps no record of its own: the containers in the state are the allocations,
//! so a restart can never hand out an address twice. IPv6 plans (`AddressPlanV6`) follow
//! the same rules, with Docker's ULA pool in place of its IPv4 pools.

use std::{
    collections::BTreeSet,
    net::{Ipv4Addr, Ipv6Addr},
};

use ipnet::{Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

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
    #[error("no free address left in {range}; remove a container or use a larger --subnet/--ip-range")]
    Exhausted6 { range: Ipv6Net },
    #[error("address {ip} is outside subnet {subnet}; pick an --ip6 inside it")]
    OutsideSubnet6 { ip: Ipv6Addr, subnet: Ipv6Net },
    #[error(
        "address {ip} is reserved in {subnet} (subnet-router anycast or gateway address); pick another --ip6"
    )]
    Reserved6 { ip: Ipv6Addr, subnet: Ipv6Net },
    #[error("address {ip} is already in use; pick another --ip6 or let one be assigned")]
    InUse6 { ip: Ipv6Addr },
    #[error("gateway {gateway} is outside subnet {subnet}; give a --gateway inside the subnet")]
    GatewayOutsideSubnet6 { gateway: Ipv6Addr, subnet: Ipv6Net },
    #[error("gateway {gateway} is the subnet-router anycast address of {subnet}; pick a host address")]
    GatewayReserved6 { gateway: Ipv6Addr, subnet: Ipv6Net },
    #[error("--ip-range {range} is not inside subnet {subnet}")]
    RangeOutsideSubnet6 { range: Ipv6Net, subnet: Ipv6Net },
    #[error(
        "IPv6 subnet {subnet} is too small; use a prefix of /{} or shorter (a /64 is usual)",
        MAX_V6_PREFIX
    )]
    SubnetTooSmall6 { subnet: Ipv6Net },
    #[error(
        "IPv6 subnet {subnet} is too large; use a prefix of /{} or longer (a /64 is usual)",
        MIN_V6_PREFIX
    )]
    SubnetTooLarge6 { subnet: Ipv6Net },
    #[error("subnet {subnet} is not a network address (host bits set); did you mean {}?", subnet.trunc())]
    HostBitsSet6 { subnet: Ipv6Net },
    #[error("all /64s of the ULA pool {pool} are in use; give an IPv6 --subnet explicitly")]
    PoolExhausted6 { pool: Ipv6Net },
}

/// The longest IPv6 prefix a network may have: 256 addresses.
pub const MAX_V6_PREFIX: u8 = 120;
/// The shortest: a /48, what a site's ULA prefix holds.
pub const MIN_V6_PREFIX: u8 = 48;

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
    /// released address is the first to be handed out again.
    pub fn allocate(&self, used: &BTreeSet<Ipv4Addr>) -> Result<Ipv4Addr, IpamError> {
        let (first, last) = (self.range.network(), self.range.broadcast());
        lowest_free(first, last, used, |ip| self.is_reserved(ip))
            .ok_or(IpamError::Exhausted { range: self.range })
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

/// The lowest address from `first` to `last` that is neither in `used` nor reserved.
/// Walks the used addresses in step with the candidates rather than looking each
/// candidate up: thousands of endpoints on a network cost microseconds.
fn lowest_free<A: Address>(first: A, last: A, used: &BTreeSet<A>, reserved: impl Fn(A) -> bool) -> Option<A> {
    let mut taken = used.range(first..=last).peekable();
    (first.number()..=last.number())
        .map(A::from_number)
        .find(|&candidate| taken.next_if_eq(&&candidate).is_none() && !reserved(candidate))
}

/// An address of either family as the number it is, to count through a range.
trait Address: Ord + Copy {
    fn number(self) -> u128;
    /// Only called with numbers of the family's width (from `number` and up to another).
    fn from_number(n: u128) -> Self;
}

impl Address for Ipv4Addr {
    fn number(self) -> u128 {
        u128::from(u32::from(self))
    }
    fn from_number(n: u128) -> Self {
        Ipv4Addr::from(n as u32)
    }
}

impl Address for Ipv6Addr {
    fn number(self) -> u128 {
        u128::from(self)
    }
    fn from_number(n: u128) -> Self {
        Ipv6Addr::from(n)
    }
}

/// A network's IPv6 address plan, validated once at creation; kept whole in the state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressPlanV6 {
    pub subnet: Ipv6Net,
    pub gateway: Ipv6Addr,
    /// Where container addresses are taken from; the whole subnet unless --ip-range.
    pub range: Ipv6Net,
}

impl AddressPlanV6 {
    /// Checks a user's IPv6 --subnet/--gateway/--ip-range; the gateway defaults to `::1`
    /// of the subnet, as Docker's.
    pub fn new(
        subnet: Ipv6Net,
        gateway: Option<Ipv6Addr>,
        range: Option<Ipv6Net>,
    ) -> Result<Self, IpamError> {
        if subnet.trunc() != subnet {
            return Err(IpamError::HostBitsSet6 { subnet });
        }
        if subnet.prefix_len() > MAX_V6_PREFIX {
            return Err(IpamError::SubnetTooSmall6 { subnet });
        }
        if subnet.prefix_len() < MIN_V6_PREFIX {
            return Err(IpamError::SubnetTooLarge6 { subnet });
        }
        let gateway = gateway.unwrap_or_else(|| Ipv6Addr::from(u128::from(subnet.network()) + 1));
        if !subnet.contains(&gateway) {
            return Err(IpamError::GatewayOutsideSubnet6 { gateway, subnet });
        }
        if gateway == subnet.network() {
            return Err(IpamError::GatewayReserved6 { gateway, subnet });
        }
        let range = range.map(|r| r.trunc()).unwrap_or(subnet);
        if !subnet.contains(&range) {
            return Err(IpamError::RangeOutsideSubnet6 { range, subnet });
        }
        Ok(Self { subnet, gateway, range })
    }

    /// IPv6 has no broadcast; the subnet's first address is the subnet-router anycast one.
    fn is_reserved(&self, ip: Ipv6Addr) -> bool {
        ip == self.subnet.network() || ip == self.gateway
    }

    /// The lowest free address of the range: `::2`, `::3`, ... on a fresh network.
    pub fn allocate(&self, used: &BTreeSet<Ipv6Addr>) -> Result<Ipv6Addr, IpamError> {
        let (first, last) = (self.range.network(), self.range.broadcast());
        lowest_free(first, last, used, |ip| self.is_reserved(ip))
            .ok_or(IpamError::Exhausted6 { range: self.range })
    }

    /// Checks an address the user asked for with --ip6.
    pub fn claim(&self, ip: Ipv6Addr, used: &BTreeSet<Ipv6Addr>) -> Result<Ipv6Addr, IpamError> {
        if !self.subnet.contains(&ip) {
            return Err(IpamError::OutsideSubnet6 { ip, subnet: self.subnet });
        }
        if self.is_reserved(ip) {
            return Err(IpamError::Reserved6 { ip, subnet: self.subnet });
        }
        if used.contains(&ip) {
            return Err(IpamError::InUse6 { ip });
        }
        Ok(ip)
    }
}

/// The host's ULA /48 (RFC 4193: `fd` and a 40-bit global ID), from a hash of the host id
/// the daemon keeps in its state dir: stable across restarts, different between hosts.
pub fn ula_pool(host_id: &str) -> Ipv6Net {
    // FNV-1a, 64 bits: a fixed, documented function, so the pool never changes with the
    // toolchain (std's hashers make no such promise).
    let hash = host_id
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    let id = hash.to_be_bytes();
    let mut octets = [0u8; 16];
    octets[0] = 0xfd;
    octets[1..6].copy_from_slice(&id[..5]);
    Ipv6Net::new(Ipv6Addr::from(octets), 48).expect("valid prefix")
}

pub fn overlaps6(a: &Ipv6Net, b: &Ipv6Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// The first /64 of the host's ULA pool that overlaps none of `taken`, as Docker splits
/// its default IPv6 pool.
pub fn pick_subnet6(pool: Ipv6Net, taken: &[Ipv6Net]) -> Result<Ipv6Net, IpamError> {
    pool.subnets(64)
        .expect("a /48 splits into /64s")
        .find(|candidate| !taken.iter().any(|t| overlaps6(candidate, t)))
        .ok_or(IpamError::PoolExhausted6 { pool })
}

fn first_host(subnet: &Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(subnet.network()) + 1)
}

/// Docker's container MAC: 02:42 followed by the four bytes of the IPv4 address; on an
/// IPv6-only network the last four of the IPv6 address, unique in the network as long as
/// its addresses are (sequential from `::1`, they differ there).
pub fn mac_for(ip: std::net::IpAddr) -> [u8; 6] {
    let [a, b, c, d] = match ip {
        std::net::IpAddr::V4(ip) => ip.octets(),
        std::net::IpAddr::V6(ip) => {
            let o = ip.octets();
            [o[12], o[13], o[14], o[15]]
        }
    };
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

    fn net6(s: &str) -> Ipv6Net {
        s.parse().unwrap()
    }
    fn ip6(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv6_allocation_is_sequential_after_the_gateway_and_reuses_released_addresses() {
        let plan = AddressPlanV6::new(net6("fd00:1::/64"), None, None).unwrap();
        assert_eq!(plan.gateway, ip6("fd00:1::1"), "the gateway defaults to ::1");
        let mut used = BTreeSet::new();
        for expected in ["fd00:1::2", "fd00:1::3", "fd00:1::4"] {
            let got = plan.allocate(&used).unwrap();
            assert_eq!(got, ip6(expected));
            used.insert(got);
        }
        used.remove(&ip6("fd00:1::3"));
        assert_eq!(plan.allocate(&used).unwrap(), ip6("fd00:1::3"), "a released address comes back first");
        let ranged = AddressPlanV6::new(net6("fd00:1::/64"), None, Some(net6("fd00:1::100/126"))).unwrap();
        let mut used = BTreeSet::new();
        while let Ok(ip) = ranged.allocate(&used) {
            used.insert(ip);
        }
        assert_eq!(used.len(), 4, "--ip-range bounds allocation: {used:?}");
        assert_eq!(ranged.allocate(&used), Err(IpamError::Exhausted6 { range: net6("fd00:1::100/126") }));
    }

    #[test]
    fn ipv6_plans_outside_the_rules_are_refused_with_the_fix() {
        let refused = |subnet: &str, gateway: Option<&str>| {
            AddressPlanV6::new(net6(subnet), gateway.map(ip6), None).unwrap_err()
        };
        assert!(matches!(refused("fd00:1::/64", Some("fd00:2::1")), IpamError::GatewayOutsideSubnet6 { .. }));
        assert!(refused("fd00:1::/64", Some("fd00:2::1")).to_string().contains("give a --gateway inside"));
        assert!(matches!(refused("fd00:1::/64", Some("fd00:1::")), IpamError::GatewayReserved6 { .. }));
        let small = refused("fd00:1::/121", None).to_string();
        assert!(small.contains("/120 or shorter"), "{small}");
        let large = refused("fd00::/47", None).to_string();
        assert!(large.contains("/48 or longer"), "{large}");
        assert!(matches!(refused("fd00:1::1/64", None), IpamError::HostBitsSet6 { .. }));
        assert!(AddressPlanV6::new(net6("fd00:1::/120"), None, None).is_ok(), "/120 is the limit, allowed");
        assert!(AddressPlanV6::new(net6("fd00::/48"), None, None).is_ok(), "/48 is the limit, allowed");
        assert!(matches!(
            AddressPlanV6::new(net6("fd00:1::/64"), None, Some(net6("fd00:2::/120"))),
            Err(IpamError::RangeOutsideSubnet6 { .. })
        ));
    }

    #[test]
    fn claimed_ipv6_addresses_are_checked() {
        let plan = AddressPlanV6::new(net6("fd00:6::/64"), None, None).unwrap();
        let used: BTreeSet<_> = [ip6("fd00:6::7")].into();
        assert_eq!(plan.claim(ip6("fd00:6::9"), &used), Ok(ip6("fd00:6::9")));
        assert_eq!(plan.claim(ip6("fd00:6::7"), &used), Err(IpamError::InUse6 { ip: ip6("fd00:6::7") }));
        assert!(matches!(plan.claim(ip6("fd00:6::1"), &used), Err(IpamError::Reserved6 { .. })));
        assert!(matches!(plan.claim(ip6("fd00:6::"), &used), Err(IpamError::Reserved6 { .. })));
        assert!(matches!(plan.claim(ip6("fd00:7::5"), &used), Err(IpamError::OutsideSubnet6 { .. })));
    }

    #[test]
    fn the_ula_pool_is_a_stable_fd_48_per_host_split_into_64s() {
        let pool = ula_pool("host-a");
        assert_eq!(pool, ula_pool("host-a"), "the same host id gives the same pool");
        assert_ne!(pool, ula_pool("host-b"), "another host id gives another pool");
        assert_eq!(pool.prefix_len(), 48);
        assert_eq!(pool.network().octets()[0], 0xfd, "a ULA with the L bit: {pool}");
        let first = pick_subnet6(pool, &[]).unwrap();
        assert_eq!((first.network(), first.prefix_len()), (pool.network(), 64));
        let second = pick_subnet6(pool, &[first]).unwrap();
        assert_eq!(u128::from(second.network()) - u128::from(first.network()), 1 << 64, "the next /64");
        // A network on the whole /48 (or one wider) leaves none of its /64s.
        assert_eq!(pick_subnet6(pool, &[pool]), Err(IpamError::PoolExhausted6 { pool }));
    }

    #[test]
    fn mac_follows_the_address() {
        assert_eq!(mac_for(ip("172.17.0.2").into()), [0x02, 0x42, 172, 17, 0, 2], "Docker's MAC");
        let v6: Ipv6Addr = "fd00:1::a:b02".parse().unwrap();
        assert_eq!(mac_for(v6.into()), [0x02, 0x42, 0, 0x0a, 0x0b, 0x02], "IPv6-only: the last four bytes");
    }
}
