//! Hit counts over the last hour and day from cumulative counters.
//!
//! The service counts hits per rule as ever-growing totals (its metrics).
//! [`HitHistory`] keeps a sample of those totals per minute for a day, so
//! the counts of a window are the totals now minus the totals at the
//! window's start: off the event path, a day of samples per rule in memory.

use std::collections::{BTreeMap, VecDeque};

use crate::engine::{HitCounts, Window};

/// One sample of the totals.
#[derive(Debug, Clone)]
struct Sample {
    at_secs: i64,
    events: u64,
    hits: BTreeMap<String, u64>,
}

/// Samples of cumulative counters, one per minute at most, for a day.
#[derive(Debug, Default)]
pub struct HitHistory {
    samples: VecDeque<Sample>,
}

const HOUR: i64 = 3600;
const DAY: i64 = 86_400;

impl HitHistory {
    /// Records the totals at `at_secs` (Unix seconds). A sample less than a
    /// minute after the last one replaces it; samples older than a day go.
    pub fn record(&mut self, at_secs: i64, events: u64, hits: BTreeMap<String, u64>) {
        let sample = Sample {
            at_secs,
            events,
            hits,
        };
        let keep_last = self.samples.len() >= 2
            && self
                .samples
                .iter()
                .rev()
                .nth(1)
                .is_some_and(|s| at_secs - s.at_secs < 60);
        if keep_last {
            self.samples.pop_back();
        }
        self.samples.push_back(sample);
        while self
            .samples
            .front()
            .is_some_and(|s| at_secs - s.at_secs > DAY + 60)
        {
            self.samples.pop_front();
        }
    }

    /// The counts of the last hour and day as of the newest sample. A
    /// window older than the history counts from its first sample; a
    /// counter that went down (a restart) counts from zero.
    pub fn counts(&self) -> HitCounts {
        HitCounts {
            hour: self.window(HOUR),
            day: self.window(DAY),
        }
    }

    fn window(&self, secs: i64) -> Window {
        let Some(now) = self.samples.back() else {
            return Window::default();
        };
        let start = self
            .samples
            .iter()
            .find(|s| now.at_secs - s.at_secs <= secs)
            .unwrap_or(now);
        let delta = |a: u64, b: u64| if a >= b { a - b } else { a };
        Window {
            events: delta(now.events, start.events),
            hits: now
                .hits
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        delta(*v, start.hits.get(k).copied().unwrap_or(0)),
                    )
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hits(n: u64) -> BTreeMap<String, u64> {
        BTreeMap::from([("r".to_owned(), n)])
    }

    #[test]
    fn windows_are_differences_of_totals() {
        let mut h = HitHistory::default();
        let t0 = 1_000_000;
        h.record(t0, 0, hits(0));
        h.record(t0 + 2 * HOUR, 100, hits(10));
        h.record(t0 + 2 * HOUR + 30 * 60, 160, hits(16));
        h.record(t0 + 3 * HOUR, 200, hits(25));
        let c = h.counts();
        // The hour starts at the sample taken exactly an hour before.
        assert_eq!((c.hour.events, c.hour.hits["r"]), (100, 15));
        assert_eq!((c.day.events, c.day.hits["r"]), (200, 25));
    }

    #[test]
    fn a_counter_reset_counts_from_zero() {
        let mut h = HitHistory::default();
        h.record(0, 500, hits(50));
        h.record(600, 20, hits(3));
        assert_eq!(h.counts().hour.events, 20);
        assert_eq!(h.counts().hour.hits["r"], 3);
    }
}
