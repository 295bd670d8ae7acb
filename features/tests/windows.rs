//! The store against a brute-force reference on random event streams:
//! every feature of every event, out-of-order arrivals, redeliveries and
//! late events included.
//!
//! The reference keeps every event and recomputes each aggregate from the
//! list. It follows the store's documented precision: a window of `W` is
//! read in buckets of `W / 12` (the events whose bucket lies in the twelve
//! buckets ending at the reader's), an event older than a window's whole
//! span when it arrives is not added to that window, and an event later
//! than the allowed lateness is read but added nowhere.

mod common;

use std::collections::{HashMap, HashSet};

use common::*;
use proptest::prelude::*;
use verdict_core::Value;
use verdict_features::{StoreConfig, StreamClock, UpdateOutcome};

const BUCKETS: i64 = 12;

/// The added events of one (entity, feature) state, for the reference.
#[derive(Default)]
struct RefState {
    /// (time, value) of every event added to it.
    added: Vec<(i64, Option<String>, Option<i64>)>,
    /// Newest bucket added, for windowed features.
    head: Option<i64>,
}

impl RefState {
    /// Adds an event to a windowed state unless it is older than the
    /// state's whole span; `value` is what the feature reads of it.
    fn add_windowed(&mut self, t: i64, w: i64, s: Option<String>, x: Option<i64>) {
        let j = t.div_euclid(w / BUCKETS);
        if let Some(h) = self.head
            && j <= h - BUCKETS
        {
            return;
        }
        self.head = Some(self.head.map_or(j, |h| h.max(j)));
        self.added.push((t, s, x));
    }

    /// The added events a windowed read at `t` covers.
    fn in_window(
        &self,
        t: i64,
        w: i64,
    ) -> impl Iterator<Item = &(i64, Option<String>, Option<i64>)> {
        let width = w / BUCKETS;
        let i = t.div_euclid(width);
        let head = self.head.unwrap_or(i64::MIN / 2);
        self.added.iter().filter(move |(te, ..)| {
            let j = te.div_euclid(width);
            j <= i && j > i - BUCKETS && j > head - BUCKETS
        })
    }
}

#[derive(Default)]
struct Reference {
    /// Per user: count, sum/avg/min/max, devices, payments; per device: users.
    user_count: HashMap<String, RefState>,
    user_amount: HashMap<String, RefState>,
    user_devices: HashMap<String, RefState>,
    user_payments: HashMap<String, RefState>,
    device_users: HashMap<String, RefState>,
    /// Per user: (time, amount) of the newest event with an amount, and the
    /// newest event time.
    user_last: HashMap<String, (i64, i64)>,
    user_since: HashMap<String, i64>,
    seen_ids: HashSet<String>,
    watermark: Option<i64>,
}

fn num(x: f64) -> Value {
    Value::Number(x)
}

