//! Overlay networks on this host, as the shared store has them: keeps the host's etcd
//! lease alive, follows the store's watch (reading everything again whenever the watch
//! breaks, so that the host catches up once etcd is back) and brings the host's overlay
//! networks, the names of other hosts' endpoints and the tunnel's tables in line with it. Leasing an address
//! and recording an endpoint for the others are `endpoints`' steps through the helpers
//! here; creating and removing a network, `networks`'. It never puts host-local state in
//! the store, and never holds the daemon's lock while it waits on etcd, except to write
//! the host's own records again (which must not race an attach or a detach).

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::Arc,
    time::Duration,
};

use anyhow::{Result, anyhow, bail};

use super::{Core, Shared};
use crate::{
    dns::RemoteName,
    state::{Endpoint, Network},
    store::{EndpointRecord, Mirror, OVERLAY_DRIVER, SharedNetwork, etcd::EtcdStore, etcd::Liveness},
    tunnel::{Tables, Underlay},
};

/// How long the watch waits before reading the store again after it broke.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Starts the tasks that keep the host's lease and follow the store.
pub(super) fn follow_store(core: Shared, store: Arc<EtcdStore>) {
    tokio::spawn(keep_lease(core.clone(), store.clone()));
    tokio::spawn(watch(core, store));
}

/// Renews the host's lease three times a TTL; a lease granted anew (the old one expired
/// while etcd or this daemon was away) gets the host's leases and records again.
async fn keep_lease(core: Shared, store: Arc<EtcdStore>) {
    let every = store.ttl() / 3;
    let mut away = false;
    loop {
        match store.keep_alive().await {
            Ok(liveness) => {
                if std::mem::take(&mut away) {
                    log::info!("store {} answers again", store.address());
                }
                if liveness == Liveness::Granted
                    && let Err(e) = reclaim(&core, &store).await
                {
                    log::warn!("{e:#}");
                }
            }
            Err(e) if !away => {
                away = true;
                log::warn!(
                    "{e:#}; existing endpoints keep working, new ones on overlay networks wait for it"
                );
            }
            Err(_) => {}
        }
        tokio::time::sleep(every).await;
    }
}

/// Writes the host's own leases and records again, under the daemon's lock.
async fn reclaim(core: &Shared, store: &EtcdStore) -> Result<()> {
    let c = core.lock().await;
    store.reclaim(&c.own_records()).await
}

/// Reads everything shared, applies it, then applies each change the watch reports;
/// starts over (everything read again) whenever the watch breaks.
async fn watch(core: Shared, store: Arc<EtcdStore>) {
    // Whether the last try broke, so that a store that stays away is warned of once.
    let mut broken = false;
    loop {
        let followed: Result<()> = async {
            let (mut mirror, revision) = store.snapshot().await?;
            if std::mem::take(&mut broken) {
                log::info!("store {}: following it again", store.address());
            }
            give_vnis(&store, &mirror).await;
            core.lock().await.apply_mirror(&mirror).await;
            if store.has_lease() {
                reclaim(&core, &store).await?;
            }
            let mut stream = store.watch(revision + 1).await?;
            loop {
                store.follow(&mut stream, &mut mirror).await?;
                give_vnis(&store, &mirror).await;
                core.lock().await.apply_mirror(&mirror).await;
            }
        }
        .await;
        if let Err(e) = followed
            && !std::mem::replace(&mut broken, true)
        {
            log::warn!("store watch: {e:#}; reading the store again until it answers");
        }
        tokio::time::sleep(RETRY_AFTER).await;
    }
}

/// Gives a VNI to each network recorded without one (by the first version of the store);
/// the watch then brings the new records.
async fn give_vnis(store: &EtcdStore, mirror: &Mirror) {
    for net in mirror.networks.values().filter(|n| n.vni.is_none()) {
        if let Err(e) = store.give_vni(net).await {
            log::warn!("store: overlay network {}: {e:#}", net.name);
        }
    }
}

