//! The console's history in Redis, where every instance sees it: capped streams of audit
//! events, refused tokens, refusals (attributed and anonymous apart, as in memory), each
//! instance's per-second counts, and a hash of totals. Every key shares one hash tag, so
//! a flush is one pipeline on a cluster too. Written by `crate::history` once a second;
//! nothing here is on a request's path.

use std::collections::{BTreeMap, HashMap};

use super::RedisStore;
use crate::activity::{Refusal, Second, Totals, WINDOW_SECONDS};
use crate::audit::AuditEvent;
use crate::clock::unix_now;
use crate::store::StoreError;

/// Entries each stream of events keeps (about: `MAXLEN ~`).
pub const EVENTS_KEPT: usize = 5_000;
const REFUSALS_KEPT: usize = 500;
/// Per-second rows: 15 minutes of 20 instances.
const SECONDS_KEPT: usize = 20 * 900;
/// How many events a device's page shows.
const PER_DEVICE: usize = 50;

/// One stream entry: its id and fields.
type Entries = Vec<(String, HashMap<String, String>)>;

/// What one flush adds.
#[derive(Default)]
pub struct HistoryBatch {
    pub events: Vec<AuditEvent>,
    pub refusals: Vec<Refusal>,
    /// This instance's complete seconds since the last flush.
    pub seconds: Vec<Second>,
    /// What the totals grew by since the last flush.
    pub totals: Totals,
}

impl HistoryBatch {
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
            && self.refusals.is_empty()
            && self.seconds.is_empty()
            && self.totals.tokens_issued == 0
            && self.totals.certificates_issued == 0
            && self.totals.refusals.is_empty()
    }
}

impl RedisStore {
    /// Writes a batch in one pipeline.
    pub async fn append_history(&self, batch: &HistoryBatch) -> Result<(), StoreError> {
        let keys = &self.keys;
        let mut pipe = redis::pipe();
        let mut xadd = |key: String, kept: usize, fields: Vec<(&str, String)>| {
            let cmd = pipe
                .cmd("XADD")
                .arg(key)
                .arg("MAXLEN")
                .arg("~")
                .arg(kept)
                .arg("*");
            for (name, value) in fields {
                cmd.arg(name).arg(value);
            }
            cmd.ignore();
        };
        for e in &batch.events {
            let (key, kept) = match e.event.as_str() {
                "token_rejected" => (keys.history("rejected"), EVENTS_KEPT),
                _ => (keys.history("events"), EVENTS_KEPT),
            };
            xadd(key, kept, event_fields(e));
        }
        for r in &batch.refusals {
            let kind = if r.device_id.is_some() {
                "refusals"
            } else {
                "anonymous"
            };
            xadd(keys.history(kind), REFUSALS_KEPT, refusal_fields(r));
        }
        for s in &batch.seconds {
            xadd(
                keys.history("seconds"),
                SECONDS_KEPT,
                vec![
                    ("at", s.at.to_string()),
                    ("tokens", s.tokens.to_string()),
                    ("certificates", s.certificates.to_string()),
                    ("refused", s.refused.to_string()),
                    ("errors", s.errors.to_string()),
                ],
            );
        }
        let totals = keys.history("totals");
        let grown = [
            ("tokens_issued".to_owned(), batch.totals.tokens_issued),
            (
                "certificates_issued".to_owned(),
                batch.totals.certificates_issued,
            ),
        ];
        let refusals = batch
            .totals
            .refusals
            .iter()
            .map(|(c, n)| (format!("refusal:{c}"), *n));
        for (field, n) in grown.into_iter().chain(refusals).filter(|(_, n)| *n > 0) {
            pipe.cmd("HINCRBY").arg(&totals).arg(field).arg(n).ignore();
        }
        let mut conn = self.conn().await?;
        pipe.query_async::<()>(&mut conn)
            .await
            .map_err(|e| self.fail(e))
    }

    /// Every instance's seconds of the last 15 minutes, summed, and the totals.
    pub async fn shared_timeline(&self) -> Result<(Vec<Second>, Totals), StoreError> {
        let since_ms = unix_now().saturating_sub(WINDOW_SECONDS) * 1000;
        let mut conn = self.conn().await?;
        let (rows, totals): (Entries, HashMap<String, u64>) = redis::pipe()
            .cmd("XRANGE")
            .arg(self.keys.history("seconds"))
            .arg(since_ms)
            .arg("+")
            .cmd("HGETALL")
            .arg(self.keys.history("totals"))
            .query_async(&mut conn)
            .await
            .map_err(|e| self.fail(e))?;
        let mut seconds: BTreeMap<u64, Second> = BTreeMap::new();
        for (_, fields) in rows {
            let number = |name: &str| fields.get(name).and_then(|v| v.parse::<u32>().ok());
            let Some(at) = fields.get("at").and_then(|v| v.parse::<u64>().ok()) else {
                continue;
            };
            let second = seconds.entry(at).or_insert(Second {
                at,
                ..Second::default()
            });
            second.tokens += number("tokens").unwrap_or(0);
            second.certificates += number("certificates").unwrap_or(0);
            second.refused += number("refused").unwrap_or(0);
            second.errors += number("errors").unwrap_or(0);
        }
        let mut shared = Totals::default();
        for (field, n) in totals {
            match field.as_str() {
                "tokens_issued" => shared.tokens_issued = n,
                "certificates_issued" => shared.certificates_issued = n,
                _ => {
                    if let Some(code) = field.strip_prefix("refusal:") {
                        shared.refusals.insert(code.to_owned(), n);
                    }
                }
            }
        }
        Ok((seconds.into_values().collect(), shared))
    }

