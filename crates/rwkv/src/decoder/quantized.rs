//! Block-quantised matrices (int8 / 4-bit) times block-quantised activations in integer
//! arithmetic, as llama.cpp multiplies Q8_0 / Q4_0 weights by Q8_0 activations: the decoder's
//! `--decoder i8|q4` path for steps and prompts alike.
//!
//! Each row of an activation `x` is quantised as int8 weights are, in blocks of [`BLOCK`] with
//! one f32 scale (`max|x| / 127`, ties rounded to even). A product is then, for output `o`,
//! `y[o] = Σ_b sw[o, b]·sx[b]·Σ_{i ∈ b} w_q[o, i]·x_q[i]`: the inner sums are exact 32-bit
//! integers (at most 32·255·127 in magnitude), the outer sum runs over the blocks in order with
//! one fused multiply-add each. The vector kernels and the plain reference
//! ([`Packed::matmul_reference`]) do exactly these operations in this order, so they agree bit
//! for bit, and a prompt (many rows) equals its tokens stepped one by one.
//!
//! # Layout
//!
//! Rows are taken in groups of [`GROUP`] (the last group padded with zero rows) and inputs in
//! blocks of [`BLOCK`] (the last block padded with zeros), so that one 32-byte load holds four
//! consecutive inputs of eight rows, the operand of one `vpdpbusd` (AVX-512 VNNI) or
//! `vpmaddubsw` + `vpmaddwd` (AVX2) against four activation bytes broadcast:
//!
//! - int8: per group and block 256 bytes; byte `(c·8 + r)·4 + j` is row `r`'s weight at input
//!   `4c + j` of the block, plus 128 (an unsigned byte, as `vpdpbusd` wants; the 128·Σx it adds is
//!   taken off before scaling).
//! - 4-bit: per group and block 128 bytes; byte `(c·8 + r)·4 + j` (`c < 4`) holds row `r`'s code
//!   (`0..16`, value `code − 8`) at input `4c + j` in its low nibble and at input `16 + 4c + j` in
//!   its high nibble (the 8·Σx the offset adds is taken off before scaling).
//! - scales: per group and block the eight rows' f32 scales.
//!
//! # Shapes
//!
//! A matrix is `[out, in]`; activations `[t, in]` → `y` `[t, out]` (row-major).

use visualrwkv_checkpoint::quant::{BLOCK, Quant, as_i8_mut, quantize_row_q4, quantize_row_q8};

/// Rows per group: the eight 32-bit lanes of one 256-bit register.
pub(crate) const GROUP: usize = 8;

/// Rows of activations quantised in blocks of [`BLOCK`] (Q8_0 with f32 scales).
///
/// # Shapes
///
/// `q` `[t, blocks·32]` (zero padded), `scales` `[t, blocks]`, `sums` `[t, blocks]` (Σ of each
/// block's codes).
#[derive(Clone, Debug, Default)]
pub(crate) struct Activations {
    q: Vec<i8>,
    scales: Vec<f32>,
    sums: Vec<i32>,
    blocks: usize,
}

impl Activations {
    /// `t` rows of `x` `[t, inp]` quantised.
    pub(crate) fn quantize(x: &[f32], t: usize, inp: usize) -> Self {
        let blocks = inp.div_ceil(BLOCK);
        let mut a =
            Self { q: vec![0; t * blocks * BLOCK], scales: vec![0.0; t * blocks], sums: vec![0; t * blocks], blocks };
        if inp == 0 {
            return a;
        }
        let blocks_of = a.q.chunks_mut(BLOCK).zip(a.scales.iter_mut()).zip(a.sums.iter_mut());
        let x_blocks = x[..t * inp].chunks(inp).flat_map(|row| row.chunks(BLOCK));
        for (((q, scale), sum), x) in blocks_of.zip(x_blocks) {
            (*scale, *sum) = quantize_block(x, q);
        }
        a
    }

    fn rows(&self) -> usize {
        self.scales.len().checked_div(self.blocks).unwrap_or(0)
    }
}

