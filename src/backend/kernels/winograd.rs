//! 3x3, stride-1, padding-1 convolution by Winograd's minimal filtering F(m x m, 3x3).
//!
//! im2col + gemm spends 9 multiplies per output pixel and channel pair; after the Winograd
//! transforms an m x m output tile costs (m + 2)² of them: 4 per pixel for F(2x2, 3x3) (2.25x
//! less gemm work) and 2.25 for F(4x4, 3x3) (4x less). The transforms are cheap next to the gemm
//! at SD's channel counts:
//! - weights: `U = G g Gᵀ` per channel pair, computed per call (caching them would cost 1.8-4x
//!   the conv weights in resident memory), in chunks of output channels so `U` stays bounded;
//! - input: `V = Bᵀ d B` per input patch, for one block of tile rows at a time, into a per-thread
//!   buffer laid out `[position][c_in][tiles]`, so each position's product `M = U V` is one plain
//!   gemm;
//! - output: `Y = Aᵀ M A`, plus the bias (and the resnet residual already in the output).
//!
//! The transforms run on whole tile rows: input rows are split into column phases so every
//! transform step is a long unit-stride loop that LLVM vectorises under `simd_dispatch!`.
//!
//! Rounding (max relative error of one 320-channel layer against float64): im2col 3.5e-7,
//! F(2x2) 3.5e-7, F(4x4) 1.8e-6 with the interpolation points 0, 1, -1, 1/2, -2 used here (the
//! textbook 0, ±1, ±2 give 6e-6). F(4x4)'s extra error is why callers choose the variant.

use std::cell::RefCell;

use rayon::prelude::*;

use super::cpu_tensor::SharedOut;
use super::gemm_call::{gemm_f32, MatMut, MatRef};
use super::simd::simd_dispatch;

/// Which tile size to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// F(2x2, 3x3): rounds like direct convolution.
    F2x2,
    /// F(4x4, 3x3): 1.8x less gemm work than F(2x2), ~5x direct convolution's rounding error.
    F4x4,
}

impl Variant {
    /// The op class in the benchmark's breakdown.
    pub fn timer_label(self) -> &'static str {
        match self {
            Variant::F2x2 => "conv 3x3 (winograd 2x2)",
            Variant::F4x4 => "conv 3x3 (winograd 4x4)",
        }
    }
}

/// The transform matrices of F(OUT x OUT, 3x3), IN = OUT + 2 inputs per tile side.
struct Matrices<const OUT: usize, const IN: usize> {
    /// `Bᵀ` (input transform), rows = transformed positions.
    bt: [[f32; IN]; IN],
    /// `G` (weight transform).
    g: [[f32; 3]; IN],
    /// `Aᵀ` (output transform).
    at: [[f32; IN]; OUT],
}

/// Points 0, 1, -1 and infinity.
const F2X2: Matrices<2, 4> = Matrices {
    bt: [[1.0, 0.0, -1.0, 0.0], [0.0, 1.0, 1.0, 0.0], [0.0, -1.0, 1.0, 0.0], [0.0, 1.0, 0.0, -1.0]],
    g: [[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]],
    at: [[1.0, 1.0, 1.0, 0.0], [0.0, 1.0, -1.0, -1.0]],
};

/// Points 0, 1, -1, 1/2, -2 and infinity.
const F4X4: Matrices<4, 6> = Matrices {
    bt: [
        [1.0, -1.5, -2.0, 1.5, 1.0, 0.0],
        [0.0, -1.0, 0.5, 2.5, 1.0, 0.0],
        [0.0, 1.0, -2.5, 0.5, 1.0, 0.0],
        [0.0, -2.0, -1.0, 2.0, 1.0, 0.0],
        [0.0, 0.5, -1.0, -0.5, 1.0, 0.0],
        [0.0, 1.0, -1.5, -2.0, 1.5, 1.0],
    ],
    g: [
        [1.0, 0.0, 0.0],
        [1.0 / 3.0, 1.0 / 3.0, 1.0 / 3.0],
        [-1.0 / 3.0, 1.0 / 3.0, -1.0 / 3.0],
        [-16.0 / 15.0, -8.0 / 15.0, -4.0 / 15.0],
        [1.0 / 15.0, -2.0 / 15.0, 4.0 / 15.0],
        [0.0, 0.0, 1.0],
    ],
    at: [
        [1.0, 1.0, 1.0, 1.0, 1.0, 0.0],
        [0.0, 1.0, -1.0, 0.5, -2.0, 0.0],
        [0.0, 1.0, 1.0, 0.25, 4.0, 0.0],
        [0.0, 1.0, -1.0, 0.125, -8.0, 1.0],
    ],
};

