"""Drives a running plantain server with the real `google-genai` and `openai` SDKs.

Run: tests/python/run.sh (builds the server binary, starts it on a loopback port with the
tiny random-weight model, runs these checks, stops it). Plain asserts, no pytest needed.
"""

import base64
import os
import struct
import sys
import traceback

from google import genai
from google.genai import errors as genai_errors
from google.genai import types
import openai

BASE = os.environ["PLANTAIN_URL"]
GEMINI = "gemini-3.1-flash-image-preview"


def png_size(data: bytes):
    assert data[:8] == b"\x89PNG\r\n\x1a\n", data[:8]
    return struct.unpack(">II", data[16:24])


def small_png(w=64, h=48, rgb=(200, 20, 20), alpha=None, box=None):
    """A tiny PNG written by hand (zlib only), so no imaging library is needed. `box`:
    ((x0, x1), (y0, y1), rgb) paints a rectangle."""
    import zlib

    channels = 4 if alpha is not None else 3
    rows = b""
    for y in range(h):
        rows += b"\x00"
        for x in range(w):
            inside = box is not None and box[0][0] <= x < box[0][1] and box[1][0] <= y < box[1][1]
            px = bytes(box[2] if inside else rgb)
            if alpha is not None:
                px += bytes([alpha(x, y)])
            rows += px

    def chunk(tag, body):
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 6 if channels == 4 else 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


_CLIENT = None


def gclient():
    # One client for the run: a Client that is garbage-collected closes its HTTP session.
    global _CLIENT
    if _CLIENT is None:
        _CLIENT = genai.Client(api_key="local", http_options=types.HttpOptions(base_url=BASE))
    return _CLIENT


def oclient():
    return openai.OpenAI(api_key="local", base_url=BASE + "/v1", max_retries=0)


def image_parts(resp):
    return [p for c in resp.candidates for p in c.content.parts if p.inline_data is not None]


def test_generate_with_image_config():
    r = gclient().models.generate_content(
        model=GEMINI,
        contents="a red lighthouse",
        config=types.GenerateContentConfig(
            response_modalities=["IMAGE"],
            image_config=types.ImageConfig(aspect_ratio="16:9", image_size="512"),
            seed=5,
        ),
    )
    parts = image_parts(r)
    assert len(parts) == 1
    assert parts[0].inline_data.mime_type == "image/png"
    assert png_size(parts[0].inline_data.data) == (688, 384)
    assert parts[0].thought_signature, "image parts carry a thoughtSignature"
    assert all(p.text is None for p in r.candidates[0].content.parts), "IMAGE only: no text"
    assert r.usage_metadata.candidates_token_count == 747


def test_system_instruction_is_part_of_the_prompt():
    def gen(system):
        return gclient().models.generate_content(
            model=GEMINI,
            contents="a red lighthouse",
            config=types.GenerateContentConfig(
                system_instruction=system,
                response_modalities=["IMAGE"],
                image_config=types.ImageConfig(image_size="512"),
                seed=3,
            ),
        )

    plain, styled = gen(None), gen("drawn as a watercolour on rough paper")
    # The system text is part of the prompt (and its tokens); the Rust test checks the prompt itself.
    assert styled.usage_metadata.prompt_token_count > plain.usage_metadata.prompt_token_count
    assert png_size(image_parts(styled)[0].inline_data.data) == (512, 512)


def test_candidate_count_and_text():
    r = gclient().models.generate_content(
        model=GEMINI,
        contents="two cats",
        config=types.GenerateContentConfig(candidate_count=2, image_config=types.ImageConfig(aspect_ratio="1:1", image_size="512")),
    )
    assert len(r.candidates) == 2
    assert "seed" in r.text
    assert all(png_size(p.inline_data.data) == (512, 512) for p in image_parts(r))


def test_chat_multi_turn_edit_with_signatures():
    chat = gclient().chats.create(
        model=GEMINI, config=types.GenerateContentConfig(image_config=types.ImageConfig(aspect_ratio="3:2", image_size="512"))
    )
    r1 = chat.send_message("a lighthouse at dusk")
    assert png_size(image_parts(r1)[0].inline_data.data) == (632, 424)
    r2 = chat.send_message("make it night")
    assert png_size(image_parts(r2)[0].inline_data.data) == (632, 424)
    assert image_parts(r2)[0].inline_data.data != image_parts(r1)[0].inline_data.data
    assert len(chat.get_history()) == 4


def history_without_signature(first):
    model = first.candidates[0].content
    stripped = types.Content(
        role="model",
        parts=[types.Part(inline_data=p.inline_data) if p.inline_data else types.Part(text=p.text) for p in model.parts],
    )
    return [
        types.Content(role="user", parts=[types.Part(text="a boat")]),
        stripped,
        types.Content(role="user", parts=[types.Part(text="make it red")]),
    ]


