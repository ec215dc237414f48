//! The relays' QUIC mesh in the registry (issue 17): who is in the mesh and where
//! ([`MeshNode`], certificate pinning), and what each relay measured to its peers
//! ([`MeshRow`] of [`MeshSample`]s: QUIC's RTT estimate and loss).
//!
//! Trust: a node record names a relay's mesh address and the SHA-256 fingerprint of the
//! ephemeral certificate it presents, and carries an HMAC-SHA256 over both under a key derived
//! from the fleet's secrets key ([`MeshKey::derive`], a domain-separation label keeps it apart
//! from every other use of that key). Write access to Redis alone therefore cannot add a
//! relay to the mesh or swap a relay's certificate: a record whose MAC fails is ignored. The
//! MAC also covers the record's expiry, so a captured record cannot be replayed for longer
//! than its life (and its certificate's private key never left the relay that made it).
//!
//! Redis keys (under the registry prefix, so a `{hash tag}` prefix keeps them in one Redis
//! Cluster slot like the others):
//!
//! | key | type | written by |
//! |---|---|---|
//! | `{prefix}mesh:nodes` | sorted set id → expiry (Unix ms): the index, read without SCAN | `publish_mesh_node` |
//! | `{prefix}mesh:node:{id}` | string, [`MeshNode`] JSON, PEXPIRE = its TTL | `publish_mesh_node` |
//! | `{prefix}mesh:rtt:{id}` | hash peer id → `"{rtt µs} {loss} {updated ms}"`, PEXPIRE = its TTL | `publish_mesh_row` |
//!
//! Bounded: at most [`MAX_MESH_NODES`] nodes are read, and a row holds at most
//! [`MAX_MESH_SAMPLES`] peers. Each write is one atomic pipeline.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ring::hmac;
use serde::{Deserialize, Serialize};

use super::record::check_name;
use super::{MemoryRegistry, RedisRegistry, Registry, RegistryError};
use crate::clock::unix_ms;

/// Most mesh nodes read from the registry (and so most peers a relay can know of).
pub const MAX_MESH_NODES: usize = 1024;
/// Most peers one relay's row holds.
pub const MAX_MESH_SAMPLES: usize = 1024;
/// A sample whose peer has not answered for this long is stale: it says what the RTT was,
/// not what it is. Keep-alives every second refresh a live peer's sample well within it.
pub const MESH_FRESH: Duration = Duration::from_secs(5);

/// The domain-separation label of the node-record MAC key.
const KEY_LABEL: &[u8] = b"geoturn mesh v1: node record MAC key";
/// The label that starts every MAC'd message (a version, so the format can change).
const MESSAGE_LABEL: &[u8] = b"geoturn mesh node v1";

/// The key that authenticates mesh node records; derived from the fleet's secrets key, never
/// printed.
#[derive(Clone)]
pub struct MeshKey(hmac::Key);

impl MeshKey {
    /// HMAC-SHA256(secrets key, label) as the MAC key: the secrets key itself only encrypts
    /// secrets (AES-256-GCM), and this key only authenticates mesh records.
    pub fn derive(secrets_key: &[u8; 32]) -> Self {
        let root = hmac::Key::new(hmac::HMAC_SHA256, secrets_key);
        let derived = hmac::sign(&root, KEY_LABEL);
        Self(hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref()))
    }
}

impl fmt::Debug for MeshKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MeshKey(<redacted>)")
    }
}

