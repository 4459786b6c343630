//! Every change to links, addresses and routes goes through here, over rtnetlink, in the
//! namespace the connection was opened in (and the one per-interface sysctl we need).
//! Nothing here decides policy.

use std::{
    io::Write,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd},
    path::Path,
};

use anyhow::{Context, Result, anyhow};
use futures::TryStreamExt;
use ipnet::Ipv4Net;
use rtnetlink::{
    Handle, LinkBridge, LinkMacVlan, LinkMessageBuilder, LinkUnspec, LinkVeth, LinkVxlan,
    RouteMessageBuilder,
    packet_core::{DefaultNla, NetlinkMessage, NetlinkPayload},
    packet_route::{
        RouteNetlinkMessage,
        address::{AddressAttribute, AddressFlags},
        link::{
            AfSpecInet, AfSpecInet6, AfSpecUnspec, In6AddrGenMode, InfoBridgePort, InfoData, InfoKind,
            InfoPortData, InfoPortKind, InfoVeth, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
            MacVlanMode,
        },
        route::{RouteAddress, RouteAttribute},
    },
    sys::{AsyncSocket, SocketAddr, TokioSocket},
};

pub struct Netlink {
    handle: Handle,
    /// The host's /proc/sys/net/ipv6/conf, opened once (see `disable_ipv6`); `None` in a
    /// container's namespace, and on a kernel without IPv6.
    ipv6_conf: Option<std::fs::File>,
}

/// What `Netlink::link_state` finds of a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkState {
    pub index: u32,
    /// The bridge the link is a port of.
    pub controller: Option<u32>,
    pub up: bool,
}

/// What `Netlink::veth_peer` finds of a veth's other end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VethPeer {
    pub index: u32,
    pub elsewhere: bool,
}

/// What the kernel tells a subscription, waiting until read.
type Told = futures::channel::mpsc::UnboundedReceiver<(NetlinkMessage<RouteNetlinkMessage>, SocketAddr)>;

/// Subscribes to `groups` (RTMGRP_*) of the caller's namespace.
fn subscribe(groups: u32, what: &str) -> Result<Told> {
    let (mut connection, _, messages) = rtnetlink::new_connection().context("opening rtnetlink")?;
    connection
        .socket_mut()
        .socket_mut()
        .bind(&SocketAddr::new(0, groups))
        .with_context(|| format!("subscribing to {what}"))?;
    tokio::spawn(connection);
    Ok(messages)
}

/// Links of the caller's namespace that gained a carrier since `watch_carriers`: by name,
/// in the order the kernel told (a link may come more than once).
pub struct CarrierEvents(Told);

/// Subscribes to the link changes of the caller's namespace (RTMGRP_LINK). What the
/// kernel tells from now on waits in `CarrierEvents` until read.
pub fn watch_carriers() -> Result<CarrierEvents> {
    subscribe(rtnetlink::constants::RTMGRP_LINK, "link changes").map(CarrierEvents)
}

/// Links of the caller's namespace whose IPv4 or IPv6 addresses changed since
/// `watch_addresses`, by index (a link comes once per address added or removed).
pub struct AddressEvents(Told);

pub fn watch_addresses() -> Result<AddressEvents> {
    use rtnetlink::constants::{RTMGRP_IPV4_IFADDR, RTMGRP_IPV6_IFADDR};
    subscribe(RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR, "address changes").map(AddressEvents)
}

impl AddressEvents {
    /// The index of the next link an address was added to or removed from; `None` once
    /// the subscription ended.
    pub async fn next(&mut self) -> Option<u32> {
        use futures::StreamExt;
        while let Some((message, _)) = self.0.next().await {
            match message.payload {
                NetlinkPayload::InnerMessage(
                    RouteNetlinkMessage::NewAddress(address) | RouteNetlinkMessage::DelAddress(address),
                ) => return Some(address.header.index),
                _ => continue,
            }
        }
        None
    }
}

impl CarrierEvents {
    /// The name of the next link that has a carrier (`IFF_LOWER_UP`); `None` once the
    /// subscription ended.
    pub async fn next(&mut self) -> Option<String> {
        use futures::StreamExt;
        while let Some((message, _)) = self.0.next().await {
            let NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)) = message.payload else {
                continue;
            };
            if !link.header.flags.contains(LinkFlags::LowerUp) {
                continue;
            }
            if let Some(name) = name_of(link) {
                return Some(name);
            }
        }
        None
    }
}

fn name_of(link: LinkMessage) -> Option<String> {
    link.attributes.into_iter().find_map(|a| match a {
        LinkAttribute::IfName(name) => Some(name),
        _ => None,
    })
}

fn is_errno(e: &rtnetlink::Error, errno: i32) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m) if m.raw_code().abs() == errno)
}

