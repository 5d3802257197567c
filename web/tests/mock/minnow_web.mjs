// A stand-in for the emscripten build of minnow (web/public/wasm/minnow_web.mjs),
// with the same API and JSON shapes, so the page and its browser test can be
// developed before the real module exists. Not shipped: tests/mock/install.mjs
// copies it into public/wasm/ for local runs only.
//
// The numbers are synthetic but follow the same statistics: procedurally drawn
// "images", a 4-channel feature map per image, batch statistics computed
// exactly from per-image sums, LayerNorm over each sample's own (C,H,W).

const W = 32, H = 32, HW = W * H, C = 4, EPS = 1e-5;

function rng(seed) {
  let a = (seed >>> 0) + 0x9e3779b9;
  return () => {
    a |= 0; a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
function gauss(r) {
  return Math.sqrt(-2 * Math.log(r() + 1e-12)) * Math.cos(2 * Math.PI * r());
}

// One synthetic image: a base colour, a gradient and a blob, plus pixel noise.
function makeImage(r) {
  const rgb = new Float32Array(3 * HW);
  const base = [r(), r(), r()], blob = [r(), r(), r()];
  const cx = r() * W, cy = r() * H, rad = 4 + r() * 10, gx = r() - 0.5, gy = r() - 0.5;
  for (let y = 0; y < H; y++)
    for (let x = 0; x < W; x++) {
      const inBlob = Math.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * rad * rad));
      for (let k = 0; k < 3; k++) {
        const v = base[k] * (1 - inBlob) + blob[k] * inBlob + 0.3 * (gx * (x - 16) + gy * (y - 16)) / 16 + 0.05 * gauss(r);
        rgb[k * HW + y * W + x] = Math.min(1, Math.max(0, v));
      }
    }
  return rgb;
}

// "conv1": four fixed mixtures of the colour planes and a horizontal edge.
function features(rgb) {
  const f = new Float32Array(C * HW);
  for (let i = 0; i < HW; i++) {
    const R = rgb[i], G = rgb[HW + i], B = rgb[2 * HW + i];
    const Rn = rgb[(i % W) < W - 1 ? i + 1 : i];
    f[i] = 0.3 * R + 0.6 * G + 0.1 * B;
    f[HW + i] = R - B;
    f[2 * HW + i] = 4 * (Rn - R);
    f[3 * HW + i] = G - 0.5 * (R + B);
  }
  return f;
}

const imageSums = (f) => {
  const s = new Float64Array(C), q = new Float64Array(C);
  for (let c = 0; c < C; c++)
    for (let i = 0; i < HW; i++) { const v = f[c * HW + i]; s[c] += v; q[c] += v * v; }
  return { s, q };
};

const N_POP = 3000, N_POOL = 16;
let pop = null; // {feats, sums, mean[C], var[C], pool rgb}

function ensure() { if (!pop) throw new Error('load_data has not been called'); }

function build() {
  const r = rng(1234);
  const feats = [], sums = [], rgbs = [];
  for (let n = 0; n < N_POP; n++) {
    const rgb = makeImage(r);
    const f = features(rgb);
    feats.push(f); sums.push(imageSums(f));
    if (n < N_POOL) rgbs.push(rgb);
  }
  const mean = new Float64Array(C), vr = new Float64Array(C);
  for (const { s, q } of sums) for (let c = 0; c < C; c++) { mean[c] += s[c]; vr[c] += q[c]; }
  for (let c = 0; c < C; c++) { mean[c] /= N_POP * HW; vr[c] = vr[c] / (N_POP * HW) - mean[c] ** 2; }
  pop = { feats, sums, rgbs, mean, var: vr };
}

// B distinct population indices, the first one fixed when `first` is given.
function drawBatch(r, B, first) {
  const chosen = new Set(first === undefined ? [] : [first]);
  while (chosen.size < B) chosen.add(Math.floor(r() * N_POP));
  return [...chosen];
}
function batchStats(idx, c) {
  let s = 0, q = 0;
  for (const n of idx) { s += pop.sums[n].s[c]; q += pop.sums[n].q[c]; }
  const m = s / (idx.length * HW);
  return { mean: m, var: q / (idx.length * HW) - m * m };
}
const rms = (xs) => Math.sqrt(xs.reduce((a, x) => a + x * x, 0) / xs.length);
// Standard error of an RMS estimated from R values (delta method on the mean square).
function rmsSE(xs) {
  const sq = xs.map((x) => x * x), ms = sq.reduce((a, b) => a + b, 0) / xs.length;
  const vsq = sq.reduce((a, b) => a + (b - ms) ** 2, 0) / (xs.length - 1);
  return Math.sqrt(vsq / xs.length) / (2 * Math.sqrt(ms));
}
function checkB(B, max = 512) {
  if (!Number.isInteger(B) || B < 1 || B > max) throw new Error(`batch size ${B} out of range [1, ${max}]`);
}

