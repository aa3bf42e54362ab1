// maskmagic GradientInspector front end (anywidget ESM; no imports, no network).
//
// State (targets, per-layer numbers, top connections, losses, drift) arrives as traits; each
// layer's heatmap arrives as a "tile" custom message: a JSON header and little-endian buffers
// named in header.buffers (see maskmagic/widgets/inspector/tiles.py). Switching the view or the
// colour scale redraws from the tiles already here; zooming and stepping ask the kernel.
// Clicking a cell (i, j) of a conv layer asks for that pair's kernel window: the kernel answers
// with a "window" message (maskmagic/widgets/inspector/windows.py) drawn under the heatmap.

const MASKED = 1, SOME_MASKED = 2, FROZEN = 4, SOME_FROZEN = 8;
const VIEW_PX = 512; // largest side of a heatmap, CSS px
const MAX_CELL = 32;
const WINDOW_PX = 256; // largest side of a kernel window, CSS px
const WINDOW_NUMBERS = 64; // windows of at most this many taps also show their values as numbers
const VIEWS = [["gradient", "gradient"], ["would_be", "would-be"], ["update", "op's update"],
  ["projected", "projected update"]];
const KEYS = {
  gradient: ["g", "bias_g"], would_be: ["wb", "bias_wb"], update: ["upd", "bias_upd"],
  projected: ["prj", "bias_prj"], // an op with hold=: what its optimizer sees (tiles carry "prj")
};

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function fmt(v) {
  if (v === null || v === undefined || Number.isNaN(v)) return "—";
  if (v === 0) return "0";
  const a = Math.abs(v);
  return a < 1e-3 || a >= 1e4 ? v.toExponential(3) : v.toPrecision(4);
}

// The colours come from Python (maskmagic/widgets/palette.py, the model's "palette").
function colour(t, anchors) {
  const p = (Math.max(-1, Math.min(1, t)) + 1) * 2;
  const lo = Math.min(Math.floor(p), 3);
  const f = p - lo;
  const a = anchors[lo], b = anchors[lo + 1];
  return [a[0] + (b[0] - a[0]) * f, a[1] + (b[1] - a[1]) * f, a[2] + (b[2] - a[2]) * f];
}

function scaler(scale, vmax) {
  if (!(vmax > 0)) return () => 0;
  if (scale === "symlog") {
    const c = vmax * 1e-3, norm = Math.log10(1 + vmax / c);
    return (v) => Math.sign(v) * Math.log10(1 + Math.abs(v) / c) / norm;
  }
  return (v) => v / vmax;
}

function maxAbs(values) {
  let m = 0;
  if (!values) return m;
  for (let k = 0; k < values.length; k++) {
    const a = Math.abs(values[k]);
    if (a > m && Number.isFinite(a)) m = a;
  }
  return m;
}

function asDataView(b) {
  if (b instanceof DataView) return b;
  if (b instanceof ArrayBuffer) return new DataView(b);
  return new DataView(b.buffer, b.byteOffset, b.byteLength);
}

function decode(header, buffers) {
  const arrays = {};
  header.buffers.forEach((name, k) => {
    const dv = buffers[k];
    const bytes = dv.buffer.slice(dv.byteOffset, dv.byteOffset + dv.byteLength);
    arrays[name] = name.endsWith("flags") ? new Uint8Array(bytes) : new Float32Array(bytes);
  });
  return arrays;
}

// ----------------------------------------------------------------------- one layer

