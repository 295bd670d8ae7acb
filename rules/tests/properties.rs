//! Property tests: printing a syntax tree and parsing it back gives the same
//! tree; no input makes the parser, the checker or the evaluator panic; the
//! compiled evaluator agrees with a naive one (`naive/mod.rs`) on random
//! well-typed expressions, random rule sets and the example rules, over
//! random records with missing values, NaN and values of the wrong type.

mod common;
mod naive;

use std::path::PathBuf;

use proptest::prelude::*;
use verdict_core::{Action, Catalogue, CatalogueEntry, Namespace, Record, Value, ValueType};
use verdict_rules::ast::{BinOp, Expr, ExprKind, Item, ListBody, ListRef, Lit};
use verdict_rules::{Diagnostics, Evaluation, Expression, RuleSet, Source, Span};

fn lit() -> impl Strategy<Value = Lit> {
    prop_oneof![
        (-1e6f64..1e6).prop_map(Lit::Number),
        "[a-z0-9 _\"\\\\]{0,8}".prop_map(Lit::Str),
        any::<bool>().prop_map(Lit::Bool),
    ]
}

fn e(kind: ExprKind) -> Expr {
    Expr {
        kind,
        span: Span::default(),
    }
}

fn expr() -> impl Strategy<Value = Expr> {
    let leaf = prop_oneof![
        lit().prop_map(|l| e(ExprKind::Lit(l))),
        prop::sample::select(vec![
            "event.amount",
            "feature.user.txn_count_1h",
            "model.fraud_score",
            "event.attributes.channel"
        ])
        .prop_map(|p| e(ExprKind::Path(p.split('.').map(String::from).collect()))),
    ];
    leaf.prop_recursive(5, 40, 4, |inner| {
        let ops = prop::sample::select(vec![
            BinOp::Or,
            BinOp::And,
            BinOp::Eq,
            BinOp::Ne,
            BinOp::Lt,
            BinOp::Le,
            BinOp::Gt,
            BinOp::Ge,
            BinOp::Add,
            BinOp::Sub,
            BinOp::Mul,
            BinOp::Div,
        ]);
        prop_oneof![
            (ops, inner.clone(), inner.clone()).prop_map(|(op, l, r)| e(ExprKind::Binary {
                op,
                lhs: Box::new(l),
                rhs: Box::new(r)
            })),
            inner.clone().prop_map(|x| e(ExprKind::Not(Box::new(x)))),
            inner.clone().prop_map(|x| e(ExprKind::Neg(Box::new(x)))),
            (
                prop::sample::select(vec!["abs", "coalesce", "lower", "min"]),
                prop::collection::vec(inner.clone(), 0..3)
            )
                .prop_map(|(n, args)| e(ExprKind::Call {
                    name: n.into(),
                    args
                })),
            (
                inner.clone(),
                prop::collection::vec(lit(), 1..4),
                any::<bool>()
            )
                .prop_map(|(v, items, negated)| e(ExprKind::In {
                    value: Box::new(v),
                    list: ListRef::Inline(
                        items.into_iter().map(|l| (l, Span::default())).collect()
                    ),
                    negated,
                })),
            (inner, any::<bool>()).prop_map(|(v, negated)| e(ExprKind::In {
                value: Box::new(v),
                list: ListRef::Named("vips".into(), Span::default()),
                negated,
            })),
        ]
    })
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Missing),
        any::<f64>().prop_map(Value::Number),
        ".{0,6}".prop_map(|s: String| Value::String(s.into())),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::Timestamp),
    ]
}

proptest! {
    #[test]
    fn printing_and_parsing_gives_the_same_tree(tree in expr()) {
        let text = tree.to_string();
        let src = Source { path: PathBuf::from("p"), text: text.as_str().into() };
        let mut diags = Diagnostics::default();
        let parsed = verdict_rules::parse::parse_expr(&src, &mut diags);
        prop_assert!(diags.is_empty(), "{text}: {diags}");
        prop_assert_eq!(parsed.map(|p| p.unspanned()), Some(tree.unspanned()), "{}", text);
    }

    #[test]
    fn any_text_is_refused_or_accepted_without_panic(text in "\\PC{0,200}") {
        let c = common::catalogue();
        let _ = Expression::compile(&text, &c);
        let src = Source { path: PathBuf::from("x.rules"), text: text.as_str().into() };
        let _ = RuleSet::compile(&[src], None, &c);
    }

}

