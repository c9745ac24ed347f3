import { describe, expect, it } from 'vitest';
import { cohortFolders, countsText } from '../src/pages/cohorts';

describe('cohortFolders', () => {
  it('offers each readable folder and every folder under it that holds slides, once each', () => {
    const folders = [
      { path: '/data/lab', truncated: false, warnings: [], slides: [
        { path: '/data/lab/a.svs', size_bytes: 1 },
        { path: '/data/lab/2024/x/b.svs', size_bytes: 1 },
        { path: '/data/lab/2024/c.svs', size_bytes: 1 }] },
      { path: '/data/empty', truncated: false, warnings: [], slides: [] },
    ];
    expect(cohortFolders(folders)).toEqual(['/data/empty', '/data/lab', '/data/lab/2024', '/data/lab/2024/x']);
  });
});

describe('countsText', () => {
  it('lists categories largest first, a dash when nothing was predicted', () => {
    expect(countsText({ stroma: 310, tumour: 1204 })).toBe('tumour 1,204 · stroma 310');
    expect(countsText({})).toBe('—');
  });
});
