//! WKV7, the recurrence of RWKV-7, as cubecl kernels: forward with initial and final state, and
//! backward of all seven inputs (`r, w_raw, k, v, a, b` and the initial state) for any `T`, in
//! f32, f16 and bf16 with f32 state and accumulation.
//!
//! - [`kernel`]: the `#[cube]` kernels and their equations.
//! - [`forward`], [`backward`]: checked launchers, which return a [`crate::KernelError`] rather
//!   than launching out of range.
//!
//! `visualrwkv_wkv::wkv7` dispatches to them on the cubecl backends; its `reference` is the
//! oracle, and `tests/wkv7.rs` checks the kernels against it.
//!
//! # Shapes
//!
//! `r, w_raw, k, v, a, b, y` `[B, T, H, N]`; states `[B, H, N, N]` laid out
//! `[batch, head, key i, value j]`.

pub mod kernel;

use burn::tensor::DType;
use burn_cubecl::CubeRuntime;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::tensor::CubeTensor;

use crate::KernelError;
use crate::host::{
    Problem, backward_chunk, check_device, empty, expect_dtype, expect_shape, float_dtype, launch_geometry,
    sequence_dims,
};
use kernel::{wkv7_backward_columns_kernel, wkv7_backward_rows_kernel, wkv7_forward_kernel};

/// The seven inputs of a launch, by reference: a refused launch leaves them with the caller.
#[derive(Debug)]
pub struct Inputs<'a, R: CubeRuntime> {
    /// Receptance `[B, T, H, N]`.
    pub r: &'a CubeTensor<R>,
    /// Decay pre-activation `[B, T, H, N]` (the decay is `exp(-exp(w_raw))`).
    pub w_raw: &'a CubeTensor<R>,
    /// Key `[B, T, H, N]`.
    pub k: &'a CubeTensor<R>,
    /// Value `[B, T, H, N]`.
    pub v: &'a CubeTensor<R>,
    /// Removal read-out vector `[B, T, H, N]`.
    pub a: &'a CubeTensor<R>,
    /// Removal write vector `[B, T, H, N]`.
    pub b: &'a CubeTensor<R>,
    /// Initial state `[B, H, N, N]`.
    pub initial_state: &'a CubeTensor<R>,
}

/// Gradients returned by [`backward`], in the dtypes of the matching inputs.
#[derive(Clone, Debug)]
pub struct Gradients<R: CubeRuntime> {
    /// `dL/dr` `[B, T, H, N]`.
    pub r: CubeTensor<R>,
    /// `dL/dw_raw` `[B, T, H, N]`.
    pub w_raw: CubeTensor<R>,
    /// `dL/dk` `[B, T, H, N]`.
    pub k: CubeTensor<R>,
    /// `dL/dv` `[B, T, H, N]`.
    pub v: CubeTensor<R>,
    /// `dL/da` `[B, T, H, N]`.
    pub a: CubeTensor<R>,
    /// `dL/db` `[B, T, H, N]`.
    pub b: CubeTensor<R>,
    /// `dL/d initial_state` `[B, H, N, N]`.
    pub initial_state: CubeTensor<R>,
}

impl<R: CubeRuntime> Clone for Inputs<'_, R> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<R: CubeRuntime> Copy for Inputs<'_, R> {}

impl<'a, R: CubeRuntime> Inputs<'a, R> {
    fn sequences(&self) -> [(&'static str, &'a CubeTensor<R>); 6] {
        [("r", self.r), ("w_raw", self.w_raw), ("k", self.k), ("v", self.v), ("a", self.a), ("b", self.b)]
    }

    /// Contiguous copies of `r, w_raw, k, v, a, b` and the initial state.
    fn contiguous(&self) -> [CubeTensor<R>; 7] {
        [self.r, self.w_raw, self.k, self.v, self.a, self.b, self.initial_state].map(|x| into_contiguous(x.clone()))
    }
}

/// Checks the inputs against each other and against the device's limits.
pub fn check<R: CubeRuntime>(x: &Inputs<'_, R>) -> Result<Problem, KernelError> {
    let [b, t, h, n] = sequence_dims(x.r)?;
    let dims = [b, t, h, n];
    for (name, s) in x.sequences() {
        expect_shape(name, s, &dims)?;
    }
    expect_shape("initial_state", x.initial_state, &[b, h, n, n])?;
    let dtype = float_dtype("r", x.r)?;
    for (name, s) in x.sequences() {
        expect_dtype(name, s, dtype)?;
    }
    let state_dtype = float_dtype("initial_state", x.initial_state)?;
    let problem = Problem { b, t, h, n, dtype, state_dtype };
    check_device(x.r, &problem)?;
    Ok(problem)
}

