//! The model server's compiled gRPC front.
//!
//! HTTP/2 and gRPC framing run here, on one thread of their own (a current-thread tokio runtime driving
//! hyper). Each unary call's request message goes, as bytes, into an inbox; the first call of a burst
//! writes one byte to a pipe the asyncio loop watches, so the loop wakes once per burst and takes the
//! whole inbox (`Front.take`). Python parses, checks the caller and runs the call (the same dispatch the
//! grpc.aio front uses) and hands back bytes or a status (`Front.respond`). What stays here: message
//! framing, the size limits a gRPC server enforces before parsing, the call's deadline (`grpc-timeout`)
//! as a hard limit, and the status/trailers on the wire.

// pyo3 0.22's #[pymethods] output trips clippy's useless_conversion on methods returning PyResult.
#![allow(clippy::useless_conversion)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::fs::File;
use std::future::poll_fn;
use std::io::Write;
use std::mem::ManuallyDrop;
use std::os::fd::FromRawFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use hyper::body::{Body, Frame, Incoming};
use hyper::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use pyo3::exceptions::{PyOSError, PyRuntimeError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};
use tokio::sync::{oneshot, watch};

// gRPC status codes used on this side of the boundary.
const INVALID_ARGUMENT: u32 = 3;
const DEADLINE_EXCEEDED: u32 = 4;
const RESOURCE_EXHAUSTED: u32 = 8;
const UNIMPLEMENTED: u32 = 12;
const INTERNAL: u32 = 13;
const UNAVAILABLE: u32 = 14;

/// One call waiting for Python: (id, method path, authorization, seconds left or None, message bytes).
struct Call {
    id: u64,
    method: String,
    authorization: Option<String>,
    timeout_s: Option<f64>,
    message: Bytes,
}

/// Python's answer: a message (status OK) or a status, plus trailing metadata.
struct Reply {
    code: u32,
    details: String,
    message: Option<Bytes>,
    trailers: Vec<(String, String)>,
}

struct Shared {
    inbox: Mutex<Vec<Call>>,
    waiting: Mutex<HashMap<u64, oneshot::Sender<Reply>>>,
    next_id: AtomicU64,
    // Python's pipe (write end, non-blocking); Python owns and closes it.
    wake: ManuallyDrop<File>,
    max_receive: usize,
    max_send: usize,
    connections: AtomicUsize,
}

impl Shared {
    fn submit(&self, call: Call, tx: oneshot::Sender<Reply>) {
        self.waiting.lock().unwrap().insert(call.id, tx);
        let first = {
            let mut inbox = self.inbox.lock().unwrap();
            inbox.push(call);
            inbox.len() == 1
        };
        // Only the first call of a burst wakes the loop; a full pipe means it is awake already.
        if first {
            let _ = (&*self.wake).write(&[1u8]);
        }
    }
}

/// A response body: at most one data frame, then trailers (none: a trailers-only response).
struct GrpcBody {
    data: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

impl Body for GrpcBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(data) = self.data.take() {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none() && self.trailers.is_none()
    }
}

/// grpc-message is percent-encoded outside printable ASCII (and '%' itself).
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn status_headers(map: &mut HeaderMap, code: u32, details: &str, trailers: &[(String, String)]) {
    map.insert("grpc-status", HeaderValue::from(code));
    if !details.is_empty() {
        if let Ok(v) = HeaderValue::from_str(&percent_encode(details)) {
            map.insert("grpc-message", v);
        }
    }
    for (k, v) in trailers {
        // Names and values come from the error table; anything not header-safe is dropped, not sent broken.
        if let (Ok(k), Ok(v)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            map.append(k, v);
        }
    }
}

fn grpc_response(reply: Reply) -> Response<GrpcBody> {
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    let body = match reply.message {
        Some(data) if reply.code == 0 => {
            let mut trailers = HeaderMap::new();
            status_headers(&mut trailers, 0, "", &reply.trailers);
            GrpcBody {
                data: Some(data),
                trailers: Some(trailers),
            }
        }
        _ => {
            // Trailers-only: the status travels in the one HEADERS frame, as gRPC servers do for errors.
            status_headers(&mut headers, reply.code, &reply.details, &reply.trailers);
            GrpcBody {
                data: None,
                trailers: None,
            }
        }
    };
    let mut response = Response::new(body);
    *response.headers_mut() = headers;
    response
}

fn refusal(code: u32, details: impl Into<String>) -> Response<GrpcBody> {
    grpc_response(Reply {
        code,
        details: details.into(),
        message: None,
        trailers: Vec::new(),
    })
}

fn http_error(status: StatusCode) -> Response<GrpcBody> {
    let mut response = Response::new(GrpcBody {
        data: None,
        trailers: None,
    });
    *response.status_mut() = status;
    response
}

/// `grpc-timeout`: up to 8 digits and a unit (H M S m u n); None when absent or malformed.
fn parse_timeout(value: &[u8]) -> Option<f64> {
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    let n: f64 = std::str::from_utf8(digits).ok()?.parse::<u64>().ok()? as f64;
    let scale = match unit[0] {
        b'H' => 3600.0,
        b'M' => 60.0,
        b'S' => 1.0,
        b'm' => 1e-3,
        b'u' => 1e-6,
        b'n' => 1e-9,
        _ => return None,
    };
    Some(n * scale)
}

