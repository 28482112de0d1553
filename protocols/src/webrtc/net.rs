//! The WebRTC network edge: one UDP port for every peer (one socket per
//! local address, all on that port, so each datagram's destination is known),
//! an ICE-TCP listener (RFC 6544, passive, RFC 4571 framing), and the
//! demultiplexer that hands each datagram to its session.
//!
//! A new 5-tuple is routed by the USERNAME of its first STUN binding request
//! (each session has its own ICE ufrag); after that, by the 5-tuple alone.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use str0m::net::Protocol;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::stun;

/// One datagram for a session.
#[derive(Debug)]
pub(crate) struct Datagram {
    pub proto: Protocol,
    pub source: SocketAddr,
    pub destination: SocketAddr,
    pub data: Vec<u8>,
}

/// Datagrams queued per session before newer ones are dropped.
pub(crate) const INBOX: usize = 1024;
/// Largest ICE-TCP frame accepted.
const MAX_TCP_FRAME: usize = 4096;

type Route = (u64, mpsc::Sender<Datagram>);
/// ICE-TCP connections by (local, remote) address: their writer queues.
type TcpOut = HashMap<(SocketAddr, SocketAddr), mpsc::Sender<Vec<u8>>>;

#[derive(Default)]
struct Routes {
    by_ufrag: HashMap<String, Route>,
    by_tuple: HashMap<(Protocol, SocketAddr, SocketAddr), Route>,
}

/// Counters of the network edge.
#[derive(Debug, Default)]
pub struct NetStats {
    /// Datagrams that matched no session.
    pub unrouted: AtomicU64,
    /// Datagrams dropped because a session's inbox was full or a socket
    /// buffer was.
    pub dropped: AtomicU64,
    /// ICE-TCP connections accepted.
    pub tcp_connections: AtomicU64,
}

/// The sockets and the routing table.
pub(crate) struct Net {
    udp: Vec<(SocketAddr, Arc<UdpSocket>)>,
    tcp: Vec<SocketAddr>,
    routes: Mutex<Routes>,
    tcp_out: Mutex<TcpOut>,
    stun_waiters: Mutex<HashMap<[u8; 12], oneshot::Sender<SocketAddr>>>,
    /// A client's one session: every datagram no other route claims goes
    /// there (a full ICE agent facing an ICE-lite server gets answers to its
    /// own checks, which carry no USERNAME to route by).
    sole: Mutex<Option<Route>>,
    pub stats: NetStats,
}

impl Net {
    /// Binds UDP on `port` at each of `ips` (and TCP likewise when
    /// `tcp_port` is set) and starts reading.
    pub async fn bind(
        ips: &[std::net::IpAddr],
        udp_port: Option<u16>,
        tcp_port: Option<u16>,
        shutdown: CancellationToken,
    ) -> io::Result<Arc<Net>> {
        let mut udp = Vec::new();
        let mut port = udp_port;
        if let Some(p) = udp_port {
            for ip in ips {
                let want = SocketAddr::new(*ip, port.unwrap_or(p));
                let sock = UdpSocket::bind(want).await.map_err(|e| with_addr(e, "UDP", want))?;
                let local = sock.local_addr()?;
                port = Some(local.port());
                udp.push((local, Arc::new(sock)));
            }
        }
        let mut listeners = Vec::new();
        let mut tport = tcp_port;
        if let Some(p) = tcp_port {
            for ip in ips {
                let want = SocketAddr::new(*ip, tport.unwrap_or(p));
                let l = TcpListener::bind(want).await.map_err(|e| with_addr(e, "TCP", want))?;
                tport = Some(l.local_addr()?.port());
                listeners.push(l);
            }
        }
        let tcp = listeners.iter().filter_map(|l| l.local_addr().ok()).collect();
        let net = Arc::new(Net {
            udp,
            tcp,
            routes: Mutex::default(),
            tcp_out: Mutex::default(),
            stun_waiters: Mutex::default(),
            sole: Mutex::default(),
            stats: NetStats::default(),
        });
        for (local, sock) in &net.udp {
            tokio::spawn(net.clone().read_udp(*local, sock.clone(), shutdown.clone()));
        }
        for l in listeners {
            tokio::spawn(net.clone().accept_tcp(l, shutdown.clone()));
        }
        Ok(net)
    }

