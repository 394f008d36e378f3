use thiserror::Error;

/// Errors of the WKV6 and WKV7 operators: bad shapes or options, reported before anything runs.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum WkvError {
    /// A tensor's shape does not match the one implied by the other inputs.
    #[error("wkv: tensor `{name}` has shape {found:?}, expected {expected:?}")]
    Shape {
        /// Name of the offending input (`r`, `k`, `v`, `w_raw`, `u`, `initial_state`, ...).
        name: &'static str,
        /// The shape implied by the other inputs.
        expected: Vec<usize>,
        /// The shape that was passed.
        found: Vec<usize>,
    },
    /// A flat slice has the wrong number of elements for the given sizes.
    #[error("wkv: slice `{name}` has {found} elements, expected shape {expected:?}")]
    Length {
        /// Name of the offending input.
        name: &'static str,
        /// The shape the slice should have.
        expected: Vec<usize>,
        /// The number of elements found.
        found: usize,
    },
    /// A size is zero (`[B, T, H, N]` must all be at least 1).
    #[error("wkv: every size must be at least 1, got [B, T, H, N] = {dims:?}")]
    Empty {
        /// The sizes `[B, T, H, N]`.
        dims: Vec<usize>,
    },
    /// The chunk length is zero.
    #[error("wkv: chunk length must be at least 1")]
    ChunkLen,
}

impl WkvError {
    /// `Ok` when `found == expected`, else [`WkvError::Shape`] naming the tensor `name`.
    pub(crate) fn check_shape(name: &'static str, found: &[usize], expected: &[usize]) -> Result<(), WkvError> {
        if found == expected {
            Ok(())
        } else {
            Err(WkvError::Shape { name, expected: expected.to_vec(), found: found.to_vec() })
        }
    }
}
