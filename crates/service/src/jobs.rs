//! The one jobs queue as the workers use it. Every batch and fine-tuning job has a row in the
//! store's queue ([`enclave_store::QueuedJob`]); a worker takes the next job of its kind (the
//! highest priority first, then the tenant served longest ago, then the oldest), holds it while
//! it works (the hold renewed in the background, so it lapses within [`HOLD`] of the server
//! dying) and lets go when its turn ends. Servers sharing one store therefore never work on one
//! job at once, and a job of a server that died is taken up by another, or by the same server
//! when it starts again ([`Service::node`] names it across restarts).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use enclave_store::{QueuedJob, Store};
use serde::{Deserialize, Serialize};

use crate::Service;

/// How long a hold lasts unless renewed.
pub const HOLD: Duration = Duration::from_secs(30);
/// How often a held job's hold is renewed.
const RENEW: Duration = Duration::from_secs(10);

/// How urgent a job is, as its creator said (an Enclave extension to OpenAI's requests).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    Low,
    #[default]
    Normal,
    High,
}

impl Priority {
    pub fn rank(self) -> i64 {
        match self {
            Priority::Low => -1,
            Priority::Normal => 0,
            Priority::High => 1,
        }
    }

    pub fn of_rank(rank: i64) -> Self {
        match rank {
            r if r < 0 => Priority::Low,
            0 => Priority::Normal,
            _ => Priority::High,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Low => "low",
            Priority::Normal => "normal",
            Priority::High => "high",
        }
    }
}

/// Which tenant a worker served when: tenants of equal priority take turns.
#[derive(Debug, Default)]
pub(crate) struct Turns {
    served: BTreeMap<String, u64>,
    round: u64,
}

impl Turns {
    /// Candidates in the order a worker tries them.
    fn order(&self, mut jobs: Vec<QueuedJob>) -> Vec<QueuedJob> {
        jobs.sort_by_key(|j| {
            (
                -j.priority,
                self.served.get(&j.tenant_id).copied().unwrap_or(0),
                j.created_at,
            )
        });
        jobs
    }

    fn served(&mut self, tenant: &str) {
        self.round += 1;
        self.served.insert(tenant.to_string(), self.round);
    }
}

/// A job this server holds. Renewed until released; dropped without [`Held::release`], it lets
/// go in the background.
pub(crate) struct Held {
    pub(crate) job: QueuedJob,
    store: Arc<dyn Store>,
    holder: String,
    renewer: tokio::task::JoinHandle<()>,
}

impl Held {
    pub(crate) async fn release(self) {
        self.renewer.abort();
        if let Err(e) = self.store.release_job(&self.job.id, &self.holder).await {
            tracing::warn!(job = %self.job.id, error = %e, "cannot let go of a job; its hold lapses");
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.renewer.abort();
    }
}

fn until(hold: Duration) -> i64 {
    enclave_store::now() + i64::try_from(hold.as_secs()).unwrap_or(i64::MAX)
}

/// Lets go of every job this server held before it stopped: it is not working on them now.
pub(crate) async fn release_mine(state: &Service) {
    match state.store.release_jobs_of(&state.node).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(node = %state.node, jobs = n, "took up jobs held before a restart"),
        Err(e) => tracing::error!(error = %e, "cannot read the jobs queue"),
    }
}

/// Takes the next job of `kind` in one of `statuses` for this server, if any is free.
pub(crate) async fn next(
    state: &Service,
    turns: &mut Turns,
    kind: &str,
    statuses: &[&str],
) -> Result<Option<Held>, enclave_store::StoreError> {
    let now = enclave_store::now();
    let candidates = state.store.claimable_jobs(kind, statuses, now).await?;
    for job in turns.order(candidates) {
        // Another server may have taken it since: try the next.
        if !state
            .store
            .claim_job(&job.id, &state.node, now, until(HOLD))
            .await?
        {
            continue;
        }
        turns.served(&job.tenant_id);
        let (store, holder, id) = (Arc::clone(&state.store), state.node.clone(), job.id.clone());
        let renewer = tokio::spawn(async move {
            loop {
                tokio::time::sleep(RENEW).await;
                match store.renew_job(&id, &holder, until(HOLD)).await {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::warn!(job = %id, "the hold on a job was lost to another server");
                        break;
                    }
                    Err(e) => tracing::warn!(job = %id, error = %e, "cannot renew a job's hold"),
                }
            }
        });
        return Ok(Some(Held {
            job,
            store: Arc::clone(&state.store),
            holder: state.node.clone(),
            renewer,
        }));
    }
    Ok(None)
}
