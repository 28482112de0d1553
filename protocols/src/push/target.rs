//! Push targets: where a stream is restreamed or recorded, parsed from the
//! URL or path an operator gives (a stream's `push_targets`, the pushes
//! API), after its variables are filled in.
//!
//! Built: `rtmp://HOST[:PORT]/APP/NAME` (the first path segment is the
//! application, the rest the stream name or key, as ffmpeg and OBS split
//! it), `srt://HOST:PORT?streamid=&passphrase=&latency=` (MPEG-TS, as
//! the caller), `rtmps://` (the same inside TLS),
//! `whip+http(s)://HOST/PATH?bearer=TOKEN` (WebRTC, the token
//! sent as `Authorization: Bearer` and taken out of the URL), recordings
//! into fragmented MP4, MPEG-TS, FLV or HLS files (`recordings/$stream.mp4`,
//! under the recording root) and `s3://BUCKET/KEY` uploads of them. Named
//! and refused with a clear reason until they are built: HLS to S3 and the
//! `.mkv` container.

use std::fmt;
use std::path::{Component, Path, PathBuf};

/// A parsed push target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Publish over RTMP.
    Rtmp(RtmpTarget),
    /// Send MPEG-TS over SRT, as the caller.
    Srt(SrtTarget),
    /// Record into a file.
    File(FileTarget),
    /// Publish over WebRTC to a WHIP endpoint.
    Whip(WhipTarget),
}

/// A WHIP endpoint to publish to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WhipTarget {
    /// The endpoint's `http://` or `https://` URL, without the token.
    pub url: String,
    /// The bearer token (`?bearer=`), if any.
    pub token: Option<String>,
}

/// An SRT listener to call and send the stream to as MPEG-TS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrtTarget {
    /// `host:port` to call.
    pub addr: String,
    /// The `streamid` to send, if any.
    pub streamid: Option<String>,
    /// The AES passphrase (10 to 79 bytes), if any.
    pub passphrase: Option<String>,
    /// The TSBPD latency to ask for, ms.
    pub latency_ms: u32,
}

/// An RTMP server to publish to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtmpTarget {
    /// `host:port` to connect to.
    pub addr: String,
    /// `rtmp://host[:port]/app`, sent in `connect`.
    pub tc_url: String,
    /// The application.
    pub app: String,
    /// The stream name or key, with its query if any.
    pub name: String,
    /// `rtmps://`: RTMP inside TLS, the server's certificate checked.
    pub tls: bool,
}

/// A file to record into, inside the recording root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileTarget {
    /// The path, already joined to the root.
    pub path: PathBuf,
    /// The container, from the file name's extension.
    pub container: Container,
    /// `?split=SECONDS`: a new file at the first keyframe after each this
    /// many seconds of media; the path then numbers them with
    /// `$segmentCounter`.
    pub split: Option<u32>,
    /// For HLS on disk (`.m3u8`): the playlist that lists the segments
    /// (MPEG-TS files next to it), rewritten as each one is finished.
    pub playlist: Option<PathBuf>,
    /// For `s3://`: where each finished file is uploaded. The file is
    /// recorded first under the root's `.s3/BUCKET/` folder, and kept.
    pub upload: Option<S3Dest>,
    /// `?faststart` (MP4 only): each finished file is rewritten with its
    /// index in front (progressive MP4, for download and seeking over
    /// plain HTTP); while it is written it stays fragmented.
    pub faststart: bool,
    /// How many finished files of a split recording are kept.
    pub retention: Retention,
}

/// How long a split recording keeps its finished files (MistServer's
/// `maxEntries`, `targetAge` and `nounlink`): older ones leave the HLS
/// playlist and are deleted. Unset: every file is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Retention {
    /// `maxEntries`: at most this many finished files.
    pub max_entries: Option<u32>,
    /// `targetAge`: files that ended more than this many seconds of media
    /// before the newest one ended go.
    pub target_age: Option<u32>,
    /// `nounlink`: files that go leave the playlist but stay on disk.
    pub keep_files: bool,
}

impl Retention {
    /// Whether it ever lets a file go.
    pub fn is_set(&self) -> bool {
        self.max_entries.is_some() || self.target_age.is_some()
    }
}

