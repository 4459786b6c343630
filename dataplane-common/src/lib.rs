//! Map keys and values shared by the kernel programs and the daemon.
//!
//! Every type is `#[repr(C)]` with explicit padding so that both sides agree on the
//! layout byte for byte; addresses carry their family so that IPv6 can join without a
//! change of layout. Nothing here may depend on `std`.
#![no_std]

/// Address family numbers as the kernel spells them.
pub const AF_INET: u8 = 2;
pub const AF_INET6: u8 = 10;

/// An IPv4 or IPv6 address in network byte order; IPv4 uses the first 4 bytes of `addr`
/// and leaves the rest zero, so that equal addresses are equal keys. Aligned to 4 bytes
/// (every type holding one has it at such an offset already): the BPF target cannot
/// access memory unaligned, so byte alignment made each copy and zeroing byte by byte.
#[repr(C, align(4))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IpAddress {
    pub family: u8,
    pub _pad: [u8; 3],
    pub addr: [u8; 16],
}

impl IpAddress {
    #[inline(always)]
    pub const fn v4(octets: [u8; 4]) -> Self {
        let mut addr = [0u8; 16];
        addr[0] = octets[0];
        addr[1] = octets[1];
        addr[2] = octets[2];
        addr[3] = octets[3];
        Self { family: AF_INET, _pad: [0; 3], addr }
    }

    #[inline(always)]
    pub const fn v6(addr: [u8; 16]) -> Self {
        Self { family: AF_INET6, _pad: [0; 3], addr }
    }
}

/// Key of the endpoint table: an address inside one network.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EndpointKey {
    pub network: u32,
    pub ip: IpAddress,
}

/// Where an endpoint lives: its host-side veth and the MAC of its interface in the
/// container; and its slot of `ENDPOINT_COUNTERS`, counted there as the entry is read.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub host_ifindex: u32,
    pub mac: [u8; 6],
    pub counter_slot: u16,
}

/// What one endpoint sent and what the programs delivered to it (per CPU, summed by the
/// daemon): `received` counts frames forwarded from its network's containers, replies
/// to its masqueraded flows and its published ports; what the bridge hands it (ARP,
/// the host's own traffic) is the kernel's and not counted.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EndpointCounters {
    pub sent: Counter,
    pub received: Counter,
}

impl EndpointCounters {
    /// Slots of `ENDPOINT_COUNTERS`: slot 0 belongs to no endpoint (entries written
    /// before slots, or past the last slot, count there, and nobody reads it).
    pub const SLOTS: u32 = 16_384;
}

/// An endpoint of an overlay network on another host (key: `EndpointKey`), reached
/// through the host's VXLAN device.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RemoteEndpoint {
    /// The other host's underlay address as `bpf_tunnel_key`'s `remote_ipv6` union holds
    /// it (`tunnel_host_v4`, `tunnel_host_v6`): of the family of the host's underlay
    /// (`TunnelConfig::IPV6_UNDERLAY`).
    pub host: [u32; 4],
    /// The network's VXLAN network identifier.
    pub vni: u32,
    /// The MAC of the endpoint's interface in its container.
    pub mac: [u8; 6],
    pub _pad: [u8; 2],
}

/// An IPv4 underlay address as `bpf_tunnel_key` takes it: in host order in the first
/// word (`remote_ipv4`), the others zero, as `bpf_skb_get_tunnel_key` leaves them.
pub const fn tunnel_host_v4(ip: [u8; 4]) -> [u32; 4] {
    [u32::from_be_bytes(ip), 0, 0, 0]
}

/// An IPv6 underlay address as `bpf_tunnel_key` takes it: its bytes in order
/// (`remote_ipv6`, copied as they are into the outer header).
pub const fn tunnel_host_v6(ip: [u8; 16]) -> [u32; 4] {
    [
        u32::from_ne_bytes([ip[0], ip[1], ip[2], ip[3]]),
        u32::from_ne_bytes([ip[4], ip[5], ip[6], ip[7]]),
        u32::from_ne_bytes([ip[8], ip[9], ip[10], ip[11]]),
        u32::from_ne_bytes([ip[12], ip[13], ip[14], ip[15]]),
    ]
}

/// The host's VXLAN device (`TUNNEL_CONFIG[0]`); ifindex 0: none, overlay traffic stays
/// on the host.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TunnelConfig {
    pub ifindex: u32,
    /// `IPV6_UNDERLAY`, or 0: the hosts are reached over IPv4.
    pub flags: u32,
}

impl TunnelConfig {
    /// The hosts are reached over IPv6: tunnel keys are IPv6 ones (`BPF_F_TUNINFO_IPV6`)
    /// with the outer UDP checksum computed, and one host's daemon uses one family.
    pub const IPV6_UNDERLAY: u32 = 1;
}

/// The link-local address a Linux interface makes for itself from `mac` (modified
/// EUI-64, RFC 4291): the one the daemon gives a container's interface on an IPv6
/// network, and the only link-local address its neighbour advertisements may claim.
pub const fn eui64_link_local(mac: [u8; 6]) -> [u8; 16] {
    let [a, b, c, d, e, f] = mac;
    [0xfe, 0x80, 0, 0, 0, 0, 0, 0, a ^ 0x02, b, c, 0xff, 0xfe, d, e, f]
}

/// The `i`th 64-bit half (0 or 1) of a 16-byte address, as stored (native order): an
/// address compared as two words, not sixteen bytes.
#[inline(always)]
pub fn half16(a: &[u8; 16], i: usize) -> u64 {
    // SAFETY: `i` < 2 (asserted in debug builds; every caller passes a constant), so the
    // eight bytes read lie inside `a`; an unaligned read has no alignment requirement.
    debug_assert!(i < 2);
    unsafe { a.as_ptr().add(8 * i).cast::<u64>().read_unaligned() }
}

/// Per host-side interface: which network the container behind it belongs to, that
/// network's IPv4 and IPv6 subnets (network order; a zero mask when unknown), where all
/// of its endpoints lie: traffic leaving them needs no endpoint lookup; and the container's
/// own addresses and MAC on it, the only sources its frames may carry.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InterfaceConfig {
    pub network: u32,
    pub flags: u32,
    pub v4_subnet: [u8; 4],
    pub v4_mask: [u8; 4],
    /// The endpoint's IPv4 address (network order).
    pub v4_addr: [u8; 4],
    /// The MAC of the endpoint's interface inside the container.
    pub mac: [u8; 6],
    /// The endpoint's slot of `ENDPOINT_COUNTERS` (`EndpointCounters`).
    pub counter_slot: u16,
    /// The endpoint's IPv6 address (network order); all zero on a network without IPv6,
    /// where the container may send IPv6 from link-local and unspecified sources only.
    pub v6_addr: [u8; 16],
    /// The network's IPv6 subnet and its mask (network order), as `v4_subnet` and
    /// `v4_mask`: a full mask on `::` on a network without IPv6, a zero mask when unknown.
    pub v6_subnet: [u8; 16],
    pub v6_mask: [u8; 16],
}

