//! Test support shared by the crates' integration tests: real databases that
//! are created for one test and dropped after it, and free TCP ports.

#![forbid(unsafe_code)]

use std::net::TcpListener;

use plantops_store::DynStore;
use sqlx::{Connection, Executor, PgConnection};

/// The PostgreSQL server tests create their databases on.
pub fn postgres_admin_url() -> String {
    std::env::var("PLANTOPS_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string())
}

/// A database that exists for one test.
pub enum TestDb {
    Sqlite { dir: tempfile::TempDir, url: String },
    Postgres { name: String, url: String },
}

impl TestDb {
    pub async fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("test.db").display());
        TestDb::Sqlite { dir, url }
    }

    pub async fn postgres() -> Self {
        let name = format!("plantops_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(&postgres_admin_url())
            .await
            .expect("PostgreSQL for tests (set PLANTOPS_TEST_POSTGRES_URL)");
        admin
            .execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .expect("create test database");
        let base = postgres_admin_url();
        let server = base.rsplit_once('/').map(|(s, _)| s).unwrap_or(&base);
        let url = format!("{server}/{name}");
        TestDb::Postgres { name, url }
    }

    pub fn url(&self) -> &str {
        match self {
            TestDb::Sqlite { url, .. } | TestDb::Postgres { url, .. } => url,
        }
    }

    /// A migrated store on this database.
    pub async fn store(&self) -> DynStore {
        let store = plantops_store::connect(self.url()).await.expect("connect");
        store.migrate().await.expect("migrate");
        store
    }

    /// Drops the database; call at the end of the test.
    pub async fn drop(self) {
        match self {
            TestDb::Sqlite { dir, .. } => drop(dir),
            TestDb::Postgres { name, .. } => {
                if let Ok(mut admin) = PgConnection::connect(&postgres_admin_url()).await {
                    let _ = admin
                        .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                        .await;
                }
            }
        }
    }
}

/// A TCP port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Defines each named `async fn(&TestDb)` test twice: `sqlite::name` and
/// `postgres::name`, each on a fresh database dropped afterwards.
#[macro_export]
macro_rules! for_each_backend {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test]
            async fn $name() {
                let db = $crate::TestDb::sqlite().await;
                super::$name(&db).await;
                db.drop().await;
            })*
        }
        mod postgres {
            $(#[tokio::test]
            async fn $name() {
                let db = $crate::TestDb::postgres().await;
                super::$name(&db).await;
                db.drop().await;
            })*
        }
    };
}
