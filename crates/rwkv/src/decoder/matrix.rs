//! Weight matrices of the fused decoder: storage in f32 / bf16 / f16 / int8 / 4-bit, the
//! single-row product (AVX2 + FMA + F16C dot products) and the many-row product (a GEMM).
//!
//! int8 and 4-bit weights use the block formats of [`visualrwkv_checkpoint::quant`] (llama.cpp's
//! Q8_0 and Q4_0 with f32 scales, blocks of 32 along each row), interleaved for integer dot
//! products against activations quantised the same way ([`super::quantized`]).
//!
//! # Shapes
//!
//! A matrix is `[out, in]` (output-major). [`Matrix::matvec`]: `x` `[in]` → `y` `[out]`;
//! [`Matrix::matmul`]: `x` `[T, in]` → `y` `[T, out]` (row-major).

use visualrwkv_checkpoint::quant::Quant;

use super::WeightDtype;
use super::quantized::{Activations, Packed};

#[derive(Clone, Debug)]
enum Data {
    F32(Vec<f32>),
    /// Half-precision bit patterns: bf16 when `bf16`, else IEEE f16.
    Half {
        bits: Vec<u16>,
        bf16: bool,
    },
    /// int8 or 4-bit blocks, interleaved for integer dot products.
    Quantized(Packed),
}

/// One half-precision value (bf16 when `BF16`, else f16) as f32.
#[inline(always)]
fn half_to_f32<const BF16: bool>(b: u16) -> f32 {
    if BF16 { f32::from_bits((b as u32) << 16) } else { half::f16::from_bits(b).to_f32() }
}

/// `dst[i] = f32(src[i])` for half-precision bit patterns (bf16 when `bf16`), with AVX2/F16C
/// when the CPU has them.
fn halves_to_f32(src: &[u16], bf16: bool, dst: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if simd::available() {
        // SAFETY: the CPU has AVX2, FMA and F16C (checked).
        unsafe { if bf16 { simd::to_f32::<true>(src, dst) } else { simd::to_f32::<false>(src, dst) } }
        return;
    }
    let f = if bf16 { half_to_f32::<true> } else { half_to_f32::<false> };
    dst.iter_mut().zip(src).for_each(|(d, &b)| *d = f(b));
}

/// Calls `f(cols, dst)` over rayon's pool for blocks of 32 input columns of an `[out, inp]`
/// matrix, `dst` being the block's output rows (`[cols.len(), out]`) of the `[inp, out]` `scratch`.
#[cfg(target_arch = "x86_64")]
fn by_column_blocks(
    scratch: &mut [f32],
    out: usize,
    inp: usize,
    f: impl Fn(std::ops::Range<usize>, &mut [f32]) + Sync,
) {
    use rayon::prelude::*;
    const COLS: usize = 32;
    scratch[..out * inp]
        .par_chunks_mut(COLS * out)
        .enumerate()
        .for_each(|(b, dst)| f(b * COLS..(b * COLS + COLS).min(inp), dst));
}

/// A matrix stored output-major, `[out, in]`, in a [`WeightDtype`]. Internal: its constructors
/// and product trust the caller's lengths, which [`Decoder`] guarantees.
#[derive(Clone, Debug)]
pub(crate) struct Matrix {
    /// Outputs (rows).
    pub(crate) out: usize,
    /// Inputs (columns).
    pub(crate) inp: usize,
    data: Data,
}

/// Batches of up to this many rows multiply through [`Matrix::matmul_few`] instead of the GEMM.
/// The GEMM packs or converts the whole weight matrix first, which costs more than it saves for
/// few rows: on the 0.4B shape (f32, 2 cores) a 17-row batched step took 630 ms through the GEMM
/// and a 16-row one 241 ms through `matmul_few`; the two meet at about 64 rows
/// (`cargo bench -p visualrwkv-rwkv --bench step_batch`).
pub(crate) const FEW_ROWS_MAX: usize = 64;

/// `d[a·xs.len() + b] = ws[a]·xs[b]` for a few weight rows `ws` and activation rows `xs` (all
/// as long as `ws[0]`): register blocks of four weight rows × two activation rows with AVX2 +
/// FMA when the CPU has them (each loaded vector feeds several multiply-adds).
fn block_products(ws: &[&[f32]], xs: &[&[f32]], d: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if simd::available() {
        // SAFETY: the CPU has AVX2, FMA and F16C (checked); the rows are equally long and `d`
        // holds `ws.len()·xs.len()` (the callers').
        unsafe { simd::block_products(ws, xs, d) };
        return;
    }
    let t = xs.len();
    for (a, w) in ws.iter().enumerate() {
        for (b, x) in xs.iter().enumerate() {
            d[a * t + b] = w.iter().zip(x.iter()).map(|(p, q)| p * q).sum();
        }
    }
}

