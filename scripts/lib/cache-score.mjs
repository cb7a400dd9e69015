// Scores an http-cache-tests results file the way cache-tests.fyi counts: passes among the
// scored tests (kinds "required" and "optimal"; "check" tests are informational).
// Usage: node cache-score.mjs SUITE_DIR RESULTS.json [--failures]
import fs from 'fs'
import path from 'path'
import { pathToFileURL } from 'url'

const [suiteDir, resultsFile, flag] = process.argv.slice(2)
const { default: suites } = await import(pathToFileURL(path.join(suiteDir, 'tests/index.mjs')).href)
const results = JSON.parse(fs.readFileSync(resultsFile, 'utf8'))
const summary = { scored: 0, passed: 0, required: [0, 0], optimal: [0, 0], check: [0, 0] }
const failures = []
for (const suite of suites) {
  for (const t of suite.tests) {
    if (t.browser_only) continue
    const kind = t.kind || 'required'
    const ok = results[t.id] === true
    summary[kind][0]++
    if (ok) summary[kind][1]++
    if (kind === 'check') continue
    summary.scored++
    if (ok) summary.passed++
    else failures.push(`${kind.padEnd(9)} ${t.id}: ${JSON.stringify(results[t.id] ?? 'not run').slice(0, 120)}`)
  }
}
if (flag === '--failures') for (const f of failures) console.error(f)
console.log(JSON.stringify(summary))
