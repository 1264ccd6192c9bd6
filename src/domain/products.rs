//! The product catalog, managed by administrators. Orders name a product by
//! its code, and emails name it by the catalog's name: text a client typed
//! never reaches anyone's mailbox.
use entity::product;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter,
    QueryOrder, SqlErr,
};
use serde_json::json;

use super::Ctx;
use crate::{
    auth::Viewer,
    error::{ApiResult, AppError},
    events::{self, EventKind, NewEvent},
};

/// Longest product code. Codes are 1 to 64 of `[A-Za-z0-9._-]` and
/// case-sensitive: short, URL- and log-safe identifiers a store's other
/// systems can carry around. A code never changes (orders refer to it).
pub const CODE_MAX: usize = 64;
/// Longest product name, in characters (the limit order products had).
pub const NAME_MAX: usize = 100;

/// A price: `amount` in minor units (cents) of `currency` (ISO 4217).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Price {
    pub amount: i64,
    pub currency: String,
}

/// A new product as the administrator wrote it (checked by [`create`]).
pub struct NewProduct {
    pub code: String,
    pub name: String,
    pub unit_price: Option<Price>,
}

/// A change to a product; `None` keeps the current value.
#[derive(Default)]
pub struct ProductChange {
    pub name: Option<String>,
    /// `Some(None)` removes the price.
    pub unit_price: Option<Option<Price>>,
}

/// `raw` trimmed, if it is a valid product code (else `VALIDATION` on `field`).
pub fn parse_code(raw: &str, field: &'static str) -> ApiResult<String> {
    let code = raw.trim();
    let valid = (1..=CODE_MAX).contains(&code.len())
        && code
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if valid {
        Ok(code.to_owned())
    } else {
        Err(AppError::validation(
            field,
            format!("a product code is 1 to {CODE_MAX} letters, digits, '.', '_' or '-'"),
        ))
    }
}

/// `raw` trimmed, if it is 1 to [`NAME_MAX`] characters without control characters.
pub fn parse_name(raw: &str) -> ApiResult<String> {
    let name = raw.trim();
    if name.is_empty() || name.chars().count() > NAME_MAX || name.chars().any(char::is_control) {
        return Err(AppError::validation(
            "name",
            format!("a product name is 1 to {NAME_MAX} characters, on one line"),
        ));
    }
    Ok(name.to_owned())
}

/// A price with a non-negative amount and an ISO 4217 currency code (three
/// letters, upper-cased here: payment providers often send them lower-case).
pub fn parse_price(amount: i64, currency: &str) -> ApiResult<Price> {
    if amount < 0 {
        return Err(AppError::validation(
            "unitPrice.amount",
            "a price is zero or more, in minor units",
        ));
    }
    let currency = currency.trim().to_ascii_uppercase();
    if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(AppError::validation(
            "unitPrice.currency",
            "a currency is an ISO 4217 code of three letters, e.g. EUR",
        ));
    }
    Ok(Price { amount, currency })
}

fn checked_price(price: Price) -> ApiResult<Price> {
    parse_price(price.amount, &price.currency)
}

/// A product's price, when it has one.
pub fn price(product: &product::Model) -> Option<Price> {
    Some(Price {
        amount: product.unit_price_amount?,
        currency: product.unit_price_currency.clone()?,
    })
}

/// The product as recorded in the audit trail.
fn audit_json(product: &product::Model) -> serde_json::Value {
    json!({
        "code": product.code,
        "name": product.name,
        "unitPrice": price(product).map(|p| json!({"amount": p.amount, "currency": p.currency})),
    })
}

/// Administrators: add a product to the catalog (`CONFLICT` for a code in use).
pub async fn create(ctx: &Ctx, viewer: &Viewer, new: NewProduct) -> ApiResult<product::Model> {
    viewer.require_admin()?;
    let code = parse_code(&new.code, "code")?;
    let name = parse_name(&new.name)?;
    let unit_price = new.unit_price.map(checked_price).transpose()?;
    let now = ctx.clock.now();
    let txn = ctx.begin_write().await?;
    if find(&txn, &code).await?.is_some() {
        return Err(code_taken());
    }
    let created = product::ActiveModel {
        code: Set(code),
        name: Set(name),
        unit_price_amount: Set(unit_price.as_ref().map(|p| p.amount)),
        unit_price_currency: Set(unit_price.map(|p| p.currency)),
        created_at: Set(now),
        updated_at: Set(now),
        ..Default::default()
    }
    .insert(&txn)
    .await
    .map_err(|e| match e.sql_err() {
        // Two creations of one code at the same moment: the constraint decides.
        Some(SqlErr::UniqueConstraintViolation(_)) => code_taken(),
        _ => e.into(),
    })?;
    let mut event = NewEvent::new(EventKind::ProductCreated, Some(viewer.account_id));
    event.changes = json!({"after": audit_json(&created)});
    event.recipients = vec![viewer.account_id];
    events::record(&txn, now, event).await?;
    txn.commit().await?;
    Ok(created)
}

