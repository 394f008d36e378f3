//! The checked public entry points of the burn op.

use burn::tensor::{Tensor, TensorPrimitive};

use crate::{Wkv6Backend, WkvError};

/// Default chunk length of the chunked formulation (see [`crate::chunked`]).
///
/// 8 = √64, the RWKV-6 head size: with `L² <= N` the intra-chunk tensors autodiff keeps
/// (`T·L·N` per head) are no larger than the chunk-start states (`(T/L)·N²`), so training memory is
/// `O(T·N + (T/L)·N²)`; docs/performance.md compares chunk lengths on the CPU.
pub const DEFAULT_CHUNK_LEN: usize = 8;

/// Options of [`wkv6_with`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Wkv6Options {
    /// Chunk length of the chunked formulation; at least 1. Lengths above `T` act as `T`.
    pub chunk_len: usize,
}

impl Default for Wkv6Options {
    fn default() -> Self {
        Self { chunk_len: DEFAULT_CHUNK_LEN }
    }
}

/// Output of [`wkv6`]: `y` `[B, T, H, N]` and the final state `[B, H, N, N]`.
#[derive(Clone, Debug)]
pub struct Wkv6Output<B: Wkv6Backend> {
    /// Output `[B, T, H, N]`.
    pub y: Tensor<B, 4>,
    /// State after the last step `[B, H, N, N]`, layout `[batch, head, key, value]`.
    pub state: Tensor<B, 4>,
}

/// Output of [`wkv6_step`]: `y` `[B, H, N]` and the new state `[B, H, N, N]`.
#[derive(Clone, Debug)]
pub struct Wkv6StepOutput<B: Wkv6Backend> {
    /// Output of the step `[B, H, N]`.
    pub y: Tensor<B, 3>,
    /// State after the step `[B, H, N, N]`.
    pub state: Tensor<B, 4>,
}

fn prim<B: Wkv6Backend, const D: usize>(x: Tensor<B, D>) -> burn::tensor::ops::FloatTensor<B> {
    x.into_primitive().tensor()
}

fn tensor<B: Wkv6Backend, const D: usize>(x: burn::tensor::ops::FloatTensor<B>) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(x))
}

/// The WKV6 recurrence over a sequence, with the default options. See [`wkv6_with`].
pub fn wkv6<B: Wkv6Backend>(
    r: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    w_raw: Tensor<B, 4>,
    u: Tensor<B, 2>,
    initial_state: Option<Tensor<B, 4>>,
) -> Result<Wkv6Output<B>, WkvError> {
    wkv6_with(r, k, v, w_raw, u, initial_state, Wkv6Options::default())
}

/// The WKV6 recurrence over a sequence.
///
/// `r, k, v, w_raw`: `[B, T, H, N]`; `u`: `[H, N]`; `initial_state`: `[B, H, N, N]` (zeros when
/// `None`). Returns `y` `[B, T, H, N]` and the final state. Any `B, T, H, N >= 1` works; the
/// per-step decay is `exp(-exp(w_raw))`.
///
/// Errors, before anything runs, when a shape disagrees with `r`'s (naming the tensor and both
/// shapes), a size is zero, or the chunk length is zero. Differentiable with respect to every
/// input, including the initial state, on `Autodiff<B>`.
pub fn wkv6_with<B: Wkv6Backend>(
    r: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    w_raw: Tensor<B, 4>,
    u: Tensor<B, 2>,
    initial_state: Option<Tensor<B, 4>>,
    options: Wkv6Options,
) -> Result<Wkv6Output<B>, WkvError> {
    let [b, t, h, n] = r.dims();
    if b == 0 || t == 0 || h == 0 || n == 0 {
        return Err(WkvError::Empty { dims: vec![b, t, h, n] });
    }
    if options.chunk_len == 0 {
        return Err(WkvError::ChunkLen);
    }
    let seq = [b, t, h, n];
    WkvError::check_shape("k", &k.dims(), &seq)?;
    WkvError::check_shape("v", &v.dims(), &seq)?;
    WkvError::check_shape("w_raw", &w_raw.dims(), &seq)?;
    WkvError::check_shape("u", &u.dims(), &[h, n])?;
    let state = match initial_state {
        Some(s) => {
            WkvError::check_shape("initial_state", &s.dims(), &[b, h, n, n])?;
            s
        }
        None => Tensor::zeros([b, h, n, n], (&r.device(), r.dtype())),
    };
    let (y, state) = B::wkv6_forward(prim(r), prim(k), prim(v), prim(w_raw), prim(u), prim(state), options.chunk_len);
    Ok(Wkv6Output { y: tensor(y), state: tensor(state) })
}

/// One step of the recurrence for decoding: `r, k, v, w_raw`: `[B, H, N]`; `u`: `[H, N]`;
/// `state`: `[B, H, N, N]`. Returns the step's output `[B, H, N]` and the new state.
///
/// Errors when a shape disagrees with `r`'s or a size is zero.
pub fn wkv6_step<B: Wkv6Backend>(
    r: Tensor<B, 3>,
    k: Tensor<B, 3>,
    v: Tensor<B, 3>,
    w_raw: Tensor<B, 3>,
    u: Tensor<B, 2>,
    state: Tensor<B, 4>,
) -> Result<Wkv6StepOutput<B>, WkvError> {
    let [b, h, n] = r.dims();
    if b == 0 || h == 0 || n == 0 {
        return Err(WkvError::Empty { dims: vec![b, 1, h, n] });
    }
    let seq = [b, h, n];
    WkvError::check_shape("k", &k.dims(), &seq)?;
    WkvError::check_shape("v", &v.dims(), &seq)?;
    WkvError::check_shape("w_raw", &w_raw.dims(), &seq)?;
    WkvError::check_shape("u", &u.dims(), &[h, n])?;
    WkvError::check_shape("state", &state.dims(), &[b, h, n, n])?;
    let (y, state) = B::wkv6_step(prim(r), prim(k), prim(v), prim(w_raw), prim(u), prim(state));
    Ok(Wkv6StepOutput { y: tensor(y), state: tensor(state) })
}
