//! The backtest report from hand-made and generated events: what it counts,
//! that it is the same whatever the order, and its golden renderings.

use proptest::prelude::*;
use verdict_backtest::{
    BacktestError, Chargebacks, Completion, EventInput, LabelField, LabelRule, Report,
    ReportBuilder, ReportOptions, RuleDesc, RuleHit, RuleStatus, SideBuffer, SideOptions, render,
};
use verdict_core::Action;

/// A toy rule set: each rule fires when the event's `score` passes its
/// threshold; hits in winning order (deny before review, then by order).
#[derive(Clone)]
struct ToyRules(Vec<ToyRule>);

/// Name, action, threshold, shadow.
type ToyRule = (&'static str, Action, f64, bool);

impl ToyRules {
    fn descs(&self) -> Vec<RuleDesc> {
        self.0
            .iter()
            .map(|(n, a, t, shadow)| RuleDesc {
                name: (*n).into(),
                action: *a,
                shadow: *shadow,
                hash: t.to_bits() ^ u64::from(*shadow),
            })
            .collect()
    }

    fn decide(&self, b: &ReportBuilder, score: f64, out: &mut SideBuffer) {
        out.clear();
        let mut fired: Vec<(usize, &ToyRule)> = self
            .0
            .iter()
            .enumerate()
            .filter(|(_, r)| score > r.2)
            .collect();
        fired.sort_by_key(|(i, r)| (std::cmp::Reverse(r.1), *i));
        for (_, (name, action, _, shadow)) in fired {
            let hit = RuleHit {
                rule: b.rules().id(name).unwrap(),
                action: *action,
            };
            if *shadow {
                out.shadow_hits.push(hit)
            } else {
                out.hits.push(hit)
            }
        }
        out.outcome = out.hits.first().map_or(Action::Approve, |h| h.action);
        out.scores.push(score);
    }
}

fn base_rules() -> ToyRules {
    ToyRules(vec![
        ("high_score", Action::Deny, 0.9, false),
        ("mid_score", Action::Review, 0.6, false),
        ("trial", Action::Deny, 0.8, true),
    ])
}

fn options(base: &ToyRules, cand: &ToyRules) -> ReportOptions {
    ReportOptions {
        history: "events.jsonl".into(),
        baseline: SideOptions {
            name: "rules baseline/".into(),
            ruleset_version: Some("rs-00000001".into()),
            model_version: Some("toy-1".into()),
            rules: Some(base.descs()),
            score_names: vec!["fraud_score".into()],
        },
        candidate: SideOptions {
            name: "rules candidate/".into(),
            ruleset_version: Some("rs-00000002".into()),
            model_version: Some("toy-1".into()),
            rules: Some(cand.descs()),
            score_names: vec!["fraud_score".into()],
        },
        label: Some("field `label`: `legit` marks a legitimate event".into()),
        amount_field: Some("amount".into()),
        sample_size: 3,
        seed: 7,
        ..Default::default()
    }
}

/// Event `i`: a score, a label and an amount made from the number.
fn event(i: u64) -> (String, i64, f64, bool, f64) {
    let score = ((i * 7919) % 1000) as f64 / 1000.0;
    let fraud = (i * 31).is_multiple_of(10) && score > 0.5 || (i * 13).is_multiple_of(97);
    (
        format!("e-{i:05}"),
        1_795_507_200_000 + i as i64 * 1000,
        score,
        fraud,
        (i % 50) as f64 * 10.25,
    )
}

fn run(
    base: &ToyRules,
    cand: &ToyRules,
    ids: impl IntoIterator<Item = u64>,
    opts: ReportOptions,
) -> Report {
    let mut b = ReportBuilder::new(opts).unwrap();
    let (mut sb, mut sc) = (SideBuffer::default(), SideBuffer::default());
    for i in ids {
        let (id, ts, score, fraud, amount) = event(i);
        base.decide(&b, score, &mut sb);
        cand.decide(&b, score, &mut sc);
        b.add(&EventInput {
            event_id: &id,
            timestamp_ms: ts,
            label: Some(fraud),
            amount: Some(amount),
            baseline: sb.input(),
            candidate: sc.input(),
        });
    }
    b.finish(Completion::Complete).unwrap()
}

#[test]
fn a_rule_set_against_itself_changes_nothing() {
    let rules = base_rules();
    let r = run(&rules, &rules, 0..2000, options(&rules, &rules));
    assert_eq!(r.events, 2000);
    assert_eq!(r.changed.events, 0);
    for c in &r.matrix {
        if c.baseline != c.candidate {
            assert_eq!(c.events, 0, "{c:?}");
        }
    }
    assert!(
        r.rule_changes.added.is_empty()
            && r.rule_changes.removed.is_empty()
            && r.rule_changes.changed.is_empty()
    );
    assert_eq!(r.rule_changes.unchanged, 3);
    for rule in &r.rules {
        assert_eq!(rule.status, RuleStatus::Unchanged);
        assert_eq!(rule.baseline, rule.candidate);
        assert_eq!((rule.moved_in, rule.moved_out), (0, 0));
    }
    assert!(r.samples.cells.is_empty());
    let m = r.money.as_ref().unwrap();
    assert_eq!((m.newly_denied.events, m.newly_approved.events), (0, 0));
    let l = r.labels.as_ref().unwrap();
    assert_eq!(l.baseline, l.candidate);
    assert_eq!(
        (r.baseline.approve, r.baseline.review, r.baseline.deny),
        (r.candidate.approve, r.candidate.review, r.candidate.deny)
    );
}

#[test]
fn a_moved_threshold_moves_exactly_the_events_between_the_thresholds() {
    let base = base_rules();
    let mut cand = base_rules();
    cand.0[0].2 = 0.8; // high_score: deny above 0.8 instead of 0.9
    let r = run(&base, &cand, 0..5000, options(&base, &cand));
    // Independently: events with 0.8 < score <= 0.9 go review → deny.
    let moved: Vec<u64> = (0..5000)
        .filter(|i| {
            let s = event(*i).2;
            s > 0.8 && s <= 0.9
        })
        .collect();
    assert!(!moved.is_empty());
    assert_eq!(r.changed.events, moved.len() as u64);
    assert_eq!(
        r.cell(Action::Review, Action::Deny).events,
        moved.len() as u64
    );
    let high = r.rules.iter().find(|x| x.rule == "high_score").unwrap();
    assert_eq!(high.status, RuleStatus::Changed);
    assert_eq!(high.moved_in, moved.len() as u64);
    assert_eq!(high.candidate.hits - high.baseline.hits, moved.len() as u64);
    let mid = r.rules.iter().find(|x| x.rule == "mid_score").unwrap();
    assert_eq!(
        mid.moved_out,
        moved.len() as u64,
        "mid_score alone gave these reviews"
    );
    assert_eq!(r.rule_changes.changed, ["high_score"]);
    let amount: f64 = moved.iter().map(|i| event(*i).4).sum();
    let m = r.money.as_ref().unwrap();
    assert_eq!(m.newly_denied.events, moved.len() as u64);
    assert!((m.newly_denied.amount - amount).abs() < 1e-6);
    // The sample: three events of the cell, each showing the new hit.
    let cell = &r.samples.cells[0];
    assert_eq!(
        (cell.baseline, cell.candidate, cell.total),
        (Action::Review, Action::Deny, moved.len() as u64)
    );
    assert_eq!(cell.events.len(), 3);
    for e in &cell.events {
        assert_eq!(e.only_candidate.len(), 1);
        assert_eq!(e.only_candidate[0].rule, "high_score");
        assert_eq!(e.candidate_rule.as_deref(), Some("high_score"));
        assert_eq!(e.baseline_rule.as_deref(), Some("mid_score"));
    }
}

/// Ten hand-made events: (baseline, candidate, fraud).
#[test]
fn label_metrics_on_a_small_hand_made_set() {
    use Action::*;
    let rows = [
        (Deny, Deny, true),
        (Deny, Deny, false),
        (Review, Deny, true),
        (Approve, Deny, true),
        (Approve, Review, false),
        (Approve, Approve, false),
        (Approve, Approve, false),
        (Review, Approve, false),
        (Approve, Approve, true),
        (Deny, Approve, false),
    ];
    let opts = ReportOptions {
        label: Some("hand-made".into()),
        ..Default::default()
    };
    let mut b = ReportBuilder::new(opts).unwrap();
    for (i, (bo, co, fraud)) in rows.iter().enumerate() {
        let side = |o: Action| verdict_backtest::SideInput {
            outcome: o,
            hits: &[],
            shadow_hits: &[],
            scores: &[],
            degraded: false,
        };
        b.add(&EventInput {
            event_id: &format!("h{i}"),
            timestamp_ms: i as i64,
            label: Some(*fraud),
            amount: None,
            baseline: side(*bo),
            candidate: side(*co),
        });
    }
    let r = b.finish(Completion::Complete).unwrap();
    let l = r.labels.unwrap();
    assert_eq!((l.fraud, l.legit, l.labelled, l.unlabelled), (4, 6, 10, 0));
    let get = |v: &[verdict_backtest::LabelMetrics], o: &str| {
        v.iter().find(|m| m.outcome == o).unwrap().clone()
    };
    // Baseline deny: 3 events, 1 fraud of 4, 2 legit of 6.
    let d = get(&l.baseline, "deny");
    assert_eq!((d.events, d.fraud, d.legit), (3, 1, 2));
    assert_eq!(
        (d.catch_rate, d.false_positive_rate, d.precision),
        (Some(0.25), Some(0.333333), Some(0.333333))
    );
    // Candidate deny: 4 events, 3 fraud, 1 legit.
    let d = get(&l.candidate, "deny");
    assert_eq!(
        (d.catch_rate, d.false_positive_rate, d.precision),
        (Some(0.75), Some(0.166667), Some(0.75))
    );
    // Candidate review or deny: adds one legit review.
    let f = get(&l.candidate, "review_or_deny");
    assert_eq!(
        (f.events, f.catch_rate, f.false_positive_rate, f.precision),
        (5, Some(0.75), Some(0.333333), Some(0.6))
    );
    // Baseline review: one fraud, no legit.
    let rv = get(&l.baseline, "review");
    assert_eq!(
        (rv.catch_rate, rv.false_positive_rate, rv.precision),
        (Some(0.25), Some(0.166667), Some(0.5))
    );
    let a = get(&l.candidate, "approve");
    assert_eq!((a.fraud, a.legit, a.precision), (1, 4, Some(0.2)));
}

#[test]
fn samples_and_the_whole_report_do_not_depend_on_the_order_of_events() {
    let base = base_rules();
    let mut cand = base_rules();
    cand.0[1].2 = 0.5;
    cand.0.remove(2);
    cand.0.push(("new_rule", Action::Deny, 0.97, false));
    let forward = run(&base, &cand, 0..3000, options(&base, &cand));
    let mut ids: Vec<u64> = (0..3000).collect();
    // A fixed shuffle: the report must not care.
    ids.sort_by_key(|i| (i * 2_654_435_761) % 3001);
    let shuffled = run(&base, &cand, ids, options(&base, &cand));
    assert_eq!(forward.to_json(), shuffled.to_json());
    assert_eq!(
        render::html::render(&forward),
        render::html::render(&shuffled)
    );
    assert!(!forward.samples.cells.is_empty());
    let mut other = options(&base, &cand);
    other.seed = 8;
    let reseeded = run(&base, &cand, 0..3000, other);
    assert_ne!(
        forward.samples.cells, reseeded.samples.cells,
        "another seed picks other events"
    );
    assert_eq!(forward.rule_changes.added, ["new_rule"]);
    assert_eq!(forward.rule_changes.removed, ["trial"]);
    assert_eq!(forward.rule_changes.changed, ["mid_score"]);
}

/// Compares `got` with `tests/golden/<name>`; `VERDICT_BLESS=1` rewrites it.
fn golden(name: &str, got: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("VERDICT_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run with VERDICT_BLESS=1 to create it",
            path.display()
        )
    });
    if want != got {
        let line = want
            .lines()
            .zip(got.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(0);
        panic!(
            "{} differs from the rendering, first at line {}:\n  want: {}\n  got:  {}\nIf the change is deliberate, run with VERDICT_BLESS=1 and review the diff.",
            path.display(),
            line + 1,
            want.lines().nth(line).unwrap_or(""),
            got.lines().nth(line).unwrap_or("")
        );
    }
}