/// Matrices of at least this many weights are split over the cores.
const PARALLEL_MIN: usize = 1 << 15;

/// Prompts of at least this many rows multiply f32 weights through an `[in, out]` copy
/// ([`Matrix::matmul`]). The copy costs a pass over the matrix (~1 ns per weight here) and saves
/// about a quarter of `2·t` flops per weight at ~150–200 GFLOP/s: it pays from ~250 rows.
const F32_TRANSPOSED_MIN_ROWS: usize = 256;

impl Matrix {
    /// From burn's `Linear` layout `w` `[in, out]` (row-major), transposed and converted.
    pub(crate) fn from_in_out(w: &[f32], inp: usize, out: usize, dtype: WeightDtype) -> Self {
        Self::from_out_in(visualrwkv_checkpoint::transpose(w, inp, out), inp, out, dtype)
    }

    /// From an output-major `w` `[out, in]`.
    pub(crate) fn from_out_in(w: Vec<f32>, inp: usize, out: usize, dtype: WeightDtype) -> Self {
        let data = match dtype {
            WeightDtype::F32 => Data::F32(w),
            WeightDtype::Bf16 => {
                Data::Half { bits: w.iter().map(|&x| half::bf16::from_f32(x).to_bits()).collect(), bf16: true }
            }
            WeightDtype::F16 => {
                Data::Half { bits: w.iter().map(|&x| half::f16::from_f32(x).to_bits()).collect(), bf16: false }
            }
            WeightDtype::I8 => Data::Quantized(Packed::new(&w, inp, out, Quant::Q8)),
            WeightDtype::Q4 => Data::Quantized(Packed::new(&w, inp, out, Quant::Q4)),
        };
        Self { out, inp, data }
    }

    /// Bytes of the stored weights.
    pub(crate) fn bytes(&self) -> usize {
        match &self.data {
            Data::F32(v) => 4 * v.len(),
            Data::Half { bits, .. } => 2 * bits.len(),
            Data::Quantized(p) => p.bytes(),
        }
    }

    /// Row `o` converted to f32 into `dst` (`[in]`).
    pub(crate) fn row_into(&self, o: usize, dst: &mut [f32]) {
        let r = o * self.inp..(o + 1) * self.inp;
        match &self.data {
            Data::F32(v) => dst.copy_from_slice(&v[r]),
            Data::Half { bits, bf16 } => halves_to_f32(&bits[r], *bf16, dst),
            Data::Quantized(p) => p.row_into(o, dst),
        }
    }

    /// `y[o] = Σ_i W[o, i]·x[i]` for outputs `rows` into `y` (`[rows.len()]`).
    pub(crate) fn matvec_rows(&self, x: &[f32], rows: std::ops::Range<usize>, y: &mut [f32]) {
        let n = self.inp;
        let x = &x[..n];
        // Each output from its row's range of the stored weights (generic: inlined per type).
        #[cfg(target_arch = "x86_64")]
        fn each_row(
            y: &mut [f32],
            rows: std::ops::Range<usize>,
            n: usize,
            dot: impl Fn(std::ops::Range<usize>) -> f32,
        ) {
            for (yo, o) in y.iter_mut().zip(rows) {
                *yo = dot(o * n..(o + 1) * n);
            }
        }
        match &self.data {
            Data::Quantized(p) => p.matmul_rows(&Activations::quantize(x, 1, n), rows, y),
            // SAFETY (the three SIMD arms): the CPU has AVX2, FMA and F16C (checked by
            // `simd::available`); each row range and `x` have length n.
            #[cfg(target_arch = "x86_64")]
            Data::F32(v) if simd::available() => each_row(y, rows, n, |r| unsafe { simd::dot_f32(&v[r], x) }),
            #[cfg(target_arch = "x86_64")]
            Data::Half { bits, bf16: true } if simd::available() => {
                each_row(y, rows, n, |r| unsafe { simd::dot_half::<true>(&bits[r], x) })
            }
            #[cfg(target_arch = "x86_64")]
            Data::Half { bits, bf16: false } if simd::available() => {
                each_row(y, rows, n, |r| unsafe { simd::dot_half::<false>(&bits[r], x) })
            }
            _ => {
                let mut row = vec![0f32; n];
                for (yo, o) in y.iter_mut().zip(rows) {
                    self.row_into(o, &mut row);
                    *yo = row.iter().zip(x).map(|(a, b)| a * b).sum();
                }
            }
        }
    }

