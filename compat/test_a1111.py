"""The A1111 face against real clients: the unmodified `webuiapi` package (pinned in
requirements-a1111.txt), and replays of the calls Open WebUI and SillyTavern make, all against a
real worker process serving the tiny SD 1.5 fixture model (64x64)."""

import base64
import io
import json
import threading
import time

import pytest
import requests
import webuiapi
from PIL import Image, ImageDraw

from worker import Worker

SIZE = 64  # the tiny model's native size


@pytest.fixture(scope="module")
def worker():
    w = Worker()
    try:
        w.wait_listening()
        yield w
    finally:
        w.stop()


@pytest.fixture(scope="module")
def api(worker):
    client = webuiapi.WebUIApi(host="127.0.0.1", port=worker.port, sampler="Euler a", steps=3)
    # Waits until the model is loaded: progress 0 and job_count 0.
    client.util_wait_for_ready(check_interval=0.1)
    return client


def decode_png(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64)))


def test_txt2img(api):
    result = api.txt2img(prompt="a red fox in the snow", negative_prompt="blurry", width=SIZE, height=SIZE, seed=42, cfg_scale=7)
    assert result.image.size == (SIZE, SIZE)
    assert isinstance(result.info, dict), "info parsed with json.loads"
    assert result.info["all_seeds"] == [42]
    assert result.info["seed"] == 42
    assert result.info["sampler_name"] == "Euler a"
    assert result.info["steps"] == 3
    assert result.info["infotexts"][0].startswith("a red fox in the snow\nNegative prompt: blurry\nSteps: 3, Sampler: Euler a, Schedule type: Automatic, CFG scale: 7.0, Seed: 42, Size: 64x64")
    assert result.parameters["prompt"] == "a red fox in the snow"
    assert result.image.info["parameters"] == result.info["infotexts"][0], "the PNG carries the infotext"


def test_img2img(api):
    init = Image.new("RGB", (SIZE, SIZE), (200, 120, 40))
    result = api.img2img(images=[init], prompt="an orange square", width=SIZE, height=SIZE, denoising_strength=0.5, seed=7)
    assert result.image.size == (SIZE, SIZE)
    assert result.info["all_seeds"] == [7]
    assert "Denoising strength: 0.5" in result.info["infotexts"][0]
    assert result.parameters["init_images"] is None, "include_init_images defaults to false"


def test_inpainting_with_a_mask(api):
    init = Image.new("RGB", (SIZE, SIZE), (30, 60, 220))
    mask = Image.new("L", (SIZE, SIZE), 0)
    ImageDraw.Draw(mask).rectangle((16, 16, 47, 47), fill=255)
    result = api.img2img(images=[init], mask_image=mask, mask_blur=2, inpainting_fill=1, prompt="a yellow star", width=SIZE, height=SIZE,
                         denoising_strength=1.0, seed=3)
    assert result.image.size == (SIZE, SIZE)
    assert result.info["extra_generation_params"]["Mask blur"] == 2


def test_batch_size_2_times_n_iter_2_gives_distinct_seeds_and_images(api):
    result = api.txt2img(prompt="a lighthouse", width=SIZE, height=SIZE, seed=100, batch_size=2, n_iter=2)
    assert len(result.images) == 4
    assert result.info["all_seeds"] == [100, 101, 102, 103]
    assert [t.split("Seed: ")[1].split(",")[0] for t in result.info["infotexts"]] == ["100", "101", "102", "103"]
    pixels = [img.tobytes() for img in result.images]
    assert len(set(pixels)) == 4, "every seed gives its own image"


def test_models_and_model_switching(api):
    models = api.get_sd_models()
    assert len(models) == 1
    title = models[0]["title"]
    assert title == f"tiny-sd15 [{models[0]['hash']}]"
    assert api.util_get_model_names() == [title]
    api.util_set_model(title)
    api.util_wait_for_ready(check_interval=0.1)
    assert api.util_get_current_model() == title
    # A checkpoint this worker does not serve: A1111's RuntimeError, nothing changes.
    answer = api.set_options({"sd_model_checkpoint": "sd_xl_base_1.0.safetensors [31e35c80fc]"})
    assert answer["error"] == "RuntimeError"
    assert answer["errors"] == "model 'sd_xl_base_1.0.safetensors [31e35c80fc]' not found"
    assert api.util_get_current_model() == title