class LayerPanel {
  constructor(view, index) {
    this.view = view;
    this.index = index;
    this.tile = null;
    this.root = el("div", "mm-insp-layer");
    this.root.dataset.layer = String(index);
    this.head = el("div", "mm-insp-head");
    this.stats = el("div", "mm-insp-stats");
    this.wrap = el("div", "mm-insp-canvas-wrap");
    this.canvas = el("canvas", "mm-insp-canvas");
    this.tip = el("div", "mm-insp-tip");
    this.tip.hidden = true;
    this.wrap.append(this.canvas, this.tip);
    this.foot = el("div", "mm-insp-foot");
    this.legend = el("canvas", "mm-insp-legend");
    this.legend.width = 120;
    this.legend.height = 10;
    this.range = el("span", "mm-insp-range");
    this.zoomInfo = el("span", "mm-insp-zoominfo");
    this.back = el("button", "mm-insp-btn mm-insp-overview", "overview");
    this.back.hidden = true;
    this.back.addEventListener("click", () =>
      view.model.send({ type: "zoom", layer: this.index, row: null }));
    this.foot.append(this.legend, this.range, this.zoomInfo, this.back);
    this.windowBox = el("div", "mm-insp-window");
    this.windowBox.hidden = true;
    this.window = null;
    this.root.append(this.head, this.stats, this.wrap, this.foot, this.windowBox);
    this.canvas.addEventListener("mousemove", (e) => this.hover(e));
    this.canvas.addEventListener("mouseleave", () => { this.tip.hidden = true; });
    this.canvas.addEventListener("click", (e) => this.click(e));
  }

  info() { return this.view.model.get("layers")[this.index] || {}; }

  setInfo() {
    const info = this.info();
    this.head.textContent = "";
    this.head.append(
      el("b", "mm-insp-name", info.name),
      el("span", "mm-insp-shape", ` ${info.inputs} inputs × ${info.units} units · ${info.kind}`),
    );
    this.stats.textContent = "";
    const stat = (label, value, cls) => {
      const s = el("span", "mm-insp-stat" + (cls ? " " + cls : ""));
      s.append(el("span", "mm-insp-label", label + " "), el("span", "mm-insp-value", value));
      this.stats.append(s);
      return s;
    };
    stat("‖grad‖", fmt(info.norm));
    stat("zeros", `${(100 * (info.zero_share || 0)).toFixed(1)}%`);
    stat("masked", String(info.masked));
    const ok = info.masked_nonzero === 0 && (info.bias_masked_nonzero || 0) === 0;
    const check = stat("masked with grad ≠ 0", `${info.masked_nonzero}${ok ? " ✓" : " ✗"}`,
      ok ? "mm-insp-ok" : "mm-insp-bad");
    check.classList.add("mm-insp-check");
    if (this.view.model.get("op_name")) stat("frozen", String(info.frozen));
    if (info.bias) stat("‖bias grad‖", fmt(info.bias_norm));
  }

  setTile(header, arrays) {
    this.tile = { header, arrays };
    this.draw();
  }

  cellSize() {
    const h = this.tile.header;
    return Math.max(1, Math.min(MAX_CELL, Math.floor(VIEW_PX / Math.max(h.rows, h.cols))));
  }

