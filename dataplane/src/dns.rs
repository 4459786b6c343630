//! The embedded DNS resolver: one per bridge network, on the network's gateway address,
//! where each container's resolv.conf points. It answers the names of running containers
//! (name, hostname, short id, network aliases, `name.network`) and PTR for their
//! addresses, as the querying container sees them: the names of every network it is
//! attached to, and only those. Everything else goes to the upstream resolvers unchanged
//! (NXDOMAIN, SERVFAIL and truncation come back as the upstream said them), except from
//! internal networks, which never reach outside. The default `bridge` network keeps
//! Docker's behaviour: forwarding only, no container names.
//! Wire format is hickory's; this module never parses DNS by hand.

use std::{
    collections::{HashMap, HashSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use anyhow::{Context, Result};
use hickory_proto::{
    op::{Edns, Message, MessageType, OpCode, ResponseCode},
    rr::{
        Name, RData, Record, RecordType,
        rdata::{A, AAAA, PTR},
    },
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream, UdpSocket},
    sync::{OwnedSemaphorePermit, Semaphore},
    task::JoinHandle,
    time::timeout,
};

use crate::state::{Change, Changes, DEFAULT_NETWORK, Endpoint, NetworkMode, Owner, State, Status};

/// Docker's TTL for container names.
const TTL: u32 = 600;
/// The UDP answer size a client without EDNS accepts (RFC 1035).
const CLASSIC_UDP_LIMIT: u16 = 512;
/// The largest UDP message we receive or send.
const MAX_UDP: usize = 4096;
/// How long one upstream gets to answer before the next one is tried.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a TCP client may take to send a query (all of it: a client trickling bytes is
/// hung up on as one that sends nothing) or to take its answer.
const TCP_IDLE: Duration = Duration::from_secs(10);
/// TCP connections held at once: by one client (dig and resolvers use one at a time), and
/// in all. A client's connections beyond its share are closed as they come, so that a
/// container cannot take the daemon's descriptors.
const TCP_PER_CLIENT: usize = 8;
const TCP_MAX: usize = 256;
/// Queries handled at once: from one client, and in all. A client's queries beyond its
/// share are dropped, so that its flood leaves room for the others' (a query waiting on
/// the upstreams holds its place for up to their timeouts).
const QUERIES_PER_CLIENT: usize = 64;
const QUERIES_MAX: usize = 512;
pub const PORT: u16 = 53;

/// The names one network's containers are known by there.
#[derive(Debug, Default, PartialEq)]
struct Zone {
    /// Lower-case names without the final dot → addresses of both families, in the order
    /// containers joined.
    names: HashMap<String, Vec<IpAddr>>,
    /// Container address (either family) → `name.network.`
    pointers: HashMap<IpAddr, Name>,
    /// Whether other names go upstream (not from internal networks).
    forwards: bool,
}

/// An endpoint of an overlay network on another host, as the shared store records it:
/// its names answer on every host's resolver of that network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteName {
    pub network: String,
    /// Its addresses: IPv4, IPv6 or both, as its network has them.
    pub addresses: Vec<IpAddr>,
    /// Its container's name first, then its aliases.
    pub names: Vec<String>,
}

/// Everything the resolvers answer from: built from the state once, then brought in line
/// with each change, owner by owner (a change costs what it touches, not the size of the
/// state).
#[derive(Debug, Default, PartialEq)]
pub struct Directory {
    /// By network id; only networks that have a resolver.
    zones: HashMap<String, Zone>,
    /// (network id, container address of either family) → ids of every network that
    /// container is on, so that a container connected to two networks resolves the names
    /// of both, whichever family it asks over.
    views: HashMap<(String, IpAddr), Vec<String>>,
    /// What each owner's endpoints put in the zones and views, to take it out again.
    entered: HashMap<Owner, Vec<Entry>>,
}

/// What one endpoint put in the directory.
#[derive(Debug, PartialEq)]
struct Entry {
    network: String,
    /// Its IPv4 address; none on an IPv6-only network.
    ip: Option<Ipv4Addr>,
    /// Its IPv6 address, on a network with IPv6.
    ip6: Option<Ipv6Addr>,
    /// Lower-case, each once.
    names: Vec<String>,
    pointer: bool,
}

impl Entry {
    fn addresses(&self) -> impl Iterator<Item = IpAddr> + use<> {
        self.ip.map(Into::into).into_iter().chain(self.ip6.map(Into::into))
    }
}

impl Directory {
    pub fn from_state(state: &State, remote: &[RemoteName]) -> Self {
        let mut directory = Directory::default();
        for net in state.networks.iter().filter(|n| has_resolver(&n.driver)) {
            directory.zones.insert(net.id.clone(), Zone { forwards: !net.internal, ..Zone::default() });
        }
        // By owner, in the order they joined: that is the order a shared name answers in.
        let mut owners: Vec<&Owner> = vec![];
        let mut by_owner: HashMap<&Owner, Vec<&Endpoint>> = HashMap::new();
        for endpoint in &state.endpoints {
            let attached = by_owner.entry(&endpoint.owner).or_default();
            if attached.is_empty() {
                owners.push(&endpoint.owner);
            }
            attached.push(endpoint);
        }
        for owner in owners {
            directory.enter(state, owner, &by_owner[owner]);
        }
        for endpoint in remote {
            directory.enter_remote(state, endpoint);
        }
        directory
    }

    /// Enters the names of another host's endpoint: as a local one's, without a view (no
    /// client of this host has its address). They change only with the store, which
    /// rebuilds the directory (`Resolvers::set_remote`).
    fn enter_remote(&mut self, state: &State, endpoint: &RemoteName) {
        let (Some(net), Some(zone)) =
            (state.network_by_id(&endpoint.network), self.zones.get_mut(&endpoint.network))
        else {
            return;
        };
        let Some(first) = endpoint.names.first() else { return };
        let qualified = format!("{first}.{}", net.name);
        let mut names: Vec<String> =
            endpoint.names.iter().chain([&qualified]).map(|n| n.to_ascii_lowercase()).collect();
        names.sort_unstable();
        names.dedup();
        for name in names {
            zone.names.entry(name).or_default().extend(endpoint.addresses.iter().copied());
        }
        if let Ok(pointer) = Name::from_ascii(format!("{qualified}.")) {
            for ip in &endpoint.addresses {
                zone.pointers.insert(*ip, pointer.clone());
            }
        }
    }

    /// Brings the names in line with the state after changes to containers and endpoints
    /// (changes to networks take `from_state`): those of each owner they touched.
    fn apply(&mut self, state: &State, changes: &Changes) {
        let mut owners = HashSet::new();
        for change in &changes.containers {
            let id = match change {
                Change::Put(id) => id.as_str(),
                Change::Removed(container) => container.id.as_str(),
            };
            owners.insert(Owner::Container { id: id.to_string() });
        }
        for change in &changes.endpoints {
            match change {
                Change::Put(id) => owners.extend(state.endpoints.get(id).map(|e| e.owner.clone())),
                Change::Removed(endpoint) => _ = owners.insert(endpoint.owner.clone()),
            }
        }
        for owner in &owners {
            self.refresh(state, owner);
        }
    }

