//! `--device cpu|wgpu|cuda` and `--dtype`: which burn backend a command runs on.
//!
//! A command is written once as a [`Job`] (inference) or [`TrainJob`] (training), generic over
//! the backend; [`run_job`] / [`run_train`] pick the backend type for the device and dtype and
//! call it. Devices not compiled into this build, or not present on this machine, are errors that
//! say which feature or driver is missing.
//!
//! | `--device` | `--dtype f32` | `f16` | `bf16` | training |
//! |---|---|---|---|---|
//! | `cpu` | `NdArray` | — | — | `Autodiff<NdArray>` (f32) |
//! | `wgpu[:N]` | `Wgpu` | `Wgpu<f16>` | — | `Autodiff<Wgpu>` (f32) |
//! | `cuda[:N]` | `Cuda` | `Cuda<f16>` | `Cuda<bf16>` | `Autodiff<Cuda>` (f32) |

use std::fmt;
use std::panic::AssertUnwindSafe;
use std::str::FromStr;

use burn::backend::NdArray;
use burn::backend::ndarray::NdArrayDevice;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Tensor};
use clap::ValueEnum;
use visualrwkv_rwkv::RwkvBackend;

use crate::Res;

/// A device named on the command line: `cpu`, `wgpu` (the default adapter), `wgpu:N` (the N-th
/// discrete GPU), `cuda` (= `cuda:0`) or `cuda:N`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceSpec {
    /// The CPU (burn-ndarray).
    Cpu,
    /// A wgpu adapter: the default one, or the N-th discrete GPU.
    Wgpu(Option<usize>),
    /// The N-th CUDA device.
    Cuda(usize),
}

impl DeviceSpec {
    /// Whether this is the CPU.
    pub fn is_cpu(&self) -> bool {
        *self == DeviceSpec::Cpu
    }

    fn kind(&self) -> &'static str {
        match self {
            DeviceSpec::Cpu => "cpu",
            DeviceSpec::Wgpu(_) => "wgpu",
            DeviceSpec::Cuda(_) => "cuda",
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Cpu => write!(f, "cpu"),
            DeviceSpec::Wgpu(None) => write!(f, "wgpu"),
            DeviceSpec::Wgpu(Some(i)) => write!(f, "wgpu:{i}"),
            DeviceSpec::Cuda(i) => write!(f, "cuda:{i}"),
        }
    }
}

/// Why a `--device` value could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceParseError {
    /// The part after `:` is not a number.
    BadIndex(String),
    /// `cpu:N`: the CPU has no index.
    CpuIndex(String),
    /// Not `cpu`, `wgpu`, `wgpu:N`, `cuda` or `cuda:N`.
    Unknown(String),
}

impl fmt::Display for DeviceParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceParseError::BadIndex(s) => write!(f, "bad device index in `{s}` (e.g. cuda:0)"),
            DeviceParseError::CpuIndex(s) => write!(f, "the cpu device takes no index (`{s}`)"),
            DeviceParseError::Unknown(s) => write!(f, "unknown device `{s}` (cpu, wgpu, wgpu:N, cuda, cuda:N)"),
        }
    }
}

impl std::error::Error for DeviceParseError {}

impl FromStr for DeviceSpec {
    type Err = DeviceParseError;

    fn from_str(s: &str) -> Result<Self, DeviceParseError> {
        let (kind, index) = match s.split_once(':') {
            Some((k, i)) => {
                let i = i.parse::<usize>().map_err(|_| DeviceParseError::BadIndex(s.to_string()))?;
                (k, Some(i))
            }
            None => (s, None),
        };
        match (kind, index) {
            ("cpu", None) => Ok(DeviceSpec::Cpu),
            ("cpu", Some(_)) => Err(DeviceParseError::CpuIndex(s.to_string())),
            ("wgpu", i) => Ok(DeviceSpec::Wgpu(i)),
            ("cuda", i) => Ok(DeviceSpec::Cuda(i.unwrap_or(0))),
            _ => Err(DeviceParseError::Unknown(s.to_string())),
        }
    }
}

