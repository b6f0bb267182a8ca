// plantain studio: a conversational image editor over the server's public API.
import * as api from "./api.js";
import { MaskBrush } from "./mask.js";
import { renderCompare } from "./compare.js";

const $ = (id) => document.getElementById(id);
const S = {
  settings: null,
  conv: newConv(),
  attachments: [],
  abort: null,
  listOffset: 0,
};
const brush = new MaskBrush($("mask-canvas"), $("current-img"));

function newConv() {
  return { id: null, versions: [], byId: new Map(), selected: null, messages: [] };
}

// ---------------------------------------------------------------------------------------------
// Messages and errors.

function banner(text, action) {
  $("banner-text").textContent = text;
  const b = $("banner-action");
  b.hidden = !action;
  if (action) {
    b.textContent = action.label;
    b.onclick = action.run;
  }
  $("banner").hidden = false;
}

function explain(err) {
  switch (err.kind) {
    case "auth":
      return { text: `The server refused the API key: ${err.message}`, action: { label: "Set API key", run: openKeyDialog } };
    case "gone":
      return { text: `${err.message} Your conversation is kept; send again when the server is back.` };
    case "busy":
      return { text: `The server is busy: ${err.message} Try again in a moment.` };
    case "cancelled":
      return { text: "Cancelled — nothing was made." };
    default:
      return { text: err.message || String(err) };
  }
}

function showError(err) {
  const e = explain(err);
  if (err.kind !== "cancelled") banner(e.text, e.action);
  return e.text;
}

function chatKey(id) {
  return `plantain.studio.chat.${id}`;
}

function saveChat() {
  const c = S.conv;
  if (!c.id) return;
  const keep = c.messages.filter((m) => m.role !== "pending").map(({ preview, ...m }) => m);
  try {
    localStorage.setItem(chatKey(c.id), JSON.stringify(keep));
  } catch (_) {
    banner("This browser's storage is full: the chat text of this conversation is not saved (its versions are, on the server).");
  }
}

// ---------------------------------------------------------------------------------------------
// Rendering.

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function renderMessages() {
  const box = $("messages");
  box.replaceChildren();
  if (!S.conv.messages.length) {
    box.append(emptyState);
    return;
  }
  for (const m of S.conv.messages) box.append(messageEl(m));
  box.scrollTop = box.scrollHeight;
}
const emptyState = $("empty");

function messageEl(m) {
  const div = el("div", `msg ${m.role}`);
  if (m.role === "user") {
    if (m.text) div.append(el("p", "", m.text));
    if (m.refs && m.refs.length) {
      const refs = el("div", "refs");
      m.refs.forEach((src, i) => {
        const f = el("figure", "ref");
        const img = el("img");
        img.src = src;
        img.alt = `reference ${i + 1}`;
        f.append(img, el("figcaption", "", String(i + 1)));
        refs.append(f);
      });
      div.append(refs);
    }
    if (m.mask) div.append(el("span", "tag", "masked repaint"));
    return div;
  }
  if (m.role === "error") {
    div.append(el("p", "", m.text));
    return div;
  }
  if (m.role === "pending") {
    const p = el("div", "pending-box");
    if (m.preview) {
      const img = el("img", "preview");
      img.src = m.preview;
      img.alt = "preview of the picture in progress";
      p.append(img);
    } else p.append(el("div", "shimmer"));
    p.append(el("p", "muted", m.text || "working…"));
    div.append(p);
    return div;
  }
  const v = m.versionId && S.conv.byId.get(m.versionId);
  if (v) {
    const img = el("img", "result");
    img.src = v.url;
    img.alt = `version ${v.version}`;
    img.title = "Show this version";
    img.addEventListener("click", () => select(v.id));
    div.append(img);
    const reuse = el("button", "reuse ghost", "Use these settings");
    reuse.type = "button";
    reuse.title = "Seed, model, aspect ratio and size of this version";
    reuse.addEventListener("click", () => reuseSettings(v));
    div.append(reuse);
  }
  const caption = (m.texts || [])[0] || (v ? `Version ${v.version}, ${v.width}×${v.height}` : "");
  if (caption) div.append(el("p", "caption", caption.split("\n")[0]));
  const more = [...(m.texts || []), ...(m.thoughts || [])];
  if (more.length) {
    const d = el("details", "plan");
    d.append(el("summary", "", "Plan & checks"));
    d.append(el("pre", "", more.join("\n\n")));
    div.append(d);
  }
  return div;
}

