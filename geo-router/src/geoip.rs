//! Client position from MaxMind DB (`.mmdb`) city databases.
//!
//! Reads the GeoIP2 / GeoLite2-City layout and the flat DB-IP / ip-location-db city layout
//! (`record.rs`). Several files may be given, typically one IPv4 and one IPv6 file as
//! ip-location-db ships them; a lookup tries each in order and the first hit wins.
//!
//! Files are read into memory rather than mapped: maxminddb's `open_mmap` is `unsafe` (the file
//! could change under the mapping), the workspace denies unsafe code, and the city databases are
//! tens of megabytes.

mod record;

use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use maxminddb::{MaxMindDbError, Reader};

use record::CityRecord;

/// Where a GeoIP database places an address.
#[derive(Debug, Clone, PartialEq)]
pub struct Location {
    /// Latitude in degrees, −90 to 90.
    pub lat: f64,
    /// Longitude in degrees, −180 to 180.
    pub lon: f64,
    /// ISO 3166-1 alpha-2 country code, when the record has one.
    pub country: Option<String>,
}

/// Why the GeoIP databases could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GeoError {
    /// The file could not be read (missing, unreadable, a directory, ...).
    #[error("cannot read GeoIP database {}: {source}", path.display())]
    Read {
        /// The file named in the configuration.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The file was read but is not a MaxMind DB file maxminddb accepts.
    #[error("{} is not a usable MaxMind DB (.mmdb) file: {source}", path.display())]
    Invalid {
        /// The file named in the configuration.
        path: PathBuf,
        /// maxminddb's reason.
        source: MaxMindDbError,
    },
}

/// What one opened database is, for start-up logs and `geoturn route`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseInfo {
    /// The file it was read from.
    pub path: PathBuf,
    /// The metadata's `database_type` (e.g. `GeoLite2-City`, `DBIP-City-Lite`).
    pub database_type: String,
    /// 4 for an IPv4-only tree, 6 for a tree that holds IPv6 (and usually IPv4) networks.
    pub ip_version: u16,
    /// When the database was built, Unix seconds.
    pub build_epoch: u64,
}

/// One opened file.
#[derive(Debug)]
struct Database {
    path: PathBuf,
    reader: Reader<Vec<u8>>,
}

/// GeoIP over one or more city databases held in memory; `Send + Sync`, share it in an `Arc`.
#[derive(Debug, Default)]
pub struct GeoIp {
    databases: Vec<Database>,
}

impl GeoIp {
    /// Reads and checks every file, in order; lookups try them in the same order.
    ///
    /// An empty list is allowed and gives a `GeoIp` that never finds anything: every client is
    /// then "unknown location" and the ranking falls back to the default region.
    pub fn open(paths: &[PathBuf]) -> Result<Self, GeoError> {
        let databases = paths
            .iter()
            .map(|path| open_one(path))
            .collect::<Result<_, _>>()?;
        Ok(Self { databases })
    }

    /// Where `ip` is, or `None` when it is private, loopback and the like, or no database
    /// places it.
    ///
    /// An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, what a dual-stack socket reports) is
    /// looked up as the IPv4 address it carries. Documentation ranges (192.0.2.0/24,
    /// 2001:db8::/32) are looked up like any public address, because test fixtures use them.
    pub fn lookup(&self, ip: IpAddr) -> Option<Location> {
        let ip = ip.to_canonical();
        if !is_locatable(ip) {
            return None;
        }
        self.databases.iter().find_map(|db| db.lookup(ip))
    }

    /// The opened databases, in lookup order.
    pub fn databases(&self) -> Vec<DatabaseInfo> {
        self.databases
            .iter()
            .map(|db| {
                let meta = db.reader.metadata();
                DatabaseInfo {
                    path: db.path.clone(),
                    database_type: meta.database_type.clone(),
                    ip_version: meta.ip_version,
                    build_epoch: meta.build_epoch,
                }
            })
            .collect()
    }

    /// True when no database is open, so every lookup answers `None`.
    pub fn is_empty(&self) -> bool {
        self.databases.is_empty()
    }
}

fn open_one(path: &Path) -> Result<Database, GeoError> {
    let bytes = fs::read(path).map_err(|source| GeoError::Read {
        path: path.to_owned(),
        source,
    })?;
    let reader = Reader::from_source(bytes).map_err(|source| GeoError::Invalid {
        path: path.to_owned(),
        source,
    })?;
    Ok(Database {
        path: path.to_owned(),
        reader,
    })
}

impl Database {
    fn lookup(&self, ip: IpAddr) -> Option<Location> {
        // maxminddb answers an IPv6 lookup in an IPv4-only tree with an error, not "not found";
        // skip such files quietly instead of logging once per request.
        if ip.is_ipv6() && self.reader.metadata().ip_version == 4 {
            return None;
        }
        let decoded = self
            .reader
            .lookup(ip)
            .and_then(|found| found.decode::<CityRecord<'_>>());
        match decoded {
            Ok(record) => record.and_then(CityRecord::into_location),
            Err(error) => {
                // A record that is not a map (an ASN database given by mistake) or a corrupt
                // one: not found here, try the next file. The address stays out of the log
                // (client IPs are personal data); the file and the reason are enough.
                tracing::debug!(path = %self.path.display(), %error, "GeoIP record unusable");
                None
            }
        }
    }
}

/// False for addresses no GeoIP database can place: the client is on our own network, behind
/// a NAT we cannot see through, or the address is not a unicast source at all.
fn is_locatable(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let shared = v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64; // RFC 6598 CGNAT
            !(v4.is_unspecified()
                || v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_broadcast()
                || v4.is_multicast()
                || shared)
        }
        IpAddr::V6(v6) => {
            !(v6.is_unspecified()
                || v6.is_loopback()
                || v6.is_unique_local()
                || v6.is_unicast_link_local()
                || v6.is_multicast())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn private_and_special_addresses_are_not_locatable() {
        for s in [
            "0.0.0.0",
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.0.1",
            "100.64.0.1",
            "100.127.255.255",
            "255.255.255.255",
            "224.0.0.1",
            "::",
            "::1",
            "fd00::1",
            "fe80::1",
            "ff02::1",
        ] {
            assert!(!is_locatable(ip(s)), "{s} should not be locatable");
        }
    }

    #[test]
    fn public_and_documentation_addresses_are_locatable() {
        for s in [
            "8.8.8.8",
            "100.63.0.1",
            "100.128.0.1",
            "192.0.2.1",
            "203.0.113.9",
            "2001:db8::1",
            "2a00:1450::1",
        ] {
            assert!(is_locatable(ip(s)), "{s} should be locatable");
        }
    }

    #[test]
    fn empty_geoip_finds_nothing() {
        let geo = GeoIp::open(&[]).unwrap();
        assert!(geo.is_empty());
        assert_eq!(geo.lookup(ip("8.8.8.8")), None);
    }

    #[test]
    fn missing_file_names_the_path() {
        let path = PathBuf::from("/nonexistent/geoturn/city.mmdb");
        let err = GeoIp::open(std::slice::from_ref(&path)).unwrap_err();
        assert!(matches!(&err, GeoError::Read { path: p, .. } if *p == path));
        assert!(err.to_string().contains("/nonexistent/geoturn/city.mmdb"));
    }
}
