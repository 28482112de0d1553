//! The playlist writer: multivariant and LL-HLS media playlists (RFC 8216bis).
//!
//! Written by hand: m3u8 crates have no model of parts, hints and rendition
//! reports. The output is also valid for players that ignore LL-HLS tags.

use std::fmt::Write;

use tidecast_media::{Codec, MediaKind};

use super::HlsConfig;
use crate::cmaf::{Rendition, Segmenter};

/// How much of a media playlist to write.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Skip {
    /// The whole playlist.
    #[default]
    No,
    /// A delta update (`_HLS_skip=YES`): old segments replaced by EXT-X-SKIP.
    Yes,
}

/// Names of the files a rendition serves.
pub fn init_uri(run: &str, r: &str, version: u32) -> String {
    format!("{r}-{run}-i{version}.mp4")
}

/// Segment file name.
pub fn segment_uri(run: &str, r: &str, msn: u64) -> String {
    format!("{r}-{run}-{msn}.m4s")
}

/// Part file name.
pub fn part_uri(run: &str, r: &str, msn: u64, part: usize) -> String {
    format!("{r}-{run}-{msn}.{part}.m4s")
}

fn pdt(epoch_ms: i64, start_us: i64) -> String {
    date_time(epoch_ms + start_us / 1000)
}

