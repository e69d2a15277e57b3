//! Care-plan answers in the shapes real models give (`care-plan-answers/`):
//! every `ok-*` answer is a usable plan, every `refuse-*` answer is refused
//! (and gets one corrective retry from the advisor).

use std::path::PathBuf;

use chrono::{TimeZone, Utc};
use plantops_core::care::CarePlan;

fn corpus() -> Vec<(String, String)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/care-plan-answers");
    let mut answers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&path).unwrap())
        })
        .collect();
    answers.sort();
    answers
}

fn parse(text: &str) -> Result<CarePlan, String> {
    let at = Utc.with_ymd_and_hms(2026, 12, 2, 12, 0, 0).unwrap();
    CarePlan::from_model_output(text, at).map_err(|e| e.0)
}

fn plan(name: &str) -> CarePlan {
    let (_, text) = corpus().into_iter().find(|(n, _)| n == name).unwrap();
    parse(&text).unwrap()
}

#[test]
fn every_usable_answer_is_accepted_and_every_unusable_one_refused() {
    let answers = corpus();
    assert!(answers.len() >= 30, "{} answers", answers.len());
    for (name, text) in &answers {
        let outcome = parse(text);
        if name.starts_with("ok-") {
            let plan = outcome.unwrap_or_else(|problem| panic!("{name} refused: {problem}"));
            assert!(!plan.summary.is_empty(), "{name}");
            assert!(!plan.watering.frequency.is_empty(), "{name}");
            assert!(!plan.watering.amount.is_empty(), "{name}");
            assert!(!plan.light.recommendation.is_empty(), "{name}");
            assert!(!plan.humidity.recommendation.is_empty(), "{name}");
        } else {
            assert!(
                name.starts_with("refuse-"),
                "{name}: name it ok-… or refuse-…"
            );
            assert!(outcome.is_err(), "{name} accepted: {outcome:?}");
        }
    }
}

#[test]
fn numbers_and_ranges_where_text_belongs_are_rendered_with_their_unit() {
    let numbers = plan("ok-06-numbers-in-current.txt");
    assert_eq!(numbers.humidity.current, "56 %");
    assert_eq!(numbers.light.current, "8200 lux");
    assert_eq!(numbers.temperature.unwrap().current, "21.5 °C");
    let ranges = plan("ok-17-ideal-as-range-object.txt");
    assert_eq!(ranges.humidity.ideal, "60–70 %");
    assert_eq!(ranges.temperature.unwrap().ideal, "18–27 °C");
    assert_eq!(
        plan("ok-18-ideal-as-array.txt").light.ideal,
        "10000–20000 lux"
    );
    assert_eq!(plan("ok-20-number-amount.txt").watering.amount, "500");
}

#[test]
fn optional_parts_are_tolerated() {
    assert_eq!(plan("ok-10-null-temperature.txt").temperature, None);
    let empty = plan("ok-12-null-alerts-and-tips.txt");
    assert!(empty.alerts.is_empty() && empty.tips.is_empty());
    assert_eq!(
        plan("ok-19-alerts-as-a-string.txt").alerts,
        ["Soil moisture is falling: water within two days."]
    );
    assert_eq!(
        plan("ok-15-next-date-with-time.txt")
            .watering
            .next_date
            .as_deref(),
        Some("2026-12-05")
    );
    assert_eq!(
        plan("ok-16-next-date-in-words.txt").watering.next_date,
        None
    );
    assert_eq!(
        plan("ok-29-odd-items-in-tips.txt").tips,
        ["Wipe the leaves monthly.", "3"]
    );
    // Wrapped, behind a think block, or after prose with braces: the same plan.
    let plain = plan("ok-01-plain-json.txt");
    for name in [
        "ok-21-local-model-think-block.txt",
        "ok-22-wrapped-in-care-plan-key.txt",
        "ok-30-prose-with-braces-before.txt",
        "ok-24-crlf-line-endings.txt",
    ] {
        assert_eq!(plan(name), plain, "{name}");
    }
}

#[test]
fn refusals_say_what_is_missing() {
    let (_, text) = corpus()
        .into_iter()
        .find(|(n, _)| n == "refuse-05-no-humidity-advice.txt")
        .unwrap();
    assert_eq!(
        parse(&text).unwrap_err(),
        "humidity.recommendation is missing or empty"
    );
    assert_eq!(
        parse("I'm sorry, I can't help.").unwrap_err(),
        "the answer contains no JSON object"
    );
}
