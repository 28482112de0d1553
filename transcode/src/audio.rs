//! The audio bridge: an AAC source gets an Opus track (48 kHz) for WebRTC
//! viewers, an Opus source (WHIP) an AAC track for LL-HLS players that
//! cannot decode Opus, RTMP players and DASH. The new track joins the same
//! stream, on its timeline. [`BridgeMode`] says when: by default the AAC
//! track from the start (HLS and DASH package every track as it comes)
//! and the Opus track once a WebRTC viewer raises
//! [`Demand::OpusAudio`](tidecast_media::Demand).
//!
//! Timing: the bridged track starts at the first decoded frame's time and
//! then advances by the samples it encodes, so it is gapless; when the
//! source's time runs away from it by more than [`RESYNC_US`] (a gap, a
//! reconnect) it starts again at the source's time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use ffmpeg_next as ff;
use serde::{Deserialize, Serialize};
use tidecast_media::{
    Codec, Demand, Event, Frame, MediaKind, Stream, Subscriber, Track, TrackWriter, DERIVED_TRACK_BASE,
};
use tracing::info;

use crate::supervise::{supervise, RunEnd, RunStats, Stop};

/// The bridged track's id.
pub const BRIDGE_TRACK: u32 = DERIVED_TRACK_BASE + 0x100;
/// How far the source's time may drift from the samples counted before the
/// bridge starts its timeline again, microseconds.
pub const RESYNC_US: i64 = 100_000;

/// When the bridge makes its track.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BridgeMode {
    /// Opus sources get AAC from the start; AAC sources get Opus once a
    /// WebRTC viewer asks for it (and from then on, for the stream's life).
    #[default]
    Auto,
    /// Both directions from the start.
    Always,
    /// No bridge.
    Off,
}

impl BridgeMode {
    /// Whether a bridge to `to` starts now on `stream`.
    fn starts(self, to: Codec, stream: &Stream) -> bool {
        match self {
            BridgeMode::Off => false,
            BridgeMode::Always => true,
            BridgeMode::Auto => to != Codec::Opus || stream.is_demanded(Demand::OpusAudio),
        }
    }
}

/// Counters of one stream's bridge.
#[derive(Debug, Default)]
pub struct BridgeStats {
    /// Runs, failures and the last error.
    pub runs: RunStats,
    /// Source audio frames decoded.
    pub frames_in: AtomicU64,
    /// Bridged frames published.
    pub frames_out: AtomicU64,
    /// Source frames the decoder rejected.
    pub decode_errors: AtomicU64,
    /// Times the timeline started again at the source's time.
    pub resyncs: AtomicU64,
    /// Whether the bridged track is being made (false while it waits for
    /// a viewer's demand, or for audio it can bridge).
    pub active: std::sync::atomic::AtomicBool,
}

/// A running bridge; dropping it stops it and withdraws its track.
pub struct AudioBridge {
    stats: Arc<BridgeStats>,
    stop: Stop,
}

impl std::fmt::Debug for AudioBridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AudioBridge").finish_non_exhaustive()
    }
}

impl AudioBridge {
    /// Starts bridging `stream`'s audio: AAC to Opus, Opus to AAC, nothing
    /// for other codecs or a stream that already carries both; `mode` says
    /// when each direction starts.
    pub fn start(stream: Arc<Stream>, mode: BridgeMode, rt: tokio::runtime::Handle) -> std::io::Result<AudioBridge> {
        crate::init();
        let stats = Arc::new(BridgeStats::default());
        let stop = Stop::default();
        let first = stream.subscribe();
        let (st, sp) = (stats.clone(), stop.clone());
        std::thread::Builder::new().name(format!("audio-{}", crate::ladder::short(stream.name()))).spawn(
            move || {
                supervise(&stream, &rt, &sp, &st.runs, "audio bridge", first, |sub| {
                    let writer = stream.derive_tracks();
                    run(sub, &writer, mode, &rt, &sp, &st)
                })
            },
        )?;
        Ok(AudioBridge { stats, stop })
    }

    /// The bridge's counters.
    pub fn stats(&self) -> &Arc<BridgeStats> {
        &self.stats
    }
}

impl Drop for AudioBridge {
    fn drop(&mut self) {
        self.stop.stop();
    }
}

