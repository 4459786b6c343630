//! Hostile frames for the kernel programs: a seeded generator (random bytes, and valid
//! frames mutated: truncated at every offset, bad IHL and lengths, IP options, fragments,
//! VLAN tags, zero-length L4, wrong checksums, TCP flag combinations, ICMP errors quoting
//! bad headers); `classify`, which says what a frame is without asking the programs; and
//! `Invariants`, what every program must keep for every frame. A new path (IPv6, overlay)
//! adds its valid frames as templates, and its shapes to `classify`, and gets the same
//! treatment. Owns no fixture: `Prober` runs frames on one the caller built.

use std::fmt::Write as _;

use aya::maps::{HashMap as BpfHashMap, Map, MapData};
use dataplane_common::{Counter, DnatEntry, FlowKey, Path, RevSnatEntry, SnatEntry, map_names};
use rand::{Rng, SeedableRng, rngs::StdRng};

use crate::datapath::{Fixture, TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT, XDP_DROP, XDP_PASS, XDP_REDIRECT};

/// The environment variable that replays a run: the seed it printed.
pub const SEED_VAR: &str = "DATAPLANE_HOSTILE_SEED";

/// The seed of this run, from `SEED_VAR` or fresh, printed so that a failure can be replayed.
pub fn seed() -> u64 {
    let seed = match std::env::var(SEED_VAR) {
        Ok(value) => value.parse().unwrap_or_else(|_| panic!("{SEED_VAR}={value:?} is not a u64 seed")),
        Err(_) => rand::random(),
    };
    eprintln!("hostile frames: seed {seed} (replay with {SEED_VAR}={seed})");
    seed
}

const ETH_LEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_ARP: u16 = 0x0806;
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
const ICMP_DEST_UNREACHABLE: u8 = 3;
const ICMP_TIME_EXCEEDED: u8 = 11;

/// A valid frame the generator starts from, named for the failure messages.
pub struct Template {
    pub name: &'static str,
    pub frame: Vec<u8>,
}

/// What was done to a template.
#[derive(Clone, Copy, Debug)]
pub enum Mutation {
    /// Random bytes, no template.
    RandomBytes,
    /// The template's Ethernet header, then random bytes.
    RandomAfterEthernet,
    Truncated(usize),
    Ihl(u8),
    TotalLength(u16),
    /// `n` 32-bit words of IPv4 options, lengths kept consistent.
    IpOptions(u8),
    /// Flags and fragment offset (host order).
    Fragment(u16),
    /// An 802.1Q or 802.1ad tag with this TPID after the MACs.
    VlanTag(u16),
    /// The IPv4 header alone, total length saying so; `padded` keeps the L4 bytes behind it.
    ZeroLengthL4 {
        padded: bool,
    },
    IpChecksum,
    L4Checksum,
    TcpFlags(u8),
    TcpDataOffset(u8),
    UdpLength(u16),
    /// An ICMP error quoting the template's IPv4 header, then the quote damaged.
    IcmpErrorQuoting,
    ByteFlips,
}

/// One generated frame and how it came about.
pub struct HostileFrame {
    pub template: &'static str,
    pub mutations: Vec<Mutation>,
    pub bytes: Vec<u8>,
}

impl HostileFrame {
    /// The frame in hex with its origin: what a failure message needs to make a
    /// regression test of it.
    pub fn describe(&self) -> String {
        let mut hex = String::new();
        for byte in &self.bytes {
            let _ = write!(hex, "{byte:02x}");
        }
        format!(
            "template {}, mutations {:?}, {} bytes: {hex}",
            self.template,
            self.mutations,
            self.bytes.len()
        )
    }
}

/// Frames from `templates`: first each template truncated at every offset, then random
/// mutations (a quarter of them stacked two deep), all from one seed.
pub struct Generator {
    rng: StdRng,
    templates: Vec<Template>,
    /// The next truncation of the sweep: (template, length).
    sweep: Option<(usize, usize)>,
}

