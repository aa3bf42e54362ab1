// maskmagic MaskEditor front end (anywidget ESM; no imports, no network).
//
// The mask lives here while the user paints: a Store per widget model holds the cells the
// kernel confirmed plus the edits sent but not yet answered, and every view (the canvas grid
// and the neuron graph) draws from it. A finished gesture becomes one "edit" message of runs
// of flat cell indices (see maskmagic/widgets/editor.py for the protocol).

const VIEW = 520; // largest side of the cell area, CSS px
const MAX_CELL = 28; // largest cell at first display, CSS px
const MAX_ZOOM = 64; // largest cell when zooming, CSS px
const TRACK_LIMIT = 65536; // above this many changed cells a view redraws everything
const STORES = new Map();

// ----------------------------------------------------------------------- bits and runs

function toBytes(x) {
  if (x instanceof Uint8Array) return x;
  if (x instanceof ArrayBuffer) return new Uint8Array(x);
  if (x && ArrayBuffer.isView(x)) return new Uint8Array(x.buffer, x.byteOffset, x.byteLength);
  return new Uint8Array(0);
}

function unpack(data, n) {
  const bytes = toBytes(data);
  const out = new Uint8Array(n);
  const whole = Math.min(n >> 3, bytes.length);
  for (let b = 0; b < whole; b++) {
    const v = bytes[b];
    if (v === 0) continue;
    const k = b << 3;
    out[k] = (v >> 7) & 1; out[k + 1] = (v >> 6) & 1; out[k + 2] = (v >> 5) & 1;
    out[k + 3] = (v >> 4) & 1; out[k + 4] = (v >> 3) & 1; out[k + 5] = (v >> 2) & 1;
    out[k + 6] = (v >> 1) & 1; out[k + 7] = v & 1;
  }
  for (let k = whole << 3; k < n && (k >> 3) < bytes.length; k++) {
    out[k] = (bytes[k >> 3] >> (7 - (k & 7))) & 1;
  }
  return out;
}

function pack(cells) {
  const out = new Uint8Array((cells.length + 7) >> 3);
  for (let k = 0; k < cells.length; k++) if (cells[k]) out[k >> 3] |= 128 >> (k & 7);
  return out;
}

function readRuns(data) {
  const bytes = toBytes(data);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const runs = new Uint32Array(bytes.byteLength >> 2);
  for (let k = 0; k < runs.length; k++) runs[k] = view.getUint32(k * 4, true);
  return runs;
}

function runBytes(runs) {
  const out = new ArrayBuffer(runs.length * 4);
  const view = new DataView(out);
  for (let k = 0; k < runs.length; k++) view.setUint32(k * 4, runs[k], true);
  return out;
}

// Sorted unique flat indices -> Uint32Array of (start, length) pairs.
function runsOf(sorted) {
  const out = [];
  let k = 0;
  while (k < sorted.length) {
    const start = sorted[k];
    let end = start + 1;
    k++;
    while (k < sorted.length && sorted[k] === end) { end++; k++; }
    out.push(start, end - start);
  }
  return Uint32Array.from(out);
}

function countOnes(cells) {
  let c = 0;
  for (let k = 0; k < cells.length; k++) c += cells[k];
  return c;
}

// Applies an edit ({op: "set"|"flip"|"replace", value, runs, cells}) to `arr` in place.
// Returns {delta: change of the count, changed: flat indices, or null for "redraw all"}.
function applyEdit(arr, edit, track) {
  let delta = 0;
  let changed = track ? [] : null;
  if (edit.op === "replace") {
    const bits = edit.cells;
    for (let k = 0; k < arr.length; k++) {
      if (arr[k] !== bits[k]) { delta += bits[k] ? 1 : -1; arr[k] = bits[k]; }
    }
    return { delta, changed: null };
  }
  const runs = edit.runs;
  const flip = edit.op === "flip";
  const value = edit.value ? 1 : 0;
  for (let r = 0; r < runs.length; r += 2) {
    const end = Math.min(runs[r] + runs[r + 1], arr.length);
    for (let k = runs[r]; k < end; k++) {
      const next = flip ? 1 - arr[k] : value;
      if (next === arr[k]) continue;
      arr[k] = next;
      delta += next ? 1 : -1;
      if (changed) {
        if (changed.length < TRACK_LIMIT) changed.push(k);
        else changed = null;
      }
    }
  }
  return { delta, changed };
}

// Cells on the straight line from (i0, j0) to (i1, j1), ends included (Bresenham).
function line(i0, j0, i1, j1) {
  const out = [];
  const di = Math.abs(i1 - i0), dj = Math.abs(j1 - j0);
  const si = i0 < i1 ? 1 : -1, sj = j0 < j1 ? 1 : -1;
  let err = dj - di;
  let i = i0, j = j0;
  for (;;) {
    out.push([i, j]);
    if (i === i1 && j === j1) break;
    const e2 = 2 * err;
    if (e2 > -di) { err -= di; j += sj; }
    if (e2 < dj) { err += dj; i += si; }
  }
  return out;
}

// ----------------------------------------------------------------------- the store

