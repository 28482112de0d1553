//! The admission policy in process: the playback router and the admin API
//! driven with `tower::ServiceExt::oneshot`, the gate asked directly, over a
//! real store in a temporary directory and a registry with no network.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tidecast_control::api::{router as api_router, Api};
use tidecast_control::auth::ConfigGate;
use tidecast_control::load::Traffic;
use tidecast_control::metrics::Metrics;
use tidecast_control::plane::ControlPlane;
use tidecast_control::store::{Db, RedbStore};
use tidecast_control::triggers::Triggers;
use tidecast_media::{Registry, RegistryConfig};
use tidecast_protocols::access::{AccessGate, PlayRequest, PublishRequest, Refusal};
use tidecast_protocols::hls::http::HlsHttp;
use tidecast_protocols::hls::{HlsConfig, HlsHub};
use tidecast_protocols::mpegts::http::TsHttp;
use tidecast_protocols::mpegts::output::TsHub;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

const ADMIN: &str = "admin-key-for-tests-0123456789";

struct Node {
    plane: Arc<ControlPlane>,
    registry: Registry,
    hls: Arc<HlsHub>,
    playback: Router,
    api: Router,
    _dir: tempfile::TempDir,
    shutdown: CancellationToken,
}

impl Drop for Node {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn node() -> Node {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = RedbStore::open(&dir.path().join("state.redb")).expect("store");
    let registry = Registry::new(RegistryConfig { grace: Duration::ZERO, ..Default::default() });
    let metrics = Arc::new(Metrics::new());
    let (triggers, worker) = Triggers::new("test".into(), metrics.clone());
    tokio::spawn(worker);
    let plane = ControlPlane::new(Db::new(Arc::new(store)), ConfigGate::default(), registry.clone(), metrics, triggers)
        .expect("plane");
    plane.bootstrap(Some(ADMIN)).expect("admin key");
    let shutdown = CancellationToken::new();
    let hls = HlsHub::new(HlsConfig::default());
    tokio::spawn(hls.clone().run(registry.clone(), shutdown.clone()));
    let ts = TsHub::new();
    tokio::spawn(ts.clone().run(registry.clone(), shutdown.clone()));
    tokio::task::yield_now().await;
    let traffic = Arc::new(Traffic::default());
    let gate: Arc<dyn AccessGate> = plane.clone();
    let playback = tidecast_protocols::hls::http::router(HlsHttp {
        hls: hls.clone(),
        gate: gate.clone(),
        traffic: traffic.clone(),
    })
    .merge(tidecast_protocols::mpegts::http::router(TsHttp { ts, gate, traffic }));
    let api = api_router(Api { plane: plane.clone(), srt: None, webrtc: None, profiles: None, pushes: None });
    Node { plane, registry, hls, playback, api, _dir: dir, shutdown }
}

fn peer() -> SocketAddr {
    "192.0.2.7:40000".parse().expect("address")
}

async fn call(app: &Router, method: &str, uri: &str, key: Option<&str>, body: Option<Value>) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(k) = key {
        req = req.header("authorization", format!("Bearer {k}"));
    }
    let body = match body {
        Some(v) => {
            req = req.header("content-type", "application/json");
            Body::from(v.to_string())
        }
        None => Body::empty(),
    };
    let mut req = req.body(body).expect("request");
    req.extensions_mut().insert(ConnectInfo(peer()));
    let res = app.clone().oneshot(req).await.expect("response");
    let status = res.status();
    let bytes = res.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

/// A GET whose response is kept (a streaming body holds its session).
async fn open(app: &Router, uri: &str) -> axum::response::Response {
    let mut req = Request::builder().uri(uri).body(Body::empty()).expect("request");
    req.extensions_mut().insert(ConnectInfo(peer()));
    app.clone().oneshot(req).await.expect("response")
}

async fn tenant_with_stream(n: &Node, tenant: &str, quotas: Value, stream: Value) {
    let (s, _) =
        call(&n.api, "POST", "/api/v1/tenants", Some(ADMIN), Some(json!({"id": tenant, "quotas": quotas}))).await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, _) = call(&n.api, "POST", "/api/v1/streams", Some(ADMIN), Some(stream)).await;
    assert_eq!(s, StatusCode::CREATED);
}

