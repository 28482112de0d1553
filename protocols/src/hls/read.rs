//! What a player reads from a media playlist (RFC 8216 and its LL-HLS
//! additions): segments with their durations and program date-times, parts,
//! and whether the playlist has ended. Used by the load generator's viewers,
//! against Tidecast and against other servers, so it takes any server's
//! playlist and ignores what it does not know.

/// One media segment as listed.
#[derive(Debug, Clone, PartialEq)]
pub struct ListedSegment {
    /// Media sequence number.
    pub msn: u64,
    /// URI as written (relative to the playlist).
    pub uri: String,
    /// EXTINF duration, seconds.
    pub duration: f64,
    /// EXT-X-PROGRAM-DATE-TIME, milliseconds since the Unix epoch, when the
    /// segment (or an earlier one it can be derived from) carries one.
    pub date_ms: Option<i64>,
}

/// One partial segment as listed.
#[derive(Debug, Clone, PartialEq)]
pub struct ListedPart {
    /// The segment it belongs to.
    pub msn: u64,
    /// Its index within that segment.
    pub index: u32,
    /// URI as written.
    pub uri: String,
    /// DURATION, seconds.
    pub duration: f64,
    /// Wall-clock end of the part's media, where a date-time is known.
    pub end_ms: Option<i64>,
}

/// A parsed media playlist.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MediaPlaylist {
    /// EXT-X-TARGETDURATION, seconds.
    pub target_duration: f64,
    /// EXT-X-MEDIA-SEQUENCE.
    pub media_sequence: u64,
    /// Complete segments, oldest first.
    pub segments: Vec<ListedSegment>,
    /// Parts, oldest first, including those of the segment still open.
    pub parts: Vec<ListedPart>,
    /// EXT-X-PART-INF PART-TARGET, seconds, for LL-HLS playlists.
    pub part_target: Option<f64>,
    /// EXT-X-ENDLIST seen.
    pub ended: bool,
}

impl MediaPlaylist {
    /// The `(msn, part)` a blocking reload should ask for next: the part after
    /// the last one listed, or the first part of the next segment when the
    /// last listed part closed its segment.
    pub fn next_part(&self) -> Option<(u64, u32)> {
        let last = self.parts.last()?;
        let closed = self.segments.last().is_some_and(|s| s.msn == last.msn);
        Some(if closed { (last.msn.saturating_add(1), 0) } else { (last.msn, last.index.saturating_add(1)) })
    }
}

/// Why a playlist was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReadError {
    /// No `#EXTM3U` first line.
    #[error("not a playlist (no #EXTM3U)")]
    NotAPlaylist,
    /// A tag's value did not parse.
    #[error("bad {0}")]
    Bad(&'static str),
}

/// Parses a media playlist.
pub fn media_playlist(text: &str) -> Result<MediaPlaylist, ReadError> {
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    if lines.next() != Some("#EXTM3U") {
        return Err(ReadError::NotAPlaylist);
    }
    let mut p = MediaPlaylist::default();
    let mut msn: Option<u64> = None;
    let mut duration: Option<f64> = None;
    let mut date_ms: Option<i64> = None;
    // Wall-clock start of the next segment, carried forward from the last date.
    let mut next_start: Option<i64> = None;
    let mut part_index = 0u32;
    let mut part_clock: Option<i64> = None;
    for line in lines {
        if let Some(v) = line.strip_prefix("#EXT-X-TARGETDURATION:") {
            p.target_duration = v.parse().map_err(|_| ReadError::Bad("EXT-X-TARGETDURATION"))?;
        } else if let Some(v) = line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
            p.media_sequence = v.parse().map_err(|_| ReadError::Bad("EXT-X-MEDIA-SEQUENCE"))?;
        } else if let Some(v) = line.strip_prefix("#EXT-X-PART-INF:") {
            p.part_target = attr(v, "PART-TARGET").and_then(|t| t.parse().ok());
        } else if let Some(v) = line.strip_prefix("#EXT-X-PROGRAM-DATE-TIME:") {
            date_ms = Some(parse_date(v).ok_or(ReadError::Bad("EXT-X-PROGRAM-DATE-TIME"))?);
            next_start = date_ms;
            part_clock = date_ms;
        } else if let Some(v) = line.strip_prefix("#EXT-X-PART:") {
            let seq = msn.unwrap_or(p.media_sequence);
            let d: f64 = attr(v, "DURATION").and_then(|d| d.parse().ok()).ok_or(ReadError::Bad("EXT-X-PART"))?;
            let uri = attr(v, "URI").ok_or(ReadError::Bad("EXT-X-PART"))?;
            let end_ms = part_clock.map(|c| c.saturating_add((d * 1000.0).round() as i64));
            part_clock = end_ms;
            p.parts.push(ListedPart { msn: seq, index: part_index, uri: uri.to_owned(), duration: d, end_ms });
            part_index = part_index.saturating_add(1);
        } else if let Some(v) = line.strip_prefix("#EXTINF:") {
            let d = v.split(',').next().unwrap_or("");
            duration = Some(d.trim().parse().map_err(|_| ReadError::Bad("EXTINF"))?);
        } else if line == "#EXT-X-ENDLIST" {
            p.ended = true;
        } else if !line.starts_with('#') {
            let seq = msn.unwrap_or(p.media_sequence);
            let d = duration.take().ok_or(ReadError::Bad("segment without EXTINF"))?;
            let start = date_ms.take().or(next_start);
            p.segments.push(ListedSegment { msn: seq, uri: line.to_owned(), duration: d, date_ms: start });
            next_start = start.map(|s| s.saturating_add((d * 1000.0).round() as i64));
            part_clock = next_start;
            msn = Some(seq.saturating_add(1));
            part_index = 0;
        }
    }
    Ok(p)
}

