//! The one place API tokens' scopes are enforced: the root fields of the
//! operation about to run (over HTTP and websockets alike, before
//! validation and execution) against what `auth::scopes::OPERATIONS` asks
//! for; a token that lacks it gets `FORBIDDEN` (`extensions.scope`).
//! Callers without a token pay one match; sessions are not concerned.
use async_graphql::{
    Pos, ServerError,
    parser::types::{ExecutableDocument, OperationType, SelectionSet},
};

use super::{Auth, operation};
use crate::{
    auth::scopes::{self, Refusal},
    error::AppError,
};

/// Refuse `operation` (the one `doc` runs, when there is one) when the
/// caller's token may not call one of its root fields.
pub fn check(
    doc: &ExecutableDocument,
    operation: Option<(OperationType, &SelectionSet)>,
    auth: &Auth,
) -> Result<(), ServerError> {
    let Auth::Viewer(viewer) = auth else {
        return Ok(());
    };
    let (Some(scopes), Some((ty, selection_set))) = (viewer.scopes, operation) else {
        return Ok(());
    };
    let root = operation::root_name(ty);
    for field in operation::root_fields(doc, selection_set) {
        if let Err(refusal) = scopes::check(scopes, root, field) {
            let error = AppError::OutOfScope {
                operation: field.to_owned(),
                scope: match refusal {
                    Refusal::Missing(scope) => Some(scope.as_str()),
                    Refusal::NotForTokens => None,
                },
            };
            let mut error = async_graphql::Error::from(error).into_server_error(Pos::default());
            error.locations.clear();
            return Err(error);
        }
    }
    Ok(())
}
