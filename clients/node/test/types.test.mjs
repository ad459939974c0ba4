// types.test.mjs - index.d.ts matches index.js: every value it declares is
// exported at run time (and nothing exported is left undeclared), and a
// program using every call as the README shows compiles with
// `tsc --noEmit --strict` (typescript is a devDependency).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, existsSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as lib from '../index.js';

const here = dirname(fileURLToPath(import.meta.url));
const pkg = join(here, '..');

test('every value declared in index.d.ts is exported, and only those', () => {
  const dts = readFileSync(join(pkg, 'index.d.ts'), 'utf8');
  const declared = [...dts.matchAll(/^export (?:declare )?(?:class|function|const) (\w+)/gm)].map((m) => m[1]).sort();
  assert.deepEqual(Object.keys(lib).sort(), declared);
  for (const name of declared) assert.ok(lib[name] !== undefined, name);
  const methods = [...dts.matchAll(/^ {2}(\w+)\(/gm)].map((m) => m[1]);
  for (const m of methods.filter((x) => x !== 'constructor')) {
    const owner = [lib.PresenceClient, lib.Watch].find((c) => typeof c.prototype[m] === 'function');
    assert.ok(owner, `declared method ${m} exists on a class`);
  }
});

test('a program using every call compiles with tsc --strict', () => {
  const tsc = join(pkg, 'node_modules', 'typescript', 'bin', 'tsc');
  assert.ok(existsSync(tsc), 'typescript (a devDependency) is installed: run npm ci');
  execFileSync(process.execPath, [tsc, '--noEmit', '--strict', '--target', 'es2022', '--lib', 'es2022',
    '--module', 'nodenext', '--moduleResolution', 'nodenext',
    join(here, 'types', 'env.d.ts'), join(here, 'types', 'usage.ts')], { stdio: 'inherit' });
});

test('bad arguments are refused without a connection', async () => {
  await assert.rejects(lib.createClient({ nodes: [], serverId: 's' }), { code: 'bad_argument' });
  await assert.rejects(lib.createClient({ nodes: ['n1'] }), { code: 'bad_argument' });
  await assert.rejects(lib.createClient({ nodes: ['n1'], serverId: 's', batchMax: 0 }), { code: 'bad_argument' });
});