def test_samplers_and_schedulers(api):
    samplers = api.get_samplers()
    names = [s["name"] for s in samplers]
    assert samplers[0]["name"] == "DPM++ 2M"
    assert {"Euler a", "Euler", "DPM++ 2M", "DDIM", "UniPC"} <= set(names)
    assert "k_euler_a" in next(s for s in samplers if s["name"] == "Euler a")["aliases"]
    schedulers = api.get_schedulers()
    assert {"automatic", "karras", "exponential", "sgm_uniform"} <= {s["name"] for s in schedulers}
    assert next(s for s in schedulers if s["name"] == "karras")["label"] == "Karras"


def test_options_round_trip(api):
    options = api.get_options()
    assert options["CLIP_stop_at_last_layers"] == 1
    assert options["samples_format"] == "png"
    api.set_options({"CLIP_stop_at_last_layers": 2})
    assert api.get_options()["CLIP_stop_at_last_layers"] == 2
    result = api.txt2img(prompt="clip skip", width=SIZE, height=SIZE, seed=5)
    assert result.info["clip_skip"] == 2
    assert "Clip skip: 2" in result.info["infotexts"][0]
    api.set_options({"CLIP_stop_at_last_layers": 1})
    assert api.get_options()["CLIP_stop_at_last_layers"] == 1


def test_progress_during_a_run_and_interrupt(api):
    outcome = {}

    def run():
        # 8 batches of 150 steps: long enough to watch, and interrupted long before the end.
        outcome["result"] = api.txt2img(prompt="a slow one", width=SIZE, height=SIZE, seed=9, n_iter=8, steps=150)

    thread = threading.Thread(target=run)
    thread.start()
    busy = None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        progress = api.get_progress()
        if progress["state"]["sampling_step"] > 0:
            busy = progress
            break
        time.sleep(0.02)
    assert busy is not None, "never saw the run in progress"
    assert 0 < busy["progress"] < 1
    assert busy["state"]["job_count"] == 8
    assert busy["state"]["job"].startswith("Batch ")
    assert api.interrupt() == {}
    thread.join(timeout=120)
    assert not thread.is_alive()
    result = outcome["result"]  # HTTP 200: webuiapi raises otherwise
    assert len(result.images) < 8
    assert result.info["all_seeds"] == list(range(9, 17))
    api.util_wait_for_ready(check_interval=0.1)
    idle = api.get_progress()
    assert idle["progress"] == 0 and idle["state"]["job_count"] == 0


def test_png_info_on_our_output(api):
    image = api.txt2img(prompt="a blue vase, (ceramic:1.2)", negative_prompt="lowres", width=SIZE, height=SIZE, seed=77).image
    parsed = api.png_info(image)
    assert parsed.info.startswith("a blue vase, (ceramic:1.2)\nNegative prompt: lowres\nSteps: 3")
    assert parsed.parameters["Prompt"] == "a blue vase, (ceramic:1.2)"
    assert parsed.parameters["Seed"] == "77"
    assert parsed.parameters["Size-1"] == "64"


def test_open_webui_model_switch_and_generation(worker, api):
    base = worker.base_url
    headers = {"authorization": ""}  # Open WebUI sends an empty one when no auth is configured
    model = requests.get(f"{base}/sdapi/v1/sd-models", headers=headers).json()[0]["title"]
    options = requests.get(f"{base}/sdapi/v1/options", headers=headers).json()
    options["sd_model_checkpoint"] = model
    answer = requests.post(f"{base}/sdapi/v1/options", json=options, headers=headers)
    assert answer.status_code == 200 and answer.json() is None
    assert requests.get(f"{base}/sdapi/v1/options", headers=headers).json()["sd_model_checkpoint"] == model

    data = {"prompt": "a cozy cabin", "batch_size": 2, "width": SIZE, "height": SIZE, "negative_prompt": "dark", "steps": 2, "cfg_scale": 6.0,
            "sampler_name": "Euler", "scheduler": "Automatic"}
    r = requests.post(f"{base}/sdapi/v1/txt2img", json=data, headers=headers)
    assert r.status_code == 200, r.text
    res = r.json()
    assert len(res["images"]) == 2
    for b64 in res["images"]:
        assert decode_png(b64).size == (SIZE, SIZE)
    info = json.loads(res["info"])
    assert info["prompt"] == "a cozy cabin" and len(info["all_seeds"]) == 2