/// An ISO 8601 UTC date-time with milliseconds (EXT-X-PROGRAM-DATE-TIME,
/// DASH `xs:dateTime`).
pub fn date_time(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// EXT-X-TARGETDURATION: the configured target, or the longest segment if a
/// GOP ran longer.
pub fn target_duration(cfg: &HlsConfig, p: &Segmenter) -> u64 {
    let longest = p.renditions.iter().map(|r| r.longest_segment).fold(0.0, f64::max);
    (cfg.segment_target.as_secs_f64().max(longest).round() as u64).max(1)
}

/// Writes the multivariant playlist: one variant per video rendition (or,
/// for an audio-only stream, one for its first audio rendition), each with
/// the audio renditions as one group.
pub fn multivariant(p: &Segmenter) -> String {
    let mut out = String::from("#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-INDEPENDENT-SEGMENTS\n");
    let of = |kind| p.renditions.iter().filter(move |r| r.track.kind() == kind);
    let videos: Vec<&Rendition> = of(MediaKind::Video).collect();
    let mut audios: Vec<&Rendition> = of(MediaKind::Audio).collect();
    // Every HLS player decodes AAC, not every one Opus (Safari): where a
    // stream has both (the audio bridge made one of them), only AAC is listed.
    if audios.iter().any(|a| a.track.codec == Codec::Aac) {
        audios.retain(|a| a.track.codec != Codec::Opus);
    }
    // The measured peak, or at least the declared bitrate (a ladder's
    // rungs declare theirs), or a floor by kind.
    let bitrate = |r: &Rendition| {
        let floor = if r.track.kind() == MediaKind::Video { 1_000_000 } else { 128_000 };
        r.peak_bitrate.max(r.track.info.bitrate.map_or(floor, u64::from))
    };
    if !videos.is_empty() {
        for (i, a) in audios.iter().enumerate() {
            let (name, default) = if i == 0 { ("main", "YES") } else { (a.name.as_str(), "NO") };
            let _ = writeln!(
                out,
                "#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"audio\",NAME=\"{name}\",DEFAULT={default},AUTOSELECT=YES,CHANNELS=\"{}\",URI=\"{}.m3u8\"",
                a.track.info.channels.max(1),
                a.name
            );
        }
    }
    let variants: Vec<&Rendition> = if videos.is_empty() { audios.iter().take(1).copied().collect() } else { videos };
    let audio = audios.first().filter(|_| variants.first().is_some_and(|v| v.track.kind() == MediaKind::Video));
    for v in variants {
        let mut codecs = vec![v.track.info.codec_string.as_str()];
        let mut bandwidth = bitrate(v);
        if let Some(a) = audio {
            codecs.push(&a.track.info.codec_string);
            bandwidth += bitrate(a);
        }
        let _ = write!(out, "#EXT-X-STREAM-INF:BANDWIDTH={bandwidth},CODECS=\"{}\"", codecs.join(","));
        if v.track.kind() == MediaKind::Video {
            if v.track.info.width > 0 {
                let _ = write!(out, ",RESOLUTION={}x{}", v.track.info.width, v.track.info.height);
            }
            if let Some(fr) = v.track.info.frame_rate {
                let _ = write!(out, ",FRAME-RATE={fr:.3}");
            }
            if audio.is_some() {
                out.push_str(",AUDIO=\"audio\"");
            }
        }
        // No captions: players that would otherwise probe for them do not.
        let _ = write!(out, ",CLOSED-CAPTIONS=NONE\n{}.m3u8\n", v.name);
    }
    out
}

/// Writes the media playlist of rendition `r`.
pub fn media(cfg: &HlsConfig, p: &Segmenter, r: &Rendition, run: &str, skip: Skip) -> String {
    let target = target_duration(cfg, p);
    let part_target = cfg.part_target.as_secs_f64();
    let skip_until = 6.0 * target as f64;
    let mut out = String::with_capacity(4096);
    let first_msn = r.segments.front().map_or(0, |s| s.msn);
    let _ = write!(
        out,
        "#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-TARGETDURATION:{target}\n#EXT-X-PART-INF:PART-TARGET={part_target:.3}\n\
         #EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL={skip_until:.1},PART-HOLD-BACK={:.3}\n\
         #EXT-X-MEDIA-SEQUENCE:{first_msn}\n",
        3.0 * part_target
    );
    if r.discontinuity_sequence > 0 {
        let _ = writeln!(out, "#EXT-X-DISCONTINUITY-SEQUENCE:{}", r.discontinuity_sequence);
    }
    let epoch = p.epoch_ms.unwrap_or(0);
    let complete: Vec<_> = r.segments.iter().filter(|s| s.complete).collect();
    let total: f64 = complete.iter().map(|s| s.duration).sum();
    // Segments that start more than CAN-SKIP-UNTIL before the end may be skipped.
    let mut skipped = 0;
    if skip == Skip::Yes {
        let mut start = 0.0;
        for s in &complete {
            if total - start <= skip_until {
                break;
            }
            start += s.duration;
            skipped += 1;
        }
        // The skipped range must not hide an init change or discontinuity.
        while skipped > 0 && complete[..skipped].iter().chain(complete.get(skipped)).any(|s| s.discontinuity) {
            skipped -= 1;
        }
    }
    let first_init = r.segments.front().map_or(r.init_version, |s| s.init_version);
    let _ = writeln!(out, "#EXT-X-MAP:URI=\"{}\"", init_uri(run, &r.name, first_init));
    if skipped > 0 {
        let _ = writeln!(out, "#EXT-X-SKIP:SKIPPED-SEGMENTS={skipped}");
    }
    let with_parts_from = complete.len().saturating_sub(cfg.parts_segments);
    let mut init = first_init;
    for (i, s) in r.segments.iter().enumerate().skip(skipped) {
        if s.discontinuity {
            out.push_str("#EXT-X-DISCONTINUITY\n");
        }
        if s.init_version != init {
            init = s.init_version;
            let _ = writeln!(out, "#EXT-X-MAP:URI=\"{}\"", init_uri(run, &r.name, init));
        }
        if s.complete || i == skipped || s.discontinuity {
            let _ = writeln!(out, "#EXT-X-PROGRAM-DATE-TIME:{}", pdt(epoch, s.start_us));
        }
        if i >= with_parts_from || !s.complete {
            for (k, part) in s.parts.iter().enumerate().filter(|(_, p)| p.complete) {
                let _ = write!(
                    out,
                    "#EXT-X-PART:DURATION={:.5},URI=\"{}\"",
                    part.duration,
                    part_uri(run, &r.name, s.msn, k)
                );
                out.push_str(if part.independent { ",INDEPENDENT=YES\n" } else { "\n" });
            }
        }
        if s.complete {
            if s.gap {
                out.push_str("#EXT-X-GAP\n");
            }
            let _ = write!(out, "#EXTINF:{:.5},\n{}\n", s.duration, segment_uri(run, &r.name, s.msn));
        }
    }
    if p.ended {
        out.push_str("#EXT-X-ENDLIST\n");
    } else if let Some(open) = r.open() {
        let _ = writeln!(
            out,
            "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"{}\"",
            part_uri(run, &r.name, open.msn, open.parts.len() - 1)
        );
    }
    for other in p.renditions.iter().filter(|o| o.name != r.name) {
        if let Some((msn, part)) = other.last_part() {
            let _ =
                writeln!(out, "#EXT-X-RENDITION-REPORT:URI=\"{}.m3u8\",LAST-MSN={msn},LAST-PART={part}", other.name);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn program_date_time_is_iso8601() {
        assert_eq!(pdt(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(pdt(1_795_000_000_123, 0), "2026-11-18T11:06:40.123Z");
        assert_eq!(pdt(951_782_400_000, 1_500_000), "2000-02-29T00:00:01.500Z");
    }
}
