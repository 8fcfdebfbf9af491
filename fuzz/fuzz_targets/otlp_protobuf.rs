//! OTLP/protobuf: seer's zero-copy reader never panics, and whatever it accepts `prost`
//! decodes too (so stored spans can always be served back).
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    if let Ok(batch) = seer_collector::ingest::otlp::decode(bytes::Bytes::copy_from_slice(data)) {
        for s in &batch.spans {
            let span = opentelemetry_proto::tonic::trace::v1::Span::decode(batch.slice(s.raw))
                .expect("accepted span must decode with prost");
            assert_eq!(span.trace_id.as_slice(), &s.trace_id[..]);
        }
        let (blob, _) = seer_collector::store::blob::encode(&batch);
        let back = seer_collector::store::blob::decode(&blob, |_, _| true).expect("own blob decodes");
        assert_eq!(back.len(), batch.spans.len());
    }
});
