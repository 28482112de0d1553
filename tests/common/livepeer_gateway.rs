//! A stand-in for a go-livepeer gateway (broadcaster with HTTP ingest):
//! go-livepeer cannot be installed on these machines. It implements the
//! same HTTP contract (`server/mediaserver.go`, `HandlePush`): `POST
//! /live/{manifestID}/{seq}.ts`, the `Accept`, `Content-Duration`,
//! `Content-Resolution` and `Livepeer-Transcode-Configuration` headers,
//! profiles checked by livepeer/lpms's rules (`ffmpeg/videoprofile.go`),
//! each rendition made for real (the ffmpeg CLI scales the posted TS), and
//! the answer written as Go's `mime/multipart` writes it. Switches make it
//! answer 422, 503, ten seconds late, or with a garbled body.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use tokio::io::AsyncWriteExt;

/// How the gateway answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    /// Transcodes.
    Normal = 0,
    /// 422: "the codec is not detectable", go-livepeer's non-retryable error.
    Reject = 1,
    /// 503: "No sessions available".
    Unavailable = 2,
    /// A 200 whose multipart body breaks off.
    Garbled = 3,
    /// Transcodes, but answers only after ten seconds.
    Slow = 4,
}

/// A running stand-in.
pub struct Gateway {
    /// Its address.
    pub addr: SocketAddr,
    mode: Arc<AtomicU8>,
    /// Segments it answered with renditions.
    pub transcoded: Arc<AtomicU64>,
    /// Requests it refused for a bad header or profile.
    pub bad_requests: Arc<AtomicU64>,
}

impl Gateway {
    /// Starts one on a free loopback port.
    pub async fn start(mode: Mode) -> Gateway {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = Shared {
            mode: Arc::new(AtomicU8::new(mode as u8)),
            transcoded: Arc::new(AtomicU64::new(0)),
            bad_requests: Arc::new(AtomicU64::new(0)),
        };
        let gw = Gateway {
            addr,
            mode: state.mode.clone(),
            transcoded: state.transcoded.clone(),
            bad_requests: state.bad_requests.clone(),
        };
        let app = Router::new().route("/live/{mid}/{seg}", post(push).put(push)).with_state(state);
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        gw
    }

    /// Its base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Changes how it answers.
    pub fn set_mode(&self, mode: Mode) {
        self.mode.store(mode as u8, Ordering::Relaxed);
    }
}

#[derive(Clone)]
struct Shared {
    mode: Arc<AtomicU8>,
    transcoded: Arc<AtomicU64>,
    bad_requests: Arc<AtomicU64>,
}

/// One profile as lpms reads it.
struct Profile {
    name: String,
    width: u32,
    height: u32,
    bitrate: u64,
}

fn bad(s: &Shared, why: String) -> Response {
    s.bad_requests.fetch_add(1, Ordering::Relaxed);
    (StatusCode::BAD_REQUEST, why).into_response()
}

/// lpms `ParseProfilesFromJsonProfileArray` and `EncoderProfileLookup`.
fn profiles(config: &str) -> Result<Vec<Profile>, String> {
    let v: serde_json::Value = serde_json::from_str(config).map_err(|e| format!("configuration JSON: {e}"))?;
    let list = v["profiles"].as_array().ok_or("no profiles")?;
    let mut out = Vec::new();
    for p in list {
        let width = p["width"].as_u64().ok_or("width")? as u32;
        let height = p["height"].as_u64().ok_or("height")? as u32;
        let bitrate = p["bitrate"].as_u64().ok_or("bitrate must be an integer")?;
        let fps = p["fps"].as_u64().ok_or("fps")?;
        let fps_den = p["fpsDen"].as_u64().unwrap_or(1);
        if width == 0 || height == 0 || fps_den == 0 || fps == 0 {
            return Err("zero size or rate".into());
        }
        let profile = p["profile"].as_str().unwrap_or("").to_ascii_lowercase();
        if !["", "none", "h264baseline", "h264main", "h264high", "h264constrainedhigh"].contains(&profile.as_str()) {
            return Err(format!("unknown profile {profile:?}"));
        }
        let gop = p["gop"].as_str().unwrap_or("");
        if !(gop.is_empty() || gop == "intra" || gop.parse::<f64>().is_ok_and(|g| g >= 0.0)) {
            return Err(format!("bad gop {gop:?}"));
        }
        if !["", "H.264"].contains(&p["encoder"].as_str().unwrap_or("")) {
            return Err("only H.264 here".into());
        }
        let name = match p["name"].as_str().unwrap_or("") {
            "" => format!("custom_{width}x{height}_{bitrate}"),
            n => n.to_owned(),
        };
        out.push(Profile { name, width, height, bitrate });
    }
    Ok(out)
}

