//! The daemon's API: one JSON request on a line, as its socket reads it. Whatever the
//! bytes, the request is refused or read, and one that is read says the same again
//! when written back out.
#![no_main]

use dataplane::api::Request;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|line: &[u8]| {
    let Ok(request) = serde_json::from_slice::<Request>(line) else { return };
    let again = serde_json::to_vec(&request).expect("a request read can be written");
    let reread: Request = serde_json::from_slice(&again).expect("a request written can be read");
    assert_eq!(serde_json::to_vec(&reread).unwrap(), again, "{request:?}");
});
