//! RTMP chunk encoding as a player is served: per frame, the FLV tag header
//! and the chunk headers are written and the payload is sliced between them
//! (no copy). This ran once per frame per viewer; now a stream's feed chunks
//! each frame once and a player only queues its own first chunk header
//! before the shared rest (`shared_per_frame`), which is what bounds RTMP
//! viewers per core in user space. Also the plain copying encoder, for the
//! control messages.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::sync::Arc;
use tidecast_protocols::flv::{frame_tag_header, TagKind};
use tidecast_protocols::rtmp::chunk::{Encoder, Message};
use tidecast_protocols::rtmp::feed::WireMsg;
use tidecast_protocols::rtmp::play_queue::PlayQueue;

fn rtmp_egress(c: &mut Criterion) {
    let tracks = tidecast_bench::tracks();
    let frames = tidecast_bench::frames(10);
    let bytes: usize = frames.iter().map(|f| f.payload.len()).sum();
    let mut enc = Encoder::default();
    enc.set_chunk_size(4096);

    let mut g = c.benchmark_group("rtmp_egress");
    g.throughput(Throughput::Elements(frames.len() as u64));
    g.bench_function("chunk_slices_per_frame_10s_3mbit", |b| {
        let mut headers = BytesMut::with_capacity(4096);
        let mut out: VecDeque<Bytes> = VecDeque::new();
        b.iter(|| {
            let mut sent = 0usize;
            for f in &frames {
                let Some((kind, tag)) = frame_tag_header(tracks[f.track as usize].codec, f) else { continue };
                let (csid, type_id) = if kind == TagKind::Video { (6, 9) } else { (4, 8) };
                let ts = (f.dts / 1000) as u32;
                enc.encode_parts(
                    (csid, type_id, 1, ts),
                    &tag,
                    std::slice::from_ref(&f.payload),
                    &mut headers,
                    &mut out,
                );
                sent += out.drain(..).map(|p| p.len()).sum::<usize>();
            }
            sent
        })
    });
    let msgs: Vec<(u32, Arc<WireMsg>)> = frames
        .iter()
        .filter_map(|f| {
            let (kind, tag) = frame_tag_header(tracks[f.track as usize].codec, f)?;
            Some(((f.dts / 1000) as u32, Arc::new(WireMsg::new(kind, tag, f.payload.clone(), 60_000))))
        })
        .collect();
    g.bench_function("shared_per_frame_10s_3mbit", |b| {
        let mut q = PlayQueue::new(60_000);
        b.iter(|| {
            for (ts, msg) in &msgs {
                q.shared(*ts, msg.clone());
            }
            let n = q.queued();
            q.advance(n);
            n
        })
    });
    g.throughput(Throughput::Bytes(bytes as u64));
    g.bench_function("chunk_copy_10s_3mbit", |b| {
        let mut out = BytesMut::with_capacity(bytes * 2);
        b.iter(|| {
            out.clear();
            for f in &frames {
                let msg = Message {
                    csid: 6,
                    type_id: 9,
                    stream_id: 1,
                    timestamp: (f.dts / 1000) as u32,
                    payload: f.payload.clone(),
                };
                enc.encode(&msg, &mut out);
            }
            out.len()
        })
    });
    g.finish();
}

criterion_group!(benches, rtmp_egress);
criterion_main!(benches);
