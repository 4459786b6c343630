//! The daemon's settings and where they come from: its flags (or their environment
//! variables), else its config file (`/etc/dataplane/daemon.toml`, or `--config`), else
//! the built-in defaults. One struct is both the flags and the file, so that a setting
//! has one name and one meaning in both (`--state-dir` is `state-dir = ...`).
//!
//! The control socket is not in the file: the CLI never reads it, and a daemon and its
//! clients must agree on the socket (`--socket`, `DATAPLANE_SOCKET`).

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, Result};
use serde::{Deserialize, Deserializer};

use super::Config;
use crate::{
    nat::UplinkXdp,
    store::{StoreAccess, StoreAddress},
};

/// Where the daemon reads its settings unless `--config` names another file.
pub const DEFAULT_CONFIG_FILE: &str = "/etc/dataplane/daemon.toml";

const DEFAULT_STATE_DIR: &str = "/var/lib/dataplane";
const DEFAULT_BPFFS: &str = "/run/dataplane/bpffs";
const DEFAULT_NETNS_DIR: &str = "/run/netns";
const DEFAULT_DOCKER_STALE_AFTER_SECS: u64 = 60;
const DEFAULT_STORE_TTL_SECS: u64 = 30;

/// What the daemon's flags set, each also a key of the config file (kebab-case). A
/// setting that is `None` (or an empty list) was not given there.
#[derive(clap::Args, Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Settings {
    /// Where networks, containers, addresses and the firewall are persisted, with the
    /// per-container /etc files and the logs of detached containers
    /// [default: /var/lib/dataplane].
    #[arg(long, env = "DATAPLANE_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// bpffs directory for the pinned programs, maps and XDP link (a bpffs is mounted
    /// there if it is not one yet) [default: /run/dataplane/bpffs].
    #[arg(long, env = "DATAPLANE_BPFFS", value_name = "DIR")]
    pub bpffs: Option<PathBuf>,
    /// Where container network namespaces are pinned, as `dp-<id>` (made a mount of its
    /// own, as `ip netns` does) [default: /run/netns].
    #[arg(long, env = "DATAPLANE_NETNS_DIR", value_name = "DIR")]
    pub netns_dir: Option<PathBuf>,
    /// Interface masqueraded traffic leaves by and published ports are reached on
    /// [default: the one holding the default route; none: NAT is off].
    #[arg(long, env = "DATAPLANE_UPLINK", value_name = "IFACE")]
    pub uplink: Option<String>,
    /// Source ports for masquerading, FIRST-LAST [default: above the host's
    /// net.ipv4.ip_local_port_range].
    #[arg(long, env = "DATAPLANE_NAT_PORT_RANGE", value_name = "FIRST-LAST", value_parser = crate::nat::parse_port_range)]
    #[serde(default, deserialize_with = "port_range")]
    pub nat_port_range: Option<(u16, u16)>,
    /// cgroup (v2) whose processes reach published ports on the host's addresses and
    /// 127.0.0.1; only this namespace's sockets are affected [default: the cgroup2 root].
    #[arg(long, env = "DATAPLANE_CGROUP", value_name = "DIR")]
    pub cgroup: Option<PathBuf>,
    /// Upstream DNS server for names the embedded resolver does not know; repeat (or
    /// separate with commas) for more [default: the nameservers of /etc/resolv.conf].
    #[arg(long, env = "DATAPLANE_DNS", value_name = "IP", value_delimiter = ',')]
    #[serde(default)]
    pub dns: Vec<IpAddr>,
    /// Entries of each conntrack table (masquerade, published), 64-16777216; the least
    /// recently used flows are evicted when one is full (`dataplane stats` counts them)
    /// [default: 131072].
    #[arg(long, env = "DATAPLANE_CONNTRACK_MAX", value_name = "N", value_parser = clap::value_parser!(u32).range(64..=16_777_216))]
    pub conntrack_max: Option<u32>,
    /// XDP on the uplink for published ports [default: auto].
    #[arg(long, env = "DATAPLANE_XDP", value_enum)]
    pub xdp: Option<UplinkXdp>,
    /// Serve Docker's network plugin API on this socket; alone, where Docker finds the
    /// plugin `dataplane` (/run/docker/plugins/dataplane.sock), so that
    /// `docker network create -d dataplane` makes our networks [default: off].
    #[arg(
        long,
        env = "DATAPLANE_DOCKER_PLUGIN",
        value_name = "PATH",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = crate::docker::DEFAULT_PLUGIN_SOCKET
    )]
    pub docker_plugin: Option<PathBuf>,
    /// Seconds after start until Docker's endpoints found half-made then (created and
    /// never joined, or never taken into a sandbox: Docker gave up on them while the
    /// daemon was away) are removed [default: 60].
    #[arg(long, env = "DATAPLANE_DOCKER_STALE_AFTER", value_name = "SECONDS")]
    pub docker_stale_after: Option<u64>,
    /// Serve Prometheus metrics at http://ADDR:PORT/metrics: packets and bytes per path,
    /// drops per reason, conntrack use, networks, containers, published ports, DNS answers
    /// and control request latencies [default: off].
    #[arg(long, env = "DATAPLANE_METRICS_ADDR", value_name = "ADDR:PORT")]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Bytes of the ring buffer that carries `dataplane monitor`'s events from the kernel
    /// programs: a power of two, at least the page size; when it is full, events are lost
    /// (and counted), never packets [default: 262144].
    #[arg(long, env = "DATAPLANE_MONITOR_RING_SIZE", value_name = "BYTES", value_parser = ring_size)]
    #[serde(default, deserialize_with = "file_ring_size")]
    pub monitor_ring_size: Option<u32>,
    /// How much the daemon logs, to its standard error (the journal under systemd).
    /// Without it, RUST_LOG is read as env_logger reads it (`RUST_LOG=dataplane=debug`
    /// for one module) [default: info].
    #[arg(long, env = "DATAPLANE_LOG_LEVEL", value_enum, value_name = "LEVEL")]
    pub log_level: Option<LogLevel>,
    /// IPv6 on the default network `bridge` too, when the daemon makes it (user networks
    /// ask with `network create --ipv6`) [default: off].
    #[arg(long, env = "DATAPLANE_IPV6", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub ipv6: Option<bool>,
    /// The default network's IPv6 subnet; implies --ipv6 [default: a /64 of the host's
    /// ULA pool].
    #[arg(long, env = "DATAPLANE_FIXED_CIDR_V6", value_name = "CIDR", value_parser = crate::cli::cidr6)]
    pub fixed_cidr_v6: Option<ipnet::Ipv6Net>,
    /// The store this host shares overlay networks with others through,
    /// etcd://ADDR:PORT[,ADDR:PORT...]; without it, overlay networks are refused and
    /// everything stays in the local state [default: none].
    #[arg(long, env = "DATAPLANE_STORE", value_name = "etcd://ADDR:PORT[,...]", value_parser = clap::value_parser!(StoreAddress))]
    pub store: Option<StoreAddress>,
    /// The address other hosts reach this one by on the underlay, recorded with its
    /// endpoints in the store; IPv4 or IPv6, the underlay's family, the same on every
    /// host [default: the uplink's IPv4 address, else the IPv6 default route's
    /// interface's].
    #[arg(long, env = "DATAPLANE_ADVERTISE_ADDRESS", value_name = "IP")]
    pub advertise_address: Option<IpAddr>,
    /// Seconds the store keeps this host's address leases and endpoints after it stops
    /// renewing them (it died) [default: 30].
    #[arg(long, env = "DATAPLANE_STORE_TTL", value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(2..=86_400))]
    pub store_ttl: Option<u64>,
    /// The UDP port overlay networks' VXLAN tunnel uses between hosts; every host of a
    /// store must use the same [default: 4789].
    #[arg(long, env = "DATAPLANE_VXLAN_PORT", value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub vxlan_port: Option<u16>,
    /// The CA that signed the store's certificates (PEM), for an etcds:// store; no other
    /// CA is trusted for it (as etcdctl's --cacert).
    #[arg(long, env = "DATAPLANE_STORE_CACERT", value_name = "FILE")]
    pub store_cacert: Option<PathBuf>,
    /// This host's client certificate (PEM), for a store that asks for one
    /// (etcd's --client-cert-auth); with --store-key.
    #[arg(long, env = "DATAPLANE_STORE_CERT", value_name = "FILE", requires = "store_key")]
    pub store_cert: Option<PathBuf>,
    /// The key of --store-cert (PEM), readable by its owner only (chmod 600).
    #[arg(long, env = "DATAPLANE_STORE_KEY", value_name = "FILE", requires = "store_cert")]
    pub store_key: Option<PathBuf>,
    /// The etcd user to sign in as, for a store with authentication on; its password is
    /// read from --store-password-file or DATAPLANE_STORE_PASSWORD, never from a flag.
    #[arg(long, env = "DATAPLANE_STORE_USER", value_name = "USER")]
    pub store_user: Option<String>,
    /// A file holding the password of --store-user (a trailing newline is not part of
    /// it), readable by its owner only (chmod 600) [default: the DATAPLANE_STORE_PASSWORD
    /// variable].
    #[arg(long, env = "DATAPLANE_STORE_PASSWORD_FILE", value_name = "FILE")]
    pub store_password_file: Option<PathBuf>,
}

