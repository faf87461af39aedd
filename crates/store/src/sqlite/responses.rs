//! Stored responses in SQLite: the queries behind the `Store` methods of the same names.

use sqlx::Row;
use sqlx::sqlite::SqlitePool;

use crate::{StoreError, StoredResponse};

pub(super) async fn create(pool: &SqlitePool, r: &StoredResponse) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO responses (id, tenant_id, key_id, label, context, input, body, created_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&r.id)
    .bind(&r.tenant_id)
    .bind(&r.key_id)
    .bind(&r.label)
    .bind(&r.context)
    .bind(&r.input)
    .bind(&r.body)
    .bind(r.created_at)
    .execute(pool)
    .await?;
    Ok(())
}

pub(super) async fn get(pool: &SqlitePool, id: &str) -> Result<Option<StoredResponse>, StoreError> {
    let Some(row) = sqlx::query(
        "SELECT id, tenant_id, key_id, label, context, input, body, created_at FROM responses \
         WHERE id = ?",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?
    else {
        return Ok(None);
    };
    Ok(Some(StoredResponse {
        id: row.try_get("id")?,
        tenant_id: row.try_get("tenant_id")?,
        key_id: row.try_get("key_id")?,
        label: row.try_get("label")?,
        context: row.try_get("context")?,
        input: row.try_get("input")?,
        body: row.try_get("body")?,
        created_at: row.try_get("created_at")?,
    }))
}

pub(super) async fn delete(pool: &SqlitePool, id: &str) -> Result<bool, StoreError> {
    let gone = sqlx::query("DELETE FROM responses WHERE id = ?")
        .bind(id)
        .execute(pool)
        .await?;
    Ok(gone.rows_affected() > 0)
}
