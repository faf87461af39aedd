//! The one module that touches llama.cpp (through `llama-cpp-2`): model loading, the prompt, and
//! the continuous-batching scheduler. Nothing outside this module names a llama.cpp type.
//!
//! # The scheduler
//!
//! One OS thread owns the llama.cpp context. The context holds `slots` sequences, each with its own
//! KV-cache range; a request gets a free sequence, or waits in a FIFO queue. Every turn of the loop
//! builds one batch: first one token for every sequence that is decoding, then prompt chunks of
//! sequences still reading their prompt, up to `n_batch` tokens in all. One `decode` call serves
//! them all, so a long prompt never stalls other streams for more than one chunk, and decode steps
//! of many streams share the weight reads that dominate CPU inference. Each sequence samples with
//! its own sampler chain (its own seed), so a request's text does not depend on its neighbours.
//! A request whose receiver is gone (the client disconnected) is dropped at the next turn and its
//! KV-cache range cleared.

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, OnceLock};

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use tokio::sync::mpsc;

use crate::text::{TextStream, Utf8Decoder};
use crate::{ChatMessage, EngineError, EngineStats, Event, FinishReason, Sampling};

/// llama.cpp's `LLAMA_FLASH_ATTN_TYPE_DISABLED`.
const FLASH_ATTN_DISABLED: i32 = 0;

static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();

fn backend() -> Result<&'static LlamaBackend, EngineError> {
    BACKEND
        .get_or_init(|| {
            // The kernels go in before llama.cpp starts; a no-op when the engine loaded them
            // already with the operator's choice.
            crate::kernels::load(&crate::kernels::KernelChoice::default())
                .map_err(|e| e.to_string())?;
            LlamaBackend::init().map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| EngineError::Load(format!("llama.cpp backend: {e}")))
}

/// How the chat engine is sized.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ChatConfig {
    /// Concurrent sequences (KV-cache slots). Requests beyond this wait in a queue.
    pub slots: u32,
    /// Context length of each sequence: prompt plus completion.
    pub ctx_per_slot: u32,
    /// Tokens per `decode` call; caps how long one turn of the scheduler takes.
    pub batch_tokens: u32,
    /// CPU threads for llama.cpp; 0 picks the number of cores.
    pub threads: u32,
    /// Requests allowed to wait for a sequence; beyond it `generate` answers
    /// [`EngineError::Overloaded`] at once instead of queueing without bound.
    pub max_queue: usize,
    /// Lets the engine choose llama.cpp's AMX kernels. Off: they crash on some machines
    /// (llama.cpp #20824), so the best other variant is taken.
    pub allow_amx: bool,
    /// A CPU kernel variant by name (`haswell`, `zen4`, …) instead of the best this CPU runs.
    #[serde(default)]
    pub cpu_variant: Option<String>,
    /// Layers to offload when llama.cpp finds a GPU; `None` offloads every layer. Ignored
    /// without a GPU.
    #[serde(default)]
    pub gpu_layers: Option<u32>,
    /// A chat template to use instead of the model's own (for a GGUF that carries none).
    #[serde(default)]
    pub chat_template: Option<String>,
    /// A llama.cpp LoRA adapter applied over the model (a fine-tuned model), at scale 1.
    #[serde(default)]
    pub adapter: Option<std::path::PathBuf>,
}

impl Default for ChatConfig {
    fn default() -> Self {
        Self {
            slots: 16,
            ctx_per_slot: 2048,
            batch_tokens: 512,
            threads: 0,
            max_queue: 256,
            allow_amx: false,
            cpu_variant: None,
            gpu_layers: None,
            chat_template: None,
            adapter: None,
        }
    }
}

/// A prompt ready to run: the template applied and tokenized.
#[derive(Debug, Clone)]
pub struct Prompt {
    tokens: Vec<LlamaToken>,
}

