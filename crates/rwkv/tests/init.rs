//! The official trainer's from-scratch initialisation (`RwkvConfig::init_from_scratch`): the
//! values of docs/model.md §1.6 at chosen channels, blocks that start as the identity of the
//! residual stream, orthogonal projections, and a model that still learns.

use burn::backend::{Autodiff, NdArray};
use burn::module::Param;
use burn::tensor::{Int, Tensor};
use visualrwkv_rwkv::{RwkvConfig, seeded};

type B = NdArray;

fn vals<const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().into_vec::<f32>().unwrap()
}

fn p<const D: usize>(param: &Param<Tensor<B, D>>) -> Vec<f32> {
    vals(param.val())
}

fn config() -> RwkvConfig {
    RwkvConfig { n_layer: 3, n_embd: 32, n_head: 4, head_size: 8, dim_ffn: 96, vocab_size: 70, d_mix: 4, d_decay: 8 }
}

fn close(a: f32, b: f64, what: &str) {
    assert!((a as f64 - b).abs() < 1e-5, "{what}: {a} vs {b}");
}

#[test]
fn mixes_decays_and_bonus_follow_the_trainer_formulas() {
    let cfg = config();
    let dev = Default::default();
    let model = seeded::<B, _>(&dev, 0, || cfg.init_from_scratch::<B>(&dev));
    let (c, a) = (32usize, 32usize);
    for (l, block) in model.blocks.iter().enumerate() {
        let r0 = l as f64 / 2.0;
        let r1 = 1.0 - l as f64 / 3.0;
        let i = 20usize;
        let ddd = i as f64 / c as f64;
        let att = &block.att;
        close(p(&att.ddlerp.maa_x)[i], 1.0 - ddd.powf(r1), "maa_x");
        let maa = p(&att.ddlerp.maa); // [5, C]: w, k, v, r, g
        close(maa[i], 1.0 - ddd.powf(r1), "maa_w");
        close(maa[c + i], 1.0 - ddd.powf(r1), "maa_k");
        close(maa[2 * c + i], 1.0 - (ddd.powf(r1) + 0.3 * r0), "maa_v");
        close(maa[3 * c + i], 1.0 - ddd.powf(0.5 * r1), "maa_r");
        close(maa[4 * c + i], 1.0 - ddd.powf(0.5 * r1), "maa_g");
        close(p(&block.ffn.maa_k)[i], 1.0 - ddd.powf(r1), "ffn maa_k");
        close(p(&block.ffn.maa_r)[i], 1.0 - ddd.powf(r1), "ffn maa_r");
        let decay = p(&att.decay.base);
        close(decay[0], -6.0, "fastest decay");
        close(decay[a - 1], -1.0, "slowest decay");
        let n = 13usize;
        close(decay[n], -6.0 + 5.0 * (n as f64 / 31.0).powf(0.7 + 1.3 * r0), "decay");
        let bonus = p(&att.bonus); // [H, N] flattened
        close(bonus[n], r0 * (1.0 - n as f64 / 31.0) + 0.1 * (((n + 1) % 3) as f64 - 1.0), "bonus");
        // The LoRAs start inactive: first matrix zero, second small.
        assert!(p(&att.ddlerp.w1).iter().chain(&p(&att.decay.w1)).all(|&x| x == 0.0));
        let w2: Vec<f32> = p(&att.ddlerp.w2).into_iter().chain(p(&att.decay.w2)).collect();
        assert!(w2.iter().all(|x| x.abs() <= 0.01) && w2.iter().any(|&x| x != 0.0));
    }
}

