//! Pixels ⇄ tensors, with diffusers' conventions: images in -1..1 going into the VAE, and
//! `round(clamp(x / 2 + 0.5, 0, 1) * 255)` coming out.

use candle_core::{DType, Device, Result, Tensor};

use crate::backend::request::{MaskImage, RgbImage};

/// `[1, 3, H, W]` in -1..1 (`u8 / 255 * 2 - 1`, float32).
pub fn rgb_to_tensor(image: &RgbImage, device: &Device, dtype: DType) -> Result<Tensor> {
    let (w, h) = (image.width as usize, image.height as usize);
    let hwc = Tensor::from_vec(image.pixels.iter().map(|&p| p as f32 / 255.0 * 2.0 - 1.0).collect::<Vec<f32>>(), (h, w, 3), device)?;
    hwc.permute((2, 0, 1))?.unsqueeze(0)?.contiguous()?.to_dtype(dtype)
}

/// A binarised mask `[1, 1, H, W]`: 1 where the mask is ≥ 0.5 (repaint), else 0, as diffusers'
/// mask processor does.
pub fn mask_to_tensor(mask: &MaskImage, device: &Device, dtype: DType) -> Result<Tensor> {
    let (w, h) = (mask.width as usize, mask.height as usize);
    let values: Vec<f32> = mask.pixels.iter().map(|&p| if p as f32 / 255.0 >= 0.5 { 1.0 } else { 0.0 }).collect();
    Tensor::from_vec(values, (1, 1, h, w), device)?.to_dtype(dtype)
}

/// Nearest-neighbour downsample of `[1, 1, H, W]` to `[1, 1, h, w]` with torch's default rule
/// (source index `floor(dst * H / h)`), as `F.interpolate(mask, size=(h, w))` does.
pub fn downsample_nearest(mask: &Tensor, h: usize, w: usize) -> Result<Tensor> {
    let (_, _, big_h, big_w) = mask.dims4()?;
    let rows: Vec<u32> = (0..h).map(|i| (i * big_h / h) as u32).collect();
    let cols: Vec<u32> = (0..w).map(|j| (j * big_w / w) as u32).collect();
    let rows = Tensor::new(rows.as_slice(), mask.device())?;
    let cols = Tensor::new(cols.as_slice(), mask.device())?;
    mask.index_select(&rows, 2)?.index_select(&cols, 3)
}

/// Decoded VAE output `[1, 3, H, W]` (about -1..1) → RGB8, diffusers' rounding.
pub fn tensor_to_rgb(decoded: &Tensor) -> Result<RgbImage> {
    let (_, _, h, w) = decoded.dims4()?;
    let scaled = ((decoded.to_dtype(DType::F32)? / 2.0)? + 0.5)?.clamp(0f32, 1f32)?;
    let hwc = scaled.squeeze(0)?.permute((1, 2, 0))?.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
    let pixels = hwc.iter().map(|&v| (v * 255.0).round_ties_even() as u8).collect();
    Ok(RgbImage { width: w as u32, height: h as u32, pixels })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rgb_round_trips_through_the_vae_range() {
        let image = RgbImage { width: 2, height: 1, pixels: vec![0, 128, 255, 10, 20, 30] };
        let t = rgb_to_tensor(&image, &Device::Cpu, DType::F32).expect("tensor");
        assert_eq!(t.dims(), &[1, 3, 1, 2]);
        assert_eq!(tensor_to_rgb(&t).expect("image"), image);
    }

    #[test]
    fn nearest_downsample_uses_torch_floor_rule() {
        let values: Vec<f32> = (0..16).map(|v| v as f32).collect();
        let t = Tensor::from_vec(values, (1, 1, 4, 4), &Device::Cpu).expect("tensor");
        let d = downsample_nearest(&t, 2, 2).expect("downsample");
        assert_eq!(d.flatten_all().and_then(|x| x.to_vec1::<f32>()).expect("vec"), vec![0.0, 2.0, 8.0, 10.0]);
    }
}
