//! Relays registered in a real `redis-server`: heartbeats, drain with a sibling redirect,
//! a Redis outage that costs nothing but freshness, secret rotation and user revocation
//! through registry events, and revocations stored in Redis that outlive a relay restart.

#![allow(clippy::unwrap_used)] // a panic in a test is a failed test

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use geoturn_shared::registry::{Registry, RegistryEvent, RelayRecord, RelayState};
use geoturn_shared::{RestCredential, Secret};
use geoturn_tests::client::{Received, TurnClient, TurnError};
use geoturn_tests::http::{metric, request};
use geoturn_tests::peer::EchoPeer;
use geoturn_tests::process::{ChildGuard, geoturn_bin};
use geoturn_tests::redis::{RedisServer, free_port};

const SECRET: &str = "registry-test-secret-0123456789";
const TOKEN: &str = "registry-admin-token-0123456789";
const KEY_HEX: &str = "0707070707070707070707070707070707070707070707070707070707070707";
const HEARTBEAT: f64 = 0.3;

struct Relay {
    child: ChildGuard,
    udp: u16,
    http: std::net::SocketAddr,
}

fn start_relay(
    redis: &RedisServer,
    id: &str,
    region: &str,
    extra: &[&str],
    static_secret: bool,
) -> Relay {
    spawn_relay(
        redis,
        id,
        region,
        extra,
        static_secret,
        geoturn_tests::free_udp_port(),
    )
}

/// A relay with the static secret on UDP port `udp` (a restart on the port it had).
fn start_relay_on(redis: &RedisServer, id: &str, region: &str, udp: u16) -> Relay {
    spawn_relay(redis, id, region, &[], true, udp)
}

