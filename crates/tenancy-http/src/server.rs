//! The accept loop: HTTP/1.1 connections under a cap and three timeouts, so that no
//! client can hold the server by stalling or by flooding it.
//!
//! - A request head must arrive whole within `header_read_timeout` of its first byte.
//! - A connection with no request being handled and no byte sent or received for
//!   `idle_timeout` is closed: a socket that says nothing, a kept-alive one left unused,
//!   a client that stops reading its answer.
//! - A request (reading its body and handling it) past `request_timeout` answers
//!   `408 request_timeout`.
//! - At most `max_connections` are open. At the cap, the connection idle longest (no
//!   request being handled or answered) is closed to make room, so idle sockets cannot
//!   lock anyone out; when every connection is busy, a new one is answered a minimal
//!   `503 too_many_connections` with `Connection: close` and closed.
//! - Accept errors back off (10 ms doubling to 1 s) instead of spinning; running out of
//!   file descriptors also closes the connection idle longest to free one.
//! - A request answered before its body was read says `Connection: close`: the unread
//!   body makes the connection unusable for another request.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, HeaderValue, Request, StatusCode, Version};
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper::body::{Body as _, Bytes, Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower::ServiceExt;

use crate::config::ConnectionLimits;
use crate::error::ApiError;

/// Refusals being written at once; past this, a refused connection is closed unanswered.
const REFUSALS_AT_ONCE: usize = 64;

/// Serves `app` on `listener` under `limits` until `shutdown` resolves, then stops
/// accepting and drains in-flight requests (idle connections close at once). Client
/// addresses reach the handlers as `ConnectInfo<SocketAddr>`.
pub async fn serve_with(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let cap = match rlimit::getrlimit(rlimit::Resource::NOFILE) {
        Ok((soft, _)) => {
            let cap = fit_to_open_files(limits.max_connections, limits.reserved_files, soft);
            if cap < limits.max_connections {
                tracing::warn!(
                    configured = limits.max_connections,
                    cap,
                    open_files_limit = soft,
                    reserved_files = limits.reserved_files,
                    "max_connections lowered to fit the open-files limit"
                );
            }
            cap
        }
        Err(_) => limits.max_connections.max(1),
    };
    let epoch = Instant::now();
    let shared = Arc::new(Shared {
        app,
        limits,
        epoch,
        open: Registry::new(cap, epoch),
    });
    let refusals = Arc::new(Semaphore::new(REFUSALS_AT_ONCE));
    let (stop, stopping) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut shutdown = pin!(shutdown);
    let mut backoff = Backoff::default();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => {
                backoff.reset();
                accepted
            }
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                // Out of file descriptors (or memory): free what the idlest connection
                // holds, and wait before trying again rather than spin on the error.
                let freed = shared.open.evict_idlest();
                let wait = backoff.next();
                tracing::warn!(error = %e, freed, retry_in_ms = wait.as_millis() as u64, "accept error");
                tokio::select! {
                    () = tokio::time::sleep(wait) => continue,
                    () = &mut shutdown => break,
                }
            }
        };
        let _ = stream.set_nodelay(true);
        match shared.open.admit() {
            Some((id, activity)) => {
                let shared = Arc::clone(&shared);
                let stopping = stopping.clone();
                connections.spawn(async move {
                    serve_connection(&shared, stream, peer, &activity, stopping).await;
                    shared.open.remove(id);
                });
            }
            None => refuse(stream, &refusals),
        }
    }
    drop(listener);
    let _ = stop.send(true);
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// Raises the process's soft limit on open files to its hard limit, so that the
/// connection cap, open tenant databases and PostgreSQL connections have room; answers
/// the limit now in force. A server calls it once at start.
pub fn raise_open_files_limit() -> std::io::Result<u64> {
    rlimit::increase_nofile_limit(u64::MAX)
}

/// The connection cap within the open-files limit `soft`: connections get at most half
/// of the process's file descriptors, and never those `reserved` for tenant databases,
/// PostgreSQL connections and the catalog, so the cap is what refuses a flood, never
/// `EMFILE`. At least one.
fn fit_to_open_files(configured: usize, reserved: u64, soft: u64) -> usize {
    let fits = (soft / 2).min(soft.saturating_sub(reserved));
    configured
        .min(usize::try_from(fits).unwrap_or(usize::MAX))
        .max(1)
}

/// What every connection task shares.
struct Shared {
    app: Router,
    limits: ConnectionLimits,
    /// Instants are kept as milliseconds since this, in atomics.
    epoch: Instant,
    open: Registry,
}

