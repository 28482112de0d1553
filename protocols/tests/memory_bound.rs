//! A live stream's memory stays under the bound its settings imply, and all
//! of it comes back when the stream ends.
//!
//! Two minutes of a synthetic 1.5 Mbit/s H.264 + AAC stream (2 s GOP) go
//! through the RTMP session as a publisher's socket bytes would (read into
//! blocks the way the driver reads them), the FLV ingest, the registry's
//! ring, and every output that buffers: the LL-HLS packager (CMAF window),
//! the MPEG-TS ring and a WHEP playout with one viewer. Time is tokio's
//! paused clock, so nothing here depends on the machine's speed. A counting
//! allocator reads the live heap bytes once per media second.
//!
//! The only test in this binary: the allocator counts the whole process.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tidecast_media::{Registry, RegistryConfig, StreamConfig};
use tidecast_protocols::flv::FlvIngest;
use tidecast_protocols::hls::{HlsConfig, HlsHub};
use tidecast_protocols::mpegts::output::TsHub;
use tidecast_protocols::rtmp::read_buffer::ReadBuffer;
use tidecast_protocols::rtmp::{ClientSession, ServerSession, SessionConfig, SessionEvent};
use tidecast_protocols::webrtc::playout::Playouts;
use tokio_util::sync::CancellationToken;

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only keeps a sum.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size as isize - layout.size() as isize, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

const SPS: &[u8] = &[
    0x67, 0xf4, 0x00, 0x0d, 0x91, 0x9b, 0x28, 0x28, 0x3f, 0x60, 0x22, 0x00, 0x00, 0x03, 0x00, 0x02, 0x00, 0x00, 0x03,
    0x00, 0x64, 0x1e, 0x28, 0x53, 0x2c,
];
const PPS: &[u8] = &[0x68, 0xeb, 0xe3, 0xc4, 0x48, 0x44];

const FPS: u32 = 30;
const GOP: u32 = 60;
/// Video bytes per second (1.5 Mbit/s) and AAC frames of 128 kbit/s.
const VIDEO_BPS: usize = 1_500_000 / 8;
const AAC_FRAME: usize = 341;
/// Bytes the publisher's socket hands over per read.
const READ: usize = 8 * 1024;

fn flv_video(key: bool, packet_type: u8, body: &[u8]) -> Bytes {
    let mut t = vec![if key { 0x17 } else { 0x27 }, packet_type, 0, 0, 0];
    t.extend_from_slice(body);
    Bytes::from(t)
}

/// One access unit, length-prefixed: a keyframe is four times a P-frame.
fn video_frame(i: u32) -> Bytes {
    let key = i.is_multiple_of(GOP);
    let p = VIDEO_BPS * GOP as usize / FPS as usize / (GOP as usize + 3);
    let len = if key { 4 * p } else { p } + (i as usize % 7) * 13;
    let mut nal = vec![if key { 0x65 } else { 0x41 }; len];
    nal[1] = 0x88;
    let mut avcc = (nal.len() as u32).to_be_bytes().to_vec();
    avcc.extend_from_slice(&nal);
    flv_video(key, 1, &avcc)
}

fn aac(packet_type: u8, body: &[u8]) -> Bytes {
    let mut t = vec![0xaf, packet_type];
    t.extend_from_slice(body);
    Bytes::from(t)
}

/// A publisher: the client session's wire bytes, read by the server session
/// in socket-sized pieces through the driver's read buffer.
struct Wire {
    client: ClientSession,
    server: ServerSession,
    buf: ReadBuffer,
    ingest: FlvIngest,
    publisher: tidecast_media::Publisher,
}

impl Wire {
    fn connect(registry: &Registry, name: &str) -> Wire {
        let mut client = ClientSession::publish("rtmp://localhost/live", "live", name);
        let mut server = ServerSession::new(SessionConfig::default());
        let mut buf = BytesMut::new();
        let mut back = BytesMut::new();
        while !client.is_live() {
            while let Some(out) = client.poll_transmit() {
                buf.extend_from_slice(&out);
            }
            server.handle_input(&mut buf, 0).expect("handshake");
            while let Some(ev) = server.poll_event() {
                if matches!(ev, SessionEvent::PublishRequested { .. }) {
                    server.accept_publish();
                }
            }
            while let Some(out) = server.poll_transmit() {
                back.extend_from_slice(&out);
            }
            client.handle_input(&mut back).expect("handshake answer");
        }
        let publisher = registry.publish(name).expect("publish");
        let mut buf = ReadBuffer::new();
        buf.attach(registry.ledger().gauge(name, "ingest"));
        Wire { client, server, buf, ingest: FlvIngest::new(), publisher }
    }

    /// Sends what the client queued, `READ` bytes per read, and delivers
    /// the frames the server session makes of them.
    fn pump(&mut self) {
        let mut wire = BytesMut::new();
        while let Some(out) = self.client.poll_transmit() {
            wire.extend_from_slice(&out);
        }
        while !wire.is_empty() {
            let piece = wire.split_to(READ.min(wire.len()));
            self.buf.make_room();
            self.buf.buf().extend_from_slice(&piece);
            self.server.handle_input(self.buf.buf(), 0).expect("chunks");
            while let Some(ev) = self.server.poll_event() {
                let frame = match ev {
                    SessionEvent::Video { timestamp, payload } => self.ingest.video(timestamp, &self.buf.pin(payload)),
                    SessionEvent::Audio { timestamp, payload } => self.ingest.audio(timestamp, &self.buf.pin(payload)),
                    _ => continue,
                }
                .expect("flv");
                if let Some(t) = self.ingest.take_tracks() {
                    self.publisher.set_tracks(t).expect("tracks");
                }
                if let Some(f) = frame {
                    self.publisher.push(f).expect("push");
                }
            }
        }
        while self.server.poll_transmit().is_some() {}
    }

