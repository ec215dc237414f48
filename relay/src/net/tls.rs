//! TLS for the relay's `turns:` listeners: rustls (ring provider) with a certificate store that
//! reloads the PEM files when they change or on SIGHUP, without touching live sessions (each
//! handshake asks the store for the current certificate).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use rustls::crypto::ring as provider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// A certificate or key could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A PEM file could not be read or parsed.
    #[error("{path}: {message}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The key type is not supported or does not fit.
    #[error("TLS key: {0}")]
    Key(String),
}

fn load(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, TlsError> {
    let pem_err = |path: &Path| {
        let path = path.to_path_buf();
        move |e: rustls::pki_types::pem::Error| TlsError::Pem {
            path: path.clone(),
            message: e.to_string(),
        }
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(pem_err(cert))?
        .collect::<Result<_, _>>()
        .map_err(pem_err(cert))?;
    if chain.is_empty() {
        return Err(TlsError::Pem {
            path: cert.to_path_buf(),
            message: "no certificate in file".into(),
        });
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(pem_err(key))?;
    let signing =
        provider::sign::any_supported_type(&key_der).map_err(|e| TlsError::Key(e.to_string()))?;
    Ok(Arc::new(CertifiedKey::new(chain, signing)))
}

fn mtimes(cert: &Path, key: &Path) -> Option<(SystemTime, SystemTime)> {
    let m = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    Some((m(cert)?, m(key)?))
}

/// The certificate in use, reloadable.
#[derive(Debug)]
pub struct CertStore {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    seen: Mutex<Option<(SystemTime, SystemTime)>>,
}

impl CertStore {
    /// Loads the certificate chain and key.
    pub fn load(cert: &Path, key: &Path) -> Result<Arc<Self>, TlsError> {
        let current = load(cert, key)?;
        Ok(Arc::new(Self {
            cert_path: cert.to_path_buf(),
            key_path: key.to_path_buf(),
            current: RwLock::new(current),
            seen: Mutex::new(mtimes(cert, key)),
        }))
    }

    /// Reloads when either file changed since the last load; true when it did. A file that
    /// fails to load leaves the current certificate in place.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let now = mtimes(&self.cert_path, &self.key_path);
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if now == *seen {
            return Ok(false);
        }
        // Remember this version even if it fails to load, so a broken file is reported once,
        // not on every poll; the next change is tried again.
        *seen = now;
        let fresh = load(&self.cert_path, &self.key_path)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        Ok(true)
    }

    /// Reloads unconditionally (SIGHUP).
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = load(&self.cert_path, &self.key_path)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        *self.seen.lock().unwrap_or_else(|e| e.into_inner()) =
            mtimes(&self.cert_path, &self.key_path);
        Ok(())
    }

    /// The certificate's DER, for tests and status.
    pub fn leaf(&self) -> Option<CertificateDer<'static>> {
        let current = self.current.read().unwrap_or_else(|e| e.into_inner());
        current.cert.first().cloned()
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }
}

/// A rustls server configuration that takes its certificate from `store`.
pub fn server_config(store: Arc<CertStore>) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let config =
        rustls::ServerConfig::builder_with_provider(Arc::new(provider::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Key(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(store);
    Ok(Arc::new(config))
}
