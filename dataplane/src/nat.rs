//! Outbound NAT, user side: finds the uplink and its address, picks the masquerade port
//! range away from the host's own ephemeral ports, programs NAT_CONFIG, and expires
//! tracked flows by protocol and state. The translation itself is the kernel programs'.

use std::{
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
    time::Duration,
};

use anyhow::{Context, Result, bail};
use dataplane_common::{
    FlowKey, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, IpAddress, NatConfig, ct_event, ct_state,
};
use serde::{Deserialize, Serialize};

use crate::{
    maps::{self, Datapath},
    netlink::Netlink,
};

/// The interface masqueraded traffic leaves by, and the address it takes there.
/// Whether published ports are served by XDP on the uplink (`daemon --xdp`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UplinkXdp {
    // The variants' doc comments are what `--help` says of each value.
    /// XDP where the uplink's driver has native XDP, except on a veth uplink (measured
    /// slower there than tc).
    // A veth's frames come from a local sender as skbs already, and handing them to a
    // container's veth as XDP frames adds a NAPI hop (measured at half tc's rate here).
    Auto,
    /// XDP on any uplink whose driver has native XDP.
    On,
    /// Published ports served from tc alone (an earlier run's XDP attachment is removed).
    Off,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Uplink {
    pub name: String,
    pub index: u32,
    pub addr: Ipv4Addr,
    /// Its global IPv6 address, which IPv6 leaves with (NAT66); none without one.
    pub addr6: Option<Ipv6Addr>,
    /// One end of a veth pair (a nested host, a test): its peer is the next hop.
    pub veth: bool,
}

/// Masquerading through an uplink: the uplink as last read, and the source ports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Masquerade {
    pub uplink: Uplink,
    pub ports: (u16, u16),
}

/// The uplink asked for, or the one holding the default route; `None` when the host has
/// no default route and none was asked for (NAT is then off).
pub async fn find_uplink(nl: &Netlink, requested: Option<&str>) -> Result<Option<Uplink>> {
    let (name, index) = match requested {
        Some(name) => (
            name.to_string(),
            nl.link_index(name).await?.with_context(|| {
                format!("--uplink {name}: no such interface in the daemon's namespace; check `ip link`")
            })?,
        ),
        None => {
            let default =
                nl.routes_v4().await?.into_iter().find(|(net, oif)| net.prefix_len() == 0 && oif.is_some());
            let Some((_, Some(index))) = default else {
                return Ok(None);
            };
            let name = nl.link_name(index).await?.unwrap_or_default();
            (name, index)
        }
    };
    let (addr, addr6) = uplink_addresses(nl, index).await?;
    let Some(addr) = addr else {
        bail!("uplink {name} has no IPv4 address to masquerade with; add one or pick another --uplink");
    };
    if addr6.is_none() {
        log::info!("uplink {name} has no global IPv6 address: IPv6 from containers is not masqueraded");
    }
    let veth = nl.is_veth(index).await?;
    Ok(Some(Uplink { name, index, addr, addr6, veth }))
}

/// The addresses an uplink masquerades as: its first IPv4 address and its first global
/// IPv6 address, as the kernel lists them now.
pub async fn uplink_addresses(nl: &Netlink, index: u32) -> Result<(Option<Ipv4Addr>, Option<Ipv6Addr>)> {
    let addr = nl.ipv4_addresses(index).await?.into_iter().next();
    let addr6 = nl.ipv6_global_addresses(index).await?.into_iter().next();
    Ok((addr, addr6))
}

/// Parses `--nat-port-range 61000-65535`.
pub fn parse_port_range(s: &str) -> Result<(u16, u16), String> {
    let (lo, hi) =
        s.split_once('-').ok_or_else(|| format!("{s:?}: expected FIRST-LAST, like 61000-65535"))?;
    let lo: u16 = lo.parse().map_err(|_| format!("{s:?}: {lo:?} is not a port"))?;
    let hi: u16 = hi.parse().map_err(|_| format!("{s:?}: {hi:?} is not a port"))?;
    if lo == 0 || lo > hi {
        return Err(format!("{s:?}: expected 1 <= FIRST <= LAST"));
    }
    Ok((lo, hi))
}

