//! The kernel programs' diagnostic messages (aya-log) in the daemon's own log, under the
//! target `dataplane::kernel`: how much the programs build follows the daemon's filter
//! for that target (`RUST_LOG`, `--log-level`), read once at load. It never changes what
//! the programs do with a packet.

use anyhow::{Result, anyhow};
use dataplane_common::KERNEL_LOG_TARGET;
use log::{Level, LevelFilter, Log, Metadata};
use tokio::io::{Interest, unix::AsyncFd};

use crate::maps::Datapath;

/// The most detailed level the daemon's log shows for the kernel's target: the
/// programs build no message past it.
pub fn level() -> LevelFilter {
    level_shown_by(log::logger())
}

fn level_shown_by(logger: &dyn Log) -> LevelFilter {
    [Level::Trace, Level::Debug, Level::Info, Level::Warn, Level::Error]
        .into_iter()
        .find(|level| logger.enabled(&Metadata::builder().target(KERNEL_LOG_TARGET).level(*level).build()))
        .map_or(LevelFilter::Off, |level| level.to_level_filter())
}

/// Hands the programs' messages to the daemon's log as they come, for as long as the
/// daemon runs.
pub fn forward(datapath: &mut Datapath) -> Result<()> {
    let reader = datapath.take_kernel_log(log::logger())?;
    // SAFETY: the reader owns the ring buffer's descriptor, open as long as it lives, and
    // moves into the AsyncFd with it.
    let mut reader = unsafe { AsyncFd::register_with_interest(reader, Interest::READABLE) }
        .map_err(|e| anyhow!("watching the ring buffer of the programs' diagnostic messages: {e}"))?;
    tokio::spawn(async move {
        loop {
            match reader.readable_mut().await {
                Ok(mut ready) => {
                    ready.get_inner_mut().flush();
                    ready.clear_ready();
                }
                Err(e) => {
                    log::warn!("the programs' diagnostic messages are no longer read: {e}");
                    return;
                }
            }
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_programs_build_what_rust_log_shows_of_the_kernel_target() {
        for (filter, expected) in [
            // The daemon's default: the kernel's debug messages are not built.
            ("info,netlink_packet_route=error", LevelFilter::Info),
            ("info,dataplane::kernel=debug", LevelFilter::Debug),
            ("dataplane=trace", LevelFilter::Trace),
            ("warn", LevelFilter::Warn),
            ("dataplane::daemon=debug", LevelFilter::Off),
            ("off", LevelFilter::Off),
        ] {
            let logger = env_logger::Builder::new().parse_filters(filter).build();
            assert_eq!(level_shown_by(&logger), expected, "RUST_LOG={filter}");
        }
    }
}