class Store {
  constructor(model) {
    this.model = model;
    const [rows, cols] = model.get("shape");
    this.rows = rows;
    this.cols = cols;
    this.n = rows * cols;
    this.confirmed = unpack(model.get("bits"), this.n);
    this.cells = this.confirmed.slice();
    this.count = countOnes(this.cells);
    this.version = null; // unknown until the kernel answers our "sync"
    this.client = Math.random().toString(36).slice(2, 10) + Date.now().toString(36);
    this.nextId = 1;
    this.pending = []; // edits sent, not answered yet (in order)
    this.stroke = null; // the drag in progress: {value, cells: [], seen: Set}
    this.listeners = new Set();
    this.sent = { messages: 0, bytes: 0, last: 0 };
  }

  subscribe(fn) { this.listeners.add(fn); return () => this.listeners.delete(fn); }

  emit(changed, info) { for (const fn of this.listeners) fn(changed, info || {}); }

  get(i, j) { return this.cells[i * this.cols + j]; }

  // ---- local edits (applied at once, sent to the kernel)
  beginStroke(value) { this.stroke = { value, cells: [], seen: new Set() }; }

  strokeCells(indices) {
    const s = this.stroke;
    if (!s) return;
    const changed = [];
    for (const k of indices) {
      if (s.seen.has(k)) continue;
      s.seen.add(k);
      s.cells.push(k);
      if (this.cells[k] !== s.value) {
        this.cells[k] = s.value;
        this.count += s.value ? 1 : -1;
        changed.push(k);
      }
    }
    if (changed.length) this.emit(changed);
  }

  endStroke() {
    const s = this.stroke;
    this.stroke = null;
    if (!s || !s.cells.length) return;
    s.cells.sort((a, b) => a - b);
    this.send({ op: "set", value: s.value, runs: runsOf(s.cells) });
  }

  edit(edit) {
    const result = applyEdit(this.cells, edit, true);
    this.count += result.delta;
    this.emit(result.changed);
    this.send(edit);
  }

  send(edit) {
    edit.id = this.nextId++;
    this.pending.push(edit);
    const content = {
      type: "edit", client: this.client, id: edit.id, shape: [this.rows, this.cols], op: edit.op,
    };
    if (edit.op === "set") content.value = edit.value ? 1 : 0;
    const buffer = edit.op === "replace" ? pack(edit.cells).buffer : runBytes(edit.runs);
    this.sent.messages++;
    this.sent.last = buffer.byteLength + JSON.stringify(content).length;
    this.sent.bytes += this.sent.last;
    this.model.send(content, undefined, [buffer]);
    this.emit([], { pending: true });
  }

  command(type) { this.model.send({ type }); }

  requestWeight(i, j) { this.model.send({ type: "weight", i, j }); }

  resync() {
    this.version = null;
    this.model.send({ type: "sync" });
  }

  // The displayed cells: the confirmed ones, then every pending edit, then the live stroke.
  recompute() {
    this.cells = this.confirmed.slice();
    for (const e of this.pending) applyEdit(this.cells, e, false);
    if (this.stroke) for (const k of this.stroke.cells) this.cells[k] = this.stroke.value;
    this.count = countOnes(this.cells);
    this.emit(null);
  }

  // Copies the confirmed cells into the model's `bits`, in place: the widget state a notebook
  // saves (JupyterLab, Notebook 7, exported HTML) then shows the current mask. In place, not
  // model.set(): a set would be sent back to the kernel with the next save_changes().
  persist() {
    const bits = this.model.get("bits");
    const packed = pack(this.confirmed);
    if (!bits || !ArrayBuffer.isView(bits) || bits.byteLength !== packed.length) return;
    new Uint8Array(bits.buffer, bits.byteOffset, bits.byteLength).set(packed);
  }

  // ---- messages from the kernel
  onMessage(msg, buffers) {
    if (!msg || typeof msg !== "object") return;
    if (msg.type === "reset") {
      this.confirmed = unpack(buffers[0], this.n);
      this.version = msg.version;
      const acked = (msg.acked || {})[this.client] || 0;
      this.pending = this.pending.filter((e) => e.id > acked);
      this.persist();
      this.recompute();
    } else if (msg.type === "change") {
      if (this.version === null || msg.version <= this.version) return; // in the coming reset
      if (msg.version !== this.version + 1) { this.resync(); return; }
      this.version = msg.version;
      const diff = msg.op === "replace"
        ? { op: "replace", cells: unpack(buffers[0], this.n) }
        : { op: "flip", runs: readRuns(buffers[0]) };
      applyEdit(this.confirmed, diff, false);
      this.persist();
      if (msg.client === this.client) {
        while (this.pending.length && this.pending[0].id <= msg.id) this.pending.shift();
        this.emit([], { pending: true }); // the cells shown already hold this edit
      } else if (!this.pending.length && !this.stroke) {
        const result = applyEdit(this.cells, diff, true);
        this.count += result.delta;
        this.emit(result.changed);
      } else {
        this.recompute();
      }
      if (!this.pending.length && !this.stroke && msg.count !== this.count) this.resync();
    } else if (msg.type === "reject") {
      this.pending = this.pending.filter((e) => e.id !== msg.id);
      this.recompute();
      this.emit([], { notice: "edit refused by the kernel: " + msg.reason });
    } else if (msg.type === "weight") {
      this.emit([], { weight: msg });
    }
  }
}

function storeFor(model) {
  const key = model.get("_editor_id");
  let store = STORES.get(key);
  if (!store) {
    store = new Store(model);
    STORES.set(key, store);
    // Kept on the store so that dropStore can remove this very listener (model.off).
    store.onCustom = (msg, buffers) => store.onMessage(msg, buffers || []);
    model.on("msg:custom", store.onCustom);
    store.resync();
  }
  return store;
}

