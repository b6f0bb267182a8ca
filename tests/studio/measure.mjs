// Times the studio as a person uses it: press Send, then the first progress shown and the
// finished picture, N times with plantain-nano at 512x512; and the bytes transferred on the
// first load. Run by `STUDIO_MEASURE=N bash tests/studio/run.sh` (which also times the same
// request through the google-genai SDK in the same run); prints one JSON line.
import { chromium } from "playwright-core";

const URL = process.env.PLANTAIN_URL;
const KEY = process.env.PLANTAIN_KEY;
const RUNS = Number(process.env.STUDIO_MEASURE || 5);

const ctx = await chromium.launchPersistentContext("", {
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  viewport: { width: 1440, height: 900 },
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"],
});
const page = ctx.pages()[0] || (await ctx.newPage());
await page.addInitScript((k) => localStorage.setItem("plantain.studio.apiKey", k), KEY);

// First load: every response until the page is idle (document, modules, styles, icon, the API's
// settings and list), as sent on the wire (headers and body).
let bytes = 0;
let files = 0;
page.on("requestfinished", async (req) => {
  const s = await req.sizes().catch(() => null);
  if (s) {
    bytes += s.responseHeadersSize + s.responseBodySize;
    files++;
  }
});
await page.goto(URL, { waitUntil: "networkidle" });
await page.waitForSelector("#ratio option", { state: "attached" });
const firstLoad = { bytes, files };
page.removeAllListeners("requestfinished");

await page.selectOption("#ratio", "1:1");
await page.selectOption("#size", "512");
const runs = [];
for (let i = 0; i < RUNS; i++) {
  await page.click("#new-btn");
  await page.fill("#seed", String(100 + i));
  await page.fill("#prompt", "a red circle on a blue background");
  const t = await page.evaluate(
    () =>
      new Promise((done) => {
        // The last run's "step n of n" is still in the (hidden) progress line: clear it.
        document.getElementById("progress-text").textContent = "";
        const t0 = performance.now();
        let first = null;
        const obs = new MutationObserver(() => {
          if (first === null && /^step \d+ of \d+/.test(document.getElementById("progress-text").textContent)) first = performance.now() - t0;
          if (document.querySelector(".msg.model img.result") && !document.getElementById("send-btn").hidden) {
            obs.disconnect();
            const img = document.querySelector(".msg.model img.result");
            const end = () => done({ firstProgress: first, picture: performance.now() - t0 });
            if (img.complete && img.naturalWidth) end();
            else img.addEventListener("load", end, { once: true });
          }
        });
        obs.observe(document.body, { subtree: true, childList: true, characterData: true, attributes: true });
        document.getElementById("send-btn").click();
      }),
  );
  runs.push(t);
}
await ctx.close();
console.log(JSON.stringify({ firstLoad, runs }));
