//! The kernel side as the daemon sees it: loads the object once, pins its programs and
//! maps under the bpffs directory (maps survive a daemon restart and are reused, unless
//! their layout changed), attaches `from_container` to host-side veths, `from_uplink`
//! and `uplink_xdp` to the uplink and `from_tunnel` to the VXLAN device, and writes the
//! tables the programs decide from.

use std::{
    collections::{HashMap as StdHashMap, HashSet},
    fs,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::{AsFd, AsRawFd},
    path::Path,
};

use anyhow::{Context, Result, anyhow};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, LpmTrie, Map, MapData, PerCpuArray, ProgramArray, RingBuf, lpm_trie::Key},
    programs::{
        CgroupAttachMode, CgroupSockAddr, SchedClassifier, TcAttachType, Xdp, XdpMode,
        cgroup_sock_addr::CgroupSockAddrLinkId,
        links::{FdLink, Link as _, PinnedLink},
        tc::{NlOptions, SchedClassifierLink, TcAttachOptions, TcHandle},
        xdp::XdpLink,
    },
};
use dataplane_common::{
    AF_INET6, Backend, Counter, DnatEntry, Endpoint, EndpointCounters, EndpointKey, FirewallDirectKey,
    FirewallKey, FirewallKey6, FirewallVerdict, FlowKey, HostConfig, IPPROTO_ICMP, InterfaceConfig,
    IpAddress, NatConfig, Path as DpPath, PublishKey, RemoteEndpoint, RevSnatEntry, SnatEntry, SubnetInfo,
    SubnetKey, TunnelConfig, ct_event, map_names, program_names,
};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// Where our programs sit among an interface's ingress filters.
const FILTER_PRIORITY: u16 = 1;
const FILTER_HANDLE: TcHandle = TcHandle::new(0, 1);

/// The kernel object built by build.rs from dataplane-ebpf.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/dataplane"));

const BPF_FS_MAGIC: i64 = 0xcafe4a11;

/// Mounts a bpffs on `dir` unless one is there already, as Cilium does with its own.
pub fn ensure_bpffs(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let stat = nix::sys::statfs::statfs(dir).with_context(|| format!("statfs {}", dir.display()))?;
    if stat.filesystem_type().0 as i64 == BPF_FS_MAGIC {
        return Ok(());
    }
    nix::mount::mount(Some("bpffs"), dir, Some("bpf"), nix::mount::MsFlags::empty(), Some("mode=0700"))
        .with_context(|| format!("mounting bpffs on {}", dir.display()))
}

/// The kernel's BPF features the programs use, probed now: their names and whether this
/// kernel has each (`dataplane version` shows them). Probing loads programs and makes
/// maps, which takes CAP_BPF: the daemon's to do.
pub fn bpf_features() -> Vec<(&'static str, bool)> {
    use aya::{
        maps::MapType,
        programs::ProgramType,
        sys::{is_map_supported, is_program_supported},
    };
    let program = |kind| is_program_supported(kind).unwrap_or(false);
    let map = |kind| is_map_supported(kind).unwrap_or(false);
    vec![
        ("tc (sched_cls)", program(ProgramType::SchedClassifier)),
        ("xdp", program(ProgramType::Xdp)),
        ("cgroup sock_addr", program(ProgramType::CgroupSockAddr)),
        ("lru_hash", map(MapType::LruHash)),
        ("lpm_trie", map(MapType::LpmTrie)),
        ("btf", aya::features().btf().is_some()),
    ]
}

/// The network namespace cookie of the caller (SO_NETNS_COOKIE), as bpf_get_netns_cookie
/// reports it for sockets of that namespace.
pub fn current_netns_cookie() -> Result<u64> {
    const SO_NETNS_COOKIE: i32 = 71;
    let socket = std::net::UdpSocket::bind("127.0.0.1:0")
        .or_else(|_| std::net::UdpSocket::bind("0.0.0.0:0"))
        .context("opening a socket to read the namespace cookie")?;
    let mut cookie = 0u64;
    let mut len = size_of::<u64>() as u32;
    // SAFETY: getsockopt writes at most `len` bytes into `cookie`.
    let rc = unsafe {
        libc::getsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&socket),
            libc::SOL_SOCKET,
            SO_NETNS_COOKIE,
            (&raw mut cookie).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("getsockopt(SO_NETNS_COOKIE)");
    }
    Ok(cookie)
}

/// The cgroup2 mount, from /proc/mounts.
pub fn cgroup2_root() -> Option<std::path::PathBuf> {
    let mounts = fs::read_to_string("/proc/mounts").ok()?;
    mounts.lines().find_map(|l| {
        let mut fields = l.split_whitespace();
        let (_, dir, kind) = (fields.next()?, fields.next()?, fields.next()?);
        (kind == "cgroup2").then(|| std::path::PathBuf::from(dir))
    })
}

/// An address as the programs' keys hold it.
pub fn ip_address(ip: IpAddr) -> IpAddress {
    match ip {
        IpAddr::V4(ip) => IpAddress::v4(ip.octets()),
        IpAddr::V6(ip) => IpAddress::v6(ip.octets()),
    }
}

/// The address `ip` holds: `ip_address` the other way.
pub fn ip_addr(ip: &IpAddress) -> IpAddr {
    if ip.family == AF_INET6 {
        Ipv6Addr::from(ip.addr).into()
    } else {
        Ipv4Addr::new(ip.addr[0], ip.addr[1], ip.addr[2], ip.addr[3]).into()
    }
}

pub fn endpoint_key(network: u32, ip: IpAddr) -> EndpointKey {
    EndpointKey { network, ip: ip_address(ip) }
}

fn subnet_key(subnet: IpNet) -> Key<SubnetKey> {
    let IpAddress { family, addr, .. } = ip_address(subnet.network());
    Key::new(
        SubnetKey::FAMILY_BITS + u32::from(subnet.prefix_len()),
        SubnetKey { family: u32::from(family), addr },
    )
}

/// A SUBNETS key as a map key of user space: family, address and prefix length.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct SubnetId {
    family: u32,
    addr: [u8; 16],
    prefix_len: u32,
}

impl SubnetId {
    fn of(key: &Key<SubnetKey>) -> Self {
        let data = key.data();
        Self { family: data.family, addr: data.addr, prefix_len: key.prefix_len() }
    }
}

/// The programs behind the uplink's tail calls that the networks need.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct UplinkNeeds {
    ipv6: bool,
    reachable_ipv4: bool,
    reachable_ipv6: bool,
    xdp_v6: bool,
}

/// What the programs expect of a map they pin.
struct PinnedLayout {
    name: &'static str,
    key_size: usize,
    value_size: usize,
    /// The length of arrays indexed by an enumeration or an ifindex; `None` for tables
    /// whose size is a setting.
    entries: Option<u32>,
}

fn layout<K, V>(name: &'static str, entries: Option<u32>) -> PinnedLayout {
    PinnedLayout { name, key_size: size_of::<K>(), value_size: size_of::<V>(), entries }
}

fn firewall_key(rule_set: u16, source: Ipv4Net) -> Key<FirewallKey> {
    Key::new(
        FirewallKey::RULE_SET_BITS + u32::from(source.prefix_len()),
        FirewallKey { rule_set: u32::from(rule_set).to_be(), addr: source.network().octets() },
    )
}

fn firewall_key6(rule_set: u16, source: Ipv6Net) -> Key<FirewallKey6> {
    Key::new(
        FirewallKey::RULE_SET_BITS + u32::from(source.prefix_len()),
        FirewallKey6 { rule_set: u32::from(rule_set).to_be(), addr: source.network().octets() },
    )
}

