//! One error type for the whole API. Each variant maps to an `extensions.code`
//! of api.md. Resolvers return [`ApiResult`], whose error can only be an
//! [`AppError`]: a `?` on a database error becomes `INTERNAL` (logged with its
//! detail here, sent to the client without it), never SQL text.
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
    EmailNotVerified,
    DeviceActive {
        devices: Vec<ActiveDevice>,
    },
    /// Something went wrong on our side; the detail was logged where it happened.
    Internal,
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

    /// Log `detail` for operators and answer `INTERNAL` to the client.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "internal error");
        AppError::Internal
    }

    /// The message for people.
    pub fn message(&self) -> String {
        match self {
            AppError::Unauthenticated => "sign in first".into(),
            AppError::Forbidden(why) => (*why).into(),
            AppError::NotFound(what) => format!("{what} not found"),
            AppError::Validation { message, .. } => message.clone(),
            AppError::Conflict(why) => why.clone(),
            AppError::Expired(why) => (*why).into(),
            AppError::RateLimited { retry_after_secs } => {
                format!("too many attempts, retry in {retry_after_secs} s")
            }
            AppError::EmailNotVerified => "verify your email address first".into(),
            AppError::DeviceActive { devices } => format!(
                "the key is active on {} device(s): deactivate them first",
                devices.len()
            ),
            AppError::Internal => "internal error".into(),
        }
    }

    /// The `extensions.code` of api.md.
    pub fn code(&self) -> &'static str {
        match self {
            AppError::Unauthenticated => "UNAUTHENTICATED",
            AppError::Forbidden(_) => "FORBIDDEN",
            AppError::NotFound(_) => "NOT_FOUND",
            AppError::Validation { .. } => "VALIDATION",
            AppError::Conflict(_) => "CONFLICT",
            AppError::Expired(_) => "EXPIRED",
            AppError::RateLimited { .. } => "RATE_LIMITED",
            AppError::EmailNotVerified => "EMAIL_NOT_VERIFIED",
            AppError::DeviceActive { .. } => "DEVICE_ACTIVE",
            AppError::Internal => "INTERNAL",
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

impl From<AppError> for async_graphql::Error {
    fn from(error: AppError) -> Self {
        async_graphql::Error::new(error.message()).extend_with(|_, ext| {
            ext.set("code", error.code());
            match &error {
                AppError::Validation { field, .. } => ext.set("field", *field),
                AppError::RateLimited { retry_after_secs } => {
                    ext.set("retryAfter", *retry_after_secs)
                }
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
