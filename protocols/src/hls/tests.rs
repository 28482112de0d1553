//! Segmenter and playlist behaviour on synthetic frames.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use tidecast_media::{Codec, Event, Frame, Track, TrackInfo};

use super::*;

fn tracks() -> Arc<[Track]> {
    let sps = [
        0x67, 0xf4, 0x00, 0x0d, 0x91, 0x9b, 0x28, 0x28, 0x3f, 0x60, 0x22, 0x00, 0x00, 0x03, 0x00, 0x02, 0x00, 0x00,
        0x03, 0x00, 0x64, 0x1e, 0x28, 0x53, 0x2c,
    ];
    let config = tidecast_codecs::h264::build_config(&sps, &[0x68, 0xeb, 0xe3, 0xc4, 0x48, 0x44]).unwrap();
    let info = tidecast_codecs::describe(Codec::H264, &config).unwrap();
    let aac = Bytes::from_static(&[0x12, 0x10]);
    let ainfo = tidecast_codecs::describe(Codec::Aac, &aac).unwrap();
    Arc::from(vec![
        Track { id: 0, codec: Codec::H264, config: config.into(), info },
        Track { id: 1, codec: Codec::Aac, config: aac, info: TrackInfo { ..ainfo } },
    ])
}

/// 25 fps video with a keyframe every `gop` frames, AAC at ~43 fps, interleaved in dts order.
fn events(seconds: i64, gop: i64) -> Vec<Event> {
    let mut evs = vec![Event::Tracks(tracks())];
    let mut frames = Vec::new();
    for i in 0..seconds * 25 {
        let payload = Bytes::from(vec![(i % 251) as u8; 100 + (i % 7) as usize]);
        frames.push(Frame { track: 0, dts: i * 40_000, cts: 0, keyframe: i % gop == 0, payload });
    }
    for i in 0..seconds * 44100 / 1024 {
        let dts = i * 1024 * 1_000_000 / 44100;
        frames.push(Frame { track: 1, dts, cts: 0, keyframe: true, payload: Bytes::from(vec![0xa5; 20]) });
    }
    frames.sort_by_key(|f| (f.dts, f.track));
    evs.extend(frames.into_iter().map(Event::Frame));
    evs
}

fn cfg() -> HlsConfig {
    HlsConfig { window: 20, ..HlsConfig::default() }
}

fn packaged(seconds: i64, gop: i64) -> Segmenter {
    let mut p = Segmenter::new(cfg().segmenter());
    for e in events(seconds, gop) {
        p.on_event(e);
    }
    p
}

fn attr<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let start = line.find(&format!("{key}="))? + key.len() + 1;
    let rest = &line[start..];
    let end = if let Some(quoted) = rest.strip_prefix('"') {
        quoted.find('"')? + 2
    } else {
        rest.find(',').unwrap_or(rest.len())
    };
    Some(rest[..end].trim_matches('"'))
}

#[test]
fn segments_are_gop_aligned_and_parts_bounded() {
    let p = packaged(12, 50);
    let v = p.rendition("video").unwrap();
    let complete: Vec<_> = v.segments.iter().filter(|s| s.complete).collect();
    assert_eq!(complete.len(), 5, "12 s with a 2 s GOP: 5 complete segments and one open");
    for s in &complete {
        assert!((s.duration - 2.0).abs() < 1e-9, "segment {} lasts {}", s.msn, s.duration);
        assert!(s.parts[0].independent);
        assert_eq!(s.parts.len(), 10);
        for part in &s.parts {
            assert!(part.duration <= 0.2 + 1e-9 && part.duration >= 0.16, "part of {}", part.duration);
        }
        let sum: f64 = s.parts.iter().map(|p| p.duration).sum();
        assert!((sum - s.duration).abs() < 1e-6);
    }
    let a = p.rendition("audio").unwrap();
    assert_eq!(a.segments.iter().filter(|s| s.complete).count(), 5, "audio follows the same boundaries");
    assert_eq!(a.segments.back().unwrap().msn, v.segments.back().unwrap().msn);
}

