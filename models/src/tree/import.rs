//! Reading an ONNX graph into an [`Ensemble`]: which graphs are "only a
//! tree ensemble", and checking every index of the trees before anything
//! walks them.
//!
//! A supported graph has one float32 input `[N, n]`, one
//! `TreeEnsembleClassifier` or `TreeEnsembleRegressor` (`ai.onnx.ml`) fed
//! by it, and around it only what scikit-learn (skl2onnx), LightGBM and
//! XGBoost (onnxmltools) exports put there: `Identity`, `Cast` to float,
//! `Mul` by a constant, `ZipMap`. Anything else is [`Decline::Unsupported`]
//! (ONNX Runtime serves the model). A tree ensemble that ONNX Runtime would
//! reject, crash on or loop on forever (a child that is not in its tree, a
//! cycle, a leaf without a weight) is [`Decline::Invalid`]: the model is
//! refused whichever evaluator is asked for.

use std::collections::HashMap;

use super::ensemble::{
    Aggregate, Ensemble, F_EQ, F_GT, F_LEAF, F_LT, F_UNORD, F_XNAN, FEATURE_MASK, Kind, Node, Post,
    Tree, Weight,
};
use crate::onnx::{self, AttributeProto, GraphProto, NodeProto, TensorProto, type_proto};

/// The most nodes an ensemble may have.
pub(crate) const MAX_NODES: usize = 1 << 22;
/// The deepest tree the native evaluator walks.
pub(crate) const MAX_DEPTH: u32 = 512;
/// The most classes or targets.
pub(crate) const MAX_COLUMNS: usize = 4096;

/// Why the native evaluator does not take a model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decline {
    /// A valid model the native evaluator does not evaluate.
    Unsupported(String),
    /// A broken tree ensemble, refused by every evaluator.
    Invalid(String),
}

fn unsupported<T>(why: impl Into<String>) -> Result<T, Decline> {
    Err(Decline::Unsupported(why.into()))
}

fn invalid<T>(why: impl Into<String>) -> Result<T, Decline> {
    Err(Decline::Invalid(why.into()))
}

/// What a named value of the graph holds.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    /// The graph's input.
    Input,
    /// The ensemble's scores, each column multiplied by `factors` in turn
    /// (each factor one value for every column, or one per column).
    Scores { factors: Vec<Vec<f32>> },
    /// The scores zipped with class labels (`ZipMap`): a sequence of maps.
    ZipMap {
        factors: Vec<Vec<f32>>,
        labels: usize,
    },
    /// Anything else (labels, casts to other types): not read natively.
    Other(String),
}

/// A graph the native evaluator takes.
#[derive(Debug, Clone)]
pub(crate) struct Imported {
    pub ensemble: Ensemble,
    /// The input's declared width, when fixed.
    pub width: Option<usize>,
    /// The largest feature index a split reads.
    pub max_feature: Option<usize>,
    /// Graph outputs by name.
    pub outputs: Vec<(String, Value)>,
    /// Length of the ensemble's `nodes_*` lists (the covers file's length).
    pub source_nodes: usize,
}

