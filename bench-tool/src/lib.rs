//! geoturn-bench: the load generator behind `geoturn bench`, and the raw UDP forwarder it is
//! compared with (`raw-forwarder`, [`forwarder`]).
//!
//! The generator sets up N allocations on a TURN server over UDP, TCP or TLS ([`conn`]; or N
//! flows on the raw forwarder), binds a channel (or installs a permission) to one of its own in-process UDP echo
//! peers for each, then sends timestamped packets at a fixed rate per allocation for one or more
//! steps of rising rate, and reports for each step what was sent and echoed back, the loss, the
//! round-trip percentiles and, given the server's PID, the server's CPU time per relayed packet
//! and resident memory. Every loop is bounded in count and in time; it talks only to the
//! address it is given (loopback by default) and its echo peers bind loopback unless told
//! otherwise.
//!
//! Sending and receiving use `sendmmsg` / `recvmmsg` and `epoll` ([`sys`]) on several client
//! threads, so that on this 2-core machine the generator is not what limits a fast relay
//! (coturn's `turnutils_uclient` stops near 130 k packets/s here).

pub mod conn;
pub mod forwarder;
pub mod histogram;
pub mod procfs;
pub mod setup;
pub mod sys;
pub mod traffic;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant, SystemTime};

use geoturn_relay_proto::client::encode_request;
use geoturn_relay_proto::stun::{Attribute, Class, Method, TransactionId};
use serde::Serialize;

use crate::conn::{ClientConn, ClientTransport, StreamConn, TlsSettings};
use crate::setup::SetupKind;
use crate::traffic::{Client, ClientThread, EchoPeers, Framing, STAMP_LEN, Step, StepCounts};

/// What the generator drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Target {
    /// A TURN server (geoturn, coturn, …) over UDP.
    Turn,
    /// The raw forwarder (`raw-forwarder`): no TURN, the machine's limit.
    Raw,
    /// No server: clients send straight to the echo peers (the baseline round trip).
    Direct,
}

/// Options of `geoturn bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchOptions {
    /// The server under test (UDP). Loopback unless you name another address.
    #[arg(long, default_value = "127.0.0.1:3478")]
    pub server: SocketAddr,
    /// What the server is: `turn`, `raw` (the raw forwarder), or `direct` (no server at all:
    /// the generator's own round trip, to subtract from a relay's).
    #[arg(long, value_enum, default_value = "turn")]
    pub target: Target,
    /// Allocations (each its own client socket, relayed address and echo-peer channel).
    #[arg(long, default_value_t = 10)]
    pub allocations: usize,
    /// How clients reach a TURN server: `udp`, `tcp` (one connection per allocation) or `tls`
    /// (`turns:`); relayed traffic to the echo peers is UDP either way.
    #[arg(long, value_enum, default_value = "udp")]
    pub transport: ClientTransport,
    /// PEM file of the certificates that may sign the server's (`--transport tls`)
    /// [default: /etc/ssl/certs/ca-certificates.crt]; a self-signed server certificate can be
    /// given as its own root.
    #[arg(long)]
    pub tls_ca: Option<std::path::PathBuf>,
    /// Name the server's certificate must carry [default: the --server IP].
    #[arg(long)]
    pub tls_server_name: Option<String>,
    /// Send and receive data in Send/Data indications instead of ChannelData.
    #[arg(long)]
    pub send_indications: bool,
    /// Application payload bytes per packet (at least 24: sequence number and timestamp).
    #[arg(long, default_value_t = 160)]
    pub payload: usize,
    /// Packets per second per allocation. Several comma-separated values make a step test: each
    /// rate runs for --duration, one after another, until --stop-after steps in a row lose more
    /// than --max-loss.
    #[arg(long, value_delimiter = ',', default_value = "50")]
    pub rate: Vec<f64>,
    /// Seconds of traffic per step.
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    /// Seconds of unmeasured traffic at the first rate before the first step.
    #[arg(long, default_value_t = 0.5)]
    pub warmup: f64,
    /// Seconds to wait after a step for its last echoes (late ones count as lost).
    #[arg(long, default_value_t = 0.5)]
    pub drain: f64,
    /// Loss fraction a step may have and still count as sustained.
    #[arg(long, default_value_t = 0.001)]
    pub max_loss: f64,
    /// End a step test after this many steps in a row lose more than --max-loss.
    #[arg(long, default_value_t = 2)]
    pub stop_after: u32,
    /// TURN REST shared secret: the generator mints its own credential.
    #[arg(
        long,
        env = "GEOTURN_AUTH_SECRETS",
        hide_env_values = true,
        value_delimiter = ',',
        num_args = 1
    )]
    pub secret: Vec<String>,
    /// TURN username (instead of --secret).
    #[arg(long)]
    pub username: Option<String>,
    /// TURN password (with --username).
    #[arg(long, hide_env_values = true)]
    pub password: Option<String>,
    /// Client threads; each sends and receives for its share of the allocations.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Echo peers, each a socket with its own thread; allocation i uses peer i mod N.
    #[arg(long, default_value_t = 1)]
    pub peers: usize,
    /// Address the echo peers bind (the server must be able to reach it; not the server's own
    /// address, which geoturn refuses as a peer except at its relayed ports).
    #[arg(long, default_value = "127.0.0.3")]
    pub peer_ip: IpAddr,
    /// Address the client sockets bind [default: loopback when the server is on loopback, else
    /// the wildcard]. Another loopback address (127.0.0.2) keeps thousands of client sockets out
    /// of the port range of a relay on 127.0.0.1.
    #[arg(long)]
    pub client_ip: Option<IpAddr>,
    /// The server's PID: its CPU time and resident memory are read from /proc around each step
    /// and around the setup.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// CPUs (comma-separated numbers) whose busy time is measured around each step: wall
    /// time less their idle, I/O wait and steal time in /proc/stat. With the server pinned to
    /// them and its network namespace's receive processing steered there (RPS), this counts
    /// the server's softirq work too, which its own /proc/PID/stat does not (an eBPF relay's
    /// whole cost); anything else running on them is counted as well.
    #[arg(long, value_delimiter = ',')]
    pub cpus: Vec<u32>,
    /// CPUs the generator is pinned to, measured the same way and reported apart: when they
    /// are full, the generator, not the server, set the step's limit.
    #[arg(long, value_delimiter = ',')]
    pub generator_cpus: Vec<u32>,
    /// Allocations being set up at once.
    #[arg(long, default_value_t = 64)]
    pub setup_window: usize,
    /// The longest the setup may take, seconds.
    #[arg(long, default_value_t = 120.0)]
    pub setup_timeout: f64,
    /// Socket buffer bytes asked for the generator's sockets (the kernel caps it at
    /// net.core.rmem_max / wmem_max).
    #[arg(long, default_value_t = 4 << 20)]
    pub socket_buffer: usize,
    /// The generator's own sends (clients and echo peers) use UDP GSO for each burst to one
    /// address, so that it costs less CPU beside the server; the server still receives
    /// separate datagrams (loopback has no GRO for them). `--gso false`: one datagram per send.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub gso: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

