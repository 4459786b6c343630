//! What the daemon needs of the system before it touches anything: root's capabilities,
//! checked first so that a daemon started without them says which and how to get them,
//! instead of failing on its first mount or map with a bare EPERM.

use anyhow::{Context, Result, bail};

/// Capability numbers of linux/capability.h.
const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_BPF: u32 = 39;

/// Fails, naming what is missing and the fix, unless this process has CAP_NET_ADMIN
/// (links, addresses, tc), CAP_BPF (programs and maps) and CAP_SYS_ADMIN (mounts: bpffs,
/// namespace pins; entering namespaces). `doing` says what it is needed for.
pub fn require(doing: &str) -> Result<()> {
    let status = std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let effective = status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .context("no CapEff line in /proc/self/status")?;
    let missing = missing(effective);
    if !missing.is_empty() {
        bail!(
            "{doing} needs root's CAP_NET_ADMIN, CAP_BPF and CAP_SYS_ADMIN, and this process lacks {}; \
             run it as root (`sudo dataplane daemon`), or as the systemd unit `dataplane.service`",
            missing.join(", ")
        );
    }
    Ok(())
}

/// The capabilities the daemon needs that the effective set `effective` lacks.
fn missing(effective: u64) -> Vec<&'static str> {
    let has = |cap: u32| effective & (1 << cap) != 0;
    let mut missing = vec![];
    if !has(CAP_NET_ADMIN) {
        missing.push("CAP_NET_ADMIN");
    }
    // CAP_SYS_ADMIN allows what CAP_BPF does (kernels before 5.8 know only the former).
    if !has(CAP_BPF) && !has(CAP_SYS_ADMIN) {
        missing.push("CAP_BPF");
    }
    if !has(CAP_SYS_ADMIN) {
        missing.push("CAP_SYS_ADMIN");
    }
    missing
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_missing_capabilities_are_named() {
        let all = 1 << CAP_NET_ADMIN | 1 << CAP_SYS_ADMIN | 1 << CAP_BPF;
        assert!(missing(all).is_empty());
        assert!(missing(1 << CAP_NET_ADMIN | 1 << CAP_SYS_ADMIN).is_empty(), "CAP_SYS_ADMIN covers CAP_BPF");
        assert_eq!(missing(0), ["CAP_NET_ADMIN", "CAP_BPF", "CAP_SYS_ADMIN"]);
        assert_eq!(missing(1 << CAP_NET_ADMIN | 1 << CAP_BPF), ["CAP_SYS_ADMIN"]);
    }
}
