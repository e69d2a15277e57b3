//! Asking for a care plan and checking the answer.

use plantops_core::care::CarePlan;

use crate::prompt::{self, PlantContext, HEALTH_NOTE_SYSTEM_PROMPT, SYSTEM_PROMPT};
use crate::provider::{LlmClient, LlmError, Provider, Turn, Usage};

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

/// A plan and what it cost.
#[derive(Debug, Clone)]
pub struct GeneratedPlan {
    pub plan: CarePlan,
    /// Summed over the model calls, when the provider reports it.
    pub usage: Option<Usage>,
    /// From the first request to the accepted answer.
    pub duration: std::time::Duration,
}

/// A validated care plan for the plant. An invalid answer gets one
/// corrective retry, never more: each call costs the user money. A provider
/// error ends the attempt at once (the client itself retries only 429 and
/// 5xx answers, which are not billed).
pub async fn generate_care_plan(
    client: &LlmClient,
    author: &Author<'_>,
    context: &PlantContext<'_>,
) -> Result<GeneratedPlan, AdvisorError> {
    let started = std::time::Instant::now();
    let mut usage: Option<Usage> = None;
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
        if let Some(call) = answer.usage {
            usage = Some(usage.unwrap_or_default() + call);
        }
        match CarePlan::from_model_output(&answer.text, plantops_core::now()) {
            Ok(plan) => {
                return Ok(GeneratedPlan {
                    plan,
                    usage,
                    duration: started.elapsed(),
                })
            }
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

/// The longest health-check note kept (a model that rambles is cut).
const MAX_NOTE_CHARS: usize = 600;

/// The model's short recommendation for a health check: one call, no
/// retry (the rules already answered; this only adds to them).
pub async fn health_note(
    client: &LlmClient,
    author: &Author<'_>,
    context: &PlantContext<'_>,
    findings: &[String],
) -> Result<String, AdvisorError> {
    let turns = [Turn {
        from_model: false,
        text: prompt::health_note_request(context, findings),
    }];
    let answer = client
        .complete(
            author.provider,
            author.model,
            author.api_key,
            HEALTH_NOTE_SYSTEM_PROMPT,
            &turns,
            200,
        )
        .await?;
    let note = answer.text.trim().trim_matches('"').trim();
    if note.is_empty() {
        return Err(AdvisorError::InvalidOutput("an empty answer".into()));
    }
    Ok(note.chars().take(MAX_NOTE_CHARS).collect())
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
