//! The record a relay publishes every heartbeat, and its Redis hash encoding (DESIGN.md §4).
//!
//! Every field is a plain string in the hash so operators can read it with `redis-cli HGETALL`;
//! the addresses are the `udp`, `tcp`, `tls` and `host` fields ([`RelayAddrs`]).

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::RegistryError;
use super::addrs::RelayAddrs;

/// Longest relay id or region name; keeps Redis keys and log lines short.
const MAX_NAME_LEN: usize = 64;
/// Longest version string.
const MAX_VERSION_LEN: usize = 64;

/// Whether a relay takes new allocations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum RelayState {
    /// Serving and accepting new allocations.
    Active,
    /// Finishing existing allocations; the credential API must not hand it out.
    Draining,
}

impl RelayState {
    /// The wire name (`active` / `draining`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Draining => "draining",
        }
    }
}

impl fmt::Display for RelayState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RelayState {
    type Err = RegistryError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "active" => Ok(Self::Active),
            "draining" => Ok(Self::Draining),
            other => Err(RegistryError::invalid(
                "state",
                format!("{other:?} is neither \"active\" nor \"draining\""),
            )),
        }
    }
}

/// One relay's identity, addresses and load, as of its last heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RelayRecord {
    /// Unique relay id: 1–64 characters of `[A-Za-z0-9._-]`.
    pub id: String,
    /// Region name, same alphabet as `id` (e.g. `eu-west`).
    pub region: String,
    /// Latitude in degrees, −90 to 90.
    pub lat: f64,
    /// Longitude in degrees, −180 to 180.
    pub lon: f64,
    /// Public addresses per transport and host name; [`RelayAddrs::turn_urls`] makes the
    /// URLs clients are given.
    pub addresses: RelayAddrs,
    /// Most allocations the relay will hold.
    pub capacity_allocations: u64,
    /// Bandwidth the relay is provisioned for, in megabits per second.
    pub capacity_mbps: u64,
    /// Allocations held now.
    pub allocations: u64,
    /// Relayed payload bits per second, client → peer (what `capacity_mbps` is compared with).
    pub bps_in: u64,
    /// Relayed payload bits per second, peer → client.
    pub bps_out: u64,
    /// Packets per second received.
    pub pps_in: u64,
    /// Packets per second sent.
    pub pps_out: u64,
    /// Share of the host's CPU in use, 0.0–1.0 (may briefly read above 1.0 from sampling jitter).
    pub cpu: f32,
    /// Active or draining.
    pub state: RelayState,
    /// The relay's software version.
    pub version: String,
    /// When the relay process started, Unix milliseconds.
    pub started_at_ms: u64,
    /// When this record was produced, Unix milliseconds.
    pub updated_at_ms: u64,
    /// While draining: when the relay closes the allocations it still holds and leaves, Unix
    /// milliseconds (it leaves earlier once they have ended). What an operator waiting on a
    /// drain wants to know; absent from an active relay's record and from older relays'.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_deadline_ms: Option<u64>,
}

impl RelayRecord {
    /// The relay's load ([`crate::load::Load`]): relayed bandwidth both ways against
    /// `capacity_mbps`, allocations against `capacity_allocations`.
    pub fn load(&self) -> crate::load::Load {
        crate::load::Load::of(
            self.allocations,
            self.capacity_allocations,
            self.bps_in.saturating_add(self.bps_out),
            self.capacity_mbps.saturating_mul(1_000_000),
        )
    }

    /// The Redis hash fields, in a fixed order.
    pub fn to_fields(&self) -> Vec<(&'static str, String)> {
        let mut fields = vec![
            ("id", self.id.clone()),
            ("region", self.region.clone()),
            // f64's Display prints the shortest string that parses back to the same value.
            ("lat", self.lat.to_string()),
            ("lon", self.lon.to_string()),
        ];
        fields.extend(self.addresses.to_fields());
        fields.extend([
            (
                "capacity_allocations",
                self.capacity_allocations.to_string(),
            ),
            ("capacity_mbps", self.capacity_mbps.to_string()),
            ("allocations", self.allocations.to_string()),
            ("bps_in", self.bps_in.to_string()),
            ("bps_out", self.bps_out.to_string()),
            ("pps_in", self.pps_in.to_string()),
            ("pps_out", self.pps_out.to_string()),
            ("cpu", self.cpu.to_string()),
            ("state", self.state.as_str().to_owned()),
            ("version", self.version.clone()),
            ("started_at_ms", self.started_at_ms.to_string()),
            ("updated_at_ms", self.updated_at_ms.to_string()),
        ]);
        // Only when there is one: the field is new, and an older API ignores fields it does not
        // know (see `from_fields`).
        if let Some(ms) = self.drain_deadline_ms {
            fields.push(("drain_deadline_ms", ms.to_string()));
        }
        fields
    }

