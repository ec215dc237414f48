//! The relay's mesh identity: an ephemeral self-signed certificate made at start. Nothing
//! vouches for it but the registry's node record, which pins its SHA-256 fingerprint under the
//! fleet's MAC key; a restart makes a new one (and a new record).

use geoturn_shared::registry::cert_fingerprint;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A certificate, its key and its fingerprint.
#[derive(Debug)]
pub struct MeshIdentity {
    /// The certificate (DER), presented both as server and as client.
    pub cert: CertificateDer<'static>,
    key: Vec<u8>,
    /// SHA-256 of `cert`.
    pub fingerprint: [u8; 32],
}

impl MeshIdentity {
    /// A new ECDSA P-256 self-signed certificate for `node_id` (the name is informative only:
    /// peers check the fingerprint, never the name).
    pub fn generate(node_id: &str) -> Result<Self, rcgen::Error> {
        let certified = rcgen::generate_simple_self_signed(vec![format!("{node_id}.geoturn-mesh")])
            .or_else(|_| rcgen::generate_simple_self_signed(vec!["geoturn-mesh".to_owned()]))?;
        let cert = certified.cert.der().clone();
        let fingerprint = cert_fingerprint(&cert);
        Ok(Self {
            cert,
            key: certified.key_pair.serialize_der(),
            fingerprint,
        })
    }

    /// The private key, for a rustls config.
    pub fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.clone()))
    }
}
