import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';
import { sourceDigest } from './scripts/sourceDigest';

// The bundle is written into the Python package, which serves it at "/" (slidelabel serve) or,
// in the Girder plugin, at "/slidelabel/": asset URLs are relative to the page.
const absent = fileURLToPath(new URL('./src/viewer/absent.ts', import.meta.url));

const root = fileURLToPath(new URL('.', import.meta.url));

export default defineConfig({
  base: './',
  plugins: [{
    name: 'slidelabel-build-info',
    apply: 'build',
    generateBundle() {
      const info = { source_sha256: sourceDigest(root) };
      this.emitFile({ type: 'asset', fileName: 'build-info.json', source: JSON.stringify(info, null, 1) });
    },
  }],
  resolve: {
    alias: { d3: absent, 'vtk.js': absent, hammerjs: absent },
  },
  build: {
    outDir: '../slidelabel/server/static',
    emptyOutDir: true,
    chunkSizeWarningLimit: 1500,
  },
  server: {
    // `npm run dev` talks to a `slidelabel serve` on the default port.
    proxy: { '/api': 'http://127.0.0.1:8000' },
  },
  test: {
    include: ['test/**/*.test.ts'],
    environment: 'node',
  },
});
