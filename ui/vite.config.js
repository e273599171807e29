// Builds the pages in this folder into dist/, which ships inside the Python package `ui`
// and is served by graphql_api: the explorer at GET /graphql, the UI at GET /, their
// files (hashed names) under /ui/.
import react from '@vitejs/plugin-react';
import { defineConfig } from 'vite';

export default defineConfig({
  base: '/ui/',
  plugins: [react()],
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    // GraphiQL's editor (Monaco) is one large chunk by nature; it loads once per page
    chunkSizeWarningLimit: 6000,
    rolldownOptions: {
      // two pages: the explorer (index.html, served at /graphql) and the UI (app.html, at /)
      input: { explorer: 'index.html', app: 'app.html' },
      onwarn(warning, warn) {
        // GraphiQL's React Compiler output starts modules with "use no memo", which
        // only a compiler reads: dropping it in the bundle changes nothing
        if (warning.code === 'MODULE_LEVEL_DIRECTIVE') return;
        warn(warning);
      },
    },
  },
});
