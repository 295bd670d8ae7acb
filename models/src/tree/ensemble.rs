//! One `ai.onnx.ml` tree ensemble, flattened for evaluation, and the exact
//! arithmetic ONNX Runtime applies to it.
//!
//! Layout: every tree's reachable nodes in depth-first order (the "true"
//! child right after its parent), 16 bytes a node, all trees in one array.
//! A leaf is a node whose two children are itself, so a tree can be walked
//! a fixed number of steps (its depth) without asking whether it has
//! arrived: [`LANES`] trees are walked side by side, branch-free, and the
//! processor overlaps their chains of loads instead of stalling on one.
//!
//! Arithmetic: ONNX Runtime's CPU kernel (`tree_ensemble_common.h`,
//! `tree_ensemble_aggregator.h`, `ml_common.h`, version 1.22) for a float
//! input: scores are summed in f32, tree after tree in the order the trees
//! appear, the base values added after the trees, then the post-transform
//! in f32 with the C library's `expf`. Replaying the same operations in the
//! same order gives the same bits, which the parity tests check. The
//! kernel's quirks are kept (a score a tree never wrote reads as 0 in the
//! post-transform, even with a base value added); where the kernel leaves
//! an output column unwritten, [`import`](super::import) declines the model
//! instead.

use smallvec::SmallVec;

use super::compact::{Compact, Doubled, Each, Sum, double};

/// Trees walked side by side.
pub(crate) const LANES: usize = 8;

/// Node flags, in the high byte of [`Node::packed`]; the low 24 bits hold
/// the feature index. A split sends a value to its "true" child when one of
/// its comparison flags holds: `LT` x < t, `EQ` x == t, `GT` x > t, `UNORD`
/// x or t is NaN, `XNAN` x is NaN (ONNX's "missing value tracks true").
pub(crate) const F_LT: u32 = 1 << 24;
pub(crate) const F_EQ: u32 = 1 << 25;
pub(crate) const F_GT: u32 = 1 << 26;
pub(crate) const F_UNORD: u32 = 1 << 27;
pub(crate) const F_XNAN: u32 = 1 << 28;
pub(crate) const F_LEAF: u32 = 1 << 29;
pub(crate) const FEATURE_MASK: u32 = (1 << 24) - 1;

/// One node: 16 bytes, four to a cache line.
#[derive(Debug, Clone, Copy, PartialEq)]
#[repr(C)]
pub(crate) struct Node {
    /// The split threshold; for a leaf on the single-weight path, its value.
    pub threshold: f32,
    /// Feature index and flags.
    pub packed: u32,
    /// Index of the child taken when the test holds (itself for a leaf).
    pub yes: u32,
    /// Index of the other child (itself for a leaf).
    pub no: u32,
}

impl Node {
    pub fn feature(&self) -> usize {
        (self.packed & FEATURE_MASK) as usize
    }

    pub fn is_leaf(&self) -> bool {
        self.packed & F_LEAF != 0
    }

    /// Whether `x` goes to the `yes` child.
    #[inline(always)]
    pub fn test(&self, x: f32) -> bool {
        let t = self.threshold;
        let p = self.packed;
        ((p & F_LT != 0) & (x < t))
            | ((p & F_EQ != 0) & (x == t))
            | ((p & F_GT != 0) & (x > t))
            | ((p & F_UNORD != 0) & (x.is_nan() | t.is_nan()))
            | ((p & F_XNAN != 0) & x.is_nan())
    }

    /// [`test`](Self::test) for a `BRANCH_LEQ` node.
    #[inline(always)]
    fn test_leq(&self, x: f32) -> bool {
        (x <= self.threshold) | ((self.packed & F_XNAN != 0) & x.is_nan())
    }
}

/// How tree outputs combine (`aggregate_function`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Aggregate {
    Sum,
    Average,
    Min,
    Max,
}

/// `post_transform`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Post {
    None,
    Logistic,
    Softmax,
    SoftmaxZero,
    Probit,
}

/// Which operator, with what the classifier needs to finish its scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Regressor,
    Classifier {
        /// Two classes and every weight for one of them.
        binary_case: bool,
        /// No weight is negative.
        all_positive: bool,
    },
}

/// One weight of a leaf: `value` added to output `column`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Weight {
    pub column: u32,
    pub value: f32,
}

