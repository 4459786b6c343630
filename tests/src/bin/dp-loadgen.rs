//! Load generators for `cargo xtask bench`, run inside the namespaces the bench builds.
//! Each mode is bounded in time or count (or by its stdin) and prints JSON lines of results, so that
//! the bench measures the path between two namespaces, not the tool.

use std::{
    io::{Read, Write},
    mem::size_of,
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::fd::AsRawFd,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use serde_json::json;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Counts UDP packets; stops when the sender has been quiet for half a second.
    UdpSink {
        #[arg(long)]
        bind: SocketAddr,
        #[arg(long)]
        secs: f64,
    },
    /// Sends UDP packets with sendmmsg from several threads.
    UdpSend {
        #[arg(long)]
        dst: SocketAddr,
        #[arg(long)]
        secs: f64,
        #[arg(long, default_value_t = 2)]
        threads: usize,
        #[arg(long, default_value_t = 256)]
        batch: usize,
        #[arg(long, default_value_t = 64)]
        size: usize,
    },
    /// Echoes UDP packets back.
    EchoServer {
        #[arg(long)]
        bind: SocketAddr,
        #[arg(long)]
        secs: f64,
        /// Spin on a non-blocking socket instead of sleeping in recv (see `Ping`).
        #[arg(long)]
        spin: bool,
    },
    /// Request/response latency over UDP, one request in flight.
    Ping {
        #[arg(long)]
        dst: SocketAddr,
        #[arg(long)]
        count: usize,
        /// Spin on a non-blocking socket: the round trip is then the path's, without the
        /// time a sleeping thread (and, in a VM, its idle vCPU) takes to wake up.
        #[arg(long)]
        spin: bool,
    },
    /// Sends a datagram to `dst` every `interval_us` until the first answer proves one
    /// arrived (an echo, or the port-unreachable error of a host with nothing listening
    /// there), for `secs` at most; reports when the answer came on CLOCK_MONOTONIC, the
    /// machine's one clock, so that the bench can set it against its own timestamps.
    UdpProbe {
        #[arg(long)]
        dst: SocketAddr,
        #[arg(long)]
        secs: f64,
        #[arg(long, default_value_t = 250)]
        interval_us: u64,
    },
    /// Accepts TCP connections and drops them.
    TcpServer {
        #[arg(long)]
        bind: SocketAddr,
        #[arg(long)]
        secs: f64,
    },
    /// Opens and closes TCP connections as fast as it can.
    TcpConnect {
        #[arg(long)]
        dst: SocketAddr,
        #[arg(long)]
        secs: f64,
        #[arg(long, default_value_t = 2)]
        threads: usize,
    },
    /// Echoes every line of every TCP connection back, a thread per connection.
    TcpEchoServer {
        #[arg(long)]
        bind: SocketAddr,
        #[arg(long)]
        secs: f64,
    },
    /// One long-lived TCP connection: a line every `interval_ms`, each echo awaited, for
    /// `secs`; reports the exchanges, the longest time between two echoes, and the error
    /// that ended it early (a reset, an echo that took over `timeout_secs`).
    TcpEchoClient {
        #[arg(long)]
        dst: SocketAddr,
        #[arg(long)]
        secs: f64,
        #[arg(long, default_value_t = 100)]
        interval_ms: u64,
        #[arg(long, default_value_t = 3.0)]
        timeout_secs: f64,
    },
    /// Opens `count` distinct UDP flows, one packet each, so that conntrack holds that many
    /// live entries: source ports from `first_src_port` up, each sending to `dst_ports`
    /// destination ports from `first_dst_port` up.
    UdpFlows {
        #[arg(long)]
        dst: std::net::IpAddr,
        #[arg(long)]
        count: usize,
        #[arg(long, default_value_t = 100)]
        dst_ports: u16,
        #[arg(long, default_value_t = 9100)]
        first_dst_port: u16,
        #[arg(long, default_value_t = 20000)]
        first_src_port: u16,
    },
    /// Nanoseconds per packet of each eBPF path, with BPF_PROG_TEST_RUN's repeat.
    ProgCost {
        #[arg(long, default_value_t = 1_000_000)]
        repeat: u32,
        /// The level up to which the programs build their diagnostic messages (aya-log),
        /// as the daemon's filter for `dataplane::kernel` sets it; off is the default's.
        #[arg(long, default_value_t = log::LevelFilter::Off)]
        kernel_log: log::LevelFilter,
    },
    /// What the kernel's run-time statistics (BPF_ENABLE_STATS) cost per run on this
    /// machine: an empty tc program attached first (tcx) at ingress of each `interface`,
    /// ahead of ours there, on the same packets. Prints its run time and run count, one
    /// JSON line per line read on stdin, until stdin closes, which detaches it.
    StatsFloor {
        #[arg(long = "interface", required = true)]
        interfaces: Vec<String>,
    },
}