/// One block of activations `x` (up to [`BLOCK`] values) as int8 codes `q`: the scale
/// `max|x| / 127` and each value the nearest multiple of it (ties to even), as
/// [`quantize_row_q8`] does for weights but in plain arithmetic that vectorises (`f32::round` is a
/// library call on baseline x86-64, and a step quantises every matrix input). Returns the scale
/// and the sum of the codes.
#[inline]
fn quantize_block(x: &[f32], q: &mut [i8]) -> (f32, i32) {
    // Adding and taking off 1.5·2²³ rounds |v| < 2²² to an integer, ties to even.
    const ROUND: f32 = 12_582_912.0;
    let max = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let inv = if max > 0.0 { 127.0 / max } else { 0.0 };
    let mut sum = 0;
    for (q, &v) in q.iter_mut().zip(x) {
        *q = ((v * inv + ROUND) - ROUND) as i8;
        sum += i32::from(*q);
    }
    (max / 127.0, sum)
}

/// A block-quantised matrix in the interleaved layout above.
#[derive(Clone, Debug)]
pub(crate) struct Packed {
    quant: Quant,
    out: usize,
    inp: usize,
    blocks: usize,
    codes: Vec<u8>,
    scales: Vec<f32>,
}

/// Bytes of codes per group and block.
const fn block_bytes(quant: Quant) -> usize {
    match quant {
        Quant::Q8 => GROUP * BLOCK,
        Quant::Q4 => GROUP * BLOCK / 2,
    }
}

/// A pointer written by several threads at disjoint places.
#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: used only to write disjoint elements from rayon tasks that end before the owner reads.
unsafe impl Send for SendPtr {}
// SAFETY: as above.
unsafe impl Sync for SendPtr {}

impl Packed {
    /// Quantises the output-major `w` `[out, inp]` and interleaves it, a group of rows at a time
    /// (one group's row-major codes are the only temporary).
    pub(crate) fn new(w: &[f32], inp: usize, out: usize, quant: Quant) -> Self {
        use rayon::prelude::*;
        let (blocks, groups) = (inp.div_ceil(BLOCK), out.div_ceil(GROUP));
        let bb = block_bytes(quant);
        let mut codes = vec![0u8; groups * blocks * bb];
        let mut scales = vec![0f32; groups * blocks * GROUP];
        if blocks > 0 {
            codes.par_chunks_mut(blocks * bb).zip(scales.par_chunks_mut(blocks * GROUP)).enumerate().for_each(
                |(g, (codes, scales))| {
                    let (rb, zero) = (quant.row_bytes(inp), if quant == Quant::Q8 { 0 } else { 0x88 });
                    let mut rows = vec![zero; GROUP * rb];
                    let mut row_scales = vec![0f32; GROUP * blocks];
                    for r in 0..GROUP.min(out - g * GROUP) {
                        let o = g * GROUP + r;
                        let (w, s) = (&w[o * inp..(o + 1) * inp], &mut row_scales[r * blocks..(r + 1) * blocks]);
                        match quant {
                            Quant::Q8 => quantize_row_q8(w, as_i8_mut(&mut rows[r * rb..(r + 1) * rb]), s),
                            Quant::Q4 => quantize_row_q4(w, &mut rows[r * rb..(r + 1) * rb], s),
                        }
                    }
                    for b in 0..blocks {
                        let dst = &mut codes[b * bb..(b + 1) * bb];
                        for r in 0..GROUP {
                            scales[b * GROUP + r] = row_scales[r * blocks + b];
                            let row = &rows[r * rb..(r + 1) * rb];
                            match quant {
                                Quant::Q8 => {
                                    for i in 0..BLOCK {
                                        let v = row.get(b * BLOCK + i).copied().unwrap_or(0);
                                        dst[((i / 4) * GROUP + r) * 4 + i % 4] = v.wrapping_add(128);
                                    }
                                }
                                Quant::Q4 => {
                                    let src = &row[b * BLOCK / 2..(b + 1) * BLOCK / 2];
                                    for i in 0..BLOCK / 2 {
                                        dst[((i / 4) * GROUP + r) * 4 + i % 4] = src[i];
                                    }
                                }
                            }
                        }
                    }
                },
            );
        }
        Self { quant, out, inp, blocks, codes, scales }
    }

    /// Bytes of the stored codes and scales (padding included).
    pub(crate) fn bytes(&self) -> usize {
        self.codes.len() + 4 * self.scales.len()
    }

