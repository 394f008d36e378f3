//! `Autodiff<B>`: WKV6 as one graph node whose backward calls [`Wkv6Backend::wkv6_backward`]
//! when `B` has a backward kernel, or burn's autodiff through the chunked ops when it has not.
//!
//! # Shapes
//!
//! The node's output is `y` `[B, T, H, N]` and the final state `[B, H, N, N]` packed into one
//! flat tensor `[B·T·H·N + B·H·N·N]` (in the dtype of `r`); slicing it back is differentiable, so
//! gradients reach the node from `y`, from the state, or from both.

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::tensor::Tensor;
use burn::tensor::ops::FloatTensor;

use super::{Wkv6Backend, Wkv6Inputs, chunked_forward, chunked_step, step_via_forward, unwrap, wrap};

/// Packs `y` and the final state (cast to `y`'s dtype) into one flat tensor.
pub(crate) fn pack<B: burn::tensor::backend::Backend>(y: FloatTensor<B>, state: FloatTensor<B>) -> FloatTensor<B> {
    let y = wrap::<B, 4>(y);
    let state = wrap::<B, 4>(state).cast(y.dtype());
    unwrap(Tensor::cat(vec![y.flatten::<1>(0, 3), state.flatten::<1>(0, 3)], 0))
}

/// Splits a packed tensor `[B·T·H·N + B·H·N·N]` into `y` `[B, T, H, N]` and the state.
pub(crate) fn unpack<B: burn::tensor::backend::Backend>(
    packed: FloatTensor<B>,
    [b, t, h, n]: [usize; 4],
) -> (Tensor<B, 4>, Tensor<B, 4>) {
    let packed = wrap::<B, 1>(packed);
    let ny = b * t * h * n;
    let y = packed.clone().slice(0..ny).reshape([b, t, h, n]);
    let state = packed.slice(ny..ny + b * h * n * n).reshape([b, h, n, n]);
    (y, state)
}

#[derive(Debug)]
struct Wkv6Node;

impl<B: Wkv6Backend> Backward<B, 6> for Wkv6Node {
    /// The inputs, `[B, T, H, N]` and the chunk length.
    type State = (Wkv6Inputs<B>, [usize; 4], usize);

    fn backward(self, ops: Ops<Self::State, 6>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let (inputs, dims, chunk_len) = ops.state;
        let (dy, d_state) = unpack::<B>(grads.consume::<B>(&ops.node), dims);
        let state_dtype = wrap::<B, 4>(inputs.initial_state.clone()).dtype();
        let g = B::wkv6_backward(inputs, unwrap(dy), unwrap(d_state.cast(state_dtype)), chunk_len);
        let [pr, pk, pv, pw, pu, ps] = ops.parents;
        for (parent, grad) in [pr, pk, pv, pw, pu, ps].into_iter().zip([g.r, g.k, g.v, g.w_raw, g.u, g.initial_state]) {
            if let Some(node) = parent {
                grads.register::<B>(node.id, grad);
            }
        }
    }
}

impl<B: Wkv6Backend, C: CheckpointStrategy> Wkv6Backend for Autodiff<B, C> {
    fn wkv6_forward(
        r: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        w_raw: FloatTensor<Self>,
        u: FloatTensor<Self>,
        initial_state: FloatTensor<Self>,
        chunk_len: usize,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        if !B::wkv6_has_backward() {
            return chunked_forward::<Self>(r, k, v, w_raw, u, initial_state, chunk_len);
        }
        let dims = wrap::<Self, 4>(r.clone()).dims();
        let state_dtype = wrap::<Self, 4>(initial_state.clone()).dtype();
        let nodes = [&r, &k, &v, &w_raw, &u, &initial_state].map(|x| x.node.clone());
        let inputs = Wkv6Inputs {
            r: r.primitive,
            k: k.primitive,
            v: v.primitive,
            w_raw: w_raw.primitive,
            u: u.primitive,
            initial_state: initial_state.primitive,
        };
        let run = |x: Wkv6Inputs<B>| {
            let (y, s) = B::wkv6_forward(x.r, x.k, x.v, x.w_raw, x.u, x.initial_state, chunk_len);
            pack::<B>(y, s)
        };
        let packed = match Wkv6Node.prepare::<C>(nodes).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let packed = run(inputs.clone());
                prep.finish((inputs, dims, chunk_len), packed)
            }
            OpsKind::UnTracked(prep) => prep.finish(run(inputs)),
        };
        let (y, state) = unpack::<Self>(packed, dims);
        (unwrap(y), unwrap(state.cast(state_dtype)))
    }

    fn wkv6_step(
        r: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        w_raw: FloatTensor<Self>,
        u: FloatTensor<Self>,
        state: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        if B::wkv6_has_backward() {
            step_via_forward::<Self>(r, k, v, w_raw, u, state)
        } else {
            chunked_step::<Self>(r, k, v, w_raw, u, state)
        }
    }
}
