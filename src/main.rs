//! `geoturn`: one binary for every role. This file only parses subcommands and calls the crates.

use geoturn_shared::clock::unix_secs;

mod telemetry;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use geoturn_relay::RelayOptions;
use geoturn_shared::RestCredential;

/// How long the credential API may take to finish requests in progress after SIGTERM.
const API_SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(20);

#[derive(Debug, Parser)]
#[command(name = "geoturn", version, about = "A geo-distributed TURN service")]
struct Cli {
    /// OTLP/HTTP collector to export traces to (e.g. `http://otel-collector:4318`).
    #[arg(long, global = true, env = "GEOTURN_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a TURN relay (UDP, TCP, TLS) with its ops HTTP listener.
    Relay(Box<RelayOptions>),
    /// Run the credential API: ICE servers for web apps, secret rotation, the fleet's load.
    Api(Box<geoturn_api::ApiOptions>),
    /// Run a relay and the credential API in one process on 127.0.0.1 (in-memory registry,
    /// generated secret and API key), and print ICE-server JSON and a ready curl command.
    Up(UpOptions),
    /// Mint TURN REST credentials for a user.
    Creds(CredsOptions),
    /// Generate an API key for `geoturn api` and print its config-file entry (the key is shown
    /// once; the file holds only its hash).
    ApiKey(ApiKeyOptions),
    /// Show which relays a client address would be given, and why.
    Route(geoturn_api::route::RouteOptions),
    /// Operate a fleet through its credential API: list relays, drain one (and wait), show a
    /// client address's route, list or rotate secrets, revoke a user.
    ///
    /// Exit codes: 0 done, 1 refused by the API, 2 a usage error, 3 the API unreachable, 4 a
    /// wait timed out.
    Ctl(geoturn_api::ctl::CtlOptions),
    /// Load generator: N allocations over UDP with timestamped traffic to in-process echo
    /// peers; reports packets/s, loss, round-trip percentiles, allocation rate (see BENCHMARKS.md).
    Bench(Box<geoturn_bench::BenchOptions>),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) for geoturn.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the credential API's OpenAPI 3.1 document (what `GET /openapi.json` serves), for
    /// client generators and reviews without a running API.
    Openapi,
    /// Write man pages, geoturn(1) and one per subcommand (geoturn-relay(1), ...), into DIR.
    Man {
        /// Where to write them (e.g. /usr/share/man/man1).
        dir: std::path::PathBuf,
    },
}

/// `geoturn up`: a development setup on this machine. It reads no `GEOTURN_*` variable (an
/// environment file written for `geoturn relay` or `geoturn api` must not turn it into an
/// internet-facing relay that lets clients into loopback, nor a non-admin key variable into an
/// admin key) and binds loopback addresses only.
#[derive(Debug, clap::Args)]
struct UpOptions {
    /// UDP (and TCP) address of the embedded relay; loopback only.
    #[arg(long, default_value = "127.0.0.1:3478")]
    listen: std::net::SocketAddr,
    /// Lifetime in seconds of the printed credential.
    #[arg(long, default_value_t = 86400)]
    ttl: u64,
    /// Ops HTTP address of the embedded relay (/status, /metrics); loopback only.
    #[arg(long, default_value = "127.0.0.1:9641")]
    http: std::net::SocketAddr,
    /// Address of the embedded credential API; loopback only.
    #[arg(long, default_value = "127.0.0.1:8080")]
    api_listen: std::net::SocketAddr,
    /// API key `NAME:KEY` (with the admin scope) for the embedded API; without one a key is
    /// generated and printed.
    #[arg(long)]
    api_key: Option<String>,
}

impl UpOptions {
    /// Refuses any address that is not loopback: `up` lets clients relay into loopback and
    /// opens the API to every origin, which is safe on this machine only.
    fn check_loopback(&self) -> anyhow::Result<()> {
        for (flag, addr) in [
            ("--listen", self.listen),
            ("--http", self.http),
            ("--api-listen", self.api_listen),
        ] {
            if !addr.ip().is_loopback() {
                anyhow::bail!(
                    "geoturn up {flag} {addr}: `up` binds loopback addresses only (it lets clients \
                     relay into this machine's loopback); run `geoturn relay` and `geoturn api` \
                     for a server others can reach"
                );
            }
        }
        Ok(())
    }
}

