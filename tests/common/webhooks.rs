//! A real webhook receiver on loopback for trigger tests: every POST is
//! recorded and answered as the test says.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use tokio::sync::mpsc;

/// A webhook delivery the receiver saw.
#[derive(Debug, Clone)]
pub struct Hook {
    #[allow(dead_code)]
    pub path: String,
    pub headers: HeaderMap,
    pub body: String,
}

pub type Answer = Arc<dyn Fn(&str, &str, usize) -> Option<(StatusCode, String)> + Send + Sync>;

/// A real HTTP receiver on loopback. `answer(path, body, nth)` returns the
/// reply, or `None` to hold the request open forever (a hanging endpoint).
pub async fn receiver(answer: Answer) -> (String, mpsc::UnboundedReceiver<Hook>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let count = Arc::new(AtomicUsize::new(0));
    let app = axum::Router::new().route(
        "/{*path}",
        post(move |axum::extract::Path(path): axum::extract::Path<String>, headers: HeaderMap, body: String| {
            let (tx, answer, count) = (tx.clone(), answer.clone(), count.clone());
            async move {
                let nth = count.fetch_add(1, Ordering::SeqCst);
                let _ = tx.send(Hook { path: path.clone(), headers, body: body.clone() });
                match answer(&path, &body, nth) {
                    Some(r) => r,
                    None => std::future::pending().await,
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), rx)
}

/// The next delivery of `trigger` (`"any"`: of any trigger); others are
/// passed over.
pub async fn next_hook(rx: &mut mpsc::UnboundedReceiver<Hook>, trigger: &str) -> Hook {
    loop {
        let h = tokio::time::timeout(Duration::from_secs(60), rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no {trigger} delivery"))
            .expect("receiver open");
        if trigger == "any" || h.headers.get("x-trigger").and_then(|v| v.to_str().ok()) == Some(trigger) {
            return h;
        }
    }
}
