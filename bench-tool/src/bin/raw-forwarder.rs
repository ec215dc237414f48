//! `raw-forwarder`: forwards UDP datagrams between a client and its peer with no TURN logic
//! (see `geoturn_bench::forwarder`), so `geoturn bench --target raw` measures what this machine
//! can relay at all. Runs until SIGINT/SIGTERM or `--max-seconds`.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use geoturn_bench::forwarder::{Forwarder, ForwarderConfig};

#[derive(Debug, Parser)]
#[command(
    name = "raw-forwarder",
    about = "Forward UDP datagrams between clients and their peers with no TURN logic"
)]
struct Options {
    /// Where clients send (loopback by default).
    #[arg(long, default_value = "127.0.0.1:3479")]
    listen: SocketAddr,
    /// Threads, each with its own SO_REUSEPORT listener and flows.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Most flows per thread.
    #[arg(long, default_value_t = 20_000)]
    max_flows: usize,
    /// Socket buffer bytes for the listener (the kernel caps it at net.core.rmem_max).
    #[arg(long, default_value_t = 4 << 20)]
    socket_buffer: usize,
    /// Send runs of datagrams to one destination as one UDP GSO send, as the relay does
    /// (`--gso false`: one datagram per send).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    gso: bool,
    /// Address the per-flow sockets bind, towards the peers, like a relay's `--relay-ip`
    /// [default: the --listen IP].
    #[arg(long)]
    relay_ip: Option<std::net::IpAddr>,
    /// Stop after this many seconds whatever happens.
    #[arg(long, default_value_t = 3600)]
    max_seconds: u64,
}

fn main() -> std::io::Result<()> {
    let o = Options::parse();
    let _ = geoturn_bench::sys::raise_nofile_limit();
    let fwd = Forwarder::start(&ForwarderConfig {
        listen: o.listen,
        threads: o.threads,
        max_flows: o.max_flows,
        socket_buffer: o.socket_buffer,
        max_runtime: Duration::from_secs(o.max_seconds),
        gso: o.gso,
        relay_ip: o.relay_ip,
    })?;
    eprintln!("raw-forwarder listening on udp {}", fwd.addr());
    // SIGINT/SIGTERM end the process (default action); otherwise stop at the time limit.
    while !fwd.finished() {
        std::thread::sleep(Duration::from_millis(200));
    }
    fwd.stop()
}
