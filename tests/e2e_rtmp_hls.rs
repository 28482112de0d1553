//! End to end: ffmpeg publishes over RTMP, ffmpeg/ffprobe and plain HTTP read
//! LL-HLS back. Slow (real encoders): `make test-e2e` runs these alone.

mod common;
#[path = "common/webhooks.rs"]
mod webhooks;

use common::*;

/// The whole path, checked on what a player reads: codecs, resolution, frame
/// rate, sample rate, frame count and duration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtmp_h264_aac_comes_out_as_ll_hls() {
    // Packaged media on disk here (every other test keeps it in memory):
    // the same bytes must come back either way.
    let server = Server::start_with_config(Some("[hls]\nstore = \"disk\"\n"), &["--reconnect-grace", "0"]);
    let mut args = lavfi_h264_aac(6, "640x360", 30, 48000);
    args.extend(["-f".into(), "flv".into(), server.rtmp_url("cam")]);
    let out = ffmpeg(&args);
    assert!(out.status.success(), "publish failed: {}", String::from_utf8_lossy(&out.stderr));

    // The publisher is gone and the grace period is 0: the playlist is final.
    let video = get_text(&server.hls_url("cam", "video.m3u8")).await;
    assert!(video.contains("#EXT-X-ENDLIST"), "{video}");
    let master = get_text(&server.hls_url("cam", "index.m3u8")).await;
    assert!(master.contains("RESOLUTION=640x360"), "{master}");
    assert!(master.contains("CODECS=\"avc1.64"), "{master}");

    let sections = ffprobe(
        &server.hls_url("cam", "index.m3u8"),
        &["-show_entries", "stream=codec_name,width,height,avg_frame_rate,sample_rate,channels:format=duration"],
    );
    let stream =
        |codec: &str| sections.iter().find(|s| s.get("codec_name").map(String::as_str) == Some(codec)).cloned();
    let v = stream("h264").expect("an h264 stream");
    assert_eq!((v["width"].as_str(), v["height"].as_str(), v["avg_frame_rate"].as_str()), ("640", "360", "30/1"));
    let a = stream("aac").expect("an aac stream");
    assert_eq!((a["sample_rate"].as_str(), a["channels"].as_str()), ("48000", "2"));
    let duration: f64 = sections.iter().find_map(|s| s.get("duration")?.parse().ok()).expect("duration");
    assert!((duration - 6.0).abs() <= 2.0, "read back {duration} s of 6 s (one segment of slack)");

    // Every frame made it: remux the HLS and count.
    let mp4 = server.dir.path().join("readback.mp4");
    let remux: Vec<String> = ["-v", "error", "-i"]
        .into_iter()
        .map(String::from)
        .chain([server.hls_url("cam", "index.m3u8"), "-c".into(), "copy".into(), "-y".into()])
        .chain([mp4.display().to_string()])
        .collect();
    let out = ffmpeg(&remux);
    assert!(out.status.success(), "remux failed: {}", String::from_utf8_lossy(&out.stderr));
    let counted =
        ffprobe(&mp4.display().to_string(), &["-count_frames", "-show_entries", "stream=codec_name,nb_read_frames"]);
    let frames = |c: &str| -> u32 {
        counted.iter().find(|s| s["codec_name"] == c).and_then(|s| s["nb_read_frames"].parse().ok()).unwrap_or(0)
    };
    assert_eq!(frames("h264"), 180, "6 s at 30 fps");
    assert!(frames("aac") >= 280, "about 6 s of 48 kHz AAC (1024 samples per frame)");

    // The lingering stream's packaged media is in unlinked files under the
    // data directory, which the server still holds open.
    let packaged = server.dir.path().join("data").join("packaged");
    let fds = std::fs::read_dir(format!("/proc/{}/fd", server.pid().expect("running"))).expect("fd list");
    let held: Vec<String> = fds
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .map(|t| t.to_string_lossy().into_owned())
        .filter(|t| t.starts_with(&*packaged.to_string_lossy()))
        .collect();
    assert!(!held.is_empty() && held.iter().all(|t| t.ends_with("(deleted)")), "{held:?}");
    assert_eq!(std::fs::read_dir(&packaged).expect("packaged dir").count(), 0, "nothing named is left behind");
}

