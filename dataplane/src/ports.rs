//! Published ports, user side: Docker's `-p` syntax, host-port reservations (a bound
//! socket per published port, so that no host process can take the port afterwards and a
//! port already in use is refused), and the entries of the PUBLISHED map.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    str::FromStr,
};

use anyhow::{Context, Result, bail};
use dataplane_common::{IPPROTO_TCP, IPPROTO_UDP};
use serde::{Deserialize, Serialize};
use socket2::{Domain, Socket, Type};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn number(self) -> u8 {
        match self {
            Proto::Tcp => IPPROTO_TCP,
            Proto::Udp => IPPROTO_UDP,
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        })
    }
}

/// One published port. `host_port` 0 asks for a free port, chosen when published.
/// `host_ip` 0.0.0.0 is every IPv4 address of the host, `::` every IPv6 one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PortMapping {
    pub host_ip: IpAddr,
    pub host_port: u16,
    pub container_port: u16,
    pub proto: Proto,
    /// `-p` named no host address (`-p 8080:80`): published on 0.0.0.0 and, for an
    /// endpoint with an IPv6 address, on `::` beside it, as Docker does; both are held by
    /// one socket. A named 0.0.0.0 is IPv4 alone. Absent from state written before it:
    /// those mappings are their address alone.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub any_family: bool,
}

impl fmt::Display for PortMapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{} -> {}",
            self.container_port,
            self.proto,
            SocketAddr::new(self.host_ip, self.host_port)
        )
    }
}

impl PortMapping {
    /// The same port on every IPv6 address, which `-p PORT` without an address also
    /// publishes for an endpoint with an IPv6 address; `None` for any other mapping.
    pub fn ipv6_twin(&self) -> Option<PortMapping> {
        (self.any_family && self.host_ip.is_ipv4())
            .then_some(PortMapping { host_ip: IpAddr::V6(Ipv6Addr::UNSPECIFIED), ..*self })
    }

    /// The mappings this wanted one publishes on an endpoint with these families: one
    /// without an address on each family the endpoint has, its IPv6 one after its IPv4
    /// one; any other on its own address (the caller refuses a family the endpoint lacks).
    pub fn on_families(&self, ipv4: bool, ipv6: bool) -> Vec<PortMapping> {
        match self.ipv6_twin() {
            Some(twin) if ipv4 && ipv6 => vec![*self, twin],
            Some(twin) if ipv6 => vec![twin],
            _ => vec![*self],
        }
    }
}

/// What one reservation socket holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bind {
    /// The port on one address (0.0.0.0 or `::`: every address of its family alone).
    Address(IpAddr),
    /// The port on every address of both families: one `[::]` socket with IPV6_V6ONLY
    /// off, for a port published without an address on a dual-stack network.
    BothFamilies,
}

/// One socket to hold for published mappings: `mappings` are their indices in the list
/// it was planned for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hold {
    pub bind: Bind,
    pub port: u16,
    pub proto: Proto,
    pub mappings: Vec<usize>,
}

/// The sockets that hold `mappings`' host ports: one per mapping, but one for a mapping
/// without an address and its IPv6 twin (`on_families`'s pair), which a dual-stack socket
/// holds together. The twin is found by port, so a list with ports still 0 (to be chosen)
/// must be one wanted mapping's.
pub fn holds(mappings: &[PortMapping]) -> Vec<Hold> {
    let twins: HashMap<(u16, Proto), usize> = mappings
        .iter()
        .enumerate()
        .filter(|(_, m)| m.any_family && m.host_ip == IpAddr::V6(Ipv6Addr::UNSPECIFIED))
        .map(|(i, m)| ((m.host_port, m.proto), i))
        .collect();
    // Each IPv6 twin pairs with the first mapping it is the twin of.
    let mut pair_of = HashMap::new();
    let mut paired = HashSet::new();
    for (i, m) in mappings.iter().enumerate() {
        if let Some(&twin) = m.ipv6_twin().and_then(|_| twins.get(&(m.host_port, m.proto)))
            && paired.insert(twin)
        {
            pair_of.insert(i, twin);
        }
    }
    let mut holds = vec![];
    for (i, m) in mappings.iter().enumerate().filter(|(i, _)| !paired.contains(i)) {
        let (bind, held) = match pair_of.get(&i) {
            Some(&twin) => (Bind::BothFamilies, vec![i, twin]),
            None => (Bind::Address(m.host_ip), vec![i]),
        };
        holds.push(Hold { bind, port: m.host_port, proto: m.proto, mappings: held });
    }
    holds
}

