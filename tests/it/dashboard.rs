//! The dashboard at `GET /`: served with its files and the strict policy
//! (always), and driven in headless Chromium like a person would (tests
//! marked "needs Chromium", run by `.ci/run`).
use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use reqwest::header;
use serde_json::json;

use crate::browser::{Browser, Page};
use crate::harness::{PASSWORD, TestApp, unique};

/// A TCP relay between the browser and the app whose connections the test
/// can cut: a real network loss, as the browser sees one (CDP's offline
/// emulation leaves open websockets alone).
struct Relay {
    addr: SocketAddr,
    down: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Relay {
    async fn start(target: SocketAddr) -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let relay = Relay {
            addr: listener.local_addr().unwrap(),
            down: Arc::default(),
            connections: Arc::default(),
        };
        let (down, connections) = (relay.down.clone(), relay.connections.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if down.load(Ordering::SeqCst) {
                    continue; // dropped: the connection is refused
                }
                let task = tokio::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                connections.lock().unwrap().push(task.abort_handle());
            }
        });
        relay
    }

    fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Close every open connection and refuse new ones until [`Self::restore`].
    fn cut(&self) {
        self.down.store(true, Ordering::SeqCst);
        for connection in self.connections.lock().unwrap().drain(..) {
            connection.abort();
        }
    }

    fn restore(&self) {
        self.down.store(false, Ordering::SeqCst);
    }
}

/// A value as a JavaScript literal (JSON is valid JavaScript).
fn js(value: impl serde::Serialize) -> String {
    serde_json::to_string(&value).unwrap()
}

/// The files a page or module names: `"/assets/…"` and relative imports.
fn referenced(text: &str, from: &str) -> Vec<String> {
    let dir = from.rsplit_once('/').map_or("", |(dir, _)| dir);
    let mut paths = Vec::new();
    for part in text.split(['"', '\'']) {
        if part.starts_with("/assets/") {
            paths.push(part.to_owned());
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
            paths.push(format!("/{}", segments.join("/")));
        }
    }
    paths
}