/// Reads a decoded model.
pub(crate) fn import(model: &onnx::ModelProto) -> Result<Imported, Decline> {
    let Some(graph) = &model.graph else {
        return invalid("the file has no graph");
    };
    let initializers: HashMap<&str, &TensorProto> = graph
        .initializer
        .iter()
        .map(|t| (t.name.as_str(), t))
        .collect();
    let inputs: Vec<_> = graph
        .input
        .iter()
        .filter(|i| !initializers.contains_key(i.name.as_str()))
        .collect();
    let [input] = inputs[..] else {
        return unsupported(format!(
            "the graph has {} inputs; the native evaluator takes one",
            inputs.len()
        ));
    };
    let width = match input.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(type_proto::Value::TensorType(t)) if t.elem_type == onnx::FLOAT => {
            match t.shape.as_ref().map(|s| &s.dim[..]) {
                Some([_, d]) => match d.value {
                    Some(onnx::tensor_shape_proto::dimension::Value::DimValue(n)) => {
                        usize::try_from(n).ok()
                    }
                    _ => None,
                },
                _ => return unsupported("the input is not a [batch, n] tensor"),
            }
        }
        _ => return unsupported("the input is not a float32 tensor"),
    };
    let mut values: HashMap<&str, Value> = HashMap::new();
    values.insert(input.name.as_str(), Value::Input);
    let mut found: Option<(Ensemble, usize, Option<usize>)> = None;
    for node in &graph.node {
        let get = |i: usize| -> Result<&Value, Decline> {
            let name = node.input.get(i).map(String::as_str).unwrap_or("");
            match values.get(name) {
                Some(v) => Ok(v),
                None => unsupported(format!(
                    "`{}` reads `{name}`, which is not produced by a node the native evaluator knows",
                    node.op_type
                )),
            }
        };
        let domain = node.domain.as_str();
        let ml = domain == "ai.onnx.ml";
        let core = domain.is_empty() || domain == "ai.onnx";
        let produced: Vec<Value> = match (node.op_type.as_str(), ml, core) {
            (op @ ("TreeEnsembleClassifier" | "TreeEnsembleRegressor"), true, _) => {
                if found.is_some() {
                    return unsupported("the graph has more than one tree ensemble");
                }
                if *get(0)? != Value::Input {
                    return unsupported(format!("the {op} does not read the graph's input"));
                }
                let classifier = op == "TreeEnsembleClassifier";
                let (ensemble, source_nodes, max_feature) = ensemble(node, classifier)?;
                found = Some((ensemble, source_nodes, max_feature));
                let scores = Value::Scores {
                    factors: Vec::new(),
                };
                if classifier {
                    vec![Value::Other("the predicted label".into()), scores]
                } else {
                    vec![scores]
                }
            }
            ("Identity", _, true) => vec![get(0)?.clone()],
            ("Cast", _, true) => {
                let to = attr(node, "to").map(|a| a.i).unwrap_or(0);
                match get(0)? {
                    v @ (Value::Input | Value::Scores { .. }) if to == i64::from(onnx::FLOAT) => {
                        vec![v.clone()]
                    }
                    _ => vec![Value::Other(format!("a cast to ONNX type {to}"))],
                }
            }
            ("Mul", _, true) => {
                let (a, b) = (
                    node.input.first().map(String::as_str).unwrap_or(""),
                    node.input.get(1).map(String::as_str).unwrap_or(""),
                );
                let (scores, constant) = match (values.get(a), values.get(b)) {
                    (Some(Value::Scores { factors }), None) => (factors, initializers.get(b)),
                    (None, Some(Value::Scores { factors })) => (factors, initializers.get(a)),
                    _ => return unsupported("a `Mul` that is not the scores times a constant"),
                };
                let Some(factor) = constant.and_then(|t| t.floats()) else {
                    return unsupported("a `Mul` by something other than a float constant");
                };
                if factor.is_empty() || factor.len() > MAX_COLUMNS {
                    return unsupported("a `Mul` by a constant of an unexpected size");
                }
                let mut factors = scores.clone();
                factors.push(factor);
                vec![Value::Scores { factors }]
            }
            ("ZipMap", true, _) => match get(0)? {
                Value::Scores { factors } => {
                    let labels = attr(node, "classlabels_int64s")
                        .map(|a| a.ints.len())
                        .filter(|n| *n > 0)
                        .or_else(|| attr(node, "classlabels_strings").map(|a| a.strings.len()))
                        .unwrap_or(0);
                    vec![Value::ZipMap {
                        factors: factors.clone(),
                        labels,
                    }]
                }
                _ => return unsupported("a `ZipMap` of something other than the scores"),
            },
            (op, _, _) => {
                let domain = if domain.is_empty() { "ai.onnx" } else { domain };
                return unsupported(format!(
                    "operator {domain}.{op} is not part of a tree-ensemble export"
                ));
            }
        };
        for (name, value) in node.output.iter().zip(produced) {
            if !name.is_empty() {
                values.insert(name.as_str(), value);
            }
        }
    }
    let Some((ensemble, source_nodes, max_feature)) = found else {
        return unsupported("the graph has no tree ensemble");
    };
    if let (Some(w), Some(f)) = (width, max_feature)
        && f >= w
    {
        return invalid(format!(
            "a split reads feature {f}, but the input has {w} columns"
        ));
    }
    let outputs = output_values(graph, &values);
    Ok(Imported {
        ensemble,
        width,
        max_feature,
        outputs,
        source_nodes,
    })
}