    /// Row `o`'s code at input `i` as its signed step (`-127..=127` or `-8..=7`).
    #[inline(always)]
    fn step(&self, o: usize, i: usize) -> i32 {
        let (g, r, b, k) = (o / GROUP, o % GROUP, i / BLOCK, i % BLOCK);
        let base = (g * self.blocks + b) * block_bytes(self.quant);
        match self.quant {
            Quant::Q8 => i32::from(self.codes[base + ((k / 4) * GROUP + r) * 4 + k % 4]) - 128,
            Quant::Q4 => {
                let byte = self.codes[base + (((k % 16) / 4) * GROUP + r) * 4 + k % 4];
                i32::from((byte >> (4 * (k / 16))) & 0xF) - 8
            }
        }
    }

    fn scale(&self, o: usize, b: usize) -> f32 {
        self.scales[((o / GROUP) * self.blocks + b) * GROUP + o % GROUP]
    }

    /// Row `o` dequantised into `dst` (`[in]`).
    pub(crate) fn row_into(&self, o: usize, dst: &mut [f32]) {
        for (i, d) in dst.iter_mut().enumerate().take(self.inp) {
            *d = self.step(o, i) as f32 * self.scale(o, i / BLOCK);
        }
    }

    /// The plain reference: `y[t, o]` for outputs `rows`, into `y` `[a.rows(), rows.len()]`,
    /// with the integer block sums and the fused multiply-adds in the kernels' order.
    pub(crate) fn matmul_reference(&self, a: &Activations, rows: std::ops::Range<usize>, y: &mut [f32]) {
        let n = rows.len();
        for t in 0..a.rows() {
            for (j, o) in rows.clone().enumerate() {
                let mut acc = 0f32;
                for b in 0..self.blocks {
                    let x = &a.q[(t * self.blocks + b) * BLOCK..][..BLOCK];
                    let dot: i32 = (0..BLOCK).map(|k| self.step(o, b * BLOCK + k) * i32::from(x[k])).sum();
                    acc = (dot as f32).mul_add(self.scale(o, b) * a.scales[t * self.blocks + b], acc);
                }
                y[t * n + j] = acc;
            }
        }
    }

    /// `y[t, j] = Σ_i W[rows.start + j, i]·x[t, i]` for outputs `rows`: `y` `[a.rows(), rows.len()]`.
    /// Single-threaded (the decoder's team splits rows between its threads).
    pub(crate) fn matmul_rows(&self, a: &Activations, rows: std::ops::Range<usize>, y: &mut [f32]) {
        let n = rows.len();
        assert!(rows.end <= self.out && y.len() >= a.rows() * n && a.blocks == self.blocks, "matmul_rows: bad shapes");
        #[cfg(target_arch = "x86_64")]
        if let Some(isa) = simd::Isa::detect() {
            // SAFETY: the ISA was detected; `y` holds `[a.rows(), n]` (checked).
            unsafe { simd::matmul(isa, self, a, rows, SendPtr(y.as_mut_ptr()), n) };
            return;
        }
        self.matmul_reference(a, rows, y);
    }

    /// `y = X·Wᵀ`: `y` `[a.rows(), out]`, the groups of rows split over rayon's pool.
    pub(crate) fn matmul(&self, a: &Activations, y: &mut [f32]) {
        use rayon::prelude::*;
        let (t, out) = (a.rows(), self.out);
        assert!(y.len() >= t * out && a.blocks == self.blocks, "matmul: bad shapes");
        let groups = out.div_ceil(GROUP);
        let threads = rayon::current_num_threads();
        if threads == 1 || (t * out * self.inp) < (1 << 16) {
            self.matmul_rows(a, 0..out, y);
            return;
        }
        // A few tasks per thread, each a run of whole groups.
        let per = groups.div_ceil(4 * threads).max(1);
        let ptr = SendPtr(y.as_mut_ptr());
        (0..groups.div_ceil(per)).into_par_iter().for_each(|task| {
            let rows = task * per * GROUP..((task + 1) * per * GROUP).min(out);
            #[cfg(target_arch = "x86_64")]
            if let Some(isa) = simd::Isa::detect() {
                // SAFETY: the ISA was detected; tasks write disjoint columns `rows` of `y`
                // `[t, out]` (stride `out`), which outlives the parallel loop.
                unsafe { simd::matmul_strided(isa, self, a, rows, ptr, out) };
                return;
            }
            let mut part = vec![0f32; t * rows.len()];
            self.matmul_reference(a, rows.clone(), &mut part);
            for (ti, p) in part.chunks(rows.len()).enumerate() {
                // SAFETY: as above: this task's columns only.
                unsafe { std::ptr::copy_nonoverlapping(p.as_ptr(), ptr.0.add(ti * out + rows.start), p.len()) };
            }
        });
    }
}

