//! The OpenAPI 3.1 description served at `/openapi.json`, written by hand next to the routes
//! (a test checks it lists every route in [`crate::server::ROUTES`] and nothing else).

use serde_json::{Value, json};

fn error_response(description: &str) -> Value {
    json!({"description": description, "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Error"}}}})
}

fn cloudflare_error(description: &str) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/CloudflareError"}}}})
}

fn errors() -> Value {
    json!({
        "400": error_response("Malformed request"),
        "401": error_response("Missing, unknown, expired or invalid API key or JWT"),
        "403": error_response("Authenticated, but not allowed to do this"),
        "429": error_response("Rate limited; see Retry-After"),
        "503": error_response("No live relay, no secret, or the registry is unreachable"),
    })
}

fn ice_params() -> Value {
    json!([
        {"name": "ttl", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 4294967295u64}, "description": "Credential lifetime in seconds, capped by --max-ttl"},
        {"name": "clientIp", "in": "query", "schema": ip_schema(), "description": "The client's address (API-key callers only); its first spelling, client_ip, is still accepted"},
        {"name": "count", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 8}, "description": "Relays to return"},
        {"name": "user", "in": "query", "schema": user_schema(), "description": "TURN user id (API-key callers; a JWT's sub is its user). Without one, each credential gets its own: the key's name, `~` and 12 random hex digits"},
    ])
}

/// A TURN user id: the API takes 1 to 128 bytes of UTF-8 without control characters; the
/// schema promises no more than 32 characters, which always fit.
fn user_schema() -> Value {
    json!({"type": "string", "pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f]{1,32}$"})
}

/// `schema`, or null (a JSON body's optional fields may be given as null).
fn nullable(schema: Value) -> Value {
    json!({"anyOf": [schema, {"type": "null"}]})
}

/// An IPv4 or IPv6 address.
fn ip_schema() -> Value {
    json!({"type": "string", "anyOf": [{"format": "ipv4"}, {"format": "ipv6"}]})
}

fn ok_json(description: &str, schema: Value) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": schema}}})
}

fn admin(summary: &str, status: &str, params: Value, schema: Value) -> Value {
    let mut responses = errors();
    responses[status] = ok_json(summary, schema);
    json!({"summary": summary, "security": [{"bearer": []}], "parameters": params, "responses": responses})
}

/// An object with exactly these properties, all required.
fn strict_object(properties: Value) -> Value {
    let required: Vec<String> = properties
        .as_object()
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default();
    json!({"type": "object", "required": required, "additionalProperties": false, "properties": properties})
}

/// A stable operationId from the method and path: `post` `/v1/admin/secrets/rotate` is
/// `postAdminSecretsRotate` (the `/v1` prefix and path parameters' braces dropped).
fn operation_id(method: &str, path: &str) -> String {
    let mut id = method.to_owned();
    for word in path
        .trim_start_matches("/v1")
        .split(['/', '-', '.', '{', '}'])
        .filter(|w| !w.is_empty())
    {
        let mut chars = word.chars();
        if let Some(first) = chars.next() {
            id.extend(first.to_uppercase());
            id.push_str(chars.as_str());
        }
    }
    id
}

/// Gives every operation of `doc` its [`operation_id`].
fn add_operation_ids(doc: &mut Value) {
    let Some(paths) = doc["paths"].as_object_mut() else {
        return;
    };
    for (path, item) in paths.iter_mut() {
        if let Some(ops) = item.as_object_mut() {
            for (method, op) in ops.iter_mut() {
                op["operationId"] = Value::String(operation_id(method, path));
            }
        }
    }
}

/// `GET /readyz`'s body, ready or not.
fn readiness() -> Value {
    strict_object(json!({
        "ready": {"type": "boolean"},
        "stopping": {"type": "boolean"},
        "registry": {"enum": ["ok", "unreachable", "never read"]},
        "snapshot": {"enum": ["fresh", "stale"]},
        "snapshotAgeMs": {"type": "integer"},
        "relays": {"type": "integer"},
        "secrets": {"type": "integer"},
    }))
}

/// The document.
pub fn document() -> Value {
    let mut doc = paths_and_schemas();
    add_operation_ids(&mut doc);
    doc
}