fn pinned_layouts() -> [PinnedLayout; 28] {
    use dataplane_common::{SockRevKey, SockRevKey6, SockRevValue, SockRevValue6};
    [
        layout::<EndpointKey, Endpoint>(map_names::ENDPOINTS, None),
        layout::<u32, InterfaceConfig>(map_names::INTERFACES, None),
        layout::<u32, InterfaceConfig>(map_names::INTERFACES_BY_INDEX, Some(InterfaceConfig::INDEX_LIMIT)),
        layout::<Key<SubnetKey>, SubnetInfo>(map_names::SUBNETS, None),
        layout::<u32, Counter>(map_names::COUNTERS, Some(DpPath::COUNT)),
        layout::<u32, EndpointCounters>(map_names::ENDPOINT_COUNTERS, Some(EndpointCounters::SLOTS)),
        layout::<u32, u64>(map_names::CT_EVENTS, Some(ct_event::COUNT)),
        layout::<u32, NatConfig>(map_names::NAT_CONFIG, Some(1)),
        layout::<FlowKey, SnatEntry>(map_names::SNAT_CT, None),
        layout::<FlowKey, RevSnatEntry>(map_names::SNAT_REV, None),
        layout::<FlowKey, SnatEntry>(map_names::SNAT_NEW, None),
        layout::<FlowKey, RevSnatEntry>(map_names::SNAT_REV_NEW, None),
        layout::<PublishKey, Backend>(map_names::PUBLISHED, None),
        layout::<FlowKey, DnatEntry>(map_names::DNAT_CT, None),
        layout::<FlowKey, DnatEntry>(map_names::DNAT_NEW, None),
        layout::<u32, HostConfig>(map_names::HOST_CONFIG, Some(1)),
        layout::<SockRevKey, SockRevValue>(map_names::SOCK_REVNAT, None),
        layout::<SockRevKey6, SockRevValue6>(map_names::SOCK_REVNAT6, None),
        layout::<Key<FirewallKey>, FirewallVerdict>(map_names::FIREWALL, Some(FirewallVerdict::TRIE_SIZE)),
        layout::<Key<FirewallKey6>, FirewallVerdict>(map_names::FIREWALL6, Some(FirewallVerdict::TRIE_SIZE)),
        layout::<u32, u64>(map_names::FIREWALL_HITS, Some(FirewallVerdict::MAX_RULES)),
        layout::<Key<FirewallDirectKey>, u16>(map_names::FIREWALL_DIRECT, Some(FirewallDirectKey::TRIE_SIZE)),
        // A program array: slot index to program fd.
        layout::<u32, u32>(map_names::UPLINK_V6, Some(1)),
        layout::<u32, u32>(map_names::UPLINK_ROUTED, Some(2)),
        layout::<u32, u32>(map_names::UPLINK_XDP_V6, Some(1)),
        layout::<EndpointKey, RemoteEndpoint>(map_names::REMOTE_ENDPOINTS, None),
        layout::<u32, u32>(map_names::TUNNEL_NETWORKS, None),
        layout::<u32, TunnelConfig>(map_names::TUNNEL_CONFIG, Some(1)),
    ]
}

/// Removes the pins that a daemon of another version left with another layout (their
/// entries are lost): the loader would hand them to programs that misread them.
fn remove_pins_of_other_layouts(maps_dir: &Path) -> Result<()> {
    for expected in pinned_layouts() {
        let pin = maps_dir.join(expected.name);
        let Ok(info) = aya::maps::MapInfo::from_pin(&pin) else {
            continue;
        };
        let same = info.key_size() as usize == expected.key_size
            && info.value_size() as usize == expected.value_size
            && expected.entries.is_none_or(|entries| entries == info.max_entries());
        if !same {
            log::warn!(
                "map {} was pinned with another layout by an earlier version; starting it afresh",
                expected.name
            );
            fs::remove_file(&pin).with_context(|| format!("removing {}", pin.display()))?;
        }
    }
    Ok(())
}

pub struct Datapath {
    ebpf: Ebpf,
    /// Interfaces our filters are on (attached or found by this daemon).
    filters: HashSet<String>,
    /// The socket hooks' attachments; they detach when the daemon exits.
    cgroup_links: Vec<(&'static str, CgroupSockAddrLinkId)>,
    /// Pins of XDP attachments, which outlive the daemon as the filters do.
    links_dir: std::path::PathBuf,
    /// `uplink_xdp` runs on the uplink: publishing containers should take XDP frames.
    uplink_xdp: bool,
    /// `from_uplink` runs, on an uplink or alone (packet tests, the bench): the programs
    /// behind it follow the networks (`serve_networks_on_uplink`).
    uplink_in_use: bool,
    /// SUBNETS as written (read once at load, then kept with each write): what the
    /// programs behind the uplink follow, without a walk of the trie per change.
    subnet_flags: StdHashMap<SubnetId, u32>,
    /// What was last put behind the uplink: its slots are written only when this changes.
    uplink_served: Option<UplinkNeeds>,
    /// Where the tc programs are pinned (their run counts are read there).
    programs_dir: std::path::PathBuf,
    /// Which endpoint counts in which slot of ENDPOINT_COUNTERS, by host-side veth.
    counter_slots: CounterSlots,
}

/// Slots of ENDPOINT_COUNTERS by host-side veth name: the lowest free one for a new
/// endpoint (slot 0 is nobody's).
#[derive(Default)]
struct CounterSlots {
    by_veth: StdHashMap<String, u16>,
}

impl CounterSlots {
    fn of(&self, host_veth: &str) -> Option<u16> {
        self.by_veth.get(host_veth).copied()
    }

    fn is_taken(&self, slot: u16) -> bool {
        self.by_veth.values().any(|s| *s == slot)
    }

    fn lowest_free(&self) -> Option<u16> {
        let taken: HashSet<u16> = self.by_veth.values().copied().collect();
        (1..EndpointCounters::SLOTS).map(|s| s as u16).find(|s| !taken.contains(s))
    }

    fn claim(&mut self, host_veth: &str, slot: u16) {
        self.by_veth.insert(host_veth.to_string(), slot);
    }

