//! Token signatures checked with `ring` rather than the pure-Rust curves `jsonwebtoken` ships
//! with: a P-256 signature costs several times less with ring's assembly, and a token's first use
//! is a signature check on the request path (issue 15: at most 0.2 ms at p99).
//!
//! `jsonwebtoken` 12 takes its cryptography from a process-wide [`CryptoProvider`]; this one
//! verifies every public-key algorithm Enclave accepts with ring and leaves signing, HMAC and the
//! JWK helpers to the RustCrypto provider (Enclave never signs tokens; tests do). ring refuses
//! RSA moduli under 2048 bits, which RustCrypto would take.

use jsonwebtoken::crypto::{CryptoProvider, JwtVerifier, KeyUtils, rust_crypto};
use jsonwebtoken::errors::{Error, ErrorKind};
use jsonwebtoken::signature;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, DecodingKeyKind};
use ring::signature as rs;

/// Verifies one algorithm with one key.
struct RingVerifier {
    algorithm: Algorithm,
    ring: &'static dyn rs::VerificationAlgorithm,
    key: DecodingKey,
}

impl signature::Verifier<Vec<u8>> for RingVerifier {
    fn verify(&self, msg: &[u8], sig: &Vec<u8>) -> Result<(), signature::Error> {
        let checked = match self.key.kind() {
            DecodingKeyKind::SecretOrDer(bytes) => {
                rs::UnparsedPublicKey::new(self.ring, bytes).verify(msg, sig)
            }
            DecodingKeyKind::RsaModulusExponent { n, e } => match self.algorithm.family() {
                AlgorithmFamily::Rsa => rsa_parameters(self.algorithm)
                    .ok_or(ring::error::Unspecified)
                    .and_then(|params| {
                        rs::RsaPublicKeyComponents { n, e }.verify(params, msg, sig)
                    }),
                _ => Err(ring::error::Unspecified),
            },
        };
        checked.map_err(|_| signature::Error::new())
    }
}

impl JwtVerifier for RingVerifier {
    fn algorithm(&self) -> Algorithm {
        self.algorithm
    }
}

fn rsa_parameters(algorithm: Algorithm) -> Option<&'static rs::RsaParameters> {
    Some(match algorithm {
        Algorithm::RS256 => &rs::RSA_PKCS1_2048_8192_SHA256,
        Algorithm::RS384 => &rs::RSA_PKCS1_2048_8192_SHA384,
        Algorithm::RS512 => &rs::RSA_PKCS1_2048_8192_SHA512,
        Algorithm::PS256 => &rs::RSA_PSS_2048_8192_SHA256,
        Algorithm::PS384 => &rs::RSA_PSS_2048_8192_SHA384,
        Algorithm::PS512 => &rs::RSA_PSS_2048_8192_SHA512,
        _ => return None,
    })
}

fn ring_algorithm(algorithm: Algorithm) -> Option<&'static dyn rs::VerificationAlgorithm> {
    if let Some(rsa) = rsa_parameters(algorithm) {
        return Some(rsa);
    }
    Some(match algorithm {
        Algorithm::ES256 => &rs::ECDSA_P256_SHA256_FIXED,
        Algorithm::ES384 => &rs::ECDSA_P384_SHA384_FIXED,
        Algorithm::EdDSA => &rs::ED25519,
        _ => return None,
    })
}

fn new_verifier(algorithm: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>, Error> {
    let Some(ring) = ring_algorithm(*algorithm) else {
        // HMAC: never accepted for tokens (see `ALLOWED`), kept working for completeness.
        return (rust_crypto::DEFAULT_PROVIDER.verifier_factory)(algorithm, key);
    };
    if key.family() != algorithm.family() {
        return Err(ErrorKind::InvalidKeyFormat.into());
    }
    Ok(Box::new(RingVerifier {
        algorithm: *algorithm,
        ring,
        key: key.clone(),
    }))
}

static PROVIDER: CryptoProvider = CryptoProvider {
    signer_factory: rust_crypto::DEFAULT_PROVIDER.signer_factory,
    verifier_factory: new_verifier,
    key_utils: KeyUtils {
        rsa_pub_components_from_private_key: rust_crypto::DEFAULT_PROVIDER
            .key_utils
            .rsa_pub_components_from_private_key,
        rsa_pub_components_from_public_key: rust_crypto::DEFAULT_PROVIDER
            .key_utils
            .rsa_pub_components_from_public_key,
        ec_pub_components_from_private_key: rust_crypto::DEFAULT_PROVIDER
            .key_utils
            .ec_pub_components_from_private_key,
        ed_pub_components_from_private_key: rust_crypto::DEFAULT_PROVIDER
            .key_utils
            .ed_pub_components_from_private_key,
        compute_digest: rust_crypto::DEFAULT_PROVIDER.key_utils.compute_digest,
    },
};

/// Makes ring's verifier the process's. Idempotent; if `jsonwebtoken` was already used in this
/// process (its default is then fixed), tokens are still verified, by RustCrypto.
pub(crate) fn install() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if PROVIDER.install_default().is_err() {
            tracing::debug!("jsonwebtoken's crypto provider was already chosen; keeping it");
        }
    });
}

/// Whether the ring verifier is the one in force.
#[cfg(test)]
fn ring_in_force() -> bool {
    CryptoProvider::try_get_default().is_some_and(|p| std::ptr::eq(p, &PROVIDER))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A signature made by RustCrypto verifies with ring; a changed message or signature does
    /// not; a key of another family is refused.
    #[test]
    fn ring_verifies_what_rust_crypto_signs() {
        install();
        assert!(ring_in_force());
        let pair = rcgen::KeyPair::generate().expect("key");
        let signing = jsonwebtoken::EncodingKey::from_ec_der(&pair.serialize_der());
        let signer = (rust_crypto::DEFAULT_PROVIDER.signer_factory)(&Algorithm::ES256, &signing)
            .expect("signer");
        let sig = signer.try_sign(b"header.claims").expect("sign");
        let public = DecodingKey::from_ec_der(pair.public_key_raw());
        let verifier = new_verifier(&Algorithm::ES256, &public).expect("verifier");
        assert!(verifier.verify(b"header.claims", &sig).is_ok());
        assert!(verifier.verify(b"header.claimz", &sig).is_err());
        let mut bad = sig.clone();
        bad[5] ^= 1;
        assert!(verifier.verify(b"header.claims", &bad).is_err());
        assert!(new_verifier(&Algorithm::RS256, &public).is_err());
    }
}
