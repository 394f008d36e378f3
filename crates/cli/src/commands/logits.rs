//! `visualrwkv logits`: token ids through RWKV-6 or RWKV-7 (told from the checkpoint's keys),
//! logits and the final state written out.

use std::collections::HashMap;
use std::path::PathBuf;

use burn::tensor::{Int, Tensor, TensorData};
use visualrwkv_rwkv::checkpoint::write_safetensors;
use visualrwkv_rwkv::{HostState, LanguageModel, LmDims, RwkvBackend, State, TensorMap};

use crate::Res;
use crate::args::{DecoderKind, parse_ids, values};
use crate::device::{DeviceArgs, DeviceSpec, Job};

/// Flags of `logits`.
#[derive(clap::Args)]
pub struct Args {
    /// The checkpoint.
    #[arg(long)]
    model: PathBuf,
    /// Comma-separated token ids, e.g. 1,2,3.
    #[arg(long)]
    tokens: String,
    /// Output safetensors file (`logits`, F32 [T, V]).
    #[arg(long)]
    out: PathBuf,
    /// Also write the final state (`state.{l}.att_shift` [C], `state.{l}.wkv` [H,N,N],
    /// `state.{l}.ffn_shift` [C]).
    #[arg(long)]
    state_out: Option<PathBuf>,
    /// Start from this state (as written by `--state-out`) instead of zeros.
    #[arg(long)]
    state_in: Option<PathBuf>,
    /// How the tokens run: auto (the fused CPU decoder in f32 on the CPU: the file memory-mapped
    /// and its tensors moved in, one copy of the weights; the model's tensor ops elsewhere),
    /// f32 / bf16 / f16 / i8 / q4 (the fused decoder with its matrices in that type), burn
    /// (the model's tensor ops on any device).
    #[arg(long, value_enum, default_value_t = DecoderKind::Auto)]
    decoder: DecoderKind,
    #[command(flatten)]
    device: DeviceArgs,
}

impl Job for Args {
    type Output = ();

    fn device_args(&self) -> &DeviceArgs {
        &self.device
    }

    fn run<B: RwkvBackend>(self, dev: B::Device, spec: &DeviceSpec) -> Res<()> {
        let ids = parse_ids(&self.tokens)?;
        // Either architecture, told from the keys.
        let load_state = |d: &LmDims| match &self.state_in {
            Some(p) => State::<B>::load_sized(p, d.n_layer, d.n_embd, d.n_head, d.head_size, &dev).map(Some),
            None => Ok(None),
        };
        if let Some(dtype) = self.decoder.dtype(spec)? {
            // Every row's logits from the fused decoder's sequence mode.
            let (_, decoder) = visualrwkv_rwkv::load_fused_model::<B>(&self.model, dtype, &dev)?;
            let d = decoder.dims();
            let mut state = match load_state(&d)? {
                Some(s) => HostState::from_state(&s, 0)?,
                None => decoder.zero_state(),
            };
            let logits = decoder.logits_ordered(&decoder.embed(&ids)?, &mut state, &[])?;
            let mut map = TensorMap { origin: "logits".into(), tensors: HashMap::new() };
            map.tensors.insert("logits".into(), (vec![ids.len(), d.vocab_size], logits));
            write_safetensors(&map, &self.out)?;
            if let Some(path) = &self.state_out {
                state.to_state_for::<B>(&d, &dev)?.save(path, true)?;
            }
            return Ok(());
        }
        let model = LanguageModel::<B>::load(&self.model, &dev)?;
        let state = load_state(&model.dims())?;
        let output = model.forward(ids_tensor::<B>(&ids, &dev), state.as_ref())?;
        self.write(output)
    }
}

impl Args {
    /// Writes every row's logits and, with `--state-out`, the final state.
    fn write<B: RwkvBackend>(&self, output: visualrwkv_rwkv::RwkvOutput<B>) -> Res<()> {
        let [_, t, v] = output.logits.dims();
        let mut map = TensorMap { origin: "logits".into(), tensors: HashMap::new() };
        map.tensors.insert("logits".into(), (vec![t, v], values(output.logits)?));
        write_safetensors(&map, &self.out)?;
        if let Some(path) = &self.state_out {
            output.state.save(path, true)?;
        }
        Ok(())
    }
}

fn ids_tensor<B: RwkvBackend>(ids: &[u32], dev: &B::Device) -> Tensor<B, 2, Int> {
    Tensor::from_data(TensorData::new(ids.iter().map(|&i| i as i64).collect::<Vec<_>>(), [1, ids.len()]), dev)
}
