import { describe, expect, it } from 'vitest';
import {
  buildColourTable, categoryColours, certaintyColour, parseHex, updateColourTable, type OverlayStyle,
} from '../src/state/colours';

const colours = categoryColours([{ id: 7, color: '#E69F00' }, { id: 9, color: '#56b4e9' }]);
const labels: OverlayStyle = { source: 'labels', colours, opacity: 0.5 };

describe('colour tables', () => {
  it('parses hex colours', () => {
    expect(parseHex('#E69F00')).toEqual([230, 159, 0]);
    expect(parseHex('nonsense')).toEqual([128, 128, 128]);
  });

  it('colours labelled superpixels and leaves the rest and index 0 transparent', () => {
    const table = buildColourTable(new Uint16Array([7, 7, 0, 9]), labels);
    expect([...table]).toEqual([0, 0, 0, 0, 230, 159, 0, 128, 0, 0, 0, 0, 86, 180, 233, 128]);
  });

  it('leaves a category without a colour transparent', () => {
    expect([...buildColourTable(new Uint16Array([0, 3]), labels).slice(4)]).toEqual([0, 0, 0, 0]);
  });

  it('updates changed ids in place and reports their range', () => {
    const values = new Uint16Array([0, 0, 0, 0]);
    const table = buildColourTable(values, labels);
    values[1] = 9;
    values[3] = 7;
    expect(updateColourTable(table, [3, 1, 99], (id) => values[id], labels)).toEqual([1, 3]);
    expect([...table.slice(4, 8)]).toEqual([86, 180, 233, 128]);
    expect([...table.slice(12, 16)]).toEqual([230, 159, 0, 128]);
    expect(updateColourTable(table, [], (id) => values[id], labels)).toBeNull();
  });

  it('maps certainty on a ramp from dark blue to yellow', () => {
    expect(certaintyColour(0)).toEqual([0, 32, 77]);
    expect(certaintyColour(255)).toEqual([255, 234, 70]);
    const table = buildColourTable(new Uint8Array([0, 255]), { ...labels, source: 'certainty' });
    expect([...table.slice(4)]).toEqual([255, 234, 70, 128]);
  });
});
