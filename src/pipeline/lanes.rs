//! Lanes: a group of deliveries split into parts that can be written at the same time, each in
//! its own transaction, in any order between them.
//!
//! Two deliveries are tied when they share anything whose stored outcome depends on which of
//! them is written first: a sensor (its readings, their conflicts and replacements, its span,
//! latest values and statistics), a location, a content hash (the first is the delivery, the
//! second its duplicate), an `Idempotency-Key` or a device. Tied deliveries, directly or through
//! others, always go in the same lane, in the order given; deliveries of different lanes share
//! none of these, so whichever lane commits first, every lane's outcome is the one the order
//! given would have had. The journal drain so loads a batch on several connections and still in
//! journal order.

use std::collections::HashMap;

/// Something a delivery shares with others that orders them (see the module header).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tie<'a> {
    Sensor(i64),
    Location(i64),
    Content(&'a str),
    Key(&'a str),
    Device(&'a str),
}

/// Splits deliveries `0..ties.len()` into at most `lanes` lanes (see the module header):
/// deliveries tied to each other stay together, and whole sets of tied deliveries go to the
/// lane with the least weight so far. Returns the non-empty lanes, each in the order given, the
/// lane holding the first delivery first.
pub fn split(ties: &[Vec<Tie<'_>>], weights: &[u64], lanes: usize) -> Vec<Vec<usize>> {
    let mut sets = TiedSets::new(ties.len());
    let mut first_with: HashMap<Tie<'_>, usize> = HashMap::new();
    for (delivery, delivery_ties) in ties.iter().enumerate() {
        for tie in delivery_ties {
            match first_with.get(tie) {
                Some(&other) => sets.join(other, delivery),
                None => {
                    first_with.insert(*tie, delivery);
                }
            }
        }
    }
    // Sets in the order of their first delivery; each to the lightest lane.
    let mut lane_of_set: HashMap<usize, usize> = HashMap::new();
    let mut set_weight: HashMap<usize, u64> = HashMap::new();
    for (delivery, weight) in weights.iter().enumerate() {
        *set_weight.entry(sets.root(delivery)).or_default() += weight;
    }
    let mut load = vec![0u64; lanes.max(1)];
    let mut split: Vec<Vec<usize>> = vec![Vec::new(); lanes.max(1)];
    for delivery in 0..ties.len() {
        let set = sets.root(delivery);
        let lane = *lane_of_set.entry(set).or_insert_with(|| {
            let lightest = (0..load.len())
                .min_by_key(|&lane| load[lane])
                .unwrap_or_default();
            load[lightest] += set_weight[&set];
            lightest
        });
        split[lane].push(delivery);
    }
    split.retain(|lane| !lane.is_empty());
    split
}

/// Disjoint sets of deliveries (union by size, with path halving).
struct TiedSets {
    parent: Vec<usize>,
    size: Vec<usize>,
}

impl TiedSets {
    fn new(len: usize) -> Self {
        Self {
            parent: (0..len).collect(),
            size: vec![1; len],
        }
    }

    fn root(&mut self, mut member: usize) -> usize {
        while self.parent[member] != member {
            self.parent[member] = self.parent[self.parent[member]];
            member = self.parent[member];
        }
        member
    }

    fn join(&mut self, a: usize, b: usize) {
        let (a, b) = (self.root(a), self.root(b));
        if a == b {
            return;
        }
        let (big, small) = if self.size[a] >= self.size[b] {
            (a, b)
        } else {
            (b, a)
        };
        self.parent[small] = big;
        self.size[big] += self.size[small];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sensors(ids: &[i64]) -> Vec<Tie<'static>> {
        ids.iter().map(|&id| Tie::Sensor(id)).collect()
    }

    #[test]
    fn deliveries_tied_through_others_share_a_lane_in_their_order() {
        // 0 and 3 share nothing directly but both share a sensor with 2.
        let ties = vec![
            sensors(&[1]),
            sensors(&[7]),
            sensors(&[2, 1]),
            sensors(&[2]),
            sensors(&[8]),
        ];
        let lanes = split(&ties, &[1; 5], 2);
        assert_eq!(lanes, vec![vec![0, 2, 3], vec![1, 4]]);
    }

    #[test]
    fn untied_deliveries_are_balanced_by_weight() {
        let ties: Vec<_> = (0..6).map(|id| sensors(&[id])).collect();
        let lanes = split(&ties, &[10, 1, 1, 1, 1, 1], 2);
        assert_eq!(lanes, vec![vec![0], vec![1, 2, 3, 4, 5]]);
    }

    #[test]
    fn a_shared_content_key_or_device_ties_as_a_sensor_does() {
        let ties = vec![
            vec![Tie::Sensor(1), Tie::Content("aa")],
            vec![Tie::Sensor(2), Tie::Content("aa")],
            vec![Tie::Sensor(3), Tie::Key("k")],
            vec![Tie::Sensor(4), Tie::Device("esp8266-1")],
            vec![Tie::Sensor(5), Tie::Key("k")],
            vec![Tie::Sensor(6), Tie::Device("esp8266-1")],
            vec![Tie::Location(9)],
            vec![Tie::Location(9)],
        ];
        let lanes = split(&ties, &[1; 8], 3);
        assert_eq!(lanes, vec![vec![0, 1, 6, 7], vec![2, 4], vec![3, 5]]);
    }

    #[test]
    fn one_lane_when_everything_is_tied_or_one_is_asked() {
        let ties = vec![sensors(&[1]), sensors(&[1, 2]), sensors(&[2])];
        assert_eq!(split(&ties, &[1; 3], 4), vec![vec![0, 1, 2]]);
        let untied: Vec<_> = (0..3).map(|id| sensors(&[id])).collect();
        assert_eq!(split(&untied, &[1; 3], 1), vec![vec![0, 1, 2]]);
        assert!(split(&[], &[], 2).is_empty());
    }
}
