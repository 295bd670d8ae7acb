//! The compact layout of a fast-walked ensemble: trees [`WIDE`] at a time,
//! each padded to a perfect tree of its block's depth, so a node's children
//! are implicit (`2i + 1` when the split holds, `2i + 2` otherwise) and a
//! split is 8 bytes (threshold and the slot of the doubled row it reads).
//!
//! Block layout: the splits of node `i` of the block's trees lie side by
//! side (`i * WIDE + lane`), and so do its leaves (`j * WIDE + lane`, `j`
//! the leaf's place in the last level), so the top levels of 16 trees are a
//! few cache lines and the walk needs no child indices. A leaf above the
//! last level is copied into every leaf slot below it, and the splits
//! below it are placeholders (threshold 0 against slot 0): whichever way
//! they go, the walk ends at the same leaf.
//!
//! The walk runs on AVX-512 (16 trees a level, gathers) when the processor
//! has it and on scalar code otherwise; both make the same comparisons, so
//! they reach the same leaves, and the leaves are handed out in tree order
//! for the caller to sum in the order ONNX Runtime does.

use smallvec::SmallVec;

use super::ensemble::{FastMode, FastNode, Node, Tree};

/// A row laid out twice for the fast walks: on the stack for up to 32
/// inputs.
pub(crate) type Doubled = SmallVec<[f32; 64]>;

/// Lays the first `w` values of row `x` out twice in `xx` for the fast
/// walks, missing values as -inf in the first copy and +inf in the second,
/// padded to at least 64 values (the AVX-512 walk's registers).
#[inline(always)]
pub(crate) fn double(x: &[f32], w: usize, xx: &mut Doubled) {
    xx.clear();
    xx.resize((2 * w).max(64), 0.0);
    let (lo, hi) = xx.split_at_mut(w);
    for ((l, h), &v) in lo.iter_mut().zip(hi.iter_mut()).zip(&x[..w]) {
        (*l, *h) = if v.is_nan() {
            (f32::NEG_INFINITY, f32::INFINITY)
        } else {
            (v, v)
        };
    }
}

/// Trees a block walks side by side.
pub(crate) const WIDE: usize = 16;

/// The deepest block the compact layout pads (a perfect tree of this
/// depth has 1,023 splits); deeper trees take the general fast walk.
pub(crate) const MAX_DEPTH: u32 = 10;

/// One split: 8 bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
#[repr(C)]
pub(crate) struct Split {
    pub threshold: f32,
    /// The slot of the doubled row compared with `threshold`.
    pub index: u32,
}

/// Up to [`WIDE`] consecutive trees, padded to perfect trees of `depth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Block {
    /// Where its `(2^depth - 1) * WIDE` splits start in `splits`.
    pub splits: usize,
    /// Where its `2^depth * WIDE` leaf slots start in `leaves`.
    pub leaves: usize,
    pub depth: u32,
    /// Real trees (the other lanes are padding, their leaves ignored).
    pub len: usize,
}

/// A fast-walked ensemble in the compact layout.
#[derive(Debug, Clone)]
pub(crate) struct Compact {
    pub mode: FastMode,
    pub blocks: Vec<Block>,
    pub splits: Vec<Split>,
    /// Per leaf slot: the leaf's index in the ensemble's `nodes`.
    pub leaves: Vec<u32>,
    /// Per leaf slot: that node's `threshold` (its value on the
    /// single-weight path).
    pub values: Vec<f32>,
    /// Length of the doubled row the splits read (every `index` is below).
    pub row: usize,
    /// For doubled rows of up to 64 values, built in registers: per slot,
    /// the row value it holds (the slot, or the slot less the row's
    /// width), and `table_high` a bit per slot of the second copy (missing
    /// values there are +inf).
    pub table: [[i32; WIDE]; 4],
    pub table_high: u64,
    /// Walk with AVX-512 (detected when built; tests turn it off to check
    /// the scalar walk).
    pub avx512: bool,
}