#[tokio::test]
async fn the_dashboard_and_every_file_it_loads_are_served() {
    let app = TestApp::spawn().await;
    let page = app.http.get(format!("{}/", app.base)).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let header_of = |response: &reqwest::Response, name| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    assert!(header_of(&page, header::CONTENT_TYPE).starts_with("text/html"));
    let csp = header_of(&page, header::CONTENT_SECURITY_POLICY);
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(csp.contains("style-src 'self'"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(header_of(&page, header::REFERRER_POLICY), "no-referrer");
    let html = page.text().await.unwrap();
    assert!(html.contains("id=\"notifications\""), "{html}");

    let mut queue = referenced(&html, "/");
    let mut seen = Vec::new();
    while let Some(path) = queue.pop() {
        if seen.contains(&path) {
            continue;
        }
        let response = app
            .http
            .get(format!("{}{path}", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let wanted = if path.ends_with(".js") {
            "text/javascript"
        } else {
            "text/css"
        };
        assert!(
            header_of(&response, header::CONTENT_TYPE).starts_with(wanted),
            "{path}"
        );
        assert_eq!(
            header_of(&response, header::X_CONTENT_TYPE_OPTIONS),
            "nosniff"
        );
        assert!(
            !header_of(&response, header::CACHE_CONTROL).is_empty(),
            "{path}"
        );
        let text = response.text().await.unwrap();
        assert!(
            !text.contains(".innerHTML"),
            "{path} builds DOM from text only"
        );
        queue.extend(referenced(&text, &path));
        seen.push(path);
    }
    for module in [
        "app.js",
        "api.js",
        "live.js",
        "views/orders.js",
        "views/requests.js",
    ] {
        assert!(
            seen.contains(&format!("/assets/dashboard/{module}")),
            "{module} in {seen:?}"
        );
    }
    let missing = app
        .http
        .get(format!("{}/assets/dashboard/nothing.js", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
}

/// Sign in through the dashboard's form (inputs `email` and `password`).
async fn sign_in(page: &Page, base: &str, email: &str) {
    page.goto(&format!("{base}/")).await;
    page.wait_for(
        "the sign-in form",
        "document.querySelector('#sign-in input[name=email]') !== null",
    )
    .await;
    page.eval(&format!(
        "(() => {{ const form = document.getElementById('sign-in');
            form.elements.email.value = {};
            form.elements.password.value = {};
            form.querySelector('button[type=submit]').click(); }})()",
        js(email),
        js(PASSWORD)
    ))
    .await;
    page.wait_for(
        "signed in",
        &format!(
            "document.getElementById('who').textContent === {}",
            js(email)
        ),
    )
    .await;
    page.wait_for(
        "the live panel",
        "document.getElementById('live-status').textContent === 'Live'",
    )
    .await;
}

/// The panel's items: (id, kind, text), newest first.
async fn panel(page: &Page) -> Vec<(String, String, String)> {
    let items = page
        .eval(
            "[...document.querySelectorAll('#events li')]\
             .map((li) => [li.dataset.id, li.dataset.kind, li.textContent])",
        )
        .await;
    items
        .as_array()
        .unwrap()
        .iter()
        .map(|item| {
            (
                item[0].as_str().unwrap().to_owned(),
                item[1].as_str().unwrap().to_owned(),
                item[2].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// Wait until the panel holds an event of `kind` mentioning `text`.
async fn panel_shows(page: &Page, kind: &str, text: &str) {
    page.wait_for(
        &format!("{kind} with {text} in the panel"),
        &format!(
            "[...document.querySelectorAll('#events li')].some((li) => \
             li.dataset.kind === {} && li.textContent.includes({}))",
            js(kind),
            js(text)
        ),
    )
    .await;
}

async fn click(page: &Page, what: &str, expression: &str) {
    page.wait_for(
        what,
        &format!("{expression} !== null && {expression} !== undefined"),
    )
    .await;
    page.eval(&format!("({expression}).click()")).await;
}

#[tokio::test]
#[ignore = "needs Chromium"]
async fn a_buyer_works_live_in_the_dashboard() {
    let app = TestApp::spawn().await;
    let buyer_email = format!("{}@example.com", unique("buyer"));
    let (buyer, _) = app.verified_user(&buyer_email).await;
    let (order_id, license_ids, keys) = app.paid_order(&buyer, 3).await;
    let claimer_email = format!("{}@example.com", unique("claimer"));
    let (claimer, _) = app.verified_user(&claimer_email).await;
    let assignee_email = format!("{}@example.com", unique("assignee"));

    // The buyer's browser reaches the app through a relay the test cuts.
    let relay = Relay::start(app.addr).await;
    let browser = Browser::launch().await;
    let page = browser.new_page().await;
    sign_in(&page, &relay.base(), &buyer_email).await;
    page.screenshot("dashboard-1-orders").await;

    // The order's detail: assign a key with an organization.
    click(
        &page,
        "the order's link",
        &format!("document.querySelector('a[href=\"#/orders/{order_id}\"]')"),
    )
    .await;
    let row = format!(
        "[...document.querySelectorAll('.key')].find((k) => k.textContent === {})?.closest('tr')",
        js(&keys[0])
    );
    page.wait_for("the order's keys", &format!("{row} != null"))
        .await;
    // A SIRET without a name is refused at the name's field.
    page.eval(&format!(
        "(() => {{ const row = {row}; row.querySelector('summary').click();
            const form = row.querySelector('form.assign');
            form.elements['email'].value = {};
            form.elements['organization.siret'].value = '73282932000074';
            form.querySelector('button[type=submit]').click(); }})()",
        js(&assignee_email)
    ))
    .await;
    page.wait_for(
        "the error at the organization's name",
        &format!(
            "(() => {{ const input = ({row}).querySelector('[name=\"organization.name\"]');
                const slot = document.getElementById(input.id + '-error');
                return input.getAttribute('aria-invalid') === 'true'
                    && slot.textContent.startsWith('VALIDATION: '); }})()"
        ),
    )
    .await;
    page.screenshot("dashboard-2-field-error").await;
    page.eval(&format!(
        "(() => {{ const form = ({row}).querySelector('form.assign');
            form.elements['organization.name'].value = 'Acme SAS';
            form.querySelector('button[type=submit]').click(); }})()"
    ))
    .await;
    page.wait_for(
        "the key shown assigned",
        &format!("({row})?.textContent.includes({})", js(&assignee_email)),
    )
    .await;
    let license = app
        .ok(
            Some(&buyer),
            "query($l: ID!) { license(id: $l) { status assigneeEmail organization { name siret } } }",
            json!({"l": license_ids[0]}),
        )
        .await;
    assert_eq!(
        license["license"],
        json!({"status": "ASSIGNED", "assigneeEmail": assignee_email,
            "organization": {"name": "Acme SAS", "siret": "73282932000074"}})
    );
    panel_shows(&page, "LICENSE_ASSIGNED", &keys[0]).await;
    page.screenshot("dashboard-3-assigned").await;

    // Requests: turn manual approval on in the Claiming settings card.
    page.eval("window.location.hash = '#/requests'").await;
    click(
        &page,
        "the manual approval setting",
        "document.querySelector('#claiming-settings input[name=requireManualApproval]')",
    )
    .await;
    page.wait_for(
        "the setting saved",
        "document.querySelector('#claiming-settings .ok')?.textContent === 'Saved.'",
    )
    .await;

    // Another person claims a free key: the panel shows it with no reload.
    let started = Instant::now();
    let claim = app
        .ok(
            Some(&claimer),
            "mutation($k: String!) { claimLicense(key: $k) { outcome claim { id } } }",
            json!({"k": keys[2]}),
        )
        .await;
    assert_eq!(claim["claimLicense"]["outcome"], "PENDING");
    panel_shows(&page, "CLAIM_CREATED", &claimer_email).await;
    eprintln!("a new claim reached the panel in {:?}", started.elapsed());
    // The Requests view refreshed itself: approve the claim there.
    let claim_id = claim["claimLicense"]["claim"]["id"].as_str().unwrap();
    page.screenshot("dashboard-4-claim-live").await;
    click(
        &page,
        "the claim's Approve button",
        &format!(
            "document.querySelector('[data-claim-id={}] button')",
            js(claim_id)
        ),
    )
    .await;
    panel_shows(&page, "CLAIM_APPROVED", &claimer_email).await;
    let license = app
        .ok(
            Some(&buyer),
            "query($l: ID!) { license(id: $l) { assigneeEmail } }",
            json!({"l": license_ids[2]}),
        )
        .await;
    assert_eq!(license["license"]["assigneeEmail"], json!(claimer_email));

    // The claimer, in a browser context of their own, sees the outcome.
    let claimer_page = browser.new_page().await;
    sign_in(&claimer_page, &app.base, &claimer_email).await;
    panel_shows(&claimer_page, "CLAIM_APPROVED", &keys[2]).await;
    claimer_page
        .eval("window.location.hash = '#/requests'")
        .await;
    claimer_page
        .wait_for(
            "the claim approved in the claimer's Requests",
            &format!(
                "document.getElementById('outgoing')?.textContent.includes('Approved') \
                 && document.getElementById('outgoing').textContent.includes({})",
                js(&keys[2])
            ),
        )
        .await;
    claimer_page.screenshot("dashboard-5-claimer").await;

    // The buyer's connection drops; events made meanwhile arrive once it
    // is back, each once.
    relay.cut();
    page.wait_for(
        "the panel to notice the lost connection",
        "document.getElementById('notifications').dataset.state !== 'live'",
    )
    .await;
    let message = "<img src=x onerror=alert(1)> please";
    let request = app
        .ok(
            Some(&claimer),
            "mutation($b: String!, $m: String) { requestLicense(input: { buyerEmail: $b, message: $m }) { request { id } } }",
            json!({"b": buyer_email, "m": message}),
        )
        .await;
    let request_id = request["requestLicense"]["request"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Long enough for a reconnection attempt to fail while the relay is down.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(
        !panel(&page)
            .await
            .iter()
            .any(|(_, kind, _)| kind == "REQUEST_CREATED"),
        "offline, nothing arrives"
    );
    relay.restore();
    panel_shows(&page, "REQUEST_CREATED", &claimer_email).await;
    page.wait_for(
        "the panel live again",
        "document.getElementById('notifications').dataset.state === 'live'",
    )
    .await;
    // Exactly the account's events, each once.
    let shown: Vec<String> = panel(&page).await.into_iter().map(|(id, ..)| id).collect();
    let mut all = app.event_ids(&buyer).await;
    all.reverse();
    assert_eq!(shown, all, "the panel shows every event once, newest first");

    // Approve the request with a free key; the message stays text.
    click(
        &page,
        "the request's Approve button",
        &format!(
            "[...document.querySelectorAll('[data-request-id={}] button')].find((b) => b.textContent === 'Approve')",
            js(&request_id)
        ),
    )
    .await;
    panel_shows(&page, "REQUEST_APPROVED", &claimer_email).await;
    let images = page
        .eval("document.querySelectorAll('main img').length")
        .await;
    assert_eq!(images, json!(0), "a message is never markup");
    let requests = app
        .ok(
            Some(&claimer),
            "{ licenseRequests(direction: OUTGOING) { edges { node { status license { id } } } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        requests["licenseRequests"]["edges"][0]["node"],
        json!({"status": "APPROVED", "license": {"id": license_ids[1]}})
    );
    page.screenshot("dashboard-6-after-reconnect").await;

    // The other screens: the buyer's keys, and the claimer's assigned one.
    page.eval("window.location.hash = '#/licenses'").await;
    page.wait_for(
        "the buyer's keys under Licenses",
        &format!(
            "document.querySelector('[data-view=\"/licenses\"]')?.textContent.includes({})",
            js(&keys[1])
        ),
    )
    .await;
    claimer_page
        .eval("window.location.hash = '#/assigned'")
        .await;
    claimer_page
        .wait_for(
            "the claimed key under Assigned licenses",
            &format!(
                "document.querySelector('[data-view=\"/assigned\"]')?.textContent.includes({})",
                js(&keys[2])
            ),
        )
        .await;

    // Danger zone: start a transfer of the order, then cancel it.
    page.eval("window.location.hash = '#/danger'").await;
    page.wait_for(
        "the transfer form",
        "document.querySelector('#transfer select[name=orderId] option') !== null",
    )
    .await;
    let new_owner = format!("{}@example.com", unique("new_owner"));
    page.eval(&format!(
        "(() => {{ const form = document.getElementById('transfer');
            form.elements.orderId.value = {};
            form.elements.newOwnerEmail.value = {};
            form.querySelector('button[type=submit]').click(); }})()",
        js(&order_id),
        js(&new_owner)
    ))
    .await;
    click(
        &page,
        "the transfer's Cancel button",
        "[...document.querySelectorAll('main button')].find((b) => b.textContent === 'Cancel')",
    )
    .await;
    panel_shows(&page, "TRANSFER_CANCELLED", "").await;
    let transfers = app
        .ok(
            Some(&buyer),
            "{ orderTransfers(direction: OUTGOING) { toEmail status } }",
            json!({}),
        )
        .await;
    assert_eq!(
        transfers["orderTransfers"],
        json!([{"toEmail": new_owner, "status": "CANCELLED"}])
    );

    // Signing out ends the session on the server too.
    let token = page.eval("sessionStorage.getItem('keyledger:token')").await;
    let token = token
        .as_str()
        .expect("a token in sessionStorage")
        .to_owned();
    click(
        &page,
        "the sign-out button",
        "document.getElementById('sign-out')",
    )
    .await;
    page.wait_for(
        "the sign-in form again",
        "document.querySelector('#sign-in') !== null && sessionStorage.getItem('keyledger:token') === null",
    )
    .await;
    let after = app.gql(Some(&token), "{ me { id } }", json!({})).await;
    assert_eq!(after["errors"][0]["extensions"]["code"], "UNAUTHENTICATED");

    for tab in [&page, &claimer_page] {
        let problems = tab.problems().await;
        assert!(problems.is_empty(), "{problems:#?}");
    }
}