function label(v) {
  const p = v.params || {};
  if (p.instruction) return p.instruction;
  if (p.extra && p.extra.plan) return "masked repaint";
  if (p.aspectRatio) return `${p.aspectRatio} · ${p.imageSize}`;
  return `${v.width}×${v.height}`;
}

function renderTree() {
  const box = $("tree");
  box.replaceChildren();
  const c = S.conv;
  if (!c.versions.length) {
    box.append(el("p", "muted", "No versions yet."));
    return;
  }
  const kids = new Map();
  const roots = [];
  for (const v of c.versions) {
    if (v.parentId && c.byId.has(v.parentId)) {
      if (!kids.has(v.parentId)) kids.set(v.parentId, []);
      kids.get(v.parentId).push(v);
    } else roots.push(v);
  }
  const list = (vs) => {
    const ul = el("ul");
    for (const v of vs) {
      const li = el("li");
      const b = el("button", `node${v.id === c.selected ? " selected" : ""}`);
      b.type = "button";
      b.dataset.version = v.id;
      const img = el("img");
      img.src = v.url;
      img.alt = "";
      const t = el("span", "node-text");
      t.append(el("b", "", `v${v.version}`), el("span", "", label(v)));
      b.append(img, t);
      const n = (kids.get(v.id) || []).length;
      if (n > 1) b.append(el("span", "tag", `${n} branches`));
      b.addEventListener("click", () => select(v.id));
      li.append(b);
      if (kids.has(v.id)) li.append(list(kids.get(v.id)));
      ul.append(li);
    }
    return ul;
  };
  box.append(list(roots));
}

function renderViewer() {
  const v = S.conv.selected && S.conv.byId.get(S.conv.selected);
  const img = $("current-img");
  $("stage-empty").hidden = !!v;
  document.body.classList.toggle("has-version", !!v);
  img.hidden = !v;
  for (const id of ["compare-btn", "mask-btn", "download-btn", "prov-btn"]) $(id).disabled = !v;
  for (const b of document.querySelectorAll("#quick button")) b.disabled = !v || !!S.abort || !quickServed(b);
  $("compare-btn").disabled = !v || S.conv.versions.length < 2;
  if (!v) {
    closeTools();
    $("version-label").textContent = "";
    return;
  }
  if (img.dataset.id !== v.id) {
    img.src = v.url;
    img.dataset.id = v.id;
  }
  const branchNote = kidsOf(v.id).length ? " · sending now branches from here" : "";
  $("version-label").textContent = `Version ${v.version} · ${v.width}×${v.height} · seed ${v.seed}${branchNote}`;
  if (!$("compare-tools").hidden) drawCompare();
}

function kidsOf(id) {
  return S.conv.versions.filter((v) => v.parentId === id);
}

function render() {
  renderMessages();
  renderTree();
  renderViewer();
  for (const li of $("conv-list").children) li.classList.toggle("active", li.dataset.id === S.conv.id);
}

function select(id) {
  S.conv.selected = id;
  renderTree();
  renderViewer();
  if (!$("mask-tools").hidden) img_loaded().then(() => brush.attach());
  if (!$("prov-tools").hidden) showProvenance();
}

function img_loaded() {
  const img = $("current-img");
  return img.complete && img.naturalWidth ? Promise.resolve() : new Promise((ok) => img.addEventListener("load", ok, { once: true }));
}

// ---------------------------------------------------------------------------------------------
// Settings, key, status.

async function loadSettings() {
  const s = await api.imageSettings();
  S.settings = s;
  const fill = (sel, items, value) => {
    sel.replaceChildren();
    for (const it of items) {
      const o = el("option", "", it.label);
      o.value = it.value;
      o.disabled = !!it.disabled;
      sel.append(o);
    }
    sel.value = value;
  };
  fill($("ratio"), s.aspectRatios.map((r) => ({ value: r, label: r })), s.defaultAspectRatio);
  fill($("size"), s.imageSizes.map((z) => ({ value: z.name, label: z.served ? z.name : `${z.name} (not served)`, disabled: !z.served })), s.defaultImageSize);
  fill($("model"), s.models.map((m) => ({ value: m.name, label: m.state === "ready" ? m.name : `${m.name} (${m.state})` })), s.defaultModel || (s.models[0] || {}).name);
  showPixels();
}

