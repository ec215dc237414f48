//! ICE-server answers from a ranking: pure functions, no I/O.
//!
//! The W3C `RTCIceServer` list a browser passes to `new RTCPeerConnection({iceServers})`: one
//! `stun:` entry, then one entry per chosen relay, best first, carrying its `turn:`/`turns:`
//! URLs. Order matters: libwebrtc gives candidates from earlier TURN servers a higher priority,
//! so the best-ranked relay is the one ICE prefers.

use geoturn_geo::Ranking;
use geoturn_shared::RestCredential;
use geoturn_shared::registry::{RelayRecord, UrlChoice};

use crate::config::AnswerUrls;
use serde::Serialize;

/// One `RTCIceServer`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct IceServer {
    /// `stun:`, `turn:` or `turns:` URLs.
    pub urls: Vec<String>,
    /// TURN username (absent for STUN).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// TURN password (absent for STUN).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// The chosen relays' records, best first (indices from the ranking into `relays`).
pub fn chosen<'a>(ranking: &Ranking, relays: &'a [RelayRecord]) -> Vec<&'a RelayRecord> {
    ranking
        .chosen
        .iter()
        .filter_map(|c| relays.get(c.index))
        .collect()
}

/// The answer's servers: a STUN entry from the best relay with a plain TURN address (UDP
/// preferred), then each relay's TURN URLs as `urls` chooses (see
/// [`geoturn_shared::registry::RelayAddrs::urls`]) with the one credential (every relay
/// accepts it: they share the secret set), then, when configured, the anycast URLs as the last
/// resort (its first contact is redirected to a unicast relay of whichever region the route
/// reaches); a compact answer carries the first anycast URL only.
pub fn ice_servers(
    chosen: &[&RelayRecord],
    credential: &RestCredential,
    anycast: &[String],
    urls: AnswerUrls,
) -> Vec<IceServer> {
    let mut out = Vec::with_capacity(chosen.len() + 2);
    if let Some(stun) = chosen.iter().find_map(|r| r.addresses.stun_url()) {
        out.push(IceServer {
            urls: vec![stun],
            username: None,
            credential: None,
        });
    }
    let turn = |urls: Vec<String>| IceServer {
        urls,
        username: Some(credential.username.clone()),
        credential: Some(credential.password.clone()),
    };
    for urls in relay_urls(chosen, urls) {
        out.push(turn(urls));
    }
    let anycast = anycast_urls(anycast, urls);
    if !anycast.is_empty() {
        out.push(turn(anycast.to_vec()));
    }
    out
}

/// The anycast URLs an answer carries: all of them, or the first for a compact answer (the
/// operator lists the most useful first).
pub fn anycast_urls(anycast: &[String], urls: AnswerUrls) -> &[String] {
    match urls {
        AnswerUrls::All => anycast,
        AnswerUrls::Compact => anycast.get(..1).unwrap_or_default(),
    }
}

/// Each chosen relay's URLs, best first, skipping relays with none.
fn relay_urls(chosen: &[&RelayRecord], urls: AnswerUrls) -> Vec<Vec<String>> {
    chosen
        .iter()
        .enumerate()
        .map(|(i, relay)| {
            let choice = match (urls, i) {
                (AnswerUrls::All, _) => UrlChoice::All,
                (AnswerUrls::Compact, 0) => UrlChoice::Primary,
                (AnswerUrls::Compact, _) => UrlChoice::Fallback,
            };
            relay.addresses.urls(choice)
        })
        .filter(|u| !u.is_empty())
        .collect()
}

