//! The engine running the real pipeline on the tiny fixture model: events in order, per-image
//! seeds independent of batch position, byte-identical reruns, failures isolated, cancellation
//! within one step.

use std::path::Path;
use std::sync::Arc;

use candle_core::Device;
use sd_worker_rbee::backend::generation_engine::GenerationEngine;
use sd_worker_rbee::backend::models::hub::HubOptions;
use sd_worker_rbee::backend::pipeline::{load_runner, LoadOptions};
use sd_worker_rbee::backend::request::{GeneratedImage, GenerationRequest, JobError, JobEvent, PreviewPolicy, SamplerKind};
use sd_worker_rbee::backend::request_queue::JobEventReceiver;

fn engine() -> Arc<GenerationEngine> {
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-sd15");
    let hub = HubOptions { cache_dir: std::env::temp_dir().join("sd-worker-rbee-no-hub"), endpoint: Some("http://127.0.0.1:9".into()) };
    let opts = LoadOptions::new(model.to_string_lossy(), hub, Device::Cpu);
    GenerationEngine::start(4, move || load_runner(&opts, None))
}

fn request(seed: u64) -> GenerationRequest {
    let mut r = GenerationRequest::new("a photo of a cat");
    r.negative_prompt = "blurry".into();
    r.width = 64;
    r.height = 64;
    r.steps = 4;
    r.seed = Some(seed);
    r
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

fn images(events: &[JobEvent]) -> Vec<GeneratedImage> {
    events.iter().filter_map(|e| if let JobEvent::Image(i) = e { Some(i.clone()) } else { None }).collect()
}

#[test]
fn a_job_streams_started_steps_previews_images_then_done() {
    let engine = engine();
    let mut req = request(7);
    req.preview = PreviewPolicy::EveryNSteps(2);
    req.num_images = 2;
    let mut job = engine.submit(req).expect("accepted");
    let events = collect(&mut job.events);
    assert!(matches!(events.first(), Some(JobEvent::Queued { .. })));
    assert!(matches!(events.get(1), Some(JobEvent::Started { seed: 7, total_steps: 8 })));
    let steps: Vec<u32> = events.iter().filter_map(|e| if let JobEvent::Step { step, .. } = e { Some(*step) } else { None }).collect();
    assert_eq!(steps, (1..=8).collect::<Vec<_>>());
    assert!(events.iter().any(|e| matches!(e, JobEvent::Preview(p) if p.width == 64 && p.png.starts_with(b"\x89PNG"))));
    let imgs = images(&events);
    assert_eq!(imgs.iter().map(|i| i.seed).collect::<Vec<_>>(), vec![7, 8]);
    for img in &imgs {
        let decoded = image::load_from_memory(&img.bytes).expect("valid PNG");
        assert_eq!((decoded.width(), decoded.height()), (64, 64));
        assert!(img.infotext.contains("Steps: 4, Sampler: Euler, Schedule type: Automatic, CFG scale: 7.5, Seed: "), "{}", img.infotext);
    }
    assert!(matches!(events.last(), Some(JobEvent::Done)));
    engine.shutdown();
}

#[test]
fn image_i_of_a_batch_equals_a_lone_image_with_seed_plus_i_and_reruns_are_identical() {
    let engine = engine();
    let mut batch = request(100);
    batch.num_images = 2;
    batch.sampler = SamplerKind::EulerAncestral; // draws noise every step: the strictest case
    let mut lone = request(101);
    lone.sampler = SamplerKind::EulerAncestral;
    let batch_imgs = images(&collect(&mut engine.submit(batch).expect("accepted").events));
    let lone_a = images(&collect(&mut engine.submit(lone.clone()).expect("accepted").events));
    let lone_b = images(&collect(&mut engine.submit(lone).expect("accepted").events));
    assert_eq!(batch_imgs.len(), 2);
    assert_eq!(batch_imgs[1].bytes, lone_a[0].bytes, "image 1 of the batch must equal seed+1 alone");
    assert_eq!(lone_a[0].bytes, lone_b[0].bytes, "same request, same bytes");
    assert_ne!(batch_imgs[0].bytes, batch_imgs[1].bytes, "different seeds, different images");
    engine.shutdown();
}

#[test]
fn an_invalid_job_fails_alone_and_the_next_one_runs() {
    let engine = engine();
    let mut bad = request(1);
    bad.width = 63;
    let mut bad_job = engine.submit(bad).expect("accepted");
    let mut good_job = engine.submit(request(2)).expect("accepted");
    assert!(matches!(
        collect(&mut bad_job.events).last(),
        Some(JobEvent::Failed(JobError::InvalidRequest { field, .. })) if field == "width"
    ));
    assert!(matches!(collect(&mut good_job.events).last(), Some(JobEvent::Done)));
    engine.shutdown();
}

#[test]
fn cancel_mid_run_stops_within_one_step() {
    let engine = engine();
    let mut long = request(3);
    long.steps = 200;
    let mut job = engine.submit(long).expect("accepted");
    loop {
        match job.events.blocking_recv() {
            Some(JobEvent::Step { step: 2, .. }) => break,
            Some(ev) if ev.is_terminal() => panic!("ended early: {ev:?}"),
            Some(_) => {}
            None => panic!("channel closed"),
        }
    }
    assert!(engine.cancel(&job.id));
    let rest = collect(&mut job.events);
    let more_steps = rest.iter().filter(|e| matches!(e, JobEvent::Step { .. })).count();
    assert!(more_steps <= 1, "{more_steps} steps ran after cancel");
    assert!(matches!(rest.last(), Some(JobEvent::Cancelled)));
    assert!(images(&rest).is_empty());
    let mut next = engine.submit(request(4)).expect("accepted");
    assert!(matches!(collect(&mut next.events).last(), Some(JobEvent::Done)));
    engine.shutdown();
}