#[test]
fn every_block_starts_as_the_identity_and_projections_are_orthogonal() {
    let dev = Default::default();
    let model = seeded::<B, _>(&dev, 3, || config().init_from_scratch::<B>(&dev));
    let ids = Tensor::<B, 2, Int>::from_ints([[1, 5, 69, 0, 33]], &dev);
    let logits = model.forward(ids.clone(), None).unwrap().logits;
    // With the mixes' outputs at zero the stack is emb → ln0 → ln_out → head.
    let x = model.emb.forward(ids);
    let direct = model.head.forward(model.ln_out.forward(model.ln0.forward(x.clone())));
    let d = vals(logits.clone() - direct).iter().fold(0.0f32, |m, v| m.max(v.abs()));
    assert!(d < 1e-5, "blocks changed the residual stream by {d}");
    assert!(vals(x).iter().all(|v| v.abs() <= 1e-4), "emb in ±1e-4");
    for w in [&model.blocks[0].att.receptance.weight, &model.blocks[1].att.value.weight] {
        let w = w.val();
        let gram = vals(w.clone().transpose().matmul(w));
        for (k, g) in gram.iter().enumerate() {
            let want = if k / 32 == k % 32 { 1.0 } else { 0.0 };
            assert!((g - want).abs() < 1e-4, "W^T W [{k}] = {g}");
        }
    }
    // att.key at a tenth of the gain; the head at ½·√(V/C): each of its C rows has that norm.
    let key = vals(model.blocks[2].att.key.weight.val().powi_scalar(2).sum());
    assert!((key[0] - 0.01 * 32.0).abs() < 1e-3, "{key:?}");
    let head = vals(model.head.weight.val().powi_scalar(2).sum_dim(1));
    let want = 0.25 * 70.0 / 32.0;
    assert!(head.iter().all(|h| (h - want).abs() < 1e-3), "{head:?} vs {want}");
    let zero =
        [&model.blocks[1].att.output.weight, &model.blocks[1].ffn.value.weight, &model.blocks[1].ffn.receptance.weight];
    assert!(zero.iter().all(|w| vals(w.val()).iter().all(|&x| x == 0.0)));
}

#[test]
fn the_same_seed_draws_the_same_model_and_it_learns() {
    type A = Autodiff<NdArray>;
    let dev = Default::default();
    let draw = || seeded::<A, _>(&dev, 7, || config().init_from_scratch::<A>(&dev));
    let (m1, m2) = (draw(), draw());
    let flat = |m: &visualrwkv_rwkv::Rwkv<A>| -> Vec<f32> {
        m.blocks[1].att.key.weight.val().inner().into_data().convert::<f32>().into_vec().unwrap()
    };
    assert_eq!(flat(&m1), flat(&m2));
    // The zero outputs get gradients: one step of plain gradient descent lowers the loss.
    let ids = Tensor::<A, 2, Int>::from_ints([[3, 9, 27, 11, 42, 8, 60, 1]], &dev);
    let loss = |m: &visualrwkv_rwkv::Rwkv<A>| {
        let logits = m.forward(ids.clone().slice([0..1, 0..7]), None).unwrap().logits.reshape([7, 70]);
        let target = ids.clone().slice([0..1, 1..8]).reshape([7]);
        burn::nn::loss::CrossEntropyLossConfig::new().init(&dev).forward(logits, target)
    };
    let first = loss(&m1);
    let grads = first.backward();
    let g = m1.blocks[0].att.output.weight.grad(&grads).expect("att.output gets a gradient");
    let norm = g.clone().powi_scalar(2).sum().into_scalar();
    assert!(norm > 0.0, "the zero output projection must still receive a gradient");
    let mut m = m1.clone();
    m.blocks[0].att.output.weight =
        Param::from_tensor(Tensor::from_inner(m.blocks[0].att.output.weight.val().inner() - g));
    let before: f32 = first.into_scalar();
    let after: f32 = loss(&m).into_scalar();
    assert!(after < before, "loss {before} -> {after}");
}

fn config7() -> visualrwkv_rwkv::Rwkv7Config {
    visualrwkv_rwkv::Rwkv7Config {
        n_layer: 3,
        n_embd: 32,
        n_head: 4,
        head_size: 8,
        dim_ffn: 128,
        vocab_size: 70,
        d_decay: 8,
        d_aaa: 8,
        d_mv: 4,
        d_gate: 16,
    }
}