/// Parses a comma-separated device list (`--devices cuda:0,cuda:1`): one kind, no GPU named
/// twice (several `cpu` replicas may share the machine, which tests data-parallel training).
pub fn parse_devices(s: &str) -> Res<Vec<DeviceSpec>> {
    let devices = s
        .split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(DeviceSpec::from_str)
        .collect::<Result<Vec<_>, _>>()?;
    let first = devices.first().ok_or("--devices needs at least one device")?;
    if let Some(other) = devices.iter().find(|d| d.kind() != first.kind()) {
        return Err(format!("--devices mixes {first} and {other}: data-parallel training runs on one backend").into());
    }
    for (i, d) in devices.iter().enumerate() {
        if !d.is_cpu() && devices[..i].contains(d) {
            return Err(format!("--devices names {d} twice: each GPU holds one replica").into());
        }
    }
    Ok(devices)
}

/// Floating-point type of the tensors on a GPU backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Dtype {
    /// 32-bit floats (every device).
    F32,
    /// IEEE half precision (wgpu, cuda).
    F16,
    /// bfloat16 (cuda).
    Bf16,
}

impl fmt::Display for Dtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Dtype::F32 => "f32",
            Dtype::F16 => "f16",
            Dtype::Bf16 => "bf16",
        })
    }
}

/// `--device` and `--dtype`, shared by every command that runs a model.
#[derive(clap::Args, Clone, Debug)]
pub struct DeviceArgs {
    /// Where to run: cpu, wgpu (default adapter; wgpu:N = N-th discrete GPU), cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: DeviceSpec,
    /// Tensor type on the device: f32 (all), f16 (wgpu, cuda) or bf16 (cuda). The CPU computes
    /// in f32 (its fused decoder's weights take `--decoder bf16|f16`).
    #[arg(long, value_enum, default_value_t = Dtype::F32)]
    pub dtype: Dtype,
}

/// `--device` / `--devices` of the training commands.
#[derive(clap::Args, Clone, Debug)]
pub struct TrainDevices {
    /// Where to train: cpu, wgpu[:N] or cuda[:N].
    #[arg(long, default_value = "cpu", conflicts_with = "devices")]
    pub device: DeviceSpec,
    /// Train data-parallel on several devices of one kind, e.g. cuda:0,cuda:1 (each computes
    /// its part of every batch; gradients are summed with burn-collective's all-reduce).
    #[arg(long)]
    pub devices: Option<String>,
}

impl TrainDevices {
    /// The devices to train on.
    pub fn list(&self) -> Res<Vec<DeviceSpec>> {
        match &self.devices {
            Some(list) => parse_devices(list),
            None => Ok(vec![self.device.clone()]),
        }
    }
}

/// A command body that runs on any inference backend.
pub trait Job {
    /// What the command returns.
    type Output;
    /// The command's `--device` and `--dtype`.
    fn device_args(&self) -> &DeviceArgs;
    /// Runs on backend `B` at `device`; `spec` is what the user named.
    fn run<B: RwkvBackend>(self, device: B::Device, spec: &DeviceSpec) -> Res<Self::Output>;
}

/// A command body that trains on any autodiff backend, on one or several devices.
pub trait TrainJob {
    /// What the command returns.
    type Output;
    /// The devices of `--device` / `--devices`.
    fn devices(&self) -> Res<Vec<DeviceSpec>>;
    /// Runs on the autodiff backend `B` with one replica per device.
    fn run<B>(self, devices: Vec<B::Device>) -> Res<Self::Output>
    where
        B: AutodiffBackend + RwkvBackend,
        B::InnerBackend: RwkvBackend;
}

fn not_built(spec: &DeviceSpec, feature: &str) -> Box<dyn std::error::Error> {
    format!(
        "--device {spec}: this visualrwkv was built without the `{feature}` feature; rebuild with `cargo build --release --features {feature}`"
    )
    .into()
}

fn unsupported(spec: &DeviceSpec, dtype: Dtype, what: &str) -> Box<dyn std::error::Error> {
    format!("--dtype {dtype} is not supported on {spec} ({what})").into()
}

