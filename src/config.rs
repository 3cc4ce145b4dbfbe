//! Command line and environment: one `Config` struct that everything else reads.
//!
//! The hive spawns us with exactly `--worker-id W --model M --device N --port P --queen-url URL`
//! and reads `--model` back from `/proc/<pid>/cmdline`, so those flags keep rbee's names and take a
//! separate value argument. Every flag has an environment twin for containers and systemd.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use crate::backend::request_limits::{
    RequestLimits, DEFAULT_MAX_IMAGES, DEFAULT_MAX_INPUT_PIXELS, DEFAULT_MAX_PIXELS, DEFAULT_MAX_PROMPT_CHARS, DEFAULT_MAX_SIDE, DEFAULT_MAX_STEPS,
};

/// Default largest request body: a base64 init image plus mask for a 2048² job fits comfortably.
pub const DEFAULT_MAX_BODY_MIB: u32 = 64;

/// Default per-job time limit: ample for any job within the default limits on a GPU, and an end
/// to one that is stuck. CPU workers running big jobs raise it or pass 0.
pub const DEFAULT_JOB_TIMEOUT_SECS: u64 = 3600;

/// The model served when none is given: small, fast, and public on the Hugging Face Hub.
pub const DEFAULT_MODEL: &str = "stabilityai/sd-turbo";

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum LogFormat {
    /// Human-readable single lines.
    #[default]
    Pretty,
    /// One JSON object per line, for log collectors.
    Json,
}

/// How single-file checkpoints choose their prediction type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum PredictionOverride {
    /// Sidecar .yaml, a `v_pred` marker in the file, A1111's SD 2 probe, else epsilon.
    #[default]
    Auto,
    Epsilon,
    /// v-prediction (SD 2.x 768-v and v-pred fine-tunes).
    V,
}

impl PredictionOverride {
    /// `Some(true)` = force v, `Some(false)` = force epsilon, `None` = detect.
    pub fn v_prediction(self) -> Option<bool> {
        match self {
            PredictionOverride::Auto => None,
            PredictionOverride::Epsilon => Some(false),
            PredictionOverride::V => Some(true),
        }
    }
}

/// Everything the worker is told at start-up.
#[derive(Clone, Parser)]
#[command(name = "sd-worker-rbee", version, about = "Stable Diffusion image-generation worker for rbee")]
pub struct Config {
    /// Worker id as rbee-hive names it (`worker-<device>-<port>`); defaults to `sd-worker-<port>`.
    #[arg(long, env = "SD_WORKER_ID")]
    pub worker_id: Option<String>,

    /// Hugging Face repo id (fetched into the HF cache), a path to a diffusers folder or a
    /// `.safetensors` checkpoint, or a checkpoint name in --models-dir.
    #[arg(long, env = "SD_WORKER_MODEL", default_value = DEFAULT_MODEL)]
    pub model: String,

    /// Accelerator ordinal (CUDA/Metal builds); the CPU build ignores it.
    #[arg(long, env = "SD_WORKER_DEVICE", default_value_t = 0)]
    pub device: u32,

    /// Address to listen on; use 0.0.0.0 to accept connections from other machines.
    #[arg(long, env = "SD_WORKER_HOST", default_value = "127.0.0.1")]
    pub host: String,

    #[arg(long, env = "SD_WORKER_PORT", default_value_t = 8080)]
    pub port: u16,

    /// rbee queen to send heartbeats to (`--hive-url` is the legacy spelling); none = no heartbeats.
    #[arg(long, alias = "hive-url", env = "SD_WORKER_QUEEN_URL")]
    pub queen_url: Option<String>,

    /// Bearer token(s) required on job routes; repeat the flag or give a comma list. None = open.
    #[arg(long = "api-key", env = "LLORCH_API_TOKEN", value_delimiter = ',', hide_env_values = true)]
    pub api_keys: Vec<String>,

    /// A models folder in A1111's layout (checkpoints at the top or in `Stable-diffusion/`,
    /// plus `Lora/`, `VAE/`, `embeddings/`): listed by the APIs, switchable per request.
    #[arg(long, env = "SD_WORKER_MODELS_DIR")]
    pub models_dir: Option<PathBuf>,

    /// Hugging Face cache folder to read and download models into (default: `HF_HOME`/hub).
    #[arg(long, env = "SD_WORKER_HF_CACHE")]
    pub hf_cache: Option<PathBuf>,

    /// Most models kept loaded at once when requests switch between them (least recently
    /// used is unloaded first).
    #[arg(long, env = "SD_WORKER_MAX_LOADED_MODELS", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_loaded_models: u32,

    /// Let requests name model, LoRA and VAE files by absolute path outside --models-dir.
    #[arg(long, env = "SD_WORKER_ALLOW_EXTERNAL_MODEL_PATHS")]
    pub allow_external_model_paths: bool,

