//! Client certificates (smart cards: CAC, PIV): which ones the TLS handshake accepts, and which
//! user a verified one names.
//!
//! The handshake refuses a certificate that does not chain to the configured trust anchors, has
//! expired, is revoked by one of the CRL files (re-read when a file changes, checked at every
//! handshake), lacks the client-authentication purpose, or asserts none of the required
//! certificate policies. A certificate that passes is mapped to an identity (its UPN, its e-mail
//! address, or a part of its subject) once per connection; whether that identity is a user is
//! the service's question, asked on every request.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::SystemTime;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use sha2::Digest as _;

use crate::certs::{TlsError, read_certificates};

/// The UPN other-name of Microsoft's smart-card logon (`1.3.6.1.4.1.311.20.2.3`).
const UPN_OID: &str = "1.3.6.1.4.1.311.20.2.3";

/// How a verified certificate names its holder.
#[derive(Debug, Clone)]
pub enum IdentityMap {
    /// The subject alternative name's UPN (`alice@agency.example`), as on PIV and CAC cards.
    Upn,
    /// The subject alternative name's e-mail address.
    Email,
    /// The named group `user` of a pattern matched against the subject DN as RFC 4514 writes it
    /// (`CN=Alice Example,OU=People,O=Agency`).
    Subject(regex::Regex),
}

/// What the operator configured under `[tls.client_auth]`.
#[derive(Debug, Clone)]
pub struct ClientAuth {
    /// Trust anchors, PEM.
    pub ca: PathBuf,
    /// Certificate revocation lists, PEM or DER.
    pub crls: Vec<PathBuf>,
    /// Dotted OIDs; a certificate must assert at least one when any are given.
    pub required_policies: Vec<String>,
    /// Refuse connections without a certificate (otherwise API keys still work).
    pub required: bool,
    pub map: IdentityMap,
}

/// A certificate sign-in the TLS layer saw: a handshake that verified a client certificate, or
/// one the certificate failed. Counted in `enclave_sign_ins_total` and given to the hook the
/// server installs (which writes it to the audit log).
#[derive(Debug, Clone)]
pub struct SignIn {
    /// Absent for a refusal: the verifier runs before the connection is known to it.
    pub peer: Option<SocketAddr>,
    /// SHA-256 of the certificate, hex.
    pub fingerprint: String,
    pub subject: String,
    /// Accepted: the identity it maps to (or why none). Refused: why.
    pub outcome: Result<Result<String, String>, String>,
}

/// Receives every [`SignIn`]; must not block (the handshake waits on it).
pub type SignInHook = Arc<dyn Fn(SignIn) + Send + Sync>;

/// Where sign-ins go once the server has installed its hook.
#[derive(Default)]
pub struct SignInSink(OnceLock<SignInHook>);

impl std::fmt::Debug for SignInSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() {
            "SignInSink(installed)"
        } else {
            "SignInSink(empty)"
        })
    }
}

impl SignInSink {
    pub fn install(&self, hook: SignInHook) {
        let _ = self.0.set(hook);
    }

    pub fn emit(&self, event: SignIn) {
        let (outcome, reason) = match &event.outcome {
            Ok(Ok(_)) => ("accepted", "mapped"),
            Ok(Err(_)) => ("accepted", "unmapped"),
            Err(_) => ("refused", "certificate"),
        };
        metrics::counter!(
            "enclave_sign_ins_total",
            "source" => "certificate",
            "outcome" => outcome,
            "reason" => reason
        )
        .increment(1);
        if let Some(hook) = self.0.get() {
            hook(event);
        }
    }
}

fn subject_of(cert: &CertificateDer<'_>) -> String {
    x509_parser::parse_x509_certificate(cert.as_ref())
        .map(|(_, c)| c.subject().to_string())
        .unwrap_or_else(|_| "(unreadable)".into())
}

fn fingerprint(cert: &CertificateDer<'_>) -> String {
    hex::encode(sha2::Sha256::digest(cert.as_ref()))
}

