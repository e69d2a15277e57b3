//! The PlantOps HTTP API (docs/api.md), its OpenAPI description, metrics,
//! and the request observability around it.

#![forbid(unsafe_code)]

pub mod auth;
pub mod error;
pub mod export;
pub mod extract;
pub mod http;
pub mod launch;
pub mod live;
pub mod observe;
pub mod routes;
pub mod state;
pub mod ui;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

pub use state::{ApiConfig, AppState};

#[derive(OpenApi)]
#[openapi(
    info(title = "PlantOps API", description = "Plants, devices, readings and alerts."),
    servers((url = "/api")),
    tags((name = "plants"), (name = "devices"), (name = "health"), (name = "live"), (name = "alerts"), (name = "care"), (name = "advisor"), (name = "auth"), (name = "users"), (name = "integrations")),
    modifiers(&BearerSecurity),
    // Each notification channel kind's fields, which the UI's form is built from.
    components(schemas(
        plantops_services::alerts::channels::DiscordChannel,
        plantops_services::alerts::channels::NtfyChannel,
        plantops_services::alerts::channels::TelegramChannel,
        plantops_services::alerts::channels::WebhookChannel,
        plantops_services::alerts::channels::EmailChannel,
    ))
)]
struct ApiDoc;

/// Documents the two ways in: the session cookie and bearer tokens.
struct BearerSecurity;

impl utoipa::Modify for BearerSecurity {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{
            ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme,
        };
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new(auth::SESSION_COOKIE))),
        );
    }
}

/// The `/api` routes and their OpenAPI description, built together so that
/// no route can go undocumented.
pub fn api() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(routes::health::router())
        .merge(routes::plants::router())
        .merge(routes::care::router())
        .merge(routes::devices::router())
        .merge(routes::events::router())
        .merge(routes::alerts::router())
        .merge(routes::settings::router())
        .merge(routes::home_assistant::router())
        .merge(routes::notification_channels::router())
        .merge(routes::advisor::router())
        .merge(routes::auth::router())
        .merge(routes::users::router())
        .merge(routes::enrollment::router())
        .merge(routes::broker_auth::router())
        .split_for_parts()
}

/// The whole HTTP application.
pub fn app(state: AppState) -> Router {
    let (api, openapi) = api();
    // Serialized once; a request clones a reference count, not the document.
    let openapi = axum::body::Bytes::from(
        serde_json::to_vec(&openapi).expect("the OpenAPI document is plain data"),
    );
    let prometheus = observe::prometheus();
    let api = api.route(
        "/openapi.json",
        get(move || async move {
            (
                [(header::CONTENT_TYPE, "application/json")],
                openapi.clone(),
            )
        }),
    );
    Router::new()
        .nest("/api", api)
        .route(
            "/metrics",
            get(move |State(state): State<AppState>| async move {
                observe::refresh_gauges(&state).await;
                (
                    [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                    prometheus.render(),
                )
                    .into_response()
            }),
        )
        .fallback(ui::serve)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.config.allowed_hosts.clone(),
            http::check_host,
        ))
        .layer(axum::middleware::from_fn(observe::observe))
        .with_state(state)
}
