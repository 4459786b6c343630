//! The embedded resolver's handling of one query, as a container's bytes arrive over UDP
//! or TCP, short of asking the upstreams: it answers, forwards or says nothing, and what
//! it sends back is a DNS message with the query's id.
#![no_main]

use std::{net::IpAddr, sync::LazyLock};

use dataplane::{
    dns::{Directory, Reply, Transport},
    state::State,
};
use libfuzzer_sys::fuzz_target;

/// A network (10.89.0.0/24) with a container (`web`, alias `api`) on it, from a state
/// file's JSON.
static DIRECTORY: LazyLock<Directory> = LazyLock::new(|| {
    let state: State = serde_json::from_str(include_str!("../dns_state.json")).expect("the sample state");
    Directory::from_state(&state, &[])
});

fuzz_target!(|packet: &[u8]| {
    let network = NETWORK_ID;
    for transport in [Transport::Udp, Transport::Tcp] {
        let client = IpAddr::from([10, 89, 0, 2]);
        if let Reply::Send(answer) = DIRECTORY.reply(network, client, packet, transport, packet.len()) {
            assert!(answer.len() >= 12, "an answer without a header");
            assert_eq!(answer[..2], packet[..2], "an answer with another id");
            assert!(answer[2] & 0x80 != 0, "an answer that is no response");
        }
    }
});

/// The id of the sample's network.
const NETWORK_ID: &str = "f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0";
