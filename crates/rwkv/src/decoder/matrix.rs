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

/// Matrices of at least this many weights are split over the cores.
const PARALLEL_MIN: usize = 1 << 15;

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

    /// The weights as f32 `[out, in]`: borrowed when stored in f32, else converted into
    /// `scratch` (quantised matrices never need this: their products stay in integers).
    fn f32_weights<'a>(&'a self, scratch: &'a mut Vec<f32>) -> &'a [f32] {
        use rayon::prelude::*;
        let len = self.out * self.inp;
        if let Data::F32(v) = &self.data {
            return v;
        }
        scratch.resize(len, 0.0);
        match &self.data {
            Data::Half { bits, bf16 } => scratch
                .par_chunks_mut(1 << 14)
                .zip(bits.par_chunks(1 << 14))
                .for_each(|(d, s)| halves_to_f32(s, *bf16, d)),
            _ => scratch.par_chunks_mut(self.inp.max(1)).enumerate().for_each(|(o, d)| self.row_into(o, d)),
        }
        &scratch[..len]
    }

    /// `Y = X·Wᵀ` for `t` rows: `x` `[t, in]`, `y` `[t, out]` (row-major), through a cache-blocked
    /// GEMM on rayon's pool. Half-precision weights are first converted to f32 into `scratch`
    /// (a pass over the matrix, small next to the `t·in·out` multiply-adds of a prompt).
    pub(crate) fn matmul(&self, x: &[f32], t: usize, y: &mut [f32], scratch: &mut Vec<f32>) {
        assert!(x.len() >= t * self.inp && y.len() >= t * self.out, "matmul: slices shorter than [t, in] / [t, out]");
        if t == 0 {
            return;
        }
        if let Data::Quantized(p) = &self.data {
            p.matmul(&Activations::quantize(x, t, self.inp), y);
            return;
        }
        let w = self.f32_weights(scratch);
        let (m, n, k) = (t, self.out, self.inp);
        // SAFETY: `x` holds `t·in` elements read at `row·in + col`, `w` holds `out·in` read at
        // `o·in + i` (rhs element (i, o): row stride 1, column stride `in`), `y` holds `t·out`
        // written at `row·out + o` (checked above); the three do not overlap (`y` is a unique
        // borrow).
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
                k as isize,
                1,
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
}
