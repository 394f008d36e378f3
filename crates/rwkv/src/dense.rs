//! The backend trait of the model, [`RwkvBackend`]: WKV6 plus the dense projections.
//!
//! Decoding multiplies one row by every weight matrix: a matrix-vector product, bound by the
//! memory bandwidth of reading the weights once. General matmul routines pack the whole weight
//! matrix for every call, which on the CPU costs many times the read itself.
//! `RwkvBackend::dense` therefore has a default (the backend's matmul) and a CPU override for a
//! few rows that streams the weights once, split over the cores.
//!
//! # Shapes
//!
//! `dense(x [M, K], w [K, N]) -> [M, N]` (burn's `Linear` layout: `w` is `[d_input, d_output]`).

use burn::nn::Linear;
use burn::tensor::{Tensor, TensorPrimitive, backend::Backend, ops::FloatTensor};
use visualrwkv_wkv::{Wkv6Backend, Wkv7Backend};

/// A backend that can run the RWKV-6 and RWKV-7 models: WKV6 ([`Wkv6Backend`]), WKV7
/// ([`Wkv7Backend`]) and dense projections.
pub trait RwkvBackend: Wkv6Backend + Wkv7Backend {
    /// `x [M, K] · w [K, N]`. The default is the backend's matmul.
    fn dense(x: FloatTensor<Self>, w: FloatTensor<Self>) -> FloatTensor<Self> {
        let x = Tensor::<Self, 2>::from_primitive(TensorPrimitive::Float(x));
        let w = Tensor::<Self, 2>::from_primitive(TensorPrimitive::Float(w));
        x.matmul(w).into_primitive().tensor()
    }
}

/// Applies a bias-free [`Linear`] to `x` `[B, T, K]` through [`RwkvBackend::dense`].
pub fn linear<B: RwkvBackend, const D: usize>(layer: &Linear<B>, x: Tensor<B, D>) -> Tensor<B, D> {
    let dims = x.dims();
    let k = dims[D - 1];
    let rows = dims[..D - 1].iter().product::<usize>();
    let w = layer.weight.val();
    let n = w.dims()[1];
    let y = B::dense(x.reshape([rows, k]).into_primitive().tensor(), w.into_primitive().tensor());
    let mut out = dims;
    out[D - 1] = n;
    let y = Tensor::<B, 2>::from_primitive(TensorPrimitive::Float(y)).reshape(out);
    match &layer.bias {
        Some(b) => {
            y + b.val().reshape({
                let mut s = [1; D];
                s[D - 1] = n;
                s
            })
        }
        None => y,
    }
}

/// Rows up to which the CPU uses the streaming matrix-vector kernel.
pub const GEMV_MAX_ROWS: usize = 4;

/// `y [M, N] = x [M, K] · w [K, N]` for a few rows, streaming `w` once: each of `threads` workers
/// owns a block of output columns and accumulates `y[m, cols] += x[m, k] · w[k, cols]` over `k`.
pub(crate) fn gemv_rows(x: &[f32], w: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
    assert_eq!(x.len(), m * k);
    assert_eq!(w.len(), k * n);
    let mut y = vec![0f32; m * n];
    let cores = visualrwkv_wkv::cpu::cores();
    let threads = if k * n >= 1 << 18 { cores.min(n.div_ceil(64)).max(1) } else { 1 };
    let block = n.div_ceil(threads).next_multiple_of(16).min(n);
    // Columns [c0, c1) of every row, written to `out` ([M, c1 - c0]).
    let work = |c0: usize, c1: usize, out: &mut [f32]| {
        let width = c1 - c0;
        for kk in 0..k {
            let wrow = &w[kk * n + c0..kk * n + c1];
            for mm in 0..m {
                let a = x[mm * k + kk];
                if a != 0.0 {
                    let o = &mut out[mm * width..(mm + 1) * width];
                    for (o, &wv) in o.iter_mut().zip(wrow) {
                        *o += a * wv;
                    }
                }
            }
        }
    };
    let ranges: Vec<(usize, usize)> = (0..n).step_by(block.max(1)).map(|c0| (c0, (c0 + block).min(n))).collect();
    if ranges.len() == 1 {
        work(0, n, &mut y);
        return y;
    }
    let mut parts: Vec<Vec<f32>> = ranges.iter().map(|&(c0, c1)| vec![0f32; m * (c1 - c0)]).collect();
    std::thread::scope(|s| {
        for (&(c0, c1), part) in ranges.iter().zip(parts.iter_mut()) {
            s.spawn(move || work(c0, c1, part));
        }
    });
    for (&(c0, c1), part) in ranges.iter().zip(&parts) {
        let width = c1 - c0;
        for mm in 0..m {
            y[mm * n + c0..mm * n + c1].copy_from_slice(&part[mm * width..(mm + 1) * width]);
        }
    }
    y
}

