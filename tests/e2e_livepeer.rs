//! Livepeer offload end to end. go-livepeer cannot be installed on these
//! machines, so the gateways are a stand-in written in the test
//! (`common/livepeer_gateway.rs`): the same HTTP contract, lpms's profile
//! rules, renditions made for real by the ffmpeg CLI, the multipart answer
//! as go-livepeer writes it. ffmpeg publishes over RTMP to a stream whose
//! profile has `backend = "livepeer"`; triggers go to a real webhook
//! receiver; hls.js in headless Chromium switches between the renditions.

mod common;
#[path = "common/livepeer_gateway.rs"]
mod livepeer_gateway;
#[path = "common/webhooks.rs"]
mod webhooks;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use base64::Engine;
use common::*;
use livepeer_gateway::{Gateway, Mode};
use webhooks::{next_hook, receiver};

/// Each test runs a server, a publisher and the stand-in's ffmpeg per
/// segment: one at a time, so a 2-core machine keeps up with the
/// segments' deadlines (a lost segment is a test failure here).
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn config(gateways: &[String], fallback: &str) -> String {
    let list: Vec<String> = gateways.iter().map(|g| format!("\"{g}\"")).collect();
    format!(
        r#"
[transcode]
default_profile = "lp"
audio_bridge = "off"
[transcode.livepeer]
gateways = [{}]
fallback = "{fallback}"
[transcode.profiles.lp]
backend = "livepeer"
hw = "off"
preset = "ultrafast"
rungs = [{{ height = 240, bitrate_kbps = 400 }}, {{ height = 180, bitrate_kbps = 250 }}]
"#,
        list.join(", ")
    )
}

fn publish(server: &Server, seconds: u32) -> std::process::Child {
    let mut args = vec!["-re".to_string()];
    args.extend(lavfi_h264_aac(seconds, "640x360", 30, 48000));
    args.extend(["-f".into(), "flv".into(), server.rtmp_url("cam")]);
    ffmpeg_spawn(&args)
}

