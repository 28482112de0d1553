//! WHIP and WHEP end to end: headless Chromium (Debian's `chromium`, driven
//! by playwright-core, fake camera and microphone) publishes over WHIP and a
//! second Chromium plays over WHEP; ffprobe reads the same stream back over
//! LL-HLS; an RTMP publish by ffmpeg plays over WHEP, with its audio
//! bridged to Opus and, with `?rendition=`, a ladder's rung; ICE-TCP carries a
//! session when the answer offers only TCP. The bad-input tests need no
//! browser: they post a real Chromium offer (a fixture) with curl-like HTTP.

mod common;
#[path = "common/erpublish.rs"]
mod erpublish;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use common::*;
use serde_json::Value;

const BROWSER_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser");
const OFFER: &str = include_str!("fixtures/chromium-whip-offer.sdp");
const KEY: &str = "whip-key-0123456789";

fn check_browser_peers() {
    assert!(
        std::path::Path::new(BROWSER_DIR).join("node_modules/playwright-core").exists(),
        "run `make test` (or `npm ci --prefix tests/browser`) to install the browser test peers"
    );
}

fn origin(server: &Server) -> String {
    format!("http://{}", server.http)
}

/// A Chromium WHIP publisher running until stopped; returns after it
/// printed that it is connected.
struct Publisher {
    child: Child,
    out: BufReader<std::process::ChildStdout>,
}

impl Publisher {
    fn start(server: &Server, stream: &str, token: &str, codec: &str, extra: &[&str]) -> (Publisher, Value) {
        let mut child = Command::new("node")
            .arg(format!("{BROWSER_DIR}/webrtc.mjs"))
            .args(["publish", &origin(server), stream, token, "0", codec])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("node is installed");
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        out.read_line(&mut line).expect("publisher output");
        let first: Value = serde_json::from_str(line.trim())
            .unwrap_or_else(|_| panic!("publisher printed {line:?}\n{}", server.log()));
        (Publisher { child, out }, first)
    }

    /// Stops it (SIGTERM: it DELETEs its resource) and returns its stats.
    fn stop(mut self) -> Value {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let mut line = String::new();
        self.out.read_line(&mut line).expect("publisher stats");
        let _ = self.child.wait();
        serde_json::from_str(line.trim()).unwrap_or(Value::Null)
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        // A failed assertion must not leave the browser running.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn play(server: &Server, stream: &str, token: &str) -> Value {
    let (o, s, t) = (origin(server), stream.to_owned(), token.to_owned());
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node").arg(format!("{BROWSER_DIR}/webrtc.mjs")).args(["play", &o, &s, &t, "20"]).output()
    })
    .await
    .expect("join")
    .expect("node is installed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "player failed: {}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_str(stdout.trim()).unwrap_or_else(|_| panic!("player printed {stdout:?}"))
}

/// The WebRTC sessions the admin API lists as live.
async fn live_sessions(server: &Server) -> Vec<Value> {
    let page = api_ok("GET", &server.api("/webrtc/sessions"), ADMIN_KEY, None, 200).await;
    page["items"].as_array().cloned().unwrap_or_default().into_iter().filter(|s| s["state"] != "closed").collect()
}

async fn wait_no_live_sessions(server: &Server) {
    until("every WebRTC session to close", 30, || async { live_sessions(server).await.is_empty().then_some(()) }).await;
}

