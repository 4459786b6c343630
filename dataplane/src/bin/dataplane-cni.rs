//! The CNI plugin binary; install it as `dataplane` where runtimes look for plugins
//! (`/opt/cni/bin`, `/usr/lib/cni`). See `dataplane::cni`.

use rscni_plugin::cni::Plugin;

fn main() -> std::process::ExitCode {
    let plugin = Plugin::default().msg(concat!(
        "dataplane CNI plugin ",
        env!("CARGO_PKG_VERSION"),
        ": attaches containers to dataplane networks through the daemon"
    ));
    // The error result is on stdout already; the exit code tells the runtime it failed.
    match plugin.run(&dataplane::cni::DataplaneCni) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(_) => std::process::ExitCode::FAILURE,
    }
}
