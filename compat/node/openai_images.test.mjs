// The unmodified openai npm SDK (pinned in package.json / package-lock.json) against the worker's
// OpenAI face. compat/test_openai_node.py starts the worker and runs this file with `node --test`,
// passing the worker's base URLs in OPENAI_BASE_URL and KEYED_BASE_URL (a worker with --api-key sk-right).
import assert from "node:assert/strict";
import { test } from "node:test";
import OpenAI, { toFile } from "openai";

const FAST = { steps: 4 };
const client = new OpenAI({ baseURL: process.env.OPENAI_BASE_URL, apiKey: "sk-dummy", maxRetries: 0, timeout: 120_000 });

// Width and height from a PNG's IHDR chunk: enough to check sizes without an image library.
function pngSize(bytes) {
  assert.deepEqual([...bytes.subarray(1, 4)], [0x50, 0x4e, 0x47], "not a PNG");
  return [bytes.readUInt32BE(16), bytes.readUInt32BE(20)];
}
const decoded = (b64) => pngSize(Buffer.from(b64, "base64"));

// A solid-colour RGBA PNG made by hand (zlib store blocks via node:zlib), so the test needs no image package.
import { deflateSync } from "node:zlib";
function solidPng(width, height, rgba) {
  const row = Buffer.concat([Buffer.from([0]), Buffer.concat(Array(width).fill(Buffer.from(rgba)))]);
  const raw = Buffer.concat(Array(height).fill(row));
  const chunk = (type, data) => {
    const head = Buffer.alloc(8);
    head.writeUInt32BE(data.length, 0);
    head.write(type, 4, "ascii");
    const crcInput = Buffer.concat([Buffer.from(type, "ascii"), data]);
    const crc = Buffer.alloc(4);
    crc.writeUInt32BE(crc32(crcInput) >>> 0, 0);
    return Buffer.concat([head, data, crc]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr.set([8, 6, 0, 0, 0], 8); // 8-bit RGBA
  const signature = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  return Buffer.concat([signature, chunk("IHDR", ihdr), chunk("IDAT", deflateSync(raw)), chunk("IEND", Buffer.alloc(0))]);
}
function crc32(bytes) {
  let crc = 0xffffffff;
  for (const byte of bytes) {
    crc ^= byte;
    for (let k = 0; k < 8; k++) crc = crc & 1 ? (crc >>> 1) ^ 0xedb88320 : crc >>> 1;
  }
  return crc ^ 0xffffffff;
}

test("generate with b64_json returns a PNG of the requested size and the GPT-image fields", async () => {
  const result = await client.images.generate({ model: "gpt-image-1", prompt: "a lighthouse", size: "96x64", ...FAST });
  assert.equal(result.data.length, 1);
  assert.deepEqual(decoded(result.data[0].b64_json), [96, 64]);
  assert.equal(result.size, "96x64");
  assert.equal(result.output_format, "png");
  assert.ok(result.usage.input_tokens > 0);
});

test("generate with url returns a fetchable image", async () => {
  const result = await client.images.generate({ model: "dall-e-2", prompt: "a red bicycle", size: "256x256", ...FAST });
  const response = await fetch(result.data[0].url);
  assert.equal(response.headers.get("content-type"), "image/png");
  assert.deepEqual(pngSize(Buffer.from(await response.arrayBuffer())), [256, 256]);
});

test("n=2 with a fixed seed gives two different images; the same seed reproduces them", async () => {
  const ask = () => client.images.generate({ model: "gpt-image-1", prompt: "a forest", n: 2, seed: 99, ...FAST });
  const first = await ask();
  assert.equal(first.data.length, 2);
  assert.notEqual(first.data[0].b64_json, first.data[1].b64_json);
  const again = await ask();
  assert.deepEqual(again.data.map((d) => d.b64_json), first.data.map((d) => d.b64_json));
});

test("edit with a transparent-area mask and an uploaded file", async () => {
  const image = await toFile(solidPng(64, 64, [20, 40, 200, 255]), "photo.png", { type: "image/png" });
  const mask = await toFile(solidPng(64, 64, [0, 0, 0, 0]), "mask.png", { type: "image/png" });
  const result = await client.images.edit({ image, mask, prompt: "a yellow sun", ...FAST });
  assert.deepEqual(decoded(result.data[0].b64_json), [64, 64]);
});

test("edit with an image array (image[])", async () => {
  const images = [
    await toFile(solidPng(80, 48, [200, 10, 10, 255]), "a.png", { type: "image/png" }),
    await toFile(solidPng(80, 48, [10, 200, 10, 255]), "b.png", { type: "image/png" }),
  ];
  const result = await client.images.edit({ image: images, prompt: "autumn", ...FAST });
  assert.deepEqual(decoded(result.data[0].b64_json), [80, 48]);
});

test("createVariation returns n urls", async () => {
  const image = await toFile(solidPng(64, 64, [120, 120, 120, 255]), "in.png", { type: "image/png" });
  const result = await client.images.createVariation({ image, n: 2, size: "256x256", ...FAST });
  assert.equal(result.data.length, 2);
  for (const item of result.data) {
    const response = await fetch(item.url);
    assert.deepEqual(pngSize(Buffer.from(await response.arrayBuffer())), [256, 256]);
  }
});

test("stream with partial_images=2 yields two partial events then completed", async () => {
  const stream = await client.images.generate({ model: "gpt-image-1", prompt: "a skyline", stream: true, partial_images: 2, size: "64x64", steps: 6 });
  const events = [];
  for await (const event of stream) events.push(event);
  assert.deepEqual(events.map((e) => e.type), ["image_generation.partial_image", "image_generation.partial_image", "image_generation.completed"]);
  assert.deepEqual(events.slice(0, 2).map((e) => e.partial_image_index), [0, 1]);
  for (const event of events) assert.deepEqual(decoded(event.b64_json), [64, 64]);
});

test("models.list has the local model and the OpenAI names", async () => {
  const ids = [];
  for await (const model of client.models.list()) ids.push(model.id);
  for (const name of ["dall-e-2", "dall-e-3", "gpt-image-1"]) assert.ok(ids.includes(name), name);
  assert.ok(ids.some((id) => id.includes("tiny-sd15")));
});

test("a bad size is a BadRequestError naming the param", async () => {
  await assert.rejects(client.images.generate({ prompt: "x", size: "huge" }), (error) => {
    assert.ok(error instanceof OpenAI.BadRequestError);
    assert.equal(error.status, 400);
    assert.equal(error.param, "size");
    return true;
  });
});

test("a wrong key is an AuthenticationError; the right key works", async () => {
  const wrong = new OpenAI({ baseURL: process.env.KEYED_BASE_URL, apiKey: "sk-wrong", maxRetries: 0 });
  await assert.rejects(wrong.images.generate({ prompt: "x", ...FAST }), (error) => error instanceof OpenAI.AuthenticationError);
  const right = new OpenAI({ baseURL: process.env.KEYED_BASE_URL, apiKey: "sk-right", maxRetries: 0, timeout: 120_000 });
  const result = await right.images.generate({ prompt: "x", response_format: "b64_json", ...FAST });
  assert.deepEqual(decoded(result.data[0].b64_json), [64, 64]);
});