#[test]
fn media_playlist_has_every_ll_hls_tag() {
    let p = packaged(12, 50);
    let v = p.rendition("video").unwrap();
    let text = playlist::media(&cfg(), &p, v, "r", Skip::No);
    for tag in [
        "#EXT-X-TARGETDURATION:2",
        "#EXT-X-PART-INF:PART-TARGET=0.200",
        "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL=12.0,PART-HOLD-BACK=0.600",
        "#EXT-X-MEDIA-SEQUENCE:0",
        "#EXT-X-MAP:URI=\"video-r-i0.mp4\"",
        "#EXT-X-PROGRAM-DATE-TIME:",
        "#EXT-X-PART:DURATION=0.20000,URI=\"video-r-5.0.m4s\",INDEPENDENT=YES",
        "#EXTINF:2.00000,\nvideo-r-4.m4s",
        "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"video-r-5.",
        "#EXT-X-RENDITION-REPORT:URI=\"audio.m3u8\",LAST-MSN=5,LAST-PART=",
    ] {
        assert!(text.contains(tag), "missing {tag:?} in\n{text}");
    }
    // m3u8-rs reads the plain fields of our playlist.
    match m3u8_rs::parse_playlist_res(text.as_bytes()) {
        Ok(m3u8_rs::Playlist::MediaPlaylist(pl)) => {
            assert_eq!(pl.segments.len(), 5);
            assert_eq!(pl.target_duration, 2);
        }
        other => panic!("{other:?}"),
    }
    let mv = playlist::multivariant(&p);
    assert!(mv.contains("CODECS=\"avc1.f4000d,mp4a.40.2\""), "{mv}");
    assert!(mv.contains("RESOLUTION=320x240"), "{mv}");
    assert!(mv.contains("URI=\"audio.m3u8\""), "{mv}");
}

#[test]
fn delta_update_is_smaller_and_consistent() {
    let p = packaged(30, 50);
    let v = p.rendition("video").unwrap();
    let full = playlist::media(&cfg(), &p, v, "r", Skip::No);
    let delta = playlist::media(&cfg(), &p, v, "r", Skip::Yes);
    assert!(delta.len() < full.len());
    let skip_line = delta.lines().find(|l| l.starts_with("#EXT-X-SKIP:")).expect("EXT-X-SKIP");
    let skipped: usize = attr(skip_line, "SKIPPED-SEGMENTS").unwrap().parse().unwrap();
    // Skipped segments plus the listed ones are exactly the full playlist's.
    let uris = |t: &str| {
        t.lines().filter(|l| l.ends_with(".m4s") && !l.starts_with('#')).map(str::to_owned).collect::<Vec<_>>()
    };
    let (f, d) = (uris(&full), uris(&delta));
    assert_eq!(f.len(), skipped + d.len());
    assert_eq!(f[skipped..], d[..]);
    // What remains covers at least CAN-SKIP-UNTIL (12 s).
    assert!(d.len() * 2 >= 12);
}

#[test]
fn parts_concatenate_to_the_segment_byte_for_byte() {
    let p = packaged(6, 50);
    for r in &p.renditions {
        for s in r.segments.iter().filter(|s| s.complete) {
            let seg: Vec<u8> = s.parts.iter().flat_map(|p| p.chunks.iter().flat_map(|c| c.to_vec())).collect();
            let mut buf = &seg[..];
            let mut boxes = 0;
            while !buf.is_empty() {
                let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
                assert!(len >= 8 && len <= buf.len(), "box sizes tile the segment");
                buf = &buf[len..];
                boxes += 1;
            }
            assert!(boxes >= 2 * s.parts.len());
        }
    }
}

