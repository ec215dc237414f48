//! The `geoturn` binary as users run it: `creds`, `relay` (start, relay, SIGTERM), `up`,
//! and configuration errors. (An integration test of the root package; the end-to-end suite
//! itself is the `geoturn-tests` crate in this directory.)

#![allow(clippy::unwrap_used)] // a panic in a test is a failed test

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use geoturn_tests::client::{Received, TurnClient};
use geoturn_tests::peer::EchoPeer;
use geoturn_tests::process::ChildGuard;

const BIN: &str = env!("CARGO_BIN_EXE_geoturn");
const SECRET: &str = "cli-test-secret-0123456789";

#[test]
fn creds_prints_a_valid_rest_credential() {
    let out = Command::new(BIN)
        .args([
            "creds",
            "--secret",
            "north-0123456789abcdef",
            "--user",
            "mbzrxpgjys",
            "--ttl",
            "600",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let username = text
        .split("\"username\":\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    let password = text
        .split("\"password\":\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    assert!(text.contains("\"ttl\":600"), "{text}");
    let (expiry, user) = username.split_once(':').unwrap();
    assert_eq!(user, "mbzrxpgjys");
    let expiry: u64 = expiry.parse().unwrap();
    let now = geoturn_tests::unix_secs();
    assert!((now + 598..=now + 601).contains(&expiry));
    assert_eq!(
        password,
        geoturn_shared::credentials::rest_password(b"north-0123456789abcdef", username)
    );
    // A secret the relays would refuse is refused here too, with the rule.
    let out = Command::new(BIN)
        .args(["creds", "--secret", "north", "--user", "mbzrxpgjys"])
        .env_remove("GEOTURN_AUTH_SECRETS")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("at least 16 bytes"),
        "{err}"
    );
}

#[test]
fn relay_binary_relays_and_stops_on_sigterm() {
    let port = geoturn_tests::free_udp_port();
    let mut relay = ChildGuard::spawn(
        Command::new(BIN)
            .args(["relay", "--listen", &format!("127.0.0.1:{port}")])
            .args([
                "--http",
                "127.0.0.1:0",
                "--allow-peer",
                "127.0.0.0/8",
                "--relay-ports",
                "30000-30999",
            ])
            .env("GEOTURN_AUTH_SECRETS", SECRET)
            .env("GEOTURN_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    )
    .unwrap();
    let peer = EchoPeer::start().unwrap();
    let cred = geoturn_shared::RestCredential::mint(
        SECRET.as_bytes(),
        "cli",
        geoturn_tests::unix_secs(),
        600,
    );
    let server = format!("127.0.0.1:{port}").parse().unwrap();
    // The process needs a moment to bind; retry the first Allocate for up to 10 s.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut client = loop {
        let mut c = TurnClient::new(server, &cred.username, &cred.password).unwrap();
        if c.allocate().is_ok() {
            break c;
        }
        assert!(
            Instant::now() < deadline,
            "relay did not answer within 10 s"
        );
    };
    client.channel_bind(0x4100, peer.addr()).unwrap();
    client.send_channel(0x4100, b"through the binary").unwrap();
    assert_eq!(
        client.recv(Duration::from_secs(2)).unwrap(),
        Some(Received::Channel {
            channel: 0x4100,
            payload: b"through the binary".to_vec()
        })
    );
    // SIGTERM drains: the relay waits for the live allocation, then exits once it is gone.
    relay.terminate();
    std::thread::sleep(Duration::from_millis(1500));
    if let Some(status) = relay.0.try_wait().unwrap() {
        let mut logs = String::new();
        let _ = relay.0.stderr.take().unwrap().read_to_string(&mut logs);
        panic!("exited ({status}) with a live allocation:\n{logs}");
    }
    client.refresh(0).unwrap();
    let status = relay
        .wait_timeout(Duration::from_secs(10))
        .unwrap()
        .expect("relay exits once drained");
    assert!(status.success(), "exit status {status}");
    let mut logs = String::new();
    relay
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut logs)
        .unwrap();
    assert!(logs.contains("allocation created"), "{logs}");
    // No secret and no password ever reaches the logs; client addresses are redacted.
    assert!(!logs.contains(SECRET), "{logs}");
    assert!(!logs.contains(&cred.password), "{logs}");
    assert!(!logs.contains(&client.local_addr().to_string()), "{logs}");
}

/// A SIGTERM that comes as soon as the relay answers (a rolling deploy that replaces a pod
/// which just started) drains it: the handlers are in place before the first answer, so the
/// kernel's default action (death, allocations dropped) never applies. A registry that
/// accepts connections but never answers keeps the relay's start-up busy (loading secrets
/// waits for its timeout) after the workers already answer, which is where the signal lands.
#[test]
fn sigterm_right_after_the_first_answer_drains() {
    use std::os::unix::process::ExitStatusExt;
    let silent_redis = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let registry = format!("redis://{}", silent_redis.local_addr().unwrap());
    for round in 0..2 {
        let port = geoturn_tests::free_udp_port();
        let mut relay = ChildGuard::spawn(
            Command::new(BIN)
                .args(["relay", "--listen", &format!("127.0.0.1:{port}")])
                .args(["--http", "127.0.0.1:0", "--relay-ports", "31000-31999"])
                .args(["--registry", &registry, "--secrets-key", &"ab".repeat(32)])
                .env("GEOTURN_AUTH_SECRETS", SECRET)
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )
        .unwrap();
        let server = format!("127.0.0.1:{port}").parse().unwrap();
        let mut client = TurnClient::new(server, "nobody", "nothing").unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while client.binding().is_err() {
            assert!(
                Instant::now() < deadline,
                "relay did not answer within 10 s"
            );
        }
        relay.terminate();
        let status = relay
            .wait_timeout(Duration::from_secs(10))
            .unwrap()
            .expect("an idle relay exits once drained");
        assert_eq!(status.signal(), None, "round {round}: killed by {status}");
        assert!(status.success(), "round {round}: {status}");
    }
}

#[test]
fn bad_configuration_fails_with_the_option_named() {
    for (args, env, option) in [
        (
            vec!["relay", "--listen", "127.0.0.1:0"],
            None,
            "auth-secret",
        ),
        (
            vec!["relay", "--listen", "127.0.0.1:0", "--relay-ports", "9-2"],
            Some(SECRET),
            "relay-ports",
        ),
        (
            vec!["relay", "--listen", "127.0.0.1:0", "--external-ip", "x/y"],
            Some(SECRET),
            "external-ip",
        ),
    ] {
        let mut cmd = Command::new(BIN);
        cmd.args(&args).env_remove("GEOTURN_AUTH_SECRETS");
        if let Some(s) = env {
            cmd.env("GEOTURN_AUTH_SECRETS", s);
        }
        let out = cmd.output().unwrap();
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(option), "{args:?}: {err}");
    }
}

