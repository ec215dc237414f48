//! The registry's behaviour against a real `redis-server` and against the in-memory registry:
//! one body per behaviour, run on both backends (DESIGN.md §4: "the Redis one is tested
//! against a real redis-server"). Redis-only tests cover the stored layout, encryption at rest
//! and an outage with a restart. Every wait is bounded.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use geoturn_tests::redis::{RedisServer, free_port};

use geoturn_shared::latency::MeasuredRtt;
use geoturn_shared::registry::{
    DEFAULT_PREFIX, Registry, RegistryError, RegistryEvent, RelayAddrs, RelayRecord, RelayState,
};
use geoturn_shared::{Secret, SecretSet};
use tokio::sync::broadcast;
use tokio::time::timeout;

const KEY: [u8; 32] = [7; 32];

/// A plain connection for inspecting what the registry stored.
async fn raw(server: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

fn record(id: &str, region: &str) -> RelayRecord {
    RelayRecord {
        id: id.into(),
        region: region.into(),
        lat: 50.1109,
        lon: 8.6821,
        addresses: RelayAddrs {
            udp: vec!["203.0.113.5:3478".parse().unwrap()],
            tcp: vec!["203.0.113.5:3478".parse().unwrap()],
            tls: vec![],
            host: None,
        },
        capacity_allocations: 10_000,
        capacity_mbps: 1_000,
        allocations: 17,
        bps_in: 125_000,
        bps_out: 250_000,
        pps_in: 300,
        pps_out: 600,
        cpu: 0.25,
        state: RelayState::Active,
        version: "0.1.0".into(),
        started_at_ms: 1_700_000_000_000,
        updated_at_ms: 1_700_000_001_000,
        drain_deadline_ms: None,
    }
}

async fn next_event(rx: &mut broadcast::Receiver<RegistryEvent>) -> RegistryEvent {
    timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("an event within 5 s")
        .unwrap()
}

// ---- behaviour shared by both backends ----

async fn heartbeat_then_list(reg: &Registry) {
    let mut r = record("fra-1", "eu-central");
    reg.heartbeat(&r, Duration::from_secs(30)).await.unwrap();
    assert_eq!(reg.list().await.unwrap(), vec![r.clone()]);
    // A later heartbeat replaces the load figures.
    r.allocations = 18;
    r.state = RelayState::Draining;
    reg.heartbeat(&r, Duration::from_secs(30)).await.unwrap();
    assert_eq!(reg.list().await.unwrap(), vec![r]);
}

async fn expires_after_ttl(reg: &Registry) {
    reg.heartbeat(&record("short", "eu"), Duration::from_secs(1))
        .await
        .unwrap();
    reg.heartbeat(&record("long", "eu"), Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(reg.list().await.unwrap().len(), 2);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let ids: Vec<String> = reg
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(ids, ["long"]);
}

async fn remove_forgets_at_once(reg: &Registry) {
    reg.heartbeat(&record("fra-1", "eu"), Duration::from_secs(30))
        .await
        .unwrap();
    reg.remove("fra-1").await.unwrap();
    assert!(reg.list().await.unwrap().is_empty());
    reg.remove("never-there").await.unwrap();
}

async fn two_relays(reg: &Registry) {
    let b = record("sfo-1", "us-west");
    let a = RelayRecord {
        lat: -33.8688,
        lon: 151.2093,
        ..record("syd-1", "ap-southeast")
    };
    reg.heartbeat(&a, Duration::from_secs(30)).await.unwrap();
    reg.heartbeat(&b, Duration::from_secs(30)).await.unwrap();
    assert_eq!(reg.list().await.unwrap(), vec![b.clone(), a]);
    reg.remove("syd-1").await.unwrap();
    assert_eq!(reg.list().await.unwrap(), vec![b]);
}

async fn invalid_records_are_refused(reg: &Registry) {
    let bad = RelayRecord {
        id: "has space".into(),
        ..record("x", "eu")
    };
    let err = reg
        .heartbeat(&bad, Duration::from_secs(30))
        .await
        .unwrap_err();
    assert!(
        matches!(err, RegistryError::Invalid { field: "id", .. }),
        "{err}"
    );
}

async fn events_reach_subscribers(reg: &Registry) {
    let mut first = reg.subscribe().await;
    let mut second = reg.subscribe().await;
    let events = [
        RegistryEvent::SecretRotated {
            secret_id: "s2".into(),
        },
        RegistryEvent::RelayDraining {
            relay_id: "fra-1".into(),
        },
        RegistryEvent::UserRevoked {
            user: "alice".into(),
            until: Some(1_800_000_000),
        },
    ];
    for e in &events {
        reg.publish(e).await.unwrap();
    }
    for e in &events {
        assert_eq!(&next_event(&mut first).await, e);
        assert_eq!(&next_event(&mut second).await, e);
    }
}

async fn secrets_round_trip_newest_first(reg: &Registry) {
    assert!(reg.load_secrets().await.unwrap().is_empty());
    reg.store_secret(&Secret::new("s1", "first secret"))
        .await
        .unwrap();
    // Distinct creation times even on a coarse clock.
    tokio::time::sleep(Duration::from_millis(5)).await;
    reg.store_secret(&Secret::new("s2", "second secret"))
        .await
        .unwrap();
    // Rotation sets not_after on the old one; it keeps its place.
    let mut s1 = Secret::new("s1", "first secret");
    s1.not_after = Some(1_900_000_000);
    reg.store_secret(&s1).await.unwrap();
    assert_eq!(
        reg.load_secrets().await.unwrap(),
        SecretSet::new(vec![Secret::new("s2", "second secret"), s1])
    );
    reg.remove_secret("s1").await.unwrap();
    reg.remove_secret("never-there").await.unwrap();
    assert_eq!(
        reg.load_secrets().await.unwrap(),
        SecretSet::new(vec![Secret::new("s2", "second secret")])
    );
}

async fn secrets_stored_together_keep_their_order(reg: &Registry) {
    let mut old = Secret::new("old", "the retiring secret");
    old.not_after = Some(1_900_000_000);
    let set = [
        old.clone(),
        Secret::new("mid", "a middle secret"),
        Secret::new("new", "the active secret"),
    ];
    // Stored in one write within one millisecond: the order still holds, newest first.
    reg.store_secrets(&set).await.unwrap();
    let loaded = reg.load_secrets().await.unwrap();
    assert_eq!(
        loaded,
        SecretSet::new(vec![set[2].clone(), set[1].clone(), old])
    );
    assert_eq!(loaded.active(1_800_000_000).unwrap().id, "new");
    reg.store_secrets(&[]).await.unwrap();
    assert_eq!(reg.load_secrets().await.unwrap(), loaded);
}

async fn revocations_are_kept_until_they_end(reg: &Registry) {
    let now = geoturn_shared::clock::unix_secs();
    assert!(reg.revocations(now).await.unwrap().is_empty());
    reg.revoke("alice", now + 100).await.unwrap();
    reg.revoke("bob", now + 50).await.unwrap();
    // A shorter revocation does not shorten a longer one; a longer one extends it.
    reg.revoke("alice", now + 10).await.unwrap();
    reg.revoke("bob", now + 200).await.unwrap();
    let mut got = reg.revocations(now).await.unwrap();
    got.sort();
    assert_eq!(
        got,
        vec![
            ("alice".to_owned(), now + 100),
            ("bob".to_owned(), now + 200)
        ]
    );
    // Ended ones are not returned.
    assert_eq!(
        reg.revocations(now + 150).await.unwrap(),
        vec![("bob".to_owned(), now + 200)]
    );
    assert!(reg.revoke("", now + 1).await.is_err());
    assert!(reg.revoke(&"x".repeat(300), now + 1).await.is_err());
}

// ---- backends ----

fn memory() -> Registry {
    Registry::Memory(Default::default())
}

async fn redis_registry(server: &RedisServer) -> Registry {
    Registry::connect(&server.url(), DEFAULT_PREFIX, Some(KEY))
        .await
        .unwrap()
}

fn measured(rtt_ms: u32, samples: u32) -> MeasuredRtt {
    MeasuredRtt {
        rtt_ms,
        samples,
        updated_ms: geoturn_shared::clock::unix_ms(),
    }
}

async fn client_rtts_by_network_and_region(reg: &Registry) {
    let a: ipnet::IpNet = "203.0.113.0/24".parse().unwrap();
    let b: ipnet::IpNet = "2001:db8:1::/48".parse().unwrap();
    let never: ipnet::IpNet = "198.51.100.0/24".parse().unwrap();
    reg.store_client_rtts("eu-central", &[(a, measured(120, 3)), (b, measured(40, 1))])
        .await
        .unwrap();
    reg.store_client_rtts("us-east", &[(a, measured(20, 5))])
        .await
        .unwrap();
    // A later measurement of the same network and region replaces the earlier one.
    reg.store_client_rtts("us-east", &[(a, measured(21, 6))])
        .await
        .unwrap();
    let found = reg.client_rtts(&[a, never, b]).await.unwrap();
    let mut first = found[0].clone();
    first.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(
        first
            .iter()
            .map(|(r, m)| (r.as_str(), m.rtt_ms, m.samples))
            .collect::<Vec<_>>(),
        [("eu-central", 120, 3), ("us-east", 21, 6)]
    );
    assert!(found[1].is_empty());
    assert_eq!(found[2].len(), 1);
    assert!(matches!(
        reg.store_client_rtts("bad region!", &[(a, measured(1, 1))])
            .await,
        Err(RegistryError::Invalid { .. })
    ));
}

macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod in_memory {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(&super::memory()).await;
                }
            )*
        }
        mod in_redis {
            $(
                #[tokio::test]
                async fn $name() {
                    let server = super::RedisServer::start();
                    super::$name(&super::redis_registry(&server).await).await;
                }
            )*
        }
    };
}

