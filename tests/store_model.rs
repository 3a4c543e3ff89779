//! Model-based tests of the token stores: random sequences of issue (and re-onboarding,
//! which is issuing again), consume, revoke, the clock moving on past tokens' TTLs, and
//! for the stores that use Redis, Redis going away and coming back, run against
//! `MemoryStore`, `RedisStore` and `FallbackStore` (a real Redis behind a front the test
//! can cut) must answer as the plain model below does. Above all, no token that the
//! model does not hold live is ever consumed, and no live token is refused.
//!
//! Time is real: TTLs of one and two seconds and pauses of up to 1.3 s. Within
//! [`MARGIN`] of a token's expiry either answer is right (Redis keeps whole-second TTLs
//! from when its command ran), and the model learns which one came.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::RedisServer;
use common::proxy::SwitchableFront;
use common::redis::free_port;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use provisiond::config::FallbackPolicy;
use provisiond::domain::{DeviceId, Jti};
use provisiond::secret::Secret;
use provisiond::store::{
    ConsumeOutcome, FallbackStore, MemoryStore, RedisConfig, RedisStore, StoreError, TokenFacts,
    TokenStore,
};

static FACTS: std::sync::LazyLock<TokenFacts> = std::sync::LazyLock::new(TokenFacts::default);

const DEVICES: usize = 2;
const TTLS: [Duration; 3] = [
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(120),
];
const MARGIN: Duration = Duration::from_millis(250);

#[derive(Debug, Clone)]
enum Op {
    /// Issue for a device with one of [`TTLS`]; a device that has a token is re-onboarded.
    Issue(usize, usize),
    /// Consume with the device's n-th token ever issued (modulo), or a made-up one.
    Consume(usize, Option<usize>),
    Revoke(usize),
    /// Let the clock run this many milliseconds.
    Advance(u64),
    RedisAway,
    RedisBack,
    Reconcile,
}

fn op(outages: bool) -> impl Strategy<Value = Op> {
    let outage_weight = if outages { 1 } else { 0 };
    prop_oneof![
        4 => (0..DEVICES, 0..TTLS.len()).prop_map(|(d, t)| Op::Issue(d, t)),
        5 => (0..DEVICES, proptest::option::weighted(0.9, 0..8usize))
            .prop_map(|(d, n)| Op::Consume(d, n)),
        1 => (0..DEVICES).prop_map(Op::Revoke),
        1 => (0..1300u64).prop_map(Op::Advance),
        outage_weight => Just(Op::RedisAway),
        outage_weight => Just(Op::RedisBack),
        outage_weight => Just(Op::Reconcile),
    ]
}

/// What the model knows of a token.
#[derive(Debug, Clone, Copy)]
struct Token {
    jti: Jti,
    epoch: u64,
    /// Issued while Redis was reachable: it lives there.
    in_redis: bool,
    expires: Instant,
}

impl Token {
    fn surely_alive(&self, now: Instant) -> bool {
        now + MARGIN < self.expires
    }

    fn surely_expired(&self, now: Instant) -> bool {
        now > self.expires + MARGIN
    }
}

#[derive(Default)]
struct Model {
    issued: HashMap<usize, Vec<Token>>,
    live: HashMap<usize, Token>,
    redis_up: bool,
}

