//! Email. Rules queue an [`Email`] in the transaction of their change
//! ([`enqueue`]); the [`worker`] sends it after commit through a
//! [`transport::Transport`] and retries failures with back-off, so sending
//! never blocks or fails the user's action and a restart loses nothing.
pub mod transport;
pub mod worker;

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use entity::mail_queue;
use minijinja::Environment;
use sea_orm::{ActiveModelTrait, ActiveValue::Set, ConnectionTrait};
use serde::Serialize;

use crate::error::{ApiResult, AppError};

/// Every email the product sends. Each variant has a folder under
/// `src/mail/templates/` with `subject.txt`, `body.txt` and `body.html`;
/// the variant's fields are the templates' variables. Values are untrusted
/// text: the HTML template escapes them.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "template", rename_all = "snake_case")]
pub enum Email {
    VerifyEmail {
        link: String,
        token: String,
    },
    LicenseAssigned {
        product: String,
        key: String,
        link: String,
    },
    LicenseUnassigned {
        product: String,
        key: String,
    },
    ClaimReceived {
        product: String,
        key: String,
        claimer: String,
        pending: bool,
        link: String,
    },
    ClaimDecided {
        product: String,
        key: String,
        approved: bool,
    },
    AssigneeReplaced {
        product: String,
        key: String,
    },
    RequestReceived {
        requester: String,
        message: String,
        link: String,
    },
    RequestDecided {
        buyer: String,
        approved: bool,
        key: Option<String>,
    },
    TransferStartedOwner {
        order_number: String,
        product: String,
        new_owner: String,
    },
    TransferStartedNewOwner {
        order_number: String,
        product: String,
        old_owner: String,
        link: String,
        expires_at: String,
    },
}

/// A rendered email.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
}

macro_rules! templates {
    ($($name:literal),* $(,)?) => {
        &[$(
            (concat!($name, "/subject.txt"), include_str!(concat!("templates/", $name, "/subject.txt"))),
            (concat!($name, "/body.txt"), include_str!(concat!("templates/", $name, "/body.txt"))),
            (concat!($name, "/body.html"), include_str!(concat!("templates/", $name, "/body.html"))),
        )*]
    };
}

const TEMPLATES: &[(&str, &str)] = templates!(
    "verify_email",
    "license_assigned",
    "license_unassigned",
    "claim_received",
    "claim_decided",
    "assignee_replaced",
    "request_received",
    "request_decided",
    "transfer_started_owner",
    "transfer_started_new_owner",
);

static ENV: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    // Auto-escaping follows the file name: on for `.html`, off for `.txt`.
    for (name, source) in TEMPLATES {
        env.add_template(name, source)
            .unwrap_or_else(|e| panic!("email template {name} does not parse: {e}"));
    }
    env
});

impl Email {
    pub fn render(&self) -> ApiResult<Rendered> {
        let context = minijinja::Value::from_serialize(self);
        let name = serde_json::to_value(self)
            .ok()
            .and_then(|v| {
                v.get("template")
                    .and_then(|t| t.as_str())
                    .map(str::to_owned)
            })
            .ok_or_else(|| AppError::internal("email without a template name"))?;
        let render = |part: &str| {
            ENV.get_template(&format!("{name}/{part}"))
                .and_then(|t| t.render(&context))
                .map_err(AppError::internal)
        };
        Ok(Rendered {
            subject: render("subject.txt")?.trim().to_owned(),
            text: render("body.txt")?,
            html: render("body.html")?,
        })
    }
}

/// Queue `email` to `to` in the caller's transaction: it is sent only if that
/// transaction commits.
pub async fn enqueue(
    conn: &impl ConnectionTrait,
    now: DateTime<Utc>,
    to: &str,
    email: Email,
) -> ApiResult<()> {
    let rendered = email.render()?;
    mail_queue::ActiveModel {
        recipient: Set(to.to_owned()),
        subject: Set(rendered.subject),
        text_body: Set(rendered.text),
        html_body: Set(rendered.html),
        attempts: Set(0),
        next_attempt_at: Set(now),
        sent_at: Set(None),
        last_error: Set(None),
        created_at: Set(now),
        ..Default::default()
    }
    .insert(conn)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_renders_and_html_escapes_untrusted_text() {
        let email = Email::RequestReceived {
            requester: "eve@example.com".into(),
            message: "<script>alert(1)</script>".into(),
            link: "http://x/y".into(),
        };
        let rendered = email.render().unwrap();
        assert!(
            rendered.html.contains("&lt;script&gt;"),
            "{}",
            rendered.html
        );
        assert!(!rendered.html.contains("<script>"));
        assert!(rendered.text.contains("<script>alert(1)</script>"));
        // Forces every template to parse.
        assert_eq!(ENV.templates().count(), TEMPLATES.len());
    }
}
