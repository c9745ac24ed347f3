// Starts a real `slidelabel serve` on a free port with a temporary data folder, for the browser tests.
import { spawn } from 'node:child_process';
import { mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const ADMIN_PASSWORD = 'e2e-admin-password';

function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/**
 * `python -m slidelabel.cli.main serve` in its own process group (so stopping it stops its
 * workers too); resolves once the web client answers at its URL.
 */
export async function startServer({ python, repo, slideFolder, timeoutMs = 180_000 }) {
  const port = await freePort();
  const dataDir = mkdtempSync(join(tmpdir(), 'slidelabel-e2e-'));
  const logPath = join(dataDir, 'server.log');
  const log = openSync(logPath, 'a');
  const child = spawn(python, ['-m', 'slidelabel.cli.main', 'serve', '--data-dir', dataDir, '--port', String(port),
    '--slide-folder', slideFolder], {
    cwd: repo, detached: true, stdio: ['ignore', log, log],
    env: { ...process.env, SLIDELABEL_ADMIN_PASSWORD: ADMIN_PASSWORD },
  });
  const url = `http://127.0.0.1:${port}`;
  const started = Date.now();
  for (;;) {
    if (child.exitCode !== null) throw new Error(`slidelabel serve exited (${child.exitCode}):\n${readFileSync(logPath, 'utf8')}`);
    try {
      const response = await fetch(`${url}/`);
      if (response.ok) break;
    } catch {
      // not listening yet
    }
    if (Date.now() - started > timeoutMs) throw new Error(`slidelabel serve did not answer in ${timeoutMs / 1000} s`);
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
  return {
    url,
    dataDir,
    logPath,
    async stop() {
      try {
        process.kill(-child.pid, 'SIGTERM');
      } catch {
        return;
      }
      for (let i = 0; i < 40 && isAlive(-child.pid); i += 1) await new Promise((r) => setTimeout(r, 250));
      if (isAlive(-child.pid)) process.kill(-child.pid, 'SIGKILL');
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

function isAlive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
