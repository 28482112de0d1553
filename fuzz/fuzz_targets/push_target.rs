//! The push-target parser and the track selectors taken out of a target:
//! no panic; a file target never leaves its root, an RTMP target always
//! has a host, an app and a name, a WHIP URL never keeps its bearer token,
//! and what the selectors leave has no `video=` or `audio=` left.
#![no_main]
use std::path::{Component, Path};

use libfuzzer_sys::fuzz_target;
use tidecast_protocols::push::select;
use tidecast_protocols::push::target::{expand, redacted, Target, Vars};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let root = Path::new("/srv/recordings");
    let vars = Vars { stream: "s", tenant: "t", datetime: "2026.01.01.00.00.00", segment: None };
    let expanded = expand(s, &vars);
    let _ = redacted(&expanded);
    let Ok((rest, _selection)) = select::take(&expanded) else { return };
    if let Some((_, query)) = rest.split_once('?') {
        assert!(!query.split('&').any(|kv| kv.starts_with("video=") || kv.starts_with("audio=")));
    }
    match Target::parse(&rest, root) {
        Ok(Target::File(f)) => {
            assert!(f.path.starts_with(root) && f.path != root);
            assert!(f.path_for(7).starts_with(root));
            assert!(f.upload.as_ref().is_none_or(|u| !u.key_for(7).starts_with('/') && !u.key_for(7).split('/').any(|s| s == "..")));
            assert!(!f.path.components().any(|c| matches!(c, Component::ParentDir)));
        }
        Ok(Target::Rtmp(r)) => assert!(!r.addr.is_empty() && !r.app.is_empty() && !r.name.is_empty()),
        Ok(Target::Srt(t)) => {
            assert!(!t.addr.is_empty() && (20..=10_000).contains(&t.latency_ms));
            assert!(t.passphrase.as_ref().is_none_or(|p| (10..=79).contains(&p.len())));
        }
        Ok(Target::Whip(w)) => {
            assert!(w.url.starts_with("http://") || w.url.starts_with("https://"));
            let query = w.url.split_once('?').map_or("", |(_, q)| q);
            assert!(!query.split('&').any(|kv| kv.starts_with("bearer=")));
            assert!(w.token.as_ref().is_none_or(|t| !t.is_empty()));
        }
        Err(_) => {}
    }
});
