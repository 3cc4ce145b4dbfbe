//! A diffusers `scheduler_config.json`, parsed into the keys our samplers read.
//!
//! Every field is `Option`: `None` means "not in the file", so each sampler applies its own
//! class default exactly as `SamplerClass.from_config(file)` does (Euler defaults to `linspace`
//! spacing, DDIM to `leading`, Heun's beta range differs, ...). A JSON `null` counts as absent:
//! for every key whose diffusers default is `None` that is the same thing, and for the others
//! diffusers itself would fail. Keys listed in `_use_default_values` are treated as absent, as
//! diffusers' `extract_init_dict` does.

use serde_json::{Map, Value};

use super::error::SamplerError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BetaSchedule {
    Linear,
    ScaledLinear,
    SquaredcosCapV2,
    /// Heun only.
    Exp,
    /// DDPM only.
    Laplace,
    /// DDPM only.
    Sigmoid,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PredictionType {
    Epsilon,
    VPrediction,
    /// The model predicts the clean sample (`"sample"`, or Euler's alias `"original_sample"`).
    Sample,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestepSpacing {
    Linspace,
    Leading,
    Trailing,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinalSigmasType {
    Zero,
    SigmaMin,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestepType {
    Discrete,
    Continuous,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InterpolationType {
    Linear,
    LogLinear,
}

/// The scheduler keys of a diffusers config; `None` = absent from the file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SchedulerConfig {
    /// `_class_name`, informational only (the sampler is chosen by the request).
    pub class_name: Option<String>,
    pub num_train_timesteps: Option<usize>,
    pub beta_start: Option<f64>,
    pub beta_end: Option<f64>,
    pub beta_schedule: Option<BetaSchedule>,
    pub trained_betas: Option<Vec<f64>>,
    pub prediction_type: Option<PredictionType>,
    pub timestep_spacing: Option<TimestepSpacing>,
    pub steps_offset: Option<usize>,
    pub set_alpha_to_one: Option<bool>,
    pub clip_sample: Option<bool>,
    pub clip_sample_range: Option<f64>,
    pub thresholding: Option<bool>,
    pub dynamic_thresholding_ratio: Option<f64>,
    pub sample_max_value: Option<f64>,
    pub rescale_betas_zero_snr: Option<bool>,
    pub use_karras_sigmas: Option<bool>,
    pub use_exponential_sigmas: Option<bool>,
    pub use_beta_sigmas: Option<bool>,
    pub sigma_min: Option<f64>,
    pub sigma_max: Option<f64>,
    pub final_sigmas_type: Option<FinalSigmasType>,
    pub timestep_type: Option<TimestepType>,
    pub interpolation_type: Option<InterpolationType>,
    // Multistep solvers (DPM-Solver++, UniPC). Kept as written: each class maps its own names.
    pub solver_order: Option<usize>,
    pub algorithm_type: Option<String>,
    pub solver_type: Option<String>,
    pub lower_order_final: Option<bool>,
    pub euler_at_final: Option<bool>,
    pub lambda_min_clipped: Option<f64>,
    pub variance_type: Option<String>,
    pub predict_x0: Option<bool>,
    pub disable_corrector: Option<Vec<usize>>,
    pub use_lu_lambdas: Option<bool>,
    pub use_flow_sigmas: Option<bool>,
    pub use_dynamic_shifting: Option<bool>,
    // LCM.
    pub original_inference_steps: Option<usize>,
    pub timestep_scaling: Option<f64>,
}

impl SchedulerConfig {
    /// Parse the text of a `scheduler_config.json`.
    /// Python's `json` writes non-finite floats as bare `NaN` / `Infinity` / `-Infinity`
    /// (DPM-Solver saves `"lambda_min_clipped": -Infinity`); those are accepted here.
    pub fn from_json_str(text: &str) -> Result<Self, SamplerError> {
        let text = quote_python_non_finite(text);
        let value: Value = serde_json::from_str(&text).map_err(|e| SamplerError::config("<file>", e.to_string()))?;
        Self::from_value(&value)
    }

    /// Parse a `scheduler_config.json` already read as JSON.
    pub fn from_value(value: &Value) -> Result<Self, SamplerError> {
        let Value::Object(object) = value else {
            return Err(SamplerError::config("<file>", "expected a JSON object"));
        };
        let keys = Keys::new(object);
        Ok(SchedulerConfig {
            class_name: keys.string("_class_name")?,
            num_train_timesteps: keys.count("num_train_timesteps")?,
            beta_start: keys.number("beta_start")?,
            beta_end: keys.number("beta_end")?,
            beta_schedule: keys.choice(
                "beta_schedule",
                &[
                    ("linear", BetaSchedule::Linear),
                    ("scaled_linear", BetaSchedule::ScaledLinear),
                    ("squaredcos_cap_v2", BetaSchedule::SquaredcosCapV2),
                    ("exp", BetaSchedule::Exp),
                    ("laplace", BetaSchedule::Laplace),
                    ("sigmoid", BetaSchedule::Sigmoid),
                ],
            )?,
            trained_betas: keys.numbers("trained_betas")?,
            prediction_type: keys.choice(
                "prediction_type",
                &[
                    ("epsilon", PredictionType::Epsilon),
                    ("v_prediction", PredictionType::VPrediction),
                    ("sample", PredictionType::Sample),
                    ("original_sample", PredictionType::Sample),
                ],
            )?,
            timestep_spacing: keys.choice(
                "timestep_spacing",
                &[
                    ("linspace", TimestepSpacing::Linspace),
                    ("leading", TimestepSpacing::Leading),
                    ("trailing", TimestepSpacing::Trailing),
                ],
            )?,
            steps_offset: keys.count("steps_offset")?,
            set_alpha_to_one: keys.flag("set_alpha_to_one")?,
            clip_sample: keys.flag("clip_sample")?,
            clip_sample_range: keys.number("clip_sample_range")?,
            thresholding: keys.flag("thresholding")?,
            dynamic_thresholding_ratio: keys.number("dynamic_thresholding_ratio")?,
            sample_max_value: keys.number("sample_max_value")?,
            rescale_betas_zero_snr: keys.flag("rescale_betas_zero_snr")?,
            use_karras_sigmas: keys.flag("use_karras_sigmas")?,
            use_exponential_sigmas: keys.flag("use_exponential_sigmas")?,
            use_beta_sigmas: keys.flag("use_beta_sigmas")?,
            sigma_min: keys.number("sigma_min")?,
            sigma_max: keys.number("sigma_max")?,
            final_sigmas_type: keys.choice(
                "final_sigmas_type",
                &[("zero", FinalSigmasType::Zero), ("sigma_min", FinalSigmasType::SigmaMin)],
            )?,
            timestep_type: keys.choice(
                "timestep_type",
                &[("discrete", TimestepType::Discrete), ("continuous", TimestepType::Continuous)],
            )?,
            interpolation_type: keys.choice(
                "interpolation_type",
                &[("linear", InterpolationType::Linear), ("log_linear", InterpolationType::LogLinear)],
            )?,
            solver_order: keys.count("solver_order")?,
            algorithm_type: keys.string("algorithm_type")?,
            solver_type: keys.string("solver_type")?,
            lower_order_final: keys.flag("lower_order_final")?,
            euler_at_final: keys.flag("euler_at_final")?,
            lambda_min_clipped: keys.number("lambda_min_clipped")?,
            variance_type: keys.string("variance_type")?,
            predict_x0: keys.flag("predict_x0")?,
            disable_corrector: keys.counts("disable_corrector")?,
            use_lu_lambdas: keys.flag("use_lu_lambdas")?,
            use_flow_sigmas: keys.flag("use_flow_sigmas")?,
            use_dynamic_shifting: keys.flag("use_dynamic_shifting")?,
            original_inference_steps: keys.count("original_inference_steps")?,
            timestep_scaling: keys.number("timestep_scaling")?,
        })
    }
}

/// Typed access to the present, non-null keys of the config object.
struct Keys<'a> {
    object: &'a Map<String, Value>,
    defaulted: Vec<&'a str>,
}

impl<'a> Keys<'a> {
    fn new(object: &'a Map<String, Value>) -> Self {
        let defaulted = match object.get("_use_default_values") {
            Some(Value::Array(names)) => names.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        Keys { object, defaulted }
    }

    fn get(&self, key: &str) -> Option<&'a Value> {
        if self.defaulted.contains(&key) {
            return None;
        }
        self.object.get(key).filter(|v| !v.is_null())
    }

    fn string(&self, key: &str) -> Result<Option<String>, SamplerError> {
        self.get(key)
            .map(|v| v.as_str().map(str::to_owned).ok_or_else(|| SamplerError::config(key, "expected a string")))
            .transpose()
    }

    fn number(&self, key: &str) -> Result<Option<f64>, SamplerError> {
        self.get(key).map(|v| as_number(key, v)).transpose()
    }

    fn count(&self, key: &str) -> Result<Option<usize>, SamplerError> {
        self.get(key).map(|v| as_count(key, v)).transpose()
    }

    fn flag(&self, key: &str) -> Result<Option<bool>, SamplerError> {
        self.get(key)
            .map(|v| v.as_bool().ok_or_else(|| SamplerError::config(key, "expected true or false")))
            .transpose()
    }

    fn numbers(&self, key: &str) -> Result<Option<Vec<f64>>, SamplerError> {
        self.array(key, as_number)
    }

    fn counts(&self, key: &str) -> Result<Option<Vec<usize>>, SamplerError> {
        self.array(key, as_count)
    }

    fn array<T>(
        &self,
        key: &str,
        item: fn(&str, &Value) -> Result<T, SamplerError>,
    ) -> Result<Option<Vec<T>>, SamplerError> {
        self.get(key)
            .map(|v| {
                v.as_array()
                    .ok_or_else(|| SamplerError::config(key, "expected an array"))?
                    .iter()
                    .map(|x| item(key, x))
                    .collect()
            })
            .transpose()
    }

    fn choice<T: Copy>(&self, key: &str, options: &[(&str, T)]) -> Result<Option<T>, SamplerError> {
        let Some(name) = self.string(key)? else {
            return Ok(None);
        };
        options.iter().find(|(n, _)| *n == name).map(|(_, v)| Some(*v)).ok_or_else(|| {
            let known: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
            SamplerError::config(key, format!("unsupported value {name:?} (supported: {})", known.join(", ")))
        })
    }
}

/// Turn Python's bare `NaN`, `Infinity` and `-Infinity` tokens (outside strings) into JSON
/// strings, which [`as_number`] reads back as numbers.
fn quote_python_non_finite(text: &str) -> String {
    const TOKENS: [&str; 3] = ["-Infinity", "Infinity", "NaN"];
    let mut out = String::with_capacity(text.len() + 16);
    let mut in_string = false;
    let mut escaped = false;
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
        } else if let Some(token) = TOKENS.iter().find(|t| rest.starts_with(**t)) {
            out.push('"');
            out.push_str(token);
            out.push('"');
            rest = &rest[token.len()..];
            continue;
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

fn as_number(key: &str, value: &Value) -> Result<f64, SamplerError> {
    match value {
        Value::Number(n) => n.as_f64().ok_or_else(|| SamplerError::config(key, "number out of range")),
        Value::String(s) if s == "-Infinity" => Ok(f64::NEG_INFINITY),
        Value::String(s) if s == "Infinity" => Ok(f64::INFINITY),
        Value::String(s) if s == "NaN" => Ok(f64::NAN),
        _ => Err(SamplerError::config(key, "expected a number")),
    }
}

fn as_count(key: &str, value: &Value) -> Result<usize, SamplerError> {
    let number = value.as_f64().ok_or_else(|| SamplerError::config(key, "expected a whole number"))?;
    if number < 0.0 || number.fract() != 0.0 || number > u32::MAX as f64 {
        return Err(SamplerError::config(key, format!("expected a whole number >= 0, got {number}")));
    }
    Ok(number as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn present_keys_parse_and_absent_or_null_keys_stay_none() {
        let config = SchedulerConfig::from_value(&json!({
            "_class_name": "PNDMScheduler",
            "beta_end": 0.012,
            "beta_schedule": "scaled_linear",
            "beta_start": 0.00085,
            "clip_sample": false,
            "num_train_timesteps": 1000,
            "set_alpha_to_one": false,
            "skip_prk_steps": true,
            "steps_offset": 1,
            "trained_betas": null
        }))
        .expect("parses");
        assert_eq!(config.class_name.as_deref(), Some("PNDMScheduler"));
        assert_eq!(config.beta_schedule, Some(BetaSchedule::ScaledLinear));
        assert_eq!(config.steps_offset, Some(1));
        assert_eq!(config.trained_betas, None);
        assert_eq!(config.timestep_spacing, None);
        assert_eq!(config.prediction_type, None);
    }

    #[test]
    fn use_default_values_hides_keys_and_bad_values_are_errors() {
        let config = SchedulerConfig::from_value(&json!({
            "timestep_spacing": "trailing",
            "prediction_type": "v_prediction",
            "_use_default_values": ["timestep_spacing"]
        }))
        .expect("parses");
        assert_eq!(config.timestep_spacing, None);
        assert_eq!(config.prediction_type, Some(PredictionType::VPrediction));
        assert!(SchedulerConfig::from_value(&json!({"timestep_spacing": "sideways"})).is_err());
        assert!(SchedulerConfig::from_value(&json!({"steps_offset": 1.5})).is_err());
        assert!(SchedulerConfig::from_value(&json!({"clip_sample": "no"})).is_err());
        assert!(SchedulerConfig::from_value(&json!([1, 2])).is_err());
    }

    #[test]
    fn python_non_finite_floats_are_read() {
        let text = r#"{"lambda_min_clipped": -Infinity, "_class_name": "NaN -Infinity \" x", "sigma_max": Infinity}"#;
        let config = SchedulerConfig::from_json_str(text).expect("parses");
        assert_eq!(config.lambda_min_clipped, Some(f64::NEG_INFINITY));
        assert_eq!(config.sigma_max, Some(f64::INFINITY));
        assert_eq!(config.class_name.as_deref(), Some("NaN -Infinity \" x"));
    }
}