#[test]
fn empty_frames_are_not_packaged() {
    let mut with_empties = Segmenter::new(cfg().segmenter());
    let mut plain = Segmenter::new(cfg().segmenter());
    for e in events(4, 50) {
        if let Event::Frame(f) = &e {
            let empty = Frame { payload: Bytes::new(), dts: f.dts + 1, ..f.clone() };
            with_empties.on_event(Event::Frame(empty));
        }
        with_empties.on_event(e.clone());
        plain.on_event(e);
    }
    for (a, b) in with_empties.renditions.iter().zip(&plain.renditions) {
        let bytes = |r: &Rendition| r.segments.iter().map(|s| s.bytes()).collect::<Vec<_>>();
        assert_eq!(bytes(a), bytes(b), "{}: no zero-size samples, which players reject", a.name);
    }
}

#[test]
fn discontinuity_starts_a_new_segment() {
    let mut p = Segmenter::new(cfg().segmenter());
    for e in events(5, 50) {
        p.on_event(e);
    }
    p.on_event(Event::Discontinuity);
    for e in events(3, 50).into_iter().skip(1) {
        if let Event::Frame(mut f) = e {
            f.dts += 10_000_000;
            p.on_event(Event::Frame(f));
        }
    }
    let v = p.rendition("video").unwrap();
    let text = playlist::media(&cfg(), &p, v, "r", Skip::No);
    assert_eq!(text.matches("#EXT-X-DISCONTINUITY\n").count(), 1, "{text}");
}

#[test]
fn request_parameters() {
    assert_eq!(
        PlaylistRequest::parse("_HLS_msn=5&_HLS_part=2&_HLS_skip=YES&token=x").unwrap(),
        PlaylistRequest { msn: Some(5), part: Some(2), skip: Skip::Yes }
    );
    assert!(PlaylistRequest::parse("_HLS_part=2").is_err());
    assert!(PlaylistRequest::parse("_HLS_msn=x").is_err());
    assert_eq!(Resource::parse("video-ab12-7.3.m4s"), Some(Resource::Part("video".into(), "ab12".into(), 7, 3)));
    assert_eq!(Resource::parse("audio-ab12-7.m4s"), Some(Resource::Segment("audio".into(), "ab12".into(), 7)));
    assert_eq!(Resource::parse("video-ab12-i0.mp4"), Some(Resource::Init("video".into(), "ab12".into(), 0)));
    assert_eq!(Resource::parse("../etc"), None);
}

#[tokio::test(start_paused = true)]
async fn blocking_reload_waits_for_the_part_and_the_hinted_part_streams() {
    let hls = Arc::new(HlsStream::new("s".into(), cfg()));
    let evs = events(4, 50);
    let (first, rest) = evs.split_at(evs.len() / 2);
    for e in first {
        hls.update(|p| p.on_event(e.clone()));
    }
    let (msn, part) = hls.read(|p| p.rendition("video").unwrap().last_part().unwrap());
    let (want_msn, want_part) = (msn, part + 1);
    let hs = hls.clone();
    let waiter = tokio::spawn(async move {
        hs.media_playlist(
            "video",
            PlaylistRequest { msn: Some(want_msn), part: Some(want_part as u64), skip: Skip::No },
        )
        .await
    });
    let run = hls.run().to_owned();
    let hinted = hls.part("video", &run, want_msn, want_part).await;
    tokio::task::yield_now().await;
    assert!(!waiter.is_finished(), "must block until the part exists");
    for e in rest {
        hls.update(|p| p.on_event(e.clone()));
    }
    let text = waiter.await.unwrap().unwrap();
    assert!(text.contains(&format!("video-{run}-{want_msn}.{want_part}.m4s")));
    let body: Vec<Bytes> = hinted.unwrap().collect().await;
    let seg_part =
        hls.read(|p| p.rendition("video").unwrap().segment(want_msn).unwrap().parts[want_part].chunks.clone());
    assert_eq!(body, seg_part);
    // Too far ahead is a 400; a part that never comes times out with 503.
    let far = hls.media_playlist("video", PlaylistRequest { msn: Some(msn + 10), part: None, skip: Skip::No }).await;
    assert!(matches!(far, Err(HlsError::BadRequest(_))));
    let late = hls.media_playlist("video", PlaylistRequest { msn: Some(msn + 3), part: None, skip: Skip::No }).await;
    assert_eq!(late, Err(HlsError::Timeout));
}

