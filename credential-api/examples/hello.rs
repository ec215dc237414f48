//! A minimal axum hello-world, the baseline `bench/api-wrk.sh` runs wrk against side by side
//! with `geoturn api`: whatever `/v1/ice-servers` costs beyond this is our handler, not the
//! framework. It runs the way `geoturn api` does (`src/main.rs`, `Command::Api`): a tokio
//! multi-thread runtime with the default worker count, `axum::serve` on one TCP listener.
//!
//! Usage: `cargo run --release -p geoturn-api --example hello -- [ADDR]` (default
//! 127.0.0.1:8081); `GET /` answers 200 `hello` as text/plain.

use std::net::SocketAddr;

use axum::Router;
use axum::routing::get;

/// Where it listens without an argument.
const DEFAULT_ADDR: &str = "127.0.0.1:8081";

async fn hello() -> &'static str {
    "hello"
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .as_deref()
        .unwrap_or(DEFAULT_ADDR)
        .parse()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        eprintln!("hello on http://{}", listener.local_addr()?);
        let app = Router::new().route("/", get(hello));
        axum::serve(listener, app).await
    })?;
    Ok(())
}