    /// Brings one owner's names in line with the state: out with what it had, in with
    /// what it has now.
    fn refresh(&mut self, state: &State, owner: &Owner) {
        self.forget(owner);
        let attached: Vec<_> = state.endpoints.iter().filter(|e| e.owner == *owner).collect();
        self.enter(state, owner, &attached);
    }

    fn forget(&mut self, owner: &Owner) {
        for entry in self.entered.remove(owner).unwrap_or_default() {
            if let Some(zone) = self.zones.get_mut(&entry.network) {
                let ips: Vec<IpAddr> = entry.addresses().collect();
                for name in &entry.names {
                    if let Some(addresses) = zone.names.get_mut(name) {
                        for ip in &ips {
                            if let Some(at) = addresses.iter().position(|a| a == ip) {
                                addresses.remove(at);
                            }
                        }
                        if addresses.is_empty() {
                            zone.names.remove(name);
                        }
                    }
                }
                if entry.pointer {
                    for ip in &ips {
                        zone.pointers.remove(ip);
                    }
                }
            }
            for ip in entry.addresses() {
                self.views.remove(&(entry.network.clone(), ip));
            }
        }
    }

    /// Enters the names of an owner's endpoints (`attached`, in the order they joined).
    /// Our containers answer by their name, hostname and short id while they run; other
    /// owners' endpoints (a runtime's, through CNI or Docker) by the names they were
    /// attached with, for as long as they are attached; each also by its aliases, and by
    /// its first name qualified with the network's (`name.network`).
    fn enter(&mut self, state: &State, owner: &Owner, attached: &[&Endpoint]) {
        let own_names = match owner.container_id() {
            Some(id) => match state.containers.get(id) {
                Some(c)
                    if matches!(c.status, Status::Running { .. })
                        && c.network_mode == NetworkMode::Bridge =>
                {
                    Some(vec![c.name.as_str(), c.hostname.as_str(), &c.id[..12]])
                }
                _ => return,
            },
            None => None,
        };
        let networks: Vec<String> = attached.iter().map(|a| a.network_id.clone()).collect();
        let mut entries = vec![];
        for att in attached {
            let Some(net) = state.network_by_id(&att.network_id) else { continue };
            let Some(zone) = self.zones.get_mut(&net.id) else { continue };
            for ip in att.addresses() {
                self.views.insert((net.id.clone(), ip), networks.clone());
            }
            let mut entry =
                Entry { network: net.id.clone(), ip: att.ip, ip6: att.ip6, names: vec![], pointer: false };
            let mut names: Vec<&str> = own_names.clone().unwrap_or_default();
            names.extend(att.aliases.iter().map(String::as_str));
            if let (false, Some(&first)) = (net.name == DEFAULT_NETWORK, names.first()) {
                let qualified = format!("{first}.{}", net.name);
                entry.names =
                    names.iter().chain([&qualified.as_str()]).map(|n| n.to_ascii_lowercase()).collect();
                entry.names.sort_unstable();
                entry.names.dedup();
                for name in &entry.names {
                    zone.names.entry(name.clone()).or_default().extend(entry.addresses());
                }
                if let Ok(pointer) = Name::from_ascii(format!("{qualified}.")) {
                    for ip in entry.addresses() {
                        zone.pointers.insert(ip, pointer.clone());
                    }
                    entry.pointer = true;
                }
            }
            entries.push(entry);
        }
        if !entries.is_empty() {
            self.entered.insert(owner.clone(), entries);
        }
    }

    /// The zones a client sees: those of every network it is on, starting with the one
    /// it asked through; a client we do not know (the host, say) sees that one only.
    fn zones_for<'a>(&'a self, network: &'a str, client: IpAddr) -> impl Iterator<Item = &'a Zone> + 'a {
        let others = self.views.get(&(network.to_string(), client)).into_iter().flatten();
        std::iter::once(network)
            .chain(others.map(String::as_str).filter(move |n| *n != network))
            .filter_map(|n| self.zones.get(n))
    }

    /// What the resolver of `network` does with `packet` from `client`, short of asking
    /// the upstreams; `turn` rotates the order of several addresses. Whatever the bytes,
    /// this returns (it is fuzzed: `cargo xtask fuzz dns_message`).
    pub fn reply(
        &self,
        network: &str,
        client: IpAddr,
        packet: &[u8],
        transport: Transport,
        turn: usize,
    ) -> Reply {
        let request = match Message::from_vec(packet) {
            Ok(request) => request,
            // Unreadable: FORMERR when there is a header to answer to, and it is no
            // response (answering those could make two servers talk for ever).
            Err(_) if packet.len() >= 12 && packet[2] & 0x80 == 0 => {
                let id = u16::from_be_bytes([packet[0], packet[1]]);
                let formerr = Message::error_msg(id, OpCode::Query, ResponseCode::FormErr).to_vec();
                return formerr.map_or(Reply::Nothing, Reply::Send);
            }
            Err(_) => return Reply::Nothing,
        };
        if request.metadata.message_type != MessageType::Query {
            return Reply::Nothing;
        }
        let send =
            |response: &Message| encode(response, &request, transport).map_or(Reply::Nothing, Reply::Send);
        if request.metadata.op_code != OpCode::Query || request.queries.len() != 1 {
            return send(&response_to(&request, ResponseCode::NotImp));
        }
        let Some(zone) = self.zones.get(network) else { return Reply::Nothing };
        // A dual-stack socket sees IPv4 clients as mapped IPv6 addresses.
        if let Some(response) = resolve(self.zones_for(network, client.to_canonical()), &request, turn) {
            return send(&response);
        }
        if zone.forwards {
            return Reply::Forward(request);
        }
        // Internal networks never reach outside.
        send(&response_to(&request, ResponseCode::ServFail))
    }
}

/// What the resolver does with one query.
#[derive(Debug)]
pub enum Reply {
    /// Sends these bytes back.
    Send(Vec<u8>),
    /// Asks the upstreams, and when none answers, says SERVFAIL to this request.
    Forward(Message),
    /// Says nothing: no DNS query, or no resolver there.
    Nothing,
}

/// Which drivers get a resolver: a macvlan network's gateway is a router on the parent's
/// segment, not us, so its containers use the upstream resolvers directly.
pub fn has_resolver(driver: &str) -> bool {
    matches!(driver, "bridge" | crate::store::OVERLAY_DRIVER)
}

