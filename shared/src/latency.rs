//! Client round trips measured by the relays, as they are stored and looked up: by client
//! network (never a full address), per region.
//!
//! A relay keys what it measured from a client by the client's prefix: a /24 for IPv4, a /48
//! for IPv6 (what one site or one carrier pool usually shares), and again by the wider network
//! (/16, /32), so a prefix never measured itself can borrow its neighbours' paths. The value is
//! `median,count,updated`: the median round trip in ms, how many samples were behind it, and
//! when (Unix ms).

use std::net::IpAddr;

use ipnet::IpNet;

/// The narrow network of `ip`: /24 or /48.
pub fn client_prefix(ip: IpAddr) -> IpNet {
    truncate(ip, 24, 48)
}

/// The wide network of `ip`: /16 or /32.
pub fn client_network(ip: IpAddr) -> IpNet {
    truncate(ip, 16, 32)
}

fn truncate(ip: IpAddr, v4: u8, v6: u8) -> IpNet {
    let ip = ip.to_canonical();
    let len = if ip.is_ipv4() { v4 } else { v6 };
    // Both lengths are within range for their family, so this never falls back.
    IpNet::new(ip, len)
        .map(|n| n.trunc())
        .unwrap_or(IpNet::from(ip))
}

/// A round trip measured from one network to one region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MeasuredRtt {
    /// Median round trip, milliseconds.
    pub rtt_ms: u32,
    /// Samples behind the median (capped by the relay's window).
    pub samples: u32,
    /// When it was measured, Unix milliseconds.
    pub updated_ms: u64,
}

impl MeasuredRtt {
    /// The stored form: `median,count,updated`.
    pub fn encode(&self) -> String {
        format!("{},{},{}", self.rtt_ms, self.samples, self.updated_ms)
    }

    /// Reads the stored form; `None` for anything else (a value from a newer version, or
    /// garbage), which readers skip.
    pub fn decode(s: &str) -> Option<Self> {
        let mut parts = s.split(',');
        let rtt_ms = parts.next()?.parse().ok()?;
        let samples = parts.next()?.parse().ok()?;
        let updated_ms = parts.next()?.parse().ok()?;
        if parts.next().is_some() {
            return None;
        }
        Some(Self {
            rtt_ms,
            samples,
            updated_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_never_hold_a_full_address() {
        let v4: IpAddr = "203.0.113.77".parse().unwrap();
        assert_eq!(client_prefix(v4).to_string(), "203.0.113.0/24");
        assert_eq!(client_network(v4).to_string(), "203.0.0.0/16");
        let mapped: IpAddr = "::ffff:203.0.113.77".parse().unwrap();
        assert_eq!(client_prefix(mapped), client_prefix(v4));
        let v6: IpAddr = "2001:db8:1234:5678::9".parse().unwrap();
        assert_eq!(client_prefix(v6).to_string(), "2001:db8:1234::/48");
        assert_eq!(client_network(v6).to_string(), "2001:db8::/32");
    }

    #[test]
    fn stored_form_round_trips_and_refuses_garbage() {
        let m = MeasuredRtt {
            rtt_ms: 21,
            samples: 3,
            updated_ms: 1_764_000_000_123,
        };
        assert_eq!(m.encode(), "21,3,1764000000123");
        assert_eq!(MeasuredRtt::decode(&m.encode()), Some(m));
        for bad in ["", "1,2", "1,2,3,4", "a,2,3", "-1,2,3", "1,,3"] {
            assert_eq!(MeasuredRtt::decode(bad), None, "{bad}");
        }
    }
}
