//! GraphiQL's page; its files are compiled into the binary (`assets.rs`):
//! no CDN, so GraphiQL works offline and under a policy that allows scripts
//! from keyledger's own origin only (assets/graphiql/README.md).
use axum::{
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
};

use super::security;

const PAGE: &str = include_str!("../../assets/graphiql/index.html");

/// The GraphiQL page, with its own policy: GraphiQL and CodeMirror add
/// `<style>` elements at run time, so inline styles are allowed here (and
/// only here); scripts still come from keyledger's origin only.
pub async fn page() -> Response {
    let mut response = ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], PAGE).into_response();
    response.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(security::GRAPHIQL_POLICY),
    );
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::assets::{GRAPHIQL_VERSION, find as asset};

    /// Every file the page loads is served.
    #[test]
    fn the_page_loads_only_served_assets() {
        let mut count = 0;
        for part in PAGE.split(['"', '\'']) {
            if let Some(path) = part.strip_prefix("/assets/") {
                assert!(asset(path).is_some(), "{path} is served");
                assert!(
                    !path.contains("graphiql-")
                        || !path.contains('/')
                        || path.contains(GRAPHIQL_VERSION),
                    "{path} names the vendored version"
                );
                count += 1;
            }
        }
        assert_eq!(count, 6);
    }
}
