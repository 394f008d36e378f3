//! The backend extension trait [`Wkv6Backend`] and its implementations.
//!
//! The trait's default methods run the chunked tensor-op formulation ([`crate::chunked`]), so any
//! backend gets a correct, differentiable op by writing `impl Wkv6Backend for MyBackend {}`.
//! Backends with a faster path override the methods:
//!
//! | backend | forward | gradients |
//! |---|---|---|
//! | `NdArray<f32 / f64>` | multi-threaded CPU recurrence ([`crate::cpu`]) | — (not an autodiff backend) |
//! | `Autodiff<B>`, `B` without a backward kernel | chunked tensor ops | burn autodiff through the chunked ops |
//! | `CubeBackend<R, ..>` (features `wgpu`, `cuda`) | cubecl kernel of `visualrwkv-kernels` | backward kernels, through `Autodiff<..>` |
//! | `Fusion<B>` (the default `Wgpu` and `Cuda` types) | `B`'s, registered as a custom fusion op | `B`'s, likewise |
//! | `LibTorch` (feature `tch`) | chunked tensor ops | via `Autodiff<..>` |
//!
//! A backend with a backward kernel says so with [`Wkv6Backend::wkv6_has_backward`]; `Autodiff`
//! then records the op as one node whose backward calls [`Wkv6Backend::wkv6_backward`] (y and the
//! final state travel packed in one flat tensor, so both can carry gradients). Kernels refuse
//! problems outside their limits (head size, dtype support, 32-bit indexing) and the backend
//! falls back to the chunked path, so every input the op accepts runs.
//!
//! # Shapes
//!
//! As in the crate docs; the primitives passed to the methods have already been checked by
//! [`crate::wkv6`] / [`crate::wkv6_step`].

use burn::tensor::{Tensor, TensorPrimitive, backend::Backend, ops::FloatTensor};

use crate::chunked;

pub(crate) fn wrap<B: Backend, const D: usize>(x: FloatTensor<B>) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(x))
}

pub(crate) fn unwrap<B: Backend, const D: usize>(x: Tensor<B, D>) -> FloatTensor<B> {
    x.into_primitive().tensor()
}

/// [`chunked::forward`] on primitives: the default sequence path of every backend.
pub fn chunked_forward<B: Backend>(
    r: FloatTensor<B>,
    k: FloatTensor<B>,
    v: FloatTensor<B>,
    w_raw: FloatTensor<B>,
    u: FloatTensor<B>,
    initial_state: FloatTensor<B>,
    chunk_len: usize,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let (y, s) = chunked::forward::<B>(wrap(r), wrap(k), wrap(v), wrap(w_raw), wrap(u), wrap(initial_state), chunk_len);
    (unwrap(y), unwrap(s))
}

/// [`chunked::step`] on primitives: the default decoding step of every backend.
pub fn chunked_step<B: Backend>(
    r: FloatTensor<B>,
    k: FloatTensor<B>,
    v: FloatTensor<B>,
    w_raw: FloatTensor<B>,
    u: FloatTensor<B>,
    state: FloatTensor<B>,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let (y, s) = chunked::step::<B>(wrap(r), wrap(k), wrap(v), wrap(w_raw), wrap(u), wrap(state));
    (unwrap(y), unwrap(s))
}

/// The six inputs of the op as primitives (`r, k, v, w_raw` `[B, T, H, N]`, `u` `[H, N]`,
/// `initial_state` `[B, H, N, N]`).
#[derive(Clone, Debug)]
pub struct Wkv6Inputs<B: Backend> {
    /// Receptance.
    pub r: FloatTensor<B>,
    /// Key.
    pub k: FloatTensor<B>,
    /// Value.
    pub v: FloatTensor<B>,
    /// Decay pre-activation.
    pub w_raw: FloatTensor<B>,
    /// Bonus.
    pub u: FloatTensor<B>,
    /// Initial state.
    pub initial_state: FloatTensor<B>,
}

/// Gradients of the six inputs, shaped and typed like [`Wkv6Inputs`].
#[derive(Clone, Debug)]
pub struct Wkv6Gradients<B: Backend> {
    /// `dL/dr`.
    pub r: FloatTensor<B>,
    /// `dL/dk`.
    pub k: FloatTensor<B>,
    /// `dL/dv`.
    pub v: FloatTensor<B>,
    /// `dL/dw_raw`.
    pub w_raw: FloatTensor<B>,
    /// `dL/du`.
    pub u: FloatTensor<B>,
    /// `dL/d initial_state`.
    pub initial_state: FloatTensor<B>,
}

