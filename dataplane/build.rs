// Builds the kernel programs (dataplane-ebpf) for the BPF target with the nightly
// toolchain and bpf-linker, and leaves the object in OUT_DIR for include_bytes_aligned!.
fn main() -> anyhow::Result<()> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../dataplane-ebpf");
    aya_build::build_ebpf(
        [aya_build::Package { name: "dataplane-ebpf", root_dir: root, ..Default::default() }],
        aya_build::Toolchain::default(),
    )
}