/// An S3 object a recording is uploaded to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Dest {
    /// The bucket.
    pub bucket: String,
    /// The object key; `$segmentCounter` numbers split files.
    pub key: String,
}

impl S3Dest {
    /// The key of file number `n`.
    pub fn key_for(&self, n: u64) -> String {
        self.key.replace(SEGMENT_COUNTER, &n.to_string())
    }
}

impl FileTarget {
    /// The path of file number `n` (`$segmentCounter` filled in).
    pub fn path_for(&self, n: u64) -> PathBuf {
        PathBuf::from(self.path.to_string_lossy().replace(SEGMENT_COUNTER, &n.to_string()))
    }
}

/// A recording's container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Container {
    /// FLV (`.flv`).
    Flv,
    /// Fragmented MP4 (`.mp4`): video and audio in one file, a fragment
    /// per GOP.
    Mp4,
    /// MPEG-TS (`.ts`): the form HTTP-TS viewers get.
    Ts,
    /// HLS on disk (`.m3u8`): MPEG-TS segments and their playlist, a VOD
    /// playlist once the stream ends.
    Hls,
}

impl Container {
    /// Its name in triggers: the extension.
    pub fn as_str(self) -> &'static str {
        match self {
            Container::Flv => "flv",
            Container::Mp4 => "mp4",
            Container::Ts => "ts",
            Container::Hls => "m3u8",
        }
    }
}

/// Why a target cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetError {
    /// Not a target this server understands.
    Invalid(String),
    /// A kind named by the push-target contract that is not built yet.
    NotBuilt(String),
    /// A file path outside the recording root.
    OutsideRoot(String),
}

impl fmt::Display for TargetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetError::Invalid(why) => write!(f, "invalid push target: {why}"),
            TargetError::NotBuilt(what) => write!(f, "{what} push targets are not supported yet"),
            TargetError::OutsideRoot(path) => write!(f, "{path:?} is outside the recording directory"),
        }
    }
}

impl std::error::Error for TargetError {}

/// The variable a split recording numbers its files with.
pub const SEGMENT_COUNTER: &str = "$segmentCounter";

/// The segment length of HLS on disk without `split`, seconds.
pub const HLS_SEGMENT_SECONDS: u32 = 6;

/// Longest `split` accepted, seconds (a day).
pub const MAX_SPLIT_SECONDS: u32 = 86_400;

/// Longest target accepted, in bytes.
pub const MAX_TARGET_LEN: usize = 2048;

/// What a target's variables stand for.
#[derive(Debug, Clone, Default)]
pub struct Vars<'a> {
    /// `$stream`.
    pub stream: &'a str,
    /// `$tenant` (empty without one).
    pub tenant: &'a str,
    /// `$datetime`: when the push started, `YYYY.MM.DD.HH.MM.SS` (UTC, as
    /// MistServer writes it).
    pub datetime: &'a str,
    /// `$segmentCounter`; `None` leaves it for the recording to fill in
    /// per file (`split`).
    pub segment: Option<u64>,
}

/// `template` with `$stream`, `$tenant`, `$datetime` and `$segmentCounter`
/// filled in. Other `$` sequences stay as they are.
pub fn expand(template: &str, vars: &Vars<'_>) -> String {
    let counted = match vars.segment {
        Some(n) => template.replace(SEGMENT_COUNTER, &n.to_string()),
        None => template.to_owned(),
    };
    counted.replace("$datetime", vars.datetime).replace("$tenant", vars.tenant).replace("$stream", vars.stream)
}

/// `target` for a log line: the values of its `bearer` and `passphrase`
/// parameters replaced by `***`.
pub fn redacted(target: &str) -> String {
    let Some((head, query)) = target.split_once('?') else { return target.to_owned() };
    let parts: Vec<String> = query
        .split('&')
        .map(|kv| match kv.split_once('=') {
            Some((k @ ("bearer" | "passphrase"), _)) => format!("{k}=***"),
            _ => kv.to_owned(),
        })
        .collect();
    format!("{head}?{}", parts.join("&"))
}

