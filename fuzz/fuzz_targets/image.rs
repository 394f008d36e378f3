//! Any bytes as an image file (JPEG through the libjpeg-turbo path, every other format through
//! the `image` crate), decoded with a side limit and preprocessed: an error or pixels, never a
//! panic, and at most `image_bound` heap bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use visualrwkv_fuzz::{Counting, decode_image, image_bound};

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fuzz_target!(|data: &[u8]| {
    let peak = decode_image(data);
    assert!(peak <= image_bound(data.len()), "{peak} heap bytes for {} input bytes", data.len());
});