/// Channel pairs the weight transform handles together (one AVX-512 register of f32).
const LANES: usize = 16;
/// Below this many output pixels per call the position gemms are too thin to beat one im2col
/// gemm (64 tiles of 4x4).
const MIN_PIXELS: usize = 1024;
/// Upper bound on the transformed weights held at once; output channels are chunked to fit.
const MAX_U_BYTES: usize = 64 << 20;

/// Shapes of one call: input `[n, c_in, h, w]`, output `[n, c_out, h, w]`.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub n: usize,
    pub c_in: usize,
    pub c_out: usize,
    pub h: usize,
    pub w: usize,
}

/// Whether Winograd pays off for a 3x3 stride-1 pad-1 convolution of this shape.
pub fn worthwhile(s: &Shape) -> bool {
    s.n * s.h * s.w >= MIN_PIXELS && s.c_in > 0 && s.c_out > 0
}

/// A block of whole tile rows of one batch item: the unit of parallel work.
#[derive(Debug, Clone, Copy)]
struct Block {
    item: usize,
    row0: usize,
    row1: usize,
}

thread_local! {
    /// Per-thread `V`, `M` and row-transform buffers, reused across calls so blocks never
    /// page-fault fresh memory.
    static SCRATCH: RefCell<(Vec<f32>, Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new(), Vec::new())) };
}

/// Frees this thread's transform buffers.
pub(super) fn release_thread_scratch() {
    super::cpu_tensor::release_thread_scratch(&SCRATCH);
}

/// `out[n, c_out, h, w] (+)= conv3x3(x, weight) + bias` with stride 1 and zero padding 1; with
/// `onto_residual` the output already holds a residual to add onto.
pub fn conv3x3(variant: Variant, s: &Shape, x: &[f32], weight: &[f32], bias: Option<&[f32]>, onto_residual: bool, out: &mut [f32]) {
    conv3x3_bounded(variant, s, x, weight, bias, onto_residual, out, MAX_U_BYTES)
}

/// [`conv3x3`] of the nearest-neighbour 2x upsampling of `x: [n, c_in, h / 2, w / 2]` (`s`
/// gives the upsampled size, both sides even), without building the upsampled input: the input
/// transform reads each source pixel twice.
pub fn conv3x3_upsampled(variant: Variant, s: &Shape, x: &[f32], weight: &[f32], bias: Option<&[f32]>, out: &mut [f32]) {
    assert!(s.h.is_multiple_of(2) && s.w.is_multiple_of(2), "winograd: upsampled size {}x{} is odd", s.h, s.w);
    let call = Call { s, x, weight, bias, onto_residual: false, max_u_bytes: MAX_U_BYTES, upsampled: true };
    call.check_and_run(variant, out);
}

/// [`conv3x3`] holding at most `max_u_bytes` of transformed weights (at least one channel's).
#[allow(clippy::too_many_arguments)]
fn conv3x3_bounded(variant: Variant, s: &Shape, x: &[f32], weight: &[f32], bias: Option<&[f32]>, onto_residual: bool, out: &mut [f32], max_u_bytes: usize) {
    let call = Call { s, x, weight, bias, onto_residual, max_u_bytes, upsampled: false };
    call.check_and_run(variant, out);
}

