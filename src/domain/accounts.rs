//! Sign-up, email verification, sign-in and sign-out (product.md "Accounts").
use chrono::Duration;
use entity::{account, email_verification, session};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter,
    SqlErr,
};

use super::{Ctx, email};
use crate::{
    auth::{Viewer, password, token},
    db::begin_write,
    error::{ApiResult, AppError},
    mail::{self, Email},
};

/// How long the link in a verification email works.
pub const VERIFICATION_TTL: Duration = Duration::hours(48);

/// What a sign-up did, for the caller to finish after commit. The client is
/// told none of it: the answer is the same in every case.
#[derive(Debug)]
pub struct SignedUp {
    /// The address, normalised.
    pub email: String,
    /// A never-verified account with this address was taken over: its
    /// sessions were revoked (announce it so live subscriptions end).
    pub replaced_account: Option<i64>,
}

/// Sign up with `email`. Whether or not the address already has an account,
/// the work and the answer are alike (product.md: sign-up does not tell
/// whether an address is a customer):
/// - a new address gets an account and a verification email;
/// - a verified account's owner is emailed that someone tried, with a
///   password-reset link, and nothing changes;
/// - a never-verified account is replaced: whoever signed up first never
///   proved the address, so the newcomer's password wins, the old sessions
///   end and a new verification email goes out. Such an account holds
///   nothing (every action that creates rows needs a verified address), so
///   replacing it in place loses nobody anything.
pub async fn sign_up(ctx: &Ctx, email: &str, password: &str) -> ApiResult<SignedUp> {
    let email = email::normalize(email, "email")?;
    password::validate(password)?;
    // Hashed in every case, so that timing does not tell the cases apart.
    let password_hash = password::hash(password.to_owned()).await?;
    let now = ctx.clock.now();
    let txn = ctx.begin_write().await?;
    let existing = account::Entity::find()
        .filter(account::Column::Email.eq(&email))
        .one(&txn)
        .await?;
    let mut outcome = SignedUp {
        email: email.clone(),
        replaced_account: None,
    };
    match existing {
        Some(account) if account.email_verified_at.is_some() => {
            let (raw, _) = super::recovery::new_reset_token(&txn, account.id, now).await?;
            let reset_link = format!("{}/reset-password?token={raw}", ctx.public_url);
            mail::enqueue(
                &txn,
                now,
                &account.email,
                Email::SignUpAttempted { reset_link },
            )
            .await?;
        }
        Some(account) => {
            let account_id = account.id;
            let mut replaced: account::ActiveModel = account.into();
            replaced.password_hash = Set(password_hash);
            replaced.require_manual_approval = Set(false);
            replaced.allow_override_assignee = Set(false);
            replaced.notify_on_claim = Set(true);
            replaced.allow_assignee_organization = Set(false);
            let replaced = replaced.update(&txn).await?;
            super::recovery::revoke_sessions(&txn, account_id, None, now).await?;
            super::recovery::forget_pending_tokens(&txn, account_id).await?;
            send_verification(ctx, &txn, &replaced).await?;
            outcome.replaced_account = Some(account_id);
        }
        None => {
            let inserted = account::ActiveModel {
                email: Set(email.clone()),
                password_hash: Set(password_hash),
                email_verified_at: Set(None),
                role: Set(account::AccountRole::User),
                require_manual_approval: Set(false),
                allow_override_assignee: Set(false),
                notify_on_claim: Set(true),
                allow_assignee_organization: Set(false),
                created_at: Set(now),
                ..Default::default()
            }
            .insert(&txn)
            .await;
            let created = match inserted {
                Ok(created) => created,
                // Two sign-ups with one address at the same moment: the
                // constraint lets one in; the other answers alike and
                // changes nothing (its transaction is rolled back).
                Err(e) if matches!(e.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) => {
                    return Ok(outcome);
                }
                Err(e) => return Err(e.into()),
            };
            send_verification(ctx, &txn, &created).await?;
        }
    }
    txn.commit().await?;
    Ok(outcome)
}

