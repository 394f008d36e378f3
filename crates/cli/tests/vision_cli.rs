//! `visualrwkv vision-features`: the tiny CLIP golden (transformers' outputs) through `--pixels`,
//! the SigLIP golden, images through `--image`, grid pooling, and errors as messages.

mod common;

use common::{fixture, max_diff, read, tmp};

fn run(args: &[&str]) -> std::process::Output {
    common::bin().arg("vision-features").args(args).output().unwrap()
}

#[test]
fn tiny_clip_golden_through_pixels() {
    let out = tmp("clip.safetensors");
    let out_s = out.to_str().unwrap();
    let o = run(&[
        "--weights",
        &fixture("clip_tiny_weights.safetensors"),
        "--pixels",
        &fixture("clip_tiny_golden.safetensors"),
        "--out",
        out_s,
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let got = read(&out);
    let golden = read(fixture("clip_tiny_golden.safetensors"));
    for key in ["hidden_states.0", "hidden_states.1", "hidden_states.2", "last_hidden_state", "pooler_output"] {
        let (shape, want) = &golden[key];
        assert_eq!(&got[key].0, shape, "{key}");
        let d = max_diff(&got[key].1, want);
        assert!(d <= 1e-4, "{key}: max abs diff {d}");
    }
    // Grid -1: the 16 patches of the last layer, then the CLS row.
    let (shape, pooled) = &got["pooled"];
    assert_eq!(shape, &vec![2, 17, 64]);
    let last = &golden["last_hidden_state"].1;
    assert_eq!(&pooled[..16 * 64], &got["last_hidden_state"].1[64..17 * 64]);
    assert!(max_diff(&pooled[16 * 64..17 * 64], &last[..64]) <= 1e-4);
    assert_eq!(got["pooled_grid"].1, vec![4.0, 4.0, 1.0]);
}

#[test]
fn penultimate_layer_and_grid_pooling() {
    let out = tmp("clip_m2.safetensors");
    let out_s = out.to_str().unwrap();
    let o = run(&[
        "--weights",
        &fixture("clip_tiny_weights.safetensors"),
        "--config",
        &fixture("clip_tiny_config.json"),
        "--pixels",
        &fixture("clip_tiny_golden.safetensors"),
        "--layer",
        "-2",
        "--grid",
        "2",
        "--out",
        out_s,
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let got = read(&out);
    let golden = read(fixture("clip_tiny_golden.safetensors"));
    let (shape, pooled) = &got["pooled"];
    assert_eq!(shape, &vec![2, 5, 64]);
    // First pooled row = mean of patches (0,0), (0,1), (1,0), (1,1) of the penultimate layer.
    let m2 = &golden["hidden_states_m2"].1;
    let row = |p: usize| &m2[(1 + p) * 64..(2 + p) * 64];
    let want: Vec<f32> = (0..64).map(|c| (row(0)[c] + row(1)[c] + row(4)[c] + row(5)[c]) / 4.0).collect();
    assert!(max_diff(&pooled[..64], &want) <= 1e-4);
    assert_eq!(got["pooled_grid"].1, vec![2.0, 2.0, 1.0]);
}

#[test]
fn siglip_golden_and_an_image() {
    let out = tmp("siglip.safetensors");
    let out_s = out.to_str().unwrap();
    let o = run(&[
        "--weights",
        &fixture("siglip_tiny_weights.safetensors"),
        "--config",
        &fixture("siglip_tiny_config.json"),
        "--pixels",
        &fixture("siglip_tiny_golden.safetensors"),
        "--out",
        out_s,
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let got = read(&out);
    let golden = read(fixture("siglip_tiny_golden.safetensors"));
    for key in ["hidden_states.2", "last_hidden_state", "pooler_output"] {
        assert!(max_diff(&got[key].1, &golden[key].1) <= 1e-4, "{key}");
    }
    // No class token: the pooled rows are the 16 patches only.
    assert_eq!((&got["pooled"].0, &got["pooled_grid"].1), (&vec![2, 16, 64], &vec![4.0, 4.0, 0.0]));
    // An image file goes through the SigLIP processor at the tower's size.
    let o = run(&[
        "--weights",
        &fixture("siglip_tiny_weights.safetensors"),
        "--image",
        &fixture("preprocess/gradient_rgb.png"),
        "--out",
        out_s,
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(read(&out)["last_hidden_state"].0, vec![1, 16, 64]);
}

#[test]
fn bad_inputs_are_errors_not_panics() {
    let out = tmp("bad.safetensors");
    let out = out.to_str().unwrap();
    let w = fixture("clip_tiny_weights.safetensors");
    let rwkv = fixture("rwkv6_tiny_a_weights.safetensors");
    let g = fixture("clip_tiny_golden.safetensors");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--weights", &w, "--pixels", "/nonexistent.safetensors", "--out", out], "nonexistent"),
        (vec!["--weights", &w, "--image", "/nonexistent.png", "--out", out], "nonexistent.png"),
        (vec!["--weights", &w, "--pixels", &w, "--out", out], "pixel_values"),
        (vec!["--weights", &w, "--image", &w, "--out", out], "cannot decode image"),
        (vec!["--weights", &rwkv, "--pixels", &w, "--out", out], "patch_embedding"),
        (vec!["--weights", &w, "--pixels", &g, "--layer", "5", "--out", out], "out of range"),
        (vec!["--weights", &w, "--pixels", &g, "--grid", "-3", "--out", out], "grid size"),
    ];
    let cases: Vec<(Vec<&str>, &str)> =
        cases.into_iter().map(|(a, n)| ([vec!["vision-features"], a].concat(), n)).collect();
    common::assert_failures(&cases);
}

/// A JPEG goes through the decoder Pillow uses: `vision-features` on the JPEG equals
/// `vision-features` on a PNG of Pillow 11.3's decoded pixels of it (which the preprocessing and
/// tower goldens tie to Hugging Face), for baseline, progressive and greyscale files.
#[test]
fn jpeg_features_equal_features_of_pillow_decoded_pixels() {
    let golden = std::fs::read(fixture("jpeg/pillow_decoded.safetensors")).unwrap();
    let golden = safetensors::SafeTensors::deserialize(&golden).unwrap();
    for name in ["baseline_420_q75_500x333.jpg", "progressive_420_q85_321x480.jpg", "gray_q80_80x64.jpg"] {
        let t = golden.tensor(name).unwrap();
        let (h, w) = (t.shape()[0] as u32, t.shape()[1] as u32);
        let png = tmp(&format!("{name}.png"));
        image::RgbImage::from_raw(w, h, t.data().to_vec()).unwrap().save(&png).unwrap();
        let features = |image: &str, out: &str| {
            let out = tmp(out);
            let o = run(&[
                "--weights",
                &fixture("clip_tiny_weights.safetensors"),
                "--config",
                &fixture("clip_tiny_config.json"),
                "--image",
                image,
                "--out",
                out.to_str().unwrap(),
            ]);
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            read(&out)["last_hidden_state"].clone()
        };
        let from_jpeg = features(&fixture(&format!("jpeg/{name}")), "jpeg-features.safetensors");
        let from_pillow = features(png.to_str().unwrap(), "pillow-features.safetensors");
        assert_eq!(from_jpeg.0, vec![1, 17, 64], "{name}");
        let d = max_diff(&from_jpeg.1, &from_pillow.1);
        assert!(d <= 1e-6, "{name}: JPEG vs Pillow-decoded features differ by {d:e}");
    }
}
