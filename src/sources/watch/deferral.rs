//! Files set aside after a local fault (disk full, permission denied, a source that vanished,
//! changed while read, or is not final yet): each waits a pause that doubles on each fault, up
//! to a cap, then is offered again. The fault is said once per file when it starts and once
//! when it clears, never in a loop; the count is a metric and makes `/readyz` answer 503.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tracing::{info, warn};

/// First pause after a local fault.
const FIRST_PAUSE: Duration = Duration::from_millis(500);

/// The longest pause: a fault that clears (space freed, a permission given) is noticed within
/// it, whatever the retry policy for database outages says. A look costs a `stat` and one
/// attempt, so this is no hot loop.
const MAX_PAUSE: Duration = Duration::from_secs(10);

/// Files waiting out a local fault, by name.
#[derive(Default)]
pub struct Deferrals {
    files: HashMap<String, Deferred>,
}

struct Deferred {
    until: Instant,
    pause: Duration,
    fault: bool,
}

/// Why a file is set aside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// A fault of the machine (disk full, permission denied …): counted and reported.
    Fault,
    /// The file is not ready (not final yet, changed while read): a writer is at work.
    NotReady,
}

impl Deferrals {
    /// Sets `name` aside; says so the first time.
    pub fn defer(&mut self, name: &str, why: Why, reason: &str, max_pause: Duration) {
        let now = Instant::now();
        match self.files.get_mut(name) {
            Some(deferred) => {
                deferred.pause = (deferred.pause * 2).min(max_pause.clamp(FIRST_PAUSE, MAX_PAUSE));
                deferred.until = now + deferred.pause;
                deferred.fault = why == Why::Fault;
            }
            None => {
                match why {
                    Why::Fault => warn!(
                        message = "Local fault; the file stays in the inbox and is tried again after a pause.",
                        file = %name,
                        reason = %reason
                    ),
                    Why::NotReady => info!(
                        message = "The file is not ready yet; it is tried again after a pause.",
                        file = %name,
                        reason = %reason
                    ),
                }
                self.files.insert(
                    name.to_owned(),
                    Deferred {
                        until: now + FIRST_PAUSE,
                        pause: FIRST_PAUSE,
                        fault: why == Why::Fault,
                    },
                );
            }
        }
        self.report();
    }

    fn report(&self) {
        crate::telemetry::record_local_faults(self.files.values().filter(|d| d.fault).count());
    }

    /// `name` went through: its fault, if any, has cleared.
    pub fn clear(&mut self, name: &str) {
        if let Some(deferred) = self.files.remove(name) {
            if deferred.fault {
                info!(message = "Local fault cleared.", file = %name);
            }
            self.report();
        }
    }

    /// Whether `name` is still waiting out its pause.
    pub fn is_waiting(&self, name: &str) -> bool {
        self.files
            .get(name)
            .is_some_and(|deferred| deferred.until > Instant::now())
    }

    /// Forgets files that left the inbox.
    pub fn retain(&mut self, present: impl Fn(&str) -> bool) {
        let before = self.files.len();
        self.files.retain(|name, _| present(name));
        if self.files.len() != before {
            self.report();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_double_up_to_the_cap_and_clear_on_success() {
        let mut deferrals = Deferrals::default();
        let cap = Duration::from_secs(2);
        deferrals.defer("a.csv", Why::Fault, "disk full", cap);
        assert!(deferrals.is_waiting("a.csv"));
        for _ in 0..10 {
            deferrals.defer("a.csv", Why::Fault, "disk full", cap);
        }
        assert_eq!(deferrals.files["a.csv"].pause, cap);
        deferrals.clear("a.csv");
        assert!(!deferrals.is_waiting("a.csv"));
    }
}
