// Puts the mock module and placeholder data files where the page loads the real
// ones (public/wasm/, public/data/), for developing the page without the
// emscripten build. Refuses to replace a real build unless given --force.
//   node tests/mock/install.mjs [--force]
import { copyFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const pub = join(here, '..', '..', 'public');
const target = join(pub, 'wasm', 'minnow_web.mjs');
const marker = 'A stand-in for the emscripten build of minnow';

if (existsSync(target) && !readFileSync(target, 'utf8').includes(marker) && !process.argv.includes('--force')) {
  console.error(`${target} is a real build; not replacing it (use --force)`);
  process.exit(1);
}
mkdirSync(join(pub, 'wasm'), { recursive: true });
mkdirSync(join(pub, 'data'), { recursive: true });
copyFileSync(join(here, 'minnow_web.mjs'), target);
writeFileSync(join(pub, 'wasm', 'minnow_web.wasm'), new Uint8Array([0, 0x61, 0x73, 0x6d, 1, 0, 0, 0]));
for (const f of ['pool.safetensors', 'train.safetensors', 'test.safetensors']) writeFileSync(join(pub, 'data', f), new Uint8Array(16));
console.log(`mock minnow installed in ${pub}`);
