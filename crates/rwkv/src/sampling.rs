//! Sampling as the official pipeline (`rwkv.utils.PIPELINE`) does it, with a seeded RNG.
//!
//! Per step: penalties are subtracted from the logits (`presence + count · frequency` for every
//! token seen so far, counts decaying by `penalty_decay` each step; whitespace and digit tokens
//! count 0), then:
//!
//! - `temperature == 0`: greedy (argmax);
//! - otherwise `probs = softmax(logits)`; the top-p cutoff is the probability at which the sorted
//!   cumulative sum first reaches `top_p`, and every probability below it is zeroed; with
//!   `top_k > 0` only the `top_k` most likely tokens are kept; `probs ← probs^(1/temperature)`,
//!   renormalised, and one token drawn.

use std::collections::HashMap;

/// Sampling options (the pipeline's `PIPELINE_ARGS`).
#[derive(Clone, Debug, PartialEq)]
pub struct SamplingOptions {
    /// 0 = greedy.
    pub temperature: f32,
    /// Nucleus threshold in (0, 1]; 1 keeps everything.
    pub top_p: f32,
    /// Keep the `top_k` most likely tokens; 0 = no limit.
    pub top_k: usize,
    /// Subtracted once from the logit of every token already generated.
    pub presence_penalty: f32,
    /// Subtracted per (decayed) occurrence.
    pub frequency_penalty: f32,
    /// Occurrence counts are multiplied by this every step.
    pub penalty_decay: f32,
    /// Seed of the RNG.
    pub seed: u64,
}

impl Default for SamplingOptions {
    /// Greedy decoding, no penalties.
    fn default() -> Self {
        Self {
            temperature: 0.0,
            top_p: 1.0,
            top_k: 0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            penalty_decay: 0.996,
            seed: 0,
        }
    }
}

/// A sampling option out of its range.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum SamplingError {
    /// `temperature` negative or not finite.
    #[error("temperature must be >= 0, got {0}")]
    Temperature(f32),
    /// `top_p` outside (0, 1].
    #[error("top_p must be in (0, 1], got {0}")]
    TopP(f32),
    /// `penalty_decay` outside [0, 1].
    #[error("penalty_decay must be in [0, 1], got {0}")]
    PenaltyDecay(f32),
}

impl SamplingOptions {
    /// Checks the ranges of the options.
    pub fn validate(&self) -> Result<(), SamplingError> {
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return Err(SamplingError::Temperature(self.temperature));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(SamplingError::TopP(self.top_p));
        }
        if !(self.penalty_decay >= 0.0 && self.penalty_decay <= 1.0) {
            return Err(SamplingError::PenaltyDecay(self.penalty_decay));
        }
        Ok(())
    }
}

/// A sampler: options, penalty state and a deterministic RNG (SplitMix64).
#[derive(Clone, Debug)]
pub struct Sampler {
    options: SamplingOptions,
    occurrence: HashMap<usize, f32>,
    rng: u64,
}

impl Sampler {
    /// A sampler with fresh penalty counts.
    pub fn new(options: SamplingOptions) -> Self {
        let rng = options.seed;
        Self { options, occurrence: HashMap::new(), rng }
    }

    /// The options.
    pub fn options(&self) -> &SamplingOptions {
        &self.options
    }

    fn uniform(&mut self) -> f32 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Picks the next token from `logits` (one row, length V), applying the penalties.
    pub fn sample(&mut self, logits: &[f32]) -> usize {
        self.sample_allowed(logits, |_| true)
    }

    /// [`Sampler::sample`] over the ids `allowed` accepts only (the others count as `−∞`): a
    /// model whose head has more rows than its tokenizer has tokens (RWKV World: 65 536 rows,
    /// ids 1..=65 529 spelt) never picks an id the tokenizer cannot spell. When `allowed`
    /// accepts no id, the unrestricted argmax is returned.
    pub fn sample_allowed(&mut self, logits: &[f32], allowed: impl Fn(usize) -> bool) -> usize {
        let mut logits = logits.to_vec();
        let o = &self.options;
        for (&tok, &count) in &self.occurrence {
            if let Some(l) = logits.get_mut(tok) {
                *l -= o.presence_penalty + count * o.frequency_penalty;
            }
        }
        let mut any = false;
        for (i, l) in logits.iter_mut().enumerate() {
            if allowed(i) {
                any = true;
            } else {
                *l = f32::NEG_INFINITY;
            }
        }
        if !any {
            return sample_logits(&logits, 0.0, 1.0, 0, 0.0);
        }
        sample_logits(&logits, o.temperature, o.top_p, o.top_k, self.uniform())
    }

    /// Records a generated token for the penalties; `weight` is 0 for whitespace and digit tokens
    /// (as the pipeline does) and 1 otherwise.
    pub fn record(&mut self, token: usize, weight: f32) {
        for c in self.occurrence.values_mut() {
            *c *= self.options.penalty_decay;
        }
        *self.occurrence.entry(token).or_insert(0.0) += weight;
    }
}