fn output_values(graph: &GraphProto, values: &HashMap<&str, Value>) -> Vec<(String, Value)> {
    graph
        .output
        .iter()
        .map(|o| {
            let v = values
                .get(o.name.as_str())
                .cloned()
                .unwrap_or_else(|| Value::Other("a value not computed natively".into()));
            (o.name.clone(), v)
        })
        .collect()
}

fn attr<'a>(node: &'a NodeProto, name: &str) -> Option<&'a AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}

fn ints<'a>(node: &'a NodeProto, name: &str) -> &'a [i64] {
    attr(node, name).map(|a| &a.ints[..]).unwrap_or(&[])
}

fn text(node: &NodeProto, name: &str, default: &str) -> String {
    attr(node, name)
        .map(|a| String::from_utf8_lossy(&a.s).into_owned())
        .unwrap_or_else(|| default.to_string())
}

/// A float list attribute, or its `<name>_as_tensor` twin holding floats.
fn floats(node: &NodeProto, name: &str) -> Result<Vec<f32>, Decline> {
    let list = attr(node, name).map(|a| &a.floats[..]).unwrap_or(&[]);
    let tensor = attr(node, &format!("{name}_as_tensor")).and_then(|a| a.t.as_ref());
    match tensor {
        None => Ok(list.to_vec()),
        Some(_) if !list.is_empty() => invalid(format!("both {name} and {name}_as_tensor are set")),
        Some(t) if t.data_type == onnx::DOUBLE => unsupported(format!(
            "{name}_as_tensor holds doubles (ONNX Runtime reads them as floats for a float input)"
        )),
        Some(t) => match t.floats() {
            Some(v) => Ok(v),
            None => unsupported(format!("{name}_as_tensor is not an inline float tensor")),
        },
    }
}

fn mode_flags(mode: &[u8]) -> Option<u32> {
    Some(match mode {
        b"BRANCH_LEQ" => F_LT | F_EQ,
        b"BRANCH_LT" => F_LT,
        b"BRANCH_GTE" => F_GT | F_EQ,
        b"BRANCH_GT" => F_GT,
        b"BRANCH_EQ" => F_EQ,
        b"BRANCH_NEQ" => F_LT | F_GT | F_UNORD,
        b"LEAF" => F_LEAF,
        _ => return None,
    })
}

