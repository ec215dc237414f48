//! The relay in the registry: a heartbeat with its load and state every interval (at once when
//! a drain starts, so the credential API stops handing it out within one heartbeat), sibling
//! relays as drain alternates, and registry events (secret rotation, user revocation).
//! Redis being down costs freshness, never relaying: every failure here is logged once per
//! outage and retried on the next beat.

use geoturn_shared::clock::unix_ms;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use geoturn_relay_proto::Transport;
use geoturn_relay_proto::server::Alternate;
use geoturn_shared::SecretSet;
use geoturn_shared::registry::{
    AddrTransport, Registry, RegistryEvent, RelayAddrs, RelayRecord, RelayState,
};
use tokio::sync::broadcast::error::RecvError;

use super::Ops;
use super::status::status;

/// How long a revoked user stays refused when the revocation does not say (an event from an
/// older API): a day, the longest TTL those versions minted by default.
const REVOCATION: Duration = Duration::from_secs(24 * 3600);
/// The longest a revocation is honoured, whatever the registry says (bounds what a bad value
/// can do, and keeps instant arithmetic far from overflow).
const MAX_REVOCATION: Duration = Duration::from_secs(400 * 24 * 3600);
/// Bound on one registry call as seen from here (the client bounds its own calls too).
const CALL_TIMEOUT: Duration = Duration::from_secs(3);

/// What `/status` says about the registry (0, the default, is "disabled").
#[derive(Debug, Default)]
pub struct RegistryHealth(AtomicU8);

impl RegistryHealth {
    const OK: u8 = 1;
    const UNAVAILABLE: u8 = 2;

    /// `disabled`, `ok` or `unavailable`.
    pub fn as_str(&self) -> &'static str {
        match self.0.load(Ordering::Relaxed) {
            Self::OK => "ok",
            Self::UNAVAILABLE => "unavailable",
            _ => "disabled",
        }
    }

    /// Whether the last heartbeat reached the registry; `None` without a registry, or
    /// before the first heartbeat.
    pub fn is_up(&self) -> Option<bool> {
        Self::decode(self.0.load(Ordering::Relaxed))
    }

    fn decode(state: u8) -> Option<bool> {
        match state {
            Self::OK => Some(true),
            Self::UNAVAILABLE => Some(false),
            _ => None,
        }
    }

    /// Records a call's outcome; returns the state before it (`None` before the first call),
    /// so that a change is logged once and the first success is not called a recovery.
    fn set(&self, ok: bool) -> Option<bool> {
        let new = if ok { Self::OK } else { Self::UNAVAILABLE };
        Self::decode(self.0.swap(new, Ordering::Relaxed))
    }
}

/// The IP clients reach a listener at: the external IP of its family (behind NAT), else for
/// a wildcard listener the relay IP of its family, else the listen IP itself.
fn public_ip(ops: &Ops, listen: SocketAddr) -> IpAddr {
    let c = &ops.config;
    let (external, relay) = if listen.is_ipv4() {
        (c.external_ip_v4, c.relay_ip_v4)
    } else {
        (c.external_ip_v6, c.relay_ip_v6)
    };
    match external {
        Some(e) => e,
        None if listen.ip().is_unspecified() => relay.unwrap_or(listen.ip()),
        None => listen.ip(),
    }
}

/// This relay's public addresses: UDP and TCP on every listen address (TCP listens where UDP
/// does), TLS on every TLS listener, and `--public-host` for its URLs and certificate.
pub fn addresses(ops: &Ops) -> RelayAddrs {
    let public = |a: &SocketAddr| SocketAddr::new(public_ip(ops, *a), a.port());
    let listen: Vec<SocketAddr> = ops.relay.local_addrs().iter().map(public).collect();
    RelayAddrs {
        udp: listen.clone(),
        tcp: listen,
        tls: ops.relay.tls_addrs().iter().map(public).collect(),
        host: ops.config.public_host.clone(),
    }
}

/// Process CPU seconds so far, from /proc (Linux; clock ticks are 100 Hz there).
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')')?.1;
    let mut fields = rest.split_whitespace().skip(11);
    let utime: f64 = fields.next()?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

