//! Email through a real SMTP server (Debian's python3-aiosmtpd, installed by
//! `.ci/run`), and the persisted retry queue.
use std::{process::Stdio, time::Duration};

use serde_json::json;

use crate::harness::{Options, TestApp, unique};

/// A real SMTP server process printing every message it receives to a file.
struct SmtpServer {
    child: std::process::Child,
    output: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl SmtpServer {
    fn start(port: u16) -> SmtpServer {
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join("smtp.out");
        let file = std::fs::File::create(&output).unwrap();
        let child = std::process::Command::new("/usr/bin/python3")
            .args([
                "-u",
                "-m",
                "aiosmtpd",
                "-n",
                "-l",
                &format!("127.0.0.1:{port}"),
            ])
            .args(["-c", "aiosmtpd.handlers.Debugging", "stdout"])
            .stdout(Stdio::from(file))
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "python3-aiosmtpd is installed (apt-get install python3-aiosmtpd; .ci/run does it)",
            );
        SmtpServer {
            child,
            output,
            _dir: dir,
        }
    }

    async fn wait_ready(port: u16) {
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the SMTP server did not start");
    }

    async fn wait_for(&self, needle: &str) -> String {
        for _ in 0..300 {
            let text = std::fs::read_to_string(&self.output).unwrap_or_default();
            if text.contains(needle) {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the SMTP server never received {needle:?}");
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn smtp_options(port: u16, db: Option<std::sync::Arc<crate::harness::TestDb>>) -> Options {
    Options {
        db,
        configure: Box::new(move |config| {
            config.smtp_url = Some(format!("smtp://127.0.0.1:{port}"));
        }),
        ..Options::default()
    }
}

#[tokio::test]
async fn verification_email_goes_through_a_real_smtp_server() {
    let port = free_port();
    let smtp = SmtpServer::start(port);
    SmtpServer::wait_ready(port).await;
    let app = TestApp::spawn_with(smtp_options(port, None)).await;
    let address = format!("{}@example.com", unique("smtp"));
    app.sign_up(&address).await;
    let received = smtp.wait_for(&address).await;
    assert!(
        received.contains("Subject: Confirm your email address"),
        "{received}"
    );
    let body = received.replace("=\n", "").replace("=3D", "=");
    let start = body.find("token=").expect("token in the email") + "token=".len();
    let token: String = body[start..]
        .chars()
        .take_while(|c| c.is_ascii_hexdigit())
        .collect();
    let data = app
        .ok(
            None,
            "mutation($t:String!){ verifyEmail(token:$t){ emailVerified } }",
            json!({"t": token}),
        )
        .await;
    assert_eq!(data["verifyEmail"]["emailVerified"], true);
}

#[tokio::test]
async fn mail_queued_while_smtp_is_down_survives_a_restart_and_is_delivered() {
    let port = free_port();
    let first = TestApp::spawn_with(smtp_options(port, None)).await;
    let address = format!("{}@example.com", unique("queued"));
    // The SMTP server is down: sign-up still succeeds.
    first.sign_up(&address).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let db = first.db.clone();
    drop(first);

    let smtp = SmtpServer::start(port);
    SmtpServer::wait_ready(port).await;
    let _second = TestApp::spawn_with(smtp_options(port, Some(db))).await;
    let received = smtp.wait_for(&address).await;
    assert!(received.contains("Confirm your email address"));
}