    /// `y = W·x`: `x` `[in]`, `y` `[out]`; large matrices are split over the cores by output
    /// (rayon's persistent pool: spawning threads per product cost more than the product here).
    pub(crate) fn matvec(&self, x: &[f32], y: &mut [f32]) {
        use rayon::prelude::*;
        debug_assert_eq!((x.len(), y.len()), (self.inp, self.out));
        if let Data::Quantized(p) = &self.data {
            p.matmul(&Activations::quantize(x, 1, self.inp), y);
            return;
        }
        let threads = rayon::current_num_threads();
        if threads == 1 || self.out * self.inp < PARALLEL_MIN || self.out < 2 * threads {
            self.matvec_rows(x, 0..self.out, y);
            return;
        }
        // A few blocks per thread, for balance.
        let per = self.out.div_ceil(4 * threads);
        y.par_chunks_mut(per).enumerate().for_each(|(i, part)| {
            let start = i * per;
            self.matvec_rows(x, start..start + part.len(), part)
        });
    }

    /// `Y = X·Wᵀ` for a few rows (`t` up to [`FEW_ROWS_MAX`]: a batched decode step): `x`
    /// `[t, in]`, `y` `[t, out]` (row-major). Each weight row is read from memory once (a
    /// half-precision one converted once) and multiplied with all `t` rows while it sits in L1,
    /// so the step stays as memory-bound as a single row's; the GEMM would first repack or
    /// convert the whole matrix for so few rows. Outputs are split over the cores as in
    /// [`Matrix::matvec`]. Quantised weights take their own tiled kernel, which already reads
    /// each block once for several rows.
    pub(crate) fn matmul_few(&self, x: &[f32], t: usize, y: &mut [f32]) {
        use rayon::prelude::*;
        let (out, inp) = (self.out, self.inp);
        assert!(x.len() >= t * inp && y.len() >= t * out, "matmul_few: slices shorter than [t, in] / [t, out]");
        if t == 0 {
            return;
        }
        if let Data::Quantized(p) = &self.data {
            p.matmul(&Activations::quantize(x, t, inp), y);
            return;
        }
        // Output-major results `[out, t]`, transposed into `y` at the end.
        let mut by_output = vec![0f32; out * t];
        let threads = rayon::current_num_threads();
        let per =
            if threads == 1 || out * inp < PARALLEL_MIN || out < 2 * threads { out } else { out.div_ceil(4 * threads) };
        by_output.par_chunks_mut(per * t).enumerate().for_each(|(i, part)| {
            let start = i * per;
            self.few_rows_into(x, t, start..start + part.len() / t, part)
        });
        for (o, ys) in by_output.chunks(t).enumerate() {
            for (j, &v) in ys.iter().enumerate() {
                y[j * out + o] = v;
            }
        }
    }

    /// `dst[(o − rows.start)·t + j] = W[o]·x_j` for outputs `rows` and the `t` rows of `x`,
    /// four weight rows at a time (half-precision ones converted once into a buffer).
    fn few_rows_into(&self, x: &[f32], t: usize, rows: std::ops::Range<usize>, dst: &mut [f32]) {
        const GROUP: usize = 4;
        let n = self.inp;
        let xs: Vec<&[f32]> = x.chunks(n).take(t).collect();
        let mut converted = Vec::new();
        for (o0, d) in rows.clone().step_by(GROUP).zip(dst.chunks_mut(GROUP * t)) {
            let group = o0..(o0 + GROUP).min(rows.end);
            let ws: Vec<&[f32]> = match &self.data {
                Data::F32(v) => group.map(|o| &v[o * n..(o + 1) * n]).collect(),
                _ => {
                    converted.resize(group.len() * n, 0.0);
                    for (o, row) in group.clone().zip(converted.chunks_mut(n)) {
                        self.row_into(o, row);
                    }
                    converted.chunks(n).take(group.len()).collect()
                }
            };
            block_products(&ws, &xs, d);
        }
    }

