//! JSON bodies of the API: labels and node samples.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = serde_json::from_slice::<seer_collector::window::Label>(data);
    let _ = serde_json::from_slice::<Vec<seer_collector::window::Label>>(data);
    let _ = serde_json::from_slice::<seer_collector::hw::NodeSample>(data);
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = seer_collector::serve::api::parse_time(s, u64::MAX / 2);
        let _ = seer_collector::serve::api::parse_trace_id(s);
    }
});