  draw() {
    if (!this.tile) return;
    const { header: h, arrays: a } = this.tile;
    const [key, biasKey] = KEYS[this.view.model.get("view")];
    const scale = this.view.model.get("scale");
    const values = a[key], flags = a.flags;
    if (!values) { // a tile without this view (saved before the op had hold=): draw nothing
      this.canvas.width = this.canvas.height = 0;
      this.zoomInfo.textContent = ` no ${key} values in this tile`;
      return;
    }
    const s = this.cellSize();
    this.s = s;
    const hasBias = !!a[biasKey];
    this.biasGap = hasBias ? Math.max(3, Math.round(s / 3)) : 0;
    this.biasH = hasBias ? Math.max(s, 6) : 0;
    const W = h.cols * s, H = h.rows * s + this.biasGap + this.biasH;
    this.canvas.width = W;
    this.canvas.height = H;
    this.canvas.style.width = W + "px";
    this.canvas.style.height = H + "px";
    const ctx = this.canvas.getContext("2d");
    const img = ctx.createImageData(W, H);
    const px = img.data;
    const vmax = maxAbs(values);
    const t = scaler(scale, vmax);
    const overlay = this.view.model.get("view") === "would_be";
    const pal = this.view.model.get("palette");
    const paint = (r0, c0, w, hgt, v, f) => {
      const rgb = colour(t(v), pal.diverging);
      const masked = (f & MASKED) !== 0;
      const frozen = (f & FROZEN) !== 0, someFrozen = (f & SOME_FROZEN) !== 0;
      for (let y = r0; y < r0 + hgt; y++) {
        for (let x = c0; x < c0 + w; x++) {
          let c = rgb;
          if (masked && overlay) c = ((x + y) % 4 === 0) ? pal.hatch_over : rgb;
          else if (masked) c = ((x + y) % 4 === 0) ? pal.hatch : pal.masked;
          if ((frozen || someFrozen) && !masked) {
            const edge = w >= 4 ? (y === r0 || x === c0 || y === r0 + hgt - 1 || x === c0 + w - 1) : true;
            if (edge) c = frozen ? pal.frozen : pal.some_frozen;
            else if (w < 4) c = [c[0] * 0.5, c[1] * 0.5, c[2] * 0.5];
          }
          const k = (y * W + x) * 4;
          px[k] = c[0]; px[k + 1] = c[1]; px[k + 2] = c[2]; px[k + 3] = 255;
        }
      }
    };
    for (let r = 0; r < h.rows; r++) {
      for (let c = 0; c < h.cols; c++) {
        const k = r * h.cols + c;
        paint(r * s, c * s, s, s, values[k], flags[k]);
      }
    }
    if (hasBias) {
      const bv = a[biasKey], bf = a.bias_flags;
      const bt = scaler(scale, maxAbs(bv));
      const y0 = h.rows * s + this.biasGap;
      for (let c = 0; c < h.cols; c++) {
        paintBias(px, W, y0, c * s, s, this.biasH, colour(bt(bv[c]), pal.diverging), bf[c], overlay, pal);
      }
    }
    ctx.putImageData(img, 0, 0);
    this.root.style.maxWidth = `${Math.max(W + 2, 300)}px`;
    this.drawLegend(vmax, scale);
    const info = this.info();
    this.back.hidden = !h.zoomed;
    if (h.zoomed) {
      this.zoomInfo.textContent =
        ` rows ${h.r0}–${h.r0 + h.rows - 1}, cols ${h.c0}–${h.c0 + h.cols - 1} (full resolution)`;
    } else if (h.bh > 1 || h.bw > 1) {
      this.zoomInfo.textContent =
        ` pooled: max |value| of ${h.bh}×${h.bw} blocks; click a block to zoom`;
    } else {
      this.zoomInfo.textContent = info.kind === "conv" ? " click a cell to see its kernel window" : "";
    }
    this.canvas.classList.toggle("mm-insp-pooled", !h.zoomed && (h.bh > 1 || h.bw > 1));
    this.root.classList.toggle("mm-insp-no-wb", !info.would_be);
    this.drawWindow();
  }

  setWindow(header, arrays) {
    this.window = { header, arrays };
    this.drawWindow();
  }