impl Default for BenchOptions {
    fn default() -> Self {
        Self {
            server: SocketAddr::from(([127, 0, 0, 1], 3478)),
            target: Target::Turn,
            allocations: 10,
            transport: ClientTransport::Udp,
            tls_ca: None,
            tls_server_name: None,
            send_indications: false,
            payload: 160,
            rate: vec![50.0],
            duration: 5.0,
            warmup: 0.5,
            drain: 0.5,
            max_loss: 0.001,
            stop_after: 2,
            secret: Vec::new(),
            username: None,
            password: None,
            threads: 1,
            peers: 1,
            peer_ip: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3)),
            client_ip: None,
            server_pid: None,
            cpus: Vec::new(),
            generator_cpus: Vec::new(),
            setup_window: 64,
            setup_timeout: 120.0,
            socket_buffer: 4 << 20,
            gso: true,
            json: false,
        }
    }
}

/// Why a run could not happen.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    /// An option is out of range.
    #[error("{0}")]
    Options(String),
    /// A socket or thread could not be created.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// No allocation could be set up.
    #[error("no allocation could be set up: {0}")]
    Setup(String),
}

/// Bounds that keep every run finite.
const MAX_ALLOCATIONS: usize = 60_000;
const MAX_STEPS: usize = 64;
const MAX_STEP_SECONDS: f64 = 600.0;
const MAX_TOTAL_PPS: f64 = 10_000_000.0;

