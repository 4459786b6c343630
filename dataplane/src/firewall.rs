//! The firewall for published ports, user side: the ordered rules users manage with
//! `dataplane firewall` (parsed and checked here), their compilation into rule sets, and
//! the rule sets installed in the programs' FIREWALL trie.
//!
//! Each published mapping gets the rules that apply to it (protocol, host port, container,
//! and a source of the mapping's family), in order; mappings with the same outcome share
//! one rule set. A set is of one family: an IPv4 mapping's goes to the IPv4 trie, an IPv6
//! one's to the IPv6 trie, and a rule without a source is in both as 0.0.0.0/0 and ::/0. A rule set holds, for each
//! distinct source prefix among its rules, the verdict of the first rule covering that
//! prefix: for a source address, the longest prefix holding it is covered by exactly the
//! rules that cover the address, so one trie lookup gives the first match whatever the
//! number of rules. It never touches PUBLISHED itself; the daemon points mappings at sets.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fmt,
    str::FromStr,
};

use anyhow::{Result, bail};
use dataplane_common::FirewallVerdict;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

use crate::{
    maps::Datapath,
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

/// Host ports `first` to `last`, inclusive: never 0, never backwards.
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

/// Every address of the family of `mapping`'s host address: the source of a rule without
/// one, in that mapping's rule set.
fn any_source_of(mapping: &PortMapping) -> IpNet {
    match mapping.host_ip {
        std::net::IpAddr::V4(_) => Ipv4Net::default().into(),
        std::net::IpAddr::V6(_) => Ipv6Net::default().into(),
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
    /// Published host ports.
    pub ports: Option<PortRange>,
    pub proto: Option<Proto>,
    /// A container's name: the rule applies to its published ports.
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

    fn applies_to(&self, container: &str, mapping: &PortMapping) -> bool {
        self.proto.is_none_or(|p| p == mapping.proto)
            && self.ports.is_none_or(|r| r.contains(mapping.host_port))
            && self.container.as_deref().is_none_or(|c| c == container)
            && self.source.is_none_or(|s| s.addr().is_ipv4() == mapping.host_ip.is_ipv4())
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
        Compiler { rules: &self.rules, memo: HashMap::new() }
    }
}

/// The trie entries of one rule set, sorted: source prefix (all of one family) and
/// verdict. Empty: no rule applies, and the programs are not asked (rule set 0).
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RuleSet(pub Vec<(IpNet, FirewallVerdict)>);

/// Compiles the rule sets of published mappings; mappings that the same rules apply to
/// (all the ports of a range, say) are compiled once.
pub struct Compiler<'a> {
    rules: &'a [Rule],
    /// By the family's "any" source and the rules applying.
    memo: HashMap<(IpNet, Vec<usize>), RuleSet>,
}

impl Compiler<'_> {
    /// The rule set of `container`'s published `mapping`.
    pub fn rule_set(&mut self, container: &str, mapping: &PortMapping) -> RuleSet {
        let applying: Vec<usize> =
            (0..self.rules.len()).filter(|i| self.rules[*i].spec.applies_to(container, mapping)).collect();
        let rules = self.rules;
        self.memo
            .entry((any_source_of(mapping), applying))
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
}

/// The rule sets in the FIREWALL trie and their IDs. A set keeps its ID while some
/// mapping uses it; a changed set is written under a new ID before mappings point at it,
/// so that a packet never sees half a set.
#[derive(Default)]
pub struct Installed {
    ids: BTreeMap<RuleSet, u16>,
}

impl Installed {
    /// The sets an earlier run left in the (pinned) trie.
    pub fn load(datapath: &mut Datapath) -> Result<Self> {
        let mut sets: BTreeMap<u16, Vec<(IpNet, FirewallVerdict)>> = BTreeMap::new();
        for (id, source, verdict) in datapath.firewall_entries()? {
            sets.entry(id).or_default().push((source, verdict));
        }
        let ids = sets
            .into_iter()
            .map(|(id, mut entries)| {
                entries.sort();
                (RuleSet(entries), id)
            })
            .collect();
        Ok(Self { ids })
    }

    /// Entries of `sets` in the trie of each family: IPv4's, IPv6's.
    fn entries<'a>(sets: impl Iterator<Item = &'a RuleSet>) -> [usize; 2] {
        let mut counts = [0, 0];
        for (source, _) in sets.flat_map(|s| &s.0) {
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

/// Best effort: an entry left behind only takes room, no mapping points at its set.
fn remove_set(datapath: &mut Datapath, set: &RuleSet, id: u16) {
    for (source, _) in &set.0 {
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
        let installed = Installed { ids: new };
        let changed = RuleSet(vec![(parse_source("192.0.2.0/25").unwrap(), sets[0].0[0].1)]);
        let (ids, new) = installed.assign(&[sets[2].clone(), changed]).unwrap();
        assert_eq!(ids, [2, 3]);
        assert_eq!(new.values().copied().collect::<Vec<_>>(), [3]);
    }

    #[test]
    fn rule_sets_that_overflow_the_trie_are_refused() {
        let wide: Vec<(IpNet, FirewallVerdict)> = (0..FirewallVerdict::TRIE_SIZE / 2 + 1)
            .map(|i| (Ipv4Net::new(Ipv4Addr::from(i << 8), 24).unwrap().into(), FirewallVerdict::default()))
            .collect();
        let installed = Installed { ids: [(RuleSet(wide.clone()), 1)].into() };
        let mut other = wide;
        other.pop();
        other.push((parse_source("255.255.255.255").unwrap(), FirewallVerdict::default()));
        let err = installed.assign(&[RuleSet(other)]).unwrap_err().to_string();
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
        assert!(installed.assign(&[RuleSet(wide6)]).is_ok(), "IPv6 entries were counted against IPv4's trie");
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
}
