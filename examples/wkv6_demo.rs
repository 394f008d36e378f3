//! Runs the WKV6 op end to end on the CPU: the checked op against the plain reference, a prefill
//! then token-by-token decoding from the carried state, and gradients through autodiff.
//!
//! ```text
//! cargo run --release -p visualrwkv-examples --example wkv6_demo [-- T]
//! ```

use std::time::Instant;

use burn::backend::{Autodiff, NdArray};
use burn::tensor::{Distribution, Tensor};
use visualrwkv_wkv::reference::{self, Dims, Inputs};
use visualrwkv_wkv::{wkv6, wkv6_step};

type B = NdArray;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let t: usize = match std::env::args().nth(1) {
        Some(a) => a.parse().map_err(|e| format!("T must be a positive integer ({a:?}: {e})"))?,
        None => 1024,
    };
    let (b, h, n) = (1, 8, 64);
    let dev = Default::default();
    let rand = |lo, hi| Tensor::<B, 4>::random([b, t, h, n], Distribution::Uniform(lo, hi), &dev);
    let (r, k, v, w) = (rand(-1.0, 1.0), rand(-1.0, 1.0), rand(-1.0, 1.0), rand(-8.0, 1.0));
    let u = Tensor::<B, 2>::random([h, n], Distribution::Uniform(-1.0, 1.0), &dev);

    // Best of three runs (the first also pays for page faults and thread start-up).
    let mut op_time = std::time::Duration::MAX;
    let (mut y, mut final_state) = (Vec::new(), None);
    for _ in 0..3 {
        let start = Instant::now();
        let out = wkv6(r.clone(), k.clone(), v.clone(), w.clone(), u.clone(), None)?;
        y = out.y.into_data().into_vec::<f32>()?;
        op_time = op_time.min(start.elapsed());
        final_state = Some(out.state);
    }
    let final_state = final_state.expect("ran three times");

    let vals = |x: &Tensor<B, 4>| x.clone().into_data().into_vec::<f32>().expect("f32 tensor");
    let (rv, kv, vv, wv) = (vals(&r), vals(&k), vals(&v), vals(&w));
    let uv = u.clone().into_data().into_vec::<f32>()?;
    let mut ref_time = std::time::Duration::MAX;
    let mut want = Vec::new();
    for _ in 0..3 {
        let start = Instant::now();
        let inputs = Inputs { r: &rv, k: &kv, v: &vv, w_raw: &wv, u: &uv, initial_state: None };
        want = reference::forward(Dims::new(b, t, h, n), inputs)?.y;
        ref_time = ref_time.min(start.elapsed());
    }
    let diff = y.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    println!(
        "prefill B={b} T={t} H={h} N={n}: op {op_time:.2?}, reference {ref_time:.2?}, max |op - reference| = {diff:.2e}"
    );

    // Decode 8 more tokens one at a time from the prefill's final state.
    let mut state = final_state;
    for i in 0..8 {
        let x = |lo, hi| Tensor::<B, 3>::random([b, h, n], Distribution::Uniform(lo, hi), &dev);
        let step = wkv6_step(x(-1.0, 1.0), x(-1.0, 1.0), x(-1.0, 1.0), x(-8.0, 1.0), u.clone(), state)?;
        state = step.state;
        if i == 7 {
            println!("decoded 8 tokens; last y[0, 0, ..4] = {:?}", &step.y.into_data().into_vec::<f32>()?[..4]);
        }
    }

    // Gradients of a scalar loss with respect to every input, initial state included.
    type A = Autodiff<B>;
    let short = 64.min(t);
    let g = |x: &Tensor<B, 4>| {
        Tensor::<A, 4>::from_data(x.clone().slice([0..b, 0..short, 0..h, 0..n]).into_data(), &dev).require_grad()
    };
    let (ra, ka, va, wa) = (g(&r), g(&k), g(&v), g(&w));
    let ua = Tensor::<A, 2>::from_data(u.into_data(), &dev).require_grad();
    let s0 = Tensor::<A, 4>::zeros([b, h, n, n], &dev).require_grad();
    let out = wkv6(ra.clone(), ka, va, wa, ua.clone(), Some(s0.clone()))?;
    let grads = (out.y.powf_scalar(2.0).sum() + out.state.sum()).backward();
    let norm = |x: Option<Tensor<B, 4>>| x.map(|x| x.powf_scalar(2.0).sum().into_scalar().sqrt()).unwrap_or(0.0);
    println!(
        "gradients over T={short}: |d r| = {:.3}, |d initial_state| = {:.3}, |d u| = {:.3}",
        norm(ra.grad(&grads)),
        norm(s0.grad(&grads)),
        ua.grad(&grads).map(|x| x.powf_scalar(2.0).sum().into_scalar().sqrt()).unwrap_or(0.0)
    );
    Ok(())
}
