//! # visualrwkv-kernels: WKV6 and WKV7 as cubecl GPU kernels
//!
//! The WKV6 recurrence of RWKV-6 and the WKV7 recurrence of RWKV-7 written once in cubecl's
//! `#[cube]` dialect, so the same source runs on CUDA (NVRTC), Vulkan/Metal/DX12 (wgpu) and any
//! other cubecl runtime:
//!
//! - [`kernel`]: the WKV6 kernels — forward with initial and final state, backward of all six
//!   inputs (`r, k, v, w_raw, u` and the initial state) for any `T`, in f32, f16 and bf16 with f32
//!   state and accumulation.
//! - [`host`]: checked launchers of those on burn's `CubeTensor`, which return a [`KernelError`]
//!   rather than launching out of range.
//! - [`wkv7`]: the WKV7 kernels (forward, backward of all seven inputs) and their launchers.
//!
//! Users do not call these directly: `visualrwkv_wkv::wkv6` and `visualrwkv_wkv::wkv7` dispatch
//! to them on `burn::backend::Wgpu`, `burn::backend::Cuda` (both fusion-wrapped), the bare
//! `CubeBackend`s and `Autodiff<..>` of those (with the `wgpu` / `cuda` features of
//! `visualrwkv-wkv`). The oracles are `visualrwkv_wkv::reference` and
//! `visualrwkv_wkv::wkv7::reference`; `tests/` checks the kernels against them.
//!
//! # Shapes
//!
//! WKV6: `r, k, v, w_raw, y` `[B, T, H, N]`; `u` `[H, N]`; states `[B, H, N, N]` laid out
//! `[batch, head, key i, value j]` (see [`kernel`]). WKV7: see [`wkv7`].

use burn::tensor::DType;
use thiserror::Error;

pub mod host;
pub mod kernel;
pub mod wkv7;

pub use host::{Gradients, MAX_HEAD_SIZE, Problem, backward, backward_chunk, check, forward};

/// Why a launcher refused a problem. Nothing was launched.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum KernelError {
    /// A tensor's shape disagrees with the one implied by `r`.
    #[error("wkv kernel: tensor `{name}` has shape {found:?}, expected {expected:?}")]
    Shape {
        /// The tensor.
        name: &'static str,
        /// Expected shape.
        expected: Vec<usize>,
        /// Shape found.
        found: Vec<usize>,
    },
    /// A size is zero.
    #[error("wkv kernel: every size must be at least 1, got [B, T, H, N] = {dims:?}")]
    Empty {
        /// `[B, T, H, N]`.
        dims: Vec<usize>,
    },
    /// Tensors that must share a dtype do not.
    #[error("wkv kernel: tensor `{name}` has dtype {found:?}, expected {expected:?}")]
    DTypeMismatch {
        /// The tensor.
        name: &'static str,
        /// The dtype of `r` (or of the initial state, for state tensors).
        expected: DType,
        /// Its dtype.
        found: DType,
    },
    /// The dtype is not f32, f16 or bf16, or the device does not support it.
    #[error("wkv kernel: tensor `{name}` has dtype {dtype:?}, which this kernel or device does not support")]
    DTypeUnsupported {
        /// The tensor.
        name: &'static str,
        /// Its dtype.
        dtype: DType,
    },
    /// The head size exceeds the units a cube may have (or [`MAX_HEAD_SIZE`]).
    #[error("wkv kernel: head size {n} exceeds the limit {max} of this device")]
    HeadSize {
        /// Head size N.
        n: usize,
        /// The limit.
        max: usize,
    },
    /// `H` or `B` exceeds the device's cube count in x or y.
    #[error("wkv kernel: grid of {h} heads × {b} batch rows exceeds the device limit {max_h} × {max_b}")]
    Grid {
        /// Batch size.
        b: usize,
        /// Heads.
        h: usize,
        /// Limit on B.
        max_b: usize,
        /// Limit on H.
        max_h: usize,
    },
    /// A buffer would need more elements than 32-bit indexing reaches.
    #[error("wkv kernel: a buffer of {elements} elements exceeds 32-bit indexing ({max})")]
    TooLarge {
        /// Elements of the largest buffer.
        elements: usize,
        /// The limit.
        max: usize,
    },
}
