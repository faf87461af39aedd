//! Quotas: requests per minute, tokens per minute, a monthly token budget and concurrent
//! requests, for every scope (tenant, key, model) by one reserve-and-settle path.
//!
//! A request *reserves* its worst case (prompt estimate + `max_tokens`) in every scope it falls
//! under, all or none, under one comparison rule ([`fits`]); when it finishes it *settles* the
//! reservation to what it really used. Concurrent requests therefore cannot overspend a limit by
//! more than one request's misestimate. Callers see only the [`Ledger`] trait, so the
//! single-node [`MemoryLedger`] can be replaced by one on a shared store without changing them.
//!
//! This crate must never admit a request some scope's limit refuses, nor hold a reservation that
//! nobody settles (callers settle on drop).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// The limits of one scope; `None` is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    pub requests_per_minute: Option<u64>,
    pub tokens_per_minute: Option<u64>,
    /// Tokens in and out per calendar month (UTC).
    pub monthly_tokens: Option<u64>,
    /// Requests in flight at once.
    pub concurrency: Option<u64>,
}

impl Limits {
    pub fn is_unlimited(&self) -> bool {
        *self == Limits::default()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScopeKind {
    Tenant,
    Key,
    Model,
}

impl ScopeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ScopeKind::Tenant => "tenant",
            ScopeKind::Key => "key",
            ScopeKind::Model => "model",
        }
    }
}

/// One scope a request falls under. `id` is unique across kinds (`tenant:NAME`, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    pub kind: ScopeKind,
    /// What to call it in a message: the tenant's name, the key's id, `tenant/model`.
    pub name: String,
    pub limits: Limits,
}

impl Scope {
    pub fn new(kind: ScopeKind, name: impl Into<String>, limits: Limits) -> Self {
        Self {
            kind,
            name: name.into(),
            limits,
        }
    }

    /// The scope's key in a ledger: unique across kinds (`tenant:NAME`, `key:ID`, ...).
    pub fn id(&self) -> String {
        format!("{}:{}", self.kind.as_str(), self.name)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    RequestsPerMinute,
    TokensPerMinute,
    MonthlyTokens,
    Concurrency,
}

impl Limit {
    /// The limit's name in configuration and metrics.
    pub fn key(self) -> &'static str {
        match self {
            Limit::RequestsPerMinute => "requests_per_minute",
            Limit::TokensPerMinute => "tokens_per_minute",
            Limit::MonthlyTokens => "monthly_tokens",
            Limit::Concurrency => "concurrency",
        }
    }

    /// The limit in words, for messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Limit::RequestsPerMinute => "requests per minute",
            Limit::TokensPerMinute => "tokens per minute",
            Limit::MonthlyTokens => "tokens this month",
            Limit::Concurrency => "concurrent requests",
        }
    }
}

/// A refusal: which scope, which limit, and when to come back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exceeded {
    pub kind: ScopeKind,
    pub name: String,
    pub limit: Limit,
    pub allowed: u64,
    /// Already used or reserved.
    pub used: u64,
    /// What this request asked for.
    pub asked: u64,
    pub retry_after: Duration,
}

impl fmt::Display for Exceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.limit {
            Limit::RequestsPerMinute | Limit::Concurrency => String::new(),
            _ => format!(" (this request may use up to {})", self.asked),
        };
        write!(
            f,
            "{} `{}` has used {} of its {} {}{what}",
            self.kind.as_str(),
            self.name,
            self.used,
            self.allowed,
            self.limit.as_str()
        )?;
        if self.asked > self.allowed {
            write!(
                f,
                "; this request alone exceeds the limit: lower `max_tokens`"
            )
        } else {
            write!(f, "; retry in {} s", self.retry_after.as_secs().max(1))
        }
    }
}

impl std::error::Error for Exceeded {}

/// Why a ledger did not admit a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// A limit refuses it.
    Exceeded(Exceeded),
    /// The ledger cannot be read or written (a shared ledger's database is down): nothing is
    /// admitted while it is, since nothing could be counted.
    Unavailable(String),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Exceeded(e) => e.fmt(f),
            Refusal::Unavailable(why) => write!(f, "the quota ledger is unavailable: {why}"),
        }
    }
}

