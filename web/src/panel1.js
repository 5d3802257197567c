// Panel 1: how the spread of the batch statistics falls with the batch size.
import { call } from './minnow.js';
import { Chart, COLORS, errorBars, vLine } from './charts.js';
import { drawHeatmap, symmetricLimit, tile } from './heatmap.js';
import { byTestId, showNumber, format, state } from './util.js';

// The slider runs over powers of two and the values half-way between them (on a log scale).
export const BATCH_SIZES = [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512];
const CURVE_SIZES = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512];
// The curve averages 200 batches per point; the slider 100 (half the work,
// so a redraw fits a frame up to the largest batches).
const CURVE_BATCHES = 200, NUM_BATCHES = 100, DRAWS = 4, BINS = 40;

export function initPanel1(M, root, info, reportError) {
  root.querySelectorAll('.p1-channels').forEach((e) => { e.textContent = info.channels ? String(info.channels) : 'all'; });
  const slider = root.querySelector('#p1-batch');
  const sliderValue = root.querySelector('#p1-batch-value');
  slider.max = String(BATCH_SIZES.length - 1);
  state.panel1Sizes = BATCH_SIZES;
  let resamples = 0;

  // The curve: one call per power of two, once.
  const curve = CURVE_SIZES.map((B) => call(M, () => M.batch_stats(B, CURVE_BATCHES, 1000 + B)));
  const channel = curve[0].example.channel;
  root.querySelectorAll('.p1-channel').forEach((el) => { el.textContent = String(channel); });

  // Fixed axes, so that moving the slider moves the data, not the axes.
  const spreads = curve.flatMap((s) => [s.mean_spread, s.var_spread, s.mean_spread_predicted, s.var_spread_predicted]);
  const yMin = Math.min(...spreads) / 2, yMax = Math.max(...spreads) * 2;
  const z = (s) => s.example.batch_means.map((m) => (m - s.example.population_mean) / Math.sqrt(s.example.population_var));
  const L = niceCeil(1.1 * Math.max(...z(curve[0]).map(Math.abs)));

  const point = (s, key) => ({ x: s.batch_size, y: s[key], lo: s[key] - s[key + '_se'], hi: s[key] + s[key + '_se'] });
  const predicted = (key) => curve.map((s) => ({ x: s.batch_size, y: s[key + '_predicted'] }));
  const ring = (color) => ({ type: 'scatter', data: [], pointRadius: 9, pointBorderWidth: 2.5, borderColor: color, pointBackgroundColor: 'rgba(0,0,0,0)' });

  const spreadChart = new Chart(root.querySelector('#p1-spread-chart'), {
    type: 'scatter',
    data: {
      datasets: [
        { label: 'batch mean, measured', data: curve.map((s) => point(s, 'mean_spread')), borderColor: COLORS.mean, backgroundColor: COLORS.mean, pointRadius: 4, errorBars: true },
        { label: 'batch mean, k/√B', type: 'line', data: predicted('mean_spread'), borderColor: COLORS.mean, borderWidth: 1.5, pointRadius: 0, pointStyle: 'line' },
        { label: 'batch variance, measured', data: curve.map((s) => point(s, 'var_spread')), borderColor: COLORS.var, backgroundColor: COLORS.var, pointRadius: 4, pointStyle: 'rect', errorBars: true },
        { label: 'batch variance, k/√B', type: 'line', data: predicted('var_spread'), borderColor: COLORS.var, borderWidth: 1.5, borderDash: [6, 4], pointRadius: 0, pointStyle: 'line' },
        { label: 'current B', ...ring(COLORS.ink), errorBars: true },
        { label: 'current B (variance)', ...ring(COLORS.ink), errorBars: true },
      ],
    },
    options: {
      scales: {
        x: { type: 'logarithmic', min: 0.8, max: 640, title: { display: true, text: 'batch size B' }, afterBuildTicks: powersOfTwo, ticks: { callback: (v) => String(v) } },
        y: { type: 'logarithmic', min: yMin, max: yMax, title: { display: true, text: 'spread (relative RMS error)' }, afterBuildTicks: decades, ticks: { callback: (v) => String(v) } },
      },
      plugins: {
        legend: { labels: { filter: (item) => item.text !== 'current B (variance)', usePointStyle: true } },
        tooltip: { callbacks: { label: (c) => `${c.dataset.label}: B=${c.raw.x}, ${format(c.raw.y)}` } },
      },
    },
    plugins: [errorBars],
  });

  const centers = Array.from({ length: BINS }, (_, i) => -L + (i + 0.5) * (2 * L / BINS));
  const histChart = new Chart(root.querySelector('#p1-hist-chart'), {
    type: 'bar',
    data: { datasets: [{ label: 'batch means', data: [], backgroundColor: 'rgba(31,95,168,0.55)', borderColor: COLORS.mean, borderWidth: 1, barPercentage: 1, categoryPercentage: 1 }] },
    options: {
      scales: {
        x: { type: 'linear', min: -L, max: L, title: { display: true, text: '(batch mean − population mean) / population std' } },
        y: { beginAtZero: true, title: { display: true, text: `batches (of ${NUM_BATCHES})` } },
      },
      plugins: { legend: { display: false }, vLine: { x: 0, label: 'population mean' } },
    },
    plugins: [vLine],
  });

  // The probe's heatmaps: input, population-statistics output, DRAWS batch outputs, and their differences.
  const probeBox = root.querySelector('#p1-probe');
  const tiles = {
    input: tile(32, 32, 'input channel'),
    eval: tile(32, 32, 'population statistics'),
    draws: Array.from({ length: DRAWS }, (_, i) => tile(32, 32, `batch ${i + 1}`)),
    diffs: Array.from({ length: DRAWS }, (_, i) => tile(32, 32, `batch ${i + 1} − population`)),
  };
  probeBox.append(tiles.input.fig, tiles.eval.fig, ...tiles.draws.map((t) => t.fig), spacer(), spacer(), ...tiles.diffs.map((t) => t.fig));

  let outLimit = null; // the colour scale of the outputs, fixed by the first picture

  function redraw() {
    const t0 = performance.now();
    const B = BATCH_SIZES[Number(slider.value)];
    const seed = 7 + 7919 * resamples + B;
    const stats = call(M, () => M.batch_stats(B, NUM_BATCHES, seed));
    const probe = call(M, () => M.probe(B, DRAWS, seed));

    sliderValue.textContent = String(B);
    sliderValue.dataset.value = String(B);
    for (const key of ['mean_spread', 'var_spread']) {
      const id = key.replace('_', '-');
      showNumber(byTestId(`p1-${id}`, root), stats[key]);
      showNumber(byTestId(`p1-${id}-se`, root), stats[key + '_se'], 2);
      showNumber(byTestId(`p1-${id}-pred`, root), stats[key + '_predicted']);
      const ratio = byTestId(`p1-${key.split('_')[0]}-ratio`, root);
      ratio.dataset.value = String(stats[key] / stats[key + '_predicted']);
      ratio.textContent = (stats[key] / stats[key + '_predicted']).toFixed(2);
    }
    showNumber(byTestId('p1-pixel-spread', root), probe.pixel_spread);

    spreadChart.data.datasets[4].data = [point(stats, 'mean_spread')];
    spreadChart.data.datasets[5].data = [point(stats, 'var_spread')];
    spreadChart.update('none');

    const counts = new Array(BINS).fill(0);
    for (const v of z(stats)) counts[Math.min(BINS - 1, Math.max(0, Math.floor((v + L) / (2 * L) * BINS)))]++;
    histChart.data.datasets[0].data = centers.map((x, i) => ({ x, y: counts[i] }));
    histChart.update('none');

    const { width: w, height: h } = probe;
    drawHeatmap(tiles.input.canvas, probe.input, w, h, { map: 'gray' });
    tiles.input.cap.textContent = `input, channel ${probe.channel}`;
    if (outLimit === null) {
      outLimit = symmetricLimit(probe.eval_output);
      root.querySelectorAll('.p1-out-limit').forEach((e) => { e.textContent = String(outLimit); });
    }
    drawHeatmap(tiles.eval.canvas, probe.eval_output, w, h, { limit: outLimit });
    probe.outputs.forEach((out, i) => {
      drawHeatmap(tiles.draws[i].canvas, out, w, h, { limit: outLimit });
      drawHeatmap(tiles.diffs[i].canvas, out.map((v, p) => v - probe.eval_output[p]), w, h, { limit: 1 });
    });

    const ms = performance.now() - t0;
    showNumber(byTestId('p1-redraw-ms', root), ms, 2);
    showNumber(byTestId('p1-minnow-ms', root), stats.ms + probe.ms, 2);
    showNumber(byTestId('p1-check-mean', root), stats.layer_check.mean_difference, 2);
    showNumber(byTestId('p1-check-var', root), stats.layer_check.var_relative_difference, 2);
    state.lastRedrawMs = ms;
    state.redraws = (state.redraws || []).concat([{ B, ms, minnowMs: stats.ms + probe.ms }]);
    state.panel1 = { B, stats, pixelSpread: probe.pixel_spread };
  }

  const safe = () => { try { redraw(); } catch (e) { reportError(e); } };
  slider.addEventListener('input', safe);
  root.querySelector('#p1-resample').addEventListener('click', () => { resamples++; safe(); });
  state.panel1Curve = curve.map((s) => ({ B: s.batch_size, mean: s.mean_spread, meanSE: s.mean_spread_se, meanPred: s.mean_spread_predicted, var: s.var_spread, varSE: s.var_spread_se, varPred: s.var_spread_predicted }));
  redraw();
}

function powersOfTwo(scale) {
  scale.ticks = CURVE_SIZES.map((value) => ({ value }));
}
function decades(scale) {
  const ticks = [];
  for (let e = Math.floor(Math.log10(scale.min)); e <= Math.ceil(Math.log10(scale.max)); e++)
    for (const m of [1, 2, 5]) {
      const v = m * 10 ** e;
      if (v >= scale.min && v <= scale.max) ticks.push({ value: v });
    }
  scale.ticks = ticks;
}
function niceCeil(x) {
  const e = 10 ** Math.floor(Math.log10(x));
  return [1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10].map((m) => m * e).find((v) => v >= x);
}
function spacer() {
  const d = document.createElement('div');
  d.className = 'tile spacer';
  return d;
}