    /// Decodes and validates a Redis hash. Unknown fields are ignored so a newer relay's extra
    /// fields do not hide it from an older API during a rolling upgrade; a record from a relay
    /// older than the address fields is read from its `urls` field instead.
    pub fn from_fields(fields: HashMap<String, String>) -> Result<Self, RegistryError> {
        let get = |name: &'static str| {
            fields
                .get(name)
                .map(String::as_str)
                .ok_or_else(|| RegistryError::invalid(name, "missing"))
        };
        let record = Self {
            id: get("id")?.to_owned(),
            region: get("region")?.to_owned(),
            lat: parse(get("lat")?, "lat")?,
            lon: parse(get("lon")?, "lon")?,
            addresses: RelayAddrs::from_fields(&fields)?,
            capacity_allocations: parse(get("capacity_allocations")?, "capacity_allocations")?,
            capacity_mbps: parse(get("capacity_mbps")?, "capacity_mbps")?,
            allocations: parse(get("allocations")?, "allocations")?,
            bps_in: parse(get("bps_in")?, "bps_in")?,
            bps_out: parse(get("bps_out")?, "bps_out")?,
            pps_in: parse(get("pps_in")?, "pps_in")?,
            pps_out: parse(get("pps_out")?, "pps_out")?,
            cpu: parse(get("cpu")?, "cpu")?,
            state: get("state")?.parse()?,
            version: get("version")?.to_owned(),
            started_at_ms: parse(get("started_at_ms")?, "started_at_ms")?,
            updated_at_ms: parse(get("updated_at_ms")?, "updated_at_ms")?,
            drain_deadline_ms: fields
                .get("drain_deadline_ms")
                .map(|v| parse(v, "drain_deadline_ms"))
                .transpose()?,
        };
        record.validate()?;
        Ok(record)
    }

    /// Checks every field that could break a key, a log line or the ranking; names the field.
    pub fn validate(&self) -> Result<(), RegistryError> {
        check_name("id", &self.id)?;
        check_name("region", &self.region)?;
        // `contains` is false for NaN, so NaN is refused too.
        if !(-90.0..=90.0).contains(&self.lat) {
            return Err(RegistryError::invalid("lat", "must be within -90..=90"));
        }
        if !(-180.0..=180.0).contains(&self.lon) {
            return Err(RegistryError::invalid("lon", "must be within -180..=180"));
        }
        self.addresses.validate()?;
        if !self.cpu.is_finite() || self.cpu < 0.0 {
            return Err(RegistryError::invalid("cpu", "must be a finite value >= 0"));
        }
        if self.version.len() > MAX_VERSION_LEN || self.version.chars().any(char::is_control) {
            return Err(RegistryError::invalid(
                "version",
                format!("at most {MAX_VERSION_LEN} bytes, no control characters"),
            ));
        }
        Ok(())
    }
}

/// True for 1–64 characters of `[A-Za-z0-9._-]`: safe inside a Redis key and a log line.
pub(crate) fn is_valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Fails with the field named unless `value` is a valid name.
pub(crate) fn check_name(field: &'static str, value: &str) -> Result<(), RegistryError> {
    if is_valid_name(value) {
        Ok(())
    } else {
        Err(RegistryError::invalid(
            field,
            format!("{value:?} must be 1-{MAX_NAME_LEN} characters of [A-Za-z0-9._-]"),
        ))
    }
}

