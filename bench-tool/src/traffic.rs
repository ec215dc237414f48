//! The traffic: client threads that send paced, timestamped packets on their share of the
//! allocations and read the echoes back, and the in-process UDP echo peers.
//!
//! A packet's payload starts with [`STAMP_LEN`] bytes: `"GB"`, the step number, a zero byte,
//! the allocation index (u32), a sequence number (u64) and the send time in nanoseconds since
//! the run began (u64), all little-endian; the rest is zeros. The echo comes back with the same
//! payload, so the receiving thread computes the round trip from its own clock.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use geoturn_relay_proto::stun::attribute::types;
use geoturn_relay_proto::stun::channel_data::{self, ChannelData};
use geoturn_relay_proto::stun::{
    Attribute, Class, Message, MessageType, MessageWriter, Method, PacketKind, TransactionId,
    classify,
};

use crate::conn::ClientConn;
use crate::histogram::Histogram;
use crate::sys::{self, BATCH, Epoll, RecvMeta};
use geoturn_relay::net::batch::{Gso, Outgoing, send_batch};

/// Bytes of the payload the generator uses itself; payloads must be at least this long.
pub const STAMP_LEN: usize = 24;
/// How often a client thread checks which allocations are due to send.
const SEND_PASS: Duration = Duration::from_micros(200);
/// Most packets one sending pass sends before the thread reads its sockets again.
const PASS_BUDGET: usize = 256;
/// How far an allocation may fall behind its schedule before the excess is skipped.
const MAX_BACKLOG: Duration = Duration::from_millis(20);

/// How packets are framed towards the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// The payload alone (raw forwarder, or straight to the echo peer).
    Raw,
    /// ChannelData on this channel.
    Channel(u16),
    /// A Send indication to the allocation's peer.
    SendIndication,
}

/// One client socket and what the generator knows about it.
#[derive(Debug)]
pub struct Client {
    /// Its connection to the server (or, in direct mode, a UDP socket connected to the echo
    /// peer).
    pub conn: ClientConn,
    /// The echo peer its data goes to.
    pub peer: SocketAddr,
    /// Set up successfully: it takes part in the traffic.
    pub ready: bool,
    /// Credentials and nonce after setup (TURN), to free the allocation at the end.
    pub auth: Option<geoturn_relay_proto::client::ClientAuth>,
}

/// A packet template: the framed packet with a zero payload, and where the payload starts.
#[derive(Debug, Clone)]
pub struct Template {
    bytes: Vec<u8>,
    payload_at: usize,
}

impl Template {
    /// The template of `payload`-byte packets to `peer` framed as `framing`; on a `stream`
    /// ChannelData is padded to 4 bytes (RFC 8656 §12.5).
    pub fn new(
        framing: Framing,
        peer: SocketAddr,
        payload: usize,
        stream: bool,
    ) -> io::Result<Self> {
        let zeros = vec![0u8; payload];
        match framing {
            Framing::Raw => Ok(Self {
                bytes: zeros,
                payload_at: 0,
            }),
            Framing::Channel(number) => {
                let mut bytes = vec![0u8; payload + channel_data::HEADER_LEN + 3];
                let n = channel_data::encode(&mut bytes, number, &zeros, stream)
                    .map_err(io::Error::other)?;
                bytes.truncate(n);
                Ok(Self {
                    bytes,
                    payload_at: channel_data::HEADER_LEN,
                })
            }
            Framing::SendIndication => {
                // No FINGERPRINT: the payload changes per packet and nothing requires one.
                let mut bytes = vec![0u8; payload + 64];
                let typ = MessageType::new(Method::Send, Class::Indication);
                let mut w = MessageWriter::new(&mut bytes, typ, TransactionId(*b"geoturnbench"))
                    .map_err(io::Error::other)?;
                w.add(&Attribute::XorPeerAddress(peer))
                    .map_err(io::Error::other)?;
                w.add(&Attribute::Data(&zeros)).map_err(io::Error::other)?;
                let n = w.finish();
                bytes.truncate(n);
                // DATA is the last attribute: its value ends the message, before its padding.
                let payload_at = n - ((payload + 3) & !3);
                Ok(Self { bytes, payload_at })
            }
        }
    }

