//! Every JSON answer of the API as a type: the handlers serialize these, and the OpenAPI
//! document ([`crate::openapi`]) describes these, so the two cannot drift apart.
//!
//! Names are camelCase and times RFC 3339 ([`Timestamp`]) throughout; durations are whole
//! milliseconds named `…Ms` or seconds named `ttl`/`maxTtl`. Types an answer must hold exactly
//! (the admin answers) carry `deny_unknown_fields`: serde ignores it when serializing, and the
//! schema turns it into `additionalProperties: false`.

use geoturn_shared::registry::{RelayAddrs, RelayState};
use serde::Serialize;
use utoipa::ToSchema;

use crate::ice::IceServer;
use crate::rfc3339::Timestamp;

/// `GET`/`POST /v1/ice-servers`: what `new RTCPeerConnection({iceServers})` takes, and when
/// the credential in it expires.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct IceServersAnswer {
    /// STUN first, then each chosen relay, best first, then the anycast entry if configured.
    pub ice_servers: Vec<IceServer>,
    /// The credential's lifetime, seconds.
    pub ttl: u64,
    /// When the credential stops working: refresh before.
    pub expires_at: Timestamp,
}

/// `GET /v1/turn-rest`: draft-uberti-behave-turn-rest-00 §2.2.
#[derive(Debug, Serialize, ToSchema)]
pub struct TurnRestAnswer {
    /// The TURN username (`expiry:user`).
    pub username: String,
    /// The TURN password (base64 HMAC of the username).
    pub password: String,
    /// Lifetime, seconds.
    pub ttl: u64,
    /// TURN URLs, best relay first.
    pub uris: Vec<String>,
}

/// `POST …/generate-ice-servers`: Cloudflare's answer.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CloudflareAnswer {
    /// As in [`IceServersAnswer`].
    pub ice_servers: Vec<IceServer>,
}

/// Cloudflare's API error envelope: code 10000 for authentication errors, else the HTTP
/// status.
#[derive(Debug, Serialize, ToSchema)]
pub struct CloudflareError {
    /// Always false.
    #[schema(schema_with = always_false)]
    pub success: bool,
    /// One entry.
    pub errors: Vec<CloudflareErrorItem>,
    /// Always empty.
    #[schema(max_items = 0)]
    pub messages: Vec<String>,
    /// Always null.
    #[schema(schema_with = null, required = true)]
    pub result: Option<()>,
}

/// One error of [`CloudflareError`].
#[derive(Debug, Serialize, ToSchema)]
pub struct CloudflareErrorItem {
    /// 10000 (authentication) or the HTTP status.
    pub code: u16,
    /// For a person.
    pub message: String,
}

/// `GET /v1/admin/secrets`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretsList {
    /// The live secrets, active (newest) first.
    pub secrets: Vec<LiveSecret>,
    /// Longest credential lifetime, seconds.
    pub max_ttl: u64,
}

/// One live TURN secret.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LiveSecret {
    /// The secret's id.
    pub id: String,
    /// The shared secret itself.
    pub secret: String,
    /// When a retiring secret stops validating; null for the active one and for a secret from
    /// the API's configuration (it validates until the configuration drops it).
    #[schema(required = true)]
    pub not_after: Option<Timestamp>,
    /// Whether credentials are minted with this one.
    pub active: bool,
}

/// `POST /v1/admin/secrets/rotate`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rotated {
    /// The new active secret's id.
    pub id: String,
    /// Secrets that still validate until their `notAfter`.
    pub retiring: Vec<RetiringSecret>,
    /// Ids of secrets past their time, removed.
    pub removed: Vec<String>,
}

/// A secret that validates until `notAfter`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetiringSecret {
    /// The secret's id.
    pub id: String,
    /// When it stops validating.
    pub not_after: Timestamp,
}

/// `POST /v1/admin/users/{id}/revoke`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Revoked {
    /// The user id.
    pub user: String,
    /// Always true.
    #[schema(schema_with = always_true)]
    pub revoked: bool,
}

