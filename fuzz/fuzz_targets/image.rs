//! Any bytes as an image file (JPEG through the libjpeg-turbo path, every other format through
//! the `image` crate), decoded with a side limit and preprocessed: an error or pixels, never a
//! panic, and at most `image_bound` heap bytes.
#![no_main]

visualrwkv_fuzz::loader_target!(visualrwkv_fuzz::decode_image, visualrwkv_fuzz::image_bound);