impl InterfaceConfig {
    /// Inter-container communication is disabled on this network (`--opt icc=false`).
    pub const ICC_DISABLED: u32 = 1;
    /// The network is `--internal`: nothing leaves the host.
    pub const INTERNAL: u32 = 2;
    /// The container publishes ports: its replies may need reverse DNAT.
    pub const PUBLISHES: u32 = 4;
    /// The container's end of the veth takes XDP frames (its NAPI runs): the uplink's XDP
    /// program may redirect into it.
    pub const XDP_TARGET: u32 = 8;
    /// The network routes its IPv6 out of the uplink untranslated
    /// (`gateway_mode_ipv6=routed`): the container's own address is the source.
    pub const ROUTED_V6: u32 = 16;
    /// The network routes its IPv4 out of the uplink untranslated
    /// (`gateway_mode_ipv4=routed`): the container's own address is the source.
    pub const ROUTED_V4: u32 = 32;
    /// The network's IPv6 is unprotected (`gateway_mode_ipv6=nat-unprotected`): its
    /// container's ICMPv6 that no flow tracks (echo replies to the outside's pings, errors)
    /// leaves untranslated, as from a routed network.
    pub const UNPROTECTED_V6: u32 = 64;
    /// As `UNPROTECTED_V6`, for IPv4 (`gateway_mode_ipv4=nat-unprotected`).
    pub const UNPROTECTED_V4: u32 = 128;
    /// IPv6 whose untracked ICMPv6 leaves as it is: routed or unprotected.
    pub const ICMP_OUT_V6: u32 = Self::ROUTED_V6 | Self::UNPROTECTED_V6;
    /// The network's IPv4 is isolated (`gateway_mode_ipv4=isolated`, an `--internal`
    /// network's): the container's IPv4 reaches its peers, and of the host only the
    /// resolver (TCP and UDP port 53 of its network's gateway address); nothing else.
    pub const ISOLATED_V4: u32 = 256;
    /// As `ISOLATED_V4`, for IPv6 (`gateway_mode_ipv6=isolated`); neighbour discovery with
    /// the gateway passes too, which the resolver's address needs.
    pub const ISOLATED_V6: u32 = 512;
    /// Interfaces with an ifindex below this live in `INTERFACES_BY_INDEX`, an array read
    /// at the cost of an index on every packet; the others in the `INTERFACES` hash.
    pub const INDEX_LIMIT: u32 = 65_536;
    /// An array slot without an interface (networks are numbered from 1).
    pub const NONE: InterfaceConfig = InterfaceConfig {
        network: 0,
        flags: 0,
        v4_subnet: [0; 4],
        v4_mask: [0; 4],
        v4_addr: [0; 4],
        mac: [0; 6],
        counter_slot: 0,
        v6_addr: [0; 16],
        v6_subnet: [0; 16],
        v6_mask: [0; 16],
    };

    /// Whether `addr` may be an endpoint of this interface's network.
    #[inline(always)]
    pub fn may_hold_v4(&self, addr: [u8; 4]) -> bool {
        u32::from_ne_bytes(addr) & u32::from_ne_bytes(self.v4_mask) == u32::from_ne_bytes(self.v4_subnet)
    }

    /// As `may_hold_v4`, for IPv6: two 64-bit halves, without a branch per half.
    #[inline(always)]
    pub fn may_hold_v6(&self, addr: &[u8; 16]) -> bool {
        let mut outside = 0;
        for i in 0..2 {
            outside |= (half16(addr, i) & half16(&self.v6_mask, i)) ^ half16(&self.v6_subnet, i);
        }
        outside == 0
    }
}

/// IP protocol numbers the NAT understands.
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ICMPV6: u8 = 58;

/// A connection as seen in one direction. Ports are in network byte order, as on the
/// wire; for ICMP echo the identifier stands in the port of the side that chose it
/// (`src_port` of a request, `dst_port` of a reply) and the other port is 0.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub src: IpAddress,
    pub dst: IpAddress,
    pub src_port: u16,
    pub dst_port: u16,
    pub proto: u8,
    pub _pad: [u8; 3],
}

/// Connection-tracking states of a tracked flow.
pub mod ct_state {
    /// Masquerade: seen from the container only, no reply yet. Published ports: not
    /// confirmed yet (in DNAT_NEW), answered or not.
    pub const NEW: u8 = 0;
    /// Masquerade: a reply came back (the container's next packet confirms the flow,
    /// SNAT_NEW to SNAT_CT). Published ports: confirmed (in DNAT_CT): the client
    /// acknowledged the container's answer.
    pub const ESTABLISHED: u8 = 1;
    /// A FIN was seen in either direction.
    pub const CLOSING: u8 = 2;
    /// A RST was seen in either direction.
    pub const CLOSED: u8 = 3;
}

/// The next hop out of the uplink as a flow last found it: the MACs to send with, and
/// when the FIB said so. Established flows keep it in their conntrack entry, so that their
/// packets skip the subnet trie and the route lookup; `checked_ns` 0 means unknown.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NextHop {
    pub dmac: [u8; 6],
    pub smac: [u8; 6],
    pub _pad: [u8; 4],
    pub checked_ns: u64,
}

impl NextHop {
    /// How long a flow trusts its next hop before asking the FIB (and the subnet trie)
    /// again: route, neighbour and network changes show within this time.
    pub const TRUSTED_NS: u64 = 1_000_000_000;

    /// The MACs (destination, source), if known.
    #[inline(always)]
    pub fn macs(&self) -> Option<([u8; 6], [u8; 6])> {
        (self.checked_ns != 0).then_some((self.dmac, self.smac))
    }

    /// The MACs, if the next hop was checked less than `TRUSTED_NS` before `now_ns`.
    #[inline(always)]
    pub fn fresh(&self, now_ns: u64) -> Option<([u8; 6], [u8; 6])> {
        self.macs().filter(|_| now_ns.wrapping_sub(self.checked_ns) < Self::TRUSTED_NS)
    }
}

/// Value of the masquerade conntrack tables (SNAT_NEW, then SNAT_CT once confirmed),
/// keyed by the flow as the container sent it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnatEntry {
    /// The source the flow has outside: the uplink address and the port chosen for it.
    pub nat_addr: IpAddress,
    pub nat_port: u16,
    pub state: u8,
    pub _pad: u8,
    pub host_ifindex: u32,
    pub _pad2: [u8; 4],
    pub next_hop: NextHop,
    /// CLOCK_MONOTONIC_COARSE nanoseconds (bpf_ktime_get_coarse_ns).
    pub created_ns: u64,
    pub last_seen_ns: u64,
}

/// Value of the reverse tables (SNAT_REV_NEW, then SNAT_REV), keyed by the flow as
/// replies arrive on the uplink: where to send them back.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RevSnatEntry {
    pub addr: IpAddress,
    pub port: u16,
    pub _pad: [u8; 2],
    pub host_ifindex: u32,
    pub mac: [u8; 6],
    pub _pad2: [u8; 6],
    /// When a reply last updated the flow's `SnatEntry` (0: never). Replies update it at
    /// most once per `RevSnatEntry::TOUCH_NS`, and whenever they change its state, which
    /// spares the others a second lookup: expiry takes tens of seconds anyway.
    pub touched_ns: u64,
}

impl RevSnatEntry {
    pub const TOUCH_NS: u64 = 1_000_000_000;
}

/// A published host port: the address it is published on (0.0.0.0 for every address of
/// the uplink), the port in network byte order, and the protocol.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PublishKey {
    pub addr: IpAddress,
    pub port: u16,
    pub proto: u8,
    pub _pad: u8,
}

/// The container behind a published port.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backend {
    pub addr: IpAddress,
    /// Network byte order.
    pub port: u16,
    /// The firewall rule set that applies to traffic from the uplink for this port; 0:
    /// no rule applies, and the firewall is not asked.
    pub rule_set: u16,
    pub host_ifindex: u32,
    pub mac: [u8; 6],
    /// `Backend::HOST_ONLY`, or 0.
    pub flags: u8,
    pub _pad: u8,
}

impl Backend {
    /// Published on an address the host holds only on loopback (127.0.0.1, say): for the
    /// host's own processes only, never for frames from the uplink or from containers.
    pub const HOST_ONLY: u8 = 1;
}

/// Value of the DNAT conntrack tables (DNAT_NEW, then DNAT_CT once confirmed), keyed by
/// the flow as the container answers it (container address and port to the client's):
/// what the client originally addressed, and, for a client that is itself a container
/// (hairpin), where it lives.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DnatEntry {
    pub host_addr: IpAddress,
    /// Network byte order.
    pub host_port: u16,
    pub state: u8,
    /// `DnatEntry::SELF`, `ANSWERED`, `HANDSHAKE`, or 0.
    pub flags: u8,
    /// The client container's host-side veth, 0 when the client is outside.
    pub peer_ifindex: u32,
    pub peer_mac: [u8; 6],
    pub _pad2: [u8; 2],
    /// An unconfirmed TCP flow: the sequence number (host order) the client's next ACK
    /// must acknowledge to confirm it, from the container's last answer. Meaningless in
    /// DNAT_CT (where an earlier version left it 0).
    pub expected_ack: u32,
    pub created_ns: u64,
    pub last_seen_ns: u64,
    /// Out of the uplink, for replies to a client outside.
    pub next_hop: NextHop,
}

