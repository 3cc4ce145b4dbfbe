"""The unmodified `openai` Python SDK (pinned in requirements.txt) against the worker's OpenAI face:
only `base_url` and a dummy key change. Every returned image is decoded and its size checked."""

import base64
import io
import urllib.request

import openai
import pytest
from PIL import Image

# Steps are kept small: the tiny fixture model is random-weighted and the point is the wire format.
FAST = {"steps": 4}


@pytest.fixture(scope="module")
def client(worker):
    return openai.OpenAI(base_url=worker.base_url, api_key="sk-dummy", max_retries=0, timeout=120)


def decode(b64: str) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(b64)))
    image.load()
    return image


def png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def named(data: bytes, name: str) -> tuple:
    """A file tuple as the SDK accepts it: (filename, bytes, content type)."""
    return (name, data, "image/png")


def test_generate_b64_json_returns_decodable_images_of_the_requested_size(client):
    result = client.images.generate(
        model="gpt-image-1", prompt="a lighthouse at dusk", size="96x64", output_format="png", extra_body=FAST
    )
    assert len(result.data) == 1
    assert decode(result.data[0].b64_json).size == (96, 64)
    assert result.size == "96x64"
    assert result.output_format == "png"
    assert result.background == "opaque"
    assert result.quality == "medium"
    assert result.usage is not None and result.usage.input_tokens_details.text_tokens > 0


def test_generate_url_is_fetchable(client):
    result = client.images.generate(model="dall-e-2", prompt="a red bicycle", size="256x256", extra_body=FAST)
    url = result.data[0].url
    assert url and url.startswith("http")
    assert result.data[0].b64_json is None
    with urllib.request.urlopen(url, timeout=30) as response:
        assert response.headers["Content-Type"] == "image/png"
        image = Image.open(io.BytesIO(response.read()))
    assert image.size == (256, 256)


def test_dall_e_3_revises_the_prompt(client):
    result = client.images.generate(
        model="dall-e-3", prompt="a paper boat", response_format="b64_json", size="1024x1024", quality="standard", style="vivid", extra_body=FAST
    )
    assert result.data[0].revised_prompt == "a paper boat"
    assert decode(result.data[0].b64_json).size == (1024, 1024)


def test_n_images_with_a_fixed_seed_are_distinct(client):
    result = client.images.generate(model="gpt-image-1", prompt="a forest", n=2, extra_body={"seed": 1234, **FAST})
    images = [base64.b64decode(item.b64_json) for item in result.data]
    assert len(images) == 2
    assert images[0] != images[1]
    assert all(decode(item.b64_json).size == (64, 64) for item in result.data)


def test_extra_body_seed_reproduces_the_image(client):
    kwargs = dict(model="gpt-image-1", prompt="a mountain lake", extra_body={"seed": 42, "negative_prompt": "blurry", **FAST})
    first = client.images.generate(**kwargs).data[0].b64_json
    second = client.images.generate(**kwargs).data[0].b64_json
    assert first == second
    other = client.images.generate(model="gpt-image-1", prompt="a mountain lake", extra_body={"seed": 43, **FAST})
    assert other.data[0].b64_json != first


def test_sdk_none_values_are_accepted(client):
    result = client.images.generate(
        prompt="a teapot", model=None, n=None, size=None, quality=None, response_format="b64_json", user=None, extra_body=FAST
    )
    assert decode(result.data[0].b64_json).size == (64, 64)


def mean_abs_diff(a: Image.Image, b: Image.Image, box: tuple) -> float:
    pa, pb = a.crop(box).tobytes(), b.crop(box).tobytes()
    return sum(abs(x - y) for x, y in zip(pa, pb)) / len(pa)


