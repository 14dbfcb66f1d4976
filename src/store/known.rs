//! Sensors and locations this process has seen committed, so that a delivery does not enter
//! them again: rows of `sensors`, `locations` and `sensor_spans` are never deleted once a
//! transaction that loaded readings of them committed, so what is remembered here stays true
//! whatever other processes do. It only saves statements and index probes; a sensor missing
//! here is entered as if new (`ON CONFLICT DO NOTHING`), so forgetting is always safe.
//!
//! Bounded: past [`MAX_REMEMBERED`] entries of a kind, new ones are no longer remembered.

use std::collections::HashSet;
use std::sync::Mutex;

/// Entries of each kind remembered at most (a few tens of MB for the largest fleets).
pub const MAX_REMEMBERED: usize = 2_000_000;

/// Sensors and locations known to be stored (see the module header).
#[derive(Debug, Default)]
pub struct Known {
    sensors: Mutex<HashSet<i64>>,
    locations: Mutex<HashSet<i64>>,
}

impl Known {
    /// Those of `sensors` not known to be stored, in the order given.
    pub fn unknown_sensors(&self, sensors: &[i64]) -> Vec<i64> {
        unknown(&self.sensors, sensors)
    }

    /// Those of `locations` not known to be stored, in the order given.
    pub fn unknown_locations(&self, locations: &[i64]) -> Vec<i64> {
        unknown(&self.locations, locations)
    }

    /// Remembers sensors and locations whose rows a committed transaction stored.
    pub fn remember(&self, sensors: &[i64], locations: &[i64]) {
        remember(&self.sensors, sensors);
        remember(&self.locations, locations);
    }
}

fn unknown(set: &Mutex<HashSet<i64>>, ids: &[i64]) -> Vec<i64> {
    let set = set
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    ids.iter().copied().filter(|id| !set.contains(id)).collect()
}

fn remember(set: &Mutex<HashSet<i64>>, ids: &[i64]) {
    let mut set = set
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    for id in ids {
        if set.len() >= MAX_REMEMBERED {
            return;
        }
        set.insert(*id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_what_was_committed_and_only_that() {
        let known = Known::default();
        assert_eq!(known.unknown_sensors(&[3, 1, 2]), vec![3, 1, 2]);
        known.remember(&[1, 3], &[7]);
        assert_eq!(known.unknown_sensors(&[3, 1, 2]), vec![2]);
        assert_eq!(known.unknown_locations(&[7, 8]), vec![8]);
        assert_eq!(
            known.unknown_locations(&[1]),
            vec![1],
            "sensors are not locations"
        );
    }
}
