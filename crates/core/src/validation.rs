//! Field-level validation errors in the shape docs/api.md requires for 422
//! responses: `{"loc": [...], "msg": "...", "type": "..."}`.

use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct FieldError {
    /// Where the bad value is, e.g. `["body", "thresholds", "temperature", "min"]`.
    pub loc: Vec<String>,
    pub msg: String,
    #[serde(rename = "type")]
    pub kind: String,
}

impl FieldError {
    pub fn new(loc: &[&str], msg: impl Into<String>, kind: &str) -> Self {
        Self {
            loc: loc.iter().map(|s| s.to_string()).collect(),
            msg: msg.into(),
            kind: kind.to_string(),
        }
    }
}

/// A non-empty list of field errors.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid input: {}", self.summary())]
pub struct ValidationErrors(pub Vec<FieldError>);

impl ValidationErrors {
    pub fn single(loc: &[&str], msg: impl Into<String>, kind: &str) -> Self {
        Self(vec![FieldError::new(loc, msg, kind)])
    }

    fn summary(&self) -> String {
        self.0
            .iter()
            .map(|e| format!("{}: {}", e.loc.join("."), e.msg))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Collects errors while a value is checked, then yields `Ok` or all of them.
#[derive(Default)]
pub struct Collector(Vec<FieldError>);

impl Collector {
    pub fn push(&mut self, error: FieldError) {
        self.0.push(error);
    }

    pub fn into_errors(self) -> ValidationErrors {
        ValidationErrors(self.0)
    }

    pub fn finish(self) -> Result<(), ValidationErrors> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ValidationErrors(self.0))
        }
    }
}
