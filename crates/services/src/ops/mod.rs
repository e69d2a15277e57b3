//! Keeping an installation running: backups, hourly rollups and retention,
//! the jobs only one instance runs, and the supervision of background tasks.

pub mod backups;
pub mod cluster;
pub mod retention;
pub mod rollups;
pub mod supervise;
