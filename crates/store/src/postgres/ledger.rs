//! The quota ledger on PostgreSQL: one ledger for every server sharing the database, exact
//! across them. A reservation is one transaction that locks its scopes' counter rows (in one
//! order, so transactions never deadlock), applies `enclave_quota`'s own rules to them
//! ([`Counters::check`], [`Counters::take`], [`Counters::give_back`]: the same arithmetic as the
//! in-memory ledger), and records the reservation; settling deletes the reservation and gives
//! back what was not used. A reservation whose server died is reclaimed once it expires,
//! charged in full (as an abandoned call is in memory).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use enclave_quota::{Clock, Counters, Ledger, Moment, Refusal, Reservation, Scope};
use sqlx::Row;
use sqlx::postgres::PgPool;
use time::OffsetDateTime;

/// How long a reservation may stay unsettled before it counts as abandoned.
pub const DEFAULT_HOLD: Duration = Duration::from_secs(30 * 60);

/// How often one server looks for abandoned reservations at most.
const SWEEP_EVERY: i64 = 1;

/// The quota ledger in a PostgreSQL database.
#[derive(Clone)]
pub struct PgLedger {
    pool: PgPool,
    clock: Clock,
    hold: Duration,
    last_sweep: Arc<Mutex<i64>>,
}

impl std::fmt::Debug for PgLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgLedger")
            .field("hold", &self.hold)
            .finish_non_exhaustive()
    }
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn counters(row: &sqlx::postgres::PgRow) -> Result<(String, Counters), sqlx::Error> {
    Ok((
        row.try_get("scope")?,
        Counters {
            minute: to_u64(row.try_get("minute")?),
            requests: [
                to_u64(row.try_get("requests_prev")?),
                to_u64(row.try_get("requests_cur")?),
            ],
            tokens: [
                to_u64(row.try_get("tokens_prev")?),
                to_u64(row.try_get("tokens_cur")?),
            ],
            month: row.try_get("month")?,
            month_tokens: to_u64(row.try_get("month_tokens")?),
            inflight: to_u64(row.try_get("inflight")?),
        },
    ))
}

/// Reads and locks the counters of `ids` (sorted), in one order.
async fn lock(
    tx: &mut sqlx::PgConnection,
    ids: &[String],
) -> Result<Vec<(String, Counters)>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT scope, minute, requests_prev, requests_cur, tokens_prev, tokens_cur, month, \
         month_tokens, inflight FROM quota_counters WHERE scope = ANY($1) ORDER BY scope FOR UPDATE",
    )
    .bind(ids)
    .fetch_all(&mut *tx)
    .await?;
    rows.iter().map(counters).collect()
}

async fn write(tx: &mut sqlx::PgConnection, id: &str, c: &Counters) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE quota_counters SET minute = $2, requests_prev = $3, requests_cur = $4, \
         tokens_prev = $5, tokens_cur = $6, month = $7, month_tokens = $8, inflight = $9 \
         WHERE scope = $1",
    )
    .bind(id)
    .bind(to_i64(c.minute))
    .bind(to_i64(c.requests[0]))
    .bind(to_i64(c.requests[1]))
    .bind(to_i64(c.tokens[0]))
    .bind(to_i64(c.tokens[1]))
    .bind(c.month)
    .bind(to_i64(c.month_tokens))
    .bind(to_i64(c.inflight))
    .execute(&mut *tx)
    .await?;
    Ok(())
}

enum Failed {
    Exceeded(enclave_quota::Exceeded),
    Db(sqlx::Error),
}

impl From<sqlx::Error> for Failed {
    fn from(e: sqlx::Error) -> Self {
        Failed::Db(e)
    }
}

impl PgLedger {
    /// The ledger in `store`'s database, on the real clock.
    pub fn new(store: &super::PgStore) -> Self {
        Self {
            pool: store.pool.clone(),
            clock: Arc::new(OffsetDateTime::now_utc),
            hold: DEFAULT_HOLD,
            last_sweep: Arc::new(Mutex::new(0)),
        }
    }

    /// Reads time from `clock` (tests).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Counts a reservation as abandoned after `hold` unsettled.
    pub fn with_hold(mut self, hold: Duration) -> Self {
        self.hold = hold;
        self
    }

