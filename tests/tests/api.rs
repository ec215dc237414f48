//! The credential API as deployed: a real `redis-server`, relays in three places as `geoturn
//! relay` processes, `geoturn api` with a GeoIP database written at test time, and a real TURN
//! client using the credentials the API hands out.

#![allow(clippy::unwrap_used)] // a panic in a test is a failed test

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use geoturn_shared::registry::{Registry, RelayAddrs, RelayRecord, RelayState};
use geoturn_tests::client::{Received, TurnClient, TurnError};
use geoturn_tests::http::{HttpResponse, metric, request};
use geoturn_tests::peer::EchoPeer;
use geoturn_tests::process::{ChildGuard, geoturn_bin};
use geoturn_tests::redis::{RedisServer, free_port};
use hmac::{KeyInit as _, Mac as _};
use serde_json::Value;

const APP_KEY: &str = "app-key-0123456789abcdef";
const ADMIN_KEY: &str = "ops-key-0123456789abcdef";
const JWT_SECRET: &str = "jwt-hs256-secret-0123456789abcdef0123";
const ISSUER: &str = "https://app.test";
const AUDIENCE: &str = "geoturn";
const SECRETS_KEY: &str = "0909090909090909090909090909090909090909090909090909090909090909";
const HEARTBEAT: f64 = 0.3;
/// A wait for something that takes a moment.
const WAIT_SHORT: Duration = Duration::from_secs(5);

/// Frankfurt, Ashburn, Singapore.
const EU_CLIENT: &str = "192.0.2.10";
const US_CLIENT: &str = "198.51.100.7";

struct Relay {
    id: String,
    child: ChildGuard,
    udp: u16,
}

struct Fleet {
    redis: RedisServer,
    relays: Vec<Relay>,
    _api: ChildGuard,
    api_addr: SocketAddr,
    dir: std::path::PathBuf,
}

/// Starts a relay whose log goes to `dir/relay-ID.log` (printed when the fleet does not form).
fn start_relay(
    redis: &RedisServer,
    dir: &std::path::Path,
    id: &str,
    region: &str,
    (lat, lon): (f64, f64),
) -> Relay {
    let (udp, http) = (geoturn_tests::free_udp_port(), free_port());
    let log = std::fs::File::create(dir.join(format!("relay-{id}.log"))).unwrap();
    let child = ChildGuard::spawn(
        Command::new(geoturn_bin())
            .args(["relay", "--listen", &format!("127.0.0.1:{udp}")])
            .args(["--http", &format!("127.0.0.1:{http}")])
            .args([
                "--allow-peer",
                "127.0.0.0/8",
                "--relay-ports",
                "34000-35999",
            ])
            .args(["--node-id", id, "--region", region])
            .args(["--lat", &lat.to_string(), "--lon", &lon.to_string()])
            .args(["--registry", &redis.url()])
            .args(["--heartbeat", &HEARTBEAT.to_string()])
            .args(["--drain-timeout", "30"])
            .env("GEOTURN_SECRETS_KEY", SECRETS_KEY)
            .env_remove("GEOTURN_AUTH_SECRETS")
            .stdout(Stdio::null())
            .stderr(log),
    )
    .unwrap();
    Relay {
        id: id.to_owned(),
        child,
        udp,
    }
}

