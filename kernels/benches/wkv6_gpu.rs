//! WKV6 and WKV7 kernel benchmark and accuracy report on a cubecl backend.
//!
//! ```text
//! cargo bench -p visualrwkv-kernels --bench wkv6_gpu -- [--op wkv6|wkv7] [--backend wgpu|cuda]
//!     [--b 8 --t 4096 --h 32 --n 64] [--dtypes f32,bf16] [--reps 5] [--copy-mib 1024] [--baseline] [--accuracy]
//! ```
//!
//! `--op wkv7` measures the WKV7 kernels the same way: the bytes of `r, w, k, v, a, b` read and
//! `y` written (forward), and of those six plus `dy` read and their six gradients written
//! (backward; the f32 `aᵀS` and its gradient that the backward keeps in global memory are not
//! counted). Its baseline is the step-by-step tensor-op recurrence and its written-out backward.
//!
//! For each dtype it times the forward kernel and the backward kernels on the bare `CubeBackend`
//! (median of `--reps` after a warm-up, synchronised with the device), and prints time, tokens/s
//! and achieved bandwidth: the bytes of `r, k, v, w, y` (forward) and of `r, k, v, w, dy` read plus
//! the four sequence gradients written (backward), per second — against a device-to-device copy
//! bandwidth (`x + 0` on a `--copy-mib` buffer, 1 GiB by default: one read and one write) measured in the same run.
//! `--baseline` also times the chunked tensor-op formulation (what cubecl backends ran before the
//! kernels) in the same run. `--accuracy` prints the largest error against the f64 reference per
//! tensor and dtype over a set of problems (the numbers behind the documented tolerances).
//!
//! On the wgpu backend without a GPU (lavapipe) this is a smoke test, not a performance figure.

use std::time::Instant;

use burn::tensor::backend::Backend;
use burn::tensor::{DType, Distribution, Tensor, TensorPrimitive};
use burn_cubecl::CubeBackend;
use visualrwkv_wkv::backend::{Wkv6Inputs, chunked_backward, chunked_forward};
use visualrwkv_wkv::reference::Dims;
use visualrwkv_wkv::testing::Case;

struct Args {
    op: String,
    backend: String,
    dims: [usize; 4],
    dtypes: Vec<DType>,
    reps: usize,
    copy_mib: usize,
    baseline: bool,
    accuracy: bool,
}

fn parse_dtype(s: &str) -> Result<DType, String> {
    match s {
        "f32" => Ok(DType::F32),
        "f16" => Ok(DType::F16),
        "bf16" => Ok(DType::BF16),
        other => Err(format!("unknown dtype `{other}` (f32, f16, bf16)")),
    }
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        op: "wkv6".into(),
        backend: "wgpu".into(),
        dims: [8, 4096, 32, 64],
        dtypes: vec![DType::F32],
        reps: 5,
        copy_mib: 1024,
        baseline: false,
        accuracy: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        let num = |s: String| s.parse::<usize>().map_err(|e| format!("{s}: {e}"));
        match flag.as_str() {
            "--op" => a.op = value("--op")?,
            "--backend" => a.backend = value("--backend")?,
            "--b" => a.dims[0] = num(value("--b")?)?,
            "--t" => a.dims[1] = num(value("--t")?)?,
            "--h" => a.dims[2] = num(value("--h")?)?,
            "--n" => a.dims[3] = num(value("--n")?)?,
            "--reps" => a.reps = num(value("--reps")?)?.max(1),
            "--dtypes" => a.dtypes = value("--dtypes")?.split(',').map(parse_dtype).collect::<Result<_, _>>()?,
            "--copy-mib" => a.copy_mib = num(value("--copy-mib")?)?.max(1),
            "--baseline" => a.baseline = true,
            "--accuracy" => a.accuracy = true,
            // cargo bench passes --bench to harness = false targets.
            "--bench" => {}
            other => return Err(format!("unknown flag `{other}`")),
        }
    }
    if a.op != "wkv6" && a.op != "wkv7" {
        return Err(format!("unknown op `{}` (wkv6, wkv7)", a.op));
    }
    Ok(a)
}

fn prim<B: Backend, const D: usize>(t: Tensor<B, D>) -> B::FloatTensorPrimitive {
    t.into_primitive().tensor()
}

