//! cubecl backends (`wgpu`, `cuda` features): the kernels of `visualrwkv-kernels` on the bare
//! `CubeBackend`, and on `Fusion<B>` (burn's default `Wgpu` and `Cuda` types) as custom fusion
//! operations that run the inner backend's kernels.
//!
//! # Shapes
//!
//! As in [`crate::backend`].

use core::marker::PhantomData;

use burn::tensor::ops::FloatTensor;
use burn_cubecl::{BoolElement, CubeBackend, CubeRuntime, FloatElement, IntElement};
use burn_fusion::stream::{Operation, OperationStreams};
use burn_fusion::{Fusion, FusionBackend, FusionRuntime, FusionTensor};
use burn_ir::{CustomOpIr, HandleContainer, OperationIr, TensorIr};

use super::{Wkv6Backend, Wkv6Gradients, Wkv6Inputs, chunked_forward, step_via_forward, stepwise_backward};

/// The kernels, with the chunked formulation (forward) and the written-out backward
/// ([`stepwise_backward`]) as the fallbacks for problems they refuse (see
/// `visualrwkv_kernels::KernelError`).
impl<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement> Wkv6Backend for CubeBackend<R, F, I, BT> {
    fn wkv6_forward(
        r: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        w_raw: FloatTensor<Self>,
        u: FloatTensor<Self>,
        initial_state: FloatTensor<Self>,
        chunk_len: usize,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        match visualrwkv_kernels::forward(&r, &k, &v, &w_raw, &u, &initial_state) {
            Ok(out) => out,
            Err(_) => chunked_forward::<Self>(r, k, v, w_raw, u, initial_state, chunk_len),
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
        step_via_forward::<Self>(r, k, v, w_raw, u, state)
    }

    fn wkv6_has_backward() -> bool {
        true
    }

    fn wkv6_backward(
        x: Wkv6Inputs<Self>,
        dy: FloatTensor<Self>,
        d_state: FloatTensor<Self>,
        _chunk_len: usize,
    ) -> Wkv6Gradients<Self> {
        match visualrwkv_kernels::backward(&x.r, &x.k, &x.v, &x.w_raw, &x.u, &x.initial_state, &dy, &d_state) {
            Ok(g) => Wkv6Gradients { r: g.r, k: g.k, v: g.v, w_raw: g.w_raw, u: g.u, initial_state: g.initial_state },
            Err(_) => stepwise_backward::<Self>(x, dy, d_state),
        }
    }
}

/// What a registered fusion operation runs on the inner backend.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Forward { chunk_len: usize },
    Step,
    Backward { chunk_len: usize },
}

/// A WKV6 call registered in a fusion stream; executing it runs `B`'s implementation.
#[derive(Clone, Debug)]
struct Wkv6FusionOp<B> {
    desc: CustomOpIr,
    kind: Kind,
    _backend: PhantomData<B>,
}

type Handles<B> = HandleContainer<<<B as FusionBackend>::FusionRuntime as FusionRuntime>::FusionHandle>;

impl<B: FusionBackend + Wkv6Backend> Operation<B::FusionRuntime> for Wkv6FusionOp<B> {
    fn execute(&self, handles: &mut Handles<B>) {
        match self.kind {
            Kind::Forward { .. } | Kind::Step => {
                let ([r, k, v, w, u, s], [y_out, s_out]) = self.desc.as_fixed::<6, 2>();
                let [r, k, v, w, u, s] = [r, k, v, w, u, s].map(|x| handles.get_float_tensor::<B>(x));
                let (y, s) = match self.kind {
                    Kind::Forward { chunk_len } => B::wkv6_forward(r, k, v, w, u, s, chunk_len),
                    _ => B::wkv6_step(r, k, v, w, u, s),
                };
                handles.register_float_tensor::<B>(&y_out.id, y);
                handles.register_float_tensor::<B>(&s_out.id, s);
            }
            Kind::Backward { chunk_len } => {
                let (ins, outs) = self.desc.as_fixed::<8, 6>();
                let [r, k, v, w_raw, u, initial_state, dy, ds] = ins.clone().map(|x| handles.get_float_tensor::<B>(&x));
                let inputs = Wkv6Inputs { r, k, v, w_raw, u, initial_state };
                let g = B::wkv6_backward(inputs, dy, ds, chunk_len);
                for (out, grad) in outs.iter().zip([g.r, g.k, g.v, g.w_raw, g.u, g.initial_state]) {
                    handles.register_float_tensor::<B>(&out.id, grad);
                }
            }
        }
    }
}