const CHANNEL = 1;

// Predicted spreads from the per-image statistics: k / sqrt(B).
function kConstants(c) {
  const m = pop.mean[c], v = pop.var[c];
  let vm = 0, vv = 0;
  for (const { s, q } of pop.sums) {
    const im = s[c] / HW, iv = q[c] / HW - im * im + (im - m) ** 2; // the image's contribution around m
    vm += (im - m) ** 2; vv += (iv - v) ** 2;
  }
  return { kMean: Math.sqrt(vm / N_POP / v), kVar: Math.sqrt(vv / N_POP) / v };
}

function busyWait(ms) { const t = performance.now(); while (performance.now() - t < ms); }

class Trainer {
  constructor(norm, batchSize, momentum, lr = 0.05, seed = 0) {
    if (!['batch', 'layer', 'group', 'none'].includes(norm)) throw new Error(`unknown norm '${norm}'`);
    checkB(batchSize, 4096);
    if (!(momentum > 0 && momentum <= 1)) throw new Error(`momentum ${momentum} out of (0, 1]`);
    Object.assign(this, { norm, B: batchSize, momentum, lr, r: rng(seed), steps: 0, totalMs: 0, deleted: false });
  }
  _alive() { if (this.deleted) throw new Error('Trainer used after delete()'); }
  step(n) {
    this._alive();
    const losses = [], t0 = performance.now();
    for (let i = 0; i < n; i++) {
      busyWait(0.4 + this.B * 0.03);
      this.steps++;
      const speed = this.norm === 'none' ? 400 : 200;
      const floor = this.norm === 'batch' && this.B < 8 ? 1.7 : 1.3;
      const L = floor + (2.303 - floor) * Math.exp(-this.steps / speed);
      losses.push(L + gauss(this.r) * 0.6 / Math.sqrt(this.B));
    }
    this.totalMs += performance.now() - t0;
    return JSON.stringify({ step: this.steps, losses, loss: losses.reduce((a, b) => a + b, 0) / n, ms_per_step: this.totalMs / this.steps });
  }
  evaluate(numImages) {
    this._alive();
    busyWait(20);
    const acc = 0.1 + 0.42 * (1 - Math.exp(-this.steps / 250));
    const gap = this.norm === 'batch' ? (0.5 / Math.sqrt(this.B)) * (0.3 + 0.7 * Math.min(1, this.momentum * 10)) : 0;
    const noise = () => gauss(this.r) * 0.3 / Math.sqrt(numImages);
    const a = Math.min(1, Math.max(0, acc + noise())), b = Math.min(1, Math.max(0.02, acc - gap + noise()));
    return JSON.stringify({ train_mode_accuracy: 100 * a, eval_mode_accuracy: 100 * b, train_mode_loss: 2.3 - 1.5 * a, eval_mode_loss: 2.3 - 1.5 * b, images: numImages });
  }
  delete() { this.deleted = true; }
}