/// A player joining the moment a stream appears: the first multivariant
/// playlist and the first media playlist wait until every rendition holds a
/// whole segment, so a plain HLS client (ffprobe) sees both tracks and at
/// least one EXTINF; a stream that never completes one is answered with what
/// exists once the hold runs out.
#[tokio::test(start_paused = true)]
async fn first_playlists_wait_for_a_whole_segment_of_every_rendition() {
    let hls = Arc::new(HlsStream::new("s".into(), cfg()));
    let evs = events(6, 50); // keyframes every 2 s: the first segment ends at 2 s
    let early: Vec<Event> =
        evs.iter().filter(|e| !matches!(e, Event::Frame(f) if f.dts >= 1_000_000)).cloned().collect();
    for e in &early {
        hls.update(|p| p.on_event(e.clone()));
    }
    assert!(hls.read(|p| p.rendition("video").unwrap().last_part().is_some()), "parts exist already");
    let (hm, hv) = (hls.clone(), hls.clone());
    let multivariant = tokio::spawn(async move { hm.multivariant().await });
    let media = tokio::spawn(async move { hv.media_playlist("video", PlaylistRequest::default()).await });
    tokio::task::yield_now().await;
    assert!(!multivariant.is_finished() && !media.is_finished(), "held until a whole segment exists");
    for e in &evs[early.len()..] {
        hls.update(|p| p.on_event(e.clone()));
    }
    let mv = multivariant.await.unwrap().unwrap();
    assert!(mv.contains("mp4a.40.2") && mv.contains("avc1."), "{mv}");
    assert!(media.await.unwrap().unwrap().contains("#EXTINF:"));

    // Only parts, no keyframe to close a segment: answered after the hold.
    let stuck = Arc::new(HlsStream::new("t".into(), cfg()));
    for e in &early {
        stuck.update(|p| p.on_event(e.clone()));
    }
    let started = tokio::time::Instant::now();
    let text = stuck.multivariant().await.unwrap();
    assert!(text.contains("#EXT-X-STREAM-INF"));
    assert!(started.elapsed() >= stuck.settle_hold(), "answered only once the hold ran out");
}

/// A source with two video tracks (say, two programs of an MPEG-TS) and one
/// audio track: three renditions cut at the same boundaries, two variants
/// sharing the audio group.
#[test]
fn several_video_tracks_become_aligned_renditions_and_variants() {
    let mut second = tracks()[0].clone();
    second.id = 2;
    second.info.width = 320;
    second.info.height = 180;
    let mut all: Vec<Track> = tracks().to_vec();
    all.push(second);
    let mut p = Segmenter::new(cfg().segmenter());
    for e in events(7, 50) {
        match e {
            Event::Tracks(_) => p.on_event(Event::Tracks(Arc::from(all.clone()))),
            Event::Frame(f) if f.track == 0 => {
                p.on_event(Event::Frame(f.clone()));
                p.on_event(Event::Frame(Frame { track: 2, ..f }));
            }
            other => p.on_event(other),
        }
    }
    let names: Vec<&str> = p.renditions.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["video", "audio", "video1"]);
    let msns = |name: &str| -> Vec<(u64, i64)> {
        let r = p.rendition(name).unwrap();
        r.segments.iter().filter(|s| s.complete).map(|s| (s.msn, s.start_us)).collect()
    };
    assert_eq!(msns("video").len(), 3);
    assert_eq!(msns("video"), msns("video1"), "the same segment numbers at the same times");
    assert_eq!(msns("audio").iter().map(|s| s.0).collect::<Vec<_>>(), [0, 1, 2]);

    let text = playlist::multivariant(&p);
    let variants: Vec<&str> = text.lines().filter(|l| l.starts_with("#EXT-X-STREAM-INF")).collect();
    assert_eq!(variants.len(), 2, "{text}");
    assert!(variants.iter().all(|v| v.contains("AUDIO=\"audio\"") && v.contains("CLOSED-CAPTIONS=NONE")), "{text}");
    assert!(variants[1].contains("RESOLUTION=320x180"), "{text}");
    assert_eq!(text.matches("#EXT-X-MEDIA:TYPE=AUDIO").count(), 1, "{text}");
    assert!(text.contains("\nvideo.m3u8\n") && text.contains("\nvideo1.m3u8\n"), "{text}");
    let media = playlist::media(&cfg(), &p, p.rendition("video1").unwrap(), "r", Skip::No);
    assert!(media.contains("#EXT-X-RENDITION-REPORT:URI=\"video.m3u8\""), "{media}");
    assert!(media.contains("#EXT-X-RENDITION-REPORT:URI=\"audio.m3u8\""), "{media}");
}

