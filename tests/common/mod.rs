//! Shared harness for end-to-end tests: the real `tidecast` binary, real
//! ffmpeg/ffprobe, real HTTP.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The admin key every test server bootstraps with (`TIDECAST_ADMIN_KEY`).
pub const ADMIN_KEY: &str = "tca_test-admin-key-for-the-e2e-suite";

/// A running `tidecast serve` on loopback ports chosen by the OS.
pub struct Server {
    child: Option<Child>,
    pub rtmp: SocketAddr,
    pub srt: SocketAddr,
    pub http: SocketAddr,
    pub admin: SocketAddr,
    /// The shared WebRTC UDP port.
    pub webrtc: SocketAddr,
    /// The ICE-TCP port.
    pub webrtc_tcp: SocketAddr,
    pub dir: tempfile::TempDir,
    config: Option<String>,
    extra: Vec<String>,
}

impl Server {
    pub fn start(extra: &[&str]) -> Server {
        Self::start_with_config(None, extra)
    }

    pub fn start_with_config(config: Option<&str>, extra: &[&str]) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::spawn_in(dir, config.map(str::to_owned), extra.iter().map(|s| s.to_string()).collect())
    }

    fn spawn_in(dir: tempfile::TempDir, config: Option<String>, extra: Vec<String>) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tidecast"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.path().join("server.log"))
            .expect("log file");
        cmd.arg("serve")
            .args(["--rtmp-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--srt-listen", "127.0.0.1:0"])
            .args(["--admin-listen", "127.0.0.1:0"])
            .args(["--webrtc-bind", "127.0.0.1", "--webrtc-udp-port", "0", "--webrtc-tcp-port", "0"])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(&extra)
            .env_remove("TIDECAST_CONFIG")
            .env("TIDECAST_ADMIN_KEY", ADMIN_KEY)
            .env("TIDECAST_LOG", "info,tidecast_protocols=debug,tidecast_control=debug")
            .stdout(Stdio::piped())
            .stderr(log);
        if let Some(text) = &config {
            let path = dir.path().join("tidecast.toml");
            std::fs::write(&path, text).expect("write config");
            cmd.arg("--config").arg(path);
        }
        let mut child = cmd.spawn().expect("spawn tidecast");
        let stdout = child.stdout.take().expect("stdout");
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        while !line.starts_with("listening ") {
            line.clear();
            if reader.read_line(&mut line).expect("read ready line") == 0 {
                let log = std::fs::read_to_string(dir.path().join("server.log")).unwrap_or_default();
                panic!("tidecast exited before it was ready:\n{log}");
            }
        }
        let addr = |key: &str| -> SocketAddr {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(key))
                .unwrap_or_else(|| panic!("no {key} in {line:?}"))
                .parse()
                .expect("address")
        };
        let (rtmp, srt, http, admin) = (addr("rtmp="), addr("srt="), addr("http="), addr("admin="));
        let (webrtc, webrtc_tcp) = (addr("webrtc="), addr("webrtc_tcp="));
        Server { child: Some(child), rtmp, srt, http, admin, webrtc, webrtc_tcp, dir, config, extra }
    }

    /// SIGKILL, then start again on the same data directory.
    pub fn kill9_and_restart(mut self) -> Server {
        let mut child = self.child.take().expect("running");
        let _ = child.kill();
        let _ = child.wait();
        let (dir, config, extra) = (
            std::mem::replace(&mut self.dir, tempfile::tempdir().expect("tempdir")),
            self.config.take(),
            std::mem::take(&mut self.extra),
        );
        Self::spawn_in(dir, config, extra)
    }

    /// An admin API URL.
    pub fn api(&self, path: &str) -> String {
        format!("http://{}/api/v1{path}", self.admin)
    }

    pub fn rtmp_url(&self, name: &str) -> String {
        format!("rtmp://{}/live/{name}", self.rtmp)
    }

    /// An SRT URL with the given streamid (and extra query options).
    pub fn srt_url(&self, streamid: &str, extra: &str) -> String {
        format!("srt://{}?streamid={streamid}{extra}", self.srt)
    }

    pub fn ts_url(&self, stream: &str) -> String {
        format!("http://{}/ts/{stream}.ts", self.http)
    }

    pub fn hls_url(&self, stream: &str, file: &str) -> String {
        format!("http://{}/hls/{stream}/{file}", self.http)
    }

    /// The server's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "server did not exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("---- server log ----\n{}", self.log());
        }
    }
}

