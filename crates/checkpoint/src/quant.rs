//! Block-quantised weights: the int8 and 4-bit formats of the fused decoder and of quantised
//! checkpoints (`visualrwkv convert --quantize`), written once here.
//!
//! Both cut each row of a matrix into blocks of [`BLOCK`] weights with one f32 scale per block:
//!
//! - [`Quant::Q8`] (llama.cpp's Q8_0 with an f32 scale): scale `max|w| / 127`, each weight the
//!   nearest multiple of it, as an `i8` in `-127..=127`. A weight's error is at most half a step
//!   (1/254 of its block's largest magnitude).
//! - [`Quant::Q4`] (llama.cpp's Q4_0 with an f32 scale): scale `m / -8` for the weight `m` of
//!   largest magnitude (sign kept), each weight the nearest of the 16 multiples `-8..=7` of it
//!   (`m` itself exactly; error at most half a step, 1/16 of the largest magnitude, except weights
//!   of the other sign near `-m`, clamped at 7 steps). Two weights per byte: element `j` of a
//!   block in the low nibble of byte `j`, element `j + 16` in its high nibble; a row's last block
//!   is padded with zeros (code 8).
//!
//! Quantising values that are already on a block's grid gives back the same codes and scales,
//! so a checkpoint saved quantised and read back as f32 ([`crate::TensorMap`] dequantises) is
//! quantised again without further loss.
//!
//! # Shapes
//!
//! A matrix `[out, in]` (row-major) → codes `[out, row_bytes(in)]` and scales
//! `[out, ⌈in / BLOCK⌉]`.

/// Weights per block (one scale each).
pub const BLOCK: usize = 32;

/// A block-quantised format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quant {
    /// int8 codes, one byte per weight.
    Q8,
    /// 4-bit codes, two weights per byte.
    Q4,
}

impl Quant {
    /// The format's name in files and on the command line: `q8` or `q4`.
    pub fn name(self) -> &'static str {
        match self {
            Quant::Q8 => "q8",
            Quant::Q4 => "q4",
        }
    }

    /// The format named `q8` (or `i8`) or `q4`.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "q8" | "i8" => Some(Quant::Q8),
            "q4" => Some(Quant::Q4),
            _ => None,
        }
    }

    /// Bytes of codes per row of `inp` weights.
    pub fn row_bytes(self, inp: usize) -> usize {
        match self {
            Quant::Q8 => inp,
            Quant::Q4 => inp.div_ceil(BLOCK) * BLOCK / 2,
        }
    }

    /// `w` `[out, in]` quantised: codes `[out, row_bytes(in)]` as bytes (int8 codes as their
    /// two's-complement bytes) and scales `[out, ⌈in / BLOCK⌉]`.
    pub fn quantize(self, w: &[f32], inp: usize, out: usize) -> (Vec<u8>, Vec<f32>) {
        match self {
            Quant::Q8 => {
                let (q, s) = quantize_rows(w, inp, out, inp, quantize_row_q8);
                (q.into_iter().map(|c: i8| c as u8).collect(), s)
            }
            Quant::Q4 => quantize_rows(w, inp, out, self.row_bytes(inp), quantize_row_q4),
        }
    }

    /// Codes and scales of [`Quant::quantize`] back to f32 `[out, in]`; `None` when their
    /// lengths do not fit `[out, in]`.
    pub fn dequantize(self, codes: &[u8], scales: &[f32], inp: usize, out: usize) -> Option<Vec<f32>> {
        use rayon::prelude::*;
        let (rb, blocks) = (self.row_bytes(inp), inp.div_ceil(BLOCK));
        if codes.len() != out * rb || scales.len() != out * blocks {
            return None;
        }
        let mut w = vec![0f32; out * inp];
        if inp > 0 {
            let rows = w.par_chunks_mut(inp).zip(codes.par_chunks(rb)).zip(scales.par_chunks(blocks));
            match self {
                Quant::Q8 => rows.for_each(|((d, q), s)| dequantize_row_q8(as_i8(q), s, d)),
                Quant::Q4 => rows.for_each(|((d, q), s)| dequantize_row_q4(q, s, d)),
            }
        }
        Some(w)
    }
}

/// Bytes as the `i8` codes they hold (two's complement), as int8 codes are stored.
pub fn as_i8(bytes: &[u8]) -> &[i8] {
    // SAFETY: `i8` and `u8` have the same size and alignment and every bit pattern is valid for
    // both; the slice borrows `bytes` for its lifetime.
    unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast::<i8>(), bytes.len()) }
}

/// [`as_i8`] for writing: int8 codes quantised straight into a byte buffer.
pub fn as_i8_mut(bytes: &mut [u8]) -> &mut [i8] {
    // SAFETY: as `as_i8`; the slice borrows `bytes` uniquely for its lifetime.
    unsafe { std::slice::from_raw_parts_mut(bytes.as_mut_ptr().cast::<i8>(), bytes.len()) }
}

