//! The accept loop: HTTP/1.1 with a deadline on request headers, a cap on
//! open connections overall and per client, and graceful shutdown.
//!
//! `axum::serve` sets no timer, so a client that sends half a request line
//! (or nothing) keeps its connection for as long as it likes, and enough of
//! them exhaust the process's descriptors: accept then fails for everyone.
//! Here every connection holds a slot counted against the global cap and
//! its client's cap for as long as its socket lives (upgraded websockets
//! included); a connection over a cap is closed as soon as it is accepted.
use std::{
    collections::HashMap,
    io,
    net::IpAddr,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use axum::{Router, extract::ConnectInfo};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::watch,
};

use crate::{config::Config, metrics::Metrics};

/// Descriptors kept for everything but client connections (database pool,
/// Redis, SMTP, mail files, logs): a tenth of the limit, and at least this.
const MIN_DESCRIPTOR_RESERVE: u64 = 512;

/// Pause after an accept error other than a connection's own (typically
/// EMFILE/ENFILE): the pending connection stays in the backlog, so retrying
/// at once would only spin; a short pause lets connections close meanwhile.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Written to a shed connection before it is closed, so that a well-behaved
/// client learns why (best effort: never waits for the socket).
const SHED_RESPONSE: &[u8] =
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";

/// Raise this process's soft limit on open descriptors to its hard limit
/// (servers start with a soft limit of 1024 on many systems); returns the
/// soft limit now in force.
pub fn raise_descriptor_limit() -> io::Result<u64> {
    rlimit::increase_nofile_limit(u64::MAX)
}

/// The soft limit on open descriptors now in force.
fn descriptor_limit() -> u64 {
    rlimit::Resource::NOFILE
        .get()
        .map(|(soft, _)| soft)
        .unwrap_or(1024)
}

/// Connections that fit in `limit` descriptors once the reserve is kept
/// (never more than half of them go to the reserve).
pub fn connections_for_descriptors(limit: u64) -> u64 {
    let reserve = (limit / 10).max(MIN_DESCRIPTOR_RESERVE).min(limit / 2);
    (limit - reserve).max(1)
}

/// The listener's limits.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Connections open at once.
    pub max_connections: u64,
    /// Connections one client holds open at once.
    pub per_client: u64,
    /// Time a client has to send a request's headers (also the idle time
    /// allowed between requests on a keep-alive connection).
    pub header_read_timeout: Duration,
    /// Peers that carry many clients (load balancers): not capped per client.
    pub trusted_proxies: crate::client_ip::TrustedProxies,
}

impl Limits {
    /// The configured limits; the global cap defaults to what the current
    /// descriptor limit allows.
    pub fn from_config(config: &Config) -> Limits {
        Limits {
            max_connections: config
                .max_connections
                .unwrap_or_else(|| connections_for_descriptors(descriptor_limit())),
            per_client: config.max_connections_per_client,
            header_read_timeout: Duration::from_secs(config.header_read_timeout_secs),
            trusted_proxies: config.trusted_proxies.clone(),
        }
    }
}

/// Open connections, in total and per client.
struct Counts {
    limits: Limits,
    open: Mutex<Open>,
}

#[derive(Default)]
struct Open {
    total: u64,
    per_client: HashMap<IpAddr, u64>,
}

impl Counts {
    /// A slot for one more connection of `client`, or `None` when a cap is reached.
    /// A trusted proxy's connections count only in the total.
    fn admit(self: &Arc<Self>, peer: IpAddr) -> Option<Slot> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if open.total >= self.limits.max_connections {
            return None;
        }
        let client = (!self.limits.trusted_proxies.contains(peer)).then_some(peer);
        if let Some(client) = client {
            let mine = open.per_client.entry(client).or_default();
            if *mine >= self.limits.per_client {
                return None;
            }
            *mine += 1;
        }
        open.total += 1;
        Some(Slot {
            counts: self.clone(),
            client,
        })
    }
}

/// One connection's place in the counts, given back when dropped.
struct Slot {
    counts: Arc<Counts>,
    /// `None` for a trusted proxy.
    client: Option<IpAddr>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.counts.open.lock().unwrap_or_else(|e| e.into_inner());
        open.total = open.total.saturating_sub(1);
        let Some(client) = self.client else { return };
        if let Some(mine) = open.per_client.get_mut(&client) {
            *mine = mine.saturating_sub(1);
            if *mine == 0 {
                open.per_client.remove(&client);
            }
        }
    }
}

/// A TCP stream that holds its connection's slot: hyper hands the stream to
/// a websocket on upgrade, so the slot lives exactly as long as the socket.
struct Counted {
    stream: TcpStream,
    _slot: Slot,
    _gauge: crate::metrics::ConnectedGuard,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Errors of one pending connection (it went away before being accepted):
/// accept again at once.
fn is_connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// Serve `router` on `listener` until `shutdown` resolves; then stop
/// accepting, let in-flight requests finish and close idle connections.
/// Websockets already upgraded are left to end on their own. Connections
/// send without Nagle's delay: an answer is one small write that should
/// leave at once, not wait for the client's ACK.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    metrics: Metrics,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let counts = Arc::new(Counts {
        limits,
        open: Mutex::new(Open::default()),
    });
    let builder = Arc::new(builder);
    // Connections watch this for the shutdown signal; once every receiver
    // is dropped, every connection has ended.
    let (signal, watch) = watch::channel(());
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) if is_connection_error(&error) => continue,
            Err(error) => {
                tracing::error!(%error, "accept error; pausing before accepting again");
                tokio::select! {
                    () = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                    () = &mut shutdown => break,
                }
            }
        };
        let Some(slot) = counts.admit(peer.ip()) else {
            metrics.connection_shed();
            tracing::debug!(%peer, "connection cap reached; connection shed");
            let _ = stream.try_write(SHED_RESPONSE);
            continue;
        };
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "could not set TCP_NODELAY");
        }
        let io = TokioIo::new(Counted {
            stream,
            _slot: slot,
            _gauge: metrics.connection_opened(),
        });
        let service = tower::ServiceExt::map_request(
            router.clone(),
            move |mut request: hyper::Request<Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                request
            },
        );
        let builder = builder.clone();
        let mut watch = watch.clone();
        tokio::spawn(async move {
            let connection = builder
                .serve_connection(io, TowerToHyperService::new(service))
                .with_upgrades();
            tokio::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                _ = watch.changed() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(error) = result {
                tracing::debug!(%error, %peer, "connection ended with an error");
            }
            drop(watch);
        });
    }
    drop(listener);
    drop(watch);
    let _ = signal.send(());
    signal.closed().await;
    Ok(())
}
