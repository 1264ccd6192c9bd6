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
    domain::{accounts, orders, products, transfers},
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

/// The link in the verification email: a page with a button, so that a mail
/// scanner opening the link verifies nothing.
pub async fn verify_email_page(Query(form): Query<TokenForm>) -> Html<String> {
    if !well_formed_token(&form.token) {
        return pages::message("Invalid link", "This verification link is not valid.");
    }
    pages::render(&pages::Page {
        title: "Confirm your email address",
        form: Some("verify"),
        token: Some(&form.token),
        ..Default::default()
    })
}

pub async fn verify_email_submit(
    State(server): State<Server>,
    Form(form): Form<TokenForm>,
) -> Html<String> {
    match accounts::verify_email(&server.state.ctx, &form.token).await {
        Ok(_) => pages::message(
            "Email address confirmed",
            "You can close this page and sign in.",
        ),
        Err(error) => pages::message("Not confirmed", error_text(&error)),
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
    if transfers::effective_status(&transfer, server.state.ctx.clock.now()) != transfers::PENDING {
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
