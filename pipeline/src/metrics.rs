//! Every metric Verdict exports, named in this one module so dashboards and
//! alerts can rely on the names.

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

use crate::engine::StageTimings;

/// The service's metrics, registered once and shared by reference.
pub struct Metrics {
    registry: Registry,
    events: IntCounter,
    decisions: IntCounterVec,
    dead_letters: IntCounterVec,
    latency: Histogram,
    stage: prometheus::HistogramVec,
    in_flight: IntGauge,
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
        Metrics {
            registry,
            events,
            decisions,
            dead_letters,
            latency,
            stage,
            in_flight,
        }
    }

    /// One event read.
    pub fn event(&self) {
        self.events.inc();
    }

    /// One decision made.
    pub fn decision(&self, outcome: &str, latency_us: u64, timings: &StageTimings) {
        self.decisions.with_label_values(&[outcome]).inc();
        self.latency.observe(latency_us as f64 / 1e6);
        for (name, d) in [
            ("parse", timings.parse),
            ("features", timings.features),
            ("model", timings.model),
            ("rules", timings.rules),
        ] {
            self.stage
                .with_label_values(&[name])
                .observe(d.as_secs_f64());
        }
    }

    /// One event rejected.
    pub fn dead_letter(&self, reason: &str) {
        self.dead_letters.with_label_values(&[reason]).inc();
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
