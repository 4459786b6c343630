//! The etcd backend of the shared store: overlay networks, address leases by
//! compare-and-swap, endpoint records, the host's etcd lease and the watch. Every call is
//! bounded in time, and an error names the store, so that a host whose etcd is away
//! fails overlay work at once and clearly, and goes on with everything local.

use std::{
    collections::BTreeSet,
    fmt::Display,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    str::FromStr,
    sync::atomic::{AtomicBool, AtomicI64, Ordering},
    time::Duration,
};

use anyhow::{Context, Result, anyhow, bail};
use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, DeleteOptions, EventType, GetOptions, Identity,
    PutOptions, TlsOptions, Txn, TxnOp, TxnOpResponse, WatchOptions, WatchStream,
};

use super::{
    EndpointRecord, Host, Mirror, PASSWORD_ENV, PREFIX, SharedNetwork, StoreAccess, StoreAddress, VNIS,
    endpoint_key, endpoints_of, free_vni, lease_key, leases_of, network_key, vni_key,
};
use crate::state::Network;

/// How long one call to etcd may take before the store counts as unreachable.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);
/// How often the channel pings etcd to find out that it went silent.
const KEEP_ALIVE_EVERY: Duration = Duration::from_secs(10);
/// Tries at leasing a free address before giving up: each failed one lost a race with
/// another host for that address, and the next try skips it.
const LEASE_TRIES: usize = 64;

pub struct EtcdStore {
    address: StoreAddress,
    client: Client,
    pub host: Host,
    ttl: Duration,
    /// The host's etcd lease, which its address leases and endpoint records are bound
    /// to; 0 until one is granted.
    lease: AtomicI64,
    /// The user the daemon signs in as (`--store-user`) and its password.
    user: Option<(String, String)>,
    /// Whether the client holds a token for `user` (it signs in at its first call that
    /// reaches etcd, and again by itself when the token expires).
    signed_in: AtomicBool,
}

/// Why a call to the store failed, which decides whether trying again can help.
#[derive(Debug, PartialEq, Eq)]
pub enum Failure {
    /// etcd did not answer (not running, unreachable): a later call may succeed.
    Unreachable,
    /// etcd answered and refused this daemon (a wrong password or CA, no permission):
    /// only a change of the daemon's settings or of etcd's helps.
    Refused,
}

/// A failed call's error and what kind of failure it was.
#[derive(Debug)]
pub struct StoreError {
    pub failure: Failure,
    pub error: anyhow::Error,
}

/// The whole text of an etcd client error and its sources (a TLS failure is a few
/// sources deep).
fn chain(e: &etcd_client::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    text
}

