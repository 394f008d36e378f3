//! Training: the loss goes down, save → resume continues bit for bit, and each stage updates
//! exactly the parameters it should.

use burn::backend::{Autodiff, NdArray};
use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use visualrwkv::training::{
    LmInit, ModelConfig, Stage, TaskData, TrainConfig, Trainer, evaluate, for_eval, task_tokenizer,
};
use visualrwkv::vlm::VisualRwkv;
use visualrwkv_prompt::Sandwich;
use visualrwkv_scan::BiDirectional;
use visualrwkv_tokenizer::Tokenizer;
use visualrwkv_train::data::{DataConfig, generate};

type A = Autodiff<NdArray>;

fn setup(seed: u64) -> (VisualRwkv<A>, TaskData<A>, TaskData<NdArray>) {
    setup_with(seed, LmInit::Random)
}

fn setup_with(seed: u64, init: LmInit) -> (VisualRwkv<A>, TaskData<A>, TaskData<NdArray>) {
    setup_arch(seed, init, visualrwkv_rwkv::Arch::X060)
}

fn setup_arch(seed: u64, init: LmInit, arch: visualrwkv_rwkv::Arch) -> (VisualRwkv<A>, TaskData<A>, TaskData<NdArray>) {
    let data =
        DataConfig { train_images: 12, val_images: 2, test_images: 4, questions_per_image: 3, ..DataConfig::default() };
    let splits = generate(&data).unwrap();
    let tok = Tokenizer::world_bytes();
    let mut cfg = ModelConfig::tiny(&data, 32, 1, tok);
    cfg.init = init;
    cfg.arch = arch;
    let model: VisualRwkv<A> =
        visualrwkv_rwkv::seeded::<NdArray, _>(&Default::default(), seed, || cfg.init(&Default::default()).unwrap());
    let inner = for_eval(&model);
    let train = TaskData::prepare(&splits.train, data.cell_px, &inner, &Sandwich, tok).unwrap().lift::<A>();
    let test = TaskData::prepare(&splits.test, data.cell_px, &inner, &Sandwich, tok).unwrap();
    (model, train, test)
}

fn config(stage: Stage) -> TrainConfig {
    TrainConfig { stage, steps: 40, batch_size: 4, lr_init: 3e-3, lr_final: 3e-3, warmup: 0, ..TrainConfig::default() }
}

/// 25 full-stage steps on one batch of 4 halve its loss.
fn learns_a_fixed_batch(model: VisualRwkv<A>, train: &TaskData<A>) {
    let mut t = Trainer::new(model, config(Stage::Full)).unwrap();
    let batch = [0, 1, 2, 3];
    let first = t.step_on(train, &batch, &BiDirectional).unwrap().loss;
    let mut last = first;
    for _ in 0..25 {
        last = t.step_on(train, &batch, &BiDirectional).unwrap().loss;
    }
    assert!(last < 0.5 * first, "loss {first} -> {last}");
}

#[test]
fn a_short_run_lowers_the_loss_on_a_fixed_batch() {
    let (model, train, _) = setup(1);
    learns_a_fixed_batch(model, &train);
}

#[test]
fn the_trainer_initialisation_starts_at_the_identity_and_learns() {
    let (model, train, _) = setup_with(4, LmInit::Trainer);
    let out =
        model.rwkv.x060().unwrap().blocks[0].att.output.weight.val().inner().into_data().into_vec::<f32>().unwrap();
    assert!(out.iter().all(|&x| x == 0.0), "blocks start as the identity");
    learns_a_fixed_batch(model, &train);
}

#[test]
fn the_rwkv7_trainer_initialisation_starts_at_the_identity_and_learns() {
    let (model, train, _) = setup_arch(4, LmInit::Trainer, visualrwkv_rwkv::Arch::X070);
    let visualrwkv_rwkv::LanguageModel::X070(lm) = &model.rwkv else { panic!("an RWKV-7 model") };
    let out = lm.blocks[0].att.output.weight.val().inner().into_data().into_vec::<f32>().unwrap();
    assert!(out.iter().all(|&x| x == 0.0), "blocks start as the identity");
    learns_a_fixed_batch(model, &train);
}

