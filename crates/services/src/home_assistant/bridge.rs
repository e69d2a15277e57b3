//! Home Assistant through MQTT discovery: PlantOps connects as a client to
//! the broker Home Assistant listens to and publishes, retained, one
//! device-based discovery config per plant (`<prefix>/device/plantops_<id>/config`:
//! moisture, temperature, humidity and illuminance sensors for the metrics
//! the plant reports, and a `problem` binary sensor), the plant's state on
//! every reading (`plantops/<id>/state`) and its availability from device
//! presence (`plantops/<id>/availability`). From the care journal: when the
//! plant was last watered and when watering is next due (timestamp sensors,
//! refreshed every minute), and a "Mark watered" button whose press
//! (`plantops/<id>/watered`) records a watering in the journal. Everything is published again
//! when Home Assistant announces `online` on `<prefix>/status`; a renamed
//! plant's config is replaced, a deleted plant's removed (empty retained
//! messages).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use plantops_core::alert::AlertKind;
use plantops_core::event::Event;
use plantops_core::journal::{CareEvent, CareEventKind, CareSource};
use plantops_core::{DeviceStatus, Measurements, Metric, Plant};
use plantops_store::DynStore;
use rumqttc::{AsyncClient, MqttOptions, Packet, QoS, TlsConfiguration, Transport};
use serde_json::{json, Map, Value};
use tokio::sync::{broadcast, mpsc, watch};
use uuid::Uuid;

use crate::care::journal::Journal;
use crate::care::tasks::{Tasks, Watering};

/// Where Home Assistant's broker is and how PlantOps logs in.
#[derive(Clone, PartialEq)]
pub struct HomeAssistantLink {
    pub host: String,
    pub port: u16,
    pub tls: bool,
    /// A CA to trust for `mqtts://` besides the system's.
    pub ca: Option<PathBuf>,
    pub username: Option<String>,
    pub password: Option<String>,
    /// Home Assistant's discovery prefix (`homeassistant`).
    pub prefix: String,
}

impl std::fmt::Debug for HomeAssistantLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HomeAssistantLink")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("prefix", &self.prefix)
            .finish()
    }
}

/// The sensors a plant can have: metric, component id, Home Assistant's
/// device class and unit.
const SENSORS: [(Metric, &str, &str, &str); 4] = [
    (Metric::SoilMoisture, "soil_moisture", "moisture", "%"),
    (Metric::Temperature, "temperature", "temperature", "°C"),
    (Metric::Humidity, "humidity", "humidity", "%"),
    (Metric::LightLevel, "illuminance", "illuminance", "lx"),
];

/// How often the care sensors (last watered, next watering) are refreshed:
/// the journal changes through the API, on other instances, by detection.
const CARE_REFRESH: Duration = Duration::from_secs(60);

/// The care journal and schedules the bridge shows and records into.
#[derive(Clone)]
pub struct CareLink {
    pub journal: Journal,
    pub tasks: Tasks,
}

/// How far back a plant's sensors are looked up when the bridge starts.
const RECALL_DAYS: i64 = 7;
const RECALL_READINGS: u32 = 200;

fn object_id(plant: Uuid) -> String {
    format!("plantops_{}", plant.simple())
}

pub fn config_topic(prefix: &str, plant: Uuid) -> String {
    format!("{prefix}/device/{}/config", object_id(plant))
}

pub fn state_topic(plant: Uuid) -> String {
    format!("plantops/{plant}/state")
}

pub fn availability_topic(plant: Uuid) -> String {
    format!("plantops/{plant}/availability")
}

/// Where Home Assistant's "Mark watered" button publishes its press.
pub fn watered_topic(plant: Uuid) -> String {
    format!("plantops/{plant}/watered")
}

const WATERED_FILTER: &str = "plantops/+/watered";

/// The plant of a press on [`watered_topic`].
fn pressed_plant(topic: &str) -> Option<Uuid> {
    let id = topic.strip_prefix("plantops/")?.strip_suffix("/watered")?;
    id.parse().ok()
}

/// What Home Assistant is told of one plant.
#[derive(Debug, Default, Clone)]
struct PlantState {
    /// Last known value per sensor component id.
    values: BTreeMap<&'static str, f64>,
    problem: bool,
    /// From the care journal and schedule.
    care: Watering,
}

