//! `cargo bench --bench load -- admin` (`just bench-admin`): every filter of
//! `admin { … }` on a store of 1,000,000 keys on PostgreSQL, p99 at
//! concurrency 8 (goal < 20 ms each), and the PostgreSQL plan of each
//! filter's statement (`results/admin-explain.md`).
//!
//! The store is written by SQL (`generate_series`), not through the API:
//! 100,000 accounts (a tenth unverified, 1% disabled, one in a thousand an
//! administrator), 10,000 orders of 100 keys over a year (a tenth unpaid,
//! four products), 1,000,000 keys (a tenth assigned, to 50,000 addresses)
//! and 500,000 events with one recipient each.
use std::{fmt::Write as _, sync::Arc};

use bytes::Bytes;
use keyledger::domain::admin as filters;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, QueryTrait, Statement};
use serde_json::{Value, json};

use crate::{
    env::{Client, PgDatabase, Server, ServerConfig},
    http1::Connections,
    measure::{Window, closed_loop},
    report::{Report, Row},
};

const ACCOUNTS: i64 = 100_000;
const CONCURRENCY: usize = 8;
const GOAL_P99_MS: f64 = 20.0;

/// The store, written in a few statements.
const SEED: &[&str] = &[
    "INSERT INTO products (code, name, created_at, updated_at) \
     SELECT 'bench-' || g, 'Bench ' || g, now(), now() FROM generate_series(0, 3) g",
    "INSERT INTO accounts (email, password_hash, email_verified_at, role, \
     require_manual_approval, allow_override_assignee, notify_on_claim, \
     allow_assignee_organization, created_at, disabled_at) \
     SELECT 'user-' || lpad(g::text, 6, '0') || '@bench-admin.example.com', 'x', \
     CASE WHEN g % 10 = 0 THEN NULL ELSE now() END, \
     CASE WHEN g % 1000 = 0 THEN 'ADMIN' ELSE 'USER' END, false, false, true, false, \
     now() - interval '400 days' + g * interval '5 minutes', \
     CASE WHEN g % 100 = 7 THEN now() END \
     FROM generate_series(1, 100000) g",
    "INSERT INTO orders (owner_id, product, quantity, status, device_limit, created_at, paid_at) \
     SELECT a.first + (g * 7919) % 100000, 'bench-' || (g % 4), 100, \
     CASE WHEN g % 10 = 0 THEN 'PENDING_PAYMENT' ELSE 'PAID' END, 1, \
     now() - interval '365 days' + g * interval '52 minutes', \
     CASE WHEN g % 10 <> 0 THEN now() - interval '365 days' + g * interval '52 minutes' + interval '1 hour' END \
     FROM generate_series(1, 10000) g, (SELECT min(id) AS first FROM accounts) a",
    "INSERT INTO licenses (order_id, key, assignee_email, assigned_at, created_at) \
     SELECT o.first + (g - 1) / 100, \
     substr(h, 1, 4) || '-' || substr(h, 5, 4) || '-' || substr(h, 9, 4) || '-' || substr(h, 13, 4), \
     CASE WHEN g % 10 = 3 THEN 'assignee-' || (g % 50000) || '@bench-admin.example.com' END, \
     CASE WHEN g % 10 = 3 THEN now() END, now() \
     FROM generate_series(1, 1000000) g, (SELECT min(id) AS first FROM orders) o, \
     LATERAL (SELECT upper(lpad(to_hex(g::bigint * 1000003), 16, '0')) AS h) k",
    // Each event in a transaction of its own time, as mutations write them
    // (one statement would give all 500,000 the same `tx`): spread in order
    // over the transaction ids before this one, some twenty per id.
    "INSERT INTO events (kind, actor_id, order_id, license_id, changes, occurred_at, tx) \
     SELECT (ARRAY['LICENSE_ASSIGNED','LICENSE_UNASSIGNED','CLAIM_CREATED', \
                   'CLAIM_APPROVED','DEVICE_ACTIVATED','ORDER_PAID'])[1 + g % 6], \
     a.first + (g * 31) % 100000, o.first + g % 10000, NULL, '{}', \
     now() - interval '365 days' + g * interval '1 minute', \
     greatest(1, g * (pg_current_xact_id()::text::bigint - 1) / 500001) \
     FROM generate_series(1, 500000) g, (SELECT min(id) AS first FROM accounts) a, \
     (SELECT min(id) AS first FROM orders) o",
    "INSERT INTO event_recipients (account_id, event_id) \
     SELECT e.owner_id, e.id FROM (SELECT events.id, orders.owner_id FROM events \
     JOIN orders ON orders.id = events.order_id) e",
    "VACUUM ANALYZE",
    // Write the seed's pages out now: else the first filters measured pay
    // for the write-back of a million rows.
    "CHECKPOINT",
];

