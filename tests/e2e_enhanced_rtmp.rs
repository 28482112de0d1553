//! HEVC and AV1 over Enhanced RTMP come out as playable fMP4 HLS. ffmpeg
//! encodes; the test's own E-RTMP publisher sends (Debian's ffmpeg 5.1 has
//! no E-RTMP muxer); ffmpeg reads the HLS back and decodes every frame.

mod common;
#[path = "common/erpublish.rs"]
mod erpublish;

use common::*;

fn encode(args: &[&str], out: &std::path::Path) -> Vec<u8> {
    let mut a: Vec<String> = [
        "-hide_banner",
        "-loglevel",
        "error",
        "-nostdin",
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=320x240:rate=25",
        "-t",
        "4",
        "-pix_fmt",
        "yuv420p",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    a.extend(args.iter().map(|s| s.to_string()));
    a.extend(["-y".to_string(), out.display().to_string()]);
    let o = ffmpeg(&a);
    assert!(o.status.success(), "encode failed: {}", String::from_utf8_lossy(&o.stderr));
    std::fs::read(out).expect("encoded file")
}

async fn check_readback(server: &Server, stream: &str, codec: &str) {
    let master = get_text(&server.hls_url(stream, "index.m3u8")).await;
    assert!(master.contains("RESOLUTION=320x240"), "{master}");
    let v = ffprobe(&server.hls_url(stream, "index.m3u8"), &["-show_entries", "stream=codec_name,width,height"]);
    let s = v.iter().find(|s| s.get("codec_name").is_some()).expect("a stream");
    assert_eq!((s["codec_name"].as_str(), s["width"].as_str(), s["height"].as_str()), (codec, "320", "240"));
    // Decode everything: a playable stream decodes all 100 frames without error.
    let out = ffmpeg(
        &["-v", "error", "-xerror", "-i"]
            .into_iter()
            .map(String::from)
            .chain([server.hls_url(stream, "index.m3u8")])
            .chain(["-f", "framemd5", "-"].map(String::from))
            .collect::<Vec<_>>(),
    );
    assert!(out.status.success(), "decode failed: {}", String::from_utf8_lossy(&out.stderr));
    let frames = String::from_utf8_lossy(&out.stdout).lines().filter(|l| !l.starts_with('#')).count();
    assert_eq!(frames, 100, "4 s at 25 fps decoded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hevc_over_enhanced_rtmp_plays_as_fmp4_hls() {
    let server = Server::start(&["--reconnect-grace", "0"]);
    let file = server.dir.path().join("in.hevc");
    let es = encode(
        &["-c:v", "libx265", "-x265-params", "bframes=0:keyint=25:min-keyint=25:log-level=error", "-f", "hevc"],
        &file,
    );
    let (record, pictures) = erpublish::hevc_pictures(&es);
    assert_eq!(pictures.len(), 100);
    erpublish::publish(server.rtmp, "hevc", b"hvc1", &record, &pictures, 25).await;
    check_readback(&server, "hevc", "hevc").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn av1_over_enhanced_rtmp_plays_as_fmp4_hls() {
    let server = Server::start(&["--reconnect-grace", "0"]);
    let file = server.dir.path().join("in.obu");
    let es = encode(&["-c:v", "libaom-av1", "-cpu-used", "8", "-g", "25", "-lag-in-frames", "0", "-f", "obu"], &file);
    let (record, pictures) = erpublish::av1_pictures(&es);
    assert_eq!(pictures.len(), 100);
    assert!(pictures[0].0, "the first temporal unit is a keyframe");
    erpublish::publish(server.rtmp, "av1", b"av01", &record, &pictures, 25).await;
    check_readback(&server, "av1", "av1").await;
}