#[test]
fn rwkv7_follows_the_v7_00_formulas_and_its_loras_start_inactive() {
    let dev = Default::default();
    let model = seeded::<B, _>(&dev, 0, || config7().init_from_scratch::<B>(&dev));
    let c = 32usize;
    for (l, block) in model.blocks.iter().enumerate() {
        let r0 = l as f64 / 2.0;
        let r1 = 1.0 - l as f64 / 3.0;
        let i = 20usize;
        let d = i as f64 / c as f64;
        let att = &block.att;
        close(p(&att.x_r)[i], 1.0 - d.powf(0.2 * r1), "x_r");
        close(p(&att.x_w)[i], 1.0 - d.powf(0.9 * r1), "x_w");
        close(p(&att.x_k)[i], 1.0 - (d.powf(0.9 * r1) + 0.4 * r0), "x_k");
        close(p(&att.x_v)[i], 1.0 - (d.powf(0.4 * r1) + 0.6 * r0), "x_v");
        close(p(&att.x_a)[i], 1.0 - d.powf(0.9 * r1), "x_a");
        close(p(&att.x_g)[i], 1.0 - d.powf(0.2 * r1), "x_g");
        close(p(&block.ffn.x_k)[i], 1.0 - d.powf(r1.powi(4)), "ffn x_k");
        let w0 = p(&att.w0);
        close(w0[0], -6.5, "fastest decay");
        close(w0[c - 1], -1.5, "slowest decay");
        close(w0[13], -6.5 + 5.0 * (13.0f64 / 31.0).powf(0.85 + r0.sqrt()), "decay");
        assert!(p(&att.a0).iter().all(|&x| x == 0.0));
        assert!(p(&att.k_k).iter().all(|&x| (x - 0.85).abs() < 1e-7));
        assert!(p(&att.k_a).iter().all(|&x| x == 1.0));
        assert!(p(&att.r_k).iter().all(|&x| x == 0.0));
        assert_eq!(att.v0.is_some(), l > 0, "the value residual exists from the second block on");
        if let Some(v0) = &att.v0 {
            assert!(p(v0).iter().all(|&x| x == 1.0));
        }
        // Every LoRA: first matrix zero; second orthogonal rows of norm 0.1 (rank < C).
        let loras = [Some(&att.w_lora), Some(&att.a_lora), att.v_lora.as_ref(), Some(&att.g_lora)];
        for lora in loras.into_iter().flatten() {
            assert!(p(&lora.down).iter().all(|&x| x == 0.0));
            let up = lora.up.val();
            let [rank, _] = up.dims();
            let gram = vals(up.clone().matmul(up.transpose()));
            for (k, g) in gram.iter().enumerate() {
                let want = if k / rank == k % rank { 0.01 } else { 0.0 };
                assert!((g - want).abs() < 1e-5, "up·upᵀ [{k}] = {g}");
            }
        }
        // The projections' ranges: receptance and value ±0.5/√C, key ±0.05/√C.
        let bound = |w: &Param<Tensor<B, 2>>, b: f64| {
            let v = p(w);
            let max = v.iter().fold(0.0f32, |m, x| m.max(x.abs())) as f64;
            assert!(max <= b && max > 0.8 * b, "max |w| {max} vs bound {b}");
        };
        let s = (c as f64).sqrt().recip();
        bound(&att.receptance.weight, 0.5 * s);
        bound(&att.key.weight, 0.05 * s);
        bound(&att.value.weight, 0.5 * s);
        bound(&block.ffn.key.weight, 0.5 * s);
    }
}

#[test]
fn rwkv7_blocks_start_as_the_identity_and_the_model_learns() {
    type A = Autodiff<NdArray>;
    let dev = Default::default();
    let draw = || seeded::<A, _>(&dev, 5, || config7().init_from_scratch::<A>(&dev));
    let (m1, m2) = (draw(), draw());
    let flat = |m: &visualrwkv_rwkv::Rwkv7<A>| -> Vec<f32> {
        m.blocks[1].att.key.weight.val().inner().into_data().convert::<f32>().into_vec().unwrap()
    };
    assert_eq!(flat(&m1), flat(&m2), "the same seed draws the same model");
    let ids = Tensor::<A, 2, Int>::from_ints([[3, 9, 27, 11, 42, 8, 60, 1]], &dev);
    // With both mixes' outputs at zero the stack is emb → ln0 → ln_out → head.
    let logits = m1.forward(ids.clone(), None).unwrap().logits;
    let direct = m1.head.forward(m1.ln_out.forward(m1.ln0.forward(m1.emb.forward(ids.clone()))));
    let diff = (logits - direct).abs().max().into_scalar();
    assert!(diff < 1e-5, "blocks changed the residual stream by {diff}");
    let loss = |m: &visualrwkv_rwkv::Rwkv7<A>| {
        let logits = m.forward(ids.clone().slice([0..1, 0..7]), None).unwrap().logits.reshape([7, 70]);
        let target = ids.clone().slice([0..1, 1..8]).reshape([7]);
        burn::nn::loss::CrossEntropyLossConfig::new().init(&dev).forward(logits, target)
    };
    let first = loss(&m1);
    let grads = first.backward();
    let g = m1.blocks[0].att.output.weight.grad(&grads).expect("att.output gets a gradient");
    assert!(g.clone().powi_scalar(2).sum().into_scalar() > 0.0, "the zero output projection must get a gradient");
    let mut m = m1.clone();
    m.blocks[0].att.output.weight =
        Param::from_tensor(Tensor::from_inner(m.blocks[0].att.output.weight.val().inner() - g.mul_scalar(10.0)));
    let before: f32 = first.into_scalar();
    let after: f32 = loss(&m).into_scalar();
    assert!(after < before, "loss {before} -> {after}");
}
