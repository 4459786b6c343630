//! `dataplane monitor`'s events as the daemon streams them and the CLI shows them: one
//! JSON line per event (`MonitorLine`), the filter both sides understand, and the text
//! form. Decoding the kernel's records and naming interfaces is the daemon's
//! (`daemon::monitor`); this module never touches a map.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use dataplane_common::{
    AF_INET, AF_INET6, DropReason, FlowKey, Hook, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, IpAddress,
    MonitorEvent, Path,
};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

const IPPROTO_ICMPV6: u8 = 58;

/// One line of the stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum MonitorLine {
    /// A packet a program dropped, and why.
    Drop(Event),
    /// The first packet of a new tracked flow, and its translation.
    Flow(Event),
    /// A packet the programs delivered (`--type trace` only): one per flow and second.
    Trace(Event),
    /// Events the ring buffer (full) or this client (too slow) lost since the last line.
    Lost { time: Timestamp, count: u64 },
}

/// What a program saw, named as the user knows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub time: Timestamp,
    /// The interface the packet arrived on (the container's host-side veth, or the uplink).
    pub interface: String,
    /// The container whose interface it is, or whose address it was for.
    pub container: Option<String>,
    pub network: Option<String>,
    /// `ipv4`, `ipv6`, `arp` (its sender's and target's addresses are `src` and `dst`);
    /// absent for anything else.
    pub family: Option<String>,
    /// `tcp`, `udp`, `icmp`, `icmpv6`, or the protocol's number.
    pub proto: Option<String>,
    pub src: Option<IpAddr>,
    pub src_port: Option<u16>,
    pub dst: Option<IpAddr>,
    pub dst_port: Option<u16>,
    /// The program that saw it: `from_container`, `from_uplink`, `uplink_xdp`.
    pub hook: String,
    /// The path it was counted on, as `dataplane stats` names it.
    pub path: String,
    /// A drop's reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// A dropped frame's source MAC (`02:42:...`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src_mac: Option<String>,
    /// A flow's translation: `masquerade` (its source became the uplink's) or
    /// `published` (its destination became a container's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub translation: Option<String>,
    /// A flow's packet as translated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub translated: Option<Translated>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Translated {
    pub src: IpAddr,
    pub src_port: Option<u16>,
    pub dst: IpAddr,
    pub dst_port: Option<u16>,
}

/// Who an event is about, as the daemon names it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Names {
    pub interface: String,
    pub container: Option<String>,
    pub network: Option<String>,
}

/// `--type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Drop,
    Flow,
    Trace,
}

/// `--proto`; `icmp` takes ICMPv6 too.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Proto {
    Tcp,
    Udp,
    Icmp,
}

/// Which events a client wants; every field left `None` takes all.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Filter {
    pub container: Option<String>,
    pub network: Option<String>,
    pub kind: Option<EventKind>,
    pub proto: Option<Proto>,
    /// A source or destination port, before or after translation.
    pub port: Option<u16>,
}

impl Filter {
    /// Whether the client asks for trace events, which the programs build only then.
    pub fn traces(&self) -> bool {
        self.kind == Some(EventKind::Trace)
    }

    /// Whether `line` passes: traces only when asked for; what was lost always does, as
    /// the client cannot tell what the lost events were.
    pub fn passes(&self, line: &MonitorLine) -> bool {
        let (kind, event) = match line {
            MonitorLine::Drop(event) => (EventKind::Drop, event),
            MonitorLine::Flow(event) => (EventKind::Flow, event),
            MonitorLine::Trace(event) => (EventKind::Trace, event),
            MonitorLine::Lost { .. } => return true,
        };
        let proto_matches = |proto: Proto| {
            let names: &[&str] = match proto {
                Proto::Tcp => &["tcp"],
                Proto::Udp => &["udp"],
                Proto::Icmp => &["icmp", "icmpv6"],
            };
            event.proto.as_deref().is_some_and(|p| names.contains(&p))
        };
        let port_matches = |port: u16| {
            let translated = event.translated.iter().flat_map(|t| [t.src_port, t.dst_port]);
            [event.src_port, event.dst_port].into_iter().chain(translated).any(|p| p == Some(port))
        };
        self.kind.map_or(kind != EventKind::Trace, |k| k == kind)
            && self.container.as_ref().is_none_or(|c| event.container.as_ref() == Some(c))
            && self.network.as_ref().is_none_or(|n| event.network.as_ref() == Some(n))
            && self.proto.is_none_or(proto_matches)
            && self.port.is_none_or(port_matches)
    }
}