/// The kernels: AVX-512 VNNI (`vpdpbusd` on 256-bit registers) or AVX2 (`vpmaddubsw`).
#[cfg(target_arch = "x86_64")]
mod simd {
    use std::arch::x86_64::*;
    use std::sync::OnceLock;

    use super::{Activations, BLOCK, GROUP, Packed, Quant, SendPtr, block_bytes};

    /// The instruction set the kernels run on.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub(crate) enum Isa {
        /// AVX2 + FMA: `vpmaddubsw` + `vpmaddwd`.
        Avx2,
        /// AVX-512 VNNI with VL: `vpdpbusd` on 256-bit registers (and 32 of them).
        Vnni,
    }

    impl Isa {
        /// The best the CPU has (detected once); `None` without AVX2 + FMA.
        pub(crate) fn detect() -> Option<Isa> {
            static ISA: OnceLock<Option<Isa>> = OnceLock::new();
            *ISA.get_or_init(|| {
                let vnni = is_x86_feature_detected!("avx512vnni") && is_x86_feature_detected!("avx512vl");
                let avx2 = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
                match (avx2, vnni) {
                    (true, true) => Some(Isa::Vnni),
                    (true, false) => Some(Isa::Avx2),
                    _ => None,
                }
            })
        }

        /// Every ISA this CPU can run (for the tests that compare them).
        #[cfg(test)]
        pub(crate) fn all() -> Vec<Isa> {
            match Isa::detect() {
                Some(Isa::Vnni) => vec![Isa::Avx2, Isa::Vnni],
                Some(Isa::Avx2) => vec![Isa::Avx2],
                None => vec![],
            }
        }
    }

    /// Contiguous output: `y` `[t, rows.len()]`.
    ///
    /// # Safety
    /// `isa` is supported; `y` holds `a.rows() · n` elements.
    pub(crate) unsafe fn matmul(
        isa: Isa,
        m: &Packed,
        a: &Activations,
        rows: std::ops::Range<usize>,
        y: SendPtr,
        n: usize,
    ) {
        // SAFETY: as our contract, with column offset 0 and stride n.
        unsafe { dispatch(isa, m, a, &Out { y, stride: n, base: rows.start, rows }) }
    }

    /// Strided output: columns `rows` of `y` `[t, stride]`.
    ///
    /// # Safety
    /// `isa` is supported; `y` holds `a.rows() · stride` elements, `rows.end <= stride`.
    pub(crate) unsafe fn matmul_strided(
        isa: Isa,
        m: &Packed,
        a: &Activations,
        rows: std::ops::Range<usize>,
        y: SendPtr,
        stride: usize,
    ) {
        // SAFETY: as our contract, with column offset 0 in y.
        unsafe { dispatch(isa, m, a, &Out { y, stride, base: 0, rows }) }
    }

    /// The kernel for `isa` and the matrix's format.
    ///
    /// # Safety
    /// `isa` is supported; every output of `out` is in bounds.
    unsafe fn dispatch(isa: Isa, m: &Packed, a: &Activations, out: &Out) {
        // SAFETY: as our contract.
        unsafe {
            match (isa, m.quant) {
                (Isa::Vnni, Quant::Q8) => vnni::<false>(m, a, out),
                (Isa::Vnni, Quant::Q4) => vnni::<true>(m, a, out),
                (Isa::Avx2, Quant::Q8) => avx2::<false>(m, a, out),
                (Isa::Avx2, Quant::Q4) => avx2::<true>(m, a, out),
            }
        }
    }

    /// [`drive`] compiled for AVX-512 VNNI + VL. Safety: as [`dispatch`].
    #[target_feature(enable = "avx2,fma,avx512f,avx512vl,avx512vnni")]
    unsafe fn vnni<const Q4: bool>(m: &Packed, a: &Activations, out: &Out) {
        // SAFETY: as `dispatch`.
        unsafe { drive::<true, Q4>(m, a, out) }
    }

    /// [`drive`] compiled for AVX2 + FMA. Safety: as [`dispatch`].
    #[target_feature(enable = "avx2,fma")]
    unsafe fn avx2<const Q4: bool>(m: &Packed, a: &Activations, out: &Out) {
        // SAFETY: as `dispatch`.
        unsafe { drive::<false, Q4>(m, a, out) }
    }

    /// Tiles of `TR` activation rows × `GR` groups over the groups touching `rows`: four rows ×
    /// two groups for prompts (compute-bound: each weight load feeds four rows), smaller tiles
    /// for the remainders, and one row × one group for steps (memory-bound: see below).
    #[inline(always)]
    unsafe fn drive<const VNNI: bool, const Q4: bool>(m: &Packed, a: &Activations, out: &Out) {
        if out.rows.is_empty() {
            return;
        }
        let (g0, g1) = (out.rows.start / GROUP, out.rows.end.div_ceil(GROUP));
        let t = a.rows();
        // SAFETY (all tiles): as `dispatch`; tiles stay within t rows and groups g0..g1.
        unsafe {
            if t == 1 {
                // One group at a time: each thread then reads one stream of codes (and one of
                // scales) front to back. Tiles over several groups read as many streams at once,
                // which the memory serves slower (0.4B int8 step: 32 GB/s over four groups, 40
                // GB/s over one, measured back to back).
                for g in g0..g1 {
                    tile::<VNNI, Q4, 1, 1>(m, a, 0, g, out);
                }
                return;
            }
            let mut g = g0;
            while g < g1 {
                let two = g + 2 <= g1;
                let mut r = 0;
                while r + 4 <= t {
                    if two {
                        tile::<VNNI, Q4, 4, 2>(m, a, r, g, out)
                    } else {
                        tile::<VNNI, Q4, 4, 1>(m, a, r, g, out)
                    }
                    r += 4;
                }
                while r < t {
                    if two {
                        tile::<VNNI, Q4, 1, 2>(m, a, r, g, out)
                    } else {
                        tile::<VNNI, Q4, 1, 1>(m, a, r, g, out)
                    }
                    r += 1;
                }
                g += if two { 2 } else { 1 };
            }
        }
    }

    /// Where results go: output `(t, o)` for `o` in `rows` at `y[t·stride + o − base]`.
    struct Out {
        y: SendPtr,
        stride: usize,
        base: usize,
        rows: std::ops::Range<usize>,
    }

    /// `acc += Σ_{4 lanes} w·x` per 32-bit lane: `w` unsigned bytes (int8 codes + 128, or 4-bit
    /// codes), `x` signed bytes.
    #[inline(always)]
    unsafe fn dot4<const VNNI: bool, const Q4: bool>(acc: __m256i, w: __m256i, x: __m256i) -> __m256i {
        // SAFETY: the caller runs with AVX2 (and AVX-512 VNNI + VL when VNNI).
        unsafe {
            if VNNI {
                _mm256_dpbusd_epi32(acc, w, x)
            } else if Q4 {
                // Codes < 16: the pairs' 16-bit sums cannot saturate.
                _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(w, x), _mm256_set1_epi16(1)))
            } else {
                // Back to signed weights, then |w|·(x·sign w): products within i16 pairs.
                let s = _mm256_xor_si256(w, _mm256_set1_epi8(-128));
                let p = _mm256_maddubs_epi16(_mm256_abs_epi8(s), _mm256_sign_epi8(x, s));
                _mm256_add_epi32(acc, _mm256_madd_epi16(p, _mm256_set1_epi16(1)))
            }
        }
    }

    /// One tile: activation rows `r0..r0 + TR` × groups `g0..g0 + GR`, every block, stored.
    #[inline(always)]
    #[allow(clippy::needless_range_loop)] // indices over the tile's two axes read clearest
    unsafe fn tile<const VNNI: bool, const Q4: bool, const TR: usize, const GR: usize>(
        m: &Packed,
        a: &Activations,
        r0: usize,
        g0: usize,
        out: &Out,
    ) {
        let (blocks, bb) = (m.blocks, block_bytes(m.quant));
        // What the unsigned codes add per block: 128·Σx (int8 on VNNI), 8·Σx (4-bit); none when
        // the AVX2 int8 path multiplies the signed weights.
        let offset: i32 = if Q4 {
            8
        } else if VNNI {
            128
        } else {
            0
        };
        // SAFETY: the caller's contract: the CPU features, rows and groups in range; every load
        // below reads inside one group's block or one activation row's block.
        unsafe {
            let mut acc = [[_mm256_setzero_ps(); GR]; TR];
            let low = _mm256_set1_epi8(0x0F);
            for b in 0..blocks {
                let mut ia = [[_mm256_setzero_si256(); GR]; TR];
                let mut xp = [std::ptr::null::<i32>(); TR];
                for t in 0..TR {
                    let row = (r0 + t) * blocks + b;
                    ia[t] = [_mm256_set1_epi32(-offset * a.sums[row]); GR];
                    xp[t] = a.q.as_ptr().add(row * BLOCK) as *const i32;
                }
                // Four activation bytes broadcast per chunk, against each group's chunk.
                let x4 = |t: usize, c: usize| _mm256_set1_epi32(xp[t].add(c).read_unaligned());
                let wp = |g: usize| m.codes.as_ptr().add(((g0 + g) * blocks + b) * bb) as *const __m256i;
                if Q4 {
                    for c in 0..4 {
                        let (xl, xh): ([__m256i; TR], [__m256i; TR]) =
                            (std::array::from_fn(|t| x4(t, c)), std::array::from_fn(|t| x4(t, c + 4)));
                        for g in 0..GR {
                            let v = _mm256_loadu_si256(wp(g).add(c));
                            let (lo, hi) = (_mm256_and_si256(v, low), _mm256_and_si256(_mm256_srli_epi16(v, 4), low));
                            for t in 0..TR {
                                ia[t][g] = dot4::<VNNI, Q4>(ia[t][g], lo, xl[t]);
                                ia[t][g] = dot4::<VNNI, Q4>(ia[t][g], hi, xh[t]);
                            }
                        }
                    }
                } else {
                    for c in 0..8 {
                        let x: [__m256i; TR] = std::array::from_fn(|t| x4(t, c));
                        for g in 0..GR {
                            let v = _mm256_loadu_si256(wp(g).add(c));
                            for t in 0..TR {
                                ia[t][g] = dot4::<VNNI, Q4>(ia[t][g], v, x[t]);
                            }
                        }
                    }
                }
                for g in 0..GR {
                    let sw = _mm256_loadu_ps(m.scales.as_ptr().add(((g0 + g) * blocks + b) * GROUP));
                    for t in 0..TR {
                        let s = _mm256_mul_ps(sw, _mm256_set1_ps(a.scales[(r0 + t) * blocks + b]));
                        acc[t][g] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(ia[t][g]), s, acc[t][g]);
                    }
                }
            }
            for (t, acc) in acc.iter().enumerate() {
                for (g, v) in acc.iter().enumerate() {
                    let o0 = (g0 + g) * GROUP;
                    let (lo, hi) = (o0.max(out.rows.start), (o0 + GROUP).min(out.rows.end));
                    let dst = out.y.0.add((r0 + t) * out.stride).wrapping_sub(out.base);
                    if lo == o0 && hi == o0 + GROUP {
                        _mm256_storeu_ps(dst.add(o0), *v);
                    } else {
                        let mut lanes = [0f32; GROUP];
                        _mm256_storeu_ps(lanes.as_mut_ptr(), *v);
                        for o in lo..hi {
                            *dst.add(o) = lanes[o - o0];
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 2.0
            })
            .collect()
    }

    /// Activations round as int8 weights do (the same scale; codes equal but at exact ties).
    #[test]
    fn activations_quantise_as_int8_weights() {
        let (inp, t) = (70, 3);
        let x = random(t * inp, 9);
        let a = Activations::quantize(&x, t, inp);
        let (blocks, mut same) = (inp.div_ceil(BLOCK), 0);
        for ti in 0..t {
            let (mut q, mut s) = (vec![0i8; inp], vec![0f32; blocks]);
            quantize_row_q8(&x[ti * inp..(ti + 1) * inp], &mut q, &mut s);
            assert_eq!(s, a.scales[ti * blocks..(ti + 1) * blocks]);
            for (i, &c) in q.iter().enumerate() {
                let got = a.q[ti * blocks * BLOCK + i];
                assert!((i32::from(got) - i32::from(c)).abs() <= 1, "({ti}, {i}): {got} vs {c}");
                same += usize::from(got == c);
            }
            for b in 0..blocks {
                let codes = &a.q[(ti * blocks + b) * BLOCK..][..BLOCK];
                assert_eq!(a.sums[ti * blocks + b], codes.iter().map(|&c| i32::from(c)).sum::<i32>());
            }
            assert!(a.q[ti * blocks * BLOCK + inp..(ti + 1) * blocks * BLOCK].iter().all(|&c| c == 0), "padding");
        }
        assert!(same * 100 >= 99 * t * inp, "{same} of {}", t * inp);
    }

    /// The interleaved codes dequantise to the row-major formats' values.
    #[test]
    fn packed_rows_dequantise_as_the_row_formats() {
        for (inp, out) in [(1, 1), (31, 3), (32, 8), (70, 13), (96, 17)] {
            let w = random(inp * out, 1);
            for quant in [Quant::Q8, Quant::Q4] {
                let want = quant
                    .dequantize(&quant.quantize(&w, inp, out).0, &quant.quantize(&w, inp, out).1, inp, out)
                    .unwrap();
                let p = Packed::new(&w, inp, out, quant);
                let mut row = vec![0f32; inp];
                for o in 0..out {
                    p.row_into(o, &mut row);
                    assert_eq!(row, want[o * inp..(o + 1) * inp], "{quant:?} {inp}x{out} row {o}");
                }
            }
        }
    }

    /// Every vector kernel equals the reference bit for bit, on any row range and tile remainder.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn kernels_equal_the_reference_bit_for_bit() {
        for (inp, out, t) in [(1, 1, 1), (33, 9, 3), (64, 16, 5), (100, 37, 9), (256, 40, 1), (40, 70, 6)] {
            let (w, x) = (random(inp * out, inp as u64), random(t * inp, out as u64));
            let a = Activations::quantize(&x, t, inp);
            for quant in [Quant::Q8, Quant::Q4] {
                let p = Packed::new(&w, inp, out, quant);
                for rows in [0..out, out / 3..out, 1.min(out)..out.saturating_sub(2).max(1)] {
                    let n = rows.len();
                    let mut want = vec![0f32; t * n];
                    p.matmul_reference(&a, rows.clone(), &mut want);
                    for isa in simd::Isa::all() {
                        let mut got = vec![f32::NAN; t * n];
                        // SAFETY: the ISA is supported; `got` is `[t, n]`.
                        unsafe { simd::matmul(isa, &p, &a, rows.clone(), SendPtr(got.as_mut_ptr()), n) };
                        assert_eq!(got, want, "{isa:?} {quant:?} {inp}x{out} t={t} rows {rows:?}");
                    }
                }
                let mut all = vec![0f32; t * out];
                p.matmul(&a, &mut all);
                let mut want = vec![0f32; t * out];
                p.matmul_reference(&a, 0..out, &mut want);
                assert_eq!(all, want);
            }
        }
    }

    /// The integer product is close to the f32 product of the dequantised weights: the only
    /// extra error is the activations' rounding (half a step of 1/127 of each block's largest).
    #[test]
    fn integer_products_are_close_to_f32() {
        let (inp, out, t) = (96, 12, 2);
        let (w, x) = (random(inp * out, 3), random(t * inp, 4));
        for quant in [Quant::Q8, Quant::Q4] {
            let p = Packed::new(&w, inp, out, quant);
            let mut y = vec![0f32; t * out];
            p.matmul(&Activations::quantize(&x, t, inp), &mut y);
            let mut row = vec![0f32; inp];
            for o in 0..out {
                p.row_into(o, &mut row);
                for ti in 0..t {
                    let exact: f32 = row.iter().zip(&x[ti * inp..]).map(|(a, b)| a * b).sum();
                    let bound = row.iter().map(|v| v.abs()).sum::<f32>() / 254.0 + 1e-5;
                    assert!(
                        (y[ti * out + o] - exact).abs() <= bound,
                        "{quant:?} ({ti}, {o}): {} vs {exact}",
                        y[ti * out + o]
                    );
                }
            }
        }
    }
}
