import { describe, expect, it } from 'vitest';
import { importedExtractors, importedName } from '../src/pages/project/imports';

describe('importedName', () => {
  it('prefixes what the server calls imported features', () => {
    expect(importedName('uni-trident')).toBe('imported-uni-trident');
    expect(importedName(' imported-UNI_2 ')).toBe('imported-uni_2');
  });
  it('refuses names the server refuses', () => {
    for (const bad of ['', 'imported-', '-uni', 'uni trident', 'uni/../x', 'a'.repeat(56)]) expect(importedName(bad)).toBeNull();
    expect(importedName('a'.repeat(55))).toBe(`imported-${'a'.repeat(55)}`);
  });
});

describe('importedExtractors', () => {
  const imports = { slides: [], extractors: ['imported-uni', 'imported-conch'] };
  it('offers the imported names, sorted', () => {
    expect(importedExtractors(imports, 'tissue').map((e) => e.name)).toEqual(['imported-conch', 'imported-uni']);
  });
  it('keeps the project\'s own imported choice even when no slide holds it', () => {
    expect(importedExtractors(null, 'imported-virchow').map((e) => e.name)).toEqual(['imported-virchow']);
    expect(importedExtractors(imports, 'imported-uni').map((e) => e.name)).toEqual(['imported-conch', 'imported-uni']);
  });
});