#[tokio::test]
#[ignore = "needs Chromium"]
async fn graphiql_renders_and_runs_a_query_offline() {
    let app = TestApp::spawn().await;
    let email = format!("{}@example.com", unique("admin_ui"));
    let (token, _) = app.verified_user(&email).await;
    let browser = Browser::launch().await;
    let page = browser.new_page().await;
    page.goto(&format!("{}/graphql", app.base)).await;
    page.wait_for(
        "GraphiQL's editor",
        "document.querySelector('.graphiql-container .graphiql-query-editor') !== null",
    )
    .await;
    // The query and the token, where GraphiQL keeps them, then a reload.
    page.eval(&format!(
        "localStorage.setItem('graphiql:query', '{{ me {{ email }} }}');
         localStorage.setItem('graphiql:headers', {});",
        js(json!({"Authorization": format!("Bearer {token}")}).to_string())
    ))
    .await;
    page.goto(&format!("{}/graphql", app.base)).await;
    click(
        &page,
        "GraphiQL's run button",
        "document.querySelector('.graphiql-execute-button')",
    )
    .await;
    page.wait_for(
        "the query's result",
        &format!(
            "document.querySelector('.graphiql-response')?.textContent.includes({})",
            js(&email)
        ),
    )
    .await;
    // The schema came through introspection: the documentation explorer
    // lists the root types.
    click(
        &page,
        "GraphiQL's documentation button",
        "document.querySelector('button[aria-label=\"Show Documentation Explorer\"]')",
    )
    .await;
    page.wait_for(
        "the documentation explorer's root types",
        "document.querySelector('.graphiql-doc-explorer')?.textContent.includes('Mutation')",
    )
    .await;
    page.screenshot("graphiql").await;
    let problems = page.problems().await;
    assert!(problems.is_empty(), "{problems:#?}");
}
