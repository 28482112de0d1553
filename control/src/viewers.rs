//! Viewer sessions: who is watching what, over which protocol.
//!
//! Connection outputs (HTTP-TS, SRT) hold a [`ViewerGuard`] for the
//! connection's life. HLS is stateless HTTP, so a session is the same
//! stream, address, user agent and token seen again within
//! [`HLS_IDLE`]; it ends when the requests stop. Ended sessions are
//! collected by the control plane's monitor (USER_END, counts).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use utoipa::ToSchema;

/// An HLS session ends this long after its last request.
pub const HLS_IDLE: Duration = Duration::from_secs(20);
/// A kicked HLS session stays refused this long.
const KICK_HOLD: Duration = Duration::from_secs(120);

/// One viewer session, as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ViewerSession {
    /// Session id (for USER_NEW/USER_END and the kick action).
    pub id: String,
    /// Stream watched.
    pub stream: String,
    /// Owning tenant of the stream, if configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// `hls`, `ts`, `srt`.
    pub protocol: String,
    /// Viewer address.
    pub address: String,
    /// Start, Unix milliseconds.
    pub started_ms: i64,
    /// Bytes sent so far.
    pub bytes_out: u64,
}

struct Entry {
    session: ViewerSession,
    last_seen: Instant,
    started: Instant,
    /// Cancels a connection output; `None` for HLS.
    cancel: Option<CancellationToken>,
}

/// A session that ended, for USER_END.
#[derive(Debug, Clone)]
pub struct Ended {
    /// The session.
    pub session: ViewerSession,
    /// How long it lasted.
    pub duration: Duration,
}

#[derive(Default)]
struct Inner {
    live: HashMap<String, Entry>,
    ended: Vec<Ended>,
    kicked: HashMap<String, Instant>,
}

/// Every viewer session on this node.
#[derive(Default, Clone)]
pub struct Viewers {
    inner: Arc<Mutex<Inner>>,
}

/// Holds a connection viewer's session; dropping it ends the session.
pub struct ViewerGuard {
    viewers: Viewers,
    id: String,
    /// Cancelled when the session is kicked.
    pub cancel: CancellationToken,
}

impl ViewerGuard {
    /// The session id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Counts bytes sent.
    pub fn sent(&self, n: usize) {
        if let Some(e) = self.viewers.inner.lock().live.get_mut(&self.id) {
            e.session.bytes_out += n as u64;
        }
    }
}

impl Drop for ViewerGuard {
    fn drop(&mut self) {
        self.viewers.end(&self.id);
    }
}

impl Viewers {
    /// The HLS session id for a request.
    pub fn hls_session_id(stream: &str, ip: IpAddr, user_agent: &str, token: Option<&str>) -> String {
        let h = crate::secrets::hash(&format!("{stream}\n{ip}\n{user_agent}\n{}", token.unwrap_or("")));
        h[..16].to_owned()
    }

    /// Whether an HLS session with `id` is live.
    pub fn is_live(&self, id: &str) -> bool {
        self.inner.lock().live.contains_key(id)
    }

    /// Whether `id` was kicked recently.
    pub fn is_kicked(&self, id: &str) -> bool {
        let mut inner = self.inner.lock();
        inner.kicked.retain(|_, at| at.elapsed() < KICK_HOLD);
        inner.kicked.contains_key(id)
    }

    /// Starts a session (HLS: on its first request; then [`Viewers::touch`]).
    pub fn begin(&self, id: String, stream: &str, tenant: Option<&str>, protocol: &str, address: IpAddr) {
        let now = Instant::now();
        let session = ViewerSession {
            id: id.clone(),
            stream: stream.to_owned(),
            tenant: tenant.map(str::to_owned),
            protocol: protocol.to_owned(),
            address: address.to_string(),
            started_ms: crate::secrets::now_ms(),
            bytes_out: 0,
        };
        self.inner.lock().live.insert(id, Entry { session, last_seen: now, started: now, cancel: None });
    }

