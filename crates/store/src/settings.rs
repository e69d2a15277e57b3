//! Settings (sealed values are sealed by the caller): the SQL is the same on both backends, so it
//! is written once here, one block for the aggregate (like `accounts.rs`).

/// Implements [`crate::SettingStore`] for a backend whose pool is `self.pool`.
macro_rules! setting_store {
    ($store:ty, $db:ty) => {
        #[async_trait::async_trait]
        impl $crate::SettingStore for $store {
            async fn get_setting(&self, key: &str) -> $crate::Result<Option<String>> {
                Ok(
                    sqlx::query_scalar("SELECT value FROM settings WHERE key = $1")
                        .bind(key)
                        .fetch_optional(&self.pool)
                        .await?,
                )
            }

            async fn put_settings(&self, changes: &[(&str, Option<&str>)]) -> $crate::Result<()> {
                $crate::ChannelStore::put_sealed(self, changes, &[]).await
            }
        }
    };
}

pub(crate) use setting_store;
