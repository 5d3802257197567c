import { defineConfig } from 'vite';

export default defineConfig({
  // Relative asset paths: dist/ works from any directory and from file-less static hosts.
  base: './',
  build: {
    outDir: 'dist',
    // The emscripten module is loaded at run time from public/wasm/, never bundled.
    assetsInlineLimit: 0,
  },
  server: { port: 5173, strictPort: true },
  preview: { port: 4173, strictPort: true },
});
