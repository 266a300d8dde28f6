//! Arbitrary bytes into every wire decoder. Nothing may panic, and whatever
//! decodes must be canonical: encoding it again gives back the same bytes
//! (what is signed is what is meant). A failure here is a bug in the codec.

#![no_main]

use keynode_core::wire::{
    self, decode_claim_message, decode_frame, decode_request, decode_response,
};
use libfuzzer_sys::fuzz_target;

/// The limit the nodes use (`Config::default().max_message_size`).
const LIMIT: usize = 64 * 1024;

/// If `decoded` is `Ok`, re-encodes it and checks it gives back `bytes`.
macro_rules! check_canonical {
    ($what:literal, $decoded:expr, $bytes:expr) => {
        if let Ok(value) = $decoded {
            match wire::encode(&value, LIMIT) {
                Ok(again) => assert!(
                    again == $bytes,
                    "{} decoded from bytes it does not encode to: {:?}",
                    $what,
                    value
                ),
                Err(e) => panic!("{} decoded but does not encode ({e}): {:?}", $what, value),
            }
        }
    };
}

fuzz_target!(|bytes: &[u8]| {
    check_canonical!("Frame", decode_frame(bytes, LIMIT), bytes);
    check_canonical!("Request", decode_request(bytes, LIMIT), bytes);
    check_canonical!("Response", decode_response(bytes, LIMIT), bytes);
    check_canonical!("ClaimMessage", decode_claim_message(bytes, LIMIT), bytes);
});
