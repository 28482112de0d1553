//! The LL-DASH MPD: a second renderer over the CMAF segmenter's segments
//! (LL-HLS playlists are the first), following DASH-IF's low-latency rules
//! as dash.js, the reference player, implements them.
//!
//! * `type="dynamic"`, `availabilityStartTime` = the wall clock of media
//!   time 0 (fixed for the stream's run, millisecond precision), so a
//!   segment's `S@t` is its `tfdt` and both formats name the same instants.
//! * One `SegmentTemplate` + `SegmentTimeline` per Representation, `t`/`d`
//!   in the track's timescale (keyframe-driven durations), `$Number$` = the
//!   HLS media sequence number.
//! * Low-latency signalling (`availabilityTimeOffset` = segment − part
//!   duration, `availabilityTimeComplete="false"`, and the forming segment
//!   listed with its nominal duration) only while the GOP is stable: the last
//!   three segments (or as many as there are) within 10 % of each other.
//!   Otherwise plain dynamic DASH.
//! * `ServiceDescription` (latency target, playback rates 0.96–1.04),
//!   `ProducerReferenceTime` per AdaptationSet and `UTCTiming` pointing at
//!   the server's own clock endpoint: a player never needs an outside host.

use std::fmt::Write;
use std::time::Duration;

use tidecast_media::{rescale, MediaKind, TIMESCALE};

use crate::cmaf::{self, Rendition, Segment, Segmenter};

/// What the MPD needs besides the segmenter.
#[derive(Debug, Clone)]
pub struct MpdContext<'a> {
    /// The stream run's token in file names.
    pub run: &'a str,
    /// Now, Unix milliseconds (`publishTime`).
    pub now_ms: i64,
    /// Absolute URL of the server's `http-xsdate` clock.
    pub utc_url: &'a str,
    /// Latency target; `None` derives one from the segment and part targets.
    pub latency_target: Option<Duration>,
    /// Query parameters every segment URL carries (`sid=…&token=…`), or "".
    pub carry: &'a str,
    /// How much media each thumbnail stands for, when the node makes them
    /// ([`super::thumbs`]).
    pub thumbnails: Option<Duration>,
}

/// The latency target when none is configured: one part short of a segment,
/// plus three parts (what a player buffers at the live edge), at least 1 s.
pub fn default_latency_target(segment: Duration, part: Duration) -> Duration {
    (segment.saturating_sub(part) / 2 + part * 3).max(Duration::from_secs(1))
}

/// Writes an `xs:dateTime` (UTC, milliseconds).
pub fn xs_datetime(ms: i64) -> String {
    crate::hls::playlist::date_time(ms)
}

/// Writes an `xs:duration` of seconds.
fn xs_duration(seconds: f64) -> String {
    format!("PT{:.3}S", seconds.max(0.0))
}

/// The forming segment's nominal duration, when the GOP is regular enough
/// to announce one: the lead rendition's last complete segments (up to
/// three, at least one) are within 10 % of each other. A player joining
/// early thus starts in low-latency mode; an irregular GOP turns the
/// signalling off until it settles.
pub fn gop_stable(lead: &Rendition) -> Option<f64> {
    let last: Vec<f64> = lead.segments.iter().filter(|s| s.complete).rev().take(3).map(|s| s.duration).collect();
    if last.is_empty() {
        return None;
    }
    let (min, max) = last.iter().fold((f64::MAX, 0.0f64), |(a, b), &d| (a.min(d), b.max(d)));
    (min > 0.0 && (max - min) <= 0.1 * max).then_some(last[0])
}

pub(crate) fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('"', "&quot;").replace('<', "&lt;")
}

