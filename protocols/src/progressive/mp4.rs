//! `GET /{stream}.mp4`: the live stream as fragmented MP4 from its newest
//! keyframe (an init segment with its video and audio, then a fragment per
//! GOP, as recordings are written), for as long as it lasts: browsers'
//! `<video>`, ffplay and VLC play it progressively. `?video=` and
//! `?audio=` choose the tracks as they do for pushes (`video=360p` takes a
//! ladder's rung). One connection is one viewer session.

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

struct Viewer {
    sub: Selected,
    rec: Mp4Recorder,
    ready: VecDeque<Bytes>,
    guard: Session,
    out: FlvHttp,
    done: bool,
}

/// The live fragmented MP4 of `name` for one viewer who asked at `url`.
pub(crate) async fn serve(
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
    let req = PlayRequest { protocol: "mp4", stream: name, token, peer, url };
    let guard = match out.gate.admit_play(req).await {
        Ok(s) => s,
        Err(e) => return denied(e),
    };
    let viewer = Viewer {
        sub: selection.subscribe(&stream),
        rec: Mp4Recorder::new(),
        ready: VecDeque::new(),
        guard,
        out: out.clone(),
        done: false,
    };
    let chunks = futures_util::stream::unfold(viewer, |mut v| async move {
        loop {
            if let Some(b) = v.ready.pop_front() {
                v.guard.sent(b.len());
                v.out.traffic.mp4.fetch_add(b.len() as u64, Ordering::Relaxed);
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
    body("video/mp4", "no-cache", Body::from_stream(chunks))
}
