//! Model-based test of the fallback store: random sequences of issue, consume, revoke,
//! Redis going away and coming back, and reconciliation, run against a real Redis behind
//! a front the test can cut, must answer as a plain model does. Above all, no token that
//! the model does not hold live is ever consumed.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::RedisServer;
use common::proxy::SwitchableFront;
use common::redis::free_port;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use provisiond::config::{FallbackPolicy, Secret};
use provisiond::domain::{DeviceId, Jti};
use provisiond::store::{
    ConsumeOutcome, FallbackStore, MemoryStore, RedisConfig, RedisStore, StoreError, TokenStore,
};

const DEVICES: usize = 2;
const TTL: Duration = Duration::from_secs(120);

#[derive(Debug, Clone)]
enum Op {
    Issue(usize),
    /// Consume with the device's n-th token ever issued (modulo), or a made-up one.
    Consume(usize, Option<usize>),
    Revoke(usize),
    RedisAway,
    RedisBack,
    Reconcile,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..DEVICES).prop_map(Op::Issue),
        5 => (0..DEVICES, proptest::option::weighted(0.9, 0..8usize))
            .prop_map(|(d, n)| Op::Consume(d, n)),
        1 => (0..DEVICES).prop_map(Op::Revoke),
        1 => Just(Op::RedisAway),
        1 => Just(Op::RedisBack),
        1 => Just(Op::Reconcile),
    ]
}

/// What the model knows of a token.
#[derive(Debug, Clone, Copy)]
struct Token {
    jti: Jti,
    epoch: u64,
    /// Issued while Redis was reachable: it lives there.
    in_redis: bool,
}

#[derive(Default)]
struct Model {
    issued: HashMap<usize, Vec<Token>>,
    live: HashMap<usize, Jti>,
    redis_up: bool,
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

async fn run_case(
    ops: Vec<Op>,
    redis: &RedisServer,
    front: &SwitchableFront,
    case: usize,
) -> Result<(), TestCaseError> {
    front.switch_to(redis.port());
    let config = RedisConfig {
        url: Secret::new(front.url()),
        display_url: front.url(),
        username: None,
        password: None,
        db: None,
        key_prefix: format!("model{case}:"),
        connect_timeout: Duration::from_millis(300),
        response_timeout: Duration::from_millis(500),
        health_check_interval: Duration::from_millis(10),
        count_interval: Duration::from_secs(60),
        wait_replicas: 0,
        wait_timeout: Duration::from_secs(1),
        topology: provisiond::config::RedisTopology::Standalone,
        tls: false,
        sentinel_password: None,
    };
    let (redis_store, _tasks) = RedisStore::connect(config, Default::default())
        .await
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    wait_until("connected", || redis_store.is_connected()).await?;
    let store = FallbackStore::new(
        Some(redis_store.clone()),
        Arc::new(MemoryStore::new()),
        FallbackPolicy::Memory,
        Default::default(),
        Default::default(),
        None,
    );
    let mut model = Model {
        redis_up: true,
        ..Model::default()
    };
    let dead_port = free_port();

    for op in ops {
        match op {
            Op::Issue(d) => {
                let jti = Jti::random();
                store
                    .issue(&device(d), &jti, TTL)
                    .await
                    .map_err(|e| TestCaseError::fail(format!("issue: {e}")))?;
                let token = Token {
                    jti,
                    epoch: store.epoch(),
                    in_redis: redis_store.is_connected(),
                };
                model.issued.entry(d).or_default().push(token);
                model.live.insert(d, jti);
            }
            Op::Consume(d, pick) => {
                let issued = model.issued.get(&d).cloned().unwrap_or_default();
                let token = match pick {
                    Some(n) if !issued.is_empty() => issued[n % issued.len()],
                    _ => Token {
                        jti: Jti::random(),
                        epoch: store.epoch(),
                        in_redis: true,
                    },
                };
                let live = model.live.get(&d) == Some(&token.jti);
                let answer = store
                    .consume(&device(d), &token.jti, token.epoch, None)
                    .await;
                match answer {
                    Ok(ConsumeOutcome::Consumed) => {
                        prop_assert!(live, "consumed a token that is not live: {token:?}");
                        model.live.remove(&d);
                    }
                    Ok(ConsumeOutcome::NotFound) => {
                        prop_assert!(!live, "refused the live token {token:?}");
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
                store
                    .revoke_device(&device(d))
                    .await
                    .map_err(|e| TestCaseError::fail(format!("revoke: {e}")))?;
                model.live.remove(&d);
            }
            Op::RedisAway if model.redis_up => {
                front.switch_to(dead_port);
                wait_until("disconnected", || !redis_store.is_connected()).await?;
                model.redis_up = false;
            }
            Op::RedisBack if !model.redis_up => {
                front.switch_to(redis.port());
                wait_until("reconnected", || redis_store.is_connected()).await?;
                model.redis_up = true;
            }
            Op::Reconcile => {
                store.reconcile().await;
            }
            Op::RedisAway | Op::RedisBack => {}
        }
    }

    // Finally, with Redis back and reconciled, each device's live token (if any) is
    // consumed exactly once, and every other token it ever had is refused.
    if !model.redis_up {
        front.switch_to(redis.port());
        wait_until("reconnected", || redis_store.is_connected()).await?;
    }
    store.reconcile().await;
    prop_assert_eq!(store.stale_in_redis(), 0);
    for (d, tokens) in &model.issued {
        for token in tokens {
            let live = model.live.get(d) == Some(&token.jti);
            let answer = store
                .consume(&device(*d), &token.jti, token.epoch, None)
                .await
                .map_err(|e| TestCaseError::fail(format!("final consume: {e}")))?;
            let expected = if live {
                ConsumeOutcome::Consumed
            } else {
                ConsumeOutcome::NotFound
            };
            prop_assert_eq!(answer, expected, "{:?}", token);
            if live {
                model.live.remove(d);
            }
        }
    }
    Ok(())
}

#[test]
fn the_fallback_store_answers_as_the_model_across_outages() {
    let redis = RedisServer::start();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let front = runtime.block_on(SwitchableFront::start(redis.port()));
    let mut runner = TestRunner::new(Config {
        cases: 256,
        failure_persistence: None,
        ..Config::default()
    });
    // Each case (and each shrinking step) gets its own key prefix.
    let case = std::sync::atomic::AtomicUsize::new(0);
    let result = runner.run(&proptest::collection::vec(op(), 1..40), |ops| {
        let case = case.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        runtime.block_on(run_case(ops, &redis, &front, case))
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}