impl Prompt {
    /// A prompt of token ids produced by the same model's [`Prompter`].
    pub fn from_ids(ids: &[i32]) -> Self {
        Self {
            tokens: ids.iter().map(|&t| LlamaToken(t)).collect(),
        }
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Token ids, for reference checks against other implementations.
    pub fn token_ids(&self) -> Vec<i32> {
        self.tokens.iter().map(|t| t.0).collect()
    }
}

struct Job {
    prompt: Vec<LlamaToken>,
    sampling: Sampling,
    max_tokens: u32,
    /// Whose prompt cache this request may read and leave its prompt in (the tenant); `None`
    /// neither reads nor keeps one.
    cache: Option<String>,
    events: mpsc::UnboundedSender<Event>,
}

/// A chat model's vocabulary and chat template: turns conversations into prompt tokens and
/// tokens back into text. Loaded without weights ([`Prompter::load`]) it runs no kernels at all,
/// so the server can build prompts while the engine itself lives in another process.
pub struct Prompter {
    model: Arc<LlamaModel>,
    template: minijinja::Environment<'static>,
    bos: String,
    eos: String,
}

/// The embedded chat model and the handle to its scheduler thread.
pub struct ChatEngine {
    prompter: Prompter,
    jobs: std_mpsc::Sender<Job>,
    config: ChatConfig,
    stats: Arc<EngineStats>,
}

const TEMPLATE_NAME: &str = "chat";

impl Prompter {
    /// Reads only the vocabulary and the chat template of a GGUF file: no weights, no compute.
    /// `template` replaces the model's own chat template when given.
    pub fn load(path: &Path, template: Option<&str>) -> Result<Self, EngineError> {
        let backend = backend()?;
        let params = LlamaModelParams::default().with_vocab_only(true);
        let model = LlamaModel::load_from_file(backend, path, &params)
            .map_err(|e| EngineError::Load(format!("{}: {e}", path.display())))?;
        Self::new(Arc::new(model), template)
    }

    fn new(model: Arc<LlamaModel>, template: Option<&str>) -> Result<Self, EngineError> {
        let source = match template {
            Some(t) => t.to_string(),
            None => model.meta_val_str("tokenizer.chat_template").map_err(|e| {
                EngineError::Load(format!("the model carries no chat template: {e}"))
            })?,
        };
        let mut template = minijinja::Environment::new();
        template.add_function(
            "raise_exception",
            |msg: String| -> Result<String, minijinja::Error> {
                Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    msg,
                ))
            },
        );
        template
            .add_template_owned(TEMPLATE_NAME, source)
            .map_err(|e| {
                EngineError::Load(format!("the model's chat template does not parse: {e}"))
            })?;
        let vocab = model.vocab();
        let piece = |t: LlamaToken| {
            String::from_utf8_lossy(&vocab.token_to_piece(t, true, None)).into_owned()
        };
        let bos = piece(vocab.bos());
        let eos = piece(vocab.eos());
        Ok(Self {
            model,
            template,
            bos,
            eos,
        })
    }

    /// The number of tokens in the vocabulary.
    pub fn n_vocab(&self) -> i32 {
        self.model.n_vocab()
    }

    /// Applies the model's own chat template and tokenizes the result.
    pub fn prompt(&self, messages: &[ChatMessage]) -> Result<Prompt, EngineError> {
        let text = self.render(messages)?;
        Ok(Prompt {
            tokens: self.model.vocab().tokenize(text.as_bytes(), false, true),
        })
    }

    /// The prompt text the template gives for `messages`, ending with the assistant's turn.
    pub fn render(&self, messages: &[ChatMessage]) -> Result<String, EngineError> {
        let tmpl = self
            .template
            .get_template(TEMPLATE_NAME)
            .map_err(|e| EngineError::Template(e.to_string()))?;
        tmpl.render(minijinja::context! {
            messages => messages,
            add_generation_prompt => true,
            bos_token => &self.bos,
            eos_token => &self.eos,
        })
        .map_err(|e| EngineError::Template(e.to_string()))
    }

    /// A conversation ending in the assistant's answer, as training sees it: the prompt tokens
    /// of every message before the answer (exactly what serving would send), then the answer
    /// and the template's end-of-turn token. Returns the ids and where the answer starts.
    pub fn training_example(
        &self,
        messages: &[ChatMessage],
    ) -> Result<(Vec<i32>, usize), EngineError> {
        let Some((answer, before)) = messages.split_last() else {
            return Err(EngineError::Template("an example has no messages".into()));
        };
        if answer.role != "assistant" || before.is_empty() {
            return Err(EngineError::Template(
                "an example must end with the assistant's answer to at least one message".into(),
            ));
        }
        let mut ids = self.prompt(before)?.token_ids();
        let first = ids.len();
        let text = format!("{}{}", answer.content, self.eos);
        ids.extend(
            self.model
                .vocab()
                .tokenize(text.as_bytes(), false, true)
                .iter()
                .map(|t| t.0),
        );
        Ok((ids, first))
    }

    /// Tokenizes raw text as a prompt, with no chat template (benchmarks, completions).
    pub fn tokenize(&self, text: &str) -> Prompt {
        Prompt {
            tokens: self.model.vocab().tokenize(text.as_bytes(), false, false),
        }
    }

    /// A prompt of the first `n` tokens of `prompt`.
    pub fn truncate(&self, prompt: &Prompt, n: usize) -> Prompt {
        Prompt {
            tokens: prompt.tokens[..n.min(prompt.tokens.len())].to_vec(),
        }
    }

    /// The text of token ids, as a client would read it (special tokens not rendered).
    pub fn detokenize(&self, ids: &[i32]) -> String {
        let vocab = self.model.vocab();
        let mut utf8 = Utf8Decoder::default();
        let mut out = String::new();
        for &id in ids {
            out.push_str(&utf8.push(&vocab.token_to_piece(LlamaToken(id), false, None)));
        }
        out.push_str(&utf8.finish());
        out
    }
}

