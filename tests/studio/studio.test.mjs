// plantain studio in Debian's chromium, driven by playwright-core: run by tests/studio/run.sh,
// which starts `plantain serve` (plantain-nano, one API key) and sets PLANTAIN_URL,
// PLANTAIN_KEY, PLANTAIN_PID, CHROMIUM and STUDIO_SHOTS. The tests run in order and share one
// browser profile: each builds on the conversation the one before made.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { chromium } from "playwright-core";

const URL = process.env.PLANTAIN_URL;
const KEY = process.env.PLANTAIN_KEY;
const SHOTS = process.env.STUDIO_SHOTS;
const LAPTOP = { width: 1440, height: 900 };
const PHONE = { width: 390, height: 844 };
const JOB = 120_000;
let ctx;
let page;
let profile;

before(async () => {
  assert.ok(URL && KEY, "run through tests/studio/run.sh (PLANTAIN_URL and PLANTAIN_KEY)");
  profile = fs.mkdtempSync(path.join(os.tmpdir(), "studio-chromium-"));
  ctx = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    viewport: LAPTOP,
    acceptDownloads: true,
    args: [
      "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ],
  });
  page = ctx.pages()[0] || (await ctx.newPage());
  page.on("pageerror", (e) => console.error("page error:", e));
});

after(async () => {
  await ctx?.close();
  fs.rmSync(profile, { recursive: true, force: true });
});

async function shot(name) {
  if (SHOTS) await page.screenshot({ path: path.join(SHOTS, `${name}.png`) });
}

async function api(p) {
  const r = await fetch(`${URL}${p}`, { headers: { "x-goog-api-key": KEY } });
  assert.equal(r.status, 200, `${p}: ${r.status}`);
  return r.json();
}

async function send(text) {
  await page.fill("#prompt", text);
  await page.click("#send-btn");
}

/** Waits until the conversation shows `n` model pictures and the composer is free again. */
async function pictures(n) {
  await page.waitForFunction((n) => document.querySelectorAll(".msg.model img.result").length === n && !document.getElementById("send-btn").hidden, n, { timeout: JOB });
}

async function nodes() {
  return page.$$eval("#tree .node", (ns) => ns.map((n) => n.querySelector("b").textContent));
}

/** Records every progress text and whether a preview image was shown, from now on. */
async function watch() {
  await page.evaluate(() => {
    window.__seen = { steps: [], preview: false };
    const note = () => {
      const t = document.getElementById("progress-text").textContent;
      if (/^step \d+ of \d+/.test(t) && window.__seen.steps.at(-1) !== t) window.__seen.steps.push(t);
      if (document.querySelector(".msg.pending img.preview")) window.__seen.preview = true;
    };
    new MutationObserver(note).observe(document.body, { subtree: true, childList: true, characterData: true, attributes: true });
  });
}

test("the page loads from the binary with no key and asks for one", async () => {
  const res = await page.goto(URL);
  assert.equal(res.status(), 200);
  assert.match(res.headers()["content-security-policy"], /default-src 'none'/);
  await page.waitForSelector("#banner:not([hidden])");
  assert.match(await page.textContent("#banner-text"), /refused the API key/);
  await page.click("#banner-action");
  await page.fill("#key-input", KEY);
  await page.click("#key-save");
  await page.waitForSelector("#ratio option", { state: "attached" });
  await page.waitForSelector("#banner", { state: "hidden" });
  const ratios = await page.$$eval("#ratio option", (o) => o.map((x) => x.value));
  const settings = await api("/v1/image-settings");
  assert.deepEqual(ratios, settings.aspectRatios, "the ratios come from the server's table");
  await page.selectOption("#ratio", "16:9");
  await page.selectOption("#size", "512");
  const [w, h] = settings.pixels["16:9"]["512"];
  assert.equal(await page.textContent("#pixels"), `${w} × ${h} px`);
});

