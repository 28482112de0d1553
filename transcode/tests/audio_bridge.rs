//! The audio bridge in process: a real AAC (and a real Opus) source made by
//! the ffmpeg CLI, published into a stream; the bridged track is read back
//! from the same stream and decoded. No timing: the test waits for events.

use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use ffmpeg_next as ff;
use tidecast_media::{Codec, Demand, Event, Frame, Publisher, StreamConfig, Track, TrackInfo};
use tidecast_transcode::audio::{BridgeMode, BRIDGE_TRACK};
use tidecast_transcode::AudioBridge;

/// Two seconds of a 440 Hz tone encoded by the ffmpeg CLI with `codec` into
/// `file`, demuxed back: the track and its frames (microseconds).
fn source(codec: &str, file: &str, rate: u32) -> (Track, Vec<Frame>) {
    tidecast_transcode::init();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(file);
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-f", "lavfi", "-i", &format!("sine=frequency=440:sample_rate={rate}:duration=2")])
        .args(["-ac", "2", "-c:a", codec, "-y"])
        .arg(&path)
        .output()
        .expect("ffmpeg is installed");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut input = ff::format::input(&path).unwrap();
    let stream = input.streams().best(ff::media::Type::Audio).unwrap();
    let index = stream.index();
    let tb = stream.time_base();
    let par = stream.parameters();
    // SAFETY: the parameters are valid while `input` lives; copied out at once.
    let config = unsafe {
        let p = par.as_ptr();
        Bytes::copy_from_slice(std::slice::from_raw_parts((*p).extradata, (*p).extradata_size as usize))
    };
    let c = if codec == "aac" { Codec::Aac } else { Codec::Opus };
    let info: TrackInfo = tidecast_codecs::describe(c, &config).unwrap();
    let mut frames = Vec::new();
    for (s, packet) in input.packets() {
        if s.index() != index {
            continue;
        }
        let us = |t: i64| t * 1_000_000 * i64::from(tb.0) / i64::from(tb.1);
        let Some(pts) = packet.pts() else { continue };
        frames.push(Frame {
            track: 0,
            dts: us(pts),
            cts: 0,
            keyframe: true,
            payload: Bytes::copy_from_slice(packet.data().unwrap()),
        });
    }
    (Track { id: 0, codec: c, config, info }, frames)
}

