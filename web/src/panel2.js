// Panel 2: a small convnet trained live; train-mode against eval-mode accuracy.
import { asError, call } from './minnow.js';
import { Chart, COLORS } from './charts.js';
import { byTestId, showNumber, percent, state } from './util.js';

export const BATCH_SIZES = [2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128];
const LR = 0.05, SEED = 1;
const EVAL_EVERY = 25, EVAL_IMAGES = 500, MAX_STEPS = 1500;
const FRAME_BUDGET_MS = 40; // training time per animation frame; the rest of the frame is the page's
const SMOOTH = 20;

const NORM_NAMES = { batch: 'BatchNorm', layer: 'LayerNorm', group: 'GroupNorm', none: 'no norm' };

export function initPanel2(M, root, info, reportError) {
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

  let trainer = null, running = false, run = newRun(), ghost = null;

  const settings = () => ({
    norm: el.norm.value,
    batchSize: BATCH_SIZES[Number(el.batch.value)],
    momentum: Number((10 ** Number(el.momentum.value)).toPrecision(2)),
  });
  function newRun() { return { losses: [], smooth: [], evals: [], msPerStep: null, step: 0 }; }

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

  function evaluate() {
    const e = call(M, () => trainer.evaluate(evalImages));
    run.evals.push({ step: run.step, train: e.train_mode_accuracy, eval: e.eval_mode_accuracy, trainLoss: e.train_mode_loss, evalLoss: e.eval_mode_loss });
  }

  function ensureTrainer() {
    if (trainer) return;
    const s = settings();
    try {
      trainer = new M.Trainer(s.norm, s.batchSize, s.momentum, LR, SEED);
    } catch (e) {
      throw asError(M, e);
    }
    run = newRun();
    run.settings = s;
    evaluate(); // step 0: the untrained network, near chance
  }

  function frame() {
    if (!running) return;
    try {
      const t0 = performance.now();
      while (running && performance.now() - t0 < FRAME_BUDGET_MS) {
        // as many steps as fit in the frame, never past the next evaluation
        const per = run.msPerStep || 5;
        const left = FRAME_BUDGET_MS - (performance.now() - t0);
        const toEval = EVAL_EVERY - (run.step % EVAL_EVERY);
        const n = Math.max(1, Math.min(toEval, MAX_STEPS - run.step, Math.floor(left / per)));
        const r = call(M, () => trainer.step(n));
        for (const loss of r.losses) {
          run.losses.push(loss);
          const w = run.losses.slice(-SMOOTH);
          run.smooth.push(w.reduce((a, b) => a + b, 0) / w.length);
        }
        run.step = r.step;
        run.msPerStep = r.ms_per_step;
        if (run.step % EVAL_EVERY === 0) evaluate();
        if (run.step >= MAX_STEPS) setRunning(false);
        if (per > left) break;
      }
      render();
    } catch (e) {
      setRunning(false);
      reportError(e);
      return;
    }
    if (running) requestAnimationFrame(frame);
  }

  function setRunning(on) {
    running = on;
    el.start.disabled = on;
    el.pause.disabled = !on;
    el.start.textContent = run.step > 0 && run.step < MAX_STEPS ? 'Continue' : 'Start';
    if (run.step >= MAX_STEPS) { el.start.disabled = true; el.start.textContent = `Stopped at ${MAX_STEPS} steps`; }
    state.panel2 = summary();
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
    return { running, step: run.step, msPerStep: run.msPerStep, losses: run.losses, evals: run.evals, settings: run.settings || settings() };
  }

  function reset() {
    setRunning(false);
    if (trainer) {
      if (run.step > 0) {
        const s = run.settings;
        ghost = {
          label: `${NORM_NAMES[s.norm]}, batch ${s.batchSize}, momentum ${s.momentum}`,
          smooth: run.smooth.map((y, i) => ({ x: i + 1, y })),
          train: run.evals.map((e) => ({ x: e.step, y: e.train })),
          eval: run.evals.map((e) => ({ x: e.step, y: e.eval })),
        };
      }
      trainer.delete();
      trainer = null;
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
    // momentum only matters where there are running statistics
    el.momentum.disabled = s.norm !== 'batch';
  }

  el.start.addEventListener('click', () => {
    try {
      ensureTrainer();
    } catch (e) {
      reportError(e);
      return;
    }
    setRunning(true);
    requestAnimationFrame(frame);
  });
  el.pause.addEventListener('click', () => { setRunning(false); render(); });
  el.reset.addEventListener('click', () => { try { reset(); } catch (e) { reportError(e); } });
  for (const input of [el.norm, el.batch, el.momentum]) {
    input.addEventListener('input', showSettings);
    input.addEventListener('change', () => { showSettings(); try { reset(); } catch (e) { reportError(e); } });
  }
  showSettings();
  render();
}