    /// Prediction type of single-file checkpoints (auto-detected by default).
    #[arg(long, value_enum, env = "SD_WORKER_PREDICTION_TYPE", default_value_t = PredictionOverride::Auto)]
    pub prediction_type: PredictionOverride,

    /// Jobs that may wait behind the running one before new jobs get 503.
    #[arg(long, env = "SD_WORKER_QUEUE_CAPACITY", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..))]
    pub queue_capacity: u32,

    /// Browser origins allowed to call the API cross-origin (CORS), e.g. `http://localhost:3000`;
    /// repeat or separate with commas; `*` allows any origin. Off by default: same-origin pages
    /// (Swagger UI) and non-browser clients need no CORS.
    #[arg(long = "cors-origin", env = "SD_WORKER_CORS_ORIGINS", value_delimiter = ',', value_parser = parse_cors_origin)]
    pub cors_origins: Vec<String>,

    /// Base URL clients reach this worker at (behind a proxy), used for absolute links.
    #[arg(long, env = "SD_WORKER_PUBLIC_URL")]
    pub public_url: Option<String>,

    /// Seconds a finished job stays readable (status, results, late streams) before it is freed.
    #[arg(long, env = "SD_WORKER_JOB_RETENTION_SECS", default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..))]
    pub job_retention_secs: u64,

    /// Seconds an OpenAI `response_format: url` link stays valid (OpenAI's own links: 60 minutes).
    #[arg(long, env = "SD_WORKER_IMAGE_URL_TTL_SECS", default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..))]
    pub image_url_ttl_secs: u64,
    /// Largest width or height a job may ask for, in pixels.
    #[arg(long, env = "SD_WORKER_MAX_SIDE", default_value_t = DEFAULT_MAX_SIDE, value_parser = clap::value_parser!(u32).range(64..=16384))]
    pub max_side: u32,

    /// Largest width × height a job may ask for, in pixels.
    #[arg(long, env = "SD_WORKER_MAX_PIXELS", default_value_t = DEFAULT_MAX_PIXELS, value_parser = clap::value_parser!(u64).range(4096..))]
    pub max_pixels: u64,

    /// Most sampling steps per image.
    #[arg(long, env = "SD_WORKER_MAX_STEPS", default_value_t = DEFAULT_MAX_STEPS, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_steps: u32,

    /// Most images one job may produce (`n`, `num_images`, A1111 `batch_size`). An A1111 call's
    /// `n_iter` (at most 100, A1111's own limit) runs that many such jobs one after another.
    #[arg(long, env = "SD_WORKER_MAX_IMAGES", default_value_t = DEFAULT_MAX_IMAGES, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_images: u32,

    /// Longest prompt, and longest negative prompt, in characters.
    #[arg(long, env = "SD_WORKER_MAX_PROMPT_CHARS", default_value_t = DEFAULT_MAX_PROMPT_CHARS, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_prompt_chars: u32,

    /// Largest request body in MiB, uploaded images included.
    #[arg(long, env = "SD_WORKER_MAX_BODY_MIB", default_value_t = DEFAULT_MAX_BODY_MIB, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub max_body_mib: u32,

    /// Largest decoded input image (init image, mask, upload) in pixels; refused from the image
    /// header, before decoding, so a small compressed file cannot expand into gigabytes.
    #[arg(long, env = "SD_WORKER_MAX_INPUT_PIXELS", default_value_t = DEFAULT_MAX_INPUT_PIXELS, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_input_pixels: u64,

    /// Seconds a job may run (counted from when it starts, not while it waits) before it fails
    /// as timed out; 0 = no limit.
    #[arg(long = "job-timeout", env = "SD_WORKER_JOB_TIMEOUT", default_value_t = DEFAULT_JOB_TIMEOUT_SECS)]
    pub job_timeout_secs: u64,

    #[arg(long, value_enum, env = "SD_WORKER_LOG_FORMAT", default_value_t = LogFormat::Pretty)]
    pub log_format: LogFormat,

    /// Print `release` or `debug` and exit (rbee's install check). Handled before parsing.
    #[arg(long)]
    pub build_info: bool,
}

// Hand-written so API keys never reach a log line.
impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("worker_id", &self.worker_id())
            .field("model", &self.model)
            .field("device", &self.device)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("queen_url", &self.queen_url)
            .field("api_keys", &format_args!("{} key(s)", self.api_keys().len()))
            .field("models_dir", &self.models_dir)
            .field("hf_cache", &self.hf_cache)
            .field("max_loaded_models", &self.max_loaded_models)
            .field("allow_external_model_paths", &self.allow_external_model_paths)
            .field("prediction_type", &self.prediction_type)
            .field("queue_capacity", &self.queue_capacity)
            .field("public_url", &self.public_url)
            .field("cors_origins", &self.cors_origins)
            .field("job_retention_secs", &self.job_retention_secs)
            .field("image_url_ttl_secs", &self.image_url_ttl_secs)
            .field("limits", &self.request_limits())
            .field("max_body_mib", &self.max_body_mib)
            .field("job_timeout_secs", &self.job_timeout_secs)
            .field("log_format", &self.log_format)
            .finish()
    }
}