    /// Tokens used or reserved this month in the scope `id` ([`Scope::id`]), for tests and
    /// diagnostics.
    pub async fn month_tokens(&self, id: &str) -> Result<u64, crate::StoreError> {
        let row = sqlx::query("SELECT month_tokens FROM quota_counters WHERE scope = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(r) => to_u64(r.try_get("month_tokens")?),
            None => 0,
        })
    }

    async fn try_reserve(&self, scopes: &[Scope], tokens: u64) -> Result<Reservation, Failed> {
        let now = (self.clock)();
        let at = Moment::at(now);
        let ids: Vec<String> = scopes.iter().map(Scope::id).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        sorted.dedup();
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO quota_counters (scope, minute, requests_prev, requests_cur, tokens_prev, \
             tokens_cur, month, month_tokens, inflight) \
             SELECT s, $2, 0, 0, 0, 0, $3, 0, 0 FROM UNNEST($1::TEXT[]) AS s \
             ON CONFLICT (scope) DO NOTHING",
        )
        .bind(&sorted)
        .bind(to_i64(at.minute))
        .bind(at.month)
        .execute(&mut *tx)
        .await?;
        let mut locked = lock(&mut tx, &sorted).await?;
        for (_, c) in &mut locked {
            c.roll(at.minute, at.month, 0);
        }
        // Every scope is checked before any is changed: admitted everywhere or nowhere.
        for s in scopes {
            let id = s.id();
            if let Some((_, c)) = locked.iter().find(|(i, _)| *i == id)
                && let Err(e) = c.check(s, tokens, &at)
            {
                tx.rollback().await?;
                return Err(Failed::Exceeded(e));
            }
        }
        for s in scopes {
            let id = s.id();
            if let Some((_, c)) = locked.iter_mut().find(|(i, _)| *i == id) {
                c.take(tokens);
            }
        }
        for (id, c) in &locked {
            write(&mut tx, id, c).await?;
        }
        let handle = uuid::Uuid::now_v7().simple().to_string();
        let expires =
            now.unix_timestamp() + i64::try_from(self.hold.as_secs()).unwrap_or(i64::MAX / 2);
        sqlx::query(
            "INSERT INTO quota_reservations (id, scopes, tokens, minute, month, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&handle)
        .bind(&ids)
        .bind(to_i64(tokens))
        .bind(to_i64(at.minute))
        .bind(at.month)
        .bind(expires)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Reservation::new(ids, tokens, at.minute, at.month).with_handle(handle))
    }

    /// Ends reservation `r` with `used` tokens; nothing when it was already ended (reclaimed).
    async fn try_settle(&self, r: &Reservation, used: u64) -> Result<(), sqlx::Error> {
        let Some(handle) = r.handle() else {
            return Ok(());
        };
        let mut tx = self.pool.begin().await?;
        let gone = sqlx::query("DELETE FROM quota_reservations WHERE id = $1")
            .bind(handle)
            .execute(&mut *tx)
            .await?;
        if gone.rows_affected() == 0 {
            tx.rollback().await?;
            return Ok(());
        }
        let mut sorted = r.scopes().to_vec();
        sorted.sort();
        sorted.dedup();
        let mut locked = lock(&mut tx, &sorted).await?;
        for id in r.scopes() {
            if let Some((_, c)) = locked.iter_mut().find(|(i, _)| i == id) {
                c.give_back(r, used);
            }
        }
        for (id, c) in &locked {
            write(&mut tx, id, c).await?;
        }
        tx.commit().await
    }

    /// Ends the reservations that expired unsettled (their server died), charged in full. At
    /// most once a second per server; servers racing end each one once.
    async fn reclaim(&self) -> Result<(), sqlx::Error> {
        let now = (self.clock)().unix_timestamp();
        {
            let mut last = self.last_sweep.lock().unwrap_or_else(|p| p.into_inner());
            if now - *last < SWEEP_EVERY {
                return Ok(());
            }
            *last = now;
        }
        let rows = sqlx::query(
            "SELECT id, scopes, tokens, minute, month FROM quota_reservations \
             WHERE expires_at < $1 ORDER BY expires_at LIMIT 100",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        for row in rows {
            let r = Reservation::new(
                row.try_get("scopes")?,
                to_u64(row.try_get("tokens")?),
                to_u64(row.try_get("minute")?),
                row.try_get("month")?,
            )
            .with_handle(row.try_get("id")?);
            tracing::warn!(
                reservation = r.handle().unwrap_or_default(),
                tokens = r.tokens(),
                "reclaiming a quota reservation left unsettled past its hold (its server stopped?)"
            );
            self.try_settle(&r, r.tokens()).await?;
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Ledger for PgLedger {
    async fn reserve(&self, scopes: &[Scope], tokens: u64) -> Result<Reservation, Refusal> {
        if let Err(e) = self.reclaim().await {
            tracing::warn!(error = %e, "cannot reclaim abandoned quota reservations");
        }
        match self.try_reserve(scopes, tokens).await {
            Ok(r) => Ok(r),
            Err(Failed::Exceeded(e)) => Err(Refusal::Exceeded(e)),
            Err(Failed::Db(e)) => Err(Refusal::Unavailable(e.to_string())),
        }
    }

    async fn settle(&self, reservation: Reservation, used_tokens: u64) {
        if let Err(e) = self.try_settle(&reservation, used_tokens).await {
            // Not lost: the reservation stays recorded and is reclaimed (charged in full) when
            // its hold ends.
            tracing::error!(error = %e, "cannot settle a quota reservation; it will be reclaimed");
        }
    }
}
