//! The shared store against real Redis servers (a standalone
//! `redis-server` and a three-node Redis Cluster, on loopback ports the
//! tests pick): shared windows equal local ones on random streams, a
//! redelivery reads what its first delivery read on whichever instance it
//! lands, and a Redis that stops answers errors at once and is used again
//! when it comes back.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use common::servers::{RedisCluster, RedisServer, command};
use common::*;
use proptest::prelude::*;
use verdict_core::{Catalogue, Value};
use verdict_features::shared::{
    Known, NoObserver, SharedBatch, SharedConfig, SharedErrorKind, SharedObserver, SharedStore,
};
use verdict_features::{FeatureStore, StoreConfig, StreamClock, UpdateOutcome};

/// The test definitions with every kind shared.
fn shared_defs() -> String {
    format!("{DEFS}\n[placement]\nuser = \"shared\"\ndevice = \"shared\"\n")
}

static PREFIX: AtomicU64 = AtomicU64::new(0);

fn config(urls: Vec<String>, cluster: bool) -> SharedConfig {
    SharedConfig {
        urls,
        cluster,
        // Generous: a debug build on a busy machine; the deadline's own
        // behaviour is tested with a stopped server.
        deadline_ms: 5_000,
        key_prefix: format!("t{}", PREFIX.fetch_add(1, Ordering::Relaxed)),
        // Few: entities are forgotten, presumed new and corrected.
        known_entities: 3,
        ..SharedConfig::default()
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// One Verdict instance's view: its local store (all kinds shared) and its
/// client of the shared store.
struct Instance {
    store: FeatureStore,
    catalogue: Catalogue,
    client: SharedStore,
    batch: SharedBatch,
    /// What its chain of calls committed last (`known_entities` of them).
    known: Known,
    /// The instance's events are one stream.
    clock: StreamClock,
}

/// Counts what the shared store reports.
#[derive(Default)]
struct Counts {
    completed: AtomicU64,
    operations: AtomicU64,
    failed: std::sync::Mutex<Vec<SharedErrorKind>>,
    retried: AtomicU64,
}

struct Counting(std::sync::Arc<Counts>);

impl SharedObserver for Counting {
    fn completed(&self, operations: usize, _elapsed: std::time::Duration) {
        self.0.completed.fetch_add(1, Ordering::Relaxed);
        self.0
            .operations
            .fetch_add(operations as u64, Ordering::Relaxed);
    }
    fn failed(&self, kind: SharedErrorKind, _operations: usize) {
        self.0.failed.lock().unwrap().push(kind);
    }
    fn retried(&self, entities: usize) {
        self.0.retried.fetch_add(entities as u64, Ordering::Relaxed);
    }
}

impl Instance {
    fn new(config: SharedConfig) -> Instance {
        Instance::observed(config, Box::new(NoObserver))
    }

    fn observed(config: SharedConfig, observer: Box<dyn SharedObserver>) -> Instance {
        let (store, catalogue) = store_of(&shared_defs(), StoreConfig::default());
        let batch = store.shared_batch(&config);
        let known = Known::new(config.known_entities);
        let client = SharedStore::new(config, observer).unwrap();
        Instance {
            store,
            catalogue,
            client,
            batch,
            known,
            clock: StreamClock::new(),
        }
    }

    /// Decides a burst: every event's features, read then added, in order.
    fn burst(
        &mut self,
        rt: &tokio::runtime::Runtime,
        events: &[Ev],
    ) -> Result<Vec<(UpdateOutcome, Vec<Value>)>, SharedErrorKind> {
        let parser = parser();
        self.batch.clear();
        let mut outs = Vec::new();
        for e in events {
            let mut out = vec![Value::Missing; features_len(&self.catalogue)];
            let event = e.parse(&parser);
            let outcome = self
                .store
                .read_and_update(&event, &mut out, &mut self.clock);
            self.store.push_shared(&event, outcome, &mut self.batch);
            outs.push((outcome, out));
        }
        rt.block_on(
            self.client
                .execute_all(std::slice::from_mut(&mut self.batch), &mut self.known),
        )
        .map_err(|e| e.kind())?;
        for (n, (_, out)) in outs.iter_mut().enumerate() {
            assert!(
                self.batch.read(n, out),
                "event {n} has every shared feature"
            );
        }
        Ok(outs)
    }
}

/// Random streams as the local windows' property test draws them: five
/// users, six devices, time mostly forward with jumps back of up to two
/// hours, and redeliveries of earlier events; cut into bursts.
fn stream() -> impl Strategy<Value = (Vec<Ev>, Vec<usize>)> {
    let step = (
        0..5usize,
        prop::option::weighted(0.9, 0..6usize),
        prop_oneof![8 => 0i64..1_200_000, 1 => -7_200_000i64..0],
        prop::option::weighted(0.8, 1i64..1000),
        any::<bool>(),
        prop::option::weighted(0.08, any::<prop::sample::Index>()),
    );
    (
        prop::collection::vec(step, 1..120),
        prop::collection::vec(1..12usize, 1..40),
    )
        .prop_map(|(steps, bursts)| {
            let mut t = T0;
            let mut out: Vec<Ev> = Vec::new();
            for (n, (user, device, dt, amount, payment, again)) in steps.into_iter().enumerate() {
                if let Some(ix) = again
                    && !out.is_empty()
                {
                    let e = out[ix.index(out.len())].clone();
                    out.push(e);
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
            (out, bursts)
        })
}

/// Runs `events` through an all-local store and through a shared one, in
/// bursts, and checks that every event read the same: a fresh event what
/// the local store read, a redelivery what its first delivery read.
fn same_as_local(
    rt: &tokio::runtime::Runtime,
    config: SharedConfig,
    events: &[Ev],
    bursts: &[usize],
    lateness_secs: u64,
) -> Result<(), TestCaseError> {
    let store_config = StoreConfig {
        lateness_secs,
        ..StoreConfig::default()
    };
    let (local, catalogue) = store_of(DEFS, store_config.clone());
    let mut shared = Instance::new(config);
    shared.store = store_of(&shared_defs(), store_config).0;
    let parser = parser();
    let mut first: HashMap<String, Vec<Value>> = HashMap::new();
    let mut at = 0;
    let mut clock = StreamClock::new();
    for &size in bursts.iter().cycle() {
        if at >= events.len() {
            break;
        }
        let burst = &events[at..(at + size).min(events.len())];
        let got = shared
            .burst(rt, burst)
            .map_err(|k| TestCaseError::fail(format!("the shared store failed: {}", k.as_str())))?;
        for (k, (e, (outcome, out))) in burst.iter().zip(got).enumerate() {
            let mut want = vec![Value::Missing; features_len(&catalogue)];
            let local_outcome = local.read_and_update(&e.parse(&parser), &mut want, &mut clock);
            prop_assert_eq!(outcome, local_outcome);
            let want = match first.get(&e.id) {
                Some(values) => values.clone(),
                None => {
                    first.insert(e.id.clone(), want.clone());
                    want
                }
            };
            prop_assert_eq!(&out, &want, "event {} {:?} ({:?})", at + k, e, outcome);
        }
        at += size;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn shared_windows_equal_local_windows(
        (events, bursts) in stream(),
        lateness in prop_oneof![Just(86_400u64), Just(1_800u64)],
        known in prop_oneof![Just(0usize), Just(3), Just(1_000)],
    ) {
        let server = server();
        let rt = runtime();
        let config = SharedConfig { known_entities: known, ..config(vec![server.url()], false) };
        same_as_local(&rt, config, &events, &bursts, lateness)?;
    }
}

/// One server for every case of the property test, started on first use.
fn server() -> &'static RedisServer {
    static SERVER: std::sync::OnceLock<RedisServer> = std::sync::OnceLock::new();
    SERVER.get_or_init(RedisServer::start)
}

fn ev(id: &str, t: i64, user: &str, device: &str, amount: i64) -> Ev {
    Ev {
        id: id.into(),
        payment: true,
        t,
        user: user.into(),
        device: Some(device.into()),
        amount: Some(amount),
    }
}

/// More distinct values than the exact list holds: exact and equal to the
/// local store's while the window holds at most 32, then a sketch as close
/// to the truth as the local one. (The two sketches differ in their value
/// hashes: the shared one uses XXH64, fixed across builds, so instances
/// agree; the local one keeps the hash its snapshots hold.)
#[test]
fn a_distinct_count_past_its_exact_list_stays_near_the_truth() {
    let server = RedisServer::start();
    let rt = runtime();
    // Eighty users on one device within its ten-minute window.
    let events: Vec<Ev> = (0..80)
        .map(|n| ev(&format!("e{n}"), T0 + n * 5_000, &format!("u{n}"), "d1", 1))
        .collect();
    let (local, catalogue) = store_of(DEFS, StoreConfig::default());
    let mut shared = Instance::new(config(vec![server.url()], false));
    let parser = parser();
    let got = shared.burst(&rt, &events).unwrap();
    let mut clock = StreamClock::new();
    for (n, (e, (_, out))) in events.iter().zip(&got).enumerate() {
        let mut want = vec![Value::Missing; features_len(&catalogue)];
        local.read_and_update(&e.parse(&parser), &mut want, &mut clock);
        let path = "feature.device.users_10m";
        let (Value::Number(s), Value::Number(l)) = (
            get(&shared.catalogue, out, path),
            get(&catalogue, &want, path),
        ) else {
            panic!("distinct counts are numbers");
        };
        // Event n reads the n users before it.
        let truth = n as f64;
        if n <= 32 {
            assert_eq!((*s, *l), (truth, truth), "event {n}: exact");
        } else {
            for (who, x) in [("shared", s), ("local", l)] {
                assert!(
                    (truth * 0.6..=truth * 1.4).contains(x) && *x >= 32.0,
                    "event {n}: {who} reads {x} for {truth}"
                );
            }
        }
    }
}

/// A redelivery, on another instance, reads what the first delivery read
/// and is not counted again.
#[test]
fn a_redelivery_on_another_instance_reads_its_first_values() {
    let server = RedisServer::start();
    let rt = runtime();
    let config = config(vec![server.url()], false);
    let mut a = Instance::new(config.clone());
    let mut b = Instance::new(config);
    a.burst(
        &rt,
        &[
            ev("e1", T0, "u1", "d1", 100),
            ev("e2", T0 + 1_000, "u2", "d1", 50),
        ],
    )
    .unwrap();
    let first = a
        .burst(&rt, &[ev("e3", T0 + 2_000, "u3", "d1", 7)])
        .unwrap();
    a.burst(&rt, &[ev("e4", T0 + 3_000, "u4", "d1", 9)])
        .unwrap();
    // Instance a crashed before committing e3; b owns its partition now.
    let again = b
        .burst(&rt, &[ev("e3", T0 + 2_000, "u3", "d1", 7)])
        .unwrap();
    assert_eq!(
        again[0].0,
        UpdateOutcome::Added,
        "b's local dedup never saw e3"
    );
    assert_eq!(
        again[0].1, first[0].1,
        "the same values as the first delivery"
    );
    assert_eq!(
        get(&a.catalogue, &again[0].1, "feature.device.users_10m"),
        &Value::Number(2.0)
    );
    let next = b
        .burst(&rt, &[ev("e5", T0 + 4_000, "u5", "d1", 1)])
        .unwrap();
    // d1 has seen e1..e4 once each: four users, four events.
    assert_eq!(
        get(&b.catalogue, &next[0].1, "feature.device.users_10m"),
        &Value::Number(4.0)
    );
    assert_eq!(
        get(&b.catalogue, &next[0].1, "feature.user.count_1h"),
        &Value::Number(0.0),
        "u5 is new"
    );
}

/// With Redis stopped a batch answers an error (within its deadline, not
/// hanging), its events read the shared features missing, and once Redis
/// is back the store is used again without a restart.
#[test]
fn a_stopped_redis_is_an_error_and_a_restarted_one_is_used_again() {
    let mut server = RedisServer::start();
    let rt = runtime();
    let mut cfg = config(vec![server.url()], false);
    cfg.deadline_ms = 500;
    cfg.connect_timeout_ms = 200;
    let counts = std::sync::Arc::new(Counts::default());
    let mut a = Instance::observed(cfg, Box::new(Counting(counts.clone())));
    a.burst(&rt, &[ev("e1", T0, "u1", "d1", 100)]).unwrap();
    assert_eq!(counts.completed.load(Ordering::Relaxed), 1);
    // One event, two shared entities (its user and its device).
    assert_eq!(counts.operations.load(Ordering::Relaxed), 2);
    server.stop();
    let parser = parser();
    let mut out = vec![Value::Missing; features_len(&a.catalogue)];
    let event = ev("e2", T0 + 1_000, "u1", "d1", 5).parse(&parser);
    for _ in 0..3 {
        a.batch.clear();
        let outcome = a.store.read_and_update(&event, &mut out, &mut a.clock);
        a.store.push_shared(&event, outcome, &mut a.batch);
        let err = rt
            .block_on(
                a.client
                    .execute_all(std::slice::from_mut(&mut a.batch), &mut a.known),
            )
            .unwrap_err();
        assert!(
            matches!(
                err.kind(),
                SharedErrorKind::Unavailable | SharedErrorKind::Timeout
            ),
            "{err}"
        );
        assert!(!a.batch.read(0, &mut out), "the features are missing");
        assert_eq!(
            get(&a.catalogue, &out, "feature.device.users_10m"),
            &Value::Missing
        );
    }
    // Back, empty (nothing was saved) and without the script: the store
    // reconnects and loads it again.
    server.restart();
    let sha = redis::Script::new(verdict_features::shared::SCRIPT)
        .get_hash()
        .to_owned();
    let exists = |port| command(port, &format!("SCRIPT EXISTS {sha}")).unwrap();
    assert!(
        exists(server.port).contains(":0"),
        "a restarted server has no script"
    );
    let mut recovered = None;
    for attempt in 0..100 {
        match a.burst(
            &rt,
            &[ev(&format!("r{attempt}"), T0 + 2_000, "u9", "d9", 1)],
        ) {
            Ok(outs) => {
                recovered = Some(outs);
                break;
            }
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(50)),
        }
    }
    let outs = recovered.expect("the store answers again once Redis is back");
    let failed = counts.failed.lock().unwrap().clone();
    assert!(
        failed.len() >= 3,
        "every failed batch is reported: {failed:?}"
    );
    assert_eq!(counts.completed.load(Ordering::Relaxed), 2);
    assert!(
        exists(server.port).contains(":1"),
        "the script was loaded again"
    );
    assert_eq!(
        get(&a.catalogue, &outs[0].1, "feature.device.users_10m"),
        &Value::Number(0.0)
    );
}

/// The same equivalence on a three-node Redis Cluster: entities spread
/// over the nodes' slots, each entity's keys on one node.
#[test]
fn a_cluster_keeps_shared_windows_equal_to_local_ones() {
    let cluster = RedisCluster::start();
    let rt = runtime();
    let mut events = Vec::new();
    let mut t = T0;
    for n in 0..300usize {
        t += ((n * 7919) % 90_000) as i64;
        events.push(ev(
            &format!("c{n}"),
            t,
            &format!("u{}", n % 17),
            &format!("d{}", (n * 31) % 23),
            (n as i64 * 37) % 900,
        ));
        if n % 25 == 24 {
            // A redelivery of an earlier event.
            events.push(events[n / 2].clone());
        }
    }
    let bursts = [7, 1, 16, 3];
    same_as_local(&rt, config(cluster.urls(), true), &events, &bursts, 300)
        .unwrap_or_else(|e| panic!("{e}"));
    // The entities are spread: every node holds some of them.
    for node in &cluster.nodes {
        let keys = command(node.port, "DBSIZE").unwrap();
        assert!(
            keys.starts_with(':') && keys.trim() != ":0",
            "node {} holds {keys}",
            node.port
        );
    }
}

/// Two instances committing the same entities at the same moment: each
/// commit is computed from the one before it, so when the other instance
/// got in first the loser applies its events again to what the winner
/// wrote. No event is lost, none counted twice, and every event reads a
/// distinct prefix of the user's history.
#[test]
fn instances_committing_one_entity_at_once_lose_nothing() {
    let server = RedisServer::start();
    let rt = runtime();
    let cfg = config(vec![server.url()], false);
    let counts = std::sync::Arc::new(Counts::default());
    let mut a = Instance::observed(cfg.clone(), Box::new(Counting(counts.clone())));
    let mut b = Instance::observed(cfg, Box::new(Counting(counts.clone())));
    let parser = parser();
    let rounds = 60;
    let mut reads = Vec::new();
    for round in 0..rounds {
        // Each instance a burst of three events of one user (every kind is
        // shared in these tests), both sent at once.
        let mut outs = Vec::new();
        for (who, inst) in [("a", &mut a), ("b", &mut b)] {
            inst.batch.clear();
            let mut mine = Vec::new();
            for k in 0..3 {
                let e = ev(
                    &format!("{who}{round}-{k}"),
                    T0 + round * 1_000 + k,
                    "hot",
                    &format!("{who}-device{k}"),
                    1,
                );
                let event = e.parse(&parser);
                let mut out = vec![Value::Missing; features_len(&inst.catalogue)];
                let outcome = inst
                    .store
                    .read_and_update(&event, &mut out, &mut inst.clock);
                inst.store.push_shared(&event, outcome, &mut inst.batch);
                mine.push(out);
            }
            outs.push(mine);
        }
        let (ra, rb) = rt.block_on(async {
            tokio::join!(
                a.client
                    .execute_all(std::slice::from_mut(&mut a.batch), &mut a.known),
                b.client
                    .execute_all(std::slice::from_mut(&mut b.batch), &mut b.known)
            )
        });
        ra.unwrap();
        rb.unwrap();
        for (inst, mine) in [&a, &b].into_iter().zip(outs.iter_mut()) {
            for (n, out) in mine.iter_mut().enumerate() {
                assert!(inst.batch.read(n, out));
                let Value::Number(c) = get(&inst.catalogue, out, "feature.user.count_1h") else {
                    panic!("a count is a number");
                };
                reads.push(*c as u64);
            }
        }
    }
    // Every event read how many of the user's came before it: each count
    // from 0 to 359 exactly once.
    reads.sort_unstable();
    assert_eq!(reads, (0..rounds as u64 * 6).collect::<Vec<_>>());
    let last = a
        .burst(&rt, &[ev("last", T0 + 100_000, "hot", "d1", 1)])
        .unwrap();
    assert_eq!(
        get(&a.catalogue, &last[0].1, "feature.user.count_1h"),
        &Value::Number(rounds as f64 * 6.0)
    );
    assert!(
        counts.retried.load(Ordering::Relaxed) > 0,
        "the two instances' commits met at least once"
    );
    assert!(counts.failed.lock().unwrap().is_empty());
}

/// What Redis hands back is bytes from the network: a stored state or read
/// cut short, or with any byte changed, is applied as an error or (where
/// the change still decodes) a value — never a panic.
#[test]
fn damaged_stored_states_and_reads_are_errors_not_panics() {
    let server = RedisServer::start();
    let rt = runtime();
    let cfg = config(vec![server.url()], false);
    let prefix = cfg.key_prefix.clone();
    let mut a = Instance::new(cfg);
    // A user with every aggregate filled, its distinct count past the
    // exact list (a sketch) and a `last` value.
    let events: Vec<Ev> = (0..40)
        .map(|n| ev(&format!("e{n}"), T0 + n * 1_000, "u1", &format!("d{n}"), n))
        .collect();
    a.burst(&rt, &events).unwrap();
    let client = redis::Client::open(server.url()).unwrap();
    let mut conn = rt
        .block_on(client.get_multiplexed_async_connection())
        .unwrap();
    let keys: Vec<String> = rt
        .block_on(
            redis::cmd("KEYS")
                .arg(format!("{prefix}:{{user:u1}}:*"))
                .query_async(&mut conn),
        )
        .unwrap();
    let state_key = keys
        .iter()
        .find(|k| !k.contains(":e:"))
        .expect("u1's state");
    let read_key = keys
        .iter()
        .find(|k| k.ends_with(":e:e39"))
        .expect("e39's read");
    let get = |key: &str| -> Vec<u8> {
        rt.block_on(redis::cmd("GET").arg(key).query_async(&mut conn.clone()))
            .unwrap()
    };
    let (state, read) = (get(state_key), get(read_key));
    assert!(
        state.len() > 12 * 64,
        "the state holds a sketch: {} bytes",
        state.len()
    );

    // A batch with one event of u1 (and of a device, not stored).
    let parser = parser();
    a.batch.clear();
    let event = ev("e39", T0 + 39_000, "u1", "d39", 39).parse(&parser);
    a.store
        .push_shared(&event, UpdateOutcome::Added, &mut a.batch);
    use verdict_features::shared::apply_stored;
    apply_stored(&a.batch, "user", Some(&state), &[Some(&read)]).expect("intact bytes apply");
    apply_stored(&a.batch, "user", Some(&state), &[None]).expect("intact state applies");
    let mut refused = 0;
    for cut in 0..state.len() {
        refused +=
            usize::from(apply_stored(&a.batch, "user", Some(&state[..cut]), &[None]).is_err());
    }
    assert_eq!(refused, state.len(), "every state cut short is refused");
    for cut in 0..read.len() {
        assert!(apply_stored(&a.batch, "user", Some(&state), &[Some(&read[..cut])]).is_err());
    }
    for i in 0..state.len() {
        for x in [0x00, 0x01, 0x20, 0x7f, 0x80, 0xff] {
            let mut s = state.clone();
            s[i] ^= x;
            let _ = apply_stored(&a.batch, "user", Some(&s), &[Some(&read)]);
        }
    }
    for i in 0..read.len() {
        for x in [0x01, 0x80, 0xff] {
            let mut r = read.clone();
            r[i] ^= x;
            let _ = apply_stored(&a.batch, "user", Some(&state), &[Some(&r)]);
        }
    }
}

/// A redelivery to the instance that committed the event, whose memory of
/// the entity is current: the commit that presumes that state finds the
/// event's dedup key and takes what the first delivery read instead.
#[test]
fn a_redelivery_where_the_state_is_known_is_not_counted_again() {
    let server = RedisServer::start();
    let rt = runtime();
    let mut a = Instance::new(config(vec![server.url()], false));
    let first = a.burst(&rt, &[ev("e1", T0, "u1", "d1", 10)]).unwrap();
    let again = a.burst(&rt, &[ev("e1", T0, "u1", "d1", 10)]).unwrap();
    assert_eq!(
        again[0].0,
        UpdateOutcome::Duplicate,
        "the local dedup saw it"
    );
    assert_eq!(again[0].1, first[0].1, "what the first delivery read");
    let next = a
        .burst(&rt, &[ev("e2", T0 + 1_000, "u2", "d1", 1)])
        .unwrap();
    assert_eq!(
        get(&a.catalogue, &next[0].1, "feature.device.users_10m"),
        &Value::Number(1.0),
        "d1 counted u1 once"
    );
}

/// A burst split over three chains by entity, the parts run at once and
/// rejoined, reads what the same burst reads run whole.
#[test]
fn a_burst_split_over_chains_reads_what_it_reads_whole() {
    let server = RedisServer::start();
    let rt = runtime();
    let mut whole = Instance::new(config(vec![server.url()], false));
    let mut split = Instance::new(config(vec![server.url()], false));
    let parser = parser();
    let mut t = T0;
    for round in 0..20 {
        let events: Vec<Ev> = (0..12)
            .map(|k| {
                t += 7_000;
                ev(
                    &format!("r{round}e{k}"),
                    t,
                    &format!("u{}", (round * 5 + k) % 7),
                    &format!("d{}", (round + k) % 4),
                    k,
                )
            })
            .collect();
        let want = whole.burst(&rt, &events).unwrap();
        split.batch.clear();
        let mut outs = Vec::new();
        for e in &events {
            let event = e.parse(&parser);
            let mut out = vec![Value::Missing; features_len(&split.catalogue)];
            let outcome = split
                .store
                .read_and_update(&event, &mut out, &mut split.clock);
            split.store.push_shared(&event, outcome, &mut split.batch);
            outs.push(out);
        }
        let mut parts = split.batch.split(3);
        assert!(
            parts.iter().flatten().count() > 1,
            "the entities spread over the chains"
        );
        let client = &split.client;
        let ran = rt.block_on(futures::future::join_all(
            parts.iter_mut().flatten().map(|p| client.execute(p)),
        ));
        assert!(ran.iter().all(Result::is_ok), "{ran:?}");
        let parts: Vec<_> = parts
            .into_iter()
            .map(|p| p.map(std::sync::Arc::new))
            .collect();
        split.batch.rejoin(&parts);
        for (n, (out, (_, w))) in outs.iter_mut().zip(&want).enumerate() {
            assert!(split.batch.read(n, out), "event {n} read whole");
            assert_eq!(out, w, "round {round} event {n}");
        }
    }
}