impl Reference {
    /// What the store must answer for `e`, then the update, as the store
    /// does.
    fn step(&mut self, e: &Ev, lateness_ms: i64) -> (Vec<(&'static str, Value)>, UpdateOutcome) {
        let t = e.t;
        let fresh = self.seen_ids.insert(e.id.clone());
        let wm = self.watermark.map_or(t, |w| w.max(t));
        self.watermark = Some(wm);
        let outcome = if !fresh {
            UpdateOutcome::Duplicate
        } else if t < wm - lateness_ms {
            UpdateOutcome::TooLate
        } else {
            UpdateOutcome::Added
        };
        let h = HOUR;
        let m10 = 600_000;
        let u = &e.user;
        let count = self
            .user_count
            .get(u)
            .map_or(0, |s| s.in_window(t, h).count());
        let amounts: Vec<i64> = self
            .user_amount
            .get(u)
            .map(|s| s.in_window(t, h).filter_map(|x| x.2).collect())
            .unwrap_or_default();
        let sum: i64 = amounts.iter().sum();
        let distinct = |s: Option<&RefState>, w: i64| {
            let mut newest: HashMap<&str, i64> = HashMap::new();
            for (te, v, _) in s.map(|s| s.added.as_slice()).unwrap_or_default() {
                let n = newest.entry(v.as_deref().unwrap()).or_insert(*te);
                *n = (*n).max(*te);
            }
            newest.values().filter(|te| **te > t - w).count() as f64
        };
        let mut expect = vec![
            ("feature.user.count_1h", num(count as f64)),
            ("feature.user.sum_1h", num(sum as f64)),
            (
                "feature.user.avg_1h",
                if amounts.is_empty() {
                    Value::Missing
                } else {
                    num(sum as f64 / amounts.len() as f64)
                },
            ),
            (
                "feature.user.min_1h",
                amounts
                    .iter()
                    .min()
                    .map_or(Value::Missing, |x| num(*x as f64)),
            ),
            (
                "feature.user.max_1h",
                amounts
                    .iter()
                    .max()
                    .map_or(Value::Missing, |x| num(*x as f64)),
            ),
            (
                "feature.user.devices_1h",
                num(distinct(self.user_devices.get(u), h)),
            ),
            (
                "feature.user.last_amount",
                self.user_last
                    .get(u)
                    .map_or(Value::Missing, |(_, a)| num(*a as f64)),
            ),
            (
                "feature.user.since",
                self.user_since
                    .get(u)
                    .map_or(Value::Missing, |at| num((t - at).max(0) as f64 / 1000.0)),
            ),
            (
                "feature.user.payments_1h",
                num(self
                    .user_payments
                    .get(u)
                    .map_or(0, |s| s.in_window(t, h).count()) as f64),
            ),
        ];
        expect.push((
            "feature.device.users_10m",
            match &e.device {
                Some(d) => num(distinct(self.device_users.get(d), m10)),
                None => num(0.0),
            },
        ));
        if outcome == UpdateOutcome::Added {
            self.user_count
                .entry(u.clone())
                .or_default()
                .add_windowed(t, h, None, None);
            // Sum, avg, min and max share their input; an event without an
            // amount adds nothing to them.
            if let Some(a) = e.amount {
                self.user_amount
                    .entry(u.clone())
                    .or_default()
                    .add_windowed(t, h, None, Some(a));
                let last = self.user_last.entry(u.clone()).or_insert((t, a));
                if t >= last.0 {
                    *last = (t, a);
                }
            }
            if let Some(d) = &e.device {
                self.user_devices
                    .entry(u.clone())
                    .or_default()
                    .add_windowed(t, h, Some(d.clone()), None);
                self.device_users
                    .entry(d.clone())
                    .or_default()
                    .add_windowed(t, m10, Some(u.clone()), None);
            }
            if e.payment {
                self.user_payments
                    .entry(u.clone())
                    .or_default()
                    .add_windowed(t, h, None, None);
            }
            let since = self.user_since.entry(u.clone()).or_insert(t);
            *since = (*since).max(t);
        }
        (expect, outcome)
    }
}

/// Random streams: five users, six devices, time moving forward in steps
/// of up to twenty minutes but sometimes jumping back up to two hours,
/// with redeliveries of earlier events.
fn stream() -> impl Strategy<Value = Vec<Ev>> {
    let step = (
        0..5usize,
        prop::option::weighted(0.9, 0..6usize),
        prop_oneof![8 => 0i64..1_200_000, 1 => -7_200_000i64..0],
        prop::option::weighted(0.8, 1i64..1000),
        any::<bool>(),
        prop::option::weighted(0.05, any::<prop::sample::Index>()),
    );
    prop::collection::vec(step, 1..300).prop_map(|steps| {
        let mut t = T0;
        let mut out: Vec<Ev> = Vec::new();
        for (n, (user, device, dt, amount, payment, redeliver)) in steps.into_iter().enumerate() {
            if let Some(ix) = redeliver
                && !out.is_empty()
            {
                let again = out[ix.index(out.len())].clone();
                out.push(again);
                continue;
            }
            t += dt;
            out.push(Ev {
                id: format!("e{n}"),
                payment,
                t,
                user: format!("u{user}"),
                device: device.map(|d| format!("d{d}")),
                amount,
            });
        }
        out
    })
}

fn check(events: &[Ev], lateness_secs: u64) -> Result<(), TestCaseError> {
    let (store, catalogue) = store_of(
        DEFS,
        StoreConfig {
            lateness_secs,
            ..StoreConfig::default()
        },
    );
    let parser = parser();
    let mut reference = Reference::default();
    let mut out = vec![Value::Missing; features_len(&catalogue)];
    let mut clock = StreamClock::new();
    for (n, e) in events.iter().enumerate() {
        let outcome = store.read_and_update(&e.parse(&parser), &mut out, &mut clock);
        let (expect, want) = reference.step(e, lateness_secs as i64 * 1000);
        prop_assert_eq!(outcome, want, "event {} {:?}", n, e);
        for (path, value) in expect {
            prop_assert_eq!(
                get(&catalogue, &out, path),
                &value,
                "{} of event {} {:?}",
                path,
                n,
                e
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Lateness generous enough that every fresh event is added (windows
    /// still drop what is older than their span).
    #[test]
    fn windows_match_the_reference(events in stream()) {
        check(&events, 86_400)?;
    }

    /// A 30-minute lateness: the jumps back beyond it are read only.
    #[test]
    fn late_events_are_read_but_not_added(events in stream()) {
        check(&events, 1_800)?;
    }
}

/// Two partitions' streams merged by `schedule` (each element says which
/// stream gives the next event) into one process, each stream with its own
/// clock: per event, its outcome and its user's features.
fn merged(
    a: &[Ev],
    b: &[Ev],
    schedule: &[bool],
    lateness_secs: u64,
) -> HashMap<(bool, usize), (UpdateOutcome, Vec<Value>)> {
    let (store, catalogue) = store_of(
        DEFS,
        StoreConfig {
            lateness_secs,
            ..StoreConfig::default()
        },
    );
    let user_slots: Vec<usize> = catalogue
        .entries()
        .iter()
        .filter(|e| e.path.starts_with("feature.user."))
        .map(|e| e.slot.index as usize)
        .collect();
    let parser = parser();
    let mut out = vec![Value::Missing; features_len(&catalogue)];
    let mut clocks = [StreamClock::new(), StreamClock::new()];
    let mut next = [0usize, 0usize];
    let mut seen = HashMap::new();
    let picks = schedule.iter().copied().chain(std::iter::repeat(false));
    for from_b in picks {
        let from_b = if next[usize::from(from_b)] < [a, b][usize::from(from_b)].len() {
            from_b
        } else if next[usize::from(!from_b)] < [a, b][usize::from(!from_b)].len() {
            !from_b
        } else {
            break;
        };
        let s = usize::from(from_b);
        let e = &[a, b][s][next[s]];
        let outcome = store.read_and_update(&e.parse(&parser), &mut out, &mut clocks[s]);
        let user = user_slots.iter().map(|&i| out[i].clone()).collect();
        seen.insert((from_b, next[s]), (outcome, user));
        next[s] += 1;
    }
    seen
}

/// A stream's events with its own users and ids (its partition's), the
/// devices shared with the other stream's.
fn partition(events: Vec<Ev>, name: &str) -> Vec<Ev> {
    events
        .into_iter()
        .map(|mut e| {
            e.id = format!("{name}-{}", e.id);
            e.user = format!("{name}-{}", e.user);
            e
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Whether an event is too late follows its own partition's order
    /// alone: two partitions merged in any two orders (one lane running
    /// far ahead of the other, or both in step) give every event the same
    /// outcome, and every user — each in one partition — the same
    /// features.
    #[test]
    fn lateness_follows_the_events_own_partition(
        a in stream(),
        b in stream(),
        one in prop::collection::vec(any::<bool>(), 0..600),
        other in prop::collection::vec(any::<bool>(), 0..600),
    ) {
        let (a, b) = (partition(a, "a"), partition(b, "b"));
        let first = merged(&a, &b, &one, 1_800);
        let second = merged(&a, &b, &other, 1_800);
        prop_assert_eq!(first.len(), a.len() + b.len());
        for (at, (outcome, user)) in &first {
            let (outcome2, user2) = &second[at];
            prop_assert_eq!(outcome, outcome2, "event {:?}", at);
            prop_assert_eq!(user, user2, "user features of event {:?}", at);
        }
    }
}
