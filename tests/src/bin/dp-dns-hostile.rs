//! A hostile DNS client for the resolver's robustness test, run inside a container against
//! its gateway. Every mode is seeded (reproducible), bounded in count and time, and prints
//! one JSON line of what it saw:
//! - `flood`: malformed UDP queries and TCP streams (random bytes, compression-pointer
//!   loops, counts larger than the message, bad label lengths, truncations, bit flips, a
//!   length prefix with no body, ...), sent as fast as the pacing allows;
//! - `slow`: clients that send a query one byte a second, and clients that pipeline
//!   queries without ever reading the answers; each reports when the server hung up;
//! - `hold`: opens many TCP connections at once and keeps them open, silent.

use std::{
    io::{ErrorKind, Read, Write},
    net::{Shutdown, SocketAddr, TcpStream, UdpSocket},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use hickory_proto::{
    op::{Edns, Message, Query},
    rr::{Name, RecordType},
};
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde_json::json;

#[derive(Parser)]
struct Cli {
    /// The resolver: the container's gateway, port 53.
    #[arg(long)]
    server: SocketAddr,
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    Flood {
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long)]
        udp: u64,
        #[arg(long)]
        tcp: u64,
        /// Stop early after this long, whatever is left.
        #[arg(long, default_value_t = 60)]
        secs: u64,
    },
    Slow {
        /// Clients sending one byte a second.
        #[arg(long)]
        trickle: usize,
        /// Clients pipelining queries and never reading.
        #[arg(long)]
        stalled: usize,
        /// What they ask: a container's name, answered at once (no upstream to wait for),
        /// so that their answers pile up fast.
        #[arg(long)]
        stalled_name: String,
        /// How long each waits for the server to hang up.
        #[arg(long)]
        secs: u64,
    },
    Hold {
        #[arg(long)]
        connections: usize,
        #[arg(long)]
        secs: u64,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let result = match cli.mode {
        Mode::Flood { seed, udp, tcp, secs } => flood(cli.server, seed, udp, tcp, Duration::from_secs(secs))?,
        Mode::Slow { trickle, stalled, stalled_name, secs } => {
            slow(cli.server, trickle, stalled, &stalled_name, Duration::from_secs(secs))
        }
        Mode::Hold { connections, secs } => hold(cli.server, connections, Duration::from_secs(secs)),
    };
    println!("{result}");
    Ok(())
}

/// A well-formed query for `name`, with EDNS when `edns`.
fn query(id: u16, name: &str, edns: bool) -> Vec<u8> {
    let mut message = Message::query();
    message.metadata.id = id;
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(Name::from_ascii(name).expect("a valid name"), RecordType::A));
    if edns {
        message.set_edns(Edns::new());
    }
    message.to_vec().expect("encodable")
}

/// A DNS header: id, flags (a plain query unless given), and the four counts.
fn header(rng: &mut StdRng, flags: u16, counts: [u16; 4]) -> Vec<u8> {
    let mut bytes = rng.random::<u16>().to_be_bytes().to_vec();
    bytes.extend_from_slice(&flags.to_be_bytes());
    counts.iter().for_each(|c| bytes.extend_from_slice(&c.to_be_bytes()));
    bytes
}

/// Type A, class IN.
const A_IN: [u8; 4] = [0, 1, 0, 1];