/// The host address of a `-p` argument: IPv4 as is, IPv6 in brackets (`[::]`,
/// `[2001:db8::1]`), as Docker writes it.
fn host_address(ip: &str, spec: &str) -> Result<IpAddr, String> {
    if let Some(inner) = ip.strip_prefix('[').and_then(|rest| rest.strip_suffix(']')) {
        return inner.parse::<Ipv6Addr>().map(IpAddr::V6).map_err(|_| {
            format!("-p {spec}: {inner:?} is not an IPv6 address; write one in brackets, e.g. [::]:8080:80")
        });
    }
    ip.parse::<Ipv4Addr>().map(IpAddr::V4).map_err(|_| {
        format!("-p {spec}: {ip:?} is not an IPv4 address; write IPv6 ones in brackets, e.g. [::1]:8080:80")
    })
}

fn port(s: &str, what: &str, spec: &str) -> Result<u16, String> {
    match s.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(format!("-p {spec}: invalid {what} port {s:?}; ports are 1-65535")),
    }
}

fn range(s: &str, what: &str, spec: &str) -> Result<(u16, u16), String> {
    match s.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (port(a, what, spec)?, port(b, what, spec)?);
            if a > b {
                return Err(format!("-p {spec}: {what} port range {s} runs backwards"));
            }
            Ok((a, b))
        }
        None => port(s, what, spec).map(|p| (p, p)),
    }
}

/// A `-p` argument: `[HOSTIP:][HOSTPORT[-END]:]CPORT[-END][/tcp|/udp]`, expanded into one
/// mapping per port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublishSpec(pub Vec<PortMapping>);

impl FromStr for PublishSpec {
    type Err = String;

    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let (addr_ports, proto) = match spec.rsplit_once('/') {
            Some((rest, "tcp")) => (rest, Proto::Tcp),
            Some((rest, "udp")) => (rest, Proto::Udp),
            Some((_, other)) => {
                return Err(format!("-p {spec}: unsupported protocol {other:?}; use tcp or udp"));
            }
            None => (spec, Proto::Tcp),
        };
        // An IPv6 address is bracketed: its colons are not the separators.
        let (bracketed, ports) = match addr_ports.find(']') {
            Some(end) if addr_ports.starts_with('[') => {
                let ports = addr_ports[end + 1..].strip_prefix(':').ok_or_else(|| {
                    format!("-p {spec}: expected [IPV6]:[HOSTPORT:]CONTAINERPORT[/PROTO], e.g. [::]:8080:80")
                })?;
                (Some(&addr_ports[..=end]), ports)
            }
            _ => (None, addr_ports),
        };
        let parts: Vec<&str> = ports.split(':').collect();
        let (host_ip, host, container) = match (bracketed, parts.as_slice()) {
            (None, [c]) => (None, "", *c),
            (None, [h, c]) => (None, *h, *c),
            (None, [ip, h, c]) => (Some(*ip), *h, *c),
            (Some(ip), [h, c]) => (Some(ip), *h, *c),
            _ => {
                return Err(format!(
                    "-p {spec}: expected [HOSTIP:][HOSTPORT:]CONTAINERPORT[/PROTO], an IPv6 HOSTIP in brackets"
                ));
            }
        };
        let (host_ip, any_family) = match host_ip {
            Some(ip) => (host_address(ip, spec)?, false),
            None => (IpAddr::V4(Ipv4Addr::UNSPECIFIED), true),
        };
        let (c_lo, c_hi) = range(container, "container", spec)?;
        let (h_lo, h_hi) = if host.is_empty() { (0, 0) } else { range(host, "host", spec)? };
        let count = c_hi - c_lo;
        if host.is_empty() || (h_hi - h_lo == count) {
            let mappings = (0..=count)
                .map(|i| PortMapping {
                    host_ip,
                    host_port: if host.is_empty() { 0 } else { h_lo + i },
                    container_port: c_lo + i,
                    proto,
                    any_family,
                })
                .collect();
            return Ok(Self(mappings));
        }
        Err(format!(
            "-p {spec}: host range {host} and container range {container} differ in length; give ranges of equal length"
        ))
    }
}

