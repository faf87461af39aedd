//! The chat engine in a supervised child process.
//!
//! llama.cpp is C++ with hand-written SIMD kernels; a fault in one (llama.cpp #20824: a segfault
//! in the AMX matrix multiply) kills whatever process runs it. So the server never runs it: it
//! starts a worker (`enclave engine-worker`, see [`run_worker`]) that loads the model and runs
//! the scheduler, and talks to it over the worker's stdin and stdout, one JSON object a line.
//! The server keeps only the vocabulary and chat template ([`Prompter`], no weights), so prompts
//! are built and checked before anything is sent.
//!
//! [`ChatProcess`] supervises the worker: when it dies, every request in flight ends (a request
//! that had no token yet gets 503 `model_unavailable`, a stream an error event), new requests are
//! refused with [`EngineError::Unavailable`] naming the reason, [`ChatProcess::health`] turns
//! down (so `/readyz` answers 503), the exit status is logged, and a new worker is started after a
//! back-off that doubles to [`MAX_BACKOFF`] while it keeps dying.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, watch};

use crate::kernels::KernelReport;
use crate::llama::{ChatConfig, ChatEngine, Prompt, Prompter, completion_budget};
use crate::{EngineError, EngineStats, Event, Sampling};

/// The longest wait between two restarts of a worker that keeps dying.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// The first wait before a restart; doubled after each death within [`STABLE_AFTER`].
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// A worker that stayed up this long resets the back-off.
const STABLE_AFTER: Duration = Duration::from_secs(60);
/// How long a worker may take to load its model before it is killed and started again.
const LOAD_TIMEOUT: Duration = Duration::from_secs(600);
/// How often requests whose client left before any token are looked for and cancelled.
const SWEEP_EVERY: Duration = Duration::from_millis(200);

/// How to start a worker: the program and the arguments before `--model` and `--settings`.
#[derive(Debug, Clone)]
pub struct WorkerCommand {
    pub program: PathBuf,
    pub args: Vec<String>,
}

/// Whether the engine can take requests now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineHealth {
    /// A worker is loading the model.
    Starting { restarts: u64 },
    /// A worker answers.
    Ready { pid: u32, restarts: u64 },
    /// The worker died or failed to start; a new one starts after the back-off.
    Down { reason: String, restarts: u64 },
}

impl EngineHealth {
    pub fn is_ready(&self) -> bool {
        matches!(self, EngineHealth::Ready { .. })
    }

    /// One word for `/readyz`: `loaded`, `loading` or `restarting`.
    pub fn word(&self) -> &'static str {
        match self {
            EngineHealth::Ready { .. } => "loaded",
            EngineHealth::Starting { restarts: 0 } => "loading",
            EngineHealth::Starting { .. } | EngineHealth::Down { .. } => "restarting",
        }
    }

    pub fn restarts(&self) -> u64 {
        match self {
            EngineHealth::Starting { restarts }
            | EngineHealth::Ready { restarts, .. }
            | EngineHealth::Down { restarts, .. } => *restarts,
        }
    }
}

/// Server → worker, one a line.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum ToWorker {
    Generate {
        id: u64,
        tokens: Vec<i32>,
        sampling: Sampling,
        max_tokens: u32,
        /// The prompt cache it belongs to (see [`ChatEngine::generate`]).
        #[serde(default)]
        cache: Option<String>,
    },
    Cancel {
        id: u64,
    },
}

/// Worker → server, one a line.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum FromWorker {
    Ready { pid: u32, kernels: KernelReport },
    Failed { error: String },
    Event { id: u64, event: Event },
}

/// The line to the live worker and the requests it is answering.
struct Link {
    to_worker: mpsc::UnboundedSender<ToWorker>,
    pending: HashMap<u64, mpsc::UnboundedSender<Event>>,
}

