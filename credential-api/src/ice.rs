//! ICE-server answers from a ranking: pure functions, no I/O.
//!
//! The W3C `RTCIceServer` list a browser passes to `new RTCPeerConnection({iceServers})`: one
//! `stun:` entry, then one entry per chosen relay, best first, carrying its `turn:`/`turns:`
//! URLs. Order matters: libwebrtc gives candidates from earlier TURN servers a higher priority,
//! so the best-ranked relay is the one ICE prefers.

use geoturn_geo::Ranking;
use geoturn_shared::RestCredential;
use geoturn_shared::registry::RelayRecord;
use serde::Serialize;

/// One `RTCIceServer`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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
/// preferred), then each relay's TURN URLs with
/// the one credential (every relay accepts it: they share the secret set), then, when
/// configured, the anycast URLs as the last resort (its first contact is redirected to a
/// unicast relay of whichever region the route reaches).
pub fn ice_servers(
    chosen: &[&RelayRecord],
    credential: &RestCredential,
    anycast: &[String],
) -> Vec<IceServer> {
    let mut out = Vec::with_capacity(chosen.len() + 1);
    if let Some(stun) = chosen.iter().find_map(|r| r.addresses.stun_url()) {
        out.push(IceServer {
            urls: vec![stun],
            username: None,
            credential: None,
        });
    }
    for relay in chosen {
        let urls = relay.addresses.turn_urls();
        if urls.is_empty() {
            continue;
        }
        out.push(IceServer {
            urls,
            username: Some(credential.username.clone()),
            credential: Some(credential.password.clone()),
        });
    }
    if !anycast.is_empty() {
        out.push(IceServer {
            urls: anycast.to_vec(),
            username: Some(credential.username.clone()),
            credential: Some(credential.password.clone()),
        });
    }
    out
}

/// Every TURN URL of the chosen relays, best relay first (the TURN REST draft's `uris`).
pub fn turn_uris(chosen: &[&RelayRecord]) -> Vec<String> {
    chosen
        .iter()
        .flat_map(|r| r.addresses.turn_urls())
        .collect()
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
        let servers = ice_servers(&[&b, &a, &c], &cred, &[]);
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
        assert_eq!(turn_uris(&[&b, &a]).len(), 4);
    }

    #[test]
    fn anycast_urls_come_last_with_the_same_credential() {
        let a = relay("a", addrs(&["192.0.2.1:3478"], &[], &[], None));
        let cred = RestCredential::mint(b"s", "u", 100, 50);
        let anycast = vec!["turn:global.example:3478?transport=udp".to_owned()];
        let servers = ice_servers(&[&a], &cred, &anycast);
        assert_eq!(servers.len(), 3);
        assert_eq!(servers[1].urls, vec!["turn:192.0.2.1:3478?transport=udp"]);
        assert_eq!(servers[2].urls, anycast);
        assert_eq!(servers[2].credential, servers[1].credential);
    }

    #[test]
    fn ipv6_hosts_keep_their_brackets_and_names_replace_ips() {
        let cred = RestCredential::mint(b"s", "u", 100, 50);
        let v6 = relay("v6", addrs(&["[2001:db8::1]:3478"], &[], &[], None));
        let servers = ice_servers(&[&v6], &cred, &[]);
        assert_eq!(servers[0].urls, vec!["stun:[2001:db8::1]:3478"]);
        assert_eq!(
            servers[1].urls,
            vec!["turn:[2001:db8::1]:3478?transport=udp"]
        );
        let named = relay("n", addrs(&[], &["192.0.2.9:443"], &[], Some("n.example")));
        let servers = ice_servers(&[&named], &cred, &[]);
        assert_eq!(servers[0].urls, vec!["stun:n.example:443"]);
        assert_eq!(servers[1].urls, vec!["turn:n.example:443?transport=tcp"]);
    }
}
