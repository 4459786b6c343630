// Rebuild when the linker changes: cargo does not track it, and a new bpf-linker can
// produce a different object from the same source.
fn main() {
    if let Ok(linker) = which::which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", linker.display());
    }
}