    fn release(&mut self, host_veth: &str) {
        self.by_veth.remove(host_veth);
    }
}

/// Loads those of the programs `names` that are not loaded yet, each on a thread of its
/// own: the verifier runs in the loading thread, seconds for the larger programs, so
/// programs are verified side by side on as many cores as are free.
fn load_side_by_side(ebpf: &mut Ebpf, names: &[&str]) -> Result<()> {
    for name in names {
        ebpf.program(name).ok_or_else(|| anyhow!("program {name} missing from the object"))?;
    }
    std::thread::scope(|scope| {
        let loads: Vec<_> = ebpf
            .programs_mut()
            .filter(|(name, program)| names.contains(name) && program.fd().is_err())
            .map(|(name, program)| scope.spawn(move || load_program(name, program)))
            .collect();
        loads
            .into_iter()
            .try_for_each(|load| load.join().map_err(|_| anyhow!("a loading thread panicked"))?)
    })
}

fn load_program(name: &str, program: &mut aya::programs::Program) -> Result<()> {
    let loaded = match program {
        aya::programs::Program::SchedClassifier(program) => program.load(),
        aya::programs::Program::Xdp(program) => program.load(),
        aya::programs::Program::CgroupSockAddr(program) => program.load(),
        _ => return Err(anyhow!("{name} is of a kind of program the daemon does not load")),
    };
    loaded.with_context(|| format!("the verifier refused {name}"))
}

/// Loads the tc program `name` (unless it is loaded) and pins it in `programs_dir`, where
/// its run counts are read (the pin of an earlier run names the old program and is
/// replaced).
fn load_classifier(ebpf: &mut Ebpf, name: &str, programs_dir: &Path) -> Result<()> {
    load_side_by_side(ebpf, &[name])?;
    pin_classifier(ebpf, name, programs_dir)
}

fn pin_classifier(ebpf: &mut Ebpf, name: &str, programs_dir: &Path) -> Result<()> {
    let program: &mut SchedClassifier = ebpf
        .program_mut(name)
        .ok_or_else(|| anyhow!("program {name} missing from the object"))?
        .try_into()?;
    let pin = programs_dir.join(name);
    let _ = fs::remove_file(&pin);
    program.pin(&pin).with_context(|| format!("pinning program at {}", pin.display()))
}

impl Datapath {
    /// Loads the programs and maps, reusing the maps pinned under `bpffs` by an earlier
    /// run, with `conntrack_size` entries in each conntrack table (tables pinned by an
    /// earlier run keep their size; resizing means removing them), a monitor ring
    /// buffer of `monitor_ring_size` bytes (`check_ring_size`), and the programs'
    /// diagnostic messages built up to the level `kernel_log` (the verifier leaves the
    /// more detailed ones out). The programs `also` (the uplink's, of those loaded on first
    /// use) are loaded with the others, side by side.
    pub fn load(
        bpffs: &Path,
        conntrack_size: u32,
        monitor_ring_size: u32,
        kernel_log: log::LevelFilter,
        also: &[&str],
    ) -> Result<Self> {
        ensure_bpffs(bpffs)?;
        let maps_dir = bpffs.join("maps");
        let programs_dir = bpffs.join("programs");
        let links_dir = bpffs.join("links");
        for dir in [&maps_dir, &programs_dir, &links_dir] {
            fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        remove_pins_of_other_layouts(&maps_dir)?;
        let conntrack_tables = [
            map_names::SNAT_CT,
            map_names::SNAT_REV,
            map_names::SNAT_NEW,
            map_names::SNAT_REV_NEW,
            map_names::DNAT_CT,
            map_names::DNAT_NEW,
        ];
        // aya-log's levels and the log crate's filters share their numbers (off 0, error 1,
        // ..., trace 5).
        let kernel_log_level = kernel_log as usize as u8;
        let mut loader = EbpfLoader::new();
        loader.default_map_pin_directory(&maps_dir);
        for table in conntrack_tables {
            loader.map_max_entries(table, conntrack_size);
        }
        loader.map_max_entries(map_names::MONITOR_EVENTS, monitor_ring_size);
        loader.override_global(aya_log::LEVEL, &kernel_log_level, true);
        let mut ebpf = loader
            .load(EBPF_OBJECT)
            .context("loading the eBPF object (is this kernel BPF-enabled, and are we root?)")?;
        for table in conntrack_tables {
            let pinned = aya::maps::MapInfo::from_pin(maps_dir.join(table)).ok().map(|i| i.max_entries());
            if let Some(size) = pinned.filter(|size| *size != conntrack_size) {
                log::warn!(
                    "conntrack table {table} keeps its {size} entries from an earlier run; to resize it, stop \
                     the daemon and remove {}",
                    maps_dir.join(table).display()
                );
            }
        }
        // The uplink's programs (`from_uplink`, `from_uplink_v6`, `uplink_xdp`) wait until
        // an uplink takes them: the verifier takes seconds over each, and a host without
        // an uplink, or without XDP on it, never needs them.
        let at_start: Vec<&str> = [program_names::FROM_CONTAINER, program_names::FROM_TUNNEL]
            .into_iter()
            .chain(program_names::HOST_HOOKS)
            .chain(also.iter().copied())
            .collect();
        load_side_by_side(&mut ebpf, &at_start)?;
        for name in at_start {
            if matches!(ebpf.program(name), Some(aya::programs::Program::SchedClassifier(_))) {
                pin_classifier(&mut ebpf, name, &programs_dir)?;
            }
        }
        let subnet_flags = {
            let map = ebpf.map_mut(map_names::SUBNETS).ok_or_else(|| anyhow!("map SUBNETS missing"))?;
            let trie: LpmTrie<&mut MapData, SubnetKey, SubnetInfo> = LpmTrie::try_from(map)?;
            trie.iter()
                .map(|entry| entry.map(|(key, info)| (SubnetId::of(&key), info.flags)))
                .collect::<Result<_, _>>()
                .context("reading SUBNETS")?
        };
        Ok(Self {
            ebpf,
            programs_dir,
            filters: HashSet::new(),
            cgroup_links: vec![],
            links_dir,
            uplink_xdp: false,
            uplink_in_use: false,
            subnet_flags,
            uplink_served: None,
            counter_slots: CounterSlots::default(),
        })
    }

    /// Attaches the socket hooks to `cgroup` (other programs may sit there too), scoped to
    /// sockets of the namespace with `netns_cookie`.
    pub fn attach_host_hooks(&mut self, cgroup: &Path, netns_cookie: u64) -> Result<()> {
        self.set_host_config(HostConfig { netns_cookie })?;
        for name in program_names::HOST_HOOKS {
            let file =
                fs::File::open(cgroup).with_context(|| format!("opening cgroup {}", cgroup.display()))?;
            let program: &mut CgroupSockAddr =
                self.ebpf.program_mut(name).ok_or_else(|| anyhow!("program {name} missing"))?.try_into()?;
            // On this kernel the attachment is a bpf_link, which always coexists with other
            // programs on the cgroup; link_create takes no attach flags (Single = none).
            let link = program
                .attach(file, CgroupAttachMode::Single)
                .with_context(|| format!("attaching {name} to cgroup {}", cgroup.display()))?;
            self.cgroup_links.push((name, link));
        }
        Ok(())
    }

    pub fn set_host_config(&mut self, config: HostConfig) -> Result<()> {
        let map =
            self.ebpf.map_mut(map_names::HOST_CONFIG).ok_or_else(|| anyhow!("map HOST_CONFIG missing"))?;
        let mut array: Array<&mut MapData, HostConfig> = Array::try_from(map)?;
        array.set(0, config, 0).context("writing HOST_CONFIG")
    }

    pub fn program(&mut self) -> Result<&mut SchedClassifier> {
        self.program_named(program_names::FROM_CONTAINER)
    }

    /// The tc program `name`; the uplink's are loaded on first use (`from_uplink` alone,
    /// those behind it alone too, for a direct run: their tail-call slots follow the
    /// networks once `from_uplink` is in use), as `into_isolated` is (the first isolated
    /// network's).
    pub fn program_named(&mut self, name: &str) -> Result<&mut SchedClassifier> {
        if name == program_names::FROM_UPLINK || name == program_names::INTO_ISOLATED {
            let program: &mut SchedClassifier =
                self.ebpf.program_mut(name).ok_or_else(|| anyhow!("program {name} missing"))?.try_into()?;
            if program.fd().is_err() {
                load_classifier(&mut self.ebpf, name, &self.programs_dir)?;
            }
        } else if [
            program_names::FROM_UPLINK_V6,
            program_names::FROM_UPLINK_ROUTED,
            program_names::FROM_UPLINK_ROUTED_V6,
        ]
        .contains(&name)
        {
            load_side_by_side(&mut self.ebpf, &[name])?;
        }
        Ok(self.ebpf.program_mut(name).ok_or_else(|| anyhow!("program {name} missing"))?.try_into()?)
    }

    /// Attaches `from_container` to the ingress of a host-side veth (idempotent). The
    /// caller gives the veth an ingress qdisc first (`Netlink::add_ingress_qdisc`).
    pub fn attach(&mut self, ifname: &str) -> Result<()> {
        self.attach_filter(program_names::FROM_CONTAINER, ifname, TcAttachType::Ingress)
    }

    /// Attaches `from_uplink` to the uplink's ingress (idempotent), on a clsact qdisc:
    /// the uplink's egress may carry filters too.
    pub fn attach_uplink(&mut self, ifname: &str) -> Result<()> {
        // Already there after a restart: the attach below says so if it is missing.
        let _ = aya::programs::tc::qdisc_add_clsact(ifname);
        self.attach_filter(program_names::FROM_UPLINK, ifname, TcAttachType::Ingress)?;
        self.uplink_in_use = true;
        self.serve_networks_on_uplink()
    }

    /// Puts behind the uplink's programs, by tail call, those the networks in SUBNETS
    /// need, and takes out those none needs: `from_uplink_v6` (and `uplink_xdp_v6` where
    /// XDP runs) for IPv6 subnets, `from_uplink_routed` for routed or unprotected IPv4
    /// ones, `from_uplink_routed_v6` for routed or unprotected IPv6 ones. The verifier
    /// takes seconds over each, which a host without such networks never pays; an empty
    /// slot leaves that traffic to the host, which is all there is for it then. At a
    /// start, SUBNETS still holds the earlier run's networks, so that their flows keep
    /// their programs while the state is restored.
    fn serve_networks_on_uplink(&mut self) -> Result<()> {
        if !self.uplink_in_use {
            return Ok(());
        }
        let mut needs = UplinkNeeds::default();
        for (subnet, flags) in &self.subnet_flags {
            let v6 = subnet.family == u32::from(dataplane_common::AF_INET6);
            needs.ipv6 |= v6;
            needs.reachable_ipv4 |= !v6 && flags & SubnetInfo::REACHABLE != 0;
            needs.reachable_ipv6 |= v6 && flags & SubnetInfo::REACHABLE != 0;
        }
        needs.xdp_v6 = needs.ipv6 && self.uplink_xdp;
        if self.uplink_served == Some(needs) {
            return Ok(());
        }
        self.serve_behind_uplink(program_names::FROM_UPLINK_V6, (map_names::UPLINK_V6, 0), needs.ipv6)?;
        let routed = (map_names::UPLINK_ROUTED, 0);
        self.serve_behind_uplink(program_names::FROM_UPLINK_ROUTED, routed, needs.reachable_ipv4)?;
        let routed_v6 = (map_names::UPLINK_ROUTED, 1);
        self.serve_behind_uplink(program_names::FROM_UPLINK_ROUTED_V6, routed_v6, needs.reachable_ipv6)?;
        let xdp_v6 = (map_names::UPLINK_XDP_V6, 0);
        self.serve_behind_uplink(program_names::UPLINK_XDP_V6, xdp_v6, needs.xdp_v6)?;
        self.uplink_served = Some(needs);
        Ok(())
    }

    /// Loads the tc or XDP program `name` (unless it is) and puts it in slot `slot` of the
    /// tail-call array `slots`; without `wanted`, empties the slot.
    fn serve_behind_uplink(&mut self, name: &str, (slots, slot): (&str, u32), wanted: bool) -> Result<()> {
        let fd = if wanted {
            load_side_by_side(&mut self.ebpf, &[name])?;
            let program = self.ebpf.program(name).ok_or_else(|| anyhow!("program {name} missing"))?;
            Some(program.fd()?.try_clone()?)
        } else {
            None
        };
        let map = self.ebpf.map_mut(slots).ok_or_else(|| anyhow!("map {slots} missing"))?;
        let mut tail_calls: ProgramArray<&mut MapData> = ProgramArray::try_from(map)?;
        match fd {
            Some(fd) => tail_calls.set(slot, &fd, 0).with_context(|| format!("putting {name} in {slots}")),
            None => match tail_calls.clear_index(&slot) {
                Err(aya::maps::MapError::SyscallError(e))
                    if e.io_error.raw_os_error() == Some(libc::ENOENT) =>
                {
                    Ok(())
                }
                cleared => cleared.with_context(|| format!("taking {name} out of {slots}")),
            },
        }
    }

    /// Attaches `from_tunnel` to the VXLAN device's ingress (idempotent), on a clsact
    /// qdisc, and tells the programs where the device is (`config.ifindex`, `ifname`)
    /// and over which underlay family they tunnel.
    pub fn attach_tunnel(&mut self, ifname: &str, config: TunnelConfig) -> Result<()> {
        // Already there on a device an earlier run kept: the attach below says so if it
        // is missing.
        let _ = aya::programs::tc::qdisc_add_clsact(ifname);
        self.attach_filter(program_names::FROM_TUNNEL, ifname, TcAttachType::Ingress)?;
        self.set_tunnel_config(config)
    }

    /// Tells the programs that the VXLAN device is gone: overlay frames for other hosts
    /// go to the kernel, which has no way there.
    pub fn detach_tunnel(&mut self, ifname: &str) -> Result<()> {
        self.set_tunnel_config(TunnelConfig::default())?;
        self.filters.remove(ifname);
        Ok(())
    }

    fn set_tunnel_config(&mut self, config: TunnelConfig) -> Result<()> {
        let name = map_names::TUNNEL_CONFIG;
        let map = self.ebpf.map_mut(name).ok_or_else(|| anyhow!("map {name} missing"))?;
        let mut array: Array<&mut MapData, TunnelConfig> = Array::try_from(map)?;
        array.set(0, config, 0).with_context(|| format!("writing {name}"))
    }

    /// The overlay endpoints on other hosts the programs know.
    pub fn remote_endpoints(&mut self) -> Result<std::collections::HashMap<EndpointKey, RemoteEndpoint>> {
        let map = self.hash_map::<EndpointKey, RemoteEndpoint>(map_names::REMOTE_ENDPOINTS)?;
        Ok(map.iter().filter_map(|e| e.ok()).collect())
    }

    pub fn set_remote_endpoint(&mut self, key: EndpointKey, remote: RemoteEndpoint) -> Result<()> {
        self.hash_map(map_names::REMOTE_ENDPOINTS)?.insert(key, remote, 0).context("writing REMOTE_ENDPOINTS")
    }

    pub fn remove_remote_endpoint(&mut self, key: EndpointKey) -> Result<()> {
        remove_missing_ok(
            self.hash_map::<EndpointKey, RemoteEndpoint>(map_names::REMOTE_ENDPOINTS)?.remove(&key),
        )
    }

    /// VNI → overlay network index, as the programs know them.
    pub fn tunnel_networks(&mut self) -> Result<std::collections::HashMap<u32, u32>> {
        let map = self.hash_map::<u32, u32>(map_names::TUNNEL_NETWORKS)?;
        Ok(map.iter().filter_map(|e| e.ok()).collect())
    }

    pub fn set_tunnel_network(&mut self, vni: u32, network: u32) -> Result<()> {
        self.hash_map(map_names::TUNNEL_NETWORKS)?
            .insert(vni, network, 0)
            .with_context(|| format!("writing TUNNEL_NETWORKS[{vni}]"))
    }

    pub fn remove_tunnel_network(&mut self, vni: u32) -> Result<()> {
        remove_missing_ok(self.hash_map::<u32, u32>(map_names::TUNNEL_NETWORKS)?.remove(&vni))
    }

    /// A cls_bpf filter (direct action) on the interface's ingress qdisc rather than a
    /// tcx link: attaching tcx waits for an RCU grace period (about 10 ms here, half of a
    /// container's set-up), this does not; and the filter outlives the daemon, so the
    /// fast path and the NAT keep working while it restarts. Priority and handle are fixed
    /// so that a restarted daemon finds the filter and swaps its own program in.
    fn attach_filter(&mut self, name: &'static str, ifname: &str, direction: TcAttachType) -> Result<()> {
        if self.filters.contains(ifname) {
            return Ok(());
        }
        let program = self.program_named(name)?;
        let options = NlOptions { priority: FILTER_PRIORITY, handle: FILTER_HANDLE, classid: None };
        let link = match program.attach_with_options(ifname, direction, TcAttachOptions::Netlink(options)) {
            Ok(link) => link,
            Err(first) => {
                let existing = Self::filter_link(ifname, direction)
                    .map_err(|_| first)
                    .with_context(|| format!("attaching {name} to {ifname}"))?;
                program
                    .attach_to_link(existing)
                    .with_context(|| format!("replacing the program on {ifname}'s filter"))?
            }
        };
        // The filter must outlive the daemon: aya would remove it when the link handle
        // drops, so the handle is let go of; `detach` finds the filter again by its
        // priority and handle.
        std::mem::forget(program.take_link(link)?);
        self.filters.insert(ifname.to_string());
        Ok(())
    }

    /// Runs `uplink_xdp` on the uplink in driver mode, so that packets for published
    /// ports reach their container before the host builds an skb for them. The link is
    /// pinned, so it outlives the daemon like the filters; a restarted daemon swaps its
    /// program in. Without `enable`, a pinned attachment of an earlier run is removed.
    /// Returns whether XDP runs there: a driver without native XDP leaves it all to tc.
    pub fn attach_uplink_xdp(&mut self, ifname: &str, ifindex: u32, enable: bool) -> Result<bool> {
        let pin = self.links_dir.join(format!("xdp-{ifname}"));
        // An earlier run's uplink that is not this one keeps no program of ours.
        self.remove_xdp_pins_but(Some(&pin))?;
        let earlier = PinnedLink::from_pin(&pin).ok();
        if !enable {
            if let Some(earlier) = earlier {
                // The last reference to the link goes with the pin and this descriptor.
                earlier.unpin().with_context(|| format!("removing {}", pin.display()))?;
            }
            self.uplink_xdp = false;
            return Ok(false);
        }
        load_side_by_side(&mut self.ebpf, &[program_names::UPLINK_XDP])?;
        let program = self.xdp_named(program_names::UPLINK_XDP)?;
        let id = match earlier {
            Some(earlier) => {
                let link = XdpLink::try_from(
                    earlier.unpin().with_context(|| format!("taking over {}", pin.display()))?,
                )?;
                program
                    .attach_to_link(link)
                    .with_context(|| format!("replacing the XDP program on {ifname}"))?
            }
            None => match program.attach_to_if_index(ifindex, XdpMode::Driver) {
                Ok(id) => id,
                Err(e) => {
                    log::info!("no native XDP on {ifname} ({e}): published ports are served from tc");
                    self.uplink_xdp = false;
                    return Ok(false);
                }
            },
        };
        let link = program.take_link(id)?;
        match FdLink::try_from(link) {
            Ok(fd_link) => {
                fd_link.pin(&pin).with_context(|| format!("pinning the XDP link at {}", pin.display()))?;
            }
            // A netlink attachment (kernels without XDP links) stays until removed.
            Err(_) => log::warn!(
                "XDP on {ifname} is a netlink attachment; `ip link set {ifname} xdp off` removes it"
            ),
        }
        self.uplink_xdp = true;
        self.serve_networks_on_uplink()?;
        Ok(true)
    }

    /// Takes `uplink_xdp` off every interface an earlier run left it on (the last reference
    /// to a link goes with its pin), but the one pinned at `keep`.
    pub fn remove_xdp_pins_but(&mut self, keep: Option<&Path>) -> Result<()> {
        let listing =
            fs::read_dir(&self.links_dir).with_context(|| format!("listing {}", self.links_dir.display()))?;
        for entry in listing {
            let pin = entry?.path();
            let is_xdp = pin.file_name().is_some_and(|n| n.to_string_lossy().starts_with("xdp-"));
            if is_xdp && Some(pin.as_path()) != keep {
                fs::remove_file(&pin).with_context(|| format!("removing {}", pin.display()))?;
            }
        }
        self.uplink_xdp = false;
        Ok(())
    }

    /// `uplink_xdp`, loaded on first use with `uplink_xdp_v6` behind it whatever the
    /// networks (packet tests and the bench run it alone).
    pub fn xdp_program(&mut self) -> Result<&mut Xdp> {
        let name = program_names::UPLINK_XDP;
        load_side_by_side(&mut self.ebpf, &[name, program_names::UPLINK_XDP_V6])?;
        self.serve_behind_uplink(program_names::UPLINK_XDP_V6, (map_names::UPLINK_XDP_V6, 0), true)?;
        self.xdp_named(name)
    }

    /// The XDP program `name` of the object, loaded or not (`xdp_program` loads both).
    pub fn xdp_named(&mut self, name: &str) -> Result<&mut Xdp> {
        Ok(self.ebpf.program_mut(name).ok_or_else(|| anyhow!("program {name} missing"))?.try_into()?)
    }

    /// Loads `from_uplink` and puts behind it what the networks in SUBNETS need, as an
    /// uplink does (`serve_networks_on_uplink`), without attaching it anywhere: packet
    /// tests and the bench run it alone, and verify only what their networks use.
    pub fn load_uplink_programs(&mut self) -> Result<()> {
        self.program_named(program_names::FROM_UPLINK)?;
        self.uplink_in_use = true;
        self.serve_networks_on_uplink()
    }

    /// Whether `uplink_xdp` runs on the uplink.
    pub fn uplink_xdp(&self) -> bool {
        self.uplink_xdp
    }

    fn filter_link(ifname: &str, direction: TcAttachType) -> std::io::Result<SchedClassifierLink> {
        SchedClassifierLink::attached(ifname, direction, FILTER_PRIORITY, FILTER_HANDLE, None)
    }

    /// Attaches `into_isolated` to the egress of an isolated network's bridge (idempotent),
    /// on a clsact qdisc: what the host sends into the network. Loaded on first use.
    pub fn attach_into_isolated(&mut self, bridge: &str) -> Result<()> {
        // Already there on a bridge an earlier run kept: the attach below says so if not.
        let _ = aya::programs::tc::qdisc_add_clsact(bridge);
        self.attach_filter(program_names::INTO_ISOLATED, bridge, TcAttachType::Egress)
    }

    /// Forgets the filter of a bridge that is going: it goes with the bridge.
    pub fn forget_bridge_filter(&mut self, bridge: &str) {
        self.filters.remove(bridge);
    }

    /// Removes our filter from an interface; one whose interface is gone went with it.
    pub fn detach(&mut self, ifname: &str) -> Result<()> {
        if self.filters.remove(ifname) && nix::net::if_::if_nametoindex(ifname).is_ok() {
            let link = Self::filter_link(ifname, TcAttachType::Ingress)
                .with_context(|| format!("finding our filter on {ifname}"))?;
            link.detach().with_context(|| format!("removing our filter from {ifname}"))?;
        }
        Ok(())
    }

    pub fn set_nat_config(&mut self, config: NatConfig) -> Result<()> {
        let map =
            self.ebpf.map_mut(map_names::NAT_CONFIG).ok_or_else(|| anyhow!("map NAT_CONFIG missing"))?;
        let mut array: Array<&mut MapData, NatConfig> = Array::try_from(map)?;
        array.set(0, config, 0).context("writing NAT_CONFIG")
    }

    pub fn set_published(&mut self, key: PublishKey, backend: Backend) -> Result<()> {
        self.hash_map(map_names::PUBLISHED)?.insert(key, backend, 0).context("writing PUBLISHED")
    }

    pub fn remove_published(&mut self, key: &PublishKey) -> Result<()> {
        remove_missing_ok(self.hash_map::<PublishKey, Backend>(map_names::PUBLISHED)?.remove(key))
    }

    /// Points a published port at firewall rule set `rule_set` (0: none), leaving the rest
    /// of its entry alone; a port not published (any more) is skipped.
    pub fn set_published_rule_set(&mut self, key: PublishKey, rule_set: u16) -> Result<()> {
        let mut map = self.hash_map::<PublishKey, Backend>(map_names::PUBLISHED)?;
        let Ok(backend) = map.get(&key, 0) else {
            return Ok(());
        };
        if backend.rule_set != rule_set {
            map.insert(key, Backend { rule_set, ..backend }, 0).context("writing PUBLISHED")?;
        }
        Ok(())
    }

    pub fn published(&mut self) -> Result<Vec<PublishKey>> {
        Ok(self
            .hash_map::<PublishKey, Backend>(map_names::PUBLISHED)?
            .keys()
            .filter_map(|k| k.ok())
            .collect())
    }

    /// Every confirmed connection to a published port, keyed as the container answers.
    pub fn dnat_conntrack(&mut self) -> Result<Vec<(FlowKey, DnatEntry)>> {
        self.hash_entries(map_names::DNAT_CT)
    }

    /// Every flow to a published port not confirmed yet, keyed as the container answers.
    pub fn dnat_unconfirmed(&mut self) -> Result<Vec<(FlowKey, DnatEntry)>> {
        self.hash_entries(map_names::DNAT_NEW)
    }

    /// Forgets flows to published ports, confirmed or not, with the programs' cached view
    /// of them (`INBOUND_FLOWS`, keyed as the client sends), which would otherwise deliver
    /// their packets for up to a second with no entry to translate the replies back.
    pub fn forget_dnat_flows(&mut self, flows: &[(FlowKey, DnatEntry)]) -> Result<()> {
        let inbound: Vec<FlowKey> = flows
            .iter()
            .map(|(key, entry)| FlowKey {
                // A container reaching itself is both ends; the entry holds its gateway.
                src: if entry.flags & DnatEntry::SELF != 0 { key.src } else { key.dst },
                dst: entry.host_addr,
                src_port: key.dst_port,
                dst_port: entry.host_port,
                proto: key.proto,
                _pad: [0; 3],
            })
            .collect();
        self.remove_entries(map_names::INBOUND_FLOWS, &inbound)?;
        let keys: Vec<FlowKey> = flows.iter().map(|(key, _)| *key).collect();
        self.remove_entries(map_names::DNAT_CT, &keys)?;
        self.remove_entries(map_names::DNAT_NEW, &keys)
    }

    /// Every confirmed masqueraded flow.
    pub fn conntrack(&mut self) -> Result<Vec<(FlowKey, SnatEntry)>> {
        self.hash_entries(map_names::SNAT_CT)
    }

    /// Every masqueraded flow not confirmed yet.
    pub fn conntrack_unconfirmed(&mut self) -> Result<Vec<(FlowKey, SnatEntry)>> {
        self.hash_entries(map_names::SNAT_NEW)
    }

    /// Every entry of a hash map, read a few thousand at a time (BPF_MAP_LOOKUP_BATCH):
    /// the conntrack tables hold up to `--conntrack-max` entries each, which the daemon
    /// reads every sweep; an entry at a time took two syscalls per entry (200 ms for
    /// 65,000 flows here, against 30 ms in batches).
    fn hash_entries<K: aya::Pod, V: aya::Pod>(&mut self, name: &str) -> Result<Vec<(K, V)>> {
        lookup_batch(self.hash_map_fd(name)?).with_context(|| format!("reading map {name}"))
    }

    /// Removes `keys` from a hash map in batches (BPF_MAP_DELETE_BATCH); keys already
    /// gone (the LRU evicted them, a program removed them) are skipped.
    fn remove_entries<K: aya::Pod>(&mut self, name: &str, keys: &[K]) -> Result<()> {
        delete_batch(self.hash_map_fd(name)?, keys).with_context(|| format!("removing entries of map {name}"))
    }

    fn hash_map_fd(&self, name: &str) -> Result<std::os::fd::RawFd> {
        let map = self.ebpf.map(name).ok_or_else(|| anyhow!("map {name} missing"))?;
        let (Map::HashMap(data) | Map::LruHashMap(data)) = map else {
            anyhow::bail!("map {name} is not a hash map");
        };
        Ok(data.fd().as_fd().as_raw_fd())
    }

    /// Forgets masqueraded flows, confirmed or not, in both directions.
    pub fn forget_flows(&mut self, flows: &[(FlowKey, SnatEntry)]) -> Result<()> {
        let replies: Vec<FlowKey> = flows
            .iter()
            .map(|(key, entry)| FlowKey {
                src: key.dst,
                dst: entry.nat_addr,
                src_port: if key.proto == IPPROTO_ICMP { 0 } else { key.dst_port },
                dst_port: entry.nat_port,
                proto: key.proto,
                _pad: [0; 3],
            })
            .collect();
        self.remove_entries(map_names::SNAT_REV, &replies)?;
        self.remove_entries(map_names::SNAT_REV_NEW, &replies)?;
        let keys: Vec<FlowKey> = flows.iter().map(|(key, _)| *key).collect();
        self.remove_entries(map_names::SNAT_CT, &keys)?;
        self.remove_entries(map_names::SNAT_NEW, &keys)
    }

    fn hash_map<K: aya::Pod, V: aya::Pod>(&mut self, name: &str) -> Result<HashMap<&mut MapData, K, V>> {
        let map = self.ebpf.map_mut(name).ok_or_else(|| anyhow!("map {name} missing"))?;
        HashMap::try_from(map).with_context(|| format!("opening map {name}"))
    }

    fn subnets(&mut self) -> Result<LpmTrie<&mut MapData, SubnetKey, SubnetInfo>> {
        let map = self.ebpf.map_mut(map_names::SUBNETS).ok_or_else(|| anyhow!("map SUBNETS missing"))?;
        LpmTrie::try_from(map).context("opening map SUBNETS")
    }

    fn firewall(&mut self) -> Result<LpmTrie<&mut MapData, FirewallKey, FirewallVerdict>> {
        let map = self.ebpf.map_mut(map_names::FIREWALL).ok_or_else(|| anyhow!("map FIREWALL missing"))?;
        LpmTrie::try_from(map).context("opening map FIREWALL")
    }

    fn firewall6(&mut self) -> Result<LpmTrie<&mut MapData, FirewallKey6, FirewallVerdict>> {
        let map = self.ebpf.map_mut(map_names::FIREWALL6).ok_or_else(|| anyhow!("map FIREWALL6 missing"))?;
        LpmTrie::try_from(map).context("opening map FIREWALL6")
    }

    /// The verdict of firewall rule set `rule_set` for sources under `source`, in the trie
    /// of its family.
    pub fn set_firewall_entry(
        &mut self,
        rule_set: u16,
        source: IpNet,
        verdict: FirewallVerdict,
    ) -> Result<()> {
        match source {
            IpNet::V4(net) => self.firewall()?.insert(&firewall_key(rule_set, net), verdict, 0),
            IpNet::V6(net) => self.firewall6()?.insert(&firewall_key6(rule_set, net), verdict, 0),
        }
        .with_context(|| format!("writing the firewall's [{rule_set}, {source}]"))
    }

    pub fn remove_firewall_entry(&mut self, rule_set: u16, source: IpNet) -> Result<()> {
        remove_missing_ok(match source {
            IpNet::V4(net) => self.firewall()?.remove(&firewall_key(rule_set, net)),
            IpNet::V6(net) => self.firewall6()?.remove(&firewall_key6(rule_set, net)),
        })
    }

    /// Every entry of the firewall tries, IPv4's then IPv6's: rule set, source prefix,
    /// verdict.
    pub fn firewall_entries(&mut self) -> Result<Vec<(u16, IpNet, FirewallVerdict)>> {
        let prefix_of = |len: u32| len.saturating_sub(FirewallKey::RULE_SET_BITS) as u8;
        let mut entries = vec![];
        for entry in self.firewall()?.iter() {
            let (key, verdict) = entry.context("reading map FIREWALL")?;
            let data = key.data();
            let source = Ipv4Net::new(data.addr.into(), prefix_of(key.prefix_len()))
                .context("a FIREWALL key of another layout")?;
            entries.push((u32::from_be(data.rule_set) as u16, source.into(), verdict));
        }
        for entry in self.firewall6()?.iter() {
            let (key, verdict) = entry.context("reading map FIREWALL6")?;
            let data = key.data();
            let source = Ipv6Net::new(data.addr.into(), prefix_of(key.prefix_len()))
                .context("a FIREWALL6 key of another layout")?;
            entries.push((u32::from_be(data.rule_set) as u16, source.into(), verdict));
        }
        Ok(entries)
    }

    fn firewall_direct(&mut self) -> Result<LpmTrie<&mut MapData, FirewallDirectKey, u16>> {
        let map = self
            .ebpf
            .map_mut(map_names::FIREWALL_DIRECT)
            .ok_or_else(|| anyhow!("map FIREWALL_DIRECT missing"))?;
        LpmTrie::try_from(map).context("opening map FIREWALL_DIRECT")
    }

    /// Gives the ports of `key` (a block of one protocol's ports on a container's own
    /// address) firewall rule set `rule_set` (0: none).
    pub fn set_firewall_direct_entry(&mut self, key: &Key<FirewallDirectKey>, rule_set: u16) -> Result<()> {
        self.firewall_direct()?.insert(key, rule_set, 0).context("writing FIREWALL_DIRECT")
    }

    pub fn remove_firewall_direct_entry(&mut self, key: &Key<FirewallDirectKey>) -> Result<()> {
        remove_missing_ok(self.firewall_direct()?.remove(key))
    }

    /// Every entry of FIREWALL_DIRECT: a block of ports and its rule set.
    pub fn firewall_direct_entries(&mut self) -> Result<Vec<(Key<FirewallDirectKey>, u16)>> {
        self.firewall_direct()?.iter().map(|entry| entry.context("reading map FIREWALL_DIRECT")).collect()
    }

    fn firewall_hits_map(&self) -> Result<PerCpuArray<&MapData, u64>> {
        let map =
            self.ebpf.map(map_names::FIREWALL_HITS).ok_or_else(|| anyhow!("map FIREWALL_HITS missing"))?;
        Ok(PerCpuArray::try_from(map)?)
    }

    /// Packets the firewall rule in `slot` decided, summed over the CPUs.
    pub fn firewall_hits(&self, slot: u32) -> Result<u64> {
        Ok(self.firewall_hits_map()?.get(&slot, 0)?.iter().sum())
    }

    /// Starts the hit counter of `slot` again from 0, for a new rule.
    pub fn reset_firewall_hits(&mut self, slot: u32) -> Result<()> {
        let map = self
            .ebpf
            .map_mut(map_names::FIREWALL_HITS)
            .ok_or_else(|| anyhow!("map FIREWALL_HITS missing"))?;
        let mut hits: PerCpuArray<&mut MapData, u64> = PerCpuArray::try_from(map)?;
        let zeros = aya::maps::PerCpuValues::try_from(vec![0u64; aya::util::nr_cpus().map_err(|(_, e)| e)?])?;
        hits.set(slot, zeros, 0).with_context(|| format!("resetting FIREWALL_HITS[{slot}]"))
    }

    pub fn set_interface(&mut self, ifindex: u32, config: InterfaceConfig) -> Result<()> {
        if ifindex < InterfaceConfig::INDEX_LIMIT {
            return self
                .interface_array()?
                .set(ifindex, config, 0)
                .with_context(|| format!("writing {}[{ifindex}]", map_names::INTERFACES_BY_INDEX));
        }
        self.hash_map(map_names::INTERFACES)?
            .insert(ifindex, config, 0)
            .with_context(|| format!("writing INTERFACES[{ifindex}]"))
    }

    pub fn remove_interface(&mut self, ifindex: u32) -> Result<()> {
        if ifindex < InterfaceConfig::INDEX_LIMIT {
            return self.set_interface(ifindex, InterfaceConfig::NONE);
        }
        remove_missing_ok(self.hash_map::<u32, InterfaceConfig>(map_names::INTERFACES)?.remove(&ifindex))
    }

    /// The interface's entry, if the programs have one.
    fn interface(&mut self, ifindex: u32) -> Result<Option<InterfaceConfig>> {
        if ifindex < InterfaceConfig::INDEX_LIMIT {
            let config = self.interface_array()?.get(&ifindex, 0)?;
            return Ok((config != InterfaceConfig::NONE).then_some(config));
        }
        Ok(self.hash_map::<u32, InterfaceConfig>(map_names::INTERFACES)?.get(&ifindex, 0).ok())
    }

    /// The slot of ENDPOINT_COUNTERS the endpoint behind `host_veth` (ifindex `ifindex`)
    /// counts in: the one it has; after a restart, the one its interface's entry names
    /// (counting goes on); else the lowest free slot, counted from zero. Slot 0, which
    /// nobody reads, when all are taken.
    pub fn endpoint_counter_slot(&mut self, host_veth: &str, ifindex: u32) -> Result<u16> {
        if let Some(slot) = self.counter_slots.of(host_veth) {
            return Ok(slot);
        }
        let kept = self.interface(ifindex)?.map(|c| c.counter_slot);
        if let Some(slot) = kept.filter(|s| *s != 0 && !self.counter_slots.is_taken(*s)) {
            self.counter_slots.claim(host_veth, slot);
            return Ok(slot);
        }
        let Some(slot) = self.counter_slots.lowest_free() else {
            log::warn!(
                "{host_veth}: all {} endpoint counter slots are taken; not counted",
                EndpointCounters::SLOTS - 1
            );
            return Ok(0);
        };
        let map = self
            .ebpf
            .map_mut(map_names::ENDPOINT_COUNTERS)
            .ok_or_else(|| anyhow!("map ENDPOINT_COUNTERS missing"))?;
        let mut counters: PerCpuArray<&mut MapData, EndpointCounters> = PerCpuArray::try_from(map)?;
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| e)?;
        let zeros = aya::maps::PerCpuValues::try_from(vec![EndpointCounters::default(); cpus])?;
        counters
            .set(u32::from(slot), zeros, 0)
            .with_context(|| format!("resetting ENDPOINT_COUNTERS[{slot}]"))?;
        self.counter_slots.claim(host_veth, slot);
        Ok(slot)
    }

