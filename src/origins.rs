//! The browser origins allowed to call the API from pages keyledger does not
//! serve (`CORS_ALLOWED_ORIGINS`), and the same-origin test the websocket
//! applies to every browser.
use std::str::FromStr;

/// Exact origins (`scheme://host[:port]`, as browsers write them in
/// `Origin`); empty: no cross-origin access.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedOrigins(Vec<String>);

impl FromStr for AllowedOrigins {
    type Err = String;

    /// A comma-separated list of origins; empty for none. An entry that is
    /// not exactly an origin (a path, a trailing slash, a default port, a
    /// wildcard, upper case) is refused rather than silently never matching.
    fn from_str(list: &str) -> Result<Self, String> {
        list.split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .map(|entry| {
                let origin = url::Url::parse(entry)
                    .ok()
                    .filter(|url| matches!(url.scheme(), "http" | "https"))
                    .map(|url| url.origin().ascii_serialization())
                    .filter(|origin| origin != "null");
                match origin {
                    Some(origin) if origin == entry => Ok(origin),
                    Some(origin) => Err(format!(
                        "CORS_ALLOWED_ORIGINS: {entry:?} is not an origin; write {origin:?} \
                         (scheme://host[:port], no path, no trailing slash)"
                    )),
                    None => Err(format!(
                        "CORS_ALLOWED_ORIGINS: {entry:?} is not an origin \
                         (expected http(s)://host[:port], e.g. https://dash.example.com)"
                    )),
                }
            })
            .collect::<Result<_, _>>()
            .map(AllowedOrigins)
    }
}

impl AllowedOrigins {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }

    pub fn contains(&self, origin: &str) -> bool {
        self.0.iter().any(|allowed| allowed == origin)
    }
}

/// Whether a browser page of `origin` may open a websocket to this server,
/// reached as `host` (the request's `Host`) and published as `public_url`:
/// pages of the server itself (same host, or the public URL's origin) and
/// the allowed origins. Non-browser clients send no `Origin` and are not
/// asked.
pub fn websocket_allowed(
    origin: &str,
    host: Option<&str>,
    public_url: &str,
    allowed: &AllowedOrigins,
) -> bool {
    if allowed.contains(origin) {
        return true;
    }
    let Ok(url) = url::Url::parse(origin) else {
        return false;
    };
    if !matches!(url.scheme(), "http" | "https") {
        return false;
    }
    let public = url::Url::parse(public_url)
        .map(|public| public.origin().ascii_serialization())
        .unwrap_or_default();
    if url.origin().ascii_serialization() == public {
        return true;
    }
    // Same host as the one the browser connected to: a proxy may terminate
    // TLS, so the scheme cannot be compared, but another site cannot make a
    // browser send this server's own host as its `Origin`.
    let authority = match url.port() {
        Some(port) => format!("{}:{port}", url.host_str().unwrap_or_default()),
        None => url.host_str().unwrap_or_default().to_owned(),
    };
    host.is_some_and(|host| {
        let host = host.trim().to_ascii_lowercase();
        let default_port = match url.scheme() {
            "https" => ":443",
            _ => ":80",
        };
        host == authority || host.strip_suffix(default_port) == Some(&authority)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_origins_only() {
        let list: AllowedOrigins = "https://dash.example.com, http://localhost:5173"
            .parse()
            .unwrap();
        assert!(list.contains("https://dash.example.com"));
        assert!(list.contains("http://localhost:5173"));
        assert!(!list.contains("https://dash.example.com:443"));
        for wrong in [
            "https://dash.example.com/",
            "https://dash.example.com/app",
            "https://Dash.example.com",
            "https://dash.example.com:443",
            "*",
            "null",
            "dash.example.com",
            "ftp://dash.example.com",
        ] {
            assert!(wrong.parse::<AllowedOrigins>().is_err(), "{wrong} refused");
        }
        assert!("".parse::<AllowedOrigins>().unwrap().is_empty());
    }

    #[test]
    fn websocket_same_host_or_listed() {
        let none = AllowedOrigins::default();
        let public = "https://keys.example.com";
        assert!(websocket_allowed(
            "http://127.0.0.1:8000",
            Some("127.0.0.1:8000"),
            public,
            &none
        ));
        assert!(websocket_allowed(
            "https://keys.example.com",
            Some("internal:8000"),
            public,
            &none
        ));
        assert!(websocket_allowed(
            "https://keys.example.com",
            Some("keys.example.com:443"),
            "http://x",
            &none
        ));
        assert!(!websocket_allowed(
            "https://evil.example",
            Some("127.0.0.1:8000"),
            public,
            &none
        ));
        assert!(!websocket_allowed(
            "null",
            Some("127.0.0.1:8000"),
            public,
            &none
        ));
        let listed: AllowedOrigins = "https://evil.example".parse().unwrap();
        assert!(websocket_allowed(
            "https://evil.example",
            Some("127.0.0.1:8000"),
            public,
            &listed
        ));
    }
}