fn parse<T: FromStr>(text: &str, field: &'static str) -> Result<T, RegistryError>
where
    T::Err: fmt::Display,
{
    text.parse()
        .map_err(|e| RegistryError::invalid(field, format!("{text:?}: {e}")))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample() -> RelayRecord {
        RelayRecord {
            id: "fra-1".into(),
            region: "eu-central".into(),
            lat: 50.1109,
            lon: 8.682_127,
            addresses: RelayAddrs {
                udp: vec!["203.0.113.5:3478".parse().unwrap()],
                tcp: vec!["[2001:db8::5]:3478".parse().unwrap()],
                tls: vec!["203.0.113.5:5349".parse().unwrap()],
                host: Some("relay.example.com".into()),
            },
            capacity_allocations: 10_000,
            capacity_mbps: 1000,
            allocations: 42,
            bps_in: 1_000_001,
            bps_out: 999_999,
            pps_in: 1234,
            pps_out: 4321,
            cpu: 0.375,
            state: RelayState::Draining,
            version: "0.1.0".into(),
            started_at_ms: 1_700_000_000_000,
            updated_at_ms: 1_700_000_005_123,
            drain_deadline_ms: Some(1_700_000_600_000),
        }
    }

    fn as_map(record: &RelayRecord) -> HashMap<String, String> {
        record
            .to_fields()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect()
    }

    #[test]
    fn fields_round_trip() {
        let r = sample();
        assert_eq!(RelayRecord::from_fields(as_map(&r)).unwrap(), r);
        let odd = RelayRecord {
            lat: -89.999_999_999_9,
            lon: 0.1 + 0.2,
            cpu: 1.0 / 3.0,
            addresses: RelayAddrs::default(),
            state: RelayState::Active,
            drain_deadline_ms: None,
            ..sample()
        };
        assert_eq!(RelayRecord::from_fields(as_map(&odd)).unwrap(), odd);
    }

    #[test]
    fn unknown_fields_are_ignored_missing_ones_named() {
        let mut map = as_map(&sample());
        map.insert("from_the_future".into(), "x".into());
        assert!(RelayRecord::from_fields(map.clone()).is_ok());
        map.remove("pps_out");
        let err = RelayRecord::from_fields(map).unwrap_err();
        assert!(err.to_string().contains("pps_out"), "{err}");
    }

    #[test]
    fn bad_values_name_their_field() {
        for (field, value) in [
            ("lat", "90.5"),
            ("lat", "NaN"),
            ("lon", "-180.01"),
            ("lon", "east"),
            ("id", ""),
            ("id", "has space"),
            ("id", "relay:1"),
            ("region", &"r".repeat(65)),
            ("state", "paused"),
            ("udp", "203.0.113.5"),
            ("tcp", "relay.example.com:3478"),
            ("tls", "192.0.2.1:0"),
            ("host", "relay example"),
            ("allocations", "-1"),
            ("cpu", "inf"),
            ("drain_deadline_ms", "soon"),
        ] {
            let mut map = as_map(&sample());
            map.insert(field.into(), value.into());
            let err = RelayRecord::from_fields(map).unwrap_err();
            assert!(
                matches!(&err, RegistryError::Invalid { field: f, .. } if *f == field),
                "{field}={value}: {err}"
            );
        }
    }

    #[test]
    fn an_older_relays_urls_only_record_decodes() {
        let mut map = as_map(&sample());
        for field in ["udp", "tcp", "tls", "host"] {
            map.remove(field);
        }
        map.insert(
            "urls".into(),
            r#"["turn:203.0.113.5:3478?transport=udp","turn:203.0.113.5:3478?transport=tcp","turns:relay.example.com:5349?transport=tcp"]"#.into(),
        );
        let r = RelayRecord::from_fields(map.clone()).unwrap();
        assert_eq!(
            r.addresses,
            RelayAddrs {
                udp: vec!["203.0.113.5:3478".parse().unwrap()],
                tcp: vec!["203.0.113.5:3478".parse().unwrap()],
                tls: vec!["203.0.113.5:5349".parse().unwrap()],
                host: Some("relay.example.com".into()),
            }
        );
        // With the new fields present, a lingering `urls` field is not read.
        let mut both = as_map(&sample());
        both.insert("urls".into(), "not json".into());
        assert_eq!(RelayRecord::from_fields(both).unwrap(), sample());
        // Neither shape: the new field is the one named.
        map.remove("urls");
        let err = RelayRecord::from_fields(map.clone()).unwrap_err();
        assert!(
            matches!(err, RegistryError::Invalid { field: "udp", .. }),
            "{err}"
        );
        for bad in ["turn:x", r#"["http://x"]"#] {
            map.insert("urls".into(), bad.into());
            let err = RelayRecord::from_fields(map.clone()).unwrap_err();
            assert!(
                matches!(err, RegistryError::Invalid { field: "urls", .. }),
                "{err}"
            );
        }
    }

    #[test]
    fn json_carries_the_addresses_object() {
        let v = serde_json::to_value(sample()).unwrap();
        assert_eq!(
            v["addresses"],
            serde_json::json!({
                "udp": ["203.0.113.5:3478"],
                "tcp": ["[2001:db8::5]:3478"],
                "tls": ["203.0.113.5:5349"],
                "host": "relay.example.com",
            })
        );
        let back: RelayRecord = serde_json::from_value(v).unwrap();
        assert_eq!(back, sample());
    }

    #[test]
    fn the_drain_deadline_is_written_only_while_there_is_one() {
        let draining = as_map(&sample());
        assert_eq!(draining["drain_deadline_ms"], "1700000600000");
        let active = RelayRecord {
            state: RelayState::Active,
            drain_deadline_ms: None,
            ..sample()
        };
        let map = as_map(&active);
        assert!(!map.contains_key("drain_deadline_ms"), "{map:?}");
        assert_eq!(RelayRecord::from_fields(map).unwrap(), active);
        let json = serde_json::to_value(&active).unwrap();
        assert!(json.get("drain_deadline_ms").is_none(), "{json}");
    }

    #[test]
    fn names() {
        assert!(is_valid_name("a"));
        assert!(is_valid_name("us-east-1.relay_07"));
        assert!(is_valid_name(&"x".repeat(64)));
        assert!(!is_valid_name(&"x".repeat(65)));
        assert!(!is_valid_name("ü"));
        assert!(!is_valid_name("{tag}"));
    }

    #[test]
    fn state_serde_is_lowercase() {
        assert_eq!(
            serde_json::to_string(&RelayState::Draining).unwrap(),
            "\"draining\""
        );
        assert_eq!(
            serde_json::from_str::<RelayState>("\"active\"").unwrap(),
            RelayState::Active
        );
    }
}