/// ffmpeg arguments for a lavfi test source: `seconds` of H.264 + AAC.
pub fn lavfi_h264_aac(seconds: u32, size: &str, fps: u32, rate: u32) -> Vec<String> {
    let mut a: Vec<String> =
        vec!["-hide_banner", "-loglevel", "error", "-nostdin"].into_iter().map(String::from).collect();
    a.extend(["-f", "lavfi", "-i"].map(String::from));
    a.push(format!("testsrc=size={size}:rate={fps}"));
    a.extend(["-f", "lavfi", "-i"].map(String::from));
    a.push(format!("sine=frequency=440:sample_rate={rate}"));
    a.extend(["-t".to_string(), seconds.to_string()]);
    a.extend(
        ["-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-bf", "0", "-c:a", "aac", "-ac", "2"]
            .map(String::from),
    );
    a.extend(["-g".to_string(), fps.to_string()]);
    a
}

/// Runs ffmpeg to completion.
pub fn ffmpeg(args: &[String]) -> std::process::Output {
    Command::new("ffmpeg")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("ffmpeg is installed (make test installs it)")
}

/// Starts ffmpeg in the background.
pub fn ffmpeg_spawn(args: &[String]) -> Child {
    Command::new("ffmpeg")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ffmpeg is installed")
}

/// ffprobe's compact output for `url`, as `key=value` maps per section.
pub fn ffprobe(url: &str, extra: &[&str]) -> Vec<std::collections::HashMap<String, String>> {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-of", "compact"])
        .args(extra)
        .arg(url)
        .output()
        .expect("ffprobe is installed");
    assert!(out.status.success(), "ffprobe {url} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            l.split('|')
                .skip(1)
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .chain(std::iter::once(("section".to_owned(), l.split('|').next().unwrap_or("").to_owned())))
                .collect()
        })
        .collect()
}

/// GET returning (status, body).
pub async fn get(url: &str) -> (u16, bytes::Bytes) {
    let r = reqwest::get(url).await.unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = r.status().as_u16();
    (status, r.bytes().await.expect("body"))
}

pub async fn get_text(url: &str) -> String {
    let (status, body) = get(url).await;
    assert_eq!(status, 200, "GET {url}: {}", String::from_utf8_lossy(&body));
    String::from_utf8(body.to_vec()).expect("utf-8")
}

/// Waits (through blocking playlist reloads, not sleeps) until `rendition`
/// of `stream` has a complete segment `msn`; returns the playlist.
pub async fn wait_for_segment(server: &Server, stream: &str, rendition: &str, msn: u64) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let url = server.hls_url(stream, &format!("{rendition}.m3u8?_HLS_msn={msn}"));
        if let Ok(r) = reqwest::get(&url).await {
            if r.status() == 200 {
                return r.text().await.expect("text");
            }
        }
        assert!(Instant::now() < deadline, "segment {msn} of {stream}/{rendition} never appeared\n{}", server.log());
        // The stream may not exist yet: the server answers 404 at once, so pace the retries.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Parses `KEY=value` from an EXT-X tag line.
pub fn attr<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let start = line.find(&format!("{key}="))? + key.len() + 1;
    let rest = &line[start..];
    let end =
        if let Some(r) = rest.strip_prefix('"') { r.find('"')? + 2 } else { rest.find(',').unwrap_or(rest.len()) };
    Some(rest[..end].trim_matches('"'))
}

/// One admin API call: `(status, JSON body or Null, content type)`.
pub async fn api_call(
    method: &str,
    url: &str,
    key: &str,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value, String) {
    let client = reqwest::Client::new();
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut req = client.request(method, url).bearer_auth(key);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap_or_else(|e| panic!("{url}: {e}"));
    let status = r.status().as_u16();
    let ct = r.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let bytes = r.bytes().await.expect("body");
    let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    (status, json, ct)
}

/// An admin API call that must succeed with `want`; returns the body.
pub async fn api_ok(
    method: &str,
    url: &str,
    key: &str,
    body: Option<serde_json::Value>,
    want: u16,
) -> serde_json::Value {
    let (status, json, _) = api_call(method, url, key, body).await;
    assert_eq!(status, want, "{method} {url}: {json}");
    json
}

