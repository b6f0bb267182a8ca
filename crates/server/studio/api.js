// The server's public API, as any client uses it: the Gemini routes with `x-goog-api-key`, the
// OpenAI routes with `Authorization: Bearer`, errors read from either envelope.

const KEY = "plantain.studio.apiKey";

export function apiKey() {
  return localStorage.getItem(KEY) || "";
}

export function setApiKey(k) {
  if (k) localStorage.setItem(KEY, k);
  else localStorage.removeItem(KEY);
}

/** An error to show: `kind` is auth, input, busy, gone, cancelled or server. */
export class StudioError extends Error {
  constructor(kind, message, status) {
    super(message);
    this.kind = kind;
    this.status = status;
  }
}

function kindOf(status) {
  if (status === 401 || status === 403) return "auth";
  if (status === 429 || status === 503) return "busy";
  if (status >= 400 && status < 500) return "input";
  return "server";
}

async function errorFrom(res) {
  let msg = `${res.status} ${res.statusText}`;
  try {
    const body = await res.json();
    if (body && body.error && body.error.message) msg = body.error.message;
  } catch (_) { /* not JSON: keep the status line */ }
  return new StudioError(kindOf(res.status), msg, res.status);
}

function gone(e) {
  if (e.name === "AbortError") return new StudioError("cancelled", "Cancelled.");
  return new StudioError("gone", "The server is not answering — it may have stopped or the network is down.");
}

async function call(path, opts = {}, openai = false) {
  const headers = new Headers(opts.headers || {});
  const k = apiKey();
  if (k) headers.set(openai ? "Authorization" : "x-goog-api-key", openai ? `Bearer ${k}` : k);
  let res;
  try {
    res = await fetch(path, { ...opts, headers });
  } catch (e) {
    throw gone(e);
  }
  if (!res.ok) throw await errorFrom(res);
  return res;
}

export async function getJson(path) {
  const res = await call(path);
  return res.json();
}

export const imageSettings = () => getJson("/v1/image-settings");
export const conversations = (offset = 0, limit = 30) => getJson(`/v1/conversations?limit=${limit}&offset=${offset}`);
export const conversation = (id) => getJson(`/v1/conversations/${encodeURIComponent(id)}`);

/** The server's provenance report (watermark and Content Credentials) for an image's bytes. */
export async function verify(blob) {
  const res = await call("/v1/verify", { method: "POST", body: blob, headers: { "content-type": blob.type || "application/octet-stream" } });
  return res.json();
}

export async function ready() {
  try {
    const res = await fetch("/readyz");
    return res.json();
  } catch (e) {
    throw gone(e);
  }
}

/** Bytes of a URL as base64 (for inlineData). */
export async function base64Of(blob) {
  const buf = new Uint8Array(await blob.arrayBuffer());
  let s = "";
  for (let i = 0; i < buf.length; i += 0x8000) s += String.fromCharCode.apply(null, buf.subarray(i, i + 0x8000));
  return btoa(s);
}

export async function fetchBlob(url) {
  let res;
  try {
    res = await fetch(url);
  } catch (e) {
    throw gone(e);
  }
  if (!res.ok) throw await errorFrom(res);
  return res.blob();
}

/**
 * `streamGenerateContent?alt=sse`: calls `on.progress(step, total, text)` for each progress
 * thought, `on.preview(dataUrl)` for each preview image, and resolves with the final chunk's
 * candidate: `{ texts, thoughts, image: {mimeType, data, thoughtSignature}|null, finishReason,
 * responseId }`. Aborting `signal` closes the stream (the server then cancels the job).
 */
export async function streamGenerate(model, body, on, signal) {
  const res = await call(`/v1beta/models/${encodeURIComponent(model)}:streamGenerateContent?alt=sse`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
    signal,
  });
  const reader = res.body.getReader();
  const dec = new TextDecoder();
  let buf = "";
  const out = { texts: [], thoughts: [], image: null, finishReason: null, responseId: null };
  for (;;) {
    let r;
    try {
      r = await reader.read();
    } catch (e) {
      throw gone(e);
    }
    if (r.done) break;
    buf += dec.decode(r.value, { stream: true });
    let cut;
    while ((cut = buf.indexOf("\n\n")) >= 0) {
      const ev = buf.slice(0, cut);
      buf = buf.slice(cut + 2);
      const data = ev.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trimStart()).join("\n");
      if (data) handleChunk(JSON.parse(data), on, out);
    }
  }
  if (!out.image && !out.finishReason) {
    throw new StudioError("gone", "The connection closed before the picture was finished — the server may have stopped.");
  }
  return out;
}

function handleChunk(chunk, on, out) {
  if (chunk.error) throw new StudioError(kindOf(chunk.error.code || 500), chunk.error.message || "the job failed", chunk.error.code);
  out.responseId = chunk.responseId || out.responseId;
  const cand = (chunk.candidates || [])[0];
  if (!cand) return;
  if (cand.finishReason) out.finishReason = cand.finishReason;
  for (const p of (cand.content && cand.content.parts) || []) {
    if (p.thought && p.text) {
      const m = /^step (\d+) of (\d+)/.exec(p.text);
      if (m) on.progress(Number(m[1]), Number(m[2]), p.text);
      else out.thoughts.push(p.text);
    } else if (p.thought && p.inlineData) {
      on.preview(`data:${p.inlineData.mimeType};base64,${p.inlineData.data}`);
    } else if (p.inlineData) {
      out.image = { mimeType: p.inlineData.mimeType, data: p.inlineData.data, thoughtSignature: p.thoughtSignature };
    } else if (p.text) {
      out.texts.push(p.text);
    }
  }
}

/** OpenAI `images/edits` with a mask (transparent = repaint); answers the image's URL. */
export async function maskEdit(image, mask, prompt, model, signal) {
  const form = new FormData();
  form.append("image", image, "image.png");
  form.append("mask", mask, "mask.png");
  form.append("prompt", prompt);
  if (model) form.append("model", model);
  form.append("response_format", "url");
  const res = await call("/v1/images/edits", { method: "POST", body: form, signal }, true);
  const body = await res.json();
  return body.data[0].url;
}
