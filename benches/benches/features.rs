//! The feature store's `read_and_update` per event with the example
//! definitions (`examples/features.toml`: 10 user, 2 device and 2 IP
//! features plus the profile batch view), on a store already holding one
//! million users (and their one million devices and IPs) and on a small one
//! of a few thousand entities.
//!
//! Events are JSON lines built with `format!` and parsed by
//! `verdict_core::EventParser`, outside the timed code: the store is filled
//! before the benches, and each timed batch is parsed in criterion's
//! untimed setup (`iter_batched_ref`). Every event has a unique `event_id`
//! (a repeated one is only read, as a duplicate) and event time advances
//! 10 ms per event, so windows move on as they would in production. The
//! timed events go to users of the filled population picked at random, so
//! every event updates three existing entities (user, device, IP).
//!
//! At start the bench prints, for the million-user store, the bytes per
//! entity the store estimates (`bytes_per_entity`, `stats()`) and the
//! growth of the process's resident set while filling it, per entity, and
//! heap allocations per event (counted by the bench's global allocator).
//!
//! Beside it, in the same run, the naive peer: a `HashMap` of `VecDeque`s
//! per entity kind, keeping every event of each entity within the longest
//! window and recomputing every feature from them (exact sliding windows,
//! the same definitions and filters), on the same traffic.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use verdict_core::Record;
use verdict_core::{Catalogue, Event, EventParser, Namespace, Schema, Value};
use verdict_features::{Agg, FeatureDefs, FeatureStore, StoreConfig, StreamClock, UpdateOutcome};

mod alloc_count;

#[global_allocator]
static GLOBAL: alloc_count::Counting = alloc_count::Counting;

fn allocations() -> u64 {
    alloc_count::count()
}

/// Per entity kind: key → (time, event values) of its events, oldest
/// first.
type NaiveWindows = Vec<HashMap<Box<str>, VecDeque<(i64, Box<[Value]>)>>>;

/// The naive peer: every event of each entity within the longest window,
/// features recomputed from the list.
struct Naive {
    defs: FeatureDefs,
    maps: NaiveWindows,
    /// Per entity kind, its features and its longest window.
    features: Vec<(Vec<usize>, i64)>,
}

/// A hash of a value for the naive distinct count.
fn naive_hash(v: &Value) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    match v {
        Value::String(s) => s.hash(&mut h),
        Value::Number(x) => x.to_bits().hash(&mut h),
        Value::Bool(b) => b.hash(&mut h),
        Value::Timestamp(t) => t.hash(&mut h),
        Value::Missing => {}
    }
    h.finish()
}

impl Naive {
    fn new(defs: FeatureDefs) -> Naive {
        let features = (0..defs.entities.len())
            .map(|e| {
                let fs: Vec<usize> = (0..defs.features.len())
                    .filter(|&i| defs.features[i].entity == e)
                    .collect();
                let longest = defs.longest_window_ms();
                (fs, longest)
            })
            .collect();
        Naive {
            maps: defs.entities.iter().map(|_| HashMap::new()).collect(),
            features,
            defs,
        }
    }

