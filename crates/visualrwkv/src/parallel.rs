//! Training on one device or data-parallel over several of one backend ([`train_parallel`];
//! several devices need the feature `collective`).
//!
//! Each device holds a replica of the model and its own optimiser state, started equal. Every
//! step, all replicas draw the same batch (same seed), each computes the loss and gradients of
//! its part ([`Replica::part`]), and burn-collective's all-reduce (through burn-optim's
//! `GradientsParams::all_reduce`) sums the gradients so every replica clips and applies the same
//! update. The loss is normalised by the whole batch, so the result equals one device training on
//! the whole batch (up to the order of floating-point sums): `tests/devices.rs`.
//!
//! Why not burn-train's `ddp` strategy: it runs on burn's `distributed` feature, whose
//! `AutodiffBackend` impl then requires `DistributedBackend` of the inner backend. In burn 0.21
//! only the cubecl backends implement it, and only CUDA's all-reduce (NCCL) is implemented
//! (`burn-ndarray` has no impl, so `Autodiff<NdArray>` stops being an autodiff backend; wgpu's
//! `all_reduce` panics as unimplemented). burn-collective's local all-reduce works on every backend,
//! CPU and wgpu included, so it is what this module uses (`docs/training.md`).
//!
//! # Shapes
//!
//! As in [`crate::training`]; each replica's part of a batch of `B` samples has `⌊B/n⌋` or
//! `⌈B/n⌉` samples.

use burn::module::Module;
use burn::optim::GradientsParams;
use burn::tensor::backend::AutodiffBackend;
use visualrwkv_rwkv::RwkvBackend;
use visualrwkv_scan::Scan;

use crate::training::{Replica, StepStats, TaskData, TrainConfig, TrainError, Trainer, materialize};
use crate::vlm::VisualRwkv;

/// Trains `model` for `config.steps` steps on `data` on `devices` and returns the trainer (of
/// replica 0 when data-parallel: every replica ends with the same parameters). One device is plain
/// training; several run one replica per device, one thread each (feature `collective`; the batch
/// size must be at least the number of devices). `on_step` sees each step's statistics (replica
/// 0's, whose loss is the whole batch's). Data-parallel training uses the process-wide
/// burn-collective server of `B::InnerBackend`: run one at a time per backend type.
pub fn train_parallel<B>(
    model: VisualRwkv<B>,
    config: TrainConfig,
    data: &TaskData<B::InnerBackend>,
    devices: &[B::Device],
    scan: &dyn Scan,
    on_step: &mut (dyn FnMut(&StepStats) + Send),
) -> Result<Trainer<B>, TrainError>
where
    B: AutodiffBackend + RwkvBackend,
    B::InnerBackend: RwkvBackend,
{
    if devices.len() > 1 && config.batch_size < devices.len() {
        return Err(TrainError::BatchSplit { batch: config.batch_size, devices: devices.len() });
    }
    let on_step = std::sync::Mutex::new(on_step);
    on_replicas(model, devices, |model, device, replica| {
        let data = data.to_device(device).lift::<B>();
        let mut trainer = Trainer::new(model, config.clone())?;
        trainer.replica = replica;
        while trainer.step < trainer.config.steps {
            let stats = trainer.train_step(&data, scan)?;
            if replica.is_none_or(|r| r.rank == 0) {
                (on_step.lock().unwrap_or_else(|e| e.into_inner()))(&stats);
            }
        }
        trainer.replica = None;
        Ok(trainer)
    })
}

/// Runs `body` once per device and returns replica 0's trainer. One device: `body` runs here
/// with `replica = None`. Several (feature `collective`): one thread per device, each joined to
/// the backend's burn-collective server as peer `rank` with its fork of `model` (materialised
/// first, so every replica starts equal), `replica = Some(..)`; `body` must step the same number
/// of times on every replica (every all-reduce waits for all peers).
pub(crate) fn on_replicas<B, F>(model: VisualRwkv<B>, devices: &[B::Device], body: F) -> Result<Trainer<B>, TrainError>
where
    B: AutodiffBackend + RwkvBackend,
    B::InnerBackend: RwkvBackend,
    F: Fn(VisualRwkv<B>, &B::Device, Option<Replica>) -> Result<Trainer<B>, TrainError> + Sync,
{
    let count = devices.len();
    match devices {
        [] => return Err(TrainError::NoDevice),
        [device] => return body(model.fork(device), device, None),
        _ => {}
    }
    collective::check_available()?;
    // Replicas are clones: initialise lazy parameters first, or each clone draws its own.
    materialize(&model);
    collective::reset::<B>();
    let body = &body;
    let results: Vec<Result<Option<Trainer<B>>, TrainError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = devices
            .iter()
            .enumerate()
            .map(|(rank, device)| {
                let model = model.clone().fork(device);
                let replica = Replica { rank, count };
                scope.spawn(move || {
                    collective::join::<B>(replica, device)?;
                    let outcome = body(model, device, Some(replica));
                    collective::leave::<B>(replica)?;
                    Ok((rank == 0).then_some(outcome?))
                })
            })
            .collect();
        handles
            .into_iter()
            .enumerate()
            .map(|(rank, h)| {
                h.join().unwrap_or_else(|payload| {
                    let msg = payload
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default();
                    Err(TrainError::Collective(format!("replica {rank} panicked: {msg}")))
                })
            })
            .collect()
    });
    let mut first = None;
    for r in results {
        if let Some(t) = r? {
            first = Some(t);
        }
    }
    first.ok_or_else(|| TrainError::Collective("replica 0 returned no trainer".into()))
}