    /// Frees the endpoint's counter slot for the next endpoint.
    pub fn release_endpoint_counter_slot(&mut self, host_veth: &str) {
        self.counter_slots.release(host_veth);
    }

    /// What the endpoint behind `host_veth` sent and received, summed over CPUs; `None`
    /// for an endpoint without a slot (not attached by this daemon, or past the slots).
    pub fn endpoint_counters(&self, host_veth: &str) -> Result<Option<EndpointCounters>> {
        let Some(slot) = self.counter_slots.of(host_veth) else {
            return Ok(None);
        };
        let map = self
            .ebpf
            .map(map_names::ENDPOINT_COUNTERS)
            .ok_or_else(|| anyhow!("map ENDPOINT_COUNTERS missing"))?;
        let counters: PerCpuArray<&MapData, EndpointCounters> = PerCpuArray::try_from(map)?;
        let per_cpu = counters.get(&u32::from(slot), 0)?;
        Ok(Some(per_cpu.iter().fold(EndpointCounters::default(), |sum, c| EndpointCounters {
            sent: add(sum.sent, c.sent),
            received: add(sum.received, c.received),
        })))
    }

    fn interface_array(&mut self) -> Result<Array<&mut MapData, InterfaceConfig>> {
        let name = map_names::INTERFACES_BY_INDEX;
        let map = self.ebpf.map_mut(name).ok_or_else(|| anyhow!("map {name} missing"))?;
        Array::try_from(map).with_context(|| format!("opening map {name}"))
    }