fn address(ip: &IpAddress) -> Option<IpAddr> {
    match ip.family {
        AF_INET => Some(IpAddr::V4(Ipv4Addr::new(ip.addr[0], ip.addr[1], ip.addr[2], ip.addr[3]))),
        AF_INET6 => Some(IpAddr::V6(Ipv6Addr::from(ip.addr))),
        _ => None,
    }
}

fn proto_name(proto: u8) -> String {
    match proto {
        IPPROTO_TCP => "tcp".into(),
        IPPROTO_UDP => "udp".into(),
        IPPROTO_ICMP => "icmp".into(),
        IPPROTO_ICMPV6 => "icmpv6".into(),
        other => other.to_string(),
    }
}

/// A port of `flow`, kept in network byte order there; TCP and UDP have ports.
fn port(flow: &FlowKey, port: u16) -> Option<u16> {
    matches!(flow.proto, IPPROTO_TCP | IPPROTO_UDP).then_some(u16::from_be(port))
}

/// The line for a record of the ring buffer, read at `time`; `None` for a record this
/// version cannot read (another kind, reason, hook or path).
pub fn line_of(record: &MonitorEvent, time: Timestamp, names: Names) -> Option<MonitorLine> {
    let flow = &record.flow;
    let arp = record.ether_type == MonitorEvent::ETHER_TYPE_ARP;
    let family = match flow.src.family {
        AF_INET if arp => Some("arp".to_string()),
        AF_INET => Some("ipv4".to_string()),
        AF_INET6 => Some("ipv6".to_string()),
        _ => None,
    };
    let mut event = Event {
        time,
        interface: names.interface,
        container: names.container,
        network: names.network,
        proto: family.is_some().then(|| if arp { "arp".to_string() } else { proto_name(flow.proto) }),
        family,
        src: address(&flow.src),
        src_port: port(flow, flow.src_port),
        dst: address(&flow.dst),
        dst_port: port(flow, flow.dst_port),
        hook: Hook::from_u8(record.hook)?.name().to_string(),
        path: Path::from_index(u32::from(record.path))?.name().to_string(),
        reason: None,
        src_mac: None,
        translation: None,
        translated: None,
    };
    match record.kind {
        MonitorEvent::DROP => {
            event.reason = Some(DropReason::from_u8(record.reason)?.name().to_string());
            event.src_mac = Some(crate::state::MacAddr(record.src_mac).to_string());
            Some(MonitorLine::Drop(event))
        }
        MonitorEvent::FLOW => {
            event.translation = Some(
                match record.reason {
                    MonitorEvent::MASQUERADE => "masquerade",
                    MonitorEvent::PUBLISHED => "published",
                    _ => return None,
                }
                .to_string(),
            );
            // The translated packet is the reply direction's reverse.
            let reply = &record.reply;
            event.translated = Some(Translated {
                src: address(&reply.dst)?,
                src_port: port(reply, reply.dst_port),
                dst: address(&reply.src)?,
                dst_port: port(reply, reply.src_port),
            });
            Some(MonitorLine::Flow(event))
        }
        MonitorEvent::TRACE => Some(MonitorLine::Trace(event)),
        _ => None,
    }
}

fn endpoint(ip: Option<IpAddr>, port: Option<u16>) -> String {
    match (ip, port) {
        (Some(IpAddr::V6(ip)), Some(port)) => format!("[{ip}]:{port}"),
        (Some(ip), Some(port)) => format!("{ip}:{port}"),
        (Some(ip), None) => ip.to_string(),
        (None, _) => "-".into(),
    }
}

