//! `Autodiff<B>`: WKV7 as one graph node whose backward calls [`Wkv7Backend::wkv7_backward`]
//! when `B` has a backward kernel, or burn's autodiff through [`super::tensor_ops`] otherwise.
//!
//! # Shapes
//!
//! As for WKV6, the node's output is `y` and the final state packed into one flat tensor
//! `[B·T·H·N + B·H·N·N]`, so that gradients reach it from either.

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::tensor::ops::FloatTensor;

use super::{Wkv7Backend, Wkv7Inputs, tensor_ops_forward};
use crate::backend::autodiff_impl::{pack, unpack};
use crate::backend::{unwrap, wrap};

#[derive(Debug)]
struct Wkv7Node;

impl<B: Wkv7Backend> Backward<B, 7> for Wkv7Node {
    /// The inputs and `[B, T, H, N]`.
    type State = (Wkv7Inputs<B>, [usize; 4]);

    fn backward(self, ops: Ops<Self::State, 7>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let (inputs, dims) = ops.state;
        let (dy, d_state) = unpack::<B>(grads.consume::<B>(&ops.node), dims);
        let state_dtype = wrap::<B, 4>(inputs.initial_state.clone()).dtype();
        let g = B::wkv7_backward(inputs, unwrap(dy), unwrap(d_state.cast(state_dtype)));
        for (parent, grad) in ops.parents.into_iter().zip(g.into_array()) {
            if let Some(node) = parent {
                grads.register::<B>(node.id, grad);
            }
        }
    }
}

impl<B: Wkv7Backend, C: CheckpointStrategy> Wkv7Backend for Autodiff<B, C> {
    fn wkv7_forward(x: Wkv7Inputs<Self>) -> (FloatTensor<Self>, FloatTensor<Self>) {
        if !B::wkv7_has_backward() {
            return tensor_ops_forward::<Self>(x);
        }
        let dims = wrap::<Self, 4>(x.r.clone()).dims();
        let state_dtype = wrap::<Self, 4>(x.initial_state.clone()).dtype();
        let all = x.into_array();
        let nodes = all.each_ref().map(|t| t.node.clone());
        let inputs = Wkv7Inputs::<B>::from_array(all.map(|t| t.primitive));
        let run = |x: Wkv7Inputs<B>| {
            let (y, s) = B::wkv7_forward(x);
            pack::<B>(y, s)
        };
        let packed = match Wkv7Node.prepare::<C>(nodes).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let packed = run(inputs.clone());
                prep.finish((inputs, dims), packed)
            }
            OpsKind::UnTracked(prep) => prep.finish(run(inputs)),
        };
        let (y, state) = unpack::<Self>(packed, dims);
        (unwrap(y), unwrap(state.cast(state_dtype)))
    }
}
