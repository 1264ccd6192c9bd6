//! What an API token may do. A token carries [`Scopes`]; every root field
//! of the schema declares in [`OPERATIONS`] what a token needs to call it,
//! and the schema checks that table once per operation, before anything
//! executes (`graphql::scopes`). Sessions (people signed in) are not
//! concerned: they have every right of their account.
//!
//! A root field's scope covers everything selected under it. A root field
//! missing from the table is refused to tokens, and the test suite fails
//! while any operation of the served schema has no row: a new operation is
//! one line here.
use std::fmt;

/// One right a token can be given. The string forms (`orders:read`) are
/// what people read; GraphQL spells them `ORDERS_READ`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    OrdersRead,
    OrdersWrite,
    LicensesRead,
    LicensesWrite,
    ClaimsWrite,
    EventsRead,
    /// Administrators' fields; only an administrator can grant it, and it
    /// works only while its account is one.
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 7] = [
        Scope::OrdersRead,
        Scope::OrdersWrite,
        Scope::LicensesRead,
        Scope::LicensesWrite,
        Scope::ClaimsWrite,
        Scope::EventsRead,
        Scope::Admin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::OrdersRead => "orders:read",
            Scope::OrdersWrite => "orders:write",
            Scope::LicensesRead => "licenses:read",
            Scope::LicensesWrite => "licenses:write",
            Scope::ClaimsWrite => "claims:write",
            Scope::EventsRead => "events:read",
            Scope::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|scope| scope.as_str() == text)
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The scopes of one token, a small set.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Scopes(u8);

impl Scopes {
    pub fn contains(self, scope: Scope) -> bool {
        self.0 & scope.bit() != 0
    }

    pub fn insert(&mut self, scope: Scope) {
        self.0 |= scope.bit();
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn iter(self) -> impl Iterator<Item = Scope> {
        Scope::ALL.into_iter().filter(move |s| self.contains(*s))
    }

    /// The stored form: `orders:read licenses:read`.
    pub fn to_column(self) -> String {
        self.iter().map(Scope::as_str).collect::<Vec<_>>().join(" ")
    }

    /// From the stored form; unknown words (a scope since removed) grant nothing.
    pub fn from_column(text: &str) -> Scopes {
        let mut scopes = Scopes::default();
        for scope in text.split_whitespace().filter_map(Scope::parse) {
            scopes.insert(scope);
        }
        scopes
    }
}

impl FromIterator<Scope> for Scopes {
    fn from_iter<I: IntoIterator<Item = Scope>>(iter: I) -> Self {
        let mut scopes = Scopes::default();
        for scope in iter {
            scopes.insert(scope);
        }
        scopes
    }
}

/// What an API token needs to call a root field.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Need {
    /// This scope.
    Scope(Scope),
    /// Any token (what the token itself may see: who it acts for, the catalog).
    AnyToken,
    /// Never with a token: the account's own credentials and settings of
    /// people (sign-in, passwords, email, sessions) and token management.
    Session,
}

use Need::{AnyToken, Session};
use Scope::*;

const fn scope(scope: Scope) -> Need {
    Need::Scope(scope)
}

