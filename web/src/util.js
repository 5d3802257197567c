// Small DOM helpers shared by the panels.

export const byTestId = (id, root = document) => root.querySelector(`[data-testid="${id}"]`);

// Numbers shown on the page: the text is rounded for reading, data-value keeps
// the full value for the browser test.
export function showNumber(el, value, digits = 3) {
  el.dataset.value = String(value);
  el.textContent = format(value, digits);
}

export function format(v, digits = 3) {
  if (v === null || v === undefined || Number.isNaN(v)) return '–';
  if (v === 0) return '0';
  const a = Math.abs(v);
  if (a >= 1e-3 && a < 1e4) return Number(v.toPrecision(digits)).toString();
  return v.toExponential(digits - 1);
}

export const percent = (v) => (100 * v).toFixed(1) + '%';

// The one place the page's measurements are exposed to the browser test.
export const state = (window.__minnow = window.__minnow || { ready: false, errors: [] });
