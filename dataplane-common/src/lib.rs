//! Map keys and values shared by the kernel programs and the daemon.
//!
//! Every type is `#[repr(C)]` with explicit padding so that both sides agree on the
//! layout byte for byte; addresses carry their family so that IPv6 can join without a
//! change of layout. Nothing here may depend on `std`.
#![no_std]

/// Address family numbers as the kernel spells them.
pub const AF_INET: u8 = 2;
pub const AF_INET6: u8 = 10;

/// An IPv4 or IPv6 address in network byte order; IPv4 uses the first 4 bytes of `addr`
/// and leaves the rest zero, so that equal addresses are equal keys.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IpAddress {
    pub family: u8,
    pub _pad: [u8; 3],
    pub addr: [u8; 16],
}

impl IpAddress {
    #[inline(always)]
    pub const fn v4(octets: [u8; 4]) -> Self {
        let mut addr = [0u8; 16];
        addr[0] = octets[0];
        addr[1] = octets[1];
        addr[2] = octets[2];
        addr[3] = octets[3];
        Self { family: AF_INET, _pad: [0; 3], addr }
    }
}

/// Key of the endpoint table: an address inside one network.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EndpointKey {
    pub network: u32,
    pub ip: IpAddress,
}

/// Where an endpoint lives: its host-side veth and the MAC of its interface in the container.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub host_ifindex: u32,
    pub mac: [u8; 6],
    pub _pad: [u8; 2],
}

/// Per host-side interface: which network the container behind it belongs to.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InterfaceConfig {
    pub network: u32,
    pub flags: u32,
}

impl InterfaceConfig {
    /// Inter-container communication is disabled on this network (`--opt icc=false`).
    pub const ICC_DISABLED: u32 = 1;
}

/// Data of the subnet trie key. The prefix length counts the 32 bits of `family` first,
/// so one trie holds both families without one matching the other.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SubnetKey {
    pub family: u32,
    pub addr: [u8; 16],
}

impl SubnetKey {
    /// Bits of the trie key taken by `family`, to add to the subnet's prefix length.
    pub const FAMILY_BITS: u32 = 32;
}

/// The network a subnet belongs to, and its gateway (a host address, reachable from every
/// network as on Docker, since traffic to it is delivered by the host, not forwarded).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SubnetInfo {
    pub network: u32,
    pub gateway: IpAddress,
}

/// One packet/byte counter; the map holding it is per CPU, summed by the daemon.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

/// The paths a packet can take through the programs; the index into the counter map.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    /// Redirected by eBPF straight into the destination container.
    Forwarded = 0,
    /// Dropped: destination on another network.
    DroppedIsolation = 1,
    /// Dropped: same network, but inter-container communication is disabled.
    DroppedIcc = 2,
    /// IPv4 to an address the fast path does not own (gateway, host, outside): kernel path.
    SlowPathIp = 3,
    /// ARP, IPv6, broadcast, multicast and other non-unicast-IPv4 frames: kernel path.
    SlowPathOther = 4,
    /// Too short or malformed to parse: left to the kernel, which drops what is invalid.
    SlowPathMalformed = 5,
    /// Arrived on an interface the daemon has not configured.
    SlowPathUnmanaged = 6,
}

impl Path {
    pub const COUNT: u32 = 7;
    pub const ALL: [Path; Self::COUNT as usize] = [
        Path::Forwarded,
        Path::DroppedIsolation,
        Path::DroppedIcc,
        Path::SlowPathIp,
        Path::SlowPathOther,
        Path::SlowPathMalformed,
        Path::SlowPathUnmanaged,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Path::Forwarded => "forwarded",
            Path::DroppedIsolation => "dropped_isolation",
            Path::DroppedIcc => "dropped_icc",
            Path::SlowPathIp => "slow_path_ip",
            Path::SlowPathOther => "slow_path_other",
            Path::SlowPathMalformed => "slow_path_malformed",
            Path::SlowPathUnmanaged => "slow_path_unmanaged",
        }
    }
}

/// Names of the maps in the kernel object, used by the daemon to find and pin them.
pub mod map_names {
    pub const ENDPOINTS: &str = "ENDPOINTS";
    pub const INTERFACES: &str = "INTERFACES";
    pub const SUBNETS: &str = "SUBNETS";
    pub const COUNTERS: &str = "COUNTERS";
}

/// Names of the programs in the kernel object.
pub mod program_names {
    /// tcx ingress of a container's host-side veth: traffic leaving the container.
    pub const FROM_CONTAINER: &str = "from_container";
}

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: all of these are repr(C), made only of integers and byte arrays, with
    // explicit padding fields, so every bit pattern is valid and none is uninitialised.
    unsafe impl aya::Pod for IpAddress {}
    unsafe impl aya::Pod for EndpointKey {}
    unsafe impl aya::Pod for Endpoint {}
    unsafe impl aya::Pod for InterfaceConfig {}
    unsafe impl aya::Pod for SubnetKey {}
    unsafe impl aya::Pod for SubnetInfo {}
    unsafe impl aya::Pod for Counter {}
}