/// Runs `job` on the backend of its `--device` and `--dtype`.
pub fn run_job<J: Job>(job: J) -> Res<J::Output> {
    let args = job.device_args().clone();
    let spec = &args.device;
    match (spec, args.dtype) {
        (DeviceSpec::Cpu, Dtype::F32) => job.run::<NdArray>(NdArrayDevice::Cpu, spec),
        (DeviceSpec::Cpu, d) => {
            Err(unsupported(spec, d, "the CPU backend computes in f32; the fused decoder takes --decoder bf16|f16"))
        }
        #[cfg(feature = "wgpu")]
        (DeviceSpec::Wgpu(i), Dtype::F32) => {
            let device = gpu::wgpu_device(*i);
            probe::<burn::backend::Wgpu>(&device, spec)?;
            job.run::<burn::backend::Wgpu>(device, spec)
        }
        #[cfg(feature = "wgpu")]
        (DeviceSpec::Wgpu(i), Dtype::F16) => {
            let device = gpu::wgpu_device(*i);
            probe::<burn::backend::Wgpu<half::f16>>(&device, spec)?;
            job.run::<burn::backend::Wgpu<half::f16>>(device, spec)
        }
        #[cfg(feature = "wgpu")]
        (DeviceSpec::Wgpu(_), d @ Dtype::Bf16) => Err(unsupported(spec, d, "wgpu shaders have no bf16")),
        #[cfg(not(feature = "wgpu"))]
        (DeviceSpec::Wgpu(_), _) => Err(not_built(spec, "wgpu")),
        #[cfg(feature = "cuda")]
        (DeviceSpec::Cuda(i), Dtype::F32) => {
            let device = gpu::cuda_device(*i);
            probe::<burn::backend::Cuda>(&device, spec)?;
            job.run::<burn::backend::Cuda>(device, spec)
        }
        #[cfg(feature = "cuda")]
        (DeviceSpec::Cuda(i), Dtype::F16) => {
            let device = gpu::cuda_device(*i);
            probe::<burn::backend::Cuda<half::f16>>(&device, spec)?;
            job.run::<burn::backend::Cuda<half::f16>>(device, spec)
        }
        #[cfg(feature = "cuda")]
        (DeviceSpec::Cuda(i), Dtype::Bf16) => {
            let device = gpu::cuda_device(*i);
            probe::<burn::backend::Cuda<half::bf16>>(&device, spec)?;
            job.run::<burn::backend::Cuda<half::bf16>>(device, spec)
        }
        #[cfg(not(feature = "cuda"))]
        (DeviceSpec::Cuda(_), _) => Err(not_built(spec, "cuda")),
    }
}

/// Runs `job` on the autodiff backend of its devices (one kind, as [`parse_devices`] checks), in
/// f32.
pub fn run_train<J: TrainJob>(job: J) -> Res<J::Output> {
    let devices = job.devices()?;
    let devices = &devices[..];
    let first = devices.first().ok_or("no device to train on")?;
    match first {
        DeviceSpec::Cpu => job.run::<burn::backend::Autodiff<NdArray>>(vec![NdArrayDevice::Cpu; devices.len()]),
        #[cfg(feature = "wgpu")]
        DeviceSpec::Wgpu(_) if devices.len() > 1 => Err(format!(
            "--devices {}: data-parallel training on wgpu is not possible with burn 0.21 (cubecl-wgpu 0.10 has no device-to-device copies for the all-reduce); use cuda or cpu devices",
            devices.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(",")
        )
        .into()),
        #[cfg(feature = "wgpu")]
        DeviceSpec::Wgpu(_) => {
            let list = devices.iter().map(|d| gpu::wgpu_device(if let DeviceSpec::Wgpu(i) = d { *i } else { None }));
            let list: Vec<_> = list.collect();
            for (d, spec) in list.iter().zip(devices) {
                probe::<burn::backend::Wgpu>(d, spec)?;
            }
            job.run::<burn::backend::Autodiff<burn::backend::Wgpu>>(list)
        }
        #[cfg(not(feature = "wgpu"))]
        DeviceSpec::Wgpu(_) => Err(not_built(first, "wgpu")),
        #[cfg(feature = "cuda")]
        DeviceSpec::Cuda(_) => {
            let list = devices.iter().map(|d| gpu::cuda_device(if let DeviceSpec::Cuda(i) = d { *i } else { 0 }));
            let list: Vec<_> = list.collect();
            for (d, spec) in list.iter().zip(devices) {
                probe::<burn::backend::Cuda>(d, spec)?;
            }
            job.run::<burn::backend::Autodiff<burn::backend::Cuda>>(list)
        }
        #[cfg(not(feature = "cuda"))]
        DeviceSpec::Cuda(_) => Err(not_built(first, "cuda")),
    }
}