    fn read_and_update(&mut self, event: &Event, out: &mut [Value]) {
        let t = event.timestamp_ms();
        for (e, entity) in self.defs.entities.iter().enumerate() {
            let Value::String(key) = event.get(entity.key_slot) else {
                continue;
            };
            let (fs, longest) = &self.features[e];
            let events = match self.maps[e].get_mut(&**key) {
                Some(events) => events,
                None => self.maps[e].entry(Box::from(&**key)).or_default(),
            };
            while events.front().is_some_and(|(te, _)| *te <= t - longest) {
                events.pop_front();
            }
            for &i in fs {
                let f = &self.defs.features[i];
                let mut n = 0u64;
                let (mut sum, mut min, mut max) = (0.0, f64::INFINITY, f64::NEG_INFINITY);
                let mut distinct: HashSet<u64> = HashSet::new();
                let mut last = (i64::MIN, &Value::Missing);
                for (te, values) in events.iter() {
                    let record = Record {
                        event: values,
                        features: &[],
                        model: &[],
                    };
                    if *te > t || f.filter.as_ref().is_some_and(|flt| !flt.matches(&record)) {
                        continue;
                    }
                    if f.window_ms > 0 && *te <= t - f.window_ms {
                        continue;
                    }
                    let v = f.field.map_or(&Value::Missing, |s| &values[s]);
                    match (f.agg, v) {
                        (Agg::Count | Agg::SecsSinceLast, _) => n += 1,
                        (Agg::DistinctCount, v) if !v.is_missing() => {
                            distinct.insert(naive_hash(v));
                        }
                        (Agg::Last, v) if !v.is_missing() && *te >= last.0 => last = (*te, v),
                        (_, Value::Number(x)) => {
                            n += 1;
                            sum += x;
                            min = min.min(*x);
                            max = max.max(*x);
                        }
                        _ => {}
                    }
                    if f.agg == Agg::SecsSinceLast && *te >= last.0 {
                        last = (*te, &Value::Missing);
                    }
                }
                out[f.slot] = match f.agg {
                    Agg::Count => Value::Number(n as f64),
                    Agg::Sum => Value::Number(sum),
                    Agg::Avg if n > 0 => Value::Number(sum / n as f64),
                    Agg::Min if n > 0 => Value::Number(min),
                    Agg::Max if n > 0 => Value::Number(max),
                    Agg::DistinctCount => Value::Number(distinct.len() as f64),
                    Agg::Last => last.1.clone(),
                    Agg::SecsSinceLast if last.0 != i64::MIN => {
                        Value::Number((t - last.0) as f64 / 1000.0)
                    }
                    _ => Value::Missing,
                };
            }
            if !fs.is_empty() {
                events.push_back((t, event.values().into()));
            }
        }
    }
}

/// Users of the large store (each with its own device and IP).
const LARGE_USERS: u32 = 1_000_000;
/// Users of the small store: the generator's default population.
const SMALL_USERS: u32 = 2_000;
/// Events per timed batch.
const BATCH: usize = 1_024;
/// Event time between consecutive events.
const STEP_MS: i64 = 10;
/// 2026-11-01T00:00:00Z, the generator's default start.
const START_MS: i64 = 1_793_491_200_000;
/// `/proc/self/statm` counts pages; 4 KiB on the x86-64 and aarch64 Linux
/// this runs on.
const PAGE_BYTES: u64 = 4_096;

/// Deterministic traffic: unique ids, time advancing by `STEP_MS`.
struct Traffic {
    parser: EventParser,
    users: u32,
    seq: u64,
    rng: u64,
    line: String,
}

impl Traffic {
    fn new(schema: Arc<Schema>, users: u32, seed: u64) -> Traffic {
        Traffic {
            parser: EventParser::new(schema),
            users,
            seq: 0,
            rng: seed | 1,
            line: String::with_capacity(512),
        }
    }

    fn next_random(&mut self) -> u64 {
        // xorshift64*
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// The next event, for user `u` (1-based), parsed.
    fn event_for(&mut self, u: u32) -> Event {
        use std::fmt::Write;
        let n = self.seq;
        self.seq += 1;
        let t = START_MS + n as i64 * STEP_MS;
        let r = self.next_random();
        self.line.clear();
        // The generator's mix: 30% logins, 55% payments, 15% applications.
        let _ = match r % 20 {
            0..6 => write!(
                self.line,
                r#"{{"event_id":"b-{n:09}","event_type":"login","timestamp":{t},"user_id":"u_{u:06}","device_id":"d_{u:06}","ip":"10.{}.{}.{}","attributes":{{"channel":"app"}}}}"#,
                u >> 16,
                (u >> 8) & 255,
                u & 255
            ),
            6..17 => write!(
                self.line,
                r#"{{"event_id":"b-{n:09}","event_type":"payment","timestamp":{t},"user_id":"u_{u:06}","device_id":"d_{u:06}","ip":"10.{}.{}.{}","amount":{}.{:02},"currency":"CNY","attributes":{{"channel":"web","merchant":"m_{:03}"}}}}"#,
                u >> 16,
                (u >> 8) & 255,
                u & 255,
                20 + (r >> 8) % 2_000,
                (r >> 24) % 100,
                (r >> 32) % 400
            ),
            _ => write!(
                self.line,
                r#"{{"event_id":"b-{n:09}","event_type":"loan_application","timestamp":{t},"user_id":"u_{u:06}","device_id":"d_{u:06}","ip":"10.{}.{}.{}","amount":{},"currency":"CNY","attributes":{{"channel":"h5","term_months":{},"new_device":false}}}}"#,
                u >> 16,
                (u >> 8) & 255,
                u & 255,
                500 * (1 + (r >> 8) % 40),
                3 + (r >> 16) % 34
            ),
        };
        self.parser
            .parse(self.line.as_bytes())
            .unwrap_or_else(|e| panic!("bench event parses: {e}\n{}", self.line))
    }

    /// A batch of events for users of the population picked at random.
    fn batch(&mut self) -> Vec<Event> {
        (0..BATCH)
            .map(|_| {
                let u = 1 + (self.next_random() % u64::from(self.users)) as u32;
                self.event_for(u)
            })
            .collect()
    }
}

/// Resident set size of this process, in bytes.
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm reads");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("statm has a resident field");
    pages * PAGE_BYTES
}