/// Sums a replica's gradients with the other replicas' (all-reduce over burn-collective).
pub(crate) fn sum_gradients<B: AutodiffBackend>(
    grads: GradientsParams,
    replica: Replica,
) -> Result<GradientsParams, TrainError> {
    collective::sum_gradients::<B>(grads, replica)
}

/// Sums a scalar over the replicas (the whole batch's loss from each part's share).
pub(crate) fn sum_scalar<B: AutodiffBackend>(
    value: f64,
    device: &B::Device,
    replica: Replica,
) -> Result<f64, TrainError> {
    collective::sum_scalar::<B>(value, device, replica)
}

/// The error of asking for several devices in a build without the `collective` feature.
pub fn no_collective() -> TrainError {
    TrainError::NoCollective
}

/// The burn-collective operations the replicas use.
#[cfg(feature = "collective")]
mod collective {
    use burn::collective::{
        CollectiveConfig, CollectiveError, PeerId, ReduceOperation, all_reduce, finish_collective, register,
        reset_collective,
    };
    use burn::optim::GradientsParams;
    use burn::tensor::backend::AutodiffBackend;
    use burn::tensor::{ElementConversion, Tensor, TensorPrimitive};

    use crate::training::{Replica, TrainError};

    fn error(e: CollectiveError) -> TrainError {
        TrainError::Collective(format!("{e:?}"))
    }

    fn peer(r: Replica) -> PeerId {
        PeerId(r.rank as u32)
    }

    pub fn check_available() -> Result<(), TrainError> {
        Ok(())
    }

    pub fn reset<B: AutodiffBackend>() {
        reset_collective::<B::InnerBackend>();
    }

    pub fn join<B: AutodiffBackend>(r: Replica, device: &B::Device) -> Result<(), TrainError> {
        let config = CollectiveConfig::default().with_num_devices(r.count);
        register::<B::InnerBackend>(peer(r), device.clone(), config).map_err(error)
    }

    pub fn leave<B: AutodiffBackend>(r: Replica) -> Result<(), TrainError> {
        finish_collective::<B::InnerBackend>(peer(r)).map_err(error)
    }

    pub fn sum_gradients<B: AutodiffBackend>(g: GradientsParams, r: Replica) -> Result<GradientsParams, TrainError> {
        g.all_reduce::<B::InnerBackend>(peer(r), ReduceOperation::Sum).map_err(error)
    }

    pub fn sum_scalar<B: AutodiffBackend>(value: f64, device: &B::Device, r: Replica) -> Result<f64, TrainError> {
        let t = Tensor::<B::InnerBackend, 1>::from_floats([value as f32], device).into_primitive().tensor();
        let sum = all_reduce::<B::InnerBackend>(peer(r), t, ReduceOperation::Sum).map_err(error)?;
        Ok(Tensor::<B::InnerBackend, 1>::from_primitive(TensorPrimitive::Float(sum)).into_scalar().elem::<f64>())
    }
}

/// Without the `collective` feature there are no replicas: several devices are refused up front.
#[cfg(not(feature = "collective"))]
// The type parameters mirror the feature-on module so that callers are the same either way.
#[allow(clippy::extra_unused_type_parameters)]
mod collective {
    use burn::optim::GradientsParams;
    use burn::tensor::backend::AutodiffBackend;

    use crate::training::{Replica, TrainError};

    pub fn check_available() -> Result<(), TrainError> {
        Err(super::no_collective())
    }

    pub fn reset<B: AutodiffBackend>() {}

    pub fn join<B: AutodiffBackend>(_: Replica, _: &B::Device) -> Result<(), TrainError> {
        Err(super::no_collective())
    }

    pub fn leave<B: AutodiffBackend>(_: Replica) -> Result<(), TrainError> {
        Err(super::no_collective())
    }

    pub fn sum_gradients<B: AutodiffBackend>(_: GradientsParams, _: Replica) -> Result<GradientsParams, TrainError> {
        Err(super::no_collective())
    }

    pub fn sum_scalar<B: AutodiffBackend>(_: f64, _: &B::Device, _: Replica) -> Result<f64, TrainError> {
        Err(super::no_collective())
    }
}
