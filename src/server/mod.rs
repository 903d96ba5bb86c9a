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
//! Each connection is read first by [`front`], which answers generation calls
//! itself and hands anything else to hyper and the router.

pub mod front;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;
use std::ops::Not;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, watch, Notify};

type Conn = (std::net::TcpStream, SocketAddr);

/// Open connections across all workers, to wait for them at shutdown.
#[derive(Default)]
pub struct ConnCount {
    n: AtomicUsize,
    zero: Notify,
}

struct ConnGuard(Arc<ConnCount>);

impl ConnCount {
    fn enter(self: &Arc<Self>) -> ConnGuard {
        self.n.fetch_add(1, Ordering::AcqRel);
        ConnGuard(self.clone())
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
        if self.0.n.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.zero.notify_waiters();
        }
    }
}

/// The serving threads.
pub struct Workers {
    senders: Vec<mpsc::UnboundedSender<Conn>>,
    threads: Vec<std::thread::JoinHandle<()>>,
    next: usize,
    pub conns: Arc<ConnCount>,
}

/// How many workers `configured` (0 = one per CPU) means.
pub fn worker_count(configured: usize) -> usize {
    if configured > 0 {
        configured
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }
}

impl Workers {
    /// Starts `n` workers serving `app`; `stop` turning true starts a graceful
    /// shutdown of every connection.
    pub fn start(
        n: usize,
        app: Router,
        state: &crate::state::AppState,
        stop: watch::Receiver<bool>,
    ) -> std::io::Result<Workers> {
        // Without CORS, generation calls bypass the router (`http::dispatch`).
        let fast = crate::http::cors_configured(state)
            .not()
            .then(|| state.clone());
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
            let app = app.clone();
            let fast = fast.clone();
            let stop = stop.clone();
            let conns = conns.clone();
            let t = std::thread::Builder::new()
                .name(format!("tollgate-worker-{i}"))
                .spawn(move || {
                    rt.block_on(worker(rx, app, fast, stop, conns));
                    // Blocking tasks (a database call) get a moment to finish.
                    rt.shutdown_timeout(std::time::Duration::from_secs(5));
                })?;
            senders.push(tx);
            threads.push(t);
        }
        Ok(Workers {
            senders,
            threads,
            next: 0,
            conns,
        })
    }

    /// Hands a freshly accepted connection to the next worker.
    pub fn dispatch(&mut self, stream: tokio::net::TcpStream, peer: SocketAddr) {
        // Deregistered from this runtime's reactor; the worker registers it with its own.
        let std_stream = match stream.into_std() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot hand a connection to a worker");
                return;
            }
        };
        let mut conn = (std_stream, peer);
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
    app: Router,
    fast: Option<crate::state::AppState>,
    mut stop: watch::Receiver<bool>,
    conns: Arc<ConnCount>,
) {
    // Connections watch a channel local to this thread, so that polling the
    // shutdown signal never touches state shared with other threads.
    let (local_tx, local_rx) = watch::channel(false);
    tokio::spawn(async move {
        let _ = stop.wait_for(|s| *s).await;
        let _ = local_tx.send(true);
        // Keep the sender (and so the signal) alive until the worker ends.
        std::future::pending::<()>().await;
    });
    while let Some((std_stream, peer)) = rx.recv().await {
        let stream = match tokio::net::TcpStream::from_std(std_stream) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot register a connection");
                continue;
            }
        };
        let guard = conns.enter();
        tokio::spawn(connection(
            stream,
            peer,
            app.clone(),
            fast.clone(),
            local_rx.clone(),
            guard,
        ));
    }
}

async fn connection(
    mut stream: tokio::net::TcpStream,
    peer: SocketAddr,
    app: Router,
    fast: Option<crate::state::AppState>,
    mut stop: watch::Receiver<bool>,
    _guard: ConnGuard,
) {
    // Small writes (SSE chunks, short answers) go out at once: without
    // TCP_NODELAY, Nagle's algorithm holds them for the peer's delayed ACK (~40 ms).
    if let Err(e) = stream.set_nodelay(true) {
        tracing::trace!(error = %e, "cannot set TCP_NODELAY");
    }
    let ahead = match &fast {
        Some(st) => match front::serve(&mut stream, st, &mut stop).await {
            Some(read) => read.freeze(),
            None => return,
        },
        None => bytes::Bytes::new(),
    };
    let io = TokioIo::new(front::Rewind::new(stream, ahead));
    let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        let app = app.clone();
        let fast = fast.clone();
        async move { Ok::<_, std::convert::Infallible>(crate::http::dispatch(app, fast, req).await) }
    });
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
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

/// Accept errors that concern one connection only: go on at once.
pub fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}