fn keyed_config(extra: &str) -> String {
    format!("[[streams]]\nname = \"cam\"\nkey = \"{KEY}\"\n[[streams]]\nname = \"rtmpcam\"\nkey = \"rtmp-key-0123456789\"\n{extra}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_whip_reaches_ll_hls_and_whep() {
    check_browser_peers();
    let server = Server::start_with_config(Some(&keyed_config("")), &["--hls-segment", "1"]);
    let (publisher, first) = Publisher::start(&server, "cam", KEY, "h264", &[]);
    assert_eq!(first["connected"], true, "WHIP connected: {first}");

    // A player joining right now: the first multivariant playlist and the
    // first MPD that answer already declare both tracks the SDP offered.
    let master = until("the first multivariant playlist", 30, || async {
        let (status, body) = get(&server.hls_url("cam", "index.m3u8")).await;
        (status == 200).then(|| String::from_utf8_lossy(&body).into_owned())
    })
    .await;
    // Opus, or AAC once the audio bridge made it (HLS then lists AAC only).
    let audio = master.contains("opus") || master.contains("mp4a.40.2");
    assert!(master.contains("#EXT-X-MEDIA:TYPE=AUDIO") && audio, "{master}");
    let mpd = until("the first MPD", 30, || async {
        let (status, body) = get(&format!("http://{}/dash/cam/index.mpd", server.http)).await;
        (status == 200).then(|| String::from_utf8_lossy(&body).into_owned())
    })
    .await;
    assert!(mpd.contains("contentType=\"video\"") && mpd.contains("codecs=\"opus\""), "{mpd}");

    // The same stream over LL-HLS, read by ffprobe.
    wait_for_segment(&server, "cam", "video", 1).await;
    // The audio bridge gives the Opus source an AAC track, which HLS lists
    // (every HLS player decodes AAC); ffprobe decodes it.
    let aac = until("the bridged AAC track in the multivariant playlist", 30, || async {
        let (_, body) = get(&server.hls_url("cam", "index.m3u8")).await;
        String::from_utf8_lossy(&body).contains("mp4a.40.2").then_some(())
    });
    aac.await;
    let master = get_text(&server.hls_url("cam", "index.m3u8")).await;
    let streams = ffprobe(&server.hls_url("cam", "index.m3u8"), &["-show_streams"]);
    let codecs: Vec<&str> = streams.iter().filter_map(|s| s.get("codec_name").map(String::as_str)).collect();
    assert!(codecs.contains(&"h264") && codecs.contains(&"aac"), "HLS carries video and AAC: {codecs:?}");
    let uri = master
        .lines()
        .find(|l| l.starts_with("#EXT-X-MEDIA:TYPE=AUDIO"))
        .and_then(|l| attr(l, "URI"))
        .expect("an audio URI");
    let name = uri.split(['.', '?']).next().expect("a name").to_owned();
    let playlist = wait_for_segment(&server, "cam", &name, 1).await;
    let file = first_segment_file(&server, "cam", &name, &playlist).await;
    let probe = ffprobe(&file, &["-count_frames", "-show_entries", "stream=codec_name,nb_read_frames"]);
    let decoded = probe
        .iter()
        .find(|s| s.get("codec_name").map(String::as_str) == Some("aac"))
        .and_then(|s| s.get("nb_read_frames")?.parse::<u64>().ok());
    assert!(decoded.unwrap_or(0) > 10, "ffprobe decodes the AAC track: {probe:?}");

    // A second Chromium plays it over WHEP.
    let seen = play(&server, "cam", "-").await;
    assert_eq!(seen["status"], 201, "{seen}");
    assert!(seen["framesDecoded"].as_u64().unwrap_or(0) >= 30, "frames decoded over WHEP: {seen}");
    assert!(seen["audioPackets"].as_u64().unwrap_or(0) > 0, "Opus arrived over WHEP: {seen}");
    assert_eq!(seen["codec"], "video/H264");
    assert_eq!((seen["width"].as_u64(), seen["height"].as_u64()), (Some(320), Some(240)));
    assert_eq!(seen["deleteStatus"], 200);

    let stats = publisher.stop();
    assert!(stats["framesEncoded"].as_u64().unwrap_or(0) > 0, "the publisher sent video: {stats}");
    assert_eq!(stats["deleteStatus"], 200, "DELETE ended the WHIP session: {stats}");
    wait_no_live_sessions(&server).await;
    let page = api_ok("GET", &server.api("/webrtc/sessions"), ADMIN_KEY, None, 200).await;
    let whip = page["items"].as_array().and_then(|a| a.iter().find(|s| s["kind"] == "whip").cloned()).expect("whip");
    assert_eq!(whip["closed_reason"], "closed by the client (DELETE)");
    assert!(whip["tracks"].as_array().is_some_and(|t| t.iter().any(|t| t["packets"].as_u64() > Some(50))), "{whip}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_whip_av1_vp9_and_vp8_reach_ll_hls() {
    check_browser_peers();
    let server = Server::start(&["--hls-segment", "1"]);
    for codec in ["av1", "vp9", "vp8"] {
        let stream = format!("cam-{codec}");
        let (publisher, first) = Publisher::start(&server, &stream, "-", codec, &[]);
        assert_eq!(first["connected"], true, "{codec}: {first}");
        wait_for_segment(&server, &stream, "video", 1).await;
        let playlist = reqwest::get(server.hls_url(&stream, "index.m3u8")).await.expect("playlist");
        let playlist = playlist.text().await.expect("playlist text");
        let fourcc = match codec {
            "vp9" => "vp09.",
            "vp8" => "vp08.",
            _ => "av01.",
        };
        assert!(playlist.contains(fourcc), "{codec}: CODECS in the multivariant playlist: {playlist}");
        let streams = ffprobe(&server.hls_url(&stream, "index.m3u8"), &["-show_streams"]);
        let video = streams
            .iter()
            .find(|s| s.get("codec_type").is_some_and(|t| t == "video"))
            .unwrap_or_else(|| panic!("{codec}: no video stream: {streams:?}"));
        assert_eq!(video.get("codec_name").map(String::as_str), Some(codec), "{streams:?}");
        let width: u32 = video.get("width").and_then(|w| w.parse().ok()).unwrap_or(0);
        assert!(width > 0, "{codec}: a picture size: {video:?}");
        let stats = publisher.stop();
        assert_eq!(stats["codec"], format!("video/{}", codec.to_uppercase()), "{stats}");
    }
    wait_no_live_sessions(&server).await;
}

/// ffmpeg publishing 40 s of 320x240 H.264 (baseline: no B-frames, which
/// WebRTC cannot carry) and AAC to `stream` over RTMP.
fn publish_baseline(server: &Server, stream: &str) -> std::process::Child {
    let mut args = vec!["-re".to_string()];
    let mut input = lavfi_h264_aac(40, "320x240", 25, 44100);
    let at = input.iter().position(|a| a == "libx264").expect("x264") + 1;
    input.splice(at..at, ["-profile:v".to_string(), "baseline".to_string()]);
    args.extend(input);
    args.extend(["-f".into(), "flv".into(), server.rtmp_url(stream)]);
    ffmpeg_spawn(&args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
/// An RTMP (H.264 + AAC) source over WHEP: the audio bridge gives it an
/// Opus track, and Chromium hears the test tone.
async fn rtmp_h264_aac_plays_over_whep_with_opus_audio() {
    check_browser_peers();
    let server = Server::start(&[]);
    let mut ffmpeg = publish_baseline(&server, "rtmpcam");
    wait_for_segment(&server, "rtmpcam", "video", 0).await;
    let seen = play(&server, "rtmpcam", "-").await;
    let _ = ffmpeg.kill();
    let _ = ffmpeg.wait();
    assert_eq!(seen["status"], 201, "{seen}");
    assert!(seen["framesDecoded"].as_u64().unwrap_or(0) >= 30, "frames decoded: {seen}");
    assert!(seen["audioPackets"].as_u64().unwrap_or(0) >= 50, "Opus audio arrives: {seen}");
    assert_eq!(seen["audioCodec"], "audio/opus", "{seen}");
    assert!(seen["audioRms"].as_f64().unwrap_or(0.0) > 0.01, "the 440 Hz tone is heard: {seen}");
    assert!(!seen["notes"].as_str().unwrap_or("").contains("AAC"), "no video-only note: {seen}");
    wait_no_live_sessions(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
/// `?rendition=180p` plays a ladder's rung over WHEP: Chromium decodes it at
/// the rung's size. A height the stream lacks is refused, naming those it has.
async fn whep_plays_a_ladder_rung_by_rendition() {
    check_browser_peers();
    let profile = r#"
[transcode]
default_profile = "small"
[transcode.profiles.small]
hw = "off"
preset = "ultrafast"
h264_profile = "baseline"
rungs = [{ height = 180, bitrate_kbps = 300 }]
"#;
    let server = Server::start_with_config(Some(profile), &[]);
    let mut ffmpeg = publish_baseline(&server, "rtmpcam");
    // The rung's first segment: the ladder runs.
    wait_for_segment(&server, "rtmpcam", "video1", 0).await;

    let recv = OFFER.replace("a=sendonly", "a=recvonly");
    let missing = format!("http://{}/whep/rtmpcam?rendition=1080p", server.http);
    let r = post(&missing, "application/sdp", None, &recv).await;
    assert_eq!(r.status(), 404, "no such rendition");
    let text = r.text().await.unwrap_or_default();
    assert!(text.contains("240p") && text.contains("180p"), "the renditions it has: {text}");
    let bad = format!("http://{}/whep/rtmpcam?rendition=tall", server.http);
    assert_eq!(post(&bad, "application/sdp", None, &recv).await.status(), 400);

    let seen = play(&server, "rtmpcam?rendition=180p", "-").await;
    let _ = ffmpeg.kill();
    let _ = ffmpeg.wait();
    assert_eq!(seen["status"], 201, "{seen}");
    assert!(seen["framesDecoded"].as_u64().unwrap_or(0) >= 30, "frames decoded: {seen}");
    assert_eq!((seen["width"].as_u64(), seen["height"].as_u64()), (Some(240), Some(180)), "the rung's size: {seen}");
    wait_no_live_sessions(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ice_tcp_carries_a_session_when_udp_is_not_offered() {
    check_browser_peers();
    let server = Server::start(&[]);
    let (publisher, first) = Publisher::start(&server, "tcpcam", "-", "h264", &["--tcp"]);
    assert_eq!(first["connected"], true, "connected over ICE-TCP: {first}");
    let live = until("the session to report its transport", 20, || async {
        live_sessions(&server).await.into_iter().find(|s| s["transport"].is_string())
    })
    .await;
    assert_eq!(live["transport"], "tcp", "{live}");
    let stats = publisher.stop();
    assert_eq!(stats["protocol"], "tcp", "{stats}");
    assert!(stats["framesEncoded"].as_u64().unwrap_or(0) > 0, "{stats}");
}

async fn post(url: &str, content_type: &str, bearer: Option<&str>, body: &str) -> reqwest::Response {
    let mut req = reqwest::Client::new().post(url).header("content-type", content_type).body(body.to_owned());
    if let Some(b) = bearer {
        req = req.bearer_auth(b);
    }
    req.send().await.expect("POST")
}

async fn delete(url: &str, bearer: Option<&str>) -> u16 {
    let mut req = reqwest::Client::new().delete(url);
    if let Some(b) = bearer {
        req = req.bearer_auth(b);
    }
    req.send().await.expect("DELETE").status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_the_right_status_and_leak_no_session() {
    let config = keyed_config("[webrtc]\nconnect_timeout_seconds = 1.0\n");
    let server = Server::start_with_config(Some(&config), &[]);
    let whip = format!("http://{}/whip/cam", server.http);
    let sdp = "application/sdp";

    assert_eq!(post(&whip, sdp, None, OFFER).await.status(), 401, "no key");
    assert_eq!(post(&whip, sdp, Some("wrong-key-0123"), OFFER).await.status(), 401, "wrong key");
    let other = format!("http://{}/whip/rtmpcam", server.http);
    assert_eq!(post(&other, sdp, Some(KEY), OFFER).await.status(), 401, "a key for another stream");
    assert_eq!(post(&whip, "text/plain", Some(KEY), OFFER).await.status(), 415);
    let r = post(&whip, sdp, Some(KEY), "hello, I am not SDP").await;
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap_or_default().contains("malformed"));
    let pcmu = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\na=sendonly\r\na=rtpmap:0 PCMU/8000\r\n";
    let r = post(&whip, sdp, Some(KEY), pcmu).await;
    assert_eq!(r.status(), 406);
    assert!(r.text().await.unwrap_or_default().contains("pcmu"), "the answer names what was offered");
    let whep = format!("http://{}/whep/nothing-here", server.http);
    let recv = OFFER.replace("a=sendonly", "a=recvonly");
    assert_eq!(post(&whep, sdp, None, &recv).await.status(), 404, "unknown stream");

    // A publisher that has connected and sent nothing yet: the stream is
    // starting, and a player is told when to ask again (not to fall back).
    let quiet = erpublish::accepted(server.rtmp, "rtmp-key-0123456789").await;
    let r = post(&format!("http://{}/whep/rtmpcam", server.http), sdp, None, &recv).await;
    assert_eq!(r.status(), 503, "starting");
    assert_eq!(r.headers().get("retry-after").and_then(|v| v.to_str().ok()), Some("1"));
    drop(quiet);

    // A page on another origin may publish and play: the preflight passes
    // and the answer's headers (Location) are readable there.
    let preflight = reqwest::Client::new()
        .request(reqwest::Method::OPTIONS, &whep)
        .header("origin", "https://example.com")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "authorization, content-type")
        .send()
        .await
        .expect("OPTIONS");
    assert!(preflight.status().is_success(), "{}", preflight.status());
    assert_eq!(preflight.headers()["access-control-allow-origin"], "*");
    let allowed = preflight.headers()["access-control-allow-headers"].to_str().unwrap_or_default().to_owned();
    assert!(allowed.contains("authorization"), "a wildcard would not allow the bearer: {allowed}");
    assert_eq!(preflight.headers()["accept-post"], "application/sdp", "still WHIP's own OPTIONS");

    // A real offer gets a session; nobody connects, so it fails with a reason.
    let r = reqwest::Client::new()
        .post(&whip)
        .header("content-type", sdp)
        .header("origin", "https://example.com")
        .bearer_auth(KEY)
        .body(OFFER)
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
    assert_eq!(r.headers()["access-control-expose-headers"], "*", "Location is readable cross-origin");
    let location = r.headers()["location"].to_str().expect("location").to_owned();
    assert_eq!(r.headers()["content-type"], "application/sdp");
    let answer = r.text().await.expect("answer");
    assert!(answer.contains("a=ice-lite") && answer.contains("a=fingerprint:"), "{answer}");
    assert!(answer.contains(&format!("{} typ host", server.webrtc.port())), "UDP host candidate: {answer}");
    assert!(answer.contains("tcptype passive"), "ICE-TCP candidate: {answer}");
    let resource = format!("http://{}{location}", server.http);
    let elsewhere = resource.replace("/whip/cam/", "/whip/rtmpcam/");
    assert_eq!(delete(&elsewhere, Some(KEY)).await, 404, "the resource belongs to its stream");
    assert_eq!(delete(&resource, Some("someone-else")).await, 403, "someone else's resource");
    assert_eq!(delete(&resource, None).await, 403);
    let failed = until("the unconnected session to time out", 20, || async {
        let page = api_ok("GET", &server.api("/webrtc/sessions"), ADMIN_KEY, None, 200).await;
        page["items"].as_array().and_then(|a| a.iter().find(|s| s["state"] == "closed").cloned())
    })
    .await;
    let reason = failed["closed_reason"].as_str().unwrap_or_default();
    assert!(reason.contains("ICE failed: no candidate pair"), "the API says why: {failed}");
    assert!(server.log().contains("ICE failed: no candidate pair"), "and so does the log");
    assert_eq!(delete(&resource, Some(KEY)).await, 404, "it is gone");

    // A session deleted by its owner before it connects.
    let r = post(&whip, sdp, Some(KEY), OFFER).await;
    assert_eq!(r.status(), 201);
    let resource = format!("http://{}{}", server.http, r.headers()["location"].to_str().expect("location"));
    assert_eq!(delete(&resource, Some(KEY)).await, 200);
    wait_no_live_sessions(&server).await;
    let metrics = reqwest::get(format!("http://{}/metrics", server.admin)).await.expect("metrics");
    let text = metrics.text().await.expect("text");
    assert!(text.contains("tidecast_webrtc_sessions{kind=\"whip\"} 0"), "{text}");
}

/// A STUN server in the test: answers every binding request with a fixed
/// "public" address, as a server behind a NAT would be told.
async fn fake_stun(public: std::net::SocketAddr) -> std::net::SocketAddr {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let addr = sock.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        while let Ok((n, from)) = sock.recv_from(&mut buf).await {
            if n < 20 {
                continue;
            }
            let id: [u8; 12] = buf[8..20].try_into().expect("12 bytes");
            let reply = tidecast_protocols::webrtc::stun::binding_success(id, public);
            let _ = sock.send_to(&reply, from).await;
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_carry_nat_candidates_and_ice_servers() {
    let stun = fake_stun("198.51.100.7:40000".parse().expect("addr")).await;
    let config = format!(
        "[webrtc]\npublic_ips = [\"203.0.113.9\"]\nstun_server = \"{stun}\"\n\
         [[webrtc.ice_servers]]\nurl = \"stun:stun.example.net:3478\"\n\
         [[webrtc.ice_servers]]\nurl = \"turn:turn.example.net:3478\"\nusername = \"u1\"\ncredential = \"p1\"\n"
    );
    let server = Server::start_with_config(Some(&config), &[]);
    let whip = format!("http://{}/whip/natcam", server.http);
    let r = post(&whip, "application/sdp", None, OFFER).await;
    assert_eq!(r.status(), 201);
    let links: Vec<String> =
        r.headers().get_all("link").iter().filter_map(|v| v.to_str().ok()).map(str::to_owned).collect();
    let answer = r.text().await.expect("answer");
    // ICE-lite announces NAT addresses as host candidates.
    assert!(answer.contains(&format!("203.0.113.9 {} typ host", server.webrtc.port())), "1:1 NAT: {answer}");
    assert!(answer.contains(&format!("203.0.113.9 {} typ host tcptype passive", server.webrtc_tcp.port())), "{answer}");
    assert!(answer.contains("198.51.100.7 40000 typ host"), "learned through STUN: {answer}");
    assert!(links.iter().any(|l| l == "<stun:stun.example.net:3478>; rel=\"ice-server\""), "{links:?}");
    assert!(links.iter().any(|l| l.contains("turn:turn.example.net") && l.contains("username=\"u1\"")), "{links:?}");
    let options = reqwest::Client::new().request(reqwest::Method::OPTIONS, &whip).send().await.expect("OPTIONS");
    assert_eq!(options.headers().get_all("link").iter().count(), 2, "OPTIONS also lists the ICE servers");
}
