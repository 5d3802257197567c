// Panel 2: a small convnet trained live; train-mode against eval-mode accuracy.
// The training itself runs in a worker (trainer.worker.js); this file drives
// it one chunk of steps at a time and draws.
import { Chart, COLORS } from './charts.js';
import { byTestId, showNumber, percent, state } from './util.js';

export const BATCH_SIZES = [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128];
const SEED = 1;
const EVAL_EVERY = 25, EVAL_IMAGES = 500, MAX_STEPS = 1500;
const CHUNK_MS = 50; // training time asked of the worker per message
const SMOOTH = 20;
// Learning rate 0.05 at batch 32 and above, scaled down linearly below it
// (the linear scaling rule): at batch 4, 0.05 makes this little network
// collapse whatever its normalisation, which would hide what BatchNorm does.
const lrFor = (B) => 0.05 * Math.min(1, B / 32);

const NORM_NAMES = { batch: 'BatchNorm', layer: 'LayerNorm', group: 'GroupNorm', none: 'no norm' };

// The worker and a promise-returning call into it.
export function startTrainerWorker() {
  const worker = new Worker(new URL('./trainer.worker.js', import.meta.url), { type: 'module' });
  const pending = new Map();
  let nextId = 0;
  worker.onmessage = ({ data }) => {
    const p = pending.get(data.id);
    pending.delete(data.id);
    if (data.error !== undefined) p.reject(new Error(data.error)); else p.resolve(data.result);
  };
  worker.onerror = (ev) => {
    const err = new Error(`the training worker failed: ${ev.message || 'it could not be started'}`);
    for (const p of pending.values()) p.reject(err);
    pending.clear();
  };
  const rpc = (op, args = {}) => new Promise((resolve, reject) => {
    const id = nextId++;
    pending.set(id, { resolve, reject });
    worker.postMessage({ id, op, ...args });
  });
  return { rpc, ready: rpc('init', { base: document.baseURI }) };
}

