//! The same model on different devices, and on several at once.
//!
//! - `gpu` (feature `wgpu`): the same VisualRWKV (weights copied with `training::transfer`) on
//!   burn's `Wgpu` (cubecl kernels; in CI on Mesa's software Vulkan driver) and on `NdArray` gives
//!   the same logits for every scan with the sandwich prompt (RWKV-6 and RWKV-7 blocks), the same
//!   cached generation, and the same stage-2 training step (loss, gradient norm, updated
//!   parameters) on `Autodiff<Wgpu>` as on `Autodiff<NdArray>`, for both architectures.
//! - `parallel` (feature `collective`): data-parallel training (`visualrwkv::parallel`,
//!   burn-collective all-reduce) on two replicas, each computing half of every batch, ends with
//!   the same parameters and losses as one device on whole batches (two CPU replicas); two wgpu
//!   devices are an error in burn 0.21 (no cross-device copies in cubecl-wgpu).
//!
//! `cargo test -p visualrwkv --features wgpu,collective` (the workspace's `cargo test` enables
//! both through the CLI crate). Tolerances are the measured differences with a margin
//! (`docs/gpu.md`). One test per backend type uses burn-collective: it keeps one server per
//! backend type per process.

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

/// The values of a tensor on the host, as f32.
#[allow(dead_code)]
fn host<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().into_vec::<f32>().unwrap()
}

/// Largest absolute difference of two equally long slices.
#[allow(dead_code)]
fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

struct Flat(Vec<f32>);

impl<B: Backend> ModuleVisitor<B> for Flat {
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<B, D>>) {
        self.0.extend(host(p.val()));
    }
}

/// The synthetic task's data config and splits shared by the training tests (10 images).
#[allow(dead_code)]
fn task() -> (visualrwkv_train::data::DataConfig, visualrwkv_train::data::Splits) {
    let data = visualrwkv_train::data::DataConfig {
        train_images: 10,
        val_images: 1,
        test_images: 1,
        questions_per_image: 2,
        ..Default::default()
    };
    let splits = visualrwkv_train::data::generate(&data).unwrap();
    (data, splits)
}

/// Every float parameter of a module, flattened in visiting order.
#[allow(dead_code)]
fn flat<B: Backend, M: Module<B>>(m: &M) -> Vec<f32> {
    let mut v = Flat(Vec::new());
    m.visit(&mut v);
    v.0
}

#[cfg(feature = "wgpu")]
mod gpu {
    use super::{flat, host, max_diff};
    use burn::backend::wgpu::WgpuDevice;
    use burn::backend::{Autodiff, NdArray, Wgpu};
    use burn::tensor::{Tensor, TensorData};
    use visualrwkv::training::{ModelConfig, Stage, TaskData, TrainConfig, Trainer, for_eval, transfer};
    use visualrwkv::{Engine, GenerateOptions, Sample, VisionOptions, VisualRwkv};
    use visualrwkv_projector::{ProjectorConfig, ProjectorKind};
    use visualrwkv_prompt::{Conversation, Sandwich, build};
    use visualrwkv_rwkv::{Arch, LanguageModel, Rwkv7Config, RwkvBackend, RwkvConfig, SamplingOptions};
    use visualrwkv_tokenizer::Tokenizer;
    use visualrwkv_vision::{TowerKind, VisionConfig};

    type C = NdArray;
    type G = Wgpu;

    /// Largest logit difference accepted between the backends (f32; measured ≤ 3e-6).
    const LOGITS_TOL: f32 = 1e-4;

    fn gpu() -> WgpuDevice {
        WgpuDevice::DefaultDevice
    }

    /// A tiny VisualRWKV on RWKV-6 (`x070` false) or RWKV-7 blocks.
    fn parts<B: RwkvBackend>(dev: &B::Device, x070: bool) -> VisualRwkv<B> {
        let (n_layer, n_embd, n_head, head_size, vocab_size) = (3, 32, 2, 16, 65536);
        let rwkv: LanguageModel<B> = if x070 {
            let (d_decay, d_aaa, d_mv, d_gate) = (8, 8, 4, 8);
            Rwkv7Config { n_layer, n_embd, n_head, head_size, dim_ffn: 64, vocab_size, d_decay, d_aaa, d_mv, d_gate }
                .init::<B>(dev)
                .into()
        } else {
            RwkvConfig { n_layer, n_embd, n_head, head_size, dim_ffn: 64, vocab_size, d_mix: 4, d_decay: 8 }
                .init::<B>(dev)
                .into()
        };
        let vision = VisionConfig::new(TowerKind::Clip, 32, 8, 24, 48, 1, 2).init::<B>(dev);
        let projector = ProjectorConfig::new(ProjectorKind::Linear, 24, 32).init::<B>(dev);
        VisualRwkv::new(rwkv, vision, projector, VisionOptions::default()).unwrap()
    }

