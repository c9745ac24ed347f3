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

/** What a person can do to a job: cancel it while it waits or runs, retry it once it failed or was cancelled. */
export function jobAction(job: Pick<Job, 'state'>): 'cancel' | 'retry' | null {
  if (job.state === 'queued' || job.state === 'running') return 'cancel';
  if (job.state === 'failed' || job.state === 'cancelled') return 'retry';
  return null;
}

/**
 * The newest later job of the same kind on the same slide (or of the project, for slide-less
 * kinds), if any: a failed or cancelled job that was retried or started again needs no Retry.
 */
export function supersededBy<J extends Pick<Job, 'id' | 'kind' | 'slide_id'>>(job: J, jobs: readonly J[]): J | undefined {
  let newest: J | undefined;
  for (const other of jobs) {
    if (other.id > job.id && other.kind === job.kind && other.slide_id === job.slide_id
      && (!newest || other.id > newest.id)) newest = other;
  }
  return newest;
}
