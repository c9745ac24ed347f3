// Starts a real `slidelabel serve` on a free port with a temporary data folder, for the browser tests.
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

// Unique per run: a login with it proves that the server answering on the port is this run's
// child, not another server that took the same port (probing for a free port and binding it
// later is a race that other test runs on the machine can win).
export const ADMIN_PASSWORD = `e2e-${randomUUID()}`;

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

/** True once the server at `url` accepts this run's admin login. */
async function answersAsOurs(url) {
  const response = await fetch(`${url}/api/v1/auth/login`, {
    method: 'POST', headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ username: 'admin', password: ADMIN_PASSWORD }),
  });
  return response.ok;
}

function stopGroup(child) {
  try {
    process.kill(-child.pid, 'SIGKILL');
  } catch {
    // already gone
  }
}

/**
 * `python -m slidelabel.cli.main serve` in its own process group (so stopping it stops its
 * workers too); resolves once it answers at its URL with this run's admin login. When another
 * server holds the port, it starts again on another one.
 */
export async function startServer({ python, repo, slideFolder, timeoutMs = 180_000, attempts = 3 }) {
  for (let attempt = 1; ; attempt += 1) {
    const dataDir = mkdtempSync(join(tmpdir(), 'slidelabel-e2e-'));
    const started = await startOnce({ python, repo, slideFolder, timeoutMs, dataDir });
    if (started.url) return serverHandle(started.child, started.url, dataDir, started.logPath);
    stopGroup(started.child);
    rmSync(dataDir, { recursive: true, force: true });
    if (attempt >= attempts) throw new Error(started.error);
    console.log(`restarting the server: ${started.error}`);
  }
}

async function startOnce({ python, repo, slideFolder, timeoutMs, dataDir }) {
  const port = await freePort();
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
    if (child.exitCode !== null) {
      return { child, logPath, error: `slidelabel serve exited (${child.exitCode}):\n${readFileSync(logPath, 'utf8')}` };
    }
    let answered = false;
    try {
      answered = (await fetch(`${url}/`)).ok;
    } catch {
      // not listening yet
    }
    if (answered) {
      if (await answersAsOurs(url)) return { child, logPath, url };
      // Someone else's server on this port: ours cannot bind it, or is still starting to fail.
      return { child, logPath, error: `another server answers on port ${port}` };
    }
    if (Date.now() - started > timeoutMs) return { child, logPath, error: `slidelabel serve did not answer in ${timeoutMs / 1000} s` };
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
}

function serverHandle(child, url, dataDir, logPath) {
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