    /// The same random model on the CPU and on the GPU.
    fn models(x070: bool) -> (VisualRwkv<C>, VisualRwkv<G>) {
        let cpu = visualrwkv_rwkv::seeded::<C, _>(&Default::default(), 11, || parts::<C>(&Default::default(), x070));
        let gpu = transfer(&cpu, parts::<G>(&gpu(), x070), &gpu()).unwrap();
        (cpu, gpu)
    }

    fn pixels() -> TensorData {
        let v: Vec<f32> = (0..3 * 32 * 32).map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0).collect();
        TensorData::new(v, [1, 3, 32, 32])
    }

    fn sample<B: RwkvBackend>(m: &VisualRwkv<B>, dev: &B::Device) -> Sample<B> {
        let image = m.encode_images(Tensor::from_data(pixels(), dev)).unwrap().remove(0);
        let prompt = build(
            &Conversation::question("What is left of the red square?"),
            &Sandwich,
            Tokenizer::world(),
            true,
            true,
        )
        .unwrap();
        Sample::new(&prompt, Some(image))
    }

    #[test]
    fn vlm_forward_on_wgpu_equals_the_cpu_for_every_scan_and_both_architectures() {
        for x070 in [false, true] {
            let (cpu, gpu_model) = models(x070);
            let (sc, sg) = (sample(&cpu, &Default::default()), sample(&gpu_model, &gpu()));
            for name in ["uni", "bi", "multi"] {
                let scan = visualrwkv_scan::by_name(name).unwrap();
                let a = host(cpu.forward(std::slice::from_ref(&sc), scan.as_ref()).unwrap().remove(0));
                let b = host(gpu_model.forward(std::slice::from_ref(&sg), scan.as_ref()).unwrap().remove(0));
                let d = max_diff(&a, &b);
                eprintln!("{name} (x070 {x070}): wgpu vs cpu logits max diff {d:e}");
                assert!(d <= LOGITS_TOL, "{name} (x070 {x070}): wgpu vs cpu logits differ by {d}");
            }
        }
    }

    #[test]
    fn cached_generation_on_wgpu_equals_the_cpu_and_its_own_recompute() {
        let (cpu, gpu_model) = models(false);
        let (sc, sg) = (sample(&cpu, &Default::default()), sample(&gpu_model, &gpu()));
        let greedy = GenerateOptions {
            sampling: SamplingOptions { temperature: 0.0, ..Default::default() },
            max_tokens: 4,
            stop_tokens: vec![],
            ..Default::default()
        };
        for name in ["uni", "bi", "multi"] {
            let scan = visualrwkv_scan::by_name(name).unwrap();
            let on_cpu = cpu.generate(&sc, scan.as_ref(), Tokenizer::world(), &greedy, Engine::Model, |_| {}).unwrap();
            let on_gpu =
                gpu_model.generate(&sg, scan.as_ref(), Tokenizer::world(), &greedy, Engine::Model, |_| {}).unwrap();
            assert_eq!(on_gpu.tokens, on_cpu.tokens, "{name}: greedy tokens");
            // Step by step on the GPU: cached logits == recomputing the whole sequence == the CPU's.
            let (mut logits, mut state) = gpu_model.prefill(&sg, scan.as_ref()).unwrap();
            let (mut cpu_logits, mut cpu_state) = cpu.prefill(&sc, scan.as_ref()).unwrap();
            for k in 0..=on_gpu.tokens.len() {
                let full = gpu_model.recompute_next_logits(&sg, &on_gpu.tokens[..k], scan.as_ref()).unwrap();
                let d = max_diff(&logits, &full);
                assert!(d <= LOGITS_TOL, "{name}, step {k}: wgpu cached vs recompute differ by {d}");
                let d = max_diff(&logits, &cpu_logits);
                assert!(d <= LOGITS_TOL, "{name}, step {k}: wgpu vs cpu cached logits differ by {d}");
                if k < on_gpu.tokens.len() {
                    (logits, state) = gpu_model.step(on_gpu.tokens[k], &state).unwrap();
                    (cpu_logits, cpu_state) = cpu.step(on_gpu.tokens[k], &cpu_state).unwrap();
                }
            }
        }
    }

    #[test]
    fn a_stage_two_training_step_on_wgpu_equals_the_cpu() {
        for arch in [Arch::X060, Arch::X070] {
            training_step_on_wgpu_equals_the_cpu(arch);
        }
    }

    fn training_step_on_wgpu_equals_the_cpu(arch: Arch) {
        type AC = Autodiff<C>;
        type AG = Autodiff<G>;
        let (data, splits) = super::task();
        let tok = Tokenizer::world_bytes();
        let mut cfg = ModelConfig::tiny(&data, 32, 2, tok);
        cfg.arch = arch;
        let cpu: VisualRwkv<AC> =
            visualrwkv_rwkv::seeded::<C, _>(&Default::default(), 5, || cfg.init(&Default::default()).unwrap());
        let gpu_model: VisualRwkv<AG> = transfer(&cpu, cfg.init(&gpu()).unwrap(), &gpu()).unwrap();
        let train_cpu = TaskData::prepare(&splits.train, data.cell_px, &for_eval(&cpu), &Sandwich, tok).unwrap();
        let train_gpu = TaskData::prepare(&splits.train, data.cell_px, &for_eval(&gpu_model), &Sandwich, tok).unwrap();
        let config = TrainConfig {
            stage: Stage::Full,
            steps: 10,
            batch_size: 4,
            lr_init: 1e-3,
            lr_final: 1e-3,
            warmup: 0,
            ..TrainConfig::default()
        };
        let before = flat(&cpu);
        let mut tc = Trainer::new(cpu, config.clone()).unwrap();
        let mut tg = Trainer::new(gpu_model, config).unwrap();
        let batch = [0, 3, 5, 8];
        let sc = tc.step_on(&train_cpu.lift::<AC>(), &batch, &visualrwkv_scan::BiDirectional).unwrap();
        let sg = tg.step_on(&train_gpu.lift::<AG>(), &batch, &visualrwkv_scan::BiDirectional).unwrap();
        eprintln!(
            "{arch:?}: loss cpu {} wgpu {}; grad norm cpu {} wgpu {}",
            sc.loss, sg.loss, sc.grad_norm, sg.grad_norm
        );
        assert!((sc.loss - sg.loss).abs() <= 1e-4, "loss: cpu {} vs wgpu {}", sc.loss, sg.loss);
        assert!(
            (sc.grad_norm - sg.grad_norm).abs() <= 1e-4 * sc.grad_norm.max(1.0),
            "gradient norm: cpu {} vs wgpu {}",
            sc.grad_norm,
            sg.grad_norm
        );
        let (after_cpu, after_gpu) = (flat(&tc.model), flat(&tg.model));
        let d = max_diff(&after_cpu, &after_gpu);
        let moved = max_diff(&before, &after_cpu);
        eprintln!("parameters after one step: wgpu vs cpu max diff {d:e} (the step moved them by up to {moved:e})");
        assert!(moved >= 5e-4, "the step should move the parameters (moved {moved})");
        assert!(d <= 1e-4, "parameters after one step differ by {d}");
    }
}