/// The inputs of one convolution.
struct Call<'a> {
    s: &'a Shape,
    x: &'a [f32],
    weight: &'a [f32],
    bias: Option<&'a [f32]>,
    onto_residual: bool,
    max_u_bytes: usize,
    /// `x` is the half-size source of a nearest 2x upsampling.
    upsampled: bool,
}

impl Call<'_> {
    /// Height and width of the planes of `x`.
    fn source_size(&self) -> (usize, usize) {
        if self.upsampled {
            (self.s.h / 2, self.s.w / 2)
        } else {
            (self.s.h, self.s.w)
        }
    }

    fn check_and_run(&self, variant: Variant, out: &mut [f32]) {
        let (s, (sh, sw)) = (self.s, self.source_size());
        assert_eq!(self.x.len(), s.n * s.c_in * sh * sw, "winograd: input length");
        assert_eq!(self.weight.len(), s.c_out * s.c_in * 9, "winograd: weight length");
        assert_eq!(out.len(), s.n * s.c_out * s.h * s.w, "winograd: output length");
        if let Some(b) = self.bias {
            assert_eq!(b.len(), s.c_out, "winograd: bias length");
        }
        match variant {
            Variant::F2x2 => self.run(&F2X2, out),
            Variant::F4x4 => self.run(&F4X4, out),
        }
    }

    fn run<const OUT: usize, const IN: usize>(&self, mat: &Matrices<OUT, IN>, out: &mut [f32]) {
        let s = self.s;
        let positions = IN * IN;
        let threads = rayon::current_num_threads().max(1);
        let blocks = blocks(s, OUT, threads);
        let chunk = (self.max_u_bytes / (positions * s.c_in * 4)).clamp(1, s.c_out);
        let mut u = vec![0f32; positions * chunk * s.c_in];
        let out_ptr = SharedOut(out.as_mut_ptr());
        for co0 in (0..s.c_out).step_by(chunk) {
            let cob = chunk.min(s.c_out - co0);
            let u = &mut u[..positions * cob * s.c_in];
            transform_weights(mat, s.c_in, &self.weight[co0 * s.c_in * 9..][..cob * s.c_in * 9], cob, u);
            let u = &*u;
            let work = |block: &Block, gemm_threads: usize| {
                // SAFETY: blocks cover disjoint output rows of one batch item; within this chunk
                // each writes channels co0..co0+cob of its rows only, and `out` outlives the loop.
                unsafe { self.run_block(mat, block, u, co0, cob, out_ptr, gemm_threads) }
            };
            if blocks.len() >= threads {
                blocks.par_iter().for_each(|b| work(b, 1));
            } else {
                blocks.iter().for_each(|b| work(b, threads));
            }
        }
    }

    /// Input transform, position gemms and output transform for one block and one chunk of
    /// output channels.
    ///
    /// # Safety
    /// `out` must address the whole output; no other task may touch this block's output rows
    /// for channels `co0..co0 + cob` during the call.
    #[allow(clippy::too_many_arguments)]
    unsafe fn run_block<const OUT: usize, const IN: usize>(&self, mat: &Matrices<OUT, IN>, block: &Block, u: &[f32], co0: usize, cob: usize, out: SharedOut, gemm_threads: usize) {
        let s = self.s;
        let positions = IN * IN;
        let tiles_x = s.w.div_ceil(OUT);
        let nt = (block.row1 - block.row0) * tiles_x;
        SCRATCH.with(|cell| {
            let mut scratch = cell.borrow_mut();
            let (v, m, rows) = &mut *scratch;
            for (buffer, len) in [(&mut *v, positions * s.c_in * nt), (&mut *m, positions * cob * nt), (&mut *rows, 2 * IN * OUT * (tiles_x + 1) + s.w)] {
                if buffer.len() < len {
                    buffer.resize(len, 0.0);
                }
            }
            let (sh, sw) = self.source_size();
            let image = &self.x[block.item * s.c_in * sh * sw..][..s.c_in * sh * sw];
            for ci in 0..s.c_in {
                let plane = &image[ci * sh * sw..][..sh * sw];
                for row in block.row0..block.row1 {
                    let first = ci * nt + (row - block.row0) * tiles_x;
                    input_row(mat, plane, sw, self.upsampled, row, tiles_x, rows, v, first, s.c_in * nt);
                }
            }
            for p in 0..positions {
                gemm_f32(
                    cob,
                    nt,
                    s.c_in,
                    MatMut { ptr: m.as_mut_ptr().add(p * cob * nt), row_stride: nt as isize, col_stride: 1 },
                    MatRef { ptr: u.as_ptr().add(p * cob * s.c_in), row_stride: s.c_in as isize, col_stride: 1 },
                    MatRef { ptr: v.as_ptr().add(p * s.c_in * nt), row_stride: nt as isize, col_stride: 1 },
                    false,
                    gemm_threads,
                );
            }
            // This block's output rows, one channel at a time: disjoint from every other task's.
            let (y0, y1) = (OUT * block.row0, (OUT * block.row1).min(s.h));
            for co in 0..cob {
                let channel = co0 + co;
                let b = self.bias.map_or(0.0, |b| b[channel]);
                let dst = std::slice::from_raw_parts_mut(out.0.add(((block.item * s.c_out + channel) * s.h + y0) * s.w), (y1 - y0) * s.w);
                for row in block.row0..block.row1 {
                    let first = co * nt + (row - block.row0) * tiles_x;
                    output_row(mat, m, first, cob * nt, tiles_x, rows, dst, s.w, row - block.row0, b, self.onto_residual);
                }
            }
        });
    }
}

