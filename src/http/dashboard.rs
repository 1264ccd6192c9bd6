//! `GET /`: the dashboard, a single-page app of plain JavaScript modules
//! (`assets/dashboard/`) that speaks only the public GraphQL API. Its page
//! gets the strict policy of every page ([`super::security::POLICY`]).
use axum::{
    http::header,
    response::{IntoResponse, Response},
};

pub const PAGE: &str = include_str!("../../assets/dashboard/index.html");

/// The dashboard's page; revalidated on every load so a new release's
/// modules are picked up at once.
pub async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        PAGE,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::assets::{find, referenced};

    /// Every file the page loads is served, and it runs no inline code.
    #[test]
    fn the_page_loads_only_served_assets() {
        let paths = referenced(PAGE, "");
        assert_eq!(paths.len(), 2, "{paths:?}");
        for path in paths {
            assert!(find(&path).is_some(), "{path} is served");
        }
        assert!(!PAGE.contains(" style="), "no inline style");
        assert!(!PAGE.contains(" on"), "no inline handler");
        assert_eq!(PAGE.matches("<script").count(), 1);
        assert!(
            PAGE.contains("<script type=\"module\" src=\"/assets/dashboard/app.js\"></script>")
        );
    }
}