    /// A client's sockets: UDP on a port of the system's choosing at each
    /// of `ips` (each its own port), every datagram for one session, whose
    /// inbox is returned.
    pub async fn client(
        ips: &[std::net::IpAddr],
        shutdown: CancellationToken,
    ) -> io::Result<(Arc<Net>, mpsc::Receiver<Datagram>)> {
        let mut udp = Vec::new();
        for ip in ips {
            let want = SocketAddr::new(*ip, 0);
            let sock = UdpSocket::bind(want).await.map_err(|e| with_addr(e, "UDP", want))?;
            udp.push((sock.local_addr()?, Arc::new(sock)));
        }
        let (tx, rx) = mpsc::channel(INBOX);
        let net = Arc::new(Net {
            udp,
            tcp: Vec::new(),
            routes: Mutex::default(),
            tcp_out: Mutex::default(),
            stun_waiters: Mutex::default(),
            sole: Mutex::new(Some((0, tx))),
            stats: NetStats::default(),
        });
        for (local, sock) in &net.udp {
            tokio::spawn(net.clone().read_udp(*local, sock.clone(), shutdown.clone()));
        }
        Ok((net, rx))
    }

    /// The bound UDP addresses.
    pub fn udp_addrs(&self) -> Vec<SocketAddr> {
        self.udp.iter().map(|(a, _)| *a).collect()
    }

    /// The bound ICE-TCP addresses.
    pub fn tcp_addrs(&self) -> &[SocketAddr] {
        &self.tcp
    }

    /// Routes binding requests for `ufrag` (and what follows on their
    /// 5-tuples) to a session.
    pub fn register(&self, ufrag: &str, session: u64, inbox: mpsc::Sender<Datagram>) {
        self.routes.lock().by_ufrag.insert(ufrag.to_owned(), (session, inbox));
    }

    /// Forgets a session's routes.
    pub fn unregister(&self, session: u64) {
        let mut r = self.routes.lock();
        r.by_ufrag.retain(|_, (s, _)| *s != session);
        r.by_tuple.retain(|_, (s, _)| *s != session);
    }

