// Renaming and merging categories: the checks before asking the server, and the question asked
// before a merge, which moves labels and cannot be undone.
import type { Category } from '../api/types';

/** The categories in their legend order. */
export function byPosition(categories: readonly Category[]): Category[] {
  return [...categories].sort((a, b) => a.position - b.position);
}

/** Why `category` cannot be called `name`, or null (also null when the name is unchanged). */
export function renameProblem(category: Category, name: string, categories: readonly Category[]): string | null {
  const wanted = name.trim();
  if (!wanted) return 'a category needs a name';
  const clash = categories.find((c) => c.id !== category.id && c.name.toLowerCase() === wanted.toLowerCase());
  return clash ? `there is already a category called ${clash.name}; to put their labels together, merge them` : null;
}

/** The categories that `source` can be merged into: every other one. */
export function mergeTargets(source: Category, categories: readonly Category[]): Category[] {
  return byPosition(categories).filter((c) => c.id !== source.id);
}

/** The question put before merging `source` into `target`, with the labels (all users) it moves. */
export function mergeQuestion(source: Category, target: Category, labels: number | undefined): string {
  const moved = labels === undefined ? 'Its labels and reviews'
    : labels === 0 ? 'It has no labels; its reviews, if any,'
      : `Its ${labels} label${labels === 1 ? '' : 's'} (all users) and reviews`;
  return `Merge "${source.name}" into "${target.name}"? ${moved} become "${target.name}" and ` +
    `"${source.name}" is deleted. This cannot be undone.`;
}
