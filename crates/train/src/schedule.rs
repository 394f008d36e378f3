//! The learning-rate schedule of the reference trainer (docs/model.md §6): linear warmup, then cosine
//! from `lr_init` to `lr_final`. The same rate goes to every parameter group (the reference sets
//! it only for the groups without weight decay — docs/model.md §8 — which this does not copy).

/// Warmup + cosine decay.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LrSchedule {
    /// Rate at the end of warmup.
    pub lr_init: f64,
    /// Rate at the last step.
    pub lr_final: f64,
    /// Warmup steps (0 = none).
    pub warmup: usize,
    /// Total steps.
    pub total: usize,
}

impl LrSchedule {
    /// The rate at `step` (0-based):
    /// `progress = clamp((step − warmup + 1) / (total − warmup), 0, 1)`,
    /// `lr = lr_final + (lr_init − lr_final) · ½ (1 + cos(π · progress))`, times
    /// `0.1 + 0.9 · step / warmup` during warmup. Constant when `lr_final == lr_init`.
    pub fn lr(&self, step: usize) -> f64 {
        let lr = if self.lr_final == self.lr_init {
            self.lr_init
        } else {
            let span = self.total.saturating_sub(self.warmup).max(1) as f64;
            let progress = ((step as f64 - self.warmup as f64 + 1.0) / span).clamp(0.0, 1.0);
            self.lr_final + (self.lr_init - self.lr_final) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
        };
        if step < self.warmup { lr * (0.1 + 0.9 * step as f64 / self.warmup as f64) } else { lr }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_cosine() {
        let s = LrSchedule { lr_init: 1e-3, lr_final: 1e-5, warmup: 10, total: 110 };
        assert!((s.lr(0) - 1e-3 * 0.1).abs() < 1e-12);
        assert!((s.lr(5) - 1e-3 * 0.55).abs() < 1e-12);
        // progress = (step - 10 + 1) / 100: half way at step 59.
        assert!((s.lr(59) - (1e-5 + (1e-3 - 1e-5) * 0.5)).abs() < 1e-12);
        assert!((s.lr(109) - 1e-5).abs() < 1e-12);
        assert!((s.lr(500) - 1e-5).abs() < 1e-12);
        let constant = LrSchedule { lr_init: 2e-5, lr_final: 2e-5, warmup: 0, total: 10 };
        assert_eq!(constant.lr(7), 2e-5);
        let no_warmup = LrSchedule { lr_init: 1e-3, lr_final: 1e-5, warmup: 0, total: 2 };
        assert!((no_warmup.lr(0) - (1e-5 + (1e-3 - 1e-5) * 0.5)).abs() < 1e-12);
    }
}