/// A node for the fast walk: the split reads `row[index]` of the row laid
/// out twice (missing values as -inf, then as +inf), so one comparison
/// decides both the value and the missing-value branch.
#[derive(Debug, Clone, Copy, PartialEq)]
#[repr(C)]
pub(crate) struct FastNode {
    pub threshold: f32,
    pub index: u32,
    pub yes: u32,
    pub no: u32,
}

/// The comparison every split of a fast-walked ensemble makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FastMode {
    /// `x <= t` (scikit-learn, LightGBM).
    Leq,
    /// `x < t` (XGBoost).
    Lt,
}

/// [`LANES`] trees walked together: their roots (padded with a leaf), how
/// many are real, and the steps the deepest takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Group {
    pub roots: [u32; LANES],
    pub len: usize,
    pub depth: u32,
}

/// A tree: its root's index and the steps a walk takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tree {
    pub root: u32,
    pub depth: u32,
}

/// A score being accumulated, with ONNX Runtime's "was it written" flag.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Score {
    pub v: f32,
    pub has: bool,
}

impl Score {
    /// The value the post-transform sees: 0 for a score never written.
    fn val(self) -> f32 {
        if self.has { self.v } else { 0.0 }
    }
}

/// Scores of one row: on the stack for up to 8 outputs.
pub(crate) type Scores = SmallVec<[Score; 8]>;

/// A flattened ensemble, ready to evaluate.
#[derive(Debug, Clone)]
pub(crate) struct Ensemble {
    pub kind: Kind,
    pub aggregate: Aggregate,
    pub post: Post,
    pub base: Vec<f32>,
    /// Output columns (classes or targets).
    pub outputs: usize,
    pub nodes: Vec<Node>,
    pub trees: Vec<Tree>,
    /// Per node: its leaf weights in `weights` (start, end); (0, 0) for a
    /// split.
    pub leaf_weights: Vec<(u32, u32)>,
    pub weights: Vec<Weight>,
    /// `Some(column)` when every leaf has one weight, all for `column`, and
    /// the leaf's value sits in its `threshold` (also the one-output path,
    /// where ONNX Runtime reads only a leaf's first weight).
    pub single: Option<u32>,
    /// Every split is `BRANCH_LEQ`.
    pub leq_only: bool,
    /// Per node: its position in the operator's `nodes_*` lists.
    pub source: Vec<u32>,
    /// Some node is reached along two paths (the trees form a graph, which
    /// evaluation allows and explanations do not).
    pub shared: bool,
    /// The trees in walking groups (see [`seal`](Self::seal)).
    pub groups: Vec<Group>,
    /// The fewest values a row needs (the largest feature read, plus one).
    pub min_width: usize,
    /// The fast walk, when every split is `BRANCH_LEQ` (or every one
    /// `BRANCH_LT`) against a finite threshold: same indices as `nodes`.
    pub fast: Option<(FastMode, Vec<FastNode>)>,
    /// The fast walk in the compact layout, when the trees are shallow
    /// enough to pad (then `fast` is `None`).
    pub compact: Option<Box<Compact>>,
}

impl Ensemble {
    /// Groups the trees [`LANES`] at a time for [`for_each_leaf`]
    /// (Self::for_each_leaf), the last group padded with a leaf, and checks
    /// the invariants the walk relies on. Called once the nodes are laid
    /// out; `Err` names a broken index (the importer never builds one).
    pub fn seal(&mut self) -> Result<(), String> {
        let n = self.nodes.len() as u32;
        let mut min_width = 1;
        for (i, node) in self.nodes.iter().enumerate() {
            if node.yes >= n || node.no >= n {
                return Err(format!("node {i} has a child out of range"));
            }
            min_width = min_width.max(node.feature() + 1);
        }
        let Some(pad) = self.nodes.iter().position(Node::is_leaf) else {
            return Err("the trees have no leaf".into());
        };
        self.groups = self
            .trees
            .chunks(LANES)
            .map(|chunk| {
                let mut roots = [pad as u32; LANES];
                for (r, t) in roots.iter_mut().zip(chunk) {
                    *r = t.root;
                }
                Group {
                    roots,
                    len: chunk.len(),
                    depth: chunk.iter().map(|t| t.depth).max().unwrap_or(0),
                }
            })
            .collect();
        if self.trees.iter().any(|t| t.root >= n) {
            return Err("a root is out of range".into());
        }
        self.min_width = min_width;
        self.fast = self.fast_nodes();
        self.compact = self.fast.as_ref().and_then(|(mode, fast)| {
            Compact::build(*mode, &self.nodes, fast, &self.trees, 2 * min_width).map(Box::new)
        });
        if self.compact.is_some() {
            self.fast = None;
        }
        Ok(())
    }