def test_dropped_signature_is_accepted_leniently():
    c = gclient()
    cfg = types.GenerateContentConfig(image_config=types.ImageConfig(image_size="512"))
    first = c.models.generate_content(model=GEMINI, contents="a boat", config=cfg)
    r = c.models.generate_content(model=GEMINI, contents=history_without_signature(first), config=cfg)
    assert len(image_parts(r)) == 1


def test_tampered_signature_is_a_client_error():
    c = gclient()
    cfg = types.GenerateContentConfig(image_config=types.ImageConfig(image_size="512"))
    first = c.models.generate_content(model=GEMINI, contents="a boat", config=cfg)
    contents = history_without_signature(first)
    contents[1].parts[-1].thought_signature = b"pls1" + b"x" * 33
    try:
        c.models.generate_content(model=GEMINI, contents=contents, config=cfg)
        raise AssertionError("expected ClientError")
    except genai_errors.ClientError as e:
        assert e.code == 400 and "thought_signature" in str(e), e


def test_inline_image_edit():
    img = small_png()
    r = gclient().models.generate_content(
        model=GEMINI,
        contents=[types.Part.from_bytes(data=img, mime_type="image/png"), "make it blue"],
        config=types.GenerateContentConfig(image_config=types.ImageConfig(image_size="512")),
    )
    # An edit keeps the input's own pixels: 64x48 in, 64x48 out (a blue tint, exact maths), and
    # the text part is the plan.
    assert png_size(image_parts(r)[0].inline_data.data) == (64, 48)
    assert "operation: adjust" in r.text and "outside the region: 0" in r.text, r.text


def test_edit_of_a_missing_target_answers_without_an_image():
    r = gclient().models.generate_content(
        model=GEMINI,
        contents=[types.Part.from_bytes(data=small_png(), mime_type="image/png"), "remove the purple star"],
    )
    assert image_parts(r) == []
    assert str(r.candidates[0].finish_reason).endswith("NO_IMAGE"), r.candidates[0].finish_reason
    assert "purple star" in r.text, r.text


def test_fusion_of_two_images():
    # Image 1: a blue square on white; image 2: plain red. The square lands in image 2.
    square = small_png(64, 64, (255, 255, 255), box=((20, 44), (20, 44), (35, 85, 215)))
    r = gclient().models.generate_content(
        model=GEMINI,
        contents=[
            types.Part.from_bytes(data=square, mime_type="image/png"),
            types.Part.from_bytes(data=small_png(96, 64, (200, 20, 20)), mime_type="image/png"),
            "put the subject of image 1 into image 2 on the left",
        ],
    )
    assert png_size(image_parts(r)[0].inline_data.data) == (96, 64)
    assert "operation: fuse" in r.text, r.text


def test_streaming():
    chunks = list(
        gclient().models.generate_content_stream(
            model=GEMINI, contents="a tree", config=types.GenerateContentConfig(image_config=types.ImageConfig(image_size="512"))
        )
    )
    assert len(chunks) >= 2
    thoughts = [p for ch in chunks for p in ch.candidates[0].content.parts if p.thought]
    assert thoughts and thoughts[0].text.startswith("step 1 of"), thoughts
    assert png_size(image_parts(chunks[-1])[0].inline_data.data) == (512, 512)


def test_count_tokens_and_models():
    c = gclient()
    assert c.models.count_tokens(model=GEMINI, contents="a photo of a cat").total_tokens == 7  # 5 CLIP tokens + start/end
    m = c.models.get(model=GEMINI)
    assert m.name == "models/" + GEMINI
    names = [m.name for m in c.models.list()]
    assert "models/" + GEMINI in names, names


def expect_client_error(code, fn, needle):
    try:
        fn()
    except genai_errors.ClientError as e:
        assert e.code == code, (e.code, e)
        assert needle in str(e), e
        return
    raise AssertionError("expected ClientError %d" % code)


def test_errors_surface_as_client_error():
    c = gclient()
    expect_client_error(
        400,
        lambda: c.models.generate_content(
            model=GEMINI, contents="x", config=types.GenerateContentConfig(image_config=types.ImageConfig(aspect_ratio="7:3"))
        ),
        "aspect ratio",
    )
    expect_client_error(404, lambda: c.models.generate_content(model="no-such-model", contents="x"), "no-such-model")
    expect_client_error(
        400,
        lambda: c.models.generate_content(
            model=GEMINI, contents="x", config=types.GenerateContentConfig(image_config=types.ImageConfig(image_size="3K"))
        ),
        "image size",
    )
    expect_client_error(
        400,
        lambda: c.models.generate_content(
            model=GEMINI, contents=[types.Part.from_bytes(data=small_png(), mime_type="image/jpeg"), "x"]
        ),
        "image/png",
    )