fn main() -> Result<()> {
    let result = match Cli::parse().mode {
        Mode::UdpSink { bind, secs } => udp_sink(bind, secs)?,
        Mode::UdpSend { dst, secs, threads, batch, size } => udp_send(dst, secs, threads, batch, size)?,
        Mode::EchoServer { bind, secs, spin } => echo_server(bind, secs, spin)?,
        Mode::Ping { dst, count, spin } => ping(dst, count, spin)?,
        Mode::UdpProbe { dst, secs, interval_us } => udp_probe(dst, secs, interval_us)?,
        Mode::TcpServer { bind, secs } => tcp_server(bind, secs)?,
        Mode::TcpConnect { dst, secs, threads } => tcp_connect(dst, secs, threads)?,
        Mode::TcpEchoServer { bind, secs } => tcp_echo_server(bind, secs)?,
        Mode::TcpEchoClient { dst, secs, interval_ms, timeout_secs } => {
            tcp_echo_client(dst, secs, interval_ms, timeout_secs)?
        }
        Mode::UdpFlows { dst, count, dst_ports, first_dst_port, first_src_port } => {
            udp_flows(dst, count, dst_ports, first_dst_port, first_src_port)?
        }
        Mode::ProgCost { repeat, kernel_log } => prog_cost(repeat, kernel_log),
        Mode::StatsFloor { interfaces } => stats_floor::run(&interfaces)?,
    };
    println!("{result}");
    Ok(())
}

/// The wildcard address of `dst`'s family, any port: where a client socket binds.
fn any_address_like(dst: SocketAddr) -> SocketAddr {
    match dst {
        SocketAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    }
}

fn set_int_opt(fd: i32, level: i32, name: i32, value: i32) {
    // SAFETY: setsockopt with a pointer to a live i32 and its size.
    unsafe { libc::setsockopt(fd, level, name, (&raw const value).cast(), size_of::<i32>() as u32) };
}

fn udp_sink(bind: SocketAddr, secs: f64) -> Result<serde_json::Value> {
    let socket = UdpSocket::bind(bind).with_context(|| format!("binding {bind}"))?;
    set_int_opt(socket.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVBUF, 8 << 20);
    socket.set_read_timeout(Some(Duration::from_millis(100)))?;
    const BATCH: usize = 256;
    let mut buffers = vec![[0u8; 2048]; BATCH];
    let mut iovecs: Vec<libc::iovec> = buffers
        .iter_mut()
        .map(|b| libc::iovec { iov_base: b.as_mut_ptr().cast(), iov_len: b.len() })
        .collect();
    // SAFETY: mmsghdr is plain data; zero is a valid empty header.
    let mut headers: Vec<libc::mmsghdr> = iovecs
        .iter_mut()
        .map(|iov| {
            let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
            h.msg_hdr.msg_iov = iov;
            h.msg_hdr.msg_iovlen = 1;
            h
        })
        .collect();
    let hard_deadline = Instant::now() + Duration::from_secs_f64(secs + 10.0);
    let (mut packets, mut first, mut last) = (0u64, None::<Instant>, Instant::now());
    while Instant::now() < hard_deadline {
        // SAFETY: the headers point at live buffers owned by this function.
        let n = unsafe {
            libc::recvmmsg(socket.as_raw_fd(), headers.as_mut_ptr(), BATCH as u32, 0, std::ptr::null_mut())
        };
        let now = Instant::now();
        if n > 0 {
            packets += n as u64;
            first.get_or_insert(now);
            last = now;
        } else if first.is_some() && now - last > Duration::from_millis(500) {
            break;
        }
    }
    let seconds = first.map_or(0.0, |f| (last - f).as_secs_f64());
    Ok(json!({"packets": packets, "seconds": seconds, "pps": packets as f64 / seconds.max(1e-9)}))
}

fn udp_send(
    dst: SocketAddr,
    secs: f64,
    threads: usize,
    batch: usize,
    size: usize,
) -> Result<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let sent = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let sent = sent.clone();
            thread::spawn(move || -> Result<()> {
                let socket = UdpSocket::bind(any_address_like(dst))?;
                socket.connect(dst)?;
                set_int_opt(socket.as_raw_fd(), libc::SOL_SOCKET, libc::SO_SNDBUF, 4 << 20);
                let payload = vec![0x5au8; size];
                let mut iov = libc::iovec { iov_base: payload.as_ptr() as *mut _, iov_len: size };
                // SAFETY: plain data, zero is a valid empty header.
                let mut headers: Vec<libc::mmsghdr> = (0..batch)
                    .map(|_| {
                        let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
                        h.msg_hdr.msg_iov = &mut iov;
                        h.msg_hdr.msg_iovlen = 1;
                        h
                    })
                    .collect();
                while Instant::now() < deadline {
                    // SAFETY: every header points at the one live payload buffer.
                    let n =
                        unsafe { libc::sendmmsg(socket.as_raw_fd(), headers.as_mut_ptr(), batch as u32, 0) };
                    if n > 0 {
                        sent.fetch_add(n as u64, Ordering::Relaxed);
                    }
                }
                Ok(())
            })
        })
        .collect();
    for worker in workers {
        worker.join().map_err(|_| anyhow::anyhow!("sender thread panicked"))??;
    }
    Ok(json!({"sent": sent.load(Ordering::Relaxed)}))
}

fn udp_flows(
    dst: std::net::IpAddr,
    count: usize,
    dst_ports: u16,
    first_dst_port: u16,
    first_src_port: u16,
) -> Result<serde_json::Value> {
    let started = Instant::now();
    let mut sent = 0;
    for src_port in first_src_port.. {
        if sent == count {
            break;
        }
        let socket =
            UdpSocket::bind(("0.0.0.0", src_port)).with_context(|| format!("binding port {src_port}"))?;
        for dst_port in first_dst_port..first_dst_port + dst_ports {
            if sent == count {
                break;
            }
            socket.send_to(b"flow", (dst, dst_port))?;
            sent += 1;
        }
    }
    Ok(json!({"flows": sent, "secs": started.elapsed().as_secs_f64()}))
}