impl Shared {
    fn now(&self) -> u64 {
        millis(self.epoch.elapsed())
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// No request head is arriving.
const NO_HEAD: u64 = u64::MAX;

/// What the accept loop and a connection's watchdog know of one connection.
struct Activity {
    /// When a byte was last read or written, or a request or answer ended (ms).
    last: AtomicU64,
    /// When the first byte of the request head now arriving was read, or [`NO_HEAD`].
    head_since: AtomicU64,
    /// Requests whose handler is running.
    handling: AtomicU32,
    /// Answers whose body is still being sent.
    sending: AtomicU32,
    /// Told to close (to make room for another connection).
    evicted: Notify,
    /// A head began or a handler finished: the watchdog looks again.
    changed: Notify,
}

impl Activity {
    fn new(now: u64) -> Activity {
        Activity {
            last: AtomicU64::new(now),
            head_since: AtomicU64::new(NO_HEAD),
            handling: AtomicU32::new(0),
            sending: AtomicU32::new(0),
            evicted: Notify::new(),
            changed: Notify::new(),
        }
    }

    fn busy(&self) -> bool {
        self.handling.load(Ordering::Acquire) > 0 || self.sending.load(Ordering::Acquire) > 0
    }

    /// Since when the connection has been waiting on its client: the start of the head
    /// it is sending, else its last activity.
    fn waiting_since(&self) -> u64 {
        match self.head_since.load(Ordering::Acquire) {
            NO_HEAD => self.last.load(Ordering::Acquire),
            since => since,
        }
    }

    fn read(&self, now: u64) {
        self.last.store(now, Ordering::Release);
        let began = !self.busy()
            && self
                .head_since
                .compare_exchange(NO_HEAD, now, Ordering::AcqRel, Ordering::Acquire)
                .is_ok();
        if began {
            self.changed.notify_one();
        }
    }
}

/// The open connections: the cap, and the choice of which to close when it is reached.
struct Registry {
    cap: usize,
    next: AtomicU64,
    open: Mutex<HashMap<u64, Arc<Activity>>>,
    epoch: Instant,
}

impl Registry {
    fn new(cap: usize, epoch: Instant) -> Registry {
        Registry {
            cap,
            next: AtomicU64::new(0),
            open: Mutex::new(HashMap::new()),
            epoch,
        }
    }

    /// Room for one more connection, closing the idlest one at the cap; `None` when every
    /// connection is busy.
    fn admit(&self) -> Option<(u64, Arc<Activity>)> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if open.len() >= self.cap && !Self::evict_idlest_of(&mut open) {
            return None;
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let activity = Arc::new(Activity::new(millis(self.epoch.elapsed())));
        open.insert(id, Arc::clone(&activity));
        Some((id, activity))
    }

    fn remove(&self, id: u64) {
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
    }

    /// Closes the connection idle longest; whether there was one.
    fn evict_idlest(&self) -> bool {
        Self::evict_idlest_of(&mut self.open.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn evict_idlest_of(open: &mut HashMap<u64, Arc<Activity>>) -> bool {
        let idlest = open
            .iter()
            .filter(|(_, a)| !a.busy())
            .min_by_key(|(_, a)| a.waiting_since())
            .map(|(id, _)| *id);
        match idlest.and_then(|id| open.remove(&id)) {
            Some(activity) => {
                activity.evicted.notify_one();
                true
            }
            None => false,
        }
    }
}

/// Answers a connection over the cap with a minimal `503` and closes it, reading what the
/// client sent first (bounded) so that the close does not reset the connection before
/// the client reads the answer. Past [`REFUSALS_AT_ONCE`], closes it unanswered.
fn refuse(stream: TcpStream, refusals: &Arc<Semaphore>) {
    let Ok(permit) = Arc::clone(refusals).try_acquire_owned() else {
        return;
    };
    tokio::spawn(async move {
        let _permit = permit;
        let mut stream = stream;
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            stream.write_all(&refusal()).await?;
            stream.shutdown().await?;
            let mut sink = [0u8; 4096];
            let mut taken = 0;
            while taken < 64 * 1024 {
                match stream.read(&mut sink).await? {
                    0 => break,
                    n => taken += n,
                }
            }
            Ok::<_, std::io::Error>(())
        })
        .await;
    });
}

fn refusal() -> Vec<u8> {
    let body = serde_json::json!({
        "type": "https://tenancy.dev/problems/too-many-connections",
        "title": "Service Unavailable",
        "status": 503,
        "code": "too_many_connections",
        "detail": "the server is at its connection limit and every connection is busy; retry shortly",
    })
    .to_string();
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/problem+json\r\n\
         retry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Errors of one connection that was reset or aborted before it was accepted: nothing
/// to wait for.
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    )
}

/// 10 ms, doubling to 1 s, back to 10 ms after an accept succeeds.
#[derive(Default)]
struct Backoff {
    failures: u32,
}

impl Backoff {
    fn next(&mut self) -> Duration {
        let wait = Duration::from_millis(10 << self.failures.min(7)).min(Duration::from_secs(1));
        self.failures = self.failures.saturating_add(1);
        wait
    }

