// The learning signals an epoch reports in its `metrics` (calibration, estimated accuracy,
// changed share, stopping sentence), read defensively: epochs trained before these existed lack
// them, and a malformed entry is treated as absent rather than drawn wrong.

/** One reliability bin: mean confidence, accuracy and number of out-of-fold predictions in it. */
export interface ReliabilityBin {
  confidence: number;
  accuracy: number;
  count: number;
}

export interface Calibration {
  method: string;
  temperature: number | null;
  /** Expected calibration error of the raw probabilities and after calibration (0-1). */
  eceBefore: number | null;
  ece: number | null;
  bins: ReliabilityBin[];
}

export interface EstimatedAccuracy {
  value: number;
  low: number;
  high: number;
  n: number | null;
}

export interface Stopping {
  sentence: string;
  plateau: boolean;
}

/** One epoch of the learning curve: labels it was trained on and its estimated accuracy. */
export interface CurvePoint {
  epoch: number;
  labels: number;
  accuracy: EstimatedAccuracy;
}

type Metrics = Record<string, unknown>;

const isNumber = (value: unknown): value is number => typeof value === 'number' && Number.isFinite(value);
const numberOr = (value: unknown, fallback: number | null = null) => (isNumber(value) ? value : fallback);
const isObject = (value: unknown): value is Metrics => typeof value === 'object' && value !== null && !Array.isArray(value);

export function calibrationOf(metrics: Metrics): Calibration | null {
  const c = metrics.calibration;
  if (!isObject(c)) return null;
  const bins = (Array.isArray(c.bins) ? c.bins : []).filter(isObject)
    .filter((b) => isNumber(b.confidence) && isNumber(b.accuracy) && isNumber(b.count))
    .map((b) => ({ confidence: b.confidence as number, accuracy: b.accuracy as number, count: b.count as number }))
    .sort((a, b) => a.confidence - b.confidence);
  return {
    method: typeof c.method === 'string' ? c.method : 'none', temperature: numberOr(c.temperature),
    eceBefore: numberOr(c.ece_before), ece: numberOr(c.ece), bins,
  };
}

export function estimatedAccuracyOf(metrics: Metrics): EstimatedAccuracy | null {
  const a = metrics.estimated_accuracy;
  if (!isObject(a) || !isNumber(a.value)) return null;
  return { value: a.value, low: numberOr(a.low, a.value)!, high: numberOr(a.high, a.value)!, n: numberOr(a.n) };
}

/** Share (0-1) of predicted superpixels whose category changed since the previous epoch; null when unknown. */
export function changedFractionOf(metrics: Metrics): number | null {
  return numberOr(metrics.changed_fraction);
}

export function stoppingOf(metrics: Metrics): Stopping | null {
  const s = metrics.stopping;
  if (!isObject(s) || typeof s.sentence !== 'string' || !s.sentence) return null;
  return { sentence: s.sentence, plateau: s.plateau === true };
}

/** The epochs that report an estimated accuracy, by labels (then epoch): the project's own learning curve. */
export function learningCurve(epochs: readonly { number: number; labels: number; metrics: Metrics }[]): CurvePoint[] {
  return [...epochs].sort((a, b) => a.labels - b.labels || a.number - b.number).flatMap((e) => {
    const accuracy = estimatedAccuracyOf(e.metrics);
    return accuracy ? [{ epoch: e.number, labels: e.labels, accuracy }] : [];
  });
}

/** "0.91 ± 0.02": the estimate with the half-width of its interval (the larger side when skewed). */
export function accuracyText(accuracy: EstimatedAccuracy, digits = 2): string {
  const half = Math.max(accuracy.high - accuracy.value, accuracy.value - accuracy.low);
  return `${accuracy.value.toFixed(digits)} ± ${half.toFixed(digits)}`;
}

/** A share as a percentage with one decimal: 0.004 -> "0.4%". */
export function percentText(share: number): string {
  return `${(100 * share).toFixed(1)}%`;
}
