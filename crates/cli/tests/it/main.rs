//! The `plantops` binary driven from outside, in one test binary (one link
//! of the whole program instead of one per area): processes started as a
//! user starts them, driven over HTTP and MQTT, with real PostgreSQL,
//! Mosquitto, nginx and local stand-ins for Discord and the LLM providers.

mod advisor;
mod alerts;
mod backup;
mod broker_auth;
mod care;
mod channels;
mod cluster;
mod common;
mod deploy;
mod faults;
mod history;
mod home_assistant;
mod http_limits;
mod monitoring;
mod mosquitto;
mod packaging;
mod production;
mod serve;
mod simulate;
