//! The product catalog: administrators write it, signed-in accounts read it.
use async_graphql::{Context, InputObject, MaybeUndefined, Object, SimpleObject};
use chrono::{DateTime, Utc};
use entity::product;

use super::ContextExt;
use crate::{domain::products, error::ApiResult};

/// A price in minor units (cents) of an ISO 4217 currency.
#[derive(SimpleObject)]
pub struct Money {
    pub amount: i64,
    pub currency: String,
}

#[derive(InputObject)]
pub struct MoneyInput {
    /// Minor units (cents), zero or more.
    pub amount: i64,
    /// ISO 4217, e.g. `EUR`.
    pub currency: String,
}

impl From<MoneyInput> for products::Price {
    fn from(input: MoneyInput) -> Self {
        products::Price {
            amount: input.amount,
            currency: input.currency,
        }
    }
}

/// A product of the catalog; orders name it by `code`.
pub struct Product(pub product::Model);

#[Object]
impl Product {
    /// 1 to 64 of `[A-Za-z0-9._-]`, case-sensitive; never changes.
    async fn code(&self) -> &str {
        &self.0.code
    }

    /// What people and emails call it.
    async fn name(&self) -> &str {
        &self.0.name
    }

    /// The price of one key, when set.
    async fn unit_price(&self) -> Option<Money> {
        products::price(&self.0).map(|p| Money {
            amount: p.amount,
            currency: p.currency,
        })
    }

    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }

    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }
}

#[derive(InputObject)]
pub struct CreateProductInput {
    /// 1 to 64 of `[A-Za-z0-9._-]`, case-sensitive; cannot change later.
    pub code: String,
    /// 1 to 100 characters, one line.
    pub name: String,
    pub unit_price: Option<MoneyInput>,
}

#[derive(InputObject)]
pub struct UpdateProductInput {
    /// Omitted: unchanged.
    pub name: Option<String>,
    /// Omitted: unchanged; null: no price.
    pub unit_price: MaybeUndefined<MoneyInput>,
}

#[derive(Default)]
pub struct ProductQuery;

#[Object]
impl ProductQuery {
    /// The catalog, by code (signed-in accounts: buyers pick a code for `createOrder`).
    async fn products(&self, ctx: &Context<'_>) -> ApiResult<Vec<Product>> {
        ctx.viewer()?;
        let rows = products::list(&ctx.state().ctx.db).await?;
        Ok(rows.into_iter().map(Product).collect())
    }
}

#[derive(Default)]
pub struct ProductMutation;

#[Object]
impl ProductMutation {
    /// Administrators: add a product (`CONFLICT` when the code is taken). Audited.
    async fn create_product(
        &self,
        ctx: &Context<'_>,
        input: CreateProductInput,
    ) -> ApiResult<Product> {
        let viewer = ctx.viewer()?;
        let new = products::NewProduct {
            code: input.code,
            name: input.name,
            unit_price: input.unit_price.map(Into::into),
        };
        Ok(Product(
            products::create(&ctx.state().ctx, viewer, new).await?,
        ))
    }

    /// Administrators: rename a product or change its price. Audited.
    async fn update_product(
        &self,
        ctx: &Context<'_>,
        code: String,
        input: UpdateProductInput,
    ) -> ApiResult<Product> {
        let viewer = ctx.viewer()?;
        let unit_price = match input.unit_price {
            MaybeUndefined::Undefined => None,
            MaybeUndefined::Null => Some(None),
            MaybeUndefined::Value(price) => Some(Some(price.into())),
        };
        let change = products::ProductChange {
            name: input.name,
            unit_price,
        };
        Ok(Product(
            products::update(&ctx.state().ctx, viewer, &code, change).await?,
        ))
    }
}
