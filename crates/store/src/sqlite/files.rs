//! Files in SQLite: the queries behind the `Store` methods of the same names. Listing and
//! reading a file's facts never load its bytes.

use sqlx::Row;
use sqlx::sqlite::SqlitePool;

use crate::rows::{file_columns, file_facts};
use crate::{StoreError, StoredFile};

pub(super) async fn create(
    pool: &SqlitePool,
    f: &StoredFile,
    content: &[u8],
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO files (id, tenant_id, key_id, purpose, filename, bytes, lines, label, sha256, \
         content, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&f.id)
    .bind(&f.tenant_id)
    .bind(&f.key_id)
    .bind(&f.purpose)
    .bind(&f.filename)
    .bind(f.bytes)
    .bind(f.lines)
    .bind(&f.label)
    .bind(&f.sha256)
    .bind(content)
    .bind(f.created_at)
    .execute(pool)
    .await?;
    Ok(())
}

pub(super) async fn get(pool: &SqlitePool, id: &str) -> Result<Option<StoredFile>, StoreError> {
    let row = sqlx::query(concat!(
        "SELECT ",
        file_columns!(),
        " FROM files WHERE id = ?"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(file_facts).transpose()
}

pub(super) async fn content(pool: &SqlitePool, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
    let row = sqlx::query("SELECT content FROM files WHERE id = ?")
        .bind(id)
        .fetch_optional(pool)
        .await?;
    Ok(row.map(|r| r.try_get("content")).transpose()?)
}

pub(super) async fn list(
    pool: &SqlitePool,
    tenant_id: &str,
) -> Result<Vec<StoredFile>, StoreError> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        file_columns!(),
        " FROM files WHERE tenant_id = ? ORDER BY created_at DESC, id DESC"
    ))
    .bind(tenant_id)
    .fetch_all(pool)
    .await?;
    rows.iter().map(file_facts).collect()
}

pub(super) async fn delete(pool: &SqlitePool, id: &str) -> Result<bool, StoreError> {
    let gone = sqlx::query("DELETE FROM files WHERE id = ?")
        .bind(id)
        .execute(pool)
        .await?;
    Ok(gone.rows_affected() > 0)
}
