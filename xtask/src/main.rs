//! Developer tasks: `cargo xtask setup|build|test|fuzz|demo|bench|install`. Each installs what is missing
//! first (idempotently), so that each works alone on a fresh machine.

mod install;
mod setup;

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install the system packages, the nightly rust-src, bpf-linker and cargo-fuzz (idempotent).
    Setup,
    /// Build the kernel programs and the user-space crates.
    Build {
        #[arg(long)]
        release: bool,
    },
    /// Run every test: unit, BPF packet tests and namespace integration tests; without a
    /// filter, then each fuzz target briefly, built unoptimized (CI's run).
    Test {
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Fuzz the parsers (fuzz/): each target, or the one named, for a bounded time.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 60)]
        time: u64,
        /// One of fuzz/fuzz_targets (default: all of them).
        target: Option<String>,
    },
    /// Show the main job end to end in a throw-away host namespace.
    Demo,
    /// Compare with Docker's bridge + iptables side by side; writes target/bench/.
    Bench {
        /// Short runs, to check that the harness works (what CI runs).
        #[arg(long)]
        quick: bool,
        /// Rounds of A/B runs per metric.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Runs one scenario alone: `setup-at-scale` (ours only), `control-plane` (set-up
        /// and removal through the CLI), `conntrack`, `flood`, `overlay` (containers on two
        /// hosts), `published6` or `real-traffic-cost` (our programs' run time per packet
        /// under BPF_ENABLE_STATS, beside an empty program's).
        #[arg(long)]
        only: Option<String>,
    },
    /// Build for release and install: the binary, the CNI plugin, the systemd unit, an
    /// example /etc/dataplane/daemon.toml (an edited one is kept), shell completions and
    /// man pages.
    Install {
        /// Where the files live on the installed host: PREFIX/bin, PREFIX/lib/systemd/system,
        /// PREFIX/share/{man,bash-completion,zsh,fish}.
        #[arg(long, default_value = "/usr/local")]
        prefix: PathBuf,
        /// Write everything under this directory instead of / (for packages).
        #[arg(long, default_value = "/")]
        destdir: PathBuf,
        /// Where CNI runtimes look for plugins; the plugin goes there as `dataplane`.
        #[arg(long, default_value = "/opt/cni/bin")]
        cni_dir: PathBuf,
    },
}

