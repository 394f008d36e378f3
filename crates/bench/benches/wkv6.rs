//! `cargo bench -p visualrwkv-bench --bench wkv6`: the WKV6 op on the CPU.
//!
//! Criterion measures each variant; a summary table then reports tokens/s and useful GFLOP/s
//! (WKV6 ≈ 7·N² FLOP per head-token) next to this machine's f32 matmul GFLOP/s (burn-ndarray,
//! 1024² × 1024²) measured in the same run, which is the ceiling the chunked form is held to.
//!
//! Variants, prefill B=1, T=4096, H=32, N=64:
//! - `reference`: the plain single-threaded recurrence ([`visualrwkv_wkv::reference`]);
//! - `ndarray op`: `wkv6` on `NdArray` (the multi-threaded CPU kernel);
//! - `chunked L`: the backend-generic chunked tensor-op formulation on `NdArray`.
//!
//! Single-token steps (B=1, H=32, N=64): the reference step, `wkv6_step` on `NdArray`, and the
//! generic tensor-op step.
//!
//! `WKV_BENCH_T` overrides T (e.g. a quick run with `WKV_BENCH_T=512`).

use std::hint::black_box;
use std::time::{Duration, Instant};

use burn::backend::NdArray;
use burn::tensor::{Distribution, Tensor};
use criterion::{Criterion, Throughput};
use visualrwkv_wkv::reference::{self, Dims, Inputs};
use visualrwkv_wkv::{chunked, wkv6, wkv6_step};

type B = NdArray;

struct Prefill {
    dims: Dims,
    host: [Vec<f32>; 5],
    dev: [Tensor<B, 4>; 4],
    u: Tensor<B, 2>,
    s0: Tensor<B, 4>,
}

fn prefill(t: usize) -> Prefill {
    let dims = Dims::new(1, t, 32, 64);
    let dev = Default::default();
    let rand = |lo, hi| Tensor::<B, 4>::random([1, t, 32, 64], Distribution::Uniform(lo, hi), &dev);
    let x = [rand(-1.0, 1.0), rand(-1.0, 1.0), rand(-1.0, 1.0), rand(-8.0, 1.0)];
    let u = Tensor::<B, 2>::random([32, 64], Distribution::Uniform(-1.0, 1.0), &dev);
    let v = |t: &Tensor<B, 4>| t.clone().into_data().into_vec::<f32>().unwrap();
    let host = [v(&x[0]), v(&x[1]), v(&x[2]), v(&x[3]), u.clone().into_data().into_vec::<f32>().unwrap()];
    Prefill { dims, host, dev: x, u, s0: Tensor::zeros([1, 32, 64, 64], &dev) }
}

impl Prefill {
    fn reference(&self) -> Vec<f32> {
        let [r, k, v, w, u] = &self.host;
        reference::forward(self.dims, Inputs { r, k, v, w_raw: w, u, initial_state: None }).unwrap().y
    }
    fn op(&self) -> Vec<f32> {
        let [r, k, v, w] = self.dev.clone();
        wkv6(r, k, v, w, self.u.clone(), None).unwrap().y.into_data().into_vec::<f32>().unwrap()
    }
    fn chunked(&self, l: usize) -> Vec<f32> {
        let [r, k, v, w] = self.dev.clone();
        chunked::forward(r, k, v, w, self.u.clone(), self.s0.clone(), l).0.into_data().into_vec::<f32>().unwrap()
    }
}

struct Step {
    host: [Vec<f32>; 5],
    state: Vec<f32>,
    dev: [Tensor<B, 3>; 4],
    u: Tensor<B, 2>,
    s: Tensor<B, 4>,
}

fn step_inputs() -> Step {
    let dev = Default::default();
    let rand = |lo, hi| Tensor::<B, 3>::random([1, 32, 64], Distribution::Uniform(lo, hi), &dev);
    let x = [rand(-1.0, 1.0), rand(-1.0, 1.0), rand(-1.0, 1.0), rand(-8.0, 1.0)];
    let u = Tensor::<B, 2>::random([32, 64], Distribution::Uniform(-1.0, 1.0), &dev);
    let s = Tensor::<B, 4>::random([1, 32, 64, 64], Distribution::Uniform(-1.0, 1.0), &dev);
    let v = |t: &Tensor<B, 3>| t.clone().into_data().into_vec::<f32>().unwrap();
    let host = [v(&x[0]), v(&x[1]), v(&x[2]), v(&x[3]), u.clone().into_data().into_vec::<f32>().unwrap()];
    Step { host, state: s.clone().into_data().into_vec::<f32>().unwrap(), dev: x, u, s }
}

