//! The web face: a stream's player page (`/{stream}.html`) in headless
//! Chromium plays an ffmpeg RTMP stream over LL-HLS, LL-DASH and WebRTC,
//! picks WebRTC by itself, comes back on its own when the stream stops and
//! starts again, and says so when a protected stream has no token.
//! `make test` installs Debian's chromium and the npm packages in
//! tests/browser; this test fails (it does not skip) if they are missing.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use common::*;
use serde_json::{json, Value};

const BROWSER_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser");

/// `tests/browser/player.mjs` on `url`, its JSON lines as they come.
fn player(url: &str, seconds: u32, resume: bool) -> (Child, std::sync::mpsc::Receiver<Value>) {
    let mut cmd = Command::new("node");
    cmd.arg(format!("{BROWSER_DIR}/player.mjs")).arg(url).arg(seconds.to_string());
    if resume {
        cmd.arg("resume");
    }
    let mut child = cmd.stdout(Stdio::piped()).spawn().expect("node is installed");
    let out = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                let _ = tx.send(v);
            }
        }
    });
    (child, rx)
}

/// The next line of `event` (or `done`), within `seconds`.
async fn next(rx: &std::sync::mpsc::Receiver<Value>, event: &str, seconds: u64) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let got = tokio::task::block_in_place(|| rx.recv_timeout(left));
        match got {
            Ok(v) if v["event"] == event || v["event"] == "done" => return v,
            Ok(v) => eprintln!("player: {v}"),
            Err(_) => panic!("no {event} from the player page within {seconds} s"),
        }
    }
}

fn assert_plays(seen: &Value, protocol: &str) {
    assert_eq!(seen["event"], "live", "{protocol}: the page played: {seen}");
    assert_eq!(seen["protocol"], protocol, "{seen}");
    assert_eq!((seen["width"].as_u64(), seen["height"].as_u64()), (Some(320), Some(240)), "{seen}");
    let audio = seen["audioBytes"].as_u64() > Some(0) || seen["audioTracks"].as_u64() >= Some(1);
    assert!(audio, "{protocol}: audio plays too: {seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_player_page_plays_every_protocol_and_comes_back_by_itself() {
    assert!(
        std::path::Path::new(BROWSER_DIR).join("node_modules/playwright-core").exists(),
        "run `make test` (or `npm ci --prefix tests/browser`) to install the browser test peers"
    );
    let server = Server::start(&["--hls-segment", "1", "--reconnect-grace", "0"]);
    let mut publisher = ffmpeg_spawn(&rtmp_publish_args(&server.rtmp_url("show"), 300));
    wait_for_segment(&server, "show", "video", 2).await;

    // The page: the player element, no inline script, a policy of this
    // server only; the player and its libraries come from the server.
    let page = reqwest::get(format!("http://{}/show.html", server.http)).await.expect("the page");
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"].to_str().unwrap_or_default().to_owned();
    assert!(csp.contains("script-src 'self'") && csp.contains("default-src 'self'"), "{csp}");
    let html = page.text().await.unwrap();
    assert!(html.contains("<tidecast-player stream=\"show\">") && html.contains("src=\"/player.js\""), "{html}");
    assert!(!html.contains("<script>"), "no inline script: {html}");
    for asset in ["/player.js", "/player/hls.min.js", "/player/dash.mediaplayer.min.js"] {
        let r = reqwest::get(format!("http://{}{asset}", server.http)).await.unwrap();
        assert_eq!(r.status(), 200, "{asset}");
        assert!(r.headers()["content-type"].to_str().unwrap_or_default().starts_with("text/javascript"), "{asset}");
    }
    // The shipped libraries are the ones the browser tests pin.
    for (shipped, tested) in [
        ("web/vendor/hls.min.js", "tests/browser/node_modules/hls.js/dist/hls.min.js"),
        (
            "web/vendor/dash.mediaplayer.min.js",
            "tests/browser/node_modules/dashjs/dist/modern/umd/dash.mediaplayer.min.js",
        ),
    ] {
        let root = env!("CARGO_MANIFEST_DIR");
        let a = std::fs::read(format!("{root}/{shipped}")).unwrap();
        let b = std::fs::read(format!("{root}/{tested}")).unwrap();
        assert!(a == b, "{shipped} is not the version tests/browser/package.json pins");
    }

    // Each protocol, forced with the page's own switch.
    for protocol in ["hls", "dash", "webrtc"] {
        let url = format!("http://{}/show.html?protocol={protocol}", server.http);
        let (mut child, rx) = player(&url, 40, false);
        let seen = next(&rx, "live", 60).await;
        let done = next(&rx, "done", 30).await;
        let _ = child.wait();
        assert_plays(&seen, protocol);
        assert!(seen["bar"].as_str().unwrap_or_default().contains("behind live") || protocol == "webrtc", "{seen}");
        assert_eq!(done["outside"], json!([]), "nothing from another host: {done}");
        assert_eq!(done["refused"], json!([]), "nothing the page's policy refused: {done}");
    }

    // Left to itself it picks WebRTC; the stream stops and starts again,
    // and it plays again without anyone touching it.
    let url = format!("http://{}/show.html", server.http);
    let (mut child, rx) = player(&url, 120, true);
    let seen = next(&rx, "live", 60).await;
    assert_plays(&seen, "webrtc");
    let _ = publisher.kill();
    let _ = publisher.wait();
    let gone = next(&rx, "state", 30).await;
    assert_ne!(gone["state"], "live", "{gone}");
    let mut publisher = ffmpeg_spawn(&rtmp_publish_args(&server.rtmp_url("show"), 300));
    let back = next(&rx, "resumed", 90).await;
    assert_eq!(back["event"], "resumed", "the page played again by itself: {back}");
    assert_eq!(back["protocol"], "webrtc", "{back}");
    let _ = child.kill();
    let _ = child.wait();
    let _ = publisher.kill();
    let _ = publisher.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protected_stream_plays_with_its_token_and_says_so_without() {
    let server = Server::start(&["--hls-segment", "1"]);
    let a = ADMIN_KEY;
    api_ok("POST", &server.api("/tenants"), a, Some(json!({"id": "t"})), 201).await;
    let stream = json!({"name": "paid", "tenant": "t", "playback_token_required": true});
    api_ok("POST", &server.api("/streams"), a, Some(stream), 201).await;
    let key = api_ok("POST", &server.api("/streams/paid/keys"), a, Some(json!({})), 201).await;
    let mut publisher = ffmpeg_spawn(&rtmp_publish_args(&server.rtmp_url(key["key"].as_str().unwrap()), 120));
    let token = api_ok("POST", &server.api("/streams/paid/tokens"), a, Some(json!({})), 201).await;
    let token = token["token"].as_str().unwrap().to_owned();
    until("the stream to go live", 60, || {
        let log = server.log();
        async move { log.contains("rtmp publish started").then_some(()) }
    })
    .await;

    let (mut child, rx) = player(&format!("http://{}/paid.html", server.http), 30, false);
    let done = next(&rx, "done", 60).await;
    let _ = child.wait();
    assert_eq!(done["state"], "denied", "{done}");
    assert!(done["message"].as_str().unwrap_or_default().contains("needs a playback token"), "{done}");

    for protocol in ["hls", "webrtc"] {
        let url = format!("http://{}/paid.html?protocol={protocol}&token={token}", server.http);
        let (mut child, rx) = player(&url, 40, false);
        let seen = next(&rx, "live", 60).await;
        let _ = child.kill();
        let _ = child.wait();
        assert_plays(&seen, protocol);
    }
    let _ = publisher.kill();
    let _ = publisher.wait();
}