impl Generator {
    pub fn new(seed: u64, templates: Vec<Template>) -> Self {
        assert!(!templates.is_empty(), "the generator needs at least one template");
        Self { rng: StdRng::seed_from_u64(seed), templates, sweep: Some((0, 0)) }
    }

    fn next_truncation(&mut self) -> Option<HostileFrame> {
        let (index, len) = self.sweep?;
        let template = &self.templates[index];
        self.sweep = if len + 1 < template.frame.len() {
            Some((index, len + 1))
        } else if index + 1 < self.templates.len() {
            Some((index + 1, 0))
        } else {
            None
        };
        Some(HostileFrame {
            template: template.name,
            mutations: vec![Mutation::Truncated(len)],
            bytes: template.frame[..len].to_vec(),
        })
    }

    fn mutated(&mut self) -> HostileFrame {
        let index = self.rng.random_range(0..self.templates.len());
        let name = self.templates[index].name;
        let mut bytes = self.templates[index].frame.clone();
        let mut mutations = vec![self.mutate(&mut bytes)];
        if self.rng.random_ratio(1, 4) && !matches!(mutations[0], Mutation::RandomBytes) {
            mutations.push(self.mutate(&mut bytes));
        }
        HostileFrame { template: name, mutations, bytes }
    }

    /// Applies one random mutation to `frame`.
    fn mutate(&mut self, frame: &mut Vec<u8>) -> Mutation {
        let rng = &mut self.rng;
        let ip = ipv4_offset(frame);
        let fix_checksum = rng.random_ratio(3, 4);
        let mutation = match rng.random_range(0..16) {
            0 => {
                let len = rng.random_range(0..=96);
                *frame = (0..len).map(|_| rng.random()).collect();
                return Mutation::RandomBytes;
            }
            1 => {
                frame.truncate(ETH_LEN.min(frame.len()));
                if rng.random_ratio(1, 2) {
                    frame.push(0x45);
                }
                let len = rng.random_range(0..=80);
                frame.extend((0..len).map(|_| rng.random::<u8>()));
                return Mutation::RandomAfterEthernet;
            }
            2 => {
                let len = rng.random_range(0..=frame.len());
                frame.truncate(len);
                return Mutation::Truncated(len);
            }
            3 if ip.is_some() => {
                let ihl = rng.random_range(0..16u8);
                let at = ip.unwrap();
                frame[at] = (frame[at] & 0xf0) | ihl;
                Mutation::Ihl(ihl)
            }
            4 if ip.is_some() => {
                let at = ip.unwrap();
                let actual = (frame.len() - at) as u16;
                let total = match rng.random_range(0..5) {
                    0 => 0,
                    1 => rng.random(),
                    2 => rng.random_range(0..20),
                    3 => actual.saturating_add(rng.random_range(1..64)),
                    _ => actual.saturating_sub(rng.random_range(1..16)),
                };
                frame[at + 2..at + 4].copy_from_slice(&total.to_be_bytes());
                Mutation::TotalLength(total)
            }
            5 if ip.is_some() => {
                let at = ip.unwrap();
                let ihl = frame[at] & 0x0f;
                let words = rng.random_range(1..=10u8).min(15u8.saturating_sub(ihl));
                let options: Vec<u8> = if rng.random_ratio(1, 2) {
                    vec![1; usize::from(words) * 4] // NOPs
                } else {
                    (0..usize::from(words) * 4).map(|_| rng.random()).collect()
                };
                let header_end = at + usize::from(ihl) * 4;
                if header_end <= frame.len() {
                    frame.splice(header_end..header_end, options);
                    frame[at] = (frame[at] & 0xf0) | (ihl + words);
                    let total =
                        u16::from_be_bytes([frame[at + 2], frame[at + 3]]).wrapping_add(u16::from(words) * 4);
                    frame[at + 2..at + 4].copy_from_slice(&total.to_be_bytes());
                }
                Mutation::IpOptions(words)
            }
            6 if ip.is_some() => {
                let at = ip.unwrap();
                let flags: u16 = match rng.random_range(0..4) {
                    0 => 0x2000,                               // more fragments, offset 0
                    1 => rng.random_range(1..0x2000),          // a last fragment
                    2 => 0x2000 | rng.random_range(1..0x2000), // a middle fragment
                    _ => rng.random(),
                };
                frame[at + 6..at + 8].copy_from_slice(&flags.to_be_bytes());
                Mutation::Fragment(flags)
            }
            7 if frame.len() >= ETH_LEN => {
                let tpid: u16 = if rng.random_ratio(1, 2) { 0x8100 } else { 0x88a8 };
                let mut tag = tpid.to_be_bytes().to_vec();
                tag.extend_from_slice(&rng.random_range(0..4096u16).to_be_bytes());
                frame.splice(12..12, tag);
                return Mutation::VlanTag(tpid);
            }
            8 if ip.is_some() => {
                let at = ip.unwrap();
                let header_len = (usize::from(frame[at] & 0x0f) * 4).max(20);
                let padded = rng.random_ratio(1, 2);
                if !padded {
                    frame.truncate((at + header_len).min(frame.len()));
                }
                frame[at + 2..at + 4].copy_from_slice(&(header_len as u16).to_be_bytes());
                Mutation::ZeroLengthL4 { padded }
            }
            9 if ip.is_some() => {
                let at = ip.unwrap();
                frame[at + 10] ^= rng.random_range(1..=255u8);
                return Mutation::IpChecksum;
            }
            10 => match l4_field(frame) {
                Some((proto, l4)) => {
                    let at = l4
                        + if proto == IPPROTO_TCP {
                            16
                        } else if proto == IPPROTO_UDP {
                            6
                        } else {
                            2
                        };
                    if at < frame.len() {
                        frame[at] ^= rng.random_range(1..=255u8);
                    }
                    return Mutation::L4Checksum;
                }
                None => return self.flip(frame),
            },
            11 => match l4_field(frame) {
                Some((IPPROTO_TCP, l4)) if l4 + 14 <= frame.len() => {
                    let flags = rng.random();
                    frame[l4 + 13] = flags;
                    return Mutation::TcpFlags(flags);
                }
                _ => return self.flip(frame),
            },
            12 => match l4_field(frame) {
                Some((IPPROTO_TCP, l4)) if l4 + 13 <= frame.len() => {
                    let offset = rng.random_range(0..16u8);
                    frame[l4 + 12] = (offset << 4) | (frame[l4 + 12] & 0x0f);
                    return Mutation::TcpDataOffset(offset);
                }
                Some((IPPROTO_UDP, l4)) if l4 + 6 <= frame.len() => {
                    let len: u16 =
                        if rng.random_ratio(1, 2) { rng.random_range(0..16) } else { rng.random() };
                    frame[l4 + 4..l4 + 6].copy_from_slice(&len.to_be_bytes());
                    return Mutation::UdpLength(len);
                }
                _ => return self.flip(frame),
            },
            13 if ip.is_some() => {
                self.icmp_error(frame, ip.unwrap());
                return Mutation::IcmpErrorQuoting;
            }
            // 14, 15, and what the frame is too short for.
            _ => return self.flip(frame),
        };
        if fix_checksum && let Some(at) = ipv4_offset(frame) {
            fix_ipv4_checksum(frame, at);
        }
        mutation
    }