/// The TLS and user settings for the client, read from `access`'s files (and the
/// password's environment variable); every error names the setting and the fix.
fn connect_options(
    address: &StoreAddress,
    access: &StoreAccess,
) -> Result<(ConnectOptions, Option<(String, String)>)> {
    let read = |flag: &str, path: &std::path::Path| {
        std::fs::read(path).with_context(|| format!("{flag} {}: cannot read it", path.display()))
    };
    let is_pem = |flag: &str, path: &std::path::Path, what: &str, bytes: Vec<u8>| -> Result<Vec<u8>> {
        if !bytes.windows(11).any(|w| w == b"-----BEGIN ") {
            bail!("{flag} {}: not PEM; give the {what} in PEM (-----BEGIN ...)", path.display());
        }
        Ok(bytes)
    };
    let pem = |flag: &str, path: &std::path::Path, what: &str| -> Result<Vec<u8>> {
        is_pem(flag, path, what, read(flag, path)?)
    };
    let mut options = ConnectOptions::new()
        .with_connect_timeout(CALL_TIMEOUT)
        .with_keep_alive(KEEP_ALIVE_EVERY, CALL_TIMEOUT)
        .with_auto_token_refresh(true);
    let files = [&access.cacert, &access.cert, &access.key];
    if address.tls() {
        let Some(cacert) = &access.cacert else {
            bail!(
                "--store {address} is TLS: give --store-cacert FILE, the CA that signed etcd's certificates \
                 (the daemon trusts no other CA for its store)"
            );
        };
        let mut tls = TlsOptions::new().ca_certificate(Certificate::from_pem(pem(
            "--store-cacert",
            cacert,
            "CA's certificate",
        )?));
        match (&access.cert, &access.key) {
            (Some(cert), Some(key)) => {
                tls = tls.identity(Identity::from_pem(
                    pem("--store-cert", cert, "client certificate")?,
                    is_pem(
                        "--store-key",
                        key,
                        "client certificate's key",
                        read_private("--store-key", key)?,
                    )?,
                ));
            }
            (None, None) => {}
            _ => bail!(
                "--store-cert and --store-key go together: give both (the client certificate and its key) or neither"
            ),
        }
        options = options.with_tls(tls);
    } else if files.iter().any(|f| f.is_some()) {
        bail!(
            "--store {address} is plain: --store-cacert, --store-cert and --store-key are for TLS; \
             write the store as etcds://ADDR:PORT"
        );
    }
    let password = match &access.password_file {
        Some(path) => Some(read_password_file(path)?),
        None => std::env::var(PASSWORD_ENV).ok(),
    };
    let user = match (&access.user, password) {
        (Some(user), Some(password)) => Some((user.clone(), password)),
        (None, None) => None,
        (Some(user), None) => bail!(
            "--store-user {user}: give its password in a file (--store-password-file FILE) or in {PASSWORD_ENV}"
        ),
        (None, Some(_)) => {
            bail!("a store password is given (--store-password-file or {PASSWORD_ENV}) but no --store-user")
        }
    };
    Ok((options, user))
}

/// The store user's password from `--store-password-file`, without its trailing newline
/// (a file of its owner's alone: `read_private`).
fn read_password_file(path: &std::path::Path) -> Result<String> {
    let flag = "--store-password-file";
    let bytes = read_private(flag, path)?;
    let text = String::from_utf8(bytes).with_context(|| format!("{flag} {}: not text", path.display()))?;
    Ok(text.trim_end_matches(['\n', '\r']).to_string())
}

/// A secret's file given by `flag` (the store password, the client certificate's key).
/// A file that its group or others may read is refused, as ssh refuses such a private
/// key: the secret would be everyone's on the host. Its mode is read from the file
/// opened, not from its path, so that the file checked is the file read.
fn read_private(flag: &str, path: &std::path::Path) -> Result<Vec<u8>> {
    use std::{io::Read, os::unix::fs::PermissionsExt};
    let shown = path.display();
    let mut file = std::fs::File::open(path).with_context(|| format!("{flag} {shown}: cannot read it"))?;
    let mode =
        file.metadata().with_context(|| format!("{flag} {shown}: cannot read it"))?.permissions().mode();
    if mode & 0o077 != 0 {
        bail!(
            "{flag} {shown}: its group or others may read it (mode {:04o}); \
             the secret must be its owner's alone: chmod 600 {shown}",
            mode & 0o7777
        );
    }
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).with_context(|| format!("{flag} {shown}: cannot read it"))?;
    Ok(bytes)
}

/// What a keep-alive found.
#[derive(Debug, PartialEq, Eq)]
pub enum Liveness {
    /// The host's lease lives on.
    Kept,
    /// The lease had expired (or there was none): a new one was granted, and the host's
    /// leases and records must be written again.
    Granted,
}

/// The transaction that records `net` with the lowest VNI `taken` does not hold, if
/// `guard` holds for its key and the VNI's key is absent; else it reads the network's key.
fn with_free_vni(net: &SharedNetwork, taken: &BTreeSet<u32>, guard: Compare) -> Result<(u32, Txn)> {
    let vni = free_vni(taken).ok_or_else(|| anyhow!("network {}: every VNI is taken", net.name))?;
    let key = network_key(&net.name);
    let value = serde_json::to_vec(&SharedNetwork { vni: Some(vni), ..net.clone() })?;
    let txn = Txn::new()
        .when([guard, Compare::create_revision(vni_key(vni), CompareOp::Equal, 0)])
        .and_then([TxnOp::put(key.clone(), value, None), TxnOp::put(vni_key(vni), net.id.clone(), None)])
        .or_else([TxnOp::get(key, None)]);
    Ok((vni, txn))
}

