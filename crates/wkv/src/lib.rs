//! # visualrwkv-wkv: the WKV6 recurrence of RWKV-6 ("Finch") and WKV7 of RWKV-7 ("Goose")
//!
//! WKV6 is the data-dependent linear recurrence at the heart of RWKV-6 and VisualRWKV
//! (docs/model.md §1.4). This crate holds:
//!
//! - [`reference`]: the plain recurrence over slices (f32 and f64) and its exact backward pass,
//!   written from the math. It is the oracle of every fast path.
//! - [`wkv6`] / [`wkv6_step`]: the burn op, generic over any backend that implements
//!   [`Wkv6Backend`]. The default implementation works on every backend through the chunked
//!   matmul formulation ([`chunked`]) and is differentiable through burn's autodiff; backends can
//!   override it with their own kernels.
//!
//! - [`wkv7`]: WKV7, the generalised delta rule of RWKV-7, with the same layers (reference,
//!   CPU kernel, tensor-op formulation, checked op).
//!
//! # Shapes
//!
//! | tensor | shape | meaning |
//! |---|---|---|
//! | `r`, `k`, `v`, `w_raw` | `[B, T, H, N]` | receptance, key, value, decay pre-activation |
//! | `u` | `[H, N]` | bonus (`time_faaaa`), used as is |
//! | state | `[B, H, N, N]` | `[batch, head, key i, value j]` |
//! | `y` | `[B, T, H, N]` | output |
//!
//! ```text
//! y[t, j] = sum_i r[t, i] * (S[i, j] + u[i] * k[t, i] * v[t, j])
//! S[i, j] = exp(-exp(w_raw[t, i])) * S[i, j] + k[t, i] * v[t, j]
//! ```
//!
//! # Example
//!
//! ```
//! use burn::backend::NdArray;
//! use burn::tensor::{Distribution, Tensor};
//! use visualrwkv_wkv::wkv6;
//!
//! let dev = Default::default();
//! let x = || Tensor::<NdArray, 4>::random([1, 7, 2, 4], Distribution::Uniform(-1.0, 1.0), &dev);
//! let u = Tensor::<NdArray, 2>::random([2, 4], Distribution::Uniform(-1.0, 1.0), &dev);
//! let out = wkv6(x(), x(), x(), x(), u, None).unwrap();
//! assert_eq!(out.y.dims(), [1, 7, 2, 4]);
//! assert_eq!(out.state.dims(), [1, 2, 4, 4]);
//! ```

pub mod backend;
pub mod chunked;
pub mod cpu;
mod error;
mod op;
pub mod reference;
#[cfg(feature = "testing")]
pub mod testing;
pub mod wkv7;

pub use backend::Wkv6Backend;
pub use error::WkvError;
pub use op::{DEFAULT_CHUNK_LEN, Wkv6Options, Wkv6Output, Wkv6StepOutput, wkv6, wkv6_step, wkv6_with};
pub use wkv7::{Wkv7Backend, Wkv7Output, wkv7, wkv7_step};
