//! How loaded a relay is: the one formula the router ranks by, the relay picks drain and
//! first-contact siblings by, and the dashboard shows. A relay is as loaded as its busier
//! resource: allocations against the allocations it is sized for, or relayed bandwidth
//! against its bandwidth capacity.

/// A relay's load and which resource it comes from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Load {
    /// Utilisation of the busier resource, 0 (idle) upwards; 1 is full.
    pub value: f64,
    /// True when bandwidth, not the allocation count, sets it.
    pub by_bandwidth: bool,
}

impl Load {
    /// The load of a relay with `allocations` of `capacity_allocations` and `bps` of
    /// `capacity_bps` relayed bits per second (both directions). A capacity of 0 is unknown
    /// and counts as idle.
    pub fn of(allocations: u64, capacity_allocations: u64, bps: u64, capacity_bps: u64) -> Self {
        let allocations = utilisation(allocations, capacity_allocations);
        let bandwidth = utilisation(bps, capacity_bps);
        Self {
            value: allocations.max(bandwidth),
            by_bandwidth: bandwidth > allocations,
        }
    }
}

fn utilisation(used: u64, capacity: u64) -> f64 {
    if capacity == 0 {
        0.0
    } else {
        used as f64 / capacity as f64
    }
}

#[cfg(test)]
mod tests {
    use super::Load;

    #[test]
    fn the_busier_resource_sets_the_load() {
        assert_eq!(
            Load::of(50, 100, 100, 1000),
            Load {
                value: 0.5,
                by_bandwidth: false
            }
        );
        assert_eq!(
            Load::of(10, 100, 900, 1000),
            Load {
                value: 0.9,
                by_bandwidth: true
            }
        );
        assert_eq!(Load::of(5, 0, 5, 0).value, 0.0);
    }
}