fn small_report() -> Report {
    let base = base_rules();
    let mut cand = base_rules();
    cand.0[0].2 = 0.85;
    cand.0.push(("new_rule", Action::Review, 0.3, false));
    let mut opts = options(&base, &cand);
    opts.from_ms = Some(1_795_507_200_000);
    opts.to_ms = Some(1_795_593_600_000);
    let mut b = ReportBuilder::new(opts).unwrap();
    let (mut sb, mut sc) = (SideBuffer::default(), SideBuffer::default());
    for i in 0..40 {
        let (id, ts, score, fraud, amount) = event(i);
        base.decide(&b, score, &mut sb);
        cand.decide(&b, score, &mut sc);
        b.add(&EventInput {
            event_id: &id,
            timestamp_ms: ts,
            label: Some(fraud),
            amount: Some(amount),
            baseline: sb.input(),
            candidate: sc.input(),
        });
    }
    b.not_compared("dead letter: not_json", 2);
    b.finish(Completion::Complete).unwrap()
}

#[test]
fn golden_renderings_of_a_small_report() {
    let r = small_report();
    golden("small.json", &r.to_json());
    golden("small.txt", &render::text::render(&r));
    golden("small.html", &render::html::render(&r));
    // The JSON reads back into the same report.
    let back: Report = serde_json::from_str(&r.to_json()).unwrap();
    assert_eq!(back, r);
}