/// Gradients of the chunked formulation for the cotangents `dy` `[B, T, H, N]` and `d_state`
/// `[B, H, N, N]`, by burn's autodiff on `Autodiff<B>` (the forward is recomputed): the default
/// [`Wkv6Backend::wkv6_backward`] of every backend.
#[cfg(feature = "autodiff")]
pub fn chunked_backward<B: Backend>(
    inputs: Wkv6Inputs<B>,
    dy: FloatTensor<B>,
    d_state: FloatTensor<B>,
    chunk_len: usize,
) -> Wkv6Gradients<B> {
    use burn::backend::Autodiff;
    fn lift<B: Backend, const D: usize>(x: FloatTensor<B>, track: bool) -> Tensor<Autodiff<B>, D> {
        let x = Tensor::<Autodiff<B>, D>::from_inner(wrap(x));
        if track { x.require_grad() } else { x }
    }
    let r = lift::<B, 4>(inputs.r, true);
    let k = lift::<B, 4>(inputs.k, true);
    let v = lift::<B, 4>(inputs.v, true);
    let w = lift::<B, 4>(inputs.w_raw, true);
    let u = lift::<B, 2>(inputs.u, true);
    let s0 = lift::<B, 4>(inputs.initial_state, true);
    let (y, s) = chunked::forward(r.clone(), k.clone(), v.clone(), w.clone(), u.clone(), s0.clone(), chunk_len);
    let loss = (y * lift::<B, 4>(dy, false)).sum() + (s * lift::<B, 4>(d_state, false)).sum();
    let grads = loss.backward();
    fn grad<B: Backend, const D: usize>(
        x: &Tensor<Autodiff<B>, D>,
        grads: &<Autodiff<B> as burn::tensor::backend::AutodiffBackend>::Gradients,
    ) -> FloatTensor<B> {
        unwrap(x.grad(grads).unwrap_or_else(|| x.clone().inner().zeros_like()))
    }
    Wkv6Gradients {
        r: grad(&r, &grads),
        k: grad(&k, &grads),
        v: grad(&v, &grads),
        w_raw: grad(&w, &grads),
        u: grad(&u, &grads),
        initial_state: grad(&s0, &grads),
    }
}

/// The gradients of WKV6 written out step by step in tensor operations (the equations of
/// [`crate::reference::backward`]), with no autodiff graph: the fallback of backward kernels
/// that refuse a problem, which runs inside `Autodiff`'s own backward pass, where starting a
/// second backward pass on the same backend deadlocks. Keeps every step's state (`T·N²` values
/// per `(batch, head)`).
pub fn stepwise_backward<B: Backend>(
    inputs: Wkv6Inputs<B>,
    dy: FloatTensor<B>,
    d_state: FloatTensor<B>,
) -> Wkv6Gradients<B> {
    let r = wrap::<B, 4>(inputs.r);
    let [nb, nt, h, n] = r.dims();
    let dtype = r.dtype();
    let state: Tensor<B, 4> = wrap(inputs.initial_state);
    let state_dtype = state.dtype();
    // [B, T, H, N] -> [B, H, T, N] in the state's dtype: step t is a [B, H, 1, N] row.
    let seq = |t: Tensor<B, 4>| t.cast(state_dtype).swap_dims(1, 2);
    let [r, k, v, w_raw, dy] = [r, wrap(inputs.k), wrap(inputs.v), wrap(inputs.w_raw), wrap(dy)].map(seq);
    let u = wrap::<B, 2>(inputs.u).cast(state_dtype).reshape([1, h, n, 1]);
    let decay = w_raw.clone().exp().neg().exp();
    let row = |x: &Tensor<B, 4>, t: usize| x.clone().slice([0..nb, 0..h, t..t + 1, 0..n]);
    let column = |x: &Tensor<B, 4>, t: usize| row(x, t).swap_dims(2, 3);

    // states[t] is the state before step t.
    let mut states = Vec::with_capacity(nt + 1);
    states.push(state);
    for t in 0..nt {
        let next = column(&decay, t) * states[t].clone() + column(&k, t) * row(&v, t);
        states.push(next);
    }
    let mut g: Tensor<B, 4> = wrap::<B, 4>(d_state).cast(state_dtype);
    let mut du = Tensor::<B, 4>::zeros([1, h, n, 1], (&g.device(), state_dtype));
    let mut out: [Vec<Tensor<B, 4>>; 4] = Default::default();
    for t in (0..nt).rev() {
        let (rt, kt, dyt, prev) = (column(&r, t), column(&k, t), column(&dy, t), &states[t]);
        // v·dy and Σ_i r u k, per (batch, head): [B, H, 1, 1].
        let vdy = row(&v, t).matmul(dyt.clone());
        let ruk = (rt.clone() * u.clone() * kt.clone()).sum_dim(2);
        let dr = prev.clone().matmul(dyt.clone()) + u.clone() * kt.clone() * vdy.clone();
        let dk = g.clone().matmul(column(&v, t)) + u.clone() * rt.clone() * vdy.clone();
        let dv = (row(&k, t).matmul(g.clone()) + ruk * row(&dy, t)).swap_dims(2, 3);
        du = du + (rt.clone() * kt * vdy).sum_dim(0);
        // d exp(-exp(w)) / dw = -exp(w - exp(w)).
        let wt = column(&w_raw, t);
        let dw = (g.clone() * prev.clone()).sum_dim(3) * (wt.clone() - wt.exp()).exp().neg();
        for (acc, grad) in out.iter_mut().zip([dr, dk, dv, dw]) {
            acc.push(grad);
        }
        g = column(&decay, t) * g + rt * row(&dy, t);
    }
    let [dr, dk, dv, dw] = out.map(|mut steps| {
        steps.reverse();
        // Each step's gradient is a column [B, H, N, 1]; as rows they stack into [B, H, T, N].
        let rows = steps.into_iter().map(|c| c.swap_dims(2, 3)).collect();
        unwrap(Tensor::cat(rows, 2).swap_dims(1, 2).cast(dtype))
    });
    Wkv6Gradients {
        r: dr,
        k: dk,
        v: dv,
        w_raw: dw,
        u: unwrap(du.reshape([h, n]).cast(dtype)),
        initial_state: unwrap(g),
    }
}

