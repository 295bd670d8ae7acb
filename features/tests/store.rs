//! The store's promises beyond window arithmetic: redeliveries counted
//! once, bounded memory, snapshots that restore exactly, batch views from
//! Parquet, and definition errors that name the line.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use common::*;
use datafusion::arrow::array::{Float64Array, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema as ArrowSchema};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::parquet::arrow::ArrowWriter;
use verdict_core::{Catalogue, Value, ValueType};
use verdict_features::{FeatureDefs, FeatureStore, StoreConfig, StreamClock, UpdateOutcome};

fn ev(n: usize, t: i64, user: &str, device: &str, amount: i64) -> Ev {
    Ev {
        id: format!("e{n}"),
        payment: n.is_multiple_of(3),
        t,
        user: user.into(),
        device: Some(device.into()),
        amount: Some(amount),
    }
}

/// A deterministic stream over `users` users and 40 devices, one event a
/// minute of event time, with some arriving a few minutes out of order.
fn traffic(count: usize, users: usize) -> Vec<Ev> {
    (0..count)
        .map(|n| {
            let jitter = if n % 7 == 0 { -180_000 } else { 0 };
            ev(
                n,
                T0 + n as i64 * 60_000 + jitter,
                &format!("u{}", (n * 7919) % users),
                &format!("d{}", (n * 104_729) % 40),
                (n as i64 * 37) % 900 + 10,
            )
        })
        .collect()
}

fn run(store: &FeatureStore, catalogue: &Catalogue, events: &[Ev]) -> Vec<Vec<Value>> {
    let mut clock = StreamClock::new();
    let parser = parser();
    events
        .iter()
        .map(|e| {
            let mut out = vec![Value::Missing; features_len(catalogue)];
            store.read_and_update(&e.parse(&parser), &mut out, &mut clock);
            out
        })
        .collect()
}

#[test]
fn a_redelivered_event_is_added_once() {
    let mut clock = StreamClock::new();
    let (store, catalogue) = store_of(DEFS, StoreConfig::default());
    let parser = parser();
    let mut out = vec![Value::Missing; features_len(&catalogue)];
    let first = ev(1, T0, "u1", "d1", 100).parse(&parser);
    assert_eq!(
        store.read_and_update(&first, &mut out, &mut clock),
        UpdateOutcome::Added
    );
    // The same message again, as Kafka redelivers it after a crash.
    assert_eq!(
        store.read_and_update(&first, &mut out, &mut clock),
        UpdateOutcome::Duplicate
    );
    let next = ev(2, T0 + 1000, "u1", "d1", 50).parse(&parser);
    assert_eq!(
        store.read_and_update(&next, &mut out, &mut clock),
        UpdateOutcome::Added
    );
    assert_eq!(
        get(&catalogue, &out, "feature.user.count_1h"),
        &Value::Number(1.0)
    );
    assert_eq!(
        get(&catalogue, &out, "feature.user.sum_1h"),
        &Value::Number(100.0)
    );
    assert_eq!(store.stats().duplicates, 1);
}

#[test]
fn the_dedup_window_is_bounded() {
    let mut clock = StreamClock::new();
    let (store, catalogue) = store_of(
        DEFS,
        StoreConfig {
            dedup_capacity: 4,
            ..StoreConfig::default()
        },
    );
    let events: Vec<Ev> = (0..6)
        .map(|n| ev(n, T0 + n as i64 * 1000, "u1", "d1", 1))
        .collect();
    run(&store, &catalogue, &events);
    let parser = parser();
    let mut out = vec![Value::Missing; features_len(&catalogue)];
    // The newest four ids are remembered; the oldest have been forgotten.
    assert_eq!(
        store.read_and_update(&events[5].parse(&parser), &mut out, &mut clock),
        UpdateOutcome::Duplicate
    );
    assert_eq!(
        store.read_and_update(&events[0].parse(&parser), &mut out, &mut clock),
        UpdateOutcome::Added
    );
}

fn store_allowing_a_minute_late() -> (FeatureStore, Catalogue) {
    store_of(
        DEFS,
        StoreConfig {
            lateness_secs: 60,
            ..StoreConfig::default()
        },
    )
}

