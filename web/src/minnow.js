// Loading the emscripten build of minnow and calling it.
//
// The module lives in public/wasm/ (copied as-is into dist/) and is imported at
// run time with a URL relative to the page, so Vite never bundles it and the
// built page works from any directory.

// What web_data (web/make_data.cpp) writes into public/data/ and load_data reads.
const DATA_FILES = ['pool.safetensors', 'train.safetensors', 'test.safetensors'];

// base: the page's URL (document.baseURI); a worker is handed it.
export async function loadMinnow(base = document.baseURI) {
  const url = (p) => new URL(p, base).href;
  const { default: createMinnow } = await import(/* @vite-ignore */ url('wasm/minnow_web.mjs'));
  const M = await createMinnow({ locateFile: (f) => url('wasm/' + f) });
  M.FS.mkdir('/data');
  await Promise.all(DATA_FILES.map(async (f) => {
    const res = await fetch(url('data/' + f));
    if (!res.ok) throw new Error(`fetching data/${f}: HTTP ${res.status}`);
    M.FS.writeFile('/data/' + f, new Uint8Array(await res.arrayBuffer()));
  }));
  const info = call(M, () => M.load_data('/data'));
  return { M, info };
}

// Every minnow function returns a JSON string and throws on bad input.
// A C++ exception may reach JavaScript as a bare pointer (a number); turn it
// into a readable Error either way.
export function call(M, fn) {
  let text;
  try {
    text = fn();
  } catch (e) {
    throw asError(M, e);
  }
  return JSON.parse(text);
}

export function asError(M, e) {
  if (e instanceof Error) return e;
  if (typeof e === 'number' && M && typeof M.getExceptionMessage === 'function') {
    try { return new Error(String(M.getExceptionMessage(e))); } catch { /* fall through */ }
  }
  if (typeof e === 'number') return new Error(`minnow threw a C++ exception (pointer ${e}); the build does not expose its message`);
  return new Error(String(e));
}
