//! The firewall for traffic from the uplink, user side: the ordered rules users manage
//! with `dataplane firewall` (parsed and checked here), their compilation into rule sets,
//! and the rule sets installed in the programs' FIREWALL tries, with FIREWALL_DIRECT, which
//! gives the ports of containers' own addresses theirs.
//!
//! Traffic gets the rules that apply to the port its client addressed (protocol, port,
//! container, and a source of the traffic's family), in order: a published host port, or a
//! port of a container's own address that the outside reaches directly (routed and
//! unprotected networks); ports with the same outcome share one rule set. A set is of one
//! family: an IPv4 port's goes to the IPv4 trie, an IPv6 one's to the IPv6 trie, and a rule
//! without a source is in both as 0.0.0.0/0 and ::/0. A rule set holds, for each distinct
//! source prefix among its rules, the verdict of the first rule covering that prefix: for
//! a source address, the longest prefix holding it is covered by exactly the rules that
//! cover the address, so one trie lookup gives the first match whatever the number of
//! rules. It never touches PUBLISHED itself; the daemon points mappings at sets.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fmt,
    net::IpAddr,
    str::FromStr,
    sync::Arc,
};

use anyhow::{Result, bail};
use aya::maps::lpm_trie::Key;
use dataplane_common::{FirewallDirectKey, FirewallVerdict};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

use crate::{
    maps::{self, Datapath},
    ports::{PortMapping, Proto},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Allow,
    Deny,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Allow => "allow",
            Action::Deny => "deny",
        })
    }
}

/// Ports `first` to `last`, inclusive: never 0, never backwards.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    pub fn new(first: u16, last: u16) -> Result<Self, String> {
        if first == 0 {
            return Err("--port 0: ports are 1-65535".into());
        }
        if first > last {
            return Err(format!("--port {first}-{last} runs backwards; write {last}-{first}"));
        }
        Ok(Self { first, last })
    }

    fn contains(&self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }
}

impl FromStr for PortRange {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("--port {s}: not a port or range; write one like 8080 or 8000-8010");
        let port = |p: &str| p.parse::<u16>().map_err(|_| bad());
        match s.split_once('-') {
            Some((first, last)) => Self::new(port(first)?, port(last)?),
            None => port(s).and_then(|p| Self::new(p, p)),
        }
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.first == self.last {
            true => write!(f, "{}", self.first),
            false => write!(f, "{}-{}", self.first, self.last),
        }
    }
}

/// `--source`: an IPv4 or IPv6 address (one host) or a CIDR whose host bits are 0.
pub fn parse_source(s: &str) -> Result<IpNet, String> {
    let net = match s.parse::<std::net::IpAddr>() {
        Ok(addr) => IpNet::from(addr),
        Err(_) => s.parse::<IpNet>().map_err(|_| {
            format!(
                "--source {s}: not an IP address or CIDR; write one like 198.51.100.7, 198.51.100.0/24 \
                 or 2001:db8:1::/48"
            )
        })?,
    };
    check_source(net)?;
    Ok(net)
}

fn check_source(net: IpNet) -> Result<(), String> {
    if net.addr() != net.network() {
        return Err(format!(
            "--source {net} has host bits set; write {} for the network or {}/{} for one address",
            net.trunc(),
            net.addr(),
            net.max_prefix_len()
        ));
    }
    Ok(())
}

/// Every address of a family: the source of a rule without one, in that family's rule
/// sets.
fn any_source(ipv6: bool) -> IpNet {
    match ipv6 {
        false => Ipv4Net::default().into(),
        true => Ipv6Net::default().into(),
    }
}

/// `--proto`: tcp or udp, the protocols ports are published for.
pub fn parse_proto(s: &str) -> Result<Proto, String> {
    match s {
        "tcp" => Ok(Proto::Tcp),
        "udp" => Ok(Proto::Udp),
        _ => Err(format!("--proto {s}: unsupported; use tcp or udp, or leave --proto out for both")),
    }
}

/// A rule as the user gives it; each `None` matches everything.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleSpec {
    pub action: Action,
    /// IPv4 or IPv6: a rule with a source applies to its family's traffic alone.
    pub source: Option<IpNet>,
    /// The ports clients address: published host ports, and the ports of containers' own
    /// addresses where the outside reaches those (routed and unprotected networks).
    pub ports: Option<PortRange>,
    pub proto: Option<Proto>,
    /// A container's name: the rule applies to its published ports and its own address.
    pub container: Option<String>,
}

impl RuleSpec {
    /// The checks of the CLI's parsers again, for requests that did not come through it.
    pub fn check(&self) -> Result<()> {
        if let Some(source) = self.source {
            check_source(source).map_err(anyhow::Error::msg)?;
        }
        if let Some(ports) = self.ports {
            PortRange::new(ports.first, ports.last).map_err(anyhow::Error::msg)?;
        }
        Ok(())
    }

    /// Whether the rule applies to traffic of `proto` for `container`, from clients of the
    /// family `ipv6`, whatever port they address.
    fn applies_to_some_port(&self, container: &str, proto: Proto, ipv6: bool) -> bool {
        self.proto.is_none_or(|p| p == proto)
            && self.container.as_deref().is_none_or(|c| c == container)
            && self.source.is_none_or(|s| s.addr().is_ipv6() == ipv6)
    }

    /// Whether its ports hold `port` (a rule without them holds every port).
    fn covers_port(&self, port: u16) -> bool {
        self.ports.is_none_or(|r| r.contains(port))
    }

    /// The source, or every address of `any`'s family.
    fn source_or(&self, any: IpNet) -> IpNet {
        self.source.unwrap_or(any)
    }
}

/// A rule in the firewall: its ID (never reused) and the slot of its hit counter.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    pub id: u32,
    pub slot: u32,
    #[serde(flatten)]
    pub spec: RuleSpec,
}

