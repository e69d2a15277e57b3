//! Who may do what: public routes, viewers and read tokens, sessions, sign-in
//! throttling, the first admin.

use super::*;

plantops_testkit::for_each_backend!(
    viewers_and_read_tokens_only_read,
    sessions_need_our_origin_and_end_with_logout_or_a_new_password,
    setup_token_creates_one_admin_once,
);

/// An OpenAPI operation's name ("POST /mqtt/auth") for a route of the
/// server's lists.
fn operation(route: &(Method, &str)) -> String {
    let (method, path) = route;
    format!("{method} {}", path.strip_prefix("/api").unwrap_or(path))
}

/// Walks every documented operation without credentials, so a new route
/// cannot slip through unprotected: the server's public routes answer,
/// those that check a credential of their own (registration) answer 401
/// themselves, everything else in the OpenAPI document (and `/metrics`)
/// answers 401 at the sign-in rule.
#[tokio::test]
async fn every_route_but_the_public_ones_needs_credentials() {
    let db = TestDb::sqlite().await;
    let app = TestApp::new(&db).await;
    let (_, spec) = app.call(Method::GET, "/api/openapi.json", None).await;
    let public: Vec<String> = plantops_server::auth::PUBLIC_ROUTES
        .iter()
        .map(operation)
        .collect();
    let self_checked: Vec<String> = plantops_server::auth::SELF_CHECKED_ROUTES
        .iter()
        .map(operation)
        .collect();
    let mut walked = 0;
    let mut seen_public = Vec::new();
    let anonymous = [("authorization", "Bearer pot_not-a-real-token")];
    for (path, item) in spec["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            let operation = format!("{} {path}", method.to_uppercase());
            let uri = format!("/api{}", path.replace("{id}", &Uuid::new_v4().to_string()));
            let (status, headers, body) = app
                .call_with(
                    method.to_uppercase().parse().unwrap(),
                    &uri,
                    Some("{}"),
                    &anonymous,
                )
                .await;
            if public.contains(&operation) {
                assert_ne!(
                    status,
                    StatusCode::UNAUTHORIZED,
                    "{operation} must stay public: {body}"
                );
                seen_public.push(operation);
                continue;
            }
            if self_checked.contains(&operation) {
                assert_eq!(
                    status,
                    StatusCode::UNAUTHORIZED,
                    "{operation} checks its own credential: {body}"
                );
                seen_public.push(operation);
                continue;
            }
            walked += 1;
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{operation} answered without credentials"
            );
            assert_eq!(headers["www-authenticate"], "Bearer", "{operation}");
            assert!(body["detail"].is_string(), "{operation}: {body}");
        }
    }
    assert!(walked >= 40, "walked only {walked} operations");
    // A listed route the document leaves out (the document itself) is
    // called on its own.
    for (method, path) in plantops_server::auth::PUBLIC_ROUTES {
        if seen_public.contains(&operation(&(method.clone(), path))) {
            continue;
        }
        let (status, _, body) = app.call_with(method.clone(), path, None, &anonymous).await;
        assert_ne!(status, StatusCode::UNAUTHORIZED, "{method} {path}: {body}");
    }

    let (status, headers, _) = app
        .call_with(Method::GET, "/metrics", None, &anonymous)
        .await;
    assert_eq!(
        (status, &headers["www-authenticate"]),
        (StatusCode::UNAUTHORIZED, &"Bearer".parse().unwrap())
    );
    // The UI's files stay public.
    let (status, _, _) = app
        .call_with(Method::GET, "/devices", None, &anonymous)
        .await;
    assert_ne!(status, StatusCode::UNAUTHORIZED);
}

