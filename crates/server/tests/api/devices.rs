//! Devices: their lifecycle and registration.

use super::*;

plantops_testkit::for_each_backend!(
    device_lifecycle,
    registration_needs_a_key_the_window_or_an_admin,
);

async fn device_lifecycle(db: &TestDb) {
    let app = TestApp::new(db).await;
    let (status, reg) = app
        .call(
            Method::POST,
            "/api/devices/register",
            Some(json!({"mac_address": "AA-BB-CC-DD-EE-0F", "firmware_version": "2.1", "sensor_types": ["soil_moisture"]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let id = reg["device_id"].as_str().unwrap().to_string();
    let password = reg["mqtt_password"].as_str().unwrap();
    assert!(password.len() >= 32);
    assert!(reg["mqtt_username"]
        .as_str()
        .unwrap()
        .starts_with("device_"));
    assert_eq!(
        reg["mqtt_host"], "plants.lan",
        "host the device used for HTTP"
    );
    assert!(reg["mqtt_port"].as_u64().is_some());

    let (status, again) = app
        .call(
            Method::POST,
            "/api/devices/register",
            Some(json!({"mac_address": "aa:bb:cc:dd:ee:0f"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again["device_id"], reg["device_id"]);
    assert_eq!(again["mqtt_username"], reg["mqtt_username"]);
    assert_eq!(again["mqtt_password"], "<stored_securely>");

    let (_, device) = app
        .call(Method::GET, &format!("/api/devices/{id}"), None)
        .await;
    assert_eq!(device["mac_address"], "aa:bb:cc:dd:ee:0f");
    assert_eq!(device["status"], "provisioning");
    assert_eq!(device["sensor_types"], json!(["soil_moisture"]));
    assert!(device.get("password_hash").is_none());
    let (_, listed) = app
        .call(Method::GET, "/api/devices?status=provisioning", None)
        .await;
    assert_eq!(listed["total"], 1);
    let (_, listed) = app
        .call(Method::GET, "/api/devices?status=online", None)
        .await;
    assert_eq!(listed["total"], 0);

    let (status, body) = app
        .call(
            Method::POST,
            &format!("/api/devices/{id}/provision"),
            Some(json!({"plant_id": Uuid::new_v4()})),
        )
        .await;
    assert_eq!(
        (status, body["detail"].as_str()),
        (StatusCode::NOT_FOUND, Some("Plant not found"))
    );
    let plant = app.plant("Cactus").await;
    let plant_id = plant["id"].as_str().unwrap();
    let (status, body) = app
        .call(
            Method::POST,
            &format!("/api/devices/{}/provision", Uuid::new_v4()),
            Some(json!({"plant_id": plant_id})),
        )
        .await;
    assert_eq!(
        (status, body["detail"].as_str()),
        (StatusCode::NOT_FOUND, Some("Device not found"))
    );
    let (status, provisioned) = app
        .call(
            Method::POST,
            &format!("/api/devices/{id}/provision"),
            Some(json!({"plant_id": plant_id})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(provisioned["plant_id"], plant_id);
    assert_eq!(provisioned["status"], "provisioning", "not forced online");
    let (_, plant_devices) = app
        .call(
            Method::GET,
            &format!("/api/plants/{plant_id}/devices"),
            None,
        )
        .await;
    assert_eq!(plant_devices["total"], 1);
    let (_, plant_view) = app
        .call(Method::GET, &format!("/api/plants/{plant_id}"), None)
        .await;
    assert_eq!(plant_view["device_count"], 1);

    let (status, rotated) = app
        .call(
            Method::POST,
            &format!("/api/devices/{id}/rotate-credentials"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_ne!(rotated["mqtt_password"].as_str(), Some(password));
    let creds = app
        .store
        .device_credentials(reg["mqtt_username"].as_str().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(plantops_core::credentials::verify_password(
        rotated["mqtt_password"].as_str().unwrap(),
        &creds.password_hash
    ));
    assert!(!plantops_core::credentials::verify_password(
        password,
        &creds.password_hash
    ));

    let (status, body) = app
        .call(
            Method::GET,
            &format!("/api/devices/{id}/telemetry/latest"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body["detail"].is_string());

    let (status, _) = app
        .call(Method::POST, &format!("/api/devices/{id}/unassign"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, plant_devices) = app
        .call(
            Method::GET,
            &format!("/api/plants/{plant_id}/devices"),
            None,
        )
        .await;
    assert_eq!(plant_devices["total"], 0);

    let (status, body) = app
        .call(Method::DELETE, &format!("/api/devices/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(body["message"].is_string());
    let (status, _) = app
        .call(Method::DELETE, &format!("/api/devices/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = app
        .call(Method::POST, &format!("/api/devices/{id}/unassign"), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

async fn registration_needs_a_key_the_window_or_an_admin(db: &TestDb) {
    let app = TestApp::new(db).await;
    let register = |mac: &str| json!({"mac_address": mac}).to_string();
    let (status, headers, problem) = app
        .call_with(
            Method::POST,
            "/api/devices/register",
            Some(&register("aa:00:00:00:00:01")),
            &ANONYMOUS,
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{problem}");
    assert_eq!(headers["www-authenticate"], "Bearer");

    let (status, key) = app
        .call(
            Method::POST,
            "/api/enrollment-keys",
            Some(json!({"name": "shelf", "max_uses": 1})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{key}");
    let secret = key["key"].as_str().unwrap().to_string();
    assert!(secret.starts_with("pek_"));
    let (status, first) = app.register_with(&secret, "aa:00:00:00:00:01").await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_ne!(first["mqtt_password"], "<stored_securely>");
    // Used up: a new device is refused, a known one still re-registers (without its password).
    let (status, _) = app.register_with(&secret, "aa:00:00:00:00:02").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, again) = app.register_with(&secret, "aa:00:00:00:00:01").await;
    assert_eq!(
        (status, again["mqtt_password"].as_str()),
        (StatusCode::OK, Some("<stored_securely>"))
    );

    // A revoked key stops at once.
    let (_, unlimited) = app
        .call(
            Method::POST,
            "/api/enrollment-keys",
            Some(json!({"name": "bulk"})),
        )
        .await;
    let bulk = unlimited["key"].as_str().unwrap().to_string();
    let (status, _) = app.register_with(&bulk, "aa:00:00:00:00:03").await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = app
        .call(
            Method::DELETE,
            &format!("/api/enrollment-keys/{}", unlimited["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = app.register_with(&bulk, "aa:00:00:00:00:04").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (_, keys) = app.call(Method::GET, "/api/enrollment-keys", None).await;
    let listed = keys["keys"].as_array().unwrap();
    assert_eq!(listed.len(), 2);
    assert!(
        listed.iter().all(|k| k.get("key").is_none()),
        "listed keys never show their secret"
    );
    assert!(listed
        .iter()
        .any(|k| k["name"] == "shelf" && k["uses"] == 1));

    // The window lets any device in until it closes; such devices are marked.
    let (status, window) = app
        .call(
            Method::POST,
            "/api/enrollment/window",
            Some(json!({"minutes": 0})),
        )
        .await;
    assert_eq!(
        (status, window["detail"][0]["loc"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!(["body", "minutes"]))
    );
    let (status, window) = app
        .call(
            Method::POST,
            "/api/enrollment/window",
            Some(json!({"minutes": 5})),
        )
        .await;
    assert_eq!(
        (status, window["open"].as_bool()),
        (StatusCode::OK, Some(true))
    );
    let (status, _, windowed) = app
        .call_with(
            Method::POST,
            "/api/devices/register",
            Some(&register("aa:00:00:00:00:05")),
            &ANONYMOUS,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{windowed}");
    let (status, window) = app
        .call(Method::DELETE, "/api/enrollment/window", None)
        .await;
    assert_eq!(
        (status, window["open"].as_bool()),
        (StatusCode::OK, Some(false))
    );
    let (status, _, _) = app
        .call_with(
            Method::POST,
            "/api/devices/register",
            Some(&register("aa:00:00:00:00:06")),
            &ANONYMOUS,
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // An admin (the UI's Register button) registers directly.
    let (status, _) = app
        .call(
            Method::POST,
            "/api/devices/register",
            Some(json!({"mac_address": "aa:00:00:00:00:07"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, devices) = app.call(Method::GET, "/api/devices", None).await;
    let enrollment = |mac: &str| {
        devices["devices"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["mac_address"] == mac)
            .unwrap()["enrollment"]
            .clone()
    };
    assert_eq!(enrollment("aa:00:00:00:00:01"), "key");
    assert_eq!(enrollment("aa:00:00:00:00:05"), "window");
    assert_eq!(enrollment("aa:00:00:00:00:07"), "admin");
    assert_eq!(devices["total"], 4, "refused registrations stored nothing");
}