/// Builds the ensemble of a tree-ensemble node. Returns it, the length of
/// its `nodes_*` lists, and the largest feature a split reads.
fn ensemble(
    node: &NodeProto,
    classifier: bool,
) -> Result<(Ensemble, usize, Option<usize>), Decline> {
    let tree_ids = ints(node, "nodes_treeids");
    let node_ids = ints(node, "nodes_nodeids");
    let features = ints(node, "nodes_featureids");
    let trues = ints(node, "nodes_truenodeids");
    let falses = ints(node, "nodes_falsenodeids");
    let tracks = ints(node, "nodes_missing_value_tracks_true");
    let modes = attr(node, "nodes_modes")
        .map(|a| &a.strings[..])
        .unwrap_or(&[]);
    let thresholds = floats(node, "nodes_values")?;
    let n = tree_ids.len();
    if n == 0 {
        return invalid("the tree ensemble has no nodes");
    }
    if n > MAX_NODES {
        return unsupported(format!(
            "{n} nodes, more than the {MAX_NODES} the native evaluator takes"
        ));
    }
    for (what, len) in [
        ("nodes_nodeids", node_ids.len()),
        ("nodes_featureids", features.len()),
        ("nodes_truenodeids", trues.len()),
        ("nodes_falsenodeids", falses.len()),
        ("nodes_modes", modes.len()),
        ("nodes_values", thresholds.len()),
    ] {
        if len != n {
            return invalid(format!("{what} has {len} entries, nodes_treeids {n}"));
        }
    }
    let (prefix, columns) = if classifier {
        let labels = ints(node, "classlabels_int64s").len();
        let labels = if labels > 0 {
            labels
        } else {
            attr(node, "classlabels_strings").map_or(0, |a| a.strings.len())
        };
        ("class", labels)
    } else {
        let targets = attr(node, "n_targets").map_or(0, |a| a.i);
        ("target", usize::try_from(targets).unwrap_or(0))
    };
    if columns == 0 {
        return invalid(if classifier {
            "the classifier has no class labels"
        } else {
            "the regressor has no n_targets"
        });
    }
    if columns > MAX_COLUMNS {
        return unsupported(format!("{columns} outputs, more than {MAX_COLUMNS}"));
    }
    if classifier && columns == 1 {
        return unsupported(
            "a classifier with one class (ONNX Runtime writes two columns into one)",
        );
    }
    let w_ids = ints(node, &format!("{prefix}_ids"));
    let w_nodes = ints(node, &format!("{prefix}_nodeids"));
    let w_trees = ints(node, &format!("{prefix}_treeids"));
    let w_values = floats(node, &format!("{prefix}_weights"))?;
    for (what, len) in [
        ("nodeids", w_nodes.len()),
        ("treeids", w_trees.len()),
        ("weights", w_values.len()),
    ] {
        if len != w_ids.len() {
            return invalid(format!(
                "{prefix}_{what} has {len} entries, {prefix}_ids {}",
                w_ids.len()
            ));
        }
    }
    let base = floats(node, "base_values")?;
    let post = match text(node, "post_transform", "NONE").as_str() {
        "NONE" => Post::None,
        "LOGISTIC" => Post::Logistic,
        "SOFTMAX" => Post::Softmax,
        "SOFTMAX_ZERO" => Post::SoftmaxZero,
        "PROBIT" => Post::Probit,
        other => return unsupported(format!("post_transform {other}")),
    };
    let aggregate = if classifier {
        Aggregate::Sum
    } else {
        match text(node, "aggregate_function", "SUM").as_str() {
            "SUM" => Aggregate::Sum,
            "AVERAGE" => Aggregate::Average,
            "MIN" => Aggregate::Min,
            "MAX" => Aggregate::Max,
            other => return unsupported(format!("aggregate_function {other}")),
        }
    };
    let kind = if classifier {
        let mut classes: Vec<i64> = w_ids.to_vec();
        classes.sort_unstable();
        classes.dedup();
        let binary_case = columns == 2 && classes.len() == 1;
        // As ONNX Runtime decides it: only a weight below zero is negative.
        let all_positive = w_values.iter().all(|w| *w >= 0.0 || w.is_nan());
        if columns == 2 && base.len() == 1 && !binary_case {
            return unsupported(
                "a two-class classifier with one base value and weights for both classes (ONNX Runtime leaves a column unwritten)",
            );
        }
        if columns == 2 && base.len() <= 1 && post == Post::Probit {
            return unsupported(
                "a two-class PROBIT classifier (ONNX Runtime leaves a column unwritten)",
            );
        }
        if columns > 2 && base.len() > columns {
            return unsupported(format!("{} base values for {columns} classes", base.len()));
        }
        Kind::Classifier {
            binary_case,
            all_positive,
        }
    } else {
        Kind::Regressor
    };

    // Index every node by (tree, node id).
    let mut index: HashMap<(i64, i64), u32> = HashMap::with_capacity(n);
    let mut flags = Vec::with_capacity(n);
    let mut max_feature: Option<usize> = None;
    for i in 0..n {
        if index.insert((tree_ids[i], node_ids[i]), i as u32).is_some() {
            return invalid(format!(
                "node {} of tree {} is listed twice",
                node_ids[i], tree_ids[i]
            ));
        }
        let Some(mut f) = mode_flags(&modes[i]) else {
            return unsupported(format!("node mode {}", String::from_utf8_lossy(&modes[i])));
        };
        if f != F_LEAF {
            if tracks.get(i) == Some(&1) {
                f |= F_XNAN;
            }
            let feature = features[i];
            if feature < 0 {
                return invalid(format!(
                    "node {} of tree {} reads feature {feature}",
                    node_ids[i], tree_ids[i]
                ));
            }
            if feature > i64::from(FEATURE_MASK) {
                return unsupported(format!("feature index {feature}"));
            }
            max_feature = max_feature.max(Some(feature as usize));
        }
        flags.push(f);
    }
    // Children, checked as ONNX Runtime checks them.
    let mut children = vec![(u32::MAX, u32::MAX); n];
    for i in 0..n {
        if flags[i] == F_LEAF {
            continue;
        }
        let child = |id: i64, which: &str| -> Result<u32, Decline> {
            if id < 0 || id >= n as i64 {
                return invalid(format!(
                    "node {} of tree {}: {which} node {id} is out of range",
                    node_ids[i], tree_ids[i]
                ));
            }
            match index.get(&(tree_ids[i], id)) {
                Some(&c) if c as usize == i => invalid(format!(
                    "node {} of tree {} is its own {which} node",
                    node_ids[i], tree_ids[i]
                )),
                Some(&c) => Ok(c),
                None => invalid(format!(
                    "node {} of tree {}: {which} node {id} is not in the tree",
                    node_ids[i], tree_ids[i]
                )),
            }
        };
        children[i] = (child(trues[i], "true")?, child(falses[i], "false")?);
    }
    // Leaf weights, in ONNX Runtime's order: by tree, node, then listing.
    let mut order: Vec<u32> = (0..w_ids.len() as u32).collect();
    order.sort_by_key(|&k| (w_trees[k as usize], w_nodes[k as usize], k));
    let mut per_leaf: Vec<Vec<Weight>> = vec![Vec::new(); n];
    for k in order {
        let k = k as usize;
        let Some(&at) = index.get(&(w_trees[k], w_nodes[k])) else {
            return invalid(format!(
                "a weight names node {} of tree {}, which does not exist",
                w_nodes[k], w_trees[k]
            ));
        };
        if flags[at as usize] != F_LEAF {
            // ONNX Runtime ignores weights on splits (old converters wrote them).
            continue;
        }
        let column = w_ids[k];
        if columns > 1 && (column < 0 || column >= columns as i64) {
            return invalid(format!(
                "a weight of node {} of tree {} is for output {column}, the model has {columns}",
                w_nodes[k], w_trees[k]
            ));
        }
        per_leaf[at as usize].push(Weight {
            column: column.clamp(0, columns as i64 - 1) as u32,
            value: w_values[k],
        });
    }
    if let Some(i) = (0..n).find(|&i| flags[i] == F_LEAF && per_leaf[i].is_empty()) {
        return invalid(format!(
            "leaf {} of tree {} has no weight",
            node_ids[i], tree_ids[i]
        ));
    }

    // Roots: the first node of each run of one tree id, as ONNX Runtime
    // counts trees.
    let roots: Vec<u32> = (0..n)
        .filter(|&i| i == 0 || tree_ids[i] != tree_ids[i - 1])
        .map(|i| i as u32)
        .collect();
    let flat = flatten(&roots, &children, &flags)?;

    // The single-weight path: one output, or one weight a leaf, all for the
    // same column.
    let single = if columns == 1 {
        Some(0)
    } else {
        let mut column = None;
        let mut ok = true;
        for &orig in &flat.order {
            let w = &per_leaf[orig as usize];
            if flags[orig as usize] != F_LEAF {
                continue;
            }
            if w.len() != 1 || column.is_some_and(|c| c != w[0].column) {
                ok = false;
                break;
            }
            column = Some(w[0].column);
        }
        if ok { column } else { None }
    };
    let mut nodes = Vec::with_capacity(flat.order.len());
    let mut leaf_weights = Vec::with_capacity(flat.order.len());
    let mut weights = Vec::new();
    let mut leq_only = true;
    for (new, &orig) in flat.order.iter().enumerate() {
        let orig = orig as usize;
        let new = new as u32;
        if flags[orig] == F_LEAF {
            let w = &per_leaf[orig];
            let start = weights.len() as u32;
            weights.extend_from_slice(w);
            leaf_weights.push((start, weights.len() as u32));
            nodes.push(Node {
                threshold: if single.is_some() { w[0].value } else { 0.0 },
                packed: F_LEAF,
                yes: new,
                no: new,
            });
        } else {
            leq_only &= (flags[orig] & !F_XNAN) == (F_LT | F_EQ);
            let (yes, no) = children[orig];
            leaf_weights.push((0, 0));
            nodes.push(Node {
                threshold: thresholds[orig],
                packed: flags[orig] | features[orig] as u32,
                yes: flat.new_index[yes as usize],
                no: flat.new_index[no as usize],
            });
        }
    }
    let mut ensemble = Ensemble {
        kind,
        aggregate,
        post,
        base,
        outputs: columns,
        nodes,
        trees: flat.trees,
        leaf_weights,
        weights,
        single,
        leq_only,
        source: flat.order,
        shared: flat.shared,
        groups: Vec::new(),
        min_width: 1,
        fast: None,
        compact: None,
    };
    ensemble.seal().map_err(Decline::Invalid)?;
    Ok((ensemble, n, max_feature))
}