#[cfg(feature = "collective")]
mod parallel {
    use super::{flat, max_diff};
    use burn::backend::{Autodiff, NdArray};
    use burn::tensor::backend::AutodiffBackend;
    use visualrwkv::parallel::train_parallel;
    use visualrwkv::training::{ModelConfig, Stage, StepStats, TaskData, TrainConfig, Trainer, for_eval, materialize};
    use visualrwkv::vlm::VisualRwkv;
    use visualrwkv_prompt::Sandwich;
    use visualrwkv_rwkv::RwkvBackend;
    use visualrwkv_scan::BiDirectional;
    use visualrwkv_tokenizer::Tokenizer;
    use visualrwkv_train::data::DataConfig;

    type A = Autodiff<NdArray>;

    fn config() -> TrainConfig {
        TrainConfig {
            stage: Stage::Full,
            steps: 4,
            batch_size: 6,
            lr_init: 2e-3,
            lr_final: 1e-3,
            warmup: 1,
            seed: 3,
            ..TrainConfig::default()
        }
    }

    /// A materialised tiny model on the CPU and its data config.
    fn model() -> (VisualRwkv<A>, DataConfig) {
        let (data, _) = super::task();
        let model: VisualRwkv<A> = visualrwkv_rwkv::seeded::<NdArray, _>(&Default::default(), 21, || {
            ModelConfig::tiny(&data, 32, 2, Tokenizer::world_bytes()).init(&Default::default()).unwrap()
        });
        materialize(&model);
        (model, data)
    }