#[test]
fn a_late_event_is_read_counted_and_not_added() {
    let mut clock = StreamClock::new();
    let (store, catalogue) = store_allowing_a_minute_late();
    let parser = parser();
    let mut out = vec![Value::Missing; features_len(&catalogue)];
    store.read_and_update(
        &ev(1, T0, "u1", "d1", 10).parse(&parser),
        &mut out,
        &mut clock,
    );
    store.read_and_update(
        &ev(2, T0 + 10 * 60_000, "u1", "d1", 20).parse(&parser),
        &mut out,
        &mut clock,
    );
    // Thirty seconds behind the newest: within the lateness, added.
    let within = ev(3, T0 + 10 * 60_000 - 30_000, "u1", "d1", 40).parse(&parser);
    assert_eq!(
        store.read_and_update(&within, &mut out, &mut clock),
        UpdateOutcome::Added
    );
    // Five minutes behind: decided with what the store holds, not added.
    let late = ev(4, T0 + 5 * 60_000, "u1", "d1", 80).parse(&parser);
    assert_eq!(
        store.read_and_update(&late, &mut out, &mut clock),
        UpdateOutcome::TooLate
    );
    // It sees the buckets up to its own (5-minute precision): the events at
    // 0 and 9.5 minutes, not the one at 10.
    assert_eq!(
        get(&catalogue, &out, "feature.user.count_1h"),
        &Value::Number(2.0)
    );
    let after = ev(5, T0 + 11 * 60_000, "u1", "d1", 1).parse(&parser);
    store.read_and_update(&after, &mut out, &mut clock);
    assert_eq!(
        get(&catalogue, &out, "feature.user.sum_1h"),
        &Value::Number(70.0)
    );
    assert_eq!(store.stats().late_events, 1);
}

/// A rebuild replays older events while live traffic has moved event time
/// on: they are added (once) even though live events that late would not be.
#[test]
fn a_replayed_event_is_added_despite_lateness_but_once() {
    let mut clock = StreamClock::new();
    let (store, catalogue) = store_allowing_a_minute_late();
    let parser = parser();
    let mut out = vec![Value::Missing; features_len(&catalogue)];
    store.read_and_update(
        &ev(1, T0 + 10 * 60_000, "u1", "d1", 20).parse(&parser),
        &mut out,
        &mut clock,
    );
    let old = ev(2, T0, "u1", "d1", 5).parse(&parser);
    assert_eq!(store.replay(&old, None), UpdateOutcome::Added);
    assert_eq!(store.replay(&old, None), UpdateOutcome::Duplicate);
    store.read_and_update(
        &ev(3, T0 + 11 * 60_000, "u1", "d1", 1).parse(&parser),
        &mut out,
        &mut clock,
    );
    assert_eq!(
        get(&catalogue, &out, "feature.user.sum_1h"),
        &Value::Number(25.0)
    );
    assert_eq!(store.stats().late_events, 0);
    assert_eq!(store.stats().duplicates, 1);
}

#[test]
fn idle_entities_are_evicted_after_the_longest_window() {
    let (store, catalogue) = store_of(DEFS, StoreConfig::default());
    // The longest window is 1h, but entities are kept at least a day.
    run(
        &store,
        &catalogue,
        &[
            ev(1, T0, "old", "d-old", 1),
            ev(2, T0 + 20 * HOUR, "recent", "d-recent", 1),
            ev(3, T0 + 25 * HOUR, "new", "d-new", 1),
        ],
    );
    assert_eq!(store.stats().entities, 6);
    store.maintain();
    let stats = store.stats();
    assert_eq!(stats.entities, 4, "the user and device idle for 25h go");
    assert_eq!(stats.evictions, 2);
    let keys: Vec<String> = store
        .encoded_entities()
        .into_keys()
        .map(|(_, k)| k.into())
        .collect();
    // Devices sort before users.
    assert_eq!(keys, ["d-new", "d-recent", "new", "recent"]);
}

