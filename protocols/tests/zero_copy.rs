//! The payload bytes read from a publisher's socket reach the stream ring
//! without being copied: the RTMP chunk decoder slices the read buffer, the
//! FLV ingest slices the message, and the ring holds references to the same
//! memory (RTMP, TS and WHEP players read those). The LL-HLS packager copies
//! each payload once, into its rendition's memory-backed file, from which
//! every HTTP viewer is served with `sendfile` (no copy per viewer).
//!
//! A counting allocator also shows fan-out allocates nothing in proportion
//! to payload size.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use bytes::{Bytes, BytesMut};
use tidecast_media::{Event, Frame, Registry, RegistryConfig, Track};
use tidecast_protocols::cmaf::{Segmenter, SegmenterConfig};
use tidecast_protocols::flv::FlvIngest;
use tidecast_protocols::rtmp::{ClientSession, ServerSession, SessionConfig, SessionEvent};

struct Counting;

thread_local! {
    /// Bytes allocated by this thread. Per thread, because the test harness
    /// runs the other test in this binary at the same time and its
    /// allocations must not be counted against the fan-out.
    static ALLOCATED: Cell<usize> = const { Cell::new(0) };
}

fn count(bytes: usize) {
    // `try_with`: the slot is gone while the thread is being torn down.
    let _ = ALLOCATED.try_with(|a| a.set(a.get() + bytes));
}

fn allocated_here() -> usize {
    ALLOCATED.with(Cell::get)
}

// SAFETY: forwards to the system allocator unchanged; only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const SPS: &[u8] = &[
    0x67, 0xf4, 0x00, 0x0d, 0x91, 0x9b, 0x28, 0x28, 0x3f, 0x60, 0x22, 0x00, 0x00, 0x03, 0x00, 0x02, 0x00, 0x00, 0x03,
    0x00, 0x64, 0x1e, 0x28, 0x53, 0x2c,
];
const PPS: &[u8] = &[0x68, 0xeb, 0xe3, 0xc4, 0x48, 0x44];

fn avc_tag(key: bool, packet_type: u8, body: &[u8]) -> Bytes {
    let mut t = vec![if key { 0x17 } else { 0x27 }, packet_type, 0, 0, 0];
    t.extend_from_slice(body);
    Bytes::from(t)
}

#[test]
fn socket_bytes_reach_the_ring_uncopied_and_the_hls_part_copied_once() {
    let mut client = ClientSession::publish("rtmp://localhost/live", "live", "cam");
    let mut server = ServerSession::new(SessionConfig::default());
    let mut to_server = BytesMut::with_capacity(1 << 20);
    let mut to_client = BytesMut::new();
    // Handshake and commands until the publish is accepted.
    while !client.is_live() {
        while let Some(out) = client.poll_transmit() {
            to_server.extend_from_slice(&out);
        }
        server.handle_input(&mut to_server, 0).unwrap();
        while let Some(ev) = server.poll_event() {
            if matches!(ev, SessionEvent::PublishRequested { .. }) {
                server.accept_publish();
            }
        }
        while let Some(out) = server.poll_transmit() {
            to_client.extend_from_slice(&out);
        }
        client.handle_input(&mut to_client).unwrap();
    }

    let registry = Registry::new(RegistryConfig::default());
    let publisher = registry.publish("cam").unwrap();
    let mut sub = publisher.stream().subscribe_from_oldest();
    let mut ingest = FlvIngest::new();
    let config = tidecast_codecs::h264::build_config(SPS, PPS).unwrap();

    let mut sent_payloads: Vec<Bytes> = Vec::new();
    for i in 0..60u32 {
        let body = if i == 0 {
            avc_tag(true, 0, &config)
        } else {
            let nal = vec![0x65u8; 1000 + i as usize];
            let mut avcc = (nal.len() as u32).to_be_bytes().to_vec();
            avcc.extend_from_slice(&nal);
            avc_tag(i % 25 == 1, 1, &avcc)
        };
        client.send_video(i * 40, body);
        // The read buffer the server consumes: remember where it lives.
        to_server.reserve(64 * 1024);
        let start = to_server.as_ptr() as usize;
        while let Some(out) = client.poll_transmit() {
            to_server.extend_from_slice(&out);
        }
        let end = start + to_server.len();
        server.handle_input(&mut to_server, 0).unwrap();
        while let Some(ev) = server.poll_event() {
            let SessionEvent::Video { timestamp, payload } = ev else { continue };
            let frame = ingest.video(timestamp, &payload).unwrap();
            if let Some(t) = ingest.take_tracks() {
                publisher.set_tracks(t).unwrap();
            }
            if let Some(frame) = frame {
                let p = frame.payload.as_ptr() as usize;
                assert!(p >= start && p < end, "the frame payload is a slice of the socket read buffer");
                sent_payloads.push(frame.payload.clone());
                publisher.push(frame).unwrap();
            }
        }
    }

    let mut packager = Segmenter::new(SegmenterConfig::default());
    while let Some(ev) = sub.try_recv() {
        packager.on_event(ev);
    }
    let video = packager.rendition("video").expect("video rendition");
    let served: Vec<&Bytes> =
        video.segments.iter().flat_map(|s| s.parts.iter()).flat_map(|p| p.chunks.iter()).collect();
    // Each video chunk (one sample: `moof`, then `mdat` ending in the frame)
    // lies in the rendition's memory-backed file, written there once.
    for c in &served {
        assert!(
            tidecast_memfile::join(std::slice::from_ref(*c)).is_some(),
            "chunk at {:#x} is in the rendition's memory-backed file",
            c.as_ptr() as usize
        );
    }
    let written = sent_payloads.len() - 1; // the newest frame waits for its duration
    assert!(written > 50);
    for payload in &sent_payloads[..written] {
        assert!(
            served.iter().any(|c| c.ends_with(payload) && !std::ptr::eq(c.as_ptr(), payload.as_ptr())),
            "the payload at {:#x} is served from its one packaged copy",
            payload.as_ptr() as usize
        );
    }
}

#[test]
fn fan_out_allocates_nothing_per_payload_byte() {
    let registry = Registry::new(RegistryConfig::default());
    let publisher = registry.publish("s").unwrap();
    let track = Track { id: 0, codec: tidecast_media::Codec::H264, config: Bytes::new(), info: Default::default() };
    publisher.set_tracks(vec![track]).unwrap();
    let mut subs: Vec<_> = (0..100).map(|_| publisher.stream().subscribe()).collect();
    let payload_size = 100_000;
    let frames: Vec<Frame> = (0..50)
        .map(|i| Frame {
            track: 0,
            dts: i * 40_000,
            cts: 0,
            keyframe: i % 25 == 0,
            payload: Bytes::from(vec![1u8; payload_size]),
        })
        .collect();
    let before = allocated_here();
    let mut delivered = 0usize;
    for f in frames {
        publisher.push(f).unwrap();
        for s in &mut subs {
            while let Some(ev) = s.try_recv() {
                if let Event::Frame(f) = ev {
                    delivered += f.payload.len();
                }
            }
        }
    }
    let allocated = allocated_here() - before;
    assert_eq!(delivered, 100 * 50 * payload_size);
    // 500 MB reached 100 readers; the core allocated a tiny fraction of one copy.
    assert!(allocated < payload_size * 50 / 10, "allocated {allocated} bytes to deliver {delivered}");
}
