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
    /// The assignee's key got a new string (`reissueLicense`).
    LicenseReissued {
        product: String,
        key: String,
        /// When the previous string stops working; `None`: it already has.
        previous_valid_until: Option<String>,
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
    /// To the owner of a verified address someone signed up with.
    SignUpAttempted {
        reset_link: String,
    },
    PasswordReset {
        link: String,
        token: String,
    },
    /// To the new address of an email change.
    ConfirmEmailChange {
        link: String,
        token: String,
        old_email: String,
    },
    /// To the former address, once an email change took effect.
    EmailChanged {
        new_email: String,
    },
    /// An order was refunded: to its owner (with the order's number) and to
    /// its keys' assignees (without).
    OrderRefunded {
        order_number: Option<String>,
        product: String,
    },
    /// To every administrator: an endpoint failed for 5 days and was disabled.
    WebhookEndpointDisabled {
        url: String,
        failing_since: String,
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
    "license_reissued",
    "request_received",
    "request_decided",
    "transfer_started_owner",
    "transfer_started_new_owner",
    "sign_up_attempted",
    "password_reset",
    "confirm_email_change",
    "email_changed",
    "order_refunded",
    "webhook_endpoint_disabled",
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

/// [`enqueue`] of one `email` to each of `recipients`, rendered once and
/// inserted in batches (an order's assignees may be many).
pub async fn enqueue_many(
    conn: &impl ConnectionTrait,
    now: DateTime<Utc>,
    recipients: &[String],
    email: Email,
) -> ApiResult<()> {
    use sea_orm::EntityTrait;
    /// Rows per statement: 9 values each, well under SQLite's 32,766 parameters.
    const BATCH: usize = 1000;
    let rendered = email.render()?;
    for batch in recipients.chunks(BATCH) {
        mail_queue::Entity::insert_many(batch.iter().map(|to| mail_queue::ActiveModel {
            recipient: Set(to.clone()),
            subject: Set(rendered.subject.clone()),
            text_body: Set(rendered.text.clone()),
            html_body: Set(rendered.html.clone()),
            attempts: Set(0),
            next_attempt_at: Set(now),
            sent_at: Set(None),
            last_error: Set(None),
            created_at: Set(now),
            ..Default::default()
        }))
        .exec_without_returning(conn)
        .await?;
    }
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

    /// The values an email must show, in its subject or body: every
    /// variable, its link and token included (`approved`, `pending` choose
    /// wording; a declined request has no key to show). Exhaustive, so a new
    /// email cannot be added without saying what it must carry.
    fn must_show(email: &Email) -> Vec<&str> {
        match email {
            Email::VerifyEmail { link, token } => vec![link, token],
            Email::LicenseAssigned { product, key, link } => vec![product, key, link],
            Email::LicenseUnassigned { product, key }
            | Email::AssigneeReplaced { product, key } => {
                vec![product, key]
            }
            Email::ClaimReceived {
                product,
                key,
                claimer,
                pending,
                link,
            } => {
                let mut shown = vec![product.as_str(), key, claimer];
                if *pending {
                    shown.push(link);
                }
                shown
            }
            Email::ClaimDecided { product, key, .. } => vec![product, key],
            Email::LicenseReissued {
                product,
                key,
                previous_valid_until,
            } => {
                let mut shown = vec![product.as_str(), key];
                shown.extend(previous_valid_until.as_deref());
                shown
            }
            Email::RequestReceived {
                requester,
                message,
                link,
            } => vec![requester, message, link],
            Email::RequestDecided { buyer, key, .. } => {
                let mut shown = vec![buyer.as_str()];
                shown.extend(key.as_deref());
                shown
            }
            Email::TransferStartedOwner {
                order_number,
                product,
                new_owner,
            } => vec![order_number, product, new_owner],
            Email::TransferStartedNewOwner {
                order_number,
                product,
                old_owner,
                link,
                expires_at,
            } => vec![order_number, product, old_owner, link, expires_at],
            Email::SignUpAttempted { reset_link } => vec![reset_link],
            Email::PasswordReset { link, token } => vec![link, token],
            Email::ConfirmEmailChange {
                link,
                token,
                old_email,
            } => vec![link, token, old_email],
            Email::EmailChanged { new_email } => vec![new_email],
            Email::OrderRefunded {
                order_number,
                product,
            } => {
                let mut shown = vec![product.as_str()];
                shown.extend(order_number.as_deref());
                shown
            }
            Email::WebhookEndpointDisabled { url, failing_since } => vec![url, failing_since],
        }
    }

    /// `value` as the HTML templates' auto-escaping writes it.
    fn html_escaped(value: &str) -> String {
        value
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
            .replace('\'', "&#x27;")
            .replace('/', "&#x2f;")
    }

    fn samples() -> Vec<Email> {
        let token = "ab".repeat(32);
        let product = || "Keyledger Pro".to_owned();
        let key = || "KL-ABCD-EFGH-JKLM-NPQR".to_owned();
        vec![
            Email::WebhookEndpointDisabled {
                url: "https://hooks.example.com/kl".into(),
                failing_since: "2026-12-01 10:00 UTC".into(),
            },
            Email::VerifyEmail {
                link: format!("http://kl.test/verify-email?token={token}"),
                token: token.clone(),
            },
            Email::LicenseAssigned {
                product: product(),
                key: key(),
                link: "http://kl.test/graphql".into(),
            },
            Email::LicenseUnassigned {
                product: product(),
                key: key(),
            },
            Email::ClaimReceived {
                product: product(),
                key: key(),
                claimer: "claimer@example.com".into(),
                pending: true,
                link: "http://kl.test/graphql".into(),
            },
            Email::ClaimReceived {
                product: product(),
                key: key(),
                claimer: "claimer@example.com".into(),
                pending: false,
                link: "http://kl.test/graphql".into(),
            },
            Email::ClaimDecided {
                product: product(),
                key: key(),
                approved: true,
            },
            Email::ClaimDecided {
                product: product(),
                key: key(),
                approved: false,
            },
            Email::AssigneeReplaced {
                product: product(),
                key: key(),
            },
            Email::LicenseReissued {
                product: product(),
                key: key(),
                previous_valid_until: Some("2026-12-09 12:00 UTC".into()),
            },
            Email::LicenseReissued {
                product: product(),
                key: key(),
                previous_valid_until: None,
            },
            Email::RequestReceived {
                requester: "requester@example.com".into(),
                message: "May I have one for the new laptop".into(),
                link: "http://kl.test/graphql".into(),
            },
            Email::RequestDecided {
                buyer: "buyer@example.com".into(),
                approved: true,
                key: Some(key()),
            },
            Email::RequestDecided {
                buyer: "buyer@example.com".into(),
                approved: false,
                key: None,
            },
            Email::TransferStartedOwner {
                order_number: "KL-2026-000042".into(),
                product: product(),
                new_owner: "new@example.com".into(),
            },
            Email::TransferStartedNewOwner {
                order_number: "KL-2026-000042".into(),
                product: product(),
                old_owner: "old@example.com".into(),
                link: format!("http://kl.test/transfers/confirm?token={token}"),
                expires_at: "2026-12-09 12:00 UTC".into(),
            },
            Email::SignUpAttempted {
                reset_link: format!("http://kl.test/reset-password?token={token}"),
            },
            Email::PasswordReset {
                link: format!("http://kl.test/reset-password?token={token}"),
                token: token.clone(),
            },
            Email::ConfirmEmailChange {
                link: format!("http://kl.test/verify-email?token={token}"),
                token: token.clone(),
                old_email: "old@example.com".into(),
            },
            Email::EmailChanged {
                new_email: "new@example.com".into(),
            },
            Email::OrderRefunded {
                order_number: Some("KL-000042".into()),
                product: product(),
            },
            Email::OrderRefunded {
                order_number: None,
                product: product(),
            },
        ]
    }

    #[test]
    fn every_email_renders_a_subject_and_bodies_carrying_its_values() {
        let mut rendered_templates = std::collections::BTreeSet::new();
        let mut subjects = std::collections::BTreeSet::new();
        for email in samples() {
            let rendered = email
                .render()
                .unwrap_or_else(|e| panic!("{email:?} renders: {}", e.message()));
            let name = serde_json::to_value(&email).unwrap()["template"]
                .as_str()
                .unwrap()
                .to_owned();
            let subject = &rendered.subject;
            assert!(!subject.is_empty(), "{name}: empty subject");
            assert!(!subject.contains('\n'), "{name}: subject on one line");
            subjects.insert(subject.clone());
            for (part, text) in [("text", &rendered.text), ("html", &rendered.html)] {
                assert!(!text.trim().is_empty(), "{name}: empty {part} body");
                for leftover in ["{{", "}}", "{%", "%}"] {
                    assert!(!text.contains(leftover), "{name} {part}: {text}");
                }
                for value in must_show(&email) {
                    let shown = match part {
                        "html" => html_escaped(value),
                        _ => value.to_owned(),
                    };
                    assert!(
                        text.contains(&shown) || subject.contains(value),
                        "{name} {part} does not show {value:?}:\n{subject}\n{text}"
                    );
                }
            }
            assert!(rendered.html.contains("<html"), "{name}: {}", rendered.html);
            rendered_templates.insert(name);
        }
        // Both wordings of the emails that have two.
        assert!(subjects.contains("Your claim was approved"), "{subjects:?}");
        assert!(subjects.contains("Your claim was declined"), "{subjects:?}");
        assert!(subjects.contains("A claim waits for your approval"));
        assert!(subjects.contains("One of your keys was claimed"));
        let all: std::collections::BTreeSet<String> = TEMPLATES
            .iter()
            .map(|(name, _)| name.split('/').next().unwrap().to_owned())
            .collect();
        assert_eq!(rendered_templates, all, "every template is rendered");
    }
}