    /// Length of a framed packet.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// True for an empty template (never: payloads are at least [`STAMP_LEN`]).
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

fn write_stamp(payload: &mut [u8], step: u8, index: u32, seq: u64, sent_ns: u64) {
    let mut stamp = [0u8; STAMP_LEN];
    stamp[0] = b'G';
    stamp[1] = b'B';
    stamp[2] = step;
    stamp[4..8].copy_from_slice(&index.to_le_bytes());
    stamp[8..16].copy_from_slice(&seq.to_le_bytes());
    stamp[16..24].copy_from_slice(&sent_ns.to_le_bytes());
    if let Some(p) = payload.get_mut(..STAMP_LEN) {
        p.copy_from_slice(&stamp);
    }
}

/// (step, allocation index, send time) of an echoed payload.
fn read_stamp(payload: &[u8]) -> Option<(u8, u32, u64)> {
    let s: &[u8; STAMP_LEN] = payload.get(..STAMP_LEN)?.try_into().ok()?;
    if s[0] != b'G' || s[1] != b'B' {
        return None;
    }
    let index = u32::from_le_bytes(s[4..8].try_into().ok()?);
    let sent = u64::from_le_bytes(s[16..24].try_into().ok()?);
    Some((s[2], index, sent))
}

/// The application payload of a datagram from the server.
fn payload_of(framing: Framing, datagram: &[u8]) -> Option<&[u8]> {
    if framing == Framing::Raw {
        return Some(datagram);
    }
    match classify(datagram) {
        PacketKind::ChannelData => ChannelData::parse(datagram).ok().map(|cd| cd.payload),
        PacketKind::Stun => {
            let m = Message::parse(datagram).ok()?;
            if (m.method(), m.class()) != (Method::Data, Class::Indication) {
                return None;
            }
            m.get(types::DATA)
        }
        PacketKind::Other => None,
    }
}

/// What one client thread counted in one step.
#[derive(Debug, Clone, Default)]
pub struct StepCounts {
    /// Packets the schedule asked for.
    pub offered: u64,
    /// Packets the kernel took.
    pub sent: u64,
    /// Packets the kernel refused (client socket buffer full): generator-side, not loss.
    pub send_failed: u64,
    /// Packets skipped because the generator fell behind its schedule (it could not send
    /// that fast): generator-side, not loss.
    pub behind: u64,
    /// Echoes of this step received in time.
    pub received: u64,
    /// Datagrams of other steps or unreadable ones (late echoes).
    pub stray: u64,
    /// Round-trip times of the echoes, nanoseconds.
    pub rtt: Histogram,
}

impl StepCounts {
    /// Adds another thread's counts.
    pub fn merge(&mut self, o: &StepCounts) {
        self.offered += o.offered;
        self.sent += o.sent;
        self.send_failed += o.send_failed;
        self.behind += o.behind;
        self.received += o.received;
        self.stray += o.stray;
        self.rtt.merge(&o.rtt);
    }
}

/// One step of the schedule as a client thread runs it.
#[derive(Debug, Clone, Copy)]
pub struct Step {
    /// Tag carried in the payload (the warm-up is 0, measured steps count from 1).
    pub tag: u8,
    /// Packets per second per allocation.
    pub rate: f64,
    /// Sending time.
    pub duration: Duration,
    /// Time after sending to wait for the last echoes.
    pub drain: Duration,
}

/// A client thread's allocations and buffers.
pub struct ClientThread {
    clients: Vec<(u32, Client, Template)>,
    framing: Framing,
    epoll: Epoll,
    sent: Vec<u64>,
    send_buf: Vec<u8>,
    recv_buf: Vec<u8>,
    slot: usize,
    meta: [RecvMeta; BATCH],
    epoch: Instant,
    /// Where the next sending pass starts (round robin when the budget runs out).
    next_client: usize,
    /// Where each client's socket is connected (its sends name it, for GSO runs).
    targets: Vec<SocketAddr>,
    gso: Gso,
}

impl ClientThread {
    /// A thread for `clients` (with their allocation indices); `epoch` is the run's clock origin.
    pub fn new(
        clients: Vec<(u32, Client)>,
        framing: Framing,
        payload: usize,
        epoch: Instant,
        gso: bool,
    ) -> io::Result<Self> {
        let epoll = Epoll::new()?;
        let mut with_templates = Vec::with_capacity(clients.len());
        let mut targets = Vec::with_capacity(clients.len());
        for (i, (index, c)) in clients.into_iter().enumerate() {
            epoll.add(c.conn.as_raw_fd(), i as u64)?;
            targets.push(match &c.conn {
                ClientConn::Udp(sock) => sock.peer_addr()?,
                // Streams name no address per message.
                ClientConn::Stream(_) => SocketAddr::from(([0, 0, 0, 0], 0)),
            });
            let t = Template::new(framing, c.peer, payload, c.conn.is_stream())?;
            with_templates.push((index, c, t));
        }
        let packet = with_templates.first().map_or(payload, |(_, _, t)| t.len());
        // Room for any framing the server adds (a Data indication with an IPv6 peer: 48 bytes).
        let slot = (packet + 128).next_multiple_of(64);
        Ok(Self {
            sent: vec![0; with_templates.len()],
            clients: with_templates,
            framing,
            epoll,
            send_buf: vec![0; packet * BATCH],
            recv_buf: vec![0; slot * BATCH],
            slot,
            meta: [RecvMeta::default(); BATCH],
            epoch,
            next_client: 0,
            targets,
            gso: Gso::new(gso),
        })
    }

