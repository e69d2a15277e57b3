//! Instances sharing a database: the lead, live events, the instance table.

use super::*;

plantops_testkit::for_each_backend!(
    one_instance_leads_at_a_time,
    instances_are_known_until_forgotten,
    live_events_reach_every_instance,
);

async fn one_instance_leads_at_a_time(db: &TestDb) {
    let store = db.store().await;
    let lead = store.try_lead().await.unwrap();
    assert!(lead.is_some());
    // Another instance: its own pool on the same database.
    let other = db.store().await;
    if store.backend() == Backend::Sqlite {
        // SQLite serves one instance, which always leads: there is no
        // other to keep out.
        assert!(other.try_lead().await.unwrap().is_some());
        return;
    }
    assert!(other.try_lead().await.unwrap().is_none());
    drop(lead);
    // The lock goes with its connection, once the server has noticed.
    let taken_over = async {
        loop {
            if let Some(lead) = other.try_lead().await.unwrap() {
                return lead;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    };
    let _lead = tokio::time::timeout(std::time::Duration::from_secs(30), taken_over)
        .await
        .expect("the lead passes on when its holder goes");
    assert!(store.try_lead().await.unwrap().is_none());
}

async fn instances_are_known_until_forgotten(db: &TestDb) {
    let store = db.store().await;
    store.touch_instance("a", t0()).await.unwrap();
    store.touch_instance("b", t0()).await.unwrap();
    store
        .touch_instance("a", t0() + Duration::minutes(5))
        .await
        .unwrap();
    let stale = store
        .stale_instances(t0() + Duration::minutes(1))
        .await
        .unwrap();
    assert_eq!(stale, vec!["b".to_string()]);
    let live = store
        .live_instances(t0() + Duration::minutes(1))
        .await
        .unwrap();
    assert_eq!(live, vec!["a".to_string()]);
    store.forget_instance("b").await.unwrap();
    assert!(store
        .stale_instances(t0() + Duration::minutes(1))
        .await
        .unwrap()
        .is_empty());
}

async fn live_events_reach_every_instance(db: &TestDb) {
    use futures::StreamExt;
    let store = db.store().await;
    let feed = store.live_feed().await.unwrap();
    if store.backend() == Backend::Sqlite {
        // One instance: events stay in its process, and publishing to the
        // (absent) feed is accepted and goes nowhere.
        assert!(feed.is_none(), "SQLite has no feed");
        store.publish_live("ignored").await.unwrap();
        return;
    }
    let mut feed = feed.expect("PostgreSQL shares live events through the database");
    let other = db.store().await;
    other.publish_live(r#"{"kind":"reading"}"#).await.unwrap();
    store.publish_live("own").await.unwrap();
    let mut received = Vec::new();
    for _ in 0..2 {
        let message = tokio::time::timeout(std::time::Duration::from_secs(10), feed.next())
            .await
            .unwrap()
            .unwrap();
        // Numbered by the database: the same number on every instance.
        let (number, payload) = message.split_once('\n').unwrap();
        received.push((number.parse::<u64>().unwrap(), payload.to_string()));
    }
    let (first, payload) = received[0].clone();
    assert_eq!(payload, r#"{"kind":"reading"}"#);
    let (second, payload) = received[1].clone();
    assert_eq!(payload, "own");
    assert!(second > first);
}
