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

mod backward;
pub use backward::backward;

use crate::WkvError;
use crate::reference::{Dims, Inputs, Output, decay};

/// Width of the output strip kept in registers by the inner loop.
const STRIP: usize = 32;

/// Time steps to prefetch ahead (the inputs of one head are strided in time).
const PREFETCH: usize = 4;

/// Hints the CPU to load the cache lines holding `x[..N]` (a no-op off x86-64).
#[inline(always)]
fn prefetch<F>(x: &[F]) {
    #[cfg(target_arch = "x86_64")]
    {
        let bytes = std::mem::size_of_val(x).min(256);
        let p = x.as_ptr() as *const i8;
        for off in (0..bytes).step_by(64) {
            // SAFETY: prefetching never faults; the address lies inside `x`.
            unsafe { core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(p.add(off)) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = x;
}

/// Element types of the CPU kernel: f32 (with a vectorisable `exp`) and f64.
pub trait KernelFloat: Float + Send + Sync + 'static {
    /// The decay `exp(-exp(w_raw))`, as [`decay`] but in a form the compiler can vectorise.
    fn fast_decay(w_raw: Self) -> Self;
}

impl KernelFloat for f64 {
    #[inline(always)]
    fn fast_decay(w_raw: f64) -> f64 {
        decay(w_raw)
    }
}

impl KernelFloat for f32 {
    #[inline(always)]
    fn fast_decay(w_raw: f32) -> f32 {
        exp_f32(-exp_f32(w_raw))
    }
}

/// `e^x` for f32 within 2 ulp, branch-free and integer-conversion-free so that loops over it
/// vectorise (Cody–Waite range reduction and the Cephes minimax polynomial).
///
/// Inputs are clamped to `[-87.3, 88.3]`: below, the result saturates at `e^-87.3 ≈ 1.2e-38`
/// (where the exact value is `< 1.2e-38`).
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const C1: f32 = 0.693_359_4;
    const C2: f32 = -2.121_944_4e-4;
    // 1.5 * 2^23: adding it rounds to an integer held in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    let xc = x.clamp(-87.3, 88.3);
    let nb = (xc * LOG2E + ROUND).to_bits();
    let n = f32::from_bits(nb) - ROUND;
    let r = xc - n * C1 - n * C2;
    let mut p = 1.987_569_2e-4_f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let y = p * r * r + r + 1.0;
    // 2^n from the integer in the mantissa of `nb` (n in [-126, 128]).
    let scale = f32::from_bits(nb.wrapping_sub(ROUND.to_bits()).wrapping_add(127) << 23);
    y * scale
}

/// Output columns `j0..j0 + W` of one step: `y[j] = bonus·v[j] + sum_i r[i]·S[i, j]` with the
/// strip's accumulators in registers, and the matching state update `S[i, j] = w[i]·S[i, j] + k[i]·v[j]`.
#[inline(always)]
fn strip<F: KernelFloat, const FMA: bool, const W: usize>(
    j0: usize,
    x: [&[F]; 4],
    bonus: F,
    state: &mut [F],
    yt: &mut [F],
) {
    let fma = |a: F, b: F, c: F| if FMA { a.mul_add(b, c) } else { a * b + c };
    let [r, k, w, v] = x;
    let n = r.len();
    let vs: [F; W] = core::array::from_fn(|q| v[j0 + q]);
    let mut acc = [F::zero(); W];
    for i in 0..n {
        let row: &mut [F; W] = (&mut state[i * n + j0..i * n + j0 + W]).try_into().unwrap();
        let (ri, ki, wi) = (r[i], k[i], w[i]);
        for q in 0..W {
            acc[q] = fma(ri, row[q], acc[q]);
            row[q] = fma(wi, row[q], ki * vs[q]);
        }
    }
    for q in 0..W {
        yt[j0 + q] = fma(bonus, vs[q], acc[q]);
    }
}

/// Two consecutive steps `t`, `t + 1` on output columns `j0..j0 + W`: each state strip is loaded
/// and stored once for both steps (halving the state traffic of [`strip`]). `y_{t+1}` reads the
/// state after step `t`, as the recurrence requires; columns are independent, so this is exact.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn strip2<F: KernelFloat, const FMA: bool, const W: usize>(
    j0: usize,
    x0: [&[F]; 4],
    x1: [&[F]; 4],
    bonus: [F; 2],
    state: &mut [F],
    y0: &mut [F],
    y1: &mut [F],
) {
    let fma = |a: F, b: F, c: F| if FMA { a.mul_add(b, c) } else { a * b + c };
    let ([r0, k0, w0, v0], [r1, k1, w1, v1]) = (x0, x1);
    let n = r0.len();
    let vs0: [F; W] = core::array::from_fn(|q| v0[j0 + q]);
    let vs1: [F; W] = core::array::from_fn(|q| v1[j0 + q]);
    let (mut acc0, mut acc1) = ([F::zero(); W], [F::zero(); W]);
    for i in 0..n {
        let row: &mut [F; W] = (&mut state[i * n + j0..i * n + j0 + W]).try_into().unwrap();
        let (ra, ka, wa, rb, kb, wb) = (r0[i], k0[i], w0[i], r1[i], k1[i], w1[i]);
        for q in 0..W {
            let s = row[q];
            acc0[q] = fma(ra, s, acc0[q]);
            let s = fma(wa, s, ka * vs0[q]);
            acc1[q] = fma(rb, s, acc1[q]);
            row[q] = fma(wb, s, kb * vs1[q]);
        }
    }
    for q in 0..W {
        y0[j0 + q] = fma(bonus[0], vs0[q], acc0[q]);
        y1[j0 + q] = fma(bonus[1], vs1[q], acc1[q]);
    }
}