fn echo_server(bind: SocketAddr, secs: f64, spin: bool) -> Result<serde_json::Value> {
    let socket = UdpSocket::bind(bind).with_context(|| format!("binding {bind}"))?;
    if spin {
        socket.set_nonblocking(true)?;
    } else {
        socket.set_read_timeout(Some(Duration::from_millis(100)))?;
    }
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let mut buf = [0u8; 2048];
    let mut echoed = 0u64;
    while Instant::now() < deadline {
        if let Ok((n, from)) = socket.recv_from(&mut buf) {
            socket.send_to(&buf[..n], from)?;
            echoed += 1;
        }
    }
    Ok(json!({"echoed": echoed}))
}

/// Receives one datagram within `timeout`, spinning on a non-blocking socket or sleeping
/// in a blocking one.
fn recv_within(socket: &UdpSocket, buf: &mut [u8], timeout: Duration, spin: bool) -> bool {
    if !spin {
        return socket.recv(buf).is_ok();
    }
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if socket.recv(buf).is_ok() {
            return true;
        }
    }
    false
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ping(dst: SocketAddr, count: usize, spin: bool) -> Result<serde_json::Value> {
    const TIMEOUT: Duration = Duration::from_secs(1);
    let socket = UdpSocket::bind(any_address_like(dst))?;
    socket.connect(dst)?;
    if spin {
        socket.set_nonblocking(true)?;
    } else {
        socket.set_read_timeout(Some(TIMEOUT))?;
    }
    let mut buf = [0u8; 64];
    let mut rtts = Vec::with_capacity(count);
    let mut lost = 0u64;
    for i in 0..count + count / 10 {
        let start = Instant::now();
        socket.send(&(i as u64).to_be_bytes())?;
        if !recv_within(&socket, &mut buf, TIMEOUT, spin) {
            lost += 1;
        } else if i >= count / 10 {
            rtts.push(start.elapsed().as_secs_f64() * 1e6);
        }
    }
    anyhow::ensure!(!rtts.is_empty(), "no echo came back from {dst}");
    rtts.sort_by(f64::total_cmp);
    Ok(json!({"p50_us": percentile(&rtts, 0.5), "p99_us": percentile(&rtts, 0.99), "lost": lost}))
}

fn udp_probe(dst: SocketAddr, secs: f64, interval_us: u64) -> Result<serde_json::Value> {
    let socket = UdpSocket::bind(any_address_like(dst))?;
    socket.connect(dst)?;
    socket.set_read_timeout(Some(Duration::from_micros(interval_us.max(1))))?;
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let mut buf = [0u8; 64];
    let mut sent = 0u64;
    // A connected UDP socket reports an ICMP port unreachable from `dst` as ECONNREFUSED,
    // on the next send or receive; other errors (no route, no neighbour yet) are not an
    // answer from it.
    let refused = |e: &std::io::Error| e.kind() == std::io::ErrorKind::ConnectionRefused;
    while Instant::now() < deadline {
        let answer = match socket.send(b"probe") {
            Err(e) if refused(&e) => Some("port unreachable"),
            sent_or_not => {
                sent += u64::from(sent_or_not.is_ok());
                match socket.recv(&mut buf) {
                    Ok(_) => Some("echo"),
                    Err(e) if refused(&e) => Some("port unreachable"),
                    Err(_) => None,
                }
            }
        };
        if let Some(answer) = answer {
            return Ok(
                json!({"answered_ns": dataplane_tests::monotonic_ns(), "answer": answer, "sent": sent}),
            );
        }
    }
    anyhow::bail!("no answer from {dst} within {secs} s ({sent} probes sent)")
}

/// Accepts connections on `bind` for `secs`, handing each to `serve` with the deadline;
/// `idle` is the pause when none is waiting. Returns how many were accepted.
fn accept_for(
    bind: SocketAddr,
    secs: f64,
    idle: Duration,
    mut serve: impl FnMut(TcpStream, Instant) -> Result<()>,
) -> Result<serde_json::Value> {
    let listener = TcpListener::bind(bind).with_context(|| format!("binding {bind}"))?;
    listener.set_nonblocking(true)?;
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let mut accepted = 0u64;
    while Instant::now() < deadline {
        match listener.accept() {
            Ok((stream, _)) => {
                accepted += 1;
                serve(stream, deadline)?;
            }
            Err(_) => thread::sleep(idle),
        }
    }
    Ok(json!({"accepted": accepted}))
}

fn tcp_server(bind: SocketAddr, secs: f64) -> Result<serde_json::Value> {
    accept_for(bind, secs, Duration::from_micros(50), |mut stream, _| {
        let _ = stream.write_all(b"x");
        Ok(())
    })
}

