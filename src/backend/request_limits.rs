//! The one place that says which request values the worker accepts. Faces validate every request
//! with [`RequestLimits::check`] and name the offending field in their own vocabulary
//! (`guidance_scale` for rbee, `cfg_scale` for A1111) via [`RequestField`].

use crate::backend::request::GenerationRequest;

/// A request field the limits constrain, named protocol-neutrally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestField {
    Width,
    Height,
    Steps,
    CfgScale,
    NumImages,
    Strength,
    ClipSkip,
    /// Width × height together (each side may be fine on its own).
    Pixels,
    Prompt,
    NegativePrompt,
}

/// What is wrong with one field; `problem` reads after the field name ("must be ..., got ...").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field:?} {problem}")]
pub struct LimitViolation {
    pub field: RequestField,
    pub problem: String,
}

/// Default largest width or height (A1111's UI slider maximum).
pub const DEFAULT_MAX_SIDE: u32 = 2048;
/// Default largest width × height: 2 MiP holds SDXL's 1024² and its wide buckets, while a
/// 2048² job (whose attention alone needs many GiB) has to be allowed explicitly.
pub const DEFAULT_MAX_PIXELS: u64 = 2048 * 1024;
pub const DEFAULT_MAX_STEPS: u32 = 150;
pub const DEFAULT_MAX_IMAGES: u32 = 8;
/// Default longest prompt (and negative prompt), in characters: far beyond what CLIP's 75-token
/// chunks make useful, short enough that tokenizing and prompt parsing stay cheap.
pub const DEFAULT_MAX_PROMPT_CHARS: u32 = 10_000;
/// Default largest decoded input image: 16 MiP, 48 MiB as RGB.
pub const DEFAULT_MAX_INPUT_PIXELS: u64 = 4096 * 4096;

/// Bounds on requests. Defaults follow A1111's UI limits, which clients already know.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestLimits {
    pub min_side: u32,
    pub max_side: u32,
    /// Largest width × height.
    pub max_pixels: u64,
    /// Width and height must be multiples of this (the VAE and UNet downsample by 8).
    pub side_multiple: u32,
    pub max_steps: u32,
    pub max_images: u32,
    pub max_cfg_scale: f64,
    pub max_clip_skip: u32,
    /// Longest prompt and negative prompt, in characters (Unicode scalar values).
    pub max_prompt_chars: u32,
    /// Largest decoded input image (init image or mask), to refuse decompression bombs.
    pub max_input_pixels: u64,
}

impl Default for RequestLimits {
    fn default() -> Self {
        RequestLimits {
            min_side: 64,
            max_side: DEFAULT_MAX_SIDE,
            max_pixels: DEFAULT_MAX_PIXELS,
            side_multiple: 8,
            max_steps: DEFAULT_MAX_STEPS,
            max_images: DEFAULT_MAX_IMAGES,
            max_cfg_scale: 30.0,
            max_clip_skip: 12,
            max_prompt_chars: DEFAULT_MAX_PROMPT_CHARS,
            max_input_pixels: DEFAULT_MAX_INPUT_PIXELS,
        }
    }
}

impl RequestLimits {
    /// First violated limit, checked in field order.
    pub fn check(&self, req: &GenerationRequest) -> Result<(), LimitViolation> {
        self.check_side(RequestField::Width, req.width)?;
        self.check_side(RequestField::Height, req.height)?;
        let pixels = u64::from(req.width) * u64::from(req.height);
        if pixels > self.max_pixels {
            return Err(violation(
                RequestField::Pixels,
                format!("must be at most {} pixels (width × height), got {}x{} = {pixels}", self.max_pixels, req.width, req.height),
            ));
        }
        self.check_text(RequestField::Prompt, &req.prompt)?;
        self.check_text(RequestField::NegativePrompt, &req.negative_prompt)?;
        if req.steps == 0 || req.steps > self.max_steps {
            return Err(violation(RequestField::Steps, format!("must be between 1 and {}, got {}", self.max_steps, req.steps)));
        }
        if !(req.cfg_scale.is_finite() && (0.0..=self.max_cfg_scale).contains(&req.cfg_scale)) {
            return Err(violation(RequestField::CfgScale, format!("must be between 0 and {}, got {}", self.max_cfg_scale, req.cfg_scale)));
        }
        if req.num_images == 0 || req.num_images > self.max_images {
            return Err(violation(RequestField::NumImages, format!("must be between 1 and {}, got {}", self.max_images, req.num_images)));
        }
        if req.clip_skip == 0 || req.clip_skip > self.max_clip_skip {
            return Err(violation(RequestField::ClipSkip, format!("must be between 1 and {}, got {}", self.max_clip_skip, req.clip_skip)));
        }
        if let Some(init) = &req.init_image {
            if !(init.strength.is_finite() && (0.0..=1.0).contains(&init.strength)) {
                return Err(violation(RequestField::Strength, format!("must be between 0 and 1, got {}", init.strength)));
            }
        }
        Ok(())
    }

