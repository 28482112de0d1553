//! WHIP/WHEP signaling input: SDP offers (our checks, then str0m's parser
//! and answer), trickle ICE fragments and their candidate lines, and STUN
//! datagrams as the shared UDP port routes them.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tidecast_protocols::webrtc::{sdp, stun};

fuzz_target!(|data: &[u8]| {
    let _ = stun::request_ufrag(data);
    let _ = stun::mapped_address(data);
    let _ = stun::transaction(data);
    let Ok(text) = std::str::from_utf8(data) else { return };
    for publish in [true, false] {
        let codecs = if publish { sdp::INGEST_CODECS } else { sdp::PLAYBACK_CODECS };
        if let Ok(lines) = sdp::check_offer(text, publish, codecs) {
            assert!(!lines.is_empty());
        }
    }
    if let Ok(offer) = str0m::change::SdpOffer::from_sdp_string(text) {
        let mut rtc = str0m::RtcConfig::new().set_ice_lite(true).build(std::time::Instant::now());
        let _ = rtc.sdp_api().accept_offer(offer);
    }
    if let Ok(t) = sdp::parse_trickle(text) {
        for c in &t.candidates {
            let _ = str0m::Candidate::from_sdp_string(c);
        }
    }
});
