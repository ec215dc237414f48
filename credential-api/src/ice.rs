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

/// The answer's servers: a STUN entry from the best relay, then each relay's TURN URLs with
/// the one credential (every relay accepts it: they share the secret set), then, when
/// configured, the anycast URLs as the last resort (its first contact is redirected to a
/// unicast relay of whichever region the route reaches).
pub fn ice_servers(
    chosen: &[&RelayRecord],
    credential: &RestCredential,
    anycast: &[String],
) -> Vec<IceServer> {
    let mut out = Vec::with_capacity(chosen.len() + 1);
    if let Some(stun) = chosen.iter().find_map(|r| stun_url(&r.urls)) {
        out.push(IceServer {
            urls: vec![stun],
            username: None,
            credential: None,
        });
    }
    for relay in chosen {
        let urls: Vec<String> = relay
            .urls
            .iter()
            .filter(|u| u.starts_with("turn:") || u.starts_with("turns:"))
            .cloned()
            .collect();
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
        .flat_map(|r| r.urls.iter())
        .filter(|u| u.starts_with("turn:") || u.starts_with("turns:"))
        .cloned()
        .collect()
}

/// `stun:host:port` from a relay's plain `turn:` URL, preferring its UDP one: a TURN server
/// answers STUN Binding on the same port (RFC 8656 §3).
fn stun_url(urls: &[String]) -> Option<String> {
    let plain = |u: &&String| u.starts_with("turn:");
    let pick = urls
        .iter()
        .filter(plain)
        .find(|u| u.ends_with("?transport=udp"))
        .or_else(|| urls.iter().find(plain))?;
    let host_port = pick.strip_prefix("turn:")?.split('?').next()?;
    Some(format!("stun:{host_port}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use geoturn_shared::registry::RelayState;

    fn relay(id: &str, urls: &[&str]) -> RelayRecord {
        RelayRecord {
            id: id.into(),
            region: "r".into(),
            lat: 0.0,
            lon: 0.0,
            urls: urls.iter().map(|u| (*u).to_owned()).collect(),
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

    #[test]
    fn stun_first_then_each_relay_in_rank_order() {
        let a = relay(
            "a",
            &[
                "turn:192.0.2.1:3478?transport=tcp",
                "turn:192.0.2.1:3478?transport=udp",
                "turns:a.example:5349?transport=tcp",
            ],
        );
        let b = relay("b", &["turns:b.example:443?transport=tcp"]);
        let c = relay("c", &[]);
        let cred = RestCredential::mint(b"s", "u", 100, 50);
        let servers = ice_servers(&[&b, &a, &c], &cred, &[]);
        // b has no plain turn: URL, so the STUN entry comes from a, the next relay.
        assert_eq!(servers[0].urls, vec!["stun:192.0.2.1:3478"]);
        assert_eq!(servers[0].username, None);
        assert_eq!(servers[1].urls, b.urls);
        assert_eq!(servers[2].urls, a.urls);
        assert_eq!(servers.len(), 3, "a relay without URLs gets no entry");
        assert_eq!(servers[1].username.as_deref(), Some("150:u"));
        let json = serde_json::to_value(&servers[0]).unwrap();
        assert_eq!(json, serde_json::json!({"urls": ["stun:192.0.2.1:3478"]}));
        assert_eq!(turn_uris(&[&b, &a]).len(), 4);
    }

    #[test]
    fn anycast_urls_come_last_with_the_same_credential() {
        let a = relay("a", &["turn:192.0.2.1:3478?transport=udp"]);
        let cred = RestCredential::mint(b"s", "u", 100, 50);
        let anycast = vec!["turn:global.example:3478?transport=udp".to_owned()];
        let servers = ice_servers(&[&a], &cred, &anycast);
        assert_eq!(servers.len(), 3);
        assert_eq!(servers[1].urls, a.urls);
        assert_eq!(servers[2].urls, anycast);
        assert_eq!(servers[2].credential, servers[1].credential);
    }

    #[test]
    fn ipv6_hosts_keep_their_brackets() {
        let r = relay("v6", &["turn:[2001:db8::1]:3478?transport=udp"]);
        assert_eq!(stun_url(&r.urls).unwrap(), "stun:[2001:db8::1]:3478");
    }
}