/// One filter: its name, the `admin` field, the filter type, and the filter
/// of the `seq`-th call (so that calls do not all read the same rows).
struct Case {
    name: &'static str,
    field: &'static str,
    filter_type: &'static str,
    filter: fn(u64, &Ids) -> Value,
}

/// Ids the seed gave, for filters that name rows.
struct Ids {
    first_order: i64,
}

fn account(n: u64) -> String {
    format!(
        "user-{:06}@bench-admin.example.com",
        1 + n % ACCOUNTS as u64
    )
}

fn key(g: u64) -> String {
    let h = format!("{:016X}", (1 + g % 1_000_000) * 1_000_003);
    format!("{}-{}-{}-{}", &h[0..4], &h[4..8], &h[8..12], &h[12..16])
}

const CASES: &[Case] = &[
    Case {
        name: "accounts email prefix",
        field: "accounts",
        filter_type: "AccountFilter",
        filter: |n, _| json!({"email": format!("user-{:05}", n % 10_000)}),
    },
    Case {
        name: "accounts unverified",
        field: "accounts",
        filter_type: "AccountFilter",
        filter: |_, _| json!({"verified": false}),
    },
    Case {
        name: "accounts disabled",
        field: "accounts",
        filter_type: "AccountFilter",
        filter: |_, _| json!({"disabled": true}),
    },
    Case {
        name: "accounts role ADMIN",
        field: "accounts",
        filter_type: "AccountFilter",
        filter: |_, _| json!({"role": "ADMIN"}),
    },
    Case {
        name: "orders number",
        field: "orders",
        filter_type: "OrderFilter",
        filter: |n, ids| json!({"number": format!("KL-{:06}", ids.first_order + (n % 10_000) as i64)}),
    },
    Case {
        name: "orders ownerEmail",
        field: "orders",
        filter_type: "OrderFilter",
        filter: |n, _| json!({"ownerEmail": account(n * 7919)}),
    },
    Case {
        name: "orders assigneeEmail",
        field: "orders",
        filter_type: "OrderFilter",
        filter: |n, _| json!({"assigneeEmail": format!("assignee-{}@bench-admin.example.com", (n * 10 + 3) % 50_000)}),
    },
    Case {
        name: "orders product",
        field: "orders",
        filter_type: "OrderFilter",
        filter: |n, _| json!({"product": format!("bench-{}", n % 4)}),
    },
    Case {
        name: "orders status PENDING_PAYMENT",
        field: "orders",
        filter_type: "OrderFilter",
        filter: |_, _| json!({"status": "PENDING_PAYMENT"}),
    },
    Case {
        name: "orders created in the last 30 days",
        field: "orders",
        filter_type: "OrderFilter",
        filter: |_, _| json!({"createdAfter": chrono::Utc::now() - chrono::Duration::days(30)}),
    },
    Case {
        name: "orders paid in a week a year ago",
        field: "orders",
        filter_type: "OrderFilter",
        filter: |_, _| {
            let start = chrono::Utc::now() - chrono::Duration::days(300);
            json!({"paidAfter": start, "paidBefore": start + chrono::Duration::days(7)})
        },
    },
    Case {
        name: "licenses key",
        field: "licenses",
        filter_type: "LicenseFilter",
        filter: |n, _| json!({"key": key(n * 7919).to_lowercase()}),
    },
    Case {
        name: "licenses assigneeEmail",
        field: "licenses",
        filter_type: "LicenseFilter",
        filter: |n, _| json!({"assigneeEmail": format!("assignee-{}@bench-admin.example.com", (n * 10 + 3) % 50_000)}),
    },
    Case {
        name: "licenses status ASSIGNED",
        field: "licenses",
        filter_type: "LicenseFilter",
        filter: |_, _| json!({"status": "ASSIGNED"}),
    },
    Case {
        name: "licenses status UNASSIGNED",
        field: "licenses",
        filter_type: "LicenseFilter",
        filter: |_, _| json!({"status": "UNASSIGNED"}),
    },
    Case {
        name: "licenses orderId",
        field: "licenses",
        filter_type: "LicenseFilter",
        filter: |n, ids| json!({"orderId": (ids.first_order + (n % 10_000) as i64).to_string()}),
    },
    Case {
        name: "events kinds",
        field: "events",
        filter_type: "EventFilter",
        filter: |_, _| json!({"kinds": ["DEVICE_ACTIVATED", "ORDER_PAID"]}),
    },
    Case {
        name: "events accountEmail",
        field: "events",
        filter_type: "EventFilter",
        filter: |n, _| json!({"accountEmail": account(n * 31)}),
    },
    Case {
        name: "events orderId",
        field: "events",
        filter_type: "EventFilter",
        filter: |n, ids| json!({"orderId": (ids.first_order + (n % 10_000) as i64).to_string()}),
    },
    Case {
        name: "events of a day a month ago",
        field: "events",
        filter_type: "EventFilter",
        filter: |_, _| {
            let start = chrono::Utc::now() - chrono::Duration::days(31);
            json!({"after": start, "before": start + chrono::Duration::days(1)})
        },
    },
    Case {
        name: "auditLog",
        field: "auditLog",
        filter_type: "EventFilter",
        filter: |_, _| json!({}),
    },
];

