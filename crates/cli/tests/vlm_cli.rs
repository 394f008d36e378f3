//! `visualrwkv vlm-logits` and `visualrwkv chat` on the tiny fixture RWKV-6 + the tiny CLIP + a
//! projector: separate files == one VisualRWKV checkpoint == the library, the sequence layout
//! (`tokens`, `image_span`), and errors as messages.

mod common;

use std::collections::HashMap;

use burn::backend::NdArray;
use common::{fixture, projector_file, read_all, run, tmp_str as tmp};
use visualrwkv_checkpoint::{TensorMap, write_safetensors};

const IMAGE: &str = "preprocess/noise_rgb.png";

#[test]
fn vlm_logits_from_parts_and_from_one_checkpoint_agree_with_the_library() {
    let proj = projector_file("proj.safetensors");
    let out = tmp("parts.safetensors");
    let rwkv = fixture("rwkv6_tiny_a_weights.safetensors");
    let vision = fixture("clip_tiny_weights.safetensors");
    let image = fixture(IMAGE);
    let args = ["--question", "What is here?", "--scan", "bi", "--prompt", "sandwich"];
    let mut parts =
        vec!["vlm-logits", "--rwkv", &rwkv, "--vision", &vision, "--proj", &proj, "--image", &image, "--out", &out];
    parts.extend(args);
    let o = run(&parts);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (f, i) = read_all(&out);
    let tokens = &i["tokens"];
    let span = &i["image_span"];
    assert_eq!(span[1] - span[0], 17, "16 patches + CLS");
    assert!(tokens[span[0] as usize..span[1] as usize].iter().all(|&t| t == -200));
    assert_eq!(tokens.iter().filter(|&&t| t == -200).count(), 17);
    // The byte-level World ids: "User: What is here?\n" starts with U, s, e, r (byte + 1).
    assert_eq!(&tokens[..4], &[86, 116, 102, 115]);
    assert_eq!(f["logits"].0, vec![tokens.len(), 256]);

    // The same model as one VisualRWKV checkpoint (rwkv.*, vit.vision_model.*, proj.weight).
    let mut all = HashMap::new();
    for (prefix, file) in [("rwkv.", rwkv.as_str()), ("vit.", vision.as_str()), ("", proj.as_str())] {
        for (k, v) in TensorMap::read_safetensors(file).unwrap().tensors {
            all.insert(format!("{prefix}{k}"), v);
        }
    }
    let ckpt = tmp("visualrwkv.safetensors");
    write_safetensors(&TensorMap { origin: "ckpt".into(), tensors: all.clone() }, &ckpt).unwrap();
    let out2 = tmp("ckpt.safetensors");
    let mut one = vec!["vlm-logits", "--checkpoint", &ckpt, "--image", &image, "--out", &out2];
    one.extend(args);
    let o = run(&one);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(read_all(&out2).0["logits"], f["logits"]);

    // The library on the same inputs.
    let dev = Default::default();
    let m =
        visualrwkv::VisualRwkv::<NdArray>::load_parts(&rwkv, &vision, None, &proj, Default::default(), &dev).unwrap();
    let proc = visualrwkv_vision::ImageProcessor::for_tower(&m.vision.config);
    let img = m.encode_images(proc.batch(&[proc.open(&image).unwrap()], &dev).unwrap()).unwrap().remove(0);
    let conv = visualrwkv_prompt::Conversation::question("What is here?");
    let prompt = visualrwkv_prompt::build(
        &conv,
        &visualrwkv_prompt::Sandwich,
        visualrwkv_tokenizer::Tokenizer::world_bytes(),
        true,
        true,
    )
    .unwrap();
    let sample = visualrwkv::Sample::new(&prompt, Some(img));
    assert_eq!(&sample.row_tokens(), tokens);
    let lib =
        m.forward(&[sample], &visualrwkv_scan::BiDirectional).unwrap().remove(0).into_data().into_vec::<f32>().unwrap();
    let d = lib.iter().zip(&f["logits"].1).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    assert!(d <= 1e-5, "{d}");

    // A stray key in the combined checkpoint is named.
    all.insert("optimizer.step".into(), (vec![1], vec![0.0]));
    write_safetensors(&TensorMap { origin: "ckpt".into(), tensors: all }, &ckpt).unwrap();
    let o = run(&one);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("unexpected key `optimizer.step`"));
}

