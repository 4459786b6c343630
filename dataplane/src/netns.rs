//! Container network namespaces: made persistent as bind mounts of a namespace file
//! (what `ip netns add` does), entered only by single threads or forked children so that
//! the daemon's own threads never change namespace.

use std::{
    fs::{self, File},
    io,
    os::{fd::AsRawFd, unix::process::CommandExt},
    path::Path,
    process::Command,
};

use anyhow::{Context, Result, bail};
use nix::{
    mount::{MntFlags, MsFlags, mount, umount2},
    sched::{CloneFlags, setns, unshare},
};

/// Creates a new, empty network namespace and pins it at `path`.
pub fn create(path: &Path) -> Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    if path.exists() {
        bail!("namespace file {} already exists", path.display());
    }
    File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let target = path.to_owned();
    // unshare() changes the calling thread only: do it on a thread of its own, which
    // ends right after, leaving the namespace held by the bind mount alone.
    let pinned = std::thread::spawn(move || -> Result<()> {
        unshare(CloneFlags::CLONE_NEWNET).context("unshare(CLONE_NEWNET)")?;
        mount(Some("/proc/thread-self/ns/net"), &target, None::<&str>, MsFlags::MS_BIND, None::<&str>)
            .with_context(|| format!("bind-mounting the new namespace on {}", target.display()))
    })
    .join()
    .map_err(|_| anyhow::anyhow!("namespace thread panicked"))?;
    if pinned.is_err() {
        let _ = fs::remove_file(path);
    }
    pinned
}

/// Pins the caller's own network namespace at `path` (replacing an older pin), so that
/// it can be entered by path like a container's.
pub fn pin_current(path: &Path) -> Result<()> {
    remove(path)?;
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    File::create(path).with_context(|| format!("creating {}", path.display()))?;
    mount(Some("/proc/self/ns/net"), path, None::<&str>, MsFlags::MS_BIND, None::<&str>)
        .with_context(|| format!("bind-mounting the host namespace on {}", path.display()))
}

/// Releases the namespace pinned at `path`; the kernel frees it (and the veth end inside)
/// once no process uses it. Missing namespaces are not an error.
pub fn remove(path: &Path) -> Result<()> {
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => return Err(e).with_context(|| format!("unmounting {}", path.display())),
    }
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing {}", path.display())),
    }
}

pub fn open(path: &Path) -> Result<File> {
    File::open(path).with_context(|| format!("opening network namespace {}", path.display()))
}

/// Runs `f` on a short-lived thread inside the namespace at `path`; what `f` creates
/// there (sockets above all) stays bound to that namespace.
pub fn run_in<T: Send + 'static>(path: &Path, f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    let ns = open(path)?;
    std::thread::spawn(move || {
        setns(&ns, CloneFlags::CLONE_NEWNET).context("setns into the container namespace")?;
        f()
    })
    .join()
    .map_err(|_| anyhow::anyhow!("namespace thread panicked"))?
}

/// Makes `command` start inside the namespace `ns`; `ns` must stay open until it spawned.
pub fn spawn_inside(command: &mut Command, ns: &File) {
    let fd = ns.as_raw_fd();
    // SAFETY: setns is async-signal-safe and touches only the forked child.
    unsafe {
        command.pre_exec(move || {
            if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