    /// The nodes of the fast walk, if every split allows it. A split whose
    /// missing values go to `yes` reads the copy of the row where they are
    /// -inf (below any finite threshold), one whose missing values go to
    /// `no` the copy where they are +inf; other values are the same in
    /// both copies, so the comparison is the split's own.
    fn fast_nodes(&self) -> Option<(FastMode, Vec<FastNode>)> {
        let mut mode = None;
        for n in self.nodes.iter().filter(|n| !n.is_leaf()) {
            let this = match n.packed & (F_LT | F_EQ | F_GT | F_UNORD) {
                f if f == F_LT | F_EQ => FastMode::Leq,
                F_LT => FastMode::Lt,
                _ => return None,
            };
            if mode.is_some_and(|m| m != this) || n.threshold.is_nan() {
                return None;
            }
            mode = Some(this);
        }
        let width = self.min_width as u32;
        let mode = mode.unwrap_or(FastMode::Leq);
        let nodes = self
            .nodes
            .iter()
            .map(|n| FastNode {
                // An infinite threshold becomes the largest finite one where
                // that keeps every finite value's side and sends the
                // infinite stand-ins for missing values the right way (rows
                // with infinite values of their own take the other walk).
                threshold: match (mode, n.threshold) {
                    (FastMode::Leq, f32::INFINITY) => f32::MAX,
                    (FastMode::Lt, f32::NEG_INFINITY) => -f32::MAX,
                    (_, t) => t,
                },
                index: if n.is_leaf() {
                    0
                } else if n.packed & F_XNAN != 0 {
                    n.feature() as u32
                } else {
                    n.feature() as u32 + width
                },
                yes: n.yes,
                no: n.no,
            })
            .collect();
        Some((mode, nodes))
    }

    /// The leaf each tree of `group` sends the doubled row `xx` to.
    #[inline(always)]
    fn walk_fast<const LT: bool>(nodes: &[FastNode], group: &Group, xx: &[f32]) -> [u32; LANES] {
        let mut at = group.roots;
        for _ in 0..group.depth {
            for a in at.iter_mut() {
                // SAFETY: `seal` checked every child index against the node
                // count (the fast nodes are as many), and every index read
                // is below twice `min_width`, the length of `xx`.
                let n = unsafe { nodes.get_unchecked(*a as usize) };
                let v = unsafe { *xx.get_unchecked(n.index as usize) };
                let go = if LT {
                    v < n.threshold
                } else {
                    v <= n.threshold
                };
                *a = if go { n.yes } else { n.no };
            }
        }
        at
    }

    /// The leaf each tree of `group` sends `x` to.
    #[inline(always)]
    fn walk<const LEQ: bool>(&self, group: &Group, x: &[f32]) -> [u32; LANES] {
        let nodes = &self.nodes[..];
        let mut at = group.roots;
        for _ in 0..group.depth {
            for a in at.iter_mut() {
                // SAFETY: `seal` checked that every child index is below
                // `nodes.len()` and every feature below `min_width`, and
                // `for_each_leaf` that `x` has at least `min_width` values.
                let n = unsafe { nodes.get_unchecked(*a as usize) };
                let v = unsafe { *x.get_unchecked(n.feature()) };
                let go = if LEQ { n.test_leq(v) } else { n.test(v) };
                *a = if go { n.yes } else { n.no };
            }
        }
        at
    }

    /// Whether row `x` can take the fast walks: no value infinite (the
    /// stand-ins for missing values would be ambiguous), and as many values
    /// as the trees read.
    #[inline(always)]
    fn fast_row(&self, x: &[f32]) -> bool {
        x.len() >= self.min_width && !x[..self.min_width].iter().any(|v| v.is_infinite())
    }

