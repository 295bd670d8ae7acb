//! Every metric Verdict exports, named in this one module so dashboards and
//! alerts can rely on the names.
//!
//! It takes plain values (an outcome, durations, a rejection kind) and
//! knows nothing of the engine or the sources that report to it. Label
//! children that every event touches are resolved once: at start, or for
//! rule hits once per rule of each rule set loaded.

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use verdict_core::{Action, RejectionKind};

/// The stages of `verdict_stage_seconds{stage}`, in the order
/// [`Metrics::decision`] takes their durations.
pub const STAGES: [&str; 4] = ["parse", "features", "model", "rules"];

/// Rule counters cached by name address before the cache starts again.
const MAX_RULE_COUNTERS: usize = 4_096;

/// The service's metrics, registered once and shared by reference.
pub struct Metrics {
    registry: Registry,
    events: IntCounter,
    /// `dead_letters` children by rejection kind, in the order of
    /// [`RejectionKind::ALL`].
    by_rejection: Vec<IntCounter>,
    latency: Histogram,
    in_flight: IntGauge,
    consumer_lag: IntGaugeVec,
    rule_hits: IntCounterVec,
    history_dropped: IntCounter,
    /// Each rule name's counter, by the address of the name's `Arc`.
    rule_counters: ArcSwap<HashMap<usize, (Arc<str>, IntCounter)>>,
    model_batch: Histogram,
    model_timeouts: IntCounter,
    model_errors: IntCounter,
    degraded: IntCounter,
    info: IntGaugeVec,
    reloads: IntCounterVec,
    feature_entities: IntGauge,
    feature_bytes: IntGauge,
    feature_late: IntCounter,
    feature_duplicates: IntCounter,
    feature_evictions: IntCounter,
    feature_replayed: IntCounter,
    rebalances: IntCounterVec,
    in_rebalance: IntGauge,
    outputs_dropped: IntCounter,
    resumed: IntCounter,
    shared_seconds: Histogram,
    shared_operations: IntCounter,
    shared_errors: IntCounterVec,
    shared_retries: IntCounter,
    local_incomplete: IntGauge,
    /// `decisions` children by outcome (approve, review, deny), resolved
    /// once so that counting a decision looks no label up.
    by_outcome: [IntCounter; 3],
    /// `stage` children: parse, features, model, rules.
    by_stage: [Histogram; 4],
}

const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

