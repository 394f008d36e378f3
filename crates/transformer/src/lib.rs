//! # visualrwkv-transformer: the transformer baseline
//!
//! A plain decoder-only transformer in the shape of LLaVA-1.5's language model in miniature:
//! token embedding, pre-LN blocks (causal multi-head self-attention with rotary positions, then
//! a GELU MLP), final LayerNorm, LM head. It exists to be compared with RWKV-6 at the same
//! width, depth, vocabulary and FFN size (`visualrwkv bench-efficiency`): its KV cache and
//! attention grow with the context, RWKV's state does not.
//!
//! Every projection goes through the same dense kernels as RWKV-6
//! ([`visualrwkv_rwkv::RwkvBackend::dense`]), so a comparison measures the architectures, not
//! two matmul implementations.
//!
//! Prefill computes attention in query blocks ([`ATTENTION_BLOCK`] rows at a time, each against
//! the keys up to its end), so the score matrix never exceeds `[B, H, block, T]` — the memory a
//! fused attention kernel would use, not the `T²` of a naive one. Decoding appends to a
//! [`KvCache`] and attends one query over it.
//!
//! # Shapes
//!
//! Tokens `[B, T]`, hidden `[B, T, C]`, logits `[B, T, V]`; per layer the cache holds keys and
//! values `[B, H, T, C/H]`.

use burn::config::Config;
use burn::module::Module;
use burn::nn::{
    Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig, RotaryEncoding, RotaryEncodingConfig,
};
use burn::tensor::activation::{gelu, softmax};
use burn::tensor::{Bool, Int, Tensor, backend::Backend};
use visualrwkv_rwkv::RwkvBackend;
use visualrwkv_rwkv::dense::linear;

/// Inputs the model cannot take.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TransformerError {
    /// A token id is outside the vocabulary.
    #[error("token id {id} is outside the vocabulary 0..{vocab}")]
    TokenId {
        /// The id.
        id: i64,
        /// The vocabulary size.
        vocab: usize,
    },
    /// The sequence would pass the rotary tables' length.
    #[error("positions up to {needed} exceed max_len {max_len}")]
    TooLong {
        /// Positions needed.
        needed: usize,
        /// The configured maximum.
        max_len: usize,
    },
    /// No tokens.
    #[error("empty input")]
    Empty,
    /// Embedding rows of another width than the model's.
    #[error("embedding rows of width {found}, the model is {expected} wide")]
    Width {
        /// The model's width.
        expected: usize,
        /// The rows' width.
        found: usize,
    },
}

/// Query rows per attention block during prefill.
pub const ATTENTION_BLOCK: usize = 512;

/// Sizes of the transformer.
#[derive(Config, Debug, PartialEq, Eq)]
pub struct TransformerConfig {
    /// Number of blocks.
    pub n_layer: usize,
    /// Width C.
    pub n_embd: usize,
    /// Attention heads (C must be a multiple).
    pub n_head: usize,
    /// MLP hidden width.
    pub dim_ffn: usize,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Longest sequence the rotary tables cover.
    pub max_len: usize,
}

/// One pre-LN block.
#[derive(Module, Debug)]
pub struct Block<B: Backend> {
    /// LayerNorm before attention.
    pub ln1: LayerNorm<B>,
    /// Packed q, k, v projection C → 3C.
    pub qkv: Linear<B>,
    /// Attention output C → C.
    pub out: Linear<B>,
    /// LayerNorm before the MLP.
    pub ln2: LayerNorm<B>,
    /// MLP C → F.
    pub fc1: Linear<B>,
    /// MLP F → C.
    pub fc2: Linear<B>,
    /// Heads.
    pub n_head: usize,
}

/// The decoder.
#[derive(Module, Debug)]
pub struct Transformer<B: Backend> {
    /// Token embedding.
    pub emb: Embedding<B>,
    /// Blocks.
    pub blocks: Vec<Block<B>>,
    /// Final LayerNorm.
    pub ln_out: LayerNorm<B>,
    /// LM head C → V.
    pub head: Linear<B>,
    /// Rotary position tables.
    pub rope: RotaryEncoding<B>,
    /// Longest sequence the rotary tables cover.
    pub max_len: usize,
}

/// Keys and values of every layer seen so far: `[B, H, T, C/H]` each.
#[derive(Clone, Debug)]
pub struct KvCache<B: Backend> {
    /// Per layer `(keys, values)`.
    pub layers: Vec<(Tensor<B, 4>, Tensor<B, 4>)>,
}