test("a generation shows its progress, a preview and the picture", async () => {
  await page.selectOption("#ratio", "1:1");
  await page.selectOption("#size", "512");
  await page.fill("#seed", "7");
  await watch();
  await send("a red circle on a blue background");
  await pictures(1);
  const seen = await page.evaluate(() => window.__seen);
  // The page may take several progress events in one read: every step it shows is one of 6,
  // in order within an attempt of the plan → check → correct loop.
  const ks = seen.steps.map((t) => /^step (\d+) of 6 \(image 1 of 1(?:, attempt (\d+))?\)$/.exec(t)).map((m) => m && [Number(m[2] || 1), Number(m[1])]);
  const ordered = (x, i) => x && x[1] >= 1 && x[1] <= 6 && (i === 0 || x[0] > ks[i - 1][0] || (x[0] === ks[i - 1][0] && x[1] > ks[i - 1][1]));
  assert.ok(ks.length >= 1 && ks.every(ordered), `progress seen: ${seen.steps}`);
  assert.ok(seen.preview, "a partial preview was shown");
  assert.deepEqual(await nodes(), ["v1"]);
  // The seed asked for, or the loop's next one when it kept a later attempt: as recorded, every digit.
  const id = await page.$eval("#conv-list li.active", (li) => li.dataset.id);
  const [v1] = (await api(`/v1/conversations/${id}`)).versions;
  assert.equal(await page.textContent("#version-label"), `Version 1 · 512×512 · seed ${v1.seed}`);
  if (!seen.steps.some((t) => /attempt [2-9]/.test(t))) assert.equal(v1.seed, "7");
  await page.click(".msg.model .plan summary");
  assert.match(await page.textContent(".msg.model .plan pre"), /512x512/);
  await shot("generate");
});

test("a two-turn edit makes versions 2 and 3, each the child of the one before", async () => {
  await send("make it warmer");
  await pictures(2);
  await send("make it brighter");
  await pictures(3);
  assert.deepEqual(await nodes(), ["v1", "v2", "v3"]);
  const id = await page.$eval("#conv-list li.active", (li) => li.dataset.id);
  const conv = await api(`/v1/conversations/${id}`);
  assert.equal(conv.versions.length, 3);
  assert.equal(conv.versions[1].parentId, conv.versions[0].id);
  assert.equal(conv.versions[2].parentId, conv.versions[1].id);
  assert.equal(conv.versions[2].params.instruction, "make it brighter");
  const srcs = await page.$$eval(".msg.model img.result", (is) => is.map((i) => i.src));
  assert.equal(new Set(srcs).size, 3, "three different pictures");
  await page.click(".msg.model:last-child .plan summary");
  assert.match(await page.textContent(".msg.model:last-child .plan pre"), /changed/);
});

test("branching from version 2 keeps version 3, and compare shows both", async () => {
  await page.click('#tree .node:has(b:text-is("v2"))');
  assert.match(await page.textContent("#version-label"), /Version 2 .*branches from here/);
  await send("make it cooler");
  await pictures(4);
  const id = await page.$eval("#conv-list li.active", (li) => li.dataset.id);
  const conv = await api(`/v1/conversations/${id}`);
  assert.equal(conv.versions.length, 4, "nothing lost by branching");
  const [, v2, , v3b] = conv.versions;
  assert.equal(v3b.parentId, v2.id, "the new version is a child of version 2");
  assert.equal(await page.textContent("#tree .tag"), "2 branches");
  await page.click("#compare-btn");
  await page.waitForSelector(".compare .slider-wrap img");
  const caps = await page.$$eval(".compare figcaption", (c) => c.map((x) => x.textContent));
  assert.deepEqual(caps.sort(), ["After · v3", "Before · v2"]);
  const range = await page.$(".compare-range");
  await range.evaluate((r) => {
    r.value = "30";
    r.dispatchEvent(new Event("input"));
  });
  assert.equal(await page.$eval(".compare .over", (f) => f.style.clipPath), "inset(0px 70% 0px 0px)");
  await shot("compare");
  await page.check("#compare-side");
  await page.waitForSelector(".compare.side figure + figure");
  await page.click("#compare-btn");
  assert.ok(await page.$eval("#compare", (c) => c.hidden));
});

test("undo and redo move through the versions", async () => {
  await page.click("#stage");
  await page.keyboard.press("Control+z");
  assert.match(await page.textContent("#version-label"), /^Version 2/);
  await page.keyboard.press("Control+Shift+z");
  assert.match(await page.textContent("#version-label"), /^Version 3/);
});

test("download as PNG, JPEG and WebP", async () => {
  const magic = { "image/png": [0x89, 0x50], "image/jpeg": [0xff, 0xd8], "image/webp": [0x52, 0x49] };
  for (const [type, bytes] of Object.entries(magic)) {
    await page.selectOption("#download-fmt", type);
    const [dl] = await Promise.all([page.waitForEvent("download"), page.click("#download-btn")]);
    const file = await dl.path();
    const head = [...fs.readFileSync(file).subarray(0, 2)];
    assert.deepEqual(head, bytes, `${type}: ${dl.suggestedFilename()}`);
    assert.match(dl.suggestedFilename(), /^plantain-[0-9a-f]{8}-v3\.(png|jpg|webp)$/);
  }
});

