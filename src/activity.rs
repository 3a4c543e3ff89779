//! What the console charts and lists, kept by the server itself: per second over the
//! last 15 minutes, tokens and certificates issued, requests refused (4xx) and failed
//! (5xx); totals since start; and the latest refused requests. Small rings in memory,
//! never recomputed from the Prometheus text; with Redis, also shared through it
//! (`crate::history`), and these rings are what the console falls back to.

use std::collections::{BTreeMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Mutex, OnceLock};

use tokio::sync::mpsc;

use serde::Serialize;

use crate::clock::unix_now;
use crate::timefmt::rfc3339_now;

/// Seconds the timeline covers.
pub const WINDOW_SECONDS: u64 = 15 * 60;
/// Refused requests kept.
const REFUSALS_KEPT: usize = 500;

#[derive(Debug, Clone, Copy, Default, Serialize, utoipa::ToSchema)]
pub struct Second {
    /// Unix seconds.
    pub at: u64,
    pub tokens: u32,
    pub certificates: u32,
    /// Requests answered 4xx.
    pub refused: u32,
    /// Requests answered 5xx.
    pub errors: u32,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Refusal {
    pub at: String,
    pub method: String,
    /// The route's pattern (`/api/v1/devices/{device_id}`), or the path itself when no
    /// route matched (at most 100 printable characters).
    pub route: String,
    pub status: u16,
    pub code: String,
    /// Set once the caller proved to act for the device (a token or proof that verified
    /// for it, an enrollment or admin key); not from what a body merely names.
    pub device_id: Option<String>,
    pub client_ip: String,
    /// Order of arrival, across both kinds of refusal.
    #[serde(skip)]
    #[schema(ignore)]
    pub seq: u64,
}

#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct Totals {
    pub tokens_issued: u64,
    pub certificates_issued: u64,
    /// Refused and failed requests since start, by error code.
    pub refusals: BTreeMap<String, u64>,
}

/// What happened, counted per second.
#[derive(Debug, Clone, Copy)]
pub enum Happened {
    TokenIssued,
    CertificateIssued,
    Refused,
    Failed,
}

#[derive(Default)]
struct State {
    seconds: VecDeque<Second>,
    totals: Totals,
    /// Refusals of requests whose caller proved to act for a device.
    refusals: VecDeque<Refusal>,
    /// The others (no credential, or one that did not verify): kept apart, so that
    /// anyone's flood of them pushes out only its own kind.
    anonymous: VecDeque<Refusal>,
    refused_so_far: u64,
}

impl State {
    /// Counts `what` in the second `now`, dropping the seconds that left the window.
    fn add(&mut self, what: Happened, now: u64) {
        if self.seconds.back().is_none_or(|s| s.at != now) {
            self.seconds.push_back(Second {
                at: now,
                ..Second::default()
            });
        }
        while self
            .seconds
            .front()
            .is_some_and(|s| s.at + WINDOW_SECONDS <= now)
        {
            self.seconds.pop_front();
        }
        let second = self.seconds.back_mut().expect("pushed above");
        match what {
            Happened::TokenIssued => second.tokens += 1,
            Happened::CertificateIssued => second.certificates += 1,
            Happened::Refused => second.refused += 1,
            Happened::Failed => second.errors += 1,
        }
        match what {
            Happened::TokenIssued => self.totals.tokens_issued += 1,
            Happened::CertificateIssued => self.totals.certificates_issued += 1,
            Happened::Refused | Happened::Failed => {}
        }
    }
}

#[derive(Default)]
pub struct Activity {
    /// A std `Mutex`: a few increments under it, nothing awaits.
    state: Mutex<State>,
    /// Where refusals go to be shared through Redis, once set up.
    feed: OnceLock<mpsc::Sender<Refusal>>,
}

impl Activity {
    /// Sends each refusal to `feed` too (dropped when it is full: the ring keeps it).
    pub fn share(&self, feed: mpsc::Sender<Refusal>) {
        let _ = self.feed.set(feed);
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn count(&self, what: Happened) {
        self.state().add(what, unix_now());
    }

    /// A refused (or failed) request: counted, and kept for the console's list.
    pub fn refused(
        &self,
        method: &str,
        route: &str,
        status: u16,
        code: &'static str,
        device_id: Option<String>,
        client: Option<IpAddr>,
    ) {
        let what = if status >= 500 {
            Happened::Failed
        } else {
            Happened::Refused
        };
        let mut state = self.state();
        state.add(what, unix_now());
        *state.totals.refusals.entry(code.to_owned()).or_default() += 1;
        state.refused_so_far += 1;
        let seq = state.refused_so_far;
        let kept = if device_id.is_some() {
            &mut state.refusals
        } else {
            &mut state.anonymous
        };
        if kept.len() == REFUSALS_KEPT {
            kept.pop_front();
        }
        let refusal = Refusal {
            at: rfc3339_now(),
            method: method.to_owned(),
            route: route.to_owned(),
            status,
            code: code.to_owned(),
            device_id,
            client_ip: client.map_or_else(|| "-".to_owned(), |ip| ip.to_string()),
            seq,
        };
        if let Some(feed) = self.feed.get() {
            let _ = feed.try_send(refusal.clone());
        }
        kept.push_back(refusal);
    }

    /// The seconds of the window that saw anything, oldest first, and the totals.
    pub fn timeline(&self) -> (Vec<Second>, Totals) {
        let now = unix_now();
        let state = self.state();
        let seconds = state
            .seconds
            .iter()
            .filter(|s| s.at + WINDOW_SECONDS > now)
            .copied()
            .collect();
        (seconds, state.totals.clone())
    }

    /// The latest refusals, newest first; only those with `code` when given.
    pub fn refusals(&self, code: Option<&str>) -> Vec<Refusal> {
        let state = self.state();
        let mut refusals: Vec<Refusal> = state
            .refusals
            .iter()
            .chain(&state.anonymous)
            .filter(|r| code.is_none_or(|c| r.code == c))
            .cloned()
            .collect();
        refusals.sort_by_key(|r| std::cmp::Reverse(r.seq));
        refusals
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_land_in_the_current_second_and_refusals_are_kept_newest_first() {
        let activity = Activity::default();
        activity.count(Happened::TokenIssued);
        activity.count(Happened::TokenIssued);
        activity.count(Happened::CertificateIssued);
        activity.refused(
            "POST",
            "/api/v1/sign-csr",
            401,
            "token_used",
            Some("d1".into()),
            None,
        );
        activity.refused(
            "POST",
            "/api/v1/onboarding",
            503,
            "storage_unavailable",
            None,
            None,
        );
        let (seconds, totals) = activity.timeline();
        let tokens: u32 = seconds.iter().map(|s| s.tokens).sum();
        let errors: u32 = seconds.iter().map(|s| s.errors).sum();
        let refused: u32 = seconds.iter().map(|s| s.refused).sum();
        assert_eq!((tokens, refused, errors), (2, 1, 1));
        assert_eq!(totals.tokens_issued, 2);
        assert_eq!(totals.certificates_issued, 1);
        assert_eq!(totals.refusals["token_used"], 1);
        let all = activity.refusals(None);
        assert_eq!(all[0].code, "storage_unavailable");
        let used = activity.refusals(Some("token_used"));
        assert_eq!(used.len(), 1);
        assert_eq!(used[0].device_id.as_deref(), Some("d1"));
    }
}