impl PlantState {
    /// Takes a reading's values; true when it brought a metric the plant
    /// had not reported before (its config gains a sensor).
    fn absorb(&mut self, values: &Measurements) -> bool {
        let mut new_sensor = false;
        for (metric, component, _, _) in SENSORS {
            if let Some(value) = values.get(metric) {
                new_sensor |= self.values.insert(component, value).is_none();
            }
        }
        new_sensor
    }

    fn payload(&self) -> String {
        let mut state: Map<String, Value> = self
            .values
            .iter()
            .map(|(component, value)| (component.to_string(), json!(value)))
            .collect();
        state.insert(
            "problem".into(),
            json!(if self.problem { "ON" } else { "OFF" }),
        );
        // null renders as "None", which Home Assistant shows as unknown.
        let time = |t: Option<DateTime<Utc>>| json!(t.map(|t| t.to_rfc3339()));
        state.insert("last_watered".into(), time(self.care.last));
        state.insert("next_watering".into(), time(self.care.next));
        Value::Object(state).to_string()
    }
}

/// The device-based discovery config of a plant.
pub fn discovery_config(plant: &Plant, reported: &[&str]) -> Value {
    let id = object_id(plant.id);
    let mut components = Map::new();
    for (_, component, device_class, unit) in SENSORS {
        if !reported.contains(&component) {
            continue;
        }
        components.insert(
            component.into(),
            json!({
                "p": "sensor",
                "name": sensor_name(component),
                "device_class": device_class,
                "unit_of_measurement": unit,
                "state_class": "measurement",
                "value_template": format!("{{{{ value_json.{component} }}}}"),
                "unique_id": format!("{id}_{component}"),
            }),
        );
    }
    components.insert(
        "problem".into(),
        json!({
            "p": "binary_sensor",
            "name": "Problem",
            "device_class": "problem",
            "value_template": "{{ value_json.problem }}",
            "unique_id": format!("{id}_problem"),
        }),
    );
    for (component, name) in [
        ("last_watered", "Last watered"),
        ("next_watering", "Next watering due"),
    ] {
        components.insert(
            component.into(),
            json!({
                "p": "sensor",
                "name": name,
                "device_class": "timestamp",
                "value_template": format!("{{{{ value_json.{component} }}}}"),
                "unique_id": format!("{id}_{component}"),
            }),
        );
    }
    components.insert(
        "mark_watered".into(),
        json!({
            "p": "button",
            "name": "Mark watered",
            "icon": "mdi:watering-can",
            "command_topic": watered_topic(plant.id),
            "payload_press": "PRESS",
            "unique_id": format!("{id}_mark_watered"),
        }),
    );
    json!({
        "dev": {
            "ids": [id],
            "name": plant.name,
            "mf": "PlantOps",
            "mdl": plant.species.clone().unwrap_or_else(|| "Plant".into()),
            "sw": env!("CARGO_PKG_VERSION"),
        },
        "o": {"name": "PlantOps", "sw": env!("CARGO_PKG_VERSION")},
        "cmps": components,
        "state_topic": state_topic(plant.id),
        "availability_topic": availability_topic(plant.id),
        "qos": 1,
    })
}

fn sensor_name(component: &str) -> &'static str {
    match component {
        "soil_moisture" => "Soil moisture",
        "temperature" => "Temperature",
        "humidity" => "Humidity",
        _ => "Illuminance",
    }
}

/// What the connection task tells the bridge.
enum Signal {
    /// Connected (again): publish everything.
    Connected,
    /// Home Assistant (re)started: publish everything.
    HomeAssistantOnline,
    /// "Mark watered" was pressed for this plant.
    Watered(Uuid),
}

/// Runs the bridge with whatever `link` holds, reconnecting when it
/// changes; `None` = off.
pub async fn run(
    store: DynStore,
    care: CareLink,
    events: broadcast::Sender<Event>,
    mut link: watch::Receiver<Option<HomeAssistantLink>>,
    client_id: String,
) {
    loop {
        let current = link.borrow_and_update().clone();
        match current {
            None => {
                if link.changed().await.is_err() {
                    return;
                }
            }
            Some(config) => {
                tracing::info!(host = %config.host, port = config.port, prefix = %config.prefix, "Home Assistant discovery on");
                let bridge = Bridge::new(store.clone(), care.clone(), config, &client_id);
                tokio::select! {
                    () = bridge.run(events.subscribe()) => return,
                    changed = link.changed() => if changed.is_err() { return },
                }
            }
        }
    }
}

