//! WKV7, the recurrence of RWKV-7 ("Goose"): the generalised delta rule with a vector-valued,
//! data-dependent decay and in-context learning rate (docs/model.md §9).
//!
//! - [`reference`]: the plain recurrence over slices (f32 and f64) and its exact backward pass,
//!   the oracle of every fast path.
//! - [`cpu`]: the multi-threaded CPU kernel (forward and checkpointed backward).
//! - [`tensor_ops`]: the recurrence in burn tensor operations, step by step: it runs and
//!   differentiates on every backend, and is the default of [`Wkv7Backend`].
//! - [`wkv7`] / [`wkv7_step`]: the checked burn op, generic over [`Wkv7Backend`].
//!
//! # Shapes
//!
//! | tensor | shape | meaning |
//! |---|---|---|
//! | `r`, `w_raw`, `k`, `v`, `a`, `b` | `[B, T, H, N]` | receptance, decay pre-activation, key, value, removal read-out and write vectors |
//! | state | `[B, H, N, N]` | `[batch, head, key i, value j]` |
//! | `y` | `[B, T, H, N]` | output |
//!
//! ```text
//! sa[j]   = sum_i a[t, i] * S[i, j]
//! S[i, j] = exp(-exp(w_raw[t, i])) * S[i, j] + b[t, i] * sa[j] + k[t, i] * v[t, j]
//! y[t, j] = sum_i r[t, i] * S[i, j]
//! ```
//!
//! # Example
//!
//! ```
//! use burn::backend::NdArray;
//! use burn::tensor::{Distribution, Tensor};
//! use visualrwkv_wkv::wkv7::wkv7;
//!
//! let dev = Default::default();
//! let x = || Tensor::<NdArray, 4>::random([1, 7, 2, 4], Distribution::Uniform(-1.0, 1.0), &dev);
//! let out = wkv7(x(), x(), x(), x(), x(), x(), None).unwrap();
//! assert_eq!(out.y.dims(), [1, 7, 2, 4]);
//! assert_eq!(out.state.dims(), [1, 2, 4, 4]);
//! ```

pub mod cpu;
pub mod reference;
pub mod tensor_ops;

#[cfg(feature = "autodiff")]
mod autodiff_impl;

use burn::tensor::{Tensor, backend::Backend, ops::FloatTensor};

use crate::WkvError;
use crate::backend::{unwrap, wrap};

/// The seven inputs of the op as primitives: `r, w_raw, k, v, a, b` `[B, T, H, N]` and the
/// initial state `[B, H, N, N]`.
#[derive(Clone, Debug)]
pub struct Wkv7Inputs<B: Backend> {
    /// Receptance.
    pub r: FloatTensor<B>,
    /// Decay pre-activation.
    pub w_raw: FloatTensor<B>,
    /// Key.
    pub k: FloatTensor<B>,
    /// Value.
    pub v: FloatTensor<B>,
    /// Removal read-out vector.
    pub a: FloatTensor<B>,
    /// Removal write vector.
    pub b: FloatTensor<B>,
    /// Initial state.
    pub initial_state: FloatTensor<B>,
}

/// Gradients of the seven inputs, shaped and typed like [`Wkv7Inputs`].
pub type Wkv7Gradients<B> = Wkv7Inputs<B>;

impl<B: Backend> Wkv7Inputs<B> {
    fn into_array(self) -> [FloatTensor<B>; 7] {
        [self.r, self.w_raw, self.k, self.v, self.a, self.b, self.initial_state]
    }

    fn from_array([r, w_raw, k, v, a, b, initial_state]: [FloatTensor<B>; 7]) -> Self {
        Self { r, w_raw, k, v, a, b, initial_state }
    }
}

/// A backend that can run WKV7.
///
/// Implement it with an empty body to get [`tensor_ops`]; override the methods to plug in a
/// kernel (which must match [`reference`]).
pub trait Wkv7Backend: Backend {
    /// Sequence forward; returns `(y [B, T, H, N], final state [B, H, N, N])`.
    fn wkv7_forward(x: Wkv7Inputs<Self>) -> (FloatTensor<Self>, FloatTensor<Self>) {
        tensor_ops_forward::<Self>(x)
    }

