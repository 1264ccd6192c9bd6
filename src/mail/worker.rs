//! Sends queued email after commit, retrying failures with exponential back-off.
//! Several instances may run this loop: a message is leased (its next attempt
//! pushed into the future by a conditional update) before it is sent, so only
//! one instance sends it.
//!
//! Delivery is at least once: a process killed between handing a message to
//! the transport and recording it as sent sends it again once its lease ends.
//! Each message carries a Message-ID made from its queue row, the same on
//! every attempt, so mail systems and readers can recognise such a repeat.
use std::time::Duration;

use chrono::{DateTime, Utc};
use entity::mail_queue;
use lettre::{Message, message::MultiPart};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect,
};

use super::transport::{SendError, Transport};
use crate::clock::Clock;

/// How long a leased message is reserved for the instance sending it.
const LEASE: chrono::Duration = chrono::Duration::minutes(2);
/// Give up on a message after this many failed attempts (about a day of back-off).
const MAX_ATTEMPTS: i32 = 20;

pub struct MailWorker {
    pub db: DatabaseConnection,
    pub clock: Clock,
    pub transport: Transport,
    pub from: String,
    /// Notified after commits that may have queued email.
    pub wake: std::sync::Arc<tokio::sync::Notify>,
    pub interval: Duration,
}

/// How long a woken worker waits before reading the queue (an email is
/// never urgent to the millisecond; a read per commit under load would be).
const WAKE_COALESCE: Duration = Duration::from_millis(50);

impl MailWorker {
    pub async fn run(self) {
        loop {
            if let Err(error) = self.send_due().await {
                tracing::warn!(%error, "mail queue: could not read the queue");
            }
            tokio::select! {
                // Every commit wakes the worker, most with no email queued:
                // gather the wake-ups of a burst into one read of the queue.
                _ = self.wake.notified() => tokio::time::sleep(WAKE_COALESCE).await,
                _ = tokio::time::sleep(self.interval) => {}
            }
        }
    }

    /// Send every message that is due now; returns how many were sent.
    pub async fn send_due(&self) -> Result<usize, DbErr> {
        let mut sent = 0;
        loop {
            let now = self.clock.now();
            let due = mail_queue::Entity::find()
                .filter(mail_queue::Column::SentAt.is_null())
                .filter(mail_queue::Column::NextAttemptAt.lte(now))
                .filter(mail_queue::Column::Attempts.lt(MAX_ATTEMPTS))
                .order_by_asc(mail_queue::Column::Id)
                .limit(50)
                .all(&self.db)
                .await?;
            if due.is_empty() {
                return Ok(sent);
            }
            for message in due {
                if !self.lease(&message, now).await? {
                    continue;
                }
                match self.deliver(&message).await {
                    Ok(()) => {
                        sent += 1;
                        self.mark_sent(message.id, now).await?;
                    }
                    Err(error) => {
                        let attempts = message.attempts + 1;
                        let backoff = chrono::Duration::seconds(2i64.pow(attempts.min(12) as u32));
                        tracing::warn!(mail_id = message.id, attempts, %error, "mail queue: send failed, will retry");
                        self.update(message.id, |m| {
                            m.attempts = Set(attempts);
                            m.next_attempt_at = Set(now + backoff);
                            m.last_error = Set(Some(error.to_string()));
                        })
                        .await?;
                    }
                }
            }
        }
    }

    /// Reserve `message` for this instance; false when another got it first.
    async fn lease(&self, message: &mail_queue::Model, now: DateTime<Utc>) -> Result<bool, DbErr> {
        let leased = mail_queue::Entity::update_many()
            .col_expr(mail_queue::Column::NextAttemptAt, (now + LEASE).into())
            .filter(mail_queue::Column::Id.eq(message.id))
            .filter(mail_queue::Column::NextAttemptAt.eq(message.next_attempt_at))
            .filter(mail_queue::Column::SentAt.is_null())
            .exec(&self.db)
            .await?;
        Ok(leased.rows_affected == 1)
    }

    /// Record `id` as sent. The message is out: while the lease lasts, a
    /// database that does not answer is waited for, else the message would
    /// be sent again when the lease ends.
    async fn mark_sent(&self, id: i64, leased_at: DateTime<Utc>) -> Result<(), DbErr> {
        let mut pause = Duration::from_millis(100);
        loop {
            let marked = self
                .update(id, |m| m.sent_at = Set(Some(self.clock.now())))
                .await;
            match marked {
                Ok(()) => return Ok(()),
                Err(error)
                    if self.clock.now() + chrono::Duration::seconds(5) < leased_at + LEASE =>
                {
                    tracing::warn!(mail_id = id, %error, "mail queue: sent, but not yet recorded; retrying");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
                Err(error) => return Err(error),
            }
        }
    }

    async fn update(
        &self,
        id: i64,
        change: impl FnOnce(&mut mail_queue::ActiveModel),
    ) -> Result<(), DbErr> {
        let mut model = mail_queue::ActiveModel {
            id: Set(id),
            ..Default::default()
        };
        change(&mut model);
        mail_queue::Entity::update(model).exec(&self.db).await?;
        Ok(())
    }

    async fn deliver(&self, queued: &mail_queue::Model) -> Result<(), SendError> {
        let message = Message::builder()
            .from(self.from.parse()?)
            .to(queued.recipient.parse()?)
            .subject(&queued.subject)
            .message_id(Some(message_id(queued, &self.from)))
            .multipart(MultiPart::alternative_plain_html(
                queued.text_body.clone(),
                queued.html_body.clone(),
            ))?;
        self.transport.send(message).await
    }
}

/// `<ROW.CREATED@DOMAIN>`: the queue row's id and creation time (ids restart
/// with a new database) at the sender's domain.
fn message_id(queued: &mail_queue::Model, from: &str) -> String {
    let domain = from
        .rsplit_once('@')
        .map(|(_, domain)| domain.trim_end_matches('>').trim())
        .filter(|domain| !domain.is_empty())
        .unwrap_or("keyledger.invalid");
    format!(
        "<{}.{}@{domain}>",
        queued.id,
        queued.created_at.timestamp_micros()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_name_the_queue_row_at_the_senders_domain() {
        let created = DateTime::from_timestamp(1_700_000_000, 5_000).unwrap();
        let queued = mail_queue::Model {
            id: 42,
            recipient: "ada@example.com".into(),
            subject: String::new(),
            text_body: String::new(),
            html_body: String::new(),
            attempts: 0,
            next_attempt_at: created,
            sent_at: None,
            last_error: None,
            created_at: created,
        };
        let id = "<42.1700000000000005@mail.example.com>";
        assert_eq!(
            message_id(&queued, "Keyledger <noreply@mail.example.com>"),
            id
        );
        assert_eq!(message_id(&queued, "noreply@mail.example.com"), id);
        assert_eq!(
            message_id(&queued, "nobody"),
            "<42.1700000000000005@keyledger.invalid>"
        );
    }
}