struct Bridge {
    store: DynStore,
    care: CareLink,
    config: HomeAssistantLink,
    client: AsyncClient,
    signals: mpsc::Receiver<Signal>,
    connection: tokio::task::JoinHandle<()>,
    plants: HashMap<Uuid, PlantState>,
}

impl Drop for Bridge {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

fn options(config: &HomeAssistantLink, client_id: &str) -> MqttOptions {
    let mut options = MqttOptions::new(client_id, &config.host, config.port);
    if let Some(username) = &config.username {
        options.set_credentials(username, config.password.clone().unwrap_or_default());
    }
    options.set_keep_alive(Duration::from_secs(30));
    options.set_clean_session(true);
    if config.tls {
        // An unreadable CA file is named, and the system's roots tried.
        let transport = plantops_mqtt::tls_transport(config.ca.as_deref(), "PLANTOPS_HA_MQTT_CA")
            .unwrap_or_else(|error| {
                tracing::warn!(%error, "Home Assistant broker: trusting the system's CAs only");
                Transport::Tls(TlsConfiguration::default())
            });
        options.set_transport(transport);
    }
    options
}

impl Bridge {
    fn new(store: DynStore, care: CareLink, config: HomeAssistantLink, client_id: &str) -> Self {
        let (client, mut eventloop) = AsyncClient::new(options(&config, client_id), 256);
        let (signal, signals) = mpsc::channel(8);
        let status = format!("{}/status", config.prefix);
        let subscriber = client.clone();
        let connection = tokio::spawn(async move {
            let mut backoff = plantops_core::backoff::Backoff::new(
                Duration::from_millis(500),
                Duration::from_secs(30),
            );
            loop {
                match eventloop.poll().await {
                    Ok(rumqttc::Event::Incoming(Packet::ConnAck(_))) => {
                        backoff.reset();
                        let _ = subscriber.subscribe(&status, QoS::AtLeastOnce).await;
                        let _ = subscriber.subscribe(WATERED_FILTER, QoS::AtLeastOnce).await;
                        let _ = signal.send(Signal::Connected).await;
                    }
                    Ok(rumqttc::Event::Incoming(Packet::Publish(message)))
                        if message.topic == status && message.payload.as_ref() == b"online" =>
                    {
                        let _ = signal.send(Signal::HomeAssistantOnline).await;
                    }
                    Ok(rumqttc::Event::Incoming(Packet::Publish(message)))
                        if message.payload.as_ref() == b"PRESS" =>
                    {
                        if let Some(plant) = pressed_plant(&message.topic) {
                            let _ = signal.send(Signal::Watered(plant)).await;
                        }
                    }
                    Ok(_) => {}
                    Err(error) => {
                        tracing::warn!(%error, "Home Assistant broker unreachable");
                        tokio::time::sleep(backoff.next_delay()).await;
                    }
                }
            }
        });
        Bridge {
            store,
            care,
            config,
            client,
            signals,
            connection,
            plants: HashMap::new(),
        }
    }

    async fn run(mut self, mut events: broadcast::Receiver<Event>) {
        let mut care_refresh = tokio::time::interval(CARE_REFRESH);
        care_refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                signal = self.signals.recv() => match signal {
                    Some(Signal::Connected | Signal::HomeAssistantOnline) => self.publish_all().await,
                    Some(Signal::Watered(plant)) => self.on_watered(plant).await,
                    None => return,
                },
                _ = care_refresh.tick() => self.refresh_care().await,
                event = events.recv() => match event {
                    Ok(event) => self.on_event(event).await,
                    Err(broadcast::error::RecvError::Lagged(_)) => self.publish_all().await,
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            }
        }
    }

    async fn publish(&self, topic: String, payload: String) {
        if let Err(error) = self
            .client
            .publish(topic, QoS::AtLeastOnce, true, payload)
            .await
        {
            tracing::warn!(%error, "cannot publish to Home Assistant's broker");
        }
    }

    /// Every plant's config, state and availability.
    async fn publish_all(&mut self) {
        if let Err(error) = self.try_publish_all().await {
            tracing::warn!(%error, "cannot read plants for Home Assistant");
        }
    }

