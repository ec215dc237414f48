//! The part of an mmdb record the router reads, in either city layout.
//!
//! One serde struct covers both layouts so a lookup decodes the record once: fields it does not
//! name are skipped by the decoder without being materialised, which keeps a full GeoIP2-City
//! record (names in a dozen languages) as cheap as a flat DB-IP one.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

use super::Location;

/// A city record in the GeoIP2 layout, the flat DB-IP / ip-location-db layout, or neither.
#[derive(Debug, Default, Deserialize)]
pub(super) struct CityRecord<'a> {
    /// GeoIP2 / GeoLite2-City: `location.latitude`, `location.longitude`.
    #[serde(default)]
    location: Option<NestedLocation>,
    /// GeoIP2 / GeoLite2-City: `country.iso_code`.
    #[serde(default, borrow)]
    country: Option<NestedCountry<'a>>,
    /// DB-IP / ip-location-db: top-level `latitude` (a 32-bit float there).
    #[serde(default)]
    latitude: Option<Coordinate>,
    /// DB-IP / ip-location-db: top-level `longitude`.
    #[serde(default)]
    longitude: Option<Coordinate>,
    /// DB-IP / ip-location-db: top-level `country_code`.
    #[serde(default, borrow)]
    country_code: Option<&'a str>,
}

#[derive(Debug, Default, Deserialize)]
struct NestedLocation {
    #[serde(default)]
    latitude: Option<Coordinate>,
    #[serde(default)]
    longitude: Option<Coordinate>,
}

#[derive(Debug, Default, Deserialize)]
struct NestedCountry<'a> {
    #[serde(default, borrow)]
    iso_code: Option<&'a str>,
}

impl CityRecord<'_> {
    /// The position this record gives, if it gives a usable one.
    ///
    /// The GeoIP2 layout wins when a record somehow carries both. Records with a country but no
    /// coordinates (country-level rows) and coordinates outside the globe count as not found, so
    /// the caller can try its next database.
    pub(super) fn into_location(self) -> Option<Location> {
        let nested = self
            .location
            .and_then(|l| Some((l.latitude?.0, l.longitude?.0)));
        let flat = || Some((self.latitude?.0, self.longitude?.0));
        let (lat, lon) = nested.or_else(flat)?;
        // `contains` is false for NaN, so NaN is refused too.
        if !(-90.0..=90.0).contains(&lat) || !(-180.0..=180.0).contains(&lon) {
            return None;
        }
        let country = self
            .country
            .and_then(|c| c.iso_code)
            .or(self.country_code)
            .filter(|c| !c.is_empty())
            .map(str::to_owned);
        Some(Location { lat, lon, country })
    }
}

/// A latitude or longitude stored as either an mmdb `double` (GeoIP2) or `float` (DB-IP).
///
/// maxminddb's typed `f64` path accepts only `double`, so this asks for "any" value and takes
/// both: serde's default `visit_f32` widens to `visit_f64`.
#[derive(Debug, Clone, Copy)]
struct Coordinate(f64);

impl<'de> Deserialize<'de> for Coordinate {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct CoordinateVisitor;

        impl Visitor<'_> for CoordinateVisitor {
            type Value = Coordinate;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a float or double coordinate")
            }

            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Coordinate, E> {
                Ok(Coordinate(v))
            }
        }

        deserializer.deserialize_any(CoordinateVisitor)
    }
}
