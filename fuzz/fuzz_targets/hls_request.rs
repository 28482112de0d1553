//! LL-HLS request parameters and file names from viewers (LL-DASH serves
//! the same file names, parsed by the same `Resource::parse`, plus its
//! thumbnails' names), and media playlists as the load generator's players
//! read them.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tidecast_protocols::hls::{read, PlaylistRequest, Resource};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(p) = read::media_playlist(s) {
        if let Some((msn, _)) = p.next_part() {
            assert!(p.parts.iter().any(|x| x.msn == msn || x.msn + 1 == msn));
        }
    }
    if let Ok(req) = PlaylistRequest::parse(s) {
        assert!(req.part.is_none() || req.msn.is_some());
    }
    // Names we accept never carry path syntax or anything but letters and digits.
    if let Some(Resource::Part(r, run, ..) | Resource::Segment(r, run, _) | Resource::Init(r, run, _)) =
        Resource::parse(s)
    {
        assert!(r.bytes().chain(run.bytes()).all(|b| b.is_ascii_alphanumeric()));
    }
    if let Some((run, start_ms, _)) = tidecast_protocols::dash::thumbs::parse(s) {
        assert!(run.bytes().all(|b| b.is_ascii_alphanumeric()) && start_ms >= 0);
    }
});
