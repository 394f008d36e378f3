//! How far one decoder's next-token distributions are from another's over a run: what a
//! quantised or half-precision weight type costs against f32 (`tests/decoder.rs` bounds it;
//! `cargo bench -p visualrwkv-rwkv` measures it on the official shapes).

use super::{Decoder, TokenId};
use crate::RwkvError;

/// The agreement of a decoder with a reference over one run (see [`agreement`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Agreement {
    /// Steps compared (the prompt's tokens and the greedy continuation).
    pub steps: usize,
    /// The largest absolute logit difference over every step and token.
    pub max_logit_error: f32,
    /// The share of steps whose most likely next token is the same.
    pub top1: f64,
    /// The mean over steps of KL(reference ‖ other) between the next-token distributions, in
    /// nats.
    pub mean_kl: f64,
}

/// Runs `reference` and `other` side by side from zero states, one token at a time: the tokens
/// of `prompt`, then `continuation` more chosen greedily by the reference (both read the same
/// tokens), and compares the logits of every step.
///
/// An error when the two decoders' configurations differ, `prompt` is empty or a token is out
/// of the vocabulary.
pub fn agreement(
    reference: &Decoder,
    other: &Decoder,
    prompt: &[TokenId],
    continuation: usize,
) -> Result<Agreement, RwkvError> {
    let (a, b) = (reference.config(), other.config());
    if a != b {
        let dims = |c: &crate::LmConfig| {
            let d = c.dims();
            vec![d.n_layer, d.n_embd, d.vocab_size]
        };
        return Err(RwkvError::Shape {
            what: "the compared decoder (layers, width, vocabulary)".into(),
            expected: dims(a),
            found: dims(b),
        });
    }
    let Some(&first) = prompt.first() else {
        return Err(RwkvError::EmptyInput { what: "agreement prompt", shape: vec![0] });
    };
    let (mut ra, mut rb) = (reference.zero_state(), other.zero_state());
    let (mut max, mut same, mut kl) = (0f32, 0usize, 0f64);
    let steps = prompt.len() + continuation;
    let mut token = first;
    for i in 0..steps {
        let (p, q) = (reference.step(token, &mut ra)?, other.step(token, &mut rb)?);
        max = p.iter().zip(&q).fold(max, |m, (x, y)| m.max((x - y).abs()));
        same += usize::from(argmax(&p) == argmax(&q));
        let (lp, lq) = (log_softmax(&p), log_softmax(&q));
        kl += lp.iter().zip(&lq).map(|(p, q)| p.exp() * (p - q)).sum::<f64>();
        token = prompt.get(i + 1).copied().unwrap_or(argmax(&p) as TokenId);
    }
    Ok(Agreement { steps, max_logit_error: max, top1: same as f64 / steps as f64, mean_kl: kl / steps as f64 })
}

/// The index of the largest value (the first of equals).
fn argmax(v: &[f32]) -> usize {
    v.iter().enumerate().fold((0, f32::NEG_INFINITY), |best, (i, &x)| if x > best.1 { (i, x) } else { best }).0
}

/// `log softmax(v)` in f64.
fn log_softmax(v: &[f32]) -> Vec<f64> {
    let m = v.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let z = v.iter().map(|&x| (x as f64 - m).exp()).sum::<f64>().ln() + m;
    v.iter().map(|&x| x as f64 - z).collect()
}