struct Flat {
    /// Original index of each new node, in the new order.
    order: Vec<u32>,
    /// New index of each original node (u32::MAX: unreachable).
    new_index: Vec<u32>,
    trees: Vec<Tree>,
    /// Some node is reached along two paths.
    shared: bool,
}

/// Lays the reachable nodes out depth-first from each root, refusing
/// cycles and measuring each tree's depth, without recursion.
fn flatten(roots: &[u32], children: &[(u32, u32)], flags: &[u32]) -> Result<Flat, Decline> {
    const UNSEEN: u8 = 0;
    const OPEN: u8 = 1;
    const DONE: u8 = 2;
    let n = children.len();
    let mut state = vec![UNSEEN; n];
    let mut depth = vec![0u32; n];
    let mut new_index = vec![u32::MAX; n];
    let mut order = Vec::new();
    let mut trees = Vec::with_capacity(roots.len());
    let mut shared = false;
    // (node, children pushed?)
    let mut stack: Vec<(u32, bool)> = Vec::new();
    for &root in roots {
        if state[root as usize] == DONE {
            shared = true;
        }
        stack.push((root, false));
        while let Some((at, expanded)) = stack.pop() {
            let i = at as usize;
            let leaf = flags[i] == F_LEAF;
            if expanded {
                if !leaf {
                    let (y, no) = children[i];
                    depth[i] = 1 + depth[y as usize].max(depth[no as usize]);
                    if depth[i] > MAX_DEPTH {
                        return Err(Decline::Unsupported(format!(
                            "a tree deeper than {MAX_DEPTH}"
                        )));
                    }
                }
                state[i] = DONE;
                continue;
            }
            match state[i] {
                DONE => {
                    shared = true;
                    continue;
                }
                OPEN => return invalid("a tree has a cycle (a walk would never end)"),
                _ => {}
            }
            state[i] = OPEN;
            new_index[i] = order.len() as u32;
            order.push(at);
            stack.push((at, true));
            if !leaf {
                let (y, no) = children[i];
                // `yes` is popped first, so it follows its parent.
                for c in [no, y] {
                    match state[c as usize] {
                        OPEN => return invalid("a tree has a cycle (a walk would never end)"),
                        DONE => shared = true,
                        _ => stack.push((c, false)),
                    }
                }
            }
        }
        trees.push(Tree {
            root: new_index[root as usize],
            depth: depth[root as usize],
        });
    }
    Ok(Flat {
        order,
        new_index,
        trees,
        shared,
    })
}