impl std::error::Error for Refusal {}

impl From<Exceeded> for Refusal {
    fn from(e: Exceeded) -> Self {
        Refusal::Exceeded(e)
    }
}

/// A reservation to settle: which scopes, how many tokens, in which minute and month; a shared
/// ledger adds the handle it keeps the reservation under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    scopes: Vec<String>,
    tokens: u64,
    minute: u64,
    month: i64,
    handle: Option<String>,
}

impl Reservation {
    pub fn new(scopes: Vec<String>, tokens: u64, minute: u64, month: i64) -> Self {
        Self {
            scopes,
            tokens,
            minute,
            month,
            handle: None,
        }
    }

    /// The same reservation, kept by its ledger under `handle`.
    pub fn with_handle(mut self, handle: String) -> Self {
        self.handle = Some(handle);
        self
    }

    /// The tokens reserved.
    pub fn tokens(&self) -> u64 {
        self.tokens
    }

    /// The ids of the scopes it holds ([`Scope::id`]).
    pub fn scopes(&self) -> &[String] {
        &self.scopes
    }

    /// The minute (Unix minutes) it was taken in.
    pub fn minute(&self) -> u64 {
        self.minute
    }

    /// The month (years × 12 + month − 1) it was taken in.
    pub fn month(&self) -> i64 {
        self.month
    }

    pub fn handle(&self) -> Option<&str> {
        self.handle.as_deref()
    }
}

/// The one comparison rule of every limit: what is used or reserved, plus what is asked, must
/// not exceed the limit.
pub fn fits(used: u64, asked: u64, limit: Option<u64>) -> bool {
    limit.is_none_or(|l| used.saturating_add(asked) <= l)
}

/// Where quota state lives.
#[async_trait::async_trait]
pub trait Ledger: Send + Sync + 'static {
    /// Reserves one request and `tokens` in every scope, or nothing if any limit refuses (or
    /// the ledger cannot count).
    async fn reserve(&self, scopes: &[Scope], tokens: u64) -> Result<Reservation, Refusal>;
    /// Replaces the reservation's tokens by what the request used, and ends it.
    async fn settle(&self, reservation: Reservation, used_tokens: u64);
}

/// Time for the ledger: the real clock, or a test's.
pub type Clock = Arc<dyn Fn() -> OffsetDateTime + Send + Sync>;

/// Counters of one scope: a sliding minute from the previous and current whole minutes, the
/// month so far, and requests in flight. Every ledger keeps these per scope and changes them
/// only through [`Counters::check`], [`Counters::take`] and [`Counters::give_back`], so a
/// shared ledger admits exactly what this process's would.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Counters {
    pub minute: u64,
    /// [previous minute, current minute]
    pub requests: [u64; 2],
    pub tokens: [u64; 2],
    pub month: i64,
    pub month_tokens: u64,
    pub inflight: u64,
}

/// When a reservation is asked for: the minute, how far into it, the month, and how long until
/// the next minute and month.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Moment {
    pub minute: u64,
    /// The share of the minute gone, 0 to 1.
    pub into: f64,
    pub month: i64,
    pub to_next_minute: Duration,
    pub to_next_month: Duration,
}

impl Moment {
    pub fn at(now: OffsetDateTime) -> Self {
        let secs = now.unix_timestamp().max(0) as u64;
        Self {
            minute: secs / 60,
            into: (secs % 60) as f64 / 60.0 + f64::from(now.nanosecond()) / 60e9,
            month: month_index(now),
            to_next_minute: Duration::from_secs(60 - secs % 60),
            to_next_month: until_next_month(now),
        }
    }
}

impl Counters {
    /// A scope's counters first seen at `minute` of `month`, `seed` tokens already used in it.
    pub fn new(minute: u64, month: i64, seed: u64) -> Self {
        Self {
            minute,
            month,
            month_tokens: seed,
            ..Self::default()
        }
    }