/** A PNG drawn in the page: a flat background with one disc (what the planner's world reads). */
async function drawn(bg, fg, x) {
  const b64 = await page.evaluate(([bg, fg, x]) => {
    const c = document.createElement("canvas");
    c.width = 256;
    c.height = 256;
    const g = c.getContext("2d");
    g.fillStyle = bg;
    g.fillRect(0, 0, 256, 256);
    g.fillStyle = fg;
    g.beginPath();
    g.arc(x, 140, 48, 0, Math.PI * 2);
    g.fill();
    return c.toDataURL("image/png").split(",")[1];
  }, [bg, fg, x]);
  return Buffer.from(b64, "base64");
}

test("two uploads (picker, then drop) and a paste are numbered references; a fusion makes a new conversation", async () => {
  await page.click("#new-btn");
  const one = await drawn("#d8d8d8", "#e0b000", 128);
  const two = await drawn("#4a90d9", "#2e8b57", 200);
  await page.setInputFiles("#file-input", { name: "subject.png", mimeType: "image/png", buffer: one });
  // Drag and drop, as a file dragged from the desktop arrives.
  await page.evaluate(async (b64) => {
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    const dt = new DataTransfer();
    dt.items.add(new File([bytes], "scene.png", { type: "image/png" }));
    window.dispatchEvent(new DragEvent("dragenter", { dataTransfer: dt }));
    window.dispatchEvent(new DragEvent("drop", { dataTransfer: dt, cancelable: true }));
  }, two.toString("base64"));
  assert.deepEqual(await page.$$eval("#attachments figcaption", (f) => f.map((x) => x.textContent)), ["1", "2"]);
  // Paste adds a third; remove it again.
  await page.evaluate(async (b64) => {
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    const dt = new DataTransfer();
    dt.items.add(new File([bytes], "pasted.png", { type: "image/png" }));
    document.dispatchEvent(new ClipboardEvent("paste", { clipboardData: dt, cancelable: true }));
  }, one.toString("base64"));
  assert.equal(await page.$$eval("#attachments figure", (f) => f.length), 3);
  await page.click("#attachments figure:nth-child(3) .remove");
  assert.equal(await page.$$eval("#attachments figure", (f) => f.length), 2);
  await shot("uploads");
  await send("put the subject of image 1 into image 2, on the left");
  await pictures(1);
  assert.deepEqual(await page.$$eval(".msg.user .refs figcaption", (f) => f.map((x) => x.textContent)), ["1", "2"]);
  assert.deepEqual(await nodes(), ["v1"]);
  assert.ok(await page.$eval("#attachments", (a) => a.hidden), "the references were sent");
  const convs = await api("/v1/conversations");
  assert.equal(convs.conversations.length, 2, "the fusion is a conversation of its own");
  assert.equal(convs.conversations[0].params.inputImages.length, 2);
  await shot("fusion");
});

test("the mask brush paints, erases and inverts, and repaints only the mask as a new version", async () => {
  await page.click("#mask-btn");
  const box = await (await page.$("#mask-canvas")).boundingBox();
  assert.ok(box.width > 100, "the canvas lies over the picture");
  await page.mouse.move(box.x + box.width * 0.2, box.y + box.height * 0.3);
  await page.mouse.down();
  await page.mouse.move(box.x + box.width * 0.5, box.y + box.height * 0.35, { steps: 8 });
  await page.mouse.up();
  const cover = async () => Number((await page.textContent("#mask-cover")).replace(/\D/g, ""));
  const painted = await cover();
  assert.ok(painted > 0 && painted < 50, `painted ${painted}%`);
  await page.click("#mask-invert");
  assert.ok(Math.abs((await cover()) - (100 - painted)) <= 1, "invert");
  await page.click("#mask-invert");
  await page.check("#brush-eraser");
  await page.mouse.move(box.x + box.width * 0.2, box.y + box.height * 0.3);
  await page.mouse.down();
  await page.mouse.move(box.x + box.width * 0.3, box.y + box.height * 0.32, { steps: 4 });
  await page.mouse.up();
  const erased = await cover();
  assert.ok(erased < painted, `the eraser took some away (${painted}% → ${erased}%)`);
  await page.uncheck("#brush-eraser");
  await page.fill("#mask-prompt", "a yellow square");
  await shot("mask");
  await page.click("#mask-apply");
  await pictures(2);
  assert.deepEqual(await nodes(), ["v1", "v2"]);
  const id = await page.$eval("#conv-list li.active", (li) => li.dataset.id);
  const conv = await api(`/v1/conversations/${id}`);
  assert.equal(conv.versions[1].parentId, conv.versions[0].id, "the repaint is recorded as the child of the version it masked");
  assert.equal(conv.versions[1].params.api, "openai");
});

