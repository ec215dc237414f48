//! The mesh's registry records (shared/src/registry/mesh.rs) on both backends, the Redis one
//! against a real `redis-server`: node records and rows round-trip, expire, are replaced whole,
//! are removed, stay under the prefix, and a record altered in Redis does not verify.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use geoturn_shared::clock::unix_ms;
use geoturn_shared::registry::{
    DEFAULT_PREFIX, MeshKey, MeshNode, MeshSample, Registry, cert_fingerprint,
};
use geoturn_tests::redis::RedisServer;

const KEY: [u8; 32] = [7; 32];

fn node(key: &MeshKey, id: &str) -> MeshNode {
    MeshNode::signed(
        key,
        id,
        "127.0.0.1:9643".parse().unwrap(),
        cert_fingerprint(id.as_bytes()),
        unix_ms() + 60_000,
    )
}

fn sample(peer: &str, rtt_us: u64) -> MeshSample {
    MeshSample {
        peer: peer.into(),
        rtt_us,
        loss: 0.01,
        updated_ms: unix_ms(),
    }
}

async fn nodes_and_rows_round_trip(reg: &Registry) {
    let key = MeshKey::derive(&KEY);
    let ttl = Duration::from_secs(30);
    for id in ["b", "a", "c"] {
        reg.publish_mesh_node(&node(&key, id), ttl).await.unwrap();
    }
    let nodes = reg.mesh_nodes().await.unwrap();
    let ids: Vec<&str> = nodes.iter().map(|n| n.id.as_str()).collect();
    assert_eq!(ids, ["a", "b", "c"]);
    for n in &nodes {
        n.verify(&key, unix_ms()).unwrap();
        assert_eq!(n, &node(&key, &n.id).clone_with_expiry(n.expires_ms, &key));
    }
    reg.publish_mesh_row("a", &[sample("c", 80_000), sample("b", 40_000)], ttl)
        .await
        .unwrap();
    reg.publish_mesh_row("b", &[sample("a", 41_000)], ttl)
        .await
        .unwrap();
    // A row of a relay without a node record is not listed.
    reg.publish_mesh_row("ghost", &[sample("a", 1)], ttl)
        .await
        .unwrap();
    let rows = reg.mesh_rows().await.unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[0].from, "a");
    let peers: Vec<(&str, u64)> = rows[0]
        .samples
        .iter()
        .map(|s| (s.peer.as_str(), s.rtt_us))
        .collect();
    assert_eq!(peers, [("b", 40_000), ("c", 80_000)]);
    assert!((rows[0].samples[0].loss - 0.01).abs() < 1e-6);
    // A row is replaced whole.
    reg.publish_mesh_row("a", &[sample("b", 42_000)], ttl)
        .await
        .unwrap();
    let rows = reg.mesh_rows().await.unwrap();
    assert_eq!(rows[0].samples.len(), 1);
    assert_eq!(rows[0].samples[0].rtt_us, 42_000);
    reg.remove_mesh("a").await.unwrap();
    let rows = reg.mesh_rows().await.unwrap();
    assert_eq!(
        rows.iter().map(|r| r.from.as_str()).collect::<Vec<_>>(),
        ["b"]
    );
    assert_eq!(reg.mesh_nodes().await.unwrap().len(), 2);
}