on_both_backends!(
    heartbeat_then_list,
    expires_after_ttl,
    remove_forgets_at_once,
    two_relays,
    invalid_records_are_refused,
    events_reach_subscribers,
    secrets_round_trip_newest_first,
    secrets_stored_together_keep_their_order,
    revocations_are_kept_until_they_end,
    client_rtts_by_network_and_region,
);

// ---- Redis only ----

#[tokio::test]
async fn redis_layout_matches_the_design() {
    let server = RedisServer::start();
    let reg = redis_registry(&server).await;
    let r = record("fra-1", "eu-central");
    reg.heartbeat(&r, Duration::from_secs(6)).await.unwrap();
    let mut raw = raw(&server).await;
    let hash: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
        .arg("geoturn:relay:fra-1")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(hash["region"], "eu-central");
    assert_eq!(hash["state"], "active");
    assert_eq!(hash["udp"], "203.0.113.5:3478");
    assert_eq!(hash["tcp"], "203.0.113.5:3478");
    assert_eq!(hash["tls"], "");
    assert_eq!(hash["host"], "");
    assert!(!hash.contains_key("urls"));
    let pttl: i64 = redis::cmd("PTTL")
        .arg("geoturn:relay:fra-1")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert!((5_000..=6_000).contains(&pttl), "PTTL {pttl}");
    let score: Option<f64> = redis::cmd("ZSCORE")
        .arg("geoturn:relays")
        .arg("fra-1")
        .query_async(&mut raw)
        .await
        .unwrap();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as f64;
    assert!((now_ms - score.unwrap()).abs() < 5_000.0);

    // An index entry whose hash expired is skipped, not an error.
    redis::cmd("ZADD")
        .arg("geoturn:relays")
        .arg(now_ms)
        .arg("ghost")
        .exec_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(reg.list().await.unwrap(), vec![r]);
}

