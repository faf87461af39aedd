//! The audit log's records on PostgreSQL: the one log every server sharing the database
//! appends to ([`enclave_audit::log::Storage`] for a shared store). A batch is one transaction:
//! lock the head row, read what other servers appended since this server's last record, insert
//! the batch at the indices after the head, move the head, commit. Acknowledgements follow the
//! commit, so a record is acknowledged only when durable and indices have no gap or repeat.
//!
//! The audit writer is a plain thread; this store drives its queries on a runtime of its own
//! (from a helper thread when it is called inside another runtime, as at start-up).

use std::io;

use sqlx::Row;
use sqlx::postgres::{PgPool, PgPoolOptions};

/// The audit log's records in a PostgreSQL database.
pub struct PgAuditStorage {
    /// Always present until dropped (taken to shut it down without blocking).
    runtime: Option<tokio::runtime::Runtime>,
    pool: PgPool,
}

impl Drop for PgAuditStorage {
    fn drop(&mut self) {
        // May be dropped inside another runtime (a CLI export): never block there.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl std::fmt::Debug for PgAuditStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgAuditStorage").finish_non_exhaustive()
    }
}

fn io_error(e: sqlx::Error) -> io::Error {
    io::Error::other(e.to_string())
}

impl PgAuditStorage {
    /// Connects to the database at `url` (its migrations already applied by [`super::PgStore`]).
    pub fn connect(url: &str) -> io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let url = url.to_string();
        let pool = Self::block(&runtime, async move {
            PgPoolOptions::new()
                .max_connections(2)
                .connect(&url)
                .await
                .map_err(io_error)
        })?;
        Ok(Self {
            runtime: Some(runtime),
            pool,
        })
    }

    /// Runs `work` to completion on this store's runtime.
    fn block<T: Send>(
        runtime: &tokio::runtime::Runtime,
        work: impl Future<Output = io::Result<T>> + Send,
    ) -> io::Result<T> {
        if tokio::runtime::Handle::try_current().is_err() {
            return runtime.block_on(work);
        }
        // Inside another runtime (start-up runs in one): block on a thread of its own.
        std::thread::scope(|s| {
            s.spawn(|| runtime.block_on(work))
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("the audit store's thread panicked")))
        })
    }

    fn run<T: Send>(&self, work: impl Future<Output = io::Result<T>> + Send) -> io::Result<T> {
        match &self.runtime {
            Some(runtime) => Self::block(runtime, work),
            None => Err(io::Error::other("the audit store is closed")),
        }
    }
}

impl enclave_audit::log::Storage for PgAuditStorage {
    fn append(&mut self, _: &[u8]) -> io::Result<()> {
        Err(io::Error::other("the shared audit log takes whole records"))
    }

    fn sync(&mut self) -> io::Result<()> {
        Ok(())
    }

    fn read_all(&mut self) -> io::Result<Vec<u8>> {
        Err(io::Error::other("the shared audit log is read as records"))
    }

    fn truncate(&mut self, _: u64) -> io::Result<()> {
        Err(io::Error::other("the shared audit log is never cut"))
    }

    fn shared(&self) -> bool {
        true
    }

    fn append_records(&mut self, known: u64, records: &[Vec<u8>]) -> io::Result<Vec<Vec<u8>>> {
        let pool = &self.pool;
        let known = i64::try_from(known).map_err(io::Error::other)?;
        let count = i64::try_from(records.len()).map_err(io::Error::other)?;
        self.run(async move {
            let mut tx = pool.begin().await.map_err(io_error)?;
            let size: i64 = sqlx::query("SELECT size FROM audit_head FOR UPDATE")
                .fetch_one(&mut *tx)
                .await
                .and_then(|r| r.try_get("size"))
                .map_err(io_error)?;
            let others: Vec<Vec<u8>> = sqlx::query(
                "SELECT body FROM audit_records WHERE idx >= $1 AND idx < $2 ORDER BY idx",
            )
            .bind(known)
            .bind(size)
            .fetch_all(&mut *tx)
            .await
            .map_err(io_error)?
            .iter()
            .map(|r| r.try_get("body"))
            .collect::<Result<_, _>>()
            .map_err(io_error)?;
            let indices: Vec<i64> = (size..size + count).collect();
            sqlx::query("INSERT INTO audit_records (idx, body) SELECT * FROM UNNEST($1::BIGINT[], $2::BYTEA[])")
                .bind(&indices)
                .bind(records)
                .execute(&mut *tx)
                .await
                .map_err(io_error)?;
            sqlx::query("UPDATE audit_head SET size = $1")
                .bind(size + count)
                .execute(&mut *tx)
                .await
                .map_err(io_error)?;
            tx.commit().await.map_err(io_error)?;
            Ok(others)
        })
    }

    fn records_since(&mut self, from: u64) -> io::Result<Vec<Vec<u8>>> {
        let pool = &self.pool;
        let from = i64::try_from(from).map_err(io::Error::other)?;
        self.run(async move {
            sqlx::query("SELECT body FROM audit_records WHERE idx >= $1 ORDER BY idx")
                .bind(from)
                .fetch_all(pool)
                .await
                .map_err(io_error)?
                .iter()
                .map(|r| r.try_get("body"))
                .collect::<Result<_, _>>()
                .map_err(io_error)
        })
    }
}

impl super::PgStore {
    /// Records `public_key` as the platform's audit verifier key if none is yet, and checks that
    /// it is the one recorded: every server must sign checkpoints with the same key.
    pub async fn claim_audit_key(&self, public_key: &str) -> Result<(), crate::StoreError> {
        sqlx::query("UPDATE audit_head SET public_key = $1 WHERE public_key IS NULL")
            .bind(public_key)
            .execute(&self.pool)
            .await?;
        let recorded: Option<String> = sqlx::query("SELECT public_key FROM audit_head")
            .fetch_one(&self.pool)
            .await?
            .try_get("public_key")?;
        match recorded {
            Some(k) if k == public_key => Ok(()),
            other => Err(crate::StoreError::Conflict(format!(
                "this server's audit key ({public_key}) is not the platform's ({}): copy `audit/log.key` from a server already serving into this server's data directory",
                other.unwrap_or_default()
            ))),
        }
    }
}