#[tokio::test]
async fn a_viewer_quota_slot_is_held_by_a_connection_and_given_back_when_it_closes() {
    let n = node().await;
    tenant_with_stream(&n, "acme", json!({"max_viewers": 1}), json!({"name": "cam", "tenant": "acme"})).await;
    let publisher = n.registry.publish("cam").expect("publish");
    // The LL-HLS output starts with the stream, on the hub's own task.
    while n.hls.get("cam").is_none() {
        tokio::task::yield_now().await;
    }

    let first = open(&n.playback, "/ts/cam.ts").await;
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(n.plane.sessions.tenant_viewers("acme"), 1);
    let second = open(&n.playback, "/ts/cam.ts").await;
    assert_eq!(second.status(), StatusCode::FORBIDDEN, "the tenant's one slot is taken");
    let hls = open(&n.playback, "/hls/cam/index.m3u8").await;
    assert_eq!(hls.status(), StatusCode::FORBIDDEN, "over every protocol");
    drop(first);
    assert_eq!(n.plane.sessions.tenant_viewers("acme"), 0, "closing the connection gives the slot back");
    assert_eq!(open(&n.playback, "/ts/cam.ts").await.status(), StatusCode::OK);
    // One session ended (the first); the refused ones never started.
    let ended = n.plane.sessions.take_ended();
    assert_eq!(ended.len(), 2, "the first and the third: {ended:?}");
    drop(publisher);
}