    async fn try_publish_all(&mut self) -> plantops_store::Result<()> {
        let care = self.care.tasks.watering(Utc::now()).await?;
        for plant in self.store.all_plants().await? {
            if !self.plants.contains_key(&plant.id) {
                let state = self.recall(plant.id).await?;
                self.plants.insert(plant.id, state);
            }
            let problem = self.has_problem(plant.id).await?;
            if let Some(state) = self.plants.get_mut(&plant.id) {
                state.problem = problem;
                state.care = care.get(&plant.id).copied().unwrap_or_default();
            }
            self.publish_plant(&plant).await?;
        }
        Ok(())
    }

    /// Publishes the state of plants whose care sensors changed.
    async fn refresh_care(&mut self) {
        let care = match self.care.tasks.watering(Utc::now()).await {
            Ok(care) => care,
            Err(error) => {
                tracing::warn!(%error, "cannot read the care journal for Home Assistant");
                return;
            }
        };
        let mut changed = Vec::new();
        for (plant, state) in &mut self.plants {
            let now = care.get(plant).copied().unwrap_or_default();
            if state.care != now {
                state.care = now;
                changed.push((*plant, state.payload()));
            }
        }
        for (plant, payload) in changed {
            self.publish(state_topic(plant), payload).await;
        }
    }

    /// "Mark watered": the journal records it, the sensors follow.
    async fn on_watered(&mut self, plant: Uuid) {
        match self.store.get_plant(plant).await {
            Ok(Some(_)) => {}
            Ok(None) => {
                return tracing::warn!(plant_id = %plant, "Home Assistant pressed \"Mark watered\" for an unknown plant")
            }
            Err(error) => {
                return tracing::warn!(%error, "cannot record a watering from Home Assistant")
            }
        }
        let now = Utc::now();
        let event = CareEvent {
            id: Uuid::new_v4(),
            plant_id: plant,
            kind: CareEventKind::Watered,
            at: now,
            amount: None,
            unit: None,
            text: None,
            task: None,
            source: CareSource::Automation,
            recorded_by: Some("Home Assistant".into()),
            created_at: now,
        };
        if let Err(error) = self.care.journal.record(&event).await {
            return tracing::warn!(%error, "cannot record a watering from Home Assistant");
        }
        self.refresh_care().await;
    }

    /// A plant's last known values from its readings of the last week (a
    /// sensor may be missing from the newest one).
    async fn recall(&self, plant: Uuid) -> plantops_store::Result<PlantState> {
        let since = plantops_core::now() - chrono::Duration::days(RECALL_DAYS);
        let mut readings = self
            .store
            .plant_history(plant, since, RECALL_READINGS)
            .await?;
        // Newest first: absorbed oldest first, so the newest value wins.
        readings.reverse();
        let mut state = PlantState::default();
        for reading in &readings {
            state.absorb(&reading.values);
        }
        Ok(state)
    }

    async fn has_problem(&self, plant: Uuid) -> plantops_store::Result<bool> {
        let states = self.store.metric_states(plant).await?;
        Ok(states.values().any(|s| s.breached.is_some()))
    }

    /// A plant's config, state and availability, from what is known.
    async fn publish_plant(&self, plant: &Plant) -> plantops_store::Result<()> {
        let state = self.plants.get(&plant.id).cloned().unwrap_or_default();
        let reported: Vec<&str> = state.values.keys().copied().collect();
        let config = discovery_config(plant, &reported);
        self.publish(
            config_topic(&self.config.prefix, plant.id),
            config.to_string(),
        )
        .await;
        self.publish(state_topic(plant.id), state.payload()).await;
        self.publish_availability(plant.id).await
    }

    async fn publish_availability(&self, plant: Uuid) -> plantops_store::Result<()> {
        let devices = self.store.plant_devices(plant).await?;
        let online = devices.iter().any(|d| d.status == DeviceStatus::Online);
        let availability = if online { "online" } else { "offline" };
        self.publish(availability_topic(plant), availability.into())
            .await;
        Ok(())
    }

