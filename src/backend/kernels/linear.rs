//! Linear layers on the CPU as one gemm with the bias pre-filled into the output (candle runs
//! the matmul and then a separate broadcast add over a fresh tensor).

use candle_core::{bail, Module, Result, Tensor};
use candle_nn::Linear;
use rayon::prelude::*;

use super::cpu_tensor::{is_cpu_f32, tensor_from_vec, zeroed, F32Data, SharedOut};
use super::gemm_call::{gemm_f32_banded, MatMut, MatRef};
use super::profile;

/// `lin.forward(x)`, with the CPU kernel for f32 inputs.
pub fn linear(lin: &Linear, x: &Tensor) -> Result<Tensor> {
    if !(is_cpu_f32(x) && is_cpu_f32(lin.weight())) {
        let _t = profile::timer("linear (candle)");
        return lin.forward(x);
    }
    let _t = profile::timer("linear");
    let (outputs, inputs) = lin.weight().dims2()?;
    let dims = x.dims().to_vec();
    if dims.last() != Some(&inputs) {
        bail!("linear: input {dims:?} does not end in {inputs} features");
    }
    let rows: usize = dims[..dims.len() - 1].iter().product();
    let x = x.contiguous()?;
    let weight = lin.weight().contiguous()?;
    let bias = lin.bias().map(Tensor::contiguous).transpose()?;
    let (xd, wd) = (F32Data::new(&x)?, F32Data::new(&weight)?);
    let bd = bias.as_ref().map(F32Data::new).transpose()?;
    let mut out = zeroed(rows * outputs);
    let accumulate = match &bd {
        Some(b) if b.slice().len() == outputs => {
            let b = b.slice();
            out.par_chunks_mut(outputs * 64).for_each(|chunk| chunk.chunks_exact_mut(outputs).for_each(|row| row.copy_from_slice(b)));
            true
        }
        Some(_) => bail!("linear: bias does not have {outputs} entries"),
        None => false,
    };
    let dst = SharedOut(out.as_mut_ptr());
    // SAFETY: sizes come from the checked shapes; `out` is exclusively ours during the call.
    unsafe {
        gemm_f32_banded(
            rows,
            outputs,
            inputs,
            MatMut { ptr: dst.0, row_stride: outputs as isize, col_stride: 1 },
            MatRef { ptr: xd.slice().as_ptr(), row_stride: inputs as isize, col_stride: 1 },
            // W^T read in place: element (i, j) of W^T is weight[j, i].
            MatRef { ptr: wd.slice().as_ptr(), row_stride: 1, col_stride: inputs as isize },
            accumulate,
            rayon::current_num_threads(),
        )
    };
    let mut out_dims = dims;
    if let Some(last) = out_dims.last_mut() {
        *last = outputs;
    }
    tensor_from_vec(out, out_dims)
}

/// `lin` applied to every pixel of a channels-first image: `x: [B, C_in, H, W]` -> tokens
/// `[B, H*W, C_out]` (a Transformer2D's `proj_in`). The CPU kernel reads `x` transposed in place
/// instead of copying it to channels-last first.
pub fn linear_from_channels_first(lin: &Linear, x: &Tensor) -> Result<Tensor> {
    let (batch, channels, height, width) = x.dims4()?;
    let pixels = height * width;
    if !(is_cpu_f32(x) && is_cpu_f32(lin.weight())) {
        let tokens = x.permute((0, 2, 3, 1))?.reshape((batch, pixels, channels))?;
        return linear(lin, &tokens);
    }
    let _t = profile::timer("linear");
    let (outputs, inputs) = lin.weight().dims2()?;
    if inputs != channels {
        bail!("linear: {channels} channels into a layer of {inputs} inputs");
    }
    let x = x.contiguous()?;
    let weight = lin.weight().contiguous()?;
    let bias = lin.bias().map(Tensor::contiguous).transpose()?;
    let (xd, wd) = (F32Data::new(&x)?, F32Data::new(&weight)?);
    let bd = bias.as_ref().map(F32Data::new).transpose()?;
    let mut out = zeroed(batch * pixels * outputs);
    let accumulate = match &bd {
        Some(b) if b.slice().len() == outputs => {
            let b = b.slice();
            out.par_chunks_mut(outputs * 64).for_each(|chunk| chunk.chunks_exact_mut(outputs).for_each(|row| row.copy_from_slice(b)));
            true
        }
        Some(_) => bail!("linear: bias does not have {outputs} entries"),
        None => false,
    };
    for item in 0..batch {
        // SAFETY: item `item` owns rows `item * pixels ..` of `out`; reads stay inside x and W.
        unsafe {
            gemm_f32_banded(
                pixels,
                outputs,
                inputs,
                MatMut { ptr: out.as_mut_ptr().add(item * pixels * outputs), row_stride: outputs as isize, col_stride: 1 },
                // Token p, channel c of image `item` is x[item, c, p].
                MatRef { ptr: xd.slice().as_ptr().add(item * inputs * pixels), row_stride: 1, col_stride: pixels as isize },
                MatRef { ptr: wd.slice().as_ptr(), row_stride: 1, col_stride: inputs as isize },
                accumulate,
                rayon::current_num_threads(),
            )
        };
    }
    tensor_from_vec(out, (batch, pixels, outputs))
}

