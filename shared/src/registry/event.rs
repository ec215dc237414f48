//! Events on the registry's pub/sub channel (DESIGN.md §4: `secret_rotated`, `relay_draining`,
//! `user_revoked`), JSON-encoded as `{"type":"secret_rotated","secret_id":"…"}`.

use serde::{Deserialize, Serialize};

use super::RegistryError;

/// Something every relay and API instance should react to.
///
/// Events are hints, not a log: one published while a subscriber was disconnected is lost.
/// Subscribers therefore reload their state on [`RegistryEvent::Resync`] (and on a lagged
/// receiver), and should also reload periodically.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum RegistryEvent {
    /// A new secret was stored: reload the secret set.
    SecretRotated {
        /// The id of the new active secret.
        secret_id: String,
    },
    /// An operator asked this relay to drain.
    RelayDraining {
        /// The relay that should stop taking allocations.
        relay_id: String,
    },
    /// A user's credentials must stop working.
    UserRevoked {
        /// The user id (personal data: log it through `Pii`).
        user: String,
        /// Until when, Unix seconds (also stored: [`super::Registry::revoke`]). Absent in
        /// events from versions that did not say; a relay then refuses the user for 24 h.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        until: Option<u64>,
    },
    /// Never published: the local subscription was down (Redis restart, network) and is back,
    /// so events may have been missed. Reload secrets and anything else kept from events.
    Resync,
}

impl RegistryEvent {
    /// The channel payload.
    pub fn to_json(&self) -> String {
        // Serialising a tagged enum of strings cannot fail; an empty object would be ignored.
        serde_json::to_string(self).unwrap_or_else(|_| "{}".to_owned())
    }

    /// Parses a channel payload.
    pub fn from_json(payload: &str) -> Result<Self, RegistryError> {
        serde_json::from_str(payload).map_err(|e| RegistryError::invalid("event", e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_shape() {
        let cases = [
            (
                RegistryEvent::SecretRotated {
                    secret_id: "s7".into(),
                },
                r#"{"type":"secret_rotated","secret_id":"s7"}"#,
            ),
            (
                RegistryEvent::RelayDraining {
                    relay_id: "fra-1".into(),
                },
                r#"{"type":"relay_draining","relay_id":"fra-1"}"#,
            ),
            (
                RegistryEvent::UserRevoked {
                    user: "u1".into(),
                    until: Some(1_800_000_000),
                },
                r#"{"type":"user_revoked","user":"u1","until":1800000000}"#,
            ),
            (RegistryEvent::Resync, r#"{"type":"resync"}"#),
        ];
        for (event, json) in cases {
            assert_eq!(event.to_json(), json);
            assert_eq!(RegistryEvent::from_json(json).unwrap(), event);
        }
        // From an older API: no `until`.
        assert_eq!(
            RegistryEvent::from_json(r#"{"type":"user_revoked","user":"u1"}"#).unwrap(),
            RegistryEvent::UserRevoked {
                user: "u1".into(),
                until: None
            }
        );
    }

    #[test]
    fn unknown_or_malformed_is_an_error() {
        assert!(RegistryEvent::from_json(r#"{"type":"reboot"}"#).is_err());
        assert!(RegistryEvent::from_json(r#"{"type":"secret_rotated"}"#).is_err());
        assert!(RegistryEvent::from_json("nope").is_err());
    }
}
