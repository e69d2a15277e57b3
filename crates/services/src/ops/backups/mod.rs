//! Backups: taken on a schedule (`PLANTOPS_BACKUP_SCHEDULE`, five-field
//! cron) or by `plantops backup`, each verified by a restore into a scratch
//! database before it counts, the oldest pruned past `PLANTOPS_BACKUP_KEEP`.
//! The outcome is kept in the database (settings), so the instance that
//! serves `/api/health` and `/metrics` reports it whichever process took the
//! backup (the production stack's backup service is one of its own); a
//! failure is an alert through the normal alert path.

pub mod database;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Local, Utc};
use plantops_core::alert::{Alert, AlertKind};
use plantops_store::DynStore;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use database::{sibling, RowCounts, Target};

/// Backups kept when `PLANTOPS_BACKUP_KEEP` is unset.
pub const DEFAULT_KEEP: usize = 7;

/// Time stamp in backup file names: sorts as it happened.
const STAMP: &str = "%Y%m%dT%H%M%SZ";
/// Appended to a backup that did not verify: kept for inspection, never
/// counted as a backup, removed once a newer one verifies.
const UNVERIFIED: &str = ".unverified";

const LAST_SUCCESS: &str = "backup.last_success";
const LAST_FAILURE: &str = "backup.last_failure";

/// When backups are taken: a five-field cron expression (minute hour
/// day-of-month month day-of-week) in the server's local time zone.
#[derive(Clone, Debug)]
pub struct Schedule {
    cron: croner::Cron,
    pattern: String,
}

impl FromStr for Schedule {
    type Err = String;

    fn from_str(pattern: &str) -> Result<Self, String> {
        let fields = pattern.split_whitespace().count();
        if fields != 5 {
            return Err(format!(
                "{pattern:?} has {fields} fields; a schedule has five: minute hour day-of-month \
                 month day-of-week, e.g. \"0 3 * * *\" for 03:00 every day"
            ));
        }
        let cron = croner::Cron::from_str(pattern)
            .map_err(|error| format!("{pattern:?} is not a cron expression: {error}"))?;
        Ok(Schedule {
            cron,
            pattern: pattern.to_string(),
        })
    }
}

impl std::fmt::Display for Schedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.pattern)
    }
}

impl Schedule {
    pub fn next_after(&self, time: DateTime<Local>) -> Option<DateTime<Local>> {
        self.cron.find_next_occurrence(&time, false).ok()
    }

    pub fn previous_before(&self, time: DateTime<Local>) -> Option<DateTime<Local>> {
        self.cron.find_previous_occurrence(&time, false).ok()
    }
}

/// Scheduled backups: when, how many to keep, where.
#[derive(Clone, Debug)]
pub struct BackupPlan {
    pub schedule: Schedule,
    pub keep: usize,
    pub dir: PathBuf,
    /// Copied beside each backup: Mosquitto's dynamic-security file (the
    /// devices' broker accounts) in the production stack.
    pub broker_file: Option<PathBuf>,
}

/// The last backup that verified.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BackupRecord {
    pub at: DateTime<Utc>,
    /// File name in the backup directory.
    pub file: String,
    pub bytes: u64,
    /// Rows it holds, all tables together, checked by a restore.
    pub rows: i64,
}

/// The last backup that failed or did not verify.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BackupFailure {
    pub at: DateTime<Utc>,
    pub error: String,
}

/// What the database records of backups.
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
pub struct BackupStatus {
    pub last_success: Option<BackupRecord>,
    pub last_failure: Option<BackupFailure>,
}

impl BackupStatus {
    pub async fn read(store: &DynStore) -> plantops_store::Result<Self> {
        fn parse<T: serde::de::DeserializeOwned>(value: Option<String>) -> Option<T> {
            value.and_then(|json| serde_json::from_str(&json).ok())
        }
        Ok(BackupStatus {
            last_success: parse(store.get_setting(LAST_SUCCESS).await?),
            last_failure: parse(store.get_setting(LAST_FAILURE).await?),
        })
    }

