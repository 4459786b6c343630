//! The endpoint tables the daemon fills: which network each host-side interface serves,
//! and where each address of a network lives.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap},
};
use dataplane_common::{Endpoint, EndpointKey, InterfaceConfig, IpAddress};

/// Container addresses per network.
#[map]
static ENDPOINTS: HashMap<EndpointKey, Endpoint> = HashMap::pinned(65536, 0);

/// Host-side interfaces the programs are attached to, by ifindex: most in an array (an
/// index instead of a hash on every packet), those with large ifindexes in a hash.
#[map]
static INTERFACES_BY_INDEX: Array<InterfaceConfig> = Array::pinned(InterfaceConfig::INDEX_LIMIT, 0);

#[map]
static INTERFACES: HashMap<u32, InterfaceConfig> = HashMap::pinned(65536, 0);

/// The interface's entry, read in place: a copy on the stack cost `from_container` the
/// bytes its deepest path needs (the verifier allows 512 for all frames of a path).
#[inline(always)]
pub fn interface(ifindex: u32) -> Option<&'static InterfaceConfig> {
    if ifindex < InterfaceConfig::INDEX_LIMIT {
        return INTERFACES_BY_INDEX.get(ifindex).filter(|c| c.network != 0);
    }
    // SAFETY: the entry stays valid for the program's run (the map is RCU-protected); the
    // daemon replaces entries whole, so a read races one update at most, as a copy did.
    unsafe { INTERFACES.get(&ifindex) }
}

#[inline(always)]
pub fn lookup(network: u32, ip: IpAddress) -> Option<Endpoint> {
    let key = EndpointKey { network, ip };
    // SAFETY: as above.
    unsafe { ENDPOINTS.get(&key).copied() }
}
