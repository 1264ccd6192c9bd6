use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "events")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    /// With `id`, the delivery order and a subscriber's cursor: on
    /// PostgreSQL the id of the transaction that wrote the row (set by the
    /// column's default), on SQLite 0 (see `keyledger::events::cursor`).
    pub tx: i64,
    pub kind: EventKind,
    pub actor_id: Option<i64>,
    pub order_id: Option<i64>,
    pub license_id: Option<i64>,
    pub claim_id: Option<i64>,
    pub request_id: Option<i64>,
    pub transfer_id: Option<i64>,
    #[sea_orm(column_type = "Text")]
    pub changes: String,
    pub occurred_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

/// What happened (api.md "Subscription").
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum, Serialize, Deserialize,
)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::None)")]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EventKind {
    #[sea_orm(string_value = "CLAIM_CREATED")]
    ClaimCreated,
    #[sea_orm(string_value = "CLAIM_APPROVED")]
    ClaimApproved,
    #[sea_orm(string_value = "CLAIM_DECLINED")]
    ClaimDeclined,
    #[sea_orm(string_value = "REQUEST_CREATED")]
    RequestCreated,
    #[sea_orm(string_value = "REQUEST_APPROVED")]
    RequestApproved,
    #[sea_orm(string_value = "REQUEST_DECLINED")]
    RequestDeclined,
    #[sea_orm(string_value = "REQUEST_EXPIRED")]
    RequestExpired,
    #[sea_orm(string_value = "LICENSE_ASSIGNED")]
    LicenseAssigned,
    #[sea_orm(string_value = "LICENSE_UNASSIGNED")]
    LicenseUnassigned,
    /// A key got a new string (`reissueLicense`); the event carries no key string.
    #[sea_orm(string_value = "LICENSE_REISSUED")]
    LicenseReissued,
    #[sea_orm(string_value = "ORGANIZATION_CHANGED")]
    OrganizationChanged,
    #[sea_orm(string_value = "TRANSFER_STARTED")]
    TransferStarted,
    #[sea_orm(string_value = "TRANSFER_ACCEPTED")]
    TransferAccepted,
    #[sea_orm(string_value = "TRANSFER_CANCELLED")]
    TransferCancelled,
    #[sea_orm(string_value = "DEVICE_ACTIVATED")]
    DeviceActivated,
    #[sea_orm(string_value = "DEVICE_DEACTIVATED")]
    DeviceDeactivated,
    #[sea_orm(string_value = "ORDER_CREATED")]
    OrderCreated,
    #[sea_orm(string_value = "ORDER_PAID")]
    OrderPaid,
    #[sea_orm(string_value = "CLAIM_SETTINGS_CHANGED")]
    ClaimSettingsChanged,
    /// An administrator added a product to the catalog.
    #[sea_orm(string_value = "PRODUCT_CREATED")]
    ProductCreated,
    /// An administrator renamed a product or changed its price.
    #[sea_orm(string_value = "PRODUCT_UPDATED")]
    ProductUpdated,
    /// An account's password was changed or reset by email (`changes.reason`);
    /// other sessions were revoked.
    #[sea_orm(string_value = "PASSWORD_CHANGED")]
    PasswordChanged,
    /// An account's email address changed, once the new one was verified.
    #[sea_orm(string_value = "EMAIL_CHANGED")]
    EmailChanged,
    /// An order was refunded (`refundOrder`, or the payment provider's
    /// refund): its keys stop working. `changes.reason` says why.
    #[sea_orm(string_value = "ORDER_REFUNDED")]
    OrderRefunded,
    // Administration (support actions); the reason is `changes.reason`.
    /// An administrator disabled an account; its sessions ended.
    #[sea_orm(string_value = "ACCOUNT_DISABLED")]
    AccountDisabled,
    /// An administrator enabled a disabled account again.
    #[sea_orm(string_value = "ACCOUNT_ENABLED")]
    AccountEnabled,
    /// An administrator ended every session of an account.
    #[sea_orm(string_value = "SESSIONS_REVOKED")]
    SessionsRevoked,
    /// An administrator sent an account's verification or transfer email again.
    #[sea_orm(string_value = "EMAIL_RESENT")]
    EmailResent,
    /// The owner suspended a key (`suspendLicense`).
    #[sea_orm(string_value = "LICENSE_SUSPENDED")]
    LicenseSuspended,
    /// The owner resumed a suspended key (`resumeLicense`).
    #[sea_orm(string_value = "LICENSE_RESUMED")]
    LicenseResumed,
    /// A device of a heartbeat order stopped reporting and lost its seat.
    #[sea_orm(string_value = "DEVICE_EXPIRED")]
    DeviceExpired,
    /// An administrator registered an outbound webhook endpoint.
    #[sea_orm(string_value = "WEBHOOK_ENDPOINT_CREATED")]
    WebhookEndpointCreated,
    /// An endpoint's URL, kinds, description or state changed (by an
    /// administrator, or by keyledger after 5 days of failures).
    #[sea_orm(string_value = "WEBHOOK_ENDPOINT_UPDATED")]
    WebhookEndpointUpdated,
    #[sea_orm(string_value = "WEBHOOK_ENDPOINT_DELETED")]
    WebhookEndpointDeleted,
    /// An endpoint got a new signing secret (the event carries neither).
    #[sea_orm(string_value = "WEBHOOK_SECRET_ROTATED")]
    WebhookSecretRotated,
}
