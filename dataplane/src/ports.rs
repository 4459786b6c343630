//! Published ports, user side: Docker's `-p` syntax, host-port reservations (a bound
//! socket per published port, so that no host process can take the port afterwards and a
//! port already in use is refused), and the entries of the PUBLISHED map.

use std::{
    collections::BTreeMap,
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    str::FromStr,
};

use anyhow::{Context, Result, bail};
use dataplane_common::{IPPROTO_TCP, IPPROTO_UDP};
use nix::sys::socket::{SockaddrLike, SockaddrStorage, getsockname};
use serde::{Deserialize, Serialize};

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
/// `host_ip` 0.0.0.0 is every IPv4 address of the host (and, for an endpoint with an IPv6
/// address, `::` beside it, as Docker does for `-p 8080:80`); `::` every IPv6 one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PortMapping {
    pub host_ip: IpAddr,
    pub host_port: u16,
    pub container_port: u16,
    pub proto: Proto,
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
        (self.host_ip == IpAddr::V4(Ipv4Addr::UNSPECIFIED))
            .then_some(PortMapping { host_ip: IpAddr::V6(Ipv6Addr::UNSPECIFIED), ..*self })
    }
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
        let host_ip = match host_ip {
            Some(ip) => host_address(ip, spec)?,
            None => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
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
    _socket: OwnedFd,
}

/// Binds `ip:port` (port 0: any free one) for `proto`; returns the reservation and the port.
pub fn reserve(ip: IpAddr, port: u16, proto: Proto) -> Result<(Reservation, u16)> {
    bind_reservation(ip, port, proto, false)
}

/// Holds `ip:port` for a container whose runtime binds its published ports itself after
/// the CNI ADD (podman: conmon listens on each TCP port and binds each UDP one, and fails
/// the container when it cannot). TCP: bound with SO_REUSEADDR and not listening, so the
/// runtime's listener (Go's set SO_REUSEADDR) binds beside it and a process without
/// SO_REUSEADDR is still refused. UDP: not held (Go's UDP sockets set no SO_REUSEADDR,
/// any holder would refuse the runtime's).
pub fn reserve_beside_runtime(ip: IpAddr, port: u16, proto: Proto) -> Result<Option<Reservation>> {
    match proto {
        Proto::Tcp => Ok(Some(bind_reservation(ip, port, proto, true)?.0)),
        Proto::Udp => Ok(None),
    }
}

fn bind_reservation(ip: IpAddr, port: u16, proto: Proto, reuse_address: bool) -> Result<(Reservation, u16)> {
    let kind = match proto {
        Proto::Tcp => libc::SOCK_STREAM,
        Proto::Udp => libc::SOCK_DGRAM,
    };
    // SAFETY: socket(2) with constant arguments; the result is checked.
    let family = if ip.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
    let fd = unsafe { libc::socket(family, kind | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        bail!("socket: {}", std::io::Error::last_os_error());
    }
    // SAFETY: fd was just created and is owned by nobody else.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    if reuse_address {
        set_option(&socket, libc::SOL_SOCKET, libc::SO_REUSEADDR).context("SO_REUSEADDR")?;
    }
    if ip.is_ipv6() {
        // `::` holds the IPv6 port only: 0.0.0.0's is a mapping (and a reservation) of its own.
        set_option(&socket, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY).context("IPV6_V6ONLY")?;
    }
    let what = SocketAddr::new(ip, port);
    let addr = SockaddrStorage::from(what);
    // SAFETY: bind with a pointer to a live socket address and its size.
    if unsafe { libc::bind(socket.as_raw_fd(), addr.as_ptr(), addr.len()) } != 0 {
        let err = std::io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EADDRINUSE) => {
                bail!(
                    "host port {what}/{proto} is already in use (by a host process or another container); choose another"
                )
            }
            Some(libc::EADDRNOTAVAIL) => {
                bail!("{ip} is not an address of this host; publish on one of its addresses")
            }
            _ => bail!("reserving {what}/{proto}: {err}"),
        }
    }
    let bound: SockaddrStorage = getsockname(socket.as_raw_fd()).context("getsockname")?;
    let bound_port = match (bound.as_sockaddr_in(), bound.as_sockaddr_in6()) {
        (Some(v4), _) => v4.port(),
        (_, Some(v6)) => v6.port(),
        _ => bail!("reserving {what}/{proto}: the socket is bound to no IP address"),
    };
    Ok((Reservation { _socket: socket }, bound_port))
}

