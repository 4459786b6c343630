//! `-p` specs: any string is refused with a message or expands into mappings that say
//! what it said (ports 1-65535, one mapping per container port, host ports in step).
#![no_main]

use dataplane::ports::PublishSpec;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|spec: &str| {
    let Ok(PublishSpec(mappings)) = spec.parse::<PublishSpec>() else { return };
    assert!(!mappings.is_empty(), "{spec:?} gave no mapping");
    let first = mappings[0];
    for (i, m) in mappings.iter().enumerate() {
        assert_ne!(m.container_port, 0, "{spec:?}");
        assert_eq!(usize::from(m.container_port - first.container_port), i, "{spec:?}");
        assert_eq!((m.host_ip, m.proto), (first.host_ip, first.proto), "{spec:?}");
        if first.host_port != 0 {
            assert_eq!(usize::from(m.host_port - first.host_port), i, "{spec:?}");
        }
    }
});
