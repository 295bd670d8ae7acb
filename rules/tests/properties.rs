//! Property tests: printing a syntax tree and parsing it back gives the same
//! tree; no input makes the parser, the checker or the evaluator panic.

mod common;

use std::path::PathBuf;
use std::sync::Arc;

use proptest::prelude::*;
use verdict_core::{Namespace, Record, Value};
use verdict_rules::ast::{BinOp, Expr, ExprKind, ListRef, Lit};
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

    #[test]
    fn evaluation_never_panics_on_any_record(
        event in prop::collection::vec(value(), 0..16),
        features in prop::collection::vec(value(), 0..6),
        model in prop::collection::vec(value(), 0..2),
    ) {
        let c = Arc::new(common::catalogue());
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/rules");
        let mut catalogue = (*c).clone();
        // The example rules use the declared names of the example config.
        for (entity, name) in [("user","txn_count_24h"),("user","app_count_24h"),("user","amount_sum_24h"),("user","amount_avg_30d"),("user","amount_max_7d"),("user","distinct_devices_7d"),("user","distinct_ips_24h"),("user","secs_since_last"),("user","account_age_days"),("user","credit_limit"),("user","prior_defaults"),("device","app_count_1h"),("ip","account_count_24h"),("ip","txn_count_1h")] {
            catalogue.add_feature(entity, name, verdict_core::ValueType::Number);
        }
        prop_assume!(catalogue.len(Namespace::Feature) > 0);
        let set = RuleSet::load_dir(&dir, &catalogue).unwrap();
        let mut out = Evaluation::default();
        set.evaluate(&Record { event: &event, features: &features, model: &model }, &mut out);
    }
}