    /// Publishes `seconds` of media starting at media second `from`,
    /// letting the outputs run one (paused-clock) second per media second,
    /// and calls `each` after every second.
    async fn publish(&mut self, from: u32, seconds: u32, mut each: impl FnMut(u32)) {
        let config = tidecast_codecs::h264::build_config(SPS, PPS).expect("avcC");
        if from == 0 {
            self.client.send_video(0, flv_video(true, 0, &config));
            self.client.send_audio(0, aac(0, &[0x11, 0x90]));
        }
        let mut audio_ms = f64::from(from) * 1000.0;
        for s in from..from + seconds {
            for i in s * FPS..(s + 1) * FPS {
                let ms = i * 1000 / FPS;
                while audio_ms < f64::from(ms) + 1000.0 / f64::from(FPS) {
                    self.client.send_audio(audio_ms as u32, aac(1, &[0x21; AAC_FRAME]));
                    audio_ms += 1024.0 * 1000.0 / 48_000.0;
                }
                self.client.send_video(ms, video_frame(i));
                self.pump();
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            each(s);
        }
    }
}

#[test]
fn live_bytes_stay_under_the_window_bound_and_come_back_after_the_end() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().expect("runtime");
    rt.block_on(async {
        let ring = StreamConfig { buffer: Duration::from_secs(10), max_bytes: 64 << 20 };
        let registry = Registry::new(RegistryConfig { grace: Duration::ZERO, stream: ring, ..Default::default() });
        let hls_cfg = HlsConfig::default();
        let linger = hls_cfg.linger;
        let shutdown = CancellationToken::new();
        let hls = HlsHub::new(hls_cfg.clone());
        tokio::spawn(hls.clone().run(registry.clone(), shutdown.clone()));
        let ts = TsHub::new();
        tokio::spawn(ts.clone().run(registry.clone(), shutdown.clone()));
        let playouts = Arc::new(Playouts::new(registry.ledger().clone()));

        // One short stream first, so that first-use allocations (maps,
        // channels) are in the baseline.
        let mut warm = Wire::connect(&registry, "warm");
        let warm_ts = ts.subscribe("warm");
        warm.publish(0, 5, |_| {}).await;
        drop((warm, warm_ts));
        tokio::time::sleep(linger + Duration::from_secs(2)).await;
        assert!(registry.ledger().snapshot().is_empty(), "the warm-up stream left {:?}", registry.ledger().snapshot());
        let baseline = live();

        // The bound its settings give: seconds held by each window times the
        // bitrate, plus one GOP where a window keeps the newest GOP whole.
        let bps = (VIDEO_BPS + AAC_FRAME * 48_000 / 1024) as f64;
        let gop = f64::from(GOP / FPS);
        let ring_s = 10.0 + gop;
        let cmaf_s = hls_cfg.window as f64 * hls_cfg.segment_target.as_secs_f64() + gop;
        let ts_s = (4.0 + gop) * 1.05; // TS packet overhead
                                       // The WHEP ring: its lag allowance behind the live edge, and the newest GOP.
        let whep_s = tidecast_protocols::webrtc::playout::LAG_ALLOWANCE.as_secs_f64() + gop;
        // Per-frame bookkeeping (ring entries, fragment headers, part and
        // chunk vectors) and the allocator's size classes: a quarter more.
        let bound = ((ring_s + cmaf_s + ts_s + whep_s) * bps * 1.25) as isize + (1 << 20);

        let mut cam = Wire::connect(&registry, "cam");
        let stream = cam.publisher.stream().clone();
        let playout = playouts.get(&stream, None);
        drop(stream);
        let mut viewer = playout.subscribe();
        // A TS viewer: the muxer runs from the first one on.
        assert_eq!(ts.running(), 0, "no TS viewer yet, no muxer");
        let mut ts_viewer = ts.subscribe("cam").expect("the TS form of a live stream");
        let mut peak = 0isize;
        let mut holders_seen = std::collections::BTreeSet::new();
        cam.publish(0, 120, |s| {
            // A viewer that keeps up.
            while viewer.try_recv().is_some() {}
            while ts_viewer.try_recv().is_some() {}
            let mut pinned = 0;
            for h in registry.ledger().snapshot() {
                holders_seen.insert(h.holder);
                if h.holder == "ingest" {
                    pinned = h.bytes as isize;
                }
            }
            let held = live() - baseline;
            // Read blocks are allocations of their own: what the ledger says
            // they pin is a share of what is really held, never more.
            assert!(pinned <= held, "at {s} s the ledger says read blocks pin {pinned} bytes of {held} held");
            peak = peak.max(held);
            assert!(
                held <= bound,
                "at {s} s the stream holds {held} bytes, over the bound of {bound} its windows allow; ledger: {:?}",
                registry.ledger().snapshot()
            );
        })
        .await;
        eprintln!("peak {peak} bytes above the baseline, bound {bound}");
        assert_eq!(holders_seen.into_iter().collect::<Vec<_>>(), ["cmaf", "ingest", "ring", "ts", "whep"]);
        assert!(peak > bound / 4, "the stream held {peak} bytes: the measurement saw nothing");

        // The end: the publisher leaves (no grace), the viewer sees the feed
        // close, the outputs linger and then let go of everything.
        drop(cam);
        while viewer.recv().await.is_some() {}
        drop((viewer, playout, ts_viewer));
        tokio::time::sleep(linger + Duration::from_secs(2)).await;
        assert!(registry.ledger().snapshot().is_empty(), "still held: {:?}", registry.ledger().snapshot());
        let after = live() - baseline;
        assert!(after < 256 * 1024, "{after} bytes were not given back after the stream ended");
        shutdown.cancel();
    });
}