impl Core {
    /// The store, for work on overlay network `name`; an error naming `--store` when the
    /// daemon has none.
    pub(super) fn shared_store(&self, name: &str) -> Result<Arc<EtcdStore>> {
        self.shared.clone().ok_or_else(|| {
            anyhow!(
                "network {name}: overlay networks are shared between hosts through a store; \
                 start the daemon with --store etcd://ADDR:PORT (on every host)"
            )
        })
    }

    /// An address of overlay network `net` for a new endpoint of this host, leased in the
    /// store.
    pub(super) async fn lease_address(&self, net: &Network, wanted: Option<Ipv4Addr>) -> Result<Ipv4Addr> {
        let store = self.shared_store(&net.name)?;
        store.lease_address(net, wanted, self.state.used_addresses(&net.id)).await
    }

    /// An IPv6 address of overlay network `net` for a new endpoint of this host, leased
    /// in the store as IPv4 ones are.
    pub(super) async fn lease_address6(&self, net: &Network, wanted: Option<Ipv6Addr>) -> Result<Ipv6Addr> {
        let store = self.shared_store(&net.name)?;
        store.lease_address6(net, wanted, &self.state.used_addresses6(&net.id)).await
    }

    /// Records a new endpoint of an overlay network for the other hosts.
    pub(super) async fn announce(&self, net: &Network, endpoint: &Endpoint, owner_name: &str) -> Result<()> {
        let store = self.shared_store(&net.name)?;
        store.publish(&self.record_of(endpoint, owner_name, &store)).await
    }

    /// Gives an endpoint's addresses and record back to the store; when it does not
    /// answer, they stay until this host's next catch-up with it (`EtcdStore::reclaim`).
    pub(super) async fn give_back(&self, endpoint: &Endpoint) {
        let Some(store) = &self.shared else { return };
        let addresses = endpoint.ip.map(IpAddr::V4).into_iter().chain(endpoint.ip6.map(IpAddr::V6));
        if let Err(e) = store.release(&endpoint.network_id, addresses, &endpoint.id).await {
            log::warn!("giving back the addresses of endpoint {}: {e:#}", &endpoint.id[..12]);
        }
    }

    /// Whether `net` lives in the store.
    pub(super) fn is_overlay(net: &Network) -> bool {
        net.driver == OVERLAY_DRIVER
    }

    /// The store's record of an endpoint.
    fn record_of(&self, endpoint: &Endpoint, owner_name: &str, store: &EtcdStore) -> EndpointRecord {
        EndpointRecord {
            network_id: endpoint.network_id.clone(),
            endpoint_id: endpoint.id.clone(),
            ip: endpoint.ip,
            ip6: endpoint.ip6,
            mac: endpoint.mac,
            host: store.host.id.clone(),
            host_address: store.host.address,
            name: owner_name.to_string(),
            aliases: endpoint.aliases.clone(),
        }
    }

    /// The records of this host's endpoints on overlay networks, as the store should hold them.
    fn own_records(&self) -> Vec<EndpointRecord> {
        let Some(store) = &self.shared else { return vec![] };
        let names = self.state.owner_names();
        self.state
            .endpoints
            .iter()
            .filter(|e| self.state.network_by_id(&e.network_id).is_some_and(Self::is_overlay))
            .map(|e| self.record_of(e, &names.of(&e.owner), store))
            .collect()
    }

