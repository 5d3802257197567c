// Chart.js, registered with only the parts the page uses, and two small plugins.
import {
  Chart, LineController, ScatterController, BarController, LineElement, PointElement, BarElement,
  LinearScale, LogarithmicScale, Legend, Tooltip, Filler,
} from 'chart.js';

Chart.register(LineController, ScatterController, BarController, LineElement, PointElement, BarElement,
  LinearScale, LogarithmicScale, Legend, Tooltip, Filler);

Chart.defaults.font.family = getComputedStyle(document.documentElement).getPropertyValue('--font') || 'system-ui, sans-serif';
Chart.defaults.color = '#333';
Chart.defaults.animation = false; // every update is drawn at once: the redraw time is measurable
Chart.defaults.maintainAspectRatio = false;

export const COLORS = { mean: '#1f5fa8', var: '#c4452c', train: '#1f5fa8', eval: '#d98a00', ghost: '#b8b8b8', ink: '#222' };

// Vertical error bars for datasets whose points carry {x, y, lo, hi}.
export const errorBars = {
  id: 'errorBars',
  afterDatasetsDraw(chart) {
    const { ctx, scales: { x, y } } = chart;
    chart.data.datasets.forEach((ds, i) => {
      if (!ds.errorBars || !chart.isDatasetVisible(i)) return;
      ctx.save();
      ctx.strokeStyle = ds.borderColor;
      ctx.lineWidth = 1.5;
      for (const p of ds.data) {
        if (p.lo === undefined) continue;
        const px = x.getPixelForValue(p.x);
        const top = y.getPixelForValue(p.hi), bottom = y.getPixelForValue(Math.max(p.lo, y.min));
        ctx.beginPath();
        ctx.moveTo(px, top); ctx.lineTo(px, bottom);
        ctx.moveTo(px - 4, top); ctx.lineTo(px + 4, top);
        ctx.moveTo(px - 4, bottom); ctx.lineTo(px + 4, bottom);
        ctx.stroke();
      }
      ctx.restore();
    });
  },
};

// A labelled vertical line at options.plugins.vLine.x.
export const vLine = {
  id: 'vLine',
  afterDatasetsDraw(chart, _args, opts) {
    if (opts.x === undefined || opts.x === null) return;
    const { ctx, chartArea, scales: { x } } = chart;
    const px = x.getPixelForValue(opts.x);
    ctx.save();
    ctx.strokeStyle = opts.color || COLORS.ink;
    ctx.setLineDash([5, 4]);
    ctx.lineWidth = 1.5;
    ctx.beginPath(); ctx.moveTo(px, chartArea.top); ctx.lineTo(px, chartArea.bottom); ctx.stroke();
    if (opts.label) {
      ctx.setLineDash([]);
      ctx.fillStyle = opts.color || COLORS.ink;
      ctx.font = '12px ' + Chart.defaults.font.family;
      ctx.fillText(opts.label, px + 5, chartArea.top + 12);
    }
    ctx.restore();
  },
};

export { Chart };