/// One step on the single column `j` (the tail when `N` is not a multiple of 8).
#[inline(always)]
fn column<F: KernelFloat, const FMA: bool>(j: usize, x: [&[F]; 4], bonus: F, state: &mut [F], yt: &mut [F]) {
    let fma = |a: F, b: F, c: F| if FMA { a.mul_add(b, c) } else { a * b + c };
    let [r, k, w, v] = x;
    let n = r.len();
    let mut acc = F::zero();
    for i in 0..n {
        let s = &mut state[i * n + j];
        acc = fma(r[i], *s, acc);
        *s = fma(w[i], *s, k[i] * v[j]);
    }
    yt[j] = fma(bonus, v[j], acc);
}

/// Prepares step `t` of one head: prefetches a few steps ahead, writes the decays into `w` and
/// returns the bonus `sum_i r_i u_i k_i`.
#[inline(always)]
fn prepare<F: KernelFloat, const FMA: bool>(t: usize, stride: usize, x: [&[F]; 4], u: &[F], w: &mut [F]) -> F {
    let fma = |a: F, b: F, c: F| if FMA { a.mul_add(b, c) } else { a * b + c };
    let n = u.len();
    let o = t * stride;
    let ahead = o + PREFETCH * stride;
    if ahead < x[3].len() {
        for a in x {
            prefetch(&a[ahead..]);
        }
    }
    let [r, k, _, w_raw] = x;
    for (wi, &wr) in w.iter_mut().zip(&w_raw[o..o + n]) {
        *wi = F::fast_decay(wr);
    }
    // Eight independent lanes: a single chain would serialise on FMA latency.
    let mut lanes = [F::zero(); 8];
    for (i, (&ri, (&ui, &ki))) in r[o..o + n].iter().zip(u.iter().zip(&k[o..o + n])).enumerate() {
        lanes[i % 8] = fma(ri * ui, ki, lanes[i % 8]);
    }
    lanes.iter().fold(F::zero(), |a, &l| a + l)
}

