//! Reproducible random draws when several threads draw.
//!
//! burn's backends keep one random generator per process: two threads that each seed it and
//! then draw (parallel tests, the runs of a parallel ablation) take numbers from each other's
//! sequence, so a "seeded" model depends on timing. [`seeded`] seeds and draws under one
//! process-wide lock.

use std::sync::{Mutex, PoisonError};

use burn::tensor::backend::Backend;

/// Held while a seeded draw runs.
static DRAW: Mutex<()> = Mutex::new(());

/// Seeds `B`'s random generator with `seed` on `device` and runs `draw` (a model's `init`,
/// random tensors) while holding a process-wide lock, so that `draw` sees exactly the sequence
/// of `seed` whatever other threads do through this function. Draws made outside it are not
/// ordered; `draw` must not call `seeded` again (the lock is not re-entrant).
///
/// ```
/// use burn::backend::NdArray;
/// use visualrwkv_rwkv::{RwkvConfig, seeded};
///
/// let cfg = RwkvConfig { n_layer: 1, n_embd: 8, n_head: 2, head_size: 4, dim_ffn: 16, vocab_size: 10, d_mix: 2, d_decay: 2 };
/// let dev = Default::default();
/// let a = seeded::<NdArray, _>(&dev, 7, || cfg.init::<NdArray>(&dev));
/// let b = seeded::<NdArray, _>(&dev, 7, || cfg.init::<NdArray>(&dev));
/// assert_eq!(a.head.weight.val().into_data(), b.head.weight.val().into_data());
/// ```
pub fn seeded<B: Backend, T>(device: &B::Device, seed: u64, draw: impl FnOnce() -> T) -> T {
    let _turn = DRAW.lock().unwrap_or_else(PoisonError::into_inner);
    B::seed(device, seed);
    draw()
}

#[cfg(all(test, feature = "ndarray"))]
mod tests {
    use burn::backend::NdArray;
    use burn::tensor::{Distribution, Tensor};

    use super::seeded;

    fn draw(seed: u64) -> Vec<f32> {
        let dev = Default::default();
        seeded::<NdArray, _>(&dev, seed, || {
            // Several draws, so that an unguarded generator would interleave between them.
            (0..8)
                .flat_map(|_| {
                    Tensor::<NdArray, 1>::random([16], Distribution::Default, &dev)
                        .into_data()
                        .into_vec::<f32>()
                        .unwrap()
                })
                .collect()
        })
    }

    /// Threads drawing at once each get their own seed's sequence.
    #[test]
    fn concurrent_seeded_draws_are_reproducible() {
        let want: Vec<Vec<f32>> = (0..4).map(draw).collect();
        std::thread::scope(|s| {
            let handles: Vec<_> =
                (0..4u64).map(|seed| s.spawn(move || (0..50).map(|_| draw(seed)).collect::<Vec<_>>())).collect();
            for (seed, h) in handles.into_iter().enumerate() {
                for got in h.join().unwrap() {
                    assert_eq!(got, want[seed], "seed {seed}");
                }
            }
        });
    }
}