fn code_taken() -> AppError {
    AppError::conflict("a product with this code already exists")
}

/// Administrators: rename a product or change its price. Its code stays.
pub async fn update(
    ctx: &Ctx,
    viewer: &Viewer,
    code: &str,
    change: ProductChange,
) -> ApiResult<product::Model> {
    viewer.require_admin()?;
    let name = change.name.as_deref().map(parse_name).transpose()?;
    let unit_price = change
        .unit_price
        .map(|p| p.map(checked_price).transpose())
        .transpose()?;
    let now = ctx.clock.now();
    let txn = ctx.begin_write().await?;
    let before = find(&txn, code.trim())
        .await?
        .ok_or(AppError::NotFound("product"))?;
    let mut changed: product::ActiveModel = before.clone().into();
    if let Some(name) = name {
        changed.name = Set(name);
    }
    if let Some(unit_price) = unit_price {
        changed.unit_price_amount = Set(unit_price.as_ref().map(|p| p.amount));
        changed.unit_price_currency = Set(unit_price.map(|p| p.currency));
    }
    changed.updated_at = Set(now);
    let after = changed.update(&txn).await?;
    if audit_json(&before) != audit_json(&after) {
        let mut event = NewEvent::new(EventKind::ProductUpdated, Some(viewer.account_id));
        event.changes = json!({"before": audit_json(&before), "after": audit_json(&after)});
        event.recipients = vec![viewer.account_id];
        events::record(&txn, now, event).await?;
    }
    txn.commit().await?;
    Ok(after)
}

/// The product with this code, if any.
pub async fn find(conn: &impl ConnectionTrait, code: &str) -> ApiResult<Option<product::Model>> {
    Ok(product::Entity::find()
        .filter(product::Column::Code.eq(code))
        .one(conn)
        .await?)
}

/// The catalog product an order names: `raw` must be an existing code
/// (`VALIDATION` on `product` otherwise).
pub async fn for_order(conn: &impl ConnectionTrait, raw: &str) -> ApiResult<product::Model> {
    let unknown = || AppError::validation("product", "no product has this code");
    let code = parse_code(raw, "product").map_err(|_| unknown())?;
    find(conn, &code).await?.ok_or_else(unknown)
}

/// The name emails give the product `code`: the catalog's, chosen by an
/// administrator. Orders always name a catalog product; should one not, the
/// code (which passed [`parse_code`]) stands in.
pub async fn display_name(conn: &impl ConnectionTrait, code: &str) -> ApiResult<String> {
    Ok(find(conn, code)
        .await?
        .map_or_else(|| code.to_owned(), |p| p.name))
}

/// The whole catalog, by code. It is written by administrators only, so it
/// stays small enough to list at once.
pub async fn list(conn: &impl ConnectionTrait) -> ApiResult<Vec<product::Model>> {
    Ok(product::Entity::find()
        .order_by_asc(product::Column::Code)
        .all(conn)
        .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_short_safe_identifiers() {
        assert_eq!(
            parse_code(" pro-2024.v1_b ", "code").unwrap(),
            "pro-2024.v1_b"
        );
        for bad in ["", "a b", "pro!", "é", "<b>", &"x".repeat(CODE_MAX + 1)] {
            assert!(parse_code(bad, "code").is_err(), "{bad}");
        }
        assert!(parse_code(&"x".repeat(CODE_MAX), "code").is_ok());
    }

    #[test]
    fn names_are_one_line_of_at_most_100_characters() {
        assert_eq!(parse_name("  Keyledger Pro ").unwrap(), "Keyledger Pro");
        assert!(parse_name(&"é".repeat(NAME_MAX)).is_ok());
        for bad in ["", "   ", "a\nb", "a\rBcc: x", &"x".repeat(NAME_MAX + 1)] {
            assert!(parse_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn prices_are_non_negative_with_an_iso_currency() {
        assert_eq!(
            parse_price(1999, "eur").unwrap(),
            Price {
                amount: 1999,
                currency: "EUR".into()
            }
        );
        assert!(parse_price(0, "USD").is_ok());
        assert!(parse_price(-1, "USD").is_err());
        for bad in ["", "EU", "EURO", "E1R", "€UR"] {
            assert!(parse_price(1, bad).is_err(), "{bad}");
        }
    }
}
