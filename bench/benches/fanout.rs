//! Fan-out cost per frame: one publisher, N subscribers reading every frame.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tidecast_media::{Event, Registry, RegistryConfig};

fn fanout(c: &mut Criterion) {
    let frames = tidecast_bench::frames(2);
    let mut g = c.benchmark_group("fanout");
    g.throughput(Throughput::Elements(frames.len() as u64));
    for n in [1usize, 100, 1000] {
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, &n| {
            b.iter_batched(
                || {
                    let registry = Registry::new(RegistryConfig::default());
                    let publisher = registry.publish("f").unwrap();
                    publisher.set_tracks(tidecast_bench::tracks()).unwrap();
                    let subs: Vec<_> = (0..n).map(|_| publisher.stream().subscribe()).collect();
                    (registry, publisher, subs, frames.clone())
                },
                |(_registry, publisher, mut subs, frames)| {
                    let mut delivered = 0usize;
                    for f in frames {
                        publisher.push(f).unwrap();
                        for s in &mut subs {
                            while let Some(ev) = s.try_recv() {
                                delivered += matches!(ev, Event::Frame(_)) as usize;
                            }
                        }
                    }
                    delivered
                },
                criterion::BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, fanout);
criterion_main!(benches);