def test_files_upload_and_file_data():
    import io

    c = gclient()
    f = c.files.upload(file=io.BytesIO(small_png(80, 60)), config=types.UploadFileConfig(mime_type="image/png", display_name="in"))
    assert f.state.name == "ACTIVE", f
    assert c.files.get(name=f.name).display_name == "in"
    assert f.name in [x.name for x in c.files.list()]
    r = c.models.generate_content(
        model=GEMINI,
        contents=[types.Part.from_uri(file_uri=f.uri, mime_type="image/png"), "make it red"],
        config=types.GenerateContentConfig(image_config=types.ImageConfig(image_size="512")),
    )
    assert png_size(image_parts(r)[0].inline_data.data) == (80, 60)
    c.files.delete(name=f.name)
    expect_client_error(403, lambda: c.files.get(name=f.name), "permission")


def test_batch_inline_requests():
    import time

    c = gclient()
    cfg = {"response_modalities": ["IMAGE"], "image_config": {"image_size": "512"}}
    job = c.batches.create(
        model=GEMINI,
        src=[
            {"contents": [{"parts": [{"text": "one"}], "role": "user"}], "config": cfg, "metadata": {"key": "a"}},
            {"contents": [{"parts": [{"text": "two"}], "role": "user"}], "config": cfg, "metadata": {"key": "b"}},
        ],
        config={"display_name": "sdk batch"},
    )
    assert job.name.startswith("batches/")
    for _ in range(600):
        job = c.batches.get(name=job.name)
        if job.state.name in ("JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED"):
            break
        time.sleep(0.2)
    assert job.state.name == "JOB_STATE_SUCCEEDED", job.state
    out = job.dest.inlined_responses
    assert len(out) == 2
    assert png_size(image_parts(out[0].response)[0].inline_data.data) == (512, 512)
    assert job.name in [b.name for b in c.batches.list()]
    c.batches.delete(name=job.name)


def test_batch_from_jsonl_file():
    import io
    import json
    import time

    c = gclient()
    cfg = {"responseModalities": ["IMAGE"], "imageConfig": {"imageSize": "512", "aspectRatio": "16:9"}}
    lines = [
        {"key": "first", "request": {"contents": [{"parts": [{"text": "one"}]}], "generationConfig": cfg}},
        {"key": "second", "request": {"contents": [{"parts": [{"text": "two"}]}], "generationConfig": cfg}},
    ]
    data = ("\n".join(json.dumps(x) for x in lines) + "\n{broken\n").encode()
    src = c.files.upload(file=io.BytesIO(data), config=types.UploadFileConfig(mime_type="application/jsonl", display_name="reqs"))
    job = c.batches.create(model=GEMINI, src=src.name, config={"display_name": "sdk file batch"})
    for _ in range(600):
        job = c.batches.get(name=job.name)
        if job.state.name in ("JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED"):
            break
        time.sleep(0.2)
    assert job.state.name == "JOB_STATE_SUCCEEDED", job.state
    assert job.dest.file_name and job.dest.file_name.startswith("files/"), job.dest
    out = c.files.download(file=job.dest.file_name).decode().splitlines()
    got = [json.loads(x) for x in out]
    assert [g.get("key") for g in got] == ["first", "second", None], got
    for g in got[:2]:
        assert "response" in g, g
        r = types.GenerateContentResponse.model_validate_json(json.dumps(g["response"]))
        assert png_size(image_parts(r)[0].inline_data.data) == (688, 384)
    assert got[2]["error"]["status"] == "INVALID_ARGUMENT" and "line 3" in got[2]["error"]["message"], got[2]
    # The results file is a GENERATED file of the Files API, downloadable through the File object too.
    f = c.files.get(name=job.dest.file_name)
    assert f.source.name == "GENERATED", f.source
    assert c.files.download(file=f) == "\n".join(out).encode() + b"\n"
    expect_client_error(403, lambda: c.batches.create(model=GEMINI, src="files/missing"), "permission")


def test_openai_generate_and_url():
    o = oclient()
    r = o.images.generate(model="gpt-image-1", prompt="a fox", size="512x384", n=2)
    assert len(r.data) == 2
    assert png_size(base64.b64decode(r.data[0].b64_json)) == (512, 384)
    r = o.images.generate(model="dall-e-2", prompt="a fox", size="256x256", response_format="url")
    assert r.data[0].url.startswith(BASE)
    import urllib.request

    with urllib.request.urlopen(r.data[0].url) as f:
        assert png_size(f.read()) == (256, 256)


