//! Exact path-dependent TreeSHAP (Lundberg, Erion and Lee, "Consistent
//! individualized feature attribution for tree ensembles", algorithm 2),
//! computing what `shap.TreeExplainer` computes with
//! `feature_perturbation="tree_path_dependent"`: each input's contribution
//! to the model's margin, such that the contributions plus the base value
//! (the cover-weighted mean margin) equal the row's margin.
//!
//! The algorithm weighs each branch by its cover, the share of training
//! rows that reached it. An ONNX file does not carry covers; the training
//! tools write them beside the manifest (see [`Covers`]).

use std::path::Path;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::ensemble::{Aggregate, Ensemble};

/// The largest covers file accepted.
pub const MAX_COVERS_BYTES: u64 = 64 << 20;
/// The deepest tree explained.
const MAX_SHAP_DEPTH: u32 = 64;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CoversFile {
    format: String,
    model_sha256: String,
    covers: Vec<f64>,
}

/// The covers of a model's nodes: one number a node, in the order of the
/// tree-ensemble operator's `nodes_*` lists, with the SHA-256 of the model
/// file they belong to.
///
/// ```json
/// {"format": "verdict-covers-1", "model_sha256": "9f2c…", "covers": [158394, 120001, …]}
/// ```
#[derive(Debug, Clone)]
pub struct Covers {
    covers: Vec<f64>,
}

impl Covers {
    /// Reads a covers file and checks it belongs to `model_bytes`.
    pub(crate) fn load(path: &Path, model_bytes: &[u8]) -> Result<Covers, String> {
        let meta = std::fs::metadata(path).map_err(|e| format!("cannot read it: {e}"))?;
        if meta.len() > MAX_COVERS_BYTES {
            return Err(format!(
                "it is {} bytes, more than the {MAX_COVERS_BYTES} allowed",
                meta.len()
            ));
        }
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read it: {e}"))?;
        let file: CoversFile =
            serde_json::from_str(&text).map_err(|e| format!("not a covers file: {e}"))?;
        if file.format != "verdict-covers-1" {
            return Err(format!(
                "format `{}`, expected `verdict-covers-1`",
                file.format
            ));
        }
        let digest = Sha256::digest(model_bytes);
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        if !file.model_sha256.eq_ignore_ascii_case(&hex) {
            return Err(format!(
                "it was written for another model file (sha256 {}, the model's is {hex}); rerun the training tools",
                file.model_sha256
            ));
        }
        if let Some(bad) = file.covers.iter().find(|c| !c.is_finite() || **c < 0.0) {
            return Err(format!(
                "a cover of {bad}; covers are finite and not negative"
            ));
        }
        Ok(Covers {
            covers: file.covers,
        })
    }
}

/// An ensemble's explanation data: per flattened node its cover, per tree
/// the cover-weighted mean of its leaves.
#[derive(Debug, Clone)]
pub(crate) struct Explainer {
    cover: Vec<f64>,
    /// The base value: the ensemble's base value for the explained column
    /// plus every tree's expected leaf value.
    pub base_value: f64,
    /// The output column explained.
    pub column: u32,
    /// Longest path, for the path buffer.
    depth: u32,
}

#[derive(Debug, Clone, Copy, Default)]
struct PathElement {
    feature: i64,
    zero: f64,
    one: f64,
    pweight: f64,
}

