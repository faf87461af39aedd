//! Getting an answer from the deployments routing allowed: in priority order, weighted within a
//! priority; retrying a deployment with jittered backoff on failures that may pass; falling
//! back to the next; skipping deployments whose circuit is open.
//!
//! Everything here happens before the first byte goes to the client: a stream is handed back
//! only once its first token arrived, so a failure up to then is still invisible to the caller.
//! Every try is recorded as an [`Attempt`] for the audit record and the metrics.

use std::sync::Arc;
use std::time::Duration;

use enclave_audit::Attempt;
use enclave_engine::{EmbedInput, Embeddings};
use tokio::time::Instant;

use crate::Service;
use crate::breaker::Breaker;
use crate::conversation::Conversation;
use crate::error::Error;
use crate::monitor::Route;
use crate::policy::{Backend, Policy};
use crate::upstream::{Connector, EventStream, Failure, Upstream};

/// Backoff before retry `n` (0-based): a random point in `[0, BASE × 2ⁿ]`, at most `CAP`
/// ("full jitter"), so clients retrying together do not arrive together.
const BACKOFF_BASE: Duration = Duration::from_millis(50);
const BACKOFF_CAP: Duration = Duration::from_secs(2);

fn backoff(n: u32, retry_after: Option<Duration>) -> Duration {
    let ceiling = BACKOFF_BASE
        .saturating_mul(1u32 << n.min(10))
        .min(BACKOFF_CAP);
    let jittered = ceiling.mul_f64(rand::random::<f64>());
    // An upstream that says when to come back is believed, within the cap.
    retry_after.map_or(jittered, |r| r.min(BACKOFF_CAP).max(jittered))
}

/// The runtime side of each deployment in the policy, at its [`crate::policy::Deployment::slot`]:
/// its circuit breaker, and for an upstream its client.
pub struct Registry {
    slots: Vec<Slot>,
}

struct Slot {
    breaker: Breaker,
    client: Option<Arc<dyn Upstream>>,
}

impl Registry {
    /// Makes every upstream deployment's client with `connector`; an error names the deployment.
    pub fn build(policy: &Policy, connector: &dyn Connector) -> Result<Self, String> {
        let mut slots = Vec::with_capacity(policy.deployments.len());
        for d in &policy.deployments {
            let client = match &d.backend {
                Backend::Embedded => None,
                Backend::Upstream(spec) => Some(
                    connector
                        .connect(spec)
                        .map_err(|e| format!("deployment `{}`: {e}", d.placement.name))?,
                ),
            };
            slots.push(Slot {
                breaker: Breaker::new(&d.placement.name, d.breaker.failures, d.breaker.cooldown),
                client,
            });
        }
        Ok(Self { slots })
    }

    /// The breaker of deployment `slot` in words: `closed` (serving), `open` (refusing after
    /// failures), or `embedded` (the engine here has none).
    pub fn breaker_word(&self, slot: usize) -> &'static str {
        match self.slot(slot) {
            Some(s) if s.client.is_some() => {
                if s.breaker.is_open() {
                    "open"
                } else {
                    "closed"
                }
            }
            _ => "embedded",
        }
    }

    fn slot(&self, slot: usize) -> Option<&Slot> {
        self.slots.get(slot)
    }
}

/// The order to try routes in: ascending priority; within one priority, a weighted random
/// permutation (each route's key is `-ln(u)/weight`, smallest first), so traffic splits by weight.
pub fn order(routes: &[Route]) -> Vec<usize> {
    let mut keyed: Vec<(u32, f64, usize)> = routes
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let u: f64 = rand::random::<f64>().max(f64::MIN_POSITIVE);
            let w = f64::from(r.deployment.weight.max(1));
            (r.deployment.priority, -u.ln() / w, i)
        })
        .collect();
    keyed.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
    keyed.into_iter().map(|k| k.2).collect()
}

/// Time spent waiting on backends for one request, for the overhead histogram.
#[derive(Debug, Clone, Default)]
pub struct UpstreamClock(Arc<std::sync::atomic::AtomicU64>);