/// Every root field of the schema: (root type, field, what a token needs).
/// Add a row with each new operation; keep each area's rows together.
pub const OPERATIONS: &[(&str, &str, Need)] = &[
    // Accounts: self-service is for people, never for programs.
    ("Query", "me", AnyToken),
    ("Mutation", "signUp", Session),
    ("Mutation", "verifyEmail", Session),
    ("Mutation", "resendVerificationEmail", Session),
    ("Mutation", "signIn", Session),
    ("Mutation", "signOut", Session),
    ("Mutation", "requestPasswordReset", Session),
    ("Mutation", "resetPassword", Session),
    ("Mutation", "changePassword", Session),
    ("Mutation", "changeEmail", Session),
    ("Mutation", "revokeSession", Session),
    // API tokens: a token never manages tokens.
    ("Mutation", "createApiToken", Session),
    ("Mutation", "revokeApiToken", Session),
    // Catalog.
    ("Query", "products", AnyToken),
    ("Mutation", "createProduct", scope(Admin)),
    ("Mutation", "updateProduct", scope(Admin)),
    // Orders, their transfers and organizations.
    ("Query", "orders", scope(OrdersRead)),
    ("Query", "order", scope(OrdersRead)),
    ("Query", "orderTransfers", scope(OrdersRead)),
    ("Mutation", "createOrder", scope(OrdersWrite)),
    ("Mutation", "markOrderPaid", scope(Admin)),
    ("Mutation", "refundOrder", scope(Admin)),
    ("Mutation", "setOrderManualApproval", scope(OrdersWrite)),
    ("Mutation", "setOrderHeartbeat", scope(OrdersWrite)),
    ("Mutation", "startOrderTransfer", scope(OrdersWrite)),
    ("Mutation", "acceptOrderTransfer", scope(OrdersWrite)),
    ("Mutation", "cancelOrderTransfer", scope(OrdersWrite)),
    ("Mutation", "createOrganization", scope(OrdersWrite)),
    ("Mutation", "addOrganizationMember", scope(OrdersWrite)),
    ("Mutation", "removeOrganizationMember", scope(OrdersWrite)),
    // Licenses (keys) and devices.
    ("Query", "license", scope(LicensesRead)),
    ("Query", "assignedLicenses", scope(LicensesRead)),
    ("Query", "validateLicense", AnyToken),
    ("Mutation", "checkOutLicense", AnyToken),
    ("Mutation", "heartbeatLicense", AnyToken),
    ("Mutation", "suspendLicense", scope(LicensesWrite)),
    ("Mutation", "resumeLicense", scope(LicensesWrite)),
    ("Mutation", "assignLicense", scope(LicensesWrite)),
    ("Mutation", "unassignLicense", scope(LicensesWrite)),
    ("Mutation", "reissueLicense", scope(LicensesWrite)),
    ("Mutation", "setLicenseOrganization", scope(LicensesWrite)),
    ("Mutation", "activateLicense", scope(LicensesWrite)),
    ("Mutation", "deactivateLicense", scope(LicensesWrite)),
    ("Mutation", "deactivateDevice", scope(LicensesWrite)),
    // Claims and requests: reads of the buyer's side are order reads, of
    // the claimer's side license reads.
    ("Query", "claimRequests", scope(OrdersRead)),
    ("Query", "licenseRequests", scope(OrdersRead)),
    ("Query", "myClaims", scope(LicensesRead)),
    ("Mutation", "claimLicense", scope(ClaimsWrite)),
    ("Mutation", "approveClaim", scope(ClaimsWrite)),
    ("Mutation", "declineClaim", scope(ClaimsWrite)),
    ("Mutation", "updateClaimSettings", scope(ClaimsWrite)),
    ("Mutation", "requestLicense", scope(ClaimsWrite)),
    ("Mutation", "approveLicenseRequest", scope(ClaimsWrite)),
    ("Mutation", "declineLicenseRequest", scope(ClaimsWrite)),
    // Events.
    ("Query", "events", scope(EventsRead)),
    ("Subscription", "events", scope(EventsRead)),
    // Administration.
    ("Query", "admin", scope(Admin)),
    ("Mutation", "disableAccount", scope(Admin)),
    ("Mutation", "enableAccount", scope(Admin)),
    ("Mutation", "revokeSessions", scope(Admin)),
    ("Mutation", "resendEmail", scope(Admin)),
    ("Mutation", "createWebhookEndpoint", scope(Admin)),
    ("Mutation", "updateWebhookEndpoint", scope(Admin)),
    ("Mutation", "deleteWebhookEndpoint", scope(Admin)),
    ("Mutation", "rotateWebhookSecret", scope(Admin)),
    ("Mutation", "redeliverWebhook", scope(Admin)),
];

/// What a token needs for `root.field`; `None` for a field without a row.
pub fn need(root: &str, field: &str) -> Option<Need> {
    OPERATIONS
        .iter()
        .find(|(r, f, _)| *r == root && *f == field)
        .map(|(_, _, need)| *need)
}

/// Why a token may not call a root field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The token lacks this scope.
    Missing(Scope),
    /// No token may call it (or it has no row).
    NotForTokens,
}

/// Whether a token with `scopes` may call `root.field`. Introspection
/// (`__schema`, `__type`, `__typename`) is open to every caller.
pub fn check(scopes: Scopes, root: &str, field: &str) -> Result<(), Refusal> {
    if field.starts_with("__") {
        return Ok(());
    }
    match need(root, field) {
        Some(AnyToken) => Ok(()),
        Some(Need::Scope(scope)) if scopes.contains(scope) => Ok(()),
        Some(Need::Scope(scope)) => Err(Refusal::Missing(scope)),
        Some(Session) | None => Err(Refusal::NotForTokens),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_round_trip_and_check() {
        let scopes: Scopes = [OrdersRead, EventsRead].into_iter().collect();
        assert_eq!(scopes.to_column(), "orders:read events:read");
        assert_eq!(Scopes::from_column("events:read orders:read gone"), scopes);
        assert_eq!(check(scopes, "Query", "orders"), Ok(()));
        assert_eq!(
            check(scopes, "Mutation", "createOrder"),
            Err(Refusal::Missing(OrdersWrite))
        );
        assert_eq!(
            check(scopes, "Mutation", "createApiToken"),
            Err(Refusal::NotForTokens)
        );
        assert_eq!(
            check(scopes, "Mutation", "noSuchField"),
            Err(Refusal::NotForTokens)
        );
        assert_eq!(check(Scopes::default(), "Query", "__schema"), Ok(()));
    }

    #[test]
    fn every_row_is_listed_once() {
        let mut seen = std::collections::HashSet::new();
        for (root, field, _) in OPERATIONS {
            assert!(seen.insert((root, field)), "{root}.{field} listed twice");
        }
    }
}
