//! Launchers: checked host-side entry points of the kernels on burn's `CubeTensor`s.
//!
//! Every launcher validates shapes, dtypes, the device's limits (cube dimension, cube count,
//! 32-bit indexing) and dtype support before it allocates or launches anything, and returns a
//! [`KernelError`] instead of launching out of range. Inputs are taken by reference, so a caller
//! whose request is refused still owns them (the WKV op then falls back to the chunked tensor-op
//! path).
//!
//! # Shapes
//!
//! As in [`crate::kernel`]: `r, k, v, w_raw` `[B, T, H, N]`, `u` `[H, N]`, states `[B, H, N, N]`.

use burn::tensor::{DType, Shape, TensorMetadata};
use burn_cubecl::CubeRuntime;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::*;

use crate::KernelError;
use crate::kernel::{
    wkv6_backward_columns_kernel, wkv6_backward_rows_kernel, wkv6_forward_kernel, wkv6_sum_batch_kernel,
};

/// Largest head size `N` the kernels accept (one unit per channel; two `N`-float register rows).
pub const MAX_HEAD_SIZE: usize = 256;

/// Sizes of a checked problem.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Batch size B.
    pub b: usize,
    /// Sequence length T.
    pub t: usize,
    /// Heads H.
    pub h: usize,
    /// Head size N.
    pub n: usize,
    /// Dtype of `r, k, v, w_raw, u, y` (and of `dy` and the sequence gradients).
    pub dtype: DType,
    /// Dtype of the initial and final states (and their cotangents / gradients).
    pub state_dtype: DType,
}

/// Gradients returned by [`backward`], in the dtypes of the matching inputs.
#[derive(Clone, Debug)]
pub struct Gradients<R: CubeRuntime> {
    /// `dL/dr` `[B, T, H, N]`.
    pub r: CubeTensor<R>,
    /// `dL/dk` `[B, T, H, N]`.
    pub k: CubeTensor<R>,
    /// `dL/dv` `[B, T, H, N]`.
    pub v: CubeTensor<R>,
    /// `dL/dw_raw` `[B, T, H, N]`.
    pub w_raw: CubeTensor<R>,
    /// `dL/du` `[H, N]`.
    pub u: CubeTensor<R>,
    /// `dL/d initial_state` `[B, H, N, N]`.
    pub initial_state: CubeTensor<R>,
}

pub(crate) fn dims_of<R: CubeRuntime>(x: &CubeTensor<R>) -> Vec<usize> {
    x.shape().to_vec()
}

pub(crate) fn expect_shape<R: CubeRuntime>(
    name: &'static str,
    x: &CubeTensor<R>,
    expected: &[usize],
) -> Result<(), KernelError> {
    let found = dims_of(x);
    if found == expected { Ok(()) } else { Err(KernelError::Shape { name, expected: expected.to_vec(), found }) }
}

pub(crate) fn expect_dtype<R: CubeRuntime>(
    name: &'static str,
    x: &CubeTensor<R>,
    dtype: DType,
) -> Result<(), KernelError> {
    if x.dtype == dtype { Ok(()) } else { Err(KernelError::DTypeMismatch { name, expected: dtype, found: x.dtype }) }
}

pub(crate) fn float_dtype<R: CubeRuntime>(name: &'static str, x: &CubeTensor<R>) -> Result<DType, KernelError> {
    match x.dtype {
        DType::F32 | DType::F16 | DType::BF16 => {
            if x.client.properties().supports_type(StorageType::from(x.dtype)) {
                Ok(x.dtype)
            } else {
                Err(KernelError::DTypeUnsupported { name, dtype: x.dtype })
            }
        }
        other => Err(KernelError::DTypeUnsupported { name, dtype: other }),
    }
}

/// Checks the forward inputs against each other and against the device's limits.
pub fn check<R: CubeRuntime>(
    r: &CubeTensor<R>,
    k: &CubeTensor<R>,
    v: &CubeTensor<R>,
    w_raw: &CubeTensor<R>,
    u: &CubeTensor<R>,
    initial_state: &CubeTensor<R>,
) -> Result<Problem, KernelError> {
    let [b, t, h, n] = sequence_dims(r)?;
    let dims = [b, t, h, n];
    for (name, x) in [("k", k), ("v", v), ("w_raw", w_raw)] {
        expect_shape(name, x, &dims)?;
    }
    expect_shape("u", u, &[h, n])?;
    expect_shape("initial_state", initial_state, &[b, h, n, n])?;
    let dtype = float_dtype("r", r)?;
    for (name, x) in [("k", k), ("v", v), ("w_raw", w_raw), ("u", u)] {
        expect_dtype(name, x, dtype)?;
    }
    let state_dtype = float_dtype("initial_state", initial_state)?;
    let problem = Problem { b, t, h, n, dtype, state_dtype };
    check_device(r, &problem)?;
    Ok(problem)
}

