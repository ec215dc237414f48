//! A small HTTP/1.1 client for what the API and its tools fetch themselves (a JWKS document;
//! `geoturn ctl`'s calls to an API): one request per connection, TLS with the system's CA
//! certificates (plus any given), a bounded body. Built on hyper and rustls, which the servers
//! already use, rather than a second HTTP stack.

use std::sync::Arc;

use axum::http::Uri;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

/// One request to send.
#[derive(Debug, Clone)]
pub struct Request {
    method: hyper::Method,
    uri: Uri,
    tls: Option<Arc<rustls::ClientConfig>>,
    headers: Vec<(hyper::header::HeaderName, String)>,
    body: Bytes,
}

impl Request {
    /// A GET of `uri`; over TLS when `tls` is given (an `https` URL).
    pub fn get(uri: Uri, tls: Option<Arc<rustls::ClientConfig>>) -> Self {
        Self::new(hyper::Method::GET, uri, tls)
    }

    /// A request with no header or body yet.
    pub fn new(method: hyper::Method, uri: Uri, tls: Option<Arc<rustls::ClientConfig>>) -> Self {
        Self {
            method,
            uri,
            tls,
            headers: Vec::new(),
            body: Bytes::new(),
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: hyper::header::HeaderName, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// Sets a JSON body.
    pub fn json(self, body: &serde_json::Value) -> Self {
        let mut r = self.header(hyper::header::CONTENT_TYPE, "application/json");
        r.body = Bytes::from(body.to_string());
        r
    }

    /// Sends it; the answer's status and body (at most `max_body` bytes).
    pub async fn send(self, max_body: usize) -> Result<(u16, Bytes), String> {
        let uri = &self.uri;
        let host = uri
            .host()
            .ok_or("no host")?
            .trim_matches(['[', ']'])
            .to_owned();
        let port = uri
            .port_u16()
            .unwrap_or(if self.tls.is_some() { 443 } else { 80 });
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| format!("connect to {host}:{port}: {e}"))?;
        let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
        let mut request = hyper::Request::builder()
            .method(self.method.clone())
            .uri(path)
            .header(
                hyper::header::HOST,
                uri.authority().map_or(host.as_str(), |a| a.as_str()),
            )
            .header(
                hyper::header::USER_AGENT,
                concat!("geoturn/", env!("CARGO_PKG_VERSION")),
            );
        for (name, value) in &self.headers {
            request = request.header(name, value);
        }
        let request = request
            .body(Full::new(self.body.clone()))
            .map_err(|e| e.to_string())?;
        let response = match self.tls.clone() {
            Some(config) => {
                let name = rustls::pki_types::ServerName::try_from(host.clone())
                    .map_err(|e| format!("server name: {e}"))?;
                let stream = tokio_rustls::TlsConnector::from(config)
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("TLS: {e}"))?;
                send(TokioIo::new(stream), request).await?
            }
            None => send(TokioIo::new(tcp), request).await?,
        };
        let status = response.status().as_u16();
        let body = Limited::new(response.into_body(), max_body)
            .collect()
            .await
            .map(|b| b.to_bytes())
            .map_err(|e| format!("body: {e}"))?;
        Ok((status, body))
    }
}

async fn send<S>(
    io: S,
    request: hyper::Request<Full<Bytes>>,
) -> Result<hyper::Response<hyper::body::Incoming>, String>
where
    S: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    // Drives the connection; it ends once the answer is read and the sender dropped.
    tokio::spawn(async move {
        let _ = connection.await;
    });
    sender
        .send_request(request)
        .await
        .map_err(|e| format!("HTTP: {e}"))
}

/// rustls settings for fetching: the system's CA certificates plus those of `ca_file`.
pub fn tls_config(ca_file: Option<&std::path::Path>) -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if let Some(path) = ca_file {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .map_err(|e| format!("{}: {e}", path.display()))?
            .collect::<Result<_, _>>()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if certs.is_empty() {
            return Err(format!("{}: no certificate", path.display()));
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
    }
    if roots.is_empty() {
        return Err("no CA certificate to verify the JWKS server with (install ca-certificates, or give ca_file)".into());
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())
        .map(|b| b.with_root_certificates(roots).with_no_client_auth())
}