impl Rule {
    fn verdict(&self) -> FirewallVerdict {
        let action = match self.spec.action {
            Action::Allow => FirewallVerdict::ALLOW,
            Action::Deny => FirewallVerdict::DENY,
        };
        FirewallVerdict { slot: self.slot, action, _pad: [0; 3] }
    }
}

/// A rule as `firewall ls` shows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Listed {
    #[serde(flatten)]
    pub rule: Rule,
    pub hits: u64,
}

/// The ordered rules, as the state keeps them: first match wins, no match accepts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rules {
    pub rules: Vec<Rule>,
    /// The next rule's ID.
    pub next_id: u32,
}

impl Rules {
    /// Appends a rule; refused past `FirewallVerdict::MAX_RULES`.
    pub fn add(&mut self, spec: RuleSpec) -> Result<Rule> {
        let slot = (0..FirewallVerdict::MAX_RULES).find(|s| self.rules.iter().all(|r| r.slot != *s));
        let Some(slot) = slot else {
            bail!(
                "the firewall holds at most {} rules; remove some first (`dataplane firewall rm ID`)",
                FirewallVerdict::MAX_RULES
            );
        };
        let rule = Rule { id: self.next_id.max(1), slot, spec };
        self.next_id = rule.id + 1;
        self.rules.push(rule.clone());
        Ok(rule)
    }

    /// Removes the rules `ids`, all or none.
    pub fn remove(&mut self, ids: &[u32]) -> Result<()> {
        if let Some(missing) = ids.iter().find(|id| !self.rules.iter().any(|r| r.id == **id)) {
            bail!("no firewall rule with ID {missing}; `dataplane firewall ls` lists them");
        }
        self.rules.retain(|r| !ids.contains(&r.id));
        Ok(())
    }

    pub fn compiler(&self) -> Compiler<'_> {
        Compiler { rules: &self.rules, memo: HashMap::new(), blocks: HashMap::new() }
    }
}

/// The trie entries of one rule set, sorted: source prefix (all of one family) and
/// verdict. Empty: no rule applies, and the programs are not asked (rule set 0). Shared,
/// not copied, by the ports that have it.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RuleSet(pub Arc<[(IpNet, FirewallVerdict)]>);

/// A block of ports for a longest-prefix match: those whose first `len` bits are
/// `first`'s (`len` 0: every port, 16: `first` alone).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortPrefix {
    pub first: u16,
    pub len: u8,
}

impl PortPrefix {
    const ALL: Self = Self { first: 0, len: 0 };

    /// The port past its last.
    fn end(self) -> u32 {
        u32::from(self.first) + (1 << (16 - self.len))
    }

    /// Its two halves: one bit longer. Not of a block of one port.
    fn halves(self) -> [Self; 2] {
        let len = self.len + 1;
        [Self { first: self.first, len }, Self { first: self.first + (1 << (16 - len)), len }]
    }
}

/// The rule sets of one protocol's ports on a container's own address: blocks of ports,
/// the longest block holding a port giving its set.
pub type PortBlocks = Vec<(PortPrefix, RuleSet)>;

/// Compiles rule sets; ports that the same rules apply to (all the ports of a range, say)
/// are compiled once.
pub struct Compiler<'a> {
    rules: &'a [Rule],
    /// By the family's "any" source and the rules applying.
    memo: HashMap<(IpNet, Vec<usize>), RuleSet>,
    /// `direct`'s blocks, by family, protocol and the rules applying to some port.
    blocks: HashMap<(bool, Proto, Vec<usize>), PortBlocks>,
}

impl Compiler<'_> {
    /// The rule set of `container`'s published `mapping`, whose clients address its host
    /// port.
    pub fn rule_set(&mut self, container: &str, mapping: &PortMapping) -> RuleSet {
        self.rule_set_at(container, mapping.proto, mapping.host_port, mapping.host_ip.is_ipv6())
    }

    /// The rule set of traffic to `port` of `proto` for `container`, from clients of the
    /// family `ipv6`.
    pub fn rule_set_at(&mut self, container: &str, proto: Proto, port: u16, ipv6: bool) -> RuleSet {
        let applying = self.applying(container, proto, ipv6).into_iter();
        let applying = applying.filter(|i| self.rules[*i].spec.covers_port(port)).collect();
        self.compile(ipv6, applying)
    }

    /// The rules that apply to some port of `proto` for `container`, from clients of the
    /// family `ipv6`: their indices, in order.
    fn applying(&self, container: &str, proto: Proto, ipv6: bool) -> Vec<usize> {
        (0..self.rules.len())
            .filter(|i| self.rules[*i].spec.applies_to_some_port(container, proto, ipv6))
            .collect()
    }

    /// The rule set of the rules `applying` (indices, in order), for clients of the family
    /// `ipv6`.
    fn compile(&mut self, ipv6: bool, applying: Vec<usize>) -> RuleSet {
        let rules = self.rules;
        self.memo
            .entry((any_source(ipv6), applying))
            .or_insert_with_key(|(any, applying)| {
                let mut entries: BTreeMap<IpNet, FirewallVerdict> = BTreeMap::new();
                for (position, index) in applying.iter().enumerate() {
                    let prefix = rules[*index].spec.source_or(*any);
                    if entries.contains_key(&prefix) {
                        continue;
                    }
                    // The first rule covering the prefix: this one, or one before it.
                    let first = applying[..=position]
                        .iter()
                        .map(|i| &rules[*i])
                        .find(|r| r.spec.source_or(*any).contains(&prefix))
                        .expect("a rule covers its own source");
                    entries.insert(prefix, first.verdict());
                }
                RuleSet(entries.into_iter().collect())
            })
            .clone()
    }

    /// The rule sets of traffic to every port of `container`'s own address, from clients
    /// of the family `ipv6` (its address's), by protocol: for each, the ports are cut where
    /// a range of the rules applying starts or ends, and each piece gets the rule set of
    /// the rules applying to its ports, in blocks (`port_blocks`). None for a protocol no
    /// rule applies to.
    pub fn direct(&mut self, container: &str, ipv6: bool) -> Vec<(Proto, PortBlocks)> {
        let mut direct = vec![];
        for proto in [Proto::Tcp, Proto::Udp] {
            let applying = self.applying(container, proto, ipv6);
            if applying.is_empty() {
                continue;
            }
            let key = (ipv6, proto, applying);
            let blocks = match self.blocks.get(&key) {
                Some(blocks) => blocks.clone(),
                None => {
                    let blocks = self.blocks_of(ipv6, &key.2);
                    self.blocks.insert(key, blocks.clone());
                    blocks
                }
            };
            direct.push((proto, blocks));
        }
        direct
    }

    /// The blocks of the ports of one protocol that the rules `applying` apply to, some
    /// to some ports only (see `direct`).
    fn blocks_of(&mut self, ipv6: bool, applying: &[usize]) -> PortBlocks {
        let mut cuts = BTreeSet::from([0u32]);
        for range in applying.iter().filter_map(|i| self.rules[*i].spec.ports) {
            cuts.extend([u32::from(range.first), u32::from(range.last) + 1]);
        }
        let mut pieces: Vec<(u16, RuleSet)> = vec![];
        for first in cuts.into_iter().filter_map(|cut| u16::try_from(cut).ok()) {
            let here = applying.iter().copied().filter(|i| self.rules[*i].spec.covers_port(first)).collect();
            let set = self.compile(ipv6, here);
            // Neighbours with the same set (a shadowed rule's range, say) are one piece.
            if pieces.last().is_none_or(|(_, last)| *last != set) {
                pieces.push((first, set));
            }
        }
        port_blocks(&pieces, &RuleSet::default())
    }
}