    /// Gives the clients back.
    pub fn into_clients(self) -> Vec<(u32, Client)> {
        self.clients.into_iter().map(|(i, c, _)| (i, c)).collect()
    }

    /// Runs one step: paced sending for `step.duration`, then waits up to `step.drain` for the
    /// echoes still on their way. Sending never starves receiving: a pass sends at most
    /// [`PASS_BUDGET`] packets, then the thread reads what has arrived; an allocation more than
    /// [`MAX_BACKLOG`] behind its schedule skips the excess (counted as `behind`).
    pub fn run_step(&mut self, step: Step) -> StepCounts {
        let mut counts = StepCounts::default();
        self.sent.iter_mut().for_each(|s| *s = 0);
        let t0 = Instant::now();
        let send_until = t0 + step.duration;
        let end = send_until + step.drain;
        let mut next_pass = t0;
        let mut ready = [0u64; 256];
        let mut backlog = false;
        loop {
            let now = Instant::now();
            if now >= end || (now >= send_until && counts.received >= counts.sent) {
                break;
            }
            if now < send_until && now >= next_pass {
                backlog = self.send_due(step, (now - t0).as_secs_f64(), &mut counts);
                next_pass = if backlog { now } else { now + SEND_PASS };
            }
            let timeout = if backlog && now < send_until { 0 } else { 1 };
            let n = self.epoll.wait(&mut ready, timeout).unwrap_or(0);
            for &token in ready.iter().take(n) {
                self.receive(token as usize, step.tag, &mut counts);
            }
        }
        // The schedule's count for the whole window, whatever the pacing managed.
        let per_client = (step.rate * step.duration.as_secs_f64()) as u64;
        counts.offered = per_client * self.clients.len() as u64;
        // What the window ended with still unsent is behind too.
        for sent in &self.sent {
            counts.behind += per_client.saturating_sub(*sent);
        }
        counts
    }