/// Which source track to bridge, and to what.
fn pick(tracks: &[Track]) -> Option<(Track, Codec)> {
    let own = || tracks.iter().filter(|t| t.id < DERIVED_TRACK_BASE && t.kind() == MediaKind::Audio);
    let has = |c: Codec| tracks.iter().any(|t| t.codec == c);
    let src = own().next()?;
    match src.codec {
        Codec::Aac if !has(Codec::Opus) => Some((src.clone(), Codec::Opus)),
        Codec::Opus if !has(Codec::Aac) => Some((src.clone(), Codec::Aac)),
        _ => None,
    }
}

fn run(
    mut sub: Subscriber,
    writer: &TrackWriter,
    mode: BridgeMode,
    rt: &tokio::runtime::Handle,
    stop: &Stop,
    stats: &BridgeStats,
) -> RunEnd {
    // What to bridge, to what; its pipe opens at the first source frame
    // once the mode lets it start.
    let mut source: Option<(Track, Codec)> = None;
    let mut pipe: Option<Pipe> = None;
    while let Some(ev) = stop.next(rt, &mut sub) {
        match ev {
            Event::Tracks(ts) => {
                // Our own track is among them once published: pick from the others.
                let others: Vec<Track> = ts.iter().filter(|t| t.id != BRIDGE_TRACK).cloned().collect();
                let next = pick(&others);
                if next.as_ref().map(|(t, to)| (t.id, t.codec, &t.config, *to))
                    == source.as_ref().map(|(t, to)| (t.id, t.codec, &t.config, *to))
                {
                    continue;
                }
                pipe = None;
                stats.active.store(false, Ordering::Relaxed);
                writer.set_tracks(Vec::new());
                if next.as_ref().is_some_and(|(_, to)| *to == Codec::Opus) {
                    sub.stream().promise(Demand::OpusAudio);
                }
                source = next;
            }
            Event::Discontinuity => {
                if let Some(p) = &mut pipe {
                    p.restart();
                }
            }
            Event::Frame(f) => {
                let Some((src, to)) = &source else { continue };
                if f.track != src.id {
                    continue;
                }
                if pipe.is_none() {
                    if !mode.starts(*to, sub.stream()) {
                        continue;
                    }
                    match Pipe::open(src, *to) {
                        Ok(p) => {
                            info!(
                                stream = sub.stream().name(),
                                from = src.codec.name(),
                                to = to.name(),
                                "transcode: audio bridge started"
                            );
                            writer.set_tracks(vec![p.track.clone()]);
                            stats.active.store(true, Ordering::Relaxed);
                            pipe = Some(p);
                        }
                        Err(e) => return RunEnd::Failed(e),
                    }
                }
                let Some(p) = &mut pipe else { continue };
                stats.frames_in.fetch_add(1, Ordering::Relaxed);
                match p.push(&f, stats) {
                    Ok(out) => {
                        for frame in out {
                            stats.frames_out.fetch_add(1, Ordering::Relaxed);
                            writer.push(frame);
                        }
                    }
                    Err(e) => return RunEnd::Failed(e),
                }
            }
        }
    }
    RunEnd::Done
}

/// Decoder, resampler, sample queue and encoder of one bridge.
struct Pipe {
    dec: ff::decoder::Audio,
    enc: ff::encoder::audio::Encoder,
    swr: Option<ff::software::resampling::Context>,
    format: ff::format::Sample,
    layout: ff::ChannelLayout,
    rate: u32,
    frame_size: usize,
    /// Resampled samples waiting for a whole encoder frame, one byte queue
    /// per plane.
    queue: Vec<Vec<u8>>,
    /// The encoder's own clock: samples handed to it so far. It never goes
    /// back (the encoder holds a few frames, whose packets come out after a
    /// resync with the times they were given).
    next_pts: i64,
    /// Where the encoder's clock meets media time: from encoder sample
    /// `.0` on, sample `n` is at `.1 + (n - .0) / rate` (µs). A resync
    /// starts a new entry; the oldest go once nothing can refer to them.
    anchors: std::collections::VecDeque<(i64, i64)>,
    /// The next frame starts a new anchor at its source time.
    resync: bool,
    /// The newest decode time published: the track never goes back.
    last_dts: Option<i64>,
    track: Track,
}