/// Waiters for playlists wake at part and segment boundaries: the layout
/// fingerprint moves when a part starts or closes, not at every frame.
#[test]
fn the_layout_changes_at_boundaries_not_at_every_frame() {
    let mut p = Segmenter::new(cfg().segmenter());
    let (mut fed, mut changes) = (0, 0);
    for e in events(6, 50) {
        let before = p.layout();
        p.on_event(e);
        fed += 1;
        changes += u32::from(p.layout() != before);
    }
    let video_parts: usize = p.rendition("video").unwrap().segments.iter().map(|s| s.parts.len()).sum();
    assert!(changes as usize >= video_parts, "every video part moved it: {changes} changes, {video_parts} parts");
    assert!(changes * 2 < fed, "{changes} changes for {fed} events");
}

/// A codec configuration change mid-stream: LL-HLS gets a new init section
/// behind a discontinuity, LL-DASH a new Period whose start stays put as the
/// window slides.
#[test]
fn a_configuration_change_starts_a_new_dash_period() {
    let sps = [
        0x67, 0xf4, 0x00, 0x0d, 0x91, 0x9b, 0x28, 0x28, 0x3f, 0x60, 0x22, 0x00, 0x00, 0x03, 0x00, 0x02, 0x00, 0x00,
        0x03, 0x00, 0x64, 0x1e, 0x28, 0x53, 0x2c,
    ];
    let other = tidecast_codecs::h264::build_config(&sps, &[0x68, 0xee, 0x3c, 0x80]).unwrap();
    let mut changed: Vec<Track> = tracks().to_vec();
    changed[0].config = other.into();
    let mut p = Segmenter::new(SegmenterConfig { window: 4, ..cfg().segmenter() });
    for e in events(6, 50) {
        p.on_event(e);
    }
    p.anchor(1_795_000_000_000);
    p.on_event(Event::Tracks(Arc::from(changed)));
    // The next six seconds, on the same timeline.
    for e in events(12, 50).into_iter().skip(1) {
        if let Event::Frame(f) = &e {
            if f.dts < 6_000_000 {
                continue;
            }
        }
        p.on_event(e);
    }
    let video = p.rendition("video").unwrap();
    assert!(video.segments.iter().any(|s| s.init_version == 0) && video.segments.iter().any(|s| s.init_version == 1));
    let ctx = crate::dash::mpd::MpdContext {
        thumbnails: None,
        run: "r",
        now_ms: 1_795_000_012_000,
        utc_url: "http://h/dash/utc",
        latency_target: None,
        carry: "",
    };
    let spans = crate::dash::mpd::periods(&p);
    assert_eq!(spans.len(), 2, "{spans:?}");
    assert_eq!((spans[0].id.as_str(), spans[1].id.as_str()), ("p0-0", "p1-0"));
    let cut = video.segments.iter().find(|s| s.init_version == 1).unwrap();
    assert_eq!(spans[1].msns.0, cut.msn);
    assert_eq!(spans[1].start_us, cut.start_us, "the new Period starts with its first segment");
    let mpd = crate::dash::mpd::render(&p, &ctx).unwrap();
    assert_eq!(mpd.matches("<Period ").count(), 2, "{mpd}");
    assert!(mpd.contains("video-r-i0.mp4") && mpd.contains("video-r-i1.mp4"), "{mpd}");
    // Sliding the window past the cut leaves one Period, with the same id and start.
    for e in events(30, 50).into_iter().skip(1) {
        if let Event::Frame(f) = &e {
            if f.dts < 12_000_000 {
                continue;
            }
        }
        p.on_event(e);
    }
    let later = crate::dash::mpd::periods(&p);
    assert_eq!(later.len(), 1, "{later:?}");
    assert_eq!((later[0].id.as_str(), later[0].start_us), (spans[1].id.as_str(), spans[1].start_us));
    let text = playlist::media(&cfg(), &p, p.rendition("video").unwrap(), "r", Skip::No);
    assert!(text.contains("video-r-i1.mp4"), "{text}");
}