impl ChatEngine {
    /// Loads a GGUF model and starts the scheduler thread.
    pub fn load(path: &Path, config: ChatConfig) -> Result<Self, EngineError> {
        crate::kernels::load(&crate::kernels::KernelChoice {
            variant: config.cpu_variant.clone(),
            allow_amx: config.allow_amx,
        })?;
        let backend = backend()?;
        let report = crate::kernels::report();
        if report.uses_amx() && !config.allow_amx {
            return Err(EngineError::Load(format!(
                "llama.cpp would run AMX kernels ({:?}), which crash on some machines (llama.cpp #20824); set `[chat] allow_amx = true` to allow them",
                report.buffer_types
            )));
        }
        tracing::info!(variant = %report.variant, features = ?report.features, buffer_types = ?report.buffer_types, devices = ?report.devices, "llama.cpp kernels");
        let gpu_layers = if report.has_gpu() {
            config.gpu_layers.unwrap_or(u32::MAX)
        } else {
            0
        };
        let params = LlamaModelParams::default().with_n_gpu_layers(gpu_layers);
        let mut model = LlamaModel::load_from_file(backend, path, &params)
            .map_err(|e| EngineError::Load(format!("{}: {e}", path.display())))?;
        let adapter = match &config.adapter {
            Some(file) => Some(
                model
                    .lora_adapter_init(file)
                    .map_err(|e| EngineError::Load(format!("adapter {}: {e}", file.display())))?,
            ),
            None => None,
        };
        let model = Arc::new(model);
        let prompter = Prompter::new(Arc::clone(&model), config.chat_template.as_deref())?;
        let threads = if config.threads == 0 {
            std::thread::available_parallelism().map_or(2, |n| n.get() as u32)
        } else {
            config.threads
        };
        let config = ChatConfig { threads, ..config };
        let (jobs, rx) = std_mpsc::channel();
        let stats = Arc::new(EngineStats::default());
        let (ready_tx, ready_rx) = std_mpsc::channel();
        {
            let model = Arc::clone(&model);
            let config = config.clone();
            let stats = Arc::clone(&stats);
            std::thread::Builder::new()
                .name("enclave-llama".to_string())
                .spawn(move || scheduler(&model, adapter, &config, &rx, &stats, &ready_tx))
                .map_err(|e| {
                    EngineError::Load(format!("cannot start the scheduler thread: {e}"))
                })?;
        }
        ready_rx.recv().map_err(|_| {
            EngineError::Load("the scheduler thread stopped while starting".to_string())
        })??;
        Ok(Self {
            prompter,
            jobs,
            config,
            stats,
        })
    }