/// Blocks of ports that give each port the value of its piece, for a longest-prefix match:
/// `pieces` are (first port, value), by port, the first at port 0, each running to the
/// next. A block whose ports share one value is an entry, unless the block around it
/// gives that value already (`outside`, around them all, needs no entry); a block of
/// several values is an entry with the one covering most of its ports, and its halves
/// override it where they differ. So a range amid others takes its own blocks alone, and a
/// port amid a range one block: not the blocks of every piece around it.
fn port_blocks<V: Clone + Ord>(pieces: &[(u16, V)], outside: &V) -> Vec<(PortPrefix, V)> {
    let mut blocks = vec![];
    fill_block(pieces, PortPrefix::ALL, outside, &mut blocks);
    blocks
}

/// `port_blocks` for the ports of `block`, inside a block that gives them `around`.
fn fill_block<V: Clone + Ord>(
    pieces: &[(u16, V)],
    block: PortPrefix,
    around: &V,
    blocks: &mut Vec<(PortPrefix, V)>,
) {
    // The pieces holding ports of the block: the last one starting at or before its first
    // port, up to the last one starting before its end.
    let start = pieces.partition_point(|(first, _)| *first <= block.first) - 1;
    let end = pieces.partition_point(|(first, _)| u32::from(*first) < block.end());
    let mut ports: BTreeMap<&V, u32> = BTreeMap::new();
    for (i, (first, value)) in pieces.iter().enumerate().take(end).skip(start) {
        let next = pieces.get(i + 1).map_or(1 << 16, |(next, _)| u32::from(*next));
        *ports.entry(value).or_default() +=
            next.min(block.end()) - u32::from(*first).max(u32::from(block.first));
    }
    // The value of most ports; on a tie, the one around, which needs no entry.
    let (value, _) = ports
        .iter()
        .max_by_key(|(value, count)| (**count, **value == around))
        .expect("a block holds ports of some piece");
    let value = (*value).clone();
    if value != *around {
        blocks.push((block, value.clone()));
    }
    if ports.len() > 1 {
        for half in block.halves() {
            fill_block(pieces, half, &value, blocks);
        }
    }
}

/// The blocks of ports of a container's own address, as FIREWALL_DIRECT holds them: by
/// protocol number and block, their rule sets' IDs.
type DirectBlocks = BTreeMap<(u8, PortPrefix), u16>;

/// The rule sets in the FIREWALL trie and their IDs, and the entries of FIREWALL_DIRECT. A
/// set keeps its ID while some port uses it; a changed set is written under a new ID
/// before ports point at it, so that a packet never sees half a set.
#[derive(Default)]
pub struct Installed {
    ids: BTreeMap<RuleSet, u16>,
    /// FIREWALL_DIRECT's entries, by container address.
    direct: BTreeMap<IpAddr, DirectBlocks>,
}

impl Installed {
    /// The sets and blocks an earlier run left in the (pinned) tries.
    pub fn load(datapath: &mut Datapath) -> Result<Self> {
        let mut sets: BTreeMap<u16, Vec<(IpNet, FirewallVerdict)>> = BTreeMap::new();
        for (id, source, verdict) in datapath.firewall_entries()? {
            sets.entry(id).or_default().push((source, verdict));
        }
        let ids = sets
            .into_iter()
            .map(|(id, mut entries)| {
                entries.sort();
                (RuleSet(entries.into()), id)
            })
            .collect();
        let mut direct: BTreeMap<IpAddr, DirectBlocks> = BTreeMap::new();
        for (key, id) in datapath.firewall_direct_entries()? {
            let data = key.data();
            let len = key.prefix_len().saturating_sub(FirewallDirectKey::PORT_OFFSET_BITS) as u8;
            let block = PortPrefix { first: u16::from_be(data.port), len };
            direct.entry(maps::ip_addr(&data.addr)).or_default().insert((data.proto, block), id);
        }
        Ok(Self { ids, direct })
    }

