//! The console's history shared through Redis, so that every instance behind a balancer,
//! and one restarted, shows the same events, refusals and per-second counts. Each
//! instance keeps its rings in memory as before ([`Activity`], [`Audit`]) and a task
//! copies what they gained to Redis once a second, off every request's path; the console
//! reads Redis while it answers, joined with what this instance has not copied yet (so
//! an operator's own action shows at once), and this instance's rings alone when Redis
//! does not answer. Events that happen while Redis is away stay in this instance's
//! rings only.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::activity::{Activity, Refusal, Second, Totals};
use crate::audit::{Audit, AuditEvent};
use crate::clock::unix_now;
use crate::store::{EVENTS_KEPT, HistoryBatch, RedisStore};

/// How often what was gained is written.
const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// Refusals waiting for a flush; past this they are dropped from the shared history (a
/// flood of refusals must not grow memory), never from the rings.
const QUEUED: usize = 10_000;
/// Events waiting for a flush: as many as a stream keeps, since more in one second
/// would be trimmed as they were written. Past it an event is not even formatted for
/// the feed (`Audit::send`): at 6,000 certificates a second, writing each to Redis cost
/// about 3 % of the server's CPU and as many XADDs (BENCHMARKS.md, issue 25).
const QUEUED_EVENTS: usize = EVENTS_KEPT;
/// How many events a device's page shows.
const PER_DEVICE: usize = 50;

pub struct History {
    redis: Arc<RedisStore>,
    /// The last second whose counts are in Redis, and the totals as last written.
    flushed: Mutex<(u64, Totals)>,
}

impl History {
    /// Starts copying `audit`'s events and `activity`'s refusals and counts to Redis.
    pub fn spawn(
        redis: Arc<RedisStore>,
        audit: &Audit,
        activity: Arc<Activity>,
    ) -> (Arc<Self>, JoinHandle<()>) {
        let (events, event_queue) = mpsc::channel(QUEUED_EVENTS);
        let (refusals, refusal_queue) = mpsc::channel(QUEUED);
        audit.share(events);
        activity.share(refusals);
        let history = Arc::new(Self {
            redis,
            flushed: Mutex::new((unix_now().saturating_sub(1), Totals::default())),
        });
        let copier = Copier {
            history: history.clone(),
            activity,
            event_queue,
            refusal_queue,
        };
        (history, tokio::spawn(copier.run()))
    }

    fn flushed(&self) -> std::sync::MutexGuard<'_, (u64, Totals)> {
        self.flushed.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every instance's last 15 minutes and totals, with this instance's own not yet
    /// copied (`local`, its [`Activity::timeline`]); `None` when Redis cannot answer.
    pub async fn timeline(&self, local: (Vec<Second>, Totals)) -> Option<(Vec<Second>, Totals)> {
        self.answering()?;
        let (mut seconds, mut totals) = self.redis.shared_timeline().await.ok()?;
        let (through, written) = self.flushed().clone();
        for own in local.0.into_iter().filter(|s| s.at > through) {
            match seconds.iter_mut().find(|s| s.at == own.at) {
                Some(s) => {
                    s.tokens += own.tokens;
                    s.certificates += own.certificates;
                    s.refused += own.refused;
                    s.errors += own.errors;
                }
                None => seconds.push(own),
            }
        }
        seconds.sort_by_key(|s| s.at);
        let unwritten = grown(&local.1, &written);
        totals.tokens_issued += unwritten.tokens_issued;
        totals.certificates_issued += unwritten.certificates_issued;
        for (code, n) in unwritten.refusals {
            *totals.refusals.entry(code).or_default() += n;
        }
        Some((seconds, totals))
    }

    /// Every instance's latest refusals joined with this instance's (`local`), newest
    /// first, only `code`'s when given.
    pub async fn refusals(&self, code: Option<&str>, local: Vec<Refusal>) -> Option<Vec<Refusal>> {
        self.answering()?;
        let shared = self.redis.shared_refusals().await.ok()?;
        let key = |r: &Refusal| {
            (
                r.at.clone(),
                r.route.clone(),
                r.code.clone(),
                r.client_ip.clone(),
            )
        };
        let mut refusals = joined(shared, local, key, |r| r.at.clone());
        refusals.retain(|r| code.is_none_or(|c| r.code == c));
        Some(refusals)
    }

    /// A device's latest events from every instance joined with this instance's
    /// (`local`), newest first.
    pub async fn events(&self, device: &str, local: Vec<AuditEvent>) -> Option<Vec<AuditEvent>> {
        self.answering()?;
        let shared = self.redis.shared_events(device).await.ok()?;
        let key = |e: &AuditEvent| (e.at.clone(), e.event.clone(), e.detail.clone());
        let mut events = joined(shared, local, key, |e| e.at.clone());
        events.truncate(PER_DEVICE);
        Some(events)
    }

    fn answering(&self) -> Option<()> {
        self.redis.is_connected().then_some(())
    }
}

/// `shared` and what of `local` it lacks (by `key`), newest first (by `at`, RFC 3339
/// UTC, which sorts as text).
fn joined<T, K: Eq + std::hash::Hash>(
    shared: Vec<T>,
    local: Vec<T>,
    key: impl Fn(&T) -> K,
    at: impl Fn(&T) -> String,
) -> Vec<T> {
    let seen: HashSet<K> = shared.iter().map(&key).collect();
    let mut all: Vec<T> = shared;
    all.extend(local.into_iter().filter(|item| !seen.contains(&key(item))));
    all.sort_by_key(|item| std::cmp::Reverse(at(item)));
    all
}

struct Copier {
    history: Arc<History>,
    activity: Arc<Activity>,
    event_queue: mpsc::Receiver<AuditEvent>,
    refusal_queue: mpsc::Receiver<Refusal>,
}

impl Copier {
    async fn run(mut self) {
        loop {
            tokio::time::sleep(FLUSH_EVERY).await;
            let mut batch = HistoryBatch::default();
            while let Ok(event) = self.event_queue.try_recv() {
                batch.events.push(event);
            }
            while let Ok(refusal) = self.refusal_queue.try_recv() {
                batch.refusals.push(refusal);
            }
            // Whole seconds only: the current one is still counting.
            let now = unix_now();
            let (seconds, totals) = self.activity.timeline();
            let (through, written) = self.history.flushed().clone();
            batch.seconds = seconds
                .into_iter()
                .filter(|s| s.at > through && s.at < now)
                .collect();
            batch.totals = grown(&totals, &written);
            let redis = &self.history.redis;
            if batch.is_empty() || !redis.is_connected() {
                continue;
            }
            match redis.append_history(&batch).await {
                Ok(()) => *self.history.flushed() = (now - 1, totals),
                // Counts and totals are tried again at the next flush; the events and
                // refusals of this batch stay in this instance's rings only.
                Err(e) => tracing::debug!(error = %e, "the console history waits for redis"),
            }
        }
    }
}

/// What `now` has that `before` had not.
fn grown(now: &Totals, before: &Totals) -> Totals {
    Totals {
        tokens_issued: now.tokens_issued - before.tokens_issued.min(now.tokens_issued),
        certificates_issued: now.certificates_issued
            - before.certificates_issued.min(now.certificates_issued),
        refusals: now
            .refusals
            .iter()
            .map(|(code, n)| {
                let was = before.refusals.get(code).copied().unwrap_or(0);
                (code.clone(), n.saturating_sub(was))
            })
            .filter(|(_, n)| *n > 0)
            .collect(),
    }
}