#[test]
fn the_memory_budget_evicts_the_longest_idle_first() {
    let (store, catalogue) = store_of(
        DEFS,
        StoreConfig {
            memory_budget_mb: 1,
            ..StoreConfig::default()
        },
    );
    // 5,000 users, one event each, a second apart, all on one device.
    let events: Vec<Ev> = (0..5_000)
        .map(|n| ev(n, T0 + n as i64 * 1000, &format!("u{n}"), "d", 1))
        .collect();
    run(&store, &catalogue, &events);
    let before = store.stats();
    assert!(before.bytes > 1 << 20, "{before:?}");
    store.maintain();
    let after = store.stats();
    assert!(after.bytes <= 1 << 20, "{after:?}");
    assert!(after.evictions > 0);
    let kept = store.encoded_entities();
    assert!(kept.contains_key(&(1, "u4999".into())), "the newest stays");
    assert!(!kept.contains_key(&(1, "u0".into())), "the oldest goes");
}

#[test]
fn bytes_per_entity_are_fixed_by_the_definitions() {
    let (store, catalogue) = store_of(DEFS, StoreConfig::default());
    let per: BTreeMap<String, usize> = store.bytes_per_entity().into_iter().collect();
    run(&store, &catalogue, &traffic(2_000, 50));
    let small = store.stats().bytes;
    run(&store, &catalogue, &traffic(20_000, 50)[2_000..]);
    // Ten times the traffic on the same entities: the same memory.
    assert_eq!(store.stats().bytes, small);
    assert!(per["user"] > per["device"], "{per:?}");
}

/// A distinct count that outgrows its inline room is charged for what it
/// allocates, and the charge goes with the entity when it is evicted.
#[test]
fn growing_distinct_counts_are_charged_and_freed() {
    let (store, catalogue) = store_of(DEFS, StoreConfig::default());
    run(&store, &catalogue, &[ev(0, T0, "u1", "d0", 1)]);
    let base = store.stats().bytes;
    let many: Vec<Ev> = (1..60)
        .map(|n| ev(n, T0 + n as i64 * 1000, "u1", &format!("d{n}"), 1))
        .collect();
    run(&store, &catalogue, &many);
    let devices = store.stats().entities - 1;
    let fixed: BTreeMap<String, usize> = store.bytes_per_entity().into_iter().collect();
    let grown = store.stats().bytes - base - devices * (fixed["device"] as u64 + 24);
    // The user's device list spilled and its sketch was allocated.
    assert!(grown >= 768, "grown by {grown} B");
    // A day later, everything is idle and evicted: nothing stays charged.
    let later = ev(100, T0 + 3 * 86_400_000, "u2", "dx", 1);
    run(&store, &catalogue, &[later]);
    store.maintain();
    assert_eq!(store.stats().entities, 2, "u2 and dx remain");
    let (fresh, _) = store_of(DEFS, StoreConfig::default());
    run(
        &fresh,
        &catalogue,
        &[ev(100, T0 + 3 * 86_400_000, "u2", "dx", 1)],
    );
    assert_eq!(store.stats().bytes, fresh.stats().bytes);
}

#[test]
fn a_snapshot_restores_exactly() {
    let (store, catalogue) = store_of(DEFS, StoreConfig::default());
    run(&store, &catalogue, &traffic(3_000, 200));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("features.arrow");
    let positions = BTreeMap::from([("events/0".to_owned(), 2_999), ("events/1".to_owned(), 17)]);
    let rows = store.snapshot(&path, &positions).unwrap();
    assert_eq!(rows as u64, store.stats().entities);

    let (restored, _) = store_of(DEFS, StoreConfig::default());
    assert_eq!(restored.restore(&path).unwrap(), positions);
    assert_eq!(restored.encoded_entities(), store.encoded_entities());
    assert_eq!(restored.watermark(), store.watermark());
}

#[test]
fn snapshot_and_replay_equal_an_uninterrupted_run() {
    let events = traffic(4_000, 300);
    let (whole, catalogue) = store_of(DEFS, StoreConfig::default());
    let all = run(&whole, &catalogue, &events);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("features.arrow");
    let cut = 2_345;
    let (first, _) = store_of(DEFS, StoreConfig::default());
    run(&first, &catalogue, &events[..cut]);
    first
        .snapshot(
            &path,
            &BTreeMap::from([("events.jsonl".to_owned(), cut as i64)]),
        )
        .unwrap();
    drop(first);

    let (second, _) = store_of(DEFS, StoreConfig::default());
    let positions = second.restore(&path).unwrap();
    let resume = positions["events.jsonl"] as usize;
    let rest = run(&second, &catalogue, &events[resume..]);
    assert_eq!(rest, all[cut..], "every feature of every replayed event");
    assert_eq!(second.encoded_entities(), whole.encoded_entities());
}