export async function initPanel2(trainerWorker, root, info, reportError) {
  const evalImages = Math.min(EVAL_IMAGES, info.test_images);
  root.querySelectorAll('.p2-eval-images').forEach((e) => { e.textContent = String(evalImages); });
  const el = {
    norm: root.querySelector('#p2-norm'),
    batch: root.querySelector('#p2-batch'),
    batchValue: root.querySelector('#p2-batch-value'),
    momentum: root.querySelector('#p2-momentum'),
    momentumValue: root.querySelector('#p2-momentum-value'),
    start: root.querySelector('#p2-start'),
    pause: root.querySelector('#p2-pause'),
    reset: root.querySelector('#p2-reset'),
  };
  el.batch.max = String(BATCH_SIZES.length - 1);
  state.panel2Sizes = BATCH_SIZES;

  // A run is one Trainer's history; `generation` tells replies of a run that was reset apart.
  let hasTrainer = false, running = false, looping = null, generation = 0, run = newRun(), ghost = null;

  const settings = () => {
    const batchSize = BATCH_SIZES[Number(el.batch.value)];
    return { norm: el.norm.value, batchSize, momentum: Number((10 ** Number(el.momentum.value)).toPrecision(2)), lr: lrFor(batchSize) };
  };
  function newRun() { return { losses: [], smooth: [], evals: [], msPerStep: null, step: 0, settings: null }; }

  const lossChart = new Chart(root.querySelector('#p2-loss-chart'), {
    type: 'line',
    data: {
      datasets: [
        { label: 'previous run', data: [], borderColor: COLORS.ghost, borderWidth: 2, pointRadius: 0 },
        { label: 'loss per step', data: [], borderColor: 'rgba(31,95,168,0.25)', borderWidth: 1, pointRadius: 0 },
        { label: `${SMOOTH}-step average`, data: [], borderColor: COLORS.train, borderWidth: 2.5, pointRadius: 0 },
      ],
    },
    options: {
      parsing: false, normalized: true,
      scales: { x: { type: 'linear', min: 0, title: { display: true, text: 'training step' } }, y: { min: 0, title: { display: true, text: 'cross-entropy loss' } } },
      plugins: { legend: { labels: { filter: (item, data) => data.datasets[item.datasetIndex].data.length > 0, usePointStyle: true, pointStyle: 'line' } } },
    },
  });
  const accChart = new Chart(root.querySelector('#p2-acc-chart'), {
    type: 'line',
    data: {
      datasets: [
        { label: 'previous: train mode', data: [], borderColor: COLORS.ghost, borderWidth: 2, pointRadius: 0 },
        { label: 'previous: eval mode', data: [], borderColor: COLORS.ghost, borderWidth: 2, borderDash: [6, 4], pointRadius: 0 },
        { label: 'train mode (batch statistics)', data: [], borderColor: COLORS.train, backgroundColor: COLORS.train, borderWidth: 2.5, pointRadius: 2.5 },
        { label: 'eval mode (running statistics)', data: [], borderColor: COLORS.eval, backgroundColor: COLORS.eval, borderWidth: 2.5, borderDash: [6, 4], pointRadius: 2.5 },
      ],
    },
    options: {
      parsing: false,
      scales: {
        x: { type: 'linear', min: 0, title: { display: true, text: 'training step' } },
        y: { min: 0, max: 1, title: { display: true, text: 'accuracy' }, ticks: { callback: (v) => `${Math.round(v * 100)}%` } },
      },
      plugins: {
        legend: { labels: { filter: (item, data) => data.datasets[item.datasetIndex].data.length > 0, usePointStyle: true, pointStyle: 'line' } },
        tooltip: { callbacks: { label: (c) => `${c.dataset.label}: ${percent(c.raw.y)} at step ${c.raw.x}` } },
      },
    },
  });

  async function evaluate(gen) {
    const e = await trainerWorker.rpc('evaluate', { images: evalImages });
    if (gen !== generation) return;
    // minnow reports accuracy in percent, like its apps; the page keeps fractions
    run.evals.push({ step: run.step, train: e.train_mode_accuracy / 100, eval: e.eval_mode_accuracy / 100, trainLoss: e.train_mode_loss, evalLoss: e.eval_mode_loss });
  }

  async function ensureTrainer() {
    if (hasTrainer) return;
    const s = settings(), gen = generation;
    await trainerWorker.rpc('create', { ...s, seed: SEED });
    if (gen !== generation) return; // reset meanwhile: the next create replaces this Trainer
    hasTrainer = true;
    run = newRun();
    run.settings = s;
    await evaluate(gen); // step 0: the untrained network, near chance
  }

  // Chunks of steps until paused, reset or done; an evaluation every EVAL_EVERY steps.
  async function loop() {
    const gen = generation;
    await ensureTrainer();
    if (gen !== generation) return;
    while (running && gen === generation && run.step < MAX_STEPS) {
      const toEval = EVAL_EVERY - (run.step % EVAL_EVERY);
      const n = Math.max(1, Math.min(toEval, MAX_STEPS - run.step, Math.floor(CHUNK_MS / (run.msPerStep || 5))));
      const r = await trainerWorker.rpc('step', { n });
      if (gen !== generation) return;
      for (const loss of r.losses) {
        run.losses.push(loss);
        const w = run.losses.slice(-SMOOTH);
        run.smooth.push(w.reduce((a, b) => a + b, 0) / w.length);
      }
      run.step = r.step;
      run.msPerStep = r.ms_per_step;
      if (run.step % EVAL_EVERY === 0) await evaluate(gen);
      scheduleRender();
    }
    if (gen === generation) setRunning(false);
  }

  function setRunning(on) {
    running = on;
    el.start.disabled = on || run.step >= MAX_STEPS;
    el.pause.disabled = !on;
    el.start.textContent = run.step >= MAX_STEPS ? `Stopped at ${MAX_STEPS} steps` : run.step > 0 ? 'Continue' : 'Start';
    state.panel2 = summary();
  }

  let renderPending = false;
  function scheduleRender() {
    if (renderPending) return;
    renderPending = true;
    requestAnimationFrame(() => { renderPending = false; render(); });
  }

  function render() {
    const xy = (ys) => ys.map((y, i) => ({ x: i + 1, y }));
    lossChart.data.datasets[1].data = xy(run.losses);
    lossChart.data.datasets[2].data = xy(run.smooth);
    accChart.data.datasets[2].data = run.evals.map((e) => ({ x: e.step, y: e.train }));
    accChart.data.datasets[3].data = run.evals.map((e) => ({ x: e.step, y: e.eval }));
    lossChart.data.datasets[0].data = ghost ? ghost.smooth : [];
    accChart.data.datasets[0].data = ghost ? ghost.train : [];
    accChart.data.datasets[1].data = ghost ? ghost.eval : [];
    lossChart.data.datasets[0].label = ghost ? `previous: ${ghost.label}` : 'previous run';
    accChart.data.datasets[0].label = ghost ? `previous: ${ghost.label}, train mode` : 'previous run';
    accChart.data.datasets[1].label = ghost ? `previous: ${ghost.label}, eval mode` : 'previous run';
    lossChart.update('none');
    accChart.update('none');

    const last = run.evals[run.evals.length - 1];
    showNumber(byTestId('p2-step', root), run.step);
    showNumber(byTestId('p2-loss', root), run.smooth.length ? run.smooth[run.smooth.length - 1] : NaN, 3);
    showNumber(byTestId('p2-ms-per-step', root), run.msPerStep ?? NaN, 3);
    for (const [id, key] of [['p2-train-acc', 'train'], ['p2-eval-acc', 'eval']]) {
      const node = byTestId(id, root);
      node.dataset.value = last ? String(last[key]) : '';
      node.textContent = last ? `${percent(last[key])} (step ${last.step})` : '–';
    }
    state.panel2 = summary();
  }

  function summary() {
    // busy: a chunk of steps or an evaluation is still on its way back from the worker
    return { running, busy: looping !== null, step: run.step, msPerStep: run.msPerStep, losses: run.losses, evals: run.evals, settings: run.settings || settings() };
  }

  function reset() {
    generation++;
    if (hasTrainer) {
      if (run.step > 0) {
        const s = run.settings;
        ghost = {
          label: `${NORM_NAMES[s.norm]}, batch ${s.batchSize}, momentum ${s.momentum}`,
          smooth: run.smooth.map((y, i) => ({ x: i + 1, y })),
          train: run.evals.map((e) => ({ x: e.step, y: e.train })),
          eval: run.evals.map((e) => ({ x: e.step, y: e.eval })),
        };
      }
      trainerWorker.rpc('delete').catch(reportError);
      hasTrainer = false;
    }
    run = newRun();
    setRunning(false);
    render();
  }

  function showSettings() {
    const s = settings();
    el.batchValue.textContent = String(s.batchSize);
    el.batchValue.dataset.value = String(s.batchSize);
    el.momentumValue.textContent = s.momentum.toFixed(s.momentum < 0.1 ? 3 : 2);
    el.momentumValue.dataset.value = String(s.momentum);
    showNumber(byTestId('p2-lr', root), s.lr, 3);
    // momentum only matters where there are running statistics
    el.momentum.disabled = s.norm !== 'batch';
  }

  // One loop at a time; one that ends on a reset while Start is on hands over to a new one.
  function startLoop() {
    if (looping) return;
    looping = loop()
      .catch((e) => { setRunning(false); reportError(e); })
      .finally(() => { looping = null; if (running) startLoop(); else scheduleRender(); });
  }
  el.start.addEventListener('click', () => { setRunning(true); startLoop(); });
  el.pause.addEventListener('click', () => { setRunning(false); render(); });
  el.reset.addEventListener('click', reset);
  for (const input of [el.norm, el.batch, el.momentum]) {
    input.addEventListener('input', showSettings);
    input.addEventListener('change', () => { showSettings(); reset(); });
  }
  showSettings();
  render();

  // Start stays off until the worker has its own copy of minnow and the images.
  el.start.disabled = true;
  el.start.textContent = 'Loading the trainer…';
  await trainerWorker.ready;
  setRunning(false);
}