/// A stream with Opus and (bridged) AAC audio lists only AAC in the
/// multivariant playlist: every HLS player decodes it.
#[test]
fn with_opus_and_aac_the_multivariant_playlist_lists_aac() {
    let opus_head = tidecast_codecs::opus::build_head(2, 312);
    let opus = Track {
        id: 1,
        codec: Codec::Opus,
        info: tidecast_codecs::describe(Codec::Opus, &opus_head).unwrap(),
        config: Bytes::from(opus_head),
    };
    let mut aac = tracks()[1].clone();
    aac.id = tidecast_media::DERIVED_TRACK_BASE;
    let all: Arc<[Track]> = Arc::from(vec![tracks()[0].clone(), opus, aac]);
    let mut p = Segmenter::new(cfg().segmenter());
    for e in events(5, 50) {
        match e {
            Event::Tracks(_) => p.on_event(Event::Tracks(all.clone())),
            Event::Frame(f) if f.track == 1 => {
                p.on_event(Event::Frame(f.clone()));
                p.on_event(Event::Frame(Frame { track: tidecast_media::DERIVED_TRACK_BASE, ..f }));
            }
            other => p.on_event(other),
        }
    }
    let text = playlist::multivariant(&p);
    assert_eq!(text.matches("#EXT-X-MEDIA:TYPE=AUDIO").count(), 1, "{text}");
    assert!(text.contains("URI=\"audio1.m3u8\"") && text.contains("mp4a.40.2") && !text.contains("opus"), "{text}");
}

