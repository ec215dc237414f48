//! `geoturn`: one binary for every role. This file only parses subcommands and calls the crates.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use geoturn_relay::RelayOptions;
use geoturn_shared::RestCredential;

#[derive(Debug, Parser)]
#[command(name = "geoturn", version, about = "A geo-distributed TURN service")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a TURN relay (UDP, TCP, TLS) with its ops HTTP listener.
    Relay(Box<RelayOptions>),
    /// Run everything in one process on 127.0.0.1 with a generated secret, and print
    /// ICE-server JSON a browser can use.
    Up(UpOptions),
    /// Mint TURN REST credentials for a user.
    Creds(CredsOptions),
    /// Show which relays a client address would be given, and why.
    Route(geoturn_api::route::RouteOptions),
}

#[derive(Debug, clap::Args)]
struct UpOptions {
    /// UDP address of the embedded relay.
    #[arg(long, env = "GEOTURN_LISTEN", default_value = "127.0.0.1:3478")]
    listen: std::net::SocketAddr,
    /// Lifetime in seconds of the printed credential.
    #[arg(long, default_value_t = 86400)]
    ttl: u64,
    /// Ops HTTP address of the embedded relay (/status, /metrics).
    #[arg(long, env = "GEOTURN_HTTP", default_value = "127.0.0.1:9641")]
    http: std::net::SocketAddr,
}

#[derive(Debug, clap::Args)]
struct CredsOptions {
    /// The shared secret (or the first of GEOTURN_AUTH_SECRETS).
    #[arg(
        long,
        env = "GEOTURN_AUTH_SECRETS",
        hide_env_values = true,
        value_delimiter = ',',
        num_args = 1
    )]
    secret: Vec<String>,
    /// The user id to embed in the username.
    #[arg(long, default_value = "")]
    user: String,
    /// Seconds the credential stays valid.
    #[arg(long, default_value_t = 86400)]
    ttl: u64,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("GEOTURN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Relay(opts) => {
            let config = (*opts).with_file()?.resolve()?;
            init_logging(config.log_json);
            geoturn_shared::pii::reveal_in_logs(config.log_pii);
            geoturn_relay::service::run(config, |_, _| {})?;
            Ok(())
        }
        Command::Up(opts) => run_up(opts),
        Command::Route(opts) => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            print!("{}", rt.block_on(geoturn_api::route::route(&opts))?);
            Ok(())
        }
        Command::Creds(opts) => {
            let secret = opts
                .secret
                .first()
                .context("--secret (or GEOTURN_AUTH_SECRETS) is required")?;
            let cred = RestCredential::mint(secret.as_bytes(), &opts.user, unix_now(), opts.ttl);
            println!("{}", serde_json::to_string(&cred)?);
            Ok(())
        }
    }
}

fn run_up(opts: UpOptions) -> anyhow::Result<()> {
    init_logging(false);
    let secret = geoturn_relay::run::random_secret();
    let relay_opts = RelayOptions {
        listen: vec![opts.listen],
        auth_secrets: vec![secret.clone()],
        // Everything runs on this machine: let browsers relay to each other over loopback.
        allow_peers: vec!["127.0.0.0/8".parse()?, "::1/128".parse()?],
        workers: Some(1),
        http: Some(opts.http),
        // A laptop run: Ctrl-C should not wait an hour for a forgotten tab.
        drain_timeout: Some(10),
        ..RelayOptions::default()
    };
    let config = relay_opts.resolve()?;
    let ttl = opts.ttl;
    geoturn_relay::service::run(config, move |relay, http| {
        let addr = relay.local_addr();
        let cred = RestCredential::mint(secret.as_bytes(), "local", unix_now(), ttl);
        let ice = serde_json::json!({
            "iceServers": [{
                "urls": [
                    format!("turn:{addr}?transport=udp"),
                    format!("turn:{addr}?transport=tcp"),
                    format!("stun:{addr}"),
                ],
                "username": cred.username,
                "credential": cred.password,
            }],
            "ttl": ttl,
        });
        println!("{}", serde_json::to_string_pretty(&ice).unwrap_or_default());
        eprintln!(
            "geoturn is up: relay on udp {addr}, status on http://{http}/status. Paste the JSON \
             above into new RTCPeerConnection(...). Ctrl-C stops."
        );
    })?;
    Ok(())
}