    /// Entries of `sets` in the trie of each family: IPv4's, IPv6's.
    fn entries<'a>(sets: impl Iterator<Item = &'a RuleSet>) -> [usize; 2] {
        let mut counts = [0, 0];
        for (source, _) in sets.flat_map(|s| s.0.iter()) {
            counts[usize::from(source.addr().is_ipv6())] += 1;
        }
        counts
    }

    /// The IDs of `sets`, and the sets not installed yet with the IDs they get (none in
    /// use). Refused when the trie could not hold them next to the installed ones.
    fn assign(&self, sets: &[RuleSet]) -> Result<(Vec<u16>, BTreeMap<RuleSet, u16>)> {
        let mut new: BTreeMap<RuleSet, u16> = BTreeMap::new();
        let mut ids = Vec::with_capacity(sets.len());
        let mut free = (1..=u16::MAX).filter(|id| !self.ids.values().any(|used| used == id));
        for set in sets {
            let id = match (set.0.is_empty(), self.ids.get(set).or(new.get(set))) {
                (true, _) => 0,
                (false, Some(id)) => *id,
                (false, None) => {
                    let Some(id) = free.next() else {
                        bail!(
                            "the published ports would need more than {} firewall rule sets; use fewer \
                             port- or container-specific rules",
                            u16::MAX
                        );
                    };
                    new.insert(set.clone(), id);
                    id
                }
            };
            ids.push(id);
        }
        let needed = Self::entries(self.ids.keys().chain(new.keys()));
        if let Some(needed) = needed.into_iter().find(|n| *n > FirewallVerdict::TRIE_SIZE as usize) {
            bail!(
                "the firewall rules would take {needed} trie entries, more than the {} it holds; merge \
                 sources into wider CIDRs or remove rules (`dataplane firewall rm ID`)",
                FirewallVerdict::TRIE_SIZE
            );
        }
        Ok((ids, new))
    }

    /// The IDs of `sets`, writing those the trie does not hold yet; nothing is written when
    /// they do not fit.
    pub fn install(&mut self, datapath: &mut Datapath, sets: &[RuleSet]) -> Result<Vec<u16>> {
        let (ids, new) = self.assign(sets)?;
        for (set, id) in &new {
            let written = set
                .0
                .iter()
                .try_for_each(|(source, verdict)| datapath.set_firewall_entry(*id, *source, *verdict));
            if let Err(e) = written {
                for (set, id) in &new {
                    remove_set(datapath, set, *id);
                }
                return Err(e);
            }
        }
        self.ids.extend(new);
        Ok(ids)
    }

    /// Gives the ports of container address `addr` the rule sets of `direct`
    /// (`Compiler::direct`'s; empty: none), installing the sets first; the address's other
    /// blocks go. Each port keeps its old set or has its new one at every moment: new
    /// blocks go in longest first, so that a port matches none before its own, and the old
    /// ones left go shortest first, so that a port never falls back on a third's.
    /// Refused, writing nothing, when FIREWALL_DIRECT could not hold the blocks.
    pub fn set_direct(
        &mut self,
        datapath: &mut Datapath,
        addr: IpAddr,
        direct: &[(Proto, PortBlocks)],
    ) -> Result<()> {
        if direct.is_empty() && !self.direct.contains_key(&addr) {
            return Ok(());
        }
        self.write_direct(datapath, &[(addr, direct)])
    }

    /// Gives every container address of `direct` its blocks (as `set_direct`), and removes
    /// the blocks of any other.
    pub fn sync_direct(
        &mut self,
        datapath: &mut Datapath,
        direct: &BTreeMap<IpAddr, Vec<(Proto, PortBlocks)>>,
    ) -> Result<()> {
        let gone = self.direct.keys().filter(|addr| !direct.contains_key(addr));
        let mut wanted: Vec<(IpAddr, &[(Proto, PortBlocks)])> = gone.map(|addr| (*addr, &[][..])).collect();
        wanted.extend(direct.iter().map(|(addr, blocks)| (*addr, blocks.as_slice())));
        self.write_direct(datapath, &wanted)
    }

    /// `set_direct` for each address of `wanted`, their sets installed at once.
    fn write_direct(
        &mut self,
        datapath: &mut Datapath,
        wanted: &[(IpAddr, &[(Proto, PortBlocks)])],
    ) -> Result<()> {
        let blocks_of =
            |direct: &[(Proto, PortBlocks)]| direct.iter().map(|(_, blocks)| blocks.len()).sum::<usize>();
        let rewritten: BTreeSet<IpAddr> = wanted.iter().map(|(addr, _)| *addr).collect();
        let kept = self.direct.iter().filter(|(addr, _)| !rewritten.contains(addr));
        let entries = kept.map(|(_, blocks)| blocks.len()).sum::<usize>()
            + wanted.iter().map(|(_, direct)| blocks_of(direct)).sum::<usize>();
        if entries > FirewallDirectKey::TRIE_SIZE as usize {
            bail!(
                "the firewall of containers' own addresses would take {entries} entries, more than the {} it \
                 holds; use fewer port ranges, or remove rules (`dataplane firewall rm ID`)",
                FirewallDirectKey::TRIE_SIZE
            );
        }
        let sets: Vec<RuleSet> = wanted
            .iter()
            .flat_map(|(_, direct)| direct.iter().flat_map(|(_, b)| b.iter().map(|(_, set)| set.clone())))
            .collect();
        let mut ids = self.install(datapath, &sets)?.into_iter();
        for (addr, direct) in wanted {
            let blocks = direct
                .iter()
                .flat_map(|(proto, blocks)| blocks.iter().map(|(block, _)| (proto.number(), *block)));
            let blocks: DirectBlocks = blocks.zip(ids.by_ref()).collect();
            let written = self.direct.entry(*addr).or_default();
            let rewritten = rewrite_blocks(datapath, *addr, written, &blocks);
            if written.is_empty() {
                self.direct.remove(addr);
            }
            rewritten?;
        }
        Ok(())
    }

    /// Removes from the trie every set but `used`.
    pub fn retain(&mut self, datapath: &mut Datapath, used: &BTreeSet<RuleSet>) {
        let unused: Vec<(RuleSet, u16)> =
            self.ids.iter().filter(|(set, _)| !used.contains(*set)).map(|(s, id)| (s.clone(), *id)).collect();
        for (set, id) in unused {
            remove_set(datapath, &set, id);
            self.ids.remove(&set);
        }
    }
}

