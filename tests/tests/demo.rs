//! `cargo xtask demo` is what a newcomer runs first: it must not rot. It runs here as it
//! runs for them, and fails on any step that does not show what it claims (the page, the
//! published port, the fast path's counters against the bridge's, no netfilter rules).

use std::process::Command;

#[test]
fn the_demo_runs_end_to_end_and_proves_its_claims() {
    let out = Command::new(env!("CARGO_BIN_EXE_dp-demo"))
        .env("DATAPLANE_BIN", dataplane_tests::binary())
        .output()
        .expect("dp-demo starts");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "the demo failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("hello from web, through the eBPF fast path"), "{stdout}");
    assert!(stdout.contains("done: nothing is left behind."), "{stdout}");
}
