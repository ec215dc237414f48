//! Setting allocations up, many at once: each client walks Allocate (401) → Allocate → ChannelBind
//! or CreatePermission (a TURN server), or sends one open request (the raw forwarder). Up to a
//! window of clients are in flight together; over UDP requests are retransmitted (RFC 8489
//! §6.2.1 timing, shortened; never over TCP or TLS, which are reliable) and a client that gets
//! no answer in time counts as failed.

use std::collections::BTreeMap;
use std::io;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use geoturn_relay_proto::client::{ClientAuth, encode_request, error_code};
use geoturn_relay_proto::stun::{Attribute, Class, Message, Method, TransactionId};

use crate::forwarder;
use crate::sys::Epoll;
use crate::traffic::Client;

/// First retransmission timeout; it doubles on each retry.
const RTO: Duration = Duration::from_millis(250);
/// Sends of one request before the client is given up.
const MAX_SENDS: u32 = 5;
/// The channel every allocation binds to its peer.
pub const CHANNEL: u16 = 0x4000;

/// What the clients set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetupKind {
    /// TURN with a channel per allocation.
    TurnChannel,
    /// TURN with a permission per allocation (data in Send/Data indications).
    TurnPermission,
    /// The raw forwarder's open request.
    Raw,
}

/// How the setup went.
#[derive(Debug, Clone, Default)]
pub struct SetupOutcome {
    /// Clients ready for traffic.
    pub ok: usize,
    /// Clients that failed.
    pub failed: usize,
    /// Wall time of the whole setup.
    pub elapsed: Duration,
    /// Why clients failed, with counts.
    pub errors: BTreeMap<String, usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Waiting,
    Challenge,
    Allocate,
    Bind,
    Open,
    Done,
}

struct Pending {
    stage: Stage,
    /// Requests started for this client: part of the transaction id, so a request repeated
    /// with a fresh nonce is a new transaction (not answered from the server's cache).
    generation: u8,
    tid: TransactionId,
    request: Vec<u8>,
    sent_at: Instant,
    sends: u32,
}

/// Sets up every client (in place: `ready` and `auth`), at most `window` at a time, within
/// `limit`. `credentials` are (username, password) for TURN.
pub fn set_up(
    clients: &mut [Client],
    kind: SetupKind,
    credentials: Option<(&str, &str)>,
    window: usize,
    limit: Duration,
) -> io::Result<SetupOutcome> {
    let started = Instant::now();
    let deadline = started + limit;
    let epoll = Epoll::new()?;
    for (i, c) in clients.iter().enumerate() {
        epoll.add(c.conn.as_raw_fd(), i as u64)?;
    }
    let mut out = SetupOutcome::default();
    let mut pending: Vec<Pending> = clients
        .iter()
        .map(|_| Pending {
            stage: Stage::Waiting,
            generation: 0,
            tid: TransactionId([0; 12]),
            request: Vec::new(),
            sent_at: started,
            sends: 0,
        })
        .collect();
    let mut active: Vec<usize> = Vec::with_capacity(window);
    let mut next = 0;
    let mut ready = [0u64; 256];
    let mut buf = vec![0u8; 4096];
    let mut last_scan = started;
    let window = window.max(1);
    while out.ok + out.failed < clients.len() {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        while active.len() < window && next < clients.len() {
            let (Some(c), Some(p)) = (clients.get_mut(next), pending.get_mut(next)) else {
                break;
            };
            let first = match kind {
                SetupKind::Raw => Stage::Open,
                _ => Stage::Challenge,
            };
            if let Some((user, pass)) = credentials {
                c.auth = Some(ClientAuth {
                    username: user.to_owned(),
                    password: pass.to_owned(),
                    realm: String::new(),
                    nonce: String::new(),
                });
            }
            start_stage(c, p, first, next, kind)?;
            active.push(next);
            next += 1;
        }
        let n = epoll.wait(&mut ready, 5)?;
        for &token in ready.iter().take(n) {
            let i = token as usize;
            let (Some(c), Some(p)) = (clients.get_mut(i), pending.get_mut(i)) else {
                continue;
            };
            // Several messages may wait (a retransmission's second answer): read them all.
            for _ in 0..8 {
                let len = match c.conn.recv(&mut buf) {
                    Ok(len) => len,
                    Err(e) if c.conn.is_stream() && e.kind() != io::ErrorKind::WouldBlock => {
                        // A closed or broken stream will not answer: fail the client now.
                        if p.stage != Stage::Done {
                            out.failed += 1;
                            *out.errors.entry(format!("stream: {e}")).or_default() += 1;
                            p.stage = Stage::Done;
                        }
                        let _ = epoll.remove(c.conn.as_raw_fd());
                        break;
                    }
                    Err(_) => break,
                };
                let Some(datagram) = buf.get(..len) else {
                    break;
                };
                match on_answer(c, p, datagram, i, kind) {
                    Ok(true) => {
                        out.ok += 1;
                        c.ready = true;
                    }
                    Ok(false) => {}
                    Err(why) => {
                        out.failed += 1;
                        *out.errors.entry(why).or_default() += 1;
                        p.stage = Stage::Done;
                    }
                }
            }
        }
        if now.duration_since(last_scan) >= Duration::from_millis(20) {
            last_scan = now;
            for &i in &active {
                let (Some(c), Some(p)) = (clients.get_mut(i), pending.get_mut(i)) else {
                    continue;
                };
                if p.stage == Stage::Done || now < p.sent_at + RTO * (1 << (p.sends - 1)) {
                    continue;
                }
                if p.sends >= MAX_SENDS {
                    out.failed += 1;
                    *out.errors.entry("no answer".into()).or_default() += 1;
                    p.stage = Stage::Done;
                    continue;
                }
                // A stream delivers or breaks: the timer only bounds the wait.
                if !c.conn.is_stream() {
                    let _ = c.conn.send(&p.request);
                }
                p.sends += 1;
                p.sent_at = now;
            }
        }
        active.retain(|&i| pending.get(i).is_some_and(|p| p.stage != Stage::Done));
    }
    let unfinished = clients.len() - out.ok - out.failed;
    if unfinished > 0 {
        out.failed += unfinished;
        *out.errors.entry("setup time limit".into()).or_default() += unfinished;
    }
    out.elapsed = started.elapsed();
    for c in clients.iter() {
        let _ = epoll.remove(c.conn.as_raw_fd());
    }
    Ok(out)
}