/// The one message of a unary call, bounded by `limit` before it is read in full.
async fn read_message(body: &mut Incoming, limit: usize) -> Result<Bytes, Response<GrpcBody>> {
    let mut buf = BytesMut::new();
    let mut expected: Option<usize> = None;
    loop {
        let frame = poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await;
        match frame {
            None => break,
            Some(Err(_)) => return Err(refusal(INTERNAL, "the request stream broke off")),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    buf.extend_from_slice(&data);
                }
            }
        }
        if expected.is_none() && buf.len() >= 5 {
            if buf[0] != 0 {
                return Err(refusal(
                    UNIMPLEMENTED,
                    "compressed messages are not supported by this server: send them uncompressed (identity)",
                ));
            }
            let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
            if len > limit {
                // The text grpc core uses, so both fronts answer alike.
                return Err(refusal(
                    RESOURCE_EXHAUSTED,
                    format!("Received message larger than max ({len} vs. {limit})"),
                ));
            }
            expected = Some(len);
        }
        if let Some(len) = expected {
            if buf.len() > 5 + len {
                return Err(refusal(
                    INVALID_ARGUMENT,
                    "a unary call carries exactly one message; this one carried more",
                ));
            }
        }
    }
    match expected {
        Some(len) if buf.len() == 5 + len => {
            buf.advance(5);
            Ok(buf.freeze())
        }
        _ => Err(refusal(
            INVALID_ARGUMENT,
            "the request ended inside its message (or carried none)",
        )),
    }
}

async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<GrpcBody>, Infallible> {
    if req.method() != hyper::Method::POST {
        return Ok(http_error(StatusCode::METHOD_NOT_ALLOWED));
    }
    let headers = req.headers();
    let grpc = headers
        .get(CONTENT_TYPE)
        .map(|v| v.as_bytes().starts_with(b"application/grpc"))
        .unwrap_or(false);
    if !grpc {
        return Ok(http_error(StatusCode::UNSUPPORTED_MEDIA_TYPE));
    }
    let timeout_s = headers
        .get("grpc-timeout")
        .and_then(|v| parse_timeout(v.as_bytes()));
    let authorization = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let method = req.uri().path().to_owned();
    let mut body = req.into_body();
    let call = async {
        let message = match read_message(&mut body, shared.max_receive).await {
            Ok(m) => m,
            Err(refused) => return refused,
        };
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        shared.submit(
            Call {
                id,
                method,
                authorization,
                timeout_s,
                message,
            },
            tx,
        );
        let _forget = Forget {
            shared: &shared,
            id,
        };
        match rx.await {
            Ok(reply) => grpc_response(reply),
            Err(_) => refusal(UNAVAILABLE, "the server is shutting down"),
        }
    };
    Ok(match timeout_s {
        // The deadline is hard here too: Python cancels its work at the same moment (its own timer).
        Some(s) => match tokio::time::timeout(Duration::from_secs_f64(s.min(1e9)), call).await {
            Ok(response) => response,
            Err(_) => refusal(DEADLINE_EXCEEDED, "Deadline Exceeded"),
        },
        None => call.await,
    })
}

/// Drops the call's reply slot when the call ends without one (deadline, client gone).
struct Forget<'a> {
    shared: &'a Shared,
    id: u64,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.shared.waiting.lock().unwrap().remove(&self.id);
    }
}

/// Counts a connection while it lives.
struct Live(Arc<Shared>);

impl Drop for Live {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Accept until `stop`, then wait for the open connections to finish their calls (GOAWAY sent).
async fn serve(
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
        return;
    };
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.changed() => break,
        };
        let Ok((stream, _)) = accepted else { continue };
        let _ = stream.set_nodelay(true);
        shared.connections.fetch_add(1, Ordering::Relaxed);
        let live = Live(shared.clone());
        let mut stop = stop.clone();
        tokio::spawn(async move {
            let shared = live.0.clone();
            let service = hyper::service::service_fn(move |req| handle(shared.clone(), req));
            let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
            builder.max_concurrent_streams(1024);
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            let mut conn = std::pin::pin!(conn);
            if !*stop.borrow_and_update() {
                tokio::select! {
                    _ = conn.as_mut() => return,
                    _ = stop.changed() => {}
                }
            }
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
            drop(live);
        });
    }
    drop(listener);
    while shared.connections.load(Ordering::Relaxed) > 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The compiled front: `Front(host, port, wake_fd, max_receive, max_send)` serves at once on its own thread.
#[pyclass(module = "_grpcfront")]
struct Front {
    shared: Arc<Shared>,
    port: u16,
    stop: watch::Sender<bool>,
    // Taken by `close`, which runs on a worker thread while the loop still takes and answers calls
    // (so `&self`, never `&mut self`: pyo3 would refuse those calls during a mutable borrow).
    ending: Mutex<Option<Ending>>,
}

