//! GraphiQL and the static files of keyledger's pages, compiled into the
//! binary: no CDN, so GraphiQL works offline and under a policy that allows
//! scripts from keyledger's own origin only (assets/graphiql/README.md).
use axum::{
    extract::Path,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};

use super::security;

/// The vendored GraphiQL release, in its assets' paths.
pub const GRAPHIQL_VERSION: &str = "3.8.3";

const PAGE: &str = include_str!("../../assets/graphiql/index.html");

/// A file served under `/assets/`: its bytes, type and whether its path
/// names a version (then cached for a year).
struct Asset {
    bytes: &'static [u8],
    content_type: &'static str,
    versioned: bool,
}

fn asset(path: &str) -> Option<Asset> {
    let (bytes, content_type, versioned): (&'static [u8], _, _) = match path {
        "graphiql-3.8.3/graphiql.min.js" => (
            include_bytes!("../../assets/graphiql/graphiql.min.js"),
            "text/javascript; charset=utf-8",
            true,
        ),
        "graphiql-3.8.3/graphiql.min.css" => (
            include_bytes!("../../assets/graphiql/graphiql.min.css"),
            "text/css; charset=utf-8",
            true,
        ),
        "graphiql-3.8.3/react.production.min.js" => (
            include_bytes!("../../assets/graphiql/react.production.min.js"),
            "text/javascript; charset=utf-8",
            true,
        ),
        "graphiql-3.8.3/react-dom.production.min.js" => (
            include_bytes!("../../assets/graphiql/react-dom.production.min.js"),
            "text/javascript; charset=utf-8",
            true,
        ),
        "graphiql-page.js" => (
            include_bytes!("../../assets/graphiql/page.js"),
            "text/javascript; charset=utf-8",
            false,
        ),
        "graphiql-page.css" => (
            include_bytes!("../../assets/graphiql/page.css"),
            "text/css; charset=utf-8",
            false,
        ),
        "pages.css" => (
            include_bytes!("../../assets/pages.css"),
            "text/css; charset=utf-8",
            false,
        ),
        _ => return None,
    };
    Some(Asset {
        bytes,
        content_type,
        versioned,
    })
}

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

/// `GET /assets/{*path}`.
pub async fn assets(Path(path): Path<String>) -> Response {
    let Some(asset) = asset(&path) else {
        return super::refusal::not_found().await;
    };
    let cache = if asset.versioned {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, asset.content_type),
            (header::CACHE_CONTROL, cache),
        ],
        asset.bytes,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

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
