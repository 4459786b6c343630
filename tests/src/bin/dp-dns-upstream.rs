//! The "internet's" DNS for the tests: an authoritative server for a few names under
//! `.test`, run in the external namespace as the daemon's upstream resolver. It answers
//! over UDP and TCP, so that forwarding of every outcome can be checked end to end:
//! - `example.test`: one A record (198.51.100.10);
//! - `big.test`: 60 A records, too many for a 512-byte UDP answer (TC, then TCP);
//! - `fail.test`: SERVFAIL;
//! - anything else: NXDOMAIN.
//!
//! It exits after `--secs`, so that a forgotten server cannot outlive its test for long.

use std::{
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket},
    thread,
    time::Duration,
};

use anyhow::{Context, Result};
use clap::Parser;
use hickory_proto::{
    op::{Message, ResponseCode},
    rr::{RData, Record, RecordType, rdata::A},
};

#[derive(Parser)]
struct Cli {
    #[arg(long, default_value = "0.0.0.0:53")]
    listen: SocketAddr,
    #[arg(long, default_value_t = 120)]
    secs: u64,
}

const BIG_ANSWER: u8 = 60;

fn answer(query: &[u8], over_udp: bool) -> Option<Vec<u8>> {
    let request = Message::from_vec(query).ok()?;
    let question = request.queries.first()?.clone();
    let name = question.name().to_ascii().to_ascii_lowercase();
    let mut response = Message::response(request.metadata.id, request.metadata.op_code);
    response.metadata.recursion_desired = request.metadata.recursion_desired;
    response.metadata.recursion_available = true;
    response.add_query(question.clone());
    let addresses: Vec<Ipv4Addr> = match name.as_str() {
        "example.test." => vec![Ipv4Addr::new(198, 51, 100, 10)],
        "big.test." => (1..=BIG_ANSWER).map(|i| Ipv4Addr::new(198, 51, 100, i)).collect(),
        "fail.test." => {
            response.metadata.response_code = ResponseCode::ServFail;
            vec![]
        }
        _ => {
            response.metadata.response_code = ResponseCode::NXDomain;
            vec![]
        }
    };
    if question.query_type() == RecordType::A {
        for address in addresses {
            response.add_answer(Record::from_rdata(question.name().clone(), 60, RData::A(A(address))));
        }
    }
    let bytes = response.to_vec().ok()?;
    // Classic 512-byte limit, whatever EDNS says: the point is to make clients use TCP.
    if over_udp && bytes.len() > 512 { response.truncate().to_vec().ok() } else { Some(bytes) }
}

fn serve_tcp(listener: TcpListener) {
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        thread::spawn(move || -> std::io::Result<()> {
            stream.set_read_timeout(Some(Duration::from_secs(5)))?;
            loop {
                let mut len = [0u8; 2];
                stream.read_exact(&mut len)?;
                let mut query = vec![0; usize::from(u16::from_be_bytes(len))];
                stream.read_exact(&mut query)?;
                let Some(reply) = answer(&query, false) else { return Ok(()) };
                stream.write_all(&(reply.len() as u16).to_be_bytes())?;
                stream.write_all(&reply)?;
            }
        });
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let udp = UdpSocket::bind(cli.listen).with_context(|| format!("binding udp {}", cli.listen))?;
    let tcp = TcpListener::bind(cli.listen).with_context(|| format!("binding tcp {}", cli.listen))?;
    thread::spawn(move || serve_tcp(tcp));
    thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok((len, client)) = udp.recv_from(&mut buf) {
            if let Some(reply) = answer(&buf[..len], true) {
                let _ = udp.send_to(&reply, client);
            }
        }
    });
    println!("ready");
    thread::sleep(Duration::from_secs(cli.secs));
    Ok(())
}
