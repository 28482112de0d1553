//! End to end: ffmpeg publishes 720p30 H.264 + AAC over RTMP to a stream
//! whose profile has three rungs; the ladder's renditions come out of
//! LL-HLS and LL-DASH beside the source, aligned to it, and ffprobe decodes
//! each at its size. The hardware policy refuses `require` where no
//! hardware encoder works. A profile made through the admin API drives a
//! stream's ladder. A corrupt source (sent by the test's own RTMP client)
//! fails the ladder's decoding, visibly, while its own viewers play on.

mod common;
#[path = "common/erpublish.rs"]
mod erpublish;

use common::*;

const PROFILE: &str = r#"
[transcode]
default_profile = "three"
[transcode.profiles.three]
hw = "off"
preset = "ultrafast"
rungs = [
  { height = 480, bitrate_kbps = 900 },
  { height = 360, bitrate_kbps = 600 },
  { height = 240, bitrate_kbps = 300, max_fps = 15 },
]
"#;

/// `EXTINF` durations by media sequence number, complete segments only.
fn segments(playlist: &str) -> std::collections::BTreeMap<u64, String> {
    let mut msn: u64 = playlist
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-MEDIA-SEQUENCE:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("a media sequence");
    let mut out = std::collections::BTreeMap::new();
    for l in playlist.lines() {
        if let Some(d) = l.strip_prefix("#EXTINF:") {
            out.insert(msn, d.trim_end_matches(',').to_owned());
            msn += 1;
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_rung_ladder_is_listed_aligned_and_decodable() {
    let server = Server::start_with_config(Some(PROFILE), &["--hls-segment", "1"]);
    let mut args = vec!["-re".to_string()];
    args.extend(lavfi_h264_aac(30, "1280x720", 30, 48000));
    args.extend(["-f".into(), "flv".into(), server.rtmp_url("cam")]);
    let mut publisher = ffmpeg_spawn(&args);

    // The smallest rung's third segment: every rung is running by then.
    wait_for_segment(&server, "cam", "video3", 3).await;
    let multivariant = get_text(&server.hls_url("cam", "index.m3u8")).await;
    let variants: Vec<(&str, &str)> = multivariant
        .lines()
        .zip(multivariant.lines().skip(1))
        .filter(|(l, _)| l.starts_with("#EXT-X-STREAM-INF"))
        .collect();
    let sizes: Vec<&str> = variants.iter().filter_map(|(l, _)| attr(l, "RESOLUTION")).collect();
    assert_eq!(sizes, ["1280x720", "854x480", "640x360", "426x240"], "{multivariant}");
    let uris: Vec<&str> = variants.iter().map(|(_, u)| u.split('?').next().unwrap_or(u)).collect();
    assert_eq!(uris, ["video.m3u8", "video1.m3u8", "video2.m3u8", "video3.m3u8"]);
    for ((line, _), kbps) in variants.iter().skip(1).zip([900u64, 600, 300]) {
        let bandwidth: u64 = attr(line, "BANDWIDTH").and_then(|b| b.parse().ok()).expect("BANDWIDTH");
        assert!(bandwidth >= kbps * 1000, "BANDWIDTH at least the rung's bitrate: {line}");
        let codecs = attr(line, "CODECS").expect("CODECS");
        assert!(codecs.starts_with("avc1.") && codecs.contains("mp4a.40.2"), "{line}");
    }
    assert!(variants[3].0.contains("FRAME-RATE=15.000"), "the capped rung: {}", variants[3].0);

    // Same segment numbers and durations in every rendition.
    let msn = 3;
    let mut lists = Vec::new();
    for r in ["video", "video1", "video2", "video3"] {
        lists.push((r, wait_for_segment(&server, "cam", r, msn).await));
    }
    let reference = segments(&lists[0].1);
    for (r, p) in &lists[1..] {
        let mine = segments(p);
        for (n, d) in &mine {
            if let Some(theirs) = reference.get(n) {
                assert_eq!(d, theirs, "{r}: segment {n} lasts what the source's does\n{p}\n{}", lists[0].1);
            }
        }
        assert!(mine.keys().filter(|n| reference.contains_key(n)).count() >= 2, "{r} shares segments: {p}");
    }

    // ffprobe decodes each rung at its size, and its segments start with an IDR.
    for ((r, p), size) in lists.iter().zip(["1280x720", "854x480", "640x360", "426x240"]) {
        let file = first_segment_file(&server, "cam", r, p).await;
        let probe =
            ffprobe(&file, &["-count_frames", "-show_entries", "stream=codec_name,width,height,nb_read_frames"]);
        let v = probe.iter().find(|s| s.get("codec_name").map(String::as_str) == Some("h264")).expect("a video stream");
        assert_eq!(format!("{}x{}", v["width"], v["height"]), size, "{r}");
        let frames: u32 = v["nb_read_frames"].parse().expect("frames");
        assert!(frames >= 10, "{r} decodes: {frames} frames");
        let keys = ffprobe(&file, &["-select_streams", "v", "-show_entries", "packet=flags"]);
        assert!(keys.first().is_some_and(|k| k["flags"].starts_with('K')), "{r} segment starts with a keyframe");
    }

    // The MPD lists the same ladder.
    let mpd = get_text(&format!("http://{}/dash/cam/index.mpd", server.http)).await;
    for w in ["width=\"1280\"", "width=\"854\"", "width=\"640\"", "width=\"426\""] {
        assert!(mpd.contains(w), "{w} in the MPD: {mpd}");
    }

    // The API and /metrics show the ladder.
    let live = api_ok("GET", &server.api("/streams/cam/live"), ADMIN_KEY, None, 200).await;
    let t = &live["transcode"];
    assert_eq!(t["profile"], "three", "{live}");
    let rungs = t["rungs"].as_array().expect("rungs");
    assert_eq!(rungs.len(), 3);
    for r in rungs {
        assert_eq!(r["encoder"], "libx264");
        assert!(r["frames_out"].as_u64().unwrap_or(0) > 0, "{r}");
    }
    let (_, metrics) = get(&format!("http://{}/metrics", server.admin)).await;
    let metrics = String::from_utf8_lossy(&metrics);
    assert!(
        metrics
            .contains("tidecast_transcode_rung_frames{encoder=\"libx264\",rung=\"480p\",stream=\"cam\",what=\"out\"}"),
        "{metrics}"
    );

    // An RTMP player asks for a rung by its height.
    let url = format!("{}?rendition=360p", server.rtmp_url("cam"));
    let probe = ffprobe(&url, &["-show_entries", "stream=codec_name,width,height"]);
    let v = probe.iter().find(|s| s.get("codec_name").map(String::as_str) == Some("h264")).expect("video");
    assert_eq!((v["width"].as_str(), v["height"].as_str()), ("640", "360"), "{probe:?}");
    let _ = publisher.kill();
    let _ = publisher.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hw_require_without_hardware_refuses_the_ladder_and_the_source_plays() {
    let config = PROFILE.replace("hw = \"off\"", "hw = \"require\"");
    let server = Server::start_with_config(Some(&config), &["--hls-segment", "1"]);
    // The probe runs at start-up; its result decides what to expect.
    let encoders = until("the encoder probe", 60, || async {
        let load = api_ok("GET", &server.api("/load"), ADMIN_KEY, None, 200).await;
        let e = load["encoders"].as_array().cloned().unwrap_or_default();
        (!e.is_empty()).then_some(e)
    })
    .await;
    let hardware = encoders
        .iter()
        .any(|e| e["works"] == true && ["h264_nvenc", "h264_qsv"].contains(&e["name"].as_str().unwrap_or("")));
    let mut args = vec!["-re".to_string()];
    args.extend(lavfi_h264_aac(20, "640x360", 30, 48000));
    args.extend(["-f".into(), "flv".into(), server.rtmp_url("cam")]);
    let mut publisher = ffmpeg_spawn(&args);
    wait_for_segment(&server, "cam", "video", 2).await;
    let multivariant = get_text(&server.hls_url("cam", "index.m3u8")).await;
    if hardware {
        eprintln!("a hardware encoder works here: the require policy is satisfied");
    } else {
        assert_eq!(multivariant.matches("#EXT-X-STREAM-INF").count(), 1, "the source alone: {multivariant}");
        let load = api_ok("GET", &server.api("/load"), ADMIN_KEY, None, 200).await;
        assert_eq!(load["transcode"]["refused_total"], 1, "{load}");
        let log = server.log();
        assert!(log.contains("ladder refused") && log.contains("require"), "a clear reason in the log");
    }
    let _ = publisher.kill();
    let _ = publisher.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_profile_made_through_the_api_drives_a_ladder() {
    let server = Server::start_with_config(Some(PROFILE), &["--hls-segment", "1"]);
    let a = ADMIN_KEY;
    let url = |name: &str| server.api(&format!("/transcode/profiles/{name}"));

    // The config file's profiles are listed, read-only.
    let list = api_ok("GET", &server.api("/transcode/profiles"), a, None, 200).await;
    let names: Vec<(&str, &str)> = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|p| (p["name"].as_str().unwrap_or(""), p["source"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(names, [("default", "config"), ("three", "config")], "{list}");
    let tiny = serde_json::json!({"rungs": [{"height": 144, "bitrate_kbps": 200}], "hw": "off", "preset": "ultrafast"});
    let (status, body, _) = api_call("PUT", &url("three"), a, Some(tiny.clone())).await;
    assert_eq!(status, 409, "defined in the config file: {body}");
    let mut bad = tiny.clone();
    bad["preset"] = "placebo".into();
    let (status, body, _) = api_call("PUT", &url("tiny"), a, Some(bad)).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["detail"].as_str().unwrap_or("").contains("placebo"), "the reason: {body}");
    api_ok("PUT", &url("tiny"), a, Some(tiny.clone()), 201).await;
    let again = api_ok("PUT", &url("tiny"), a, Some(tiny), 200).await;
    assert_eq!(again["source"], "api");

    // A tenant reads profiles but cannot change them.
    api_ok("POST", &server.api("/tenants"), a, Some(serde_json::json!({"id": "acme"})), 201).await;
    let tkey = api_ok("POST", &server.api("/keys"), a, Some(serde_json::json!({"tenant": "acme"})), 201).await;
    let tkey = tkey["secret"].as_str().expect("tenant key").to_owned();
    api_ok("GET", &url("tiny"), &tkey, None, 200).await;
    let (status, _, _) = api_call("DELETE", &url("tiny"), &tkey, None).await;
    assert_eq!(status, 403);

    // A stream of the tenant selects it: its ladder has the one 144p rung.
    let stream = serde_json::json!({"name": "apicam", "tenant": "acme", "transcode_profile": "tiny"});
    api_ok("POST", &server.api("/streams"), a, Some(stream), 201).await;
    let key = api_ok("POST", &server.api("/streams/apicam/keys"), a, Some(serde_json::json!({})), 201).await;
    let mut args = vec!["-re".to_string()];
    args.extend(lavfi_h264_aac(20, "640x360", 30, 48000));
    args.extend(["-f".into(), "flv".into(), server.rtmp_url(key["key"].as_str().expect("stream key"))]);
    let mut publisher = ffmpeg_spawn(&args);
    wait_for_segment(&server, "apicam", "video1", 1).await;
    let multivariant = get_text(&server.hls_url("apicam", "index.m3u8")).await;
    let _ = publisher.kill();
    let _ = publisher.wait();
    let sizes: Vec<&str> = multivariant.lines().filter_map(|l| attr(l, "RESOLUTION")).collect();
    assert_eq!(sizes, ["640x360", "256x144"], "{multivariant}");

    api_ok("DELETE", &url("tiny"), a, None, 204).await;
    let (status, _, _) = api_call("GET", &url("tiny"), a, None).await;
    assert_eq!(status, 404);
}

/// A corrupt H.264 source through the server: a real configuration record
/// (from an x264 encode), junk where the pictures should be. The source
/// still segments for its own viewers, and the ladder's decode errors show
/// in the stream's live state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_source_shows_in_the_api_and_its_viewers_play_on() {
    let server = Server::start_with_config(Some(PROFILE), &["--hls-segment", "1"]);
    let file = server.dir.path().join("one.h264");
    let out = ffmpeg(&[
        "-v".into(),
        "error".into(),
        "-f".into(),
        "lavfi".into(),
        "-i".into(),
        "testsrc=size=640x360:rate=30".into(),
        "-frames:v".into(),
        "1".into(),
        "-c:v".into(),
        "libx264".into(),
        "-f".into(),
        "h264".into(),
        "-y".into(),
        file.to_string_lossy().into_owned(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let es = std::fs::read(&file).expect("the encode");
    let units: Vec<&[u8]> = tidecast_codecs::nal::annexb(&es).collect();
    let sps = units.iter().find(|u| u[0] & 0x1f == 7).expect("an SPS");
    let pps = units.iter().find(|u| u[0] & 0x1f == 8).expect("a PPS");
    let record = tidecast_codecs::h264::build_config(sps, pps).expect("avcC");
    // Ten seconds at 30 fps, a keyframe a second: slices of noise.
    let pictures: Vec<erpublish::Picture> = (0..300u32)
        .map(|i| {
            let key = i % 30 == 0;
            let mut nal = vec![if key { 0x65 } else { 0x41 }];
            nal.extend((0..2000u32).map(|j| (j.wrapping_mul(2654435761).wrapping_add(i * 7919) >> 13) as u8));
            let mut sample = (nal.len() as u32).to_be_bytes().to_vec();
            sample.extend(nal);
            (key, sample)
        })
        .collect();
    let rtmp = server.rtmp;
    let publisher =
        tokio::spawn(async move { erpublish::publish_live(rtmp, "broken", b"avc1", &record, &pictures, 30).await });

    wait_for_segment(&server, "broken", "video", 2).await;
    let live = until("the ladder's decode errors in the API", 30, || async {
        let live = api_ok("GET", &server.api("/streams/broken/live"), ADMIN_KEY, None, 200).await;
        (live["transcode"]["decode_errors"].as_u64().unwrap_or(0) > 0).then_some(live)
    })
    .await;
    assert_eq!(live["transcode"]["rungs"].as_array().map_or(0, |r| r.len()), 0, "nothing to scale: {live}");
    let later = wait_for_segment(&server, "broken", "video", 5).await;
    assert!(later.contains("#EXTINF"), "the source's own viewers keep getting segments");
    let multivariant = get_text(&server.hls_url("broken", "index.m3u8")).await;
    assert_eq!(multivariant.matches("#EXT-X-STREAM-INF").count(), 1, "the source alone: {multivariant}");
    publisher.await.expect("the publisher ran");
}
