//! RTMP playback: ffmpeg plays a live stream over RTMP (published over
//! RTMP), with and without a playback token; and the same FLV over HTTP.

mod common;

use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffmpeg_plays_a_live_stream_over_rtmp() {
    let server = Server::start(&["--hls-segment", "1"]);
    let mut publisher = ffmpeg_spawn(&rtmp_publish_args(&server.rtmp_url("live1"), 60));
    wait_for_segment(&server, "live1", "video", 1).await;

    // While one player reads, the load report counts it.
    let url = server.rtmp_url("live1");
    let dir = server.dir.path().to_owned();
    let reader = tokio::task::spawn_blocking(move || read_live(&url, 4, &dir.join("rtmp.ts")));
    until("the load report to count the RTMP player", 30, || {
        let url = server.api("/load");
        async move {
            let load = api_ok("GET", &url, ADMIN_KEY, None, 200).await;
            (load["viewers_by_protocol"]["rtmp"] == 1).then_some(())
        }
    })
    .await;
    let sections = reader.await.unwrap();
    let v = sections.iter().find(|s| s.get("codec_name").map(String::as_str) == Some("h264")).expect("h264");
    assert_eq!((v["width"].as_str(), v["height"].as_str()), ("320", "240"));
    let a = sections.iter().find(|s| s.get("codec_name").map(String::as_str) == Some("aac")).expect("aac");
    assert_eq!(a["sample_rate"], "44100");
    assert_monotonic(&sections);
    let load = api_ok("GET", &server.api("/load"), ADMIN_KEY, None, 200).await;
    assert!(load["bytes_out_total"]["rtmp"].as_u64().unwrap() > 10_000, "{load}");

    // A stream that is not live is refused at once.
    let out =
        ffmpeg(&["-v", "error", "-i", &server.rtmp_url("nobody"), "-t", "1", "-f", "null", "-"].map(String::from));
    assert!(!out.status.success());
    assert!(server.log().contains("rtmp play refused: no such live stream"), "{}", server.log());
    let _ = publisher.kill();
    let _ = publisher.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtmp_players_of_a_protected_stream_need_a_token() {
    let server = Server::start(&["--hls-segment", "1"]);
    let a = ADMIN_KEY;
    api_ok("POST", &server.api("/tenants"), a, Some(json!({"id": "t"})), 201).await;
    api_ok(
        "POST",
        &server.api("/streams"),
        a,
        Some(json!({"name": "paid", "tenant": "t", "playback_token_required": true})),
        201,
    )
    .await;
    let key = api_ok("POST", &server.api("/streams/paid/keys"), a, Some(json!({})), 201).await;
    let mut publisher = ffmpeg_spawn(&rtmp_publish_args(&server.rtmp_url(key["key"].as_str().unwrap()), 60));
    let token = api_ok("POST", &server.api("/streams/paid/tokens"), a, Some(json!({})), 201).await;
    let token = token["token"].as_str().unwrap().to_owned();
    until("the stream to go live", 60, || {
        let log = server.log();
        async move { log.contains("rtmp publish started").then_some(()) }
    })
    .await;

    let out = ffmpeg(&["-v", "error", "-i", &server.rtmp_url("paid"), "-t", "1", "-f", "null", "-"].map(String::from));
    assert!(!out.status.success(), "no token, no playback");
    assert!(server.log().contains("this stream needs a playback token"), "{}", server.log());

    let url = format!("{}?token={token}", server.rtmp_url("paid"));
    let dir = server.dir.path().to_owned();
    let sections = tokio::task::spawn_blocking(move || read_live(&url, 2, &dir.join("paid.ts"))).await.unwrap();
    assert!(sections.iter().any(|s| s.get("codec_name").map(String::as_str) == Some("h264")));
    let _ = publisher.kill();
    let _ = publisher.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffmpeg_and_ffprobe_read_http_flv() {
    let server = Server::start(&["--hls-segment", "1"]);
    let mut publisher = ffmpeg_spawn(&rtmp_publish_args(&server.rtmp_url("flvcam"), 60));
    wait_for_segment(&server, "flvcam", "video", 1).await;

    // MistServer's URL, read by ffmpeg as a live FLV file.
    let url = format!("http://{}/flvcam.flv", server.http);
    let dir = server.dir.path().to_owned();
    let sections = tokio::task::spawn_blocking(move || read_live(&url, 3, &dir.join("flv.ts"))).await.unwrap();
    let v = sections.iter().find(|s| s.get("codec_name").map(String::as_str) == Some("h264")).expect("h264");
    assert_eq!((v["width"].as_str(), v["height"].as_str()), ("320", "240"));
    let a = sections.iter().find(|s| s.get("codec_name").map(String::as_str) == Some("aac")).expect("aac");
    assert_eq!(a["sample_rate"], "44100");
    assert_monotonic(&sections);

    // ffprobe names the container on the other path.
    let url = format!("http://{}/flv/flvcam.flv", server.http);
    let probe =
        tokio::task::spawn_blocking(move || ffprobe(&url, &["-show_entries", "format=format_name"])).await.unwrap();
    assert!(probe.iter().any(|s| s.get("format_name").map(String::as_str) == Some("flv")), "{probe:?}");

    let load = api_ok("GET", &server.api("/load"), ADMIN_KEY, None, 200).await;
    assert!(load["bytes_out_total"]["flv"].as_u64().unwrap() > 10_000, "{load}");
    // Not live, not an FLV name: not found.
    assert_eq!(get(&format!("http://{}/nobody.flv", server.http)).await.0, 404);
    assert_eq!(get(&format!("http://{}/flvcam.mp3", server.http)).await.0, 404);
    let _ = publisher.kill();
    let _ = publisher.wait();
}
