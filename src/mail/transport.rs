//! Where email goes: an SMTP server, `.eml` files in a folder, or memory (tests).
use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
};

use lettre::{AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

#[derive(Clone)]
pub enum Transport {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    File(AsyncFileTransport<Tokio1Executor>),
    /// Keeps sent messages in memory so tests can read them.
    Memory(Arc<Mutex<Vec<Message>>>),
}

impl Transport {
    /// SMTP when `smtp_url` is set, otherwise files under `mail_dir`.
    pub fn from_config(smtp_url: Option<&str>, mail_dir: PathBuf) -> Result<Self, String> {
        match smtp_url {
            Some(url) => AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
                .map(|builder| Transport::Smtp(builder.build()))
                .map_err(|e| format!("SMTP_URL: {e}")),
            None => {
                std::fs::create_dir_all(&mail_dir)
                    .map_err(|e| format!("MAIL_DIR {}: {e}", mail_dir.display()))?;
                Ok(Transport::File(AsyncFileTransport::new(mail_dir)))
            }
        }
    }

    pub async fn send(&self, message: Message) -> Result<(), String> {
        match self {
            Transport::Smtp(smtp) => smtp
                .send(message)
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
            Transport::File(file) => file
                .send(message)
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
            Transport::Memory(sent) => {
                sent.lock().map_err(|e| e.to_string())?.push(message);
                Ok(())
            }
        }
    }
}