/// A CORS origin as browsers send it: `*`, or `scheme://host[:port]` with no path.
fn parse_cors_origin(value: &str) -> Result<String, String> {
    let value = value.trim();
    if value == "*" {
        return Ok(value.to_string());
    }
    let rest = value.strip_prefix("http://").or_else(|| value.strip_prefix("https://"));
    match rest {
        Some(host) if !host.is_empty() && !host.contains('/') && value.is_ascii() && !value.contains(char::is_whitespace) => {
            Ok(value.to_string())
        }
        _ => Err(format!("'{value}' is not an origin: use * or scheme://host[:port], e.g. http://localhost:3000")),
    }
}

impl Config {
    /// The id this worker reports in heartbeats.
    pub fn worker_id(&self) -> String {
        self.worker_id.clone().unwrap_or_else(|| format!("sd-worker-{}", self.port))
    }

    /// Configured API keys, ignoring empty entries (`LLORCH_API_TOKEN=""` means no auth).
    pub fn api_keys(&self) -> Vec<String> {
        self.api_keys.iter().map(|k| k.trim()).filter(|k| !k.is_empty()).map(str::to_string).collect()
    }

    pub fn job_retention(&self) -> Duration {
        Duration::from_secs(self.job_retention_secs)
    }

    pub fn image_url_ttl(&self) -> Duration {
        Duration::from_secs(self.image_url_ttl_secs)
    }

    /// The request limits the faces enforce.
    pub fn request_limits(&self) -> RequestLimits {
        RequestLimits {
            max_side: self.max_side,
            max_pixels: self.max_pixels,
            max_steps: self.max_steps,
            max_images: self.max_images,
            max_prompt_chars: self.max_prompt_chars,
            max_input_pixels: self.max_input_pixels,
            ..RequestLimits::default()
        }
    }

    /// Largest request body in bytes.
    pub fn max_body_bytes(&self) -> usize {
        self.max_body_mib as usize * 1024 * 1024
    }

    /// How long a job may run once started; `None` = no limit.
    pub fn job_timeout(&self) -> Option<Duration> {
        (self.job_timeout_secs > 0).then(|| Duration::from_secs(self.job_timeout_secs))
    }

    /// A config with every default, for tests and embedding (ignores the environment).
    pub fn defaults() -> Self {
        Config {
            worker_id: None,
            model: DEFAULT_MODEL.to_string(),
            device: 0,
            host: "127.0.0.1".to_string(),
            port: 8080,
            queen_url: None,
            api_keys: Vec::new(),
            models_dir: None,
            hf_cache: None,
            max_loaded_models: 1,
            allow_external_model_paths: false,
            prediction_type: PredictionOverride::Auto,
            queue_capacity: 8,
            public_url: None,
            cors_origins: Vec::new(),
            job_retention_secs: 600,
            image_url_ttl_secs: 3600,
            max_side: DEFAULT_MAX_SIDE,
            max_pixels: DEFAULT_MAX_PIXELS,
            max_steps: DEFAULT_MAX_STEPS,
            max_images: DEFAULT_MAX_IMAGES,
            max_prompt_chars: DEFAULT_MAX_PROMPT_CHARS,
            max_body_mib: DEFAULT_MAX_BODY_MIB,
            max_input_pixels: DEFAULT_MAX_INPUT_PIXELS,
            job_timeout_secs: DEFAULT_JOB_TIMEOUT_SECS,
            log_format: LogFormat::Pretty,
            build_info: false,
        }
    }
}

/// `release` or `debug`, what rbee's lifecycle expects from `--build-info`.
pub fn build_info() -> &'static str {
    if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    }
}