async function cancelled() {
  const m = await (await fetch(`${URL}/metrics`)).text();
  return Number(/^plantain_jobs_cancelled_total (\d+)/m.exec(m)[1]);
}

test("cancel stops a running generation on the server too", async () => {
  const before = await cancelled();
  await page.click("#new-btn");
  await page.selectOption("#model", "plantain-nano-slow");
  await watch();
  await send("a green square");
  await page.waitForFunction(() => window.__seen.steps.length > 0, null, { timeout: JOB });
  await page.click("#cancel-btn");
  await page.waitForSelector(".msg.error");
  assert.equal(await page.textContent(".msg.error"), "Cancelled — nothing was made.");
  assert.ok(!(await page.isHidden("#send-btn")), "the composer is free again");
  assert.equal(await page.inputValue("#prompt"), "a green square", "the prompt is kept to send again");
  const t0 = Date.now();
  while ((await cancelled()) <= before && Date.now() - t0 < 30_000) await new Promise((r) => setTimeout(r, 200));
  assert.ok((await cancelled()) > before, "the server cancelled the job when the client left");
  await page.selectOption("#model", "plantain-nano");
});

test("errors: an oversize or unsupported upload and a wrong key are shown; the conversation is kept", async () => {
  await page.click("#conv-list li:nth-child(2) .conv");
  await pictures(4);
  await page.setInputFiles("#file-input", [
    { name: "huge.png", mimeType: "image/png", buffer: Buffer.alloc(2_500_000, 1) },
    { name: "anim.gif", mimeType: "image/gif", buffer: Buffer.from("GIF89a") },
  ]);
  const text = await page.textContent("#banner-text");
  assert.match(text, /huge\.png is 2\.4 MB; this server takes images up to 1\.9 MB/);
  assert.match(text, /anim\.gif is not a PNG, JPEG or WebP image/);
  assert.ok(await page.$eval("#attachments", (a) => a.hidden), "nothing was added");
  await page.click("#key-btn");
  await page.fill("#key-input", "plk_wrong");
  await page.click("#key-save");
  await page.waitForSelector("#banner:not([hidden])");
  await send("make it darker");
  await page.waitForSelector(".msg.error");
  assert.match(await page.textContent("#banner-text"), /refused the API key/);
  assert.equal(await page.$$eval(".msg.model img.result", (i) => i.length), 4, "the conversation is still there");
  await shot("error");
  await page.click("#banner-action");
  await page.fill("#key-input", KEY);
  await page.click("#key-save");
  await page.waitForSelector("#conv-list li");
});

test("on a phone's width: one column, conversations in a drawer", async () => {
  await page.setViewportSize(PHONE);
  await pictures(4);
  await page.waitForTimeout(400); // the drawer's transition
  assert.ok(await page.isVisible("#menu-btn"));
  const side = await (await page.$("#sidebar")).boundingBox();
  assert.ok(side.x + side.width <= 0, "the drawer is closed");
  const chat = await (await page.$(".chat")).boundingBox();
  assert.ok(chat.width <= PHONE.width, "no horizontal overflow");
  await shot("phone");
  await page.evaluate(() => window.scrollTo(0, document.body.scrollHeight));
  const composer = await (await page.$("#composer")).boundingBox();
  assert.ok(composer.y + composer.height <= PHONE.height + 1, "the composer stays on screen");
  await shot("phone-chat");
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.click("#menu-btn");
  await page.waitForTimeout(400);
  const open = await (await page.$("#sidebar")).boundingBox();
  assert.equal(open.x, 0, "the drawer opened");
  await shot("phone-drawer");
  await page.mouse.click(PHONE.width - 20, PHONE.height / 2);
  await page.waitForTimeout(400);
  assert.ok(!(await page.evaluate(() => document.body.classList.contains("drawer-open"))), "a click outside closes it");
  await page.setViewportSize(LAPTOP);
});

