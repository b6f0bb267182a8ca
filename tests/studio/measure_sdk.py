"""The studio's peer in `STUDIO_MEASURE=N bash tests/studio/run.sh`: the same request as the
studio sends (streamGenerateContent, TEXT+IMAGE, thoughts included, 1:1 at 512, plantain-nano,
seeds 100, 101, ...) through the google-genai SDK; times the first progress thought and the
last chunk. Prints one JSON line."""

import json
import os
import sys
import time

from google import genai
from google.genai import types

url, key, runs = os.environ["PLANTAIN_URL"], os.environ["PLANTAIN_KEY"], int(os.environ.get("STUDIO_MEASURE", "5"))
client = genai.Client(api_key=key, http_options=types.HttpOptions(base_url=url))
out = []
for i in range(runs):
    cfg = types.GenerateContentConfig(
        response_modalities=["TEXT", "IMAGE"],
        thinking_config=types.ThinkingConfig(include_thoughts=True),
        image_config=types.ImageConfig(aspect_ratio="1:1", image_size="512"),
        seed=100 + i,
    )
    t0 = time.perf_counter()
    first = None
    image = False
    for chunk in client.models.generate_content_stream(model="plantain-nano", contents="a red circle on a blue background", config=cfg):
        for p in chunk.candidates[0].content.parts or []:
            if first is None and p.thought and (p.text or "").startswith("step "):
                first = (time.perf_counter() - t0) * 1000
            if p.inline_data and not p.thought:
                image = True
    done = (time.perf_counter() - t0) * 1000
    if not image:
        sys.exit(f"run {i}: no picture in the answer")
    out.append({"firstProgress": first, "picture": done})
print(json.dumps({"runs": out}))
