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
}

/// What is wrong with one field; `problem` reads after the field name ("must be ..., got ...").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field:?} {problem}")]
pub struct LimitViolation {
    pub field: RequestField,
    pub problem: String,
}

/// Bounds on requests. Defaults follow A1111's UI limits, which clients already know.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestLimits {
    pub min_side: u32,
    pub max_side: u32,
    /// Width and height must be multiples of this (the VAE and UNet downsample by 8).
    pub side_multiple: u32,
    pub max_steps: u32,
    pub max_images: u32,
    pub max_cfg_scale: f64,
    pub max_clip_skip: u32,
    /// Largest decoded input image (init image or mask), to refuse decompression bombs.
    pub max_input_pixels: u64,
}

impl Default for RequestLimits {
    fn default() -> Self {
        RequestLimits {
            min_side: 64,
            max_side: 2048,
            side_multiple: 8,
            max_steps: 150,
            max_images: 8,
            max_cfg_scale: 30.0,
            max_clip_skip: 12,
            max_input_pixels: 4096 * 4096,
        }
    }
}

impl RequestLimits {
    /// First violated limit, checked in field order.
    pub fn check(&self, req: &GenerationRequest) -> Result<(), LimitViolation> {
        self.check_side(RequestField::Width, req.width)?;
        self.check_side(RequestField::Height, req.height)?;
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
    fn snap_side_rounds_down_onto_the_grid_within_bounds() {
        let limits = RequestLimits::default();
        assert_eq!(limits.snap_side(517), 512);
        assert_eq!(limits.snap_side(10), 64);
        assert_eq!(limits.snap_side(5000), 2048);
    }
}