impl Pipe {
    fn open(src: &Track, to: Codec) -> Result<Pipe, String> {
        let dec_id = match src.codec {
            Codec::Aac => ff::codec::Id::AAC,
            Codec::Opus => ff::codec::Id::OPUS,
            other => return Err(format!("cannot decode {} audio", other.name())),
        };
        let codec = ff::decoder::find(dec_id).ok_or("no decoder for the source's audio")?;
        let mut ctx = ff::codec::context::Context::new_with_codec(codec);
        if !src.config.is_empty() {
            crate::ladder::set_extradata(&mut ctx, &src.config)?;
        }
        let channels = src.info.channels.clamp(1, 2);
        let layout = if channels == 1 { ff::ChannelLayout::MONO } else { ff::ChannelLayout::STEREO };
        // SAFETY: the context is not open yet; FFmpeg reads these when it opens.
        unsafe {
            let c = ctx.as_mut_ptr();
            (*c).sample_rate = src.info.sample_rate.max(8000) as i32;
            ff::ffi::av_channel_layout_default(&mut (*c).ch_layout, i32::from(channels));
        }
        let dec = ctx
            .decoder()
            .open_as(codec)
            .and_then(|o| o.audio())
            .map_err(|e| format!("cannot open the audio decoder: {e}"))?;

        let (enc_name, rate, format, bitrate) = match to {
            Codec::Opus => ("libopus", 48_000u32, ff::format::Sample::F32(ff::format::sample::Type::Packed), 96_000),
            _ => ("aac", 48_000u32, ff::format::Sample::F32(ff::format::sample::Type::Planar), 128_000),
        };
        let codec =
            ff::encoder::find_by_name(enc_name).ok_or_else(|| format!("{enc_name} is not in this FFmpeg build"))?;
        let mut enc =
            ff::codec::context::Context::new_with_codec(codec).encoder().audio().map_err(|e| e.to_string())?;
        enc.set_rate(rate as i32);
        enc.set_format(format);
        enc.set_channel_layout(layout);
        enc.set_bit_rate(bitrate);
        enc.set_time_base(ff::Rational(1, rate as i32));
        enc.set_flags(ff::codec::Flags::GLOBAL_HEADER);
        let mut opts = ff::Dictionary::new();
        if to == Codec::Opus {
            opts.set("application", "lowdelay");
            opts.set("frame_duration", "20");
        }
        let enc = enc.open_as_with(codec, opts).map_err(|e| format!("cannot open {enc_name}: {e}"))?;
        let frame_size = (enc.frame_size() as usize).max(1);
        let extradata = crate::encoder::extradata(&enc);
        let config = match to {
            Codec::Opus if extradata.starts_with(b"OpusHead") => Bytes::from(extradata),
            Codec::Opus => Bytes::from(tidecast_codecs::opus::build_head(channels, 312)),
            _ if !extradata.is_empty() => Bytes::from(extradata),
            _ => return Err("the AAC encoder gave no AudioSpecificConfig".into()),
        };
        let info = tidecast_codecs::describe(to, &config).map_err(|e| format!("bridged track: {e}"))?;
        let track = Track { id: BRIDGE_TRACK, codec: to, config, info };
        let planes = if format.is_planar() { usize::from(channels) } else { 1 };
        Ok(Pipe {
            dec,
            enc,
            swr: None,
            format,
            layout,
            rate,
            frame_size,
            queue: vec![Vec::new(); planes],
            next_pts: 0,
            anchors: std::collections::VecDeque::new(),
            resync: true,
            last_dts: None,
            track,
        })
    }

    /// Starts the timeline again at the next frame's time.
    fn restart(&mut self) {
        for q in &mut self.queue {
            q.clear();
        }
        self.resync = true;
        self.dec.flush();
    }

    fn bytes_per_sample(&self) -> usize {
        let b = self.format.bytes();
        if self.format.is_planar() {
            b
        } else {
            b * usize::from(self.layout.channels().max(1) as u16)
        }
    }