/// True when argv asks for `--build-info`: checked before clap so that no other (required or
/// malformed) argument can stop the answer.
pub fn wants_build_info<I: IntoIterator<Item = S>, S: AsRef<std::ffi::OsStr>>(args: I) -> bool {
    args.into_iter().skip(1).any(|a| a.as_ref() == "--build-info")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_exact_hive_spawn_line() {
        let cfg = Config::try_parse_from([
            "sd-worker-rbee",
            "--worker-id",
            "worker-cpu-8080",
            "--model",
            "stabilityai/sd-turbo",
            "--device",
            "0",
            "--port",
            "8080",
            "--queen-url",
            "http://localhost:7833",
        ])
        .expect("hive spawn line parses");
        assert_eq!(cfg.worker_id(), "worker-cpu-8080");
        assert_eq!(cfg.port, 8080);
        assert_eq!(cfg.queen_url.as_deref(), Some("http://localhost:7833"));
    }

    #[test]
    fn hive_url_is_an_alias_and_api_keys_split_on_commas() {
        let cfg = Config::try_parse_from(["x", "--hive-url", "http://q:1", "--api-key", "a,b", "--api-key", "c"]).expect("parses");
        assert_eq!(cfg.queen_url.as_deref(), Some("http://q:1"));
        assert_eq!(cfg.api_keys(), vec!["a", "b", "c"]);
    }

    #[test]
    fn model_library_flags_parse() {
        let cfg = Config::try_parse_from(["x", "--models-dir", "/m", "--max-loaded-models", "3", "--prediction-type", "v", "--allow-external-model-paths"]).expect("parses");
        assert_eq!(cfg.models_dir.as_deref(), Some(std::path::Path::new("/m")));
        assert_eq!((cfg.max_loaded_models, cfg.prediction_type.v_prediction(), cfg.allow_external_model_paths), (3, Some(true), true));
        assert!(Config::try_parse_from(["x", "--max-loaded-models", "0"]).is_err());
        assert_eq!(Config::defaults().prediction_type.v_prediction(), None);
    }

    #[test]
    fn retention_flags_parse_and_default_to_ten_and_sixty_minutes() {
        let cfg = Config::try_parse_from(["x", "--job-retention-secs", "5", "--image-url-ttl-secs", "7"]).expect("parses");
        assert_eq!((cfg.job_retention(), cfg.image_url_ttl()), (Duration::from_secs(5), Duration::from_secs(7)));
        let defaults = Config::defaults();
        assert_eq!((defaults.job_retention(), defaults.image_url_ttl()), (Duration::from_secs(600), Duration::from_secs(3600)));
        assert!(Config::try_parse_from(["x", "--job-retention-secs", "0"]).is_err());
    }

    #[test]
    fn limit_flags_reach_the_request_limits() {
        let cfg = Config::try_parse_from([
            "x", "--max-side", "64", "--max-pixels", "4096", "--max-steps", "2", "--max-images", "2", "--max-prompt-chars", "30",
            "--max-body-mib", "1", "--max-input-pixels", "10000", "--job-timeout", "7",
        ])
        .expect("parses");
        let limits = cfg.request_limits();
        assert_eq!((limits.max_side, limits.max_pixels, limits.max_steps, limits.max_images), (64, 4096, 2, 2));
        assert_eq!((limits.max_prompt_chars, limits.max_input_pixels), (30, 10000));
        assert_eq!((cfg.max_body_bytes(), cfg.job_timeout()), (1024 * 1024, Some(Duration::from_secs(7))));
        assert_eq!(Config::try_parse_from(["x", "--job-timeout", "0"]).expect("parses").job_timeout(), None);
        assert!(Config::try_parse_from(["x", "--max-side", "32"]).is_err(), "below the smallest side");
        assert!(Config::try_parse_from(["x", "--max-steps", "0"]).is_err());
        let defaults = Config::try_parse_from(["x"]).expect("parses");
        assert_eq!(defaults.request_limits(), RequestLimits::default());
        assert_eq!(defaults.request_limits(), Config::defaults().request_limits());
        assert_eq!((defaults.max_body_mib, defaults.job_timeout_secs), (Config::defaults().max_body_mib, Config::defaults().job_timeout_secs));
    }

    #[test]
    fn queue_capacity_zero_is_refused() {
        assert!(Config::try_parse_from(["x", "--queue-capacity", "0"]).is_err());
    }

    #[test]
    fn build_info_is_found_anywhere_after_the_program_name() {
        assert!(wants_build_info(["bin", "--port", "x", "--build-info"]));
        assert!(!wants_build_info(["--build-info"]));
        assert!(matches!(build_info(), "debug" | "release"));
    }

    #[test]
    fn cors_origins_are_checked_when_parsed() {
        let cfg = Config::try_parse_from(["x", "--cors-origin", "http://localhost:3000,https://app.example:8443", "--cors-origin", "*"]).expect("parses");
        assert_eq!(cfg.cors_origins, vec!["http://localhost:3000", "https://app.example:8443", "*"]);
        for bad in ["localhost:3000", "http://host/path", "ftp://x", "http://"] {
            assert!(Config::try_parse_from(["x", "--cors-origin", bad]).is_err(), "{bad}");
        }
        assert!(Config::try_parse_from(["x"]).expect("parses").cors_origins.is_empty(), "off by default");
    }

    #[test]
    fn debug_output_hides_api_keys() {
        let mut cfg = Config::defaults();
        cfg.api_keys = vec!["secret-token".into()];
        let text = format!("{cfg:?}");
        assert!(!text.contains("secret-token") && text.contains("1 key(s)"));
    }
}
