//! Peer verification: exact certificate pinning, nothing else. A dialer accepts only the
//! certificate whose fingerprint the registry lists (MAC checked) for the relay it dials
//! ([`PinnedServer`]); a listener accepts only client certificates whose fingerprint belongs
//! to a relay of the fleet ([`FleetClients`]), and the connection is then bound to that relay's
//! id. No CA, no names, no expiry dates: the MAC'd record is the whole trust. The handshake
//! signatures are still verified (with the ring provider's algorithms), so presenting a pinned
//! certificate without its private key fails.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, Error, SignatureScheme};

use geoturn_shared::registry::cert_fingerprint;

/// Fingerprint → relay id of every relay whose node record verified, shared by the listener's
/// verifier and the code that names an accepted connection's peer.
pub type Trusted = Arc<RwLock<HashMap<[u8; 32], String>>>;

fn algorithms() -> WebPkiSupportedAlgorithms {
    rustls::crypto::ring::default_provider().signature_verification_algorithms
}

/// Accepts exactly one certificate (the dialed relay's).
#[derive(Debug)]
pub struct PinnedServer {
    fingerprint: [u8; 32],
    algorithms: WebPkiSupportedAlgorithms,
}

impl PinnedServer {
    /// A verifier for the certificate with this SHA-256 fingerprint.
    pub fn new(fingerprint: [u8; 32]) -> Arc<Self> {
        Arc::new(Self {
            fingerprint,
            algorithms: algorithms(),
        })
    }
}

impl ServerCertVerifier for PinnedServer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        if cert_fingerprint(end_entity) == self.fingerprint {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Accepts client certificates of relays in the fleet's verified node records; mandatory.
#[derive(Debug)]
pub struct FleetClients {
    trusted: Trusted,
    algorithms: WebPkiSupportedAlgorithms,
}

impl FleetClients {
    /// A verifier over the shared table of trusted fingerprints.
    pub fn new(trusted: Trusted) -> Arc<Self> {
        Arc::new(Self {
            trusted,
            algorithms: algorithms(),
        })
    }
}

/// The relay id a certificate is pinned for, if any.
pub fn relay_of(trusted: &Trusted, cert: &[u8]) -> Option<String> {
    let table = trusted.read().unwrap_or_else(|p| p.into_inner());
    table.get(&cert_fingerprint(cert)).cloned()
}

impl ClientCertVerifier for FleetClients {
    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        if relay_of(&self.trusted, end_entity).is_some() {
            Ok(ClientCertVerified::assertion())
        } else {
            Err(Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::mesh::identity::MeshIdentity;

    #[test]
    fn the_pinned_certificate_and_no_other() {
        let a = MeshIdentity::generate("a").unwrap();
        let b = MeshIdentity::generate("b").unwrap();
        let v = PinnedServer::new(a.fingerprint);
        let name = ServerName::try_from("geoturn-mesh").unwrap();
        let now = UnixTime::now();
        assert!(v.verify_server_cert(&a.cert, &[], &name, &[], now).is_ok());
        assert!(v.verify_server_cert(&b.cert, &[], &name, &[], now).is_err());

        let trusted: Trusted = Arc::default();
        let clients = FleetClients::new(trusted.clone());
        assert!(clients.verify_client_cert(&a.cert, &[], now).is_err());
        trusted.write().unwrap().insert(a.fingerprint, "a".into());
        assert!(clients.verify_client_cert(&a.cert, &[], now).is_ok());
        assert!(clients.verify_client_cert(&b.cert, &[], now).is_err());
        assert_eq!(relay_of(&trusted, &a.cert).as_deref(), Some("a"));
        assert!(clients.client_auth_mandatory());
    }
}
