//! The ladder end to end in process: a real H.264 source (x264 with
//! B-frames and a 15-frame GOP) published into a stream, the ladder's rungs
//! read back from the same stream. No timing: the test waits for events.

use std::time::Duration;

use bytes::Bytes;
use ffmpeg_next as ff;
use tidecast_codecs::access_unit;
use tidecast_media::{Codec, Event, Frame, Publisher, StreamConfig, Track, DERIVED_TRACK_BASE};
use tidecast_transcode::profile::{HwPolicy, Profile, Rung};
use tidecast_transcode::{Ladder, LadderSpec};

const W: u32 = 640;
const H: u32 = 360;
const FPS: i64 = 30;

/// `n` frames of a moving gradient encoded by x264 with B-frames: the
/// source track and its frames, timestamps in microseconds.
fn source(n: i64) -> (Track, Vec<Frame>) {
    tidecast_transcode::init();
    let codec = ff::encoder::find_by_name("libx264").expect("libx264");
    let mut enc = ff::codec::context::Context::new_with_codec(codec).encoder().video().unwrap();
    enc.set_width(W);
    enc.set_height(H);
    enc.set_format(ff::format::Pixel::YUV420P);
    enc.set_time_base(ff::Rational(1, 1_000_000));
    enc.set_frame_rate(Some(ff::Rational(FPS as i32, 1)));
    enc.set_gop(15);
    enc.set_max_b_frames(2);
    enc.set_flags(ff::codec::Flags::GLOBAL_HEADER);
    let mut opts = ff::Dictionary::new();
    opts.set("preset", "ultrafast");
    opts.set("forced-idr", "1");
    opts.set("x264-params", "bframes=2:scenecut=0:keyint=infinite");
    let mut enc = enc.open_as_with(codec, opts).unwrap();
    let extradata = unsafe {
        let c = enc.as_ptr();
        std::slice::from_raw_parts((*c).extradata, (*c).extradata_size as usize).to_vec()
    };
    let params = access_unit::split_annexb(Codec::H264, &extradata).params;
    let config = Bytes::from(access_unit::config_from_params(Codec::H264, &params).unwrap());
    let info = tidecast_codecs::describe(Codec::H264, &config).unwrap();
    let track = Track { id: 0, codec: Codec::H264, config, info };
    let mut frames = Vec::new();
    let mut pic = ff::frame::Video::new(ff::format::Pixel::YUV420P, W, H);
    let mut packet = ff::Packet::empty();
    let mut drain = |enc: &mut ff::encoder::video::Encoder, frames: &mut Vec<Frame>| {
        while enc.receive_packet(&mut packet).is_ok() {
            let au = access_unit::split_annexb(Codec::H264, packet.data().unwrap());
            let (pts, dts) = (packet.pts().unwrap(), packet.dts().unwrap());
            frames.push(Frame { track: 0, dts, cts: (pts - dts) as i32, keyframe: au.keyframe, payload: au.data });
        }
    };
    for i in 0..n {
        for plane in 0..3 {
            let stride = pic.stride(plane);
            let data = pic.data_mut(plane);
            for (j, b) in data.iter_mut().enumerate() {
                *b = ((j % stride) as i64 + (j / stride) as i64 + i * 4 + plane as i64 * 40) as u8;
            }
        }
        pic.set_pts(Some(i * 1_000_000 / FPS));
        pic.set_kind(if i % 15 == 0 { ff::picture::Type::I } else { ff::picture::Type::None });
        enc.send_frame(&pic).unwrap();
        drain(&mut enc, &mut frames);
    }
    enc.send_eof().unwrap();
    drain(&mut enc, &mut frames);
    (track, frames)
}

fn profile() -> Profile {
    Profile {
        rungs: vec![
            Rung { height: 240, bitrate_kbps: 500, max_fps: None },
            Rung { height: 144, bitrate_kbps: 200, max_fps: Some(15.0) },
            Rung { height: 720, bitrate_kbps: 3000, max_fps: None },
        ],
        h264_profile: "main".into(),
        preset: "veryfast".into(),
        hw: HwPolicy::Off,
        backend: Default::default(),
        audio_bridge: None,
    }
}

