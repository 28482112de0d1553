//! FLV tag bodies, legacy and Enhanced RTMP, through the ingest; and the
//! same bytes as an FLV file.
#![no_main]
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use tidecast_protocols::flv::{file_tags, parse_audio, parse_video, FlvIngest};

fuzz_target!(|data: &[u8]| {
    let file = Bytes::copy_from_slice(data);
    let mut walked = 0;
    for tag in file_tags(&file) {
        match tag {
            Ok(t) => walked += 11 + t.body.len() + 4,
            Err(_) => break,
        }
    }
    assert!(walked <= data.len() + 4);
    let mut ingest = FlvIngest::new();
    // Records separated by 0xFF 0xFE: each is one tag, alternately video and audio.
    for (i, tag) in data.split(|&b| b == 0xfe).enumerate() {
        let body = Bytes::copy_from_slice(tag);
        let _ = parse_video(&body);
        let _ = parse_audio(&body);
        let ts = (i as u32).wrapping_mul(40);
        let frame = if i % 2 == 0 { ingest.video(ts, &body) } else { ingest.audio(ts, &body) };
        if let Ok(Some(f)) = frame {
            assert!(f.payload.len() <= body.len());
        }
        let _ = ingest.take_tracks();
    }
});