    /// Calls `each` with every tree's leaf for row `x`, in tree order.
    #[inline(always)]
    pub fn for_each_leaf(&self, x: &[f32], mut each: impl FnMut(u32)) {
        assert!(
            x.len() >= self.min_width,
            "a row of {} values for trees reading {}",
            x.len(),
            self.min_width
        );
        if let Some(c) = &self.compact
            && self.fast_row(x)
        {
            c.walk_row(x, Each(|slot| each(c.leaves[slot])));
            return;
        }
        if let Some((mode, nodes)) = &self.fast
            && self.fast_row(x)
        {
            let mut xx = Doubled::new();
            double(x, self.min_width, &mut xx);
            for group in &self.groups {
                let leaves = match mode {
                    FastMode::Leq => Self::walk_fast::<false>(nodes, group, &xx),
                    FastMode::Lt => Self::walk_fast::<true>(nodes, group, &xx),
                };
                for &leaf in &leaves[..group.len] {
                    each(leaf);
                }
            }
            return;
        }
        for group in &self.groups {
            let leaves = if self.leq_only {
                self.walk::<true>(group, x)
            } else {
                self.walk::<false>(group, x)
            };
            for &leaf in &leaves[..group.len] {
                each(leaf);
            }
        }
    }

    /// Calls `each` with the value (`threshold`) of every tree's leaf for
    /// row `x`, in tree order: the single-weight path.
    #[inline(always)]
    fn for_each_value(&self, x: &[f32], mut each: impl FnMut(f32)) {
        if let Some(c) = &self.compact
            && self.fast_row(x)
        {
            c.walk_row(x, Each(|slot| each(c.values[slot])));
            return;
        }
        let nodes = &self.nodes[..];
        self.for_each_leaf(x, |leaf| each(nodes[leaf as usize].threshold));
    }

    /// The leaves' values summed in f32, tree after tree.
    fn sum_values(&self, x: &[f32]) -> f32 {
        let mut sum = 0f32;
        self.for_each_value(x, |w| sum += w);
        sum
    }

    /// The raw per-output scores of row `x` (before base values and the
    /// post-transform), in `scores` (resized to the output count).
    pub fn accumulate(&self, x: &[f32], scores: &mut Scores) {
        scores.clear();
        scores.resize(self.outputs, Score::default());
        let one_output = self.outputs == 1;
        match (self.single, self.aggregate) {
            (Some(col), Aggregate::Sum | Aggregate::Average) => {
                let sum = match &self.compact {
                    Some(c) if self.fast_row(x) => c.walk_row(x, Sum(0.0)).0,
                    _ => self.sum_values(x),
                };
                let s = &mut scores[col as usize];
                s.v = sum;
                // The one-output sum never marks its score written; the
                // others mark a column once a weight lands in it.
                s.has = !one_output && !self.trees.is_empty();
            }
            (Some(col), agg @ (Aggregate::Min | Aggregate::Max)) => {
                let s = &mut scores[col as usize];
                self.for_each_value(x, |w| fold_extreme(s, w, agg));
            }
            (None, agg) => {
                let ranges = &self.leaf_weights[..];
                let weights = &self.weights[..];
                self.for_each_leaf(x, |leaf| {
                    let (a, b) = ranges[leaf as usize];
                    for w in &weights[a as usize..b as usize] {
                        let s = &mut scores[w.column as usize];
                        match agg {
                            Aggregate::Sum | Aggregate::Average => {
                                s.v += w.value;
                                s.has = true;
                            }
                            Aggregate::Min | Aggregate::Max => fold_extreme(s, w.value, agg),
                        }
                    }
                });
            }
        }
    }

    /// Evaluates row `x` into `z` (one value per output column).
    pub fn eval(&self, x: &[f32], z: &mut [f32]) {
        let mut scores = Scores::new();
        self.accumulate(x, &mut scores);
        self.finalize(&mut scores, z);
    }

    /// The raw score of output `column` for row `x`: the trees' sum plus
    /// the base value, before the post-transform (the model's margin). Only
    /// for the single-column sum ensembles explanations support.
    pub fn margin(&self, x: &[f32], column: u32) -> f32 {
        let mut scores = Scores::new();
        self.accumulate(x, &mut scores);
        let s = scores[column as usize].v;
        match self.kind {
            Kind::Regressor if self.outputs == 1 => s + self.origin(),
            Kind::Regressor => s + self.base.get(column as usize).copied().unwrap_or(0.0),
            Kind::Classifier { .. } => s + self.base.get(column as usize).copied().unwrap_or(0.0),
        }
    }