function dropStore(model) {
  const key = model.get("_editor_id");
  const store = STORES.get(key);
  if (store) model.off("msg:custom", store.onCustom);
  STORES.delete(key);
}

// ----------------------------------------------------------------------- small DOM helpers

function h(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
}

const SVG = "http://www.w3.org/2000/svg";
function s(tag, attrs) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  return node;
}

function rgb(c) { return `rgb(${c[0]}, ${c[1]}, ${c[2]})`; }
function rgba(c, alpha) { return `rgba(${c[0]}, ${c[1]}, ${c[2]}, ${alpha})`; }

function packedColor(c) { // ImageData is RGBA in memory; a little-endian Uint32 reads ABGR
  return (255 << 24) | (c[2] << 16) | (c[1] << 8) | c[0];
}

// ----------------------------------------------------------------------- the grid (canvas)

class GridView {
  constructor(editor) {
    this.editor = editor;
    this.store = editor.store;
    const { rows, cols } = this.store;
    const names = [editor.inputNames, editor.unitNames];
    this.dpr = window.devicePixelRatio || 1;
    const fit = Math.min(VIEW / cols, VIEW / rows);
    this.fit = fit >= 1 ? Math.min(MAX_CELL, Math.floor(fit)) : fit;
    this.scale = this.fit;
    this.w = Math.max(Math.min(VIEW, cols * this.scale), 24);
    this.h = Math.max(Math.min(VIEW, rows * this.scale), 24);
    this.ox = 0;
    this.oy = 0;
    const measure = document.createElement("canvas").getContext("2d");
    measure.font = "10px sans-serif";
    const width = (labels, count) => {
      let w = measure.measureText(String(count - 1)).width;
      for (const l of labels) w = Math.max(w, measure.measureText(l).width);
      return Math.ceil(Math.min(w, 110)) + 10;
    };
    this.rowW = width(names[0], rows);
    this.colH = width(names[1], cols);
    this.main = h("canvas", { class: "mm-cells" });
    this.rowHead = h("canvas", { class: "mm-rowhead", title: "click: toggle this input's row" });
    this.colHead = h("canvas", { class: "mm-colhead", title: "click: toggle this unit's column" });
    this.el = h("div", { class: "mm-grid" },
      h("div", { class: "mm-corner" }), this.colHead, this.rowHead, this.main);
    this.el.style.gridTemplateColumns = `${this.rowW}px ${this.w}px`;
    this.el.style.gridTemplateRows = `${this.colH}px ${this.h}px`;
    this.size(this.main, this.w, this.h);
    this.size(this.rowHead, this.rowW, this.h);
    this.size(this.colHead, this.w, this.colH);
    // One pixel per cell; the visible canvas draws it scaled.
    this.off = document.createElement("canvas");
    this.off.width = cols;
    this.off.height = rows;
    this.offCtx = this.off.getContext("2d");
    this.image = this.offCtx.createImageData(cols, rows);
    this.pixels = new Uint32Array(this.image.data.buffer);
    this.onColor = packedColor(editor.palette.on);
    this.offColor = packedColor(editor.palette.off);
    this.hover = null;
    this.gesture = null;
    this.frame = 0;
    this.bind();
    this.rebuild();
  }

  size(canvas, w, h) {
    canvas.width = Math.round(w * this.dpr);
    canvas.height = Math.round(h * this.dpr);
    canvas.style.width = `${w}px`;
    canvas.style.height = `${h}px`;
  }

  // ---- pixels
  rebuild() {
    const t0 = performance.now();
    const { cells } = this.store;
    const px = this.pixels, on = this.onColor, off = this.offColor;
    for (let k = 0; k < cells.length; k++) px[k] = cells[k] ? on : off;
    this.offCtx.putImageData(this.image, 0, 0);
    this.draw();
    this.main.getContext("2d").getImageData(0, 0, 1, 1); // finish drawing before timing
    const ms = performance.now() - t0;
    this.editor.root.dataset.drawMs = ms.toFixed(1);
  }

  update(changed) {
    if (changed === null) { this.rebuild(); return; }
    if (!changed.length) return;
    const { cells, cols } = this.store;
    let i0 = Infinity, i1 = -1, j0 = Infinity, j1 = -1;
    for (const k of changed) {
      this.pixels[k] = cells[k] ? this.onColor : this.offColor;
      const i = (k / cols) | 0, j = k - i * cols;
      if (i < i0) i0 = i; if (i > i1) i1 = i; if (j < j0) j0 = j; if (j > j1) j1 = j;
    }
    this.offCtx.putImageData(this.image, 0, 0, j0, i0, j1 - j0 + 1, i1 - i0 + 1);
    this.schedule();
  }

