//! Readings out, as CSV or JSON Lines: a plant's readings in a time range,
//! read in keyset pages and written as they come, so an export of millions
//! of rows holds one page in memory. The HTTP route and `plantops export`
//! share it. With the care journal included (`?include=care`), its entries
//! of the range are merged in by time.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::Arc;

use axum::body::Bytes;
use chrono::{DateTime, Utc};
use futures::Stream;
use plantops_core::journal::CareEvent;
use plantops_core::Reading;
use plantops_store::{ReadingStore, StoreError};
use serde::Deserialize;
use utoipa::ToSchema;
use uuid::Uuid;

/// Readings per database round trip.
const PAGE: u32 = 5000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ExportFormat {
    /// `time,device_id,plant_id,soil_moisture,temperature,humidity,light_level`,
    /// empty where a value is missing.
    #[default]
    Csv,
    /// One reading per line, in the API's reading shape.
    Jsonl,
}

impl ExportFormat {
    pub fn content_type(self) -> &'static str {
        match self {
            ExportFormat::Csv => "text/csv; charset=utf-8",
            ExportFormat::Jsonl => "application/x-ndjson",
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            ExportFormat::Csv => "csv",
            ExportFormat::Jsonl => "jsonl",
        }
    }
}

const CSV_HEADER: &[u8] =
    b"time,device_id,plant_id,soil_moisture,temperature,humidity,light_level\n";
/// With the care journal: four more columns, empty on readings; a journal
/// row has its time and these only.
const CSV_HEADER_WITH_CARE: &[u8] = b"time,device_id,plant_id,soil_moisture,temperature,humidity,light_level,care_kind,care_amount,care_unit,care_text\n";

/// A field as CSV writes it: quoted when it holds a comma, quote or line
/// break; a leading `=`, `+`, `-` or `@` is prefixed with `'` so that a
/// spreadsheet never reads a note as a formula.
fn csv_field(text: &str) -> String {
    let text = if text.starts_with(['=', '+', '-', '@']) {
        format!("'{text}")
    } else {
        text.to_string()
    };
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
}

fn write_care_csv(out: &mut Vec<u8>, event: &CareEvent) {
    let _ = writeln!(
        out,
        "{},,{},,,,,{},{},{},{}",
        event.at.format("%Y-%m-%dT%H:%M:%S%.3fZ"),
        event.plant_id,
        event.kind.as_str(),
        event.amount.map(|a| a.to_string()).unwrap_or_default(),
        event.unit.map(|u| u.as_str()).unwrap_or_default(),
        csv_field(event.text.as_deref().unwrap_or_default()),
    );
}

fn write_care_jsonl(out: &mut Vec<u8>, event: &CareEvent) {
    if serde_json::to_writer(&mut *out, &serde_json::json!({ "care_event": event })).is_ok() {
        out.push(b'\n');
    }
}

fn write_care(out: &mut Vec<u8>, event: &CareEvent, format: ExportFormat) {
    match format {
        ExportFormat::Csv => write_care_csv(out, event),
        ExportFormat::Jsonl => write_care_jsonl(out, event),
    }
}

fn write_csv(out: &mut Vec<u8>, reading: &Reading, with_care: bool) {
    let value = |v: Option<f64>| v.map(|v| v.to_string()).unwrap_or_default();
    // Writing into a Vec cannot fail.
    let _ = writeln!(
        out,
        "{},{},{},{},{},{},{}{}",
        reading.time.format("%Y-%m-%dT%H:%M:%S%.3fZ"),
        reading.device_id,
        reading.plant_id.map(|p| p.to_string()).unwrap_or_default(),
        value(reading.values.soil_moisture),
        value(reading.values.temperature),
        value(reading.values.humidity),
        value(reading.values.light_level),
        if with_care { ",,,," } else { "" },
    );
}

