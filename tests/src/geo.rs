//! GeoIP fixtures: small GeoIP2-City-shaped databases written at test time (never downloaded).

use std::path::{Path, PathBuf};

use mmdb_writer::{IpVersion, Writer};

#[derive(serde::Serialize)]
struct City {
    location: Location,
}

#[derive(serde::Serialize)]
struct Location {
    latitude: f64,
    longitude: f64,
}

/// Writes `dir/city.mmdb`, an IPv4 GeoIP2-City database placing each `(network, lat, lon)`.
pub fn write_city_db(dir: &Path, places: &[(&str, f64, f64)]) -> PathBuf {
    let mut w = Writer::builder("GeoIP2-City")
        .ip_version(IpVersion::V4)
        .build();
    for (net, latitude, longitude) in places {
        let net: ipnet::IpNet = net.parse().expect("fixture networks are valid CIDRs");
        let city = City {
            location: Location {
                latitude: *latitude,
                longitude: *longitude,
            },
        };
        w.insert(net, &city).expect("fixture record");
    }
    let path = dir.join("city.mmdb");
    std::fs::write(&path, w.to_bytes().expect("fixture database")).expect("write city.mmdb");
    path
}