fn wrap<B: Backend, const D: usize>(t: B::FloatTensorPrimitive) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(t))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Median seconds of `f` over `reps` runs after one warm-up, each synchronised with the device.
fn time<B: Backend, T>(dev: &B::Device, reps: usize, mut f: impl FnMut() -> T) -> Result<f64, String> {
    drop(f());
    B::sync(dev).map_err(|e| format!("{e:?}"))?;
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps {
        let start = Instant::now();
        let out = f();
        B::sync(dev).map_err(|e| format!("{e:?}"))?;
        times.push(start.elapsed().as_secs_f64());
        drop(out);
    }
    Ok(median(times))
}

fn run<R: burn_cubecl::CubeRuntime>(args: &Args) -> Result<(), String> {
    type Raw<R> = CubeBackend<R, f32, i32, u32>;
    let dev: <Raw<R> as burn::tensor::backend::BackendTypes>::Device = Default::default();
    let [b, t, h, n] = args.dims;
    println!(
        "{} on backend {} — [B, T, H, N] = [{b}, {t}, {h}, {n}], median of {} runs",
        args.op, args.backend, args.reps
    );

    // Device-to-device copy bandwidth: x + 0 (one read, one write).
    let elems = args.copy_mib << 18;
    let x = Tensor::<Raw<R>, 1>::zeros([elems], &dev);
    let secs = time::<Raw<R>, _>(&dev, args.reps, || x.clone().add_scalar(0.0))?;
    let copy_bw = (2 * elems * 4) as f64 / secs;
    println!("copy bandwidth (x + 0, {} MiB f32): {:.1} GB/s", args.copy_mib, copy_bw / 1e9);
    drop(x);

    println!("| dtype | pass | time (ms) | tokens/s | bandwidth (GB/s) | of copy |");
    println!("|---|---|---|---|---|---|");
    if args.op == "wkv7" {
        return wkv7::run::<R>(args, &dev, copy_bw);
    }
    for &dtype in &args.dtypes {
        let seq = |lo: f64, hi: f64| {
            prim(Tensor::<Raw<R>, 4>::random([b, t, h, n], Distribution::Uniform(lo, hi), &dev).cast(dtype))
        };
        let (r, k, v, w, dy) = (seq(-1.0, 1.0), seq(-1.0, 1.0), seq(-1.0, 1.0), seq(-8.0, 1.0), seq(-1.0, 1.0));
        let u = prim(Tensor::<Raw<R>, 2>::random([h, n], Distribution::Uniform(-1.0, 1.0), &dev).cast(dtype));
        let s0 = prim(Tensor::<Raw<R>, 4>::zeros([b, h, n, n], &dev));
        let ds = prim(Tensor::<Raw<R>, 4>::zeros([b, h, n, n], &dev));
        let row = |pass: &str, secs: f64, tensors: f64| print_row(args, dtype, pass, secs, tensors, copy_bw);
        visualrwkv_kernels::check(&r, &k, &v, &w, &u, &s0).map_err(|e| e.to_string())?;
        let fwd = time::<Raw<R>, _>(&dev, args.reps, || {
            visualrwkv_kernels::forward(&r, &k, &v, &w, &u, &s0).expect("checked above")
        })?;
        row("forward (kernel)", fwd, 5.0);
        let bwd = time::<Raw<R>, _>(&dev, args.reps, || {
            visualrwkv_kernels::backward(&r, &k, &v, &w, &u, &s0, &dy, &ds).expect("checked above")
        })?;
        row("backward (kernels)", bwd, 9.0);
        if args.baseline {
            let fwd_base = time::<Raw<R>, _>(&dev, args.reps, || {
                chunked_forward::<Raw<R>>(r.clone(), k.clone(), v.clone(), w.clone(), u.clone(), s0.clone(), 16)
            })?;
            row("forward (chunked ops, baseline)", fwd_base, 5.0);
            println!("|  | kernel / chunked forward speed-up | {:.1}x |  |  |  |", fwd_base / fwd);
            let inputs = Wkv6Inputs {
                r: r.clone(),
                k: k.clone(),
                v: v.clone(),
                w_raw: w.clone(),
                u: u.clone(),
                initial_state: s0.clone(),
            };
            let bwd_base = time::<Raw<R>, _>(&dev, args.reps.min(3), || {
                chunked_backward::<Raw<R>>(inputs.clone(), dy.clone(), ds.clone(), 16)
            })?;
            row("backward (chunked autodiff, baseline)", bwd_base, 9.0);
            println!("|  | kernel / chunked backward speed-up | {:.1}x |  |  |  |", bwd_base / bwd);
        }
    }

    if args.accuracy {
        accuracy::<R>(args, &dev)?;
    }
    Ok(())
}