impl Netlink {
    /// A connection in the caller's current namespace (the daemon's host namespace).
    pub fn connect() -> Result<Self> {
        let (connection, handle, _) = rtnetlink::new_connection().context("opening rtnetlink")?;
        tokio::spawn(connection);
        let ipv6_conf = match std::fs::File::open(IPV6_CONF) {
            Ok(dir) => Some(dir),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e).with_context(|| format!("opening {IPV6_CONF}")),
        };
        Ok(Self { handle, ipv6_conf })
    }

    /// Turns IPv6 off for the host's link `ifname` (rtnetlink cannot set IPv6 device
    /// settings), through the directory opened at `connect`: a lookup from /proc/sys
    /// walks one cached entry for `net` per namespace that ever looked there (every
    /// container's), ~300 µs more at 2,000 containers. A kernel without IPv6 has nothing
    /// to turn off.
    pub fn disable_ipv6(&self, ifname: &str) -> Result<()> {
        self.set_ipv6_conf(ifname, "disable_ipv6")
    }

    /// Turns IPv6 forwarding on for the host's link `ifname`, as `disable_ipv6` writes:
    /// bpf_fib_lookup asks it of the device a packet arrived on.
    pub fn enable_ipv6_forwarding(&self, ifname: &str) -> Result<()> {
        self.set_ipv6_conf(ifname, "forwarding")
    }

    /// Writes 1 to the IPv6 setting `setting` of the host's link `ifname`.
    fn set_ipv6_conf(&self, ifname: &str, setting: &str) -> Result<()> {
        let Some(dir) = &self.ipv6_conf else { return Ok(()) };
        let path = format!("{ifname}/{setting}");
        let file = nix::fcntl::openat(
            dir,
            path.as_str(),
            nix::fcntl::OFlag::O_WRONLY | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .with_context(|| format!("opening {IPV6_CONF}/{path}"))?;
        std::fs::File::from(file).write_all(b"1").with_context(|| format!("writing {IPV6_CONF}/{path}"))
    }

    /// A connection whose socket lives in the namespace at `netns`: the socket is made on
    /// a thread inside it (sockets stay in the namespace they were made in), then handed
    /// to the runtime.
    pub fn connect_in(netns: &Path) -> Result<Self> {
        let fd = crate::netns::run_in(netns, || {
            // SAFETY: a plain socket(2) call; the result is checked before use.
            let fd = unsafe {
                libc::socket(libc::AF_NETLINK, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, libc::NETLINK_ROUTE)
            };
            if fd < 0 {
                return Err(std::io::Error::last_os_error())
                    .context("opening rtnetlink in the container namespace");
            }
            // SAFETY: the descriptor was just created and belongs to nobody else.
            Ok(unsafe { OwnedFd::from_raw_fd(fd) })
        })?;
        // SAFETY: ownership of the descriptor moves into the socket.
        let socket = unsafe { TokioSocket::from_raw_fd(fd.into_raw_fd()) };
        let (connection, handle, _) = rtnetlink::from_socket(socket);
        tokio::spawn(connection);
        Ok(Self { handle, ipv6_conf: None })
    }

    pub async fn link_index(&self, name: &str) -> Result<Option<u32>> {
        let mut links = self.handle.clone().link().get().match_name(name.to_string()).execute();
        match links.try_next().await {
            Ok(Some(link)) => Ok(Some(link.header.index)),
            Ok(None) => Ok(None),
            Err(e) if is_errno(&e, libc::ENODEV) => Ok(None),
            Err(e) => Err(e).with_context(|| format!("looking up link {name}")),
        }
    }

    /// A link's index, the bridge it is a port of, and whether it is up; `None` when
    /// there is no such link.
    pub async fn link_state(&self, name: &str) -> Result<Option<LinkState>> {
        let mut links = self.handle.clone().link().get().match_name(name.to_string()).execute();
        match links.try_next().await {
            Ok(Some(link)) => Ok(Some(LinkState {
                index: link.header.index,
                controller: link.attributes.iter().find_map(|a| match a {
                    LinkAttribute::Controller(index) => Some(*index),
                    _ => None,
                }),
                up: link.header.flags.contains(LinkFlags::Up),
            })),
            Ok(None) => Ok(None),
            Err(e) if is_errno(&e, libc::ENODEV) => Ok(None),
            Err(e) => Err(e).with_context(|| format!("looking up link {name}")),
        }
    }

    /// The names of every link of the namespace.
    pub async fn link_names(&self) -> Result<Vec<String>> {
        let mut links = self.handle.clone().link().get().execute();
        let mut names = vec![];
        while let Some(link) = links.try_next().await.context("listing links")? {
            names.extend(name_of(link));
        }
        Ok(names)
    }

    pub async fn require_index(&self, name: &str) -> Result<u32> {
        self.link_index(name).await?.ok_or_else(|| anyhow!("link {name} does not exist"))
    }

    /// A bridge with a fixed MAC: left to itself, a bridge takes the lowest MAC of its
    /// ports and changes it when that port goes, which strands every container's ARP entry
    /// for the gateway until it expires. `arp` off keeps the host from answering, on this
    /// bridge, ARP for its addresses on other links.
    pub async fn create_bridge(&self, name: &str, mac: [u8; 6], mtu: Option<u32>, arp: bool) -> Result<u32> {
        let mut msg = LinkBridge::new(name).address(mac.to_vec()).arp(arp);
        if let Some(mtu) = mtu {
            msg = msg.mtu(mtu);
        }
        self.handle
            .link()
            .add(msg.build())
            .execute()
            .await
            .with_context(|| format!("creating bridge {name}"))?;
        self.require_index(name).await
    }

    /// A VXLAN device in external (collect-metadata) mode on UDP `port`: whoever sends
    /// through it gives each frame's VNI and remote host (eBPF's tunnel key), so it needs
    /// no VNI, remote, forwarding table or multicast group of its own, and learns nothing.
    /// Its UDP checksum settings are spelled out: none over IPv4 (`noudpcsum`; in this
    /// mode each frame's tunnel key decides, and the programs' keys ask for none), and
    /// over IPv6 one sent and one required of what arrives (no `udp6zerocsumtx`,
    /// `udp6zerocsumrx`: RFC 6935 allows a zero checksum over IPv6 only where both ends
    /// are set for it).
    pub async fn create_vxlan(&self, name: &str, port: u16) -> Result<u32> {
        let message = LinkVxlan::new(name, 0)
            .port(port)
            .collect_metadata(true)
            .learning(false)
            .udp_csum(false)
            .append_info_data(InfoVxlan::UDPZeroCsumTX(false))
            .append_info_data(InfoVxlan::UDPZeroCsumRX(false))
            .build();
        self.handle
            .link()
            .add(message)
            .execute()
            .await
            .with_context(|| format!("creating VXLAN device {name} on UDP port {port}"))?;
        self.require_index(name).await
    }

    /// The UDP port of the VXLAN device `name` in external (collect-metadata) mode, as the
    /// daemon makes it; `None` when there is no such link, or it is another kind of link
    /// or a VXLAN device of another mode.
    pub async fn external_vxlan_port(&self, name: &str) -> Result<Option<u16>> {
        let mut links = self.handle.clone().link().get().match_name(name.to_string()).execute();
        let link = match links.try_next().await {
            Ok(link) => link,
            Err(e) if is_errno(&e, libc::ENODEV) => None,
            Err(e) => return Err(e).with_context(|| format!("looking up link {name}")),
        };
        let vxlan = link.into_iter().flat_map(|l| l.attributes).find_map(|a| match a {
            LinkAttribute::LinkInfo(infos) => infos.into_iter().find_map(|i| match i {
                LinkInfo::Data(InfoData::Vxlan(data)) => Some(data),
                _ => None,
            }),
            _ => None,
        });
        let Some(data) = vxlan else { return Ok(None) };
        let external = data.iter().any(|d| matches!(d, InfoVxlan::CollectMetadata(true)));
        Ok(data.iter().find_map(|d| match d {
            InfoVxlan::Port(port) if external => Some(*port),
            _ => None,
        }))
    }

    /// The MTU of the link at `index`; `None` when there is no such link.
    pub async fn link_mtu(&self, index: u32) -> Result<Option<u32>> {
        let mut links = self.handle.clone().link().get().match_index(index).execute();
        match links.try_next().await {
            Ok(link) => Ok(link.and_then(|l| {
                l.attributes.into_iter().find_map(|a| match a {
                    LinkAttribute::Mtu(mtu) => Some(mtu),
                    _ => None,
                })
            })),
            Err(e) if is_errno(&e, libc::ENODEV) => Ok(None),
            Err(e) => Err(e).with_context(|| format!("looking up link {index}")),
        }
    }

    /// The link that holds the address `ip`, if one does.
    pub async fn link_holding(&self, ip: IpAddr) -> Result<Option<u32>> {
        let messages: Vec<_> =
            self.handle.address().get().execute().try_collect().await.context("listing addresses")?;
        Ok(messages
            .into_iter()
            .find(|m| {
                m.attributes.iter().any(|a| {
                    matches!(a, AddressAttribute::Local(held) | AddressAttribute::Address(held) if *held == ip)
                })
            })
            .map(|m| m.header.index))
    }

    /// Adds `ip/prefix` to a link; an address already there is fine (restores repeat it).
    /// An IPv6 address skips duplicate address detection (`nodad`): IPAM hands each out
    /// once, and DAD would hold it unusable for a second and send to the whole network.
    pub async fn add_address(&self, index: u32, ip: IpAddr, prefix: u8) -> Result<()> {
        let mut request = self.handle.address().add(index, ip, prefix);
        if ip.is_ipv6() {
            request.message_mut().attributes.push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        match request.execute().await {
            Err(e) if is_errno(&e, libc::EEXIST) => Ok(()),
            other => other.with_context(|| format!("adding {ip}/{prefix} to link {index}")),
        }
    }

    pub async fn set_up(&self, index: u32) -> Result<()> {
        self.set_link(LinkUnspec::new_with_index(index).up().build())
            .await
            .with_context(|| format!("setting link {index} up"))
    }

    /// One RTM_SETLINK; the caller says what it was for.
    async fn set_link(&self, message: LinkMessage) -> Result<(), rtnetlink::Error> {
        self.handle.link().set(message).execute().await
    }

    /// Creates a veth pair whose peer is born inside the namespace `ns` as `peer` with the
    /// given MAC: no rename or move afterwards (a move costs an RCU grace period, ~20 ms).
    /// Returns the host side's ifindex.
    pub async fn create_veth_into(
        &self,
        name: &str,
        ns: &std::fs::File,
        peer: &str,
        mac: [u8; 6],
        mtu: Option<u32>,
    ) -> Result<u32> {
        let inner = LinkMessageBuilder::<LinkUnspec>::new()
            .name(peer.to_string())
            .setns_by_fd(ns.as_raw_fd())
            .address(mac.to_vec());
        self.add_veth(name, inner, mtu)
            .await
            .with_context(|| format!("creating veth pair {name} (host) / {peer} (container)"))
    }

    /// Creates a veth pair with both ends here; returns `name`'s ifindex.
    pub async fn create_veth(&self, name: &str, peer: &str, mtu: Option<u32>) -> Result<u32> {
        let inner = LinkMessageBuilder::<LinkUnspec>::new().name(peer.to_string());
        self.add_veth(name, inner, mtu).await.with_context(|| format!("creating veth pair {name} / {peer}"))
    }

    /// Creates a veth pair with both ends here, `peer` with the given MAC, for an owner
    /// that moves the peer into its namespace itself (Docker); returns `name`'s ifindex.
    pub async fn create_veth_to_hand_over(
        &self,
        name: &str,
        peer: &str,
        mac: [u8; 6],
        mtu: Option<u32>,
    ) -> Result<u32> {
        let inner = LinkMessageBuilder::<LinkUnspec>::new().name(peer.to_string()).address(mac.to_vec());
        self.add_veth(name, inner, mtu)
            .await
            .with_context(|| format!("creating veth pair {name} (host) / {peer} (to hand over)"))
    }

    async fn add_veth(
        &self,
        name: &str,
        mut peer: LinkMessageBuilder<LinkUnspec>,
        mtu: Option<u32>,
    ) -> Result<u32> {
        let mut outer =
            LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth).name(name.to_string());
        if let Some(mtu) = mtu {
            peer = peer.mtu(mtu);
            outer = outer.mtu(mtu);
        }
        let message = outer.set_info_data(InfoData::Veth(InfoVeth::Peer(peer.build()))).build();
        self.handle.link().add(message).execute().await?;
        self.require_index(name).await
    }

    /// Creates a macvlan on `parent` born inside the namespace `ns` as `name`.
    pub async fn create_macvlan_into(
        &self,
        name: &str,
        parent: u32,
        mode: MacVlanMode,
        ns: &std::fs::File,
        mac: [u8; 6],
        mtu: Option<u32>,
    ) -> Result<()> {
        let mut message =
            LinkMacVlan::new(name, parent, mode).setns_by_fd(ns.as_raw_fd()).address(mac.to_vec());
        if let Some(mtu) = mtu {
            message = message.mtu(mtu);
        }
        self.handle
            .link()
            .add(message.build())
            .execute()
            .await
            .with_context(|| format!("creating macvlan {name} on link {parent}"))
    }

    /// Turns IPv4 forwarding on for one link (`net.ipv4.conf.<link>.forwarding`) through
    /// rtnetlink: under /proc/sys/net every open walks one entry per namespace that used
    /// it (~270 µs at 1,500 namespaces, against 20 µs).
    pub async fn enable_ipv4_forwarding(&self, index: u32) -> Result<()> {
        // IFLA_INET_CONF holds (IPV4_DEVCONF_* index, u32 value) pairs; only the one sent
        // changes.
        const IFLA_INET_CONF: u16 = 1;
        const IPV4_DEVCONF_FORWARDING: u16 = 1;
        let mut pair = 8u16.to_ne_bytes().to_vec();
        pair.extend(IPV4_DEVCONF_FORWARDING.to_ne_bytes());
        pair.extend(1u32.to_ne_bytes());
        let conf = AfSpecInet::Other(DefaultNla::new(IFLA_INET_CONF, pair));
        let mut message = LinkUnspec::new_with_index(index).build();
        message.attributes.push(LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet(vec![conf])]));
        self.set_link(message).await.with_context(|| format!("turning IPv4 forwarding on for link {index}"))
    }

    /// Keeps link `index` from generating IPv6 addresses (a link-local one as it comes
    /// up), so that it sends no neighbour discovery or MLD of its own. Set before the link
    /// is up: an address made already stays.
    pub async fn generate_no_ipv6_address(&self, index: u32) -> Result<()> {
        let mode = AfSpecInet6::AddrGenMode(In6AddrGenMode::None);
        let mut message = LinkUnspec::new_with_index(index).build();
        message.attributes.push(LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet6(vec![mode])]));
        self.set_link(message)
            .await
            .with_context(|| format!("turning IPv6 address generation off for link {index}"))
    }

    /// Gives link `index` an `ingress` qdisc for tc filters on what it receives; one it
    /// has already (or a clsact one, which an earlier version made) is kept. Not clsact:
    /// the kernel keeps every tc block bound anywhere on the host in one list, walked
    /// whenever a block is bound or unbound (for offload drivers that may register
    /// later), and clsact binds two per link where ingress binds one. With 2,000
    /// containers that walk was the largest cost of an attach that grows.
    pub async fn add_ingress_qdisc(&self, index: u32) -> Result<()> {
        match self.handle.qdisc().add(index as i32).ingress().execute().await {
            Err(e) if is_errno(&e, libc::EEXIST) => Ok(()),
            other => other.with_context(|| format!("adding an ingress qdisc to link {index}")),
        }
    }

    pub async fn set_controller(&self, index: u32, bridge: u32) -> Result<()> {
        self.set_link(LinkUnspec::new_with_index(index).controller(bridge).build())
            .await
            .with_context(|| format!("adding link {index} to bridge {bridge}"))
    }

    /// Makes a bridge port isolated: it can talk to the bridge (the host) and to
    /// non-isolated ports, not to other isolated ports. Used for `icc=false`, so that
    /// what the programs leave to the bridge (IPv6, broadcast) cannot cross either.
    pub async fn set_port_isolated(&self, index: u32, isolated: bool) -> Result<()> {
        let msg = LinkUnspec::new_with_index(index)
            .set_port_kind(InfoPortKind::Bridge)
            .set_port_data(InfoPortData::BridgePort(vec![InfoBridgePort::Isolated(isolated)]))
            .build();
        self.handle
            .link()
            .set_port(msg)
            .execute()
            .await
            .with_context(|| format!("setting bridge port isolation of link {index}"))
    }

    pub async fn add_default_route(&self, gateway: IpAddr) -> Result<()> {
        let route = match gateway {
            IpAddr::V4(gateway) => RouteMessageBuilder::<Ipv4Addr>::new().gateway(gateway).build(),
            IpAddr::V6(gateway) => RouteMessageBuilder::<Ipv6Addr>::new().gateway(gateway).build(),
        };
        self.handle
            .route()
            .add(route)
            .execute()
            .await
            .with_context(|| format!("adding default route via {gateway}"))
    }

    /// Sets a link's alias (IFLA_IFALIAS), the free text `ip link` shows beside it.
    pub async fn set_alias(&self, index: u32, alias: &str) -> Result<()> {
        let mut message = LinkUnspec::new_with_index(index).build();
        message.attributes.push(LinkAttribute::IfAlias(alias.to_string()));
        self.set_link(message).await.with_context(|| format!("setting the alias of link {index}"))
    }

    /// The links of the namespace that have an alias: name and alias.
    pub async fn aliased_links(&self) -> Result<Vec<(String, String)>> {
        let mut links = self.handle.clone().link().get().execute();
        let mut aliased = vec![];
        while let Some(link) = links.try_next().await.context("listing links")? {
            let (mut name, mut alias) = (None, None);
            for attribute in link.attributes {
                match attribute {
                    LinkAttribute::IfName(n) => name = Some(n),
                    LinkAttribute::IfAlias(a) => alias = Some(a),
                    _ => {}
                }
            }
            aliased.extend(name.zip(alias));
        }
        Ok(aliased)
    }

    /// The names of the links that are ports of one of `bridges` (by index).
    pub async fn ports_of(&self, bridges: &std::collections::HashSet<u32>) -> Result<Vec<String>> {
        let mut links = self.handle.clone().link().get().execute();
        let mut ports = vec![];
        while let Some(link) = links.try_next().await.context("listing links")? {
            let on_ours = link
                .attributes
                .iter()
                .any(|a| matches!(a, LinkAttribute::Controller(c) if bridges.contains(c)));
            if on_ours {
                ports.extend(name_of(link));
            }
        }
        Ok(ports)
    }

    /// Removes link `index`'s clsact qdisc if no tc filter is left on it, on either side:
    /// an empty one does nothing, and one holding someone else's filters is theirs too.
    /// Returns whether it removed one.
    pub async fn remove_empty_clsact(&self, index: u32) -> Result<bool> {
        use futures::StreamExt;
        use rtnetlink::packet_route::tc::{TcHandle, TcMessage};
        for side in [TcHandle::MIN_INGRESS, TcHandle::MIN_EGRESS] {
            let mut message = TcMessage::with_index(index as i32);
            message.header.parent = TcHandle { major: 0xffff, minor: side };
            let mut request = NetlinkMessage::from(RouteNetlinkMessage::GetTrafficFilter(message));
            request.header.flags = rtnetlink::packet_core::NLM_F_REQUEST | rtnetlink::packet_core::NLM_F_DUMP;
            let mut answers = self.handle.clone().request(request).context("listing tc filters")?;
            while let Some(answer) = answers.next().await {
                match answer.payload {
                    NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewTrafficFilter(_)) => {
                        return Ok(false);
                    }
                    // No clsact qdisc (EINVAL): nothing to remove.
                    NetlinkPayload::Error(_) => return Ok(false),
                    _ => {}
                }
            }
        }
        let mut delete = self.handle.clone().qdisc().del(index as i32);
        delete.message_mut().header.parent = TcHandle::CLSACT;
        delete.message_mut().header.handle = TcHandle { major: 0xffff, minor: 0 };
        delete.execute().await.with_context(|| format!("removing the clsact qdisc of link {index}"))?;
        Ok(true)
    }

    /// Deletes a link; one already gone is fine.
    pub async fn delete_link(&self, name: &str) -> Result<()> {
        let Some(index) = self.link_index(name).await? else {
            return Ok(());
        };
        self.delete_link_index(index, name).await
    }

    /// Deletes the link at `index` (`name` is for the error); one already gone is fine.
    pub async fn delete_link_index(&self, index: u32, name: &str) -> Result<()> {
        match self.handle.clone().link().del(index).execute().await {
            Err(e) if is_errno(&e, libc::ENODEV) => Ok(()),
            other => other.with_context(|| format!("deleting link {name}")),
        }
    }

    /// IPv4 addresses of a link.
    pub async fn ipv4_addresses(&self, index: u32) -> Result<Vec<Ipv4Addr>> {
        Ok(self
            .addresses(index)
            .await?
            .into_iter()
            .filter_map(|ip| match ip {
                IpAddr::V4(ip) => Some(ip),
                IpAddr::V6(_) => None,
            })
            .collect())
    }

    /// Global IPv6 addresses of a link (neither link-local nor loopback).
    pub async fn ipv6_global_addresses(&self, index: u32) -> Result<Vec<Ipv6Addr>> {
        Ok(self
            .addresses(index)
            .await?
            .into_iter()
            .filter_map(|ip| match ip {
                IpAddr::V6(ip) if !ip.is_unicast_link_local() && !ip.is_loopback() => Some(ip),
                _ => None,
            })
            .collect())
    }

    /// Addresses of a link, of both families.
    pub async fn addresses(&self, index: u32) -> Result<Vec<IpAddr>> {
        let messages: Vec<_> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .try_collect()
            .await
            .with_context(|| format!("listing addresses of link {index}"))?;
        Ok(messages
            .into_iter()
            .flat_map(|m| m.attributes)
            .filter_map(|a| match a {
                AddressAttribute::Local(ip) | AddressAttribute::Address(ip) => Some(ip),
                _ => None,
            })
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect())
    }

    /// Whether the host holds `ip` on some interface other than loopback: only then may
    /// frames from the uplink or from containers reach a port published on it.
    pub async fn holds_off_loopback(&self, ip: IpAddr) -> Result<bool> {
        let messages: Vec<_> =
            self.handle.address().get().execute().try_collect().await.context("listing addresses")?;
        let holders = messages.into_iter().filter(|m| {
            m.attributes.iter().any(|a| {
                matches!(a, AddressAttribute::Local(held) | AddressAttribute::Address(held) if *held == ip)
            })
        });
        for holder in holders {
            let mut links = self.handle.clone().link().get().match_index(holder.header.index).execute();
            let link =
                links.try_next().await.with_context(|| format!("looking up link {}", holder.header.index))?;
            if link.is_some_and(|l| !l.header.flags.contains(LinkFlags::Loopback)) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Whether the link with this index is one end of a veth pair.
    pub async fn is_veth(&self, index: u32) -> Result<bool> {
        let mut links = self.handle.clone().link().get().match_index(index).execute();
        let link = links.try_next().await.with_context(|| format!("looking up link {index}"))?;
        Ok(link.is_some_and(|link| {
            link.attributes.iter().any(|a| {
                matches!(a, LinkAttribute::LinkInfo(infos)
                    if infos.iter().any(|i| matches!(i, LinkInfo::Kind(InfoKind::Veth))))
            })
        }))
    }

    /// The name of the link with this index.
    pub async fn link_name(&self, index: u32) -> Result<Option<String>> {
        let mut links = self.handle.clone().link().get().match_index(index).execute();
        match links.try_next().await {
            Ok(Some(link)) => Ok(name_of(link)),
            Ok(None) => Ok(None),
            Err(e) if is_errno(&e, libc::ENODEV) => Ok(None),
            Err(e) => Err(e).with_context(|| format!("looking up link {index}")),
        }
    }

    /// The ifindex of the other end of the veth `name`, and whether that end is in
    /// another namespace (where the index is that namespace's); `None` when there is no
    /// such link.
    pub async fn veth_peer(&self, name: &str) -> Result<Option<VethPeer>> {
        let mut links = self.handle.clone().link().get().match_name(name.to_string()).execute();
        let link = match links.try_next().await {
            Ok(link) => link,
            Err(e) if is_errno(&e, libc::ENODEV) => None,
            Err(e) => return Err(e).with_context(|| format!("looking up link {name}")),
        };
        Ok(link.and_then(|link| {
            let index = link.attributes.iter().find_map(|a| match a {
                LinkAttribute::Link(index) => Some(*index),
                _ => None,
            })?;
            let elsewhere = link.attributes.iter().any(|a| matches!(a, LinkAttribute::LinkNetNsId(_)));
            Some(VethPeer { index, elsewhere })
        }))
    }

    /// The name of the link with this index if it is up; `None` when it is down or gone.
    pub async fn up_link_name(&self, index: u32) -> Result<Option<String>> {
        let mut links = self.handle.clone().link().get().match_index(index).execute();
        match links.try_next().await {
            Ok(Some(link)) if link.header.flags.contains(LinkFlags::Up) => Ok(name_of(link)),
            Ok(_) => Ok(None),
            Err(e) if is_errno(&e, libc::ENODEV) => Ok(None),
            Err(e) => Err(e).with_context(|| format!("looking up link {index}")),
        }
    }

    /// The hardware address of a link; `None` when the link does not exist.
    pub async fn link_mac(&self, index: u32) -> Result<Option<[u8; 6]>> {
        let mut links = self.handle.clone().link().get().match_index(index).execute();
        let link = match links.try_next().await {
            Ok(link) => link,
            Err(e) if is_errno(&e, libc::ENODEV) => None,
            Err(e) => return Err(e).with_context(|| format!("looking up link {index}")),
        };
        Ok(link.and_then(|l| {
            l.attributes.into_iter().find_map(|a| match a {
                LinkAttribute::Address(bytes) => bytes.try_into().ok(),
                _ => None,
            })
        }))
    }

    /// The gateways of the main table's default routes, IPv4's then IPv6's, each with its
    /// output interface.
    pub async fn default_gateways(&self) -> Result<Vec<(IpAddr, Option<u32>)>> {
        let mut routes = vec![];
        for query in
            [RouteMessageBuilder::<Ipv4Addr>::new().build(), RouteMessageBuilder::<Ipv6Addr>::new().build()]
        {
            let family: Vec<_> =
                self.handle.route().get(query).execute().try_collect().await.context("listing routes")?;
            routes.extend(family);
        }
        Ok(routes
            .into_iter()
            .filter(|r| r.header.table == 254 && r.header.destination_prefix_length == 0)
            .filter_map(|r| {
                let mut gateway = None;
                let mut oif = None;
                for attr in &r.attributes {
                    match attr {
                        RouteAttribute::Gateway(RouteAddress::Inet(a)) => gateway = Some(IpAddr::V4(*a)),
                        RouteAttribute::Gateway(RouteAddress::Inet6(a)) => gateway = Some(IpAddr::V6(*a)),
                        RouteAttribute::Oif(i) => oif = Some(*i),
                        _ => {}
                    }
                }
                gateway.map(|g| (g, oif))
            })
            .collect())
    }

    /// IPv4 routes of the main table with their output interface, to refuse subnets that
    /// would shadow what the host already reaches.
    pub async fn routes_v4(&self) -> Result<Vec<(Ipv4Net, Option<u32>)>> {
        let query = RouteMessageBuilder::<Ipv4Addr>::new().build();
        let routes: Vec<_> =
            self.handle.route().get(query).execute().try_collect().await.context("listing routes")?;
        Ok(routes
            .into_iter()
            .filter(|r| r.header.table == 254)
            .filter_map(|r| {
                let mut dst = Ipv4Addr::UNSPECIFIED;
                let mut oif = None;
                for attr in &r.attributes {
                    match attr {
                        RouteAttribute::Destination(RouteAddress::Inet(a)) => dst = *a,
                        RouteAttribute::Oif(i) => oif = Some(*i),
                        _ => {}
                    }
                }
                Ipv4Net::new(dst, r.header.destination_prefix_length).ok().map(|n| (n, oif))
            })
            .collect())
    }
}

/// Turns GRO on for `ifname` inside the namespace at `netns` (ETHTOOL_SGRO; rtnetlink
/// has no say over offloads).
pub fn enable_gro_in(netns: &Path, ifname: &str) -> Result<()> {
    const SIOCETHTOOL: libc::c_ulong = 0x8946;
    const ETHTOOL_SGRO: u32 = 0x2c;
    #[repr(C)]
    struct EthtoolValue {
        cmd: u32,
        data: u32,
    }
    /// `struct ifreq` with `ifr_data` (40 bytes on 64-bit Linux).
    #[repr(C)]
    struct IfreqData {
        name: [u8; libc::IFNAMSIZ],
        data: *mut EthtoolValue,
        _pad: [u8; 16],
    }
    let mut name = [0u8; libc::IFNAMSIZ];
    if ifname.len() >= name.len() {
        anyhow::bail!("interface name {ifname} is too long");
    }
    name[..ifname.len()].copy_from_slice(ifname.as_bytes());
    let ifname = ifname.to_string();
    crate::netns::run_in(netns, move || {
        let socket = std::net::UdpSocket::bind("0.0.0.0:0").context("opening a socket for ethtool")?;
        let mut value = EthtoolValue { cmd: ETHTOOL_SGRO, data: 1 };
        let mut request = IfreqData { name, data: &mut value, _pad: [0; 16] };
        // SAFETY: SIOCETHTOOL reads the ifreq and the ethtool_value it points to, both
        // alive for the call.
        let rc = unsafe { libc::ioctl(socket.as_raw_fd(), SIOCETHTOOL, &mut request) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("turning GRO on for {ifname}"));
        }
        Ok(())
    })
}