/// `residual + lin(tokens)` laid out channels-first: `tokens: [B, H*W, C_in]`, `residual:
/// [B, C_out, H, W]` -> `[B, C_out, H, W]` (a Transformer2D's `proj_out` and its skip). On CPU the
/// gemm writes the channels-first result directly onto a copy of the residual plus bias.
pub fn linear_to_channels_first_add(lin: &Linear, tokens: &Tensor, residual: &Tensor) -> Result<Tensor> {
    let (batch, channels, height, width) = residual.dims4()?;
    let pixels = height * width;
    if !(is_cpu_f32(tokens) && is_cpu_f32(residual) && is_cpu_f32(lin.weight())) {
        let hidden = linear(lin, tokens)?.reshape((batch, height, width, channels))?.permute((0, 3, 1, 2))?;
        return hidden + residual;
    }
    let _t = profile::timer("linear");
    let (outputs, inputs) = lin.weight().dims2()?;
    let (t_batch, t_pixels, t_channels) = tokens.dims3()?;
    if outputs != channels || t_batch != batch || t_pixels != pixels || t_channels != inputs {
        bail!("linear: tokens {:?} and residual {:?} do not fit a {inputs}->{outputs} layer", tokens.dims(), residual.dims());
    }
    let tokens = tokens.contiguous()?;
    let residual = residual.contiguous()?;
    let weight = lin.weight().contiguous()?;
    let bias = lin.bias().map(Tensor::contiguous).transpose()?;
    let (td, rd, wd) = (F32Data::new(&tokens)?, F32Data::new(&residual)?, F32Data::new(&weight)?);
    let bd = bias.as_ref().map(F32Data::new).transpose()?;
    let mut out = rd.slice().to_vec();
    if let Some(b) = &bd {
        let b = b.slice();
        if b.len() != outputs {
            bail!("linear: bias does not have {outputs} entries");
        }
        out.par_chunks_mut(pixels.max(1)).enumerate().for_each(|(row, plane)| {
            let add = b[row % outputs];
            plane.iter_mut().for_each(|v| *v += add);
        });
    }
    for item in 0..batch {
        // SAFETY: image `item` owns its `outputs * pixels` block of `out`.
        unsafe {
            gemm_f32_banded(
                outputs,
                pixels,
                inputs,
                MatMut { ptr: out.as_mut_ptr().add(item * outputs * pixels), row_stride: pixels as isize, col_stride: 1 },
                MatRef { ptr: wd.slice().as_ptr(), row_stride: inputs as isize, col_stride: 1 },
                // Element (c, p) of the transposed tokens is tokens[item, p, c].
                MatRef { ptr: td.slice().as_ptr().add(item * pixels * inputs), row_stride: 1, col_stride: inputs as isize },
                true,
                rayon::current_num_threads(),
            )
        };
    }
    tensor_from_vec(out, (batch, channels, height, width))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::kernels::test_util::{relative_max_diff, seeded};

    #[test]
    fn channels_first_variants_match_permute_then_linear() {
        let image = seeded(&[2, 24, 5, 7], 4, 2.0);
        let residual = seeded(&[2, 40, 5, 7], 5, 2.0);
        let w_in = seeded(&[40, 24], 6, 0.3);
        let w_out = seeded(&[40, 40], 7, 0.3);
        let proj_in = Linear::new(w_in, Some(seeded(&[40], 8, 0.3)));
        let proj_out = Linear::new(w_out, Some(seeded(&[40], 9, 0.3)));
        let tokens = image.permute((0, 2, 3, 1)).unwrap().reshape((2, 35, 24)).unwrap();
        let want_tokens = proj_in.forward(&tokens).unwrap();
        let got_tokens = linear_from_channels_first(&proj_in, &image).unwrap();
        assert!(relative_max_diff(&got_tokens, &want_tokens) < 1e-6);
        let want = (proj_out.forward(&want_tokens).unwrap().reshape((2, 5, 7, 40)).unwrap().permute((0, 3, 1, 2)).unwrap() + &residual).unwrap();
        let got = linear_to_channels_first_add(&proj_out, &want_tokens, &residual).unwrap();
        assert!(relative_max_diff(&got, &want) < 1e-6);
    }

    #[test]
    fn matches_candle_linear_with_and_without_bias() {
        let x = seeded(&[2, 37, 24], 1, 2.0);
        let w = seeded(&[40, 24], 2, 0.3);
        let b = seeded(&[40], 3, 0.3);
        for lin in [Linear::new(w.clone(), Some(b)), Linear::new(w, None)] {
            let got = linear(&lin, &x).unwrap();
            let want = lin.forward(&x).unwrap();
            assert!(relative_max_diff(&got, &want) < 1e-6);
        }
    }
}