fn tcp_echo_server(bind: SocketAddr, secs: f64) -> Result<serde_json::Value> {
    accept_for(bind, secs, Duration::from_millis(1), |stream, deadline| {
        stream.set_nonblocking(false)?;
        let left = deadline.saturating_duration_since(Instant::now());
        stream.set_read_timeout(Some(left.max(Duration::from_millis(1))))?;
        thread::spawn(move || {
            let mut reader = std::io::BufReader::new(&stream);
            let mut line = String::new();
            while std::io::BufRead::read_line(&mut reader, &mut line).is_ok_and(|n| n > 0) {
                if (&stream).write_all(line.as_bytes()).is_err() {
                    break;
                }
                line.clear();
            }
        });
        Ok(())
    })
}

fn tcp_echo_client(
    dst: SocketAddr,
    secs: f64,
    interval_ms: u64,
    timeout_secs: f64,
) -> Result<serde_json::Value> {
    let timeout = Duration::from_secs_f64(timeout_secs);
    let stream = TcpStream::connect_timeout(&dst, timeout).with_context(|| format!("connecting to {dst}"))?;
    stream.set_read_timeout(Some(timeout))?;
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    let mut reader = std::io::BufReader::new(&stream);
    let (mut exchanges, mut last_echo, mut max_gap) = (0u64, start, Duration::ZERO);
    let mut error = None;
    let mut line = String::new();
    while Instant::now() < deadline {
        let sent = format!("line {exchanges}\n");
        let echoed = (&stream).write_all(sent.as_bytes()).and_then(|()| {
            line.clear();
            std::io::BufRead::read_line(&mut reader, &mut line)
        });
        match echoed {
            Ok(_) if line == sent => {
                exchanges += 1;
                let now = Instant::now();
                max_gap = max_gap.max(now - last_echo);
                last_echo = now;
            }
            Ok(_) => {
                error = Some(format!("echo {line:?} instead of {sent:?}"));
                break;
            }
            Err(e) => {
                error = Some(format!("after {exchanges} exchanges: {e}"));
                break;
            }
        }
        thread::sleep(Duration::from_millis(interval_ms));
    }
    Ok(json!({
        "exchanges": exchanges,
        "max_gap_ms": max_gap.as_secs_f64() * 1e3,
        "secs": start.elapsed().as_secs_f64(),
        "error": error,
    }))
}

