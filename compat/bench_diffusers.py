#!/usr/bin/env python3
"""diffusers baseline for `cargo bench --bench sd_bench`.

Loads the bench's random-weight diffusers folder in float32 on the CPU with the same thread
count, times the same items with the same inputs' shapes and settings (CFG 7.5, batch 2 UNet
steps, 512x512 VAE, a 4-step Euler 512x512 job with PNG encoding) and prints one JSON line:
{"torch", "diffusers", "median_s": {item: s}, "best_s": {item: s}, "peak_rss": {item: bytes},
"load_peak_rss": bytes}.
Progress goes to stderr. Peak RSS per item is VmHWM after resetting it (Linux clear_refs 5)
right before the item, so it includes the resident weights, like the Rust side.
"""
import argparse
import io
import json
import statistics
import sys
import time

import torch

PROMPT = "a photograph of an astronaut riding a horse on the moon, highly detailed"
NEGATIVE = "blurry, low quality"
GUIDANCE = 7.5
JOB_STEPS = 4


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def reset_peak_rss():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def peak_rss():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return None


def time_runs(fn, warmup, runs):
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(max(runs, 1)):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--items", default="text,unet256,unet512,vae_decode,vae_encode,job")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--job-runs", type=int, default=1, help="end-to-end jobs, no warm-up")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    import diffusers
    from diffusers import DiffusionPipeline, EulerDiscreteScheduler
    diffusers.utils.logging.disable_progress_bar()
    diffusers.utils.logging.set_verbosity_error()

    items = [i for i in args.items.split(",") if i]
    # The job first, as on the Rust side, so its peak RSS is not inflated by the other items.
    items.sort(key=lambda item: item != "job")
    reset_peak_rss()
    start = time.perf_counter()
    pipe = DiffusionPipeline.from_pretrained(args.model, torch_dtype=torch.float32)
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    load_peak = peak_rss()
    log(f"diffusers: loaded in {time.perf_counter() - start:.1f} s")
    sdxl = hasattr(pipe, "text_encoder_2") and pipe.text_encoder_2 is not None
    gen = torch.Generator().manual_seed(0)

    def encode(side):
        if sdxl:
            pe, npe, pooled, npooled = pipe.encode_prompt(PROMPT, negative_prompt=NEGATIVE, device="cpu",
                                                          num_images_per_prompt=1, do_classifier_free_guidance=True)
            ctx = torch.cat([npe, pe])
            ids = torch.tensor([[side, side, 0, 0, side, side]] * 2, dtype=torch.float32)
            return ctx, {"text_embeds": torch.cat([npooled, pooled]), "time_ids": ids}
        pe, npe = pipe.encode_prompt(PROMPT, "cpu", 1, True, negative_prompt=NEGATIVE)
        return torch.cat([npe, pe]), None

    medians, bests, peaks = {}, {}, {}
    with torch.inference_mode():
        for item in items:
            if item == "text":
                fn = lambda: encode(512)
            elif item in ("unet256", "unet512"):
                side = 32 if item == "unet256" else 64
                latents = torch.randn((2, 4, side, side), generator=gen)
                ctx, added = encode(side * 8)
                t = torch.tensor(999.0)
                fn = lambda latents=latents, ctx=ctx, added=added, t=t: pipe.unet(
                    latents, t, encoder_hidden_states=ctx, added_cond_kwargs=added).sample
            elif item == "vae_decode":
                z = torch.randn((1, 4, 64, 64), generator=gen)
                fn = lambda z=z: pipe.vae.decode(z).sample
            elif item == "vae_encode":
                img = (torch.randn((1, 3, 512, 512), generator=gen) * 0.5).clamp(-1, 1)
                fn = lambda img=img: pipe.vae.encode(img).latent_dist.sample(generator=gen)
            elif item == "job":
                def fn():
                    image = pipe(PROMPT, negative_prompt=NEGATIVE, num_inference_steps=JOB_STEPS,
                                 guidance_scale=GUIDANCE, height=512, width=512,
                                 generator=torch.Generator().manual_seed(42)).images[0]
                    image.save(io.BytesIO(), format="PNG")
            else:
                raise SystemExit(f"unknown item {item}")
            log(f"diffusers: timing {item} ...")
            reset_peak_rss()
            if item == "job":
                runs = time_runs(fn, 0, args.job_runs)
            else:
                runs = time_runs(fn, args.warmup, args.runs)
            peaks[item] = peak_rss()
            medians[item] = statistics.median(runs)
            bests[item] = min(runs)
            log(f"diffusers: {item} runs {' '.join(f'{r:.2f}' for r in runs)}")

    print(json.dumps({"torch": torch.__version__, "diffusers": diffusers.__version__, "median_s": medians,
                      "best_s": bests, "peak_rss": peaks, "load_peak_rss": load_peak}))


if __name__ == "__main__":
    main()
