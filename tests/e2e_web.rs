//! The web face: a stream's player page (`/{stream}.html`) in headless
//! Chromium plays an ffmpeg RTMP stream over LL-HLS, LL-DASH and WebRTC,
//! picks WebRTC by itself, comes back on its own when the stream stops and
//! starts again, and says so when a protected stream has no token. The
//! operator dashboard (the admin listener's `/`) signs in with a tenant's
//! key, creates a stream and a key, sees it live and its viewer, kicks the
//! viewer; another tenant's key sees none of it.
//! `make test` installs Debian's chromium and the npm packages in
//! tests/browser; this test fails (it does not skip) if they are missing.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use common::*;
use serde_json::{json, Value};

const BROWSER_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser");

/// `tests/browser/player.mjs` on `url`, its JSON lines as they come.
/// With `picture`, `make screenshots` (`PLAYER_SCREENSHOT=PATH`) keeps a
/// picture of the page once it plays.
fn player(url: &str, seconds: u32, mode: &str, picture: bool) -> (Child, std::sync::mpsc::Receiver<Value>) {
    let seconds = seconds.to_string();
    let mut args = vec![url, seconds.as_str()];
    if !mode.is_empty() {
        args.push(mode);
    }
    browser_script("player.mjs", &args, picture)
}

/// A script of `tests/browser` with `args`, its JSON lines as they come.
/// `PLAYER_SCREENSHOT` reaches it only with `picture`.
fn browser_script(script: &str, args: &[&str], picture: bool) -> (Child, std::sync::mpsc::Receiver<Value>) {
    let mut cmd = Command::new("node");
    cmd.arg(format!("{BROWSER_DIR}/{script}")).args(args);
    if !picture {
        cmd.env_remove("PLAYER_SCREENSHOT");
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
    assert!(seen["frames"].as_u64() > Some(0), "{protocol}: video frames were decoded: {seen}");
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
        let (mut child, rx) = player(&url, 40, if protocol == "webrtc" { "" } else { "preview" }, protocol == "hls");
        let seen = next(&rx, "live", 60).await;
        let done = next(&rx, "done", 30).await;
        let _ = child.wait();
        assert_plays(&seen, protocol);
        assert!(seen["bar"].as_str().unwrap_or_default().contains("behind live") || protocol == "webrtc", "{seen}");
        if protocol != "webrtc" {
            // A seek bar over the window, with the sprite sheet's thumbnail
            // of the time under the pointer.
            let p = &seen["preview"];
            assert!(p["dvr"].as_f64() >= Some(5.0), "{protocol}: a rewind window: {seen}");
            assert_eq!(p["shown"], true, "{protocol}: a preview over the seek bar: {seen}");
            assert!(p["image"].as_str().unwrap_or_default().contains("/thumbs/show.jpg"), "{seen}");
            assert_eq!((p["width"].as_str(), p["status"].as_u64()), (Some("160px"), Some(200)), "{seen}");
        }
        assert_eq!(done["outside"], json!([]), "nothing from another host: {done}");
        assert_eq!(done["refused"], json!([]), "nothing the page's policy refused: {done}");
    }

    // Left to itself it picks WebRTC; the stream stops and starts again,
    // and it plays again without anyone touching it.
    let url = format!("http://{}/show.html", server.http);
    let (mut child, rx) = player(&url, 120, "resume", false);
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
    let (mut publisher, token) = protected_stream(&server, "paid", 120).await;

    let (mut child, rx) = player(&format!("http://{}/paid.html", server.http), 30, "", false);
    let done = next(&rx, "done", 60).await;
    let _ = child.wait();
    assert_eq!(done["state"], "denied", "{done}");
    assert!(done["message"].as_str().unwrap_or_default().contains("needs a playback token"), "{done}");

    for protocol in ["hls", "webrtc"] {
        let url = format!("http://{}/paid.html?protocol={protocol}&token={token}", server.http);
        let (mut child, rx) = player(&url, 40, "", false);
        let seen = next(&rx, "live", 60).await;
        let _ = child.kill();
        let _ = child.wait();
        assert_plays(&seen, protocol);
    }
    let _ = publisher.kill();
    let _ = publisher.wait();
}

