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

/// [`batch_loss`] of a padded batch: `logits` `[B, T, V]`, sample `i`'s rows the first
/// `labels[i].len()` (the rest padding). The same value as `batch_loss` over the per-sample
/// slices, computed with one row selection over the flattened batch: slicing each sample out would
/// give each slice a gradient the size of the whole batch (`B` times `B · T · V` numbers).
pub fn padded_batch_loss<B: Backend>(logits: Tensor<B, 3>, labels: &[Vec<i64>]) -> Result<Tensor<B, 1>, LossError> {
    let [b, t, v] = logits.dims();
    if b == 0 || labels.len() != b {
        return Err(LossError::Batch { logits: b, labels: labels.len() });
    }
    let (mut rows, mut ids, mut weights) = (Vec::new(), Vec::new(), Vec::new());
    for (i, sample) in labels.iter().enumerate() {
        if sample.len() > t {
            return Err(LossError::Rows { labels: sample.len(), rows: t });
        }
        let targets: Vec<(usize, i64)> =
            sample.iter().skip(1).enumerate().filter(|(_, l)| **l != IGNORE_INDEX).map(|(p, &l)| (p, l)).collect();
        if let Some((_, l)) = targets.iter().find(|(_, l)| *l < 0 || *l as usize >= v) {
            return Err(LossError::Label { label: *l, vocab: v });
        }
        let w = 1.0 / (targets.len().max(1) * b) as f32;
        for (p, l) in targets {
            rows.push((i * t + p) as i64);
            ids.push(l);
            weights.push(w);
        }
    }
    if rows.is_empty() {
        return Ok(logits.sum().mul_scalar(0.0));
    }
    let device = logits.device();
    let n = rows.len();
    let rows = Tensor::<B, 1, Int>::from_data(TensorData::new(rows, [n]), &device);
    let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [n, 1]), &device);
    let weights = Tensor::<B, 1>::from_data(TensorData::new(weights, [n]), &device);
    let picked = log_softmax(logits.reshape([b * t, v]).select(0, rows), 1).gather(1, ids).reshape([n]);
    Ok((picked * weights).sum().neg())
}

/// [`l2wrap`] of a padded batch `[B, T, V]` whose sample `i` has `lengths[i]` rows.
pub fn padded_l2wrap<B: Backend>(
    logits: Tensor<B, 3>,
    lengths: &[usize],
    factor: f64,
) -> Result<Tensor<B, 1>, LossError> {
    let [b, t, v] = logits.dims();
    if b == 0 || lengths.len() != b {
        return Err(LossError::Batch { logits: b, labels: lengths.len() });
    }
    if let Some(i) = lengths.iter().position(|&n| n == 0 || v == 0) {
        return Err(LossError::EmptySample(i));
    }
    if let Some(&n) = lengths.iter().find(|&&n| n > t) {
        return Err(LossError::Rows { labels: n, rows: t });
    }
    let rows: Vec<i64> =
        lengths.iter().enumerate().flat_map(|(i, &n)| (0..n).map(move |r| (i * t + r) as i64)).collect();
    let n = rows.len();
    let rows = Tensor::<B, 1, Int>::from_data(TensorData::new(rows, [n]), &logits.device());
    let half_sq = logits.reshape([b * t, v]).select(0, rows).max_dim(1).powi_scalar(2).sum().mul_scalar(factor / 2.0);
    Ok(half_sq.clone() - half_sq.detach())
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
    fn padded_batch_equals_per_sample_slices_in_value_and_gradient() {
        // Two samples of 4 and 2 rows padded to 4, vocabulary 3.
        let values: Vec<f32> = (0..24).map(|i| ((i * 7 % 11) as f32 - 5.0) * 0.3).collect();
        let labels = vec![vec![IGNORE_INDEX, 1, IGNORE_INDEX, 0], vec![IGNORE_INDEX, 2]];
        let lengths = [4, 2];
        let run = |padded: bool| {
            let x: Tensor<A, 3> = Tensor::from_data(TensorData::new(values.clone(), [2, 4, 3]), &Default::default());
            let x = x.require_grad();
            let loss = if padded {
                padded_batch_loss(x.clone(), &labels).unwrap() + padded_l2wrap(x.clone(), &lengths, 0.01).unwrap()
            } else {
                let slices: Vec<Tensor<A, 2>> =
                    (0..2).map(|i| x.clone().slice([i..i + 1, 0..lengths[i], 0..3]).reshape([lengths[i], 3])).collect();
                batch_loss(&slices, &labels).unwrap() + l2wrap(&slices, 0.01).unwrap()
            };
            let value = loss.clone().into_scalar();
            let grad = x.grad(&loss.backward()).unwrap().into_data().to_vec::<f32>().unwrap();
            (value, grad)
        };
        let (v_padded, g_padded) = run(true);
        let (v_slices, g_slices) = run(false);
        assert!((v_padded - v_slices).abs() < 1e-6, "{v_padded} vs {v_slices}");
        for (a, b) in g_padded.iter().zip(&g_slices) {
            assert!((a - b).abs() < 1e-6, "{g_padded:?} vs {g_slices:?}");
        }
        // Padding rows get no gradient.
        assert!(g_padded[18..].iter().all(|g| *g == 0.0));
        let x: Tensor<A, 3> = Tensor::zeros([2, 4, 3], &Default::default());
        assert!(padded_batch_loss(x.clone(), &labels[..1]).is_err());
        assert!(padded_batch_loss(x.clone(), &[vec![0; 5], vec![0]]).is_err());
        assert!(padded_l2wrap(x.clone(), &[4, 0], 1e-4).is_err());
        assert!(padded_l2wrap(x, &[5, 1], 1e-4).is_err());
    }

    #[test]
    fn l2wrap_rejects_empty_input() {
        assert!(l2wrap::<A>(&[], 1e-4).is_err());
        let empty: Tensor<A, 2> = Tensor::zeros([0, 3], &Default::default());
        assert!(l2wrap(&[empty], 1e-4).is_err());
    }
}