async fn livepeer_status(server: &Server) -> serde_json::Value {
    let load = api_ok("GET", &server.api("/load"), ADMIN_KEY, None, 200).await;
    load["transcode"]["livepeer"][0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renditions_come_back_from_the_gateway_and_a_503_fails_over() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let busy = Gateway::start(Mode::Unavailable).await;
    let good = Gateway::start(Mode::Normal).await;
    let server = Server::start_with_config(Some(&config(&[busy.url(), good.url()], "none")), &["--hls-segment", "1"]);
    let mut publisher = publish(&server, 40);

    // The smaller rendition's third segment: several segments came back.
    let last = wait_for_segment(&server, "cam", "video2", 3).await;
    let multivariant = get_text(&server.hls_url("cam", "index.m3u8")).await;
    let sizes: Vec<&str> = multivariant.lines().filter_map(|l| attr(l, "RESOLUTION")).collect();
    // lpms sizes: multiples of 16 (MistServer's rounding).
    assert_eq!(sizes, ["640x360", "416x240", "320x176"], "{multivariant}");

    // Each rendition decodes at its size.
    for (r, size) in [("video1", ("416", "240")), ("video2", ("320", "176"))] {
        let list = wait_for_segment(&server, "cam", r, 2).await;
        let file = first_segment_file(&server, "cam", r, &list).await;
        let v = ffprobe(&file, &["-select_streams", "v:0", "-show_entries", "stream=width,height"]);
        assert_eq!(
            (v[0].get("width").map(String::as_str), v[0].get("height").map(String::as_str)),
            (Some(size.0), Some(size.1)),
            "{r}: {v:?}"
        );
    }
    // Continuous and aligned: the rendition's segments carry the source's
    // numbers and about its durations.
    let source = get_text(&server.hls_url("cam", "video.m3u8")).await;
    let durations = |list: &str| -> std::collections::BTreeMap<u64, f64> {
        let first: u64 = list
            .lines()
            .find_map(|l| l.strip_prefix("#EXT-X-MEDIA-SEQUENCE:"))
            .and_then(|v| v.trim().parse().ok())
            .expect("a media sequence");
        list.lines()
            .filter_map(|l| l.strip_prefix("#EXTINF:"))
            .filter_map(|d| d.trim_end_matches(',').parse().ok())
            .enumerate()
            .map(|(i, d)| (first + i as u64, d))
            .collect()
    };
    let (src, rend) = (durations(&source), durations(&last));
    let common: Vec<u64> = rend.keys().filter(|m| src.contains_key(m)).copied().collect();
    assert!(common.len() >= 2, "segments in both lists:\n{source}\n{last}");
    for msn in common {
        assert!(
            (src[&msn] - rend[&msn]).abs() < 0.05,
            "segment {msn}: {} vs {}\n{source}\n{last}",
            src[&msn],
            rend[&msn]
        );
    }

    let lp = livepeer_status(&server).await;
    let metrics = reqwest::get(format!("http://{}/metrics", server.admin)).await.unwrap().text().await.unwrap();
    let _ = publisher.kill();
    let _ = publisher.wait();
    assert!(metrics.contains("tidecast_livepeer_segments{stream=\"cam\",what=\"done\"}"), "{metrics}");
    assert!(metrics.contains(&format!("tidecast_livepeer_speed_factor{{gateway=\"{}\",stream=\"cam\"}}", good.url())));
    assert_eq!(lp["gateway"], good.url(), "moved to the working gateway: {lp}");
    assert!(lp["gateway_switches"].as_u64() >= Some(1), "{lp}");
    assert!(lp["segments_done"].as_u64() >= Some(3), "{lp}");
    assert_eq!(lp["bad_parts"], 0, "{lp}");
    assert_eq!(busy.bad_requests.load(Ordering::Relaxed), 0, "headers as go-livepeer wants them");
    assert_eq!(good.bad_requests.load(Ordering::Relaxed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_gateway_down_the_local_ladder_takes_over() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let a = Gateway::start(Mode::Unavailable).await;
    let b = Gateway::start(Mode::Garbled).await;
    let server = Server::start_with_config(Some(&config(&[a.url(), b.url()], "local")), &["--hls-segment", "1"]);
    let mut publisher = publish(&server, 40);
    let lp = until("the fallback to the local ladder", 60, || async {
        let lp = livepeer_status(&server).await;
        (lp["fell_back_to_local"] == true).then_some(lp)
    })
    .await;
    assert!(lp["segments_failed"].as_u64() >= Some(3), "{lp}");
    // The local ladder's renditions (even sizes, not lpms's).
    wait_for_segment(&server, "cam", "video2", 1).await;
    let multivariant = get_text(&server.hls_url("cam", "index.m3u8")).await;
    let _ = publisher.kill();
    let _ = publisher.wait();
    let sizes: Vec<&str> = multivariant.lines().filter_map(|l| attr(l, "RESOLUTION")).collect();
    assert_eq!(sizes, ["640x360", "426x240", "320x180"], "{multivariant}");
    let load = api_ok("GET", &server.api("/load"), ADMIN_KEY, None, 200).await;
    assert_eq!(load["transcode"]["ladders"][0]["stream"], "cam", "{load}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_refusals_fire_the_rejected_trigger_and_completions_are_reported() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let gw = Gateway::start(Mode::Reject).await;
    let server = Server::start_with_config(Some(&config(&[gw.url()], "none")), &["--hls-segment", "1"]);
    let (url, mut hooks) =
        receiver(Arc::new(|_: &str, _: &str, _| Some((axum::http::StatusCode::OK, String::new())))).await;
    for t in ["LIVEPEER_SEGMENT_REJECTED", "LIVEPEER_SEGMENT_COMPLETE"] {
        let handler = serde_json::json!({"trigger": t, "url": format!("{url}/{t}")});
        api_ok("POST", &server.api("/triggers"), ADMIN_KEY, Some(handler), 201).await;
    }
    let mut publisher = publish(&server, 40);

    // MistServer's payload: options, the segment (base64), the source
    // track, the gateway, and the other gateway or "N/A".
    let hook = next_hook(&mut hooks, "LIVEPEER_SEGMENT_REJECTED").await;
    let lines: Vec<&str> = hook.body.split('\n').collect();
    assert_eq!(lines.len(), 5, "{}", hook.body);
    let options: serde_json::Value = serde_json::from_str(lines[0]).expect("options JSON");
    assert_eq!(options["profiles"][0]["name"], "240p", "{options}");
    let segment = base64::engine::general_purpose::STANDARD.decode(lines[1]).expect("base64");
    assert!(segment.len() >= 188 && segment[0] == 0x47, "an MPEG-TS segment");
    assert!(lines[2].contains("h264") && lines[2].contains("640"), "the source track: {}", lines[2]);
    assert_eq!((lines[3], lines[4]), (gw.url().as_str(), "N/A"));

    // The gateway recovers: segments complete and are reported.
    gw.set_mode(Mode::Normal);
    let hook = next_hook(&mut hooks, "LIVEPEER_SEGMENT_COMPLETE").await;
    let lines: Vec<&str> = hook.body.split('\n').collect();
    let _ = publisher.kill();
    let _ = publisher.wait();
    assert_eq!(lines.len(), 15, "{}", hook.body);
    assert_eq!(lines[0], "cam");
    assert_eq!((lines[5], lines[6]), ("640", "360"), "the source size");
    assert_eq!((lines[9], lines[11]), ("2", gw.url().as_str()), "two renditions from the gateway");
    let renditions: serde_json::Value = serde_json::from_str(lines[14]).expect("renditions JSON");
    assert_eq!(renditions, serde_json::json!(["240p", "180p"]));
    assert!(gw.transcoded.load(Ordering::Relaxed) >= 1);
    let lp = livepeer_status(&server).await;
    assert!(lp["rejected"].as_u64() >= Some(2), "{lp}");
}

/// A gateway slower than the segments' deadlines: each segment is given
/// up (counted), at most two are ever out, and the source plays on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_gateway_costs_skipped_segments_not_a_queue() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let gw = Gateway::start(Mode::Slow).await;
    let server = Server::start_with_config(Some(&config(&[gw.url()], "none")), &["--hls-segment", "1"]);
    let mut publisher = publish(&server, 40);
    let lp = until("segments given up at their deadline", 60, || async {
        let lp = livepeer_status(&server).await;
        (lp["segments_skipped"].as_u64() >= Some(3)).then_some(lp)
    })
    .await;
    let source = wait_for_segment(&server, "cam", "video", 6).await;
    let _ = publisher.kill();
    let _ = publisher.wait();
    assert!(source.contains("#EXTINF"), "the source keeps its segments");
    // Answers come ten seconds late, after their deadline: never published.
    assert_eq!(lp["segments_done"], 0, "{lp}");
    // Sent, then skipped at the limit or at the deadline; never more than
    // two in flight.
    let sent = lp["segments_sent"].as_u64().unwrap_or(0);
    let skipped = lp["segments_skipped"].as_u64().unwrap_or(0);
    assert!(sent >= 1 && skipped >= 3, "{lp}");
}

/// hls.js in Chromium plays the source and the Livepeer renditions,
/// switched through with `hls.nextLevel`. Stalls are not asserted: the
/// renditions trail the source by a segment and a turnaround, more than
/// the part hold-back, so a switch to one at the live edge can wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hlsjs_switches_between_livepeer_renditions() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let browser_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser");
    let gw = Gateway::start(Mode::Normal).await;
    let server = Server::start_with_config(Some(&config(&[gw.url()], "none")), &["--hls-segment", "1"]);
    let mut publisher = publish(&server, 40);
    wait_for_segment(&server, "cam", "video2", 2).await;
    let (seen, stdout) = player("hlsjs.mjs", browser_dir, server.hls_url("cam", "index.m3u8"), &["10", "switch"]).await;
    let _ = publisher.kill();
    let _ = publisher.wait();
    let levels: Vec<&str> = seen["levels"].as_array().into_iter().flatten().filter_map(|l| l.as_str()).collect();
    assert_eq!(levels, ["320x176", "416x240", "640x360"], "{stdout}");
    let switched: std::collections::BTreeSet<u64> =
        seen["switched"].as_array().into_iter().flatten().filter_map(|l| l.as_u64()).collect();
    assert_eq!(switched.len(), 3, "every level played: {stdout}");
    let fatal = seen["errors"].as_array().into_iter().flatten().filter(|e| e["fatal"] == true).count();
    assert_eq!(fatal, 0, "no fatal error: {stdout}");
    let advanced = seen["currentTime"].as_f64().unwrap_or(0.0) - seen["firstTime"].as_f64().unwrap_or(f64::NAN);
    assert!(advanced > 4.0, "playback advanced: {stdout}");
}

/// Benchmark, not a test (`make bench-livepeer`): how far a Livepeer
/// rendition trails the source with the stand-in gateway. A part is asked
/// for in the source's playlist and then in the smaller rendition's, each
/// with a blocking reload; the second wait is the delay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: run with make bench-livepeer"]
async fn livepeer_rendition_delay() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let gw = Gateway::start(Mode::Normal).await;
    let server = Server::start_with_config(Some(&config(&[gw.url()], "none")), &["--hls-segment", "1"]);
    let mut publisher = publish(&server, 60);
    wait_for_segment(&server, "cam", "video2", 3).await;
    let mut delays = Vec::new();
    for _ in 0..8 {
        let list = get_text(&server.hls_url("cam", "video.m3u8")).await;
        let hint = list.lines().find(|l| l.starts_with("#EXT-X-PRELOAD-HINT")).and_then(|l| attr(l, "URI"));
        let Some((msn, part)) = hint.and_then(|u| {
            let stem = u.strip_suffix(".m4s")?;
            let mut it = stem.rsplit(['-', '.']);
            let part: u64 = it.next()?.parse().ok()?;
            let msn: u64 = it.next()?.parse().ok()?;
            Some((msn, part))
        }) else {
            continue;
        };
        let q = format!("?_HLS_msn={msn}&_HLS_part={part}");
        get_text(&(server.hls_url("cam", "video.m3u8") + &q)).await;
        let t = std::time::Instant::now();
        get_text(&(server.hls_url("cam", "video2.m3u8") + &q)).await;
        delays.push(t.elapsed().as_millis());
    }
    let lp = livepeer_status(&server).await;
    let _ = publisher.kill();
    let _ = publisher.wait();
    println!("livepeer rendition part after the source's (ms, per try): {delays:?}");
    println!("last turnaround {} ms, speed factor {}", lp["last_turnaround_ms"], lp["speed_factor"]);
}