  // The kernel window of one conv pair: its taps in the diverging palette (scaled to the
  // window's own largest |value|), masked taps hatched, and the values as numbers when few.
  drawWindow() {
    if (!this.window) return;
    const { header: h, arrays: a } = this.window;
    const view = this.view.model.get("view");
    const [key] = KEYS[view];
    const values = a[key], flags = a.flags;
    const pal = this.view.model.get("palette");
    const box = this.windowBox;
    if (!values) { box.hidden = true; return; } // a window without this view
    box.textContent = "";
    box.hidden = false;
    box.dataset.i = String(h.i);
    box.dataset.j = String(h.j);
    box.dataset.view = view;
    const label = VIEWS.find((v) => v[0] === view)[1];
    const clipped = h.rows < h.kh || h.cols < h.kw ? ` (first ${h.rows}×${h.cols} shown)` : "";
    box.append(el("div", "mm-insp-window-title",
      `kernel window of input channel ${h.i} → filter ${h.j}: ${h.kh}×${h.kw} taps, ${label}${clipped}`));
    const s = Math.max(4, Math.min(MAX_CELL, Math.floor(WINDOW_PX / Math.max(h.rows, h.cols))));
    const canvas = el("canvas", "mm-insp-window-canvas");
    canvas.width = h.cols * s;
    canvas.height = h.rows * s;
    canvas.style.width = canvas.width + "px";
    canvas.style.height = canvas.height + "px";
    const ctx = canvas.getContext("2d");
    const img = ctx.createImageData(canvas.width, canvas.height);
    const vmax = maxAbs(values);
    const t = scaler(this.view.model.get("scale"), vmax);
    const overlay = view === "would_be";
    for (let r = 0; r < h.rows; r++) {
      for (let c = 0; c < h.cols; c++) {
        const k = r * h.cols + c;
        const rgb = colour(t(values[k]), pal.diverging);
        const masked = (flags[k] & MASKED) !== 0, frozen = (flags[k] & FROZEN) !== 0;
        for (let y = r * s; y < (r + 1) * s; y++) {
          for (let x = c * s; x < (c + 1) * s; x++) {
            let col = rgb;
            if (masked && overlay) col = ((x + y) % 4 === 0) ? pal.hatch_over : rgb;
            else if (masked) col = ((x + y) % 4 === 0) ? pal.hatch : pal.masked;
            else if (frozen && (y === r * s || x === c * s || y === (r + 1) * s - 1 || x === (c + 1) * s - 1)) col = pal.frozen;
            const p = (y * canvas.width + x) * 4;
            img.data[p] = col[0]; img.data[p + 1] = col[1]; img.data[p + 2] = col[2]; img.data[p + 3] = 255;
          }
        }
      }
    }
    ctx.putImageData(img, 0, 0);
    const wrap = el("div", "mm-insp-canvas-wrap");
    const tip = el("div", "mm-insp-tip mm-insp-window-tip");
    tip.hidden = true;
    wrap.append(canvas, tip);
    canvas.addEventListener("mouseleave", () => { tip.hidden = true; });
    canvas.addEventListener("mousemove", (e) => {
      const rect = canvas.getBoundingClientRect();
      const c = Math.floor((e.clientX - rect.left) / s), r = Math.floor((e.clientY - rect.top) / s);
      if (r < 0 || r >= h.rows || c < 0 || c >= h.cols) { tip.hidden = true; return; }
      const k = r * h.cols + c;
      const masked = (flags[k] & MASKED) !== 0;
      tip.textContent = "";
      [`tap (${r}, ${c})`, `${label} ${fmt(values[k])}`, `gradient ${fmt(a.g[k])}`,
        `would-be ${fmt(a.wb[k])}`, `weight ${fmt(a.w[k])}${masked ? " (unused)" : ""}`,
        `mask ${masked ? 0 : 1}${(flags[k] & FROZEN) ? " · frozen (outside the op)" : ""}`]
        .forEach((line) => tip.append(el("div", "", line)));
      tip.style.left = `${e.clientX - rect.left + 14}px`;
      tip.style.top = `${e.clientY - rect.top + 14}px`;
      tip.hidden = false;
    });
    const foot = el("div", "mm-insp-foot");
    foot.append(el("span", "mm-insp-range", `±${fmt(vmax)} (this window)`));
    box.append(wrap, foot);
    if (h.rows * h.cols <= WINDOW_NUMBERS) {
      const table = el("table", "mm-insp-window-values");
      for (let r = 0; r < h.rows; r++) {
        const tr = el("tr");
        for (let c = 0; c < h.cols; c++) {
          const k = r * h.cols + c;
          const td = el("td", (flags[k] & MASKED) ? "mm-insp-window-masked" : "", fmt(values[k]));
          td.dataset.value = String(values[k]); // the float32 value, exactly
          tr.append(td);
        }
        table.append(tr);
      }
      box.append(table);
    }
  }