impl Metrics {
    /// Builds and registers every metric.
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let events = IntCounter::new("verdict_events_total", "Events read.").expect("valid metric");
        let decisions = IntCounterVec::new(
            Opts::new("verdict_decisions_total", "Decisions made, by outcome."),
            &["outcome"],
        )
        .expect("valid metric");
        let dead_letters = IntCounterVec::new(
            Opts::new("verdict_dead_letters_total", "Rejected events, by reason."),
            &["reason"],
        )
        .expect("valid metric");
        let latency = Histogram::with_opts(
            HistogramOpts::new(
                "verdict_decision_latency_seconds",
                "From reading an event to handing its decision to the output.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        )
        .expect("valid metric");
        let stage = prometheus::HistogramVec::new(
            HistogramOpts::new("verdict_stage_seconds", "Time spent in each stage.")
                .buckets(LATENCY_BUCKETS.to_vec()),
            &["stage"],
        )
        .expect("valid metric");
        let in_flight = IntGauge::new(
            "verdict_in_flight",
            "Events read whose output is not yet acknowledged.",
        )
        .expect("valid metric");
        let consumer_lag = IntGaugeVec::new(
            Opts::new(
                "verdict_consumer_lag",
                "Messages behind the end of each partition.",
            ),
            &["topic", "partition"],
        )
        .expect("valid metric");
        let rule_hits = IntCounterVec::new(
            Opts::new("verdict_rule_hits_total", "Times each rule matched."),
            &["rule"],
        )
        .expect("valid metric");
        let model_batch = Histogram::with_opts(
            HistogramOpts::new("verdict_model_batch_size", "Events scored per model batch.")
                .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0]),
        )
        .expect("valid metric");
        let model_timeouts = IntCounter::new(
            "verdict_model_timeouts_total",
            "Events decided without a score because the model missed its deadline.",
        )
        .expect("valid metric");
        let model_errors = IntCounter::new(
            "verdict_model_errors_total",
            "Events decided without a score because the model failed to score them.",
        )
        .expect("valid metric");
        let degraded = IntCounter::new(
            "verdict_decisions_degraded_total",
            "Decisions made without a stage (the model) that missed its deadline or failed.",
        )
        .expect("valid metric");
        let info = IntGaugeVec::new(
            Opts::new("verdict_info", "The rule set and model in use (value 1)."),
            &["ruleset_version", "model_version"],
        )
        .expect("valid metric");
        let reloads = IntCounterVec::new(
            Opts::new("verdict_reloads_total", "Reloads, by component and result."),
            &["component", "result"],
        )
        .expect("valid metric");
        let feature_entities = IntGauge::new(
            "verdict_feature_store_entities",
            "Entities held in the feature store.",
        )
        .expect("valid metric");
        let feature_bytes = IntGauge::new(
            "verdict_feature_store_bytes",
            "Approximate memory held by the feature store.",
        )
        .expect("valid metric");
        let feature_late = IntCounter::new(
            "verdict_feature_late_events_total",
            "Events older than the allowed lateness: decided, but not added to the windows.",
        )
        .expect("valid metric");
        let feature_duplicates = IntCounter::new(
            "verdict_feature_duplicate_events_total",
            "Events whose event_id was seen recently: decided, but not counted again.",
        )
        .expect("valid metric");
        let feature_evictions = IntCounter::new(
            "verdict_feature_evictions_total",
            "Entities evicted from the feature store (idle, or over the memory budget).",
        )
        .expect("valid metric");
        let feature_replayed = IntCounter::new(
            "verdict_feature_replayed_events_total",
            "Events read again from Kafka to catch the feature store up on an assigned \
             partition (after a snapshot, or from another instance), not decided again.",
        )
        .expect("valid metric");
        let rebalances = IntCounterVec::new(
            Opts::new(
                "verdict_rebalances_total",
                "Consumer-group rebalances a lane took part in, by kind (assign, revoke).",
            ),
            &["kind"],
        )
        .expect("valid metric");
        let in_rebalance = IntGauge::new(
            "verdict_lanes_in_rebalance",
            "Lanes inside a rebalance callback now (draining and committing revoked \
             partitions, or reading back an assignment's positions).",
        )
        .expect("valid metric");
        let outputs_dropped = IntCounter::new(
            "verdict_outputs_dropped_total",
            "Outputs not produced because their partition was revoked before they were \
             decided (past the drain bound); the partition's next owner decides those events.",
        )
        .expect("valid metric");
        let history_dropped = IntCounter::new(
            "verdict_history_dropped_total",
            "Decisions not archived to the decision log because its writer had fallen behind \
             (deciding never waits for it).",
        )
        .expect("valid metric");
        let resumed = IntCounter::new(
            "verdict_resumed_events_total",
            "Events of a newly assigned partition whose output was already on the output \
             topics (written before a crash or a refused commit): read into the features, not \
             decided again.",
        )
        .expect("valid metric");
        let shared_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "verdict_shared_store_seconds",
                "Round trip of one burst of shared-store operations (every shared entity of \
                 every event of the burst, in one pipeline), deadline included.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        )
        .expect("valid metric");
        let shared_operations = IntCounter::new(
            "verdict_shared_store_operations_total",
            "Entity operations (one per shared entity per event) answered by the shared store.",
        )
        .expect("valid metric");
        let shared_errors = IntCounterVec::new(
            Opts::new(
                "verdict_shared_store_errors_total",
                "Bursts of shared-store operations that failed, by kind (timeout, unavailable, \
                 server, reply, too_large, conflict); their events were decided degraded, \
                 without the shared features.",
            ),
            &["kind"],
        )
        .expect("valid metric");
        for kind in [
            "timeout",
            "unavailable",
            "server",
            "reply",
            "too_large",
            "conflict",
        ] {
            shared_errors.with_label_values(&[kind]);
        }
        let shared_retries = IntCounter::new(
            "verdict_shared_store_retries_total",
            "Entity commits sent again because another instance or lane changed the entity \
             since it was read (its events applied again to the newer state). A few are normal \
             for entities many instances see; a rate near the operations' means a hot entity.",
        )
        .expect("valid metric");
        let local_incomplete = IntGauge::new(
            "verdict_local_kinds_incomplete",
            "Entity kinds kept in this process (placement local) though not keyed by the \
             message key, while this instance owns only some of the events topic's \
             partitions: their windows count only this instance's share of their events. \
             0 when safe; place such kinds `shared`.",
        )
        .expect("valid metric");
        for c in [
            Box::new(consumer_lag.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(local_incomplete.clone()),
            Box::new(shared_seconds.clone()),
            Box::new(shared_operations.clone()),
            Box::new(shared_errors.clone()),
            Box::new(shared_retries.clone()),
            Box::new(resumed.clone()),
            Box::new(rebalances.clone()),
            Box::new(in_rebalance.clone()),
            Box::new(outputs_dropped.clone()),
            Box::new(history_dropped.clone()),
            Box::new(feature_replayed.clone()),
            Box::new(model_errors.clone()),
            Box::new(degraded.clone()),
            Box::new(feature_late.clone()),
            Box::new(feature_duplicates.clone()),
            Box::new(feature_evictions.clone()),
            Box::new(rule_hits.clone()),
            Box::new(model_batch.clone()),
            Box::new(model_timeouts.clone()),
            Box::new(info.clone()),
            Box::new(reloads.clone()),
            Box::new(feature_entities.clone()),
            Box::new(feature_bytes.clone()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        for c in [
            Box::new(events.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(decisions.clone()),
            Box::new(dead_letters.clone()),
            Box::new(latency.clone()),
            Box::new(stage.clone()),
            Box::new(in_flight.clone()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        let by_outcome = [Action::Approve, Action::Review, Action::Deny]
            .map(|a| decisions.with_label_values(&[a.as_str()]));
        let by_stage = STAGES.map(|s| stage.with_label_values(&[s]));
        let by_rejection = RejectionKind::ALL
            .iter()
            .map(|k| dead_letters.with_label_values(&[k.as_str()]))
            .collect();
        Metrics {
            by_outcome,
            by_stage,
            registry,
            events,
            by_rejection,
            latency,
            in_flight,
            consumer_lag,
            rule_hits,
            history_dropped,
            rule_counters: Default::default(),
            model_batch,
            model_timeouts,
            model_errors,
            degraded,
            info,
            reloads,
            feature_entities,
            feature_bytes,
            feature_late,
            feature_duplicates,
            feature_evictions,
            feature_replayed,
            rebalances,
            in_rebalance,
            outputs_dropped,
            resumed,
            shared_seconds,
            shared_operations,
            shared_errors,
            shared_retries,
            local_incomplete,
        }
    }

    /// Local kinds whose windows are incomplete now (see the metric).
    pub fn set_local_incomplete(&self, kinds: usize) {
        self.local_incomplete.set(kinds as i64);
    }

    /// A burst of `operations` shared-store operations answered in
    /// `elapsed`.
    pub fn shared_completed(&self, operations: usize, elapsed: Duration) {
        self.shared_operations.inc_by(operations as u64);
        self.shared_seconds.observe(elapsed.as_secs_f64());
    }

    /// A burst of shared-store operations failed (`kind`: timeout,
    /// unavailable, server, reply, too_large).
    pub fn shared_failed(&self, kind: &str, _operations: usize) {
        self.shared_errors.with_label_values(&[kind]).inc();
    }

    /// Commits of `entities` shared entities were computed and sent again.
    pub fn shared_retried(&self, entities: usize) {
        self.shared_retries.inc_by(entities as u64);
    }

    /// A lane entered (`true`) or left a rebalance callback.
    pub fn in_rebalance(&self, entered: bool) {
        if entered {
            self.in_rebalance.inc();
        } else {
            self.in_rebalance.dec();
        }
    }

    /// An event not decided again: its output was already there.
    pub fn resumed(&self) {
        self.resumed.inc();
    }

    /// A lane's part in a rebalance: `assign` or `revoke`.
    pub fn rebalance(&self, kind: &str) {
        self.rebalances.with_label_values(&[kind]).inc();
    }

    /// A decision the decision log had no room for (it fell behind).
    pub fn history_dropped(&self) {
        self.history_dropped.inc();
    }

    /// An output dropped because its partition was revoked.
    pub fn output_dropped(&self) {
        self.outputs_dropped.inc();
    }

    /// `n` events were added to the feature store by a catch-up.
    pub fn features_replayed(&self, n: u64) {
        self.feature_replayed.inc_by(n);
    }

    /// Messages behind the end of a partition.
    pub fn set_consumer_lag(&self, topic: &str, partition: i32, lag: i64) {
        self.consumer_lag
            .with_label_values(&[topic, &partition.to_string()])
            .set(lag);
    }

    /// One rule matched. `rule` is the name the rule set holds (a hit's
    /// `rule`): its counter is found by the name's address, resolved by
    /// label once per rule and rule-set load.
    pub fn rule_hit(&self, rule: &Arc<str>) {
        let key = Arc::as_ptr(rule).cast::<u8>() as usize;
        if let Some((_, counter)) = self.rule_counters.load().get(&key) {
            counter.inc();
            return;
        }
        let counter = self.rule_hits.with_label_values(&[rule]);
        counter.inc();
        self.rule_counters.rcu(|known| {
            // Bounded: rule sets come and go with reloads; start again
            // rather than keep the names of every set ever loaded.
            let mut known = if known.len() >= MAX_RULE_COUNTERS {
                HashMap::default()
            } else {
                HashMap::clone(known)
            };
            // The name is kept so its address is not reused while cached.
            known.insert(key, (rule.clone(), counter.clone()));
            known
        });
    }

    /// The totals so far: events decided, and hits by rule name (shadow
    /// hits included), for the workbench's hour and day counts. Off the
    /// event path: it walks every rule's counter.
    pub fn rule_hit_totals(&self) -> (u64, std::collections::BTreeMap<String, u64>) {
        let decided = self.by_outcome.iter().map(IntCounter::get).sum();
        let mut hits = std::collections::BTreeMap::new();
        for family in prometheus::core::Collector::collect(&self.rule_hits) {
            for m in family.get_metric() {
                let Some(rule) = m.get_label().iter().find(|l| l.name() == "rule") else {
                    continue;
                };
                hits.insert(rule.value().to_owned(), m.get_counter().get_value() as u64);
            }
        }
        (decided, hits)
    }

    /// One model batch scored.
    pub fn observe_model_batch(&self, size: usize) {
        self.model_batch.observe(size as f64);
    }

    /// One event's score missed its deadline.
    pub fn model_timeout(&self) {
        self.model_timeouts.inc();
    }

    /// The versions in use; replaces the previous pair.
    pub fn set_versions(&self, ruleset_version: &str, model_version: &str) {
        self.info.reset();
        self.info
            .with_label_values(&[ruleset_version, model_version])
            .set(1);
    }

    /// One reload of `component` (`rules`, `model`, `features`) finished.
    pub fn reload(&self, component: &str, succeeded: bool) {
        let result = if succeeded { "success" } else { "failure" };
        self.reloads.with_label_values(&[component, result]).inc();
    }

    /// One event the model failed to score.
    pub fn model_error(&self) {
        self.model_errors.inc();
    }

    /// The feature store's size and counters (cumulative since start).
    pub fn set_feature_store(&self, stats: &verdict_features::StoreStats) {
        self.feature_entities.set(stats.entities as i64);
        self.feature_bytes.set(stats.bytes as i64);
        for (c, total) in [
            (&self.feature_late, stats.late_events),
            (&self.feature_duplicates, stats.duplicates),
            (&self.feature_evictions, stats.evictions),
        ] {
            c.inc_by(total.saturating_sub(c.get()));
        }
    }

    /// One event read.
    pub fn event(&self) {
        self.events.inc();
    }

    /// One decision made: its outcome, its latency, the time each of
    /// [`STAGES`] took, and whether a stage was missing.
    pub fn decision(
        &self,
        outcome: Action,
        latency_us: u64,
        stages: [Duration; 4],
        degraded: bool,
    ) {
        let i = match outcome {
            Action::Approve => 0,
            Action::Review => 1,
            Action::Deny => 2,
        };
        self.by_outcome[i].inc();
        self.latency.observe(latency_us as f64 / 1e6);
        for (h, d) in self.by_stage.iter().zip(stages) {
            h.observe(d.as_secs_f64());
        }
        if degraded {
            self.degraded.inc();
        }
    }

    /// One event rejected, by kind.
    pub fn dead_letter(&self, kind: RejectionKind) {
        if let Some(c) = self.by_rejection.get(kind as usize) {
            c.inc();
        }
    }

    /// Events whose output is not yet acknowledged.
    pub fn set_in_flight(&self, n: usize) {
        self.in_flight.set(n as i64);
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding into memory does not fail");
        String::from_utf8(buf).expect("the text format is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `dead_letter` indexes its children by the kind's discriminant.
    #[test]
    fn rejection_kinds_index_their_children() {
        for (i, k) in RejectionKind::ALL.iter().enumerate() {
            assert_eq!(*k as usize, i, "{k:?}");
        }
        let m = Metrics::new();
        m.dead_letter(RejectionKind::WrongType);
        assert!(
            m.render()
                .contains("verdict_dead_letters_total{reason=\"wrong_type\"} 1")
        );
    }

    /// A rule's hits count under its name whichever `Arc` of the name a hit
    /// holds: the one cached, a clone of it, or one of another rule set.
    #[test]
    fn rule_hits_count_by_name_whatever_the_arc() {
        let m = Metrics::new();
        let name: Arc<str> = Arc::from("velocity");
        for _ in 0..3 {
            m.rule_hit(&name.clone());
        }
        let reloaded: Arc<str> = Arc::from("velocity");
        m.rule_hit(&reloaded);
        m.rule_hit(&Arc::from("other"));
        let text = m.render();
        assert!(
            text.contains("verdict_rule_hits_total{rule=\"velocity\"} 4"),
            "{text}"
        );
        assert!(
            text.contains("verdict_rule_hits_total{rule=\"other\"} 1"),
            "{text}"
        );
        assert_eq!(m.rule_counters.load().len(), 3);
    }

    /// The cache of counters stays bounded however many rule sets load.
    #[test]
    fn rule_counter_cache_is_bounded() {
        let m = Metrics::new();
        for i in 0..(MAX_RULE_COUNTERS * 2 + 5) {
            m.rule_hit(&Arc::from(format!("r{}", i % 10)));
        }
        assert!(m.rule_counters.load().len() <= MAX_RULE_COUNTERS);
        assert!(m.render().contains("verdict_rule_hits_total{rule=\"r3\"}"));
    }
}