    /// Sets one to four of the first 64 bytes at random.
    fn flip(&mut self, frame: &mut [u8]) -> Mutation {
        let reach = frame.len().min(64);
        if reach > 0 {
            for _ in 0..self.rng.random_range(1..=4) {
                let at = self.rng.random_range(0..reach);
                frame[at] = self.rng.random();
            }
        }
        Mutation::ByteFlips
    }

    /// Turns the IPv4 packet at `ip` into an ICMP error its destination sends back to its
    /// source, quoting its header and first 8 bytes (or the template's own ICMP error's
    /// quote), then damages the quote: its version and IHL, fragment field, protocol,
    /// length, or the quote cut short.
    fn icmp_error(&mut self, frame: &mut Vec<u8>, ip: usize) {
        let rng = &mut self.rng;
        let quote_at = match l4_field(frame) {
            Some((IPPROTO_ICMP, l4))
                if matches!(frame.get(l4), Some(&ICMP_DEST_UNREACHABLE | &ICMP_TIME_EXCEEDED)) =>
            {
                l4 + 8
            }
            _ => {
                let header_len = usize::from(frame[ip] & 0x0f) * 4;
                let quote: Vec<u8> = frame[ip..].iter().copied().take(header_len.max(20) + 8).collect();
                let mut outer = frame[..ip].to_vec();
                let mut header = frame[ip..ip + 20].to_vec();
                header[0] = 0x45;
                header[6..8].copy_from_slice(&[0, 0]);
                header[9] = IPPROTO_ICMP;
                let (src, dst) = (header[12..16].to_vec(), header[16..20].to_vec());
                header[12..16].copy_from_slice(&dst);
                header[16..20].copy_from_slice(&src);
                outer.extend_from_slice(&header);
                let kind = if rng.random_ratio(1, 2) { ICMP_DEST_UNREACHABLE } else { ICMP_TIME_EXCEEDED };
                outer.extend_from_slice(&[kind, rng.random_range(0..16), 0, 0, 0, 0, 0, 0]);
                outer.extend_from_slice(&quote);
                let total = (outer.len() - ip) as u16;
                outer[ip + 2..ip + 4].copy_from_slice(&total.to_be_bytes());
                *frame = outer;
                ip + 28
            }
        };
        if quote_at + 20 <= frame.len() {
            match rng.random_range(0..6) {
                0 => frame[quote_at] = rng.random(),
                1 => frame[quote_at + 6..quote_at + 8].copy_from_slice(&rng.random::<u16>().to_be_bytes()),
                2 => frame[quote_at + 9] = rng.random(),
                3 => frame[quote_at + 2..quote_at + 4].copy_from_slice(&rng.random::<u16>().to_be_bytes()),
                4 => frame.truncate(rng.random_range(quote_at..frame.len())),
                _ => {}
            }
        }
        fix_ipv4_checksum(frame, ip);
        fix_icmp_checksum(frame, ip);
    }
}

