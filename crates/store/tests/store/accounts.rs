//! Accounts, sessions, API tokens and enrollment keys.

use super::*;

plantops_testkit::for_each_backend!(
    accounts_keep_one_admin_at_least,
    sessions_end_with_logout_password_change_and_expiry,
    api_tokens_belong_to_their_user,
    enrollment_keys_count_their_uses,
);

fn user(name: &str, role: Role) -> User {
    User {
        id: Uuid::new_v4(),
        username: name.to_string(),
        role,
        created_at: t0(),
    }
}

async fn accounts_keep_one_admin_at_least(db: &TestDb) {
    let store = &db.store().await;
    let first = user("first", Role::Admin);
    assert_eq!(store.count_users().await.unwrap(), 0);
    assert_eq!(
        store.insert_user(&first, "hash-1", true).await.unwrap(),
        AccountChange::Done
    );
    // Setup happens once: a second "first user" is refused.
    let late = user("late", Role::Admin);
    assert_eq!(
        store.insert_user(&late, "hash", true).await.unwrap(),
        AccountChange::Conflict
    );
    let taken = user("first", Role::Viewer);
    assert_eq!(
        store.insert_user(&taken, "hash", false).await.unwrap(),
        AccountChange::Conflict
    );
    let viewer = user("viewer", Role::Viewer);
    store.insert_user(&viewer, "hash-2", false).await.unwrap();
    assert_eq!(store.count_users().await.unwrap(), 2);

    let found = store.user_by_name("first").await.unwrap().unwrap();
    assert_eq!(
        (found.user, found.password_hash.as_str()),
        (first.clone(), "hash-1")
    );
    assert!(store.user_by_name("nobody").await.unwrap().is_none());
    let names: Vec<String> = store
        .list_users()
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.username)
        .collect();
    assert_eq!(names, ["first", "viewer"]);

    assert_eq!(
        store.set_user_role(first.id, Role::Viewer).await.unwrap(),
        AccountChange::LastAdmin
    );
    assert_eq!(
        store.delete_user(first.id).await.unwrap(),
        AccountChange::LastAdmin
    );
    assert_eq!(
        store.set_user_role(viewer.id, Role::Admin).await.unwrap(),
        AccountChange::Done
    );
    assert_eq!(
        store.set_user_role(first.id, Role::Viewer).await.unwrap(),
        AccountChange::Done
    );
    assert_eq!(
        store.delete_user(viewer.id).await.unwrap(),
        AccountChange::LastAdmin
    );
    assert_eq!(
        store.delete_user(first.id).await.unwrap(),
        AccountChange::Done
    );
    assert_eq!(
        store.delete_user(first.id).await.unwrap(),
        AccountChange::NotFound
    );
    assert_eq!(
        store.set_user_role(first.id, Role::Admin).await.unwrap(),
        AccountChange::NotFound
    );
}

async fn sessions_end_with_logout_password_change_and_expiry(db: &TestDb) {
    let store = &db.store().await;
    let admin = user("admin", Role::Admin);
    store.insert_user(&admin, "hash", false).await.unwrap();
    store.insert_session("a", admin.id, t0()).await.unwrap();
    store.insert_session("b", admin.id, t0()).await.unwrap();
    store.insert_session("c", admin.id, t0()).await.unwrap();
    let session = store.session("a").await.unwrap().unwrap();
    assert_eq!(session.user, admin);
    assert_eq!((session.created_at, session.last_seen_at), (t0(), t0()));

    store
        .touch_session("a", t0() + Duration::hours(2))
        .await
        .unwrap();
    assert_eq!(
        store.session("a").await.unwrap().unwrap().last_seen_at,
        t0() + Duration::hours(2)
    );
    store.delete_session("b").await.unwrap();
    assert!(store.session("b").await.unwrap().is_none());
    // Idle since before t0+1h: "c" goes, "a" (seen at t0+2h) stays.
    let removed = store
        .delete_expired_sessions(t0() + Duration::hours(1), t0() - Duration::days(1))
        .await
        .unwrap();
    assert_eq!(removed, 1);
    assert!(store.session("a").await.unwrap().is_some());
    assert!(store.set_user_password(admin.id, "new-hash").await.unwrap());
    assert!(
        store.session("a").await.unwrap().is_none(),
        "a new password ends every session"
    );
    assert_eq!(
        store
            .user_by_name("admin")
            .await
            .unwrap()
            .unwrap()
            .password_hash,
        "new-hash"
    );
}

