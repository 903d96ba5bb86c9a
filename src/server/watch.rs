//! The timers of a client connection (SPEC §9): how long a request head may
//! take, and how long a connection may sit idle between requests.
//!
//! hyper frames the connection; its own header timer starts when it begins
//! to wait for a head, idle time included, so it cannot tell a slow head from
//! an idle keep-alive connection. [`Watched`] wraps the socket below hyper
//! and keeps both deadlines from what it sees: a connection with no request
//! in flight is closed `keep_alive` after its last answer ended, or
//! `header_timeout` after the first byte of a new request arrived (for a new
//! connection, after the connect). While a request is in flight (from its
//! head to the end of its answer, [`InFlight`]) reads have no deadline here:
//! the body's pieces have their own timer ([`Stalled`]), and an answer may
//! take as long as its upstream.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

/// What a connection's reads and its requests share.
pub struct ConnState {
    /// When the connection was accepted: the base of the times below.
    base: Instant,
    /// Requests whose answer has not ended.
    in_flight: AtomicU32,
    /// Milliseconds after `base` at which the connection became idle (its
    /// last answer ended), or a request head began (`HEAD` bit set).
    since: AtomicU64,
}

/// Set in `since` while a head is arriving.
const HEAD: u64 = 1 << 63;

impl ConnState {
    /// A new connection: it waits for its first head from now.
    pub fn new() -> Arc<ConnState> {
        Arc::new(ConnState {
            base: Instant::now(),
            in_flight: AtomicU32::new(0),
            since: AtomicU64::new(HEAD),
        })
    }

    fn now_ms(&self) -> u64 {
        self.base.elapsed().as_millis() as u64
    }

    /// A request's head was read: until its answer ends, no read deadline.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }
}

/// A request in flight; dropped when its answer has ended (or was abandoned).
pub struct InFlight(Arc<ConnState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let s = &self.0;
        if s.in_flight.fetch_sub(1, Ordering::Relaxed) == 1 {
            s.since.store(s.now_ms(), Ordering::Relaxed);
        }
    }
}

/// The timeouts a [`Watched`] connection enforces.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub header_timeout: Duration,
    pub keep_alive: Duration,
}

/// A client socket whose reads end with `TimedOut` past the deadlines above.
pub struct Watched {
    io: TcpStream,
    state: Arc<ConnState>,
    limits: Limits,
    timer: Pin<Box<Sleep>>,
    /// The deadline `timer` is set to.
    armed: Option<Instant>,
}

impl Watched {
    pub fn new(io: TcpStream, state: Arc<ConnState>, limits: Limits) -> Watched {
        let base = state.base;
        Watched {
            io,
            state,
            limits,
            timer: Box::pin(tokio::time::sleep_until(base + limits.header_timeout)),
            armed: Some(base + limits.header_timeout),
        }
    }

    /// The read deadline now, if any.
    fn deadline(&self) -> Option<Instant> {
        if self.state.in_flight.load(Ordering::Relaxed) > 0 {
            return None;
        }
        let since = self.state.since.load(Ordering::Relaxed);
        let (at, limit) = if since & HEAD != 0 {
            (since & !HEAD, self.limits.header_timeout)
        } else {
            (since, self.limits.keep_alive)
        };
        Some(self.state.base + Duration::from_millis(at) + limit)
    }

    /// Bytes arrived: on an idle connection they start a head's clock.
    fn arrived(&self) {
        let s = &self.state;
        if s.in_flight.load(Ordering::Relaxed) == 0 {
            let since = s.since.load(Ordering::Relaxed);
            if since & HEAD == 0 {
                s.since.store(s.now_ms() | HEAD, Ordering::Relaxed);
            }
        }
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    self.arrived();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                let Some(deadline) = self.deadline() else {
                    return Poll::Pending;
                };
                let this = &mut *self;
                if this.armed != Some(deadline) {
                    this.timer.as_mut().reset(deadline);
                    this.armed = Some(deadline);
                }
                match this.timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the client was idle or too slow sending a request head",
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// An answer's body that ends its request's [`InFlight`] when it is done
/// (read to its end or dropped).
pub struct Tracked<B> {
    body: B,
    _in_flight: InFlight,
}

impl<B> Tracked<B> {
    pub fn new(body: B, in_flight: InFlight) -> Tracked<B> {
        Tracked {
            body,
            _in_flight: in_flight,
        }
    }
}

impl<B: http_body::Body + Unpin> http_body::Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// A request body whose next piece must come within `limit`
/// (`[server] body_timeout_secs`). The timer is armed only while the body
/// waits, so a body that is already in (the usual case) costs none.
pub struct Stalled<B> {
    body: B,
    limit: Duration,
    timer: Option<Pin<Box<Sleep>>>,
}

impl<B> Stalled<B> {
    pub fn new(body: B, limit: Duration) -> Stalled<B> {
        Stalled {
            body,
            limit,
            timer: None,
        }
    }
}

/// A request body stopped arriving for longer than `body_timeout_secs`.
#[derive(Debug)]
pub struct BodyStalled;

impl std::fmt::Display for BodyStalled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the request body stopped arriving")
    }
}

impl std::error::Error for BodyStalled {}

impl<B> http_body::Body for Stalled<B>
where
    B: http_body::Body + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = B::Data;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<B::Data>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.timer = None;
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                let limit = this.limit;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyStalled)))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