/// One malformed (or odd) message; which kind is drawn from `rng`.
fn hostile(rng: &mut StdRng) -> Vec<u8> {
    let valid = query(rng.random(), "name.example.test.", rng.random());
    match rng.random_range(0..12) {
        // Random bytes, from empty to larger than a classic UDP message.
        0 => {
            let mut bytes = vec![0; rng.random_range(0..600)];
            rng.fill(&mut bytes[..]);
            bytes
        }
        // A valid query cut short.
        1 => valid[..rng.random_range(0..valid.len())].to_vec(),
        // The question's name is a pointer to itself.
        2 => [header(rng, 0x0100, [1, 0, 0, 0]), vec![0xc0, 12], A_IN.to_vec()].concat(),
        // A label, then a pointer back to that label: a.a.a.a... for ever.
        3 => [header(rng, 0x0100, [1, 0, 0, 0]), vec![1, b'a', 0xc0, 12], A_IN.to_vec()].concat(),
        // Two pointers to each other, or a pointer past the end.
        4 => {
            let name = if rng.random() {
                vec![0xc0, 14, 0xc0, 12]
            } else {
                let past: u16 = rng.random_range(40..0x4000);
                vec![0xc0 | (past >> 8) as u8, past as u8]
            };
            [header(rng, 0x0100, [1, 0, 0, 0]), name, A_IN.to_vec()].concat()
        }
        // Counts far larger than the message holds.
        5 => {
            let mut bytes = valid.clone();
            let at = 4 + 2 * rng.random_range(0..4);
            bytes[at..at + 2].copy_from_slice(&rng.random_range(2..=u16::MAX).to_be_bytes());
            bytes
        }
        // Label lengths past the end, over 63, and the reserved label types (0x40, 0x80).
        6 => {
            let length = [rng.random_range(10..63), 64, 0x40 | 5, 0x80 | 5][rng.random_range(0..4)];
            [header(rng, 0x0100, [1, 0, 0, 0]), vec![length, b'x', b'y'], A_IN.to_vec()].concat()
        }
        // A name over 255 bytes.
        7 => {
            let mut bytes = header(rng, 0x0100, [1, 0, 0, 0]);
            for _ in 0..rng.random_range(5..40) {
                bytes.push(63);
                bytes.extend(std::iter::repeat_n(b'z', 63));
            }
            bytes.push(0);
            bytes.extend_from_slice(&A_IN);
            bytes
        }
        // A few flipped bits in a valid query.
        8 => {
            let mut bytes = valid.clone();
            for _ in 0..rng.random_range(1..8) {
                let at = rng.random_range(0..bytes.len());
                bytes[at] ^= 1 << rng.random_range(0..8);
            }
            bytes
        }
        // A response (QR set), which must never be answered.
        9 => {
            let mut bytes = valid.clone();
            bytes[2] |= 0x80;
            bytes
        }
        // An OPT record whose lengths lie.
        10 => {
            let mut bytes = header(rng, 0x0100, [1, 0, 0, 1]);
            bytes.extend_from_slice(&valid[12..valid.len() - if valid[11] == 1 { 11 } else { 0 }]);
            bytes.extend_from_slice(&[0, 0, 41, 0x10, 0, 0, 0, 0, 0]);
            bytes.extend_from_slice(&rng.random_range(1..=u16::MAX).to_be_bytes());
            bytes.extend_from_slice(&[0, 10, 0, 200, 1, 2]);
            bytes
        }
        // Another opcode, no question, or two questions.
        _ => {
            let mut bytes = valid.clone();
            bytes[2] = (bytes[2] & 0x87) | (rng.random_range(1..16u8) << 3);
            bytes[5] = rng.random_range(0..3);
            bytes
        }
    }
}

fn flood(server: SocketAddr, seed: u64, udp: u64, tcp: u64, limit: Duration) -> Result<serde_json::Value> {
    let deadline = Instant::now() + limit;
    let tcp_thread = thread::spawn(move || tcp_streams(server, seed ^ 0x7c9, tcp, deadline));
    let mut rng = StdRng::seed_from_u64(seed);
    let socket = UdpSocket::bind("0.0.0.0:0")?;
    socket.connect(server)?;
    socket.set_nonblocking(true)?;
    let (mut sent, mut answers) = (0u64, 0u64);
    let mut buf = [0u8; 4096];
    while sent < udp && Instant::now() < deadline {
        for _ in 0..100 {
            if socket.send(&hostile(&mut rng)).is_ok() {
                sent += 1;
            }
        }
        // Paced, so that the queries reach the resolver rather than overflow its socket.
        thread::sleep(Duration::from_millis(4));
        while socket.recv(&mut buf).is_ok() {
            answers += 1;
        }
    }
    thread::sleep(Duration::from_millis(500));
    while socket.recv(&mut buf).is_ok() {
        answers += 1;
    }
    let (streams, tcp_answers) = tcp_thread.join().expect("tcp thread")?;
    Ok(json!({"udp_sent": sent, "udp_answers": answers, "tcp_streams": streams, "tcp_answers": tcp_answers}))
}

/// `count` TCP connections, each carrying one hostile stream, then closed.
fn tcp_streams(server: SocketAddr, seed: u64, count: u64, deadline: Instant) -> Result<(u64, u64)> {
    let mut rng = StdRng::seed_from_u64(seed);
    let (mut streams, mut answers) = (0u64, 0u64);
    while streams < count && Instant::now() < deadline {
        let mut stream = TcpStream::connect_timeout(&server, Duration::from_secs(2))
            .with_context(|| format!("connecting to {server}"))?;
        stream.set_read_timeout(Some(Duration::from_millis(200)))?;
        let bytes: Vec<u8> = match rng.random_range(0..7) {
            // A length prefix with no body.
            0 => rng.random_range(1..=u16::MAX).to_be_bytes().to_vec(),
            // Half a length prefix.
            1 => vec![rng.random()],
            // Empty frames.
            2 => vec![0; 2 * rng.random_range(1..20)],
            // The longest frame, mostly missing.
            3 => [vec![0xff, 0xff], vec![0; 100]].concat(),
            // Random bytes.
            4 => {
                let mut bytes = vec![0; rng.random_range(1..2000)];
                rng.fill(&mut bytes[..]);
                bytes
            }
            // Well-framed malformed messages, several in a row.
            5 => (0..rng.random_range(1..10))
                .flat_map(|_| {
                    let message = hostile(&mut rng);
                    [(message.len() as u16).to_be_bytes().to_vec(), message].concat()
                })
                .collect(),
            // A frame longer than the message inside, followed by garbage.
            _ => {
                let message = hostile(&mut rng);
                let claimed = (message.len() + rng.random_range(1..50)) as u16;
                [claimed.to_be_bytes().to_vec(), message, vec![0xc0; 60]].concat()
            }
        };
        let _ = stream.write_all(&bytes);
        let _ = stream.shutdown(Shutdown::Write);
        let mut buf = [0u8; 4096];
        // Read what comes back until the server hangs up or goes quiet.
        while let Ok(n) = stream.read(&mut buf) {
            if n == 0 {
                break;
            }
            answers += 1;
        }
        streams += 1;
    }
    Ok((streams, answers))
}

