//! MPEG-TS output, muxed once per stream and read by every TS viewer
//! (HTTP-TS today, SRT players next) through a derived media-core stream:
//! each of its frames is the TS packets of one source frame, and its
//! keyframes are the chunks that start with PAT, PMT and a video keyframe,
//! so a viewer starts there and a slow viewer skips ahead to the next one.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tidecast_media::{Event, Frame, MediaKind, Publisher, Registry, Stream, StreamConfig, Subscriber};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::TsMuxer;

/// Every stream's TS form.
#[derive(Debug, Default)]
pub struct TsHub {
    streams: Mutex<HashMap<String, Arc<Stream>>>,
}

impl TsHub {
    /// An empty hub.
    pub fn new() -> Arc<TsHub> {
        Arc::new(TsHub::default())
    }

    /// A reader of `stream`'s TS, starting at the newest keyframe chunk.
    pub fn subscribe(&self, stream: &str) -> Option<Subscriber> {
        self.streams.lock().get(stream).map(|s| s.subscribe())
    }

    /// Muxes every stream the registry starts, until `shutdown`.
    pub async fn run(self: Arc<Self>, registry: Registry, shutdown: CancellationToken) {
        let stop = shutdown.clone();
        registry.for_each_stream(stop.cancelled_owned(), |s| self.spawn_muxer(&registry, s, shutdown.clone())).await;
    }

    fn spawn_muxer(self: &Arc<Self>, registry: &Registry, source: Arc<Stream>, shutdown: CancellationToken) {
        let cfg = StreamConfig { buffer: Duration::from_secs(4), max_bytes: 32 << 20 };
        let out = Publisher::standalone_accounted(source.name(), cfg, registry.ledger().gauge(source.name(), "ts"));
        let derived = out.stream().clone();
        self.streams.lock().insert(source.name().to_owned(), derived.clone());
        let hub = self.clone();
        tokio::spawn(async move {
            let mut sub = source.subscribe();
            let mut mux: Option<TsMuxer> = None;
            let mut video_track = None;
            loop {
                let ev = tokio::select! {
                    _ = shutdown.cancelled() => None,
                    ev = sub.recv() => ev,
                };
                match ev {
                    Some(Event::Tracks(tracks)) => {
                        let m = TsMuxer::new(&tracks);
                        for (track, why) in m.skipped() {
                            info!(stream = source.name(), track, "mpeg-ts output leaves a track out: {why}");
                        }
                        video_track = tracks.iter().find(|t| t.kind() == MediaKind::Video).map(|t| t.id);
                        mux = Some(m);
                    }
                    Some(Event::Frame(f)) => {
                        let Some(m) = mux.as_mut() else { continue };
                        let Some(packets) = m.frame(&f) else { continue };
                        let key = if video_track.is_some() { f.keyframe && Some(f.track) == video_track } else { true };
                        let chunk = Frame { track: 0, dts: f.dts, cts: 0, keyframe: key, payload: packets };
                        if out.push(chunk).is_err() {
                            break;
                        }
                    }
                    Some(Event::Discontinuity) => {}
                    None => break,
                }
            }
            debug!(stream = source.name(), "mpeg-ts output finished");
            out.end();
            let mut streams = hub.streams.lock();
            if streams.get(source.name()).is_some_and(|s| Arc::ptr_eq(s, &derived)) {
                streams.remove(source.name());
            }
        });
    }
}
