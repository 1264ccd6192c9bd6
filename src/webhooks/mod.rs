//! Outbound webhooks (Standard Webhooks). Every committed event that an
//! enabled endpoint asked for is a `webhook_deliveries` row written in the
//! event's own transaction (`events::record`); the [`worker`] sends them
//! signed ([`signature`]), in event order per endpoint, retrying on
//! `WEBHOOK_RETRY_SCHEDULE`; [`guard`] keeps endpoints off private networks.
pub mod guard;
pub mod signature;
pub mod worker;

use std::{fmt, str::FromStr, time::Duration};

use chrono::{DateTime, SecondsFormat, Utc};
use sea_orm::ActiveEnum;
use serde_json::{Map, Value, json};

use crate::events::EventKind;

/// The `type` of an event's webhook: its kind in lower case with the last
/// `_` turned into `.` (`CLAIM_CREATED` → `claim.created`,
/// `CLAIM_SETTINGS_CHANGED` → `claim_settings.changed`). Derived from the
/// kind's stored name, so every kind has one.
pub fn event_type(kind: EventKind) -> String {
    let name = kind.to_value().to_ascii_lowercase();
    match name.rsplit_once('_') {
        Some((object, action)) => format!("{object}.{action}"),
        None => name,
    }
}

/// What a webhook says about one event.
#[derive(Debug, Clone)]
pub struct EventData {
    pub kind: EventKind,
    pub occurred_at: DateTime<Utc>,
    pub actor_id: Option<i64>,
    pub order_id: Option<i64>,
    pub license_id: Option<i64>,
    pub claim_id: Option<i64>,
    pub request_id: Option<i64>,
    pub transfer_id: Option<i64>,
    /// The event's `changes` JSON text.
    pub changes: String,
}

/// Names that could hold a key string; dropped from `changes` wherever
/// they appear (events are written without key strings; this keeps a
/// future event kind from leaking one by mistake).
const KEY_FIELDS: &[&str] = &["key", "keyString", "key_string", "newKey", "oldKey"];

fn without_keys(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .filter(|(name, _)| !KEY_FIELDS.contains(&name.as_str()))
                .map(|(name, value)| (name, without_keys(value)))
                .collect::<Map<_, _>>(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(without_keys).collect()),
        other => other,
    }
}

/// The body of the webhook of one event: `{"type", "timestamp", "data"}`.
/// `data` names objects by id (as the GraphQL API writes them) and carries
/// the event's `changes` (emails the event exposes, never a key string).
pub fn body(event: &EventData) -> Vec<u8> {
    let id = |id: Option<i64>| id.map(|id| id.to_string());
    let changes = serde_json::from_str::<Value>(&event.changes)
        .map(without_keys)
        .unwrap_or(Value::Null);
    let body = json!({
        "type": event_type(event.kind),
        "timestamp": event.occurred_at.to_rfc3339_opts(SecondsFormat::Millis, true),
        "data": {
            "kind": event.kind.to_value(),
            "actorId": id(event.actor_id),
            "orderId": id(event.order_id),
            "licenseId": id(event.license_id),
            "claimId": id(event.claim_id),
            "requestId": id(event.request_id),
            "transferId": id(event.transfer_id),
            "changes": changes,
        },
    });
    serde_json::to_vec(&body).unwrap_or_default()
}

/// Seconds to wait before each retry (`WEBHOOK_RETRY_SCHEDULE`): a delivery
/// gets one attempt more than the schedule has entries, then fails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrySchedule(pub Vec<u64>);

impl Default for RetrySchedule {
    fn default() -> Self {
        DEFAULT_RETRY_SCHEDULE
            .parse()
            .expect("the default schedule")
    }
}

/// About 27.6 hours of retries: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h.
pub const DEFAULT_RETRY_SCHEDULE: &str = "5,300,1800,7200,18000,36000,36000";

impl FromStr for RetrySchedule {
    type Err = String;

    fn from_str(list: &str) -> Result<Self, String> {
        let delays = list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<u64>()
                    .ok()
                    .filter(|&d| (1..=7 * 24 * 3600).contains(&d))
                    .ok_or_else(|| format!("{s:?} is not a number of seconds from 1 to 604800"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if delays.len() > 50 {
            return Err("at most 50 retries".into());
        }
        Ok(RetrySchedule(delays))
    }
}

impl fmt::Display for RetrySchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list: Vec<String> = self.0.iter().map(u64::to_string).collect();
        f.write_str(&list.join(","))
    }
}

impl RetrySchedule {
    /// The wait after the `failed`-th failed attempt (1-based), with ±10%
    /// jitter so that endpoints failing together do not retry together;
    /// `None` when the schedule is spent.
    pub fn delay_after(&self, failed: i32) -> Option<Duration> {
        let base = *self.0.get(usize::try_from(failed).ok()?.checked_sub(1)?)?;
        let jitter = rand::random_range(0.9..=1.1);
        Some(Duration::from_secs_f64(base as f64 * jitter))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sea_orm::Iterable;

    #[test]
    fn types_turn_the_last_underscore_into_a_dot() {
        assert_eq!(event_type(EventKind::ClaimCreated), "claim.created");
        assert_eq!(
            event_type(EventKind::ClaimSettingsChanged),
            "claim_settings.changed"
        );
        for kind in EventKind::iter() {
            let t = event_type(kind);
            assert_eq!(t.matches('.').count(), 1, "{t}");
            assert_eq!(t.replace('.', "_").to_ascii_uppercase(), kind.to_value());
        }
    }

    #[test]
    fn bodies_carry_ids_and_no_key_strings() {
        let event = EventData {
            kind: EventKind::LicenseAssigned,
            occurred_at: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
            actor_id: Some(3),
            order_id: Some(7),
            license_id: Some(9),
            claim_id: None,
            request_id: None,
            transfer_id: None,
            changes: r#"{"after":{"assigneeEmail":"a@b.c","key":"ABCD-EFGH"}}"#.into(),
        };
        let body: Value = serde_json::from_slice(&body(&event)).unwrap();
        assert_eq!(body["type"], "license.assigned");
        assert_eq!(body["timestamp"], "2023-11-14T22:13:20.000Z");
        assert_eq!(body["data"]["orderId"], "7");
        assert_eq!(body["data"]["changes"]["after"]["assigneeEmail"], "a@b.c");
        assert!(!body.to_string().contains("ABCD-EFGH"));
    }

    #[test]
    fn schedules_parse_and_end() {
        let s: RetrySchedule = "1, 2,3".parse().unwrap();
        assert_eq!(s.0, [1, 2, 3]);
        assert!(s.delay_after(3).is_some() && s.delay_after(4).is_none());
        assert!(s.delay_after(0).is_none());
        let d = s.delay_after(2).unwrap().as_secs_f64();
        assert!((1.8..=2.2).contains(&d));
        assert!("0".parse::<RetrySchedule>().is_err());
        assert!("x".parse::<RetrySchedule>().is_err());
        assert_eq!(RetrySchedule::default().to_string(), DEFAULT_RETRY_SCHEDULE);
    }
}
