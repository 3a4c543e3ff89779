//! The memory store's own clock: expiry before any sweep, and what a sweep frees.

use super::*;

#[test]
fn an_expired_entry_is_absent_before_any_sweep() {
    let store = MemoryStore::new();
    let device = DeviceId::parse("d").unwrap();
    let jti = Jti::random();
    store.insert(
        &device,
        &jti,
        Duration::from_millis(20),
        &TokenFacts::default(),
    );
    std::thread::sleep(Duration::from_millis(30));
    assert_eq!(store.live_count(), 0);
    // Known for what it was until swept: answered without asking Redis.
    assert_eq!(store.take(&device, &Jti::random()), Take::Absent);
    store.insert(
        &device,
        &jti,
        Duration::from_millis(20),
        &TokenFacts::default(),
    );
    std::thread::sleep(Duration::from_millis(30));
    assert_eq!(store.take(&device, &jti), Take::Expired);
    assert_eq!(store.take(&device, &jti), Take::Absent);
}

#[test]
fn sweep_frees_only_expired_entries() {
    let store = MemoryStore::new();
    for i in 0..100 {
        let ttl = if i % 2 == 0 { 10 } else { 60_000 };
        store.insert(
            &DeviceId::parse(&format!("d{i}")).unwrap(),
            &Jti::random(),
            Duration::from_millis(ttl),
            &TokenFacts::default(),
        );
    }
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(store.sweep(), 50);
    assert_eq!(store.live_count(), 50);
}