/// Whether a transaction's `or_else` get found the key.
fn holds_a_value(responses: &[TxnOpResponse]) -> bool {
    responses.iter().any(|r| matches!(r, TxnOpResponse::Get(found) if !found.kvs().is_empty()))
}

impl EtcdStore {
    /// A client of the store; connects lazily, so that a daemon starts while etcd is away.
    /// The TLS files and the password are read here: a setting that is wrong fails now.
    pub async fn connect(
        address: StoreAddress,
        access: &StoreAccess,
        host: Host,
        ttl: Duration,
    ) -> Result<Self> {
        // No request timeout here: the channel's would end the watch, a stream, after it
        // too. `call` bounds each request instead; the keep-alive finds a member that went
        // silent, no more often than etcd allows (a client that pings more often than its
        // --grpc-keepalive-min-time, 5 s, is hung up on). The user signs in at the first
        // call (`sign_in`), not here, where etcd would have to answer.
        let (options, user) = connect_options(&address, access)?;
        let client = Client::connect(address.urls(), Some(options))
            .await
            .map_err(|e| anyhow!("--store {address}: {}", chain(&e)))?;
        Ok(Self {
            address,
            client,
            host,
            ttl,
            lease: AtomicI64::new(0),
            user,
            signed_in: AtomicBool::new(false),
        })
    }

    pub fn address(&self) -> &StoreAddress {
        &self.address
    }

    /// The error of a call that failed, naming the store, what kind of failure it was and
    /// what to check.
    fn failed(&self, e: &etcd_client::Error) -> StoreError {
        let text = chain(e);
        let lower = text.to_lowercase();
        let refused = |error| StoreError { failure: Failure::Refused, error };
        let user = self.user.as_ref().map_or("", |(user, _)| user.as_str());
        if lower.contains("authentication failed") {
            refused(anyhow!(
                "the store {} refused user {user:?} ({text}): check --store-user and its password \
                 (--store-password-file or {PASSWORD_ENV})",
                self.address
            ))
        } else if lower.contains("user name is empty") || lower.contains("user name not found") {
            refused(anyhow!(
                "the store {} asks who this is ({text}): it has authentication on; give --store-user and its \
                 password (--store-password-file or {PASSWORD_ENV})",
                self.address
            ))
        } else if lower.contains("permission denied") {
            refused(anyhow!(
                "the store {} refused user {user:?} access ({text}): grant it readwrite on the prefix {PREFIX} \
                 (etcdctl role grant-permission --prefix ROLE readwrite {PREFIX})",
                self.address
            ))
        } else if lower.contains("certificate") || lower.contains("tls") || lower.contains("handshake") {
            refused(anyhow!(
                "TLS with the store {} failed ({text}): check that --store-cacert is the CA that signed etcd's \
                 certificate, that the certificate names the member's address, and that --store-cert and \
                 --store-key are a certificate etcd trusts",
                self.address
            ))
        } else {
            self.unreachable(text)
        }
    }

    /// The error of a call that got no answer, naming the store and what to check.
    fn unreachable(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError {
            failure: Failure::Unreachable,
            error: anyhow!(
                "the store {} did not answer ({e}); overlay networks need it: check that etcd runs there and that --store names it",
                self.address
            ),
        }
    }

    /// Signs in as `--store-user` unless the client holds a token already.
    async fn sign_in(&self) -> std::result::Result<(), StoreError> {
        let Some(user) = &self.user else { return Ok(()) };
        if self.signed_in.load(Ordering::SeqCst) {
            return Ok(());
        }
        let mut client = self.client.clone();
        match tokio::time::timeout(CALL_TIMEOUT, client.update_user(Some(user.clone()))).await {
            Ok(Ok(())) => {
                self.signed_in.store(true, Ordering::SeqCst);
                log::info!("store {}: signed in as {:?}", self.address, user.0);
                Ok(())
            }
            Ok(Err(e)) => Err(self.failed(&e)),
            Err(_) => Err(self.unreachable(format!("no answer within {} s", CALL_TIMEOUT.as_secs()))),
        }
    }

