//! One stream's media as RTMP messages, chunked once and shared by every
//! player.
//!
//! A player's messages differ from another's only in the timestamp of each
//! message's first chunk header (players' clocks start at their own first
//! frame). Everything after that header (the FLV tag header, the payload
//! and the continuation chunk headers between its pieces) is the same for
//! every player with the listener's chunk size, so it is made here, once
//! per frame, and published into a derived ring of the media core (the
//! same ring, keyframe index, bounds and skip counting as the stream's own;
//! the WHEP packetizer does the same). A player then queues a 12-byte
//! header of its own and a reference to the shared rest: no encoding, no
//! allocation and one reference count per frame, where it used to encode
//! the chunks and count a reference per piece.
//!
//! The feed is an on-demand output: it starts with a stream's first RTMP
//! player and stops after its last (the task holds the feed weakly). Its
//! ring holds the stream's own frame payloads (reference-counted, not
//! copied), so its bytes are not accounted again.

use std::sync::{Arc, Weak};

use bytes::{Bytes, BytesMut};
use tidecast_media::outputs::{OutputTask, Outputs, Start, StartOutput};
use tidecast_media::{Entry, Event, Publisher, Stream, Subscriber, Track, TrackId, DERIVED_TRACK_BASE};
use tracing::{debug, warn};

use super::chunk::Encoder;
use super::session::{CSID_AUDIO, CSID_VIDEO, MEDIA_STREAM, MSG_AUDIO, MSG_VIDEO};
use crate::flv::{config_tag, frame_tag_header, TagHeader, TagKind};

/// Bytes of a message's first chunk header with a timestamp below
/// `0xffffff` (basic header of a chunk stream id under 64, then the type-0
/// message header).
pub const HEAD_LEN: usize = 12;

/// One frame as an RTMP message, less its first chunk header.
#[derive(Debug)]
pub struct WireMsg {
    /// Audio or video (message type and chunk stream).
    pub kind: TagKind,
    /// The FLV tag header that starts the body.
    pub prefix: TagHeader,
    /// The frame's payload, after the prefix.
    pub payload: Bytes,
    /// The chunk size `tail` was made for.
    pub chunk_size: u32,
    /// Everything after the first chunk header: the prefix, the payload
    /// and the continuation chunk headers, in order (the payload's pieces
    /// are slices of it, not copies).
    pub tail: Vec<Bytes>,
    /// The bytes of `tail`.
    pub tail_len: usize,
}

impl WireMsg {
    /// Chunks `prefix` and `payload` for `chunk_size`.
    pub fn new(kind: TagKind, prefix: TagHeader, payload: Bytes, chunk_size: u32) -> WireMsg {
        let mut enc = Encoder::default();
        enc.set_chunk_size(chunk_size);
        let (csid, type_id) = Self::ids(kind);
        let mut headers = BytesMut::new();
        let mut pieces = std::collections::VecDeque::new();
        // Timestamp 0: no extended timestamp in the continuation headers.
        enc.encode_parts(
            (csid, type_id, MEDIA_STREAM, 0),
            &prefix,
            std::slice::from_ref(&payload),
            &mut headers,
            &mut pieces,
        );
        let mut tail: Vec<Bytes> = pieces.into();
        if let Some(first) = tail.first_mut() {
            // The first piece starts with the type-0 header, which each
            // player writes with its own timestamp.
            let _ = first.split_to(HEAD_LEN.min(first.len()));
        }
        tail.retain(|p| !p.is_empty());
        let tail_len = tail.iter().map(Bytes::len).sum();
        WireMsg { kind, prefix, payload, chunk_size: enc.chunk_size(), tail, tail_len }
    }

    /// The message's chunk stream and type.
    pub fn ids(kind: TagKind) -> (u32, u8) {
        match kind {
            TagKind::Video => (CSID_VIDEO, MSG_VIDEO),
            TagKind::Audio => (CSID_AUDIO, MSG_AUDIO),
        }
    }

    /// The message's length (its body: prefix and payload).
    pub fn len(&self) -> usize {
        self.prefix.len() + self.payload.len()
    }

