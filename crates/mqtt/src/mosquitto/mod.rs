//! An external Mosquitto: the backend subscribes to device topics with a
//! persistent session and acknowledges each QoS 1 message only after it is
//! committed; device accounts and ACLs are provisioned at runtime through
//! Mosquitto's dynamic-security plugin (no password file, no restart).

mod connection;
mod dynsec;
mod link;

pub use link::IngestLink;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use plantops_core::topic;
use serde_json::json;
use uuid::Uuid;

use crate::ingest::Ingest;
use crate::{Broker, BrokerError, LinkState};
use dynsec::Dynsec;

/// The role that lets the backend read every device's messages.
const BACKEND_ROLE: &str = "plantops-backend";
const DEVICE_ROLE_PREFIX: &str = "plantops-device-";

#[derive(Clone)]
pub struct MosquittoConfig {
    pub host: String,
    pub port: u16,
    pub use_tls: bool,
    pub ca_cert: Option<PathBuf>,
    pub username: String,
    pub password: Option<String>,
    pub dynsec_username: String,
    pub dynsec_password: Option<String>,
}

impl std::fmt::Debug for MosquittoConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MosquittoConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("use_tls", &self.use_tls)
            .field("username", &self.username)
            .field("dynsec_username", &self.dynsec_username)
            .finish_non_exhaustive()
    }
}

/// The broker account of one instance's ingest link:
/// `<MQTT_BACKEND_USERNAME>.<instance id>`, with the backend's password.
pub fn instance_username(config: &MosquittoConfig, instance_id: &str) -> String {
    format!("{}.{instance_id}", config.username)
}

/// One instance's dynamic-security admin account:
/// `<MQTT_DYNSEC_USERNAME>.<instance id>`, with the admin's password and
/// roles. Mosquitto makes a client's id its username, so instances sharing
/// one admin account would disconnect each other.
pub fn instance_admin(config: &MosquittoConfig, instance_id: &str) -> String {
    format!("{}.{instance_id}", config.dynsec_username)
}

fn device_role(device_id: Uuid) -> String {
    format!("{DEVICE_ROLE_PREFIX}{device_id}")
}

pub struct MosquittoBroker {
    /// Logged in as this instance's own admin account
    /// ([`instance_username`] of the dynamic-security admin); `None` when
    /// the broker asks PlantOps who may connect and what they may do
    /// (HTTP authentication, `/api/mqtt/auth`): nothing to provision then.
    dynsec: Option<Dynsec>,
    state: Arc<RwLock<LinkState>>,
    config: MosquittoConfig,
    /// Where messages of sessions taken over go.
    ingest: Ingest,
    link: Arc<link::LinkControl>,
    /// Set once the backend's account, role and the device accounts are in
    /// place. Until then registering could race the broker kicking the
    /// admin's links (a role change disconnects the client).
    provisioned: std::sync::atomic::AtomicBool,
}

impl MosquittoBroker {
    /// Connects the provisioning link, which keeps reconnecting in the
    /// background, and prepares the ingest link for the caller to run (and
    /// restart should it fail). `state()` tells how the links are doing.
    /// The ingest link logs in with an account of this instance's own
    /// ([`instance_username`]): Mosquitto makes a client's id its username,
    /// and each instance needs its own session.
    pub async fn start(
        config: MosquittoConfig,
        instance_id: &str,
        ingest: Ingest,
    ) -> Result<(Arc<Self>, IngestLink), BrokerError> {
        let dynsec = if config.dynsec_username.is_empty() {
            None
        } else {
            Some(Dynsec::start(
                &config,
                &instance_admin(&config, instance_id),
            )?)
        };
        let state = Arc::new(RwLock::new(LinkState {
            up: false,
            message: format!("connecting to {}:{}", config.host, config.port),
        }));
        let username = instance_username(&config, instance_id);
        let link = IngestLink::new(&config, &username, ingest.clone(), state.clone())?;
        let broker = Arc::new(Self {
            dynsec,
            config,
            ingest,
            link: link.control(),
            state,
            provisioned: false.into(),
        });
        Ok((broker, link))
    }

