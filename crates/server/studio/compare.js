// Before/after: one picture over the other, cut by a slider; or both side by side.

export function renderCompare(root, before, after, sideBySide) {
  root.replaceChildren();
  root.classList.toggle("side", sideBySide);
  const a = figure(before, "Before");
  const b = figure(after, "After");
  if (sideBySide) {
    root.append(a, b);
    return;
  }
  const wrap = document.createElement("div");
  wrap.className = "slider-wrap";
  b.classList.add("under");
  a.classList.add("over");
  const range = document.createElement("input");
  range.type = "range";
  range.min = "0";
  range.max = "100";
  range.value = "50";
  range.className = "compare-range";
  range.setAttribute("aria-label", "Before / after");
  const line = document.createElement("div");
  line.className = "compare-line";
  const set = () => {
    a.style.clipPath = `inset(0 ${100 - Number(range.value)}% 0 0)`;
    line.style.left = `${range.value}%`;
  };
  range.addEventListener("input", set);
  set();
  wrap.append(b, a, line, range);
  root.append(wrap);
}

function figure(v, label) {
  const f = document.createElement("figure");
  const img = document.createElement("img");
  img.src = v.url;
  img.alt = `${label}: version ${v.version}`;
  const cap = document.createElement("figcaption");
  cap.textContent = `${label} · v${v.version}`;
  f.append(img, cap);
  return f;
}