  drawLegend(vmax, scale) {
    const ctx = this.legend.getContext("2d");
    for (let x = 0; x < this.legend.width; x++) {
      const c = colour((x / (this.legend.width - 1)) * 2 - 1, this.view.model.get("palette").diverging);
      ctx.fillStyle = `rgb(${c[0]},${c[1]},${c[2]})`;
      ctx.fillRect(x, 0, 1, this.legend.height);
    }
    this.range.textContent = ` ±${fmt(vmax)} (${scale})`;
  }

  cellAt(e) {
    if (!this.tile) return null;
    const rect = this.canvas.getBoundingClientRect();
    const x = (e.clientX - rect.left) * (this.canvas.width / rect.width);
    const y = (e.clientY - rect.top) * (this.canvas.height / rect.height);
    const h = this.tile.header, s = this.s;
    const c = Math.floor(x / s);
    if (c < 0 || c >= h.cols) return null;
    if (y < h.rows * s) {
      const r = Math.floor(y / s);
      return r >= 0 && r < h.rows ? { r, c, bias: false, x, y } : null;
    }
    if (y >= h.rows * s + this.biasGap && this.biasH) return { r: -1, c, bias: true, x, y };
    return null;
  }

  hover(e) {
    const cell = this.cellAt(e);
    if (!cell) { this.tip.hidden = true; return; }
    const { header: h, arrays: a } = this.tile;
    const info = this.info();
    const names = (this.view.model.get("names") || {})[info.name] || {};
    const lines = [];
    const i0 = h.r0 + cell.r * h.bh, j0 = h.c0 + cell.c * h.bw;
    const j1 = Math.min(j0 + h.bw, info.units) - 1;
    if (cell.bias) {
      const f = a.bias_flags[cell.c];
      lines.push(h.bw > 1 ? `bias of units ${j0}–${j1}` : `bias of unit ${j0}` +
        (names.units ? ` (${names.units[j0]})` : ""));
      lines.push(`mask ${(f & MASKED) ? 0 : 1}${(f & FROZEN) ? " · frozen" : ""}`);
      lines.push(`gradient ${fmt(a.bias_g[cell.c])}`);
      lines.push(`would-be ${fmt(a.bias_wb[cell.c])}`);
      if (a.bias_prj) lines.push(`projected ${fmt(a.bias_prj[cell.c])}`);
      this.tip.dataset.i = "";
      this.tip.dataset.j = String(j0);
    } else {
      const k = cell.r * h.cols + cell.c;
      const f = a.flags[k];
      if (h.bh > 1 || h.bw > 1) {
        const i1 = Math.min(i0 + h.bh, info.inputs) - 1;
        lines.push(`inputs ${i0}–${i1} → units ${j0}–${j1} (block)`);
        lines.push(`largest |gradient| ${fmt(a.g[k])}`);
        if (info.would_be) lines.push(`largest |would-be| ${fmt(a.wb[k])}`);
        if (a.prj) lines.push(`largest |projected| ${fmt(a.prj[k])}`);
        lines.push((f & MASKED) ? "all masked" : (f & SOME_MASKED) ? "partly masked" : "all connected");
        if (f & (FROZEN | SOME_FROZEN)) lines.push((f & FROZEN) ? "all frozen" : "partly frozen");
      } else {
        lines.push(`(i, j) = (${i0}, ${j0})`);
        const inName = names.inputs ? names.inputs[i0] : null;
        const unitName = names.units ? names.units[j0] : null;
        if (inName !== null || unitName !== null) lines.push(`${inName ?? "input " + i0} → ${unitName ?? "unit " + j0}`);
        const masked = (f & MASKED) !== 0;
        lines.push(`weight ${a.w ? fmt(a.w[k]) : "—"}${masked ? " (unused)" : ""}`);
        lines.push(`mask ${masked ? 0 : 1}${(f & FROZEN) ? " · frozen (outside the op)" : ""}`);
        lines.push(`gradient ${fmt(a.g[k])}`);
        if (info.would_be) lines.push(`would-be ${fmt(a.wb[k])}`);
        if (a.prj) lines.push(`projected ${fmt(a.prj[k])}`);
      }
      this.tip.dataset.i = String(i0);
      this.tip.dataset.j = String(j0);
    }
    this.tip.textContent = "";
    lines.forEach((line) => this.tip.append(el("div", "", line)));
    this.tip.hidden = false;
    const rect = this.canvas.getBoundingClientRect();
    this.tip.style.left = `${this.canvas.offsetLeft + (e.clientX - rect.left) + 14}px`;
    this.tip.style.top = `${this.canvas.offsetTop + (e.clientY - rect.top) + 14}px`;
  }