/// The pipeline's `sample_logits` with a given uniform draw `u` in `[0, 1)`.
pub fn sample_logits(logits: &[f32], temperature: f32, top_p: f32, top_k: usize, u: f32) -> usize {
    let argmax = || {
        logits.iter().enumerate().fold((0, f32::NEG_INFINITY), |best, (i, &l)| if l > best.1 { (i, l) } else { best }).0
    };
    if temperature == 0.0 || logits.is_empty() {
        return argmax();
    }
    let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let mut probs: Vec<f64> = logits.iter().map(|&l| ((l - max) as f64).exp()).collect();
    let total: f64 = probs.iter().sum();
    probs.iter_mut().for_each(|p| *p /= total);
    let mut order: Vec<usize> = (0..probs.len()).collect();
    order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
    let mut cum = 0.0;
    let mut cutoff = probs[order[order.len() - 1]];
    for &i in &order {
        cum += probs[i];
        if cum >= top_p as f64 {
            cutoff = probs[i];
            break;
        }
    }
    for p in probs.iter_mut() {
        if *p < cutoff {
            *p = 0.0;
        }
    }
    if top_k > 0 && top_k < order.len() {
        for &i in &order[top_k..] {
            probs[i] = 0.0;
        }
    }
    if temperature != 1.0 {
        let inv = 1.0 / temperature as f64;
        probs.iter_mut().for_each(|p| *p = p.powf(inv));
    }
    let total: f64 = probs.iter().sum();
    if total.is_nan() || total <= 0.0 || !total.is_finite() {
        return argmax();
    }
    let target = u as f64 * total;
    let mut acc = 0.0;
    for (i, &p) in probs.iter().enumerate() {
        acc += p;
        if acc > target && p > 0.0 {
            return i;
        }
    }
    order[0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disallowed_ids_are_never_drawn() {
        // The largest logits sit at ids 4 and 5, which the tokenizer cannot spell.
        let logits = [0.5, 1.0, 0.8, 0.2, 9.0, 8.0];
        let mut greedy = Sampler::new(SamplingOptions::default());
        assert_eq!(greedy.sample(&logits), 4);
        assert_eq!(greedy.sample_allowed(&logits, |i| i < 4), 1);
        let options = SamplingOptions { temperature: 1.0, top_p: 1.0, seed: 3, ..SamplingOptions::default() };
        let mut s = Sampler::new(options);
        for _ in 0..200 {
            assert!(s.sample_allowed(&logits, |i| i < 4) < 4);
        }
    }

    #[test]
    fn greedy_and_top_p_top_k() {
        let logits = [0.0, 3.0, 1.0, 2.0];
        assert_eq!(sample_logits(&logits, 0.0, 1.0, 0, 0.5), 1);
        // top_k = 1 always gives the argmax, whatever the draw.
        for u in [0.0, 0.3, 0.99] {
            assert_eq!(sample_logits(&logits, 1.0, 1.0, 1, u), 1);
        }
        // Tiny top_p keeps only the most likely token.
        assert_eq!(sample_logits(&logits, 1.0, 0.01, 0, 0.99), 1);
        // Full distribution: the draw walks the probabilities in id order.
        let p: Vec<f64> = logits.iter().map(|&l: &f32| (l as f64).exp()).collect();
        let z: f64 = p.iter().sum();
        assert_eq!(sample_logits(&logits, 1.0, 1.0, 0, 0.0), 0);
        assert_eq!(sample_logits(&logits, 1.0, 1.0, 0, ((p[0] + 0.001) / z) as f32), 1);
        assert_eq!(sample_logits(&logits, 1.0, 1.0, 0, ((p[0] + p[1] + 0.001) / z) as f32), 2);
        assert_eq!(sample_logits(&logits, 1.0, 1.0, 0, 0.9999), 3);
    }

    #[test]
    fn penalties_follow_the_pipeline() {
        let mut s =
            Sampler::new(SamplingOptions { presence_penalty: 1.0, frequency_penalty: 0.5, ..Default::default() });
        s.record(1, 1.0);
        s.record(1, 1.0); // count 0.996 + 1
        s.record(2, 0.0); // whitespace-like: present with weight 0
        // token 1: 3.0 - (1 + 1.996·0.996·0.5) ≈ 1.006; token 2: 2.9 - 1 = 1.9; token 3: 1.5
        assert_eq!(s.sample(&[0.0, 3.0, 2.9, 1.5]), 2);
    }

    #[test]
    fn seeded_sampling_is_reproducible() {
        let logits: Vec<f32> = (0..50).map(|i| (i as f32 * 0.37).sin()).collect();
        let opts = SamplingOptions { temperature: 1.0, top_p: 0.9, seed: 42, ..Default::default() };
        let run = || {
            let mut s = Sampler::new(opts.clone());
            (0..20).map(|_| s.sample(&logits)).collect::<Vec<_>>()
        };
        assert_eq!(run(), run());
        assert!(run().iter().collect::<std::collections::HashSet<_>>().len() > 1);
        assert!(SamplingOptions { top_p: 0.0, ..Default::default() }.validate().is_err());
        assert!(SamplingOptions { temperature: -1.0, ..Default::default() }.validate().is_err());
    }
}