#[test]
fn an_incomplete_run_says_so_everywhere() {
    let rules = base_rules();
    let mut b = ReportBuilder::new(options(&rules, &rules)).unwrap();
    let mut s = SideBuffer::default();
    rules.decide(&b, 0.95, &mut s);
    b.add(&EventInput {
        event_id: "x",
        timestamp_ms: 0,
        label: Some(true),
        amount: None,
        baseline: s.input(),
        candidate: s.input(),
    });
    let r = b
        .finish(Completion::Incomplete("time limit of 30 s reached".into()))
        .unwrap();
    assert!(!r.complete);
    assert!(
        r.to_json()
            .contains("\"incomplete\": \"time limit of 30 s reached\"")
    );
    assert!(render::text::render(&r).contains("INCOMPLETE: time limit of 30 s reached"));
    assert!(
        render::html::render(&r)
            .contains("class=\"banner\">INCOMPLETE: time limit of 30 s reached")
    );
}

#[test]
fn labels_asked_for_but_found_nowhere_are_an_error() {
    let rules = base_rules();
    let mut b = ReportBuilder::new(options(&rules, &rules)).unwrap();
    let mut s = SideBuffer::default();
    rules.decide(&b, 0.5, &mut s);
    let mut field = LabelField::new("lable", LabelRule::LegitValues(vec!["legit".into()])).unwrap();
    let bytes = br#"{"event_id":"x","label":"legit"}"#;
    let label = field.classify("x", bytes).unwrap();
    b.add(&EventInput {
        event_id: "x",
        timestamp_ms: 0,
        label,
        amount: None,
        baseline: s.input(),
        candidate: s.input(),
    });
    let e = field.check().unwrap_err();
    assert!(matches!(e, BacktestError::LabelNotFound { .. }));
    assert!(e.to_string().contains("did you mean `label`?"), "{e}");
    let e = b.finish(Completion::Complete).unwrap_err();
    assert!(
        e.to_string()
            .contains("none of the 1 events compared has one"),
        "{e}"
    );
}

