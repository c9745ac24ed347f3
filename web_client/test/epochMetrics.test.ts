import { describe, expect, it } from 'vitest';
import {
  accuracyText, calibrationOf, changedFractionOf, learningCurve, percentText, stoppingOf,
} from '../src/state/epochMetrics';
import { defaultOf } from '../src/pages/projects';

const calibrated = {
  calibration: {
    method: 'temperature', temperature: 1.7, ece_before: 0.12, ece: 0.03,
    bins: [{ confidence: 0.95, accuracy: 0.9, count: 40 }, { confidence: 0.55, accuracy: 0.5, count: 3 }, { confidence: 'x' }],
  },
  estimated_accuracy: { value: 0.91, low: 0.89, high: 0.92, n: 120 },
  changed_fraction: 0.004,
  stopping: { sentence: 'The last 50 labels changed 0.4% of predictions.', plateau: true },
};

describe('epoch metrics', () => {
  it('reads calibration bins in confidence order, dropping malformed ones', () => {
    const c = calibrationOf(calibrated)!;
    expect(c.bins.map((b) => b.confidence)).toEqual([0.55, 0.95]);
    expect([c.method, c.temperature, c.eceBefore, c.ece]).toEqual(['temperature', 1.7, 0.12, 0.03]);
  });

  it('treats old epochs without the keys as having none', () => {
    const old = { cv_balanced_accuracy: 0.8 };
    expect(calibrationOf(old)).toBeNull();
    expect(changedFractionOf(old)).toBeNull();
    expect(stoppingOf(old)).toBeNull();
    expect(stoppingOf({ stopping: { sentence: '', plateau: true } })).toBeNull();
    expect(changedFractionOf({ changed_fraction: null })).toBeNull();
  });

  it('builds the learning curve from the epochs that estimate accuracy, by labels', () => {
    const curve = learningCurve([
      { number: 3, labels: 90, metrics: calibrated },
      { number: 1, labels: 20, metrics: { estimated_accuracy: { value: 0.7 } } },
      { number: 2, labels: 50, metrics: {} },
      { number: 4, labels: 60, metrics: calibrated }, // labels removed since epoch 3
    ]);
    expect(curve.map((p) => [p.epoch, p.labels])).toEqual([[1, 20], [4, 60], [3, 90]]);
    expect(curve[0].accuracy).toEqual({ value: 0.7, low: 0.7, high: 0.7, n: null });
  });

  it('writes the estimate with its half-interval and shares as percentages', () => {
    expect(accuracyText({ value: 0.91, low: 0.89, high: 0.92, n: 1 })).toBe('0.91 ± 0.02');
    expect(percentText(0.004)).toBe('0.4%');
  });
});

describe('registry defaults', () => {
  it('takes the entry marked default, else the first', () => {
    const entry = (name: string, isDefault = false) => ({ name, description: '', default: isDefault });
    expect(defaultOf([entry('a'), entry('b', true)])).toBe('b');
    expect(defaultOf([entry('a'), entry('b')])).toBe('a');
    expect(defaultOf([])).toBe('');
  });
});

describe('niceStep', () => {
  it('gives three to six round ticks', async () => {
    const { niceStep } = await import('../src/ui/charts');
    expect([niceStep(1500), niceStep(170), niceStep(40), niceStep(1)]).toEqual([500, 50, 10, 1]);
  });
});
