//! MPEG-TS mux and demux throughput (bytes of TS per second, one core).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tidecast_protocols::mpegts::{TsDemuxer, TsMuxer};

fn mpegts(c: &mut Criterion) {
    let tracks = tidecast_bench::tracks();
    let frames = tidecast_bench::frames(10);
    let mut mux = TsMuxer::new(&tracks);
    let ts: Vec<u8> = frames.iter().filter_map(|f| mux.frame(f)).flat_map(|b| b.to_vec()).collect();

    let mut g = c.benchmark_group("mpegts");
    g.throughput(Throughput::Bytes(ts.len() as u64));
    g.bench_function("mux_10s_3mbit", |b| {
        b.iter(|| {
            let mut m = TsMuxer::new(&tracks);
            frames.iter().filter_map(|f| m.frame(f)).map(|b| b.len()).sum::<usize>()
        })
    });
    g.bench_function("demux_10s_3mbit", |b| {
        b.iter(|| {
            let mut d = TsDemuxer::new();
            let mut n = 0;
            for chunk in ts.chunks(1316) {
                d.push(chunk);
                while d.poll().is_some() {
                    n += 1;
                }
            }
            n
        })
    });
    g.finish();
}

criterion_group!(benches, mpegts);
criterion_main!(benches);