impl BenchOptions {
    fn validate(&self) -> Result<(), BenchError> {
        let bad = |m: String| Err(BenchError::Options(m));
        if !(1..=MAX_ALLOCATIONS).contains(&self.allocations) {
            return bad(format!("--allocations must be 1..={MAX_ALLOCATIONS}"));
        }
        if !(STAMP_LEN..=8192).contains(&self.payload) {
            return bad(format!("--payload must be {STAMP_LEN}..=8192 bytes"));
        }
        if self.rate.is_empty() || self.rate.len() > MAX_STEPS {
            return bad(format!("--rate takes 1..={MAX_STEPS} values"));
        }
        for r in &self.rate {
            if !(r.is_finite() && *r > 0.0 && r * self.allocations as f64 <= MAX_TOTAL_PPS) {
                return bad(format!(
                    "--rate {r}: each rate must be > 0 and rate x allocations <= {MAX_TOTAL_PPS}"
                ));
            }
        }
        for (name, v) in [
            ("--duration", self.duration),
            ("--warmup", self.warmup),
            ("--drain", self.drain),
            ("--setup-timeout", self.setup_timeout),
        ] {
            if !(v.is_finite() && (0.0..=MAX_STEP_SECONDS).contains(&v)) {
                return bad(format!("{name} must be 0..={MAX_STEP_SECONDS} seconds"));
            }
        }
        if self.duration < 0.05 {
            return bad("--duration must be at least 0.05 s".into());
        }
        if !(0.0..1.0).contains(&self.max_loss) {
            return bad("--max-loss is a fraction, 0 <= x < 1".into());
        }
        if !(1..=64).contains(&self.threads) || !(1..=256).contains(&self.peers) {
            return bad("--threads must be 1..=64 and --peers 1..=256".into());
        }
        if self.setup_window == 0 || self.setup_window > 10_000 {
            return bad("--setup-window must be 1..=10000".into());
        }
        if self.server.port() == 0 && self.target != Target::Direct {
            return bad("--server needs a port".into());
        }
        if self.transport != ClientTransport::Udp && self.target != Target::Turn {
            return bad(
                "--transport tcp/tls needs --target turn (the raw forwarder is UDP)".into(),
            );
        }
        if self.target == Target::Turn
            && self.secret.is_empty()
            && (self.username.is_none() || self.password.is_none())
        {
            return bad("a TURN server needs --secret, or --username and --password".into());
        }
        Ok(())
    }

    fn framing(&self) -> Framing {
        match (self.target, self.send_indications) {
            (Target::Turn, false) => Framing::Channel(setup::CHANNEL),
            (Target::Turn, true) => Framing::SendIndication,
            _ => Framing::Raw,
        }
    }

    fn mode(&self) -> &'static str {
        match (self.target, self.send_indications) {
            (Target::Turn, false) => "turn-channel",
            (Target::Turn, true) => "turn-send-indication",
            (Target::Raw, _) => "raw",
            (Target::Direct, _) => "direct",
        }
    }
}

/// Round-trip percentiles, microseconds.
#[derive(Debug, Clone, Serialize)]
pub struct RttReport {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest.
    pub max: f64,
}

/// One step of traffic.
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    /// Packets per second per allocation asked for.
    pub rate_per_allocation: f64,
    /// Allocations sending.
    pub allocations: usize,
    /// Packets per second offered in total (client → server).
    pub offered_pps: f64,
    /// Seconds of sending.
    pub seconds: f64,
    /// Packets the schedule asked for.
    pub offered: u64,
    /// Packets sent (the kernel took them).
    pub sent: u64,
    /// Packets the generator's own socket buffers refused (a generator limit, not loss).
    pub send_failed: u64,
    /// Packets the generator skipped because it fell behind its schedule (a generator limit).
    pub behind: u64,
    /// Echoes received back within the step and its drain time.
    pub received: u64,
    /// Datagrams that reached the echo peers (what the server delivered client → peer).
    pub delivered_to_peers: u64,
    /// Late echoes of earlier steps and unreadable datagrams.
    pub stray: u64,
    /// 1 − received / sent.
    pub loss: f64,
    /// Sent packets per second.
    pub sent_pps: f64,
    /// Echoes received per second.
    pub received_pps: f64,
    /// Packets the server forwarded per second, both directions (delivered to peers +
    /// received back).
    pub relayed_pps: f64,
    /// Application payload sent, Mbit/s.
    pub sent_mbps: f64,
    /// Application payload received back, Mbit/s.
    pub received_mbps: f64,
    /// Round trips client → server → peer → server → client.
    pub rtt_us: RttReport,
    /// Server CPU time during the step (with --server-pid), microseconds.
    pub server_cpu_us: Option<f64>,
    /// Server CPU as a percentage of one core.
    pub server_cpu_percent: Option<f64>,
    /// Server CPU microseconds per relayed packet (both directions counted).
    pub server_cpu_us_per_packet: Option<f64>,
    /// The generator's own CPU as a percentage of one core (all its threads).
    pub generator_cpu_percent: Option<f64>,
    /// Busy time of the --cpus during the step, microseconds (all of them together).
    pub cpus_busy_us: Option<f64>,
    /// That as a percentage of one core.
    pub cpus_busy_percent: Option<f64>,
    /// That per relayed packet (both directions counted).
    pub cpus_busy_us_per_packet: Option<f64>,
    /// Softirq time of the --cpus as a percentage of one core (tick-sampled, indicative).
    pub cpus_softirq_percent: Option<f64>,
    /// Busy time of the --generator-cpus as a percentage of one core.
    pub generator_cpus_busy_percent: Option<f64>,
    /// Loss within --max-loss and at least 99 % of the offered packets sent.
    pub sustained: bool,
}