  click(e) {
    const cell = this.cellAt(e);
    if (!cell || cell.bias || !this.tile) return;
    const h = this.tile.header;
    if (h.bh === 1 && h.bw === 1) {
      if (this.info().kind === "conv") {
        this.view.model.send({ type: "window", layer: this.index, i: h.r0 + cell.r, j: h.c0 + cell.c });
      }
      return;
    }
    if (h.zoomed) return;
    const row = h.r0 + cell.r * h.bh + Math.floor(h.bh / 2);
    const col = h.c0 + cell.c * h.bw + Math.floor(h.bw / 2);
    this.view.model.send({ type: "zoom", layer: this.index, row, col });
  }
}

function paintBias(px, W, y0, x0, w, hgt, rgb, f, overlay, pal) {
  for (let y = y0; y < y0 + hgt; y++) {
    for (let x = x0; x < x0 + w; x++) {
      let c = rgb;
      if ((f & MASKED) && overlay) c = ((x + y) % 4 === 0) ? pal.hatch_over : rgb;
      else if (f & MASKED) c = ((x + y) % 4 === 0) ? pal.hatch : pal.masked;
      else if ((f & FROZEN) && w >= 4 && (y === y0 || x === x0 || y === y0 + hgt - 1 || x === x0 + w - 1)) c = pal.frozen;
      const k = (y * W + x) * 4;
      px[k] = c[0]; px[k + 1] = c[1]; px[k + 2] = c[2]; px[k + 3] = 255;
    }
  }
}

// ----------------------------------------------------------------------- the widget

class InspectorView {
  constructor(model, root) {
    this.model = model;
    this.root = root;
    this.panels = [];
    this.tiles = new Map();
    root.classList.add("mm-insp");
    this.bar = el("div", "mm-insp-bar");
    this.status = el("div", "mm-insp-status");
    this.driftBox = el("div", "mm-insp-drift");
    this.layersBox = el("div", "mm-insp-layers");
    this.topBox = el("div", "mm-insp-topbox");
    this.errorBox = el("div", "mm-insp-error");
    const main = el("div", "mm-insp-main");
    main.append(this.layersBox, this.topBox);
    root.append(this.bar, this.status, this.driftBox, main, this.errorBox);
    this.buildBar();
  }

  buildBar() {
    const bar = this.bar;
    bar.append(el("b", "mm-insp-title", "Gradient inspector"));
    const tl = el("label", "mm-insp-control", "target ");
    this.layerSelect = el("select", "mm-insp-target");
    this.unitInput = el("input", "mm-insp-unit");
    this.unitInput.type = "number";
    this.unitInput.min = "0";
    tl.append(this.layerSelect, this.unitInput);
    const commit = () => {
      const layer = this.layerSelect.value;
      if (layer === "loss") this.model.set("target", "loss");
      else {
        const found = (this.model.get("targets") || []).find((t) => t[0] === layer);
        const top = found ? found[1] - 1 : 0;
        const unit = Math.min(top, Math.max(0, parseInt(this.unitInput.value || "0", 10) || 0));
        this.unitInput.value = String(unit);
        this.model.set("target", [layer, unit]);
      }
      this.model.save_changes();
    };
    this.layerSelect.addEventListener("change", () => { this.unitInput.value = "0"; commit(); });
    this.unitInput.addEventListener("change", commit);
    const views = el("span", "mm-insp-views");
    this.viewButtons = VIEWS.map(([value, label]) => {
      const b = el("button", "mm-insp-btn mm-insp-view", label);
      b.dataset.view = value;
      if (value === "projected") {
        b.title = "the gradient projected onto the null space of the held units' Jacobian: " +
          "what the op's optimizer sees (ops with hold= only)";
      }
      b.addEventListener("click", () => { this.model.set("view", value); this.model.save_changes(); });
      views.append(b);
      return b;
    });
    this.scaleButton = el("button", "mm-insp-btn mm-insp-scale");
    this.scaleButton.addEventListener("click", () => {
      this.model.set("scale", this.model.get("scale") === "linear" ? "symlog" : "linear");
      this.model.save_changes();
    });
    this.stepButton = el("button", "mm-insp-btn mm-insp-step", "Step");
    this.stepButton.addEventListener("click", () => {
      this.stepButton.disabled = true;
      this.stepButton.textContent = "Stepping…";
      this.model.send({ type: "step" });
    });
    bar.append(tl, views, this.scaleButton, this.stepButton);
  }

