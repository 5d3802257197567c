// The WebAssembly module's parity report against the native one's:
//     node web/tests/parity.mjs MODULE.mjs NATIVE.json
// Every output and gradient of BatchNorm2d (train, eval) and LayerNorm must
// agree within 1e-6 (absolute, or relative for values above 1).
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, resolve } from 'node:path';

const [modulePath, nativePath] = process.argv.slice(2).map((p) => resolve(p));
// emscripten 3.1.6's ES module, run in node, reaches for CommonJS's require
// and __dirname, which an ES module scope does not have.
globalThis.require = createRequire(import.meta.url);
globalThis.__dirname = dirname(modulePath);
const { default: createMinnow } = await import(modulePath);
// Handing it the .wasm bytes keeps it from fetch(), which node has but which
// cannot open a file path.
const M = await createMinnow({ wasmBinary: readFileSync(modulePath.replace(/\.mjs$/, '.wasm')) });
const wasm = JSON.parse(M.parity_report());
const native = JSON.parse(readFileSync(nativePath, 'utf8'));

let worst = 0, where = '', failures = 0;
for (const name of Object.keys(native)) {
  const a = native[name], b = wasm[name];
  if (!b || b.length !== a.length) {
    console.error(`parity: ${name}: the WebAssembly module has ${b ? b.length : 'no'} values, native ${a.length}`);
    failures++;
    continue;
  }
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i] - b[i]) / Math.max(1, Math.abs(a[i]));
    if (!(d <= 1e-6)) failures++;
    if (!(d <= worst)) { worst = d; where = `${name}[${i}]: native ${a[i]}, wasm ${b[i]}`; }
  }
}
const tensors = Object.keys(native).length;
console.log(`parity: ${tensors} tensors of BatchNorm2d and LayerNorm outputs and gradients; largest difference ${worst.toExponential(2)}${where ? ' at ' + where : ''}`);
if (failures || tensors !== Object.keys(wasm).length) {
  console.error(`parity: ${failures} values differ by more than 1e-6`);
  process.exit(1);
}
