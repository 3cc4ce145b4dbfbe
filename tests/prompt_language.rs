//! A1111 prompt language through the whole engine on the tiny model: long prompts, weights,
//! BREAK, editing and alternation generate; LoRA tags are reported, not silently dropped.

use std::path::Path;
use std::sync::Arc;

use candle_core::Device;
use sd_worker_rbee::backend::generation_engine::GenerationEngine;
use sd_worker_rbee::backend::models::hub::HubOptions;
use sd_worker_rbee::backend::pipeline::{load_runner, LoadOptions};
use sd_worker_rbee::backend::request::{GeneratedImage, GenerationRequest, JobError, JobEvent};
use sd_worker_rbee::backend::request_queue::JobEventReceiver;

fn engine(model: &str) -> Arc<GenerationEngine> {
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(model);
    let hub = HubOptions { cache_dir: std::env::temp_dir().join("sd-worker-rbee-no-hub"), endpoint: Some("http://127.0.0.1:9".into()) };
    let opts = LoadOptions::new(model.to_string_lossy(), hub, Device::Cpu);
    GenerationEngine::start(4, move || load_runner(&opts, None))
}

fn request(prompt: &str) -> GenerationRequest {
    let mut r = GenerationRequest::new(prompt);
    r.negative_prompt = "blurry".into();
    r.width = 64;
    r.height = 64;
    r.steps = 4;
    r.seed = Some(3);
    r
}

fn run(engine: &GenerationEngine, req: GenerationRequest) -> Vec<JobEvent> {
    let mut job = engine.submit(req).expect("accepted");
    collect(&mut job.events)
}

fn collect(rx: &mut JobEventReceiver) -> Vec<JobEvent> {
    let mut out = Vec::new();
    while let Some(ev) = rx.blocking_recv() {
        let end = ev.is_terminal();
        out.push(ev);
        if end {
            break;
        }
    }
    out
}

fn only_image(events: &[JobEvent]) -> GeneratedImage {
    assert!(matches!(events.last(), Some(JobEvent::Done)), "{:?}", events.last());
    let images: Vec<&GeneratedImage> = events.iter().filter_map(|e| if let JobEvent::Image(i) = e { Some(i) } else { None }).collect();
    assert_eq!(images.len(), 1);
    images[0].clone()
}

#[test]
fn long_weighted_edited_prompts_generate_on_sd15_and_sdxl() {
    let long = format!(
        "{} (masterpiece:1.3), [blurry], BREAK a [red:blue:2] [cat|dog] in a garden",
        "a highly detailed photo of a small cat sitting on a wooden chair, ".repeat(6)
    );
    for model in ["tiny-sd15", "tiny-sdxl"] {
        let engine = engine(model);
        let image = only_image(&run(&engine, request(&long)));
        let decoded = image::load_from_memory(&image.bytes).expect("valid PNG");
        assert_eq!((decoded.width(), decoded.height()), (64, 64));
        assert!(image.infotext.starts_with(&long), "{}", image.infotext);
        // the 75-token cut no longer applies: the long prompt differs from its first chunk alone
        let truncated = only_image(&run(&engine, request(&long[..200])));
        assert_ne!(image.bytes, truncated.bytes, "{model}");
        engine.shutdown();
    }
}

#[test]
fn extra_network_tags_are_removed_from_the_text_and_unapplied_ones_reported() {
    let engine = engine("tiny-sd15");
    let tagged = only_image(&run(&engine, request("a photo of a cat<lora:film_grain:0.8><hypernet:anime>")));
    assert!(tagged.infotext.starts_with("a photo of a cat<lora:film_grain:0.8><hypernet:anime>\n"), "{}", tagged.infotext);
    // The tag becomes a LoRA of the job; with no models folder it cannot be found, and the job
    // says so in its warnings rather than dropping it silently.
    assert!(tagged.warnings.iter().any(|w| w.contains("film_grain") && w.contains("not applied")), "{:?}", tagged.warnings);
    assert!(tagged.infotext.contains(r#"Extra networks not supported: "hypernet:anime""#), "{}", tagged.infotext);
    // the tag text itself is not encoded: same pixels as the bare prompt
    let bare = only_image(&run(&engine, request("a photo of a cat")));
    assert!(!bare.infotext.contains("Lora"));
    assert_eq!(decode_pixels(&tagged), decode_pixels(&bare));

    let events = run(&engine, request("a cat <lora:x:strong>"));
    match events.last() {
        Some(JobEvent::Failed(JobError::InvalidRequest { field, message })) => {
            assert_eq!(field, "prompt");
            assert!(message.contains("<lora:x:strong>"), "{message}");
        }
        other => panic!("expected an invalid-request failure, got {other:?}"),
    }
    engine.shutdown();
}

fn decode_pixels(image: &GeneratedImage) -> Vec<u8> {
    image::load_from_memory(&image.bytes).expect("valid PNG").to_rgb8().into_raw()
}