/// The host's ephemeral port range (net.ipv4.ip_local_port_range of our namespace).
pub fn local_port_range() -> Result<(u16, u16)> {
    let raw = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .context("reading /proc/sys/net/ipv4/ip_local_port_range")?;
    let mut parts = raw.split_whitespace().map(str::parse::<u16>);
    match (parts.next(), parts.next()) {
        (Some(Ok(lo)), Some(Ok(hi))) => Ok((lo, hi)),
        _ => bail!("cannot parse ip_local_port_range {raw:?}"),
    }
}

const MIN_RANGE: u32 = 1024;

/// The masquerade ports: those asked for, which must not overlap the host's ephemeral
/// range, or the ports above it (else below it) when there are enough of them.
pub fn choose_port_range(requested: Option<(u16, u16)>, local: (u16, u16)) -> Result<(u16, u16)> {
    let overlaps = |(lo, hi): (u16, u16)| lo <= local.1 && local.0 <= hi;
    if let Some(range) = requested {
        if overlaps(range) {
            bail!(
                "--nat-port-range {}-{} overlaps the host's ip_local_port_range {}-{}: masqueraded flows would \
                 collide with the host's own connections; pick ports outside it",
                range.0,
                range.1,
                local.0,
                local.1
            );
        }
        return Ok(range);
    }
    if u32::from(u16::MAX - local.1) >= MIN_RANGE {
        return Ok((local.1 + 1, u16::MAX));
    }
    if u32::from(local.0) >= 1024 + MIN_RANGE {
        return Ok((1024, local.0 - 1));
    }
    bail!(
        "ip_local_port_range {}-{} leaves fewer than {MIN_RANGE} ports for masquerading; give --nat-port-range",
        local.0,
        local.1
    )
}

pub fn config(uplink: &Uplink, ports: (u16, u16)) -> NatConfig {
    NatConfig {
        uplink_ifindex: uplink.index,
        port_min: ports.0,
        port_max: ports.1,
        addr: uplink.addr.octets(),
        flags: if uplink.veth { NatConfig::UPLINK_VETH } else { 0 }
            | if uplink.addr6.is_some() { NatConfig::IPV6 } else { 0 },
        addr6: uplink.addr6.map(|a| a.octets()).unwrap_or_default(),
    }
}

/// How long a flow lives without traffic, by protocol and state (as Linux conntrack, but
/// shorter for established TCP: a container host churns).
pub fn idle_timeout(proto: u8, state: u8) -> Duration {
    let secs = match (proto, state) {
        (IPPROTO_TCP, ct_state::ESTABLISHED) => 6 * 3600,
        (IPPROTO_TCP, ct_state::NEW) => 60,
        (IPPROTO_TCP, ct_state::CLOSING) => 30,
        (IPPROTO_TCP, _) => 10,
        (IPPROTO_UDP, ct_state::ESTABLISHED) => 120,
        (IPPROTO_UDP, _) => 30,
        (IPPROTO_ICMP, _) => 30,
        _ => 30,
    };
    Duration::from_secs(secs)
}

/// CLOCK_MONOTONIC_COARSE in nanoseconds: the clock the programs stamp flows with
/// (bpf_ktime_get_coarse_ns), so that a departure and the flows after it compare right
/// even within one clock tick.
pub fn monotonic_ns() -> u64 {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC_COARSE)
        .expect("CLOCK_MONOTONIC_COARSE exists");
    now.tv_sec() as u64 * 1_000_000_000 + now.tv_nsec() as u64
}

fn expired(proto: u8, state: u8, last_seen_ns: u64, now_ns: u64) -> bool {
    now_ns.saturating_sub(last_seen_ns) > idle_timeout(proto, state).as_nanos() as u64
}