/// Live LL-HLS behaviour against a real-time publisher: blocking reload,
/// preload hints, parts that add up to their segment, delta updates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ll_hls_live_behaviour() {
    let server = Server::start(&["--hls-segment", "1"]);
    let mut args = vec!["-re".to_string()];
    args.extend(lavfi_h264_aac(20, "320x240", 25, 44100));
    args.extend(["-f".into(), "flv".into(), server.rtmp_url("live1")]);
    let mut publisher = ffmpeg_spawn(&args);

    let playlist = wait_for_segment(&server, "live1", "video", 1).await;
    for tag in [
        "#EXT-X-PART-INF:PART-TARGET=0.200",
        "CAN-BLOCK-RELOAD=YES",
        "PART-HOLD-BACK=0.600",
        "CAN-SKIP-UNTIL=6.0",
        "#EXT-X-PROGRAM-DATE-TIME:",
        "#EXT-X-PRELOAD-HINT:TYPE=PART",
        "#EXT-X-RENDITION-REPORT:URI=\"audio.m3u8\"",
    ] {
        assert!(playlist.contains(tag), "missing {tag}\n{playlist}");
    }

    // Ask for the part after the newest listed one: the answer must list it.
    let last_part_line = playlist.lines().rfind(|l| l.starts_with("#EXT-X-PART:")).expect("parts");
    let uri = attr(last_part_line, "URI").expect("URI").to_owned();
    let (msn, part) = {
        let stem = uri.trim_end_matches(".m4s");
        let mut it = stem.rsplit('-').next().expect("msn.part").split('.');
        (it.next().unwrap().parse::<u64>().unwrap(), it.next().unwrap().parse::<u64>().unwrap())
    };
    let hint = playlist
        .lines()
        .find(|l| l.starts_with("#EXT-X-PRELOAD-HINT"))
        .and_then(|l| attr(l, "URI"))
        .unwrap()
        .to_owned();
    // Fetch the hinted part while it is being produced (streamed as it grows).
    let hinted = tokio::spawn({
        let url = server.hls_url("live1", &hint);
        async move { get(&url).await }
    });
    let next = server.hls_url("live1", &format!("video.m3u8?_HLS_msn={msn}&_HLS_part={}", part + 1));
    let blocked = get_text(&next).await;
    let (hs, hbody) = hinted.await.unwrap();
    assert_eq!(hs, 200);
    assert!(blocked.contains(&hint), "the blocking reload lists the hinted part {hint}\n{blocked}");
    assert!(!hbody.is_empty());
    // A segment's first part starts with its producer reference time (prft),
    // then its fragments.
    let at = if &hbody[4..8] == b"prft" { u32::from_be_bytes(hbody[0..4].try_into().unwrap()) as usize } else { 0 };
    assert_eq!(&hbody[at + 4..at + 8], b"moof", "a part is CMAF fragments");

    // A request too far ahead is refused at once.
    let (status, _) = get(&server.hls_url("live1", &format!("video.m3u8?_HLS_msn={}", msn + 50))).await;
    assert_eq!(status, 400);
    let (status, _) = get(&server.hls_url("live1", "video.m3u8?_HLS_part=1")).await;
    assert_eq!(status, 400);

    // Parts concatenate to their segment, byte for byte.
    let full = wait_for_segment(&server, "live1", "video", 8).await;
    let mut current_parts = Vec::new();
    let mut checked = 0;
    for line in full.lines() {
        if line.starts_with("#EXT-X-PART:") {
            current_parts.push(attr(line, "URI").unwrap().to_owned());
        } else if line.ends_with(".m4s") && !line.starts_with('#') {
            if !current_parts.is_empty() {
                let mut joined = Vec::new();
                for p in &current_parts {
                    joined.extend_from_slice(&get(&server.hls_url("live1", p)).await.1);
                }
                let (s, seg) = get(&server.hls_url("live1", line)).await;
                assert_eq!(s, 200);
                assert_eq!(joined, seg.to_vec(), "parts of {line} concatenate to it");
                checked += 1;
            }
            current_parts.clear();
        }
    }
    assert!(checked >= 2, "checked {checked} segments\n{full}");

    // Delta update: smaller, and the same segments after the skipped ones.
    let delta = get_text(&server.hls_url("live1", "video.m3u8?_HLS_skip=YES")).await;
    let full = get_text(&server.hls_url("live1", "video.m3u8")).await;
    let skip = delta.lines().find(|l| l.starts_with("#EXT-X-SKIP:")).expect("EXT-X-SKIP in the delta");
    let skipped: usize = attr(skip, "SKIPPED-SEGMENTS").unwrap().parse().unwrap();
    let segs = |t: &str| {
        t.lines().filter(|l| l.ends_with(".m4s") && !l.starts_with('#')).map(String::from).collect::<Vec<_>>()
    };
    let (f, d) = (segs(&full), segs(&delta));
    assert!(delta.len() < full.len());
    // The publisher keeps going between the two requests: compare what both list.
    let first_in_delta = &d[0];
    let pos = f.iter().position(|s| s == first_in_delta).expect("delta segments are in the full playlist");
    assert!(pos >= skipped.saturating_sub(1), "skipped {skipped}, first listed at {pos}");

    // Browsers on other origins may fetch everything; playlists are not cached.
    let r = reqwest::get(server.hls_url("live1", "video.m3u8")).await.unwrap();
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
    assert_eq!(r.headers()["content-type"], "application/vnd.apple.mpegurl");
    assert_eq!(r.headers()["cache-control"], "no-cache");

    // The init segment is served and is an fMP4 header.
    let map = full.lines().find(|l| l.starts_with("#EXT-X-MAP")).and_then(|l| attr(l, "URI")).unwrap().to_owned();
    let (s, init) = get(&server.hls_url("live1", &map)).await;
    assert_eq!(s, 200);
    assert_eq!(&init[4..8], b"ftyp");

    let _ = publisher.kill();
    let _ = publisher.wait();
}