    /// Starts a connection session held by the returned guard.
    pub fn connect(&self, stream: &str, tenant: Option<&str>, protocol: &str, address: IpAddr) -> ViewerGuard {
        let id = crate::secrets::random_id().unwrap_or_else(|_| format!("{:x}", crate::secrets::now_ms()));
        self.begin(id.clone(), stream, tenant, protocol, address);
        let cancel = CancellationToken::new();
        if let Some(e) = self.inner.lock().live.get_mut(&id) {
            e.cancel = Some(cancel.clone());
        }
        ViewerGuard { viewers: self.clone(), id, cancel }
    }

    /// An HLS request of a live session: keeps it alive and counts bytes.
    pub fn touch(&self, id: &str, bytes: usize) {
        if let Some(e) = self.inner.lock().live.get_mut(id) {
            e.last_seen = Instant::now();
            e.session.bytes_out += bytes as u64;
        }
    }

    fn end(&self, id: &str) {
        let mut inner = self.inner.lock();
        if let Some(e) = inner.live.remove(id) {
            let duration = e.started.elapsed();
            inner.ended.push(Ended { session: e.session, duration });
        }
    }

    /// Ends a session now. HLS sessions stay refused for a while.
    pub fn kick(&self, id: &str) -> bool {
        let mut inner = self.inner.lock();
        let Some(e) = inner.live.get(id) else { return false };
        if let Some(c) = &e.cancel {
            c.cancel();
        }
        inner.kicked.insert(id.to_owned(), Instant::now());
        drop(inner);
        self.end(id);
        true
    }

    /// Ends idle HLS sessions and returns every session ended since the last call.
    pub fn collect_ended(&self) -> Vec<Ended> {
        let mut inner = self.inner.lock();
        let idle: Vec<String> = inner
            .live
            .iter()
            .filter(|(_, e)| e.cancel.is_none() && e.last_seen.elapsed() >= HLS_IDLE)
            .map(|(id, _)| id.clone())
            .collect();
        for id in idle {
            if let Some(e) = inner.live.remove(&id) {
                let duration = e.last_seen.duration_since(e.started);
                inner.ended.push(Ended { session: e.session, duration });
            }
        }
        std::mem::take(&mut inner.ended)
    }

    /// Every live session.
    pub fn list(&self) -> Vec<ViewerSession> {
        let mut v: Vec<_> = self.inner.lock().live.values().map(|e| e.session.clone()).collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    /// Live sessions by stream, then protocol.
    pub fn counts(&self) -> BTreeMap<String, BTreeMap<String, u64>> {
        let mut out: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
        for e in self.inner.lock().live.values() {
            *out.entry(e.session.stream.clone()).or_default().entry(e.session.protocol.clone()).or_default() += 1;
        }
        out
    }

    /// Live sessions of a tenant's streams.
    pub fn count_tenant(&self, tenant: &str) -> usize {
        self.inner.lock().live.values().filter(|e| e.session.tenant.as_deref() == Some(tenant)).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_end_on_drop_and_kicks_cancel() {
        let v = Viewers::default();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let g = v.connect("cam", Some("t1"), "ts", ip);
        g.sent(100);
        assert_eq!(v.counts()["cam"]["ts"], 1);
        assert_eq!(v.count_tenant("t1"), 1);
        assert_eq!(v.list()[0].bytes_out, 100);
        assert!(v.kick(g.id()));
        assert!(g.cancel.is_cancelled());
        assert!(v.is_kicked(g.id()));
        drop(g);
        let ended = v.collect_ended();
        assert_eq!(ended.len(), 1);
        assert!(v.counts().is_empty());
    }

    #[test]
    fn hls_sessions_are_keyed_by_viewer() {
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let a = Viewers::hls_session_id("cam", ip, "ua", None);
        assert_eq!(a, Viewers::hls_session_id("cam", ip, "ua", None));
        assert_ne!(a, Viewers::hls_session_id("cam", ip, "ua2", None));
        assert_ne!(a, Viewers::hls_session_id("cam2", ip, "ua", None));
        let v = Viewers::default();
        v.begin(a.clone(), "cam", None, "hls", ip);
        v.touch(&a, 10);
        assert!(v.is_live(&a));
        assert!(v.collect_ended().is_empty());
    }
}