/// The TURN URLs of the chosen relays, best relay first, as [`ice_servers`] gives them (the
/// TURN REST draft's `uris`).
pub fn turn_uris(chosen: &[&RelayRecord], urls: AnswerUrls) -> Vec<String> {
    relay_urls(chosen, urls).into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use geoturn_shared::registry::{RelayAddrs, RelayState};

    fn relay(id: &str, addresses: RelayAddrs) -> RelayRecord {
        RelayRecord {
            id: id.into(),
            region: "r".into(),
            lat: 0.0,
            lon: 0.0,
            addresses,
            capacity_allocations: 0,
            capacity_mbps: 0,
            allocations: 0,
            bps_in: 0,
            bps_out: 0,
            pps_in: 0,
            pps_out: 0,
            cpu: 0.0,
            state: RelayState::Active,
            version: "0".into(),
            started_at_ms: 0,
            updated_at_ms: 0,
            drain_deadline_ms: None,
        }
    }

    fn addrs(udp: &[&str], tcp: &[&str], tls: &[&str], host: Option<&str>) -> RelayAddrs {
        let parse = |l: &[&str]| l.iter().map(|a| a.parse().unwrap()).collect();
        RelayAddrs {
            udp: parse(udp),
            tcp: parse(tcp),
            tls: parse(tls),
            host: host.map(str::to_owned),
        }
    }

    #[test]
    fn stun_first_then_each_relay_in_rank_order() {
        let a = relay(
            "a",
            addrs(
                &["192.0.2.1:3478"],
                &["192.0.2.1:3478"],
                &["192.0.2.1:5349"],
                None,
            ),
        );
        let b = relay(
            "b",
            addrs(&[], &[], &["198.51.100.7:443"], Some("b.example")),
        );
        let c = relay("c", RelayAddrs::default());
        let cred = RestCredential::mint(b"s", "u", 100, 50);
        let servers = ice_servers(&[&b, &a, &c], &cred, &[], AnswerUrls::All);
        // b has no plain TURN address, so the STUN entry comes from a, the next relay.
        assert_eq!(servers[0].urls, vec!["stun:192.0.2.1:3478"]);
        assert_eq!(servers[0].username, None);
        assert_eq!(servers[1].urls, vec!["turns:b.example:443?transport=tcp"]);
        assert_eq!(
            servers[2].urls,
            vec![
                "turn:192.0.2.1:3478?transport=udp",
                "turn:192.0.2.1:3478?transport=tcp",
                "turns:192.0.2.1:5349?transport=tcp",
            ]
        );
        assert_eq!(servers.len(), 3, "a relay without addresses gets no entry");
        assert_eq!(servers[1].username.as_deref(), Some("150:u"));
        let json = serde_json::to_value(&servers[0]).unwrap();
        assert_eq!(json, serde_json::json!({"urls": ["stun:192.0.2.1:3478"]}));
        assert_eq!(turn_uris(&[&b, &a], AnswerUrls::All).len(), 4);
    }

    #[test]
    fn anycast_urls_come_last_with_the_same_credential() {
        let a = relay("a", addrs(&["192.0.2.1:3478"], &[], &[], None));
        let cred = RestCredential::mint(b"s", "u", 100, 50);
        let anycast = vec!["turn:global.example:3478?transport=udp".to_owned()];
        let servers = ice_servers(&[&a], &cred, &anycast, AnswerUrls::Compact);
        assert_eq!(servers.len(), 3);
        assert_eq!(servers[1].urls, vec!["turn:192.0.2.1:3478?transport=udp"]);
        assert_eq!(servers[2].urls, anycast);
        assert_eq!(servers[2].credential, servers[1].credential);
    }

    #[test]
    fn ipv6_hosts_keep_their_brackets_and_names_replace_ips() {
        let cred = RestCredential::mint(b"s", "u", 100, 50);
        let v6 = relay("v6", addrs(&["[2001:db8::1]:3478"], &[], &[], None));
        let servers = ice_servers(&[&v6], &cred, &[], AnswerUrls::Compact);
        assert_eq!(servers[0].urls, vec!["stun:[2001:db8::1]:3478"]);
        assert_eq!(
            servers[1].urls,
            vec!["turn:[2001:db8::1]:3478?transport=udp"]
        );
        let named = relay("n", addrs(&[], &["192.0.2.9:443"], &[], Some("n.example")));
        let servers = ice_servers(&[&named], &cred, &[], AnswerUrls::Compact);
        assert_eq!(servers[0].urls, vec!["stun:n.example:443"]);
        assert_eq!(servers[1].urls, vec!["turn:n.example:443?transport=tcp"]);
    }

    #[test]
    fn a_compact_answer_gives_the_best_relay_every_transport_and_the_others_one_url() {
        let full = |ip: &str| {
            addrs(
                &[&format!("{ip}:3478")],
                &[&format!("{ip}:3478")],
                &[&format!("{ip}:5349"), &format!("{ip}:443")],
                None,
            )
        };
        let (a, b, c) = (
            relay("a", full("192.0.2.1")),
            relay("b", full("198.51.100.7")),
            relay("c", full("203.0.113.9")),
        );
        let cred = RestCredential::mint(b"s", "u", 100, 50);
        let anycast: Vec<String> = ["udp", "tcp"]
            .iter()
            .map(|t| format!("turn:global.example:3478?transport={t}"))
            .collect();
        let compact = ice_servers(&[&a, &b, &c], &cred, &anycast, AnswerUrls::Compact);
        let urls: Vec<Vec<String>> = compact.iter().map(|s| s.urls.clone()).collect();
        assert_eq!(
            urls,
            vec![
                vec!["stun:192.0.2.1:3478".to_owned()],
                vec![
                    "turn:192.0.2.1:3478?transport=udp".to_owned(),
                    "turn:192.0.2.1:3478?transport=tcp".to_owned(),
                    "turns:192.0.2.1:443?transport=tcp".to_owned(),
                ],
                vec!["turn:198.51.100.7:3478?transport=udp".to_owned()],
                vec!["turn:203.0.113.9:3478?transport=udp".to_owned()],
                vec![anycast[0].clone()],
            ]
        );
        assert_eq!(turn_uris(&[&a, &b, &c], AnswerUrls::Compact).len(), 5);
        let all = ice_servers(&[&a, &b, &c], &cred, &anycast, AnswerUrls::All);
        let count = |servers: &[IceServer]| servers.iter().map(|s| s.urls.len()).sum::<usize>();
        assert_eq!((count(&compact), count(&all)), (7, 15));
    }
}
