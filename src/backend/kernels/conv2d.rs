//! 2-D convolution on the CPU as row-tiled im2col + one gemm per tile, written straight into the
//! NCHW output; 1x1 convolutions as a plain gemm on the input, without any copy.
//!
//! candle 0.11's CPU conv spends most of its time in a scalar im2col whose writes are strided by
//! the tile size and in a scalar scatter of the result back to NCHW. Here a tile is a band of
//! whole output rows (~512 pixels, so the column buffer stays in L2): its im2col is made of row
//! copies, and gemm writes `weight[c_out, c_in*k*k] x col[c_in*k*k, band]` directly into the
//! output rows (bias pre-filled), because the torch weight layout already is that matrix.

use std::cell::{Cell, RefCell};

use candle_core::{bail, Module, Result, Tensor};
use candle_nn::Conv2d;
use rayon::prelude::*;

use super::cpu_tensor::{is_cpu_f32, tensor_from_vec, write_owned, zeroed, F32Data, SharedOut};
use super::gemm_call::{gemm_f32, MatMut, MatRef};
use super::profile;
use super::winograd;

/// Output pixels per tile: measured best for SD shapes (1024 and 2048 were 5-30 % slower).
const TILE_PIXELS: usize = 512;

thread_local! {
    /// Set while a [`QuantisedOutputScope`] lives on this thread.
    static QUANTISED_OUTPUT: Cell<bool> = const { Cell::new(false) };
}

/// While alive, marks the convolutions this thread runs as the last stage before 8-bit
/// quantisation (the VAE decoder): their 3x3 convolutions use Winograd F(4x4, 3x3), whose f32
/// rounding (~2e-6 of the layer's range, winograd.rs) is far below the 1/255 step of the image
/// they produce. Everywhere else 3x3 convolutions round like direct convolution (Winograd
/// F(2x2, 3x3) or im2col), because the UNet's and the encoder's outputs feed further sampling
/// steps, and the single-stage goldens (1e-5) leave no room for more.
pub struct QuantisedOutputScope {
    previous: bool,
}

/// Starts a [`QuantisedOutputScope`] on this thread.
pub fn quantised_output_scope() -> QuantisedOutputScope {
    QuantisedOutputScope { previous: QUANTISED_OUTPUT.replace(true) }
}

impl Drop for QuantisedOutputScope {
    fn drop(&mut self) {
        QUANTISED_OUTPUT.set(self.previous);
    }
}

/// Zero padding per side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Padding {
    pub top: usize,
    pub bottom: usize,
    pub left: usize,
    pub right: usize,
}

impl Padding {
    pub const fn same(p: usize) -> Self {
        Self { top: p, bottom: p, left: p, right: p }
    }
}

/// `conv.forward(x)`, with the CPU kernel where it applies (f32, groups 1, dilation 1).
pub fn conv2d_layer(conv: &Conv2d, x: &Tensor) -> Result<Tensor> {
    conv2d_layer_padded(conv, x, Padding::same(0))
}

/// `conv.forward(x)` after zero-padding `x` by `extra` (on top of the layer's own padding):
/// diffusers' `Downsample2D` pads only bottom/right. Padding happens inside the im2col on CPU.
pub fn conv2d_layer_padded(conv: &Conv2d, x: &Tensor, extra: Padding) -> Result<Tensor> {
    let cfg = conv.config();
    if takes_kernel(conv, x) {
        let p = cfg.padding;
        let pad = Padding { top: p + extra.top, bottom: p + extra.bottom, left: p + extra.left, right: p + extra.right };
        return conv2d(x, conv.weight(), conv.bias(), cfg.stride, pad, Residual::None);
    }
    let _t = profile::timer("conv (candle)");
    if extra == Padding::same(0) {
        conv.forward(x)
    } else {
        let padded = x.pad_with_zeros(2, extra.top, extra.bottom)?.pad_with_zeros(3, extra.left, extra.right)?;
        conv.forward(&padded)
    }
}