/// A backend that can run the WKV6 operator.
///
/// Implement it with an empty body to get the chunked tensor-op formulation; override the methods
/// to plug in a kernel (the override must match [`crate::reference`], which
/// `visualrwkv_wkv::testing` checks).
pub trait Wkv6Backend: Backend {
    /// Sequence forward: `r, k, v, w_raw` `[B, T, H, N]`, `u` `[H, N]`, `initial_state`
    /// `[B, H, N, N]`; returns `(y [B, T, H, N], final state [B, H, N, N])`.
    ///
    /// `chunk_len` (at least 1) is the chunk length of the chunked formulation; kernels that do
    /// not chunk may ignore it.
    fn wkv6_forward(
        r: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        w_raw: FloatTensor<Self>,
        u: FloatTensor<Self>,
        initial_state: FloatTensor<Self>,
        chunk_len: usize,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        chunked_forward::<Self>(r, k, v, w_raw, u, initial_state, chunk_len)
    }

    /// One decoding step: `r, k, v, w_raw` `[B, H, N]`, `u` `[H, N]`, `state` `[B, H, N, N]`;
    /// returns `(y [B, H, N], new state [B, H, N, N])`.
    fn wkv6_step(
        r: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        w_raw: FloatTensor<Self>,
        u: FloatTensor<Self>,
        state: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        chunked_step::<Self>(r, k, v, w_raw, u, state)
    }

    /// Whether [`Self::wkv6_backward`] is a dedicated kernel. When it is, `Autodiff<Self>` records
    /// WKV6 as one node and calls it; otherwise autodiff differentiates through the chunked ops.
    #[cfg(feature = "autodiff")]
    fn wkv6_has_backward() -> bool {
        false
    }

    /// Gradients of all six inputs for the cotangents `dy` `[B, T, H, N]` of `y` and `d_state`
    /// `[B, H, N, N]` of the final state. The default differentiates the chunked formulation
    /// ([`chunked_backward`]).
    #[cfg(feature = "autodiff")]
    fn wkv6_backward(
        inputs: Wkv6Inputs<Self>,
        dy: FloatTensor<Self>,
        d_state: FloatTensor<Self>,
        chunk_len: usize,
    ) -> Wkv6Gradients<Self> {
        chunked_backward::<Self>(inputs, dy, d_state, chunk_len)
    }
}

