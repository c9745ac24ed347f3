import { describe, expect, it } from 'vitest';
import { confusionMatrix } from '../src/state/confusion';

describe('confusionMatrix', () => {
  it('counts labels against predictions in category order, leaving out the unpredicted', () => {
    const items = [
      { category_id: 1, predicted_category_id: 1 },
      { category_id: 1, predicted_category_id: 2 },
      { category_id: 2, predicted_category_id: 2 },
      { category_id: 2, predicted_category_id: null },
      { category_id: 9, predicted_category_id: 1 },
    ];
    expect(confusionMatrix(items, [1, 2])).toEqual([[1, 1], [0, 1]]);
  });
});