    /// The base value of the one-output path.
    fn origin(&self) -> f32 {
        if self.base.len() == 1 {
            self.base[0]
        } else {
            0.0
        }
    }

    /// Base values and the post-transform, as ONNX Runtime finishes them.
    pub fn finalize(&self, p: &mut Scores, z: &mut [f32]) {
        z.fill(f32::NAN);
        if self.outputs == 1 {
            // Only regressors take this path (a one-class classifier is
            // declined at import).
            let s = &mut p[0];
            let v = match self.aggregate {
                Aggregate::Sum => s.v + self.origin(),
                Aggregate::Average => s.v / self.trees.len() as f32 + self.origin(),
                Aggregate::Min | Aggregate::Max => {
                    if s.has {
                        s.v + self.origin()
                    } else {
                        self.origin()
                    }
                }
            };
            z[0] = if self.post == Post::Probit {
                probit(v)
            } else {
                v
            };
            return;
        }
        let use_base = self.base.len() == self.outputs;
        match self.kind {
            Kind::Regressor => {
                for (i, s) in p.iter_mut().enumerate() {
                    let b = if use_base { self.base[i] } else { 0.0 };
                    match self.aggregate {
                        Aggregate::Sum => {
                            if use_base {
                                s.v += b;
                            }
                        }
                        Aggregate::Average => {
                            s.v /= self.trees.len() as f32;
                            if use_base {
                                s.v += b;
                            }
                        }
                        Aggregate::Min | Aggregate::Max => s.v = b + s.val(),
                    }
                }
                write_scores(p, self.post, -1, z);
            }
            Kind::Classifier {
                binary_case,
                all_positive,
            } => {
                if self.outputs > 2 {
                    for (k, &b) in self.base.iter().enumerate() {
                        let s = &mut p[k];
                        if s.has {
                            s.v += b;
                        } else {
                            s.has = true;
                            s.v = b;
                        }
                    }
                    write_scores(p, self.post, -1, z);
                    return;
                }
                let mut was = -1;
                let mut len = 2;
                match self.base.len() {
                    2 => {
                        if p[1].has {
                            p[1].v = self.base[1] + p[0].v;
                            p[0].v = -p[1].v;
                        } else {
                            p[1].v += self.base[1];
                            p[0].v += self.base[0];
                        }
                    }
                    1 => {
                        p[0].v += self.base[0];
                        if !p[1].has {
                            len = 1;
                        }
                    }
                    0 => {
                        was = 3;
                        if !p[1].has {
                            len = 1;
                        }
                    }
                    _ => {}
                }
                if binary_case {
                    let pos = if len == 2 && p[1].has {
                        p[1].v
                    } else if p[0].has {
                        p[0].v
                    } else {
                        0.0
                    };
                    was = match (all_positive, pos) {
                        (true, w) if w > 0.5 => 0,
                        (true, _) => 1,
                        (false, w) if w > 0.0 => 2,
                        (false, _) => 3,
                    };
                }
                write_scores(&mut p[..len], self.post, was, z);
            }
        }
    }
}

fn fold_extreme(s: &mut Score, w: f32, agg: Aggregate) {
    let better = match agg {
        Aggregate::Min => w < s.v,
        _ => w > s.v,
    };
    if !s.has || better {
        s.v = w;
    }
    s.has = true;
}

