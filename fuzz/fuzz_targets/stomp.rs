//! The STOMP 1.2 codec reading what an ActiveMQ broker (or anything on its port) sends: frames
//! decoded from arbitrary bytes, fed in two pieces at an arbitrary split, must never panic, never
//! exceed the frame limit, and give the same frames as when fed at once (heart-beats counted as
//! runs). Header escaping must round-trip every string.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tally_queue_activemq::codec::{StompCodec, escape, unescape};
use tokio_util::codec::Decoder;

const MAX: usize = 64 * 1024;

fn frames(chunks: &[&[u8]]) -> (Vec<String>, bool) {
    let mut codec = StompCodec::new(MAX);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(item)) => {
                    let item = format!("{item:?}");
                    // A run of end-of-lines is one heart-beat however it arrives: what counts
                    // is that something arrived, not how many.
                    if !(item == "HeartBeat" && out.last().is_some_and(|l| l == "HeartBeat")) {
                        out.push(item);
                    }
                }
                Ok(None) => break,
                Err(_) => return (out, true),
            }
        }
    }
    (out, false)
}

fuzz_target!(|data: &[u8]| {
    let Some((&cut, rest)) = data.split_first() else {
        return;
    };
    let at = usize::from(cut) % (rest.len() + 1);
    let whole = frames(&[rest]);
    let split = frames(&[&rest[..at], &rest[at..]]);
    assert_eq!(whole, split, "the same frames however the bytes arrive");
    if let Ok(text) = std::str::from_utf8(rest) {
        let mut escaped = BytesMut::new();
        escape(text, &mut escaped);
        assert_eq!(unescape(&escaped).expect("escaped text unescapes"), text);
    }
});