impl Iterator for Generator {
    type Item = HostileFrame;

    fn next(&mut self) -> Option<HostileFrame> {
        Some(self.next_truncation().unwrap_or_else(|| self.mutated()))
    }
}

/// Where the IPv4 header starts, when the Ethernet type says IPv4 and the fixed part is
/// there.
fn ipv4_offset(frame: &[u8]) -> Option<usize> {
    (frame.len() >= ETH_LEN + 20 && u16::from_be_bytes([frame[12], frame[13]]) == ETH_P_IP).then_some(ETH_LEN)
}

/// The protocol and L4 offset of the IPv4 packet in `frame`, by its IHL, if in the frame.
fn l4_field(frame: &[u8]) -> Option<(u8, usize)> {
    let ip = ipv4_offset(frame)?;
    let l4 = ip + usize::from(frame[ip] & 0x0f) * 4;
    (l4 < frame.len()).then_some((frame[ip + 9], l4))
}

/// The one's complement sum of `bytes`, folded (RFC 1071).
fn ones_complement_sum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|pair| u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

fn fix_ipv4_checksum(frame: &mut [u8], ip: usize) {
    let header_len = usize::from(frame[ip] & 0x0f) * 4;
    if header_len < 20 || ip + header_len > frame.len() {
        return;
    }
    frame[ip + 10..ip + 12].copy_from_slice(&[0, 0]);
    let checksum = !ones_complement_sum(&frame[ip..ip + header_len]);
    frame[ip + 10..ip + 12].copy_from_slice(&checksum.to_be_bytes());
}

