//! Docker's network and IPAM plugin requests, as dockerd posts them: the first byte picks
//! the call, the rest is its JSON body. Each body is refused or read, and what is read is
//! checked as the handlers check it.
#![no_main]

use dataplane::docker::{
    CreateEndpoint, CreateNetwork, ProgramExternalConnectivity, Release, RequestAddress, RequestPool,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Some((call, body)) = input.split_first() else { return };
    match call % 6 {
        0 => {
            let _ = serde_json::from_slice::<CreateNetwork>(body).map(|r| r.parse());
        }
        1 => {
            if let Ok(endpoint) = serde_json::from_slice::<CreateEndpoint>(body)
                && let Some(interface) = endpoint.interface
            {
                let _ = (interface.ipv4(), interface.mac());
            }
        }
        2 => {
            let _ = serde_json::from_slice::<ProgramExternalConnectivity>(body).map(|r| r.ports());
        }
        3 => {
            let _ = serde_json::from_slice::<RequestPool>(body).map(|r| r.parse());
        }
        4 => {
            let _ = serde_json::from_slice::<RequestAddress>(body).map(|r| (r.for_gateway(), r.wanted()));
        }
        _ => {
            let _ = serde_json::from_slice::<Release>(body).map(|r| r.address());
        }
    }
});
