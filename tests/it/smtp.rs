//! A small SMTP server on tokio for the mail tests: real SMTP over TCP
//! (220 greeting, EHLO/HELO, MAIL FROM, RCPT TO, DATA with dot-unstuffing,
//! RSET, NOOP, QUIT), keeping each message's envelope and raw data.
use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::{TcpListener, TcpStream},
    sync::Notify,
    task::JoinHandle,
};

/// One message as the server received it.
#[derive(Debug, Clone)]
pub struct Received {
    /// The envelope sender (`MAIL FROM`).
    pub from: String,
    /// The envelope recipients (`RCPT TO`), in order.
    pub to: Vec<String>,
    /// Headers and body as sent after `DATA`, dot-unstuffed, without the
    /// final `.` line.
    pub data: String,
}

#[derive(Default)]
struct Inbox {
    messages: Mutex<Vec<Received>>,
    arrived: Notify,
}

/// A running server; stops accepting when dropped.
pub struct SmtpServer {
    pub addr: SocketAddr,
    inbox: Arc<Inbox>,
    task: JoinHandle<()>,
}

/// Longest command or data line accepted (RFC 5321 allows 1000 octets).
const MAX_LINE: usize = 64 * 1024;

impl SmtpServer {
    /// Listen on a free port.
    pub async fn start() -> SmtpServer {
        Self::start_on(0).await
    }

    /// Listen on `port` of 127.0.0.1 (0: a free one).
    pub async fn start_on(port: u16) -> SmtpServer {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind the SMTP server");
        let addr = listener.local_addr().expect("SMTP server address");
        let inbox = Arc::new(Inbox::default());
        let shared = inbox.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let inbox = shared.clone();
                tokio::spawn(async move {
                    // A client that goes away mid-session loses its message.
                    let _ = session(stream, &inbox).await;
                });
            }
        });
        SmtpServer { addr, inbox, task }
    }

    /// Every message received so far, oldest first.
    pub fn messages(&self) -> Vec<Received> {
        self.inbox.messages.lock().unwrap().clone()
    }

    /// Messages received so far with `rcpt` among their envelope recipients.
    pub fn messages_to(&self, rcpt: &str) -> Vec<Received> {
        self.messages()
            .into_iter()
            .filter(|m| m.to.iter().any(|t| t.eq_ignore_ascii_case(rcpt)))
            .collect()
    }

    /// Wait (up to 30 s) for a message to `rcpt`; the first one.
    pub async fn wait_for(&self, rcpt: &str) -> Received {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let arrived = self.inbox.arrived.notified();
            if let Some(message) = self.messages_to(rcpt).into_iter().next() {
                return message;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                panic!(
                    "the SMTP server never received a message to {rcpt}; it has {:?}",
                    self.messages()
                );
            }
        }
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The address between `<` and `>` of `MAIL FROM:<a> …` / `RCPT TO:<a> …`.
fn path_argument(argument: &str) -> Option<String> {
    let start = argument.find('<')? + 1;
    let end = start + argument[start..].find('>')?;
    Some(argument[start..end].to_owned())
}

async fn session(stream: TcpStream, inbox: &Inbox) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    let mut line = Vec::new();
    let mut from: Option<String> = None;
    let mut to: Vec<String> = Vec::new();
    write.write_all(b"220 keyledger-test ESMTP\r\n").await?;
    loop {
        line.clear();
        if read.read_until(b'\n', &mut line).await? == 0 {
            return Ok(());
        }
        if line.len() > MAX_LINE {
            write.write_all(b"500 line too long\r\n").await?;
            continue;
        }
        let text = String::from_utf8_lossy(&line);
        let command = text.trim_end_matches(['\r', '\n']);
        let (verb, argument) = command.split_once(' ').unwrap_or((command, ""));
        let verb = verb.to_ascii_uppercase();
        let upper = argument.to_ascii_uppercase();
        let reply: &[u8] = match verb.as_str() {
            "EHLO" => b"250-keyledger-test\r\n250-8BITMIME\r\n250 SIZE 10485760\r\n",
            "HELO" => b"250 keyledger-test\r\n",
            "MAIL" if upper.starts_with("FROM:") => match path_argument(argument) {
                Some(sender) => {
                    from = Some(sender);
                    to.clear();
                    b"250 OK\r\n"
                }
                None => b"501 syntax: MAIL FROM:<address>\r\n",
            },
            "RCPT" if upper.starts_with("TO:") => match (&from, path_argument(argument)) {
                (None, _) => b"503 MAIL first\r\n",
                (Some(_), Some(rcpt)) if !rcpt.is_empty() => {
                    to.push(rcpt);
                    b"250 OK\r\n"
                }
                _ => b"501 syntax: RCPT TO:<address>\r\n",
            },
            "DATA" if from.is_none() || to.is_empty() => b"503 MAIL and RCPT first\r\n",
            "DATA" => {
                write
                    .write_all(b"354 end data with <CR><LF>.<CR><LF>\r\n")
                    .await?;
                let data = read_data(&mut read).await?;
                inbox.messages.lock().unwrap().push(Received {
                    from: from.take().unwrap_or_default(),
                    to: std::mem::take(&mut to),
                    data,
                });
                inbox.arrived.notify_waiters();
                b"250 OK queued\r\n"
            }
            "RSET" => {
                from = None;
                to.clear();
                b"250 OK\r\n"
            }
            "NOOP" => b"250 OK\r\n",
            "QUIT" => {
                write.write_all(b"221 bye\r\n").await?;
                return write.shutdown().await;
            }
            "MAIL" | "RCPT" => b"501 syntax error in parameters\r\n",
            _ => b"502 command not implemented\r\n",
        };
        write.write_all(reply).await?;
    }
}

/// Lines up to the lone `.`, with a leading dot of each line removed.
async fn read_data(
    read: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
) -> std::io::Result<String> {
    let mut data = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        if read.read_until(b'\n', &mut line).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if line == b".\r\n" || line == b".\n" {
            return Ok(String::from_utf8_lossy(&data).into_owned());
        }
        let unstuffed = line.strip_prefix(b".").unwrap_or(&line);
        data.extend_from_slice(unstuffed);
    }
}
