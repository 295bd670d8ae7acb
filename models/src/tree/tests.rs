//! The native evaluator on variants of the fixture models that exercise
//! what the exports in `tests/data` do not: every post-transform, every
//! aggregate, every node mode, base values of every length, several
//! targets; each compared with ONNX Runtime on the same rows. And graphs the
//! native evaluator must refuse or leave to ONNX Runtime.

use std::path::{Path, PathBuf};

use prost::Message;

use crate::onnx::{AttributeProto, ModelProto, NodeProto};
use crate::{Backend, Evaluator, Manifest, Model, ModelError, Runtime};

fn fixture(name: &str) -> ModelProto {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name);
    crate::onnx::decode(&std::fs::read(path).unwrap()).unwrap()
}

fn ensemble(m: &mut ModelProto) -> &mut NodeProto {
    m.graph
        .as_mut()
        .unwrap()
        .node
        .iter_mut()
        .find(|n| n.op_type.starts_with("TreeEnsemble"))
        .unwrap()
}

fn attr<'a>(node: &'a mut NodeProto, name: &str) -> &'a mut AttributeProto {
    if let Some(i) = node.attribute.iter().position(|a| a.name == name) {
        return &mut node.attribute[i];
    }
    node.attribute.push(AttributeProto {
        name: name.into(),
        ..Default::default()
    });
    node.attribute.last_mut().unwrap()
}

/// Sets a string attribute.
fn set_s(node: &mut NodeProto, name: &str, value: &str) {
    let a = attr(node, name);
    a.r#type = 3;
    a.s = value.as_bytes().to_vec();
}

fn set_floats(node: &mut NodeProto, name: &str, values: &[f32]) {
    let a = attr(node, name);
    a.r#type = 6;
    a.floats = values.to_vec();
}

fn set_ints(node: &mut NodeProto, name: &str, values: &[i64]) {
    let a = attr(node, name);
    a.r#type = 7;
    a.ints = values.to_vec();
}

fn ints(node: &mut NodeProto, name: &str) -> Vec<i64> {
    attr(node, name).ints.clone()
}

const INPUTS: &str = r#"inputs = ["event.amount", "event.attributes.term_months", "feature.user.txn_count_1h", "feature.user.amount_avg_30d", "feature.device.account_count_7d", "feature.ip.txn_count_1h"]"#;

struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("verdict-tree-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }

    /// Writes the model and a manifest reading `columns` columns of
    /// `output`; returns the manifest.
    fn write(&self, name: &str, m: &ModelProto, output: &str, columns: usize) -> Manifest {
        std::fs::write(self.0.join(format!("{name}.onnx")), m.encode_to_vec()).unwrap();
        let mut text = format!(
            "name = \"{name}\"\nversion = \"{name}-1\"\nfile = \"{name}.onnx\"\n{INPUTS}\nmissing = nan\n"
        );
        for c in 0..columns {
            text.push_str(&format!(
                "[[outputs]]\nname = \"out_{c}\"\nfrom = \"{output}\"\nindex = {c}\n"
            ));
        }
        let path = self.0.join(format!("{name}.manifest.toml"));
        std::fs::write(&path, &text).unwrap();
        Manifest::load(&path).unwrap()
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn runtime() -> Runtime {
    Runtime::discover(None).unwrap_or_else(|e| panic!("{e}"))
}

/// Both evaluators on 10,000 probe rows of the variant: equal to 1e-6.
fn agree(dir: &Dir, name: &str, m: &ModelProto, output: &str, columns: usize) {
    let manifest = dir.write(name, m, output, columns);
    let rt = runtime();
    let native = Model::load_as(manifest.clone(), &rt, 1, Evaluator::Native)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let rows = native.probe_rows(10_000, 5);
    let report = Model::compare_evaluators(&manifest, &rt, &rows).unwrap();
    eprintln!("{name}: {report}");
    assert!(report.within(1e-6), "{name}: {report}");
}

#[test]
fn classifier_post_transforms_and_base_values() {
    let dir = Dir::new("classifier");
    for post in ["NONE", "LOGISTIC", "SOFTMAX", "SOFTMAX_ZERO", "PROBIT"] {
        let mut m = fixture("lgbm-multi.onnx");
        let node = ensemble(&mut m);
        set_s(node, "post_transform", post);
        agree(&dir, &format!("multi-{post}"), &m, "probabilities", 3);
        let node = ensemble(&mut m);
        set_floats(node, "base_values", &[0.25, -0.5, 0.125]);
        agree(&dir, &format!("multi-base-{post}"), &m, "probabilities", 3);
    }
    // Two classes: every base-value length, weights for class 0 or 1,
    // all-positive weights (ONNX Runtime derives the other column three
    // different ways).
    for post in ["NONE", "LOGISTIC", "SOFTMAX"] {
        for base in [&[][..], &[-0.3][..], &[0.2, 0.4][..]] {
            for class in [0, 1] {
                for positive in [false, true] {
                    let mut m = fixture("xgb.onnx");
                    let node = ensemble(&mut m);
                    set_s(node, "post_transform", post);
                    set_floats(node, "base_values", base);
                    let n = ints(node, "class_ids").len();
                    set_ints(node, "class_ids", &vec![class; n]);
                    if positive {
                        let w: Vec<f32> = attr(node, "class_weights")
                            .floats
                            .iter()
                            .map(|w| w.abs() / 8.0)
                            .collect();
                        set_floats(node, "class_weights", &w);
                    }
                    let name = format!("binary-{post}-{}-{class}-{positive}", base.len());
                    agree(&dir, &name, &m, "probabilities", 2);
                }
            }
        }
    }
}

/// Declares the first graph output `[N, columns]`.
fn widen_output(m: &mut ModelProto, columns: i64) {
    use crate::onnx::tensor_shape_proto::dimension::Value as Dim;
    use crate::onnx::type_proto::Value;
    let out = &mut m.graph.as_mut().unwrap().output[0];
    if let Some(Value::TensorType(t)) = out.r#type.as_mut().and_then(|t| t.value.as_mut())
        && let Some(shape) = t.shape.as_mut()
    {
        shape.dim[1].value = Some(Dim::DimValue(columns));
    }
}

/// A two-class classifier with one base value and weights for both classes
/// leaves a column unwritten in ONNX Runtime: the native evaluator declines
/// it (auto serves it by ONNX Runtime).
#[test]
fn a_model_onnx_runtime_leaves_undefined_is_declined() {
    let dir = Dir::new("undefined");
    let mut m = fixture("xgb.onnx");
    let node = ensemble(&mut m);
    let n = ints(node, "class_ids").len();
    let ids: Vec<i64> = (0..n as i64).map(|i| i % 2).collect();
    set_ints(node, "class_ids", &ids);
    let manifest = dir.write("undefined", &m, "probabilities", 2);
    let e = Model::load_as(manifest.clone(), &runtime(), 1, Evaluator::Native).unwrap_err();
    assert!(matches!(e, ModelError::NotNative { .. }), "{e}");
    let auto = Model::load_as(manifest, &runtime(), 1, Evaluator::Auto).unwrap();
    assert_eq!(auto.backend(), Backend::OnnxRuntime);
}

#[test]
fn regressor_aggregates_targets_and_transforms() {
    let dir = Dir::new("regressor");
    for aggregate in ["SUM", "AVERAGE", "MIN", "MAX"] {
        let mut m = fixture("xgb-reg.onnx");
        let node = ensemble(&mut m);
        set_s(node, "aggregate_function", aggregate);
        agree(&dir, &format!("reg-{aggregate}"), &m, "variable", 1);
        // Two targets: odd trees write the second, some leaves both.
        for post in ["NONE", "LOGISTIC", "SOFTMAX"] {
            let mut m = fixture("xgb-reg.onnx");
            let node = ensemble(&mut m);
            set_s(node, "aggregate_function", aggregate);
            set_s(node, "post_transform", post);
            let a = attr(node, "n_targets");
            a.r#type = 2;
            a.i = 2;
            let trees = ints(node, "target_treeids");
            let targets: Vec<i64> = trees.iter().map(|t| t % 2).collect();
            set_ints(node, "target_ids", &targets);
            set_floats(node, "base_values", &[0.5, -1.5]);
            widen_output(&mut m, 2);
            agree(&dir, &format!("reg2-{aggregate}-{post}"), &m, "variable", 2);
            // Base values of the wrong length are not used.
            let node = ensemble(&mut m);
            set_floats(node, "base_values", &[0.5]);
            agree(
                &dir,
                &format!("reg2-{aggregate}-{post}-b1"),
                &m,
                "variable",
                2,
            );
        }
    }
}

#[test]
fn every_node_mode_and_missing_track() {
    let dir = Dir::new("modes");
    let mut m = fixture("xgb.onnx");
    let node = ensemble(&mut m);
    let modes = [
        "BRANCH_LT",
        "BRANCH_LEQ",
        "BRANCH_GT",
        "BRANCH_GTE",
        "BRANCH_EQ",
        "BRANCH_NEQ",
    ];
    let a = attr(node, "nodes_modes");
    let mut k = 0;
    for mode in a.strings.iter_mut() {
        if mode.as_slice() != b"LEAF" {
            *mode = modes[k % modes.len()].as_bytes().to_vec();
            k += 1;
        }
    }
    // Missing values go to the "true" branch at every third split.
    let n = a.strings.len();
    let tracks: Vec<i64> = (0..n as i64).map(|i| i64::from(i % 3 == 0)).collect();
    set_ints(node, "nodes_missing_value_tracks_true", &tracks);
    agree(&dir, "modes", &m, "probabilities", 2);
    // EQ and NEQ against thresholds the rows hit exactly (integers).
    let node = ensemble(&mut m);
    let t: Vec<f32> = attr(node, "nodes_values")
        .floats
        .iter()
        .map(|v| v.round())
        .collect();
    set_floats(node, "nodes_values", &t);
    agree(&dir, "modes-integer", &m, "probabilities", 2);
}

/// A change to a tree-ensemble node.
type Edit = Box<dyn Fn(&mut NodeProto)>;

#[test]
fn broken_ensembles_are_refused_by_every_evaluator() {
    let dir = Dir::new("broken");
    let rt = runtime();
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "cycle",
            Box::new(|n: &mut NodeProto| {
                // The first split's true child points back at the root.
                let mut t = ints(n, "nodes_truenodeids");
                let ids = ints(n, "nodes_nodeids");
                let modes = attr(n, "nodes_modes").strings.clone();
                let child = (1..modes.len()).find(|&i| modes[i] != b"LEAF").unwrap();
                t[child] = ids[0];
                set_ints(n, "nodes_truenodeids", &t);
            }),
            "cycle",
        ),
        (
            "dangling",
            Box::new(|n: &mut NodeProto| {
                let mut f = ints(n, "nodes_falsenodeids");
                f[0] = 100_000;
                set_ints(n, "nodes_falsenodeids", &f);
            }),
            "out of range",
        ),
        (
            "short",
            Box::new(|n: &mut NodeProto| {
                let mut v = attr(n, "nodes_values").floats.clone();
                v.pop();
                set_floats(n, "nodes_values", &v);
            }),
            "nodes_values has",
        ),
        (
            "no-weight",
            Box::new(|n: &mut NodeProto| {
                let mut ids = ints(n, "class_nodeids");
                ids[0] = ids[1];
                set_ints(n, "class_nodeids", &ids);
            }),
            "has no weight",
        ),
        (
            "feature",
            Box::new(|n: &mut NodeProto| {
                let mut f = ints(n, "nodes_featureids");
                f[0] = 6;
                set_ints(n, "nodes_featureids", &f);
            }),
            "feature 6",
        ),
    ];
    for (name, edit, says) in cases {
        let mut m = fixture("xgb.onnx");
        edit(ensemble(&mut m));
        let manifest = dir.write(name, &m, "probabilities", 2);
        for evaluator in [Evaluator::Auto, Evaluator::Native] {
            let e = Model::load_as(manifest.clone(), &rt, 1, evaluator).unwrap_err();
            assert!(e.to_string().contains(says), "{name} ({evaluator:?}): {e}");
        }
    }
}

