//! A relay's public addresses per transport (DESIGN.md §4), and the TURN URLs built from them.
//!
//! The record stores addresses, not URLs, so relays find each other by IP (drain alternates,
//! anycast first contact) whether or not a sibling advertises a host name, and URLs are
//! formatted in one place ([`RelayAddrs::turn_urls`]) where they are shown.
//!
//! In the Redis hash each transport is one field of comma-separated socket addresses
//! (`udp` = `203.0.113.5:3478,[2001:db8::1]:3478`, empty when none) and `host` is the public
//! host name (empty when none), so `redis-cli HGETALL` stays readable. Records written before
//! this shape carry a JSON `urls` array instead; [`RelayAddrs::from_legacy_urls`] reads those
//! during a rolling upgrade and is the only place a TURN URL is parsed.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use serde::{Deserialize, Serialize};

use super::RegistryError;

/// Most addresses per transport: one per listener, and a relay listens on a handful.
pub const MAX_ADDRS_PER_TRANSPORT: usize = 8;
/// Longest host name (RFC 1035's limit for a name in text form).
const MAX_HOST_LEN: usize = 253;
/// Most URLs a legacy record may carry (the limit older versions enforced).
const MAX_LEGACY_URLS: usize = 16;
/// Longest legacy URL (the limit older versions enforced).
const MAX_LEGACY_URL_LEN: usize = 256;

/// How a client reaches an address of [`RelayAddrs`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddrTransport {
    /// TURN over UDP.
    Udp,
    /// TURN over TCP.
    Tcp,
    /// TURN over TLS over TCP.
    Tls,
}

/// Which of a relay's URLs an answer carries (see [`RelayAddrs::urls`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UrlChoice {
    /// Every URL.
    All,
    /// One per transport, TLS on 443 when the relay has it: the best relay of an answer.
    Primary,
    /// One URL, UDP when the relay has it: the other relays of an answer.
    Fallback,
}

/// Where clients reach a relay: its advertised public IP addresses per transport, and the host
/// name its URLs carry instead of the IP when it has one.
///
/// JSON (serde, e.g. in `GET /v1/relays`):
/// `{"udp":["203.0.113.5:3478"],"tcp":["203.0.113.5:3478"],"tls":["203.0.113.5:5349"],"host":"turn.example.com"}`,
/// IPv6 addresses as `"[2001:db8::1]:3478"`, `host` `null` when none.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(as = RelayAddresses))]
pub struct RelayAddrs {
    /// TURN over UDP (`turn:…?transport=udp`), `IP:port`.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>))]
    pub udp: Vec<SocketAddr>,
    /// TURN over TCP (`turn:…?transport=tcp`), `IP:port`.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>))]
    pub tcp: Vec<SocketAddr>,
    /// TURN over TLS (`turns:…?transport=tcp`), `IP:port`.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>))]
    pub tls: Vec<SocketAddr>,
    /// The relay's public host name (`--public-host`): used in its URLs in place of the IP and
    /// as the TLS certificate name. The addresses above stay IPs either way.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub host: Option<String>,
}