/// The store under test and what the test can do to it.
struct Subject {
    store: Arc<dyn TokenStore>,
    /// The store's own Redis connection, when it has one; `None` for memory.
    redis: Option<Arc<RedisStore>>,
    /// A store that answers from memory while Redis is away.
    falls_back: Option<Arc<FallbackStore>>,
    /// The Redis store's health checks, stopped with the case.
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Subject {
    fn drop(&mut self) {
        self.tasks.iter().for_each(|task| task.abort());
    }
}

fn device(i: usize) -> DeviceId {
    DeviceId::parse(&format!("model-{i}")).unwrap()
}

async fn wait_until(what: &str, done: impl Fn() -> bool) -> Result<(), TestCaseError> {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done() {
        if Instant::now() > deadline {
            return Err(TestCaseError::fail(format!("never {what}")));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Memory,
    Redis,
    Fallback,
}

async fn subject(kind: Kind, front: Option<&SwitchableFront>, case: usize) -> Subject {
    if kind == Kind::Memory {
        return Subject {
            store: Arc::new(MemoryStore::new()),
            redis: None,
            falls_back: None,
            tasks: Vec::new(),
        };
    }
    let front = front.expect("a Redis front");
    let config = RedisConfig {
        url: Secret::new(front.url()),
        display_url: front.url(),
        username: None,
        password: None,
        db: None,
        key_prefix: format!("model-{kind:?}-{case}:"),
        connect_timeout: Duration::from_millis(300),
        response_timeout: Duration::from_millis(500),
        health_check_interval: Duration::from_millis(10),
        count_interval: Duration::from_secs(60),
        wait_replicas: 0,
        wait_timeout: Duration::from_secs(1),
        topology: provisiond::config::RedisTopology::Standalone,
        tls: false,
        sentinel_password: None,
        tls_certificates: None,
        retention_after_expiry: provisiond::registry::RETENTION_AFTER_EXPIRY_SECS,
    };
    let (redis, tasks) = RedisStore::connect(config, Default::default())
        .await
        .expect("connects");
    wait_until("connected", || redis.is_connected())
        .await
        .expect("connected");
    if kind == Kind::Redis {
        return Subject {
            store: redis.clone(),
            redis: Some(redis),
            falls_back: None,
            tasks,
        };
    }
    let fallback = Arc::new(FallbackStore::new(
        Some(redis.clone()),
        Arc::new(MemoryStore::new()),
        FallbackPolicy::Memory,
        Default::default(),
        Default::default(),
        None,
    ));
    Subject {
        store: fallback.clone(),
        redis: Some(redis),
        falls_back: Some(fallback),
        tasks,
    }
}

/// With Redis away, a store that keeps nothing else refuses every change as unreachable.
fn refused_as_unreachable<T: std::fmt::Debug>(
    answer: &Result<T, StoreError>,
    what: &str,
) -> Result<(), TestCaseError> {
    prop_assert!(
        matches!(answer, Err(StoreError::Unreachable(_))),
        "{what} without Redis: {answer:?}"
    );
    Ok(())
}

async fn run_case(
    kind: Kind,
    ops: Vec<Op>,
    redis: Option<(&RedisServer, &SwitchableFront)>,
    case: usize,
) -> Result<(), TestCaseError> {
    if let Some((server, front)) = redis {
        front.switch_to(server.port());
    }
    let subject = subject(kind, redis.map(|(_, front)| front), case).await;
    let store = &subject.store;
    let connected = || subject.redis.as_ref().is_some_and(|r| r.is_connected());
    let mut model = Model {
        redis_up: true,
        ..Model::default()
    };
    let dead_port = free_port();

    for op in ops {
        let redis_only_and_away = kind == Kind::Redis && !model.redis_up;
        match op {
            Op::Issue(d, ttl) => {
                // As onboarding does: a token Redis may have kept is issued again with a
                // new jti, never into memory as well.
                let mut jti = Jti::random();
                let mut answer = store.issue(&device(d), &jti, TTLS[ttl], &FACTS).await;
                for _ in 0..2 {
                    if matches!(answer, Ok(provisiond::store::Issued::Unsure)) {
                        jti = Jti::random();
                        answer = store.issue(&device(d), &jti, TTLS[ttl], &FACTS).await;
                    }
                }
                if redis_only_and_away {
                    refused_as_unreachable(&answer, "issue")?;
                    continue;
                }
                answer.map_err(|e| TestCaseError::fail(format!("issue: {e}")))?;
                let token = Token {
                    jti,
                    epoch: store.epoch(),
                    in_redis: connected(),
                    expires: Instant::now() + TTLS[ttl],
                };
                model.issued.entry(d).or_default().push(token);
                model.live.insert(d, token);
            }
            Op::Consume(d, pick) => {
                let issued = model.issued.get(&d).cloned().unwrap_or_default();
                let token = match pick {
                    Some(n) if !issued.is_empty() => issued[n % issued.len()],
                    _ => Token {
                        jti: Jti::random(),
                        epoch: store.epoch(),
                        in_redis: true,
                        expires: Instant::now() + TTLS[2],
                    },
                };
                let answer = store
                    .consume(&device(d), &token.jti, token.epoch, None)
                    .await;
                let now = Instant::now();
                let live = model.live.get(&d).is_some_and(|t| t.jti == token.jti);
                match answer {
                    Ok(ConsumeOutcome::Consumed) => {
                        prop_assert!(live, "consumed a token that is not live: {token:?}");
                        prop_assert!(
                            !token.surely_expired(now),
                            "consumed an expired token: {token:?}"
                        );
                        model.live.remove(&d);
                    }
                    Ok(ConsumeOutcome::Blocked) => {
                        prop_assert!(false, "no device is blocked here: {token:?}");
                    }
                    Ok(ConsumeOutcome::NotFound) => {
                        prop_assert!(
                            !(live && token.surely_alive(now)),
                            "refused the live token {token:?}"
                        );
                        // Near its expiry: it has expired.
                        if live {
                            model.live.remove(&d);
                        }
                    }
                    Err(StoreError::Unreachable(_)) => {
                        // Only a token Redis may hold, while Redis is away.
                        prop_assert!(!model.redis_up, "503 while Redis is up");
                        prop_assert!(!live || token.in_redis, "503 for a memory token");
                    }
                    Err(e) => return Err(TestCaseError::fail(format!("consume: {e}"))),
                }
            }
            Op::Revoke(d) => {
                let answer = store.revoke_device(&device(d)).await;
                if redis_only_and_away {
                    refused_as_unreachable(&answer, "revoke")?;
                    continue;
                }
                answer.map_err(|e| TestCaseError::fail(format!("revoke: {e}")))?;
                model.live.remove(&d);
            }
            Op::Advance(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
            Op::RedisAway if model.redis_up && redis.is_some() => {
                redis.unwrap().1.switch_to(dead_port);
                wait_until("disconnected", || !connected()).await?;
                model.redis_up = false;
            }
            Op::RedisBack if !model.redis_up => {
                let (server, front) = redis.unwrap();
                front.switch_to(server.port());
                wait_until("reconnected", connected).await?;
                model.redis_up = true;
            }
            Op::Reconcile => {
                if let Some(fallback) = &subject.falls_back {
                    fallback.reconcile().await;
                }
            }
            Op::RedisAway | Op::RedisBack => {}
        }
    }

    // Finally, with Redis back (and reconciled), each device's live token (if any) is
    // consumed exactly once, and every other token it ever had is refused.
    if !model.redis_up {
        let (server, front) = redis.unwrap();
        front.switch_to(server.port());
        wait_until("reconnected", connected).await?;
    }
    if let Some(fallback) = &subject.falls_back {
        fallback.reconcile().await;
        prop_assert_eq!(fallback.stale_in_redis(), 0);
    }
    for (d, tokens) in &model.issued {
        for token in tokens {
            let answer = store
                .consume(&device(*d), &token.jti, token.epoch, None)
                .await
                .map_err(|e| TestCaseError::fail(format!("final consume: {e}")))?;
            let now = Instant::now();
            let live = model.live.get(d).is_some_and(|t| t.jti == token.jti);
            match answer {
                ConsumeOutcome::Consumed => {
                    prop_assert!(live && !token.surely_expired(now), "{:?}", token);
                    model.live.remove(d);
                }
                ConsumeOutcome::NotFound => {
                    prop_assert!(!(live && token.surely_alive(now)), "{:?}", token);
                }
                ConsumeOutcome::Blocked => {
                    prop_assert!(false, "no device is blocked here: {:?}", token);
                }
            }
        }
    }
    Ok(())
}

fn check(kind: Kind, cases: u32) {
    let redis = (kind != Kind::Memory).then(RedisServer::start);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let front = redis
        .as_ref()
        .map(|r| runtime.block_on(SwitchableFront::start(r.port())));
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    // Each case (and each shrinking step) gets its own key prefix.
    let case = std::sync::atomic::AtomicUsize::new(0);
    let ops = proptest::collection::vec(op(kind != Kind::Memory), 1..40);
    let result = runner.run(&ops, |ops| {
        let case = case.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let redis = redis.as_ref().zip(front.as_ref());
        runtime.block_on(run_case(kind, ops, redis, case))
    });
    if let Err(e) = result {
        panic!("{kind:?}: {e}");
    }
}

#[test]
fn the_memory_store_answers_as_the_model() {
    check(Kind::Memory, 32);
}

#[test]
fn the_redis_store_answers_as_the_model_across_outages() {
    check(Kind::Redis, 32);
}

#[test]
fn the_fallback_store_answers_as_the_model_across_outages() {
    check(Kind::Fallback, 48);
}
