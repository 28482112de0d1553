//! Live files over HTTP: `GET /{stream}.mp4` (fragmented MP4: an init
//! segment with its video and audio, then a fragment per GOP, as
//! recordings are written) and `GET /{stream}.mkv` (Matroska, a cluster per
//! GOP), from the newest keyframe for as long as the stream lasts:
//! browsers' `<video>` (MP4), ffplay, VLC and mpv play them progressively.
//! `?video=` and `?audio=` choose the tracks as they do for pushes
//! (`video=360p` takes a ladder's rung). One connection is one viewer
//! session. Both containers are sans-IO writers behind [`LiveMuxer`].

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use bytes::Bytes;

use super::problem;
use crate::access::{EndReason, PlayRequest, Session};
use crate::flv::http::FlvHttp;
use crate::http::{body, denied, token};
use crate::push::mp4::Mp4Recorder;
use crate::push::select::{self, Selected};

/// A container written as the stream goes: events in, bytes out.
pub trait LiveMuxer: Send + 'static {
    /// What to append for `ev`.
    fn event(&mut self, ev: tidecast_media::Event) -> Vec<Bytes>;
    /// What to append once the stream ended.
    fn finish(&mut self) -> Vec<Bytes>;
}

impl LiveMuxer for Mp4Recorder {
    fn event(&mut self, ev: tidecast_media::Event) -> Vec<Bytes> {
        Mp4Recorder::event(self, ev)
    }
    fn finish(&mut self) -> Vec<Bytes> {
        Mp4Recorder::finish(self)
    }
}

impl LiveMuxer for crate::mkv::MkvWriter {
    fn event(&mut self, ev: tidecast_media::Event) -> Vec<Bytes> {
        crate::mkv::MkvWriter::event(self, ev)
    }
    fn finish(&mut self) -> Vec<Bytes> {
        Vec::new()
    }
}

/// The containers served live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Container {
    /// `.mp4`.
    Mp4,
    /// `.mkv`.
    Mkv,
}

impl Container {
    fn muxer(self) -> Box<dyn LiveMuxer> {
        match self {
            Container::Mp4 => Box::new(Mp4Recorder::new()),
            Container::Mkv => Box::new(crate::mkv::MkvWriter::new()),
        }
    }

    /// Its name as a session protocol and in the load report.
    fn protocol(self) -> &'static str {
        match self {
            Container::Mp4 => "mp4",
            Container::Mkv => "mkv",
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Container::Mp4 => "video/mp4",
            Container::Mkv => "video/x-matroska",
        }
    }
}

struct Viewer {
    sub: Selected,
    rec: Box<dyn LiveMuxer>,
    container: Container,
    ready: VecDeque<Bytes>,
    guard: Session,
    out: FlvHttp,
    done: bool,
}

/// The live file of `name` in `container` for one viewer who asked at
/// `url`.
pub(crate) async fn serve(
    container: Container,
    out: &FlvHttp,
    peer: SocketAddr,
    name: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    url: &str,
) -> Response {
    let token = token(query, headers);
    if let Err(e) = out.gate.check_play(name, token, peer.ip()) {
        return denied(e);
    }
    let Some(stream) = out.registry.get(name).filter(|s| !s.is_ended()) else {
        return problem(StatusCode::NOT_FOUND, &format!("stream {name:?} is not live"));
    };
    let selection = match select::take(&format!("?{}", query.unwrap_or(""))) {
        Ok((_, s)) => s,
        Err(e) => return problem(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    if selection.audio == select::Pick::Codec(tidecast_media::Codec::Opus) {
        stream.demand(tidecast_media::Demand::OpusAudio);
    }
    let req = PlayRequest { protocol: container.protocol(), stream: name, token, peer, url };
    let guard = match out.gate.admit_play(req).await {
        Ok(s) => s,
        Err(e) => return denied(e),
    };
    let viewer = Viewer {
        sub: selection.subscribe(&stream),
        rec: container.muxer(),
        container,
        ready: VecDeque::new(),
        guard,
        out: out.clone(),
        done: false,
    };
    let chunks = futures_util::stream::unfold(viewer, |mut v| async move {
        loop {
            if let Some(b) = v.ready.pop_front() {
                v.guard.sent(b.len());
                let counter = match v.container {
                    Container::Mp4 => &v.out.traffic.mp4,
                    Container::Mkv => &v.out.traffic.mkv,
                };
                counter.fetch_add(b.len() as u64, Ordering::Relaxed);
                return Some((Ok::<_, Infallible>(b), v));
            }
            if v.done {
                return None;
            }
            let ev = tokio::select! {
                ev = v.sub.recv() => ev,
                _ = v.guard.cancelled() => return None,
            };
            let Some(ev) = ev else {
                // The stream ended: its last frames go out as a last fragment.
                v.guard.end_with(EndReason::StreamEnded);
                v.ready.extend(v.rec.finish());
                v.done = true;
                continue;
            };
            v.ready.extend(v.rec.event(ev));
            // What is already in the ring goes into the same turn.
            while let Some(ev) = v.sub.try_recv() {
                v.ready.extend(v.rec.event(ev));
                if v.ready.len() > 256 {
                    break;
                }
            }
        }
    });
    body(container.content_type(), "no-cache", Body::from_stream(chunks))
}