fn write_jsonl(out: &mut Vec<u8>, reading: &Reading) {
    if serde_json::to_writer(&mut *out, reading).is_ok() {
        out.push(b'\n');
    }
}

struct Cursor {
    after: Option<(DateTime<Utc>, Uuid)>,
    /// Journal entries not written yet, oldest first.
    care: VecDeque<CareEvent>,
    header_sent: bool,
    done: bool,
}

/// The export as a stream of chunks, one per page (the CSV header first).
/// `care`: the journal entries of the range, oldest first, when included.
pub fn readings(
    store: Arc<dyn ReadingStore>,
    plant_id: Uuid,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    format: ExportFormat,
    care: Option<Vec<CareEvent>>,
) -> impl Stream<Item = Result<Bytes, StoreError>> + Send + 'static {
    let with_care = care.is_some();
    let start = Cursor {
        after: None,
        care: care.unwrap_or_default().into(),
        header_sent: format != ExportFormat::Csv,
        done: false,
    };
    futures::stream::unfold(start, move |mut cursor| {
        let store = store.clone();
        async move {
            if !cursor.header_sent {
                cursor.header_sent = true;
                let header = if with_care {
                    CSV_HEADER_WITH_CARE
                } else {
                    CSV_HEADER
                };
                return Some((Ok(Bytes::from_static(header)), cursor));
            }
            if cursor.done {
                return None;
            }
            let page = match store
                .plant_readings_page(plant_id, from, to, cursor.after, PAGE)
                .await
            {
                Ok(page) => page,
                Err(error) => {
                    cursor.done = true;
                    return Some((Err(error), cursor));
                }
            };
            let mut chunk = Vec::with_capacity(page.len() * 96);
            for reading in &page {
                while cursor.care.front().is_some_and(|e| e.at <= reading.time) {
                    if let Some(event) = cursor.care.pop_front() {
                        write_care(&mut chunk, &event, format);
                    }
                }
                match format {
                    ExportFormat::Csv => write_csv(&mut chunk, reading, with_care),
                    ExportFormat::Jsonl => write_jsonl(&mut chunk, reading),
                }
            }
            cursor.done = page.len() < PAGE as usize;
            match page.last() {
                Some(last) => cursor.after = Some((last.time, last.device_id)),
                None if cursor.care.is_empty() => return None,
                None => {}
            }
            if cursor.done {
                for event in cursor.care.drain(..) {
                    write_care(&mut chunk, &event, format);
                }
            }
            Some((Ok(Bytes::from(chunk)), cursor))
        }
    })
}

/// A range bound as people write it: an RFC 3339 time (a time without a
/// zone is UTC) or a date, meaning its midnight UTC.
pub fn parse_moment(raw: &str) -> Option<DateTime<Utc>> {
    let raw = raw.trim();
    plantops_core::telemetry::parse_time(raw).or_else(|| {
        chrono::NaiveDate::parse_from_str(raw, "%Y-%m-%d")
            .ok()
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map(|t| t.and_utc())
    })
}

/// A file name from a plant's name: letters, digits and dashes only.
pub fn file_name(plant_name: &str, to: DateTime<Utc>, format: ExportFormat) -> String {
    let slug: String = plant_name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let slug = slug
        .split('-')
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join("-");
    let slug = if slug.is_empty() {
        "plant".to_string()
    } else {
        slug
    };
    format!(
        "{slug}-readings-{}.{}",
        to.format("%Y-%m-%d"),
        format.extension()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn file_names_are_safe_in_a_header() {
        let to = Utc.with_ymd_and_hms(2026, 12, 3, 0, 0, 0).unwrap();
        assert_eq!(
            file_name("Monty's \"big\" Monstera", to, ExportFormat::Csv),
            "monty-s-big-monstera-readings-2026-12-03.csv"
        );
        assert_eq!(
            file_name("🌿", to, ExportFormat::Jsonl),
            "plant-readings-2026-12-03.jsonl"
        );
    }
}
