//! The (sensor, timestamp) keys of a file's accepted rows, for the duplicate rule.
//!
//! Part of the validation stage, and the one structure that grows with the file, so it is
//! kept compact. Rows usually come in time order per sensor: while they do, a sensor's times
//! are stored as the change of the gap between them (sensors report at a near-constant
//! interval), zigzag- and LEB128-encoded in whole seconds (or in microseconds once a gap is
//! not a whole second): one byte a row while the interval varies by less than a minute; a
//! lookup of a later time is one comparison. The first time that arrives out of order turns
//! that sensor's times into an ordered set (a B-tree, some 10 to 20 bytes a row), in which any
//! arrival order, descending included, costs a logarithmic insert.

use std::collections::BTreeSet;

use std::collections::hash_map::Entry;

use foldhash::HashMap;

const MICROS_PER_SECOND: i64 = 1_000_000;

/// The keys seen so far.
#[derive(Debug, Default)]
pub struct KeySet {
    by_sensor: HashMap<i64, Times>,
}

#[derive(Debug)]
enum Times {
    /// Strictly increasing so far: `first`, then for each gap (divided by `unit`) its
    /// difference to the previous gap, as zigzag varints.
    Ascending {
        first: i64,
        last: i64,
        unit: i64,
        previous_gap: i64,
        gaps: Vec<u8>,
    },
    /// In no particular arrival order.
    Sorted(BTreeSet<i64>),
}

impl KeySet {
    /// Whether `(sensor_id, ts)` was inserted.
    pub fn contains(&mut self, (sensor_id, ts): (i64, i64)) -> bool {
        self.by_sensor
            .get_mut(&sensor_id)
            .is_some_and(|times| times.contains(ts))
    }

    /// Adds `(sensor_id, ts)` unless it is there; whether it was added. One lookup of the
    /// sensor, where `contains` and then adding would take two.
    pub fn insert_if_absent(&mut self, (sensor_id, ts): (i64, i64)) -> bool {
        match self.by_sensor.entry(sensor_id) {
            Entry::Vacant(vacant) => {
                vacant.insert(Times::new(ts));
                true
            }
            Entry::Occupied(mut occupied) => {
                let times = occupied.get_mut();
                if times.contains(ts) {
                    false
                } else {
                    times.insert(ts);
                    true
                }
            }
        }
    }
}

impl Times {
    fn new(ts: i64) -> Self {
        Times::Ascending {
            first: ts,
            last: ts,
            unit: MICROS_PER_SECOND,
            previous_gap: 0,
            gaps: Vec::new(),
        }
    }

    fn contains(&mut self, ts: i64) -> bool {
        match self {
            Times::Ascending { last, .. } if ts > *last => false,
            Times::Ascending { last, .. } if ts == *last => true,
            Times::Ascending { .. } => {
                self.make_sorted();
                self.contains_sorted(ts)
            }
            Times::Sorted(_) => self.contains_sorted(ts),
        }
    }

    fn insert(&mut self, ts: i64) {
        if let Times::Ascending {
            first,
            last,
            unit,
            previous_gap,
            gaps,
        } = self
        {
            if ts == *first && gaps.is_empty() {
                return;
            }
            if ts > *last {
                let gap = ts - *last;
                if gap % *unit != 0 {
                    // A gap finer than the unit: re-encode the earlier gaps in microseconds.
                    let decoded = decode_gaps(gaps, *unit);
                    gaps.clear();
                    *previous_gap = 0;
                    for earlier in decoded {
                        push_gap(gaps, previous_gap, earlier);
                    }
                    *unit = 1;
                }
                push_gap(gaps, previous_gap, gap / *unit);
                *last = ts;
                return;
            }
            self.make_sorted();
        }
        if let Times::Sorted(sorted) = self {
            sorted.insert(ts);
        }
    }

    fn make_sorted(&mut self) {
        if let Times::Ascending {
            first, unit, gaps, ..
        } = self
        {
            let mut ts = *first;
            let mut sorted = BTreeSet::from([ts]);
            for gap in decode_gaps(gaps, *unit) {
                ts += gap;
                sorted.insert(ts);
            }
            *self = Times::Sorted(sorted);
        }
    }

    fn contains_sorted(&self, ts: i64) -> bool {
        match self {
            Times::Sorted(sorted) => sorted.contains(&ts),
            Times::Ascending { .. } => unreachable!("made sorted before the search"),
        }
    }
}

/// Grows by an eighth rather than doubling: this structure grows with the file.
fn grow<T>(vec: &mut Vec<T>) {
    if vec.len() == vec.capacity() {
        vec.reserve_exact((vec.len() / 8).max(64));
    }
}

/// Appends a gap (in units) as its zigzag-encoded difference to the previous one.
fn push_gap(bytes: &mut Vec<u8>, previous_gap: &mut i64, gap: i64) {
    let change = gap - *previous_gap;
    *previous_gap = gap;
    let mut value = ((change << 1) ^ (change >> 63)) as u64;
    loop {
        grow(bytes);
        let low = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            bytes.push(low);
            return;
        }
        bytes.push(low | 0x80);
    }
}