/// The ICMP checksum over what the frame holds of the message.
fn fix_icmp_checksum(frame: &mut [u8], ip: usize) {
    let l4 = ip + usize::from(frame[ip] & 0x0f) * 4;
    if l4 + 4 > frame.len() {
        return;
    }
    frame[l4 + 2..l4 + 4].copy_from_slice(&[0, 0]);
    let checksum = !ones_complement_sum(&frame[l4..]);
    frame[l4 + 2..l4 + 4].copy_from_slice(&checksum.to_be_bytes());
}

/// What a frame is, as the kernel's own receive path would judge it.
#[derive(Debug, PartialEq)]
pub enum Shape {
    /// Shorter than an Ethernet header.
    Runt,
    /// Another Ethernet type than IPv4 (ARP, IPv6, VLAN tags, ...).
    Other {
        ethertype: u16,
    },
    /// The IPv4 Ethernet type without an IPv4 header one can read: too short, another
    /// version, or an IHL below 5.
    UnreadableIpv4,
    Ipv4(Ipv4Shape),
}

#[derive(Debug, PartialEq)]
pub struct Ipv4Shape {
    pub src: [u8; 4],
    pub dst: [u8; 4],
    pub proto: u8,
    /// Why the packet is malformed, if it is: what the kernel's IPv4 receive path drops
    /// (IHL or total length past the frame, total length below the header, a wrong header
    /// checksum); an unfragmented packet whose TCP, UDP or ICMP header does not fit in its
    /// total length, a UDP length that disagrees, a TCP flag combination Linux's
    /// conntrack calls invalid; an ICMP error whose quote is no IPv4 header and 8 bytes of
    /// a first fragment. A wrong L4 checksum is no malformation here: the datapath
    /// translates incrementally and leaves checksums to the receiver, as Cilium does.
    pub malformed: Option<&'static str>,
}

pub fn classify(frame: &[u8]) -> Shape {
    if frame.len() < ETH_LEN {
        return Shape::Runt;
    }
    let ethertype = u16::from_be_bytes([frame[12], frame[13]]);
    if ethertype != ETH_P_IP {
        return Shape::Other { ethertype };
    }
    let ip = &frame[ETH_LEN..];
    if ip.len() < 20 || ip[0] >> 4 != 4 || ip[0] & 0x0f < 5 {
        return Shape::UnreadableIpv4;
    }
    let field = |at: usize| <[u8; 4]>::try_from(&ip[at..at + 4]).unwrap();
    Shape::Ipv4(Ipv4Shape { src: field(12), dst: field(16), proto: ip[9], malformed: ipv4_malformation(ip) })
}

fn ipv4_malformation(ip: &[u8]) -> Option<&'static str> {
    let header_len = usize::from(ip[0] & 0x0f) * 4;
    if header_len > ip.len() {
        return Some("IHL past the frame");
    }
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    if total < header_len {
        return Some("total length below the header");
    }
    if total > ip.len() {
        return Some("total length past the frame");
    }
    if ones_complement_sum(&ip[..header_len]) != 0xffff {
        return Some("header checksum");
    }
    if u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0 {
        // A fragment: its L4 header may lie in another one.
        return None;
    }
    let l4 = &ip[header_len..total];
    match ip[9] {
        IPPROTO_TCP => tcp_malformation(l4),
        IPPROTO_UDP => {
            if l4.len() < 8 {
                return Some("UDP header past the packet");
            }
            let len = usize::from(u16::from_be_bytes([l4[4], l4[5]]));
            (len < 8 || len > l4.len()).then_some("UDP length")
        }
        IPPROTO_ICMP => {
            if l4.len() < 8 {
                return Some("ICMP header past the packet");
            }
            if l4[0] != ICMP_DEST_UNREACHABLE && l4[0] != ICMP_TIME_EXCEEDED {
                return None;
            }
            let quote = &l4[8..];
            if quote.len() < 20 || quote[0] >> 4 != 4 || quote[0] & 0x0f < 5 {
                return Some("ICMP error quoting no IPv4 header");
            }
            if quote.len() < usize::from(quote[0] & 0x0f) * 4 + 8 {
                return Some("ICMP error quoting less than a header and 8 bytes");
            }
            (u16::from_be_bytes([quote[6], quote[7]]) & 0x1fff != 0)
                .then_some("ICMP error quoting a later fragment")
        }
        _ => None,
    }
}

