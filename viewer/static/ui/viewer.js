// minipacs study viewer (viewer/ui/study_viewer.py): a canvas per viewport, images from the server's rendered
// frames. A small low-quality JPEG first, the full-quality frame when the person pauses (not in low-bandwidth
// mode), neighbours prefetched. Window/level drags remap the shown 8-bit image in the browser and ask the server
// for the exact window on release. Measurements are kept in the image's own pixel coordinates, so zoom, pan,
// rotation and low-resolution previews do not change them.
//
// For the benchmark (bench/viewer_load.py) and tests: when an image is drawn, its canvas (canvas#viewport-N)
// gets data-sop, data-frame and data-quality ("low" | "full"), and window receives CustomEvent "mp:image".
"use strict";
(function () {
  const MP = window.MP;
  const T = window.MPViewerTools;
  const root = document.getElementById("viewer");
  if (!MP || !T || !root) return;
  const data = MP.data;

  const LOW = "viewport=256,256&quality=50";
  const FULL = "quality=90";
  const IDLE_MS = 250; // the full-quality frame is asked for once scrolling pauses this long
  const CACHE_SIZE = 800;
  const PARALLEL = 4;
  const CT_PRESETS = ["40,80", "-600,1500", "300,2500", "40,400", "50,350"];

  // --- studies ------------------------------------------------------------------------------

  const studies = new Map();

  /** A manifest (study_viewer.py) with each image's series-wide values filled in. */
  function addStudy(manifest) {
    const study = { uid: manifest.study.uid, base: `/studies/${manifest.study.uid}`, patient: manifest.patient,
                    info: manifest.study, series: [] };
    for (const s of manifest.series) {
      const images = s.images.map((image) => Object.assign({}, s.common, image));
      study.series.push({ uid: s.uid, number: s.number, modality: s.modality, description: s.description, images: images });
    }
    studies.set(study.uid, study);
    return study;
  }

  function findSeries(studyUid, seriesUid) {
    const study = studies.get(studyUid);
    const series = study && study.series.find((s) => s.uid === seriesUid);
    return series ? { study, series } : null;
  }

  // --- loading images: a small queue, current image first ------------------------------------

  const cache = new Map(); // url -> {state: "queued" | "loading" | "done" | "failed", img, promise, owner}
  const queue = [];
  let running = 0;

  function entry(url) {
    const found = cache.get(url);
    if (found) { // most recently used last
      cache.delete(url);
      cache.set(url, found);
    }
    return found;
  }

  function ready(url) {
    const e = entry(url);
    return e && e.state === "done" ? e.img : null;
  }

  /** The image at `url`; `urgent` jumps the queue. `owner` lets a later request drop this one if not started. */
  function load(url, urgent, owner) {
    const known = entry(url);
    if (known && known.state !== "failed") {
      if (urgent && known.state === "queued") {
        queue.splice(queue.indexOf(known), 1);
        queue.unshift(known);
        known.owner = owner || "";
      }
      return known.promise;
    }
    const e = { url: url, state: "queued", img: null, owner: owner || "" };
    e.promise = new Promise((resolve, reject) => { e.resolve = resolve; e.reject = reject; });
    e.promise.catch(() => {});
    cache.set(url, e);
    if (urgent) queue.unshift(e); else queue.push(e);
    trim();
    pump();
    return e.promise;
  }

  function pump() {
    while (running < PARALLEL && queue.length) {
      const e = queue.shift();
      e.state = "loading";
      running++;
      const img = new Image();
      img.decoding = "async";
      img.onload = () => {
        img.decode().catch(() => {}).then(() => {
          e.state = "done";
          e.img = img;
          running--;
          e.resolve(img);
          pump();
        });
      };
      img.onerror = () => {
        e.state = "failed";
        running--;
        cache.delete(e.url);
        e.reject(new Error(e.url));
        pump();
      };
      img.src = e.url;
    }
  }

  /** Forget queued requests of `owner` (a scroll moved past them). */
  function drop(owner) {
    for (let i = queue.length - 1; i >= 0; i--) {
      if (queue[i].owner === owner) {
        cache.delete(queue[i].url);
        queue.splice(i, 1);
      }
    }
  }

  function trim() {
    for (const [url, e] of cache) {
      if (cache.size <= CACHE_SIZE) break;
      if (e.state === "done" || e.state === "failed") cache.delete(url);
    }
  }

  // --- a viewport ---------------------------------------------------------------------------

  class Pane {
    constructor(n) {
      this.n = n;
      this.el = document.getElementById(`pane-${n}`);
      this.canvas = document.getElementById(`viewport-${n}`);
      this.ctx = this.canvas.getContext("2d");
      this.slider = this.el.querySelector(".stack-slider");
      this.overlay = {};
      for (const node of this.el.querySelectorAll("[data-overlay]")) this.overlay[node.dataset.overlay] = node;
      this.study = null;
      this.series = null;
      this.positions = []; // the stack: every frame of every image of the series, {i: image index, f: frame}
      this.pos = 0;
      this.token = 0;
      this.shown = null; // {source, quality, key}
      this.measurements = new Map(); // "sop:frame" -> [{type, points}]
      this.pending = null;
      this.fullTimer = 0;
      this.cine = null;
      this.resetView();
      this.slider.addEventListener("input", () => this.go(Number(this.slider.value) - 1));
      new ResizeObserver(() => this.resize()).observe(this.canvas);
    }

    resetView() {
      this.window = null; // {center, width} chosen by the person; null: the server's default
      this.invert = false;
      this.zoom = 1;
      this.pan = { x: 0, y: 0 };
      this.rotation = 0;
      this.flipH = false;
      this.flipV = false;
      this.forceFull = "";
    }

    get index() {
      return this.positions.length ? this.positions[this.pos].i : 0;
    }

    get frame() {
      return this.positions.length ? this.positions[this.pos].f : 1;
    }

    image() {
      return this.series ? this.series.images[this.index] : null;
    }

    key() {
      const im = this.image();
      return im ? `${im.sop}:${this.frame}` : "";
    }

    /** Show `series` of `study`, from image `index`. */
    setSeries(study, series, index) {
      this.stopCine();
      this.study = study;
      this.series = series;
      this.resetView();
      this.pending = null;
      this.positions = [];
      series.images.forEach((im, i) => { for (let f = 1; f <= im.frames; f++) this.positions.push({ i: i, f: f }); });
      this.pos = Math.max(0, Math.min(index || 0, this.positions.length - 1));
      this.slider.max = String(Math.max(this.count(), 1));
      this.slider.hidden = this.count() < 2;
      this.el.classList.toggle("prior", study.uid !== data.study);
      markSeries();
      this.show();
      if (this === active) toolbar();
    }

    /** How many steps the stack has: every frame of every image. */
    count() {
      return this.positions.length;
    }

    position() {
      return this.pos;
    }

    go(position) {
      if (!this.series) return;
      position = Math.max(0, Math.min(this.count() - 1, position));
      if (position === this.pos) return;
      this.pos = position;
      this.pending = null;
      this.show();
    }

    step(delta) {
      this.go(this.position() + delta);
    }

    windowParam() {
      const im = this.image();
      return this.window && im && im.grayscale ? `&window=${T.number(this.window.center)},${T.number(this.window.width)}` : "";
    }

    url(quality, image, frame) {
      const im = image || this.image();
      return `${this.study.base}/instances/${im.sop}/frames/${frame || this.frame}/rendered?` +
        (quality === "low" ? LOW : FULL) + this.windowParam();
    }

    wantsFull() {
      return !data.lowBandwidth || this.forceFull === this.key();
    }

    /** Draw the best image at hand for the current position, then fetch what is better. */
    show(preview) {
      const im = this.image();
      if (!im) return;
      const token = ++this.token;
      const owner = `pane${this.n}`;
      drop(owner);
      drop(`prefetch${this.n}`);
      clearTimeout(this.fullTimer);
      this.hint("");
      const full = this.url("full"), low = this.url("low");
      const fullImg = ready(full);
      if (fullImg) {
        this.present(fullImg, "full");
        this.prefetch();
        if (this.wantsFull()) this.prefetch(true);
        return;
      }
      const lowImg = ready(low);
      if (lowImg) {
        this.present(lowImg, "low");
        this.later(full, token);
        this.prefetch();
        return;
      }
      if (preview && this.shown && this.shown.key === this.key()) {
        // A window drag's remapped image is on screen: go straight to the exact rendering.
        const quality = this.wantsFull() ? "full" : "low";
        load(quality === "full" ? full : low, true, owner).then((img) => token === this.token && this.present(img, quality),
          () => token === this.token && this.hint(MP.t("failed")));
        this.overlays();
        return;
      }
      load(low, true, owner).then((img) => {
        if (token !== this.token) return;
        this.present(img, "low");
        this.later(full, token);
      }, () => {
        if (token !== this.token) return;
        load(full, true, owner).then((img) => token === this.token && this.present(img, "full"), () => {
          if (token !== this.token) return;
          this.hint(MP.t("failed"));
          // An image gives no status: ask the manifest, so an ended session goes to the login page (MP.api).
          MP.api("GET", `${this.study.base}/manifest`);
        });
      });
      this.prefetch(); // queued behind this image: a fast scroll finds the next ones on their way
      this.overlays();
    }

    /** The full-quality frame, once the person has paused on this image. */
    later(full, token) {
      if (!this.wantsFull() || this.cine) return;
      this.fullTimer = setTimeout(() => {
        if (token !== this.token) return;
        load(full, true, `pane${this.n}`).then((img) => {
          if (token !== this.token) return;
          this.present(img, "full");
          this.prefetch(true);
        }, () => {});
      }, IDLE_MS);
    }

    /** Previews of the next and previous images; full-quality ones of the nearest when `full`. */
    prefetch(full) {
      if (!this.series || this.cine) return;
      const at = this.position(), count = this.count();
      const near = full ? (data.lowBandwidth ? [] : [1, -1, 2]) : [1, 2, -1, 3, 4, -2, 5, 6, -3, 7, 8];
      for (const d of near) {
        const p = at + d;
        if (p < 0 || p >= count) continue;
        const q = this.positions[p];
        load(this.url(full ? "full" : "low", this.series.images[q.i], q.f), false, `prefetch${this.n}`);
      }
    }

    present(source, quality) {
      const im = this.image();
      this.shown = { source: source, quality: quality, key: this.key() };
      this.draw();
      const c = this.canvas;
      c.dataset.sop = im.sop;
      c.dataset.frame = String(this.frame);
      c.dataset.quality = quality;
      this.overlays();
      window.dispatchEvent(new CustomEvent("mp:image", { detail: {
        viewport: this.n, study: this.study.uid, series: this.series.uid, sop: im.sop, frame: this.frame,
        quality: quality, index: this.position() + 1, count: this.count() } }));
      if (this === active) tagsFollow();
    }

    resize() {
      const dpr = window.devicePixelRatio || 1;
      const w = Math.max(1, Math.round(this.canvas.clientWidth * dpr));
      const h = Math.max(1, Math.round(this.canvas.clientHeight * dpr));
      if (this.canvas.width !== w || this.canvas.height !== h) {
        this.canvas.width = w;
        this.canvas.height = h;
        this.draw();
      }
    }

    /** Image pixel (column, row) → CSS pixel of the canvas. */
    matrix() {
      const im = this.image();
      const W = this.canvas.clientWidth, H = this.canvas.clientHeight;
      const turned = this.rotation % 2 === 1;
      const iw = turned ? im.rows : im.columns, ih = turned ? im.columns : im.rows;
      const scale = Math.min(W / iw, H / ih) * this.zoom;
      return new DOMMatrix().translate(W / 2 + this.pan.x, H / 2 + this.pan.y).scale(scale)
        .scale(this.flipH ? -1 : 1, this.flipV ? -1 : 1).rotate(90 * this.rotation)
        .translate(-im.columns / 2, -im.rows / 2);
    }

    /** CSS pixels per image pixel. */
    scale() {
      const m = this.matrix();
      return Math.hypot(m.a, m.b);
    }

    /** A mouse event's position in image pixels. */
    point(event) {
      const rect = this.canvas.getBoundingClientRect();
      const p = this.matrix().inverse().transformPoint(new DOMPoint(event.clientX - rect.left, event.clientY - rect.top));
      return { x: p.x, y: p.y };
    }

    draw(source) {
      const ctx = this.ctx, c = this.canvas;
      ctx.setTransform(1, 0, 0, 1, 0, 0);
      ctx.fillStyle = "#000";
      ctx.fillRect(0, 0, c.width, c.height);
      const im = this.image();
      source = source || (this.shown && this.shown.key === this.key() ? this.shown.source : null);
      if (!im || !source) return;
      const dpr = window.devicePixelRatio || 1;
      const m = new DOMMatrix().scale(dpr).multiply(this.matrix());
      ctx.setTransform(m);
      ctx.imageSmoothingEnabled = true;
      ctx.imageSmoothingQuality = "high";
      ctx.filter = this.invert ? "invert(1)" : "none";
      ctx.drawImage(source, 0, 0, im.columns, im.rows);
      ctx.filter = "none";
      const list = (this.measurements.get(this.key()) || []).concat(this.pending ? [this.pending] : []);
      T.drawMeasurements(ctx, m, list, im.spacing, dpr);
    }

    /** The window the shown image was rendered with: the person's, the header's first, else the value range. */
    currentWindow() {
      const im = this.image();
      if (this.window) return this.window;
      if (im.windows && im.windows.length) return { center: im.windows[0].center, width: im.windows[0].width };
      if (im.range) return { center: (im.range[0] + im.range[1]) / 2, width: Math.max(1, im.range[1] - im.range[0]) };
      return { center: 128, width: 256 };
    }

    setWindow(win) {
      const im = this.image();
      if (!im || !im.grayscale) return;
      this.window = win ? { center: win.center, width: Math.max(1, win.width) } : null;
      this.show();
    }

    hint(text) {
      this.overlay.hint.textContent = text;
      this.overlay.hint.hidden = !text;
    }

    overlays() {
      const im = this.image();
      if (!im) return;
      const p = this.study.patient, s = this.study.info, o = this.overlay;
      const lines = (node, ...texts) => node.replaceChildren(...texts.filter(Boolean).map((t) => MP.el("div", {}, t)));
      const prior = this.study.uid !== data.study;
      lines(o.patient, MP.person(p.name), p.id,
        [p.birthDate ? `${MP.t("born")} ${MP.date(p.birthDate)}` : "", p.sex].filter(Boolean).join(" · "));
      lines(o.study, prior ? MP.t("prior") : (panes[1] && !panes[1].el.hidden ? MP.t("current") : ""),
        [MP.date(s.date), s.accession].filter(Boolean).join(" · "), s.description,
        `${MP.t("series")}: ${this.series.number ?? ""} ${this.series.description || this.series.modality}`.trim());
      const single = this.series.images.length === 1;
      const where = [];
      if (im.location !== null && im.location !== undefined) where.push(`${MP.t("location")} ${im.location.toFixed(1)} mm`);
      if (im.thickness) where.push(`${MP.t("thickness")} ${T.number(im.thickness)} mm`);
      lines(o.image, single ? "" : `${MP.t("image")}: ${this.index + 1}/${this.series.images.length}`,
        im.frames > 1 ? `${MP.t("frame")}: ${this.frame}/${im.frames}` : "", where.join(" · "),
        [im.view, im.laterality].filter(Boolean).join(" "));
      const win = im.grayscale ? this.currentWindow() : null;
      const shownQuality = this.shown && this.shown.key === this.key() ? this.shown.quality : "";
      lines(o.display, win ? MP.el("span", { class: "wl", dataset: { window: `${T.number(win.center)},${T.number(win.width)}` } },
        MP.t("windowShort", { w: T.number(win.width), c: T.number(win.center) })) : "",
        `${MP.t("zoom")} ${Math.round(this.scale() * 100)}%`,
        [this.rotation ? `↻${this.rotation * 90}°` : "", this.flipH ? "⇆" : "", this.flipV ? "⇅" : "",
         this.invert ? MP.t("inverted") : ""].filter(Boolean).join(" "),
        shownQuality === "low" ? MP.t("preview") : "");
      this.slider.value = String(this.position() + 1);
      this.listMeasurements();
    }

    listMeasurements() {
      const im = this.image();
      const list = this.measurements.get(this.key()) || [];
      this.overlay.measurements.replaceChildren(...list.map((m, i) => MP.el("li", { dataset: { measure: m.type } },
        MP.el("span", { class: "measure-value" }, T.label(m, im.spacing)),
        MP.el("button", { type: "button", class: "link", title: MP.t("delete"), "aria-label": MP.t("delete"),
          onclick: () => { list.splice(i, 1); this.draw(); this.listMeasurements(); } }, "×"))));
    }

    // --- cine ---

    startCine(fps) {
      if (!this.series || this.count() < 2) return;
      this.stopCine();
      clearTimeout(this.fullTimer);
      const cine = (this.cine = { fps: fps, timer: 0 });
      const quality = data.lowBandwidth ? "low" : "full";
      // A multi-frame image plays its frames; a stack of single images plays the stack.
      const at = this.index;
      const loop = this.image().frames > 1 ? this.positions.map((q, p) => (q.i === at ? p : -1)).filter((p) => p >= 0)
        : this.positions.map((q, p) => p);
      const urlAt = (p) => this.url(quality, this.series.images[this.positions[p].i], this.positions[p].f);
      for (const p of loop) load(urlAt(p), false, "cine");
      const tick = () => {
        if (this.cine !== cine) return;
        const next = loop[(loop.indexOf(this.pos) + 1) % loop.length];
        const img = ready(urlAt(next));
        if (img) {
          this.pos = next;
          this.token++;
          this.present(img, quality);
        } else load(urlAt(next), true, "cine");
        cine.timer = setTimeout(tick, 1000 / cine.fps);
      };
      cine.timer = setTimeout(tick, 1000 / fps);
      cineButton();
    }

    stopCine() {
      if (!this.cine) return;
      clearTimeout(this.cine.timer);
      this.cine = null;
      drop("cine");
      cineButton();
      this.show();
    }
  }

  // --- the page -----------------------------------------------------------------------------

  const panes = [new Pane(0), new Pane(1)];
  let active = panes[0];
  let tool = "window";
  let linked = false;
  const viewports = document.getElementById("viewports");
  const body = document.getElementById("viewer-body");
  const presets = document.getElementById("presets");
  const fps = document.getElementById("cine-fps");
  const tags = new T.TagBrowser(document.getElementById("tags-panel"));

  function activate(pane) {
    if (active === pane) return;
    active = pane;
    for (const p of panes) p.el.classList.toggle("active", p === pane);
    markSeries();
    toolbar();
    tagsFollow();
  }

  /** The toolbar follows the active viewport: header windows, CT presets, cine speed. */
  function toolbar() {
    const im = active.image();
    const group = document.getElementById("header-presets");
    group.replaceChildren(...((im && im.windows) || []).map((w, i) => MP.el("option",
      { value: `${w.center},${w.width}` }, `${w.name || MP.t("headerWindow") + " " + (i + 1)} ${T.number(w.center)}/${T.number(w.width)}`)));
    group.hidden = !group.children.length;
    document.getElementById("ct-presets").hidden = !(active.series && active.series.modality === "CT");
    presets.disabled = !(im && im.grayscale);
    presets.value = active.window ? `${T.number(active.window.center)},${T.number(active.window.width)}` : "";
    if (presets.selectedIndex < 0) presets.value = "";
    if (im && im.frameTime && !active.cine) fps.value = String(Math.max(1, Math.min(60, Math.round(1000 / im.frameTime))));
    cineButton();
  }

  function cineButton() {
    const button = document.getElementById("cine-play");
    const playing = Boolean(active.cine);
    button.setAttribute("aria-pressed", String(playing));
    button.firstChild.textContent = playing ? "❚❚ " : "▶ ";
    button.querySelector(".cine-label").textContent = MP.t(playing ? "pause" : "play");
    button.disabled = !(active.count() > 1);
  }

  function markSeries() {
    for (const b of document.querySelectorAll(".series-item")) {
      const shownIn = panes.filter((p) => p.series && p.series.uid === b.dataset.series).map((p) => p.n);
      b.classList.toggle("shown", shownIn.length > 0);
      b.classList.toggle("in-active", Boolean(active.series && active.series.uid === b.dataset.series));
    }
  }

  function setLayout(two) {
    panes[1].el.hidden = !two;
    viewports.classList.toggle("layout-2", two);
    viewports.classList.toggle("layout-1", !two);
    document.querySelector('[data-action="layout"]').setAttribute("aria-pressed", String(two));
    if (two && !panes[1].series && panes[0].study) {
      const list = panes[0].study.series;
      const other = list[(list.indexOf(panes[0].series) + 1) % list.length];
      panes[1].setSeries(panes[0].study, other, 0);
    }
    if (!two && active === panes[1]) activate(panes[0]);
    for (const p of panes) p.overlays();
  }

  function tagsFollow() {
    const im = active.image();
    if (!tags.open || !im) return;
    tags.load(`${active.study.base}/instances/${im.sop}/tags`, active.index + 1);
  }

  // --- mouse and keys on the viewports ---

  let drag = null;

  for (const pane of panes) {
    const canvas = pane.canvas;
    canvas.addEventListener("contextmenu", (e) => e.preventDefault());
    canvas.addEventListener("pointerdown", (e) => {
      activate(pane);
      canvas.focus({ preventScroll: true });
      if (!pane.image() || !pane.shown) return;
      const mode = e.button === 1 ? "pan" : e.button === 2 ? "zoom" : tool;
      if (mode === "length" || mode === "angle") return measureDown(pane, e, mode);
      e.preventDefault();
      canvas.setPointerCapture(e.pointerId);
      drag = { pane: pane, mode: mode, x: e.clientX, y: e.clientY, zoom: pane.zoom, pan: { ...pane.pan }, frame: 0 };
      if (mode === "window") {
        const im = pane.image();
        if (!im.grayscale || !pane.shown) return (drag = null);
        drag.from = pane.currentWindow();
        drag.to = drag.from;
        drag.remap = T.remapper(pane.shown.source);
      }
    });
    canvas.addEventListener("pointermove", (e) => {
      if (pane.pending && pane.pending.live) {
        pane.pending.points[pane.pending.points.length - 1] = pane.point(e);
        pane.draw();
      }
      if (!drag || drag.pane !== pane) return;
      const dx = e.clientX - drag.x, dy = e.clientY - drag.y;
      if (drag.mode === "pan") pane.pan = { x: drag.pan.x + dx, y: drag.pan.y + dy };
      else if (drag.mode === "zoom") pane.zoom = Math.max(0.05, Math.min(40, drag.zoom * Math.exp(-dy / 200)));
      else if (drag.mode === "window") {
        const k = Math.max(drag.from.width, 10) / 300;
        drag.to = { center: drag.from.center + dy * k, width: Math.max(1, drag.from.width + dx * k) };
      }
      if (!drag.frame) {
        drag.frame = requestAnimationFrame(() => {
          if (!drag) return;
          drag.frame = 0;
          if (drag.mode === "window") {
            const lut = T.windowLut(drag.from, drag.to, pane.image().monochrome1);
            pane.draw(drag.remap.apply(lut));
            const o = pane.overlay.display.firstChild;
            if (o) o.textContent = MP.t("windowShort", { w: T.number(drag.to.width), c: T.number(drag.to.center) });
          } else {
            pane.draw();
            pane.overlays();
          }
        });
      }
    });
    const release = (e) => {
      if (pane.pending && pane.pending.live) return measureUp(pane, e);
      if (!drag || drag.pane !== pane) return;
      const done = drag;
      drag = null;
      if (done.frame) cancelAnimationFrame(done.frame);
      if (done.mode === "window" && (done.to.center !== done.from.center || done.to.width !== done.from.width)) {
        // Keep the remapped image on screen until the server's rendering with the exact window arrives.
        const preview = done.remap.apply(T.windowLut(done.from, done.to, pane.image().monochrome1));
        pane.window = { center: Math.round(done.to.center), width: Math.max(1, Math.round(done.to.width)) };
        pane.shown = { source: preview, quality: pane.shown.quality, key: pane.key() };
        presets.value = "";
        pane.draw();
        pane.show(true);
      }
      pane.overlays();
    };
    canvas.addEventListener("pointerup", release);
    canvas.addEventListener("pointercancel", release);
    canvas.addEventListener("wheel", (e) => {
      e.preventDefault();
      activate(pane);
      if (!pane.image()) return;
      if (e.ctrlKey || e.metaKey) return zoomAt(pane, e, Math.exp(-e.deltaY / 300));
      wheelStep(pane, e.deltaMode ? e.deltaY * 40 : e.deltaY);
    }, { passive: false });
    canvas.addEventListener("dblclick", () => {
      pane.zoom = 1;
      pane.pan = { x: 0, y: 0 };
      pane.draw();
      pane.overlays();
    });
    pane.el.addEventListener("dragover", (e) => {
      if (e.dataTransfer.types.includes("application/x-minipacs-series")) e.preventDefault();
    });
    pane.el.addEventListener("drop", (e) => {
      const text = e.dataTransfer.getData("application/x-minipacs-series");
      if (!text) return;
      e.preventDefault();
      const [studyUid, seriesUid] = text.split("|");
      const found = findSeries(studyUid, seriesUid);
      if (found) {
        activate(pane);
        pane.setSeries(found.study, found.series, 0);
      }
    });
  }

  let wheelRest = 0;
  /** One wheel notch is one image; a touchpad's small deltas add up to one. */
  function wheelStep(pane, delta) {
    let steps;
    if (Math.abs(delta) >= 50) steps = Math.sign(delta);
    else {
      wheelRest += delta;
      steps = Math.trunc(wheelRest / 50);
      wheelRest -= steps * 50;
    }
    if (steps) scroll(pane, steps);
  }

  function scroll(pane, steps) {
    pane.step(steps);
    if (linked) for (const other of panes) if (other !== pane && !other.el.hidden) other.step(steps);
  }

  function zoomAt(pane, e, factor) {
    const rect = pane.canvas.getBoundingClientRect();
    const x = e.clientX - rect.left - rect.width / 2, y = e.clientY - rect.top - rect.height / 2;
    const zoom = Math.max(0.05, Math.min(40, pane.zoom * factor));
    const f = zoom / pane.zoom;
    pane.pan = { x: x - (x - pane.pan.x) * f, y: y - (y - pane.pan.y) * f };
    pane.zoom = zoom;
    pane.draw();
    pane.overlays();
  }

  function zoomBy(pane, factor) {
    pane.zoom = Math.max(0.05, Math.min(40, pane.zoom * factor));
    pane.pan = { x: pane.pan.x * factor, y: pane.pan.y * factor };
    pane.draw();
    pane.overlays();
  }

  // Measurements: press, drag, release; or click, then click again (three clicks for an angle).
  function measureDown(pane, e, type) {
    e.preventDefault();
    const p = pane.point(e);
    if (!pane.pending || pane.pending.type !== type) {
      pane.pending = { type: type, points: [p, { ...p }], live: true, pending: true, x: e.clientX, y: e.clientY };
      pane.hint(MP.t(type === "angle" ? "clickAngle" : "clickSecond"));
    } else {
      pane.pending.points[pane.pending.points.length - 1] = p;
      pane.pending.x = e.clientX;
      pane.pending.y = e.clientY;
    }
    pane.draw();
  }

  function measureUp(pane, e) {
    const m = pane.pending;
    const p = pane.point(e);
    m.points[m.points.length - 1] = p;
    const moved = Math.hypot(e.clientX - m.x, e.clientY - m.y) > 4;
    const needed = m.type === "angle" ? 3 : 2;
    if (!moved && m.points.length === 2 && pointsEqual(m.points[0], m.points[1], pane)) {
      pane.draw(); // a click: the second point comes with the next click
      return;
    }
    if (m.points.length < needed) {
      m.points.push({ ...p });
      pane.draw();
      return;
    }
    const list = pane.measurements.get(pane.key()) || [];
    list.push({ type: m.type, points: m.points.map((q) => ({ x: q.x, y: q.y })) });
    pane.measurements.set(pane.key(), list);
    pane.pending = null;
    pane.hint("");
    pane.draw();
    pane.listMeasurements();
  }

  function pointsEqual(a, b, pane) {
    return Math.hypot(a.x - b.x, a.y - b.y) * pane.scale() < 4;
  }

  document.addEventListener("keydown", (e) => {
    const target = e.target;
    if (target instanceof HTMLElement && (target.closest("input, textarea, select, [contenteditable]") ||
        target.closest("#report-panel") || (target.closest("button, a") && [" ", "Enter"].includes(e.key)))) return;
    if (e.altKey || e.metaKey || (e.ctrlKey && !["PageUp", "PageDown"].includes(e.key))) return;
    const pane = active;
    const count = pane.count();
    const actions = {
      ArrowDown: () => scroll(pane, 1), ArrowRight: () => scroll(pane, 1),
      ArrowUp: () => scroll(pane, -1), ArrowLeft: () => scroll(pane, -1),
      PageDown: () => scroll(pane, Math.max(1, Math.round(count / 10))),
      PageUp: () => scroll(pane, -Math.max(1, Math.round(count / 10))),
      Home: () => pane.go(0), End: () => pane.go(count - 1),
      " ": () => action("cine"), Escape: () => cancelOrReset(pane),
      "+": () => action("zoom-in"), "=": () => action("zoom-in"), "-": () => action("zoom-out"),
      f: () => action("fit"), i: () => action("invert"), r: () => action("rotate"), h: () => action("flip-h"),
      v: () => action("flip-v"), t: () => action("tags"), w: () => setTool("window"), p: () => setTool("pan"),
      z: () => setTool("zoom"), l: () => setTool("length"), a: () => setTool("angle"),
    };
    const preset = "12345".indexOf(e.key);
    if (preset >= 0 && pane.series && pane.series.modality === "CT") return applyPreset(CT_PRESETS[preset], e);
    const run = actions[e.key] || actions[e.key.toLowerCase()];
    if (!run) return;
    e.preventDefault();
    run();
  });

  function cancelOrReset(pane) {
    if (pane.pending) {
      pane.pending = null;
      pane.hint("");
      pane.draw();
    } else action("reset");
  }

  function applyPreset(value, e) {
    if (e) e.preventDefault();
    const [center, width] = value.split(",").map(Number);
    active.setWindow(value ? { center, width } : null);
    presets.value = value;
  }

  function setTool(name) {
    tool = name;
    for (const b of document.querySelectorAll("[data-tool]")) {
      b.classList.toggle("active", b.dataset.tool === name);
      b.setAttribute("aria-pressed", String(b.dataset.tool === name));
    }
    for (const p of panes) {
      p.canvas.dataset.tool = name;
      if (p.pending) {
        p.pending = null;
        p.hint("");
        p.draw();
      }
    }
  }

  function action(name) {
    const pane = active;
    const redraw = () => { pane.draw(); pane.overlays(); };
    switch (name) {
      case "fit": pane.zoom = 1; pane.pan = { x: 0, y: 0 }; return redraw();
      case "zoom-in": return zoomBy(pane, 1.25);
      case "zoom-out": return zoomBy(pane, 0.8);
      case "invert": pane.invert = !pane.invert; return redraw();
      case "rotate": pane.rotation = (pane.rotation + 1) % 4; return redraw();
      case "flip-h": pane.flipH = !pane.flipH; return redraw();
      case "flip-v": pane.flipV = !pane.flipV; return redraw();
      case "reset":
        pane.resetView();
        pane.measurements.delete(pane.key());
        pane.pending = null;
        presets.value = "";
        pane.show();
        return redraw();
      case "cine":
        if (pane.cine) pane.stopCine();
        else pane.startCine(Math.max(1, Math.min(60, Number(fps.value) || 10)));
        return;
      case "layout": return setLayout(panes[1].el.hidden);
      case "sync":
        linked = !linked;
        document.querySelector('[data-action="sync"]').setAttribute("aria-pressed", String(linked));
        return;
      case "tags": {
        const panel = document.getElementById("tags-panel");
        panel.hidden = !panel.hidden;
        body.classList.toggle("tags-open", !panel.hidden); // the tags take the report's place while open
        for (const b of document.querySelectorAll('[data-action="tags"]')) b.setAttribute("aria-pressed", String(!panel.hidden));
        tags.url = "";
        if (!panel.hidden) {
          tagsFollow();
          document.getElementById("tags-filter").focus();
        }
        return;
      }
      case "report": {
        const hidden = body.classList.toggle("no-report");
        document.querySelector('[data-action="report"]').setAttribute("aria-pressed", String(!hidden));
        return;
      }
      case "full-quality":
        pane.forceFull = pane.key();
        if (pane.image()) load(pane.url("full"), true, `pane${pane.n}`).then((img) => {
          if (pane.forceFull === pane.key()) pane.present(img, "full");
        }, () => pane.hint(MP.t("failed")));
        return;
    }
  }

  for (const b of document.querySelectorAll("[data-tool]")) b.addEventListener("click", () => setTool(b.dataset.tool));
  for (const b of document.querySelectorAll("[data-action]")) b.addEventListener("click", () => action(b.dataset.action));
  presets.addEventListener("change", () => applyPreset(presets.value));
  fps.addEventListener("change", () => {
    const value = Math.max(1, Math.min(60, Number(fps.value) || 10));
    fps.value = String(value);
    if (active.cine) active.cine.fps = value;
  });

  const lowBandwidth = document.getElementById("low-bandwidth");
  if (lowBandwidth) {
    lowBandwidth.addEventListener("change", async () => {
      data.lowBandwidth = lowBandwidth.checked;
      const form = new URLSearchParams({ low_bandwidth: lowBandwidth.checked ? "1" : "0", csrf_token: data.csrf || "",
                                         next: location.pathname });
      try {
        const answer = await fetch("/ui/preferences", { method: "POST", body: form, credentials: "same-origin",
                                                         redirect: "manual", headers: { "X-CSRF-Token": data.csrf || "" } });
        if (answer.type !== "opaqueredirect" && !answer.ok) throw new Error(String(answer.status));
        MP.toast(MP.t(lowBandwidth.checked ? "lowBandwidthOn" : "lowBandwidthOff"));
      } catch (err) {
        MP.toast(MP.t("error"), true);
      }
      for (const p of panes) if (p.series) p.show();
    });
  }

  // --- the series strip and prior studies ---

  function wireSeries(button) {
    button.addEventListener("click", () => {
      const found = findSeries(button.dataset.study, button.dataset.series);
      if (found) active.setSeries(found.study, found.series, 0);
    });
    button.addEventListener("dragstart", (e) => {
      e.dataTransfer.setData("application/x-minipacs-series", `${button.dataset.study}|${button.dataset.series}`);
    });
  }

  function seriesButton(study, s) {
    const middle = s.images[Math.floor(s.images.length / 2)];
    const count = s.images.length === 1 && s.images[0].frames > 1 ? MP.t("frames", { n: s.images[0].frames })
      : MP.t("images", { n: s.images.length });
    const button = MP.el("button", { type: "button", class: "series-item", draggable: "true",
      dataset: { study: study.uid, series: s.uid } },
      MP.el("img", { src: `${study.base}/instances/${middle.sop}/thumbnail`, alt: "", loading: "lazy", width: 96, height: 96 }),
      MP.el("span", { class: "series-text" },
        MP.el("span", { class: "series-title" }, `${s.modality}${s.number !== null && s.number !== undefined ? " " + s.number : ""}`),
        MP.el("span", { class: "series-description" }, s.description || ""),
        MP.el("span", { class: "series-count" }, count)));
    wireSeries(button);
    return MP.el("li", {}, button);
  }

  async function loadPriors() {
    const list = document.getElementById("priors");
    if (!list || !data.priors) return;
    const answer = await MP.api("GET", `/studies/${data.study}/priors`);
    if (!answer.ok) {
      list.replaceChildren(MP.el("li", { class: "muted" }, MP.t("priorsFailed")));
      return;
    }
    const priors = answer.body.priors;
    if (!priors.length) {
      list.replaceChildren(MP.el("li", { class: "muted" }, MP.t("noPriors")));
      return;
    }
    list.replaceChildren(...priors.map((prior) => {
      const series = MP.el("ul", { class: "series-list", hidden: true });
      const button = MP.el("button", { type: "button", class: "prior-item", dataset: { study: prior.uid } },
        MP.el("span", { class: "prior-date" }, MP.date(prior.date)),
        MP.el("span", { class: "prior-modality" }, prior.modalities),
        MP.el("span", { class: "prior-description" }, prior.description || prior.accession || ""));
      button.addEventListener("click", () => openPrior(prior.uid, button, series));
      return MP.el("li", {}, button, series);
    }));
  }

  async function openPrior(uid, button, list) {
    let study = studies.get(uid);
    if (!study) {
      button.disabled = true;
      const answer = await MP.api("GET", `/studies/${uid}/manifest`);
      button.disabled = false;
      if (!answer.ok) {
        MP.toast((answer.body && answer.body.message) || MP.t("error"), true);
        return;
      }
      study = addStudy(answer.body);
      list.replaceChildren(...study.series.map((s) => seriesButton(study, s)));
    }
    list.hidden = false;
    button.classList.add("open");
    if (!study.series.length) return;
    // Compare: the prior goes beside the current study, in its series of the same modality if there is one.
    const current = panes[0].series;
    const match = study.series.find((s) => current && s.modality === current.modality) || study.series[0];
    setLayout(true);
    activate(panes[1]);
    panes[1].setSeries(study, match, 0);
  }

  // --- start ---

  const current = addStudy(data.manifest);
  for (const b of document.querySelectorAll(".series-item")) wireSeries(b);
  setTool("window");
  for (const p of panes) p.resize();
  if (current.series.length) panes[0].setSeries(current, current.series[0], 0);
  toolbar();
  loadPriors();
})();