/// Renders the MPD, or `None` before the first segment has started (no
/// `availabilityStartTime` yet).
pub fn render(p: &Segmenter, ctx: &MpdContext<'_>) -> Option<String> {
    let epoch = p.epoch_ms?;
    let lead = p.renditions.first()?;
    let cfg = p.config();
    let part = cfg.part_target.as_secs_f64();
    let stable = if p.ended { None } else { gop_stable(lead) };
    let longest = p.renditions.iter().map(|r| r.longest_segment).fold(cfg.segment_target.as_secs_f64(), f64::max);
    let window = p
        .renditions
        .iter()
        .map(|r| r.segments.iter().filter(|s| s.complete).map(|s| s.duration).sum::<f64>())
        .fold(0.0, f64::max)
        .max(longest);
    let target =
        ctx.latency_target.unwrap_or_else(|| default_latency_target(cfg.segment_target, cfg.part_target)).as_millis();
    let ast = xs_datetime(epoch);
    let mut out = String::with_capacity(4096);
    out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = write!(
        out,
        "<MPD xmlns=\"urn:mpeg:dash:schema:mpd:2011\" profiles=\"urn:mpeg:dash:profile:isoff-live:2011,urn:mpeg:dash:profile:cmaf:2019\" \
         type=\"{}\" availabilityStartTime=\"{ast}\" publishTime=\"{}\" ",
        if p.ended { "static" } else { "dynamic" },
        xs_datetime(ctx.now_ms),
    );
    if p.ended {
        // Periods start where their media starts, so the presentation runs
        // from 0 to the end of the last segment.
        let end = lead.segments.back().map_or(0.0, |s| s.start_us as f64 / 1e6 + s.duration);
        let _ = write!(out, "mediaPresentationDuration=\"{}\" ", xs_duration(end));
    } else {
        let _ = write!(
            out,
            "minimumUpdatePeriod=\"{}\" timeShiftBufferDepth=\"{}\" ",
            xs_duration((2.0 * part).max(1.0)),
            xs_duration(window)
        );
    }
    let _ =
        writeln!(out, "maxSegmentDuration=\"{}\" minBufferTime=\"{}\">", xs_duration(longest), xs_duration(part * 2.0));
    let _ = writeln!(
        out,
        "  <ServiceDescription id=\"0\">\n    <Latency referenceId=\"0\" target=\"{target}\" min=\"{}\" max=\"{}\"/>\n    \
         <PlaybackRate min=\"0.96\" max=\"1.04\"/>\n  </ServiceDescription>",
        target * 3 / 4,
        target * 2
    );
    let spans = periods(p);
    for (k, span) in spans.iter().enumerate() {
        let last = k + 1 == spans.len();
        let _ = writeln!(out, "  <Period id=\"{}\" start=\"{}\">", span.id, xs_duration(span.start_us as f64 / 1e6));
        let mut set = 0;
        for kind in [MediaKind::Video, MediaKind::Audio] {
            let reps: Vec<&Rendition> = p.renditions.iter().filter(|r| r.track.kind() == kind).collect();
            if reps.is_empty() {
                continue;
            }
            let (content, mime) = match kind {
                MediaKind::Video => ("video", "video/mp4"),
                MediaKind::Audio => ("audio", "audio/mp4"),
            };
            let _ = writeln!(
                out,
                "    <AdaptationSet id=\"{set}\" contentType=\"{content}\" mimeType=\"{mime}\" segmentAlignment=\"true\" startWithSAP=\"1\">"
            );
            set += 1;
            if stable.is_some() && last {
                // presentationTime 0 is the Period's start (the template's
                // presentationTimeOffset).
                let _ = writeln!(
                    out,
                    "      <ProducerReferenceTime id=\"0\" type=\"encoder\" presentationTime=\"0\" wallClockTime=\"{}\">\n        \
                     <UTCTiming schemeIdUri=\"urn:mpeg:dash:utc:http-xsdate:2014\" value=\"{}\"/>\n      </ProducerReferenceTime>",
                    xs_datetime(epoch + span.start_us / 1000),
                    escape(ctx.utc_url)
                );
            }
            for r in reps {
                representation(&mut out, r, ctx, span, if last { stable } else { None }, part);
            }
            out.push_str("    </AdaptationSet>\n");
        }
        if let Some(every) = ctx.thumbnails {
            super::thumbs::adaptation_set(&mut out, p, set, ctx.run, span.start_us, every, ctx.carry);
        }
        out.push_str("  </Period>\n");
    }
    let _ = writeln!(
        out,
        "  <UTCTiming schemeIdUri=\"urn:mpeg:dash:utc:http-xsdate:2014\" value=\"{}\"/>\n</MPD>",
        escape(ctx.utc_url)
    );
    Some(out)
}

/// A run of segments with one configuration per rendition: a DASH Period.
/// A codec or configuration change in any rendition starts the next one.
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    /// Stable while listed: the renditions' init versions.
    pub id: String,
    /// The first segment number in it, and the first after it (if any).
    pub msns: (u64, Option<u64>),
    /// Media time (µs) at which it starts: where its configurations' first
    /// segments started, so it stays put as the window slides.
    pub start_us: i64,
}