  schedule() {
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => { this.frame = 0; this.draw(); });
  }

  // ---- geometry
  clampPan() {
    const { rows, cols } = this.store;
    const cw = cols * this.scale, ch = rows * this.scale;
    this.ox = cw <= this.w ? 0 : Math.min(0, Math.max(this.w - cw, this.ox));
    this.oy = ch <= this.h ? 0 : Math.min(0, Math.max(this.h - ch, this.oy));
  }

  zoomAt(factor, x, y) {
    const min = Math.min(this.fit, 1);
    const next = Math.max(min, Math.min(MAX_ZOOM, this.scale * factor));
    this.ox = x - ((x - this.ox) * next) / this.scale;
    this.oy = y - ((y - this.oy) * next) / this.scale;
    this.scale = next;
    this.clampPan();
    this.draw();
  }

  fitView() { this.scale = this.fit; this.ox = 0; this.oy = 0; this.draw(); }

  local(e, canvas) {
    const r = canvas.getBoundingClientRect();
    return [e.clientX - r.left, e.clientY - r.top];
  }

  cellAt(x, y, clamp) {
    const { rows, cols } = this.store;
    let i = Math.floor((y - this.oy) / this.scale), j = Math.floor((x - this.ox) / this.scale);
    if (clamp) {
      i = Math.max(0, Math.min(rows - 1, i));
      j = Math.max(0, Math.min(cols - 1, j));
    }
    return i >= 0 && i < rows && j >= 0 && j < cols ? [i, j] : null;
  }

  // Where cell (i, j)'s centre is, in the cell canvas's CSS px and in page (client) px.
  cellPoint(i, j) {
    const x = this.ox + (j + 0.5) * this.scale, y = this.oy + (i + 0.5) * this.scale;
    const r = this.main.getBoundingClientRect();
    return { x, y, clientX: r.left + x, clientY: r.top + y, dpr: this.dpr, scale: this.scale };
  }

  // ---- drawing
  draw() {
    const { rows, cols } = this.store;
    const ctx = this.main.getContext("2d");
    const s = this.scale;
    ctx.setTransform(this.dpr, 0, 0, this.dpr, 0, 0);
    ctx.fillStyle = "#ffffff";
    ctx.fillRect(0, 0, this.w, this.h);
    ctx.imageSmoothingEnabled = s < 1;
    ctx.drawImage(this.off, this.ox, this.oy, cols * s, rows * s);
    const [i0, i1, j0, j1] = this.visible();
    if (s >= 6) {
      ctx.strokeStyle = rgba(this.editor.palette.grid, this.editor.gridAlpha);
      ctx.lineWidth = 1;
      ctx.beginPath();
      for (let i = i0; i <= i1 + 1; i++) {
        const y = Math.round(this.oy + i * s) + 0.5;
        ctx.moveTo(Math.max(0, this.ox), y);
        ctx.lineTo(Math.min(this.w, this.ox + cols * s), y);
      }
      for (let j = j0; j <= j1 + 1; j++) {
        const x = Math.round(this.ox + j * s) + 0.5;
        ctx.moveTo(x, Math.max(0, this.oy));
        ctx.lineTo(x, Math.min(this.h, this.oy + rows * s));
      }
      ctx.stroke();
    }
    const g = this.gesture;
    if (g && g.kind === "rect") {
      const [a, b] = [g.start, g.end];
      const y = this.oy + Math.min(a[0], b[0]) * s, x = this.ox + Math.min(a[1], b[1]) * s;
      const hh = (Math.abs(a[0] - b[0]) + 1) * s, ww = (Math.abs(a[1] - b[1]) + 1) * s;
      ctx.fillStyle = g.value ? rgba(this.editor.palette.on, 0.35) : "rgba(255, 255, 255, 0.55)";
      ctx.fillRect(x, y, ww, hh);
      ctx.strokeStyle = rgb(this.editor.palette.hover);
      ctx.strokeRect(x + 0.5, y + 0.5, ww - 1, hh - 1);
    }
    if (this.hover && !g) {
      const [i, j] = this.hover;
      ctx.strokeStyle = rgb(this.editor.palette.hover);
      ctx.lineWidth = s >= 4 ? 2 : 1;
      ctx.strokeRect(this.ox + j * s, this.oy + i * s, Math.max(s, 2), Math.max(s, 2));
    }
    this.drawHeaders(i0, i1, j0, j1);
    const el = this.editor.root;
    el.dataset.scale = String(s);
  }

  visible() {
    const { rows, cols } = this.store;
    const s = this.scale;
    return [
      Math.max(0, Math.floor(-this.oy / s)), Math.min(rows - 1, Math.floor((this.h - this.oy) / s)),
      Math.max(0, Math.floor(-this.ox / s)), Math.min(cols - 1, Math.floor((this.w - this.ox) / s)),
    ];
  }

  drawHeaders(i0, i1, j0, j1) {
    const s = this.scale;
    const hi = this.hover ? this.hover[0] : -1, hj = this.hover ? this.hover[1] : -1;
    const labels = s >= 10;
    for (const [canvas, w, h, axis] of [
      [this.rowHead, this.rowW, this.h, 0], [this.colHead, this.w, this.colH, 1],
    ]) {
      const ctx = canvas.getContext("2d");
      ctx.setTransform(this.dpr, 0, 0, this.dpr, 0, 0);
      ctx.fillStyle = "#f8fafc";
      ctx.fillRect(0, 0, w, h);
      const [from, to, offset, mark] = axis === 0 ? [i0, i1, this.oy, hi] : [j0, j1, this.ox, hj];
      const names = axis === 0 ? this.editor.inputNames : this.editor.unitNames;
      if (mark >= 0) {
        ctx.fillStyle = "rgba(249, 115, 22, 0.25)";
        if (axis === 0) ctx.fillRect(0, offset + mark * s, w, Math.max(s, 2));
        else ctx.fillRect(offset + mark * s, 0, Math.max(s, 2), h);
      }
      if (!labels) continue;
      ctx.fillStyle = "#334155";
      ctx.font = `${Math.min(11, Math.floor(s * 0.8))}px sans-serif`;
      ctx.textBaseline = "middle";
      for (let k = from; k <= to; k++) {
        const text = names[k] || String(k);
        const c = offset + (k + 0.5) * s;
        if (axis === 0) {
          ctx.textAlign = "right";
          ctx.fillText(text, w - 5, c, w - 8);
        } else {
          ctx.save();
          ctx.translate(c, h - 5);
          ctx.rotate(-Math.PI / 2);
          ctx.textAlign = "left";
          ctx.fillText(text, 0, 0, h - 8);
          ctx.restore();
        }
      }
    }
  }

  setHover(cell) {
    const same = (a, b) => (a === null && b === null) || (a && b && a[0] === b[0] && a[1] === b[1]);
    if (same(cell, this.hover)) return;
    this.hover = cell;
    this.schedule();
  }

  // ---- input
  bind() {
    const m = this.main;
    m.addEventListener("pointerdown", (e) => this.down(e));
    m.addEventListener("pointermove", (e) => this.move(e));
    m.addEventListener("pointerup", (e) => this.up(e));
    m.addEventListener("pointercancel", (e) => this.up(e));
    m.addEventListener("pointerleave", () => { if (!this.gesture) this.editor.hoverCell(null); });
    m.addEventListener("wheel", (e) => this.wheel(e), { passive: false });
    m.addEventListener("contextmenu", (e) => e.preventDefault());
    for (const [canvas, axis] of [[this.rowHead, 0], [this.colHead, 1]]) {
      canvas.addEventListener("pointermove", (e) => this.headerHover(e, canvas, axis));
      canvas.addEventListener("pointerleave", () => this.editor.hoverCell(null));
      canvas.addEventListener("pointerdown", (e) => {
        if (e.button !== 0) return;
        const k = this.headerIndex(e, canvas, axis);
        if (k !== null) this.editor.toggleLine(axis, k);
        this.editor.focus();
        e.preventDefault();
      });
    }
  }

  headerIndex(e, canvas, axis) {
    const [x, y] = this.local(e, canvas);
    const { rows, cols } = this.store;
    const k = axis === 0 ? Math.floor((y - this.oy) / this.scale)
      : Math.floor((x - this.ox) / this.scale);
    return k >= 0 && k < (axis === 0 ? rows : cols) ? k : null;
  }

  headerHover(e, canvas, axis) {
    const k = this.headerIndex(e, canvas, axis);
    this.editor.hoverLine(axis, k);
  }

  down(e) {
    const [x, y] = this.local(e, this.main);
    this.editor.focus();
    if (e.button === 1 || (e.button === 0 && e.altKey)) {
      this.gesture = { kind: "pan", x, y, ox: this.ox, oy: this.oy };
    } else if (e.button === 0) {
      const cell = this.cellAt(x, y, false);
      if (!cell) return;
      const value = 1 - this.store.get(cell[0], cell[1]);
      if (e.shiftKey) {
        this.gesture = { kind: "rect", start: cell, end: cell, value };
        this.draw();
      } else {
        this.gesture = { kind: "paint", last: cell, value };
        this.store.beginStroke(value);
        this.store.strokeCells([cell[0] * this.store.cols + cell[1]]);
      }
    } else {
      return;
    }
    this.main.setPointerCapture(e.pointerId);
    e.preventDefault();
  }

  move(e) {
    const [x, y] = this.local(e, this.main);
    const g = this.gesture;
    if (!g) { this.editor.hoverCell(this.cellAt(x, y, false)); return; }
    if (g.kind === "pan") {
      this.ox = g.ox + x - g.x;
      this.oy = g.oy + y - g.y;
      this.clampPan();
      this.schedule();
      return;
    }
    const cell = this.cellAt(x, y, true);
    if (g.kind === "rect") {
      if (cell[0] !== g.end[0] || cell[1] !== g.end[1]) { g.end = cell; this.schedule(); }
      this.editor.hoverCell(cell);
      return;
    }
    if (cell[0] === g.last[0] && cell[1] === g.last[1]) return;
    const cols = this.store.cols;
    this.store.strokeCells(line(g.last[0], g.last[1], cell[0], cell[1]).map(([i, j]) => i * cols + j));
    g.last = cell;
    this.editor.hoverCell(cell);
  }

  up(e) {
    const g = this.gesture;
    if (!g) return;
    this.gesture = null;
    if (this.main.hasPointerCapture(e.pointerId)) this.main.releasePointerCapture(e.pointerId);
    if (g.kind === "paint") {
      this.store.endStroke();
    } else if (g.kind === "rect") {
      const cols = this.store.cols;
      const [ia, ib] = [Math.min(g.start[0], g.end[0]), Math.max(g.start[0], g.end[0])];
      const [ja, jb] = [Math.min(g.start[1], g.end[1]), Math.max(g.start[1], g.end[1])];
      const runs = [];
      for (let i = ia; i <= ib; i++) runs.push(i * cols + ja, jb - ja + 1);
      this.store.edit({ op: "set", value: g.value, runs: Uint32Array.from(runs) });
      this.draw();
    }
  }

  wheel(e) {
    const [x, y] = this.local(e, this.main);
    if (e.ctrlKey || e.metaKey) {
      this.zoomAt(Math.exp(-e.deltaY * 0.002), x, y);
      e.preventDefault();
      return;
    }
    const { ox, oy } = this;
    this.ox -= e.deltaX;
    this.oy -= e.deltaY;
    this.clampPan();
    if (this.ox !== ox || this.oy !== oy) { e.preventDefault(); this.schedule(); }
  }
}

