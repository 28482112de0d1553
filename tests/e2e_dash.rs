//! End to end: ffmpeg publishes over RTMP; ffmpeg's DASH demuxer and plain
//! HTTP read LL-DASH back, and the MPD is checked against the segments it
//! names and against LL-HLS, which serves the same CMAF segments.

mod common;

use std::time::Instant;

use common::*;

/// `name="value"` of one XML element's text.
fn xml_attr<'a>(element: &'a str, name: &str) -> Option<&'a str> {
    let key = format!(" {name}=\"");
    let start = element.find(&key)? + key.len();
    let len = element[start..].find('"')?;
    Some(&element[start..start + len])
}

/// The opening tags of every `<tag …>` in `xml`.
fn elements<'a>(xml: &'a str, tag: &str) -> Vec<&'a str> {
    let open = format!("<{tag} ");
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(at) = rest.find(&open) {
        let end = rest[at..].find('>').map_or(rest.len(), |e| at + e + 1);
        out.push(&rest[at..end]);
        rest = &rest[end..];
    }
    out
}

/// One Representation's timeline: its SegmentTemplate and `(t, d)` entries.
struct Timeline {
    template: String,
    entries: Vec<(u64, u64)>,
}

fn timeline(mpd: &str, representation: &str) -> Timeline {
    let start = mpd.find(&format!("<Representation id=\"{representation}\"")).expect("the representation");
    let section = &mpd[start..start + mpd[start..].find("</Representation>").expect("its end")];
    let template = elements(section, "SegmentTemplate").first().expect("a SegmentTemplate").to_string();
    let entries = elements(section, "S")
        .iter()
        .map(|s| {
            let n = |k| xml_attr(s, k).and_then(|v| v.parse().ok()).expect("t and d");
            (n("t"), n("d"))
        })
        .collect();
    Timeline { template, entries }
}

/// The `tfdt` (base media decode time) of the first fragment in `segment`.
fn tfdt(segment: &[u8]) -> u64 {
    let at = segment.windows(4).position(|w| w == b"tfdt").expect("a tfdt box");
    let body = &segment[at + 4..];
    if body[0] == 1 {
        u64::from_be_bytes(body[4..12].try_into().expect("8 bytes"))
    } else {
        u64::from(u32::from_be_bytes(body[4..8].try_into().expect("4 bytes")))
    }
}

/// The whole path for a finished stream: ffmpeg's DASH demuxer reads both
/// tracks and every frame that was pushed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtmp_h264_aac_comes_out_as_dash_with_every_frame() {
    let server = Server::start(&["--reconnect-grace", "0"]);
    let mut args = lavfi_h264_aac(6, "640x360", 30, 48000);
    args.extend(["-f".into(), "flv".into(), server.rtmp_url("cam")]);
    let out = ffmpeg(&args);
    assert!(out.status.success(), "publish failed: {}", String::from_utf8_lossy(&out.stderr));

    let url = format!("http://{}/dash/cam/index.mpd", server.http);
    let mpd = get_text(&url).await;
    assert!(mpd.contains("type=\"static\""), "an ended stream's MPD is static: {mpd}");
    let mp4 = server.dir.path().join("readback.mp4");
    // The publisher's two tracks. The audio bridge's Opus track ends a frame
    // or two before them (its encoder still holds those when the stream
    // ends), and ffmpeg's DASH demuxer then leaves out the other tracks'
    // last frames too (seen in 1 of 4 runs under load).
    let remux: Vec<String> = ["-v", "error", "-i", url.as_str(), "-map", "0:v:0", "-map", "0:a:0", "-c", "copy", "-y"]
        .into_iter()
        .map(String::from)
        .chain([mp4.display().to_string()])
        .collect();
    let out = ffmpeg(&remux);
    assert!(out.status.success(), "the DASH demuxer failed: {}", String::from_utf8_lossy(&out.stderr));
    let counted =
        ffprobe(&mp4.display().to_string(), &["-count_frames", "-show_entries", "stream=codec_name,nb_read_frames"]);
    let frames = |c: &str| -> u32 {
        counted.iter().find(|s| s["codec_name"] == c).and_then(|s| s["nb_read_frames"].parse().ok()).unwrap_or(0)
    };
    assert_eq!(frames("h264"), 180, "6 s at 30 fps");
    assert!(frames("aac") >= 280, "about 6 s of 48 kHz AAC (1024 samples per frame)");
}