/// The `[B, T, H, N]` of `r`, refusing other ranks and zero sizes.
pub(crate) fn sequence_dims<R: CubeRuntime>(r: &CubeTensor<R>) -> Result<[usize; 4], KernelError> {
    let dims = dims_of(r);
    let [b, t, h, n] = <[usize; 4]>::try_from(dims.as_slice()).map_err(|_| KernelError::Shape {
        name: "r",
        expected: vec![0; 4],
        found: dims.clone(),
    })?;
    if b == 0 || t == 0 || h == 0 || n == 0 {
        return Err(KernelError::Empty { dims });
    }
    Ok([b, t, h, n])
}

/// Checks a problem against the limits of `like`'s device: units per cube, cube count and 32-bit
/// indexing of the largest buffer (sequences, checkpoints, scratch).
pub(crate) fn check_device<R: CubeRuntime>(like: &CubeTensor<R>, p: &Problem) -> Result<(), KernelError> {
    let Problem { b, t, h, n, .. } = *p;
    let props = like.client.properties();
    let max_units = (props.hardware.max_cube_dim.0.min(props.hardware.max_units_per_cube) as usize).min(MAX_HEAD_SIZE);
    if n > max_units {
        return Err(KernelError::HeadSize { n, max: max_units });
    }
    let (max_x, max_y, _) = props.hardware.max_cube_count;
    if h > max_x as usize || b > max_y as usize {
        return Err(KernelError::Grid { b, h, max_b: max_y as usize, max_h: max_x as usize });
    }
    let elements = p.largest_buffer(backward_chunk(t));
    if elements > u32::MAX as usize {
        return Err(KernelError::TooLarge { elements, max: u32::MAX as usize });
    }
    Ok(())
}

impl Problem {
    /// Elements of the largest buffer the kernels index (sequence, checkpoints or scratch).
    fn largest_buffer(&self, chunk: usize) -> usize {
        let states = self.b * self.h * self.n * self.n;
        (self.b * self.t * self.h * self.n).max(states * self.t.div_ceil(chunk)).max(states * chunk)
    }
}

/// Chunk length of the backward checkpoints: `ceil(sqrt(T))`, which minimises checkpoint plus
/// scratch memory (`(T/L + L) · N²` floats per head).
pub fn backward_chunk(t: usize) -> usize {
    (t as f64).sqrt().ceil().max(1.0) as usize
}

pub(crate) fn launch_geometry(p: &Problem) -> (CubeCount, CubeDim) {
    (CubeCount::Static(p.h as u32, p.b as u32, 1), CubeDim::new_1d(p.n as u32))
}

/// An uninitialised output with packed row-major strides: the kernels index it as contiguous
/// (the default allocation may pad rows, e.g. on CUDA, for small last dimensions).
pub(crate) fn empty<R: CubeRuntime>(like: &CubeTensor<R>, shape: Vec<usize>, dtype: DType) -> CubeTensor<R> {
    empty_device_contiguous_dtype(like.client.clone(), like.device.clone(), Shape::from(shape), dtype)
}

/// Runs the forward kernel: returns `y` `[B, T, H, N]` (dtype of `r`) and the final state
/// `[B, H, N, N]` (dtype of `initial_state`).
pub fn forward<R: CubeRuntime>(
    r: &CubeTensor<R>,
    k: &CubeTensor<R>,
    v: &CubeTensor<R>,
    w_raw: &CubeTensor<R>,
    u: &CubeTensor<R>,
    initial_state: &CubeTensor<R>,
) -> Result<(CubeTensor<R>, CubeTensor<R>), KernelError> {
    let p = check(r, k, v, w_raw, u, initial_state)?;
    let [r, k, v, w_raw, u, s0] = [r, k, v, w_raw, u, initial_state].map(|x| into_contiguous(x.clone()));
    let y = empty(&r, vec![p.b, p.t, p.h, p.n], p.dtype);
    let s_out = empty(&r, vec![p.b, p.h, p.n, p.n], p.state_dtype);
    let (count, dim) = launch_geometry(&p);
    wkv6_forward_kernel::launch::<R>(
        &r.client.clone(),
        count,
        dim,
        r.into_tensor_arg(),
        k.into_tensor_arg(),
        v.into_tensor_arg(),
        w_raw.into_tensor_arg(),
        u.into_tensor_arg(),
        s0.into_tensor_arg(),
        y.clone().into_tensor_arg(),
        s_out.clone().into_tensor_arg(),
        p.t as u32,
        p.n,
        [p.dtype.into(), p.state_dtype.into()],
    );
    Ok((y, s_out))
}

