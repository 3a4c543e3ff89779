//! One contract, two stores: the same checks run against MemoryStore and RedisStore,
//! so the two cannot drift apart.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::RedisServer;
use provisiond::domain::{DeviceId, Jti};
use provisiond::registry::{Block, CertificateRecord, Reason, Revocation, slots};
use provisiond::secret::Secret;
use provisiond::store::{
    CertificateRegistry, ConsumeOutcome, Handover, Issued, MemoryStore, ProofUse, RedisConfig,
    RedisStore, Renewal, RevokedCertificate, TokenFacts, TokenStore,
};

const TTL: Duration = Duration::from_secs(60);
static FACTS: std::sync::LazyLock<TokenFacts> = std::sync::LazyLock::new(TokenFacts::default);

fn device(name: &str) -> DeviceId {
    DeviceId::parse(name).unwrap()
}

async fn contract(store: Arc<dyn TokenStore>) {
    use ConsumeOutcome::{Consumed, NotFound};

    // Issue, then consume once.
    let (a, jti) = (device("c-a"), Jti::random());
    store.issue(&a, &jti, TTL, &FACTS).await.unwrap();
    assert_eq!(
        store.consume(&a, &jti, store.epoch(), None).await.unwrap(),
        Consumed
    );
    assert_eq!(
        store.consume(&a, &jti, store.epoch(), None).await.unwrap(),
        NotFound
    );

    // The pending token is found from the device id alone, with the facts it was
    // issued with (CMP's MAC), and not once it is used.
    let (p, jti) = (device("c-p"), Jti::random());
    let facts = TokenFacts {
        group: "gateways".into(),
        epoch: store.epoch(),
        expires_at: 1_900_000_000,
    };
    assert_eq!(store.pending(&p).await.unwrap(), None);
    store.issue(&p, &jti, TTL, &facts).await.unwrap();
    assert_eq!(store.pending(&p).await.unwrap(), Some((jti, facts.clone())));
    store.consume(&p, &jti, store.epoch(), None).await.unwrap();
    assert_eq!(store.pending(&p).await.unwrap(), None);

    // Never issued; issued to another device.
    let b = device("c-b");
    assert_eq!(
        store
            .consume(&b, &Jti::random(), store.epoch(), None)
            .await
            .unwrap(),
        NotFound
    );
    let for_b = Jti::random();
    store.issue(&b, &for_b, TTL, &FACTS).await.unwrap();
    assert_eq!(
        store
            .consume(&a, &for_b, store.epoch(), None)
            .await
            .unwrap(),
        NotFound
    );

    // Replacement: the old token dies at once.
    let (old, new) = (Jti::random(), Jti::random());
    let c = device("c-c");
    store.issue(&c, &old, TTL, &FACTS).await.unwrap();
    store.issue(&c, &new, TTL, &FACTS).await.unwrap();
    assert_eq!(
        store.consume(&c, &old, store.epoch(), None).await.unwrap(),
        NotFound
    );
    assert_eq!(
        store.consume(&c, &new, store.epoch(), None).await.unwrap(),
        Consumed
    );

    // Revocation.
    let d = device("c-d");
    let jti = Jti::random();
    store.issue(&d, &jti, TTL, &FACTS).await.unwrap();
    assert!(store.revoke_device(&d).await.unwrap());
    assert!(!store.revoke_device(&d).await.unwrap());
    assert_eq!(
        store.consume(&d, &jti, store.epoch(), None).await.unwrap(),
        NotFound
    );

    // Expiry: absent as soon as the TTL is up.
    let e = device("c-e");
    let jti = Jti::random();
    store
        .issue(&e, &jti, Duration::from_secs(1), &FACTS)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        store.consume(&e, &jti, store.epoch(), None).await.unwrap(),
        NotFound
    );

    // Concurrency: of many consumers of one token, exactly one wins.
    let f = device("c-f");
    let jti = Jti::random();
    store.issue(&f, &jti, TTL, &FACTS).await.unwrap();
    let mut racers = tokio::task::JoinSet::new();
    for _ in 0..64 {
        let (store, f) = (store.clone(), f.clone());
        racers.spawn(async move { store.consume(&f, &jti, store.epoch(), None).await.unwrap() });
    }
    let outcomes = racers.join_all().await;
    assert_eq!(outcomes.iter().filter(|o| **o == Consumed).count(), 1);
}

