// Browser test of the BatchNorm page: drives the served page in Debian's
// chromium through playwright-core, checks what each panel shows, saves a
// screenshot per panel and prints one JSON line of measurements.
//
//   node tests/page.test.mjs URL        (URL of the served page, e.g. http://localhost:4173/)
//   SCREENSHOTS=dir                     where panel1.png..panel3.png go (default web/screenshots)
//
// Exits non-zero if any check fails or the page logs an error.
import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';

const url = process.argv[2];
if (!url) {
  console.error('usage: node tests/page.test.mjs URL');
  process.exit(2);
}
const shots = process.env.SCREENSHOTS || fileURLToPath(new URL('../screenshots/', import.meta.url));
mkdirSync(shots, { recursive: true });

const TRAIN_STEPS = 150, TRAIN_BATCH = 32;
const P1_SIZES = [1, 4, 12, 32, 128, 512]; // slider positions to visit (all are on the slider)
const LOAD_TIMEOUT = 180_000, TRAIN_TIMEOUT = 600_000;

let passed = 0, failed = 0;
function check(name, ok, detail = '') {
  if (ok) passed++; else failed++;
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${name}${detail ? ' — ' + detail : ''}`);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
// The page must not be left hanging whatever happens below.
const watchdog = setTimeout(() => { console.error('test timed out'); browser.close().finally(() => process.exit(1)); }, 20 * 60_000);

const summary = {};
try {
  const page = await browser.newPage({ viewport: { width: 1200, height: 900 } });
  const pageErrors = [];
  page.on('console', (m) => { if (m.type() === 'error') pageErrors.push(`console: ${m.text()}`); });
  page.on('pageerror', (e) => pageErrors.push(`pageerror: ${e.message}`));
  page.on('requestfailed', (r) => pageErrors.push(`request failed: ${r.url()} ${r.failure()?.errorText}`));
  page.on('response', (r) => { if (r.status() >= 400) pageErrors.push(`HTTP ${r.status()}: ${r.url()}`); });

  const t0 = Date.now();
  await page.goto(url, { waitUntil: 'load' });
  await page.waitForFunction(() => window.__minnow && (window.__minnow.ready || window.__minnow.errors.length > 0), null, { timeout: LOAD_TIMEOUT });
  summary.load_ms = await page.evaluate(() => window.__minnow.loadMs);
  check('minnow loads', await page.evaluate(() => window.__minnow.ready), `${((Date.now() - t0) / 1000).toFixed(1)} s`);
  summary.info = await page.evaluate(() => window.__minnow.info);
  const id = (t) => `[data-testid="${t}"]`;
  const value = (t) => page.$eval(id(t), (el) => Number(el.dataset.value));

  // Predictions: the demos are hidden until answered. Panel 2 is answered wrongly on purpose.
  for (const [panel, choice, right] of [[1, 'b', true], [2, 'a', false], [3, 'b', true]]) {
    check(`panel ${panel} demo hidden before the prediction`, await page.locator(`#p${panel}-demo`).isHidden());
    await page.click(id(`p${panel}-choice-${choice}`));
    const verdict = page.locator(id(`p${panel}-verdict`));
    await verdict.waitFor({ state: 'visible' });
    const text = await verdict.innerText();
    check(`panel ${panel} verdict says ${right ? 'right' : 'wrong'}`, right ? text.startsWith('Right') : text.startsWith('Not quite'), text.split('\n')[0]);
    check(`panel ${panel} demo shown after the prediction`, await page.locator(`#p${panel}-demo`).isVisible());
    check(`panel ${panel} choices locked`, await page.$eval(id(`p${panel}-choice-c`), (b) => b.disabled));
  }
  await page.waitForFunction(() => ['panel1', 'panel2', 'panel3'].every((p) => window.__minnow.panelsReady[p]) || window.__minnow.errors.length > 0, null, { timeout: LOAD_TIMEOUT });

  // Panel 1: the spread of the batch mean against 1/sqrt(B), and the redraw time.
  const curve = await page.evaluate(() => window.__minnow.panel1Curve);
  const k = curve.map((c) => c.meanPred * Math.sqrt(c.B));
  check('panel 1 predicted spread is k/sqrt(B)', k.every((v) => Math.abs(v - k[0]) <= 1e-6 * k[0]), `k = ${k[0].toFixed(4)}`);
  const slope = fitSlope(curve.map((c) => [Math.log(c.B), Math.log(c.mean)]));
  check('panel 1 curve: log-log slope of the mean spread near -1/2', Math.abs(slope + 0.5) < 0.1, `slope ${slope.toFixed(3)}`);
  const bad = curve.filter((c) => Math.abs(c.mean - c.meanPred) > 3 * c.meanSE + 0.1 * c.meanPred);
  check('panel 1 curve: every measured mean spread within 3 SE + 10% of k/sqrt(B)', bad.length === 0, bad.map((c) => `B=${c.B}`).join(' '));

  const p1 = [];
  for (const B of P1_SIZES) {
    const timing = await page.evaluate(async (B) => {
      const slider = document.getElementById('p1-batch');
      slider.value = String(window.__minnow.panel1Sizes.indexOf(B)); // the slider's positions are this list
      const t = performance.now();
      slider.dispatchEvent(new Event('input', { bubbles: true }));
      const handler = performance.now() - t;
      await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
      return { handler, toFrame: performance.now() - t, lastRedrawMs: window.__minnow.lastRedrawMs };
    }, B);
    const shown = await value('p1-batch');
    const s = { B: shown, mean: await value('p1-mean-spread'), se: await value('p1-mean-spread-se'), pred: await value('p1-mean-spread-pred'),
      var: await value('p1-var-spread'), varPred: await value('p1-var-spread-pred'), pixelSpread: await value('p1-pixel-spread'), ...timing };
    p1.push(s);
    check(`panel 1 shows B=${B}`, shown === B);
    check(`panel 1 B=${B}: mean spread ${s.mean.toFixed(4)} ± ${s.se.toFixed(4)} vs k/sqrt(B) ${s.pred.toFixed(4)}`,
      Math.abs(s.mean - s.pred) <= 3 * s.se + 0.1 * s.pred);
  }
  const checkMean = await value('p1-check-mean'), checkVar = await value('p1-check-var');
  check('panel 1 statistics agree with BatchNorm2d itself', checkMean < 1e-5 && checkVar < 1e-4,
    `mean ${checkMean.toExponential(1)}, variance ${checkVar.toExponential(1)} (relative)`);
  const px = (B) => p1.find((s) => s.B === B).pixelSpread;
  // from 4 draws the pixel spread is itself noisy (±40%): compare only far-apart batch sizes
  check('panel 1 pixel spread falls with B', px(4) > 2 * px(512), `B=4: ${px(4).toFixed(3)}, B=512: ${px(512).toFixed(3)}`);
  // a real key press on the slider: from 512 (the end) one step left
  await page.focus('#p1-batch');
  await page.keyboard.press('ArrowLeft');
  check('panel 1 slider follows the keyboard', (await value('p1-batch')) === 384);
  const redraws = p1.map((s) => s.lastRedrawMs);
  summary.panel1 = p1.map(({ B, mean, se, pred, var: v, varPred, pixelSpread, lastRedrawMs, toFrame }) =>
    ({ B, mean_spread: mean, se, predicted: pred, var_spread: v, var_predicted: varPred, pixel_spread: pixelSpread, redraw_ms: lastRedrawMs, to_next_frame_ms: toFrame }));
  summary.redraw_ms = { median: median(redraws), max: Math.max(...redraws), to_next_frame_median: median(p1.map((s) => s.toFrame)) };
  check('panel 1 redraw time recorded', redraws.every((r) => r > 0), `median ${summary.redraw_ms.median.toFixed(1)} ms`);
  // the screenshot at a small batch, where the noise is visible
  await page.evaluate(() => {
    const slider = document.getElementById('p1-batch');
    slider.value = String(window.__minnow.panel1Sizes.indexOf(8));
    slider.dispatchEvent(new Event('input', { bubbles: true }));
  });
  await page.locator('#panel1').screenshot({ path: join(shots, 'panel1.png') });

  // Panel 2: BatchNorm at batch 32 for TRAIN_STEPS steps; the loss falls.
  await page.selectOption(id('p2-norm'), 'batch');
  await page.evaluate((B) => {
    const s = document.getElementById('p2-batch');
    s.value = String(window.__minnow.panel2Sizes.indexOf(B));
    s.dispatchEvent(new Event('input', { bubbles: true }));
    s.dispatchEvent(new Event('change', { bubbles: true }));
  }, TRAIN_BATCH);
  check(`panel 2 batch size set to ${TRAIN_BATCH}`, (await value('p2-batch')) === TRAIN_BATCH);
  check('panel 2 momentum defaults to 0.1', (await value('p2-momentum')) === 0.1);
  const tTrain = Date.now();
  await page.click(id('p2-start'));
  // The page stays responsive while it trains: the longest gap between animation frames over 2 s
  // (training and evaluation run in a worker).
  const maxFrameGap = await page.evaluate(() => new Promise((resolve) => {
    let last = performance.now(), worst = 0;
    const end = last + 2000;
    const tick = (t) => { worst = Math.max(worst, t - last); last = t; if (t < end) requestAnimationFrame(tick); else resolve(worst); };
    requestAnimationFrame(tick);
  }));
  check('panel 2 page responsive while training', maxFrameGap < 250, `longest frame gap ${maxFrameGap.toFixed(0)} ms`);
  await page.waitForFunction((n) => (window.__minnow.panel2 && window.__minnow.panel2.step >= n) || window.__minnow.errors.length > 0, TRAIN_STEPS, { timeout: TRAIN_TIMEOUT, polling: 100 });
  await page.click(id('p2-pause'));
  // the chunk of steps in flight comes back and is drawn
  await page.waitForFunction(() => !window.__minnow.panel2.busy && !window.__minnow.panel2.running, null, { timeout: 60_000 });
  await page.evaluate(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r))));
  const p2 = await page.evaluate(() => window.__minnow.panel2);
  const losses = p2.losses;
  const first = mean(losses.slice(0, 20)), last = mean(losses.slice(TRAIN_STEPS - 20, TRAIN_STEPS));
  check(`panel 2 trained ${TRAIN_STEPS} steps`, p2.step >= TRAIN_STEPS && losses.length === p2.step, `${p2.step} steps in ${((Date.now() - tTrain) / 1000).toFixed(1)} s`);
  check('panel 2 loss falls (mean of last 20 < mean of first 20)', last < first, `${first.toFixed(3)} -> ${last.toFixed(3)}`);
  check('panel 2 evaluated every 25 steps', p2.evals.length >= 1 + Math.floor(TRAIN_STEPS / 25) && p2.evals.every((e) => e.train >= 0 && e.train <= 1 && e.eval >= 0 && e.eval <= 1));
  check('panel 2 shows ms per step', (await value('p2-ms-per-step')) > 0 && (await value('p2-step')) === p2.step);
  check('panel 2 settings of the run', p2.settings.norm === 'batch' && p2.settings.batchSize === TRAIN_BATCH && p2.settings.momentum === 0.1);
  const lastEval = p2.evals[p2.evals.length - 1];
  summary.panel2 = { norm: 'batch', batch_size: TRAIN_BATCH, steps: p2.step, ms_per_step: p2.msPerStep, wall_s: (Date.now() - tTrain) / 1000,
    loss_first20: first, loss_last20: last, max_frame_gap_ms: maxFrameGap, train_mode_accuracy: lastEval.train, eval_mode_accuracy: lastEval.eval };
  summary.ms_per_step = p2.msPerStep;

  // Then BatchNorm at batch 1: the train/eval mismatch. Each channel is then
  // normalised with one image's own statistics in train mode and with their
  // running average in eval mode; after a few hundred steps train-mode
  // accuracy is well above eval mode's (about 20-26% against 11-15%).
  await page.evaluate(() => {
    const s = document.getElementById('p2-batch');
    s.value = String(window.__minnow.panel2Sizes.indexOf(1));
    s.dispatchEvent(new Event('input', { bubbles: true }));
    s.dispatchEvent(new Event('change', { bubbles: true }));
  });
  check('panel 2 batch size set to 1', (await value('p2-batch')) === 1);
  if (!(await page.evaluate(() => window.__minnow.panel2.running))) await page.click(id('p2-start'));
  await page.waitForFunction(() => (window.__minnow.panel2 && window.__minnow.panel2.settings.batchSize === 1 && window.__minnow.panel2.step >= 300) || window.__minnow.errors.length > 0, null, { timeout: TRAIN_TIMEOUT, polling: 100 });
  await page.click(id('p2-pause'));
  await page.waitForFunction(() => !window.__minnow.panel2.busy && !window.__minnow.panel2.running, null, { timeout: 60_000 });
  await page.evaluate(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r))));
  const b1 = await page.evaluate(() => window.__minnow.panel2);
  const late = b1.evals.slice(-4);
  const gap = mean(late.map((e) => e.train)) - mean(late.map((e) => e.eval));
  check('panel 2 at batch 1: train-mode accuracy above eval-mode accuracy', gap > 0.03,
    `last 4 evaluations: train ${late.map((e) => (100 * e.train).toFixed(0)).join('/')}%, eval ${late.map((e) => (100 * e.eval).toFixed(0)).join('/')}%`);
  summary.panel2_batch1 = { steps: b1.step, ms_per_step: b1.msPerStep, train_mode_accuracy: late.map((e) => e.train), eval_mode_accuracy: late.map((e) => e.eval) };
  await page.locator('#panel2').screenshot({ path: join(shots, 'panel2.png') });

  // Panel 3: replacing the batch-mates moves BatchNorm's output, not LayerNorm's.
  // the third thumbnail, whichever pool image it shows
  await page.click(id('p3-thumb-2'));
  const picked = await page.$eval(id('p3-thumb-2'), (b) => Number(b.dataset.index));
  check('panel 3 thumbnail selects the image', await page.evaluate((i) => window.__minnow.panel3.probe === i && !window.__minnow.panel3.replaced, picked), `pool image ${picked}`);
  summary.panel3 = [];
  for (let i = 0; i < 2; i++) {
    await page.click(id('p3-replace'));
    const r = { bnMax: await value('p3-bn-max'), bnMean: await value('p3-bn-mean'), lnMax: await value('p3-ln-max'), lnMean: await value('p3-ln-mean') };
    summary.panel3.push(r);
    check(`panel 3 replacement ${i + 1}: LayerNorm change is 0`, r.lnMax < 1e-6 && r.lnMean < 1e-6, `max ${r.lnMax}`);
    check(`panel 3 replacement ${i + 1}: BatchNorm change > 1e-3`, r.bnMax > 1e-3 && r.bnMean > 0, `max ${r.bnMax.toFixed(4)}, mean ${r.bnMean.toFixed(4)}`);
  }
  await page.locator('#panel3').screenshot({ path: join(shots, 'panel3.png') });

  const shownErrors = await page.$eval(id('error'), (el) => (el.hidden ? '' : el.innerText));
  const stateErrors = await page.evaluate(() => window.__minnow.errors);
  check('no error shown on the page', shownErrors === '' && stateErrors.length === 0, shownErrors || stateErrors.join('; '));
  check('no console error, page error or failed request', pageErrors.length === 0, pageErrors.join(' | '));
} catch (e) {
  check('test ran to the end', false, e.stack || String(e));
} finally {
  clearTimeout(watchdog);
  await browser.close();
}

console.log(JSON.stringify({ ms_per_step: summary.ms_per_step, redraw_ms: summary.redraw_ms, load_ms: summary.load_ms, panel1: summary.panel1, panel2: summary.panel2, panel3: summary.panel3, screenshots: shots }));
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);

function mean(xs) { return xs.reduce((a, b) => a + b, 0) / xs.length; }
function median(xs) { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)]; }
function fitSlope(pts) {
  const mx = mean(pts.map((p) => p[0])), my = mean(pts.map((p) => p[1]));
  return pts.reduce((a, p) => a + (p[0] - mx) * (p[1] - my), 0) / pts.reduce((a, p) => a + (p[0] - mx) ** 2, 0);
}