struct Fixture {
    store: FeatureStore,
    traffic: Traffic,
    features: usize,
    /// The traffic is one stream.
    clock: StreamClock,
}

/// A store of the example definitions filled with one event per user, in
/// user order, then ready for random traffic over the same users.
fn fixture(users: u32, report: bool) -> Fixture {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let schema = Arc::new(Schema::load(&root.join("examples/schema.toml")).expect("schema loads"));
    let defs = FeatureDefs::load(&root.join("examples/features.toml"), &schema)
        .unwrap_or_else(|e| panic!("example features load: {e}"));
    let mut catalogue = Catalogue::from_schema(&schema);
    // The default budget (4096 MB) is below the store's own estimate for a
    // million users with these definitions, so it would evict; raise it so
    // the bench measures a store that holds them all.
    let config = StoreConfig {
        memory_budget_mb: 64 * 1024,
        ..StoreConfig::default()
    };
    let store = FeatureStore::new(defs, &mut catalogue, config).expect("store builds");
    let features = catalogue.len(Namespace::Feature);
    let mut traffic = Traffic::new(schema, users, 0x5eed_0000 + u64::from(users));
    let mut out = vec![Value::Missing; features];
    let mut clock = StreamClock::new();

    let rss_before = rss_bytes();
    let started = Instant::now();
    for u in 1..=users {
        let e = traffic.event_for(u);
        let outcome = store.read_and_update(&e, &mut out, &mut clock);
        assert_eq!(outcome, UpdateOutcome::Added);
    }
    let fill = started.elapsed();
    let rss_after = rss_bytes();
    let stats = store.stats();
    assert_eq!(stats.entities, 3 * u64::from(users), "no entity evicted");

    if report {
        let started = Instant::now();
        store.maintain();
        let sweep = started.elapsed();
        eprintln!(
            "\nfeature store, examples/features.toml, {users} users (+ as many devices and IPs):"
        );
        eprintln!(
            "  filled in {:.1} s ({:.2} µs per event, parsing included)",
            fill.as_secs_f64(),
            fill.as_secs_f64() * 1e6 / f64::from(users)
        );
        for (kind, bytes) in store.bytes_per_entity() {
            eprintln!("  bytes_per_entity {kind:<6} {bytes:>6} B (+24 B map entry in stats)");
        }
        eprintln!(
            "  stats: {} entities, {} bytes: {:.0} B per entity (all kinds), {:.0} B per user",
            stats.entities,
            stats.bytes,
            stats.bytes as f64 / stats.entities as f64,
            stats.bytes as f64 / f64::from(users)
        );
        let grown = rss_after.saturating_sub(rss_before);
        eprintln!(
            "  RSS {:.0} MiB -> {:.0} MiB: +{:.0} MiB, {:.0} B per entity (all kinds), {:.0} B per user \
             (includes the dedup table of up to {} event ids)",
            rss_before as f64 / 1048576.0,
            rss_after as f64 / 1048576.0,
            grown as f64 / 1048576.0,
            grown as f64 / stats.entities as f64,
            grown as f64 / f64::from(users),
            StoreConfig::default().dedup_capacity
        );
        eprintln!(
            "  one maintain() sweep over them: {:.1} ms (runs every 65,536 added events: {:.0} ns per event amortised)\n",
            sweep.as_secs_f64() * 1e3,
            sweep.as_secs_f64() * 1e9 / 65_536.0
        );
    }
    Fixture {
        store,
        traffic,
        features,
        clock,
    }
}