/// One decoding step through a sequence forward of length 1 (`[B, H, N]` -> `[B, 1, H, N]`):
/// the step of backends whose kernel handles any `T`.
pub fn step_via_forward<B: Wkv6Backend>(
    r: FloatTensor<B>,
    k: FloatTensor<B>,
    v: FloatTensor<B>,
    w_raw: FloatTensor<B>,
    u: FloatTensor<B>,
    state: FloatTensor<B>,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let seq = |x: FloatTensor<B>| {
        let x = wrap::<B, 3>(x);
        let [b, h, n] = x.dims();
        unwrap(x.reshape([b, 1, h, n]))
    };
    let (y, s) = B::wkv6_forward(seq(r), seq(k), seq(v), seq(w_raw), u, state, 1);
    let y = wrap::<B, 4>(y);
    let [b, _, h, n] = y.dims();
    (unwrap(y.reshape([b, h, n])), s)
}

#[cfg(feature = "ndarray")]
mod ndarray_impl {
    use burn::backend::NdArray;
    use burn::backend::ndarray::{FloatNdArrayElement, IntNdArrayElement, NdArrayTensor, QuantElement, SharedArray};
    use burn::tensor::ops::FloatTensor;

    use super::{Wkv6Backend, chunked_forward, chunked_step};
    use crate::cpu;

    /// The CPU backend runs the multi-threaded recurrence of [`crate::cpu`].
    impl<E: FloatNdArrayElement, I: IntNdArrayElement, Q: QuantElement> Wkv6Backend for NdArray<E, I, Q>
    where
        NdArrayTensor: From<SharedArray<E>>,
        NdArrayTensor: From<SharedArray<I>>,
    {
        fn wkv6_forward(
            r: FloatTensor<Self>,
            k: FloatTensor<Self>,
            v: FloatTensor<Self>,
            w_raw: FloatTensor<Self>,
            u: FloatTensor<Self>,
            initial_state: FloatTensor<Self>,
            chunk_len: usize,
        ) -> (FloatTensor<Self>, FloatTensor<Self>) {
            match cpu::forward_primitives(r, k, v, w_raw, u, initial_state, false) {
                Ok(out) => out,
                // Mixed float dtypes: the generic chunked path converts as it goes.
                Err(x) => {
                    let [r, k, v, w, u, s] = *x;
                    chunked_forward::<Self>(r, k, v, w, u, s, chunk_len)
                }
            }
        }

        fn wkv6_step(
            r: FloatTensor<Self>,
            k: FloatTensor<Self>,
            v: FloatTensor<Self>,
            w_raw: FloatTensor<Self>,
            u: FloatTensor<Self>,
            state: FloatTensor<Self>,
        ) -> (FloatTensor<Self>, FloatTensor<Self>) {
            match cpu::forward_primitives(r, k, v, w_raw, u, state, true) {
                Ok(out) => out,
                Err(x) => {
                    let [r, k, v, w, u, s] = *x;
                    chunked_step::<Self>(r, k, v, w, u, s)
                }
            }
        }

        #[cfg(feature = "autodiff")]
        fn wkv6_has_backward() -> bool {
            true
        }

        /// The CPU backward of [`crate::cpu::backward`] (chunk checkpoints, parallel over heads);
        /// mixed dtypes fall back to the written-out [`super::stepwise_backward`].
        #[cfg(feature = "autodiff")]
        fn wkv6_backward(
            x: super::Wkv6Inputs<Self>,
            dy: FloatTensor<Self>,
            d_state: FloatTensor<Self>,
            _chunk_len: usize,
        ) -> super::Wkv6Gradients<Self> {
            match cpu::backward_primitives([x.r, x.k, x.v, x.w_raw, x.u, x.initial_state, dy, d_state]) {
                Ok([r, k, v, w_raw, u, initial_state]) => super::Wkv6Gradients { r, k, v, w_raw, u, initial_state },
                Err(x) => {
                    let [r, k, v, w_raw, u, initial_state, dy, ds] = *x;
                    let inputs = super::Wkv6Inputs { r, k, v, w_raw, u, initial_state };
                    super::stepwise_backward::<Self>(inputs, dy, ds)
                }
            }
        }
    }
}

#[cfg(feature = "autodiff")]
pub(crate) mod autodiff_impl;

#[cfg(feature = "cube")]
pub(crate) mod cube_impl;

#[cfg(feature = "tch")]
impl<E: burn::backend::libtorch::TchElement> Wkv6Backend for burn::backend::LibTorch<E> {}