/// Turns IPv6 off for `ifname` inside the namespace at `netns` (rtnetlink cannot set
/// IPv6 device settings). A kernel without IPv6 has nothing to turn off. A link whose IPv6
/// is on gets routes in its namespace's IPv6 table (link-local, multicast) as it comes up,
/// and the kernel walks that whole table whenever a link of the namespace goes down or away.
pub fn disable_ipv6_in(netns: &Path, ifname: &str) -> Result<()> {
    ipv6_conf_in(netns, ifname, "disable_ipv6", "1")
}

/// Makes `ifname` inside the namespace at `netns` ignore router advertisements: no
/// default route, prefix or address from a router of its segment.
pub fn ignore_router_advertisements_in(netns: &Path, ifname: &str) -> Result<()> {
    ipv6_conf_in(netns, ifname, "accept_ra", "0")
}

const IPV6_CONF: &str = "/proc/sys/net/ipv6/conf";

/// Writes one IPv6 setting of `ifname` (`/proc/sys/net/ipv6/conf/IFNAME/KEY`) in the
/// namespace at `netns`; a kernel without IPv6 has none to write.
fn ipv6_conf_in(netns: &Path, ifname: &str, key: &'static str, value: &'static str) -> Result<()> {
    let path = format!("{IPV6_CONF}/{ifname}/{key}");
    crate::netns::run_in(netns, move || match std::fs::write(&path, value) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !Path::new(IPV6_CONF).exists() => Ok(()),
        other => other.with_context(|| format!("writing {path}")),
    })
}