/// Blocks of ~`target` tiles (whole tile rows), at least one per thread where possible. The
/// target keeps one position's slice of `V` (`c_in x tiles`) within ~256 KiB of L2.
fn blocks(s: &Shape, out: usize, threads: usize) -> Vec<Block> {
    let (tiles_y, tiles_x) = (s.h.div_ceil(out), s.w.div_ceil(out));
    let target = (65_536 / s.c_in.max(1)).clamp(64, 256);
    let rows = (target / tiles_x).max(1).min((s.n * tiles_y).div_ceil(threads)).max(1);
    (0..s.n)
        .flat_map(|item| (0..tiles_y).step_by(rows).map(move |row0| Block { item, row0, row1: (row0 + rows).min(tiles_y) }))
        .collect()
}

/// `U[p][co][ci]` for output channels `co0..co0+cob` (`weight` is that chunk's `[cob, c_in, 3, 3]`).
fn transform_weights<const OUT: usize, const IN: usize>(mat: &Matrices<OUT, IN>, c_in: usize, weight: &[f32], cob: usize, u: &mut [f32]) {
    let u_ptr = SharedOut(u.as_mut_ptr());
    (0..cob).into_par_iter().for_each(|co| {
        let taps = &weight[co * c_in * 9..][..c_in * 9];
        let mut transformed = [[0f32; LANES]; 36];
        let transformed = &mut transformed[..IN * IN];
        for ci0 in (0..c_in).step_by(LANES) {
            let lanes = LANES.min(c_in - ci0);
            let mut g = [[0f32; LANES]; 9];
            for (l, patch) in taps[ci0 * 9..][..lanes * 9].chunks_exact(9).enumerate() {
                for (k, &v) in patch.iter().enumerate() {
                    g[k][l] = v;
                }
            }
            weight_lanes(mat, &g, transformed);
            for (p, values) in transformed.iter().enumerate() {
                // SAFETY: (p, co, ci0..ci0+lanes) is inside `u` and written by this task only.
                unsafe {
                    let dst = u_ptr.get().add((p * cob + co) * c_in + ci0);
                    std::ptr::copy_nonoverlapping(values.as_ptr(), dst, lanes);
                }
            }
        }
    });
}

simd_dispatch! {
    /// `G g Gᵀ` for 16 channel pairs at once; `g[ky * 3 + kx][lane]`, result `u[i * IN + j][lane]`.
    fn weight_lanes<const OUT: usize, const IN: usize>(mat: &Matrices<OUT, IN>, g: &[[f32; LANES]; 9], u: &mut [[f32; LANES]]) = weight_lanes_body;
}

