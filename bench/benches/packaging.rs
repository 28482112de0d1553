//! Cost per frame of the ingest-to-LL-HLS path: RTMP de-chunking, FLV
//! parsing, the stream ring and CMAF packaging (one and three renditions),
//! and LL-HLS playlist and LL-DASH MPD rendering.

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use tidecast_media::{Event, Registry, RegistryConfig};
use tidecast_protocols::cmaf::{Segmenter, SegmenterConfig};
use tidecast_protocols::flv::FlvIngest;
use tidecast_protocols::hls::{playlist, HlsConfig, Skip};
use tidecast_protocols::rtmp::chunk::{Encoder, Message};
use tidecast_protocols::rtmp::{ServerSession, SessionConfig, SessionEvent};

/// A publish session on the wire: handshake, connect, createStream, publish,
/// then 10 s of FLV tags in 4096-byte chunks (ffmpeg's and OBS's chunk size).
fn wire() -> (BytesMut, usize) {
    let mut c = tidecast_protocols::rtmp::ClientSession::publish("rtmp://h/live", "live", "b");
    let mut s = ServerSession::new(SessionConfig::default());
    let mut head = BytesMut::new();
    let mut to_s = BytesMut::new();
    let mut to_c = BytesMut::new();
    while !c.is_live() {
        while let Some(o) = c.poll_transmit() {
            head.extend_from_slice(&o);
            to_s.extend_from_slice(&o);
        }
        s.handle_input(&mut to_s, 0).unwrap();
        while let Some(ev) = s.poll_event() {
            if matches!(ev, SessionEvent::PublishRequested { .. }) {
                s.accept_publish();
            }
        }
        while let Some(o) = s.poll_transmit() {
            to_c.extend_from_slice(&o);
        }
        c.handle_input(&mut to_c).unwrap();
    }
    let tracks = tidecast_bench::tracks();
    let mut enc = Encoder::default();
    enc.set_chunk_size(4096);
    let tag = |type_id: u8, ts: u32, body: Bytes, out: &mut BytesMut| {
        enc.encode(
            &Message { csid: if type_id == 9 { 6 } else { 4 }, type_id, stream_id: 1, timestamp: ts, payload: body },
            out,
        );
    };
    let mut v = vec![0x17, 0, 0, 0, 0];
    v.extend_from_slice(&tracks[0].config);
    tag(9, 0, Bytes::from(v), &mut head);
    tag(8, 0, Bytes::from(vec![0xaf, 0, 0x12, 0x10]), &mut head);
    let frames = tidecast_bench::frames(10);
    let n = frames.len();
    for f in frames {
        let ts = (f.dts / 1000) as u32;
        let body = if f.track == 0 {
            let mut b = vec![if f.keyframe { 0x17 } else { 0x27 }, 1, 0, 0, 0];
            b.extend_from_slice(&f.payload);
            b
        } else {
            let mut b = vec![0xaf, 1];
            b.extend_from_slice(&f.payload);
            b
        };
        tag(if f.track == 0 { 9 } else { 8 }, ts, Bytes::from(body), &mut head);
    }
    (head, n)
}