impl Step {
    fn reference(&self) -> f32 {
        let [r, k, v, w, u] = &self.host;
        let dims = Dims::new(1, 1, 32, 64);
        let out = reference::forward(dims, Inputs { r, k, v, w_raw: w, u, initial_state: Some(&self.state) }).unwrap();
        out.y[0] + out.state[0]
    }
    fn op(&self) -> f32 {
        let [r, k, v, w] = self.dev.clone();
        let out = wkv6_step(r, k, v, w, self.u.clone(), self.s.clone()).unwrap();
        out.y.into_data().into_vec::<f32>().unwrap()[0] + out.state.into_data().into_vec::<f32>().unwrap()[0]
    }
    fn generic(&self) -> f32 {
        let [r, k, v, w] = self.dev.clone();
        let (y, s) = chunked::step(r, k, v, w, self.u.clone(), self.s.clone());
        y.into_data().into_vec::<f32>().unwrap()[0] + s.into_data().into_vec::<f32>().unwrap()[0]
    }
}

fn matmul_inputs(n: usize) -> (Tensor<B, 2>, Tensor<B, 2>) {
    let dev = Default::default();
    let a = Tensor::<B, 2>::random([n, n], Distribution::Uniform(-1.0, 1.0), &dev);
    (a.clone(), a.transpose())
}

fn matmul(a: &(Tensor<B, 2>, Tensor<B, 2>)) -> f32 {
    a.0.clone().matmul(a.1.clone()).into_data().into_vec::<f32>().unwrap()[0]
}

/// Median wall time of `f` over `reps` runs after one warm-up.
fn median<T>(reps: usize, mut f: impl FnMut() -> T) -> Duration {
    black_box(f());
    let mut times: Vec<Duration> = (0..reps)
        .map(|_| {
            let s = Instant::now();
            black_box(f());
            s.elapsed()
        })
        .collect();
    times.sort();
    times[reps / 2]
}

fn main() {
    let t: usize = std::env::var("WKV_BENCH_T").ok().and_then(|s| s.parse().ok()).unwrap_or(4096);
    let mut c = Criterion::default().configure_from_args().sample_size(10).warm_up_time(Duration::from_secs(1));
    let mm = matmul_inputs(1024);
    let p = prefill(t);
    let s = step_inputs();
    let mut g = c.benchmark_group("wkv6");
    g.measurement_time(Duration::from_secs(4));
    g.throughput(Throughput::Elements(2 * 1024 * 1024 * 1024));
    g.bench_function("matmul 1024^2 f32 (FLOP)", |b| b.iter(|| matmul(&mm)));
    g.throughput(Throughput::Elements(t as u64));
    g.bench_function(format!("prefill T={t} reference (tokens)"), |b| b.iter(|| p.reference()));
    g.bench_function(format!("prefill T={t} ndarray op (tokens)"), |b| b.iter(|| p.op()));
    for l in [8, 16, 32] {
        g.bench_function(format!("prefill T={t} chunked L={l} (tokens)"), |b| b.iter(|| p.chunked(l)));
    }
    g.throughput(Throughput::Elements(1));
    g.bench_function("step reference (tokens)", |b| b.iter(|| s.reference()));
    g.bench_function("step ndarray op (tokens)", |b| b.iter(|| s.op()));
    g.bench_function("step generic tensor ops (tokens)", |b| b.iter(|| s.generic()));
    g.finish();

    // Summary: medians of a few runs, as throughput next to the matmul ceiling.
    let ceiling = 2.0 * 1024f64.powi(3) / median(9, || matmul(&mm)).as_secs_f64() / 1e9;
    let flop_per_token = 7.0 * 64.0 * 64.0 * 32.0;
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    println!("\nWKV6 on this CPU ({cores} threads), B=1 H=32 N=64; useful FLOP = 7·N² per head-token");
    println!("f32 matmul ceiling (burn-ndarray 1024²): {ceiling:.1} GFLOP/s\n");
    println!("| variant | time | tokens/s | useful GFLOP/s | % of matmul |");
    println!("|---|---|---|---|---|");
    let row = |name: String, d: Duration, tokens: f64| {
        let gflops = tokens * flop_per_token / d.as_secs_f64() / 1e9;
        println!(
            "| {name} | {:.3} ms | {:.0} | {gflops:.1} | {:.0}% |",
            d.as_secs_f64() * 1e3,
            tokens / d.as_secs_f64(),
            100.0 * gflops / ceiling
        );
    };
    row(format!("prefill T={t} reference"), median(3, || p.reference()), t as f64);
    row(format!("prefill T={t} ndarray op"), median(5, || p.op()), t as f64);
    for l in [8, 16, 32] {
        row(format!("prefill T={t} chunked L={l}"), median(3, || p.chunked(l)), t as f64);
    }
    row("step reference".into(), median(201, || s.reference()), 1.0);
    row("step ndarray op".into(), median(201, || s.op()), 1.0);
    row("step generic tensor ops".into(), median(201, || s.generic()), 1.0);
}