/// Runs one `(batch, head)` over all `T` steps, updating `state` (`[N, N]`, key-major) in place.
/// `stride` is the distance between two time steps in the input slices and in the output (`H·N`);
/// `y` points at this head's first output element; `w` is scratch of length `2N`.
///
/// # Safety
///
/// `y.add(t * stride + j)` must be valid for writes for every `t < t_len`, `j < n`, and no other
/// thread may access those elements during the call.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn head_inner<F: KernelFloat, const FMA: bool>(
    n: usize,
    t_len: usize,
    stride: usize,
    x: [&[F]; 4],
    u: &[F],
    state: &mut [F],
    y: *mut F,
    w: &mut [F],
) {
    // SAFETY: guaranteed by the caller (see above).
    let out = |t: usize| unsafe { std::slice::from_raw_parts_mut(y.add(t * stride), n) };
    let (wa, wb) = w.split_at_mut(n);
    fn step_x<'a, F>(x: [&'a [F]; 4], t: usize, stride: usize, w: &'a [F]) -> [&'a [F]; 4] {
        let n = w.len();
        let at = |a: &'a [F]| &a[t * stride..t * stride + n];
        [at(x[0]), at(x[1]), w, at(x[2])]
    }
    let mut t = 0;
    while t + 1 < t_len {
        let b0 = prepare::<F, FMA>(t, stride, x, u, wa);
        let b1 = prepare::<F, FMA>(t + 1, stride, x, u, wb);
        let (x0, x1) = (step_x(x, t, stride, wa), step_x(x, t + 1, stride, wb));
        let (y0, y1) = (out(t), out(t + 1));
        let mut j0 = 0;
        while j0 + 16 <= n {
            strip2::<F, FMA, 16>(j0, x0, x1, [b0, b1], state, y0, y1);
            j0 += 16;
        }
        while j0 + 8 <= n {
            strip2::<F, FMA, 8>(j0, x0, x1, [b0, b1], state, y0, y1);
            j0 += 8;
        }
        for j in j0..n {
            column::<F, FMA>(j, x0, b0, state, y0);
            column::<F, FMA>(j, x1, b1, state, y1);
        }
        t += 2;
    }
    if t < t_len {
        let b = prepare::<F, FMA>(t, stride, x, u, wa);
        let xt = step_x(x, t, stride, wa);
        let yt = out(t);
        let mut j0 = 0;
        while j0 + STRIP <= n {
            strip::<F, FMA, STRIP>(j0, xt, b, state, yt);
            j0 += STRIP;
        }
        while j0 + 8 <= n {
            strip::<F, FMA, 8>(j0, xt, b, state, yt);
            j0 += 8;
        }
        for j in j0..n {
            column::<F, FMA>(j, xt, b, state, yt);
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn head_avx2<F: KernelFloat>(
    n: usize,
    t_len: usize,
    stride: usize,
    x: [&[F]; 4],
    u: &[F],
    state: &mut [F],
    y: *mut F,
    w: &mut [F],
) {
    // SAFETY: forwarded from the caller.
    unsafe { head_inner::<F, true>(n, t_len, stride, x, u, state, y, w) }
}

/// One `(batch, head)`; see [`head_inner`] for the contract on `y`.
///
/// # Safety
///
/// As [`head_inner`].
#[allow(clippy::too_many_arguments)]
unsafe fn head<F: KernelFloat>(
    n: usize,
    t_len: usize,
    stride: usize,
    x: [&[F]; 4],
    u: &[F],
    state: &mut [F],
    y: *mut F,
) {
    let mut w = vec![F::zero(); 2 * n];
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU supports the features enabled on `head_avx2`; `y` as in our contract.
        unsafe { head_avx2(n, t_len, stride, x, u, state, y, &mut w) };
        return;
    }
    // SAFETY: as in our contract.
    unsafe { head_inner::<F, false>(n, t_len, stride, x, u, state, y, &mut w) }
}

/// A raw output pointer shared by the worker threads, each writing a disjoint set of elements.
#[derive(Clone, Copy)]
struct OutPtr<F>(*mut F);

impl<F> OutPtr<F> {
    /// The pointer (a method, so that closures capture the `Sync` wrapper, not the raw field).
    fn get(self) -> *mut F {
        self.0
    }
}
// SAFETY: the threads write disjoint elements (distinct (batch, head) pairs) and the pointer
// outlives the scoped threads.
unsafe impl<F> Send for OutPtr<F> {}
unsafe impl<F> Sync for OutPtr<F> {}

/// The CPUs this process may use, read once: `std::thread::available_parallelism` reads the
/// cgroup files on Linux (about 30 µs a call, as long as a whole 0.1B decode step's WKV), too
/// slow to ask per layer and token.
pub fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |c| c.get()))
}

/// Number of worker threads for `jobs` independent heads of `work_per_job` multiply-adds each.
fn threads_for(jobs: usize, work_per_job: usize) -> usize {
    // A thread costs tens of microseconds: give each at least ~1M multiply-adds.
    let useful = (jobs * work_per_job / (1 << 20)).max(1);
    cores().min(jobs).min(useful).max(1)
}