    /// Whether the body is empty (never, for a frame).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The first chunk header for a player whose clock reads `timestamp`
    /// (ms), or `None` when the timestamp needs the extended field, which
    /// the continuation headers in `tail` do not carry.
    pub fn head(&self, timestamp: u32) -> Option<[u8; HEAD_LEN]> {
        if timestamp >= 0xff_ffff {
            return None;
        }
        let (csid, type_id) = Self::ids(self.kind);
        let ts = timestamp.to_be_bytes();
        let len = (self.len() as u32).to_be_bytes();
        let sid = MEDIA_STREAM.to_le_bytes();
        Some([csid as u8, ts[1], ts[2], ts[3], len[1], len[2], len[3], type_id, sid[0], sid[1], sid[2], sid[3]])
    }
}

/// One entry of the feed's ring.
#[derive(Debug, Clone)]
pub struct WireFrame {
    /// The source track.
    pub track: TrackId,
    /// The frame's decode time, µs, on the stream's clock.
    pub dts: i64,
    /// Whether a decoder can start here.
    pub keyframe: bool,
    /// The shared message.
    pub msg: Arc<WireMsg>,
}

impl Entry for WireFrame {
    fn track(&self) -> TrackId {
        self.track
    }
    fn dts(&self) -> i64 {
        self.dts
    }
    fn shift_dts(&mut self, by: i64) {
        self.dts = self.dts.saturating_add(by);
    }
    fn is_key(&self) -> bool {
        self.keyframe
    }
    fn size(&self) -> usize {
        self.msg.len()
    }
}

/// One stream's shared RTMP messages.
pub struct Feed {
    ring: Arc<Stream<WireFrame>>,
}

impl std::fmt::Debug for Feed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Feed").field("stream", &self.ring.name()).finish_non_exhaustive()
    }
}

impl Feed {
    /// A reader from the newest keyframe on; it ends after the stream's end.
    pub fn subscribe(&self) -> Subscriber<WireFrame> {
        self.ring.subscribe()
    }
}

/// Every stream's feed for one RTMP listener (one chunk size).
pub struct Feeds {
    outputs: Arc<Outputs<Feed>>,
}

impl Feeds {
    /// Feeds chunked for `chunk_size`.
    pub fn new(chunk_size: u32) -> Feeds {
        let start: StartOutput<Feed> = Box::new(move |stream: Arc<Stream>| {
            // The source's bounds: a player may lag as far as it could
            // when it read the source itself.
            let publisher = Publisher::standalone(stream.name(), stream.config().clone());
            let feed = Arc::new(Feed { ring: publisher.stream().clone() });
            let weak = Arc::downgrade(&feed);
            let task: OutputTask<Feed> = Box::pin(async move {
                run(weak, stream, publisher, chunk_size).await;
                None
            });
            (feed, task)
        });
        Feeds { outputs: Outputs::new("rtmp-feed", Start::OnDemand, std::time::Duration::ZERO, start) }
    }

    /// The feed of `stream`, started if needed (never one left over from an
    /// earlier stream of the same name).
    pub fn get(&self, stream: &Arc<Stream>) -> Arc<Feed> {
        self.outputs.get_or_start(stream)
    }
}

