//! hls.js in headless Chromium plays the LL-HLS output of an RTMP publish:
//! the real player, using parts, blocking reloads and delta updates.
//! `make test` installs Debian's chromium and the npm packages in
//! tests/browser; this test fails (it does not skip) if they are missing.

mod common;

use std::process::Command;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hlsjs_plays_ll_hls_in_chromium() {
    let browser_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser");
    assert!(
        std::path::Path::new(browser_dir).join("node_modules/playwright-core").exists(),
        "run `make test` (or `npm ci --prefix tests/browser`) to install the browser test peers"
    );
    let server = Server::start(&["--hls-segment", "1"]);
    let mut args = vec!["-re".to_string()];
    args.extend(lavfi_h264_aac(40, "320x240", 25, 44100));
    args.extend(["-f".into(), "flv".into(), server.rtmp_url("web")]);
    let mut publisher = ffmpeg_spawn(&args);
    wait_for_segment(&server, "web", "video", 1).await;

    let url = server.hls_url("web", "index.m3u8");
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node").arg(format!("{browser_dir}/hlsjs.mjs")).arg(url).arg("8").output()
    })
    .await
    .unwrap()
    .expect("node is installed");
    let _ = publisher.kill();
    let _ = publisher.wait();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "player script failed: {}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    eprintln!("hls.js saw: {stdout}");
    let field = |name: &str| -> f64 {
        let at = stdout.find(&format!("\"{name}\":")).unwrap_or_else(|| panic!("no {name} in {stdout}"));
        let rest = &stdout[at + name.len() + 3..];
        rest[..rest.find([',', '}']).unwrap()].parse().unwrap_or(f64::NAN)
    };
    assert!(stdout.contains("\"errors\":[]"), "hls.js reported errors: {stdout}");
    assert!(field("decodedFrames") > 50.0, "frames were decoded: {stdout}");
    assert!(field("currentTime") - field("firstTime") > 3.0, "playback advanced: {stdout}");
    assert_eq!((field("width"), field("height")), (320.0, 240.0));
    assert!(field("parts") > 0.0, "hls.js loaded LL-HLS parts: {stdout}");
    assert!(field("blockingReloads") > 0.0, "hls.js used blocking playlist reloads: {stdout}");
}
