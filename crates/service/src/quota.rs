//! Quotas and metering on the request path: which scopes a call falls under, the reservation it
//! holds while it runs, and the usage it leaves behind.
//!
//! Every model call reserves through [`Quotas::reserve`] and gets a [`Ticket`]; settling the
//! ticket (or dropping it, when the client left) ends the reservation and meters the usage. The
//! ledger behind it is a trait object, so moving its state to a shared store changes no caller.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use enclave_quota::{Ledger, Limits, MemoryLedger, Refusal, Reservation, Scope, ScopeKind};
use enclave_store::{Store, UsageRow};

use crate::error::Error;
use crate::policy::Policy;
use crate::principal::Principal;

/// (tenant, key, model, day) → (requests, prompt tokens, completion tokens).
type Pending = HashMap<(String, String, String, String), (u64, u64, u64)>;

/// Usage not yet written to the store, summed per tenant, key, model and day.
#[derive(Debug, Default)]
pub struct Meter {
    pending: Mutex<Pending>,
}

impl Meter {
    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn add(&self, tenant: &str, key: &str, model: &str, prompt: u64, completion: u64) {
        let key = (
            tenant.to_string(),
            key.to_string(),
            model.to_string(),
            today(),
        );
        let mut map = self.lock();
        let e = map.entry(key).or_default();
        e.0 += 1;
        e.1 += prompt;
        e.2 += completion;
    }

    /// Writes what has accumulated; on failure puts it back for the next flush.
    pub async fn flush(&self, store: &dyn Store) -> Result<(), enclave_store::StoreError> {
        let taken = std::mem::take(&mut *self.lock());
        if taken.is_empty() {
            return Ok(());
        }
        let rows: Vec<UsageRow> = taken
            .iter()
            .map(|((tenant, key_id, model, day), (r, p, c))| UsageRow {
                tenant: tenant.clone(),
                key_id: key_id.clone(),
                model: model.clone(),
                day: day.clone(),
                requests: *r,
                prompt_tokens: *p,
                completion_tokens: *c,
            })
            .collect();
        if let Err(e) = store.add_usage(&rows).await {
            let mut map = self.lock();
            for (k, (r, p, c)) in taken {
                let e = map.entry(k).or_default();
                e.0 += r;
                e.1 += p;
                e.2 += c;
            }
            return Err(e);
        }
        Ok(())
    }
}

/// Today, UTC, as `YYYY-MM-DD`.
pub fn today() -> String {
    let d = time::OffsetDateTime::now_utc().date();
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

/// The ledger and the meter.
#[derive(Clone)]
pub struct Quotas {
    ledger: Arc<dyn Ledger>,
    pub meter: Arc<Meter>,
}

impl std::fmt::Debug for Quotas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Quotas").finish_non_exhaustive()
    }
}

impl Default for Quotas {
    fn default() -> Self {
        Self::new(Arc::new(MemoryLedger::new()))
    }
}

impl Quotas {
    pub fn new(ledger: Arc<dyn Ledger>) -> Self {
        Self {
            ledger,
            meter: Arc::new(Meter::default()),
        }
    }

    /// An in-memory ledger that starts the month with the usage already in the store, so a
    /// restart does not hand out a budget twice.
    pub async fn load(store: &dyn Store) -> Result<Self, enclave_store::StoreError> {
        let now = time::OffsetDateTime::now_utc();
        let from = format!("{:04}-{:02}-01", now.year(), u8::from(now.month()));
        let rows = store.usage(None, &from, "9999-12-31").await?;
        let mut ledger = MemoryLedger::new();
        let mut sums: HashMap<(ScopeKind, String), u64> = HashMap::new();
        for r in rows {
            let t = r.prompt_tokens + r.completion_tokens;
            *sums
                .entry((ScopeKind::Tenant, r.tenant.clone()))
                .or_default() += t;
            *sums.entry((ScopeKind::Key, r.key_id.clone())).or_default() += t;
            *sums
                .entry((ScopeKind::Model, format!("{}/{}", r.tenant, r.model)))
                .or_default() += t;
        }
        for ((kind, name), tokens) in sums {
            ledger.seed_month(kind, &name, tokens);
        }
        Ok(Self::new(Arc::new(ledger)))
    }