fn body(case: &Case, n: u64, ids: &Ids) -> Bytes {
    let query = format!(
        "query($f:{}){{ admin {{ {}(first: 20, filter: $f) {{ edges {{ cursor }} pageInfo {{ hasNextPage }} }} }} }}",
        case.filter_type, case.field
    );
    Bytes::from(json!({"query": query, "variables": {"f": (case.filter)(n, ids)}}).to_string())
}

pub async fn run(report: &mut Report, window: Window) -> Result<(), String> {
    crate::step("admin: fresh database, keyledger (release) with Redis");
    let pg = PgDatabase::create().await?;
    let redis = crate::env::redis_url();
    let sqlite = tempfile::tempdir().map_err(|e| e.to_string())?;
    let sqlite_url = format!("sqlite://{}?mode=rwc", sqlite.path().join("k.db").display());
    let server = start_measured(
        report,
        "start: SQLite, empty (the embedded default)",
        &sqlite_url,
        None,
    )
    .await?;
    server.stop().await;
    let server = start_measured(
        report,
        "start: PostgreSQL + Redis, empty",
        &pg.url,
        Some(&redis),
    )
    .await?;
    let db = crate::connect(&pg.url).await?;
    crate::step("admin: seeding 1,000,000 keys");
    let seeded = std::time::Instant::now();
    for sql in SEED {
        db.execute_unprepared(sql)
            .await
            .map_err(|e| format!("seed: {e}: {sql}"))?;
    }
    let seed_seconds = seeded.elapsed().as_secs_f64();
    // The same server, started again on the store of a million keys.
    server.stop().await;
    db.execute_unprepared("VACUUM ANALYZE")
        .await
        .map_err(|e| format!("vacuum: {e}"))?;
    let server = start_measured(
        report,
        "start: PostgreSQL + Redis, 1,000,000 keys",
        &pg.url,
        Some(&redis),
    )
    .await?;
    let client = Client::new(&server.base);
    let first_order: i64 = scalar(&db, "SELECT min(id) AS v FROM orders").await?;
    let ids = Ids { first_order };
    let token = admin_session(&db).await?;

    crate::step("admin: plans");
    let plans = explain_all(&db, &ids).await?;
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/results/admin-explain.md");
    std::fs::write(&path, &plans).map_err(|e| format!("write {}: {e}", path.display()))?;

    let connections = Connections::open(client.base(), CONCURRENCY).await?;
    let ids = Arc::new(ids);
    let token = Arc::new(token);
    for (index, case) in CASES.iter().enumerate() {
        crate::step(&format!("admin: {}", case.name));
        let op = {
            let connections = connections.clone();
            let ids = ids.clone();
            let token = token.clone();
            move |_, n: u64| {
                let connections = connections.clone();
                let body = body(&CASES[index], n, &ids);
                let token = token.clone();
                async move {
                    let answer = connections
                        .post_json("/graphql", body, Some(&token))
                        .await?;
                    if answer.starts_with(b"{\"data\":{\"admin\"") {
                        Ok(())
                    } else {
                        Err(String::from_utf8_lossy(&answer).into_owned())
                    }
                }
            }
        };
        let stats = closed_loop(CONCURRENCY, window, op).await;
        let mut row = Row::new(format!("admin {}", case.name), CONCURRENCY).with_stats(&stats);
        row.note(if stats.p99_ms < GOAL_P99_MS {
            "goal p99 < 20 ms met"
        } else {
            "goal p99 < 20 ms MISSED"
        });
        report.rows.push(row);
    }
    let mut row = Row::new("admin store seeded (1,000,000 keys)", "-");
    row.note(format!(
        "{seed_seconds:.1} s by generate_series; plans in bench/results/admin-explain.md"
    ));
    report.rows.push(row);
    server.stop().await;
    drop(pg);
    Ok(())
}