impl DnatEntry {
    /// The client is the published container itself, reaching its port through the host:
    /// it sees its gateway as the client, and its replies go back to its own address.
    pub const SELF: u8 = 1;
    /// The container answered the unconfirmed flow.
    pub const ANSWERED: u8 = 2;
    /// Its last answer was a SYN-ACK: the client's ACK must acknowledge exactly
    /// `expected_ack` (otherwise anything up to `ACK_WINDOW` past it).
    pub const HANDSHAKE: u8 = 4;
    /// How far past `expected_ack` a client's ACK may go, after an answer with data (a
    /// flow tracked again in mid-stream): one blind guess in 16,384 falls inside.
    pub const ACK_WINDOW: u32 = 1 << 18;
}

/// Settings of the socket hooks that let host processes reach published ports.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostConfig {
    /// The daemon's network namespace (SO_NETNS_COOKIE): sockets of any other namespace
    /// in the hooked cgroup are left alone. 0: hooks off.
    pub netns_cookie: u64,
}

/// A UDP socket's view of a published port it sent to: socket cookie and the container
/// address it was sent to instead.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SockRevKey {
    pub cookie: u64,
    pub addr: [u8; 4],
    /// Network byte order.
    pub port: u16,
    pub _pad: [u8; 2],
}

/// What that socket addressed: replies are shown as coming from there.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SockRevValue {
    pub addr: [u8; 4],
    /// Network byte order.
    pub port: u16,
    pub _pad: [u8; 2],
}

/// `SockRevKey` of an IPv6 socket.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SockRevKey6 {
    pub cookie: u64,
    pub addr: [u8; 16],
    /// Network byte order.
    pub port: u16,
    pub _pad: [u8; 6],
}

/// `SockRevValue` of an IPv6 socket.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SockRevValue6 {
    pub addr: [u8; 16],
    /// Network byte order.
    pub port: u16,
    pub _pad: [u8; 2],
}

/// Outbound NAT settings; `uplink_ifindex` 0 means no uplink, hence no NAT.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NatConfig {
    pub uplink_ifindex: u32,
    /// Source ports for masquerading, host byte order, inclusive; chosen outside the
    /// host's ip_local_port_range so that they never collide with its own sockets.
    pub port_min: u16,
    pub port_max: u16,
    /// The uplink's IPv4 address, network byte order.
    pub addr: [u8; 4],
    /// `NatConfig::UPLINK_VETH` and `NatConfig::IPV6`, or 0.
    pub flags: u32,
    /// The uplink's global IPv6 address (NAT66), meaningful with `NatConfig::IPV6`.
    pub addr6: [u8; 16],
}

impl NatConfig {
    /// The uplink is a veth: what leaves by it is handed straight into its peer's
    /// namespace (bpf_redirect_peer), as container traffic is, instead of queueing on the
    /// uplink's transmit path and the peer's backlog.
    pub const UPLINK_VETH: u32 = 1;
    /// The uplink has a global IPv6 address, `addr6`: IPv6 leaving the host is
    /// masqueraded to it.
    pub const IPV6: u32 = 2;
}

/// Data of the subnet trie key. The prefix length counts the 32 bits of `family` first,
/// so one trie holds both families without one matching the other.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SubnetKey {
    pub family: u32,
    pub addr: [u8; 16],
}

impl SubnetKey {
    /// Bits of the trie key taken by `family`, to add to the subnet's prefix length.
    pub const FAMILY_BITS: u32 = 32;
}

/// The network a subnet belongs to, and its gateway (a host address, reachable from every
/// network as on Docker, since traffic to it is delivered by the host, not forwarded).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SubnetInfo {
    pub network: u32,
    pub gateway: IpAddress,
    /// `SubnetInfo::ROUTED`, `SubnetInfo::UNPROTECTED`, `SubnetInfo::ISOLATED`, or 0.
    pub flags: u32,
}

impl SubnetInfo {
    /// The subnet is routed (Docker's `gateway_mode_ipv4=routed` or
    /// `gateway_mode_ipv6=routed`, for the subnet's family): from outside, its containers'
    /// own addresses are reachable by route, on their published ports, for replies of
    /// their flows, and for ICMP. Other subnets' container addresses are not reachable from
    /// outside at all.
    pub const ROUTED: u32 = 1;
    /// The subnet is unprotected (Docker's `gateway_mode_ipv4=nat-unprotected` or
    /// `gateway_mode_ipv6=nat-unprotected`): masqueraded going out as in NAT mode, but from
    /// outside, every port of its containers' own addresses is reachable by route, and ICMP.
    pub const UNPROTECTED: u32 = 2;
    /// Either mode that lets the outside reach the subnet's container addresses by route.
    pub const REACHABLE: u32 = Self::ROUTED | Self::UNPROTECTED;
    /// The subnet is isolated (`gateway_mode_ipv4=isolated` or `_ipv6`): of what the host
    /// sends into its bridge, only the resolver's answers and neighbour discovery reach its
    /// containers (`into_isolated`).
    pub const ISOLATED: u32 = 4;
}

/// One packet/byte counter; the map holding it is per CPU, summed by the daemon.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

/// The paths a packet can take through the programs; the index into the counter map.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    /// Redirected by eBPF straight into the destination container.
    Forwarded = 0,
    /// Dropped: destination on another network.
    DroppedIsolation = 1,
    /// Dropped: same network, but inter-container communication is disabled.
    DroppedIcc = 2,
    /// IP to an address the fast path does not own (gateway, host, outside): kernel path.
    SlowPathIp = 3,
    /// ARP, broadcast, multicast (IPv6 neighbour discovery among it) and other frames that
    /// are not unicast IP: kernel path.
    SlowPathOther = 4,
    /// Too short or malformed to parse: left to the kernel, which drops what is invalid.
    SlowPathMalformed = 5,
    /// Arrived on an interface the daemon has not configured.
    SlowPathUnmanaged = 6,
    /// Left through the uplink with the uplink's address as source (masquerade).
    Masqueraded = 7,
    /// A reply to a masqueraded flow, sent back into its container.
    ReverseNat = 8,
    /// Dropped: an `--internal` network tried to leave the host.
    DroppedInternal = 9,
    /// Dropped: no masquerade port was free for this destination.
    DroppedNatExhausted = 10,
    /// Arrived on the uplink for the host itself: kernel path.
    UplinkToHost = 11,
    /// Arrived on the uplink for a published port: sent to its container.
    Published = 12,
    /// A container's reply on a published port, sent back out with the host's address.
    PublishedReply = 13,
    /// Dropped: arrived on the uplink for a container address that publishes nothing there.
    DroppedUnpublished = 14,
    /// Arrived on the uplink for a published port and sent to its container by XDP, before
    /// the host built an skb for it.
    PublishedXdp = 15,
    /// Dropped: arrived on the uplink for 127.0.0.0/8, or for a port published on an
    /// address the host holds on loopback only.
    DroppedMartian = 16,
    /// Dropped: a container sent IPv4 from an address that is not its own.
    DroppedSpoofedIp = 17,
    /// Dropped: a container sent a frame from a MAC that is not its own.
    DroppedSpoofedMac = 18,
    /// Dropped: a container sent ARP claiming an address or MAC that is not its own.
    DroppedSpoofedArp = 19,
    /// Dropped: a firewall rule denied traffic from the uplink to a published port.
    DroppedFirewall = 20,
    /// Dropped: a container's packet for outside whose headers do not hold together
    /// (lengths, header checksum, TCP flags), which would otherwise leave untranslated.
    DroppedMalformed = 21,
    /// Dropped: a container sent an ICMPv6 router advertisement or redirect, which only
    /// the gateway may send (or one hidden behind more extension headers than are read).
    DroppedRouterMessage = 22,
    /// Dropped: a container sent IPv6 from an address that is not its own (nor link-local,
    /// nor unspecified).
    DroppedSpoofedIpv6 = 23,
    /// Dropped: a container sent a neighbour advertisement for an address not its own.
    DroppedSpoofedNeighbour = 24,
    /// IPv6 whose extension headers could not be walked to the upper layer within the
    /// bound read: kernel path.
    SlowPathIpv6Headers = 25,
    /// Sent to an endpoint on another host through the VXLAN device.
    Tunnelled = 26,
    /// Arrived from the VXLAN device and sent into its container.
    FromTunnel = 27,
    /// Dropped: arrived from the VXLAN device with a VNI of no overlay network here, or
    /// not from a known endpoint of that network on the host that sent it, or for no
    /// endpoint of it on this host.
    DroppedTunnel = 28,
    /// ARP or a neighbour solicitation for an endpoint on another host, answered from the
    /// remote endpoint table.
    ArpAnswered = 29,
    /// Left through the uplink untranslated, with the container's own address (a network
    /// in routed mode).
    Routed = 30,
    /// Arrived on the uplink for a container of a routed network (a reply of its flow, or
    /// ICMPv6): sent into it untranslated.
    RoutedIn = 31,
    /// Dropped: ICMP from a container of a NAT network, bound out of the uplink, that no
    /// tracked flow explains (an error quoting no masqueraded or published flow, an echo
    /// reply): it would leave with the container's own address.
    DroppedUntrackedIcmp = 32,
    /// Dropped: a container of an isolated network (`gateway_mode_ipv4=isolated` or
    /// `_ipv6`) sent to something other than its peers and its network's resolver.
    DroppedIsolated = 33,
    /// Dropped: IPv6 whose flow its extension headers keep the programs from telling or
    /// translating: from the uplink for a container, a fragment after the first (no ports
    /// in it), or a chain longer than is read or cut short; from a NAT66 network's container
    /// bound out of the uplink, anything behind extension headers, which NAT66 does not
    /// translate (it would leave with the container's own address).
    DroppedIpv6Headers = 34,
}