/// The answer from the container names, or `None` when the name is not one of theirs.
/// `turn` rotates the order of several addresses, so that clients spread over them.
fn resolve<'a>(zones: impl Iterator<Item = &'a Zone>, request: &Message, turn: usize) -> Option<Message> {
    let question = request.queries.first()?;
    let name = question.name();
    let mut response = response_to(request, ResponseCode::NoError);
    response.metadata.authoritative = true;
    if question.query_type() == RecordType::PTR {
        // in-addr.arpa for IPv4 (all 32 bits), ip6.arpa for IPv6 (all 32 nibbles).
        let address = name.parse_arpa_name().ok().filter(|n| n.prefix_len() == n.max_prefix_len())?.addr();
        let pointer = zones.filter_map(|z| z.pointers.get(&address)).next()?;
        response.add_answer(Record::from_rdata(name.clone(), TTL, RData::PTR(PTR(pointer.clone()))));
        return Some(response);
    }
    let key = name.to_ascii().trim_end_matches('.').to_ascii_lowercase();
    let addresses: Vec<IpAddr> = zones.filter_map(|z| z.names.get(&key)).flatten().copied().collect();
    if addresses.is_empty() {
        return None;
    }
    // Other record types of a known name, and a family it has no address of: it exists,
    // with no such data (NODATA), as Docker's resolver answers.
    let kind = question.query_type();
    let mut wanted: Vec<RData> = addresses
        .into_iter()
        .filter_map(|address| match address {
            IpAddr::V4(ip) if matches!(kind, RecordType::A | RecordType::ANY) => Some(RData::A(A(ip))),
            IpAddr::V6(ip) if matches!(kind, RecordType::AAAA | RecordType::ANY) => {
                Some(RData::AAAA(AAAA(ip)))
            }
            _ => None,
        })
        .collect();
    wanted.dedup();
    if !wanted.is_empty() {
        let len = wanted.len();
        wanted.rotate_left(turn % len);
    }
    for data in wanted {
        response.add_answer(Record::from_rdata(name.clone(), TTL, data));
    }
    Some(response)
}

/// A response carrying the request's id, question and flags.
fn response_to(request: &Message, code: ResponseCode) -> Message {
    let mut response = Message::error_msg(request.metadata.id, request.metadata.op_code, code);
    response.metadata.recursion_desired = request.metadata.recursion_desired;
    response.metadata.recursion_available = true;
    response.add_queries(request.queries.iter().cloned());
    if request.edns.is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(MAX_UDP as u16);
        response.set_edns(edns);
    }
    response
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// The encoded response; over UDP, one too large for the client is sent truncated (TC),
/// and the client asks again over TCP.
fn encode(response: &Message, request: &Message, transport: Transport) -> Option<Vec<u8>> {
    let bytes = response.to_vec().ok()?;
    let limit = request.edns.as_ref().map_or(CLASSIC_UDP_LIMIT, |e| e.max_payload().max(CLASSIC_UDP_LIMIT));
    if transport == Transport::Udp && bytes.len() > usize::from(limit).min(MAX_UDP) {
        return response.truncate().to_vec().ok();
    }
    Some(bytes)
}

struct Shared {
    directory: RwLock<Directory>,
    upstreams: Vec<SocketAddr>,
    turn: AtomicUsize,
    queries: Arc<Share>,
    tcp_connections: Arc<Share>,
    answers: AnswerCounts,
}

/// Who gave an answer: the containers' names (and the resolver's own errors), an
/// upstream (relayed byte for byte), or nobody (every upstream failed: our SERVFAIL).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnswerSource {
    Names,
    Upstream,
    NoUpstream,
}

impl AnswerSource {
    const ALL: [AnswerSource; 3] = [AnswerSource::Names, AnswerSource::Upstream, AnswerSource::NoUpstream];

    pub fn name(self) -> &'static str {
        match self {
            AnswerSource::Names => "names",
            AnswerSource::Upstream => "upstream",
            AnswerSource::NoUpstream => "no_upstream",
        }
    }
}

/// The answers every resolver gave since the daemon started, by source and response code
/// (the 4 bits of the header's RCODE), and the messages that got none: for the metrics.
#[derive(Default)]
struct AnswerCounts {
    answered: [[AtomicU64; 16]; 3],
    unanswered: AtomicU64,
}

impl AnswerCounts {
    fn record(&self, source: AnswerSource, answer: Option<&[u8]>) {
        match answer.and_then(|bytes| bytes.get(3)) {
            Some(flags) => {
                self.answered[source as usize][usize::from(flags & 0x0f)].fetch_add(1, Ordering::Relaxed)
            }
            None => self.unanswered.fetch_add(1, Ordering::Relaxed),
        };
    }
}

/// The answers given so far, as the metrics show them.
#[derive(Debug, Default, PartialEq)]
pub struct Answers {
    /// Source, response code (its mnemonic, as `dig` prints it), count; counts above zero only.
    pub answered: Vec<(AnswerSource, &'static str, u64)>,
    /// Messages that were no query, or came to a network without a resolver.
    pub unanswered: u64,
}

/// The mnemonic of a 4-bit response code, as `dig` prints it (RFC 6895's registry).
fn response_code_name(code: usize) -> &'static str {
    const NAMES: [&str; 16] = [
        "NOERROR",
        "FORMERR",
        "SERVFAIL",
        "NXDOMAIN",
        "NOTIMP",
        "REFUSED",
        "YXDOMAIN",
        "YXRRSET",
        "NXRRSET",
        "NOTAUTH",
        "NOTZONE",
        "DSOTYPENI",
        "RCODE12",
        "RCODE13",
        "RCODE14",
        "RCODE15",
    ];
    NAMES[code & 0x0f]
}

/// Room for something every client uses (queries in flight, connections): so much in all,
/// and at most `per_client` of it for any one client.
struct Share {
    total: Arc<Semaphore>,
    per_client: usize,
    held: Mutex<HashMap<IpAddr, usize>>,
}

impl Share {
    fn new(total: usize, per_client: usize) -> Arc<Self> {
        Arc::new(Self { total: Arc::new(Semaphore::new(total)), per_client, held: Mutex::default() })
    }

    /// One unit for `client`: `None` at once when it holds its share already; otherwise
    /// when there is room in all.
    async fn take(self: &Arc<Self>, client: IpAddr) -> Option<Held> {
        {
            let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
            let count = held.entry(client).or_default();
            if *count >= self.per_client {
                return None;
            }
            *count += 1;
        }
        // Counted from here on: dropped, it gives the client's unit back.
        let mut unit = Held { share: self.clone(), client, _total: None };
        unit._total = Some(self.total.clone().acquire_owned().await.ok()?);
        Some(unit)
    }
}

/// A client's unit of a share, given back on drop.
struct Held {
    share: Arc<Share>,
    client: IpAddr,
    _total: Option<OwnedSemaphorePermit>,
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut held = self.share.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = held.get_mut(&self.client) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.client);
            }
        }
    }
}