    pub fn set_endpoint(&mut self, key: EndpointKey, endpoint: Endpoint) -> Result<()> {
        self.hash_map(map_names::ENDPOINTS)?.insert(key, endpoint, 0).context("writing ENDPOINTS")
    }

    pub fn remove_endpoint(&mut self, key: EndpointKey) -> Result<()> {
        remove_missing_ok(self.hash_map::<EndpointKey, Endpoint>(map_names::ENDPOINTS)?.remove(&key))
    }

    pub fn endpoint(&mut self, key: EndpointKey) -> Result<Option<Endpoint>> {
        Ok(self.hash_map::<EndpointKey, Endpoint>(map_names::ENDPOINTS)?.get(&key, 0).ok())
    }

    /// `flags`: `SubnetInfo::ROUTED`, `SubnetInfo::UNPROTECTED`, `SubnetInfo::ISOLATED`, or 0.
    pub fn set_subnet(&mut self, subnet: IpNet, network: u32, gateway: IpAddr, flags: u32) -> Result<()> {
        let info = SubnetInfo { network, gateway: ip_address(gateway), flags };
        self.subnets()?
            .insert(&subnet_key(subnet), info, 0)
            .with_context(|| format!("writing SUBNETS[{subnet}]"))?;
        self.subnet_flags.insert(SubnetId::of(&subnet_key(subnet)), flags);
        self.serve_networks_on_uplink()
    }