#[test]
fn a_snapshot_of_other_definitions_or_a_corrupt_file_is_refused() {
    let (store, catalogue) = store_of(DEFS, StoreConfig::default());
    run(&store, &catalogue, &traffic(100, 10));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("features.arrow");
    store.snapshot(&path, &BTreeMap::new()).unwrap();

    let other = DEFS.replace("window = \"10m\"", "window = \"20m\"");
    let (changed, _) = store_of(&other, StoreConfig::default());
    let err = changed.restore(&path).unwrap_err().to_string();
    assert!(err.contains("other feature definitions"), "{err}");

    let mut bytes = std::fs::read(&path).unwrap();
    let n = bytes.len();
    bytes.truncate(n / 2);
    std::fs::write(&path, &bytes).unwrap();
    let (fresh, _) = store_of(DEFS, StoreConfig::default());
    assert!(fresh.restore(&path).is_err());
    std::fs::write(&path, b"not a snapshot").unwrap();
    let err = fresh.restore(&path).unwrap_err().to_string();
    assert!(err.contains("not an Arrow IPC file"), "{err}");
}

fn write_profiles(path: &Path, rows: &[(&str, f64, &str)]) {
    let schema = Arc::new(ArrowSchema::new(vec![
        Field::new("user_id", DataType::Utf8, false),
        Field::new("credit_limit", DataType::Float64, true),
        Field::new("segment", DataType::Utf8, true),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.1))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.2))),
        ],
    )
    .unwrap();
    let tmp = path.with_extension("tmp");
    let mut w = ArrowWriter::try_new(std::fs::File::create(&tmp).unwrap(), schema, None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    std::fs::rename(tmp, path).unwrap();
}

#[test]
fn batch_features_load_from_parquet_typed_by_the_query_and_refresh() {
    let mut clock = StreamClock::new();
    let dir = tempfile::tempdir().unwrap();
    let parquet = dir.path().join("profiles.parquet");
    write_profiles(
        &parquet,
        &[
            ("u1", 5000.0, "gold"),
            ("u2", 300.0, "new"),
            ("u3", 0.0, "new"),
        ],
    );
    let defs = format!(
        r#"
[entities]
user = "user_id"

[[batch]]
name = "profile"
entity = "user"
key = "user_id"
sql = "SELECT user_id, credit_limit * 2 AS double_limit, segment FROM profiles WHERE credit_limit > 0"
refresh_secs = 60
tables = {{ profiles = "{}" }}
"#,
        parquet.display()
    );
    let (store, catalogue) = store_of(&defs, StoreConfig::default());
    assert_eq!(
        catalogue.lookup("feature.user.double_limit").unwrap().ty,
        ValueType::Number
    );
    assert_eq!(
        catalogue.lookup("feature.user.segment").unwrap().ty,
        ValueType::String
    );
    let parser = parser();
    let mut read = |user: &str| {
        let mut out = vec![Value::Missing; features_len(&catalogue)];
        store.read_and_update(
            &ev(0, T0, user, "d", 1).parse(&parser),
            &mut out,
            &mut clock,
        );
        (
            get(&catalogue, &out, "feature.user.double_limit").clone(),
            get(&catalogue, &out, "feature.user.segment").clone(),
        )
    };
    assert_eq!(
        read("u1"),
        (Value::Number(10000.0), Value::String("gold".into()))
    );
    assert_eq!(
        read("u2"),
        (Value::Number(600.0), Value::String("new".into()))
    );
    // Filtered out by the query, and absent from the file: missing.
    assert_eq!(read("u3"), (Value::Missing, Value::Missing));
    assert_eq!(read("u9"), (Value::Missing, Value::Missing));

    write_profiles(&parquet, &[("u1", 7000.0, "gold"), ("u9", 100.0, "new")]);
    store.refresh_batch().unwrap();
    assert_eq!(read("u1").0, Value::Number(14000.0));
    assert_eq!(read("u2").0, Value::Missing);
    assert_eq!(read("u9").0, Value::Number(200.0));

    // A refresh that fails keeps the rows that serve.
    std::fs::write(&parquet, b"garbage").unwrap();
    assert!(store.refresh_batch().is_err());
    assert_eq!(read("u1").0, Value::Number(14000.0));
}