    /// Whether [`Self::wkv7_backward`] is a dedicated kernel. When it is, `Autodiff<Self>`
    /// records WKV7 as one node and calls it; otherwise autodiff differentiates [`tensor_ops`].
    #[cfg(feature = "autodiff")]
    fn wkv7_has_backward() -> bool {
        false
    }

    /// Gradients of the seven inputs for the cotangents `dy` `[B, T, H, N]` and `d_state`
    /// `[B, H, N, N]`. The default is [`tensor_ops::backward`].
    #[cfg(feature = "autodiff")]
    fn wkv7_backward(x: Wkv7Inputs<Self>, dy: FloatTensor<Self>, d_state: FloatTensor<Self>) -> Wkv7Gradients<Self> {
        tensor_ops_backward::<Self>(x, dy, d_state)
    }
}

/// [`tensor_ops::forward`] on primitives: the default forward of every backend.
pub fn tensor_ops_forward<B: Backend>(x: Wkv7Inputs<B>) -> (FloatTensor<B>, FloatTensor<B>) {
    let [r, w, k, v, a, b, s] = x.into_array();
    let (y, s) = tensor_ops::forward::<B>([r, w, k, v, a, b].map(wrap), wrap(s));
    (unwrap(y), unwrap(s))
}

/// [`tensor_ops::backward`] on primitives: the gradients of [`tensor_ops::forward`], written out
/// (no autodiff graph, so it may run inside another backward pass); the default backward of every
/// backend.
pub fn tensor_ops_backward<B: Backend>(
    x: Wkv7Inputs<B>,
    dy: FloatTensor<B>,
    d_state: FloatTensor<B>,
) -> Wkv7Gradients<B> {
    let [r, w, k, v, a, b, s] = x.into_array();
    let g = tensor_ops::backward::<B>([r, w, k, v, a, b].map(wrap), wrap(s), wrap(dy), wrap(d_state));
    Wkv7Inputs::from_array(g.map(unwrap))
}

/// Output of [`wkv7`]: `y` `[B, T, H, N]` and the final state `[B, H, N, N]`.
#[derive(Clone, Debug)]
pub struct Wkv7Output<B: Backend> {
    /// Output `[B, T, H, N]`.
    pub y: Tensor<B, 4>,
    /// State after the last step `[B, H, N, N]`, layout `[batch, head, key, value]`.
    pub state: Tensor<B, 4>,
}

/// The WKV7 recurrence over a sequence.
///
/// `r, w_raw, k, v, a, b`: `[B, T, H, N]`; `initial_state`: `[B, H, N, N]` (zeros when `None`).
/// Returns `y` `[B, T, H, N]` and the final state. Any `B, T, H, N >= 1` works.
///
/// Errors, before anything runs, when a shape disagrees with `r`'s (naming the tensor and both
/// shapes) or a size is zero. Differentiable with respect to every input, including the initial
/// state, on `Autodiff<B>`.
pub fn wkv7<B: Wkv7Backend>(
    r: Tensor<B, 4>,
    w_raw: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    a: Tensor<B, 4>,
    b: Tensor<B, 4>,
    initial_state: Option<Tensor<B, 4>>,
) -> Result<Wkv7Output<B>, WkvError> {
    let dims = r.dims();
    let [nb, _, h, n] = dims;
    if dims.contains(&0) {
        return Err(WkvError::Empty { dims: dims.to_vec() });
    }
    for (name, x) in [("w_raw", &w_raw), ("k", &k), ("v", &v), ("a", &a), ("b", &b)] {
        WkvError::check_shape(name, &x.dims(), &dims)?;
    }
    let state = match initial_state {
        Some(s) => {
            WkvError::check_shape("initial_state", &s.dims(), &[nb, h, n, n])?;
            s
        }
        None => Tensor::zeros([nb, h, n, n], (&r.device(), r.dtype())),
    };
    let x = [r, w_raw, k, v, a, b, state].map(unwrap);
    let (y, state) = B::wkv7_forward(Wkv7Inputs::from_array(x));
    Ok(Wkv7Output { y: wrap(y), state: wrap(state) })
}