def test_edit_repaints_only_the_transparent_area_of_the_mask(client):
    image = Image.new("RGB", (64, 64), (20, 40, 200))
    mask = Image.new("RGBA", (64, 64), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (0, 0, 32, 64))  # left half transparent = edit here
    edits = [
        client.images.edit(
            image=named(png(image), "photo.png"), mask=named(png(mask), "mask.png"), prompt="a yellow sun", extra_body={"seed": seed, **FAST}
        )
        for seed in (7, 8)
    ]
    first, second = (decode(result.data[0].b64_json).convert("RGB") for result in edits)
    assert first.size == second.size == (64, 64)
    # Different seeds repaint the transparent (left) half differently and keep the opaque right half.
    repainted = mean_abs_diff(first, second, (0, 0, 16, 64))
    kept = mean_abs_diff(first, second, (48, 0, 64, 64))
    assert repainted > 4 * kept, (repainted, kept)


def test_edit_accepts_an_image_list_sent_as_image_array(client):
    first = png(Image.new("RGB", (80, 48), (200, 10, 10)))
    second = png(Image.new("RGB", (80, 48), (10, 200, 10)))
    # In-memory bytes without a name are sent as application/octet-stream: sniffed, not trusted.
    result = client.images.edit(image=[first, second], prompt="make it autumn", input_fidelity="high", extra_body=FAST)
    assert decode(result.data[0].b64_json).size == (80, 48)
    assert result.size == "80x48"


def test_create_variation_returns_urls_to_variations(client):
    source = png(Image.new("RGB", (64, 64), (120, 120, 120)))
    result = client.images.create_variation(image=named(source, "in.png"), n=2, size="256x256", extra_body=FAST)
    assert len(result.data) == 2
    for item in result.data:
        with urllib.request.urlopen(item.url, timeout=30) as response:
            assert Image.open(io.BytesIO(response.read())).size == (256, 256)


def test_streaming_yields_partial_images_then_completed(client):
    stream = client.images.generate(
        model="gpt-image-1", prompt="a city skyline", stream=True, partial_images=2, size="64x64", extra_body={"steps": 6}
    )
    events = list(stream)
    assert [event.type for event in events] == [
        "image_generation.partial_image",
        "image_generation.partial_image",
        "image_generation.completed",
    ]
    assert [event.partial_image_index for event in events[:2]] == [0, 1]
    for event in events:
        assert decode(event.b64_json).size == (64, 64)
        assert event.size == "64x64" and event.output_format == "png" and event.background == "opaque"
    assert events[-1].usage.total_tokens >= 0


def test_streamed_edit_uses_image_edit_events(client):
    source = png(Image.new("RGB", (64, 64), (5, 5, 5)))
    stream = client.images.edit(image=named(source, "a.png"), prompt="x", stream=True, partial_images=1, extra_body={"steps": 4})
    assert [event.type for event in stream] == ["image_edit.partial_image", "image_edit.completed"]


def test_models_list_contains_the_local_model_and_openai_names(client, worker):
    ids = {model.id for model in client.models.list()}
    assert {"dall-e-2", "dall-e-3", "gpt-image-1", "gpt-image-1.5"} <= ids
    assert any("tiny-sd15" in model_id for model_id in ids)
    assert client.models.retrieve("dall-e-3").owned_by == "system"


def test_bad_size_raises_bad_request_with_the_param(client):
    with pytest.raises(openai.BadRequestError) as raised:
        client.images.generate(prompt="x", size="huge")
    assert raised.value.status_code == 400
    assert raised.value.param == "size"
    assert raised.value.code == "invalid_size"
    assert raised.value.request_id


def test_unknown_model_raises_not_found(client):
    with pytest.raises(openai.NotFoundError) as raised:
        client.images.generate(prompt="x", model="sdxl-unknown")
    assert raised.value.code == "model_not_found"


def test_bad_key_raises_authentication_error(keyed_worker):
    wrong = openai.OpenAI(base_url=keyed_worker.base_url, api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as raised:
        wrong.images.generate(prompt="x", extra_body=FAST)
    assert raised.value.status_code == 401
    right = openai.OpenAI(base_url=keyed_worker.base_url, api_key="sk-right", max_retries=0, timeout=120)
    result = right.images.generate(prompt="x", response_format="b64_json", extra_body=FAST)
    assert decode(result.data[0].b64_json).size == (64, 64)
