//! Caring for plants: the advisor's care plans and health checks.

pub mod advisor;
