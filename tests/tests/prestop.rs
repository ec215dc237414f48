//! The Kubernetes preStop hook (`deploy/kubernetes/prestop.sh`) against the real relay binary:
//! it starts a drain, waits while an allocation is live, returns once the allocation is gone
//! (and the relay exits with it), and fails loudly, without echoing the token, when the token
//! is wrong.

#![allow(clippy::unwrap_used)] // a panic in a test is a failed test

use std::io::Read;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use geoturn_tests::client::TurnClient;
use geoturn_tests::http::request;
use geoturn_tests::peer::EchoPeer;
use geoturn_tests::process::{ChildGuard, geoturn_bin};

const SECRET: &str = "prestop-test-secret-0123456789";
const TOKEN: &str = "prestop-admin-token-0123456789";

fn script() -> String {
    format!(
        "{}/../deploy/kubernetes/prestop.sh",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// A relay on free ports; returns it with its UDP port and ops address.
fn start_relay() -> (ChildGuard, u16, SocketAddr) {
    let (udp, http_port) = (
        geoturn_tests::free_tcp_port(),
        geoturn_tests::free_tcp_port(),
    );
    let relay = ChildGuard::spawn(
        Command::new(geoturn_bin())
            .args(["relay", "--listen", &format!("127.0.0.1:{udp}")])
            .args(["--http", &format!("127.0.0.1:{http_port}")])
            .args([
                "--allow-peer",
                "127.0.0.0/8",
                "--relay-ports",
                "34000-34999",
            ])
            .args(["--node-id", "relay-p", "--drain-timeout", "60"])
            .env("GEOTURN_AUTH_SECRETS", SECRET)
            .env("GEOTURN_ADMIN_TOKEN", TOKEN)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
    .unwrap();
    let http: SocketAddr = format!("127.0.0.1:{http_port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while request(http, "GET", "/healthz", &[], "").is_err() {
        assert!(Instant::now() < deadline, "ops HTTP did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
    (relay, udp, http)
}

/// `sh prestop.sh` for the relay at `http`, with `env` on top of a clean token environment.
fn start_script(http: SocketAddr, env: &[(&str, &str)]) -> ChildGuard {
    let mut cmd = Command::new("sh");
    cmd.arg(script())
        .env("GEOTURN_HTTP", http.to_string())
        .env("PRESTOP_POLL", "0.2")
        .env("PRESTOP_TIMEOUT", "60")
        .env_remove("GEOTURN_ADMIN_TOKEN")
        .env_remove("GEOTURN_ADMIN_TOKEN_FILE")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    ChildGuard::spawn(&mut cmd).unwrap()
}

/// Everything the exited script wrote, stdout and stderr.
fn output(script: &mut ChildGuard) -> (String, String) {
    let mut out = String::new();
    let mut err = String::new();
    script
        .0
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    script
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (out, err)
}

#[test]
fn prestop_waits_for_the_last_allocation_then_both_exit_cleanly() {
    let (mut relay, udp, http) = start_relay();
    let cred = geoturn_shared::RestCredential::mint(
        SECRET.as_bytes(),
        "caller",
        geoturn_tests::unix_secs(),
        600,
    );
    let mut live = TurnClient::new(
        format!("127.0.0.1:{udp}").parse().unwrap(),
        &cred.username,
        &cred.password,
    )
    .unwrap();
    live.allocate().unwrap();
    let peer = EchoPeer::start().unwrap();
    live.channel_bind(0x4030, peer.addr()).unwrap();
    // Workers publish their counts every 500 ms: wait until /status counts the allocation.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !request(http, "GET", "/status", &[], "")
        .unwrap()
        .body
        .contains("\"allocations\":1")
    {
        assert!(
            Instant::now() < deadline,
            "/status never counted the allocation"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let mut hook = start_script(http, &[("GEOTURN_ADMIN_TOKEN", TOKEN)]);
    // Past the script's 2 s settle, so it has polled /status several times by now.
    std::thread::sleep(Duration::from_millis(3000));
    if let Some(status) = hook.0.try_wait().unwrap() {
        let (_, err) = output(&mut hook);
        panic!("the hook returned ({status}) with an allocation live: {err}");
    }
    assert_eq!(
        request(http, "GET", "/readyz", &[], "").unwrap().status,
        503
    );
    assert!(
        relay.0.try_wait().unwrap().is_none(),
        "the relay must not exit with a live allocation"
    );
    // The call goes on while the hook waits.
    live.send_channel(0x4030, b"during prestop").unwrap();
    assert!(live.recv(Duration::from_secs(2)).unwrap().is_some());

    // The call ends: the hook returns 0 and the relay exits 0.
    let ended = Instant::now();
    live.refresh(0).unwrap();
    let status = hook
        .wait_timeout(Duration::from_secs(5))
        .unwrap()
        .expect("the hook returns once the last allocation is gone");
    let (out, err) = output(&mut hook);
    assert!(status.success(), "{status}: {err}");
    assert!(err.contains("drain started"), "{err}");
    assert!(
        !out.contains(TOKEN) && !err.contains(TOKEN),
        "token printed"
    );
    let hook_took = ended.elapsed();
    let relay_status = relay
        .wait_timeout(Duration::from_secs(10))
        .unwrap()
        .expect("the relay exits once the last allocation is gone");
    assert!(relay_status.success(), "{relay_status}");
    println!(
        "prestop: hook returned {:.1} s and relay exited {:.1} s after the last allocation \
         ended; hook said: {}",
        hook_took.as_secs_f64(),
        ended.elapsed().as_secs_f64(),
        err.trim().replace('\n', " | ")
    );
}

#[test]
fn a_wrong_token_fails_the_hook_without_printing_the_token() {
    let (_relay, _udp, http) = start_relay();
    let wrong = "wrong-token-do-not-print-0123456789";
    let token_file = geoturn_tests::temp_dir("prestop").join("token");
    // Kubernetes secret files often end with a newline.
    std::fs::write(&token_file, format!("{wrong}\n")).unwrap();
    let cases: [(&str, &str); 2] = [
        ("GEOTURN_ADMIN_TOKEN", wrong),
        ("GEOTURN_ADMIN_TOKEN_FILE", token_file.to_str().unwrap()),
    ];
    for (var, value) in cases {
        let mut hook = start_script(http, &[(var, value)]);
        let status = hook
            .wait_timeout(Duration::from_secs(15))
            .unwrap()
            .expect("the hook gives up at once on a refused drain");
        let (out, err) = output(&mut hook);
        assert!(!status.success(), "{var}: exited {status}");
        // curl's or wget's own report of the status, then the script's explanation.
        assert!(
            err.contains("error: 401") || err.contains("401 Unauthorized"),
            "{var}: {err}"
        );
        assert!(err.contains("--admin-token"), "{var}: {err}");
        for text in [&out, &err] {
            assert!(
                !text.contains(wrong),
                "{var}: the token was printed: {text}"
            );
            assert!(
                !text.contains(TOKEN),
                "{var}: the token was printed: {text}"
            );
        }
    }
    // Nothing was drained.
    assert_eq!(
        request(http, "GET", "/readyz", &[], "").unwrap().status,
        200
    );
}