struct Shared {
    health: Mutex<EngineHealth>,
    link: Mutex<Option<Link>>,
    kernels: Mutex<Option<KernelReport>>,
    /// Why the last worker died, for the answers given while the next one starts.
    last_failure: Mutex<Option<String>>,
    next_id: AtomicU64,
    stats: Arc<EngineStats>,
    slots: usize,
}

impl Shared {
    fn health(&self) -> MutexGuard<'_, EngineHealth> {
        self.health.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn link(&self) -> MutexGuard<'_, Option<Link>> {
        self.link.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set_health(&self, h: EngineHealth) {
        *self.health() = h;
    }

    /// Mirrors the number of requests in flight into the scheduler-shaped counters `/metrics`
    /// reads: up to `slots` of them hold a sequence, the rest wait.
    fn count(&self, in_flight: usize) {
        self.stats
            .active
            .store(in_flight.min(self.slots), Ordering::Relaxed);
        self.stats
            .queued
            .store(in_flight.saturating_sub(self.slots), Ordering::Relaxed);
    }

    /// Hands one event from the worker to its request; a request whose client left is cancelled.
    fn deliver(&self, id: u64, event: Event) {
        let mut guard = self.link();
        let Some(link) = guard.as_mut() else { return };
        let last = matches!(event, Event::Done { .. } | Event::Error(_));
        let gone = match link.pending.get(&id) {
            Some(tx) => tx.send(event).is_err(),
            None => return,
        };
        if gone {
            let _ = link.to_worker.send(ToWorker::Cancel { id });
            self.stats.cancelled.fetch_add(1, Ordering::Relaxed);
        }
        if gone || last {
            link.pending.remove(&id);
        }
        let n = link.pending.len();
        drop(guard);
        self.count(n);
    }

    /// Cancels requests whose client left while they waited for their first event.
    fn sweep(&self) {
        let mut guard = self.link();
        let Some(link) = guard.as_mut() else { return };
        let before = link.pending.len();
        let to_worker = link.to_worker.clone();
        link.pending.retain(|&id, tx| {
            let alive = !tx.is_closed();
            if !alive {
                let _ = to_worker.send(ToWorker::Cancel { id });
            }
            alive
        });
        let n = link.pending.len();
        drop(guard);
        if n != before {
            self.stats
                .cancelled
                .fetch_add((before - n) as u64, Ordering::Relaxed);
            self.count(n);
        }
    }
}

/// The embedded chat model served by a supervised worker process.
pub struct ChatProcess {
    prompter: Prompter,
    config: ChatConfig,
    shared: Arc<Shared>,
    /// Dropping it stops the supervisor, which kills the worker.
    _stop: watch::Sender<()>,
}

impl ChatProcess {
    /// Reads the model's vocabulary and template here, and starts the supervisor, which starts
    /// the worker. Returns at once: [`health`](Self::health) says when the worker is ready.
    pub fn start(
        model: &Path,
        config: ChatConfig,
        command: WorkerCommand,
        runtime: &tokio::runtime::Handle,
    ) -> Result<Self, EngineError> {
        let prompter = Prompter::load(model, config.chat_template.as_deref())?;
        let config_json = serde_json::to_string(&config)
            .map_err(|e| EngineError::Load(format!("cannot encode the engine settings: {e}")))?;
        let shared = Arc::new(Shared {
            health: Mutex::new(EngineHealth::Starting { restarts: 0 }),
            link: Mutex::new(None),
            kernels: Mutex::new(None),
            last_failure: Mutex::new(None),
            next_id: AtomicU64::new(1),
            stats: Arc::new(EngineStats::default()),
            slots: config.slots as usize,
        });
        let mut argv = command.args.clone();
        argv.extend([
            "--model".to_string(),
            model.display().to_string(),
            "--settings".to_string(),
            config_json,
        ]);
        let (stop, stopped) = watch::channel(());
        runtime.spawn(supervise(
            Arc::clone(&shared),
            command.program,
            argv,
            stopped,
        ));
        Ok(Self {
            prompter,
            config,
            shared,
            _stop: stop,
        })
    }