impl Path {
    pub const COUNT: u32 = 35;
    pub const ALL: [Path; Self::COUNT as usize] = [
        Path::Forwarded,
        Path::DroppedIsolation,
        Path::DroppedIcc,
        Path::SlowPathIp,
        Path::SlowPathOther,
        Path::SlowPathMalformed,
        Path::SlowPathUnmanaged,
        Path::Masqueraded,
        Path::ReverseNat,
        Path::DroppedInternal,
        Path::DroppedNatExhausted,
        Path::UplinkToHost,
        Path::Published,
        Path::PublishedReply,
        Path::DroppedUnpublished,
        Path::PublishedXdp,
        Path::DroppedMartian,
        Path::DroppedSpoofedIp,
        Path::DroppedSpoofedMac,
        Path::DroppedSpoofedArp,
        Path::DroppedFirewall,
        Path::DroppedMalformed,
        Path::DroppedRouterMessage,
        Path::DroppedSpoofedIpv6,
        Path::DroppedSpoofedNeighbour,
        Path::SlowPathIpv6Headers,
        Path::Tunnelled,
        Path::FromTunnel,
        Path::DroppedTunnel,
        Path::ArpAnswered,
        Path::Routed,
        Path::RoutedIn,
        Path::DroppedUntrackedIcmp,
        Path::DroppedIsolated,
        Path::DroppedIpv6Headers,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Path::Forwarded => "forwarded",
            Path::DroppedIsolation => "dropped_isolation",
            Path::DroppedIcc => "dropped_icc",
            Path::SlowPathIp => "slow_path_ip",
            Path::SlowPathOther => "slow_path_other",
            Path::SlowPathMalformed => "slow_path_malformed",
            Path::SlowPathUnmanaged => "slow_path_unmanaged",
            Path::Masqueraded => "masqueraded",
            Path::ReverseNat => "reverse_nat",
            Path::DroppedInternal => "dropped_internal",
            Path::DroppedNatExhausted => "dropped_nat_exhausted",
            Path::UplinkToHost => "uplink_to_host",
            Path::Published => "published",
            Path::PublishedReply => "published_reply",
            Path::DroppedUnpublished => "dropped_unpublished",
            Path::PublishedXdp => "published_xdp",
            Path::DroppedMartian => "dropped_martian",
            Path::DroppedSpoofedIp => "dropped_spoofed_ip",
            Path::DroppedSpoofedMac => "dropped_spoofed_mac",
            Path::DroppedSpoofedArp => "dropped_spoofed_arp",
            Path::DroppedFirewall => "dropped_firewall",
            Path::DroppedMalformed => "dropped_malformed",
            Path::DroppedRouterMessage => "dropped_router_message",
            Path::DroppedSpoofedIpv6 => "dropped_spoofed_ipv6",
            Path::DroppedSpoofedNeighbour => "dropped_spoofed_neighbour",
            Path::SlowPathIpv6Headers => "slow_path_ipv6_headers",
            Path::Tunnelled => "tunnelled",
            Path::FromTunnel => "from_tunnel",
            Path::DroppedTunnel => "dropped_tunnel",
            Path::ArpAnswered => "arp_answered",
            Path::Routed => "routed",
            Path::RoutedIn => "routed_in",
            Path::DroppedUntrackedIcmp => "dropped_untracked_icmp",
            Path::DroppedIsolated => "dropped_isolated",
            Path::DroppedIpv6Headers => "dropped_ipv6_headers",
        }
    }
}

impl Path {
    /// Whether the programs delivered the packet themselves (into a container, or out of
    /// the uplink), rather than dropping it or leaving it to the kernel.
    #[inline(always)]
    pub const fn delivered(self) -> bool {
        matches!(
            self,
            Path::Forwarded
                | Path::Masqueraded
                | Path::ReverseNat
                | Path::Published
                | Path::PublishedReply
                | Path::PublishedXdp
                | Path::Tunnelled
                | Path::FromTunnel
                | Path::ArpAnswered
                | Path::Routed
                | Path::RoutedIn
        )
    }

    /// The path of a counter slot, `None` past the last.
    pub const fn from_index(index: u32) -> Option<Path> {
        if index < Self::COUNT { Some(Self::ALL[index as usize]) } else { None }
    }
}

/// Why a program dropped a packet: what `dataplane monitor` shows. Several paths may share
/// a reason (the spoofing checks differ in what was forged, not in why it is refused).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// The destination is on another network.
    Isolation = 1,
    /// Same network, but the network keeps its containers apart (`icc=false`).
    Icc = 2,
    /// An `--internal` network's container tried to leave the host.
    Internal = 3,
    /// A container sent from an IPv4 address not its own.
    SpoofedIp = 4,
    /// A container sent from a MAC not its own.
    SpoofedMac = 5,
    /// A container's ARP claimed an address or MAC not its own.
    SpoofedArp = 6,
    /// A container sent from an IPv6 address not its own.
    SpoofedIpv6 = 7,
    /// A container's neighbour advertisement claimed an address not its own.
    SpoofedNeighbour = 8,
    /// A firewall rule denied it (traffic from the uplink to a published port).
    Firewall = 9,
    /// From the uplink, for a container address that publishes nothing there (and, on a
    /// routed network, for no flow of the container's).
    Unpublished = 10,
    /// From the uplink with a source or destination that must not come from outside.
    Martian = 11,
    /// No masquerade port was free for its destination.
    NatExhausted = 12,
    /// Headers that do not hold together, which would have left untranslated.
    Malformed = 13,
    /// An ICMPv6 router advertisement or redirect from a container.
    RouterMessage = 14,
    /// From the VXLAN device, and not for an endpoint of its VNI's network here from one
    /// of that network's endpoints on the sending host.
    Tunnel = 15,
    /// ICMP from a NAT network's container about no tracked flow, which would have left
    /// with the container's own address.
    UntrackedIcmp = 16,
    /// A container of an isolated network sent to the host (but its resolver) or beyond.
    Isolated = 17,
    /// IPv6 whose flow its extension headers hide (a later fragment, a chain longer than is
    /// read or cut short), or that would have left a NAT66 network untranslated behind them.
    Ipv6Headers = 18,
}

impl DropReason {
    pub const ALL: [DropReason; 18] = [
        DropReason::Isolation,
        DropReason::Icc,
        DropReason::Internal,
        DropReason::SpoofedIp,
        DropReason::SpoofedMac,
        DropReason::SpoofedArp,
        DropReason::SpoofedIpv6,
        DropReason::SpoofedNeighbour,
        DropReason::Firewall,
        DropReason::Unpublished,
        DropReason::Martian,
        DropReason::NatExhausted,
        DropReason::Malformed,
        DropReason::RouterMessage,
        DropReason::Tunnel,
        DropReason::UntrackedIcmp,
        DropReason::Isolated,
        DropReason::Ipv6Headers,
    ];

