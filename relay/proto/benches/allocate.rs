//! What round-trip sampling costs an allocation (issue 17): the whole exchange a client makes,
//! Allocate → 401 → authenticated Allocate → Refresh(0), on the sans-IO server, with the
//! sample taken and without, side by side in one run.
//!
//! "Without" is the same work with a nonce the server did not issue (a sibling's, same fleet
//! key, another tag): the server checks it as valid and skips the sample at its first test, so
//! the difference between the two is exactly the sampler's work (the recent-nonce set, the
//! pending list, and the driver taking the samples, done here after every allocation where the
//! driver does it every 500 ms: an upper bound).
//!
//! Method: `R` rounds (argument 1, default 9), each timing `N` allocations (argument 2, default
//! 20 000; the virtual clock advances 1 ms per allocation, so R × 2 × N ms must stay within the
//! 10-minute nonce lifetime) with sampling, then `N` without, alternating which goes first; the figure is each
//! variant's median round, and their ratio. Run:
//! `cargo bench -p geoturn-relay-proto --bench allocate` (release profile).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use geoturn_relay_proto::allocation::ports::PortPool;
use geoturn_relay_proto::allocation::quota::Quota;
use geoturn_relay_proto::allocation::tcp::TcpConnections;
use geoturn_relay_proto::client::{ClientAuth, encode_request, error_code};
use geoturn_relay_proto::stun::{Attribute, Class, Message, Method, TransactionId};
use geoturn_relay_proto::types::FiveTuple;
use geoturn_relay_proto::{
    ClientSocket, Command, Server, ServerConfig, SharedTables, Transport, WallClock,
};
use geoturn_shared::{RestCredential, SecretSet};

const SECRET: &[u8] = b"allocate-bench-secret";
const UNIX: u64 = 1_800_000_000;

fn server(now: Instant, tag: u16) -> Server {
    let config = ServerConfig {
        relay_ip_v4: Some([192, 0, 2, 1].into()),
        nonce_tag: tag,
        nonce_key: [3; 32],
        // One client address makes every allocation: no unauthenticated-response limit.
        unauth_rate: u32::MAX,
        unauth_burst: u32::MAX,
        ..ServerConfig::default()
    };
    Server::new(
        config,
        SecretSet::from_values([SECRET]),
        SharedTables {
            quota: Arc::new(Quota::new(0, 0, 0)),
            ports: Arc::new(PortPool::new(50000..=50999, [7; 32])),
            tcp: Arc::new(TcpConnections::new(7)),
            revoked: Arc::default(),
        },
        WallClock {
            at: now,
            unix_ms: UNIX * 1000,
        },
    )
}

fn tuple() -> FiveTuple {
    FiveTuple {
        client: ClientSocket::new(SocketAddr::from(([198, 51, 100, 7], 40000))),
        server: SocketAddr::from(([192, 0, 2, 1], 3478)),
        transport: Transport::Udp,
    }
}

/// One request; its response, acknowledging relayed-port binds.
fn request(
    server: &mut Server,
    now: Instant,
    tid: TransactionId,
    method: Method,
    attrs: &[Attribute<'_>],
    auth: Option<&ClientAuth>,
) -> Vec<u8> {
    let req = encode_request(method, Class::Request, tid, attrs, auth).expect("encodes");
    assert!(server.handle_client_input(now, tuple(), &req).is_none());
    let mut response = None;
    while let Some(cmd) = server.poll_command() {
        match cmd {
            Command::BindRelay { relay, .. } => server.handle_relay_bound(now, relay, true),
            Command::SendToClient { data, .. } => response = Some(data),
            _ => {}
        }
    }
    response.expect("a response")
}

/// `n` allocations on `target`, each challenged by `challenger` (the same server: sampled; a
/// sibling: not). Returns the samples taken.
fn allocations(
    target: &mut Server,
    challenger: Option<&mut Server>,
    clock: &mut Instant,
    n: u64,
    seq: &mut u64,
) -> usize {
    let cred = RestCredential::mint(SECRET, "bench", UNIX, 3600);
    let transport = [Attribute::RequestedTransport(17)];
    let mut challenger = challenger;
    let mut samples = 0;
    for _ in 0..n {
        // A millisecond per allocation on the virtual clock: each 401 its own nonce.
        *clock += Duration::from_millis(1);
        let now = *clock;
        let mut tid = || {
            *seq += 1;
            let mut t = [0u8; 12];
            t[..8].copy_from_slice(&seq.to_be_bytes());
            TransactionId(t)
        };
        let mut auth = ClientAuth {
            username: cred.username.clone(),
            password: cred.password.clone(),
            realm: String::new(),
            nonce: String::new(),
        };
        let challenge = match challenger.as_deref_mut() {
            Some(other) => request(other, now, tid(), Method::Allocate, &transport, None),
            None => request(target, now, tid(), Method::Allocate, &transport, None),
        };
        assert!(auth.update_from_challenge(&Message::parse(&challenge).expect("parses")));
        let ok = request(
            target,
            now,
            tid(),
            Method::Allocate,
            &transport,
            Some(&auth),
        );
        assert_eq!(error_code(&Message::parse(&ok).expect("parses")), None);
        let gone = request(
            target,
            now,
            tid(),
            Method::Refresh,
            &[Attribute::Lifetime(0)],
            Some(&auth),
        );
        assert_eq!(error_code(&Message::parse(&gone).expect("parses")), None);
        samples += target.take_rtt_samples().len();
    }
    samples
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let mut args = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse::<u64>().ok());
    let rounds = args.next().unwrap_or(9);
    let n = args.next().unwrap_or(20_000);
    #[allow(clippy::disallowed_methods)]
    let start = Instant::now();
    let (mut target, mut sibling) = (server(start, 1), server(start, 2));
    let mut clock = start;
    let mut seq = 0u64;
    let (mut on, mut off) = (Vec::new(), Vec::new());
    let mut taken = (0, 0);
    for round in 0..rounds {
        for sampled in [round % 2 == 0, round % 2 == 1] {
            #[allow(clippy::disallowed_methods)]
            let t = Instant::now();
            let s = if sampled {
                allocations(&mut target, None, &mut clock, n, &mut seq)
            } else {
                allocations(&mut target, Some(&mut sibling), &mut clock, n, &mut seq)
            };
            let ns = t.elapsed().as_nanos() as f64 / n as f64;
            if sampled {
                on.push(ns);
                taken.0 += s;
            } else {
                off.push(ns);
                taken.1 += s;
            }
        }
    }
    assert_eq!(taken.1, 0, "a sibling's nonce must not be sampled");
    assert_eq!(taken.0 as u64, rounds * n, "every own nonce sampled once");
    let (on, off) = (median(on), median(off));
    println!("allocation exchange (401, Allocate, Refresh 0), {rounds} rounds of {n}:");
    println!("  sampling on   {on:>9.0} ns/allocation");
    println!("  sampling off  {off:>9.0} ns/allocation");
    println!("  on / off      {:>9.3}", on / off);
}