export default async function createMinnow(opts = {}) {
  const files = new Map(), dirs = new Set(['/']);
  const FS = {
    mkdir(p) { if (dirs.has(p)) throw new Error(`FS.mkdir: ${p} exists`); dirs.add(p); },
    writeFile(p, data) {
      const dir = p.slice(0, p.lastIndexOf('/')) || '/';
      if (!dirs.has(dir)) throw new Error(`FS.writeFile: no directory ${dir}`);
      files.set(p, data);
    },
  };
  const M = {
    FS,
    Trainer,
    load_data(dir) {
      for (const f of ['pool.safetensors', 'train.safetensors', 'test.safetensors'])
        if (!files.has(`${dir}/${f}`)) throw new Error(`load_data: missing ${dir}/${f}`);
      build();
      return JSON.stringify({
        pool_images: N_POOL, channels: C, train_images: 4000, test_images: 1000, channels_shown: C,
        classes: ['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck'],
        checkpoint: 'MOCK module: synthetic images and features, not minnow',
      });
    },
    pool_image(i) {
      ensure();
      if (!(i >= 0 && i < N_POOL)) throw new Error(`pool image ${i} out of range [0, ${N_POOL})`);
      const rgb = pop.rgbs[i], rgba = new Array(HW * 4);
      for (let p = 0; p < HW; p++) {
        for (let k = 0; k < 3; k++) rgba[4 * p + k] = Math.round(255 * rgb[k * HW + p]);
        rgba[4 * p + 3] = 255;
      }
      return JSON.stringify({ width: W, height: H, label: i % 10, rgba });
    },
    batch_stats(B, R, seed) {
      ensure(); checkB(B);
      const t0 = performance.now(), r = rng(seed), c = CHANNEL;
      const m = pop.mean[c], v = pop.var[c], sd = Math.sqrt(v);
      const means = [], vars = [], dm = [], dv = [];
      for (let k = 0; k < R; k++) {
        const st = batchStats(drawBatch(r, B), c);
        means.push(st.mean); vars.push(st.var);
        dm.push((st.mean - m) / sd); dv.push((st.var - v) / v);
      }
      const { kMean, kVar } = kConstants(c);
      return JSON.stringify({
        batch_size: B, num_batches: R,
        mean_spread: rms(dm), mean_spread_se: rmsSE(dm), var_spread: rms(dv), var_spread_se: rmsSE(dv),
        mean_spread_predicted: kMean / Math.sqrt(B), var_spread_predicted: kVar / Math.sqrt(B),
        example: { channel: c, population_mean: m, population_var: v, batch_means: means, batch_vars: vars },
        ms: performance.now() - t0,
      });
    },
    probe(B, draws, seed) {
      ensure(); checkB(B);
      const t0 = performance.now(), r = rng(seed), c = CHANNEL, f = pop.feats[0];
      const input = Array.from(f.subarray(c * HW, (c + 1) * HW));
      const norm = (st) => input.map((x) => (x - st.mean) / Math.sqrt(st.var + EPS));
      const outputs = [];
      for (let d = 0; d < draws; d++) outputs.push(norm(batchStats(drawBatch(r, B, 0), c)));
      // pixel spread: each pixel's standard deviation over the draws, averaged over the pixels
      let acc = 0;
      for (let p = 0; p < HW && draws > 1; p++) {
        let s = 0, q = 0;
        for (const o of outputs) { s += o[p]; q += o[p] * o[p]; }
        acc += Math.sqrt(Math.max(0, (q / draws - (s / draws) ** 2) * draws / (draws - 1)));
      }
      return JSON.stringify({
        batch_size: B, channel: c, width: W, height: H, input, outputs,
        eval_output: norm({ mean: pop.mean[c], var: pop.var[c] }),
        pixel_spread: acc / HW, ms: performance.now() - t0,
      });
    },
    independence(probeIndex, B, seedA, seedB) {
      ensure(); checkB(B);
      if (!(probeIndex >= 0 && probeIndex < N_POOL)) throw new Error(`probe ${probeIndex} out of range`);
      const c = CHANNEL, f = pop.feats[probeIndex];
      const input = Array.from(f.subarray(c * HW, (c + 1) * HW));
      const bn = (seed) => {
        const st = batchStats(drawBatch(rng(seed), B, probeIndex), c);
        return input.map((x) => (x - st.mean) / Math.sqrt(st.var + EPS));
      };
      let s = 0, q = 0;
      for (const x of f) { s += x; q += x * x; }
      const lm = s / f.length, lv = q / f.length - lm * lm;
      const ln = input.map((x) => (x - lm) / Math.sqrt(lv + EPS));
      const diff = (a, b) => {
        const d = a.map((x, i) => Math.abs(x - b[i]));
        return { a, b, max_change: Math.max(...d), mean_abs_change: d.reduce((u, w) => u + w, 0) / d.length };
      };
      return JSON.stringify({ batch_size: B, channel: c, width: W, height: H, input, bn: diff(bn(seedA), bn(seedB)), ln: diff(ln, ln.slice()) });
    },
    parity_report() { return JSON.stringify({ mock: true }); },
  };
  if (opts.locateFile) opts.locateFile('minnow_web.wasm'); // as the real loader would ask
  return M;
}