// ---------------------------------------------------------------------
// Well-typed expressions, and the naive evaluator as the reference.

fn path(p: &str) -> Expr {
    e(ExprKind::Path(p.split('.').map(String::from).collect()))
}

fn call(name: &str, args: Vec<Expr>) -> Expr {
    e(ExprKind::Call {
        name: name.into(),
        args,
    })
}

fn bin(op: BinOp, l: Expr, r: Expr) -> Expr {
    e(ExprKind::Binary {
        op,
        lhs: Box::new(l),
        rhs: Box::new(r),
    })
}

fn num_lit() -> impl Strategy<Value = f64> {
    prop_oneof![
        prop::sample::select(vec![0.0, -0.0, 1.0, 2.0, -1.5, 100.0, 1e300, 0.5]),
        -1e3f64..1e3,
    ]
}

fn str_lit() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["", "a", "A", "ab", "Ab", "payment", "45.", "CNY"])
        .prop_map(String::from)
}

fn num_expr(depth: u32) -> BoxedStrategy<Expr> {
    let leaf = prop_oneof![
        num_lit().prop_map(|n| e(ExprKind::Lit(Lit::Number(n)))),
        prop::sample::select(vec![
            "event.amount",
            "event.attributes.term_months",
            "feature.user.txn_count_1h",
            "feature.device.account_count_7d",
            "model.fraud_score",
        ])
        .prop_map(path),
    ];
    if depth == 0 {
        return leaf.boxed();
    }
    let n = || num_expr(depth - 1);
    let ops = prop::sample::select(vec![BinOp::Add, BinOp::Sub, BinOp::Mul, BinOp::Div]);
    prop_oneof![
        3 => leaf,
        2 => (ops, n(), n()).prop_map(|(op, l, r)| bin(op, l, r)),
        1 => n().prop_map(|x| e(ExprKind::Neg(Box::new(x)))),
        1 => (prop::sample::select(vec!["abs"]), n()).prop_map(|(f, x)| call(f, vec![x])),
        1 => (prop::sample::select(vec!["min", "max", "coalesce"]), n(), n())
            .prop_map(|(f, x, y)| call(f, vec![x, y])),
        1 => ts_expr(depth - 1).prop_map(|t| call("hour_of_day", vec![t])),
        1 => (ts_expr(depth - 1), ts_expr(depth - 1))
            .prop_map(|(a, b)| call("days_between", vec![a, b])),
    ]
    .boxed()
}

fn str_expr(depth: u32) -> BoxedStrategy<Expr> {
    let leaf = prop_oneof![
        str_lit().prop_map(|s| e(ExprKind::Lit(Lit::Str(s)))),
        prop::sample::select(vec![
            "event.currency",
            "event.ip",
            "event.event_type",
            "feature.user.last_ip",
        ])
        .prop_map(path),
    ];
    if depth == 0 {
        return leaf.boxed();
    }
    prop_oneof![
        3 => leaf,
        1 => str_expr(depth - 1).prop_map(|x| call("lower", vec![x])),
        1 => (str_expr(depth - 1), str_expr(depth - 1))
            .prop_map(|(x, y)| call("coalesce", vec![x, y])),
    ]
    .boxed()
}

fn ts_expr(depth: u32) -> BoxedStrategy<Expr> {
    let leaf =
        prop::sample::select(vec!["event.timestamp", "feature.user.last_seen"]).prop_map(path);
    if depth == 0 {
        return leaf.boxed();
    }
    prop_oneof![
        2 => leaf,
        1 => (ts_expr(depth - 1), ts_expr(depth - 1))
            .prop_map(|(x, y)| call("coalesce", vec![x, y])),
    ]
    .boxed()
}

fn inline(items: Vec<Lit>) -> ListRef {
    ListRef::Inline(items.into_iter().map(|l| (l, Span::default())).collect())
}