/// `YYYY.MM.DD.HH.MM.SS` for a Unix time (UTC).
pub fn datetime(unix: u64) -> String {
    let (days, secs) = (unix / 86_400, unix % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}.{month:02}.{day:02}.{:02}.{:02}.{:02}", secs / 3600, secs % 3600 / 60, secs % 60)
}

impl Target {
    /// What kind of push it makes: `rtmp`, `srt`, `whip` or `file` (a
    /// recording, uploaded or not).
    pub fn kind(&self) -> &'static str {
        match self {
            Target::Rtmp(_) => "rtmp",
            Target::Srt(_) => "srt",
            Target::File(_) => "file",
            Target::Whip(_) => "whip",
        }
    }

    /// Parses an expanded target; file paths are resolved inside `root`.
    pub fn parse(target: &str, root: &Path) -> Result<Target, TargetError> {
        if target.len() > MAX_TARGET_LEN {
            return Err(TargetError::Invalid(format!("longer than {MAX_TARGET_LEN} bytes")));
        }
        if target.chars().any(char::is_control) {
            return Err(TargetError::Invalid("control characters".into()));
        }
        let lower = target.to_ascii_lowercase();
        if lower.starts_with("rtmp://") {
            return rtmp(&target["rtmp://".len()..], false).map(Target::Rtmp);
        }
        if lower.starts_with("rtmps://") {
            return rtmp(&target["rtmps://".len()..], true).map(Target::Rtmp);
        }
        if lower.starts_with("srt://") {
            return srt(&target["srt://".len()..]).map(Target::Srt);
        }
        if lower.starts_with("s3://") {
            return s3(&target["s3://".len()..], root).map(Target::File);
        }
        for scheme in ["whip+http://", "whip+https://"] {
            if lower.starts_with(scheme) {
                return whip(&target["whip+".len()..]).map(Target::Whip);
            }
        }
        let path = match lower.strip_prefix("file://") {
            Some(_) => &target["file://".len()..],
            None if lower.contains("://") => {
                return Err(TargetError::Invalid(format!("unknown scheme in {target:?}")));
            }
            None => target,
        };
        file(path, root).map(Target::File)
    }
}

/// `HOST[:PORT]/APP/NAME` after `rtmp://` (port 1935) or `rtmps://` (443).
fn rtmp(rest: &str, tls: bool) -> Result<RtmpTarget, TargetError> {
    let (scheme, default_port) = if tls { ("rtmps", 443) } else { ("rtmp", 1935) };
    let needs = || TargetError::Invalid(format!("{scheme}:// needs /APP/NAME"));
    let (authority, path) = rest.split_once('/').ok_or_else(needs)?;
    let (host, port) =
        host_port(authority, Some(default_port)).map_err(|e| TargetError::Invalid(format!("{scheme}:// {e}")))?;
    let (app, name) = path.split_once('/').ok_or_else(needs)?;
    if app.is_empty() || name.is_empty() {
        return Err(needs());
    }
    let authority = if port == default_port { host.clone() } else { format!("{host}:{port}") };
    Ok(RtmpTarget {
        addr: format!("{host}:{port}"),
        tc_url: format!("{scheme}://{authority}/{app}"),
        app: app.to_owned(),
        name: name.to_owned(),
        tls,
    })
}

/// `http(s)://HOST[:PORT]/PATH[?QUERY]`, the `bearer` parameter taken out
/// of the query as the token.
fn whip(url: &str) -> Result<WhipTarget, TargetError> {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let (before_fragment, _) = rest.split_once('#').unwrap_or((rest, ""));
    let (authority_path, query) = before_fragment.split_once('?').unwrap_or((before_fragment, ""));
    let (authority, path) = authority_path.split_once('/').unwrap_or((authority_path, ""));
    let default = if scheme.eq_ignore_ascii_case("https") { 443 } else { 80 };
    let (host, port) =
        host_port(authority, Some(default)).map_err(|e| TargetError::Invalid(format!("whip+{scheme}:// {e}")))?;
    let mut token = None;
    let mut kept = Vec::new();
    for kv in query.split('&').filter(|kv| !kv.is_empty()) {
        match kv.split_once('=') {
            Some(("bearer", v)) => {
                let v = percent_decode(v);
                if v.is_empty() || v.chars().any(|c| c.is_whitespace()) {
                    return Err(TargetError::Invalid("a WHIP bearer token is one word, not empty".into()));
                }
                token = Some(v);
            }
            _ => kept.push(kv),
        }
    }
    let mut url = format!("{}://{host}:{port}/{path}", scheme.to_ascii_lowercase());
    if !kept.is_empty() {
        url.push('?');
        url.push_str(&kept.join("&"));
    }
    Ok(WhipTarget { url, token })
}