/// Turns a boolean socket option on.
fn set_option(socket: &OwnedFd, level: libc::c_int, name: libc::c_int) -> Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: setsockopt with a pointer to a live c_int and its size.
    let set = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (&raw const on).cast(),
            size_of::<libc::c_int>() as u32,
        )
    };
    if set != 0 {
        bail!(std::io::Error::last_os_error());
    }
    Ok(())
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

    fn m(ip: [u8; 4], host: u16, container: u16, proto: Proto) -> PortMapping {
        PortMapping { host_ip: Ipv4Addr::from(ip).into(), host_port: host, container_port: container, proto }
    }

    fn m6(ip: &str, host: u16, container: u16, proto: Proto) -> PortMapping {
        PortMapping { host_ip: ip.parse().unwrap(), host_port: host, container_port: container, proto }
    }

    #[test]
    fn dockers_publish_syntax_is_understood() {
        assert_eq!(parse("8080:80"), [m([0; 4], 8080, 80, Proto::Tcp)]);
        assert_eq!(parse("80"), [m([0; 4], 0, 80, Proto::Tcp)]);
        assert_eq!(parse("127.0.0.1:8080:80"), [m([127, 0, 0, 1], 8080, 80, Proto::Tcp)]);
        assert_eq!(parse("127.0.0.1::80/udp"), [m([127, 0, 0, 1], 0, 80, Proto::Udp)]);
        assert_eq!(parse("53:53/udp"), [m([0; 4], 53, 53, Proto::Udp)]);
        assert_eq!(
            parse("8000-8002:9000-9002"),
            [
                m([0; 4], 8000, 9000, Proto::Tcp),
                m([0; 4], 8001, 9001, Proto::Tcp),
                m([0; 4], 8002, 9002, Proto::Tcp)
            ]
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
            Some(m6("::", 8080, 80, Proto::Tcp)),
            "-p 8080:80 is both"
        );
        assert_eq!(parse("127.0.0.1:8080:80")[0].ipv6_twin(), None, "an IPv4 address is IPv4 only");
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

    #[test]
    fn reservations_hold_the_port() {
        // A namespace of the test's own: nothing is bound on the machine's.
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let any = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        let (held, port) = reserve(any, 0, Proto::Tcp).unwrap();
        assert_ne!(port, 0);
        let err = reserve(any, port, Proto::Tcp).err().unwrap();
        assert!(err.to_string().contains("already in use"), "{err}");
        assert!(reserve(any, port, Proto::Udp).is_ok(), "UDP and TCP ports are separate");
        drop(held);
        assert!(reserve(any, port, Proto::Tcp).is_ok());
        let any6 = IpAddr::V6(Ipv6Addr::UNSPECIFIED);
        let (_held6, port6) = reserve(any6, port, Proto::Tcp).expect("[::] is apart from 0.0.0.0");
        assert_eq!(port6, port);
        assert!(reserve(any6, port, Proto::Tcp).is_err(), "[::] was not held");
    }

    /// A port held beside a runtime (podman) is refused to a plain bind, and the runtime's
    /// own listener, with SO_REUSEADDR as Go sets it, still gets it.
    #[test]
    fn reservations_beside_a_runtime_let_its_listener_bind() {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let any = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        let (free, port) = reserve(any, 0, Proto::Tcp).unwrap();
        drop(free);
        let _held = reserve_beside_runtime(any, port, Proto::Tcp).unwrap().expect("TCP is held");
        let err = reserve(any, port, Proto::Tcp).err().unwrap();
        assert!(err.to_string().contains("already in use"), "a plain bind got a held port: {err}");
        let runtime = std::net::TcpListener::bind((any, port));
        assert!(runtime.is_ok(), "the runtime's listener could not bind: {:?}", runtime.err());
        assert!(
            reserve_beside_runtime(any, port, Proto::Udp).unwrap().is_none(),
            "UDP is left to the runtime"
        );
    }
}
