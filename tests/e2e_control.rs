//! The control plane through its HTTP API, as an operator's client uses
//! it, with real publishers (ffmpeg) and a real webhook receiver.

mod common;
#[path = "common/webhooks.rs"]
mod webhooks;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use common::*;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use webhooks::{next_hook, receiver, Hook};

/// HMAC-SHA256 as the receiver would compute it (RFC 2104, by hand, so the
/// test does not share code with the server it checks).
fn hmac_sha256_hex(key: &[u8], msg: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let pad = |b: u8| k.iter().map(|x| x ^ b).collect::<Vec<u8>>();
    let inner = Sha256::new().chain_update(pad(0x36)).chain_update(msg).finalize();
    let outer = Sha256::new().chain_update(pad(0x5c)).chain_update(inner).finalize();
    outer.iter().map(|b| format!("{b:02x}")).collect()
}

fn verify_signature(h: &Hook, secret: &str) {
    let sig = h.headers.get("x-tidecast-signature").and_then(|v| v.to_str().ok()).expect("signature header");
    let (t, v1) = sig.split_once(',').expect("t=..,v1=..");
    let t = t.strip_prefix("t=").expect("t=");
    let v1 = v1.strip_prefix("v1=").expect("v1=");
    assert_eq!(h.headers.get("x-trigger-unixmillis").and_then(|v| v.to_str().ok()), Some(t));
    assert_eq!(v1, hmac_sha256_hex(secret.as_bytes(), format!("{t}.{}", h.body).as_bytes()), "signature verifies");
    assert_ne!(v1, hmac_sha256_hex(b"another secret", format!("{t}.{}", h.body).as_bytes()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_are_isolated_on_every_resource() {
    let server = Server::start(&[]);
    let a = ADMIN_KEY;
    api_ok("POST", &server.api("/tenants"), a, Some(json!({"id": "acme"})), 201).await;
    api_ok("POST", &server.api("/tenants"), a, Some(json!({"id": "globex", "quotas": {"max_streams": 2}})), 201).await;
    let ka = api_ok("POST", &server.api("/keys"), a, Some(json!({"tenant": "acme"})), 201).await;
    let kb = api_ok("POST", &server.api("/keys"), a, Some(json!({"tenant": "globex"})), 201).await;
    let (ka, kb) = (ka["secret"].as_str().unwrap().to_owned(), kb["secret"].as_str().unwrap().to_owned());

    // acme sets up a stream, a key, a trigger.
    api_ok(
        "POST",
        &server.api("/streams"),
        &ka,
        Some(json!({"name": "acme-cam", "playback_token_required": true})),
        201,
    )
    .await;
    let sk = api_ok("POST", &server.api("/streams/acme-cam/keys"), &ka, Some(json!({})), 201).await;
    let sk_id = sk["id"].as_str().unwrap().to_owned();
    let trig = api_ok(
        "POST",
        &server.api("/triggers"),
        &ka,
        Some(json!({"trigger": "STREAM_END", "url": "http://127.0.0.1:9/x"})),
        201,
    )
    .await;
    assert_eq!(trig["tenant"], "acme");
    let trig_id = trig["id"].as_str().unwrap().to_owned();
    let acme_key_id =
        api_ok("GET", &server.api("/keys"), &ka, None, 200).await["items"][0]["id"].as_str().unwrap().to_owned();

    // globex sees none of it, and cannot touch any of it.
    for (method, path, body) in [
        ("GET", "/tenants/acme".to_string(), None),
        ("PATCH", "/tenants/acme".to_string(), Some(json!({"name": "x"}))),
        ("GET", "/streams/acme-cam".to_string(), None),
        ("PATCH", "/streams/acme-cam".to_string(), Some(json!({"playback_token_required": false}))),
        ("DELETE", "/streams/acme-cam".to_string(), None),
        ("GET", "/streams/acme-cam/keys".to_string(), None),
        ("POST", "/streams/acme-cam/keys".to_string(), Some(json!({}))),
        ("DELETE", format!("/streams/acme-cam/keys/{sk_id}"), None),
        ("POST", "/streams/acme-cam/tokens".to_string(), Some(json!({}))),
        ("GET", format!("/triggers/{trig_id}"), None),
        ("DELETE", format!("/triggers/{trig_id}"), None),
        ("DELETE", format!("/keys/{acme_key_id}"), None),
        ("DELETE", "/sessions/publish:acme-cam".to_string(), None),
    ] {
        let (status, body, ct) = api_call(method, &server.api(&path), &kb, body).await;
        assert!(status == 404 || status == 403, "{method} {path} by another tenant: {status} {body}");
        assert_eq!(ct, "application/problem+json", "{method} {path}");
        assert!(body["type"].as_str().unwrap().starts_with("urn:tidecast:problem:"), "{body}");
    }
    // Creating things in acme's name is refused too.
    let (s, _, _) = api_call("POST", &server.api("/streams"), &kb, Some(json!({"name": "x1", "tenant": "acme"}))).await;
    assert_eq!(s, 404);
    let (s, _, _) = api_call("POST", &server.api("/keys"), &kb, Some(json!({"tenant": "acme"}))).await;
    assert_eq!(s, 404);
    let (s, _, _) = api_call("POST", &server.api("/keys"), &kb, Some(json!({}))).await;
    assert_eq!(s, 201, "a tenant key makes keys for its own tenant");
    let (s, _, _) = api_call("POST", &server.api("/tenants"), &kb, Some(json!({"id": "evil"}))).await;
    assert_eq!(s, 403);
    let (s, _, _) = api_call("GET", &server.api("/load"), &kb, None).await;
    assert_eq!(s, 403, "the node's load is for admins");
    let (s, _, _) = api_call(
        "POST",
        &server.api("/triggers"),
        &kb,
        Some(json!({"trigger": "PUSH_REWRITE", "url": "http://127.0.0.1:9/"})),
    )
    .await;
    assert_eq!(s, 403, "node-wide triggers are for admins");
    // Lists show only one's own.
    for path in ["/tenants", "/streams", "/keys", "/triggers", "/sessions"] {
        let page = api_ok("GET", &server.api(path), &kb, None, 200).await;
        let text = page.to_string();
        assert!(!text.contains("acme"), "{path} leaks acme: {text}");
    }
    let streams = api_ok("GET", &server.api("/streams"), a, None, 200).await;
    assert_eq!(streams["items"].as_array().unwrap().len(), 1, "the admin sees every stream");
    // Stream names are global, but taking one says nothing of its owner.
    let (s, body, _) = api_call("POST", &server.api("/streams"), &kb, Some(json!({"name": "acme-cam"}))).await;
    assert_eq!(s, 409);
    assert!(!body.to_string().contains("acme\""), "{body}");

    // No key, a wrong key.
    let (s, _, _) = api_call("GET", &server.api("/streams"), "", None).await;
    assert_eq!(s, 401);
    let (s, body, _) = api_call("GET", &server.api("/streams"), "tck_wrong", None).await;
    assert_eq!((s, body["type"].as_str()), (401, Some("urn:tidecast:problem:unauthorized")));
    // Every change is in the audit log.
    let audit = api_ok("GET", &server.api("/audit"), a, None, 200).await;
    let text = audit.to_string();
    for what in ["\"tenant\"", "\"stream\"", "\"stream_key\"", "\"trigger\"", "\"api_key\""] {
        assert!(text.contains(what), "audit log has a {what} entry: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_keys_rotate_and_playback_tokens_gate_viewers() {
    let server = Server::start(&["--hls-segment", "1"]);
    let a = ADMIN_KEY;
    api_ok("POST", &server.api("/tenants"), a, Some(json!({"id": "acme"})), 201).await;
    api_ok(
        "POST",
        &server.api("/streams"),
        a,
        Some(json!({"name": "show", "tenant": "acme", "playback_token_required": true})),
        201,
    )
    .await;
    let old = api_ok("POST", &server.api("/streams/show/keys"), a, Some(json!({})), 201).await;
    let old_key = old["key"].as_str().unwrap().to_owned();

    // Open mode is over: a made-up name no longer publishes.
    let out = ffmpeg(&rtmp_publish_args(&server.rtmp_url("show"), 1));
    assert!(!out.status.success(), "publishing without a key must fail");

    // Rotate: a new key, the old one retired at once.
    let new =
        api_ok("POST", &server.api("/streams/show/keys"), a, Some(json!({"retire_others_after_secs": 0})), 201).await;
    let new_key = new["key"].as_str().unwrap().to_owned();
    let out = ffmpeg(&rtmp_publish_args(&server.rtmp_url(&old_key), 1));
    assert!(!out.status.success(), "the rotated-out key must be refused");
    assert!(server.log().contains("unknown or expired stream key"), "{}", server.log());
    let keys = api_ok("GET", &server.api("/streams/show/keys"), a, None, 200).await;
    assert_eq!(keys["items"].as_array().unwrap().len(), 2, "{keys}");
    assert!(!keys.to_string().contains(&new_key), "key secrets are never listed");

    let mut publisher = ffmpeg_spawn(&rtmp_publish_args(&server.rtmp_url(&new_key), 60));
    let token =
        api_ok("POST", &server.api("/streams/show/tokens"), a, Some(json!({"expires_in_secs": 600})), 201).await;
    let token = token["token"].as_str().unwrap().to_owned();
    let with = |file: &str, t: &str| server.hls_url("show", &format!("{file}?token={t}"));
    let playlist = until("the tokened playlist", 60, || {
        let url = with("video.m3u8", &token);
        async move {
            let (status, body) = get(&url).await;
            let text = String::from_utf8_lossy(&body).into_owned();
            (status == 200 && text.contains("#EXTINF")).then_some(text)
        }
    })
    .await;
    // Every URI the playlist names carries the token, and works.
    let uris: Vec<&str> = playlist
        .lines()
        .filter_map(|l| if l.starts_with('#') { attr(l, "URI") } else { Some(l) })
        .filter(|u| !u.is_empty())
        .collect();
    assert!(!uris.is_empty());
    for u in &uris {
        assert!(u.contains(&format!("token={token}")), "{u} lacks the token");
    }
    let init = uris.iter().find(|u| u.contains(".mp4")).expect("an init segment");
    let segment = playlist.lines().find(|l| !l.starts_with('#') && l.contains(".m4s")).expect("a segment");
    for u in [init, &segment] {
        assert_eq!(get(&server.hls_url("show", u)).await.0, 200, "{u}");
        let bare = u.split('?').next().unwrap();
        assert_eq!(get(&server.hls_url("show", bare)).await.0, 401, "no token, no media: {bare}");
    }

    // Wrong stream, garbage, expired.
    api_ok("POST", &server.api("/streams"), a, Some(json!({"name": "other", "tenant": "acme"})), 201).await;
    let other = api_ok("POST", &server.api("/streams/other/tokens"), a, Some(json!({})), 201).await;
    assert_eq!(get(&with("video.m3u8", other["token"].as_str().unwrap())).await.0, 403);
    assert_eq!(get(&with("video.m3u8", "garbage.token")).await.0, 403);
    let short = api_ok("POST", &server.api("/streams/show/tokens"), a, Some(json!({"expires_in_secs": 1})), 201).await;
    let short = short["token"].as_str().unwrap().to_owned();
    assert_eq!(get(&with("video.m3u8", &short)).await.0, 200);
    // Expiry is the behaviour under test: wait it out.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(get(&with("video.m3u8", &short)).await.0, 403, "an expired token cannot play");
    // A token bound to another address.
    let bound = api_ok("POST", &server.api("/streams/show/tokens"), a, Some(json!({"ip": "192.0.2.1"})), 201).await;
    assert_eq!(get(&with("video.m3u8", bound["token"].as_str().unwrap())).await.0, 403);

    // The viewer shows as a session; the load report and metrics count the stream.
    let sessions = api_ok("GET", &server.api("/sessions"), a, None, 200).await;
    let text = sessions.to_string();
    assert!(text.contains("publish:show") && text.contains("\"hls\""), "{text}");
    let load = until("the load report to count the stream", 10, || {
        let url = server.api("/load");
        async move {
            let load = api_ok("GET", &url, ADMIN_KEY, None, 200).await;
            (load["streams"] == 1 && load["viewers_by_protocol"]["hls"].as_u64().is_some()).then_some(load)
        }
    })
    .await;
    assert!(load["bandwidth_in_bps"].as_u64().unwrap() > 0 || load["bytes_in_total"]["rtmp"].as_u64().unwrap() > 0);
    let score = load["score"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&score));
    // The start-up encoder probe: x264 always works; every other candidate
    // either works or says why not (a hardware encoder without its GPU).
    let encoders = until("the encoder probe in the load report", 30, || {
        let url = server.api("/load");
        async move {
            let load = api_ok("GET", &url, ADMIN_KEY, None, 200).await;
            load["encoders"].as_array().filter(|e| e.len() == 4).cloned()
        }
    })
    .await;
    let x264 = encoders.iter().find(|e| e["name"] == "libx264").expect("libx264 probed");
    assert_eq!((x264["works"].as_bool(), x264["hardware"].as_bool()), (Some(true), Some(false)), "{x264}");
    for e in &encoders {
        assert!(e["works"] == true || e["reason"].as_str().is_some_and(|r| !r.is_empty()), "{e}");
    }
    assert!(server.log().contains("encoder available") && server.log().contains("libx264"), "the probe is logged");
    let metrics = reqwest::get(format!("http://{}/metrics", server.admin)).await.unwrap().text().await.unwrap();
    for m in [
        "tidecast_streams 1",
        "tidecast_auth_failures_total{kind=\"playback_token\"}",
        "tidecast_bytes_in_total{protocol=\"rtmp\"}",
        "tidecast_load_score",
        "tidecast_session_ends_dropped_total 0",
    ] {
        assert!(metrics.contains(m), "{m} in /metrics:\n{metrics}");
    }
    // Kick the publisher: its session ends.
    let (s, _, _) = api_call("DELETE", &server.api("/sessions/publish:show"), a, None).await;
    assert_eq!(s, 204);
    let status = tokio::task::spawn_blocking(move || publisher.wait()).await.unwrap().unwrap();
    assert!(!status.success(), "ffmpeg sees its connection closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_rewrite_maps_keys_refuses_and_falls_back_on_timeout() {
    // The receiver: key "k-abc" becomes stream "rewritten", anything else is refused.
    let (url, mut hooks) = receiver(Arc::new(|path: &str, body: &str, _| match path {
        "rewrite" => {
            let key = body.lines().nth(2).unwrap_or_default();
            Some((StatusCode::OK, if key == "k-abc" { "rewritten".into() } else { String::new() }))
        }
        "hang" => None,
        _ => Some((StatusCode::OK, "true".into())),
    }))
    .await;
    let server = Server::start(&["--hls-segment", "1"]);
    let a = ADMIN_KEY;
    let h = api_ok(
        "POST",
        &server.api("/triggers"),
        a,
        Some(json!({"trigger": "PUSH_REWRITE", "url": format!("{url}/rewrite"), "blocking": true, "timeout_ms": 5000, "default_response": ""})),
        201,
    )
    .await;
    let secret = h["secret"].as_str().unwrap().to_owned();
    assert!(secret.len() >= 32, "a secret is generated and shown once");
    let listed = api_ok("GET", &server.api(&format!("/triggers/{}", h["id"].as_str().unwrap())), a, None, 200).await;
    assert!(listed.get("secret").is_none(), "the secret is not shown again: {listed}");

    let mut publisher = ffmpeg_spawn(&rtmp_publish_args(&server.rtmp_url("k-abc"), 60));
    let hook = next_hook(&mut hooks, "PUSH_REWRITE").await;
    assert_eq!(hook.headers.get("content-type").unwrap(), "text/plain");
    let lines: Vec<&str> = hook.body.lines().collect();
    assert_eq!(lines.len(), 3, "MistServer's PUSH_REWRITE payload: url, hostname, stream: {lines:?}");
    assert!(lines[0].starts_with("rtmp://") && lines[0].ends_with("/live/k-abc"), "{lines:?}");
    assert_eq!(lines[1], "127.0.0.1");
    verify_signature(&hook, &secret);
    wait_for_segment(&server, "rewritten", "video", 1).await;
    assert_eq!(get(&server.hls_url("k-abc", "index.m3u8")).await.0, 404, "the key is not a stream name");

    let out = ffmpeg(&rtmp_publish_args(&server.rtmp_url("k-wrong"), 1));
    assert!(!out.status.success(), "an empty PUSH_REWRITE answer refuses the publish");
    assert!(server.log().contains("refused by PUSH_REWRITE"), "{}", server.log());

    // A blocking STREAM_PUSH handler that never answers: its default decides.
    let sp = api_ok(
        "POST",
        &server.api("/triggers"),
        a,
        Some(json!({"trigger": "STREAM_PUSH", "url": format!("{url}/hang"), "blocking": true, "timeout_ms": 300, "default_response": "false", "format": "json"})),
        201,
    )
    .await;
    let out = ffmpeg(&rtmp_publish_args(&server.rtmp_url("k-abc"), 1));
    assert!(!out.status.success());
    let hook = next_hook(&mut hooks, "STREAM_PUSH").await;
    assert_eq!(hook.headers.get("content-type").unwrap(), "application/json");
    let body: Value = serde_json::from_str(&hook.body).unwrap();
    assert_eq!(body["trigger"], "STREAM_PUSH");
    assert_eq!(body["address"], "127.0.0.1");
    assert_eq!(body["connector"], "rtmp");
    assert!(server.log().contains("blocking trigger failed; using its default answer"), "{}", server.log());
    // ...and with default "true" the same timeout lets it through (once the
    // first publisher has left).
    let _ = publisher.kill();
    let _ = publisher.wait();
    api_ok("DELETE", &server.api(&format!("/triggers/{}", sp["id"].as_str().unwrap())), a, None, 204).await;
    api_ok(
        "POST",
        &server.api("/triggers"),
        a,
        Some(json!({"trigger": "STREAM_PUSH", "url": format!("{url}/hang"), "blocking": true, "timeout_ms": 300, "default_response": "true"})),
        201,
    )
    .await;
    let mut publisher = ffmpeg_spawn(&rtmp_publish_args(&server.rtmp_url("k-abc"), 60));
    until("the publisher to come back after the timeout", 60, || {
        let log = server.log();
        async move { (log.matches("rtmp publish started").count() >= 2).then_some(()) }
    })
    .await;
    let _ = publisher.kill();
    let _ = publisher.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_are_retried_and_never_delay_media() {
    // STREAM_END fails twice, then succeeds; LIVE_TRACK_LIST never answers.
    let (url, mut hooks) = receiver(Arc::new(|path: &str, _body: &str, _| match path {
        "hang" => None,
        _ => Some((StatusCode::OK, "ok".into())),
    }))
    .await;
    let flaky_count = Arc::new(AtomicUsize::new(0));
    let fc = flaky_count.clone();
    let (flaky_url, mut flaky) = receiver(Arc::new(move |_: &str, _: &str, _| {
        let n = fc.fetch_add(1, Ordering::SeqCst);
        Some(if n < 2 { (StatusCode::INTERNAL_SERVER_ERROR, "boom".into()) } else { (StatusCode::OK, "ok".into()) })
    }))
    .await;
    let server = Server::start(&["--hls-segment", "1", "--reconnect-grace", "0"]);
    let a = ADMIN_KEY;
    for (trigger, u) in [
        ("LIVE_TRACK_LIST", format!("{url}/hang")),
        ("STREAM_END", format!("{flaky_url}/end")),
        ("STREAM_PUSH", format!("{url}/hang")), // not blocking: must not hold the publish
        ("USER_NEW", format!("{url}/hang")),    // not blocking: must not hold the viewer
    ] {
        api_ok(
            "POST",
            &server.api("/triggers"),
            a,
            Some(json!({"trigger": trigger, "url": u, "timeout_ms": 60000})),
            201,
        )
        .await;
    }
    let mut publisher = ffmpeg_spawn(&rtmp_publish_args(&server.rtmp_url("cam"), 4));
    // Media flows while every notification endpoint hangs.
    wait_for_segment(&server, "cam", "video", 1).await;
    let tracks = next_hook(&mut hooks, "LIVE_TRACK_LIST").await;
    let lines: Vec<&str> = tracks.body.lines().collect();
    assert_eq!(lines[0], "cam");
    let list: Value = serde_json::from_str(lines[1]).unwrap();
    assert_eq!(list[0]["codec"], "h264", "{list}");
    next_hook(&mut hooks, "USER_NEW").await;
    let _ = tokio::task::spawn_blocking(move || publisher.wait()).await;
    // STREAM_END: two failures, then the retry lands.
    for _ in 0..3 {
        let h = next_hook(&mut flaky, "STREAM_END").await;
        assert_eq!(h.body.lines().next(), Some("cam"));
    }
    assert_eq!(flaky_count.load(Ordering::SeqCst), 3, "delivered on the third attempt, then not again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9() {
    let mut server = Server::start(&[]);
    api_ok("POST", &server.api("/tenants"), ADMIN_KEY, Some(json!({"id": "acme"})), 201).await;
    let mut acknowledged: Vec<String> = Vec::new();
    let mut seed = 0x2545_f491_u32;
    for round in 0..5 {
        // Writes race a SIGKILL that lands after a pseudo-random number of them.
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        let kill_after = 3 + (seed % 15) as usize;
        let api = server.api("/streams");
        let (tx, mut rx) = mpsc::unbounded_channel();
        let writer = tokio::spawn(async move {
            for i in 0..200 {
                let name = format!("r{round}-s{i}");
                let (s, _, _) = api_call("POST", &api, ADMIN_KEY, Some(json!({"name": name, "tenant": "acme"}))).await;
                if s == 201 {
                    let _ = tx.send(name);
                } else {
                    return;
                }
            }
        });
        let mut seen = 0;
        while seen < kill_after {
            match rx.recv().await {
                Some(name) => {
                    acknowledged.push(name);
                    seen += 1;
                }
                None => break,
            }
        }
        server = server.kill9_and_restart();
        let _ = writer.await;
        while let Ok(name) = rx.try_recv() {
            acknowledged.push(name);
        }
        // Every acknowledged write is there, and the store reads cleanly.
        let mut names = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let q = after.as_ref().map_or(String::new(), |a| format!("&after={a}"));
            let page = api_ok("GET", &server.api(&format!("/streams?limit=50{q}")), ADMIN_KEY, None, 200).await;
            for s in page["items"].as_array().unwrap() {
                names.push(s["name"].as_str().unwrap().to_owned());
            }
            match page["next"].as_str() {
                Some(n) => after = Some(n.to_owned()),
                None => break,
            }
        }
        for name in &acknowledged {
            assert!(names.contains(name), "round {round}: acknowledged {name} is lost after kill -9");
        }
    }
    assert!(acknowledged.len() >= 15);
    let (s, _, _) = api_call("GET", &server.api("/tenants/acme"), ADMIN_KEY, None).await;
    assert_eq!(s, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_quotas_refuse_streams_and_viewers_past_the_limit() {
    let server = Server::start(&["--hls-segment", "1"]);
    let a = ADMIN_KEY;
    api_ok(
        "POST",
        &server.api("/tenants"),
        a,
        Some(json!({"id": "small", "quotas": {"max_streams": 1, "max_viewers": 1}})),
        201,
    )
    .await;
    let mut keys = Vec::new();
    for name in ["one", "two"] {
        api_ok("POST", &server.api("/streams"), a, Some(json!({"name": name, "tenant": "small"})), 201).await;
        let k = api_ok("POST", &server.api(&format!("/streams/{name}/keys")), a, Some(json!({})), 201).await;
        keys.push(k["key"].as_str().unwrap().to_owned());
    }
    let mut publisher = ffmpeg_spawn(&rtmp_publish_args(&server.rtmp_url(&keys[0]), 60));
    wait_for_segment(&server, "one", "video", 1).await;
    let out = ffmpeg(&rtmp_publish_args(&server.rtmp_url(&keys[1]), 1));
    assert!(!out.status.success(), "a second live stream is past max_streams");
    assert!(server.log().contains("tenant quota: at most 1 live streams"), "{}", server.log());

    // wait_for_segment was the first viewer session; another viewer (another
    // user agent) is past max_viewers.
    let client = |ua: &'static str| reqwest::Client::builder().user_agent(ua).build().unwrap();
    let url = server.hls_url("one", "index.m3u8");
    let r = client("second viewer").get(&url).send().await.unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("tenant quota: at most 1 viewers"));
    let metrics = reqwest::get(format!("http://{}/metrics", server.admin)).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("tidecast_quota_refusals_total{quota=\"max_streams\"} 1"), "{metrics}");
    assert!(metrics.contains("tidecast_quota_refusals_total{quota=\"max_viewers\"} 1"), "{metrics}");

    // A publisher over its tenant's ingest bitrate is disconnected (after
    // five seconds over, so a keyframe burst is not a violation).
    api_ok("POST", &server.api("/tenants"), a, Some(json!({"id": "trickle", "quotas": {"max_ingest_kbps": 8}})), 201)
        .await;
    api_ok("POST", &server.api("/streams"), a, Some(json!({"name": "fat", "tenant": "trickle"})), 201).await;
    let k = api_ok("POST", &server.api("/streams/fat/keys"), a, Some(json!({})), 201).await;
    let mut fat = ffmpeg_spawn(&rtmp_publish_args(&server.rtmp_url(k["key"].as_str().unwrap()), 60));
    let status = tokio::task::spawn_blocking(move || fat.wait()).await.unwrap().unwrap();
    assert!(!status.success(), "ffmpeg was cut off");
    assert!(server.log().contains("ingest bitrate over the tenant quota"), "{}", server.log());
    // Its session ends saying why: the quota, not a takeover.
    until("the cut publisher's session to end", 10, || async {
        server
            .log()
            .lines()
            .any(|l| l.contains("session ended") && l.contains("stream=fat") && l.contains("reason=quota"))
            .then_some(())
    })
    .await;
    let _ = publisher.kill();
    let _ = publisher.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_authentications_are_limited_per_address() {
    let server = Server::start_with_config(Some("[admin]\nauth_failures_per_minute = 3\n"), &[]);
    api_ok("POST", &server.api("/tenants"), ADMIN_KEY, Some(json!({"id": "acme"})), 201).await;
    let stream = json!({"name": "guarded", "tenant": "acme", "playback_token_required": true});
    api_ok("POST", &server.api("/streams"), ADMIN_KEY, Some(stream), 201).await;
    // Three failures are answered as failures...
    for _ in 0..2 {
        let (status, body, _) = api_call("GET", &server.api("/streams"), "wrong-key", None).await;
        assert_eq!(status, 401, "{body}");
    }
    let (status, _) = get(&server.hls_url("guarded", "index.m3u8?token=forged")).await;
    assert_eq!(status, 403, "a forged playback token counts as a failure too");
    // ...then the address is refused everything, a good key included.
    let r = reqwest::Client::new().get(server.api("/streams")).bearer_auth(ADMIN_KEY).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 429);
    assert_eq!(r.headers().get("retry-after").and_then(|v| v.to_str().ok()), Some("60"));
    assert_eq!(r.headers().get("content-type").and_then(|v| v.to_str().ok()), Some("application/problem+json"));
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["type"], "urn:tidecast:problem:rate-limited");
    let (status, _) = get(&server.hls_url("guarded", "index.m3u8")).await;
    assert_eq!(status, 429, "playback from the address is refused too");
    let metrics = reqwest::get(format!("http://{}/metrics", server.admin)).await.unwrap().text().await.unwrap();
    let limited = metrics
        .lines()
        .find_map(|l| l.strip_prefix("tidecast_rate_limited_total "))
        .and_then(|v| v.trim().parse::<f64>().ok());
    assert!(limited.is_some_and(|n| n >= 2.0), "tidecast_rate_limited_total counts both refusals:\n{metrics}");
}

/// Where a live stream's memory is, as an operator sees it: the stream's
/// live view and `/metrics` show what its ring, CMAF window and TS ring hold
/// while it runs, only to its own tenant, and nothing once it has ended and
/// its playlists' linger has passed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_memory_is_accounted_while_live_and_gone_after() {
    let server = Server::start_with_config(Some("[hls]\nlinger_seconds = 1\n"), &["--reconnect-grace", "0"]);
    let a = ADMIN_KEY;
    api_ok("POST", &server.api("/tenants"), a, Some(json!({"id": "acme"})), 201).await;
    api_ok("POST", &server.api("/tenants"), a, Some(json!({"id": "globex"})), 201).await;
    let ka = api_ok("POST", &server.api("/keys"), a, Some(json!({"tenant": "acme"})), 201).await;
    let kb = api_ok("POST", &server.api("/keys"), a, Some(json!({"tenant": "globex"})), 201).await;
    let (ka, kb) = (ka["secret"].as_str().unwrap().to_owned(), kb["secret"].as_str().unwrap().to_owned());
    api_ok("POST", &server.api("/streams"), &ka, Some(json!({"name": "acme-mem"})), 201).await;
    let key = api_ok("POST", &server.api("/streams/acme-mem/keys"), &ka, Some(json!({})), 201).await;
    let key = key["key"].as_str().unwrap().to_owned();

    let mut publisher = ffmpeg_spawn(&rtmp_publish_args(&server.rtmp_url(&key), 6));
    let live_url = server.api("/streams/acme-mem/live");
    // The TS form is muxed from its first viewer on: one reads it meanwhile.
    let ts_url = server.ts_url("acme-mem");
    let ts_viewer = until("an HTTP-TS viewer", 30, || {
        let url = ts_url.clone();
        async move { reqwest::get(url).await.ok().filter(|r| r.status() == 200) }
    })
    .await;
    let live = until("the stream's buffers to show", 30, || {
        let url = live_url.clone();
        let ka = ka.clone();
        async move {
            let v = api_ok("GET", &url, &ka, None, 200).await;
            let held = |h: &str| v["buffers"][h].as_u64().unwrap_or(0);
            (v["live"] == true && held("ring") > 0 && held("cmaf") > 0 && held("ts") > 0 && held("ingest") > 0)
                .then_some(v)
        }
    })
    .await;
    let sum: u64 = live["buffers"].as_object().unwrap().values().filter_map(Value::as_u64).sum();
    assert_eq!(live["buffered_bytes"].as_u64(), Some(sum), "{live}");
    // Another tenant does not see it.
    let (status, _, _) = api_call("GET", &live_url, &kb, None).await;
    assert_eq!(status, 404);
    let metrics_url = format!("http://{}/metrics", server.admin);
    until("the buffers in /metrics", 10, || {
        let url = metrics_url.clone();
        async move {
            let m = reqwest::get(url).await.ok()?.text().await.ok()?;
            m.contains("tidecast_stream_buffer_bytes{holder=\"ring\",stream=\"acme-mem\"}").then_some(())
        }
    })
    .await;

    assert!(publisher.wait().unwrap().success());
    drop(ts_viewer);
    let after = until("the stream's buffers to be released", 30, || {
        let url = live_url.clone();
        let ka = ka.clone();
        async move {
            let v = api_ok("GET", &url, &ka, None, 200).await;
            (v["live"] == false && v["buffers"].as_object().is_some_and(|b| b.is_empty())).then_some(v)
        }
    })
    .await;
    assert_eq!(after["buffered_bytes"], 0);
    until("the series to leave /metrics", 10, || {
        let url = metrics_url.clone();
        async move {
            let m = reqwest::get(url).await.ok()?.text().await.ok()?;
            (!m.contains("stream=\"acme-mem\"")).then_some(())
        }
    })
    .await;
}

/// Waits until `/sessions` lists a viewer of `protocol` on `stream`; its id.
async fn viewer_listed(server: &Server, stream: &str, protocol: &str) -> String {
    let url = server.api("/sessions");
    until(&format!("a {protocol} viewer in /sessions"), 30, || {
        let url = url.clone();
        async move {
            let page = api_ok("GET", &url, ADMIN_KEY, None, 200).await;
            page["items"].as_array()?.iter().find_map(|s| {
                (s["role"] == "viewer" && s["stream"] == stream && s["protocol"] == protocol)
                    .then(|| s["id"].as_str().map(str::to_owned))
                    .flatten()
            })
        }
    })
    .await
}

/// Waits until no viewer of `stream` is listed.
async fn no_viewer_listed(server: &Server, stream: &str) {
    let url = server.api("/sessions");
    until("the viewer to leave /sessions", 30, || {
        let url = url.clone();
        async move {
            let page = api_ok("GET", &url, ADMIN_KEY, None, 200).await;
            let any = page["items"].as_array()?.iter().any(|s| s["role"] == "viewer" && s["stream"] == stream);
            (!any).then_some(())
        }
    })
    .await;
}

/// A player that reads `url` until it ends or is killed.
fn player(url: &str) -> std::process::Child {
    ffmpeg_spawn(&["-v", "error", "-i", url, "-f", "null", "-"].map(String::from))
}

/// One tenant with `max_viewers = 1`, one live stream, and a viewer of each
/// protocol in turn: each is admitted, listed with its protocol, blocks a
/// second viewer of its own protocol and of another one, and ends with one
/// USER_END; RTMP and SRT players are kicked through the API and their
/// real clients disconnect. STREAM_END carries the viewers and bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_viewer_quota_counts_every_protocol_and_sessions_end_once() {
    let (hook_url, mut hooks) = receiver(Arc::new(|_: &str, _: &str, _| Some((StatusCode::OK, String::new())))).await;
    let server = Server::start(&["--reconnect-grace", "0"]);
    let a = ADMIN_KEY;
    for t in ["USER_NEW", "USER_END", "STREAM_END"] {
        let body = json!({"trigger": t, "url": format!("{hook_url}/{t}")});
        api_ok("POST", &server.api("/triggers"), a, Some(body), 201).await;
    }
    api_ok("POST", &server.api("/tenants"), a, Some(json!({"id": "acme", "quotas": {"max_viewers": 1}})), 201).await;
    api_ok("POST", &server.api("/streams"), a, Some(json!({"name": "q", "tenant": "acme"})), 201).await;
    let key = api_ok("POST", &server.api("/streams/q/keys"), a, Some(json!({})), 201).await;
    let key = key["key"].as_str().unwrap().to_owned();
    let mut publisher = ffmpeg_spawn(&rtmp_publish_args(&server.rtmp_url(&key), 300));
    // Live, watched through the API: a playlist poll would be a viewer.
    let live_url = server.api("/streams/q/live");
    until("the stream to be live", 60, || {
        let url = live_url.clone();
        async move {
            let v = api_ok("GET", &url, ADMIN_KEY, None, 200).await;
            (v["live"] == true && v["buffers"]["cmaf"].as_u64().unwrap_or(0) > 0).then_some(())
        }
    })
    .await;

    let hls = server.hls_url("q", "index.m3u8");
    let client = reqwest::Client::builder().user_agent("second-player").build().unwrap();
    let hls_status =
        |client: reqwest::Client, url: String| async move { client.get(url).send().await.unwrap().status() };
    let rtmp_play = format!("rtmp://{}/live/q", server.rtmp);
    let srt_play = server.srt_url("#!::r=q,m=request", "");
    let whep = format!("http://{}/whep/q", server.http);
    let offer = include_str!("fixtures/chromium-whip-offer.sdp").replace("a=sendonly", "a=recvonly");
    let whep_post = |offer: String, url: String| async move {
        reqwest::Client::new().post(url).header("content-type", "application/sdp").body(offer).send().await.unwrap()
    };
    let mut ended = 0;

    // HLS: the multivariant playlist hands out a session id that every URI carries.
    let (status, body) = get(&hls).await;
    assert_eq!(status, 200);
    let text = String::from_utf8_lossy(&body).into_owned();
    let sid = text.lines().find_map(|l| l.split("sid=").nth(1)).expect("a sid in the playlist").to_owned();
    let id = viewer_listed(&server, "q", "hls").await;
    assert!(sid.starts_with(&id), "{sid} names session {id}");
    assert_eq!(get(&server.hls_url("q", &format!("video.m3u8?sid={id}"))).await.0, 200, "the same player");
    assert_eq!(hls_status(client.clone(), hls.clone()).await, 403, "a second HLS player");
    let (s, _) = get(&server.ts_url("q")).await;
    assert_eq!(s, 403, "an HTTP-TS viewer while the HLS one watches");
    let (s, _, _) = api_call("DELETE", &server.api(&format!("/sessions/{id}")), a, None).await;
    assert_eq!(s, 204);
    assert_eq!(get(&server.hls_url("q", &format!("video.m3u8?sid={id}"))).await.0, 403, "kicked");
    no_viewer_listed(&server, "q").await;
    ended += 1;

    // HTTP-TS: one connection is one session.
    let ts = reqwest::get(server.ts_url("q")).await.unwrap();
    assert_eq!(ts.status(), 200);
    viewer_listed(&server, "q", "ts").await;
    assert_eq!(get(&server.ts_url("q")).await.0, 403, "a second HTTP-TS viewer");
    assert_eq!(whep_post(offer.clone(), whep.clone()).await.status(), 403, "a WHEP viewer meanwhile");
    drop(ts);
    no_viewer_listed(&server, "q").await;
    ended += 1;

    // WHEP: the session exists from the offer on.
    let r = whep_post(offer.clone(), whep.clone()).await;
    assert_eq!(r.status(), 201);
    let resource = format!("http://{}{}", server.http, r.headers()["location"].to_str().unwrap());
    let id = viewer_listed(&server, "q", "whep").await;
    // The session carries its WebRTC link, named by the WHEP resource.
    let page = api_ok("GET", &server.api("/sessions"), a, None, 200).await;
    let entry = page["items"].as_array().unwrap().iter().find(|s| s["id"] == id.as_str()).cloned().unwrap();
    let link = entry["webrtc"]["id"].as_str().unwrap_or_default().to_owned();
    assert!(!link.is_empty() && resource.ends_with(&link), "{entry}");
    assert_eq!(whep_post(offer.clone(), whep.clone()).await.status(), 403, "a second WHEP viewer");
    assert_eq!(hls_status(client.clone(), hls.clone()).await, 403, "an HLS player meanwhile");
    let del = reqwest::Client::new().delete(&resource).send().await.unwrap();
    assert_eq!(del.status(), 200);
    no_viewer_listed(&server, "q").await;
    ended += 1;

    // RTMP and SRT players: listed, counted, refused when second, kicked.
    for (protocol, url) in [("rtmp", rtmp_play.clone()), ("srt", srt_play.clone())] {
        let mut first = player(&url);
        let id = viewer_listed(&server, "q", protocol).await;
        let second = tokio::task::spawn_blocking({
            let url = url.clone();
            move || ffmpeg(&["-v", "error", "-i", &url, "-t", "1", "-f", "null", "-"].map(String::from))
        });
        assert!(!second.await.unwrap().status.success(), "a second {protocol} player is refused");
        assert_eq!(hls_status(client.clone(), hls.clone()).await, 403, "an HLS player while {protocol} plays");
        let (s, _, _) = api_call("DELETE", &server.api(&format!("/sessions/{id}")), a, None).await;
        assert_eq!(s, 204, "{protocol} players can be kicked");
        let status = tokio::task::spawn_blocking(move || first.wait()).await.unwrap().unwrap();
        let _ = status; // ffmpeg's exit status after a cut connection varies; that it exited is the point
        no_viewer_listed(&server, "q").await;
        ended += 1;
    }

    // Every admitted viewer got one USER_NEW and one USER_END; none was
    // sent for the refused ones.
    let _ = publisher.kill();
    let _ = publisher.wait();
    let (mut news, mut ends, mut end) = (0, 0, None);
    while end.is_none() || ends < ended {
        let h = tokio::time::timeout(Duration::from_secs(60), hooks.recv())
            .await
            .unwrap_or_else(|_| panic!("hooks so far: {news} USER_NEW, {ends} USER_END, STREAM_END {}", end.is_some()))
            .expect("receiver open");
        match h.headers.get("x-trigger").and_then(|v| v.to_str().ok()) {
            Some("USER_NEW") => news += 1,
            Some("USER_END") => ends += 1,
            Some("STREAM_END") => end = Some(h),
            _ => {}
        }
    }
    assert_eq!((news, ends), (ended, ended), "one USER_NEW and one USER_END per admitted viewer");
    let end = end.unwrap();
    let fields: Vec<&str> = end.body.lines().collect();
    assert_eq!(fields[0], "q");
    assert_eq!(fields[3], ended.to_string(), "STREAM_END counts the viewers: {fields:?}");
    assert!(fields[1].parse::<u64>().unwrap() > 0, "bytes sent to viewers: {fields:?}");
    assert!(fields[2].parse::<u64>().unwrap() > 0, "bytes received: {fields:?}");
}

/// `docs/grafana/tidecast.json` asks only for metrics the server exports:
/// every `tidecast_*` name in its queries is declared by `/metrics`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grafana_dashboard_queries_only_exported_metrics() {
    let server = Server::start(&[]);
    let text = reqwest::get(format!("http://{}/metrics", server.admin)).await.unwrap().text().await.unwrap();
    let declared: std::collections::HashSet<&str> =
        text.lines().filter_map(|l| l.strip_prefix("# TYPE ")).filter_map(|l| l.split(' ').next()).collect();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/grafana/tidecast.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).expect("valid JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 10, "a dashboard worth importing");
    let mut asked = 0;
    for panel in panels {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap_or_default();
            let names: Vec<&str> = expr
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| w.starts_with("tidecast_"))
                .collect();
            assert!(!names.is_empty(), "{}: {expr}", panel["title"]);
            for name in names {
                let family = ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(name);
                assert!(declared.contains(family), "{}: {name} is not exported\n{text}", panel["title"]);
                asked += 1;
            }
        }
    }
    assert!(asked >= 20, "{asked} metrics asked for");
}