impl<B: Backend> KvCache<B> {
    /// Tokens cached.
    pub fn len(&self) -> usize {
        self.layers.first().map_or(0, |(k, _)| k.dims()[2])
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of the cache in f32.
    pub fn bytes(&self) -> usize {
        self.layers.iter().map(|(k, v)| 4 * (k.shape().num_elements() + v.shape().num_elements())).sum()
    }
}

impl TransformerConfig {
    /// A randomly initialised model.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Transformer<B> {
        let (c, f) = (self.n_embd, self.dim_ffn);
        let lin = |i, o| LinearConfig::new(i, o).with_bias(false).init(device);
        let blocks = (0..self.n_layer)
            .map(|_| Block {
                ln1: LayerNormConfig::new(c).init(device),
                qkv: lin(c, 3 * c),
                out: lin(c, c),
                ln2: LayerNormConfig::new(c).init(device),
                fc1: lin(c, f),
                fc2: lin(f, c),
                n_head: self.n_head,
            })
            .collect();
        Transformer {
            emb: EmbeddingConfig::new(self.vocab_size, c).init(device),
            blocks,
            ln_out: LayerNormConfig::new(c).init(device),
            head: lin(c, self.vocab_size),
            rope: RotaryEncodingConfig::new(self.max_len, c / self.n_head).init(device),
            max_len: self.max_len,
        }
    }

    /// Parameters of the model.
    pub fn num_params(&self) -> usize {
        let (c, f, v) = (self.n_embd, self.dim_ffn, self.vocab_size);
        2 * v * c + self.n_layer * (4 * c * c + 2 * c * f + 4 * c) + 2 * c
    }
}

impl<B: RwkvBackend> Block<B> {
    /// Attention of the new rows `x` `[B, T, C]` (positions `start..start+T`) over the cached
    /// keys/values plus their own; returns the block output and the extended cache entry.
    fn forward(
        &self,
        x: Tensor<B, 3>,
        start: usize,
        cache: Option<(Tensor<B, 4>, Tensor<B, 4>)>,
        rope: &RotaryEncoding<B>,
    ) -> (Tensor<B, 3>, (Tensor<B, 4>, Tensor<B, 4>)) {
        let [b, t, c] = x.dims();
        let (h, d) = (self.n_head, c / self.n_head);
        let qkv = linear(&self.qkv, self.ln1.forward(x.clone())).reshape([b, t, 3, h, d]);
        let part =
            |i: usize| qkv.clone().slice([0..b, 0..t, i..i + 1, 0..h, 0..d]).reshape([b, t, h, d]).swap_dims(1, 2);
        let q = rope.apply(part(0), start);
        let k = rope.apply(part(1), start);
        let v = part(2);
        let (k, v) = match cache {
            Some((ck, cv)) => (Tensor::cat(vec![ck, k], 2), Tensor::cat(vec![cv, v], 2)),
            None => (k, v),
        };
        let total = start + t;
        let scale = (d as f64).powf(-0.5);
        let mut outs = Vec::with_capacity(t.div_ceil(ATTENTION_BLOCK));
        let mut q0 = 0;
        while q0 < t {
            let q1 = (q0 + ATTENTION_BLOCK).min(t);
            // Keys up to the last query of the block (causal).
            let kend = start + q1;
            let qb = q.clone().slice([0..b, 0..h, q0..q1, 0..d]);
            let kb = k.clone().slice([0..b, 0..h, 0..kend, 0..d]);
            let vb = v.clone().slice([0..b, 0..h, 0..kend, 0..d]);
            let mut scores = qb.matmul(kb.swap_dims(2, 3)) * scale;
            if q1 - q0 > 1 {
                // Query row i (absolute start+q0+i) sees keys j <= start+q0+i.
                let rows = Tensor::<B, 1, Int>::arange((start + q0) as i64..(start + q1) as i64, &x.device())
                    .reshape([q1 - q0, 1]);
                let cols = Tensor::<B, 1, Int>::arange(0..kend as i64, &x.device()).reshape([1, kend]);
                let mask: Tensor<B, 2, Bool> = cols.greater(rows);
                scores = scores.mask_fill(mask.unsqueeze::<4>().expand([b, h, q1 - q0, kend]), f32::NEG_INFINITY);
            }
            outs.push(softmax(scores, 3).matmul(vb));
            q0 = q1;
        }
        debug_assert_eq!(k.dims()[2], total);
        let att = Tensor::cat(outs, 2).swap_dims(1, 2).reshape([b, t, c]);
        let x = x + linear(&self.out, att);
        let y = x.clone() + linear(&self.fc2, gelu(linear(&self.fc1, self.ln2.forward(x))));
        (y, (k, v))
    }
}

