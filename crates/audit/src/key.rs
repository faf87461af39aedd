//! The log's Ed25519 signing key: created on first start, kept in a file only its owner may
//! read, and published as a signed-note verifier key.

use std::io::Write as _;
use std::path::Path;

use base64::Engine as _;
use ed25519_dalek::{Signer as _, SigningKey};
use signed_note::{Note, Signer};
use tlog_tiles::checkpoint::Checkpoint;
use tlog_tiles::tlog::Hash;

/// A signing key and the log's origin line (its name in checkpoints and keys).
pub struct LogKey {
    origin: String,
    key: SigningKey,
}

impl std::fmt::Debug for LogKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogKey")
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read or write the log key {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("the log key file {0} is not a key Enclave wrote")]
    Malformed(String),
    #[error("cannot sign a checkpoint: {0}")]
    Sign(String),
}

const ALG_ED25519: u8 = 1;

impl LogKey {
    /// Loads the key at `path`, or creates one (mode 0600) when there is none.
    pub fn load_or_create(path: &Path, origin: &str) -> Result<Self, KeyError> {
        let io = |source| KeyError::Io {
            path: path.display().to_string(),
            source,
        };
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(text.trim())
                    .map_err(|_| KeyError::Malformed(path.display().to_string()))?;
                let seed: [u8; 32] = bytes
                    .try_into()
                    .map_err(|_| KeyError::Malformed(path.display().to_string()))?;
                Ok(Self {
                    origin: origin.to_string(),
                    key: SigningKey::from_bytes(&seed),
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let seed: [u8; 32] = rand::random();
                let mut options = std::fs::OpenOptions::new();
                options.write(true).create_new(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
                let mut file = options.open(path).map_err(io)?;
                let text = base64::engine::general_purpose::STANDARD.encode(seed);
                file.write_all(text.as_bytes()).map_err(io)?;
                file.sync_all().map_err(io)?;
                Ok(Self {
                    origin: origin.to_string(),
                    key: SigningKey::from_bytes(&seed),
                })
            }
            Err(e) => Err(io(e)),
        }
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The verifier key in signed-note form: `<origin>+<key id>+<base64(0x01 ‖ public key)>`.
    pub fn public_key(&self) -> String {
        signed_note::new_ed25519_verifier_key(&self.origin, &self.key.verifying_key())
    }

    /// A signed checkpoint for a tree of `size` records with root `root`.
    pub fn checkpoint(&self, size: u64, root: Hash) -> Result<String, KeyError> {
        let cp = Checkpoint::new(&self.origin, size, root, "")
            .map_err(|e| KeyError::Sign(e.to_string()))?;
        let mut note = Note::new(&cp.to_bytes(), &[]).map_err(|e| KeyError::Sign(e.to_string()))?;
        note.add_sigs(&[self as &dyn Signer])
            .map_err(|e| KeyError::Sign(e.to_string()))?;
        String::from_utf8(note.to_bytes()).map_err(|e| KeyError::Sign(e.to_string()))
    }
}

impl Signer for LogKey {
    fn name(&self) -> &str {
        &self.origin
    }

    fn key_id(&self) -> u32 {
        let mut material = vec![ALG_ED25519];
        material.extend_from_slice(self.key.verifying_key().as_bytes());
        signed_note::key_id(&self.origin, &material)
    }

    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, signature::Error> {
        Ok(self.key.sign(msg).to_bytes().to_vec())
    }
}

/// Parses and verifies a signed checkpoint against a verifier key; returns its size and root.
pub fn open_checkpoint(text: &[u8], public_key: &str) -> Result<(u64, Hash), String> {
    let verifier = signed_note::StandardVerifier::new(public_key)
        .map_err(|e| format!("the public key is not a signed-note verifier key: {e}"))?;
    let note = Note::from_bytes(text).map_err(|e| format!("not a signed note: {e}"))?;
    let list = signed_note::VerifierList::new(vec![Box::new(verifier)]);
    note.verify(&list)
        .map_err(|e| format!("the signature does not verify: {e}"))?;
    let cp = Checkpoint::from_bytes(note.text()).map_err(|e| format!("not a checkpoint: {e}"))?;
    Ok((cp.size(), *cp.hash()))
}
