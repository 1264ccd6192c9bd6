use std::collections::HashSet;

use sea_orm_migration::{prelude::*, schema::*, sea_orm::DatabaseBackend};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261202_000001_create_products"
    }
}

/// Longest product code (kept here, not shared with the application: a
/// migration keeps meaning what it meant when it was written).
const CODE_MAX: usize = 64;
/// Longest product name.
const NAME_MAX: usize = 100;

/// The product catalog, managed by administrators. Orders used to carry a
/// free-text product name, which went into emails as the client wrote it;
/// now `orders.product` holds a catalog code and emails use the catalog's
/// name.
///
/// Every distinct `orders.product` text becomes a product whose name is that
/// text and whose code is the text itself when it already is a valid code,
/// else one derived from it ([`derive_code`]); the orders then hold the code.
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Products::Table)
                    .col(big_pk_auto(Products::Id))
                    // 1 to 64 of `[A-Za-z0-9._-]`, case-sensitive; never changes
                    // (orders refer to it).
                    .col(string_len_uniq(Products::Code, CODE_MAX as u32))
                    // Shown to people and in emails; chosen by an administrator.
                    .col(string_len(Products::Name, NAME_MAX as u32))
                    // Price of one key in minor units (cents) of the currency;
                    // both set or both NULL.
                    .col(big_integer_null(Products::UnitPriceAmount))
                    // ISO 4217, three upper-case letters.
                    .col(string_len_null(Products::UnitPriceCurrency, 3))
                    .col(timestamp_with_time_zone(Products::CreatedAt))
                    .col(timestamp_with_time_zone(Products::UpdatedAt))
                    .to_owned(),
            )
            .await?;
        move_order_products(manager).await?;
        if manager.get_database_backend() == DatabaseBackend::Postgres {
            // SQLite cannot add a foreign key without rebuilding the table;
            // there the application alone keeps orders on catalog codes.
            manager
                .get_connection()
                .execute_unprepared(
                    "ALTER TABLE orders ADD CONSTRAINT orders_product_fkey \
                     FOREIGN KEY (product) REFERENCES products (code)",
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        if manager.get_database_backend() == DatabaseBackend::Postgres {
            db.execute_unprepared("ALTER TABLE orders DROP CONSTRAINT orders_product_fkey")
                .await?;
        }
        db.execute_unprepared(
            "UPDATE orders SET product = \
             (SELECT name FROM products WHERE products.code = orders.product) \
             WHERE product IN (SELECT code FROM products)",
        )
        .await?;
        manager
            .drop_table(Table::drop().table(Products::Table).to_owned())
            .await
    }
}

/// One product per distinct `orders.product` text, created when its first
/// order was; the orders then refer to its code.
async fn move_order_products(manager: &SchemaManager<'_>) -> Result<(), DbErr> {
    let db = manager.get_connection();
    let backend = manager.get_database_backend();
    let distinct = Query::select()
        .distinct()
        .column(Orders::Product)
        .from(Orders::Table)
        .order_by(Orders::Product, Order::Asc)
        .to_owned();
    let mut texts = Vec::new();
    for row in db.query_all_raw(backend.build(&distinct)).await? {
        texts.push(row.try_get::<String>("", "product")?);
    }
    for (text, code) in assign_codes(&texts) {
        let name = product_name(&text, &code);
        let insert = Query::insert()
            .into_table(Products::Table)
            .columns([
                Products::Code,
                Products::Name,
                Products::CreatedAt,
                Products::UpdatedAt,
            ])
            .select_from(
                Query::select()
                    .expr(Expr::val(code.clone()))
                    .expr(Expr::val(name))
                    .expr(Func::min(Expr::col(Orders::CreatedAt)))
                    .expr(Func::min(Expr::col(Orders::CreatedAt)))
                    .from(Orders::Table)
                    .and_where(Expr::col(Orders::Product).eq(text.clone()))
                    .to_owned(),
            )
            .map_err(|e| DbErr::Migration(e.to_string()))?
            .to_owned();
        db.execute_raw(backend.build(&insert)).await?;
        if code != text {
            let update = Query::update()
                .table(Orders::Table)
                .value(Orders::Product, code)
                .and_where(Expr::col(Orders::Product).eq(text))
                .to_owned();
            db.execute_raw(backend.build(&update)).await?;
        }
    }
    Ok(())
}

