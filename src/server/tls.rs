//! HTTPS without a proxy in front (`[server] tls_cert` and `tls_key`).
//!
//! rustls does the TLS and hyper the HTTP above it, as on a plain connection.
//! The certificate in use sits behind [`Reloading`], a rustls certificate
//! resolver: each handshake takes the current one, and [`Tls::watch`]
//! replaces it on SIGHUP and when either file's modification time or size
//! changes (polled every [`POLL`]), so a renewed certificate is served
//! without a restart. A pair that fails to load (unreadable, not PEM, a key
//! that is not the certificate's) is logged and the one in use is kept.

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

/// How often the files' modification times are looked at.
pub const POLL: Duration = Duration::from_secs(2);

/// The certificate and key every handshake gets; replaced whole on reload.
#[derive(Debug)]
struct Reloading {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }
}

/// What a file looked like when it was last loaded (modification time,
/// size and, on Unix, inode, which a file replaced by a rename changes even
/// within one tick of a coarse clock): a change starts a reload.
type Stamp = Option<(SystemTime, u64, u64)>;

fn stamp(path: &Path) -> Stamp {
    let m = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&m);
    #[cfg(not(unix))]
    let inode = 0;
    Some((m.modified().ok()?, m.len(), inode))
}

/// The server's TLS: the acceptor for new connections and what reloads its
/// certificate.
pub struct Tls {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
    resolver: Arc<Reloading>,
    acceptor: tokio_rustls::TlsAcceptor,
    seen: Mutex<(Stamp, Stamp)>,
}

impl Tls {
    /// Loads the pair and builds the acceptor: HTTP/2 and HTTP/1.1 offered
    /// by ALPN (hyper serves whichever the client chose).
    pub fn new(cert: &Path, key: &Path) -> Result<Arc<Tls>, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let seen = (stamp(cert), stamp(key));
        let first = load(cert, key, &provider)?;
        let resolver = Arc::new(Reloading {
            current: RwLock::new(Arc::new(first)),
        });
        let mut config = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(Tls {
            cert: cert.to_owned(),
            key: key.to_owned(),
            provider,
            resolver,
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            seen: Mutex::new(seen),
        }))
    }

    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        self.acceptor.clone()
    }

    /// Loads the pair again and serves it from the next handshake on; on
    /// failure the certificate in use stays.
    pub fn reload(&self) -> Result<(), String> {
        let seen = (stamp(&self.cert), stamp(&self.key));
        // Remembered even when the load fails: the files are tried again
        // when they change next (or on SIGHUP), not logged about every poll.
        *self.seen.lock().unwrap_or_else(|e| e.into_inner()) = seen;
        let fresh = load(&self.cert, &self.key, &self.provider)?;
        *self
            .resolver
            .current
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Arc::new(fresh);
        Ok(())
    }

    /// Whether either file changed since it was last loaded.
    fn changed(&self) -> bool {
        let now = (stamp(&self.cert), stamp(&self.key));
        *self.seen.lock().unwrap_or_else(|e| e.into_inner()) != now
    }

    /// Reloads on SIGHUP and when the files change; runs until aborted.
    pub async fn watch(self: Arc<Self>) {
        #[cfg(unix)]
        let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch for SIGHUP; the TLS certificate is reloaded when its files change only");
                None
            }
        };
        let mut poll = tokio::time::interval(POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            #[cfg(unix)]
            let hangup = async {
                match hup.as_mut() {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending().await,
                }
            };
            #[cfg(not(unix))]
            let hangup = std::future::pending::<()>();
            let why = tokio::select! {
                _ = hangup => "SIGHUP",
                _ = poll.tick() => "a file changed",
            };
            let this = self.clone();
            let done = tokio::task::spawn_blocking(move || {
                if why == "SIGHUP" || this.changed() {
                    Some(this.reload())
                } else {
                    None
                }
            })
            .await;
            match done {
                Ok(Some(Ok(()))) => tracing::info!(
                    reason = why,
                    cert = %self.cert.display(),
                    "TLS certificate reloaded"
                ),
                Ok(Some(Err(e))) => tracing::warn!(
                    reason = why,
                    "cannot reload the TLS certificate; still serving the previous one: {e}"
                ),
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "the TLS reload task failed"),
            }
        }
    }
}

/// Reads a certificate chain and its private key (PEM) and checks that they
/// belong together.
pub fn load(cert: &Path, key: &Path, provider: &CryptoProvider) -> Result<CertifiedKey, String> {
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("server.tls_cert: cannot read {}: {e}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("server.tls_cert: {}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!(
            "server.tls_cert: {} holds no PEM certificate",
            cert.display()
        ));
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        format!(
            "server.tls_key: {}: no private key read ({e})",
            key.display()
        )
    })?;
    let signing = provider
        .key_provider
        .load_private_key(private)
        .map_err(|e| format!("server.tls_key: {}: {e}", key.display()))?;
    let pair = CertifiedKey::new(chain, signing);
    match pair.keys_match() {
        // A key type that cannot tell its public half is taken on trust.
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
            Ok(pair)
        }
        Err(e) => Err(format!(
            "server.tls_key: {} is not the key of the certificate in {}: {e}",
            key.display(),
            cert.display()
        )),
    }
}

/// Checks that the configured pair loads (`check-config`); returns how many
/// certificates the chain holds.
pub fn check(cert: &Path, key: &Path) -> Result<usize, String> {
    let provider = rustls::crypto::ring::default_provider();
    load(cert, key, &provider).map(|k| k.cert.len())
}

/// Without TLS there is nothing to reload, but `systemctl reload` still sends
/// SIGHUP, whose default action would end the process: answers it with a log
/// line instead. Runs until aborted.
pub async fn ignore_hangups() {
    #[cfg(unix)]
    if let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        while hup.recv().await.is_some() {
            tracing::info!(
                "SIGHUP: nothing to reload without [server] tls_cert and tls_key; \
                 other settings take a restart"
            );
        }
    }
}