    /// A call to etcd, bounded by `CALL_TIMEOUT` whatever the channel does, with what
    /// kind of failure it met.
    async fn try_call<T>(
        &self,
        f: impl AsyncFnOnce(Client) -> std::result::Result<T, etcd_client::Error>,
    ) -> std::result::Result<T, StoreError> {
        self.sign_in().await?;
        match tokio::time::timeout(CALL_TIMEOUT, f(self.client.clone())).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(self.failed(&e)),
            Err(_) => Err(self.unreachable(format!("no answer within {} s", CALL_TIMEOUT.as_secs()))),
        }
    }

    /// A call to etcd, as `try_call`, its error the message alone.
    async fn call<T>(
        &self,
        f: impl AsyncFnOnce(Client) -> std::result::Result<T, etcd_client::Error>,
    ) -> Result<T> {
        self.try_call(f).await.map_err(|e| e.error)
    }

    /// Reads one key of the daemon's prefix: whether the store answers and lets this
    /// daemon in (at start, so that a wrong CA or password stops the daemon at once).
    pub async fn check(&self) -> std::result::Result<(), StoreError> {
        self.try_call(async |mut c| {
            c.get(PREFIX, Some(GetOptions::new().with_prefix().with_keys_only().with_limit(1))).await
        })
        .await
        .map(drop)
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Whether the host holds a lease yet.
    pub fn has_lease(&self) -> bool {
        self.lease.load(Ordering::SeqCst) != 0
    }

    fn current_lease(&self) -> Result<i64> {
        match self.lease.load(Ordering::SeqCst) {
            0 => Err(self.unreachable("no lease granted to this host yet").error),
            lease => Ok(lease),
        }
    }

    /// Renews the host's lease, or grants one when it has none or it expired.
    pub async fn keep_alive(&self) -> Result<Liveness> {
        let lease = self.lease.load(Ordering::SeqCst);
        if lease != 0 {
            let ttl = self
                .call(async |mut c| {
                    let (mut keeper, mut answers) = c.lease_keep_alive(lease).await?;
                    keeper.keep_alive().await?;
                    Ok(answers.message().await?.map_or(0, |a| a.ttl()))
                })
                .await?;
            if ttl > 0 {
                return Ok(Liveness::Kept);
            }
            log::warn!("store: the lease of this host expired; granting a new one");
        }
        let seconds = self.ttl.as_secs().max(1) as i64;
        let granted = self.call(async |mut c| c.lease_grant(seconds, None).await).await?;
        self.lease.store(granted.id(), Ordering::SeqCst);
        log::info!("store: lease {:x} granted, TTL {seconds} s", granted.id());
        Ok(Liveness::Granted)
    }

    /// Records a new overlay network with the lowest free VNI, unless one of its name
    /// exists (`None` then). The network's key and its VNI's are made together, each only
    /// if absent (compare-and-swap): two networks never share a VNI.
    pub async fn create_network(&self, net: &SharedNetwork) -> Result<Option<u32>> {
        let key = network_key(&net.name);
        let mut taken = self.vnis_taken().await?;
        for _ in 0..LEASE_TRIES {
            let (vni, txn) =
                with_free_vni(net, &taken, Compare::create_revision(key.clone(), CompareOp::Equal, 0))?;
            let answer = self.call(async |mut c| c.txn(txn).await).await?;
            if answer.succeeded() {
                return Ok(Some(vni));
            }
            if holds_a_value(&answer.op_responses()) {
                return Ok(None);
            }
            // Another network took the VNI meanwhile.
            taken.insert(vni);
        }
        bail!(
            "network {}: no free VNI after {LEASE_TRIES} tries, every one taken by another network meanwhile; try again",
            net.name
        )
    }

    /// Gives a VNI to a network recorded without one (by the first version of the store),
    /// if nobody changed its record meanwhile (compare-and-swap on its bytes).
    pub async fn give_vni(&self, net: &SharedNetwork) -> Result<()> {
        let key = network_key(&net.name);
        let recorded = serde_json::to_vec(net)?;
        let mut taken = self.vnis_taken().await?;
        for _ in 0..LEASE_TRIES {
            let (vni, txn) =
                with_free_vni(net, &taken, Compare::value(key.clone(), CompareOp::Equal, recorded.clone()))?;
            let answer = self.call(async |mut c| c.txn(txn).await).await?;
            let changed = answer.op_responses().iter().any(|r| {
                matches!(r, TxnOpResponse::Get(found) if found.kvs().first().is_none_or(|kv| kv.value() != recorded))
            });
            if answer.succeeded() || changed {
                return Ok(());
            }
            taken.insert(vni);
        }
        bail!("network {}: no free VNI after {LEASE_TRIES} tries", net.name)
    }

    /// The VNIs the store holds.
    async fn vnis_taken(&self) -> Result<BTreeSet<u32>> {
        let held = self
            .call(async |mut c| c.get(VNIS, Some(GetOptions::new().with_prefix().with_keys_only())).await)
            .await?;
        Ok(held
            .kvs()
            .iter()
            .filter_map(|kv| std::str::from_utf8(kv.key()).ok()?.strip_prefix(VNIS)?.parse().ok())
            .collect())
    }

    /// Refuses while any host has endpoints on an overlay network, naming them.
    pub async fn ensure_unused(&self, net: &Network) -> Result<()> {
        let records = self.records_of(&net.id).await?;
        if !records.is_empty() {
            // A host by its underlay address when it gave one, else by its id.
            let users: Vec<String> = records
                .iter()
                .map(|r| {
                    format!("{} on host {}", r.name, r.host_address.map_or(r.host.clone(), |a| a.to_string()))
                })
                .collect();
            bail!(
                "network {} has active endpoints on its hosts ({}); remove those containers on their hosts first",
                net.name,
                users.join(", ")
            );
        }
        Ok(())
    }

    /// Removes an overlay network, its VNI and whatever leases are left of it, for every
    /// host.
    pub async fn remove_network(&self, net: &Network) -> Result<()> {
        let key = network_key(&net.name);
        let found = self.call(async |mut c| c.get(key.clone(), None).await).await?;
        let vni =
            found.kvs().first().and_then(|kv| serde_json::from_slice::<SharedNetwork>(kv.value()).ok()?.vni);
        let mut removals = vec![
            TxnOp::delete(key, None),
            TxnOp::delete(leases_of(&net.id), Some(DeleteOptions::new().with_prefix())),
        ];
        removals.extend(vni.map(|vni| TxnOp::delete(vni_key(vni), None)));
        let txn = Txn::new().and_then(removals);
        self.call(async |mut c| c.txn(txn).await).await?;
        Ok(())
    }

    /// The endpoint records of a network, every host's.
    async fn records_of(&self, network_id: &str) -> Result<Vec<EndpointRecord>> {
        let prefix = endpoints_of(network_id);
        let found =
            self.call(async |mut c| c.get(prefix, Some(GetOptions::new().with_prefix())).await).await?;
        Ok(found.kvs().iter().filter_map(|kv| serde_json::from_slice(kv.value()).ok()).collect())
    }

    /// Leases an IPv4 address of `net` to this host: `wanted`, or the lowest one that
    /// neither the store nor `local` holds (`lease`).
    pub async fn lease_address(
        &self,
        net: &Network,
        wanted: Option<Ipv4Addr>,
        local: &BTreeSet<Ipv4Addr>,
    ) -> Result<Ipv4Addr> {
        let plan = net.plan().with_context(|| format!("overlay network {} has no IPv4", net.name))?;
        let flag = wanted.map(|_| "--ip");
        self.lease(net, local, flag, |taken| match wanted {
            Some(ip) => plan.claim(ip, taken),
            None => plan.allocate(taken),
        })
        .await
    }

    /// Leases an IPv6 address of `net` to this host, as `lease_address`.
    pub async fn lease_address6(
        &self,
        net: &Network,
        wanted: Option<Ipv6Addr>,
        local: &BTreeSet<Ipv6Addr>,
    ) -> Result<Ipv6Addr> {
        let plan = net.ipv6.with_context(|| format!("overlay network {} has no IPv6", net.name))?;
        let flag = wanted.map(|_| "--ip6");
        self.lease(net, local, flag, |taken| match wanted {
            Some(ip) => plan.claim(ip, taken),
            None => plan.allocate(taken),
        })
        .await
    }

    /// Leases to this host the address of `net` that `pick` chooses (the one asked for
    /// with `flag`, or the lowest free one) among those neither the store nor `local` holds. The
    /// lease key is created only if absent (a transaction), bound to the host's lease: two
    /// hosts never hold the same address. The store holds both families' leases under the
    /// network; each family reads only its own.
    async fn lease<A>(
        &self,
        net: &Network,
        local: &BTreeSet<A>,
        flag: Option<&str>,
        pick: impl Fn(&BTreeSet<A>) -> std::result::Result<A, crate::ipam::IpamError>,
    ) -> Result<A>
    where
        A: Copy + Ord + Display + FromStr + Into<IpAddr>,
    {
        let lease = self.current_lease()?;
        let prefix = leases_of(&net.id);
        let held = self
            .call(async |mut c| {
                c.get(prefix.clone(), Some(GetOptions::new().with_prefix().with_keys_only())).await
            })
            .await?;
        let mut taken = local.clone();
        taken.extend(
            held.kvs().iter().filter_map(|kv| {
                std::str::from_utf8(kv.key()).ok()?.strip_prefix(&prefix)?.parse::<A>().ok()
            }),
        );
        for _ in 0..LEASE_TRIES {
            let ip = pick(&taken).map_err(|e| anyhow!("network {}: {e}", net.name))?;
            let key = lease_key(&net.id, ip);
            let txn = Txn::new()
                .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(key, self.host.id.clone(), Some(PutOptions::new().with_lease(lease)))]);
            if self.call(async |mut c| c.txn(txn).await).await?.succeeded() {
                return Ok(ip);
            }
            if let Some(flag) = flag {
                bail!("network {}: address {ip} is in use on another host; choose another {flag}", net.name);
            }
            taken.insert(ip);
        }
        bail!(
            "network {}: no free address after {LEASE_TRIES} tries, every one taken by another host meanwhile; try again",
            net.name
        )
    }

    /// Records an endpoint of this host for the others, bound to the host's lease.
    pub async fn publish(&self, record: &EndpointRecord) -> Result<()> {
        let lease = self.current_lease()?;
        let key = endpoint_key(&record.network_id, &record.endpoint_id);
        let value = serde_json::to_vec(record)?;
        self.call(async |mut c| c.put(key, value, Some(PutOptions::new().with_lease(lease))).await).await?;
        Ok(())
    }

    /// Gives back an endpoint's addresses and its record.
    pub async fn release(
        &self,
        network_id: &str,
        addresses: impl IntoIterator<Item = IpAddr>,
        endpoint_id: &str,
    ) -> Result<()> {
        let mut removals = vec![TxnOp::delete(endpoint_key(network_id, endpoint_id), None)];
        removals.extend(addresses.into_iter().map(|ip| TxnOp::delete(lease_key(network_id, ip), None)));
        let txn = Txn::new().and_then(removals);
        self.call(async |mut c| c.txn(txn).await).await?;
        Ok(())
    }

    /// Writes this host's leases and records again under its current lease (after the
    /// lease was granted anew, or the store came back), and removes its records of
    /// endpoints it no longer has. An address another host took meanwhile is reported.
    pub async fn reclaim(&self, own: &[EndpointRecord]) -> Result<()> {
        let lease = self.current_lease()?;
        let with_lease = || Some(PutOptions::new().with_lease(lease));
        for (record, ip) in own.iter().flat_map(|r| r.addresses().map(move |ip| (r, ip))) {
            let key = lease_key(&record.network_id, ip);
            let puts = [
                TxnOp::put(key.clone(), self.host.id.clone(), with_lease()),
                TxnOp::put(
                    endpoint_key(&record.network_id, &record.endpoint_id),
                    serde_json::to_vec(record)?,
                    with_lease(),
                ),
            ];
            let free = Txn::new()
                .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                .and_then(puts.clone());
            if self.call(async |mut c| c.txn(free).await).await?.succeeded() {
                continue;
            }
            let ours = Txn::new()
                .when([Compare::value(key.clone(), CompareOp::Equal, self.host.id.clone())])
                .and_then(puts);
            if !self.call(async |mut c| c.txn(ours).await).await?.succeeded() {
                log::error!(
                    "store: address {ip} of {} was leased to another host while this one was away; \
                     remove and run the container again",
                    record.name
                );
            }
        }
        let mirror = self.snapshot().await?.0;
        for stale in mirror.endpoints.values().filter(|r| r.host == self.host.id) {
            if !own.iter().any(|r| r.endpoint_id == stale.endpoint_id) {
                self.release(&stale.network_id, stale.addresses(), &stale.endpoint_id).await?;
            }
        }
        Ok(())
    }

    /// Everything shared, and the revision it was read at.
    pub async fn snapshot(&self) -> Result<(Mirror, i64)> {
        let found =
            self.call(async |mut c| c.get(PREFIX, Some(GetOptions::new().with_prefix())).await).await?;
        let mut mirror = Mirror::default();
        for kv in found.kvs() {
            if let Ok(key) = std::str::from_utf8(kv.key()) {
                mirror.put(key, kv.value());
            }
        }
        Ok((mirror, found.header().map_or(0, |h| h.revision())))
    }

    /// Watches the shared keys from `revision` on.
    pub async fn watch(&self, revision: i64) -> Result<WatchStream> {
        let options = WatchOptions::new().with_prefix().with_start_revision(revision);
        self.call(async |mut c| c.watch(PREFIX, Some(options)).await).await
    }

    /// The next changes the watch reports, taken into `mirror`; an error when the stream
    /// ends or fails (the caller reads everything again and watches anew).
    pub async fn follow(&self, stream: &mut WatchStream, mirror: &mut Mirror) -> Result<()> {
        let answer = stream.message().await.map_err(|e| self.failed(&e).error)?;
        let Some(answer) = answer else { bail!("the store {} ended the watch", self.address) };
        if answer.compact_revision() > 0 {
            // The watch started (or fell behind) before a revision etcd has compacted
            // away: the changes since are lost to it, and only a fresh snapshot is whole.
            bail!(
                "the store {} compacted its history up to revision {} past where the watch was",
                self.address,
                answer.compact_revision()
            );
        }
        if answer.canceled() {
            bail!("the store {} cancelled the watch: {}", self.address, answer.cancel_reason());
        }
        for event in answer.events() {
            let Some(kv) = event.kv() else { continue };
            let Ok(key) = std::str::from_utf8(kv.key()) else { continue };
            match event.event_type() {
                EventType::Put => mirror.put(key, kv.value()),
                EventType::Delete => mirror.delete(key),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn refused(address: &str, access: &StoreAccess) -> String {
        format!("{:#}", connect_options(&address.parse().unwrap(), access).unwrap_err())
    }

    #[test]
    fn tls_and_user_settings_that_cannot_work_are_refused_naming_the_setting_and_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            Some(path)
        };
        let private_file = |name: &str, text: &str| {
            let path = file(name, text)?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
            Some(path)
        };
        let pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        let ca = StoreAccess { cacert: file("ca.pem", pem), ..StoreAccess::default() };
        let err = refused("etcd://10.0.0.10:2379", &ca);
        assert!(err.contains("--store-cacert") && err.contains("etcds://"), "{err}");
        let err = refused("etcds://10.0.0.10:2379", &StoreAccess::default());
        assert!(err.contains("give --store-cacert FILE"), "{err}");
        let half = StoreAccess { cert: file("cert.pem", pem), ..ca.clone() };
        let err = refused("etcds://10.0.0.10:2379", &half);
        assert!(err.contains("--store-cert and --store-key go together"), "{err}");
        let not_pem = StoreAccess { cacert: file("ca.der", "0\x02 binary"), ..StoreAccess::default() };
        let err = refused("https://10.0.0.10:2379", &not_pem);
        assert!(err.contains("ca.der: not PEM"), "{err}");
        let missing = StoreAccess { cacert: Some(dir.path().join("nope.pem")), ..StoreAccess::default() };
        let err = refused("etcds://10.0.0.10:2379", &missing);
        assert!(err.contains("--store-cacert") && err.contains("nope.pem: cannot read it"), "{err}");
        let no_user =
            StoreAccess { password_file: private_file("password", "secret\n"), ..StoreAccess::default() };
        assert!(refused("etcd://10.0.0.10:2379", &no_user).contains("no --store-user"));

        let user = StoreAccess { user: Some("dataplane".into()), ..no_user };
        let (_, creds) = connect_options(&"etcd://10.0.0.10:2379".parse().unwrap(), &user).unwrap();
        assert_eq!(
            creds,
            Some(("dataplane".into(), "secret".into())),
            "the file's newline is not the password's"
        );
        let (_, creds) = connect_options(&"etcds://10.0.0.10:2379".parse().unwrap(), &ca).unwrap();
        assert_eq!(creds, None, "TLS alone signs in as nobody");
    }

    #[test]
    fn a_client_key_its_group_or_others_may_read_is_refused_naming_it_and_the_chmod() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        let pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        let key = write("host.key", "-----BEGIN PRIVATE KEY-----\nMIGH\n-----END PRIVATE KEY-----\n");
        let access = StoreAccess {
            cacert: Some(write("ca.pem", pem)),
            cert: Some(write("host.pem", pem)),
            key: Some(key.clone()),
            ..StoreAccess::default()
        };
        // 0644 is what Kubernetes gives a secret's files unless told `defaultMode`.
        for (mode, shown) in [(0o644, "0644"), (0o640, "0640"), (0o604, "0604")] {
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(mode)).unwrap();
            let err = refused("etcds://10.0.0.10:2379", &access);
            let named = format!("--store-key {}", key.display());
            assert!(err.contains(&named), "mode {shown}: the key is not named: {err}");
            assert!(err.contains(&format!("(mode {shown})")), "mode {shown}: the mode is not shown: {err}");
            assert!(
                err.contains(&format!("chmod 600 {}", key.display())),
                "mode {shown}: the fix is not given: {err}"
            );
        }
        // The certificates are public: their modes are left alone.
        for mode in [0o600, 0o400] {
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(mode)).unwrap();
            connect_options(&"etcds://10.0.0.10:2379".parse().unwrap(), &access)
                .unwrap_or_else(|e| panic!("a key of mode {mode:o} is refused: {e:#}"));
        }
    }

    #[test]
    fn a_password_file_its_group_or_others_may_read_is_refused_naming_it_and_the_chmod() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store-password");
        std::fs::write(&path, "secret\n").unwrap();
        let access = StoreAccess {
            user: Some("dataplane".into()),
            password_file: Some(path.clone()),
            ..StoreAccess::default()
        };
        for (mode, shown) in [(0o644, "0644"), (0o640, "0640"), (0o604, "0604"), (0o610, "0610")] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let err = refused("etcd://10.0.0.10:2379", &access);
            let named = format!("--store-password-file {}", path.display());
            assert!(err.contains(&named), "mode {shown}: the file is not named: {err}");
            assert!(err.contains(&format!("(mode {shown})")), "mode {shown}: the mode is not shown: {err}");
            assert!(
                err.contains(&format!("chmod 600 {}", path.display())),
                "mode {shown}: the fix is not given: {err}"
            );
        }
        for mode in [0o600, 0o400] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let (_, creds) = connect_options(&"etcd://10.0.0.10:2379".parse().unwrap(), &access)
                .unwrap_or_else(|e| panic!("mode {mode:o} is refused: {e:#}"));
            assert_eq!(creds, Some(("dataplane".into(), "secret".into())), "mode {mode:o}");
        }
    }
}
