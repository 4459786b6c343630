//! The command line: subnets, gateways and ranges (CIDRs), network options and labels,
//! `-p`, MAC addresses, firewall sources and port ranges, the daemon's NAT port range.
//! The input is split into arguments at NUL bytes; clap and our value parsers must refuse
//! or accept each without a panic.
#![no_main]

use clap::Parser;
use dataplane::cli::Cli;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &str| {
    let args = std::iter::once("dataplane").chain(input.split('\0'));
    // Help and version "errors" print nothing here: only parsing runs.
    let _ = Cli::try_parse_from(args);
});