/// The host (`[v6]` kept in brackets) and port of a URL's authority, or
/// why it has none.
fn host_port(authority: &str, default_port: Option<u16>) -> Result<(String, u16), String> {
    if authority.is_empty() || authority.contains('@') {
        return Err("needs a host (and no user info)".into());
    }
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => {
            let (h, after) = v6.split_once(']').ok_or("has an unclosed [ in its host")?;
            (format!("[{h}]"), after.strip_prefix(':'))
        }
        None => match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), Some(p)),
            None => (authority.to_owned(), None),
        },
    };
    if host.is_empty() || host == "[]" {
        return Err("needs a host".into());
    }
    let port = match (port, default_port) {
        (Some(p), _) => p.parse().ok().filter(|&p: &u16| p > 0).ok_or_else(|| format!("has a bad port {p:?}"))?,
        (None, Some(d)) => d,
        (None, None) => return Err("needs a port".into()),
    };
    Ok((host, port))
}

fn srt(rest: &str) -> Result<SrtTarget, TargetError> {
    let (authority, query) = rest.split_once('?').unwrap_or((rest, ""));
    let authority = authority.trim_end_matches('/');
    let (host, port) = host_port(authority, None).map_err(|e| TargetError::Invalid(format!("srt:// {e}")))?;
    let mut t = SrtTarget { addr: format!("{host}:{port}"), streamid: None, passphrase: None, latency_ms: 120 };
    for kv in query.split('&').filter(|kv| !kv.is_empty()) {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        let v = percent_decode(v);
        match k {
            "streamid" => t.streamid = Some(v).filter(|s| !s.is_empty() && s.len() <= 512),
            "passphrase" => {
                if !(10..=79).contains(&v.len()) {
                    return Err(TargetError::Invalid("srt:// passphrase must be 10 to 79 bytes".into()));
                }
                t.passphrase = Some(v);
            }
            "latency" => {
                t.latency_ms =
                    v.parse().ok().filter(|l| (20..=10_000).contains(l)).ok_or_else(|| {
                        TargetError::Invalid(format!("srt:// latency must be 20 to 10000 ms, not {v:?}"))
                    })?;
            }
            "mode" if v == "caller" => {}
            "mode" => return Err(TargetError::Invalid("srt:// pushes call (mode=caller)".into())),
            other => return Err(TargetError::Invalid(format!("unknown srt:// parameter {other:?}"))),
        }
    }
    Ok(t)
}

/// `%XX` escapes decoded (a `streamid` such as `#!::r=x,m=publish` comes
/// escaped in URLs); anything malformed stays as it is.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `s3://BUCKET/KEY[?split=N]`: recorded under `ROOT/.s3/BUCKET/KEY`, then
/// uploaded to the key.
fn s3(rest: &str, root: &Path) -> Result<FileTarget, TargetError> {
    let (bucket, key_query) =
        rest.split_once('/').ok_or_else(|| TargetError::Invalid("s3:// needs BUCKET/KEY".into()))?;
    let valid_bucket = (3..=63).contains(&bucket.len())
        && bucket.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        && !bucket.starts_with(['.', '-'])
        && !bucket.ends_with(['.', '-']);
    if !valid_bucket {
        return Err(TargetError::Invalid(format!("s3:// bucket {bucket:?} is not a valid bucket name")));
    }
    let key = key_query.split_once('?').map_or(key_query, |(k, _)| k);
    if key.is_empty() || key.starts_with('/') || key.split('/').any(|seg| seg == ".." || seg == ".") {
        return Err(TargetError::Invalid(format!("s3:// key {key:?} must be a relative name without . or .. parts")));
    }
    let mut f = file(&format!(".s3/{bucket}/{key_query}"), root)?;
    if f.retention.is_set() {
        return Err(TargetError::NotBuilt("maxEntries or targetAge on s3://".into()));
    }
    if f.container == Container::Hls {
        return Err(TargetError::NotBuilt("HLS (.m3u8) to s3://".into()));
    }
    f.upload = Some(S3Dest { bucket: bucket.to_owned(), key: key.to_owned() });
    Ok(f)
}