fn tcp_malformation(tcp: &[u8]) -> Option<&'static str> {
    if tcp.len() < 20 {
        return Some("TCP header past the packet");
    }
    let data_offset = usize::from(tcp[12] >> 4) * 4;
    if data_offset < 20 {
        return Some("TCP data offset below 5");
    }
    if data_offset > tcp.len() {
        return Some("TCP options past the packet");
    }
    (!tcp_flags_valid(tcp[13])).then_some("TCP flags")
}

/// The flag combinations Linux's conntrack accepts (`tcp_valid_flags`), ECE, CWR and PSH
/// aside: SYN, SYN|URG, SYN|ACK, RST, RST|ACK, FIN|ACK, FIN|ACK|URG, ACK, ACK|URG.
pub fn tcp_flags_valid(flags: u8) -> bool {
    const FIN: u8 = 0x01;
    const SYN: u8 = 0x02;
    const RST: u8 = 0x04;
    const PSH: u8 = 0x08;
    const ACK: u8 = 0x10;
    const URG: u8 = 0x20;
    let flags = flags & !(0x40 | 0x80 | PSH);
    [SYN, SYN | URG, SYN | ACK, RST, RST | ACK, FIN | ACK, FIN | ACK | URG, ACK, ACK | URG].contains(&flags)
}

/// The hook a program runs at: its verdicts differ.
#[derive(Clone, Copy, PartialEq, Debug)]
pub enum Hook {
    Tc,
    Xdp,
}

impl Hook {
    fn pass_verdict(self) -> u32 {
        match self {
            Hook::Tc => TC_ACT_OK,
            Hook::Xdp => XDP_PASS,
        }
    }

    fn drop_verdict(self) -> u32 {
        match self {
            Hook::Tc => TC_ACT_SHOT,
            Hook::Xdp => XDP_DROP,
        }
    }

    fn redirect_verdict(self) -> u32 {
        match self {
            Hook::Tc => TC_ACT_REDIRECT,
            Hook::Xdp => XDP_REDIRECT,
        }
    }
}