    async fn on_event(&mut self, event: Event) {
        let handled = match event {
            Event::Reading(reading) => match reading.plant_id {
                Some(plant) => self.on_reading(plant, &reading.values).await,
                None => Ok(()),
            },
            Event::DeviceStatus(change) => match change.plant_id {
                Some(plant) => self.publish_availability(plant).await,
                None => Ok(()),
            },
            Event::Alert(alert)
                if matches!(alert.kind, AlertKind::Threshold | AlertKind::Recovered) =>
            {
                match alert.plant_id {
                    Some(plant) => self.on_problem_change(plant).await,
                    None => Ok(()),
                }
            }
            Event::Alert(_) => Ok(()),
            Event::PlantChanged {
                plant_id,
                removed: true,
            } => {
                self.remove(plant_id).await;
                Ok(())
            }
            Event::PlantChanged { plant_id, .. } => self.on_plant_changed(plant_id).await,
        };
        if let Err(error) = handled {
            tracing::warn!(%error, "cannot update Home Assistant");
        }
    }

    async fn on_reading(
        &mut self,
        plant: Uuid,
        values: &Measurements,
    ) -> plantops_store::Result<()> {
        let state = self.plants.entry(plant).or_default();
        let new_sensor = state.absorb(values);
        let payload = state.payload();
        if new_sensor {
            // The config lists only the sensors a plant reports.
            if let Some(plant) = self.store.get_plant(plant).await? {
                return self.publish_plant(&plant).await;
            }
        }
        self.publish(state_topic(plant), payload).await;
        Ok(())
    }

    async fn on_problem_change(&mut self, plant: Uuid) -> plantops_store::Result<()> {
        let problem = self.has_problem(plant).await?;
        let state = self.plants.entry(plant).or_default();
        state.problem = problem;
        let payload = state.payload();
        self.publish(state_topic(plant), payload).await;
        Ok(())
    }

    async fn on_plant_changed(&mut self, plant: Uuid) -> plantops_store::Result<()> {
        let Some(found) = self.store.get_plant(plant).await? else {
            self.remove(plant).await;
            return Ok(());
        };
        let problem = self.has_problem(plant).await?;
        if !self.plants.contains_key(&plant) {
            let state = self.recall(plant).await?;
            self.plants.insert(plant, state);
        }
        if let Some(state) = self.plants.get_mut(&plant) {
            state.problem = problem;
        }
        self.publish_plant(&found).await
    }

    /// Empty retained messages delete the config (Home Assistant removes
    /// the device) and the retained state and availability.
    async fn remove(&mut self, plant: Uuid) {
        self.plants.remove(&plant);
        self.publish(config_topic(&self.config.prefix, plant), String::new())
            .await;
        self.publish(state_topic(plant), String::new()).await;
        self.publish(availability_topic(plant), String::new()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plant_config_lists_the_sensors_it_reports_and_its_problem() {
        let plant = Plant {
            id: Uuid::new_v4(),
            name: "Fern".into(),
            species: Some("Nephrolepis".into()),
            thresholds: None,
            alert_cooldown_minutes: 30,
            low_battery_percent: None,
            created_at: plantops_core::now(),
            updated_at: plantops_core::now(),
        };
        let config = discovery_config(&plant, &["soil_moisture", "illuminance"]);
        let id = object_id(plant.id);
        assert_eq!(config["dev"]["ids"], json!([id]));
        assert_eq!(config["dev"]["name"], "Fern");
        let components = config["cmps"].as_object().unwrap();
        assert_eq!(components.len(), 6, "{components:?}");
        assert_eq!(
            components["mark_watered"]["command_topic"],
            watered_topic(plant.id)
        );
        assert_eq!(pressed_plant(&watered_topic(plant.id)), Some(plant.id));
        assert_eq!(pressed_plant("plantops/not-a-plant/watered"), None);
        assert_eq!(components["soil_moisture"]["device_class"], "moisture");
        assert_eq!(components["illuminance"]["unit_of_measurement"], "lx");
        assert_eq!(components["problem"]["p"], "binary_sensor");
        assert_eq!(
            components["soil_moisture"]["value_template"],
            "{{ value_json.soil_moisture }}"
        );
        let mut state = PlantState::default();
        let values = Measurements {
            soil_moisture: Some(40.5),
            ..Default::default()
        };
        assert!(state.absorb(&values), "a new sensor");
        assert!(!state.absorb(&values), "known already");
        let payload: Value = serde_json::from_str(&state.payload()).unwrap();
        assert_eq!(
            payload,
            json!({"soil_moisture": 40.5, "problem": "OFF", "last_watered": null, "next_watering": null})
        );
    }
}