impl Explainer {
    /// Checks that the ensemble can be explained with these covers.
    pub fn new(e: &Ensemble, covers: &Covers, source_nodes: usize) -> Result<Explainer, String> {
        if covers.covers.len() != source_nodes {
            return Err(format!(
                "it has {} covers, the model has {source_nodes} nodes",
                covers.covers.len()
            ));
        }
        let Some(column) = e.single else {
            return Err(
                "the trees write several output columns; explanations cover single-output ensembles"
                    .into(),
            );
        };
        if e.aggregate != Aggregate::Sum {
            return Err(
                "the trees are averaged or take a minimum or maximum; explanations cover sums"
                    .into(),
            );
        }
        if matches!(e.kind, super::ensemble::Kind::Classifier { .. })
            && e.outputs == 2
            && e.base.len() >= 2
        {
            return Err(
                "a two-class classifier with two base values (ONNX Runtime derives one class from the other)"
                    .into(),
            );
        }
        if e.shared {
            return Err("a node belongs to two trees or two parents".into());
        }
        let cover: Vec<f64> = e
            .source
            .iter()
            .map(|&s| covers.covers[s as usize])
            .collect();
        for (i, n) in e.nodes.iter().enumerate() {
            if !n.is_leaf() && cover[i] <= 0.0 {
                return Err(format!(
                    "a split has cover {}; a split's cover is positive",
                    cover[i]
                ));
            }
        }
        let mut depth = 0;
        let mut expected = 0.0f64;
        for t in &e.trees {
            if t.depth > MAX_SHAP_DEPTH {
                return Err(format!("a tree deeper than {MAX_SHAP_DEPTH}"));
            }
            depth = depth.max(t.depth);
            expected += expectation(e, &cover, t.root);
        }
        let mut explainer = Explainer {
            cover,
            base_value: 0.0,
            column,
            depth,
        };
        explainer.base_value = explainer.base_only(e) + expected;
        Ok(explainer)
    }

    /// Adds each input's contribution for row `x` to `phi` (one slot per
    /// input, zeroed by the caller) and returns the margin the trees give,
    /// computed in f64.
    pub fn explain(&self, e: &Ensemble, x: &[f32], phi: &mut [f64]) -> f64 {
        let d = self.depth as usize + 2;
        let mut path = vec![PathElement::default(); d * (d + 1) / 2 + d];
        let mut margin = self.base_only(e);
        for t in &e.trees {
            recurse(
                e,
                &self.cover,
                x,
                phi,
                t.root,
                &mut path,
                0,
                0,
                1.0,
                1.0,
                -1,
            );
            margin += tree_value(e, x, t.root);
        }
        margin
    }

    fn base_only(&self, e: &Ensemble) -> f64 {
        match e.base.len() {
            0 => 0.0,
            1 => f64::from(e.base[0]),
            _ => f64::from(*e.base.get(self.column as usize).unwrap_or(&0.0)),
        }
    }
}

fn tree_value(e: &Ensemble, x: &[f32], root: u32) -> f64 {
    let mut at = root as usize;
    loop {
        let n = &e.nodes[at];
        if n.is_leaf() {
            return f64::from(n.threshold);
        }
        at = if n.test(x[n.feature()]) { n.yes } else { n.no } as usize;
    }
}

/// The cover-weighted mean of a subtree's leaves, as shap's
/// `compute_expectations` (weights of the children, not of the node).
fn expectation(e: &Ensemble, cover: &[f64], root: u32) -> f64 {
    // Post-order without recursion: (node, children done?).
    let mut stack = vec![(root, false)];
    let mut results: Vec<f64> = Vec::new();
    while let Some((at, done)) = stack.pop() {
        let n = &e.nodes[at as usize];
        if n.is_leaf() {
            results.push(f64::from(n.threshold));
            continue;
        }
        if !done {
            stack.push((at, true));
            stack.push((n.no, false));
            stack.push((n.yes, false));
            continue;
        }
        let no = results.pop().unwrap_or(0.0);
        let yes = results.pop().unwrap_or(0.0);
        let (cy, cn) = (cover[n.yes as usize], cover[n.no as usize]);
        results.push(if cy == 0.0 && cn == 0.0 {
            0.0
        } else {
            (cy * yes + cn * no) / (cy + cn)
        });
    }
    results.pop().unwrap_or(0.0)
}

fn extend(path: &mut [PathElement], depth: usize, zero: f64, one: f64, feature: i64) {
    path[depth] = PathElement {
        feature,
        zero,
        one,
        pweight: if depth == 0 { 1.0 } else { 0.0 },
    };
    let d1 = (depth + 1) as f64;
    for i in (0..depth).rev() {
        path[i + 1].pweight += one * path[i].pweight * (i + 1) as f64 / d1;
        path[i].pweight = zero * path[i].pweight * (depth - i) as f64 / d1;
    }
}