/// x264 only; queues long enough for a source fed all at once (a live
/// source comes at its frame rate).
fn spec() -> LadderSpec {
    LadderSpec { queue: 256, ..LadderSpec::new("test", profile(), vec!["libx264"]) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rungs_are_tracks_of_the_stream_with_idrs_on_the_source_keyframes() {
    let (track, frames) = source(90);
    assert!(frames.iter().any(|f| f.cts > 0), "the source has B-frames");
    let source_keys: Vec<i64> = frames.iter().filter(|f| f.keyframe).map(|f| f.dts).collect();
    assert_eq!(source_keys.len(), 6);

    let publisher: Publisher = Publisher::standalone("ladder-test", StreamConfig::default());
    let stream = publisher.stream().clone();
    let mut reader = stream.subscribe_from_oldest();
    let ladder = Ladder::start(stream.clone(), spec(), tokio::runtime::Handle::current()).unwrap();
    publisher.set_tracks(vec![track]).unwrap();
    for f in &frames {
        publisher.push(f.clone()).unwrap();
    }

    // Read until every rung has published its last keyframe's GOP.
    let mut tracks = Vec::new();
    let mut rung_frames: Vec<Frame> = Vec::new();
    // The decoder holds the last few pictures until more come: wait for
    // everything up to 200 ms before the end.
    let horizon = frames.iter().map(Frame::pts).max().unwrap() - 200_000;
    let done = |r: &[Frame]| (0..2).all(|i| r.iter().any(|f| f.track == DERIVED_TRACK_BASE + i && f.pts() >= horizon));
    tokio::time::timeout(Duration::from_secs(60), async {
        while !done(&rung_frames) {
            match reader.recv().await {
                Some(Event::Tracks(t)) => tracks = t.to_vec(),
                Some(Event::Frame(f)) if f.track >= DERIVED_TRACK_BASE => rung_frames.push(f),
                Some(_) => {}
                None => break,
            }
        }
    })
    .await
    .unwrap_or_else(|_| {
        let keys: Vec<(u32, i64)> = rung_frames.iter().filter(|f| f.keyframe).map(|f| (f.track, f.dts)).collect();
        panic!(
            "the rungs did not arrive: {} rung frames, keys {keys:?}, tracks {tracks:?}, {:?}",
            rung_frames.len(),
            ladder.stats().report()
        )
    });
    assert!(done(&rung_frames), "every rung reached the end of the source");

    // Two rungs (720p would upscale), the larger first, even sizes, the source's aspect ratio.
    let rungs: Vec<&Track> = tracks.iter().filter(|t| t.id >= DERIVED_TRACK_BASE).collect();
    let sizes: Vec<(u32, u32)> = rungs.iter().map(|t| (t.info.width, t.info.height)).collect();
    assert_eq!(sizes, [(426, 240), (256, 144)]);
    assert_eq!(rungs[0].info.bitrate, Some(500_000));
    assert!(rungs[0].info.codec_string.starts_with("avc1.4d"), "main profile: {}", rungs[0].info.codec_string);

    for (i, r) in rungs.iter().enumerate() {
        let mine: Vec<&Frame> = rung_frames.iter().filter(|f| f.track == r.id).collect();
        let keys: Vec<i64> = mine.iter().filter(|f| f.keyframe).map(|f| f.dts).collect();
        assert_eq!(keys, source_keys, "rung {i}: IDRs exactly on the source's keyframes");
        assert!(mine.windows(2).all(|w| w[0].dts < w[1].dts), "rung {i}: decode times increase");
        assert!(mine.iter().all(|f| f.cts >= 0), "rung {i}: never shown before decoded");
        // Presentation times are the source's.
        let src_pts: std::collections::HashSet<i64> = frames.iter().map(Frame::pts).collect();
        assert!(mine.iter().all(|f| src_pts.contains(&f.pts())), "rung {i}: presentation times pass through");
        if i == 0 {
            let shown: std::collections::HashSet<i64> = mine.iter().map(|f| f.pts()).collect();
            let missing = frames.iter().filter(|f| f.pts() <= horizon && !shown.contains(&f.pts())).count();
            assert_eq!(missing, 0, "the uncapped rung has every frame");
        } else {
            let n = mine.len();
            assert!(n <= frames.len() / 2 + source_keys.len(), "15 fps cap: {n} of {}", frames.len());
        }
    }
    let report = ladder.stats().report();
    assert_eq!(report.rungs.len(), 2);
    assert_eq!(report.rungs[0].encoder, "libx264");
    assert_eq!(report.frames_in, frames.len() as u64);
    assert_eq!(report.decode_errors, 0);

    // Dropping the ladder withdraws its tracks.
    drop(ladder);
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(Event::Tracks(t)) = reader.recv().await {
                if t.iter().all(|t| t.id < DERIVED_TRACK_BASE) {
                    break;
                }
            }
        }
    })
    .await
    .expect("the rung tracks are withdrawn");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_source_fails_the_ladder_not_the_stream() {
    let (track, frames) = source(30);
    let publisher: Publisher = Publisher::standalone("ladder-corrupt", StreamConfig::default());
    let stream = publisher.stream().clone();
    let mut reader = stream.subscribe_from_oldest();
    let ladder = Ladder::start(stream.clone(), spec(), tokio::runtime::Handle::current()).unwrap();
    // A valid configuration record, then garbage where the pictures should be.
    publisher.set_tracks(vec![track]).unwrap();
    let mut seq = 0u8;
    for f in &frames {
        let junk: Vec<u8> = (0..f.payload.len()).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seq)).collect();
        seq = seq.wrapping_add(1);
        publisher.push(Frame { payload: Bytes::from(junk), ..f.clone() }).unwrap();
    }
    publisher.end();
    // Every source frame still reaches a reader.
    let mut n = 0;
    while let Some(ev) = tokio::time::timeout(Duration::from_secs(30), reader.recv()).await.expect("events") {
        if matches!(ev, Event::Frame(ref f) if f.track == 0) {
            n += 1;
        }
    }
    assert_eq!(n, frames.len());
    let report = ladder.stats().report();
    assert!(report.decode_errors > 0 || report.frames_decoded == 0, "{report:?}");
}

