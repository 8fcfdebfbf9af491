//! Stored span blobs (a corrupted file must not crash readers).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = seer_collector::store::blob::services(data);
    let _ = seer_collector::store::blob::decode(data, |_, _| true);
    let _ = seer_collector::store::blob::count(data);
});