#[test]
fn up_binds_loopback_only() {
    for flag in ["--listen", "--http", "--api-listen"] {
        let out = Command::new(BIN)
            .args(["up", flag, "0.0.0.0:0"])
            .output()
            .unwrap();
        assert!(!out.status.success(), "up {flag} 0.0.0.0:0 started");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("loopback") && err.contains(flag), "{err}");
    }
}

#[test]
fn up_prints_ice_servers_that_work() {
    let port = geoturn_tests::free_udp_port();
    let mut up = ChildGuard::spawn(
        Command::new(BIN)
            .args([
                "up",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--http",
                "127.0.0.1:0",
                "--api-listen",
                "127.0.0.1:0",
            ])
            // Production variables are not read by `up`: neither the address nor the key.
            .env("GEOTURN_LISTEN", "0.0.0.0:3478")
            .env("GEOTURN_API_KEYS", "app:not-an-admin-key-0123456789")
            .stdout(Stdio::piped())
            .stderr(Stdio::null()),
    )
    .unwrap();
    // Read the pretty-printed JSON object from stdout (it ends with a line holding "}").
    let mut json = String::new();
    let mut lines = BufReader::new(up.0.stdout.take().unwrap()).lines();
    for line in lines.by_ref() {
        let line = line.unwrap();
        json.push_str(&line);
        json.push('\n');
        if line == "}" {
            break;
        }
    }
    let field = |name: &str| -> String {
        json.split(&format!("\"{name}\": \""))
            .nth(1)
            .unwrap_or_else(|| panic!("no {name} in {json}"))
            .split('"')
            .next()
            .unwrap()
            .to_string()
    };
    assert!(
        json.contains(&format!("turn:127.0.0.1:{port}?transport=udp")),
        "{json}"
    );
    let (username, credential) = (field("username"), field("credential"));
    let peer = EchoPeer::start().unwrap();
    let mut c = TurnClient::new(
        format!("127.0.0.1:{port}").parse().unwrap(),
        &username,
        &credential,
    )
    .unwrap();
    c.allocate().unwrap();
    c.create_permission(peer.addr()).unwrap();
    c.send_indication(peer.addr(), b"up works").unwrap();
    assert!(matches!(
        c.recv(Duration::from_secs(2)).unwrap(),
        Some(Received::Data { .. })
    ));
    c.refresh(0).unwrap();

    // The embedded API: the printed key and curl command fetch ICE servers for this relay.
    let mut key = None;
    let mut url = None;
    for line in lines.by_ref().take(5) {
        let line = line.unwrap();
        if let Some(k) = line.split("(admin): ").nth(1) {
            key = Some(k.trim().to_string());
        }
        if let Some(u) = line.split_whitespace().find(|w| w.starts_with("http://")) {
            url = Some(u.trim_end_matches('\'').to_string());
        }
        if key.is_some() && url.is_some() {
            break;
        }
    }
    let (key, url) = (key.expect("an API key line"), url.expect("a curl line"));
    assert!(
        !key.contains("not-an-admin-key"),
        "up took GEOTURN_API_KEYS: {key}"
    );
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let api: std::net::SocketAddr = host.parse().unwrap();
    let auth = format!("Bearer {key}");
    // The relay's first heartbeat reaches the API's snapshot within a second or two.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let answer = loop {
        let r = geoturn_tests::http::request(
            api,
            "GET",
            &format!("/{path}"),
            &[("Authorization", &auth)],
            "",
        )
        .unwrap();
        if r.status == 200 {
            break r.body;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} {}",
            r.status,
            r.body
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        answer.contains(&format!("turn:127.0.0.1:{port}?transport=udp")),
        "{answer}"
    );
    let username = answer
        .split("\"username\":\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    let credential = answer
        .split("\"credential\":\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    let mut c = TurnClient::new(
        format!("127.0.0.1:{port}").parse().unwrap(),
        username,
        credential,
    )
    .unwrap();
    c.allocate().unwrap();
    c.refresh(0).unwrap();
    up.terminate();
    let status = up.wait_timeout(Duration::from_secs(10)).unwrap();
    assert!(status.is_some_and(|s| s.success()));
}

