//! One error type for the whole API. Each variant maps to an `extensions.code`
//! of api.md. Resolvers return [`ApiResult`], whose error can only be an
//! [`AppError`]: a `?` on a database error becomes `INTERNAL`, which keeps
//! its cause for the log and is sent to the client without it, never SQL
//! text. The cause is logged once, where the error leaves the application
//! (the GraphQL response, an HTML page, a background task's loop).
use std::{error::Error as StdError, fmt, sync::Arc};

use async_graphql::ErrorExtensions as _;
use serde::Serialize;

pub type ApiResult<T> = Result<T, AppError>;

/// A device a key is active on, listed when a change is refused with `DEVICE_ACTIVE`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ActiveDevice {
    pub fingerprint: String,
    pub name: String,
    pub activated_at: String,
}

/// Deliberately not `Display`: async-graphql converts any `Display` type into
/// an error without extensions, and this type must only ever reach clients
/// through the conversion below, which sets `extensions.code`.
#[derive(Debug, Clone)]
pub enum AppError {
    Unauthenticated,
    Forbidden(&'static str),
    /// An API token called an operation outside its scopes (`FORBIDDEN`
    /// with `extensions.scope`; no scope when no token may call it).
    OutOfScope {
        operation: String,
        scope: Option<&'static str>,
    },
    NotFound(&'static str),
    Validation {
        field: &'static str,
        message: String,
    },
    Conflict(String),
    Expired(&'static str),
    RateLimited {
        retry_after_secs: u64,
    },
    /// Another attempt with this `Idempotency-Key` is still running
    /// (`CONFLICT` with `extensions.retryAfter`).
    InFlight {
        retry_after_secs: u64,
    },
    EmailNotVerified,
    DeviceActive {
        devices: Vec<ActiveDevice>,
    },
    /// Something went wrong on our side; the cause is for the log only.
    Internal(Cause),
}

/// Why an `INTERNAL` error happened, with the chain of errors under it.
/// Shared, so that [`AppError`] stays cheap to clone.
#[derive(Clone)]
pub struct Cause(Arc<dyn StdError + Send + Sync>);

impl fmt::Debug for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The error and each of its sources, separated by ": ".
impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(error) = source {
            write!(f, ": {error}")?;
            source = error.source();
        }
        Ok(())
    }
}

impl AppError {
    pub fn validation(field: &'static str, message: impl Into<String>) -> Self {
        AppError::Validation {
            field,
            message: message.into(),
        }
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        AppError::Conflict(message.into())
    }

    /// A `VALIDATION` error on `from` reported on the argument `to` instead
    /// (a rule shared by operations that name their arguments differently).
    pub fn on_field(self, from: &str, to: &'static str) -> Self {
        match self {
            AppError::Validation { field, message } if field == from => {
                AppError::Validation { field: to, message }
            }
            other => other,
        }
    }

    /// `INTERNAL` to the client; `cause` (an error or a message) is logged
    /// where the error leaves the application.
    pub fn internal(cause: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        AppError::Internal(Cause(Arc::from(cause.into())))
    }

    /// Log the cause of an `INTERNAL` error (other errors are the caller's,
    /// not ours, and are not logged).
    pub fn log(&self) {
        if let AppError::Internal(cause) = self {
            tracing::error!(error = %cause, "internal error");
        }
    }

    /// For operators' logs: the message, or for `INTERNAL` the cause.
    pub fn detail(&self) -> String {
        match self {
            AppError::Internal(cause) => cause.to_string(),
            other => other.message(),
        }
    }

    /// The message for people.
    pub fn message(&self) -> String {
        match self {
            AppError::Unauthenticated => "sign in first".into(),
            AppError::Forbidden(why) => (*why).into(),
            AppError::OutOfScope {
                operation,
                scope: Some(scope),
            } => format!("this API token lacks the {scope} scope that {operation} needs"),
            AppError::OutOfScope {
                operation,
                scope: None,
            } => format!("{operation} cannot be called with an API token"),
            AppError::NotFound(what) => format!("{what} not found"),
            AppError::Validation { message, .. } => message.clone(),
            AppError::Conflict(why) => why.clone(),
            AppError::Expired(why) => (*why).into(),
            AppError::RateLimited { retry_after_secs } => {
                format!("too many attempts, retry in {retry_after_secs} s")
            }
            AppError::InFlight { retry_after_secs } => format!(
                "a request with this Idempotency-Key is still running, retry in {retry_after_secs} s"
            ),
            AppError::EmailNotVerified => "verify your email address first".into(),
            AppError::DeviceActive { devices } => format!(
                "the key is active on {} device(s): deactivate them first",
                devices.len()
            ),
            AppError::Internal(_) => "internal error".into(),
        }
    }

    /// The `extensions.code` of api.md.
    pub fn code(&self) -> &'static str {
        match self {
            AppError::Unauthenticated => "UNAUTHENTICATED",
            AppError::Forbidden(_) | AppError::OutOfScope { .. } => "FORBIDDEN",
            AppError::NotFound(_) => "NOT_FOUND",
            AppError::Validation { .. } => "VALIDATION",
            AppError::Conflict(_) | AppError::InFlight { .. } => "CONFLICT",
            AppError::Expired(_) => "EXPIRED",
            AppError::RateLimited { .. } => "RATE_LIMITED",
            AppError::EmailNotVerified => "EMAIL_NOT_VERIFIED",
            AppError::DeviceActive { .. } => "DEVICE_ACTIVE",
            AppError::Internal(_) => "INTERNAL",
        }
    }
}

impl From<sea_orm::DbErr> for AppError {
    fn from(error: sea_orm::DbErr) -> Self {
        AppError::internal(error)
    }
}

impl From<sea_orm::TransactionError<AppError>> for AppError {
    fn from(error: sea_orm::TransactionError<AppError>) -> Self {
        match error {
            sea_orm::TransactionError::Connection(db) => db.into(),
            sea_orm::TransactionError::Transaction(app) => app,
        }
    }
}

/// The GraphQL boundary, where an error leaves the application: the cause
/// of an `INTERNAL` one is logged here, inside the request's span.
impl From<AppError> for async_graphql::Error {
    fn from(error: AppError) -> Self {
        error.log();
        async_graphql::Error::new(error.message()).extend_with(|_, ext| {
            ext.set("code", error.code());
            match &error {
                AppError::Validation { field, .. } => ext.set("field", *field),
                AppError::RateLimited { retry_after_secs }
                | AppError::InFlight { retry_after_secs } => {
                    ext.set("retryAfter", *retry_after_secs)
                }
                AppError::OutOfScope {
                    scope: Some(scope), ..
                } => ext.set("scope", *scope),
                AppError::DeviceActive { devices } => {
                    if let Ok(value) = async_graphql::to_value(devices) {
                        ext.set("devices", value);
                    }
                }
                _ => {}
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn an_internal_error_keeps_its_cause_chain_and_shows_none_of_it() {
        let error = AppError::internal(Outer(std::io::Error::other("disk on fire")));
        assert_eq!(error.detail(), "outer: disk on fire");
        assert_eq!(error.message(), "internal error");
        let graphql = async_graphql::Error::from(error);
        assert_eq!(graphql.message, "internal error");
        assert!(!format!("{graphql:?}").contains("disk on fire"));
    }
}