/// The code of each text, distinct and valid. A text that is already a valid
/// code keeps it, so no derived code can equal another text (the orders'
/// updates then never mix two products up); the others get
/// [`derive_code`]'s, made unique with a `-2`, `-3`… suffix.
pub fn assign_codes(texts: &[String]) -> Vec<(String, String)> {
    let mut taken: HashSet<String> = texts.iter().filter(|t| is_code(t)).cloned().collect();
    texts
        .iter()
        .map(|text| {
            if is_code(text) {
                return (text.clone(), text.clone());
            }
            let base = derive_code(text);
            let mut code = base.clone();
            let mut n = 2;
            while taken.contains(&code) {
                let suffix = format!("-{n}");
                let keep = base.len().min(CODE_MAX - suffix.len());
                code = format!("{}{suffix}", &base[..keep]);
                n += 1;
            }
            taken.insert(code.clone());
            (text.clone(), code)
        })
        .collect()
}

/// A valid product code: 1 to 64 of `[A-Za-z0-9._-]`.
pub fn is_code(s: &str) -> bool {
    (1..=CODE_MAX).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// A code from free text: allowed characters kept, every run of others
/// (spaces, punctuation, accents) one dash, no dash at either end, at most
/// 64 characters; `product` when nothing is left.
pub fn derive_code(text: &str) -> String {
    let mut code = String::new();
    for c in text.chars() {
        if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
            code.push(c);
        } else if !code.ends_with('-') {
            code.push('-');
        }
    }
    let code = code.trim_matches('-');
    let code = &code[..code.len().min(CODE_MAX)];
    let code = code.trim_end_matches('-');
    if code.is_empty() {
        "product".to_owned()
    } else {
        code.to_owned()
    }
}

/// The product's name: the order's text (trimmed, at most 100 characters),
/// or the code for a blank one.
fn product_name(text: &str, code: &str) -> String {
    let name: String = text.trim().chars().take(NAME_MAX).collect();
    if name.is_empty() {
        code.to_owned()
    } else {
        name
    }
}

#[derive(DeriveIden)]
enum Products {
    Table,
    Id,
    Code,
    Name,
    UnitPriceAmount,
    UnitPriceCurrency,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Orders {
    Table,
    Product,
    CreatedAt,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_codes_keep_allowed_characters_and_dash_the_rest() {
        assert_eq!(derive_code("Keyledger Pro"), "Keyledger-Pro");
        assert_eq!(derive_code("  Pro  (2024 edition)! "), "Pro-2024-edition");
        assert_eq!(derive_code("Café crème v1.2_b"), "Caf-cr-me-v1.2_b");
        assert_eq!(derive_code("€€€"), "product");
        assert_eq!(derive_code(&"x".repeat(100)).len(), CODE_MAX);
        assert!(is_code(&derive_code(&format!("{} y", "x".repeat(63)))));
    }

    #[test]
    fn texts_that_are_codes_keep_them_and_collisions_get_a_suffix() {
        let texts: Vec<String> = ["Pro Max", "Pro-Max", "Pro/Max", "Basic"]
            .map(String::from)
            .to_vec();
        let codes: Vec<String> = assign_codes(&texts).into_iter().map(|(_, c)| c).collect();
        assert_eq!(codes, ["Pro-Max-2", "Pro-Max", "Pro-Max-3", "Basic"]);
        let long = vec![
            format!("{} a", "x".repeat(70)),
            format!("{} b", "x".repeat(70)),
        ];
        let codes: Vec<String> = assign_codes(&long).into_iter().map(|(_, c)| c).collect();
        assert_eq!(codes[0], "x".repeat(64));
        assert_eq!(codes[1], format!("{}-2", "x".repeat(62)));
    }
}
