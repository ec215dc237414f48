//! TLS certificates reload without dropping sessions: on SIGHUP and when the files change.

#![allow(clippy::unwrap_used)] // a panic in a test is a failed test

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use geoturn_tests::process::{ChildGuard, geoturn_bin};
use geoturn_tests::tls::{TlsClient, write_cert};

fn connect_when_up(
    addr: std::net::SocketAddr,
    roots: &[rustls::pki_types::CertificateDer<'static>],
) -> TlsClient {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match TlsClient::connect(addr, roots) {
            Ok(c) => return c,
            Err(e) => assert!(Instant::now() < deadline, "TLS listener not up: {e}"),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn certificate_reloads_on_sighup_and_on_file_change_keeping_sessions() {
    let dir = geoturn_tests::temp_dir("tls-reload");
    let a = write_cert(&dir, "a");
    let b = write_cert(&dir, "b");
    let c = write_cert(&dir, "c");
    // The relay serves the files at live.crt / live.key.
    let live_cert = dir.join("live.crt");
    let live_key = dir.join("live.key");
    std::fs::copy(&a.cert_path, &live_cert).unwrap();
    std::fs::copy(&a.key_path, &live_key).unwrap();
    let (udp, tls) = (
        geoturn_tests::free_tcp_port(),
        geoturn_tests::free_tcp_port(),
    );
    let relay = ChildGuard::spawn(
        Command::new(geoturn_bin())
            .args([
                "relay",
                "--listen",
                &format!("127.0.0.1:{udp}"),
                "--http",
                "127.0.0.1:0",
            ])
            .args(["--tls-listen", &format!("127.0.0.1:{tls}")])
            .arg("--tls-cert")
            .arg(&live_cert)
            .arg("--tls-key")
            .arg(&live_key)
            .env("GEOTURN_AUTH_SECRETS", "tls-reload-secret-0123456789")
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
    .unwrap();
    let roots = [a.der.clone(), b.der.clone(), c.der.clone()];
    let addr = format!("127.0.0.1:{tls}").parse().unwrap();
    let mut old = connect_when_up(addr, &roots);
    assert_eq!(old.peer_certificate().unwrap(), a.der);
    old.binding().unwrap();

    // SIGHUP: new handshakes get B at once; the old session keeps working.
    std::fs::copy(&b.cert_path, &live_cert).unwrap();
    std::fs::copy(&b.key_path, &live_key).unwrap();
    relay.signal(libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let fresh = TlsClient::connect(addr, &roots).unwrap();
        if fresh.peer_certificate().unwrap() == b.der {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "SIGHUP did not reload the certificate"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    old.binding().unwrap();

    // A file change alone is picked up within the 5 s poll.
    std::thread::sleep(Duration::from_millis(1100)); // a new mtime second
    std::fs::copy(&c.cert_path, &live_cert).unwrap();
    std::fs::copy(&c.key_path, &live_key).unwrap();
    let deadline = Instant::now() + Duration::from_secs(8);
    loop {
        let fresh = TlsClient::connect(addr, &roots).unwrap();
        if fresh.peer_certificate().unwrap() == c.der {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "file change did not reload the certificate"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    old.binding().unwrap();
    // A certificate the client does not trust is refused: the check above is real.
    let untrusted = TlsClient::connect(addr, std::slice::from_ref(&a.der));
    assert!(untrusted.is_err());
    drop(relay);
    let _ = std::fs::remove_dir_all(dir);
}