// ----------------------------------------------------------------------- the graph (SVG)

class GraphView {
  constructor(editor) {
    this.editor = editor;
    this.store = editor.store;
    const { rows, cols } = this.store;
    const longest = Math.max(rows, cols);
    const gap = Math.max(14, Math.min(30, Math.floor(420 / longest)));
    const height = longest * gap + 24;
    const width = 300;
    const x0 = 70, x1 = width - 70;
    const ys = (count, k) => 12 + (height - 24) * ((k + 0.5) / count);
    this.el = s("svg", {
      class: "mm-graph", width, height, viewBox: `0 0 ${width} ${height}`, role: "img",
      "aria-label": "connections: click a line to toggle it",
    });
    const edges = s("g", { class: "mm-edges" });
    const hits = s("g", { class: "mm-hits" });
    this.edges = new Array(this.store.n);
    for (let i = 0; i < rows; i++) {
      for (let j = 0; j < cols; j++) {
        const k = i * cols + j;
        const at = { x1: x0, y1: ys(rows, i), x2: x1, y2: ys(cols, j) };
        const edge = s("line", { ...at, class: "mm-edge" });
        const hit = s("line", { ...at, class: "mm-hit", "data-k": k });
        this.edges[k] = edge;
        edges.append(edge);
        hits.append(hit);
      }
    }
    this.el.append(edges, hits);
    this.nodes = [[], []];
    for (const [axis, count, x] of [[0, rows, x0], [1, cols, x1]]) {
      const names = axis === 0 ? editor.inputNames : editor.unitNames;
      for (let k = 0; k < count; k++) {
        const g = s("g", { class: "mm-node", "data-axis": axis, "data-k": k });
        g.append(s("circle", { cx: x, cy: ys(count, k), r: 6 }));
        const label = s("text", {
          x: axis === 0 ? x - 10 : x + 10, y: ys(count, k),
          "text-anchor": axis === 0 ? "end" : "start", "dominant-baseline": "middle",
        });
        label.textContent = names[k] || `${axis === 0 ? editor.inputLabel : editor.unitLabel}[${k}]`;
        g.append(label);
        this.nodes[axis].push(g);
        this.el.append(g);
      }
    }
    this.hover = null;
    this.el.addEventListener("pointerover", (e) => {
      const t = e.target;
      if (t.classList.contains("mm-hit")) {
        const k = +t.dataset.k;
        editor.hoverCell([Math.floor(k / cols), k % cols]);
      } else {
        const node = t.closest && t.closest(".mm-node");
        if (node) editor.hoverLine(+node.dataset.axis, +node.dataset.k);
      }
    });
    this.el.addEventListener("pointerleave", () => editor.hoverCell(null));
    this.el.addEventListener("click", (e) => {
      const t = e.target;
      editor.focus();
      if (t.classList.contains("mm-hit")) {
        editor.toggleCell(+t.dataset.k);
      } else {
        const node = t.closest && t.closest(".mm-node");
        if (node) editor.toggleLine(+node.dataset.axis, +node.dataset.k);
      }
    });
    this.update(null);
  }