/// Queue a verification email with a fresh single-use token for `account`.
async fn send_verification(
    ctx: &Ctx,
    conn: &impl sea_orm::ConnectionTrait,
    account: &account::Model,
) -> ApiResult<()> {
    let now = ctx.clock.now();
    let raw = new_verification_token(conn, account.id, &account.email, now).await?;
    let link = format!("{}/verify-email?token={raw}", ctx.public_url);
    mail::enqueue(
        conn,
        now,
        &account.email,
        Email::VerifyEmail { link, token: raw },
    )
    .await
}

/// Store a verification token proving `email` for `account_id`; returns the
/// raw token (for the email only).
pub(super) async fn new_verification_token(
    conn: &impl sea_orm::ConnectionTrait,
    account_id: i64,
    email: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> ApiResult<String> {
    let raw = token::generate();
    email_verification::ActiveModel {
        account_id: Set(account_id),
        email: Set(email.to_owned()),
        token_hash: Set(token::hash(&raw)),
        created_at: Set(now),
        expires_at: Set(now + VERIFICATION_TTL),
        used_at: Set(None),
        ..Default::default()
    }
    .insert(conn)
    .await?;
    Ok(raw)
}

/// A pending verification: the address it proves, and whether proving it
/// changes the account's email (else it verifies the current one).
pub struct PendingVerification {
    pub email: String,
    pub account_email: String,
    pub changes_email: bool,
}

/// The account signed in as `viewer` (gone if it was deleted meanwhile).
pub async fn of_viewer(
    conn: &impl sea_orm::ConnectionTrait,
    viewer: &Viewer,
) -> ApiResult<Option<account::Model>> {
    Ok(account::Entity::find_by_id(viewer.account_id)
        .one(conn)
        .await?)
}

/// What the link's page shows (no change made): `NOT_FOUND` for an unknown,
/// used or expired token, so the page only names addresses to holders of a
/// live link.
pub async fn find_verification(ctx: &Ctx, raw_token: &str) -> ApiResult<PendingVerification> {
    let (verification, account) = live_verification(&ctx.db, raw_token, ctx.clock.now())
        .await?
        .ok_or(AppError::NotFound("verification token"))?;
    Ok(PendingVerification {
        changes_email: verification.email != account.email,
        email: verification.email,
        account_email: account.email,
    })
}

async fn live_verification(
    conn: &impl sea_orm::ConnectionTrait,
    raw_token: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> ApiResult<Option<(email_verification::Model, account::Model)>> {
    let Some(verification) = email_verification::Entity::find()
        .filter(email_verification::Column::TokenHash.eq(token::hash(raw_token)))
        .one(conn)
        .await?
    else {
        return Ok(None);
    };
    if verification.used_at.is_some() || verification.expires_at <= now {
        return Ok(None);
    }
    let account = account::Entity::find_by_id(verification.account_id)
        .one(conn)
        .await?;
    Ok(account.map(|account| (verification, account)))
}

/// What a verification did, for the caller to finish after commit.
pub struct Verified {
    pub account: account::Model,
    /// The account's email changed (from this address): kept sessions
    /// elsewhere must be read again.
    pub email_changed_from: Option<String>,
}

/// Mark the address behind `raw_token` verified. Only the account the token
/// was sent for may use it (`FORBIDDEN` for another, so a link forwarded to
/// or intercepted by someone else proves nothing): product.md, only the
/// person who set the password verifies. The token works once, within
/// [`VERIFICATION_TTL`]. A token for another address than the account's is
/// an email change (`changeEmail`): the account's email becomes that
/// address now, unless another account took it meanwhile (`CONFLICT`).
pub async fn verify_email(ctx: &Ctx, viewer: &Viewer, raw_token: &str) -> ApiResult<Verified> {
    let now = ctx.clock.now();
    let txn = ctx.begin_write().await?;
    let Some(verification) = email_verification::Entity::find()
        .filter(email_verification::Column::TokenHash.eq(token::hash(raw_token)))
        .one(&txn)
        .await?
    else {
        return Err(AppError::NotFound("verification token"));
    };
    if verification.account_id != viewer.account_id {
        return Err(AppError::Forbidden(
            "this link verifies another account's address: sign in to that account",
        ));
    }
    if verification.used_at.is_some() {
        return Err(AppError::conflict(
            "this verification link was already used",
        ));
    }
    if verification.expires_at <= now {
        return Err(AppError::Expired(
            "this verification link has expired; sign in to get a new one",
        ));
    }
    let account = account::Entity::find_by_id(verification.account_id)
        .one(&txn)
        .await?
        .ok_or(AppError::NotFound("verification token"))?;
    let new_email = verification.email.clone();
    let mut used: email_verification::ActiveModel = verification.into();
    used.used_at = Set(Some(now));
    used.update(&txn).await?;
    let verified = if account.email != new_email {
        let old_email = account.email.clone();
        let account = super::recovery::apply_email_change(&txn, account, &new_email, now).await?;
        mail::enqueue(
            &txn,
            now,
            &old_email,
            Email::EmailChanged {
                new_email: new_email.clone(),
            },
        )
        .await?;
        receive_waiting_requests(&txn, &account).await?;
        Verified {
            account,
            email_changed_from: Some(old_email),
        }
    } else if account.email_verified_at.is_none() {
        let mut verified: account::ActiveModel = account.into();
        verified.email_verified_at = Set(Some(now));
        let account = verified.update(&txn).await?;
        receive_waiting_requests(&txn, &account).await?;
        Verified {
            account,
            email_changed_from: None,
        }
    } else {
        Verified {
            account,
            email_changed_from: None,
        }
    };
    txn.commit().await?;
    Ok(verified)
}

/// Requests sent to this address before anyone had proven it become the
/// newly verified account's events too, so its feed shows what waits for it.
pub(super) async fn receive_waiting_requests(
    conn: &impl sea_orm::ConnectionTrait,
    account: &account::Model,
) -> ApiResult<()> {
    use entity::{event, event_recipient, license_request};
    use sea_orm::{QuerySelect, sea_query::OnConflict};
    let waiting: Vec<i64> = event::Entity::find()
        .select_only()
        .column(event::Column::Id)
        .filter(event::Column::Kind.eq(crate::events::EventKind::RequestCreated))
        .filter(
            event::Column::RequestId.in_subquery(
                sea_orm::sea_query::Query::select()
                    .column(license_request::Column::Id)
                    .from(license_request::Entity)
                    .and_where(license_request::Column::BuyerEmail.eq(&account.email))
                    .and_where(
                        license_request::Column::Status.eq(super::expiry::ApprovalStatus::Pending),
                    )
                    .to_owned(),
            ),
        )
        .into_tuple()
        .all(conn)
        .await?;
    if waiting.is_empty() {
        return Ok(());
    }
    event_recipient::Entity::insert_many(waiting.into_iter().map(|event_id| {
        event_recipient::ActiveModel {
            account_id: Set(account.id),
            event_id: Set(event_id),
        }
    }))
    .on_conflict(
        OnConflict::columns([
            event_recipient::Column::AccountId,
            event_recipient::Column::EventId,
        ])
        .do_nothing()
        .to_owned(),
    )
    .exec_without_returning(conn)
    .await?;
    Ok(())
}

/// Resend the verification email to a signed-in account that is not verified yet.
pub async fn resend_verification(ctx: &Ctx, viewer: &Viewer) -> ApiResult<()> {
    if viewer.email_verified {
        return Err(AppError::conflict("this email address is already verified"));
    }
    let txn = ctx.begin_write().await?;
    let account = account::Entity::find_by_id(viewer.account_id)
        .one(&txn)
        .await?
        .ok_or(AppError::Unauthenticated)?;
    send_verification(ctx, &txn, &account).await?;
    txn.commit().await?;
    Ok(())
}

/// The account whose password this is. Unknown email, malformed email and
/// wrong password get one and the same answer (`UNAUTHENTICATED`), after the
/// same work; a disabled account with the right password is `FORBIDDEN`.
pub async fn check_password(ctx: &Ctx, email: &str, password: &str) -> ApiResult<account::Model> {
    let account = match email::normalize(email, "email") {
        Ok(email) => {
            account::Entity::find()
                .filter(account::Column::Email.eq(email))
                .one(&ctx.db)
                .await?
        }
        Err(_) => None,
    };
    let stored = account.as_ref().map(|a| a.password_hash.clone());
    let password_ok = password.len() <= 4 * password::MAX_LEN
        && password::verify(password.to_owned(), stored).await?;
    match (account, password_ok) {
        // Told only to who knows the password.
        (Some(account), true) if account.disabled_at.is_some() => Err(AppError::Forbidden(
            "this account is disabled; contact support",
        )),
        (Some(account), true) => Ok(account),
        _ => Err(AppError::Unauthenticated),
    }
}

/// Where a session was opened from, as the person will recognise it in
/// `me { sessions }`.
#[derive(Debug, Clone, Default)]
pub struct SessionOrigin {
    pub user_agent: Option<String>,
    pub client_addr: Option<std::net::IpAddr>,
}

/// Longest `User-Agent` kept with a session (the column's length).
const USER_AGENT_MAX: usize = 256;

/// Check the password and open a session.
pub async fn sign_in(
    ctx: &Ctx,
    email: &str,
    password: &str,
    session_ttl: Duration,
    origin: SessionOrigin,
) -> ApiResult<(String, account::Model)> {
    let account = check_password(ctx, email, password).await?;
    let raw = token::generate();
    let now = ctx.clock.now();
    // Printable characters only, cut to the column: it is shown back to people.
    let user_agent = origin
        .user_agent
        .map(|ua| {
            ua.chars()
                .filter(|c| !c.is_control())
                .take(USER_AGENT_MAX)
                .collect::<String>()
        })
        .filter(|ua| !ua.is_empty());
    session::ActiveModel {
        account_id: Set(account.id),
        token_hash: Set(token::hash(&raw)),
        created_at: Set(now),
        expires_at: Set(now + session_ttl),
        revoked_at: Set(None),
        user_agent: Set(user_agent),
        client_addr: Set(origin.client_addr.map(|ip| ip.to_string())),
        ..Default::default()
    }
    .insert(&ctx.db)
    .await?;
    Ok((raw, account))
}

/// Revoke the caller's session: its token never authenticates again.
pub async fn sign_out(ctx: &Ctx, viewer: &Viewer) -> ApiResult<()> {
    let txn = ctx.begin_write().await?;
    session::Entity::update_many()
        .col_expr(session::Column::RevokedAt, ctx.clock.now().into())
        .filter(session::Column::Id.eq(viewer.session_id))
        .filter(session::Column::RevokedAt.is_null())
        .exec(&txn)
        .await?;
    txn.commit().await?;
    Ok(())
}

/// Make the account with `email` an administrator (the `grant-admin` command).
pub async fn grant_admin(db: &DatabaseConnection, email: &str) -> ApiResult<account::Model> {
    let email = email::normalize(email, "email")?;
    let txn = begin_write(db).await?;
    let account = account::Entity::find()
        .filter(account::Column::Email.eq(&email))
        .one(&txn)
        .await?
        .ok_or(AppError::NotFound("account"))?;
    let mut admin: account::ActiveModel = account.into();
    admin.role = Set(account::AccountRole::Admin);
    let account = admin.update(&txn).await?;
    txn.commit().await?;
    Ok(account)
}
