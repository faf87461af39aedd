//! HTTPS: the server's certificate and key read from PEM files into a rustls configuration that
//! offers HTTP/2 and HTTP/1.1, and a listener that completes TLS handshakes off the accept loop.
//!
//! Handshakes run in their own tasks, bounded in number and in time, so a client that opens a
//! connection and says nothing holds neither the accept loop nor a task for long.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::certs::read_key;
pub use crate::certs::{TlsError, read_certificates};
use crate::client_auth::{ClientAuth, ClientIdentity, ClientVerifier, IdentityMap, SignInSink};
use crate::peer::Peer;

/// A client that has not finished its handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; more connections wait in the kernel's backlog.
const MAX_HANDSHAKES: usize = 1024;

/// A server configuration and, when client certificates are asked for, how to name their
/// holders.
#[derive(Clone)]
pub struct TlsSetup {
    pub config: Arc<rustls::ServerConfig>,
    pub identity: Option<IdentityMap>,
    /// Where certificate sign-ins and refusals go (counted always; recorded once installed).
    pub sign_ins: Arc<SignInSink>,
}

/// The certificate chain in `cert` (leaf first) and the private key in `key`, as a server
/// configuration offering `h2` and `http/1.1`. The key must belong to the leaf certificate.
/// With `client_auth`, clients are asked for a certificate, checked as that module says.
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_auth: Option<&ClientAuth>,
) -> Result<TlsSetup, TlsError> {
    let chain = read_certificates(cert)?;
    let key = read_key(key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Rejected)?;
    let mut sign_ins = Arc::default();
    let builder = match client_auth {
        Some(auth) => {
            let verifier = ClientVerifier::new(auth)?;
            sign_ins = Arc::clone(&verifier.sign_ins);
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(TlsError::Rejected)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsSetup {
        config: Arc::new(config),
        identity: client_auth.map(|a| a.map.clone()),
        sign_ins,
    })
}

/// A listener whose connections have completed a TLS handshake.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, Peer)>,
    local: SocketAddr,
    accepting: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    pub fn new(listener: TcpListener, setup: TlsSetup) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        let (tx, ready) = mpsc::channel(64);
        let accepting = tokio::spawn(accept_loop(
            listener,
            TlsAcceptor::from(setup.config),
            setup.identity.map(|map| (Arc::new(map), setup.sign_ins)),
            tx,
        ));
        Ok(Self {
            ready,
            local,
            accepting,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    identity: Option<(Arc<IdentityMap>, Arc<SignInSink>)>,
    ready: mpsc::Sender<(TlsStream<TcpStream>, Peer)>,
) {
    let permits = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    loop {
        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
            return;
        };
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors or a connection reset before it was taken: wait a moment
                // rather than spin, as axum's own loop does.
                tracing::warn!(error = %e, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Small writes (SSE chunks) leave at once instead of waiting on Nagle's algorithm.
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let ready = ready.clone();
        let identity = identity.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => {
                    // The handshake verified the certificate; who it names is read once here.
                    let client = match (&identity, stream.get_ref().1.peer_certificates()) {
                        (Some((map, sign_ins)), Some([leaf, ..])) => {
                            let client = ClientIdentity::of(leaf, map);
                            sign_ins.emit(client.sign_in(leaf, peer));
                            Some(Arc::new(client))
                        }
                        _ => None,
                    };
                    let _ = ready.send((stream, Peer { addr: peer, client })).await;
                }
                Ok(Err(e)) => tracing::info!(%peer, error = %e, "TLS handshake refused"),
                Err(_) => tracing::info!(%peer, "TLS handshake timed out"),
            }
        });
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = Peer;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(accepted) => accepted,
            // The accept loop only ends with the listener; nothing more will come.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(Peer {
            addr: self.local,
            client: None,
        })
    }
}

/// What an operator needs to know about the server's certificate.
#[derive(Debug, Clone)]
pub struct CertificateSummary {
    pub subject: String,
    /// DNS names and IP addresses the certificate is valid for.
    pub names: Vec<String>,
    /// Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
}

/// The leaf certificate of `cert`, read for display.
pub fn summarize(cert: &Path) -> Result<CertificateSummary, TlsError> {
    use x509_parser::extensions::GeneralName;
    let chain = read_certificates(cert)?;
    let leaf = chain.first().ok_or_else(|| TlsError::NoCertificate {
        path: cert.to_path_buf(),
    })?;
    let (_, parsed) =
        x509_parser::parse_x509_certificate(leaf.as_ref()).map_err(|e| TlsError::BadPem {
            path: cert.to_path_buf(),
            reason: format!("the first certificate is not X.509 DER: {e}"),
        })?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = parsed.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(d) => names.push((*d).to_string()),
                GeneralName::IPAddress(ip) => match ip.len() {
                    4 => names.push(
                        std::net::Ipv4Addr::from(<[u8; 4]>::try_from(*ip).unwrap_or_default())
                            .to_string(),
                    ),
                    16 => names.push(
                        std::net::Ipv6Addr::from(<[u8; 16]>::try_from(*ip).unwrap_or_default())
                            .to_string(),
                    ),
                    _ => {}
                },
                _ => {}
            }
        }
    }
    Ok(CertificateSummary {
        subject: parsed.subject().to_string(),
        names,
        not_before: parsed.validity().not_before.timestamp(),
        not_after: parsed.validity().not_after.timestamp(),
    })
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TlsListener>> for Peer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, TlsListener>) -> Self {
        stream.remote_addr().clone()
    }
}