    /// The latest refusals of every instance, newest first.
    pub async fn shared_refusals(&self) -> Result<Vec<Refusal>, StoreError> {
        let mut conn = self.conn().await?;
        let (attributed, anonymous): (Entries, Entries) = redis::pipe()
            .cmd("XREVRANGE")
            .arg(self.keys.history("refusals"))
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(REFUSALS_KEPT)
            .cmd("XREVRANGE")
            .arg(self.keys.history("anonymous"))
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(REFUSALS_KEPT)
            .query_async(&mut conn)
            .await
            .map_err(|e| self.fail(e))?;
        let mut refusals: Vec<(String, Refusal)> = attributed
            .into_iter()
            .chain(anonymous)
            .filter_map(|(id, fields)| Some((id.clone(), refusal_of(&fields)?)))
            .collect();
        refusals.sort_by_key(|r| std::cmp::Reverse(stream_order(&r.0)));
        Ok(refusals.into_iter().map(|(_, r)| r).collect())
    }

    /// A device's latest events from every instance, newest first.
    pub async fn shared_events(&self, device: &str) -> Result<Vec<AuditEvent>, StoreError> {
        let mut conn = self.conn().await?;
        let (events, rejected): (Entries, Entries) = redis::pipe()
            .cmd("XREVRANGE")
            .arg(self.keys.history("events"))
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(EVENTS_KEPT)
            .cmd("XREVRANGE")
            .arg(self.keys.history("rejected"))
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(EVENTS_KEPT)
            .query_async(&mut conn)
            .await
            .map_err(|e| self.fail(e))?;
        let mine = |entries: Entries| -> Vec<(String, AuditEvent)> {
            entries
                .into_iter()
                .filter(|(_, f)| f.get("device_id").map(String::as_str) == Some(device))
                .take(PER_DEVICE)
                .filter_map(|(id, f)| Some((id, event_of(&f)?)))
                .collect()
        };
        let mut found = mine(events);
        found.extend(mine(rejected));
        found.sort_by_key(|e| std::cmp::Reverse(stream_order(&e.0)));
        Ok(found.into_iter().take(PER_DEVICE).map(|(_, e)| e).collect())
    }
}

/// A stream id, `<ms>-<seq>`, as numbers.
fn stream_order(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
}

fn event_fields(e: &AuditEvent) -> Vec<(&'static str, String)> {
    let mut fields = vec![
        ("at", e.at.clone()),
        ("event", e.event.clone()),
        ("device_id", e.device_id.clone()),
        ("detail", e.detail.clone()),
        ("client_ip", e.client_ip.clone()),
    ];
    if let Some(admin) = &e.admin {
        fields.push(("admin", admin.clone()));
    }
    fields
}

fn event_of(f: &HashMap<String, String>) -> Option<AuditEvent> {
    Some(AuditEvent {
        at: f.get("at")?.clone(),
        event: f.get("event")?.clone(),
        device_id: f.get("device_id")?.clone(),
        detail: f.get("detail").cloned().unwrap_or_default(),
        client_ip: f.get("client_ip").cloned().unwrap_or_default(),
        admin: f.get("admin").cloned(),
    })
}

fn refusal_fields(r: &Refusal) -> Vec<(&'static str, String)> {
    let mut fields = vec![
        ("at", r.at.clone()),
        ("method", r.method.clone()),
        ("route", r.route.clone()),
        ("status", r.status.to_string()),
        ("code", r.code.clone()),
        ("client_ip", r.client_ip.clone()),
    ];
    if let Some(device) = &r.device_id {
        fields.push(("device_id", device.clone()));
    }
    fields
}

fn refusal_of(f: &HashMap<String, String>) -> Option<Refusal> {
    Some(Refusal {
        at: f.get("at")?.clone(),
        method: f.get("method")?.clone(),
        route: f.get("route")?.clone(),
        status: f.get("status")?.parse().ok()?,
        code: f.get("code")?.clone(),
        device_id: f.get("device_id").cloned(),
        client_ip: f.get("client_ip").cloned().unwrap_or_default(),
        seq: 0,
    })
}
