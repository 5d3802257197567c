// Panel 2's training runs here, in its own instance of the minnow module, so
// that a training step or an evaluation (the latter takes most of a second)
// never blocks the page. The page drives it step by step through rpc():
//   {id, op: 'init', base}                          -> info (load_data's summary)
//   {id, op: 'create', norm, batchSize, momentum, lr, seed}
//   {id, op: 'step', n}                             -> Trainer.step(n)
//   {id, op: 'evaluate', images}                    -> Trainer.evaluate(images)
//   {id, op: 'delete'}
// Each reply is {id, result} or {id, error: message}.
import { asError, call, loadMinnow } from './minnow.js';

let M = null, trainer = null;

const ops = {
  async init({ base }) {
    const loaded = await loadMinnow(base);
    M = loaded.M;
    return loaded.info;
  },
  create({ norm, batchSize, momentum, lr, seed }) {
    ops.delete();
    try {
      trainer = new M.Trainer(norm, batchSize, momentum, lr, seed);
    } catch (e) {
      throw asError(M, e);
    }
    return null;
  },
  step({ n }) { return call(M, () => trainer.step(n)); },
  evaluate({ images }) { return call(M, () => trainer.evaluate(images)); },
  delete() {
    if (trainer) trainer.delete();
    trainer = null;
    return null;
  },
};

self.onmessage = async ({ data }) => {
  try {
    if (!ops[data.op]) throw new Error(`trainer worker: unknown operation '${data.op}'`);
    if (data.op !== 'init' && !M) throw new Error('trainer worker: not initialised');
    if ((data.op === 'step' || data.op === 'evaluate') && !trainer) throw new Error('trainer worker: no Trainer');
    self.postMessage({ id: data.id, result: await ops[data.op](data) });
  } catch (e) {
    self.postMessage({ id: data.id, error: asError(M, e).message });
  }
};