/// The Periods of the window, oldest first: one per run of segments with
/// the same configurations (the segmenter's cuts).
pub fn periods(p: &Segmenter) -> Vec<Span> {
    let cuts = p.cuts();
    let version_at = |r: &Rendition, msn: u64| {
        r.segments.iter().rev().find(|s| s.msn <= msn).or(r.segments.front()).map_or(r.init_version, |s| s.init_version)
    };
    cuts.iter()
        .enumerate()
        .map(|(i, &(m, start_us))| {
            let versions: Vec<String> = p.renditions.iter().map(|r| version_at(r, m).to_string()).collect();
            Span {
                id: format!("p{}", versions.join("-")),
                msns: (m, cuts.get(i + 1).map(|c| c.0)),
                start_us: start_us.max(0),
            }
        })
        .collect()
}

fn representation(out: &mut String, r: &Rendition, ctx: &MpdContext<'_>, span: &Span, stable: Option<f64>, part: f64) {
    let inside = |msn: u64| msn >= span.msns.0 && span.msns.1.is_none_or(|end| msn < end);
    let listed: Vec<&Segment> = r.segments.iter().filter(|s| s.complete && inside(s.msn)).collect();
    let forming = stable.and_then(|d| r.open().filter(|s| !s.parts.is_empty() && inside(s.msn)).map(|s| (s, d)));
    let first = listed.first().copied().or(forming.map(|f| f.0));
    let Some(first) = first else { return };
    let init = first.init_version;
    let track = r.init_tracks.get(&init).unwrap_or(&r.track);
    let info = &track.info;
    let bandwidth = r.peak_bitrate.max(if track.kind() == MediaKind::Video { 1_000_000 } else { 128_000 });
    let _ = write!(
        out,
        "      <Representation id=\"{}\" codecs=\"{}\" bandwidth=\"{bandwidth}\"",
        r.name,
        escape(&info.codec_string),
    );
    match track.kind() {
        MediaKind::Video => {
            if info.width > 0 {
                let _ = write!(out, " width=\"{}\" height=\"{}\"", info.width, info.height);
            }
            if let Some(fr) = info.frame_rate.filter(|f| *f > 0.0) {
                let _ = write!(out, " frameRate=\"{}/1000\"", (fr * 1000.0).round() as u64);
            }
            out.push_str(">\n");
        }
        MediaKind::Audio => {
            let _ = write!(
                out,
                " audioSamplingRate=\"{}\">\n        <AudioChannelConfiguration schemeIdUri=\"urn:mpeg:dash:23003:3:audio_channel_configuration:2011\" value=\"{}\"/>\n",
                info.sample_rate,
                info.channels.max(1)
            );
        }
    }
    let ts = cmaf::timescale(track);
    let at = |us: i64| rescale(us, TIMESCALE, ts).max(0);
    let q = if ctx.carry.is_empty() { String::new() } else { format!("?{}", escape(ctx.carry)) };
    let _ = write!(
        out,
        "        <SegmentTemplate timescale=\"{ts}\" presentationTimeOffset=\"{}\" initialization=\"{}{q}\" media=\"{}-{}-$Number$.m4s{q}\" startNumber=\"{}\"",
        at(span.start_us),
        crate::hls::playlist::init_uri(ctx.run, &r.name, init),
        r.name,
        ctx.run,
        first.msn
    );
    if let Some((_, d)) = forming {
        // Requestable one part after a segment starts: its chunks stream as
        // they are written.
        let _ =
            write!(out, " availabilityTimeOffset=\"{:.3}\" availabilityTimeComplete=\"false\"", (d - part).max(0.0));
    }
    out.push_str(">\n          <SegmentTimeline>\n");
    for s in &listed {
        // Each segment ends where the next begins (within a Period), so the
        // timeline has no gaps.
        let end = r
            .segment(s.msn + 1)
            .filter(|n| inside(n.msn))
            .map_or(s.start_us + (s.duration * 1e6).round() as i64, |n| n.start_us);
        let _ = writeln!(out, "            <S t=\"{}\" d=\"{}\"/>", at(s.start_us), at(end) - at(s.start_us));
    }
    if let Some((s, d)) = forming {
        let _ = writeln!(
            out,
            "            <S t=\"{}\" d=\"{}\"/>",
            at(s.start_us),
            at(s.start_us + (d * 1e6).round() as i64) - at(s.start_us)
        );
    }
    out.push_str("          </SegmentTimeline>\n        </SegmentTemplate>\n      </Representation>\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn date_times_and_durations() {
        assert_eq!(xs_datetime(1_795_000_000_123), "2026-11-18T11:06:40.123Z");
        assert_eq!(xs_duration(1.8), "PT1.800S");
        assert_eq!(
            default_latency_target(Duration::from_secs(2), Duration::from_millis(200)),
            Duration::from_millis(1500)
        );
    }
}