    pub fn remove_subnet(&mut self, subnet: IpNet) -> Result<()> {
        let key = subnet_key(subnet);
        remove_missing_ok(self.subnets()?.remove(&key))?;
        self.subnet_flags.remove(&SubnetId::of(&key));
        self.serve_networks_on_uplink()
    }

    /// Drops entries that no live network or container accounts for (left by a crash
    /// between a system change and the state write).
    pub fn retain(
        &mut self,
        interfaces: &HashSet<u32>,
        endpoints: &HashSet<EndpointKey>,
        networks: &HashSet<u32>,
        published: &HashSet<PublishKey>,
    ) -> Result<()> {
        for key in self.published()? {
            if !published.contains(&key) {
                self.remove_published(&key)?;
            }
        }
        let mut map = self.hash_map::<u32, InterfaceConfig>(map_names::INTERFACES)?;
        let stale: Vec<u32> = map.keys().filter_map(|k| k.ok()).filter(|k| !interfaces.contains(k)).collect();
        for key in stale {
            remove_missing_ok(map.remove(&key))?;
        }
        let mut array = self.interface_array()?;
        let stale: Vec<u32> = (0..InterfaceConfig::INDEX_LIMIT)
            .filter(|i| !interfaces.contains(i) && array.get(i, 0).is_ok_and(|c| c != InterfaceConfig::NONE))
            .collect();
        for index in stale {
            array.set(index, InterfaceConfig::NONE, 0)?;
        }
        let mut map = self.hash_map::<EndpointKey, Endpoint>(map_names::ENDPOINTS)?;
        let stale: Vec<EndpointKey> =
            map.keys().filter_map(|k| k.ok()).filter(|k| !endpoints.contains(k)).collect();
        for key in stale {
            remove_missing_ok(map.remove(&key))?;
        }
        let mut trie = self.subnets()?;
        let stale: Vec<Key<SubnetKey>> = trie
            .iter()
            .filter_map(|e| e.ok())
            .filter(|(_, info)| !networks.contains(&info.network))
            .map(|(k, _)| k)
            .collect();
        for key in &stale {
            remove_missing_ok(trie.remove(key))?;
        }
        for key in &stale {
            self.subnet_flags.remove(&SubnetId::of(key));
        }
        self.serve_networks_on_uplink()
    }