    fn reset(&mut self) {
        self.failures = 0;
    }
}

/// Why a connection was closed by the server.
#[derive(Debug)]
enum Closed {
    HeaderTimeout,
    IdleTimeout,
    Evicted,
}

async fn serve_connection(
    shared: &Arc<Shared>,
    stream: TcpStream,
    peer: SocketAddr,
    activity: &Arc<Activity>,
    mut stopping: watch::Receiver<bool>,
) {
    let io = TokioIo::new(Watched {
        inner: stream,
        activity: Arc::clone(activity),
        epoch: shared.epoch,
    });
    let service = {
        let (shared, activity) = (Arc::clone(shared), Arc::clone(activity));
        hyper::service::service_fn(move |request: Request<Incoming>| {
            let (shared, activity) = (Arc::clone(&shared), Arc::clone(&activity));
            async move { Ok::<_, Infallible>(handle(&shared, activity, peer, request).await) }
        })
    };
    let mut http1 = hyper::server::conn::http1::Builder::new();
    // The watchdog below times heads (hyper's own timer would also count idle time).
    http1.header_read_timeout(None);
    let mut connection = pin!(http1.serve_connection(io, service));
    let mut watchdog = pin!(watchdog(shared, activity));
    let mut draining = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, %peer, "connection ended with an error");
                }
                return;
            }
            closed = &mut watchdog => {
                tracing::debug!(reason = ?closed, %peer, "connection closed by the server");
                return;
            }
            changed = stopping.changed(), if !draining => {
                draining = true;
                if changed.is_ok() {
                    connection.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// Resolves when the connection has waited on its client too long, or was evicted.
async fn watchdog(shared: &Shared, activity: &Activity) -> Closed {
    let limits = &shared.limits;
    loop {
        let now = shared.now();
        let (deadline, reason) = if activity.handling.load(Ordering::Acquire) > 0 {
            // The request timeout bounds a handler; look again once it could be over.
            (now + millis(limits.request_timeout), None)
        } else {
            let idle = activity.last.load(Ordering::Acquire) + millis(limits.idle_timeout);
            match activity.head_since.load(Ordering::Acquire) {
                NO_HEAD => (idle, Some(Closed::IdleTimeout)),
                _ if activity.sending.load(Ordering::Acquire) > 0 => {
                    (idle, Some(Closed::IdleTimeout))
                }
                since => {
                    let head = since.saturating_add(millis(limits.header_read_timeout));
                    if head <= idle {
                        (head, Some(Closed::HeaderTimeout))
                    } else {
                        (idle, Some(Closed::IdleTimeout))
                    }
                }
            }
        };
        if deadline <= now {
            if let Some(reason) = reason {
                return reason;
            }
        }
        let at = shared.epoch + Duration::from_millis(deadline.max(now + 1));
        tokio::select! {
            () = tokio::time::sleep_until(at) => {}
            () = activity.evicted.notified() => return Closed::Evicted,
            () = activity.changed.notified() => {}
        }
    }
}

/// One request: the client's address attached, the body watched, the request timeout
/// applied, `Connection: close` when the body was left unread.
async fn handle(
    shared: &Shared,
    activity: Arc<Activity>,
    peer: SocketAddr,
    mut request: Request<Incoming>,
) -> Response {
    let handling = Handling::begin(shared, activity);
    // Settled here, so that a request that times out is answered with its id too.
    let request_id = crate::observe::ensure_request_id(&mut request);
    let http1 = request.version() <= Version::HTTP_11;
    let has_body = !request.body().is_end_stream();
    let body_read = Arc::new(AtomicBool::new(false));
    let mut request = request.map(|body| {
        Body::new(WatchedBody {
            inner: body,
            read: Arc::clone(&body_read),
        })
    });
    request.extensions_mut().insert(ConnectInfo(peer));
    let answered = tokio::time::timeout(
        shared.limits.request_timeout,
        shared.app.clone().oneshot(request),
    )
    .await;
    let mut response = match answered {
        Ok(Ok(response)) => response,
        Ok(Err(never)) => match never {},
        Err(_) => {
            tracing::info!(%peer, %request_id, "request timed out");
            let mut response = crate::observe::within(&request_id, || {
                ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "request_timeout",
                    format!(
                        "the request was not received and answered within {} s",
                        shared.limits.request_timeout.as_secs_f64()
                    ),
                )
                .into_response()
            });
            if let Ok(value) = HeaderValue::from_str(&request_id) {
                response
                    .headers_mut()
                    .insert(crate::observe::REQUEST_ID, value);
            }
            response
        }
    };
    if http1 && has_body && !body_read.load(Ordering::Acquire) {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    let sending = handling.into_sending();
    response.map(|body| {
        Body::new(SendingBody {
            inner: body,
            _sending: sending,
        })
    })
}

/// A request being handled: counted from its head until its answer's head.
struct Handling {
    activity: Arc<Activity>,
    epoch: Instant,
}

impl Handling {
    fn begin(shared: &Shared, activity: Arc<Activity>) -> Handling {
        activity.handling.fetch_add(1, Ordering::AcqRel);
        activity.head_since.store(NO_HEAD, Ordering::Release);
        Handling {
            activity,
            epoch: shared.epoch,
        }
    }

    /// The handler is done; its answer's body is being sent.
    fn into_sending(self) -> Sending {
        self.activity.sending.fetch_add(1, Ordering::AcqRel);
        Sending {
            activity: Arc::clone(&self.activity),
            epoch: self.epoch,
        }
    }
}

impl Drop for Handling {
    fn drop(&mut self) {
        self.activity
            .last
            .store(millis(self.epoch.elapsed()), Ordering::Release);
        self.activity.handling.fetch_sub(1, Ordering::AcqRel);
        self.activity.changed.notify_one();
    }
}

/// An answer being sent: counted until its body is done or dropped.
struct Sending {
    activity: Arc<Activity>,
    epoch: Instant,
}

impl Drop for Sending {
    fn drop(&mut self) {
        self.activity
            .last
            .store(millis(self.epoch.elapsed()), Ordering::Release);
        self.activity.sending.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A request body that notes when it has been read to its end.
struct WatchedBody {
    inner: Incoming,
    read: Arc<AtomicBool>,
}

impl hyper::body::Body for WatchedBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        let ended = match &polled {
            Poll::Ready(None) => true,
            Poll::Ready(Some(Ok(_))) => self.inner.is_end_stream(),
            _ => false,
        };
        if ended {
            self.read.store(true, Ordering::Release);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// An answer's body, holding its connection busy until it is sent.
struct SendingBody {
    inner: Body,
    _sending: Sending,
}

impl hyper::body::Body for SendingBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The connection's socket, noting every byte read or written in its [`Activity`].
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
    epoch: Instant,
}

impl Watched {
    fn now(&self) -> u64 {
        millis(self.epoch.elapsed())
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.read(self.now());
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.last.store(self.now(), Ordering::Release);
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.last.store(self.now(), Ordering::Release);
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_second_and_resets() {
        let mut b = Backoff::default();
        let waits: Vec<u64> = (0..9).map(|_| millis(b.next())).collect();
        assert_eq!(waits, [10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        b.reset();
        assert_eq!(millis(b.next()), 10);
    }

    #[test]
    fn at_the_cap_the_idlest_idle_connection_makes_room() {
        let open = Registry::new(2, Instant::now());
        let (a, first) = open.admit().expect("room");
        let (_, second) = open.admit().expect("room");
        first.last.store(0, Ordering::Release);
        second.last.store(5, Ordering::Release);
        second.handling.fetch_add(1, Ordering::AcqRel);
        let (_, third) = open.admit().expect("the idle one makes room");
        assert!(
            !open.open.lock().unwrap().contains_key(&a),
            "the idle one went"
        );
        third.sending.fetch_add(1, Ordering::AcqRel);
        assert!(open.admit().is_none(), "every connection busy: refused");
    }

    #[test]
    fn connections_get_what_the_open_files_limit_leaves_them() {
        // Half the limit at most.
        assert_eq!(fit_to_open_files(10_000, 0, 1024), 512);
        // Never the files reserved for tenant databases and PostgreSQL connections.
        assert_eq!(fit_to_open_files(10_000, 3_064, 4_096), 1_032);
        assert_eq!(fit_to_open_files(10_000, 256, 1024), 512);
        // The configured cap when it fits; at least one.
        assert_eq!(fit_to_open_files(100, 256, 1024), 100);
        assert_eq!(fit_to_open_files(100, 5_000, 1024), 1);
        assert_eq!(fit_to_open_files(0, 0, 1024), 1);
    }
}
