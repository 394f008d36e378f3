//! 100 000-token sequences with decays at the extremes (`w_raw` in [−20, 5]: channels that never
//! forget next to channels that forget at once) from a non-zero initial state: through the fused
//! decoder (f32 and bf16 weights) and the burn model, every output and state stays finite, one pass
//! equals the same sequence split into chunks with the state carried between them, the two
//! implementations agree, and decoding keeps a state whose size does not depend on the length.

use burn::backend::NdArray;
use burn::module::Param;
use burn::tensor::{Int, Tensor, TensorData};
use visualrwkv_rwkv::{Decoder, HostState, Rwkv, RwkvConfig, WeightDtype, seeded};

type B = NdArray;

const T: usize = 100_000;

fn config() -> RwkvConfig {
    RwkvConfig { n_layer: 2, n_embd: 32, n_head: 4, head_size: 8, dim_ffn: 112, vocab_size: 97, d_mix: 4, d_decay: 8 }
}

/// A small deterministic generator (xorshift) for inputs, decays and states.
struct Rng(u64);

impl Rng {
    fn unit(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 40) as f32 / (1u64 << 24) as f32
    }

    fn range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.unit()
    }
}

/// A random model whose base decays span [−20, 5], the first and last channel of every layer at
/// the two ends exactly.
fn model(rng: &mut Rng) -> Rwkv<B> {
    let dev = Default::default();
    let mut m = seeded::<B, _>(&dev, 5, || config().init::<B>(&dev));
    let c = config().n_embd;
    for block in &mut m.blocks {
        let mut w: Vec<f32> = (0..c).map(|_| rng.range(-20.0, 5.0)).collect();
        (w[0], w[c - 1]) = (-20.0, 5.0);
        block.att.decay.base = Param::from_tensor(Tensor::from_data(TensorData::new(w, [c]), &dev));
    }
    m
}

/// A non-zero state: shift rows in [−1, 1], WKV states in [−2, 2].
fn state(rng: &mut Rng) -> HostState {
    let mut s = HostState::zeros(&config());
    for l in &mut s.layers {
        for v in l.att_shift.iter_mut().chain(l.ffn_shift.iter_mut()) {
            *v = rng.range(-1.0, 1.0);
        }
        for v in &mut l.wkv {
            *v = rng.range(-2.0, 2.0);
        }
    }
    s
}

/// The largest absolute difference over the largest magnitude of `want` (at least 1).
fn relative(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(1.0f32, |m, v| m.max(v.abs()));
    got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max) / scale
}

fn finite(what: &str, v: &[f32]) {
    assert!(v.iter().all(|x| x.is_finite()), "{what}: not finite");
}

/// Logits and every state tensor of `got` within 1e-4 (relative) of `want`.
fn close(what: &str, got: (&[f32], &HostState), want: (&[f32], &HostState)) {
    let mut worst = relative(got.0, want.0);
    for (a, b) in got.1.layers.iter().zip(&want.1.layers) {
        worst = worst
            .max(relative(&a.wkv, &b.wkv))
            .max(relative(&a.att_shift, &b.att_shift))
            .max(relative(&a.ffn_shift, &b.ffn_shift));
    }
    assert!(worst <= 1e-4, "{what}: relative difference {worst:e}");
}

fn all_finite(what: &str, logits: &[f32], s: &HostState) {
    finite(what, logits);
    for l in &s.layers {
        finite(what, &l.wkv);
        finite(what, &l.att_shift);
        finite(what, &l.ffn_shift);
    }
}

/// Uneven chunk boundaries covering `0..T`.
const CUTS: [usize; 6] = [0, 1, 4_097, 33_333, 64_000, 99_999];

fn chunks() -> impl Iterator<Item = std::ops::Range<usize>> {
    CUTS.iter().zip(CUTS.iter().skip(1).chain(std::iter::once(&T))).map(|(&a, &b)| a..b)
}

/// The burn model over `tokens` from `start`, in chunks of `chunks`: the last logits and the state.
fn burn_run(
    m: &Rwkv<B>,
    tokens: &[u32],
    start: &HostState,
    chunks: impl IntoIterator<Item = std::ops::Range<usize>>,
) -> (Vec<f32>, HostState) {
    let dev = Default::default();
    let mut s = start.to_state::<B>(&config(), &dev).unwrap();
    let mut logits = Vec::new();
    for r in chunks {
        let ids: Vec<i64> = tokens[r.clone()].iter().map(|&t| t as i64).collect();
        let x = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [1, r.len()]), &dev);
        let out = m.forward(x, Some(&s)).unwrap();
        let v = config().vocab_size;
        logits = out.logits.slice([0..1, r.len() - 1..r.len(), 0..v]).into_data().convert::<f32>().into_vec().unwrap();
        s = out.state;
    }
    (logits, HostState::from_state(&s, 0).unwrap())
}

#[test]
fn a_100k_token_sequence_stays_finite_and_chunking_changes_nothing() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let m = model(&mut rng);
    let start = state(&mut rng);
    let tokens: Vec<u32> = (0..T).map(|_| (rng.unit() * config().vocab_size as f32) as u32 % 97).collect();

    for dtype in [WeightDtype::F32, WeightDtype::Bf16, WeightDtype::I8, WeightDtype::Q4] {
        let dec = Decoder::new(&m, dtype).unwrap();
        // One pass.
        let mut one = start.clone();
        let logits = dec.prefill(&tokens, &mut one).unwrap();
        all_finite(&format!("{dtype:?} one pass"), &logits, &one);
        // The same tokens in uneven chunks, the state carried between them.
        let mut carried = start.clone();
        let mut last = Vec::new();
        for r in chunks() {
            last = dec.prefill(&tokens[r], &mut carried).unwrap();
        }
        close(&format!("{dtype:?} chunks"), (&last, &carried), (&logits, &one));
        // Decoding the last 2 000 tokens one at a time from the state before them: the same
        // result, and a state of the same size as the zero state's whatever the length.
        let mut stepped = start.clone();
        dec.prefill(&tokens[..T - 2_000], &mut stepped).unwrap();
        let mut last = Vec::new();
        for &t in &tokens[T - 2_000..] {
            last = dec.step(t, &mut stepped).unwrap();
        }
        close(&format!("{dtype:?} steps"), (&last, &stepped), (&logits, &one));
        assert_eq!(stepped.layers.len(), config().n_layer);
        for l in &stepped.layers {
            let zero = &dec.zero_state().layers[0];
            assert_eq!(
                (l.wkv.len(), l.att_shift.len(), l.ffn_shift.len()),
                (zero.wkv.len(), zero.att_shift.len(), zero.ffn_shift.len())
            );
        }
        if dtype == WeightDtype::F32 {
            // The burn model: one pass, chunks, and the fused decoder's result.
            let (b_logits, b_state) = burn_run(&m, &tokens, &start, std::iter::once(0..T));
            all_finite("burn one pass", &b_logits, &b_state);
            let (c_logits, c_state) = burn_run(&m, &tokens, &start, chunks());
            close("burn chunks", (&c_logits, &c_state), (&b_logits, &b_state));
            close("fused vs burn", (&logits, &one), (&b_logits, &b_state));
        }
    }
}
