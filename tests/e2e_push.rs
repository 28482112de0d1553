//! Push targets against independent receivers: ffmpeg listening for an
//! RTMP publish records what a restream sends, a recording is an FLV file
//! ffprobe reads frame for frame, a receiver that dies and comes back gets
//! the push again, and bad targets get clear answers while the stream
//! keeps flowing.

mod common;
#[path = "common/webhooks.rs"]
mod webhooks;

use std::path::Path;
use std::process::Child;

use axum::http::StatusCode;
use common::*;
use serde_json::{json, Value};
use webhooks::{next_hook, receiver as webhook_receiver};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

/// `ffmpeg -listen 1`: an RTMP server that takes one publish and records it.
fn rtmp_receiver(port: u16, out: &Path) -> Child {
    let args: Vec<String> = ["-hide_banner", "-loglevel", "error", "-nostdin", "-listen", "1", "-i"]
        .map(String::from)
        .into_iter()
        .chain([format!("rtmp://127.0.0.1:{port}/live/relay")])
        .chain(["-c", "copy", "-f", "flv", "-y"].map(String::from))
        .chain([out.display().to_string()])
        .collect();
    ffmpeg_spawn(&args)
}

/// Whether something listens on 127.0.0.1:`port` (read from /proc, not by
/// connecting: `ffmpeg -listen 1` takes exactly one connection).
fn listening(port: u16) -> bool {
    let want = format!("0100007F:{port:04X}");
    std::fs::read_to_string("/proc/net/tcp").unwrap_or_default().lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.get(1) == Some(&want.as_str()) && f.get(3) == Some(&"0A")
    })
}

async fn receiver_ready(port: u16) {
    until("the receiver to listen", 30, || async move { listening(port).then_some(()) }).await;
}

fn size(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// The types of a file's top-level MP4 boxes, in order; panics if they do
/// not cover the file exactly.
fn top_level_boxes(path: &Path) -> Vec<String> {
    let bytes = std::fs::read(path).expect("an MP4 file");
    let mut boxes = Vec::new();
    let mut at = 0usize;
    while at + 16 <= bytes.len() {
        let mut size = u64::from(u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()));
        if size == 1 {
            size = u64::from_be_bytes(bytes[at + 8..at + 16].try_into().unwrap());
        }
        boxes.push(String::from_utf8_lossy(&bytes[at + 4..at + 8]).into_owned());
        at += size.max(8) as usize;
    }
    assert_eq!(at, bytes.len(), "the boxes of {} cover the file", path.display());
    boxes
}

async fn pushes(server: &Server) -> Vec<Value> {
    let page = api_ok("GET", &server.api("/pushes"), ADMIN_KEY, None, 200).await;
    page["items"].as_array().cloned().unwrap_or_default()
}

/// Waits (up to `secs`) until push `id` is in `state`; returns it then.
async fn push_reaches(server: &Server, id: &str, state: &str, secs: u64) -> Value {
    let what = format!("push {id} to be {state}");
    until(&what, secs, || async move {
        let p = api_ok("GET", &server.api(&format!("/pushes/{id}")), ADMIN_KEY, None, 200).await;
        (p["state"] == state).then_some(p)
    })
    .await
}