    /// Sends what is due, within the pass budget; true when some is left for the next pass.
    fn send_due(&mut self, step: Step, elapsed: f64, counts: &mut StepCounts) -> bool {
        let sent_so_far = step.rate * elapsed;
        let max_backlog = ((step.rate * MAX_BACKLOG.as_secs_f64()) as u64).max(BATCH as u64);
        let now_ns = self.epoch.elapsed().as_nanos() as u64;
        let mut budget = PASS_BUDGET;
        let mut left = false;
        let n = self.clients.len();
        // Start where the last pass stopped, so a short budget serves everyone in turn.
        for k in 0..n {
            let i = (self.next_client + k) % n;
            let (Some((index, client, template)), Some(sent), Some(&to)) = (
                self.clients.get_mut(i),
                self.sent.get_mut(i),
                self.targets.get(i),
            ) else {
                continue;
            };
            // Each allocation's schedule is offset by its share of one interval, so that
            // thousands of slow senders do not all fire in the same pass.
            let phase = i as f64 / n as f64;
            let target = ((sent_so_far + phase) as u64)
                .min((step.rate * step.duration.as_secs_f64()) as u64);
            let mut due = target.saturating_sub(*sent);
            if due > max_backlog {
                counts.behind += due - max_backlog;
                *sent += due - max_backlog;
                due = max_backlog;
            }
            if budget == 0 {
                left |= due > 0;
                continue;
            }
            while due > 0 && budget > 0 {
                let k = (due as usize).min(BATCH).min(budget);
                let len = template.len();
                for (j, slot) in self.send_buf.chunks_exact_mut(len).take(k).enumerate() {
                    slot.copy_from_slice(&template.bytes);
                    if let Some(p) = slot.get_mut(template.payload_at..) {
                        write_stamp(p, step.tag, *index, *sent + j as u64, now_ns);
                    }
                }
                let took = match &mut client.conn {
                    ClientConn::Udp(sock) => {
                        let mut msgs = [Outgoing::new(to, &[]); BATCH];
                        for (m, slot) in msgs.iter_mut().zip(self.send_buf.chunks_exact(len)) {
                            m.data = slot;
                        }
                        let batch = msgs.get(..k).unwrap_or_default();
                        send_batch(sock, batch, &self.gso).unwrap_or(0)
                    }
                    // Frames back to back on the stream; a full stream refuses the rest.
                    ClientConn::Stream(stream) => self
                        .send_buf
                        .chunks_exact(len)
                        .take(k)
                        .take_while(|frame| stream.send(frame).is_ok())
                        .count(),
                };
                counts.sent += took as u64;
                counts.send_failed += (k - took) as u64;
                *sent += k as u64;
                due -= k as u64;
                budget -= k;
            }
            if due > 0 {
                left = true;
                self.next_client = i;
            }
        }
        if !left {
            self.next_client = 0;
        }
        left
    }

    fn receive(&mut self, i: usize, tag: u8, counts: &mut StepCounts) {
        let Some((_, client, _)) = self.clients.get_mut(i) else {
            return;
        };
        let client = match &mut client.conn {
            ClientConn::Udp(sock) => &*sock,
            ClientConn::Stream(stream) => {
                let framing = self.framing;
                if stream.fill().and_then(|()| stream.flush()).is_err() {
                    // Closed or broken: no more readiness for it (its sends now fail).
                    let _ = self.epoll.remove(stream.as_raw_fd());
                }
                let now_ns = self.epoch.elapsed().as_nanos() as u64;
                // Bounded: the input buffer holds at most MAX_PENDING_IN bytes of frames.
                while let Ok(Some(stamp)) =
                    stream.take_frame(|frame| payload_of(framing, frame).and_then(read_stamp))
                {
                    count_echo(stamp, tag, now_ns, counts);
                }
                return;
            }
        };
        // Level-triggered: what one call leaves behind is reported again.
        let Ok(got) = sys::recv_mmsg(client, &mut self.recv_buf, self.slot, &mut self.meta, false)
        else {
            return;
        };
        let now_ns = self.epoch.elapsed().as_nanos() as u64;
        for (meta, area) in self
            .meta
            .iter()
            .zip(self.recv_buf.chunks_exact(self.slot))
            .take(got)
        {
            let stamp = area
                .get(..meta.len.min(self.slot))
                .and_then(|d| payload_of(self.framing, d))
                .and_then(read_stamp);
            count_echo(stamp, tag, now_ns, counts);
        }
    }
}

/// Counts one message from the server: an echo of this step (with its round trip) or a stray.
fn count_echo(stamp: Option<(u8, u32, u64)>, tag: u8, now_ns: u64, counts: &mut StepCounts) {
    match stamp {
        Some((t, _, sent_ns)) if t == tag => {
            counts.received += 1;
            counts.rtt.record(now_ns.saturating_sub(sent_ns));
        }
        _ => counts.stray += 1,
    }
}

/// In-process UDP echo peers, one thread each; stopped when dropped.
#[derive(Debug)]
pub struct EchoPeers {
    addrs: Vec<SocketAddr>,
    stop: Arc<AtomicBool>,
    echoed: Arc<AtomicU64>,
    threads: Vec<JoinHandle<()>>,
}

impl EchoPeers {
    /// Starts `count` echo peers on `ip`, each running at most `max_runtime`.
    pub fn start(
        ip: std::net::IpAddr,
        count: usize,
        buffer: usize,
        gso: bool,
        max_runtime: Duration,
    ) -> io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let echoed = Arc::new(AtomicU64::new(0));
        let mut addrs = Vec::new();
        let mut threads = Vec::new();
        for i in 0..count {
            let sock = socket2::Socket::new(
                socket2::Domain::for_address(SocketAddr::new(ip, 0)),
                socket2::Type::DGRAM,
                Some(socket2::Protocol::UDP),
            )?;
            let _ = sock.set_recv_buffer_size(buffer);
            let _ = sock.set_send_buffer_size(buffer);
            sock.bind(&SocketAddr::new(ip, 0).into())?;
            let sock: UdpSocket = sock.into();
            // Blocking with a timeout, so the stop flag is seen within 50 ms.
            sock.set_read_timeout(Some(Duration::from_millis(50)))?;
            addrs.push(sock.local_addr()?);
            let (stop, echoed) = (stop.clone(), echoed.clone());
            threads.push(
                std::thread::Builder::new()
                    .name(format!("bench-echo-{i}"))
                    .spawn(move || echo_loop(&sock, &stop, &echoed, &Gso::new(gso), max_runtime))?,
            );
        }
        Ok(Self {
            addrs,
            stop,
            echoed,
            threads,
        })
    }

