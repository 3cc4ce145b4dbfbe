//! The JSON the native face reports job events and results with: SSE payloads (the SSE event
//! name equals the payload's `"type"`), and the finished-job status body.

use base64::Engine as _;
use serde::Serialize;
use utoipa::ToSchema;

use crate::backend::request::{GeneratedImage, JobEvent};
use crate::http::error::job_error_code;

/// Final unnamed `data:` lines, as rbee's `jobs-contract` defines them.
pub const DONE_MARKER: &str = "[DONE]";
pub const ERROR_MARKER_PREFIX: &str = "[ERROR]";
pub const CANCELLED_MARKER: &str = "[CANCELLED]";

/// One SSE event's data. The SSE `event:` name is the same as `type`.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum JobStreamEvent {
    /// Accepted; `position` jobs are ahead of it.
    Queued { job_id: String, position: usize },
    /// The engine took the job.
    Started {
        job_id: String,
        model: Option<String>,
        /// The base seed (image i uses seed + i).
        seed: u64,
        total_steps: u32,
    },
    /// A sampling step finished (`step` counts over all images of the job).
    Progress { step: u32, total: u32, percent: f32 },
    /// A rough picture of the job so far.
    Preview {
        step: u32,
        total: u32,
        percent: f32,
        /// Base64 PNG, no `data:` prefix.
        image: String,
        format: String,
        width: u32,
        height: u32,
    },
    /// One finished image (one event per image).
    Complete {
        /// Base64 file bytes in `format`, no `data:` prefix.
        image: String,
        #[schema(example = "png")]
        format: String,
        seed: u64,
        width: u32,
        height: u32,
        /// Position in the request, 0-based.
        index: u32,
        /// A1111-style "parameters" text describing how the image was made.
        infotext: String,
    },
    /// The job failed; the stream then ends with `[ERROR] <message>`.
    Error { code: String, message: String },
}

impl JobStreamEvent {
    pub fn name(&self) -> &'static str {
        match self {
            JobStreamEvent::Queued { .. } => "queued",
            JobStreamEvent::Started { .. } => "started",
            JobStreamEvent::Progress { .. } => "progress",
            JobStreamEvent::Preview { .. } => "preview",
            JobStreamEvent::Complete { .. } => "complete",
            JobStreamEvent::Error { .. } => "error",
        }
    }
}

/// What a job event becomes on the native stream: a JSON event, a final marker, or both.
#[derive(Debug, Clone)]
pub struct StreamItems {
    pub event: Option<JobStreamEvent>,
    pub final_marker: Option<String>,
}

pub fn percent(step: u32, total: u32) -> f32 {
    if total == 0 {
        return 0.0;
    }
    // One decimal is all a progress bar needs.
    (f64::from(step) * 1000.0 / f64::from(total)).round() as f32 / 10.0
}

pub fn base64_encode(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A finished image as it appears in job results.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct JobImage {
    pub index: u32,
    /// Base64 file bytes in `format`.
    pub image: String,
    #[schema(example = "png")]
    pub format: String,
    pub seed: u64,
    pub width: u32,
    pub height: u32,
    pub infotext: String,
}

impl From<&GeneratedImage> for JobImage {
    fn from(image: &GeneratedImage) -> Self {
        JobImage {
            index: image.index,
            image: base64_encode(&image.bytes),
            format: image.format.extension().to_string(),
            seed: image.seed,
            width: image.width,
            height: image.height,
            infotext: image.infotext.clone(),
        }
    }
}

/// Translate one engine event for the native stream.
pub fn stream_items(job_id: &str, model: Option<&str>, event: &JobEvent) -> StreamItems {
    let json = |event| StreamItems { event: Some(event), final_marker: None };
    match event {
        JobEvent::Queued { position } => json(JobStreamEvent::Queued { job_id: job_id.to_string(), position: *position }),
        JobEvent::Started { seed, total_steps } => json(JobStreamEvent::Started {
            job_id: job_id.to_string(),
            model: model.map(str::to_string),
            seed: *seed,
            total_steps: *total_steps,
        }),
        JobEvent::Step { step, total } => json(JobStreamEvent::Progress { step: *step, total: *total, percent: percent(*step, *total) }),
        JobEvent::Preview(p) => json(JobStreamEvent::Preview {
            step: p.step,
            total: p.total,
            percent: percent(p.step, p.total),
            image: base64_encode(&p.png),
            format: "png".to_string(),
            width: p.width,
            height: p.height,
        }),
        JobEvent::Image(image) => {
            let JobImage { index, image, format, seed, width, height, infotext } = JobImage::from(image);
            json(JobStreamEvent::Complete { image, format, seed, width, height, index, infotext })
        }
        JobEvent::Done => StreamItems { event: None, final_marker: Some(DONE_MARKER.to_string()) },
        JobEvent::Cancelled => StreamItems { event: None, final_marker: Some(CANCELLED_MARKER.to_string()) },
        JobEvent::Failed(e) => {
            let message = e.to_string();
            StreamItems {
                event: Some(JobStreamEvent::Error { code: job_error_code(e).to_string(), message: message.clone() }),
                final_marker: Some(format!("{ERROR_MARKER_PREFIX} {message}")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::request::JobError;

    #[test]
    fn percent_has_one_decimal() {
        assert_eq!(percent(1, 3), 33.3);
        assert_eq!(percent(4, 4), 100.0);
        assert_eq!(percent(0, 0), 0.0);
    }

    #[test]
    fn progress_json_carries_its_type() {
        let items = stream_items("job-1", None, &JobEvent::Step { step: 2, total: 4 });
        let event = items.event.expect("json event");
        assert_eq!(event.name(), "progress");
        let json = serde_json::to_value(&event).expect("serializes");
        assert_eq!(json, serde_json::json!({"type":"progress","step":2,"total":4,"percent":50.0}));
    }

    #[test]
    fn failure_gives_an_error_event_and_an_error_marker() {
        let items = stream_items("job-1", None, &JobEvent::Failed(JobError::Internal("boom".into())));
        assert!(matches!(items.event, Some(JobStreamEvent::Error { ref code, .. }) if code == "GENERATION_ERROR"));
        assert_eq!(items.final_marker.as_deref(), Some("[ERROR] generation failed: boom"));
    }
}
