fn main() {
    // Rebuild when the linker changes: cargo does not track it, and a new bpf-linker can
    // produce a different object from the same source.
    if let Ok(linker) = which::which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", linker.display());
    }
    // bpf-linker asks LLVM to expand memcpy "in order", which also stops it from expanding
    // memset: every zeroed field (key padding, the tail of an IPv4 address in an IpAddress)
    // then became a call to a byte-by-byte loop, about a fifth of the NAT paths' time.
    println!("cargo:rustc-link-arg=--disable-expand-memcpy-in-order");
}