/// A late video track (a Livepeer rendition) that loses a segment's worth
/// of frames: the segment before ends at its boundary, the lost one is an
/// `EXT-X-GAP` with the lead's duration, and numbering stays the lead's.
#[test]
fn a_follower_that_loses_a_segment_gets_a_gap() {
    let mut p = Segmenter::new(cfg().segmenter());
    let evs = events(10, 25); // 2 s segments, a keyframe a second
    let mut rung = tracks()[0].clone();
    rung.id = 2;
    let mut with_rung: Vec<Track> = tracks().to_vec();
    with_rung.push(rung);
    for e in evs {
        let Event::Frame(f) = e else {
            p.on_event(Event::Tracks(Arc::from(with_rung.clone())));
            continue;
        };
        // The rendition: the video's frames again, none from 3 s to 7 s
        // (the whole segment 4-6 s is lost).
        let copy = (f.track == 0 && !(3_000_000..7_000_000).contains(&f.dts)).then(|| Frame { track: 2, ..f.clone() });
        p.on_event(Event::Frame(f));
        if let Some(c) = copy {
            p.on_event(Event::Frame(c));
        }
    }
    let lead = p.rendition("video").unwrap();
    let r = p.rendition("video1").unwrap();
    let durations = |r: &Rendition| -> Vec<(u64, i64, bool)> {
        r.segments.iter().filter(|s| s.complete).map(|s| (s.msn, (s.duration * 1000.0).round() as i64, s.gap)).collect()
    };
    let (l, g) = (durations(lead), durations(r));
    for (a, b) in l.iter().zip(&g) {
        assert_eq!((a.0, a.1), (b.0, b.1), "same numbers and durations: {l:?} {g:?}");
    }
    assert!(g.len() >= 4, "{g:?}");
    assert_eq!(g.iter().filter(|s| s.2).map(|s| s.0).collect::<Vec<_>>(), [2], "{g:?}");
    let text = playlist::media(&cfg(), &p, r, "r", Skip::No);
    assert_eq!(text.matches("#EXT-X-GAP\n#EXTINF:2.00000,\nvideo1-r-2.m4s\n").count(), 1, "{text}");
}

/// Every reload of the same state gets the same bytes, rendered once; a
/// change to the packager renders afresh, and a delta update is its own text.
#[tokio::test(start_paused = true)]
async fn a_playlist_is_rendered_once_per_state_and_shared() {
    let hls = Arc::new(HlsStream::new("s".into(), cfg()));
    let evs = events(4, 50);
    let (first, rest) = evs.split_at(evs.len() / 2);
    for e in first {
        hls.update(|p| p.on_event(e.clone()));
    }
    let a = hls.media_playlist_shared("video", PlaylistRequest::default()).await.unwrap();
    let b = hls.media_playlist_shared("video", PlaylistRequest::default()).await.unwrap();
    assert_eq!(a.as_ptr(), b.as_ptr(), "the second request shares the first one's text");
    let audio = hls.media_playlist_shared("audio", PlaylistRequest::default()).await.unwrap();
    assert_ne!(audio, a, "each rendition has its own");
    let skip = PlaylistRequest { skip: Skip::Yes, ..PlaylistRequest::default() };
    let delta = hls.media_playlist_shared("video", skip).await.unwrap();
    assert_ne!(delta.as_ptr(), a.as_ptr(), "a delta update is rendered apart");
    for e in &rest[..4] {
        hls.update(|p| p.on_event(e.clone()));
    }
    let c = hls.media_playlist_shared("video", PlaylistRequest::default()).await.unwrap();
    assert_ne!(c.as_ptr(), a.as_ptr(), "a change renders afresh");
    let fresh = hls.read(|p| {
        let r = p.rendition("video").unwrap();
        playlist::media(&hls.cfg, p, r, hls.run(), Skip::No)
    });
    assert_eq!(&c[..], fresh.as_bytes(), "and the shared text is what rendering now gives");
}

#[test]
fn a_dvr_window_raises_the_segment_count_and_never_lowers_it() {
    let cfg = HlsConfig { segment_target: Duration::from_secs(2), window: 10, ..HlsConfig::default() };
    assert_eq!(cfg.with_dvr(Duration::from_secs(45)).window, 23, "45 s of 2 s segments");
    assert_eq!(cfg.with_dvr(Duration::from_secs(5)).window, 10, "never below the node's window");
    assert_eq!(cfg.with_dvr(Duration::ZERO).window, 10);
}