#[test]
fn other_graphs_go_to_onnx_runtime_unless_native_is_forced() {
    let dir = Dir::new("other");
    let rt = runtime();
    // An operator no tree export writes, after the ensemble.
    let mut m = fixture("xgb.onnx");
    let graph = m.graph.as_mut().unwrap();
    graph.node.push(NodeProto {
        op_type: "Abs".into(),
        input: vec!["probabilities".into()],
        output: vec!["absolute".into()],
        ..Default::default()
    });
    let mut out = graph.output[1].clone();
    out.name = "absolute".into();
    graph.output.push(out);
    let manifest = dir.write("abs", &m, "absolute", 2);
    let auto = Model::load_as(manifest.clone(), &rt, 1, Evaluator::Auto).unwrap();
    assert_eq!(auto.backend(), Backend::OnnxRuntime);
    assert!(
        auto.backend_reason().contains("ai.onnx.Abs"),
        "{}",
        auto.backend_reason()
    );
    let e = Model::load_as(manifest, &rt, 1, Evaluator::Native).unwrap_err();
    assert!(matches!(e, ModelError::NotNative { .. }), "{e}");
    assert!(e.to_string().contains("set evaluator = \"auto\""), "{e}");

    // Bytes that are not ONNX: ONNX Runtime says so in its own words.
    std::fs::write(dir.0.join("garbage.onnx"), b"not a model").unwrap();
    let text = std::fs::read_to_string(dir.0.join("abs.manifest.toml"))
        .unwrap()
        .replace("abs.onnx", "garbage.onnx");
    std::fs::write(dir.0.join("garbage.toml"), text).unwrap();
    let manifest = Manifest::load(&dir.0.join("garbage.toml")).unwrap();
    let e = Model::load_as(manifest.clone(), &rt, 1, Evaluator::Auto).unwrap_err();
    assert!(matches!(e, ModelError::Load { .. }), "{e}");
    let e = Model::load_native(manifest).unwrap_err();
    assert!(e.to_string().contains("not a valid ONNX protobuf"), "{e}");
}

