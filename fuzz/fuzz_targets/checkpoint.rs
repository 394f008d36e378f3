//! Any bytes as a checkpoint, read as safetensors and as a PyTorch `.pth`, through the tensor
//! reader and the RWKV, tower, projector and VisualRWKV loaders: an error or a model, never a
//! panic, and at most `checkpoint_bound` heap bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use visualrwkv_fuzz::{Counting, checkpoint_bound, load_checkpoints};

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fuzz_target!(|data: &[u8]| {
    for name in ["fuzz.safetensors", "fuzz.pth"] {
        let peak = load_checkpoints(data, name);
        assert!(peak <= checkpoint_bound(data.len()), "{name}: {peak} heap bytes for {} input bytes", data.len());
    }
});