impl UpstreamClock {
    pub fn add(&self, d: Duration) {
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        // +1 marks the clock as used even for a zero wait.
        self.0.fetch_add(
            nanos.saturating_add(1),
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// The wait, or `None` when the request never waited on a backend.
    pub fn waited(&self) -> Option<Duration> {
        match self.0.load(std::sync::atomic::Ordering::Relaxed) {
            0 => None,
            n => Some(Duration::from_nanos(n)),
        }
    }
}

fn attempt(deployment: &str, outcome: &str, status: Option<u16>, took: Duration) -> Attempt {
    metrics::counter!("enclave_upstream_attempts_total", "deployment" => deployment.to_string(), "outcome" => outcome.to_string())
        .increment(1);
    metrics::histogram!("enclave_upstream_attempt_seconds", "deployment" => deployment.to_string())
        .record(took.as_secs_f64());
    Attempt {
        deployment: deployment.to_string(),
        outcome: outcome.to_string(),
        status,
        latency_ms: u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
    }
}

/// What to ask the deployments for. `redacted` is the copy for routes that may only see
/// personal data as placeholders.
pub enum Work<'a> {
    Chat {
        /// The model called (a fine-tuned model's own name, which its deployment serves).
        model: &'a str,
        /// A batch line: the embedded engine serves interactive calls first.
        background: bool,
        plain: &'a Conversation,
        redacted: Option<&'a Conversation>,
        /// The prompt cache the embedded engine may use: the caller's tenant and the request's
        /// label, so a prefix one tenant computed is never reused (or timed) by another, nor a
        /// higher request's by a lower one.
        cache: &'a str,
    },
    Embed {
        /// The inputs as sent (token ids stay token ids for the embedded model).
        inputs: &'a [EmbedInput],
        /// The same inputs as text, for upstreams.
        plain: &'a [String],
        redacted: Option<&'a [String]>,
        dimensions: Option<u32>,
    },
}

/// What a deployment answered.
enum Output {
    Events(EventStream),
    Embeddings(Embeddings),
}

/// A chat answer from the first route that gives one, and the index of that route.
pub async fn chat(
    state: &Service,
    routes: &[Route],
    work: &Work<'_>,
    attempts: &mut Vec<Attempt>,
    clock: &UpstreamClock,
) -> Result<(EventStream, usize), Error> {
    match dispatch(state, routes, work, attempts, clock).await? {
        (Output::Events(events), index) => Ok((events, index)),
        (Output::Embeddings(_), _) => Err(Error::Internal),
    }
}

/// Embeddings from the first route that gives them, and the index of that route.
pub async fn embed(
    state: &Service,
    routes: &[Route],
    work: &Work<'_>,
    attempts: &mut Vec<Attempt>,
    clock: &UpstreamClock,
) -> Result<(Embeddings, usize), Error> {
    match dispatch(state, routes, work, attempts, clock).await? {
        (Output::Embeddings(e), index) => Ok((e, index)),
        (Output::Events(_), _) => Err(Error::Internal),
    }
}

/// Tries the routes until one answers. Returns the answer and the index of the route that
/// served. (`Work::Chat` always yields events, `Work::Embed` embeddings: [`chat`] and
/// [`embed`] say so in their types.)
async fn dispatch(
    state: &Service,
    routes: &[Route],
    work: &Work<'_>,
    attempts: &mut Vec<Attempt>,
    clock: &UpstreamClock,
) -> Result<(Output, usize), Error> {
    let mut failures: Vec<String> = Vec::new();
    let mut retry_hint: Option<Duration> = None;
    // The embedded engine's own refusal, returned as is when no upstream route was tried.
    let mut last_error: Option<Error> = None;
    let mut upstream_tried = false;
    for index in order(routes) {
        let route = &routes[index];
        let d = &route.deployment;
        let name = d.placement.name.as_str();
        let upstream = match &d.backend {
            Backend::Embedded => {
                if let Work::Chat { plain, .. } = work
                    && plain.uses_tools()
                {
                    // The embedded model cannot call tools; another route may.
                    attempts.push(attempt(name, "unsupported", None, Duration::ZERO));
                    failures.push(format!("`{name}` does not call tools"));
                    last_error = Some(Error::unsupported(
                        "tools",
                        format!(
                            "`{name}` does not call tools, and no other deployment of this model could answer"
                        ),
                    ));
                    continue;
                }
                let started = Instant::now();
                let result = match work {
                    Work::Chat {
                        model,
                        background,
                        plain,
                        redacted,
                        cache,
                    } => {
                        let c = if route.redact {
                            redacted.unwrap_or(plain)
                        } else {
                            plain
                        };
                        // The deployment of fine-tuned models serves each by its own name.
                        let model = if d.model == crate::policy::FINE_TUNED {
                            model
                        } else {
                            d.model.as_str()
                        };
                        embedded_chat(state, model, c, cache, *background)
                            .await
                            .map(Output::Events)
                    }
                    Work::Embed { inputs, .. } => {
                        embedded_embed(state, inputs).await.map(Output::Embeddings)
                    }
                };
                let took = started.elapsed();
                clock.add(took);
                match result {
                    Ok(out) => {
                        attempts.push(attempt(name, "ok", None, took));
                        return Ok((out, index));
                    }
                    // Busy or still loading: another deployment may answer.
                    Err(
                        e @ (Error::Overloaded(_)
                        | Error::ModelLoading(_)
                        | Error::ModelUnavailable(_)),
                    ) => {
                        attempts.push(attempt(name, e.code(), None, took));
                        failures.push(format!("`{name}` {e}"));
                        last_error = Some(e);
                        continue;
                    }
                    Err(e) => {
                        attempts.push(attempt(name, e.code(), None, took));
                        return Err(e);
                    }
                }
            }
            Backend::Upstream(_) => match state.registry.slot(d.slot) {
                Some(Slot {
                    client: Some(client),
                    breaker,
                }) => (client, breaker),
                _ => {
                    tracing::error!(deployment = name, "no client for an upstream deployment");
                    failures.push(format!("`{name}` has no client"));
                    continue;
                }
            },
        };
        let (upstream, breaker) = upstream;
        upstream_tried = true;
        if !breaker.admit() {
            attempts.push(attempt(name, "circuit_open", None, Duration::ZERO));
            failures.push(format!("`{name}` is cooling down after repeated failures"));
            continue;
        }
        // Encoded once per deployment: retries resend the same bytes.
        let body = match work {
            Work::Chat {
                plain, redacted, ..
            } => {
                let c = if route.redact {
                    redacted.unwrap_or(plain)
                } else {
                    plain
                };
                upstream.encode(c)
            }
            Work::Embed {
                plain,
                redacted,
                dimensions,
                ..
            } => {
                let t = if route.redact {
                    redacted.unwrap_or(plain)
                } else {
                    plain
                };
                upstream.encode_embeddings(t, *dimensions)
            }
        };
        let mut n = 0;
        loop {
            let started = Instant::now();
            let result = match work {
                Work::Chat { plain, .. } => upstream
                    .start(body.clone(), plain.stream)
                    .await
                    .map(Output::Events),
                Work::Embed { .. } => upstream.embed(body.clone()).await.map(Output::Embeddings),
            };
            let took = started.elapsed();
            clock.add(took);
            let failure = match result {
                Ok(out) => {
                    breaker.success();
                    attempts.push(attempt(name, "ok", None, took));
                    return Ok((out, index));
                }
                Err(f) => f,
            };
            attempts.push(attempt(name, failure.outcome(), failure.status(), took));
            tracing::warn!(
                deployment = name,
                attempt = n,
                outcome = failure.outcome(),
                "upstream attempt failed: {}",
                failure.describe()
            );
            if !failure.falls_back() {
                // The upstream is up and says the request is wrong: that is the caller's answer.
                breaker.success();
                let (status, message) = match &failure {
                    Failure::Status {
                        status, message, ..
                    } => (*status, message.clone()),
                    _ => (502, failure.describe()),
                };
                return Err(Error::UpstreamRejected {
                    status,
                    message: format!("the upstream `{name}` rejected the request: {message}"),
                });
            }
            breaker.failure();
            let retry_after = match &failure {
                Failure::Status { retry_after, .. } => *retry_after,
                _ => None,
            };
            if let Some(r) = retry_after {
                retry_hint = Some(retry_hint.map_or(r, |h| h.min(r)));
            }
            let too_long = retry_after.is_some_and(|r| r > BACKOFF_CAP);
            if !failure.retryable() || n >= d.retries || too_long || breaker.is_open() {
                failures.push(format!("`{name}` {}", failure.describe()));
                break;
            }
            let pause = backoff(n, retry_after);
            clock.add(pause);
            tokio::time::sleep(pause).await;
            n += 1;
        }
    }
    if !upstream_tried && let Some(e) = last_error {
        return Err(e);
    }
    Err(Error::UpstreamUnavailable {
        message: format!(
            "no deployment could answer: {}",
            if failures.is_empty() {
                "none was tried".to_string()
            } else {
                failures.join("; ")
            }
        ),
        retry_after: retry_hint,
    })
}

/// The embedded embedding model as one more route.
async fn embedded_embed(state: &Service, inputs: &[EmbedInput]) -> Result<Embeddings, Error> {
    let engine = state
        .models
        .embedding
        .get()
        .cloned()
        .ok_or_else(|| Error::ModelLoading(crate::EMBEDDING_MODEL.to_string()))?;
    let inputs = inputs.to_vec();
    // Encoding a batch is compute-bound: off the runtime's workers.
    Ok(tokio::task::spawn_blocking(move || engine.embed(&inputs))
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "embedding task failed");
            Error::Internal
        })??)
}