/// Polls (bounded) until `check` gives a value: for external peers we
/// cannot get an event from (an ffmpeg publisher, a server log).
pub async fn until<T, F, Fut>(what: &str, secs: u64, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Reads `seconds` of a live URL with ffmpeg into a file and returns ffprobe's view.
pub fn read_live(url: &str, seconds: u32, out: &std::path::Path) -> Vec<std::collections::HashMap<String, String>> {
    let args: Vec<String> = ["-v", "error", "-i", url, "-t", &seconds.to_string(), "-c", "copy", "-f", "mpegts", "-y"]
        .map(String::from)
        .into_iter()
        .chain([out.display().to_string()])
        .collect();
    let o = ffmpeg(&args);
    assert!(o.status.success(), "reading {url}: {}", String::from_utf8_lossy(&o.stderr));
    ffprobe(
        &out.display().to_string(),
        &["-show_entries", "stream=codec_name,width,height,sample_rate:packet=stream_index,dts"],
    )
}

pub fn assert_monotonic(sections: &[std::collections::HashMap<String, String>]) {
    for index in ["0", "1"] {
        let dts: Vec<i64> = sections
            .iter()
            .filter(|s| s["section"] == "packet" && s.get("stream_index").map(String::as_str) == Some(index))
            .filter_map(|s| s.get("dts")?.parse().ok())
            .collect();
        assert!(dts.len() > 10, "stream {index} has packets");
        assert!(dts.windows(2).all(|w| w[1] > w[0]), "stream {index} timestamps increase");
    }
}

/// ffmpeg arguments that publish `seconds` of live H.264 + AAC (320x240,
/// 25 fps, 44.1 kHz) to an RTMP URL in real time.
pub fn rtmp_publish_args(url: &str, seconds: u32) -> Vec<String> {
    let mut args = vec!["-re".to_string()];
    args.extend(lavfi_h264_aac(seconds, "320x240", 25, 44100));
    args.extend(["-f".into(), "flv".into(), url.into()]);
    args
}

/// The init segment and the first complete segment of a rendition, joined
/// into one file ffprobe can read (a live playlist never ends for it).
pub async fn first_segment_file(server: &Server, stream: &str, rendition: &str, playlist: &str) -> String {
    let map = playlist.lines().find(|l| l.starts_with("#EXT-X-MAP")).and_then(|l| attr(l, "URI")).expect("a map");
    let seg = playlist.lines().skip_while(|l| !l.starts_with("#EXTINF")).nth(1).expect("a segment URI").to_owned();
    let (s1, init) = get(&server.hls_url(stream, map)).await;
    let (s2, body) = get(&server.hls_url(stream, &seg)).await;
    assert_eq!((s1, s2), (200, 200), "{rendition}: {map} and {seg}");
    let path = server.dir.path().join(format!("{stream}-{rendition}.mp4"));
    std::fs::write(&path, [init.as_ref(), body.as_ref()].concat()).expect("write");
    path.display().to_string()
}

/// Runs the player script `script` of `tests/browser` on `url` with `args`.
pub async fn player(script: &str, browser_dir: &str, url: String, args: &[&str]) -> (serde_json::Value, String) {
    let script = format!("{browser_dir}/{script}");
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("node").arg(script).arg(url).args(args).output()
    })
    .await
    .unwrap()
    .expect("node is installed");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "player script failed: {}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    let seen = serde_json::from_str(stdout.trim()).expect("the player script prints JSON");
    (seen, stdout)
}

/// Tenant `t` and its stream `name`, which needs a playback token; the
/// stream publishes for `seconds` (ffmpeg, RTMP) once it is live. Returns
/// the publisher and a playback token.
pub async fn protected_stream(server: &Server, name: &str, seconds: u32) -> (Child, String) {
    let a = ADMIN_KEY;
    api_ok("POST", &server.api("/tenants"), a, Some(serde_json::json!({"id": "t"})), 201).await;
    let stream = serde_json::json!({"name": name, "tenant": "t", "playback_token_required": true});
    api_ok("POST", &server.api("/streams"), a, Some(stream), 201).await;
    let key = api_ok("POST", &server.api(&format!("/streams/{name}/keys")), a, Some(serde_json::json!({})), 201).await;
    let key = key["key"].as_str().expect("a stream key").to_owned();
    let publisher = ffmpeg_spawn(&rtmp_publish_args(&server.rtmp_url(&key), seconds));
    let token =
        api_ok("POST", &server.api(&format!("/streams/{name}/tokens")), a, Some(serde_json::json!({})), 201).await;
    let token = token["token"].as_str().expect("a token").to_owned();
    until("the stream to go live", 60, || {
        let log = server.log();
        async move { log.contains("rtmp publish started").then_some(()) }
    })
    .await;
    (publisher, token)
}

/// What ffprobe reads of a clip saved at `path`: its streams' codecs, its
/// duration in seconds, and whether its first video frame is a keyframe.
pub fn probe_clip(path: &std::path::Path) -> (Vec<String>, f64, bool) {
    let p = path.display().to_string();
    let probe = ffprobe(&p, &["-show_entries", "stream=codec_name:format=duration"]);
    let codecs = probe.iter().filter_map(|s| s.get("codec_name").cloned()).collect();
    let duration = probe.iter().find_map(|s| s.get("duration")?.parse().ok()).unwrap_or(0.0);
    let first = ffprobe(&p, &["-select_streams", "v:0", "-show_entries", "frame=key_frame", "-read_intervals", "%+#1"]);
    let key = first.iter().find_map(|f| f.get("key_frame")).is_some_and(|k| k == "1");
    (codecs, duration, key)
}