impl Compact {
    /// The compact layout of the fast walk `fast` (same indices as
    /// `nodes`) over `trees`, reading a doubled row of `row` values; `None`
    /// when a block would be deeper than [`MAX_DEPTH`] or padding would
    /// take more than eight times the nodes, or if an index is broken (the
    /// importer never builds one).
    pub fn build(
        mode: FastMode,
        nodes: &[Node],
        fast: &[FastNode],
        trees: &[Tree],
        row: usize,
    ) -> Option<Compact> {
        if fast.len() != nodes.len() || row == 0 {
            return None;
        }
        let pad = nodes.iter().position(Node::is_leaf)?;
        let budget = 8 * nodes.len() + 64 * WIDE;
        let mut c = Compact {
            mode,
            blocks: Vec::with_capacity(trees.len().div_ceil(WIDE)),
            splits: Vec::new(),
            leaves: Vec::new(),
            values: Vec::new(),
            row,
            table: [[0; WIDE]; 4],
            table_high: 0,
            avx512: avx512_available(),
        };
        let w = row / 2;
        for slot in 0..row.min(64) {
            c.table[slot / WIDE][slot % WIDE] = (slot % w) as i32;
            if slot >= w {
                c.table_high |= 1 << slot;
            }
        }
        let placeholder = Split {
            threshold: 0.0,
            index: 0,
        };
        let mut at: Vec<u32> = Vec::new();
        for chunk in trees.chunks(WIDE) {
            let depth = chunk.iter().map(|t| t.depth).max()?;
            if depth > MAX_DEPTH {
                return None;
            }
            let inner = (1usize << depth) - 1;
            let block = Block {
                splits: c.splits.len(),
                leaves: c.leaves.len(),
                depth,
                len: chunk.len(),
            };
            if block.splits + block.leaves + (2 * inner + 1) * WIDE > budget {
                return None;
            }
            c.splits.resize(block.splits + inner * WIDE, placeholder);
            c.leaves
                .resize(block.leaves + (inner + 1) * WIDE, pad as u32);
            c.values.resize(block.leaves + (inner + 1) * WIDE, 0.0);
            for (lane, tree) in chunk.iter().enumerate() {
                // The node at each place of the perfect tree, level by level.
                at.clear();
                at.resize(2 * inner + 1, 0);
                at[0] = tree.root;
                for i in 0..inner {
                    let n = at[i];
                    let node = nodes.get(n as usize)?;
                    let (yes, no) = if node.is_leaf() {
                        (n, n)
                    } else {
                        let f = fast[n as usize];
                        c.splits[block.splits + i * WIDE + lane] = Split {
                            threshold: f.threshold,
                            index: f.index,
                        };
                        (node.yes, node.no)
                    };
                    at[2 * i + 1] = yes;
                    at[2 * i + 2] = no;
                }
                for j in 0..=inner {
                    let n = at[inner + j];
                    let node = nodes.get(n as usize)?;
                    if !node.is_leaf() {
                        // The tree is deeper than its recorded depth.
                        return None;
                    }
                    c.leaves[block.leaves + j * WIDE + lane] = n;
                    c.values[block.leaves + j * WIDE + lane] = node.threshold;
                }
            }
            c.blocks.push(block);
        }
        c.check().then_some(c)
    }

    /// The invariants the walks' unchecked reads rely on.
    fn check(&self) -> bool {
        let mut splits = 0;
        let mut leaves = 0;
        for b in &self.blocks {
            let inner = (1usize << b.depth) - 1;
            if b.depth > MAX_DEPTH || b.splits != splits || b.leaves != leaves || b.len > WIDE {
                return false;
            }
            splits += inner * WIDE;
            leaves += (inner + 1) * WIDE;
        }
        splits == self.splits.len()
            && leaves == self.leaves.len()
            && leaves <= i32::MAX as usize
            && leaves == self.values.len()
            && self.row.is_multiple_of(2)
            && self.splits.iter().all(|s| (s.index as usize) < self.row)
    }

