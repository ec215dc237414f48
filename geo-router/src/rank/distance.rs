//! Great-circle distance and the round trip it implies.

/// Mean Earth radius (IUGG), the usual choice for haversine at this precision.
pub const EARTH_RADIUS_KM: f64 = 6371.0;

/// Great-circle distance in kilometres between two points given in degrees (haversine).
///
/// Haversine stays accurate for the short distances that matter most here (a client a few
/// kilometres from a relay), where the spherical law of cosines loses precision.
pub fn haversine_km(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    Origin::new(lat1, lon1).km_to(lat2, lon2)
}

/// A point on the unit sphere, from degrees.
pub(super) fn unit_vector(lat: f64, lon: f64) -> [f64; 3] {
    let (lat, lon) = (lat.to_radians(), lon.to_radians());
    let (sin_lat, cos_lat) = lat.sin_cos();
    let (sin_lon, cos_lon) = lon.sin_cos();
    [cos_lat * cos_lon, cos_lat * sin_lon, sin_lat]
}

/// One end of many distances (the client), with its cosine and unit vector computed once: the
/// ranking measures from it to every relay, and the trigonometry is most of that work.
#[derive(Debug, Clone, Copy)]
pub(super) struct Origin {
    lat: f64,
    lon: f64,
    cos_lat: f64,
    unit: [f64; 3],
}

impl Origin {
    pub(super) fn new(lat: f64, lon: f64) -> Self {
        Self {
            lat,
            lon,
            cos_lat: lat.to_radians().cos(),
            unit: unit_vector(lat, lon),
        }
    }

    /// Great-circle distance to a point given as its unit vector (a relay's, computed once per
    /// snapshot): the chord between the two is 2·sin(θ/2), so the haversine's
    /// h = sin²(θ/2) = chord²/4 comes from three subtractions, and only the asin remains.
    /// Differences of unit vectors lose nothing that matters here (about 0.1 m at worst).
    pub(super) fn km_to_unit(&self, to: &[f64; 3]) -> f64 {
        let chord2: f64 = self
            .unit
            .iter()
            .zip(to)
            .map(|(a, b)| (a - b) * (a - b))
            .sum();
        let h = chord2 / 4.0;
        2.0 * EARTH_RADIUS_KM * h.clamp(0.0, 1.0).sqrt().asin()
    }

    /// Haversine distance to a point in degrees.
    pub(super) fn km_to(&self, lat: f64, lon: f64) -> f64 {
        let d_phi = (lat - self.lat).to_radians();
        let d_lambda = (lon - self.lon).to_radians();
        let h = (d_phi / 2.0).sin().powi(2)
            + self.cos_lat * lat.to_radians().cos() * (d_lambda / 2.0).sin().powi(2);
        // Rounding can push h a hair past 1 for antipodal points; asin would then be NaN.
        // asin(sqrt h) equals the textbook atan2(sqrt h, sqrt(1 - h)) on 0..=1, at half the cost.
        2.0 * EARTH_RADIUS_KM * h.clamp(0.0, 1.0).sqrt().asin()
    }
}

/// Estimated round-trip time in milliseconds over `distance_km` of great circle: there and
/// back, stretched by how much longer real routes are than the great circle, at the speed of
/// light in fibre.
pub(super) fn estimated_rtt_ms(
    distance_km: f64,
    route_inflation: f64,
    fibre_km_per_ms: f64,
) -> f64 {
    2.0 * distance_km * route_inflation / fibre_km_per_ms
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_within_percent(actual: f64, expected: f64, percent: f64) {
        let tolerance = expected * percent / 100.0;
        assert!(
            (actual - expected).abs() <= tolerance,
            "{actual} km is not within {percent}% of {expected} km"
        );
    }

    #[test]
    fn london_new_york() {
        // LHR-area to NYC-area centre points; the published great-circle figure is ~5570 km.
        let d = haversine_km(51.5074, -0.1278, 40.7128, -74.0060);
        assert_within_percent(d, 5570.0, 1.0);
    }

    #[test]
    fn sydney_singapore_and_paris_berlin() {
        assert_within_percent(
            haversine_km(-33.8688, 151.2093, 1.3521, 103.8198),
            6300.0,
            1.0,
        );
        assert_within_percent(haversine_km(48.8566, 2.3522, 52.5200, 13.4050), 878.0, 1.0);
    }

    #[test]
    fn zero_symmetric_and_antipodal() {
        assert_eq!(haversine_km(10.0, 20.0, 10.0, 20.0), 0.0);
        let ab = haversine_km(35.0, 139.0, -23.5, -46.6);
        let ba = haversine_km(-23.5, -46.6, 35.0, 139.0);
        assert!((ab - ba).abs() < 1e-9);
        // Half the circumference, without NaN from rounding.
        let half = std::f64::consts::PI * EARTH_RADIUS_KM;
        assert!((haversine_km(0.0, 0.0, 0.0, 180.0) - half).abs() < 1e-6);
        assert!((haversine_km(90.0, 0.0, -90.0, 0.0) - half).abs() < 1e-6);
    }

    #[test]
    fn across_the_antimeridian() {
        // Fiji to Samoa is short even though the longitudes differ by ~350 degrees.
        let d = haversine_km(-18.0, 178.0, -14.0, -172.0);
        assert!(d < 1200.0, "{d}");
    }

    #[test]
    fn the_chord_agrees_with_the_haversine() {
        let points = [
            (51.5074, -0.1278),
            (40.7128, -74.0060),
            (1.3521, 103.8198),
            (-33.8688, 151.2093),
            (50.1109, 8.6821),
            (50.1110, 8.6822),
            (-51.5, 179.9),
            (51.5, -0.1),
        ];
        for &(a_lat, a_lon) in &points {
            let origin = Origin::new(a_lat, a_lon);
            for &(b_lat, b_lon) in &points {
                let h = origin.km_to(b_lat, b_lon);
                let c = origin.km_to_unit(&unit_vector(b_lat, b_lon));
                assert!(
                    (h - c).abs() < 1e-3,
                    "{a_lat},{a_lon} -> {b_lat},{b_lon}: {h} vs {c}"
                );
            }
        }
    }

    #[test]
    fn rtt_from_distance() {
        // 1000 km, 1.5x route inflation, 200 km/ms: 2 * 1000 * 1.5 / 200 = 15 ms.
        assert!((estimated_rtt_ms(1000.0, 1.5, 200.0) - 15.0).abs() < 1e-9);
    }
}
