//! The raw UDP forwarder: the same socket topology as a TURN relay (one listening socket for
//! clients, one "relayed" socket per client towards its peer) with no TURN logic at all, so its
//! packets per second are this machine's limit for relaying.
//!
//! A client opens a flow with one small datagram naming its peer ([`open_request`]); the
//! forwarder binds a socket for it, connects that socket to the peer and answers with the
//! socket's port ([`parse_open_response`]). From then on every datagram from the client is sent,
//! unchanged, from the flow's socket to the peer, and every datagram the peer sends back goes,
//! unchanged, from the listening socket to the client. Datagrams move in batches: `recvmmsg` on
//! the listener, one `sendmmsg` per flow for what a batch holds for it, and one `sendmmsg` on
//! the listener for everything the ready flow sockets received in one `epoll_wait`. Sends go
//! through the relay's own `geoturn_relay::net::batch::send_batch`, with UDP GSO when
//! [`ForwarderConfig::gso`] is on, so the forwarder and the relay differ only in TURN logic.
//! Each thread has its own `SO_REUSEPORT` listener and flows, like the relay's workers.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use geoturn_relay::net::batch::{self as relay_batch, Gso, Outgoing};
use socket2::{Domain, Protocol, Socket, Type};

use crate::sys::{self, BATCH, Epoll, RecvMeta};

/// First bytes of the forwarder's control datagrams.
pub const MAGIC: &[u8; 4] = b"GTFW";
const OP_OPEN: u8 = 1;
const OP_OPENED: u8 = 2;
const OP_CLOSE: u8 = 3;
/// Largest datagram forwarded whole (longer ones are cut).
const SLOT: usize = 2048;
/// Batches read from the listener per wake-up, so flow sockets get their turn.
const LISTENER_BATCHES: usize = 8;
const LISTENER: u64 = u64::MAX;

/// The datagram that opens a flow to `peer`.
pub fn open_request(peer: SocketAddr) -> Vec<u8> {
    let mut v = MAGIC.to_vec();
    v.push(OP_OPEN);
    match peer.ip() {
        IpAddr::V4(ip) => {
            v.push(4);
            v.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            v.push(6);
            v.extend_from_slice(&ip.octets());
        }
    }
    v.extend_from_slice(&peer.port().to_be_bytes());
    v
}

/// The datagram that closes the sender's flow.
pub fn close_request() -> Vec<u8> {
    let mut v = MAGIC.to_vec();
    v.push(OP_CLOSE);
    v
}

/// The flow socket's port from the forwarder's answer to [`open_request`].
pub fn parse_open_response(datagram: &[u8]) -> Option<u16> {
    let rest = datagram.strip_prefix(MAGIC.as_slice())?;
    match rest {
        [OP_OPENED, hi, lo] => Some(u16::from_be_bytes([*hi, *lo])),
        _ => None,
    }
}

fn parse_open(datagram: &[u8]) -> Option<SocketAddr> {
    let rest = datagram.strip_prefix(MAGIC.as_slice())?;
    let (op, rest) = rest.split_first()?;
    if *op != OP_OPEN {
        return None;
    }
    let (family, rest) = rest.split_first()?;
    let (ip, port) = match (family, rest.len()) {
        (4, 6) => {
            let o: [u8; 4] = rest.get(..4)?.try_into().ok()?;
            (IpAddr::from(o), rest.get(4..6)?)
        }
        (6, 18) => {
            let o: [u8; 16] = rest.get(..16)?.try_into().ok()?;
            (IpAddr::from(o), rest.get(16..18)?)
        }
        _ => return None,
    };
    let port = u16::from_be_bytes(port.try_into().ok()?);
    Some(SocketAddr::new(ip, port))
}

/// Settings of a forwarder.
#[derive(Debug, Clone)]
pub struct ForwarderConfig {
    /// Where clients send.
    pub listen: SocketAddr,
    /// Threads, each with its own listener (`SO_REUSEPORT`) and flows.
    pub threads: usize,
    /// Most flows per thread; further opens are ignored.
    pub max_flows: usize,
    /// Receive and send buffer of every socket, bytes (the kernel caps it at `rmem_max`).
    pub socket_buffer: usize,
    /// The longest the forwarder runs, whatever happens.
    pub max_runtime: Duration,
    /// Send runs of datagrams to one destination as one UDP GSO send, as the relay does.
    pub gso: bool,
    /// The address flow sockets bind, like a relay's `--relay-ip` [default: the listener's
    /// IP]; in a namespace with two interfaces it puts each side's traffic on its own one.
    pub relay_ip: Option<IpAddr>,
}

