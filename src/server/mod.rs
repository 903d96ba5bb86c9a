//! Connection serving, one event loop per core.
//!
//! The listener accepts on the caller's runtime and hands each connection to
//! one of `[server] workers` threads, round-robin. A worker runs its own
//! single-threaded tokio runtime, so a connection, its requests, its stream
//! pumps and its upstream connections (a per-thread pool) all stay on one
//! thread: no work stealing, no cross-thread wake-ups per request. Under load
//! this saves about a quarter of the CPU a call costs on a work-stealing
//! runtime, where every task wake could unpark another worker. Blocking work
//! (SQLite, password hashing) still goes to each runtime's blocking pool.
//!
//! Every connection is served by hyper (HTTP/1.1, or HTTP/2 with prior
//! knowledge), below which [`watch::Watched`] keeps the head and keep-alive
//! deadlines. Before a connection reaches a worker, [`ConnCount`] holds it to
//! `max_connections` in all and `max_connections_per_ip` per peer; one over
//! a cap gets a short 503 and is closed at once.
//!
//! With `[server] tls_cert` and `tls_key` the same path runs over TLS
//! ([`tls`]): rustls sits between [`watch::Watched`] and hyper, and its
//! handshake must end within `header_timeout_secs` of the connect.

pub mod tls;
pub mod watch;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::ops::Not;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch as signal, Notify};

type Conn = (std::net::TcpStream, SocketAddr, ConnGuard);

/// Open connections across all workers: counted against the caps, and
/// waited for at shutdown.
#[derive(Default)]
pub struct ConnCount {
    n: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    zero: Notify,
}

/// One open connection, counted until it is dropped.
pub struct ConnGuard {
    count: Arc<ConnCount>,
    ip: IpAddr,
}

/// Why a connection was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    TooMany,
    TooManyFromIp,
}

impl ConnCount {
    /// Counts a new connection from `ip`, unless that would pass `max` in
    /// all or `max_per_ip` from that address.
    pub fn enter(
        self: &Arc<Self>,
        ip: IpAddr,
        max: usize,
        max_per_ip: usize,
    ) -> Result<ConnGuard, Refused> {
        if self.n.fetch_add(1, Ordering::AcqRel) >= max {
            self.leave_total();
            return Err(Refused::TooMany);
        }
        let mut per_ip = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        let n = per_ip.entry(ip).or_default();
        if *n >= max_per_ip {
            drop(per_ip);
            self.leave_total();
            return Err(Refused::TooManyFromIp);
        }
        *n += 1;
        Ok(ConnGuard {
            count: self.clone(),
            ip,
        })
    }

    fn leave_total(&self) {
        if self.n.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.zero.notify_waiters();
        }
    }

    pub fn open(&self) -> usize {
        self.n.load(Ordering::Acquire)
    }

    /// Resolves once no connection is open.
    pub async fn wait_zero(&self) {
        loop {
            let notified = self.zero.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.open() == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        {
            let mut per_ip = self.count.per_ip.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(n) = per_ip.get_mut(&self.ip) {
                *n -= 1;
                if *n == 0 {
                    per_ip.remove(&self.ip);
                }
            }
        }
        self.count.leave_total();
    }
}

/// The answer to a connection over a cap, written without waiting (it is
/// the server's own fixed text; nothing of the client's is read) before the
/// connection is closed.
fn refusal(why: &Refused) -> &'static [u8] {
    match why {
        Refused::TooMany => b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: 168\r\n\r\n{\"error\":{\"message\":\"The server has too many open connections ([server] max_connections); retry shortly.\",\"type\":\"api_error\",\"code\":\"too_many_connections\",\"param\":null}}",
        Refused::TooManyFromIp => b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: 184\r\n\r\n{\"error\":{\"message\":\"Too many open connections from your address ([server] max_connections_per_ip); close some and retry.\",\"type\":\"api_error\",\"code\":\"too_many_connections\",\"param\":null}}",
    }
}

/// Raises the soft limit on open files to the hard limit, so that the
/// connection caps, not the operating system, decide when to refuse.
pub fn raise_open_files_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => tracing::debug!(open_files = n, "open-file limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
    }
}

