import { describe, expect, it } from 'vitest';
import { ApiClient, apiPrefix, girderToken } from '../src/api/client';

describe('where the API is', () => {
  it('is api/v1 beside the page, wherever the client is mounted', () => {
    expect(apiPrefix('http://127.0.0.1:8000/')).toBe('/api/v1');
    expect(apiPrefix('http://127.0.0.1:8000/#/p/3/guided')).toBe('/api/v1');
    expect(apiPrefix('https://dsa.example.org/slidelabel/')).toBe('/slidelabel/api/v1');
    expect(apiPrefix(undefined)).toBe('/api/v1');
  });
});

describe('the login under Girder', () => {
  it('reads the girderToken cookie among others', () => {
    expect(girderToken('a=1; girderToken=abc%2Fdef; b=2')).toBe('abc/def');
    expect(girderToken('a=1')).toBeNull();
    expect(girderToken('girderToken=')).toBeNull();
    expect(girderToken(undefined)).toBeNull();
  });

  it('uses a stored slidelabel token first, else the Girder session', () => {
    const memory = new Map<string, string>();
    const storage = {
      getItem: (key: string) => memory.get(key) ?? null,
      setItem: (key: string, value: string) => void memory.set(key, value),
      removeItem: (key: string) => void memory.delete(key),
    } as unknown as Storage;
    expect(new ApiClient(storage, 'girderToken=g1').url('/x')).toBe('/api/v1/x?token=g1');
    memory.set('slidelabel.token', 's1');
    expect(new ApiClient(storage, 'girderToken=g1').url('/x')).toBe('/api/v1/x?token=s1');
    expect(new ApiClient(storage, '').loggedIn).toBe(true);
  });
});
