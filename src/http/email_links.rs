//! The pages links in emails open: they explain and ask for an explicit
//! action, so a mail scanner opening a link changes nothing.
use axum::{
    Form,
    extract::{Query, State},
    http::{StatusCode, header},
    response::{Html, IntoResponse, Response},
};
use serde::Deserialize;

use super::Server;
use crate::{
    auth::Viewer,
    client_ip::ClientAddr,
    domain::{accounts, orders, products, recovery, transfers},
    error::AppError,
    pages,
};

#[derive(Deserialize)]
pub struct TokenForm {
    token: String,
}

/// Tokens are 64 hex digits; anything else is not echoed into a page.
fn well_formed_token(token: &str) -> bool {
    token.len() == 64 && token.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The link in a verification email: a page naming the address and asking
/// for the account's password, so that a mail scanner opening the link
/// verifies nothing, and only who set the password verifies (product.md).
pub async fn verify_email_page(
    State(server): State<Server>,
    Query(form): Query<TokenForm>,
) -> Html<String> {
    let invalid = || pages::message("Invalid link", "This verification link is not valid.");
    if !well_formed_token(&form.token) {
        return invalid();
    }
    let Ok(pending) = accounts::find_verification(&server.state.ctx, &form.token).await else {
        return pages::message(
            "Invalid link",
            "This verification link is not valid, was already used, or has expired.",
        );
    };
    pages::render(&pages::Page {
        title: if pending.changes_email {
            "Confirm your new email address"
        } else {
            "Confirm your email address"
        },
        form: Some("verify"),
        token: Some(&form.token),
        to: Some(&pending.email),
        from: pending
            .changes_email
            .then_some(pending.account_email.as_str()),
        ..Default::default()
    })
}

#[derive(Deserialize)]
pub struct PasswordForm {
    token: String,
    password: String,
}

/// The page's answer for a refused password check (429 past the limits).
fn refused_password(error: AppError) -> Response {
    match error {
        AppError::RateLimited { retry_after_secs } => {
            let page = pages::message(
                "Not confirmed",
                &format!("Too many attempts. Retry in {retry_after_secs} seconds."),
            );
            (
                StatusCode::TOO_MANY_REQUESTS,
                [(header::RETRY_AFTER, retry_after_secs.to_string())],
                page,
            )
                .into_response()
        }
        AppError::Unauthenticated => {
            pages::message("Not confirmed", "Wrong password.").into_response()
        }
        error => pages::message("Not confirmed", error_text(&error)).into_response(),
    }
}

/// The explicit confirmation: the account's password, then the verification.
/// Wrong passwords count against the same limits as `signIn`'s.
pub async fn verify_email_submit(
    State(server): State<Server>,
    ClientAddr(client): ClientAddr,
    Form(form): Form<PasswordForm>,
) -> Response {
    let ctx = &server.state.ctx;
    let invalid = || pages::message("Not confirmed", "This link is not valid.").into_response();
    if !well_formed_token(&form.token) {
        return invalid();
    }
    let pending = match accounts::find_verification(ctx, &form.token).await {
        Ok(pending) => pending,
        Err(AppError::NotFound(_)) => return invalid(),
        Err(error) => return pages::message("Not confirmed", error_text(&error)).into_response(),
    };
    let email = &pending.account_email;
    let checked = server.state.limits.passwords.check(
        email,
        Some(client),
        accounts::check_password(ctx, email, &form.password),
    );
    let viewer = match checked.await {
        Ok(account) => Viewer::of(&account),
        Err(error) => return refused_password(error),
    };
    match accounts::verify_email(ctx, &viewer, &form.token).await {
        Ok(verified) => {
            if verified.email_changed_from.is_some() {
                server
                    .state
                    .account_sessions_revoked(verified.account.id)
                    .await;
            }
            pages::message(
                "Email address confirmed",
                &format!(
                    "{} is confirmed. You can close this page.",
                    verified.account.email
                ),
            )
            .into_response()
        }
        Err(error) => pages::message("Not confirmed", error_text(&error)).into_response(),
    }
}

/// The link in a password-reset email: a page naming the address with a
/// new-password form. Opening it changes nothing.
pub async fn reset_password_page(
    State(server): State<Server>,
    Query(form): Query<TokenForm>,
) -> Html<String> {
    if !well_formed_token(&form.token) {
        return pages::message("Invalid link", "This password reset link is not valid.");
    }
    match recovery::reset_email(&server.state.ctx, &form.token).await {
        Ok(email) => pages::render(&pages::Page {
            title: "Choose a new password",
            form: Some("reset"),
            token: Some(&form.token),
            to: Some(&email),
            ..Default::default()
        }),
        Err(AppError::Expired(_)) => pages::message(
            "Link expired",
            "This password reset link has expired. Ask for a new one.",
        ),
        Err(_) => pages::message(
            "Invalid link",
            "This password reset link is not valid or was already used.",
        ),
    }
}

/// Set the new password: every session of the account ends.
pub async fn reset_password_submit(
    State(server): State<Server>,
    Form(form): Form<PasswordForm>,
) -> Html<String> {
    if !well_formed_token(&form.token) {
        return pages::message("Not changed", "This link is not valid.");
    }
    match recovery::reset_password(&server.state.ctx, &form.token, &form.password).await {
        Ok(account_id) => {
            server.state.account_sessions_revoked(account_id).await;
            pages::message(
                "Password changed",
                "Your password is changed and every session was signed out. Sign in with the new password.",
            )
        }
        Err(AppError::Validation { message, .. }) => pages::message("Not changed", &message),
        Err(error) => pages::message("Not changed", error_text(&error)),
    }
}

/// The link in the new owner's transfer email: explains the transfer and asks
/// for an explicit, signed-in confirmation. Opening it changes nothing.
pub async fn transfer_page(
    State(server): State<Server>,
    Query(form): Query<TokenForm>,
) -> Html<String> {
    let invalid = || pages::message("Invalid link", "This transfer link is not valid.");
    if !well_formed_token(&form.token) {
        return invalid();
    }
    let Ok((transfer, order)) = transfers::find_by_token(&server.state.ctx.db, &form.token).await
    else {
        return invalid();
    };
    if transfers::effective_status(&transfer, server.state.ctx.clock.now())
        != transfers::TransferStatus::Pending
    {
        return pages::message(
            "Transfer closed",
            "This transfer was already accepted, cancelled, or has expired.",
        );
    }
    let from = transfers::from_email(&server.state.ctx.db, &transfer)
        .await
        .unwrap_or_default();
    let number = orders::number(order.id);
    let product = products::display_name(&server.state.ctx.db, &order.product)
        .await
        .unwrap_or_else(|_| order.product.clone());
    pages::render(&pages::Page {
        title: "Confirm the order transfer",
        form: Some("transfer"),
        token: Some(&form.token),
        from: Some(&from),
        to: Some(&transfer.to_email),
        order: Some(&number),
        product: Some(&product),
        ..Default::default()
    })
}

#[derive(Deserialize)]
pub struct TransferForm {
    token: String,
    email: String,
    password: String,
}

/// The explicit confirmation: signs in with the addressee's credentials and
/// accepts. Wrong passwords count against the same limits as `signIn`'s;
/// past them the page says when to retry (429 with `Retry-After`).
pub async fn transfer_submit(
    State(server): State<Server>,
    ClientAddr(client): ClientAddr,
    Form(form): Form<TransferForm>,
) -> Response {
    let ctx = &server.state.ctx;
    let checked = server.state.limits.passwords.check(
        &form.email,
        Some(client),
        accounts::check_password(ctx, &form.email, &form.password),
    );
    let viewer = match checked.await {
        Ok(account) => Viewer::of(&account),
        Err(AppError::RateLimited { retry_after_secs }) => {
            let page = pages::message(
                "Not confirmed",
                &format!("Too many attempts. Retry in {retry_after_secs} seconds."),
            );
            return (
                StatusCode::TOO_MANY_REQUESTS,
                [(header::RETRY_AFTER, retry_after_secs.to_string())],
                page,
            )
                .into_response();
        }
        Err(_) => {
            return pages::message("Not confirmed", "Wrong email or password.").into_response();
        }
    };
    let page = match transfers::accept(ctx, &viewer, &form.token).await {
        Ok(_) => pages::message(
            "Transfer confirmed",
            "The order and its keys are now yours.",
        ),
        Err(AppError::Forbidden(_)) => pages::message(
            "Not confirmed",
            "This transfer is addressed to another email address.",
        ),
        Err(AppError::EmailNotVerified) => {
            pages::message("Not confirmed", "Verify your email address first.")
        }
        Err(error) => pages::message("Not confirmed", error_text(&error)),
    };
    page.into_response()
}

/// What a page says of a refusal; the cause of an internal error is logged
/// here, where it leaves the application.
fn error_text(error: &AppError) -> &'static str {
    error.log();
    match error {
        AppError::Expired(_) => "This link has expired.",
        AppError::Conflict(_) => "This link was already used or the request was cancelled.",
        AppError::DeviceActive { .. } => {
            "Keys of this order are active on devices: they must be deactivated first."
        }
        AppError::Internal(_) => "Something went wrong on our side. Try again later.",
        _ => "This link is not valid.",
    }
}