    /// Walks row `x` (at least `row / 2` values, none infinite) down every
    /// tree and hands `sink` the leaf slots reached, a block at a time, in
    /// tree order: [`walk`](Self::walk) on `x` doubled.
    #[inline(always)]
    pub fn walk_row<S: Sink>(&self, x: &[f32], sink: S) -> S {
        let w = self.row / 2;
        assert!(
            x.len() >= w,
            "a row of {} values for trees reading {w}",
            x.len()
        );
        #[cfg(target_arch = "x86_64")]
        if self.avx512 && self.row <= 64 {
            // SAFETY: `avx512` is only set when the processor has AVX-512F
            // (`avx512_available`); `x` has `row / 2` values (above), and
            // the doubled row fits the registers.
            return unsafe {
                match self.mode {
                    FastMode::Leq => x86::walk_row::<false, S>(self, x, sink),
                    FastMode::Lt => x86::walk_row::<true, S>(self, x, sink),
                }
            };
        }
        let mut xx = Doubled::new();
        double(x, w, &mut xx);
        self.walk(&xx, sink)
    }

    /// Walks the doubled row `xx` down every tree and hands `sink` the
    /// leaf slots (indices into `leaves` and `values`) reached, a block at a
    /// time, in tree order.
    #[inline(always)]
    pub fn walk<S: Sink>(&self, xx: &[f32], sink: S) -> S {
        assert!(xx.len() >= self.row, "a doubled row of {} values", xx.len());
        #[cfg(target_arch = "x86_64")]
        if self.avx512 {
            // SAFETY: `avx512` is only set when the processor has AVX-512F
            // (`avx512_available`), and `xx` is as long as `row` (above).
            return unsafe {
                match self.mode {
                    FastMode::Leq => x86::walk::<false, S>(self, xx, sink),
                    FastMode::Lt => x86::walk::<true, S>(self, xx, sink),
                }
            };
        }
        match self.mode {
            FastMode::Leq => self.scalar::<false, S>(xx, sink),
            FastMode::Lt => self.scalar::<true, S>(xx, sink),
        }
    }

    /// The walk on scalar code: the trees of a block level by level.
    #[inline(always)]
    fn scalar<const LT: bool, S: Sink>(&self, xx: &[f32], mut sink: S) -> S {
        let mut slots = [0u32; WIDE];
        for b in &self.blocks {
            let inner = (1usize << b.depth) - 1;
            let splits = &self.splits[b.splits..b.splits + inner * WIDE];
            // Each lane's place in the block's splits, `node * 16 + lane`:
            // the "no" child's is `2 * place + 32 - lane`, the "yes"
            // child's 16 before.
            let mut at: [u32; WIDE] = std::array::from_fn(|lane| lane as u32);
            for _ in 0..b.depth {
                for (lane, a) in at.iter_mut().enumerate() {
                    // SAFETY: before step k of the walk `*a` is the place of
                    // a node of level k, at most 2^(k+1) - 2 < 2^depth - 1 =
                    // inner, so it is below `splits.len()`; every `index` is
                    // below `row` (`check`), at most `xx.len()`.
                    let s = unsafe { splits.get_unchecked(*a as usize) };
                    let v = unsafe { *xx.get_unchecked(s.index as usize) };
                    let go = if LT {
                        v < s.threshold
                    } else {
                        v <= s.threshold
                    };
                    *a = 2 * *a + (2 * WIDE - lane) as u32 - WIDE as u32 * u32::from(go);
                }
            }
            // After `depth` steps `*a` is the place of a node in the last
            // level, `inner ..= 2 * inner`.
            for (slot, &a) in slots.iter_mut().zip(&at) {
                *slot = (b.leaves + a as usize - inner * WIDE) as u32;
            }
            sink.block(self, &slots[..b.len]);
        }
        sink
    }
}

/// What a walk does with the leaves it reaches.
pub(crate) trait Sink {
    /// The sink wants the leaves' values (`values`) rather than their
    /// slots (`block`) from the AVX-512 walk.
    const VALUES: bool = false;