#[test]
fn definition_errors_name_the_line_and_the_problem() {
    let schema = schema();
    let cases = [
        (
            "[entities]\nuser = \"user_id\"\n\n[[feature]]\nentity = \"usr\"\nname = \"n\"\nagg = \"count\"\nwindow = \"1h\"\n",
            "features.toml:4: unknown entity `usr`; declare it under [entities]",
        ),
        (
            "[entities]\nuser = \"user_id\"\n\n[[feature]]\nentity = \"user\"\nname = \"n\"\nagg = \"median\"\nwindow = \"1h\"\n",
            "features.toml:4: unknown aggregate `median`",
        ),
        (
            "[entities]\nuser = \"user_id\"\n\n[[feature]]\nentity = \"user\"\nname = \"n\"\nagg = \"count\"\nwindow = \"31d\"\n",
            "features.toml:4: window `31d` is outside 1s to 30d",
        ),
        (
            "[entities]\nuser = \"user_id\"\n\n[[feature]]\nentity = \"user\"\nname = \"n\"\nagg = \"count\"\nwindow = \"1 hour\"\n",
            "window `1 hour` is not a duration like 30s, 5m, 1h or 7d",
        ),
        (
            "[entities]\nuser = \"user_id\"\n\n[[feature]]\nentity = \"user\"\nname = \"n\"\nagg = \"sum\"\nfield = \"device_id\"\nwindow = \"1h\"\n",
            "`sum` needs a number field, but `device_id` is a string",
        ),
        (
            "[entities]\nuser = \"user_id\"\n\n[[feature]]\nentity = \"user\"\nname = \"n\"\nagg = \"sum\"\nfield = \"amout\"\nwindow = \"1h\"\n",
            "unknown event field `amout`",
        ),
        (
            "[entities]\nuser = \"user_id\"\n\n[[feature]]\nentity = \"user\"\nname = \"n\"\nagg = \"last\"\nwindow = \"1h\"\nfield = \"amount\"\n",
            "`last` takes no window",
        ),
        (
            "[entities]\nuser = \"user_id\"\n\n[[feature]]\nentity = \"user\"\nname = \"n\"\nagg = \"count\"\nwindow = \"1h\"\n\n[[feature]]\nentity = \"user\"\nname = \"n\"\nagg = \"count\"\nwindow = \"2h\"\n",
            "features.toml:10: the feature `user.n` is defined twice",
        ),
        (
            "[entities]\nuser = \"user_id\"\n\n[[feature]]\nentity = \"user\"\nname = \"n\"\nagg = \"count\"\nwindow = \"1h\"\nfilter = 'event.amout > 3'\n",
            "features.toml:4: the filter does not check",
        ),
        (
            "[entities]\nuser = \"uid\"\n",
            "entity `user` is keyed by `uid`, which the event schema does not declare",
        ),
        (
            "[entities]\nuser = \"amount\"\n",
            "entity `user` is keyed by `amount`, which is not a string",
        ),
        (
            "[entities]\nuser = \"user_id\"\n\n[[feature]]\nentity = \"user\"\nname = \"n\"\nagg = \"count\"\nwindo = \"1h\"\n",
            "features.toml:8: unknown field `windo`",
        ),
        (
            "[entities]\nuser = \"user_id\"\ndevice = \"device_id\"\n\n[placement]\ndevice = \"redis\"\n",
            "features.toml:6: placement `redis` for `device`: use \"local\" (kept in this process) or \"shared\"",
        ),
        (
            "[entities]\nuser = \"user_id\"\n\n[placement]\ndevice = \"shared\"\n",
            "features.toml:5: [placement] names `device`, which is not an entity; declare it under [entities]",
        ),
    ];
    for (text, want) in cases {
        let err = FeatureDefs::parse(text, Path::new("features.toml"), &schema)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(want),
            "for\n{text}\nwanted `{want}`, got `{err}`"
        );
    }
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/features.toml");
    let schema = verdict_core::Schema::load(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/schema.toml"),
    )
    .unwrap();
    let defs = FeatureDefs::load(&shipped, &schema).unwrap();
    assert!(!defs.has_shared(), "the shipped definitions need no Redis");
}

