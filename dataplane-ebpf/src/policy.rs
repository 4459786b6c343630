//! Isolation between networks: which network owns a destination address.

use aya_ebpf::{
    macros::map,
    maps::{LpmTrie, lpm_trie::Key},
};
use dataplane_common::{AF_INET, AF_INET6, IpAddress, SubnetInfo, SubnetKey};

/// Every network's subnets, so that traffic towards another network can be refused.
#[map]
static SUBNETS: LpmTrie<SubnetKey, SubnetInfo> = LpmTrie::pinned(4096, 0);

pub enum Verdict {
    /// The destination is of the sender's own network, or another network's gateway.
    Allow,
    /// The destination sits inside another network's subnet.
    OtherNetwork,
    /// No network's subnet holds the destination.
    Outside,
}

/// The network whose subnet holds `addr`, with its gateway. The key is built in place:
/// this sits on the IPv4 paths, whose stack is tight.
#[inline(always)]
pub fn subnet_of_v4(addr: [u8; 4]) -> Option<&'static SubnetInfo> {
    let mut key_addr = [0u8; 16];
    key_addr[..4].copy_from_slice(&addr);
    let key = Key::new(SubnetKey::FAMILY_BITS + 32, SubnetKey { family: u32::from(AF_INET), addr: key_addr });
    SUBNETS.get(&key)
}

#[inline(always)]
pub fn subnet_of_v6(addr: [u8; 16]) -> Option<&'static SubnetInfo> {
    let key = Key::new(SubnetKey::FAMILY_BITS + 128, SubnetKey { family: u32::from(AF_INET6), addr });
    SUBNETS.get(&key)
}

/// Whether `addr` is the gateway of one of the networks.
#[inline(always)]
pub fn is_gateway(addr: [u8; 4]) -> bool {
    subnet_of_v4(addr).is_some_and(|info| info.gateway.addr[..4] == addr)
}

/// As `is_gateway`, for IPv6.
#[inline(always)]
pub fn is_gateway_v6(addr: [u8; 16]) -> bool {
    subnet_of_v6(addr).is_some_and(|info| info.gateway.addr == addr)
}

/// The IPv6 gateway of the network whose subnet holds `addr`.
#[inline(always)]
pub fn gateway_of_v6(addr: [u8; 16]) -> Option<[u8; 16]> {
    Some(subnet_of_v6(addr)?.gateway.addr)
}

/// The gateway of the network whose subnet holds `addr`.
#[inline(always)]
pub fn gateway_of(addr: [u8; 4]) -> Option<[u8; 4]> {
    let mut gateway = [0u8; 4];
    gateway.copy_from_slice(&subnet_of_v4(addr)?.gateway.addr[..4]);
    Some(gateway)
}

/// The subnet of the network where `addr` is a container address (not the gateway).
#[inline(always)]
pub fn container_subnet_v4(addr: [u8; 4]) -> Option<&'static SubnetInfo> {
    subnet_of_v4(addr).filter(|info| info.gateway.addr[..4] != addr)
}

/// As `container_subnet_v4`, for IPv6.
#[inline(always)]
pub fn container_subnet_v6(addr: [u8; 16]) -> Option<&'static SubnetInfo> {
    subnet_of_v6(addr).filter(|info| info.gateway.addr != addr)
}

/// Docker's isolation: a container may not reach addresses of another network, except
/// that network's gateway, which is a host address delivered locally.
#[inline(always)]
pub fn check_v4(network: u32, dst: [u8; 4]) -> Verdict {
    verdict(network, subnet_of_v4(dst), |gateway| gateway.addr[..4] == dst)
}

/// As `check_v4`, for IPv6.
#[inline(always)]
pub fn check_v6(network: u32, dst: [u8; 16]) -> Verdict {
    verdict(network, subnet_of_v6(dst), |gateway| gateway.addr == dst)
}

#[inline(always)]
fn verdict(network: u32, owner: Option<&SubnetInfo>, is_dst: impl Fn(&IpAddress) -> bool) -> Verdict {
    match owner {
        Some(info) if info.network != network && !is_dst(&info.gateway) => Verdict::OtherNetwork,
        Some(_) => Verdict::Allow,
        None => Verdict::Outside,
    }
}
