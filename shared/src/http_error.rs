//! The error body every geoturn HTTP surface answers with, written in one place: RFC 9457
//! problem details (`application/problem+json`):
//!
//! ```json
//! {"type": "tag:geoturn,2026:problem:rate_limited", "title": "Too Many Requests",
//!  "status": 429, "detail": "too many requests; …", "code": "rate_limited",
//!  "error": {"code": "rate_limited", "message": "too many requests; …"}}
//! ```
//!
//! `code` is the stable machine-readable name (also the last part of `type`, a URI that names
//! the problem without pretending to be a page); `detail` says what went wrong for a person
//! and never holds a secret. `error` is the body earlier versions answered (DESIGN.md §5),
//! kept as an extension member so clients written against it keep working.

/// The media type of a problem details body (RFC 9457 §3).
pub const PROBLEM_JSON: &str = "application/problem+json";

/// The `type` URI of the problem `code`.
pub fn problem_type(code: &str) -> String {
    format!("tag:geoturn,2026:problem:{code}")
}

/// A problem details body (RFC 9457 §3.1), with `code` and `error` as extension members.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(
    feature = "openapi",
    schema(
        description = "RFC 9457 problem details; `code` is the stable machine-readable name and `error` repeats code and detail in the shape of earlier versions"
    )
)]
pub struct Problem {
    /// A URI naming the problem: `tag:geoturn,2026:problem:` and the code.
    #[serde(rename = "type")]
    #[cfg_attr(feature = "openapi", schema(format = "uri"))]
    pub type_uri: String,
    /// The status's reason phrase.
    pub title: &'static str,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong, for a person; never holds a secret.
    pub detail: String,
    /// The stable machine-readable name.
    pub code: String,
    /// `code` and `detail` as earlier versions answered them (DESIGN.md §5).
    pub error: LegacyError,
}

/// The error body of earlier versions, kept inside [`Problem`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LegacyError {
    /// The problem's code.
    pub code: String,
    /// The problem's detail.
    pub message: String,
}

/// The problem details body for `status` (the HTTP status code), `code` and `message`.
pub fn error_body(status: u16, code: &str, message: &str) -> Problem {
    Problem {
        type_uri: problem_type(code),
        title: title(status),
        status,
        detail: message.to_owned(),
        code: code.to_owned(),
        error: LegacyError {
            code: code.to_owned(),
            message: message.to_owned(),
        },
    }
}

/// The status's reason phrase (RFC 9110), the problem's `title`.
fn title(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        s if s < 500 => "Client Error",
        _ => "Server Error",
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn shape_and_escaping() {
        let body =
            serde_json::to_value(super::error_body(404, "not_found", "no \"such\" endpoint"))
                .unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "type": "tag:geoturn,2026:problem:not_found",
                "title": "Not Found",
                "status": 404,
                "detail": "no \"such\" endpoint",
                "code": "not_found",
                "error": {"code": "not_found", "message": "no \"such\" endpoint"},
            })
        );
        assert!(
            body.to_string()
                .contains(r#""detail":"no \"such\" endpoint""#)
        );
    }
}
