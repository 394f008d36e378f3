//! The fast CPU path: the WKV6 recurrence over slices, one thread per group of `(batch, head)`
//! pairs, with the inner loop blocked so that a strip of the output stays in registers and
//! (on x86-64 with AVX2 and FMA, detected at run time) vectorised with fused multiply-adds.
//!
//! It computes exactly the sums of [`crate::reference::forward`] in a different association
//! order, so the two agree to rounding. Used by the `NdArray` backend's [`crate::Wkv6Backend`]
//! implementation for both sequence mode and single steps.
//!
//! # Shapes
//!
//! As in [`crate::reference`]: `[B, T, H, N]` sequences, `[H, N]` bonus, `[B, H, N, N]` state.

use num_traits::Float;

use crate::WkvError;
use crate::reference::{Dims, Inputs, Output, decay};

/// Width of the output strip kept in registers by the inner loop.
const STRIP: usize = 16;

/// Runs one `(batch, head)` over all `T` steps. `stride` is the distance between two time steps
/// in the input slices (`H·N`); `y` is this head's contiguous `[T, N]` output.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn head_inner<F: Float, const FMA: bool>(
    n: usize,
    t_len: usize,
    stride: usize,
    x: [&[F]; 4],
    u: &[F],
    state: &mut [F],
    y: &mut [F],
    w: &mut [F],
) {
    let fma = |a: F, b: F, c: F| if FMA { a.mul_add(b, c) } else { a * b + c };
    let [r_all, k_all, v_all, w_all] = x;
    for t in 0..t_len {
        let o = t * stride;
        let (r, k, v) = (&r_all[o..o + n], &k_all[o..o + n], &v_all[o..o + n]);
        for (wi, &wr) in w.iter_mut().zip(&w_all[o..o + n]) {
            *wi = decay(wr);
        }
        let bonus = (0..n).fold(F::zero(), |a, i| fma(r[i] * u[i], k[i], a));
        let yt = &mut y[t * n..(t + 1) * n];
        let mut j0 = 0;
        while j0 + STRIP <= n {
            let vs: [F; STRIP] = core::array::from_fn(|q| v[j0 + q]);
            let mut acc = [F::zero(); STRIP];
            for i in 0..n {
                let row: &mut [F; STRIP] = (&mut state[i * n + j0..i * n + j0 + STRIP]).try_into().unwrap();
                let (ri, ki, wi) = (r[i], k[i], w[i]);
                for q in 0..STRIP {
                    acc[q] = fma(ri, row[q], acc[q]);
                    row[q] = fma(wi, row[q], ki * vs[q]);
                }
            }
            for q in 0..STRIP {
                yt[j0 + q] = fma(bonus, vs[q], acc[q]);
            }
            j0 += STRIP;
        }
        for j in j0..n {
            let mut acc = F::zero();
            for i in 0..n {
                let s = &mut state[i * n + j];
                acc = fma(r[i], *s, acc);
                *s = fma(w[i], *s, k[i] * v[j]);
            }
            yt[j] = fma(bonus, v[j], acc);
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn head_avx2<F: Float>(
    n: usize,
    t_len: usize,
    stride: usize,
    x: [&[F]; 4],
    u: &[F],
    state: &mut [F],
    y: &mut [F],
    w: &mut [F],
) {
    head_inner::<F, true>(n, t_len, stride, x, u, state, y, w)
}

#[allow(clippy::too_many_arguments)]
fn head<F: Float>(n: usize, t_len: usize, stride: usize, x: [&[F]; 4], u: &[F], state: &mut [F], y: &mut [F]) {
    let mut w = vec![F::zero(); n];
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU supports the features enabled on `head_avx2`.
        unsafe { head_avx2(n, t_len, stride, x, u, state, y, &mut w) };
        return;
    }
    head_inner::<F, false>(n, t_len, stride, x, u, state, y, &mut w)
}

/// Number of worker threads for `jobs` independent heads.
fn threads_for(jobs: usize, work_per_job: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    // Below ~32k multiply-adds a thread costs more than it saves.
    let useful = (jobs * work_per_job / 32_768).max(1);
    cores.min(jobs).min(useful).max(1)
}

/// The WKV6 forward pass over slices, parallel over `(batch, head)`.
///
/// Same contract as [`crate::reference::forward`]: errors on slice lengths that do not match
/// `dims`, returns `y` `[B, T, H, N]` and the final state `[B, H, N, N]`.
pub fn forward<F: Float + Send + Sync>(dims: Dims, x: Inputs<'_, F>) -> Result<Output<F>, WkvError> {
    dims.check_inputs(&x)?;
    let Dims { b: nb, t: nt, h: nh, n } = dims;
    let mut state = match x.initial_state {
        Some(s) => s.to_vec(),
        None => vec![F::zero(); dims.state_len()],
    };
    let jobs = nb * nh;
    let mut head_y = vec![F::zero(); jobs * nt * n];
    let threads = threads_for(jobs, nt * n * n);
    {
        let mut work: Vec<(usize, &mut [F], &mut [F])> = state
            .chunks_mut(n * n)
            .zip(head_y.chunks_mut(nt * n))
            .enumerate()
            .map(|(job, (s, y))| (job, s, y))
            .collect();
        let per_thread = jobs.div_ceil(threads);
        let run = |part: &mut [(usize, &mut [F], &mut [F])]| {
            for (job, s, y) in part.iter_mut() {
                let (b, h) = (*job / nh, *job % nh);
                let o = dims.seq_index(b, 0, h, 0);
                let len = (nt - 1) * nh * n + n;
                let xs = [&x.r[o..o + len], &x.k[o..o + len], &x.v[o..o + len], &x.w_raw[o..o + len]];
                head(n, nt, nh * n, xs, &x.u[h * n..(h + 1) * n], s, y);
            }
        };
        if threads == 1 {
            run(&mut work);
        } else {
            std::thread::scope(|scope| {
                for part in work.chunks_mut(per_thread) {
                    scope.spawn(|| run(part));
                }
            });
        }
    }
    // Scatter the per-head [T, N] outputs into [B, T, H, N].
    let mut y = vec![F::zero(); dims.seq_len()];
    for (job, hy) in head_y.chunks(nt * n).enumerate() {
        let (b, h) = (job / nh, job % nh);
        for t in 0..nt {
            let o = dims.seq_index(b, t, h, 0);
            y[o..o + n].copy_from_slice(&hy[t * n..(t + 1) * n]);
        }
    }
    Ok(Output { y, state })
}

#[cfg(feature = "ndarray")]
pub(crate) use ndarray_glue::forward_primitives;

#[cfg(feature = "ndarray")]
mod ndarray_glue {
    use burn::tensor::{DType, Tensor, TensorData, TensorPrimitive, backend::Backend, ops::FloatTensor};

    use super::forward;
    use crate::reference::{Dims, Inputs};

    fn values<B: Backend, const D: usize, F: burn::tensor::Element>(x: FloatTensor<B>) -> (Vec<F>, [usize; D]) {
        let t = Tensor::<B, D>::from_primitive(TensorPrimitive::Float(x));
        let dims = t.dims();
        let data = t.into_data().convert::<F>();
        (data.into_vec::<F>().expect("converted to the requested element type"), dims)
    }

    fn tensor<B: Backend, const D: usize, F: burn::tensor::Element>(
        v: Vec<F>,
        shape: [usize; D],
        device: &B::Device,
    ) -> FloatTensor<B> {
        Tensor::<B, D>::from_data(TensorData::new(v, shape), device).into_primitive().tensor()
    }

    fn run<B: Backend, F: burn::tensor::Element + num_traits::Float + Send + Sync>(
        x: [FloatTensor<B>; 6],
        step: bool,
    ) -> (FloatTensor<B>, FloatTensor<B>) {
        let [r, k, v, w, u, s] = x;
        let device = B::float_device(&r);
        // A step is a sequence of length 1: [B, H, N] has the layout of [B, 1, H, N].
        let (dims, r, k, v, w) = if step {
            let (r, [b, h, n]) = values::<B, 3, F>(r);
            (Dims::new(b, 1, h, n), r, values::<B, 3, F>(k).0, values::<B, 3, F>(v).0, values::<B, 3, F>(w).0)
        } else {
            let (r, [b, t, h, n]) = values::<B, 4, F>(r);
            (Dims::new(b, t, h, n), r, values::<B, 4, F>(k).0, values::<B, 4, F>(v).0, values::<B, 4, F>(w).0)
        };
        let (u, _) = values::<B, 2, F>(u);
        let (s, s_shape) = values::<B, 4, F>(s);
        let inputs = Inputs { r: &r, k: &k, v: &v, w_raw: &w, u: &u, initial_state: Some(&s) };
        let out = forward(dims, inputs).expect("shapes checked by the public entry point");
        let Dims { b, t, h, n } = dims;
        let y = if step { tensor::<B, 3, F>(out.y, [b, h, n], &device) } else { tensor::<B, 4, F>(out.y, [b, t, h, n], &device) };
        (y, tensor::<B, 4, F>(out.state, s_shape, &device))
    }

    /// Runs [`forward`] on backend primitives: in f64 for f64 tensors, in f32 otherwise.
    pub(crate) fn forward_primitives<B: Backend>(
        r: FloatTensor<B>,
        k: FloatTensor<B>,
        v: FloatTensor<B>,
        w_raw: FloatTensor<B>,
        u: FloatTensor<B>,
        state: FloatTensor<B>,
        step: bool,
    ) -> (FloatTensor<B>, FloatTensor<B>) {
        let is_f64 = Tensor::<B, 2>::from_primitive(TensorPrimitive::Float(u.clone())).dtype() == DType::F64;
        let x = [r, k, v, w_raw, u, state];
        if is_f64 { run::<B, f64>(x, step) } else { run::<B, f32>(x, step) }
    }
}
