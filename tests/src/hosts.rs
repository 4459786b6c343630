//! Several hosts sharing a store: each a host namespace with its own daemon (`Host`),
//! joined by veths to a bridge in an underlay namespace of their own, where one etcd runs
//! with its data in a temp dir. The underlay is IPv4, or IPv6 alone (`Cluster::start_ipv6`). Everything is removed on drop, also when a test fails:
//! the hosts first (their daemons stopped), then etcd (killed by the PID we started) and
//! the underlay namespace.

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::PathBuf,
    process::{Child, Command, Output, Stdio},
    time::Duration,
};

use crate::{Host, eventually, run_ok, unique};

/// The underlay's subnet; the bridge (and etcd) holds `.1`, host `i` `.(11 + i)`.
const UNDERLAY_PREFIX: &str = "198.51.100";
pub const ETCD_ADDR: &str = "198.51.100.1";
/// The IPv6 underlay's subnet (a /64); the bridge (and etcd) holds `::1`, host `i`
/// `::(11 + i)`, in hex as written.
const UNDERLAY_PREFIX6: &str = "2001:db8:100:";
pub const ETCD_ADDR6: &str = "2001:db8:100::1";

/// The password of etcd's `root` user, when authentication is on (`Cluster::start_secure`).
const ROOT_PASSWORD: &str = "root-secret";
/// The user the daemons sign in as, with readwrite on `/dataplane/` only, and its password.
pub const STORE_USER: &str = "dataplane";
pub const STORE_PASSWORD: &str = "dataplane-secret";

/// The underlay namespace and its etcd.
pub struct Underlay {
    pub name: String,
    /// etcd's address as a URL writes it: `ETCD_ADDR`, or `[ETCD_ADDR6]`.
    etcd_host: String,
    dir: PathBuf,
    etcd: Option<Child>,
    /// Whether etcd speaks TLS (certificates in `tls_dir`) and asks for client
    /// certificates.
    tls: bool,
    /// Whether etcd has authentication on (etcdctl signs in as root).
    auth: bool,
}

impl Underlay {
    fn start() -> Self {
        Self::start_on(false)
    }

    /// The underlay namespace with its bridge, whose address (etcd's) is IPv6 with `ipv6`.
    fn start_on(ipv6: bool) -> Self {
        let name = unique("dpu-");
        let dir = std::env::temp_dir().join(format!("dataplane-{name}"));
        fs::create_dir_all(&dir).unwrap();
        run_ok(Command::new("ip").args(["netns", "add", &name])).expect("creating the underlay namespace");
        let etcd_host = if ipv6 { format!("[{ETCD_ADDR6}]") } else { ETCD_ADDR.to_string() };
        let underlay = Self { name, etcd_host, dir, etcd: None, tls: false, auth: false };
        let address = if ipv6 { format!("{ETCD_ADDR6}/64 nodad") } else { format!("{ETCD_ADDR}/24") };
        underlay.sh_ok(&format!(
            "ip link set lo up && ip link add br0 type bridge && ip addr add {address} dev br0 \
             && ip link set br0 up"
        ));
        underlay
    }

    pub fn sh_ok(&self, script: &str) -> String {
        let out = self.command("sh").args(["-c", script]).stdin(Stdio::null()).output().unwrap();
        assert!(out.status.success(), "{script}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    fn command(&self, program: &str) -> Command {
        let mut command = Command::new("nsenter");
        command.arg(format!("--net=/run/netns/{}", self.name)).arg("--").arg(program);
        command
    }

    /// Where the TLS files are: `ca.pem` (the CA of etcd's and the clients'
    /// certificates), `server.{pem,key}`, `client.{pem,key}`, `other-ca.pem` (a CA that
    /// signed none of them) and `password` (the store user's).
    pub fn tls_dir(&self) -> PathBuf {
        self.dir.join("tls")
    }

    /// Makes a CA, etcd's certificate (for its underlay address) and a client
    /// certificate with openssl, and another CA to be wrong with.
    fn make_certificates(&self) {
        let dir = self.tls_dir();
        fs::create_dir_all(&dir).unwrap();
        fs::write(
            dir.join("server.ext"),
            format!("subjectAltName=IP:{ETCD_ADDR}\nextendedKeyUsage=serverAuth\n"),
        )
        .unwrap();
        fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
        fs::write(dir.join("password"), format!("{STORE_PASSWORD}\n")).unwrap();
        // The daemon refuses a password file its group or others may read.
        fs::set_permissions(dir.join("password"), fs::Permissions::from_mode(0o600)).unwrap();
        let key = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
        let script = format!(
            "set -e; cd {dir}
             for ca in ca other-ca; do openssl req -x509 {key} -keyout $ca.key -out $ca.pem -days 2 -subj /CN=$ca; done
             for who in server client; do
               openssl req {key} -keyout $who.key -out $who.csr -subj /CN=$who
               openssl x509 -req -in $who.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
                 -extfile $who.ext -out $who.pem
             done",
            dir = dir.display()
        );
        let out = Command::new("sh").args(["-c", &script]).stdin(Stdio::null()).output().unwrap();
        assert!(
            out.status.success(),
            "making certificates with openssl (Debian's openssl; `cargo xtask setup` installs it): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // The daemon refuses a client key its group or others may read, as the password.
        fs::set_permissions(dir.join("client.key"), fs::Permissions::from_mode(0o600)).unwrap();
    }

    fn scheme(&self) -> &'static str {
        if self.tls { "https" } else { "http" }
    }

    /// Starts etcd on the underlay (its data kept across a stop and a start), and waits
    /// until it answers.
    pub fn start_etcd(&mut self) {
        assert!(self.etcd.is_none(), "etcd runs already");
        let log = fs::File::options().create(true).append(true).open(self.dir.join("etcd.log")).unwrap();
        let client = format!("{}://{}:2379", self.scheme(), self.etcd_host);
        let peer = format!("http://{}:2380", self.etcd_host);
        let mut command = self.command("etcd");
        if self.tls {
            let tls = self.tls_dir();
            command
                .arg("--cert-file")
                .arg(tls.join("server.pem"))
                .arg("--key-file")
                .arg(tls.join("server.key"))
                .arg("--trusted-ca-file")
                .arg(tls.join("ca.pem"))
                .arg("--client-cert-auth");
        }
        let child = command
            .args(["--name", "default", "--data-dir"])
            .arg(self.dir.join("etcd"))
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("default={peer}")])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting etcd (Debian's etcd-server; `cargo xtask setup` installs it)");
        self.etcd = Some(child);
        let healthy =
            eventually(Duration::from_secs(20), || self.etcdctl(&["endpoint", "health"]).status.success());
        assert!(
            healthy,
            "etcd did not start: {}",
            fs::read_to_string(self.dir.join("etcd.log")).unwrap_or_default()
        );
    }