/// What one run did.
pub struct Outcome {
    pub verdict: u32,
    pub out: Vec<u8>,
    /// The counters that moved: path, packets, bytes.
    pub counted: Vec<(Path, u64, u64)>,
    /// The conntrack tables that grew, and by how much.
    pub grown: Vec<(&'static str, usize)>,
    /// The conntrack tables whose entries of before the frame it changed or removed, and
    /// how many.
    pub altered: Vec<(&'static str, usize)>,
}

/// The paths that translate a frame: never for a malformed one.
const TRANSLATING: [Path; 5] =
    [Path::Masqueraded, Path::ReverseNat, Path::Published, Path::PublishedXdp, Path::PublishedReply];

/// The verdict a path's count goes with at `hook`: drops drop, the slow paths pass the
/// frame on (`SlowPathMalformed` also drops what fails to translate half way), the fast
/// paths redirect (`SlowPathIp` also passes a published reply the uplink does not carry).
fn verdicts_of(path: Path, hook: Hook) -> Vec<u32> {
    let name = path.name();
    if name.starts_with("dropped_") {
        vec![hook.drop_verdict()]
    } else if path == Path::SlowPathMalformed {
        vec![hook.pass_verdict(), hook.drop_verdict()]
    } else if name.starts_with("slow_path_") || path == Path::UplinkToHost {
        vec![hook.pass_verdict()]
    } else {
        vec![hook.redirect_verdict()]
    }
}

/// The exact outcome a program owes a frame of a given shape, when the shape decides it.
pub type Exact = Option<(u32, Option<Path>)>;

/// Checks the invariants every program keeps for every frame; `exact` is what this
/// program owes this frame when its shape decides it. Returns what is wrong.
pub fn check(
    hook: Hook,
    frame: &HostileFrame,
    shape: &Shape,
    exact: Exact,
    outcome: &Outcome,
) -> Vec<String> {
    let mut wrong = vec![];
    let verdict = outcome.verdict;
    if ![hook.pass_verdict(), hook.drop_verdict(), hook.redirect_verdict()].contains(&verdict) {
        wrong.push(format!("verdict {verdict} is none a {hook:?} program returns"));
    }
    // Counters move on the path taken alone: one path, one packet, the frame's bytes. XDP
    // counts nothing for what it passes on to tc.
    let counts_nothing = hook == Hook::Xdp && verdict == XDP_PASS;
    let path = match (outcome.counted.as_slice(), counts_nothing) {
        ([], true) => None,
        ([(path, 1, bytes)], false) if *bytes == frame.bytes.len() as u64 => Some(*path),
        (counted, _) => {
            wrong.push(format!(
                "counters moved {counted:?}; expected {}",
                if counts_nothing {
                    "none".to_string()
                } else {
                    format!("one path by 1 packet and {} bytes", frame.bytes.len())
                }
            ));
            None
        }
    };
    if let Some(path) = path
        && !verdicts_of(path, hook).contains(&verdict)
    {
        wrong.push(format!("path {} counted with verdict {verdict}", path.name()));
    }
    if verdict == hook.pass_verdict() && outcome.out != frame.bytes {
        wrong.push(format!("a frame passed on was modified: out {:02x?}", outcome.out));
    }
    if let Some((expected, expected_path)) = exact {
        if verdict != expected {
            wrong.push(format!("verdict {verdict}, expected {expected} for {shape:?}"));
        }
        if expected_path.is_some() && path != expected_path {
            wrong.push(format!("path {path:?}, expected {expected_path:?} for {shape:?}"));
        }
    }
    if let Shape::Ipv4(Ipv4Shape { malformed: Some(why), .. }) = shape {
        if !outcome.grown.is_empty() {
            wrong.push(format!("a malformed frame ({why}) made conntrack entries: {:?}", outcome.grown));
        }
        // Its tuple may well be a tracked flow's: it must not move that flow's state,
        // times or translation (an RST or FIN that ends it, say).
        if !outcome.altered.is_empty() {
            wrong.push(format!("a malformed frame ({why}) changed conntrack entries: {:?}", outcome.altered));
        }
        if let Some(path) = path.filter(|p| TRANSLATING.contains(p)) {
            wrong.push(format!("a malformed frame ({why}) was translated ({})", path.name()));
        }
    }
    wrong
}

/// A conntrack table opened from its pin, with the entries it held when the run began.
trait Table {
    fn name(&self) -> &'static str;
    /// Puts the table back as it began; returns what it found.
    fn restore(&mut self) -> Restored;
}

/// What a table held when it was put back.
struct Restored {
    /// Its entries.
    held: usize,
    /// The entries it began with that differed or were gone.
    altered: usize,
}

struct PinnedTable<V: aya::Pod> {
    name: &'static str,
    map: BpfHashMap<MapData, FlowKey, V>,
    baseline: Vec<(FlowKey, V)>,
}

fn bytes_of<T: aya::Pod>(value: &T) -> &[u8] {
    // SAFETY: Pod types are plain data without padding the kernel does not also see.
    unsafe { std::slice::from_raw_parts((value as *const T).cast(), size_of::<T>()) }
}

impl<V: aya::Pod> PinnedTable<V> {
    fn open(fixture: &Fixture, name: &'static str) -> Self {
        let pin = fixture.maps_dir().join(name);
        let data = MapData::from_pin(&pin).unwrap_or_else(|e| panic!("opening {}: {e}", pin.display()));
        let map = BpfHashMap::try_from(Map::LruHashMap(data)).unwrap_or_else(|e| panic!("map {name}: {e}"));
        let baseline = map.iter().map(|entry| entry.expect("reading a conntrack entry")).collect();
        Self { name, map, baseline }
    }
}

impl<V: aya::Pod> Table for PinnedTable<V> {
    fn name(&self) -> &'static str {
        self.name
    }

    fn restore(&mut self) -> Restored {
        let now: Vec<(FlowKey, V)> =
            self.map.iter().map(|entry| entry.expect("reading a conntrack entry")).collect();
        let mut altered = 0;
        for (key, value) in &now {
            match self.baseline.iter().find(|(k, _)| bytes_of(k) == bytes_of(key)) {
                Some((_, was)) if bytes_of(was) == bytes_of(value) => {}
                Some((_, was)) => {
                    altered += 1;
                    self.map.insert(key, was, 0).expect("restoring a conntrack entry")
                }
                None => self.map.remove(key).expect("removing a conntrack entry"),
            }
        }
        for (key, was) in &self.baseline {
            if !now.iter().any(|(k, _)| bytes_of(k) == bytes_of(key)) {
                altered += 1;
                self.map.insert(key, was, 0).expect("restoring a conntrack entry");
            }
        }
        Restored { held: now.len(), altered }
    }
}

/// Runs frames through the programs of a fixture whose maps hold the state the caller
/// set up, and after each one puts the conntrack tables back as they were, so that every
/// frame meets the same tables and a failure replays from its frame alone.
pub struct Prober {
    tables: Vec<Box<dyn Table>>,
    baseline_len: Vec<usize>,
    counters: Vec<(Path, Counter)>,
    /// Frames BPF_PROG_TEST_RUN refused (shorter than the hook accepts).
    pub refused: u64,
}

impl Prober {
    pub fn new(fixture: &mut Fixture) -> Self {
        let tables: Vec<Box<dyn Table>> = vec![
            Box::new(PinnedTable::<SnatEntry>::open(fixture, map_names::SNAT_CT)),
            Box::new(PinnedTable::<RevSnatEntry>::open(fixture, map_names::SNAT_REV)),
            Box::new(PinnedTable::<SnatEntry>::open(fixture, map_names::SNAT_NEW)),
            Box::new(PinnedTable::<RevSnatEntry>::open(fixture, map_names::SNAT_REV_NEW)),
            Box::new(PinnedTable::<DnatEntry>::open(fixture, map_names::DNAT_CT)),
            Box::new(PinnedTable::<DnatEntry>::open(fixture, map_names::DNAT_NEW)),
        ];
        let mut prober = Self { tables, baseline_len: vec![], counters: vec![], refused: 0 };
        prober.baseline_len = prober.tables.iter_mut().map(|t| t.restore().held).collect();
        prober.counters = fixture.datapath.counters().expect("reading the counters");
        prober
    }

    /// Runs `program` on `frame`: `None` when the kernel refused the frame.
    pub fn probe(&mut self, fixture: &mut Fixture, program: &str, frame: &[u8]) -> Option<Outcome> {
        let (verdict, out) = match fixture.try_run(program, frame) {
            Ok(result) => result,
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                self.refused += 1;
                return None;
            }
            Err(e) => panic!("BPF_PROG_TEST_RUN of {program}: {e}"),
        };
        let counters = fixture.datapath.counters().expect("reading the counters");
        let counted = counters
            .iter()
            .zip(&self.counters)
            .filter(|((_, now), (_, was))| now.packets != was.packets || now.bytes != was.bytes)
            .map(|((path, now), (_, was))| (*path, now.packets - was.packets, now.bytes - was.bytes))
            .collect();
        self.counters = counters;
        let (mut grown, mut altered) = (vec![], vec![]);
        for (table, was) in self.tables.iter_mut().zip(&self.baseline_len) {
            let restored = table.restore();
            if restored.held > *was {
                grown.push((table.name(), restored.held - was));
            }
            if restored.altered > 0 {
                altered.push((table.name(), restored.altered));
            }
        }
        Some(Outcome { verdict, out, counted, grown, altered })
    }
}
