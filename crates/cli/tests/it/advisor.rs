//! The care advisor end to end: `plantops serve` talking to local servers
//! that speak the Anthropic and OpenAI wire formats.

use std::time::Duration;

use crate::common::llm::{valid_plan, LlmProvider, Reply};
use crate::common::{connect, device_options, publish_acked, Ports, Server};
use serde_json::{json, Value};

struct Setup {
    server: Server,
    provider: LlmProvider,
    plant_id: String,
    client: rumqttc::AsyncClient,
    eventloop: rumqttc::EventLoop,
    topic: String,
}

async fn setup(dir: &std::path::Path) -> Setup {
    let provider = LlmProvider::start().await;
    let server = Server::start(
        dir,
        &Ports::free(),
        &[
            ("ANTHROPIC_BASE_URL", provider.anthropic_url.as_str()),
            ("OPENAI_BASE_URL", provider.openai_url.as_str()),
            ("PLANTOPS_LLM_TIMEOUT_SECS", "1"),
        ],
    )
    .await;
    let (status, plant) = server
        .post(
            "/api/plants",
            json!({"name": "Monty", "species": "Monstera deliciosa", "thresholds": {
                "soil_moisture": {"min": 30, "max": 80},
                "temperature": {"min": 15, "max": 30}
            }}),
        )
        .await;
    assert_eq!(status, 201);
    let plant_id = plant["id"].as_str().unwrap().to_string();
    let device = server.register_for("dd:00:00:00:00:01", &plant_id).await;
    let (client, eventloop, _) = connect(device_options(
        &device,
        server.mqtt_port,
        None,
        &device.device_id,
    ))
    .await;
    let topic = format!("devices/{}/telemetry", device.device_id);
    let mut setup = Setup {
        server,
        provider,
        plant_id,
        client,
        eventloop,
        topic,
    };
    setup
        .publish(json!({"soil_moisture": 48.0, "temperature": 21.0}))
        .await;
    setup
        .publish(json!({"soil_moisture": 42.5, "temperature": 22.0}))
        .await;
    setup
}

impl Setup {
    async fn publish(&mut self, payload: Value) {
        publish_acked(&self.client, &mut self.eventloop, &self.topic, payload).await;
    }

    async fn analyze(&self) -> (u16, Value) {
        self.server
            .post(&format!("/api/plants/{}/analyze", self.plant_id), json!({}))
            .await
    }

    async fn history(&self) -> Vec<Value> {
        let (status, body) = self
            .server
            .get(&format!("/api/plants/{}/care-plans", self.plant_id))
            .await;
        assert_eq!(status, 200, "{body}");
        body["care_plans"].as_array().unwrap().clone()
    }
}

