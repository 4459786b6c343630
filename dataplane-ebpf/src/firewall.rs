//! Firewall for published ports: the user's ordered allow/deny rules for traffic arriving
//! on the uplink, which netfilter never sees once tc or XDP redirects it. Owns FIREWALL and
//! FIREWALL6, the rule sets of IPv4 and IPv6 mappings compiled and filled by the daemon,
//! and FIREWALL_HITS, the rules' hit counters. It decides from one trie lookup whatever the
//! number of rules, and is never asked for ports without rules (`Backend::rule_set` 0) or
//! for traffic from containers.

use aya_ebpf::{
    macros::map,
    maps::{LpmTrie, PerCpuArray, lpm_trie::Key},
};
use dataplane_common::{FirewallKey, FirewallKey6, FirewallVerdict};

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