function showPixels() {
  const s = S.settings;
  if (!s) return;
  const px = (s.pixels[$("ratio").value] || {})[$("size").value];
  $("pixels").textContent = px ? `${px[0]} × ${px[1]} px` : "";
}

async function checkStatus() {
  const st = $("server-status");
  try {
    const r = await api.ready();
    st.dataset.state = r.ready ? "ready" : "loading";
    st.textContent = r.ready ? `ready · ${r.default_model}` : "loading the model…";
  } catch (_) {
    st.dataset.state = "offline";
    st.textContent = "server offline";
  }
}

function openKeyDialog() {
  $("key-input").value = api.apiKey();
  $("key-dialog").showModal();
  $("key-input").focus();
}

async function start() {
  $("banner").hidden = true;
  try {
    await loadSettings();
    await loadList(true);
  } catch (e) {
    showError(e);
  }
}

// ---------------------------------------------------------------------------------------------
// Conversations list.

async function loadList(reset) {
  if (reset) {
    S.listOffset = 0;
    $("conv-list").replaceChildren();
  }
  const r = await api.conversations(S.listOffset);
  for (const v of r.conversations) $("conv-list").append(convItem(v));
  S.listOffset = r.nextOffset || S.listOffset;
  $("more-btn").hidden = !r.nextOffset;
}

function convItem(v) {
  const li = el("li");
  li.dataset.id = v.id;
  li.classList.toggle("active", v.id === S.conv.id);
  const b = el("button", "conv");
  b.type = "button";
  const img = el("img");
  img.src = v.url;
  img.alt = "";
  const title = localStorage.getItem(`plantain.studio.title.${v.id}`) || label(v);
  const t = el("span", "conv-text");
  t.append(el("span", "conv-title", title), el("span", "muted", new Date(v.createdAt * 1000).toLocaleString()));
  b.append(img, t);
  b.addEventListener("click", () => openConversation(v.id));
  li.append(b);
  return li;
}

async function openConversation(id) {
  if (S.abort) return banner("Wait for the running job to finish, or cancel it, before switching.");
  try {
    const data = await api.conversation(id);
    S.conv = newConv();
    // Opened from the list: at its newest version.
    adopt({ ...data, selected: data.selected === data.id ? (data.versions.at(-1) || {}).id : data.selected });
    const saved = localStorage.getItem(chatKey(S.conv.id));
    S.conv.messages = saved ? JSON.parse(saved) : data.versions.map((v) => ({ role: "model", versionId: v.id, texts: [label(v)] }));
    closeTools();
    render();
    document.body.classList.remove("drawer-open");
  } catch (e) {
    showError(e);
  }
}

/** Takes a conversation answer: versions, root id, the version it named selected. */
function adopt(data) {
  const c = S.conv;
  c.id = data.id;
  c.versions = data.versions;
  c.byId = new Map(data.versions.map((v) => [v.id, v]));
  c.selected = data.selected || (data.versions.at(-1) || {}).id || null;
}

function newConversation() {
  if (S.abort) return;
  S.conv = newConv();
  clearAttachments();
  closeTools();
  render();
  document.body.classList.remove("drawer-open");
  $("prompt").focus();
}

// ---------------------------------------------------------------------------------------------
// Uploads: picker, drag and drop, paste. Numbered in the order added.

const TYPES = ["image/png", "image/jpeg", "image/webp"];

function mb(n) {
  return `${(n / 1048576).toFixed(1)} MB`;
}

