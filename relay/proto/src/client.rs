//! Client-side helpers: building TURN requests as a client would, and reading responses.
//! Used by geoturn's own test client and load generator; independent clients (coturn's
//! `turnutils_uclient`, aioice, browsers) are what interop is tested against.

use crate::auth::IntegrityKey;
use crate::stun::attribute::types;
use crate::stun::integrity::long_term_key_md5;
use crate::stun::{
    Attribute, Class, EncodeError, Message, MessageType, MessageWriter, Method, TransactionId,
};

/// Long-term credentials as a client holds them after the first 401.
#[derive(Debug, Clone)]
pub struct ClientAuth {
    /// USERNAME.
    pub username: String,
    /// Password (for REST credentials, the base64 HMAC).
    pub password: String,
    /// REALM from the server's challenge.
    pub realm: String,
    /// NONCE from the server's challenge.
    pub nonce: String,
}

impl ClientAuth {
    /// The MD5 long-term key.
    pub fn key(&self) -> [u8; 16] {
        long_term_key_md5(&self.username, &self.realm, &self.password)
    }

    /// Takes REALM and NONCE from a 401/438 response; false when it has neither.
    pub fn update_from_challenge(&mut self, response: &Message<'_>) -> bool {
        let realm = match response.attribute(types::REALM) {
            Some(Ok(Attribute::Realm(r))) => r.to_owned(),
            _ => return false,
        };
        let nonce = match response.attribute(types::NONCE) {
            Some(Ok(Attribute::Nonce(n))) => n.to_owned(),
            _ => return false,
        };
        self.realm = realm;
        self.nonce = nonce;
        true
    }
}

/// Encodes a request (or indication) with `attrs`, signed with `auth` when given, with FINGERPRINT.
pub fn encode_request(
    method: Method,
    class: Class,
    tid: TransactionId,
    attrs: &[Attribute<'_>],
    auth: Option<&ClientAuth>,
) -> Result<Vec<u8>, EncodeError> {
    let mut buf = vec![0u8; 2048];
    let mut w = MessageWriter::new(&mut buf, MessageType::new(method, class), tid)?;
    for a in attrs {
        w.add(a)?;
    }
    if let Some(auth) = auth {
        w.add(&Attribute::Username(&auth.username))?;
        w.add(&Attribute::Realm(&auth.realm))?;
        w.add(&Attribute::Nonce(&auth.nonce))?;
        IntegrityKey::Md5Sha1(auth.key()).sign(&mut w)?;
    }
    w.add_fingerprint()?;
    let n = w.finish();
    buf.truncate(n);
    Ok(buf)
}

/// The ERROR-CODE number of a response, if it is an error response.
pub fn error_code(response: &Message<'_>) -> Option<u16> {
    match response.attribute(types::ERROR_CODE) {
        Some(Ok(Attribute::ErrorCode { code, .. })) => Some(code),
        _ => None,
    }
}