/// Several publishers at once, each its own stream with its own tracks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_streams_at_once() {
    let server = Server::start(&["--reconnect-grace", "0"]);
    let sizes = ["160x120", "320x240", "480x270"];
    let publishers: Vec<_> = sizes
        .iter()
        .enumerate()
        .map(|(i, size)| {
            let mut args = lavfi_h264_aac(3, size, 25, 44100);
            args.extend(["-f".into(), "flv".into(), server.rtmp_url(&format!("multi{i}"))]);
            ffmpeg_spawn(&args)
        })
        .collect();
    for mut p in publishers {
        assert!(p.wait().unwrap().success());
    }
    for (i, size) in sizes.iter().enumerate() {
        let master = get_text(&server.hls_url(&format!("multi{i}"), "index.m3u8")).await;
        assert!(master.contains(&format!("RESOLUTION={size}")), "stream {i}: {master}");
        let video = get_text(&server.hls_url(&format!("multi{i}"), "video.m3u8")).await;
        assert!(video.contains("#EXT-X-ENDLIST"));
    }
}

/// A stream's `buffer_secs` is its DVR window: made through the API, it
/// reaches the packager with the publisher's admission, and the LL-HLS
/// playlist and the DASH MPD keep that much media behind the live edge
/// (twice the node's ten segments here), the live edge unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffer_secs_is_the_streams_dvr_window() {
    // The node keeps 5 s of every stream in memory; a longer window is
    // kept on disk beyond that.
    let server = Server::start_with_config(
        Some("[hls]\nplaylist_segments = 5\n"),
        &["--hls-segment", "1", "--reconnect-grace", "0"],
    );
    let a = ADMIN_KEY;
    api_ok("POST", &server.api("/tenants"), a, Some(serde_json::json!({"id": "t"})), 201).await;
    let bad = serde_json::json!({"name": "x", "tenant": "t", "buffer_secs": 0});
    assert_eq!(api_call("POST", &server.api("/streams"), a, Some(bad)).await.0, 400);
    let stream = serde_json::json!({"name": "dvr", "tenant": "t", "buffer_secs": 20});
    api_ok("POST", &server.api("/streams"), a, Some(stream), 201).await;
    let key = api_ok("POST", &server.api("/streams/dvr/keys"), a, Some(serde_json::json!({})), 201).await;
    let key = key["key"].as_str().expect("a key").to_owned();
    // A sidecar that wants the thumbnails on disk (the FrameWorks fork's
    // trigger): a real webhook receiver.
    let (hooks, mut delivered) = webhooks::receiver(std::sync::Arc::new(|_: &str, _: &str, _| {
        Some((axum::http::StatusCode::OK, String::new()))
    }))
    .await;
    let handler = serde_json::json!({"trigger": "THUMBNAIL_UPDATED", "url": format!("{hooks}/thumbs")});
    api_ok("POST", &server.api("/triggers"), a, Some(handler), 201).await;
    let mut publisher = ffmpeg_spawn(&rtmp_publish_args(&server.rtmp_url(&key), 60));
    // Twenty-five complete one-second segments: more than the window.
    let playlist = wait_for_segment(&server, "dvr", "video", 25).await;
    let complete = playlist.lines().filter(|l| l.starts_with("#EXTINF:")).count();
    assert!((19..=22).contains(&complete), "about 20 s of segments, not the node's 10: {complete}\n{playlist}");
    let first: u64 = playlist
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-MEDIA-SEQUENCE:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("a media sequence");
    assert!(first >= 3, "the oldest segments left: {playlist}");
    // The live edge is where it always is: parts of the newest segments.
    assert!(playlist.contains("#EXT-X-PART:") && playlist.contains("#EXT-X-PRELOAD-HINT"), "{playlist}");
    let mpd = get_text(&format!("http://{}/dash/dvr/index.mpd", server.http)).await;
    let depth = mpd
        .split("timeShiftBufferDepth=\"PT")
        .nth(1)
        .and_then(|r| r.split('S').next())
        .and_then(|v| v.parse::<f64>().ok())
        .expect("a timeShiftBufferDepth");
    assert!(depth >= 18.0, "the MPD rewinds the whole window: {depth} s");

    // Clips from the window, with MistServer's parameters: about 6 s from
    // 15 s ago, starting at a keyframe, video and audio; as MP4 with its
    // index in front, as Matroska and as MPEG-TS.
    let dir = server.dir.path().to_owned();
    for ext in ["mp4", "mkv", "ts"] {
        let url = format!("http://{}/dvr.{ext}?startunix=-15&duration=6", server.http);
        let r = reqwest::get(&url).await.expect("a clip");
        assert_eq!(r.status(), 200, "{ext}: {:?}", r.text().await);
        let length = r.content_length();
        let bytes = r.bytes().await.unwrap();
        assert_eq!(length, Some(bytes.len() as u64), "{ext}: a Content-Length");
        let path = dir.join(format!("clip.{ext}"));
        std::fs::write(&path, &bytes).unwrap();
        let (codecs, duration, key) = probe_clip(&path);
        assert!(codecs.iter().any(|c| c == "h264") && codecs.iter().any(|c| c == "aac"), "{ext}: {codecs:?}");
        assert!((duration - 6.0).abs() <= 1.1, "{ext}: about 6 s, within a GOP: {duration}");
        assert!(key, "{ext}: the clip starts at a keyframe");
        if ext == "mp4" {
            assert!(bytes.windows(4).position(|w| w == b"moov") < bytes.windows(4).position(|w| w == b"mdat"));
        }
    }
    // The window beyond the node's 5 s lives on disk: the load report says
    // so, memory holds the newest seconds only, and a clip from the oldest
    // part of the window (13 to 18 s ago) is read back from there.
    let report = until("the load report to show the window on disk", 30, || {
        let server = &server;
        async move {
            let load = api_ok("GET", &server.api("/load"), ADMIN_KEY, None, 200).await;
            let s = load["per_stream"].as_array()?.iter().find(|s| s["name"] == "dvr")?.clone();
            (s["dvr"]["disk_seconds"].as_f64()? >= 12.0).then_some((s, load))
        }
    })
    .await;
    let (stream, load) = report;
    let dvr = &stream["dvr"];
    assert_eq!(dvr["on_disk"], true, "{dvr}");
    assert!(dvr["seconds"].as_f64() >= Some(18.0) && dvr["configured_seconds"].as_f64() == Some(20.0), "{dvr}");
    let (bytes, disk) = (dvr["bytes"].as_u64().unwrap_or(0), dvr["disk_bytes"].as_u64().unwrap_or(0));
    assert!(disk > 0 && disk < bytes, "{dvr}");
    let in_memory = stream["buffers"]["cmaf"].as_u64().unwrap_or(u64::MAX);
    assert!(in_memory < bytes - disk / 2, "memory holds the hot part only: {in_memory} of {bytes}: {stream}");
    // Written out and dropped from memory, where the data directory is on
    // a disk (on tmpfs the pages have nowhere to go).
    let fs = std::process::Command::new("stat").args(["-f", "-c", "%T"]).arg(server.dir.path()).output();
    let fs = fs.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned()).unwrap_or_default();
    if fs != "tmpfs" {
        assert!(load["memory"]["dvr_evicted_bytes_total"].as_u64() > Some(0), "{fs}: {}", load["memory"]);
    }
    let url = format!("http://{}/dvr.mp4?startunix=-18&duration=5", server.http);
    let r = reqwest::get(&url).await.expect("a clip from disk");
    assert_eq!(r.status(), 200);
    let path = dir.join("from-disk.mp4");
    std::fs::write(&path, r.bytes().await.unwrap()).unwrap();
    let (codecs, duration, key) = probe_clip(&path);
    assert!(codecs.iter().any(|c| c == "h264") && codecs.iter().any(|c| c == "aac"), "{codecs:?}");
    assert!((duration - 5.0).abs() <= 1.1 && key, "about 5 s, from a keyframe: {duration}");

    // A sprite sheet over the window: contiguous cues that cover it, each
    // tile inside the sheet.
    let vtt = get_text(&format!("http://{}/dvr.thumbvtt", server.http)).await;
    assert!(vtt.starts_with("WEBVTT\n"), "{vtt}");
    let secs = |t: &str| -> f64 {
        let p: Vec<f64> = t.split(':').filter_map(|x| x.parse().ok()).collect();
        p[0] * 3600.0 + p[1] * 60.0 + p[2]
    };
    let mut cues: Vec<(f64, f64, Vec<u32>)> = Vec::new();
    let mut lines = vtt.lines();
    while let Some(l) = lines.next() {
        if let Some((from, to)) = l.split_once(" --> ") {
            let url = lines.next().unwrap_or_default();
            assert!(url.starts_with("/thumbs/dvr.jpg#xywh="), "{url}");
            let xywh =
                url.split("#xywh=").nth(1).unwrap_or_default().split(',').filter_map(|v| v.parse().ok()).collect();
            cues.push((secs(from), secs(to), xywh));
        }
    }
    assert!(cues.len() >= 18, "a tile per segment of the window: {vtt}");
    assert!(cues.windows(2).all(|w| (w[0].1 - w[1].0).abs() < 0.001), "contiguous: {vtt}");
    assert!(cues.last().unwrap().1 - cues[0].0 >= 18.0, "they cover the window: {vtt}");
    let sheet = reqwest::get(format!("http://{}/thumbs/dvr.jpg", server.http)).await.unwrap().bytes().await.unwrap();
    let sheet_path = dir.join("sprite.jpg");
    std::fs::write(&sheet_path, &sheet).unwrap();
    let probe = ffprobe(&sheet_path.display().to_string(), &["-show_entries", "stream=codec_name,width,height"]);
    let s = probe.iter().find(|s| s.contains_key("codec_name")).expect("a picture");
    assert_eq!(s["codec_name"], "mjpeg");
    // Pictures, not black tiles (a black sheet of this size is a few KiB).
    assert!(sheet.len() > 20_000, "{} bytes", sheet.len());
    let (w, h): (u32, u32) = (s["width"].parse().unwrap(), s["height"].parse().unwrap());
    for (_, _, xywh) in &cues {
        assert!(xywh.len() == 4 && xywh[0] + xywh[2] <= w && xywh[1] + xywh[3] <= h, "{xywh:?} inside {w}x{h}");
    }

    // THUMBNAIL_UPDATED: the stream name, then the poster, the sheet and
    // its index, written whole under the data directory.
    let hook = webhooks::next_hook(&mut delivered, "THUMBNAIL_UPDATED").await;
    let lines: Vec<&str> = hook.body.lines().collect();
    assert_eq!(lines.len(), 4, "{}", hook.body);
    assert_eq!(lines[0], "dvr");
    let thumbs = server.dir.path().join("data/thumbs/dvr");
    let names: Vec<String> = lines[1..].iter().map(|p| p.rsplit('/').next().unwrap_or_default().to_owned()).collect();
    assert_eq!(names, ["poster.jpg", "sprite.jpg", "sprite.vtt"], "{}", hook.body);
    for p in &lines[1..] {
        assert!(std::path::Path::new(p).starts_with(&thumbs), "{p} under {}", thumbs.display());
    }
    let probe = ffprobe(lines[1], &["-show_entries", "stream=codec_name,width,height"]);
    let s = probe.iter().find(|s| s.contains_key("codec_name")).expect("a poster");
    assert_eq!((s["codec_name"].as_str(), s["width"].as_str()), ("mjpeg", "160"));
    let on_disk = std::fs::read_to_string(lines[3]).expect("the VTT");
    assert!(on_disk.starts_with("WEBVTT\n") && on_disk.contains("\nsprite.jpg#xywh=0,0,160,90\n"), "{on_disk}");

    let outside = format!("http://{}/dvr.mp4?startunix=-300&duration=5", server.http);
    assert_eq!(get(&outside).await.0, 416, "before the window");
    assert_eq!(get(&format!("http://{}/dvr.mp4?startunix=x", server.http)).await.0, 400);
    let _ = publisher.kill();
    let _ = publisher.wait();
}
