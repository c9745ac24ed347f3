// Which category a key press names: the category's own hotkey first, else 1-9 by legend position.

export interface HotkeyCategory {
  id: number;
  hotkey: string | null;
  position: number;
}

/** The category id `key` names, or null. */
export function categoryForKey(key: string, categories: readonly HotkeyCategory[]): number | null {
  const own = categories.find((c) => c.hotkey !== null && c.hotkey.toLowerCase() === key.toLowerCase());
  if (own) return own.id;
  if (/^[1-9]$/.test(key)) {
    const ordered = [...categories].sort((a, b) => a.position - b.position);
    return ordered[Number(key) - 1]?.id ?? null;
  }
  return null;
}

/** The key that names `category` (its hotkey, else its 1-9 position), for legends and buttons. */
export function keyOf(category: HotkeyCategory, categories: readonly HotkeyCategory[]): string | null {
  if (category.hotkey) return category.hotkey;
  const ordered = [...categories].sort((a, b) => a.position - b.position);
  const at = ordered.indexOf(category);
  return at >= 0 && at < 9 ? String(at + 1) : null;
}
