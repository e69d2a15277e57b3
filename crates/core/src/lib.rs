//! PlantOps domain: plants, devices, readings, thresholds and the rules that
//! judge them. Pure code, no I/O: every other crate depends on this one.

#![forbid(unsafe_code)]

pub mod account;
pub mod alert;
pub mod backoff;
pub mod care;
pub mod credentials;
pub mod device;
pub mod event;
pub mod journal;
pub mod metric;
pub mod plant;
pub mod reading;
pub mod secret;
pub mod telemetry;
pub mod topic;
pub mod validation;

pub use device::{Device, DeviceStatus, DeviceVitals, MacAddress};
pub use metric::Metric;
pub use plant::{Bounds, NewPlant, Plant, PlantPatch, PlantStatus, Thresholds};
pub use reading::{Measurements, Reading};
pub use validation::{FieldError, ValidationErrors};

/// Default and bounds of list pagination (docs/api.md: `limit` 1–1000, default 100).
pub const DEFAULT_PAGE_LIMIT: u32 = 100;
pub const MAX_PAGE_LIMIT: u32 = 1000;

/// Picks a chart bucket width: the smallest "round" width that keeps a range
/// of `range_secs` within `max_points` buckets wherever the range starts (an
/// unaligned range touches one bucket more than it covers).
pub fn series_bucket_seconds(range_secs: i64, max_points: u32) -> i64 {
    const ROUND_WIDTHS: [i64; 20] = [
        1, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400,
        172800, 604800, 2592000,
    ];
    let points = i64::from(max_points.max(2)) - 1;
    let needed = (range_secs.max(1) + points - 1) / points;
    ROUND_WIDTHS
        .into_iter()
        .find(|w| *w >= needed)
        .unwrap_or(needed)
}

/// The current time at the millisecond precision every store keeps, so a
/// value read back equals the value written.
pub fn now() -> chrono::DateTime<chrono::Utc> {
    use chrono::SubsecRound;
    chrono::Utc::now().trunc_subsecs(3)
}

#[cfg(test)]
mod tests {
    #[test]
    fn series_buckets_never_exceed_the_requested_points() {
        for hours in [1, 6, 24, 24 * 7, 24 * 30] {
            for points in [2, 50, 500, 2000] {
                let range = hours * 3600;
                let bucket = super::series_bucket_seconds(range, points);
                // A range not aligned to buckets touches at most one extra.
                let buckets = (range + bucket - 1) / bucket + 1;
                assert!(
                    buckets <= i64::from(points.max(2)),
                    "{hours}h/{points}: {bucket}s"
                );
            }
        }
        assert_eq!(super::series_bucket_seconds(24 * 3600, 500), 300);
    }
}
