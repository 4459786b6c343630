//! Container network namespaces: made persistent as bind mounts of a namespace file
//! (what `ip netns add` does), entered only by single threads or forked children so that
//! the daemon's own threads never change namespace.

use std::{
    fs::{self, File},
    io,
    os::{
        fd::{AsRawFd, OwnedFd},
        unix::ffi::OsStringExt,
        unix::process::CommandExt,
    },
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

/// Makes `dir`, where namespaces are pinned, a mount of its own (once; the pins already
/// in it come along). A container's command gets a mount namespace of its own, a copy of
/// the daemon's: with the pins under one mount it drops them all with one unmount, where
/// each would otherwise hold a copy of every pin of its time, N² mounts for N containers.
pub fn prepare_pin_dir(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let dir = dir.canonicalize().with_context(|| format!("resolving {}", dir.display()))?;
    if mount_points()?.contains(&dir) {
        return Ok(());
    }
    mount(Some(&dir), &dir, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>)
        .with_context(|| format!("bind-mounting {} on itself", dir.display()))
}

/// Where the mount namespace that containers' commands copy is pinned
/// (`prepare_mount_template`): beside the pin dir, not in it, which `ip netns` and the
/// runtimes list as network namespaces (`/run/netns.dataplane-mounts` by default).
pub fn mount_template(pin_dir: &Path) -> std::path::PathBuf {
    let mut name = pin_dir.file_name().unwrap_or_default().to_os_string();
    name.push(".dataplane-mounts");
    pin_dir.with_file_name(name)
}

/// Pins at `mount_template(pin_dir)` a mount namespace like the daemon's without the
/// pins, from which each container's command makes its own: a copy of the daemon's would
/// copy every pin, one mount per container, and drop them again (10 ms more per `run` with
/// 2,000 containers). It follows the host's mounts as a slave, so what the host mounts
/// later under a shared mount shows there too. Made again at each start.
pub fn prepare_mount_template(pin_dir: &Path) -> Result<()> {
    let path = mount_template(pin_dir);
    // An earlier start's, whose mounts may be stale.
    let _ = umount2(&path, MntFlags::MNT_DETACH);
    File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    let dir = pin_dir.to_path_buf();
    // unshare() moves the calling thread alone: a thread of its own makes the namespace
    // and hands it back as a descriptor, which keeps it until it is pinned.
    let template = std::thread::spawn(move || -> Result<OwnedFd> {
        unshare(CloneFlags::CLONE_NEWNS).context("unshare(CLONE_NEWNS)")?;
        mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_SLAVE, None::<&str>)
            .context("making the template's mounts slaves of the host's")?;
        umount2(&dir, MntFlags::MNT_DETACH)
            .with_context(|| format!("leaving {} out of the template", dir.display()))?;
        Ok(OwnedFd::from(File::open("/proc/thread-self/ns/mnt").context("opening the template")?))
    })
    .join()
    .map_err(|_| anyhow::anyhow!("mount template thread panicked"))??;
    let source = format!("/proc/self/fd/{}", template.as_raw_fd());
    mount(Some(source.as_str()), &path, None::<&str>, MsFlags::MS_BIND, None::<&str>)
        .with_context(|| format!("pinning the mount template on {}", path.display()))
}

/// The mount points of the caller's mount namespace.
pub fn mount_points() -> Result<std::collections::HashSet<std::path::PathBuf>> {
    let mounts = fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    Ok(mounts.lines().filter_map(|line| line.split(' ').nth(4)).map(unescape_mount_path).collect())
}

/// A mount point as /proc/self/mountinfo writes it: space, tab, newline and backslash
/// as octal escapes.
fn unescape_mount_path(field: &str) -> std::path::PathBuf {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|digits| {
            let digits = std::str::from_utf8(digits).ok()?;
            u8::from_str_radix(digits, 8).ok()
        });
        match (bytes[i], octal) {
            (b'\\', Some(byte)) => {
                out.push(byte);
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    std::path::PathBuf::from(std::ffi::OsString::from_vec(out))
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

/// Whether `path` holds a network namespace (a pin or a /proc link): a pin whose bind
/// mount went (its owner removed the namespace and left the file) holds none.
pub fn is_namespace(path: &Path) -> bool {
    /// NSFS_MAGIC of linux/magic.h: the file system of namespace files.
    const NSFS_MAGIC: i64 = 0x6e73_6673;
    nix::sys::statfs::statfs(path).is_ok_and(|s| s.filesystem_type().0 == NSFS_MAGIC)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_namespace_file_is_told_from_a_file_left_behind() {
        assert!(is_namespace(Path::new("/proc/self/ns/net")));
        let left = tempfile::NamedTempFile::new().unwrap();
        assert!(!is_namespace(left.path()), "a plain file is no namespace");
        assert!(!is_namespace(Path::new("/nonexistent/pin")), "a missing file is no namespace");
    }

    #[test]
    fn mount_points_are_read_as_mountinfo_escapes_them() {
        assert_eq!(unescape_mount_path("/run/netns"), Path::new("/run/netns"));
        assert_eq!(unescape_mount_path("/tmp/a\\040b\\011c\\134d"), Path::new("/tmp/a b\tc\\d"));
        // A backslash without three octal digits is itself.
        assert_eq!(unescape_mount_path("/x\\9"), Path::new("/x\\9"));
    }
}
