//! What the MQTT listener reads from a claimant: a byte stream of MQTT 3.1.1 or 5
//! packets (the version read from the CONNECT), and in each PUBLISH a topic and a JSON
//! payload. Reading never panics, a stream ends at the first packet that does not
//! decode, and a payload is either decoded for its topic or refused with words.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use provisiond::mqtt::{Incoming, MAX_PAYLOAD, Request, Wire, decode_payload};

fuzz_target!(|data: &[u8]| {
    let mut wire = Wire::default();
    let mut buffer = BytesMut::from(data);
    // Each packet takes at least two bytes, so this ends.
    for _ in 0..=data.len() / 2 {
        match wire.decode(&mut buffer) {
            Ok(Some(Incoming::Publish { topic, payload, .. })) => {
                if let Some(request) = Request::parse(&topic) {
                    match decode_payload(&request, &payload) {
                        Ok(_) => assert!(payload.len() <= MAX_PAYLOAD),
                        Err(words) => assert!(!words.is_empty()),
                    }
                }
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
});
