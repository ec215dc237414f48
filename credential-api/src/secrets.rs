//! The TURN secrets the API mints with, and their rotation.
//!
//! The live set is the registry's secrets (newest first) followed by the static ones from the
//! configuration, the same order relays use, so the secret that mints here is one every relay
//! accepts. Rotation stores a new secret, caps every older one at now + the longest credential
//! lifetime (credentials already handed out keep working until they expire, never longer),
//! deletes secrets already past their end, and publishes `secret_rotated` so relays and other
//! API instances reload at once.

use std::sync::RwLock;

use base64::Engine as _;
use geoturn_shared::registry::{Registry, RegistryError, RegistryEvent};
use geoturn_shared::{Secret, SecretSet};
use rand::Rng as _;

/// The secrets this API instance mints with.
#[derive(Debug)]
pub struct ApiSecrets {
    static_secrets: SecretSet,
    /// Whether the registry can hold secrets here (memory, or Redis with a secrets key).
    registry_backed: bool,
    current: RwLock<SecretSet>,
}

/// What a rotation did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Rotation {
    /// The new active secret's id.
    pub id: String,
    /// Earlier secrets that keep validating, and until when (Unix seconds).
    pub retiring: Vec<Retiring>,
    /// Secrets deleted because they were past their end.
    pub removed: Vec<String>,
}

/// An earlier secret and its end of validity.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Retiring {
    /// Its id.
    pub id: String,
    /// Unix seconds after which it validates nothing.
    pub not_after: u64,
}

impl ApiSecrets {
    /// Starts with the static secrets only; call [`ApiSecrets::reload`] to add the registry's.
    pub fn new(static_secrets: SecretSet, registry_backed: bool) -> Self {
        Self {
            current: RwLock::new(static_secrets.clone()),
            static_secrets,
            registry_backed,
        }
    }

    /// Whether secrets can be rotated through the registry.
    pub fn registry_backed(&self) -> bool {
        self.registry_backed
    }