    /// The reason a packet counted on `path` was dropped; `None` for paths that pass it on.
    #[inline(always)]
    pub const fn of(path: Path) -> Option<DropReason> {
        Some(match path {
            Path::DroppedIsolation => DropReason::Isolation,
            Path::DroppedIcc => DropReason::Icc,
            Path::DroppedInternal => DropReason::Internal,
            Path::DroppedSpoofedIp => DropReason::SpoofedIp,
            Path::DroppedSpoofedMac => DropReason::SpoofedMac,
            Path::DroppedSpoofedArp => DropReason::SpoofedArp,
            Path::DroppedSpoofedIpv6 => DropReason::SpoofedIpv6,
            Path::DroppedSpoofedNeighbour => DropReason::SpoofedNeighbour,
            Path::DroppedFirewall => DropReason::Firewall,
            Path::DroppedUnpublished => DropReason::Unpublished,
            Path::DroppedMartian => DropReason::Martian,
            Path::DroppedNatExhausted => DropReason::NatExhausted,
            Path::DroppedMalformed => DropReason::Malformed,
            Path::DroppedRouterMessage => DropReason::RouterMessage,
            Path::DroppedTunnel => DropReason::Tunnel,
            Path::DroppedUntrackedIcmp => DropReason::UntrackedIcmp,
            Path::DroppedIsolated => DropReason::Isolated,
            Path::DroppedIpv6Headers => DropReason::Ipv6Headers,
            Path::Forwarded
            | Path::SlowPathIp
            | Path::SlowPathOther
            | Path::SlowPathMalformed
            | Path::SlowPathUnmanaged
            | Path::Masqueraded
            | Path::ReverseNat
            | Path::UplinkToHost
            | Path::Published
            | Path::PublishedReply
            | Path::PublishedXdp
            | Path::SlowPathIpv6Headers
            | Path::Tunnelled
            | Path::FromTunnel
            | Path::ArpAnswered
            | Path::Routed
            | Path::RoutedIn => return None,
        })
    }

    pub const fn from_u8(value: u8) -> Option<DropReason> {
        if value >= 1 && value as usize <= Self::ALL.len() {
            Some(Self::ALL[value as usize - 1])
        } else {
            None
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            DropReason::Isolation => "isolation",
            DropReason::Icc => "icc",
            DropReason::Internal => "internal",
            DropReason::SpoofedIp => "spoofed_ip",
            DropReason::SpoofedMac => "spoofed_mac",
            DropReason::SpoofedArp => "spoofed_arp",
            DropReason::SpoofedIpv6 => "spoofed_ipv6",
            DropReason::SpoofedNeighbour => "spoofed_neighbour",
            DropReason::Firewall => "firewall",
            DropReason::Unpublished => "unpublished",
            DropReason::Martian => "martian",
            DropReason::NatExhausted => "nat_exhausted",
            DropReason::Malformed => "malformed",
            DropReason::RouterMessage => "router_message",
            DropReason::Tunnel => "tunnel",
            DropReason::UntrackedIcmp => "untracked_icmp",
            DropReason::Isolated => "isolated",
            DropReason::Ipv6Headers => "ipv6_headers",
        }
    }
}

/// The program that saw a monitored packet.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    FromContainer = 1,
    FromUplink = 2,
    UplinkXdp = 3,
    FromTunnel = 4,
    IntoIsolated = 5,
}

impl Hook {
    pub const fn from_u8(value: u8) -> Option<Hook> {
        match value {
            1 => Some(Hook::FromContainer),
            2 => Some(Hook::FromUplink),
            3 => Some(Hook::UplinkXdp),
            4 => Some(Hook::FromTunnel),
            5 => Some(Hook::IntoIsolated),
            _ => None,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            Hook::FromContainer => program_names::FROM_CONTAINER,
            Hook::FromUplink => program_names::FROM_UPLINK,
            Hook::UplinkXdp => program_names::UPLINK_XDP,
            Hook::FromTunnel => program_names::FROM_TUNNEL,
            Hook::IntoIsolated => program_names::INTO_ISOLATED,
        }
    }
}

/// One record of the monitor's ring buffer: a dropped packet, or the first packet of a
/// tracked flow with its translation. Built only while the daemon has a listener
/// (`MonitorEvent::LISTENING` in MONITOR_CONFIG).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MonitorEvent {
    /// `MonitorEvent::DROP` or `MonitorEvent::FLOW`.
    pub kind: u8,
    /// A `DropReason` for a drop; `MonitorEvent::MASQUERADE` or `PUBLISHED` for a flow;
    /// 0 for a trace.
    pub reason: u8,
    /// The `Path` the packet was counted on (a flow's: `Masqueraded` or a published one).
    pub path: u8,
    /// The `Hook` that saw it.
    pub hook: u8,
    /// The interface it arrived on.
    pub ifindex: u32,
    /// A drop's frame's EtherType (network order) and source MAC; zero for the others.
    pub ether_type: u16,
    pub src_mac: [u8; 6],
    /// The packet's addresses, ports and protocol as it arrived (family 0: neither IP nor
    /// ARP); for ARP (`ETHER_TYPE_ARP`), the sender's and the target's IPv4 addresses.
    pub flow: FlowKey,
    /// A flow's reply direction after translation, as the conntrack tables key it: the
    /// translated packet is its reverse. All zero for a drop.
    pub reply: FlowKey,
}

impl MonitorEvent {
    /// `ether_type` of ARP, in network order as the frame holds it.
    pub const ETHER_TYPE_ARP: u16 = 0x0806u16.to_be();
    pub const DROP: u8 = 1;
    pub const FLOW: u8 = 2;
    /// A packet the programs delivered themselves, while tracing: one per flow (as it
    /// left) per `TRACE_EVERY_NS`, as Cilium's monitor aggregates.
    pub const TRACE: u8 = 3;
    /// A flow's translation: the source became the uplink's (masquerade), or the
    /// destination a container's (a published port).
    pub const MASQUERADE: u8 = 1;
    pub const PUBLISHED: u8 = 2;
    /// MONITOR_CONFIG's bit: a client listens, the programs build events.
    pub const LISTENING: u32 = 1;
    /// MONITOR_CONFIG's bit: a client asked for trace events.
    pub const TRACING: u32 = 2;
    pub const TRACE_EVERY_NS: u64 = 1_000_000_000;
    /// The ring buffer's size unless the daemon is given `--monitor-ring-size`: 2,300 or
    /// so events between two reads of the daemon (every 100 ms).
    pub const RING_DEFAULT_SIZE: u32 = 256 * 1024;
}

/// Data of the firewall trie's key: a rule set, in network byte order so that its 32 bits
/// lead the prefix, then a source IPv4 address. A rule's source CIDR of length L is a
/// prefix of `RULE_SET_BITS + L` bits, so each rule set is a trie of its own.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FirewallKey {
    pub rule_set: u32,
    pub addr: [u8; 4],
}

impl FirewallKey {
    /// Bits of the trie key taken by `rule_set`, to add to a source's prefix length (in
    /// either family's trie).
    pub const RULE_SET_BITS: u32 = 32;
}

/// Data of the IPv6 firewall trie's key: as `FirewallKey`, with a source IPv6 address.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FirewallKey6 {
    pub rule_set: u32,
    pub addr: [u8; 16],
}

/// Data of the key of the firewall's trie for containers' own addresses
/// (`FIREWALL_DIRECT`): a container address of an unprotected network, a protocol, and a
/// port in network byte order, whose bits come last. A block of ports sharing their first
/// L bits is a prefix of `PORT_OFFSET_BITS + L` bits; the longest block holding a port
/// answers for it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FirewallDirectKey {
    pub addr: IpAddress,
    pub proto: u8,
    pub _pad: u8,
    pub port: u16,
}

impl FirewallDirectKey {
    /// Bits of the key before the port: the address (with its family) and the protocol.
    pub const PORT_OFFSET_BITS: u32 = 176;
    /// Entries of the trie: blocks of ports, summed over addresses and protocols.
    pub const TRIE_SIZE: u32 = 262_144;
}

/// What the firewall decides for the sources under one prefix of a rule set: the action of
/// the first rule (in the user's order) that covers them, and that rule's slot among the
/// hit counters.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FirewallVerdict {
    pub slot: u32,
    /// `FirewallVerdict::ALLOW` or `FirewallVerdict::DENY`.
    pub action: u8,
    pub _pad: [u8; 3],
}