/// ONNX Runtime's `write_scores`: the post-transform into `z`.
fn write_scores(p: &mut [Score], post: Post, add_second_class: i32, z: &mut [f32]) {
    if p.len() >= 2 {
        match post {
            Post::Probit => {
                for (z, s) in z.iter_mut().zip(p.iter()) {
                    *z = probit(s.val());
                }
            }
            Post::Logistic => {
                for (z, s) in z.iter_mut().zip(p.iter()) {
                    *z = logistic(s.val());
                }
            }
            Post::Softmax => {
                let mut max = -f32::MAX;
                for s in p.iter() {
                    if s.val() > max {
                        max = s.val();
                    }
                }
                let mut sum = 0f32;
                for s in p.iter_mut() {
                    s.v = (s.val() - max).exp();
                    s.has = true;
                    sum += s.v;
                }
                for (z, s) in z.iter_mut().zip(p.iter()) {
                    *z = s.v / sum;
                }
            }
            Post::SoftmaxZero => {
                let mut max = -f32::MAX;
                for s in p.iter() {
                    if s.val() > max {
                        max = s.val();
                    }
                }
                let exp_neg_max = (-max).exp();
                let mut sum = 0f32;
                for s in p.iter_mut() {
                    let v = s.val();
                    if !(-0.000_000_1..=0.000_000_1).contains(&v) {
                        s.v = (v - max).exp();
                        sum += s.v;
                    } else {
                        s.v = v * exp_neg_max;
                    }
                    s.has = true;
                }
                for (z, s) in z.iter_mut().zip(p.iter()) {
                    *z = s.v / sum;
                }
            }
            Post::None => {
                for (z, s) in z.iter_mut().zip(p.iter()) {
                    *z = s.val();
                }
            }
        }
        return;
    }
    // One score of a two-class model: the second column is derived.
    let s0 = p[0].val();
    if post == Post::Probit {
        z[0] = probit(s0);
        return;
    }
    match add_second_class {
        0 | 1 => {
            z[0] = 1.0 - s0;
            z[1] = s0;
        }
        2 | 3 => {
            if post == Post::Logistic {
                z[0] = logistic(-s0);
                z[1] = logistic(s0);
            } else {
                z[0] = -s0;
                z[1] = s0;
            }
        }
        _ => z[0] = s0,
    }
}

/// ONNX Runtime's `ComputeLogistic`, in f32.
pub(crate) fn logistic(x: f32) -> f32 {
    let v = 1.0 / (1.0 + (-x.abs()).exp());
    if x < 0.0 { 1.0 - v } else { v }
}

/// ONNX Runtime's `ComputeProbit` (with its approximate `ErfInv`), in f32.
pub(crate) fn probit(x: f32) -> f32 {
    let x = 2.0 * x - 1.0;
    let sgn = if x < 0.0 { -1.0f32 } else { 1.0 };
    let y = (1.0 - x) * (1.0 + x);
    let log = y.ln();
    let v = 2.0 / (std::f32::consts::PI * 0.147f32) + 0.5 * log;
    let v2 = 1.0 / 0.147f32 * log;
    let v3 = -v + (v * v - v2).sqrt();
    std::f32::consts::SQRT_2 * (sgn * v3.sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_tests_follow_the_onnx_modes() {
        let node = |flags: u32| Node {
            threshold: 1.0,
            packed: flags,
            yes: 1,
            no: 2,
        };
        let leq = node(F_LT | F_EQ);
        assert!(leq.test(1.0) && leq.test(0.5) && !leq.test(1.5) && !leq.test(f32::NAN));
        assert_eq!(leq.test_leq(1.0), leq.test(1.0));
        let lt = node(F_LT);
        assert!(!lt.test(1.0) && lt.test(0.5));
        let gte = node(F_GT | F_EQ);
        assert!(gte.test(1.0) && gte.test(2.0) && !gte.test(0.0));
        let neq = node(F_LT | F_GT | F_UNORD);
        assert!(neq.test(f32::NAN) && !neq.test(1.0) && neq.test(3.0));
        let tracks = node(F_LT | F_EQ | F_XNAN);
        assert!(tracks.test(f32::NAN) && tracks.test_leq(f32::NAN));
        let nan_threshold = Node {
            threshold: f32::NAN,
            ..neq
        };
        assert!(nan_threshold.test(1.0), "x != NaN holds");
    }

    #[test]
    fn logistic_is_symmetric_and_bounded() {
        for x in [-30.0f32, -2.5, -1e-8, 0.0, 1e-8, 0.7, 2.5, 30.0] {
            let p = logistic(x);
            assert!((0.0..=1.0).contains(&p), "{x}: {p}");
            assert!((p + logistic(-x) - 1.0).abs() < 1e-6, "{x}");
        }
        assert_eq!(logistic(0.0), 0.5);
    }

    #[test]
    fn probit_inverts_the_normal_cdf_approximately() {
        assert!(probit(0.5).abs() < 1e-6);
        assert!((probit(0.975) - 1.96).abs() < 0.01, "{}", probit(0.975));
        assert!((probit(0.025) + 1.96).abs() < 0.01);
    }
}
