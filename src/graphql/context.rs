//! What a resolver starts from: the app state and the caller.
use async_graphql::Context;

use crate::{
    auth::Viewer,
    client_ip::ClientAddr,
    domain::email,
    error::{ApiResult, AppError},
    rate_limits::LimitKey,
    state::AppState,
};

/// The caller of a request, decided once per request (HTTP) or connection (websocket).
#[derive(Debug, Clone)]
pub enum Auth {
    /// No token was sent.
    Anonymous,
    Viewer(Viewer),
    /// A token was sent but is unknown, expired or revoked.
    Invalid,
}

pub(crate) trait ContextExt {
    fn state(&self) -> &AppState;
    fn auth(&self) -> &Auth;
    /// The client's address, when the request came over the network.
    fn client_addr(&self) -> Option<std::net::IpAddr>;
    /// The signed-in caller, or `UNAUTHENTICATED`.
    fn viewer(&self) -> ApiResult<&Viewer> {
        match self.auth() {
            Auth::Viewer(viewer) => Ok(viewer),
            _ => Err(AppError::Unauthenticated),
        }
    }

    /// Count an email this request is about to cause to `recipient` against
    /// the mail limits: per signed-in account, per client address and per
    /// recipient address (`RATE_LIMITED` once one is spent). A malformed
    /// address counts against the others only; the rule refuses it anyway.
    async fn limit_mail(&self, recipient: &str) -> ApiResult<()> {
        let mut keys = Vec::with_capacity(3);
        if let Auth::Viewer(viewer) = self.auth() {
            keys.push(LimitKey::Account(viewer.account_id));
        }
        if let Some(ip) = self.client_addr() {
            keys.push(LimitKey::Client(ip));
        }
        if let Ok(recipient) = email::normalize(recipient, "email") {
            keys.push(LimitKey::Recipient(recipient));
        }
        self.state().limits.mail(&keys).await
    }
}

impl ContextExt for Context<'_> {
    fn state(&self) -> &AppState {
        self.data_unchecked::<AppState>()
    }

    fn auth(&self) -> &Auth {
        self.data_opt::<Auth>().unwrap_or(&Auth::Anonymous)
    }

    fn client_addr(&self) -> Option<std::net::IpAddr> {
        self.data_opt::<ClientAddr>().map(|ClientAddr(ip)| *ip)
    }
}