impl RelayAddrs {
    /// Every address with its transport in URL order: per listener its UDP then its TCP
    /// address (the relay lists both in the same listener order, so index `i` of each is one
    /// listener), then the TLS addresses. Clients try URLs in order, so it is part of the answer.
    pub fn in_order(&self) -> impl Iterator<Item = (AddrTransport, SocketAddr)> + '_ {
        let pairs = (0..self.udp.len().max(self.tcp.len())).flat_map(move |i| {
            let udp = self.udp.get(i).map(|a| (AddrTransport::Udp, *a));
            let tcp = self.tcp.get(i).map(|a| (AddrTransport::Tcp, *a));
            udp.into_iter().chain(tcp)
        });
        pairs.chain(self.tls.iter().map(|a| (AddrTransport::Tls, *a)))
    }

    /// The relay's TURN URLs in [`Self::in_order`]: `turn:H:P?transport=udp`,
    /// `turn:H:P?transport=tcp`, `turns:H:P?transport=tcp`, where H is [`Self::host`] when set,
    /// else the IP (IPv6 in brackets).
    pub fn turn_urls(&self) -> Vec<String> {
        self.in_order()
            .map(|(transport, a)| self.turn_url(transport, &a))
            .collect()
    }

    /// The URLs an answer carries for this relay, in [`Self::in_order`]'s order, by `choice`:
    ///
    /// - [`UrlChoice::All`]: every one ([`Self::turn_urls`]).
    /// - [`UrlChoice::Primary`] (the best relay): one of each transport, so every client gets
    ///   through whatever its network lets out: the first UDP and TCP addresses, and the TLS
    ///   address on port 443 when there is one (the port firewalls leave open), else the first.
    /// - [`UrlChoice::Fallback`] (every other relay): one URL, the first UDP address, else the
    ///   TLS one a primary would carry, else the first TCP address. A browser allocates on
    ///   every URL it is given (per network interface), so each URL is an allocation on a relay,
    ///   most of them never used; a fallback is there for when the best relay is gone.
    pub fn urls(&self, choice: UrlChoice) -> Vec<String> {
        let tls = self
            .tls
            .iter()
            .find(|a| a.port() == 443)
            .or_else(|| self.tls.first());
        let picked: Vec<(AddrTransport, &SocketAddr)> = match choice {
            UrlChoice::All => return self.turn_urls(),
            UrlChoice::Primary => [
                self.udp.first().map(|a| (AddrTransport::Udp, a)),
                self.tcp.first().map(|a| (AddrTransport::Tcp, a)),
                tls.map(|a| (AddrTransport::Tls, a)),
            ]
            .into_iter()
            .flatten()
            .collect(),
            UrlChoice::Fallback => self
                .udp
                .first()
                .map(|a| (AddrTransport::Udp, a))
                .or_else(|| tls.map(|a| (AddrTransport::Tls, a)))
                .or_else(|| self.tcp.first().map(|a| (AddrTransport::Tcp, a)))
                .into_iter()
                .collect(),
        };
        picked
            .into_iter()
            .map(|(transport, a)| self.turn_url(transport, a))
            .collect()
    }

    fn turn_url(&self, transport: AddrTransport, a: &SocketAddr) -> String {
        let hp = self.host_port(a);
        match transport {
            AddrTransport::Udp => format!("turn:{hp}?transport=udp"),
            AddrTransport::Tcp => format!("turn:{hp}?transport=tcp"),
            AddrTransport::Tls => format!("turns:{hp}?transport=tcp"),
        }
    }

    /// `stun:host:port` on the first UDP address, else the first TCP one: a TURN server
    /// answers STUN Binding on the same port (RFC 8656 §3).
    pub fn stun_url(&self) -> Option<String> {
        let a = self.udp.first().or_else(|| self.tcp.first())?;
        Some(format!("stun:{}", self.host_port(a)))
    }

    /// `HOST:PORT` for a URL: the host name if set, else the IP (IPv6 bracketed, no scope).
    fn host_port(&self, a: &SocketAddr) -> String {
        match (&self.host, a.ip()) {
            (Some(h), _) => format!("{h}:{}", a.port()),
            (None, IpAddr::V4(ip)) => format!("{ip}:{}", a.port()),
            (None, IpAddr::V6(ip)) => format!("[{ip}]:{}", a.port()),
        }
    }

    /// Checks the counts, ports and host name; the error names the field.
    pub fn validate(&self) -> Result<(), RegistryError> {
        for (field, addrs) in [("udp", &self.udp), ("tcp", &self.tcp), ("tls", &self.tls)] {
            if addrs.len() > MAX_ADDRS_PER_TRANSPORT {
                return Err(RegistryError::invalid(
                    field,
                    format!("at most {MAX_ADDRS_PER_TRANSPORT} addresses"),
                ));
            }
            if let Some(a) = addrs.iter().find(|a| a.port() == 0) {
                return Err(RegistryError::invalid(
                    field,
                    format!("{a}: port 0 reaches nothing"),
                ));
            }
        }
        if let Some(host) = &self.host
            && !is_valid_host(host)
        {
            return Err(RegistryError::invalid(
                "host",
                format!(
                    "{host:?} must be 1-{MAX_HOST_LEN} characters of letters, digits, '-' and '.'"
                ),
            ));
        }
        Ok(())
    }

    /// The Redis hash fields `udp`, `tcp`, `tls` and `host`.
    pub(crate) fn to_fields(&self) -> [(&'static str, String); 4] {
        let join = |addrs: &[SocketAddr]| {
            addrs
                .iter()
                .map(SocketAddr::to_string)
                .collect::<Vec<_>>()
                .join(",")
        };
        [
            ("udp", join(&self.udp)),
            ("tcp", join(&self.tcp)),
            ("tls", join(&self.tls)),
            ("host", self.host.clone().unwrap_or_default()),
        ]
    }

    /// Reads the fields [`Self::to_fields`] writes, or, from a relay older than them, the
    /// `urls` field. Does not validate (the record does, once).
    pub(crate) fn from_fields(fields: &HashMap<String, String>) -> Result<Self, RegistryError> {
        let has_new = ["udp", "tcp", "tls"]
            .iter()
            .any(|f| fields.contains_key(*f));
        if !has_new && let Some(urls) = fields.get("urls") {
            let urls: Vec<String> = serde_json::from_str(urls).map_err(|e| {
                RegistryError::invalid("urls", format!("not a JSON string array: {e}"))
            })?;
            return Self::from_legacy_urls(&urls);
        }
        let list = |field: &'static str| -> Result<Vec<SocketAddr>, RegistryError> {
            let text = fields
                .get(field)
                .ok_or_else(|| RegistryError::invalid(field, "missing"))?;
            if text.is_empty() {
                return Ok(Vec::new());
            }
            // Counted before parsing so a huge value costs no more than a short one.
            if text.split(',').count() > MAX_ADDRS_PER_TRANSPORT {
                return Err(RegistryError::invalid(
                    field,
                    format!("at most {MAX_ADDRS_PER_TRANSPORT} addresses"),
                ));
            }
            text.split(',')
                .map(|a| {
                    a.parse().map_err(|_| {
                        RegistryError::invalid(field, format!("{a:?} is not an IP:port address"))
                    })
                })
                .collect()
        };
        Ok(Self {
            udp: list("udp")?,
            tcp: list("tcp")?,
            tls: list("tls")?,
            host: fields.get("host").filter(|h| !h.is_empty()).cloned(),
        })
    }

    /// Reads the `urls` of a record written before addresses were stored (a rolling upgrade):
    /// `turn:H:P?transport=udp|tcp` and `turns:H:P?transport=tcp`. `stun:` URLs carry nothing
    /// the addresses lack and are skipped. A URL with a host name gives [`Self::host`] and the
    /// IP of the record's first plain `turn:` URL with an IP; when there is none (the relay
    /// advertised only its name) the address is `0.0.0.0`, which still builds the relay's
    /// URLs but which relays never pick as a destination. (Older relays put their name in
    /// every URL or in none, so the URLs built back are the ones read.)
    pub fn from_legacy_urls(urls: &[String]) -> Result<Self, RegistryError> {
        if urls.len() > MAX_LEGACY_URLS {
            return Err(RegistryError::invalid(
                "urls",
                format!("at most {MAX_LEGACY_URLS} URLs"),
            ));
        }
        let bad = |url: &str, why: &str| RegistryError::invalid("urls", format!("{url:?}: {why}"));
        let mut parsed: Vec<(AddrTransport, Option<IpAddr>, u16)> = Vec::new();
        let mut host: Option<String> = None;
        for url in urls {
            if url.len() > MAX_LEGACY_URL_LEN || url.chars().any(char::is_whitespace) {
                return Err(bad(url, "too long or contains whitespace"));
            }
            let Some((scheme, rest)) = url.split_once(':') else {
                return Err(bad(url, "no scheme"));
            };
            let (hostport, transport) = match rest.split_once("?transport=") {
                Some((hp, t)) => (hp, Some(t)),
                None => (rest, None),
            };
            // RFC 7065: turn: defaults to UDP, turns: to TCP.
            let kind = match (scheme, transport) {
                ("turn", None | Some("udp")) => AddrTransport::Udp,
                ("turn", Some("tcp")) => AddrTransport::Tcp,
                ("turns", None | Some("tcp")) => AddrTransport::Tls,
                ("stun" | "stuns", _) => continue,
                _ => return Err(bad(url, "not a turn:/turns: URL over udp or tcp")),
            };
            let Some((name, port)) = hostport.rsplit_once(':') else {
                return Err(bad(url, "no port"));
            };
            let Ok(port) = port.parse::<u16>() else {
                return Err(bad(url, "bad port"));
            };
            let ip = match name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
                Some(v6) => Some(v6.parse().map_err(|_| bad(url, "bad IPv6 address"))?),
                None => name.parse::<IpAddr>().ok(),
            };
            if ip.is_none() {
                if !is_valid_host(name) {
                    return Err(bad(url, "bad host name"));
                }
                // Older relays put one --public-host in every URL; the first one wins.
                host.get_or_insert_with(|| name.to_owned());
            }
            parsed.push((kind, ip, port));
        }
        let plain_ip = parsed
            .iter()
            .find_map(|(kind, ip, _)| ip.filter(|_| !matches!(kind, AddrTransport::Tls)));
        let mut addrs = Self {
            host,
            ..Self::default()
        };
        for (kind, ip, port) in parsed {
            let ip = ip.or(plain_ip).unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
            let list = match kind {
                AddrTransport::Udp => &mut addrs.udp,
                AddrTransport::Tcp => &mut addrs.tcp,
                AddrTransport::Tls => &mut addrs.tls,
            };
            list.push(SocketAddr::new(ip, port));
        }
        Ok(addrs)
    }
}