/// One table row: time, tokens/s and the bandwidth of moving `tensors` sequence tensors of
/// `dtype` (`[B, T, H, N]` each), as a share of the copy bandwidth.
fn print_row(args: &Args, dtype: DType, pass: &str, secs: f64, tensors: f64, copy_bw: f64) {
    let [b, t, h, n] = args.dims;
    let bw = tensors * (b * t * h * n * dtype.size()) as f64 / secs;
    println!(
        "| {dtype:?} | {pass} | {:.3} | {:.3e} | {:.1} | {:.0}% |",
        secs * 1e3,
        (b * t) as f64 / secs,
        bw / 1e9,
        100.0 * bw / copy_bw
    );
}

/// `(max |got − want|, max |got − want| / (|want| + 1))`.
fn errors(got: &[f64], want: &[f64]) -> (f64, f64) {
    let abs = got.iter().zip(want).map(|(g, w)| (g - w).abs()).fold(0.0, f64::max);
    let scaled = got.iter().zip(want).map(|(g, w)| (g - w).abs() / (w.abs() + 1.0)).fold(0.0, f64::max);
    (abs, scaled)
}

/// Largest |error| / (|reference| + 1) per tensor over a set of problems, per dtype: the
/// measured basis of `visualrwkv_wkv::testing::tolerance_for`.
fn accuracy<R: burn_cubecl::CubeRuntime>(
    args: &Args,
    dev: &<CubeBackend<R, f32, i32, u32> as burn::tensor::backend::BackendTypes>::Device,
) -> Result<(), String> {
    type Raw<R> = CubeBackend<R, f32, i32, u32>;
    let f64s = |x: Tensor<Raw<R>, 4>| -> Vec<f64> {
        x.cast(DType::F32).into_data().convert::<f64>().into_vec().unwrap_or_default()
    };
    let f64s2 = |x: Tensor<Raw<R>, 2>| -> Vec<f64> {
        x.cast(DType::F32).into_data().convert::<f64>().into_vec().unwrap_or_default()
    };
    println!(
        "\naccuracy: max |got - want| and max |got - want| / (|want| + 1) against the f64 reference on the inputs the kernels received"
    );
    println!("| dtype | tensor | max abs error | max scaled error |");
    println!("|---|---|---|---|");
    for &dtype in &args.dtypes {
        let mut worst = vec![(0.0f64, 0.0f64); 8];
        for (seed, (dims, w)) in ACCURACY_PROBLEMS.iter().enumerate() {
            let case = Case::random(*dims, seed as u64 + 100, *w, true);
            // Sequences in the dtype, the state (and its cotangent) in f32, as RWKV runs it; the
            // reference sees exactly the values the kernels get.
            let d = case.on_device::<Raw<R>>(dev, dtype, DType::F32);
            let [r, k, v, wr, s0] = [d.x.r, d.x.k, d.x.v, d.x.w_raw, d.x.initial_state].map(prim);
            let u = prim(d.x.u);
            let (y, s) = visualrwkv_kernels::forward(&r, &k, &v, &wr, &u, &s0).map_err(|e| e.to_string())?;
            let (dy, ds) = (prim(d.dy), prim(d.d_state));
            let g = visualrwkv_kernels::backward(&r, &k, &v, &wr, &u, &s0, &dy, &ds).map_err(|e| e.to_string())?;
            let want = d.seen.reference();
            let wg = d.seen.reference_gradients();
            let got = [
                f64s(wrap(y)),
                f64s(wrap(s)),
                f64s(wrap(g.r)),
                f64s(wrap(g.k)),
                f64s(wrap(g.v)),
                f64s(wrap(g.w_raw)),
                f64s2(wrap(g.u)),
                f64s(wrap(g.initial_state)),
            ];
            let wants = [&want.y, &want.state, &wg.r, &wg.k, &wg.v, &wg.w_raw, &wg.u, &wg.initial_state];
            for (i, (got, want)) in got.iter().zip(wants).enumerate() {
                let (a, sc) = errors(got, want);
                worst[i] = (worst[i].0.max(a), worst[i].1.max(sc));
            }
        }
        for (name, (a, sc)) in ["y", "state", "dr", "dk", "dv", "dw_raw", "du", "d initial_state"].iter().zip(worst) {
            println!("| {dtype:?} | {name} | {a:.2e} | {sc:.2e} |");
        }
    }
    Ok(())
}