fn unwind(path: &mut [PathElement], depth: usize, index: usize) {
    let one = path[index].one;
    let zero = path[index].zero;
    let mut next = path[depth].pweight;
    let d1 = (depth + 1) as f64;
    for i in (0..depth).rev() {
        if one != 0.0 {
            let tmp = path[i].pweight;
            path[i].pweight = next * d1 / ((i + 1) as f64 * one);
            next = tmp - path[i].pweight * zero * (depth - i) as f64 / d1;
        } else {
            path[i].pweight = path[i].pweight * d1 / (zero * (depth - i) as f64);
        }
    }
    for i in index..depth {
        path[i].feature = path[i + 1].feature;
        path[i].zero = path[i + 1].zero;
        path[i].one = path[i + 1].one;
    }
}

/// The unwound sum of element `index` of a path.
fn unwound_sum(path: &[PathElement], depth: usize, index: usize) -> f64 {
    let one = path[index].one;
    let zero = path[index].zero;
    let mut next = path[depth].pweight;
    let mut total = 0.0;
    if one != 0.0 {
        for i in (0..depth).rev() {
            let tmp = next / ((i + 1) as f64 * one);
            total += tmp;
            next = path[i].pweight - tmp * zero * (depth - i) as f64;
        }
    } else {
        for i in (0..depth).rev() {
            total += path[i].pweight / (zero * (depth - i) as f64);
        }
    }
    total * (depth + 1) as f64
}

/// A leaf's step: adds to `phi` the contribution of each element `1..=depth`
/// of its path, `unwound_sum(path, depth, i) * (one - zero) * value`, in
/// element order. On AVX-512 the unwound sums are computed eight at a time
/// ([`x86::leaf`]), to the same bits.
#[inline]
fn leaf(path: &[PathElement], depth: usize, value: f64, phi: &mut [f64]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the processor has AVX-512F (just checked).
        unsafe { x86::leaf(path, depth, value, phi) };
        return;
    }
    for i in 1..=depth {
        let w = unwound_sum(path, depth, i);
        let el = path[i];
        phi[el.feature as usize] += w * (el.one - el.zero) * value;
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::PathElement;

    /// [`super::leaf`] with AVX-512: the unwound sums of eight elements side
    /// by side, each lane making exactly the operations `unwound_sum` makes
    /// for its element (a lane picks its branch's dividend and divisor by
    /// its mask, then divides), so each sum is the same bits; the lanes'
    /// divisions, a chain each, run together rather than one after another.
    ///
    /// # Safety
    ///
    /// The processor has AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn leaf(path: &[PathElement], depth: usize, value: f64, phi: &mut [f64]) {
        let mut first = 1;
        while first <= depth {
            let n = (depth + 1 - first).min(8);
            // Unused lanes: as an element with `one = zero = 1`, discarded.
            let (mut one, mut zero) = ([1.0f64; 8], [1.0f64; 8]);
            for (l, el) in path[first..first + n].iter().enumerate() {
                one[l] = el.one;
                zero[l] = el.zero;
            }
            // SAFETY: `one` and `zero` hold 8 f64s each.
            let (one, zero) = unsafe {
                (
                    _mm512_loadu_pd(one.as_ptr()),
                    _mm512_loadu_pd(zero.as_ptr()),
                )
            };
            // `one != 0.0`, as the scalar test (true for NaN too).
            let hot = _mm512_cmp_pd_mask::<_CMP_NEQ_UQ>(one, _mm512_setzero_pd());
            let mut next = _mm512_set1_pd(path[depth].pweight);
            let mut total = _mm512_setzero_pd();
            for i in (0..depth).rev() {
                let pweight = _mm512_set1_pd(path[i].pweight);
                let below = _mm512_set1_pd((i + 1) as f64);
                let above = _mm512_set1_pd((depth - i) as f64);
                // Hot lanes: `next / ((i + 1) * one)`; cold ones:
                // `pweight / (zero * (depth - i))`.
                let dividend = _mm512_mask_blend_pd(hot, pweight, next);
                let divisor = _mm512_mask_blend_pd(
                    hot,
                    _mm512_mul_pd(zero, above),
                    _mm512_mul_pd(below, one),
                );
                let q = _mm512_div_pd(dividend, divisor);
                total = _mm512_add_pd(total, q);
                // Hot lanes: `pweight - q * zero * (depth - i)`.
                let carried = _mm512_sub_pd(pweight, _mm512_mul_pd(_mm512_mul_pd(q, zero), above));
                next = _mm512_mask_blend_pd(hot, next, carried);
            }
            let mut sums = [0.0f64; 8];
            // SAFETY: `sums` holds 8 f64s.
            unsafe { _mm512_storeu_pd(sums.as_mut_ptr(), total) };
            for (l, el) in path[first..first + n].iter().enumerate() {
                let w = sums[l] * (depth + 1) as f64;
                phi[el.feature as usize] += w * (el.one - el.zero) * value;
            }
            first += 8;
        }
    }
}