    /// Moves the counters to `minute` and `month` (a new month starts at `seed`).
    pub fn roll(&mut self, minute: u64, month: i64, seed: u64) {
        if minute != self.minute {
            let (r, t) = if minute == self.minute + 1 {
                (self.requests[1], self.tokens[1])
            } else {
                (0, 0)
            };
            self.requests = [r, 0];
            self.tokens = [t, 0];
            self.minute = minute;
        }
        if month != self.month {
            self.month = month;
            self.month_tokens = seed;
        }
    }

    /// The sliding-minute estimate: all of this minute, and of the previous minute the share
    /// that still lies within the last 60 seconds.
    fn window(pair: [u64; 2], into_minute: f64) -> u64 {
        pair[1] + (pair[0] as f64 * (1.0 - into_minute)).ceil() as u64
    }

    /// Whether one more request of `tokens` fits every limit of `scope` (counters rolled to
    /// `at` first).
    pub fn check(&self, scope: &Scope, tokens: u64, at: &Moment) -> Result<(), Exceeded> {
        let checks = [
            (
                Limit::RequestsPerMinute,
                scope.limits.requests_per_minute,
                Self::window(self.requests, at.into),
                1,
                at.to_next_minute,
            ),
            (
                Limit::TokensPerMinute,
                scope.limits.tokens_per_minute,
                Self::window(self.tokens, at.into),
                tokens,
                at.to_next_minute,
            ),
            (
                Limit::MonthlyTokens,
                scope.limits.monthly_tokens,
                self.month_tokens,
                tokens,
                at.to_next_month,
            ),
            (
                Limit::Concurrency,
                scope.limits.concurrency,
                self.inflight,
                1,
                Duration::from_secs(1),
            ),
        ];
        for (limit, allowed, used, asked, retry_after) in checks {
            if !fits(used, asked, allowed) {
                return Err(Exceeded {
                    kind: scope.kind,
                    name: scope.name.clone(),
                    limit,
                    allowed: allowed.unwrap_or(u64::MAX),
                    used,
                    asked,
                    retry_after,
                });
            }
        }
        Ok(())
    }

    /// Counts one request of `tokens` in.
    pub fn take(&mut self, tokens: u64) {
        self.requests[1] += 1;
        self.tokens[1] = self.tokens[1].saturating_add(tokens);
        self.month_tokens = self.month_tokens.saturating_add(tokens);
        self.inflight += 1;
    }

    /// Ends a reservation `r`: its reserved tokens replaced by `used`, in the minute and month
    /// it was reserved in while they are still counted.
    pub fn give_back(&mut self, r: &Reservation, used: u64) {
        self.inflight = self.inflight.saturating_sub(1);
        if self.month == r.month {
            self.month_tokens = self
                .month_tokens
                .saturating_sub(r.tokens)
                .saturating_add(used);
        }
        // The minute the tokens were reserved in, if it is still in the window.
        let slot = if self.minute == r.minute {
            Some(1)
        } else if self.minute == r.minute + 1 {
            Some(0)
        } else {
            None
        };
        if let Some(i) = slot {
            self.tokens[i] = self.tokens[i].saturating_sub(r.tokens).saturating_add(used);
        } else if used > r.tokens {
            self.tokens[1] = self.tokens[1].saturating_add(used - r.tokens);
        }
    }
}

/// Quota state in this process's memory: right for one gateway; a replica set needs a shared
/// ledger behind the same trait.
pub struct MemoryLedger {
    scopes: Mutex<HashMap<String, Counters>>,
    /// Tokens already used this month per scope id when the process started (from metered usage).
    seed: HashMap<String, (i64, u64)>,
    clock: Clock,
}

impl fmt::Debug for MemoryLedger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryLedger").finish_non_exhaustive()
    }
}

fn month_index(t: OffsetDateTime) -> i64 {
    i64::from(t.year()) * 12 + i64::from(u8::from(t.month())) - 1
}