/// The problems of `--accuracy`: extreme decays, a long sequence, a smaller head.
const ACCURACY_PROBLEMS: [(Dims, (f64, f64)); 3] = [
    (Dims { b: 2, t: 33, h: 2, n: 64 }, (-20.0, 5.0)),
    (Dims { b: 1, t: 1100, h: 2, n: 64 }, (-20.0, 5.0)),
    (Dims { b: 2, t: 64, h: 4, n: 32 }, (-8.0, 1.0)),
];

/// The WKV7 rows of the benchmark and of the accuracy report.
mod wkv7 {
    use super::*;
    use visualrwkv_kernels::wkv7::{Inputs, backward, check, forward};
    use visualrwkv_wkv::testing::wkv7::{Case, named};
    use visualrwkv_wkv::wkv7::{Wkv7Inputs, tensor_ops_backward, tensor_ops_forward};

    type Raw<R> = CubeBackend<R, f32, i32, u32>;
    type Device<R> = <Raw<R> as burn::tensor::backend::BackendTypes>::Device;

    pub fn run<R: burn_cubecl::CubeRuntime>(args: &Args, dev: &Device<R>, copy_bw: f64) -> Result<(), String> {
        let [b, t, h, n] = args.dims;
        for &dtype in &args.dtypes {
            let seq = |lo: f64, hi: f64| Tensor::<Raw<R>, 4>::random([b, t, h, n], Distribution::Uniform(lo, hi), dev);
            // The model's removal vectors: a = −κ̂ (a unit vector per head), b = κ̂·α.
            let kappa = seq(-1.0, 1.0);
            let kappa = kappa.clone() / (kappa.clone() * kappa).sum_dim(3).sqrt();
            let alpha = seq(0.0, 1.0);
            let cast = |x: Tensor<Raw<R>, 4>| prim(x.cast(dtype));
            let (r, w, k, v, dy) = (
                cast(seq(-1.0, 1.0)),
                cast(seq(-8.0, 1.0)),
                cast(seq(-1.0, 1.0)),
                cast(seq(-1.0, 1.0)),
                cast(seq(-1.0, 1.0)),
            );
            let (a, bb) = (cast(kappa.clone().neg()), cast(kappa * alpha));
            let s0 = prim(Tensor::<Raw<R>, 4>::zeros([b, h, n, n], dev));
            let ds = prim(Tensor::<Raw<R>, 4>::zeros([b, h, n, n], dev));
            let x = Inputs { r: &r, w_raw: &w, k: &k, v: &v, a: &a, b: &bb, initial_state: &s0 };
            check(&x).map_err(|e| e.to_string())?;
            let row = |pass: &str, secs: f64, tensors: f64| print_row(args, dtype, pass, secs, tensors, copy_bw);
            let fwd = time::<Raw<R>, _>(dev, args.reps, || forward(x).expect("checked above"))?;
            row("wkv7 forward (kernel)", fwd, 7.0);
            let bwd = time::<Raw<R>, _>(dev, args.reps, || backward(x, &dy, &ds).expect("checked above"))?;
            row("wkv7 backward (kernels)", bwd, 13.0);
            if args.baseline {
                let inputs = Wkv7Inputs {
                    r: r.clone(),
                    w_raw: w.clone(),
                    k: k.clone(),
                    v: v.clone(),
                    a: a.clone(),
                    b: bb.clone(),
                    initial_state: s0.clone(),
                };
                let fwd_base =
                    time::<Raw<R>, _>(dev, args.reps.min(3), || tensor_ops_forward::<Raw<R>>(inputs.clone()))?;
                row("wkv7 forward (tensor ops, baseline)", fwd_base, 7.0);
                println!("|  | kernel / tensor-op forward speed-up | {:.1}x |  |  |  |", fwd_base / fwd);
                let bwd_base = time::<Raw<R>, _>(dev, args.reps.min(3), || {
                    tensor_ops_backward::<Raw<R>>(inputs.clone(), dy.clone(), ds.clone())
                })?;
                row("wkv7 backward (tensor ops, baseline)", bwd_base, 13.0);
                println!("|  | kernel / tensor-op backward speed-up | {:.1}x |  |  |  |", bwd_base / bwd);
            }
        }
        if args.accuracy {
            accuracy::<R>(args, dev)?;
        }
        Ok(())
    }