fn paths_and_schemas() -> Value {
    let relays_get = {
        let mut get = admin(
            "The relay load snapshot (API keys)",
            "200",
            json!([]),
            json!({}),
        );
        get["responses"]["200"] = ok_json(
            "The relay load snapshot (API keys)",
            json!({"$ref": "#/components/schemas/RelaysSnapshot"}),
        );
        get
    };
    let ice_ok = {
        let mut r = errors();
        r["200"] = ok_json(
            "ICE servers",
            json!({"$ref": "#/components/schemas/IceServersAnswer"}),
        );
        r
    };
    let id_param = |name: &str| json!([{"name": name, "in": "path", "required": true, "schema": user_schema()}]);
    let rotate = {
        let mut op = admin(
            "Create a new active secret; older ones retire after max TTL (admin)",
            "201",
            json!([]),
            strict_object(json!({
                "id": {"type": "string"},
                "retiring": {"type": "array", "items": strict_object(json!({"id": {"type": "string"}, "notAfter": {"type": "string", "format": "date-time"}}))},
                "removed": {"type": "array", "items": {"type": "string"}}})),
        );
        op["responses"]["409"] = error_response(
            "Secrets are static (no --secrets-key): nothing to rotate; or 16 secrets are still valid (too_many_secrets): rotate again once the oldest retires",
        );
        op
    };
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "geoturn credential API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Time-limited TURN credentials and the nearest, least-loaded relays for a client. Authenticate with `Authorization: Bearer <API key or JWT>`. Errors are RFC 9457 problem details (application/problem+json); the Cloudflare-shaped route answers Cloudflare's envelope.",
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": "An API key (server-to-server) or a JWT (browsers)"}},
            "schemas": {
                "Error": {"type": "object", "description": "RFC 9457 problem details; `error` repeats code and detail in the shape of earlier versions", "required": ["type", "title", "status", "detail", "code", "error"], "properties": {
                    "type": {"type": "string", "format": "uri"}, "title": {"type": "string"}, "status": {"type": "integer"},
                    "detail": {"type": "string"}, "code": {"type": "string"},
                    "error": {"type": "object", "required": ["code", "message"], "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}},
                "IceServer": {"type": "object", "required": ["urls"], "properties": {"urls": {"type": "array", "items": {"type": "string"}}, "username": {"type": "string"}, "credential": {"type": "string"}}},
                "IceServersAnswer": {"type": "object", "required": ["iceServers", "ttl", "expiresAt"], "properties": {
                    "iceServers": {"type": "array", "items": {"$ref": "#/components/schemas/IceServer"}},
                    "ttl": {"type": "integer"}, "expiresAt": {"type": "string", "format": "date-time"}}},
                "RelayAddresses": {"type": "object", "required": ["udp", "tcp", "tls", "host"],
                    "description": "A relay's advertised public IP addresses per transport (`IP:port`, IPv6 as `[2001:db8::1]:3478`) and its --public-host name (null when none), which its URLs carry in place of the IP",
                    "properties": {
                        "udp": {"type": "array", "items": {"type": "string"}},
                        "tcp": {"type": "array", "items": {"type": "string"}},
                        "tls": {"type": "array", "items": {"type": "string"}},
                        "host": {"type": ["string", "null"]}}},
                "Relay": {"type": "object", "description": "A relay as of its last heartbeat (load in bits and packets per second, capacity), with its heartbeat age and staleness at the read",
                    "required": ["id", "region", "state", "addresses", "urls", "allocations", "capacityAllocations", "startedAt", "updatedAt", "heartbeatAgeMs", "stale"],
                    "properties": {
                        "id": {"type": "string"}, "region": {"type": "string"}, "lat": {"type": "number"}, "lon": {"type": "number"},
                        "state": {"type": "string", "enum": ["active", "draining"]}, "version": {"type": "string"},
                        "addresses": {"$ref": "#/components/schemas/RelayAddresses"},
                        "urls": {"type": "array", "items": {"type": "string"}, "description": "The TURN URLs built from addresses"},
                        "allocations": {"type": "integer"}, "capacityAllocations": {"type": "integer"}, "capacityMbps": {"type": "integer"},
                        "bpsIn": {"type": "integer"}, "bpsOut": {"type": "integer"}, "ppsIn": {"type": "integer"}, "ppsOut": {"type": "integer"},
                        "cpu": {"type": "number"},
                        "startedAt": {"type": "string", "format": "date-time"}, "updatedAt": {"type": "string", "format": "date-time"},
                        "heartbeatAgeMs": {"type": "integer"}, "stale": {"type": "boolean"}}},
                "RelaysSnapshot": {"type": "object", "required": ["relays"], "properties": {
                    "relays": {"type": "array", "items": {"$ref": "#/components/schemas/Relay"}},
                    "fetchedAt": {"type": "string", "format": "date-time"},
                    "staleAfterMs": {"type": "integer"}, "stale": {"type": "boolean"}, "error": {"type": ["string", "null"]}}},
                "IceRequest": {"type": "object", "additionalProperties": false, "properties": {
                    "ttl": nullable(json!({"type": "integer", "minimum": 1, "maximum": 4294967295u64})), "clientIp": nullable(ip_schema()),
                    "count": nullable(json!({"type": "integer", "minimum": 1, "maximum": 8})), "user": nullable(user_schema())}},
                "CloudflareError": {"type": "object", "description": "Cloudflare's API error envelope (code 10000 for authentication errors, else the HTTP status)",
                    "required": ["success", "errors", "messages", "result"], "properties": {
                        "success": {"const": false},
                        "errors": {"type": "array", "items": {"type": "object", "required": ["code", "message"], "properties": {"code": {"type": "integer"}, "message": {"type": "string"}}}},
                        "messages": {"type": "array"}, "result": {"type": "null"}}},
            },
        },
        "paths": {
            "/v1/ice-servers": {
                "get": {"summary": "ICE servers for the caller's client", "security": [{"bearer": []}], "parameters": ice_params(), "responses": ice_ok},
                "post": {"summary": "ICE servers for the caller's client (JSON body)", "security": [{"bearer": []}],
                    "requestBody": {"required": false, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/IceRequest"}}}},
                    "responses": ice_ok},
            },
            "/v1/turn-rest": {"get": {
                "summary": "draft-uberti-behave-turn-rest-00 credentials",
                "parameters": [
                    {"name": "service", "in": "query", "required": true, "schema": {"const": "turn"}},
                    {"name": "username", "in": "query", "schema": user_schema()},
                    {"name": "key", "in": "query", "schema": {"type": "string"}, "description": "API key (or use the Authorization header)"},
                    {"name": "ttl", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 4294967295u64}},
                ],
                "responses": {
                    "200": ok_json("Credentials", json!({"type": "object", "properties": {
                        "username": {"type": "string"}, "password": {"type": "string"}, "ttl": {"type": "integer"}, "uris": {"type": "array", "items": {"type": "string"}}}})),
                    "400": error_response("Malformed request"),
                    "401": error_response("Missing, unknown or invalid API key"),
                    "403": error_response("Not an API key"),
                    "429": error_response("Rate limited; see Retry-After"),
                    "503": error_response("No live relay or no secret"),
                },
            }},
            "/v1/turn/keys/{key_id}/credentials/generate-ice-servers": {"post": {
                "summary": "Cloudflare-compatible ICE servers (key_id is the API key's name)",
                "security": [{"bearer": []}],
                "parameters": id_param("key_id"),
                "requestBody": {"content": {"application/json": {"schema": {"type": "object", "properties": {"ttl": {"type": "integer", "minimum": 1, "maximum": 4294967295u64}, "customIdentifier": user_schema()}}}}},
                "responses": {
                    "201": ok_json("ICE servers", json!({"type": "object", "properties": {"iceServers": {"type": "array", "items": {"$ref": "#/components/schemas/IceServer"}}}})),
                    "400": cloudflare_error("Malformed request"),
                    "401": cloudflare_error("Missing, unknown or invalid API key"),
                    "403": cloudflare_error("Not an API key, or key_id is not the calling key's name"),
                    "429": cloudflare_error("Rate limited; see Retry-After"),
                    "503": cloudflare_error("No live relay or no secret"),
                },
            }},
            "/v1/relays": {"get": relays_get},
            "/v1/admin/secrets": {"get": admin("Live TURN secrets, active first (an API key with the secrets:read scope, or admin)", "200", json!([]),
                strict_object(json!({
                    "secrets": {"type": "array", "items": strict_object(json!({
                        "id": {"type": "string"}, "secret": {"type": "string"},
                        "notAfter": {"anyOf": [{"type": "string", "format": "date-time"}, {"type": "null"}], "description": "When a retiring secret stops validating; null for the active one"},
                        "active": {"type": "boolean"}}))},
                    "maxTtl": {"type": "integer", "description": "Longest credential lifetime, seconds"}})))},
            "/v1/admin/secrets/rotate": {"post": rotate},
            "/v1/admin/users/{id}/revoke": {"post": admin("Refuse a user's current credentials on every relay (admin)", "202", id_param("id"),
                strict_object(json!({"user": {"type": "string"}, "revoked": {"const": true}})))},
            "/v1/admin/relays/{id}/drain": {"post": admin("Drain a relay (admin)", "202", id_param("id"),
                strict_object(json!({"relay": {"type": "string"}, "draining": {"const": true}})))},
            "/healthz": {"get": {"summary": "Liveness", "responses": {"200": {"description": "ok"}}}},
            "/readyz": {"get": {"summary": "Readiness with snapshot freshness", "responses": {"200": ok_json("ready", readiness()), "503": ok_json("not ready (or stopping)", readiness())}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "text/plain exposition"}}}},
            "/openapi.json": {"get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI 3.1"}}}},
            "/v1/client.js": {"get": {"summary": "The browser client: an ES module that fetches ICE servers, refreshes them before expiresAt and backs off on 429/503 (no authentication; any origin may import it)",
                "responses": {"200": {"description": "JavaScript module", "content": {"text/javascript": {"schema": {"type": "string"}}}}}}},
            "/dashboard": {"get": {"summary": "The operators' dashboard (HTML; asks for an API key, then reads /v1/events)", "responses": {"200": {"description": "text/html, with a Content-Security-Policy allowing this origin only"}}}},
            "/dashboard/{asset}": {"get": {"summary": "The dashboard's files: app.js, style.css, world.svg", "parameters": id_param("asset"),
                "responses": {"200": {"description": "JavaScript, CSS or SVG"}, "404": error_response("No such file")}}},
            "/v1/events": {"get": {
                "summary": "The relay load snapshot (the /v1/relays JSON) as server-sent events: one `snapshot` event at once, then one per snapshot refresh (API keys)",
                "security": [{"bearer": []}],
                "responses": {
                    "200": {"description": "text/event-stream of `event: snapshot` with the /v1/relays JSON as data; keep-alive comments every 15 s; the stream ends after 30 minutes (reconnect)",
                        "content": {"text/event-stream": {"schema": {"type": "object", "required": ["event", "data"], "properties": {
                            "event": {"const": "snapshot"}, "data": {"type": "string", "description": "The /v1/relays JSON"}}}}}},
                    "401": error_response("Missing or invalid API key"),
                    "403": error_response("Not an API key (JWT callers may not read the fleet)"),
                    "429": error_response("Rate limited, or this caller already holds 8 event streams (too_many_streams); see Retry-After"),
                    "503": error_response("Too many event streams open (too_many_streams); poll /v1/relays or retry after Retry-After"),
                }}},
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::ROUTES;

    #[test]
    fn describes_every_route_and_only_those() {
        let doc = document();
        let paths = doc["paths"].as_object().unwrap();
        for route in ROUTES {
            assert!(
                paths.contains_key(*route),
                "{route} missing from openapi.json"
            );
        }
        for path in paths.keys() {
            assert!(ROUTES.contains(&path.as_str()), "{path} is not a route");
        }
    }

    #[test]
    fn every_operation_has_a_unique_operation_id() {
        let doc = document();
        let mut ids = Vec::new();
        for item in doc["paths"].as_object().unwrap().values() {
            for op in item.as_object().unwrap().values() {
                ids.push(op["operationId"].as_str().unwrap().to_owned());
            }
        }
        let unique: std::collections::BTreeSet<&String> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len(), "{ids:?}");
        assert!(
            ids.contains(&"postAdminSecretsRotate".to_owned()),
            "{ids:?}"
        );
        assert!(ids.contains(&"getIceServers".to_owned()), "{ids:?}");
    }
}
