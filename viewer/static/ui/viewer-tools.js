// minipacs study viewer: the pieces viewer.js builds on. Window remapping of a drawn image, measurements
// (length in mm, angle) kept in the image's own pixel coordinates, and the DICOM tag browser.
// No framework; text always goes in with textContent (MP.el).
"use strict";
(function () {
  const MP = window.MP;
  const T = (window.MPViewerTools = {});

  // --- window / level ------------------------------------------------------------------------

  /**
   * The 256-entry table that turns an 8-bit image rendered with window `from` into the same image with window
   * `to` (both {center, width}, PS3.3 C.11.2.1.2 linear). Values the first window clipped stay clipped: this is
   * the fast preview while the mouse drags; the server renders the exact image when it is released.
   */
  T.windowLut = function (from, to, monochrome1) {
    const lut = new Uint8ClampedArray(256);
    const low = from.center - from.width / 2;
    const toLow = to.center - to.width / 2;
    for (let v = 0; v < 256; v++) {
      let f = v / 255;
      if (monochrome1) f = 1 - f;
      const value = low + f * from.width;
      let g = (value - toLow) / to.width;
      g = Math.min(1, Math.max(0, g));
      if (monochrome1) g = 1 - g;
      lut[v] = Math.round(g * 255);
    }
    return lut;
  };

  /** A canvas holding `image` at its own size and its pixels, to remap while a window drag lasts. */
  T.remapper = function (image) {
    const width = image.naturalWidth || image.width;
    const height = image.naturalHeight || image.height;
    const canvas = document.createElement("canvas");
    canvas.width = width;
    canvas.height = height;
    const ctx = canvas.getContext("2d", { willReadFrequently: true });
    ctx.drawImage(image, 0, 0);
    const source = ctx.getImageData(0, 0, width, height);
    const target = ctx.createImageData(width, height);
    return {
      canvas: canvas,
      apply(lut) {
        const s = source.data, t = target.data;
        for (let i = 0; i < s.length; i += 4) {
          t[i] = lut[s[i]];
          t[i + 1] = lut[s[i + 1]];
          t[i + 2] = lut[s[i + 2]];
          t[i + 3] = 255;
        }
        ctx.putImageData(target, 0, 0);
        return canvas;
      },
    };
  };

  /** A window value as people read it: whole numbers, one decimal for narrow windows. */
  T.number = function (value) {
    return Math.abs(value) < 10 && value !== Math.round(value) ? value.toFixed(1) : String(Math.round(value));
  };

  // --- measurements ---------------------------------------------------------------------------

  /** Distance between two image points (column x, row y) in mm, or in pixels when `spacing` is missing. */
  T.length = function (a, b, spacing) {
    if (!spacing || (spacing.region && !(inside(a, spacing.region) && inside(b, spacing.region)))) {
      return { value: Math.hypot(b.x - a.x, b.y - a.y), unit: "px" }; // an ultrasound calibration holds in its region only
    }
    return { value: Math.hypot((b.x - a.x) * spacing.column, (b.y - a.y) * spacing.row), unit: spacing.kind };
  };

  function inside(p, box) {
    return p.x >= box[0] && p.y >= box[1] && p.x <= box[2] + 1 && p.y <= box[3] + 1;
  }

  /** The angle at vertex `b` between `a` and `c`, in degrees (measured in mm when the pixels are not square). */
  T.angle = function (a, b, c, spacing) {
    const sx = spacing ? spacing.column : 1, sy = spacing ? spacing.row : 1;
    const u = { x: (a.x - b.x) * sx, y: (a.y - b.y) * sy };
    const v = { x: (c.x - b.x) * sx, y: (c.y - b.y) * sy };
    const cos = (u.x * v.x + u.y * v.y) / (Math.hypot(u.x, u.y) * Math.hypot(v.x, v.y) || 1);
    return (Math.acos(Math.min(1, Math.max(-1, cos))) * 180) / Math.PI;
  };

  /** What a measurement reads, e.g. "50.0 mm", "12.3 mm (at detector)", "34.5°". */
  T.label = function (m, spacing) {
    if (m.type === "angle") {
      if (m.points.length < 3) return "";
      return T.angle(m.points[0], m.points[1], m.points[2], spacing).toFixed(1) + "°";
    }
    if (m.points.length < 2) return "";
    const length = T.length(m.points[0], m.points[1], spacing);
    const unit = { px: "px", patient: "mm", detector: "mmDetector", region: "mmRegion" }[length.unit];
    return length.value.toFixed(1) + " " + MP.t(unit);
  };

  /** Draw measurements (image coordinates) through `matrix` (image → canvas pixels), in screen-sized strokes. */
  T.drawMeasurements = function (ctx, matrix, measurements, spacing, scale) {
    ctx.save();
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.lineWidth = 1.5 * scale;
    ctx.font = `${Math.round(13 * scale)}px system-ui, sans-serif`;
    for (const m of measurements) {
      const points = m.points.map((p) => matrix.transformPoint(new DOMPoint(p.x, p.y)));
      ctx.strokeStyle = m.pending ? "#ffd54a" : "#4ade80";
      ctx.fillStyle = ctx.strokeStyle;
      ctx.beginPath();
      points.forEach((p, i) => (i ? ctx.lineTo(p.x, p.y) : ctx.moveTo(p.x, p.y)));
      ctx.stroke();
      for (const p of points) {
        ctx.beginPath();
        ctx.arc(p.x, p.y, 3 * scale, 0, 2 * Math.PI);
        ctx.stroke();
      }
      const text = T.label(m, spacing);
      if (text) {
        const at = points[points.length - 1];
        const x = at.x + 8 * scale, y = at.y - 8 * scale;
        ctx.lineWidth = 3 * scale;
        ctx.strokeStyle = "rgba(0,0,0,0.8)";
        ctx.strokeText(text, x, y);
        ctx.fillText(text, x, y);
        ctx.lineWidth = 1.5 * scale;
      }
    }
    ctx.restore();
  };

  // --- the DICOM tag browser -------------------------------------------------------------------

  /** The tag panel: loads an image's tags from `url` and filters them as the person types. */
  T.TagBrowser = class {
    constructor(panel) {
      this.panel = panel;
      this.body = panel.querySelector("tbody");
      this.filter = panel.querySelector("#tags-filter");
      this.title = panel.querySelector("#tags-title");
      this.rows = [];
      this.url = "";
      this.filter.addEventListener("input", () => this.show());
    }

    get open() {
      return !this.panel.hidden;
    }

    async load(url, number) {
      if (!this.open || url === this.url) return;
      this.url = url;
      this.title.textContent = MP.t("tagsFor", { n: number });
      const answer = await MP.api("GET", url);
      if (url !== this.url) return; // another image was asked for meanwhile
      if (!answer.ok) {
        this.rows = [];
        this.body.replaceChildren(MP.el("tr", {}, MP.el("td", { class: "error", colspan: 3 },
          (answer.body && answer.body.message) || MP.t("error"))));
        return;
      }
      this.rows = answer.body.tags;
      this.show();
    }

    show() {
      const words = this.filter.value.trim().toLowerCase().split(/\s+/).filter(Boolean);
      const shown = this.rows.filter((row) => {
        const text = `${row.tag} ${row.name} ${row.keyword} ${row.value}`.toLowerCase();
        return words.every((w) => text.includes(w));
      });
      const rows = shown.map((row) => MP.el("tr", { class: row.tag ? "" : "item", dataset: { keyword: row.keyword } },
        MP.el("td", { class: "tag" }, row.tag),
        MP.el("td", { class: "name", title: row.keyword }, "› ".repeat(Math.floor(row.depth / 2)) + row.name),
        MP.el("td", { class: "value" }, row.vr ? MP.el("span", { class: "vr" }, row.vr) : null, " ", row.value)));
      if (!rows.length) rows.push(MP.el("tr", {}, MP.el("td", { colspan: 3, class: "muted" }, MP.t("noTags"))));
      this.body.replaceChildren(...rows);
    }
  };
})();