/// A stream with push targets and its key, in a tenant.
async fn stream_with_targets(server: &Server, name: &str, targets: Value) -> String {
    let a = ADMIN_KEY;
    api_ok("POST", &server.api("/tenants"), a, Some(json!({"id": "t"})), 201).await;
    api_ok(
        "POST",
        &server.api("/streams"),
        a,
        Some(json!({"name": name, "tenant": "t", "push_targets": targets})),
        201,
    )
    .await;
    let key = api_ok("POST", &server.api(&format!("/streams/{name}/keys")), a, Some(json!({})), 201).await;
    key["key"].as_str().expect("a key").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_is_restreamed_and_recorded_frame_for_frame() {
    let server = Server::start(&["--reconnect-grace", "0"]);
    let port = free_port();
    let received = server.dir.path().join("received.flv");
    let mut receiver = rtmp_receiver(port, &received);
    receiver_ready(port).await;
    let targets = json!([
        format!("rtmp://127.0.0.1:{port}/live/relay"),
        "$tenant/$stream.flv",
        "$tenant/$stream.mp4",
        "$tenant/split/$stream-$segmentCounter.mp4?split=5",
        "$tenant/$stream-fast.mp4?faststart"
    ]);
    let key = stream_with_targets(&server, "show", targets).await;
    // PUSH_OUT_START moves the recording; the restream goes where it was.
    let (hooks, mut delivered) = webhook_receiver(std::sync::Arc::new(|path: &str, body: &str, _| {
        let target = body.lines().nth(1).unwrap_or_default();
        let answer = if path == "out" && target.ends_with(".flv") { "t/moved-show.flv" } else { target };
        Some((StatusCode::OK, answer.to_owned()))
    }))
    .await;
    for (trigger, path, blocking) in [
        ("PUSH_OUT_START", "out", true),
        ("PUSH_END", "end", false),
        ("RECORDING_END", "rec", false),
        ("RECORDING_SEGMENT", "seg", false),
    ] {
        api_ok(
            "POST",
            &server.api("/triggers"),
            ADMIN_KEY,
            Some(
                json!({"trigger": trigger, "url": format!("{hooks}/{path}"), "blocking": blocking, "timeout_ms": 5000}),
            ),
            201,
        )
        .await;
    }

    // Twenty seconds at 25 fps, in real time.
    let out = tokio::task::spawn_blocking({
        let url = server.rtmp_url(&key);
        move || ffmpeg(&rtmp_publish_args(&url, 20))
    });
    let live = until("the five pushes to be live", 30, || {
        let server = &server;
        async move {
            let p = pushes(server).await;
            (p.len() == 5 && p.iter().all(|p| p["state"] == "live")).then_some(p)
        }
    })
    .await;
    assert!(live.iter().all(|p| p["origin"] == "stream" && p["stream"] == "show" && p["tenant"] == "t"), "{live:?}");
    let out = out.await.unwrap();
    assert!(out.status.success(), "publish: {}", String::from_utf8_lossy(&out.stderr));

    // The stream ended: the pushes stop, the receiver sees the end.
    let done = until("the pushes to stop", 30, || {
        let server = &server;
        async move {
            let p = pushes(server).await;
            p.iter().all(|p| p["state"] == "stopped").then_some(p)
        }
    })
    .await;
    assert!(done.iter().all(|p| p["bytes"].as_u64().unwrap() > 100_000 && p["last_error"].is_null()), "{done:?}");
    let status = tokio::task::spawn_blocking(move || receiver.wait()).await.unwrap().expect("receiver");
    assert!(status.success(), "the receiver ended cleanly");

    let count = |path: &Path| {
        let sections = ffprobe(
            &path.display().to_string(),
            &["-count_frames", "-show_entries", "stream=codec_name,width,nb_read_frames:format=duration"],
        );
        let frames = |c: &str| -> u64 {
            sections
                .iter()
                .find(|s| s.get("codec_name").map(String::as_str) == Some(c))
                .and_then(|s| s.get("nb_read_frames")?.parse().ok())
                .unwrap_or(0)
        };
        let duration: f64 = sections.iter().find_map(|s| s.get("duration")?.parse().ok()).unwrap_or(0.0);
        (frames("h264"), frames("aac"), duration)
    };
    // The triggers: where the recording went, and how each push ended
    // (in whatever order they were delivered).
    let (mut recs, mut ends, mut segments) = (Vec::new(), Vec::new(), Vec::new());
    while recs.len() < 4 || ends.len() < 5 || segments.len() < 4 {
        let h = next_hook(&mut delivered, "any").await;
        match h.headers.get("x-trigger").and_then(|v| v.to_str().ok()) {
            Some("RECORDING_END") => recs.push(h.body),
            Some("RECORDING_SEGMENT") => segments.push(h.body.lines().map(str::to_owned).collect::<Vec<String>>()),
            Some("PUSH_END") => ends.push(h.body.lines().map(str::to_owned).collect::<Vec<String>>()),
            _ => {}
        }
    }
    let rec = recs.iter().find(|r| r.contains("moved-show.flv")).cloned().unwrap_or_default();
    let mp4 = recs.iter().find(|r| r.contains("show.mp4")).cloned().unwrap_or_default();
    assert_eq!(mp4.lines().nth(2), Some("mp4"), "{mp4}");
    let f: Vec<&str> = rec.lines().collect();
    assert_eq!((f[0], f[1], f[2], f[10], f[11]), ("show", "t/moved-show.flv", "flv", "0", "ended"), "{rec}");
    assert!(
        f[3].parse::<u64>().unwrap() > 100_000 && f[7].parse::<u64>().unwrap() >= 5000,
        "bytes and media ms: {rec}"
    );
    let moved = ends.iter().find(|l| l[2].ends_with("t/show.flv")).expect("the recording's PUSH_END");
    assert!(moved[3].ends_with("t/moved-show.flv"), "{moved:?}");
    let status: Value = serde_json::from_str(&moved[5]).expect("status is JSON");
    assert_eq!(status["state"], "stopped");
    assert!(serde_json::from_str::<Vec<String>>(&moved[4]).expect("log is JSON").contains(&"ended".to_owned()));

    // The recording starts at the stream's first keyframe: every frame.
    let recording = server.dir.path().join("data/recordings/t/moved-show.flv");
    let (video, audio, duration) = count(&recording);
    assert_eq!(video, 500, "20 s at 25 fps in {}", recording.display());
    assert!(audio >= 850, "about 20 s of 44.1 kHz AAC: {audio}");
    assert!((duration - 20.0).abs() < 1.0, "{duration} s");
    // The MP4: the same frames, and it seeks.
    let mp4 = server.dir.path().join("data/recordings/t/show.mp4");
    let (video, audio, duration) = count(&mp4);
    assert_eq!(video, 500, "every frame in {}", mp4.display());
    assert!(audio >= 850, "{audio}");
    assert!((duration - 20.0).abs() < 1.0, "{duration} s");
    let still = server.dir.path().join("seek.png");
    let args: Vec<String> = ["-v", "error", "-ss", "3.5", "-i"]
        .map(String::from)
        .into_iter()
        .chain([mp4.display().to_string()])
        .chain(["-frames:v", "1", "-y"].map(String::from))
        .chain([still.display().to_string()])
        .collect();
    let o = ffmpeg(&args);
    assert!(o.status.success() && size(&still) > 0, "seeking 3.5 s in: {}", String::from_utf8_lossy(&o.stderr));

    // Faststart: the same frames, rewritten with the index in front (ftyp,
    // moov, then one mdat; no fragments left).
    let fast = server.dir.path().join("data/recordings/t/show-fast.mp4");
    let (video, audio, duration) = count(&fast);
    assert_eq!(video, 500, "every frame in {}", fast.display());
    assert!(audio >= 850, "{audio}");
    assert!((duration - 20.0).abs() < 1.0, "{duration} s");
    assert_eq!(top_level_boxes(&fast), ["ftyp", "moov", "mdat"], "progressive MP4, index first");
    let fast_rec = recs.iter().find(|r| r.contains("show-fast.mp4")).cloned().unwrap_or_default();
    assert_eq!(fast_rec.lines().nth(2), Some("mp4"), "{fast_rec}");

    // The restream too, as ffmpeg received it.
    let (video, _, duration) = count(&received);
    assert_eq!(video, 500, "every frame reached the receiver");
    assert!((duration - 20.0).abs() < 1.0, "{duration} s");

    // Split every 5 s: four files, one RECORDING_SEGMENT each, that add up
    // to every frame and follow each other without a gap.
    segments.sort_by_key(|l| l[3].parse::<u64>().unwrap_or(0));
    let mut total = 0;
    for (n, seg) in segments.iter().enumerate() {
        assert_eq!(seg[0], "show");
        let path = Path::new(&seg[1]);
        assert!(seg[1].ends_with(&format!("recordings/t/split/show-{n}.mp4")), "{seg:?}");
        let ms: Vec<u64> = seg[2..5].iter().map(|v| v.parse().unwrap()).collect();
        assert_eq!(ms[0], ms[2] - ms[1], "duration = end - start: {seg:?}");
        if n < 3 {
            assert!((ms[0] as i64 - 5000).abs() <= 1000, "about 5 s: {seg:?}");
            assert_eq!(ms[2], segments[n + 1][3].parse::<u64>().unwrap(), "the next file starts where this one ends");
        }
        let (video, _, _) = count(path);
        total += video;
    }
    assert_eq!(total, 500, "the split files hold every frame");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_comes_back_gets_the_push_again_and_bad_targets_are_refused() {
    let server = Server::start(&["--reconnect-grace", "0"]);
    let port = free_port();
    let first = server.dir.path().join("first.flv");
    let mut receiver = rtmp_receiver(port, &first);
    receiver_ready(port).await;
    let key = stream_with_targets(&server, "cam", json!([])).await;
    let mut publisher = ffmpeg_spawn(&rtmp_publish_args(&server.rtmp_url(&key), 120));
    wait_for_segment(&server, "cam", "video", 1).await;

    // On demand, through the API.
    let started = api_ok(
        "POST",
        &server.api("/pushes"),
        ADMIN_KEY,
        Some(json!({"stream": "cam", "target": format!("rtmp://127.0.0.1:{port}/live/relay")})),
        201,
    )
    .await;
    assert_eq!(started["origin"], "api");
    let id = started["id"].as_str().unwrap().to_owned();
    until("the first receiver to get media", 30, || {
        let first = first.clone();
        async move { (size(&first) > 50_000).then_some(()) }
    })
    .await;

    // The receiver dies; a new one on the same port gets the push again.
    let _ = receiver.kill();
    let _ = receiver.wait();
    let second = server.dir.path().join("second.flv");
    let mut receiver = rtmp_receiver(port, &second);
    until("the push to reconnect to the second receiver", 60, || {
        let (server, second, id) = (&server, second.clone(), id.clone());
        async move {
            let p = api_ok("GET", &server.api(&format!("/pushes/{id}")), ADMIN_KEY, None, 200).await;
            (p["state"] == "live" && p["reconnects"].as_u64() >= Some(1) && size(&second) > 50_000).then_some(())
        }
    })
    .await;

    // Bad targets: clear answers, nothing started.
    for (target, status, says) in [
        ("../../etc/x.flv", 400, "outside the recording directory"),
        ("/tmp/x.flv", 400, "outside the recording directory"),
        ("$stream.mkv", 400, "not supported yet"),
        ("s3://Not_A_Bucket/$stream.mp4", 400, "not a valid bucket name"),
        ("srt://127.0.0.1:9000?passphrase=short", 400, "10 to 79"),
        ("rtmp://127.0.0.1", 400, "APP/NAME"),
    ] {
        let r =
            api_call("POST", &server.api("/pushes"), ADMIN_KEY, Some(json!({"stream": "cam", "target": target}))).await;
        assert_eq!(r.0, status, "{target}: {:?}", r.1);
        assert!(r.1["detail"].as_str().unwrap_or("").contains(says), "{target}: {:?}", r.1);
    }
    let r =
        api_call("POST", &server.api("/pushes"), ADMIN_KEY, Some(json!({"stream": "nobody", "target": "x.flv"}))).await;
    assert_eq!(r.0, 404);

    // A host that does not resolve (`.invalid` never does): the push waits
    // and names the host.
    let nowhere = api_ok(
        "POST",
        &server.api("/pushes"),
        ADMIN_KEY,
        Some(json!({"stream": "cam", "target": "rtmp://nowhere.invalid/live/x"})),
        201,
    )
    .await;
    let nid = nowhere["id"].as_str().unwrap().to_owned();
    let unresolved = push_reaches(&server, &nid, "waiting", 60).await;
    assert!(unresolved["last_error"].as_str().unwrap_or("").contains("nowhere.invalid:1935"), "{unresolved}");
    assert_eq!(api_call("DELETE", &server.api(&format!("/pushes/{nid}")), ADMIN_KEY, None).await.0, 204);

    // A refused connection: the push waits and says why; the stream flows on.
    let dead = free_port();
    let refused = api_ok(
        "POST",
        &server.api("/pushes"),
        ADMIN_KEY,
        Some(json!({"stream": "cam", "target": format!("rtmp://127.0.0.1:{dead}/live/x")})),
        201,
    )
    .await;
    let rid = refused["id"].as_str().unwrap().to_owned();
    let waiting = push_reaches(&server, &rid, "waiting", 30).await;
    assert!(waiting["last_error"].as_str().unwrap_or("").contains("refused"), "{waiting}");
    // The load report and /metrics show each push.
    until("the load report and /metrics to show the waiting push", 30, || {
        let server = &server;
        async move {
            let load = api_ok("GET", &server.api("/load"), ADMIN_KEY, None, 200).await;
            let listed = load["pushes"].as_array().is_some_and(|p| p.iter().any(|p| p["state"] == "waiting"));
            let url = format!("http://{}/metrics", server.admin);
            let metrics = reqwest::get(url).await.ok()?.text().await.ok()?;
            let shown =
                metrics.lines().any(|l| l.starts_with("tidecast_push{") && l.contains("what=\"state_waiting\""));
            (listed && shown).then_some(())
        }
    })
    .await;
    let before = size(&second);
    until("the good push to keep sending", 30, || {
        let second = second.clone();
        async move { (size(&second) > before + 50_000).then_some(()) }
    })
    .await;

    // Stopping ends it; the other push is untouched.
    let (status, _, _) = api_call("DELETE", &server.api(&format!("/pushes/{rid}")), ADMIN_KEY, None).await;
    assert_eq!(status, 204);
    push_reaches(&server, &rid, "stopped", 30).await;
    let p = api_ok("GET", &server.api(&format!("/pushes/{id}")), ADMIN_KEY, None, 200).await;
    assert_eq!(p["state"], "live");

    // A tenant key sees its own tenant's pushes only.
    let other = api_ok("POST", &server.api("/tenants"), ADMIN_KEY, Some(json!({"id": "other"})), 201).await;
    assert_eq!(other["id"], "other");
    let k = api_ok("POST", &server.api("/keys"), ADMIN_KEY, Some(json!({"tenant": "other"})), 201).await;
    let secret = k["secret"].as_str().unwrap();
    let page = api_ok("GET", &server.api("/pushes"), secret, None, 200).await;
    assert_eq!(page["items"].as_array().map(Vec::len), Some(0));
    let r = api_call("POST", &server.api("/pushes"), secret, Some(json!({"stream": "cam", "target": "x.flv"}))).await;
    assert_eq!(r.0, 404, "another tenant's stream does not exist for it");

    let _ = publisher.kill();
    let _ = publisher.wait();
    let _ = receiver.kill();
    let _ = receiver.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auto_push_rule_records_the_streams_it_matches_while_they_are_live() {
    let server = Server::start(&["--reconnect-grace", "0"]);
    let a = ADMIN_KEY;
    // A bad template is refused when the rule is made.
    let r = api_call("POST", &server.api("/push_rules"), a, Some(json!({"target": "../$stream.flv"}))).await;
    assert_eq!(r.0, 400, "{:?}", r.1);
    let rule = api_ok(
        "POST",
        &server.api("/push_rules"),
        a,
        Some(json!({"streams": ["ruled"], "target": "auto/$stream.mp4"})),
        201,
    )
    .await;
    api_ok(
        "POST",
        &server.api("/push_rules"),
        a,
        Some(json!({"streams": ["#nothing", "ruled"], "target": "auto/$stream.ts"})),
        201,
    )
    .await;
    api_ok(
        "POST",
        &server.api("/push_rules"),
        a,
        Some(json!({"streams": ["ruled"], "target": "dvr/$stream.m3u8?split=2"})),
        201,
    )
    .await;
    let listed = api_ok("GET", &server.api("/push_rules"), a, None, 200).await;
    assert_eq!(listed["items"].as_array().map(Vec::len), Some(3));

    // No stream is configured: open mode. One matching stream, one not.
    let ruled = tokio::task::spawn_blocking({
        let url = server.rtmp_url("ruled");
        move || ffmpeg(&rtmp_publish_args(&url, 4))
    });
    let other = tokio::task::spawn_blocking({
        let url = server.rtmp_url("other");
        move || ffmpeg(&rtmp_publish_args(&url, 4))
    });
    let live = until("the rules' pushes to go live", 30, || {
        let server = &server;
        async move {
            let p = pushes(server).await;
            (p.iter().filter(|p| p["state"] == "live").count() == 3).then_some(p)
        }
    })
    .await;
    assert_eq!(live.len(), 3, "only the matching stream: {live:?}");
    assert!(live.iter().all(|p| p["stream"] == "ruled" && p["origin"] == "rule"), "{live:?}");
    assert!(ruled.await.unwrap().status.success() && other.await.unwrap().status.success());
    // The stream ended, and so did its push.
    until("the rule's push to stop with its stream", 30, || {
        let server = &server;
        async move { pushes(server).await.iter().all(|p| p["state"] == "stopped").then_some(()) }
    })
    .await;
    // HLS on disk: 2 s segments and a VOD playlist that lists them.
    let playlist = std::fs::read_to_string(server.dir.path().join("data/recordings/dvr/ruled.m3u8")).expect("playlist");
    assert!(playlist.contains("#EXT-X-PLAYLIST-TYPE:VOD") && playlist.ends_with("#EXT-X-ENDLIST\n"), "{playlist}");
    assert_eq!(playlist.matches("#EXTINF:").count(), 2, "{playlist}");
    assert!(playlist.contains("\nruled-0.ts\n") && playlist.contains("\nruled-1.ts\n"), "{playlist}");
    // Every frame of the 4 s, in each container.
    for name in ["auto/ruled.mp4", "auto/ruled.ts", "dvr/ruled.m3u8"] {
        let file = server.dir.path().join("data/recordings").join(name);
        let sections = ffprobe(
            &file.display().to_string(),
            &["-count_frames", "-show_entries", "stream=codec_name,nb_read_frames"],
        );
        let video = sections.iter().find(|s| s.get("codec_name").map(String::as_str) == Some("h264")).expect("h264");
        assert_eq!(video["nb_read_frames"], "100", "{name}: {sections:?}");
        assert!(sections.iter().any(|s| s.get("codec_name").map(String::as_str) == Some("aac")), "{name}");
    }
    assert!(!server.dir.path().join("data/recordings/auto/other.mp4").exists());

    let id = rule["id"].as_str().unwrap();
    assert_eq!(api_call("DELETE", &server.api(&format!("/push_rules/{id}")), a, None).await.0, 204);
    assert_eq!(api_call("DELETE", &server.api(&format!("/push_rules/{id}")), a, None).await.0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_srt_push_reaches_srt_live_transmit_and_a_wrong_passphrase_says_so() {
    let server = Server::start(&["--reconnect-grace", "0"]);
    let mut publisher = ffmpeg_spawn(&rtmp_publish_args(&server.rtmp_url("srtcam"), 120));
    wait_for_segment(&server, "srtcam", "video", 1).await;
    let port = std::net::UdpSocket::bind("127.0.0.1:0").and_then(|s| s.local_addr()).map(|a| a.port()).expect("a port");
    let out = server.dir.path().join("srt.ts");
    let mut receiver = std::process::Command::new("srt-live-transmit")
        .args(["-q", &format!("srt://:{port}?mode=listener&passphrase=the-right-passphrase"), "file://con"])
        .stdout(std::fs::File::create(&out).expect("output file"))
        .stdin(std::process::Stdio::null())
        .spawn()
        .expect("srt-live-transmit is installed (make test installs srt-tools)");

    // A wrong passphrase: the push waits to try again, and says why.
    let wrong = api_ok(
        "POST",
        &server.api("/pushes"),
        ADMIN_KEY,
        Some(json!({"stream": "srtcam", "target": format!("srt://127.0.0.1:{port}?passphrase=not-the-passphrase")})),
        201,
    )
    .await;
    let wid = wrong["id"].as_str().unwrap().to_owned();
    let waiting = push_reaches(&server, &wid, "waiting", 60).await;
    assert!(waiting["last_error"].as_str().unwrap_or("").contains("passphrase"), "{waiting}");
    assert_eq!(api_call("DELETE", &server.api(&format!("/pushes/{wid}")), ADMIN_KEY, None).await.0, 204);
    assert_eq!(size(&out), 0, "nothing got through");

    // The right one: srt-live-transmit receives the stream as MPEG-TS.
    let right = api_ok(
        "POST",
        &server.api("/pushes"),
        ADMIN_KEY,
        Some(json!({"stream": "srtcam", "target": format!("srt://127.0.0.1:{port}?passphrase=the-right-passphrase&latency=200")})),
        201,
    )
    .await;
    let rid = right["id"].as_str().unwrap().to_owned();
    until("srt-live-transmit to receive the stream", 60, || {
        let (server, rid, out) = (&server, rid.clone(), out.clone());
        async move {
            let p = api_ok("GET", &server.api(&format!("/pushes/{rid}")), ADMIN_KEY, None, 200).await;
            (p["state"] == "live" && size(&out) > 200_000).then_some(())
        }
    })
    .await;
    let _ = receiver.kill();
    let _ = receiver.wait();
    let sections = ffprobe(&out.display().to_string(), &["-show_entries", "stream=codec_name,width"]);
    assert!(sections.iter().any(|s| s.get("codec_name").map(String::as_str) == Some("h264")), "{sections:?}");
    assert!(sections.iter().any(|s| s.get("codec_name").map(String::as_str) == Some("aac")), "{sections:?}");
    let _ = publisher.kill();
    let _ = publisher.wait();
}

/// A real S3-compatible server on loopback (moto, from PyPI; `make test`
/// installs it into tests/s3/.venv).
struct Moto(Child, u16);

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn moto() -> Moto {
    let port = free_port();
    let bin = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/s3/.venv/bin/moto_server");
    let child = std::process::Command::new(bin)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("moto_server is installed (make test installs it into tests/s3/.venv)");
    let server = Moto(child, port);
    until("moto to listen", 60, || async move { listening(port).then_some(()) }).await;
    server
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recording_to_s3_is_uploaded_byte_for_byte() {
    let s3 = moto().await;
    let endpoint = format!("http://127.0.0.1:{}", s3.1);
    // The bucket (moto takes any credentials).
    let made = reqwest::Client::new().put(format!("{endpoint}/recs")).send().await.expect("moto");
    assert!(made.status().is_success(), "{made:?}");
    let config = format!(
        "[push.s3]\nendpoint = \"{endpoint}\"\nregion = \"us-east-1\"\naccess_key_id = \"test\"\nsecret_access_key = \"test\"\n"
    );
    let server = Server::start_with_config(Some(&config), &["--reconnect-grace", "0"]);
    let publisher = tokio::task::spawn_blocking({
        let url = server.rtmp_url("s3cam");
        move || ffmpeg(&rtmp_publish_args(&url, 4))
    });
    let started = until("the push to start", 30, || {
        let server = &server;
        async move {
            let r = api_call(
                "POST",
                &server.api("/pushes"),
                ADMIN_KEY,
                Some(json!({"stream": "s3cam", "target": "s3://recs/$stream/$segmentCounter.mp4?split=2"})),
            )
            .await;
            (r.0 == 201).then_some(r.1)
        }
    })
    .await;
    let id = started["id"].as_str().unwrap().to_owned();
    // A bucket that does not exist: the file is recorded, its upload fails
    // and says so.
    let bad = api_ok(
        "POST",
        &server.api("/pushes"),
        ADMIN_KEY,
        Some(json!({"stream": "s3cam", "target": "s3://nope-bucket/x.mp4"})),
        201,
    )
    .await;
    let bad_id = bad["id"].as_str().unwrap().to_owned();
    assert!(publisher.await.unwrap().status.success());
    let done = push_reaches(&server, &id, "stopped", 60).await;
    assert!(done["last_error"].is_null(), "{done}");
    let files = done["uploads"].as_u64().unwrap();
    assert!(files >= 2, "4 s split every 2 s: {done}");
    // Every file's object has the local file's bytes (read back signed,
    // as any S3 client would).
    let store = object_store::aws::AmazonS3Builder::new()
        .with_endpoint(&endpoint)
        .with_allow_http(true)
        .with_region("us-east-1")
        .with_bucket_name("recs")
        .with_access_key_id("test")
        .with_secret_access_key("test")
        .build()
        .expect("an S3 client");
    for n in 0..files {
        let local =
            std::fs::read(server.dir.path().join(format!("data/recordings/.s3/recs/s3cam/{n}.mp4"))).expect("local");
        let key = object_store::path::Path::from(format!("s3cam/{n}.mp4"));
        let object =
            object_store::ObjectStoreExt::get(&store, &key).await.expect("the object").bytes().await.expect("body");
        assert!(local.len() > 10_000 && object[..] == local[..], "file {n}: {} vs {} bytes", object.len(), local.len());
    }
    let bad = push_reaches(&server, &bad_id, "stopped", 60).await;
    assert_eq!(bad["uploads"], 0);
    assert!(bad["last_error"].as_str().unwrap_or("").contains("nope-bucket"), "{bad}");
}

/// A second Tidecast takes a WHIP push (the stream key as the bearer) and
/// serves it as LL-HLS; a wrong key gets the endpoint's 401 named in the
/// push's status; stopping the push ends the far session with a DELETE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whip_push_reaches_a_second_tidecast_as_ll_hls() {
    let source = Server::start(&["--reconnect-grace", "0"]);
    let edge = Server::start(&["--hls-segment", "1"]);
    let key = stream_with_targets(&source, "cam", json!([])).await;
    let edge_key = stream_with_targets(&edge, "relay", json!([])).await;
    let mut publisher = ffmpeg_spawn(&rtmp_publish_args(&source.rtmp_url(&key), 120));
    wait_for_segment(&source, "cam", "video", 1).await;
    let endpoint = format!("whip+http://{}/whip/relay", edge.http);

    // The wrong key: the endpoint's 401 is in the status; the push waits.
    let wrong = api_ok(
        "POST",
        &source.api("/pushes"),
        ADMIN_KEY,
        Some(json!({"stream": "cam", "target": format!("{endpoint}?bearer=not-the-key-0123")})),
        201,
    )
    .await;
    assert_eq!(wrong["kind"], "whip");
    let wid = wrong["id"].as_str().unwrap().to_owned();
    let refused = push_reaches(&source, &wid, "waiting", 30).await;
    let why = refused["last_error"].as_str().unwrap_or("");
    assert!(why.contains("refused the bearer token (401)"), "{refused}");
    assert_eq!(api_call("DELETE", &source.api(&format!("/pushes/{wid}")), ADMIN_KEY, None).await.0, 204);

    // The right key: the edge gets H.264 and audio, and serves LL-HLS.
    let right = api_ok(
        "POST",
        &source.api("/pushes"),
        ADMIN_KEY,
        Some(json!({"stream": "cam", "target": format!("{endpoint}?bearer={edge_key}")})),
        201,
    )
    .await;
    let id = right["id"].as_str().unwrap().to_owned();
    assert!(!right["target"].as_str().unwrap_or("").is_empty());
    push_reaches(&source, &id, "live", 30).await;
    wait_for_segment(&edge, "relay", "video", 3).await;
    let streams = ffprobe(&edge.hls_url("relay", "index.m3u8"), &["-show_streams"]);
    let codecs: Vec<&str> = streams.iter().filter_map(|s| s.get("codec_name").map(String::as_str)).collect();
    assert!(codecs.contains(&"h264"), "the edge's HLS carries the pushed video: {codecs:?}");
    assert!(codecs.contains(&"aac") || codecs.contains(&"opus"), "and its audio: {codecs:?}");
    let sessions = api_ok("GET", &edge.api("/webrtc/sessions"), ADMIN_KEY, None, 200).await;
    let whip = sessions["items"].as_array().and_then(|a| a.iter().find(|s| s["kind"] == "whip").cloned());
    let whip = whip.expect("the edge lists the WHIP session");
    assert_eq!(whip["stream"], "relay");
    let pushed = api_ok("GET", &source.api(&format!("/pushes/{id}")), ADMIN_KEY, None, 200).await;
    assert!(pushed["bytes"].as_u64() > Some(50_000) && pushed["reconnects"] == 0, "{pushed}");

    // Stopping the push hangs up with a DELETE the edge sees.
    assert_eq!(api_call("DELETE", &source.api(&format!("/pushes/{id}")), ADMIN_KEY, None).await.0, 204);
    push_reaches(&source, &id, "stopped", 30).await;
    let closed = until("the edge to close the WHIP session", 30, || {
        let edge = &edge;
        async move {
            let page = api_ok("GET", &edge.api("/webrtc/sessions"), ADMIN_KEY, None, 200).await;
            page["items"]
                .as_array()
                .and_then(|a| a.iter().find(|s| s["kind"] == "whip" && s["state"] == "closed").cloned())
        }
    })
    .await;
    assert_eq!(closed["closed_reason"], "closed by the client (DELETE)", "{closed}");
    let _ = publisher.kill();
    let _ = publisher.wait();
}

/// HEVC needs Enhanced RTMP: the push announces it in `connect` and sends
/// the enhanced tags, and a second Tidecast (open mode: `live/NAME`
/// publishes NAME) serves what it received as HEVC LL-HLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_hevc_stream_is_restreamed_over_enhanced_rtmp() {
    let source = Server::start(&["--reconnect-grace", "0"]);
    let edge = Server::start(&["--hls-segment", "1"]);
    let mut args: Vec<String> = ["-hide_banner", "-loglevel", "error", "-nostdin", "-re"].map(String::from).to_vec();
    args.extend(
        ["-f", "lavfi", "-i", "testsrc=size=320x240:rate=25", "-t", "30", "-pix_fmt", "yuv420p"].map(String::from),
    );
    args.extend(["-c:v", "libx265", "-x265-params", "keyint=25:log-level=error", "-f", "mpegts"].map(String::from));
    args.push(source.srt_url("hevc", ""));
    let mut publisher = ffmpeg_spawn(&args);
    wait_for_segment(&source, "hevc", "video", 1).await;
    let target = format!("rtmp://{}/live/hevcrelay", edge.rtmp);
    let push =
        api_ok("POST", &source.api("/pushes"), ADMIN_KEY, Some(json!({"stream": "hevc", "target": target})), 201).await;
    let id = push["id"].as_str().unwrap().to_owned();
    push_reaches(&source, &id, "live", 30).await;
    wait_for_segment(&edge, "hevcrelay", "video", 2).await;
    let v = ffprobe(&edge.hls_url("hevcrelay", "index.m3u8"), &["-show_entries", "stream=codec_name,width,height"]);
    let s = v.iter().find(|s| s.get("codec_name").map(String::as_str) == Some("hevc"));
    let s = s.unwrap_or_else(|| panic!("the edge serves HEVC: {v:?}\n{}", edge.log()));
    assert_eq!((s["width"].as_str(), s["height"].as_str()), ("320", "240"));
    let master = get_text(&edge.hls_url("hevcrelay", "index.m3u8")).await;
    assert!(master.contains("CODECS=\"hvc1."), "{master}");
    let _ = publisher.kill();
    let _ = publisher.wait();
}

/// `rtmps://` through a real TLS terminator: stunnel, with a certificate
/// the source trusts through `push.tls_ca_file`, hands the RTMP inside to
/// `ffmpeg -listen 1` (which cannot listen for RTMPS itself). A target
/// that does not speak TLS gets a clear TLS error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rtmps_push_reaches_a_receiver_behind_tls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .expect("a certificate");
    let (cert_pem, key_pem) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_pem, cert.cert.pem()).unwrap();
    std::fs::write(&key_pem, cert.signing_key.serialize_pem()).unwrap();
    let config = format!("[push]\ntls_ca_file = {:?}\n", cert_pem.display().to_string());
    let source = Server::start_with_config(Some(&config), &["--reconnect-grace", "0"]);

    let (inner, outer) = (free_port(), free_port());
    let received = dir.path().join("received.flv");
    let mut receiver = rtmp_receiver(inner, &received);
    receiver_ready(inner).await;
    let conf = dir.path().join("stunnel.conf");
    std::fs::write(
        &conf,
        format!(
            "foreground = yes\npid =\n[rtmps]\naccept = 127.0.0.1:{outer}\nconnect = 127.0.0.1:{inner}\ncert = {}\nkey = {}\n",
            cert_pem.display(),
            key_pem.display()
        ),
    )
    .unwrap();
    let mut stunnel = std::process::Command::new("stunnel")
        .arg(&conf)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("stunnel (scripts/install-deps.sh test installs it)");
    receiver_ready(outer).await;

    let key = stream_with_targets(&source, "cam", json!([])).await;
    let mut publisher = ffmpeg_spawn(&rtmp_publish_args(&source.rtmp_url(&key), 120));
    wait_for_segment(&source, "cam", "video", 1).await;

    // A target that does not speak TLS (an HTTP port): a TLS error, retried.
    let plain = format!("rtmps://{}/live/x", source.http);
    let bad =
        api_ok("POST", &source.api("/pushes"), ADMIN_KEY, Some(json!({"stream": "cam", "target": plain})), 201).await;
    let bid = bad["id"].as_str().unwrap().to_owned();
    let waiting = push_reaches(&source, &bid, "waiting", 30).await;
    assert!(waiting["last_error"].as_str().unwrap_or("").starts_with("TLS with"), "{waiting}");
    assert_eq!(api_call("DELETE", &source.api(&format!("/pushes/{bid}")), ADMIN_KEY, None).await.0, 204);

    let target = format!("rtmps://127.0.0.1:{outer}/live/relay");
    let push =
        api_ok("POST", &source.api("/pushes"), ADMIN_KEY, Some(json!({"stream": "cam", "target": target})), 201).await;
    let id = push["id"].as_str().unwrap().to_owned();
    push_reaches(&source, &id, "live", 30).await;
    until("the receiver behind TLS to get media", 30, || {
        let received = received.clone();
        async move { (size(&received) > 50_000).then_some(()) }
    })
    .await;
    // Stopping the push unpublishes: the receiver finishes its file.
    assert_eq!(api_call("DELETE", &source.api(&format!("/pushes/{id}")), ADMIN_KEY, None).await.0, 204);
    let status = tokio::task::spawn_blocking(move || receiver.wait()).await.unwrap().expect("receiver");
    assert!(status.success(), "the receiver ended cleanly");
    let streams = ffprobe(&received.display().to_string(), &["-show_streams"]);
    let codecs: Vec<&str> = streams.iter().filter_map(|s| s.get("codec_name").map(String::as_str)).collect();
    assert!(codecs.contains(&"h264") && codecs.contains(&"aac"), "{codecs:?}");
    let _ = stunnel.kill();
    let _ = stunnel.wait();
    let _ = publisher.kill();
    let _ = publisher.wait();
}

/// `?video=` and `?audio=` pick what a push carries: a ladder's rung by
/// its height (with the source's audio) into an MP4, the audio alone into
/// an FLV, the source's video alone into MPEG-TS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_carries_the_tracks_it_selects() {
    let config = r#"
[transcode]
default_profile = "one"
[transcode.profiles.one]
hw = "off"
preset = "ultrafast"
rungs = [{ height = 120, bitrate_kbps = 150 }]
"#;
    let server = Server::start_with_config(Some(config), &["--reconnect-grace", "0"]);
    let publisher = tokio::task::spawn_blocking({
        let url = server.rtmp_url("sel");
        move || ffmpeg(&rtmp_publish_args(&url, 8))
    });
    wait_for_segment(&server, "sel", "video", 1).await;
    let mut ids = Vec::new();
    for target in ["low.mp4?video=120p", "sound.flv?video=none", "picture.ts?audio=none&video=h264"] {
        let p =
            api_ok("POST", &server.api("/pushes"), ADMIN_KEY, Some(json!({"stream": "sel", "target": target})), 201)
                .await;
        assert_eq!(p["target"], target, "the target is shown as given");
        ids.push(p["id"].as_str().unwrap().to_owned());
    }
    // A selector that selects nothing usable is refused up front.
    let bad = json!({"stream": "sel", "target": "x.mp4?video=aac"});
    let r = api_call("POST", &server.api("/pushes"), ADMIN_KEY, Some(bad)).await;
    assert_eq!(r.0, 400, "{r:?}");
    assert!(r.1["detail"].as_str().unwrap_or("").contains("aac is not a video codec"), "{r:?}");
    let out = publisher.await.unwrap();
    assert!(out.status.success(), "publish: {}", String::from_utf8_lossy(&out.stderr));
    for id in &ids {
        let p = push_reaches(&server, id, "stopped", 60).await;
        assert!(p["bytes"].as_u64() > Some(1000) && p["last_error"].is_null(), "{p}");
    }
    let streams = |name: &str| {
        let path = server.dir.path().join("data/recordings").join(name);
        let sections = ffprobe(&path.display().to_string(), &["-show_entries", "stream=codec_name,height"]);
        // MPEG-TS adds a program section; count the streams.
        sections.into_iter().filter(|s| s.get("section").map(String::as_str) != Some("program")).collect::<Vec<_>>()
    };
    // The rung comes after the source's first keyframe: the recording
    // waited for it rather than start with the audio alone.
    let low = streams("low.mp4");
    assert_eq!(low.len(), 2, "the rung and the audio: {low:?}");
    assert_eq!((low[0]["codec_name"].as_str(), low[0]["height"].as_str()), ("h264", "120"), "the rung: {low:?}");
    assert_eq!(low[1]["codec_name"], "aac");
    let sound = streams("sound.flv");
    assert_eq!(sound.len(), 1, "audio only: {sound:?}");
    assert_eq!(sound[0]["codec_name"], "aac");
    let picture = streams("picture.ts");
    assert_eq!(picture.len(), 1, "video only: {picture:?}");
    assert_eq!(
        (picture[0]["codec_name"].as_str(), picture[0]["height"].as_str()),
        ("h264", "240"),
        "the source: {picture:?}"
    );
}

/// MistServer's retention parameters on split recordings: `maxEntries`
/// keeps a sliding HLS window on disk (older segments deleted),
/// `nounlink` keeps the files that leave, `targetAge` lets go by age.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_recordings_keep_what_their_retention_says() {
    let server = Server::start(&["--reconnect-grace", "0"]);
    let publisher = tokio::task::spawn_blocking({
        let url = server.rtmp_url("dvr");
        move || ffmpeg(&rtmp_publish_args(&url, 9))
    });
    wait_for_segment(&server, "dvr", "video", 1).await;
    let mut ids = Vec::new();
    for target in [
        "win/w.m3u8?split=1&maxEntries=3",
        "keep/k-$segmentCounter.ts?split=1&maxEntries=2&nounlink=1",
        "age/a-$segmentCounter.ts?split=1&targetAge=3",
    ] {
        let p =
            api_ok("POST", &server.api("/pushes"), ADMIN_KEY, Some(json!({"stream": "dvr", "target": target})), 201)
                .await;
        ids.push(p["id"].as_str().unwrap().to_owned());
    }
    let out = publisher.await.unwrap();
    assert!(out.status.success(), "publish: {}", String::from_utf8_lossy(&out.stderr));
    for id in &ids {
        let p = push_reaches(&server, id, "stopped", 60).await;
        assert!(p["last_error"].is_null(), "{p}");
    }
    let root = server.dir.path().join("data/recordings");
    let ts_files = |dir: &str| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(root.join(dir))
            .map(|d| d.filter_map(|e| e.ok()?.file_name().into_string().ok()).filter(|n| n.ends_with(".ts")).collect())
            .unwrap_or_default();
        names.sort();
        names
    };
    // The window: three segments listed, the ones before them gone.
    let playlist = std::fs::read_to_string(root.join("win/w.m3u8")).expect("the playlist");
    let listed: Vec<&str> = playlist.lines().filter(|l| l.ends_with(".ts")).collect();
    assert_eq!(listed.len(), 3, "{playlist}");
    let sequence: u64 = playlist
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-MEDIA-SEQUENCE:"))
        .and_then(|v| v.parse().ok())
        .expect("a media sequence");
    assert!(sequence >= 1, "segments left the window: {playlist}");
    assert!(playlist.ends_with("#EXT-X-ENDLIST\n") && !playlist.contains("PLAYLIST-TYPE"), "{playlist}");
    let mut on_disk = ts_files("win");
    on_disk.sort();
    let mut want: Vec<String> = listed.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(on_disk, want, "only the listed segments stay on disk");
    let probed = ffprobe(&root.join("win/w.m3u8").display().to_string(), &["-show_entries", "stream=codec_name"]);
    assert!(probed.iter().any(|s| s.get("codec_name").map(String::as_str) == Some("h264")), "{probed:?}");
    // nounlink: every file stays.
    let kept = ts_files("keep");
    assert_eq!(kept.len() as u64, sequence + 3, "as many files as the window saw: {kept:?}");
    // targetAge=3: files that ended more than 3 s before the last went.
    let aged = ts_files("age");
    assert!((3..=5).contains(&aged.len()) && aged.len() < kept.len(), "{aged:?} of {kept:?}");
}