fn until_next_month(t: OffsetDateTime) -> Duration {
    let next = if t.month() == time::Month::December {
        time::Date::from_calendar_date(t.year() + 1, time::Month::January, 1)
    } else {
        time::Date::from_calendar_date(t.year(), t.month().next(), 1)
    };
    next.map(|d| (d.midnight().assume_utc() - t).unsigned_abs())
        .unwrap_or(Duration::from_secs(86_400))
}

impl MemoryLedger {
    pub fn new() -> Self {
        Self::with_clock(Arc::new(OffsetDateTime::now_utc))
    }

    pub fn with_clock(clock: Clock) -> Self {
        Self {
            scopes: Mutex::new(HashMap::new()),
            seed: HashMap::new(),
            clock,
        }
    }

    /// Starts a scope's month with tokens used before this process started.
    pub fn seed_month(&mut self, kind: ScopeKind, name: &str, tokens: u64) {
        let month = month_index((self.clock)());
        self.seed.insert(
            Scope::new(kind, name, Limits::default()).id(),
            (month, tokens),
        );
    }

    fn seed_for(&self, id: &str, month: i64) -> u64 {
        match self.seed.get(id) {
            Some((m, t)) if *m == month => *t,
            _ => 0,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Counters>> {
        // Counters stay consistent under a poisoned lock: each update is plain arithmetic.
        self.scopes.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn reserve_now(&self, scopes: &[Scope], tokens: u64) -> Result<Reservation, Exceeded> {
        let at = Moment::at((self.clock)());
        let mut map = self.lock();
        // Check every scope before changing any: a request is admitted everywhere or nowhere.
        for s in scopes {
            let id = s.id();
            let seed = self.seed_for(&id, at.month);
            let c = map
                .entry(id)
                .or_insert_with(|| Counters::new(at.minute, at.month, seed));
            c.roll(at.minute, at.month, seed);
            c.check(s, tokens, &at)?;
        }
        let mut ids = Vec::with_capacity(scopes.len());
        for s in scopes {
            let id = s.id();
            if let Some(c) = map.get_mut(&id) {
                c.take(tokens);
            }
            ids.push(id);
        }
        Ok(Reservation::new(ids, tokens, at.minute, at.month))
    }

    fn settle_now(&self, r: Reservation, used: u64) {
        let mut map = self.lock();
        for id in &r.scopes {
            if let Some(c) = map.get_mut(id) {
                c.give_back(&r, used);
            }
        }
    }

    /// Tokens used or reserved this month in a scope, for tests and diagnostics.
    pub fn month_tokens(&self, kind: ScopeKind, name: &str) -> u64 {
        let id = Scope::new(kind, name, Limits::default()).id();
        self.lock().get(&id).map_or(0, |c| c.month_tokens)
    }
}

impl Default for MemoryLedger {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait::async_trait]
impl Ledger for MemoryLedger {
    async fn reserve(&self, scopes: &[Scope], tokens: u64) -> Result<Reservation, Refusal> {
        Ok(self.reserve_now(scopes, tokens)?)
    }

    async fn settle(&self, reservation: Reservation, used_tokens: u64) {
        self.settle_now(reservation, used_tokens);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use std::sync::atomic::{AtomicI64, Ordering};

    use super::*;

    fn clocked(start: i64) -> (MemoryLedger, Arc<AtomicI64>) {
        let t = Arc::new(AtomicI64::new(start));
        let c = Arc::clone(&t);
        let ledger = MemoryLedger::with_clock(Arc::new(move || {
            OffsetDateTime::from_unix_timestamp(c.load(Ordering::Relaxed)).unwrap()
        }));
        (ledger, t)
    }

    fn tenant(limits: Limits) -> Vec<Scope> {
        vec![Scope::new(ScopeKind::Tenant, "agency", limits)]
    }

    // 2026-11-01T00:00:00Z
    const NOV: i64 = 1_793_491_200;

    #[test]
    fn requests_per_minute_slide() {
        let (l, t) = clocked(NOV);
        let s = tenant(Limits {
            requests_per_minute: Some(2),
            ..Limits::default()
        });
        let a = l.reserve_now(&s, 0).unwrap();
        l.settle_now(a, 0);
        l.reserve_now(&s, 0).unwrap();
        let e = l.reserve_now(&s, 0).unwrap_err();
        assert_eq!(e.limit, Limit::RequestsPerMinute);
        assert!(
            e.to_string()
                .contains("has used 2 of its 2 requests per minute")
        );
        // Half a minute into the next minute, half of the previous minute still counts: one
        // more request fits, a second does not.
        t.store(NOV + 90, Ordering::Relaxed);
        assert!(l.reserve_now(&s, 0).is_ok());
        assert!(l.reserve_now(&s, 0).is_err());
        t.store(NOV + 180, Ordering::Relaxed);
        assert!(l.reserve_now(&s, 0).is_ok());
    }

    #[test]
    fn all_scopes_or_none() {
        let (l, _) = clocked(NOV);
        let scopes = vec![
            Scope::new(ScopeKind::Tenant, "agency", Limits::default()),
            Scope::new(
                ScopeKind::Key,
                "k1",
                Limits {
                    concurrency: Some(1),
                    ..Limits::default()
                },
            ),
        ];
        let held = l.reserve_now(&scopes, 10).unwrap();
        let e = l.reserve_now(&scopes, 10).unwrap_err();
        assert_eq!((e.kind, e.limit), (ScopeKind::Key, Limit::Concurrency));
        // The refused request left nothing in the tenant scope.
        assert_eq!(l.month_tokens(ScopeKind::Tenant, "agency"), 10);
        l.settle_now(held, 3);
        assert_eq!(l.month_tokens(ScopeKind::Tenant, "agency"), 3);
        assert!(l.reserve_now(&scopes, 10).is_ok());
    }

    #[test]
    fn monthly_budget_counts_reservations_then_settles_and_resets() {
        let (mut l, t) = clocked(NOV + 86_400 * 10);
        l.seed_month(ScopeKind::Tenant, "agency", 900);
        let s = tenant(Limits {
            monthly_tokens: Some(1000),
            ..Limits::default()
        });
        let r = l.reserve_now(&s, 100).unwrap();
        let e = l.reserve_now(&s, 1).unwrap_err();
        assert_eq!(e.limit, Limit::MonthlyTokens);
        assert!(e.retry_after > Duration::from_secs(86_400 * 19));
        l.settle_now(r, 40);
        assert!(l.reserve_now(&s, 60).is_ok());
        assert!(l.reserve_now(&s, 1).is_err());
        // December: a fresh budget, the November seed no longer applies.
        t.store(NOV + 86_400 * 30, Ordering::Relaxed);
        assert!(l.reserve_now(&s, 1000).is_ok());
    }

    #[test]
    fn a_request_larger_than_the_limit_says_so() {
        let (l, _) = clocked(NOV);
        let e = l
            .reserve_now(
                &tenant(Limits {
                    tokens_per_minute: Some(100),
                    ..Limits::default()
                }),
                500,
            )
            .unwrap_err();
        assert!(e.to_string().contains("lower `max_tokens`"), "{e}");
    }

    proptest::proptest! {
        /// Whatever the order of reserves and settles, the month's reserved-or-used tokens never
        /// exceed the budget, and settling everything leaves exactly what was used.
        #[test]
        fn never_over_budget(ops in proptest::collection::vec((1u64..200, 0u64..250, proptest::bool::ANY), 1..200)) {
            let (l, _) = clocked(NOV);
            let s = tenant(Limits { monthly_tokens: Some(5_000), ..Limits::default() });
            let mut open = Vec::new();
            let mut used_total = 0;
            for (ask, used, settle_first) in ops {
                if settle_first && let Some((r, ask)) = open.pop() {
                    let used = used.min(ask);
                    used_total += used;
                    l.settle_now(r, used);
                }
                if let Ok(r) = l.reserve_now(&s, ask) {
                    open.push((r, ask));
                }
                proptest::prop_assert!(l.month_tokens(ScopeKind::Tenant, "agency") <= 5_000);
            }
            for (r, _) in open {
                l.settle_now(r, 0);
            }
            proptest::prop_assert_eq!(l.month_tokens(ScopeKind::Tenant, "agency"), used_total);
        }
    }
}
