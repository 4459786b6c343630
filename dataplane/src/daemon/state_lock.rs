//! One daemon per state dir: an exclusive `flock` on `daemon.lock` in it, held for the
//! daemon's life. The kernel drops it when the daemon dies, however it dies, so a crash
//! never leaves a stale lock behind. The file holds the holder's PID, for the error a
//! second daemon gives; it is never what decides who holds the lock.

use std::{
    fs::File,
    io::{Read, Seek, Write},
    path::Path,
};

use anyhow::{Context, Result, bail};
use nix::{
    errno::Errno,
    fcntl::{Flock, FlockArg},
};

const LOCK_FILE: &str = "daemon.lock";

/// The lock on a state dir; released when dropped (or when the process ends).
pub struct StateDirLock {
    _held: Flock<File>,
}

impl StateDirLock {
    /// Takes the lock on `state_dir`, or says which daemon holds it and what to do.
    pub fn take(state_dir: &Path) -> Result<Self> {
        let path = state_dir.join(LOCK_FILE);
        // Not truncated on open: until the lock is ours, the PID in it is the holder's.
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("opening the state dir's lock {}", path.display()))?;
        let mut held = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(held) => held,
            Err((mut file, Errno::EWOULDBLOCK)) => bail!(in_use(state_dir, holder_pid(&mut file))),
            Err((_, errno)) => {
                return Err(errno).with_context(|| format!("locking {}", path.display()));
            }
        };
        held.set_len(0)
            .and_then(|()| held.rewind())
            .and_then(|()| writeln!(held, "{}", std::process::id()))
            .with_context(|| format!("writing our PID to {}", path.display()))?;
        Ok(Self { _held: held })
    }
}

/// The PID the holder wrote, if it has written it yet.
fn holder_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

fn in_use(state_dir: &Path, pid: Option<u32>) -> String {
    let holder = match pid {
        Some(pid) => format!("another dataplane daemon (PID {pid})"),
        None => "another dataplane daemon".to_string(),
    };
    format!(
        "state dir {} is in use by {holder}; stop that daemon first, or give this one another \
         --state-dir (DATAPLANE_STATE_DIR)",
        state_dir.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_dir_is_refused_naming_the_dir_the_holder_and_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let first = StateDirLock::take(dir.path()).expect("the first lock");
        // flock(2) locks belong to the open file: a second open conflicts, even here.
        let err = format!("{:#}", StateDirLock::take(dir.path()).err().expect("a second lock was taken"));
        assert!(err.contains(&dir.path().display().to_string()), "the dir is not named: {err}");
        assert!(err.contains(&format!("PID {}", std::process::id())), "the holder is not named: {err}");
        assert!(err.contains("stop that daemon") && err.contains("--state-dir"), "no fix given: {err}");
        drop(first);
        StateDirLock::take(dir.path()).expect("the lock is free again once its holder drops it");
    }

    #[test]
    fn without_the_holders_pid_the_message_still_names_the_dir_and_the_fix() {
        assert_eq!(
            in_use(Path::new("/var/lib/dataplane"), None),
            "state dir /var/lib/dataplane is in use by another dataplane daemon; stop that daemon \
             first, or give this one another --state-dir (DATAPLANE_STATE_DIR)"
        );
    }
}