    /// The training split prepared with `model`'s (frozen) tower.
    fn train_data<B>(model: &VisualRwkv<B>) -> TaskData<B::InnerBackend>
    where
        B: AutodiffBackend + RwkvBackend,
        B::InnerBackend: RwkvBackend,
    {
        let (data, splits) = super::task();
        TaskData::prepare(&splits.train, data.cell_px, &for_eval(model), &Sandwich, Tokenizer::world_bytes()).unwrap()
    }

    /// `start` trained on one device on whole batches: the parameters after `config().steps` steps
    /// and the losses.
    fn single_device<B>(start: VisualRwkv<B>) -> (Vec<f32>, Vec<f64>)
    where
        B: AutodiffBackend + RwkvBackend,
        B::InnerBackend: RwkvBackend,
    {
        let train = train_data(&start).lift::<B>();
        let mut t = Trainer::new(start, config()).unwrap();
        let losses = (0..config().steps).map(|_| t.train_step(&train, &BiDirectional).unwrap().loss).collect();
        (flat(&t.model), losses)
    }

    /// `start` trained data-parallel on `devices` of backend `B`.
    fn data_parallel<B>(start: VisualRwkv<B>, devices: &[B::Device]) -> (Vec<f32>, Vec<f64>)
    where
        B: AutodiffBackend + RwkvBackend,
        B::InnerBackend: RwkvBackend,
    {
        let train = train_data(&start);
        let mut losses = Vec::new();
        let mut record = |s: &StepStats| losses.push(s.loss);
        let t = train_parallel(start, config(), &train, devices, &BiDirectional, &mut record).unwrap();
        (flat(&t.model), losses)
    }

    #[test]
    fn two_cpu_replicas_on_half_batches_equal_one_device_on_whole_batches() {
        let (start, _) = model();
        let (one, one_losses) = single_device::<A>(start.clone());
        let (two, two_losses) = data_parallel::<A>(start.clone(), &[Default::default(), Default::default()]);
        let d = max_diff(&one, &two);
        eprintln!("2 CPU replicas vs 1 device: parameters max diff {d:e}; losses {one_losses:?} vs {two_losses:?}");
        assert_eq!(two_losses.len(), one_losses.len());
        for (a, b) in one_losses.iter().zip(&two_losses) {
            assert!((a - b).abs() <= 1e-5, "loss {a} vs {b}");
        }
        assert!(d <= 1e-5, "parameters differ by {d}");
        // The steps changed the model (the comparison is not between two untouched copies).
        assert!(max_diff(&flat(&start), &one) > 1e-3);
        // A batch smaller than the number of devices is an error, not a hang.
        let (data, splits) = super::task();
        let train =
            TaskData::prepare(&splits.train, data.cell_px, &for_eval(&start), &Sandwich, Tokenizer::world_bytes())
                .unwrap();
        let small = TrainConfig { batch_size: 1, ..config() };
        let err = train_parallel(
            start,
            small,
            &train,
            &[Default::default(), Default::default()],
            &BiDirectional,
            &mut |_| {},
        )
        .err()
        .expect("a batch of 1 over 2 devices must fail");
        assert!(err.to_string().contains("cannot be split"), "{err}");
    }

    /// burn 0.21 / cubecl 0.10 cannot all-reduce across two wgpu devices: moving a tensor between
    /// them initialises device-to-device communication, which cubecl-wgpu does not implement
    /// (`comm_init` panics as unimplemented). Data-parallel training there is an error naming the
    /// cause, never a hang (`docs/training.md`); this test fails once burn supports it.
    #[cfg(feature = "wgpu")]
    #[test]
    fn two_wgpu_devices_are_an_error_not_a_hang() {
        use burn::backend::Wgpu;
        use burn::backend::wgpu::WgpuDevice;
        use visualrwkv::training::transfer;
        type G = Autodiff<Wgpu>;
        let (start, data) = model();
        let dev = WgpuDevice::DefaultDevice;
        let cfg = ModelConfig::tiny(&data, 32, 2, Tokenizer::world_bytes());
        let on_gpu: VisualRwkv<G> = transfer(&start, cfg.init(&dev).unwrap(), &dev).unwrap();
        let train = train_data(&on_gpu);
        let devices = [dev, WgpuDevice::Cpu];
        let err = train_parallel(on_gpu, config(), &train, &devices, &BiDirectional, &mut |_| {})
            .err()
            .expect("two wgpu devices cannot all-reduce in burn 0.21");
        // Which replica fails first, and with which of cubecl's messages, depends on timing.
        assert!(matches!(&err, visualrwkv::training::TrainError::Collective(m) if m.contains("panicked")), "{err}");
    }
}