impl<B: RwkvBackend> Transformer<B> {
    /// Runs `tokens` `[B, T]` after the cached context (none: from the start): logits of the
    /// last row `[B, V]` and the extended cache.
    pub fn forward_last(
        &self,
        tokens: Tensor<B, 2, Int>,
        cache: Option<KvCache<B>>,
    ) -> Result<(Tensor<B, 2>, KvCache<B>), TransformerError> {
        let (x, cache) = self.forward_hidden(tokens, cache)?;
        let [b, t, c] = x.dims();
        let last = x.slice([0..b, t - 1..t, 0..c]).reshape([b, c]);
        Ok((linear(&self.head, self.ln_out.forward(last)), cache))
    }

    /// Logits of every row `[B, T, V]` and the extended cache.
    pub fn forward(
        &self,
        tokens: Tensor<B, 2, Int>,
        cache: Option<KvCache<B>>,
    ) -> Result<(Tensor<B, 3>, KvCache<B>), TransformerError> {
        let (x, cache) = self.forward_hidden(tokens, cache)?;
        Ok((linear(&self.head, self.ln_out.forward(x)), cache))
    }

    /// Runs embedding rows `x` `[B, T, C]` (e.g. projected image features followed by token
    /// embeddings) after the cached context: logits of the last row `[B, V]` and the extended
    /// cache.
    pub fn forward_embeddings_last(
        &self,
        x: Tensor<B, 3>,
        cache: Option<KvCache<B>>,
    ) -> Result<(Tensor<B, 2>, KvCache<B>), TransformerError> {
        let [b, t, c] = x.dims();
        let expected = self.emb.weight.dims()[1];
        if c != expected {
            return Err(TransformerError::Width { expected, found: c });
        }
        if b == 0 || t == 0 {
            return Err(TransformerError::Empty);
        }
        let (x, cache) = self.run_blocks(x, cache)?;
        let last = x.slice([0..b, t - 1..t, 0..c]).reshape([b, c]);
        Ok((linear(&self.head, self.ln_out.forward(last)), cache))
    }

    /// The token embeddings `[B, T, C]` of `tokens` `[B, T]`, with the ids checked.
    pub fn embed(&self, tokens: Tensor<B, 2, Int>) -> Result<Tensor<B, 3>, TransformerError> {
        let [b, t] = tokens.dims();
        if b == 0 || t == 0 {
            return Err(TransformerError::Empty);
        }
        let vocab = self.emb.weight.dims()[0];
        if let Some(id) = tokens.to_data().iter::<i64>().find(|&id| id < 0 || id as usize >= vocab) {
            return Err(TransformerError::TokenId { id, vocab });
        }
        Ok(self.emb.forward(tokens))
    }

    fn forward_hidden(
        &self,
        tokens: Tensor<B, 2, Int>,
        cache: Option<KvCache<B>>,
    ) -> Result<(Tensor<B, 3>, KvCache<B>), TransformerError> {
        let x = self.embed(tokens)?;
        self.run_blocks(x, cache)
    }

    /// The blocks over rows `x` `[B, T, C]` at positions after the cache.
    fn run_blocks(
        &self,
        mut x: Tensor<B, 3>,
        cache: Option<KvCache<B>>,
    ) -> Result<(Tensor<B, 3>, KvCache<B>), TransformerError> {
        let start = cache.as_ref().map_or(0, KvCache::len);
        let t = x.dims()[1];
        let max_len = self.max_len;
        if start + t > max_len {
            return Err(TransformerError::TooLong { needed: start + t, max_len });
        }
        let mut old = cache.map(|c| c.layers.into_iter().map(Some).collect::<Vec<_>>()).unwrap_or_default();
        old.resize_with(self.blocks.len(), || None);
        let mut layers = Vec::with_capacity(self.blocks.len());
        for (block, entry) in self.blocks.iter().zip(old) {
            let (y, kv) = block.forward(x, start, entry, &self.rope);
            x = y;
            layers.push(kv);
        }
        Ok((x, KvCache { layers }))
    }
}