    pub fn config(&self) -> &ChatConfig {
        &self.config
    }

    pub fn stats(&self) -> &Arc<EngineStats> {
        &self.stats
    }

    /// The model's vocabulary and chat template.
    pub fn prompter(&self) -> &Prompter {
        &self.prompter
    }

    /// Applies the model's own chat template and tokenizes the result.
    pub fn prompt(&self, messages: &[ChatMessage]) -> Result<Prompt, EngineError> {
        self.prompter.prompt(messages)
    }

    /// Tokenizes raw text as a prompt, with no chat template (benchmarks, completions).
    pub fn tokenize(&self, text: &str) -> Prompt {
        self.prompter.tokenize(text)
    }

    /// A prompt of the first `n` tokens of `prompt`.
    pub fn truncate(&self, prompt: &Prompt, n: usize) -> Prompt {
        self.prompter.truncate(prompt, n)
    }

    /// The text of token ids, as a client would read it.
    pub fn detokenize(&self, ids: &[i32]) -> String {
        self.prompter.detokenize(ids)
    }

    /// Queues a generation. Events arrive on the returned receiver; dropping it cancels the work.
    ///
    /// `cache` names the prompt cache the request belongs to (the tenant): a sequence that last
    /// held a prompt of the same cache, sharing a prefix with this one, is reused from where the
    /// two differ. Prompts of different caches never share computed state, so one tenant's
    /// cache is invisible to another, in content and in timing.
    pub fn generate(
        &self,
        prompt: Prompt,
        sampling: Sampling,
        max_tokens: Option<u32>,
        cache: Option<String>,
    ) -> Result<mpsc::UnboundedReceiver<Event>, EngineError> {
        let max_tokens = completion_budget(prompt.len(), max_tokens, &self.config)?;
        // Reserve a place in the queue first, so concurrent callers cannot overshoot the cap.
        let waiting = self.stats.queued.fetch_add(1, Ordering::AcqRel);
        if waiting >= self.config.max_queue {
            self.stats.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(EngineError::Overloaded { waiting });
        }
        let (events, rx) = mpsc::unbounded_channel();
        self.jobs
            .send(Job {
                prompt: prompt.tokens,
                sampling,
                max_tokens,
                cache,
                events,
            })
            .map_err(|_| {
                self.stats.queued.fetch_sub(1, Ordering::Relaxed);
                EngineError::Stopped
            })?;
        Ok(rx)
    }
}

/// How many tokens a request may generate: `max_tokens` if the prompt leaves room for it, else
/// the room left; an empty prompt or one that fills the window is refused.
pub(crate) fn completion_budget(
    prompt: usize,
    max_tokens: Option<u32>,
    config: &ChatConfig,
) -> Result<u32, EngineError> {
    let window = config.ctx_per_slot as usize;
    let room = window.saturating_sub(prompt);
    let overflow = |requested: usize| EngineError::ContextOverflow {
        prompt,
        requested,
        window,
    };
    if prompt == 0 || room == 0 {
        return Err(overflow(max_tokens.unwrap_or(0) as usize));
    }
    match max_tokens {
        Some(n) if n as usize > room => Err(overflow(n as usize)),
        Some(n) => Ok(n),
        None => Ok(room as u32),
    }
}