/// Flows of each conntrack table: masqueraded, confirmed (SNAT_CT) and not yet
/// (SNAT_NEW), and to published ports, confirmed (DNAT_CT) and not yet (DNAT_NEW).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PerTable {
    pub masquerade: u64,
    pub masquerade_unconfirmed: u64,
    pub published: u64,
    pub published_unconfirmed: u64,
}

impl PerTable {
    pub fn total(&self) -> u64 {
        self.masquerade + self.masquerade_unconfirmed + self.published + self.published_unconfirmed
    }

    /// Each table's figure with the table's kind (`masquerade`, `published`) and whether
    /// it holds confirmed flows: how `stats` and the metrics name them.
    pub fn by_table(&self) -> [(&'static str, bool, u64); 4] {
        [
            ("masquerade", true, self.masquerade),
            ("masquerade", false, self.masquerade_unconfirmed),
            ("published", true, self.published),
            ("published", false, self.published_unconfirmed),
        ]
    }
}

/// The tables at one moment: the programs' event counts and the live entries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableSnapshot {
    pub events: [u64; ct_event::COUNT as usize],
    pub live: PerTable,
}

impl TableSnapshot {
    pub fn take(dp: &mut Datapath) -> Result<Self> {
        Ok(Self {
            events: dp.ct_events()?,
            live: PerTable {
                masquerade: dp.conntrack()?.len() as u64,
                masquerade_unconfirmed: dp.conntrack_unconfirmed()?.len() as u64,
                published: dp.dnat_conntrack()?.len() as u64,
                published_unconfirmed: dp.dnat_unconfirmed()?.len() as u64,
            },
        })
    }
}

/// Counts what the LRU tables evicted since the daemon started, which the kernel does not
/// report: a flow that entered a table and is neither there any more, nor removed by the
/// daemon, nor reclaimed or confirmed (moved on) by the programs, was evicted to make room.
#[derive(Debug)]
pub struct ConntrackAccount {
    start: TableSnapshot,
    forgotten: PerTable,
}

impl ConntrackAccount {
    pub fn new(start: TableSnapshot) -> Self {
        Self { start, forgotten: PerTable::default() }
    }

    /// Records flows the daemon removed.
    pub fn forgot(&mut self, removed: PerTable) {
        self.forgotten.masquerade += removed.masquerade;
        self.forgotten.masquerade_unconfirmed += removed.masquerade_unconfirmed;
        self.forgotten.published += removed.published;
        self.forgotten.published_unconfirmed += removed.published_unconfirmed;
    }

    pub fn evictions(&self, now: &TableSnapshot) -> PerTable {
        let delta = |event: u32| {
            i128::from(now.events[event as usize]) - i128::from(self.start.events[event as usize])
        };
        let evicted = |created: i128, gone_otherwise: i128, live_now: u64, live_then: u64| {
            let grown = i128::from(live_now) - i128::from(live_then);
            // Two CPUs creating the same flow at once count it twice: never below zero.
            (created - gone_otherwise - grown).max(0) as u64
        };
        PerTable {
            // Flows enter SNAT_CT only when SNAT_NEW's are confirmed.
            masquerade: evicted(
                delta(ct_event::SNAT_CONFIRMED),
                delta(ct_event::SNAT_RECLAIMED_CONFIRMED) + i128::from(self.forgotten.masquerade),
                now.live.masquerade,
                self.start.live.masquerade,
            ),
            masquerade_unconfirmed: evicted(
                delta(ct_event::SNAT_CREATED),
                delta(ct_event::SNAT_CONFIRMED)
                    + delta(ct_event::SNAT_RECLAIMED)
                    + i128::from(self.forgotten.masquerade_unconfirmed),
                now.live.masquerade_unconfirmed,
                self.start.live.masquerade_unconfirmed,
            ),
            // Flows enter DNAT_CT only when DNAT_NEW's are confirmed.
            published: evicted(
                delta(ct_event::DNAT_CONFIRMED),
                i128::from(self.forgotten.published),
                now.live.published,
                self.start.live.published,
            ),
            published_unconfirmed: evicted(
                delta(ct_event::DNAT_CREATED),
                delta(ct_event::DNAT_CONFIRMED) + i128::from(self.forgotten.published_unconfirmed),
                now.live.published_unconfirmed,
                self.start.live.published_unconfirmed,
            ),
        }
    }
}