/// `[placement]` puts a kind in the shared store; the local store then
/// keeps nothing of it (its features come from the shared batch), and a
/// snapshot of one placement does not restore into the other.
#[test]
fn a_shared_kind_is_not_kept_locally() {
    let shared = format!("{DEFS}\n[placement]\ndevice = \"shared\"\n");
    let (store, catalogue) = store_of(&shared, StoreConfig::default());
    assert_eq!(
        store
            .defs()
            .entities
            .iter()
            .map(|e| e.placement)
            .collect::<Vec<_>>(),
        // Kinds in name order: device, then user.
        [
            verdict_features::Placement::Shared,
            verdict_features::Placement::Local
        ]
    );
    run(&store, &catalogue, &traffic(200, 10));
    let kinds: std::collections::BTreeSet<usize> = store
        .encoded_entities()
        .into_keys()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(kinds.into_iter().collect::<Vec<_>>(), [1], "users only");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("features.arrow");
    store.snapshot(&path, &BTreeMap::new()).unwrap();
    let (local, _) = store_of(DEFS, StoreConfig::default());
    let err = local.restore(&path).unwrap_err().to_string();
    assert!(err.contains("other feature definitions"), "{err}");
}

/// The dedup tells the engine where it remembers each event id: a fresh
/// event's slot, and for a redelivery the slot of its first delivery.
#[test]
fn a_redelivery_names_the_slot_of_its_first_delivery() {
    let mut clock = StreamClock::new();
    let (store, catalogue) = store_of(DEFS, StoreConfig::default());
    let parser = parser();
    let mut out = vec![Value::Missing; features_len(&catalogue)];
    let first = store.read_and_update_slot(
        &ev(1, T0, "u1", "d1", 1).parse(&parser),
        &mut out,
        &mut clock,
    );
    let second = store.read_and_update_slot(
        &ev(2, T0, "u1", "d1", 1).parse(&parser),
        &mut out,
        &mut clock,
    );
    assert_eq!(first.outcome, UpdateOutcome::Added);
    let (a, b) = (first.slot.unwrap(), second.slot.unwrap());
    assert_ne!(a, b);
    assert!(a.index() < store.dedup_slots() && b.index() < store.dedup_slots());
    let again = store.read_and_update_slot(
        &ev(1, T0, "u1", "d1", 1).parse(&parser),
        &mut out,
        &mut clock,
    );
    assert_eq!(again.outcome, UpdateOutcome::Duplicate);
    assert_eq!(again.slot, Some(a));
    assert_eq!(again.id_hash, first.id_hash);
    assert_ne!(second.id_hash, first.id_hash);
}

/// The store's own thread sweeps once enough events have been added: the
/// event path only wakes it. Past the memory budget it evicts the longest
/// idle, as a sweep called by hand does.
#[test]
fn the_maintenance_thread_sweeps_off_the_event_path() {
    let mut clock = StreamClock::new();
    let (store, catalogue) = store_of(
        DEFS,
        StoreConfig {
            memory_budget_mb: 4,
            ..StoreConfig::default()
        },
    );
    let parser = parser();
    let mut out = vec![Value::Missing; features_len(&catalogue)];
    assert_eq!(store.sweeps(), 0);
    // One more than the wake-up interval, each a new user and device.
    let n = verdict_features::store::SWEEP_EVERY as usize + 1;
    for i in 0..n {
        let e = ev(i, T0 + i as i64 * 10, &format!("u{i}"), &format!("d{i}"), 1);
        store.read_and_update(&e.parse(&parser), &mut out, &mut clock);
    }
    // The sweep runs on the store's thread: wait for it, boundedly.
    let started = std::time::Instant::now();
    while store.sweeps() == 0 {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "the maintenance thread never swept"
        );
        std::thread::yield_now();
    }
    let stats = store.stats();
    assert!(stats.evictions > 0, "{stats:?}");
    assert!(stats.bytes <= 4 << 20, "{stats:?}");
    let kept = store.encoded_entities();
    let newest = format!("u{}", n - 1);
    assert!(kept.contains_key(&(1, newest.into())), "the newest stays");
    assert!(!kept.contains_key(&(1, "u0".into())), "the oldest goes");
}