    /// `plantops_backup_last_success_timestamp_seconds` and
    /// `plantops_backup_last_failure_timestamp_seconds`, once there is one.
    pub fn publish_gauges(&self) {
        if let Some(success) = &self.last_success {
            metrics::gauge!("plantops_backup_last_success_timestamp_seconds")
                .set(success.at.timestamp() as f64);
        }
        if let Some(failure) = &self.last_failure {
            metrics::gauge!("plantops_backup_last_failure_timestamp_seconds")
                .set(failure.at.timestamp() as f64);
        }
    }

    /// Whether the last attempt failed.
    pub fn failing(&self) -> bool {
        match (&self.last_success, &self.last_failure) {
            (_, None) => false,
            (None, Some(_)) => true,
            (Some(success), Some(failure)) => failure.at > success.at,
        }
    }
}

/// A written and verified backup.
#[derive(Debug)]
pub struct Taken {
    pub file: PathBuf,
    pub bytes: u64,
    pub rows: RowCounts,
    pub broker_file: Option<PathBuf>,
}

impl Taken {
    pub fn total_rows(&self) -> i64 {
        self.rows.values().sum()
    }
}

/// Files only their owner may read: a backup holds password hashes and
/// sealed secrets.
fn restrict(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = if path.is_dir() { 0o700 } else { 0o600 };
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

/// Copies the broker's accounts file beside the backup after checking it
/// is the dynamic-security JSON it should be.
fn copy_broker_file(source: &Path, dir: &Path, stamp: &str) -> anyhow::Result<PathBuf> {
    let content =
        std::fs::read(source).with_context(|| format!("cannot read {}", source.display()))?;
    let parsed: serde_json::Value = serde_json::from_slice(&content)
        .with_context(|| format!("{} is not JSON", source.display()))?;
    if !parsed.get("clients").is_some_and(|c| c.is_array()) {
        anyhow::bail!(
            "{} has no \"clients\": not a Mosquitto dynamic-security file",
            source.display()
        );
    }
    let stem = source
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("broker");
    let copy = dir.join(format!("{stem}-{stamp}.json"));
    let partial = sibling(&copy, ".partial");
    plantops_mqtt::certs::write_private(&partial, &content)
        .and_then(|()| std::fs::rename(&partial, &copy))
        .with_context(|| format!("cannot write {}", copy.display()))?;
    Ok(copy)
}

/// Writes a backup of `database_url` into `dir`, named by `at`, and
/// verifies it. One that does not verify is kept with `.unverified`
/// appended and reported as the error.
pub async fn take(
    database_url: &str,
    dir: &Path,
    broker_file: Option<&Path>,
    at: DateTime<Utc>,
) -> anyhow::Result<Taken> {
    std::fs::create_dir_all(dir)
        .and_then(|()| restrict(dir))
        .with_context(|| format!("cannot create the backup directory {}", dir.display()))?;
    let target = Target::of(database_url)?;
    let stamp = at.format(STAMP).to_string();
    let file = dir.join(format!("plantops-{stamp}.{}", target.extension()));
    let broker_copy = broker_file
        .map(|source| copy_broker_file(source, dir, &stamp))
        .transpose()?;
    let partial = sibling(&file, ".partial");
    let written = async {
        let rows = target.write(&partial).await?;
        restrict(&partial)?;
        Ok::<_, anyhow::Error>(rows)
    };
    let rows = match written.await {
        Ok(rows) => rows,
        Err(error) => {
            let _ = std::fs::remove_file(&partial);
            if let Some(copy) = &broker_copy {
                let _ = std::fs::remove_file(copy);
            }
            return Err(error.context("writing the backup failed"));
        }
    };
    if let Err(reason) = target.verify(&partial, &rows).await {
        let kept = sibling(&file, UNVERIFIED);
        std::fs::rename(&partial, &kept)
            .with_context(|| format!("cannot write {}", kept.display()))?;
        return Err(reason.context(format!(
            "the backup did not verify (kept as {})",
            kept.display()
        )));
    }
    std::fs::rename(&partial, &file).with_context(|| format!("cannot write {}", file.display()))?;
    let bytes = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
    Ok(Taken {
        file,
        bytes,
        rows,
        broker_file: broker_copy,
    })
}

/// A backup file's time stamp and whether it verified, from its name.
fn backup_name(name: &str) -> Option<(&str, bool)> {
    let rest = name.strip_prefix("plantops-")?;
    let (stamp, extension) = rest.split_at_checked(STAMP_LEN)?;
    let verified = match extension {
        ".sqlite3" | ".dump" => true,
        ".sqlite3.unverified" | ".dump.unverified" => false,
        _ => return None,
    };
    Some((stamp, verified))
}

/// `20261204T030000Z`.
const STAMP_LEN: usize = 16;

/// Keeps the newest `keep` verified backups and the files taken with them;
/// removes older ones, unverified ones older than the newest verified one,
/// and what an interrupted run left. Returns what it removed.
pub fn prune(dir: &Path, keep: usize) -> std::io::Result<Vec<PathBuf>> {
    let names: Vec<String> = std::fs::read_dir(dir)?
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .collect();
    let mut verified: Vec<&str> = names
        .iter()
        .filter_map(|name| backup_name(name))
        .filter(|(_, verified)| *verified)
        .map(|(stamp, _)| stamp)
        .collect();
    verified.sort_unstable_by(|a, b| b.cmp(a));
    let newest = verified.first().copied();
    let kept = &verified[..keep.min(verified.len())];
    let mut removed = Vec::new();
    for name in &names {
        let stamp = backup_name(name).map(|(stamp, _)| stamp).or_else(|| {
            // A companion file: `<name>-<stamp>.json`.
            let stem = name.strip_suffix(".json")?;
            stem.get(stem.len().checked_sub(STAMP_LEN)?..)
                .filter(|stamp| {
                    names
                        .iter()
                        .any(|n| backup_name(n).is_some_and(|(s, _)| s == *stamp))
                })
        });
        let remove = if name.ends_with(".partial") {
            true
        } else if let Some(stamp) = stamp {
            match backup_name(name) {
                Some((_, true)) => !kept.contains(&stamp),
                Some((_, false)) => newest.is_some_and(|newest| stamp < newest),
                None => !kept.contains(&stamp) && newest.is_some_and(|newest| stamp < newest),
            }
        } else {
            false
        };
        if remove {
            let path = dir.join(name);
            std::fs::remove_file(&path)?;
            removed.push(path);
        }
    }
    Ok(removed)
}

/// One backup by the plan: taken, verified, pruned, recorded. A failure
/// after a success (or the first one ever) raises an alert, returned; a
/// run of failures raises only the first.
pub async fn run_once(
    store: &DynStore,
    database_url: &str,
    plan: &BackupPlan,
) -> anyhow::Result<Option<Alert>> {
    let at = plantops_core::now();
    let outcome = take(database_url, &plan.dir, plan.broker_file.as_deref(), at).await;
    let outcome = outcome.and_then(|taken| {
        let removed = prune(&plan.dir, plan.keep)
            .with_context(|| format!("cannot prune {}", plan.dir.display()))?;
        Ok((taken, removed))
    });
    match outcome {
        Ok((taken, removed)) => {
            let record = BackupRecord {
                at,
                file: taken
                    .file
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                bytes: taken.bytes,
                rows: taken.total_rows(),
            };
            tracing::info!(file = %taken.file.display(), bytes = taken.bytes, rows = record.rows,
                pruned = removed.len(), "backup taken and verified");
            let json = serde_json::to_string(&record)?;
            store.put_setting(LAST_SUCCESS, Some(&json)).await?;
            Ok(None)
        }
        Err(error) => {
            let error = format!("{error:#}");
            tracing::error!(%error, "backup failed");
            let was_failing = BackupStatus::read(store).await?.failing();
            let failure = BackupFailure { at, error };
            let json = serde_json::to_string(&failure)?;
            store.put_setting(LAST_FAILURE, Some(&json)).await?;
            if was_failing {
                return Ok(None);
            }
            let message = format!("The backup failed: {}", failure.error);
            let alert = Alert {
                created_at: at,
                ..Alert::pending(None, None, AlertKind::BackupFailed, message)
            };
            store
                .record_alerts(&[], std::slice::from_ref(&alert))
                .await?;
            Ok(Some(alert))
        }
    }
}

/// Takes backups by the plan until stopped. A backup the schedule called
/// for while nothing ran (the machine was off, the leader changed) is
/// taken at start.
pub async fn run_scheduled(
    store: DynStore,
    database_url: String,
    plan: BackupPlan,
    announcer: crate::alerts::Announcer,
) {
    let missed = match BackupStatus::read(&store).await {
        Ok(status) => match (
            status.last_success,
            plan.schedule.previous_before(Local::now()),
        ) {
            (None, _) => true,
            (Some(last), Some(due)) => last.at < due,
            (Some(_), None) => false,
        },
        Err(error) => {
            tracing::warn!(%error, "cannot read the last backup; taking one now");
            true
        }
    };
    let mut due = missed;
    loop {
        if due {
            match run_once(&store, &database_url, &plan).await {
                Ok(Some(alert)) => announcer.announce(vec![alert]),
                Ok(None) => {}
                Err(error) => tracing::error!(%error, "cannot record the backup's outcome"),
            }
        }
        let Some(next) = plan.schedule.next_after(Local::now()) else {
            tracing::warn!(schedule = %plan.schedule, "the backup schedule has no next time");
            return;
        };
        tracing::debug!(%next, "next backup");
        // Slept in steps of at most a minute, so a changed clock (NTP, a
        // suspended machine) moves the backup with it.
        loop {
            let left = (next - Local::now()).to_std().unwrap_or_default();
            if left.is_zero() {
                break;
            }
            tokio::time::sleep(left.min(Duration::from_secs(60))).await;
        }
        due = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_schedule_has_five_fields() {
        let daily: Schedule = "0 3 * * *".parse().unwrap();
        let from = Local::now();
        let next = daily.next_after(from).unwrap();
        assert!(next > from && next - from <= chrono::Duration::days(1));
        assert_eq!(next.format("%H:%M").to_string(), "03:00");
        let error = "0 0 3 * * *".parse::<Schedule>().unwrap_err();
        assert!(error.contains("has 6 fields"), "{error}");
        let error = "0 25 * * *".parse::<Schedule>().unwrap_err();
        assert!(error.contains("not a cron expression"), "{error}");
    }

    fn touch(dir: &Path, name: &str) {
        std::fs::write(dir.join(name), b"x").unwrap();
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn pruning_keeps_the_newest_verified_backups_and_their_broker_files() {
        let dir = tempfile::tempdir().unwrap();
        for day in 1..=4 {
            touch(dir.path(), &format!("plantops-2026120{day}T030000Z.dump"));
            touch(
                dir.path(),
                &format!("dynamic-security-2026120{day}T030000Z.json"),
            );
        }
        // Failed to verify: older than the newest verified one, so superseded.
        touch(dir.path(), "plantops-20261202T120000Z.dump.unverified");
        // The newest attempt did not verify: kept, and so are the 2 verified ones.
        touch(dir.path(), "plantops-20261205T030000Z.dump.unverified");
        touch(dir.path(), "plantops-20261205T040000Z.dump.partial");
        touch(dir.path(), "notes.txt");

        let removed = prune(dir.path(), 2).unwrap();
        assert_eq!(removed.len(), 6, "{removed:?}");
        assert_eq!(
            names(dir.path()),
            [
                "dynamic-security-20261203T030000Z.json",
                "dynamic-security-20261204T030000Z.json",
                "notes.txt",
                "plantops-20261203T030000Z.dump",
                "plantops-20261204T030000Z.dump",
                "plantops-20261205T030000Z.dump.unverified",
            ]
        );
    }
}
