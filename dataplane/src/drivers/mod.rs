//! Network drivers: how a network and a container's attachment to it are built in the
//! system and in the maps. `bridge` is the only driver so far; macvlan joins it with the
//! network-modes issue, at which point the shared interface becomes a trait.

pub mod bridge;