function addFiles(files) {
  const lim = (S.settings && S.settings.limits) || { maxImages: 14, maxImageBytes: 7 << 20 };
  const problems = [];
  for (const f of files) {
    if (!TYPES.includes(f.type)) problems.push(`${f.name || "the pasted item"} is not a PNG, JPEG or WebP image`);
    else if (f.size > lim.maxImageBytes) problems.push(`${f.name || "the pasted image"} is ${mb(f.size)}; this server takes images up to ${mb(lim.maxImageBytes)}`);
    else if (S.attachments.length >= lim.maxImages) problems.push(`at most ${lim.maxImages} images per message: ${f.name || "the pasted image"} was left out`);
    else S.attachments.push({ blob: f, url: URL.createObjectURL(f), name: f.name || "pasted image" });
  }
  renderAttachments();
  if (problems.length) banner(`Not added: ${problems.join("; ")}.`);
}

function renderAttachments() {
  const box = $("attachments");
  box.replaceChildren();
  box.hidden = !S.attachments.length;
  S.attachments.forEach((a, i) => {
    const f = el("figure", "ref");
    const img = el("img");
    img.src = a.url;
    img.alt = a.name;
    const x = el("button", "remove", "×");
    x.type = "button";
    x.title = `Remove image ${i + 1}`;
    x.addEventListener("click", () => {
      URL.revokeObjectURL(a.url);
      S.attachments.splice(i, 1);
      renderAttachments();
    });
    f.append(img, el("figcaption", "", String(i + 1)), x);
    box.append(f);
  });
  if (S.attachments.length) {
    box.append(el("span", "muted hint", S.attachments.length > 1 ? "fusion: name images by number, e.g. “put the subject of image 1 into image 2”" : "this image is edited by your words"));
  }
}

function clearAttachments() {
  for (const a of S.attachments) URL.revokeObjectURL(a.url);
  S.attachments = [];
  renderAttachments();
}

async function thumb(blob) {
  const bmp = await createImageBitmap(blob);
  const k = 96 / Math.max(bmp.width, bmp.height);
  const c = document.createElement("canvas");
  c.width = Math.max(1, Math.round(bmp.width * k));
  c.height = Math.max(1, Math.round(bmp.height * k));
  c.getContext("2d").drawImage(bmp, 0, 0, c.width, c.height);
  return c.toDataURL("image/jpeg", 0.8);
}

// ---------------------------------------------------------------------------------------------
// Sending: text to image, an edit of the selected version, or an edit / fusion of uploads.

async function requestBody(text, aspect) {
  const gc = { responseModalities: ["TEXT", "IMAGE"], thinkingConfig: { includeThoughts: true } };
  const seed = $("seed").value.trim();
  if (seed) gc.seed = Number(seed);
  if (S.attachments.length) {
    const parts = [{ text }];
    for (const a of S.attachments) parts.push({ inlineData: { mimeType: a.blob.type, data: await api.base64Of(a.blob) } });
    return { kind: "uploads", body: { contents: [{ role: "user", parts }], generationConfig: gc } };
  }
  const v = S.conv.selected && S.conv.byId.get(S.conv.selected);
  if (v) {
    const blob = await api.fetchBlob(v.url);
    const model = { role: "model", parts: [{ inlineData: { mimeType: v.mimeType, data: await api.base64Of(blob) }, thoughtSignature: v.thoughtSignature }] };
    // Extending to another shape names the new aspect ratio, as any Gemini client would.
    if (aspect) gc.imageConfig = { aspectRatio: aspect };
    return { kind: "edit", body: { contents: [{ role: "user", parts: [{ text: label(v) }] }, model, { role: "user", parts: [{ text }] }], generationConfig: gc } };
  }
  gc.imageConfig = { aspectRatio: $("ratio").value, imageSize: $("size").value };
  return { kind: "generate", body: { contents: [{ role: "user", parts: [{ text }] }], generationConfig: gc } };
}

/** An upscale button works only for a size the server serves (its `limits.max_image_size`). */
function quickServed(b) {
  if (!b.dataset.size || !S.settings) return true;
  const z = S.settings.imageSizes.find((x) => x.name === b.dataset.size);
  return !!(z && z.served);
}

function setBusy(on) {
  for (const b of document.querySelectorAll("#quick button")) b.disabled = on || !S.conv.selected || !quickServed(b);
  $("send-btn").hidden = on;
  $("cancel-btn").hidden = !on;
  $("progress").hidden = !on;
  $("mask-apply").disabled = on;
  if (on) {
    $("progress-fill").style.width = "0%";
    $("progress-text").textContent = "queued…";
    $("progress").classList.add("indeterminate");
  }
}