    /// The peers' addresses.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Datagrams echoed so far (all peers): what the server delivered to them.
    pub fn echoed(&self) -> u64 {
        self.echoed.load(Ordering::Relaxed)
    }
}

impl Drop for EchoPeers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn echo_loop(
    sock: &UdpSocket,
    stop: &AtomicBool,
    echoed: &AtomicU64,
    gso: &Gso,
    max_runtime: Duration,
) {
    const SLOT: usize = 2048;
    let started = Instant::now();
    let mut buf = vec![0u8; SLOT * BATCH];
    let mut meta = [RecvMeta::default(); BATCH];
    while !stop.load(Ordering::Relaxed) && started.elapsed() < max_runtime {
        let got = match sys::recv_mmsg(sock, &mut buf, SLOT, &mut meta, true) {
            Ok(n) => n,
            Err(_) => continue,
        };
        let unspecified = SocketAddr::from(([0, 0, 0, 0], 0));
        let mut msgs = [Outgoing::new(unspecified, &[]); BATCH];
        for ((m, area), r) in msgs
            .iter_mut()
            .zip(buf.chunks_exact(SLOT))
            .zip(&meta)
            .take(got)
        {
            *m = Outgoing::new(r.from, area.get(..r.len.min(SLOT)).unwrap_or_default());
        }
        let _ = send_batch(sock, msgs.get(..got).unwrap_or_default(), gso);
        echoed.fetch_add(got as u64, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use geoturn_relay_proto::stun::framing::frame_len;

    #[test]
    fn stamps_survive_every_framing() {
        let peer: SocketAddr = "127.0.0.1:9".parse().unwrap();
        // 161 bytes: ChannelData needs padding on a stream.
        for (framing, stream) in [
            (Framing::Raw, false),
            (Framing::Channel(0x4000), false),
            (Framing::Channel(0x4000), true),
            (Framing::SendIndication, false),
            (Framing::SendIndication, true),
        ] {
            let t = Template::new(framing, peer, 161, stream).unwrap();
            if stream {
                assert_eq!(t.len() % 4, 0, "{framing:?} on a stream is padded");
                assert_eq!(frame_len(&t.bytes), Ok(Some(t.len())), "{framing:?}");
            } else if framing == Framing::Channel(0x4000) {
                assert_eq!(t.len(), 4 + 161);
            }
            let mut packet = t.bytes.clone();
            write_stamp(&mut packet[t.payload_at..], 3, 17, 99, 123_456);
            // What the server sends back: the same framing for channels; a Data indication
            // stands in for the Send indication (both carry DATA).
            let back = if framing == Framing::SendIndication {
                let payload = &packet[t.payload_at..t.payload_at + 161];
                let mut b = vec![0u8; 256];
                let typ = MessageType::new(Method::Data, Class::Indication);
                let mut w = MessageWriter::new(&mut b, typ, TransactionId([1; 12])).unwrap();
                w.add(&Attribute::XorPeerAddress(peer)).unwrap();
                w.add(&Attribute::Data(payload)).unwrap();
                let n = w.finish();
                b.truncate(n);
                b
            } else {
                packet.clone()
            };
            let p = payload_of(framing, &back).unwrap();
            assert_eq!(p.len(), 161, "{framing:?}");
            assert_eq!(read_stamp(p), Some((3, 17, 123_456)), "{framing:?}");
        }
        assert_eq!(read_stamp(&[0u8; 24]), None);
    }
}
