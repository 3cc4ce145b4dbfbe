//! CLIP text transformer as transformers' `CLIPTextModel` / `CLIPTextModelWithProjection`:
//! token + position embeddings, pre-LayerNorm encoder layers with causal self-attention, a
//! final LayerNorm, and the pooled vector taken at the end-of-text token.

mod config;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device, IndexOp, Module, Result, Tensor};
use candle_nn::VarBuilder;
use candle_nn::{embedding, layer_norm, linear, linear_no_bias, Embedding, LayerNorm, Linear};

pub use config::{ClipActivation, ClipTextConfig};

// One gemm with the bias fused on CPU f32 (candle's matmul + broadcast add elsewhere).
use crate::backend::kernels::linear::linear as linear_layer;
use crate::backend::models::error::ModelError;
use crate::backend::models::tensor_map::{load_tensors, tracked_var_builder, TensorMap, WeightUsage};

/// Everything the SD pipelines read from one text-encoder pass.
#[derive(Debug, Clone)]
pub struct ClipTextOutput {
    /// Output of the last layer after `final_layer_norm`, `[B, T, hidden]`.
    pub last_hidden_state: Tensor,
    /// HF convention: `[0]` is the embedding output, `[k]` the output of layer `k` (no final
    /// LayerNorm), so `hidden_states[len - 2]` is the penultimate layer SDXL uses.
    pub hidden_states: Vec<Tensor>,
    /// `[B, hidden]` (or `[B, projection_dim]` for the projection model): the final-normed
    /// state at each row's end-of-text position, projected if the model has a projection.
    pub pooled: Tensor,
}

#[derive(Debug)]
struct Embeddings {
    token: Embedding,
    position: Embedding,
}

impl Embeddings {
    fn new(config: &ClipTextConfig, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            token: embedding(
                config.vocab_size,
                config.hidden_size,
                vb.pp("token_embedding"),
            )?,
            position: embedding(
                config.max_position_embeddings,
                config.hidden_size,
                vb.pp("position_embedding"),
            )?,
        })
    }
}

#[derive(Debug)]
struct SelfAttention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    num_heads: usize,
    head_dim: usize,
}

impl SelfAttention {
    fn new(config: &ClipTextConfig, vb: VarBuilder) -> Result<Self> {
        let hidden = config.hidden_size;
        Ok(Self {
            q_proj: linear(hidden, hidden, vb.pp("q_proj"))?,
            k_proj: linear(hidden, hidden, vb.pp("k_proj"))?,
            v_proj: linear(hidden, hidden, vb.pp("v_proj"))?,
            out_proj: linear(hidden, hidden, vb.pp("out_proj"))?,
            num_heads: config.num_attention_heads,
            head_dim: config.head_dim(),
        })
    }

    /// `[B, T, hidden]` -> `[B, heads, T, head_dim]`.
    fn split_heads(&self, xs: Tensor) -> Result<Tensor> {
        let (batch, seq_len, _) = xs.dims3()?;
        xs.reshape((batch, seq_len, self.num_heads, self.head_dim))?
            .transpose(1, 2)?
            .contiguous()
    }

    fn forward(&self, xs: &Tensor, causal_mask: &Tensor) -> Result<Tensor> {
        let (batch, seq_len, hidden) = xs.dims3()?;
        let scale = (self.head_dim as f64).powf(-0.5);
        let q = self.split_heads((linear_layer(&self.q_proj, xs)? * scale)?)?;
        let k = self.split_heads(linear_layer(&self.k_proj, xs)?)?;
        let v = self.split_heads(linear_layer(&self.v_proj, xs)?)?;
        let scores = q.matmul(&k.t()?)?;
        // Mask and softmax in f32 so that half-precision weights cannot overflow here.
        let weights = candle_nn::ops::softmax_last_dim(
            &scores.to_dtype(DType::F32)?.broadcast_add(causal_mask)?,
        )?
        .to_dtype(v.dtype())?;
        let attended = weights
            .matmul(&v)?
            .transpose(1, 2)?
            .reshape((batch, seq_len, hidden))?;
        linear_layer(&self.out_proj, &attended)
    }
}

#[derive(Debug)]
struct Mlp {
    fc1: Linear,
    fc2: Linear,
    activation: ClipActivation,
}

