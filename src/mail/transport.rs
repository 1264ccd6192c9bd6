//! Where email goes: an SMTP server, `.eml` files in a folder, or memory (tests).
use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
};

use lettre::{AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

/// Why a message was not handed over (it stays queued and is retried).
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("SMTP: {0}")]
    Smtp(#[from] lettre::transport::smtp::Error),
    #[error("mail folder: {0}")]
    File(#[from] lettre::transport::file::Error),
    #[error("building the message: {0}")]
    Message(#[from] lettre::error::Error),
    #[error("address: {0}")]
    Address(#[from] lettre::address::AddressError),
}

/// Why the configured transport cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("SMTP_URL: {0}")]
    SmtpUrl(#[from] lettre::transport::smtp::Error),
    #[error("MAIL_DIR {path}: {source}")]
    MailDir {
        path: PathBuf,
        source: std::io::Error,
    },
}

#[derive(Clone)]
pub enum Transport {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    File(AsyncFileTransport<Tokio1Executor>),
    /// Keeps sent messages in memory so tests can read them.
    Memory(Arc<Mutex<Vec<Message>>>),
}

impl Transport {
    /// SMTP when `smtp_url` is set, otherwise files under `mail_dir`.
    pub fn from_config(smtp_url: Option<&str>, mail_dir: PathBuf) -> Result<Self, TransportError> {
        match smtp_url {
            Some(url) => Ok(Transport::Smtp(
                AsyncSmtpTransport::<Tokio1Executor>::from_url(url)?.build(),
            )),
            None => {
                if let Err(source) = std::fs::create_dir_all(&mail_dir) {
                    return Err(TransportError::MailDir {
                        path: mail_dir,
                        source,
                    });
                }
                Ok(Transport::File(AsyncFileTransport::new(mail_dir)))
            }
        }
    }

    pub async fn send(&self, message: Message) -> Result<(), SendError> {
        match self {
            Transport::Smtp(smtp) => smtp.send(message).await.map(drop).map_err(Into::into),
            Transport::File(file) => file.send(message).await.map(drop).map_err(Into::into),
            Transport::Memory(sent) => {
                sent.lock().unwrap_or_else(|p| p.into_inner()).push(message);
                Ok(())
            }
        }
    }
}
