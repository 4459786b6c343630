//! Firewall for published ports: the user's ordered allow/deny rules for traffic arriving
//! on the uplink, which netfilter never sees once tc or XDP redirects it. Owns FIREWALL,
//! the rule sets compiled and filled by the daemon, and FIREWALL_HITS, the rules' hit
//! counters. It decides from one trie lookup whatever the number of rules, and is never
//! asked for ports without rules (`Backend::rule_set` 0) or for traffic from containers.

use aya_ebpf::{
    macros::map,
    maps::{LpmTrie, PerCpuArray, lpm_trie::Key},
};
use dataplane_common::{FirewallKey, FirewallVerdict};

/// Per rule set, per distinct source prefix of its rules: the verdict of the first rule
/// covering that prefix. The longest prefix matching a source is covered by exactly the
/// rules that cover the source, so its verdict is the first match's.
#[map]
static FIREWALL: LpmTrie<FirewallKey, FirewallVerdict> = LpmTrie::pinned(FirewallVerdict::TRIE_SIZE, 0);

/// Packets each rule decided, by the rule's slot.
#[map]
static FIREWALL_HITS: PerCpuArray<u64> = PerCpuArray::pinned(FirewallVerdict::MAX_RULES, 0);

/// Whether the rules of `rule_set` let a packet from `src` through, counting the hit of
/// the rule that decided. No rule set, or no rule covering `src`: accepted.
#[inline(always)]
pub fn allows(rule_set: u16, src: [u8; 4]) -> bool {
    rule_set == 0 || decides(rule_set, 32, src)
}

/// As `allows`, for an IPv6 source: the rules' sources are IPv4 prefixes, so only the
/// rules without one (any source) cover it, which the rule set's entry for 0.0.0.0/0
/// holds, the first of them deciding.
#[inline(always)]
pub fn allows_ipv6(rule_set: u16) -> bool {
    rule_set == 0 || decides(rule_set, 0, [0; 4])
}

/// The verdict of the longest prefix of `rule_set` holding the first `bits` of `src`.
#[inline(always)]
fn decides(rule_set: u16, bits: u32, src: [u8; 4]) -> bool {
    let key = Key::new(
        FirewallKey::RULE_SET_BITS + bits,
        FirewallKey { rule_set: u32::from(rule_set).to_be(), addr: src },
    );
    let Some(verdict) = FIREWALL.get(&key) else {
        return true;
    };
    if let Some(hits) = FIREWALL_HITS.get_ptr_mut(verdict.slot) {
        // SAFETY: the slot belongs to this CPU and programs do not preempt each other on it.
        unsafe { *hits += 1 };
    }
    verdict.action != FirewallVerdict::DENY
}