/// A node told to stop (SIGTERM) while it records waits for its pushes:
/// the MP4 is closed, rewritten with its index in front, and whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recording_is_finished_when_the_node_stops() {
    let mut server = Server::start(&["--reconnect-grace", "0"]);
    let mut publisher = ffmpeg_spawn(&rtmp_publish_args(&server.rtmp_url("late"), 60));
    wait_for_segment(&server, "late", "video", 1).await;
    let target = json!({"stream": "late", "target": "stop.mp4?faststart"});
    let p = api_ok("POST", &server.api("/pushes"), ADMIN_KEY, Some(target), 201).await;
    let id = p["id"].as_str().unwrap().to_owned();
    until("the recording to hold a few seconds", 30, || {
        let (server, id) = (&server, id.clone());
        async move {
            let p = api_ok("GET", &server.api(&format!("/pushes/{id}")), ADMIN_KEY, None, 200).await;
            (p["bytes"].as_u64() > Some(100_000)).then_some(())
        }
    })
    .await;
    let status = server.terminate();
    assert!(status.success(), "a clean exit: {status:?}\n{}", server.log());
    let file = server.dir.path().join("data/recordings/stop.mp4");
    assert_eq!(top_level_boxes(&file), ["ftyp", "moov", "mdat"], "finished and rewritten before the exit");
    let probed =
        ffprobe(&file.display().to_string(), &["-count_frames", "-show_entries", "stream=codec_name,nb_read_frames"]);
    let frames = probed
        .iter()
        .find(|s| s.get("codec_name").map(String::as_str) == Some("h264"))
        .and_then(|s| s.get("nb_read_frames")?.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(frames >= 25, "{probed:?}");
    let _ = publisher.kill();
    let _ = publisher.wait();
}