async fn push(
    State(s): State<Shared>,
    Path((_mid, seg)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let Some(seq) = seg.strip_suffix(".ts") else { return bad(&s, "only .ts segments".into()) };
    if !header("Accept").contains("multipart/mixed") {
        return bad(&s, "Accept: multipart/mixed is required for renditions".into());
    }
    if header("Content-Duration").parse::<u64>().is_err() {
        return bad(&s, "Content-Duration".into());
    }
    let res = header("Content-Resolution");
    if res.split_once('x').is_none_or(|(w, h)| w.parse::<u32>().is_err() || h.parse::<u32>().is_err()) {
        return bad(&s, format!("Content-Resolution {res:?}"));
    }
    let profiles = match profiles(&header("Livepeer-Transcode-Configuration")) {
        Ok(p) => p,
        Err(e) => return bad(&s, e),
    };
    match s.mode.load(Ordering::Relaxed) {
        1 => return (StatusCode::UNPROCESSABLE_ENTITY, "codec not detectable").into_response(),
        2 => return (StatusCode::SERVICE_UNAVAILABLE, "No sessions available").into_response(),
        _ => {}
    }
    let boundary = format!("{:016x}", rand_u64());
    let mut answer = Vec::new();
    // Every rendition at once, as an orchestrator makes them in one pass.
    let jobs: Vec<_> = profiles
        .iter()
        .map(|p| {
            let (body, p) = (body.clone(), Profile { name: p.name.clone(), ..*p });
            tokio::spawn(async move { scale(&body, &p).await })
        })
        .collect();
    let mut outputs = Vec::new();
    for j in jobs {
        match j.await {
            Ok(Ok(ts)) => outputs.push(ts),
            Ok(Err(e)) => return (StatusCode::INTERNAL_SERVER_ERROR, e).into_response(),
            Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
        }
    }
    for (p, ts) in profiles.iter().zip(outputs) {
        let file = format!("{}_{seq}.ts", p.name);
        answer.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        answer.extend_from_slice(format!("Content-Type: video/mp2t; name=\"{file}\"\r\n").as_bytes());
        answer.extend_from_slice(format!("Content-Length: {}\r\n", ts.len()).as_bytes());
        answer.extend_from_slice(format!("Content-Disposition: attachment; filename=\"{file}\"\r\n").as_bytes());
        answer.extend_from_slice(format!("Rendition-Name: {}\r\n\r\n", p.name).as_bytes());
        answer.extend_from_slice(&ts);
        answer.extend_from_slice(b"\r\n");
    }
    answer.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    if s.mode.load(Ordering::Relaxed) == Mode::Slow as u8 {
        tokio::time::sleep(std::time::Duration::from_secs(10)).await;
    }
    if s.mode.load(Ordering::Relaxed) == Mode::Garbled as u8 {
        answer.truncate(answer.len() / 2);
    } else {
        s.transcoded.fetch_add(1, Ordering::Relaxed);
    }
    ([("Content-Type", format!("multipart/mixed; boundary={boundary}"))], answer).into_response()
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0);
    h.finish()
}

/// One rendition of `ts`: the ffmpeg CLI scales it, keeps its timestamps,
/// and starts it with an IDR, as a Livepeer orchestrator's output does.
async fn scale(ts: &[u8], p: &Profile) -> Result<Vec<u8>, String> {
    let mut child = tokio::process::Command::new("ffmpeg")
        .args(["-v", "error", "-f", "mpegts", "-i", "pipe:0", "-map", "0:v:0"])
        .args(["-vf", &format!("scale={}:{}", p.width, p.height)])
        .args(["-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-bf", "0"])
        .args(["-b:v", &p.bitrate.to_string(), "-force_key_frames", "expr:eq(n,0)"])
        .args(["-copyts", "-muxdelay", "0", "-f", "mpegts", "pipe:1"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("ffmpeg: {e}"))?;
    let mut stdin = child.stdin.take().ok_or("stdin")?;
    let input = ts.to_vec();
    let writer = tokio::spawn(async move {
        let _ = stdin.write_all(&input).await;
    });
    let out = child.wait_with_output().await.map_err(|e| format!("ffmpeg: {e}"))?;
    let _ = writer.await;
    if !out.status.success() || out.stdout.is_empty() {
        return Err(format!("ffmpeg failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(out.stdout)
}