fn bool_expr(depth: u32, named_lists: bool) -> BoxedStrategy<Expr> {
    let leaf = prop_oneof![
        any::<bool>().prop_map(|b| e(ExprKind::Lit(Lit::Bool(b)))),
        Just(path("event.attributes.new_device")),
    ];
    if depth == 0 {
        return leaf.boxed();
    }
    let d = depth - 1;
    let b = move || bool_expr(d, named_lists);
    let cmp = prop::sample::select(vec![
        BinOp::Eq,
        BinOp::Ne,
        BinOp::Lt,
        BinOp::Le,
        BinOp::Gt,
        BinOp::Ge,
    ]);
    let eq = prop::sample::select(vec![BinOp::Eq, BinOp::Ne]);
    let junction = prop::sample::select(vec![BinOp::And, BinOp::Or]);
    let mut options: Vec<(u32, BoxedStrategy<Expr>)> = vec![
        (2, leaf.boxed()),
        (
            4,
            (junction, b(), b())
                .prop_map(|(op, l, r)| bin(op, l, r))
                .boxed(),
        ),
        (1, b().prop_map(|x| e(ExprKind::Not(Box::new(x)))).boxed()),
        (
            4,
            (cmp.clone(), num_expr(d), num_expr(d))
                .prop_map(|(op, l, r)| bin(op, l, r))
                .boxed(),
        ),
        (
            1,
            (cmp, ts_expr(d), ts_expr(d))
                .prop_map(|(op, l, r)| bin(op, l, r))
                .boxed(),
        ),
        (
            2,
            (eq.clone(), str_expr(d), str_expr(d))
                .prop_map(|(op, l, r)| bin(op, l, r))
                .boxed(),
        ),
        (
            1,
            (eq, b(), b()).prop_map(|(op, l, r)| bin(op, l, r)).boxed(),
        ),
        (
            1,
            (
                num_expr(d),
                prop::collection::vec(num_lit(), 1..4),
                any::<bool>(),
            )
                .prop_map(|(v, items, negated)| {
                    e(ExprKind::In {
                        value: Box::new(v),
                        list: inline(items.into_iter().map(Lit::Number).collect()),
                        negated,
                    })
                })
                .boxed(),
        ),
        (
            1,
            (
                str_expr(d),
                prop::collection::vec(str_lit(), 1..4),
                any::<bool>(),
            )
                .prop_map(|(v, items, negated)| {
                    e(ExprKind::In {
                        value: Box::new(v),
                        list: inline(items.into_iter().map(Lit::Str).collect()),
                        negated,
                    })
                })
                .boxed(),
        ),
        (
            1,
            (
                b(),
                prop::collection::vec(any::<bool>(), 1..3),
                any::<bool>(),
            )
                .prop_map(|(v, items, negated)| {
                    e(ExprKind::In {
                        value: Box::new(v),
                        list: inline(items.into_iter().map(Lit::Bool).collect()),
                        negated,
                    })
                })
                .boxed(),
        ),
        (
            1,
            prop_oneof![num_expr(d), str_expr(d), ts_expr(d), b()]
                .prop_map(|x| call("is_missing", vec![x]))
                .boxed(),
        ),
        (
            1,
            (
                prop::sample::select(vec!["starts_with", "contains"]),
                str_expr(d),
                str_expr(d),
            )
                .prop_map(|(f, x, y)| call(f, vec![x, y]))
                .boxed(),
        ),
        (
            1,
            (
                str_expr(d),
                prop::sample::select(vec!["^a", "[A-Z]", "^45\\.", "b$"]),
            )
                .prop_map(|(x, p)| call("matches", vec![x, e(ExprKind::Lit(Lit::Str(p.into())))]))
                .boxed(),
        ),
        (
            1,
            (b(), b())
                .prop_map(|(x, y)| call("coalesce", vec![x, y]))
                .boxed(),
        ),
    ];
    if named_lists {
        options.push((
            1,
            (str_expr(d), any::<bool>())
                .prop_map(|(v, negated)| {
                    e(ExprKind::In {
                        value: Box::new(v),
                        list: ListRef::Named("vips".into(), Span::default()),
                        negated,
                    })
                })
                .boxed(),
        ));
    }
    prop::strategy::Union::new_weighted(options).boxed()
}

fn any_expr() -> BoxedStrategy<Expr> {
    prop_oneof![
        3 => bool_expr(3, false),
        1 => num_expr(3),
        1 => str_expr(2),
        1 => ts_expr(2),
    ]
    .boxed()
}

