//! Kept content: for tenants whose policy asks to keep what was asked and answered, the text is
//! sealed per tenant (ChaCha20-Poly1305, a key derived per tenant with HKDF-SHA256 from one master
//! key) beside the log, named by the record's index. Records themselves never hold the text.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use hkdf::Hkdf;
use sha2::Sha256;

#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    #[error("content store {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("the content key file {0} is not one Enclave wrote")]
    BadKey(String),
    #[error(
        "sealed content {0} does not open with this tenant's key: altered, or another tenant's"
    )]
    Seal(String),
}

/// Seals and opens kept content.
pub struct ContentVault {
    dir: PathBuf,
    master: [u8; 32],
}

impl std::fmt::Debug for ContentVault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContentVault")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ContentError + '_ {
    move |source| ContentError::Io {
        path: path.display().to_string(),
        source,
    }
}

impl ContentVault {
    /// Opens the vault in `dir` (`content.key`, mode 0600, made on first use; `content/`).
    pub fn open(dir: &Path) -> Result<Self, ContentError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let path = dir.join("content.key");
        let master = match std::fs::read(&path) {
            Ok(bytes) => bytes
                .try_into()
                .map_err(|_| ContentError::BadKey(path.display().to_string()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key: [u8; 32] = rand::random();
                let mut options = std::fs::OpenOptions::new();
                options.write(true).create_new(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
                let mut f = options.open(&path).map_err(io(&path))?;
                f.write_all(&key).map_err(io(&path))?;
                f.sync_all().map_err(io(&path))?;
                key
            }
            Err(e) => return Err(io(&path)(e)),
        };
        Ok(Self {
            dir: dir.join("content"),
            master,
        })
    }

    fn cipher(&self, tenant: &str) -> ChaCha20Poly1305 {
        let mut key = [0u8; 32];
        let hk = Hkdf::<Sha256>::new(None, &self.master);
        // 32 bytes is always a valid HKDF-SHA256 output length.
        let _ = hk.expand(format!("enclave content v1 {tenant}").as_bytes(), &mut key);
        ChaCha20Poly1305::new(Key::from_slice(&key))
    }

    fn path(&self, tenant: &str, index: u64) -> PathBuf {
        // Tenant names are letters, digits, `-`, `_`, `.`: safe as a directory name.
        self.dir.join(tenant).join(format!("{index}.sealed"))
    }

    /// Seals `plain` for record `index` of `tenant`, durably.
    pub fn seal(&self, tenant: &str, index: u64, plain: &[u8]) -> Result<(), ContentError> {
        let nonce: [u8; 12] = rand::random();
        let aad = format!("{tenant}/{index}");
        let sealed = self
            .cipher(tenant)
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plain,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| ContentError::Seal(aad.clone()))?;
        let path = self.path(tenant, index);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        let mut f = std::fs::File::create(&path).map_err(io(&path))?;
        f.write_all(&nonce).map_err(io(&path))?;
        f.write_all(&sealed).map_err(io(&path))?;
        f.sync_all().map_err(io(&path))
    }

    /// Opens what was kept for record `index` of `tenant`.
    pub fn open_sealed(&self, tenant: &str, index: u64) -> Result<Vec<u8>, ContentError> {
        let path = self.path(tenant, index);
        let bytes = std::fs::read(&path).map_err(io(&path))?;
        let aad = format!("{tenant}/{index}");
        if bytes.len() < 12 {
            return Err(ContentError::Seal(aad));
        }
        let (nonce, sealed) = bytes.split_at(12);
        self.cipher(tenant)
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| ContentError::Seal(aad))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_is_sealed_per_tenant() {
        let dir = tempfile::tempdir().unwrap();
        let vault = ContentVault::open(dir.path()).unwrap();
        vault.seal("health", 7, b"the prompt text").unwrap();
        let raw = std::fs::read(dir.path().join("content/health/7.sealed")).unwrap();
        assert!(
            !raw.windows(6).any(|w| w == b"prompt"),
            "stored sealed, not plain"
        );
        assert_eq!(vault.open_sealed("health", 7).unwrap(), b"the prompt text");
        // Another tenant's key, or a file moved to another index, does not open it.
        std::fs::create_dir_all(dir.path().join("content/fraud")).unwrap();
        std::fs::copy(
            dir.path().join("content/health/7.sealed"),
            dir.path().join("content/fraud/7.sealed"),
        )
        .unwrap();
        assert!(vault.open_sealed("fraud", 7).is_err());
        std::fs::copy(
            dir.path().join("content/health/7.sealed"),
            dir.path().join("content/health/8.sealed"),
        )
        .unwrap();
        assert!(vault.open_sealed("health", 8).is_err());
        // Reopening uses the same master key.
        let again = ContentVault::open(dir.path()).unwrap();
        assert_eq!(again.open_sealed("health", 7).unwrap(), b"the prompt text");
    }
}
