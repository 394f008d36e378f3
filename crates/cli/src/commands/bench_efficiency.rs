//! `visualrwkv bench-efficiency`: RWKV-6 against a same-size transformer from 1K to 24K tokens.
//!
//! Each (model, context) point runs in its own process (`--point`), so its peak memory is that
//! point's alone. On CUDA the parent also samples the child's device memory from `nvidia-smi`.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use visualrwkv_checkpoint::write_atomic;
use visualrwkv_efficiency::{ModelKind, Point, RwkvEngine, Sizes, VisionSizes, measure};
use visualrwkv_rwkv::RwkvBackend;

use crate::Res;
use crate::args::VisionArg;
use crate::device::{DeviceArgs, DeviceSpec, Job, run_job, with_device_memory};

/// Flags of `bench-efficiency`.
#[derive(clap::Args)]
pub struct Args {
    /// Context lengths in tokens.
    #[arg(long, default_value = "1024,2048,4096,8192,16384,24576")]
    contexts: String,
    /// Width C of both models.
    #[arg(long, default_value_t = 512)]
    width: usize,
    /// Blocks of both models.
    #[arg(long, default_value_t = 8)]
    layers: usize,
    /// Vocabulary of both models.
    #[arg(long, default_value_t = 65536)]
    vocab: usize,
    /// An image in front of the context (its rows count towards it): none, clip-l-336 (577
    /// rows, VisualRWKV v6.0's tower), siglip-so400m-384 (729) or tiny (17), through a random
    /// tower and a linear projector, both part of the timed prefill.
    #[arg(long, value_enum, default_value_t = VisionArg::None)]
    vision: VisionArg,
    /// What runs RWKV: auto (the fused CPU decoder on the CPU, the burn model elsewhere), burn
    /// (the model's tensor ops) or fused (the fused decoder: prompt in sequence mode, then
    /// single steps; CPU only).
    #[arg(long, value_enum, default_value_t = EngineArg::Auto)]
    rwkv_engine: EngineArg,
    /// Timed decode steps per point (median reported).
    #[arg(long, default_value_t = 8)]
    decode_steps: usize,
    /// Output folder.
    #[arg(long, default_value = "efficiency")]
    out: PathBuf,
    /// Internal: measure one point (`rwkv:N` or `transformer:N`) in this process and print
    /// it as JSON.
    #[arg(long, hide = true)]
    point: Option<String>,
    #[command(flatten)]
    device: DeviceArgs,
}

/// `--rwkv-engine`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum EngineArg {
    /// Fused on the CPU, burn elsewhere.
    Auto,
    /// The burn model.
    Burn,
    /// The fused CPU decoder.
    Fused,
}

impl EngineArg {
    fn name(self) -> &'static str {
        match self {
            EngineArg::Auto => "auto",
            EngineArg::Burn => "burn",
            EngineArg::Fused => "fused",
        }
    }

    /// The engine on `device`; fused on another device than the CPU is an error.
    fn resolve(self, device: &DeviceSpec) -> Res<RwkvEngine> {
        match (self, device.is_cpu()) {
            (EngineArg::Auto | EngineArg::Fused, true) => Ok(RwkvEngine::Fused),
            (EngineArg::Auto | EngineArg::Burn, _) => Ok(RwkvEngine::Burn),
            (EngineArg::Fused, false) => {
                Err(format!("--rwkv-engine fused is the CPU decoder; on --device {device} use burn").into())
            }
        }
    }
}

/// Measures one point here (`--point`) or every point in child processes.
pub fn run(a: Args) -> Res<()> {
    let sizes = Sizes { width: a.width, layers: a.layers, vocab: a.vocab };
    sizes.validate()?;
    match &a.point {
        Some(p) => {
            let (model, n) = p.split_once(':').ok_or("--point takes model:context")?;
            let model = match model {
                "rwkv" => ModelKind::Rwkv,
                "transformer" => ModelKind::Transformer,
                other => return Err(format!("unknown model `{other}`").into()),
            };
            let job = PointJob {
                model,
                context: n.parse()?,
                sizes,
                vision: a.vision.sizes(),
                decode_steps: a.decode_steps.max(1),
                engine: a.rwkv_engine,
                device: a.device.clone(),
            };
            let point = run_job(job)?;
            println!("{}", serde_json::to_string(&point)?);
            Ok(())
        }
        None => all_points(&a, &parse_contexts(&a.contexts)?, sizes),
    }
}

struct PointJob {
    model: ModelKind,
    context: usize,
    sizes: Sizes,
    vision: Option<VisionSizes>,
    decode_steps: usize,
    engine: EngineArg,
    device: DeviceArgs,
}

impl Job for PointJob {
    type Output = Point;

    fn device_args(&self) -> &DeviceArgs {
        &self.device
    }

    fn run<B: RwkvBackend>(self, dev: B::Device, spec: &DeviceSpec) -> Res<Point> {
        let engine = self.engine.resolve(spec)?;
        let (model, context, vision) = (self.model, self.context, self.vision.as_ref());
        let mut p = measure::<B>(model, context, self.sizes, vision, self.decode_steps, engine, &dev)?;
        p.device = spec.to_string();
        Ok(p)
    }
}

fn parse_contexts(s: &str) -> Res<Vec<usize>> {
    let v: Result<Vec<usize>, _> = s.split(',').map(str::trim).filter(|x| !x.is_empty()).map(str::parse).collect();
    let v = v.map_err(|e| format!("--contexts: {e}"))?;
    if v.is_empty() || v.contains(&0) {
        return Err("--contexts needs positive lengths, e.g. 1024,2048".into());
    }
    Ok(v)
}

