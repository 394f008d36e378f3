//! The training loss (docs/model.md §6): next-token cross-entropy with ignore index −100, reduced per
//! sample (sum over the sample's valid labels ÷ their count, at least 1), then averaged over the
//! batch; and L2Wrap, which leaves the loss value unchanged and adds `max_logit · factor` to the
//! gradient of each position's largest logit.
//!
//! # Shapes
//!
//! Per sample: logits `[T, V]` (row `p` predicts the label at `p + 1`), labels `T` ids aligned
//! with the rows (image rows and prompt tokens are −100).

use burn::tensor::activation::log_softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};

/// Label value ignored by the loss.
pub const IGNORE_INDEX: i64 = -100;

/// Errors of the loss.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum LossError {
    /// A sample's labels and logit rows differ in number.
    #[error("loss: {labels} labels for {rows} logit rows")]
    Rows {
        /// Labels.
        labels: usize,
        /// Logit rows.
        rows: usize,
    },
    /// A label outside the vocabulary.
    #[error("loss: label {label} outside the vocabulary of {vocab}")]
    Label {
        /// The label.
        label: i64,
        /// The vocabulary size.
        vocab: usize,
    },
    /// A batch whose logits and labels differ in count, or an empty one.
    #[error("loss: {logits} logit tensors for {labels} label rows")]
    Batch {
        /// Logit tensors.
        logits: usize,
        /// Label rows.
        labels: usize,
    },
    /// A sample without logit rows (L2Wrap).
    #[error("L2Wrap: sample {0} has no logit rows")]
    EmptySample(usize),
}

/// Cross-entropy of one sample: the mean over valid targets of `−log softmax(logits[p])[label[p+1]]`
/// (a scalar `[1]`; 0 with a zero gradient when no label is valid).
pub fn sample_loss<B: Backend>(logits: Tensor<B, 2>, labels: &[i64]) -> Result<Tensor<B, 1>, LossError> {
    let [t, v] = logits.dims();
    if labels.len() != t {
        return Err(LossError::Rows { labels: labels.len(), rows: t });
    }
    let targets: Vec<(usize, i64)> =
        labels.iter().skip(1).enumerate().filter(|(_, l)| **l != IGNORE_INDEX).map(|(p, &l)| (p, l)).collect();
    if let Some((_, l)) = targets.iter().find(|(_, l)| *l < 0 || *l as usize >= v) {
        return Err(LossError::Label { label: *l, vocab: v });
    }
    let device = logits.device();
    if targets.is_empty() {
        return Ok(logits.sum().mul_scalar(0.0));
    }
    let rows: Vec<i64> = targets.iter().map(|(p, _)| *p as i64).collect();
    let ids: Vec<i64> = targets.iter().map(|(_, l)| *l).collect();
    let n = rows.len();
    let rows = Tensor::<B, 1, Int>::from_data(TensorData::new(rows, [n]), &device);
    let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [n, 1]), &device);
    let picked = log_softmax(logits.select(0, rows), 1).gather(1, ids);
    Ok(picked.sum().neg().div_scalar(n as f64))
}

/// The batch loss: the mean of [`sample_loss`] over the samples.
pub fn batch_loss<B: Backend>(logits: &[Tensor<B, 2>], labels: &[Vec<i64>]) -> Result<Tensor<B, 1>, LossError> {
    if logits.is_empty() || logits.len() != labels.len() {
        return Err(LossError::Batch { logits: logits.len(), labels: labels.len() });
    }
    let losses = logits.iter().zip(labels).map(|(x, l)| sample_loss(x.clone(), l)).collect::<Result<Vec<_>, _>>()?;
    Ok(Tensor::cat(losses, 0).mean())
}