#[test]
fn chat_streams_an_answer() {
    let proj = projector_file("proj.safetensors");
    let o = run(&[
        "chat",
        "--rwkv",
        &fixture("rwkv6_tiny_a_weights.safetensors"),
        "--vision",
        &fixture("clip_tiny_weights.safetensors"),
        "--proj",
        &proj,
        "--image",
        &fixture(IMAGE),
        "--question",
        "Describe it.",
        "--scan",
        "multi",
        "--prompt",
        "first",
        "--max-tokens",
        "5",
        "--temperature",
        "0",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn bad_vlm_inputs_are_messages() {
    let proj = projector_file("proj.safetensors");
    let rwkv = fixture("rwkv6_tiny_a_weights.safetensors");
    let vision = fixture("clip_tiny_weights.safetensors");
    let narrow = tmp("narrow.safetensors");
    let map = TensorMap {
        origin: "p".into(),
        tensors: HashMap::from([("weight".to_string(), (vec![128, 32], vec![0.0; 128 * 32]))]),
    };
    write_safetensors(&map, &narrow).unwrap();
    let image = fixture(IMAGE);
    let out = tmp("bad.safetensors");
    let golden = fixture("clip_tiny_golden.safetensors");
    fn with<'a>(base: &[&'a str], extra: &[&'a str]) -> Vec<&'a str> {
        base.iter().chain(extra).copied().collect()
    }
    let common = [
        "vlm-logits",
        "--rwkv",
        rwkv.as_str(),
        "--vision",
        vision.as_str(),
        "--proj",
        proj.as_str(),
        "--out",
        out.as_str(),
    ];
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            with(&common, &["--image", &image, "--question", "x", "--scan", "spiral"]),
            "invalid value 'spiral' for '--scan",
        ),
        (
            with(&common, &["--image", &image, "--question", "x", "--prompt", "middle-out"]),
            "invalid value 'middle-out' for '--prompt",
        ),
        (with(&common, &["--image", &image, "--question", "  "]), "question is empty"),
        (with(&common, &["--image", &image, "--question", "x", "--max-context", "10"]), "--max-context"),
        (with(&common, &["--image", &image, "--question", "x", "--tokenizer", "world"]), "ids 256..=65529 are missing"),
        (with(&common, &["--pixels", &golden, "--question", "x"]), "one image per conversation"),
        (with(&common, &["--image", &image, "--question", "two <image> tags"]), "placeholders"),
        (
            vec![
                "vlm-logits",
                "--rwkv",
                &rwkv,
                "--vision",
                &vision,
                "--proj",
                &narrow,
                "--image",
                &image,
                "--question",
                "x",
                "--out",
                &out,
            ],
            "the projector maps 32 → 128",
        ),
    ];
    common::assert_failures(&cases);
}

/// `vlm-logits --device wgpu` (cubecl kernels; Mesa's software Vulkan in CI) equals `--device cpu`,
/// and `chat --device wgpu` answers with the model's tensor ops.
#[cfg(feature = "wgpu")]
#[test]
fn vlm_logits_on_wgpu_equal_the_cpu() {
    let proj = projector_file("proj.safetensors");
    let rwkv = fixture("rwkv6_tiny_a_weights.safetensors");
    let vision = fixture("clip_tiny_weights.safetensors");
    let image = fixture(IMAGE);
    let mut logits = Vec::new();
    for device in ["cpu", "wgpu"] {
        let out = tmp(&format!("device-{device}.safetensors"));
        let o = run(&[
            "vlm-logits",
            "--rwkv",
            &rwkv,
            "--vision",
            &vision,
            "--proj",
            &proj,
            "--image",
            &image,
            "--question",
            "What is here?",
            "--scan",
            "multi",
            "--out",
            &out,
            "--device",
            device,
        ]);
        assert!(o.status.success(), "{device}: {}", String::from_utf8_lossy(&o.stderr));
        let (f, i) = read_all(&out);
        logits.push((f["logits"].clone(), i["tokens"].clone()));
    }
    let ((cpu, cpu_tokens), (gpu, gpu_tokens)) = (&logits[0], &logits[1]);
    assert_eq!(cpu.0, gpu.0, "shapes");
    assert_eq!(cpu_tokens, gpu_tokens);
    let d = common::max_diff(&cpu.1, &gpu.1);
    eprintln!("vlm-logits wgpu vs cpu: max diff {d:e}");
    assert!(d <= 1e-4, "wgpu vs cpu logits differ by {d}");

    let chat = |device: &str| {
        let o = run(&[
            "chat",
            "--rwkv",
            &rwkv,
            "--vision",
            &vision,
            "--proj",
            &proj,
            "--image",
            &image,
            "--question",
            "Describe it.",
            "--max-tokens",
            "4",
            "--temperature",
            "0",
            "--device",
            device,
        ]);
        assert!(o.status.success(), "{device}: {}", String::from_utf8_lossy(&o.stderr));
        o.stdout
    };
    assert_eq!(chat("wgpu"), chat("cpu"), "greedy answers on wgpu and the CPU");
}

/// Devices and dtypes that this build or machine cannot run are one-line errors, never panics.
#[test]
fn unusable_devices_are_messages() {
    let proj = projector_file("proj.safetensors");
    let rwkv = fixture("rwkv6_tiny_a_weights.safetensors");
    let vision = fixture("clip_tiny_weights.safetensors");
    let image = fixture(IMAGE);
    let out = tmp("dev.safetensors");
    let base = [
        "vlm-logits",
        "--rwkv",
        &rwkv,
        "--vision",
        &vision,
        "--proj",
        &proj,
        "--image",
        &image,
        "--question",
        "x",
        "--out",
        &out,
    ];
    let with = |extra: &[&'static str]| base.iter().copied().chain(extra.iter().copied()).collect::<Vec<&str>>();
    let mut cases: Vec<(Vec<&str>, &str)> = vec![
        (with(&["--device", "tpu"]), "unknown device `tpu`"),
        (with(&["--device", "cpu", "--dtype", "f16"]), "not supported on cpu"),
        (with(&["--device", "wgpu", "--dtype", "bf16"]), "not supported on wgpu"),
        (vec!["demo", "--devices", "cpu,wgpu", "--steps", "1"], "mixes cpu and wgpu"),
    ];
    if cfg!(feature = "wgpu") {
        cases.push((vec!["demo", "--devices", "wgpu,wgpu:0", "--steps", "1"], "not possible with burn 0.21"));
        cases.push((vec!["demo", "--devices", "cuda:1,cuda:1"], "twice"));
        cases.push((
            vec![
                "chat",
                "--rwkv",
                &rwkv,
                "--vision",
                &vision,
                "--proj",
                &proj,
                "--image",
                &image,
                "--question",
                "x",
                "--device",
                "wgpu",
                "--decoder",
                "bf16",
            ],
            "fused CPU decoder",
        ));
    }
    if cfg!(not(feature = "cuda")) {
        cases.push((with(&["--device", "cuda"]), "built without the `cuda` feature"));
    }
    common::assert_failures(&cases);
}