#[tokio::test]
async fn an_older_relays_urls_record_is_listed_during_an_upgrade() {
    let server = RedisServer::start();
    let reg = redis_registry(&server).await;
    let new = record("new-1", "eu-central");
    reg.heartbeat(&new, Duration::from_secs(60)).await.unwrap();
    // What a relay from before the address fields writes: `urls`, no udp/tcp/tls/host.
    let old = RelayRecord {
        addresses: RelayAddrs {
            tls: vec!["203.0.113.5:5349".parse().unwrap()],
            host: Some("old.turn.example".into()),
            ..record("x", "x").addresses
        },
        ..record("old-1", "eu-central")
    };
    let mut fields: Vec<(&str, String)> = old
        .to_fields()
        .into_iter()
        .filter(|(k, _)| !matches!(*k, "udp" | "tcp" | "tls" | "host"))
        .collect();
    fields.push((
        "urls",
        r#"["turn:old.turn.example:3478?transport=udp","turn:old.turn.example:3478?transport=tcp","turns:old.turn.example:5349?transport=tcp"]"#.into(),
    ));
    let mut raw = raw(&server).await;
    redis::cmd("HSET")
        .arg("geoturn:relay:old-1")
        .arg(&fields)
        .exec_async(&mut raw)
        .await
        .unwrap();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    redis::cmd("ZADD")
        .arg("geoturn:relays")
        .arg(now_ms)
        .arg("old-1")
        .exec_async(&mut raw)
        .await
        .unwrap();
    let listed = reg.list().await.unwrap();
    assert_eq!(listed.len(), 2, "{listed:?}");
    let got = &listed[1];
    assert_eq!(got.id, "old-1");
    // Only a host name in its URLs: its IP is unknown, its URLs are what it published.
    assert_eq!(got.addresses.host.as_deref(), Some("old.turn.example"));
    assert_eq!(
        got.addresses.turn_urls(),
        [
            "turn:old.turn.example:3478?transport=udp",
            "turn:old.turn.example:3478?transport=tcp",
            "turns:old.turn.example:5349?transport=tcp",
        ]
    );
}