fn tid(index: usize, stage: Stage, generation: u8) -> TransactionId {
    let mut t = [0u8; 12];
    t[..4].copy_from_slice(b"GTB:");
    t[4..8].copy_from_slice(&(index as u32).to_be_bytes());
    t[8] = stage as u8;
    t[9] = generation;
    t[10..12].copy_from_slice(&(std::process::id() as u16).to_be_bytes());
    TransactionId(t)
}

fn start_stage(
    c: &mut Client,
    p: &mut Pending,
    stage: Stage,
    index: usize,
    kind: SetupKind,
) -> io::Result<()> {
    let generation = p.generation.wrapping_add(1);
    let id = tid(index, stage, generation);
    let auth = c.auth.as_ref().filter(|a| !a.nonce.is_empty());
    let encode = |method, attrs: &[Attribute<'_>], auth| {
        encode_request(method, Class::Request, id, attrs, auth).map_err(io::Error::other)
    };
    let request = match stage {
        Stage::Challenge => encode(Method::Allocate, &[Attribute::RequestedTransport(17)], None)?,
        Stage::Allocate => encode(Method::Allocate, &[Attribute::RequestedTransport(17)], auth)?,
        Stage::Bind if kind == SetupKind::TurnChannel => encode(
            Method::ChannelBind,
            &[
                Attribute::ChannelNumber(CHANNEL),
                Attribute::XorPeerAddress(c.peer),
            ],
            auth,
        )?,
        Stage::Bind => encode(
            Method::CreatePermission,
            &[Attribute::XorPeerAddress(c.peer)],
            auth,
        )?,
        Stage::Open => forwarder::open_request(c.peer),
        Stage::Waiting | Stage::Done => return Ok(()),
    };
    // A full socket buffer is a lost request: the retransmission timer covers it.
    let _ = c.conn.send(&request);
    *p = Pending {
        stage,
        generation,
        tid: id,
        request,
        sent_at: Instant::now(),
        sends: 1,
    };
    Ok(())
}

/// Handles one answer; `Ok(true)` when the client is ready, `Err` when it failed.
fn on_answer(
    c: &mut Client,
    p: &mut Pending,
    datagram: &[u8],
    index: usize,
    kind: SetupKind,
) -> Result<bool, String> {
    if p.stage == Stage::Done {
        return Ok(false);
    }
    if p.stage == Stage::Open {
        return Ok(match forwarder::parse_open_response(datagram) {
            Some(_) => {
                p.stage = Stage::Done;
                true
            }
            None => false,
        });
    }
    let Ok(m) = Message::parse(datagram) else {
        return Ok(false);
    };
    if *m.transaction_id() != p.tid || m.class() == Class::Indication {
        // An answer to an earlier transmission of a finished step, or stray data.
        return Ok(false);
    }
    let code = error_code(&m);
    let io_err = |e: io::Error| e.to_string();
    match (p.stage, code) {
        (Stage::Challenge, Some(401)) | (Stage::Allocate | Stage::Bind, Some(438)) => {
            if p.generation >= 6 {
                return Err("challenged again and again".into());
            }
            let Some(auth) = c.auth.as_mut() else {
                return Err("the server asks for credentials: give --secret".into());
            };
            if !auth.update_from_challenge(&m) {
                return Err(format!("{} without REALM/NONCE", code.unwrap_or(0)));
            }
            let stage = if p.stage == Stage::Challenge {
                Stage::Allocate
            } else {
                p.stage
            };
            start_stage(c, p, stage, index, kind).map_err(io_err)?;
            Ok(false)
        }
        (Stage::Allocate, None) => {
            start_stage(c, p, Stage::Bind, index, kind).map_err(io_err)?;
            Ok(false)
        }
        (Stage::Bind, None) => {
            p.stage = Stage::Done;
            Ok(true)
        }
        (stage, Some(code)) => Err(format!("{stage:?}: error {code}")),
        (stage, None) => Err(format!("{stage:?}: unexpected success")),
    }
}
