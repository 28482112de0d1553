//! What Tidecast checks in an SDP offer before handing it to str0m, and the
//! trickle ICE fragments of WHIP/WHEP `PATCH` requests (RFC 8840).
//!
//! str0m parses and answers the offer; this decides, in terms a client can
//! act on, whether the offer can work at all: does it send (WHIP) or receive
//! (WHEP) media, in codecs this side has.

use std::fmt;

/// Which way an m-line lets media flow, from the offerer's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// The offerer sends and receives.
    SendRecv,
    /// The offerer only sends.
    SendOnly,
    /// The offerer only receives.
    RecvOnly,
    /// No media flows.
    Inactive,
}

impl Direction {
    /// Whether the offerer sends on this line.
    pub fn sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }

    /// Whether the offerer receives on this line.
    pub fn receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }
}

/// One m-line of an offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaLine {
    /// `audio`, `video` or `application`.
    pub kind: String,
    /// The codec names of its rtpmap lines, lower case (`h264`, `opus`...).
    pub codecs: Vec<String>,
    /// Its direction.
    pub direction: Direction,
    /// Its `a=mid`, if any.
    pub mid: Option<String>,
}

/// Why an offer cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OfferProblem {
    /// Not an SDP session description.
    Malformed(String),
    /// No m-line carries media in the needed direction in a codec we have.
    NoSupportedCodec(String),
}

impl fmt::Display for OfferProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OfferProblem::Malformed(why) => write!(f, "malformed SDP offer: {why}"),
            OfferProblem::NoSupportedCodec(why) => write!(f, "no usable media in the offer: {why}"),
        }
    }
}

/// Largest offer accepted (browsers send 4 to 10 KiB).
pub const MAX_OFFER: usize = 64 * 1024;

/// Reads the m-lines of an offer.
pub fn media_lines(sdp: &str) -> Result<Vec<MediaLine>, OfferProblem> {
    if sdp.len() > MAX_OFFER {
        return Err(OfferProblem::Malformed(format!("larger than {MAX_OFFER} bytes")));
    }
    if !sdp.trim_start().starts_with("v=0") {
        return Err(OfferProblem::Malformed("it does not start with v=0".into()));
    }
    let mut session_direction = Direction::SendRecv;
    let mut lines: Vec<MediaLine> = Vec::new();
    let mut explicit = false;
    for raw in sdp.lines() {
        let line = raw.trim_end_matches('\r');
        if let Some(m) = line.strip_prefix("m=") {
            if let (Some(last), false) = (lines.last_mut(), explicit) {
                last.direction = session_direction;
            }
            explicit = false;
            let kind = m.split(' ').next().unwrap_or_default().to_ascii_lowercase();
            lines.push(MediaLine { kind, codecs: Vec::new(), direction: session_direction, mid: None });
            continue;
        }
        let dir = match line {
            "a=sendrecv" => Some(Direction::SendRecv),
            "a=sendonly" => Some(Direction::SendOnly),
            "a=recvonly" => Some(Direction::RecvOnly),
            "a=inactive" => Some(Direction::Inactive),
            _ => None,
        };
        match (lines.last_mut(), dir) {
            (None, Some(d)) => session_direction = d,
            (Some(last), Some(d)) => {
                last.direction = d;
                explicit = true;
            }
            (Some(last), None) => {
                if let Some(mid) = line.strip_prefix("a=mid:") {
                    last.mid = Some(mid.trim().to_owned());
                } else if let Some(map) = line.strip_prefix("a=rtpmap:") {
                    let name = map.split(' ').nth(1).and_then(|enc| enc.split('/').next()).unwrap_or_default();
                    let name = name.to_ascii_lowercase();
                    if !name.is_empty() && !last.codecs.contains(&name) {
                        last.codecs.push(name);
                    }
                }
            }
            (None, None) => {}
        }
    }
    if lines.is_empty() {
        return Err(OfferProblem::Malformed("it has no m-line".into()));
    }
    Ok(lines)
}