/// `POST /v1/admin/relays/{id}/drain`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DrainRequested {
    /// The relay id.
    pub relay: String,
    /// Always true.
    #[schema(schema_with = always_true)]
    pub draining: bool,
}

/// `GET /readyz`, ready or not.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Readiness {
    /// Registry read, a secret can mint, and not stopping.
    pub ready: bool,
    /// The process is shutting down.
    pub stopping: bool,
    /// Whether the registry answered the last read.
    pub registry: RegistryHealth,
    /// Whether the relay snapshot is current.
    pub snapshot: Freshness,
    /// The snapshot's age.
    pub snapshot_age_ms: u64,
    /// Relays in the snapshot.
    pub relays: u64,
    /// Live secrets.
    pub secrets: u64,
}

/// The registry as of the last read.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
pub enum RegistryHealth {
    /// Read.
    #[serde(rename = "ok")]
    Ok,
    /// The last read failed; the snapshot before it still serves.
    #[serde(rename = "unreachable")]
    Unreachable,
    /// Not read yet.
    #[serde(rename = "never read")]
    NeverRead,
}

/// A snapshot's freshness.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Freshness {
    /// From the last read.
    Fresh,
    /// Older: the registry could not be read since.
    Stale,
}

/// `GET /v1/relays`, and the data of every `/v1/events` `snapshot` event: the fleet as of the
/// snapshot.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Fleet {
    /// Every relay, as of its last heartbeat.
    pub relays: Vec<RelayView>,
    /// When the registry was read.
    pub fetched_at: Timestamp,
    /// A heartbeat older than this is stale.
    pub stale_after_ms: u64,
    /// The registry could not be read since the snapshot.
    pub stale: bool,
    /// Why, when stale.
    #[schema(required = true)]
    pub error: Option<String>,
}

/// One server-sent event of `GET /v1/events`, as the OpenAPI document describes events.
#[derive(Debug, ToSchema)]
#[allow(dead_code)] // a schema only: the stream is written by axum's SSE encoder
pub struct SnapshotEvent {
    /// Always `snapshot`.
    #[schema(schema_with = snapshot_event_name)]
    pub event: String,
    /// The [`Fleet`] JSON, as `GET /v1/relays` answers it.
    #[schema(content_media_type = "application/json")]
    pub data: String,
}

/// A relay as of its last heartbeat (load in bits and packets per second, capacity), with its
/// heartbeat age and staleness at the read.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Relay)]
pub struct RelayView {
    /// Unique id.
    pub id: String,
    /// Region name.
    pub region: String,
    /// Latitude, degrees.
    pub lat: f64,
    /// Longitude, degrees.
    pub lon: f64,
    /// Draining as soon as the API has asked it to, before its own heartbeat says so.
    pub state: RelayState,
    /// Software version.
    pub version: String,
    /// Public addresses per transport, and host name.
    pub addresses: RelayAddrs,
    /// The TURN URLs built from `addresses`.
    pub urls: Vec<String>,
    /// Allocations held.
    pub allocations: u64,
    /// Most allocations it takes.
    pub capacity_allocations: u64,
    /// Provisioned bandwidth, megabits per second.
    pub capacity_mbps: u64,
    /// Relayed bits per second, client to peer.
    pub bps_in: u64,
    /// Relayed bits per second, peer to client.
    pub bps_out: u64,
    /// Packets per second received.
    pub pps_in: u64,
    /// Packets per second sent.
    pub pps_out: u64,
    /// Share of the host's CPU, 0.0 to 1.0.
    pub cpu: f32,
    /// When the relay started.
    pub started_at: Timestamp,
    /// When the record was written.
    pub updated_at: Timestamp,
    /// The heartbeat's age at the read.
    pub heartbeat_age_ms: u64,
    /// Older than `staleAfterMs`.
    pub stale: bool,
    /// While draining: when the relay closes the allocations it still holds and leaves (it
    /// leaves earlier once they have ended); null while active, and until a draining relay's
    /// heartbeat says.
    #[schema(required = true)]
    pub drain_deadline: Option<Timestamp>,
}