impl FirewallVerdict {
    pub const ALLOW: u8 = 1;
    pub const DENY: u8 = 2;
    /// Firewall rules, and slots of the per-CPU hit counters.
    pub const MAX_RULES: u32 = 4096;
    /// Entries of the firewall trie: one per distinct source prefix of each rule set.
    pub const TRIE_SIZE: u32 = 262_144;
}

/// Names of the maps in the kernel object, used by the daemon to find and pin them.
/// The log target of the kernel programs' diagnostic messages (aya-log) in the daemon's
/// log: `RUST_LOG=dataplane::kernel=debug` shows them, and sets how much the programs
/// build at all.
pub const KERNEL_LOG_TARGET: &str = "dataplane::kernel";

pub mod map_names {
    pub const ENDPOINTS: &str = "ENDPOINTS";
    pub const INTERFACES: &str = "INTERFACES";
    pub const INTERFACES_BY_INDEX: &str = "INTERFACES_BY_INDEX";
    pub const SUBNETS: &str = "SUBNETS";
    pub const COUNTERS: &str = "COUNTERS";
    pub const ENDPOINT_COUNTERS: &str = "ENDPOINT_COUNTERS";
    pub const NAT_CONFIG: &str = "NAT_CONFIG";
    pub const UPLINK_V6: &str = "UPLINK_V6";
    /// The tail calls of `from_uplink` into `from_uplink_routed` (slot 0) and of
    /// `from_uplink_v6` into `from_uplink_routed_v6` (slot 1).
    pub const UPLINK_ROUTED: &str = "UPLINK_ROUTED";
    /// The tail call of `uplink_xdp` into `uplink_xdp_v6`.
    pub const UPLINK_XDP_V6: &str = "UPLINK_XDP_V6";
    pub const SNAT_CT: &str = "SNAT_CT";
    pub const SNAT_REV: &str = "SNAT_REV";
    /// Masqueraded flows not confirmed yet, apart from SNAT_CT and SNAT_REV so that they
    /// can only push out each other.
    pub const SNAT_NEW: &str = "SNAT_NEW";
    pub const SNAT_REV_NEW: &str = "SNAT_REV_NEW";
    pub const PUBLISHED: &str = "PUBLISHED";
    pub const DNAT_CT: &str = "DNAT_CT";
    /// Unconfirmed flows to published ports, apart from DNAT_CT so that they can only push
    /// out each other.
    pub const DNAT_NEW: &str = "DNAT_NEW";
    /// Not pinned: a cache of the programs in front of PUBLISHED and DNAT_CT.
    pub const INBOUND_FLOWS: &str = "INBOUND_FLOWS";
    pub const HOST_CONFIG: &str = "HOST_CONFIG";
    pub const CT_EVENTS: &str = "CT_EVENTS";
    pub const SOCK_REVNAT: &str = "SOCK_REVNAT";
    pub const SOCK_REVNAT6: &str = "SOCK_REVNAT6";
    pub const FIREWALL: &str = "FIREWALL";
    pub const FIREWALL6: &str = "FIREWALL6";
    pub const FIREWALL_HITS: &str = "FIREWALL_HITS";
    /// The rule sets of containers' own addresses on unprotected networks, by protocol
    /// and block of ports (`FirewallDirectKey` → rule set).
    pub const FIREWALL_DIRECT: &str = "FIREWALL_DIRECT";
    /// Not pinned: the monitor's ring buffer, its settings and its lost-event counter
    /// belong to the daemon that reads them.
    pub const MONITOR_EVENTS: &str = "MONITOR_EVENTS";
    pub const MONITOR_CONFIG: &str = "MONITOR_CONFIG";
    pub const MONITOR_LOST: &str = "MONITOR_LOST";
    // AYA_LOGS, aya-log's ring buffer of the kernel programs' diagnostic messages, is not
    // pinned either: each daemon reads the one of the programs it loaded.
    /// Overlay endpoints on other hosts (`EndpointKey` → `RemoteEndpoint`).
    pub const REMOTE_ENDPOINTS: &str = "REMOTE_ENDPOINTS";
    /// VNI → the overlay network's index on this host.
    pub const TUNNEL_NETWORKS: &str = "TUNNEL_NETWORKS";
    /// The host's VXLAN device (`TunnelConfig`).
    pub const TUNNEL_CONFIG: &str = "TUNNEL_CONFIG";
}

/// Entries of each conntrack table (SNAT_CT, SNAT_REV, SNAT_NEW, SNAT_REV_NEW, DNAT_CT,
/// DNAT_NEW) unless the daemon is given `--conntrack-max`.
pub const CONNTRACK_DEFAULT_SIZE: u32 = 131_072;

/// What the programs count about the conntrack tables (slots of `CT_EVENTS`, per CPU).
/// LRU tables evict silently when full; with these and its own removals the daemon knows
/// how many flows were evicted.
pub mod ct_event {
    /// A masqueraded flow entered SNAT_NEW, unconfirmed.
    pub const SNAT_CREATED: u32 = 0;
    /// The program removed a finished unconfirmed masqueraded flow (SNAT_NEW) to reuse
    /// its port.
    pub const SNAT_RECLAIMED: u32 = 1;
    /// A flow to a published port entered DNAT_NEW, unconfirmed.
    pub const DNAT_CREATED: u32 = 2;
    /// A flow to a published port was confirmed: it moved from DNAT_NEW to DNAT_CT.
    pub const DNAT_CONFIRMED: u32 = 3;
    /// A masqueraded flow was confirmed: it moved from SNAT_NEW to SNAT_CT.
    pub const SNAT_CONFIRMED: u32 = 4;
    /// The program removed a finished confirmed masqueraded flow (SNAT_CT) to reuse its
    /// port.
    pub const SNAT_RECLAIMED_CONFIRMED: u32 = 5;
    pub const COUNT: u32 = 6;
}

/// Names of the programs in the kernel object.
/// One's complement checksum arithmetic (RFC 1624), shared so that user space can test
/// what the programs compute in place.
pub mod csum {
    /// Folds a sum of at most a few hundred 16-bit terms into 16 bits, end-around carry.
    #[inline(always)]
    fn fold(mut sum: u32) -> u16 {
        sum = (sum & 0xffff) + (sum >> 16);
        sum = (sum & 0xffff) + (sum >> 16);
        sum as u16
    }

    #[inline(always)]
    fn word(bytes: &[u8], i: usize) -> u32 {
        u32::from(u16::from_be_bytes([bytes[i], bytes[i + 1]]))
    }

    /// The Internet checksum `csum` (as stored, network byte order) once the 4 bytes `old`
    /// it covers became `new`: HC' = ~(~HC + ~m + m') over 16-bit words.
    #[inline(always)]
    pub fn replace4(csum: u16, old: [u8; 4], new: [u8; 4]) -> u16 {
        let sum = u32::from(!u16::from_be(csum))
            + (!word(&old, 0) & 0xffff)
            + (!word(&old, 2) & 0xffff)
            + word(&new, 0)
            + word(&new, 2);
        (!fold(sum)).to_be()
    }

    /// As `replace4`, for 2 bytes (a port).
    #[inline(always)]
    pub fn replace2(csum: u16, old: [u8; 2], new: [u8; 2]) -> u16 {
        let sum = u32::from(!u16::from_be(csum)) + (!word(&old, 0) & 0xffff) + word(&new, 0);
        (!fold(sum)).to_be()
    }

    /// The ICMPv6 checksum (as stored) of `body`, a message of 32 bytes with its checksum
    /// field zero, from `src` to `dst`: over the IPv6 pseudo header and the message.
    #[inline(always)]
    pub fn icmpv6_32(src: &[u8; 16], dst: &[u8; 16], body: &[u8; 32]) -> u16 {
        let mut sum: u32 = 32 + 58;
        let mut i = 0;
        while i < 16 {
            sum += word(src, i) + word(dst, i) + word(body, i) + word(body, i + 16);
            i += 2;
        }
        (!fold(sum)).to_be()
    }

