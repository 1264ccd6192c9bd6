//! License key strings: `XXXX-XXXX-XXXX-XXXX` over Crockford's base32 alphabet
//! (no I, L, O, U), 80 random bits from the thread CSPRNG (ChaCha, seeded by
//! the OS). Input keys are normalised wherever one is accepted.
//!
//! A key (a license) can get a new string: [`reissue`]. Its old string is
//! filed in `retired_keys` and answers the licensed software for the same
//! key until its `valid_until` (the owner's grace; none when the key changed
//! hands), then `NOT_FOUND`. Retired strings are kept, so no string is ever
//! handed out twice.
use chrono::{DateTime, Utc};
use entity::{license, retired_key};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait,
    QueryFilter, QueryOrder, QuerySelect, sea_query::Expr,
};

use crate::error::{ApiResult, AppError};

/// Crockford base32: digits and capitals without the look-alikes I, L, O, U.
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
const GROUPS: usize = 4;
const GROUP_LEN: usize = 4;

/// A fresh random key. 32 symbols is a power of two, so masking a random byte
/// picks each symbol with equal probability.
pub fn generate() -> String {
    let mut bytes = [0u8; GROUPS * GROUP_LEN];
    rand::fill(&mut bytes);
    let mut key = String::with_capacity(19);
    for (i, byte) in bytes.iter().enumerate() {
        if i > 0 && i % GROUP_LEN == 0 {
            key.push('-');
        }
        key.push(ALPHABET[(byte & 31) as usize] as char);
    }
    key
}

/// The canonical form of a typed key: case, spaces, dashes and Crockford's
/// look-alikes (O→0, I/L→1) forgiven. `None` when it cannot be a key.
pub fn normalize(input: &str) -> Option<String> {
    let mut symbols = String::with_capacity(16);
    for c in input.chars() {
        let c = match c.to_ascii_uppercase() {
            ' ' | '-' | '\t' => continue,
            'O' => '0',
            'I' | 'L' => '1',
            c => c,
        };
        if !c.is_ascii() || !ALPHABET.contains(&(c as u8)) || symbols.len() == GROUPS * GROUP_LEN {
            return None;
        }
        symbols.push(c);
    }
    if symbols.len() != GROUPS * GROUP_LEN {
        return None;
    }
    let groups: Vec<&str> = (0..GROUPS)
        .map(|g| &symbols[g * GROUP_LEN..(g + 1) * GROUP_LEN])
        .collect();
    Some(groups.join("-"))
}

/// A fresh string that no key has now or ever had (current or retired).
/// With 80 random bits a draw that is taken is all but impossible; the
/// check makes it certain, and the unique indexes back it up.
pub async fn fresh_unique(conn: &impl ConnectionTrait) -> ApiResult<String> {
    for _ in 0..8 {
        let key = generate();
        let current = license::Entity::find()
            .filter(license::Column::Key.eq(&key))
            .count(conn)
            .await?;
        let retired = retired_key::Entity::find()
            .filter(retired_key::Column::Key.eq(&key))
            .count(conn)
            .await?;
        if current == 0 && retired == 0 {
            return Ok(key);
        }
    }
    Err(AppError::internal("key generation kept drawing taken keys"))
}

/// Give `license` (locked by the caller) a new string in the caller's
/// transaction and return the key as stored. The old string keeps working
/// for the same key until `valid_until` (`now`: not at all); strings retired
/// earlier that were still in their grace end then too, at the latest, so a
/// reissue never extends an older string's life.
pub async fn reissue(
    txn: &impl ConnectionTrait,
    license: license::Model,
    valid_until: DateTime<Utc>,
    now: DateTime<Utc>,
) -> ApiResult<license::Model> {
    retired_key::Entity::update_many()
        .col_expr(retired_key::Column::ValidUntil, Expr::value(valid_until))
        .filter(retired_key::Column::LicenseId.eq(license.id))
        .filter(retired_key::Column::ValidUntil.gt(valid_until))
        .exec(txn)
        .await?;
    retired_key::ActiveModel {
        license_id: Set(license.id),
        key: Set(license.key.clone()),
        retired_at: Set(now),
        valid_until: Set(valid_until),
        ..Default::default()
    }
    .insert(txn)
    .await?;
    let fresh = fresh_unique(txn).await?;
    let mut changed: license::ActiveModel = license.into();
    changed.key = Set(fresh);
    Ok(changed.update(txn).await?)
}

/// The key still answering to the retired string `key` (normalised) at
/// `now`, within its grace; `None` for any other string.
pub async fn in_grace(
    conn: &impl ConnectionTrait,
    key: &str,
    now: DateTime<Utc>,
) -> ApiResult<Option<i64>> {
    Ok(retired_key::Entity::find()
        .select_only()
        .column(retired_key::Column::LicenseId)
        .filter(retired_key::Column::Key.eq(key))
        .filter(retired_key::Column::ValidUntil.gt(now))
        .into_tuple::<i64>()
        .one(conn)
        .await?)
}

/// The string `license` had at `at`: for telling someone about the key they
/// used then (a claimer) without showing them a string given out since.
pub async fn string_at(
    conn: &impl ConnectionTrait,
    license: &license::Model,
    at: DateTime<Utc>,
) -> ApiResult<String> {
    let retired_since = retired_key::Entity::find()
        .select_only()
        .column(retired_key::Column::Key)
        .filter(retired_key::Column::LicenseId.eq(license.id))
        .filter(retired_key::Column::RetiredAt.gt(at))
        .order_by_asc(retired_key::Column::RetiredAt)
        .order_by_asc(retired_key::Column::Id)
        .into_tuple::<String>()
        .one(conn)
        .await?;
    Ok(retired_since.unwrap_or_else(|| license.key.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_have_the_format_and_round_trip() {
        for _ in 0..1000 {
            let key = generate();
            assert_eq!(key.len(), 19);
            assert_eq!(key.matches('-').count(), 3);
            assert_eq!(normalize(&key).as_deref(), Some(key.as_str()));
        }
    }

    #[test]
    fn normalises_case_spaces_dashes_and_look_alikes() {
        assert_eq!(
            normalize(" abcd efgh-jkmn pqrs ").as_deref(),
            Some("ABCD-EFGH-JKMN-PQRS")
        );
        assert_eq!(
            normalize("ABCDEFGHJKMNPQRS").as_deref(),
            Some("ABCD-EFGH-JKMN-PQRS")
        );
        assert_eq!(
            normalize("oil0-0000-0000-0000").as_deref(),
            Some("0110-0000-0000-0000")
        );
    }

    #[test]
    fn rejects_what_cannot_be_a_key() {
        for bad in [
            "",
            "ABCD",
            "ABCD-EFGH-JKMN-PQRSX",
            "ABCD-EFGH-JKMN-PQR!",
            "ÀBCD-EFGH-JKMN-PQRS",
            "UUUU-UUUU-UUUU-UUUU",
        ] {
            assert_eq!(normalize(bad), None, "{bad}");
        }
    }
}