/// Checks that `device` can run a kernel (adds two numbers on it and reads them back). A
/// backend that cannot start (no adapter or driver, a dtype the device lacks) panics inside
/// cubecl; the panic is caught here and becomes an error naming the device.
pub fn probe<B: Backend>(device: &B::Device, spec: &DeviceSpec) -> Res<()> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
        Tensor::<B, 1>::from_floats([1.0, 2.0], device).sum().into_scalar().elem::<f32>()
    }));
    std::panic::set_hook(hook);
    let hint = match spec {
        DeviceSpec::Wgpu(_) => {
            "wgpu needs a Vulkan, Metal or DX12 driver (without a GPU, Mesa's software Vulkan: apt-get install mesa-vulkan-drivers libvulkan1)"
        }
        DeviceSpec::Cuda(_) => "CUDA needs an NVIDIA GPU with its driver, and libnvrtc on LD_LIBRARY_PATH",
        DeviceSpec::Cpu => "",
    };
    match result {
        Ok(3.0) => Ok(()),
        Ok(v) => Err(format!("--device {spec}: a test addition gave {v} instead of 3").into()),
        Err(payload) => {
            let msg = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "the backend failed to start".into());
            let msg = msg.lines().next().unwrap_or_default().to_string();
            Err(format!("--device {spec} is not usable on this machine: {msg}. {hint}").into())
        }
    }
}

/// Runs `f` while a thread polls `nvidia-smi` every 100 ms for process `pid`'s device memory
/// (only when `on`, i.e. on CUDA); returns `f`'s result and the peak `used_memory` in MiB (`None`
/// without `nvidia-smi` or when the process never appeared).
pub fn with_device_memory<T>(pid: u32, on: bool, f: impl FnOnce() -> T) -> (T, Option<f64>) {
    use std::sync::atomic::{AtomicBool, Ordering};
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        let sampler = on.then(|| {
            s.spawn(|| {
                let mut peak: Option<f64> = None;
                while !done.load(Ordering::Relaxed) {
                    let Ok(out) = std::process::Command::new("nvidia-smi")
                        .args(["--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"])
                        .output()
                    else {
                        return None;
                    };
                    for line in String::from_utf8_lossy(&out.stdout).lines() {
                        let mut f = line.split(',').map(str::trim);
                        if let (Some(p), Some(m)) = (f.next(), f.next())
                            && p.parse::<u32>().ok() == Some(pid)
                            && let Ok(m) = m.parse::<f64>()
                        {
                            peak = Some(peak.map_or(m, |x| x.max(m)));
                        }
                    }
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                peak
            })
        });
        let result = f();
        done.store(true, Ordering::Relaxed);
        (result, sampler.and_then(|h| h.join().ok().flatten()))
    })
}

#[cfg(any(feature = "wgpu", feature = "cuda"))]
mod gpu {
    #[cfg(feature = "wgpu")]
    pub fn wgpu_device(index: Option<usize>) -> burn::backend::wgpu::WgpuDevice {
        use burn::backend::wgpu::WgpuDevice;
        match index {
            None => WgpuDevice::DefaultDevice,
            Some(i) => WgpuDevice::DiscreteGpu(i),
        }
    }

    #[cfg(feature = "cuda")]
    pub fn cuda_device(index: usize) -> burn::backend::cuda::CudaDevice {
        burn::backend::cuda::CudaDevice { index }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names_parse() {
        assert_eq!("cpu".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cpu);
        assert_eq!("wgpu".parse::<DeviceSpec>().unwrap(), DeviceSpec::Wgpu(None));
        assert_eq!("wgpu:1".parse::<DeviceSpec>().unwrap(), DeviceSpec::Wgpu(Some(1)));
        assert_eq!("cuda".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(0));
        assert_eq!("cuda:3".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(3));
        assert_eq!("gpu".parse::<DeviceSpec>(), Err(DeviceParseError::Unknown("gpu".into())));
        assert_eq!("".parse::<DeviceSpec>(), Err(DeviceParseError::Unknown("".into())));
        assert_eq!("cuda:x".parse::<DeviceSpec>(), Err(DeviceParseError::BadIndex("cuda:x".into())));
        assert_eq!("cpu:0".parse::<DeviceSpec>(), Err(DeviceParseError::CpuIndex("cpu:0".into())));
        assert!("cuda:x".parse::<DeviceSpec>().unwrap_err().to_string().contains("e.g. cuda:0"));
        assert_eq!(parse_devices("cuda:0, cuda:1").unwrap(), vec![DeviceSpec::Cuda(0), DeviceSpec::Cuda(1)]);
        assert!(parse_devices("cpu,cuda:0").is_err());
        assert!(parse_devices("cuda:1,cuda:1").is_err());
        assert_eq!(parse_devices("cpu,cpu").unwrap().len(), 2);
        assert!(parse_devices(",").is_err());
    }
}
