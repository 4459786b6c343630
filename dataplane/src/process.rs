//! Container processes: starting a command inside a container's namespaces (its PID 1 in
//! a PID namespace of its own, `exec` in that one), ending them all, and learning when a
//! process ends, whether or not it is our child (after a daemon restart it is not).

use std::{
    ffi::CString,
    fs::File,
    net::IpAddr,
    os::{
        fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
        unix::{ffi::OsStrExt, fs::MetadataExt, process::CommandExt},
    },
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{Context, Result, bail};
use nix::{
    sched::{CloneFlags, setns, unshare},
    sys::{
        signal::{Signal, kill},
        wait::{WaitPidFlag, WaitStatus, waitpid},
    },
    unistd::Pid,
};
use tokio::io::unix::AsyncFd;

use crate::netns;

/// The PID namespace a container command starts in.
#[derive(Clone, Copy)]
pub enum PidNamespace<'a> {
    /// A new one, the command its PID 1: a container's own command. When PID 1 dies, the
    /// kernel kills every other process of the namespace, so no process outlives it.
    New,
    /// The one of a container's PID 1, by its pidfd (`open_pid1`): `exec`.
    Join(BorrowedFd<'a>),
}

/// What a command needs to run as part of a container.
pub struct ContainerContext<'a> {
    pub netns: &'a File,
    pub pid_ns: PidNamespace<'a>,
    /// Set for the container's own command: a UTS namespace with this hostname.
    pub hostname: Option<&'a str>,
    /// The container's `hosts`, `hostname` and `resolv.conf`, bind-mounted over /etc in a
    /// mount namespace of the command's own, as Docker does (and `ip netns exec`). That
    /// namespace also gets a /proc of the command's PID namespace, so that `ps` inside
    /// shows the container's processes alone.
    pub etc_dir: &'a Path,
    /// Where the namespaces are pinned (`netns::prepare_pin_dir`): left out of that mount
    /// namespace.
    pub pin_dir: Option<&'a Path>,
    /// The command's whole environment (`container_env`): never the caller's, which is
    /// the daemon's or the CLI's.
    pub env: &'a [(String, String)],
    /// Where it starts; `/` when `None`, as on Docker.
    pub workdir: Option<&'a Path>,
}

/// The PATH a container's command gets unless it sets one (Docker's).
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A container command's environment, as Docker builds it: PATH, HOSTNAME and HOME, then
/// the container's own `KEY=VALUE` (`-e`, `--env-file`), which win.
pub fn container_env(hostname: &str, own: &[String]) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = vec![
        ("PATH".into(), DEFAULT_PATH.into()),
        ("HOSTNAME".into(), hostname.into()),
        ("HOME".into(), "/root".into()),
    ];
    for entry in own {
        let (key, value) = entry.split_once('=').unwrap_or((entry, ""));
        env.retain(|(k, _)| k != key);
        env.push((key.into(), value.into()));
    }
    env
}

/// A command set up to run inside a container's namespaces; `spawn` starts it.
pub struct ContainerCommand<'a> {
    command: Command,
    pid_ns: PidNamespace<'a>,
}