/// Runs one point in a child process and reads its JSON.
fn child_point(a: &Args, model: &str, context: usize, sizes: Sizes) -> Res<Point> {
    let exe = std::env::current_exe()?;
    let child = Command::new(&exe)
        .args(["bench-efficiency", "--point", &format!("{model}:{context}")])
        .args(["--width", &sizes.width.to_string(), "--layers", &sizes.layers.to_string()])
        .args(["--vocab", &sizes.vocab.to_string(), "--decode-steps", &a.decode_steps.to_string()])
        .args(["--device", &a.device.device.to_string(), "--dtype", &a.device.dtype.to_string()])
        .args(["--vision", a.vision.name(), "--rwkv-engine", a.rwkv_engine.name()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let on_cuda = matches!(a.device.device, DeviceSpec::Cuda(_));
    let (output, device_peak) = with_device_memory(child.id(), on_cuda, || child.wait_with_output());
    let o = output?;
    if !o.status.success() {
        return Err(format!("{model} at {context} tokens failed: {}", String::from_utf8_lossy(&o.stderr)).into());
    }
    let mut p: Point = serde_json::from_slice(&o.stdout)?;
    p.device_peak_mib = device_peak;
    Ok(p)
}

/// Runs every point in its own process, then writes the JSON, CSV, markdown table and plot.
fn all_points(a: &Args, contexts: &[usize], sizes: Sizes) -> Res<()> {
    let out = &a.out;
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let mut points = Vec::new();
    eprintln!(
        "RWKV-6 ({}) vs transformer on {}{}, width {}, {} layers, vocabulary {} ({} vs {} parameters)",
        a.rwkv_engine.resolve(&a.device.device)?.name(),
        a.device.device,
        a.vision.sizes().map_or(String::new(), |v| format!(" with a {} image ({} rows)", v.name, v.image_rows())),
        sizes.width,
        sizes.layers,
        sizes.vocab,
        sizes.rwkv().expected_keys().iter().map(|(_, s)| s.iter().product::<usize>()).sum::<usize>(),
        sizes.transformer(16).num_params()
    );
    for &context in contexts {
        for model in ["rwkv", "transformer"] {
            let p = child_point(a, model, context, sizes)?;
            eprintln!(
                "  {model:>11} {context:>6} tokens: prefill {:>8.2} s, decode {:>7.2} ms/token, peak memory {:>7.0} MiB, cache {:>7.1} MiB",
                p.prefill_s,
                p.decode_ms,
                p.peak_mib(),
                p.cache_mib
            );
            points.push(p);
        }
    }
    write_atomic(
        out.join("efficiency.json"),
        serde_json::to_string_pretty(
            &serde_json::json!({"sizes": sizes, "device": a.device.device.to_string(), "vision": a.vision.name(), "points": points}),
        )?
        .as_bytes(),
    )?;
    let mut csv = String::from(
        "model,context,prefill_s,decode_ms,peak_rss_mib,cache_mib,prefill_reps,decode_steps,device_peak_mib,device,engine\n",
    );
    for p in &points {
        csv.push_str(&format!(
            "{:?},{},{:.4},{:.4},{:.1},{:.2},{},{},{},{},{:?}\n",
            p.model,
            p.context,
            p.prefill_s,
            p.decode_ms,
            p.peak_rss_mib,
            p.cache_mib,
            p.prefill_reps,
            p.decode_steps,
            p.device_peak_mib.map_or(String::new(), |m| format!("{m:.1}")),
            p.device,
            p.engine
        ));
    }
    write_atomic(out.join("efficiency.csv"), csv.to_lowercase().as_bytes())?;
    let table = table(&points);
    write_atomic(out.join("efficiency.md"), table.as_bytes())?;
    crate::plots::efficiency(&points, &out.join("efficiency.svg"))?;
    println!("{table}");
    eprintln!("wrote {}/efficiency.{{json,csv,md,svg}}", out.display());
    Ok(())
}

fn table(points: &[Point]) -> String {
    let memory = if points.iter().any(|p| p.device_peak_mib.is_some()) { "peak device memory" } else { "peak RSS" };
    let mut t = format!(
        "| context | RWKV prefill (s) | TF prefill (s) | prefill ratio | RWKV decode (ms/tok) | TF decode (ms/tok) | decode ratio | RWKV {memory} (MiB) | TF {memory} (MiB) | memory saved | RWKV state (MiB) | TF KV cache (MiB) |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let mut contexts: Vec<usize> = points.iter().map(|p| p.context).collect();
    contexts.dedup();
    for c in contexts {
        let find = |m| points.iter().find(|p| p.context == c && p.model == m);
        if let (Some(r), Some(x)) = (find(ModelKind::Rwkv), find(ModelKind::Transformer)) {
            t.push_str(&format!(
                "| {c} | {:.2} | {:.2} | {:.2}x | {:.2} | {:.2} | {:.2}x | {:.0} | {:.0} | {:.0}% | {:.2} | {:.1} |\n",
                r.prefill_s,
                x.prefill_s,
                x.prefill_s / r.prefill_s,
                r.decode_ms,
                x.decode_ms,
                x.decode_ms / r.decode_ms,
                r.peak_mib(),
                x.peak_mib(),
                100.0 * (1.0 - r.peak_mib() / x.peak_mib()),
                r.cache_mib,
                x.cache_mib
            ));
        }
    }
    t
}
