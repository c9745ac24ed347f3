// A confusion matrix of labels against predictions, from the review listing.

export interface LabelledPrediction {
  category_id: number;
  predicted_category_id: number | null;
}

/** counts[i][j]: labelled `categoryIds[i]`, predicted `categoryIds[j]`; items without a prediction are left out. */
export function confusionMatrix(items: readonly LabelledPrediction[], categoryIds: readonly number[]): number[][] {
  const at = new Map(categoryIds.map((id, i) => [id, i]));
  const counts = categoryIds.map(() => categoryIds.map(() => 0));
  for (const item of items) {
    const i = at.get(item.category_id);
    const j = item.predicted_category_id === null ? undefined : at.get(item.predicted_category_id);
    if (i !== undefined && j !== undefined) counts[i][j] += 1;
  }
  return counts;
}
