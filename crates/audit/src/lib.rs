//! The audit log: an append-only Merkle tree (RFC 9162 hashing) of canonical records, signed
//! checkpoints (C2SP signed-note / tlog-checkpoint), inclusion and consistency proofs, and an
//! offline verifier.
//!
//! It owns the durability and integrity of what happened. It must never offer a way to delete or
//! rewrite a record, never acknowledge a record before it is on disk, and never hold a secret or
//! prompt text in a record. Hashing, proofs and checkpoint text come from `tlog_tiles` and
//! `signed_note`; this crate adds storage, group commit, keys and verification of exports.

pub mod content;
pub mod key;
pub mod log;
pub mod open;
pub mod record;
pub mod tree;
pub mod verify;

pub use content::ContentVault;
pub use key::LogKey;
pub use log::{AuditLog, LogError, OpenCall};
pub use record::{Attempt, Record};
pub use tlog_tiles::tlog::Hash;
pub use tree::Tree;
pub use verify::{VerifyError, verify_export};