impl Mlp {
    fn new(config: &ClipTextConfig, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            fc1: linear(config.hidden_size, config.intermediate_size, vb.pp("fc1"))?,
            fc2: linear(config.intermediate_size, config.hidden_size, vb.pp("fc2"))?,
            activation: config.hidden_act,
        })
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        linear_layer(&self.fc2, &self.activation.apply(&linear_layer(&self.fc1, xs)?)?)
    }
}

#[derive(Debug)]
struct EncoderLayer {
    layer_norm1: LayerNorm,
    self_attn: SelfAttention,
    layer_norm2: LayerNorm,
    mlp: Mlp,
}

impl EncoderLayer {
    fn new(config: &ClipTextConfig, vb: VarBuilder) -> Result<Self> {
        let eps = config.layer_norm_eps;
        Ok(Self {
            layer_norm1: layer_norm(config.hidden_size, eps, vb.pp("layer_norm1"))?,
            self_attn: SelfAttention::new(config, vb.pp("self_attn"))?,
            layer_norm2: layer_norm(config.hidden_size, eps, vb.pp("layer_norm2"))?,
            mlp: Mlp::new(config, vb.pp("mlp"))?,
        })
    }

    fn forward(&self, xs: &Tensor, causal_mask: &Tensor) -> Result<Tensor> {
        let attended = self
            .self_attn
            .forward(&self.layer_norm1.forward(xs)?, causal_mask)?;
        let xs = (xs + attended)?;
        let mlp_out = self.mlp.forward(&self.layer_norm2.forward(&xs)?)?;
        xs + mlp_out
    }
}

#[derive(Debug)]
pub struct ClipTextModel {
    config: ClipTextConfig,
    embeddings: Embeddings,
    layers: Vec<EncoderLayer>,
    final_layer_norm: LayerNorm,
    /// Present for `CLIPTextModelWithProjection` (SDXL `text_encoder_2`).
    text_projection: Option<Linear>,
    device: Device,
}

/// HF stores the transformer under `text_model.`; some exports drop that prefix.
const TEXT_MODEL_PREFIX: &str = "text_model";

impl ClipTextModel {
    /// Loads a transformers text-encoder folder: `config.json` plus `model.safetensors` (or,
    /// failing that, every `*.safetensors` in the folder, e.g. shards or fp16 variants).
    pub fn load(
        dir: &Path,
        device: &Device,
        dtype: DType,
    ) -> std::result::Result<Self, ModelError> {
        let config = ClipTextConfig::from_file(&dir.join("config.json"))?;
        let weight_files = safetensors_files(dir)?;
        let tensors = Arc::new(load_tensors(&weight_files, dtype, device)?);
        let (model, usage) = Self::from_tensors(config, tensors, dtype, device)?;
        // `position_ids` is a buffer some exports keep; it is not a weight.
        let unused: Vec<&String> = usage.unused.iter().filter(|n| !n.ends_with("position_ids")).collect();
        if let Some(first) = unused.first() {
            tracing::warn!(dir = %dir.display(), unused = unused.len(), first = %first, "text encoder weights have tensors the model does not use");
        }
        Ok(model)
    }

    /// Builds the model from tensors already in memory (transformers names), sharing their
    /// storage when `dtype` and `device` match theirs. Reports which tensors were unused.
    pub fn from_tensors(
        config: ClipTextConfig,
        tensors: Arc<TensorMap>,
        dtype: DType,
        device: &Device,
    ) -> std::result::Result<(Self, WeightUsage), ModelError> {
        let (vb, loaded) = tracked_var_builder(tensors.clone(), dtype, device);
        let model = Self::new(config, vb)?;
        Ok((model, loaded.usage(&tensors)))
    }

    /// Builds the model from an already opened VarBuilder rooted where `text_model.` (or the
    /// un-prefixed `embeddings.`) and `text_projection.` live.
    pub fn new(config: ClipTextConfig, vb: VarBuilder) -> Result<Self> {
        let text_vb = if vb.contains_tensor(&format!(
            "{TEXT_MODEL_PREFIX}.embeddings.token_embedding.weight"
        )) {
            vb.pp(TEXT_MODEL_PREFIX)
        } else {
            vb.clone()
        };
        let embeddings = Embeddings::new(&config, text_vb.pp("embeddings"))?;
        let layers_vb = text_vb.pp("encoder").pp("layers");
        let layers = (0..config.num_hidden_layers)
            .map(|i| EncoderLayer::new(&config, layers_vb.pp(i)))
            .collect::<Result<Vec<_>>>()?;
        let final_layer_norm = layer_norm(
            config.hidden_size,
            config.layer_norm_eps,
            text_vb.pp("final_layer_norm"),
        )?;
        let has_projection = config
            .declares_projection
            .unwrap_or_else(|| vb.contains_tensor("text_projection.weight"));
        let text_projection = if has_projection {
            let projection_dim = config.projection_dim.unwrap_or(config.hidden_size);
            Some(linear_no_bias(
                config.hidden_size,
                projection_dim,
                vb.pp("text_projection"),
            )?)
        } else {
            None
        };
        Ok(Self {
            config,
            embeddings,
            layers,
            final_layer_norm,
            text_projection,
            device: vb.device().clone(),
        })
    }