    /// Largest errors of the WKV7 kernels per tensor and dtype against the f64 reference on the
    /// rounded inputs (sequences in the dtype, the state in f32).
    fn accuracy<R: burn_cubecl::CubeRuntime>(args: &Args, dev: &Device<R>) -> Result<(), String> {
        let f64s = |x: Tensor<Raw<R>, 4>| -> Vec<f64> {
            x.cast(DType::F32).into_data().convert::<f64>().into_vec().unwrap_or_default()
        };
        println!("\nwkv7 accuracy: max |got - want| and max |got - want| / (|want| + 1) against the f64 reference");
        println!("| dtype | tensor | max abs error | max scaled error |");
        println!("|---|---|---|---|");
        for &dtype in &args.dtypes {
            let mut worst = vec![(0.0f64, 0.0f64); 9];
            for (seed, (dims, w)) in ACCURACY_PROBLEMS.iter().enumerate() {
                let case = Case::random(*dims, seed as u64 + 100, *w);
                let (xs, s) = case.tensors::<Raw<R>>(dev, dtype, DType::F32);
                let [r, w_raw, k, v, a, b] = xs.map(prim);
                let s0 = prim(s);
                let x = Inputs { r: &r, w_raw: &w_raw, k: &k, v: &v, a: &a, b: &b, initial_state: &s0 };
                let (y, s) = forward(x).map_err(|e| e.to_string())?;
                let (dy, ds) = case.cotangents::<Raw<R>>(dev, dtype, DType::F32);
                let g = backward(x, &prim(dy), &prim(ds)).map_err(|e| e.to_string())?;
                let seen = case.rounded(dtype, DType::F32);
                let (want, wg) = (seen.reference(), seen.reference_gradients());
                let got = [y, s, g.r, g.w_raw, g.k, g.v, g.a, g.b, g.initial_state].map(|t| f64s(wrap(t)));
                let mut wants = vec![&want.y, &want.state];
                wants.extend(named(&wg).map(|(_, v)| v));
                for (i, (got, want)) in got.iter().zip(wants).enumerate() {
                    let (e, sc) = errors(got, want);
                    worst[i] = (worst[i].0.max(e), worst[i].1.max(sc));
                }
            }
            let names = ["y", "state", "dr", "dw_raw", "dk", "dv", "da", "db", "d initial_state"];
            for (name, (e, sc)) in names.iter().zip(worst) {
                println!("| {dtype:?} | {name} | {e:.2e} | {sc:.2e} |");
            }
        }
        Ok(())
    }
}

fn main() {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    // The runtimes panic when no device can be opened (no GPU, no driver): report that as an
    // error instead of a panic trace.
    std::panic::set_hook(Box::new(|_| {}));
    let result = std::panic::catch_unwind(|| match args.backend.as_str() {
        "wgpu" => run::<burn::backend::wgpu::WgpuRuntime>(&args),
        #[cfg(feature = "cuda")]
        "cuda" => run::<burn_cubecl::cubecl::cuda::CudaRuntime>(&args),
        other => Err(format!("backend `{other}` is not compiled in (wgpu; cuda with --features cuda)")),
    })
    .unwrap_or_else(|panic| {
        let why = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "unknown failure".into());
        Err(format!("the {} runtime failed (is a device available?): {why}", args.backend))
    });
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