/// True for a host name clients can put in a URL: 1–253 characters of ASCII letters, digits,
/// `-` and `.` (so no whitespace, no `:` or `?` that would break the URL).
pub fn is_valid_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= MAX_HOST_LEN
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn fields(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn as_map(a: &RelayAddrs) -> HashMap<String, String> {
        a.to_fields()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect()
    }

    fn strings(urls: &[&str]) -> Vec<String> {
        urls.iter().map(|u| (*u).to_owned()).collect()
    }

    #[test]
    fn primary_carries_one_url_per_transport_and_a_fallback_one() {
        let a = RelayAddrs {
            udp: vec![sa("203.0.113.5:3478"), sa("[2001:db8::1]:3478")],
            tcp: vec![sa("203.0.113.5:3478"), sa("[2001:db8::1]:3478")],
            tls: vec![sa("203.0.113.5:5349"), sa("203.0.113.5:443")],
            host: Some("turn.example.com".into()),
        };
        assert_eq!(
            a.urls(UrlChoice::Primary),
            strings(&[
                "turn:turn.example.com:3478?transport=udp",
                "turn:turn.example.com:3478?transport=tcp",
                "turns:turn.example.com:443?transport=tcp",
            ])
        );
        assert_eq!(
            a.urls(UrlChoice::Fallback),
            strings(&["turn:turn.example.com:3478?transport=udp"])
        );
        assert_eq!(a.urls(UrlChoice::All), a.turn_urls());
        assert_eq!(a.urls(UrlChoice::All).len(), 6);
        // Without 443, the first TLS address; without UDP, a fallback is TLS, then TCP.
        let tls_only = RelayAddrs {
            tls: vec![sa("198.51.100.7:5349"), sa("198.51.100.7:5350")],
            tcp: vec![sa("198.51.100.7:3478")],
            ..RelayAddrs::default()
        };
        assert_eq!(
            tls_only.urls(UrlChoice::Primary),
            strings(&[
                "turn:198.51.100.7:3478?transport=tcp",
                "turns:198.51.100.7:5349?transport=tcp",
            ])
        );
        assert_eq!(
            tls_only.urls(UrlChoice::Fallback),
            strings(&["turns:198.51.100.7:5349?transport=tcp"])
        );
        let tcp_only = RelayAddrs {
            tcp: vec![sa("198.51.100.7:3478")],
            ..RelayAddrs::default()
        };
        assert_eq!(
            tcp_only.urls(UrlChoice::Fallback),
            strings(&["turn:198.51.100.7:3478?transport=tcp"])
        );
        assert!(RelayAddrs::default().urls(UrlChoice::Primary).is_empty());
    }

    #[test]
    fn urls_ipv4_ipv6_and_host_name_in_todays_order() {
        let mut a = RelayAddrs {
            udp: vec![sa("203.0.113.5:3478"), sa("[2001:db8::1]:3478")],
            tcp: vec![sa("203.0.113.5:3478"), sa("[2001:db8::1]:3478")],
            tls: vec![sa("203.0.113.5:5349")],
            host: None,
        };
        assert_eq!(
            a.turn_urls(),
            strings(&[
                "turn:203.0.113.5:3478?transport=udp",
                "turn:203.0.113.5:3478?transport=tcp",
                "turn:[2001:db8::1]:3478?transport=udp",
                "turn:[2001:db8::1]:3478?transport=tcp",
                "turns:203.0.113.5:5349?transport=tcp",
            ])
        );
        assert_eq!(a.stun_url().unwrap(), "stun:203.0.113.5:3478");
        a.host = Some("turn.example.com".into());
        assert_eq!(
            a.turn_urls(),
            strings(&[
                "turn:turn.example.com:3478?transport=udp",
                "turn:turn.example.com:3478?transport=tcp",
                "turn:turn.example.com:3478?transport=udp",
                "turn:turn.example.com:3478?transport=tcp",
                "turns:turn.example.com:5349?transport=tcp",
            ])
        );
        let v6 = RelayAddrs {
            tcp: vec![sa("[2001:db8::2]:443")],
            ..RelayAddrs::default()
        };
        assert_eq!(v6.stun_url().unwrap(), "stun:[2001:db8::2]:443");
        assert_eq!(RelayAddrs::default().stun_url(), None);
        assert!(RelayAddrs::default().turn_urls().is_empty());
    }

    #[test]
    fn fields_round_trip_and_read_plainly() {
        let a = RelayAddrs {
            udp: vec![sa("203.0.113.5:3478"), sa("[2001:db8::1]:3478")],
            tcp: vec![],
            tls: vec![sa("203.0.113.5:5349")],
            host: Some("turn.example.com".into()),
        };
        let f = as_map(&a);
        assert_eq!(f["udp"], "203.0.113.5:3478,[2001:db8::1]:3478");
        assert_eq!(f["tcp"], "");
        assert_eq!(f["host"], "turn.example.com");
        assert_eq!(RelayAddrs::from_fields(&f).unwrap(), a);
        let none = RelayAddrs::default();
        assert_eq!(RelayAddrs::from_fields(&as_map(&none)).unwrap(), none);
    }

    #[test]
    fn bad_fields_are_named() {
        let ok = [("udp", ""), ("tcp", ""), ("tls", ""), ("host", "")];
        for (field, value) in [
            ("udp", "203.0.113.5"),
            ("udp", "203.0.113.5:3478,"),
            ("tcp", "relay.example.com:3478"),
            ("tls", "[2001:db8::1]"),
            ("tls", &["192.0.2.1:1"; 9].join(",")),
        ] {
            let mut f = fields(&ok);
            f.insert(field.into(), value.into());
            let err = RelayAddrs::from_fields(&f).unwrap_err();
            assert!(
                matches!(&err, RegistryError::Invalid { field: x, .. } if *x == field),
                "{field}={value}: {err}"
            );
        }
        let mut f = fields(&ok);
        f.remove("tcp");
        let err = RelayAddrs::from_fields(&f).unwrap_err();
        assert!(matches!(err, RegistryError::Invalid { field: "tcp", .. }));
    }

    #[test]
    fn validation_names_the_field() {
        let cases = [
            (
                RelayAddrs {
                    udp: vec![sa("192.0.2.1:3478"); 9],
                    ..RelayAddrs::default()
                },
                "udp",
            ),
            (
                RelayAddrs {
                    tls: vec![sa("192.0.2.1:0")],
                    ..RelayAddrs::default()
                },
                "tls",
            ),
        ];
        for (a, field) in cases {
            let err = a.validate().unwrap_err();
            assert!(matches!(&err, RegistryError::Invalid { field: f, .. } if *f == field));
        }
        for host in [
            "",
            "has space",
            "turn.example.com\n",
            "[2001:db8::1]",
            "a:3478",
            "ü.example",
            &"a".repeat(254),
        ] {
            let a = RelayAddrs {
                host: Some(host.into()),
                ..RelayAddrs::default()
            };
            let err = a.validate().unwrap_err();
            assert!(
                matches!(&err, RegistryError::Invalid { field: "host", .. }),
                "{host:?}"
            );
        }
        let ok = RelayAddrs {
            host: Some(format!("{}.example-1.com", "a".repeat(200))),
            ..RelayAddrs::default()
        };
        assert!(ok.validate().is_ok());
    }

    #[test]
    fn legacy_urls_give_the_same_urls_back() {
        for urls in [
            vec![
                "turn:203.0.113.5:3478?transport=udp",
                "turn:203.0.113.5:3478?transport=tcp",
                "turn:[2001:db8::1]:3478?transport=udp",
                "turn:[2001:db8::1]:3478?transport=tcp",
                "turns:203.0.113.5:5349?transport=tcp",
            ],
            vec![
                "turn:turn.example.com:3478?transport=udp",
                "turn:turn.example.com:3478?transport=tcp",
                "turns:turn.example.com:5349?transport=tcp",
            ],
            vec![],
        ] {
            let urls = strings(&urls);
            let a = RelayAddrs::from_legacy_urls(&urls).unwrap();
            assert!(a.validate().is_ok());
            assert_eq!(a.turn_urls(), urls);
        }
    }

    #[test]
    fn legacy_host_names_take_the_records_plain_ip() {
        let a = RelayAddrs::from_legacy_urls(&strings(&[
            "turn:192.0.2.1:3478?transport=udp",
            "stun:192.0.2.1:3478",
            "turns:eu1.turn.example:5349?transport=tcp",
        ]))
        .unwrap();
        assert_eq!(a.udp, vec![sa("192.0.2.1:3478")]);
        assert_eq!(a.tls, vec![sa("192.0.2.1:5349")]);
        assert_eq!(a.host.as_deref(), Some("eu1.turn.example"));
        // Only a name: the address is unknown, the URL is not.
        let a =
            RelayAddrs::from_legacy_urls(&strings(&["turns:b.example:443?transport=tcp"])).unwrap();
        assert_eq!(a.tls, vec![sa("0.0.0.0:443")]);
        assert_eq!(a.turn_urls(), ["turns:b.example:443?transport=tcp"]);
    }

    #[test]
    fn legacy_garbage_is_refused_as_urls() {
        for url in [
            "http://x",
            "turn:x",
            "turn:192.0.2.1:port?transport=udp",
            "turn:192.0.2.1:3478?transport=sctp",
            "turn:[nope]:3478?transport=udp",
            "turn:bad host:3478",
            "turn:a?b:3478",
        ] {
            let err = RelayAddrs::from_legacy_urls(&strings(&[url])).unwrap_err();
            assert!(
                matches!(err, RegistryError::Invalid { field: "urls", .. }),
                "{url}"
            );
        }
        let many = vec!["turn:192.0.2.1:3478".to_owned(); 17];
        assert!(RelayAddrs::from_legacy_urls(&many).is_err());
    }
}
