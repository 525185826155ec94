#!/usr/bin/env node
// Thin launcher: the CLI lives in dist/cli.js (built by `npm run build`).
import('../dist/cli.js').catch((err) => {
  if (err && err.code === 'ERR_MODULE_NOT_FOUND' && String(err.message).includes('dist/cli.js')) {
    console.error('llama3-70b: the CLI is not built yet; run `npm run build` at the repository root first.');
    process.exit(1);
  }
  throw err;
});
