//! Relay connections over id-ordered lists: `first` (default 20, at most 100)
//! and `after` (the cursor of the last edge seen, an opaque string).
use std::{fmt::Display, str::FromStr};

use async_graphql::{
    Context, Lookahead, OutputType,
    connection::{Connection, Edge},
};

use crate::error::{ApiResult, AppError};

/// What the connection this field returns selects of its items
/// (`edges { node { … } }`): what a page reads for all of them at once.
pub fn nodes<'a>(ctx: &'a Context<'_>) -> Lookahead<'a> {
    ctx.look_ahead().field("edges").field("node")
}

pub const DEFAULT_PAGE: i32 = 20;
pub const MAX_PAGE: i32 = 100;

/// A page request over a list ordered by cursors of type `C` (row ids by
/// default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Page<C = i64> {
    pub after: Option<C>,
    pub first: u64,
}

impl Page {
    /// A page over a list ordered by row id.
    pub fn new(first: Option<i32>, after: Option<String>) -> ApiResult<Self> {
        Self::parse(first, after)
    }
}

impl<C: FromStr + Display> Page<C> {
    pub fn parse(first: Option<i32>, after: Option<String>) -> ApiResult<Self> {
        let first = first.unwrap_or(DEFAULT_PAGE);
        if !(0..=MAX_PAGE).contains(&first) {
            return Err(AppError::validation(
                "first",
                format!("first must be between 0 and {MAX_PAGE}"),
            ));
        }
        let after = after
            .map(|a| {
                a.parse::<C>()
                    .map_err(|_| AppError::validation("after", "not a cursor"))
            })
            .transpose()?;
        Ok(Page {
            after,
            first: first as u64,
        })
    }

    /// Rows to fetch: one more than the page, to learn whether there is a next page.
    pub fn fetch(&self) -> u64 {
        self.first + 1
    }

    /// Build the connection from up to `fetch()` rows, ordered by `cursor`.
    pub fn connection<M, N: OutputType>(
        &self,
        rows: Vec<M>,
        cursor: impl Fn(&M) -> C,
        mut node: impl FnMut(M) -> N,
    ) -> Connection<String, N> {
        let has_next = rows.len() as u64 > self.first;
        let mut connection = Connection::new(self.after.is_some(), has_next);
        connection.edges.extend(
            rows.into_iter()
                .take(self.first as usize)
                .map(|row| Edge::new(cursor(&row).to_string(), node(row))),
        );
        connection
    }
}

/// Parse an `ID` argument holding a row id; `NOT_FOUND` when it cannot be one.
pub fn parse_id(id: &async_graphql::ID, what: &'static str) -> ApiResult<i64> {
    id.parse::<i64>().map_err(|_| AppError::NotFound(what))
}