/// L2Wrap: a term whose value is 0 and whose gradient adds `max_logit · factor` to each row's
/// largest logit (`factor = 1e-4 / (B · T)` in the reference, `B · T` the padded batch's rows).
/// Add it to the loss before `backward`. Errors on an empty batch or a sample without rows.
pub fn l2wrap<B: Backend>(logits: &[Tensor<B, 2>], factor: f64) -> Result<Tensor<B, 1>, LossError> {
    if logits.is_empty() {
        return Err(LossError::Batch { logits: 0, labels: 0 });
    }
    if let Some(i) = logits.iter().position(|x| x.dims()[0] == 0 || x.dims()[1] == 0) {
        return Err(LossError::EmptySample(i));
    }
    let terms: Vec<Tensor<B, 1>> = logits
        .iter()
        .map(|x| {
            // d/dm (m² · f/2) = f · m at the argmax (max_dim routes the gradient there).
            let half_sq = x.clone().max_dim(1).powi_scalar(2).sum().mul_scalar(factor / 2.0);
            half_sq.clone() - half_sq.detach()
        })
        .collect();
    Ok(Tensor::cat(terms, 0).sum())
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, NdArray};

    type A = Autodiff<NdArray>;

    fn logits(v: Vec<f32>, t: usize, n: usize) -> Tensor<A, 2> {
        Tensor::from_data(TensorData::new(v, [t, n]), &Default::default())
    }

    #[test]
    fn cross_entropy_shifts_masks_and_averages_per_sample() {
        // Sample 1: rows 0 and 2 predict labels 1 and 0 (row 1's target is ignored).
        let x1 = [0.0f32, 1.0, 2.0, 1.0, 1.0, 1.0, 3.0, 0.0, 0.0, 5.0, 5.0, 5.0];
        let l1 = vec![IGNORE_INDEX, 1, IGNORE_INDEX, 0];
        let lse = |r: &[f32]| r.iter().map(|v| (*v as f64).exp()).sum::<f64>().ln();
        let ce_a = lse(&x1[0..3]) - 1.0;
        let ce_b = lse(&x1[6..9]) - 3.0;
        let want1 = (ce_a + ce_b) / 2.0;
        // Sample 2: one target.
        let x2 = [0.5f32, -0.5, 0.0, 0.0, 0.0, 0.0];
        let l2 = vec![7, 2];
        let want2 = lse(&x2[0..3]) - 0.0;
        let got = batch_loss(&[logits(x1.to_vec(), 4, 3), logits(x2.to_vec(), 2, 3)], &[l1, l2]).unwrap();
        let got = got.into_scalar() as f64;
        assert!((got - (want1 + want2) / 2.0).abs() < 1e-6, "{got}");
    }

    #[test]
    fn no_valid_label_gives_zero_and_bad_labels_are_errors() {
        let x = logits(vec![1.0; 6], 2, 3);
        assert_eq!(sample_loss(x.clone(), &[IGNORE_INDEX, IGNORE_INDEX]).unwrap().into_scalar(), 0.0);
        assert!(sample_loss(x.clone(), &[0, 3]).is_err());
        assert!(sample_loss(x.clone(), &[0]).is_err());
        assert!(batch_loss::<A>(&[], &[]).is_err());
    }

    #[test]
    fn l2wrap_changes_only_the_gradient_of_the_largest_logit() {
        let values = vec![1.0, 4.0, 2.0, -3.0, 0.5, -1.0];
        let labels = vec![IGNORE_INDEX, 2];
        let factor = 0.01;
        // Two independent graphs: the plain loss and the wrapped one.
        let x = logits(values.clone(), 2, 3).require_grad();
        let plain = sample_loss(x.clone(), &labels).unwrap();
        let plain_value = plain.clone().into_scalar();
        let g_plain = x.grad(&plain.backward()).unwrap().into_data().to_vec::<f32>().unwrap();
        let x = logits(values, 2, 3).require_grad();
        let wrapped = sample_loss(x.clone(), &labels).unwrap() + l2wrap(std::slice::from_ref(&x), factor).unwrap();
        assert_eq!(plain_value, wrapped.clone().into_scalar());
        let g_wrap = x.grad(&wrapped.backward()).unwrap().into_data().to_vec::<f32>().unwrap();
        let diff: Vec<f32> = g_wrap.iter().zip(&g_plain).map(|(a, b)| a - b).collect();
        // Row 0's max is 4.0 (index 1), row 1's is 0.5 (index 4): + max · factor there only.
        let want = [0.0, 4.0 * 0.01, 0.0, 0.0, 0.5 * 0.01, 0.0];
        for (d, w) in diff.iter().zip(want) {
            assert!((d - w).abs() < 1e-7, "{diff:?}");
        }
    }

    #[test]
    fn l2wrap_rejects_empty_input() {
        assert!(l2wrap::<A>(&[], 1e-4).is_err());
        let empty: Tensor<A, 2> = Tensor::zeros([0, 3], &Default::default());
        assert!(l2wrap(&[empty], 1e-4).is_err());
    }
}