#[test]
fn bad_options_are_refused() {
    let rules = base_rules();
    let mut o = options(&rules, &rules);
    o.sample_size = 5000;
    assert!(
        ReportBuilder::new(o)
            .unwrap_err()
            .to_string()
            .contains("5000 samples")
    );
    let mut o = options(&rules, &rules);
    o.from_ms = Some(10);
    o.to_ms = Some(10);
    assert!(
        ReportBuilder::new(o)
            .unwrap_err()
            .to_string()
            .contains("time range")
    );
}

#[test]
fn chargebacks_from_parquet_label_events() {
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("cb.parquet");
    let schema = Arc::new(arrow::datatypes::Schema::new(vec![
        arrow::datatypes::Field::new("event_id", arrow::datatypes::DataType::Utf8, false),
    ]));
    let batch = arrow::array::RecordBatch::try_new(
        schema.clone(),
        vec![Arc::new(arrow::array::StringArray::from(vec![
            "e-1", "e-7",
        ]))],
    )
    .unwrap();
    let mut w =
        parquet::arrow::ArrowWriter::try_new(std::fs::File::create(&f).unwrap(), schema, None)
            .unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    let cb = Chargebacks::load(&f).unwrap();
    assert_eq!(
        (cb.label("e-7"), cb.label("e-2"), cb.len()),
        (Some(true), Some(false), 2)
    );
    std::fs::write(&f, b"not parquet").unwrap();
    let e = Chargebacks::load(&f).unwrap_err();
    assert!(e.to_string().contains("not a readable Parquet file"), "{e}");
}