/// Publishes `frames`, reads the bridged track until it covers 1.5 s.
async fn bridge(track: Track, frames: Vec<Frame>) -> (Track, Vec<Frame>) {
    let publisher: Publisher = Publisher::standalone("bridge-test", StreamConfig::default());
    let stream = publisher.stream().clone();
    let mut reader = stream.subscribe_from_oldest();
    // What a WebRTC viewer raises; an Opus source's AAC track needs none.
    stream.demand(Demand::OpusAudio);
    let bridge = AudioBridge::start(stream.clone(), BridgeMode::Auto, tokio::runtime::Handle::current()).unwrap();
    publisher.set_tracks(vec![track]).unwrap();
    for f in frames {
        publisher.push(f).unwrap();
    }
    let mut bridged = None;
    let mut out: Vec<Frame> = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), async {
        while out.last().is_none_or(|l| out.first().is_none_or(|f| l.dts - f.dts < 1_500_000)) {
            match reader.recv().await {
                Some(Event::Tracks(t)) => {
                    if let Some(b) = t.iter().find(|t| t.id == BRIDGE_TRACK) {
                        bridged = Some(b.clone());
                    }
                }
                Some(Event::Frame(f)) if f.track == BRIDGE_TRACK => out.push(f),
                Some(_) => {}
                None => break,
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("bridged frames: {} ({:?})", out.len(), bridge.stats()));
    (bridged.expect("a bridged track"), out)
}

/// Decodes `frames` of `track` and returns the RMS of the samples.
fn loudness(track: &Track, frames: &[Frame]) -> f64 {
    let id = if track.codec == Codec::Opus { ff::codec::Id::OPUS } else { ff::codec::Id::AAC };
    let codec = ff::decoder::find(id).unwrap();
    let mut ctx = ff::codec::context::Context::new_with_codec(codec);
    unsafe {
        let c = ctx.as_mut_ptr();
        let buf = ff::ffi::av_mallocz(track.config.len() + 64) as *mut u8;
        std::ptr::copy_nonoverlapping(track.config.as_ptr(), buf, track.config.len());
        (*c).extradata = buf;
        (*c).extradata_size = track.config.len() as i32;
    }
    let mut dec = ctx.decoder().open_as(codec).unwrap().audio().unwrap();
    let (mut sum, mut n) = (0.0f64, 0usize);
    let mut frame = ff::frame::Audio::empty();
    for f in frames {
        dec.send_packet(&ff::Packet::copy(&f.payload)).unwrap();
        while dec.receive_frame(&mut frame).is_ok() {
            let samples = frame.samples();
            let data = frame.data(0);
            // Both decoders give 32-bit float samples.
            for chunk in data[..samples * 4].chunks_exact(4) {
                let v = f32::from_le_bytes(chunk.try_into().unwrap()) as f64;
                sum += v * v;
                n += 1;
            }
        }
    }
    (sum / n.max(1) as f64).sqrt()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aac_source_gets_an_opus_track_that_sounds() {
    let (track, frames) = source("aac", "tone.m4a", 44_100);
    let first = frames[0].dts;
    let (opus, out) = bridge(track, frames).await;
    assert_eq!(opus.codec, Codec::Opus);
    assert_eq!(opus.info.sample_rate, 48_000, "{:?}", opus.info);
    assert!(opus.config.starts_with(b"OpusHead"));
    let steps: Vec<i64> = out.windows(2).map(|w| w[1].dts - w[0].dts).collect();
    assert!(steps.iter().all(|&d| d == 20_000), "20 ms frames, gapless: {steps:?}");
    assert!((out[0].dts - first).abs() <= 30_000, "starts with the source: {} vs {first}", out[0].dts);
    let rms = loudness(&opus, &out);
    assert!(rms > 0.05, "the tone is audible: rms {rms}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_opus_source_gets_an_aac_track_that_sounds() {
    let (track, frames) = source("libopus", "tone.ogg", 48_000);
    let (aac, out) = bridge(track, frames).await;
    assert_eq!(aac.codec, Codec::Aac);
    assert_eq!(aac.info.sample_rate, 48_000);
    assert!(aac.info.codec_string.starts_with("mp4a.40."), "{}", aac.info.codec_string);
    let step = 1024 * 1_000_000 / 48_000;
    assert!(out.windows(2).all(|w| (w[1].dts - w[0].dts - step).abs() <= 1), "1024-sample frames, gapless");
    let rms = loudness(&aac, &out);
    assert!(rms > 0.05, "the tone is audible: rms {rms}");
}

/// The source's clock jumps (forward 5 s, later back 300 ms): the bridged
/// track follows it, never moves backwards, and never runs ahead of the
/// source (a frame far ahead would hold the stream's ring open).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bridge_follows_jumps_in_the_source_clock() {
    let (track, mut frames) = source("aac", "tone.m4a", 48_000);
    let n = frames.len();
    for (i, f) in frames.iter_mut().enumerate() {
        if i >= n / 3 {
            f.dts += 5_000_000;
        }
        if i >= 2 * n / 3 {
            f.dts -= 300_000;
        }
    }
    let newest = frames.iter().map(|f| f.dts).max().unwrap();
    let last = frames.last().unwrap().dts;
    let publisher: Publisher = Publisher::standalone("bridge-jumps", StreamConfig::default());
    let stream = publisher.stream().clone();
    let mut reader = stream.subscribe_from_oldest();
    let bridge = AudioBridge::start(stream.clone(), BridgeMode::Always, tokio::runtime::Handle::current()).unwrap();
    publisher.set_tracks(vec![track]).unwrap();
    for f in frames {
        publisher.push(f).unwrap();
    }
    let mut out: Vec<Frame> = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), async {
        // The encoder holds its last frames back: wait for 200 ms before the end.
        while out.last().is_none_or(|l| l.dts < last - 200_000) {
            match reader.recv().await {
                Some(Event::Frame(f)) if f.track == BRIDGE_TRACK => out.push(f),
                Some(_) => {}
                None => break,
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("bridged frames: {:?}", out.iter().map(|f| f.dts).collect::<Vec<_>>()));
    assert!(out.windows(2).all(|w| w[1].dts > w[0].dts), "never backwards");
    assert!(out.iter().all(|f| f.dts <= newest + 100_000), "never ahead of the source");
    let jumped = out.windows(2).filter(|w| w[1].dts - w[0].dts > 1_000_000).count();
    assert_eq!(jumped, 1, "one gap: the source's own jump forward");
    assert!(bridge.stats().resyncs.load(std::sync::atomic::Ordering::Relaxed) >= 2, "both jumps resynced");
    assert_eq!(stream.stats().derived_refused.load(std::sync::atomic::Ordering::Relaxed), 0);
}
