use sea_orm_migration::{prelude::*, schema::*, sea_orm::DatabaseBackend};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261203_000020_admin_support"
    }
}

/// Administration: disabled accounts, and an index for each filter of the
/// `admin` lists, so that each stays an index read on a store of a million
/// keys (docs/admin.md lists which index serves which filter).
///
/// - `accounts.disabled_at`: set by `disableAccount`, cleared by
///   `enableAccount`; a disabled account cannot sign in and its sessions
///   no longer authenticate.
/// - An email prefix is matched as a range of the binary (code point)
///   order, `email >= p AND email < p || U+10FFFF`. SQLite's unique index on
///   `email` is in that order already; on PostgreSQL the unique index
///   follows the database's collation, so a second index compares with
///   `COLLATE "C"`.
/// - Low-cardinality flags (unverified, disabled, assigned) get partial
///   indexes over the few rows that have them; the common side of each flag
///   is read along the primary key. Unassigned keys get no index: they are
///   most keys, and paying a 100,000-key order would write 100,000 entries.
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Accounts::Table)
                    // When an administrator disabled the account; NULL while it is enabled.
                    .add_column(timestamp_with_time_zone_null(Accounts::DisabledAt))
                    .to_owned(),
            )
            .await?;
        let postgres = manager.get_database_backend() == DatabaseBackend::Postgres;
        let mut statements = vec![
            "CREATE INDEX accounts_role ON accounts (role, id)",
            "CREATE INDEX accounts_unverified ON accounts (id) WHERE email_verified_at IS NULL",
            "CREATE INDEX accounts_disabled ON accounts (id) WHERE disabled_at IS NOT NULL",
            "CREATE INDEX orders_product ON orders (product, id)",
            "CREATE INDEX orders_status ON orders (status, id)",
            "CREATE INDEX orders_created_at ON orders (created_at, id)",
            "CREATE INDEX orders_paid_at ON orders (paid_at, id) WHERE paid_at IS NOT NULL",
            "CREATE INDEX licenses_assigned ON licenses (id) WHERE assignee_email IS NOT NULL",
            "CREATE INDEX events_kind ON events (kind, tx, id)",
            "CREATE INDEX events_actor ON events (actor_id, tx, id) WHERE actor_id IS NOT NULL",
            "CREATE INDEX events_occurred_at ON events (occurred_at, id)",
        ];
        if postgres {
            statements
                .push(r#"CREATE INDEX accounts_email_prefix ON accounts (email COLLATE "C")"#);
        }
        run(manager, &statements).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let postgres = manager.get_database_backend() == DatabaseBackend::Postgres;
        let mut statements = vec![
            "DROP INDEX accounts_role",
            "DROP INDEX accounts_unverified",
            "DROP INDEX accounts_disabled",
            "DROP INDEX orders_product",
            "DROP INDEX orders_status",
            "DROP INDEX orders_created_at",
            "DROP INDEX orders_paid_at",
            "DROP INDEX licenses_assigned",
            "DROP INDEX events_kind",
            "DROP INDEX events_actor",
            "DROP INDEX events_occurred_at",
        ];
        if postgres {
            statements.push("DROP INDEX accounts_email_prefix");
        }
        run(manager, &statements).await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Accounts::Table)
                    .drop_column(Accounts::DisabledAt)
                    .to_owned(),
            )
            .await
    }
}

async fn run(manager: &SchemaManager<'_>, statements: &[&str]) -> Result<(), DbErr> {
    let db = manager.get_connection();
    for sql in statements {
        db.execute_unprepared(sql).await?;
    }
    Ok(())
}

#[derive(DeriveIden)]
enum Accounts {
    Table,
    DisabledAt,
}