/// The allocation setup.
#[derive(Debug, Clone, Serialize)]
pub struct SetupReport {
    /// Allocations asked for.
    pub requested: usize,
    /// Set up.
    pub ok: usize,
    /// Failed, with reasons in `errors`.
    pub failed: usize,
    /// Seconds for all of them.
    pub seconds: f64,
    /// Allocations completed per second (each: 401 challenge, Allocate, ChannelBind or
    /// CreatePermission).
    pub per_second: f64,
    /// Failure reasons with counts.
    pub errors: std::collections::BTreeMap<String, usize>,
    /// Server RSS before the setup, bytes (with --server-pid).
    pub server_rss_before: Option<u64>,
    /// Server RSS after the setup.
    pub server_rss_after: Option<u64>,
    /// (after − before) / allocations set up.
    pub server_rss_per_allocation: Option<f64>,
}

/// Everything one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// What was driven.
    pub target: Target,
    /// How the clients reached it.
    pub transport: ClientTransport,
    /// `turn-channel`, `turn-send-indication`, `raw` or `direct`.
    pub mode: &'static str,
    /// The server's address.
    pub server: SocketAddr,
    /// Application payload bytes.
    pub payload: usize,
    /// Bytes per packet on the client's wire (payload plus TURN framing; UDP/IP not counted).
    pub packet_bytes: usize,
    /// Client threads.
    pub threads: usize,
    /// Echo peers.
    pub peers: usize,
    /// Unix time the run started.
    pub started_unix: u64,
    /// The setup.
    pub setup: SetupReport,
    /// The steps run (the warm-up is not reported).
    pub steps: Vec<StepReport>,
    /// The step with the most echoes per second among the sustained ones.
    pub max_sustained: Option<StepReport>,
    /// Server RSS after the traffic, before the allocations were freed.
    pub server_rss_after_traffic: Option<u64>,
    /// (RSS after traffic − RSS before setup) / allocations.
    pub server_rss_per_allocation_after_traffic: Option<f64>,
}

fn credentials(opts: &BenchOptions) -> Option<(String, String)> {
    if let (Some(u), Some(p)) = (&opts.username, &opts.password) {
        return Some((u.clone(), p.clone()));
    }
    let secret = opts.secret.first()?;
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let c = geoturn_shared::RestCredential::mint(secret.as_bytes(), "bench", now, 86_400);
    Some((c.username, c.password))
}

