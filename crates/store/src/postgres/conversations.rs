//! Conversations in PostgreSQL: the queries behind the `Store` methods of the same names.

use sqlx::Row;
use sqlx::postgres::PgPool;

use crate::rows::{conversation_query, conversation_row};
use crate::{Conversation, ConversationMessage, StoreError};

pub(super) async fn create(pool: &PgPool, c: &Conversation) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO conversations (id, tenant_id, owner, title, label, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&c.id)
    .bind(&c.tenant_id)
    .bind(&c.owner)
    .bind(&c.title)
    .bind(&c.label)
    .bind(c.created_at)
    .bind(c.updated_at)
    .execute(pool)
    .await?;
    Ok(())
}

pub(super) async fn get(pool: &PgPool, id: &str) -> Result<Option<Conversation>, StoreError> {
    sqlx::query(conversation_query!("WHERE id = $1"))
        .bind(id)
        .fetch_optional(pool)
        .await?
        .as_ref()
        .map(conversation_row)
        .transpose()
}

pub(super) async fn list(
    pool: &PgPool,
    tenant_id: &str,
    owner: &str,
) -> Result<Vec<Conversation>, StoreError> {
    let rows = sqlx::query(conversation_query!(
        "WHERE tenant_id = $1 AND owner = $2 ORDER BY updated_at DESC, id DESC"
    ))
    .bind(tenant_id)
    .bind(owner)
    .fetch_all(pool)
    .await?;
    rows.iter().map(conversation_row).collect()
}

pub(super) async fn messages(
    pool: &PgPool,
    id: &str,
) -> Result<Vec<ConversationMessage>, StoreError> {
    let rows = sqlx::query(
        "SELECT seq, role, content, label, citations, created_at FROM conversation_messages \
         WHERE conversation_id = $1 ORDER BY seq",
    )
    .bind(id)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(ConversationMessage {
                seq: row.try_get("seq")?,
                role: row.try_get("role")?,
                content: row.try_get("content")?,
                label: row.try_get("label")?,
                citations: row.try_get("citations")?,
                created_at: row.try_get("created_at")?,
            })
        })
        .collect()
}

pub(super) async fn append(
    pool: &PgPool,
    id: &str,
    (seen, label): (&str, &str),
    title: &str,
    messages: &[ConversationMessage],
    at: i64,
) -> Result<bool, StoreError> {
    let mut tx = pool.begin().await?;
    // The label is compared and set first: the update takes the write lock, so the sequence
    // numbers read below cannot be taken by another append before this one commits.
    let updated = sqlx::query(
        "UPDATE conversations SET label = $1, updated_at = $2, \
         title = CASE WHEN title = '' THEN $3 ELSE title END WHERE id = $4 AND label = $5",
    )
    .bind(label)
    .bind(at)
    .bind(title)
    .bind(id)
    .bind(seen)
    .execute(&mut *tx)
    .await?;
    if updated.rows_affected() == 0 {
        // Rolled back now, not when the connection is next used: until then it would hold the
        // write lock and make the next writer wait.
        tx.rollback().await?;
        return Ok(false);
    }
    let next: i64 = sqlx::query(
        "SELECT COALESCE(MAX(seq) + 1, 0) AS next FROM conversation_messages WHERE conversation_id = $1",
    )
    .bind(id)
    .fetch_one(&mut *tx)
    .await?
    .try_get("next")?;
    for (seq, m) in (next..).zip(messages) {
        sqlx::query(
            "INSERT INTO conversation_messages (conversation_id, seq, role, content, label, citations, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(id)
        .bind(seq)
        .bind(&m.role)
        .bind(&m.content)
        .bind(&m.label)
        .bind(&m.citations)
        .bind(m.created_at)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(true)
}

pub(super) async fn delete(pool: &PgPool, id: &str) -> Result<bool, StoreError> {
    let mut tx = pool.begin().await?;
    sqlx::query("DELETE FROM conversation_messages WHERE conversation_id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    let gone = sqlx::query("DELETE FROM conversations WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(gone.rows_affected() > 0)
}