#[cfg(feature = "ndarray")]
mod ndarray_impl {
    use burn::backend::NdArray;
    use burn::backend::ndarray::{FloatNdArrayElement, IntNdArrayElement, NdArrayTensor, QuantElement, SharedArray};
    use burn::tensor::TensorMetadata;
    use burn::tensor::ops::FloatTensor;

    use visualrwkv_wkv::cpu::view_f32;

    use super::{GEMV_MAX_ROWS, RwkvBackend, gemv_rows};

    /// Few rows of f32: the streaming kernel; otherwise burn-ndarray's matmul.
    impl<E: FloatNdArrayElement, I: IntNdArrayElement, Q: QuantElement> RwkvBackend for NdArray<E, I, Q>
    where
        NdArrayTensor: From<SharedArray<E>>,
        NdArrayTensor: From<SharedArray<I>>,
    {
        fn dense(x: FloatTensor<Self>, w: FloatTensor<Self>) -> FloatTensor<Self> {
            let (xs, ws) = (x.shape().to_vec(), w.shape().to_vec());
            if let (&[m, k], &[k2, n]) = (&xs[..], &ws[..])
                && m <= GEMV_MAX_ROWS
                && k == k2
                && let (Some(xv), Some(wv)) = (view_f32(&x), view_f32(&w))
            {
                let y = gemv_rows(&xv, &wv, m, k, n);
                return SharedArray::<f32>::from_shape_vec(vec![m, n], y).expect("[M, N]").into();
            }
            let x = burn::tensor::Tensor::<Self, 2>::from_primitive(burn::tensor::TensorPrimitive::Float(x));
            let w = burn::tensor::Tensor::<Self, 2>::from_primitive(burn::tensor::TensorPrimitive::Float(w));
            x.matmul(w).into_primitive().tensor()
        }
    }
}

#[cfg(feature = "autodiff")]
impl<B: Backend, C: burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy> RwkvBackend
    for burn::backend::Autodiff<B, C>
where
    burn::backend::Autodiff<B, C>: Wkv6Backend + Wkv7Backend,
{
}

#[cfg(any(feature = "wgpu", feature = "cuda"))]
mod cube_impl {
    use burn_cubecl::{BoolElement, CubeBackend, CubeRuntime, FloatElement, IntElement};
    use burn_fusion::{Fusion, FusionBackend};

    use super::RwkvBackend;

    impl<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement> RwkvBackend for CubeBackend<R, F, I, BT> {}

    impl<B: FusionBackend + visualrwkv_wkv::Wkv6Backend + visualrwkv_wkv::Wkv7Backend> RwkvBackend for Fusion<B> {}
}

#[cfg(feature = "tch")]
impl<E: burn::backend::libtorch::TchElement> RwkvBackend for burn::backend::LibTorch<E> {}

#[cfg(test)]
mod tests {
    use super::gemv_rows;

    #[test]
    fn gemv_equals_naive_product() {
        for (m, k, n) in [(1, 7, 5), (3, 64, 300), (2, 512, 1024), (4, 3, 1)] {
            let x: Vec<f32> = (0..m * k).map(|i| ((i * 37) % 11) as f32 - 5.0).collect();
            let w: Vec<f32> = (0..k * n).map(|i| ((i * 13) % 7) as f32 * 0.25 - 0.5).collect();
            let y = gemv_rows(&x, &w, m, k, n);
            for mm in 0..m {
                for nn in 0..n {
                    let want: f32 = (0..k).map(|kk| x[mm * k + kk] * w[kk * n + nn]).sum();
                    assert!((y[mm * n + nn] - want).abs() <= 1e-3 * want.abs().max(1.0), "{m}x{k}x{n} [{mm},{nn}]");
                }
            }
        }
    }
}
