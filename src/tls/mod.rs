//! TLS on Writ's two listeners (rustls on ring).
//!
//! [`ServerTls`] holds what the files say now: the certificate chain, the
//! key and, with mTLS, the CAs client certificates must chain to. A worker
//! reads the files again every `reload_interval` and, when they changed
//! and still make a valid configuration, serves the new one to every new
//! connection; connections already open keep theirs. A change that does
//! not load (a half-written file, a key that does not match, an expired
//! certificate, a key readable by others) is logged and the previous
//! configuration stays in force.
//!
//! [`TlsIncoming`] accepts TCP connections and completes their handshakes
//! off the accept loop, each within 5 s, at most 256 at once per listener
//! and 16 per source address; a connection past either bound is closed at
//! once, so the accept loop never waits and one host cannot take the
//! whole budget. A failed handshake (a plaintext client, an unknown CA, an
//! expired client certificate) is logged with its reason while the
//! listener goes on serving the others.

mod config;
pub mod peer;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

pub use self::config::{CertificateMatch, TlsConfig};

/// How long a client has to complete its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Handshakes under way at once per listener; a connection arriving when
/// all are taken is closed at once (the accept loop never waits).
const MAX_HANDSHAKES: usize = 256;
/// Handshakes under way at once from one address: one host cannot take
/// the listener's whole budget.
const MAX_HANDSHAKES_PER_ADDRESS: usize = 16;

/// Why the TLS files do not make a configuration. Names the file and
/// what to do; never holds key material.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("the certificate and key do not make a TLS configuration: {0}")]
    Config(String),
}

/// Which listener a configuration is for: they differ in the protocols
/// they offer (ALPN).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listener {
    /// gRPC: HTTP/2 only.
    Grpc,
    /// JWKS, introspection, CAEP keys: HTTP/1.1.
    Http,
}

impl Listener {
    fn name(self) -> &'static str {
        match self {
            Self::Grpc => "grpc",
            Self::Http => "http",
        }
    }
}

struct Loaded {
    /// SHA-256 over the files' bytes, to notice a change.
    digest: Vec<u8>,
    grpc: Arc<rustls::ServerConfig>,
    http: Arc<rustls::ServerConfig>,
    not_after: DateTime<Utc>,
}

/// The listeners' TLS configuration as the files say now.
pub struct ServerTls {
    config: TlsConfig,
    current: RwLock<Arc<Loaded>>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls").field("cert_file", &self.config.cert_file).finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Loads the files; fails with what is wrong with them.
    pub fn load(config: &TlsConfig, now: DateTime<Utc>) -> Result<Self, TlsError> {
        let loaded = load(config, now)?;
        Ok(Self { config: config.clone(), current: RwLock::new(Arc::new(loaded)) })
    }

    pub fn config(&self) -> &TlsConfig {
        &self.config
    }

    /// Whether client certificates are asked for (mTLS).
    pub fn asks_for_client_certificates(&self) -> bool {
        self.config.client_ca_file.is_some()
    }

    fn current(&self) -> Arc<Loaded> {
        self.current.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    /// When the certificate served now expires.
    pub fn not_after(&self) -> DateTime<Utc> {
        self.current().not_after
    }

    fn server_config(&self, listener: Listener) -> Arc<rustls::ServerConfig> {
        let current = self.current();
        match listener {
            Listener::Grpc => current.grpc.clone(),
            Listener::Http => current.http.clone(),
        }
    }

    /// Reads the files again; returns whether a new configuration is now
    /// served. On an error the previous one stays in force.
    pub fn reload(&self, now: DateTime<Utc>) -> Result<bool, TlsError> {
        let digest = digest_files(&self.config)?;
        if digest == self.current().digest {
            return Ok(false);
        }
        let loaded = load(&self.config, now)?;
        *self.current.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(loaded);
        Ok(true)
    }
}

/// The worker that reloads the files every `reload_interval`.
pub async fn watch(tls: Arc<ServerTls>, clock: Arc<dyn crate::clock::Clock>, stop: CancellationToken) {
    let mut failing = false;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(tls.config.reload_interval) => {}
        }
        match tls.reload(clock.now()) {
            Ok(true) => {
                failing = false;
                tracing::info!(
                    cert_file = %tls.config.cert_file.display(),
                    not_after = %tls.not_after(),
                    "TLS certificate reloaded; new connections get it"
                );
            }
            Ok(false) => failing = false,
            Err(error) => {
                // Said once per failing change, not at every poll.
                if !failing {
                    tracing::error!(%error, "TLS files changed but do not load; still serving the previous certificate");
                }
                failing = true;
            }
        }
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read { path: path.to_path_buf(), source })
}