    pub fn config(&self) -> &ChatConfig {
        &self.config
    }

    pub fn stats(&self) -> &Arc<EngineStats> {
        &self.shared.stats
    }

    pub fn health(&self) -> EngineHealth {
        self.shared.health().clone()
    }

    /// What the live worker reported of llama.cpp's CPU kernels, once one has started.
    pub fn kernels(&self) -> Option<KernelReport> {
        self.shared
            .kernels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The model's vocabulary and chat template.
    pub fn prompter(&self) -> &Prompter {
        &self.prompter
    }

    /// Applies the model's own chat template and tokenizes the result.
    pub fn prompt(&self, messages: &[crate::ChatMessage]) -> Result<Prompt, EngineError> {
        self.prompter.prompt(messages)
    }

    /// Sends a generation to the worker. Events arrive on the returned receiver; dropping it
    /// cancels the work. If the worker dies first, the receiver ends without `Done`.
    /// Queues a generation in the worker; `cache` as in [`ChatEngine::generate`].
    pub fn generate(
        &self,
        prompt: Prompt,
        sampling: Sampling,
        max_tokens: Option<u32>,
        cache: Option<String>,
    ) -> Result<mpsc::UnboundedReceiver<Event>, EngineError> {
        let max_tokens = completion_budget(prompt.len(), max_tokens, &self.config)?;
        let health = self.health();
        if !health.is_ready() {
            let last = self
                .shared
                .last_failure
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            return Err(EngineError::Unavailable(match (health, last) {
                (EngineHealth::Down { reason, .. }, _) => {
                    format!("{reason}; it is being restarted")
                }
                (_, Some(reason)) => format!("{reason}; it is restarting"),
                _ => "it is starting".to_string(),
            }));
        }
        let mut guard = self.shared.link();
        let Some(link) = guard.as_mut() else {
            return Err(EngineError::Unavailable("it is starting".to_string()));
        };
        let waiting = link.pending.len().saturating_sub(self.shared.slots);
        if waiting >= self.config.max_queue {
            return Err(EngineError::Overloaded { waiting });
        }
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        link.to_worker
            .send(ToWorker::Generate {
                id,
                tokens: prompt.token_ids(),
                sampling,
                max_tokens,
                cache,
            })
            .map_err(|_| EngineError::Unavailable("the worker stopped".to_string()))?;
        link.pending.insert(id, tx);
        let n = link.pending.len();
        drop(guard);
        self.shared.count(n);
        Ok(rx)
    }
}

/// Starts workers, one at a time, for as long as the [`ChatProcess`] lives.
async fn supervise(
    shared: Arc<Shared>,
    program: PathBuf,
    argv: Vec<String>,
    mut stopped: watch::Receiver<()>,
) {
    let mut backoff = FIRST_BACKOFF;
    let mut restarts = 0u64;
    loop {
        shared.set_health(EngineHealth::Starting { restarts });
        let began = Instant::now();
        let outcome = tokio::select! {
            r = run_once(&shared, &program, &argv, restarts) => r,
            _ = stopped.changed() => return,
        };
        let reason = match outcome {
            Ok(status) => describe(status),
            Err(e) => e,
        };
        // Why, first; then every request the dead worker held ends: dropping their senders
        // closes them.
        shared.set_health(EngineHealth::Down {
            reason: reason.clone(),
            restarts,
        });
        *shared
            .last_failure
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(reason.clone());
        let orphans = shared.link().take().map_or(0, |l| l.pending.len());
        shared.count(0);
        if began.elapsed() >= STABLE_AFTER {
            backoff = FIRST_BACKOFF;
        }
        tracing::error!(
            reason = %reason,
            requests_failed = orphans,
            restart_in_ms = backoff.as_millis() as u64,
            "the chat engine stopped; restarting it"
        );
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            _ = stopped.changed() => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
        restarts += 1;
    }
}

/// Runs one worker until it exits; returns its exit status, or why it could not be run.
async fn run_once(
    shared: &Arc<Shared>,
    program: &Path,
    argv: &[String],
    restarts: u64,
) -> Result<ExitStatus, String> {
    let mut child = tokio::process::Command::new(program)
        .args(argv)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start `{}`: {e}", program.display()))?;
    let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        return Err("the worker has no stdin or stdout".to_string());
    };
    let mut lines = BufReader::new(stdout).lines();

