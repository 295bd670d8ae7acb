//! 100 rules over generated events: Verdict's compiled rules against the
//! same rules as CEL expressions run by a published interpreter
//! (`cel-interpreter`) and as expressions of GoRules ZEN's engine
//! (`zen-expression`), in the same bench on the same events, so the ratios
//! are known.
//!
//! Every side starts from a parsed event and its feature values. Verdict
//! evaluates its rule set on the event's slot arrays; CEL and ZEN get a
//! context of the same values (built per event, as their APIs require) and
//! run their 100 compiled expressions. The hits each finds are printed
//! first, so a reader sees the three agree. Verdict's heap allocations per
//! event are counted by a global allocator and printed too.

mod alloc_count;

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cel_interpreter::{Context, Program};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use verdict_core::{Catalogue, Event, EventParser, Record, Schema, Value, ValueType};
use verdict_gen::{GenConfig, Generator};
use verdict_rules::{Evaluation, RuleSet, Source};
use zen_expression::variable::Variable;

#[global_allocator]
static ALLOC: alloc_count::Counting = alloc_count::Counting;

const RULES: usize = 100;

/// Rule `i` in ZEN's language: CEL's with `and`/`or` and `startsWith(s, p)`.
fn zen_rule(i: usize) -> String {
    let cel = rule(i).1;
    let zen = cel.replace("&&", "and").replace("||", "or");
    match zen.split_once("ip.startsWith(\"45.\")") {
        Some((a, b)) => format!("{a}startsWith(ip, \"45.\"){b}"),
        None => zen,
    }
}

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
    zen: Vec<zen_expression::Expression<zen_expression::expression::Standard>>,
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
    let zen = (0..RULES)
        .map(|i| {
            zen_expression::compile_expression(&zen_rule(i))
                .unwrap_or_else(|e| panic!("ZEN rule {i} compiles: {e:?}"))
        })
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
        zen,
        slots,
    }
}

fn zen_context(e: &Event, f: &[Value; 3], s: &Slots) -> Variable {
    let num = |v: &Value| v.as_number().unwrap_or(f64::NAN);
    let text = |v: &Value| v.as_str().unwrap_or("").to_owned();
    serde_json::json!({
        "event_type": text(e.get(s.event_type)),
        "amount": num(e.get(s.amount)),
        "currency": text(e.get(s.currency)),
        "ip": text(e.get(s.ip)),
        "new_device": e.get(s.new_device).as_bool().unwrap_or(false),
        "txn_count_1h": num(&f[0]),
        "device_accounts_7d": num(&f[1]),
        "credit_limit": num(&f[2]),
    })
    .into()
}

fn verdict_hits(fx: &Fixture, out: &mut Evaluation) -> usize {
    let mut hits = 0;
    for (e, f) in fx.events.iter().zip(&fx.features) {
        let record = Record {
            event: e.values(),
            features: f,
            model: &[],
        };
        fx.set.evaluate(&record, out);
        hits += out.hits.len();
    }
    hits
}

fn cel_hits(fx: &Fixture) -> usize {
    let mut hits = 0;
    for (e, f) in fx.events.iter().zip(&fx.features) {
        let ctx = cel_context(e, f, &fx.slots);
        for p in &fx.programs {
            if let Ok(cel_interpreter::Value::Bool(true)) = p.execute(&ctx) {
                hits += 1;
            }
        }
    }
    hits
}

fn zen_hits(fx: &Fixture, vm: &mut zen_expression::vm::VM) -> usize {
    let mut hits = 0;
    for (e, f) in fx.events.iter().zip(&fx.features) {
        let ctx = zen_context(e, f, &fx.slots);
        for x in &fx.zen {
            if let Ok(Variable::Bool(true)) = x.evaluate_with(ctx.clone(), vm) {
                hits += 1;
            }
        }
    }
    hits
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
    let mut out = Evaluation::default();
    let mut vm = zen_expression::vm::VM::new();
    println!(
        "rules_100: hits over {n} events: verdict {}, cel_interpreter {}, zen_expression {}",
        verdict_hits(&fx, &mut out),
        cel_hits(&fx),
        zen_hits(&fx, &mut vm)
    );
    println!(
        "rules_100: verdict program of {} nodes for {RULES} rules",
        fx.set.program_len()
    );
    println!(
        "rules_100/verdict: {:.2} allocations per event",
        alloc_count::per_item(fx.events.len(), || {
            black_box(verdict_hits(&fx, &mut out));
        })
    );
    let mut group = c.benchmark_group("rules_100");
    group.throughput(Throughput::Elements(n));
    group.bench_function("verdict", |b| {
        b.iter(|| black_box(verdict_hits(&fx, &mut out)))
    });
    group.bench_function("cel_interpreter", |b| b.iter(|| black_box(cel_hits(&fx))));
    group.bench_function("zen_expression", |b| {
        b.iter(|| black_box(zen_hits(&fx, &mut vm)))
    });
    group.finish();
}

criterion_group!(benches, rules);
criterion_main!(benches);
