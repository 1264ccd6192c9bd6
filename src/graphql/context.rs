//! What a resolver starts from: the app state and the caller.
use async_graphql::Context;

use crate::{
    app::AppState,
    auth::Viewer,
    error::{ApiResult, AppError},
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

pub trait ContextExt {
    fn state(&self) -> &AppState;
    fn auth(&self) -> &Auth;
    /// The signed-in caller, or `UNAUTHENTICATED`.
    fn viewer(&self) -> ApiResult<&Viewer> {
        match self.auth() {
            Auth::Viewer(viewer) => Ok(viewer),
            _ => Err(AppError::Unauthenticated),
        }
    }
}

impl ContextExt for Context<'_> {
    fn state(&self) -> &AppState {
        self.data_unchecked::<AppState>()
    }

    fn auth(&self) -> &Auth {
        self.data_opt::<Auth>().unwrap_or(&Auth::Anonymous)
    }
}