#[tokio::test]
async fn anthropic_care_plans_are_validated_stored_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let setup = setup(dir.path()).await;
    let server = &setup.server;

    // Not configured: 503, and the plant's care plan is a 200 with null.
    let (status, body) = setup.analyze().await;
    assert_eq!(status, 503, "{body}");
    assert!(body["detail"]
        .as_str()
        .unwrap()
        .starts_with("LLM not configured"));
    let (status, body) = server
        .get(&format!("/api/plants/{}/care-plan", setup.plant_id))
        .await;
    assert_eq!(status, 200);
    assert!(body["care_plan"].is_null());
    assert_eq!(body["plant_name"], "Monty");
    let (_, settings) = server.get("/api/settings/llm").await;
    assert_eq!(settings["provider"], "anthropic");
    assert_eq!(settings["model"], "claude-sonnet-4-20250514");
    assert_eq!(settings["api_key_set"], false);

    let key = "sk-ant-api03-secret-test-key-1234";
    let (status, settings) = server
        .put(
            "/api/settings/llm",
            json!({"provider": "anthropic", "api_key": key}),
        )
        .await;
    assert_eq!(status, 200, "{settings}");
    assert_eq!(settings["api_key_masked"], "...1234");
    assert!(!settings.to_string().contains(key));

    // A good plan: the request has Anthropic's shape and the plant's data.
    let (status, body) = setup.analyze().await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["care_plan"]["summary"], valid_plan()["summary"]);
    assert_eq!(body["care_plan"]["watering"]["next_date"], "2026-12-01");
    let request = setup.provider.received().last().unwrap().clone();
    assert_eq!(request.path, "/v1/messages");
    assert_eq!(request.header("x-api-key"), Some(key));
    assert_eq!(request.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(request.body["model"], "claude-sonnet-4-20250514");
    assert!(request.body["system"].is_string());
    let prompt = request.last_user_text();
    for expected in [
        "Monty",
        "Monstera deliciosa",
        "soil_moisture: min 30, max 80",
        "soil_moisture: 42.5",
        "soil_moisture: 42.5 / 48 / 45.3",
        "\"watering\"",
    ] {
        assert!(
            prompt.contains(expected),
            "prompt lacks {expected:?}:\n{prompt}"
        );
    }
    let (_, current) = server
        .get(&format!("/api/plants/{}/care-plan", setup.plant_id))
        .await;
    assert_eq!(current["care_plan"], body["care_plan"]);
    assert!(current["last_generated"].is_string());

    // Invalid output twice: one corrective retry, then 502 and nothing stored.
    let before = setup.provider.received().len();
    setup.provider.script(&[
        Reply::Text("I think your plant is lovely.".into()),
        Reply::Text(json!({"summary": "short"}).to_string()),
    ]);
    let (status, body) = setup.analyze().await;
    assert_eq!(status, 502, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("valid care plan"),
        "{body}"
    );
    let requests = setup.provider.received();
    assert_eq!(requests.len(), before + 2, "exactly one corrective retry");
    let retry = &requests[before + 1];
    assert!(retry.last_user_text().contains("cannot be used"));
    assert_eq!(retry.body["messages"][1]["role"], "assistant");
    assert_eq!(setup.history().await.len(), 1, "nothing stored on failure");

    // A plan in a Markdown fence after one invalid answer is accepted.
    setup.provider.script(&[
        Reply::Text("{\"summary\": \"\"}".into()),
        Reply::Text(format!("```json\n{}\n```", valid_plan())),
    ]);
    let (status, _) = setup.analyze().await;
    assert_eq!(status, 200);
    // The plan records what it cost: both calls' tokens, the time, the model.
    let written = &setup.history().await[0];
    assert_eq!(written["input_tokens"], 800, "{written}");
    assert_eq!(written["output_tokens"], 400);
    assert!(written["duration_ms"].is_u64(), "{written}");
    assert_eq!(written["model"], "claude-sonnet-4-20250514");

    // 429 (retry-after: 0), then success.
    let before = setup.provider.received().len();
    setup.provider.script(&[Reply::RateLimited]);
    let (status, body) = setup.analyze().await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(setup.provider.received().len(), before + 2);

    let history = setup.history().await;
    assert_eq!(history.len(), 3);
    assert_eq!(history[0]["reason"], "request");
    assert_eq!(history[0]["provider"], "anthropic");
    assert!(history[0]["created_at"].as_str() >= history[2]["created_at"].as_str());

    // The key is sealed at rest.
    let store = plantops_store::connect(&format!(
        "sqlite://{}",
        dir.path().join("plantops.db").display()
    ))
    .await
    .unwrap();
    let stored = store.get_setting("llm").await.unwrap().unwrap();
    assert!(!stored.contains(key), "the key is not stored in clear");
    assert!(!stored.contains("test-key"));
    assert!(stored.contains("\"api_key_sealed\":\"v2:"), "{stored}");
}

