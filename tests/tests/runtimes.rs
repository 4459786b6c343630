//! Real runtimes put their containers on dataplane networks through the CNI plugin:
//! podman 4.3 (CNI backend) and containerd 1.6 (`ctr run --cni`), in the test's host
//! namespace, with a busybox image built locally.

use dataplane_tests::{
    Host,
    runtimes::{Containerd, Podman, reference_conflist},
};

#[test]
fn podman_containers_reach_each_other() {
    let host = Host::start();
    let podman = Podman::start(&host, &[reference_conflist(&host, "refnet", "10.88.5.0/24", "10.88.5.1")]);
    podman.run("one", "refnet", &[], &["sleep", "600"]);
    podman.run("two", "refnet", &[], &["sleep", "600"]);
    let two = podman.ip_of("two", "refnet");
    let ping = podman.exec("one", &format!("ping -c 1 -W 2 {two}"));
    assert!(
        ping.status.success(),
        "one does not reach two at {two}: {}",
        String::from_utf8_lossy(&ping.stdout)
    );
}

#[test]
fn containerd_containers_reach_each_other() {
    let host = Host::start();
    let mut containerd =
        Containerd::start(&host, &reference_conflist(&host, "refnet", "10.88.6.0/24", "10.88.6.1"));
    containerd.run("one", &["sleep", "600"]);
    containerd.run("two", &["sleep", "600"]);
    let two = containerd.ip_of("two");
    assert!(two.starts_with("10.88.6."), "two's address {two} is not on the network");
    let ping = containerd.exec("one", &format!("ping -c 1 -W 2 {two}"));
    assert!(
        ping.status.success(),
        "one does not reach two at {two}: {}",
        String::from_utf8_lossy(&ping.stdout)
    );
    let veths = |host: &Host| host.links().iter().filter(|l| l.starts_with("veth")).count();
    assert_eq!(veths(&host), 2);
    containerd.stop("two");
    assert_eq!(veths(&host), 1, "ctr's DEL left two's veth");
}