fn record(ops: &Ops, started_at_ms: u64, cpu: f32) -> RelayRecord {
    let st = status(ops);
    RelayRecord {
        id: ops.config.node_id.clone(),
        region: ops.config.region.clone(),
        lat: ops.config.lat,
        lon: ops.config.lon,
        addresses: addresses(ops),
        capacity_allocations: ops.config.capacity_allocations,
        capacity_mbps: ops.config.capacity_mbps,
        allocations: st.allocations as u64,
        bps_in: st.rates.bps_in,
        bps_out: st.rates.bps_out,
        pps_in: st.rates.pps_in,
        pps_out: st.rates.pps_out,
        cpu,
        state: if ops.drain.is_draining() {
            RelayState::Draining
        } else {
            RelayState::Active
        },
        version: env!("CARGO_PKG_VERSION").into(),
        started_at_ms,
        updated_at_ms: unix_ms(),
        drain_deadline_ms: ops.drain.deadline_unix_ms(),
    }
}

/// Live active siblings' UDP addresses, same region first, least loaded first within each;
/// every address of a sibling, so a client of either family finds one of its own. The record
/// holds IPs whether or not the sibling advertises a host name.
pub fn alternates(me: &str, region: &str, records: &[RelayRecord]) -> Vec<SocketAddr> {
    let mut candidates: Vec<&RelayRecord> = records
        .iter()
        .filter(|r| r.id != me && r.state == RelayState::Active)
        .filter(|r| r.load().value < 1.0)
        .collect();
    candidates.sort_by(|a, b| {
        (a.region != region)
            .cmp(&(b.region != region))
            .then(a.load().value.total_cmp(&b.load().value))
            .then(a.id.cmp(&b.id))
    });
    candidates
        .into_iter()
        .flat_map(|r| r.addresses.udp.iter().copied())
        .filter(reachable)
        .collect()
}

/// False for an unspecified address (a wildcard listener with no public IP configured, or an
/// older relay's record that named only its host): it reaches nobody.
fn reachable(a: &SocketAddr) -> bool {
    !a.ip().is_unspecified()
}

/// A record's addresses as first-contact targets, in the order of its URLs; a TLS target
/// carries the record's host name, when it has one, as ALTERNATE-DOMAIN (the name the
/// client checks the certificate against).
fn record_targets(r: &RelayRecord) -> Vec<Alternate> {
    r.addresses
        .in_order()
        .filter(|(_, addr)| reachable(addr))
        .map(|(transport, addr)| match transport {
            AddrTransport::Udp => Alternate {
                transport: Transport::Udp,
                addr,
                domain: None,
            },
            AddrTransport::Tcp => Alternate {
                transport: Transport::Tcp,
                addr,
                domain: None,
            },
            AddrTransport::Tls => Alternate {
                transport: Transport::Tls,
                addr,
                domain: r.addresses.host.clone(),
            },
        })
        .collect()
}

/// Where anycast first contacts go: the least loaded live active relay of this region (this
/// one included unless it drains) with room left, each relay's targets together so a client
/// of any transport finds one, ties broken by id.
pub fn first_contact_targets(region: &str, records: &[RelayRecord]) -> Vec<Alternate> {
    let mut candidates: Vec<&RelayRecord> = records
        .iter()
        .filter(|r| r.region == region && r.state == RelayState::Active)
        .filter(|r| r.load().value < 1.0)
        .collect();
    candidates.sort_by(|a, b| {
        a.load()
            .value
            .total_cmp(&b.load().value)
            .then(a.id.cmp(&b.id))
    });
    candidates.into_iter().flat_map(record_targets).collect()
}