test("one-click edits: blur the background, then extend to the chosen ratio, each a child version", async () => {
  await pictures(4);
  const id = await page.$eval("#conv-list li.active", (li) => li.dataset.id);
  const before = (await api(`/v1/conversations/${id}`)).versions.length;
  await page.fill("#prompt", "half-written words");
  const parentLabel = await page.textContent("#version-label");
  await page.click('#quick button[data-say="blur the background"]');
  await pictures(5);
  let conv = await api(`/v1/conversations/${id}`);
  assert.equal(conv.versions.length, before + 1);
  const blurred = conv.versions.at(-1);
  assert.equal(blurred.params.instruction, "blur the background");
  const parent = conv.versions.find((v) => v.id === blurred.parentId);
  assert.ok(parent && parentLabel.startsWith(`Version ${parent.version} `), "the child of the version shown");
  assert.equal(await page.inputValue("#prompt"), "half-written words", "a one-click edit keeps what was being typed");
  await page.selectOption("#ratio", "16:9");
  await page.click('#quick button[data-extend="1"]');
  await pictures(6);
  conv = await api(`/v1/conversations/${id}`);
  const wide = conv.versions.at(-1);
  assert.equal(wide.parentId, blurred.id);
  assert.equal(wide.params.instruction, "extend the scene");
  assert.equal(wide.height, blurred.height, "the picture kept, the canvas widened");
  assert.ok(Math.abs(wide.width / wide.height - 16 / 9) < 0.01, `${wide.width}x${wide.height} is 16:9`);
  await page.selectOption("#ratio", "1:1");
  await page.fill("#prompt", "");
});

test("one-click upscale: Real-ESRGAN to the 2K pixels of the picture's ratio, a child version with its fidelity", async () => {
  const id = await page.$eval("#conv-list li.active", (li) => li.dataset.id);
  const before = (await api(`/v1/conversations/${id}`)).versions;
  const parent = before.at(-1);
  const settings = await api("/v1/image-settings");
  const ratio = Object.keys(settings.pixels).reduce((a, r) => {
    const [w, h] = r.split(":").map(Number);
    const [aw, ah] = a.split(":").map(Number);
    return Math.abs(w / h - parent.width / parent.height) < Math.abs(aw / ah - parent.width / parent.height) ? r : a;
  });
  await page.click('#quick button[data-say="upscale to 2K"]');
  await pictures(7);
  const conv = await api(`/v1/conversations/${id}`);
  assert.equal(conv.versions.length, before.length + 1);
  const big = conv.versions.at(-1);
  assert.equal(big.parentId, parent.id);
  assert.equal(big.params.instruction, "upscale to 2K");
  assert.deepEqual([big.width, big.height], settings.pixels[ratio]["2K"], `${big.width}x${big.height} is ${ratio} at 2K`);
  assert.match(await page.textContent("#version-label"), new RegExp(`${big.width}×${big.height}`));
  const plan = (await page.$$eval(".msg.model .plan pre", (ps) => ps.map((p) => p.textContent))).at(-1);
  assert.match(plan, /operation: upscale/);
  assert.match(plan, /shrunk back to \d+x\d+.*[\d.]+ dB PSNR/);
});

test("one-click remove background: a transparent PNG, the child of the version shown", async () => {
  const id = await page.$eval("#conv-list li.active", (li) => li.dataset.id);
  const before = (await api(`/v1/conversations/${id}`)).versions;
  // Back to the picture before the upscale (the one extended to 16:9).
  const wide = before.at(-2);
  await page.click(`#tree .node:has(b:text-is("v${wide.version}"))`);
  await page.click('#quick button[data-say="remove the background"]');
  await pictures(8);
  const conv = await api(`/v1/conversations/${id}`);
  const cut = conv.versions.at(-1);
  assert.equal(cut.parentId, wide.id);
  assert.deepEqual([cut.width, cut.height], [wide.width, wide.height]);
  const bytes = new Uint8Array(await (await fetch(cut.url, { headers: { "x-goog-api-key": KEY } })).arrayBuffer());
  // PNG's IHDR colour type (byte 25): 6 is RGBA.
  assert.equal(bytes[25], 6, "an alpha channel");
  const plan = (await page.$$eval(".msg.model .plan pre", (ps) => ps.map((p) => p.textContent))).at(-1);
  assert.match(plan, /operation: cut out/);
  await shot("cut-out");
});

