//! WHEP viewers: a full-ICE WebRTC peer (str0m, the same stack the server
//! runs) on its own UDP socket, receiving audio and video as a browser
//! does, with NACKs and RTCP; the session resource is deleted at the end.
//! A stall is a freeze of the video: its media time falling behind the wall
//! clock by more than a small jitter buffer (the playout-buffer model).

use std::time::{Duration, Instant};

use str0m::change::SdpAnswer;
use str0m::media::{Direction, MediaKind};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc, RtcConfig};
use tokio::net::UdpSocket;

use super::{PlayoutBuffer, RunTime, ViewerStats};

/// Seconds of video a WebRTC player holds before playing, and after a freeze.
const JITTER_BUFFER: f64 = 0.15;

/// Plays the WHEP endpoint `url` until `run.until`.
pub async fn viewer(client: reqwest::Client, url: String, run: RunTime) -> ViewerStats {
    let mut stats = ViewerStats::default();
    let mut resource = None;
    if let Err(e) = play(&client, &url, run, &mut stats, &mut resource).await {
        stats.error = Some(e.to_string());
    }
    if let Some(r) = resource {
        // Hang up as a browser page does; a failure here changes nothing measured.
        let _ = client.delete(r).timeout(Duration::from_secs(2)).send().await;
    }
    stats
}

async fn play(
    client: &reqwest::Client,
    url: &str,
    run: RunTime,
    stats: &mut ViewerStats,
    resource: &mut Option<String>,
) -> anyhow::Result<()> {
    let socket = udp_socket()?;
    let local = socket.local_addr()?;
    let mut rtc: Rtc = RtcConfig::new().clear_codecs().enable_h264(true).enable_opus(true, false).build(Instant::now());
    rtc.add_local_candidate(Candidate::host(local, "udp")?);
    let mut change = rtc.sdp_api();
    let video = change.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
    change.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
    let (offer, pending) = change.apply().ok_or_else(|| anyhow::anyhow!("no offer to make"))?;

    let res = tokio::time::timeout(
        run.connect_timeout,
        client.post(url).header("content-type", "application/sdp").body(offer.to_sdp_string()).send(),
    )
    .await??;
    let status = res.status();
    if let Some(loc) = res.headers().get("location").and_then(|v| v.to_str().ok()) {
        *resource = Some(super::hls::resolve(url, loc));
    }
    let body = res.text().await?;
    anyhow::ensure!(status.as_u16() == 201, "WHEP answered {status}: {}", body.trim());
    rtc.sdp_api().accept_answer(pending, SdpAnswer::from_sdp_string(&body)?)?;

    let mut buffer = PlayoutBuffer::new(JITTER_BUFFER);
    let mut video_edge: Option<f64> = None;
    let mut first_video: Option<f64> = None;
    let connect_by = tokio::time::Instant::now() + run.connect_timeout;
    let mut buf = vec![0u8; 2048];
    loop {
        // Everything str0m wants done now, then the time it next wants to run.
        let wake = loop {
            match rtc.poll_output()? {
                Output::Timeout(t) => break t,
                Output::Transmit(t) => {
                    socket.send_to(&t.contents, t.destination).await?;
                }
                Output::Event(Event::IceConnectionStateChange(IceConnectionState::Disconnected)) => {
                    anyhow::bail!("ICE disconnected");
                }
                Output::Event(Event::MediaData(d)) => {
                    stats.bytes += d.data.len() as u64;
                    if d.mid == video {
                        let t = d.time.as_seconds();
                        let first = *first_video.get_or_insert(t);
                        // Media seconds since the first frame; frames may come
                        // out of order after a retransmission.
                        let edge = t - first;
                        let gained = edge - video_edge.unwrap_or(0.0);
                        if video_edge.is_none() || gained > 0.0 {
                            stats.started = true;
                            buffer.add(gained.max(0.0));
                            video_edge = Some(edge);
                        }
                    }
                }
                Output::Event(_) => {}
            }
        };
        let now = tokio::time::Instant::now();
        buffer.check(now);
        if now >= run.until {
            break;
        }
        if !stats.started && now >= connect_by {
            anyhow::bail!("no video within {:?}", run.connect_timeout);
        }
        let wake = tokio::time::Instant::from_std(wake).min(run.until);
        let input = tokio::select! {
            r = socket.recv_from(&mut buf) => {
                let (n, source) = r?;
                let Ok(contents) = buf[..n].try_into() else { continue };
                Input::Receive(Instant::now(), Receive { proto: Protocol::Udp, source, destination: local, contents })
            }
            _ = tokio::time::sleep_until(wake) => Input::Timeout(Instant::now()),
        };
        rtc.handle_input(input)?;
    }
    stats.stalls = buffer.stalls;
    stats.media_seconds = buffer.received();
    Ok(())
}

/// The viewer's UDP socket, with a receive buffer a browser would have
/// (2 MiB, as far as the host allows): the kernel's default (about 200 KiB)
/// overflows when a keyframe's packets arrive back to back for many
/// viewers at once, and the loss is the generator's, not the server's.
fn udp_socket() -> std::io::Result<UdpSocket> {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    let _ = s.set_recv_buffer_size(2 << 20);
    s.bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into())?;
    s.set_nonblocking(true)?;
    UdpSocket::from_std(s.into())
}