    pub fn config(&self) -> &ClipTextConfig {
        &self.config
    }

    /// Where the weights live (token ids must be put there too).
    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn has_projection(&self) -> bool {
        self.text_projection.is_some()
    }

    /// The epsilon the final LayerNorm really uses (taken from `config.json`).
    pub fn final_layer_norm_eps(&self) -> f64 {
        self.final_layer_norm.eps()
    }

    /// `final_layer_norm` on any hidden state: clip-skip applies it to an earlier layer.
    pub fn apply_final_layer_norm(&self, hidden_state: &Tensor) -> Result<Tensor> {
        self.final_layer_norm.forward(hidden_state)
    }

    /// Runs the encoder on `input_ids` `[B, T]` (u32, or any integer dtype), `T` at most
    /// `max_position_embeddings`. Padding is not masked, only the future (as in CLIP).
    pub fn forward(&self, input_ids: &Tensor) -> Result<ClipTextOutput> {
        self.forward_with_overrides(input_ids, &[])
    }

    /// [`Self::forward`] with some token embeddings replaced before the position embeddings are
    /// added: how textual-inversion vectors enter the encoder (A1111's `EmbeddingsWithFixes`).
    pub fn forward_with_overrides(
        &self,
        input_ids: &Tensor,
        overrides: &[TokenOverride<'_>],
    ) -> Result<ClipTextOutput> {
        let input_ids = self.checked_ids(input_ids)?;
        let token_embeds = self.token_embeddings(&input_ids)?;
        let token_embeds = replace_token_embeddings(&token_embeds, overrides)?;
        self.forward_token_embeddings(&token_embeds, &input_ids)
    }

    /// The token-embedding table looked up for `input_ids` `[B, T]`: `[B, T, hidden]`, before
    /// position embeddings.
    pub fn token_embeddings(&self, input_ids: &Tensor) -> Result<Tensor> {
        let input_ids = input_ids.to_dtype(DType::U32)?.to_device(&self.device)?;
        self.embeddings.token.forward(&input_ids)
    }

    /// Runs the encoder from token embeddings `[B, T, hidden]` (position embeddings are added
    /// here). `input_ids` `[B, T]` only locate each row's end-of-text token for the pooled output.
    pub fn forward_token_embeddings(
        &self,
        token_embeds: &Tensor,
        input_ids: &Tensor,
    ) -> Result<ClipTextOutput> {
        let input_ids = self.checked_ids(input_ids)?;
        let (batch, seq_len) = input_ids.dims2()?;
        let (embed_batch, embed_len, _) = token_embeds.dims3()?;
        if (embed_batch, embed_len) != (batch, seq_len) {
            candle_core::bail!(
                "token embeddings [{embed_batch}, {embed_len}, _] do not match ids [{batch}, {seq_len}]"
            );
        }
        let causal_mask = causal_mask(seq_len, &self.device)?;
        let positions = self.embeddings.position.embeddings().narrow(0, 0, seq_len)?;
        let mut hidden = token_embeds.to_device(&self.device)?.broadcast_add(&positions)?;
        let mut hidden_states = Vec::with_capacity(self.layers.len() + 1);
        hidden_states.push(hidden.clone());
        for layer in &self.layers {
            hidden = layer.forward(&hidden, &causal_mask)?;
            hidden_states.push(hidden.clone());
        }
        let last_hidden_state = self.final_layer_norm.forward(&hidden)?;
        let pooled = self.pool(&last_hidden_state, &input_ids)?;
        Ok(ClipTextOutput {
            last_hidden_state,
            hidden_states,
            pooled,
        })
    }

    /// `input_ids` as u32 on the model's device, with a length the position table covers.
    fn checked_ids(&self, input_ids: &Tensor) -> Result<Tensor> {
        let input_ids = input_ids.to_dtype(DType::U32)?.to_device(&self.device)?;
        let (_, seq_len) = input_ids.dims2()?;
        if seq_len == 0 || seq_len > self.config.max_position_embeddings {
            candle_core::bail!(
                "sequence length {seq_len} outside 1..={}",
                self.config.max_position_embeddings
            );
        }
        Ok(input_ids)
    }

    /// The state at each row's end-of-text token, found as `argmax(input_ids)` (first
    /// occurrence): `<|endoftext|>` has CLIP's highest id, and transformers does the same for
    /// SD's configs (which carry the legacy `eos_token_id` 2).
    fn pool(&self, last_hidden_state: &Tensor, input_ids: &Tensor) -> Result<Tensor> {
        let rows = input_ids.to_vec2::<u32>()?;
        let pooled_rows = rows
            .iter()
            .enumerate()
            .map(|(row, ids)| last_hidden_state.i((row, first_argmax(ids)))?.unsqueeze(0))
            .collect::<Result<Vec<_>>>()?;
        let pooled = Tensor::cat(&pooled_rows, 0)?;
        match &self.text_projection {
            Some(projection) => projection.forward(&pooled),
            None => Ok(pooled),
        }
    }
}

/// Vectors that take the place of token embeddings in one row of a batch.
#[derive(Debug, Clone, Copy)]
pub struct TokenOverride<'a> {
    pub row: usize,
    /// First position replaced (the BOS token is position 0).
    pub position: usize,
    /// `[n, hidden]`: positions `position..position + n` get these rows (cut at the sequence end,
    /// as A1111 does).
    pub vectors: &'a Tensor,
}

