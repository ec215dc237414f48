//! Request handlers, one module per surface: [`credentials`] (ICE servers in three shapes),
//! [`admin`] (secrets, revocation, drain, the relay list and its history) and [`ops`] (health,
//! metrics, OpenAPI). Who is calling is [`crate::caller`]'s; this module holds the body parser they share.

pub mod admin;
pub mod credentials;
pub mod ops;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// A JSON body parsed into `T`; an empty body, or `null`, is `T::default()`. Errors are 4xx with the JSON
/// error shape (axum's own rejections are plain text).
pub(crate) fn json_body<T: DeserializeOwned + Default>(
    body: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    let bytes = body.map_err(|r| ApiError::new(r.status(), "bad_body", r.body_text()))?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice::<Option<T>>(&bytes)
        .map(Option::unwrap_or_default)
        .map_err(|e| ApiError::bad_request("bad_json", format!("request body: {e}")))
}