    /// Brings the host in line with the store: its overlay networks made or removed, and
    /// the names of other hosts' endpoints.
    async fn apply_mirror(&mut self, mirror: &Mirror) {
        for shared in mirror.networks.values() {
            if self.state.network_by_id(&shared.id).is_none()
                && let Err(e) = self.adopt_network(shared).await
            {
                log::warn!("store: overlay network {}: {e:#}", shared.name);
            }
        }
        let gone: Vec<Network> = self
            .state
            .networks
            .iter()
            .filter(|n| Self::is_overlay(n) && !mirror.networks.values().any(|s| s.id == n.id))
            .cloned()
            .collect();
        for net in gone {
            if self.state.endpoints_on(&net.id).next().is_some() {
                log::warn!(
                    "store: overlay network {} was removed while this host has endpoints on it",
                    net.name
                );
                continue;
            }
            if let Err(e) = self.uninstall_network(&net).await {
                log::warn!("store: removing overlay network {}: {e:#}", net.name);
            }
        }
        self.record_vnis(mirror);
        let Some(store) = &self.shared else { return };
        let remote = mirror
            .remote_endpoints(&store.host.id)
            .map(|r| RemoteName {
                network: r.network_id.clone(),
                addresses: r.addresses().collect(),
                names: std::iter::once(&r.name).chain(&r.aliases).cloned().collect(),
            })
            .collect();
        self.resolvers.set_remote(&self.state, remote);
        let underlay = Underlay::of(store.host.address);
        let tables = Tables::of(mirror, &store.host.id, &self.state.networks, underlay);
        for ip in tables.other_family.difference(&self.other_family_hosts) {
            log::error!(
                "store: another host is reached at {ip}, but this one tunnels over {} (its \
                 --advertise-address): that host's endpoints are unreachable from here; give every host an \
                 --advertise-address of one family",
                underlay.name()
            );
        }
        self.other_family_hosts = tables.other_family.clone();
        if let Err(e) = tables.apply(&mut self.datapath) {
            log::warn!("store: updating the tunnel's tables: {e:#}");
        }
    }

    /// Keeps each overlay network's VNI as the store gives it, for inspect.
    fn record_vnis(&mut self, mirror: &Mirror) {
        let given: Vec<Network> = self
            .state
            .networks
            .iter()
            .filter(|n| Self::is_overlay(n))
            .filter_map(|net| {
                let vni = mirror.networks.values().find(|s| s.id == net.id)?.vni;
                (vni.is_some() && net.vni != vni).then(|| Network { vni, ..net.clone() })
            })
            .collect();
        if given.is_empty() {
            return;
        }
        for net in given {
            self.state.networks.replace(net);
        }
        if let Err(e) = self.save() {
            log::warn!("store: recording overlay networks' VNIs: {e:#}");
        }
    }

    /// Makes on this host an overlay network another host created.
    async fn adopt_network(&mut self, shared: &SharedNetwork) -> Result<()> {
        if let Some(local) = self.state.network(&shared.name) {
            bail!("this host has a network of that name ({}); rename or remove it here", &local.id[..12]);
        }
        if let Some((other, theirs)) = self
            .state
            .networks
            .iter()
            .find_map(|n| {
                let (ours, theirs) = n.subnet.zip(shared.subnet)?;
                crate::ipam::overlaps(&ours, &theirs).then_some((n, theirs.to_string()))
            })
            .or_else(|| {
                self.state.networks.iter().find_map(|n| {
                    let (ours, theirs) = n.ipv6.zip(shared.ipv6)?;
                    let overlap =
                        ours.subnet.contains(&theirs.subnet) || theirs.subnet.contains(&ours.subnet);
                    overlap.then_some((n, theirs.subnet.to_string()))
                })
            })
        {
            bail!(
                "its subnet {theirs} overlaps network {:?} of this host; remove that network here",
                other.name
            );
        }
        let mut net = shared.local(self.state.next_network_index()).map_err(|e| anyhow!(e))?;
        net.bridge_options.mtu = self.overlay_mtu(net.bridge_options.mtu);
        self.install_network(net).await
    }

    /// The MTU of an overlay network's containers: the tunnel's (the underlay's less the
    /// VXLAN overhead), or the one `asked` (`-o mtu`) if it is lower.
    pub(super) fn overlay_mtu(&self, asked: Option<u32>) -> Option<u32> {
        match (asked, self.tunnel_mtu) {
            (Some(asked), Some(tunnel)) => Some(asked.min(tunnel)),
            (asked, tunnel) => asked.or(tunnel),
        }
    }
}
