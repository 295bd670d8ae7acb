//! 100 rules over generated events: Verdict's compiled rules against the
//! same rules as CEL expressions run by a published interpreter
//! (`cel-interpreter`), in the same bench on the same events, so the ratio
//! is known.
//!
//! Both sides start from a parsed event and its feature values. Verdict
//! evaluates its rule set on the event's slot arrays; CEL gets a context of
//! the same values (built per event, as its API requires) and runs its 100
//! compiled programs.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cel_interpreter::{Context, Program};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use verdict_core::{Catalogue, Event, EventParser, Record, Schema, Value, ValueType};
use verdict_gen::{GenConfig, Generator};
use verdict_rules::{Evaluation, RuleSet, Source};

const RULES: usize = 100;

/// Rule `i` in both languages: Verdict's condition and the CEL expression.
fn rule(i: usize) -> (String, String) {
    let t = 500 + 37 * i;
    let k = i % 12;
    match i % 5 {
        0 => (
            format!(
                "event.amount > {t} and event.event_type == \"payment\" and feature.user.txn_count_1h >= {k}"
            ),
            format!("amount > {t}.0 && event_type == \"payment\" && txn_count_1h >= {k}.0"),
        ),
        1 => (
            format!(
                "event.currency in [\"USD\", \"EUR\", \"GBP\"] or (event.amount >= {t} and event.attributes.new_device == true)"
            ),
            format!(
                "currency in [\"USD\", \"EUR\", \"GBP\"] || (amount >= {t}.0 && new_device == true)"
            ),
        ),
        2 => (
            format!(
                "feature.device.account_count_7d > {} and feature.user.txn_count_1h * 2 > {k}",
                i % 4
            ),
            format!(
                "device_accounts_7d > {}.0 && txn_count_1h * 2.0 > {k}.0",
                i % 4
            ),
        ),
        3 => (
            format!("starts_with(event.ip, \"45.\") and event.amount > {t}"),
            format!("ip.startsWith(\"45.\") && amount > {t}.0"),
        ),
        _ => (
            format!(
                "event.event_type == \"loan_application\" and event.amount > feature.user.credit_limit * 0.{}",
                5 + i % 5
            ),
            format!(
                "event_type == \"loan_application\" && amount > credit_limit * 0.{}",
                5 + i % 5
            ),
        ),
    }
}

struct Fixture {
    events: Vec<Event>,
    features: Vec<[Value; 3]>,
    set: RuleSet,
    programs: Vec<Program>,
    slots: Slots,
}

/// The schema slots the CEL context is filled from.
struct Slots {
    event_type: usize,
    amount: usize,
    currency: usize,
    ip: usize,
    new_device: usize,
}

fn fixture() -> Fixture {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let schema = Arc::new(Schema::load(&root.join("examples/schema.toml")).expect("schema loads"));
    let mut catalogue = Catalogue::from_schema(&schema);
    catalogue.add_feature("user", "txn_count_1h", ValueType::Number);
    catalogue.add_feature("device", "account_count_7d", ValueType::Number);
    catalogue.add_feature("user", "credit_limit", ValueType::Number);
    let text: String = (0..RULES)
        .map(|i| {
            let action = ["approve", "review", "deny"][i % 3];
            format!(
                "rule r{i}:\n  {action} if {}\n  reason \"rule {i}\"\n",
                rule(i).0
            )
        })
        .collect();
    let set = RuleSet::compile(
        &[Source {
            path: PathBuf::from("bench.rules"),
            text: text.into(),
        }],
        None,
        &catalogue,
    )
    .unwrap_or_else(|e| panic!("bench rules check: {e}"));
    let programs = (0..RULES)
        .map(|i| Program::compile(&rule(i).1).expect("CEL rule compiles"))
        .collect();
    let parser = EventParser::new(schema.clone());
    let mut generator = Generator::new(GenConfig {
        malformed_rate: 0.0,
        fraud_rate: 0.05,
        ..GenConfig::default()
    });
    let events: Vec<Event> = (0..1024)
        .map(|_| {
            parser
                .parse(&generator.next_event().bytes)
                .expect("generated events parse")
        })
        .collect();
    let features = (0..events.len())
        .map(|i| {
            [
                Value::Number((i % 13) as f64),
                Value::Number((i % 5) as f64),
                Value::Number(5_000.0 + (i % 7) as f64 * 3_000.0),
            ]
        })
        .collect();
    let slot = |p: &str| schema.slot(p).unwrap_or_else(|| panic!("{p} in schema"));
    let slots = Slots {
        event_type: verdict_core::EVENT_TYPE_SLOT,
        amount: slot("amount"),
        currency: slot("currency"),
        ip: slot("ip"),
        new_device: slot("attributes.new_device"),
    };
    Fixture {
        events,
        features,
        set,
        programs,
        slots,
    }
}

fn cel_context<'a>(e: &Event, f: &[Value; 3], s: &Slots) -> Context<'a> {
    let mut ctx = Context::default();
    let num = |v: &Value| v.as_number().unwrap_or(f64::NAN);
    let text = |v: &Value| v.as_str().unwrap_or("").to_owned();
    ctx.add_variable_from_value("event_type", text(e.get(s.event_type)));
    ctx.add_variable_from_value("amount", num(e.get(s.amount)));
    ctx.add_variable_from_value("currency", text(e.get(s.currency)));
    ctx.add_variable_from_value("ip", text(e.get(s.ip)));
    ctx.add_variable_from_value("new_device", e.get(s.new_device).as_bool().unwrap_or(false));
    ctx.add_variable_from_value("txn_count_1h", num(&f[0]));
    ctx.add_variable_from_value("device_accounts_7d", num(&f[1]));
    ctx.add_variable_from_value("credit_limit", num(&f[2]));
    ctx
}

fn rules(c: &mut Criterion) {
    let fx = fixture();
    let n = fx.events.len() as u64;
    let mut group = c.benchmark_group("rules_100");
    group.throughput(Throughput::Elements(n));
    group.bench_function("verdict", |b| {
        let mut out = Evaluation::default();
        b.iter(|| {
            let mut hits = 0;
            for (e, f) in fx.events.iter().zip(&fx.features) {
                let record = Record {
                    event: e.values(),
                    features: f,
                    model: &[],
                };
                fx.set.evaluate(&record, &mut out);
                hits += out.hits.len();
            }
            black_box(hits)
        })
    });
    group.bench_function("cel_interpreter", |b| {
        b.iter(|| {
            let mut hits = 0;
            for (e, f) in fx.events.iter().zip(&fx.features) {
                let ctx = cel_context(e, f, &fx.slots);
                for p in &fx.programs {
                    if let Ok(cel_interpreter::Value::Bool(true)) = p.execute(&ctx) {
                        hits += 1;
                    }
                }
            }
            black_box(hits)
        })
    });
    group.finish();
}

criterion_group!(benches, rules);
criterion_main!(benches);
