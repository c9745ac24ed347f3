// The digest of the web client's sources, written next to the bundle (build-info.json) so a test
// can tell, without node, that the committed bundle was built from the sources beside it.
// tests/web/test_web_client.py computes the same digest.
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative, sep } from 'node:path';

export const DIGESTED = ['src', 'index.html', 'package-lock.json', 'vite.config.ts'];

function files(root: string, path: string): string[] {
  const full = join(root, path);
  if (!statSync(full).isDirectory()) return [path];
  return readdirSync(full).flatMap((name) => files(root, join(path, name)));
}

/** sha256 over `relative/path\0content\0` of every digested file, in sorted path order. */
export function sourceDigest(root: string): string {
  const hash = createHash('sha256');
  const paths = DIGESTED.flatMap((path) => files(root, path)).map((p) => relative(root, join(root, p)).split(sep).join('/'));
  for (const path of paths.sort()) {
    hash.update(`${path}\0`);
    hash.update(readFileSync(join(root, path)));
    hash.update('\0');
  }
  return hash.digest('hex');
}