/// The line as text: time, kind, container or interface, network, protocol, source ->
/// destination, program and path, then the reason or the translation.
pub fn text(line: &MonitorLine) -> String {
    let (kind, event) = match line {
        MonitorLine::Drop(event) => ("drop", event),
        MonitorLine::Flow(event) => ("flow", event),
        MonitorLine::Trace(event) => ("trace", event),
        MonitorLine::Lost { time, count } => {
            return format!(
                "{} lost  {count} events lost (ring buffer full, or this client too slow)",
                clock(*time)
            );
        }
    };
    let who = match &event.container {
        Some(container) => format!("{container} ({})", event.interface),
        None => event.interface.clone(),
    };
    let what = match (&event.reason, &event.translated) {
        (Some(reason), _) => match &event.src_mac {
            Some(mac) => format!("reason {reason} mac {mac}"),
            None => format!("reason {reason}"),
        },
        (None, Some(t)) => format!(
            "{} {} -> {}",
            event.translation.as_deref().unwrap_or("translated"),
            endpoint(Some(t.src), t.src_port),
            endpoint(Some(t.dst), t.dst_port)
        ),
        (None, None) => String::new(),
    };
    format!(
        "{} {kind}  {who}  {}  {} {} -> {}  {}/{}  {what}",
        clock(event.time),
        event.network.as_deref().unwrap_or("-"),
        event.proto.as_deref().unwrap_or("non-ip"),
        endpoint(event.src, event.src_port),
        endpoint(event.dst, event.dst_port),
        event.hook,
        event.path,
    )
}