/// An attribute's value from an attribute list, quotes removed.
fn attr<'a>(list: &'a str, key: &str) -> Option<&'a str> {
    let mut rest = list;
    while !rest.is_empty() {
        let (name, after) = rest.split_once('=')?;
        let (value, tail) = match after.strip_prefix('"') {
            Some(q) => {
                let end = q.find('"')?;
                (&q[..end], q[end + 1..].trim_start_matches(','))
            }
            None => match after.split_once(',') {
                Some((v, t)) => (v, t),
                None => (after, ""),
            },
        };
        if name.trim() == key {
            return Some(value);
        }
        rest = tail;
    }
    None
}

/// `YYYY-MM-DDTHH:MM:SS[.fff](Z|+hh:mm)` to Unix milliseconds.
fn parse_date(s: &str) -> Option<i64> {
    let s = s.trim();
    let (date, time) = s.split_once('T')?;
    let mut d = date.splitn(3, '-').map(|x| x.parse::<i64>().ok());
    let (y, mo, da) = (d.next()??, d.next()??, d.next()??);
    let (clock, offset_min) = if let Some(c) = time.strip_suffix('Z') {
        (c, 0)
    } else {
        let at = time.rfind(['+', '-'])?;
        let (c, off) = time.split_at(at);
        let sign = if off.starts_with('-') { -1 } else { 1 };
        let (oh, om) = off[1..].split_once(':').unwrap_or((&off[1..], "0"));
        let (oh, om) = (oh.parse::<i64>().ok()?, om.parse::<i64>().ok()?);
        if !(0..24).contains(&oh) || !(0..60).contains(&om) {
            return None;
        }
        (c, sign * (oh * 60 + om))
    };
    let mut t = clock.splitn(3, ':');
    let (h, mi) = (t.next()?.parse::<i64>().ok()?, t.next()?.parse::<i64>().ok()?);
    let sec: f64 = t.next()?.parse().ok()?;
    let sane = (0..=9999).contains(&y) && (0..24).contains(&h) && (0..60).contains(&mi);
    if !sane || !(1..=12).contains(&mo) || !(1..=31).contains(&da) || !(0.0..61.0).contains(&sec) {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doy = (153 * (if mo > 2 { mo - 3 } else { mo + 9 }) + 2) / 5 + da - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let ms = ((days * 86_400 + h * 3600 + mi * 60 - offset_min * 60) as f64 + sec) * 1000.0;
    ms.is_finite().then_some(ms.round() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LL: &str = "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXT-X-PART-INF:PART-TARGET=0.200\n\
        #EXT-X-MEDIA-SEQUENCE:7\n#EXT-X-MAP:URI=\"i.mp4\"\n\
        #EXT-X-PROGRAM-DATE-TIME:2026-11-21T20:09:02.867Z\n\
        #EXT-X-PART:DURATION=0.5,URI=\"a-7.0.m4s\",INDEPENDENT=YES\n\
        #EXT-X-PART:DURATION=0.5,URI=\"a-7.1.m4s\"\n#EXTINF:1.0,\na-7.m4s\n\
        #EXT-X-PART:DURATION=0.2,URI=\"a-8.0.m4s\",INDEPENDENT=YES\n\
        #EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"a-8.1.m4s\"\n";

    #[test]
    fn reads_segments_parts_and_their_clock() {
        let p = media_playlist(LL).unwrap();
        assert_eq!((p.media_sequence, p.target_duration, p.part_target), (7, 1.0, Some(0.2)));
        assert_eq!(p.segments.len(), 1);
        let start = p.segments[0].date_ms.unwrap();
        assert_eq!(start, 1_795_291_742_867);
        assert_eq!(p.parts.len(), 3);
        assert_eq!((p.parts[1].msn, p.parts[1].index, p.parts[1].end_ms), (7, 1, Some(start + 1000)));
        assert_eq!((p.parts[2].msn, p.parts[2].index, p.parts[2].end_ms), (8, 0, Some(start + 1200)));
        assert_eq!(p.next_part(), Some((8, 1)));
        let closed = media_playlist(&LL.replace("#EXT-X-PART:DURATION=0.2,URI=\"a-8.0.m4s\",INDEPENDENT=YES\n", ""));
        assert_eq!(closed.unwrap().next_part(), Some((8, 0)));
    }

    #[test]
    fn reads_plain_playlists_and_refuses_junk() {
        let plain = "#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXTINF:4.000,\ns0.ts\n#EXTINF:3.5,\ns1.ts\n#EXT-X-ENDLIST\n";
        let p = media_playlist(plain).unwrap();
        assert_eq!(p.segments.iter().map(|s| s.msn).collect::<Vec<_>>(), vec![0, 1]);
        assert!(p.ended && p.parts.is_empty() && p.next_part().is_none());
        assert_eq!(media_playlist("<html>"), Err(ReadError::NotAPlaylist));
        assert_eq!(media_playlist("#EXTM3U\ns0.ts\n"), Err(ReadError::Bad("segment without EXTINF")));
        assert!(media_playlist("#EXTM3U\n#EXT-X-PROGRAM-DATE-TIME:yesterday\n").is_err());
        assert_eq!(parse_date("2026-11-21T21:09:02.867+01:00"), Some(1_795_291_742_867));
    }
}
