//! The programs' diagnostic messages, through aya-log into the daemon's log (target
//! `dataplane::kernel`, level debug): a conntrack table that refused an entry, no
//! masquerade port free, a helper that failed rewriting a translated packet. Called on
//! those failure branches only, never for a packet that goes its way.
//!
//! Each message is a subprogram (`inline(never)`): the record it builds stays off the
//! frames of the paths that call it, but adds its own to their call chain, which the
//! verifier holds to 512 bytes; where a path's chain has no room (the NAT paths'), the
//! message is sent from its caller's (`left_host`), or, for a failed rewrite, from the
//! program's entry point (`after`). Below the daemon's level for
//! `dataplane::kernel` (`AYA_LOG_LEVEL`, set at load and read-only), the verifier knows
//! the message is never built and leaves its code out.
//!
//! Strings and addresses are written as constants of known length (a table's name in its
//! own arm, an address as 4 or 16 bytes): a copy of variable length would be a call the
//! BPF target does not have.

use aya_ebpf::{macros::map, maps::PerCpuArray};
use aya_log_ebpf::debug;
use dataplane_common::{AF_INET, KERNEL_LOG_TARGET as TARGET, Path};

use crate::nat;

/// The conntrack tables a new entry may be refused by.
#[derive(Clone, Copy)]
pub enum Table {
    SnatCt,
    SnatRev,
    DnatCt,
    DnatNew,
}

/// `table` refused a new entry with `errno` (an LRU table out of free nodes: -ENOMEM).
#[inline(never)]
pub fn refused(table: Table, errno: i32) {
    match table {
        Table::SnatCt => {
            debug!(&(), target: TARGET, "conntrack table SNAT_CT refused an entry: error {}", errno)
        }
        Table::SnatRev => {
            debug!(&(), target: TARGET, "conntrack table SNAT_REV refused an entry: error {}", errno)
        }
        Table::DnatCt => {
            debug!(&(), target: TARGET, "conntrack table DNAT_CT refused an entry: error {}", errno)
        }
        Table::DnatNew => {
            debug!(&(), target: TARGET, "conntrack table DNAT_NEW refused an entry: error {}", errno)
        }
    }
}

/// What `nat::leave_host` or `nat6::leave_host` decided, told when no masquerade port
/// was free: from the caller's frame, as theirs leave no room for a message's.
#[inline(always)]
pub fn left_host(verdict: (Path, i32)) -> (Path, i32) {
    if verdict.0 == Path::DroppedNatExhausted {
        no_port_free();
    }
    verdict
}

/// No masquerade port of the range was free for the flow in the SNAT scratch (its
/// destination holds every one); the packet is dropped as `dropped_nat_exhausted`.
#[inline(never)]
fn no_port_free() {
    let (Some(s), Some(cfg)) = (nat::scratch(), nat::config()) else {
        return;
    };
    let (first, last, port) = (cfg.port_min, cfg.port_max, u16::from_be(s.key.dst_port));
    let a = s.key.dst.addr;
    if s.key.dst.family == AF_INET {
        debug!(
            &(),
            target: TARGET,
            "no masquerade port free in {}-{} towards {:i} port {}: dropped",
            first,
            last,
            [a[0], a[1], a[2], a[3]],
            port
        );
    } else {
        debug!(&(), target: TARGET, "no masquerade port free in {}-{} towards {:i} port {}: dropped", first, last, a, port);
    }
}

/// Translations whose rewrite a helper may fail.
#[derive(Clone, Copy)]
#[repr(u8)]
pub enum Rewrite {
    Masquerade = 1,
    ReverseNat = 2,
    Published = 3,
    /// A reply on a published connection, from its container.
    PublishedReply = 4,
    /// An ICMP error about a translated flow, either way.
    IcmpError = 5,
}

/// A helper's failure rewriting the packet at hand, kept until the program's entry point
/// tells it (`after`): the paths where rewrites happen have no stack left for a message's
/// record in their call chain, the entry point's frame has.
#[repr(C)]
pub struct RewriteFailure {
    errno: i64,
    /// A `Rewrite`; 0 when none is waiting to be told.
    rewrite: u8,
}

#[map]
static REWRITE_FAILURE: PerCpuArray<RewriteFailure> = PerCpuArray::with_max_entries(1, 0);

/// A checksum or store helper failed with `errno` rewriting a packet of `rewrite`: kept
/// for the entry point to tell (`after`). The caller drops the packet as
/// `slow_path_malformed`.
#[inline(always)]
pub fn rewrite_failed(rewrite: Rewrite, errno: i64) {
    if let Some(failure) = REWRITE_FAILURE.get_ptr_mut(0) {
        // SAFETY: this CPU's slot, valid for this program run.
        unsafe {
            (*failure).errno = errno;
            (*failure).rewrite = rewrite as u8;
        }
    }
}

/// Called by each entry point with the path its packet took: a rewrite that failed
/// (dropped as `slow_path_malformed`) is told from the entry point's frame. One
/// comparison for every other packet.
#[inline(always)]
pub fn after(path: Path) {
    if path == Path::SlowPathMalformed {
        tell_rewrite_failure();
    }
}

#[inline(never)]
fn tell_rewrite_failure() {
    let Some(failure) = REWRITE_FAILURE.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's slot, valid for this program run.
    let (rewrite, errno) = unsafe { ((*failure).rewrite, (*failure).errno) };
    // SAFETY: as above.
    unsafe { (*failure).rewrite = 0 };
    match rewrite {
        1 => {
            debug!(&(), target: TARGET, "a helper failed rewriting a masqueraded packet: error {}", errno)
        }
        2 => {
            debug!(&(), target: TARGET, "a helper failed rewriting a reply to a masqueraded flow: error {}", errno)
        }
        3 => {
            debug!(&(), target: TARGET, "a helper failed rewriting a packet to a published port: error {}", errno)
        }
        4 => {
            debug!(&(), target: TARGET, "a helper failed rewriting a reply on a published connection: error {}", errno)
        }
        5 => {
            debug!(&(), target: TARGET, "a helper failed translating an ICMP error about a translated flow: error {}", errno)
        }
        // Dropped as malformed by no failed rewrite.
        _ => {}
    }
}
