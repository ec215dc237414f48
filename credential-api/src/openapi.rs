//! The OpenAPI 3.1 description served at `/openapi.json`, generated (utoipa) from the types the
//! handlers take and answer ([`crate::answers`], the request parameter structs) and from the
//! `#[utoipa::path]` attribute on each handler. A test checks it lists every route in
//! [`crate::server::ROUTES`] and nothing else; `tests/tests/api.rs` runs schemathesis against a
//! live API from it.

use geoturn_shared::http_error::{LegacyError, Problem};
use serde_json::Value;
use utoipa::openapi::schema::AnyOfBuilder;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{KnownFormat, ObjectBuilder, RefOr, Schema, SchemaFormat, Type};
use utoipa::{IntoResponses, Modify, OpenApi, PartialSchema, ToSchema};

use crate::answers::{CloudflareError, CloudflareErrorItem};

/// The document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "geoturn credential API",
        description = "Time-limited TURN credentials and the nearest, least-loaded relays for a client. Authenticate with `Authorization: Bearer <API key or JWT>`. Errors are RFC 9457 problem details (application/problem+json); the Cloudflare-shaped route answers Cloudflare's envelope.",
    ),
    paths(
        crate::routes::credentials::get_ice_servers,
        crate::routes::credentials::post_ice_servers,
        crate::routes::credentials::turn_rest,
        crate::routes::credentials::cloudflare_generate,
        crate::routes::admin::relays,
        crate::routes::admin::mesh,
        crate::routes::admin::history,
        crate::routes::admin::route,
        crate::routes::admin::list_secrets,
        crate::routes::admin::rotate_secret,
        crate::routes::admin::revoke_user,
        crate::routes::admin::drain_relay,
        crate::routes::ops::healthz,
        crate::routes::ops::readyz,
        crate::routes::ops::metrics,
        crate::routes::ops::openapi,
        crate::routes::ops::client_js,
        crate::dashboard::page,
        crate::dashboard::asset,
        crate::dashboard::events,
    ),
    components(schemas(
        Problem, LegacyError, CloudflareError, CloudflareErrorItem, UserId, IpAddress, TurnService
    )),
    modifiers(&Bearer, &OperationIds),
)]
struct ApiDoc;

/// The document as JSON.
pub fn document() -> Value {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    serde_json::to_value(doc).unwrap_or_default()
}

/// The errors every authenticated route may answer, as problem details.
#[derive(IntoResponses)]
#[allow(dead_code)] // only its derive is used: the response list of the document
pub enum Problems {
    /// Malformed request (query, body or path).
    #[response(status = 400, content_type = "application/problem+json")]
    BadRequest(Problem),
    /// Missing, unknown, expired or invalid API key or JWT.
    #[response(status = 401, content_type = "application/problem+json")]
    Unauthorized(Problem),
    /// Authenticated, but not allowed to do this.
    #[response(status = 403, content_type = "application/problem+json")]
    Forbidden(Problem),
    /// Rate limited; see Retry-After.
    #[response(status = 429, content_type = "application/problem+json")]
    TooManyRequests(Problem),
    /// No live relay, no secret, or the registry is unreachable.
    #[response(status = 503, content_type = "application/problem+json")]
    Unavailable(Problem),
}

/// The errors of the Cloudflare-shaped route, in Cloudflare's envelope.
#[derive(IntoResponses)]
#[allow(dead_code)] // only its derive is used
pub enum CloudflareProblems {
    /// Malformed request.
    #[response(status = 400)]
    BadRequest(CloudflareError),
    /// Missing, unknown or invalid API key.
    #[response(status = 401)]
    Unauthorized(CloudflareError),
    /// Not an API key, or key_id is not the calling key's name.
    #[response(status = 403)]
    Forbidden(CloudflareError),
    /// Rate limited; see Retry-After.
    #[response(status = 429)]
    TooManyRequests(CloudflareError),
    /// No live relay or no secret.
    #[response(status = 503)]
    Unavailable(CloudflareError),
}

/// The `bearer` security scheme the authenticated operations name.
struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let mut scheme = Http::new(HttpAuthScheme::Bearer);
        scheme.description = Some("An API key (server-to-server) or a JWT (browsers)".to_owned());
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

/// Gives every operation its [`operation_id`], so ids follow one rule and never collide.
struct OperationIds;

impl Modify for OperationIds {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (path, item) in openapi.paths.paths.iter_mut() {
            let ops = [
                ("get", item.get.as_mut()),
                ("post", item.post.as_mut()),
                ("put", item.put.as_mut()),
                ("delete", item.delete.as_mut()),
                ("patch", item.patch.as_mut()),
            ];
            for (method, op) in ops {
                if let Some(op) = op {
                    op.operation_id = Some(operation_id(method, path));
                }
            }
        }
    }
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

/// The schema of a TURN user id: the API takes 1 to 128 bytes of UTF-8 without control
/// characters; the schema promises no more than 32 characters, which always fit.
pub struct UserId;

impl PartialSchema for UserId {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some("^[^\\u0000-\\u001f\\u007f-\\u009f]{1,32}$"))
            .into()
    }
}

impl ToSchema for UserId {}

/// The schema of an IPv4 or IPv6 address.
pub struct IpAddress;

impl PartialSchema for IpAddress {
    fn schema() -> RefOr<Schema> {
        let text = |format| {
            ObjectBuilder::new()
                .schema_type(Type::String)
                .format(Some(SchemaFormat::KnownFormat(format)))
        };
        Schema::AnyOf(
            AnyOfBuilder::new()
                .item(text(KnownFormat::Ipv4))
                .item(text(KnownFormat::Ipv6))
                .build(),
        )
        .into()
    }
}

impl ToSchema for IpAddress {}

/// The TURN REST draft's `service`: always `turn`.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // only its schema is used; the handler reads the text
pub enum TurnService {
    /// The only service.
    #[serde(rename = "turn")]
    Turn,
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

    /// Every `$ref` in `v`.
    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(map) => {
                if let Some(Value::String(r)) = map.get("$ref") {
                    out.push(r.clone());
                }
                map.values().for_each(|v| refs(v, out));
            }
            Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }

    #[test]
    fn every_reference_resolves_and_every_json_answer_is_described() {
        let doc = document();
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        let mut all = Vec::new();
        refs(&doc, &mut all);
        assert!(all.len() > 20, "{all:?}");
        for r in &all {
            let name = r.strip_prefix("#/components/schemas/").unwrap_or(r);
            assert!(schemas.contains_key(name), "{r} does not resolve");
        }
        let mut json_answers = 0;
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                for (status, response) in op["responses"].as_object().unwrap() {
                    let content = response["content"].as_object();
                    for (media, body) in content.into_iter().flatten() {
                        // The document itself is any JSON object.
                        if media.contains("json") && path != "/openapi.json" {
                            json_answers += 1;
                            let schema = &body["schema"];
                            assert!(
                                schema.get("$ref").is_some(),
                                "{method} {path} {status} {media}: {schema} is not a named type"
                            );
                        }
                    }
                }
            }
        }
        assert!(json_answers > 50, "{json_answers}");
    }
}
