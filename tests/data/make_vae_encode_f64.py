"""Regenerates vae-encode-f64.safetensors: diffusers' AutoencoderKL posterior of the img2img init
image, computed in float64 (the float32 golden of that stage carries ~1.1e-5 relative rounding
noise, more than the 1e-5 single-stage bound). Run from the repository root with torch and
diffusers installed (generated with torch 2.15.0, diffusers 0.42.1)."""
import json

import torch
from diffusers import AutoencoderKL
from safetensors.torch import load_file, save_file

FIXTURES = "tests/fixtures/"
golden = load_file(FIXTURES + "golden/tiny-sd15-img2img-euler.safetensors")
vae = AutoencoderKL.from_pretrained(FIXTURES + "tiny-sd15/vae", torch_dtype=torch.float64)
with torch.no_grad():
    posterior = vae.encode(golden["init_image"].to(torch.float64)).latent_dist
meta = {"input": "golden/tiny-sd15-img2img-euler.safetensors init_image", "model": "tiny-sd15/vae",
        "dtype": "float64", "torch": torch.__version__}
save_file({"vae.encode.mean": posterior.mean.contiguous(), "vae.encode.std": posterior.std.contiguous()},
          "tests/data/vae-encode-f64.safetensors", metadata={"fixture": json.dumps(meta)})