#[test]
fn a_long_window_goes_to_disk_and_keeps_the_nodes_window_in_memory() {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/dvr-test");
    std::fs::create_dir_all(&dir).unwrap();
    let node = HlsConfig {
        segment_target: Duration::from_secs(2),
        window: 5,
        dvr_dir: Some(dir.clone()),
        dvr_max_bytes: 1 << 30,
        ..HlsConfig::default()
    };
    assert_eq!(node.with_dvr(Duration::from_secs(8)).disk, None, "within the node's window: memory");
    let cfg = node.with_dvr(Duration::from_secs(60));
    let disk = cfg.disk.clone().expect("a window on disk");
    assert_eq!((cfg.window, cfg.max_bytes, disk.hot), (30, 1 << 30, Duration::from_secs(10)));

    // 50 s of 2 s GOPs: 24 complete segments, the oldest 19 or so on disk.
    let mut p = Segmenter::new(cfg.segmenter());
    let mut evicted = Vec::new();
    for e in events(50, 50) {
        p.on_event(e);
        evicted.extend(p.take_evictions());
    }
    let video = p.rendition("video").unwrap();
    let complete: Vec<&Segment> = video.segments.iter().filter(|s| s.complete).collect();
    assert_eq!(complete.len(), 24);
    let cold = video.disk_segments();
    assert_eq!(cold, 19, "all but the newest 10 s (five segments) on disk");
    let cold_bytes: usize = complete[..cold].iter().map(|s| s.bytes()).sum();
    assert_eq!(video.disk_bytes(), cold_bytes);
    let all: usize = p.renditions.iter().flat_map(|r| r.segments.iter()).map(Segment::bytes).sum();
    let on_disk: usize = p.renditions.iter().map(Rendition::disk_bytes).sum();
    assert!(p.held_bytes() < all - on_disk + 4096, "memory counts the hot window only");
    assert!(!evicted.is_empty() && evicted.iter().map(Bytes::len).sum::<usize>() >= on_disk);
    // What left memory is still there: segments whole, parts compacted.
    for s in &complete[..cold] {
        let whole = s.whole.as_ref().expect("one view");
        assert_eq!(whole.len(), s.bytes());
        assert!(s.parts.iter().all(|p| p.chunks.len() == 1));
        let copy = whole.to_vec();
        tidecast_memfile::evict(whole);
        assert_eq!(&whole[..], &copy[..], "read back from the file as written");
    }
    let _ = std::fs::remove_dir(&dir);
}

#[test]
fn a_window_that_cannot_go_to_disk_stays_the_hot_window() {
    // The folder cannot hold files: the writers fall back to memory, and
    // the window is cut where it would have gone to disk.
    let node = HlsConfig {
        segment_target: Duration::from_secs(2),
        window: 5,
        dvr_dir: Some(std::path::PathBuf::from("/nonexistent/tidecast-dvr")),
        ..HlsConfig::default()
    };
    let mut p = Segmenter::new(node.with_dvr(Duration::from_secs(60)).segmenter());
    for e in events(50, 50) {
        p.on_event(e);
        assert!(p.take_evictions().is_empty(), "nothing to write out");
    }
    let video = p.rendition("video").unwrap();
    let complete = video.segments.iter().filter(|s| s.complete).count();
    assert!((5..=6).contains(&complete), "about the 10 s hot window: {complete}");
    assert_eq!((video.disk_bytes(), video.disk_segments()), (0, 0));
}

#[test]
fn a_part_read_by_bytes_reads_the_same_joined_or_not() {
    let chunks = vec![Bytes::from_static(b"moof1"), Bytes::from_static(b"mdat-1"), Bytes::from_static(b"x")];
    let part = Part {
        chunks: chunks.clone(),
        start_us: 0,
        duration: 0.2,
        independent: true,
        complete: true,
        bytes: 12,
        whole: None,
    };
    let joined = Part { chunks: vec![Bytes::from_static(b"moof1mdat-1x")], ..part.clone() };
    for from in 0..=12 {
        let a: Vec<u8> = part.bytes_from(from).concat();
        let b: Vec<u8> = joined.bytes_from(from).concat();
        assert_eq!(a, b"moof1mdat-1x"[from..].to_vec(), "from {from}");
        assert_eq!(a, b);
    }
}
