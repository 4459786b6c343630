//! Firewall for traffic arriving on the uplink, which netfilter never sees once tc or XDP
//! redirects it: the user's ordered allow/deny rules, for published ports and for the
//! ports of containers' own addresses that the outside reaches directly (every port on an
//! unprotected network). Owns FIREWALL and FIREWALL6, the rule sets of IPv4 and IPv6
//! traffic compiled and filled by the daemon; FIREWALL_DIRECT, which gives a container's
//! own ports their rule sets; and FIREWALL_HITS, the rules' hit counters. It decides from
//! one trie lookup whatever the number of rules, and is never asked for ports without
//! rules (rule set 0), for traffic from containers, or for a cached connection's packets.

use aya_ebpf::{
    macros::map,
    maps::{LpmTrie, PerCpuArray, lpm_trie::Key},
};
use dataplane_common::{FirewallDirectKey, FirewallKey, FirewallKey6, FirewallVerdict, IpAddress};

/// Per rule set, per distinct source prefix of its rules: the verdict of the first rule
/// covering that prefix. The longest prefix matching a source is covered by exactly the
/// rules that cover the source, so its verdict is the first match's. IPv4 mappings' sets.
#[map]
static FIREWALL: LpmTrie<FirewallKey, FirewallVerdict> = LpmTrie::pinned(FirewallVerdict::TRIE_SIZE, 0);

/// As FIREWALL, for IPv6 mappings' sets and IPv6 sources.
#[map]
static FIREWALL6: LpmTrie<FirewallKey6, FirewallVerdict> = LpmTrie::pinned(FirewallVerdict::TRIE_SIZE, 0);

/// The IPv6 lookup's key (24 bytes), built here rather than on the stack of the IPv6
/// uplink program and of the hairpin subprogram, whose frames are near the verifier's
/// 512 bytes.
#[map]
static FIREWALL6_KEY: PerCpuArray<Key<FirewallKey6>> = PerCpuArray::with_max_entries(1, 0);

/// Per container address of an unprotected network, per protocol, per block of ports: the
/// rule set of traffic from the uplink to those ports of the address (0: none). The
/// longest block holding a port answers for it; no block at all: no rule applies.
#[map]
static FIREWALL_DIRECT: LpmTrie<FirewallDirectKey, u16> = LpmTrie::pinned(FirewallDirectKey::TRIE_SIZE, 0);

/// Packets each rule decided, by the rule's slot.
#[map]
static FIREWALL_HITS: PerCpuArray<u64> = PerCpuArray::pinned(FirewallVerdict::MAX_RULES, 0);

/// Whether the rules of `rule_set` let a packet from `src` through, counting the hit of
/// the rule that decided. No rule set, or no rule covering `src`: accepted.
#[inline(always)]
pub fn allows(rule_set: u16, src: [u8; 4]) -> bool {
    if rule_set == 0 {
        return true;
    }
    let key = Key::new(
        FirewallKey::RULE_SET_BITS + 32,
        FirewallKey { rule_set: u32::from(rule_set).to_be(), addr: src },
    );
    decided(FIREWALL.get(&key))
}

/// As `allows`, for an IPv6 source and an IPv6 mapping's rule set.
#[inline(always)]
pub fn allows_ipv6(rule_set: u16, src: &[u8; 16]) -> bool {
    if rule_set == 0 {
        return true;
    }
    let Some(key) = FIREWALL6_KEY.get_ptr_mut(0) else {
        // Index 0 of a one-entry array is always there; were it not, refuse rather than
        // let a filtered port through unfiltered.
        return false;
    };
    // SAFETY: the slot is this CPU's, and programs do not preempt each other on it.
    let key = unsafe {
        (*key).prefix_len = FirewallKey::RULE_SET_BITS + 128;
        (*key).data.rule_set = u32::from(rule_set).to_be();
        (*key).data.addr = *src;
        &*key
    };
    decided(FIREWALL6.get(key))
}

/// The rule set of traffic from the uplink to `port` (network byte order) of `proto` on
/// `addr`, a container's own address: the longest block of ports holding it has it; 0,
/// no rule applies, when none does.
#[inline(always)]
pub fn direct_rule_set(addr: IpAddress, proto: u8, port: u16) -> u16 {
    let key =
        Key::new(FirewallDirectKey::PORT_OFFSET_BITS + 16, FirewallDirectKey { addr, proto, _pad: 0, port });
    FIREWALL_DIRECT.get(&key).copied().unwrap_or(0)
}

/// Whether the trie's `verdict` lets the packet through, counting the hit of the rule
/// that decided. No verdict (no rule covers the source): accepted.
#[inline(always)]
fn decided(verdict: Option<&FirewallVerdict>) -> bool {
    let Some(verdict) = verdict else {
        return true;
    };
    if let Some(hits) = FIREWALL_HITS.get_ptr_mut(verdict.slot) {
        // SAFETY: the slot belongs to this CPU and programs do not preempt each other on it.
        unsafe { *hits += 1 };
    }
    verdict.action != FirewallVerdict::DENY
}