fn bench_store(c: &mut Criterion, name: &str, fx: &mut Fixture) {
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Elements(BATCH as u64));
    let Fixture {
        store,
        traffic,
        features,
        clock,
    } = fx;
    let mut out = vec![Value::Missing; *features];
    group.bench_function("read_and_update", |b| {
        b.iter_batched_ref(
            || traffic.batch(),
            |events| {
                let mut added = 0;
                for e in events.iter() {
                    added += (store.read_and_update(e, &mut out, clock) == UpdateOutcome::Added)
                        as usize;
                }
                black_box(&out);
                assert_eq!(added, BATCH, "every timed event is added");
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
    let events: Vec<Vec<Event>> = (0..8).map(|_| traffic.batch()).collect();
    let before = allocations();
    for batch in &events {
        for e in batch {
            store.read_and_update(e, &mut out, clock);
        }
    }
    let n = (events.len() * BATCH) as f64;
    eprintln!(
        "{name}: {:.2} heap allocations per event (read_and_update, steady state)",
        (allocations() - before) as f64 / n
    );
    let stats = store.stats();
    assert_eq!(stats.duplicates, 0);
    assert_eq!(stats.late_events, 0);
    assert_eq!(stats.evictions, 0);
}

/// The naive peer on the same traffic as the store's bench.
fn bench_naive(c: &mut Criterion, name: &str, users: u32) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let schema = Arc::new(Schema::load(&root.join("examples/schema.toml")).expect("schema loads"));
    let mut defs = FeatureDefs::load(&root.join("examples/features.toml"), &schema)
        .unwrap_or_else(|e| panic!("example features load: {e}"));
    let mut catalogue = Catalogue::from_schema(&schema);
    for f in &mut defs.features {
        let slot = catalogue.add_feature(&defs.entities[f.entity].name, &f.name, f.ty);
        f.slot = slot.index as usize;
    }
    let mut naive = Naive::new(defs);
    let mut traffic = Traffic::new(schema, users, 0x5eed_0000 + u64::from(users));
    let mut out = vec![Value::Missing; catalogue.len(Namespace::Feature)];
    let rss_before = rss_bytes();
    for u in 1..=users {
        let e = traffic.event_for(u);
        naive.read_and_update(&e, &mut out);
    }
    let grown = rss_bytes().saturating_sub(rss_before);
    eprintln!(
        "{name}: naive peer filled: RSS +{:.0} MiB, {:.0} B per entity (all kinds), growing with events per entity",
        grown as f64 / 1048576.0,
        grown as f64 / (3.0 * f64::from(users))
    );
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("naive_hashmap_vecdeque", |b| {
        b.iter_batched_ref(
            || traffic.batch(),
            |events| {
                for e in events.iter() {
                    naive.read_and_update(e, &mut out);
                }
                black_box(&out);
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
    let events: Vec<Vec<Event>> = (0..8).map(|_| traffic.batch()).collect();
    let before = allocations();
    for batch in &events {
        for e in batch {
            naive.read_and_update(e, &mut out);
        }
    }
    eprintln!(
        "{name}: naive peer: {:.2} heap allocations per event",
        (allocations() - before) as f64 / (events.len() * BATCH) as f64
    );
}

fn features(c: &mut Criterion) {
    let mut large = fixture(LARGE_USERS, true);
    bench_store(c, "features_1m_users", &mut large);
    drop(large);
    bench_naive(c, "features_1m_users", LARGE_USERS);
    let mut small = fixture(SMALL_USERS, false);
    bench_store(c, "features_2k_users", &mut small);
    drop(small);
    bench_naive(c, "features_2k_users", SMALL_USERS);
}

criterion_group!(benches, features);
criterion_main!(benches);
