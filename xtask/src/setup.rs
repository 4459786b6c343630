//! Installs what building and testing need, skipping what is there: Debian packages,
//! the nightly toolchain's rust-src, bpf-linker built against LLVM 22 (nightly's), and
//! cargo-fuzz for the parsers' fuzz targets.

use std::process::{Command, Stdio};

use anyhow::{Result, bail};

use crate::run_command;

/// Build: LLVM 22 for bpf-linker. Tests and demo: the tools they drive, and the runtimes
/// the CNI plugin's tests run: podman 4.3 (its CNI backend), containerd 1.6 with ctr,
/// busybox-static for their image, and Debian's reference CNI plugins. runc is named
/// because podman depends on "crun | runc" and apt would take crun, which refuses this
/// machine kind's cgroup layout. Nothing more is needed for root with the vfs driver and
/// CNI networking (no uidmap, fuse-overlayfs, slirp4netns or catatonit). dockerd 20.10
/// (docker.io) for the Docker plugin's tests: with --no-install-recommends it adds tini
/// to what the runtimes above bring (containerd, runc, iptables). Its service does not
/// start here because this machine kind's policy-rc.d denies every start; on a machine
/// whose init starts it, stop it before the tests (it makes docker0 and iptables rules).
/// protoc for the etcd client's build script (it compiles etcd's protos), and etcd with
/// etcdctl for the tests of several hosts, which start their own etcd (its service, like
/// dockerd's, does not start here), and openssl, with which they make the certificates of
/// an etcd that speaks TLS.
const PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
    "iproute2",
    "iputils-ping",
    "iptables",
    "nftables",
    "bpftool",
    "curl",
    "iperf3",
    "tcpdump",
    "xdp-tools",
    "ethtool",
    "bind9-dnsutils",
    "python3",
    "util-linux",
    "procps",
    "podman",
    "runc",
    "containerd",
    "busybox-static",
    "containernetworking-plugins",
    "docker.io",
    "protobuf-compiler",
    // protoc's well-known types (descriptor.proto, struct.proto), which etcd-client's protos import;
    // only recommended by protobuf-compiler, and recommendations are not installed.
    "libprotobuf-dev",
    "etcd-server",
    "etcd-client",
    "openssl",
];

const BPF_LINKER_VERSION: &str = "0.13";

pub fn install_missing() -> Result<()> {
    install_packages()?;
    install_rust_src()?;
    install_bpf_linker()?;
    install_cargo_fuzz()
}

fn output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).stderr(Stdio::null()).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn install_packages() -> Result<()> {
    let missing: Vec<&str> = PACKAGES
        .iter()
        .copied()
        .filter(|p| {
            output("dpkg-query", &["-W", "-f=${Status}", p])
                .is_none_or(|s| !s.contains("install ok installed"))
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("setup: installing {}", missing.join(" "));
    run_command(Command::new("apt-get").args(["update", "-qq"]))?;
    run_command(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

fn install_rust_src() -> Result<()> {
    let Some(toolchains) = output("rustup", &["toolchain", "list"]) else {
        bail!("rustup is missing: it is needed for the nightly toolchain that builds the kernel programs");
    };
    if !toolchains.lines().any(|l| l.starts_with("nightly")) {
        eprintln!("setup: installing the nightly toolchain");
        run_command(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
        ]))?;
    }
    let installed =
        output("rustup", &["component", "list", "--toolchain", "nightly", "--installed"]).unwrap_or_default();
    if !installed.lines().any(|l| l.starts_with("rust-src")) {
        eprintln!("setup: adding rust-src to nightly");
        run_command(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))?;
    }
    Ok(())
}

fn install_bpf_linker() -> Result<()> {
    if output("bpf-linker", &["--version"])
        .is_some_and(|v| v.contains(&format!("bpf-linker {BPF_LINKER_VERSION}")))
    {
        return Ok(());
    }
    eprintln!("setup: building bpf-linker {BPF_LINKER_VERSION} against LLVM 22 (about a minute)");
    let path = format!("/usr/lib/llvm-22/bin:{}", std::env::var("PATH").unwrap_or_default());
    run_command(
        Command::new("cargo")
            .args(["install", "bpf-linker", "--version", &format!("~{BPF_LINKER_VERSION}")])
            .args(["--no-default-features", "--features", "llvm-22"])
            .env("PATH", path),
    )
}

fn install_cargo_fuzz() -> Result<()> {
    if output("cargo", &["fuzz", "--version"]).is_some() {
        return Ok(());
    }
    eprintln!("setup: installing cargo-fuzz (about two minutes)");
    run_command(Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]))
}
