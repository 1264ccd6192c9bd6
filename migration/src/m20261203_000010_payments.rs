use sea_orm_migration::{prelude::*, schema::*};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261203_000010_payments"
    }
}

/// Payments confirmed by a payment provider's webhook, and refunds. Every
/// event the provider delivers is recorded once in `payment_events` (a
/// unique provider + event id, inserted in the transaction of its effect), so
/// a replay, a retry or a concurrent copy finds it there and changes nothing.
/// The order keeps the facts of the payment that paid it.
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(PaymentEvents::Table)
                    .col(big_pk_auto(PaymentEvents::Id))
                    // `stripe`.
                    .col(string_len(PaymentEvents::Provider, 16))
                    // The provider's event id (Stripe's `evt_…`).
                    .col(string_len(PaymentEvents::EventId, 255))
                    // The event's type, e.g. `checkout.session.completed`.
                    .col(string_len(PaymentEvents::Kind, 128))
                    // The order it concerned, when one was found.
                    .col(big_integer_null(PaymentEvents::OrderId))
                    // The PaymentIntent it named (`pi_…`), if any: a refund
                    // that arrives before its payment is found by it.
                    .col(string_len_null(PaymentEvents::PaymentIntent, 255))
                    // What it did: PAID, REFUNDED, MISMATCH, UNKNOWN_ORDER,
                    // ALREADY_PAID, ALREADY_REFUNDED, NOT_PAID, IGNORED.
                    .col(string_len(PaymentEvents::Outcome, 32))
                    .col(timestamp_with_time_zone(PaymentEvents::ReceivedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("payment_events_provider_event")
                    .table(PaymentEvents::Table)
                    .col(PaymentEvents::Provider)
                    .col(PaymentEvents::EventId)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("payment_events_payment_intent")
                    .table(PaymentEvents::Table)
                    .col(PaymentEvents::PaymentIntent)
                    .to_owned(),
            )
            .await?;
        // One column per statement: SQLite alters one thing at a time.
        let columns = [
            // `stripe` or `manual` (an administrator's markOrderPaid); null
            // until paid.
            string_len_null(Orders::PaymentProvider, 16),
            // The provider's event that paid it.
            string_len_null(Orders::PaymentEventId, 255),
            // What was paid, in minor units of `payment_currency` (ISO 4217,
            // upper case).
            big_integer_null(Orders::PaymentAmount),
            string_len_null(Orders::PaymentCurrency, 3),
            // Stripe's PaymentIntent (`pi_…`): a `charge.refunded` finds the
            // order by it.
            string_len_null(Orders::PaymentIntent, 255),
            // Why a provider's confirmation did not pay it (amount or
            // currency not the catalog's, say), for administrators; cleared
            // when the order is paid.
            text_null(Orders::PaymentProblem),
            // When it was refunded (status REFUNDED).
            timestamp_with_time_zone_null(Orders::RefundedAt),
        ];
        for column in columns {
            manager
                .alter_table(
                    Table::alter()
                        .table(Orders::Table)
                        .add_column(column)
                        .to_owned(),
                )
                .await?;
        }
        // Orders paid so far were marked paid by an administrator.
        manager
            .get_connection()
            .execute_unprepared(
                "UPDATE orders SET payment_provider = 'manual' WHERE status = 'PAID'",
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("orders_payment_intent")
                    .table(Orders::Table)
                    .col(Orders::PaymentIntent)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name("orders_payment_intent")
                    .table(Orders::Table)
                    .to_owned(),
            )
            .await?;
        for column in [
            Orders::PaymentProvider,
            Orders::PaymentEventId,
            Orders::PaymentAmount,
            Orders::PaymentCurrency,
            Orders::PaymentIntent,
            Orders::PaymentProblem,
            Orders::RefundedAt,
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Orders::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        manager
            .drop_table(Table::drop().table(PaymentEvents::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum Orders {
    Table,
    PaymentProvider,
    PaymentEventId,
    PaymentAmount,
    PaymentCurrency,
    PaymentIntent,
    PaymentProblem,
    RefundedAt,
}

#[derive(DeriveIden)]
enum PaymentEvents {
    Table,
    Id,
    Provider,
    EventId,
    Kind,
    OrderId,
    PaymentIntent,
    Outcome,
    ReceivedAt,
}
