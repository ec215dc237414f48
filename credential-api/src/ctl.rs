//! `geoturn ctl`: the operator's commands against a credential API, in place of hand-written
//! curl: the fleet, draining a relay and waiting for it to leave, a client's route, secrets,
//! revocations.
//!
//! Exit codes a script can use: 0 done; 1 the API refused (its problem's `code` and `detail`
//! are printed); 2 `drain --wait` ran out of time; 3 the API could not be reached.

use std::time::{Duration, Instant};

use axum::http::Uri;
use serde_json::Value;

use crate::http_client::{Request, tls_config};

/// Largest answer read.
const MAX_BODY: usize = 4 * 1024 * 1024;
/// Longest one call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// `geoturn ctl` options.
#[derive(Debug, clap::Args)]
pub struct CtlOptions {
    /// The credential API (`https://api.example.org`).
    #[arg(long, env = "GEOTURN_API_URL")]
    pub api: String,
    /// An API key (admin scope for drain, rotate and revoke).
    #[arg(long, env = "GEOTURN_API_KEY", hide_env_values = true)]
    pub key: String,
    /// JSON output (the API's answers as they are).
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: CtlCommand,
}

/// `geoturn ctl` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum CtlCommand {
    /// The relays: state, load, heartbeat age.
    Relays,
    /// Drain a relay: it takes no new allocations and leaves once its calls end.
    Drain {
        /// The relay's id (`geoturn ctl relays`).
        id: String,
        /// Wait until the relay has left the fleet, printing the allocations left.
        #[arg(long)]
        wait: bool,
        /// Longest wait, seconds.
        #[arg(long, default_value_t = 3700)]
        timeout: u64,
    },
    /// The relays a client address would be given now, best first, and why (the API's own
    /// ranking: its snapshot, GeoIP and settings).
    Route {
        /// The client address.
        ip: std::net::IpAddr,
        /// Relays to choose (default: as many as an answer carries).
        #[arg(long)]
        count: Option<usize>,
    },
    /// TURN secrets.
    #[command(subcommand)]
    Secrets(SecretsCommand),
    /// Users.
    #[command(subcommand)]
    Users(UsersCommand),
}

/// `geoturn ctl secrets` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum SecretsCommand {
    /// The live secrets (ids and validity; the values only with --json).
    List,
    /// Make a new secret active; the others stay valid until the longest credential ends.
    Rotate,
}

/// `geoturn ctl users` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum UsersCommand {
    /// Refuse a user's current credentials on every relay.
    Revoke {
        /// The TURN user id.
        id: String,
    },
}

/// Why a command failed, with its exit code.
#[derive(Debug)]
pub struct CtlError {
    /// The process's exit code.
    pub code: u8,
    /// What to print.
    pub message: String,
}

impl CtlError {
    fn refused(status: u16, body: &Value) -> Self {
        let code = body["code"].as_str().unwrap_or("error");
        let detail = body["detail"].as_str().unwrap_or("");
        Self {
            code: 1,
            message: format!("the API answered {status} {code}: {detail}"),
        }
    }

    fn unreachable(e: impl std::fmt::Display) -> Self {
        Self {
            code: 3,
            message: format!("cannot reach the API: {e}"),
        }
    }
}

struct Api {
    base: String,
    key: String,
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

impl Api {
    fn new(opts: &CtlOptions) -> Result<Self, CtlError> {
        let base = opts.api.trim_end_matches('/').to_owned();
        let tls = if base.starts_with("https://") {
            Some(std::sync::Arc::new(
                tls_config(None).map_err(CtlError::unreachable)?,
            ))
        } else if base.starts_with("http://") {
            None
        } else {
            return Err(CtlError {
                code: 1,
                message: format!("--api {base:?}: expected an http:// or https:// URL"),
            });
        };
        Ok(Self {
            base,
            key: opts.key.clone(),
            tls,
        })
    }

