//! TLS helpers for tests: self-signed certificates written to files, and a blocking TLS client
//! that trusts exactly the certificates it is given.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use geoturn_relay_proto::client::encode_request;
use geoturn_relay_proto::stun::framing::frame_len;
use geoturn_relay_proto::stun::{Class, Message, Method, TransactionId};
use rustls::pki_types::{CertificateDer, ServerName};

/// A certificate and key for `localhost` / 127.0.0.1 written as PEM files in `dir`.
#[derive(Debug, Clone)]
pub struct TestCert {
    /// The certificate file.
    pub cert_path: PathBuf,
    /// The key file.
    pub key_path: PathBuf,
    /// The certificate, DER.
    pub der: CertificateDer<'static>,
}

/// Generates a fresh self-signed certificate into `dir` under `name`.
pub fn write_cert(dir: &Path, name: &str) -> TestCert {
    let key = rcgen::KeyPair::generate().expect("key generation");
    let params = rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
        .expect("certificate params");
    let cert = params.self_signed(&key).expect("self-signed certificate");
    let cert_path = dir.join(format!("{name}.crt"));
    let key_path = dir.join(format!("{name}.key"));
    std::fs::write(&cert_path, cert.pem()).expect("write cert");
    std::fs::write(&key_path, key.serialize_pem()).expect("write key");
    TestCert {
        cert_path,
        key_path,
        der: cert.der().clone(),
    }
}

/// A blocking TLS connection to a relay.
pub struct TlsClient {
    stream: rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
}

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsClient")
    }
}

impl TlsClient {
    /// Connects to `addr` trusting only `roots`.
    pub fn connect(addr: SocketAddr, roots: &[CertificateDer<'static>]) -> std::io::Result<Self> {
        let mut store = rustls::RootCertStore::empty();
        for r in roots {
            store.add(r.clone()).map_err(std::io::Error::other)?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(std::io::Error::other)?
            .with_root_certificates(store)
            .with_no_client_auth();
        let name = ServerName::try_from("localhost").map_err(std::io::Error::other)?;
        let conn =
            rustls::ClientConnection::new(Arc::new(config), name).map_err(std::io::Error::other)?;
        let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut stream = rustls::StreamOwned::new(conn, tcp);
        // Drive the handshake now so certificate errors surface here.
        while stream.conn.is_handshaking() {
            stream.conn.complete_io(&mut stream.sock)?;
        }
        Ok(Self { stream })
    }

    /// The server's certificate.
    pub fn peer_certificate(&self) -> Option<CertificateDer<'static>> {
        self.stream
            .conn
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.clone().into_owned())
    }

    /// Sends a Binding request and returns the raw response.
    pub fn binding(&mut self) -> std::io::Result<Vec<u8>> {
        let req = encode_request(
            Method::Binding,
            Class::Request,
            TransactionId([7; 12]),
            &[],
            None,
        )
        .map_err(std::io::Error::other)?;
        self.stream.write_all(&req)?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 1024];
        loop {
            if let Ok(Some(n)) = frame_len(&buf) {
                buf.truncate(n);
                Message::parse(&buf).map_err(std::io::Error::other)?;
                return Ok(buf);
            }
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// A test certificate authority and a server certificate it signed, as PEM files in `dir`.
#[derive(Debug, Clone)]
pub struct TestPki {
    /// The CA certificate (what a client must trust).
    pub ca_path: PathBuf,
    /// The server certificate.
    pub cert_path: PathBuf,
    /// The server key.
    pub key_path: PathBuf,
}

/// Generates a fresh CA and a server certificate for `hosts` signed by it, into `dir`.
pub fn write_ca_signed(dir: &Path, hosts: &[&str]) -> TestPki {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "geoturn test CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = ca_params.self_signed(&ca_key).expect("CA certificate");
    let key = KeyPair::generate().expect("server key");
    let mut params =
        CertificateParams::new(hosts.iter().map(|h| (*h).to_owned()).collect::<Vec<_>>())
            .expect("server params");
    params.distinguished_name.push(
        DnType::CommonName,
        hosts.first().copied().unwrap_or("server"),
    );
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params
        .signed_by(&key, &ca, &ca_key)
        .expect("server certificate");
    let pki = TestPki {
        ca_path: dir.join("ca.crt"),
        cert_path: dir.join("server.crt"),
        key_path: dir.join("server.key"),
    };
    std::fs::write(&pki.ca_path, ca.pem()).expect("write CA");
    std::fs::write(&pki.cert_path, cert.pem()).expect("write cert");
    std::fs::write(&pki.key_path, key.serialize_pem()).expect("write key");
    pki
}

/// Creates an NSS certificate database in `db_dir` (as Chromium keeps in `$HOME/.pki/nssdb`
/// and Firefox in its profile) that trusts the CA at `ca_path` for TLS servers. Needs
/// `certutil` (Debian `libnss3-tools`).
pub fn trust_ca_in_nss_db(db_dir: &Path, ca_path: &Path) {
    let certutil = crate::process::require_tool(
        "certutil",
        "apt-get install -y --no-install-recommends libnss3-tools",
    );
    std::fs::create_dir_all(db_dir).expect("NSS db dir");
    let db = format!("sql:{}", db_dir.display());
    let run = |args: &[&str]| {
        let out = std::process::Command::new(&certutil)
            .args(args)
            .output()
            .expect("run certutil");
        assert!(
            out.status.success(),
            "certutil {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&["-N", "-d", &db, "--empty-password"]);
    let ca = ca_path.display().to_string();
    run(&[
        "-A",
        "-d",
        &db,
        "-n",
        "geoturn test CA",
        "-t",
        "C,,",
        "-i",
        &ca,
    ]);
}