/// What deciding to forget a flow looks at besides its key.
#[derive(Clone, Copy, Debug)]
pub struct FlowTimes {
    pub state: u8,
    pub created_ns: u64,
    pub last_seen_ns: u64,
}

/// Forgets the tracked flows, masqueraded and published (confirmed or not), that `pred`
/// picks by their container-side key (container address and port first); returns how
/// many of each.
pub fn forget_where(dp: &mut Datapath, pred: impl Fn(&FlowKey, FlowTimes) -> bool) -> Result<PerTable> {
    let times = |state, created_ns, last_seen_ns| FlowTimes { state, created_ns, last_seen_ns };
    let snat_pick = |flows: Vec<(FlowKey, dataplane_common::SnatEntry)>| -> Vec<_> {
        flows.into_iter().filter(|(k, e)| pred(k, times(e.state, e.created_ns, e.last_seen_ns))).collect()
    };
    let snat = snat_pick(dp.conntrack()?);
    dp.forget_flows(&snat)?;
    let snat_unconfirmed = snat_pick(dp.conntrack_unconfirmed()?);
    dp.forget_flows(&snat_unconfirmed)?;
    let pick = |flows: Vec<(FlowKey, dataplane_common::DnatEntry)>| -> Vec<_> {
        flows.into_iter().filter(|(k, e)| pred(k, times(e.state, e.created_ns, e.last_seen_ns))).collect()
    };
    let dnat = pick(dp.dnat_conntrack()?);
    dp.forget_dnat_flows(&dnat)?;
    let unconfirmed = pick(dp.dnat_unconfirmed()?);
    dp.forget_dnat_flows(&unconfirmed)?;
    Ok(PerTable {
        masquerade: snat.len() as u64,
        masquerade_unconfirmed: snat_unconfirmed.len() as u64,
        published: dnat.len() as u64,
        published_unconfirmed: unconfirmed.len() as u64,
    })
}

/// Forgets the flows that have been idle longer than their timeout.
pub fn sweep(dp: &mut Datapath) -> Result<PerTable> {
    sweep_at(dp, monotonic_ns())
}

/// `sweep` as if the monotonic clock read `now_ns` (the programs' `bpf_ktime_get_ns`).
pub fn sweep_at(dp: &mut Datapath, now_ns: u64) -> Result<PerTable> {
    forget_where(dp, |k, t| expired(k.proto, t.state, t.last_seen_ns, now_ns))
}

/// Addresses whose flows are to be forgotten: those of removed containers and
/// interfaces. Forgetting scans whole tables, so the daemon answers first and forgets
/// later, all departures in one pass. Only flows created before the departure go: the
/// address may already belong to a new container.
#[derive(Debug, Default)]
pub struct Departures(Vec<(Vec<IpAddress>, u64)>);

impl Departures {
    pub fn add(&mut self, addresses: Vec<IpAddress>) {
        self.0.push((addresses, monotonic_ns()));
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn covers(&self, key: &FlowKey, created_ns: u64) -> bool {
        self.0.iter().any(|(addresses, until)| created_ns < *until && addresses.contains(&key.src))
    }
}

/// One tracked flow as `conntrack ls` shows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FlowView {
    /// `masquerade` (a container's connection out) or `published` (in to a published port).
    pub kind: String,
    pub proto: String,
    pub source: String,
    pub destination: String,
    /// What the other side of the translation sees or reaches.
    pub translated: String,
    pub state: String,
    pub age_secs: u64,
    pub expires_in_secs: u64,
}

/// `10.0.0.2:80`, `[fd00::2]:80`.
fn endpoint(ip: &dataplane_common::IpAddress, port: u16) -> String {
    SocketAddr::new(maps::ip_addr(ip), u16::from_be(port)).to_string()
}

