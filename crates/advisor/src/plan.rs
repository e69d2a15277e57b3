//! Asking for a care plan and checking the answer.

use plantops_core::care::CarePlan;

use crate::prompt::{self, PlantContext, SYSTEM_PROMPT};
use crate::provider::{LlmClient, LlmError, Provider, Turn};

/// Room for a full plan; plans are a few hundred tokens.
const MAX_TOKENS: u32 = 1500;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AdvisorError {
    #[error(transparent)]
    Provider(#[from] LlmError),
    #[error("the model did not answer with a valid care plan, even when asked again: {0}")]
    InvalidOutput(String),
}

/// Who writes the plans.
pub struct Author<'a> {
    pub provider: Provider,
    pub model: &'a str,
    pub api_key: &'a str,
}

/// A validated care plan for the plant; an invalid answer gets one
/// corrective retry.
pub async fn generate_care_plan(
    client: &LlmClient,
    author: &Author<'_>,
    context: &PlantContext<'_>,
) -> Result<CarePlan, AdvisorError> {
    let mut turns = vec![Turn {
        from_model: false,
        text: prompt::care_plan_request(context),
    }];
    let mut last_problem = String::new();
    for _ in 0..2 {
        let answer = client
            .complete(
                author.provider,
                author.model,
                author.api_key,
                SYSTEM_PROMPT,
                &turns,
                MAX_TOKENS,
            )
            .await?;
        match CarePlan::from_model_output(&answer.text, plantops_core::now()) {
            Ok(plan) => return Ok(plan),
            Err(problem) => {
                tracing::warn!(provider = author.provider.as_str(), %problem, "invalid care plan from the model");
                last_problem = problem.0.clone();
                turns.push(Turn {
                    from_model: true,
                    text: answer.text,
                });
                turns.push(Turn {
                    from_model: false,
                    text: prompt::correction(&problem.0),
                });
            }
        }
    }
    Err(AdvisorError::InvalidOutput(last_problem))
}

/// A minimal request proving the key and model work.
pub async fn test_connection(
    client: &LlmClient,
    author: &Author<'_>,
) -> Result<std::time::Duration, LlmError> {
    let turns = [Turn {
        from_model: false,
        text: "Reply with the single word OK.".into(),
    }];
    let answer = client
        .complete(
            author.provider,
            author.model,
            author.api_key,
            "You are a connectivity check.",
            &turns,
            16,
        )
        .await?;
    Ok(answer.latency)
}