    fn check_side(&self, field: RequestField, value: u32) -> Result<(), LimitViolation> {
        if value < self.min_side || value > self.max_side {
            return Err(violation(field, format!("must be between {} and {} pixels, got {value}", self.min_side, self.max_side)));
        }
        if !value.is_multiple_of(self.side_multiple) {
            return Err(violation(field, format!("must be a multiple of {}, got {value}", self.side_multiple)));
        }
        Ok(())
    }

    fn check_text(&self, field: RequestField, text: &str) -> Result<(), LimitViolation> {
        // Counting stops one past the limit: a huge prompt costs no more than an allowed one.
        let chars = text.chars().take(self.max_prompt_chars as usize + 1).count();
        if chars > self.max_prompt_chars as usize {
            return Err(violation(field, format!("must be at most {} characters, got {}", self.max_prompt_chars, text.chars().count())));
        }
        Ok(())
    }

    /// Round a side down onto the grid the model accepts (for sizes taken from input images).
    pub fn snap_side(&self, value: u32) -> u32 {
        let snapped = value - value % self.side_multiple;
        snapped.clamp(self.min_side, self.max_side)
    }
}

fn violation(field: RequestField, problem: String) -> LimitViolation {
    LimitViolation { field, problem }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_accept_the_default_request() {
        assert_eq!(RequestLimits::default().check(&GenerationRequest::new("x")), Ok(()));
    }

    #[test]
    fn oversize_and_off_grid_sides_name_the_field() {
        let limits = RequestLimits::default();
        let mut req = GenerationRequest::new("x");
        req.width = 4096;
        let err = limits.check(&req).expect_err("too wide");
        assert_eq!(err.field, RequestField::Width);
        assert!(err.problem.contains("2048"), "{}", err.problem);
        req.width = 512;
        req.height = 500;
        let err = limits.check(&req).expect_err("not a multiple of 8");
        assert_eq!(err.field, RequestField::Height);
        assert!(err.problem.contains("multiple of 8"));
    }

    #[test]
    fn nan_guidance_is_refused() {
        let mut req = GenerationRequest::new("x");
        req.cfg_scale = f64::NAN;
        assert_eq!(RequestLimits::default().check(&req).map_err(|e| e.field), Err(RequestField::CfgScale));
    }

    #[test]
    fn total_pixels_and_prompt_length_are_bounded() {
        let limits = RequestLimits { max_pixels: 512 * 256, max_prompt_chars: 5, ..RequestLimits::default() };
        let mut req = GenerationRequest::new("héllo");
        req.width = 512;
        req.height = 256;
        assert_eq!(limits.check(&req), Ok(()), "5 characters (6 bytes) and exactly max_pixels are allowed");
        req.height = 264;
        let err = limits.check(&req).expect_err("too many pixels");
        assert_eq!(err.field, RequestField::Pixels);
        assert!(err.problem.contains("512x264 = 135168"), "{}", err.problem);
        req.height = 256;
        req.negative_prompt = "x".repeat(6);
        let err = limits.check(&req).expect_err("negative prompt too long");
        assert_eq!((err.field, err.problem.as_str()), (RequestField::NegativePrompt, "must be at most 5 characters, got 6"));
        req.prompt = "toolong".into();
        assert_eq!(limits.check(&req).map_err(|e| e.field), Err(RequestField::Prompt));
    }

    #[test]
    fn snap_side_rounds_down_onto_the_grid_within_bounds() {
        let limits = RequestLimits::default();
        assert_eq!(limits.snap_side(517), 512);
        assert_eq!(limits.snap_side(10), 64);
        assert_eq!(limits.snap_side(5000), 2048);
    }
}