  syncBar() {
    const targets = this.model.get("targets") || [];
    const target = this.model.get("target");
    const current = Array.isArray(target) ? target[0] : "loss";
    const options = ["loss", ...targets.map((t) => t[0])];
    if (this.layerSelect.options.length !== options.length) {
      this.layerSelect.textContent = "";
      options.forEach((name) => {
        const o = el("option", "", name === "loss" ? "loss" : `unit of ${name}`);
        o.value = name;
        this.layerSelect.append(o);
      });
    }
    this.layerSelect.value = current;
    const found = targets.find((t) => t[0] === current);
    this.unitInput.hidden = current === "loss";
    if (found) {
      this.unitInput.max = String(found[1] - 1);
      this.unitInput.value = String(target[1]);
    }
    const view = this.model.get("view");
    const hold = !!this.model.get("has_hold");
    this.viewButtons.forEach((b) => {
      b.classList.toggle("mm-insp-active", b.dataset.view === view);
      if (b.dataset.view === "projected") b.hidden = !hold; // offered only for an op with hold=
    });
    this.scaleButton.textContent = `scale: ${this.model.get("scale")}`;
    const op = this.model.get("op_name");
    this.stepButton.disabled = !op;
    this.stepButton.textContent = op ? `Step ${op}` : "Step (no op)";
    this.stepButton.title = op ? `run ${op} once on the batch` : "GradientInspector(..., op=train_op) enables stepping";
  }

  syncStatus() {
    const target = this.model.get("target");
    const loss = this.model.get("loss"), objective = this.model.get("objective");
    const what = Array.isArray(target) ? `Σ ${target[0]}[${target[1]}] over the batch = ${fmt(objective)} · ` : "";
    this.status.textContent = `${what}loss ${fmt(loss)}`;
  }

  syncDrift() {
    const info = this.model.get("step_info") || {};
    this.driftBox.textContent = "";
    if (!info.steps) return;
    this.driftBox.append(el("div", "mm-insp-losses",
      `step ${info.steps}: loss ${fmt(info.loss_before)} → ${fmt(info.loss_after)}`));
    const list = el("div", "mm-insp-driftlist");
    list.append(el("span", "mm-insp-label", "drift (largest |Δ output| over the batch): "));
    Object.entries(info.drift || {}).forEach(([layer, values]) => {
      values.forEach((v, k) => {
        const item = el("span", "mm-insp-driftitem" + (v === 0 ? " mm-insp-still" : ""),
          `${layer}[${k}] ${v === 0 ? "0.0" : fmt(v)}`);
        item.dataset.layer = layer;
        item.dataset.unit = String(k);
        list.append(item);
      });
    });
    this.driftBox.append(list);
    const hold = info.hold;
    if (hold) {  // an op with hold=: the held units on the reference inputs and on fresh ones
      this.driftBox.append(el("div", "mm-insp-hold",
        `held units: drift ${fmt(hold.reference)} on the ${hold.references} reference inputs ` +
        `(relative ${fmt(hold.relative_drift)}, tol ${fmt(hold.tol)}, rank ${hold.rank}); ` +
        `${fmt(hold.fresh)} on fresh inputs`));
    }
  }

