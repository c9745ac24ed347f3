import { describe, expect, it } from 'vitest';
import { isFinished, jobAction, supersededBy } from '../src/state/jobs';

describe('what can be done to a job', () => {
  it.each([
    ['queued', 'cancel'],
    ['running', 'cancel'],
    ['failed', 'retry'],
    ['cancelled', 'retry'],
    ['done', null],
  ] as const)('a %s job: %s', (state, action) => {
    expect(jobAction({ state })).toBe(action);
  });

  it('is nothing but retry once the job is finished', () => {
    for (const state of ['done', 'failed', 'cancelled'] as const) {
      expect(isFinished({ state })).toBe(true);
      expect(jobAction({ state })).not.toBe('cancel');
    }
  });
});

describe('a job started again', () => {
  const job = (id: number, kind: string, slide_id: number | null) => ({ id, kind, slide_id });
  const jobs = [job(1, 'prepare', 7), job(2, 'prepare', 8), job(3, 'epoch', null), job(4, 'prepare', 7),
    job(5, 'prepare', 7), job(6, 'epoch', null)];

  it('is superseded by the newest later job of its kind and slide', () => {
    expect(supersededBy(jobs[0], jobs)?.id).toBe(5);
    expect(supersededBy(jobs[3], jobs)?.id).toBe(5);
    expect(supersededBy(jobs[2], jobs)?.id).toBe(6);
  });

  it('is not superseded by jobs of other slides or kinds, nor by older ones', () => {
    expect(supersededBy(jobs[1], jobs)).toBeUndefined();
    expect(supersededBy(jobs[4], jobs)).toBeUndefined();
    expect(supersededBy(jobs[5], jobs)).toBeUndefined();
  });
});
