//! The care advisor: HTTP clients for the Anthropic Messages API and the
//! OpenAI Chat Completions API (and OpenAI-compatible local servers), the
//! prompt built from a plant's data, and validation of the answer.

#![forbid(unsafe_code)]

pub mod plan;
pub mod prompt;
pub mod provider;

pub use plan::{
    generate_care_plan, health_note, test_connection, AdvisorError, Author, GeneratedPlan,
};
pub use prompt::PlantContext;
pub use provider::{Endpoints, LlmClient, LlmError, Provider, Usage};