/// One decoding step: `r, w_raw, k, v, a, b` `[B, H, N]`, `state` `[B, H, N, N]`. Returns the
/// step's output `[B, H, N]` and the new state (the sequence op at `T = 1`).
///
/// Errors when a shape disagrees with `r`'s or a size is zero.
#[allow(clippy::too_many_arguments)]
pub fn wkv7_step<B: Wkv7Backend>(
    r: Tensor<B, 3>,
    w_raw: Tensor<B, 3>,
    k: Tensor<B, 3>,
    v: Tensor<B, 3>,
    a: Tensor<B, 3>,
    b: Tensor<B, 3>,
    state: Tensor<B, 4>,
) -> Result<(Tensor<B, 3>, Tensor<B, 4>), WkvError> {
    let [nb, h, n] = r.dims();
    for (name, x) in [("w_raw", &w_raw), ("k", &k), ("v", &v), ("a", &a), ("b", &b)] {
        WkvError::check_shape(name, &x.dims(), &[nb, h, n])?;
    }
    let seq = |x: Tensor<B, 3>| x.unsqueeze_dim::<4>(1);
    let out = wkv7(seq(r), seq(w_raw), seq(k), seq(v), seq(a), seq(b), Some(state))?;
    Ok((out.y.reshape([nb, h, n]), out.state))
}

#[cfg(feature = "ndarray")]
mod ndarray_impl {
    use burn::backend::NdArray;
    use burn::backend::ndarray::{FloatNdArrayElement, IntNdArrayElement, NdArrayTensor, QuantElement, SharedArray};
    use burn::tensor::TensorMetadata;

    use super::{Wkv7Backend, Wkv7Gradients, Wkv7Inputs, cpu, reference};
    use crate::cpu::HostFloat;
    use crate::reference::Dims;

    type Prims = [NdArrayTensor; 7];

