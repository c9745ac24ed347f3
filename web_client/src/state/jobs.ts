// Following a background job until it ends, for progress bars.
import type { Job } from '../api/types';

export const FINISHED: ReadonlySet<Job['state']> = new Set(['done', 'failed', 'cancelled']);

export function isFinished(job: Pick<Job, 'state'>): boolean {
  return FINISHED.has(job.state);
}

/**
 * Polls `read` every `intervalMs` and reports each state until the job ends; resolves to the
 * finished job. `stop()` of the returned handle ends the polling early (page left).
 */
export function watchJob(
  read: () => Promise<Job>, onUpdate: (job: Job) => void, intervalMs = 700,
): { done: Promise<Job>; stop: () => void } {
  let stopped = false;
  const done = (async () => {
    for (;;) {
      const job = await read();
      if (stopped) return job;
      onUpdate(job);
      if (isFinished(job)) return job;
      await new Promise((resolve) => setTimeout(resolve, intervalMs));
    }
  })();
  return { done, stop: () => (stopped = true) };
}