/// An HLS viewer: fetches the stream's playlists every half second until
/// `stop`.
fn hls_viewer(http: std::net::SocketAddr, stream: &str, stop: tokio_util::sync::CancellationToken) {
    let urls = [format!("http://{http}/hls/{stream}/index.m3u8"), format!("http://{http}/hls/{stream}/video.m3u8")];
    tokio::spawn(async move {
        let client = reqwest::Client::builder().user_agent("dashboard-test-viewer").build().unwrap();
        while !stop.is_cancelled() {
            for u in &urls {
                let _ = client.get(u).send().await.map(|r| r.bytes());
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_runs_a_tenant_and_shows_it_to_no_one_else() {
    let server = Server::start(&["--hls-segment", "1", "--reconnect-grace", "0"]);
    let a = ADMIN_KEY;
    let mut keys = Vec::new();
    for t in ["t1", "t2"] {
        api_ok("POST", &server.api("/tenants"), a, Some(json!({"id": t})), 201).await;
        let k = api_ok("POST", &server.api("/keys"), a, Some(json!({"tenant": t, "label": "dashboard"})), 201).await;
        keys.push(k["secret"].as_str().expect("a secret").to_owned());
    }
    let admin = format!("http://{}", server.admin);
    let page = reqwest::get(format!("{admin}/")).await.expect("the dashboard");
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"].to_str().unwrap_or_default().to_owned();
    assert!(csp.contains("connect-src 'self'") && csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(!page.text().await.unwrap().contains("<script>"), "no inline script");

    // Tenant t1 signs in, creates a stream and a key, and publishes with it.
    let shot = std::env::var("DASHBOARD_SCREENSHOT").unwrap_or_default();
    let mut args = vec![admin.as_str(), keys[0].as_str(), "act", "cam"];
    if !shot.is_empty() {
        args.push(&shot);
    }
    let (mut child, rx) = browser_script("dashboard.mjs", &args, false);
    let signed = next(&rx, "signed-in", 60).await;
    assert_eq!(signed["role"], "tenant", "{signed}");
    assert_eq!(signed["stored"], json!({"session": true, "cookie": ""}), "the key is in session storage, not a cookie");
    let key = next(&rx, "key", 30).await;
    let secret = key["secret"].as_str().unwrap_or_else(|| panic!("the page showed the key: {key}")).to_owned();
    let mut publisher = ffmpeg_spawn(&rtmp_publish_args(&server.rtmp_url(&secret), 120));
    let live = next(&rx, "live", 60).await;
    assert_eq!(live["event"], "live", "the dashboard saw the stream go live: {live}");
    let tracks = live["tracks"].as_str().unwrap_or_default();
    assert!(tracks.contains("320x240") && tracks.to_lowercase().contains("aac"), "its tracks: {live}");
    // An HLS viewer appears; the operator kicks it.
    let stop = tokio_util::sync::CancellationToken::new();
    hls_viewer(server.http, "cam", stop.clone());
    let viewer = next(&rx, "viewer", 60).await;
    let id = viewer["id"].as_str().unwrap_or_else(|| panic!("the dashboard listed the viewer: {viewer}")).to_owned();
    let kicked = next(&rx, "kicked", 30).await;
    assert_eq!(kicked["id"].as_str(), Some(id.as_str()), "{kicked}");
    assert_eq!((kicked["refused"].clone(), kicked["elsewhere"].clone()), (json!([]), json!([])), "{kicked}");
    let _ = child.wait();
    let sessions = api_ok("GET", &server.api("/sessions"), a, None, 200).await;
    let ids: Vec<&str> = sessions["items"].as_array().into_iter().flatten().filter_map(|s| s["id"].as_str()).collect();
    assert!(!ids.contains(&id.as_str()), "the kicked session is gone: {sessions}");

    // Tenant t2 sees none of it; the admin sees it all, and the node.
    let (mut child, rx) = browser_script("dashboard.mjs", &[admin.as_str(), keys[1].as_str(), "look"], false);
    let seen = next(&rx, "seen", 60).await;
    let _ = child.wait();
    assert_eq!(
        (seen["streams"].clone(), seen["sessions"].clone(), seen["node"].clone()),
        (json!([]), json!([]), json!(false)),
        "{seen}"
    );
    let (mut child, rx) = browser_script("dashboard.mjs", &[admin.as_str(), a, "look"], false);
    let seen = next(&rx, "seen", 60).await;
    let _ = child.wait();
    assert_eq!(seen["streams"], json!(["cam"]), "{seen}");
    assert_eq!(seen["node"], true, "{seen}");
    assert!(!seen["sessions"].as_array().is_some_and(Vec::is_empty), "the publisher at least: {seen}");
    stop.cancel();
    let _ = publisher.kill();
    let _ = publisher.wait();
}