fn file_error(path: &Path, message: impl Into<String>) -> TlsError {
    TlsError::File { path: path.to_path_buf(), message: message.into() }
}

fn digest_files(config: &TlsConfig) -> Result<Vec<u8>, TlsError> {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    for path in [&config.cert_file, &config.key_file].into_iter().chain(config.client_ca_file.as_ref()) {
        let bytes = read(path)?;
        context.update(&(bytes.len() as u64).to_be_bytes());
        context.update(&bytes);
    }
    Ok(context.finish().as_ref().to_vec())
}

/// A private key others can read is refused: whoever can read it can
/// impersonate Writ to every agent. As PostgreSQL does, a key may be
/// readable by its group only when root owns it (a root-managed secret
/// shared with Writ's group, as Kubernetes mounts secrets with `fsGroup`);
/// otherwise only its owner may read it.
pub fn check_key_permissions(path: &Path) -> Result<(), TlsError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
        let metadata =
            std::fs::metadata(path).map_err(|source| TlsError::Read { path: path.to_path_buf(), source })?;
        let mode = metadata.permissions().mode() & 0o777;
        let group_may_read = metadata.uid() == 0 && mode & 0o030 == 0;
        if mode & 0o007 != 0 || (mode & 0o070 != 0 && !group_may_read) {
            return Err(file_error(
                path,
                format!(
                    "the private key is readable by others than Writ (mode {mode:03o}); make it readable \
                     by Writ's user only (chmod 600), or owned by root and readable by Writ's group (640)"
                ),
            ));
        }
    }
    Ok(())
}

/// PEM certificates of a file, at least one.
pub fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    certificates(path, &read(path)?)
}

fn certificates(path: &Path, bytes: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(path, format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(file_error(path, "holds no PEM certificate (-----BEGIN CERTIFICATE-----)"));
    }
    Ok(certs)
}

fn load(config: &TlsConfig, now: DateTime<Utc>) -> Result<Loaded, TlsError> {
    let digest = digest_files(config)?;
    let certs = certificates(&config.cert_file, &read(&config.cert_file)?)?;
    check_key_permissions(&config.key_file)?;
    let key = PrivateKeyDer::from_pem_slice(&read(&config.key_file)?).map_err(|e| {
        file_error(&config.key_file, format!("not a PEM private key (PKCS#8, PKCS#1 or SEC1): {e}"))
    })?;
    let not_after = peer::validity(&certs[0])
        .map_err(|e| file_error(&config.cert_file, format!("the first certificate does not parse: {e}")))
        .and_then(|(not_before, not_after)| {
            if now > not_after {
                Err(file_error(&config.cert_file, format!("the certificate expired at {not_after}")))
            } else if now < not_before {
                Err(file_error(
                    &config.cert_file,
                    format!("the certificate is not valid before {not_before}"),
                ))
            } else {
                Ok(not_after)
            }
        })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = match &config.client_ca_file {
        None => WebPkiClientVerifier::no_client_auth(),
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for cert in certificates(path, &read(path)?)? {
                roots
                    .add(cert)
                    .map_err(|e| file_error(path, format!("a CA certificate is not usable: {e}")))?;
            }
            // Agents connect without a certificate; services may present one.
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .allow_unauthenticated()
                .build()
                .map_err(|e| file_error(path, format!("not usable as client CAs: {e}")))?
        }
    };
    let build = |alpn: &[&[u8]]| -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_client_cert_verifier(verifier.clone())
            .with_single_cert(certs.clone(), key.clone_key())
            .map_err(|e| TlsError::Config(e.to_string()))?;
        server.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
        Ok(Arc::new(server))
    };
    Ok(Loaded { digest, grpc: build(&[b"h2"])?, http: build(&[b"http/1.1"])?, not_after })
}