/// The daemon's log levels (`--log-level`), the most quiet first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Nothing.
    Off,
    /// What failed.
    Error,
    /// What failed and was worked around.
    Warn,
    /// Also each network and container made or removed, and what the daemon chose at start.
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    pub fn filter(self) -> log::LevelFilter {
        match self {
            LogLevel::Off => log::LevelFilter::Off,
            LogLevel::Error => log::LevelFilter::Error,
            LogLevel::Warn => log::LevelFilter::Warn,
            LogLevel::Info => log::LevelFilter::Info,
            LogLevel::Debug => log::LevelFilter::Debug,
            LogLevel::Trace => log::LevelFilter::Trace,
        }
    }
}

/// Starts this process's log on its standard error: at `level` when one is set (the
/// netlink crate's chatter held at error), else as RUST_LOG says, else at info.
pub fn init_logging(level: Option<LogLevel>) {
    const NETLINK: &str = "netlink_packet_route";
    let mut builder = match level {
        Some(level) => {
            let mut builder = env_logger::Builder::new();
            builder
                .filter_level(level.filter())
                .filter_module(NETLINK, level.filter().min(log::LevelFilter::Error));
            builder
        }
        None => env_logger::Builder::from_env(
            env_logger::Env::default().default_filter_or(format!("info,{NETLINK}=error")),
        ),
    };
    builder.init();
}