def test_sillytavern_calls(worker, api):
    base = worker.base_url
    options = requests.get(f"{base}/sdapi/v1/options").json()
    assert "forge_preset" not in options, "SillyTavern must not take this worker for Forge"
    model = options["sd_model_checkpoint"]
    upscalers = [u["name"] for u in requests.get(f"{base}/sdapi/v1/upscalers").json()]
    latent = [m["name"] for m in requests.get(f"{base}/sdapi/v1/latent-upscale-modes").json()]
    assert upscalers[0] == "None" and "Latent" in latent
    assert requests.get(f"{base}/sdapi/v1/sd-vae").status_code == 200
    assert requests.get(f"{base}/sdapi/v1/sd-modules").status_code == 200

    # Set model, then poll progress (up to 10 x 2 s) until idle.
    assert requests.post(f"{base}/sdapi/v1/options", json={"sd_model_checkpoint": model}).status_code == 200
    for _ in range(10):
        progress = requests.get(f"{base}/sdapi/v1/progress").json()
        if progress["progress"] == 0 and progress["state"]["job_count"] == 0:
            break
        time.sleep(2)
    else:
        pytest.fail("never idle after setting the model")

    body = {"prompt": "a knight, <lora:armor:0.7>", "negative_prompt": "lowres", "sampler_name": "DPM++ 2M", "scheduler": "Karras", "steps": 3,
            "cfg_scale": 7, "width": SIZE, "height": SIZE, "restore_faces": False, "enable_hr": False, "hr_upscaler": "Latent", "hr_scale": 2,
            "hr_additional_modules": [], "denoising_strength": 0.7, "hr_second_pass_steps": 0, "seed": 2024,
            "override_settings": {"CLIP_stop_at_last_layers": 1, "sd_vae": "Automatic"}, "override_settings_restore_afterwards": True,
            "clip_skip": 1, "save_images": True, "send_images": True, "do_not_save_grid": False, "do_not_save_samples": False,
            "url": base, "auth": ""}
    r = requests.post(f"{base}/sdapi/v1/txt2img", json=body)
    assert r.status_code == 200, r.text
    res = r.json()
    assert decode_png(res["images"][0]).format == "PNG"
    info = json.loads(res["info"])
    assert info["sampler_name"] == "DPM++ 2M" and info["extra_generation_params"]["Schedule type"] == "Karras"
    assert info["seed"] == 2024
    # A browser disconnect makes SillyTavern interrupt; idle, that is a harmless 200.
    assert requests.post(f"{base}/sdapi/v1/interrupt").status_code == 200


def test_same_image_through_txt2img_and_the_native_job_api(worker, api):
    base = worker.base_url
    for randn_source, rng in (("GPU", "philox"), ("CPU", "cpu")):
        a1111 = requests.post(f"{base}/sdapi/v1/txt2img", json={
            "prompt": "a paper crane", "steps": 4, "cfg_scale": 7.0, "width": SIZE, "height": SIZE, "seed": 31337, "sampler_name": "Euler",
            "override_settings": {"randn_source": randn_source}}).json()
        job = requests.post(f"{base}/v1/jobs", json={
            "operation": "image_generation", "prompt": "a paper crane", "steps": 4, "guidance_scale": 7.0, "width": SIZE, "height": SIZE,
            "seed": 31337, "sampler": "Euler", "rng": rng, "preview_every": 0}).json()
        deadline = time.monotonic() + 120
        while True:
            status = requests.get(f"{base}/v1/jobs/{job['job_id']}").json()
            if status["status"] == "completed":
                break
            assert status["status"] in ("queued", "running"), status
            assert time.monotonic() < deadline
            time.sleep(0.05)
        native = decode_png(status["images"][0]["image"])
        assert decode_png(a1111["images"][0]).tobytes() == native.tobytes(), randn_source