/// When the server hung up on `stream`, waiting at most until `deadline` and writing the
/// next byte of `trickle` each second meanwhile.
fn hung_up_after(mut stream: TcpStream, trickle: &[u8], deadline: Instant) -> Option<f64> {
    let start = Instant::now();
    stream.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    let mut next = trickle.iter();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        if let Some(byte) = next.next() {
            // A failed write is the server's reset: it hung up.
            if stream.write_all(&[*byte]).is_err() {
                return Some(start.elapsed().as_secs_f64());
            }
        }
        match stream.read(&mut buf) {
            Ok(0) => return Some(start.elapsed().as_secs_f64()),
            Err(e) if !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Some(start.elapsed().as_secs_f64());
            }
            _ => {}
        }
    }
    None
}

fn slow(
    server: SocketAddr,
    trickle: usize,
    stalled: usize,
    name: &str,
    limit: Duration,
) -> serde_json::Value {
    let deadline = Instant::now() + limit;
    let trickles: Vec<_> = (0..trickle)
        .map(|i| {
            thread::spawn(move || {
                let stream = TcpStream::connect_timeout(&server, Duration::from_secs(2)).ok()?;
                let message = query(i as u16, "trickle.example.test.", false);
                let framed = [(message.len() as u16).to_be_bytes().to_vec(), message].concat();
                hung_up_after(stream, &framed, deadline)
            })
        })
        .collect();
    let stalls: Vec<_> = (0..stalled)
        .map(|i| {
            let message = query(i as u16, name, false);
            thread::spawn(move || {
                let mut stream = TcpStream::connect_timeout(&server, Duration::from_secs(2)).ok()?;
                stream.set_write_timeout(Some(Duration::from_secs(2))).ok()?;
                // A small receive window, so that the server's answers back up soon.
                nix::sys::socket::setsockopt(&stream, nix::sys::socket::sockopt::RcvBuf, &4096).ok()?;
                // Queries until the server stops taking them (its answers fill our receive
                // buffer, unread); then silence, and only at the end do we look whether the
                // server hung up.
                let framed = [(message.len() as u16).to_be_bytes().to_vec(), message].concat();
                let start = Instant::now();
                let stop_writing = deadline.checked_sub(Duration::from_secs(3)).unwrap_or(deadline);
                while Instant::now() < stop_writing && stream.write_all(&framed).is_ok() {}
                thread::sleep(deadline.saturating_duration_since(Instant::now()));
                stream.set_read_timeout(Some(Duration::from_millis(500))).ok()?;
                stream.set_nonblocking(false).ok()?;
                let mut buf = [0u8; 65536];
                // The server's 10 s for an answer may have begun late (a loaded machine
                // takes longer to fill our window): its end may come up to 10 s more
                // after the deadline, and a server that never hangs up is quiet for good.
                let give_up = Instant::now() + Duration::from_secs(12);
                loop {
                    match stream.read(&mut buf) {
                        // Everything it had sent, then its end: it hung up.
                        Ok(0) => return Some(start.elapsed().as_secs_f64()),
                        Ok(_) => continue,
                        Err(e) if e.kind() == ErrorKind::ConnectionReset => {
                            return Some(start.elapsed().as_secs_f64());
                        }
                        // Quiet but open: the server is still waiting to write to us.
                        Err(_) if Instant::now() < give_up => continue,
                        Err(_) => return None,
                    }
                }
            })
        })
        .collect();
    let join = |handles: Vec<thread::JoinHandle<Option<f64>>>| -> Vec<Option<f64>> {
        handles.into_iter().map(|h| h.join().expect("client thread")).collect()
    };
    json!({"trickle_hung_up_after": join(trickles), "stalled_hung_up": join(stalls)})
}

fn hold(server: SocketAddr, connections: usize, limit: Duration) -> serde_json::Value {
    let start = Instant::now();
    let mut open = vec![];
    let mut refused = 0;
    for _ in 0..connections {
        match TcpStream::connect_timeout(&server, Duration::from_millis(500)) {
            Ok(stream) => open.push(stream),
            Err(_) => refused += 1,
        }
    }
    println!("{}", json!({"holding": open.len(), "refused": refused}));
    thread::sleep(limit.saturating_sub(start.elapsed()));
    // Those the server closed meanwhile read as ended (or reset); open ones would block.
    let closed = open
        .iter()
        .filter(|stream| {
            let _ = stream.set_nonblocking(true);
            match (&**stream).read(&mut [0u8; 1]) {
                Ok(0) => true,
                Ok(_) => false,
                Err(e) => e.kind() != ErrorKind::WouldBlock,
            }
        })
        .count();
    json!({"opened": open.len(), "refused": refused, "closed_by_server": closed})
}
