//! `/readyz`: 200 when the database, Redis (when configured) and this
//! instance's Redis subscriber are all there; 503 within about a second when
//! one is not, however it fails.
use std::time::{Duration, Instant};

use crate::harness::{Options, TestApp};

/// How soon a probe must get its answer when a dependency is down (the
/// server bounds each check to 1 s; the rest is margin for a busy machine).
const ANSWER_WITHIN: Duration = Duration::from_secs(2);

/// `/readyz` with the time it took.
async fn timed_readiness(app: &TestApp) -> ((u16, serde_json::Value), Duration) {
    let started = Instant::now();
    let answer = app.readiness().await;
    (answer, started.elapsed())
}

#[tokio::test]
async fn a_healthy_instance_is_ready() {
    let app = TestApp::spawn().await;
    let (status, body) = app.wait_ready().await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["database"], "ok");
    let expected = if crate::harness::test_redis_url().is_some() {
        "ok"
    } else {
        "not configured"
    };
    assert_eq!(body["redis"], expected, "{body}");
    assert_eq!(body["subscriber"], expected, "{body}");
}

/// Nothing listens on port 1: the instance starts all the same (events then
/// reach only its own subscriptions), and says it is not ready.
#[tokio::test]
async fn an_unreachable_redis_is_not_ready_at_once() {
    let app = TestApp::spawn_with(Options {
        redis_url: Some("redis://127.0.0.1:1".into()),
        ..Options::default()
    })
    .await;
    for _ in 0..3 {
        let ((status, body), took) = timed_readiness(&app).await;
        assert_eq!(status, 503, "{body}");
        assert!(took < ANSWER_WITHIN, "answered in {took:?}");
        assert_eq!(body["database"], "ok", "{body}");
        assert_eq!(body["redis"], "unavailable", "{body}");
        assert_eq!(body["subscriber"], "disconnected", "{body}");
    }
}

/// The database refuses connections and its sessions are cut (PostgreSQL
/// only: an open SQLite file cannot be taken away from a process): not ready,
/// within the bound; ready again once the database is back.
#[tokio::test]
#[ignore = "needs PostgreSQL"]
async fn an_unreachable_database_is_not_ready_at_once() {
    use sea_orm::ConnectionTrait;
    let admin_url = crate::harness::require_postgres();
    let app = TestApp::spawn().await;
    assert_eq!(app.wait_ready().await.0, 200);
    let name = url::Url::parse(&app.db.url).unwrap().path()[1..].to_owned();
    let admin = sea_orm::Database::connect(&admin_url).await.unwrap();
    admin
        .execute_unprepared(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS false"))
        .await
        .unwrap();
    admin
        .execute_unprepared(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = '{name}' AND pid <> pg_backend_pid()"
        ))
        .await
        .unwrap();
    for _ in 0..3 {
        let ((status, body), took) = timed_readiness(&app).await;
        assert_eq!(status, 503, "{body}");
        assert!(took < ANSWER_WITHIN, "answered in {took:?}");
        assert_eq!(body["database"], "unavailable", "{body}");
    }
    admin
        .execute_unprepared(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true"))
        .await
        .unwrap();
    admin.close().await.ok();
    let (status, body) = app.wait_ready().await;
    assert_eq!(status, 200, "{body}");
}

/// A TCP relay to PostgreSQL that can be made to hang: while hung it
/// forwards nothing either way and leaves new connections unanswered, as a
/// database host that stopped answering (no reset, no refusal) would.
struct HangingRelay {
    port: u16,
    hung: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl HangingRelay {
    async fn start(upstream: std::net::SocketAddr) -> HangingRelay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (hung, watch) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let watch = watch.clone();
                tokio::spawn(async move {
                    let mut answering = watch.clone();
                    if answering.wait_for(|hung| !hung).await.is_err() {
                        return;
                    }
                    let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    tokio::join!(
                        Self::pipe(client_read, server_write, watch.clone()),
                        Self::pipe(server_read, client_write, watch),
                    );
                });
            }
        });
        HangingRelay { port, hung, task }
    }

    /// Copy `from` to `to`, holding each chunk while the relay hangs.
    async fn pipe(
        mut from: tokio::net::tcp::OwnedReadHalf,
        mut to: tokio::net::tcp::OwnedWriteHalf,
        mut hung: tokio::sync::watch::Receiver<bool>,
    ) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut buffer = vec![0; 16 * 1024];
        loop {
            let Ok(read) = from.read(&mut buffer).await else {
                return;
            };
            if read == 0 || hung.wait_for(|hung| !hung).await.is_err() {
                return;
            }
            if to.write_all(&buffer[..read]).await.is_err() {
                return;
            }
        }
    }

    fn hang(&self, hung: bool) {
        self.hung.send_replace(hung);
    }
}

impl Drop for HangingRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The database host stops answering altogether (PostgreSQL only): readiness
/// still answers within the bound, where it used to wait for the pool's
/// acquire timeout or a ping that never returned; ready again once the host
/// answers.
#[tokio::test]
#[ignore = "needs PostgreSQL"]
async fn a_hung_database_is_not_ready_at_once() {
    crate::harness::require_postgres();
    let db = std::sync::Arc::new(crate::harness::TestDb::create().await);
    let mut url = url::Url::parse(&db.url).unwrap();
    let upstream = (
        url.host_str().unwrap().to_owned(),
        url.port().unwrap_or(5432),
    );
    let upstream = tokio::net::lookup_host(upstream)
        .await
        .unwrap()
        .next()
        .unwrap();
    let relay = HangingRelay::start(upstream).await;
    url.set_port(Some(relay.port)).unwrap();
    let relayed = url.to_string();
    let app = TestApp::spawn_with(Options {
        db: Some(db),
        configure: Box::new(move |c| c.db.database_url = relayed),
        ..Options::default()
    })
    .await;
    assert_eq!(app.wait_ready().await.0, 200);
    relay.hang(true);
    for _ in 0..3 {
        let ((status, body), took) = timed_readiness(&app).await;
        assert_eq!(status, 503, "{body}");
        assert!(took < ANSWER_WITHIN, "answered in {took:?}");
        assert_eq!(body["database"], "unavailable", "{body}");
    }
    relay.hang(false);
    let (status, body) = app.wait_ready().await;
    assert_eq!(status, 200, "{body}");
}
