//! A warning through the alert path (stored, shown, notified like any
//! alert) when a TLS certificate PlantOps serves or hands to devices ends
//! within [`RENEW_BEFORE_DAYS`]: devices that cannot verify the broker stop
//! connecting, silently, on the day it ends. One alert per certificate and
//! end date, whichever instance leads and however often it restarts.

use std::time::Duration;

use chrono::{DateTime, Utc};
use plantops_core::alert::{Alert, AlertKind};
use plantops_mqtt::certs::RENEW_BEFORE_DAYS;
use plantops_store::DynStore;

/// Where the end date of the last warned-about certificate is kept.
fn warned_key(name: &str) -> String {
    format!("certificate_warned.{name}")
}

fn describe(name: &str) -> &str {
    match name {
        "broker" => "The broker's TLS certificate",
        "ca" => "The CA certificate devices trust",
        other => other,
    }
}

/// Raises the alerts due at `now`; returns them.
pub async fn check(
    store: &DynStore,
    certificates: &[(&'static str, DateTime<Utc>)],
    now: DateTime<Utc>,
) -> plantops_store::Result<Vec<Alert>> {
    let mut raised = Vec::new();
    for (name, ends) in certificates {
        let days_left = (*ends - now).num_days();
        if days_left >= RENEW_BEFORE_DAYS {
            continue;
        }
        let key = warned_key(name);
        let marker = ends.to_rfc3339();
        if store.get_setting(&key).await?.as_deref() == Some(marker.as_str()) {
            continue;
        }
        let when = if *ends <= now {
            format!("ended on {}", ends.format("%Y-%m-%d"))
        } else {
            format!("ends on {} ({days_left} days)", ends.format("%Y-%m-%d"))
        };
        let message = format!(
            "{} {when}: renew it (plantops certs --renew, or replace a certificate of your own; docs/deployment.md)",
            describe(name)
        );
        let alert = Alert {
            created_at: now,
            ..Alert::pending(None, None, AlertKind::CertificateExpiring, message)
        };
        store
            .record_alerts(&[], std::slice::from_ref(&alert))
            .await?;
        store.put_setting(&key, Some(&marker)).await?;
        raised.push(alert);
    }
    Ok(raised)
}

/// Checks at once and then daily: a job for the leader.
pub async fn watch(
    store: DynStore,
    certificates: Vec<(&'static str, DateTime<Utc>)>,
    announcer: super::Announcer,
) {
    let mut daily = tokio::time::interval(Duration::from_secs(24 * 3600));
    loop {
        daily.tick().await;
        match check(&store, &certificates, Utc::now()).await {
            Ok(raised) => announcer.announce(raised),
            Err(error) => tracing::warn!(%error, "cannot check certificate ends"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_certificate_ending_soon_is_one_alert_until_it_is_renewed() {
        let db = plantops_testkit::TestDb::sqlite().await;
        let store = db.store().await;
        let now = Utc::now();
        let soon = now + chrono::Duration::days(12);
        let later = now + chrono::Duration::days(300);
        let certificates = [("broker", soon), ("ca", later)];

        let raised = check(&store, &certificates, now).await.unwrap();
        assert_eq!(raised.len(), 1);
        assert_eq!(raised[0].kind, AlertKind::CertificateExpiring);
        assert!(
            raised[0].message.contains("(12 days)"),
            "{}",
            raised[0].message
        );
        // The next day, or after a restart or a change of leader: no repeat.
        let tomorrow = now + chrono::Duration::days(1);
        assert!(check(&store, &certificates, tomorrow)
            .await
            .unwrap()
            .is_empty());
        let filter = plantops_store::AlertFilter {
            kind: Some(AlertKind::CertificateExpiring),
            ..Default::default()
        };
        let page = plantops_store::Page {
            limit: 10,
            offset: 0,
        };
        let (stored, total) = store.list_alerts(&filter, page).await.unwrap();
        assert_eq!(total, 1);
        assert_eq!(
            stored[0].delivery,
            plantops_core::alert::Delivery::Pending,
            "notified like any alert"
        );

        // Renewed, and in time ending soon again: a new warning.
        let renewed = [("broker", soon + chrono::Duration::days(5)), ("ca", later)];
        assert_eq!(check(&store, &renewed, tomorrow).await.unwrap().len(), 1);
    }
}