    /// The monitor's maps, handed to their reader (`daemon::monitor`), which owns them from
    /// then on; `None` once taken.
    /// The reader of the programs' diagnostic messages, which hands them to `logger`
    /// (`EbpfLogger::flush`, when its descriptor is readable).
    pub fn take_kernel_log<T: log::Log>(&mut self, logger: T) -> Result<aya_log::EbpfLogger<T>> {
        aya_log::EbpfLogger::init_with_logger(&mut self.ebpf, logger)
            .context("opening the ring buffer of the programs' diagnostic messages")
    }

    pub fn take_monitor_maps(&mut self) -> Result<MonitorMaps> {
        let mut take = |name: &str| {
            self.ebpf.take_map(name).ok_or_else(|| anyhow!("map {name} missing from the object, or taken"))
        };
        Ok(MonitorMaps {
            events: RingBuf::try_from(take(map_names::MONITOR_EVENTS)?)?,
            config: Array::try_from(take(map_names::MONITOR_CONFIG)?)?,
            lost: PerCpuArray::try_from(take(map_names::MONITOR_LOST)?)?,
        })
    }

    /// The `ct_event` counts, summed over CPUs.
    pub fn ct_events(&self) -> Result<[u64; ct_event::COUNT as usize]> {
        let map = self.ebpf.map(map_names::CT_EVENTS).ok_or_else(|| anyhow!("map CT_EVENTS missing"))?;
        let events: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(map)?;
        let mut sums = [0; ct_event::COUNT as usize];
        for (event, sum) in sums.iter_mut().enumerate() {
            *sum = events.get(&(event as u32), 0)?.iter().sum();
        }
        Ok(sums)
    }

