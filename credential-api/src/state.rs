//! What every request handler shares ([`AppState`]), and the response headers that say how
//! fresh the relays in an answer are.

use std::sync::Arc;
use std::time::Instant;

use axum::http::{HeaderValue, header};
use axum::response::Response;
use geoturn_geo::GeoIp;
use geoturn_shared::registry::Registry;

use crate::config::ApiConfig;
use crate::metrics::ApiMetrics;
use crate::rate_limit::RateLimiter;
use crate::secrets::ApiSecrets;
use crate::snapshot::{Snapshot, SnapshotStore};

/// Header saying whether the relays in an answer come from a fresh or a stale snapshot.
pub const SNAPSHOT_HEADER: &str = "x-geoturn-snapshot";

/// Everything a request handler needs.
#[derive(Debug)]
pub struct AppState {
    /// The configuration.
    pub config: ApiConfig,
    /// The registry (events, secrets, relays).
    pub registry: Registry,
    /// GeoIP databases.
    pub geo: GeoIp,
    /// TURN secrets for minting.
    pub secrets: ApiSecrets,
    /// The fleet as last read.
    pub snapshot: Arc<SnapshotStore>,
    /// Requests per caller.
    pub limiter: RateLimiter,
    /// Counters.
    pub metrics: ApiMetrics,
    /// Process start, for the rate limiter's clock.
    pub started: Instant,
    /// True once the API is shutting down: `/readyz` answers 503, event streams end, the HTTP
    /// server stops accepting and finishes what is in progress.
    pub stopping: tokio::sync::watch::Sender<bool>,
    /// Who may call: the configured API keys and JWT keys, replaced whole on a reload (SIGHUP,
    /// or a change of the config or key files) so a request sees either the old set or the new.
    pub auth: std::sync::RwLock<Arc<crate::auth::Authenticator>>,
    /// The last hour of the fleet, for the dashboard's charts (`GET /v1/history`), recorded
    /// from each new snapshot by `server::record_history`.
    pub history: std::sync::Mutex<crate::history::History>,
    /// Round trips the relays measured from client networks, as last read.
    pub measured: crate::measured::MeasuredCache,
}

impl AppState {
    /// True once shutdown has begun.
    pub fn is_stopping(&self) -> bool {
        *self.stopping.borrow()
    }

    /// The callers' keys as they are now.
    pub fn authenticator(&self) -> Arc<crate::auth::Authenticator> {
        self.auth
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The history, for reading or recording (a poisoned lock still holds whole points).
    pub fn history(&self) -> std::sync::MutexGuard<'_, crate::history::History> {
        self.history
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Replaces the callers' keys (a reload).
    pub fn set_authenticator(&self, auth: crate::auth::Authenticator) {
        *self
            .auth
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(auth);
    }
}

/// What the ranking gave one client, with what it was made from.
#[derive(Debug)]
pub struct ClientRanking {
    /// The fleet it ranked.
    pub snapshot: Arc<Snapshot>,
    /// Where GeoIP puts the client.
    pub location: Option<geoturn_geo::Location>,
    /// What the relays measured from the client's networks.
    pub measured: geoturn_geo::MeasuredRtts,
    /// The relays, best first, and those left out.
    pub ranking: geoturn_geo::Ranking,
}

impl AppState {
    /// `count` relays for a client at `client`, ranked now: the current snapshot, what was
    /// measured from the client's networks, the mesh's region matrix (`[[rtt]]` overriding it)
    /// and GeoIP. The one ranking `GET /v1/ice-servers` (and its siblings) and `GET /v1/route`
    /// share.
    ///
    /// With `may_explore` (answers handed to clients, never `/v1/route`'s explanation), a
    /// random `explore_percent` of the answers for a network with measurements try a region
    /// never measured from it as their fallback ([`geoturn_geo::MeasuredRtts::explore`]).
    pub async fn rank_client(
        &self,
        client: std::net::IpAddr,
        count: usize,
        may_explore: bool,
    ) -> ClientRanking {
        let snapshot = self.snapshot.get();
        let location = self.geo.lookup(client);
        let mut measured = self
            .measured
            .lookup(
                &self.registry,
                client,
                location.as_ref().map(crate::city_rtts::CityKey::of),
                snapshot.stale.is_none(),
                geoturn_shared::clock::unix_ms(),
            )
            .await;
        measured.explore = may_explore
            && !measured.is_empty()
            && rand::random_range(0..100u8) < self.config.explore_percent;
        let mut rank = self.config.rank.clone();
        rank.max_results = count;
        if let Some(matrix) = &snapshot.mesh.effective {
            rank.rtt_matrix = Some(matrix.clone());
        }
        let ranking = geoturn_geo::rank_relays_measured(
            &geoturn_geo::ClientLocation::from(location.clone()),
            &measured,
            &snapshot.candidates,
            &rank,
        );
        if may_explore {
            self.metrics.ranked(&ranking);
        }
        ClientRanking {
            snapshot,
            location,
            measured,
            ranking,
        }
    }
}

/// `count` as a number of relays to answer with: 1 to [`MAX_RELAYS_PER_ANSWER`] (400
/// `bad_count` otherwise).
pub(crate) fn relay_count(count: usize) -> Result<usize, crate::error::ApiError> {
    use crate::config::MAX_RELAYS_PER_ANSWER;
    if (1..=MAX_RELAYS_PER_ANSWER).contains(&count) {
        Ok(count)
    } else {
        Err(crate::error::ApiError::bad_request(
            "bad_count",
            format!("count must be 1 to {MAX_RELAYS_PER_ANSWER}"),
        ))
    }
}

/// Marks a response as never cacheable (it holds credentials) and says how fresh its relays are.
pub(crate) fn credential_headers(response: &mut Response, state: &Arc<AppState>) {
    let h = response.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    let snap = state.snapshot.get();
    let age = snap.age(geoturn_shared::clock::unix_ms()).as_secs();
    let value = match &snap.stale {
        None => format!("fresh; age={age}"),
        Some(_) => format!("stale; age={age}"),
    };
    if let Ok(v) = HeaderValue::from_str(&value) {
        h.insert(SNAPSHOT_HEADER, v);
    }
}
