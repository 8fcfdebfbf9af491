//! OTLP/JSON: never panics, whatever the nesting or ids.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = seer_collector::ingest::otlp::decode_json(data);
});