#[derive(Debug, clap::Args)]
struct ApiKeyOptions {
    /// The key's name (logs, metrics, the Cloudflare-shape key id).
    #[arg(long)]
    name: String,
    /// Give the key the admin scope (rotate secrets, revoke users, drain relays).
    #[arg(long)]
    admin: bool,
    /// Give the key a narrower scope: `secrets:read` (read the live TURN secrets, for a
    /// signaling server that mints credentials itself). Repeatable.
    #[arg(long = "scope", value_parser = ["secrets:read"])]
    scopes: Vec<String>,
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

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let otlp = cli.otlp_endpoint.as_deref();
    match cli.command {
        Command::Relay(opts) => {
            let config = (*opts).with_file()?.resolve()?;
            let _telemetry = telemetry::init(config.log_json, otlp, "geoturn-relay")?;
            geoturn_shared::pii::reveal_in_logs(config.log_pii);
            geoturn_relay::service::run(config, |_, _| {})?;
            Ok(())
        }
        Command::Up(opts) => {
            let _telemetry = telemetry::init(false, otlp, "geoturn")?;
            run_up(opts)
        }
        Command::Api(opts) => {
            // The options as given, kept to read the config file and key files again on a
            // reload (SIGHUP, or a change of those files).
            let given = (*opts).clone();
            let config = (*opts).with_file()?.resolve()?;
            let _telemetry = telemetry::init(config.log_json, otlp, "geoturn-api")?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            // Before the API takes a request, so a SIGTERM never kills it unhandled.
            let mut signals = {
                let _runtime = rt.enter();
                geoturn_relay::signal::ShutdownSignals::install()?
            };
            rt.block_on(async {
                let mut hangup =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
                let mut api = geoturn_api::start(config, None).await?;
                api.watch_auth(auth_source(given));
                eprintln!("credential API on http://{}", api.addr);
                loop {
                    tokio::select! {
                        () = signals.recv() => break,
                        _ = hangup.recv() => {
                            api.reload_auth();
                        }
                    }
                }
                // Requests in progress finish (a second signal cuts them); within the
                // 30 s Kubernetes gives a pod by default, after its preStop delay.
                tokio::select! {
                    () = api.shutdown(API_SHUTDOWN_GRACE) => {}
                    () = signals.recv() => tracing::warn!("second signal: stopping at once"),
                }
                tracing::info!("stopped");
                anyhow::Ok(())
            })
        }
        Command::Bench(opts) => Ok(geoturn_bench::run_and_print(&opts)?),
        Command::Completions { shell } => {
            use clap::CommandFactory as _;
            use std::io::Write as _;
            // Into a buffer first: clap_complete panics on a write error (a closed pipe).
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "geoturn", &mut script);
            match std::io::stdout().write_all(&script) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
                _ => Ok(()),
            }
        }
        Command::Openapi => {
            use std::io::Write as _;
            let doc = serde_json::to_string_pretty(&geoturn_api::openapi::document())?;
            match writeln!(std::io::stdout(), "{doc}") {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
                _ => Ok(()),
            }
        }
        Command::Man { dir } => {
            use clap::CommandFactory as _;
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            clap_mangen::generate_to(Cli::command(), &dir)
                .with_context(|| format!("writing man pages into {}", dir.display()))?;
            Ok(())
        }
        Command::Ctl(opts) => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            match rt.block_on(geoturn_api::ctl::run(&opts)) {
                Ok(out) => {
                    print!("{out}");
                    Ok(())
                }
                Err(e) => {
                    eprintln!("geoturn ctl: {}", e.message);
                    std::process::exit(i32::from(e.code));
                }
            }
        }
        Command::Route(opts) => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            print!("{}", rt.block_on(geoturn_api::route::route(&opts))?);
            Ok(())
        }
        Command::ApiKey(opts) => {
            let key = geoturn_api::auth::generate_api_key();
            // Check the entry the way the API will read it, so a bad name fails here.
            let mut check = geoturn_api::auth::Authenticator::from_config(&Default::default())?;
            check.add_plain_api_key(&opts.name, &key, opts.admin)?;
            println!(
                "# API key for {:?} (shown once; keep it in your secret store):",
                opts.name
            );
            println!("# {key}");
            println!("[[auth.api_keys]]");
            println!("name = {:?}", opts.name);
            println!("sha256 = {:?}", geoturn_api::auth::hash_api_key(&key));
            println!("admin = {}", opts.admin);
            if !opts.scopes.is_empty() {
                println!("scopes = {:?}", opts.scopes);
            }
            Ok(())
        }
        Command::Creds(opts) => {
            let secret = opts
                .secret
                .first()
                .context("--secret (or GEOTURN_AUTH_SECRETS) is required")?;
            // A credential the relays would never accept helps no one.
            geoturn_shared::secret_set::check_secret_len(secret)
                .map_err(|e| anyhow::anyhow!("--secret: {e}"))?;
            let cred = RestCredential::mint(secret.as_bytes(), &opts.user, unix_secs(), opts.ttl);
            println!("{}", serde_json::to_string(&cred)?);
            Ok(())
        }
    }
}