/// A boolean that is always `value`.
fn boolean(value: bool) -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::Boolean)
        .enum_values(Some([value]))
        .build()
}

fn always_true() -> utoipa::openapi::Object {
    boolean(true)
}

fn always_false() -> utoipa::openapi::Object {
    boolean(false)
}

fn null() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::Null)
        .build()
}

fn snapshot_event_name() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some(["snapshot"]))
        .build()
}

/// `GET /v1/route?ip=` and `geoturn route --json`: the relays a client address would be given,
/// best first, with how each scored and why the others were left out.
#[derive(Debug, Serialize, serde::Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RouteAnswer {
    /// The client address.
    #[schema(value_type = crate::openapi::IpAddress)]
    pub ip: std::net::IpAddr,
    /// Where GeoIP places it; null when unknown.
    #[schema(required = true)]
    pub location: Option<RouteLocation>,
    /// Relays considered.
    pub relays: u64,
    /// The chosen relays, best first.
    pub chosen: Vec<RouteChoice>,
    /// Relays that may not be handed out, and why.
    pub excluded: Vec<RouteExclusion>,
}

/// Where GeoIP places a client.
#[derive(Debug, Serialize, serde::Deserialize, ToSchema)]
pub struct RouteLocation {
    /// Latitude, degrees.
    pub lat: f64,
    /// Longitude, degrees.
    pub lon: f64,
    /// ISO 3166-1 alpha-2 country code, when known.
    #[schema(required = true)]
    pub country: Option<String>,
}

/// A chosen relay and how it scored.
#[derive(Debug, Serialize, serde::Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RouteChoice {
    /// Relay id.
    pub id: String,
    /// Its region.
    pub region: String,
    /// Great-circle distance to the client; null when the client's place is unknown.
    #[schema(required = true)]
    pub distance_km: Option<f64>,
    /// Estimated round trip, ms.
    pub rtt_ms: f64,
    /// Utilisation, 0 to 1.
    pub load: f64,
    /// What it was ranked by, lower is better.
    pub score: f64,
    /// One line for people: distance, RTT and its source, load, score.
    pub reason: String,
    /// Its TURN URLs.
    pub urls: Vec<String>,
}

/// A relay left out, and why.
#[derive(Debug, Serialize, serde::Deserialize, ToSchema)]
pub struct RouteExclusion {
    /// Relay id.
    pub id: String,
    /// Draining, stale, over capacity or a broken record.
    pub reason: String,
}

impl RouteAnswer {
    /// The answer for a client at `ip`, placed at `location`, from `ranking` of `relays`.
    pub fn new(
        ip: std::net::IpAddr,
        location: Option<&geoturn_geo::Location>,
        ranking: &geoturn_geo::Ranking,
        relays: &[geoturn_shared::registry::RelayRecord],
    ) -> Self {
        Self {
            ip,
            location: location.map(|l| RouteLocation {
                lat: l.lat,
                lon: l.lon,
                country: l.country.clone(),
            }),
            relays: relays.len() as u64,
            chosen: ranking
                .chosen
                .iter()
                .map(|c| RouteChoice {
                    id: c.id.clone(),
                    region: c.region.clone(),
                    distance_km: c.distance_km,
                    rtt_ms: c.rtt_ms,
                    load: c.load,
                    score: c.score,
                    reason: c.reason.clone(),
                    urls: relays
                        .get(c.index)
                        .map(|r| r.addresses.turn_urls())
                        .unwrap_or_default(),
                })
                .collect(),
            excluded: ranking
                .excluded
                .iter()
                .map(|e| RouteExclusion {
                    id: e.id.clone(),
                    reason: e.reason.to_string(),
                })
                .collect(),
        }
    }

