//! The kernel fast path for established channels (issue 18): an eBPF TC program, written in C
//! (`relay/bpf/channel_relay.bpf.c`, compiled by `build.rs` when clang is there), that relays
//! ChannelData of bound, permitted channels of UDP clients without waking a socket.
//!
//! The core decides what may be relayed ([`geoturn_relay_proto::server::OffloadedChannel`]);
//! the shards execute its offload commands against the maps here. Everything the program does
//! not know goes up to the sockets unchanged, so the relay works the same with the offload
//! off, not built in, or unable to load.
//!
//! - [`entry`]: map keys and values as bytes, in the C structs' layout.
//! - [`clock`]: deadlines on the kernel's monotonic clock.
//! - `kernel` (only when built in): loading, attaching, installing, counting.

pub mod clock;
pub mod entry;
#[cfg(geoturn_offload)]
mod kernel;

use std::net::{IpAddr, SocketAddr};

pub use entry::ChannelCounters;

/// `--offload`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OffloadMode {
    /// On where the program is built in and the kernel and privileges allow; off otherwise.
    #[default]
    Auto,
    /// On, or the relay refuses to start.
    On,
    /// Off: every packet goes through the sockets.
    Off,
}

/// Why the fast path is not on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OffloadError {
    /// Compiled out: clang was missing when the relay was built.
    #[error("the eBPF offload is not built in (clang and libbpf-dev were missing at build time)")]
    NotBuiltIn,
    /// The addresses or the host's settings do not allow it.
    #[error("the eBPF offload cannot run here: {0}")]
    Unsuitable(String),
    /// The kernel refused the program or its maps (no privileges, an old kernel).
    #[error("cannot load the eBPF program: {0}")]
    Load(String),
    /// Attaching to an interface failed.
    #[error("cannot attach the eBPF program to {0}: {1}")]
    Attach(String, String),
}

#[cfg(geoturn_offload)]
pub use kernel::Offload;

/// Stands in for the fast path where it is compiled out; never constructed.
#[cfg(not(geoturn_offload))]
#[derive(Debug)]
pub struct Offload {
    never: std::convert::Infallible,
}

#[cfg(not(geoturn_offload))]
impl Offload {
    /// Never called: there is no fast path to install into.
    pub fn install(&self, _: &geoturn_relay_proto::server::OffloadedChannel) {
        match self.never {}
    }

    /// Never called.
    pub fn remove(&self, _: &geoturn_relay_proto::server::OffloadedChannel) {
        match self.never {}
    }

    /// Never called.
    pub fn counters(&self) -> (ChannelCounters, usize, u64) {
        match self.never {}
    }

    /// Never called.
    pub fn interfaces(&self) -> &[String] {
        match self.never {}
    }
}

/// What the fast path did, for metrics, `/status` and the registry's load.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct OffloadStatus {
    /// Relayed in the kernel so far.
    #[serde(flatten)]
    pub counters: ChannelCounters,
    /// Channels installed now.
    pub channels: usize,
    /// Installs the kernel refused (full maps): those channels stayed in userspace.
    pub refused: u64,
}

impl Offload {
    /// The counters as a status.
    pub fn status(&self) -> OffloadStatus {
        let (counters, channels, refused) = self.counters();
        OffloadStatus {
            counters,
            channels,
            refused,
        }
    }
}