/// Brings the blocks of container address `addr` from `written` to `wanted`, in the order
/// `Installed::set_direct` says, `written` kept as FIREWALL_DIRECT holds them.
fn rewrite_blocks(
    datapath: &mut Datapath,
    addr: IpAddr,
    written: &mut DirectBlocks,
    wanted: &DirectBlocks,
) -> Result<()> {
    let mut new: Vec<_> =
        wanted.iter().filter(|(block, id)| written.get(block) != Some(id)).map(|(b, id)| (*b, *id)).collect();
    new.sort_by_key(|((_, prefix), _)| std::cmp::Reverse(prefix.len));
    let mut old: Vec<_> = written.keys().filter(|block| !wanted.contains_key(block)).copied().collect();
    old.sort_by_key(|(_, prefix)| prefix.len);
    for (block, id) in new {
        datapath.set_firewall_direct_entry(&direct_key(addr, block), id)?;
        written.insert(block, id);
    }
    for block in old {
        datapath.remove_firewall_direct_entry(&direct_key(addr, block))?;
        written.remove(&block);
    }
    Ok(())
}

/// The FIREWALL_DIRECT key of `block` of container address `addr`.
fn direct_key(addr: IpAddr, (proto, block): (u8, PortPrefix)) -> Key<FirewallDirectKey> {
    Key::new(
        FirewallDirectKey::PORT_OFFSET_BITS + u32::from(block.len),
        FirewallDirectKey { addr: maps::ip_address(addr), proto, _pad: 0, port: block.first.to_be() },
    )
}

