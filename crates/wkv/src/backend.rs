//! The backend extension trait [`Wkv6Backend`] and its implementations.
//!
//! The trait's default methods run the chunked tensor-op formulation ([`crate::chunked`]), so any
//! backend gets a correct, differentiable op by writing `impl Wkv6Backend for MyBackend {}`.
//! Backends with a faster path override the methods:
//!
//! | backend | forward | gradients |
//! |---|---|---|
//! | `NdArray<f32 / f64>` | multi-threaded CPU recurrence ([`crate::cpu`]) | — (not an autodiff backend) |
//! | `Autodiff<B>` | chunked tensor ops | burn autodiff through the chunked ops |
//! | `Wgpu`, `Cuda` (`CubeBackend`, `Fusion`), `LibTorch` (opt-in features) | chunked tensor ops | via `Autodiff<..>` |
//!
//! # Shapes
//!
//! As in the crate docs; the primitives passed to the methods have already been checked by
//! [`crate::wkv6`] / [`crate::wkv6_step`].

use burn::tensor::{Tensor, TensorPrimitive, backend::Backend, ops::FloatTensor};

use crate::chunked;

fn wrap<B: Backend, const D: usize>(x: FloatTensor<B>) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(x))
}

fn unwrap<B: Backend, const D: usize>(x: Tensor<B, D>) -> FloatTensor<B> {
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
    }
}

/// Autodiff differentiates through the chunked tensor ops of the inner backend.
#[cfg(feature = "autodiff")]
impl<B: Backend, C: burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy> Wkv6Backend
    for burn::backend::Autodiff<B, C>
{
}

#[cfg(any(feature = "wgpu", feature = "cuda"))]
mod cube_impl {
    use burn_cubecl::{BoolElement, CubeBackend, CubeRuntime, FloatElement, IntElement};
    use burn_fusion::{Fusion, FusionBackend};

    use super::Wkv6Backend;

    impl<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement> Wkv6Backend for CubeBackend<R, F, I, BT> {}

    impl<B: FusionBackend> Wkv6Backend for Fusion<B> {}
}

#[cfg(feature = "tch")]
impl<E: burn::backend::libtorch::TchElement> Wkv6Backend for burn::backend::LibTorch<E> {}