/// Launches the forward kernel on contiguous inputs; with `save_sa`, also returns each step's
/// `aᵀS` `[B, T, H, N]` f32.
fn launch_forward<R: CubeRuntime>(
    p: &Problem,
    x: [CubeTensor<R>; 7],
    save_sa: bool,
) -> (CubeTensor<R>, CubeTensor<R>, CubeTensor<R>) {
    let [r, w, k, v, a, b, s0] = x;
    let y = empty(&r, vec![p.b, p.t, p.h, p.n], p.dtype);
    let s_out = empty(&r, vec![p.b, p.h, p.n, p.n], p.state_dtype);
    let sa_shape = if save_sa { vec![p.b, p.t, p.h, p.n] } else { vec![1] };
    let sa = empty(&r, sa_shape, DType::F32);
    let (count, dim) = launch_geometry(p);
    wkv7_forward_kernel::launch::<R>(
        &r.client.clone(),
        count,
        dim,
        r.into_tensor_arg(),
        w.into_tensor_arg(),
        k.into_tensor_arg(),
        v.into_tensor_arg(),
        a.into_tensor_arg(),
        b.into_tensor_arg(),
        s0.into_tensor_arg(),
        y.clone().into_tensor_arg(),
        s_out.clone().into_tensor_arg(),
        sa.clone().into_tensor_arg(),
        p.t as u32,
        p.n,
        save_sa,
        [p.dtype.into(), p.state_dtype.into()],
    );
    (y, s_out, sa)
}

/// Runs the forward kernel: returns `y` `[B, T, H, N]` (dtype of `r`) and the final state
/// `[B, H, N, N]` (dtype of the initial state).
pub fn forward<R: CubeRuntime>(x: Inputs<'_, R>) -> Result<(CubeTensor<R>, CubeTensor<R>), KernelError> {
    let p = check(&x)?;
    let (y, s, _) = launch_forward(&p, x.contiguous(), false);
    Ok((y, s))
}

/// Runs the backward kernels for the cotangents `dy` `[B, T, H, N]` (dtype of `r`) and
/// `d_state` `[B, H, N, N]` (dtype of the initial state) of the forward outputs: the forward
/// kernel again (for `aᵀS`), the columns kernel (`dv`, and `dsa` for the rows), then the rows
/// kernel (everything else).
pub fn backward<R: CubeRuntime>(
    x: Inputs<'_, R>,
    dy: &CubeTensor<R>,
    d_state: &CubeTensor<R>,
) -> Result<Gradients<R>, KernelError> {
    let p = check(&x)?;
    let seq = vec![p.b, p.t, p.h, p.n];
    let states = vec![p.b, p.h, p.n, p.n];
    expect_shape("dy", dy, &seq)?;
    expect_shape("d_state", d_state, &states)?;
    expect_dtype("dy", dy, p.dtype)?;
    expect_dtype("d_state", d_state, p.state_dtype)?;
    let chunk = backward_chunk(p.t);
    let inputs = x.contiguous();
    let [dy, ds] = [dy, d_state].map(|x| into_contiguous(x.clone()));
    let (_, _, sa) = launch_forward(&p, inputs.clone(), true);
    let [r, w, k, v, a, b, s0] = inputs;

    let [dr, dw, dk, dv, da, db] = [(); 6].map(|_| empty(&r, seq.clone(), p.dtype));
    let dsa = empty(&r, seq.clone(), DType::F32);
    let ds0 = empty(&r, states, p.state_dtype);
    let checkpoints = empty(&r, vec![p.b, p.h, p.t.div_ceil(chunk), p.n, p.n], DType::F32);
    let scratch = empty(&r, vec![p.b, p.h, chunk, p.n, p.n], DType::F32);
    let (count, dim) = launch_geometry(&p);
    let client = r.client.clone();
    let dtypes = [p.dtype.into(), p.state_dtype.into()];

    wkv7_backward_columns_kernel::launch::<R>(
        &client,
        count.clone(),
        dim,
        r.clone().into_tensor_arg(),
        w.clone().into_tensor_arg(),
        k.clone().into_tensor_arg(),
        a.clone().into_tensor_arg(),
        b.clone().into_tensor_arg(),
        dy.clone().into_tensor_arg(),
        ds.clone().into_tensor_arg(),
        dv.clone().into_tensor_arg(),
        dsa.clone().into_tensor_arg(),
        p.t as u32,
        p.n,
        dtypes,
    );
    wkv7_backward_rows_kernel::launch::<R>(
        &client,
        count,
        dim,
        r.into_tensor_arg(),
        w.into_tensor_arg(),
        k.into_tensor_arg(),
        v.into_tensor_arg(),
        a.into_tensor_arg(),
        b.into_tensor_arg(),
        s0.into_tensor_arg(),
        dy.into_tensor_arg(),
        ds.into_tensor_arg(),
        sa.into_tensor_arg(),
        dsa.into_tensor_arg(),
        dr.clone().into_tensor_arg(),
        dw.clone().into_tensor_arg(),
        dk.clone().into_tensor_arg(),
        da.clone().into_tensor_arg(),
        db.clone().into_tensor_arg(),
        ds0.clone().into_tensor_arg(),
        checkpoints.into_tensor_arg(),
        scratch.into_tensor_arg(),
        p.t as u32,
        chunk as u32,
        p.n,
        dtypes,
    );
    Ok(Gradients { r: dr, w_raw: dw, k: dk, v: dv, a: da, b: db, initial_state: ds0 })
}