    /// Makes this instance's admin account, unless its link is up already:
    /// a short connection as the configured admin copies that account's
    /// roles and password to it. Run before any other provisioning.
    pub async fn ensure_instance_admin(
        &self,
        config: &MosquittoConfig,
        instance_id: &str,
    ) -> Result<(), BrokerError> {
        if self.dynsec.as_ref().is_none_or(Dynsec::is_listening) {
            return Ok(());
        }
        let bootstrap = Dynsec::start(config, &config.dynsec_username)?;
        let lookup = json!({"command": "getClient", "username": config.dynsec_username});
        let responses = bootstrap.run(vec![lookup]).await?;
        let roles: Vec<serde_json::Value> = responses
            .first()
            .and_then(|r| r["data"]["client"]["roles"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|role| role["rolename"].as_str())
            .map(|rolename| json!({"rolename": rolename}))
            .collect();
        let username = instance_admin(config, instance_id);
        let password = config.dynsec_password.clone().unwrap_or_default();
        bootstrap
            .run_checked(
                vec![
                    json!({"command": "createClient", "username": username,
                        "password": password, "roles": roles}),
                    json!({"command": "setClientPassword", "username": username,
                        "password": password}),
                ],
                &["already exists"],
            )
            .await?;
        tracing::info!(%username, "dynamic-security account of this instance ready");
        Ok(())
    }

    /// Gives this instance's account read access to every device topic. Run
    /// once at start by every instance; repeating it is harmless. (Changing
    /// a client's roles makes Mosquitto disconnect it, so the link
    /// reconnects once on first setup.)
    pub async fn ensure_backend_access(
        &self,
        config: &MosquittoConfig,
        instance_id: &str,
    ) -> Result<(), BrokerError> {
        let Some(dynsec) = &self.dynsec else {
            return Ok(());
        };
        let username = instance_username(config, instance_id);
        // Anything not granted by a role is refused: no client receives a
        // message it was not meant to (Mosquitto's own default lets every
        // client receive whatever its subscriptions match).
        let mut commands = vec![json!({"command": "setDefaultACLAccess", "acls": [
            {"acltype": "publishClientSend", "allow": false},
            {"acltype": "publishClientReceive", "allow": false},
            {"acltype": "subscribe", "allow": false},
            {"acltype": "unsubscribe", "allow": true},
        ]})];
        commands.push(json!({"command": "createRole", "rolename": BACKEND_ROLE}));
        for filter in [topic::ALL_TELEMETRY, topic::ALL_HEARTBEATS] {
            for subscription in [filter.to_string(), link::shared(filter)] {
                commands.push(json!({"command": "addRoleACL", "rolename": BACKEND_ROLE,
                    "acltype": "subscribePattern", "topic": subscription, "allow": true}));
            }
            commands.push(json!({"command": "addRoleACL", "rolename": BACKEND_ROLE,
                "acltype": "publishClientReceive", "topic": filter, "allow": true}));
        }
        let password = config.password.clone().unwrap_or_default();
        commands.push(json!({"command": "createClient", "username": username,
            "password": password}));
        // A password changed in the environment takes effect on restart.
        commands.push(json!({"command": "setClientPassword",
            "username": username, "password": password}));
        dynsec.run_checked(commands, &["already exists"]).await?;
        // Mosquitto 2.0 answers a repeated addClientRole with "Internal
        // error", so look first.
        let lookup = json!({"command": "getClient", "username": username});
        let responses = dynsec.run(vec![lookup]).await?;
        let has_role = responses
            .first()
            .and_then(|r| r["data"]["client"]["roles"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .any(|role| role["rolename"] == BACKEND_ROLE);
        if has_role {
            return Ok(());
        }
        let grant = json!({"command": "addClientRole", "username": username,
            "rolename": BACKEND_ROLE});
        dynsec.run_checked(vec![grant], &[]).await
    }

    /// Declares provisioning done: from now on the link state alone tells
    /// whether the broker is usable.
    pub fn mark_provisioned(&self) {
        self.provisioned
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// Takes over the broker session of an instance that stopped for good
    /// (`Some(id)`) or of the single backend of a version before
    /// scale-out (`None`): stores what is queued in it, ends it, and
    /// removes the instance's accounts. Returns the messages stored.
    pub async fn retire(&self, instance_id: Option<&str>) -> Result<u64, BrokerError> {
        let username = match instance_id {
            Some(id) => instance_username(&self.config, id),
            None => self.config.username.clone(),
        };
        let drained = link::drain_session(&self.config, &username, &self.ingest).await?;
        if let (Some(id), Some(dynsec)) = (instance_id, &self.dynsec) {
            let commands = vec![
                json!({"command": "deleteClient", "username": username}),
                json!({"command": "deleteClient", "username": instance_admin(&self.config, id)}),
            ];
            dynsec.run_checked(commands, &["not found"]).await?;
        }
        if drained > 0 {
            tracing::info!(%username, drained, "stored the messages a stopped instance left in its broker session");
        }
        Ok(drained)
    }

    /// Removes broker accounts of devices the store no longer knows; names
    /// devices the store knows but the broker lacks (they must rotate).
    pub async fn reconcile(&self, known: &HashSet<String>) -> Result<(), BrokerError> {
        let Some(dynsec) = &self.dynsec else {
            return Ok(());
        };
        let listed = list_clients(dynsec).await?;
        let device_accounts: HashSet<String> = listed
            .into_iter()
            .filter(|name| name.starts_with("device_"))
            .collect();
        for stale in device_accounts.difference(known) {
            tracing::info!(username = %stale, "removing broker account of a deleted device");
            dynsec
                .run_checked(
                    vec![json!({"command": "deleteClient", "username": stale})],
                    &["not found"],
                )
                .await?;
        }
        for missing in known.difference(&device_accounts) {
            tracing::warn!(username = %missing, "device has no broker account; rotate its credentials to restore access");
        }
        Ok(())
    }
}

async fn list_clients(dynsec: &Dynsec) -> Result<Vec<String>, BrokerError> {
    let command = json!({"command": "listClients", "verbose": false});
    let responses = dynsec.run(vec![command]).await?;
    Ok(responses
        .first()
        .and_then(|r| r["data"]["clients"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|c| {
            c.as_str()
                .or_else(|| c["username"].as_str())
                .map(str::to_string)
        })
        .collect())
}

fn set_state(state: &RwLock<LinkState>, up: bool, message: String) {
    if let Ok(mut state) = state.write() {
        *state = LinkState { up, message };
    }
}

#[async_trait]
impl Broker for MosquittoBroker {
    fn kind(&self) -> &'static str {
        match self.dynsec {
            Some(_) => "mosquitto",
            None => "mqtt",
        }
    }

    fn state(&self) -> LinkState {
        let link = self
            .state
            .read()
            .map(|s| s.clone())
            .unwrap_or_else(|_| LinkState {
                up: false,
                message: "state unavailable".into(),
            });
        if link.up && !self.provisioned.load(std::sync::atomic::Ordering::Acquire) {
            return LinkState {
                up: false,
                message: "provisioning accounts through dynamic security".into(),
            };
        }
        link
    }

    async fn add_device(
        &self,
        device_id: Uuid,
        username: &str,
        password: &str,
    ) -> Result<(), BrokerError> {
        // Without dynamic security the broker asks PlantOps at every
        // connect: the store alone decides.
        let Some(dynsec) = &self.dynsec else {
            return Ok(());
        };
        let role = device_role(device_id);
        let own = topic::device_filter(&device_id.to_string());
        let mut commands = vec![
            json!({"command": "createRole", "rolename": role}),
            json!({"command": "addRoleACL", "rolename": role, "acltype": "subscribePattern",
                "topic": own, "allow": true}),
            json!({"command": "addRoleACL", "rolename": role, "acltype": "publishClientReceive",
                "topic": own, "allow": true}),
        ];
        for topic in [
            topic::telemetry(&device_id.to_string()),
            topic::heartbeat(&device_id.to_string()),
        ] {
            commands.push(json!({"command": "addRoleACL", "rolename": role,
                "acltype": "publishClientSend", "topic": topic, "allow": true}));
        }
        commands
            .push(json!({"command": "createClient", "username": username, "password": password}));
        commands.push(json!({"command": "addClientRole", "username": username, "rolename": role}));
        dynsec.run_checked(commands, &[]).await
    }

    async fn set_password(
        &self,
        _: Uuid,
        username: &str,
        password: &str,
    ) -> Result<(), BrokerError> {
        // Without dynamic security the broker asks PlantOps at every
        // connect: the store alone decides.
        let Some(dynsec) = &self.dynsec else {
            return Ok(());
        };
        // Disabling a client disconnects it: sessions with the old password end.
        let commands = vec![
            json!({"command": "setClientPassword", "username": username, "password": password}),
            json!({"command": "disableClient", "username": username}),
            json!({"command": "enableClient", "username": username}),
        ];
        dynsec.run_checked(commands, &[]).await
    }

    async fn leave(&self, others_remain: bool) {
        self.link.leave(others_remain).await;
    }

    async fn remove_device(&self, device_id: Uuid, username: &str) -> Result<(), BrokerError> {
        // Without dynamic security the broker asks PlantOps at every
        // connect: the store alone decides.
        let Some(dynsec) = &self.dynsec else {
            return Ok(());
        };
        // Deleting a client disconnects it.
        let commands = vec![
            json!({"command": "deleteClient", "username": username}),
            json!({"command": "deleteRole", "rolename": device_role(device_id)}),
        ];
        dynsec.run_checked(commands, &["not found"]).await
    }
}