/// The embedded chat model as one more route.
async fn embedded_chat(
    state: &Service,
    model: &str,
    c: &Conversation,
    cache: &str,
    background: bool,
) -> Result<EventStream, Error> {
    let engine = match state.models.chat_engine(model) {
        Some(e) => Some(e),
        None => crate::fine_tuning::engine(state, model).await,
    }
    .ok_or_else(|| Error::ModelLoading(model.to_string()))?;
    let messages = c.engine_messages()?;
    // Rendering and tokenizing a prompt of up to `MAX_BODY_BYTES` takes long enough to stall a
    // runtime worker, so it runs on the blocking pool. The engine itself runs in its own process
    // (`enclave_engine::process`): this only builds the prompt.
    let prompt = {
        let engine = Arc::clone(&engine);
        tokio::task::spawn_blocking(move || engine.prompt(&messages))
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "prompt task failed");
                Error::Internal
            })??
    };
    let rx = engine.generate(
        prompt,
        enclave_engine::Sampling {
            background,
            ..c.sampling.clone()
        },
        c.max_tokens,
        Some(cache.to_string()),
    )?;
    Ok(EventStream::new(rx))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn breaker_opens_after_threshold_and_probes_after_cooldown() {
        let b = Breaker::new("d", 2, Duration::from_millis(30));
        assert!(b.admit());
        b.failure();
        assert!(b.admit(), "one failure is below the threshold");
        b.failure();
        assert!(!b.admit(), "open after two failures");
        std::thread::sleep(Duration::from_millis(40));
        assert!(b.admit(), "one probe after the cool-down");
        assert!(!b.admit(), "only one probe at a time");
        b.success();
        assert!(b.admit() && b.admit(), "closed again after a good probe");
    }

    #[test]
    fn backoff_stays_within_its_ceiling() {
        for n in 0..12 {
            let d = backoff(n, None);
            assert!(d <= BACKOFF_CAP);
            assert!(d <= BACKOFF_BASE * (1 << n.min(10)));
        }
        assert!(backoff(0, Some(Duration::from_millis(500))) >= Duration::from_millis(500));
    }
}