/// The time of day in UTC, to the millisecond.
fn clock(time: Timestamp) -> String {
    time.strftime("%H:%M:%S%.3f").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(src: [u8; 4], src_port: u16, dst: [u8; 4], dst_port: u16, proto: u8) -> FlowKey {
        FlowKey {
            src: IpAddress::v4(src),
            dst: IpAddress::v4(dst),
            src_port: src_port.to_be(),
            dst_port: dst_port.to_be(),
            proto,
            _pad: [0; 3],
        }
    }

    fn event_of(line: &MonitorLine) -> Event {
        match line {
            MonitorLine::Drop(event) | MonitorLine::Flow(event) | MonitorLine::Trace(event) => event.clone(),
            MonitorLine::Lost { .. } => panic!("no event"),
        }
    }

    fn names() -> Names {
        Names { interface: "veth1234567".into(), container: Some("web".into()), network: Some("red".into()) }
    }

    #[test]
    fn a_masquerade_record_shows_the_translated_source() {
        let record = MonitorEvent {
            kind: MonitorEvent::FLOW,
            reason: MonitorEvent::MASQUERADE,
            path: Path::Masqueraded as u8,
            hook: Hook::FromContainer as u8,
            ifindex: 7,
            ether_type: 0,
            src_mac: [0; 6],
            flow: key([10, 1, 0, 2], 40000, [192, 0, 2, 9], 80, IPPROTO_TCP),
            reply: key([192, 0, 2, 9], 80, [203, 0, 113, 1], 61000, IPPROTO_TCP),
        };
        let Some(MonitorLine::Flow(event)) = line_of(&record, Timestamp::UNIX_EPOCH, names()) else {
            panic!("a flow record makes a flow line");
        };
        assert_eq!(event.src_port, Some(40000), "ports are shown in host order");
        let translated = event.translated.unwrap();
        assert_eq!(translated.src, IpAddr::from([203, 0, 113, 1]), "the source became the uplink's");
        assert_eq!(translated.src_port, Some(61000));
        assert_eq!(translated.dst, IpAddr::from([192, 0, 2, 9]), "the destination stays");
        assert_eq!(event.path, "masqueraded");
    }

    #[test]
    fn an_arp_spoof_drop_shows_the_claimed_addresses_and_the_mac() {
        let record = MonitorEvent {
            kind: MonitorEvent::DROP,
            reason: DropReason::SpoofedArp as u8,
            path: Path::DroppedSpoofedArp as u8,
            hook: Hook::FromContainer as u8,
            ifindex: 7,
            ether_type: MonitorEvent::ETHER_TYPE_ARP,
            src_mac: [2, 0x42, 10, 1, 0, 2],
            flow: key([10, 1, 0, 1], 0, [10, 1, 0, 3], 0, 0),
            reply: key([0; 4], 0, [0; 4], 0, 0),
        };
        let Some(MonitorLine::Drop(event)) = line_of(&record, Timestamp::UNIX_EPOCH, names()) else {
            panic!("a drop record makes a drop line");
        };
        assert_eq!((event.family.as_deref(), event.proto.as_deref()), (Some("arp"), Some("arp")));
        assert_eq!(event.src, Some(IpAddr::from([10, 1, 0, 1])), "the sender address it claimed");
        assert_eq!(event.dst, Some(IpAddr::from([10, 1, 0, 3])), "the target it asked about");
        assert_eq!(event.src_mac.as_deref(), Some("02:42:0a:01:00:02"));
        let text = text(&MonitorLine::Drop(event));
        assert!(
            text.contains("arp 10.1.0.1 -> 10.1.0.3") && text.contains("mac 02:42:0a:01:00:02"),
            "{text}"
        );
    }

    #[test]
    fn filters_pick_by_kind_container_network_protocol_and_port() {
        let drop = MonitorEvent {
            kind: MonitorEvent::DROP,
            reason: DropReason::Isolation as u8,
            path: Path::DroppedIsolation as u8,
            hook: Hook::FromContainer as u8,
            ifindex: 7,
            ether_type: 0,
            src_mac: [0; 6],
            flow: key([10, 1, 0, 2], 5353, [10, 2, 0, 2], 53, IPPROTO_UDP),
            reply: key([0; 4], 0, [0; 4], 0, 0),
        };
        let line = line_of(&drop, Timestamp::UNIX_EPOCH, names()).unwrap();
        let passes = |filter: Filter| filter.passes(&line);
        assert!(passes(Filter::default()));
        assert!(passes(Filter { kind: Some(EventKind::Drop), ..Filter::default() }));
        assert!(!passes(Filter { kind: Some(EventKind::Flow), ..Filter::default() }));
        assert!(passes(Filter { container: Some("web".into()), ..Filter::default() }));
        assert!(!passes(Filter { container: Some("db".into()), ..Filter::default() }));
        assert!(!passes(Filter { network: Some("blue".into()), ..Filter::default() }));
        assert!(passes(Filter { proto: Some(Proto::Udp), ..Filter::default() }));
        assert!(!passes(Filter { proto: Some(Proto::Tcp), ..Filter::default() }));
        assert!(passes(Filter { port: Some(53), ..Filter::default() }));
        assert!(passes(Filter { port: Some(5353), ..Filter::default() }));
        assert!(!passes(Filter { port: Some(80), ..Filter::default() }));
        let trace = MonitorLine::Trace(Event { path: "forwarded".into(), reason: None, ..event_of(&line) });
        assert!(!Filter::default().passes(&trace), "traces only when asked for");
        assert!(Filter { kind: Some(EventKind::Trace), ..Filter::default() }.passes(&trace));
        assert!(!Filter { kind: Some(EventKind::Trace), ..Filter::default() }.passes(&line));
        let lost = MonitorLine::Lost { time: Timestamp::UNIX_EPOCH, count: 3 };
        assert!(Filter { kind: Some(EventKind::Flow), ..Filter::default() }.passes(&lost));
        let text = text(&line);
        assert!(text.contains("web (veth1234567)") && text.contains("reason isolation"), "{text}");
        assert!(text.contains("10.1.0.2:5353 -> 10.2.0.2:53"), "{text}");
    }
}