    /// Stops etcd (SIGKILL to the PID we started) and reaps it.
    pub fn stop_etcd(&mut self) {
        if let Some(mut child) = self.etcd.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn etcdctl(&self, args: &[&str]) -> Output {
        let mut command = self.command("etcdctl");
        if self.tls {
            let tls = self.tls_dir();
            command
                .arg("--cacert")
                .arg(tls.join("ca.pem"))
                .arg("--cert")
                .arg(tls.join("client.pem"))
                .arg("--key")
                .arg(tls.join("client.key"));
        }
        if self.auth {
            command.args(["--user", &format!("root:{ROOT_PASSWORD}")]);
        }
        command
            .env("ETCDCTL_API", "3")
            .args([
                "--endpoints",
                &format!("{}://{}:2379", self.scheme(), self.etcd_host),
                "--dial-timeout",
                "2s",
            ])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    pub fn etcdctl_ok(&self, args: &[&str]) -> String {
        let out = self.etcdctl(args);
        assert!(out.status.success(), "etcdctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    /// Turns etcd's authentication on, with a root user and the daemons' user, whose role
    /// reads and writes `/dataplane/` and nothing else.
    fn enable_auth(&mut self) {
        for step in [
            &["user", "add", "root", "--new-user-password", ROOT_PASSWORD][..],
            &["user", "add", STORE_USER, "--new-user-password", STORE_PASSWORD],
            &["role", "add", STORE_USER],
            &["role", "grant-permission", STORE_USER, "readwrite", "--prefix=true", "/dataplane/"],
            &["user", "grant-role", STORE_USER, STORE_USER],
            &["auth", "enable"],
        ] {
            self.etcdctl_ok(step);
        }
        self.auth = true;
    }

    /// The keys under `prefix`.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        let out = self.etcdctl(&["get", "--prefix", "--keys-only", prefix]);
        assert!(out.status.success(), "etcdctl get {prefix}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().lines().filter(|l| !l.is_empty()).map(str::to_string).collect()
    }
}

impl Drop for Underlay {
    fn drop(&mut self) {
        self.stop_etcd();
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
        if std::env::var_os("DATAPLANE_KEEP_TEST_DIR").is_none() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// Where a cluster's hosts have their default route (their uplink, which masquerade
/// leaves by).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Uplink {
    /// None: the daemons are told their address (`--advertise-address`).
    None,
    /// A link of its own to an external namespace; the daemons are told their address.
    External,
    /// The underlay link, as on most hosts: the daemons advertise its address unasked.
    Underlay,
    /// An IPv6 underlay, the hosts' only default route (IPv6's): the daemons advertise
    /// their IPv6 address on it unasked, and etcd listens there too.
    UnderlayIpv6,
}

/// Hosts sharing one etcd. The hosts are dropped before the underlay (field order).
pub struct Cluster {
    pub hosts: Vec<Host>,
    pub underlay: Underlay,
}

impl Cluster {
    /// `count` hosts with their daemons on the store, which keeps a dead host's leases
    /// `ttl_secs`.
    pub fn start(count: usize, ttl_secs: u32) -> Self {
        Self::start_with(count, ttl_secs, &[], Uplink::None)
    }

    /// As `start`, with more environment for every daemon (the variables of its flags,
    /// e.g. `DATAPLANE_VXLAN_PORT`), and each host's default route as `uplink` says.
    pub fn start_with(count: usize, ttl_secs: u32, daemon_env: &[(&str, &str)], uplink: Uplink) -> Self {
        Self::start_on(Underlay::start(), count, ttl_secs, daemon_env, uplink, &[])
    }

    /// `count` hosts on an IPv6 underlay (`Uplink::UnderlayIpv6`), which keeps a dead
    /// host's leases `ttl_secs`.
    pub fn start_ipv6(count: usize, ttl_secs: u32) -> Self {
        Self::start_on(Underlay::start_on(true), count, ttl_secs, &[], Uplink::UnderlayIpv6, &[])
    }

    /// As `start`, with an etcd that speaks only TLS, asks for client certificates and
    /// has authentication on: the daemons reach it at etcds://, with the CA, a client
    /// certificate and the user `STORE_USER`, its password read from a file on the first
    /// host and from DATAPLANE_STORE_PASSWORD on the others.
    pub fn start_secure(count: usize, ttl_secs: u32) -> Self {
        let mut underlay = Underlay::start();
        underlay.tls = true;
        underlay.make_certificates();
        let tls = underlay.tls_dir();
        let path = |file: &str| tls.join(file).display().to_string();
        let (ca, cert, key, password) =
            (path("ca.pem"), path("client.pem"), path("client.key"), path("password"));
        let store = format!("etcds://{ETCD_ADDR}:2379");
        let env = [
            ("DATAPLANE_STORE", store.as_str()),
            ("DATAPLANE_STORE_CACERT", &ca),
            ("DATAPLANE_STORE_CERT", &cert),
            ("DATAPLANE_STORE_KEY", &key),
            ("DATAPLANE_STORE_USER", STORE_USER),
        ];
        let first = [("DATAPLANE_STORE_PASSWORD_FILE", password.as_str())];
        let others = [("DATAPLANE_STORE_PASSWORD", STORE_PASSWORD)];
        let per_host: Vec<&[(&str, &str)]> =
            (0..count).map(|i| if i == 0 { &first[..] } else { &others[..] }).collect();
        Self::start_on(underlay, count, ttl_secs, &env, Uplink::None, &per_host)
    }

    /// The hosts on `underlay`, whose etcd is started here (with authentication turned on
    /// when it speaks TLS), host `i` with `per_host[i]` over `daemon_env`.
    fn start_on(
        mut underlay: Underlay,
        count: usize,
        ttl_secs: u32,
        daemon_env: &[(&str, &str)],
        uplink: Uplink,
        per_host: &[&[(&str, &str)]],
    ) -> Self {
        underlay.start_etcd();
        if underlay.tls {
            underlay.enable_auth();
        }
        let mut hosts = vec![];
        for i in 0..count {
            let host = match uplink {
                Uplink::External => Host::empty_with_external(),
                Uplink::None | Uplink::Underlay | Uplink::UnderlayIpv6 => {
                    Host::empty().expect("creating a host namespace")
                }
            };
            let ipv6 = uplink == Uplink::UnderlayIpv6;
            let (address, prefix) = if ipv6 {
                (format!("{UNDERLAY_PREFIX6}:{}", 11 + i), "64 nodad")
            } else {
                (format!("{UNDERLAY_PREFIX}.{}", 11 + i), "24")
            };
            let port = format!("ul{i}");
            host.sh_ok(&format!(
                "ip link add ul0 type veth peer name {port} netns {} && ip addr add {address}/{prefix} dev ul0 \
                 && ip link set ul0 up",
                underlay.name
            ));
            underlay.sh_ok(&format!("ip link set {port} master br0 && ip link set {port} up"));
            match uplink {
                Uplink::Underlay => host.sh_ok(&format!("ip route add default via {ETCD_ADDR} dev ul0")),
                // A veth leaves UDP checksums to its peer (offload) where a NIC computes
                // them on the wire: ul0 computes them itself, so that a capture sees
                // what a wire carries and the other host's kernel checks them.
                Uplink::UnderlayIpv6 => host.sh_ok(&format!(
                    "ip -6 route add default via {ETCD_ADDR6} dev ul0 && ethtool -K ul0 tx off >/dev/null"
                )),
                Uplink::None | Uplink::External => String::new(),
            };
            hosts.push(host);
            // Pushed before its daemon starts, so that a failed start still removes it.
            let host = hosts.last_mut().unwrap();
            let store = format!("etcd://{}:2379", underlay.etcd_host);
            let ttl = ttl_secs.to_string();
            let mut env = vec![("DATAPLANE_STORE", store.as_str()), ("DATAPLANE_STORE_TTL", ttl.as_str())];
            if !matches!(uplink, Uplink::Underlay | Uplink::UnderlayIpv6) {
                env.push(("DATAPLANE_ADVERTISE_ADDRESS", address.as_str()));
            }
            env.extend_from_slice(daemon_env);
            env.extend_from_slice(per_host.get(i).copied().unwrap_or_default());
            host.set_daemon_env(&env);
        }
        let mut cluster = Self { hosts, underlay };
        for host in &mut cluster.hosts {
            host.start_daemon();
        }
        cluster
    }
}
