//! Tiled decoding for large images, as diffusers' `AutoencoderKL.tiled_decode`: the latents are
//! cut into overlapping 64x64 tiles (512x512 pixels), each tile is decoded alone, and the
//! overlaps are cross-faded. Memory then stays at one 512x512 decode whatever the image size
//! (a whole 2048x2048 decode would hold several 2-4 GiB activations).
//!
//! Tiles see only their own GroupNorm statistics, so a tiled decode is not bit-identical to a
//! whole one; it is used only above [`TILE_ABOVE_LATENT_PIXELS`], where a whole decode is what
//! would exhaust memory, so every size up to SDXL's 1024x1024 decodes exactly like diffusers.

use candle_core::{Result, Tensor};

/// Latent tile side (512 image pixels at the SD VAE's factor 8).
pub const TILE_LATENT: usize = 64;
/// diffusers' `tile_overlap_factor`.
const OVERLAP: f64 = 0.25;
/// Whole decodes up to 128x128 latents (1024x1024 images); tiles beyond.
pub const TILE_ABOVE_LATENT_PIXELS: usize = 128 * 128;

/// Decodes `z` (`[B, C, h, w]` latents, already through `post_quant_conv`) tile by tile with
/// `decode_tile`; `factor` is the VAE's pixels per latent.
pub fn tiled_decode(z: &Tensor, factor: usize, decode_tile: impl Fn(&Tensor) -> Result<Tensor>) -> Result<Tensor> {
    let (_, _, h, w) = z.dims4()?;
    let stride = (TILE_LATENT as f64 * (1.0 - OVERLAP)) as usize;
    let tile_pixels = TILE_LATENT * factor;
    let blend = (tile_pixels as f64 * OVERLAP) as usize;
    let keep = tile_pixels - blend;
    let mut rows: Vec<Vec<Tensor>> = Vec::new();
    for top in (0..h).step_by(stride) {
        let mut row = Vec::new();
        for left in (0..w).step_by(stride) {
            let tile = z.narrow(2, top, TILE_LATENT.min(h - top))?.narrow(3, left, TILE_LATENT.min(w - left))?;
            row.push(decode_tile(&tile)?);
        }
        rows.push(row);
    }
    let mut out_rows = Vec::with_capacity(rows.len());
    for i in 0..rows.len() {
        let mut out_row = Vec::with_capacity(rows[i].len());
        for j in 0..rows[i].len() {
            let mut tile = rows[i][j].clone();
            if i > 0 {
                tile = cross_fade(&rows[i - 1][j], &tile, blend, 2)?;
            }
            if j > 0 {
                tile = cross_fade(&rows[i][j - 1], &tile, blend, 3)?;
            }
            let (_, _, th, tw) = tile.dims4()?;
            out_row.push(tile.narrow(2, 0, keep.min(th))?.narrow(3, 0, keep.min(tw))?);
        }
        out_rows.push(Tensor::cat(&out_row, 3)?);
    }
    Tensor::cat(&out_rows, 2)
}

/// The first `extent` rows (dim 2) or columns (dim 3) of `next` fade in from the last `extent`
/// of `prev`: weight `k / extent` for `next` at offset `k`, as diffusers' `blend_v`/`blend_h`.
fn cross_fade(prev: &Tensor, next: &Tensor, extent: usize, dim: usize) -> Result<Tensor> {
    let extent = extent.min(prev.dim(dim)?).min(next.dim(dim)?);
    if extent == 0 {
        return Ok(next.clone());
    }
    let ramp: Vec<f32> = (0..extent).map(|k| k as f32 / extent as f32).collect();
    let mut ramp_shape = vec![1usize; 4];
    ramp_shape[dim] = extent;
    let ramp = Tensor::from_vec(ramp, ramp_shape, next.device())?.to_dtype(next.dtype())?;
    let prev_tail = prev.narrow(dim, prev.dim(dim)? - extent, extent)?;
    let next_head = next.narrow(dim, 0, extent)?;
    let faded = (prev_tail.broadcast_mul(&(1.0 - &ramp)?)? + next_head.broadcast_mul(&ramp)?)?;
    let rest = next.narrow(dim, extent, next.dim(dim)? - extent)?;
    Tensor::cat(&[&faded, &rest], dim)
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device};

    use super::*;

    /// A stand-in decoder: nearest 8x upsampling of the first channel, which is position-exact,
    /// so a correct tiling must reproduce the whole upsampled image (cross-fades of equal values
    /// are the identity).
    fn upsample8(tile: &Tensor) -> Result<Tensor> {
        let (_, _, h, w) = tile.dims4()?;
        tile.narrow(1, 0, 1)?.upsample_nearest2d(h * 8, w * 8)
    }

    #[test]
    fn tiles_reassemble_a_position_exact_decoder() {
        let z = Tensor::arange(0f32, (150 * 170) as f32, &Device::Cpu).unwrap().reshape((1, 1, 150, 170)).unwrap();
        let z = Tensor::cat(&[&z, &z], 1).unwrap();
        let tiled = tiled_decode(&z, 8, upsample8).unwrap();
        let whole = upsample8(&z).unwrap();
        assert_eq!(tiled.dims(), whole.dims());
        let diff = (tiled - whole).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(diff < 1e-2, "max diff {diff}");
        assert_eq!(z.dtype(), DType::F32);
    }
}