  update(changed) {
    const cells = this.store.cells;
    const ks = changed === null ? cells.keys() : changed;
    for (const k of ks) this.edges[k].classList.toggle("on", cells[k] === 1);
  }

  setHover(cell) {
    if (this.hover !== null) this.edges[this.hover].classList.remove("hover");
    this.hover = cell ? cell[0] * this.store.cols + cell[1] : null;
    if (this.hover !== null) this.edges[this.hover].classList.add("hover");
  }
}

// ----------------------------------------------------------------------- the editor

class Editor {
  constructor(model, el) {
    this.model = model;
    this.store = storeFor(model);
    // [event, handler] pairs registered with model.on; destroy() removes the same references.
    this.handlers = [];
    this.inputNames = model.get("input_names") || [];
    this.unitNames = model.get("unit_names") || [];
    this.inputLabel = model.get("input_label") || "input";
    this.unitLabel = model.get("unit_label") || "unit";
    // The colours come from Python (maskmagic/widgets/palette.py); the CSS reads them as variables.
    this.palette = model.get("palette");
    this.gridAlpha = model.get("grid_alpha");
    const t0 = performance.now();
    this.root = h("div", { class: "mm-editor", tabindex: "0", "data-lm-suppress-shortcuts": "true" });
    for (const [role, name] of [["on", "--mm-on"], ["edge_off", "--mm-off"], ["hover", "--mm-hover"]]) {
      this.root.style.setProperty(name, rgb(this.palette[role]));
    }
    this.weightTimer = 0;
    this.hovered = null;
    this.buildToolbar();
    this.grid = new GridView(this);
    this.body = h("div", { class: "mm-body" }, this.grid.el);
    this.graph = null;
    const { rows, cols } = this.store;
    const title = model.get("title");
    this.count = h("span", { class: "mm-count" });
    this.readout = h("span", { class: "mm-readout" });
    this.root.append(
      h("div", { class: "mm-title" },
        h("strong", {}, title ? `${title}` : "mask"),
        h("span", { class: "mm-shape" }, `${rows} inputs${
          this.inputLabel === "input" ? "" : ` (${this.inputLabel})`} × ${cols} units`)),
      this.toolbar, this.body, h("div", { class: "mm-status" }, this.count, this.readout),
    );
    this.showGraph(model.get("graph"));
    this.root.addEventListener("keydown", (e) => this.key(e));
    this.unsubscribe = this.store.subscribe((changed, info) => this.changed(changed, info));
    this.listen("change:graph", () => this.showGraph(model.get("graph")));
    this.listen("change:undo_depth", () => this.updateButtons());
    this.listen("change:redo_depth", () => this.updateButtons());
    el.append(this.root);
    this.root.__mm = this;
    this.updateStatus();
    this.hint();
    this.root.dataset.renderMs = (performance.now() - t0).toFixed(1);
  }

