// Small images drawn pixel for pixel (putImageData); CSS scales them up with
// image-rendering: pixelated.

const NEG = [33, 102, 172], POS = [178, 24, 43], WHITE = [247, 247, 247], DARK = [63, 0, 125];

const lerp = (a, b, t) => [0, 1, 2].map((k) => a[k] + (b[k] - a[k]) * t);

// Colour maps take a value in the map's range and give [r, g, b].
const MAPS = {
  // signed values: blue - white - red, symmetric around 0
  diverging: (v, lim) => {
    const t = Math.max(-1, Math.min(1, v / lim));
    return t < 0 ? lerp(WHITE, NEG, -t) : lerp(WHITE, POS, t);
  },
  // magnitudes from 0: white - dark purple
  magnitude: (v, lim) => lerp(WHITE, DARK, Math.max(0, Math.min(1, v / lim))),
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
  let lo = Infinity, hi = -Infinity;
  if (map === 'gray') for (const v of values) { if (v < lo) lo = v; if (v > hi) hi = v; }
  for (let i = 0; i < w * h; i++) {
    const v = values[i];
    const rgb = map === 'gray' ? [255 * (hi > lo ? (v - lo) / (hi - lo) : 0.5)].flatMap((g) => [g, g, g]) : MAPS[map](v, limit);
    img.data[4 * i] = rgb[0]; img.data[4 * i + 1] = rgb[1]; img.data[4 * i + 2] = rgb[2]; img.data[4 * i + 3] = 255;
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