#[tokio::test]
async fn redis_prefixes_keep_deployments_apart() {
    let server = RedisServer::start();
    let a = redis_registry(&server).await;
    let b = Registry::connect(&server.url(), "{staging}:", Some(KEY))
        .await
        .unwrap();
    a.heartbeat(&record("fra-1", "eu"), Duration::from_secs(30))
        .await
        .unwrap();
    assert!(b.list().await.unwrap().is_empty());
    assert_eq!(a.list().await.unwrap().len(), 1);
}

#[tokio::test]
async fn redis_secrets_are_encrypted_at_rest() {
    let server = RedisServer::start();
    let reg = redis_registry(&server).await;
    reg.store_secret(&Secret::new("s1", "plaintext-must-not-appear"))
        .await
        .unwrap();
    let mut raw = raw(&server).await;
    let stored: String = redis::cmd("HGET")
        .arg("geoturn:secrets")
        .arg("s1")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert!(!stored.contains("plaintext"), "{stored}");
    let json: serde_json::Value = serde_json::from_str(&stored).unwrap();
    for field in ["created", "not_after", "nonce", "ciphertext"] {
        assert!(json.get(field).is_some(), "{field} in {stored}");
    }

    // Another key cannot read it; no key cannot read or write at all.
    let wrong = Registry::connect(&server.url(), DEFAULT_PREFIX, Some([8; 32]))
        .await
        .unwrap();
    let err = wrong.load_secrets().await.unwrap_err();
    assert!(matches!(err, RegistryError::Crypto(_)), "{err}");
    let keyless = Registry::connect(&server.url(), DEFAULT_PREFIX, None)
        .await
        .unwrap();
    assert!(matches!(
        keyless.load_secrets().await.unwrap_err(),
        RegistryError::MissingSecretsKey
    ));

    // A ciphertext moved under another id does not open.
    redis::cmd("HSET")
        .arg("geoturn:secrets")
        .arg("s2")
        .arg(&stored)
        .exec_async(&mut raw)
        .await
        .unwrap();
    assert!(matches!(
        reg.load_secrets().await.unwrap_err(),
        RegistryError::Crypto(_)
    ));
}

#[tokio::test]
async fn redis_a_retired_secret_cannot_be_revived_by_editing_its_record() {
    let server = RedisServer::start();
    let reg = redis_registry(&server).await;
    let mut old = Secret::new("s1", "retired");
    old.not_after = Some(1_000);
    reg.store_secret(&old).await.unwrap();
    reg.store_secret(&Secret::new("s2", "active"))
        .await
        .unwrap();
    assert_eq!(reg.load_secrets().await.unwrap().all().count(), 2);
    let mut raw = raw(&server).await;
    let stored: String = redis::cmd("HGET")
        .arg("geoturn:secrets")
        .arg("s1")
        .query_async(&mut raw)
        .await
        .unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&stored).unwrap();
    assert_eq!(json["v"], 2, "{stored}");
    // Someone with write access to Redis clears not_after and makes it look newest.
    json["not_after"] = serde_json::Value::Null;
    json["created"] = serde_json::json!(u64::MAX / 2);
    redis::cmd("HSET")
        .arg("geoturn:secrets")
        .arg("s1")
        .arg(json.to_string())
        .exec_async(&mut raw)
        .await
        .unwrap();
    let err = reg.load_secrets().await.unwrap_err();
    assert!(matches!(err, RegistryError::Crypto(_)), "{err}");
}