impl Shared {
    /// Answers one query from `client`, asked through `network`'s resolver.
    async fn answer(
        &self,
        network: &str,
        client: IpAddr,
        packet: &[u8],
        transport: Transport,
    ) -> Option<Vec<u8>> {
        let reply = {
            let directory = self.directory.read().unwrap_or_else(|e| e.into_inner());
            let turn = self.turn.fetch_add(1, Ordering::Relaxed);
            directory.reply(network, client, packet, transport, turn)
        };
        let (source, answer) = match reply {
            Reply::Send(answer) => (AnswerSource::Names, Some(answer)),
            Reply::Nothing => (AnswerSource::Names, None),
            Reply::Forward(request) => self.ask_upstreams(request, packet, transport).await,
        };
        self.answers.record(source, answer.as_deref());
        answer
    }

    /// The first upstream's answer, or our SERVFAIL when none gives one.
    async fn ask_upstreams(
        &self,
        request: Message,
        packet: &[u8],
        transport: Transport,
    ) -> (AnswerSource, Option<Vec<u8>>) {
        for upstream in &self.upstreams {
            match forward(*upstream, packet, transport).await {
                Ok(answer) => return (AnswerSource::Upstream, Some(answer)),
                Err(e) => log::debug!("dns: upstream {upstream}: {e:#}"),
            }
        }
        (
            AnswerSource::NoUpstream,
            encode(&response_to(&request, ResponseCode::ServFail), &request, transport),
        )
    }
}

/// Relays a query to an upstream resolver and returns its answer, byte for byte.
async fn forward(upstream: SocketAddr, packet: &[u8], transport: Transport) -> Result<Vec<u8>> {
    let exchange = async {
        match transport {
            Transport::Udp => {
                let local: SocketAddr =
                    if upstream.is_ipv4() { (Ipv4Addr::UNSPECIFIED, 0).into() } else { "[::]:0".parse()? };
                let socket = UdpSocket::bind(local).await?;
                socket.connect(upstream).await?;
                socket.send(packet).await?;
                let mut buf = vec![0; MAX_UDP];
                loop {
                    let len = socket.recv(&mut buf).await?;
                    // Same id, or it is a stray answer to someone else's query.
                    if len >= 2 && buf[..2] == packet[..2] {
                        buf.truncate(len);
                        return Ok(buf);
                    }
                }
            }
            Transport::Tcp => {
                let mut stream = TcpStream::connect(upstream).await?;
                write_framed(&mut stream, packet).await?;
                Ok(read_framed(&mut stream).await?)
            }
        }
    };
    timeout(UPSTREAM_TIMEOUT, exchange).await.context("no answer in time")?
}

async fn read_framed(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let len = stream.read_u16().await?;
    let mut buf = vec![0; usize::from(len)];
    stream.read_exact(&mut buf).await?;
    Ok(buf)
}

async fn write_framed(stream: &mut TcpStream, message: &[u8]) -> std::io::Result<()> {
    let len = u16::try_from(message.len()).map_err(|_| std::io::ErrorKind::InvalidData)?;
    let mut framed = Vec::with_capacity(message.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(message);
    stream.write_all(&framed).await
}

/// The resolvers of every bridge network, and what they answer from.
pub struct Resolvers {
    shared: Arc<Shared>,
    listeners: HashMap<String, Listener>,
    /// Networks whose resolver could not bind, already warned about (binding is retried
    /// on every update, quietly).
    unbound: HashSet<String>,
    /// Whether the directory was built from the state yet.
    built: bool,
    /// The names of other hosts' endpoints on overlay networks.
    remote: Vec<RemoteName>,
}

/// A network's resolver: its UDP and TCP servers on the gateway's addresses (IPv4, IPv6
/// or both, as the network has them), ended on drop.
struct Listener {
    addresses: Vec<IpAddr>,
    tasks: Vec<JoinHandle<()>>,
}

/// The addresses a network's resolver listens on: its gateway's.
fn gateway_addresses(network: &crate::state::Network) -> Vec<IpAddr> {
    network.gateways().collect()
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.tasks.iter().for_each(JoinHandle::abort);
    }
}

impl Resolvers {
    pub fn new(upstreams: &[IpAddr]) -> Self {
        Self {
            shared: Arc::new(Shared {
                directory: RwLock::default(),
                upstreams: upstreams.iter().map(|ip| SocketAddr::new(*ip, PORT)).collect(),
                turn: AtomicUsize::new(0),
                queries: Share::new(QUERIES_MAX, QUERIES_PER_CLIENT),
                tcp_connections: Share::new(TCP_MAX, TCP_PER_CLIENT),
                answers: AnswerCounts::default(),
            }),
            listeners: HashMap::new(),
            unbound: Default::default(),
            built: false,
            remote: vec![],
        }
    }

    /// The answers the resolvers gave since the daemon started.
    pub fn answers(&self) -> Answers {
        let counts = &self.shared.answers;
        let answered = AnswerSource::ALL
            .into_iter()
            .flat_map(|source| {
                counts.answered[source as usize].iter().enumerate().filter_map(move |(code, count)| {
                    let count = count.load(Ordering::Relaxed);
                    (count > 0).then(|| (source, response_code_name(code), count))
                })
            })
            .collect();
        Answers { answered, unanswered: counts.unanswered.load(Ordering::Relaxed) }
    }

    /// Where names go that no container has.
    pub fn upstreams(&self) -> Vec<IpAddr> {
        self.shared.upstreams.iter().map(SocketAddr::ip).collect()
    }

    /// Brings the resolvers in line with the state after `changes`: the names of the
    /// owners whose containers or endpoints changed; everything, and a resolver for each
    /// bridge network (on its gateway, which must be assigned already), when networks
    /// changed or on the first call.
    pub fn update(&mut self, state: &State, changes: &Changes) {
        if self.built && changes.networks.is_empty() && self.unbound.is_empty() {
            self.shared.directory.write().unwrap_or_else(|e| e.into_inner()).apply(state, changes);
            return;
        }
        self.built = true;
        let directory = Directory::from_state(state, &self.remote);
        self.listeners.retain(|id, listener| {
            directory.zones.contains_key(id)
                && state.network_by_id(id).is_some_and(|n| gateway_addresses(n) == listener.addresses)
        });
        for net in state.networks.iter().filter(|n| directory.zones.contains_key(&n.id)) {
            if self.listeners.contains_key(&net.id) {
                continue;
            }
            match Listener::bind(self.shared.clone(), &net.id, gateway_addresses(net)) {
                Ok(listener) => {
                    self.unbound.remove(&net.id);
                    self.listeners.insert(net.id.clone(), listener);
                }
                Err(e) => {
                    if self.unbound.insert(net.id.clone()) {
                        log::warn!("network {}: no name resolution: {e:#}", net.name);
                    }
                }
            }
        }
        *self.shared.directory.write().unwrap_or_else(|e| e.into_inner()) = directory;
    }
}