/// A request that holds a sequence.
struct Seq {
    id: i32,
    job: Job,
    /// `None` is greedy: an argmax over the logits row, without the full-vocabulary candidate
    /// array llama.cpp's sampler builds for every token.
    sampler: Option<LlamaSampler>,
    /// Prompt tokens already in the KV cache.
    fed: usize,
    /// Position of the next token in this sequence.
    pos: i32,
    /// The token sampled last, to feed at the next turn.
    next: Option<LlamaToken>,
    /// Index of this sequence's logits in the current batch.
    logits_at: Option<i32>,
    generated: u32,
    /// Prompt tokens reused from the sequence's cache.
    cached: u32,
    text: TextStream,
}

/// The prompt a sequence's KV cache still holds after its request finished, and whose it is.
struct Kept {
    owner: String,
    tokens: Vec<LlamaToken>,
    /// When it was last used, for evicting the oldest.
    used: u64,
}

/// The fewest prompt tokens worth taking from the cache. Below it a prompt is computed afresh:
/// the saving is small, and a fresh computation keeps seeded sampling reproducible (the rest of a
/// reused prompt is computed in a batch of another shape, which can move the last bits of the
/// logits and so, now and then, a sampled token).
const MIN_REUSE: usize = 256;

/// How many leading tokens `a` and `b` share.
fn common_prefix(a: &[LlamaToken], b: &[LlamaToken]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// The free sequence a job should take: the one whose kept prompt of the same cache shares the
/// longest prefix with the job's, else an empty one, else the one kept longest unused. Returns
/// the sequence and how many prompt tokens it can reuse.
fn pick_sequence(
    slots: &[Option<Seq>],
    kept: &[Option<Kept>],
    job: &Job,
) -> Option<(usize, usize)> {
    let free = || (0..slots.len()).filter(|i| slots[*i].is_none());
    if let Some(owner) = &job.cache {
        // At least one prompt token is always computed: its logits start the answer.
        let most = job.prompt.len().saturating_sub(1);
        let best = free()
            .filter_map(|i| {
                let k = kept[i].as_ref().filter(|k| k.owner == *owner)?;
                Some((i, common_prefix(&k.tokens, &job.prompt).min(most)))
            })
            .max_by_key(|(_, n)| *n)
            .filter(|(_, n)| *n >= MIN_REUSE);
        if best.is_some() {
            return best;
        }
    }
    free()
        .find(|i| kept[*i].is_none())
        .or_else(|| free().min_by_key(|i| kept[*i].as_ref().map_or(0, |k| k.used)))
        .map(|i| (i, 0))
}

impl Seq {
    fn new(id: i32, job: Job) -> Self {
        let s = &job.sampling;
        let sampler = if s.temperature <= 0.0 {
            None
        } else {
            let mut chain = Vec::with_capacity(3);
            if s.top_p < 1.0 {
                chain.push(LlamaSampler::top_p(s.top_p, 1));
            }
            chain.push(LlamaSampler::temp(s.temperature));
            chain.push(LlamaSampler::dist(s.seed));
            Some(LlamaSampler::chain_simple(chain))
        };
        let text = TextStream::new(job.sampling.stop.clone());
        Self {
            id,
            job,
            sampler,
            fed: 0,
            pos: 0,
            next: None,
            logits_at: None,
            generated: 0,
            cached: 0,
            text,
        }
    }

    fn finish(&mut self, reason: FinishReason) {
        let rest = self.text.finish();
        if !rest.is_empty() {
            let _ = self.job.events.send(Event::Text(rest));
        }
        let _ = self.job.events.send(Event::Done {
            reason,
            prompt_tokens: self.job.prompt.len() as u32,
            completion_tokens: self.generated,
            cached_tokens: self.cached,
        });
    }
}

/// The first index of the largest logit, as llama.cpp's greedy sampler picks it.
fn argmax(logits: &[f32]) -> LlamaToken {
    let mut best = 0;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] {
            best = i;
        }
    }
    LlamaToken(best as i32)
}

/// Sequences kept free for interactive requests whatever background work waits: a quarter
/// (none below four sequences, so background work always runs).
pub fn interactive_reserve(slots: usize) -> usize {
    slots / 4
}

