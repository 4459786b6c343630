//! Published ports, user side: Docker's `-p` syntax, host-port reservations (a bound
//! socket per published port, so that no host process can take the port afterwards and a
//! port already in use is refused), and the entries of the PUBLISHED map.

use std::{
    collections::BTreeMap,
    fmt,
    net::{Ipv4Addr, SocketAddrV4},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    str::FromStr,
};

use anyhow::{Result, bail};
use dataplane_common::{IPPROTO_TCP, IPPROTO_UDP};
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PortMapping {
    pub host_ip: Ipv4Addr,
    pub host_port: u16,
    pub container_port: u16,
    pub proto: Proto,
}

impl fmt::Display for PortMapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{} -> {}:{}", self.container_port, self.proto, self.host_ip, self.host_port)
    }
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
        let parts: Vec<&str> = addr_ports.split(':').collect();
        let (host_ip, host, container) = match parts.as_slice() {
            [c] => (None, "", *c),
            [h, c] => (None, *h, *c),
            [ip, h, c] => (Some(*ip), *h, *c),
            _ => return Err(format!("-p {spec}: expected [HOSTIP:][HOSTPORT:]CONTAINERPORT[/PROTO]")),
        };
        let host_ip = match host_ip {
            Some(ip) => ip.parse().map_err(|_| format!("-p {spec}: {ip:?} is not an IPv4 address"))?,
            None => Ipv4Addr::UNSPECIFIED,
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
pub fn reserve(ip: Ipv4Addr, port: u16, proto: Proto) -> Result<(Reservation, u16)> {
    bind_reservation(ip, port, proto, false)
}

/// Holds `ip:port` for a container whose runtime binds its published ports itself after
/// the CNI ADD (podman: conmon listens on each TCP port and binds each UDP one, and fails
/// the container when it cannot). TCP: bound with SO_REUSEADDR and not listening, so the
/// runtime's listener (Go's set SO_REUSEADDR) binds beside it and a process without
/// SO_REUSEADDR is still refused. UDP: not held (Go's UDP sockets set no SO_REUSEADDR,
/// any holder would refuse the runtime's).
pub fn reserve_beside_runtime(ip: Ipv4Addr, port: u16, proto: Proto) -> Result<Option<Reservation>> {
    match proto {
        Proto::Tcp => Ok(Some(bind_reservation(ip, port, proto, true)?.0)),
        Proto::Udp => Ok(None),
    }
}

fn bind_reservation(
    ip: Ipv4Addr,
    port: u16,
    proto: Proto,
    reuse_address: bool,
) -> Result<(Reservation, u16)> {
    let kind = match proto {
        Proto::Tcp => libc::SOCK_STREAM,
        Proto::Udp => libc::SOCK_DGRAM,
    };
    // SAFETY: socket(2) with constant arguments; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_INET, kind | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        bail!("socket: {}", std::io::Error::last_os_error());
    }
    // SAFETY: fd was just created and is owned by nobody else.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    if reuse_address {
        let on: libc::c_int = 1;
        // SAFETY: setsockopt with a pointer to a live c_int and its size.
        let set = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_REUSEADDR,
                (&raw const on).cast(),
                size_of::<libc::c_int>() as u32,
            )
        };
        if set != 0 {
            bail!("SO_REUSEADDR: {}", std::io::Error::last_os_error());
        }
    }
    let addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as u16,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(ip.octets()) },
        sin_zero: [0; 8],
    };
    let len = size_of::<libc::sockaddr_in>() as u32;
    // SAFETY: bind with a pointer to a live sockaddr_in and its size.
    if unsafe { libc::bind(socket.as_raw_fd(), (&raw const addr).cast(), len) } != 0 {
        let err = std::io::Error::last_os_error();
        let what = SocketAddrV4::new(ip, port);
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
    let mut bound: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    let mut bound_len = len;
    // SAFETY: getsockname writes at most bound_len bytes into `bound`.
    unsafe { libc::getsockname(socket.as_raw_fd(), (&raw mut bound).cast(), &mut bound_len) };
    Ok((Reservation { _socket: socket }, u16::from_be(bound.sin_port)))
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
        PortMapping { host_ip: Ipv4Addr::from(ip), host_port: host, container_port: container, proto }
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
    fn bad_publish_specs_say_what_is_wrong() {
        let err = |s: &str| s.parse::<PublishSpec>().unwrap_err();
        assert!(err("8080:80/sctp").contains("unsupported protocol"));
        assert!(err("8080:0").contains("invalid container port"));
        assert!(err("70000:80").contains("invalid host port"));
        assert!(err("1.2.3:8080:80").contains("not an IPv4 address"));
        assert!(err("8000-8001:80-82").contains("differ in length"));
        assert!(err("9000-8000:80").contains("backwards"));
        assert!(err("a:b:c:d").contains("expected"));
    }

    #[test]
    fn reservations_hold_the_port() {
        // A namespace of the test's own: nothing is bound on the machine's.
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let any = Ipv4Addr::UNSPECIFIED;
        let (held, port) = reserve(any, 0, Proto::Tcp).unwrap();
        assert_ne!(port, 0);
        let err = reserve(any, port, Proto::Tcp).err().unwrap();
        assert!(err.to_string().contains("already in use"), "{err}");
        assert!(reserve(any, port, Proto::Udp).is_ok(), "UDP and TCP ports are separate");
        drop(held);
        assert!(reserve(any, port, Proto::Tcp).is_ok());
    }

    /// A port held beside a runtime (podman) is refused to a plain bind, and the runtime's
    /// own listener, with SO_REUSEADDR as Go sets it, still gets it.
    #[test]
    fn reservations_beside_a_runtime_let_its_listener_bind() {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let any = Ipv4Addr::UNSPECIFIED;
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