fn config(redis: &RedisServer, key_prefix: &str, count_interval: Duration) -> RedisConfig {
    RedisConfig {
        url: Secret::new(redis.url()),
        display_url: redis.url(),
        username: None,
        password: None,
        db: None,
        key_prefix: key_prefix.into(),
        connect_timeout: Duration::from_secs(1),
        response_timeout: Duration::from_secs(1),
        health_check_interval: Duration::from_millis(200),
        count_interval,
        wait_replicas: 0,
        wait_timeout: Duration::from_secs(1),
        topology: provisiond::config::RedisTopology::Standalone,
        tls: false,
        sentinel_password: None,
        tls_certificates: None,
        retention_after_expiry: provisiond::registry::RETENTION_AFTER_EXPIRY_SECS,
    }
}

/// The certificate registry's half of the contract.
async fn registry_contract<S: TokenStore + CertificateRegistry>(store: Arc<S>) {
    use ConsumeOutcome::{Consumed, NotFound};
    let device = device("r-a");
    let record = |serial: [u8; 16]| CertificateRecord {
        serial,
        device_id: device.clone(),
        issued_at: 1_800_000_000,
        not_after: 4_000_000_000,
        key_type: "ecdsa-p256",
        fingerprint_sha256: [9; 32],
        revocation: None,
        group: "default".into(),
    };
    let slot = slots::slot_of(device.as_str());
    let (first, second) = (
        record(slots::serial_in(slot)),
        record(slots::serial_in(slot)),
    );

    // Recorded exactly when the token is consumed.
    let jti = Jti::random();
    store.issue(&device, &jti, TTL, &FACTS).await.unwrap();
    let consumed = store.consume(&device, &jti, store.epoch(), Some(&first));
    assert_eq!(consumed.await.unwrap(), Consumed);
    let replay = store.consume(&device, &jti, store.epoch(), Some(&second));
    assert_eq!(replay.await.unwrap(), NotFound);
    assert_eq!(
        store.certificate(&first.serial).await.unwrap(),
        Some(first.clone())
    );
    assert_eq!(store.certificate(&second.serial).await.unwrap(), None);
    assert_eq!(
        store.certificates_of(&device).await.unwrap(),
        vec![first.clone()]
    );
    assert!(
        store
            .certificates_of(&self::device("r-b"))
            .await
            .unwrap()
            .is_empty()
    );

    // Revoked once: a second revocation answers the first.
    let before = store.revision().await.unwrap();
    let revocation = Revocation {
        at: 1_800_000_500,
        reason: Reason::KeyCompromise,
    };
    let revoked = store
        .revoke(&first.serial, revocation)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(revoked.revocation, Some(revocation));
    let again = Revocation {
        at: 1_800_000_900,
        reason: Reason::Superseded,
    };
    let still = store.revoke(&first.serial, again).await.unwrap().unwrap();
    assert_eq!(still.revocation, Some(revocation));
    assert_eq!(store.revoke(&second.serial, again).await.unwrap(), None);
    let list = store.revoked().await.unwrap();
    assert!(list.revision > before);
    assert_eq!(
        list.entries,
        vec![RevokedCertificate {
            serial: first.serial,
            revocation,
            not_after: first.not_after,
        }]
    );
    assert_eq!(store.revision().await.unwrap(), list.revision);

    // A serial with no record is listed on its own; listing again keeps the first.
    let bare = RevokedCertificate {
        serial: [0x5a; 16],
        revocation: Revocation {
            at: 1_800_001_000,
            reason: Reason::KeyCompromise,
        },
        not_after: 4_100_000_000,
    };
    assert_eq!(store.list_unrecorded(bare).await.unwrap(), bare);
    let later = RevokedCertificate {
        revocation: again,
        ..bare
    };
    assert_eq!(store.list_unrecorded(later).await.unwrap(), bare);
    let with_bare = store.revoked().await.unwrap();
    assert!(with_bare.revision > list.revision);
    assert_eq!(with_bare.entries.len(), 2, "{with_bare:?}");
    assert!(with_bare.entries.contains(&bare), "{with_bare:?}");
    assert_eq!(store.certificate(&bare.serial).await.unwrap(), None);

    // Its certificate turns up later (an import on any instance): the record is revoked
    // as listed, by the store itself, and the serial is listed once.
    let found = CertificateRecord {
        not_after: bare.not_after,
        ..record(bare.serial)
    };
    let imported = store.import(&found).await.unwrap();
    assert_eq!(imported.revocation, Some(bare.revocation), "{imported:?}");
    let listed = store.revoked().await.unwrap();
    let times = listed
        .entries
        .iter()
        .filter(|e| e.serial == bare.serial)
        .count();
    assert_eq!(times, 1, "{listed:?}");
}