    /// Reserves a call of `principal` to `model` that may use up to `tokens`.
    pub async fn reserve(
        &self,
        policy: &Policy,
        principal: &Principal,
        model: &str,
        tokens: u64,
    ) -> Result<Ticket, Error> {
        let q = policy.quota(&principal.tenant_name);
        let mut scopes = Vec::with_capacity(3);
        let mut add = |kind, name: String, limits: Limits| {
            if !limits.is_unlimited() {
                scopes.push(Scope::new(kind, name, limits));
            }
        };
        add(ScopeKind::Tenant, principal.tenant_name.clone(), q.tenant);
        add(ScopeKind::Key, principal.key_id.clone(), q.key);
        if let Some(m) = q.models.get(model) {
            add(
                ScopeKind::Model,
                format!("{}/{model}", principal.tenant_name),
                *m,
            );
        }
        let reservation = if scopes.is_empty() {
            None
        } else {
            match self.ledger.reserve(&scopes, tokens).await {
                Ok(r) => Some(r),
                Err(Refusal::Unavailable(why)) => {
                    tracing::error!(error = %why, "the quota ledger is unavailable; refusing the call");
                    return Err(Error::QuotaUnavailable);
                }
                Err(Refusal::Exceeded(e)) => {
                    metrics::counter!("enclave_quota_rejections_total", "scope" => e.kind.as_str(), "limit" => e.limit.key())
                        .increment(1);
                    let code = match e.limit {
                        enclave_quota::Limit::MonthlyTokens => "insufficient_quota",
                        _ => "rate_limit_exceeded",
                    };
                    return Err(Error::QuotaExceeded {
                        code,
                        message: e.to_string(),
                        retry_after: e.retry_after.max(Duration::from_secs(1)),
                    });
                }
            }
        };
        Ok(Ticket {
            ledger: Arc::clone(&self.ledger),
            meter: Arc::clone(&self.meter),
            reservation,
            tenant: principal.tenant_name.clone(),
            key: principal.key_id.clone(),
            model: model.to_string(),
            settled: false,
        })
    }
}

/// A call's hold on its quotas. Settle it with what the call used; dropped unsettled (the
/// client left, the call failed before an answer), it charges the reservation in full, since
/// what the upstream spent is unknown.
pub struct Ticket {
    ledger: Arc<dyn Ledger>,
    meter: Arc<Meter>,
    reservation: Option<Reservation>,
    tenant: String,
    key: String,
    model: String,
    settled: bool,
}

impl Ticket {
    pub async fn settle(mut self, prompt: u32, completion: u32) {
        self.settled = true;
        let (p, c) = (u64::from(prompt), u64::from(completion));
        self.meter.add(&self.tenant, &self.key, &self.model, p, c);
        if let Some(r) = self.reservation.take() {
            self.ledger.settle(r, p + c).await;
        }
    }

    /// Keeps the ticket for a call that was served; releases it (nothing charged) when the call
    /// was refused before anything was generated.
    pub async fn unless_refused<T>(self, served: Result<T, Error>) -> Result<(T, Self), Error> {
        match served {
            Ok(t) => Ok((t, self)),
            Err(e) => {
                self.release().await;
                Err(e)
            }
        }
    }

    /// Ends a call that used nothing (the backend refused before generating).
    pub async fn release(mut self) {
        self.settled = true;
        self.meter.add(&self.tenant, &self.key, &self.model, 0, 0);
        if let Some(r) = self.reservation.take() {
            self.ledger.settle(r, 0).await;
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let charged = self.reservation.as_ref().map_or(0, Reservation::tokens);
        self.meter
            .add(&self.tenant, &self.key, &self.model, 0, charged);
        if let Some(r) = self.reservation.take()
            && let Ok(handle) = tokio::runtime::Handle::try_current()
        {
            let ledger = Arc::clone(&self.ledger);
            handle.spawn(async move { ledger.settle(r, charged).await });
        }
    }
}
