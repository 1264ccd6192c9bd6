//! Start-up: instances started together on an empty database all come up.
use crate::harness::unique;

/// An empty database of the test's own (no template): PostgreSQL with
/// `TEST_DATABASE_URL`, else a fresh SQLite file. The guard drops it.
struct EmptyDb {
    url: String,
    admin: Option<(String, String)>,
    _dir: Option<tempfile::TempDir>,
}

impl EmptyDb {
    async fn create() -> EmptyDb {
        use sea_orm::ConnectionTrait;
        match std::env::var("TEST_DATABASE_URL") {
            Ok(admin_url) if !admin_url.is_empty() => {
                let name = unique("kl_empty");
                let admin = sea_orm::Database::connect(&admin_url).await.unwrap();
                admin
                    .execute_unprepared(&format!("CREATE DATABASE {name}"))
                    .await
                    .unwrap();
                admin.close().await.ok();
                let mut url = url::Url::parse(&admin_url).unwrap();
                url.set_path(&format!("/{name}"));
                EmptyDb {
                    url: url.to_string(),
                    admin: Some((admin_url, name)),
                    _dir: None,
                }
            }
            _ => {
                let dir = tempfile::tempdir().unwrap();
                let path = dir.path().join("keyledger.db");
                EmptyDb {
                    url: format!("sqlite://{}?mode=rwc", path.display()),
                    admin: None,
                    _dir: Some(dir),
                }
            }
        }
    }

    async fn drop_database(&self) {
        use sea_orm::ConnectionTrait;
        if let Some((admin_url, name)) = &self.admin {
            let admin = sea_orm::Database::connect(admin_url).await.unwrap();
            admin
                .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .await
                .ok();
            admin.close().await.ok();
        }
    }
}

/// Three instances starting at once on an empty database each migrate or
/// wait for the one migrating (PostgreSQL: an advisory lock), and all end up
/// with the whole schema.
#[tokio::test]
async fn instances_starting_together_on_an_empty_database_all_start() {
    let db = EmptyDb::create().await;
    let (a, b, c) = tokio::join!(
        keyledger::db::connect(&db.url),
        keyledger::db::connect(&db.url),
        keyledger::db::connect(&db.url),
    );
    let connections: Vec<_> = [a, b, c]
        .into_iter()
        .enumerate()
        .map(|(i, r)| r.unwrap_or_else(|e| panic!("instance {i} did not start: {e}")))
        .collect();
    use migration::MigratorTrait;
    for connection in &connections {
        let pending = migration::Migrator::get_pending_migrations(connection)
            .await
            .unwrap();
        assert!(pending.is_empty(), "every migration applied");
    }
    for connection in connections {
        connection.close().await.ok();
    }
    db.drop_database().await;
}