/// SHA-256 of a DER certificate: what node records pin.
pub fn cert_fingerprint(der: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    let mut out = [0; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// Lower-case hex, for fingerprints in records, logs and `/status`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex32(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0; 32];
    for (i, slot) in out.iter_mut().enumerate() {
        *slot = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Why a node record is not trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MeshRefusal {
    /// The MAC does not match: another fleet key, or the record was altered.
    #[error("mesh record of {0}: MAC does not verify (another secrets key, or altered)")]
    BadMac(String),
    /// The record's life is over (a relay that stopped, or a replayed record).
    #[error("mesh record of {0}: expired")]
    Expired(String),
}

/// One relay's place in the mesh, as published: id, address, pinned certificate, expiry, MAC.
#[derive(Clone, PartialEq, Eq)]
pub struct MeshNode {
    /// Relay id (the registry record's).
    pub id: String,
    /// UDP address peers dial.
    pub addr: SocketAddr,
    /// SHA-256 of the relay's mesh certificate (DER).
    pub fingerprint: [u8; 32],
    /// Unix ms after which the record is not trusted.
    pub expires_ms: u64,
    mac: [u8; 32],
}

impl fmt::Debug for MeshNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MeshNode")
            .field("id", &self.id)
            .field("addr", &self.addr)
            .field("fingerprint", &hex(&self.fingerprint))
            .field("expires_ms", &self.expires_ms)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize, Deserialize)]
struct NodeJson {
    addr: SocketAddr,
    fp: String,
    exp: u64,
    mac: String,
}

impl MeshNode {
    /// A record signed with `key`.
    pub fn signed(
        key: &MeshKey,
        id: &str,
        addr: SocketAddr,
        fingerprint: [u8; 32],
        expires_ms: u64,
    ) -> Self {
        let tag = hmac::sign(&key.0, &Self::message(id, addr, &fingerprint, expires_ms));
        let mut mac = [0; 32];
        mac.copy_from_slice(tag.as_ref());
        Self {
            id: id.to_owned(),
            addr,
            fingerprint,
            expires_ms,
            mac,
        }
    }

    /// The MAC'd bytes: label, then every field length-prefixed or fixed-size, so no two
    /// records share a message.
    fn message(id: &str, addr: SocketAddr, fingerprint: &[u8; 32], expires_ms: u64) -> Vec<u8> {
        let addr = addr.to_string();
        let mut m = MESSAGE_LABEL.to_vec();
        for part in [id.as_bytes(), addr.as_bytes()] {
            m.extend_from_slice(&(part.len() as u64).to_be_bytes());
            m.extend_from_slice(part);
        }
        m.extend_from_slice(fingerprint);
        m.extend_from_slice(&expires_ms.to_be_bytes());
        m
    }

    /// Checks the MAC (constant time) and the expiry at `now_ms`.
    pub fn verify(&self, key: &MeshKey, now_ms: u64) -> Result<(), MeshRefusal> {
        let message = Self::message(&self.id, self.addr, &self.fingerprint, self.expires_ms);
        hmac::verify(&key.0, &message, &self.mac)
            .map_err(|_| MeshRefusal::BadMac(self.id.clone()))?;
        if self.expires_ms <= now_ms {
            return Err(MeshRefusal::Expired(self.id.clone()));
        }
        Ok(())
    }

    /// The stored JSON (the id is the key's).
    pub fn to_json(&self) -> String {
        serde_json::to_string(&NodeJson {
            addr: self.addr,
            fp: hex(&self.fingerprint),
            exp: self.expires_ms,
            mac: hex(&self.mac),
        })
        .unwrap_or_default()
    }

    /// Reads a stored record of relay `id`; `None` when malformed.
    pub fn from_json(id: &str, json: &str) -> Option<Self> {
        let j: NodeJson = serde_json::from_str(json).ok()?;
        Some(Self {
            id: id.to_owned(),
            addr: j.addr,
            fingerprint: unhex32(&j.fp)?,
            expires_ms: j.exp,
            mac: unhex32(&j.mac)?,
        })
    }

    /// A copy with another fingerprint and the MAC left as it was: what an attacker with
    /// write access to Redis but not the fleet key can make. For tests.
    pub fn with_forged_fingerprint(&self, fingerprint: [u8; 32]) -> Self {
        Self {
            fingerprint,
            ..self.clone()
        }
    }
}

/// One relay's measurement of one peer.
#[derive(Debug, Clone, PartialEq)]
pub struct MeshSample {
    /// The peer's relay id.
    pub peer: String,
    /// QUIC's smoothed RTT estimate, µs.
    pub rtt_us: u64,
    /// Fraction of packets declared lost recently, 0..=1.
    pub loss: f32,
    /// When the peer last answered (Unix ms): the age of the estimate.
    pub updated_ms: u64,
}

impl MeshSample {
    fn encode(&self) -> String {
        format!("{} {:.4} {}", self.rtt_us, self.loss, self.updated_ms)
    }

    fn decode(peer: String, value: &str) -> Option<Self> {
        let mut parts = value.split(' ');
        let rtt_us = parts.next()?.parse().ok()?;
        let loss: f32 = parts.next()?.parse().ok()?;
        let updated_ms = parts.next()?.parse().ok()?;
        if parts.next().is_some() || !(0.0..=1.0).contains(&loss) {
            return None;
        }
        Some(Self {
            peer,
            rtt_us,
            loss,
            updated_ms,
        })
    }

    /// Whether the peer answered within [`MESH_FRESH`] of `now_ms`.
    pub fn is_fresh(&self, now_ms: u64) -> bool {
        now_ms.saturating_sub(self.updated_ms) <= MESH_FRESH.as_millis() as u64
    }
}

/// What one relay measured to each of its peers, sorted by peer id.
#[derive(Debug, Clone, PartialEq)]
pub struct MeshRow {
    /// The measuring relay.
    pub from: String,
    /// Its samples.
    pub samples: Vec<MeshSample>,
}

fn check_samples(from: &str, samples: &[MeshSample]) -> Result<(), RegistryError> {
    check_name("mesh relay id", from)?;
    if samples.len() > MAX_MESH_SAMPLES {
        return Err(RegistryError::invalid(
            "mesh samples",
            format!("at most {MAX_MESH_SAMPLES} per relay"),
        ));
    }
    for s in samples {
        check_name("mesh peer id", &s.peer)?;
        if !(0.0..=1.0).contains(&s.loss) {
            return Err(RegistryError::invalid("mesh loss", "must be within 0..=1"));
        }
    }
    Ok(())
}

fn ttl_ms(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX).max(1)
}