/// The WKV6 forward pass over slices, parallel over `(batch, head)`.
///
/// Same contract as [`crate::reference::forward`]: errors on slice lengths that do not match
/// `dims`, returns `y` `[B, T, H, N]` and the final state `[B, H, N, N]`.
pub fn forward<F: KernelFloat>(dims: Dims, x: Inputs<'_, F>) -> Result<Output<F>, WkvError> {
    dims.check_inputs(&x)?;
    let mut state = match x.initial_state {
        Some(s) => s.to_vec(),
        None => vec![F::zero(); dims.state_len()],
    };
    let mut y = vec![F::zero(); dims.seq_len()];
    forward_in_place(dims, Inputs { initial_state: None, ..x }, &mut state, &mut y)?;
    Ok(Output { y, state })
}

/// [`forward`] without allocating the state: `state` (`[B, H, N, N]`) holds the initial state and
/// receives the final one; `y` (`[B, T, H, N]`) receives the output. `x.initial_state` is ignored.
pub fn forward_in_place<F: KernelFloat>(
    dims: Dims,
    x: Inputs<'_, F>,
    state: &mut [F],
    y: &mut [F],
) -> Result<(), WkvError> {
    dims.check_inputs(&Inputs { initial_state: Some(state), ..x })?;
    if y.len() != dims.seq_len() {
        return Err(WkvError::Length { name: "y", expected: vec![dims.b, dims.t, dims.h, dims.n], found: y.len() });
    }
    let Dims { b: _, t: nt, h: nh, n } = dims;
    let jobs = dims.b * nh;
    let threads = threads_for(jobs, nt * n * n);
    let out = OutPtr(y.as_mut_ptr());
    let mut work: Vec<(usize, &mut [F])> = state.chunks_mut(n * n).enumerate().collect();
    let per_thread = jobs.div_ceil(threads);
    let run = |part: &mut [(usize, &mut [F])]| {
        for (job, s) in part.iter_mut() {
            let (b, h) = (*job / nh, *job % nh);
            let o = dims.seq_index(b, 0, h, 0);
            let len = (nt - 1) * nh * n + n;
            let xs = [&x.r[o..o + len], &x.k[o..o + len], &x.v[o..o + len], &x.w_raw[o..o + len]];
            // SAFETY: `y` has B·T·H·N elements (checked above); head (b, h) writes only the
            // elements (b, t, h, ..), which no other job touches.
            unsafe { head(n, nt, nh * n, xs, &x.u[h * n..(h + 1) * n], s, out.get().add(o)) };
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
    Ok(())
}

#[cfg(feature = "ndarray")]
pub use ndarray_glue::view_f32;
#[cfg(feature = "ndarray")]
pub(crate) use ndarray_glue::{HostFloat, backward_primitives, forward_primitives};

#[cfg(feature = "ndarray")]
mod ndarray_glue {
    use std::borrow::Cow;

    use burn::backend::ndarray::{NdArrayTensor, SharedArray};

    use super::{KernelFloat, backward, forward_in_place};
    use crate::reference::{Dims, Inputs};

    /// Element types with an `NdArrayTensor` variant.
    pub(crate) trait HostFloat: KernelFloat {
        fn view(t: &NdArrayTensor) -> Option<Cow<'_, [Self]>>;
        fn owned(t: NdArrayTensor) -> Option<SharedArray<Self>>;
    }

    macro_rules! host_float {
        ($t:ty, $variant:ident) => {
            impl HostFloat for $t {
                fn view(t: &NdArrayTensor) -> Option<Cow<'_, [Self]>> {
                    match t {
                        NdArrayTensor::$variant(s) => {
                            let view = s.view();
                            Some(match view.to_slice() {
                                Some(slice) => Cow::Borrowed(slice),
                                None => Cow::Owned(s.view().iter().copied().collect()),
                            })
                        }
                        _ => None,
                    }
                }
                fn owned(t: NdArrayTensor) -> Option<SharedArray<Self>> {
                    match t {
                        NdArrayTensor::$variant(s) => Some(s.into_owned()),
                        _ => None,
                    }
                }
            }
        };
    }
    host_float!(f32, F32);
    host_float!(f64, F64);

    /// The values of an f32 `NdArray` tensor in row-major order, borrowed when its layout is
    /// standard (copied otherwise); `None` for other dtypes. For CPU kernels over burn tensors.
    pub fn view_f32(t: &NdArrayTensor) -> Option<Cow<'_, [f32]>> {
        <f32 as HostFloat>::view(t)
    }

    fn run<F: HostFloat>(
        x: [NdArrayTensor; 6],
        step: bool,
    ) -> Result<(NdArrayTensor, NdArrayTensor), Box<[NdArrayTensor; 6]>>
    where
        NdArrayTensor: From<SharedArray<F>>,
    {
        if !x.iter().all(|t| F::view(t).is_some()) {
            return Err(Box::new(x));
        }
        let [r, k, v, w, u, s] = x;
        let seq_shape = burn::tensor::TensorMetadata::shape(&r).to_vec();
        let dims = match seq_shape[..] {
            [b, h, n] if step => Dims::new(b, 1, h, n),
            [b, t, h, n] => Dims::new(b, t, h, n),
            _ => unreachable!("shapes are checked by the public entry point"),
        };
        let view = |t| F::view(t).expect("dtype checked above");
        let (r, k, v, w, u) = (view(&r), view(&k), view(&v), view(&w), view(&u));
        // The state is updated in place when the caller handed over its only reference.
        let mut state = F::owned(s).expect("dtype checked above");
        let state_shape = state.shape().to_vec();
        if !state.is_standard_layout() {
            state = state.as_standard_layout().to_shared();
        }
        let mut y = vec![F::zero(); dims.seq_len()];
        let inputs = Inputs { r: &r, k: &k, v: &v, w_raw: &w, u: &u, initial_state: None };
        let s = state.as_slice_mut().expect("standard layout");
        forward_in_place(dims, inputs, s, &mut y).expect("shapes checked by the public entry point");
        let y = SharedArray::<F>::from_shape_vec(seq_shape, y).expect("y has the shape of r");
        let state = state.into_shape_with_order(state_shape).expect("same shape");
        Ok((y.into(), state.into()))
    }

    /// Runs the CPU kernel on `NdArray` primitives, reading the inputs in place. Gives the inputs
    /// back when they are not all f32 or all f64.
    pub(crate) fn forward_primitives(
        r: NdArrayTensor,
        k: NdArrayTensor,
        v: NdArrayTensor,
        w_raw: NdArrayTensor,
        u: NdArrayTensor,
        state: NdArrayTensor,
        step: bool,
    ) -> Result<(NdArrayTensor, NdArrayTensor), Box<[NdArrayTensor; 6]>> {
        run::<f32>([r, k, v, w_raw, u, state], step).or_else(|x| run::<f64>(*x, step))
    }

    fn run_backward<F: HostFloat>(x: [NdArrayTensor; 8]) -> Result<[NdArrayTensor; 6], Box<[NdArrayTensor; 8]>>
    where
        NdArrayTensor: From<SharedArray<F>>,
    {
        let shape = burn::tensor::TensorMetadata::shape(&x[0]).to_vec();
        let [b, t, h, n] = shape[..] else {
            return Err(Box::new(x));
        };
        let grads = {
            let Some(views) = x.iter().map(F::view).collect::<Option<Vec<_>>>() else {
                return Err(Box::new(x));
            };
            let inputs = Inputs {
                r: &views[0],
                k: &views[1],
                v: &views[2],
                w_raw: &views[3],
                u: &views[4],
                initial_state: Some(&views[5]),
            };
            backward(Dims::new(b, t, h, n), inputs, &views[6], Some(&views[7]))
        };
        let Ok(g) = grads else {
            return Err(Box::new(x));
        };
        let array = |shape: Vec<usize>, v: Vec<F>| -> NdArrayTensor {
            SharedArray::<F>::from_shape_vec(shape, v).expect("lengths match the checked dims").into()
        };
        Ok([
            array(shape.clone(), g.r),
            array(shape.clone(), g.k),
            array(shape.clone(), g.v),
            array(shape.clone(), g.w_raw),
            array(vec![h, n], g.u),
            array(vec![b, h, n, n], g.initial_state),
        ])
    }

    /// Runs the CPU backward ([`backward`]) on `NdArray` primitives `[r, k, v, w_raw, u,
    /// initial_state, dy, d_state]`, returning the six gradients; gives the inputs back when
    /// they are not all f32 or all f64 (or do not have the op's shapes).
    pub(crate) fn backward_primitives(x: [NdArrayTensor; 8]) -> Result<[NdArrayTensor; 6], Box<[NdArrayTensor; 8]>> {
        run_backward::<f32>(x).or_else(|x| run_backward::<f64>(*x))
    }
}