#[tokio::test]
async fn openai_settings_test_endpoint_errors_and_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let setup = setup(dir.path()).await;
    let server = &setup.server;

    let (status, body) = server
        .put(
            "/api/settings/llm",
            json!({"provider": "gemini", "api_key": "x"}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    let (status, body) = server
        .put(
            "/api/settings/llm",
            json!({"provider": "openai", "api_key": "  "}),
        )
        .await;
    assert_eq!(status, 422);
    assert_eq!(body["detail"][0]["loc"], json!(["body", "api_key"]));
    // A key is sent as a header: a control character in it would make
    // every later request fail (found by the API fuzz run).
    let (status, body) = server
        .put(
            "/api/settings/llm",
            json!({"provider": "openai", "api_key": "sk-\u{1}bad"}),
        )
        .await;
    assert_eq!(status, 422);
    assert_eq!(body["detail"][0]["loc"], json!(["body", "api_key"]));

    let key = "sk-proj-good-5678";
    let (status, settings) = server
        .put(
            "/api/settings/llm",
            json!({"provider": "openai", "api_key": key}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(settings["model"], "gpt-4o");

    // The stored key works: OpenAI's request shape.
    let (status, result) = server
        .post("/api/settings/llm/test", json!({"provider": "openai"}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(result["success"], true, "{result}");
    assert!(result["latency_ms"].is_u64());
    let request = setup.provider.received().last().unwrap().clone();
    assert_eq!(request.path, "/v1/chat/completions");
    assert_eq!(
        request.header("authorization"),
        Some(format!("Bearer {key}").as_str())
    );
    assert_eq!(request.body["model"], "gpt-4o");
    assert_eq!(request.body["messages"][0]["role"], "system");

    // The stored key goes to its own provider only, and never follows a redirect.
    let before = setup.provider.received().len();
    let (_, result) = server
        .post("/api/settings/llm/test", json!({"provider": "anthropic"}))
        .await;
    assert_eq!(result["success"], false);
    assert_eq!(
        result["message"],
        "No API key given and none stored for anthropic"
    );
    setup.provider.script(&[Reply::Redirect(format!(
        "{}/chat/completions",
        setup.provider.openai_url
    ))]);
    let (_, result) = server
        .post("/api/settings/llm/test", json!({"provider": "openai"}))
        .await;
    assert_eq!(result["success"], false, "{result}");
    assert_eq!(
        setup.provider.received().len(),
        before + 1,
        "the redirect was not followed with the key"
    );

    // A bad key: the provider's reason, the stored key untouched.
    setup.provider.script(&[Reply::BadKey]);
    let (status, result) = server
        .post(
            "/api/settings/llm/test",
            json!({"provider": "openai", "api_key": "sk-bad"}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(result["success"], false);
    assert!(
        result["message"]
            .as_str()
            .unwrap()
            .contains("Incorrect API key provided"),
        "{result}"
    );
    let (_, settings) = server.get("/api/settings/llm").await;
    assert_eq!(settings["api_key_masked"], "...5678");

    // A local model through the same API: model changes, key kept.
    let (_, settings) = server
        .put(
            "/api/settings/llm",
            json!({"provider": "openai", "model": "llama3.1"}),
        )
        .await;
    assert_eq!(settings["api_key_set"], true);
    let (status, _) = setup.analyze().await;
    assert_eq!(status, 200);
    assert_eq!(
        setup.provider.received().last().unwrap().body["model"],
        "llama3.1"
    );

    // A bad key during analysis is a 502 with the reason.
    setup.provider.script(&[Reply::BadKey]);
    let (status, body) = setup.analyze().await;
    assert_eq!(status, 502);
    assert!(body["detail"]
        .as_str()
        .unwrap()
        .contains("refused the API key"));

    // No answer within PLANTOPS_LLM_TIMEOUT_SECS: 502, nothing stored.
    setup
        .provider
        .script(&[Reply::Stall(Duration::from_secs(5))]);
    let (status, body) = setup.analyze().await;
    assert_eq!(status, 502, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("within"),
        "{body}"
    );
    assert_eq!(setup.history().await.len(), 1);

    let (status, _) = server
        .post(
            &format!("/api/plants/{}/analyze", uuid::Uuid::new_v4()),
            json!({}),
        )
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_critical_alert_refreshes_the_care_plan_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let mut setup = setup(dir.path()).await;
    setup
        .server
        .put(
            "/api/settings/llm",
            json!({"provider": "anthropic", "api_key": "sk-ant-background"}),
        )
        .await;
    setup.publish(json!({"soil_moisture": 5.0})).await;
    for _ in 0..200 {
        let history = setup.history().await;
        if let Some(plan) = history.first() {
            assert_eq!(plan["reason"], "critical_alert");
            assert_eq!(history.len(), 1, "one plan per alert");
            let prompt = setup.provider.received().last().unwrap().last_user_text();
            assert!(prompt.contains("soil_moisture"), "{prompt}");
            assert!(prompt.contains("Recent alerts:\n- "), "{prompt}");
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no care plan was written after the critical alert");
}

#[tokio::test]
async fn health_check_reports_issues_and_trends() {
    let dir = tempfile::tempdir().unwrap();
    let mut setup = setup(dir.path()).await;
    setup
        .publish(json!({"soil_moisture": 20.0, "temperature": 22.0}))
        .await;
    let (status, check) = setup
        .server
        .post(
            &format!("/api/plants/{}/health-check", setup.plant_id),
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{check}");
    assert_eq!(check["status"], "critical");
    assert_eq!(check["issues"][0]["metric"], "soil_moisture");
    assert_eq!(check["issues"][0]["severity"], "critical");
    assert_eq!(check["issues"][0]["threshold_violated"], "min");
    assert_eq!(check["recommendations"][0]["action"], "Water the plant");
    let soil = check["trends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["metric"] == "soil_moisture")
        .unwrap();
    assert_eq!(soil["direction"], "falling");
    assert_eq!(soil["min_24h"], 20.0);
    assert_eq!(soil["max_24h"], 48.0);
    assert_eq!(check["has_care_plan"], false);
}

#[tokio::test]
async fn health_check_adds_the_models_note_and_falls_back_to_the_rules() {
    let dir = tempfile::tempdir().unwrap();
    let mut setup = setup(dir.path()).await;
    setup
        .publish(json!({"soil_moisture": 20.0, "temperature": 22.0}))
        .await;
    let uri = format!("/api/plants/{}/health-check", setup.plant_id);
    let check = |body: &Value| {
        let sources: Vec<_> = body["recommendations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["source"].as_str().unwrap().to_string(),
                    r["action"].clone(),
                )
            })
            .collect();
        assert_eq!(body["status"], "critical", "{body}");
        assert_eq!(sources[0], ("rules".into(), json!("Water the plant")));
        sources
    };

    // No LLM: the rules alone, and the provider is never asked.
    let (status, body) = setup.server.post(&uri, json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert!(check(&body).iter().all(|(source, _)| source == "rules"));
    assert!(setup.provider.received().is_empty());

    let (status, _) = setup
        .server
        .put(
            "/api/settings/llm",
            json!({"provider": "anthropic", "api_key": "sk-ant-health-check-key"}),
        )
        .await;
    assert_eq!(status, 200);

    // Answering well: the model's note follows the rules' recommendations.
    let note = "Water it thoroughly today, then let the top 3 cm dry out before the next watering.";
    setup.provider.script(&[Reply::Text(format!("\"{note}\""))]);
    let (status, body) = setup.server.post(&uri, json!({})).await;
    assert_eq!(status, 200, "{body}");
    let sources = check(&body);
    assert_eq!(sources.last().unwrap(), &("model".into(), json!(note)));
    let request = setup.provider.received().last().unwrap().clone();
    assert_eq!(request.path, "/v1/messages");
    let prompt = request.last_user_text();
    assert!(
        prompt.contains("Monty") && prompt.contains("Water the plant"),
        "{prompt}"
    );

    // Answering badly (an error, an empty answer) or too slowly: the rules
    // alone, never an error, and each costs one call at most.
    for reply in [
        Reply::BadKey,
        Reply::Text("   ".into()),
        Reply::Stall(Duration::from_secs(5)),
    ] {
        let before = setup.provider.received().len();
        setup.provider.script(&[reply]);
        let (status, body) = setup.server.post(&uri, json!({})).await;
        assert_eq!(status, 200, "{body}");
        assert!(
            check(&body).iter().all(|(source, _)| source == "rules"),
            "{body}"
        );
        assert_eq!(setup.provider.received().len(), before + 1);
    }
}