    /// The weights as f32 `[out, in]` for the GEMM: borrowed when stored in f32, else converted
    /// into `scratch`; or, with `in_out`, transposed to `[in, out]` into `scratch` (converted on
    /// the way). Quantised matrices never need this (their products stay in integers); they are
    /// dequantised row by row if asked.
    fn gemm_weights<'a>(&'a self, in_out: bool, scratch: &'a mut Vec<f32>) -> &'a [f32] {
        use rayon::prelude::*;
        use visualrwkv_checkpoint::transpose_map_into;
        let (out, inp, len) = (self.out, self.inp, self.out * self.inp);
        if let (Data::F32(v), false) = (&self.data, in_out) {
            return v;
        }
        scratch.resize(len, 0.0);
        match (&self.data, in_out) {
            // SAFETY (the three SIMD arms): the CPU has AVX2, FMA and F16C (checked); the weights
            // hold `out·inp` elements, each block's columns lie inside `inp` and its `dst` holds
            // `cols.len()·out` (`by_column_blocks`).
            #[cfg(target_arch = "x86_64")]
            (Data::F32(v), true) if simd::available() => {
                by_column_blocks(scratch, out, inp, |cols, d| unsafe { simd::transpose_f32(v, out, inp, cols, d) })
            }
            #[cfg(target_arch = "x86_64")]
            (Data::Half { bits, bf16: true }, true) if simd::available() => {
                by_column_blocks(scratch, out, inp, |cols, d| unsafe {
                    simd::transpose_half::<true>(bits, out, inp, cols, d)
                })
            }
            #[cfg(target_arch = "x86_64")]
            (Data::Half { bits, bf16: false }, true) if simd::available() => {
                by_column_blocks(scratch, out, inp, |cols, d| unsafe {
                    simd::transpose_half::<false>(bits, out, inp, cols, d)
                })
            }
            (Data::F32(v), _) => transpose_map_into(v, out, inp, scratch, |x| x),
            (Data::Half { bits, bf16: true }, true) => transpose_map_into(bits, out, inp, scratch, half_to_f32::<true>),
            (Data::Half { bits, bf16: false }, true) => {
                transpose_map_into(bits, out, inp, scratch, half_to_f32::<false>)
            }
            (Data::Half { bits, bf16 }, false) => scratch
                .par_chunks_mut(1 << 14)
                .zip(bits.par_chunks(1 << 14))
                .for_each(|(d, s)| halves_to_f32(s, *bf16, d)),
            (Data::Quantized(_), _) => {
                let mut rows = vec![0f32; len];
                rows.par_chunks_mut(inp.max(1)).enumerate().for_each(|(o, d)| self.row_into(o, d));
                match in_out {
                    true => transpose_map_into(&rows, out, inp, scratch, |x| x),
                    false => scratch.copy_from_slice(&rows),
                }
            }
        }
        &scratch[..len]
    }

    /// `Y = X·Wᵀ` for `t` rows: `x` `[t, in]`, `y` `[t, out]` (row-major), through a cache-blocked
    /// GEMM on rayon's pool. The `gemm` crate multiplies a row-major right-hand side (`Wᵀ` as
    /// `[in, out]`) 1.25–1.4x faster than a transposed one, so on CPUs with AVX2 half-precision
    /// weights are converted to f32 straight into that layout in `scratch` (the conversion pass
    /// is needed anyway), and f32 weights are copied to it from [`F32_TRANSPOSED_MIN_ROWS`] rows;
    /// otherwise the GEMM reads the stored `[out, in]` layout (converted first if half).
    pub(crate) fn matmul(&self, x: &[f32], t: usize, y: &mut [f32], scratch: &mut Vec<f32>) {
        assert!(x.len() >= t * self.inp && y.len() >= t * self.out, "matmul: slices shorter than [t, in] / [t, out]");
        if t == 0 {
            return;
        }
        if let Data::Quantized(p) = &self.data {
            p.matmul(&Activations::quantize(x, t, self.inp), y);
            return;
        }
        // Only with the register transpose: the portable tiled copy (~2.4 GB/s) costs more than
        // the faster GEMM saves.
        #[cfg(target_arch = "x86_64")]
        let fast_copy = simd::available();
        #[cfg(not(target_arch = "x86_64"))]
        let fast_copy = false;
        let in_out = fast_copy && (!matches!(self.data, Data::F32(_)) || t >= F32_TRANSPOSED_MIN_ROWS);
        let w = self.gemm_weights(in_out, scratch);
        let (m, n, k) = (t, self.out, self.inp);
        // Right-hand side element (i, o): at `i·out + o` in `[in, out]`, at `o·in + i` in `[out, in]`.
        let (rhs_cs, rhs_rs) = if in_out { (1, n as isize) } else { (k as isize, 1) };
        // SAFETY: `x` holds `t·in` elements read at `row·in + col`, `w` holds `out·in` read at the
        // strides above, `y` holds `t·out` written at `row·out + o` (checked above); the three do
        // not overlap (`y` is a unique borrow).
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                y.as_mut_ptr(),
                1,
                n as isize,
                false,
                x.as_ptr(),
                1,
                k as isize,
                w.as_ptr(),
                rhs_cs,
                rhs_rs,
                0.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::Rayon(0),
            )
        }
    }
}