/// A host port held by the daemon: a socket bound (TCP: not listening) to the address and
/// port, so the kernel refuses the port to anyone else while it is published.
pub struct Reservation {
    _socket: Socket,
}

/// Binds `port` (0: any free one) on `bind` for `proto`; returns the reservation and the
/// port.
pub fn reserve(bind: Bind, port: u16, proto: Proto) -> Result<(Reservation, u16)> {
    bind_reservation(bind, port, proto, false)
}

/// Holds `port` on `bind` for a container whose runtime binds its published ports itself
/// after the CNI ADD (podman: conmon listens on each TCP port and binds each UDP one, and
/// fails the container when it cannot). TCP: bound with SO_REUSEADDR and not listening,
/// so the runtime's listener (Go's set SO_REUSEADDR) binds beside it and a process without
/// SO_REUSEADDR is still refused. UDP: not held (Go's UDP sockets set no SO_REUSEADDR,
/// any holder would refuse the runtime's).
pub fn reserve_beside_runtime(bind: Bind, port: u16, proto: Proto) -> Result<Option<Reservation>> {
    match proto {
        Proto::Tcp => Ok(Some(bind_reservation(bind, port, proto, true)?.0)),
        Proto::Udp => Ok(None),
    }
}

fn bind_reservation(bind: Bind, port: u16, proto: Proto, reuse_address: bool) -> Result<(Reservation, u16)> {
    let kind = match proto {
        Proto::Tcp => Type::STREAM,
        Proto::Udp => Type::DGRAM,
    };
    let ip = match bind {
        Bind::Address(ip) => ip,
        Bind::BothFamilies => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    let what = SocketAddr::new(ip, port);
    let socket = Socket::new(Domain::for_address(what), kind, None).context("socket")?;
    if reuse_address {
        socket.set_reuse_address(true).context("SO_REUSEADDR")?;
    }
    if ip.is_ipv6() {
        // Set either way: the default (net.ipv6.bindv6only) is the host's. `::` alone
        // holds the IPv6 port only, 0.0.0.0's being a reservation of its own.
        socket.set_only_v6(bind != Bind::BothFamilies).context("IPV6_V6ONLY")?;
    }
    if let Err(err) = socket.bind(&what.into()) {
        match err.raw_os_error() {
            Some(libc::EADDRINUSE) => {
                let (taken, on) = match bind {
                    Bind::Address(_) => (format!("{what}/{proto}"), ""),
                    Bind::BothFamilies => (format!("{port}/{proto}"), " on 0.0.0.0 or [::]"),
                };
                bail!(
                    "host port {taken} is already in use{on} (by a host process or another container); choose another"
                )
            }
            Some(libc::EADDRNOTAVAIL) => {
                bail!("{ip} is not an address of this host; publish on one of its addresses")
            }
            _ => bail!("reserving {what}/{proto}: {err}"),
        }
    }
    let bound = socket.local_addr().context("getsockname")?.as_socket();
    let bound_port = bound
        .with_context(|| format!("reserving {what}/{proto}: the socket is bound to no IP address"))?
        .port();
    Ok((Reservation { _socket: socket }, bound_port))
}

/// Raises the open-file limit to its maximum: every published port holds a socket.
pub fn raise_fd_limit() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit with a pointer to a live rlimit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// Docker's `NetworkSettings.Ports`: `{"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}]}`.
pub fn docker_ports(mappings: &[PortMapping]) -> BTreeMap<String, Vec<serde_json::Value>> {
    let mut ports: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::new();
    for m in mappings {
        ports
            .entry(format!("{}/{}", m.container_port, m.proto))
            .or_default()
            .push(serde_json::json!({"HostIp": m.host_ip.to_string(), "HostPort": m.host_port.to_string()}));
    }
    ports
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Vec<PortMapping> {
        s.parse::<PublishSpec>().unwrap().0
    }

    /// A mapping on a named IPv4 address.
    fn m(ip: [u8; 4], host: u16, container: u16, proto: Proto) -> PortMapping {
        PortMapping {
            host_ip: Ipv4Addr::from(ip).into(),
            host_port: host,
            container_port: container,
            proto,
            any_family: false,
        }
    }

    /// A mapping on a named IPv6 address.
    fn m6(ip: &str, host: u16, container: u16, proto: Proto) -> PortMapping {
        PortMapping {
            host_ip: ip.parse().unwrap(),
            host_port: host,
            container_port: container,
            proto,
            any_family: false,
        }
    }

    /// A mapping without an address (`-p HOST:CONTAINER`).
    fn any(host: u16, container: u16, proto: Proto) -> PortMapping {
        PortMapping { any_family: true, ..m([0; 4], host, container, proto) }
    }

    #[test]
    fn dockers_publish_syntax_is_understood() {
        assert_eq!(parse("8080:80"), [any(8080, 80, Proto::Tcp)]);
        assert_eq!(parse("80"), [any(0, 80, Proto::Tcp)]);
        assert_eq!(
            parse("0.0.0.0:8080:80"),
            [m([0; 4], 8080, 80, Proto::Tcp)],
            "a named 0.0.0.0 is IPv4 alone"
        );
        assert_eq!(parse("127.0.0.1:8080:80"), [m([127, 0, 0, 1], 8080, 80, Proto::Tcp)]);
        assert_eq!(parse("127.0.0.1::80/udp"), [m([127, 0, 0, 1], 0, 80, Proto::Udp)]);
        assert_eq!(parse("53:53/udp"), [any(53, 53, Proto::Udp)]);
        assert_eq!(
            parse("8000-8002:9000-9002"),
            [any(8000, 9000, Proto::Tcp), any(8001, 9001, Proto::Tcp), any(8002, 9002, Proto::Tcp)]
        );
        assert_eq!(parse("7000-7999:7000-7999").len(), 1000);
    }

    #[test]
    fn ipv6_host_addresses_are_bracketed_as_docker_writes_them() {
        assert_eq!(parse("[::]:8080:80"), [m6("::", 8080, 80, Proto::Tcp)]);
        assert_eq!(parse("[2001:db8::1]:8080:80/udp"), [m6("2001:db8::1", 8080, 80, Proto::Udp)]);
        assert_eq!(parse("[::1]::80"), [m6("::1", 0, 80, Proto::Tcp)]);
        assert_eq!(
            parse("8080:80")[0].ipv6_twin(),
            Some(PortMapping { any_family: true, ..m6("::", 8080, 80, Proto::Tcp) }),
            "-p 8080:80 is both"
        );
        assert_eq!(parse("127.0.0.1:8080:80")[0].ipv6_twin(), None, "an IPv4 address is IPv4 only");
        assert_eq!(parse("0.0.0.0:8080:80")[0].ipv6_twin(), None, "0.0.0.0 is IPv4 only");
        assert_eq!(parse("[::]:8080:80")[0].ipv6_twin(), None);
        assert_eq!(m6("::", 8080, 80, Proto::Tcp).to_string(), "80/tcp -> [::]:8080");
    }

    #[test]
    fn bad_publish_specs_say_what_is_wrong() {
        let err = |s: &str| s.parse::<PublishSpec>().unwrap_err();
        assert!(err("8080:80/sctp").contains("unsupported protocol"));
        assert!(err("8080:0").contains("invalid container port"));
        assert!(err("70000:80").contains("invalid host port"));
        assert!(err("1.2.3:8080:80").contains("not an IPv4 address"));
        assert!(err("[fe::zz]:8080:80").contains("\"fe::zz\" is not an IPv6 address; write one in brackets"));
        assert!(err("[::1]8080:80").contains("expected [IPV6]:"));
        assert!(err("[::1]:80").contains("an IPv6 HOSTIP in brackets"), "{}", err("[::1]:80"));
        assert!(err("8000-8001:80-82").contains("differ in length"));
        assert!(err("9000-8000:80").contains("backwards"));
        assert!(err("a:b:c:d").contains("expected"));
    }

    /// `-p PORT` on a dual-stack network is one socket for both families; a named address,
    /// or a network of one family, is a socket per mapping.
    #[test]
    fn a_port_without_an_address_is_held_for_both_families_by_one_socket() {
        let tcp = Proto::Tcp;
        let wanted = any(8080, 80, tcp);
        let twin = PortMapping { host_ip: Ipv6Addr::UNSPECIFIED.into(), ..wanted };
        assert_eq!(wanted.on_families(true, true), [wanted, twin], "dual-stack: both, IPv4 first");
        assert_eq!(wanted.on_families(true, false), [wanted], "IPv4-only: IPv4");
        assert_eq!(wanted.on_families(false, true), [twin], "IPv6-only: IPv6");
        let named = m([0; 4], 8080, 80, tcp);
        assert_eq!(named.on_families(true, true), [named], "a named 0.0.0.0 is IPv4 alone");

        let hold =
            |bind, port, mappings: &[usize]| Hold { bind, port, proto: tcp, mappings: mappings.to_vec() };
        assert_eq!(holds(&wanted.on_families(true, true)), [hold(Bind::BothFamilies, 8080, &[0, 1])]);
        let random = any(0, 80, tcp).on_families(true, true);
        assert_eq!(holds(&random), [hold(Bind::BothFamilies, 0, &[0, 1])], "a port to choose: one for both");
        assert_eq!(holds(&[twin]), [hold(Bind::Address(Ipv6Addr::UNSPECIFIED.into()), 8080, &[0])]);

        // An endpoint's published list, as restored after a restart: the pairs are found
        // by port, wherever they are; named addresses keep a socket each.
        let named6 = m6("::", 9000, 80, tcp);
        let local = m([127, 0, 0, 1], 9001, 80, tcp);
        let udp = any(8080, 53, Proto::Udp);
        let udp6 = PortMapping { host_ip: Ipv6Addr::UNSPECIFIED.into(), ..udp };
        let list = [twin, m([0; 4], 9000, 80, tcp), named6, local, udp, wanted, udp6];
        assert_eq!(
            holds(&list),
            [
                hold(Bind::Address(Ipv4Addr::UNSPECIFIED.into()), 9000, &[1]),
                hold(Bind::Address(Ipv6Addr::UNSPECIFIED.into()), 9000, &[2]),
                hold(Bind::Address(Ipv4Addr::LOCALHOST.into()), 9001, &[3]),
                Hold { bind: Bind::BothFamilies, port: 8080, proto: Proto::Udp, mappings: vec![4, 6] },
                hold(Bind::BothFamilies, 8080, &[5, 0]),
            ]
        );
        // State written before `any_family`: each address alone.
        let old = [m([0; 4], 8080, 80, tcp), m6("::", 8080, 80, tcp)];
        assert_eq!(holds(&old).len(), 2);
        let read: PortMapping = serde_json::from_str(
            r#"{"host_ip": "0.0.0.0", "host_port": 8080, "container_port": 80, "proto": "tcp"}"#,
        )
        .unwrap();
        assert_eq!(read, old[0]);
        let written = serde_json::to_value(wanted).unwrap();
        assert_eq!(written["any_family"], true, "{written}");
        assert!(serde_json::to_value(named).unwrap().get("any_family").is_none(), "false is left out");
    }

    #[test]
    fn reservations_hold_the_port() {
        // A namespace of the test's own: nothing is bound on the machine's.
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let any = Bind::Address(Ipv4Addr::UNSPECIFIED.into());
        let (held, port) = reserve(any, 0, Proto::Tcp).unwrap();
        assert_ne!(port, 0);
        let err = reserve(any, port, Proto::Tcp).err().unwrap();
        assert!(err.to_string().contains("already in use"), "{err}");
        assert!(reserve(any, port, Proto::Udp).is_ok(), "UDP and TCP ports are separate");
        drop(held);
        assert!(reserve_once_released(any, port, Proto::Tcp).is_ok());
        let any6 = Bind::Address(Ipv6Addr::UNSPECIFIED.into());
        let (_held6, port6) = reserve(any6, port, Proto::Tcp).expect("[::] is apart from 0.0.0.0");
        assert_eq!(port6, port);
        assert!(reserve(any6, port, Proto::Tcp).is_err(), "[::] was not held");
    }

    /// Reserves a port that a dropped reservation held. A child spawned by another test
    /// holds a copy of every descriptor from its fork to its exec, so a socket closed here
    /// can stay bound for that moment (CI saw it): the retry is bounded at one second.
    fn reserve_once_released(bind: Bind, port: u16, proto: Proto) -> Result<(Reservation, u16)> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
        loop {
            match reserve(bind, port, proto) {
                Err(err)
                    if err.to_string().contains("already in use") && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(10))
                }
                reserved => return reserved,
            }
        }
    }

    /// One dual-stack socket holds the port on every address of both families, and is
    /// refused where either family's port is taken.
    #[test]
    fn a_reservation_for_both_families_holds_and_is_refused_on_each() {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let addresses: [IpAddr; 4] = [
            Ipv4Addr::UNSPECIFIED.into(),
            Ipv6Addr::UNSPECIFIED.into(),
            Ipv4Addr::LOCALHOST.into(),
            Ipv6Addr::LOCALHOST.into(),
        ];
        // `lo` is down in a new namespace: 127.0.0.1 and ::1 are not yet addresses.
        let lo = std::process::Command::new("ip").args(["link", "set", "lo", "up"]).status().unwrap();
        assert!(lo.success());
        for proto in [Proto::Tcp, Proto::Udp] {
            let (held, port) = reserve(Bind::BothFamilies, 0, proto).unwrap();
            for ip in addresses {
                let err = reserve(Bind::Address(ip), port, proto).err();
                assert!(err.is_some(), "{ip} port {port}/{proto} was not held by the dual-stack socket");
            }
            drop(held);
            for ip in addresses {
                let (taken, _) = reserve_once_released(Bind::Address(ip), port, proto).unwrap();
                let err =
                    reserve(Bind::BothFamilies, port, proto).err().map(|e| e.to_string()).unwrap_or_default();
                assert!(
                    err.contains(&format!("host port {port}/{proto} is already in use on 0.0.0.0 or [::]")),
                    "with {ip} port {port}/{proto} taken: {err:?}"
                );
                drop(taken);
            }
        }
    }

    /// A port held beside a runtime (podman) is refused to a plain bind, and the runtime's
    /// own listener, with SO_REUSEADDR as Go sets it, still gets it.
    #[test]
    fn reservations_beside_a_runtime_let_its_listener_bind() {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let any = Bind::Address(Ipv4Addr::UNSPECIFIED.into());
        let (free, port) = reserve(any, 0, Proto::Tcp).unwrap();
        drop(free);
        let _held = reserve_beside_runtime(any, port, Proto::Tcp).unwrap().expect("TCP is held");
        let err = reserve(any, port, Proto::Tcp).err().unwrap();
        assert!(err.to_string().contains("already in use"), "a plain bind got a held port: {err}");
        let runtime = std::net::TcpListener::bind((Ipv4Addr::UNSPECIFIED, port));
        assert!(runtime.is_ok(), "the runtime's listener could not bind: {:?}", runtime.err());
        assert!(
            reserve_beside_runtime(any, port, Proto::Udp).unwrap().is_none(),
            "UDP is left to the runtime"
        );
    }
}