/// The gaps in microseconds.
fn decode_gaps(bytes: &[u8], unit: i64) -> Vec<i64> {
    let mut gaps = Vec::new();
    let (mut value, mut shift, mut gap) = (0u64, 0u32, 0i64);
    for byte in bytes {
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            let change = ((value >> 1) as i64) ^ -((value & 1) as i64);
            gap += change;
            gaps.push(gap * unit);
            value = 0;
            shift = 0;
        } else {
            shift += 7;
        }
    }
    gaps
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = MICROS_PER_SECOND;

    #[test]
    fn rows_in_and_out_of_time_order() {
        let mut keys = KeySet::default();
        for (sensor, ts) in [(1, 10), (1, 20), (2, 10), (1, 15), (1, 5), (1, 20)] {
            keys.insert_if_absent((sensor, ts * S));
        }
        for present in [(1, 5), (1, 10), (1, 15), (1, 20), (2, 10)] {
            assert!(keys.contains((present.0, present.1 * S)), "{present:?}");
        }
        for absent in [(1, 11), (1, 25), (2, 5), (3, 10)] {
            assert!(!keys.contains((absent.0, absent.1 * S)), "{absent:?}");
        }
    }

    #[test]
    fn ascending_times_stay_compact_and_survive_a_finer_gap() {
        let mut keys = KeySet::default();
        let mut ts = 1_500_000_000 * S;
        let mut all = Vec::new();
        for i in 0..10_000i64 {
            ts += (140 + i % 11) * S;
            if i == 9_000 {
                ts += 250_000; // a gap that is not a whole second
            }
            assert!(keys.insert_if_absent((7, ts)));
            all.push(ts);
        }
        match &keys.by_sensor[&7] {
            Times::Ascending { gaps, unit, .. } => {
                assert_eq!(*unit, 1);
                assert!(gaps.len() <= 4 * all.len(), "{} bytes", gaps.len());
            }
            Times::Sorted(_) => panic!("ascending input stays ascending"),
        }
        // Later times are absent, each time seen is present, and times between are absent.
        assert!(!keys.contains((7, ts + 1)));
        assert!(keys.contains((7, all[9_999])));
        for (i, t) in all.iter().enumerate().step_by(997) {
            assert!(keys.contains((7, *t)), "time {i}");
            assert!(!keys.contains((7, *t - 1)), "before time {i}");
        }
        match &keys.by_sensor[&7] {
            Times::Sorted(sorted) => assert!(sorted.iter().eq(all.iter())),
            Times::Ascending { .. } => panic!("an earlier lookup sorts the times"),
        }
    }

    #[test]
    fn insert_if_absent_adds_once() {
        let mut keys = KeySet::default();
        assert!(keys.insert_if_absent((1, 10 * S)));
        assert!(keys.insert_if_absent((1, 20 * S)));
        assert!(!keys.insert_if_absent((1, 10 * S)));
        assert!(!keys.insert_if_absent((1, 20 * S)));
        assert!(keys.insert_if_absent((1, 15 * S)));
        assert!(keys.insert_if_absent((2, 10 * S)));
        assert!(keys.contains((1, 15 * S)) && keys.contains((2, 10 * S)));
    }

    #[test]
    fn descending_times_are_found_and_duplicates_caught() {
        let mut keys = KeySet::default();
        for i in (0..50_000i64).rev() {
            let ts = i * 60 * S;
            assert!(keys.insert_if_absent((3, ts)), "{i}");
        }
        assert!(!keys.insert_if_absent((3, 25_000 * 60 * S)));
        for i in [0, 1, 25_000, 49_999] {
            assert!(keys.contains((3, i * 60 * S)));
            assert!(!keys.contains((3, i * 60 * S + 1)));
        }
    }

    #[test]
    fn near_regular_whole_second_gaps_take_a_byte_a_row() {
        let mut keys = KeySet::default();
        let mut ts = 1_600_000_000 * S;
        let mut all = Vec::new();
        for i in 0..100_000i64 {
            // 145 s give or take up to 20 s, and now and then a long pause.
            ts += (145 + (i * 7919) % 41 - 20 + if i % 5000 == 0 { 86_400 } else { 0 }) * S;
            assert!(keys.insert_if_absent((1, ts)));
            all.push(ts);
        }
        match &keys.by_sensor[&1] {
            Times::Ascending { gaps, unit, .. } => {
                assert_eq!(*unit, S);
                assert!(
                    gaps.len() < 100_100 + 100_000 / 8 + 64,
                    "{} bytes",
                    gaps.len()
                );
            }
            Times::Sorted(_) => panic!("ascending input stays ascending"),
        }
        // Decoding gives the times back exactly.
        for (i, t) in all.iter().enumerate().step_by(4999) {
            assert!(keys.contains((1, *t)), "time {i}");
            assert!(!keys.contains((1, *t + S)), "after time {i}");
        }
    }
}