struct Ending {
    close: oneshot::Sender<()>,
    done: std::sync::mpsc::Receiver<()>,
    thread: std::thread::JoinHandle<()>,
}

#[pymethods]
impl Front {
    #[new]
    fn new(
        host: &str,
        port: u16,
        wake_fd: i32,
        max_receive: usize,
        max_send: usize,
    ) -> PyResult<Self> {
        let listener = std::net::TcpListener::bind((host, port))
            .map_err(|e| PyOSError::new_err(format!("cannot bind gRPC {host}:{port}: {e}")))?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let shared = Arc::new(Shared {
            inbox: Mutex::new(Vec::new()),
            waiting: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            wake: ManuallyDrop::new(unsafe { File::from_raw_fd(wake_fd) }),
            max_receive,
            max_send,
            connections: AtomicUsize::new(0),
        });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(|e| {
                PyRuntimeError::new_err(format!("cannot start the gRPC front's runtime: {e}"))
            })?;
        let (stop, stop_rx) = watch::channel(false);
        let (close, close_rx) = oneshot::channel::<()>();
        let (done_tx, done) = std::sync::mpsc::channel::<()>();
        let served = shared.clone();
        let thread = std::thread::Builder::new()
            .name("grpcfront".into())
            .spawn(move || {
                runtime.block_on(async move {
                    tokio::select! {
                        _ = serve(listener, served, stop_rx) => {},
                        _ = close_rx => {},
                    }
                });
                // Dropping the runtime ends every connection still open.
                drop(runtime);
                let _ = done_tx.send(());
            })?;
        Ok(Front {
            shared,
            port,
            stop,
            ending: Mutex::new(Some(Ending {
                close,
                done,
                thread,
            })),
        })
    }

    #[getter]
    fn port(&self) -> u16 {
        self.port
    }

    /// Every call waiting since the last take: [(id, method, authorization, timeout_s, message)].
    fn take<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let calls = std::mem::take(&mut *self.shared.inbox.lock().unwrap());
        let list = PyList::empty_bound(py);
        for c in calls {
            let t = PyTuple::new_bound(
                py,
                [
                    c.id.into_py(py),
                    c.method.into_py(py),
                    c.authorization.into_py(py),
                    c.timeout_s.into_py(py),
                    PyBytes::new_bound(py, &c.message).into_any().unbind(),
                ],
            );
            list.append(t)?;
        }
        Ok(list)
    }

    /// Answers: [(id, code, details, message bytes or None, [(key, value)])]; a call gone already is skipped.
    #[allow(clippy::type_complexity)]
    fn respond(
        &self,
        replies: Vec<(
            u64,
            u32,
            String,
            Option<Bound<'_, PyBytes>>,
            Vec<(String, String)>,
        )>,
    ) {
        let mut ready = Vec::with_capacity(replies.len());
        for (id, code, details, message, trailers) in replies {
            // The bytes object's buffer, not a Vec<u8> (which pyo3 would build one int at a time).
            let reply = match message.as_ref().map(|m| m.as_bytes()) {
                Some(m) if code == 0 && m.len() > self.shared.max_send => Reply {
                    code: RESOURCE_EXHAUSTED,
                    details: format!(
                        "Sent message larger than max ({} vs. {})",
                        m.len(),
                        self.shared.max_send
                    ),
                    message: None,
                    trailers: Vec::new(),
                },
                Some(m) => {
                    let mut framed = BytesMut::with_capacity(5 + m.len());
                    framed.put_u8(0);
                    framed.put_u32(m.len() as u32);
                    framed.extend_from_slice(m);
                    Reply {
                        code,
                        details,
                        message: Some(framed.freeze()),
                        trailers,
                    }
                }
                None => Reply {
                    code,
                    details,
                    message: None,
                    trailers,
                },
            };
            ready.push((id, reply));
        }
        let mut waiting = self.shared.waiting.lock().unwrap();
        for (id, reply) in ready {
            if let Some(tx) = waiting.remove(&id) {
                let _ = tx.send(reply);
            }
        }
    }

    /// Stop accepting connections; those open get GOAWAY and finish the calls they have in flight.
    fn stop(&self) {
        let _ = self.stop.send(true);
    }

    /// Stop (if not yet), give open connections up to `grace_s` to finish their calls, then end the
    /// thread: connections still open then close (their calls fail UNAVAILABLE on the client).
    fn close(&self, py: Python<'_>, grace_s: f64) {
        let _ = self.stop.send(true);
        let ending = self.ending.lock().unwrap().take();
        if let Some(Ending {
            close,
            done,
            thread,
        }) = ending
        {
            py.allow_threads(move || {
                let _ = done.recv_timeout(Duration::from_secs_f64(grace_s.clamp(0.0, 3600.0)));
                let _ = close.send(());
                let _ = thread.join();
            });
        }
        self.shared.waiting.lock().unwrap().clear();
    }
}

impl Drop for Front {
    fn drop(&mut self) {
        if let Some(ending) = self.ending.get_mut().unwrap().take() {
            let _ = ending.close.send(());
        }
    }
}

#[pymodule]
fn _grpcfront(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Front>()?;
    Ok(())
}
