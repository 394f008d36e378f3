//! The loaders as the fuzz targets and the property tests (`crates/visualrwkv/tests/
//! hostile_inputs.rs`, which includes this file as a module) drive them: each takes arbitrary bytes, must
//! return an error or a value without panicking, and must stay within its heap bound, counted
//! by [`Counting`] (install it as the `#[global_allocator]`) on the calling thread.
//!
//! The bounds (`docs/reliability.md`):
//! - checkpoints (safetensors, `.pth`; the RWKV, tower, projector and VisualRWKV loaders):
//!   4× the file plus 1 MiB — the tensors as f32 (twice a half-precision file) and the module
//!   built from them;
//! - images: three 512 × 512 images at 16 bytes per pixel (decoded, converted, resized; the
//!   decoder refuses larger sides before decoding) plus twice the file and 1 MiB;
//! - text files (LLaVA JSON with prompt building, question and answer files): 32× the file
//!   plus 1 MiB.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::{Path, PathBuf};

use burn::backend::NdArray;
use visualrwkv::{VisionOptions, VisualRwkv};
use visualrwkv_checkpoint::TensorMap;
use visualrwkv_eval::QuestionFormat;
use visualrwkv_tokenizer::Tokenizer;
use visualrwkv_vision::ImageProcessor;

type B = NdArray;

/// An allocator that counts the live heap bytes of each thread and their peak.
pub struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn track(delta: isize) {
    let _ = LIVE.try_with(|live| {
        let now = live.get() + delta;
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

// SAFETY: forwards to the system allocator; the bookkeeping touches only const-initialised
// thread-locals, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            track(layout.size() as isize);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        track(-(layout.size() as isize));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            track(new_size as isize - layout.size() as isize);
        }
        p
    }
}

/// Runs `f` and returns the most heap bytes it held at once on this thread beyond what was live
/// before it.
pub fn peak_bytes(f: impl FnOnce()) -> usize {
    let base = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(base));
    f();
    (PEAK.with(Cell::get) - base).max(0) as usize
}

const MIB: usize = 1 << 20;

/// The checkpoint loaders' bound for a file of `file` bytes.
pub fn checkpoint_bound(file: usize) -> usize {
    4 * file + MIB
}

/// The image decoder's bound for a file of `file` bytes (at [`IMAGE_MAX_SIDE`]).
pub fn image_bound(file: usize) -> usize {
    3 * (IMAGE_MAX_SIDE * IMAGE_MAX_SIDE) as usize * 16 + 2 * file + MIB
}

/// The text readers' bound for a file of `file` bytes.
pub fn text_bound(file: usize) -> usize {
    32 * file + MIB
}

/// The largest image side [`decode_image`] accepts.
pub const IMAGE_MAX_SIDE: u32 = 512;

/// A scratch file path of this process and thread (loaders that take paths read it).
pub fn scratch(name: &str) -> PathBuf {
    let thread = format!("{:?}", std::thread::current().id()).replace(|c: char| !c.is_ascii_alphanumeric(), "");
    let dir = std::env::temp_dir().join(format!("visualrwkv-hostile-{}-{thread}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a scratch folder");
    dir.join(name)
}

/// Every checkpoint loader on `bytes` saved as `name` (its extension picks safetensors or
/// `.pth`): the tensor reader, then the RWKV, tower, projector and VisualRWKV loaders. Returns
/// the worst loader's peak heap bytes.
pub fn load_checkpoints(bytes: &[u8], name: &str) -> usize {
    let path = scratch(name);
    std::fs::write(&path, bytes).expect("a scratch file");
    let dev = Default::default();
    let runs: [&dyn Fn(); 5] = [
        &|| drop(TensorMap::read(&path)),
        &|| drop(visualrwkv_rwkv::load::<B>(&path, &dev)),
        &|| drop(visualrwkv_vision::load::<B>(&path, None, &dev)),
        &|| drop(visualrwkv_projector::load::<B>(&path, "proj.", None, &dev)),
        &|| drop(VisualRwkv::<B>::load_checkpoint(&path, None, VisionOptions::default(), &dev)),
    ];
    runs.iter().map(peak_bytes).max().unwrap_or(0)
}

/// Decoding (sides up to [`IMAGE_MAX_SIDE`]) then preprocessing to CLIP's input at 32 px.
pub fn decode_image(bytes: &[u8]) -> usize {
    let mut p = ImageProcessor::clip(32);
    p.max_side = IMAGE_MAX_SIDE;
    peak_bytes(|| {
        if let Ok(image) = p.decode(bytes, "bytes") {
            drop(p.preprocess(&image));
        }
    })
}

/// The LLaVA-format reader, then every prompt layout's tokenisation of each record.
pub fn read_llava(bytes: &[u8]) -> usize {
    let text = String::from_utf8_lossy(bytes);
    let tokenizer = Tokenizer::world();
    peak_bytes(|| {
        if let Ok(records) = visualrwkv_data::parse_llava(&text, Path::new("llava.json")) {
            for record in &records {
                for layout in ["first", "last", "sandwich"] {
                    if let Some(strategy) = visualrwkv_prompt::by_name(layout) {
                        drop(visualrwkv_data::tokenize(record, strategy.as_ref(), tokenizer));
                    }
                }
            }
        }
    })
}

/// The question readers in every format (JSON lines, JSON, MMBench TSV in English and Chinese)
/// and the answer-file reader.
pub fn read_questions(bytes: &[u8]) -> usize {
    let mut worst = 0;
    for (name, format) in [
        ("q.jsonl", QuestionFormat::JsonLines),
        ("q.json", QuestionFormat::Json),
        ("q.tsv", QuestionFormat::Mmbench),
        ("q.tsv", QuestionFormat::MmbenchCn),
    ] {
        let path = scratch(name);
        std::fs::write(&path, bytes).expect("a scratch file");
        worst = worst.max(peak_bytes(|| drop(visualrwkv_eval::read_questions(&path, format))));
        worst = worst.max(peak_bytes(|| drop(visualrwkv_eval::annotations::read_answer_rows(&path))));
    }
    worst
}
