// Panel 3: one image's BatchNorm and LayerNorm outputs before and after its
// batch-mates are replaced.
import { call } from './minnow.js';
import { drawHeatmap, drawRGBA, makeCanvas, symmetricLimit, tile } from './heatmap.js';
import { byTestId, showNumber, state } from './util.js';

const THUMBS = 12, DIFF_LIMIT = 0.25;

export function initPanel3(M, root, info, reportError) {
  const thumbsBox = root.querySelector('#p3-thumbs');
  const batchSelect = root.querySelector('#p3-batch');
  const counter = byTestId('p3-replacements', root);
  let probe = 0, seed = 1, replacements = 0;
  let outLimit = null; // the colour scale of the outputs, fixed by the first picture

  // Pool images spread over the whole pool (it may be ordered by class).
  const n = Math.min(THUMBS, info.pool_images);
  const picks = Array.from({ length: n }, (_, k) => Math.floor((k * info.pool_images) / n));
  probe = picks[0];
  picks.forEach((i, k) => {
    const img = call(M, () => M.pool_image(i));
    const b = document.createElement('button');
    b.type = 'button';
    b.className = 'thumb';
    b.dataset.testid = `p3-thumb-${k}`;
    b.dataset.index = String(i);
    b.title = `pool image ${i}: ${info.classes?.[img.label] ?? img.label}`;
    const c = makeCanvas(img.width, img.height, 'rgb');
    drawRGBA(c, img);
    const label = document.createElement('span');
    label.textContent = info.classes?.[img.label] ?? String(img.label);
    b.append(c, label);
    b.addEventListener('click', () => { probe = i; seed += 2; replacements = 0; safe(show, false); });
    thumbsBox.append(b);
  });

  // Rows: BatchNorm and LayerNorm, each before / after / |after - before|.
  const grid = root.querySelector('#p3-compare');
  const inputTile = tile(32, 32, 'input channel');
  const rows = {};
  const rowsBox = document.createElement('div');
  rowsBox.className = 'compare-rows';
  grid.append(inputTile.fig, rowsBox);
  for (const [key, name] of [['bn', 'BatchNorm'], ['ln', 'LayerNorm']]) {
    const row = document.createElement('div');
    row.className = 'compare-row';
    const h = document.createElement('h4');
    h.textContent = name;
    const before = tile(32, 32, 'before'), after = tile(32, 32, 'after'), diff = tile(32, 32, '|after − before|');
    row.append(h, before.fig, after.fig, diff.fig);
    rowsBox.append(row);
    rows[key] = { before, after, diff };
  }

  // replaced=false shows the image in batch A only; true shows A against a new batch B.
  function show(replaced) {
    const B = Number(batchSelect.value);
    const r = call(M, () => M.independence(probe, B, seed, seed + 1));
    const { width: w, height: h } = r;
    if (outLimit === null) {
      outLimit = symmetricLimit([...r.bn.a, ...r.ln.a]);
      root.querySelectorAll('.p3-out-limit').forEach((e) => { e.textContent = String(outLimit); });
    }
    drawHeatmap(inputTile.canvas, r.input, w, h, { map: 'gray' });
    inputTile.cap.textContent = `image ${probe}, channel ${r.channel}`;
    for (const key of ['bn', 'ln']) {
      const { before, after, diff } = rows[key];
      drawHeatmap(before.canvas, r[key].a, w, h, { limit: outLimit });
      after.fig.classList.toggle('empty', !replaced);
      diff.fig.classList.toggle('empty', !replaced);
      if (replaced) {
        drawHeatmap(after.canvas, r[key].b, w, h, { limit: outLimit });
        drawHeatmap(diff.canvas, r[key].a.map((v, i) => Math.abs(r[key].b[i] - v)), w, h, { map: 'magnitude', limit: DIFF_LIMIT });
      }
      showNumber(byTestId(`p3-${key}-max`, root), replaced ? r[key].max_change : NaN, 3);
      showNumber(byTestId(`p3-${key}-mean`, root), replaced ? r[key].mean_abs_change : NaN, 3);
    }
    for (const t of thumbsBox.children) t.classList.toggle('selected', Number(t.dataset.index) === probe);
    counter.textContent = replaced ? `batch of ${B}: the other ${B - 1} images replaced ${replacements} time${replacements === 1 ? '' : 's'}` : `batch of ${B}, before any replacement`;
    state.panel3 = { probe, B, replaced, bn: pick(r.bn), ln: pick(r.ln) };
  }

  const safe = (fn, arg) => { try { fn(arg); } catch (e) { reportError(e); } };
  root.querySelector('#p3-replace').addEventListener('click', () => {
    // seed -> seed+1 is this replacement; the next one starts from the batch just shown.
    if (replacements > 0) seed += 1;
    replacements++;
    safe(show, true);
  });
  batchSelect.addEventListener('change', () => { replacements = 0; safe(show, false); });
  show(false);
}

const pick = (x) => ({ max_change: x.max_change, mean_abs_change: x.mean_abs_change });