#[inline(always)]
fn weight_lanes_body<const OUT: usize, const IN: usize>(mat: &Matrices<OUT, IN>, g: &[[f32; LANES]; 9], u: &mut [[f32; LANES]]) {
    // t = G g: [IN][3]
    let mut t = [[[0f32; LANES]; 3]; IN];
    for (i, row) in mat.g.iter().enumerate() {
        for kx in 0..3 {
            for l in 0..LANES {
                t[i][kx][l] = row[0] * g[kx][l] + row[1] * g[3 + kx][l] + row[2] * g[6 + kx][l];
            }
        }
    }
    // u = t Gᵀ: [IN][IN]
    for i in 0..IN {
        for (j, col) in mat.g.iter().enumerate() {
            for l in 0..LANES {
                u[i * IN + j][l] = t[i][0][l] * col[0] + t[i][1][l] * col[1] + t[i][2][l] * col[2];
            }
        }
    }
}

simd_dispatch! {
    /// `Bᵀ d B` for every tile of tile row `row` of one input channel (`plane`, width
    /// `plane_w`, or its nearest 2x upsampling when `upsampled`): value `p` of tile `t` goes to
    /// `v[first + p * pos_stride + t]`.
    #[allow(clippy::too_many_arguments)]
    fn input_row<const OUT: usize, const IN: usize>(mat: &Matrices<OUT, IN>, plane: &[f32], plane_w: usize, upsampled: bool, row: usize, tiles_x: usize, scratch: &mut [f32], v: &mut [f32], first: usize, pos_stride: usize) = input_row_body;
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn input_row_body<const OUT: usize, const IN: usize>(mat: &Matrices<OUT, IN>, plane: &[f32], plane_w: usize, upsampled: bool, row: usize, tiles_x: usize, scratch: &mut [f32], v: &mut [f32], first: usize, pos_stride: usize) {
    let plane_h = plane.len() / plane_w;
    let (h, w) = if upsampled { (2 * plane_h, 2 * plane_w) } else { (plane_h, plane_w) };
    // Tap c of tile t is column phase c % OUT at t + c / OUT, and c / OUT <= 1.
    let t1 = tiles_x + 1;
    let len = OUT * t1;
    let (phases, rest) = scratch[..2 * IN * len + w].split_at_mut(IN * len);
    let (rows, line) = rest.split_at_mut(IN * len);
    // The IN input rows of the tile row, each split into its OUT column phases: element
    // (m, t) = pixel OUT t + m - 1.
    for r in 0..IN {
        let dst = &mut phases[r * len..][..len];
        match (OUT * row + r).checked_sub(1).filter(|&y| y < h) {
            Some(y) if upsampled => {
                // Row y of the upsampled plane: source row y / 2, each pixel twice.
                let src = &plane[(y / 2) * plane_w..][..plane_w];
                for (pair, &value) in line.chunks_exact_mut(2).zip(src) {
                    pair.fill(value);
                }
                deinterleave::<OUT>(line, dst, t1)
            }
            Some(y) => deinterleave::<OUT>(&plane[y * w..][..w], dst, t1),
            None => dst.fill(0.0),
        }
    }
    // Along y: rows[i] = sum_r Bᵀ[i][r] phases[r], all phases at once.
    let sources: [&[f32]; IN] = std::array::from_fn(|r| &phases[r * len..][..len]);
    for (i, coeffs) in mat.bt.iter().enumerate() {
        combine(&mut rows[i * len..][..len], &sources, coeffs);
    }
    // Along x: value (i, j) of tile t = sum_c Bᵀ[j][c] (tap c of rows[i]).
    for i in 0..IN {
        let transformed = &rows[i * len..][..len];
        let taps: [&[f32]; IN] = std::array::from_fn(|c| &transformed[(c % OUT) * t1 + c / OUT..][..tiles_x]);
        for (j, coeffs) in mat.bt.iter().enumerate() {
            combine(&mut v[first + (i * IN + j) * pos_stride..][..tiles_x], &taps, coeffs);
        }
    }
}

simd_dispatch! {
    /// `Aᵀ M A` for every tile of one tile row (`m[first + p * pos_stride + t]`) of one output
    /// channel, plus `bias`, written (or added, onto a residual) into `dst`, the block's rows of
    /// that channel's plane (width `w`); `row` counts tile rows from the block's first.
    #[allow(clippy::too_many_arguments)]
    fn output_row<const OUT: usize, const IN: usize>(mat: &Matrices<OUT, IN>, m: &[f32], first: usize, pos_stride: usize, tiles_x: usize, scratch: &mut [f32], dst: &mut [f32], w: usize, row: usize, bias: f32, onto_residual: bool) = output_row_body;
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn output_row_body<const OUT: usize, const IN: usize>(mat: &Matrices<OUT, IN>, m: &[f32], first: usize, pos_stride: usize, tiles_x: usize, scratch: &mut [f32], dst: &mut [f32], w: usize, row: usize, bias: f32, onto_residual: bool) {
    let len = OUT * tiles_x;
    let (columns, pixels) = scratch[..IN * len + len].split_at_mut(IN * len);
    // Along x: columns[i][xo] = sum_j Aᵀ[xo][j] M[i][j].
    for i in 0..IN {
        let sources: [&[f32]; IN] = std::array::from_fn(|j| &m[first + (i * IN + j) * pos_stride..][..tiles_x]);
        for (xo, coeffs) in mat.at.iter().enumerate() {
            combine(&mut columns[(i * OUT + xo) * tiles_x..][..tiles_x], &sources, coeffs);
        }
    }
    // Along y: output row yo = sum_i Aᵀ[yo][i] columns[i], then back to pixel order.
    let sources: [&[f32]; IN] = std::array::from_fn(|i| &columns[i * len..][..len]);
    let rows_here = dst.len() / w;
    for (yo, coeffs) in mat.at.iter().enumerate() {
        let y = OUT * row + yo;
        if y >= rows_here {
            break;
        }
        combine(pixels, &sources, coeffs);
        interleave::<OUT>(pixels, tiles_x, &mut dst[y * w..][..w], bias, onto_residual);
    }
}

/// `dst[e] = sum_k coeffs[k] * sources[k][e]` over `dst.len()` elements.
#[inline(always)]
fn combine<const IN: usize>(dst: &mut [f32], sources: &[&[f32]; IN], coeffs: &[f32; IN]) {
    let n = dst.len();
    let sources: [&[f32]; IN] = sources.map(|s| &s[..n]);
    for (t, out) in dst.iter_mut().enumerate() {
        let mut acc = 0.0;
        for k in 0..IN {
            acc += coeffs[k] * sources[k][t];
        }
        *out = acc;
    }
}

/// `dst[m * t1 + t] = src[OUT t + m - 1]`, 0 outside `src` (the left padding column included).
#[inline(always)]
fn deinterleave<const OUT: usize>(src: &[f32], dst: &mut [f32], t1: usize) {
    // Tiles 1.. whose OUT phases all lie inside the row: one OUT-pixel chunk each.
    let mut inside = 0;
    if src.len() >= OUT {
        for (k, chunk) in src[OUT - 1..].chunks_exact(OUT).take(t1 - 1).enumerate() {
            for (m, &value) in chunk.iter().enumerate() {
                dst[m * t1 + k + 1] = value;
            }
            inside = k + 1;
        }
    }
    for t in std::iter::once(0).chain(inside + 1..t1) {
        for m in 0..OUT {
            let x = (OUT * t + m).checked_sub(1).filter(|&x| x < src.len());
            dst[m * t1 + t] = x.map_or(0.0, |x| src[x]);
        }
    }
}

/// Output row from phase order (`pixels[xo * tiles_x + t]` = pixel OUT t + xo) to pixel order,
/// plus `bias`, written or added onto what `line` holds.
#[inline(always)]
fn interleave<const OUT: usize>(pixels: &[f32], tiles_x: usize, line: &mut [f32], bias: f32, onto_residual: bool) {
    let phases: [&[f32]; OUT] = std::array::from_fn(|xo| &pixels[xo * tiles_x..][..tiles_x]);
    let whole = line.len() / OUT;
    let (groups, tail) = line.split_at_mut(whole * OUT);
    for (t, group) in groups.chunks_exact_mut(OUT).enumerate() {
        for (xo, value) in group.iter_mut().enumerate() {
            let computed = phases[xo][t] + bias;
            *value = if onto_residual { *value + computed } else { computed };
        }
    }
    for (xo, value) in tail.iter_mut().enumerate() {
        let computed = phases[xo][whole] + bias;
        *value = if onto_residual { *value + computed } else { computed };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each variant's matrices compute an OUT-output, 3-tap correlation exactly (up to f32
    /// rounding): sum_j Aᵀ[i][j] G[j][k] Bᵀ[j][p] = [p == i + k].
    fn check_identity<const OUT: usize, const IN: usize>(mat: &Matrices<OUT, IN>) {
        for i in 0..OUT {
            for k in 0..3 {
                for p in 0..IN {
                    let sum: f64 = (0..IN).map(|j| mat.at[i][j] as f64 * mat.g[j][k] as f64 * mat.bt[j][p] as f64).sum();
                    let want = if p == i + k { 1.0 } else { 0.0 };
                    assert!((sum - want).abs() < 1e-6, "F({OUT}x{OUT}) i {i} k {k} p {p}: {sum}");
                }
            }
        }
    }

    #[test]
    fn transforms_satisfy_the_minimal_filtering_identity() {
        check_identity(&F2X2);
        check_identity(&F4X4);
    }

    /// Direct convolution in f64, the ground truth.
    fn direct(s: &Shape, x: &[f32], w: &[f32], bias: Option<&[f32]>) -> Vec<f64> {
        let mut out = vec![0f64; s.n * s.c_out * s.h * s.w];
        for n in 0..s.n {
            for co in 0..s.c_out {
                for y in 0..s.h {
                    for xo in 0..s.w {
                        let mut acc = bias.map_or(0.0, |b| b[co] as f64);
                        for ci in 0..s.c_in {
                            for ky in 0..3 {
                                for kx in 0..3 {
                                    let (yi, xi) = (y as isize + ky as isize - 1, xo as isize + kx as isize - 1);
                                    if yi >= 0 && xi >= 0 && (yi as usize) < s.h && (xi as usize) < s.w {
                                        acc += x[((n * s.c_in + ci) * s.h + yi as usize) * s.w + xi as usize] as f64 * w[((co * s.c_in + ci) * 3 + ky) * 3 + kx] as f64;
                                    }
                                }
                            }
                        }
                        out[((n * s.c_out + co) * s.h + y) * s.w + xo] = acc;
                    }
                }
            }
        }
        out
    }

    fn values(len: usize, seed: u64, scale: f32) -> Vec<f32> {
        let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (0..len)
            .map(|_| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
            })
            .collect()
    }

    fn relative_error(got: &[f32], want: &[f64]) -> f64 {
        let scale = want.iter().fold(0f64, |a, v| a.max(v.abs()));
        let diff = got.iter().zip(want).fold(0f64, |a, (g, w)| a.max((*g as f64 - w).abs()));
        diff / scale
    }

    #[test]
    fn matches_direct_convolution_on_ragged_and_multi_block_shapes() {
        // (n, c_in, c_out, h, w): sizes not multiples of 4, one tile row, more than 16 tiles
        // per row, channel counts off the 16-lane grid, several blocks per item.
        let cases = [(1, 3, 5, 9, 11), (2, 17, 6, 5, 70), (1, 8, 3, 1, 3), (1, 33, 20, 33, 9), (3, 4, 4, 12, 12)];
        for (i, &(n, c_in, c_out, h, w)) in cases.iter().enumerate() {
            let s = Shape { n, c_in, c_out, h, w };
            let x = values(n * c_in * h * w, 1 + i as u64, 2.0);
            let weight = values(c_out * c_in * 9, 50 + i as u64, 1.0 / (3.0 * (c_in as f32).sqrt()));
            let bias = values(c_out, 90 + i as u64, 0.5);
            for (variant, bound) in [(Variant::F2x2, 1e-6), (Variant::F4x4, 5e-6)] {
                for b in [None, Some(bias.as_slice())] {
                    let want = direct(&s, &x, &weight, b);
                    let mut got = vec![0f32; want.len()];
                    conv3x3(variant, &s, &x, &weight, b, false, &mut got);
                    let err = relative_error(&got, &want);
                    assert!(err < bound, "{variant:?} case {i} bias {}: {err:e}", b.is_some());
                    // Onto a residual: the output accumulates.
                    let residual = values(want.len(), 200 + i as u64, 1.0);
                    let mut got = residual.clone();
                    conv3x3(variant, &s, &x, &weight, b, true, &mut got);
                    let want: Vec<f64> = want.iter().zip(&residual).map(|(w, r)| w + *r as f64).collect();
                    assert!(relative_error(&got, &want) < bound, "{variant:?} case {i} residual");
                }
            }
        }
    }

    #[test]
    fn output_channel_chunks_cover_every_channel() {
        let s = Shape { n: 1, c_in: 6, c_out: 7, h: 10, w: 9 };
        let x = values(6 * 90, 7, 1.0);
        let weight = values(7 * 6 * 9, 8, 0.15);
        let want = direct(&s, &x, &weight, None);
        // Room for the transformed weights of 3 output channels (chunks of 3, 3 and 1), or of
        // one at a time.
        for (variant, positions) in [(Variant::F2x2, 16), (Variant::F4x4, 36)] {
            for max_u_bytes in [positions * 6 * 4 * 3, 0] {
                let mut got = vec![0f32; want.len()];
                conv3x3_bounded(variant, &s, &x, &weight, None, false, &mut got, max_u_bytes);
                assert!(relative_error(&got, &want) < 5e-6, "{variant:?} limit {max_u_bytes}");
            }
        }
    }

    #[test]
    fn upsampled_input_equals_convolving_the_upsampled_copy_bit_for_bit() {
        let (n, c_in, c_out, sh, sw) = (2, 5, 4, 7, 9);
        let s = Shape { n, c_in, c_out, h: 2 * sh, w: 2 * sw };
        let x = values(n * c_in * sh * sw, 31, 1.0);
        let mut big = vec![0f32; n * c_in * s.h * s.w];
        for (plane, src) in big.chunks_exact_mut(s.h * s.w).zip(x.chunks_exact(sh * sw)) {
            for (y, line) in plane.chunks_exact_mut(s.w).enumerate() {
                for (xo, value) in line.iter_mut().enumerate() {
                    *value = src[(y / 2) * sw + xo / 2];
                }
            }
        }
        let weight = values(c_out * c_in * 9, 32, 0.2);
        let bias = values(c_out, 33, 0.5);
        for variant in [Variant::F2x2, Variant::F4x4] {
            let mut want = vec![0f32; n * c_out * s.h * s.w];
            conv3x3(variant, &s, &big, &weight, Some(&bias), false, &mut want);
            let mut got = vec![0f32; want.len()];
            conv3x3_upsampled(variant, &s, &x, &weight, Some(&bias), &mut got);
            assert_eq!(got, want, "{variant:?}");
        }
    }

    #[test]
    fn only_shapes_with_enough_tiles_take_this_path() {
        assert!(worthwhile(&Shape { n: 2, c_in: 320, c_out: 320, h: 64, w: 64 }));
        assert!(!worthwhile(&Shape { n: 2, c_in: 1280, c_out: 1280, h: 8, w: 8 }));
    }
}