async fn records_expire(reg: &Registry) {
    let key = MeshKey::derive(&KEY);
    reg.publish_mesh_node(&node(&key, "short"), Duration::from_millis(500))
        .await
        .unwrap();
    reg.publish_mesh_row("short", &[sample("x", 1)], Duration::from_millis(500))
        .await
        .unwrap();
    reg.publish_mesh_node(&node(&key, "long"), Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(reg.mesh_nodes().await.unwrap().len(), 2);
    assert_eq!(reg.mesh_rows().await.unwrap().len(), 1);
    tokio::time::sleep(Duration::from_millis(900)).await;
    let nodes = reg.mesh_nodes().await.unwrap();
    assert_eq!(nodes.len(), 1);
    assert_eq!(nodes[0].id, "long");
    assert!(reg.mesh_rows().await.unwrap().is_empty());
}

async fn bad_input_is_refused(reg: &Registry) {
    let ttl = Duration::from_secs(30);
    assert!(
        reg.publish_mesh_row("has space", &[], ttl).await.is_err(),
        "bad relay id"
    );
    let mut s = sample("b", 1);
    s.loss = 2.0;
    assert!(reg.publish_mesh_row("a", &[s], ttl).await.is_err());
    let many: Vec<MeshSample> = (0..=geoturn_shared::registry::MAX_MESH_SAMPLES)
        .map(|i| sample(&format!("p{i}"), 1))
        .collect();
    assert!(reg.publish_mesh_row("a", &many, ttl).await.is_err());
}

trait WithExpiry {
    fn clone_with_expiry(&self, expires_ms: u64, key: &MeshKey) -> MeshNode;
}

impl WithExpiry for MeshNode {
    fn clone_with_expiry(&self, expires_ms: u64, key: &MeshKey) -> MeshNode {
        MeshNode::signed(key, &self.id, self.addr, self.fingerprint, expires_ms)
    }
}

macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod in_memory {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(&super::Registry::Memory(Default::default())).await;
                }
            )*
        }
        mod in_redis {
            $(
                #[tokio::test]
                async fn $name() {
                    let server = super::RedisServer::start();
                    let reg = super::Registry::connect(&server.url(), super::DEFAULT_PREFIX, None)
                        .await
                        .unwrap();
                    super::$name(&reg).await;
                }
            )*
        }
    };
}

on_both_backends!(
    nodes_and_rows_round_trip,
    records_expire,
    bad_input_is_refused
);

#[tokio::test]
async fn redis_layout_prefix_and_a_forged_record() {
    let server = RedisServer::start();
    let prefix = "{fleet}:";
    let reg = Registry::connect(&server.url(), prefix, None)
        .await
        .unwrap();
    let key = MeshKey::derive(&KEY);
    let n = node(&key, "fra-1");
    reg.publish_mesh_node(&n, Duration::from_secs(30))
        .await
        .unwrap();
    reg.publish_mesh_row("fra-1", &[sample("ams-1", 7_000)], Duration::from_secs(30))
        .await
        .unwrap();
    let mut raw = redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut raw)
        .await
        .unwrap();
    keys.sort();
    assert_eq!(
        keys,
        [
            "{fleet}:mesh:node:fra-1",
            "{fleet}:mesh:nodes",
            "{fleet}:mesh:rtt:fra-1"
        ]
    );
    let ttl: i64 = redis::cmd("PTTL")
        .arg("{fleet}:mesh:rtt:fra-1")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert!((1..=30_000).contains(&ttl), "{ttl}");
    // Someone with write access to Redis swaps the pinned fingerprint.
    let forged = n.with_forged_fingerprint(cert_fingerprint(b"impostor"));
    let _: () = redis::cmd("SET")
        .arg("{fleet}:mesh:node:fra-1")
        .arg(forged.to_json())
        .query_async(&mut raw)
        .await
        .unwrap();
    let read = reg.mesh_nodes().await.unwrap();
    assert_eq!(read.len(), 1);
    assert!(read[0].verify(&key, unix_ms()).is_err());
    // Garbage is skipped, not fatal.
    let _: () = redis::cmd("SET")
        .arg("{fleet}:mesh:node:fra-1")
        .arg("not json")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert!(reg.mesh_nodes().await.unwrap().is_empty());
    // Another prefix sees nothing.
    let other = Registry::connect(&server.url(), DEFAULT_PREFIX, None)
        .await
        .unwrap();
    assert!(other.mesh_rows().await.unwrap().is_empty());
}