#[test]
fn save_then_resume_continues_bit_for_bit() {
    let (model, train, _) = setup(2);
    let mut a = Trainer::new(model, config(Stage::Full)).unwrap();
    for _ in 0..3 {
        a.train_step(&train, &BiDirectional).unwrap();
    }
    let dir = std::env::temp_dir().join(format!("visualrwkv-resume-{}", std::process::id()));
    a.save(&dir).unwrap();
    let cont: Vec<f64> = (0..3).map(|_| a.train_step(&train, &BiDirectional).unwrap().loss).collect();

    // A differently initialised model of the same configuration, restored from the checkpoint.
    let (other, _, _) = setup(99);
    let mut b = Trainer::resume(&dir, other).unwrap();
    assert_eq!(b.step, 3);
    let resumed: Vec<f64> = (0..3).map(|_| b.train_step(&train, &BiDirectional).unwrap().loss).collect();
    assert_eq!(
        cont.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
        resumed.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// Every float parameter's id and values.
struct Values(Vec<(ParamId, Vec<f32>)>);

impl<B: Backend> ModuleVisitor<B> for Values {
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<B, D>>) {
        self.0.push((p.id, p.val().into_data().convert::<f32>().to_vec().unwrap()));
    }
}

fn values<B: Backend, M: Module<B>>(m: &M) -> Vec<(ParamId, Vec<f32>)> {
    let mut v = Values(Vec::new());
    m.visit(&mut v);
    v.0
}

fn changed(before: &[(ParamId, Vec<f32>)], after: &[(ParamId, Vec<f32>)]) -> Vec<bool> {
    before.iter().zip(after).map(|(a, b)| a.1 != b.1).collect()
}

#[test]
fn stage_one_updates_only_the_projector_and_stage_two_keeps_embeddings_and_tower() {
    let (model, train, _) = setup(3);
    let (rwkv0, vision0, proj0) = (values(&model.rwkv), values(&model.vision), values(&model.projector));
    let mut t = Trainer::new(model, config(Stage::Projector)).unwrap();
    t.train_step(&train, &BiDirectional).unwrap();
    t.train_step(&train, &BiDirectional).unwrap();
    assert!(changed(&proj0, &values(&t.model.projector)).iter().all(|&c| c), "every projector tensor moves");
    assert!(!changed(&rwkv0, &values(&t.model.rwkv)).iter().any(|&c| c), "RWKV is frozen in stage 1");
    assert!(!changed(&vision0, &values(&t.model.vision)).iter().any(|&c| c), "the tower is frozen");

    let mut t = Trainer::new(t.model, config(Stage::Full)).unwrap();
    let emb0 = t.model.rwkv.emb().weight.val().into_data();
    let rwkv1 = values(&t.model.rwkv);
    t.train_step(&train, &BiDirectional).unwrap();
    assert_eq!(t.model.rwkv.emb().weight.val().into_data(), emb0, "embeddings stay frozen in stage 2");
    let moved = changed(&rwkv1, &values(&t.model.rwkv)).iter().filter(|&&c| c).count();
    assert_eq!(moved, rwkv1.len() - 1, "every RWKV tensor but emb moves in stage 2");
    assert!(!changed(&vision0, &values(&t.model.vision)).iter().any(|&c| c), "the tower is frozen");
}

#[test]
fn evaluation_scores_greedy_answers_per_type() {
    let (model, _, test) = setup(4);
    let acc = evaluate(&for_eval(&model), &test, &BiDirectional, Tokenizer::world_bytes(), Some(6)).unwrap();
    assert_eq!(acc.per_type.values().map(|(_, t)| t).sum::<usize>(), 6);
    assert!((0.0..=1.0).contains(&acc.overall()));
}

#[test]
fn task_tokenizer_gives_one_token_per_word() {
    let data =
        DataConfig { train_images: 12, val_images: 2, test_images: 4, questions_per_image: 6, ..DataConfig::default() };
    let splits = generate(&data).unwrap();
    let tok = task_tokenizer(&splits.train);
    for e in &splits.train.examples {
        let ids = tok.encode(&e.question);
        // Every word one token, plus the question mark.
        assert_eq!(ids.len(), e.question.split(' ').count() + 1, "{:?} -> {ids:?}", e.question);
        assert_eq!(tok.decode(&ids).unwrap(), e.question);
        assert_eq!(tok.encode(&format!(" {}", e.answer)).len(), 1, "answer {:?}", e.answer);
    }
    assert_eq!(tok.encode("\n\n").len(), 1);
    assert_eq!(tok.encode("Assistant:").len(), 2);
    // Text outside the task still encodes, byte by byte.
    assert_eq!(tok.decode(&tok.encode("zebra ✓")).unwrap(), "zebra ✓");
}
