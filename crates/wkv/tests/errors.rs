//! Bad shapes and options give errors that name the tensor and both shapes.

use burn::backend::NdArray;
use burn::tensor::Tensor;
use visualrwkv_wkv::reference::{self, Dims, Inputs};
use visualrwkv_wkv::{Wkv6Options, WkvError, wkv6, wkv6_step, wkv6_with};

type B = NdArray;

fn t4(s: [usize; 4]) -> Tensor<B, 4> {
    Tensor::zeros(s, &Default::default())
}

#[test]
fn mismatched_shapes_name_the_tensor_and_both_shapes() {
    let ok = [2, 5, 3, 4];
    let u = || Tensor::<B, 2>::zeros([3, 4], &Default::default());
    let cases: Vec<(&str, Result<_, WkvError>)> = vec![
        ("k", wkv6(t4(ok), t4([2, 5, 3, 5]), t4(ok), t4(ok), u(), None)),
        ("v", wkv6(t4(ok), t4(ok), t4([2, 4, 3, 4]), t4(ok), u(), None)),
        ("w_raw", wkv6(t4(ok), t4(ok), t4(ok), t4([1, 5, 3, 4]), u(), None)),
        ("u", wkv6(t4(ok), t4(ok), t4(ok), t4(ok), Tensor::zeros([4, 3], &Default::default()), None)),
        ("initial_state", wkv6(t4(ok), t4(ok), t4(ok), t4(ok), u(), Some(t4([2, 3, 4, 5])))),
    ];
    for (name, res) in cases {
        let err = res.err().unwrap_or_else(|| panic!("{name}: expected an error"));
        let msg = err.to_string();
        assert!(matches!(err, WkvError::Shape { name: n, .. } if n == name), "{msg}");
        assert!(msg.contains(&format!("`{name}`")), "{msg}");
    }
    let err = wkv6(t4(ok), t4(ok), t4(ok), t4(ok), u(), Some(t4([2, 3, 4, 5]))).err().unwrap();
    assert_eq!(err.to_string(), "wkv: tensor `initial_state` has shape [2, 3, 4, 5], expected [2, 3, 4, 4]");
}

#[test]
fn empty_sizes_and_zero_chunks_are_errors() {
    let u = Tensor::<B, 2>::zeros([3, 4], &Default::default());
    let e = t4([2, 0, 3, 4]);
    assert!(matches!(wkv6(e.clone(), e.clone(), e.clone(), e, u.clone(), None), Err(WkvError::Empty { .. })));
    let x = t4([1, 2, 3, 4]);
    let res = wkv6_with(x.clone(), x.clone(), x.clone(), x, u, None, Wkv6Options { chunk_len: 0 });
    assert!(matches!(res, Err(WkvError::ChunkLen)));
}

#[test]
fn step_shapes_are_checked() {
    let x = Tensor::<B, 3>::zeros([2, 3, 4], &Default::default());
    let u = Tensor::<B, 2>::zeros([3, 4], &Default::default());
    let err = wkv6_step(x.clone(), x.clone(), x.clone(), x, u, t4([2, 3, 4, 3])).err().unwrap();
    assert_eq!(err, WkvError::Shape { name: "state", expected: vec![2, 3, 4, 4], found: vec![2, 3, 4, 3] });
}

#[test]
fn reference_checks_slice_lengths() {
    let dims = Dims::new(1, 2, 1, 2);
    let z = vec![0f32; 4];
    let short = vec![0f32; 3];
    let x = Inputs { r: &z, k: &short, v: &z, w_raw: &z, u: &z[..2], initial_state: None };
    let err = reference::forward(dims, x).unwrap_err();
    assert_eq!(err, WkvError::Length { name: "k", expected: vec![1, 2, 1, 2], found: 3 });
    let x = Inputs { r: &z, k: &z, v: &z, w_raw: &z, u: &z[..2], initial_state: Some(&z[..3]) };
    assert!(matches!(reference::forward(dims, x), Err(WkvError::Length { name: "initial_state", .. })));
}
