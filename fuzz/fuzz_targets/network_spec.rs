//! `network create` as the daemon receives it: its options and its address plan (subnet,
//! gateway, range), checked as the daemon checks them. What is accepted is consistent:
//! the gateway and range lie in the subnet, and addresses are handed out from the range,
//! never the gateway's or the subnet's own; the same for the IPv6 plan of `--ipv6`.
#![no_main]

use std::collections::BTreeSet;

use dataplane::{
    api::NetworkSpec,
    ipam::{AddressPlan, AddressPlanV6},
    state::BridgeOptions,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|json: &[u8]| {
    let Ok(spec) = serde_json::from_slice::<NetworkSpec>(json) else { return };
    if let Ok(options) = BridgeOptions::parse(&spec.options) {
        assert!(options.mtu.is_none_or(|m| (68..=65535).contains(&m)), "{spec:?}");
    }
    if let Some(v6) = &spec.ipv6
        && let Some(subnet) = v6.subnet
        && let Ok(plan) = AddressPlanV6::new(subnet, v6.gateway, v6.ip_range)
    {
        assert!(plan.subnet.contains(&plan.gateway) && plan.subnet.contains(&plan.range), "{spec:?}: {plan:?}");
        let mut used = BTreeSet::new();
        for _ in 0..3 {
            let Ok(ip) = plan.allocate(&used) else { break };
            assert!(plan.range.contains(&ip), "{spec:?}: {ip} outside {}", plan.range);
            assert!(ip != plan.gateway && ip != plan.subnet.network(), "{ip}");
            assert!(plan.claim(ip, &used).is_ok(), "{spec:?}: {ip} handed out but not claimable");
            used.insert(ip);
        }
    }
    let Some(subnet) = spec.subnet else { return };
    let Ok(plan) = AddressPlan::new(subnet, spec.gateway, spec.ip_range) else { return };
    assert!(plan.subnet.contains(&plan.gateway) && plan.subnet.contains(&plan.range), "{spec:?}: {plan:?}");
    let mut used = BTreeSet::new();
    for _ in 0..3 {
        let Ok(ip) = plan.allocate(&used) else { break };
        assert!(plan.range.contains(&ip), "{spec:?}: {ip} outside {}", plan.range);
        assert!(ip != plan.gateway && ip != plan.subnet.network() && ip != plan.subnet.broadcast(), "{ip}");
        assert!(plan.claim(ip, &used).is_ok(), "{spec:?}: {ip} handed out but not claimable");
        used.insert(ip);
    }
});