    /// A copy of the live set.
    pub fn snapshot(&self) -> SecretSet {
        match self.current.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Reads the registry's secrets and puts them before the static ones. On error the current
    /// set stays.
    pub async fn reload(&self, registry: &Registry) -> Result<usize, RegistryError> {
        if !self.registry_backed {
            return Ok(0);
        }
        let loaded = registry.load_secrets().await?;
        if loaded.is_empty() {
            return self.reseed(registry).await;
        }
        Ok(self.apply(loaded))
    }

    /// Makes `loaded` (the registry's secrets) plus the static ones the live set.
    fn apply(&self, loaded: SecretSet) -> usize {
        let mut all: Vec<Secret> = loaded.all().cloned().collect();
        let from_registry = all.len();
        all.extend(self.static_secrets.all().cloned());
        let set = SecretSet::new(all);
        match self.current.write() {
            Ok(mut g) => *g = set,
            Err(poisoned) => *poisoned.into_inner() = set,
        }
        from_registry
    }

    /// The registry holds no secret: a first start (create one), or a Redis that came back
    /// without its data (store ours again, so relays that restart meanwhile get them too;
    /// relays keep theirs when they see an empty registry). Ours go back in one write and
    /// then `secret_rotated` is published: a relay that reloaded between the restart and now
    /// reloads the whole set, and none ever reads a part of it that lacks the active secret
    /// (it would replace its set and refuse every credential minted with that secret).
    async fn reseed(&self, registry: &Registry) -> Result<usize, RegistryError> {
        let current = self.snapshot();
        let ours: Vec<&Secret> = current
            .all()
            .filter(|s| !self.static_secrets.all().any(|t| t.id == s.id))
            .collect();
        if ours.is_empty() {
            if self.static_secrets.is_empty() {
                let now = geoturn_shared::clock::unix_secs();
                let rotation = self.rotate(registry, now, 0).await?;
                tracing::info!(secret_id = %rotation.id, "the registry held no secret: created the first");
            }
            return Ok(0);
        }
        // Oldest first, so the stored creation order keeps the active one newest.
        let oldest_first: Vec<Secret> = ours.iter().rev().map(|s| (*s).clone()).collect();
        registry.store_secrets(&oldest_first).await?;
        let active = ours.first().map(|s| s.id.clone()).unwrap_or_default();
        registry
            .publish(&RegistryEvent::SecretRotated { secret_id: active })
            .await?;
        tracing::warn!(
            count = ours.len(),
            "the registry had lost its secrets: stored ours again"
        );
        Ok(ours.len())
    }

    /// Creates a new active secret in the registry, retires the others at `now + max_ttl`,
    /// publishes `secret_rotated`, and reloads.
    pub async fn rotate(
        &self,
        registry: &Registry,
        now_unix: u64,
        max_ttl: u64,
    ) -> Result<Rotation, RegistryError> {
        let existing = registry.load_secrets().await?;
        let until = now_unix.saturating_add(max_ttl);
        let mut retiring = Vec::new();
        let mut removed = Vec::new();
        for s in existing.all() {
            if s.not_after.is_some_and(|t| t < now_unix) {
                registry.remove_secret(&s.id).await?;
                removed.push(s.id.clone());
                continue;
            }
            let not_after = s.not_after.map_or(until, |t| t.min(until));
            if s.not_after != Some(not_after) {
                let mut capped = s.clone();
                capped.not_after = Some(not_after);
                registry.store_secret(&capped).await?;
            }
            retiring.push(Retiring {
                id: s.id.clone(),
                not_after,
            });
        }
        let id = new_secret_id(now_unix);
        // Stored last: a relay reloading halfway sees the old secrets capped and still valid,
        // never a new secret that the API has not started minting with.
        registry
            .store_secret(&Secret::new(id.clone(), new_secret_value()))
            .await?;
        registry
            .publish(&RegistryEvent::SecretRotated {
                secret_id: id.clone(),
            })
            .await?;
        self.apply(registry.load_secrets().await?);
        Ok(Rotation {
            id,
            retiring,
            removed,
        })
    }
}

/// `k<unix seconds>-<random>`: sortable by eye, unique across API instances rotating at once.
fn new_secret_id(now_unix: u64) -> String {
    let tag: u32 = rand::rng().random();
    format!("k{now_unix}-{tag:08x}")
}

/// 32 random bytes as base64url text: signaling servers that mint their own credentials use the
/// text as the HMAC key, as coturn's `static-auth-secret` does.
fn new_secret_value() -> String {
    let bytes: [u8; 32] = rand::rng().random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use geoturn_shared::RestCredential;

    #[tokio::test]
    async fn rotation_keeps_old_credentials_until_max_ttl_and_mints_with_the_new() {
        let registry = Registry::connect("memory", "", None).await.unwrap();
        let secrets = ApiSecrets::new(SecretSet::from_values(["static"]), true);
        let mut events = registry.subscribe().await;
        let first = secrets.rotate(&registry, 1000, 600).await.unwrap();
        assert!(first.retiring.is_empty());
        let set = secrets.snapshot();
        assert_eq!(set.active(1000).unwrap().id, first.id);
        let old = RestCredential::mint(set.active(1000).unwrap().value.expose(), "u", 1000, 600);

        let second = secrets.rotate(&registry, 1100, 600).await.unwrap();
        assert_eq!(second.retiring.len(), 1);
        assert_eq!(second.retiring[0].not_after, 1700);
        let set = secrets.snapshot();
        assert_eq!(set.active(1100).unwrap().id, second.id);
        assert!(set.validate(&old.username, &old.password, 1600).is_ok());
        assert!(set.validate(&old.username, &old.password, 1701).is_err());
        // The static secret stays last and valid.
        assert_eq!(set.all().last().unwrap().id, "s0");
        assert!(matches!(
            events.recv().await.unwrap(),
            RegistryEvent::SecretRotated { .. }
        ));

        // A third rotation past the first secret's end deletes it.
        let third = secrets.rotate(&registry, 1800, 600).await.unwrap();
        assert_eq!(third.removed, vec![first.id.clone()]);
        assert_eq!(registry.load_secrets().await.unwrap().all().count(), 2);
    }

    #[tokio::test]
    async fn an_empty_registry_gets_a_first_secret_and_a_lost_one_gets_ours_back() {
        let registry = Registry::connect("memory", "", None).await.unwrap();
        let secrets = ApiSecrets::new(SecretSet::default(), true);
        // First start: nothing anywhere, so the API creates the first secret.
        secrets.reload(&registry).await.unwrap();
        let first = secrets.snapshot().active(0).unwrap().clone();
        assert_eq!(registry.load_secrets().await.unwrap().all().count(), 1);
        let rotated = secrets.rotate(&registry, 1000, 600).await.unwrap();

        // Redis came back empty (another registry): ours are stored again, order kept.
        let empty = Registry::connect("memory", "", None).await.unwrap();
        assert_eq!(secrets.reload(&empty).await.unwrap(), 2);
        let restored = empty.load_secrets().await.unwrap();
        let ids: Vec<&str> = restored.all().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, vec![rotated.id.as_str(), first.id.as_str()]);
        assert_eq!(restored.all().nth(1).unwrap().not_after, Some(1600));
        assert_eq!(secrets.snapshot().active(1000).unwrap().id, rotated.id);

        // With static secrets and an empty registry nothing is created: the static one mints.
        let with_static = ApiSecrets::new(SecretSet::from_values(["s"]), true);
        let blank = Registry::connect("memory", "", None).await.unwrap();
        with_static.reload(&blank).await.unwrap();
        assert!(blank.load_secrets().await.unwrap().is_empty());
        assert_eq!(with_static.snapshot().active(0).unwrap().id, "s0");
    }

    #[test]
    fn generated_secrets_differ() {
        assert_ne!(new_secret_value(), new_secret_value());
        assert_eq!(new_secret_value().len(), 43);
    }
}