function progress(step, total, text) {
  $("progress").classList.remove("indeterminate");
  $("progress-fill").style.width = `${Math.round((100 * step) / Math.max(1, total))}%`;
  $("progress-text").textContent = text || `step ${step} of ${total}`;
}

/** Sends the prompt, or (a one-click edit) `quick.text` on the current version. */
async function send(ev, quick) {
  if (ev) ev.preventDefault();
  if (S.abort) return;
  const text = quick ? quick.text : $("prompt").value.trim();
  if (!text) return banner("Write what to make, or how to change the picture.");
  $("banner").hidden = true;
  const userMsg = { role: "user", text, refs: await Promise.all(S.attachments.map((a) => thumb(a.blob))) };
  const pending = { role: "pending", text: "queued…" };
  const before = S.conv;
  S.conv.messages.push(userMsg, pending);
  renderMessages();
  const ctl = new AbortController();
  S.abort = ctl;
  setBusy(true);
  try {
    const { kind, body } = await requestBody(text, quick && quick.aspect);
    const on = {
      progress: (k, n, t) => {
        progress(k, n, t);
        pending.text = t;
        renderMessages();
      },
      preview: (url) => {
        pending.preview = url;
        renderMessages();
      },
    };
    const out = await api.streamGenerate($("model").value, body, on, ctl.signal);
    await finish(before, kind, userMsg, pending, out, text, !quick);
  } catch (e) {
    pending.role = "error";
    pending.text = showError(e);
    delete pending.preview;
    render();
  } finally {
    S.abort = null;
    setBusy(false);
  }
}

async function finish(before, kind, userMsg, pending, out, text, typed) {
  const msg = { role: "model", texts: out.texts, thoughts: out.thoughts };
  if (!out.image) {
    // An edit the planner could not make: its answer, in words.
    Object.assign(pending, msg, { role: "model", texts: out.texts.length ? out.texts : ["No picture was made."] });
    delete pending.preview;
    if (typed) $("prompt").value = "";
    saveChat();
    return render();
  }
  const data = await api.conversation(out.responseId);
  if (kind === "uploads" || before.id !== data.id) {
    // A new root: the uploads' edit or fusion starts its own conversation.
    S.conv = newConv();
    S.conv.messages = [userMsg];
    localStorage.setItem(`plantain.studio.title.${data.id}`, text.slice(0, 80));
    if (kind === "uploads") clearAttachments();
  } else {
    S.conv.messages = S.conv.messages.filter((m) => m !== pending);
  }
  adopt(data);
  msg.versionId = data.selected;
  S.conv.messages.push(msg);
  if (typed) $("prompt").value = "";
  saveChat();
  render();
  if (!before.id || kind === "uploads") loadList(true).catch(() => {});
}

function cancel() {
  if (S.abort) S.abort.abort();
}

// ---------------------------------------------------------------------------------------------
// Compare, mask, download.

function closeTools() {
  $("compare-tools").hidden = true;
  $("compare").hidden = true;
  $("mask-tools").hidden = true;
  $("mask-canvas").hidden = true;
  $("prov-tools").hidden = true;
  $("prov-btn").classList.remove("on");
  $("current-img").classList.remove("under-tool");
  $("compare-btn").classList.remove("on");
  $("mask-btn").classList.remove("on");
}

function toggleCompare() {
  const open = $("compare-tools").hidden;
  closeTools();
  if (!open) return;
  const c = S.conv;
  const opts = (sel, value) => {
    sel.replaceChildren();
    for (const v of c.versions) {
      const o = el("option", "", `v${v.version} · ${label(v)}`);
      o.value = v.id;
      sel.append(o);
    }
    sel.value = value;
  };
  const cur = c.byId.get(c.selected);
  const parent = (cur && cur.parentId && c.byId.has(cur.parentId)) ? cur.parentId : c.versions[0].id;
  opts($("compare-a"), parent === c.selected ? c.versions[0].id : parent);
  opts($("compare-b"), c.selected);
  $("compare-tools").hidden = false;
  $("compare").hidden = false;
  $("current-img").classList.add("under-tool");
  $("compare-btn").classList.add("on");
  drawCompare();
}