  syncLayers() {
    const layers = this.model.get("layers") || [];
    if (this.panels.length !== layers.length) {
      this.layersBox.textContent = "";
      this.panels = layers.map((_, k) => new LayerPanel(this, k));
      this.panels.forEach((p) => this.layersBox.append(p.root));
    }
    this.panels.forEach((p) => p.setInfo());
  }

  syncTop() {
    const rows = this.model.get("top") || [];
    this.topBox.textContent = "";
    this.topBox.append(el("div", "mm-insp-label", "top connections by |gradient|"));
    const table = el("table", "mm-insp-top");
    const named = rows.some((r) => r.input !== null || r.unit !== null);
    const head = el("tr");
    ["layer", "i", "j", ...(named ? ["input → unit"] : []), "gradient", "weight"]
      .forEach((h) => head.append(el("th", "", h)));
    table.append(head);
    rows.forEach((r) => {
      const tr = el("tr");
      const names = named ? [`${r.input ?? r.i} → ${r.unit ?? r.j}`] : [];
      [r.layer, r.i, r.j, ...names, fmt(r.gradient), fmt(r.weight)]
        .forEach((v) => tr.append(el("td", "", String(v))));
      table.append(tr);
    });
    this.topBox.append(table);
  }

  onTile(msg, buffers) {
    if (msg && msg.type === "window") {
      const panel = this.panels[msg.layer];
      if (panel) panel.setWindow(msg, decode(msg, buffers || []));
      return;
    }
    if (!msg || msg.type !== "tile") return;
    // The latest tile of each layer also goes into the model's `_tiles`, in place (a set()
    // would be sent back to the kernel with the next save_changes()): the widget state that a
    // notebook saves then holds the latest view, and render() draws it without a kernel.
    const saved = this.model.get("_tiles");
    if (saved && typeof saved === "object") {
      saved[String(msg.layer)] = { header: msg, buffers: (buffers || []).map(asDataView) };
    }
    const arrays = decode(msg, buffers || []);
    this.tiles.set(msg.layer, { header: msg, arrays });
    const panel = this.panels[msg.layer];
    if (panel) panel.setTile(msg, arrays);
  }

  redraw() {
    this.panels.forEach((p) => {
      const t = this.tiles.get(p.index);
      if (t && p.tile !== t) p.setTile(t.header, t.arrays);
      else p.draw();
    });
  }

  stepDone() {
    this.syncBar();
    this.syncDrift();
  }

  syncError() {
    const error = this.model.get("error");
    this.errorBox.textContent = error || "";
    this.errorBox.hidden = !error;
    if (error) this.syncBar();
  }
}

function render({ model, el: root }) {
  const view = new InspectorView(model, root);
  const handlers = [
    ["change:layers", () => { view.syncLayers(); view.redraw(); }],
    ["change:top", () => view.syncTop()],
    ["change:loss change:objective", () => view.syncStatus()],
    ["change:target change:targets change:op_name change:has_hold", () => { view.syncBar(); view.syncStatus(); }],
    ["change:view change:scale", () => { view.syncBar(); view.redraw(); }],
    ["change:step_info", () => view.stepDone()],
    ["change:error", () => view.syncError()],
    ["change:revision", () => view.syncBar()],
    ["msg:custom", (msg, buffers) => view.onTile(msg, buffers)],
  ];
  handlers.forEach(([name, fn]) => model.on(name, fn));
  view.syncBar();
  view.syncStatus();
  view.syncDrift();
  view.syncLayers();
  view.syncTop();
  view.syncError();
  // Saved tiles first (all there is in a notebook reopened without a kernel); the kernel's
  // answer to "hello" replaces them.
  const saved = model.get("_tiles") || {};
  Object.keys(saved).forEach((k) => view.onTile(saved[k].header, saved[k].buffers));
  model.send({ type: "hello" });
  return () => handlers.forEach(([name, fn]) => model.off(name, fn));
}

export default { render };