    /// The IPv4 pseudo header's sum, folded and not complemented, as stored (network byte
    /// order): what a sender that leaves the L4 checksum to the device (CHECKSUM_PARTIAL)
    /// puts in the checksum field.
    #[inline(always)]
    pub fn pseudo_header_v4(src: [u8; 4], dst: [u8; 4], proto: u8, l4_len: u16) -> u16 {
        let sum = word(&src, 0)
            + word(&src, 2)
            + word(&dst, 0)
            + word(&dst, 2)
            + u32::from(proto)
            + u32::from(l4_len);
        fold(sum).to_be()
    }

    /// As `pseudo_header_v4`, for IPv6 (RFC 8200 8.1): what a CHECKSUM_PARTIAL sender
    /// puts in the checksum field of a packet without extension headers.
    #[inline(always)]
    pub fn pseudo_header_v6(src: &[u8; 16], dst: &[u8; 16], next_header: u8, l4_len: u16) -> u16 {
        let mut sum = u32::from(next_header) + u32::from(l4_len);
        for i in 0..8 {
            sum += word(src, 2 * i) + word(dst, 2 * i);
        }
        fold(sum).to_be()
    }

    /// The checksum `csum` (as stored) with `diff` added: a 32-bit ones' complement sum of
    /// the change over the bytes as stored (what `bpf_csum_diff` returns), as the kernel's
    /// `inet_proto_csum_replace_by_diff` adds it for `bpf_l4_csum_replace` of size 0.
    #[inline(always)]
    pub fn add_diff(csum: u16, diff: u32) -> u16 {
        let sum = u64::from(diff) + u64::from(!csum);
        let sum = (sum & 0xffff_ffff) + (sum >> 32);
        let sum = (sum & 0xffff) + (sum >> 16);
        let sum = (sum & 0xffff) + (sum >> 16);
        !(((sum & 0xffff) + (sum >> 16)) as u16)
    }
}

pub mod program_names {
    /// tcx ingress of a container's host-side veth: traffic leaving the container.
    pub const FROM_CONTAINER: &str = "from_container";
    /// tc ingress of the uplink: replies to masqueraded flows, published ports.
    pub const FROM_UPLINK: &str = "from_uplink";
    /// IPv6 on the uplink, tail-called from `from_uplink` (map_names::UPLINK_V6).
    pub const FROM_UPLINK_V6: &str = "from_uplink_v6";
    /// IPv4 on the uplink for a container address of a routed network, tail-called from
    /// `from_uplink` (map_names::UPLINK_ROUTED).
    pub const FROM_UPLINK_ROUTED: &str = "from_uplink_routed";
    /// IPv6 on the uplink for a container address of an unprotected network, TCP and UDP,
    /// tail-called from `from_uplink_v6` (map_names::UPLINK_ROUTED, slot 1).
    pub const FROM_UPLINK_ROUTED_V6: &str = "from_uplink_routed_v6";
    /// XDP on the uplink: published ports, before the host builds an skb.
    pub const UPLINK_XDP: &str = "uplink_xdp";
    /// IPv6 at the uplink's XDP hook, tail-called from `uplink_xdp` (map_names::UPLINK_XDP_V6).
    pub const UPLINK_XDP_V6: &str = "uplink_xdp_v6";
    /// cgroup socket hooks: host processes reaching published ports (what docker-proxy did).
    pub const HOST_CONNECT4: &str = "host_connect4";
    pub const HOST_SENDMSG4: &str = "host_sendmsg4";
    pub const HOST_RECVMSG4: &str = "host_recvmsg4";
    pub const HOST_CONNECT6: &str = "host_connect6";
    pub const HOST_SENDMSG6: &str = "host_sendmsg6";
    pub const HOST_RECVMSG6: &str = "host_recvmsg6";
    /// All of them, in the order they are loaded and attached.
    pub const HOST_HOOKS: [&str; 6] =
        [HOST_CONNECT4, HOST_SENDMSG4, HOST_RECVMSG4, HOST_CONNECT6, HOST_SENDMSG6, HOST_RECVMSG6];
    /// tc ingress of the host's VXLAN device: overlay frames from other hosts.
    pub const FROM_TUNNEL: &str = "from_tunnel";
    /// tc egress of an isolated network's bridge: what the host sends into the network.
    pub const INTO_ISOLATED: &str = "into_isolated";
}

