// "Predict before you look": a panel's demo stays hidden until its question is
// answered; then the choices lock, the verdict and explanation appear, and
// onReveal() opens the demo.

export function setupPrediction(panel, onReveal) {
  const box = panel.querySelector('.predict');
  const answer = box.dataset.answer;
  const verdict = box.querySelector('.verdict');
  const buttons = [...box.querySelectorAll('.choices button')];
  for (const b of buttons) {
    b.addEventListener('click', () => {
      const right = b.dataset.choice === answer;
      for (const o of buttons) {
        o.disabled = true;
        o.classList.toggle('chosen', o === b);
        o.classList.toggle('correct', o.dataset.choice === answer);
      }
      const correctText = box.querySelector(`[data-choice="${answer}"]`).textContent.trim();
      verdict.querySelector('.verdict-line').textContent = right
        ? 'Right. Now watch it happen below.'
        : `Not quite: the answer is “${correctText}” See for yourself below.`;
      verdict.classList.toggle('right', right);
      verdict.hidden = false;
      box.dataset.answered = right ? 'right' : 'wrong';
      onReveal();
    }, { once: false });
  }
}