/// Best effort: an entry left behind only takes room, no mapping points at its set.
fn remove_set(datapath: &mut Datapath, set: &RuleSet, id: u16) {
    for (source, _) in set.0.iter() {
        if let Err(e) = datapath.remove_firewall_entry(id, *source) {
            log::warn!("removing firewall rule set {id}: {e:#}");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    use super::*;

    fn spec(action: Action, source: Option<&str>) -> RuleSpec {
        RuleSpec {
            action,
            source: source.map(|s| parse_source(s).unwrap()),
            ports: None,
            proto: None,
            container: None,
        }
    }

    fn mapping(port: u16, proto: Proto) -> PortMapping {
        PortMapping {
            host_ip: Ipv4Addr::UNSPECIFIED.into(),
            host_port: port,
            container_port: 80,
            proto,
            any_family: true,
        }
    }

    fn rules(specs: Vec<RuleSpec>) -> Rules {
        let mut rules = Rules::default();
        for spec in specs {
            rules.add(spec).unwrap();
        }
        rules
    }

    fn mapping6(port: u16, proto: Proto) -> PortMapping {
        PortMapping { host_ip: Ipv6Addr::UNSPECIFIED.into(), ..mapping(port, proto) }
    }

    /// What the trie answers for `addr`: the longest prefix holding it, as the kernel does.
    fn lookup(set: &RuleSet, addr: &str) -> Option<(Action, u32)> {
        let addr: IpAddr = addr.parse().unwrap();
        let (_, verdict) =
            set.0.iter().filter(|(p, _)| p.contains(&addr)).max_by_key(|(p, _)| p.prefix_len())?;
        let action = if verdict.action == FirewallVerdict::DENY { Action::Deny } else { Action::Allow };
        Some((action, verdict.slot))
    }

    /// First match over the rules themselves, the semantics the trie must reproduce.
    fn first_match(rules: &Rules, addr: &str) -> Option<(Action, u32)> {
        let addr: IpAddr = addr.parse().unwrap();
        let rule = rules.rules.iter().find(|r| r.spec.source.is_none_or(|s| s.contains(&addr)))?;
        Some((rule.spec.action, rule.slot))
    }

    #[test]
    fn nested_cidrs_keep_first_match_semantics() {
        use Action::{Allow, Deny};
        let rules = rules(vec![
            spec(Allow, Some("10.1.2.3")),
            spec(Deny, Some("10.1.0.0/16")),
            // Shadowed by the /16 before it: a source in 10.1.2.0/24 is denied.
            spec(Allow, Some("10.1.2.0/24")),
            spec(Allow, Some("10.0.0.0/8")),
            spec(Deny, None),
            // Shadowed entirely by the catch-all.
            spec(Allow, Some("192.0.2.0/24")),
        ]);
        let set = rules.compiler().rule_set("web", &mapping(8080, Proto::Tcp));
        for addr in ["10.1.2.3", "10.1.2.4", "10.1.9.9", "10.2.0.1", "192.0.2.1", "198.51.100.7", "0.0.0.0"] {
            assert_eq!(lookup(&set, addr), first_match(&rules, addr), "{addr}");
        }
        assert_eq!(lookup(&set, "10.1.2.4"), Some((Deny, 1)), "the /16 deny comes before the /24 allow");
        assert_eq!(lookup(&set, "192.0.2.1"), Some((Deny, 4)), "a rule after the catch-all never matches");
        assert_eq!(set.0.len(), 6, "one entry per distinct source prefix");
    }

    #[test]
    fn a_later_rule_with_the_same_source_never_overrides_an_earlier_one() {
        let rules =
            rules(vec![spec(Action::Deny, Some("203.0.113.2")), spec(Action::Allow, Some("203.0.113.2"))]);
        let set = rules.compiler().rule_set("web", &mapping(8080, Proto::Tcp));
        assert_eq!(set.0.len(), 1);
        assert_eq!(lookup(&set, "203.0.113.2"), Some((Action::Deny, 0)));
    }

    #[test]
    fn port_ranges_protocols_and_containers_choose_the_rules_of_a_mapping() {
        let rules = rules(vec![
            RuleSpec {
                ports: Some("8000-8010".parse().unwrap()),
                ..spec(Action::Deny, Some("192.0.2.0/24"))
            },
            RuleSpec { proto: Some(Proto::Udp), ..spec(Action::Deny, Some("198.51.100.0/24")) },
            RuleSpec { container: Some("db".into()), ..spec(Action::Deny, None) },
        ]);
        let mut compiler = rules.compiler();
        let sources = |set: RuleSet| set.0.iter().map(|(p, _)| p.to_string()).collect::<Vec<_>>();
        assert_eq!(sources(compiler.rule_set("web", &mapping(8000, Proto::Tcp))), ["192.0.2.0/24"]);
        assert_eq!(
            sources(compiler.rule_set("web", &mapping(8010, Proto::Udp))),
            ["192.0.2.0/24", "198.51.100.0/24"]
        );
        assert!(compiler.rule_set("web", &mapping(8011, Proto::Tcp)).0.is_empty(), "no rule: no set");
        assert_eq!(sources(compiler.rule_set("db", &mapping(5432, Proto::Tcp))), ["0.0.0.0/0"]);
    }

    #[test]
    fn mappings_with_the_same_rules_share_one_rule_set() {
        let rules = rules(vec![
            RuleSpec {
                ports: Some("8000-8999".parse().unwrap()),
                ..spec(Action::Deny, Some("192.0.2.0/24"))
            },
            RuleSpec { container: Some("db".into()), ..spec(Action::Deny, Some("198.51.100.0/24")) },
        ]);
        let mut compiler = rules.compiler();
        let sets: Vec<RuleSet> = [("web", 8080), ("api", 8081), ("db", 8082), ("web", 9000), ("db", 8083)]
            .iter()
            .map(|(name, port)| compiler.rule_set(name, &mapping(*port, Proto::Tcp)))
            .collect();
        let (ids, new) = Installed::default().assign(&sets).unwrap();
        assert_eq!(ids, [1, 1, 2, 0, 2], "web and api share a set, db has its own, 9000 none");
        assert_eq!(new.len(), 2);

        // Installed sets keep their IDs; a changed set gets one no installed set uses.
        let installed = Installed { ids: new, ..Installed::default() };
        let changed = RuleSet([(parse_source("192.0.2.0/25").unwrap(), sets[0].0[0].1)].into());
        let (ids, new) = installed.assign(&[sets[2].clone(), changed]).unwrap();
        assert_eq!(ids, [2, 3]);
        assert_eq!(new.values().copied().collect::<Vec<_>>(), [3]);
    }

    #[test]
    fn rule_sets_that_overflow_the_trie_are_refused() {
        let wide: Vec<(IpNet, FirewallVerdict)> = (0..FirewallVerdict::TRIE_SIZE / 2 + 1)
            .map(|i| (Ipv4Net::new(Ipv4Addr::from(i << 8), 24).unwrap().into(), FirewallVerdict::default()))
            .collect();
        let installed = Installed { ids: [(RuleSet(wide.clone().into()), 1)].into(), ..Installed::default() };
        let mut other = wide;
        other.pop();
        other.push((parse_source("255.255.255.255").unwrap(), FirewallVerdict::default()));
        let err = installed.assign(&[RuleSet(other.into())]).unwrap_err().to_string();
        assert!(err.contains("trie entries") && err.contains("firewall rm"), "{err}");
        // Each family has a trie of its own: IPv6 sets beside the full IPv4 trie fit.
        let wide6: Vec<(IpNet, FirewallVerdict)> = (0..FirewallVerdict::TRIE_SIZE / 2 + 1)
            .map(|i| {
                (
                    Ipv6Net::new(Ipv6Addr::from(u128::from(i) << 80), 48).unwrap().into(),
                    FirewallVerdict::default(),
                )
            })
            .collect();
        assert!(
            installed.assign(&[RuleSet(wide6.into())]).is_ok(),
            "IPv6 entries were counted against IPv4's trie"
        );
    }

    #[test]
    fn bad_input_is_refused_with_the_fix() {
        assert!(parse_source("10.0.0.300").unwrap_err().contains("198.51.100.0/24"));
        assert!(parse_source("10.0.0.5/24").unwrap_err().contains("write 10.0.0.0/24"));
        assert_eq!(parse_source("10.0.0.5").unwrap().to_string(), "10.0.0.5/32");
        assert_eq!(parse_source("2001:db8:1::/48").unwrap().to_string(), "2001:db8:1::/48");
        assert_eq!(parse_source("2001:db8:1::7").unwrap().to_string(), "2001:db8:1::7/128");
        let err = parse_source("2001:db8:1::7/48").unwrap_err();
        assert!(err.contains("write 2001:db8:1::/48") && err.contains("2001:db8:1::7/128"), "{err}");
        assert!(parse_source("2001:db8::zz").unwrap_err().contains("2001:db8:1::/48"));
        assert!("9000-8000".parse::<PortRange>().unwrap_err().contains("write 8000-9000"));
        assert!("0".parse::<PortRange>().unwrap_err().contains("1-65535"));
        assert!("http".parse::<PortRange>().unwrap_err().contains("8000-8010"));
        assert!(parse_proto("icmp").unwrap_err().contains("use tcp or udp"));
        let mut rules = Rules::default();
        rules.add(spec(Action::Deny, None)).unwrap();
        let err = rules.remove(&[1, 7]).unwrap_err().to_string();
        assert!(err.contains("ID 7") && err.contains("firewall ls"), "{err}");
        assert_eq!(rules.rules.len(), 1, "a refused rm removes nothing");
        let forged = RuleSpec { ports: Some(PortRange { first: 9, last: 1 }), ..spec(Action::Deny, None) };
        assert!(forged.check().is_err(), "the daemon checks requests again");
    }

    #[test]
    fn ids_are_never_reused_and_slots_are() {
        let mut rules = rules(vec![spec(Action::Deny, None), spec(Action::Allow, None)]);
        rules.remove(&[1]).unwrap();
        let rule = rules.add(spec(Action::Deny, None)).unwrap();
        assert_eq!((rule.id, rule.slot), (3, 0));
    }

    /// A rule with an IPv4 source is in IPv4 mappings' sets alone, one with an IPv6 source
    /// in IPv6 mappings' alone; a rule without one is in both, as each family's "any".
    #[test]
    fn sources_apply_to_their_own_familys_mappings_alone() {
        use Action::{Allow, Deny};
        let mixed = rules(vec![
            spec(Allow, Some("2001:db8:1:5::/64")),
            spec(Deny, Some("198.51.100.0/24")),
            spec(Deny, Some("2001:db8:1::/48")),
            spec(Allow, None),
        ]);
        let mut compiler = mixed.compiler();
        let (v4, v6) = (
            compiler.rule_set("web", &mapping(8080, Proto::Tcp)),
            compiler.rule_set("web", &mapping6(8080, Proto::Tcp)),
        );
        let sources = |set: &RuleSet| set.0.iter().map(|(p, _)| p.to_string()).collect::<Vec<_>>();
        assert_eq!(sources(&v4), ["0.0.0.0/0", "198.51.100.0/24"]);
        assert_eq!(sources(&v6), ["::/0", "2001:db8:1::/48", "2001:db8:1:5::/64"]);
        for addr in ["198.51.100.7", "192.0.2.1", "2001:db8:1::9", "2001:db8:1:5::9", "2001:db8:2::1"] {
            let set = if addr.contains(':') { &v6 } else { &v4 };
            assert_eq!(lookup(set, addr), first_match(&mixed, addr), "{addr}");
        }
        assert_eq!(lookup(&v6, "2001:db8:1::9"), Some((Deny, 2)));
        assert_eq!(lookup(&v6, "2001:db8:1:5::9"), Some((Allow, 0)));
        assert_eq!(lookup(&v4, "198.51.100.7"), Some((Deny, 1)));

        // Only IPv6 sources: an IPv4 mapping has no rules, so no set.
        let only6 = rules(vec![spec(Deny, Some("2001:db8:1::/48"))]);
        let mut compiler = only6.compiler();
        assert!(compiler.rule_set("web", &mapping(8080, Proto::Tcp)).0.is_empty());
        assert_eq!(sources(&compiler.rule_set("web", &mapping6(8080, Proto::Tcp))), ["2001:db8:1::/48"]);

        // Rules saved before IPv6 sources (an IPv4 CIDR string) load as they were.
        let saved: RuleSpec = serde_json::from_str(
            r#"{"action": "deny", "source": "203.0.113.0/24", "ports": null, "proto": null, "container": null}"#,
        )
        .unwrap();
        assert_eq!(saved.source, Some(parse_source("203.0.113.0/24").unwrap()));
    }

    /// The value the longest of `blocks` holding `port` gives it, as the kernel's trie
    /// answers; `outside` when none holds it.
    fn block_value<V: Clone>(blocks: &[(PortPrefix, V)], port: u16, outside: &V) -> V {
        let holding = blocks.iter().filter(|(b, _)| (u32::from(b.first)..b.end()).contains(&u32::from(port)));
        holding.max_by_key(|(b, _)| b.len).map_or_else(|| outside.clone(), |(_, v)| v.clone())
    }

    /// The value of `port`'s piece.
    fn piece_value(pieces: &[(u16, u8)], port: u16) -> u8 {
        pieces.iter().rev().find(|(first, _)| *first <= port).unwrap().1
    }

    #[test]
    fn port_blocks_give_every_port_its_pieces_value_in_few_entries() {
        let cases: Vec<(Vec<(u16, u8)>, usize)> = vec![
            // The value around all of them: no entry.
            (vec![(0, 0)], 0),
            (vec![(0, 1)], 1),
            // A port amid a range: the range's block, and the port's.
            (vec![(0, 1), (80, 2), (81, 1)], 2),
            // A range amid nothing: its own blocks alone, nested (1000-2000: 7, where
            // blocks side by side take 8).
            (vec![(0, 0), (1000, 1), (2001, 0)], 7),
            // A range amid a rule on every port: the same, and one block for every port.
            (vec![(0, 2), (1000, 1), (2001, 2)], 8),
            // Two ports amid every other: every port's block and theirs.
            (vec![(0, 0), (1, 3), (65535, 4)], 3),
        ];
        for (pieces, entries) in &cases {
            let blocks = port_blocks(pieces, &0);
            assert_eq!(blocks.len(), *entries, "entries of {pieces:?}: {blocks:?}");
        }
        // Many ranges (a cheap deterministic generator): every port gets its piece's
        // value, and never more than two blocks per bit of a cut.
        let mut seed = 0x2545_f491_u32;
        for _ in 0..20 {
            let mut cuts = BTreeSet::from([0u16]);
            for _ in 0..12 {
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                cuts.insert((seed >> 8) as u16);
            }
            let pieces: Vec<(u16, u8)> =
                cuts.into_iter().enumerate().map(|(i, cut)| (cut, (i % 4) as u8)).collect();
            let blocks = port_blocks(&pieces, &0);
            for port in 0..=u16::MAX {
                assert_eq!(
                    block_value(&blocks, port, &0),
                    piece_value(&pieces, port),
                    "port {port} of {pieces:?}"
                );
            }
            assert!(blocks.len() <= 32 * pieces.len(), "{} blocks for {} pieces", blocks.len(), pieces.len());
        }
    }

    fn rule(action: Action, source: Option<&str>, ports: Option<&str>) -> RuleSpec {
        RuleSpec { ports: ports.map(|p| p.parse().unwrap()), ..spec(action, source) }
    }

    /// What `direct`'s blocks of `proto` answer for a packet from `source` to `port`.
    fn direct_verdict(
        direct: &[(Proto, PortBlocks)],
        proto: Proto,
        port: u16,
        source: &str,
    ) -> Option<(Action, u32)> {
        let blocks = direct.iter().find(|(p, _)| *p == proto).map(|(_, b)| b.as_slice()).unwrap_or_default();
        lookup(&block_value(blocks, port, &RuleSet::default()), source)
    }

    /// On a container's own address, `--port` is the port the client addresses, and the
    /// first matching rule decides there as on a published port.
    #[test]
    fn the_ports_of_a_containers_own_address_take_the_first_matching_rule_of_their_port() {
        use Action::{Allow, Deny};
        let rules = rules(vec![
            rule(Allow, Some("192.0.2.0/24"), Some("8000-8010")),
            rule(Deny, None, Some("8005")),
            rule(Deny, Some("198.51.100.0/24"), None),
            rule(Deny, Some("203.0.113.0/24"), Some("22")),
        ]);
        let mut compiler = rules.compiler();
        let direct = compiler.direct("web", false);
        assert_eq!(direct.iter().map(|(p, _)| *p).collect::<Vec<_>>(), [Proto::Tcp, Proto::Udp]);
        for proto in [Proto::Tcp, Proto::Udp] {
            let verdict = |port, source| direct_verdict(&direct, proto, port, source);
            assert_eq!(verdict(8005, "192.0.2.5"), Some((Allow, 0)), "the allow before the deny decides");
            assert_eq!(verdict(8005, "203.0.113.9"), Some((Deny, 1)), "the port's deny");
            assert_eq!(verdict(8004, "203.0.113.9"), None, "8004: no rule covers the source");
            assert_eq!(verdict(8003, "198.51.100.7"), Some((Deny, 2)), "the catch-all port's source deny");
            assert_eq!(verdict(9000, "198.51.100.7"), Some((Deny, 2)));
            assert_eq!(verdict(22, "203.0.113.9"), Some((Deny, 3)));
            assert_eq!(verdict(23, "203.0.113.9"), None, "a port outside every range of its source");
            // Every port's blocks give the rule set a published port there would get.
            for port in [0, 1, 21, 22, 23, 7999, 8000, 8004, 8005, 8006, 8010, 8011, 65535] {
                let blocks = &direct.iter().find(|(p, _)| *p == proto).unwrap().1;
                assert_eq!(
                    block_value(blocks, port, &RuleSet::default()),
                    compiler.rule_set_at("web", proto, port, false),
                    "port {port}"
                );
            }
        }
    }

    #[test]
    fn a_containers_own_ports_take_only_the_rules_of_their_protocol_container_and_family() {
        use Action::Deny;
        let rules = rules(vec![
            RuleSpec { proto: Some(Proto::Udp), ..rule(Deny, Some("192.0.2.0/24"), Some("53")) },
            RuleSpec { container: Some("db".into()), ..rule(Deny, None, Some("5432")) },
            rule(Deny, Some("2001:db8:1::/48"), None),
        ]);
        let mut compiler = rules.compiler();
        let protos = |direct: &[(Proto, PortBlocks)]| direct.iter().map(|(p, _)| *p).collect::<Vec<_>>();
        let web = compiler.direct("web", false);
        assert_eq!(protos(&web), [Proto::Udp], "no rule applies to web's TCP");
        assert_eq!(direct_verdict(&web, Proto::Udp, 53, "192.0.2.1"), Some((Deny, 0)));
        assert_eq!(web[0].1.len(), 1, "one block: port 53");
        let db = compiler.direct("db", false);
        assert_eq!(direct_verdict(&db, Proto::Tcp, 5432, "203.0.113.9"), Some((Deny, 1)));
        assert_eq!(direct_verdict(&web, Proto::Tcp, 5432, "203.0.113.9"), None, "db's rule is db's alone");
        let web6 = compiler.direct("web", true);
        assert_eq!(protos(&web6), [Proto::Tcp, Proto::Udp], "the IPv6 source's rule alone, on both");
        assert_eq!(direct_verdict(&web6, Proto::Tcp, 1, "2001:db8:1::9"), Some((Deny, 2)));
        assert_eq!(direct_verdict(&web6, Proto::Udp, 53, "192.0.2.1"), None, "an IPv4 source on IPv6");
        assert!(Rules::default().compiler().direct("web", false).is_empty(), "no rules: no blocks");
    }

    #[test]
    fn a_containers_own_ports_share_rule_sets_and_shadowed_ranges_take_no_block() {
        use Action::{Allow, Deny};
        let (deny_every_port, deny_range, allow_8080) = (
            rule(Deny, Some("192.0.2.0/24"), None),
            rule(Deny, Some("198.51.100.0/24"), Some("8000-8999")),
            rule(Allow, None, Some("8080")),
        );
        let rules = rules(vec![
            deny_every_port.clone(),
            // Shadowed: the same source, decided on every port by the rule before.
            rule(Allow, Some("192.0.2.0/24"), Some("100-200")),
            deny_range.clone(),
            allow_8080.clone(),
        ]);
        let mut compiler = rules.compiler();
        let direct = compiler.direct("web", false);
        let tcp = &direct[0].1;
        let set_at = |port| block_value(tcp, port, &RuleSet::default());
        assert!(Arc::ptr_eq(&set_at(8079).0, &set_at(8081).0), "both sides of 8080 share one rule set");
        assert_ne!(set_at(8079), set_at(8080));
        let without_shadowed = self::rules(vec![deny_every_port, deny_range, allow_8080]);
        let blocks = |direct: &[(Proto, PortBlocks)]| direct[0].1.iter().map(|(b, _)| *b).collect::<Vec<_>>();
        assert_eq!(
            blocks(&direct),
            blocks(&without_shadowed.compiler().direct("web", false)),
            "shadowed range"
        );
        let sets: Vec<RuleSet> =
            direct.iter().flat_map(|(_, b)| b.iter().map(|(_, set)| set.clone())).collect();
        let (ids, new) = Installed::default().assign(&sets).unwrap();
        assert_eq!(new.len(), 3, "every port's, the range's, 8080's");
        assert_eq!(ids[..tcp.len()], ids[tcp.len()..], "TCP's and UDP's blocks share the sets");
        // Another container with the same rules has the same blocks.
        assert_eq!(compiler.direct("api", false), direct);
    }
}
