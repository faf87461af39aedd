//! A circuit breaker per upstream deployment, part of the service's runtime registry.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// A circuit breaker per deployment: after `threshold` failures in a row it opens and the
/// deployment is skipped for `cooldown`; then one request probes it (half-open) and its outcome
/// closes or reopens the circuit.
#[derive(Debug)]
pub struct Breaker {
    name: String,
    threshold: u32,
    cooldown: Duration,
    state: Mutex<State>,
}

#[derive(Debug, Clone, Copy)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// A probe is out; if it never reports (its client left), another may go at `next`.
    HalfOpen {
        next: Instant,
    },
}

impl Breaker {
    pub fn new(name: &str, threshold: u32, cooldown: Duration) -> Self {
        Self {
            name: name.to_string(),
            threshold: threshold.max(1),
            cooldown,
            state: Mutex::new(State::Closed { failures: 0 }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A poisoned lock still holds a valid state: every write is a single assignment.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a request may go to this deployment now.
    pub fn admit(&self) -> bool {
        let now = Instant::now();
        let mut s = self.state();
        match *s {
            State::Closed { .. } => true,
            State::Open { until } | State::HalfOpen { next: until } if now < until => false,
            State::Open { .. } | State::HalfOpen { .. } => {
                *s = State::HalfOpen {
                    next: now + self.cooldown,
                };
                true
            }
        }
    }

    pub fn success(&self) {
        let mut s = self.state();
        if !matches!(*s, State::Closed { failures: 0 }) {
            *s = State::Closed { failures: 0 };
            metrics::gauge!("enclave_upstream_circuit_open", "deployment" => self.name.clone())
                .set(0.0);
        }
    }

    pub fn failure(&self) {
        let mut s = self.state();
        let open = match *s {
            State::Closed { failures } if failures + 1 < self.threshold => {
                *s = State::Closed {
                    failures: failures + 1,
                };
                false
            }
            _ => true,
        };
        if open {
            *s = State::Open {
                until: Instant::now() + self.cooldown,
            };
            tracing::warn!(deployment = %self.name, cooldown_s = self.cooldown.as_secs_f64(), "circuit opened");
            metrics::gauge!("enclave_upstream_circuit_open", "deployment" => self.name.clone())
                .set(1.0);
        }
    }

    pub fn is_open(&self) -> bool {
        matches!(*self.state(), State::Open { until } if Instant::now() < until)
    }
}
