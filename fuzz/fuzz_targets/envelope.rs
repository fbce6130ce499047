//! A queue payload (postcard) as the processor reads it, from a queue or a broker anyone with the
//! broker's credentials can publish to. Decoding may fail but never panic; what decodes must encode
//! to bytes that decode to the same envelope.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tally_core::model::CommandEnvelope;

fuzz_target!(|data: &[u8]| {
    if let Ok(envelope) = CommandEnvelope::decode(data) {
        let again =
            CommandEnvelope::decode(&envelope.encode()).expect("re-encoded envelope decodes");
        assert_eq!(again, envelope);
    }
});