    /// Sends one datagram for a session; drops it if the socket is full
    /// (UDP semantics: str0m retransmits what matters).
    pub fn send(&self, proto: Protocol, source: SocketAddr, destination: SocketAddr, data: &[u8]) {
        match proto {
            Protocol::Udp => {
                let sock = self.udp.iter().find(|(a, _)| *a == source).or(self.udp.first());
                if let Some((_, s)) = sock {
                    if s.try_send_to(data, destination).is_err() {
                        self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            Protocol::Tcp => {
                let tx = self.tcp_out.lock().get(&(source, destination)).cloned();
                let sent = tx.is_some_and(|tx| tx.try_send(data.to_vec()).is_ok());
                if !sent {
                    self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
            _ => {}
        }
    }

    fn route(&self, d: Datagram) {
        let tuple = (d.proto, d.destination, d.source);
        let route = {
            let mut r = self.routes.lock();
            match stun::request_ufrag(&d.data).and_then(|u| r.by_ufrag.get(u).cloned()) {
                Some(route) => {
                    r.by_tuple.insert(tuple, route.clone());
                    Some(route)
                }
                None => r.by_tuple.get(&tuple).cloned(),
            }
        };
        let route = route.or_else(|| self.sole.lock().clone());
        if let Some((_, inbox)) = route {
            if inbox.try_send(d).is_err() {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
            return;
        }
        if let Some(addr) = stun::mapped_address(&d.data) {
            let waiter = stun::transaction(&d.data).and_then(|t| self.stun_waiters.lock().remove(&t));
            if let Some(w) = waiter {
                let _ = w.send(addr);
                return;
            }
        }
        self.stats.unrouted.fetch_add(1, Ordering::Relaxed);
    }

    async fn read_udp(self: Arc<Self>, local: SocketAddr, sock: Arc<UdpSocket>, shutdown: CancellationToken) {
        let mut buf = vec![0u8; 2048];
        loop {
            let (n, source) = tokio::select! {
                r = sock.recv_from(&mut buf) => match r {
                    Ok(v) => v,
                    Err(e) => {
                        // ICMP port unreachable and the like surface here on Linux; keep reading.
                        debug!(error = %e, "webrtc udp read error");
                        continue;
                    }
                },
                _ = shutdown.cancelled() => return,
            };
            self.route(Datagram { proto: Protocol::Udp, source, destination: local, data: buf[..n].to_vec() });
        }
    }

    async fn accept_tcp(self: Arc<Self>, listener: TcpListener, shutdown: CancellationToken) {
        loop {
            let (stream, peer) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(v) => v,
                    Err(e) => {
                        warn!(error = %e, "webrtc ice-tcp accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                _ = shutdown.cancelled() => return,
            };
            self.stats.tcp_connections.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(self.clone().serve_tcp(stream, peer, shutdown.clone()));
        }
    }

    /// One ICE-TCP connection: RFC 4571 frames in both directions. The
    /// first frame must be a binding request for a known session.
    async fn serve_tcp(self: Arc<Self>, stream: TcpStream, peer: SocketAddr, shutdown: CancellationToken) {
        let Ok(local) = stream.local_addr() else { return };
        let _ = stream.set_nodelay(true);
        let (mut rd, mut wr) = stream.into_split();
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(256);
        self.tcp_out.lock().insert((local, peer), tx);
        let writer = tokio::spawn(async move {
            while let Some(frame) = rx.recv().await {
                let Ok(len) = u16::try_from(frame.len()) else { continue };
                if wr.write_all(&len.to_be_bytes()).await.is_err() || wr.write_all(&frame).await.is_err() {
                    return;
                }
            }
        });
        let mut first = true;
        loop {
            let mut len = [0u8; 2];
            let read = async {
                rd.read_exact(&mut len).await?;
                let n = usize::from(u16::from_be_bytes(len));
                if n == 0 || n > MAX_TCP_FRAME {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "bad ICE-TCP frame length"));
                }
                let mut data = vec![0u8; n];
                rd.read_exact(&mut data).await?;
                Ok(data)
            };
            let idle = if first { Duration::from_secs(10) } else { Duration::from_secs(60) };
            let data = tokio::select! {
                r = tokio::time::timeout(idle, read) => match r {
                    Ok(Ok(d)) => d,
                    _ => break,
                },
                _ = shutdown.cancelled() => break,
            };
            if first && stun::request_ufrag(&data).is_none() {
                debug!(%peer, "ice-tcp connection did not start with a binding request; closing");
                break;
            }
            first = false;
            self.route(Datagram { proto: Protocol::Tcp, source: peer, destination: local, data });
        }
        self.tcp_out.lock().remove(&(local, peer));
        self.routes.lock().by_tuple.remove(&(Protocol::Tcp, local, peer));
        writer.abort();
    }

    /// Asks a STUN server for the public address of the first UDP socket of
    /// the server's address family.
    pub async fn discover(&self, server: SocketAddr) -> Option<(SocketAddr, SocketAddr)> {
        let (local, sock) = self.udp.iter().find(|(a, _)| a.is_ipv4() == server.is_ipv4())?;
        for attempt in 0..3u8 {
            let mut id = [0u8; 12];
            rand::Rng::fill(&mut rand::rng(), &mut id[..]);
            let (tx, rx) = oneshot::channel();
            self.stun_waiters.lock().insert(id, tx);
            if sock.send_to(&stun::binding_request(id), server).await.is_err() {
                self.stun_waiters.lock().remove(&id);
                return None;
            }
            let wait = Duration::from_millis(500 << attempt);
            if let Ok(Ok(addr)) = tokio::time::timeout(wait, rx).await {
                return Some((addr, *local));
            }
            self.stun_waiters.lock().remove(&id);
        }
        None
    }
}

fn with_addr(e: io::Error, what: &str, addr: SocketAddr) -> io::Error {
    io::Error::new(e.kind(), format!("binding WebRTC {what} on {addr}: {e}"))
}