/// `token_embeds` `[B, T, C]` with each override's rows spliced in.
fn replace_token_embeddings(token_embeds: &Tensor, overrides: &[TokenOverride<'_>]) -> Result<Tensor> {
    if overrides.is_empty() {
        return Ok(token_embeds.clone());
    }
    let (batch, seq_len, hidden) = token_embeds.dims3()?;
    let mut rows = Vec::with_capacity(batch);
    for row in 0..batch {
        let mut embeds = token_embeds.get(row)?;
        for fix in overrides.iter().filter(|fix| fix.row == row) {
            let (count, width) = fix.vectors.dims2()?;
            if width != hidden {
                candle_core::bail!("override vectors are {width} wide, the encoder takes {hidden}");
            }
            if fix.position >= seq_len {
                candle_core::bail!("override at position {} of a {seq_len}-token sequence", fix.position);
            }
            let count = count.min(seq_len - fix.position);
            let vectors = fix
                .vectors
                .narrow(0, 0, count)?
                .to_dtype(embeds.dtype())?
                .to_device(embeds.device())?;
            let after = fix.position + count;
            let mut pieces = Vec::with_capacity(3);
            if fix.position > 0 {
                pieces.push(embeds.narrow(0, 0, fix.position)?);
            }
            pieces.push(vectors);
            if after < seq_len {
                pieces.push(embeds.narrow(0, after, seq_len - after)?);
            }
            embeds = Tensor::cat(&pieces, 0)?;
        }
        rows.push(embeds);
    }
    Tensor::stack(&rows, 0)
}

fn first_argmax(ids: &[u32]) -> usize {
    let mut best = 0;
    for (pos, &id) in ids.iter().enumerate() {
        if id > ids[best] {
            best = pos;
        }
    }
    best
}

/// `[T, T]` additive mask: 0 on and below the diagonal, -inf above (a token sees only its past).
fn causal_mask(seq_len: usize, device: &Device) -> Result<Tensor> {
    let mask: Vec<f32> = (0..seq_len)
        .flat_map(|row| {
            (0..seq_len).map(move |col| if col > row { f32::NEG_INFINITY } else { 0.0 })
        })
        .collect();
    Tensor::from_vec(mask, (seq_len, seq_len), device)
}

/// `model.safetensors` if present, otherwise every `*.safetensors` in `dir`, sorted.
fn safetensors_files(dir: &Path) -> std::result::Result<Vec<PathBuf>, ModelError> {
    let preferred = dir.join("model.safetensors");
    if preferred.is_file() {
        return Ok(vec![preferred]);
    }
    let entries = std::fs::read_dir(dir).map_err(|e| ModelError::io(dir, e))?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| ModelError::io(dir, e))?.path();
        if path.extension().is_some_and(|ext| ext == "safetensors") && path.is_file() {
            files.push(path);
        }
    }
    if files.is_empty() {
        return Err(ModelError::MissingFile { path: preferred });
    }
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests;
