pub mod advisor;
pub mod alerts;
pub mod auth;
pub mod broker_auth;
pub mod care;
pub mod devices;
pub mod enrollment;
pub mod events;
pub mod health;
pub mod home_assistant;
pub mod notification_channels;
pub mod plants;
pub mod settings;
pub mod users;

use plantops_core::validation::Collector;
use plantops_core::{FieldError, ValidationErrors, DEFAULT_PAGE_LIMIT, MAX_PAGE_LIMIT};
use plantops_store::Page;
use serde::Deserialize;
use utoipa::IntoParams;

/// `limit` (1–1000, default 100) and `offset` (≥ 0).
#[derive(Debug, Default, Deserialize, IntoParams)]
pub struct PageQuery {
    /// 1–1000, default 100.
    pub limit: Option<i64>,
    /// ≥ 0, default 0.
    pub offset: Option<i64>,
}

impl PageQuery {
    pub fn page(&self, errors: &mut Collector) -> Page {
        let limit = self.limit.unwrap_or(i64::from(DEFAULT_PAGE_LIMIT));
        if !(1..=i64::from(MAX_PAGE_LIMIT)).contains(&limit) {
            errors.push(FieldError::new(
                &["query", "limit"],
                format!("limit must be between 1 and {MAX_PAGE_LIMIT}"),
                "value_error.number.range",
            ));
        }
        let offset = self.offset.unwrap_or(0);
        if offset < 0 {
            errors.push(FieldError::new(
                &["query", "offset"],
                "offset must be 0 or more",
                "value_error.number.range",
            ));
        }
        Page {
            limit: limit.clamp(1, i64::from(MAX_PAGE_LIMIT)) as u32,
            offset: offset.max(0) as u64,
        }
    }

    pub fn validated(&self) -> Result<Page, ValidationErrors> {
        let mut errors = Collector::default();
        let page = self.page(&mut errors);
        errors.finish().map(|()| page)
    }
}

/// `{"message": "..."}`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Message {
    pub message: String,
}

impl Message {
    pub fn new(message: impl Into<String>) -> axum::Json<Self> {
        axum::Json(Self {
            message: message.into(),
        })
    }
}