    /// The answer for people: where the client is, then each choice and exclusion on a line.
    pub fn to_text(&self) -> String {
        let mut out = match &self.location {
            Some(l) => format!(
                "client {} at {:.2},{:.2}{}\n",
                self.ip,
                l.lat,
                l.lon,
                l.country
                    .as_deref()
                    .map(|c| format!(" ({c})"))
                    .unwrap_or_default()
            ),
            None => format!("client {}: location unknown\n", self.ip),
        };
        let plural = if self.relays == 1 { "" } else { "s" };
        out.push_str(&format!("{} relay{plural} considered\n", self.relays));
        for (i, c) in self.chosen.iter().enumerate() {
            out.push_str(&format!(
                "{}. {} ({}): {}\n",
                i + 1,
                c.id,
                c.region,
                c.reason
            ));
        }
        for e in &self.excluded {
            out.push_str(&format!("excluded {}: {}\n", e.id, e.reason));
        }
        out
    }
}

/// `GET /v1/mesh`: the region-to-region RTT matrix from the relays' QUIC mesh.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MeshAnswer {
    /// Region pairs (unordered: `from` ≤ `to`), measured or overridden.
    pub regions: Vec<MeshRegionPair>,
    /// Every relay-to-relay measurement behind them.
    pub links: Vec<crate::mesh::LinkRtt>,
    /// When the registry was read.
    pub fetched_at: Timestamp,
    /// A measurement older than this is stale: shown, never ranked on.
    pub fresh_ms: u64,
}

/// One region pair of the matrix.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MeshRegionPair {
    /// First region.
    pub from: String,
    /// Second region.
    pub to: String,
    /// Median RTT of the fresh relay measurements, ms; null when none is fresh.
    #[schema(required = true)]
    pub measured_ms: Option<f64>,
    /// Fresh measurements behind the median.
    pub samples: usize,
    /// The newest measurement, fresh or not, ms (null when only overridden).
    #[schema(required = true)]
    pub last_ms: Option<f64>,
    /// Age of the newest measurement, ms (null when only overridden).
    #[schema(required = true)]
    pub age_ms: Option<u64>,
    /// No fresh measurement: `lastMs` is what it was, not what it is.
    pub stale: bool,
    /// The operator's `[[rtt]]` value, which wins.
    #[schema(required = true)]
    pub override_ms: Option<f64>,
    /// What the ranking uses (null: the distance estimate; pairs within one region are never
    /// ranked on).
    #[schema(required = true)]
    pub effective_ms: Option<f64>,
}

impl MeshAnswer {
    /// The answer for a matrix read at `fetched_at_ms`.
    pub fn new(m: &crate::mesh::MeshMatrix, fetched_at_ms: u64) -> Self {
        Self {
            regions: m
                .pairs
                .iter()
                .map(|p| MeshRegionPair {
                    from: p.from.clone(),
                    to: p.to.clone(),
                    measured_ms: p.measured_ms,
                    samples: p.samples,
                    last_ms: p.last.map(|(ms, _)| ms),
                    age_ms: p.last.map(|(_, age)| age),
                    stale: p.last.is_some() && p.measured_ms.is_none(),
                    override_ms: p.override_ms,
                    effective_ms: p.effective_ms,
                })
                .collect(),
            links: m.links.clone(),
            fetched_at: Timestamp::millis(fetched_at_ms),
            fresh_ms: u64::try_from(geoturn_shared::registry::MESH_FRESH.as_millis()).unwrap_or(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_text_counts_relays_in_words() {
        let answer = |relays| RouteAnswer {
            ip: "203.0.113.9".parse().unwrap(),
            location: None,
            relays,
            chosen: Vec::new(),
            excluded: vec![RouteExclusion {
                id: "fra-1".into(),
                reason: "draining".into(),
            }],
        };
        assert_eq!(
            answer(1).to_text(),
            "client 203.0.113.9: location unknown\n1 relay considered\nexcluded fra-1: draining\n"
        );
        assert!(answer(3).to_text().contains("\n3 relays considered\n"));
    }
}
