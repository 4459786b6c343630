//! The user-space side of dataplane: the daemon, its CLI, and the modules they compose.

pub mod api;
pub mod cli;
pub mod cni;
pub mod daemon;
pub mod dns;
pub mod docker;
pub mod drivers;
pub mod firewall;
pub mod format;
pub mod inspect;
pub mod ipam;
pub mod listing;
pub mod maps;
pub mod monitor;
pub mod nat;
pub mod netlink;
pub mod netns;
pub mod ports;
pub mod process;
pub mod state;
pub mod store;
pub mod tunnel;
