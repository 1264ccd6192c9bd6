//! A fixed set of keep-alive HTTP/1.1 connections for the measured requests
//! (claims, validations and the `/healthz` floor, closed loops and fixed
//! rates), one request at a time on each (as wrk2 keeps them).
//!
//! Why not reqwest there: the generator shares the machine's 2 cores with
//! the server, and reqwest's pool, URL handling and per-request setup cost
//! CPU that the server then lacks (validations at concurrency 32: 20,000–
//! 24,000/s through reqwest, 26,000–31,000/s over these connections, on the
//! same machine). Opened beforehand, the connections also let the fixed-rate
//! runs keep many requests in flight without opening connections in the
//! middle of a measurement. Setup and the other scenarios keep reqwest.
use std::sync::{
    Arc, Mutex,
    atomic::{AtomicUsize, Ordering},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, client::conn::http1::SendRequest, header};
use hyper_util::rt::TokioIo;
use tokio::{
    net::TcpStream,
    sync::{Semaphore, SemaphorePermit},
};

/// `count` connections to one server; a request waits for a free one.
pub struct Connections {
    host: String,
    idle: Mutex<Vec<SendRequest<Full<Bytes>>>>,
    /// One permit per idle connection; closed when none is left, so that
    /// requests fail instead of waiting forever.
    free: Semaphore,
    live: AtomicUsize,
}

impl Connections {
    /// Open `count` connections to `base` (`http://host:port`).
    pub async fn open(base: &str, count: usize) -> Result<Arc<Connections>, String> {
        let host = base
            .strip_prefix("http://")
            .ok_or_else(|| format!("not an http:// address: {base}"))?
            .trim_end_matches('/')
            .to_owned();
        let mut idle = Vec::with_capacity(count);
        for _ in 0..count {
            idle.push(connect(&host).await?);
        }
        Ok(Arc::new(Connections {
            host,
            idle: Mutex::new(idle),
            free: Semaphore::new(count),
            live: AtomicUsize::new(count),
        }))
    }

    /// `POST path` with a JSON body, as the bearer of `token` if given; the
    /// answer's body when the status is 2xx.
    pub async fn post_json(
        &self,
        path: &str,
        body: Bytes,
        token: Option<&str>,
    ) -> Result<Bytes, String> {
        self.post_json_keyed(path, body, token, None).await
    }

    /// [`Connections::post_json`] with an `Idempotency-Key` when `key` is given.
    pub async fn post_json_keyed(
        &self,
        path: &str,
        body: Bytes,
        token: Option<&str>,
        key: Option<&str>,
    ) -> Result<Bytes, String> {
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header(header::HOST, &self.host)
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        let request = request.body(Full::new(body)).map_err(|e| e.to_string())?;
        self.send(request).await
    }

    /// `GET path`; the answer's body when the status is 2xx.
    pub async fn get(&self, path: &str) -> Result<Bytes, String> {
        let request = Request::builder()
            .uri(path)
            .header(header::HOST, &self.host)
            .body(Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
        self.send(request).await
    }

    async fn send(&self, request: Request<Full<Bytes>>) -> Result<Bytes, String> {
        let permit = self
            .free
            .acquire()
            .await
            .map_err(|_| "no connection to the server left".to_owned())?;
        let mut connection = self
            .idle
            .lock()
            .expect("idle connections")
            .pop()
            .expect("one idle connection per permit");
        let slot = Slot {
            connections: self,
            permit: Some(permit),
        };
        let answer = match exchange(&mut connection, request).await {
            Ok(answer) => answer,
            // Replace the broken connection, or give up its slot; the
            // request counts as an error either way.
            Err(broken) => match connect(&self.host).await {
                Ok(fresh) => {
                    connection = fresh;
                    Err(broken)
                }
                Err(_) => return Err(broken),
            },
        };
        self.idle.lock().expect("idle connections").push(connection);
        slot.release();
        answer
    }
}

/// A connection's place while a request uses it. Dropped without
/// [`Slot::release`] (the connection broke and could not be replaced, or
/// the request was dropped half-way, as on its time-out, leaving the
/// connection in an unknown state), the place is given up for good: its
/// permit is not returned, so no later request waits for a connection that
/// is gone; when none is left, requests fail at once.
struct Slot<'a> {
    connections: &'a Connections,
    permit: Option<SemaphorePermit<'a>>,
}

impl Slot<'_> {
    /// The connection is back among the idle ones: free its place.
    fn release(mut self) {
        drop(self.permit.take());
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if let Some(permit) = self.permit.take() {
            permit.forget();
            if self.connections.live.fetch_sub(1, Ordering::AcqRel) == 1 {
                self.connections.free.close();
            }
        }
    }
}

async fn connect(host: &str) -> Result<SendRequest<Full<Bytes>>, String> {
    let stream = TcpStream::connect(host)
        .await
        .map_err(|e| format!("connect {host}: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(connection);
    Ok(sender)
}

/// One request and its answer: `Err` when the connection failed, else the
/// answer (`Err` inside for a status other than 2xx, on a sound connection).
async fn exchange(
    connection: &mut SendRequest<Full<Bytes>>,
    request: Request<Full<Bytes>>,
) -> Result<Result<Bytes, String>, String> {
    connection.ready().await.map_err(|e| e.to_string())?;
    let response = connection
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok(if status.is_success() {
        Ok(body)
    } else {
        Err(format!("HTTP {status}"))
    })
}