/// Start a server and report, in a row named `name`, its time from spawn
/// to ready (`/readyz`), and its resident memory once ready and after 2 s
/// idle.
async fn start_measured(
    report: &mut Report,
    name: &str,
    database_url: &str,
    redis_url: Option<&str>,
) -> Result<Server, String> {
    crate::step(name);
    let spawned = std::time::Instant::now();
    let server = Server::start(ServerConfig {
        database_url,
        redis_url,
    })
    .await?;
    let ready_ms = spawned.elapsed().as_secs_f64() * 1000.0;
    let at_ready = crate::resident_bytes(server.pid());
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let idle = crate::resident_bytes(server.pid());
    let mut row = Row::new(name, "-");
    row.p50_ms = Some((ready_ms * 10.0).round() / 10.0);
    row.note(format!(
        "p50 = time from spawn to ready (migrations included); resident memory {:.1} MiB at ready, {:.1} MiB after 2 s idle",
        at_ready as f64 / 1048576.0,
        idle as f64 / 1048576.0
    ));
    report.rows.push(row);
    Ok(server)
}

async fn scalar(db: &DatabaseConnection, sql: &str) -> Result<i64, String> {
    db.query_one_raw(Statement::from_string(DbBackend::Postgres, sql))
        .await
        .map_err(|e| e.to_string())?
        .ok_or("no row")?
        .try_get::<i64>("", "v")
        .map_err(|e| e.to_string())
}

/// A signed-in administrator of the seeded store: its token.
async fn admin_session(db: &DatabaseConnection) -> Result<String, String> {
    let token = keyledger::auth::token::generate();
    let sql = format!(
        "WITH a AS (INSERT INTO accounts (email, password_hash, email_verified_at, role, \
         require_manual_approval, allow_override_assignee, notify_on_claim, \
         allow_assignee_organization, created_at) VALUES ('bench-admin@bench-admin.example.com', \
         'x', now(), 'ADMIN', false, false, true, false, now()) RETURNING id) \
         INSERT INTO sessions (account_id, token_hash, created_at, expires_at) \
         SELECT id, '{}', now(), now() + interval '1 day' FROM a",
        keyledger::auth::token::hash(&token)
    );
    db.execute_unprepared(&sql)
        .await
        .map_err(|e| format!("admin session: {e}"))?;
    Ok(token)
}

