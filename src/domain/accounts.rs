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

/// Create an account and send the verification email.
pub async fn sign_up(ctx: &Ctx, email: &str, password: &str) -> ApiResult<account::Model> {
    let email = email::normalize(email, "email")?;
    password::validate(password)?;
    let password_hash = password::hash(password.to_owned()).await?;
    let now = ctx.clock.now();
    let txn = begin_write(&ctx.db).await?;
    if account::Entity::find()
        .filter(account::Column::Email.eq(&email))
        .one(&txn)
        .await?
        .is_some()
    {
        return Err(email_taken());
    }
    let created = account::ActiveModel {
        email: Set(email.clone()),
        password_hash: Set(password_hash),
        email_verified_at: Set(None),
        role: Set("USER".into()),
        require_manual_approval: Set(false),
        allow_override_assignee: Set(false),
        notify_on_claim: Set(true),
        allow_assignee_organization: Set(false),
        created_at: Set(now),
        ..Default::default()
    }
    .insert(&txn)
    .await
    .map_err(|e| match e.sql_err() {
        // Two sign-ups with one address at the same moment: the constraint decides.
        Some(SqlErr::UniqueConstraintViolation(_)) => email_taken(),
        _ => e.into(),
    })?;
    send_verification(ctx, &txn, &created).await?;
    txn.commit().await?;
    ctx.committed();
    Ok(created)
}

fn email_taken() -> AppError {
    AppError::conflict("an account with this email already exists")
}

/// Queue a verification email with a fresh single-use token for `account`.
async fn send_verification(
    ctx: &Ctx,
    conn: &impl sea_orm::ConnectionTrait,
    account: &account::Model,
) -> ApiResult<()> {
    let now = ctx.clock.now();
    let raw = token::generate();
    email_verification::ActiveModel {
        account_id: Set(account.id),
        email: Set(account.email.clone()),
        token_hash: Set(token::hash(&raw)),
        created_at: Set(now),
        expires_at: Set(now + VERIFICATION_TTL),
        used_at: Set(None),
        ..Default::default()
    }
    .insert(conn)
    .await?;
    let link = format!("{}/verify-email?token={raw}", ctx.public_url);
    mail::enqueue(
        conn,
        now,
        &account.email,
        Email::VerifyEmail { link, token: raw },
    )
    .await
}

/// Mark the address behind `raw_token` verified. The token works once, within
/// [`VERIFICATION_TTL`], and only for the address it was sent to.
pub async fn verify_email(ctx: &Ctx, raw_token: &str) -> ApiResult<account::Model> {
    let now = ctx.clock.now();
    let txn = begin_write(&ctx.db).await?;
    let Some(verification) = email_verification::Entity::find()
        .filter(email_verification::Column::TokenHash.eq(token::hash(raw_token)))
        .one(&txn)
        .await?
    else {
        return Err(AppError::NotFound("verification token"));
    };
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
    if account.email != verification.email {
        return Err(AppError::NotFound("verification token"));
    }
    let mut used: email_verification::ActiveModel = verification.into();
    used.used_at = Set(Some(now));
    used.update(&txn).await?;
    let account = if account.email_verified_at.is_none() {
        let mut verified: account::ActiveModel = account.into();
        verified.email_verified_at = Set(Some(now));
        let account = verified.update(&txn).await?;
        receive_waiting_requests(&txn, &account).await?;
        account
    } else {
        account
    };
    txn.commit().await?;
    Ok(account)
}

/// Requests sent to this address before anyone had proven it become the
/// newly verified account's events too, so its feed shows what waits for it.
async fn receive_waiting_requests(
    conn: &impl sea_orm::ConnectionTrait,
    account: &account::Model,
) -> ApiResult<()> {
    use entity::{event, event_recipient, license_request};
    use sea_orm::{QuerySelect, sea_query::OnConflict};
    let waiting: Vec<i64> = event::Entity::find()
        .select_only()
        .column(event::Column::Id)
        .filter(event::Column::Kind.eq(crate::events::EventKind::RequestCreated.as_str()))
        .filter(
            event::Column::RequestId.in_subquery(
                sea_orm::sea_query::Query::select()
                    .column(license_request::Column::Id)
                    .from(license_request::Entity)
                    .and_where(license_request::Column::BuyerEmail.eq(&account.email))
                    .and_where(license_request::Column::Status.eq(super::expiry::PENDING))
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
    let txn = begin_write(&ctx.db).await?;
    let account = account::Entity::find_by_id(viewer.account_id)
        .one(&txn)
        .await?
        .ok_or(AppError::Unauthenticated)?;
    send_verification(ctx, &txn, &account).await?;
    txn.commit().await?;
    ctx.committed();
    Ok(())
}

/// The account whose password this is. Unknown email, malformed email and
/// wrong password get one and the same answer (`UNAUTHENTICATED`), after the
/// same work.
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
        (Some(account), true) => Ok(account),
        _ => Err(AppError::Unauthenticated),
    }
}

/// Check the password and open a session.
pub async fn sign_in(
    ctx: &Ctx,
    email: &str,
    password: &str,
    session_ttl: Duration,
) -> ApiResult<(String, account::Model)> {
    let account = check_password(ctx, email, password).await?;
    let raw = token::generate();
    let now = ctx.clock.now();
    session::ActiveModel {
        account_id: Set(account.id),
        token_hash: Set(token::hash(&raw)),
        created_at: Set(now),
        expires_at: Set(now + session_ttl),
        revoked_at: Set(None),
        ..Default::default()
    }
    .insert(&ctx.db)
    .await?;
    Ok((raw, account))
}

/// Revoke the caller's session: its token never authenticates again.
pub async fn sign_out(ctx: &Ctx, viewer: &Viewer) -> ApiResult<()> {
    session::Entity::update_many()
        .col_expr(session::Column::RevokedAt, ctx.clock.now().into())
        .filter(session::Column::Id.eq(viewer.session_id))
        .exec(&ctx.db)
        .await?;
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
    admin.role = Set("ADMIN".into());
    let account = admin.update(&txn).await?;
    txn.commit().await?;
    Ok(account)
}
