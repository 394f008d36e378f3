//! Preprocessing against Pillow and Hugging Face's processors (`preprocess_golden.*`, made by
//! `scripts/make-vision-fixtures.py` with `CLIPImageProcessorPil` / `SiglipImageProcessorPil`),
//! plus known values on generated images and the error paths.

use std::path::{Path, PathBuf};

use image::{DynamicImage, GrayImage, ImageBuffer, Rgb, RgbImage, Rgba, RgbaImage};
use visualrwkv_checkpoint::TensorMap;
use visualrwkv_vision::preprocess::{CLIP_MEAN, CLIP_STD, pil_bicubic_resize};
use visualrwkv_vision::{AlphaMode, ImageProcessor, Resize, VisionError};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures").join(name)
}

fn processor(name: &str) -> ImageProcessor {
    match name {
        "clip48" => ImageProcessor::clip(48),
        "clip20" => ImageProcessor::clip(20),
        "siglip24" => ImageProcessor::siglip(24),
        other => panic!("unknown processor {other}"),
    }
}

/// Pillow's resize is reproduced bit for bit, and the processors' pixel values to f32 rounding.
#[test]
fn matches_pillow_and_transformers_processors() {
    let golden = TensorMap::read_safetensors(fixture("preprocess_golden.safetensors")).unwrap();
    let mut cases = 0;
    let mut max_pixel_diff = 0f32;
    for image in ["noise_rgb", "gradient_rgb", "noise_gray", "noise_rgba", "solid_rgb"] {
        for proc_name in ["clip48", "clip20", "siglip24"] {
            let proc = processor(proc_name);
            let img = proc.open(fixture(&format!("preprocess/{image}.png"))).unwrap();
            // The resize step alone, against Pillow.
            let (rshape, rwant) = &golden.tensors[&format!("{image}.{proc_name}.resized_u8")];
            let (h, w) = proc.resized_size((img.height(), img.width()));
            assert_eq!([h as usize, w as usize, 3], rshape[..], "{image} {proc_name}: resized size");
            let resized = pil_bicubic_resize(&img.to_rgb8(), w, h);
            let mismatched = resized.as_raw().iter().zip(rwant).filter(|(a, b)| **a as f32 != **b).count();
            assert_eq!(mismatched, 0, "{image} {proc_name}: {mismatched} bytes differ from Pillow");
            // The whole pipeline, against the processor.
            let (shape, want) = &golden.tensors[&format!("{image}.{proc_name}.pixel_values")];
            let (got, (gh, gw)) = proc.preprocess(&img).unwrap();
            assert_eq!([1, 3, gh, gw], shape[..], "{image} {proc_name}: output size");
            let diff = got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            max_pixel_diff = max_pixel_diff.max(diff);
            cases += 1;
        }
    }
    assert_eq!(cases, 15);
    assert!(max_pixel_diff <= 1e-6, "pixel values differ from transformers by {max_pixel_diff}");
}

#[test]
fn solid_colour_gives_the_normalised_constant() {
    let img = DynamicImage::ImageRgb8(RgbImage::from_pixel(31, 17, Rgb([255, 0, 128])));
    let proc = ImageProcessor::clip(16);
    let (v, (h, w)) = proc.preprocess(&img).unwrap();
    assert_eq!((h, w), (16, 16));
    for (c, value) in [255u8, 0, 128].iter().enumerate() {
        let want = (*value as f32 / 255.0 - CLIP_MEAN[c]) / CLIP_STD[c];
        assert!(v[c * 256..(c + 1) * 256].iter().all(|x| (x - want).abs() < 1e-6), "channel {c}");
    }
}

#[test]
fn gradient_is_preserved_by_a_same_size_pass_and_stays_monotone_when_resized() {
    let img = RgbImage::from_fn(40, 30, |x, _| Rgb([(x * 6) as u8, 0, 0]));
    assert_eq!(pil_bicubic_resize(&img, 40, 30), img, "no resampling when the size is unchanged");
    let small = pil_bicubic_resize(&img, 20, 15);
    let row: Vec<u8> = (0..20).map(|x| small.get_pixel(x, 7).0[0]).collect();
    assert!(row.windows(2).all(|w| w[0] <= w[1]), "{row:?}");
    // Every row of a horizontal gradient stays identical.
    assert!((0..15).all(|y| (0..20).all(|x| small.get_pixel(x, y) == small.get_pixel(x, 0))));
}

#[test]
fn grayscale_alpha_and_sixteen_bit_convert_to_rgb() {
    let proc = ImageProcessor {
        resize: Resize::None,
        crop: None,
        mean: [0.0; 3],
        std: [1.0; 3],
        max_side: 64,
        alpha: AlphaMode::Drop,
    };
    let gray = DynamicImage::ImageLuma8(GrayImage::from_pixel(5, 3, image::Luma([51])));
    let (v, _) = proc.preprocess(&gray).unwrap();
    assert!(v.iter().all(|x| (x - 0.2).abs() < 1e-6), "gray 51 → 0.2 in every channel");
    // Alpha dropped (Pillow's convert("RGB")) or composited over white (HF's convert_to_rgb).
    let rgba = DynamicImage::ImageRgba8(RgbaImage::from_pixel(2, 2, Rgba([255, 102, 0, 0])));
    let (v, _) = proc.preprocess(&rgba).unwrap();
    assert_eq!(&v[..1], &[1.0]);
    assert!((v[4] - 0.4).abs() < 1e-6 && v[8] == 0.0);
    let composite = ImageProcessor { alpha: AlphaMode::CompositeWhite, ..proc.clone() };
    let (v, _) = composite.preprocess(&rgba).unwrap();
    assert!(v.iter().all(|x| *x == 1.0), "fully transparent → white");
    let half = DynamicImage::ImageRgba8(RgbaImage::from_pixel(1, 1, Rgba([0, 0, 0, 128])));
    let (v, _) = composite.preprocess(&half).unwrap();
    assert!(v.iter().all(|x| (x - 127.0 / 255.0).abs() < 1e-6), "{v:?}");
    let sixteen: ImageBuffer<Rgb<u16>, Vec<u16>> = ImageBuffer::from_pixel(3, 3, Rgb([65535, 0, 32896]));
    let (v, _) = proc.preprocess(&DynamicImage::ImageRgb16(sixteen)).unwrap();
    assert_eq!((v[0], v[9]), (1.0, 0.0));
    assert!((v[18] - 128.0 / 255.0).abs() < 1e-6);
}

