//! `geoturn ctl`: the operator's commands against a credential API, in place of hand-written
//! curl: the fleet, draining a relay and waiting for it to leave, a client's route, secrets,
//! revocations.
//!
//! Exit codes a script can use: 0 done; 1 the API refused (its problem's `code` and `detail`
//! are printed); 2 a usage error (the command line parser's own code, so no outcome of a
//! command shares it); 3 the API could not be reached; 4 `drain --wait` ran out of time.

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
    /// The credential API (`https://api.example.org`); else `api` from the config file.
    #[arg(long, env = "GEOTURN_API_URL")]
    pub api: Option<String>,
    /// An API key (admin scope for drain, rotate and revoke); else `key` from the config file,
    /// which keeps it out of the process list and the shell history.
    #[arg(long, env = "GEOTURN_API_KEY", hide_env_values = true)]
    pub key: Option<String>,
    /// A TOML file with `api = "https://…"` and `key = "…"`, read for what the flags and
    /// variables leave out. Default: `$XDG_CONFIG_HOME/geoturn/ctl.toml` (or
    /// `~/.config/geoturn/ctl.toml`), when it exists.
    #[arg(long, env = "GEOTURN_CTL_CONFIG")]
    pub config: Option<std::path::PathBuf>,
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

/// `geoturn ctl`'s config file.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct CtlFile {
    api: Option<String>,
    key: Option<String>,
}

/// The config file's default place, when the environment names a home.
fn default_config() -> Option<std::path::PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".config")))?;
    Some(base.join("geoturn").join("ctl.toml"))
}

/// Reads the config file: the one named (which must exist), or the default one if it exists.
fn read_config(named: Option<&std::path::Path>) -> Result<CtlFile, CtlError> {
    let bad = |message: String| CtlError { code: 1, message };
    let path = match named {
        Some(p) => p.to_owned(),
        None => match default_config() {
            Some(p) if p.exists() => p,
            _ => return Ok(CtlFile::default()),
        },
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| bad(format!("config file {}: {e}", path.display())))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // It holds a key: say so when others may read it (as ssh does of private keys).
        if std::fs::metadata(&path).is_ok_and(|m| m.permissions().mode() & 0o077 != 0) {
            eprintln!(
                "warning: {} is readable by others; it holds an API key (chmod 600 it)",
                path.display()
            );
        }
    }
    toml::from_str(&text).map_err(|e| bad(format!("config file {}: {e}", path.display())))
}