function drawCompare() {
  const a = S.conv.byId.get($("compare-a").value);
  const b = S.conv.byId.get($("compare-b").value);
  if (a && b) renderCompare($("compare"), a, b, $("compare-side").checked);
}

async function toggleMask() {
  const open = $("mask-tools").hidden;
  closeTools();
  if (!open) return;
  $("mask-tools").hidden = false;
  $("mask-canvas").hidden = false;
  $("mask-btn").classList.add("on");
  await img_loaded();
  brush.attach();
  brush.clear();
}

function maskChanged() {
  $("mask-cover").textContent = `${Math.round(brush.coverage() * 100)}% masked`;
}

async function applyMask() {
  const v = S.conv.byId.get(S.conv.selected);
  const prompt = $("mask-prompt").value.trim();
  if (!v || S.abort) return;
  if (!prompt) return banner("Say what to paint in the masked area.");
  if (brush.coverage() <= 0) return banner("Paint over the area to repaint first.");
  $("banner").hidden = true;
  const userMsg = { role: "user", text: prompt, mask: true, refs: [] };
  const pending = { role: "pending", text: "repainting the masked area…" };
  S.conv.messages.push(userMsg, pending);
  renderMessages();
  const ctl = new AbortController();
  S.abort = ctl;
  setBusy(true);
  $("progress-text").textContent = "repainting the masked area…";
  try {
    const [image, mask] = await Promise.all([api.fetchBlob(v.url), brush.toBlob()]);
    const url = await api.maskEdit(image, mask, prompt, $("model").value, ctl.signal);
    const data = await api.conversation(S.conv.id);
    const hash = new URL(url, location.href).pathname;
    const made = data.versions.find((x) => new URL(x.url, location.href).pathname === hash);
    S.conv.messages = S.conv.messages.filter((m) => m !== pending);
    adopt({ ...data, selected: made ? made.id : S.conv.selected });
    S.conv.messages.push(made ? { role: "model", versionId: made.id, texts: [`Repainted the masked area: ${prompt}`] } : { role: "error", text: "The repaint finished but is not in this conversation's versions." });
    $("mask-prompt").value = "";
    saveChat();
    closeTools();
    render();
  } catch (e) {
    pending.role = "error";
    pending.text = showError(e);
    render();
  } finally {
    S.abort = null;
    setBusy(false);
  }
}

async function download() {
  const v = S.conv.byId.get(S.conv.selected);
  if (!v) return;
  const type = $("download-fmt").value;
  try {
    let blob = await api.fetchBlob(v.url);
    if (blob.type !== type) {
      const bmp = await createImageBitmap(blob);
      const c = document.createElement("canvas");
      c.width = bmp.width;
      c.height = bmp.height;
      c.getContext("2d").drawImage(bmp, 0, 0);
      blob = await new Promise((ok) => c.toBlob(ok, type, 0.92));
    }
    const a = el("a");
    a.href = URL.createObjectURL(blob);
    a.download = `plantain-${v.id.slice(0, 8)}-v${v.version}.${{ "image/png": "png", "image/jpeg": "jpg", "image/webp": "webp" }[type]}`;
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 5000);
  } catch (e) {
    showError(e);
  }
}

// ---------------------------------------------------------------------------------------------
// Provenance: the server's verify endpoint on the version's stored bytes.

async function toggleProvenance() {
  const open = $("prov-tools").hidden;
  closeTools();
  if (!open) return;
  $("prov-tools").hidden = false;
  $("prov-btn").classList.add("on");
  await showProvenance();
}

async function showProvenance() {
  const v = S.conv.byId.get(S.conv.selected);
  if (!v) return;
  $("prov-verdict").textContent = "verifying…";
  $("prov-facts").replaceChildren();
  try {
    const r = await api.verify(await api.fetchBlob(v.url));
    if (S.conv.selected !== v.id) return;
    $("prov-verdict").textContent = r.verdict;
    $("prov-facts").replaceChildren(...provenanceFacts(r, v));
  } catch (e) {
    $("prov-verdict").textContent = `Could not verify: ${explain(e).text}`;
  }
}