#[test]
fn any_bytes_import_or_decline_without_panicking() {
    // Cuts and bit flips of a real model: every one decodes to a model, a
    // refusal or an unsupported graph; none panics.
    let bytes =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/xgb.onnx")).unwrap();
    let outputs = vec![crate::OutputSpec {
        name: "s".into(),
        from: "probabilities".into(),
        index: Some(1),
    }];
    let mut seen = [0usize; 3];
    for i in (0..bytes.len()).step_by(7) {
        let mut flipped = bytes.clone();
        flipped[i] ^= 0x5a;
        for b in [&bytes[..i], &flipped[..]] {
            match super::NativeModel::import(b, 6, &outputs) {
                Ok(Ok(m)) => {
                    let mut out = [0f32];
                    m.score(&[1.0, f32::NAN, 3.0, -1.0, 0.5, 2.0], &mut out);
                    seen[0] += 1;
                }
                Ok(Err(_)) => seen[1] += 1,
                Err(_) => seen[2] += 1,
            }
        }
    }
    assert!(seen[0] > 0 && seen[2] > 0, "{seen:?}");
}

/// Rows for the walks: every split's threshold exactly, just below and just
/// above, wide random values, missing values and (in a few rows)
/// infinities, from a fixed seed.
fn walk_rows(e: &super::ensemble::Ensemble, count: usize) -> Vec<Vec<f32>> {
    let w = e.min_width;
    let mut per: Vec<Vec<f32>> = vec![Vec::new(); w];
    for n in e.nodes.iter().filter(|n| !n.is_leaf()) {
        per[n.feature()].push(n.threshold);
    }
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    (0..count)
        .map(|_| {
            (0..w)
                .map(|f| {
                    let r = next();
                    match (r % 16, per[f].is_empty()) {
                        (0..=2, _) => f32::NAN,
                        (3, _) if r % 1024 == 3 => f32::INFINITY,
                        (4, _) if r % 1024 == 4 => f32::NEG_INFINITY,
                        (5..=12, false) => {
                            let t = per[f][(r >> 8) as usize % per[f].len()];
                            match r % 3 {
                                0 => t,
                                1 => t.next_down(),
                                _ => t.next_up(),
                            }
                        }
                        _ => ((r >> 16) as u32 as f32 / u32::MAX as f32 - 0.5) * 2e3,
                    }
                })
                .collect()
        })
        .collect()
}

#[test]
fn compact_walks_reach_the_leaves_of_the_general_walk() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let files = [
        root.join("fraud-gbt.onnx"),
        root.join("tests/data/lgbm.onnx"),
        root.join("tests/data/lgbm-multi.onnx"),
        root.join("tests/data/xgb.onnx"),
        root.join("tests/data/xgb-reg.onnx"),
    ];
    for file in &files {
        let bytes = std::fs::read(file).unwrap();
        let model = crate::onnx::decode(&bytes).unwrap();
        let fast = super::import::import(&model).unwrap().ensemble;
        // Deep leaf-wise trees (LightGBM's fixtures) are not padded.
        if file.ends_with("fraud-gbt.onnx") {
            assert!(fast.compact.is_some(), "{}", file.display());
        }
        let mut scalar = fast.clone();
        if let Some(c) = &mut scalar.compact {
            c.avx512 = false;
        }
        // The general walk: every split tested as the model states it.
        let mut general = fast.clone();
        general.compact = None;
        general.fast = None;
        let rows = walk_rows(&fast, 20_000);
        let mut z = [vec![0f32; fast.outputs], vec![0f32; fast.outputs]];
        let mut g = vec![0f32; fast.outputs];
        for row in &rows {
            let mut want = Vec::new();
            general.for_each_leaf(row, |l| want.push(l));
            for (e, z) in [&fast, &scalar].into_iter().zip(&mut z) {
                let mut got = Vec::new();
                e.for_each_leaf(row, |l| got.push(l));
                assert_eq!(got, want, "{}: {row:?}", file.display());
                e.eval(row, z);
            }
            // The AVX-512 walk reading a doubled row shorter than its
            // registers take gathers it from memory instead.
            if let Some(c) = &fast.compact
                && !row.iter().any(|v| v.is_infinite())
            {
                let xx: Vec<f32> = [f32::NEG_INFINITY, f32::INFINITY]
                    .iter()
                    .flat_map(|m| row.iter().map(move |v| if v.is_nan() { *m } else { *v }))
                    .collect();
                assert!(xx.len() < 64);
                let mut got = Vec::new();
                c.walk(&xx, super::compact::Each(|s| got.push(c.leaves[s])));
                assert_eq!(got, want, "{}: {row:?}", file.display());
            }
            general.eval(row, &mut g);
            for z in &z {
                let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(z), bits(&g), "{}: {row:?}", file.display());
            }
        }
    }
}