fn start_api(
    redis: &RedisServer,
    geo: &std::path::Path,
    extra: &[&str],
) -> (ChildGuard, SocketAddr) {
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let child = ChildGuard::spawn(
        Command::new(geoturn_bin())
            .args(["api", "--listen", &addr.to_string()])
            .args(["--registry", &redis.url()])
            .arg("--geoip")
            .arg(geo)
            .args(["--heartbeat", &HEARTBEAT.to_string(), "--refresh-ms", "200"])
            .args(["--max-ttl", "3600", "--default-region", "us-east"])
            .args(["--jwt-issuer", ISSUER, "--jwt-audience", AUDIENCE])
            .args(extra)
            .env("GEOTURN_SECRETS_KEY", SECRETS_KEY)
            .env("GEOTURN_API_KEYS", format!("app:{APP_KEY}"))
            .env("GEOTURN_ADMIN_KEYS", format!("ops:{ADMIN_KEY}"))
            .env("GEOTURN_JWT_HS256_SECRET", JWT_SECRET)
            .env_remove("GEOTURN_AUTH_SECRETS")
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
    .unwrap();
    (child, addr)
}

/// Redis, relays eu-1 and eu-2 in Frankfurt, us-1 in Ashburn, and the API, all registered.
fn fleet(name: &str, api_extra: &[&str]) -> Fleet {
    let dir = geoturn_tests::temp_dir(name);
    let geo = geoturn_tests::geo::write_city_db(
        &dir,
        &[
            ("192.0.2.0/24", 50.11, 8.68),
            ("198.51.100.0/24", 39.04, -77.49),
        ],
    );
    let redis = RedisServer::start();
    // The API first: it creates the first TURN secret, which the relays then load.
    let (api, api_addr) = start_api(&redis, &geo, api_extra);
    wait_for(Duration::from_secs(15), "the API to be ready", || {
        get(api_addr, "/readyz", None).is_some_and(|r| r.status == 200)
    });
    let relays = vec![
        start_relay(&redis, &dir, "eu-1", "eu-central", (50.1, 8.7)),
        start_relay(&redis, &dir, "eu-2", "eu-central", (50.1, 8.7)),
        start_relay(&redis, &dir, "us-1", "us-east", (39.0, -77.5)),
    ];
    let fleet = Fleet {
        redis,
        relays,
        _api: api,
        api_addr,
        dir,
    };
    // /readyz is not rate limited, so polling it leaves every caller's budget whole.
    let t0 = Instant::now();
    while !get(fleet.api_addr, "/readyz", None).is_some_and(|r| json(&r)["relays"] == 3) {
        if t0.elapsed() > Duration::from_secs(15) {
            fleet.fail_to_form();
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    fleet
}

impl Fleet {
    /// Fails with what each relay did: whether it still runs, and the end of its log.
    fn fail_to_form(mut self) -> ! {
        let mut report = String::new();
        for r in &mut self.relays {
            let status = r.child.0.try_wait().ok().flatten();
            let log = std::fs::read_to_string(self.dir.join(format!("relay-{}.log", r.id)))
                .unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(10).collect();
            report += &format!(
                "\n{} (udp {}): {}\n  {}",
                r.id,
                r.udp,
                status.map_or("running".to_owned(), |s| format!("exited: {s}")),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n  ")
            );
        }
        let readyz = get(self.api_addr, "/readyz", None).map(|r| r.body);
        panic!("timed out waiting for three relays in /readyz ({readyz:?}):{report}");
    }

    fn udp_of(&self, id: &str) -> u16 {
        self.relays.iter().find(|r| r.id == id).unwrap().udp
    }

    /// The relay ids in an ICE answer, best first, from their UDP ports.
    fn ids_in(&self, answer: &Value) -> Vec<String> {
        turn_entries(answer)
            .iter()
            .map(|e| {
                let url = e["urls"][0].as_str().unwrap();
                let port: u16 = url
                    .rsplit(':')
                    .next()
                    .unwrap()
                    .split('?')
                    .next()
                    .unwrap()
                    .parse()
                    .unwrap();
                self.relays
                    .iter()
                    .find(|r| r.udp == port)
                    .map(|r| r.id.clone())
                    .unwrap_or_else(|| format!("unknown port {port}"))
            })
            .collect()
    }
}

fn wait_for(within: Duration, what: &str, mut pred: impl FnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    loop {
        if pred() {
            return t0.elapsed();
        }
        assert!(t0.elapsed() < within, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

fn get(addr: SocketAddr, path: &str, bearer: Option<&str>) -> Option<HttpResponse> {
    let auth = bearer.map(|b| format!("Bearer {b}"));
    let headers: Vec<(&str, &str)> = auth
        .as_deref()
        .map(|a| vec![("Authorization", a)])
        .unwrap_or_default();
    request(addr, "GET", path, &headers, "").ok()
}

fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> HttpResponse {
    request(addr, method, path, headers, body).unwrap()
}

fn json(r: &HttpResponse) -> Value {
    serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("{e}: {} {}", r.status, r.body))
}

fn ice(addr: SocketAddr, query: &str, bearer: &str) -> HttpResponse {
    get(addr, &format!("/v1/ice-servers?{query}"), Some(bearer)).unwrap()
}

fn turn_entries(answer: &Value) -> Vec<Value> {
    answer["iceServers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s.get("username").is_some())
        .cloned()
        .collect()
}

fn error_code(r: &HttpResponse) -> String {
    json(r)["error"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// A TURN client for the first relay of an answer, with the answer's credential.
fn client_for(fleet: &Fleet, answer: &Value, index: usize) -> TurnClient {
    let entry = &turn_entries(answer)[index];
    let id = &fleet.ids_in(answer)[index];
    TurnClient::new(
        format!("127.0.0.1:{}", fleet.udp_of(id)).parse().unwrap(),
        entry["username"].as_str().unwrap(),
        entry["credential"].as_str().unwrap(),
    )
    .unwrap()
}

fn relays_data(c: &mut TurnClient, peer: &EchoPeer) {
    c.create_permission(peer.addr()).unwrap();
    c.send_indication(peer.addr(), b"via the API").unwrap();
    match c.recv(Duration::from_secs(2)).unwrap() {
        Some(Received::Data { payload, .. }) => assert_eq!(payload, b"via the API"),
        other => panic!("expected the echo, got {other:?}"),
    }
}

/// An HS256 JWT signed with `secret`.
fn jwt(header: &Value, claims: &Value, secret: &str) -> String {
    let b64 = |v: &Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
    };
    let signing_input = format!("{}.{}", b64(header), b64(claims));
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(signing_input.as_bytes());
    let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{signing_input}.{sig}")
}

fn claims(sub: &str, exp_in: i64) -> Value {
    let now = geoturn_tests::unix_secs() as i64;
    serde_json::json!({"sub": sub, "iss": ISSUER, "aud": AUDIENCE, "exp": now + exp_in, "iat": now})
}

fn hs256() -> Value {
    serde_json::json!({"alg": "HS256", "typ": "JWT"})
}

#[test]
fn answers_rank_by_place_and_their_credentials_relay_data() {
    let f = fleet("api-rank", &["--trusted-proxy", "127.0.0.1/32"]);
    let peer = EchoPeer::start().unwrap();

    // A backend asking for a browser in Frankfurt: the two Frankfurt relays first, then the
    // other region (answers span two regions when two exist).
    let r = ice(
        f.api_addr,
        &format!("client_ip={EU_CLIENT}&count=3&ttl=999999"),
        APP_KEY,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert!(r.header("x-geoturn-snapshot").unwrap().starts_with("fresh"));
    let a = json(&r);
    let ids = f.ids_in(&a);
    assert_eq!(ids.len(), 3, "{a}");
    assert!(
        ids[0].starts_with("eu-") && ids[1].starts_with("eu-"),
        "{ids:?}"
    );
    assert_eq!(ids[2], "us-1");
    assert_eq!(a["ttl"], 3600, "ttl is capped by --max-ttl");
    assert!(a["expiresAt"].as_str().unwrap().ends_with('Z'));
    assert!(
        a["iceServers"][0]["urls"][0]
            .as_str()
            .unwrap()
            .starts_with("stun:127.0.0.1:")
    );
    let username = turn_entries(&a)[0]["username"].as_str().unwrap().to_owned();
    let user = username.split_once(':').unwrap().1;
    let (key, random) = user.split_once('~').unwrap_or_else(|| panic!("{username}"));
    assert_eq!(
        key, "app",
        "API-key callers without a user get the key's name: {username}"
    );
    assert_eq!(random.len(), 12, "and a random part: {username}");
    // Each credential its own user id: one key's users do not share one quota bucket.
    let again = json(&ice(f.api_addr, "", APP_KEY));
    let other = turn_entries(&again)[0]["username"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(other.split_once(':').unwrap().1, user);

    // Two relays for Ashburn: us-1, then the nearest other region.
    let b = json(&ice(
        f.api_addr,
        &format!("client_ip={US_CLIENT}&count=2"),
        APP_KEY,
    ));
    assert_eq!(f.ids_in(&b)[0], "us-1");
    assert!(f.ids_in(&b)[1].starts_with("eu-"));
    // A private address has no place: the default region (us-east) first.
    let c = json(&ice(f.api_addr, "client_ip=10.1.2.3&count=1", APP_KEY));
    assert_eq!(f.ids_in(&c), vec!["us-1"]);

    // The credentials work on the relay the API ranked first, and on the second.
    for index in [0, 1] {
        let mut client = client_for(&f, &a, index);
        client.allocate().unwrap();
        relays_data(&mut client, &peer);
        client.refresh(0).unwrap();
    }

    // A browser with a JWT behind our trusted proxy: X-Forwarded-For places it in Ashburn, and
    // its `sub` is the TURN user.
    let token = jwt(&hs256(), &claims("alice", 300), JWT_SECRET);
    let auth = format!("Bearer {token}");
    let r = call(
        f.api_addr,
        "GET",
        "/v1/ice-servers?count=1",
        &[
            ("Authorization", &auth),
            ("X-Forwarded-For", &format!("{US_CLIENT}, 127.0.0.1")),
        ],
        "",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let browser = json(&r);
    assert_eq!(f.ids_in(&browser), vec!["us-1"]);
    assert!(
        turn_entries(&browser)[0]["username"]
            .as_str()
            .unwrap()
            .ends_with(":alice")
    );
    let mut client = client_for(&f, &browser, 0);
    client.allocate().unwrap();
    relays_data(&mut client, &peer);

    // POST with a JSON body, the TURN REST draft's shape, and Cloudflare's shape.
    let r = call(
        f.api_addr,
        "POST",
        "/v1/ice-servers",
        &[
            ("Authorization", &format!("Bearer {APP_KEY}")),
            ("Content-Type", "application/json"),
        ],
        &format!(r#"{{"client_ip":"{EU_CLIENT}","count":1,"ttl":120,"user":"bob"}}"#),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let posted = json(&r);
    assert!(f.ids_in(&posted)[0].starts_with("eu-"));
    assert_eq!(posted["ttl"], 120);
    let rest = json(
        &get(
            f.api_addr,
            &format!("/v1/turn-rest?service=turn&username=carol&key={APP_KEY}"),
            None,
        )
        .unwrap(),
    );
    assert!(rest["username"].as_str().unwrap().ends_with(":carol"));
    assert!(
        rest["uris"]
            .as_array()
            .unwrap()
            .iter()
            .all(|u| u.as_str().unwrap().starts_with("turn"))
    );
    assert!(rest["password"].as_str().is_some() && rest["ttl"].as_u64().is_some());
    let cf = call(
        f.api_addr,
        "POST",
        "/v1/turn/keys/app/credentials/generate-ice-servers",
        &[("Authorization", &format!("Bearer {APP_KEY}"))],
        r#"{"ttl": 600}"#,
    );
    assert_eq!(cf.status, 201, "{}", cf.body);
    let cf = json(&cf);
    let mut client = client_for(&f, &cf, 0);
    client.allocate().unwrap();
    relays_data(&mut client, &peer);
    let wrong_key = call(
        f.api_addr,
        "POST",
        "/v1/turn/keys/other/credentials/generate-ice-servers",
        &[("Authorization", &format!("Bearer {APP_KEY}"))],
        "{}",
    );
    // Cloudflare's route answers in Cloudflare's envelope.
    let body = json(&wrong_key);
    assert_eq!(
        (
            wrong_key.status,
            &body["success"],
            &body["errors"][0]["code"]
        ),
        (403, &Value::Bool(false), &Value::from(10000)),
        "{body}"
    );
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("key id")),
        "{body}"
    );
    drop(f.dir);
}

#[test]
fn drained_stale_and_killed_relays_leave_the_answers() {
    let mut f = fleet("api-drain", &[]);
    let all = |f: &Fleet| {
        f.ids_in(&json(&ice(
            f.api_addr,
            &format!("client_ip={EU_CLIENT}&count=8"),
            APP_KEY,
        )))
    };

    // A record that stopped heartbeating 10 s ago but is still in Redis is never handed out.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let reg = rt
        .block_on(Registry::connect(&f.redis.url(), "geoturn:", None))
        .unwrap();
    let now_ms = geoturn_tests::unix_secs() * 1000;
    let ghost = RelayRecord {
        id: "ghost".into(),
        region: "eu-central".into(),
        lat: 50.1,
        lon: 8.7,
        addresses: RelayAddrs {
            udp: vec!["127.0.0.1:9".parse().unwrap()],
            ..RelayAddrs::default()
        },
        capacity_allocations: 1000,
        capacity_mbps: 1000,
        allocations: 0,
        bps_in: 0,
        bps_out: 0,
        pps_in: 0,
        pps_out: 0,
        cpu: 0.0,
        state: RelayState::Active,
        version: "test".into(),
        started_at_ms: now_ms - 60_000,
        updated_at_ms: now_ms - 10_000,
        drain_deadline_ms: None,
    };
    rt.block_on(reg.heartbeat(&ghost, Duration::from_secs(60)))
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let relays = json(&get(f.api_addr, "/v1/relays", Some(APP_KEY)).unwrap());
    let ghost_row = relays["relays"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == "ghost")
        .cloned();
    let ghost_row = ghost_row.unwrap();
    assert_eq!(ghost_row["stale"], true, "{relays}");
    // The row keeps the URLs the dashboard shows, built from the record's addresses.
    assert_eq!(
        ghost_row["urls"],
        serde_json::json!(["turn:127.0.0.1:9?transport=udp"])
    );
    assert_eq!(
        ghost_row["addresses"],
        serde_json::json!({"udp": ["127.0.0.1:9"], "tcp": [], "tls": [], "host": null})
    );
    assert_eq!(all(&f).len(), 3, "the stale record is not handed out");

    // Drain eu-1 through the API: the relay hears it, the API stops handing it out.
    let not_admin = call(
        f.api_addr,
        "POST",
        "/v1/admin/relays/eu-1/drain",
        &[("Authorization", &format!("Bearer {APP_KEY}"))],
        "",
    );
    assert_eq!(
        (not_admin.status, error_code(&not_admin).as_str()),
        (403, "admin_required")
    );
    let unknown = call(
        f.api_addr,
        "POST",
        "/v1/admin/relays/nope/drain",
        &[("Authorization", &format!("Bearer {ADMIN_KEY}"))],
        "",
    );
    assert_eq!(unknown.status, 404);
    // A call on eu-1 keeps it draining (not gone) until the call ends.
    let answer = json(&ice(
        f.api_addr,
        &format!("client_ip={EU_CLIENT}&count=3"),
        APP_KEY,
    ));
    let index = f
        .ids_in(&answer)
        .iter()
        .position(|id| id == "eu-1")
        .unwrap();
    let mut call_on_eu1 = client_for(&f, &answer, index);
    call_on_eu1.allocate().unwrap();
    let t0 = Instant::now();
    let r = call(
        f.api_addr,
        "POST",
        "/v1/admin/relays/eu-1/drain",
        &[("Authorization", &format!("Bearer {ADMIN_KEY}"))],
        "",
    );
    assert_eq!(r.status, 202, "{}", r.body);
    // The API's promise: once it answered 202, it no longer hands the relay out.
    let after = all(&f);
    assert!(
        !after.contains(&"eu-1".to_string()),
        "{after:?} {}",
        get(f.api_addr, "/v1/relays", Some(APP_KEY)).unwrap().body
    );
    let drained_after = t0.elapsed();
    // The relay's own record follows once the relay has heard over pub/sub.
    let confirmed = wait_for(
        Duration::from_secs(3),
        "eu-1's record to say draining",
        || {
            rt.block_on(reg.list()).is_ok_and(|records| {
                records.iter().find(|r| r.id == "eu-1").map(|r| r.state)
                    == Some(RelayState::Draining)
            })
        },
    );
    // The call keeps relaying; when it ends, the drained relay exits by itself.
    let peer = EchoPeer::start().unwrap();
    relays_data(&mut call_on_eu1, &peer);
    call_on_eu1.refresh(0).unwrap();
    let eu1 = f.relays.iter_mut().find(|r| r.id == "eu-1").unwrap();
    assert!(
        eu1.child
            .wait_timeout(Duration::from_secs(10))
            .unwrap()
            .is_some(),
        "eu-1 did not exit"
    );

    // SIGKILL us-1: gone from every answer within 3 heartbeats (plus one snapshot refresh).
    let t0 = Instant::now();
    f.relays
        .iter()
        .find(|r| r.id == "us-1")
        .unwrap()
        .child
        .signal(libc::SIGKILL);
    let killed_after = wait_for(Duration::from_secs(5), "us-1 to leave the answers", || {
        !all(&f).contains(&"us-1".to_string())
    });
    assert!(
        killed_after <= Duration::from_secs_f64(3.0 * HEARTBEAT + 0.2 + 0.5),
        "{killed_after:?}"
    );
    assert_eq!(all(&f), vec!["eu-2"]);
    eprintln!(
        "drain left the answers after {drained_after:?}, the relay's record said draining \
         {confirmed:?} later; SIGKILL after {:?}",
        t0.elapsed()
    );
}

#[test]
fn secret_rotation_and_revocation_reach_every_relay() {
    let f = fleet("api-rotate", &[]);
    let peer = EchoPeer::start().unwrap();
    let admin = format!("Bearer {ADMIN_KEY}");
    let old = json(&ice(
        f.api_addr,
        &format!("client_ip={EU_CLIENT}&count=3"),
        APP_KEY,
    ));

    let r = call(
        f.api_addr,
        "POST",
        "/v1/admin/secrets/rotate",
        &[("Authorization", &format!("Bearer {APP_KEY}"))],
        "",
    );
    assert_eq!(r.status, 403, "only admin keys rotate");
    let t0 = Instant::now();
    let r = call(
        f.api_addr,
        "POST",
        "/v1/admin/secrets/rotate",
        &[("Authorization", &admin)],
        "",
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let rotation = json(&r);
    let new_id = rotation["id"].as_str().unwrap().to_owned();
    assert_eq!(
        rotation["retiring"].as_array().unwrap().len(),
        1,
        "{rotation}"
    );

    // New credentials (from the new secret) work on every relay within 1 s.
    let fresh = json(&ice(
        f.api_addr,
        &format!("client_ip={EU_CLIENT}&count=3"),
        APP_KEY,
    ));
    assert_ne!(
        turn_entries(&fresh)[0]["credential"],
        turn_entries(&old)[0]["credential"]
    );
    for index in 0..3 {
        wait_for(
            Duration::from_secs(1),
            "the new secret on every relay",
            || {
                let mut c = client_for(&f, &fresh, index);
                let ok = c.allocate().is_ok();
                if ok {
                    c.refresh(0).unwrap();
                }
                ok
            },
        );
    }
    let all_relays_after = t0.elapsed();
    assert!(
        all_relays_after < Duration::from_secs(1),
        "{all_relays_after:?}"
    );
    // Credentials minted before the rotation keep working.
    for index in 0..3 {
        let mut c = client_for(&f, &old, index);
        c.allocate().unwrap();
        relays_data(&mut c, &peer);
        c.refresh(0).unwrap();
    }
    // Signaling servers that mint themselves read the live set, active first.
    let secrets = json(&get(f.api_addr, "/v1/admin/secrets", Some(ADMIN_KEY)).unwrap());
    let list = secrets["secrets"].as_array().unwrap();
    assert_eq!(list.len(), 2, "{secrets}");
    assert_eq!(list[0]["id"], new_id.as_str());
    assert_eq!(list[0]["active"], true);
    assert!(
        list[1]["notAfter"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z') && t.len() == 20),
        "{list:?}"
    );
    let minted = geoturn_shared::RestCredential::mint(
        list[0]["secret"].as_str().unwrap().as_bytes(),
        "self-minted",
        geoturn_tests::unix_secs(),
        300,
    );
    let mut c = TurnClient::new(
        format!("127.0.0.1:{}", f.udp_of("us-1")).parse().unwrap(),
        &minted.username,
        &minted.password,
    )
    .unwrap();
    c.allocate().unwrap();
    c.refresh(0).unwrap();
    assert_eq!(
        get(f.api_addr, "/v1/admin/secrets", Some(APP_KEY))
            .unwrap()
            .status,
        403
    );

    // Revocation: mallory's live allocation closes and her credentials stop working.
    let m = json(&ice(
        f.api_addr,
        &format!("client_ip={US_CLIENT}&count=1&user=mallory"),
        APP_KEY,
    ));
    let mut c = client_for(&f, &m, 0);
    c.allocate().unwrap();
    let r = call(
        f.api_addr,
        "POST",
        "/v1/admin/users/mallory/revoke",
        &[("Authorization", &admin)],
        "",
    );
    assert_eq!(r.status, 202, "{}", r.body);
    wait_for(Duration::from_secs(1), "mallory refused", || {
        let mut again = client_for(&f, &m, 0);
        matches!(again.allocate(), Err(TurnError::Code(401 | 403)))
    });
    let metrics = get(f.api_addr, "/metrics", None).unwrap().body;
    assert_eq!(
        metric(&metrics, "geoturn_api_secret_rotations_total", ""),
        Some(1.0)
    );
    assert!(metric(&metrics, "geoturn_api_credentials_issued_total", "").unwrap() >= 3.0);
}

#[test]
fn every_jwt_failure_is_a_json_401() {
    let f = fleet("api-jwt", &[]);
    let now = geoturn_tests::unix_secs() as i64;
    let bearer = |t: &str| format!("Bearer {t}");
    let try_token = |token: &str| {
        call(
            f.api_addr,
            "GET",
            "/v1/ice-servers",
            &[("Authorization", &bearer(token))],
            "",
        )
    };

    let good = jwt(&hs256(), &claims("alice", 300), JWT_SECRET);
    assert_eq!(try_token(&good).status, 200);
    let none = format!(
        "{}.{}.",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#),
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(serde_json::to_vec(&claims("alice", 300)).unwrap()),
    );
    let mut tampered = good.clone();
    tampered.insert_str(good.find('.').unwrap() + 1, "eyJ4IjoxfQ");
    let cases: Vec<(&str, String)> = vec![
        ("expired", jwt(&hs256(), &claims("alice", -120), JWT_SECRET)),
        (
            "wrong audience",
            jwt(
                &hs256(),
                &serde_json::json!({"sub": "a", "iss": ISSUER, "aud": "other", "exp": now + 60}),
                JWT_SECRET,
            ),
        ),
        (
            "wrong issuer",
            jwt(
                &hs256(),
                &serde_json::json!({"sub": "a", "iss": "https://evil.test", "aud": AUDIENCE, "exp": now + 60}),
                JWT_SECRET,
            ),
        ),
        (
            "not yet valid",
            jwt(
                &hs256(),
                &serde_json::json!({"sub": "a", "iss": ISSUER, "aud": AUDIENCE, "exp": now + 600, "nbf": now + 300}),
                JWT_SECRET,
            ),
        ),
        (
            "no subject",
            jwt(
                &hs256(),
                &serde_json::json!({"iss": ISSUER, "aud": AUDIENCE, "exp": now + 60}),
                JWT_SECRET,
            ),
        ),
        (
            "no expiry",
            jwt(
                &hs256(),
                &serde_json::json!({"sub": "a", "iss": ISSUER, "aud": AUDIENCE}),
                JWT_SECRET,
            ),
        ),
        (
            "wrong key",
            jwt(
                &hs256(),
                &claims("alice", 300),
                "another-secret-0123456789abcdef0123",
            ),
        ),
        ("alg none", none),
        (
            "RS256 header on an HS256 key",
            jwt(
                &serde_json::json!({"alg": "RS256"}),
                &claims("alice", 300),
                JWT_SECRET,
            ),
        ),
        ("tampered payload", tampered),
        ("garbage", "not.a.jwt".into()),
    ];
    let mut codes = Vec::new();
    for (what, token) in &cases {
        let r = try_token(token);
        assert_eq!(r.status, 401, "{what}: {}", r.body);
        assert!(r.header("www-authenticate").is_some(), "{what}");
        let code = error_code(&r);
        assert!(!code.is_empty(), "{what}: {}", r.body);
        assert!(
            !r.body.contains(token.as_str()),
            "{what}: the token is echoed"
        );
        codes.push(code);
    }
    assert_eq!(codes[0], "token_expired");
    assert_eq!(codes[1], "wrong_audience");
    assert_eq!(codes[2], "wrong_issuer");
    assert_eq!(codes[3], "token_not_yet_valid");
    assert_eq!(codes[4], "missing_subject");
    assert_eq!(codes[8], "algorithm_not_allowed");
    // No header, another scheme.
    let r = call(f.api_addr, "GET", "/v1/ice-servers", &[], "");
    assert_eq!(
        (r.status, error_code(&r).as_str()),
        (401, "missing_credentials")
    );
    let r = call(
        f.api_addr,
        "GET",
        "/v1/ice-servers",
        &[("Authorization", "Basic YTpi")],
        "",
    );
    assert_eq!(r.status, 401);
    // A valid browser token may not pick the client address, the user, or admin endpoints.
    for (method, path) in [
        ("GET", format!("/v1/ice-servers?client_ip={EU_CLIENT}")),
        ("GET", "/v1/ice-servers?user=bob".to_string()),
        ("POST", "/v1/admin/secrets/rotate".to_string()),
        ("GET", "/v1/relays".to_string()),
    ] {
        let r = call(
            f.api_addr,
            method,
            &path,
            &[("Authorization", &bearer(&good))],
            "",
        );
        assert_eq!(r.status, 403, "{path}: {}", r.body);
    }
    let metrics = get(f.api_addr, "/metrics", None).unwrap().body;
    assert_eq!(
        metric(
            &metrics,
            "geoturn_api_auth_failures_total",
            "reason=\"token_expired\""
        ),
        Some(1.0)
    );
}

#[test]
fn rate_limits_bad_input_cors_and_the_ops_endpoints() {
    let f = fleet(
        "api-limits",
        &[
            "--rate-limit",
            "1",
            "--rate-burst",
            "5",
            "--cors-origin",
            "https://app.test",
        ],
    );
    let auth = format!("Bearer {APP_KEY}");
    // Five at once pass, the sixth waits.
    for _ in 0..5 {
        assert_eq!(ice(f.api_addr, "count=1", APP_KEY).status, 200);
    }
    let r = ice(f.api_addr, "count=1", APP_KEY);
    assert_eq!((r.status, error_code(&r).as_str()), (429, "rate_limited"));
    let after: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=2).contains(&after), "{after}");
    // Another caller has its own budget.
    let admin = format!("Bearer {ADMIN_KEY}");
    let bad: Vec<(&str, &str, String, u16, &str)> = vec![
        (
            "POST",
            "/v1/ice-servers",
            "{not json".into(),
            400,
            "bad_json",
        ),
        (
            "POST",
            "/v1/ice-servers",
            r#"{"tll": 5}"#.into(),
            400,
            "bad_json",
        ),
        (
            "POST",
            "/v1/ice-servers",
            "x".repeat(20_000),
            413,
            "bad_body",
        ),
        (
            "GET",
            "/v1/ice-servers?count=0",
            String::new(),
            400,
            "bad_count",
        ),
    ];
    for (method, path, body, status, code) in bad {
        let r = call(
            f.api_addr,
            method,
            path,
            &[("Authorization", &admin)],
            &body,
        );
        assert_eq!(
            (r.status, error_code(&r).as_str()),
            (status, code),
            "{path} {}",
            r.body
        );
    }
    let r = call(f.api_addr, "GET", "/v1/nothing", &[], "");
    assert_eq!((r.status, error_code(&r).as_str()), (404, "not_found"));
    let r = call(
        f.api_addr,
        "DELETE",
        "/v1/ice-servers",
        &[("Authorization", &auth)],
        "",
    );
    assert_eq!(
        (r.status, error_code(&r).as_str()),
        (405, "method_not_allowed")
    );
    // Unauthenticated guesses are limited per address too.
    let mut statuses = Vec::new();
    for i in 0..7 {
        statuses.push(ice(f.api_addr, "", &format!("guess-{i}")).status);
    }
    assert_eq!(statuses, vec![401, 401, 401, 401, 401, 429, 429]);

    // CORS: a browser on the configured origin may call with a bearer token.
    let r = call(
        f.api_addr,
        "OPTIONS",
        "/v1/ice-servers",
        &[
            ("Origin", "https://app.test"),
            ("Access-Control-Request-Method", "GET"),
            ("Access-Control-Request-Headers", "authorization"),
        ],
        "",
    );
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.test"),
        "{:?}",
        r.headers
    );
    let r = call(
        f.api_addr,
        "OPTIONS",
        "/v1/ice-servers",
        &[
            ("Origin", "https://evil.test"),
            ("Access-Control-Request-Method", "GET"),
        ],
        "",
    );
    assert_eq!(r.header("access-control-allow-origin"), None);

    let doc = json(&get(f.api_addr, "/openapi.json", None).unwrap());
    assert!(doc["paths"]["/v1/ice-servers"]["get"].is_object());
    assert_eq!(get(f.api_addr, "/healthz", None).unwrap().status, 200);
    let ready = json(&get(f.api_addr, "/readyz", None).unwrap());
    assert_eq!(
        (ready["ready"].clone(), ready["relays"].clone()),
        (Value::Bool(true), Value::from(3))
    );
    // One 429 for the key, two for the guesses.
    let metrics = get(f.api_addr, "/metrics", None).unwrap().body;
    assert_eq!(
        metric(
            &metrics,
            "geoturn_api_requests_total",
            "route=\"/v1/ice-servers\",status=\"429\""
        ),
        Some(3.0)
    );
    assert_eq!(
        metric(&metrics, "geoturn_api_relays", "state=\"active\""),
        Some(3.0)
    );
}

#[test]
fn redis_outage_answers_from_the_last_snapshot_and_recovers() {
    let mut f = fleet("api-redis", &[]);
    let port = f.redis.port();
    let before = json(&ice(
        f.api_addr,
        &format!("client_ip={EU_CLIENT}&count=3"),
        APP_KEY,
    ));
    f.redis.kill();
    let t0 = Instant::now();
    wait_for(
        Duration::from_secs(5),
        "the snapshot to be marked stale",
        || {
            ice(f.api_addr, "count=1", APP_KEY)
                .header("x-geoturn-snapshot")
                .is_some_and(|h| h.starts_with("stale"))
        },
    );
    // Long past 3 heartbeats, the API still hands out all three relays, marked stale.
    std::thread::sleep(Duration::from_secs_f64(4.0 * HEARTBEAT));
    let r = ice(
        f.api_addr,
        &format!("client_ip={EU_CLIENT}&count=3"),
        APP_KEY,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.header("x-geoturn-snapshot").unwrap().starts_with("stale"));
    let during = json(&r);
    assert_eq!(f.ids_in(&during), f.ids_in(&before));
    let ready = get(f.api_addr, "/readyz", None).unwrap();
    assert_eq!(ready.status, 200, "a stale snapshot still serves");
    assert_eq!(json(&ready)["registry"], "unreachable");
    // Unauthenticated: says that, not why (the error names Redis's host and port).
    assert!(json(&ready).get("error").is_none(), "{}", ready.body);
    // Relays keep relaying with credentials minted during the outage.
    let peer = EchoPeer::start().unwrap();
    let mut c = client_for(&f, &during, 0);
    c.allocate().unwrap();
    relays_data(&mut c, &peer);
    // Admin calls that need Redis say so.
    let r = call(
        f.api_addr,
        "POST",
        "/v1/admin/users/x/revoke",
        &[("Authorization", &format!("Bearer {ADMIN_KEY}"))],
        "",
    );
    assert_eq!(
        (r.status, error_code(&r).as_str()),
        (503, "registry_unavailable")
    );
    let outage = t0.elapsed();

    // Redis back, empty: relays re-register, the API re-stores its secrets, all fresh again.
    f.redis = RedisServer::start_on(port);
    let t1 = Instant::now();
    let converged = wait_for(
        Duration::from_secs(10),
        "a fresh snapshot with three relays",
        || {
            let r = ice(
                f.api_addr,
                &format!("client_ip={EU_CLIENT}&count=3"),
                APP_KEY,
            );
            r.header("x-geoturn-snapshot")
                .is_some_and(|h| h.starts_with("fresh"))
                && f.ids_in(&json(&r)).len() == 3
        },
    );
    eprintln!("outage {outage:?}; converged {converged:?} after Redis returned");
    assert!(t1.elapsed() < Duration::from_secs(5), "{:?}", t1.elapsed());
    // Old and new credentials still work after the restart.
    let mut c = client_for(&f, &before, 1);
    c.allocate().unwrap();
    relays_data(&mut c, &peer);
}

/// Whether the server has ended `conn`: end-of-file, a reset, or an answer (hyper may send 408
/// before it closes). Never blocks.
fn ended(conn: &std::net::TcpStream) -> bool {
    use std::io::Read;
    conn.set_nonblocking(true).unwrap();
    let mut b = [0u8; 256];
    let r = { conn }.read(&mut b);
    conn.set_nonblocking(false).unwrap();
    match r {
        Ok(_) => true,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    }
}

/// Connections that send the start of a request and never finish its headers.
fn slow_clients(addr: SocketAddr, n: usize) -> Vec<std::net::TcpStream> {
    use std::io::Write;
    (0..n)
        .map(|_| {
            let mut c = std::net::TcpStream::connect(addr).unwrap();
            c.write_all(b"GET /v1/ice-servers HTTP/1.1\r\nHost: slow\r\nX-Slow: ")
                .unwrap();
            c
        })
        .collect()
}

/// Slowloris against both HTTP servers of `geoturn up`, which run with the production limits
/// (API: 4 096 connections, ops port: 64, both 30 s to send a request's headers). 200 slow
/// clients of the API are all held and a good client is served meanwhile; of 70 on the ops
/// port 64 are held and 6 closed at once; every slow client is closed about 30 s after it
/// started although it keeps sending a header byte every 2 s; the ops port then serves again
/// and the process's descriptors are back to their baseline.
#[test]
fn slow_headers_are_capped_and_closed_while_good_clients_are_served() {
    use std::io::Write;
    let (child, ops, api) = geoturn_up();
    let fd_dir = format!("/proc/{}/fd", child.0.id());
    let fds = || std::fs::read_dir(&fd_dir).unwrap().count();
    let baseline = fds();

    let started = Instant::now();
    let slow_api = slow_clients(api, 200);
    let slow_ops = slow_clients(ops, 70);
    // The ops port closes the ones past its cap as it accepts them.
    let mut refused = 0;
    wait_for(WAIT_SHORT, "the ops port to close 6 connections", || {
        refused = slow_ops.iter().filter(|c| ended(c)).count();
        refused >= 6
    });
    let held_api = slow_api.iter().filter(|c| !ended(c)).count();
    println!(
        "slowloris: API holds {held_api} of 200; ops port holds {} of 70, closed {refused} at once",
        70 - refused
    );
    assert_eq!((held_api, refused), (200, 6));
    assert_eq!(get(api, "/healthz", None).unwrap().status, 200);
    let answer = ice(api, "", ADMIN_KEY);
    assert_eq!(answer.status, 200, "{}", answer.body);

    // Trickle a header byte every 2 s to every open one until the server ends it.
    let mut open: Vec<std::net::TcpStream> = slow_api.into_iter().chain(slow_ops).collect();
    open.retain_mut(|c| !ended(c));
    let mut first_closed = None;
    while !open.is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(45),
            "{} slow clients still open after {:?}",
            open.len(),
            started.elapsed()
        );
        std::thread::sleep(Duration::from_secs(2));
        let before = open.len();
        open.retain_mut(|c| c.write_all(b"a").is_ok() && !ended(c));
        if open.len() < before && first_closed.is_none() {
            first_closed = Some(started.elapsed());
        }
    }
    let (first, last) = (first_closed.unwrap(), started.elapsed());
    println!("slow clients closed from {first:?} to {last:?} after they started");
    assert!(
        first >= Duration::from_secs(28),
        "closed after only {first:?}"
    );
    // The ops port serves again, and nothing is left behind.
    assert_eq!(get(ops, "/healthz", None).unwrap().status, 200);
    wait_for(WAIT_SHORT, "the descriptors to come back", || {
        fds() <= baseline
    });
}

/// SIGTERM stops the API gracefully: a request in progress (its body still arriving) is
/// answered, an open event stream ends cleanly (a complete chunked body, not a reset), no new
/// connection is accepted, and the process exits with status 0 well within its grace.
#[test]
fn sigterm_finishes_requests_in_progress_ends_event_streams_and_exits() {
    use std::io::{Read, Write};
    let (mut child, addr) = memory_api(&["--api-key", &format!("app:{APP_KEY}")]);
    // An event stream, open.
    let mut events = std::net::TcpStream::connect(addr).unwrap();
    events
        .write_all(
            format!(
                "GET /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {APP_KEY}\r\n\r\n"
            )
            .as_bytes(),
        )
        .unwrap();
    events.set_read_timeout(Some(WAIT_SHORT)).unwrap();
    let mut head = [0u8; 512];
    let n = events.read(&mut head).unwrap();
    assert!(
        String::from_utf8_lossy(&head[..n]).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head[..n])
    );
    // A request whose body is still arriving.
    let body = r#"{"ttl":600}"#;
    let mut slow = std::net::TcpStream::connect(addr).unwrap();
    slow.write_all(
        format!(
            "POST /v1/ice-servers HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {APP_KEY}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
            body.len(),
            &body[..4]
        )
        .as_bytes(),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let stopped = Instant::now();
    child.terminate();
    // New connections are refused once the listener is closed.
    wait_for(WAIT_SHORT, "the listener to close", || {
        std::net::TcpStream::connect(addr).is_err()
    });
    // The request in progress gets its answer.
    slow.write_all(&body.as_bytes()[4..]).unwrap();
    slow.set_read_timeout(Some(WAIT_SHORT)).unwrap();
    let mut answer = String::new();
    slow.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 "), "{answer}");
    assert!(
        answer.contains("\"error\"") || answer.contains("iceServers"),
        "not a full answer: {answer}"
    );
    // The event stream ends with the chunked body's last chunk, then end-of-file.
    let mut rest = Vec::new();
    events.read_to_end(&mut rest).unwrap();
    let rest = String::from_utf8_lossy(&rest);
    assert!(
        rest.ends_with("0\r\n\r\n"),
        "the stream did not end cleanly: {rest:?}"
    );
    let status = child.wait_timeout(Duration::from_secs(10)).unwrap();
    println!(
        "API stopped {:?} after SIGTERM: {status:?}",
        stopped.elapsed()
    );
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
}

/// A signaling server that mints credentials itself needs the live TURN secrets, not the
/// admin scope: a `secrets:read` key reads them and can do nothing else an admin can; a plain
/// key cannot read them.
#[test]
fn a_secrets_read_key_reads_secrets_and_nothing_more() {
    let dir = geoturn_tests::temp_dir("scopes");
    let (reader, plain) = ("reader-key-0123456789abcdef", "plain-key-0123456789abcdef");
    let config = dir.join("api.toml");
    std::fs::write(
        &config,
        format!(
            "[[auth.api_keys]]\nname = \"signaling\"\nsha256 = \"{}\"\nscopes = [\"secrets:read\"]\n\n\
             [[auth.api_keys]]\nname = \"web\"\nsha256 = \"{}\"\n",
            geoturn_api::auth::hash_api_key(reader),
            geoturn_api::auth::hash_api_key(plain)
        ),
    )
    .unwrap();
    let config_arg = config.display().to_string();
    let (_api, addr) = memory_api(&["--config", &config_arg]);
    let secrets = get(addr, "/v1/admin/secrets", Some(reader)).unwrap();
    assert_eq!(secrets.status, 200, "{}", secrets.body);
    assert!(
        json(&secrets)["secrets"][0]["secret"]
            .as_str()
            .is_some_and(|s| !s.is_empty()),
        "{}",
        secrets.body
    );
    let auth = format!("Bearer {reader}");
    let rotate = call(
        addr,
        "POST",
        "/v1/admin/secrets/rotate",
        &[("Authorization", &auth)],
        "",
    );
    assert_eq!(
        (rotate.status, error_code(&rotate)),
        (403, "admin_required".into())
    );
    let denied = get(addr, "/v1/admin/secrets", Some(plain)).unwrap();
    assert_eq!(
        (denied.status, error_code(&denied)),
        (403, "scope_required".into())
    );
}

/// Every error is an RFC 9457 problem (`application/problem+json` with type, title, status,
/// detail and code, plus the `error` member earlier clients read), and the Cloudflare-shaped
/// route answers its errors in Cloudflare's envelope, with the same status and headers.
#[test]
fn errors_are_problem_details_and_the_cloudflare_route_answers_cloudflares_envelope() {
    let (_api, addr) = memory_api(&["--api-key", &format!("app:{APP_KEY}")]);
    let bad_key = "Bearer not-a-key-0123456789";
    let cases = [
        call(
            addr,
            "GET",
            "/v1/ice-servers",
            &[("Authorization", bad_key)],
            "",
        ),
        call(
            addr,
            "GET",
            "/v1/ice-servers?ttl=abc",
            &[("Authorization", &format!("Bearer {APP_KEY}"))],
            "",
        ),
        call(addr, "GET", "/v1/no-such-endpoint", &[], ""),
        // A path parameter that is not UTF-8 once decoded; a method a route does not take.
        call(addr, "GET", "/dashboard/%FF%FE", &[], ""),
        call(addr, "POST", "/v1/client.js", &[], ""),
        call(
            addr,
            "POST",
            "/v1/ice-servers",
            &[
                ("Authorization", &format!("Bearer {APP_KEY}")),
                ("Content-Type", "application/json"),
            ],
            "{not json",
        ),
    ];
    for r in &cases {
        assert!((400..500).contains(&r.status), "{} {}", r.status, r.body);
        assert_eq!(
            r.header("content-type"),
            Some("application/problem+json"),
            "{} {}",
            r.status,
            r.body
        );
        let p = json(r);
        let code = p["code"].as_str().unwrap_or_default().to_owned();
        assert!(!code.is_empty(), "{p}");
        assert_eq!(p["status"], r.status, "{p}");
        assert_eq!(p["type"], format!("tag:geoturn,2026:problem:{code}"), "{p}");
        assert!(p["title"].as_str().is_some_and(|t| !t.is_empty()), "{p}");
        assert_eq!(p["detail"], p["error"]["message"], "{p}");
        assert_eq!(p["error"]["code"], code, "{p}");
    }
    assert_eq!(cases[0].status, 401);
    assert!(cases[0].header("www-authenticate").is_some());

    // Cloudflare's route: Cloudflare's envelope, same status and headers.
    let cf = call(
        addr,
        "POST",
        "/v1/turn/keys/app/credentials/generate-ice-servers",
        &[
            ("Authorization", bad_key),
            ("Content-Type", "application/json"),
        ],
        r#"{"ttl":600}"#,
    );
    assert_eq!(cf.status, 401, "{}", cf.body);
    assert!(cf.header("www-authenticate").is_some());
    let body = json(&cf);
    assert_eq!(body["success"], false, "{body}");
    assert_eq!(body["errors"][0]["code"], 10000, "{body}");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );
    assert_eq!(
        (body["messages"].clone(), body["result"].clone()),
        (serde_json::json!([]), Value::Null)
    );
    // A key id that is not UTF-8 once decoded: still Cloudflare's envelope.
    let cf = call(
        addr,
        "POST",
        "/v1/turn/keys/%FF/credentials/generate-ice-servers",
        &[("Authorization", &format!("Bearer {APP_KEY}"))],
        "{}",
    );
    assert_eq!(cf.status, 400, "{}", cf.body);
    assert_eq!(json(&cf)["success"], false, "{}", cf.body);
}

/// Caller keys reload without a restart: an edit of the config file takes effect within the
/// file check (5 s), a broken file keeps the keys in use, and SIGHUP reloads at once (shown
/// with an edit that keeps the file's size and modification time, which the check cannot see).
#[test]
fn caller_keys_reload_on_file_change_and_on_sighup() {
    let dir = geoturn_tests::temp_dir("key-reload");
    let config = dir.join("api.toml");
    let entry = |name: &str, key: &str| {
        format!(
            "[[auth.api_keys]]\nname = \"{name}\"\nsha256 = \"{}\"\n",
            geoturn_api::auth::hash_api_key(key)
        )
    };
    let (key_a, key_b, key_c) = (
        "first-key-0123456789abcdef",
        "second-key-0123456789abcde",
        "third-key-0123456789abcdef",
    );
    std::fs::write(&config, entry("aaaa", key_a)).unwrap();
    let config_arg = config.display().to_string();
    let (child, addr) = memory_api(&["--config", &config_arg]);
    let status = |key: &str| get(addr, "/v1/relays", Some(key)).unwrap().status;
    // Polled 5 times a second, under the API's 20 refused calls a second per address (a 429
    // would hide the 401 this test looks for).
    let wait_until = |within: Duration, what: &str, key: &str, want: u16| {
        let t0 = Instant::now();
        loop {
            if status(key) == want {
                return t0.elapsed();
            }
            assert!(t0.elapsed() < within, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    assert_eq!(status(key_a), 200);
    assert_eq!(status(key_b), 401);

    // An edit: B replaces A within the file check.
    std::fs::write(&config, entry("bbbb", key_b)).unwrap();
    let took = wait_until(Duration::from_secs(10), "the edited keys", key_b, 200);
    println!("an edited config file took effect after {took:?}");
    assert_eq!(status(key_a), 401, "a removed key still works");

    // A broken file keeps the keys in use.
    std::fs::write(&config, "[[auth.api_keys]\nname = ").unwrap();
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(status(key_b), 200, "a broken config file dropped the keys");

    // SIGHUP: an edit the file check cannot see (same size, same modification time).
    std::fs::write(&config, entry("bbbb", key_b)).unwrap();
    wait_until(Duration::from_secs(10), "the repaired file", key_b, 200);
    std::thread::sleep(Duration::from_secs(6));
    let before = std::fs::metadata(&config).unwrap().modified().unwrap();
    let same_size = entry("cccc", key_c);
    assert_eq!(same_size.len(), entry("bbbb", key_b).len());
    std::fs::write(&config, &same_size).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&config)
        .unwrap()
        .set_modified(before)
        .unwrap();
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(
        status(key_c),
        401,
        "reloaded without SIGHUP: the check saw the edit"
    );
    child.signal(libc::SIGHUP);
    wait_until(
        Duration::from_secs(2),
        "SIGHUP to reload the keys",
        key_c,
        200,
    );
    assert_eq!(status(key_b), 401);
}

/// `geoturn api` alone on a free loopback port with the in-memory registry and a static TURN
/// secret, plus `args`, once it answers `/readyz`; the process and its address.
fn memory_api(args: &[&str]) -> (ChildGuard, SocketAddr) {
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let child = ChildGuard::spawn(
        Command::new(geoturn_bin())
            .args(["api", "--listen", &addr.to_string(), "--registry", "memory"])
            .args(args)
            .env("GEOTURN_AUTH_SECRETS", "memory-api-test-secret-0123456789")
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
    .unwrap();
    wait_for(WAIT_SHORT, "the API", || {
        get(addr, "/readyz", None).is_some_and(|r| r.status == 200)
    });
    (child, addr)
}

/// The API keeps the contract its `/openapi.json` describes, as schemathesis (PyPI) checks it
/// against a live `geoturn up`: every generated request, valid or not, with an admin key: no
/// 5xx, every answer's status and body as documented, schema-valid requests accepted and
/// schema-violating ones refused. The drain endpoint is left out: draining the embedded relay
/// ends `geoturn up`.
#[test]
fn the_api_keeps_its_openapi_contract_under_schemathesis() {
    let schemathesis = geoturn_tests::process::require_tool(
        "schemathesis",
        "python3 -m venv /opt/schemathesis && /opt/schemathesis/bin/pip install schemathesis==4.32.5 \
         && ln -s /opt/schemathesis/bin/schemathesis /usr/local/bin/ (as .ci/run does)",
    );
    let (_up, _, api) = geoturn_up();
    // `geoturn openapi` prints the document the API serves, for generators without a live API.
    let printed = Command::new(geoturn_tests::process::geoturn_bin())
        .arg("openapi")
        .output()
        .unwrap();
    assert!(printed.status.success());
    let printed: Value = serde_json::from_slice(&printed.stdout).unwrap();
    assert_eq!(printed, json(&get(api, "/openapi.json", None).unwrap()));
    assert_eq!(printed["openapi"], "3.1.0");
    // Its cache of found failures goes to a directory of its own, not into the repository.
    let workdir = geoturn_tests::temp_dir("schemathesis");
    let out = Command::new(schemathesis)
        .current_dir(&workdir)
        .args(["--no-color", "run", &format!("http://{api}/openapi.json")])
        .args(["--checks", "all"])
        .args(["-H", &format!("Authorization: Bearer {ADMIN_KEY}")])
        .args(["--max-examples", "50", "--request-timeout", "5"])
        .args(["--exclude-path-regex", "drain"])
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&workdir);
    let report = String::from_utf8_lossy(&out.stdout);
    let summary = report
        .lines()
        .filter(|l| l.contains("generated") || l.contains("Seed"))
        .collect::<Vec<_>>()
        .join("; ");
    println!("schemathesis: {summary}");
    assert!(
        out.status.success(),
        "schemathesis found problems:\n{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A JWKS document served on loopback: its body can be replaced (a key rotation) and its
/// fetches are counted.
struct JwksServer {
    addr: SocketAddr,
    body: std::sync::Arc<std::sync::Mutex<String>>,
    fetches: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl JwksServer {
    fn start(body: String) -> Self {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let body = std::sync::Arc::new(std::sync::Mutex::new(body));
        let fetches = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (b, f) = (body.clone(), fetches.clone());
        std::thread::spawn(move || {
            for mut conn in listener.incoming().flatten() {
                conn.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf) {
                        Ok(n) if n > 0 => request.extend_from_slice(&buf[..n]),
                        _ => break,
                    }
                }
                f.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let body = b.lock().unwrap().clone();
                let _ = conn.write_all(
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
                         Connection: close\r\n\r\n{body}",
                        body.len()
                    )
                    .as_bytes(),
                );
            }
        });
        Self {
            addr,
            body,
            fetches,
        }
    }

    fn fetches(&self) -> usize {
        self.fetches.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// An ES256 signing key and its public JWK under `kid`.
fn es256_key(kid: &str) -> (jsonwebtoken::EncodingKey, Value) {
    let key = rcgen::KeyPair::generate().unwrap();
    let point = key.public_key_raw();
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let jwk = serde_json::json!({
        "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
        "x": b64(&point[1..33]), "y": b64(&point[33..65]),
    });
    let encoding = jsonwebtoken::EncodingKey::from_ec_pem(key.serialize_pem().as_bytes()).unwrap();
    (encoding, jwk)
}

fn es256_token(key: &jsonwebtoken::EncodingKey, kid: &str) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, &claims("user-1", 600), key).unwrap()
}

/// JWT keys from a JWKS URL: fetched at start; after the provider rotates its keys, a token
/// naming the new key id makes the API fetch again and is accepted, while the removed key's
/// tokens are refused; a stream of tokens with made-up key ids costs the provider no more than
/// one fetch per 30 s.
#[test]
fn jwks_keys_are_fetched_and_fetched_again_for_a_new_key_id() {
    let (key_a, jwk_a) = es256_key("key-a");
    let (key_b, jwk_b) = es256_key("key-b");
    let jwks = JwksServer::start(serde_json::json!({"keys": [jwk_a]}).to_string());
    let dir = geoturn_tests::temp_dir("jwks");
    let config = dir.join("api.toml");
    std::fs::write(
        &config,
        format!(
            "[[auth.jwks]]\nurl = \"http://{}/.well-known/jwks.json\"\nissuer = \"{ISSUER}\"\naudience = \"{AUDIENCE}\"\n",
            jwks.addr
        ),
    )
    .unwrap();
    let config_arg = config.display().to_string();
    let (_api, addr) = memory_api(&["--config", &config_arg]);
    let started = Instant::now();
    let ice = |token: &str| get(addr, "/v1/ice-servers", Some(token)).unwrap();
    // The in-memory registry has no relay: an accepted token gets 503 no_relays, a refused one
    // 401.
    let accepted = |r: &HttpResponse| (r.status, error_code(r)) == (503, "no_relays".into());

    let r = ice(&es256_token(&key_a, "key-a"));
    assert!(accepted(&r), "{}", r.body);
    assert_eq!(jwks.fetches(), 1, "one fetch at start");

    // The provider rotates: key-b in, key-a out. Past the 30 s between fetches, the first
    // token naming key-b makes the API fetch again.
    *jwks.body.lock().unwrap() = serde_json::json!({"keys": [jwk_b]}).to_string();
    std::thread::sleep(Duration::from_secs(31).saturating_sub(started.elapsed()));
    let r = ice(&es256_token(&key_b, "key-b"));
    assert!(accepted(&r), "{}", r.body);
    assert_eq!(jwks.fetches(), 2, "fetched again for the new key id");
    let r = ice(&es256_token(&key_a, "key-a"));
    assert_eq!((r.status, error_code(&r)), (401, "unknown_key_id".into()));

    // Made-up key ids: refused, and no more fetches within the 30 s.
    for i in 0..15 {
        let r = ice(&es256_token(&key_b, &format!("made-up-{i}")));
        assert_eq!(r.status, 401, "{}", r.body);
    }
    assert_eq!(jwks.fetches(), 2, "made-up key ids made the API fetch");
}

/// `geoturn ctl` against a live `geoturn up`: the fleet as a table and as JSON, the secrets
/// (without their values unless asked), a revocation, the exit codes a script relies on (1
/// refused, 3 unreachable), and a drain waited for until the relay has left.
#[test]
fn geoturn_ctl_operates_a_fleet_through_the_api() {
    let loopback = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
    let (mut up, _, api) = geoturn_up();
    let ctl = |key: &str, api: SocketAddr, args: &[&str]| {
        let out = Command::new(geoturn_bin())
            .args(["ctl", "--api", &format!("http://{api}"), "--key", key])
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, table, err) = ctl(ADMIN_KEY, api, &["relays"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("local") && l.contains("active")),
        "{table}"
    );
    let (code, json_out, _) = ctl(ADMIN_KEY, api, &["relays", "--json"]);
    assert_eq!(code, Some(0));
    let fleet: Value = serde_json::from_str(&json_out).unwrap();
    assert_eq!(fleet["relays"][0]["id"], "local");
    let (code, secrets, _) = ctl(ADMIN_KEY, api, &["secrets", "list"]);
    assert_eq!(code, Some(0));
    assert!(
        secrets.contains("yes"),
        "no active secret listed: {secrets}"
    );
    let (code, out, err) = ctl(ADMIN_KEY, api, &["users", "revoke", "mallory"]);
    assert_eq!((code, out.contains("revoked")), (Some(0), true), "{err}");
    let (code, _, err) = ctl("not-a-key-0123456789", api, &["relays"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("unknown_api_key"), "{err}");
    let (code, _, err) = ctl(ADMIN_KEY, loopback(free_port()), &["relays"]);
    assert_eq!(code, Some(3), "{err}");
    // A drain (without --wait: `geoturn up` ends with its relay, API included).
    let (code, out, err) = ctl(ADMIN_KEY, api, &["drain", "local"]);
    assert_eq!((code, out.trim()), (Some(0), "local: draining"), "{err}");
    assert!(up.wait_timeout(Duration::from_secs(15)).unwrap().is_some());
}

/// `geoturn ctl drain ID --wait` in a fleet (relays and API apart, as deployed): it prints the
/// allocations left and returns once the relay has left the registry; an unknown relay id is
/// refused with exit code 1. `geoturn ctl route IP` shows the API's ranking for a client before
/// and after.
#[test]
fn geoturn_ctl_drain_waits_until_the_relay_has_left() {
    let f = fleet("ctl-drain", &[]);
    let ctl = |args: &[&str]| {
        let out = Command::new(geoturn_bin())
            .args([
                "ctl",
                "--api",
                &format!("http://{}", f.api_addr),
                "--key",
                ADMIN_KEY,
            ])
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // `ctl route`: the API's own ranking for a client, with reasons: a US client gets us-1
    // first, then Frankfurt; a Frankfurt client an EU relay first.
    let (code, out, err) = ctl(&["route", US_CLIENT]);
    assert_eq!(code, Some(0), "{err}");
    println!("geoturn ctl route {US_CLIENT}:\n{out}");
    let first = out.lines().find(|l| l.starts_with("1. ")).unwrap_or("");
    assert!(first.starts_with("1. us-1 (us-east): "), "{out}");
    assert!(out.contains("3 relays considered"), "{out}");
    let (code, json_out, _) = ctl(&["route", EU_CLIENT, "--count", "3", "--json"]);
    assert_eq!(code, Some(0));
    let route: Value = serde_json::from_str(&json_out).unwrap();
    assert_eq!(route["chosen"].as_array().map(Vec::len), Some(3), "{route}");
    assert_eq!(route["chosen"][0]["region"], "eu-central", "{route}");
    assert!(
        route["location"]["lat"]
            .as_f64()
            .is_some_and(|lat| (lat - 50.11).abs() < 0.01)
    );
    assert!(
        route["chosen"][0]["urls"][0]
            .as_str()
            .is_some_and(|u| u.starts_with("turn:"))
    );
    let (code, _, err) = ctl(&["route", EU_CLIENT, "--count", "9"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("bad_count"), "{err}");
    let (code, _, err) = ctl(&["drain", "no-such-relay"]);
    assert_eq!(code, Some(1), "{err}");
    // A usage error is 2, which no outcome of a command shares.
    let (code, _, err) = ctl(&["route", "not-an-ip"]);
    assert_eq!(code, Some(2), "{err}");
    // The API and the key from a config file instead of flags (out of the process list).
    let config = f.dir.join("ctl.toml");
    std::fs::write(
        &config,
        format!("api = \"http://{}\"\nkey = \"{ADMIN_KEY}\"\n", f.api_addr),
    )
    .unwrap();
    let from_file = Command::new(geoturn_bin())
        .args(["ctl", "relays"])
        .env("GEOTURN_CTL_CONFIG", &config)
        .env_remove("GEOTURN_API_URL")
        .env_remove("GEOTURN_API_KEY")
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&from_file.stdout);
    assert!(
        from_file.status.success(),
        "{table}{}",
        String::from_utf8_lossy(&from_file.stderr)
    );
    assert!(table.lines().any(|l| l.starts_with("eu-2 ")), "{table}");

    // Two live calls on eu-2: the drain waits for them and says so as they end.
    let answer = json(&ice(f.api_addr, "count=1", APP_KEY));
    let entry = &turn_entries(&answer)[0];
    let eu2: SocketAddr = format!("127.0.0.1:{}", f.udp_of("eu-2")).parse().unwrap();
    let mut calls: Vec<TurnClient> = (0..2)
        .map(|_| {
            let mut c = TurnClient::new(
                eu2,
                entry["username"].as_str().unwrap(),
                entry["credential"].as_str().unwrap(),
            )
            .unwrap();
            c.allocate().unwrap();
            c
        })
        .collect();
    // The registry has them once a heartbeat has passed.
    wait_for(
        Duration::from_secs(10),
        "eu-2 to publish 2 allocations",
        || {
            let (_, fleet, _) = ctl(&["relays", "--json"]);
            serde_json::from_str::<Value>(&fleet).is_ok_and(|v| {
                v["relays"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|r| r["id"] == "eu-2" && r["allocations"] == 2)
            })
        },
    );
    // A wait that runs out of time says so with its own exit code (the drain goes on).
    let started_ms = geoturn_shared::clock::unix_ms();
    let (code, _, err) = ctl(&["drain", "eu-2", "--wait", "--timeout", "1"]);
    assert_eq!(code, Some(4), "{err}");
    assert!(
        err.contains("eu-2: still in the fleet after 1 s, 2 allocations left"),
        "{err}"
    );
    let started = Instant::now();
    let mut drain = ChildGuard::spawn(
        Command::new(geoturn_bin())
            .args(["ctl", "--api", &format!("http://{}", f.api_addr)])
            .args([
                "--key",
                ADMIN_KEY,
                "drain",
                "eu-2",
                "--wait",
                "--timeout",
                "60",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    )
    .unwrap();
    // The calls end one at a time, each after the command's 2 s poll has seen the count.
    for c in &mut calls {
        std::thread::sleep(Duration::from_secs(5));
        c.refresh(0).unwrap();
    }
    // Its output is a few lines: the pipes never fill while it runs.
    let status = drain.wait_timeout(Duration::from_secs(70)).unwrap();
    let read = |pipe: Option<&mut dyn std::io::Read>| {
        let mut text = String::new();
        pipe.map(|p| p.read_to_string(&mut text));
        text
    };
    let out = read(drain.0.stdout.as_mut().map(|p| p as _));
    let err = read(drain.0.stderr.as_mut().map(|p| p as _));
    let code = status.and_then(|s| s.code());
    println!(
        "geoturn ctl drain eu-2 --wait:\n{err}{out}({:?})",
        started.elapsed()
    );
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("eu-2: drained and gone"), "{out}");
    let mut counts: Vec<&str> = err
        .lines()
        .filter_map(|l| l.strip_prefix("eu-2: "))
        .filter_map(|l| l.split(" allocation").next())
        .collect();
    // A count shows again when the relay's deadline first appears with it.
    counts.dedup();
    // The relay leaves the moment its last allocation ends, before a poll could see 0.
    assert_eq!(counts, ["2", "1"], "the progress it printed: {err}");
    // Once the draining relay's heartbeat carries it, the progress names its drain deadline:
    // the drain's start plus the relay's --drain-timeout (30 s). RFC 3339 UTC times of one
    // format order as strings.
    let deadlines: Vec<&str> = err
        .lines()
        .filter_map(|l| l.split("; the relay closes the rest at ").nth(1))
        .filter_map(|l| l.strip_suffix(')'))
        .collect();
    assert!(!deadlines.is_empty(), "no deadline in the progress: {err}");
    assert!(
        deadlines.windows(2).all(|w| w[0] == w[1]),
        "the deadline moved: {err}"
    );
    let earliest = geoturn_api::rfc3339::format_utc_ms(started_ms + 30_000);
    let latest = geoturn_api::rfc3339::format_utc_ms(geoturn_shared::clock::unix_ms() + 30_000);
    for d in &deadlines {
        assert!(
            (earliest.as_str()..=latest.as_str()).contains(d),
            "deadline {d} not within {earliest}..={latest}: {err}"
        );
    }
    let (_, table, _) = ctl(&["relays"]);
    assert!(!table.lines().any(|l| l.starts_with("eu-2 ")), "{table}");
    // The drained relay is no longer chosen for anyone.
    let (_, json_out, _) = ctl(&["route", EU_CLIENT, "--count", "3", "--json"]);
    let route: Value = serde_json::from_str(&json_out).unwrap();
    let chosen: Vec<&str> = route["chosen"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["id"].as_str())
        .collect();
    assert!(!chosen.contains(&"eu-2"), "{route}");
}

/// Relays and the API keep at most 16 secrets: a rotation that would make a 17th still-valid
/// secret is refused (409 too_many_secrets), so no secret falls out of their sets before it
/// expires and no credential minted with it is refused early.
#[test]
fn rotation_stops_at_sixteen_live_secrets() {
    let (_api, addr) = memory_api(&["--admin-key", &format!("ops:{ADMIN_KEY}")]);
    let auth = format!("Bearer {ADMIN_KEY}");
    let rotate = || {
        call(
            addr,
            "POST",
            "/v1/admin/secrets/rotate",
            &[("Authorization", &auth)],
            "",
        )
    };
    let mut rotations = 0;
    let refused = loop {
        let r = rotate();
        if r.status != 201 {
            break r;
        }
        rotations += 1;
        assert!(rotations <= 16, "no limit after {rotations} rotations");
    };
    assert_eq!(
        (refused.status, error_code(&refused)),
        (409, "too_many_secrets".into()),
        "{}",
        refused.body
    );
    // 16 rotations (the static secret is not the registry's): all 16 in the API's set.
    assert_eq!(rotations, 16);
    let list = json(&get(addr, "/v1/admin/secrets", Some(ADMIN_KEY)).unwrap());
    let stored = list["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["id"].as_str().is_some_and(|id| id.starts_with('k')))
        .count();
    assert_eq!(stored, 16, "{list}");
}

/// `geoturn up` on free loopback ports with the admin key `ops:ADMIN_KEY`, once its API has the
/// relay's first heartbeat and its ops port answers: the process, the ops and the API address.
fn geoturn_up() -> (ChildGuard, SocketAddr, SocketAddr) {
    let loopback = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
    let (relay, ops, api) = (
        loopback(geoturn_tests::free_udp_port()),
        loopback(free_port()),
        loopback(free_port()),
    );
    let child = ChildGuard::spawn(
        Command::new(geoturn_bin())
            .arg("up")
            .args(["--listen", &relay.to_string()])
            .args(["--http", &ops.to_string()])
            .args(["--api-listen", &api.to_string()])
            .args(["--api-key", &format!("ops:{ADMIN_KEY}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
    .unwrap();
    wait_for(Duration::from_secs(15), "geoturn up to be ready", || {
        get(api, "/readyz", None).is_some_and(|r| {
            r.status == 200
                && serde_json::from_str::<Value>(&r.body).is_ok_and(|v| v["relays"] == 1)
        }) && get(ops, "/healthz", None).is_some_and(|r| r.status == 200)
    });
    (child, ops, api)
}

/// Round trips measured by the relays (issue 17): an authenticated Allocate answers a 401
/// whose nonce carries its issue time, the relay publishes the median per client network, and
/// the API ranks the measured region first, saying so, while a network never measured keeps
/// the GeoIP / default-region order.
#[test]
fn relays_measure_client_round_trips_and_the_ranking_uses_them() {
    let f = fleet("measured-rtt", &[]);
    let route = |ip: &str| {
        json(
            &get(
                f.api_addr,
                &format!("/v1/route?ip={ip}&count=3"),
                Some(APP_KEY),
            )
            .unwrap(),
        )
    };
    // Loopback has no place: the default region (us-east) first.
    let before = route("127.0.0.1");
    assert_eq!(before["chosen"][0]["id"], "us-1", "{before}");
    // A client on 127.0.0.1 calls through the relay the API gives a Frankfurt client.
    let answer = json(&ice(f.api_addr, &format!("clientIp={EU_CLIENT}"), APP_KEY));
    let index = 0;
    assert!(f.ids_in(&answer)[index].starts_with("eu-"), "{answer}");
    for _ in 0..3 {
        let mut client = client_for(&f, &answer, index);
        client.allocate().unwrap();
        client.refresh(0).unwrap();
    }
    // Published on the relay's next heartbeats, read by the API within its cache's 2 s.
    let mut after = Value::Null;
    let took = wait_for(Duration::from_secs(10), "the measured region first", || {
        // Every 200 ms: polling at wait_for's 25 ms would spend the caller's rate limit (20/s,
        // burst 40) and get the later requests a 429 (seen once in CI).
        std::thread::sleep(Duration::from_millis(200));
        after = route("127.0.0.1");
        after["chosen"][0]["region"] == "eu-central"
    });
    println!("measured first after {took:?}: {after}");
    let reason = after["chosen"][0]["reason"].as_str().unwrap();
    assert!(reason.contains("measured from 127.0.0.0/24"), "{reason}");
    // Never measured: still the default region first.
    let other = route("10.9.8.7");
    assert_eq!(other["chosen"][0]["id"], "us-1", "{other}");
    assert!(
        !other["chosen"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("measured"),
        "{other}"
    );
}
