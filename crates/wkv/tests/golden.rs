//! The official fixtures (`wkv6_*.safetensors`, an f64 recurrence rounded to f32, agreeing with
//! fla's `naive_recurrent_rwkv6`): every path reproduces `y` and the final state from a zero and
//! from a non-zero initial state to abs 1e-4.

mod common;

use burn::backend::{Autodiff, NdArray};
use common::*;
use visualrwkv_wkv::reference::{self, Dims, Inputs};
use visualrwkv_wkv::{Wkv6Options, chunked, cpu, wkv6_step, wkv6_with};

const FIXTURES: [&str; 2] = ["wkv6_b2_t33_h2.safetensors", "wkv6_b1_t5_h3.safetensors"];
const TOL: f32 = 1e-4;

struct Fixture {
    dims: Dims,
    f: std::collections::HashMap<String, Loaded>,
}

impl Fixture {
    fn open(name: &str) -> Self {
        let f = load(name);
        let s = &f["r"].shape;
        Self { dims: Dims::new(s[0], s[1], s[2], s[3]), f }
    }
    fn get(&self, k: &str) -> &[f32] {
        &self.f[k].data
    }
    fn inputs(&self, with_state: bool) -> Inputs<'_, f32> {
        Inputs {
            r: self.get("r"),
            k: self.get("k"),
            v: self.get("v"),
            w_raw: self.get("w_raw"),
            u: self.get("u"),
            initial_state: with_state.then(|| self.get("s_init")),
        }
    }
    fn expected(&self, with_state: bool) -> (&[f32], &[f32]) {
        if with_state {
            (self.get("y_init"), self.get("s_final_init"))
        } else {
            (self.get("y_zero"), self.get("s_final_zero"))
        }
    }
    fn check(&self, what: &str, with_state: bool, y: &[f32], s: &[f32]) {
        let (ey, es) = self.expected(with_state);
        let (dy, ds) = (max_diff(y, ey), max_diff(s, es));
        assert!(dy <= TOL && ds <= TOL, "{what} (initial state: {with_state}): max |dy| {dy:e}, max |dS| {ds:e}");
    }
}

#[test]
fn fixture_shapes_are_as_documented() {
    let fx = Fixture::open(FIXTURES[0]);
    assert_eq!(fx.dims, Dims::new(2, 33, 2, 64));
    assert_eq!(fx.f["u"].shape, vec![2, 64]);
    assert_eq!(fx.f["s_init"].shape, vec![2, 2, 64, 64]);
    let fx = Fixture::open(FIXTURES[1]);
    assert_eq!(fx.dims, Dims::new(1, 5, 3, 64));
}

#[test]
fn reference_f32_and_f64_match_goldens() {
    for name in FIXTURES {
        let fx = Fixture::open(name);
        for with_state in [false, true] {
            let out = reference::forward(fx.dims, fx.inputs(with_state)).unwrap();
            fx.check(&format!("{name} reference f32"), with_state, &out.y, &out.state);
            let x = fx.inputs(with_state);
            let (r, k, v, w, u) = (to_f64(x.r), to_f64(x.k), to_f64(x.v), to_f64(x.w_raw), to_f64(x.u));
            let s = x.initial_state.map(to_f64);
            let x64 = Inputs { r: &r, k: &k, v: &v, w_raw: &w, u: &u, initial_state: s.as_deref() };
            let out = reference::forward(fx.dims, x64).unwrap();
            fx.check(&format!("{name} reference f64"), with_state, &to_f32(&out.y), &to_f32(&out.state));
        }
    }
}

#[test]
fn cpu_fast_path_matches_goldens() {
    for name in FIXTURES {
        let fx = Fixture::open(name);
        for with_state in [false, true] {
            let out = cpu::forward(fx.dims, fx.inputs(with_state)).unwrap();
            fx.check(&format!("{name} cpu"), with_state, &out.y, &out.state);
        }
    }
}

