//! Test support shared by the crates' integration tests: real databases that
//! are created for one test and dropped after it (even when it panics), and
//! free TCP ports.

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
}

/// The database goes with the test, even one that panicked: a PostgreSQL
/// database is dropped from a thread of its own, since `Drop` cannot await
/// and the test's runtime may be the one unwinding.
impl Drop for TestDb {
    fn drop(&mut self) {
        let TestDb::Postgres { name, .. } = self else {
            return;
        };
        let statement = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
        let dropping = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async {
                if let Ok(mut admin) = PgConnection::connect(&postgres_admin_url()).await {
                    let _ = admin.execute(statement.as_str()).await;
                }
            });
        });
        let _ = dropping.join();
    }
}

/// Where this process hands out ports: below the kernel's ephemeral range
/// (32768–60999 on Linux). A port from `bind(0)` lies inside it, where an
/// outgoing connection of a concurrent test may take it before the server
/// under test binds it ("already in use").
const PORTS: std::ops::Range<u16> = 20_000..32_000;

/// A TCP port nobody listens on right now, never handed out twice by this
/// process.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::OnceLock;
    static NEXT: OnceLock<AtomicU32> = OnceLock::new();
    let span = u32::from(PORTS.end - PORTS.start);
    // Each test binary starts at its own place, so two runs side by side
    // rarely walk the same ports.
    let next = NEXT.get_or_init(|| {
        let seed = std::process::id()
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
        AtomicU32::new(seed % span)
    });
    for _ in 0..span {
        let port = PORTS.start + (next.fetch_add(1, Ordering::Relaxed) % span) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {PORTS:?}");
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
            })*
        }
        mod postgres {
            $(#[tokio::test]
            async fn $name() {
                let db = $crate::TestDb::postgres().await;
                super::$name(&db).await;
            })*
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn database_exists(name: &str) -> bool {
        let mut admin = PgConnection::connect(&postgres_admin_url()).await.unwrap();
        sqlx::query_scalar::<_, bool>(
            "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)",
        )
        .bind(name)
        .fetch_one(&mut admin)
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn a_panicking_test_leaves_no_postgres_database_behind() {
        let (name_tx, name_rx) = tokio::sync::oneshot::channel();
        let test = tokio::spawn(async move {
            let db = TestDb::postgres().await;
            let TestDb::Postgres { name, .. } = &db else {
                unreachable!()
            };
            name_tx.send(name.clone()).unwrap();
            panic!("the test fails while its database exists");
        });
        assert!(test.await.unwrap_err().is_panic());
        let name = name_rx.await.unwrap();
        assert!(!database_exists(&name).await, "{name} was left behind");
    }
}
