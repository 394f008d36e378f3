//! JPEG decoding against Pillow 11.3 (libjpeg-turbo 3.1.1): `tests/fixtures/jpeg/` holds six
//! JPEGs written by Pillow (baseline 4:2:0 / 4:2:2 / 4:4:4, progressive, optimised Huffman,
//! greyscale) and `Image.open(f).convert("RGB")` of each. Every file must decode to exactly those
//! bytes; corrupt data must be an error, not a crash.

use std::path::{Path, PathBuf};

use image::{DynamicImage, RgbImage};
use visualrwkv_vision::{AlphaMode, ImageProcessor, VisionError};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/jpeg").join(name)
}

#[test]
fn every_fixture_decodes_to_pillows_bytes() {
    let golden = std::fs::read(fixture("pillow_decoded.safetensors")).unwrap();
    let golden = safetensors::SafeTensors::deserialize(&golden).unwrap();
    let processor = ImageProcessor::clip_336();
    let mut files = 0;
    for name in golden.names() {
        let want = golden.tensor(name).unwrap();
        let image = processor.open(fixture(name)).unwrap();
        let rgb = visualrwkv_vision::preprocess::to_rgb(&image, AlphaMode::Drop);
        let shape = [rgb.height() as usize, rgb.width() as usize, 3];
        assert_eq!(want.shape(), shape, "{name}: size");
        let differing = rgb.as_raw().iter().zip(want.data()).filter(|(a, b)| a != b).count();
        assert_eq!(differing, 0, "{name}: {differing} bytes differ from Pillow's");
        files += 1;
    }
    assert_eq!(files, 6);
}

#[test]
fn greyscale_jpeg_decodes_to_luma() {
    let image = ImageProcessor::clip_336().open(fixture("gray_q80_80x64.jpg")).unwrap();
    assert!(matches!(image, DynamicImage::ImageLuma8(_)), "{:?}", image.color());
}

#[test]
fn corrupt_jpegs_are_errors_naming_the_file() {
    let bytes = std::fs::read(fixture("baseline_444_q95_131x97.jpg")).unwrap();
    let processor = ImageProcessor::clip_336();
    // A valid start of image followed by garbage, and a file cut inside its header.
    let mut garbage = bytes[..4].to_vec();
    garbage.extend(std::iter::repeat_n(0x5Au8, 600));
    for (what, data) in [("garbage", garbage), ("cut header", bytes[..40].to_vec())] {
        match processor.decode(&data, "broken.jpg") {
            Err(VisionError::Image { origin, .. }) => assert_eq!(origin, "broken.jpg", "{what}"),
            other => panic!("{what}: expected an image error, got {other:?}"),
        }
    }
}

#[test]
fn oversized_jpeg_is_refused_before_decoding() {
    let bytes = std::fs::read(fixture("baseline_420_q75_500x333.jpg")).unwrap();
    let processor = ImageProcessor { max_side: 400, ..ImageProcessor::clip_336() };
    match processor.decode(&bytes, "big.jpg") {
        Err(VisionError::ImageTooLarge { width: 500, height: 333, limit: 400, .. }) => {}
        other => panic!("expected ImageTooLarge, got {other:?}"),
    }
}

/// The other formats the loader accepts: GIF, WebP (lossless), BMP, and PNG in 16-bit, palette,
/// greyscale and alpha variants, each converted to RGB as Pillow's `convert("RGB")` does for 8-bit
/// data (alpha dropped, grey replicated).
#[test]
fn other_formats_load() {
    let rgb = RgbImage::from_fn(7, 5, |x, y| image::Rgb([(x * 30) as u8, (y * 40) as u8, 200]));
    let processor = ImageProcessor::clip_336();
    let mut cases = Vec::new();
    for format in [image::ImageFormat::Gif, image::ImageFormat::Bmp, image::ImageFormat::WebP, image::ImageFormat::Png]
    {
        let mut bytes = std::io::Cursor::new(Vec::new());
        DynamicImage::ImageRgb8(rgb.clone()).write_to(&mut bytes, format).unwrap();
        cases.push((format!("{format:?}"), bytes.into_inner(), format != image::ImageFormat::Gif));
    }
    let variants = [
        ("png16", DynamicImage::ImageRgb16(DynamicImage::ImageRgb8(rgb.clone()).to_rgb16())),
        ("png-grey", DynamicImage::ImageLuma8(DynamicImage::ImageRgb8(rgb.clone()).to_luma8())),
        ("png-alpha", DynamicImage::ImageRgba8(DynamicImage::ImageRgb8(rgb.clone()).to_rgba8())),
    ];
    for (name, image) in variants {
        let mut bytes = std::io::Cursor::new(Vec::new());
        image.write_to(&mut bytes, image::ImageFormat::Png).unwrap();
        cases.push((name.to_string(), bytes.into_inner(), name != "png-grey"));
    }
    // A palette PNG (colour type 3) written by hand with the png encoder.
    let mut palette_png = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut palette_png, 2, 1);
        encoder.set_color(png::ColorType::Indexed);
        encoder.set_depth(png::BitDepth::Eight);
        encoder.set_palette(vec![10, 20, 30, 200, 150, 100]);
        encoder.write_header().unwrap().write_image_data(&[0, 1]).unwrap();
    }
    for (name, bytes, lossless_rgb) in cases {
        let image = processor.decode(&bytes, &name).unwrap_or_else(|e| panic!("{name}: {e}"));
        let got = visualrwkv_vision::preprocess::to_rgb(&image, AlphaMode::Drop);
        assert_eq!(got.dimensions(), (7, 5), "{name}");
        if lossless_rgb {
            assert_eq!(got, rgb, "{name}: pixels");
        }
    }
    let image = processor.decode(&palette_png, "palette.png").unwrap();
    let got = visualrwkv_vision::preprocess::to_rgb(&image, AlphaMode::Drop);
    assert_eq!(got.as_raw(), &vec![10, 20, 30, 200, 150, 100]);
}
