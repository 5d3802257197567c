// Small images drawn pixel for pixel (putImageData); CSS scales them up with
// image-rendering: pixelated.

const NEG = [33, 102, 172], POS = [178, 24, 43], WHITE = [247, 247, 247], DARK = [63, 0, 125];

// Colour maps write the colour of a value in the map's range into out[k..k+2]
// (no allocation per pixel: a redraw paints ten of these pictures).
function lerpInto(out, k, a, b, t) {
  out[k] = a[0] + (b[0] - a[0]) * t;
  out[k + 1] = a[1] + (b[1] - a[1]) * t;
  out[k + 2] = a[2] + (b[2] - a[2]) * t;
}
const MAPS = {
  // signed values: blue - white - red, symmetric around 0
  diverging: (out, k, v, lim) => {
    const t = Math.max(-1, Math.min(1, v / lim));
    if (t < 0) lerpInto(out, k, WHITE, NEG, -t); else lerpInto(out, k, WHITE, POS, t);
  },
  // magnitudes from 0: white - dark purple
  magnitude: (out, k, v, lim) => lerpInto(out, k, WHITE, DARK, Math.max(0, Math.min(1, v / lim))),
};

export function makeCanvas(w, h, cls = 'heat') {
  const c = document.createElement('canvas');
  c.width = w; c.height = h; c.className = cls;
  return c;
}

// values: w*h numbers; opts.map 'diverging' | 'magnitude' with opts.limit,
// or 'gray' scaled to the values' own range.
export function drawHeatmap(canvas, values, w, h, { map = 'diverging', limit = 3 } = {}) {
  const ctx = canvas.getContext('2d');
  const img = ctx.createImageData(w, h);
  const px = img.data;
  let lo = Infinity, hi = -Infinity;
  if (map === 'gray') for (let i = 0; i < w * h; i++) { const v = values[i]; if (v < lo) lo = v; if (v > hi) hi = v; }
  const paint = MAPS[map];
  for (let i = 0; i < w * h; i++) {
    const v = values[i];
    if (map === 'gray') {
      const g = 255 * (hi > lo ? (v - lo) / (hi - lo) : 0.5);
      px[4 * i] = px[4 * i + 1] = px[4 * i + 2] = g;
    } else {
      paint(px, 4 * i, v, limit);
    }
    px[4 * i + 3] = 255;
  }
  ctx.putImageData(img, 0, 0);
}

// A colour scale for signed outputs that fits these values: their largest
// magnitude rounded up to a multiple of 0.5. Panels fix it once, so that all
// later pictures share the scale and changes are comparable.
export function symmetricLimit(values) {
  let m = 0;
  for (const v of values) m = Math.max(m, Math.abs(v));
  return Math.max(0.5, Math.ceil(m * 2) / 2);
}

export function drawRGBA(canvas, { width, height, rgba }) {
  const ctx = canvas.getContext('2d');
  ctx.putImageData(new ImageData(Uint8ClampedArray.from(rgba), width, height), 0, 0);
}

// A captioned canvas: <figure class="tile"><canvas/><figcaption/></figure>
export function tile(w, h, caption) {
  const fig = document.createElement('figure');
  fig.className = 'tile';
  const canvas = makeCanvas(w, h);
  const cap = document.createElement('figcaption');
  cap.textContent = caption;
  fig.append(canvas, cap);
  return { fig, canvas, cap };
}