#[tokio::test]
async fn redis_legacy_secret_records_are_resealed() {
    use base64::Engine as _;
    use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
    let server = RedisServer::start();
    let reg = redis_registry(&server).await;
    // A record as versions before 2 wrote it: the id alone as associated data, no "v".
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &KEY).unwrap());
    let mut buf = b"from an older release".to_vec();
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key([3; 12]),
        Aad::from(b"s0".as_slice()),
        &mut buf,
    )
    .unwrap();
    let b64 = base64::engine::general_purpose::STANDARD;
    let legacy = serde_json::json!({
        "created": 1_700_000_000_000u64,
        "not_after": 1_900_000_000u64,
        "nonce": b64.encode([3u8; 12]),
        "ciphertext": b64.encode(&buf),
    });
    let mut raw = raw(&server).await;
    redis::cmd("HSET")
        .arg("geoturn:secrets")
        .arg("s0")
        .arg(legacy.to_string())
        .exec_async(&mut raw)
        .await
        .unwrap();
    let before = reg.load_secrets().await.unwrap();
    assert_eq!(reg.reseal_legacy_secrets().await.unwrap(), 1);
    assert_eq!(reg.reseal_legacy_secrets().await.unwrap(), 0, "done once");
    assert_eq!(reg.load_secrets().await.unwrap(), before);
    let stored: String = redis::cmd("HGET")
        .arg("geoturn:secrets")
        .arg("s0")
        .query_async(&mut raw)
        .await
        .unwrap();
    let json: serde_json::Value = serde_json::from_str(&stored).unwrap();
    assert_eq!(json["v"], 2);
    assert_eq!(json["created"], 1_700_000_000_000u64);
    assert_eq!(json["not_after"], 1_900_000_000u64);
}