    /// The leaf slots of one block's trees, in tree order.
    fn block(&mut self, c: &Compact, slots: &[u32]);

    /// The values of one block's leaves, the first `len` in tree order
    /// (for a sink with `VALUES`).
    #[inline(always)]
    fn values(&mut self, _values: &[f32; WIDE], _len: usize) {}
}

/// A sink calling a function with each slot.
pub(crate) struct Each<F>(pub F);

impl<F: FnMut(usize)> Sink for Each<F> {
    #[inline(always)]
    fn block(&mut self, _: &Compact, slots: &[u32]) {
        for &s in slots {
            (self.0)(s as usize);
        }
    }
}

/// A sink summing the leaves' values in f32, tree after tree.
#[derive(Default)]
pub(crate) struct Sum(pub f32);

impl Sink for Sum {
    const VALUES: bool = true;

    #[inline(always)]
    fn block(&mut self, c: &Compact, slots: &[u32]) {
        for &s in slots {
            self.0 += c.values[s as usize];
        }
    }

    #[inline(always)]
    fn values(&mut self, values: &[f32; WIDE], len: usize) {
        if len == WIDE {
            for v in values {
                self.0 += v;
            }
        } else {
            for v in &values[..len.min(WIDE)] {
                self.0 += v;
            }
        }
    }
}