fn rtmp_to_cmaf(c: &mut Criterion) {
    let (wire, frames) = wire();
    let mut g = c.benchmark_group("rtmp_to_cmaf");
    g.throughput(Throughput::Elements(frames as u64));
    g.bench_function("10s_720p_3mbit_per_frame", |b| {
        b.iter_batched(
            || wire.clone(),
            |mut buf| {
                let registry = Registry::new(RegistryConfig::default());
                let publisher = registry.publish("b").unwrap();
                let mut sub = publisher.stream().subscribe_from_oldest();
                let mut server = ServerSession::new(SessionConfig::default());
                let mut ingest = FlvIngest::new();
                let mut packager = Segmenter::new(SegmenterConfig::default());
                // Feed in 64 KiB reads, as the driver does.
                let mut rx = BytesMut::new();
                while !buf.is_empty() {
                    let n = buf.len().min(65536);
                    rx.extend_from_slice(&buf.split_to(n));
                    loop {
                        let before = rx.len();
                        server.handle_input(&mut rx, 0).unwrap();
                        while let Some(ev) = server.poll_event() {
                            let r = match ev {
                                SessionEvent::PublishRequested { .. } => {
                                    server.accept_publish();
                                    continue;
                                }
                                SessionEvent::Video { timestamp, payload } => ingest.video(timestamp, &payload),
                                SessionEvent::Audio { timestamp, payload } => ingest.audio(timestamp, &payload),
                                _ => continue,
                            };
                            if let Some(t) = ingest.take_tracks() {
                                publisher.set_tracks(t).unwrap();
                            }
                            if let Ok(Some(f)) = r {
                                publisher.push(f).unwrap();
                            }
                        }
                        if rx.len() == before {
                            break;
                        }
                    }
                    while server.poll_transmit().is_some() {}
                    while let Some(ev) = sub.try_recv() {
                        packager.on_event(ev);
                    }
                }
                packager
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();

    // Packaging alone: media-core events in, CMAF parts out.
    let mut events = vec![Event::Tracks(tidecast_bench::tracks().into())];
    events.extend(tidecast_bench::frames(10).into_iter().map(Event::Frame));
    let mut g = c.benchmark_group("cmaf_packaging");
    g.throughput(Throughput::Elements(events.len() as u64 - 1));
    g.bench_function("per_frame", |b| {
        b.iter_batched(
            || events.clone(),
            |evs| {
                let mut p = Segmenter::new(SegmenterConfig::default());
                for e in evs {
                    p.on_event(e);
                }
                p
            },
            BatchSize::LargeInput,
        )
    });
    // Three renditions: a second video track (a ladder's lower rung, the
    // same frames under another id) cut at the lead's boundaries, and audio.
    let mut ladder = Vec::with_capacity(events.len() * 2);
    let mut second = tidecast_bench::tracks()[0].clone();
    second.id = 2;
    let mut tracks = tidecast_bench::tracks();
    tracks.push(second);
    ladder.push(Event::Tracks(tracks.into()));
    for f in tidecast_bench::frames(10) {
        if f.track == 0 {
            ladder.push(Event::Frame(tidecast_media::Frame { track: 2, ..f.clone() }));
        }
        ladder.push(Event::Frame(f));
    }
    g.throughput(Throughput::Elements(ladder.len() as u64 - 1));
    g.bench_function("per_frame_three_renditions", |b| {
        b.iter_batched(
            || ladder.clone(),
            |evs| {
                let mut p = Segmenter::new(SegmenterConfig::default());
                for e in evs {
                    p.on_event(e);
                }
                assert_eq!(p.renditions.len(), 3);
                p
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();

    let mut p = Segmenter::new(SegmenterConfig::default());
    for e in events {
        p.on_event(e);
    }
    let cfg = HlsConfig::default();
    let mut g = c.benchmark_group("playlist");
    // Throughput in playlists rendered per second.
    g.throughput(Throughput::Elements(1));
    let video = p.rendition("video").unwrap();
    g.bench_function("media_full", |b| b.iter(|| playlist::media(&cfg, &p, video, "run", Skip::No)));
    g.bench_function("media_delta", |b| b.iter(|| playlist::media(&cfg, &p, video, "run", Skip::Yes)));
    let ctx = tidecast_protocols::dash::mpd::MpdContext {
        thumbnails: None,
        run: "run",
        now_ms: 1_795_000_000_000,
        utc_url: "http://127.0.0.1:8080/dash/utc",
        latency_target: None,
        carry: "sid=0123456789abcdef0123456789abcdef",
    };
    p.anchor(1_795_000_000_000);
    g.bench_function("dash_mpd", |b| b.iter(|| tidecast_protocols::dash::mpd::render(&p, &ctx)));
    g.finish();
}

criterion_group!(benches, rtmp_to_cmaf);
criterion_main!(benches);