impl Registry {
    /// Publishes this relay's node record; it is listed until `ttl` from now or its own
    /// expiry, whichever comes first.
    pub async fn publish_mesh_node(
        &self,
        node: &MeshNode,
        ttl: Duration,
    ) -> Result<(), RegistryError> {
        check_name("mesh relay id", &node.id)?;
        match self {
            Self::Memory(m) => {
                m.mesh_state().nodes.insert(
                    node.id.clone(),
                    (
                        node.clone(),
                        m.now() + ttl,
                        unix_ms() + ttl.as_millis() as u64,
                    ),
                );
                Ok(())
            }
            Self::Redis(r) => r.publish_mesh_node(node, ttl).await,
        }
    }

    /// Node records still within their TTL, sorted by id, at most [`MAX_MESH_NODES`]; their
    /// MACs are not checked here (the reader has the key: [`MeshNode::verify`]).
    pub async fn mesh_nodes(&self) -> Result<Vec<MeshNode>, RegistryError> {
        match self {
            Self::Memory(m) => {
                let now = m.now();
                let mut state = m.mesh_state();
                state.nodes.retain(|_, (_, deadline, _)| *deadline > now);
                let mut nodes: Vec<MeshNode> =
                    state.nodes.values().map(|(n, _, _)| n.clone()).collect();
                nodes.sort_by(|a, b| a.id.cmp(&b.id));
                nodes.truncate(MAX_MESH_NODES);
                Ok(nodes)
            }
            Self::Redis(r) => r.mesh_nodes().await,
        }
    }

    /// Replaces relay `from`'s row of measurements (whole: a peer left out is gone); the row
    /// lives `ttl` unless published again.
    pub async fn publish_mesh_row(
        &self,
        from: &str,
        samples: &[MeshSample],
        ttl: Duration,
    ) -> Result<(), RegistryError> {
        check_samples(from, samples)?;
        match self {
            Self::Memory(m) => {
                let deadline = m.now() + ttl;
                m.mesh_state()
                    .rows
                    .insert(from.to_owned(), (samples.to_vec(), deadline));
                Ok(())
            }
            Self::Redis(r) => r.publish_mesh_row(from, samples, ttl).await,
        }
    }

    /// Every live row (of relays with a live node record), sorted by relay id, samples by peer.
    pub async fn mesh_rows(&self) -> Result<Vec<MeshRow>, RegistryError> {
        let mut rows = match self {
            Self::Memory(m) => {
                let now = m.now();
                let mut state = m.mesh_state();
                state.nodes.retain(|_, (_, deadline, _)| *deadline > now);
                state.rows.retain(|_, (_, deadline)| *deadline > now);
                let state = &*state;
                state
                    .rows
                    .iter()
                    .filter(|(id, _)| state.nodes.contains_key(*id))
                    .map(|(id, (samples, _))| MeshRow {
                        from: id.clone(),
                        samples: samples.clone(),
                    })
                    .collect::<Vec<_>>()
            }
            Self::Redis(r) => r.mesh_rows().await?,
        };
        rows.sort_by(|a, b| a.from.cmp(&b.from));
        rows.truncate(MAX_MESH_NODES);
        for row in &mut rows {
            row.samples.sort_by(|a, b| a.peer.cmp(&b.peer));
        }
        Ok(rows)
    }