/** The report as term/value pairs; `good` marks a check that passed (true) or failed (false). */
function provenanceFacts(r, v) {
  const rows = [];
  const add = (term, value, good) => {
    if (value === undefined || value === null || value === "") return;
    const dd = el("dd", good === true ? "ok" : good === false ? "bad" : "", String(value));
    rows.push(el("dt", "", term), dd);
  };
  const w = r.watermark;
  if (w) add("Watermark", w.present ? `found (confidence ${Math.round(w.confidence * 100)}%)` : "not found", w.present);
  else add("Watermark", "not checked (the server has no watermark key)");
  const m = r.manifest;
  if (m) {
    add("Content Credentials", m.state, m.signature_valid && m.hash_valid);
    add("Signature", m.signature_valid ? "valid" : "invalid", m.signature_valid);
    add("File hash", m.hash_valid ? "matches" : "does not match", m.hash_valid);
    add("Signer", m.signer);
    add("Issuer", m.issuer);
    add("Signed at", m.signed_at);
    add("Made by", m.claim_generator);
    add("Source", m.digital_source_type && m.digital_source_type.split("/").pop());
    add("Actions", (m.actions || []).join(", "));
    if (m.failures && m.failures.length) add("Notes", m.failures.join("; "));
  } else add("Content Credentials", "none in this file", false);
  const sb = r.soft_binding_matches;
  if (sb === true) add("Watermark ↔ manifest", "the same image", true);
  // An edit watermarks only its region; the pixels it kept carry an earlier version's mark.
  else if (sb === false && v.parentId) add("Watermark ↔ manifest", "an earlier version's mark (this edit kept the pixels outside its region, and their watermark)");
  else if (sb === false) add("Watermark ↔ manifest", "different", false);
  add("Picture", `${r.width}×${r.height} ${r.format}`);
  return rows;
}

// ---------------------------------------------------------------------------------------------
// Gallery search and settings recall.

/** What a conversation is searched by: its title and the chat text kept in this browser. */
function searchText(li) {
  const id = li.dataset.id;
  const chat = localStorage.getItem(chatKey(id)) || "";
  return `${li.textContent} ${localStorage.getItem(`plantain.studio.title.${id}`) || ""} ${chat}`.toLowerCase();
}

async function search() {
  const q = $("conv-search").value.trim().toLowerCase();
  // A search looks through every conversation, not only the pages shown so far.
  for (let pages = 0; q && !$("more-btn").hidden && pages < 50; pages++) await loadList(false);
  let shown = 0;
  for (const li of $("conv-list").children) {
    li.hidden = !!q && !searchText(li).includes(q);
    if (!li.hidden) shown++;
  }
  $("search-empty").hidden = !q || shown > 0;
}

/** "Use these settings again": the version's seed, model, aspect ratio and size. */
function reuseSettings(v) {
  $("seed").value = v.seed;
  if ([...$("model").options].some((o) => o.value === v.model)) $("model").value = v.model;
  const px = (S.settings && S.settings.pixels) || {};
  for (const [ratio, sizes] of Object.entries(px)) {
    const size = Object.keys(sizes).find((z) => sizes[z][0] === v.width && sizes[z][1] === v.height);
    if (size) {
      $("ratio").value = ratio;
      $("size").value = size;
      break;
    }
  }
  showPixels();
  banner(`Settings of version ${v.version} set: seed ${v.seed}, ${$("ratio").value}, ${$("size").value}, ${$("model").value}. Start a new conversation to draw with them.`);
}

// ---------------------------------------------------------------------------------------------
// Wiring.

function undoRedo(redo) {
  const c = S.conv;
  const v = c.byId.get(c.selected);
  if (!v) return;
  if (!redo && v.parentId && c.byId.has(v.parentId)) select(v.parentId);
  if (redo) {
    const k = kidsOf(v.id);
    if (k.length) select(k[k.length - 1].id);
  }
}

/** One-letter shortcuts, outside text fields: compare, mask, provenance, download, search, help. */
function letterKey(e) {
  const act = {
    c: () => !$("compare-btn").disabled && toggleCompare(),
    m: () => !$("mask-btn").disabled && toggleMask(),
    p: () => !$("prov-btn").disabled && toggleProvenance(),
    d: () => !$("download-btn").disabled && download(),
    "/": () => $("conv-search").focus(),
    "?": () => $("keys-dialog").showModal(),
  }[e.key.toLowerCase()];
  if (!act || document.querySelector("dialog[open]")) return;
  e.preventDefault();
  act();
}