/// Who a verified client certificate names, worked out once per connection.
#[derive(Debug, Clone)]
pub struct ClientIdentity {
    /// The mapped identity, or why there is none.
    pub name: Result<String, String>,
    /// SHA-256 of the certificate, hex.
    pub fingerprint: String,
}

impl ClientIdentity {
    pub fn of(cert: &CertificateDer<'_>, map: &IdentityMap) -> Self {
        Self {
            name: map_identity(cert, map),
            fingerprint: fingerprint(cert),
        }
    }

    /// The sign-in this identity's handshake was.
    pub fn sign_in(&self, cert: &CertificateDer<'_>, peer: SocketAddr) -> SignIn {
        SignIn {
            peer: Some(peer),
            fingerprint: self.fingerprint.clone(),
            subject: subject_of(cert),
            outcome: Ok(self.name.clone()),
        }
    }
}

fn map_identity(cert: &CertificateDer<'_>, map: &IdentityMap) -> Result<String, String> {
    use x509_parser::extensions::GeneralName;
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref())
        .map_err(|e| format!("the certificate cannot be read: {e}"))?;
    let names = parsed
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| san.value.general_names.clone())
        .unwrap_or_default();
    match map {
        IdentityMap::Upn => names
            .iter()
            .find_map(|n| match n {
                GeneralName::OtherName(oid, value) if oid.to_id_string() == UPN_OID => {
                    utf8_inside(value)
                }
                _ => None,
            })
            .ok_or_else(|| "the certificate has no UPN in its subject alternative name".into()),
        IdentityMap::Email => names
            .iter()
            .find_map(|n| match n {
                GeneralName::RFC822Name(mail) => Some((*mail).to_string()),
                _ => None,
            })
            .ok_or_else(|| {
                "the certificate has no e-mail address in its subject alternative name".into()
            }),
        IdentityMap::Subject(pattern) => {
            let subject = parsed.subject().to_string();
            pattern
                .captures(&subject)
                .and_then(|c| c.name("user"))
                .map(|m| m.as_str().to_string())
                .ok_or_else(|| format!("the subject `{subject}` does not match the pattern"))
        }
    }
}

/// The UTF8String inside an other-name's value (`[0] EXPLICIT UTF8String`).
fn utf8_inside(value: &[u8]) -> Option<String> {
    use x509_parser::der_parser::ber::BerObjectContent;
    let (_, outer) = x509_parser::der_parser::der::parse_der(value).ok()?;
    let inner = match &outer.content {
        BerObjectContent::Unknown(any) => x509_parser::der_parser::der::parse_der(any.data).ok()?.1,
        _ => outer,
    };
    inner.as_str().ok().map(str::to_string)
}

/// The handshake's verifier: webpki with the CRLs as they are on disk, then the policies.
#[derive(Debug)]
pub struct ClientVerifier {
    roots: Arc<RootCertStore>,
    hints: Vec<DistinguishedName>,
    crls: Vec<PathBuf>,
    /// Each CRL file's modification time and length when last read.
    stamps: Mutex<Vec<Option<(SystemTime, u64)>>>,
    current: RwLock<Arc<dyn ClientCertVerifier>>,
    policies: Vec<String>,
    required: bool,
    pub(crate) sign_ins: Arc<SignInSink>,
}

impl ClientVerifier {
    pub fn new(auth: &ClientAuth) -> Result<Arc<Self>, TlsError> {
        let mut roots = RootCertStore::empty();
        for cert in read_certificates(&auth.ca)? {
            roots.add(cert).map_err(|e| TlsError::BadPem {
                path: auth.ca.clone(),
                reason: format!("a trust anchor is not usable: {e}"),
            })?;
        }
        let roots = Arc::new(roots);
        let stamps = auth.crls.iter().map(|p| stamp(p)).collect();
        let current = build(&roots, &auth.crls, auth.required)?;
        Ok(Arc::new(Self {
            hints: roots.subjects(),
            roots,
            crls: auth.crls.clone(),
            stamps: Mutex::new(stamps),
            current: RwLock::new(current),
            policies: auth.required_policies.clone(),
            required: auth.required,
            sign_ins: Arc::default(),
        }))
    }

