//! The error body every geoturn HTTP surface answers with (DESIGN.md §5), written in one
//! place: `{"error": {"code": "…", "message": "…"}}`, where `code` is a stable machine-readable
//! name and `message` says what went wrong for a person.

/// The JSON error body for `code` and `message`.
pub fn error_body(code: &str, message: &str) -> serde_json::Value {
    serde_json::json!({"error": {"code": code, "message": message}})
}

#[cfg(test)]
mod tests {
    #[test]
    fn shape_and_escaping() {
        assert_eq!(
            super::error_body("not_found", "no \"such\" endpoint").to_string(),
            r#"{"error":{"code":"not_found","message":"no \"such\" endpoint"}}"#
        );
    }
}