fn describe(kind: &str, proto: u8, state: u8, created: u64, last_seen: u64, now_ns: u64) -> FlowView {
    let proto_name = match proto {
        IPPROTO_TCP => "tcp",
        IPPROTO_UDP => "udp",
        IPPROTO_ICMP => "icmp",
        IPPROTO_ICMPV6 => "icmpv6",
        _ => "other",
    };
    let state_name = match state {
        ct_state::NEW => "new",
        ct_state::ESTABLISHED => "established",
        ct_state::CLOSING => "closing",
        _ => "closed",
    };
    let idle = now_ns.saturating_sub(last_seen);
    let timeout = idle_timeout(proto, state).as_nanos() as u64;
    FlowView {
        kind: kind.into(),
        proto: proto_name.into(),
        source: String::new(),
        destination: String::new(),
        translated: String::new(),
        state: state_name.into(),
        age_secs: now_ns.saturating_sub(created) / 1_000_000_000,
        expires_in_secs: timeout.saturating_sub(idle) / 1_000_000_000,
    }
}

/// Every tracked flow: masqueraded ones as the container sent them (translated: the
/// source the outside sees), published ones as the client sent them (translated: the
/// container reached), confirmed ones first.
pub fn list(dp: &mut Datapath) -> Result<Vec<FlowView>> {
    let now = monotonic_ns();
    let mut flows = vec![];
    for (k, e) in dp.conntrack()?.into_iter().chain(dp.conntrack_unconfirmed()?) {
        let mut view = describe("masquerade", k.proto, e.state, e.created_ns, e.last_seen_ns, now);
        view.source = endpoint(&k.src, k.src_port);
        view.destination = endpoint(&k.dst, k.dst_port);
        view.translated = endpoint(&e.nat_addr, e.nat_port);
        flows.push(view);
    }
    for (k, e) in dp.dnat_conntrack()?.into_iter().chain(dp.dnat_unconfirmed()?) {
        let mut view = describe("published", k.proto, e.state, e.created_ns, e.last_seen_ns, now);
        view.source = endpoint(&k.dst, k.dst_port);
        view.destination = endpoint(&e.host_addr, e.host_port);
        view.translated = endpoint(&k.src, k.src_port);
        flows.push(view);
    }
    Ok(flows)
}

#[cfg(test)]
mod tests {
    use dataplane_common::SnatEntry;

    use super::*;

    #[test]
    fn port_range_avoids_the_hosts_ephemeral_ports() {
        assert_eq!(choose_port_range(None, (32768, 60999)).unwrap(), (61000, 65535));
        assert_eq!(choose_port_range(None, (32768, 65000)).unwrap(), (1024, 32767));
        assert!(choose_port_range(None, (1500, 65000)).is_err());
        assert_eq!(choose_port_range(Some((20000, 21000)), (32768, 60999)).unwrap(), (20000, 21000));
        let err = choose_port_range(Some((60000, 62000)), (32768, 60999)).unwrap_err();
        assert!(err.to_string().contains("overlaps"), "{err}");
    }

    #[test]
    fn port_range_flag_is_parsed() {
        assert_eq!(parse_port_range("61000-65535"), Ok((61000, 65535)));
        assert!(parse_port_range("65535-61000").is_err());
        assert!(parse_port_range("0-10").is_err());
        assert!(parse_port_range("61000").is_err());
        assert!(parse_port_range("a-b").is_err());
    }