fn ring_size(text: &str) -> Result<u32, String> {
    let bytes = text.parse::<u32>().map_err(|e| format!("{text}: {e}; give bytes, e.g. 262144"))?;
    crate::maps::check_ring_size(bytes).map(|()| bytes)
}

fn file_ring_size<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u32>, D::Error> {
    let bytes = u32::deserialize(deserializer)?;
    crate::maps::check_ring_size(bytes).map(|()| Some(bytes)).map_err(serde::de::Error::custom)
}

fn port_range<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<(u16, u16)>, D::Error> {
    let text = String::deserialize(deserializer)?;
    crate::nat::parse_port_range(&text).map(Some).map_err(serde::de::Error::custom)
}

impl Settings {
    /// The settings given here, and `file`'s for those that are not: flags (and their
    /// environment variables) override the file.
    pub fn over(self, file: Settings) -> Settings {
        Settings {
            state_dir: self.state_dir.or(file.state_dir),
            bpffs: self.bpffs.or(file.bpffs),
            netns_dir: self.netns_dir.or(file.netns_dir),
            uplink: self.uplink.or(file.uplink),
            nat_port_range: self.nat_port_range.or(file.nat_port_range),
            cgroup: self.cgroup.or(file.cgroup),
            dns: if self.dns.is_empty() { file.dns } else { self.dns },
            conntrack_max: self.conntrack_max.or(file.conntrack_max),
            xdp: self.xdp.or(file.xdp),
            docker_plugin: self.docker_plugin.or(file.docker_plugin),
            docker_stale_after: self.docker_stale_after.or(file.docker_stale_after),
            metrics_addr: self.metrics_addr.or(file.metrics_addr),
            monitor_ring_size: self.monitor_ring_size.or(file.monitor_ring_size),
            log_level: self.log_level.or(file.log_level),
            ipv6: self.ipv6.or(file.ipv6),
            fixed_cidr_v6: self.fixed_cidr_v6.or(file.fixed_cidr_v6),
            store: self.store.or(file.store),
            advertise_address: self.advertise_address.or(file.advertise_address),
            store_ttl: self.store_ttl.or(file.store_ttl),
            vxlan_port: self.vxlan_port.or(file.vxlan_port),
            store_cacert: self.store_cacert.or(file.store_cacert),
            store_cert: self.store_cert.or(file.store_cert),
            store_key: self.store_key.or(file.store_key),
            store_user: self.store_user.or(file.store_user),
            store_password_file: self.store_password_file.or(file.store_password_file),
        }
    }