/// Deletes links on a thread of its own, after the caller has moved on. The kernel's
/// deletion of a veth waits for RCU grace periods (15–45 ms here, most of a container's
/// removal), and the sending thread waits with it: on the daemon's runtime that would
/// hold a worker, and under the daemon's lock every other request.
///
/// What has queued up meanwhile goes in one deletion: the links are put in a group of
/// their own (`REAPED_GROUP`) and the group is deleted, which the kernel does as one
/// batch with one wait, where a link at a time would wait once each (1,000 removals in a
/// row would leave 20–40 s of deletions behind).
///
/// Only links nothing can use any more come here (a removed container's veth, whose
/// namespace goes too). Each is named by its index, which the kernel does not give
/// again while the link exists, so a new link of the same name is never the one deleted.
/// A deletion the daemon's end cuts short is finished by the kernel: the namespace
/// holding the other end is gone, and a veth pair goes with either end's namespace.
pub struct LinkReaper {
    queue: Option<tokio::sync::mpsc::UnboundedSender<(u32, String)>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The link group of links about to be deleted (`ip link show group 1685090930` lists
/// any that a killed daemon left, which the kernel deletes with their namespace anyway).
/// Groups are free-form numbers, 0 by default; people number theirs from 1, far below.
const REAPED_GROUP: u32 = 0x6470_7272;

/// At most this many links go in one deletion, so that one failed batch costs little.
const REAP_BATCH: usize = 512;

impl LinkReaper {
    /// Starts the thread, with a connection opened here, in the caller's namespace.
    pub fn start() -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .context("starting the link reaper's runtime")?;
        let netlink = {
            let _inside = runtime.enter();
            Netlink::connect()?
        };
        let (queue, mut links) = tokio::sync::mpsc::unbounded_channel::<(u32, String)>();
        let thread = std::thread::Builder::new()
            .name("link-reaper".into())
            .spawn(move || {
                runtime.block_on(async {
                    let mut batch = vec![];
                    while links.recv_many(&mut batch, REAP_BATCH).await > 0 {
                        if let Err(e) = netlink.delete_links(&batch).await {
                            log::warn!("{e:#}");
                        }
                        batch.clear();
                    }
                });
            })
            .context("starting the link reaper's thread")?;
        Ok(Self { queue: Some(queue), thread: Some(thread) })
    }

    /// Queues the deletion of link `name`, now at `index`.
    pub fn delete(&self, index: u32, name: &str) {
        if let Some(queue) = &self.queue
            && queue.send((index, name.to_string())).is_err()
        {
            log::warn!("link {name} stays: the link reaper has stopped");
        }
    }

    /// Deletes what is queued and stops the thread (at the daemon's stop, so that it
    /// leaves no link of a removed container behind).
    pub fn finish(&mut self) {
        self.queue = None;
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            log::warn!("the link reaper's thread panicked");
        }
    }
}

