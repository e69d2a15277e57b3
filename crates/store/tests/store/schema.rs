//! Migrations and transactions.

use super::*;

plantops_testkit::for_each_backend!(
    migrations_are_recorded_and_harmless_twice,
    concurrent_migrations_apply_once,
);

async fn migrations_are_recorded_and_harmless_twice(db: &TestDb) {
    let store = plantops_store::connect(db.url()).await.unwrap();
    assert!(!store.is_migrated().await.unwrap());
    store.migrate().await.unwrap();
    store.migrate().await.unwrap();
    assert!(store.is_migrated().await.unwrap());
}

async fn concurrent_migrations_apply_once(db: &TestDb) {
    let a = plantops_store::connect(db.url()).await.unwrap();
    let b = plantops_store::connect(db.url()).await.unwrap();
    let (ra, rb) = tokio::join!(a.migrate(), b.migrate());
    // SQLite serialises the two through its write lock; the loser may see
    // the winner's work and fail cleanly, never corrupt the schema.
    if a.backend() == plantops_store::Backend::Postgres {
        ra.unwrap();
        rb.unwrap();
    }
    a.migrate().await.unwrap();
    assert!(b.is_migrated().await.unwrap());
    a.insert_plant(&plant("after", t0())).await.unwrap();
}

/// A caller cancelled at any moment — a client that hung up, a timeout —
/// never leaves a pooled PostgreSQL connection inside a transaction (sqlx
/// 0.8's cancelled `BEGIN`, transact-rs/sqlx#4393), where the next
/// borrower's writes would stay uncommitted, invisible and holding locks.
/// Thousands of transactions are cut off at staggered moments, each
/// followed by a plain write that another connection must then see.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_transactions_never_swallow_later_writes() {
    let db = TestDb::postgres().await;
    let store = db.store().await;
    let first = plant("Cancelled", t0());
    store.insert_plant(&first).await.unwrap();
    let change = StateChange {
        plant_id: first.id,
        metric: Metric::SoilMoisture,
        state: MetricState::default(),
    };
    let mut cancelled = 0;
    let mut written = 1;
    for round in 0..2000u64 {
        // 0–399 µs: some calls are cut before BEGIN is sent, some while it
        // is in flight, some mid-transaction, some not at all.
        let budget = std::time::Duration::from_micros((round * 7919) % 400);
        if tokio::time::timeout(budget, store.record_alerts(&[change], &[]))
            .await
            .is_err()
        {
            cancelled += 1;
        }
        store.insert_plant(&plant("Later", t0())).await.unwrap();
        written += 1;
    }
    assert!(cancelled > 100, "only {cancelled} calls were cut off");
    let outside = sqlx::PgPool::connect(db.url()).await.unwrap();
    let visible: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM plants")
        .fetch_one(&outside)
        .await
        .unwrap();
    assert_eq!(visible, written, "writes stuck in a stale transaction");
}