/// A live stream's MPD, reloaded as a player does, against the segments it
/// names and the LL-HLS playlists of the same stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_mpd_matches_its_segments_and_ll_hls() {
    let server = Server::start(&["--hls-segment", "1"]);
    let mut publisher = ffmpeg_spawn(&rtmp_publish_args(&server.rtmp_url("cam"), 40));
    let base = format!("http://{}/dash/cam", server.http);

    // The very first MPD that answers already declares video and audio.
    let first = until("the first MPD", 30, || async {
        let (status, body) = get(&format!("{base}/index.mpd")).await;
        (status == 200).then(|| String::from_utf8_lossy(&body).into_owned())
    })
    .await;
    assert!(first.contains("contentType=\"video\"") && first.contains("contentType=\"audio\""), "{first}");
    for needed in
        ["<ServiceDescription", "<PlaybackRate min=\"0.96\" max=\"1.04\"/>", "urn:mpeg:dash:utc:http-xsdate:2014"]
    {
        assert!(first.contains(needed), "{needed} in {first}");
    }
    let ast = |mpd: &str| xml_attr(elements(mpd, "MPD")[0], "availabilityStartTime").map(str::to_owned);
    let published = |mpd: &str| xml_attr(elements(mpd, "MPD")[0], "publishTime").map(str::to_owned);

    // With a regular GOP (the encoder's keyframe every second), the MPD
    // signals low latency.
    let mpd = until("low-latency signalling", 30, || async {
        let text = get_text(&format!("{base}/index.mpd")).await;
        text.contains("availabilityTimeComplete=\"false\"").then_some(text)
    })
    .await;
    assert_eq!(ast(&mpd), ast(&first), "availabilityStartTime is fixed for the stream's run");
    assert!(published(&mpd) > published(&first), "publishTime increases");
    assert!(mpd.contains("<ProducerReferenceTime"), "{mpd}");
    let utc = xml_attr(elements(&mpd, "UTCTiming")[0], "value").expect("a clock URL").to_owned();
    let (status, clock) = get(&utc).await;
    assert_eq!(status, 200, "the server's own clock at {utc}");
    assert!(String::from_utf8_lossy(&clock).ends_with('Z'), "an xs:dateTime in UTC");

    let video = timeline(&mpd, "video");
    let ato: f64 = xml_attr(&video.template, "availabilityTimeOffset").and_then(|v| v.parse().ok()).expect("ATO");
    let seg = video.entries[video.entries.len() - 2].1 as f64 / 90_000.0;
    assert!(ato > 0.0 && ato <= seg - 0.2 + 1e-6, "0 < ATO {ato} <= segment {seg} - part 0.2");
    for w in video.entries.windows(2) {
        assert_eq!(w[0].0 + w[0].1, w[1].0, "the timeline is contiguous");
    }
    let start: u64 = xml_attr(&video.template, "startNumber").and_then(|v| v.parse().ok()).expect("startNumber");
    let media = xml_attr(&video.template, "media").expect("media").to_owned();
    let segment_url = |n: u64| format!("{base}/{}", media.replace("$Number$", &n.to_string()));
    // Each complete segment's tfdt is its S@t; its bytes are the LL-HLS
    // segment's, which are its parts'.
    let complete = video.entries.len() - 1; // the last one is still forming
    let run = media.split('-').nth(1).expect("the run in file names").to_owned();
    let hls_playlist = get_text(&server.hls_url("cam", "video.m3u8")).await;
    let mut compared_parts = 0;
    for (i, (t, _)) in video.entries.iter().take(complete).enumerate() {
        let n = start + i as u64;
        let (status, dash) = get(&segment_url(n)).await;
        assert_eq!(status, 200, "segment {n}");
        assert_eq!(tfdt(&dash), *t, "segment {n}: tfdt = S@t");
        assert_eq!(&dash[4..8], b"prft", "segment {n} starts with a producer reference time");
        let media_time = if dash[8] == 1 {
            u64::from_be_bytes(dash[24..32].try_into().expect("8 bytes"))
        } else {
            u64::from(u32::from_be_bytes(dash[24..28].try_into().expect("4 bytes")))
        };
        assert_eq!(media_time, *t, "segment {n}: the prft's media time is its first frame's");
        let (_, hls) = get(&server.hls_url("cam", &format!("video-{run}-{n}.m4s"))).await;
        assert_eq!(dash, hls, "segment {n}: the same bytes as LL-HLS");
        let part_names: Vec<String> = hls_playlist
            .lines()
            .filter_map(|l| attr(l, "URI").filter(|u| l.starts_with("#EXT-X-PART:") && u.contains(&format!("-{n}."))))
            .map(str::to_owned)
            .collect();
        if !part_names.is_empty() {
            let mut joined = Vec::new();
            for p in &part_names {
                joined.extend_from_slice(&get(&server.hls_url("cam", p)).await.1);
            }
            assert_eq!(dash, joined, "segment {n}: the concatenation of its LL-HLS parts");
            compared_parts += 1;
        }
    }
    assert!(compared_parts > 0, "some segment's parts were still listed: {hls_playlist}");

    // A segment being formed streams: ask for the one after the forming one
    // (held until it starts, so this does not race its completion); its
    // first chunk arrives while LL-HLS still lists it as open, the rest as
    // it is written.
    let target = start + complete as u64 + 1;
    let mut response = reqwest::get(segment_url(target)).await.expect("the next segment");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers().get("cache-control").and_then(|v| v.to_str().ok()), Some("no-store"));
    let first_chunk = response.chunk().await.expect("bytes").expect("a first chunk");
    let at_first = Instant::now();
    let listed = get_text(&server.hls_url("cam", "video.m3u8")).await;
    let whole = format!("video-{run}-{target}.m4s");
    assert!(
        !listed.lines().any(|l| l.starts_with(&whole)),
        "the first chunk came before segment {target} was complete:\n{listed}"
    );
    let mut bytes = first_chunk.to_vec();
    while let Some(chunk) = response.chunk().await.expect("bytes") {
        bytes.extend_from_slice(&chunk);
    }
    eprintln!("segment {target}: first chunk {:?} before the last", at_first.elapsed());
    let (_, hls) = get(&server.hls_url("cam", &whole)).await;
    assert_eq!(bytes, hls.to_vec(), "streamed, it is the same segment");

    // Now the one after it is forming; the one after that is held, not
    // refused, until it starts.
    let (status, _) = get(&segment_url(target + 2)).await;
    assert_eq!(status, 200, "a request inside the availability window is held until the segment exists");
    let (status, _) = get(&segment_url(target + 40)).await;
    assert_eq!(status, 404, "far ahead is unknown");
    let _ = publisher.kill();
    let _ = publisher.wait();
}