/// A rung that cannot keep up (a one-picture queue, a source fed all at
/// once) leaves pictures out until the next keyframe and counts them; what
/// it does publish still starts at source keyframes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overloaded_rung_drops_to_the_next_keyframe_and_counts() {
    let (track, frames) = source(90);
    let source_keys: std::collections::HashSet<i64> = frames.iter().filter(|f| f.keyframe).map(|f| f.dts).collect();
    let publisher: Publisher = Publisher::standalone("ladder-overload", StreamConfig::default());
    let stream = publisher.stream().clone();
    let mut reader = stream.subscribe_from_oldest();
    let spec = LadderSpec { queue: 1, ..LadderSpec::new("test", profile(), vec!["libx264"]) };
    let ladder = Ladder::start(stream.clone(), spec, tokio::runtime::Handle::current()).unwrap();
    publisher.set_tracks(vec![track]).unwrap();
    for f in &frames {
        publisher.push(f.clone()).unwrap();
    }
    // No event says the rung is done, so poll its counters (bounded): every
    // picture the decoder gave (it holds the last two back) was either
    // published or left out.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let r = ladder.stats().report();
        if let Some(g) = r.rungs.first() {
            if r.frames_decoded + 2 >= frames.len() as u64 && g.frames_out + g.dropped >= r.frames_decoded {
                break;
            }
        }
        assert!(std::time::Instant::now() < deadline, "the ladder finishes the burst: {r:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut rung: Vec<Frame> = Vec::new();
    while let Some(ev) = reader.try_recv() {
        if let Event::Frame(f) = ev {
            if f.track == DERIVED_TRACK_BASE {
                rung.push(f);
            }
        }
    }
    let report = ladder.stats().report();
    let dropped: u64 = report.rungs.iter().map(|r| r.dropped).sum();
    assert!(dropped > 0, "the burst overflowed a one-picture queue: {report:?}");
    assert!(!rung.is_empty(), "the rung published something");
    assert!(rung[0].keyframe, "it starts at a keyframe");
    // After every gap (a left-out stretch) the rung resumes on a source keyframe.
    let step = 1_000_000 / FPS + 1;
    for w in rung.windows(2) {
        if w[1].pts() - w[0].pts() > step {
            assert!(w[1].keyframe && source_keys.contains(&w[1].dts), "resumed at a source keyframe: {:?}", w[1].dts);
        }
    }
}