fn tcp_connect(dst: SocketAddr, secs: f64, threads: usize) -> Result<serde_json::Value> {
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (done, failed) = (done.clone(), failed.clone());
            thread::spawn(move || {
                let mut byte = [0u8; 1];
                while Instant::now() < deadline {
                    match TcpStream::connect_timeout(&dst, Duration::from_secs(1)) {
                        Ok(mut stream) => {
                            // One byte from the server proves the connection was accepted.
                            let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
                            if stream.read_exact(&mut byte).is_ok() {
                                done.fetch_add(1, Ordering::Relaxed);
                            }
                            // Close with RST: no TIME_WAIT, so ports never run out.
                            let linger = libc::linger { l_onoff: 1, l_linger: 0 };
                            // SAFETY: setsockopt with a pointer to a live linger struct.
                            unsafe {
                                libc::setsockopt(
                                    stream.as_raw_fd(),
                                    libc::SOL_SOCKET,
                                    libc::SO_LINGER,
                                    (&raw const linger).cast(),
                                    size_of::<libc::linger>() as u32,
                                )
                            };
                        }
                        Err(_) => failed.store(true, Ordering::Relaxed),
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        let _ = worker.join();
    }
    let seconds = start.elapsed().as_secs_f64();
    let n = done.load(Ordering::Relaxed);
    Ok(
        json!({"connections": n, "seconds": seconds, "per_second": n as f64 / seconds, "errors": failed.load(Ordering::Relaxed)}),
    )
}

fn prog_cost(repeat: u32, kernel_log: log::LevelFilter) -> serde_json::Value {
    use dataplane_common::{
        Backend, InterfaceConfig, IpAddress, MonitorEvent, NatConfig, Path, PublishKey, SubnetInfo,
        program_names,
    };
    use dataplane_tests::datapath::{
        A_MAC, A6, B_MAC, B6, Fixture, GATEWAY_MAC, LO, RED, RED_GATEWAY6, UPLINK_ADDR, UPLINK_MAC,
        red_interface, udp_between, udp_between_macs, udp_frame, udp6_between_macs,
    };
    const CONTAINER: [u8; 4] = [10, 1, 0, 2];
    let (from_container, from_uplink) = (program_names::FROM_CONTAINER, program_names::FROM_UPLINK);
    let mut fixture = Fixture::with_kernel_log(0, kernel_log);
    let forward = fixture.cost_ns(from_container, &udp_frame(B_MAC, CONTAINER, [10, 1, 0, 3]), repeat);
    let forward6 = fixture.cost_ns(from_container, &udp6_between_macs((A_MAC, B_MAC), A6, B6), repeat);
    let isolation_drop = fixture.cost_ns(from_container, &udp_frame(B_MAC, CONTAINER, [10, 2, 0, 2]), repeat);
    let slow_path = fixture.cost_ns(from_container, &udp_frame(B_MAC, CONTAINER, [192, 0, 2, 1]), repeat);

    // The same with a monitor listening. Forwarding builds no event. Each drop builds one:
    // measured in runs that fit the ring buffer, drained between runs, so that every drop
    // builds its event instead of finding the ring buffer full.
    let mut monitor = fixture.datapath.take_monitor_maps().unwrap();
    monitor.config.set(0, MonitorEvent::LISTENING, 0).unwrap();
    let forward_listening =
        fixture.cost_ns(from_container, &udp_frame(B_MAC, CONTAINER, [10, 1, 0, 3]), repeat);
    let room = MonitorEvent::RING_DEFAULT_SIZE / (size_of::<MonitorEvent>() as u32 + 8);
    let batches = (repeat / room).max(1);
    let mut isolation_drop_listening = 0.0;
    for _ in 0..batches {
        let ns =
            fixture.cost_ns(from_container, &udp_frame(B_MAC, CONTAINER, [10, 2, 0, 2]), room.min(repeat));
        isolation_drop_listening += ns / f64::from(batches);
        while monitor.events.next().is_some() {}
    }
    let events_lost: u64 = monitor.lost.get(&0, 0).unwrap().iter().sum();
    monitor.config.set(0, 0, 0).unwrap();

    // The NAT paths rewrite the frame, and the runs of a `repeat` share one packet. Each
    // translation below therefore maps its frame onto itself (the masquerade address and
    // port are the container's own; the backend is the published address and port): the
    // same lookups, conntrack updates, checksum helpers and writes as a real translation,
    // on a frame that comes out as it went in. A figure counts only if every run took the
    // path it is named after.
    let measure = |fixture: &mut Fixture, program: &str, frame: &[u8], path: Path| {
        let before = fixture.count(path);
        let ns = fixture.cost_ns(program, frame, repeat);
        (fixture.count(path) - before == u64::from(repeat)).then_some(ns)
    };
    let uplink = fixture.enable_nat(4000, 4000);
    let remote = [198, 51, 100, 7];
    let onto_itself = NatConfig {
        uplink_ifindex: uplink,
        port_min: 4000,
        port_max: 4000,
        addr: CONTAINER,
        flags: NatConfig::IPV6,
        addr6: A6,
    };
    fixture.datapath.set_nat_config(onto_itself).unwrap();
    // Frames leaving by the uplink get the next hop's MACs, the uplink's as source: the
    // sender of these frames has that MAC, or source validation would drop every run after
    // the first.
    let sender = InterfaceConfig { mac: UPLINK_MAC, ..red_interface(0) };
    fixture.datapath.set_interface(LO, sender).unwrap();
    let outbound = (UPLINK_MAC, GATEWAY_MAC);
    let out = udp_between_macs(outbound, (CONTAINER, 4000), (remote, 53));
    let reply = udp_between(B_MAC, (remote, 53), (CONTAINER, 4000));
    // A confirmed flow, as established traffic is: the first datagram and its answer; the
    // next datagram (the first measured run) confirms it.
    let _ = fixture.run(&out);
    let _ = fixture.run_uplink(&reply);
    let snat = measure(&mut fixture, from_container, &out, Path::Masqueraded);
    let reverse_snat = measure(&mut fixture, from_uplink, &reply, Path::ReverseNat);
    // The same for IPv6 (NAT66), onto the container's own IPv6 address.
    let remote6 = [0x20, 1, 0x0d, 0xb8, 0, 0x99, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7];
    let udp6 = |macs: ([u8; 6], [u8; 6]), src: ([u8; 16], u16), dst: ([u8; 16], u16)| {
        let mut frame = vec![];
        etherparse::PacketBuilder::ethernet2(macs.0, macs.1)
            .ipv6(src.0, dst.0, 64)
            .udp(src.1, dst.1)
            .write(&mut frame, b"hello")
            .unwrap();
        frame
    };
    let out6 = udp6(outbound, (A6, 4000), (remote6, 53));
    let reply6 = udp6((GATEWAY_MAC, UPLINK_MAC), (remote6, 53), (A6, 4000));
    let _ = fixture.run(&out6);
    let _ = fixture.run_uplink(&reply6);
    let snat66 = measure(&mut fixture, from_container, &out6, Path::Masqueraded);
    let reverse_snat66 = measure(&mut fixture, from_uplink, &reply6, Path::ReverseNat);
    // A routed network's established flow (IPv4), which leaves untranslated: another
    // source port, so that the flow is its own.
    fixture
        .datapath
        .set_interface(LO, InterfaceConfig { flags: InterfaceConfig::ROUTED_V4, ..sender })
        .unwrap();
    let routed_out = udp_between_macs(outbound, (CONTAINER, 4001), (remote, 53));
    let _ = fixture.run(&routed_out);
    let routed = measure(&mut fixture, from_container, &routed_out, Path::Routed);
    fixture.datapath.set_interface(LO, sender).unwrap();

    let nat = NatConfig {
        uplink_ifindex: uplink,
        port_min: 61000,
        port_max: 65000,
        addr: UPLINK_ADDR,
        ..NatConfig::default()
    };
    fixture.datapath.set_nat_config(nat).unwrap();
    // A routed network's IPv6 (which needs no address of the uplink's, so not A's as the
    // NAT66 rows above had it): an established flow out, untranslated, and its reply in.
    let red6 = "fd00:1::/64".parse().unwrap();
    fixture.datapath.set_subnet(red6, RED, RED_GATEWAY6.into(), SubnetInfo::ROUTED).unwrap();
    fixture
        .datapath
        .set_interface(LO, InterfaceConfig { flags: InterfaceConfig::ROUTED_V6, ..sender })
        .unwrap();
    let routed6_out = udp6(outbound, (A6, 4001), (remote6, 53));
    let routed6_reply = udp6((GATEWAY_MAC, UPLINK_MAC), (remote6, 53), (A6, 4001));
    let _ = fixture.run(&routed6_out);
    let _ = fixture.run_uplink(&routed6_reply);
    let routed6 = measure(&mut fixture, from_container, &routed6_out, Path::Routed);
    let routed6_in = measure(&mut fixture, from_uplink, &routed6_reply, Path::RoutedIn);
    fixture.datapath.set_subnet(red6, RED, RED_GATEWAY6.into(), 0).unwrap();
    fixture.datapath.set_interface(LO, sender).unwrap();

    let key = PublishKey { addr: IpAddress::v4([0; 4]), port: 8080u16.to_be(), proto: 17, _pad: 0 };
    let backend = Backend {
        addr: IpAddress::v4(UPLINK_ADDR),
        port: 8080u16.to_be(),
        rule_set: 0,
        host_ifindex: 42,
        mac: B_MAC,
        flags: 0,
        _pad: 0,
    };
    fixture.datapath.set_published(key, backend).unwrap();
    let inbound = udp_between(B_MAC, (remote, 5555), (UPLINK_ADDR, 8080));
    // The answering container, for this translation onto itself, sits at the published
    // address, and sends with the uplink's MAC as the SNAT frames do.
    let publishes = InterfaceConfig { v4_addr: UPLINK_ADDR, ..sender };
    let publishes = InterfaceConfig { flags: InterfaceConfig::PUBLISHES, ..publishes };
    fixture.datapath.set_interface(LO, publishes).unwrap();
    let answer = udp_between_macs(outbound, (UPLINK_ADDR, 8080), (remote, 5555));
    // A confirmed connection's packets, as established traffic is: the client's first
    // datagram and the container's answer; the next datagram (the first measured run)
    // confirms the flow.
    let _ = fixture.run_uplink(&inbound);
    let _ = fixture.run(&answer);
    let dnat = measure(&mut fixture, from_uplink, &inbound, Path::Published);
    let reverse_dnat = measure(&mut fixture, from_container, &answer, Path::PublishedReply);

    // DNAT in XDP. B's veth gets a real peer taking XDP frames (GRO on, so its NAPI runs),
    // so that live frames, whose verdicts the kernel carries out, are really delivered.
    let status = std::process::Command::new("sh")
        .args([
            "-c",
            "ip link add vb0 index 42 type veth peer name vb1 && ip link set vb0 up && ip link set vb1 up \
             && ethtool -K vb1 gro on >/dev/null",
        ])
        .status()
        .unwrap();
    assert!(status.success(), "making B's veth");
    let flags = InterfaceConfig::XDP_TARGET | InterfaceConfig::PUBLISHES;
    fixture.datapath.set_interface(42, red_interface(flags)).unwrap();
    let xdp_runs = |fixture: &mut Fixture, frame: &[u8], live: bool| {
        let before = fixture.count(Path::PublishedXdp);
        let ns = fixture.xdp_cost_ns(frame, repeat, live);
        (fixture.count(Path::PublishedXdp) - before == u64::from(repeat)).then_some(ns)
    };
    let xdp_dnat = xdp_runs(&mut fixture, &inbound, false);
    let xdp_live_mpps = xdp_runs(&mut fixture, &inbound, true).map(|ns| 1e3 / ns);

    // A connection's SYN always takes the long way (PUBLISHED, the firewall when the port
    // has rules, DNAT_CT), where later packets take the flow's cached entry. Both again
    // with 1,000 firewall rules on the port, none of which covers the client.
    let tcp_key = PublishKey { proto: 6, ..key };
    fixture.datapath.set_published(tcp_key, backend).unwrap();
    let syn_to = |ip: etherparse::PacketBuilderStep<etherparse::IpHeaders>, port| {
        let mut frame = vec![];
        ip.tcp(5555, port, 1000, 64000).syn().write(&mut frame, &[]).unwrap();
        frame
    };
    let uplink_frame = || etherparse::PacketBuilder::ethernet2(B_MAC, B_MAC);
    let syn = syn_to(uplink_frame().ipv4(remote, UPLINK_ADDR, 64), 8080);
    let dnat_syn = measure(&mut fixture, from_uplink, &syn, Path::Published);
    let mut installed = dataplane::firewall::Installed::default();
    let (rules, rule_set) = firewall_of_1000_rules(&mut fixture, &mut installed);
    for published in [key, tcp_key] {
        fixture.datapath.set_published_rule_set(published, rule_set).unwrap();
    }
    let dnat_1000_rules = measure(&mut fixture, from_uplink, &inbound, Path::Published);
    let dnat_syn_1000_rules = measure(&mut fixture, from_uplink, &syn, Path::Published);

    // An unprotected network's container (B) reached from outside on its own address
    // (`publish::direct`, through `from_uplink_routed`): a connection's SYN, which takes
    // the long way, and a confirmed flow's datagrams, which take its cached entry.
    const B: [u8; 4] = [10, 1, 0, 3];
    let red_gateway = std::net::IpAddr::from([10, 1, 0, 1]);
    let unprotected = SubnetInfo::UNPROTECTED;
    fixture.datapath.set_subnet("10.1.0.0/24".parse().unwrap(), RED, red_gateway, unprotected).unwrap();
    let direct_syn_frame = syn_to(uplink_frame().ipv4(remote, B, 64), 22);
    let direct_syn = measure(&mut fixture, from_uplink, &direct_syn_frame, Path::Published);
    let direct_in = udp_between(B_MAC, (remote, 5555), (B, 5353));
    let flags = InterfaceConfig::PUBLISHES | InterfaceConfig::UNPROTECTED_V4;
    fixture.datapath.set_interface(LO, InterfaceConfig { v4_addr: B, flags, ..sender }).unwrap();
    let _ = fixture.run_uplink(&direct_in);
    let _ = fixture.run(&udp_between_macs(outbound, (B, 5353), (remote, 5555)));
    let direct = measure(&mut fixture, from_uplink, &direct_in, Path::Published);
    // The SYN again with the 1,000 rules on B's own address.
    let direct_rules = rules.compiler().direct("bench", false);
    installed.set_direct(&mut fixture.datapath, B.into(), &direct_rules).unwrap();
    let direct_syn_1000_rules = measure(&mut fixture, from_uplink, &direct_syn_frame, Path::Published);

    // DNAT66 (a port published on `[::]`), in tc (`from_uplink`, then `from_uplink_v6`)
    // and in XDP, onto itself as above: the uplink's IPv6 address is A's, which publishes
    // at its own address and port; a confirmed flow, so the cached way.
    fixture.datapath.set_nat_config(NatConfig { flags: NatConfig::IPV6, addr6: A6, ..nat }).unwrap();
    let key6 = PublishKey { addr: IpAddress::v6([0; 16]), ..key };
    fixture.datapath.set_published(key6, Backend { addr: IpAddress::v6(A6), ..backend }).unwrap();
    fixture
        .datapath
        .set_interface(LO, InterfaceConfig { flags: InterfaceConfig::PUBLISHES, ..sender })
        .unwrap();
    let inbound6 = udp6((GATEWAY_MAC, B_MAC), (remote6, 5555), (A6, 8080));
    let answer6 = udp6(outbound, (A6, 8080), (remote6, 5555));
    let _ = fixture.run_uplink(&inbound6);
    let _ = fixture.run(&answer6);
    let dnat66 = measure(&mut fixture, from_uplink, &inbound6, Path::Published);
    let reverse_dnat66 = measure(&mut fixture, from_container, &answer6, Path::PublishedReply);
    let xdp_dnat66 = xdp_runs(&mut fixture, &inbound6, false);
    // A SYN to an unprotected container's own IPv6 address (`publish6::direct`).
    fixture
        .datapath
        .set_subnet("fd00:1::/64".parse().unwrap(), RED, RED_GATEWAY6.into(), unprotected)
        .unwrap();
    let direct6_syn_frame = syn_to(uplink_frame().ipv6(remote6, B6, 64), 22);
    let direct6_syn = measure(&mut fixture, from_uplink, &direct6_syn_frame, Path::Published);
    let log_instructions = fixture.kernel_log_instructions();
    json!({
        "forward_ns": forward, "forward6_ns": forward6, "isolation_drop_ns": isolation_drop, "slow_path_ns": slow_path,
        "snat_ns": snat, "reverse_snat_ns": reverse_snat,
        "snat66_ns": snat66, "reverse_snat66_ns": reverse_snat66, "dnat_ns": dnat, "reverse_dnat_ns": reverse_dnat,
        "xdp_dnat_ns": xdp_dnat, "xdp_live_mpps": xdp_live_mpps, "repeat": repeat,
        "dnat66_ns": dnat66, "reverse_dnat66_ns": reverse_dnat66, "xdp_dnat66_ns": xdp_dnat66,
        "routed_ns": routed, "routed6_ns": routed6, "routed6_in_ns": routed6_in,
        "dnat_1000_rules_ns": dnat_1000_rules, "dnat_syn_ns": dnat_syn,
        "dnat_syn_1000_rules_ns": dnat_syn_1000_rules,
        "direct_ns": direct, "direct_syn_ns": direct_syn, "direct6_syn_ns": direct6_syn,
        "direct_syn_1000_rules_ns": direct_syn_1000_rules,
        "forward_listening_ns": forward_listening,
        "isolation_drop_listening_ns": (events_lost == 0).then_some(isolation_drop_listening),
        "kernel_log_instructions": log_instructions,
    })
}

/// Installs 1,000 deny rules for sources in 198.18.0.0/15 (none the bench's client), as
/// the daemon would for a published port; returns them and their rule set.
fn firewall_of_1000_rules(
    fixture: &mut dataplane_tests::datapath::Fixture,
    installed: &mut dataplane::firewall::Installed,
) -> (dataplane::firewall::Rules, u16) {
    use dataplane::{
        firewall::{Action, RuleSpec, Rules, parse_source},
        ports::{PortMapping, Proto},
    };
    let mut rules = Rules::default();
    for i in 0..1000u32 {
        let source = parse_source(&format!("198.18.{}.{}", i / 256, i % 256)).unwrap();
        let spec = RuleSpec {
            action: Action::Deny,
            source: Some(source),
            ports: None,
            proto: None,
            container: None,
        };
        rules.add(spec).unwrap();
    }
    let mapping = PortMapping {
        host_ip: std::net::Ipv4Addr::UNSPECIFIED.into(),
        host_port: 8080,
        container_port: 8080,
        proto: Proto::Udp,
        any_family: false,
    };
    let set = rules.compiler().rule_set("bench", &mapping);
    assert_eq!(set.0.len(), 1000);
    let rule_set = installed.install(&mut fixture.datapath, &[set]).unwrap()[0];
    (rules, rule_set)
}

/// `StatsFloor`: with BPF_ENABLE_STATS on, the kernel reads its clock before and after
/// every program run and adds the difference to the program's run time, so each run
/// measured counts one clock read's latency besides the program's own instructions. An
/// empty program on the same hook and packets measures that share, which the bench then
/// tells apart from ours. Raw `bpf()` calls: aya loads programs from objects only.
mod stats_floor {
    use std::{
        ffi::CString,
        io::BufRead,
        os::fd::{FromRawFd, OwnedFd, RawFd},
    };

    use anyhow::{Context, Result, bail};
    use serde_json::json;

    const BPF_PROG_LOAD: libc::c_long = 5;
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    const BPF_LINK_CREATE: libc::c_long = 28;
    const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;
    const BPF_TCX_INGRESS: u32 = 46;
    /// First in the interface's tcx chain: no relative program named.
    const BPF_F_BEFORE: u32 = 1 << 3;
    /// `r0 = -1 (TCX_NEXT: the next program in the chain runs); exit`.
    const EMPTY: [u64; 2] = [instruction(0xb7, -1), instruction(0x95, 0)];

    /// An instruction without registers or offset: opcode and immediate.
    const fn instruction(opcode: u8, immediate: i32) -> u64 {
        opcode as u64 | ((immediate as u32 as u64) << 32)
    }

    #[repr(C)]
    #[derive(Default)]
    struct ProgLoadAttr {
        prog_type: u32,
        insn_cnt: u32,
        insns: u64,
        license: u64,
        log_level: u32,
        log_size: u32,
        log_buf: u64,
        kern_version: u32,
        prog_flags: u32,
        prog_name: [u8; 16],
        prog_ifindex: u32,
        expected_attach_type: u32,
    }

    #[repr(C)]
    #[derive(Default)]
    struct LinkCreateAttr {
        prog_fd: u32,
        target_ifindex: u32,
        attach_type: u32,
        flags: u32,
        relative_fd: u32,
        _pad: u32,
        expected_revision: u64,
    }

    #[repr(C)]
    #[derive(Default)]
    struct InfoAttr {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }

    /// `struct bpf_prog_info` up to its run-time statistics.
    #[repr(C)]
    struct ProgInfo {
        _before: [u8; 192],
        run_time_ns: u64,
        run_cnt: u64,
    }

    fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> Result<RawFd> {
        // SAFETY: `attr` is the command's attribute, passed with its own size; the
        // kernel zero-fills the rest of union bpf_attr.
        let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut T, size_of::<T>() as u32) };
        if rc < 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        Ok(rc as RawFd)
    }

    fn owned(fd: RawFd) -> OwnedFd {
        // SAFETY: the kernel just returned this descriptor to us alone.
        unsafe { OwnedFd::from_raw_fd(fd) }
    }

    pub fn run(interfaces: &[String]) -> Result<serde_json::Value> {
        let license = CString::new("GPL")?;
        let mut name = [0u8; 16];
        name[..11].copy_from_slice(b"stats_floor");
        let mut load = ProgLoadAttr {
            prog_type: BPF_PROG_TYPE_SCHED_CLS,
            insn_cnt: EMPTY.len() as u32,
            insns: EMPTY.as_ptr() as u64,
            license: license.as_ptr() as u64,
            prog_name: name,
            expected_attach_type: BPF_TCX_INGRESS,
            ..Default::default()
        };
        let program = owned(bpf(BPF_PROG_LOAD, &mut load).context("loading the empty program")?);
        let mut links = vec![];
        for interface in interfaces {
            let c_name = CString::new(interface.as_str())?;
            // SAFETY: a NUL-terminated name.
            let ifindex = unsafe { libc::if_nametoindex(c_name.as_ptr()) };
            if ifindex == 0 {
                bail!("no interface {interface} in this namespace");
            }
            let mut link = LinkCreateAttr {
                prog_fd: std::os::fd::AsRawFd::as_raw_fd(&program) as u32,
                target_ifindex: ifindex,
                attach_type: BPF_TCX_INGRESS,
                flags: BPF_F_BEFORE,
                ..Default::default()
            };
            links.push(owned(
                bpf(BPF_LINK_CREATE, &mut link).with_context(|| format!("attaching at {interface}"))?,
            ));
        }
        let runs = || -> Result<(u64, u64)> {
            let mut info = ProgInfo { _before: [0; 192], run_time_ns: 0, run_cnt: 0 };
            let mut attr = InfoAttr {
                bpf_fd: std::os::fd::AsRawFd::as_raw_fd(&program) as u32,
                info_len: size_of::<ProgInfo>() as u32,
                info: &raw mut info as u64,
            };
            bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr).context("reading the empty program's statistics")?;
            Ok((info.run_time_ns, info.run_cnt))
        };
        println!("{}", json!({"attached": interfaces}));
        for line in std::io::stdin().lock().lines() {
            line?;
            let (run_time_ns, run_cnt) = runs()?;
            println!("{}", json!({"run_time_ns": run_time_ns, "run_cnt": run_cnt}));
        }
        drop(links);
        Ok(json!({"detached": interfaces}))
    }
}