// The layouts both sides and pinned maps rely on: no implicit padding anywhere.
const _: () = {
    use core::mem::size_of;
    assert!(size_of::<IpAddress>() == 20);
    assert!(size_of::<InterfaceConfig>() == 76);
    assert!(size_of::<EndpointKey>() == 24);
    assert!(size_of::<RemoteEndpoint>() == 28);
    assert!(size_of::<TunnelConfig>() == 8);
    assert!(size_of::<FlowKey>() == 48);
    assert!(size_of::<NextHop>() == 24);
    assert!(size_of::<SnatEntry>() == 72);
    assert!(size_of::<RevSnatEntry>() == 48);
    assert!(size_of::<PublishKey>() == 24);
    assert!(size_of::<Backend>() == 36);
    assert!(size_of::<DnatEntry>() == 80);
    assert!(size_of::<SubnetInfo>() == 28);
    assert!(size_of::<FirewallKey>() == 8);
    assert!(size_of::<FirewallKey6>() == 20);
    assert!(size_of::<FirewallDirectKey>() == 24);
    assert!(size_of::<SockRevKey6>() == 32);
    assert!(size_of::<SockRevValue6>() == 20);
    assert!(size_of::<FirewallVerdict>() == 8);
    assert!(size_of::<MonitorEvent>() == 112);
    assert!(size_of::<Endpoint>() == 12);
    assert!(size_of::<EndpointCounters>() == 32);
};

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: all of these are repr(C), made only of integers and byte arrays, with
    // explicit padding fields, so every bit pattern is valid and none is uninitialised.
    unsafe impl aya::Pod for IpAddress {}
    unsafe impl aya::Pod for EndpointKey {}
    unsafe impl aya::Pod for Endpoint {}
    unsafe impl aya::Pod for RemoteEndpoint {}
    unsafe impl aya::Pod for TunnelConfig {}
    unsafe impl aya::Pod for EndpointCounters {}
    unsafe impl aya::Pod for InterfaceConfig {}
    unsafe impl aya::Pod for SubnetKey {}
    unsafe impl aya::Pod for SubnetInfo {}
    unsafe impl aya::Pod for Counter {}
    unsafe impl aya::Pod for FlowKey {}
    unsafe impl aya::Pod for SnatEntry {}
    unsafe impl aya::Pod for RevSnatEntry {}
    unsafe impl aya::Pod for NatConfig {}
    unsafe impl aya::Pod for PublishKey {}
    unsafe impl aya::Pod for Backend {}
    unsafe impl aya::Pod for DnatEntry {}
    unsafe impl aya::Pod for HostConfig {}
    unsafe impl aya::Pod for SockRevKey {}
    unsafe impl aya::Pod for SockRevKey6 {}
    unsafe impl aya::Pod for SockRevValue6 {}
    unsafe impl aya::Pod for SockRevValue {}
    unsafe impl aya::Pod for FirewallKey {}
    unsafe impl aya::Pod for FirewallKey6 {}
    unsafe impl aya::Pod for FirewallDirectKey {}
    unsafe impl aya::Pod for FirewallVerdict {}
    unsafe impl aya::Pod for MonitorEvent {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_addresses_in_the_networks_ipv6_subnet_may_be_its_endpoints() {
        let prefix = |len: u32| -> [u8; 16] { (!0u128).checked_shl(128 - len).unwrap_or(0).to_be_bytes() };
        let subnet = [0xfd, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let at = |i: usize, byte: u8| {
            let mut a = subnet;
            a[i] = byte;
            a
        };
        for (len, inside, outside) in [
            (64, at(15, 7), at(7, 1)),
            (64, at(8, 0xff), at(0, 0xfc)),
            (48, at(6, 0xab), at(5, 1)),
            (120, at(15, 0xff), at(14, 1)),
        ] {
            let iface = InterfaceConfig { v6_subnet: subnet, v6_mask: prefix(len), ..InterfaceConfig::NONE };
            assert!(iface.may_hold_v6(&inside), "/{len}: {inside:?} is inside");
            assert!(!iface.may_hold_v6(&outside), "/{len}: {outside:?} is outside");
        }
        let unknown = InterfaceConfig::NONE;
        assert!(unknown.may_hold_v6(&at(0, 0x20)), "a zero mask holds every address");
        let no_ipv6 = InterfaceConfig { v6_mask: [0xff; 16], ..InterfaceConfig::NONE };
        assert!(!no_ipv6.may_hold_v6(&subnet), "a full mask on :: holds no endpoint");
    }

    #[test]
    fn the_link_local_address_is_the_kernels_eui64_of_the_mac() {
        // What `ip -6 addr` shows on links with these MACs that made their own address:
        // fe80::42:aff:fec8:2 and fe80::d443:efff:fe0f:3059.
        let fe80 = [0xfe, 0x80, 0, 0, 0, 0, 0, 0];
        let ll = eui64_link_local([0x02, 0x42, 0x0a, 0xc8, 0x00, 0x02]);
        assert_eq!((&ll[..8], &ll[8..]), (&fe80[..], &[0x00, 0x42, 0x0a, 0xff, 0xfe, 0xc8, 0x00, 0x02][..]));
        let ll = eui64_link_local([0xd6, 0x43, 0xef, 0x0f, 0x30, 0x59]);
        assert_eq!((&ll[..8], &ll[8..]), (&fe80[..], &[0xd4, 0x43, 0xef, 0xff, 0xfe, 0x0f, 0x30, 0x59][..]));
    }

    /// The checksum of an IPv4 header computed from scratch.
    fn full(header: &[u8; 20]) -> u16 {
        let mut sum: u32 = header.chunks(2).map(|w| u32::from(u16::from_be_bytes([w[0], w[1]]))).sum();
        while sum >> 16 != 0 {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        (!(sum as u16)).to_be()
    }

    #[test]
    fn every_drop_path_has_a_reason_and_every_reason_a_drop_path() {
        use super::{DropReason, Path};
        for path in Path::ALL {
            assert_eq!(
                DropReason::of(path).is_some(),
                path.name().starts_with("dropped_"),
                "{}: a drop path needs a reason, and only a drop path has one",
                path.name()
            );
            assert_eq!(Path::from_index(path as u32), Some(path));
        }
        for reason in DropReason::ALL {
            assert_eq!(DropReason::from_u8(reason as u8), Some(reason), "{}", reason.name());
            assert!(
                Path::ALL.iter().any(|p| DropReason::of(*p) == Some(reason)),
                "{} is never used",
                reason.name()
            );
        }
        assert_eq!(DropReason::from_u8(0), None);
    }

    #[test]
    fn replacing_an_address_updates_the_checksum_like_recomputing_it() {
        let mut header = [0x45, 0, 0, 60, 0x1c, 0x46, 0x40, 0, 0x40, 6, 0, 0, 10, 1, 0, 2, 198, 51, 100, 7];
        for (old, new) in [
            ([10, 1, 0, 2], [203, 0, 113, 1]),
            ([203, 0, 113, 1], [10, 1, 0, 2]),
            ([10, 1, 0, 2], [255, 255, 255, 255]),
            ([10, 1, 0, 2], [0, 0, 0, 0]),
            ([10, 1, 0, 2], [10, 1, 0, 2]),
        ] {
            header[12..16].copy_from_slice(&old);
            header[10..12].copy_from_slice(&[0, 0]);
            let before = full(&header);
            header[12..16].copy_from_slice(&new);
            header[10..12].copy_from_slice(&[0, 0]);
            let expected = full(&header);
            let updated = super::csum::replace4(before, old, new);
            // 0x0000 and 0xffff are the same one's complement number; both are valid.
            let same = updated == expected
                || (updated == 0 && expected == 0xffff)
                || (updated == 0xffff && expected == 0);
            assert!(same, "{old:?} -> {new:?}: {updated:#06x} instead of {expected:#06x}");
        }
    }

    /// The one's complement sum of `bytes`, folded, not complemented.
    fn sum(bytes: &[u8]) -> u16 {
        let mut sum: u32 = bytes.chunks(2).map(|w| u32::from(u16::from_be_bytes([w[0], w[1]]))).sum();
        while sum >> 16 != 0 {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        sum as u16
    }

    #[test]
    fn replacing_a_port_updates_the_checksum_like_recomputing_it() {
        // A UDP header and payload; the checksum field (bytes 6..8) is left out of the sum.
        let mut segment = [0x9c, 0x40, 0x1f, 0x90, 0, 12, 0, 0, b'h', b'i', b'!', b'?'];
        for (old, new) in [([0x1f, 0x90], [0x00, 0x50]), ([0xff, 0xff], [0, 0]), ([0, 1], [0, 1])] {
            segment[2..4].copy_from_slice(&old);
            let before = (!sum(&segment)).to_be();
            segment[2..4].copy_from_slice(&new);
            let expected = (!sum(&segment)).to_be();
            let updated = super::csum::replace2(before, old, new);
            let same = updated == expected
                || (updated == 0 && expected == 0xffff)
                || (updated == 0xffff && expected == 0);
            assert!(same, "{old:?} -> {new:?}: {updated:#06x} instead of {expected:#06x}");
        }
    }

    #[test]
    fn the_pseudo_header_sum_is_what_partial_checksums_hold() {
        let (src, dst) = ([203, 0, 113, 2], [203, 0, 113, 1]);
        let mut pseudo = [0u8; 12];
        pseudo[..4].copy_from_slice(&src);
        pseudo[4..8].copy_from_slice(&dst);
        pseudo[9] = 17;
        pseudo[10..].copy_from_slice(&1234u16.to_be_bytes());
        assert_eq!(super::csum::pseudo_header_v4(src, dst, 17, 1234), sum(&pseudo).to_be());
    }

    #[test]
    fn the_ipv6_pseudo_header_sum_is_what_partial_checksums_hold() {
        let src = [0x20, 1, 0x0d, 0xb8, 0, 0x99, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 7];
        let dst = [0x20, 1, 0x0d, 0xb8, 0, 0x71, 0, 0, 0, 0, 0, 0, 0xab, 0, 0, 1];
        let mut pseudo = [0u8; 40];
        pseudo[..16].copy_from_slice(&src);
        pseudo[16..32].copy_from_slice(&dst);
        pseudo[32..36].copy_from_slice(&1234u32.to_be_bytes());
        pseudo[39] = 6;
        assert_eq!(super::csum::pseudo_header_v6(&src, &dst, 6, 1234), sum(&pseudo).to_be());
    }

    /// What `bpf_csum_diff` returns for `old` becoming `new`: the 32-bit one's complement
    /// sum of the complemented old words and the new ones, as stored (native order).
    fn csum_diff(old: &[u8; 16], new: &[u8; 16]) -> u32 {
        let native =
            |a: &[u8; 16], i: usize| u64::from(u32::from_ne_bytes([a[i], a[i + 1], a[i + 2], a[i + 3]]));
        let mut total: u64 =
            (0..16).step_by(4).map(|i| (!native(old, i) & 0xffff_ffff) + native(new, i)).sum();
        while total >> 32 != 0 {
            total = (total & 0xffff_ffff) + (total >> 32);
        }
        total as u32
    }

    #[test]
    fn adding_a_diff_updates_the_checksum_like_recomputing_it() {
        // A TCP-like segment holding an IPv6 address in its first 16 bytes.
        let mut segment = [0u8; 24];
        segment[16..].copy_from_slice(b"payload!");
        let b = |x: u8| [0xfd, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, x, 0xff, x];
        for (old, new) in [(b(2), b(3)), (b(3), b(0xfe)), ([0xff; 16], [0; 16]), (b(7), b(7))] {
            segment[..16].copy_from_slice(&old);
            let before = (!sum(&segment)).to_be();
            segment[..16].copy_from_slice(&new);
            let expected = (!sum(&segment)).to_be();
            // Stored and loaded as the program does: the field's bytes as a native u16.
            let stored = u16::from_ne_bytes(before.to_ne_bytes());
            let updated = super::csum::add_diff(stored, csum_diff(&old, &new));
            let same = updated == expected
                || (updated == 0 && expected == 0xffff)
                || (updated == 0xffff && expected == 0);
            assert!(same, "{old:?} -> {new:?}: {updated:#06x} instead of {expected:#06x}");
        }
    }
}