impl Netlink {
    /// Deletes the links a link reaper marked for deletion (`REAPED_GROUP`) and did not
    /// delete: its daemon was killed between the two steps. For a start of the daemon.
    pub async fn delete_reaped_links(&self) -> Result<()> {
        let mut delete = self.handle.clone().link().del(0);
        delete.message_mut().attributes.push(LinkAttribute::Group(REAPED_GROUP));
        match delete.execute().await {
            // None is left.
            Err(e) if is_errno(&e, libc::ENODEV) => Ok(()),
            other => other.context("deleting the links a killed daemon left marked for deletion"),
        }
    }

    /// Deletes the links at these indexes (with their names, for errors) in one batch:
    /// into `REAPED_GROUP`, then the group. A link already gone is skipped.
    async fn delete_links(&self, links: &[(u32, String)]) -> Result<()> {
        if let [(index, name)] = links {
            return self.delete_link_index(*index, name).await;
        }
        for (index, name) in links {
            let mut message = LinkUnspec::new_with_index(*index).build();
            message.attributes.push(LinkAttribute::Group(REAPED_GROUP));
            match self.set_link(message).await {
                Err(e) if is_errno(&e, libc::ENODEV) => {}
                other => other.with_context(|| format!("marking link {name} for deletion"))?,
            }
        }
        let mut delete = self.handle.clone().link().del(0);
        delete.message_mut().attributes.push(LinkAttribute::Group(REAPED_GROUP));
        let names: Vec<&str> = links.iter().map(|(_, name)| name.as_str()).collect();
        delete.execute().await.with_context(|| format!("deleting links {}", names.join(", ")))
    }
}