/// The serving threads.
pub struct Workers {
    senders: Vec<mpsc::UnboundedSender<Conn>>,
    threads: Vec<std::thread::JoinHandle<()>>,
    next: usize,
    pub conns: Arc<ConnCount>,
    max: usize,
    max_per_ip: usize,
    /// Plain HTTP: a refused connection gets the 503 (over TLS it is only
    /// closed, since an answer would need a handshake first).
    plain: bool,
}

/// How many workers `configured` (0 = one per CPU) means.
pub fn worker_count(configured: usize) -> usize {
    if configured > 0 {
        configured
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }
}

/// What every connection of a worker is served with.
#[derive(Clone)]
struct Serving {
    app: Router,
    /// Without CORS, generation calls bypass the router (`http::dispatch`).
    fast: Option<crate::state::AppState>,
    limits: watch::Limits,
    body_timeout: Duration,
    /// HTTPS: every connection starts with a TLS handshake.
    tls: Option<tokio_rustls::TlsAcceptor>,
}

impl Workers {
    /// Starts `n` workers serving `app` (over TLS with `tls`); `stop` turning
    /// true starts a graceful shutdown of every connection.
    pub fn start(
        n: usize,
        app: Router,
        state: &crate::state::AppState,
        tls: Option<tokio_rustls::TlsAcceptor>,
        stop: signal::Receiver<bool>,
    ) -> std::io::Result<Workers> {
        let cfg = &state.config.server;
        let serving = Serving {
            app,
            fast: crate::http::cors_configured(state)
                .not()
                .then(|| state.clone()),
            limits: watch::Limits {
                header_timeout: Duration::from_secs(cfg.header_timeout_secs),
                keep_alive: Duration::from_secs(cfg.keep_alive_secs),
            },
            body_timeout: Duration::from_secs(cfg.body_timeout_secs),
            tls,
        };
        let plain = serving.tls.is_none();
        let conns = Arc::new(ConnCount::default());
        let mut senders = Vec::with_capacity(n);
        let mut threads = Vec::with_capacity(n);
        for i in 0..n.max(1) {
            let (tx, rx) = mpsc::unbounded_channel::<Conn>();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                // A thread's metric updates are batched; they reach /metrics
                // at the latest when it goes idle.
                .on_thread_park(crate::telemetry::flush_local)
                .thread_name(format!("tollgate-worker-{i}"))
                .build()?;
            let serving = serving.clone();
            let stop = stop.clone();
            let t = std::thread::Builder::new()
                .name(format!("tollgate-worker-{i}"))
                .spawn(move || {
                    rt.block_on(worker(rx, serving, stop));
                    // Blocking tasks (a database call) get a moment to finish.
                    rt.shutdown_timeout(Duration::from_secs(5));
                })?;
            senders.push(tx);
            threads.push(t);
        }
        Ok(Workers {
            senders,
            threads,
            next: 0,
            conns,
            max: cfg.max_connections,
            max_per_ip: cfg.max_connections_per_ip,
            plain,
        })
    }

    /// Hands a freshly accepted connection to the next worker, or refuses it
    /// at once when it is over a cap.
    pub fn dispatch(&mut self, stream: tokio::net::TcpStream, peer: SocketAddr) {
        let guard = match self.conns.enter(peer.ip(), self.max, self.max_per_ip) {
            Ok(g) => g,
            Err(why) => {
                tracing::debug!(peer = %peer.ip(), ?why, "connection refused: over a cap");
                // Whatever fits in the socket buffer now; never waited for.
                if self.plain {
                    let _ = stream.try_write(refusal(&why));
                }
                return;
            }
        };
        // Deregistered from this runtime's reactor; the worker registers it with its own.
        let std_stream = match stream.into_std() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot hand a connection to a worker");
                return;
            }
        };
        let mut conn = (std_stream, peer, guard);
        for _ in 0..self.senders.len() {
            let i = self.next % self.senders.len();
            self.next = self.next.wrapping_add(1);
            match self.senders[i].send(conn) {
                Ok(()) => return,
                Err(mpsc::error::SendError(c)) => conn = c,
            }
        }
        tracing::error!("no serving thread is left; closing a connection");
    }

    /// Ends the workers: connections still open and tasks still running on
    /// them are dropped (settling their calls). Blocks until they are gone.
    pub fn join(self) {
        drop(self.senders);
        for t in self.threads {
            if t.join().is_err() {
                tracing::error!("a serving thread panicked");
            }
        }
    }
}