fn spawn_relay(
    redis: &RedisServer,
    id: &str,
    region: &str,
    extra: &[&str],
    static_secret: bool,
    udp: u16,
) -> Relay {
    let http = free_port();
    let mut cmd = Command::new(geoturn_bin());
    cmd.args(["relay", "--listen", &format!("127.0.0.1:{udp}")])
        .args(["--http", &format!("127.0.0.1:{http}")])
        .args([
            "--allow-peer",
            "127.0.0.0/8",
            "--relay-ports",
            "32000-33999",
        ])
        .args(["--node-id", id, "--region", region])
        .args([
            "--registry",
            &redis.url(),
            "--heartbeat",
            &HEARTBEAT.to_string(),
        ])
        .args(extra)
        .env("GEOTURN_ADMIN_TOKEN", TOKEN)
        .env_remove("GEOTURN_AUTH_SECRETS")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if static_secret {
        cmd.env("GEOTURN_AUTH_SECRETS", SECRET);
    }
    let child = ChildGuard::spawn(&mut cmd).unwrap();
    Relay {
        child,
        udp,
        http: format!("127.0.0.1:{http}").parse().unwrap(),
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Polls the registry until `pred` holds for the record list, or panics after `within`.
fn wait_registry(
    reg: &Registry,
    within: Duration,
    what: &str,
    pred: impl Fn(&[RelayRecord]) -> bool,
) -> Duration {
    let rt = rt();
    let t0 = Instant::now();
    loop {
        if let Ok(records) = rt.block_on(reg.list())
            && pred(&records)
        {
            return t0.elapsed();
        }
        assert!(t0.elapsed() < within, "registry never showed: {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

fn client(udp: u16, secret: &str, user: &str) -> TurnClient {
    let c = RestCredential::mint(secret.as_bytes(), user, geoturn_tests::unix_secs(), 600);
    TurnClient::new(
        format!("127.0.0.1:{udp}").parse().unwrap(),
        &c.username,
        &c.password,
    )
    .unwrap()
}

fn state_of(records: &[RelayRecord], id: &str) -> Option<RelayState> {
    records.iter().find(|r| r.id == id).map(|r| r.state)
}

#[test]
fn drain_redirects_to_the_sibling_and_exits_when_the_call_ends() {
    let redis = RedisServer::start();
    let reg = rt()
        .block_on(Registry::connect(&redis.url(), "geoturn:", None))
        .unwrap();
    let mut a = start_relay(
        &redis,
        "relay-a",
        "eu-west",
        &["--drain-timeout", "60"],
        true,
    );
    // B advertises a host name: it is still an alternate, by the IP its record carries.
    let b = start_relay(
        &redis,
        "relay-b",
        "eu-west",
        &["--public-host", "relay-b.test"],
        true,
    );
    wait_registry(&reg, Duration::from_secs(10), "both relays", |r| {
        state_of(r, "relay-a") == Some(RelayState::Active)
            && state_of(r, "relay-b") == Some(RelayState::Active)
    });
    let records = rt().block_on(reg.list()).unwrap();
    let a_rec = records.iter().find(|r| r.id == "relay-a").unwrap();
    let a_udp: std::net::SocketAddr = format!("127.0.0.1:{}", a.udp).parse().unwrap();
    assert_eq!(a_rec.addresses.udp, [a_udp]);
    assert_eq!(a_rec.addresses.host, None);
    assert!(
        a_rec
            .addresses
            .turn_urls()
            .contains(&format!("turn:127.0.0.1:{}?transport=udp", a.udp)),
        "{:?}",
        a_rec.addresses
    );
    assert_eq!(a_rec.region, "eu-west");
    let b_rec = records.iter().find(|r| r.id == "relay-b").unwrap();
    assert_eq!(b_rec.addresses.host.as_deref(), Some("relay-b.test"));
    assert_eq!(
        b_rec.addresses.turn_urls()[0],
        format!("turn:relay-b.test:{}?transport=udp", b.udp)
    );

    let peer = EchoPeer::start().unwrap();
    let mut live = client(a.udp, SECRET, "caller");
    live.allocate().unwrap();
    live.channel_bind(0x4001, peer.addr()).unwrap();

    // The subscription's background task needs a runtime that keeps running.
    let rt_events = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (_sub, mut events) = rt_events.block_on(async {
        let sub = Registry::connect(&redis.url(), "geoturn:", None)
            .await
            .unwrap();
        let events = sub.subscribe().await;
        (sub, events)
    });
    let auth = format!("Bearer {TOKEN}");
    let r = request(a.http, "POST", "/drain", &[("Authorization", &auth)], "").unwrap();
    assert_eq!(r.status, 202, "{}", r.body);
    let t0 = Instant::now();
    let took = wait_registry(&reg, Duration::from_secs(3), "relay-a draining", |r| {
        state_of(r, "relay-a") == Some(RelayState::Draining)
    });
    assert!(
        took.as_secs_f64() <= HEARTBEAT + 0.5,
        "draining state took {took:?} to reach the registry"
    );
    println!(
        "drain: registry shows relay-a draining {:.0} ms after the request",
        t0.elapsed().as_secs_f64() * 1000.0
    );
    // Subscribers (the credential API) hear of the drain as an event too.
    let event = rt_events.block_on(async {
        loop {
            match tokio::time::timeout(Duration::from_secs(3), events.recv()).await {
                Ok(Ok(RegistryEvent::RelayDraining { relay_id })) => break relay_id,
                Ok(Ok(_)) => continue,
                other => panic!("no relay_draining event: {other:?}"),
            }
        }
    });
    assert_eq!(event, "relay-a");

    // A new allocation on A is redirected to B, which accepts it.
    let deadline = Instant::now() + Duration::from_secs(5);
    let alternate = loop {
        let mut late = client(a.udp, SECRET, "late");
        match late.allocate() {
            Err(TurnError::Redirect(addr)) => break addr,
            Err(TurnError::Code(403)) if Instant::now() < deadline => {
                // Alternates arrive with the next heartbeat's registry read.
                std::thread::sleep(Duration::from_millis(100));
            }
            other => panic!("expected 300 Try Alternate, got {other:?}"),
        }
    };
    assert_eq!(alternate, format!("127.0.0.1:{}", b.udp).parse().unwrap());
    let mut moved = client(alternate.port(), SECRET, "late");
    moved.allocate().unwrap();

    // The call on A goes on.
    live.send_channel(0x4001, b"still on a").unwrap();
    assert_eq!(
        live.recv(Duration::from_secs(2)).unwrap(),
        Some(Received::Channel {
            channel: 0x4001,
            payload: b"still on a".to_vec()
        })
    );
    // The call ends; A exits and leaves the registry.
    live.refresh(0).unwrap();
    let status = a
        .child
        .wait_timeout(Duration::from_secs(10))
        .unwrap()
        .expect("relay-a exits when its last allocation ends");
    assert!(status.success());
    wait_registry(&reg, Duration::from_secs(2), "relay-a gone", |r| {
        state_of(r, "relay-a").is_none() && state_of(r, "relay-b").is_some()
    });
}

#[test]
fn redis_outage_costs_freshness_never_relaying() {
    let mut redis = RedisServer::start();
    let port = redis.port();
    let reg = rt()
        .block_on(Registry::connect(&redis.url(), "geoturn:", None))
        .unwrap();
    let relay = start_relay(&redis, "relay-o", "us-east", &[], true);
    wait_registry(&reg, Duration::from_secs(10), "relay-o", |r| {
        state_of(r, "relay-o").is_some()
    });
    let peer = EchoPeer::start().unwrap();
    let mut live = client(relay.udp, SECRET, "before");
    live.allocate().unwrap();
    live.channel_bind(0x4002, peer.addr()).unwrap();

    redis.kill();
    std::thread::sleep(Duration::from_millis(1000));
    // Relaying and new allocations go on without Redis.
    live.send_channel(0x4002, b"no redis").unwrap();
    assert!(live.recv(Duration::from_secs(2)).unwrap().is_some());
    let mut fresh = client(relay.udp, SECRET, "during");
    fresh.allocate().unwrap();
    let status = request(relay.http, "GET", "/status", &[], "").unwrap();
    assert!(
        status.body.contains("\"registry\":\"unavailable\""),
        "{}",
        status.body
    );
    let registry_up = || {
        let page = request(relay.http, "GET", "/metrics", &[], "").unwrap();
        metric(&page.body, "geoturn_registry_up", "")
    };
    assert_eq!(registry_up(), Some(0.0));

    // Redis back (empty: no persistence): the record is back within about one heartbeat.
    let _redis = RedisServer::start_on(port);
    let t0 = Instant::now();
    let took = wait_registry(&reg, Duration::from_secs(5), "relay-o re-registered", |r| {
        r.iter().any(|x| x.id == "relay-o" && x.allocations == 2)
    });
    println!(
        "redis outage: re-registered {:.0} ms after redis came back (heartbeat {HEARTBEAT} s)",
        took.as_secs_f64() * 1000.0
    );
    // Within one default heartbeat (2 s) of Redis answering again. (Retrying faster while Redis
    // is down was tried and made recovery slower: the client's reconnect backoff grows with
    // every failed attempt.)
    assert!(
        took < Duration::from_secs(2),
        "re-registration took {took:?}"
    );
    assert!(t0.elapsed() < Duration::from_secs(5));
    let status = request(relay.http, "GET", "/status", &[], "").unwrap();
    assert!(
        status.body.contains("\"registry\":\"ok\""),
        "{}",
        status.body
    );
    assert_eq!(registry_up(), Some(1.0));
    live.send_channel(0x4002, b"after").unwrap();
    assert!(live.recv(Duration::from_secs(2)).unwrap().is_some());
}

#[test]
fn secrets_rotate_and_users_are_revoked_through_registry_events() {
    let redis = RedisServer::start();
    let key = geoturn_shared::registry::parse_secrets_key(KEY_HEX).unwrap();
    let reg = rt()
        .block_on(Registry::connect(&redis.url(), "geoturn:", Some(key)))
        .unwrap();
    // The only secret is in Redis, encrypted.
    rt().block_on(reg.store_secret(&Secret::new("first", "first-secret-0123456789")))
        .unwrap();
    let relay = start_relay(
        &redis,
        "relay-s",
        "ap-south",
        &["--secrets-key", KEY_HEX],
        false,
    );
    wait_registry(&reg, Duration::from_secs(10), "relay-s", |r| {
        state_of(r, "relay-s").is_some()
    });
    let mut c1 = client(relay.udp, "first-secret-0123456789", "alice");
    c1.allocate().unwrap();

    // Rotate: store the new secret, announce it; new credentials work within a second.
    rt().block_on(async {
        reg.store_secret(&Secret::new("second", "second-secret-0123456789"))
            .await
            .unwrap();
        reg.publish(&RegistryEvent::SecretRotated {
            secret_id: "second".into(),
        })
        .await
        .unwrap();
    });
    let t0 = Instant::now();
    loop {
        let mut c2 = client(relay.udp, "second-secret-0123456789", "bob");
        if c2.allocate().is_ok() {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "rotated secret not accepted"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    println!(
        "rotation: new secret accepted {:.0} ms after the event",
        t0.elapsed().as_secs_f64() * 1000.0
    );
    // Credentials of the earlier secret keep working (several secrets live at once).
    c1.refresh(600).unwrap();

    // Revoke alice: her allocation closes, new ones are refused.
    // An event as an older API sent it (no `until`): refused for a day.
    rt().block_on(reg.publish(&RegistryEvent::UserRevoked {
        user: "alice".into(),
        until: None,
    }))
    .unwrap();
    let t0 = Instant::now();
    loop {
        match c1.refresh(600) {
            Err(TurnError::Code(437)) | Err(TurnError::Code(403)) => break,
            _ => {}
        }
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "revocation not applied"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut again = client(relay.udp, "second-secret-0123456789", "alice");
    assert_eq!(again.allocate(), Err(TurnError::Code(403)));
    let mut other = client(relay.udp, "second-secret-0123456789", "carol");
    other.allocate().unwrap();
}

#[test]
fn a_revocation_stored_in_the_registry_outlives_a_relay_restart() {
    let redis = RedisServer::start();
    let reg = rt()
        .block_on(Registry::connect(&redis.url(), "geoturn:", None))
        .unwrap();
    let relay = start_relay(&redis, "relay-r", "eu-north", &[], true);
    wait_registry(&reg, Duration::from_secs(10), "relay-r", |r| {
        state_of(r, "relay-r").is_some()
    });
    let mut before = client(relay.udp, SECRET, "mallory");
    before.allocate().unwrap();
    let udp = relay.udp;
    drop(relay);

    // Revoked (as the API does: stored, then announced) while no relay listens; the event is
    // lost. Longer than a day, as a long --max-ttl asks for.
    let until = geoturn_tests::unix_secs() + 3 * 86_400;
    rt().block_on(async {
        reg.revoke("mallory", until).await.unwrap();
        reg.publish(&RegistryEvent::UserRevoked {
            user: "mallory".into(),
            until: Some(until),
        })
        .await
        .unwrap();
    });

    // The relay comes back on the same port: it loaded the revocation at start.
    let relay = start_relay_on(&redis, "relay-r", "eu-north", udp);
    wait_registry(&reg, Duration::from_secs(10), "relay-r back", |r| {
        state_of(r, "relay-r").is_some()
    });
    let mut after = client(relay.udp, SECRET, "mallory");
    assert_eq!(after.allocate(), Err(TurnError::Code(403)));
    let mut other = client(relay.udp, SECRET, "alice");
    other.allocate().unwrap();
}