fn scheduler(
    model: &LlamaModel,
    adapter: Option<llama_cpp_2::model::LlamaLoraAdapter>,
    config: &ChatConfig,
    jobs: &std_mpsc::Receiver<Job>,
    stats: &EngineStats,
    ready: &std_mpsc::Sender<Result<(), EngineError>>,
) {
    let n_ctx = config.slots.saturating_mul(config.ctx_per_slot);
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(n_ctx))
        .with_n_batch(config.batch_tokens)
        .with_n_ubatch(config.batch_tokens)
        .with_n_seq_max(config.slots)
        .with_n_threads(config.threads as i32)
        .with_n_threads_batch(config.threads as i32)
        // Flash attention off (llama.cpp's `LLAMA_FLASH_ATTN_TYPE_DISABLED`), as llama.cpp's own
        // server and llama-cpp-python default to on CPU: `auto` turns it on here, which changes
        // the logits' rounding and so where greedy decoding breaks near-ties.
        .with_flash_attention_policy(FLASH_ATTN_DISABLED);
    let backend = match backend() {
        Ok(b) => b,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let mut ctx = match model.new_context(backend, params) {
        Ok(c) => c,
        Err(e) => {
            let _ = ready.send(Err(EngineError::Load(format!(
                "cannot create the context: {e}"
            ))));
            return;
        }
    };
    // The adapter lives as long as the context that applies it (this thread's).
    let mut adapter = adapter;
    if let Some(a) = adapter.as_mut()
        && let Err(e) = ctx.lora_adapter_set(a, 1.0)
    {
        let _ = ready.send(Err(EngineError::Load(format!(
            "cannot apply the adapter: {e}"
        ))));
        return;
    }
    let _ = ready.send(Ok(()));
    let vocab = model.vocab();
    let budget = config.batch_tokens as usize;
    let mut batch = LlamaBatch::new(budget, 1);
    let mut waiting: VecDeque<Job> = VecDeque::new();
    let mut slots: Vec<Option<Seq>> = (0..config.slots).map(|_| None).collect();
    let mut kept: Vec<Option<Kept>> = (0..config.slots).map(|_| None).collect();
    let mut tick = 0u64;
    let window = config.ctx_per_slot as i32;

    loop {
        // Block only when there is nothing to do; otherwise take whatever has arrived.
        if slots.iter().all(Option::is_none) && waiting.is_empty() {
            match jobs.recv() {
                Ok(job) => waiting.push_back(job),
                Err(_) => return,
            }
        }
        while let Ok(job) = jobs.try_recv() {
            waiting.push_back(job);
        }
        // Requests whose client went away before they were admitted never take a slot.
        waiting.retain(|job| {
            let alive = !job.events.is_closed();
            if !alive {
                stats.queued.fetch_sub(1, Ordering::Relaxed);
            }
            alive
        });
        for slot in &mut slots {
            if let Some(seq) = slot
                && seq.job.events.is_closed()
            {
                let _ = ctx.clear_kv_cache_seq(Some(seq.id as u32), None, None);
                *slot = None;
                stats.active.fetch_sub(1, Ordering::Relaxed);
                stats.cancelled.fetch_add(1, Ordering::Relaxed);
            }
        }
        // Interactive requests are admitted before background ones (a stable order within
        // each), and background work never takes the sequences kept for interactive requests.
        waiting
            .make_contiguous()
            .sort_by_key(|job| job.sampling.background);
        let mut background = slots
            .iter()
            .flatten()
            .filter(|seq| seq.job.sampling.background)
            .count();
        let background_cap = slots.len().saturating_sub(interactive_reserve(slots.len()));
        while let Some(job) = waiting.front() {
            if job.sampling.background && background >= background_cap {
                break;
            }
            let Some((id, reuse)) = pick_sequence(&slots, &kept, job) else {
                break;
            };
            background += usize::from(job.sampling.background);
            let Some(job) = waiting.pop_front() else {
                break;
            };
            // What the sequence holds beyond the shared prefix (all of it for another cache)
            // goes; the prefix is not computed again.
            let _ = ctx.clear_kv_cache_seq(Some(id as u32), Some(reuse as u32), None);
            kept[id] = None;
            stats.queued.fetch_sub(1, Ordering::Relaxed);
            stats.active.fetch_add(1, Ordering::Relaxed);
            let mut seq = Seq::new(id as i32, job);
            seq.fed = reuse;
            seq.pos = reuse as i32;
            seq.cached = reuse as u32;
            slots[id] = Some(seq);
        }

        batch.clear();
        // Decode steps first: they are what streaming clients are waiting on.
        for seq in slots.iter_mut().flatten() {
            seq.logits_at = None;
            if let Some(tok) = seq.next.take()
                && batch.add(tok, seq.pos, &[seq.id], true).is_ok()
            {
                seq.logits_at = Some(batch.n_tokens() - 1);
                seq.pos += 1;
            }
        }
        // Then prompt chunks, in slot order, with what room is left.
        for seq in slots.iter_mut().flatten() {
            let remaining = seq.job.prompt.len() - seq.fed;
            if remaining == 0 {
                continue;
            }
            let room = budget.saturating_sub(batch.n_tokens() as usize);
            let take = remaining.min(room);
            for k in 0..take {
                let last = seq.fed + k + 1 == seq.job.prompt.len();
                if batch
                    .add(seq.job.prompt[seq.fed + k], seq.pos, &[seq.id], last)
                    .is_err()
                {
                    break;
                }
                seq.pos += 1;
                if last {
                    seq.logits_at = Some(batch.n_tokens() - 1);
                }
            }
            seq.fed += take;
        }
        if batch.n_tokens() == 0 {
            continue;
        }
        let n = batch.n_tokens() as u64;
        if let Err(e) = ctx.decode(&mut batch) {
            tracing::error!(error = %e, tokens = n, "llama.cpp decode failed");
            for slot in slots.iter_mut() {
                if let Some(seq) = slot {
                    let _ = seq
                        .job
                        .events
                        .send(Event::Error(format!("the model failed to decode: {e}")));
                    let _ = ctx.clear_kv_cache_seq(Some(seq.id as u32), None, None);
                    *slot = None;
                    stats.active.fetch_sub(1, Ordering::Relaxed);
                }
            }
            continue;
        }
        stats.decode_calls.fetch_add(1, Ordering::Relaxed);
        stats.batched_tokens.fetch_add(n, Ordering::Relaxed);

        for slot in slots.iter_mut() {
            let Some(seq) = slot else { continue };
            let Some(at) = seq.logits_at else { continue };
            let token = match &mut seq.sampler {
                Some(sampler) => sampler.sample(&ctx, at),
                None => argmax(ctx.get_logits_ith(at)),
            };
            let reason = if vocab.is_eog(token) {
                Some(FinishReason::Stop)
            } else {
                seq.generated += 1;
                let (text, stopped) = seq.text.push(&vocab.token_to_piece(token, false, None));
                if !text.is_empty() {
                    let _ = seq.job.events.send(Event::Text(text));
                }
                if stopped {
                    Some(FinishReason::Stop)
                } else if seq.generated >= seq.job.max_tokens || seq.pos >= window {
                    Some(FinishReason::Length)
                } else {
                    seq.next = Some(token);
                    None
                }
            };
            if let Some(reason) = reason {
                seq.finish(reason);
                // The prompt stays in the KV cache for the next request of the same cache; what
                // was generated after it goes.
                let id = seq.id as usize;
                let keep = seq.job.cache.take().filter(|_| seq.fed > 0);
                let from = if keep.is_some() { seq.fed as u32 } else { 0 };
                let _ = ctx.clear_kv_cache_seq(Some(seq.id as u32), Some(from), None);
                if let (Some(owner), Some(k)) = (keep, kept.get_mut(id)) {
                    tick += 1;
                    let mut tokens = std::mem::take(&mut seq.job.prompt);
                    tokens.truncate(seq.fed);
                    *k = Some(Kept {
                        owner,
                        tokens,
                        used: tick,
                    });
                }
                *slot = None;
                stats.active.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }
}