    pub fn counters(&mut self) -> Result<Vec<(DpPath, Counter)>> {
        let map = self.ebpf.map(map_names::COUNTERS).ok_or_else(|| anyhow!("map COUNTERS missing"))?;
        let counters: PerCpuArray<&MapData, Counter> = PerCpuArray::try_from(map)?;
        DpPath::ALL
            .iter()
            .map(|path| {
                let per_cpu = counters.get(&(*path as u32), 0)?;
                Ok((*path, per_cpu.iter().fold(Counter::default(), |sum, c| add(sum, *c))))
            })
            .collect()
    }
}

fn add(a: Counter, b: Counter) -> Counter {
    Counter { packets: a.packets + b.packets, bytes: a.bytes + b.bytes }
}

/// The monitor's ring buffer, its "listening" flag (`MonitorEvent::LISTENING`) and the
/// events a full ring buffer lost, per CPU.
pub struct MonitorMaps {
    pub events: RingBuf<MapData>,
    pub config: Array<MapData, u32>,
    pub lost: PerCpuArray<MapData, u64>,
}

/// Why `bytes` cannot be the monitor's ring buffer size, if it cannot: the kernel takes a
/// power of two that is a multiple of the page size.
pub fn check_ring_size(bytes: u32) -> Result<(), String> {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u32;
    if bytes.is_power_of_two() && bytes >= page {
        Ok(())
    } else {
        Err(format!(
            "{bytes}: the monitor's ring buffer takes a power of two of at least the page size \
             ({page} bytes), e.g. {}",
            bytes.max(page).next_power_of_two()
        ))
    }
}

/// Batch commands, which aya does not wrap (enum bpf_cmd in linux/bpf.h).
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
const BPF_MAP_DELETE_BATCH: libc::c_long = 27;

/// One batch command; its result and how many elements it got through.
fn batch_syscall(cmd: libc::c_long, attr: &mut BatchAttr) -> (Option<std::io::Error>, usize) {
    // SAFETY: the caller's attribute points at live buffers of `attr.count` elements
    // (and batch positions), and is passed with its own size.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, &raw mut *attr, size_of::<BatchAttr>() as u32) };
    ((rc < 0).then(std::io::Error::last_os_error), attr.count as usize)
}

/// The `batch` member of union bpf_attr; the kernel zero-fills what follows it.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Reads every entry of the hash map behind `fd`, `CHUNK` entries per syscall. A hash
/// map's batch position is a bucket index (a u32); a batch ends at a bucket's end, so
/// one larger than `CHUNK` is retried with room for it (ENOSPC).
fn lookup_batch<K: aya::Pod, V: aya::Pod>(fd: std::os::fd::RawFd) -> std::io::Result<Vec<(K, V)>> {
    const CHUNK: usize = 4096;
    let mut room = CHUNK;
    let mut entries = Vec::new();
    let (mut position, mut next) = (0u32, 0u32);
    let mut started = false;
    loop {
        // SAFETY: K and V are Pod (any bit pattern is valid); the kernel writes at most
        // `room` of each into buffers of that many.
        let mut keys: Vec<K> = vec![unsafe { std::mem::zeroed() }; room];
        let mut values: Vec<V> = vec![unsafe { std::mem::zeroed() }; room];
        let mut attr = BatchAttr {
            in_batch: if started { (&raw const position) as u64 } else { 0 },
            out_batch: (&raw mut next) as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: room as u32,
            map_fd: fd as u32,
            ..BatchAttr::default()
        };
        let (error, got) = batch_syscall(BPF_MAP_LOOKUP_BATCH, &mut attr);
        entries.extend(keys.into_iter().zip(values).take(got));
        match error.as_ref().and_then(std::io::Error::raw_os_error) {
            None => {}
            Some(libc::ENOENT) => return Ok(entries),
            Some(libc::ENOSPC) if got == 0 => {
                room *= 2;
                continue;
            }
            Some(_) => return Err(error.unwrap()),
        }
        position = next;
        started = true;
    }
}

/// Deletes `keys` from the hash map behind `fd`. The kernel stops a batch at a key it
/// cannot find (ENOENT), having deleted the ones before: the rest is sent again.
fn delete_batch<K: aya::Pod>(fd: std::os::fd::RawFd, keys: &[K]) -> std::io::Result<()> {
    let mut rest = keys;
    while !rest.is_empty() {
        let mut attr = BatchAttr {
            keys: rest.as_ptr() as u64,
            count: rest.len() as u32,
            map_fd: fd as u32,
            ..BatchAttr::default()
        };
        let (error, deleted) = batch_syscall(BPF_MAP_DELETE_BATCH, &mut attr);
        match error {
            None => return Ok(()),
            Some(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                rest = &rest[(deleted + 1).min(rest.len())..]
            }
            Some(e) => return Err(e),
        }
    }
    Ok(())
}

fn remove_missing_ok(result: Result<(), aya::maps::MapError>) -> Result<()> {
    match result {
        Err(aya::maps::MapError::KeyNotFound) => Ok(()),
        Err(aya::maps::MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => {
            Ok(())
        }
        other => other.context("removing a map entry"),
    }
}