/// Heartbeats until the task is aborted; then the caller removes the record.
pub async fn heartbeat_loop(ops: Arc<Ops>, registry: Registry, every: Duration) {
    let started_at_ms = unix_ms();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_cpu = (Instant::now(), cpu_seconds().unwrap_or(0.0));
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let mut cpu = 0.0f32;
    let mut announced_drain = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = ops.drain.started(), if !ops.drain.is_draining() => {}
        }
        let now = Instant::now();
        if let Some(c) = cpu_seconds() {
            let wall = now.duration_since(last_cpu.0).as_secs_f64();
            if wall > 0.0 {
                cpu = ((c - last_cpu.1) / wall / cores).clamp(0.0, 1.0) as f32;
            }
            last_cpu = (now, c);
        }
        let rec = record(&ops, started_at_ms, cpu);
        if rec.state == RelayState::Draining && !announced_drain {
            // Subscribers (the credential API) hear of it at once, not on their next read.
            let event = RegistryEvent::RelayDraining {
                relay_id: rec.id.clone(),
            };
            announced_drain = matches!(
                tokio::time::timeout(CALL_TIMEOUT, registry.publish(&event)).await,
                Ok(Ok(()))
            );
        }
        let result = tokio::time::timeout(CALL_TIMEOUT, registry.heartbeat(&rec, every * 3)).await;
        let ok = matches!(result, Ok(Ok(())));
        match (ops.registry.set(ok), ok) {
            (None, true) => tracing::info!("registry reachable: heartbeats started"),
            (Some(false), true) => tracing::info!("registry reachable: heartbeats resumed"),
            (None | Some(true), false) => {
                let error = match result {
                    Ok(Err(e)) => e.to_string(),
                    _ => "timed out".into(),
                };
                tracing::warn!(%error, "registry unreachable: relaying goes on, heartbeats will retry");
            }
            (Some(true), true) | (Some(false), false) => {}
        }
        if ok {
            publish_client_rtts(&ops, &registry).await;
        }
        let anycast = !ops.relay.anycast_addrs().is_empty();
        if ok
            && (ops.drain.is_draining() || anycast)
            && let Ok(Ok(records)) = tokio::time::timeout(CALL_TIMEOUT, registry.list()).await
        {
            if ops.drain.is_draining() {
                let alts = alternates(&ops.config.node_id, &ops.config.region, &records);
                ops.drain.set_alternates(alts);
            }
            if anycast {
                // Our own record as just written counts too, draining or not.
                let mut fleet: Vec<RelayRecord> =
                    records.into_iter().filter(|r| r.id != rec.id).collect();
                fleet.push(rec.clone());
                ops.relay
                    .set_first_contact(first_contact_targets(&ops.config.region, &fleet));
            }
        }
    }
}

/// Publishes the round trips measured from client networks since the last heartbeat (at most
/// [`crate::client_rtt::MAX_WRITES`] networks; the rest go next time, as do these if the write
/// fails).
async fn publish_client_rtts(ops: &Ops, registry: &Registry) {
    let changed = ops
        .relay
        .client_rtts()
        .take_changed(crate::client_rtt::MAX_WRITES);
    if changed.is_empty() {
        return;
    }
    let write = registry.store_client_rtts(&ops.config.region, &changed);
    if !matches!(tokio::time::timeout(CALL_TIMEOUT, write).await, Ok(Ok(()))) {
        ops.relay.client_rtts().mark_changed(&changed);
    }
}

/// When secrets are loaded from the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretsLoad {
    /// At start: an empty registry is one where no secret was ever rotated in.
    Start,
    /// After a rotation event or a gap in the events: the registry had secrets before.
    Event,
}

/// Loads the registry's secrets and applies them (with the static ones after them).
pub async fn reload_secrets(ops: &Ops, registry: &Registry, when: SecretsLoad) {
    let loaded = match tokio::time::timeout(CALL_TIMEOUT, registry.load_secrets()).await {
        Ok(Ok(set)) => set,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "cannot load secrets from the registry; keeping the current ones");
            return;
        }
        Err(_) => {
            tracing::warn!("loading secrets from the registry timed out; keeping the current ones");
            return;
        }
    };
    if loaded.is_empty() {
        let configured = ops.config.secrets.all().count();
        if when == SecretsLoad::Start && configured > 0 {
            // A new fleet (or `geoturn up`): nothing rotated in yet, the configured secrets
            // serve until something is.
            tracing::info!(
                configured,
                "the registry holds no secrets yet; using the configured ones"
            );
        } else if when == SecretsLoad::Start {
            tracing::warn!(
                "the registry holds no secrets yet and none are configured: every request that \
                 needs credentials is refused until a secret is rotated in"
            );
        } else {
            // Rotation always leaves a secret behind, so an empty registry is a Redis that came
            // back without its data: dropping our secrets would refuse every live credential.
            tracing::warn!(
                "the registry holds no secrets (restarted without persistence?); keeping the current ones"
            );
        }
        return;
    }
    let mut secrets: Vec<geoturn_shared::Secret> = loaded.all().cloned().collect();
    let from_registry = secrets.len();
    secrets.extend(ops.config.secrets.all().cloned());
    ops.relay.set_secrets(SecretSet::new(secrets));
    tracing::info!(from_registry, "secret set reloaded");
}