/// A player that joins the moment a stream appears: for an RTMP and an SRT
/// source, the very first multivariant playlist and the very first MPD that
/// answer 200 already declare audio and video, and ffprobe started right
/// then reads both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_answers_declare_audio_and_video() {
    let server = Server::start(&[]);
    let srt_args = {
        let mut a: Vec<String> = ["-hide_banner", "-loglevel", "error", "-nostdin", "-re"].map(String::from).to_vec();
        a.extend(["-f", "lavfi", "-i", "testsrc=size=320x240:rate=25"].map(String::from));
        a.extend(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", "30"].map(String::from));
        a.extend(
            ["-c:v", "libx264", "-preset", "veryfast", "-g", "25", "-bf", "0", "-pix_fmt", "yuv420p"].map(String::from),
        );
        a.extend(["-c:a", "aac", "-f", "mpegts"].map(String::from));
        a.push(server.srt_url("early-srt", ""));
        a
    };
    for (name, args) in [("early-rtmp", rtmp_publish_args(&server.rtmp_url("early-rtmp"), 30)), ("early-srt", srt_args)]
    {
        let mut publisher = ffmpeg_spawn(&args);
        let master = until("the first multivariant playlist", 30, || async {
            let (status, body) = get(&server.hls_url(name, "index.m3u8")).await;
            (status == 200).then(|| String::from_utf8_lossy(&body).into_owned())
        })
        .await;
        assert!(
            master.contains("#EXT-X-MEDIA:TYPE=AUDIO"),
            "{name}: the first multivariant playlist has audio: {master}"
        );
        assert!(master.contains("avc1.") && master.contains("mp4a.40.2"), "{name}: {master}");
        let sections = ffprobe(&server.hls_url(name, "index.m3u8"), &["-show_entries", "stream=codec_name"]);
        let codecs: Vec<&str> = sections.iter().filter_map(|s| s.get("codec_name").map(String::as_str)).collect();
        assert!(codecs.contains(&"h264") && codecs.contains(&"aac"), "{name}: ffprobe read {codecs:?}");
        let _ = publisher.kill();
        let _ = publisher.wait();
    }
    // The MPD, for a source it has never seen before.
    let mut publisher = ffmpeg_spawn(&rtmp_publish_args(&server.rtmp_url("early-dash"), 30));
    let mpd = until("the first MPD", 30, || async {
        let (status, body) = get(&format!("http://{}/dash/early-dash/index.mpd", server.http)).await;
        (status == 200).then(|| String::from_utf8_lossy(&body).into_owned())
    })
    .await;
    assert!(mpd.contains("contentType=\"video\"") && mpd.contains("contentType=\"audio\""), "{mpd}");
    let sections =
        ffprobe(&format!("http://{}/dash/early-dash/index.mpd", server.http), &["-show_entries", "stream=codec_name"]);
    let codecs: Vec<&str> = sections.iter().filter_map(|s| s.get("codec_name").map(String::as_str)).collect();
    assert!(codecs.contains(&"h264") && codecs.contains(&"aac"), "the DASH demuxer read {codecs:?}");
    let _ = publisher.kill();
    let _ = publisher.wait();
}