/// Whether the AVX-512 walk can run here.
fn avx512_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{Block, Compact, Sink, WIDE};

    /// Blocks of one depth walked side by side.
    const GROUP: usize = 4;

    /// [`Compact::walk`] with AVX-512: a block's 16 trees a level at a
    /// time, four blocks side by side where their depths agree, the splits
    /// of the top levels (to [`LOADED`]) loaded whole, the others gathered,
    /// the row's values picked from registers (doubled rows of up to 64
    /// values) or gathered.
    ///
    /// # Safety
    ///
    /// The processor has AVX-512F, and `xx.len() >= c.row`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn walk<const LT: bool, S: Sink>(c: &Compact, xx: &[f32], sink: S) -> S {
        // The doubled row in four registers when it fits.
        let in_registers = c.row <= 64 && xx.len() >= 64;
        let table = if in_registers {
            // SAFETY: `xx` has at least 64 values, four vectors of 16.
            unsafe {
                [
                    _mm512_loadu_ps(xx.as_ptr()),
                    _mm512_loadu_ps(xx.as_ptr().add(16)),
                    _mm512_loadu_ps(xx.as_ptr().add(32)),
                    _mm512_loadu_ps(xx.as_ptr().add(48)),
                ]
            }
        } else {
            [_mm512_setzero_ps(); 4]
        };
        let row = Row {
            xx,
            table: in_registers.then_some(table),
        };
        // SAFETY: AVX-512F is here (the caller's promise); `row` holds
        // `xx`, as long as `c.row`, or its values in registers.
        unsafe { groups::<LT, S>(c, &row, sink) }
    }

    /// [`Compact::walk_row`] with AVX-512: row `x` doubled in registers
    /// (permutes of its values, missing ones replaced by -inf or +inf),
    /// then walked as [`walk`] walks.
    ///
    /// # Safety
    ///
    /// The processor has AVX-512F, `c.row <= 64` and `x.len() >= c.row / 2`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn walk_row<const LT: bool, S: Sink>(c: &Compact, x: &[f32], sink: S) -> S {
        let w = c.row / 2;
        let first = (1u32 << w.min(16)) - 1;
        let second = (1u32 << w.saturating_sub(16).min(16)) - 1;
        // SAFETY: the loads read lanes below `w` only (the masks), which
        // `x` has; the others are not accessed.
        let (x0, x1) = unsafe {
            (
                _mm512_maskz_loadu_ps(first as u16, x.as_ptr()),
                _mm512_maskz_loadu_ps(second as u16, x.as_ptr().wrapping_add(16)),
            )
        };
        let low = _mm512_set1_ps(f32::NEG_INFINITY);
        let high = _mm512_set1_ps(f32::INFINITY);
        let mut table = [_mm512_setzero_ps(); 4];
        for (k, t) in table.iter_mut().enumerate() {
            // SAFETY: `c.table[k]` holds 16 i32s.
            let index = unsafe { _mm512_loadu_si512(c.table[k].as_ptr().cast()) };
            let v = _mm512_permutex2var_ps(x0, index, x1);
            let missing = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v);
            let second = (c.table_high >> (16 * k)) as u16;
            let v = _mm512_mask_mov_ps(v, missing & !second, low);
            *t = _mm512_mask_mov_ps(v, missing & second, high);
        }
        let row = Row {
            xx: &[],
            table: Some(table),
        };
        // SAFETY: AVX-512F is here (the caller's promise); the doubled row
        // is in registers.
        unsafe { groups::<LT, S>(c, &row, sink) }
    }

    /// The blocks walked a group at a time.
    ///
    /// # Safety
    ///
    /// The processor has AVX-512F, and `row` holds the doubled row: in
    /// registers, or `xx` at least `c.row` long.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn groups<const LT: bool, S: Sink>(c: &Compact, row: &Row, mut sink: S) -> S {
        let blocks = &c.blocks[..];
        // Each group's leaves are handed to the sink while the next group
        // is walked, a block a level, so the sink's work (a chain of
        // dependent additions, for a sum) overlaps the walk.
        let mut pending: Option<Leaves<'_>> = None;
        let mut i = 0;
        while i < blocks.len() {
            let depth = blocks[i].depth;
            let prev = pending.take();
            let (leaves, s) = if let Some(group) = blocks.get(i..i + GROUP)
                && group.iter().all(|b| b.depth == depth)
            {
                i += GROUP;
                // SAFETY: AVX-512F is here and `row` holds the doubled row
                // (the caller's promises).
                unsafe { run::<LT, GROUP, S>(c, group, row, prev, sink) }
            } else {
                i += 1;
                // SAFETY: as above.
                unsafe { run::<LT, 1, S>(c, &blocks[i - 1..i], row, prev, sink) }
            };
            sink = s;
            pending = Some(leaves);
        }
        if let Some(p) = pending {
            for k in 0..p.blocks.len() {
                sink = hand(c, &p, k, sink);
            }
        }
        sink
    }

    /// The leaves a group of blocks reached: per block its leaves' slots,
    /// or their values (bits) for a sink with `VALUES`.
    struct Leaves<'a> {
        blocks: &'a [Block],
        leaves: [__m512i; GROUP],
    }

    /// Hands block `k` of a group's leaves to the sink.
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn hand<S: Sink>(c: &Compact, p: &Leaves<'_>, k: usize, mut sink: S) -> S {
        let (b, v) = (&p.blocks[k], p.leaves[k]);
        if S::VALUES {
            let mut values = [0f32; WIDE];
            // SAFETY: `values` holds 16 f32s.
            unsafe { _mm512_storeu_ps(values.as_mut_ptr(), _mm512_castsi512_ps(v)) };
            sink.values(&values, b.len);
        } else {
            let mut slots = [0u32; WIDE];
            // SAFETY: `slots` holds 16 u32s.
            unsafe { _mm512_storeu_si512(slots.as_mut_ptr().cast(), v) };
            sink.block(c, &slots[..b.len]);
        }
        sink
    }

    /// The doubled row, and its values in registers when it has at most 64.
    struct Row<'a> {
        xx: &'a [f32],
        table: Option<[__m512; 4]>,
    }

    /// `K` blocks of one depth walked together (`bs.len() == K`), handing
    /// the sink a block of `prev` (the group before) a level.
    ///
    /// # Safety
    ///
    /// The processor has AVX-512F, and `row` holds the doubled row: in
    /// registers, or `xx` at least `c.row` long.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn run<'a, const LT: bool, const K: usize, S: Sink>(
        c: &Compact,
        bs: &'a [Block],
        row: &Row,
        prev: Option<Leaves<'a>>,
        mut sink: S,
    ) -> (Leaves<'a>, S) {
        let lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        let odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
        // A lane's place in the block's splits, `node * 16 + lane`, moves to
        // the "no" child's, `(2 * node + 2) * 16 + lane`, by doubling and
        // adding `32 - lane`; to the "yes" child's, 16 before.
        let advance = _mm512_sub_epi32(_mm512_set1_epi32(32), lane);
        let sixteen = _mm512_set1_epi32(16);
        let high = _mm512_set1_epi32(32);
        let xx = row.xx;
        // One level: the 16 splits (lanes 0-7 in `lo`, 8-15 in `hi`, each
        // 8 bytes) applied at the lanes' places `at`, giving their
        // children's.
        let step = |lo: __m512i, hi: __m512i, at: __m512i| {
            let threshold = _mm512_castsi512_ps(_mm512_permutex2var_epi32(lo, even, hi));
            let index = _mm512_permutex2var_epi32(lo, odd, hi);
            let x = match row.table {
                Some([t0, t1, t2, t3]) => {
                    // The permutes read the low five bits of `index` (below
                    // 64 here); bit 5 picks the pair of registers.
                    let a = _mm512_permutex2var_ps(t0, index, t1);
                    let b = _mm512_permutex2var_ps(t2, index, t3);
                    _mm512_mask_blend_ps(_mm512_test_epi32_mask(index, high), a, b)
                }
                // SAFETY: without registers `xx` is the doubled row, and
                // every `index` is below `c.row` (`check`), at most its
                // length.
                None => unsafe { _mm512_i32gather_ps::<4>(index, xx.as_ptr()) },
            };
            let go = if LT {
                _mm512_cmp_ps_mask::<_CMP_LT_OQ>(x, threshold)
            } else {
                _mm512_cmp_ps_mask::<_CMP_LE_OQ>(x, threshold)
            };
            let next = _mm512_add_epi32(_mm512_add_epi32(at, at), advance);
            _mm512_mask_sub_epi32(next, go, next, sixteen)
        };
        let depth = bs[0].depth;
        let inner = (1usize << depth) - 1;
        let mut base = [std::ptr::null::<i64>(); K];
        for (p, b) in base.iter_mut().zip(bs) {
            *p = c.splits[b.splits..b.splits + inner * WIDE].as_ptr().cast();
        }
        let mut handed = Handing { prev, done: 0 };
        // Every lane at node 0.
        let mut at = [lane; K];
        if depth >= 1 {
            for k in 0..K {
                // Level 0: node 0 of every lane, splits 0..16.
                // SAFETY: the block has `inner * 16 >= 16` splits.
                let (lo, hi) = unsafe {
                    (
                        _mm512_loadu_epi64(base[k]),
                        _mm512_loadu_epi64(base[k].add(8)),
                    )
                };
                at[k] = step(lo, hi, at[k]);
            }
            sink = handed.next(c, sink);
        }
        // Levels 1 to `LOADED`: the splits of every node of the level loaded
        // (2, 4 nodes) and each lane's picked by blends on the bits of its
        // place in the level.
        macro_rules! loaded {
            ($level:literal) => {
                if depth > $level {
                    for k in 0..K {
                        // SAFETY: the level's nodes, `2^level - 1 ..
                        // 2^(level+1) - 1`, are below `inner` (the level is
                        // above the last), and every lane is at one.
                        let (lo, hi) = unsafe { pick::<$level>(base[k], at[k], lane) };
                        at[k] = step(lo, hi, at[k]);
                    }
                    sink = handed.next(c, sink);
                }
            };
        }
        loaded!(1);
        loaded!(2);
        for _ in LOADED + 1..depth {
            for k in 0..K {
                let pos = at[k];
                // SAFETY: as in the scalar walk, every lane's node at this
                // level (above the last) is below `inner`, so its place
                // `pos` (node * 16 + lane) is below the block's split count,
                // and each 8-byte split is read whole at `base + 8 * pos`.
                let (lo, hi) = unsafe {
                    (
                        _mm512_i32gather_epi64::<8>(_mm512_castsi512_si256(pos), base[k]),
                        _mm512_i32gather_epi64::<8>(_mm512_extracti64x4_epi64::<1>(pos), base[k]),
                    )
                };
                at[k] = step(lo, hi, at[k]);
            }
            sink = handed.next(c, sink);
        }
        while handed.left() {
            sink = handed.next(c, sink);
        }
        let mut leaves = [_mm512_setzero_si512(); GROUP];
        for ((b, at), out) in bs.iter().zip(at).zip(&mut leaves) {
            // The leaf slot: the block's first, plus (node - inner) * 16 +
            // lane, that is `at - inner * 16` (`check` keeps slots within
            // i32).
            let first = (b.leaves as i32).wrapping_sub((inner * WIDE) as i32);
            let slot = _mm512_add_epi32(at, _mm512_set1_epi32(first));
            *out = if S::VALUES {
                // SAFETY: a slot is below the block's last, `b.leaves +
                // (inner + 1) * 16`, at most `values.len()` (`check`).
                unsafe { _mm512_castps_si512(_mm512_i32gather_ps::<4>(slot, c.values.as_ptr())) }
            } else {
                slot
            };
        }
        (Leaves { blocks: bs, leaves }, sink)
    }

    /// The deepest level whose splits are loaded whole rather than
    /// gathered.
    const LOADED: u32 = 2;

    /// The splits at the lanes' places `at` (`node * 16 + lane`), every
    /// node of level `LEVEL` (1 to [`LOADED`]) of a block whose splits start
    /// at `base`: lanes 0-7 and 8-15.
    ///
    /// # Safety
    ///
    /// The block has the level's splits, `(2^(LEVEL+1) - 1) * 16` from
    /// `base`, and every lane of `at` is at a node of the level.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn pick<const LEVEL: u32>(
        base: *const i64,
        at: __m512i,
        lane: __m512i,
    ) -> (__m512i, __m512i) {
        let first = (1usize << LEVEL) - 1;
        let count = 1usize << LEVEL;
        // The lane's node's place in the level, times 16: bit by bit from
        // bit 4.
        let place = _mm512_sub_epi32(
            at,
            _mm512_add_epi32(lane, _mm512_set1_epi32((first * WIDE) as i32)),
        );
        let mut lo = [_mm512_setzero_si512(); 1 << LOADED];
        let mut hi = [_mm512_setzero_si512(); 1 << LOADED];
        for j in 0..count {
            // SAFETY: node `first + j` is of the level, its 16 splits
            // within the block (the caller's promise).
            unsafe {
                lo[j] = _mm512_loadu_epi64(base.add((first + j) * 16));
                hi[j] = _mm512_loadu_epi64(base.add((first + j) * 16 + 8));
            }
        }
        let mut n = count;
        let mut bit = 0;
        while n > 1 {
            let m = _mm512_test_epi32_mask(place, _mm512_set1_epi32(16 << bit));
            let (mlo, mhi) = (m as u8, (m >> 8) as u8);
            for j in 0..n / 2 {
                lo[j] = _mm512_mask_blend_epi64(mlo, lo[2 * j], lo[2 * j + 1]);
                hi[j] = _mm512_mask_blend_epi64(mhi, hi[2 * j], hi[2 * j + 1]);
            }
            n /= 2;
            bit += 1;
        }
        (lo[0], hi[0])
    }

    /// The blocks of a group handed so far.
    struct Handing<'a> {
        prev: Option<Leaves<'a>>,
        done: usize,
    }

    impl Handing<'_> {
        fn left(&self) -> bool {
            self.prev
                .as_ref()
                .is_some_and(|p| self.done < p.blocks.len())
        }

        /// Hands the next block, if any.
        #[target_feature(enable = "avx512f")]
        #[inline]
        fn next<S: Sink>(&mut self, c: &Compact, sink: S) -> S {
            match &self.prev {
                Some(p) if self.done < p.blocks.len() => {
                    self.done += 1;
                    hand(c, p, self.done - 1, sink)
                }
                _ => sink,
            }
        }
    }
}