fn run_up(opts: UpOptions) -> anyhow::Result<()> {
    opts.check_loopback()?;
    let secret = geoturn_relay::run::random_secret();
    let (key_name, api_key) = match &opts.api_key {
        Some(pair) => {
            let (name, key) = pair.split_once(':').context("--api-key must be NAME:KEY")?;
            (name.to_owned(), key.to_owned())
        }
        None => ("local".to_owned(), geoturn_api::auth::generate_api_key()),
    };
    let relay_opts = RelayOptions {
        listen: vec![opts.listen],
        auth_secrets: vec![secret.clone()],
        // Everything runs on this machine: let browsers relay to each other over loopback.
        allow_peers: vec!["127.0.0.0/8".parse()?, "::1/128".parse()?],
        workers: Some(1),
        http: Some(opts.http),
        // A laptop run: Ctrl-C should not wait an hour for a forgotten tab.
        drain_timeout: Some(10),
        registry: Some("memory".into()),
        node_id: Some("local".into()),
        region: Some("local".into()),
        ..RelayOptions::default()
    };
    let relay_config = relay_opts.resolve()?;
    let api_config = geoturn_api::ApiOptions {
        listen: Some(opts.api_listen),
        auth_secrets: vec![secret.clone()],
        admin_keys: vec![format!("{key_name}:{api_key}")],
        // Browsers on any local page may call it.
        cors_origins: vec!["*".into()],
        ..geoturn_api::ApiOptions::default()
    }
    .resolve()?;
    let registry =
        geoturn_shared::registry::Registry::Memory(geoturn_shared::registry::MemoryRegistry::new());
    let api_registry = registry.clone();
    let ttl = opts.ttl;
    // The API gets its own runtime on its own thread; the relay's service owns this one.
    let (api_ready_tx, api_ready_rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("api".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = api_ready_tx.send(Err(anyhow::Error::from(e)));
                    return;
                }
            };
            rt.block_on(async move {
                match geoturn_api::start(api_config, Some(api_registry)).await {
                    Ok(api) => {
                        let _ = api_ready_tx.send(Ok(api.addr));
                        // Serve until the process exits with the relay.
                        std::future::pending::<()>().await;
                    }
                    Err(e) => {
                        let _ = api_ready_tx.send(Err(e.into()));
                    }
                }
            });
        })?;
    let api_addr = api_ready_rx.recv().context("the API thread stopped")??;
    geoturn_relay::service::run_with_registry(relay_config, Some(registry), move |relay, http| {
        let addr = relay.local_addr();
        let cred = RestCredential::mint(secret.as_bytes(), "local", unix_secs(), ttl);
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
        println!();
        println!("API key \"{key_name}\" (admin): {api_key}");
        println!(
            "Fresh ICE servers: curl -s -H 'Authorization: Bearer {api_key}' \
             http://{api_addr}/v1/ice-servers"
        );
        eprintln!(
            "geoturn is up: relay on udp/tcp {addr} (status http://{http}/status), credential \
             API on http://{api_addr} (/v1/ice-servers, /v1/relays, /openapi.json). Paste the \
             JSON above into new RTCPeerConnection(...). Ctrl-C stops."
        );
    })?;
    Ok(())
}

/// Where `geoturn api` reads its callers' keys again: the options as given over the config
/// file as it is now, and the files they come from (the config file, the JWT key files).
fn auth_source(given: geoturn_api::ApiOptions) -> geoturn_api::auth_reload::AuthSource {
    let for_files = given.clone();
    geoturn_api::auth_reload::AuthSource {
        load: Box::new(move || {
            given
                .clone()
                .with_file()
                .and_then(geoturn_api::ApiOptions::resolve)
                .map(|c| c.auth)
                .map_err(|e| e.to_string())
        }),
        files: Box::new(move || {
            let mut files: Vec<std::path::PathBuf> = for_files.config.iter().cloned().collect();
            files.extend(for_files.jwt_public_key.iter().cloned());
            if let Ok(merged) = for_files.clone().with_file() {
                for key in &merged.auth.jwt_keys {
                    files.extend(key.public_key_file.iter().cloned());
                    files.extend(key.secret_file.iter().cloned());
                }
            }
            files
        }),
    }
}