    /// Removes a relay's node record and row at once (clean shutdown).
    pub async fn remove_mesh(&self, id: &str) -> Result<(), RegistryError> {
        match self {
            Self::Memory(m) => {
                let mut state = m.mesh_state();
                state.nodes.remove(id);
                state.rows.remove(id);
                Ok(())
            }
            Self::Redis(r) => r.remove_mesh(id).await,
        }
    }
}

/// The in-memory registry's mesh state.
#[derive(Debug, Default)]
pub(super) struct MemoryMesh {
    /// Relay id → (record, listed until, expiry Unix ms).
    nodes: HashMap<String, (MeshNode, Instant, u64)>,
    /// Relay id → (row, listed until).
    rows: HashMap<String, (Vec<MeshSample>, Instant)>,
}

impl MemoryRegistry {
    fn mesh_state(&self) -> std::sync::MutexGuard<'_, MemoryMesh> {
        self.mesh
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl RedisRegistry {
    fn mesh_key(&self, what: &str, id: &str) -> String {
        format!("{}mesh:{what}:{id}", self.keys.prefix)
    }

    fn mesh_index(&self) -> String {
        format!("{}mesh:nodes", self.keys.prefix)
    }

    async fn publish_mesh_node(&self, node: &MeshNode, ttl: Duration) -> Result<(), RegistryError> {
        let now = unix_ms();
        let key = self.mesh_key("node", &node.id);
        let index = self.mesh_index();
        let until = now
            .saturating_add(ttl.as_millis() as u64)
            .min(node.expires_ms);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("SET")
            .arg(&key)
            .arg(node.to_json())
            .arg("PX")
            .arg(ttl_ms(ttl))
            .ignore()
            .zadd(&index, &node.id, until)
            .ignore()
            // Index entries of relays gone for a minute: the index stays as small as the mesh.
            .zrembyscore(&index, "-inf", format!("({}", now.saturating_sub(60_000)))
            .ignore();
        let pipe = &pipe;
        self.call("publish_mesh_node", |mut c| async move {
            pipe.query_async::<()>(&mut c).await
        })
        .await
    }

    async fn live_mesh_ids(&self) -> Result<Vec<String>, RegistryError> {
        let index = &self.mesh_index();
        let now = unix_ms();
        self.call("mesh_nodes", |mut c| async move {
            redis::cmd("ZRANGEBYSCORE")
                .arg(index)
                .arg(format!("({now}"))
                .arg("+inf")
                .arg("LIMIT")
                .arg(0)
                .arg(MAX_MESH_NODES)
                .query_async::<Vec<String>>(&mut c)
                .await
        })
        .await
    }

    async fn mesh_nodes(&self) -> Result<Vec<MeshNode>, RegistryError> {
        let ids = self.live_mesh_ids().await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = ids.iter().map(|id| self.mesh_key("node", id)).collect();
        let keys = &keys;
        let values: Vec<Option<String>> = self
            .call("mesh_nodes", |mut c| async move {
                redis::cmd("MGET").arg(keys).query_async(&mut c).await
            })
            .await?;
        let mut nodes = Vec::with_capacity(ids.len());
        for (id, value) in ids.iter().zip(values) {
            let Some(json) = value else { continue };
            match MeshNode::from_json(id, &json) {
                Some(n) => nodes.push(n),
                None => tracing::warn!(relay = %id, "registry: skipping an unreadable mesh record"),
            }
        }
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(nodes)
    }

    async fn publish_mesh_row(
        &self,
        from: &str,
        samples: &[MeshSample],
        ttl: Duration,
    ) -> Result<(), RegistryError> {
        let key = self.mesh_key("rtt", from);
        let fields: Vec<(&str, String)> = samples
            .iter()
            .map(|s| (s.peer.as_str(), s.encode()))
            .collect();
        let mut pipe = redis::pipe();
        pipe.atomic().del(&key).ignore();
        if !fields.is_empty() {
            pipe.hset_multiple(&key, &fields)
                .ignore()
                .pexpire(&key, ttl_ms(ttl))
                .ignore();
        }
        let pipe = &pipe;
        self.call("publish_mesh_row", |mut c| async move {
            pipe.query_async::<()>(&mut c).await
        })
        .await
    }

    async fn mesh_rows(&self) -> Result<Vec<MeshRow>, RegistryError> {
        let ids = self.live_mesh_ids().await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut fetch = redis::pipe();
        for id in &ids {
            fetch.hgetall(self.mesh_key("rtt", id));
        }
        let fetch = &fetch;
        let hashes: Vec<HashMap<String, String>> = self
            .call("mesh_rows", |mut c| async move {
                fetch.query_async(&mut c).await
            })
            .await?;
        let mut rows = Vec::new();
        for (id, fields) in ids.into_iter().zip(hashes) {
            if fields.is_empty() {
                continue;
            }
            let samples: Vec<MeshSample> = fields
                .into_iter()
                .take(MAX_MESH_SAMPLES)
                .filter_map(|(peer, v)| MeshSample::decode(peer, &v))
                .collect();
            rows.push(MeshRow { from: id, samples });
        }
        Ok(rows)
    }

    async fn remove_mesh(&self, id: &str) -> Result<(), RegistryError> {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .del(self.mesh_key("node", id))
            .ignore()
            .del(self.mesh_key("rtt", id))
            .ignore()
            .zrem(self.mesh_index(), id)
            .ignore();
        let pipe = &pipe;
        self.call("remove_mesh", |mut c| async move {
            pipe.query_async::<()>(&mut c).await
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(key: &MeshKey) -> MeshNode {
        MeshNode::signed(
            key,
            "fra-1",
            "203.0.113.5:9643".parse().unwrap(),
            cert_fingerprint(b"certificate"),
            2_000,
        )
    }

    #[test]
    fn a_signed_record_verifies_and_round_trips() {
        let key = MeshKey::derive(&[7; 32]);
        let n = node(&key);
        n.verify(&key, 1_000).unwrap();
        let back = MeshNode::from_json("fra-1", &n.to_json()).unwrap();
        assert_eq!(back, n);
        back.verify(&key, 1_999).unwrap();
    }

    #[test]
    fn every_altered_field_or_other_key_fails() {
        let key = MeshKey::derive(&[7; 32]);
        let n = node(&key);
        let other = MeshKey::derive(&[8; 32]);
        assert_eq!(
            n.verify(&other, 1_000),
            Err(MeshRefusal::BadMac("fra-1".into()))
        );
        let forged = n.with_forged_fingerprint(cert_fingerprint(b"impostor"));
        assert!(matches!(
            forged.verify(&key, 1_000),
            Err(MeshRefusal::BadMac(_))
        ));
        // The record moved under another relay's id.
        let moved = MeshNode::from_json("fra-2", &n.to_json()).unwrap();
        assert!(moved.verify(&key, 1_000).is_err());
        // Another address or a later expiry.
        let mut json: serde_json::Value = serde_json::from_str(&n.to_json()).unwrap();
        json["addr"] = "203.0.113.6:9643".into();
        let readdr = MeshNode::from_json("fra-1", &json.to_string()).unwrap();
        assert!(readdr.verify(&key, 1_000).is_err());
        json["addr"] = "203.0.113.5:9643".into();
        json["exp"] = 9_999.into();
        let extended = MeshNode::from_json("fra-1", &json.to_string()).unwrap();
        assert!(extended.verify(&key, 1_000).is_err());
        // Expiry is checked after the MAC.
        assert_eq!(
            n.verify(&key, 2_000),
            Err(MeshRefusal::Expired("fra-1".into()))
        );
    }

    #[test]
    fn the_mac_key_is_not_the_secrets_key() {
        // A MAC under the raw secrets key (no derivation) must not verify.
        let raw = hmac::Key::new(hmac::HMAC_SHA256, &[7; 32]);
        let n = node(&MeshKey::derive(&[7; 32]));
        let mut forged = n.clone();
        let tag = hmac::sign(
            &raw,
            &MeshNode::message(&n.id, n.addr, &n.fingerprint, n.expires_ms),
        );
        forged.mac.copy_from_slice(tag.as_ref());
        assert!(forged.verify(&MeshKey::derive(&[7; 32]), 1_000).is_err());
    }

    #[test]
    fn malformed_records_and_samples_are_none() {
        assert!(MeshNode::from_json("a", "{}").is_none());
        assert!(
            MeshNode::from_json("a", r#"{"addr":"1.2.3.4:5","fp":"zz","exp":1,"mac":"00"}"#)
                .is_none()
        );
        let s = MeshSample {
            peer: "b".into(),
            rtt_us: 40_123,
            loss: 0.25,
            updated_ms: 77,
        };
        assert_eq!(MeshSample::decode("b".into(), &s.encode()), Some(s));
        for bad in ["", "1 2", "1 2 3 4", "x 0 1", "1 1.5 1", "1 -0.1 1"] {
            assert_eq!(MeshSample::decode("b".into(), bad), None, "{bad:?}");
        }
    }
}