impl ContainerCommand<'_> {
    /// Starts the command in its PID namespace. unshare and setns move a thread's later
    /// children into a PID namespace, never the thread itself: a thread of its own takes
    /// the change and forks the command, so that no other thread's children are moved.
    pub fn spawn(self) -> std::io::Result<Child> {
        let ContainerCommand { mut command, pid_ns } = self;
        std::thread::scope(|scope| {
            scope
                .spawn(move || {
                    match pid_ns {
                        PidNamespace::New => unshare(CloneFlags::CLONE_NEWPID)?,
                        PidNamespace::Join(pid1) => setns(pid1, CloneFlags::CLONE_NEWPID)?,
                    }
                    command.spawn()
                })
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// Starts the command as `spawn` does, but holds its process just before exec until
    /// `record` has recorded it (by its PID and start time, `write_record`), so that the
    /// command runs only once the daemon can find it again after a crash. The caller is
    /// the daemon for a detached command, the CLI for a foreground one. Should `record`
    /// fail, or the caller die meanwhile (the gate closes with its last descriptor; the
    /// process also dies with the thread that forked it), the process exits without
    /// running the command. Returns the process and its start time.
    pub fn spawn_recorded(mut self, record: impl FnOnce(i32, u64) -> Result<()>) -> Result<(Child, u64)> {
        use nix::{fcntl::OFlag, unistd::pipe2};
        let (report_out, report_in) = pipe2(OFlag::O_CLOEXEC).context("making the start's report pipe")?;
        let (gate_out, gate_in) = pipe2(OFlag::O_CLOEXEC).context("making the start's gate")?;
        // Opened here: inside its own PID namespace the process is PID 1, and its /proc is
        // that namespace's; this one names it by the PID the daemon sees.
        let proc = File::open("/proc").context("opening /proc")?;
        let (report, gate, gate_copy, proc_dir) =
            (report_in.as_raw_fd(), gate_out.as_raw_fd(), gate_in.as_raw_fd(), proc.as_raw_fd());
        // SAFETY: close, prctl, readlinkat, write and read are plain syscalls on
        // descriptors and buffers of the child's own; nothing allocates.
        unsafe {
            self.command.pre_exec(move || {
                libc::close(gate_copy);
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let mut pid = [0u8; 16];
                let len = libc::readlinkat(proc_dir, c"self".as_ptr(), pid.as_mut_ptr().cast(), pid.len());
                if len <= 0 || libc::write(report, pid.as_ptr().cast(), len as usize) != len {
                    return Err(std::io::Error::last_os_error());
                }
                let mut go = 0u8;
                loop {
                    match libc::read(gate, (&raw mut go).cast(), 1) {
                        1 if go == GATE_OPEN => break,
                        -1 if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted => {}
                        _ => return Err(std::io::Error::from_raw_os_error(libc::ECANCELED)),
                    }
                }
                // The command outlives the thread that forked it.
                if libc::prctl(libc::PR_SET_PDEATHSIG, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        std::thread::scope(|scope| {
            let starting = scope.spawn(move || {
                let started = self.spawn();
                // Ours goes once the process has its own (or has failed): a process that
                // fails before its report ends the wait below.
                drop(report_in);
                started
            });
            let recorded = reported_pid(&report_out).and_then(|pid| {
                let started =
                    start_time(pid).with_context(|| format!("reading the start time of PID {pid}"))?;
                record(pid, started).map(|()| started)
            });
            if recorded.is_ok() {
                // A failed write leaves the gate closed: the process exits.
                let _ = nix::unistd::write(&gate_in, &[GATE_OPEN]);
            }
            drop(gate_in);
            match starting.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)) {
                // The gate stayed closed: the record's failure is why.
                Err(e) if e.raw_os_error() == Some(libc::ECANCELED) => {
                    Err(recorded.err().unwrap_or(e.into()))
                }
                started => Ok((started?, recorded?)),
            }
        })
    }
}

/// What the caller writes through the start's gate once it has recorded the process.
const GATE_OPEN: u8 = b'1';

/// The PID a held process reports (`spawn_recorded`); an error if it ended first.
fn reported_pid(report: &OwnedFd) -> Result<i32> {
    let mut buf = [0u8; 16];
    let len = loop {
        match nix::unistd::read(report, &mut buf) {
            Err(nix::errno::Errno::EINTR) => {}
            other => break other.context("reading the started process's PID")?,
        }
    };
    std::str::from_utf8(&buf[..len])
        .ok()
        .and_then(|pid| pid.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("the command's process ended before it could run the command"))
}

/// A command set up to run inside the container's namespaces. Everything the child
/// needs is prepared before fork: between fork and exec only raw syscalls run, since the
/// daemon is multi-threaded and another thread may hold the allocator's lock.
pub fn container_command<'a>(args: &[String], ctx: &ContainerContext<'a>) -> ContainerCommand<'a> {
    let mut command = Command::new(&args[0]);
    // Docker's default working directory; never the caller's, which may be anywhere.
    command
        .args(&args[1..])
        .current_dir(ctx.workdir.unwrap_or(Path::new("/")))
        .env_clear()
        .envs(ctx.env.iter().map(|(k, v)| (k, v)));
    netns::spawn_inside(&mut command, ctx.netns);
    if let Some(hostname) = ctx.hostname {
        let hostname = hostname.as_bytes().to_vec();
        // SAFETY: unshare and sethostname are plain syscalls on data prepared before fork.
        unsafe {
            command.pre_exec(move || {
                if libc::unshare(libc::CLONE_NEWUTS) != 0
                    || libc::sethostname(hostname.as_ptr().cast(), hostname.len()) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let mounts: Vec<(CString, CString)> = ETC_FILES
        .iter()
        .filter(|name| Path::new("/etc").join(name).exists())
        .filter_map(|name| {
            let source = ctx.etc_dir.join(name);
            source.exists().then(|| {
                (
                    CString::new(source.as_os_str().as_bytes()).expect("paths have no NUL"),
                    CString::new(format!("/etc/{name}")).expect("no NUL"),
                )
            })
        })
        .collect();
    // Every command gets a mount namespace, for its /proc, even without /etc files (host
    // mode): a copy of the daemon's template without the pins (`netns::mount_template`),
    // or of the caller's, whose pins it drops. Never the root itself is unmounted as the
    // pins', whatever their path.
    let pin_dir = ctx.pin_dir.filter(|dir| dir.parent().is_some());
    let template = pin_dir.and_then(|dir| File::open(netns::mount_template(dir)).ok());
    let pin_dir = pin_dir.map(|dir| CString::new(dir.as_os_str().as_bytes()).expect("paths have no NUL"));
    // Entering the template moves the process to its root: the directory again after it.
    let workdir = CString::new(ctx.workdir.unwrap_or(Path::new("/")).as_os_str().as_bytes())
        .expect("paths have no NUL");
    // SAFETY: setns, unshare, mount, umount2 and chdir are plain syscalls on descriptors
    // and strings prepared before fork.
    unsafe {
        command.pre_exec(move || {
            let entered =
                template.as_ref().is_some_and(|t| libc::setns(t.as_raw_fd(), libc::CLONE_NEWNS) == 0);
            if libc::unshare(libc::CLONE_NEWNS) != 0
                || libc::mount(
                    std::ptr::null(),
                    c"/".as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_SLAVE,
                    std::ptr::null(),
                ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            // Without the template the copies of every pin go at once; the process holds
            // its own namespace. A pin dir that is no mount of its own (an older daemon's)
            // fails harmlessly.
            if let (false, Some(pin_dir)) = (entered, &pin_dir) {
                libc::umount2(pin_dir.as_ptr(), libc::MNT_DETACH);
            }
            // This process already lives in the command's PID namespace (`spawn` forked it
            // there): a proc mounted now shows that namespace, as Docker's /proc does.
            if libc::mount(
                c"proc".as_ptr(),
                c"/proc".as_ptr(),
                c"proc".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                std::ptr::null(),
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            for (source, target) in &mounts {
                if libc::mount(
                    source.as_ptr(),
                    target.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND,
                    std::ptr::null(),
                ) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if entered && libc::chdir(workdir.as_ptr()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    ContainerCommand { command, pid_ns: ctx.pid_ns }
}

/// A container's PID 1 as a pidfd, whose PID namespace `exec` joins. Refused unless the
/// process still lives in the container's network namespace: the PID may have been reused.
pub fn open_pid1(pid: i32, netns: &File) -> Result<OwnedFd> {
    let ended = || anyhow::anyhow!("its command (PID {pid}) has ended");
    let pidfd = pidfd_open(pid).ok_or_else(ended)?;
    // Read after the pidfd holds the process, so that the check is about that process.
    let own = std::fs::metadata(format!("/proc/{pid}/ns/net")).map_err(|_| ended())?;
    let container = netns.metadata().context("reading the container's network namespace")?;
    if (own.dev(), own.ino()) != (container.dev(), container.ino()) {
        bail!("PID {pid} is no longer its command (it ended, and the PID was reused)");
    }
    Ok(pidfd)
}

/// Files of /etc that each container gets a copy of its own.
const ETC_FILES: [&str; 3] = ["hosts", "hostname", "resolv.conf"];

/// Writes a container's /etc files: its names in `hosts` (so that looking itself up
/// needs no DNS), and its resolvers in `resolv.conf`: the embedded DNS on its network's
/// gateway, or the upstream resolvers where the network has no embedded DNS.
/// Without a network (`--network none`), the names point at the loopback and there is no
/// resolver at all.
pub fn write_etc_files(
    etc_dir: &Path,
    hostname: &str,
    name: &str,
    address: Option<(IpAddr, &[IpAddr])>,
) -> Result<()> {
    std::fs::create_dir_all(etc_dir).with_context(|| format!("creating {}", etc_dir.display()))?;
    let aliases = if hostname == name { hostname.to_string() } else { format!("{hostname} {name}") };
    let (own, resolv) = match address {
        Some((ip, resolvers)) => {
            let mut resolv: String = resolvers.iter().map(|r| format!("nameserver {r}\n")).collect();
            resolv.push_str("options ndots:0\n");
            (ip.to_string(), resolv)
        }
        None => ("127.0.1.1".to_string(), String::new()),
    };
    let hosts =
        format!("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{own}\t{aliases}\n");
    let files = [("hosts", hosts), ("hostname", format!("{hostname}\n")), ("resolv.conf", resolv)];
    for (file, content) in files {
        let path = etc_dir.join(file);
        std::fs::write(&path, content).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Where a detached container command runs (its namespace by its pin, its hostname,
/// /etc files, environment and working directory) and where its output goes.
pub struct Detached<'a> {
    pub netns: &'a Path,
    pub hostname: &'a str,
    pub etc_dir: &'a Path,
    pub env: &'a [(String, String)],
    pub workdir: Option<&'a Path>,
    pub log: &'a Path,
}

/// Starts a detached container command: its own session (so that signals meant for the
/// daemon or the CLI do not reach it), output appended to its log. The command runs once
/// `record` has recorded its process (`spawn_recorded`); returns its PID and start time.
pub fn spawn_detached(
    args: &[String],
    detached: &Detached,
    record: impl FnOnce(i32, u64) -> Result<()>,
) -> Result<(i32, u64)> {
    let Detached { netns: netns_path, hostname, etc_dir, env, workdir, log } = *detached;
    let ns = netns::open(netns_path)?;
    let out = File::options()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    let mut command = container_command(
        args,
        &ContainerContext {
            netns: &ns,
            pid_ns: PidNamespace::New,
            hostname: Some(hostname),
            etc_dir,
            pin_dir: netns_path.parent(),
            env,
            workdir,
        },
    );
    command.command.stdin(Stdio::null()).stdout(out.try_clone()?).stderr(out);
    // SAFETY: setsid is async-signal-safe.
    unsafe {
        command.command.pre_exec(|| {
            nix::unistd::setsid()?;
            Ok(())
        });
    }
    let (child, started) =
        command.spawn_recorded(record).with_context(|| format!("starting {:?} in the container", args[0]))?;
    Ok((child.id() as i32, started))
}

/// Records a container command's process in `path` (its PID and start time), apart from
/// the state: `spawn_recorded` calls this before the command runs, the daemon for a
/// detached command, the CLI for a foreground one (in the file the daemon names), so that
/// a start of the daemon finds every command whatever its state lost
/// (`read_record` reads it back).
pub fn write_record(path: &Path, pid: i32, start_time: u64) -> Result<()> {
    let write = || {
        std::fs::create_dir_all(path.parent().expect("a record has a directory"))?;
        std::fs::write(path, format!("{pid} {start_time}\n"))
    };
    write().with_context(|| format!("recording the command's process in {}", path.display()))
}

/// The PID and start time a record holds (`write_record`); `None` for a file that is no
/// record (a crash cut its write short: its process never ran the command, which waits
/// for the write).
pub fn read_record(content: &str) -> Option<(i32, u64)> {
    let mut fields = content.split_whitespace();
    let pid = fields.next()?.parse::<i32>().ok().filter(|pid| *pid > 0)?;
    let start_time = fields.next()?.parse().ok()?;
    fields.next().is_none().then_some((pid, start_time))
}

/// Start time of a process in clock ticks since boot (field 22 of /proc/PID/stat).
pub fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

pub fn is_alive(pid: i32, started: u64) -> bool {
    start_time(pid) == Some(started)
}

fn pidfd_open(pid: i32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    // SAFETY: the descriptor was just returned to us and is owned by nobody else.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Waits until the process of `pidfd` has exited (a zombie or gone). Borrowed: a caller
/// that reads the exit status afterwards keeps the one descriptor (a second, one per
/// running container, doubled the daemon's descriptors).
async fn exited(pidfd: BorrowedFd<'_>) {
    // SAFETY: the borrow keeps the descriptor open as long as the AsyncFd lives.
    if let Ok(fd) = unsafe { AsyncFd::register(pidfd) } {
        let _ = fd.readable().await;
    }
}

/// How long the exit status of a process that is not our child may take to come: its
/// parent (init, once the daemon that started it is gone) reaps it a moment after it ends.
const REAP_WAIT: Duration = Duration::from_secs(2);

/// Waits until `pid` ends; returns its exit code (128 + the signal for one killed): as its
/// parent when it is our child, else as the kernel keeps it for a pidfd opened before its
/// end (Linux 6.15 and later), which is how a command started before a restart of the
/// daemon has its code known. `None` when neither tells.
pub async fn wait_exit(pid: i32) -> Option<i32> {
    let pidfd = pidfd_open(pid);
    if let Some(pidfd) = &pidfd {
        exited(pidfd.as_fd()).await;
    }
    match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
        Ok(WaitStatus::Exited(_, code)) => return Some(code),
        Ok(WaitStatus::Signaled(_, signal, _)) => return Some(128 + signal as i32),
        _ => {}
    }
    let pidfd = pidfd?;
    let deadline = tokio::time::Instant::now() + REAP_WAIT;
    loop {
        match reaped_status(&pidfd) {
            Reaped::Status(status) => return Some(exit_code_of(status)),
            Reaped::Unsupported => return None,
            Reaped::NotYet if tokio::time::Instant::now() >= deadline => return None,
            Reaped::NotYet => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// What the kernel tells of a pidfd's process once it has ended.
enum Reaped {
    /// Its wait status (as `waitpid` gives it to the parent).
    Status(i32),
    /// Its parent has yet to reap it.
    NotYet,
    /// The kernel keeps no exit status for pidfds (before Linux 6.15).
    Unsupported,
}

/// The first version of the kernel's `struct pidfd_info` (`PIDFD_INFO_SIZE_VER0`, 64
/// bytes), which holds the exit status.
#[repr(C)]
#[derive(Default)]
struct PidfdInfo {
    mask: u64,
    cgroupid: u64,
    ids: [u32; 11],
    exit_code: i32,
}

/// `PIDFD_INFO_EXIT`: asks for, and says there is, the exit status of a reaped process.
const PIDFD_INFO_EXIT: u64 = 1 << 3;

/// `PIDFD_GET_INFO`: `_IOWR(0xFF, 11, struct pidfd_info)`, in the ioctl number layout of
/// x86, Arm and RISC-V (direction in bits 30-31, size in 16-29, type 8-15, number 0-7).
const PIDFD_GET_INFO: u32 = (3 << 30) | ((std::mem::size_of::<PidfdInfo>() as u32) << 16) | (0xFF << 8) | 11;

fn reaped_status(pidfd: &OwnedFd) -> Reaped {
    let mut info = PidfdInfo { mask: PIDFD_INFO_EXIT, ..Default::default() };
    // SAFETY: the ioctl writes at most the size encoded in the request into `info`.
    let result = unsafe { libc::ioctl(pidfd.as_raw_fd(), PIDFD_GET_INFO as _, &mut info) };
    match result {
        0 if info.mask & PIDFD_INFO_EXIT != 0 => Reaped::Status(info.exit_code),
        0 => Reaped::NotYet,
        // ESRCH: the process is gone, yet its status is not recorded (yet).
        _ if std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH) => Reaped::NotYet,
        _ => Reaped::Unsupported,
    }
}

/// An exit code as shells show it, from a wait status: the code of a process that
/// exited, 128 + the signal of one killed.
fn exit_code_of(status: i32) -> i32 {
    match status & 0x7f {
        0 => (status >> 8) & 0xff,
        signal => 128 + signal,
    }
}

pub fn signal(pid: i32, signal: Signal) {
    let _ = kill(Pid::from_raw(pid), signal);
}

/// Kills a container's PID 1 (`pid`, started at `started`), and with it every process of
/// its PID namespace, and waits until it has exited: the kernel lets a PID 1 exit only
/// once the rest of its namespace is gone. Returns false if it had not after `timeout`
/// (a process stuck in the kernel).
pub async fn kill_all(pid: i32, started: u64, timeout: Duration) -> bool {
    let Some(pidfd) = pidfd_open(pid) else {
        return true;
    };
    // Checked once the pidfd holds the process, so that a reused PID is never signalled.
    if !is_alive(pid, started) {
        return true;
    }
    send_kill(&pidfd);
    tokio::time::timeout(timeout, exited(pidfd.as_fd())).await.is_ok()
}

fn send_kill(pidfd: &OwnedFd) {
    // SAFETY: pidfd_send_signal on a descriptor we own, without siginfo.
    unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            libc::SIGKILL,
            std::ptr::null::<()>(),
            0,
        )
    };
}

/// Kills every process whose network namespace is the one pinned at `netns` and waits
/// until they have exited; returns how many there were. Meant for a container's own
/// namespace, which only its processes enter: the caller's own namespace is refused.
pub async fn kill_in_namespace(netns: &Path, timeout: Duration) -> Result<usize> {
    let id = |path: &Path| std::fs::metadata(path).map(|m| (m.dev(), m.ino()));
    let target = id(netns).with_context(|| format!("reading namespace {}", netns.display()))?;
    if id(Path::new("/proc/self/ns/net")).is_ok_and(|own| own == target) {
        bail!("{} is the daemon's own namespace; its processes are not a container's", netns.display());
    }
    let mut killed = vec![];
    for entry in std::fs::read_dir("/proc").context("reading /proc")? {
        let Some(pid) = entry.ok().and_then(|e| e.file_name().to_str()?.parse::<i32>().ok()) else {
            continue;
        };
        let Some(pidfd) = pidfd_open(pid) else { continue };
        // Read once the pidfd holds the process, so that a reused PID is never signalled.
        if id(Path::new(&format!("/proc/{pid}/ns/net"))).is_ok_and(|ns| ns == target) {
            send_kill(&pidfd);
            killed.push(pidfd);
        }
    }
    let count = killed.len();
    for pidfd in killed {
        if tokio::time::timeout(timeout, exited(pidfd.as_fd())).await.is_err() {
            bail!("processes in {} had not ended {timeout:?} after SIGKILL", netns.display());
        }
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_read_back_and_cut_ones_are_none() {
        let dir = std::env::temp_dir().join(format!("dataplane-record-{}", std::process::id()));
        let path = dir.join("processes").join("c1");
        write_record(&path, 4242, 987654).unwrap();
        assert_eq!(read_record(&std::fs::read_to_string(&path).unwrap()), Some((4242, 987654)));
        std::fs::remove_dir_all(&dir).unwrap();
        for cut in ["", "4242", "4242 ", "-1 5", "0 5", "4242 98x", "4242 5 6"] {
            assert_eq!(read_record(cut), None, "{cut:?}");
        }
    }

    #[test]
    fn wait_statuses_read_as_shells_show_them() {
        assert_eq!(exit_code_of(7 << 8), 7, "exit(7)");
        assert_eq!(exit_code_of(0), 0, "exit(0)");
        assert_eq!(exit_code_of(9), 137, "SIGKILL");
        assert_eq!(exit_code_of(15 | 0x80), 143, "SIGTERM with a core dump");
    }

    #[test]
    fn containers_get_dockers_environment_and_their_own_alone() {
        let env = container_env("box", &["MODE=test".into(), "PATH=/opt/bin".into(), "EMPTY".into()]);
        let get = |key: &str| env.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
        assert_eq!(get("PATH"), Some("/opt/bin"), "the container's own PATH wins");
        assert_eq!(get("HOSTNAME"), Some("box"));
        assert_eq!(get("HOME"), Some("/root"));
        assert_eq!(get("MODE"), Some("test"));
        assert_eq!(get("EMPTY"), Some(""));
        assert_eq!(env.len(), 5, "nothing of the caller's: {env:?}");
    }

    /// A process that is not our child (a command started before a restart of the daemon):
    /// its exit code comes from the pidfd once its parent reaped it.
    #[tokio::test]
    async fn the_exit_code_of_another_process_child_is_known() {
        // `sh` is our child; its background `sh -c 'exit 3'` is sh's child.
        let mut parent = Command::new("sh")
            // A background job's stdin is /dev/null: it reads ours through fd 3.
            .args(["-c", "exec 3<&0; sh -c 'read x <&3; exit 3' & echo $!; wait"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(parent.stdout.take().unwrap()), &mut line)
            .unwrap();
        let grandchild: i32 = line.trim().parse().unwrap();
        let code = tokio::spawn(wait_exit(grandchild));
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(parent.stdin.take());
        let code = code.await.unwrap();
        parent.wait().unwrap();
        if matches!(reaped_status(&pidfd_open(std::process::id() as i32).unwrap()), Reaped::Unsupported) {
            assert_eq!(code, None, "a kernel before 6.15 keeps no exit status for pidfds");
        } else {
            assert_eq!(code, Some(3), "the code sh reaped");
        }
    }
}