  buildToolbar() {
    const store = this.store;
    const all = () => Uint32Array.from([0, store.n]);
    // Buttons hand the focus to the editor, which keeps Ctrl+Z working when one gets disabled.
    const button = (label, title, fn, cls) =>
      h("button", {
        class: `mm-btn ${cls || ""}`, title, type: "button",
        onmousedown: (e) => e.preventDefault(),
        onclick: () => { this.focus(); fn(); },
      }, label);
    this.density = h("input", {
      class: "mm-density", type: "number", min: "0", max: "1", step: "0.05",
      title: "density of 'random'", value: String(this.model.get("random_density")),
    });
    const setDensity = () => {
      const v = Math.max(0, Math.min(1, Number(this.density.value) || 0));
      this.density.value = String(v);
      if (v === this.model.get("random_density")) return;
      this.model.set("random_density", v);
      this.model.save_changes();
    };
    this.density.addEventListener("change", setDensity);
    this.density.addEventListener("keydown", (e) => {
      if (e.key === "Enter") setDensity();
      e.stopPropagation();
    });
    this.listen("change:random_density", () => {
      this.density.value = String(this.model.get("random_density"));
    });
    this.undoBtn = button("↶ Undo", "undo (Ctrl+Z)", () => this.undo(), "mm-undo");
    this.redoBtn = button("↷ Redo", "redo (Ctrl+Shift+Z)", () => this.redo(), "mm-redo");
    this.graphBox = h("input", { type: "checkbox", class: "mm-graph-toggle" });
    this.graphBox.addEventListener("change", () => {
      this.model.set("graph", this.graphBox.checked);
      this.model.save_changes();
      this.showGraph(this.graphBox.checked);
    });
    const small = Math.max(store.rows, store.cols) <= 32;
    this.toolbar = h("div", { class: "mm-toolbar" },
      button("All", "connect everything", () => store.edit({ op: "set", value: 1, runs: all() }), "mm-all"),
      button("None", "disconnect everything", () => store.edit({ op: "set", value: 0, runs: all() }), "mm-none"),
      button("Invert", "flip every connection", () => store.edit({ op: "flip", runs: all() }), "mm-invert"),
      button("Identity", "input i to unit i only", () => this.identity(), "mm-identity"),
      button("Random", "each connection with the chosen probability", () => this.random(), "mm-random"),
      this.density,
      h("span", { class: "mm-sep" }),
      this.undoBtn, this.redoBtn,
      h("span", { class: "mm-sep" }),
      button("−", "zoom out (Ctrl+wheel)", () => this.zoom(1 / 1.5), "mm-zoom-out"),
      button("+", "zoom in (Ctrl+wheel)", () => this.zoom(1.5), "mm-zoom-in"),
      button("Fit", "show the whole mask", () => this.grid.fitView(), "mm-fit"),
      ...(small ? [h("label", { class: "mm-check", title: "show neurons and connections" },
        this.graphBox, " graph")] : []),
    );
  }

  identity() {
    const { rows, cols, n } = this.store;
    const cells = new Uint8Array(n);
    for (let i = 0; i < Math.min(rows, cols); i++) cells[i * cols + i] = 1;
    this.store.edit({ op: "replace", cells });
  }

  random() {
    const d = Math.max(0, Math.min(1, Number(this.density.value) || 0));
    const cells = new Uint8Array(this.store.n);
    for (let k = 0; k < cells.length; k++) cells[k] = Math.random() < d ? 1 : 0;
    this.store.edit({ op: "replace", cells });
  }

  undo() { this.store.command("undo"); }
  redo() { this.store.command("redo"); }

  zoom(factor) { this.grid.zoomAt(factor, this.grid.w / 2, this.grid.h / 2); }

  focus() { this.root.focus({ preventScroll: true }); }

  key(e) {
    const mod = e.ctrlKey || e.metaKey;
    const k = e.key.toLowerCase();
    if (mod && k === "z") (e.shiftKey ? this.redo() : this.undo());
    else if (mod && k === "y") this.redo();
    else return;
    e.preventDefault();
    e.stopPropagation();
  }

  toggleCell(k) {
    const v = 1 - this.store.cells[k];
    this.store.edit({ op: "set", value: v, runs: Uint32Array.from([k, 1]) });
  }

