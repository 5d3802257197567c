// The page: load minnow, then open each panel's demo once its prediction is answered.
import { loadMinnow } from './minnow.js';
import { setupPrediction } from './predict.js';
import { initPanel1 } from './panel1.js';
import { initPanel2, startTrainerWorker } from './panel2.js';
import { initPanel3 } from './panel3.js';
import { state } from './util.js';

const status = document.getElementById('status');
const errorBox = document.getElementById('error');

// Errors are shown on the page and logged, never swallowed.
function reportError(e) {
  const msg = e && e.message ? e.message : String(e);
  state.errors.push(msg);
  const line = document.createElement('p');
  line.textContent = `Error: ${msg}`;
  errorBox.append(line);
  errorBox.hidden = false;
  console.error(e);
}
window.addEventListener('error', (ev) => reportError(ev.error || ev.message));
window.addEventListener('unhandledrejection', (ev) => reportError(ev.reason));

const t0 = performance.now();
const ready = loadMinnow().then(({ M, info }) => {
  state.ready = true;
  state.info = info;
  state.loadMs = performance.now() - t0;
  status.textContent = `minnow is running in WebAssembly (loaded in ${(state.loadMs / 1000).toFixed(1)} s): ` +
    `${info.train_images} training images, ${info.test_images} held-out images, ${info.pool_images} pool images of CIFAR-10.`;
  status.classList.add('ok');
  document.getElementById('provenance').textContent = `Network weights for panels 1 and 3: ${info.checkpoint}`;
  return { M, info };
}, (e) => {
  status.textContent = 'minnow could not be loaded, so the demos cannot run.';
  status.classList.add('failed');
  reportError(e);
  return null;
});

// Panel 2 trains in a worker with its own copy of minnow, loaded once the page's copy works.
const trainer = ready.then((loaded) => (loaded ? startTrainerWorker() : null));

const panels = [
  ['panel1', (M, root, info) => initPanel1(M, root, info, reportError)],
  ['panel2', async (M, root, info) => initPanel2(await trainer, root, info, reportError)],
  ['panel3', (M, root, info) => initPanel3(M, root, info, reportError)],
];
state.panelsReady = {};

for (const [id, init] of panels) {
  const root = document.getElementById(id);
  let opened = false;
  setupPrediction(root, async () => {
    if (opened) return;
    opened = true;
    const demo = root.querySelector('.demo');
    demo.hidden = false; // before init: the charts measure their boxes
    const loaded = await ready;
    if (!loaded) return;
    try {
      await init(loaded.M, root, loaded.info);
      state.panelsReady[id] = true;
    } catch (e) {
      reportError(e);
    }
  });
}