async fn viewers_and_read_tokens_only_read(db: &TestDb) {
    let app = TestApp::new(db).await;
    let plant = app.plant("Fern").await;
    let plant_uri = format!("/api/plants/{}", plant["id"].as_str().unwrap());
    let (status, viewer) = app
        .call(
            Method::POST,
            "/api/users",
            Some(json!({"username": "guest", "password": "guest-password", "role": "viewer"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{viewer}");
    let cookie = app.login("guest", "guest-password").await;
    let as_viewer = [("cookie", cookie.as_str()), ORIGIN];

    let (status, _, listed) = app
        .call_with(Method::GET, "/api/plants", None, &as_viewer)
        .await;
    assert_eq!(
        (status, listed["total"].as_u64()),
        (StatusCode::OK, Some(1))
    );
    let (status, _, me) = app
        .call_with(Method::GET, "/api/auth/me", None, &as_viewer)
        .await;
    assert_eq!(
        (status, me["role"].as_str()),
        (StatusCode::OK, Some("viewer"))
    );
    for (method, uri, body) in [
        (
            Method::POST,
            "/api/plants".to_string(),
            json!({"name": "Nope"}),
        ),
        (Method::PUT, plant_uri.clone(), json!({"thresholds": null})),
        (
            Method::POST,
            format!("{plant_uri}/care-events"),
            json!({"kind": "note", "text": "viewer was here"}),
        ),
        (
            Method::PUT,
            format!("{plant_uri}/care-schedule"),
            json!({"tasks": []}),
        ),
        (
            Method::POST,
            format!("/api/tasks/{}/done", Uuid::new_v4()),
            json!({}),
        ),
        (Method::DELETE, plant_uri.clone(), json!({})),
        (
            Method::PUT,
            "/api/settings/notifications".to_string(),
            json!({"discord_webhook_url": "https://evil.example/hook"}),
        ),
        (
            Method::POST,
            "/api/enrollment/window".to_string(),
            json!({"minutes": 5}),
        ),
        (
            Method::POST,
            "/api/notification-channels".to_string(),
            json!({"kind": "webhook", "name": "x", "url": "https://evil.example/hook",
                "secret": "0123456789abcdef"}),
        ),
        (
            Method::POST,
            format!("/api/notification-channels/{}/test", Uuid::new_v4()),
            json!({}),
        ),
        (
            Method::DELETE,
            format!("/api/notification-channels/{}", Uuid::new_v4()),
            json!({}),
        ),
        (
            Method::POST,
            "/api/users".to_string(),
            json!({"username": "x", "password": "12345678", "role": "admin"}),
        ),
    ] {
        let body = body.to_string();
        let (status, _, problem) = app
            .call_with(method.clone(), &uri, Some(&body), &as_viewer)
            .await;
        assert_eq!(
            status,
            StatusCode::FORBIDDEN,
            "viewer {method} {uri}: {problem}"
        );
        assert!(problem["detail"].is_string());
    }
    // Viewers read the care journal; what they tried to write is not there.
    let (status, _, journal) = app
        .call_with(
            Method::GET,
            &format!("{plant_uri}/care-events"),
            None,
            &as_viewer,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{journal}");
    assert_eq!(journal["events"], json!([]));
    // A viewer manages its own tokens; even a `full` one stays a viewer's.
    let full = app.token_for(&cookie, "full").await;
    let (status, _) = app
        .call_bearer(
            Method::POST,
            "/api/plants",
            &full,
            Some(json!({"name": "Nope"})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // An admin's read token may only GET.
    let (status, issued) = app
        .call(
            Method::POST,
            "/api/tokens",
            Some(json!({"name": "grafana", "scope": "read"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{issued}");
    let read = issued["token"].as_str().unwrap();
    let (status, _) = app.call_bearer(Method::GET, &plant_uri, read, None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, problem) = app
        .call_bearer(Method::DELETE, &plant_uri, read, None)
        .await;
    assert_eq!(
        (status, problem["detail"].as_str()),
        (StatusCode::FORBIDDEN, Some("This API token is read-only"))
    );
    let (status, _) = app
        .call_bearer(
            Method::POST,
            "/api/tokens",
            read,
            Some(json!({"name": "n", "scope": "full"})),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "a read token cannot mint a full one"
    );
    let (_, stored) = app.call(Method::GET, &plant_uri, None).await;
    assert_eq!(stored["name"], "Fern", "nothing changed");

    // Revoking a token takes effect on the next request.
    let (_, tokens) = app.call(Method::GET, "/api/tokens", None).await;
    let grafana = tokens["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "grafana")
        .unwrap();
    assert!(
        grafana.get("token").is_none(),
        "a listed token never shows its secret"
    );
    assert!(grafana["last_used_at"].is_string(), "{grafana}");
    let (status, _) = app
        .call(
            Method::DELETE,
            &format!("/api/tokens/{}", grafana["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = app.call_bearer(Method::GET, &plant_uri, read, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // The last admin can be neither removed nor demoted.
    let (_, users) = app.call(Method::GET, "/api/users", None).await;
    let admin_id = users["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["username"] == "admin")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let admin_uri = format!("/api/users/{admin_id}");
    let (status, _) = app
        .call(Method::PUT, &admin_uri, Some(json!({"role": "viewer"})))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, _) = app.call(Method::DELETE, &admin_uri, None).await;
    assert_eq!(status, StatusCode::CONFLICT);
    // Removing the viewer ends its session and tokens.
    let (status, _) = app
        .call(
            Method::DELETE,
            &format!("/api/users/{}", viewer["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _, _) = app
        .call_with(Method::GET, "/api/plants", None, &as_viewer)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = app
        .call_bearer(Method::GET, "/api/plants", &full, None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

async fn sessions_need_our_origin_and_end_with_logout_or_a_new_password(db: &TestDb) {
    let app = TestApp::new(db).await;
    let body = json!({"username": "admin", "password": "admin-password"}).to_string();
    let (status, headers, _) = app
        .call_with(
            Method::POST,
            "/api/auth/login",
            Some(&body),
            &[ANONYMOUS[0], ("x-forwarded-proto", "https")],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let set_cookie = headers["set-cookie"].to_str().unwrap();
    for attribute in ["HttpOnly", "SameSite=Strict", "Secure", "Path=/"] {
        assert!(set_cookie.contains(attribute), "{set_cookie}");
    }
    let cookie = app.login("admin", "admin-password").await;
    let (status, headers, _) = app
        .call_with(Method::POST, "/api/auth/login", Some(&body), &ANONYMOUS)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        !headers["set-cookie"].to_str().unwrap().contains("Secure"),
        "plain HTTP: no Secure flag"
    );
    let other_browser = session_cookie(&headers);

    // Changes need our own Origin (or Referer): a page elsewhere cannot ride the cookie.
    let plant = json!({"name": "Origin"}).to_string();
    for headers in [
        vec![("cookie", cookie.as_str())],
        vec![
            ("cookie", cookie.as_str()),
            ("origin", "http://evil.example"),
        ],
        vec![
            ("cookie", cookie.as_str()),
            ("referer", "http://evil.example/plants.lan:8000"),
        ],
    ] {
        let (status, _, _) = app
            .call_with(Method::POST, "/api/plants", Some(&plant), &headers)
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{headers:?}");
    }
    let (status, _, _) = app
        .call_with(
            Method::POST,
            "/api/plants",
            Some(&plant),
            &[
                ("cookie", &cookie),
                ("referer", "http://plants.lan:8000/devices"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, plants) = app.call(Method::GET, "/api/plants", None).await;
    assert_eq!(
        plants["total"], 1,
        "only the same-origin request created a plant"
    );

    // Logout ends this session at once.
    let (status, headers, _) = app
        .call_with(
            Method::POST,
            "/api/auth/logout",
            None,
            &[("cookie", &cookie), ORIGIN],
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(headers["set-cookie"]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    let (status, headers, _) = app
        .call_with(Method::GET, "/api/plants", None, &[("cookie", &cookie)])
        .await;
    assert_eq!(
        (status, &headers["www-authenticate"]),
        (StatusCode::UNAUTHORIZED, &"Bearer".parse().unwrap())
    );

    // A new password ends every other session; this browser gets a new one.
    let mine = app.login("admin", "admin-password").await;
    let change =
        json!({"current_password": "wrong-password", "new_password": "a-new-password"}).to_string();
    let (status, _, _) = app
        .call_with(
            Method::PUT,
            "/api/auth/password",
            Some(&change),
            &[("cookie", &mine), ORIGIN],
        )
        .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "the current password is checked"
    );
    let change = json!({"current_password": "admin-password", "new_password": "short"}).to_string();
    let (status, _, problem) = app
        .call_with(
            Method::PUT,
            "/api/auth/password",
            Some(&change),
            &[("cookie", &mine), ORIGIN],
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(problem["detail"][0]["loc"], json!(["body", "new_password"]));
    let change =
        json!({"current_password": "admin-password", "new_password": "a-new-password"}).to_string();
    let (status, headers, _) = app
        .call_with(
            Method::PUT,
            "/api/auth/password",
            Some(&change),
            &[("cookie", &mine), ORIGIN],
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let renewed = session_cookie(&headers);
    for (cookie, expected) in [
        (&other_browser, StatusCode::UNAUTHORIZED),
        (&mine, StatusCode::UNAUTHORIZED),
        (&renewed, StatusCode::OK),
    ] {
        let (status, _, _) = app
            .call_with(Method::GET, "/api/auth/me", None, &[("cookie", cookie)])
            .await;
        assert_eq!(status, expected, "{cookie}");
    }
    let body = json!({"username": "admin", "password": "admin-password"}).to_string();
    let (status, _, _) = app
        .call_with(Method::POST, "/api/auth/login", Some(&body), &ANONYMOUS)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the old password is gone");
    app.login("admin", "a-new-password").await;
}

/// Failed logins slow down; the right password gets in once the delay is over.
#[tokio::test]
async fn logins_are_throttled_without_locking_out_for_good() {
    let db = TestDb::sqlite().await;
    let app = TestApp::new(&db).await;
    let wrong = json!({"username": "admin", "password": "not-the-password"}).to_string();
    let mut statuses = Vec::new();
    for _ in 0..7 {
        let (status, headers, _) = app
            .call_with(Method::POST, "/api/auth/login", Some(&wrong), &ANONYMOUS)
            .await;
        statuses.push(status.as_u16());
        if status == StatusCode::TOO_MANY_REQUESTS {
            let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
            assert!((1..=2).contains(&retry), "{retry}");
        }
    }
    assert_eq!(statuses, [401, 401, 401, 401, 401, 401, 429]);
    // Even the right password waits out the delay, then gets in.
    let right = json!({"username": "admin", "password": "admin-password"}).to_string();
    let (status, headers, _) = app
        .call_with(Method::POST, "/api/auth/login", Some(&right), &ANONYMOUS)
        .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    tokio::time::sleep(Duration::from_secs(retry)).await;
    app.login("admin", "admin-password").await;
}

async fn setup_token_creates_one_admin_once(db: &TestDb) {
    let app = TestApp::without_accounts(db).await;
    let (status, _, auth) = app
        .call_with(Method::GET, "/api/auth/status", None, &ANONYMOUS)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        auth,
        json!({"setup_required": true, "auth": true, "enrollment_open": false})
    );
    let token_file = app._data_dir.path().join("setup-token");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let token = std::fs::read_to_string(&token_file)
        .unwrap()
        .trim()
        .to_string();
    let setup = |token: &str, username: &str| {
        json!({"token": token, "username": username, "password": "first-admin-pw"}).to_string()
    };

    let (status, _, _) = app
        .call_with(
            Method::POST,
            "/api/auth/setup",
            Some(&setup("wrong", "owner")),
            &ANONYMOUS,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let short = json!({"token": token, "username": "owner", "password": "short"}).to_string();
    let (status, _, _) = app
        .call_with(Method::POST, "/api/auth/setup", Some(&short), &ANONYMOUS)
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, headers, user) = app
        .call_with(
            Method::POST,
            "/api/auth/setup",
            Some(&setup(&token, "owner")),
            &ANONYMOUS,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{user}");
    assert_eq!(user["role"], "admin");
    let cookie = session_cookie(&headers);
    let (status, _, me) = app
        .call_with(Method::GET, "/api/auth/me", None, &[("cookie", &cookie)])
        .await;
    assert_eq!(
        (status, me["username"].as_str()),
        (StatusCode::OK, Some("owner"))
    );

    assert!(!token_file.exists(), "the token file goes with the token");
    let (status, _, _) = app
        .call_with(
            Method::POST,
            "/api/auth/setup",
            Some(&setup(&token, "intruder")),
            &ANONYMOUS,
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (_, _, auth) = app
        .call_with(Method::GET, "/api/auth/status", None, &ANONYMOUS)
        .await;
    assert_eq!(auth["setup_required"], false);
    assert_eq!(app.store.list_users().await.unwrap().len(), 1);
}

/// A session unused past the idle limit, or older than the lifetime, is refused and removed.
#[tokio::test]
async fn sessions_expire_when_idle_or_too_old() {
    use plantops_core::account::secret_digest;
    let db = TestDb::sqlite().await;
    let app = TestApp::new(&db).await;
    let defaults = AuthSettings::default();
    let idle = chrono::Duration::from_std(defaults.session_idle).unwrap();
    let lifetime = chrono::Duration::from_std(defaults.session_lifetime).unwrap();

    let cookie = app.login("admin", "admin-password").await;
    let digest = secret_digest(cookie.split_once('=').unwrap().1);
    let now = plantops_core::now();
    // The database is changed behind the server's back, as another process
    // would: the server's few seconds of credential cache are dropped.
    let forget = || app.server.state().auth.forget_credentials();
    app.store
        .touch_session(&digest, now - idle + chrono::Duration::minutes(5))
        .await
        .unwrap();
    forget();
    let (status, _, _) = app
        .call_with(Method::GET, "/api/auth/me", None, &[("cookie", &cookie)])
        .await;
    assert_eq!(status, StatusCode::OK, "idle, but not for long enough");
    app.store
        .touch_session(&digest, now - idle - chrono::Duration::minutes(1))
        .await
        .unwrap();
    forget();
    let (status, _, _) = app
        .call_with(Method::GET, "/api/auth/me", None, &[("cookie", &cookie)])
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        app.store.session(&digest).await.unwrap().is_none(),
        "removed"
    );

    // In use all along, but signed in longer ago than the lifetime.
    let cookie = app.login("admin", "admin-password").await;
    let digest = secret_digest(cookie.split_once('=').unwrap().1);
    let admin = app.store.user_by_name("admin").await.unwrap().unwrap().user;
    app.store.delete_session(&digest).await.unwrap();
    app.store
        .insert_session(
            &digest,
            admin.id,
            now - lifetime - chrono::Duration::minutes(1),
        )
        .await
        .unwrap();
    app.store.touch_session(&digest, now).await.unwrap();
    forget();
    let (status, _, _) = app
        .call_with(Method::GET, "/api/auth/me", None, &[("cookie", &cookie)])
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

/// Anonymous callers see the overall status only; counters need credentials.
#[tokio::test]
async fn health_counters_need_credentials() {
    let db = TestDb::sqlite().await;
    let app = TestApp::new(&db).await;
    let (status, _, health) = app
        .call_with(Method::GET, "/api/health", None, &ANONYMOUS)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(health["status"], "healthy");
    assert!(health.get("components").is_none(), "{health}");
    let (_, health) = app.call(Method::GET, "/api/health", None).await;
    assert!(
        health["components"]["ingest"]["received"].is_u64(),
        "{health}"
    );
}