/// A value for a slot of type `ty`: missing, NaN and infinities included,
/// and now and then a value of another type (a malformed record).
fn value_of(ty: ValueType) -> BoxedStrategy<Value> {
    let right = match ty {
        ValueType::Number => prop_oneof![
            prop::sample::select(vec![
                0.0,
                -0.0,
                1.0,
                2.0,
                100.0,
                f64::NAN,
                f64::INFINITY,
                f64::NEG_INFINITY
            ]),
            -1e3f64..1e3,
        ]
        .prop_map(Value::Number)
        .boxed(),
        ValueType::String => prop_oneof![
            str_lit().prop_map(|s| Value::String(s.as_str().into())),
            "[aAbB5. ]{0,4}".prop_map(|s| Value::String(s.as_str().into())),
        ]
        .boxed(),
        ValueType::Bool => any::<bool>().prop_map(Value::Bool).boxed(),
        ValueType::Timestamp => prop_oneof![
            prop::sample::select(vec![0i64, -1, 1_795_508_130_250, i64::MIN, i64::MAX]),
            0i64..4_000_000_000_000,
        ]
        .prop_map(Value::Timestamp)
        .boxed(),
    };
    prop_oneof![
        6 => right,
        2 => Just(Value::Missing),
        1 => prop_oneof![Just(Value::Bool(true)), Just(Value::Number(1.0)), Just(Value::from("x"))],
    ]
    .boxed()
}

/// A record of every slot of `c`, each of its declared type.
fn record_of(c: &Catalogue) -> impl Strategy<Value = [Vec<Value>; 3]> + use<> {
    let slots = |ns: Namespace| {
        let mut entries: Vec<&CatalogueEntry> =
            c.entries().iter().filter(|e| e.slot.ns == ns).collect();
        entries.sort_by_key(|e| e.slot.index);
        entries
            .into_iter()
            .map(|e| value_of(e.ty))
            .collect::<Vec<_>>()
    };
    (
        slots(Namespace::Event),
        slots(Namespace::Feature),
        slots(Namespace::Model),
    )
        .prop_map(|(a, b, c)| [a, b, c])
}

/// The same value, NaN equal to NaN and -0.0 apart from 0.0.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan())
        }
        _ => a == b,
    }
}

fn record(r: &[Vec<Value>; 3]) -> Record<'_> {
    Record {
        event: &r[0],
        features: &r[1],
        model: &r[2],
    }
}