async fn api_tokens_belong_to_their_user(db: &TestDb) {
    let store = &db.store().await;
    let admin = user("admin", Role::Admin);
    let other = user("other", Role::Viewer);
    store.insert_user(&admin, "hash", false).await.unwrap();
    store.insert_user(&other, "hash", false).await.unwrap();
    let token = ApiToken {
        id: Uuid::new_v4(),
        user_id: admin.id,
        name: "prometheus".into(),
        scope: Scope::Read,
        created_at: t0(),
        last_used_at: None,
    };
    store.insert_api_token(&token, "digest-1").await.unwrap();
    let (found, owner) = store.api_token("digest-1").await.unwrap().unwrap();
    assert_eq!((found, owner), (token.clone(), admin.clone()));
    store
        .touch_api_token(token.id, t0() + Duration::minutes(5))
        .await
        .unwrap();
    let listed = store.api_tokens(admin.id).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].last_used_at, Some(t0() + Duration::minutes(5)));
    assert!(store.api_tokens(other.id).await.unwrap().is_empty());
    assert!(
        !store.delete_api_token(token.id, other.id).await.unwrap(),
        "not theirs"
    );
    assert!(store.delete_api_token(token.id, admin.id).await.unwrap());
    assert!(store.api_token("digest-1").await.unwrap().is_none());

    // A deleted user's tokens and sessions go with it.
    store
        .insert_api_token(
            &ApiToken {
                id: Uuid::new_v4(),
                user_id: other.id,
                ..token
            },
            "digest-2",
        )
        .await
        .unwrap();
    store.insert_session("s", other.id, t0()).await.unwrap();
    assert_eq!(
        store.delete_user(other.id).await.unwrap(),
        AccountChange::Done
    );
    assert!(store.api_token("digest-2").await.unwrap().is_none());
    assert!(store.session("s").await.unwrap().is_none());
}

async fn enrollment_keys_count_their_uses(db: &TestDb) {
    let store = &db.store().await;
    let key = EnrollmentKey {
        id: Uuid::new_v4(),
        name: "greenhouse".into(),
        created_at: t0(),
        expires_at: Some(t0() + Duration::days(1)),
        max_uses: Some(2),
        uses: 0,
        revoked_at: None,
    };
    store
        .insert_enrollment_key(&key, "key-digest")
        .await
        .unwrap();
    assert_eq!(
        store.enrollment_key("key-digest").await.unwrap(),
        Some(key.clone())
    );
    assert!(store.use_enrollment_key(key.id, t0()).await.unwrap());
    assert!(store.use_enrollment_key(key.id, t0()).await.unwrap());
    assert!(
        !store.use_enrollment_key(key.id, t0()).await.unwrap(),
        "used up"
    );
    assert_eq!(store.enrollment_keys().await.unwrap()[0].uses, 2);

    let unlimited = EnrollmentKey {
        id: Uuid::new_v4(),
        max_uses: None,
        ..key.clone()
    };
    store
        .insert_enrollment_key(&unlimited, "other-digest")
        .await
        .unwrap();
    assert!(
        !store
            .use_enrollment_key(unlimited.id, t0() + Duration::days(2))
            .await
            .unwrap(),
        "expired"
    );
    assert!(store.use_enrollment_key(unlimited.id, t0()).await.unwrap());
    assert!(store
        .revoke_enrollment_key(unlimited.id, t0())
        .await
        .unwrap());
    assert!(
        !store.use_enrollment_key(unlimited.id, t0()).await.unwrap(),
        "revoked"
    );
    let listed = store.enrollment_keys().await.unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed
        .iter()
        .any(|k| k.id == unlimited.id && k.revoked_at == Some(t0())));
    assert!(!store
        .revoke_enrollment_key(Uuid::new_v4(), t0())
        .await
        .unwrap());
}