    /// Runs `f` on the host values of `x` when they are all `F`; gives them back otherwise.
    fn on_host<F: HostFloat, const M: usize, R>(
        x: [NdArrayTensor; M],
        f: impl FnOnce(Dims, &[std::borrow::Cow<'_, [F]>]) -> R,
    ) -> Result<R, Box<[NdArrayTensor; M]>> {
        let [b, t, h, n] = x[0].shape().to_vec()[..] else { return Err(Box::new(x)) };
        match x.iter().map(F::view).collect::<Option<Vec<_>>>() {
            Some(views) => Ok(f(Dims::new(b, t, h, n), &views)),
            None => Err(Box::new(x)),
        }
    }

    fn inputs<'a, F: Clone>(v: &'a [std::borrow::Cow<'a, [F]>]) -> reference::Inputs<'a, F> {
        let s = |q: usize| -> &'a [F] { &v[q] };
        reference::Inputs { r: s(0), w_raw: s(1), k: s(2), v: s(3), a: s(4), b: s(5), initial_state: Some(s(6)) }
    }

    fn array<F: HostFloat>(shape: Vec<usize>, values: Vec<F>) -> NdArrayTensor
    where
        NdArrayTensor: From<SharedArray<F>>,
    {
        SharedArray::<F>::from_shape_vec(shape, values).expect("lengths match the checked dims").into()
    }

    fn forward<F: HostFloat>(x: Prims) -> Result<(NdArrayTensor, NdArrayTensor), Box<Prims>>
    where
        NdArrayTensor: From<SharedArray<F>>,
    {
        on_host::<F, 7, _>(x, |dims, v| {
            let out = cpu::forward(dims, inputs(v)).expect("shapes checked by the public entry point");
            let Dims { b, t, h, n } = dims;
            (array(vec![b, t, h, n], out.y), array(vec![b, h, n, n], out.state))
        })
    }

    fn backward<F: HostFloat>(x: [NdArrayTensor; 9]) -> Result<Prims, Box<[NdArrayTensor; 9]>>
    where
        NdArrayTensor: From<SharedArray<F>>,
    {
        on_host::<F, 9, _>(x, |dims, v| {
            let g =
                cpu::backward(dims, inputs(v), &v[7], Some(&v[8])).expect("shapes checked by the public entry point");
            let Dims { b, t, h, n } = dims;
            let seq = |x| array(vec![b, t, h, n], x);
            [seq(g.r), seq(g.w_raw), seq(g.k), seq(g.v), seq(g.a), seq(g.b), array(vec![b, h, n, n], g.initial_state)]
        })
    }

    /// The CPU backend runs [`cpu`] (f32 and f64; mixed dtypes take the tensor-op path).
    impl<E: FloatNdArrayElement, I: IntNdArrayElement, Q: QuantElement> Wkv7Backend for NdArray<E, I, Q>
    where
        NdArrayTensor: From<SharedArray<E>>,
        NdArrayTensor: From<SharedArray<I>>,
    {
        fn wkv7_forward(x: Wkv7Inputs<Self>) -> (NdArrayTensor, NdArrayTensor) {
            forward::<f32>(x.into_array())
                .or_else(|x| forward::<f64>(*x))
                .unwrap_or_else(|x| super::tensor_ops_forward::<Self>(Wkv7Inputs::from_array(*x)))
        }

        #[cfg(feature = "autodiff")]
        fn wkv7_has_backward() -> bool {
            true
        }

        #[cfg(feature = "autodiff")]
        fn wkv7_backward(x: Wkv7Inputs<Self>, dy: NdArrayTensor, d_state: NdArrayTensor) -> Wkv7Gradients<Self> {
            let [r, w, k, v, a, b, s] = x.into_array();
            let all = [r, w, k, v, a, b, s, dy, d_state];
            match backward::<f32>(all).or_else(|x| backward::<f64>(*x)) {
                Ok(g) => Wkv7Inputs::from_array(g),
                Err(x) => {
                    let [r, w, k, v, a, b, s, dy, ds] = *x;
                    super::tensor_ops_backward::<Self>(Wkv7Inputs::from_array([r, w, k, v, a, b, s]), dy, ds)
                }
            }
        }
    }
}

#[cfg(feature = "cube")]
mod cube_impl {
    use core::marker::PhantomData;

    use burn::tensor::ops::FloatTensor;
    use burn_cubecl::{BoolElement, CubeBackend, CubeRuntime, FloatElement, IntElement};
    use burn_fusion::stream::Operation;
    use burn_fusion::{Fusion, FusionBackend, FusionRuntime};
    use burn_ir::{CustomOpIr, HandleContainer};
    use visualrwkv_kernels::wkv7 as kernels;

    use super::{Wkv7Backend, Wkv7Gradients, Wkv7Inputs, tensor_ops_forward};
    use crate::backend::cube_impl::{register_custom, two};

    fn kernel_inputs<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement>(
        x: &Wkv7Inputs<CubeBackend<R, F, I, BT>>,
    ) -> kernels::Inputs<'_, R> {
        kernels::Inputs {
            r: &x.r,
            w_raw: &x.w_raw,
            k: &x.k,
            v: &x.v,
            a: &x.a,
            b: &x.b,
            initial_state: &x.initial_state,
        }
    }

    /// The cubecl kernels of `visualrwkv_kernels::wkv7`, with the tensor-op formulation as the
    /// fallback for problems they refuse (see `visualrwkv_kernels::KernelError`).
    impl<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement> Wkv7Backend for CubeBackend<R, F, I, BT> {
        fn wkv7_forward(x: Wkv7Inputs<Self>) -> (FloatTensor<Self>, FloatTensor<Self>) {
            match kernels::forward(kernel_inputs(&x)) {
                Ok(out) => out,
                Err(_) => tensor_ops_forward::<Self>(x),
            }
        }

        #[cfg(feature = "autodiff")]
        fn wkv7_has_backward() -> bool {
            true
        }

        #[cfg(feature = "autodiff")]
        fn wkv7_backward(
            x: Wkv7Inputs<Self>,
            dy: FloatTensor<Self>,
            d_state: FloatTensor<Self>,
        ) -> Wkv7Gradients<Self> {
            match kernels::backward(kernel_inputs(&x), &dy, &d_state) {
                Ok(g) => Wkv7Inputs {
                    r: g.r,
                    w_raw: g.w_raw,
                    k: g.k,
                    v: g.v,
                    a: g.a,
                    b: g.b,
                    initial_state: g.initial_state,
                },
                Err(_) => super::tensor_ops_backward::<Self>(x, dy, d_state),
            }
        }
    }

    /// A WKV7 call registered in a fusion stream; executing it runs `B`'s implementation.
    #[derive(Clone, Debug)]
    struct Wkv7FusionOp<B> {
        desc: CustomOpIr,
        backward: bool,
        _backend: PhantomData<B>,
    }

    type Handles<B> = HandleContainer<<<B as FusionBackend>::FusionRuntime as FusionRuntime>::FusionHandle>;

    impl<B: FusionBackend + Wkv7Backend> Operation<B::FusionRuntime> for Wkv7FusionOp<B> {
        fn execute(&self, handles: &mut Handles<B>) {
            if self.backward {
                let (ins, outs) = self.desc.as_fixed::<9, 7>();
                let [r, w, k, v, a, b, s, dy, ds] = ins.clone().map(|x| handles.get_float_tensor::<B>(&x));
                let g = B::wkv7_backward(Wkv7Inputs::from_array([r, w, k, v, a, b, s]), dy, ds);
                for (out, grad) in outs.iter().zip(g.into_array()) {
                    handles.register_float_tensor::<B>(&out.id, grad);
                }
            } else {
                let (ins, [y_out, s_out]) = self.desc.as_fixed::<7, 2>();
                let x = ins.clone().map(|x| handles.get_float_tensor::<B>(&x));
                let (y, s) = B::wkv7_forward(Wkv7Inputs::from_array(x));
                handles.register_float_tensor::<B>(&y_out.id, y);
                handles.register_float_tensor::<B>(&s_out.id, s);
            }
        }
    }

    fn op<B>(backward: bool) -> impl FnOnce(CustomOpIr) -> Wkv7FusionOp<B> {
        move |desc| Wkv7FusionOp { desc, backward, _backend: PhantomData }
    }

    /// Every call becomes one custom operation in the fusion stream, executed by `B`.
    impl<B: FusionBackend + Wkv7Backend> Wkv7Backend for Fusion<B> {
        fn wkv7_forward(x: Wkv7Inputs<Self>) -> (FloatTensor<Self>, FloatTensor<Self>) {
            // Outputs: y like r (input 0), the state like the initial state (input 6).
            two(register_custom::<B, _>("wkv7_forward", x.into_array().to_vec(), &[0, 6], op::<B>(false)))
        }

        #[cfg(feature = "autodiff")]
        fn wkv7_has_backward() -> bool {
            B::wkv7_has_backward()
        }

        #[cfg(feature = "autodiff")]
        fn wkv7_backward(
            x: Wkv7Inputs<Self>,
            dy: FloatTensor<Self>,
            d_state: FloatTensor<Self>,
        ) -> Wkv7Gradients<Self> {
            let mut inputs = x.into_array().to_vec();
            inputs.extend([dy, d_state]);
            let g = register_custom::<B, _>("wkv7_backward", inputs, &[0, 1, 2, 3, 4, 5, 6], op::<B>(true));
            let g: [FloatTensor<Self>; 7] =
                g.try_into().unwrap_or_else(|_| unreachable!("a WKV7 backward op registers seven outputs"));
            Wkv7Inputs::from_array(g)
        }
    }
}

#[cfg(feature = "tch")]
impl<E: burn::backend::libtorch::TchElement> Wkv7Backend for burn::backend::LibTorch<E> {}