    /// The daemon's configuration: these settings, the defaults for those not given.
    pub fn into_config(self, socket: PathBuf) -> Config {
        let or_default = |path: Option<PathBuf>, default: &str| path.unwrap_or_else(|| default.into());
        Config {
            state_dir: or_default(self.state_dir, DEFAULT_STATE_DIR),
            bpffs: or_default(self.bpffs, DEFAULT_BPFFS),
            socket,
            netns_dir: or_default(self.netns_dir, DEFAULT_NETNS_DIR),
            uplink: self.uplink,
            nat_port_range: self.nat_port_range,
            cgroup: self.cgroup,
            dns: self.dns,
            conntrack_max: self.conntrack_max,
            xdp: self.xdp.unwrap_or(UplinkXdp::Auto),
            docker_plugin: self.docker_plugin,
            docker_stale_after: Duration::from_secs(
                self.docker_stale_after.unwrap_or(DEFAULT_DOCKER_STALE_AFTER_SECS),
            ),
            metrics_addr: self.metrics_addr,
            monitor_ring_size: self
                .monitor_ring_size
                .unwrap_or(dataplane_common::MonitorEvent::RING_DEFAULT_SIZE),
            store: self.store,
            store_access: StoreAccess {
                cacert: self.store_cacert,
                cert: self.store_cert,
                key: self.store_key,
                user: self.store_user,
                password_file: self.store_password_file,
            },
            advertise_address: self.advertise_address,
            store_ttl: Duration::from_secs(self.store_ttl.unwrap_or(DEFAULT_STORE_TTL_SECS)),
            vxlan_port: self.vxlan_port.unwrap_or(crate::tunnel::DEFAULT_PORT),
            default_ipv6: match (self.ipv6, self.fixed_cidr_v6) {
                (Some(false), _) | (None, None) => None,
                (_, subnet) => Some(subnet),
            },
        }
    }