impl Resolvers {
    /// Replaces the names of other hosts' endpoints, when they changed.
    pub fn set_remote(&mut self, state: &State, remote: Vec<RemoteName>) {
        if remote == self.remote {
            return;
        }
        self.remote = remote;
        self.built = false;
        self.update(state, &Changes::default());
    }
}

impl Listener {
    /// Binds the gateway's IPv4 address, which must succeed, and its IPv6 one if it has
    /// one: a host that refuses that (IPv6 disabled) keeps the network's IPv4 resolver,
    /// with a warning. `addresses` stays what was asked, so that the next update does not
    /// take the listener for a stale one and bind again.
    fn bind(shared: Arc<Shared>, network: &str, addresses: Vec<IpAddr>) -> Result<Self> {
        let mut sockets = vec![];
        for address in &addresses {
            match bind_udp_and_tcp(*address) {
                Ok(pair) => sockets.push(pair),
                Err(e) if address.is_ipv6() => log::warn!("network {network}: no resolver on IPv6: {e:#}"),
                Err(e) => return Err(e),
            }
        }
        // Spawned once every bind is done, so that a failure leaves no task behind.
        let mut tasks = vec![];
        for (udp, tcp) in sockets {
            tasks.push(tokio::spawn(serve_udp(shared.clone(), network.to_string(), udp)));
            tasks.push(tokio::spawn(serve_tcp(shared.clone(), network.to_string(), tcp)));
        }
        Ok(Self { addresses, tasks })
    }
}

fn bind_udp_and_tcp(address: IpAddr) -> Result<(Arc<UdpSocket>, TcpListener)> {
    let at = SocketAddr::new(address, PORT);
    let udp = std::net::UdpSocket::bind(at).with_context(|| format!("binding udp {at}"))?;
    udp.set_nonblocking(true)?;
    let tcp = std::net::TcpListener::bind(at).with_context(|| format!("binding tcp {at}"))?;
    tcp.set_nonblocking(true)?;
    Ok((Arc::new(UdpSocket::from_std(udp)?), TcpListener::from_std(tcp)?))
}