/// The interfaces the fast path attaches to for one address family (`relay`'s): those carrying
/// the relayed address and the listening addresses of that family. A wildcard listener (the
/// default `0.0.0.0`) listens on every address of the host; its datagrams name the address
/// they reached (packet info), which is what the program matches on, so every interface that
/// is up with an address of the family (IPv6: not only link-local) and forwards is taken.
fn family_interfaces(listen: &[SocketAddr], relay: IpAddr) -> Result<Vec<String>, OffloadError> {
    let v6 = relay.is_ipv6();
    let (family, sysctl) = if v6 {
        ("IPv6", "ipv6")
    } else {
        ("IPv4", "ipv4")
    };
    let same = || {
        listen
            .iter()
            .map(SocketAddr::ip)
            .filter(|ip| ip.is_ipv6() == v6)
    };
    let wildcard = same().any(|ip| ip.is_unspecified());
    let mut ips: Vec<IpAddr> = same().filter(|ip| !ip.is_unspecified()).collect();
    if wildcard {
        ips.extend(crate::net::interfaces::up_non_loopback(v6));
    }
    if ips.is_empty() {
        return Err(OffloadError::Unsuitable(format!(
            "it needs an {family} --listen address"
        )));
    }
    let relay_names = crate::net::interfaces::names_carrying(&[relay]);
    if relay_names.is_empty() {
        // Peers' datagrams arrive where the relayed address lives: with it on no interface
        // (loopback, or an address of another host) there is nothing to attach to for them.
        return Err(OffloadError::Unsuitable(format!(
            "no non-loopback interface carries the {family} relayed address {relay}"
        )));
    }
    ips.push(relay);
    // Never empty: the relayed address's interfaces are among them.
    let names = crate::net::interfaces::names_carrying(&ips);
    // The program finds each datagram's way out with the kernel's route lookup
    // (bpf_fib_lookup), which answers only on interfaces that forward. Relayed datagrams never
    // pass netfilter's FORWARD chain, so a FORWARD policy of DROP keeps the host from routing
    // anything else while the fast path works.
    let forwards = |name: &String| {
        let path = format!("/proc/sys/net/{sysctl}/conf/{name}/forwarding");
        std::fs::read_to_string(&path).is_ok_and(|v| v.trim() == "1")
    };
    let (on, off): (Vec<String>, Vec<String>) = names.into_iter().partition(forwards);
    // Named addresses must all be served; a wildcard's interfaces that do not forward are left
    // to the sockets, as long as the relayed address's are not among them.
    let must = if wildcard {
        off.iter().find(|n| relay_names.contains(n))
    } else {
        off.first()
    };
    if let Some(name) = must {
        let hint = if v6 {
            "; IPv6 forwarding turns off router advertisements unless accept_ra=2"
        } else {
            ""
        };
        return Err(OffloadError::Unsuitable(format!(
            "net.{sysctl}.conf.{name}.forwarding is not 1 (the program's route lookup needs it; \
             set it, with a FORWARD policy of DROP if the host must not route{hint})"
        )));
    }
    if !off.is_empty() {
        tracing::info!(
            family,
            interfaces = ?off,
            "eBPF offload skips interfaces that do not forward: their traffic goes through the sockets"
        );
    }
    Ok(on)
}

/// The interfaces for every family that has a relayed address (`relay_ips`: IPv4, IPv6), and
/// why each family that cannot be offloaded cannot.
fn interfaces_for(
    listen: &[SocketAddr],
    relay_ips: [Option<IpAddr>; 2],
) -> (Vec<String>, Vec<OffloadError>) {
    let (mut names, mut refused) = (Vec::<String>::new(), Vec::new());
    let relays: Vec<IpAddr> = relay_ips
        .into_iter()
        .flatten()
        .filter(|ip| !ip.is_unspecified())
        .collect();
    if relays.is_empty() {
        refused.push(OffloadError::Unsuitable(
            "it needs a specific relayed address (--relay-ip)".into(),
        ));
    }
    // A family without a listening address has no clients to offload (a relayed address of
    // the other family serves dual-stack allocations, which the program does not translate).
    let listened = |relay: &IpAddr| listen.iter().any(|l| l.is_ipv6() == relay.is_ipv6());
    let (relays, unlistened): (Vec<IpAddr>, Vec<IpAddr>) = relays.into_iter().partition(listened);
    if relays.is_empty() && !unlistened.is_empty() {
        refused.push(OffloadError::Unsuitable(
            "it needs a --listen address of the relayed address's family".into(),
        ));
    }
    for relay in relays {
        match family_interfaces(listen, relay) {
            Ok(found) => {
                for n in found {
                    if !names.contains(&n) {
                        names.push(n);
                    }
                }
            }
            Err(e) => refused.push(e),
        }
    }
    (names, refused)
}