def test_openai_edit_with_mask_and_errors():
    o = oclient()
    img = small_png()
    mask = small_png(rgb=(0, 0, 0), alpha=lambda x, y: 0 if x < 32 else 255)
    r = o.images.edit(image=("in.png", img, "image/png"), mask=("mask.png", mask, "image/png"), prompt="a window", size="320x256")
    # An edit keeps the input's own size (pixels outside the mask are the input's).
    assert png_size(base64.b64decode(r.data[0].b64_json)) == (64, 48)
    try:
        o.images.generate(model="gpt-image-1", prompt="x", size="10x10")
        raise AssertionError("expected BadRequestError")
    except openai.BadRequestError as e:
        assert e.status_code == 400 and e.body["param"] == "size", e.body
    try:
        o.images.generate(model="nope", prompt="x")
        raise AssertionError("expected NotFoundError")
    except openai.NotFoundError as e:
        assert "nope" in e.body["message"]


def decode_png(data: bytes):
    """Checks that a PNG decodes (chunks, CRCs, zlib stream, scanline filters) and returns its
    size, without an imaging library."""
    import zlib

    w, h = png_size(data)
    pos, idat, bit_depth, colour = 8, b"", None, None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        tag, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert zlib.crc32(tag + body) & 0xFFFFFFFF == crc, tag
        if tag == b"IHDR":
            bit_depth, colour = body[8], body[9]
        elif tag == b"IDAT":
            idat += body
        pos += 12 + length
    assert (bit_depth, colour) in ((8, 2), (8, 6)), (bit_depth, colour)
    raw = zlib.decompress(idat)
    stride = 1 + w * (3 if colour == 2 else 4)
    assert len(raw) == h * stride, (len(raw), h, stride)
    assert all(raw[y * stride] <= 4 for y in range(h))
    return w, h


def test_openai_stream_and_partial_images():
    from openai.types import ImageEditPartialImageEvent, ImageGenCompletedEvent, ImageGenPartialImageEvent

    o = oclient()
    events = list(o.images.generate(model="gpt-image-1", prompt="a fox", size="256x192", stream=True))
    assert [e.type for e in events] == ["image_generation.completed"], [e.type for e in events]
    assert png_size(base64.b64decode(events[0].b64_json)) == (256, 192)
    # partial_images=2: two partial images (the server's model runs 2 steps), then the image.
    events = list(o.images.generate(model="gpt-image-1", prompt="a fox", size="256x192", stream=True, partial_images=2))
    types_ = [e.type for e in events]
    assert types_ == ["image_generation.partial_image"] * 2 + ["image_generation.completed"], types_
    for i, e in enumerate(events[:2]):
        assert isinstance(e, ImageGenPartialImageEvent), type(e)
        assert e.partial_image_index == i
        assert e.size == "256x192" and e.output_format == "png" and e.background == "opaque" and e.quality == "auto", e
        assert e.created_at > 1_700_000_000
        assert decode_png(base64.b64decode(e.b64_json)) == (256, 192)
    assert isinstance(events[2], ImageGenCompletedEvent), type(events[2])
    assert decode_png(base64.b64decode(events[2].b64_json)) == (256, 192)
    # Out of range: 400 in OpenAI's envelope.
    try:
        o.images.generate(model="gpt-image-1", prompt="a fox", size="256x192", stream=True, partial_images=4)
        raise AssertionError("expected BadRequestError")
    except openai.BadRequestError as e:
        assert e.body["param"] == "partial_images" and "between 0 and 3" in e.body["message"], e.body
    # Edits: image_edit.partial_image, then image_edit.completed.
    events = list(
        o.images.edit(
            image=("in.png", small_png(), "image/png"),
            prompt="add a blue square at the top right",
            size="128x96",
            stream=True,
            partial_images=1,
        )
    )
    assert [e.type for e in events] == ["image_edit.partial_image", "image_edit.completed"], [e.type for e in events]
    assert isinstance(events[0], ImageEditPartialImageEvent), type(events[0])
    assert events[0].partial_image_index == 0
    assert decode_png(base64.b64decode(events[0].b64_json)) == (64, 48)
    events = list(o.images.edit(image=("in.png", small_png(), "image/png"), prompt="make it warmer", size="128x96", stream=True))
    assert [e.type for e in events] == ["image_edit.completed"], [e.type for e in events]


def main():
    tests = [(n, f) for n, f in sorted(globals().items()) if n.startswith("test_") and callable(f)]
    failed = 0
    for name, fn in tests:
        try:
            fn()
            print("ok   ", name, flush=True)
        except Exception:
            failed += 1
            print("FAIL ", name, flush=True)
            traceback.print_exc()
    print("%d passed, %d failed" % (len(tests) - failed, failed))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
