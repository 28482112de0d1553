//! MPEG-TS output, muxed once per stream and read by every TS viewer
//! (HTTP-TS and SRT players) through a derived media-core stream:
//! each of its frames is the TS packets of one source frame, and its
//! keyframes are the chunks that start with PAT, PMT and a video keyframe,
//! so a viewer starts there and a slow viewer skips ahead to the next one.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tidecast_media::outputs::{OutputTask, Outputs, Start, StartOutput};
use tidecast_media::{
    Codec, Event, Frame, MediaKind, Publisher, Registry, Stream, StreamConfig, Subscriber, Track, DERIVED_TRACK_BASE,
};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::TsMuxer;

/// Every stream's TS form: an on-demand kind of the media core's
/// [`Outputs`]. A stream is muxed from the first TS viewer (HTTP-TS or SRT)
/// on, until it ends; a stream nobody plays as TS costs nothing.
#[derive(Debug, Default)]
pub struct TsHub {
    state: OnceLock<(Registry, Arc<Outputs<Stream>>)>,
}

impl TsHub {
    /// An empty hub; it muxes streams once [`TsHub::run`] runs.
    pub fn new() -> Arc<TsHub> {
        Arc::new(TsHub::default())
    }

    /// A reader of `stream`'s TS, starting at the newest keyframe chunk;
    /// the muxer starts if this is the stream's first TS reader. `None`
    /// when no such stream is live.
    pub fn subscribe(&self, stream: &str) -> Option<Subscriber> {
        let (registry, outputs) = self.state.get()?;
        // By the live stream, not the name: a new stream of an old name
        // never gets the old stream's TS.
        let source = registry.get(stream).filter(|s| !s.is_ended())?;
        Some(outputs.get_or_start(&source).subscribe())
    }

    /// Streams muxed now.
    pub fn running(&self) -> usize {
        self.state.get().map_or(0, |(_, o)| o.len())
    }

    /// Serves TS viewers of the registry's streams until `shutdown`.
    pub async fn run(self: Arc<Self>, registry: Registry, shutdown: CancellationToken) {
        let (ledger, stop) = (registry.ledger().clone(), shutdown.clone());
        let start: StartOutput<Stream> = Box::new(move |source: Arc<Stream>| {
            let cfg = StreamConfig { buffer: Duration::from_secs(4), max_bytes: 32 << 20 };
            let out = Publisher::standalone_accounted(source.name(), cfg, ledger.gauge(source.name(), "ts"));
            let derived = out.stream().clone();
            (derived, Box::pin(mux(source, out, stop.clone())) as OutputTask<Stream>)
        });
        let (_, outputs) =
            self.state.get_or_init(|| (registry.clone(), Outputs::new("ts", Start::OnDemand, Duration::ZERO, start)));
        let outputs = outputs.clone();
        tokio::select! {
            _ = outputs.clone().run(registry) => {}
            _ = shutdown.cancelled() => {}
        }
        outputs.close();
    }
}

/// The tracks a stream's MPEG-TS carries: the publisher's own (a ladder's
/// renditions would multiply every TS viewer's bandwidth), plus a bridged
/// AAC track when the source's audio is Opus, which TS cannot carry.
pub fn ts_tracks(tracks: &[Track]) -> Vec<Track> {
    let own_aac = tracks.iter().any(|t| t.id < DERIVED_TRACK_BASE && t.codec == Codec::Aac);
    tracks.iter().filter(|t| t.id < DERIVED_TRACK_BASE || (!own_aac && t.codec == Codec::Aac)).cloned().collect()
}

/// Muxes `source` into `out` until the source ends (or `shutdown`).
async fn mux(source: Arc<Stream>, out: Publisher, shutdown: CancellationToken) -> Option<Arc<Stream>> {
    let mut sub = source.subscribe();
    let mut mux: Option<TsMuxer> = None;
    let mut video_track = None;
    info!(stream = source.name(), "mpeg-ts output started");
    loop {
        let ev = tokio::select! {
            _ = shutdown.cancelled() => None,
            ev = sub.recv() => ev,
        };
        match ev {
            Some(Event::Tracks(tracks)) => {
                let tracks = ts_tracks(&tracks);
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
    debug!(stream = source.name(), skips = sub.skips(), "mpeg-ts output finished");
    out.end();
    None
}