    /// Calls `method path`; the answer's JSON when its status is `want`.
    async fn call(&self, method: hyper::Method, path: &str, want: u16) -> Result<Value, CtlError> {
        let uri: Uri = format!("{}{path}", self.base)
            .parse()
            .map_err(|e| CtlError::unreachable(format!("{}{path}: {e}", self.base)))?;
        let request = Request::new(method, uri, self.tls.clone())
            .header(hyper::header::AUTHORIZATION, format!("Bearer {}", self.key))
            .header(hyper::header::ACCEPT, "application/json");
        let (status, body) = tokio::time::timeout(CALL_TIMEOUT, request.send(MAX_BODY))
            .await
            .map_err(|_| CtlError::unreachable("timed out"))?
            .map_err(CtlError::unreachable)?;
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if status == want {
            Ok(body)
        } else {
            Err(CtlError::refused(status, &body))
        }
    }
}

/// Runs a `geoturn ctl` command; what to print on success.
pub async fn run(opts: &CtlOptions) -> Result<String, CtlError> {
    let api = Api::new(opts)?;
    match &opts.command {
        CtlCommand::Relays => {
            let fleet = api.call(hyper::Method::GET, "/v1/relays", 200).await?;
            Ok(if opts.json {
                format!("{fleet}\n")
            } else {
                relays_table(&fleet)
            })
        }
        CtlCommand::Drain { id, wait, timeout } => {
            let path = format!("/v1/admin/relays/{}/drain", encode(id));
            let answer = api.call(hyper::Method::POST, &path, 202).await?;
            if !wait {
                return Ok(if opts.json {
                    format!("{answer}\n")
                } else {
                    format!("{id}: draining\n")
                });
            }
            wait_gone(&api, id, Duration::from_secs(*timeout)).await
        }
        CtlCommand::Route { ip, count } => {
            let mut path = format!("/v1/route?ip={}", encode(&ip.to_string()));
            if let Some(n) = count {
                path.push_str(&format!("&count={n}"));
            }
            let answer = api.call(hyper::Method::GET, &path, 200).await?;
            Ok(if opts.json {
                format!("{answer}\n")
            } else {
                serde_json::from_value::<crate::answers::RouteAnswer>(answer)
                    .map(|a| a.to_text())
                    .map_err(|e| CtlError {
                        code: 1,
                        message: format!("the API's answer is not a route: {e}"),
                    })?
            })
        }
        CtlCommand::Secrets(SecretsCommand::List) => {
            let list = api
                .call(hyper::Method::GET, "/v1/admin/secrets", 200)
                .await?;
            Ok(if opts.json {
                format!("{list}\n")
            } else {
                secrets_table(&list)
            })
        }
        CtlCommand::Secrets(SecretsCommand::Rotate) => {
            let r = api
                .call(hyper::Method::POST, "/v1/admin/secrets/rotate", 201)
                .await?;
            Ok(if opts.json {
                format!("{r}\n")
            } else {
                format!("new active secret {}\n", r["id"].as_str().unwrap_or("?"))
            })
        }
        CtlCommand::Users(UsersCommand::Revoke { id }) => {
            let path = format!("/v1/admin/users/{}/revoke", encode(id));
            let r = api.call(hyper::Method::POST, &path, 202).await?;
            Ok(if opts.json {
                format!("{r}\n")
            } else {
                format!("{id}: revoked on every relay\n")
            })
        }
    }
}

/// Polls the fleet until relay `id` has left it (its record gone or stale), printing its
/// allocations as they fall.
async fn wait_gone(api: &Api, id: &str, timeout: Duration) -> Result<String, CtlError> {
    let started = Instant::now();
    let mut last = None;
    loop {
        let fleet = api.call(hyper::Method::GET, "/v1/relays", 200).await?;
        let relay = fleet["relays"]
            .as_array()
            .and_then(|rs| rs.iter().find(|r| r["id"] == id))
            .filter(|r| r["stale"] != true);
        let Some(relay) = relay else {
            return Ok(format!(
                "{id}: drained and gone after {} s\n",
                started.elapsed().as_secs()
            ));
        };
        let left = relay["allocations"].as_u64().unwrap_or(0);
        if last != Some(left) {
            eprintln!(
                "{id}: {} left ({} s)",
                allocations(left),
                started.elapsed().as_secs()
            );
            last = Some(left);
        }
        if started.elapsed() >= timeout {
            return Err(CtlError {
                code: 2,
                message: format!(
                    "{id}: still in the fleet after {} s, {} left",
                    timeout.as_secs(),
                    allocations(left)
                ),
            });
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// "1 allocation", "2 allocations".
fn allocations(n: u64) -> String {
    format!("{n} allocation{}", if n == 1 { "" } else { "s" })
}

/// Percent-encodes a path segment.
fn encode(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn relays_table(fleet: &Value) -> String {
    let mut out = format!(
        "{:<24} {:<14} {:<9} {:>17} {:>6} {:>8}\n",
        "ID", "REGION", "STATE", "ALLOCATIONS", "LOAD", "AGE"
    );
    for r in fleet["relays"].as_array().into_iter().flatten() {
        let allocations = r["allocations"].as_u64().unwrap_or(0);
        let capacity = r["capacityAllocations"].as_u64().unwrap_or(0);
        let load = if capacity > 0 {
            format!("{:.0}%", 100.0 * allocations as f64 / capacity as f64)
        } else {
            "-".into()
        };
        let state = if r["stale"] == true {
            "stale"
        } else {
            r["state"].as_str().unwrap_or("?")
        };
        out.push_str(&format!(
            "{:<24} {:<14} {:<9} {:>17} {:>6} {:>7.1}s\n",
            r["id"].as_str().unwrap_or("?"),
            r["region"].as_str().unwrap_or("?"),
            state,
            format!("{allocations}/{capacity}"),
            load,
            r["heartbeatAgeMs"].as_u64().unwrap_or(0) as f64 / 1000.0,
        ));
    }
    out
}

fn secrets_table(list: &Value) -> String {
    let mut out = format!("{:<32} {:<7} {}\n", "ID", "ACTIVE", "VALID UNTIL");
    for s in list["secrets"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "{:<32} {:<7} {}\n",
            s["id"].as_str().unwrap_or("?"),
            if s["active"] == true { "yes" } else { "" },
            s["notAfter"].as_str().unwrap_or("-"),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_percent_encoded() {
        assert_eq!(encode("eu-1.a_b~"), "eu-1.a_b~");
        assert_eq!(encode("a b/c"), "a%20b%2Fc");
    }

    #[test]
    fn tables_show_load_and_staleness() {
        let fleet = serde_json::json!({"relays": [
            {"id": "eu-1", "region": "eu", "state": "active", "allocations": 25, "capacityAllocations": 100, "heartbeatAgeMs": 1500, "stale": false},
            {"id": "us-1", "region": "us", "state": "active", "allocations": 0, "capacityAllocations": 0, "heartbeatAgeMs": 9000, "stale": true},
        ]});
        let table = relays_table(&fleet);
        assert!(
            table.contains("eu-1") && table.contains("25/100") && table.contains("25%"),
            "{table}"
        );
        assert!(
            table
                .lines()
                .any(|l| l.starts_with("us-1") && l.contains("stale")),
            "{table}"
        );
    }
}