/// How long from now until `until` (Unix seconds), within [`MAX_REVOCATION`].
fn revocation_left(until: u64, now: u64) -> Duration {
    Duration::from_secs(until.saturating_sub(now)).min(MAX_REVOCATION)
}

/// Refuses every user the registry lists as revoked: at start and after a gap in the events,
/// so a relay that restarted, reconnected or missed an event never lets a revoked user back.
pub async fn load_revocations(ops: &Ops, registry: &Registry) {
    let now = geoturn_shared::clock::unix_secs();
    match tokio::time::timeout(CALL_TIMEOUT, registry.revocations(now)).await {
        Ok(Ok(list)) => {
            for (user, until) in &list {
                ops.relay.revoke_user(user, revocation_left(*until, now));
            }
            if !list.is_empty() {
                tracing::info!(count = list.len(), "revocations loaded from the registry");
            }
        }
        Ok(Err(e)) => tracing::warn!(error = %e, "cannot load revocations from the registry"),
        Err(_) => tracing::warn!("loading revocations from the registry timed out"),
    }
}

/// Follows registry events until the task is aborted.
pub async fn event_loop(ops: Arc<Ops>, registry: Registry, secrets_from_registry: bool) {
    let mut events = registry.subscribe().await;
    loop {
        match events.recv().await {
            Ok(RegistryEvent::SecretRotated { .. }) => {
                if secrets_from_registry {
                    reload_secrets(&ops, &registry, SecretsLoad::Event).await;
                }
            }
            Ok(RegistryEvent::Resync) | Err(RecvError::Lagged(_)) => {
                if secrets_from_registry {
                    reload_secrets(&ops, &registry, SecretsLoad::Event).await;
                }
                load_revocations(&ops, &registry).await;
            }
            Ok(RegistryEvent::UserRevoked { user, until }) => {
                tracing::info!(user = %geoturn_shared::pii::Pii(&user), "user revoked");
                let left = until.map_or(REVOCATION, |u| {
                    revocation_left(u, geoturn_shared::clock::unix_secs())
                });
                ops.relay.revoke_user(&user, left);
            }
            Ok(RegistryEvent::RelayDraining { relay_id }) if relay_id == ops.config.node_id => {
                // The credential API's drain endpoint; our own drain announcement comes back
                // here too, and beginning an already started drain changes nothing.
                ops.drain.begin("registry event");
            }
            Ok(_) => {}
            Err(RecvError::Closed) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str, region: &str, allocations: u64, state: RelayState, port: u16) -> RelayRecord {
        RelayRecord {
            id: id.into(),
            region: region.into(),
            lat: 0.0,
            lon: 0.0,
            addresses: RelayAddrs {
                udp: vec![SocketAddr::from(([192, 0, 2, 1], port))],
                tcp: vec![SocketAddr::from(([192, 0, 2, 1], port))],
                tls: vec![],
                host: None,
            },
            capacity_allocations: 100,
            capacity_mbps: 100,
            allocations,
            bps_in: 0,
            bps_out: 0,
            pps_in: 0,
            pps_out: 0,
            cpu: 0.0,
            state,
            version: "0".into(),
            started_at_ms: 0,
            updated_at_ms: 0,
            drain_deadline_ms: None,
        }
    }

    #[tokio::test]
    async fn registry_futures_are_send() {
        // The heartbeat and event loops run under tokio::spawn; this fails to compile if a
        // registry future stops being Send.
        fn assert_send<T: Send>(_: &T) {}
        let reg = Registry::connect("memory", "t:", None).await.unwrap();
        let r = rec("a", "eu", 0, RelayState::Active, 1);
        assert_send(&reg.heartbeat(&r, Duration::from_secs(1)));
        assert_send(&reg.list());
        assert_send(&reg.load_secrets());
        assert_send(&reg.subscribe());
        let (reg2, r2) = (reg.clone(), r.clone());
        assert_send(&async move { reg2.heartbeat(&r2, Duration::from_secs(1)).await });
    }

    #[test]
    fn alternates_prefer_same_region_then_least_loaded() {
        let records = vec![
            rec("me", "eu", 5, RelayState::Active, 1),
            rec("eu-busy", "eu", 80, RelayState::Active, 2),
            rec("eu-idle", "eu", 10, RelayState::Active, 3),
            rec("us-idle", "us", 0, RelayState::Active, 4),
            rec("eu-draining", "eu", 0, RelayState::Draining, 5),
            rec("eu-full", "eu", 100, RelayState::Active, 6),
        ];
        let alts = alternates("me", "eu", &records);
        let ports: Vec<u16> = alts.iter().map(|a| a.port()).collect();
        assert_eq!(ports, vec![3, 2, 4]);
    }

    #[test]
    fn a_sibling_with_a_public_host_is_an_alternate_by_its_ip() {
        let mut named = rec("named", "eu", 10, RelayState::Active, 3);
        named.addresses.host = Some("eu3.turn.example".into());
        named
            .addresses
            .udp
            .push("[2001:db8::3]:3478".parse().unwrap());
        // A wildcard sibling with no public IP is not an address to send anyone to.
        let mut wildcard = rec("wildcard", "eu", 0, RelayState::Active, 4);
        wildcard.addresses.udp = vec!["0.0.0.0:3478".parse().unwrap()];
        let alts = alternates("me", "eu", &[named, wildcard]);
        assert_eq!(
            alts,
            vec![
                "192.0.2.1:3".parse::<SocketAddr>().unwrap(),
                "[2001:db8::3]:3478".parse().unwrap(),
            ]
        );
    }

    #[test]
    fn siblings_are_ranked_by_the_routers_load_bandwidth_included() {
        // Few allocations but 90 of 100 Mbit/s relayed: busier than eu-half; a sibling at
        // its full bandwidth is not a sibling to send clients to at all.
        let mut eu_streaming = rec("eu-streaming", "eu", 5, RelayState::Active, 2);
        eu_streaming.bps_in = 45_000_000;
        eu_streaming.bps_out = 45_000_000;
        let mut eu_saturated = rec("eu-saturated", "eu", 0, RelayState::Active, 4);
        eu_saturated.bps_out = 100_000_000;
        let records = vec![
            eu_streaming,
            rec("eu-half", "eu", 50, RelayState::Active, 3),
            eu_saturated,
        ];
        let ports: Vec<u16> = alternates("me", "eu", &records)
            .iter()
            .map(|a| a.port())
            .collect();
        assert_eq!(ports, vec![3, 2]);
        let first: Vec<u16> = first_contact_targets("eu", &records)
            .iter()
            .map(|a| a.addr.port())
            .collect();
        assert_eq!(first, vec![3, 3, 2, 2]);
    }

    #[test]
    fn first_contact_goes_to_the_least_loaded_live_relay_of_the_region() {
        let mut me = rec("me", "eu", 50, RelayState::Active, 1);
        me.addresses.tls = vec![SocketAddr::from(([192, 0, 2, 1], 5349))];
        me.addresses.host = Some("eu1.turn.example".into());
        let records = vec![
            me.clone(),
            rec("eu-idle", "eu", 10, RelayState::Active, 3),
            rec("us-idle", "us", 0, RelayState::Active, 4),
            rec("eu-draining", "eu", 0, RelayState::Draining, 5),
            rec("eu-full", "eu", 100, RelayState::Active, 6),
        ];
        let targets = first_contact_targets("eu", &records);
        let summary: Vec<(Transport, u16)> = targets
            .iter()
            .map(|a| (a.transport, a.addr.port()))
            .collect();
        // eu-idle (UDP and TCP), then this relay (UDP, TCP, and TLS by name).
        assert_eq!(
            summary,
            vec![
                (Transport::Udp, 3),
                (Transport::Tcp, 3),
                (Transport::Udp, 1),
                (Transport::Tcp, 1),
                (Transport::Tls, 5349),
            ]
        );
        let tls = targets.last().unwrap();
        assert_eq!(tls.addr.ip(), "192.0.2.1".parse::<IpAddr>().unwrap());
        assert_eq!(tls.domain.as_deref(), Some("eu1.turn.example"));
        // Draining, this relay sends first contacts elsewhere; nothing live: none at all.
        me.state = RelayState::Draining;
        assert!(first_contact_targets("eu", &[me]).is_empty());
    }
}
