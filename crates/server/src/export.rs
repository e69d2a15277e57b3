//! Readings out, as CSV or JSON Lines: a plant's readings in a time range,
//! read in keyset pages and written as they come, so an export of millions
//! of rows holds one page in memory. The HTTP route and `plantops export`
//! share it.

use std::io::Write;
use std::sync::Arc;

use axum::body::Bytes;
use chrono::{DateTime, Utc};
use futures::Stream;
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

fn write_csv(out: &mut Vec<u8>, reading: &Reading) {
    let value = |v: Option<f64>| v.map(|v| v.to_string()).unwrap_or_default();
    // Writing into a Vec cannot fail.
    let _ = writeln!(
        out,
        "{},{},{},{},{},{},{}",
        reading.time.format("%Y-%m-%dT%H:%M:%S%.3fZ"),
        reading.device_id,
        reading.plant_id.map(|p| p.to_string()).unwrap_or_default(),
        value(reading.values.soil_moisture),
        value(reading.values.temperature),
        value(reading.values.humidity),
        value(reading.values.light_level),
    );
}

fn write_jsonl(out: &mut Vec<u8>, reading: &Reading) {
    if serde_json::to_writer(&mut *out, reading).is_ok() {
        out.push(b'\n');
    }
}

struct Cursor {
    after: Option<(DateTime<Utc>, Uuid)>,
    header_sent: bool,
    done: bool,
}

/// The export as a stream of chunks, one per page (the CSV header first).
pub fn readings(
    store: Arc<dyn ReadingStore>,
    plant_id: Uuid,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    format: ExportFormat,
) -> impl Stream<Item = Result<Bytes, StoreError>> + Send + 'static {
    let start = Cursor {
        after: None,
        header_sent: format != ExportFormat::Csv,
        done: false,
    };
    futures::stream::unfold(start, move |mut cursor| {
        let store = store.clone();
        async move {
            if !cursor.header_sent {
                cursor.header_sent = true;
                return Some((Ok(Bytes::from_static(CSV_HEADER)), cursor));
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
            let last = page.last()?;
            cursor.after = Some((last.time, last.device_id));
            cursor.done = page.len() < PAGE as usize;
            let mut chunk = Vec::with_capacity(page.len() * 96);
            for reading in &page {
                match format {
                    ExportFormat::Csv => write_csv(&mut chunk, reading),
                    ExportFormat::Jsonl => write_jsonl(&mut chunk, reading),
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
