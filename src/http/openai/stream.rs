//! `stream: true`: server-sent events exactly as OpenAI's SDKs parse them. Frames are
//! `event: <type>` plus one-line JSON `data:` whose `type` repeats the event name; keep-alives are
//! `:` comments; there are no `id:` lines (the SDK would then dispatch empty events) and no
//! `[DONE]`. Partial images come from the engine's previews, spread evenly over the run; each
//! finished image is one `*.completed` event (several with `n > 1`). A failure after the stream
//! started is `event: error` with `{"type":"error","error":{...}}`, which the SDK raises as
//! `APIError`. Closing the connection cancels the job.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::Serialize;
use utoipa::ToSchema;

use crate::backend::request::JobEvent;
use crate::http::job_registry::JobRecord;
use crate::http::native::events::base64_encode;
use crate::http::openai::errors::{OpenAiError, OpenAiErrorDetail};
use crate::http::openai::jobs::off_runtime;
use crate::http::openai::output::{finish_image, finish_preview};
use crate::http::openai::plan::ReplySettings;
use crate::http::openai::response::ImagesUsage;
use crate::http::sse::{json_event, sse_response};

/// `image_generation.partial_image` / `image_edit.partial_image`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PartialImageEvent {
    #[serde(rename = "type")]
    #[schema(example = "image_generation.partial_image")]
    pub kind: String,
    pub b64_json: String,
    /// Unix seconds.
    pub created_at: i64,
    #[schema(example = "1024x1024")]
    pub size: String,
    #[schema(example = "medium")]
    pub quality: &'static str,
    #[schema(example = "opaque")]
    pub background: &'static str,
    #[schema(example = "png")]
    pub output_format: &'static str,
    /// 0-based.
    pub partial_image_index: u32,
}

/// `image_generation.completed` / `image_edit.completed`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CompletedEvent {
    #[serde(rename = "type")]
    #[schema(example = "image_generation.completed")]
    pub kind: String,
    pub b64_json: String,
    pub created_at: i64,
    #[schema(example = "1024x1024")]
    pub size: String,
    #[schema(example = "medium")]
    pub quality: &'static str,
    #[schema(example = "opaque")]
    pub background: &'static str,
    #[schema(example = "png")]
    pub output_format: &'static str,
    pub usage: ImagesUsage,
}

/// `event: error`: a failure after the stream started.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StreamErrorEvent {
    /// Always `error`.
    #[serde(rename = "type")]
    #[schema(example = "error")]
    pub kind: &'static str,
    pub error: OpenAiErrorDetail,
}

/// Follow `record` and answer with OpenAI's image stream.
pub fn stream_response(record: Arc<JobRecord>, reply: ReplySettings, created_at: i64) -> Response {
    let reply = Arc::new(reply);
    let partials_sent = Arc::new(AtomicU32::new(0));
    let frames = record.subscribe().filter_map(move |event| {
        let (reply, partials_sent) = (reply.clone(), partials_sent.clone());
        async move { frame(&event, reply, &partials_sent, created_at).await }
    });
    sse_response(frames).into_response()
}

/// The frame (if any) one engine event becomes.
async fn frame(event: &JobEvent, reply: Arc<ReplySettings>, partials_sent: &AtomicU32, created_at: i64) -> Option<Event> {
    let prefix = reply.endpoint.event_prefix();
    match event {
        JobEvent::Preview(preview) => {
            let index = partials_sent.load(Ordering::SeqCst);
            if !is_due(index, reply.partial_images, preview.step, preview.total) {
                return None;
            }
            let preview = preview.clone();
            let settings = reply.clone();
            // Resizing and encoding are CPU work: keep them off the async workers.
            let encoded = off_runtime(move || finish_preview(&preview, settings.width, settings.height, settings.encoding)).await;
            match encoded {
                Ok(bytes) => {
                    partials_sent.store(index + 1, Ordering::SeqCst);
                    let name = format!("{prefix}.partial_image");
                    Some(json_event(
                        &name,
                        &PartialImageEvent {
                            kind: name.clone(),
                            b64_json: base64_encode(&bytes),
                            created_at,
                            size: reply.size_label(),
                            quality: reply.quality,
                            background: "opaque",
                            output_format: reply.encoding.format.name(),
                            partial_image_index: index,
                        },
                    ))
                }
                // A preview that cannot be shown is not worth failing the job for.
                Err(e) => {
                    tracing::warn!(error = %e.message, "skipping a partial image");
                    None
                }
            }
        }
        JobEvent::Image(image) => {
            let image = image.clone();
            let settings = reply.clone();
            let finished = off_runtime(move || finish_image(&image, settings.width, settings.height, settings.encoding)).await;
            Some(match finished {
                Ok(image) => {
                    let name = format!("{prefix}.completed");
                    json_event(
                        &name,
                        &CompletedEvent {
                            kind: name.clone(),
                            b64_json: base64_encode(&image.bytes),
                            created_at,
                            size: reply.size_label(),
                            quality: reply.quality,
                            background: "opaque",
                            output_format: reply.encoding.format.name(),
                            usage: ImagesUsage::for_prompt(&reply.prompt),
                        },
                    )
                }
                Err(e) => error_frame(&e),
            })
        }
        JobEvent::Failed(e) => Some(error_frame(&OpenAiError::from(e))),
        JobEvent::Cancelled => Some(error_frame(&OpenAiError::server_error("the job was cancelled before it finished"))),
        JobEvent::Queued { .. } | JobEvent::Started { .. } | JobEvent::Step { .. } | JobEvent::Done => None,
    }
}

/// Whether the preview at `step` of `total` should become partial image `index` of `wanted`:
/// partial i is due once `(i + 1) / (wanted + 1)` of the run is done.
fn is_due(index: u32, wanted: u32, step: u32, total: u32) -> bool {
    index < wanted && u64::from(step) * u64::from(wanted + 1) >= u64::from(index + 1) * u64::from(total)
}

fn error_frame(error: &OpenAiError) -> Event {
    json_event("error", &StreamErrorEvent { kind: "error", error: error.body().error })
}

#[cfg(test)]
mod tests {
    use super::is_due;

    /// Which steps of a `total`-step run become partial images when every step has a preview.
    fn chosen(wanted: u32, total: u32) -> Vec<u32> {
        let mut sent = 0;
        let mut steps = Vec::new();
        // The engine previews every step but the last.
        for step in 1..total {
            if is_due(sent, wanted, step, total) {
                steps.push(step);
                sent += 1;
            }
        }
        steps
    }

    #[test]
    fn partials_are_spread_evenly_over_the_run() {
        assert_eq!(chosen(2, 6), vec![2, 4]);
        assert_eq!(chosen(3, 20), vec![5, 10, 15]);
        assert_eq!(chosen(1, 4), vec![2]);
        assert_eq!(chosen(0, 10), Vec::<u32>::new());
        // Too few steps: fewer partials, as OpenAI allows.
        assert_eq!(chosen(3, 2), vec![1]);
    }
}
