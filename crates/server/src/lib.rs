//! The PlantOps HTTP API (docs/api.md), its OpenAPI description, metrics,
//! and the request observability around it.

#![forbid(unsafe_code)]

pub mod advisor;
pub mod alerts;
pub mod error;
pub mod extract;
pub mod launch;
pub mod live;
pub mod observe;
pub mod routes;
pub mod state;
pub mod ui;

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

pub use state::{ApiConfig, AppState, BrokerEndpoint};

#[derive(OpenApi)]
#[openapi(
    info(title = "PlantOps API", description = "Plants, devices, readings and alerts."),
    servers((url = "/api")),
    tags((name = "plants"), (name = "devices"), (name = "health"), (name = "live"), (name = "alerts"), (name = "advisor"))
)]
struct ApiDoc;

/// The `/api` routes and their OpenAPI description, built together so that
/// no route can go undocumented.
pub fn api() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(routes::health::router())
        .merge(routes::plants::router())
        .merge(routes::devices::router())
        .merge(routes::events::router())
        .merge(routes::alerts::router())
        .merge(routes::settings::router())
        .merge(routes::advisor::router())
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
            get(move || async move {
                (
                    [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                    prometheus.render(),
                )
                    .into_response()
            }),
        )
        .fallback(ui::serve)
        .layer(axum::middleware::from_fn(observe::observe))
        .with_state(state)
}