/// A damaged snapshot is refused whole, never a panic and never misread:
/// with any one byte flipped it either restores exactly what was written
/// (a byte nothing reads) or is an error, and a file cut short is an error.
#[test]
fn a_damaged_snapshot_is_refused_never_misread() {
    let (store, catalogue) = store_of(DEFS, StoreConfig::default());
    run(&store, &catalogue, &traffic(400, 40));
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.arrow");
    let positions = BTreeMap::from([("events/0".to_owned(), 399)]);
    store.snapshot(&good, &positions).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let damaged = dir.path().join("damaged.arrow");
    let (target, _) = store_of(DEFS, StoreConfig::default());
    target.restore(&good).unwrap();
    let expected = target.encoded_entities();
    let (mut refused, mut same) = (0, 0);
    let stride = (bytes.len() / 4_000).max(1);
    for at in (0..bytes.len()).step_by(stride) {
        let mut b = bytes.clone();
        b[at] ^= 0xff;
        std::fs::write(&damaged, &b).unwrap();
        match target.restore(&damaged) {
            Err(e) => {
                assert!(e.to_string().contains("delete it to start empty"), "{e}");
                // Refused whole: the store keeps what it held.
                assert!(
                    target.encoded_entities() == expected,
                    "byte {at} changed the store"
                );
                refused += 1;
            }
            Ok(p) => {
                assert_eq!(p, positions, "byte {at} changed the positions");
                assert!(target.encoded_entities() == expected, "byte {at} misread");
                same += 1;
            }
        }
    }
    for len in (0..bytes.len()).step_by(stride) {
        std::fs::write(&damaged, &bytes[..len]).unwrap();
        assert!(
            target.restore(&damaged).is_err(),
            "a file cut at {len} restored"
        );
    }
    assert!(refused > same, "{refused} refused, {same} unchanged");
    assert_eq!(target.restore(&good).unwrap(), positions);
    assert_eq!(target.encoded_entities(), store.encoded_entities());
}

/// `peek` reads what the event would see and changes nothing: a store
/// that was peeked at reads and decides the rest of the traffic exactly as
/// one that was not, and the peeked event is not remembered as seen.
#[test]
fn a_peek_reads_the_same_features_and_changes_nothing() {
    let events = traffic(2_000, 50);
    let (plain, catalogue) = store_of(DEFS, StoreConfig::default());
    let (peeked, _) = store_of(DEFS, StoreConfig::default());
    let (mut plain_clock, mut peeked_clock) = (StreamClock::new(), StreamClock::new());
    let parser = parser();
    let len = features_len(&catalogue);
    for e in &events {
        let event = e.parse(&parser);
        let mut seen = vec![Value::Missing; len];
        let mut read = vec![Value::Missing; len];
        // Twice, as an explanation request could come twice.
        peeked.peek(&event, &mut seen);
        peeked.peek(&event, &mut seen);
        peeked.read_and_update(&event, &mut read, &mut peeked_clock);
        assert_eq!(seen, read, "{e:?}");
        let mut want = vec![Value::Missing; len];
        plain.read_and_update(&event, &mut want, &mut plain_clock);
        assert_eq!(read, want, "{e:?}");
    }
    assert_eq!(peeked.stats(), plain.stats());
    assert_eq!(peeked.watermark(), plain.watermark());
    // A peeked event not yet seen is still fresh afterwards.
    let fresh = ev(99_999, peeked.watermark().unwrap(), "u1", "d1", 5).parse(&parser);
    let mut out = vec![Value::Missing; len];
    peeked.peek(&fresh, &mut out);
    assert_eq!(
        peeked.read_and_update(&fresh, &mut out, &mut peeked_clock),
        UpdateOutcome::Added
    );
}