impl Api {
    fn new(opts: &CtlOptions) -> Result<Self, CtlError> {
        let needs_file = opts.api.is_none() || opts.key.is_none();
        let file = if needs_file {
            read_config(opts.config.as_deref())?
        } else {
            CtlFile::default()
        };
        let missing = |what: &str, flag: &str, var: &str| CtlError {
            code: 1,
            message: format!(
                "no {what}: give {flag}, set {var}, or put `{what} = \"…\"` in the config file \
                 (--config, default ~/.config/geoturn/ctl.toml)"
            ),
        };
        let api = opts
            .api
            .clone()
            .or(file.api)
            .ok_or_else(|| missing("api", "--api", "GEOTURN_API_URL"))?;
        let key = opts
            .key
            .clone()
            .or(file.key)
            .ok_or_else(|| missing("key", "--key", "GEOTURN_API_KEY"))?;
        let base = api.trim_end_matches('/').to_owned();
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
        Ok(Self { base, key, tls })
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
        // Null until the relay's first heartbeat since it began draining.
        let deadline = relay["drainDeadline"].as_str().map(str::to_owned);
        let now = (left, deadline);
        if last.as_ref() != Some(&now) {
            eprintln!(
                "{}",
                progress_line(id, left, now.1.as_deref(), started.elapsed())
            );
            last = Some(now);
        }
        if started.elapsed() >= timeout {
            return Err(CtlError {
                code: 4,
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

/// One line of `drain --wait`'s progress: what is left, for how long it has waited, and when
/// the relay closes what is left (its drain deadline) once its record says.
fn progress_line(id: &str, left: u64, deadline: Option<&str>, waited: Duration) -> String {
    let mut line = format!("{id}: {} left ({} s", allocations(left), waited.as_secs());
    if let Some(at) = deadline {
        line.push_str(&format!("; the relay closes the rest at {at}"));
    }
    line.push(')');
    line
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
            match (s["notAfter"].as_str(), s["active"] == true) {
                (Some(at), _) => at,
                (None, true) => "-",
                // A secret from the API's configuration: it validates until the configuration
                // drops it.
                (None, false) => "configured, no end",
            },
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drain_progress_names_the_deadline_once_known() {
        let waited = Duration::from_millis(6_400);
        assert_eq!(
            progress_line("eu-2", 1, None, waited),
            "eu-2: 1 allocation left (6 s)"
        );
        assert_eq!(
            progress_line("eu-2", 2, Some("2026-12-05T03:40:12.345Z"), waited),
            "eu-2: 2 allocations left (6 s; the relay closes the rest at 2026-12-05T03:40:12.345Z)"
        );
    }

    #[test]
    fn secrets_table_says_which_have_no_end() {
        let list = serde_json::json!({"secrets": [
            {"id": "k2", "secret": "x", "notAfter": null, "active": true},
            {"id": "k1", "secret": "x", "notAfter": "2026-12-06T03:40:07Z", "active": false},
            {"id": "s0", "secret": "x", "notAfter": null, "active": false},
        ]});
        let table = secrets_table(&list);
        let rows: Vec<Vec<&str>> = table
            .lines()
            .skip(1)
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(rows[0], ["k2", "yes", "-"], "{table}");
        assert_eq!(rows[1], ["k1", "2026-12-06T03:40:07Z"], "{table}");
        assert_eq!(rows[2], ["s0", "configured,", "no", "end"], "{table}");
        assert!(
            !table.split_whitespace().any(|w| w == "x"),
            "secret values are for --json only: {table}"
        );
    }

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

    fn opts(api: Option<&str>, key: Option<&str>, config: Option<&std::path::Path>) -> CtlOptions {
        CtlOptions {
            api: api.map(str::to_owned),
            key: key.map(str::to_owned),
            config: config.map(std::path::Path::to_owned),
            json: false,
            command: CtlCommand::Relays,
        }
    }

    /// The error of `Api::new` (Api is not Debug: it holds the key).
    fn refusal(o: &CtlOptions) -> CtlError {
        match Api::new(o) {
            Ok(_) => panic!("expected an error"),
            Err(e) => e,
        }
    }

    #[test]
    fn the_config_file_fills_in_what_flags_leave_out() {
        let dir = std::env::temp_dir().join(format!("geoturn-ctl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("ctl.toml");
        std::fs::write(
            &file,
            "api = \"http://file.example:8080/\"\nkey = \"from-file\"\n",
        )
        .unwrap();
        let api = Api::new(&opts(None, None, Some(&file))).unwrap();
        assert_eq!(
            (api.base.as_str(), api.key.as_str()),
            ("http://file.example:8080", "from-file")
        );
        // A flag (or its variable) wins over the file.
        let api = Api::new(&opts(None, Some("from-flag"), Some(&file))).unwrap();
        assert_eq!(api.key, "from-flag");
        // A named file must exist; a typo in it is an error, not a silent default.
        let gone = dir.join("missing.toml");
        let err = refusal(&opts(None, None, Some(&gone)));
        assert!(err.message.contains("missing.toml"), "{}", err.message);
        std::fs::write(&file, "api = \"http://x\"\nkye = \"typo\"\n").unwrap();
        let err = refusal(&opts(None, None, Some(&file)));
        assert!(err.message.contains("kye"), "{}", err.message);
        // Nothing anywhere: the error says where a key may come from.
        std::fs::write(&file, "api = \"http://x\"\n").unwrap();
        let err = refusal(&opts(None, None, Some(&file)));
        assert!(err.message.contains("GEOTURN_API_KEY"), "{}", err.message);
        assert_eq!(err.code, 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