/// One step of the recursion. `path` holds the parent's path at its start;
/// this node's copy goes right after it.
#[allow(clippy::too_many_arguments)]
fn recurse(
    e: &Ensemble,
    cover: &[f64],
    x: &[f32],
    phi: &mut [f64],
    at: u32,
    buffer: &mut [PathElement],
    offset: usize,
    parent_depth: usize,
    zero: f64,
    one: f64,
    feature: i64,
) {
    // This node's path: a copy of the parent's, extended.
    let depth = parent_depth;
    let (parent, rest) = buffer.split_at_mut(offset + depth + 1);
    let path_len = depth + 1;
    let own = &mut rest[..];
    own[..path_len].copy_from_slice(&parent[offset..offset + path_len]);
    let path = own;
    extend(path, depth, zero, one, feature);
    let n = &e.nodes[at as usize];
    if n.is_leaf() {
        leaf(path, depth, f64::from(n.threshold), phi);
        return;
    }
    let split = n.feature() as i64;
    let (hot, cold) = if n.test(x[n.feature()]) {
        (n.yes, n.no)
    } else {
        (n.no, n.yes)
    };
    let w = cover[at as usize];
    let hot_zero = cover[hot as usize] / w;
    let cold_zero = cover[cold as usize] / w;
    let mut incoming_zero = 1.0;
    let mut incoming_one = 1.0;
    let mut depth = depth;
    if let Some(k) = (0..=depth).find(|&k| path[k].feature == split) {
        incoming_zero = path[k].zero;
        incoming_one = path[k].one;
        unwind(path, depth, k);
        depth -= 1;
    }
    let child_offset = offset + parent_depth + 1;
    recurse(
        e,
        cover,
        x,
        phi,
        hot,
        buffer,
        child_offset,
        depth + 1,
        hot_zero * incoming_zero,
        incoming_one,
        split,
    );
    recurse(
        e,
        cover,
        x,
        phi,
        cold,
        buffer,
        child_offset,
        depth + 1,
        cold_zero * incoming_zero,
        0.0,
        split,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A path of `depth + 1` elements as the recursion builds them: each
    /// element's `one` is 0 or 1, its `zero` a share of a cover.
    fn path(elements: &[(bool, f64)]) -> Vec<PathElement> {
        let mut path = vec![PathElement::default(); elements.len() + 1];
        extend(&mut path, 0, 1.0, 1.0, -1);
        for (d, &(hot, zero)) in elements.iter().enumerate() {
            extend(
                &mut path,
                d + 1,
                zero,
                if hot { 1.0 } else { 0.0 },
                d as i64,
            );
        }
        path
    }

    proptest! {
        /// A leaf's contributions, computed side by side, are the bits one
        /// unwound sum at a time gives.
        #[test]
        fn a_leaf_adds_what_one_unwound_sum_at_a_time_adds(
            elements in prop::collection::vec((any::<bool>(), 0.0f64..=1.0), 0..20),
            value in -3.0f64..3.0,
        ) {
            let depth = elements.len();
            let path = path(&elements);
            let mut got = vec![0.0f64; depth + 1];
            leaf(&path, depth, value, &mut got);
            let mut want = vec![0.0f64; depth + 1];
            for i in 1..=depth {
                let w = unwound_sum(&path, depth, i);
                let el = path[i];
                want[el.feature as usize] += w * (el.one - el.zero) * value;
            }
            let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            prop_assert_eq!(bits(&got), bits(&want));
        }
    }
}