async fn serve_udp(shared: Arc<Shared>, network: String, socket: Arc<UdpSocket>) {
    let mut buf = vec![0; MAX_UDP];
    loop {
        let (len, client) = match socket.recv_from(&mut buf).await {
            Ok(received) => received,
            Err(e) => {
                log::warn!("dns: receiving on {:?}: {e}", socket.local_addr());
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Over the client's share: dropped, as a flood's excess is.
        let Some(unit) = shared.queries.take(client.ip()).await else { continue };
        let (shared, network, socket, packet) =
            (shared.clone(), network.clone(), socket.clone(), buf[..len].to_vec());
        tokio::spawn(async move {
            if let Some(answer) = shared.answer(&network, client.ip(), &packet, Transport::Udp).await {
                let _ = socket.send_to(&answer, client).await;
            }
            drop(unit);
        });
    }
}

async fn serve_tcp(shared: Arc<Shared>, network: String, listener: TcpListener) {
    loop {
        let (mut stream, client) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                log::warn!("dns: accepting on {:?}: {e}", listener.local_addr());
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Over the client's share: closed at once, before it costs more than the accept.
        let Some(connection) = shared.tcp_connections.take(client.ip()).await else { continue };
        let (shared, network) = (shared.clone(), network.clone());
        tokio::spawn(async move {
            // Given back when the connection ends, whichever way.
            let _connection = connection;
            while let Ok(Ok(query)) = timeout(TCP_IDLE, read_framed(&mut stream)).await {
                let answer = {
                    let Some(_unit) = shared.queries.take(client.ip()).await else { return };
                    shared.answer(&network, client.ip(), &query, Transport::Tcp).await
                };
                // A client that does not take its answer is hung up on, as one that
                // sends nothing is.
                let Some(answer) = answer else { return };
                if !matches!(timeout(TCP_IDLE, write_framed(&mut stream, &answer)).await, Ok(Ok(()))) {
                    return;
                }
            }
        });
    }
}

/// The host's resolvers, from its resolv.conf, for when the daemon is given none.
pub fn host_upstreams(resolv_conf: &str) -> Vec<IpAddr> {
    resolv_conf
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use hickory_proto::op::Query;

    use super::*;
    use crate::state::{Container, Endpoint, MacAddr, Network, Owner, new_id};

    fn network(name: &str, third: u8, internal: bool) -> Network {
        Network { internal, ..Network::sample(name, third) }
    }

    /// A running container and its endpoints on `on` (network, last byte of the address,
    /// aliases).
    fn container(name: &str, on: &[(&Network, u8, &[&str])]) -> (Container, Vec<Endpoint>) {
        let container = Container {
            id: new_id(),
            name: name.into(),
            hostname: format!("{name}-host"),
            network_mode: NetworkMode::Bridge,
            netns: "/nonexistent".into(),
            etc_dir: "/nonexistent".into(),
            command: vec!["true".into()],
            env: vec![],
            workdir: None,
            networks: vec![],
            detached: true,
            auto_remove: false,
            status: Status::Running { pid: 1, start_time: 0 },
            created: jiff::Timestamp::UNIX_EPOCH,
            started_at: None,
            finished_at: None,
            log: None,
        };
        let endpoints = on
            .iter()
            .enumerate()
            .map(|(i, (net, host, aliases))| Endpoint {
                id: new_id(),
                owner: Owner::Container { id: container.id.clone() },
                netns: container.netns.clone(),
                network_id: net.id.clone(),
                ip: Some(Ipv4Addr::new(10, net.subnet.unwrap().addr().octets()[1], 0, *host)),
                ip6: None,
                mac: MacAddr([2, 0x42, 0, 0, 0, *host]),
                host_veth: format!("veth{name}{i}"),
                ifname: format!("eth{i}"),
                aliases: aliases.iter().map(|a| a.to_string()).collect(),
                bridge: 0,
                ports: vec![],
            })
            .collect();
        (container, endpoints)
    }

    /// The state of `containers` on `networks`.
    fn state_of(networks: &[&Network], containers: Vec<(Container, Vec<Endpoint>)>) -> State {
        let (containers, endpoints): (Vec<_>, Vec<_>) = containers.into_iter().unzip();
        State {
            networks: networks.iter().map(|n| (*n).clone()).collect(),
            containers: containers.into(),
            endpoints: endpoints.into_iter().flatten().collect(),
            ..State::default()
        }
    }

    /// red: web (alias api), web2 (alias api), both-red; blue: db, both-blue (same
    /// container, also on red); the default network: plain; an internal network: secret.
    fn sample() -> (State, [Network; 4]) {
        let red = network("red", 1, false);
        let blue = network("blue", 2, false);
        let default = network(DEFAULT_NETWORK, 3, false);
        let internal = network("vault", 4, true);
        let mut stopped = container("stopped", &[(&red, 9, &[])]);
        stopped.0.status = Status::Exited { code: Some(0) };
        let state = state_of(
            &[&red, &blue, &default, &internal],
            vec![
                container("web", &[(&red, 2, &["api"])]),
                container("web2", &[(&red, 3, &["API"])]),
                container("db", &[(&blue, 2, &[])]),
                container("both", &[(&red, 4, &[]), (&blue, 4, &["store"])]),
                container("plain", &[(&default, 2, &[])]),
                container("secret", &[(&internal, 2, &[])]),
                stopped,
            ],
        );
        (state, [red, blue, default, internal])
    }

    fn query(name: &str, kind: RecordType) -> Message {
        let mut message = Message::query();
        message.metadata.recursion_desired = true;
        message.add_query(Query::query(Name::from_ascii(name).unwrap(), kind));
        message
    }

    fn lookup(
        directory: &Directory,
        net: &Network,
        client: [u8; 4],
        name: &str,
        turn: usize,
    ) -> Option<Vec<String>> {
        let zones = directory.zones_for(&net.id, client.into());
        let response = resolve(zones, &query(name, RecordType::A), turn)?;
        assert_eq!(response.metadata.response_code, ResponseCode::NoError);
        Some(response.answers.iter().map(|r| r.data.to_string()).collect())
    }

    #[test]
    fn answers_are_counted_by_source_and_response_code() {
        let resolvers = Resolvers::new(&[]);
        let header = |rcode: u8| vec![0xab, 0xcd, 0x81, 0x80 | rcode, 0, 0, 0, 0, 0, 0, 0, 0];
        let counts = &resolvers.shared.answers;
        counts.record(AnswerSource::Names, Some(&header(0)));
        counts.record(AnswerSource::Names, Some(&header(0)));
        counts.record(AnswerSource::Upstream, Some(&header(3)));
        counts.record(AnswerSource::NoUpstream, Some(&header(2)));
        counts.record(AnswerSource::Names, None);
        assert_eq!(
            resolvers.answers(),
            Answers {
                answered: vec![
                    (AnswerSource::Names, "NOERROR", 2),
                    (AnswerSource::Upstream, "NXDOMAIN", 1),
                    (AnswerSource::NoUpstream, "SERVFAIL", 1),
                ],
                unanswered: 1,
            }
        );
    }

    #[test]
    fn names_hostnames_short_ids_and_aliases_resolve_on_their_network() {
        let (state, [red, ..]) = sample();
        let directory = Directory::from_state(&state, &[]);
        let web = &state.containers[0];
        for name in ["web", "WEB.", "web-host", &web.id[..12], "web.red"] {
            assert_eq!(
                lookup(&directory, &red, [10, 1, 0, 3], name, 0),
                Some(vec!["10.1.0.2".into()]),
                "{name}"
            );
        }
        assert_eq!(
            lookup(&directory, &red, [10, 1, 0, 3], "stopped", 0),
            None,
            "stopped containers are gone"
        );
        assert_eq!(lookup(&directory, &red, [10, 1, 0, 3], "example.com", 0), None);
    }

    #[test]
    fn other_hosts_names_resolve_on_their_network_alone() {
        let (state, [red, blue, ..]) = sample();
        let remote = RemoteName {
            network: red.id.clone(),
            addresses: vec![Ipv4Addr::new(10, 1, 0, 99).into()],
            names: vec!["Far".into(), "far-alias".into()],
        };
        let directory = Directory::from_state(&state, &[remote]);
        for name in ["far", "far-alias", "far.red"] {
            assert_eq!(
                lookup(&directory, &red, [10, 1, 0, 3], name, 0),
                Some(vec!["10.1.0.99".into()]),
                "{name} of another host"
            );
        }
        assert_eq!(lookup(&directory, &blue, [10, 2, 0, 2], "far", 0), None, "not on another network");
        assert!(
            lookup(&directory, &red, [10, 1, 0, 3], "web", 0).is_some(),
            "the local names stay beside the remote ones"
        );
    }

    #[test]
    fn shared_aliases_answer_every_container_in_rotating_order() {
        let (state, [red, ..]) = sample();
        let directory = Directory::from_state(&state, &[]);
        let first = lookup(&directory, &red, [10, 1, 0, 2], "api", 0).unwrap();
        let second = lookup(&directory, &red, [10, 1, 0, 2], "api", 1).unwrap();
        assert_eq!(first, ["10.1.0.2", "10.1.0.3"]);
        assert_eq!(second, ["10.1.0.3", "10.1.0.2"]);
    }

    #[test]
    fn names_are_scoped_to_the_networks_of_the_client() {
        let (state, [red, blue, default, internal]) = sample();
        let directory = Directory::from_state(&state, &[]);
        // web is on red only: blue's names are not its to see.
        assert_eq!(lookup(&directory, &red, [10, 1, 0, 2], "db", 0), None);
        assert_eq!(lookup(&directory, &red, [10, 1, 0, 2], "store", 0), None);
        // both is on red and blue: it sees both, whichever gateway it asks.
        assert_eq!(lookup(&directory, &red, [10, 1, 0, 4], "db", 0), Some(vec!["10.2.0.2".into()]));
        assert_eq!(lookup(&directory, &blue, [10, 2, 0, 4], "web", 0), Some(vec!["10.1.0.2".into()]));
        // The alias belongs to blue: from blue only.
        assert_eq!(lookup(&directory, &blue, [10, 2, 0, 2], "store", 0), Some(vec!["10.2.0.4".into()]));
        // The default network resolves no container names, as in Docker.
        assert_eq!(lookup(&directory, &default, [10, 3, 0, 2], "plain", 0), None);
        assert!(directory.zones[&default.id].forwards);
        assert!(!directory.zones[&internal.id].forwards);
        assert_eq!(lookup(&directory, &internal, [10, 4, 0, 9], "secret", 0), Some(vec!["10.4.0.2".into()]));
    }

    #[test]
    fn ptr_names_container_and_network_and_other_types_get_no_data() {
        let (state, [red, ..]) = sample();
        let directory = Directory::from_state(&state, &[]);
        let zones = || directory.zones_for(&red.id, [10, 1, 0, 2].into());
        let ptr = resolve(zones(), &query("3.0.1.10.in-addr.arpa.", RecordType::PTR), 0).unwrap();
        assert_eq!(ptr.answers[0].data.to_string(), "web2.red.");
        assert!(resolve(zones(), &query("9.9.1.10.in-addr.arpa.", RecordType::PTR), 0).is_none());
        let aaaa = resolve(zones(), &query("web.", RecordType::AAAA), 0).unwrap();
        assert_eq!(aaaa.metadata.response_code, ResponseCode::NoError);
        assert!(aaaa.answers.is_empty());
        assert!(aaaa.metadata.authoritative && aaaa.metadata.recursion_desired);
    }

    #[test]
    fn dual_stack_names_answer_aaaa_and_ip6_arpa_and_names_without_ipv6_have_no_data() {
        let mut dual = network("dual", 5, false);
        dual.ipv6 =
            Some(crate::ipam::AddressPlanV6::new("fd00:5::/64".parse().unwrap(), None, None).unwrap());
        let (web, mut endpoints) = container("web6", &[(&dual, 2, &["api6"])]);
        endpoints[0].ip6 = Some("fd00:5::2".parse().unwrap());
        let only4 = container("only4", &[(&dual, 3, &[])]);
        let state = state_of(&[&dual], vec![(web, endpoints), only4]);
        let directory = Directory::from_state(&state, &[]);
        let zones = || directory.zones_for(&dual.id, [10, 5, 0, 3].into());
        let answers = |name: &str, kind| -> Vec<String> {
            let response = resolve(zones(), &query(name, kind), 0).unwrap();
            assert_eq!(response.metadata.response_code, ResponseCode::NoError, "{name} {kind}");
            response.answers.iter().map(|r| r.data.to_string()).collect()
        };
        assert_eq!(answers("web6.", RecordType::AAAA), ["fd00:5::2"]);
        assert_eq!(answers("api6.", RecordType::AAAA), ["fd00:5::2"], "aliases answer AAAA too");
        assert_eq!(answers("web6.", RecordType::A), ["10.5.0.2"], "A answers IPv4 only");
        assert_eq!(answers("only4.", RecordType::AAAA), Vec::<String>::new(), "no IPv6: NODATA");
        let arpa = "2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.5.0.0.0.0.0.d.f.ip6.arpa.";
        assert_eq!(answers(arpa, RecordType::PTR), ["web6.dual."]);
        assert!(resolve(zones(), &query(&arpa.replacen('2', "9", 1), RecordType::PTR), 0).is_none());
        // Gone with its endpoint: both families.
        let (mut state, mut directory) = (state, directory);
        let web_id = state.containers[0].id.clone();
        state.endpoints.retain(|e| e.owner.container_id() != Some(web_id.as_str()));
        directory.refresh(&state, &Owner::Container { id: web_id });
        let zones = || directory.zones_for(&dual.id, [10, 5, 0, 3].into());
        assert!(resolve(zones(), &query("web6.", RecordType::AAAA), 0).is_none());
        assert!(resolve(zones(), &query(arpa, RecordType::PTR), 0).is_none());
    }

    #[test]
    fn ipv6_only_names_answer_aaaa_and_a_with_no_data_and_the_resolver_listens_on_ipv6_only() {
        let mut only6 = network("only6", 6, false);
        only6.ipv6 =
            Some(crate::ipam::AddressPlanV6::new("fd00:6::/64".parse().unwrap(), None, None).unwrap());
        let (web, mut endpoints) = container("web", &[(&only6, 2, &[])]);
        (only6.subnet, only6.gateway) = (None, None);
        (endpoints[0].ip, endpoints[0].ip6) = (None, Some("fd00:6::2".parse().unwrap()));
        let state = state_of(&[&only6], vec![(web, endpoints)]);
        let directory = Directory::from_state(&state, &[]);
        let client: Ipv6Addr = "fd00:6::3".parse().unwrap();
        let zones = || directory.zones_for(&only6.id, client.into());
        let answers = |kind| -> Vec<String> {
            let response = resolve(zones(), &query("web.", kind), 0).expect("answered here, not upstream");
            assert_eq!(response.metadata.response_code, ResponseCode::NoError, "web {kind}");
            response.answers.iter().map(|r| r.data.to_string()).collect()
        };
        assert_eq!(answers(RecordType::AAAA), ["fd00:6::2"]);
        assert_eq!(answers(RecordType::A), Vec::<String>::new(), "no IPv4: NODATA, not a forward");
        assert_eq!(
            gateway_addresses(&only6),
            [IpAddr::V6("fd00:6::1".parse().unwrap())],
            "the resolver listens on the IPv6 gateway only"
        );
    }

    #[test]
    fn an_ipv6_client_sees_the_names_of_every_network_it_is_on() {
        let dual = |name: &str, third: u8| Network {
            ipv6: Some(
                crate::ipam::AddressPlanV6::new(format!("fd00:{third}::/64").parse().unwrap(), None, None)
                    .unwrap(),
            ),
            ..network(name, third, false)
        };
        let (a, b) = (dual("a6", 6), dual("b6", 7));
        let (both, mut on_both) = container("both", &[(&a, 2, &[]), (&b, 2, &[])]);
        on_both[0].ip6 = Some("fd00:6::2".parse().unwrap());
        on_both[1].ip6 = Some("fd00:7::2".parse().unwrap());
        let (only_b, mut on_b) = container("onlyb", &[(&b, 3, &[])]);
        on_b[0].ip6 = Some("fd00:7::3".parse().unwrap());
        let both_id = both.id.clone();
        let mut state = state_of(&[&a, &b], vec![(both, on_both), (only_b, on_b)]);
        let mut directory = Directory::from_state(&state, &[]);
        // Asked through a's resolver for a name of b only.
        let ask = |directory: &Directory, client: &str| {
            let packet = query("onlyb.", RecordType::AAAA).to_vec().unwrap();
            match directory.reply(&a.id, client.parse().unwrap(), &packet, Transport::Udp, 0) {
                Reply::Send(bytes) => {
                    let response = Message::from_vec(&bytes).unwrap();
                    response.answers.iter().map(|r| r.data.to_string()).collect::<Vec<_>>()
                }
                other => vec![format!("{other:?}")],
            }
        };
        assert_eq!(ask(&directory, "10.6.0.2"), ["fd00:7::3"], "over IPv4");
        assert_eq!(ask(&directory, "fd00:6::2"), ["fd00:7::3"], "over IPv6: b's names too");
        assert_eq!(ask(&directory, "::ffff:10.6.0.2"), ["fd00:7::3"], "IPv4 as a mapped IPv6 address");
        // Its views go with its endpoints, by both addresses.
        state.endpoints.retain(|e| e.owner.container_id() != Some(both_id.as_str()));
        directory.refresh(&state, &Owner::Container { id: both_id });
        assert!(directory.views.keys().all(|(net, _)| net == &b.id), "views left: {:?}", directory.views);
    }

    #[test]
    fn endpoints_of_other_owners_answer_by_the_names_they_were_attached_with() {
        let (mut state, [red, blue, ..]) = sample();
        // A runtime's pod (CNI) on red and blue, and one attached without names.
        let (_, mut pod) = container("unused", &[(&red, 7, &["web-0", "www"]), (&blue, 7, &[])]);
        let (_, mut nameless) = container("unused", &[(&red, 8, &[])]);
        for endpoint in &mut pod {
            endpoint.owner = Owner::Cni { container_id: "c0ffee".into() };
        }
        nameless[0].owner = Owner::Cni { container_id: "bead".into() };
        state.endpoints.extend(pod.into_iter().chain(nameless));
        let directory = Directory::from_state(&state, &[]);
        for name in ["web-0", "WWW", "web-0.red"] {
            assert_eq!(
                lookup(&directory, &red, [10, 1, 0, 2], name, 0),
                Some(vec!["10.1.0.7".into()]),
                "{name}"
            );
        }
        // The pod sees the names of both its networks; the names are red's only.
        assert_eq!(lookup(&directory, &red, [10, 1, 0, 7], "db", 0), Some(vec!["10.2.0.2".into()]));
        assert_eq!(lookup(&directory, &blue, [10, 2, 0, 2], "web-0", 0), None);
        let ptr = resolve(
            directory.zones_for(&red.id, [10, 1, 0, 2].into()),
            &query("7.0.1.10.in-addr.arpa.", RecordType::PTR),
            0,
        )
        .unwrap();
        assert_eq!(ptr.answers[0].data.to_string(), "web-0.red.");
        assert!(!directory.zones[&red.id].pointers.contains_key(&IpAddr::from([10, 1, 0, 8])));
    }

    /// The directory with each name's addresses sorted: changes applied one by one list
    /// shared names in another order than a build from scratch, and answers rotate anyway.
    fn sorted(mut directory: Directory) -> Directory {
        for zone in directory.zones.values_mut() {
            zone.names.values_mut().for_each(|addresses| addresses.sort());
        }
        directory
    }

    #[test]
    fn changes_applied_one_by_one_give_the_directory_a_build_from_scratch_gives() {
        let (mut state, [red, blue, ..]) = sample();
        let mut directory = Directory::from_state(&state, &[]);
        state.take_changes();
        // A container joins red and blue with an alias others have; web2 exits; both
        // leaves, its endpoints with it; web's endpoint on red goes (disconnect).
        let (joiner, endpoints) = container("joiner", &[(&red, 20, &["api"]), (&blue, 20, &[])]);
        state.containers.push(joiner);
        state.endpoints.extend(endpoints);
        let web2 = state.containers[1].id.clone();
        state.container_mut(&web2).unwrap().status = Status::Exited { code: Some(0) };
        let both = state.containers[3].id.clone();
        state.endpoints.retain(|e| e.owner.container_id() != Some(both.as_str()));
        state.containers.retain(|c| c.id != both);
        let web = state.containers[0].id.clone();
        state.endpoints.retain(|e| e.owner.container_id() != Some(web.as_str()));
        // A runtime's pod (CNI) joins red with a name; the one before it leaves.
        let (_, mut pod) = container("unused", &[(&red, 30, &["web-0"])]);
        pod[0].owner = Owner::Cni { container_id: "c0ffee".into() };
        state.endpoints.extend(pod);
        directory.apply(&state, &state.clone().take_changes());
        assert_eq!(sorted(Directory::from_state(&state, &[])), sorted(directory), "after the pod joined");
        let mut directory = Directory::from_state(&state, &[]);
        state.take_changes();
        state.endpoints.retain(|e| e.owner != Owner::Cni { container_id: "c0ffee".into() });
        directory.apply(&state, &state.clone().take_changes());
        assert_eq!(sorted(directory), sorted(Directory::from_state(&state, &[])));
    }

    #[test]
    fn udp_answers_too_large_for_the_client_are_truncated() {
        let red = network("red", 1, false);
        let many = (2..60).map(|i| container(&format!("w{i}"), &[(&red, i, &["pool"])])).collect();
        let state = state_of(&[&red], many);
        let directory = Directory::from_state(&state, &[]);
        let request = query("pool.", RecordType::A);
        let response = resolve(directory.zones_for(&red.id, [10, 1, 0, 2].into()), &request, 0).unwrap();
        assert_eq!(response.answers.len(), 58);
        let udp = Message::from_vec(&encode(&response, &request, Transport::Udp).unwrap()).unwrap();
        assert!(udp.metadata.truncation && udp.answers.is_empty());
        let tcp = Message::from_vec(&encode(&response, &request, Transport::Tcp).unwrap()).unwrap();
        assert!(!tcp.metadata.truncation);
        assert_eq!(tcp.answers.len(), 58);
    }

    #[test]
    fn unreadable_queries_get_formerr_and_responses_get_nothing() {
        let (state, [red, ..]) = sample();
        let directory = Directory::from_state(&state, &[]);
        let client = IpAddr::from([10, 1, 0, 2]);
        // A header whose question's name points at itself.
        let mut looped = vec![0xab, 0xcd, 0x01, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12, 0, 1, 0, 1];
        let Reply::Send(formerr) = directory.reply(&red.id, client, &looped, Transport::Udp, 0) else {
            panic!("no FORMERR to an unreadable query")
        };
        let formerr = Message::from_vec(&formerr).unwrap();
        assert_eq!((formerr.metadata.id, formerr.metadata.response_code), (0xabcd, ResponseCode::FormErr));
        looped[2] |= 0x80;
        assert!(matches!(directory.reply(&red.id, client, &looped, Transport::Udp, 0), Reply::Nothing));
        let mut response = query("web.", RecordType::A);
        response.metadata.message_type = MessageType::Response;
        let response = response.to_vec().unwrap();
        assert!(matches!(directory.reply(&red.id, client, &response, Transport::Udp, 0), Reply::Nothing));
        assert!(matches!(directory.reply(&red.id, client, &[0xab], Transport::Tcp, 0), Reply::Nothing));
    }

    #[tokio::test]
    async fn a_client_gets_its_share_and_no_more_and_gets_it_back_when_done() {
        let share = Share::new(3, 2);
        let (a, b): (IpAddr, IpAddr) = ("10.1.0.2".parse().unwrap(), "10.1.0.3".parse().unwrap());
        let first = share.take(a).await.expect("a's first");
        let _second = share.take(a).await.expect("a's second");
        assert!(share.take(a).await.is_none(), "a over its share");
        let _other = share.take(b).await.expect("b has room while a is at its share");
        drop(first);
        assert!(share.take(a).await.is_some(), "a's unit came back");
        assert_eq!(share.held.lock().unwrap().len(), 2);
    }

    #[test]
    fn upstreams_come_from_resolv_conf() {
        let conf = "# generated\nsearch example.com\nnameserver 192.0.2.53\nnameserver  2001:db8::53 \noptions ndots:1\n";
        assert_eq!(
            host_upstreams(conf),
            ["192.0.2.53".parse::<IpAddr>().unwrap(), "2001:db8::53".parse().unwrap()]
        );
    }
}
