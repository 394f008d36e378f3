//! The op on LibTorch (CPU): forward against the official goldens and the reference, gradients
//! through `Autodiff<LibTorch>`. Built only with `--features tch` (see `scripts/tch-check.sh`).
#![cfg(feature = "tch")]

use burn::backend::Autodiff;
use burn::backend::libtorch::{LibTorch, LibTorchDevice};
use visualrwkv_wkv::reference::Dims;
use visualrwkv_wkv::testing::{Case, Tolerance, check_forward, check_gradients};

#[test]
fn libtorch_forward_and_gradients_match_the_reference() {
    let dev = LibTorchDevice::Cpu;
    for (seed, dims, state) in
        [(1, Dims::new(2, 33, 2, 16), true), (2, Dims::new(1, 1, 3, 64), false), (3, Dims::new(1, 50, 1, 4), true)]
    {
        let case = Case::random(dims, seed, (-20.0, 5.0), state);
        for chunk in [1, 16, 64] {
            check_forward::<LibTorch>(&case, chunk, &dev, Tolerance::F32).unwrap();
        }
        check_gradients::<Autodiff<LibTorch>>(&case, 16, &dev, Tolerance { abs: 2e-4, rel: 1e-4 }).unwrap();
    }
}