/// A random event for the property test: outcomes and hits from a few
/// rules, drawn independently per side.
fn arb_side() -> impl Strategy<Value = (Vec<(usize, Action)>, Vec<usize>)> {
    (
        proptest::collection::vec(
            (
                0usize..4,
                prop_oneof![
                    Just(Action::Approve),
                    Just(Action::Review),
                    Just(Action::Deny)
                ],
            ),
            0..3,
        ),
        proptest::collection::vec(0usize..4, 0..2),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// The matrix, outcome counts and rule hits agree with a plain recount.
    #[test]
    fn counts_agree_with_a_naive_recount(events in proptest::collection::vec((arb_side(), arb_side(), any::<bool>()), 1..60)) {
        let names = ["a", "b", "c", "d"];
        let descs: Vec<RuleDesc> = names.iter().map(|n| RuleDesc { name: (*n).into(), action: Action::Deny, shadow: false, hash: 1 }).collect();
        let mut opts = ReportOptions::default();
        opts.baseline.rules = Some(descs.clone());
        opts.candidate.rules = Some(descs);
        let mut b = ReportBuilder::new(opts).unwrap();
        let ids: Vec<_> = names.iter().map(|n| b.rules().id(n).unwrap()).collect();
        let mut matrix = [0u64; 9];
        let mut hits = [[0u64; 4]; 2];
        let to_side = |(h, s): &(Vec<(usize, Action)>, Vec<usize>)| {
            let hits: Vec<RuleHit> = h.iter().map(|(r, a)| RuleHit { rule: ids[*r], action: *a }).collect();
            let shadow: Vec<RuleHit> = s.iter().map(|r| RuleHit { rule: ids[*r], action: Action::Deny }).collect();
            let outcome = hits.first().map_or(Action::Approve, |h| h.action);
            (outcome, hits, shadow)
        };
        for (i, (bs, cs, fraud)) in events.iter().enumerate() {
            let (bo, bh, bsh) = to_side(bs);
            let (co, ch, csh) = to_side(cs);
            matrix[bo as usize * 3 + co as usize] += 1;
            for h in &bs.0 { hits[0][h.0] += 1; }
            for h in &cs.0 { hits[1][h.0] += 1; }
            b.add(&EventInput {
                event_id: &format!("p{i}"),
                timestamp_ms: i as i64,
                label: Some(*fraud),
                amount: None,
                baseline: verdict_backtest::SideInput { outcome: bo, hits: &bh, shadow_hits: &bsh, scores: &[], degraded: false },
                candidate: verdict_backtest::SideInput { outcome: co, hits: &ch, shadow_hits: &csh, scores: &[], degraded: false },
            });
        }
        let r = b.finish(Completion::Complete).unwrap();
        for (i, c) in r.matrix.iter().enumerate() {
            prop_assert_eq!(c.events, matrix[i]);
        }
        prop_assert_eq!(r.events, events.len() as u64);
        let changed: u64 = (0..9).filter(|i| i / 3 != i % 3).map(|i| matrix[i]).sum();
        prop_assert_eq!(r.changed.events, changed);
        for (k, n) in names.iter().enumerate() {
            let rule = r.rules.iter().find(|x| x.rule == *n).unwrap();
            prop_assert_eq!(rule.baseline.hits, hits[0][k]);
            prop_assert_eq!(rule.candidate.hits, hits[1][k]);
            prop_assert!(rule.moved_in <= changed && rule.moved_out <= changed);
            prop_assert!(rule.candidate.decided_alone <= rule.candidate.decided);
        }
        let sampled: u64 = r.samples.cells.iter().map(|c| c.events.len() as u64).sum();
        prop_assert!(sampled <= changed);
    }
}