impl Default for ForwarderConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            threads: 1,
            max_flows: 20_000,
            socket_buffer: 4 << 20,
            max_runtime: Duration::from_secs(3600),
            gso: true,
            relay_ip: None,
        }
    }
}

/// A running forwarder; stopped when dropped.
#[derive(Debug)]
pub struct Forwarder {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    forwarded: Arc<AtomicU64>,
    threads: Vec<JoinHandle<io::Result<()>>>,
}

fn bind_listener(addr: SocketAddr, buffer: usize) -> io::Result<UdpSocket> {
    let sock = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        sock.set_only_v6(true)?;
    }
    sock.set_reuse_port(true)?;
    sock.set_nonblocking(true)?;
    let _ = sock.set_recv_buffer_size(buffer);
    let _ = sock.set_send_buffer_size(buffer);
    sock.bind(&addr.into())?;
    Ok(sock.into())
}

impl Forwarder {
    /// Binds the listeners and starts the threads.
    pub fn start(config: &ForwarderConfig) -> io::Result<Self> {
        let threads = config.threads.clamp(1, 64);
        let first = bind_listener(config.listen, config.socket_buffer)?;
        let addr = first.local_addr()?;
        let mut listeners = vec![first];
        for _ in 1..threads {
            listeners.push(bind_listener(addr, config.socket_buffer)?);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let forwarded = Arc::new(AtomicU64::new(0));
        let deadline = Instant::now() + config.max_runtime;
        let mut handles = Vec::new();
        for (i, listener) in listeners.into_iter().enumerate() {
            let (stop, forwarded) = (stop.clone(), forwarded.clone());
            let (max_flows, buffer, gso) = (config.max_flows, config.socket_buffer, config.gso);
            let relay_ip = config.relay_ip;
            handles.push(
                std::thread::Builder::new()
                    .name(format!("raw-forwarder-{i}"))
                    .spawn(move || {
                        FlowThread::new(listener, max_flows, buffer, Gso::new(gso), relay_ip)?
                            .run(&stop, &forwarded, deadline)
                    })?,
            );
        }
        Ok(Self {
            addr,
            stop,
            forwarded,
            threads: handles,
        })
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Datagrams forwarded so far, both directions.
    pub fn forwarded(&self) -> u64 {
        self.forwarded.load(Ordering::Relaxed)
    }

    /// True once every thread has stopped (runtime limit or error).
    pub fn finished(&self) -> bool {
        self.threads.iter().all(|t| t.is_finished())
    }

    /// Stops the threads and reports the first error any of them had.
    pub fn stop(mut self) -> io::Result<()> {
        self.stop_threads()
    }

    fn stop_threads(&mut self) -> io::Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        let mut result = Ok(());
        for t in self.threads.drain(..) {
            match t.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => result = result.and(Err(e)),
                Err(_) => result = result.and(Err(io::Error::other("forwarder thread panicked"))),
            }
        }
        result
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        let _ = self.stop_threads();
    }
}

struct Flow {
    client: SocketAddr,
    peer: SocketAddr,
    sock: UdpSocket,
}

struct FlowThread {
    listener: UdpSocket,
    epoll: Epoll,
    max_flows: usize,
    buffer: usize,
    /// Flows by client address, and by token (their index).
    by_client: HashMap<SocketAddr, usize>,
    flows: Vec<Option<Flow>>,
    free: Vec<usize>,
    in_buf: Vec<u8>,
    in_meta: [RecvMeta; BATCH],
    out_buf: Vec<u8>,
    /// Datagrams waiting in `out_buf` for the listener: (length, client).
    out: Vec<(usize, SocketAddr)>,
    gso: Gso,
    /// What flow sockets bind (the listener's IP when `None`).
    relay_ip: Option<IpAddr>,
}

impl FlowThread {
    fn new(
        listener: UdpSocket,
        max_flows: usize,
        buffer: usize,
        gso: Gso,
        relay_ip: Option<IpAddr>,
    ) -> io::Result<Self> {
        let epoll = Epoll::new()?;
        epoll.add(listener.as_raw_fd(), LISTENER)?;
        Ok(Self {
            listener,
            epoll,
            max_flows,
            buffer,
            by_client: HashMap::new(),
            flows: Vec::new(),
            free: Vec::new(),
            in_buf: vec![0; SLOT * BATCH],
            in_meta: [RecvMeta::default(); BATCH],
            out_buf: vec![0; SLOT * BATCH],
            out: Vec::with_capacity(BATCH),
            gso,
            relay_ip,
        })
    }