    #[test]
    fn timeouts_follow_state() {
        assert!(idle_timeout(IPPROTO_TCP, ct_state::ESTABLISHED) > idle_timeout(IPPROTO_TCP, ct_state::NEW));
        assert!(idle_timeout(IPPROTO_TCP, ct_state::CLOSED) < idle_timeout(IPPROTO_TCP, ct_state::CLOSING));
        let key = FlowKey {
            src: dataplane_common::IpAddress::v4([10, 0, 0, 2]),
            dst: dataplane_common::IpAddress::v4([1, 2, 3, 4]),
            src_port: 1,
            dst_port: 2,
            proto: IPPROTO_UDP,
            _pad: [0; 3],
        };
        let entry = SnatEntry {
            nat_addr: key.dst,
            nat_port: 0,
            state: ct_state::NEW,
            _pad: 0,
            host_ifindex: 0,
            _pad2: [0; 4],
            next_hop: Default::default(),
            created_ns: 0,
            last_seen_ns: 1_000_000_000,
        };
        let expired_at = |now| expired(key.proto, entry.state, entry.last_seen_ns, now);
        assert!(!expired_at(20_000_000_000));
        assert!(expired_at(40_000_000_000));
    }

    #[test]
    fn departures_cover_flows_from_before_only() {
        let key = |last: u8| FlowKey {
            src: IpAddress::v4([10, 0, 0, last]),
            dst: IpAddress::v4([198, 51, 100, 7]),
            src_port: 1,
            dst_port: 2,
            proto: IPPROTO_TCP,
            _pad: [0; 3],
        };
        // The coarse clock may not move between here and the departure.
        let before = super::monotonic_ns() - 1;
        let mut departures = super::Departures::default();
        assert!(departures.is_empty());
        departures.add(vec![IpAddress::v4([10, 0, 0, 2])]);
        let after = super::monotonic_ns() + 1;
        assert!(departures.covers(&key(2), before), "a flow of the departed address");
        assert!(!departures.covers(&key(2), after), "a flow of the address's next owner");
        assert!(!departures.covers(&key(3), before), "another address");
    }

    #[test]
    fn evictions_are_what_entered_and_left_no_other_way() {
        // Events: masquerade created, reclaimed unconfirmed; published created, confirmed;
        // masquerade confirmed, reclaimed confirmed.
        let snapshot = |snat: (u64, u64, u64, u64), dnat: (u64, u64), live: super::PerTable| {
            let (created, reclaimed, confirmed, reclaimed_confirmed) = snat;
            let events = [created, reclaimed, dnat.0, dnat.1, confirmed, reclaimed_confirmed];
            super::TableSnapshot { events, live }
        };
        let live = |masquerade, masquerade_unconfirmed, published, published_unconfirmed| super::PerTable {
            masquerade,
            masquerade_unconfirmed,
            published,
            published_unconfirmed,
        };
        // The daemon starts with 14 live flows (3 published, 2 of them unconfirmed; 11
        // masqueraded, 1 unconfirmed) and counters from an earlier run.
        let mut account =
            super::ConntrackAccount::new(snapshot((500, 30, 400, 10), (90, 60), live(10, 1, 1, 2)));
        // The daemon swept 30 confirmed and 3 unconfirmed flows out, 5 and 4 in.
        account.forgot(live(30, 3, 5, 4));
        // Masquerade: 2,000 new flows, 1,000 of them confirmed; the programs reclaimed the
        // ports of 20 unconfirmed flows and 10 confirmed ones. Published: 10,100 new flows
        // (a flood), 100 of them confirmed.
        let now = snapshot((2500, 50, 1400, 20), (10_190, 160), live(256, 500, 50, 4096));
        // Masquerade: 1,000 confirmed, 10 reclaimed, 30 swept, 246 more live: 714 evicted.
        // Unconfirmed: 2,000 in, 1,000 confirmed, 20 reclaimed, 3 swept, 499 more: 478.
        // Published: 100 confirmed, 5 swept, 49 more live: 46 evicted.
        // Unconfirmed: 10,100 in, 100 confirmed, 4 swept, 4,094 more live: 5,902 evicted.
        assert_eq!(account.evictions(&now), live(714, 478, 46, 5902));
        // Nothing new: nothing evicted, whatever the counters say from before.
        let idle = super::ConntrackAccount::new(now);
        assert_eq!(idle.evictions(&now), super::PerTable::default());
    }
}