/// Registers a custom operation on `inputs` in their fusion stream, with outputs shaped and typed
/// like the inputs named by `like`; `op` makes the operation that runs from the description.
pub(crate) fn register_custom<B: FusionBackend, O: Operation<B::FusionRuntime> + 'static>(
    name: &'static str,
    inputs: Vec<FusionTensor<B::FusionRuntime>>,
    like: &[usize],
    op: impl FnOnce(CustomOpIr) -> O,
) -> Vec<FusionTensor<B::FusionRuntime>> {
    let client = inputs[0].client.clone();
    let mut streams = OperationStreams::default();
    for x in &inputs {
        streams.tensor(x);
    }
    let outputs: Vec<TensorIr> = like
        .iter()
        .map(|&i| TensorIr::uninit(client.create_empty_handle(), inputs[i].shape.clone(), inputs[i].dtype))
        .collect();
    let inputs: Vec<TensorIr> = inputs.into_iter().map(|x| x.into_ir()).collect();
    let desc = CustomOpIr::new(name, &inputs, &outputs);
    client.register(streams, OperationIr::Custom(desc.clone()), op(desc))
}

/// Registers a WKV6 operation on `inputs`, with outputs shaped and typed like `like`.
fn register<B: FusionBackend + Wkv6Backend>(
    name: &'static str,
    kind: Kind,
    inputs: Vec<FusionTensor<B::FusionRuntime>>,
    like: &[usize],
) -> Vec<FusionTensor<B::FusionRuntime>> {
    register_custom::<B, _>(name, inputs, like, |desc| Wkv6FusionOp::<B> { desc, kind, _backend: PhantomData })
}

/// The two outputs of a forward or step operation.
pub(crate) fn two<T>(mut v: Vec<T>) -> (T, T) {
    let second = v.pop();
    let first = v.pop();
    match (first, second) {
        (Some(a), Some(b)) => (a, b),
        _ => unreachable!("a WKV forward fusion op registers two outputs"),
    }
}

/// Every call becomes one custom operation in the fusion stream, executed by `B`.
impl<B: FusionBackend + Wkv6Backend> Wkv6Backend for Fusion<B> {
    fn wkv6_forward(
        r: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        w_raw: FloatTensor<Self>,
        u: FloatTensor<Self>,
        initial_state: FloatTensor<Self>,
        chunk_len: usize,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        // Outputs: y like r (input 0), the state like the initial state (input 5).
        two(register::<B>("wkv6_forward", Kind::Forward { chunk_len }, vec![r, k, v, w_raw, u, initial_state], &[0, 5]))
    }

    fn wkv6_step(
        r: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        w_raw: FloatTensor<Self>,
        u: FloatTensor<Self>,
        state: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        two(register::<B>("wkv6_step", Kind::Step, vec![r, k, v, w_raw, u, state], &[0, 5]))
    }

    fn wkv6_has_backward() -> bool {
        B::wkv6_has_backward()
    }

    fn wkv6_backward(
        x: Wkv6Inputs<Self>,
        dy: FloatTensor<Self>,
        d_state: FloatTensor<Self>,
        chunk_len: usize,
    ) -> Wkv6Gradients<Self> {
        let inputs = vec![x.r, x.k, x.v, x.w_raw, x.u, x.initial_state, dy, d_state];
        let mut g =
            register::<B>("wkv6_backward", Kind::Backward { chunk_len }, inputs, &[0, 1, 2, 3, 4, 5]).into_iter();
        let mut next = || g.next().unwrap_or_else(|| unreachable!("a WKV6 backward op registers six outputs"));
        Wkv6Gradients { r: next(), k: next(), v: next(), w_raw: next(), u: next(), initial_state: next() }
    }
}
