//! Email through a real SMTP conversation over TCP (lettre against the
//! suite's own SMTP server, `crate::smtp`), and the persisted retry queue.
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::{
    harness::{Mail, Options, TestApp, TestDb, free_port, unique},
    smtp::{Received, SmtpServer},
};

fn smtp_options(port: u16, db: Option<std::sync::Arc<TestDb>>) -> Options {
    Options {
        db,
        configure: Box::new(move |config| {
            config.smtp_url = Some(format!("smtp://127.0.0.1:{port}"));
        }),
        ..Options::default()
    }
}

/// What the SMTP server received for a verification email to `address`
/// sent by `app`, queued by an instance at `base`: the envelope, the headers
/// and a body with the link and its token. Returns the token.
fn assert_verification_email(
    app: &TestApp,
    base: &str,
    message: &Received,
    address: &str,
) -> String {
    assert_eq!(message.to, [address], "envelope recipients");
    assert_eq!(
        message.from,
        app.app
            .state
            .config
            .mail_from
            .rsplit_once('<')
            .map_or(app.app.state.config.mail_from.as_str(), |(_, rest)| rest
                .trim_end_matches('>')),
        "envelope sender"
    );
    let mail = Mail::parse(&message.data);
    assert_eq!(mail.to, address, "To header: {}", message.data);
    assert_eq!(mail.subject, "Confirm your email address");
    let token = mail.verification_token();
    assert_eq!(token.len(), 64, "a 64-hex-digit token: {}", mail.body);
    let link = format!("{base}/verify-email?token={token}");
    assert!(
        mail.body.contains(&link),
        "the body links to {link}: {}",
        mail.body
    );
    token
}

#[tokio::test]
async fn verification_email_goes_through_a_real_smtp_server() {
    let smtp = SmtpServer::start().await;
    let app = TestApp::spawn_with(smtp_options(smtp.addr.port(), None)).await;
    let address = format!("{}@example.com", unique("smtp"));
    app.sign_up(&address).await;
    let message = smtp.wait_for(&address).await;
    let token = assert_verification_email(&app, &app.base, &message, &address);
    let (session, _) = app.sign_in(&address).await;
    let data = app
        .ok(
            Some(&session),
            "mutation($t:String!){ verifyEmail(token:$t){ emailVerified } }",
            json!({"t": token}),
        )
        .await;
    assert_eq!(data["verifyEmail"]["emailVerified"], true);
    // Sent once, over SMTP only.
    app.wait_mail_drained().await;
    assert_eq!(smtp.messages().len(), 1, "{:?}", smtp.messages());
    assert!(
        app.mails_to(&address).is_empty(),
        "nothing goes to the mail folder"
    );
}

/// The first attempt, made while nothing listens on the SMTP port, failed
/// and is recorded; returns its error.
async fn wait_failed_attempt(app: &TestApp) -> String {
    use entity::mail_queue;
    use sea_orm::EntityTrait;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let queued = mail_queue::Entity::find()
            .all(&app.app.state.ctx.db)
            .await
            .unwrap();
        if let [message] = queued.as_slice()
            && message.attempts >= 1
        {
            assert!(message.sent_at.is_none(), "{message:?}");
            return message.last_error.clone().expect("the error is recorded");
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no failed attempt recorded: {queued:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn mail_queued_while_smtp_is_down_survives_a_restart_and_is_delivered() {
    let port = free_port();
    let first = TestApp::spawn_with(smtp_options(port, None)).await;
    let address = format!("{}@example.com", unique("queued"));
    // The SMTP server is down: sign-up still succeeds, and the email waits.
    first.sign_up(&address).await;
    let error = wait_failed_attempt(&first).await;
    assert!(!error.is_empty());
    let db = first.db.clone();
    let queued_by = first.base.clone();
    drop(first);

    let smtp = SmtpServer::start_on(port).await;
    let second = TestApp::spawn_with(smtp_options(port, Some(db))).await;
    let message = smtp.wait_for(&address).await;
    let token = assert_verification_email(&second, &queued_by, &message, &address);
    let (session, _) = second.sign_in(&address).await;
    let data = second
        .ok(
            Some(&session),
            "mutation($t:String!){ verifyEmail(token:$t){ emailVerified } }",
            json!({"t": token}),
        )
        .await;
    assert_eq!(data["verifyEmail"]["emailVerified"], true);
    second.wait_mail_drained().await;
    assert_eq!(smtp.messages().len(), 1, "delivered once");
}

/// The test server itself: several messages on one connection, RSET,
/// NOOP and dot-unstuffing, as a client other than lettre would use them.
#[tokio::test]
async fn the_test_smtp_server_speaks_smtp() {
    let smtp = SmtpServer::start().await;
    let stream = tokio::net::TcpStream::connect(smtp.addr).await.unwrap();
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    let mut reply = async |command: &str| {
        if !command.is_empty() {
            write.write_all(command.as_bytes()).await.unwrap();
        }
        let mut lines = String::new();
        loop {
            let mut line = String::new();
            read.read_line(&mut line).await.unwrap();
            lines.push_str(&line);
            if line.as_bytes().get(3) != Some(&b'-') {
                return lines;
            }
        }
    };
    assert!(reply("").await.starts_with("220 "));
    assert!(reply("EHLO client\r\n").await.contains("\r\n250 "));
    assert!(reply("DATA\r\n").await.starts_with("503"));
    assert!(reply("MAIL FROM:<a@x>\r\n").await.starts_with("250"));
    assert!(reply("RCPT TO:<b@x>\r\n").await.starts_with("250"));
    assert!(reply("RSET\r\n").await.starts_with("250"));
    assert!(reply("NOOP\r\n").await.starts_with("250"));
    assert!(
        reply("MAIL FROM:<c@x> BODY=8BITMIME\r\n")
            .await
            .starts_with("250")
    );
    assert!(reply("RCPT TO:<d@x>\r\n").await.starts_with("250"));
    assert!(reply("RCPT TO:<e@x>\r\n").await.starts_with("250"));
    assert!(reply("DATA\r\n").await.starts_with("354"));
    assert!(
        reply("Subject: hi\r\n\r\n..leading dot\r\n.\r\n")
            .await
            .starts_with("250")
    );
    assert!(reply("HELO again\r\n").await.starts_with("250"));
    assert!(reply("MAIL FROM:<f@x>\r\n").await.starts_with("250"));
    assert!(reply("RCPT TO:<g@x>\r\n").await.starts_with("250"));
    assert!(reply("DATA\r\n").await.starts_with("354"));
    assert!(reply("second\r\n.\r\n").await.starts_with("250"));
    assert!(reply("QUIT\r\n").await.starts_with("221"));

    let messages = smtp.messages();
    assert_eq!(messages.len(), 2, "{messages:?}");
    assert_eq!(messages[0].from, "c@x", "RSET dropped the first envelope");
    assert_eq!(messages[0].to, ["d@x", "e@x"]);
    assert_eq!(messages[0].data, "Subject: hi\r\n\r\n.leading dot\r\n");
    assert_eq!(messages[1].from, "f@x");
    assert_eq!(messages[1].to, ["g@x"]);
    assert_eq!(messages[1].data, "second\r\n");
}