/// `conv.forward(x.upsample_nearest2d(2h, 2w))`, diffusers' `Upsample2D`. Where the convolution
/// takes the Winograd path on CPU the upsampled input is never built: the input transform reads
/// each source pixel twice. At 512x512 the VAE decoder's last upsample would otherwise hold a
/// 256 MiB copy next to the conv's output, the peak RSS of a whole job.
pub fn conv2d_layer_upsampled(conv: &Conv2d, x: &Tensor) -> Result<Tensor> {
    let (n, c_in, h, w) = x.dims4()?;
    let cfg = conv.config();
    let (c_out, w_c_in, kh, kw) = conv.weight().dims4()?;
    let shape = winograd::Shape { n, c_in, c_out, h: 2 * h, w: 2 * w };
    let fusable = takes_kernel(conv, x) && w_c_in == c_in && takes_winograd((kh, kw), cfg.stride, Padding::same(cfg.padding), &shape);
    if !fusable {
        let upsampled = {
            let _t = profile::timer("upsample");
            x.upsample_nearest2d(2 * h, 2 * w)?
        };
        return conv2d_layer(conv, &upsampled);
    }
    let variant = winograd_variant();
    let _t = profile::timer(variant.timer_label());
    let x = x.contiguous()?;
    let weight = conv.weight().contiguous()?;
    let bias = conv.bias().map(Tensor::contiguous).transpose()?;
    let (xd, wd) = (F32Data::new(&x)?, F32Data::new(&weight)?);
    let bd = bias.as_ref().map(F32Data::new).transpose()?;
    let mut out = zeroed(n * c_out * shape.h * shape.w);
    winograd::conv3x3_upsampled(variant, &shape, xd.slice(), wd.slice(), bd.as_ref().map(|b| b.slice()), &mut out);
    tensor_from_vec(out, (n, c_out, shape.h, shape.w))
}

/// Whether this layer on `x` runs through this file's CPU kernel: f32 on the CPU, no groups, no
/// dilation (everything else keeps candle's conv).
fn takes_kernel(conv: &Conv2d, x: &Tensor) -> bool {
    let cfg = conv.config();
    cfg.groups == 1 && cfg.dilation == 1 && is_cpu_f32(x) && is_cpu_f32(conv.weight())
}

/// Whether a convolution with this kernel, stride, padding and (output) shape runs as Winograd:
/// 3x3, stride 1, same padding, and enough pixels to pay for the transforms.
fn takes_winograd(kernel: (usize, usize), stride: usize, pad: Padding, shape: &winograd::Shape) -> bool {
    kernel == (3, 3) && stride == 1 && pad == Padding::same(1) && winograd::worthwhile(shape)
}

/// The Winograd variant for this thread's convolutions ([`QuantisedOutputScope`]).
fn winograd_variant() -> winograd::Variant {
    if QUANTISED_OUTPUT.get() {
        winograd::Variant::F4x4
    } else {
        winograd::Variant::F2x2
    }
}

/// `residual + conv.forward(x)`; on CPU the convolution accumulates straight onto a copy of the
/// residual, so the sum needs no extra tensor or pass (resnet skip connections).
pub fn conv2d_layer_add(conv: &Conv2d, x: &Tensor, residual: &Tensor) -> Result<Tensor> {
    let cfg = conv.config();
    if takes_kernel(conv, x) && is_cpu_f32(residual) {
        return conv2d(x, conv.weight(), conv.bias(), cfg.stride, Padding::same(cfg.padding), Residual::Copy(residual));
    }
    conv2d_layer(conv, x)? + residual
}

/// [`conv2d_layer_add`] accumulating into `residual` itself on CPU, for a residual the caller
/// owns outright ([`write_owned`]): the resnet's output then reuses the skip path's buffer.
pub fn conv2d_layer_add_owned(conv: &Conv2d, x: &Tensor, residual: Tensor) -> Result<Tensor> {
    let cfg = conv.config();
    if takes_kernel(conv, x) && is_cpu_f32(&residual) && residual.is_contiguous() {
        return conv2d(x, conv.weight(), conv.bias(), cfg.stride, Padding::same(cfg.padding), Residual::Owned(residual));
    }
    conv2d_layer(conv, x)? + residual
}