function typing(e) {
  return ["INPUT", "TEXTAREA", "SELECT"].includes(e.target.tagName);
}

function wire() {
  $("composer").addEventListener("submit", send);
  $("cancel-btn").addEventListener("click", cancel);
  $("prompt").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) send(e);
  });
  // The drawer (phones) closes on a click outside it or on Escape.
  document.addEventListener("click", (e) => {
    if (document.body.classList.contains("drawer-open") && !e.target.closest("#sidebar, #menu-btn")) document.body.classList.remove("drawer-open");
  });
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape") document.body.classList.remove("drawer-open");
    if (e.key === "Escape" && S.abort) cancel();
    if (!typing(e) && !e.ctrlKey && !e.metaKey && !e.altKey) return letterKey(e);
    if (typing(e) || !(e.ctrlKey || e.metaKey)) return;
    if (e.key.toLowerCase() === "z") {
      e.preventDefault();
      undoRedo(e.shiftKey);
    }
  });
  $("ratio").addEventListener("change", showPixels);
  $("size").addEventListener("change", showPixels);
  $("attach-btn").addEventListener("click", () => $("file-input").click());
  $("file-input").addEventListener("change", (e) => {
    addFiles([...e.target.files]);
    e.target.value = "";
  });
  let depth = 0;
  window.addEventListener("dragenter", (e) => {
    if (![...e.dataTransfer.types].includes("Files")) return;
    depth++;
    $("drop-overlay").hidden = false;
  });
  window.addEventListener("dragleave", () => {
    if (--depth <= 0) $("drop-overlay").hidden = true;
  });
  window.addEventListener("dragover", (e) => e.preventDefault());
  window.addEventListener("drop", (e) => {
    e.preventDefault();
    depth = 0;
    $("drop-overlay").hidden = true;
    if (e.dataTransfer.files.length) addFiles([...e.dataTransfer.files]);
  });
  document.addEventListener("paste", (e) => {
    const files = [...(e.clipboardData ? e.clipboardData.files : [])];
    if (files.length) {
      e.preventDefault();
      addFiles(files);
    }
  });
  $("new-btn").addEventListener("click", newConversation);
  $("more-btn").addEventListener("click", () => loadList(false).catch(showError));
  $("menu-btn").addEventListener("click", () => document.body.classList.toggle("drawer-open"));
  $("key-btn").addEventListener("click", openKeyDialog);
  $("key-cancel").addEventListener("click", () => $("key-dialog").close());
  $("key-form").addEventListener("submit", () => {
    api.setApiKey($("key-input").value.trim());
    start();
  });
  $("banner-close").addEventListener("click", () => ($("banner").hidden = true));
  $("compare-btn").addEventListener("click", toggleCompare);
  for (const id of ["compare-a", "compare-b", "compare-side"]) $(id).addEventListener("change", drawCompare);
  $("mask-btn").addEventListener("click", toggleMask);
  $("brush-size").addEventListener("input", (e) => (brush.size = Number(e.target.value)));
  $("brush-feather").addEventListener("input", (e) => (brush.feather = Number(e.target.value)));
  $("brush-eraser").addEventListener("change", (e) => (brush.eraser = e.target.checked));
  $("mask-invert").addEventListener("click", () => brush.invert());
  $("mask-clear").addEventListener("click", () => brush.clear());
  $("mask-apply").addEventListener("click", applyMask);
  brush.onchange = maskChanged;
  window.addEventListener("resize", () => {
    if (!$("mask-canvas").hidden) brush.place();
  });
  $("download-btn").addEventListener("click", download);
  $("prov-btn").addEventListener("click", toggleProvenance);
  for (const b of document.querySelectorAll("#quick button")) {
    b.addEventListener("click", () => send(null, { text: b.dataset.say, aspect: b.dataset.extend ? $("ratio").value : undefined }));
  }
  let searching = null;
  $("conv-search").addEventListener("input", () => {
    clearTimeout(searching);
    searching = setTimeout(() => search().catch(showError), 150);
  });
}

wire();
render();
checkStatus();
setInterval(checkStatus, 15000);
start();
