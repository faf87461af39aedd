//! The quota ledger on PostgreSQL (a real PostgreSQL 15 cluster made with `initdb`), as three
//! servers share it: exact under 200 concurrent clients spread over three ledgers, per-minute
//! limits for the whole platform, a dead server's reservation reclaimed, and the same answers
//! as the in-memory ledger for the same requests at the same times.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly at the line that broke"
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use enclave_quota::{Ledger, Limit, Limits, MemoryLedger, Refusal, Scope, ScopeKind};
use enclave_store::{PgLedger, PgStore};
use rand::{Rng, SeedableRng};
use time::OffsetDateTime;

// 2026-11-01T00:00:00Z
const NOV: i64 = 1_793_491_200;

fn tenant(limits: Limits) -> Vec<Scope> {
    vec![Scope::new(ScopeKind::Tenant, "agency", limits)]
}

/// Three servers' ledgers over one database, each with its own connection pool.
async fn replicas(url: &str) -> Vec<PgLedger> {
    let mut out = Vec::new();
    for _ in 0..3 {
        let store = PgStore::open(url, 12).await.unwrap();
        out.push(PgLedger::new(&store));
    }
    out
}

fn fixed(at: Arc<AtomicI64>) -> enclave_quota::Clock {
    Arc::new(move || OffsetDateTime::from_unix_timestamp(at.load(Ordering::Relaxed)).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_servers_share_one_exact_ledger() {
    let cluster = enclave_pgtest::Cluster::start().unwrap();

    // 200 clients over three servers spend a monthly budget: never a token over, and nearly
    // all of it spent (every client keeps asking until refused).
    let ledgers = replicas(&cluster.create_database("budget").unwrap()).await;
    let budget = 20_000;
    let scopes = Arc::new(tenant(Limits {
        monthly_tokens: Some(budget),
        ..Limits::default()
    }));
    let spent = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..200u64)
        .map(|i| {
            let (ledger, scopes, spent) = (
                ledgers[(i % 3) as usize].clone(),
                Arc::clone(&scopes),
                Arc::clone(&spent),
            );
            tokio::spawn(async move {
                let mut rng = rand::rngs::StdRng::seed_from_u64(i);
                loop {
                    let ask = rng.random_range(20..=120);
                    match ledger.reserve(&scopes, ask).await {
                        Ok(r) => {
                            spent.fetch_add(ask, Ordering::Relaxed);
                            ledger.settle(r, ask).await;
                        }
                        Err(Refusal::Exceeded(e)) => {
                            assert_eq!(e.limit, Limit::MonthlyTokens);
                            // What is left may still fit a smaller request; stop when it is
                            // below the smallest.
                            if budget - spent.load(Ordering::Relaxed) < 20 || e.used >= budget - 20
                            {
                                break;
                            }
                        }
                        Err(e) => panic!("{e}"),
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let spent = spent.load(Ordering::Relaxed);
    assert!(spent <= budget, "admitted {spent} of a budget of {budget}");
    assert!(spent > budget - 120, "admitted only {spent} of {budget}");
    assert_eq!(
        ledgers[0].month_tokens("tenant:agency").await.unwrap(),
        spent
    );

    // Requests per minute hold for the platform, not per server: 200 at once over three
    // servers, 50 admitted.
    let at = Arc::new(AtomicI64::new(NOV + 10));
    let url = cluster.create_database("rpm").unwrap();
    let mut ledgers = Vec::new();
    for l in replicas(&url).await {
        ledgers.push(l.with_clock(fixed(Arc::clone(&at))));
    }
    let scopes = Arc::new(tenant(Limits {
        requests_per_minute: Some(50),
        ..Limits::default()
    }));
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let (ledger, scopes) = (ledgers[i % 3].clone(), Arc::clone(&scopes));
            tokio::spawn(async move { ledger.reserve(&scopes, 1).await.is_ok() })
        })
        .collect();
    let mut admitted = 0;
    for t in tasks {
        admitted += usize::from(t.await.unwrap());
    }
    assert_eq!(admitted, 50);

    // A server dies holding a reservation: the concurrency it held is reclaimed when its hold
    // ends, the tokens charged in full.
    let url = cluster.create_database("reclaim").unwrap();
    let store = PgStore::open(&url, 4).await.unwrap();
    let dead = PgLedger::new(&store).with_hold(Duration::from_secs(1));
    let alive = PgLedger::new(&PgStore::open(&url, 4).await.unwrap());
    let one = tenant(Limits {
        concurrency: Some(1),
        ..Limits::default()
    });
    let abandoned = dead.reserve(&one, 70).await.unwrap();
    drop(abandoned);
    let refused = alive.reserve(&one, 5).await.unwrap_err();
    assert!(matches!(refused, Refusal::Exceeded(ref e) if e.limit == Limit::Concurrency));
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let r = alive.reserve(&one, 5).await.unwrap();
    alive.settle(r, 5).await;
    assert_eq!(alive.month_tokens("tenant:agency").await.unwrap(), 75);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shared_ledger_answers_as_the_in_memory_ledger_does() {
    let cluster = enclave_pgtest::Cluster::start().unwrap();
    let store = PgStore::open(&cluster.create_database("parity").unwrap(), 4)
        .await
        .unwrap();
    let at = Arc::new(AtomicI64::new(NOV + 86_400 * 29 + 86_000));
    let pg = PgLedger::new(&store).with_clock(fixed(Arc::clone(&at)));
    let memory = MemoryLedger::with_clock(fixed(Arc::clone(&at)));
    let scopes = vec![
        Scope::new(
            ScopeKind::Tenant,
            "agency",
            Limits {
                requests_per_minute: Some(7),
                tokens_per_minute: Some(900),
                monthly_tokens: Some(6_000),
                concurrency: Some(3),
            },
        ),
        Scope::new(
            ScopeKind::Key,
            "k1",
            Limits {
                tokens_per_minute: Some(500),
                ..Limits::default()
            },
        ),
    ];
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut held = Vec::new();
    // Across a month's end: minutes slide, the month resets.
    for step in 0..400 {
        at.fetch_add(rng.random_range(0..25), Ordering::Relaxed);
        if !held.is_empty() && rng.random_bool(0.5) {
            let (p, m, used) = held.swap_remove(rng.random_range(0..held.len()));
            pg.settle(p, used).await;
            memory.settle(m, used).await;
            continue;
        }
        let ask = rng.random_range(0..300);
        let (p, m) = (
            pg.reserve(&scopes, ask).await,
            memory.reserve(&scopes, ask).await,
        );
        match (p, m) {
            (Ok(p), Ok(m)) => held.push((p, m, rng.random_range(0..=ask))),
            (Err(Refusal::Exceeded(p)), Err(Refusal::Exceeded(m))) => {
                assert_eq!(p, m, "step {step}")
            }
            (p, m) => panic!("step {step}: PostgreSQL {p:?}, memory {m:?}"),
        }
    }
}
