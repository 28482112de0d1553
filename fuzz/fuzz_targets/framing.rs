//! The internal framing decoder; what decodes must re-encode identically.
#![no_main]
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tidecast_media::framing::{write_event, write_header, Decoder};

fuzz_target!(|data: &[u8]| {
    let mut dec = Decoder::new(1 << 20);
    dec.feed(data);
    let mut events = Vec::new();
    while let Ok(Some(e)) = dec.next_event() {
        events.push(e);
    }
    let mut out = BytesMut::new();
    write_header(&mut out);
    for e in &events {
        write_event(e, &mut out);
    }
    let mut again = Decoder::new(1 << 20);
    again.feed(&out);
    for e in &events {
        let d = again.next_event().expect("re-encoded framing decodes").expect("complete");
        // Frame rates are f64 bits: compare re-encodings, not values.
        let (mut a, mut b) = (BytesMut::new(), BytesMut::new());
        write_event(e, &mut a);
        write_event(&d, &mut b);
        assert_eq!(a, b);
    }
});
