//! Any bytes as a checkpoint, read as safetensors and as a PyTorch `.pth`, through the tensor
//! reader and the RWKV, tower, projector and VisualRWKV loaders: an error or a model, never a
//! panic, and at most `checkpoint_bound` heap bytes.
#![no_main]

use visualrwkv_fuzz::{checkpoint_bound, load_checkpoints, loader_target};

loader_target!(
    |data: &[u8]| load_checkpoints(data, "fuzz.safetensors").max(load_checkpoints(data, "fuzz.pth")),
    checkpoint_bound
);