test("the provenance panel shows the server's own verification of the version shown", async () => {
  const facts = async () => {
    await page.waitForFunction(() => !/verifying/.test(document.getElementById("prov-verdict").textContent), null, { timeout: JOB });
    return Object.fromEntries(await page.$$eval("#prov-facts dt", (ds) => ds.map((d) => [d.textContent, d.nextElementSibling.textContent])));
  };
  // The extended version (an edit): signed, with a watermark; outside its region the pixels,
  // watermark included, are its parent's.
  await page.click("#stage");
  await page.keyboard.press("p");
  let f = await facts();
  assert.match(f["Watermark"], /^found \(confidence \d+%\)$/);
  assert.equal(f["Signature"], "valid");
  assert.equal(f["File hash"], "matches");
  assert.match(f["Watermark ↔ manifest"], /^(the same image|an earlier version's mark)/);
  // The same report a client gets from POST /v1/verify with the stored bytes.
  const src = await page.$eval("#current-img", (i) => i.src);
  const bytes = Buffer.from(await (await fetch(src)).arrayBuffer());
  const r = await (await fetch(`${URL}/v1/verify`, { method: "POST", body: bytes, headers: { "x-goog-api-key": KEY, "content-type": "image/png" } })).json();
  assert.equal(await page.textContent("#prov-verdict"), r.verdict);
  // Version 1, drawn from words: its watermark and its manifest name the same image.
  await page.click('#tree .node:has(b:text-is("v1"))');
  f = await facts();
  assert.equal(f["Watermark ↔ manifest"], "the same image");
  assert.equal(f["Content Credentials"], r.manifest.state);
  await shot("provenance");
  await page.click("#stage");
  await page.keyboard.press("p");
  assert.ok(await page.$eval("#prov-tools", (t) => t.hidden), "p closes it again");
});

test("the gallery is searched by prompt; a version's settings are used again; shortcuts", async () => {
  await page.keyboard.press("/");
  assert.equal(await page.evaluate(() => document.activeElement.id), "conv-search");
  const visible = () => page.$$eval("#conv-list li", (ls) => ls.filter((l) => !l.hidden).length);
  const all = await visible();
  assert.ok(all >= 2, `${all} conversations`);
  await page.keyboard.type("subject of image");
  await page.waitForFunction(() => [...document.querySelectorAll("#conv-list li")].filter((l) => !l.hidden).length === 1);
  assert.match(await page.textContent("#conv-list li:not([hidden])"), /subject of image 1/);
  await page.fill("#conv-search", "a zebra on the moon");
  await page.waitForSelector("#search-empty:not([hidden])");
  await page.fill("#conv-search", "");
  await page.waitForFunction((n) => [...document.querySelectorAll("#conv-list li")].filter((l) => !l.hidden).length === n, all);
  // Settings recall from the conversation's first picture.
  const id = await page.$eval("#conv-list li.active", (li) => li.dataset.id);
  const [v1] = (await api(`/v1/conversations/${id}`)).versions;
  await page.fill("#seed", "");
  await page.selectOption("#ratio", "16:9");
  await page.click(".msg.model:has(img.result) .reuse");
  assert.equal(await page.inputValue("#seed"), v1.seed);
  assert.equal(await page.inputValue("#ratio"), "1:1");
  assert.equal(await page.inputValue("#size"), "512");
  assert.match(await page.textContent("#banner-text"), new RegExp(`seed ${v1.seed}, 1:1, 512`));
  await page.click("#banner-close");
  // Letter shortcuts outside text fields: c compares, ? lists the keys.
  await page.click("#stage");
  await page.keyboard.press("c");
  assert.ok(!(await page.$eval("#compare-tools", (t) => t.hidden)), "c opens compare");
  await page.keyboard.press("c");
  await page.keyboard.press("?");
  assert.ok(await page.$eval("#keys-dialog", (d) => d.open));
  await shot("shortcuts");
  await page.keyboard.press("Escape");
  assert.ok(!(await page.$eval("#keys-dialog", (d) => d.open)));
});

test("a server that went away is said so; the conversation is kept", async () => {
  const pid = Number(process.env.PLANTAIN_PID);
  assert.ok(pid > 0, "PLANTAIN_PID");
  process.kill(pid, "SIGKILL");
  await new Promise((r) => setTimeout(r, 500));
  await send("make it darker");
  await page.waitForSelector(".msg.error");
  assert.match(await page.textContent("#banner-text"), /server is not answering.*conversation is kept/);
  assert.equal(await page.$$eval(".msg.model img.result", (i) => i.length), 8);
});