fn file(target: &str, root: &Path) -> Result<FileTarget, TargetError> {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut split = None;
    let mut faststart = false;
    let mut retention = Retention::default();
    let count = |k: &str, v: &str, max: u32| {
        v.parse::<u32>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| TargetError::Invalid(format!("{k} must be 1 to {max}, not {v:?}")))
    };
    for kv in query.split('&').filter(|kv| !kv.is_empty()) {
        match kv.split_once('=').unwrap_or((kv, "1")) {
            ("faststart", "1" | "true") => faststart = true,
            ("faststart", "0" | "false") => faststart = false,
            ("faststart", v) => return Err(TargetError::Invalid(format!("faststart is 1 or 0, not {v:?}"))),
            ("maxEntries", v) => retention.max_entries = Some(count("maxEntries", v, 1_000_000)?),
            ("targetAge", v) => retention.target_age = Some(count("targetAge", v, 365 * 86_400)?),
            ("nounlink", "1" | "true") => retention.keep_files = true,
            ("nounlink", "0" | "false") => retention.keep_files = false,
            ("nounlink", v) => return Err(TargetError::Invalid(format!("nounlink is 1 or 0, not {v:?}"))),
            ("split", v) => {
                let secs = v.parse::<u32>().ok().filter(|s| (1..=MAX_SPLIT_SECONDS).contains(s));
                split = Some(secs.ok_or_else(|| {
                    TargetError::Invalid(format!("split must be 1 to {MAX_SPLIT_SECONDS} seconds, not {v:?}"))
                })?);
            }
            _ => return Err(TargetError::Invalid(format!("unknown recording parameter {kv:?}"))),
        }
    }
    let p = Path::new(path);
    let ext = p.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).unwrap_or_default();
    let container = match ext.as_str() {
        "flv" => Container::Flv,
        "mp4" => Container::Mp4,
        "ts" => Container::Ts,
        "m3u8" => Container::Hls,
        "mkv" => return Err(TargetError::NotBuilt(format!(".{ext} recording"))),
        _ => return Err(TargetError::Invalid(format!("{path:?}: a recording needs a .mp4, .ts, .m3u8 or .flv name"))),
    };
    if retention.is_set() && split.is_none() && container != Container::Hls {
        return Err(TargetError::Invalid("maxEntries and targetAge apply to split recordings (?split=)".into()));
    }
    if faststart && container != Container::Mp4 {
        return Err(TargetError::Invalid("faststart rewrites .mp4 recordings only".into()));
    }
    if container == Container::Hls {
        if path.contains(SEGMENT_COUNTER) {
            return Err(TargetError::Invalid(format!("a playlist's name has no {SEGMENT_COUNTER}: its segments do")));
        }
        split = split.or(Some(HLS_SEGMENT_SECONDS));
    } else if split.is_some() != path.contains(SEGMENT_COUNTER) {
        return Err(TargetError::Invalid(format!(
            "{SEGMENT_COUNTER} numbers the files of a split recording: use both or neither"
        )));
    }
    // Lexically inside the root: no `..`, and an absolute path must start
    // with the root. (The opener checks the real path again, for links.)
    if p.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(TargetError::OutsideRoot(path.into()));
    }
    let full = if p.is_absolute() {
        if !p.starts_with(root) {
            return Err(TargetError::OutsideRoot(path.into()));
        }
        p.to_path_buf()
    } else {
        root.join(p)
    };
    if full == root {
        return Err(TargetError::Invalid("a recording needs a file name".into()));
    }
    if container == Container::Hls {
        // Segments next to the playlist: NAME.m3u8 lists NAME-0.ts, ...
        let segments = full.with_extension("").to_string_lossy().into_owned() + "-" + SEGMENT_COUNTER + ".ts";
        let path = PathBuf::from(segments);
        return Ok(FileTarget { path, container, split, playlist: Some(full), upload: None, faststart, retention });
    }
    Ok(FileTarget { path: full, container, split, playlist: None, upload: None, faststart, retention })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT: &str = "/srv/tidecast/recordings";

    fn parse(s: &str) -> Result<Target, TargetError> {
        Target::parse(s, Path::new(ROOT))
    }

    #[test]
    fn rtmp_urls_split_as_ffmpeg_splits_them() {
        let Target::Rtmp(t) = parse("rtmp://a.rtmp.youtube.com/live2/abcd-efgh-ijkl").unwrap() else { panic!() };
        assert_eq!(t.addr, "a.rtmp.youtube.com:1935");
        assert_eq!(t.tc_url, "rtmp://a.rtmp.youtube.com/live2");
        assert_eq!((t.app.as_str(), t.name.as_str()), ("live2", "abcd-efgh-ijkl"));
        let Target::Rtmp(t) = parse("RTMP://127.0.0.1:19350/app/sub/key?x=1").unwrap() else { panic!() };
        assert_eq!((t.addr.as_str(), t.tc_url.as_str()), ("127.0.0.1:19350", "rtmp://127.0.0.1:19350/app"));
        assert_eq!(t.name, "sub/key?x=1");
        let Target::Rtmp(t) = parse("rtmp://[::1]:1936/live/x").unwrap() else { panic!() };
        assert_eq!((t.addr.as_str(), t.tls), ("[::1]:1936", false));
        let Target::Rtmp(t) = parse("rtmps://live-api-s.facebook.com/rtmp/KEY").unwrap() else { panic!() };
        assert_eq!(
            (t.addr.as_str(), t.tc_url.as_str(), t.tls),
            ("live-api-s.facebook.com:443", "rtmps://live-api-s.facebook.com/rtmp", true)
        );
        let Target::Rtmp(t) = parse("RTMPS://127.0.0.1:4443/app/k").unwrap() else { panic!() };
        assert_eq!((t.addr.as_str(), t.tc_url.as_str()), ("127.0.0.1:4443", "rtmps://127.0.0.1:4443/app"));
        assert!(matches!(parse("rtmps://host/app"), Err(TargetError::Invalid(e)) if e.contains("rtmps://")));
        for bad in [
            "rtmp://",
            "rtmp://host",
            "rtmp://host/app",
            "rtmp://host/app/",
            "rtmp://:1935/a/b",
            "rtmp://h:0/a/b",
            "rtmp://h:99999/a/b",
            "rtmp://u@h/a/b",
            "rtmp://[::1/a/b",
        ] {
            assert!(matches!(parse(bad), Err(TargetError::Invalid(_))), "{bad}");
        }
    }

    #[test]
    fn files_stay_inside_the_root() {
        let Target::File(f) = parse("$x/show.flv").unwrap() else { panic!() };
        assert_eq!((f.path.as_path(), f.container), (Path::new(ROOT).join("$x/show.flv").as_path(), Container::Flv));
        let Target::File(f) = parse("show.MP4").unwrap() else { panic!() };
        assert_eq!(f.container, Container::Mp4);
        let Target::File(f) = parse(&format!("file://{ROOT}/a/b.FLV")).unwrap() else { panic!() };
        assert_eq!(f.path, Path::new(ROOT).join("a/b.FLV"));
        for bad in ["../x.flv", "a/../../x.flv", "/etc/x.flv", "file:///tmp/x.flv", "/srv/tidecast/recordings2/x.flv"] {
            assert!(matches!(parse(bad), Err(TargetError::OutsideRoot(_))), "{bad}");
        }
        assert!(matches!(parse("notes.txt"), Err(TargetError::Invalid(_))));
        assert!(matches!(parse("ftp://host/x.flv"), Err(TargetError::Invalid(_))));
        assert!(matches!(parse("a\nb.flv"), Err(TargetError::Invalid(_))));
    }

    #[test]
    fn srt_urls_call_with_their_parameters() {
        let Target::Srt(t) =
            parse("srt://127.0.0.1:9000?streamid=%23!::r=x,m=publish&passphrase=0123456789&latency=200").unwrap()
        else {
            panic!()
        };
        assert_eq!(t.addr, "127.0.0.1:9000");
        assert_eq!(t.streamid.as_deref(), Some("#!::r=x,m=publish"));
        assert_eq!((t.passphrase.as_deref(), t.latency_ms), (Some("0123456789"), 200));
        let Target::Srt(t) = parse("SRT://[::1]:9000").unwrap() else { panic!() };
        assert_eq!((t.addr.as_str(), t.latency_ms, t.streamid), ("[::1]:9000", 120, None));
        for bad in [
            "srt://host",
            "srt://:9000",
            "srt://h:9000?passphrase=short",
            "srt://h:9000?latency=5",
            "srt://h:9000?mode=listener",
            "srt://h:9000?nope=1",
            "srt://h:0",
        ] {
            assert!(matches!(parse(bad), Err(TargetError::Invalid(_))), "{bad}");
        }
        // 79 characters but 80 bytes: refused (srt-tokio counts bytes).
        let long = format!("srt://h:9000?passphrase={}%C3%A9", "a".repeat(78));
        assert!(matches!(parse(&long), Err(TargetError::Invalid(_))));
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%zz%41"), "%zzA");
    }

    #[test]
    fn split_recordings_number_their_files() {
        let Target::File(f) = parse("$stream/part-$segmentCounter.mp4?split=5").unwrap() else { panic!() };
        assert_eq!(f.split, Some(5));
        assert_eq!(f.path_for(3), Path::new(ROOT).join("$stream/part-3.mp4"));
        for bad in [
            "a-$segmentCounter.mp4",
            "a.mp4?split=5",
            "a-$segmentCounter.mp4?split=0",
            "a-$segmentCounter.mp4?split=x",
            "a-$segmentCounter.mp4?split=5&nope=1",
        ] {
            assert!(matches!(parse(bad), Err(TargetError::Invalid(_))), "{bad}");
        }
    }

    #[test]
    fn retention_takes_mistservers_parameters() {
        let Target::File(f) = parse("dvr/$stream.m3u8?split=6&maxEntries=600&targetAge=3600&nounlink=1").unwrap()
        else {
            panic!()
        };
        let want = Retention { max_entries: Some(600), target_age: Some(3600), keep_files: true };
        assert_eq!(f.retention, want);
        let Target::File(f) = parse("r/a-$segmentCounter.ts?split=10&maxEntries=6").unwrap() else { panic!() };
        assert_eq!(f.retention.max_entries, Some(6));
        assert!(!f.retention.keep_files);
        for bad in ["a.mp4?maxEntries=3", "x-$segmentCounter.ts?split=1&maxEntries=0", "x.m3u8?targetAge=x"] {
            assert!(matches!(parse(bad), Err(TargetError::Invalid(_))), "{bad}");
        }
        assert!(matches!(parse("s3://recs/a-$segmentCounter.ts?split=5&maxEntries=2"), Err(TargetError::NotBuilt(_))));
    }

    #[test]
    fn faststart_is_for_mp4() {
        let Target::File(f) = parse("a.mp4?faststart").unwrap() else { panic!() };
        assert!(f.faststart);
        let Target::File(f) = parse("a-$segmentCounter.mp4?split=5&faststart=1").unwrap() else { panic!() };
        assert!(f.faststart && f.split == Some(5));
        let Target::File(f) = parse("a.mp4").unwrap() else { panic!() };
        assert!(!f.faststart);
        for bad in ["a.ts?faststart", "a.mp4?faststart=yes", "a.m3u8?faststart=1"] {
            assert!(matches!(parse(bad), Err(TargetError::Invalid(_))), "{bad}");
        }
    }

    #[test]
    fn hls_on_disk_is_ts_segments_beside_their_playlist() {
        let Target::File(f) = parse("dvr/$stream.m3u8").unwrap() else { panic!() };
        assert_eq!((f.container, f.split), (Container::Hls, Some(HLS_SEGMENT_SECONDS)));
        assert_eq!(f.playlist.as_deref(), Some(Path::new(ROOT).join("dvr/$stream.m3u8").as_path()));
        assert_eq!(f.path_for(4), Path::new(ROOT).join("dvr/$stream-4.ts"));
        let Target::File(f) = parse("dvr/x.m3u8?split=2").unwrap() else { panic!() };
        assert_eq!(f.split, Some(2));
        assert!(matches!(parse("dvr/x-$segmentCounter.m3u8"), Err(TargetError::Invalid(_))));
    }

    #[test]
    fn s3_targets_record_under_the_root_then_upload() {
        let Target::File(f) = parse("s3://recs/live/$stream-$segmentCounter.mp4?split=60").unwrap() else { panic!() };
        assert_eq!(f.path_for(2), Path::new(ROOT).join(".s3/recs/live/$stream-2.mp4"));
        let up = f.upload.expect("an upload");
        assert_eq!((up.bucket.as_str(), up.key_for(2).as_str()), ("recs", "live/$stream-2.mp4"));
        for bad in [
            "s3://recs",
            "s3://Bad_Bucket/x.mp4",
            "s3://ab/x.mp4",
            "s3://recs//x.mp4",
            "s3://recs/a/../x.mp4",
            "s3://recs/x.txt",
        ] {
            assert!(matches!(parse(bad), Err(TargetError::Invalid(_))), "{bad}");
        }
    }

    #[test]
    fn whip_urls_carry_their_token_apart() {
        let Target::Whip(t) = parse("whip+https://edge.example/whip/show?bearer=s3cr%2Bt&x=1").unwrap() else {
            panic!()
        };
        assert_eq!(t.url, "https://edge.example:443/whip/show?x=1");
        assert_eq!(t.token.as_deref(), Some("s3cr+t"));
        let Target::Whip(t) = parse("WHIP+HTTP://127.0.0.1:8080/whip/x").unwrap() else { panic!() };
        assert_eq!((t.url.as_str(), t.token), ("http://127.0.0.1:8080/whip/x", None));
        let Target::Whip(t) = parse("whip+http://[::1]:81/w").unwrap() else { panic!() };
        assert_eq!(t.url, "http://[::1]:81/w");
        for bad in [
            "whip+http://",
            "whip+http://u@h/w",
            "whip+http://h:0/w",
            "whip+http://h/w?bearer=",
            "whip+http://h/w?bearer=a%20b",
        ] {
            assert!(matches!(parse(bad), Err(TargetError::Invalid(_))), "{bad}");
        }
    }

    #[test]
    fn kinds_not_built_say_so() {
        for (t, what) in [("s3://bucket/x.m3u8", "s3"), ("x.mkv", ".mkv")] {
            let e = parse(t).unwrap_err();
            assert!(matches!(&e, TargetError::NotBuilt(w) if w.contains(what)), "{t}: {e}");
            assert!(e.to_string().contains("not supported yet"));
        }
    }

    #[test]
    fn secrets_stay_out_of_log_lines() {
        assert_eq!(redacted("whip+http://h/w?a=1&bearer=k3y"), "whip+http://h/w?a=1&bearer=***");
        assert_eq!(redacted("srt://h:1?passphrase=0123456789&latency=200"), "srt://h:1?passphrase=***&latency=200");
        assert_eq!(redacted("x.mp4"), "x.mp4");
    }

    #[test]
    fn variables_are_filled_in() {
        let vars = Vars { stream: "show", tenant: "acme", datetime: &datetime(1_700_000_000), segment: Some(3) };
        assert_eq!(
            expand("rec/$tenant/$stream-$datetime-$segmentCounter.flv", &vars),
            "rec/acme/show-2023.11.14.22.13.20-3.flv"
        );
        let later = Vars { segment: None, ..vars };
        assert_eq!(expand("$stream/$segmentCounter.mp4", &later), "show/$segmentCounter.mp4");
        assert_eq!(datetime(0), "1970.01.01.00.00.00");
        assert_eq!(datetime(951_782_400), "2000.02.29.00.00.00");
    }
}