    fn run(
        mut self,
        stop: &AtomicBool,
        forwarded: &AtomicU64,
        deadline: Instant,
    ) -> io::Result<()> {
        let mut ready = [0u64; 256];
        while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
            let n = self.epoll.wait(&mut ready, 100)?;
            let mut count = 0u64;
            for &token in ready.iter().take(n) {
                if token == LISTENER {
                    count += self.read_clients()?;
                } else {
                    count += self.read_peer(token as usize);
                }
            }
            count += self.flush_to_clients();
            forwarded.fetch_add(count, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Reads the listener: control datagrams open or close flows, the rest go to the peers.
    fn read_clients(&mut self) -> io::Result<u64> {
        let mut forwarded = 0;
        for _ in 0..LISTENER_BATCHES {
            let got = match sys::recv_mmsg(
                &self.listener,
                &mut self.in_buf,
                SLOT,
                &mut self.in_meta,
                false,
            ) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                // ICMP errors of earlier sends surface here; keep serving.
                Err(_) => break,
            };
            // (flow, slot) for every data datagram, grouped by flow so each flow's datagrams
            // leave in one sendmmsg (stable: order within a flow is kept).
            let mut data: [(usize, usize); BATCH] = [(0, 0); BATCH];
            let mut n_data = 0;
            for i in 0..got {
                let Some(meta) = self.in_meta.get(i).copied() else {
                    continue;
                };
                let Some(packet) = self.in_buf.get(i * SLOT..i * SLOT + meta.len.min(SLOT)) else {
                    continue;
                };
                let flow = self.by_client.get(&meta.from).copied();
                if packet.starts_with(MAGIC) {
                    // Control datagrams are short: copy one out to act on it.
                    let mut ctl = [0u8; 32];
                    let n = packet.len().min(ctl.len());
                    if let (Some(dst), Some(src)) = (ctl.get_mut(..n), packet.get(..n)) {
                        dst.copy_from_slice(src);
                    }
                    self.control(meta.from, flow, ctl.get(..n).unwrap_or_default());
                    continue;
                }
                if let (Some(flow), Some(d)) = (flow, data.get_mut(n_data)) {
                    *d = (flow, i);
                    n_data += 1;
                }
            }
            let data = data.get_mut(..n_data).unwrap_or_default();
            data.sort_by_key(|(flow, _)| *flow);
            let unspecified = SocketAddr::from(([0, 0, 0, 0], 0));
            let mut msgs: [Outgoing<'_>; BATCH] = [Outgoing::new(unspecified, &[]); BATCH];
            let mut start = 0;
            while let Some(&(flow, _)) = data.get(start) {
                let run = data
                    .get(start..)
                    .unwrap_or_default()
                    .iter()
                    .take_while(|(f, _)| *f == flow)
                    .count();
                let mut n = 0;
                if let Some(Some(f)) = self.flows.get(flow) {
                    for &(_, i) in data.get(start..start + run).unwrap_or_default() {
                        let len = self.in_meta.get(i).map_or(0, |m| m.len.min(SLOT));
                        if let (Some(p), Some(m)) =
                            (self.in_buf.get(i * SLOT..i * SLOT + len), msgs.get_mut(n))
                        {
                            *m = Outgoing::new(f.peer, p);
                            n += 1;
                        }
                    }
                    let batch = msgs.get(..n).unwrap_or_default();
                    forwarded +=
                        relay_batch::send_batch(&f.sock, batch, &self.gso).unwrap_or(0) as u64;
                }
                start += run;
            }
            if got < BATCH {
                break;
            }
        }
        Ok(forwarded)
    }

    fn control(&mut self, client: SocketAddr, flow: Option<usize>, packet: &[u8]) {
        if packet.get(4) == Some(&OP_CLOSE) {
            if let Some(i) = flow {
                self.close(client, i);
            }
            return;
        }
        let Some(peer) = parse_open(packet) else {
            return;
        };
        let port = match flow {
            // A retransmitted open: answer again.
            Some(i) => self
                .flows
                .get(i)
                .and_then(|f| f.as_ref())
                .and_then(|f| f.sock.local_addr().ok())
                .map(|a| a.port()),
            None => self.open(client, peer).ok(),
        };
        if let Some(port) = port {
            let mut answer = MAGIC.to_vec();
            answer.push(OP_OPENED);
            answer.extend_from_slice(&port.to_be_bytes());
            let _ = self.listener.send_to(&answer, client);
        }
    }

    fn open(&mut self, client: SocketAddr, peer: SocketAddr) -> io::Result<u16> {
        if self.by_client.len() >= self.max_flows {
            return Err(io::Error::other("too many flows"));
        }
        let local = self.listener.local_addr()?;
        let sock = Socket::new(Domain::for_address(peer), Type::DGRAM, Some(Protocol::UDP))?;
        sock.set_nonblocking(true)?;
        let _ = sock.set_recv_buffer_size(self.buffer.min(256 << 10));
        // The relay IP if given, else the listener's, like a relay's relayed address.
        sock.bind(&SocketAddr::new(self.relay_ip.unwrap_or(local.ip()), 0).into())?;
        sock.connect(&peer.into())?;
        let sock: UdpSocket = sock.into();
        let port = sock.local_addr()?.port();
        let index = self.free.pop().unwrap_or(self.flows.len());
        self.epoll.add(sock.as_raw_fd(), index as u64)?;
        let flow = Some(Flow { client, peer, sock });
        match self.flows.get_mut(index) {
            Some(slot) => *slot = flow,
            None => self.flows.push(flow),
        }
        self.by_client.insert(client, index);
        Ok(port)
    }

    fn close(&mut self, client: SocketAddr, index: usize) {
        self.by_client.remove(&client);
        if let Some(slot) = self.flows.get_mut(index)
            && let Some(flow) = slot.take()
        {
            let _ = self.epoll.remove(flow.sock.as_raw_fd());
            self.free.push(index);
        }
    }

    /// Reads a flow socket; what the peer sent waits in `out` for the listener.
    fn read_peer(&mut self, index: usize) -> u64 {
        let mut forwarded = 0;
        let Some(Some(flow)) = self.flows.get(index) else {
            return 0;
        };
        let client = flow.client;
        loop {
            let used = self.out.len();
            let room = BATCH - used;
            let (area, meta) = (
                self.out_buf.get_mut(used * SLOT..).unwrap_or_default(),
                self.in_meta.get_mut(..room).unwrap_or_default(),
            );
            let Some(Some(flow)) = self.flows.get(index) else {
                return forwarded;
            };
            let got = match sys::recv_mmsg(&flow.sock, area, SLOT, meta, false) {
                Ok(n) => n,
                Err(_) => break,
            };
            for m in self.in_meta.iter().take(got) {
                self.out.push((m.len.min(SLOT), client));
            }
            if self.out.len() == BATCH {
                forwarded += self.flush_to_clients();
            }
            if got < room {
                break;
            }
        }
        forwarded
    }

    fn flush_to_clients(&mut self) -> u64 {
        if self.out.is_empty() {
            return 0;
        }
        let unspecified = SocketAddr::from(([0, 0, 0, 0], 0));
        let mut msgs: [Outgoing<'_>; BATCH] = [Outgoing::new(unspecified, &[]); BATCH];
        let mut n = 0;
        for (i, (len, to)) in self.out.iter().enumerate() {
            if let (Some(d), Some(m)) =
                (self.out_buf.get(i * SLOT..i * SLOT + len), msgs.get_mut(n))
            {
                *m = Outgoing::new(*to, d);
                n += 1;
            }
        }
        let batch = msgs.get(..n).unwrap_or_default();
        let sent = relay_batch::send_batch(&self.listener, batch, &self.gso).unwrap_or(0);
        self.out.clear();
        sent as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_requests_round_trip() {
        for peer in ["127.0.0.1:9", "[::1]:65535"] {
            let peer: SocketAddr = peer.parse().unwrap();
            assert_eq!(parse_open(&open_request(peer)), Some(peer));
        }
        assert_eq!(parse_open(b"GTFW\x01\x04\x7f\0\0"), None);
        assert_eq!(parse_open_response(b"GTFW\x02\x12\x34"), Some(0x1234));
        assert_eq!(parse_open_response(b"GTFW\x02\x12"), None);
    }

    #[test]
    fn forwards_both_ways() {
        let fwd = Forwarder::start(&ForwarderConfig::default()).unwrap();
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        peer.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        client
            .send_to(&open_request(peer.local_addr().unwrap()), fwd.addr())
            .unwrap();
        let mut buf = [0u8; 64];
        let (n, _) = client.recv_from(&mut buf).unwrap();
        let port = parse_open_response(&buf[..n]).unwrap();
        client.send_to(b"hello", fwd.addr()).unwrap();
        let (n, from) = peer.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"hello");
        assert_eq!(from.port(), port);
        peer.send_to(b"back", from).unwrap();
        let (n, from) = client.recv_from(&mut buf).unwrap();
        assert_eq!((&buf[..n], from), (&b"back"[..], fwd.addr()));
        let deadline = Instant::now() + Duration::from_secs(2);
        while fwd.forwarded() < 2 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(fwd.forwarded(), 2);
        fwd.stop().unwrap();
    }
}
