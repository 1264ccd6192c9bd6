//! The static files of keyledger's pages (GraphiQL, the dashboard, the
//! pages opened from emails), compiled into the binary and served from one
//! place, `GET /assets/{*path}`: no CDN, no build step, and scripts from
//! keyledger's own origin only, as the Content-Security-Policy wants.
use axum::{
    extract::Path,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};

/// The vendored GraphiQL release, in its assets' paths.
pub const GRAPHIQL_VERSION: &str = "3.8.3";

/// A file served under `/assets/`: its bytes, type and whether its path
/// names a version (then cached for a year; else revalidated every time).
pub struct Asset {
    pub bytes: &'static [u8],
    pub content_type: &'static str,
    pub versioned: bool,
}

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// Every file under `/assets/`, by its path there.
pub fn find(path: &str) -> Option<Asset> {
    macro_rules! file {
        ($file:literal, $type:expr, $versioned:expr) => {
            (
                include_bytes!(concat!("../../assets/", $file)).as_slice(),
                $type,
                $versioned,
            )
        };
    }
    let (bytes, content_type, versioned) = match path {
        "graphiql-3.8.3/graphiql.min.js" => file!("graphiql/graphiql.min.js", JS, true),
        "graphiql-3.8.3/graphiql.min.css" => file!("graphiql/graphiql.min.css", CSS, true),
        "graphiql-3.8.3/react.production.min.js" => {
            file!("graphiql/react.production.min.js", JS, true)
        }
        "graphiql-3.8.3/react-dom.production.min.js" => {
            file!("graphiql/react-dom.production.min.js", JS, true)
        }
        "graphiql-page.js" => file!("graphiql/page.js", JS, false),
        "graphiql-page.css" => file!("graphiql/page.css", CSS, false),
        "pages.css" => file!("pages.css", CSS, false),
        "dashboard/app.css" => file!("dashboard/app.css", CSS, false),
        "dashboard/app.js" => file!("dashboard/app.js", JS, false),
        "dashboard/api.js" => file!("dashboard/api.js", JS, false),
        "dashboard/dom.js" => file!("dashboard/dom.js", JS, false),
        "dashboard/live.js" => file!("dashboard/live.js", JS, false),
        "dashboard/views/account.js" => file!("dashboard/views/account.js", JS, false),
        "dashboard/views/orders.js" => file!("dashboard/views/orders.js", JS, false),
        "dashboard/views/licenses.js" => file!("dashboard/views/licenses.js", JS, false),
        "dashboard/views/requests.js" => file!("dashboard/views/requests.js", JS, false),
        "dashboard/views/danger.js" => file!("dashboard/views/danger.js", JS, false),
        _ => return None,
    };
    Some(Asset {
        bytes,
        content_type,
        versioned,
    })
}

/// `GET /assets/{*path}`.
pub async fn serve(Path(path): Path<String>) -> Response {
    let Some(asset) = find(&path) else {
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

/// The paths under `/assets/` that an HTML page or a module names
/// (`"/assets/…"` in quotes, and a module's relative `import … from './x.js'`).
#[cfg(test)]
pub fn referenced(text: &str, from: &str) -> Vec<String> {
    let dir = from.rsplit_once('/').map_or("", |(dir, _)| dir);
    let mut paths = Vec::new();
    for part in text.split(['"', '\'']) {
        if let Some(path) = part.strip_prefix("/assets/") {
            paths.push(path.to_owned());
        } else if part.ends_with(".js") && (part.starts_with("./") || part.starts_with("../")) {
            let mut segments: Vec<&str> = dir.split('/').filter(|s| !s.is_empty()).collect();
            for segment in part.split('/') {
                match segment {
                    "." => {}
                    ".." => {
                        segments.pop();
                    }
                    other => segments.push(other),
                }
            }
            paths.push(segments.join("/"));
        }
    }
    paths
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every module the dashboard's modules import is served.
    #[test]
    fn dashboard_modules_import_only_served_modules() {
        let mut seen = vec!["dashboard/app.js".to_owned()];
        let mut next = 0;
        while next < seen.len() {
            let path = seen[next].clone();
            next += 1;
            let asset = find(&path).unwrap_or_else(|| panic!("{path} is served"));
            let text = std::str::from_utf8(asset.bytes).unwrap();
            for import in referenced(text, &path) {
                if !seen.contains(&import) {
                    seen.push(import);
                }
            }
        }
        assert!(seen.len() >= 5, "{seen:?}");
    }
}