/// What a [`conv2d`] output starts from.
pub enum Residual<'a> {
    /// Nothing: the output is a fresh buffer.
    None,
    /// A copy of this tensor, which the convolution accumulates onto.
    Copy(&'a Tensor),
    /// This tensor's own buffer, overwritten with the sum (a contiguous tensor the caller owns
    /// outright, see [`write_owned`]).
    Owned(Tensor),
}

/// Convolution of `x: [N, C_in, H, W]` with `weight: [C_out, C_in, kh, kw]`, optional `bias:
/// [C_out]`, plus an optional `residual` shaped like the output, on f32 CPU tensors.
pub fn conv2d(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>, stride: usize, pad: Padding, residual: Residual) -> Result<Tensor> {
    let (n, c_in, h, w) = x.dims4()?;
    let (c_out, w_c_in, kh, kw) = weight.dims4()?;
    if w_c_in != c_in {
        bail!("conv2d: input has {c_in} channels, weight expects {w_c_in}");
    }
    if stride == 0 {
        bail!("conv2d: stride 0");
    }
    let (h_pad, w_pad) = (h + pad.top + pad.bottom, w + pad.left + pad.right);
    if h_pad < kh || w_pad < kw {
        bail!("conv2d: padded input {h_pad}x{w_pad} is smaller than the {kh}x{kw} kernel");
    }
    let geometry = Geometry {
        n,
        c_in,
        h,
        w,
        c_out,
        kh,
        kw,
        stride,
        pad,
        h_out: (h_pad - kh) / stride + 1,
        w_out: (w_pad - kw) / stride + 1,
    };
    let winograd_shape = winograd::Shape { n, c_in, c_out, h, w };
    let use_winograd = takes_winograd((kh, kw), stride, pad, &winograd_shape);
    let variant = winograd_variant();
    let _t = profile::timer(match (kh, kw, stride) {
        _ if use_winograd => variant.timer_label(),
        (1, 1, 1) => "conv 1x1",
        (_, _, 1) => "conv 3x3",
        _ => "conv strided",
    });
    let x = x.contiguous()?;
    let weight = weight.contiguous()?;
    let bias = bias.map(Tensor::contiguous).transpose()?;
    let xd = F32Data::new(&x)?;
    let wd = F32Data::new(&weight)?;
    let bd = bias.as_ref().map(F32Data::new).transpose()?;
    if let Some(b) = &bd {
        if b.slice().len() != c_out {
            bail!("conv2d: bias has {} entries for {c_out} output channels", b.slice().len());
        }
    }
    let out_dims = [n, c_out, geometry.h_out, geometry.w_out];
    let bias = bd.as_ref().map(|b| b.slice());
    let compute = |out: &mut [f32], onto_residual: bool| {
        if use_winograd {
            winograd::conv3x3(variant, &winograd_shape, xd.slice(), wd.slice(), bias, onto_residual, out);
        } else {
            run(&geometry, xd.slice(), wd.slice(), bias, onto_residual, out);
        }
    };
    let check_residual = |r: &Tensor| {
        if r.dims() != out_dims {
            bail!("conv2d: residual {:?} does not match the output {out_dims:?}", r.dims())
        }
        Ok(())
    };
    match residual {
        Residual::None => {
            let mut out = zeroed(out_dims.iter().product());
            compute(&mut out, false);
            tensor_from_vec(out, out_dims.to_vec())
        }
        Residual::Copy(r) => {
            check_residual(r)?;
            let r = r.contiguous()?;
            let mut out = F32Data::new(&r)?.slice().to_vec();
            compute(&mut out, true);
            tensor_from_vec(out, out_dims.to_vec())
        }
        Residual::Owned(r) => {
            check_residual(&r)?;
            write_owned(&r, |out| {
                compute(out, true);
                Ok(())
            })?;
            Ok(r)
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Geometry {
    n: usize,
    c_in: usize,
    h: usize,
    w: usize,
    c_out: usize,
    kh: usize,
    kw: usize,
    stride: usize,
    pad: Padding,
    h_out: usize,
    w_out: usize,
}

impl Geometry {
    fn is_pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == 1 && self.pad == Padding::same(0)
    }
}

/// One unit of parallel work: output rows `rows.0..rows.1` of batch item `item`, or for a
/// pointwise conv the flat pixels `rows.0..rows.1`.
#[derive(Debug, Clone, Copy)]
struct Tile {
    item: usize,
    start: usize,
    end: usize,
}

thread_local! {
    /// Per-thread im2col buffer, reused across calls so tiles never page-fault fresh memory.
    static COLUMNS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Frees this thread's im2col buffer (it grows to the largest call's size: ~24 MiB per thread
/// for the UNet's 2560-channel 16x16 convolutions).
pub(super) fn release_thread_scratch() {
    super::cpu_tensor::release_thread_scratch(&COLUMNS);
}

fn run(g: &Geometry, x: &[f32], weight: &[f32], bias: Option<&[f32]>, onto_residual: bool, out: &mut [f32]) {
    let threads = rayon::current_num_threads().max(1);
    let pointwise = g.is_pointwise();
    let hw_out = g.h_out * g.w_out;
    // Tiles of whole rows (or of flat pixels), shrunk when needed so every thread gets work.
    let (span, unit) = if pointwise { (hw_out, 1) } else { (g.h_out, g.w_out) };
    let per_tile = (TILE_PIXELS / unit).max(1).min((g.n * span).div_ceil(threads)).max(1);
    let tiles: Vec<Tile> = (0..g.n)
        .flat_map(|item| (0..span).step_by(per_tile).map(move |start| Tile { item, start, end: (start + per_tile).min(span) }))
        .collect();
    let out_ptr = SharedOut(out.as_mut_ptr());
    let work = |tile: &Tile, gemm_threads: usize| {
        // SAFETY: tiles cover disjoint output pixels (rows `start..end` of one batch item, for
        // every output channel), and `out` outlives the parallel loop.
        unsafe {
            if pointwise {
                pointwise_tile(g, tile, x, weight, bias, onto_residual, out_ptr, gemm_threads)
            } else {
                im2col_tile(g, tile, x, weight, bias, onto_residual, out_ptr, gemm_threads)
            }
        }
    };
    if tiles.len() >= threads {
        tiles.par_iter().for_each(|tile| work(tile, 1));
    } else {
        tiles.iter().for_each(|tile| work(tile, threads));
    }
}

/// Puts `bias[c]` into `pixels` output elements per channel starting at `dst` (channel stride
/// `channel_stride`): written, or added when the output already holds a residual. Returns
/// whether gemm must accumulate onto the output.
unsafe fn prefill_bias(dst: *mut f32, channel_stride: usize, pixels: usize, bias: Option<&[f32]>, onto_residual: bool) -> bool {
    if let Some(bias) = bias {
        for (c, &b) in bias.iter().enumerate() {
            let plane = std::slice::from_raw_parts_mut(dst.add(c * channel_stride), pixels);
            if onto_residual {
                plane.iter_mut().for_each(|v| *v += b);
            } else {
                plane.fill(b);
            }
        }
    }
    onto_residual || bias.is_some()
}

#[allow(clippy::too_many_arguments)]
unsafe fn pointwise_tile(g: &Geometry, tile: &Tile, x: &[f32], weight: &[f32], bias: Option<&[f32]>, onto_residual: bool, out: SharedOut, threads: usize) {
    let hw = g.h_out * g.w_out;
    let pixels = tile.end - tile.start;
    let dst = out.0.add(tile.item * g.c_out * hw + tile.start);
    let accumulate = prefill_bias(dst, hw, pixels, bias, onto_residual);
    gemm_f32(
        g.c_out,
        pixels,
        g.c_in,
        MatMut { ptr: dst, row_stride: hw as isize, col_stride: 1 },
        MatRef { ptr: weight.as_ptr(), row_stride: g.c_in as isize, col_stride: 1 },
        MatRef { ptr: x.as_ptr().add(tile.item * g.c_in * hw + tile.start), row_stride: hw as isize, col_stride: 1 },
        accumulate,
        threads,
    );
}

#[allow(clippy::too_many_arguments)]
unsafe fn im2col_tile(g: &Geometry, tile: &Tile, x: &[f32], weight: &[f32], bias: Option<&[f32]>, onto_residual: bool, out: SharedOut, threads: usize) {
    let pixels = (tile.end - tile.start) * g.w_out;
    let depth = g.c_in * g.kh * g.kw;
    COLUMNS.with(|cell| {
        let mut columns = cell.borrow_mut();
        if columns.len() < depth * pixels {
            columns.resize(depth * pixels, 0.0);
        }
        let columns = &mut columns[..depth * pixels];
        fill_columns(g, tile, x, columns, pixels);
        let hw_out = g.h_out * g.w_out;
        let dst = out.0.add(tile.item * g.c_out * hw_out + tile.start * g.w_out);
        let accumulate = prefill_bias(dst, hw_out, pixels, bias, onto_residual);
        gemm_f32(
            g.c_out,
            pixels,
            depth,
            MatMut { ptr: dst, row_stride: hw_out as isize, col_stride: 1 },
            MatRef { ptr: weight.as_ptr(), row_stride: depth as isize, col_stride: 1 },
            MatRef { ptr: columns.as_ptr(), row_stride: pixels as isize, col_stride: 1 },
            accumulate,
            threads,
        );
    });
}

/// im2col of output rows `tile.start..tile.end`: row `(ci, ky, kx)` of `columns` holds, for each
/// output pixel of the band, the input value that kernel tap multiplies (0 in the padding).
fn fill_columns(g: &Geometry, tile: &Tile, x: &[f32], columns: &mut [f32], pixels: usize) {
    let image = &x[tile.item * g.c_in * g.h * g.w..][..g.c_in * g.h * g.w];
    let mut rows = columns.chunks_exact_mut(pixels);
    for ci in 0..g.c_in {
        let plane = &image[ci * g.h * g.w..][..g.h * g.w];
        for ky in 0..g.kh {
            for kx in 0..g.kw {
                let Some(column_row) = rows.next() else { return };
                for (band_row, dst) in column_row.chunks_exact_mut(g.w_out).enumerate() {
                    let y = ((tile.start + band_row) * g.stride + ky) as isize - g.pad.top as isize;
                    if y < 0 || y >= g.h as isize {
                        dst.fill(0.0);
                        continue;
                    }
                    let src = &plane[y as usize * g.w..][..g.w];
                    copy_tap_row(src, dst, kx, g.pad.left, g.stride);
                }
            }
        }
    }
}

/// `dst[xo] = src[xo * stride + kx - left]`, 0 where that index is outside `src`.
fn copy_tap_row(src: &[f32], dst: &mut [f32], kx: usize, left: usize, stride: usize) {
    if stride == 1 {
        let w_out = dst.len();
        // First and one-past-last output column whose input column is inside the row.
        let lo = left.saturating_sub(kx).min(w_out);
        let hi = (src.len() + left).saturating_sub(kx).min(w_out).max(lo);
        dst[..lo].fill(0.0);
        if hi > lo {
            let from = lo + kx - left;
            dst[lo..hi].copy_from_slice(&src[from..from + (hi - lo)]);
        }
        dst[hi..].fill(0.0);
    } else {
        for (xo, d) in dst.iter_mut().enumerate() {
            let xi = (xo * stride + kx) as isize - left as isize;
            *d = if xi >= 0 && (xi as usize) < src.len() { src[xi as usize] } else { 0.0 };
        }
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device};
    use candle_nn::{Conv2dConfig, VarBuilder};

    use super::*;
    use crate::backend::kernels::test_util::{relative_max_diff, seeded};

    fn reference(x: &Tensor, w: &Tensor, b: Option<&Tensor>, stride: usize, pad: Padding) -> Tensor {
        let padded = x.pad_with_zeros(2, pad.top, pad.bottom).unwrap().pad_with_zeros(3, pad.left, pad.right).unwrap();
        let y = padded.conv2d(w, 0, stride, 1, 1).unwrap();
        match b {
            Some(b) => y.broadcast_add(&b.reshape((1, (), 1, 1)).unwrap()).unwrap(),
            None => y,
        }
    }

    #[test]
    fn matches_candle_conv_for_sd_shapes_in_miniature() {
        // (n, c_in, h, w, c_out, k, stride, padding)
        let cases = [
            (2, 5, 9, 11, 7, 3, 1, Padding::same(1)),
            (1, 3, 17, 13, 4, 3, 2, Padding::same(1)),
            (2, 6, 8, 8, 6, 3, 2, Padding { top: 0, left: 0, bottom: 1, right: 1 }),
            (2, 8, 7, 5, 3, 1, 1, Padding::same(0)),
            (1, 4, 40, 40, 5, 3, 1, Padding::same(1)),
            (1, 4, 40, 40, 5, 3, 1, Padding { top: 1, bottom: 1, left: 1, right: 2 }),
            (1, 2, 6, 7, 3, 5, 1, Padding::same(2)),
        ];
        for (i, &(n, c_in, h, w, c_out, k, stride, pad)) in cases.iter().enumerate() {
            let x = seeded(&[n, c_in, h, w], 1 + i as u64, 2.0);
            let weight = seeded(&[c_out, c_in, k, k], 100 + i as u64, 0.5);
            let bias = seeded(&[c_out], 200 + i as u64, 0.5);
            // The 40x40 3x3 same-padded case has 100 tiles and takes the Winograd path, whose
            // f32 rounding error is a few times im2col's (winograd.rs).
            let winograd = takes_winograd((k, k), stride, pad, &winograd::Shape { n, c_in, c_out, h, w });
            let bound = if winograd { 5e-6 } else { 1e-6 };
            for b in [None, Some(&bias)] {
                let got = conv2d(&x, &weight, b, stride, pad, Residual::None).unwrap();
                let want = reference(&x, &weight, b, stride, pad);
                let diff = relative_max_diff(&got, &want);
                assert!(diff < bound, "case {i} bias {}: {diff}", b.is_some());
                let residual = seeded(want.dims(), 300 + i as u64, 1.0);
                let got = conv2d(&x, &weight, b, stride, pad, Residual::Copy(&residual)).unwrap();
                let diff = relative_max_diff(&got, &(&want + &residual).unwrap());
                assert!(diff < bound, "case {i} residual: {diff}");
                // Accumulating into the residual's own buffer gives the same bits.
                let owned = conv2d(&x, &weight, b, stride, pad, Residual::Owned(residual.copy().unwrap())).unwrap();
                assert_eq!(relative_max_diff(&owned, &got), 0.0, "case {i} owned residual");
            }
        }
    }

    #[test]
    fn quantised_output_scope_switches_to_the_4x4_winograd_and_restores() {
        let x = seeded(&[1, 8, 40, 40], 11, 2.0);
        let weight = seeded(&[8, 8, 3, 3], 12, 0.3);
        let want = reference(&x, &weight, None, 1, Padding::same(1));
        let exact = conv2d(&x, &weight, None, 1, Padding::same(1), Residual::None).unwrap();
        let quantised = {
            let _scope = quantised_output_scope();
            let nested = quantised_output_scope();
            drop(nested); // an inner scope ending keeps the outer one in force
            conv2d(&x, &weight, None, 1, Padding::same(1), Residual::None).unwrap()
        };
        let after = conv2d(&x, &weight, None, 1, Padding::same(1), Residual::None).unwrap();
        assert!(relative_max_diff(&exact, &want) < 1e-6);
        assert!(relative_max_diff(&quantised, &want) < 5e-6);
        // Different rounding proves the other variant ran; equality after proves the reset.
        assert!(relative_max_diff(&quantised, &exact) > 0.0);
        assert_eq!(relative_max_diff(&after, &exact), 0.0);
    }

    #[test]
    fn layer_entry_point_keeps_candle_for_other_dtypes() {
        let dev = Device::Cpu;
        let vb = VarBuilder::zeros(DType::F64, &dev);
        let cfg = Conv2dConfig { padding: 1, ..Default::default() };
        let conv = candle_nn::conv2d(3, 4, 3, cfg, vb).unwrap();
        let x = Tensor::ones((1, 3, 5, 5), DType::F64, &dev).unwrap();
        let y = conv2d_layer(&conv, &x).unwrap();
        assert_eq!(y.dims(), &[1, 4, 5, 5]);
        assert_eq!(y.dtype(), DType::F64);
    }
}