/// AVX2 + FMA + F16C dot products of stored weights with an f32 vector.
#[cfg(target_arch = "x86_64")]
mod simd {
    use std::arch::x86_64::*;
    use std::sync::OnceLock;

    /// Whether the CPU has AVX2, FMA and F16C (detected once).
    pub fn available() -> bool {
        static HAS: OnceLock<bool> = OnceLock::new();
        *HAS.get_or_init(|| {
            is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c")
        })
    }

    /// Horizontal sum of four accumulators.
    #[target_feature(enable = "avx2,fma")]
    fn reduce(acc: [__m256; 4]) -> f32 {
        let s = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
        let lo = _mm256_castps256_ps128(s);
        let hi = _mm256_extractf128_ps(s, 1);
        let q = _mm_add_ps(lo, hi);
        let d = _mm_add_ps(q, _mm_movehl_ps(q, q));
        let e = _mm_add_ss(d, _mm_shuffle_ps(d, d, 1));
        _mm_cvtss_f32(e)
    }

    /// The dot product of 8-lane blocks loaded by `load(i)` (weights at element `i`, as f32)
    /// with `x`, four accumulators deep, then the scalar tail through `tail(i)`.
    #[inline(always)]
    unsafe fn dot_with(n: usize, x: &[f32], load: impl Fn(usize) -> __m256, tail: impl Fn(usize) -> f32) -> f32 {
        // SAFETY (whole body): callers guarantee AVX2/FMA and `x.len() >= n`; every load reads
        // elements below `n`.
        unsafe {
            let xp = x.as_ptr();
            let mut acc = [_mm256_setzero_ps(); 4];
            let mut i = 0;
            while i + 32 <= n {
                acc[0] = _mm256_fmadd_ps(load(i), _mm256_loadu_ps(xp.add(i)), acc[0]);
                acc[1] = _mm256_fmadd_ps(load(i + 8), _mm256_loadu_ps(xp.add(i + 8)), acc[1]);
                acc[2] = _mm256_fmadd_ps(load(i + 16), _mm256_loadu_ps(xp.add(i + 16)), acc[2]);
                acc[3] = _mm256_fmadd_ps(load(i + 24), _mm256_loadu_ps(xp.add(i + 24)), acc[3]);
                i += 32;
            }
            while i + 8 <= n {
                acc[0] = _mm256_fmadd_ps(load(i), _mm256_loadu_ps(xp.add(i)), acc[0]);
                i += 8;
            }
            let mut s = reduce(acc);
            while i < n {
                s += tail(i) * x[i];
                i += 1;
            }
            s
        }
    }