/// `EXPLAIN (ANALYZE, BUFFERS)` of the statement each filter runs (its
/// first call's values), as markdown.
async fn explain_all(db: &DatabaseConnection, ids: &Ids) -> Result<String, String> {
    let mut out = String::from(
        "# PostgreSQL plans of the admin filters\n\n\
         Written by `cargo bench --bench load -- admin` on its 1,000,000-key store \
         (benches/load/admin.rs): each filter's statement for a page of 20, with the \
         values of the bench's first call. Events are read in delivery order below \
         the horizon (`tx < …`); the key filter first finds the key's id by its \
         unique index (current or retired string).\n",
    );
    for case in CASES {
        let value = (case.filter)(1, ids);
        let statement = statement(db, case, &value).await?;
        let Some(statement) = statement else {
            continue;
        };
        let sql = statement.to_string();
        let rows = db
            .query_all_raw(Statement::from_string(
                DbBackend::Postgres,
                format!("EXPLAIN (ANALYZE, BUFFERS) {sql}"),
            ))
            .await
            .map_err(|e| format!("explain {}: {e}", case.name))?;
        let _ = write!(
            out,
            "\n## {} `{}`\n\n```sql\n{sql}\n```\n\n```\n",
            case.name, value
        );
        for row in rows {
            let line: String = row.try_get("", "QUERY PLAN").map_err(|e| e.to_string())?;
            let _ = writeln!(out, "{line}");
        }
        out.push_str("```\n");
    }
    Ok(out)
}

/// The statement `case` runs for `value`, built by the same functions as the server's.
async fn statement(
    db: &DatabaseConnection,
    case: &Case,
    value: &Value,
) -> Result<Option<Statement>, String> {
    let text = |field: &str| value[field].as_str().map(str::to_owned);
    let time = |field: &str| {
        value[field]
            .as_str()
            .and_then(|t| t.parse::<chrono::DateTime<chrono::Utc>>().ok())
    };
    let e = |e: keyledger::error::AppError| e.detail();
    let limit = 21;
    Ok(match case.field {
        "accounts" => {
            let filter = filters::AccountFilter {
                email: text("email"),
                role: text("role").map(|_| entity::account::AccountRole::Admin),
                verified: value["verified"].as_bool(),
                disabled: value["disabled"].as_bool(),
            };
            Some(
                filters::accounts_query(DbBackend::Postgres, &filter, None, limit)
                    .map_err(e)?
                    .build(DbBackend::Postgres),
            )
        }
        "orders" => {
            let filter = filters::OrderFilter {
                number: text("number"),
                owner_email: text("ownerEmail"),
                assignee_email: text("assigneeEmail"),
                product: text("product"),
                status: text("status").map(|_| entity::order::OrderStatus::PendingPayment),
                created: filters::TimeRange {
                    after: time("createdAfter"),
                    before: time("createdBefore"),
                },
                paid: filters::TimeRange {
                    after: time("paidAfter"),
                    before: time("paidBefore"),
                },
            };
            Some(
                filters::orders_query(&filter, None, limit)
                    .map_err(e)?
                    .build(DbBackend::Postgres),
            )
        }
        "licenses" => {
            let filter = filters::LicenseFilter {
                key: text("key"),
                assignee_email: text("assigneeEmail"),
                assigned: text("status").map(|s| s == "ASSIGNED"),
                order_id: text("orderId").and_then(|id| id.parse().ok()),
            };
            filters::licenses_query(db, &filter, None, limit)
                .await
                .map_err(e)?
                .map(|q| q.build(DbBackend::Postgres))
        }
        _ => {
            use keyledger::events::EventKind;
            let kinds = value["kinds"].as_array().map(|kinds| {
                kinds
                    .iter()
                    .filter_map(|k| serde_json::from_value::<EventKind>(k.clone()).ok())
                    .collect()
            });
            let filter = filters::EventFilter {
                kinds,
                account_email: text("accountEmail"),
                order_id: text("orderId").and_then(|id| id.parse().ok()),
                occurred: filters::TimeRange {
                    after: time("after"),
                    before: time("before"),
                },
            };
            let mut condition = filters::event_condition(db, &filter).await.map_err(e)?;
            if case.field == "auditLog" {
                condition = condition.add(filters::audit_log());
            }
            Some(filters::events_query(condition, limit).build(DbBackend::Postgres))
        }
    })
}