    let first = tokio::time::timeout(LOAD_TIMEOUT, lines.next_line()).await;
    let ready = match first {
        Err(_) => Err(format!(
            "the worker did not load the model within {} s",
            LOAD_TIMEOUT.as_secs()
        )),
        Ok(Err(e)) => Err(format!("cannot read from the worker: {e}")),
        Ok(Ok(None)) => Err(String::new()),
        Ok(Ok(Some(line))) => match serde_json::from_str::<FromWorker>(&line) {
            Ok(FromWorker::Ready { pid, kernels }) => Ok((pid, kernels)),
            Ok(FromWorker::Failed { error }) => Err(format!("the worker failed to start: {error}")),
            Ok(FromWorker::Event { .. }) | Err(_) => {
                Err(format!("the worker said something unexpected: {line}"))
            }
        },
    };
    let (pid, kernels) = match ready {
        Ok(r) => r,
        Err(why) => {
            let _ = child.start_kill();
            let status = child.wait().await;
            return match (why.is_empty(), status) {
                (true, Ok(status)) => Ok(status),
                (true, Err(e)) => Err(format!("the worker vanished: {e}")),
                (false, _) => Err(why),
            };
        }
    };
    tracing::info!(pid, variant = %kernels.variant, features = ?kernels.features,
        buffer_types = ?kernels.buffer_types, "chat engine ready");
    *shared.kernels.lock().unwrap_or_else(|p| p.into_inner()) = Some(kernels);

    let (to_worker, mut outbox) = mpsc::unbounded_channel::<ToWorker>();
    *shared.link() = Some(Link {
        to_worker,
        pending: HashMap::new(),
    });
    shared.set_health(EngineHealth::Ready { pid, restarts });

    let writer = async move {
        let mut stdin = stdin;
        while let Some(msg) = outbox.recv().await {
            let Ok(mut line) = serde_json::to_vec(&msg) else {
                continue;
            };
            line.push(b'\n');
            if stdin.write_all(&line).await.is_err() {
                break;
            }
        }
    };
    let reader = async {
        let mut sweep = tokio::time::interval(SWEEP_EVERY);
        loop {
            tokio::select! {
                line = lines.next_line() => match line {
                    Ok(Some(line)) => match serde_json::from_str::<FromWorker>(&line) {
                        Ok(FromWorker::Event { id, event }) => shared.deliver(id, event),
                        Ok(other) => tracing::warn!(?other, "unexpected message from the chat engine"),
                        Err(e) => tracing::warn!(error = %e, "unreadable line from the chat engine"),
                    },
                    Ok(None) | Err(_) => break,
                },
                _ = sweep.tick() => shared.sweep(),
            }
        }
    };
    tokio::select! {
        () = reader => {}
        () = writer => {}
    }
    // Stop taking requests before waiting for the exit status.
    shared.set_health(EngineHealth::Starting { restarts });
    match tokio::time::timeout(Duration::from_secs(5), child.wait()).await {
        Ok(Ok(status)) => Ok(status),
        Ok(Err(e)) => Err(format!("cannot wait for the worker: {e}")),
        Err(_) => {
            let _ = child.start_kill();
            child
                .wait()
                .await
                .map_err(|e| format!("cannot wait for the worker: {e}"))
        }
    }
}

