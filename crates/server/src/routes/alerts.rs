//! `/api/alerts`: alert history with filters, and acknowledgement.

use axum::extract::State;
use axum::Json;
use plantops_core::alert::{Alert, AlertKind};
use plantops_core::validation::Collector;
use plantops_core::FieldError;
use plantops_store::AlertFilter;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::error::{ApiError, ApiResult, Problem, ValidationProblem};
use crate::extract::{AlertId, ApiQuery, ALERT_NOT_FOUND};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_alerts))
        .routes(routes!(acknowledge_alert))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AlertList {
    pub alerts: Vec<Alert>,
    pub total: u64,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct AlertQuery {
    pub plant_id: Option<String>,
    /// `threshold`, `recovered`, `device_offline` or `device_online`.
    pub kind: Option<String>,
    /// RFC 3339 time; only alerts created at or after it.
    pub since: Option<String>,
    /// 1–1000, default 100.
    pub limit: Option<i64>,
    /// ≥ 0, default 0.
    pub offset: Option<i64>,
}

/// Alerts, newest first.
#[utoipa::path(get, path = "/alerts", tag = "alerts", params(AlertQuery),
    responses((status = 200, body = AlertList), (status = 422, body = ValidationProblem)))]
async fn list_alerts(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<AlertQuery>,
) -> ApiResult<Json<AlertList>> {
    let mut errors = Collector::default();
    let page = super::PageQuery {
        limit: query.limit,
        offset: query.offset,
    }
    .page(&mut errors);
    let mut invalid = |field: &str, msg: &str| {
        errors.push(FieldError::new(&["query", field], msg, "type_error"));
    };
    let plant_id = query.plant_id.as_deref().and_then(|raw| {
        let id = Uuid::parse_str(raw).ok();
        if id.is_none() {
            invalid("plant_id", "value is not a valid UUID");
        }
        id
    });
    let kind = query.kind.as_deref().and_then(|raw| {
        let kind = AlertKind::parse(raw);
        if kind.is_none() {
            invalid(
                "kind",
                "kind must be one of threshold, recovered, device_offline, device_online",
            );
        }
        kind
    });
    let since = query.since.as_deref().and_then(|raw| {
        let since = plantops_core::telemetry::parse_time(raw);
        if since.is_none() {
            invalid("since", "since must be an RFC 3339 time");
        }
        since
    });
    errors.finish()?;
    let filter = AlertFilter {
        plant_id,
        kind,
        since,
    };
    let (alerts, total) = state.store.list_alerts(&filter, page).await?;
    Ok(Json(AlertList { alerts, total }))
}

/// Mark an alert as seen; repeating it keeps the first time.
#[utoipa::path(post, path = "/alerts/{id}/acknowledge", tag = "alerts",
    params(("id" = Uuid, Path)),
    responses((status = 200, body = Alert), (status = 404, body = Problem)))]
async fn acknowledge_alert(
    State(state): State<AppState>,
    AlertId(id): AlertId,
) -> ApiResult<Json<Alert>> {
    state
        .store
        .acknowledge_alert(id, plantops_core::now())
        .await?
        .map(Json)
        .ok_or(ApiError::NotFound(ALERT_NOT_FOUND))
}
