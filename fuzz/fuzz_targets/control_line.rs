//! The control port's lines, as the host reads them from the guest: any
//! bytes, split at newlines and read as text with replacement characters
//! (as `pump_control` does). Decoding must never panic, and whatever
//! decodes must encode to one line that decodes again (to the same
//! message, except for texts, whose line breaks become spaces).
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmshare_init::protocol::Message;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for line in text.split('\n') {
        let Some(m) = Message::decode(line) else {
            continue;
        };
        let encoded = m.encode();
        let body = encoded.strip_suffix('\n').unwrap_or(&encoded);
        assert!(!body.contains('\n'), "{encoded:?} is more than one line");
        let again = Message::decode(body);
        match m {
            Message::Event(_) | Message::Error(_) => assert!(again.is_some(), "{encoded:?}"),
            _ => assert_eq!(again, Some(m), "{encoded:?}"),
        }
    }
});