#[tokio::test]
async fn playback_policy_follows_each_committed_write_without_a_restart() {
    let n = node().await;
    tenant_with_stream(&n, "acme", json!({}), json!({"name": "cam", "tenant": "acme"})).await;
    let _publisher = n.registry.publish("cam").expect("publish");
    assert_eq!(open(&n.playback, "/ts/cam.ts").await.status(), StatusCode::OK);
    let (s, _) =
        call(&n.api, "PATCH", "/api/v1/streams/cam", Some(ADMIN), Some(json!({"playback_token_required": true}))).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(open(&n.playback, "/ts/cam.ts").await.status(), StatusCode::UNAUTHORIZED, "a token is needed now");
    assert_eq!(open(&n.playback, "/ts/cam.ts?token=forged").await.status(), StatusCode::FORBIDDEN);
    let (s, tok) = call(&n.api, "POST", "/api/v1/streams/cam/tokens", Some(ADMIN), Some(json!({}))).await;
    assert_eq!(s, StatusCode::CREATED);
    let t = tok["token"].as_str().expect("token");
    assert_eq!(open(&n.playback, &format!("/ts/cam.ts?token={t}")).await.status(), StatusCode::OK);
    assert_eq!(open(&n.playback, "/ts/nothing.ts").await.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_publish_chain_maps_keys_quotas_and_failures_to_typed_refusals() {
    let n = node().await;
    tenant_with_stream(&n, "acme", json!({"max_streams": 1}), json!({"name": "one", "tenant": "acme"})).await;
    let (s, _) =
        call(&n.api, "POST", "/api/v1/streams", Some(ADMIN), Some(json!({"name": "two", "tenant": "acme"}))).await;
    assert_eq!(s, StatusCode::CREATED);
    let (_, k1) = call(&n.api, "POST", "/api/v1/streams/one/keys", Some(ADMIN), Some(json!({}))).await;
    let (_, k2) = call(&n.api, "POST", "/api/v1/streams/two/keys", Some(ADMIN), Some(json!({}))).await;
    let (k1, k2) = (k1["key"].as_str().unwrap().to_owned(), k2["key"].as_str().unwrap().to_owned());
    fn req(key: &str) -> PublishRequest<'_> {
        PublishRequest { protocol: "rtmp", app: "live", key, peer: peer() }
    }

    let s1 = n.plane.admit_publish(req(&k1)).await.expect("the key of stream one");
    assert_eq!((s1.id(), s1.stream()), ("publish:one", "one"));
    assert_eq!(s1.settings().tenant.as_deref(), Some("acme"));
    let _p1 = n.registry.publish("one").expect("publish");
    let refused = n.plane.admit_publish(req(&k2)).await.expect_err("one live stream at most");
    assert!(matches!(refused, Refusal::Quota(_)), "{refused:?}");
    let refused = n.plane.admit_publish(req("not-a-key")).await.expect_err("unknown key");
    assert!(matches!(refused, Refusal::Unauthorized(_)), "{refused:?}");
    assert_eq!(n.plane.sessions.list().len(), 1, "only the admitted publisher is a session");

    // Revoking every key of stream one refuses its key from the next publish on.
    let (_, keys) = call(&n.api, "GET", "/api/v1/streams/one/keys", Some(ADMIN), None).await;
    for k in keys["items"].as_array().into_iter().flatten() {
        let id = k["id"].as_str().unwrap();
        let (s, _) = call(&n.api, "DELETE", &format!("/api/v1/streams/one/keys/{id}"), Some(ADMIN), None).await;
        assert_eq!(s, StatusCode::NO_CONTENT);
    }
    let refused = n.plane.admit_publish(req(&k1)).await.expect_err("revoked");
    assert!(matches!(refused, Refusal::Unauthorized(_)), "{refused:?}");
}

#[tokio::test]
async fn sessions_are_listed_and_kicked_per_tenant() {
    let n = node().await;
    tenant_with_stream(&n, "acme", json!({}), json!({"name": "a", "tenant": "acme"})).await;
    tenant_with_stream(&n, "globex", json!({}), json!({"name": "g", "tenant": "globex"})).await;
    let (_, key) = call(&n.api, "POST", "/api/v1/keys", Some(ADMIN), Some(json!({"tenant": "acme"}))).await;
    let acme = key["secret"].as_str().unwrap().to_owned();
    let _pa = n.registry.publish("a").expect("publish");
    let _pg = n.registry.publish("g").expect("publish");
    let play =
        |stream: &'static str| PlayRequest { protocol: "rtmp", stream, token: None, peer: peer(), url: "rtmp://x" };
    let va = n.plane.admit_play(play("a")).await.expect("viewer of a");
    let vg = n.plane.admit_play(play("g")).await.expect("viewer of g");

    let (s, page) = call(&n.api, "GET", "/api/v1/sessions", Some(&acme), None).await;
    assert_eq!(s, StatusCode::OK);
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{page}");
    assert_eq!((items[0]["stream"].as_str(), items[0]["protocol"].as_str()), (Some("a"), Some("rtmp")));
    let (s, _) = call(&n.api, "DELETE", &format!("/api/v1/sessions/{}", vg.id()), Some(&acme), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "another tenant's viewer cannot be kicked");
    assert!(!vg.info().is_cancelled());
    let (s, _) = call(&n.api, "DELETE", &format!("/api/v1/sessions/{}", va.id()), Some(&acme), None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert!(va.info().is_cancelled(), "the kick fires the session's cancel handle");
}

#[tokio::test(start_paused = true)]
async fn hls_session_ids_are_handed_out_by_the_server_and_cannot_be_made_up() {
    let n = node().await;
    tenant_with_stream(&n, "acme", json!({"max_viewers": 1}), json!({"name": "cam", "tenant": "acme"})).await;
    let publisher = n.registry.publish("cam").expect("publish");
    // An AAC track (from its FLV configuration tag), so there is a rendition.
    let mut flv = tidecast_protocols::flv::FlvIngest::new();
    let config = bytes::Bytes::from_static(&[0xaf, 0, 0x12, 0x10]);
    flv.push(tidecast_protocols::flv::TagKind::Audio, 0, &config).expect("AAC config");
    let Some(tidecast_protocols::ingest::Delivery::Tracks(tracks)) =
        tidecast_protocols::ingest::MediaSource::poll(&mut flv)
    else {
        panic!("no track")
    };
    publisher.set_tracks(tracks).expect("tracks");
    // Three seconds of (silent) AAC frames: a first whole segment.
    for i in 0..130u32 {
        let frame = bytes::Bytes::from_static(&[0xaf, 1, 0x21, 0x10, 0x04]);
        flv.push(tidecast_protocols::flv::TagKind::Audio, i * 1024 * 1000 / 44_100, &frame).expect("AAC frame");
        while let Some(d) = tidecast_protocols::ingest::MediaSource::poll(&mut flv) {
            if let tidecast_protocols::ingest::Delivery::Frame(f) = d {
                publisher.push(f).expect("frame");
            }
        }
    }
    while n.hls.get("cam").is_none() {
        tokio::task::yield_now().await;
    }
    // A new player: the multivariant playlist (after its wait for a first
    // segment, which never comes here) names its session in every URI.
    let first = open(&n.playback, "/hls/cam/index.m3u8").await;
    assert_eq!(first.status(), StatusCode::OK);
    let text = String::from_utf8(first.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    let sid = text.split("sid=").nth(1).map(|s| s.chars().take_while(char::is_ascii_hexdigit).collect::<String>());
    let sid = sid.expect("a sid in the playlist");
    assert_eq!(sid.len(), 32, "{text}");
    assert!(n.plane.sessions.get(&sid).is_some());
    // The same player carries it on: admitted (the rendition does not exist yet).
    let same = open(&n.playback, &format!("/hls/cam/video.m3u8?sid={sid}")).await;
    assert_eq!(same.status(), StatusCode::NOT_FOUND);
    // A made-up id is not a session: the request counts as another player,
    // and the tenant's one slot is taken.
    let forged = format!("{}{}", &sid[..16], "0123456789abcdef");
    let other = open(&n.playback, &format!("/hls/cam/video.m3u8?sid={forged}")).await;
    assert_eq!(other.status(), StatusCode::FORBIDDEN);
    assert_eq!(n.plane.sessions.list().iter().filter(|s| s.protocol == "hls").count(), 1);
}

/// A player that hangs up while a blocking USER_NEW is being asked does not
/// cancel its admission: the hook is asked once, the session is opened (so
/// its USER_END will follow), and the player's next request joins it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_hls_admission_outlives_the_request_that_started_it() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let asked = Arc::new(AtomicUsize::new(0));
    let release = Arc::new(tokio::sync::Notify::new());
    let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel::<()>();
    let hook = {
        let (asked, release) = (asked.clone(), release.clone());
        Router::new().route(
            "/user_new",
            axum::routing::post(move || {
                let (asked, release, seen_tx) = (asked.clone(), release.clone(), seen_tx.clone());
                async move {
                    asked.fetch_add(1, Ordering::SeqCst);
                    let _ = seen_tx.send(());
                    release.notified().await;
                    "true"
                }
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let hook_addr = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, hook).await });

    let n = node().await;
    tenant_with_stream(&n, "acme", json!({}), json!({"name": "cam", "tenant": "acme"})).await;
    let trigger = json!({"trigger": "USER_NEW", "url": format!("http://{hook_addr}/user_new"), "blocking": true, "timeout_ms": 30000});
    let (s, _) = call(&n.api, "POST", "/api/v1/triggers", Some(ADMIN), Some(trigger)).await;
    assert_eq!(s, StatusCode::CREATED);
    let _publisher = n.registry.publish("cam").expect("publish");
    while n.hls.get("cam").is_none() {
        tokio::task::yield_now().await;
    }

    // The first request asks USER_NEW, then its client goes away.
    let playback = n.playback.clone();
    let first = tokio::spawn(async move { open(&playback, "/hls/cam/audio.m3u8").await.status() });
    seen.recv().await.expect("USER_NEW asked");
    first.abort();
    // The player's next request waits for the same admission.
    let playback = n.playback.clone();
    let second = tokio::spawn(async move { open(&playback, "/hls/cam/audio.m3u8").await.status() });
    tokio::task::yield_now().await;
    release.notify_one();
    let status = second.await.expect("second request");
    assert_eq!(status, StatusCode::NOT_FOUND, "admitted; the rendition does not exist yet");
    assert_eq!(asked.load(Ordering::SeqCst), 1, "USER_NEW was asked once");
    let hls: Vec<_> = n.plane.sessions.list().into_iter().filter(|s| s.protocol == "hls").collect();
    assert_eq!(hls.len(), 1, "one session, opened although its first request was gone");
}

/// The same for a connection protocol: an HTTP-TS viewer that hangs up while
/// a blocking USER_NEW is being asked leaves a session that opens and ends
/// (so USER_END follows the USER_NEW that was sent), and gives its quota
/// slot back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_admission_outlives_the_client_that_started_it() {
    let release = Arc::new(tokio::sync::Notify::new());
    let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel::<()>();
    let hook = {
        let release = release.clone();
        Router::new().route(
            "/user_new",
            axum::routing::post(move || {
                let (release, seen_tx) = (release.clone(), seen_tx.clone());
                async move {
                    let _ = seen_tx.send(());
                    release.notified().await;
                    "true"
                }
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let hook_addr = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, hook).await });

    let n = node().await;
    tenant_with_stream(&n, "acme", json!({"max_viewers": 1}), json!({"name": "cam", "tenant": "acme"})).await;
    let trigger = json!({"trigger": "USER_NEW", "url": format!("http://{hook_addr}/user_new"), "blocking": true, "timeout_ms": 30000});
    let (s, _) = call(&n.api, "POST", "/api/v1/triggers", Some(ADMIN), Some(trigger)).await;
    assert_eq!(s, StatusCode::CREATED);
    let _publisher = n.registry.publish("cam").expect("publish");

    let playback = n.playback.clone();
    let client = tokio::spawn(async move { open(&playback, "/ts/cam.ts").await.status() });
    seen.recv().await.expect("USER_NEW asked");
    client.abort();
    release.notify_one();
    // The admission finishes on its own: the session opens and, with nobody
    // to take it, ends at once.
    let mut ended = Vec::new();
    for _ in 0..500 {
        ended.extend(n.plane.sessions.take_ended());
        if !ended.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(ended.len(), 1, "the admitted session ended (so its USER_END is sent)");
    assert_eq!(ended[0].info.protocol, "ts");
    assert!(n.plane.sessions.list().is_empty(), "nothing is left open");
    // Its quota slot is free again: the next viewer gets in.
    let req = PlayRequest { protocol: "rtmp", stream: "cam", token: None, peer: peer(), url: "rtmp://x/live/cam" };
    let next = tokio::spawn({
        let plane = n.plane.clone();
        async move { plane.admit_play(req).await.map(|s| s.info().protocol) }
    });
    seen.recv().await.expect("USER_NEW asked for the next viewer");
    release.notify_one();
    assert_eq!(next.await.expect("admission").expect("admitted"), "rtmp");
}