/// Runs the backward kernels for the cotangents `dy` `[B, T, H, N]` (dtype of `r`) and
/// `d_state` `[B, H, N, N]` (dtype of `initial_state`) of the forward outputs.
#[allow(clippy::too_many_arguments)]
pub fn backward<R: CubeRuntime>(
    r: &CubeTensor<R>,
    k: &CubeTensor<R>,
    v: &CubeTensor<R>,
    w_raw: &CubeTensor<R>,
    u: &CubeTensor<R>,
    initial_state: &CubeTensor<R>,
    dy: &CubeTensor<R>,
    d_state: &CubeTensor<R>,
) -> Result<Gradients<R>, KernelError> {
    let p = check(r, k, v, w_raw, u, initial_state)?;
    let seq = vec![p.b, p.t, p.h, p.n];
    let states = vec![p.b, p.h, p.n, p.n];
    expect_shape("dy", dy, &seq)?;
    expect_shape("d_state", d_state, &states)?;
    expect_dtype("dy", dy, p.dtype)?;
    expect_dtype("d_state", d_state, p.state_dtype)?;
    let chunk = backward_chunk(p.t);
    let [r, k, v, w_raw, u, s0, dy, ds] =
        [r, k, v, w_raw, u, initial_state, dy, d_state].map(|x| into_contiguous(x.clone()));

    let [dr, dk, dv, dw] = [(); 4].map(|_| empty(&r, seq.clone(), p.dtype));
    let du_part = empty(&r, vec![p.b, p.h, p.n], DType::F32);
    let du = empty(&r, vec![p.h, p.n], p.dtype);
    let ds0 = empty(&r, states.clone(), p.state_dtype);
    let checkpoints = empty(&r, vec![p.b, p.h, p.t.div_ceil(chunk), p.n, p.n], DType::F32);
    let scratch = empty(&r, vec![p.b, p.h, chunk, p.n, p.n], DType::F32);
    let (count, dim) = launch_geometry(&p);
    let client = r.client.clone();
    let dtypes = [p.dtype.into(), p.state_dtype.into()];

    wkv6_backward_columns_kernel::launch::<R>(
        &client,
        count.clone(),
        dim,
        r.clone().into_tensor_arg(),
        k.clone().into_tensor_arg(),
        w_raw.clone().into_tensor_arg(),
        u.clone().into_tensor_arg(),
        dy.clone().into_tensor_arg(),
        ds.clone().into_tensor_arg(),
        dv.clone().into_tensor_arg(),
        p.t as u32,
        p.n,
        dtypes,
    );
    wkv6_backward_rows_kernel::launch::<R>(
        &client,
        count,
        dim,
        r.into_tensor_arg(),
        k.into_tensor_arg(),
        v.into_tensor_arg(),
        w_raw.into_tensor_arg(),
        u.into_tensor_arg(),
        s0.into_tensor_arg(),
        dy.into_tensor_arg(),
        ds.into_tensor_arg(),
        dr.clone().into_tensor_arg(),
        dk.clone().into_tensor_arg(),
        dw.clone().into_tensor_arg(),
        du_part.clone().into_tensor_arg(),
        ds0.clone().into_tensor_arg(),
        checkpoints.into_tensor_arg(),
        scratch.into_tensor_arg(),
        p.t as u32,
        chunk as u32,
        p.n,
        dtypes,
    );
    wkv6_sum_batch_kernel::launch::<R>(
        &client,
        CubeCount::Static(p.h as u32, 1, 1),
        CubeDim::new_1d(p.n as u32),
        du_part.into_tensor_arg(),
        du.clone().into_tensor_arg(),
        p.b as u32,
        p.n,
        p.dtype.into(),
    );
    Ok(Gradients { r: dr, k: dk, v: dv, w_raw: dw, u: du, initial_state: ds0 })
}
