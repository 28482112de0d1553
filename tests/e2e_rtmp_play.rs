//! RTMP playback: ffmpeg plays a live stream over RTMP (published over
//! RTMP), with and without a playback token; and the same FLV over HTTP.

mod common;

use common::*;

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
    let (mut publisher, token) = protected_stream(&server, "paid", 60).await;

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

/// MistServer's other progressive outputs on the HTTP port: `/{stream}.mp4`
/// (live fragmented MP4), `/{stream}.mkv` (live Matroska), `/{stream}.ts`
/// and `/{stream}.jpg` (the newest
/// keyframe, scaled with `?width=`); a stream without video has no
/// thumbnail, and a clip from before the window is 416.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progressive_mp4_ts_and_jpg_outputs() {
    let server = Server::start(&["--hls-segment", "1"]);
    let mut publisher = ffmpeg_spawn(&rtmp_publish_args(&server.rtmp_url("prog"), 60));
    wait_for_segment(&server, "prog", "video", 1).await;
    let http = server.http;
    let dir = server.dir.path().to_owned();

    for ext in ["mp4", "mkv", "ts"] {
        let (url, out) = (format!("http://{http}/prog.{ext}"), dir.join(format!("prog-{ext}.ts")));
        let sections = tokio::task::spawn_blocking(move || read_live(&url, 3, &out)).await.unwrap();
        let v = sections.iter().find(|s| s.get("codec_name").map(String::as_str) == Some("h264")).expect("h264");
        assert_eq!((v["width"].as_str(), v["height"].as_str()), ("320", "240"), ".{ext}");
        assert!(
            sections.iter().any(|s| s.get("codec_name").map(String::as_str) == Some("aac")),
            ".{ext}: {sections:?}"
        );
        assert_monotonic(&sections);
    }

    // The newest keyframe as a JPEG, at its own size and scaled.
    for (query, size) in [("", ("320", "240")), ("?width=160", ("160", "120"))] {
        let r = reqwest::get(format!("http://{http}/prog.jpg{query}")).await.expect("jpg");
        assert_eq!(r.status(), 200, "{query}");
        assert_eq!(r.headers()["content-type"], "image/jpeg");
        let jpeg = r.bytes().await.unwrap();
        let path = dir.join(format!("thumb{}.jpg", size.0));
        std::fs::write(&path, &jpeg).unwrap();
        let probe = ffprobe(&path.display().to_string(), &["-show_entries", "stream=codec_name,width,height"]);
        let s = probe.iter().find(|s| s.contains_key("codec_name")).expect("a picture");
        assert_eq!((s["codec_name"].as_str(), s["width"].as_str(), s["height"].as_str()), ("mjpeg", size.0, size.1));
    }
    // The load report (sampled) counts both.
    until("the load report to count MP4 and JPEG bytes", 30, || {
        let server = &server;
        async move {
            let load = api_ok("GET", &server.api("/load"), ADMIN_KEY, None, 200).await;
            let out = &load["bytes_out_total"];
            let counted = ["mp4", "mkv"].iter().all(|k| out[k].as_u64() > Some(10_000));
            (counted && out["jpg"].as_u64() > Some(1_000)).then_some(())
        }
    })
    .await;

    // Bad widths, unknown streams, a clip from before the window.
    assert_eq!(get(&format!("http://{http}/prog.jpg?width=5")).await.0, 400);
    assert_eq!(get(&format!("http://{http}/prog.jpg?width=huge")).await.0, 400);
    assert_eq!(get(&format!("http://{http}/nobody.jpg")).await.0, 404);
    assert_eq!(get(&format!("http://{http}/nobody.mp4")).await.0, 404);
    let (status, body) = get(&format!("http://{http}/prog.mp4?startunix=-300&duration=10")).await;
    assert_eq!(status, 416, "{}", String::from_utf8_lossy(&body));

    // A stream without video: no thumbnail, said so.
    let audio: Vec<String> = ["-hide_banner", "-loglevel", "error", "-nostdin", "-re", "-f", "lavfi", "-i"]
        .map(String::from)
        .into_iter()
        .chain(["sine=frequency=440:sample_rate=44100".to_owned(), "-t".into(), "30".into()])
        .chain(["-c:a", "aac", "-f", "flv"].map(String::from))
        .chain([server.rtmp_url("radio")])
        .collect();
    let mut radio = ffmpeg_spawn(&audio);
    let said = until("the audio-only stream to answer", 30, || async move {
        let (status, body) = get(&format!("http://{http}/radio.jpg")).await;
        let body = String::from_utf8_lossy(&body).into_owned();
        body.contains("has no video").then_some(status)
    })
    .await;
    assert_eq!(said, 404);
    // Its clips carry what it has: audio.
    wait_for_segment(&server, "radio", "audio", 5).await;
    let r = reqwest::get(format!("http://{http}/radio.mp4?startunix=-3&duration=2")).await.expect("a clip");
    assert_eq!(r.status(), 200);
    let path = dir.join("radio.mp4");
    std::fs::write(&path, r.bytes().await.unwrap()).unwrap();
    let probe = ffprobe(&path.display().to_string(), &["-show_entries", "stream=codec_name"]);
    let codecs: Vec<&str> = probe.iter().filter_map(|s| s.get("codec_name").map(String::as_str)).collect();
    assert_eq!(codecs, ["aac"], "an audio-only clip");
    let _ = radio.kill();
    let _ = radio.wait();
    let _ = publisher.kill();
    let _ = publisher.wait();
}