/// How a worker ended, in words: `killed by signal 11 (SIGSEGV)`, `exited with status 1`.
fn describe(status: ExitStatus) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(sig) = status.signal() {
            let name = match sig {
                4 => " (SIGILL)",
                6 => " (SIGABRT)",
                7 => " (SIGBUS)",
                8 => " (SIGFPE)",
                9 => " (SIGKILL)",
                11 => " (SIGSEGV)",
                15 => " (SIGTERM)",
                _ => "",
            };
            let core = if status.core_dumped() {
                ", core dumped"
            } else {
                ""
            };
            return format!("the engine process was killed by signal {sig}{name}{core}");
        }
    }
    match status.code() {
        Some(code) => format!("the engine process exited with status {code}"),
        None => format!("the engine process ended: {status}"),
    }
}

/// The worker's side: loads the model, then serves generations over stdin and stdout until
/// stdin closes (the server is gone). Run by `enclave engine-worker`.
pub fn run_worker(model: &Path, config_json: &str) -> Result<(), EngineError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| EngineError::Load(format!("cannot start the worker's runtime: {e}")))?;
    runtime.block_on(serve_worker(model, config_json))
}

async fn serve_worker(model: &Path, config_json: &str) -> Result<(), EngineError> {
    let (out, mut outbox) = mpsc::unbounded_channel::<FromWorker>();
    let writer = tokio::spawn(async move {
        let mut stdout = tokio::io::stdout();
        let mut buf = Vec::new();
        while let Some(msg) = outbox.recv().await {
            // Everything already waiting goes out in one write.
            let mut next = Some(msg);
            while let Some(m) = next {
                if serde_json::to_writer(&mut buf, &m).is_ok() {
                    buf.push(b'\n');
                }
                next = outbox.try_recv().ok();
            }
            if stdout.write_all(&buf).await.is_err() || stdout.flush().await.is_err() {
                break;
            }
            buf.clear();
        }
    });

    let loaded = serde_json::from_str::<ChatConfig>(config_json)
        .map_err(|e| EngineError::Load(format!("bad engine settings: {e}")))
        .and_then(|config| {
            let engine = ChatEngine::load(model, config)?;
            Ok(engine)
        });
    let engine = match loaded {
        Ok(e) => e,
        Err(e) => {
            let _ = out.send(FromWorker::Failed {
                error: e.to_string(),
            });
            drop(out);
            let _ = writer.await;
            return Err(e);
        }
    };
    let _ = out.send(FromWorker::Ready {
        pid: std::process::id(),
        kernels: crate::kernels::report(),
    });

    let n_vocab = engine.prompter().n_vocab();
    let mut running: HashMap<u64, tokio::task::AbortHandle> = HashMap::new();
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let msg = match serde_json::from_str::<ToWorker>(&line) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "unreadable request line");
                continue;
            }
        };
        match msg {
            ToWorker::Generate {
                id,
                tokens,
                sampling,
                max_tokens,
                cache,
            } => {
                // llama.cpp aborts the process on a token outside the vocabulary.
                if let Some(&bad) = tokens.iter().find(|&&t| t < 0 || t >= n_vocab) {
                    let e = EngineError::InvalidToken {
                        token: bad as u32,
                        vocab: n_vocab as u32,
                    };
                    let _ = out.send(FromWorker::Event {
                        id,
                        event: Event::Error(e.to_string()),
                    });
                    continue;
                }
                match engine.generate(Prompt::from_ids(&tokens), sampling, Some(max_tokens), cache)
                {
                    Ok(mut rx) => {
                        let out = out.clone();
                        let task = tokio::spawn(async move {
                            while let Some(event) = rx.recv().await {
                                if out.send(FromWorker::Event { id, event }).is_err() {
                                    break;
                                }
                            }
                        });
                        running.retain(|_, h| !h.is_finished());
                        running.insert(id, task.abort_handle());
                    }
                    Err(e) => {
                        let _ = out.send(FromWorker::Event {
                            id,
                            event: Event::Error(e.to_string()),
                        });
                    }
                }
            }
            // Aborting the forwarder drops the receiver; the scheduler frees the sequence.
            ToWorker::Cancel { id } => {
                if let Some(h) = running.remove(&id) {
                    h.abort();
                }
            }
        }
    }
    Ok(())
}