/// What a renewal hands out, for the key `key`.
fn handover(record: &CertificateRecord, key: &str) -> Handover {
    Handover {
        serial: record.serial,
        not_after: record.not_after,
        pem: format!("-----BEGIN CERTIFICATE-----\n{key}\n-----END CERTIFICATE-----\n"),
        csr_key: key.to_owned(),
    }
}

/// Renewal and blocking: what the renew step checks atomically, and what a block stops.
async fn renewal_contract<S: TokenStore + CertificateRegistry>(store: Arc<S>) {
    let device = device("n-a");
    let slot = slots::slot_of(device.as_str());
    let record = || CertificateRecord {
        serial: slots::serial_in(slot),
        device_id: device.clone(),
        issued_at: 1_800_000_000,
        not_after: 4_000_000_000,
        key_type: "ed25519",
        fingerprint_sha256: [3; 32],
        revocation: None,
        group: "default".into(),
    };
    let (old, new, newer) = (record(), record(), record());
    let jti = Jti::random();
    store.issue(&device, &jti, TTL, &FACTS).await.unwrap();
    store
        .consume(&device, &jti, store.epoch(), Some(&old))
        .await
        .unwrap();
    let proof = ProofUse {
        id: 42,
        issued_at: provisiond::clock::unix_now(),
    };

    // What the registry cannot vouch for never renews: a serial it never recorded, and
    // another device's certificate (the same slot, so the same bucket on Redis).
    let stray = record();
    let stranger = store
        .renew(
            &record().serial,
            None,
            &stray,
            &handover(&stray, "k0"),
            None,
        )
        .await;
    assert_eq!(stranger.unwrap(), Renewal::PreviousUnknown);
    let neighbour = (0..)
        .map(|i| DeviceId::parse(&format!("n-b{i}")).unwrap())
        .find(|d| slots::slot_of(d.as_str()) == slot)
        .unwrap();
    let theirs = CertificateRecord {
        device_id: neighbour.clone(),
        ..record()
    };
    let jti = Jti::random();
    store.issue(&neighbour, &jti, TTL, &FACTS).await.unwrap();
    let consumed = store
        .consume(&neighbour, &jti, store.epoch(), Some(&theirs))
        .await
        .unwrap();
    assert_eq!(consumed, ConsumeOutcome::Consumed);
    let borrowed = store
        .renew(&theirs.serial, None, &stray, &handover(&stray, "k0"), None)
        .await;
    assert_eq!(borrowed.unwrap(), Renewal::PreviousUnknown);
    assert_eq!(store.certificates_of(&device).await.unwrap().len(), 1);

    // Renewed once; the new record is there, the old one stays valid and names it.
    let given = handover(&new, "k1");
    let renewed = store
        .renew(&old.serial, Some(proof), &new, &given, None)
        .await;
    assert_eq!(renewed.unwrap(), Renewal::Renewed { superseded: None });
    assert_eq!(
        store.successor_of(&old.serial).await.unwrap(),
        Some(new.serial)
    );
    assert_eq!(store.successor_of(&new.serial).await.unwrap(), None);
    // A retry for the same key (its answer lost) gets the same certificate, with a new
    // proof (a proof gets one answer); for another key nothing more is recorded.
    let retried = handover(&newer, "k1");
    let replayed = store
        .renew(&old.serial, Some(proof), &newer, &retried, None)
        .await;
    assert_eq!(replayed.unwrap(), Renewal::ProofUsed);
    let fresh = ProofUse { id: 44, ..proof };
    let retry = store
        .renew(&old.serial, Some(fresh), &newer, &retried, None)
        .await;
    assert_eq!(retry.unwrap(), Renewal::AlreadyRenewed(given.clone()));
    let again = store
        .renew(&old.serial, Some(fresh), &newer, &retried, None)
        .await;
    assert_eq!(again.unwrap(), Renewal::ProofUsed);
    let other_key = store
        .renew(&old.serial, None, &newer, &handover(&newer, "k2"), None)
        .await;
    assert_eq!(other_key.unwrap(), Renewal::PreviousRenewed);
    assert_eq!(store.certificate(&newer.serial).await.unwrap(), None);
    assert_eq!(store.certificates_of(&device).await.unwrap().len(), 2);

    // A proof renews once.
    let replay = store
        .renew(
            &new.serial,
            Some(proof),
            &newer,
            &handover(&newer, "k3"),
            None,
        )
        .await;
    assert_eq!(replay.unwrap(), Renewal::ProofUsed);

    // Superseding revokes the previous one in the same step, and only once.
    let supersede = Revocation {
        at: 1_800_000_700,
        reason: Reason::Superseded,
    };
    let proof = ProofUse { id: 43, ..proof };
    let given = handover(&newer, "k3");
    let Renewal::Renewed {
        superseded: Some(superseded),
    } = store
        .renew(&new.serial, Some(proof), &newer, &given, Some(supersede))
        .await
        .unwrap()
    else {
        panic!("not superseded");
    };
    assert_eq!(superseded.revocation, Some(supersede));
    assert!(
        store
            .revoked()
            .await
            .unwrap()
            .entries
            .iter()
            .any(|e| e.serial == new.serial)
    );
    // Superseded by its own renewal, it still hands the successor to a retry.
    let stray = record();
    let retry = store
        .renew(&new.serial, None, &stray, &handover(&stray, "k3"), None)
        .await;
    assert_eq!(retry.unwrap(), Renewal::AlreadyRenewed(given));
    // A certificate revoked otherwise cannot renew, with or without a proof, and hands
    // out nothing.
    let compromised = Revocation {
        at: 1_800_000_750,
        reason: Reason::KeyCompromise,
    };
    store.revoke(&old.serial, compromised).await.unwrap();
    let from_revoked = store
        .renew(&old.serial, None, &stray, &handover(&stray, "k1"), None)
        .await;
    assert_eq!(from_revoked.unwrap(), Renewal::PreviousRevoked);

    // A block stands until lifted: the first one is kept; it stops tokens and renewals.
    let block = Block {
        at: 1_800_000_800,
        reason: Reason::KeyCompromise,
    };
    assert_eq!(store.blocked(&device).await.unwrap(), None);
    assert_eq!(store.block(&device, block).await.unwrap(), block);
    let later = Block {
        at: 1_800_000_900,
        reason: Reason::Unspecified,
    };
    assert_eq!(store.block(&device, later).await.unwrap(), block);
    assert_eq!(store.blocked(&device).await.unwrap(), Some(block));
    let refused = store
        .issue(&device, &Jti::random(), TTL, &FACTS)
        .await
        .unwrap();
    assert_eq!(refused, Issued::Blocked);
    let blocked = store
        .renew(&newer.serial, None, &stray, &handover(&stray, "k4"), None)
        .await;
    assert_eq!(blocked.unwrap(), Renewal::Blocked);
    assert!(store.unblock(&device).await.unwrap());
    assert!(!store.unblock(&device).await.unwrap());
    let issued = store
        .issue(&device, &Jti::random(), TTL, &FACTS)
        .await
        .unwrap();
    assert_eq!(issued, Issued::Issued);
    let renewed = store
        .renew(&newer.serial, None, &stray, &handover(&stray, "k4"), None)
        .await;
    assert_eq!(renewed.unwrap(), Renewal::Renewed { superseded: None });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_store_keeps_the_contract() {
    contract(Arc::new(MemoryStore::new())).await;
    registry_contract(Arc::new(MemoryStore::new())).await;
    renewal_contract(Arc::new(MemoryStore::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_store_keeps_the_contract() {
    let redis = RedisServer::start();
    let config = config(&redis, "contract:", Duration::from_secs(60));
    let (store, _tasks) = RedisStore::connect(config, Default::default())
        .await
        .unwrap();
    contract(store.clone()).await;
    registry_contract(store.clone()).await;
    renewal_contract(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_store_counts_without_keys_and_respects_its_prefix() {
    let redis = RedisServer::start();
    let mut conn = redis.connection();
    // Someone else's keys in the same database are not counted.
    let _: () = redis::cmd("SET")
        .arg("other:token:{x}:y")
        .arg(1)
        .query(&mut conn)
        .unwrap();
    let config = config(&redis, "mine:", Duration::from_millis(100));
    let (store, _tasks) = RedisStore::connect(config, Default::default())
        .await
        .unwrap();
    for i in 0..2500 {
        store
            .issue(&device(&format!("n-{i}")), &Jti::random(), TTL, &FACTS)
            .await
            .unwrap();
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let stats = store.stats().await;
        let counts = stats.redis.unwrap().counts;
        if let Some(c) = counts
            && c.tokens == 2500
        {
            assert_eq!(c.devices, 2500);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "count never reached 2500: {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // And no KEYS was ever sent: Redis's own command statistics say so.
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut conn)
        .unwrap();
    assert!(!stats.contains("cmdstat_keys:"), "{stats}");
    assert!(stats.contains("cmdstat_scan:"), "{stats}");
}

/// A certificate record for `device` (a new serial in its slot each call).
fn record_of(device: &DeviceId) -> CertificateRecord {
    CertificateRecord {
        serial: slots::serial_in(slots::slot_of(device.as_str())),
        device_id: device.clone(),
        issued_at: 1_800_000_000,
        not_after: 4_000_000_000,
        key_type: "ecdsa-p256",
        fingerprint_sha256: [5; 32],
        revocation: None,
        group: "default".into(),
    }
}

/// Records `record` as sign-csr does: a token issued, then consumed with it.
async fn recorded<S: TokenStore>(store: &S, record: &CertificateRecord) {
    let jti = Jti::random();
    store
        .issue(&record.device_id, &jti, TTL, &FACTS)
        .await
        .unwrap();
    let consumed = store
        .consume(&record.device_id, &jti, store.epoch(), Some(record))
        .await
        .unwrap();
    assert_eq!(consumed, ConsumeOutcome::Consumed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_list_written_before_members_carried_the_revocation_is_read_once() {
    let redis = RedisServer::start();
    let config = config(&redis, "old:", Duration::from_secs(60));
    let (store, _tasks) = RedisStore::connect(config, Default::default())
        .await
        .unwrap();
    let record = record_of(&device("listed-old"));
    recorded(&*store, &record).await;
    let revocation = Revocation {
        at: 1_800_000_100,
        reason: Reason::KeyCompromise,
    };
    store.revoke(&record.serial, revocation).await.unwrap();
    let hex = record.serial_hex();
    let expected = vec![RevokedCertificate {
        serial: record.serial,
        revocation,
        not_after: record.not_after,
    }];
    // One member, carrying the revocation.
    let members: Vec<String> = redis.cmd(&["ZRANGE", "old:revoked", "0", "-1"]);
    assert_eq!(members, vec![format!("{hex}:1800000100:1")]);
    assert_eq!(store.revoked().await.unwrap().entries, expected);
    // A member in the old form (the serial alone) beside it: still one entry.
    let _: i64 = redis.cmd(&["ZADD", "old:revoked", "4000000000", &hex]);
    assert_eq!(store.revoked().await.unwrap().entries, expected);
    // The old form alone: the revocation is read from the record.
    let _: i64 = redis.cmd(&["ZREM", "old:revoked", &members[0]]);
    assert_eq!(store.revoked().await.unwrap().entries, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_supersede_that_missed_the_revoked_list_is_listed_by_the_retry() {
    let redis = RedisServer::start();
    let config = config(&redis, "missed:", Duration::from_secs(60));
    let (store, _tasks) = RedisStore::connect(config, Default::default())
        .await
        .unwrap();
    let device = device("missed-1");
    let record = || record_of(&device);
    let (old, new) = (record(), record());
    recorded(&*store, &old).await;
    let supersede = Revocation {
        at: 1_800_000_500,
        reason: Reason::Superseded,
    };
    let given = handover(&new, "k");
    let renewed = store
        .renew(&old.serial, None, &new, &given, Some(supersede))
        .await
        .unwrap();
    assert!(matches!(
        renewed,
        Renewal::Renewed {
            superseded: Some(_)
        }
    ));
    // As if Redis went away between the renew script and the listing.
    let _: i64 = redis.cmd(&["DEL", "missed:revoked"]);
    assert!(store.revoked().await.unwrap().entries.is_empty());
    // The device retries (its answer was lost): the same successor, and now the list.
    let retried = store
        .renew(
            &old.serial,
            None,
            &record(),
            &handover(&record(), "k"),
            None,
        )
        .await
        .unwrap();
    assert_eq!(retried, Renewal::AlreadyRenewed(given));
    let listed = store.revoked().await.unwrap().entries;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].serial, old.serial);
    assert_eq!(listed[0].revocation, supersede);
}