async fn worker(
    mut rx: mpsc::UnboundedReceiver<Conn>,
    serving: Serving,
    mut stop: signal::Receiver<bool>,
) {
    // Connections watch a channel local to this thread, so that polling the
    // shutdown signal never touches state shared with other threads.
    let (local_tx, local_rx) = signal::channel(false);
    tokio::spawn(async move {
        let _ = stop.wait_for(|s| *s).await;
        let _ = local_tx.send(true);
        // Keep the sender (and so the signal) alive until the worker ends.
        std::future::pending::<()>().await;
    });
    while let Some((std_stream, peer, guard)) = rx.recv().await {
        let stream = match tokio::net::TcpStream::from_std(std_stream) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot register a connection");
                continue;
            }
        };
        tokio::spawn(connection(
            stream,
            peer,
            serving.clone(),
            local_rx.clone(),
            guard,
        ));
    }
}

async fn connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    mut serving: Serving,
    mut stop: signal::Receiver<bool>,
    _guard: ConnGuard,
) {
    // Small writes (SSE chunks, short answers) go out at once: without
    // TCP_NODELAY, Nagle's algorithm holds them for the peer's delayed ACK (~40 ms).
    if let Err(e) = stream.set_nodelay(true) {
        tracing::trace!(error = %e, "cannot set TCP_NODELAY");
    }
    let state = watch::ConnState::new();
    let io = watch::Watched::new(stream, state.clone(), serving.limits);
    let Some(acceptor) = serving.tls.take() else {
        return serve_http(TokioIo::new(io), state, peer, serving, stop).await;
    };
    // The handshake reads through `Watched`, whose head deadline already
    // runs from the connect; the timeout here also bounds a client that
    // stops reading, and a stop signal ends a handshake at once.
    let handshake = tokio::time::timeout(serving.limits.header_timeout, acceptor.accept(io));
    let tls = tokio::select! {
        r = handshake => match r {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                tracing::debug!(peer = %peer.ip(), error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(peer = %peer.ip(), "TLS handshake timed out");
                return;
            }
        },
        _ = stop.wait_for(|s| *s) => return,
    };
    serve_http(TokioIo::new(tls), state, peer, serving, stop).await
}

/// Serves HTTP on a connection (plain, or after its TLS handshake) until it
/// ends, or, once `stop` turns true, until its requests in flight are answered.
async fn serve_http<I>(
    io: TokioIo<I>,
    state: Arc<watch::ConnState>,
    peer: SocketAddr,
    serving: Serving,
    mut stop: signal::Receiver<bool>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let Serving {
        app,
        fast,
        body_timeout,
        ..
    } = serving;
    let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        let in_flight = state.begin();
        req.extensions_mut().insert(ConnectInfo(peer));
        let req = req.map(|b| watch::Stalled::new(b, body_timeout));
        let app = app.clone();
        let fast = fast.clone();
        async move {
            let resp = crate::http::dispatch(app, fast, req).await;
            Ok::<_, std::convert::Infallible>(resp.map(|b| watch::Tracked::new(b, in_flight)))
        }
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    // A request head is at most this large (hyper answers 431 past it), so
    // that slow or idle clients pin little memory each.
    builder.http1().max_buf_size(MAX_HEAD_BYTES);
    let conn = builder.serve_connection_with_upgrades(io, svc);
    tokio::pin!(conn);
    let stopping = tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::trace!(error = %e, "connection ended with an error");
            }
            return;
        }
        r = stop.wait_for(|s| *s) => r.is_ok(),
    };
    if stopping {
        conn.as_mut().graceful_shutdown();
    }
    let _ = conn.as_mut().await;
}

/// The largest request head read (and hyper's read buffer).
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Accept errors that concern one connection only: go on at once.
pub fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}
