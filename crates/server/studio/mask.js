// The mask brush: paint on a canvas over the picture (at the picture's own pixels), with a
// brush size, a feather (soft edge), an eraser and invert. Exported as an OpenAI mask: a PNG
// the picture's size whose transparent pixels are the area to repaint.

export class MaskBrush {
  constructor(canvas, img) {
    this.canvas = canvas;
    this.img = img;
    this.ctx = canvas.getContext("2d", { willReadFrequently: true });
    this.size = 40;
    this.feather = 6;
    this.eraser = false;
    this.onchange = () => {};
    this.drawing = false;
    this.last = null;
    canvas.addEventListener("pointerdown", (e) => this.down(e));
    canvas.addEventListener("pointermove", (e) => this.move(e));
    for (const t of ["pointerup", "pointercancel", "pointerleave"]) canvas.addEventListener(t, () => this.up());
  }

  /** Sizes the canvas to the picture and lays it over the displayed image. */
  attach() {
    const { naturalWidth: w, naturalHeight: h } = this.img;
    if (this.canvas.width !== w || this.canvas.height !== h) {
      this.canvas.width = w;
      this.canvas.height = h;
    }
    this.place();
  }

  place() {
    const s = this.canvas.style;
    s.left = `${this.img.offsetLeft}px`;
    s.top = `${this.img.offsetTop}px`;
    s.width = `${this.img.clientWidth}px`;
    s.height = `${this.img.clientHeight}px`;
  }

  scale() {
    return this.canvas.width / Math.max(1, this.canvas.getBoundingClientRect().width);
  }

  at(e) {
    const r = this.canvas.getBoundingClientRect();
    const k = this.scale();
    return { x: (e.clientX - r.left) * k, y: (e.clientY - r.top) * k };
  }

  down(e) {
    e.preventDefault();
    this.canvas.setPointerCapture(e.pointerId);
    this.drawing = true;
    this.last = this.at(e);
    this.dab(this.last);
  }

  move(e) {
    if (!this.drawing) return;
    const p = this.at(e);
    const d = Math.hypot(p.x - this.last.x, p.y - this.last.y);
    const step = Math.max(1, (this.size * this.scale()) / 6);
    for (let t = step; t <= d; t += step) {
      this.dab({ x: this.last.x + ((p.x - this.last.x) * t) / d, y: this.last.y + ((p.y - this.last.y) * t) / d });
    }
    this.dab(p);
    this.last = p;
  }

  up() {
    if (this.drawing) {
      this.drawing = false;
      this.onchange();
    }
  }

  /** One round dab: solid inside, fading to nothing over the feather. */
  dab(p) {
    const k = this.scale();
    const r = (this.size * k) / 2;
    const f = Math.min(r, this.feather * k);
    const g = this.ctx.createRadialGradient(p.x, p.y, Math.max(0, r - f), p.x, p.y, r);
    g.addColorStop(0, "rgba(255,64,64,1)");
    g.addColorStop(1, "rgba(255,64,64,0)");
    this.ctx.globalCompositeOperation = this.eraser ? "destination-out" : "source-over";
    this.ctx.fillStyle = g;
    this.ctx.beginPath();
    this.ctx.arc(p.x, p.y, r, 0, Math.PI * 2);
    this.ctx.fill();
    this.ctx.globalCompositeOperation = "source-over";
  }

  clear() {
    this.ctx.clearRect(0, 0, this.canvas.width, this.canvas.height);
    this.onchange();
  }

  invert() {
    const { width: w, height: h } = this.canvas;
    const d = this.ctx.getImageData(0, 0, w, h);
    for (let i = 0; i < d.data.length; i += 4) {
      d.data[i] = 255;
      d.data[i + 1] = 64;
      d.data[i + 2] = 64;
      d.data[i + 3] = 255 - d.data[i + 3];
    }
    this.ctx.putImageData(d, 0, 0);
    this.onchange();
  }

  /** Share of the picture under the mask (0..1, soft pixels counted by their weight). */
  coverage() {
    const { width: w, height: h } = this.canvas;
    if (!w || !h) return 0;
    const d = this.ctx.getImageData(0, 0, w, h).data;
    let s = 0;
    for (let i = 3; i < d.length; i += 4) s += d[i];
    return s / (255 * w * h);
  }

  /** The OpenAI mask: transparent where painted, opaque elsewhere. */
  async toBlob() {
    const { width: w, height: h } = this.canvas;
    const src = this.ctx.getImageData(0, 0, w, h);
    const out = document.createElement("canvas");
    out.width = w;
    out.height = h;
    const octx = out.getContext("2d");
    const d = octx.createImageData(w, h);
    for (let i = 0; i < d.data.length; i += 4) d.data[i + 3] = 255 - src.data[i + 3];
    octx.putImageData(d, 0, 0);
    return new Promise((ok) => out.toBlob(ok, "image/png"));
  }
}