/// Chunks every frame FLV can carry into `p` until the stream ends or no
/// player holds the feed. The task owns the publisher, so however it ends
/// (a panic included) the feed's ring ends and its players see it.
async fn run(weak: Weak<Feed>, stream: Arc<Stream>, p: Publisher<WireFrame>, chunk_size: u32) {
    let mut sub = stream.subscribe();
    let mut tracks: Arc<[Track]> = Arc::from(Vec::new());
    let mut warned = false;
    while let Some(ev) = sub.recv().await {
        if weak.strong_count() == 0 {
            break;
        }
        match ev {
            Event::Tracks(t) => {
                // Only what FLV carries: the ring's lead (the track whose
                // keyframes players start at) must be a video track whose
                // frames enter it (a VP8 source's would not; its ladder's
                // H.264 rungs do).
                let carried: Vec<Track> = t.iter().filter(|t| config_tag(t).is_some()).cloned().collect();
                let own = |ts: &[Track]| ts.iter().filter(|t| t.id < DERIVED_TRACK_BASE).count();
                if own(&carried) < own(&t) && !warned {
                    warned = true;
                    warn!(
                        stream = stream.name(),
                        "rtmp play: FLV carries H.264, HEVC, AV1, VP9 and AAC; the stream's other tracks are left out"
                    );
                }
                tracks = t;
                let _ = p.set_tracks(carried);
            }
            Event::Frame(f) => {
                let Some(track) = tracks.iter().find(|t| t.id == f.track) else { continue };
                let Some((kind, prefix)) = frame_tag_header(track.codec, &f) else { continue };
                let msg = Arc::new(WireMsg::new(kind, prefix, f.payload, chunk_size));
                let _ = p.push(WireFrame { track: f.track, dts: f.dts, keyframe: f.keyframe, msg });
            }
            // The source already continued its timeline; the feed copies
            // its timestamps as they are.
            Event::Discontinuity => {}
        }
    }
    debug!(stream = stream.name(), "rtmp feed stopped");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_players_head_and_the_shared_tail_are_the_message_as_encoded_for_it() {
        let payload = Bytes::from((0..150_000u32).map(|i| i as u8).collect::<Vec<u8>>());
        let prefix = TagHeader::new(&[&[0x17, 1, 0, 0, 40]]);
        for (size, len) in [(60_000, 150_000), (60_000, 100), (128, 1000), (4096, 4091), (4096, 4096)] {
            let payload = payload.slice(..len);
            let msg = WireMsg::new(TagKind::Video, prefix, payload.clone(), size);
            for ts in [0u32, 1234, 0xff_fffe] {
                let mut enc = Encoder::default();
                enc.set_chunk_size(size);
                let mut want = std::collections::VecDeque::new();
                enc.encode_parts(
                    (CSID_VIDEO, MSG_VIDEO, MEDIA_STREAM, ts),
                    &prefix,
                    std::slice::from_ref(&payload),
                    &mut BytesMut::new(),
                    &mut want,
                );
                let want: Vec<u8> = want.iter().flat_map(|b| b.iter().copied()).collect();
                let head = msg.head(ts).expect("a timestamp under 0xffffff");
                let got: Vec<u8> =
                    head.iter().copied().chain(msg.tail.iter().flat_map(|b| b.iter().copied())).collect();
                assert_eq!(got, want, "chunk size {size}, length {len}, timestamp {ts}");
            }
            let start = payload.as_ptr() as usize..payload.as_ptr() as usize + payload.len();
            let borrowed: usize =
                msg.tail.iter().filter(|b| start.contains(&(b.as_ptr() as usize))).map(Bytes::len).sum();
            assert_eq!(borrowed, len, "the payload is sliced, not copied");
        }
    }

    #[tokio::test]
    async fn players_of_a_vp8_source_start_at_its_h264_rung() {
        use tidecast_media::{Codec, Frame, StreamConfig, TrackInfo};
        let source: Publisher = Publisher::standalone("vp8", StreamConfig::default());
        let rung = DERIVED_TRACK_BASE;
        let avcc = Bytes::from_static(&[1, 0x42, 0xc0, 0x1f, 0xff, 0xe0, 0]);
        source
            .set_tracks(vec![
                Track { id: 0, codec: Codec::Vp8, config: Bytes::new(), info: TrackInfo::default() },
                Track { id: rung, codec: Codec::H264, config: avcc, info: TrackInfo::default() },
            ])
            .expect("tracks");
        let feeds = Feeds::new(60_000);
        let feed = feeds.get(source.stream());
        let mut player = feed.subscribe();
        // The feed's task subscribes to the source when it first runs.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        for i in 0..50i64 {
            let key = i % 10 == 0;
            let frame =
                |track| Frame { track, dts: i * 40_000, cts: 0, keyframe: key, payload: Bytes::from_static(b"au") };
            source.push(frame(0)).expect("vp8");
            source.push(frame(rung)).expect("rung");
        }
        let mut h264 = 0;
        for _ in 0..10_000 {
            match player.try_recv() {
                Some(Event::Frame(f)) => {
                    assert_eq!(f.track, rung, "VP8 frames are not in the feed");
                    assert!(h264 > 0 || f.keyframe, "the player starts at a keyframe of the rung");
                    h264 += 1;
                }
                Some(_) => {}
                None if h264 == 50 => break,
                None => tokio::task::yield_now().await,
            }
        }
        assert_eq!(h264, 50, "the player reads every frame of the rung");
    }

    #[test]
    fn an_extended_timestamp_has_no_shared_head() {
        let msg = WireMsg::new(TagKind::Audio, TagHeader::new(&[&[0xaf, 1]]), Bytes::from_static(b"aac"), 60_000);
        assert!(msg.head(0xff_ffff).is_none());
        assert_eq!(msg.head(0).map(|h| (h[0], h[7])), Some((CSID_AUDIO as u8, MSG_AUDIO)));
    }
}