#[test]
fn odd_sizes_resize_by_the_shortest_edge_and_crop_centrally() {
    let proc = ImageProcessor::clip(336);
    assert_eq!(proc.resized_size((480, 640)), (336, 448));
    assert_eq!(proc.resized_size((641, 479)), (449, 336));
    assert_eq!(proc.resized_size((1, 7)), (336, 2352));
    for (w, h) in [(1, 1), (3, 700), (999, 2), (337, 335)] {
        let img = DynamicImage::ImageRgb8(RgbImage::from_pixel(w, h, Rgb([9, 9, 9])));
        let (v, hw) = proc.preprocess(&img).unwrap();
        assert_eq!((hw, v.len()), ((336, 336), 3 * 336 * 336), "{w}x{h}");
    }
    // A crop larger than the image is zero-padded around the centre.
    let padded = visualrwkv_vision::preprocess::center_crop(&RgbImage::from_pixel(2, 2, Rgb([7, 7, 7])), 4, 4);
    assert_eq!(padded.get_pixel(0, 0).0, [0, 0, 0]);
    assert_eq!(padded.get_pixel(1, 1).0, [7, 7, 7]);
    assert_eq!(padded.get_pixel(3, 3).0, [0, 0, 0]);
}

#[test]
fn batches_stack_images_and_reject_empty_batches() {
    let proc = ImageProcessor::siglip(8);
    let images = [
        DynamicImage::ImageRgb8(RgbImage::from_pixel(10, 20, Rgb([0, 0, 0]))),
        DynamicImage::ImageRgb8(RgbImage::from_pixel(3, 5, Rgb([255, 255, 255]))),
    ];
    let batch = proc.batch::<burn::backend::NdArray>(&images, &Default::default()).unwrap();
    assert_eq!(batch.dims(), [2, 3, 8, 8]);
    let v = batch.into_data().into_vec::<f32>().unwrap();
    assert!(v[..192].iter().all(|x| *x == -1.0) && v[192..].iter().all(|x| *x == 1.0));
    assert!(matches!(proc.batch::<burn::backend::NdArray>(&[], &Default::default()), Err(VisionError::EmptyBatch)));
}

#[test]
fn encoded_formats_decode() {
    let img = DynamicImage::ImageRgb8(RgbImage::from_fn(9, 7, |x, y| Rgb([(x * 20) as u8, (y * 30) as u8, 77])));
    let proc = ImageProcessor::clip(7);
    for format in [image::ImageFormat::Png, image::ImageFormat::Bmp, image::ImageFormat::Jpeg, image::ImageFormat::WebP]
    {
        let mut bytes = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut bytes), format).unwrap();
        let decoded = proc.decode(&bytes, "memory").unwrap();
        assert_eq!((decoded.width(), decoded.height()), (9, 7), "{format:?}");
    }
}

#[test]
fn truncated_non_image_and_oversized_inputs_give_their_errors() {
    let proc = ImageProcessor::clip(16);
    let png = std::fs::read(fixture("preprocess/noise_rgb.png")).unwrap();
    let e = proc.decode(&png[..png.len() / 2], "half.png").unwrap_err();
    assert!(matches!(&e, VisionError::Image { origin, .. } if origin == "half.png"), "{e}");
    let e = proc.decode(b"this is not an image", "text.png").unwrap_err();
    assert!(matches!(e, VisionError::Image { .. }), "{e}");
    assert!(matches!(proc.decode(b"", "empty").unwrap_err(), VisionError::Image { .. }));
    assert!(matches!(proc.open("/nonexistent/image.png").unwrap_err(), VisionError::Image { .. }));
    // A BMP header announcing 40000 x 40000 pixels (4.8 GB decoded) with no pixel data.
    let mut bmp = Vec::new();
    bmp.extend(b"BM");
    bmp.extend(&(54u32).to_le_bytes());
    bmp.extend(&[0u8; 4]);
    bmp.extend(&(54u32).to_le_bytes());
    bmp.extend(&(40u32).to_le_bytes());
    bmp.extend(&(40_000i32).to_le_bytes());
    bmp.extend(&(40_000i32).to_le_bytes());
    bmp.extend(&(1u16).to_le_bytes());
    bmp.extend(&(24u16).to_le_bytes());
    bmp.extend(&[0u8; 24]);
    let e = proc.decode(&bmp, "bomb.bmp").unwrap_err();
    assert!(matches!(e, VisionError::ImageTooLarge { width: 40_000, height: 40_000, .. }), "{e}");
}