fn action() -> impl Strategy<Value = Action> {
    prop::sample::select(Action::ALL.to_vec())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Any well-typed expression has the value the naive evaluator gives.
    #[test]
    fn compiled_expressions_agree_with_the_naive_evaluator(
        tree in any_expr(),
        rec in record_of(&common::catalogue()),
    ) {
        let c = common::catalogue();
        let text = tree.to_string();
        let compiled = Expression::compile(&text, &c)
            .unwrap_or_else(|d| panic!("{text} does not check:\n{d}"));
        let got = compiled.eval(&record(&rec));
        let want = naive::eval(&tree, &c, &naive::Lists::new(), &record(&rec));
        prop_assert!(same(&got, &want), "{text}\nrecord {rec:?}\ncompiled {got:?}, naive {want:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// A rule set of random rules (sharing much, as generated rules do)
    /// decides two records in a row as the naive decider does: the same
    /// decision, hits in the same order, the same shadow hits.
    #[test]
    fn rule_sets_decide_as_the_naive_decider(
        rules in prop::collection::vec((bool_expr(3, true), action(), -1i64..2, prop::bool::weighted(0.2)), 1..12),
        first in record_of(&common::catalogue()),
        second in record_of(&common::catalogue()),
    ) {
        let c = common::catalogue();
        let mut text = String::from("list vips = [\"a\", \"A\", \"payment\"]\n");
        for (i, (cond, act, priority, shadow)) in rules.iter().enumerate() {
            text += &format!(
                "rule r{i} priority {priority}{}:\n  {} if {cond}\n",
                if *shadow { " shadow" } else { "" },
                act.as_str()
            );
        }
        let src = Source { path: PathBuf::from("random.rules"), text: text.as_str().into() };
        let set = RuleSet::compile(&[src], None, &c).unwrap_or_else(|d| panic!("{text}\n{d}"));
        let mut lists = naive::Lists::new();
        lists.insert("vips".into(), ["a", "A", "payment"].map(Value::from).to_vec());
        let names: Vec<String> = (0..rules.len()).map(|i| format!("r{i}")).collect();
        let naive_rules: Vec<naive::NaiveRule<'_>> = rules
            .iter()
            .zip(&names)
            .map(|((cond, act, priority, shadow), name)| naive::NaiveRule {
                name, action: *act, priority: *priority, shadow: *shadow, cond,
            })
            .collect();
        let mut out = Evaluation::default();
        for rec in [&first, &second] {
            set.evaluate(&record(rec), &mut out);
            let want = naive::decide(&naive_rules, &c, &lists, &record(rec));
            let got = (
                out.decision,
                out.hits.iter().map(|h| h.rule.to_string()).collect::<Vec<_>>(),
                out.shadow_hits.iter().map(|h| h.rule.to_string()).collect::<Vec<_>>(),
            );
            prop_assert_eq!(got, want, "{}\nrecord {:?}", text, rec);
        }
    }
}

/// The example rule set and its catalogue (the features its rules use).
fn example_catalogue() -> Catalogue {
    let mut catalogue = common::catalogue();
    for (entity, name) in [
        ("user", "txn_count_24h"),
        ("user", "app_count_24h"),
        ("user", "amount_sum_24h"),
        ("user", "amount_avg_30d"),
        ("user", "amount_max_7d"),
        ("user", "distinct_devices_7d"),
        ("user", "distinct_ips_24h"),
        ("user", "secs_since_last"),
        ("user", "account_age_days"),
        ("user", "credit_limit"),
        ("user", "prior_defaults"),
        ("device", "app_count_1h"),
        ("ip", "account_count_24h"),
        ("ip", "txn_count_1h"),
    ] {
        catalogue.add_feature(entity, name, ValueType::Number);
    }
    catalogue
}

fn example_dir() -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/rules")
}

proptest! {
    /// The example rules decide any record (values of any type, missing,
    /// NaN) exactly as the naive decider reads the same files.
    #[test]
    fn the_example_rules_decide_as_the_naive_decider(rec in record_of(&example_catalogue())) {
        let catalogue = example_catalogue();
        let dir = example_dir();
        let set = RuleSet::load_dir(&dir, &catalogue).unwrap();
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "rules"))
            .collect();
        files.sort();
        let mut lists = naive::Lists::new();
        let mut parsed = Vec::new();
        for f in files {
            let src = Source { path: f.clone(), text: std::fs::read_to_string(&f).unwrap().into() };
            let mut diags = Diagnostics::default();
            parsed.push(verdict_rules::parse::parse_file(&src, &mut diags));
            prop_assert!(diags.is_empty());
        }
        let mut rules = Vec::new();
        for item in parsed.iter().flat_map(|f| &f.items) {
            match item {
                Item::List(l) => {
                    let members = match &l.body {
                        ListBody::Inline(items) => items.iter().map(|(l, _)| match l {
                            Lit::Number(n) => Value::Number(*n),
                            Lit::Str(s) => Value::from(s.as_str()),
                            Lit::Bool(b) => Value::Bool(*b),
                        }).collect(),
                        ListBody::File(rel, _) => std::fs::read_to_string(dir.join(rel)).unwrap()
                            .lines().map(str::trim).filter(|l| !l.is_empty()).map(Value::from).collect(),
                    };
                    lists.insert(l.name.clone(), members);
                }
                Item::Rule(r) => rules.push(naive::NaiveRule {
                    name: &r.name, action: r.action, priority: r.priority, shadow: r.shadow, cond: &r.cond,
                }),
            }
        }
        prop_assert!(rules.len() >= 10, "the example rules are read");
        let mut out = Evaluation::default();
        set.evaluate(&record(&rec), &mut out);
        let want = naive::decide(&rules, &catalogue, &lists, &record(&rec));
        let got = (
            out.decision,
            out.hits.iter().map(|h| h.rule.to_string()).collect::<Vec<_>>(),
            out.shadow_hits.iter().map(|h| h.rule.to_string()).collect::<Vec<_>>(),
        );
        prop_assert_eq!(got, want);
    }

    /// Records of any shape (too short, too long, any types) never make
    /// the example rules panic.
    #[test]
    fn evaluation_never_panics_on_any_record(
        event in prop::collection::vec(value(), 0..16),
        features in prop::collection::vec(value(), 0..6),
        model in prop::collection::vec(value(), 0..2),
    ) {
        let set = RuleSet::load_dir(&example_dir(), &example_catalogue()).unwrap();
        let mut out = Evaluation::default();
        set.evaluate(&Record { event: &event, features: &features, model: &model }, &mut out);
        prop_assert_eq!(out.decision, out.hits.first().map_or(Action::Approve, |h| h.action));
    }
}