fn main() -> Result<()> {
    match Cli::parse().task {
        Task::Setup => setup::install_missing(),
        Task::Build { release } => {
            setup::install_missing()?;
            build(release)
        }
        Task::Test { args } => {
            setup::install_missing()?;
            require_root("the tests create network namespaces and load BPF programs")?;
            build(false)?;
            let mut test = cargo();
            test.arg("test").args(&args);
            test.env("DATAPLANE_BIN", workspace_root().join("target/debug/dataplane"));
            run_tests(&mut test)?;
            if args.is_empty() { fuzz(FUZZ_SMOKE_SECS, None, FuzzBuild::Brief) } else { Ok(()) }
        }
        Task::Fuzz { time, target } => {
            setup::install_missing()?;
            fuzz(time, target, FuzzBuild::Thorough)
        }
        Task::Bench { quick, rounds, only } => {
            setup::install_missing()?;
            require_root("the bench creates network namespaces and loads BPF programs")?;
            let mut args = vec!["--rounds".to_string(), rounds.to_string()];
            if quick {
                args.push("--quick".into());
            }
            if let Some(only) = only {
                args.extend(["--only".into(), only]);
            }
            run_tool(ToolBuild::Release, &["dp-loadgen", "dp-forge", "dp-bench"], &args)
        }
        Task::Install { prefix, destdir, cni_dir } => {
            setup::install_missing()?;
            build(true)?;
            let root = workspace_root();
            let layout = install::Layout { prefix, destdir, cni_dir };
            for path in install::install(&root, &root.join("target/release"), &layout)? {
                println!("installed {}", path.display());
            }
            Ok(())
        }
        Task::Demo => {
            setup::install_missing()?;
            require_root("the demo creates network namespaces and loads BPF programs")?;
            run_tool(ToolBuild::Quiet, &["dp-demo"], &[])
        }
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn cargo() -> Command {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command.current_dir(workspace_root());
    command
}

/// How `run_tool` builds: the bench measures optimized code; the demo is read by people, so
/// its build keeps quiet (without `-q`, cargo relays every line of the eBPF build as a warning).
#[derive(Clone, Copy, PartialEq)]
enum ToolBuild {
    Release,
    Quiet,
}

/// Builds `dataplane`, its CNI plugin and the tools of the tests crate, then runs the last tool with the
/// freshly built `dataplane` as the one under test.
fn run_tool(how: ToolBuild, tools: &[&str], args: &[String]) -> Result<()> {
    let release = how == ToolBuild::Release;
    let mut build = cargo();
    build.args([
        "build",
        "-p",
        "dataplane",
        "-p",
        "dataplane-tests",
        "--bin",
        "dataplane",
        "--bin",
        "dataplane-cni",
    ]);
    for tool in tools {
        build.args(["--bin", tool]);
    }
    build.arg(if release { "--release" } else { "-q" });
    run_command(&mut build)?;
    let dir = workspace_root().join(if release { "target/release" } else { "target/debug" });
    let tool = dir.join(tools.last().expect("a tool"));
    run_command(Command::new(tool).args(args).env("DATAPLANE_BIN", dir.join("dataplane")))
}

fn build(release: bool) -> Result<()> {
    let mut command = cargo();
    command.args(["build", "-p", "dataplane"]);
    if release {
        command.arg("--release");
    }
    run_command(&mut command)
}

/// Runs `cargo test`, passing its output through, and closes with the totals over all
/// test binaries (cargo's own last line is that of whichever binary ran last).
fn run_tests(command: &mut Command) -> Result<()> {
    let mut child = command.stdout(Stdio::piped()).spawn().with_context(|| format!("running {command:?}"))?;
    let (mut passed, mut failed, mut ignored) = (0u64, 0u64, 0u64);
    for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
        let line = line?;
        println!("{line}");
        if let Some(summary) = line.strip_prefix("test result: ") {
            for part in summary.split(['.', ';']) {
                let mut words = part.split_whitespace();
                if let (Some(n), Some(what)) = (words.next(), words.next()) {
                    let n: u64 = n.parse().unwrap_or(0);
                    match what {
                        "passed" => passed += n,
                        "failed" => failed += n,
                        "ignored" => ignored += n,
                        _ => {}
                    }
                }
            }
        }
    }
    let status = child.wait()?;
    println!("tests: {passed} passed, {failed} failed, {ignored} skipped");
    if !status.success() {
        bail!("cargo test failed with {status}");
    }
    Ok(())
}

/// Seconds per fuzz target in `cargo xtask test`: enough to catch a parser that panics
/// on its first odd inputs, and to keep the corpora's seeds passing.
const FUZZ_SMOKE_SECS: u64 = 10;

/// How the fuzz targets are built, for the runs they are built for.
#[derive(Clone, Copy, PartialEq)]
enum FuzzBuild {
    /// Optimized (cargo-fuzz's release build, one codegen unit per crate): the most
    /// inputs per second, for `cargo xtask fuzz`'s long runs.
    Thorough,
    /// Unoptimized (`--dev`), for the test's brief runs, which find what panics on the
    /// first odd inputs and keep the seeds passing: its cold build (what CI does) took 212 s
    /// of CPU against the optimized one's 340, for a tenth of the inputs per second
    /// (in 10 s, dns_message 100,000 inputs instead of 1,000,000, cli_args 6,000 instead
    /// of 118,000): enough for those runs.
    Brief,
}

/// Runs each fuzz target (or `only`) for `secs`, from the seeds in fuzz/corpus/<target>;
/// what libFuzzer finds meanwhile goes to target/fuzz-corpus (the repo keeps the seeds
/// small), and a crashing input to fuzz/artifacts/<target>, named in the failure.
fn fuzz(secs: u64, only: Option<String>, build: FuzzBuild) -> Result<()> {
    let root = workspace_root();
    let targets: Vec<String> = match &only {
        Some(target) => vec![target.clone()],
        None => {
            let mut names: Vec<String> = std::fs::read_dir(root.join("fuzz/fuzz_targets"))?
                .filter_map(|e| Some(e.ok()?.path().file_stem()?.to_str()?.to_string()))
                .collect();
            names.sort();
            names
        }
    };
    // No sanitizer: the parsers are safe Rust, where a panic (debug assertions on, so
    // overflows too) is the finding; the build is faster for it.
    let fuzz = |verb: &str| {
        let mut command = Command::new("cargo");
        command.current_dir(&root).args([
            "+nightly",
            "fuzz",
            verb,
            "--sanitizer",
            "none",
            "--debug-assertions",
        ]);
        if build == FuzzBuild::Brief {
            command.arg("--dev");
        }
        command
    };
    // One target, or all of them at once.
    run_command(fuzz("build").args(&only))?;
    for target in &targets {
        let seeds = root.join("fuzz/corpus").join(target);
        if !seeds.is_dir() {
            bail!("fuzz target {target:?} has no seeds in {}; targets: fuzz/fuzz_targets", seeds.display());
        }
        let found = root.join("target/fuzz-corpus").join(target);
        std::fs::create_dir_all(&found).with_context(|| format!("creating {}", found.display()))?;
        eprintln!("fuzz: {target} for {secs} s");
        run_command(
            fuzz("run")
                .arg(target)
                .args([&found, &seeds])
                .arg("--")
                .arg(format!("-max_total_time={secs}"))
                // An input that takes this long is a hang, and a finding.
                .arg("-timeout=5"),
        )
        .with_context(|| {
            format!("fuzz target {target} failed; the input is under fuzz/artifacts/{target}")
        })?;
    }
    Ok(())
}

fn require_root(why: &str) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("run as root: {why}");
    }
    Ok(())
}

fn run_command(command: &mut Command) -> Result<()> {
    let status = command.status().with_context(|| format!("running {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed with {status}");
    }
    Ok(())
}
