//! The load generator (`tidecast-load`'s viewers and publisher, from the
//! tidecast-bench library) against the real server: a clip made by ffmpeg
//! is pushed in real time without re-encoding, and one viewer of each kind
//! (RTMP, LL-HLS, HLS, SRT, WHEP) must start, receive media and finish
//! without an error. Keeps the benchmark's tools honest: a viewer that
//! silently receives nothing would make every number it reports wrong.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use tidecast_bench::load::{get, hls, publish, rtmp, srt, whep, RunTime, ViewerStats};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_load_viewer_plays_a_published_clip() {
    let server = Server::start(&["--hls-segment", "1"]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("clip.flv");
    // 720p with 2 s GOPs: a new SRT player's fast-start burst is then
    // hundreds of payloads, which srt-tokio loses unless they are paced
    // (srt::pace).
    let mut args = lavfi_h264_aac(4, "1280x720", 25, 44100);
    args.extend(["-g", "50", "-b:v", "3M", "-minrate", "3M", "-maxrate", "3M", "-bufsize", "3M"].map(String::from));
    args.extend(["-f".into(), "flv".into(), path.to_string_lossy().into_owned()]);
    let out = ffmpeg(&args);
    assert!(out.status.success(), "ffmpeg made the clip: {}", String::from_utf8_lossy(&out.stderr));
    let clip = Arc::new(publish::Clip::open(&path.to_string_lossy()).expect("the clip opens"));

    let publish_until = tokio::time::Instant::now() + Duration::from_secs(30);
    let target = rtmp::RtmpUrl::parse(&server.rtmp_url("load")).unwrap();
    let publisher = tokio::spawn(publish::publisher(target, clip, publish_until));
    wait_for_segment(&server, "load", "video", 1).await;

    let run = RunTime {
        until: tokio::time::Instant::now() + Duration::from_secs(6),
        connect_timeout: Duration::from_secs(5),
    };
    let client = reqwest::Client::new();
    let playlist = server.hls_url("load", "video.m3u8");
    let viewers: Vec<(&str, tokio::task::JoinHandle<ViewerStats>)> = vec![
        ("rtmp", tokio::spawn(rtmp::viewer(rtmp::RtmpUrl::parse(&server.rtmp_url("load")).unwrap(), run))),
        ("llhls", tokio::spawn(hls::viewer(client.clone(), playlist.clone(), hls::Mode::LowLatency, run))),
        ("hls", tokio::spawn(hls::viewer(client.clone(), playlist, hls::Mode::Plain, run))),
        ("srt", tokio::spawn(srt::viewer(server.srt.to_string(), "#!::r=load,m=request".into(), run))),
        ("whep", tokio::spawn(whep::viewer(client.clone(), format!("http://{}/whep/load", server.http), run))),
    ];
    for (kind, task) in viewers {
        let s = task.await.unwrap();
        assert_eq!(s.error, None, "{kind} viewer ended in an error\n{}", server.log());
        assert!(s.started, "{kind} viewer started");
        assert!(s.bytes > 10_000, "{kind} viewer received media: {} bytes", s.bytes);
        if kind != "srt" {
            // SRT carries MPEG-TS the viewer does not parse: no media clock.
            assert!(s.media_seconds > 1.0, "{kind} viewer got over a second of media: {}", s.media_seconds);
        }
    }
    // The request hammer (`--get`): keep-alive connections fetching one
    // complete segment, which the server sends with a Content-Length.
    let text = reqwest::get(server.hls_url("load", "video.m3u8")).await.unwrap().text().await.unwrap();
    let segment = text.lines().rfind(|l| !l.is_empty() && !l.starts_with('#')).expect("a complete segment").to_owned();
    let url = server.hls_url("load", &segment);
    let len = reqwest::get(&url).await.unwrap().bytes().await.unwrap().len() as u64;
    let g = get::hammer(url, 4, tokio::time::Instant::now() + Duration::from_secs(1)).await;
    assert!(g.ok > 0 && g.failed == 0, "the hammer's requests all succeed: {g:?}");
    assert_eq!(g.bytes, g.ok * len, "every response carries the whole segment");
    publisher.abort();
    // WHEP viewers hang up with DELETE, as a browser page does.
    until("WHEP sessions closed", 10, || async {
        let (_, body, _) = api_call("GET", &server.api("/webrtc/sessions"), ADMIN_KEY, None).await;
        let items = body["items"].as_array().cloned().unwrap_or_default();
        let closed =
            |s: &serde_json::Value| s["state"] == "closed" && s["closed_reason"] == "closed by the client (DELETE)";
        (!items.is_empty() && items.iter().all(closed)).then_some(())
    })
    .await;
}