/// Starts the fast path as `mode` asks, saying in one log line whether it is on and why.
/// `Ok(None)`: off, the relay runs on its sockets alone; `Err` only for `--offload on`, which
/// also wants every family with a relayed address offloaded (`auto` takes the families that
/// can be and names the others).
pub fn start(
    mode: OffloadMode,
    listen: &[SocketAddr],
    relay_ips: [Option<IpAddr>; 2],
) -> Result<Option<std::sync::Arc<Offload>>, OffloadError> {
    if mode == OffloadMode::Off {
        tracing::info!(offload = "off", "eBPF offload off (--offload off)");
        return Ok(None);
    }
    let (interfaces, mut refused) = interfaces_for(listen, relay_ips);
    let loaded = if !built_in() {
        Err(OffloadError::NotBuiltIn)
    } else if interfaces.is_empty() || (mode == OffloadMode::On && !refused.is_empty()) {
        // Every path to no interface pushes its reason; should one not, say so, never panic.
        Err(if refused.is_empty() {
            OffloadError::Unsuitable("no interface to attach to".into())
        } else {
            refused.remove(0)
        })
    } else {
        load(&interfaces)
    };
    match loaded {
        Ok(offload) => {
            let partly: Vec<String> = refused.iter().map(ToString::to_string).collect();
            tracing::info!(
                offload = "on",
                interfaces = ?offload.interfaces(),
                not_offloaded = ?partly,
                "eBPF offload on: bound channels of UDP clients are relayed in the kernel"
            );
            Ok(Some(std::sync::Arc::new(offload)))
        }
        Err(e) if mode == OffloadMode::Auto => {
            tracing::info!(offload = "off", reason = %e, "eBPF offload off");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

#[cfg(geoturn_offload)]
fn load(interfaces: &[String]) -> Result<Offload, OffloadError> {
    Offload::load(interfaces)
}

#[cfg(not(geoturn_offload))]
fn load(_interfaces: &[String]) -> Result<Offload, OffloadError> {
    Err(OffloadError::NotBuiltIn)
}

/// True when this build carries the eBPF program (tests that need it say so when it does not).
pub fn built_in() -> bool {
    cfg!(geoturn_offload)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loopback() -> Vec<SocketAddr> {
        vec!["127.0.0.1:3478".parse().unwrap()]
    }

    #[test]
    fn off_and_auto_never_fail_the_start() {
        let relay = [Some(IpAddr::from([127, 0, 0, 1])), None];
        assert!(
            start(OffloadMode::Off, &loopback(), relay)
                .unwrap()
                .is_none()
        );
        // Loopback carries no interface to attach to (and without clang nothing is built in):
        // auto runs on the sockets.
        assert!(
            start(OffloadMode::Auto, &loopback(), relay)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn on_fails_with_the_reason() {
        let relay = [Some(IpAddr::from([127, 0, 0, 1])), None];
        let err = start(OffloadMode::On, &loopback(), relay).unwrap_err();
        if built_in() {
            assert!(matches!(err, OffloadError::Unsuitable(_)), "{err}");
        } else {
            assert!(matches!(err, OffloadError::NotBuiltIn), "{err}");
            assert!(err.to_string().contains("not built in"));
        }
        let v6_only = vec!["[::1]:3478".parse().unwrap()];
        let (names, refused) = interfaces_for(&v6_only, relay);
        assert!(names.is_empty());
        assert!(
            refused[0].to_string().contains("relayed address's family"),
            "{refused:?}"
        );
        let (_, refused) = interfaces_for(&loopback(), [None, None]);
        assert!(refused[0].to_string().contains("--relay-ip"), "{refused:?}");
        // Each family with a relayed address and a listening address is judged on its own.
        let both = [relay[0], Some("::1".parse().unwrap())];
        let (_, refused) = interfaces_for(&loopback(), both);
        assert_eq!(refused.len(), 1, "IPv6 has no listener: {refused:?}");
        let dual = vec![loopback()[0], "[::1]:3478".parse().unwrap()];
        let (_, refused) = interfaces_for(&dual, both);
        assert_eq!(refused.len(), 2, "{refused:?}");
        assert!(refused[1].to_string().contains("IPv6"), "{refused:?}");
    }

    /// A wildcard listener with a relayed address no interface carries (a mistyped
    /// `--external-ip PUBLIC/PRIVATE`): the start once panicked here when the host's interfaces
    /// did not forward. 192.0.2.0/24 (TEST-NET-1) is on no machine.
    #[test]
    fn a_relayed_address_on_no_interface_is_a_reason_not_a_panic() {
        let wildcard = vec!["0.0.0.0:3478".parse().unwrap()];
        let relay = [Some(IpAddr::from([192, 0, 2, 123])), None];
        let (names, refused) = interfaces_for(&wildcard, relay);
        assert!(names.is_empty(), "{names:?}");
        assert_eq!(refused.len(), 1, "{refused:?}");
        assert!(
            start(OffloadMode::Auto, &wildcard, relay)
                .unwrap()
                .is_none()
        );
        assert!(start(OffloadMode::On, &wildcard, relay).is_err());
        let specific = vec!["127.0.0.1:3478".parse().unwrap()];
        assert!(
            start(OffloadMode::Auto, &specific, relay)
                .unwrap()
                .is_none()
        );
    }
}