    /// The settings of the config file at `path`, or of the default one when `None`; a
    /// missing default file sets nothing, a missing file that was named is an error.
    pub fn from_file(path: Option<&Path>) -> Result<Settings> {
        let (path, named) = match path {
            Some(path) => (path, true),
            None => (Path::new(DEFAULT_CONFIG_FILE), false),
        };
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !named => return Ok(Settings::default()),
            Err(e) => return Err(e).with_context(|| format!("--config {}: cannot read it", path.display())),
        };
        Self::parse(&text).with_context(|| {
            format!(
                "config file {}: the keys are the daemon's flags without `--` (`dataplane daemon --help`)",
                path.display()
            )
        })
    }

    fn parse(text: &str) -> Result<Settings> {
        Ok(toml::from_str(text)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> Settings {
        Settings::parse(text).unwrap()
    }

    #[test]
    fn a_flag_overrides_the_file_and_the_file_fills_what_flags_leave_unset() {
        let from_file = file(
            "state-dir = \"/srv/dataplane\"\nuplink = \"eth1\"\nxdp = \"off\"\ndns = [\"192.0.2.53\"]\n\
             nat-port-range = \"40000-41000\"\nlog-level = \"debug\"\nmetrics-addr = \"127.0.0.1:9090\"\n\
             store = \"etcd://10.0.0.10:2379\"\nvxlan-port = 8472\n",
        );
        let flags = Settings {
            uplink: Some("eth2".into()),
            dns: vec!["198.51.100.53".parse().unwrap()],
            ..Settings::default()
        };
        let merged = flags.over(from_file);
        assert_eq!(merged.uplink.as_deref(), Some("eth2"), "the flag wins");
        assert_eq!(
            merged.dns,
            ["198.51.100.53".parse::<IpAddr>().unwrap()],
            "a list given as a flag wins whole"
        );
        assert_eq!(merged.state_dir, Some(PathBuf::from("/srv/dataplane")), "the file fills the rest");
        assert_eq!((merged.xdp, merged.nat_port_range), (Some(UplinkXdp::Off), Some((40000, 41000))));
        assert_eq!(merged.log_level, Some(LogLevel::Debug));
        assert_eq!(merged.metrics_addr, Some("127.0.0.1:9090".parse().unwrap()));
        assert_eq!(merged.store, Some("etcd://10.0.0.10:2379".parse().unwrap()), "the store is a key too");
        let config = merged.into_config("/run/x.sock".into());
        assert_eq!(config.vxlan_port, 8472, "the VXLAN port is a key too");
        let access = file(
            "store-cacert = \"/etc/dataplane/ca.pem\"\nstore-user = \"dataplane\"\n\
             store-password-file = \"/etc/dataplane/store-password\"\n",
        )
        .into_config("/x".into())
        .store_access;
        assert_eq!(access.cacert, Some(PathBuf::from("/etc/dataplane/ca.pem")), "the store's CA is a key");
        assert_eq!(access.user.as_deref(), Some("dataplane"));
        assert_eq!(access.password_file, Some(PathBuf::from("/etc/dataplane/store-password")));
        let err = format!("{:#}", Settings::parse("store-password = \"secret\"\n").unwrap_err());
        assert!(err.contains("store-password"), "a password is never a setting of its own: {err}");
        assert_eq!(config.bpffs, Path::new(DEFAULT_BPFFS), "the default where neither sets it");
        assert_eq!(config.docker_stale_after, Duration::from_secs(60));
    }

    #[test]
    fn the_monitor_ring_size_is_a_power_of_two_of_pages_from_a_flag_or_the_file() {
        assert_eq!(ring_size("8192"), Ok(8192));
        let err = ring_size("5000").unwrap_err();
        assert!(err.contains("power of two") && err.contains("e.g. 8192"), "{err}");
        assert!(ring_size("lots").unwrap_err().contains("give bytes"));
        assert_eq!(file("monitor-ring-size = 65536").monitor_ring_size, Some(65536));
        let err = format!("{:#}", Settings::parse("monitor-ring-size = 100").unwrap_err());
        assert!(err.contains("power of two"), "{err}");
        let config = Settings::default().over(file("")).into_config("/run/x.sock".into());
        assert_eq!(config.monitor_ring_size, dataplane_common::MonitorEvent::RING_DEFAULT_SIZE);
    }

    #[test]
    fn nothing_given_anywhere_is_the_defaults() {
        let config = Settings::default().over(file("")).into_config("/run/x.sock".into());
        assert_eq!(config.state_dir, Path::new("/var/lib/dataplane"));
        assert_eq!(config.netns_dir, Path::new("/run/netns"));
        assert_eq!((config.xdp, config.uplink, config.docker_plugin), (UplinkXdp::Auto, None, None));
        assert_eq!(config.default_ipv6, None, "the default network is IPv4-only unless asked");
        assert_eq!(config.vxlan_port, 4789, "VXLAN's IANA port");
    }

    #[test]
    fn ipv6_on_the_default_network_comes_from_ipv6_or_a_fixed_cidr() {
        let default_ipv6 =
            |text: &str| Settings::default().over(file(text)).into_config("/x".into()).default_ipv6;
        assert_eq!(default_ipv6("ipv6 = true\n"), Some(None), "a /64 of the ULA pool");
        let fixed = "fixed-cidr-v6 = \"fd00:17::/64\"\n";
        assert_eq!(
            default_ipv6(fixed),
            Some(Some("fd00:17::/64".parse().unwrap())),
            "the prefix implies --ipv6"
        );
        assert_eq!(default_ipv6(&format!("ipv6 = false\n{fixed}")), None, "--ipv6=false wins");
    }

    #[test]
    fn a_bad_file_is_refused_naming_the_file_the_key_and_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("daemon.toml");
        std::fs::write(&path, "state_dir = \"/srv\"\n").unwrap();
        let err = format!("{:#}", Settings::from_file(Some(&path)).unwrap_err());
        assert!(err.contains(&path.display().to_string()) && err.contains("state_dir"), "{err}");
        assert!(err.contains("flags without `--`"), "no fix given: {err}");
        std::fs::write(&path, "nat-port-range = \"9-1\"\n").unwrap();
        let err = format!("{:#}", Settings::from_file(Some(&path)).unwrap_err());
        assert!(err.contains("FIRST <= LAST"), "{err}");
        let missing = dir.path().join("nope.toml");
        let err = format!("{:#}", Settings::from_file(Some(&missing)).unwrap_err());
        assert!(err.contains("--config") && err.contains("nope.toml"), "a named file must exist: {err}");
    }
}