/// How long a TCP connect plus TLS handshake may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The TLS client settings for `--transport tls`: the roots of `--tls-ca` and the name to
/// check.
fn tls_settings(opts: &BenchOptions) -> Result<Option<TlsSettings>, BenchError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    if opts.transport != ClientTransport::Tls {
        return Ok(None);
    }
    let ca = opts
        .tls_ca
        .clone()
        .unwrap_or_else(|| "/etc/ssl/certs/ca-certificates.crt".into());
    let bad_ca = |e: String| BenchError::Options(format!("--tls-ca {}: {e}", ca.display()));
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&ca).map_err(|e| bad_ca(e.to_string()))? {
        let cert = cert.map_err(|e| bad_ca(e.to_string()))?;
        roots.add(cert).map_err(|e| bad_ca(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(bad_ca("no certificates".into()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| BenchError::Options(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = match &opts.tls_server_name {
        Some(n) => ServerName::try_from(n.clone())
            .map_err(|e| BenchError::Options(format!("--tls-server-name {n}: {e}")))?,
        None => ServerName::from(opts.server.ip()),
    };
    Ok(Some(TlsSettings {
        config: Arc::new(config),
        name,
    }))
}

/// The address clients bind: `--client-ip`, or loopback for a loopback server (any address
/// otherwise).
fn client_ip(server: SocketAddr, client_ip: Option<IpAddr>) -> IpAddr {
    let default_ip = match (server.ip(), server.ip().is_loopback()) {
        (IpAddr::V4(_), true) => IpAddr::V4(Ipv4Addr::LOCALHOST),
        (IpAddr::V6(_), true) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        (IpAddr::V4(_), false) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        (IpAddr::V6(_), false) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    client_ip.unwrap_or(default_ip)
}

fn client_socket(
    server: SocketAddr,
    client_ip_opt: Option<IpAddr>,
    to: SocketAddr,
    buffer: usize,
) -> std::io::Result<UdpSocket> {
    let addr = SocketAddr::new(client_ip(server, client_ip_opt), 0);
    let sock = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    let _ = sock.set_recv_buffer_size(buffer);
    let _ = sock.set_send_buffer_size(buffer);
    sock.bind(&addr.into())?;
    sock.connect(&to.into())?;
    sock.set_nonblocking(true)?;
    Ok(sock.into())
}

fn micros(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

/// Runs the benchmark `opts` describes.
pub fn run(opts: &BenchOptions) -> Result<Report, BenchError> {
    opts.validate()?;
    // Thousands of allocations are thousands of sockets.
    let _ = sys::raise_nofile_limit();
    let started_unix = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let steps_time = opts.warmup
        + (opts.duration + opts.drain) * opts.rate.len() as f64
        + opts.setup_timeout
        + 30.0;
    let peers = EchoPeers::start(
        opts.peer_ip,
        opts.peers,
        opts.socket_buffer,
        opts.gso,
        Duration::from_secs_f64(steps_time),
    )?;
    let peer_addrs = peers.addrs().to_vec();
    let tls = tls_settings(opts)?;
    let mut clients = Vec::with_capacity(opts.allocations);
    for i in 0..opts.allocations {
        let peer = *peer_addrs
            .get(i % peer_addrs.len())
            .ok_or_else(|| BenchError::Options("no echo peer".into()))?;
        let to = if opts.target == Target::Direct {
            peer
        } else {
            opts.server
        };
        let conn = match opts.transport {
            ClientTransport::Udp => ClientConn::Udp(client_socket(
                opts.server,
                opts.client_ip,
                to,
                opts.socket_buffer,
            )?),
            ClientTransport::Tcp | ClientTransport::Tls => {
                let local = SocketAddr::new(client_ip(opts.server, opts.client_ip), 0);
                let stream = StreamConn::connect(local, opts.server, tls.as_ref(), CONNECT_TIMEOUT)
                    .map_err(|e| {
                        BenchError::Setup(format!("connecting to {} failed: {e}", opts.server))
                    })?;
                ClientConn::Stream(Box::new(stream))
            }
        };
        clients.push(Client {
            conn,
            peer,
            ready: opts.target == Target::Direct,
            auth: None,
        });
    }
    let pid = opts.server_pid;
    let rss_before = pid.and_then(procfs::rss_bytes);
    let creds = credentials(opts);
    let setup_outcome = match opts.target {
        Target::Direct => setup::SetupOutcome {
            ok: clients.len(),
            ..Default::default()
        },
        target => {
            let kind = match (target, opts.send_indications) {
                (Target::Raw, _) => SetupKind::Raw,
                (_, false) => SetupKind::TurnChannel,
                (_, true) => SetupKind::TurnPermission,
            };
            setup::set_up(
                &mut clients,
                kind,
                creds.as_ref().map(|(u, p)| (u.as_str(), p.as_str())),
                opts.setup_window,
                Duration::from_secs_f64(opts.setup_timeout),
            )?
        }
    };
    let rss_after = pid.and_then(procfs::rss_bytes);
    let per_alloc = |after: Option<u64>| match (rss_before, after, setup_outcome.ok) {
        (Some(b), Some(a), n) if n > 0 => Some((a as f64 - b as f64) / n as f64),
        _ => None,
    };
    let secs = setup_outcome.elapsed.as_secs_f64();
    let setup_report = SetupReport {
        requested: opts.allocations,
        ok: setup_outcome.ok,
        failed: setup_outcome.failed,
        seconds: secs,
        per_second: if secs > 0.0 {
            setup_outcome.ok as f64 / secs
        } else {
            0.0
        },
        errors: setup_outcome.errors.clone(),
        server_rss_before: rss_before,
        server_rss_after: rss_after,
        server_rss_per_allocation: per_alloc(rss_after),
    };
    if setup_outcome.ok == 0 {
        let why = format!("{:?}", setup_outcome.errors);
        return Err(BenchError::Setup(why));
    }

    let framing = opts.framing();
    let packet_bytes = traffic::Template::new(
        framing,
        peer_addrs.first().copied().unwrap_or(opts.server),
        opts.payload,
        opts.transport != ClientTransport::Udp,
    )?
    .len();
    let (steps, mut clients) = run_steps(opts, clients, framing, &peers)?;
    let rss_traffic = pid.and_then(procfs::rss_bytes);
    free_allocations(opts, &mut clients);

    let max_sustained = steps
        .iter()
        .filter(|s| s.sustained)
        .max_by(|a, b| a.received_pps.total_cmp(&b.received_pps))
        .cloned();
    Ok(Report {
        target: opts.target,
        transport: opts.transport,
        mode: opts.mode(),
        server: opts.server,
        payload: opts.payload,
        packet_bytes,
        threads: opts.threads,
        peers: opts.peers,
        started_unix,
        setup: setup_report,
        steps,
        max_sustained,
        server_rss_after_traffic: rss_traffic,
        server_rss_per_allocation_after_traffic: per_alloc(rss_traffic),
    })
}

/// Runs the warm-up and the steps on the client threads; returns the step reports and the
/// clients.
fn run_steps(
    opts: &BenchOptions,
    clients: Vec<Client>,
    framing: Framing,
    peers: &EchoPeers,
) -> Result<(Vec<StepReport>, Vec<Client>), BenchError> {
    let (ready, mut idle): (Vec<_>, Vec<_>) =
        clients.into_iter().enumerate().partition(|(_, c)| c.ready);
    let n_ready = ready.len();
    let n_threads = opts.threads.min(n_ready).max(1);
    let mut parts: Vec<Vec<(u32, Client)>> = (0..n_threads).map(|_| Vec::new()).collect();
    for (k, (i, c)) in ready.into_iter().enumerate() {
        if let Some(p) = parts.get_mut(k % n_threads) {
            p.push((i as u32, c));
        }
    }
    let epoch = Instant::now();
    let mut threads = Vec::new();
    for part in parts {
        threads.push(ClientThread::new(
            part,
            framing,
            opts.payload,
            epoch,
            opts.gso,
        )?);
    }
    let mut schedule = Vec::new();
    if opts.warmup > 0.0 {
        schedule.push(Step {
            tag: 0,
            rate: opts.rate.first().copied().unwrap_or(1.0),
            duration: Duration::from_secs_f64(opts.warmup),
            drain: Duration::from_secs_f64(opts.drain),
        });
    }
    for (k, rate) in opts.rate.iter().enumerate() {
        schedule.push(Step {
            tag: (k + 1) as u8,
            rate: *rate,
            duration: Duration::from_secs_f64(opts.duration),
            drain: Duration::from_secs_f64(opts.drain),
        });
    }
    let barrier = Arc::new(Barrier::new(n_threads + 1));
    let stop = Arc::new(AtomicBool::new(false));
    let results = Arc::new(Mutex::new(vec![StepCounts::default(); schedule.len()]));
    let mut handles = Vec::new();
    for (i, mut t) in threads.into_iter().enumerate() {
        let (barrier, stop, results, schedule) = (
            barrier.clone(),
            stop.clone(),
            results.clone(),
            schedule.clone(),
        );
        handles.push(
            std::thread::Builder::new()
                .name(format!("bench-client-{i}"))
                .spawn(move || {
                    for (k, step) in schedule.iter().enumerate() {
                        barrier.wait();
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let counts = t.run_step(*step);
                        if let Ok(mut r) = results.lock()
                            && let Some(slot) = r.get_mut(k)
                        {
                            slot.merge(&counts);
                        }
                        barrier.wait();
                    }
                    t.into_clients()
                })?,
        );
    }
    let own_pid = std::process::id();
    let mut reports = Vec::new();
    let mut failing = 0;
    for (k, step) in schedule.iter().enumerate() {
        barrier.wait();
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let t0 = Instant::now();
        let server0 = opts.server_pid.and_then(procfs::cpu_time);
        let own0 = procfs::cpu_time(own_pid);
        let cpus0 = cpu_sample(&opts.cpus);
        let gen0 = cpu_sample(&opts.generator_cpus);
        let echoed0 = peers.echoed();
        barrier.wait();
        let wall = t0.elapsed().as_secs_f64();
        let cpus1 = cpu_sample(&opts.cpus);
        let gen1 = cpu_sample(&opts.generator_cpus);
        let server1 = opts.server_pid.and_then(procfs::cpu_time);
        let own1 = procfs::cpu_time(own_pid);
        let delivered = peers.echoed().saturating_sub(echoed0);
        if step.tag == 0 {
            continue;
        }
        let counts = results
            .lock()
            .ok()
            .and_then(|r| r.get(k).cloned())
            .unwrap_or_default();
        let report = step_report(
            opts,
            *step,
            n_ready,
            &counts,
            delivered,
            wall,
            server0.zip(server1).map(|(a, b)| b.saturating_sub(a)),
            own0.zip(own1).map(|(a, b)| b.saturating_sub(a)),
            cpus0.zip(cpus1).map(|(a, b)| cpu_busy(&a, &b)),
            gen0.zip(gen1).map(|(a, b)| cpu_busy(&a, &b)),
        );
        failing = if report.loss > opts.max_loss {
            failing + 1
        } else {
            0
        };
        reports.push(report);
        if failing >= opts.stop_after && k + 1 < schedule.len() {
            stop.store(true, Ordering::Relaxed);
            // Let the threads pass the next start and see the flag.
            barrier.wait();
            break;
        }
    }
    let mut clients: Vec<(usize, Client)> = Vec::with_capacity(n_ready + idle.len());
    for h in handles {
        let back = h
            .join()
            .map_err(|_| BenchError::Io(std::io::Error::other("a client thread panicked")))?;
        clients.extend(back.into_iter().map(|(i, c)| (i as usize, c)));
    }
    clients.append(&mut idle);
    clients.sort_by_key(|(i, _)| *i);
    Ok((reports, clients.into_iter().map(|(_, c)| c).collect()))
}

#[allow(clippy::too_many_arguments)]
fn step_report(
    opts: &BenchOptions,
    step: Step,
    allocations: usize,
    c: &StepCounts,
    delivered: u64,
    wall: f64,
    server_cpu: Option<Duration>,
    own_cpu: Option<Duration>,
    cpus: Option<CpusBusy>,
    generator_cpus: Option<CpusBusy>,
) -> StepReport {
    let secs = step.duration.as_secs_f64();
    let loss = if c.sent > 0 {
        (c.sent.saturating_sub(c.received)) as f64 / c.sent as f64
    } else {
        0.0
    };
    let relayed = match opts.target {
        Target::Direct => 0,
        _ => delivered + c.received,
    };
    let bits = (opts.payload * 8) as f64;
    let server_us = server_cpu.map(|d| d.as_secs_f64() * 1e6);
    StepReport {
        rate_per_allocation: step.rate,
        allocations,
        offered_pps: step.rate * allocations as f64,
        seconds: secs,
        offered: c.offered,
        sent: c.sent,
        send_failed: c.send_failed,
        behind: c.behind,
        received: c.received,
        delivered_to_peers: delivered,
        stray: c.stray,
        loss,
        sent_pps: c.sent as f64 / secs,
        received_pps: c.received as f64 / secs,
        relayed_pps: relayed as f64 / secs,
        sent_mbps: c.sent as f64 * bits / secs / 1e6,
        received_mbps: c.received as f64 * bits / secs / 1e6,
        rtt_us: RttReport {
            p50: micros(c.rtt.quantile(0.5)),
            p99: micros(c.rtt.quantile(0.99)),
            p999: micros(c.rtt.quantile(0.999)),
            max: micros(c.rtt.max()),
        },
        server_cpu_us: server_us,
        server_cpu_percent: server_us.map(|us| us / 1e6 / wall * 100.0),
        server_cpu_us_per_packet: server_us
            .filter(|_| relayed > 0)
            .map(|us| us / relayed as f64),
        generator_cpu_percent: own_cpu.map(|d| d.as_secs_f64() / wall * 100.0),
        cpus_busy_us: cpus.map(|c| c.busy_us),
        cpus_busy_percent: cpus.map(|c| c.busy_us / c.wall_us * 100.0),
        cpus_busy_us_per_packet: cpus
            .filter(|_| relayed > 0)
            .map(|c| c.busy_us / relayed as f64),
        cpus_softirq_percent: cpus.map(|c| c.softirq_us / c.wall_us * 100.0),
        generator_cpus_busy_percent: generator_cpus.map(|c| c.busy_us / c.wall_us * 100.0),
        sustained: loss <= opts.max_loss && c.sent as f64 >= 0.99 * c.offered as f64,
    }
}

/// /proc/stat of the --cpus and when it was read; `None` without --cpus or if unreadable.
fn cpu_sample(cpus: &[u32]) -> Option<(Instant, Vec<procfs::CpuTimes>)> {
    if cpus.is_empty() {
        return None;
    }
    Some((Instant::now(), procfs::cpu_times(cpus)?))
}

/// Busy and softirq time of the --cpus between two samples.
#[derive(Debug, Clone, Copy)]
struct CpusBusy {
    wall_us: f64,
    busy_us: f64,
    softirq_us: f64,
}

fn cpu_busy(
    a: &(Instant, Vec<procfs::CpuTimes>),
    b: &(Instant, Vec<procfs::CpuTimes>),
) -> CpusBusy {
    let wall_us = b.0.duration_since(a.0).as_secs_f64() * 1e6;
    let mut busy_us = 0.0;
    let mut softirq_us = 0.0;
    for (x, y) in a.1.iter().zip(&b.1) {
        let not_busy = y.idle_us.saturating_sub(x.idle_us) + y.steal_us.saturating_sub(x.steal_us);
        // /proc/stat counts in 10 ms units: a nearly idle CPU can read as slightly negative.
        busy_us += (wall_us - not_busy as f64).max(0.0);
        softirq_us += y.softirq_us.saturating_sub(x.softirq_us) as f64;
    }
    CpusBusy {
        wall_us,
        busy_us,
        softirq_us,
    }
}

/// Frees what the setup created (TURN: Refresh with LIFETIME 0; raw: a close request), one
/// datagram per client without waiting for answers.
fn free_allocations(opts: &BenchOptions, clients: &mut [Client]) {
    for (i, c) in clients.iter_mut().enumerate().filter(|(_, c)| c.ready) {
        let msg = match opts.target {
            Target::Direct => continue,
            Target::Raw => forwarder::close_request(),
            Target::Turn => {
                let Some(auth) = c.auth.as_ref() else {
                    continue;
                };
                let mut t = [0u8; 12];
                t[..4].copy_from_slice(b"GTBr");
                t[4..8].copy_from_slice(&(i as u32).to_be_bytes());
                match encode_request(
                    Method::Refresh,
                    Class::Request,
                    TransactionId(t),
                    &[Attribute::Lifetime(0)],
                    Some(auth),
                ) {
                    Ok(m) => m,
                    Err(_) => continue,
                }
            }
        };
        let _ = c.conn.send(&msg);
        if let ClientConn::Stream(s) = &mut c.conn {
            // Closing the connection frees the allocation anyway; the Refresh says so first.
            let _ = s.flush();
        }
    }
}

/// Runs and prints the report on stdout (JSON with `--json`): `geoturn bench`.
pub fn run_and_print(opts: &BenchOptions) -> Result<(), BenchError> {
    let report = run(opts)?;
    if opts.json {
        let json = serde_json::to_string_pretty(&report).map_err(std::io::Error::other)?;
        println!("{json}");
    } else {
        print!("{}", render_text(&report));
    }
    Ok(())
}

fn fmt_opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.digits$}"))
}

/// The report as text for people.
pub fn render_text(r: &Report) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "geoturn bench: {} over {} against {}, {} allocations, {} B payload ({} B packets), \
         {} client thread(s), {} echo peer(s)",
        r.mode,
        r.transport.as_str(),
        r.server,
        r.setup.requested,
        r.payload,
        r.packet_bytes,
        r.threads,
        r.peers
    );
    let _ = writeln!(
        s,
        "setup: {} ok, {} failed in {:.2} s = {:.0} allocations/s{}",
        r.setup.ok,
        r.setup.failed,
        r.setup.seconds,
        r.setup.per_second,
        r.setup
            .server_rss_per_allocation
            .map_or(String::new(), |b| format!(
                "; server RSS +{b:.0} B per allocation"
            ))
    );
    for (why, n) in &r.setup.errors {
        let _ = writeln!(s, "  {n} x {why}");
    }
    let _ = writeln!(
        s,
        "{:>9} {:>10} {:>10} {:>10} {:>8} {:>9} {:>9} {:>9} {:>9} {:>8} {:>7} {:>6}",
        "rate/alloc",
        "sent/s",
        "echoed/s",
        "relayed/s",
        "loss %",
        "Mbit/s",
        "p50 µs",
        "p99 µs",
        "p99.9 µs",
        "srv µs/p",
        "srv %",
        "gen %"
    );
    for st in &r.steps {
        let _ = writeln!(
            s,
            "{:>9.0} {:>10.0} {:>10.0} {:>10.0} {:>8.3} {:>9.1} {:>9.0} {:>9.0} {:>9.0} {:>8} {:>7} {:>6}{}",
            st.rate_per_allocation,
            st.sent_pps,
            st.received_pps,
            st.relayed_pps,
            st.loss * 100.0,
            st.received_mbps,
            st.rtt_us.p50,
            st.rtt_us.p99,
            st.rtt_us.p999,
            fmt_opt(st.server_cpu_us_per_packet, 2),
            fmt_opt(st.server_cpu_percent, 0),
            fmt_opt(st.generator_cpu_percent, 0),
            if st.sustained {
                ""
            } else {
                "  (not sustained)"
            }
        );
    }
    match &r.max_sustained {
        Some(m) => {
            let _ = writeln!(
                s,
                "max sustained (loss <= limit): {:.0} echoes/s = {:.0} relayed packets/s",
                m.received_pps, m.relayed_pps
            );
        }
        None => {
            let _ = writeln!(s, "no step was sustained");
        }
    }
    s
}