#[test]
fn api_key_prints_an_entry_that_geoturn_api_accepts() {
    let out = Command::new(BIN)
        .args(["api-key", "--name", "signaling", "--admin"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let key = text
        .lines()
        .find_map(|l| l.strip_prefix("# gt_"))
        .map(|k| format!("gt_{k}"))
        .unwrap_or_else(|| panic!("no key in {text}"));
    // The file holds the hash, never the key.
    let entry: String = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(!entry.contains(&key));
    let dir = geoturn_tests::temp_dir("api-key");
    let config = dir.join("api.toml");
    std::fs::write(&config, &entry).unwrap();
    let port = geoturn_tests::free_tcp_port();
    let api = ChildGuard::spawn(
        Command::new(BIN)
            .args([
                "api",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--auth-secret",
                "api-key-test-secret-0123",
            ])
            .arg("--config")
            .arg(&config)
            .env_remove("GEOTURN_API_KEYS")
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
    .unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let status = |auth: &str| {
        geoturn_tests::http::request(
            addr,
            "GET",
            "/v1/admin/secrets",
            &[("Authorization", auth)],
            "",
        )
        .map(|r| r.status)
    };
    let good = format!("Bearer {key}");
    loop {
        if let Ok(s) = status(&good) {
            assert_eq!(s, 200);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the API never answered"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(status("Bearer gt_wrong").unwrap(), 401);
    api.terminate();
}
