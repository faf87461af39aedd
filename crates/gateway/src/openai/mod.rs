//! OpenAI's surface: chat completions (streamed and not), embeddings and models, in OpenAI's
//! wire format exactly, so the official SDKs work unchanged.

pub mod chat;
pub mod embeddings;
pub mod models;
pub mod responses;
pub mod wire;

pub use wire::*;
