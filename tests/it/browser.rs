//! A small Chrome DevTools Protocol client for the browser tests: headless
//! Chromium driven over its DevTools websocket with the websocket client
//! the suite already has (docs/ARCHITECTURE.md says why not a CDP crate).
//! Every wait has a deadline ([`STEP`]), so a hang fails instead of
//! blocking CI, and the browser dies with the test (`kill_on_drop`).
use std::{
    collections::HashMap,
    path::PathBuf,
    process::Stdio,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

/// The longest any one step (a command, a wait for the page) may take.
pub const STEP: Duration = Duration::from_secs(20);

/// Records what the page's Content-Security-Policy refused; installed
/// before any script of the page runs.
const CSP_WATCH: &str = "window.__cspViolations = [];\
    document.addEventListener('securitypolicyviolation', (e) => \
    window.__cspViolations.push(`${e.violatedDirective} ${e.blockedURI} ${e.sourceFile}:${e.lineNumber}`));";

type Reply = Result<Value, Value>;

struct Connection {
    outgoing: mpsc::UnboundedSender<Message>,
    pending: Mutex<HashMap<u64, oneshot::Sender<Reply>>>,
    /// Every event the browser sent, in order.
    events: Mutex<Vec<Value>>,
    next_id: AtomicU64,
}

impl Connection {
    async fn call(&self, session: Option<&str>, method: &str, params: Value) -> Value {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending.lock().unwrap().insert(id, tx);
        let mut message = json!({"id": id, "method": method, "params": params});
        if let Some(session) = session {
            message["sessionId"] = json!(session);
        }
        self.outgoing
            .send(Message::text(message.to_string()))
            .expect("DevTools connection open");
        match tokio::time::timeout(STEP, rx).await {
            Ok(Ok(Ok(result))) => result,
            Ok(Ok(Err(error))) => panic!("{method} failed: {error}"),
            Ok(Err(_)) => panic!("{method}: the browser went away"),
            Err(_) => panic!("{method}: no answer within {STEP:?}"),
        }
    }
}

/// A headless Chromium with its own profile, deleted afterwards.
pub struct Browser {
    _child: tokio::process::Child,
    _profile: tempfile::TempDir,
    connection: Arc<Connection>,
}

/// Debian's binary unless `CHROMIUM` names another.
fn chromium() -> PathBuf {
    std::env::var_os("CHROMIUM").map_or_else(|| PathBuf::from("chromium"), PathBuf::from)
}

impl Browser {
    pub async fn launch() -> Browser {
        let profile = tempfile::tempdir().expect("profile directory");
        let child = tokio::process::Command::new(chromium())
            .arg("--headless=new")
            .arg("--remote-debugging-port=0")
            .arg(format!("--user-data-dir={}", profile.path().display()))
            // Containers run tests as root, where Chromium's sandbox cannot start.
            .args(["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
            .args([
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
            ])
            .args(["--window-size=1200,900", "about:blank"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromium starts (apt-get install chromium)");
        // Chromium writes its port and the browser's websocket path there.
        let port_file = profile.path().join("DevToolsActivePort");
        let started = Instant::now();
        let (port, path) = loop {
            if let Ok(text) = std::fs::read_to_string(&port_file) {
                let mut lines = text.lines();
                if let (Some(port), Some(path)) = (lines.next(), lines.next()) {
                    break (port.to_owned(), path.to_owned());
                }
            }
            assert!(
                started.elapsed() < STEP,
                "Chromium wrote no DevToolsActivePort"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let url = format!("ws://127.0.0.1:{port}{path}");
        let (socket, _) = tokio::time::timeout(STEP, tokio_tungstenite::connect_async(url))
            .await
            .expect("DevTools answers in time")
            .expect("DevTools websocket");
        let (mut sink, mut stream) = socket.split();
        let (outgoing, mut queue) = mpsc::unbounded_channel::<Message>();
        let connection = Arc::new(Connection {
            outgoing,
            pending: Mutex::default(),
            events: Mutex::default(),
            next_id: AtomicU64::new(1),
        });
        tokio::spawn(async move {
            while let Some(message) = queue.recv().await {
                if sink.send(message).await.is_err() {
                    break;
                }
            }
        });
        let reader = connection.clone();
        tokio::spawn(async move {
            while let Some(Ok(message)) = stream.next().await {
                let Message::Text(text) = message else {
                    continue;
                };
                let Ok(value) = serde_json::from_str::<Value>(&text) else {
                    continue;
                };
                if let Some(id) = value.get("id").and_then(Value::as_u64) {
                    if let Some(tx) = reader.pending.lock().unwrap().remove(&id) {
                        let reply = match value.get("error") {
                            Some(error) => Err(error.clone()),
                            None => Ok(value["result"].clone()),
                        };
                        let _ = tx.send(reply);
                    }
                } else {
                    reader.events.lock().unwrap().push(value);
                }
            }
        });
        Browser {
            _child: child,
            _profile: profile,
            connection,
        }
    }

    /// A tab in a browser context of its own (its own cookies and storage:
    /// another person), with the CSP watch installed.
    pub async fn new_page(&self) -> Page {
        let context = self
            .connection
            .call(None, "Target.createBrowserContext", json!({}))
            .await;
        let target = self
            .connection
            .call(
                None,
                "Target.createTarget",
                json!({"url": "about:blank", "browserContextId": context["browserContextId"]}),
            )
            .await;
        let attached = self
            .connection
            .call(
                None,
                "Target.attachToTarget",
                json!({"targetId": target["targetId"], "flatten": true}),
            )
            .await;
        let page = Page {
            connection: self.connection.clone(),
            session: attached["sessionId"].as_str().expect("session").to_owned(),
        };
        for domain in [
            "Page.enable",
            "Runtime.enable",
            "Network.enable",
            "Log.enable",
        ] {
            page.call(domain, json!({})).await;
        }
        page.call(
            "Page.addScriptToEvaluateOnNewDocument",
            json!({"source": CSP_WATCH}),
        )
        .await;
        page
    }
}

pub struct Page {
    connection: Arc<Connection>,
    session: String,
}

impl Page {
    pub async fn call(&self, method: &str, params: Value) -> Value {
        self.connection
            .call(Some(&self.session), method, params)
            .await
    }

    /// Open `url` and wait until it has loaded.
    pub async fn goto(&self, url: &str) {
        let navigated = self.call("Page.navigate", json!({"url": url})).await;
        assert!(
            navigated.get("errorText").is_none(),
            "navigate to {url}: {navigated}"
        );
        self.wait_for(
            &format!("{url} loaded"),
            "document.readyState === 'complete'",
        )
        .await;
    }

    /// The value of a JavaScript expression (promises awaited).
    pub async fn eval(&self, expression: &str) -> Value {
        let answer = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expression, "awaitPromise": true, "returnByValue": true}),
            )
            .await;
        if let Some(details) = answer.get("exceptionDetails") {
            panic!("{expression}\nthrew {details}");
        }
        answer["result"]["value"].clone()
    }

    /// Poll `expression` until it is truthy; its value. Fails after [`STEP`].
    pub async fn wait_for(&self, what: &str, expression: &str) -> Value {
        let started = Instant::now();
        loop {
            let answer = self
                .call(
                    "Runtime.evaluate",
                    json!({"expression": expression, "awaitPromise": true, "returnByValue": true}),
                )
                .await;
            let value = &answer["result"]["value"];
            let truthy = answer.get("exceptionDetails").is_none()
                && !matches!(value, Value::Null | Value::Bool(false))
                && value != &json!("")
                && value != &json!(0);
            if truthy {
                return value.clone();
            }
            if started.elapsed() > STEP {
                let text = self
                    .eval("document.body ? document.body.innerText : ''")
                    .await;
                panic!("waited {STEP:?} for {what}; the page says:\n{text}");
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Save a PNG of the page as `<CARGO_TARGET_TMPDIR>/screenshots/<name>.png`.
    pub async fn screenshot(&self, name: &str) {
        let shot = self
            .call("Page.captureScreenshot", json!({"format": "png"}))
            .await;
        let bytes = base64_decode(shot["data"].as_str().expect("png data"));
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
        std::fs::create_dir_all(&dir).expect("screenshot folder");
        std::fs::write(dir.join(format!("{name}.png")), bytes).expect("screenshot written");
    }

    /// What went wrong in this page so far: policy violations, uncaught
    /// exceptions and the browser's security messages.
    pub async fn problems(&self) -> Vec<String> {
        let mut problems: Vec<String> = self
            .eval("window.__cspViolations || []")
            .await
            .as_array()
            .expect("violations")
            .iter()
            .map(|v| format!("CSP: {v}"))
            .collect();
        for event in self.connection.events.lock().unwrap().iter() {
            if event["sessionId"] != json!(self.session) {
                continue;
            }
            match event["method"].as_str() {
                Some("Runtime.exceptionThrown") => {
                    problems.push(format!(
                        "exception: {}",
                        event["params"]["exceptionDetails"]
                    ));
                }
                Some("Log.entryAdded") if event["params"]["entry"]["source"] == "security" => {
                    problems.push(format!("security: {}", event["params"]["entry"]["text"]));
                }
                _ => {}
            }
        }
        problems
    }
}

fn base64_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut buffer, mut bits) = (0u32, 0);
    for byte in text.bytes().filter(|b| *b != b'=') {
        let value = ALPHABET.iter().position(|c| *c == byte).expect("base64") as u32;
        buffer = (buffer << 6) | value;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
        }
    }
    out
}