/// `w` `[out, in]` quantised row by row in parallel by `row` into `row_bytes` codes and
/// `⌈in / BLOCK⌉` scales per row.
pub fn quantize_rows<Q: Copy + Default + Send>(
    w: &[f32],
    inp: usize,
    out: usize,
    row_bytes: usize,
    row: impl Fn(&[f32], &mut [Q], &mut [f32]) + Sync,
) -> (Vec<Q>, Vec<f32>) {
    use rayon::prelude::*;
    let blocks = inp.div_ceil(BLOCK);
    let (mut q, mut scales) = (vec![Q::default(); out * row_bytes], vec![0f32; out * blocks]);
    if inp > 0 {
        q.par_chunks_mut(row_bytes)
            .zip(scales.par_chunks_mut(blocks))
            .zip(w.par_chunks(inp))
            .for_each(|((q, s), w)| row(w, q, s));
    }
    (q, scales)
}

/// One row `w` `[in]` as int8 codes `q` `[in]` with one scale per block.
pub fn quantize_row_q8(w: &[f32], q: &mut [i8], scales: &mut [f32]) {
    for ((w, q), scale) in w.chunks(BLOCK).zip(q.chunks_mut(BLOCK)).zip(scales) {
        let max = w.iter().fold(0f32, |m, v| m.max(v.abs()));
        *scale = max / 127.0;
        let inv = if max > 0.0 { 127.0 / max } else { 0.0 };
        for (q, &v) in q.iter_mut().zip(w) {
            *q = (v * inv).round().clamp(-127.0, 127.0) as i8;
        }
    }
}

/// One int8 row back to f32 (`dst` `[in]`).
pub fn dequantize_row_q8(q: &[i8], scales: &[f32], dst: &mut [f32]) {
    for ((d, q), s) in dst.chunks_mut(BLOCK).zip(q.chunks(BLOCK)).zip(scales) {
        d.iter_mut().zip(q).for_each(|(d, &q)| *d = f32::from(q) * s);
    }
}

/// One row `w` `[in]` as 4-bit codes `q` (`⌈in / BLOCK⌉ · 16` bytes) with one scale per block.
pub fn quantize_row_q4(w: &[f32], q: &mut [u8], scales: &mut [f32]) {
    for ((w, q), scale) in w.chunks(BLOCK).zip(q.chunks_mut(BLOCK / 2)).zip(scales) {
        let m = w.iter().fold(0f32, |m, &v| if v.abs() > m.abs() { v } else { m });
        *scale = m / -8.0;
        let inv = if m != 0.0 { -8.0 / m } else { 0.0 };
        // Code 8 is zero: the padding of a short last block.
        q.fill(0x88);
        for (j, &v) in w.iter().enumerate() {
            let code = ((v * inv).round() + 8.0).clamp(0.0, 15.0) as u8;
            let (byte, shift) = (j % 16, 4 * (j / 16));
            q[byte] = (q[byte] & !(0xF << shift)) | (code << shift);
        }
    }
}

/// Element `j` of a 4-bit block's 16 bytes as its signed step count (`-8..=7`).
#[inline(always)]
pub fn q4_steps(block: &[u8], j: usize) -> f32 {
    f32::from(((block[j % 16] >> (4 * (j / 16))) & 0xF) as i8 - 8)
}

/// One 4-bit row back to f32 (`dst` `[in]`).
pub fn dequantize_row_q4(q: &[u8], scales: &[f32], dst: &mut [f32]) {
    for ((d, q), s) in dst.chunks_mut(BLOCK).zip(q.chunks(BLOCK / 2)).zip(scales) {
        d.iter_mut().enumerate().for_each(|(j, d)| *d = q4_steps(q, j) * s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic spread of values, with zero blocks and odd row lengths.
    fn weights(n: usize) -> Vec<f32> {
        (0..n).map(|i| ((i * 7919 % 1000) as f32 - 500.0) * 1e-3 * if i % 97 < 40 { 1.0 } else { 0.0 }).collect()
    }

    #[test]
    fn quantised_weights_stay_within_half_a_step_and_requantise_exactly() {
        for quant in [Quant::Q8, Quant::Q4] {
            for (inp, out) in [(64, 3), (45, 4), (7, 2), (1, 1)] {
                let w = weights(inp * out);
                let (codes, scales) = quant.quantize(&w, inp, out);
                assert_eq!(codes.len(), out * quant.row_bytes(inp));
                let back = quant.dequantize(&codes, &scales, inp, out).unwrap();
                let blocks = inp.div_ceil(BLOCK);
                for (i, (&a, &b)) in w.iter().zip(&back).enumerate() {
                    let step = scales[i / inp * blocks + i % inp / BLOCK].abs();
                    // Q4 clamps the other sign's extreme at 7 steps: within one step there.
                    let bound = if quant == Quant::Q4 { step } else { step / 2.0 } + 1e-7;
                    assert!((a - b).abs() <= bound, "{quant:?} [{out}, {inp}] #{i}: {a} vs {b} (step {step})");
                }
                // Values on the grid quantise to the same codes and (nearly) the same scales.
                let (codes2, scales2) = quant.quantize(&back, inp, out);
                assert_eq!(codes, codes2, "{quant:?} [{out}, {inp}]");
                for (s, t) in scales.iter().zip(&scales2) {
                    assert!((s - t).abs() <= s.abs() * 1e-6, "{s} vs {t}");
                }
                assert!(quant.dequantize(&codes[1..], &scales, inp, out).is_none());
            }
        }
        assert_eq!(Quant::parse("q4"), Some(Quant::Q4));
        assert_eq!(Quant::parse(Quant::Q8.name()), Some(Quant::Q8));
        assert_eq!(Quant::parse("q5"), None);
    }
}