/// Codecs a WHIP publisher may send.
pub const INGEST_CODECS: &[&str] = &["h264", "vp8", "vp9", "av1", "opus"];
/// Codecs a WHEP viewer is sent.
pub const PLAYBACK_CODECS: &[&str] = &["h264", "opus"];

/// Checks that an offer sends (`publish`) or receives media in one of
/// `codecs`; returns the m-lines.
pub fn check_offer(sdp: &str, publish: bool, codecs: &[&str]) -> Result<Vec<MediaLine>, OfferProblem> {
    let lines = media_lines(sdp)?;
    let usable = lines.iter().any(|l| {
        let flows = if publish { l.direction.sends() } else { l.direction.receives() };
        flows && l.codecs.iter().any(|c| codecs.contains(&c.as_str()))
    });
    if !usable {
        let offered: Vec<String> = lines.iter().flat_map(|l| l.codecs.iter().cloned()).collect();
        let want = if publish { "sends" } else { "receives" };
        return Err(OfferProblem::NoSupportedCodec(format!(
            "no m-line {want} {} (offered: {})",
            codecs.join("/"),
            if offered.is_empty() { "nothing".into() } else { offered.join(", ") }
        )));
    }
    Ok(lines)
}

/// A trickle ICE fragment (`application/trickle-ice-sdpfrag`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Trickle {
    /// The ICE ufrag the fragment names, if any (an ICE restart changes it).
    pub ufrag: Option<String>,
    /// Candidate lines, without the `a=` prefix.
    pub candidates: Vec<String>,
    /// Whether the client has no more candidates.
    pub end_of_candidates: bool,
}

/// Reads a trickle ICE fragment.
pub fn parse_trickle(fragment: &str) -> Result<Trickle, OfferProblem> {
    if fragment.len() > MAX_OFFER {
        return Err(OfferProblem::Malformed(format!("fragment larger than {MAX_OFFER} bytes")));
    }
    let mut t = Trickle::default();
    for raw in fragment.lines() {
        let line = raw.trim_end_matches('\r');
        if let Some(c) = line.strip_prefix("a=candidate:") {
            t.candidates.push(format!("candidate:{c}"));
        } else if let Some(u) = line.strip_prefix("a=ice-ufrag:") {
            t.ufrag = Some(u.to_owned());
        } else if line == "a=end-of-candidates" {
            t.end_of_candidates = true;
        }
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=sendonly\r\na=rtpmap:111 opus/48000/2\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 96 97\r\na=mid:1\r\na=sendonly\r\na=rtpmap:96 VP8/90000\r\na=rtpmap:97 rtx/90000\r\n";

    #[test]
    fn reads_directions_and_codecs() {
        let lines = media_lines(OFFER).unwrap();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1].codecs, vec!["vp8", "rtx"]);
        assert!(lines.iter().all(|l| l.direction == Direction::SendOnly));
        assert!(check_offer(OFFER, true, INGEST_CODECS).is_ok());
        let err = check_offer(OFFER, false, PLAYBACK_CODECS).unwrap_err();
        assert!(err.to_string().contains("receives"), "{err}");
    }

    #[test]
    fn refuses_what_is_not_an_offer() {
        assert!(matches!(media_lines("hello"), Err(OfferProblem::Malformed(_))));
        assert!(matches!(media_lines("v=0\r\ns=-\r\n"), Err(OfferProblem::Malformed(_))));
        let pcmu = "v=0\r\nm=audio 9 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";
        assert!(matches!(check_offer(pcmu, true, INGEST_CODECS), Err(OfferProblem::NoSupportedCodec(_))));
    }

    #[test]
    fn reads_trickle_fragments() {
        let t = parse_trickle(
            "a=ice-ufrag:abcd\r\na=ice-pwd:x\r\nm=audio 9 RTP/AVP 0\r\na=mid:0\r\n\
             a=candidate:1 1 udp 2130706431 192.0.2.1 50000 typ host\r\na=end-of-candidates\r\n",
        )
        .unwrap();
        assert_eq!(t.ufrag.as_deref(), Some("abcd"));
        assert_eq!(t.candidates, vec!["candidate:1 1 udp 2130706431 192.0.2.1 50000 typ host"]);
        assert!(t.end_of_candidates);
    }
}