    /// The verifier in force, rebuilt first if a CRL file changed. A CRL that no longer reads
    /// keeps the previous lists in force, with an error in the log.
    fn verifier(&self) -> Arc<dyn ClientCertVerifier> {
        let now: Vec<_> = self.crls.iter().map(|p| stamp(p)).collect();
        let mut stamps = self.stamps.lock().unwrap_or_else(|e| e.into_inner());
        if *stamps != now {
            match build(&self.roots, &self.crls, self.required) {
                Ok(fresh) => {
                    tracing::info!("certificate revocation lists changed; reloaded");
                    *self.current.write().unwrap_or_else(|e| e.into_inner()) = fresh;
                    *stamps = now;
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot reload the revocation lists; the previous ones stay in force")
                }
            }
        }
        drop(stamps);
        self.current()
    }

    fn current(&self) -> Arc<dyn ClientCertVerifier> {
        Arc::clone(&self.current.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Why a certificate that asserts none of the required policies is refused.
    fn check_policies(&self, cert: &CertificateDer<'_>) -> Result<(), String> {
        use x509_parser::extensions::ParsedExtension;
        if self.policies.is_empty() {
            return Ok(());
        }
        let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref())
            .map_err(|e| format!("the certificate cannot be read: {e}"))?;
        let asserted: Vec<String> = parsed
            .extensions()
            .iter()
            .filter_map(|e| match e.parsed_extension() {
                ParsedExtension::CertificatePolicies(policies) => Some(
                    policies
                        .iter()
                        .map(|p| p.policy_id.to_id_string())
                        .collect::<Vec<_>>(),
                ),
                _ => None,
            })
            .flatten()
            .collect();
        if asserted.iter().any(|p| self.policies.contains(p)) {
            Ok(())
        } else {
            Err(format!(
                "the certificate asserts none of the required policies ({}); it asserts [{}]",
                self.policies.join(", "),
                asserted.join(", ")
            ))
        }
    }
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

fn build(
    roots: &Arc<RootCertStore>,
    crls: &[PathBuf],
    required: bool,
) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    let mut lists = Vec::new();
    for path in crls {
        let bytes = std::fs::read(path).map_err(|source| TlsError::Read {
            path: path.clone(),
            source,
        })?;
        let pem: Vec<_> = CertificateRevocationListDer::pem_slice_iter(&bytes)
            .collect::<Result<_, _>>()
            .map_err(|e| TlsError::BadPem {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        if pem.is_empty() {
            // DER, as CAs publish them.
            lists.push(CertificateRevocationListDer::from(bytes));
        } else {
            lists.extend(pem);
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    // The holder's certificate must be covered by a listed CRL (an issuer with no list refuses
    // it: unknown is not "not revoked"); issuing CAs are trusted as the anchors configure them.
    let mut builder = WebPkiClientVerifier::builder_with_provider(Arc::clone(roots), provider)
        .with_crls(lists)
        .only_check_end_entity_revocation();
    if !required {
        builder = builder.allow_unauthenticated();
    }
    builder
        .build()
        .map_err(|e| TlsError::ClientAuth(e.to_string()))
}

impl ClientCertVerifier for ClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.required
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let checked = match self
            .verifier()
            .verify_client_cert(end_entity, intermediates, now)
        {
            Ok(verified) => self
                .check_policies(end_entity)
                .map(|()| verified)
                .map_err(|why| {
                    (
                        why,
                        rustls::Error::InvalidCertificate(
                            rustls::CertificateError::ApplicationVerificationFailure,
                        ),
                    )
                }),
            Err(e) => Err((e.to_string(), e)),
        };
        checked.map_err(|(why, error)| {
            let subject = subject_of(end_entity);
            tracing::info!(%subject, reason = %why, "client certificate refused");
            self.sign_ins.emit(SignIn {
                peer: None,
                fingerprint: fingerprint(end_entity),
                subject,
                outcome: Err(why),
            });
            error
        })
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.current().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.current().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.current().supported_verify_schemes()
    }
}