/// The verified client certificate chain of an HTTP connection, as axum
/// hands it to handlers (`ConnectInfo`); empty over plaintext or when the
/// client presented none.
#[derive(Clone, Debug, Default)]
pub struct PeerCertificates(Option<Arc<Vec<CertificateDer<'static>>>>);

impl PeerCertificates {
    /// What the leaf certificate names, for matching and RFC 8705 binding.
    pub fn leaf(&self) -> Option<peer::ClientCertificate> {
        let leaf = self.0.as_ref()?.first()?;
        peer::ClientCertificate::read(leaf).ok()
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TlsIncoming>>
    for PeerCertificates
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, TlsIncoming>) -> Self {
        let (_, session) = stream.io().get_ref();
        Self(
            session
                .peer_certificates()
                .map(|certs| Arc::new(certs.iter().map(|cert| cert.clone().into_owned()).collect())),
        )
    }
}

/// Connections whose TLS handshake completed, for one listener.
pub struct TlsIncoming {
    receiver: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local_addr: SocketAddr,
}

impl TlsIncoming {
    /// Starts accepting on `listener`; handshakes use the configuration in
    /// force when each connection arrives. Stops with `stop`.
    pub fn start(
        listener: TcpListener,
        tls: Arc<ServerTls>,
        kind: Listener,
        stop: CancellationToken,
    ) -> std::io::Result<Self> {
        let local_addr = listener.local_addr()?;
        let (sender, receiver) = mpsc::channel(64);
        tokio::spawn(accept_loop(listener, tls, kind, sender, stop));
        Ok(Self { receiver, local_addr })
    }

    /// The connections as tonic takes them.
    pub fn into_stream(
        self,
    ) -> impl tokio_stream::Stream<Item = Result<TlsStream<TcpStream>, std::io::Error>> + Send + 'static {
        use tokio_stream::StreamExt as _;
        tokio_stream::wrappers::ReceiverStream::new(self.receiver).map(|(stream, _)| Ok(stream))
    }
}

impl axum::serve::Listener for TlsIncoming {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.receiver.recv().await {
            Some(connection) => connection,
            // The accept loop stopped (shutdown): no more connections.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}

async fn accept_loop(
    listener: TcpListener,
    tls: Arc<ServerTls>,
    kind: Listener,
    sender: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
    stop: CancellationToken,
) {
    let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    let per_address = Arc::new(PerAddress::default());
    loop {
        let (stream, peer) = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: pause, go on.
                    tracing::warn!(listener = kind.name(), %error, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = handshakes.clone().try_acquire_owned() else {
            tracing::warn!(listener = kind.name(), %peer, "TLS handshake refused: {MAX_HANDSHAKES} handshakes under way");
            continue;
        };
        let Some(slot) = per_address.take(peer.ip()) else {
            tracing::debug!(listener = kind.name(), %peer, "TLS handshake refused: too many from this address at once");
            continue;
        };
        // Small request/response messages: without TCP_NODELAY, Nagle and
        // delayed ACKs add ~40 ms to every call.
        let _ = stream.set_nodelay(true);
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.server_config(kind));
        let sender = sender.clone();
        tokio::spawn(async move {
            let _held = (permit, slot);
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => {
                    let _ = sender.send((stream, peer)).await;
                }
                // A peer that only opens and closes a connection (a load
                // balancer's TCP check, a port scan) is not worth a warning.
                Ok(Err(error)) if error.kind() == std::io::ErrorKind::UnexpectedEof => {
                    tracing::debug!(listener = kind.name(), %peer, reason = %handshake_failure(&error), "TLS handshake refused");
                }
                Ok(Err(error)) => {
                    tracing::warn!(listener = kind.name(), %peer, reason = %handshake_failure(&error), "TLS handshake refused");
                }
                Err(_) => {
                    tracing::debug!(listener = kind.name(), %peer, "TLS handshake refused: not completed within 5s");
                }
            }
        });
    }
}

/// Handshakes under way per source address.
#[derive(Default)]
struct PerAddress {
    counts: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>,
}

/// One handshake's place in [`PerAddress`], given back when dropped.
struct Slot {
    table: Arc<PerAddress>,
    address: std::net::IpAddr,
}

impl PerAddress {
    fn take(self: &Arc<Self>, address: std::net::IpAddr) -> Option<Slot> {
        let mut counts = self.counts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = counts.entry(address).or_default();
        if *count >= MAX_HANDSHAKES_PER_ADDRESS {
            return None;
        }
        *count += 1;
        Some(Slot { table: self.clone(), address })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.table.counts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = counts.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.address);
            }
        }
    }
}

/// Says why a handshake failed in words an operator can act on.
fn handshake_failure(error: &std::io::Error) -> String {
    let rustls_error = error.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match rustls_error {
        Some(rustls::Error::InvalidMessage(_)) => {
            "the client does not speak TLS (a plaintext client on a TLS port?)".into()
        }
        Some(rustls::Error::InvalidCertificate(reason)) => {
            format!("the client certificate is not accepted: {reason:?}")
        }
        Some(rustls::Error::NoCertificatesPresented) => "the client presented no certificate".into(),
        Some(rustls::Error::AlertReceived(alert)) => {
            format!(
                "the client ended the handshake with alert {alert:?} (it may not trust Writ's certificate)"
            )
        }
        Some(other) => other.to_string(),
        None if error.kind() == std::io::ErrorKind::UnexpectedEof => {
            "the client closed the connection during the handshake (it may not trust Writ's certificate)"
                .into()
        }
        None => error.to_string(),
    }
}
