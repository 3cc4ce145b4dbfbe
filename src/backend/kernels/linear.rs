//! Linear layers on the CPU as one gemm with the bias pre-filled into the output (candle runs
//! the matmul and then a separate broadcast add over a fresh tensor).

use candle_core::{bail, Module, Result, Tensor};
use candle_nn::Linear;
use rayon::prelude::*;

use super::cpu_tensor::{is_cpu_f32, tensor_from_vec, zeroed, F32Data, SharedOut};
use super::gemm_call::{gemm_f32, MatMut, MatRef};
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
        gemm_f32(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::kernels::test_util::{relative_max_diff, seeded};

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
