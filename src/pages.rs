//! The few HTML pages that links in emails open. Each shows what will happen
//! and a button: opening a link (as mail scanners do) changes nothing; only
//! the explicit POST does. Values are escaped (minijinja, HTML auto-escape).
use std::sync::LazyLock;

use axum::response::Html;
use minijinja::{AutoEscape, Environment};
use serde::Serialize;

const LAYOUT: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>{{ title }}</title>
<link rel="stylesheet" href="/assets/pages.css"></head>
<body>
<h1>{{ title }}</h1>
{% if message %}<p>{{ message }}</p>{% endif %}
{% if form == "verify" %}
{% if from %}<p>The account of {{ from }} asks to use <strong>{{ to }}</strong> as its email address from now on.</p>
{% else %}<p>Confirm that <strong>{{ to }}</strong> is your email address.</p>{% endif %}
<p>Enter the password of that account. Nothing happens until you press the button.</p>
<form method="post" action="/verify-email">
  <input type="hidden" name="token" value="{{ token }}">
  <p><label>Password <input type="password" name="password" required></label></p>
  <button type="submit">Confirm {{ to }}</button>
</form>
{% elif form == "reset" %}
<p>Choose a new password for the account of <strong>{{ to }}</strong> (10 to 128 characters). Every session of the account will be signed out.</p>
<form method="post" action="/reset-password">
  <input type="hidden" name="token" value="{{ token }}">
  <p><label>New password <input type="password" name="password" minlength="10" maxlength="128" required></label></p>
  <button type="submit">Set the new password</button>
</form>
{% elif form == "transfer" %}
<p>{{ from }} wants to transfer order <strong>{{ order }}</strong> ({{ product }}) and every key in it to <strong>{{ to }}</strong>.</p>
<p>Sign in as {{ to }} to confirm. Nothing happens until you press the button.</p>
<form method="post" action="/transfers/confirm">
  <input type="hidden" name="token" value="{{ token }}">
  <p><label>Email <input type="email" name="email" value="{{ to }}" required></label></p>
  <p><label>Password <input type="password" name="password" required></label></p>
  <button type="submit">Confirm the transfer</button>
</form>
{% endif %}
</body></html>
"#;

static ENV: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    env.set_auto_escape_callback(|_| AutoEscape::Html);
    env.add_template("page", LAYOUT)
        .expect("page template parses");
    env
});

/// What a page shows.
#[derive(Serialize, Default)]
pub struct Page<'a> {
    pub title: &'a str,
    pub message: Option<&'a str>,
    /// `verify`, `reset`, `transfer` or none.
    pub form: Option<&'a str>,
    pub token: Option<&'a str>,
    pub from: Option<&'a str>,
    pub to: Option<&'a str>,
    pub order: Option<&'a str>,
    pub product: Option<&'a str>,
}

pub fn render(page: &Page<'_>) -> Html<String> {
    let html = ENV
        .get_template("page")
        .and_then(|t| t.render(page))
        .unwrap_or_else(|_| "<!doctype html><p>Something went wrong.</p>".into());
    Html(html)
}

/// A page with a title and a sentence.
pub fn message(title: &str, message: &str) -> Html<String> {
    render(&Page {
        title,
        message: Some(message),
        ..Page::default()
    })
}