    fn push(&mut self, f: &Frame, stats: &BridgeStats) -> Result<Vec<Frame>, String> {
        let mut packet = ff::Packet::copy(&f.payload);
        packet.set_pts(Some(f.pts()));
        if self.dec.send_packet(&packet).is_err() {
            stats.decode_errors.fetch_add(1, Ordering::Relaxed);
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        let mut decoded = ff::frame::Audio::empty();
        while self.dec.receive_frame(&mut decoded).is_ok() {
            // Where the samples counted so far say this frame should be,
            // against where the source says it is.
            let expected =
                self.anchors.back().map(|&(at, us)| self.media_us(at, us, self.next_pts + self.queued() as i64));
            if self.resync || expected.is_none_or(|e| (e - f.pts()).abs() > RESYNC_US) {
                if !self.resync {
                    stats.resyncs.fetch_add(1, Ordering::Relaxed);
                }
                self.resync = false;
                for q in &mut self.queue {
                    q.clear();
                }
                self.anchors.push_back((self.next_pts, f.pts()));
                while self.anchors.len() > 8 {
                    self.anchors.pop_front();
                }
                self.swr = None;
            }
            self.resample(&decoded)?;
            while self.queued() >= self.frame_size {
                out.extend(self.encode_one()?);
            }
        }
        Ok(out)
    }

    /// Media time (µs) of encoder sample `n` under the anchor `(at, us)`.
    fn media_us(&self, at: i64, us: i64, n: i64) -> i64 {
        us + (n - at) * 1_000_000 / i64::from(self.rate)
    }

    /// Media time of encoder sample `n`: under the newest anchor at or
    /// before it (the first one for the encoder's priming samples).
    fn time_of(&self, n: i64) -> i64 {
        let anchor = self.anchors.iter().rev().find(|&&(at, _)| at <= n).or(self.anchors.front());
        anchor.map_or(0, |&(at, us)| self.media_us(at, us, n))
    }

    fn queued(&self) -> usize {
        self.queue.first().map_or(0, |q| q.len() / self.bytes_per_sample().max(1))
    }

    fn resample(&mut self, input: &ff::frame::Audio) -> Result<(), String> {
        if self.swr.is_none() {
            let mut layout = input.channel_layout();
            if layout.channels() == 0 {
                layout = ff::ChannelLayout::default(i32::from(input.channels().max(1)));
            }
            let swr = ff::software::resampling::Context::get(
                input.format(),
                layout,
                input.rate(),
                self.format,
                self.layout,
                self.rate,
            )
            .map_err(|e| format!("cannot resample: {e}"))?;
            self.swr = Some(swr);
        }
        let Some(swr) = self.swr.as_mut() else { return Ok(()) };
        // Room for everything this input makes at the output rate, plus what
        // the resampler held back last time: it keeps whatever does not fit.
        let room = input.samples() * self.rate as usize / input.rate().max(1) as usize + 256;
        let mut converted = ff::frame::Audio::new(self.format, room, self.layout);
        swr.run(input, &mut converted).map_err(|e| format!("resampling failed: {e}"))?;
        let n = converted.samples();
        let per = self.bytes_per_sample();
        for (i, q) in self.queue.iter_mut().enumerate() {
            let data = converted.data(i);
            q.extend_from_slice(&data[..(n * per).min(data.len())]);
        }
        Ok(())
    }

    fn encode_one(&mut self) -> Result<Vec<Frame>, String> {
        let per = self.bytes_per_sample();
        let take = self.frame_size * per;
        let mut frame = ff::frame::Audio::new(self.format, self.frame_size, self.layout);
        frame.set_rate(self.rate);
        for (i, q) in self.queue.iter_mut().enumerate() {
            frame.data_mut(i)[..take].copy_from_slice(&q[..take]);
            q.drain(..take);
        }
        frame.set_pts(Some(self.next_pts));
        self.next_pts += self.frame_size as i64;
        self.enc.send_frame(&frame).map_err(|e| format!("audio encoding failed: {e}"))?;
        let mut out = Vec::new();
        let mut packet = ff::Packet::empty();
        while self.enc.receive_packet(&mut packet).is_ok() {
            let Some(data) = packet.data() else { continue };
            let dts = self.time_of(packet.pts().unwrap_or(0));
            // A packet the encoder held across a resync that lands at or
            // after the new timeline's start, or anything that would go
            // back in time, is left out: the track only moves forward.
            if self.last_dts.is_some_and(|l| dts <= l) {
                continue;
            }
            if let Some(&(at, us)) = self.anchors.back() {
                if packet.pts().unwrap_or(0) < at && dts >= us {
                    continue;
                }
            }
            self.last_dts = Some(dts);
            out.push(Frame { track: BRIDGE_TRACK, dts, cts: 0, keyframe: true, payload: Bytes::copy_from_slice(data) });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_makes_opus_only_on_demand_and_aac_always() {
        let publisher: tidecast_media::Publisher =
            tidecast_media::Publisher::standalone("modes", tidecast_media::StreamConfig::default());
        let stream = publisher.stream();
        assert!(!BridgeMode::Auto.starts(Codec::Opus, stream), "no WebRTC viewer yet");
        assert!(BridgeMode::Auto.starts(Codec::Aac, stream));
        assert!(BridgeMode::Always.starts(Codec::Opus, stream));
        assert!(!BridgeMode::Off.starts(Codec::Aac, stream));
        stream.demand(Demand::OpusAudio);
        assert!(BridgeMode::Auto.starts(Codec::Opus, stream), "a viewer asked");
        assert!(!BridgeMode::Off.starts(Codec::Opus, stream));
    }
}