fn burn_inputs<B: burn::tensor::backend::Backend>(
    fx: &Fixture,
    with_state: bool,
) -> ([burn::tensor::Tensor<B, 4>; 4], burn::tensor::Tensor<B, 2>, Option<burn::tensor::Tensor<B, 4>>) {
    let dev = Default::default();
    let Dims { b, t, h, n } = fx.dims;
    let x = fx.inputs(with_state);
    let seq = |v: &[f32]| tensor::<B, 4>(v, [b, t, h, n], &dev);
    (
        [seq(x.r), seq(x.k), seq(x.v), seq(x.w_raw)],
        tensor::<B, 2>(x.u, [h, n], &dev),
        x.initial_state.map(|s| tensor::<B, 4>(s, [b, h, n, n], &dev)),
    )
}

#[test]
fn burn_op_matches_goldens_on_every_path() {
    for name in FIXTURES {
        let fx = Fixture::open(name);
        for with_state in [false, true] {
            // NdArray: the CPU kernel.
            let ([r, k, v, w], u, s) = burn_inputs::<NdArray>(&fx, with_state);
            let out = wkv6_with(r, k, v, w, u, s, Wkv6Options::default()).unwrap();
            fx.check(&format!("{name} NdArray op"), with_state, &values(out.y), &values(out.state));
            for chunk in [1, 4, 16, 32, 64, 1000] {
                // The chunked tensor-op formulation, directly and through Autodiff (its default path).
                let ([r, k, v, w], u, s) = burn_inputs::<NdArray>(&fx, with_state);
                let Dims { b, h, n, .. } = fx.dims;
                let s = s.unwrap_or_else(|| burn::tensor::Tensor::zeros([b, h, n, n], &Default::default()));
                let (y, s) = chunked::forward(r, k, v, w, u, s, chunk);
                fx.check(&format!("{name} chunked L={chunk}"), with_state, &values(y), &values(s));
                let ([r, k, v, w], u, s) = burn_inputs::<Autodiff<NdArray>>(&fx, with_state);
                let out = wkv6_with(r, k, v, w, u, s, Wkv6Options { chunk_len: chunk }).unwrap();
                fx.check(&format!("{name} Autodiff op L={chunk}"), with_state, &values(out.y), &values(out.state));
            }
        }
    }
}

#[test]
fn single_steps_match_goldens() {
    type B = NdArray;
    for name in FIXTURES {
        let fx = Fixture::open(name);
        let Dims { b, t, h, n } = fx.dims;
        for with_state in [false, true] {
            let ([r, k, v, w], u, s) = burn_inputs::<B>(&fx, with_state);
            let mut state = s.unwrap_or_else(|| burn::tensor::Tensor::zeros([b, h, n, n], &Default::default()));
            let mut ys = Vec::new();
            let step_of = |x: &burn::tensor::Tensor<B, 4>, i: usize| {
                x.clone().slice([0..b, i..i + 1, 0..h, 0..n]).reshape([b, h, n])
            };
            for i in 0..t {
                let out = wkv6_step(step_of(&r, i), step_of(&k, i), step_of(&v, i), step_of(&w, i), u.clone(), state)
                    .unwrap();
                ys.push(out.y.reshape([b, 1, h, n]));
                state = out.state;
            }
            let y = burn::tensor::Tensor::cat(ys, 1);
            fx.check(&format!("{name} NdArray steps"), with_state, &values(y), &values(state));
            // The generic tensor-op step (what non-CPU backends run).
            let ([r, k, v, w], u, s) = burn_inputs::<B>(&fx, with_state);
            let mut state = s.unwrap_or_else(|| burn::tensor::Tensor::zeros([b, h, n, n], &Default::default()));
            let mut ys = Vec::new();
            for i in 0..t {
                let (y, s) =
                    chunked::step(step_of(&r, i), step_of(&k, i), step_of(&v, i), step_of(&w, i), u.clone(), state);
                ys.push(y.reshape([b, 1, h, n]));
                state = s;
            }
            let y = burn::tensor::Tensor::cat(ys, 1);
            fx.check(&format!("{name} generic steps"), with_state, &values(y), &values(state));
        }
    }
}