    /// # Safety
    /// The CPU supports AVX2, FMA and F16C; `x.len() >= w.len()`.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_f32(w: &[f32], x: &[f32]) -> f32 {
        let p = w.as_ptr();
        // SAFETY: as our contract; loads stay below w.len().
        unsafe { dot_with(w.len(), x, |i| _mm256_loadu_ps(p.add(i)), |i| w[i]) }
    }

    /// The `W × X` dot products of weight rows at `w` with activation rows at `x`, each `n`
    /// long: one accumulator per pair, every loaded vector used `X` (weights) or `W`
    /// (activations) times.
    ///
    /// # Safety
    /// AVX2 and FMA are enabled in the caller; every pointer has `n` readable elements.
    #[inline(always)]
    unsafe fn block<const W: usize, const X: usize>(n: usize, w: [*const f32; W], x: [*const f32; X]) -> [[f32; X]; W] {
        // SAFETY (whole body): AVX2/FMA are enabled in the caller and every load reads
        // elements below `n`, as our contract allows.
        unsafe {
            let zero = _mm256_setzero_ps();
            let mut acc = [[zero; X]; W];
            let mut i = 0;
            while i + 8 <= n {
                let xv: [__m256; X] = std::array::from_fn(|b| _mm256_loadu_ps(x[b].add(i)));
                for a in 0..W {
                    let wv = _mm256_loadu_ps(w[a].add(i));
                    for b in 0..X {
                        acc[a][b] = _mm256_fmadd_ps(wv, xv[b], acc[a][b]);
                    }
                }
                i += 8;
            }
            let mut s = [[0f32; X]; W];
            for a in 0..W {
                for b in 0..X {
                    s[a][b] = reduce([acc[a][b], zero, zero, zero]);
                    for k in i..n {
                        s[a][b] += *w[a].add(k) * *x[b].add(k);
                    }
                }
            }
            s
        }
    }

    /// `d[a·xs.len() + b] = ws[a]·xs[b]`: blocks of four weight rows × two activation rows,
    /// then the edges in smaller blocks.
    ///
    /// # Safety
    /// The CPU supports AVX2, FMA and F16C; every row of `ws` and `xs` has at least `ws[0].len()`
    /// elements; `d.len() >= ws.len()·xs.len()`.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn block_products(ws: &[&[f32]], xs: &[&[f32]], d: &mut [f32]) {
        let Some(first) = ws.first() else { return };
        let (n, t) = (first.len(), xs.len());
        let wp: Vec<*const f32> = ws.iter().map(|w| w.as_ptr()).collect();
        let xp: Vec<*const f32> = xs.iter().map(|x| x.as_ptr()).collect();
        let mut b = 0;
        while b < t {
            let pair = b + 2 <= t;
            let mut a = 0;
            while a < ws.len() {
                let four = a + 4 <= ws.len();
                // SAFETY: as our contract; the indices stay inside `ws`, `xs` and `d`.
                unsafe {
                    match (four, pair) {
                        (true, true) => {
                            let r = block::<4, 2>(n, [wp[a], wp[a + 1], wp[a + 2], wp[a + 3]], [xp[b], xp[b + 1]]);
                            for (k, row) in r.iter().enumerate() {
                                d[(a + k) * t + b..(a + k) * t + b + 2].copy_from_slice(row);
                            }
                        }
                        (true, false) => {
                            let r = block::<4, 1>(n, [wp[a], wp[a + 1], wp[a + 2], wp[a + 3]], [xp[b]]);
                            for (k, row) in r.iter().enumerate() {
                                d[(a + k) * t + b] = row[0];
                            }
                        }
                        (false, true) => {
                            let r = block::<1, 2>(n, [wp[a]], [xp[b], xp[b + 1]]);
                            d[a * t + b..a * t + b + 2].copy_from_slice(&r[0]);
                        }
                        (false, false) => d[a * t + b] = block::<1, 1>(n, [wp[a]], [xp[b]])[0][0],
                    }
                }
                a += if four { 4 } else { 1 };
            }
            b += if pair { 2 } else { 1 };
        }
    }

    /// Eight half-precision values at `p` (bf16 when `BF16`, else f16) as f32 lanes.
    ///
    /// # Safety
    /// The CPU supports AVX2 and F16C; `p` points at 8 readable `u16`.
    #[inline(always)]
    unsafe fn load_half<const BF16: bool>(p: *const u16) -> __m256 {
        // SAFETY: as our contract. bf16 → f32 is a 16-bit left shift of the bit pattern.
        unsafe {
            let h = _mm_loadu_si128(p as *const __m128i);
            if BF16 { _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16)) } else { _mm256_cvtph_ps(h) }
        }
    }

    /// The dot product of half-precision weights (bf16 when `BF16`, else f16) with `x`.
    ///
    /// # Safety
    /// As [`dot_f32`].
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_half<const BF16: bool>(w: &[u16], x: &[f32]) -> f32 {
        let p = w.as_ptr();
        // SAFETY: as our contract; each load reads 8 u16 below w.len().
        unsafe { dot_with(w.len(), x, |i| load_half::<BF16>(p.add(i)), |i| super::half_to_f32::<BF16>(w[i])) }
    }

    /// `dst[i] = f32(src[i])` for half-precision bit patterns (bf16 when `BF16`), 8 lanes at a
    /// time, over the shorter of the two.
    ///
    /// # Safety
    /// The CPU supports AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn to_f32<const BF16: bool>(src: &[u16], dst: &mut [f32]) {
        let n = src.len().min(dst.len());
        let (s, d) = (src.as_ptr(), dst.as_mut_ptr());
        let mut i = 0;
        // SAFETY: every access is below n.
        unsafe {
            while i + 8 <= n {
                _mm256_storeu_ps(d.add(i), load_half::<BF16>(s.add(i)));
                i += 8;
            }
        }
        for j in i..n {
            dst[j] = super::half_to_f32::<BF16>(src[j]);
        }
    }

    /// Eight rows of eight lanes transposed in registers: lane `j` of output `i` is lane `i` of
    /// input `j`.
    #[inline(always)]
    fn transpose_8x8(r: [__m256; 8]) -> [__m256; 8] {
        // SAFETY: register-only AVX intrinsics; every caller runs with AVX2 enabled.
        unsafe {
            let t0 = _mm256_unpacklo_ps(r[0], r[1]);
            let t1 = _mm256_unpackhi_ps(r[0], r[1]);
            let t2 = _mm256_unpacklo_ps(r[2], r[3]);
            let t3 = _mm256_unpackhi_ps(r[2], r[3]);
            let t4 = _mm256_unpacklo_ps(r[4], r[5]);
            let t5 = _mm256_unpackhi_ps(r[4], r[5]);
            let t6 = _mm256_unpacklo_ps(r[6], r[7]);
            let t7 = _mm256_unpackhi_ps(r[6], r[7]);
            let s0 = _mm256_shuffle_ps::<0x44>(t0, t2);
            let s1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
            let s2 = _mm256_shuffle_ps::<0x44>(t1, t3);
            let s3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
            let s4 = _mm256_shuffle_ps::<0x44>(t4, t6);
            let s5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
            let s6 = _mm256_shuffle_ps::<0x44>(t5, t7);
            let s7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
            [
                _mm256_permute2f128_ps::<0x20>(s0, s4),
                _mm256_permute2f128_ps::<0x20>(s1, s5),
                _mm256_permute2f128_ps::<0x20>(s2, s6),
                _mm256_permute2f128_ps::<0x20>(s3, s7),
                _mm256_permute2f128_ps::<0x31>(s0, s4),
                _mm256_permute2f128_ps::<0x31>(s1, s5),
                _mm256_permute2f128_ps::<0x31>(s2, s6),
                _mm256_permute2f128_ps::<0x31>(s3, s7),
            ]
        }
    }

    /// Output rows `cols` of the transpose of a row-major `[rows, n]` matrix into `dst`
    /// (`[cols.len(), rows]`): 8×8 tiles read as f32 lanes by `load(i)` (the 8 elements from
    /// flat index `i`) and transposed in registers, the edges one element at a time (`one(i)`).
    ///
    /// # Safety
    /// The CPU supports AVX2; `load` may read 8 elements from any `r·n + c` with `c + 8 <= n`;
    /// `dst.len() >= cols.len() · rows`.
    #[inline(always)]
    unsafe fn transpose_with(
        rows: usize,
        n: usize,
        cols: std::ops::Range<usize>,
        dst: &mut [f32],
        load: impl Fn(usize) -> __m256,
        one: impl Fn(usize) -> f32,
    ) {
        let (rows8, c_end8) = (rows / 8 * 8, cols.start + cols.len() / 8 * 8);
        let d = dst.as_mut_ptr();
        for r0 in (0..rows8).step_by(8) {
            for c0 in (cols.start..c_end8).step_by(8) {
                let t = transpose_8x8(std::array::from_fn(|i| load((r0 + i) * n + c0)));
                for (j, v) in t.into_iter().enumerate() {
                    // SAFETY: output row `c0 + j - cols.start` < cols.len(), columns r0..r0 + 8
                    // <= rows: inside `dst` by our contract.
                    unsafe { _mm256_storeu_ps(d.add((c0 + j - cols.start) * rows + r0), v) };
                }
            }
        }
        for c in cols.clone() {
            let from = if c < c_end8 { rows8 } else { 0 };
            for r in from..rows {
                dst[(c - cols.start) * rows + r] = one(r * n + c);
            }
        }
    }

    /// [`transpose_with`] of f32 weights `w` (`[rows, n]`).
    ///
    /// # Safety
    /// The CPU supports AVX2, FMA and F16C; `w.len() >= rows · n`, `cols.end <= n`,
    /// `dst.len() >= cols.len() · rows`.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn transpose_f32(w: &[f32], rows: usize, n: usize, cols: std::ops::Range<usize>, dst: &mut [f32]) {
        let p = w.as_ptr();
        // SAFETY: as our contract; tile loads read 8 elements inside a row.
        unsafe { transpose_with(rows, n, cols, dst, |i| _mm256_loadu_ps(p.add(i)), |i| w[i]) }
    }

    /// [`transpose_with`] of half-precision weights (bf16 when `BF16`), converted to f32.
    ///
    /// # Safety
    /// As [`transpose_f32`].
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn transpose_half<const BF16: bool>(
        w: &[u16],
        rows: usize,
        n: usize,
        cols: std::ops::Range<usize>,
        dst: &mut [f32],
    ) {
        let p = w.as_ptr();
        // SAFETY: as our contract; tile loads read 8 u16 inside a row.
        unsafe {
            transpose_with(rows, n, cols, dst, |i| load_half::<BF16>(p.add(i)), |i| super::half_to_f32::<BF16>(w[i]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic weights in [-1, 1].
    fn weights(n: usize, seed: u32) -> Vec<f32> {
        (0..n as u32).map(|i| ((i.wrapping_mul(2654435761) ^ seed) % 2001) as f32 / 1000.0 - 1.0).collect()
    }

    /// The `[in, out]` GEMM layout is exactly the transpose of the stored one, for every weight
    /// type and for shapes whose edges are not multiples of the 8×8 tiles (SIMD transpose ==
    /// element by element).
    #[test]
    fn transposed_weights_are_the_stored_weights_transposed() {
        for (out, inp) in [(37, 45), (64, 40), (8, 8), (3, 70), (70, 3)] {
            let w = weights(out * inp, 7);
            for dtype in [WeightDtype::F32, WeightDtype::Bf16, WeightDtype::F16] {
                let m = Matrix::from_out_in(w.clone(), inp, out, dtype);
                let (mut a, mut b) = (Vec::new(), Vec::new());
                let stored = m.gemm_weights(false, &mut a).to_vec();
                let transposed = m.gemm_weights(true, &mut b);
                assert_eq!(transposed, visualrwkv_checkpoint::transpose(&stored, out, inp), "{dtype:?} {out}x{inp}");
            }
        }
    }

    /// The few-rows product equals the single-row products for every weight type, row counts
    /// around the four-row kernel's groups and inputs that are not multiples of its blocks.
    #[test]
    fn few_rows_products_equal_row_products() {
        for (out, inp) in [(37, 45), (70, 16), (5, 7), (64, 96)] {
            let w = weights(out * inp, 5);
            for t in [1, 2, 3, 4, 5, 8, 9, FEW_ROWS_MAX] {
                let x = weights(t * inp, 13);
                for dtype in [WeightDtype::F32, WeightDtype::Bf16, WeightDtype::F16, WeightDtype::I8] {
                    let m = Matrix::from_out_in(w.clone(), inp, out, dtype);
                    let mut y = vec![f32::NAN; t * out];
                    m.matmul_few(&x, t, &mut y);
                    for r in 0..t {
                        let mut want = vec![0f32; out];
                        m.matvec_rows(&x[r * inp..(r + 1) * inp], 0..out, &mut want);
                        for (g, w) in y[r * out..(r + 1) * out].iter().zip(&want) {
                            assert!(
                                (g - w).abs() <= 1e-4 * (1.0 + w.abs()),
                                "{dtype:?} {out}x{inp} t={t} row {r}: {g} vs {w}"
                            );
                        }
                    }
                }
            }
        }
    }

    /// Prompt products through either GEMM layout equal the single-row products.
    #[test]
    fn prompt_products_equal_row_products_on_both_layouts() {
        let (out, inp) = (37, 45);
        let w = weights(out * inp, 3);
        for t in [5, F32_TRANSPOSED_MIN_ROWS + 3] {
            let x = weights(t * inp, 11);
            for dtype in [WeightDtype::F32, WeightDtype::Bf16] {
                let m = Matrix::from_out_in(w.clone(), inp, out, dtype);
                let mut y = vec![0f32; t * out];
                m.matmul(&x, t, &mut y, &mut Vec::new());
                for r in 0..t {
                    let mut want = vec![0f32; out];
                    m.matvec_rows(&x[r * inp..(r + 1) * inp], 0..out, &mut want);
                    for (g, w) in y[r * out..(r + 1) * out].iter().zip(&want) {
                        assert!((g - w).abs() <= 1e-4 * (1.0 + w.abs()), "{dtype:?} t={t} row {r}: {g} vs {w}");
                    }
                }
            }
        }
    }
}
