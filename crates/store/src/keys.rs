//! API key minting and parsing. Pure: no I/O.
//!
//! A key reads `ek_<id>_<secret>`: `id` is 12 hex characters, public, and names the key in lists,
//! logs and audit records; `secret` is 32 random bytes in URL-safe base64. Only the SHA-256 of the
//! whole key is stored. A fast hash is right here (unlike for passwords) because the secret has
//! 256 bits of entropy: nothing to brute-force, and no Argon2 cost for an attacker to trigger on
//! every request.

use base64::Engine as _;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

const PREFIX: &str = "ek_";

/// A freshly minted key: shown to its owner once, then only its hash is kept.
#[derive(Debug)]
pub struct MintedKey {
    pub id: String,
    pub secret: String,
    pub hash: [u8; 32],
}

/// Mints a new key from the operating system's random source.
pub fn mint() -> MintedKey {
    let mut rng = rand::rng();
    let mut id = [0u8; 6];
    rng.fill_bytes(&mut id);
    let mut secret = [0u8; 32];
    rng.fill_bytes(&mut secret);
    let id = hex::encode(id);
    let secret = format!(
        "{PREFIX}{id}_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret)
    );
    let hash = hash(&secret);
    MintedKey { id, secret, hash }
}

/// The key id a presented secret claims, if it has the shape of one of ours.
pub fn parse_id(presented: &str) -> Option<&str> {
    let rest = presented.strip_prefix(PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    if id.len() != 12 || !id.bytes().all(|b| b.is_ascii_hexdigit()) || secret.len() != 43 {
        return None;
    }
    Some(id)
}

/// SHA-256 of a presented key.
pub fn hash(presented: &str) -> [u8; 32] {
    Sha256::digest(presented.as_bytes()).into()
}

/// Compares a presented key with a stored hash in constant time.
pub fn matches(presented: &str, stored: &[u8]) -> bool {
    hash(presented).ct_eq(stored).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_keys_parse_and_match_only_themselves() {
        let a = mint();
        let b = mint();
        assert_eq!(parse_id(&a.secret), Some(a.id.as_str()));
        assert!(matches(&a.secret, &a.hash));
        assert!(!matches(&b.secret, &a.hash));
        assert_ne!(a.id, b.id);
        for bad in [
            "",
            "ek_",
            "sk-abc",
            "ek_zzzzzzzzzzzz_x",
            &a.secret[..a.secret.len() - 1],
        ] {
            assert_eq!(parse_id(bad), None, "{bad:?}");
        }
    }
}
