//! The CNI plugin's input: the network config on stdin and `CNI_ARGS`, given here as the
//! input's first line and the rest. Our section of the config and what the runtime asks
//! for (address, MAC, names, ports) are refused with an error or read.
#![no_main]

use dataplane::cni::{parse_config, wanted};
use libfuzzer_sys::fuzz_target;
use rscni_plugin::types::NetConf;

fuzz_target!(|input: &[u8]| {
    let (cni_args, json) = match input.iter().position(|b| *b == b'\n') {
        Some(at) => (std::str::from_utf8(&input[..at]).ok(), &input[at + 1..]),
        None => (None, input),
    };
    let Ok(conf) = serde_json::from_slice::<NetConf>(json) else { return };
    let Ok(config) = parse_config(&conf) else { return };
    if let Ok(wanted) = wanted(&conf, cni_args, &config.network.name) {
        assert!(wanted.publish.iter().all(|p| p.container_port != 0), "{conf:?}");
    }
});