#[tokio::test]
async fn redis_outage_fails_fast_then_recovers() {
    // Shows the subscription's outage logging (one warning, one recovery) with --nocapture.
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("geoturn_shared=debug,registry_redis=info")
        .try_init();
    let mut server = RedisServer::start();
    let port = server.port();
    let reg = redis_registry(&server).await;
    let r = record("fra-1", "eu");
    reg.heartbeat(&r, Duration::from_secs(30)).await.unwrap();
    let mut events = reg.subscribe().await;

    server.kill();
    let started = Instant::now();
    let err = timeout(
        Duration::from_secs(5),
        reg.heartbeat(&r, Duration::from_secs(30)),
    )
    .await
    .expect("heartbeat must not hang while Redis is down")
    .unwrap_err();
    assert!(matches!(err, RegistryError::Unavailable(_)), "{err}");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(2), "{took:?}");
    tracing::info!(?took, %err, "heartbeat while Redis is down");
    let err = timeout(Duration::from_secs(5), reg.list())
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, RegistryError::Unavailable(_)), "{err}");

    // Down for a while, so the subscription has backed off a few times.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let _server = RedisServer::start_on(port);

    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match reg.heartbeat(&r, Duration::from_secs(30)).await {
            Ok(()) => break,
            Err(e) => assert!(Instant::now() < deadline, "heartbeat still failing: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Redis restarted empty; the heartbeat brought the record back.
    assert_eq!(reg.list().await.unwrap(), vec![r]);

    // The subscription is back (and says events may have been missed), then delivers again.
    let resync = timeout(Duration::from_secs(10), async {
        loop {
            if events.recv().await.unwrap() == RegistryEvent::Resync {
                break;
            }
        }
    })
    .await;
    assert!(resync.is_ok(), "no Resync within 10 s of the restart");
    let event = RegistryEvent::SecretRotated {
        secret_id: "after-restart".into(),
    };
    reg.publish(&event).await.unwrap();
    assert_eq!(next_event(&mut events).await, event);
}

#[tokio::test]
async fn redis_down_at_start_is_not_fatal() {
    // A relay may start before Redis: connecting must not fail, calls fail fast, and
    // everything works once Redis appears.
    let port = free_port();
    let reg = Registry::connect(
        &format!("redis://127.0.0.1:{port}"),
        DEFAULT_PREFIX,
        Some(KEY),
    )
    .await
    .unwrap();
    let started = Instant::now();
    let mut events = timeout(Duration::from_secs(5), reg.subscribe())
        .await
        .unwrap();
    let err = timeout(Duration::from_secs(5), reg.list())
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, RegistryError::Unavailable(_)), "{err}");
    assert!(started.elapsed() < Duration::from_secs(3));

    let _server = RedisServer::start_on(port);
    let r = record("fra-1", "eu");
    let deadline = Instant::now() + Duration::from_secs(5);
    while let Err(e) = reg.heartbeat(&r, Duration::from_secs(30)).await {
        assert!(Instant::now() < deadline, "heartbeat still failing: {e}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(reg.list().await.unwrap(), vec![r]);
    // The subscription that never got through says so once it does.
    assert_eq!(
        timeout(Duration::from_secs(10), events.recv())
            .await
            .expect("Resync within 10 s")
            .unwrap(),
        RegistryEvent::Resync
    );
}

#[tokio::test]
async fn redis_that_stops_answering_is_bounded() {
    let server = RedisServer::start();
    let reg = redis_registry(&server).await;
    let r = record("fra-1", "eu");
    reg.heartbeat(&r, Duration::from_secs(30)).await.unwrap();

    server.signal("STOP");
    let started = Instant::now();
    let result = timeout(
        Duration::from_secs(5),
        reg.heartbeat(&r, Duration::from_secs(30)),
    )
    .await;
    let took = started.elapsed();
    server.signal("CONT");
    let err = result.expect("heartbeat must not hang").unwrap_err();
    assert!(matches!(err, RegistryError::Unavailable(_)), "{err}");
    assert!(took < Duration::from_millis(2500), "{took:?}");

    let deadline = Instant::now() + Duration::from_secs(5);
    while let Err(e) = reg.heartbeat(&r, Duration::from_secs(30)).await {
        assert!(Instant::now() < deadline, "heartbeat still failing: {e}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Client round trips in Redis: one hash per network with a TTL, a value that readers skip
/// when it is not theirs, and the footprint of a thousand networks (printed for BENCHMARKS.md).
#[tokio::test]
async fn client_rtts_are_bounded_in_redis() {
    let server = RedisServer::start();
    let reg = redis_registry(&server).await;
    let mut conn = raw(&server).await;
    let nets: Vec<ipnet::IpNet> = (0..1000u32)
        .map(|i| format!("10.{}.{}.0/24", i / 256, i % 256).parse().unwrap())
        .collect();
    let entries: Vec<_> = nets.iter().map(|n| (*n, measured(35, 4))).collect();
    let before: u64 = info_used_memory(&mut conn).await;
    for region in ["eu-central", "us-east", "ap-southeast"] {
        reg.store_client_rtts(region, &entries).await.unwrap();
    }
    let after: u64 = info_used_memory(&mut conn).await;
    println!(
        "client round trips: 1000 networks x 3 regions take {} KiB in Redis",
        after.saturating_sub(before) / 1024
    );
    let key = format!("{DEFAULT_PREFIX}rtt:10.0.7.0/24");
    let ttl: i64 = redis::cmd("TTL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!((3500..=3600).contains(&ttl), "{ttl}");
    let _: () = redis::cmd("HSET")
        .arg(&key)
        .arg("eu-west")
        .arg("not,a,number")
        .query_async(&mut conn)
        .await
        .unwrap();
    let found = reg.client_rtts(&[nets[7]]).await.unwrap();
    assert_eq!(found[0].len(), 3, "{found:?}");
}

async fn info_used_memory(conn: &mut redis::aio::MultiplexedConnection) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(conn)
        .await
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap()
}
