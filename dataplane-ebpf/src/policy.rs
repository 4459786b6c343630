//! Isolation between networks: which network owns a destination address.

use aya_ebpf::{
    macros::map,
    maps::{LpmTrie, lpm_trie::Key},
};
use dataplane_common::{AF_INET6, IpAddress, SubnetInfo, SubnetKey};

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

/// The network whose subnet holds `addr`, with its gateway.
#[inline(always)]
fn subnet_of(addr: &IpAddress) -> Option<&'static SubnetInfo> {
    let bits = if addr.family == AF_INET6 { 128 } else { 32 };
    let key = Key::new(SubnetKey::FAMILY_BITS + bits, SubnetKey { family: u32::from(addr.family), addr: addr.addr });
    SUBNETS.get(&key)
}

#[inline(always)]
fn subnet_of_v4(addr: [u8; 4]) -> Option<&'static SubnetInfo> {
    subnet_of(&IpAddress::v4(addr))
}

/// Whether `addr` is the gateway of one of the networks.
#[inline(always)]
pub fn is_gateway(addr: [u8; 4]) -> bool {
    subnet_of_v4(addr).is_some_and(|info| info.gateway.addr[..4] == addr)
}

/// The gateway of the network whose subnet holds `addr`.
#[inline(always)]
pub fn gateway_of(addr: [u8; 4]) -> Option<[u8; 4]> {
    let mut gateway = [0u8; 4];
    gateway.copy_from_slice(&subnet_of_v4(addr)?.gateway.addr[..4]);
    Some(gateway)
}

/// Whether `dst` is a container address of some network (not a gateway).
#[inline(always)]
pub fn in_container_subnet(dst: [u8; 4]) -> bool {
    matches!(check(0, &IpAddress::v4(dst)), Verdict::OtherNetwork)
}

/// Docker's isolation: a container may not reach addresses of another network, except
/// that network's gateway, which is a host address delivered locally. Either family:
/// the trie key carries it.
#[inline(always)]
pub fn check(network: u32, dst: &IpAddress) -> Verdict {
    match subnet_of(dst) {
        Some(info) if info.network != network && info.gateway != *dst => Verdict::OtherNetwork,
        Some(_) => Verdict::Allow,
        None => Verdict::Outside,
    }
}