  // Row (axis 0) or column (axis 1): all on -> all off, otherwise all on.
  toggleLine(axis, k) {
    const { rows, cols, cells } = this.store;
    const runs = [];
    let on = 0;
    if (axis === 0) {
      for (let j = 0; j < cols; j++) on += cells[k * cols + j];
      runs.push(k * cols, cols);
    } else {
      for (let i = 0; i < rows; i++) { on += cells[i * cols + k]; runs.push(i * cols + k, 1); }
    }
    const full = on === (axis === 0 ? cols : rows);
    this.store.edit({ op: "set", value: full ? 0 : 1, runs: Uint32Array.from(runs) });
    this.hoverLine(axis, k);
  }

  showGraph(show) {
    const small = Math.max(this.store.rows, this.store.cols) <= 32;
    show = !!show && small;
    this.graphBox.checked = show;
    if (show && !this.graph) {
      this.graph = new GraphView(this);
      this.body.append(this.graph.el);
    } else if (!show && this.graph) {
      this.graph.el.remove();
      this.graph = null;
    }
  }

  changed(changed, info) {
    if (changed === null || changed.length) {
      this.grid.update(changed);
      if (this.graph) this.graph.update(changed);
      this.updateStatus();
      if (this.hovered && this.hovered.cell) this.hoverCell(this.hovered.cell, true);
    }
    if (info.pending) this.updateButtons();
    if (info.notice) this.flash(info.notice);
    if (info.weight && this.hovered && this.hovered.cell) {
      const [i, j] = this.hovered.cell;
      if (info.weight.i === i && info.weight.j === j) {
        this.hovered.weight = info.weight.value;
        this.showCell(i, j);
      }
    }
  }

  updateButtons() {
    const pending = this.store.pending.length > 0;
    this.undoBtn.disabled = !(pending || this.model.get("undo_depth") > 0);
    this.redoBtn.disabled = !(this.model.get("redo_depth") > 0);
    this.root.dataset.pending = String(this.store.pending.length);
  }

  updateStatus() {
    const { count, n } = this.store;
    const pct = (100 * count) / n;
    this.count.textContent = `${count.toLocaleString()} of ${n.toLocaleString()} on · ${
      pct >= 10 || pct === 0 ? pct.toFixed(0) : pct.toFixed(1)}%`;
    this.root.dataset.count = String(count);
    this.root.dataset.version = String(this.store.version);
    this.updateButtons();
  }

  flash(text) {
    this.readout.textContent = text;
    this.readout.classList.add("mm-notice");
    setTimeout(() => this.readout.classList.remove("mm-notice"), 4000);
  }

  hint() {
    this.readout.textContent = "click: toggle · drag: paint · shift-drag: rectangle · "
      + "alt-drag: pan · ctrl-wheel: zoom";
  }

  label(axis, k) {
    const names = axis === 0 ? this.inputNames : this.unitNames;
    const base = `${axis === 0 ? this.inputLabel : this.unitLabel}[${k}]`;
    return names[k] ? `${base} ${names[k]}` : base;
  }

  hoverCell(cell, keep) {
    if (!cell) {
      this.hovered = null;
      this.grid.setHover(null);
      if (this.graph) this.graph.setHover(null);
      this.hint();
      return;
    }
    const [i, j] = cell;
    const same = this.hovered && this.hovered.cell && this.hovered.cell[0] === i
      && this.hovered.cell[1] === j;
    if (!same) this.hovered = { cell, weight: undefined };
    this.grid.setHover(cell);
    if (this.graph) this.graph.setHover(cell);
    this.showCell(i, j);
    if (!same && !keep && this.model.get("bound")) {
      clearTimeout(this.weightTimer);
      this.weightTimer = setTimeout(() => {
        if (this.hovered && this.hovered.cell === cell && !this.grid.gesture) {
          this.store.requestWeight(i, j);
        }
      }, 120);
    }
  }

  showCell(i, j) {
    const on = this.store.get(i, j) === 1;
    let text = `${this.label(0, i)} → ${this.label(1, j)} · ${on ? "on" : "off"}`;
    if (this.model.get("bound") && this.hovered) {
      const w = this.hovered.weight;
      if (w === undefined) text += " · w …";
      else if (w === null) text += "";
      else text += ` · w = ${w.toPrecision(4)}${on ? "" : " (masked: 0)"}`;
    }
    this.readout.textContent = text;
  }

  hoverLine(axis, k) {
    if (k === null || k === undefined) { this.hoverCell(null); return; }
    const { rows, cols, cells } = this.store;
    let on = 0;
    const total = axis === 0 ? cols : rows;
    for (let t = 0; t < total; t++) on += axis === 0 ? cells[k * cols + t] : cells[t * cols + k];
    this.readout.textContent = `${this.label(axis, k)}: ${on} of ${total} on · click: toggle all`;
  }

  listen(name, fn) {
    this.model.on(name, fn);
    this.handlers.push([name, fn]);
  }

  destroy() {
    this.unsubscribe();
    clearTimeout(this.weightTimer);
    this.handlers.forEach(([name, fn]) => this.model.off(name, fn));
    this.handlers = [];
  }
}

function initialize({ model }) {
  storeFor(model);
  return () => dropStore(model);
}

function render({ model, el }) {
  const editor = new Editor(model, el);
  return () => editor.destroy();
}

export default { initialize, render };
